// shrink.c: the structure driver. Whole units (query heads, KV groups, MLP
// channels, an mlp's hidden units, decoder blocks) leave every block, the
// same count from each, and the output holds the smaller dense tensors:
//
//   1. counts    from the spec and the family's groups, the same for every
//                block (rounded per KV group, multiple_of for widths)
//   2. blocks    by influence (one dense pass over the calibration set:
//                1 - mean cosine of each block's input and output), the
//                last ones, or at random, before the output opens
//   3. units     block by block: the criterion over each unit's weights
//                (and the consumer's input statistics, from the blocks
//                before already shrunk), the lowest go; the block runs on
//                with them zeroed (and the compensation bias) to make the
//                next block's input
//   4. write     every tensor compacted to its kept rows and columns, byte
//                for byte from the input; biases gain the compensation;
//                removed blocks' tensors dropped and later ones renumbered
//
// Zeroing a unit's rows and columns computes what removing it computes (a
// zero query head's output meets zero o_proj columns; silu(0) * 0 = 0;
// an mlp unit's next-layer column is zero), so step 3 runs the input's
// shapes.
#include "engine/run/run.h"

#include "common/util.h"
#include "engine/io/dataset.h"
#include "engine/methods/method.h"
#include "engine/nets/net.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NL 8    // linears per block at most (nets/layers.h)
#define SITES 8 // sites per block at most

typedef struct shrink {
    const eng_model *m;
    const eng_spec *s;
    const eng_score_inputs *in; // taylor's gradients and Fisher sums
    const eng_hooks *h;
    eng_net *net;
    size_t nb;
    eng_net_group (*groups)[ENG_NET_MAX_GROUPS]; // (nb,)
    size_t *ngroups;                             // (nb,)
    int64_t *remove;   // (nb * ENG_GROUP_COUNT): units removed per block
    int64_t heads_per; // query heads per KV group
    int64_t heads_cut; // GQA: heads removed in each kept KV group
    uint8_t **gone;    // (nb * ENG_GROUP_COUNT): removed units, or NULL
    bool *block_gone;  // (nb,)
    size_t *new_index; // (nb,) the block's number in the output
    float **comp;      // (nb * NL): compensation added to a bias, or NULL
    bool bias_attention, bias_mlp; // biases to write where there are none
    // Statistics of the current block's sites (sum and sum of squares of
    // each input column over the calibration rows).
    double *sum[SITES], *sq[SITES];
    int64_t cols[SITES], rows[SITES];
    bool want[SITES];
    int last_site;
    char **names; // output names the plan borrows
    size_t nnames;
    int64_t context; // tokens per sequence of the data, for FLOPs
} shrink;

static const eng_net_group *group_of(const shrink *k, size_t b,
                                     eng_group_kind kind)
{
    for (size_t i = 0; i < k->ngroups[b]; i++)
        if (k->groups[b][i].kind == kind)
            return &k->groups[b][i];
    return NULL;
}

static int64_t *removed(shrink *k, size_t b, eng_group_kind kind)
{
    return &k->remove[b * ENG_GROUP_COUNT + kind];
}

// Units of count a fraction f removes: the nearest count, a tie going to
// the smaller (never more than asked: a quarter of 2 heads is none).
static int64_t share_of(int64_t count, double f)
{
    return (int64_t)ceil((double)count * f - 0.5);
}

// Kept units of count after removing the fraction f, rounded up to a
// multiple of mult (never above count).
static int64_t kept_of(int64_t count, double f, int64_t mult)
{
    int64_t keep = count - share_of(count, f);
    if (mult > 1)
        keep = (keep + mult - 1) / mult * mult;
    return keep > count ? count : keep;
}

// --- 1. counts

static int counts(shrink *k, sh_diag *d)
{
    const eng_structure *st = &k->s->structure;
    k->nb = eng_net_blocks(k->net);
    k->groups = calloc(k->nb, sizeof *k->groups);
    k->ngroups = calloc(k->nb, sizeof *k->ngroups);
    k->remove = calloc(k->nb * ENG_GROUP_COUNT, sizeof *k->remove);
    if (!k->groups || !k->ngroups || !k->remove)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    for (size_t b = 0; b < k->nb; b++)
        k->ngroups[b] =
            eng_net_groups(k->net, b, k->groups[b], ENG_NET_MAX_GROUPS);
    const char *fam = eng_net_family(k->net);
    const eng_net_group *head = group_of(k, 0, ENG_GROUP_HEAD);
    if (!head && (st->heads > 0 || st->kv_heads > 0))
        return sh_diag_set(
            d, SH_ESPEC,
            st->heads > 0 ? "structure.heads" : "structure.kv_heads",
            "the %s family has no attention heads; its units are "
            "neurons (structure.neurons)",
            fam);
    if (!head && st->channels > 0)
        return sh_diag_set(d, SH_ESPEC, "structure.channels",
                           "the %s family's hidden units are neurons: use "
                           "structure.neurons",
                           fam);
    if (head && st->neurons > 0)
        return sh_diag_set(
            d, SH_ESPEC, "structure.neurons",
            "neurons are an mlp's hidden units; for the %s family's "
            "MLP use structure.channels",
            fam);
    char prefix[64];
    if (st->blocks > 0 &&
        !eng_net_block_prefix(k->net, 0, prefix, sizeof prefix))
        return sh_diag_set(
            d, SH_ESPEC, "structure.blocks",
            "blocks of the %s family cannot be removed (its layers "
            "change widths); use structure.neurons",
            fam);
    if (st->blocks >= (int64_t)k->nb)
        return sh_diag_set(
            d, SH_ESPEC, "structure.blocks",
            "structure.blocks %lld removes every block (the model "
            "has %zu); keep at least one",
            (long long)st->blocks, k->nb);
    for (size_t b = 0; b < k->nb; b++) {
        const eng_net_group *kv = group_of(k, b, ENG_GROUP_KV_HEAD),
                            *hd = group_of(k, b, ENG_GROUP_HEAD),
                            *ch = group_of(k, b, ENG_GROUP_CHANNEL);
        if (kv && hd) {
            int64_t nkv = kv->count, per = hd->count / kv->count;
            int64_t rkv = share_of(nkv, st->kv_heads), rh = 0;
            if (per == 1) // a head is its own KV group: it goes with k, v
                rkv += share_of(nkv - rkv, st->heads);
            else
                rh = share_of(per, st->heads);
            if (rkv >= nkv)
                return sh_diag_set(
                    d, SH_ESPEC,
                    st->kv_heads > 0 ? "structure.kv_heads" : "structure.heads",
                    "that removes all %lld KV groups of every layer; "
                    "give a smaller fraction",
                    (long long)nkv);
            if (rh >= per)
                return sh_diag_set(
                    d, SH_ESPEC, "structure.heads",
                    "structure.heads %g removes all %lld query heads "
                    "of each KV group (heads are removed per group "
                    "so every group keeps as many); give a smaller "
                    "fraction or remove KV groups (kv_heads)",
                    st->heads, (long long)per);
            *removed(k, b, ENG_GROUP_KV_HEAD) = rkv;
            *removed(k, b, ENG_GROUP_HEAD) = (nkv - rkv) * rh;
            k->heads_per = per;
            k->heads_cut = rh;
        }
        double f = head ? st->channels : st->neurons;
        if (ch && f > 0) {
            int64_t keep = kept_of(ch->count, f, st->multiple_of);
            if (keep <= 0)
                return sh_diag_set(
                    d, SH_ESPEC,
                    head ? "structure.channels" : "structure.neurons",
                    "that removes every channel of block %zu", b);
            *removed(k, b, ENG_GROUP_CHANNEL) = ch->count - keep;
        }
    }
    int64_t any = st->blocks;
    for (size_t i = 0; i < k->nb * ENG_GROUP_COUNT; i++)
        any += k->remove[i];
    if (any == 0)
        return sh_diag_set(
            d, SH_ESPEC, "structure",
            "the structure removes nothing once rounded to whole "
            "units (heads per KV group, channels, neurons; "
            "multiple_of rounds kept counts up): give larger "
            "fractions");
    return 0;
}

// --- scores

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

// The weights of the span's linear: in own, or in next for a next span.
static const float *span_weight(eng_net_block *own, eng_net_block *next,
                                const eng_group_span *sp)
{
    return eng_net_block_weight(sp->next ? next : own, (size_t)sp->linear);
}

static const eng_net_linear *span_linear(const shrink *k, size_t b,
                                         const eng_group_span *sp)
{
    const eng_net_linear *lin;
    eng_net_linears(k->net, sp->next ? b + 1 : b, &lin);
    return &lin[sp->linear];
}

// LLM-Pruner's Taylor importance of a span's weights, each |w g - 1/2 w^2
// F| (g the gradient of the mean loss, F the Fisher sums), summed per unit.
static void taylor_span(const shrink *k, const eng_net_linear *l,
                        const eng_group_span *sp, const float *w, double *score)
{
    const eng_grads *gs = k->in ? k->in->grads : NULL;
    const float *g = gs ? gs->g[l->tensor] : NULL;
    const float *f = gs ? gs->fisher[l->tensor] : NULL;
    for (int64_t r = 0; g && f && r < l->rows; r++) {
        for (int64_t c = 0; c < l->cols; c++) {
            int64_t e = r * l->cols + c;
            double x = w[e];
            double v = fabs(x * g[e] - 0.5 * x * x * f[e]);
            score[(sp->cols ? c : r) / sp->size] += v;
        }
    }
}

// Scores of the units of group g of block b (own; next is block b + 1's
// weights for next spans). Data-aware criteria read the statistics of the
// consumer's site.
static void score_units(shrink *k, size_t b, const eng_net_group *g,
                        eng_net_block *own, eng_net_block *next, double *score)
{
    const eng_method_def *md = &eng_methods[k->s->method];
    memset(score, 0, (size_t)g->count * sizeof *score);
    if (md->unit == ENG_UNIT_RANDOM) {
        for (int64_t u = 0; u < g->count; u++)
            score[u] = (double)(mix(k->s->seed ^ mix(b * 16 + g->kind) ^
                                    mix((uint64_t)u + 0x51ed)) >>
                                11) /
                       9007199254740992.0;
        return;
    }
    bool l1 = k->s->norm == ENG_NORM_L1;
    for (int q = 0; q < g->nspans; q++) {
        const eng_group_span *sp = &g->span[q];
        bool data = md->unit == ENG_UNIT_WANDA || md->unit == ENG_UNIT_FLAP;
        if (data && q != g->consumer)
            continue; // data-aware: the consumer's columns alone
        const eng_net_linear *l = span_linear(k, b, sp);
        const float *w = span_weight(own, next, sp);
        int site = l->site;
        if (md->unit == ENG_UNIT_TAYLOR) {
            taylor_span(k, l, sp, w, score);
            continue;
        }
        for (int64_t r = 0; r < l->rows; r++) {
            const float *row = w + r * l->cols;
            if (!sp->cols) {
                double acc = 0;
                for (int64_t c = 0; c < l->cols; c++)
                    acc += l1 ? fabs(row[c]) : (double)row[c] * row[c];
                score[r / sp->size] += acc;
                continue;
            }
            for (int64_t c = 0; c < l->cols; c++) {
                double x = row[c], v;
                if (md->unit == ENG_UNIT_WANDA)
                    v = fabs(x) * sqrt(k->sq[site][c]);
                else if (md->unit == ENG_UNIT_FLAP) {
                    double n = (double)k->rows[site],
                           mean = k->sum[site][c] / n;
                    double var = k->sq[site][c] / n - mean * mean;
                    v = x * x * (var > 0 ? var : 0);
                } else
                    v = l1 ? fabs(x) : x * x;
                score[c / sp->size] += v;
            }
        }
    }
}

typedef struct ranked {
    double score;
    int64_t unit;
} ranked;

static int cmp_ranked(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? -1 : 1;
    return (x->unit > y->unit) - (x->unit < y->unit);
}

// Marks the r lowest-scoring units among [lo, hi) that are not gone yet.
static void remove_lowest(const double *score, int64_t lo, int64_t hi,
                          int64_t r, uint8_t *gone, ranked *tmp)
{
    int64_t n = 0;
    for (int64_t u = lo; u < hi; u++)
        if (!gone[u])
            tmp[n++] = (ranked){score[u], u};
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_ranked);
    for (int64_t i = 0; i < r && i < n; i++)
        gone[tmp[i].unit] = 1;
}

// --- 3. units: decide, zero and compensate

// Zeroes the spans of the units of g marked in fresh (not yet zeroed) in
// blk (block b); next spans only when next_only, in-block ones otherwise.
// The consumer's removed columns' mean output goes to its bias first
// (flap, compensate).
static int apply(shrink *k, size_t b, const eng_net_group *g,
                 const uint8_t *fresh, eng_net_block *blk, bool next_only,
                 sh_diag *d)
{
    size_t at = next_only ? b + 1 : b;
    bool comp = eng_methods[k->s->method].unit == ENG_UNIT_FLAP &&
                k->s->structure.compensate;
    for (int q = 0; q < g->nspans; q++) {
        const eng_group_span *sp = &g->span[q];
        if (sp->next != next_only)
            continue;
        const eng_net_linear *l = span_linear(k, b, sp);
        float *w = eng_net_block_weight(blk, (size_t)sp->linear);
        if (comp && q == g->consumer) {
            float **slot = &k->comp[at * NL + (size_t)sp->linear];
            if (!*slot && !(*slot = calloc((size_t)l->rows, sizeof **slot)))
                return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
            float *delta = calloc((size_t)l->rows, sizeof *delta);
            if (!delta)
                return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
            for (int64_t r = 0; r < l->rows; r++) {
                double acc = 0;
                for (int64_t c = 0; c < l->cols; c++)
                    if (fresh[c / sp->size])
                        acc += (double)w[r * l->cols + c] *
                               (k->sum[l->site][c] / (double)k->rows[l->site]);
                delta[r] = (float)acc;
                (*slot)[r] += (float)acc;
            }
            int rc = eng_net_block_bias_add(blk, (size_t)sp->linear, delta,
                                            l->rows, d);
            free(delta);
            if (rc != 0)
                return rc;
        }
        float *bias = eng_net_block_bias(blk, (size_t)sp->linear);
        for (int64_t r = 0; r < l->rows; r++)
            for (int64_t c = 0; c < l->cols; c++)
                if (fresh[(sp->cols ? c : r) / sp->size])
                    w[r * l->cols + c] = 0.0f;
        for (int64_t r = 0; bias && !sp->cols && r < l->rows; r++)
            if (fresh[r / sp->size])
                bias[r] = 0.0f;
    }
    return 0;
}

static uint8_t **gone_of(shrink *k, size_t b, eng_group_kind kind)
{
    return &k->gone[b * ENG_GROUP_COUNT + kind];
}

// Decides group kind of block b from its scores, marks its units gone
// and zeroes them (in blk for in-block spans, in next_blk for next ones).
static int decide(shrink *k, size_t b, eng_group_kind kind, eng_net_block *own,
                  eng_net_block *next_blk, sh_diag *d)
{
    const eng_net_group *g = group_of(k, b, kind);
    int64_t r = *removed(k, b, kind);
    if (!g || r == 0)
        return 0;
    uint8_t **gone = gone_of(k, b, kind);
    if (!*gone && !(*gone = calloc((size_t)g->count, 1)))
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    double *score = malloc((size_t)g->count * sizeof *score);
    ranked *tmp = malloc((size_t)g->count * sizeof *tmp);
    uint8_t *fresh = calloc((size_t)g->count, 1);
    uint8_t *before = malloc((size_t)g->count);
    int rc = 0;
    if (!score || !tmp || !fresh || !before) {
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        goto out;
    }
    memcpy(before, *gone, (size_t)g->count);
    score_units(k, b, g, own, next_blk, score);
    if (kind == ENG_GROUP_HEAD) // as many in every kept KV group (a
                                // removed group's are all gone already)
        for (int64_t lo = 0; lo < g->count; lo += k->heads_per)
            remove_lowest(score, lo, lo + k->heads_per, k->heads_cut, *gone,
                          tmp);
    else
        remove_lowest(score, 0, g->count, r, *gone, tmp);
    for (int64_t u = 0; u < g->count; u++)
        fresh[u] = (*gone)[u] && !before[u];
    if (kind == ENG_GROUP_KV_HEAD) { // its query heads go with it
        uint8_t **heads = gone_of(k, b, ENG_GROUP_HEAD);
        const eng_net_group *hg = group_of(k, b, ENG_GROUP_HEAD);
        if (!*heads && !(*heads = calloc((size_t)hg->count, 1))) {
            rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
            goto out;
        }
        for (int64_t u = 0; u < hg->count; u++)
            if ((*gone)[u / k->heads_per])
                (*heads)[u] = 1;
    }
    bool next = false;
    for (int q = 0; q < g->nspans; q++)
        next = next || g->span[q].next;
    rc = apply(k, b, g, fresh, next ? next_blk : own, next, d);
out:
    free(score);
    free(tmp);
    free(fresh);
    free(before);
    return rc;
}

// Statistics of the sites a block's decisions read.
static bool on_site(void *ctx, int site, const float *x, int64_t rows,
                    int64_t cols)
{
    shrink *k = ctx;
    if (site >= SITES || !k->want[site])
        return site < k->last_site;
    if (!k->sum[site]) {
        k->sum[site] = calloc((size_t)cols, sizeof(double));
        k->sq[site] = calloc((size_t)cols, sizeof(double));
        k->cols[site] = cols;
    }
    if (!k->sum[site] || !k->sq[site])
        return false; // the caller sees the missing buffers
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double v = x[r * cols + c];
            k->sum[site][c] += v;
            k->sq[site][c] += v * v;
        }
    k->rows[site] += rows;
    return site < k->last_site;
}

static void stats_free(shrink *k)
{
    for (int s = 0; s < SITES; s++) {
        free(k->sum[s]);
        free(k->sq[s]);
        k->sum[s] = k->sq[s] = NULL;
        k->want[s] = false;
        k->rows[s] = 0;
    }
    k->last_site = -1;
}

// The sites whose statistics block b's decisions need: the consumers in
// it of its own groups and of block b - 1's next groups.
static bool want_sites(shrink *k, size_t b)
{
    stats_free(k);
    if (!eng_methods[k->s->method].unit_stats)
        return false;
    const eng_net_linear *lin;
    eng_net_linears(k->net, b, &lin);
    bool any = false;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && b == 0)
            break;
        size_t gb = pass ? b - 1 : b;
        for (size_t i = 0; i < k->ngroups[gb]; i++) {
            const eng_net_group *g = &k->groups[gb][i];
            if (g->consumer < 0 || *removed(k, gb, g->kind) == 0)
                continue;
            const eng_group_span *sp = &g->span[g->consumer];
            if (sp->next != (pass == 1))
                continue;
            int site = lin[sp->linear].site;
            k->want[site] = any = true;
            k->last_site = site > k->last_site ? site : k->last_site;
        }
    }
    return any;
}

// The statistics of group g's consumer site alone, over block b (blk as
// it is now) on its input acts.
static int restat(shrink *k, size_t b, const eng_net_group *g,
                  eng_net_block *blk, const eng_acts *acts, sh_diag *d)
{
    stats_free(k);
    const eng_net_linear *lin;
    eng_net_linears(k->net, b, &lin);
    int site = lin[g->span[g->consumer].linear].site;
    k->want[site] = true;
    k->last_site = site;
    int rc = eng_net_block_stats_polled(k->net, blk, acts, on_site, k, k->h, d);
    if (rc == 0 && (!k->sum[site] || !k->sq[site]))
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    return rc;
}

static int units_pass(shrink *k, const eng_dataset *ds, sh_diag *d)
{
    eng_acts acts = {0};
    eng_net_block *prev = NULL, *blk = NULL;
    bool data = eng_methods[k->s->method].unit_stats != 0;
    int rc = data ? eng_net_embed_polled(k->net, ds, &acts, k->h, d) : 0;
    for (size_t b = 0; rc == 0 && b < k->nb; b++) {
        if (eng_hooks_cancelled(k->h)) {
            rc = SH_ECANCELED;
            break;
        }
        eng_hooks_progress(k->h, &(eng_progress){.phase = "shrinking",
                                                 .stage = "solve",
                                                 .step = (int64_t)b + 1,
                                                 .steps = (int64_t)k->nb});
        if (k->block_gone[b])
            continue; // its input passes through unchanged
        if ((rc = eng_net_block_open(k->net, b, &blk, d)) != 0)
            break;
        if (data && want_sites(k, b)) {
            rc = eng_net_block_stats_polled(k->net, blk, &acts, on_site, k,
                                            k->h, d);
            for (int s = 0; rc == 0 && s < SITES; s++)
                if (k->want[s] && (!k->sum[s] || !k->sq[s]))
                    rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        }
        // Block b - 1's units read by this block, then its own.
        const eng_net_group *pg =
            b > 0 ? group_of(k, b - 1, ENG_GROUP_CHANNEL) : NULL;
        if (rc == 0 && prev && pg && pg->span[pg->consumer].next)
            rc = decide(k, b - 1, ENG_GROUP_CHANNEL, prev, blk, d);
        static const eng_group_kind order[] = {
            ENG_GROUP_KV_HEAD, ENG_GROUP_HEAD, ENG_GROUP_CHANNEL};
        bool changed = false; // the block's attention lost units
        for (size_t i = 0; rc == 0 && i < 3; i++) {
            const eng_net_group *g = group_of(k, b, order[i]);
            bool next = g && g->nspans && g->span[g->consumer].next;
            if (!g || next)
                continue;
            // Later units read what the earlier removals left: their
            // consumer's statistics again, over the block as it is now.
            if (data && changed && *removed(k, b, order[i]) > 0 &&
                g->consumer >= 0)
                rc = restat(k, b, g, blk, &acts, d);
            if (rc == 0)
                rc = decide(k, b, order[i], blk, NULL, d);
            changed = changed || *removed(k, b, order[i]) > 0;
        }
        if (rc == 0 && data && b + 1 < k->nb)
            rc = eng_net_block_forward_polled(k->net, blk, &acts, k->h, d);
        eng_net_block_close(prev);
        prev = blk;
        blk = NULL;
    }
    eng_net_block_close(prev);
    eng_net_block_close(blk);
    eng_acts_deinit(&acts);
    stats_free(k);
    return rc;
}

// --- 2. blocks

static int blocks_pass(shrink *k, const eng_dataset *ds, eng_report *r,
                       sh_diag *d)
{
    const eng_structure *st = &k->s->structure;
    int64_t n = st->blocks;
    if (n == 0)
        return 0;
    double *bi = calloc(k->nb, sizeof *bi);
    ranked *tmp = calloc(k->nb, sizeof *tmp);
    eng_acts acts = {0}, in = {0};
    int rc = !bi || !tmp ? sh_diag_set(d, SH_ENOMEM, "", "out of memory") : 0;
    if (rc == 0 && st->blocks_by == ENG_BLOCKS_INFLUENCE) {
        rc = eng_net_embed_polled(k->net, ds, &acts, k->h, d);
        for (size_t b = 0; rc == 0 && b < k->nb; b++) {
            eng_net_block *blk = NULL;
            if ((rc = eng_net_block_open(k->net, b, &blk, d)) == 0 &&
                (rc = eng_acts_copy_polled(&in, &acts, k->h, d)) == 0)
                rc = eng_net_block_forward_polled(k->net, blk, &acts, k->h, d);
            eng_net_block_close(blk);
            double cos_sum = 0;
            for (int64_t i = 0; rc == 0 && i < acts.rows; i++) {
                const float *x = in.x + i * in.width,
                            *y = acts.x + i * acts.width;
                double xy = 0, xx = 0, yy = 0;
                for (int64_t c = 0; c < acts.width; c++) {
                    xy += (double)x[c] * y[c];
                    xx += (double)x[c] * x[c];
                    yy += (double)y[c] * y[c];
                }
                cos_sum += xx > 0 && yy > 0 ? xy / sqrt(xx * yy) : 1.0;
            }
            bi[b] = 1.0 - cos_sum / (double)(acts.rows ? acts.rows : 1);
        }
    } else if (rc == 0) {
        for (size_t b = 0; b < k->nb; b++)
            bi[b] = st->blocks_by == ENG_BLOCKS_LAST
                        ? (double)(k->nb - b)
                        : (double)(mix(k->s->seed ^ mix(0xb10c + b)) >> 11);
    }
    if (rc == 0) {
        uint8_t *gone = calloc(k->nb, 1);
        if (!gone)
            rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        else {
            remove_lowest(bi, 0, (int64_t)k->nb, n, gone, tmp);
            for (size_t b = 0; b < k->nb; b++)
                k->block_gone[b] = gone[b];
            free(gone);
        }
        json_t *arr = json_array();
        for (size_t b = 0; st->blocks_by == ENG_BLOCKS_INFLUENCE && b < k->nb;
             b++)
            json_array_append_new(arr, json_real(bi[b]));
        if (st->blocks_by == ENG_BLOCKS_INFLUENCE)
            json_object_set_new(r->structure, "block_influence", arr);
        else
            json_decref(arr);
    }
    eng_acts_deinit(&acts);
    eng_acts_deinit(&in);
    free(bi);
    free(tmp);
    return rc;
}

// --- the plan's outputs

// The spans that cut rows (or columns) of linear i of block b: of block
// b's own groups, and the next spans of block b - 1's.
typedef struct hit {
    size_t block; // the group's block
    const eng_net_group *g;
    const eng_group_span *sp;
} hit;

static size_t spans_on(shrink *k, size_t b, size_t i, bool cols, hit *out)
{
    size_t n = 0;
    for (int pass = 0; pass < 2 && !(pass == 1 && b == 0); pass++) {
        size_t gb = pass ? b - 1 : b;
        for (size_t g = 0; g < k->ngroups[gb]; g++)
            for (int q = 0; q < k->groups[gb][g].nspans; q++) {
                const eng_group_span *sp = &k->groups[gb][g].span[q];
                if (sp->next == (pass == 1) && (size_t)sp->linear == i &&
                    sp->cols == cols && n < 2 * ENG_NET_MAX_GROUPS)
                    out[n++] = (hit){gb, &k->groups[gb][g], sp};
            }
    }
    return n;
}

// Kept rows or columns of linear i of block b.
static int64_t kept_dim(shrink *k, size_t b, size_t i, bool cols)
{
    const eng_net_linear *lin;
    eng_net_linears(k->net, b, &lin);
    int64_t n = cols ? lin[i].cols : lin[i].rows;
    hit h[2 * ENG_NET_MAX_GROUPS];
    size_t nh = spans_on(k, b, i, cols, h);
    for (size_t x = 0; x < nh; x++)
        n -= *removed(k, h[x].block, h[x].g->kind) * h[x].sp->size;
    return n;
}

// Whether row or column j of linear i of block b stays.
static bool keeps(shrink *k, size_t b, size_t i, bool cols, int64_t j)
{
    hit h[2 * ENG_NET_MAX_GROUPS];
    size_t nh = spans_on(k, b, i, cols, h);
    for (size_t x = 0; x < nh; x++) {
        const uint8_t *gone = *gone_of(k, h[x].block, h[x].g->kind);
        if (gone && gone[j / h[x].sp->size])
            return false;
    }
    return true;
}

static const char *own_name(shrink *k, const char *fmt, const char *a,
                            const char *b)
{
    size_t len = strlen(a) + strlen(b) + 16;
    char *s = malloc(len);
    char **names = realloc(k->names, (k->nnames + 1) * sizeof *names);
    if (!s || !names) {
        free(s);
        if (names)
            k->names = names;
        return NULL;
    }
    k->names = names;
    snprintf(s, len, fmt, a, b);
    k->names[k->nnames++] = s;
    return s;
}

typedef struct where {
    size_t block; // SIZE_MAX: no block's
    int linear;   // the weight of linear i, or -1
    int bias;     // the bias of linear i, or -1
} where;

static where locate(shrink *k, size_t ti)
{
    where w = {SIZE_MAX, -1, -1};
    size_t b, i;
    if (eng_net_find_linear(k->net, ti, &b, &i))
        return (where){b, (int)i, -1};
    const char *name = eng_model_tensor(k->m, ti)->name;
    for (b = 0; b < k->nb; b++) {
        const eng_net_linear *lin;
        size_t nl = eng_net_linears(k->net, b, &lin);
        for (i = 0; i < nl; i++) {
            const char *wn = eng_model_tensor(k->m, lin[i].tensor)->name;
            size_t n = strlen(wn);
            if (n > 7 && strncmp(name, wn, n - 6) == 0 &&
                strcmp(name + n - 6, "bias") == 0 &&
                strcmp(wn + n - 7, ".weight") == 0 && strlen(name) == n - 2)
                return (where){b, -1, (int)i};
        }
        char prefix[64];
        if (eng_net_block_prefix(k->net, b, prefix, sizeof prefix) &&
            strncmp(name, prefix, strlen(prefix)) == 0)
            w.block = b;
    }
    return w;
}

static bool linear_has_bias(shrink *k, size_t b, size_t i)
{
    const eng_net_linear *lin;
    eng_net_linears(k->net, b, &lin);
    const char *wn = eng_model_tensor(k->m, lin[i].tensor)->name;
    char name[512];
    size_t n = strlen(wn);
    if (n < 7 || n >= sizeof name)
        return false;
    snprintf(name, sizeof name, "%.*sbias", (int)(n - 6), wn);
    return eng_model_find(k->m, name) >= 0;
}

// Whether linear i of block b gets a bias it does not have: the
// compensation's, and the zero ones its config flag implies.
static bool new_bias(shrink *k, size_t b, size_t i)
{
    if (linear_has_bias(k, b, i))
        return false;
    bool attention = false; // a linear the heads' groups span
    for (size_t g = 0; g < k->ngroups[b]; g++) {
        const eng_net_group *gr = &k->groups[b][g];
        for (int q = 0; q < gr->nspans; q++)
            attention = attention ||
                        ((gr->kind == ENG_GROUP_HEAD ||
                          gr->kind == ENG_GROUP_KV_HEAD) &&
                         (size_t)gr->span[q].linear == i && !gr->span[q].next);
    }
    return attention ? k->bias_attention : k->bias_mlp;
}

static int plan_outputs(shrink *k, eng_plan *p, sh_diag *d)
{
    size_t nb_new = 0;
    for (size_t b = 0; b < k->nb; b++)
        k->new_index[b] = k->block_gone[b] ? SIZE_MAX : nb_new++;
    for (size_t ti = 0; ti < p->n; ti++) {
        eng_plan_row *row = &p->rows[ti];
        const eng_tensor_info *t = eng_model_tensor(k->m, ti);
        where w = locate(k, ti);
        if (w.block == SIZE_MAX)
            continue; // as it is
        if (k->block_gone[w.block]) {
            row->n_out = 0;
            p->reshaped = true;
            continue;
        }
        char prefix[64], to[64];
        if (k->new_index[w.block] != w.block &&
            eng_net_block_prefix(k->net, w.block, prefix, sizeof prefix)) {
            eng_net_block_prefix(k->net, k->new_index[w.block], to, sizeof to);
            const char *name =
                own_name(k, "%s%s", to, t->name + strlen(prefix));
            if (!name)
                return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
            row->out[0].name = name;
            p->reshaped = true;
        }
        if (w.linear >= 0) {
            row->out[0].shape[0] =
                kept_dim(k, w.block, (size_t)w.linear, false);
            row->out[0].shape[1] = kept_dim(k, w.block, (size_t)w.linear, true);
            if (new_bias(k, w.block, (size_t)w.linear)) {
                const char *wn = row->out[0].name;
                size_t n = strlen(wn);
                char stem[512];
                snprintf(stem, sizeof stem, "%.*s", (int)(n - 6), wn);
                const char *name = own_name(k, "%s%s", stem, "bias");
                if (!name)
                    return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
                row->out[1] = (eng_plan_out){.name = name,
                                             .dtype = t->dtype,
                                             .ndim = 1,
                                             .shape = {row->out[0].shape[0]}};
                row->n_out = 2;
                p->reshaped = true;
            }
        } else if (w.bias >= 0)
            row->out[0].shape[0] = kept_dim(k, w.block, (size_t)w.bias, false);
    }
    return 0;
}

// --- 4. write

// Rows and columns of a (rows, cols) tensor of es-byte elements compacted
// in place to those linear i of block b keeps.
static int compact(shrink *k, size_t b, size_t i, unsigned char *buf,
                   int64_t rows, int64_t cols, bool bias, size_t es, sh_diag *d)
{
    uint8_t *kc = malloc((size_t)(cols ? cols : 1));
    if (!kc)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    for (int64_t c = 0; c < cols; c++)
        kc[c] = bias || keeps(k, b, i, true, c);
    size_t at = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (!keeps(k, b, i, false, r))
            continue;
        const unsigned char *src = buf + (size_t)(r * cols) * es;
        for (int64_t c = 0; c < cols; c++)
            if (kc[c]) {
                memmove(buf + at, src + (size_t)c * es, es);
                at += es;
            }
    }
    free(kc);
    return 0;
}

static int write_tensor(shrink *k, eng_out *out, size_t ti, sh_diag *d)
{
    const eng_tensor_info *t = eng_model_tensor(k->m, ti);
    where w = locate(k, ti);
    if (w.block != SIZE_MAX && k->block_gone[w.block])
        return 0;
    if (w.linear < 0 && w.bias < 0)
        return eng_out_copy(out, ti, d);
    size_t file, idx;
    eng_model_tensor_loc(k->m, ti, &file, &idx);
    const eng_st *st = eng_model_file_at(k->m, file)->st;
    size_t es = eng_dtype_size(t->dtype), n = (size_t)t->numel;
    unsigned char *buf = sh_alloc_bulk(n * es + 1);
    float *f = NULL;
    int rc = buf ? eng_st_read(st, idx, buf, d)
                 : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    size_t li = (size_t)(w.linear >= 0 ? w.linear : w.bias);
    const float *delta = k->comp[w.block * NL + li];
    int64_t rows = t->ndim == 2 ? t->shape[0] : (int64_t)n;
    int64_t cols = t->ndim == 2 ? t->shape[1] : 1;
    if (rc == 0 && w.bias >= 0 && delta) { // the compensation, rounded once
        if (!(f = malloc(n * sizeof *f)))
            rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        else {
            eng_convert_to_f32(f, buf, t->dtype, n);
            for (size_t r = 0; r < n; r++)
                f[r] += delta[r];
            eng_convert_from_f32(buf, f, t->dtype, n);
        }
    }
    if (rc == 0)
        rc = compact(k, w.block, li, buf, rows, cols, w.bias >= 0, es, d);
    if (rc == 0) {
        int64_t kr = kept_dim(k, w.block, li, false),
                kc = w.linear >= 0 ? kept_dim(k, w.block, li, true) : 1;
        rc = eng_out_put(out, ti, 0, buf, (size_t)(kr * kc) * es, d);
    }
    if (rc == 0 && w.linear >= 0 && new_bias(k, w.block, li)) {
        int64_t kr = kept_dim(k, w.block, li, false);
        float *b = calloc((size_t)kr, sizeof *b);
        rc = b ? 0 : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        for (int64_t r = 0, j = 0; rc == 0 && delta && r < rows; r++)
            if (keeps(k, w.block, li, false, r))
                b[j++] = delta[r];
        if (rc == 0) {
            eng_convert_from_f32(buf, b, t->dtype, (size_t)kr);
            rc = eng_out_put_at(out, ti, 1, 0, buf, (size_t)kr * es, d);
        }
        free(b);
    }
    free(f);
    free(buf);
    return rc;
}

// --- the report

static json_t *ints(const uint8_t *gone, int64_t n)
{
    json_t *a = json_array();
    for (int64_t u = 0; gone && u < n; u++)
        if (gone[u])
            json_array_append_new(a, json_integer(u));
    return a;
}

static const char *kind_key(const shrink *k, eng_group_kind kind)
{
    switch (kind) {
    case ENG_GROUP_HEAD: return "heads";
    case ENG_GROUP_KV_HEAD: return "kv_heads";
    case ENG_GROUP_CHANNEL:
        return group_of(k, 0, ENG_GROUP_HEAD) ? "channels" : "neurons";
    default: return "blocks";
    }
}

// Params, bytes and forward FLOPs per token of the model before and after:
// 2 per weight of every linear and the head, plus 4 per query row per
// context position (attention's scores and weighted sum, at the mean
// context (T + 1) / 2 of the data's T-token rows).
static void sizes(shrink *k, const eng_plan *p, eng_report *r)
{
    double params[2] = {0}, bytes[2] = {0}, flops[2] = {0};
    double ctx = k->context > 0 ? (k->context + 1) / 2.0 : 0;
    int q = eng_net_query_linear(k->net);
    for (size_t ti = 0; ti < p->n; ti++) {
        const eng_tensor_info *t = eng_model_tensor(k->m, ti);
        size_t es = eng_dtype_size(t->dtype);
        params[0] += (double)t->numel;
        bytes[0] += (double)(t->numel * es);
        for (size_t j = 0; j < p->rows[ti].n_out; j++) {
            const eng_plan_out *o = &p->rows[ti].out[j];
            double nel = 1;
            for (int x = 0; x < o->ndim; x++)
                nel *= (double)o->shape[x];
            params[1] += nel;
            bytes[1] += nel * (double)eng_dtype_size(o->dtype);
        }
        where w = locate(k, ti);
        if (w.linear < 0)
            continue;
        flops[0] += 2.0 * (double)t->numel;
        if (w.linear == q)
            flops[0] += 4.0 * (double)t->shape[0] * ctx;
        if (k->block_gone[w.block])
            continue;
        const eng_plan_out *o = &p->rows[ti].out[0];
        flops[1] += 2.0 * (double)o->shape[0] * (double)o->shape[1];
        if (w.linear == q)
            flops[1] += 4.0 * (double)o->shape[0] * ctx;
    }
    long head = eng_model_find(k->m, "lm_head.weight");
    if (head < 0 && q >= 0)
        head = eng_model_find(k->m, "model.embed_tokens.weight");
    if (head >= 0) {
        double hf = 2.0 * (double)eng_model_tensor(k->m, (size_t)head)->numel;
        flops[0] += hf;
        flops[1] += hf;
    }
    r->size = json_pack("{s:{s:f, s:f}, s:{s:f, s:f}, s:{s:f, s:f}, s:I}",
                        "params", "dense", params[0], "pruned", params[1],
                        "bytes", "dense", bytes[0], "pruned", bytes[1],
                        "flops_per_token", "dense", flops[0], "pruned",
                        flops[1], "context", (json_int_t)k->context);
    r->model_params = (uint64_t)params[1];
}

static void report(shrink *k, eng_report *r)
{
    json_t *units = json_object(), *blocks = json_array();
    bool attention = group_of(k, 0, ENG_GROUP_HEAD) != NULL;
    for (int kind = ENG_GROUP_HEAD; kind < ENG_GROUP_COUNT; kind++) {
        const eng_net_group *g = group_of(k, 0, (eng_group_kind)kind);
        if (!g)
            continue;
        // Llama blocks keep the same counts: per block. An mlp's layers
        // differ: summed over the model.
        int64_t before = 0, after = 0;
        for (size_t b = 0; b < (attention ? 1 : k->nb); b++) {
            const eng_net_group *gb = group_of(k, b, (eng_group_kind)kind);
            if (!gb)
                continue;
            before += gb->count;
            after += gb->count - *removed(k, b, (eng_group_kind)kind);
        }
        if (kind == ENG_GROUP_HEAD)
            after = (group_of(k, 0, ENG_GROUP_KV_HEAD)->count -
                     *removed(k, 0, ENG_GROUP_KV_HEAD)) *
                    (k->heads_per - k->heads_cut);
        json_object_set_new(
            units, kind_key(k, (eng_group_kind)kind),
            json_pack("{s:I, s:I, s:s}", "before", (json_int_t)before, "after",
                      (json_int_t)after, "per", attention ? "block" : "model"));
    }
    size_t kept = 0;
    for (size_t b = 0; b < k->nb; b++) {
        if (k->block_gone[b]) {
            json_array_append_new(
                blocks,
                json_pack("{s:I, s:b}", "index", (json_int_t)b, "removed", 1));
            continue;
        }
        kept++;
        json_t *e = json_pack("{s:I, s:I}", "index", (json_int_t)b, "as",
                              (json_int_t)k->new_index[b]);
        for (int kind = ENG_GROUP_HEAD; kind < ENG_GROUP_COUNT; kind++) {
            const eng_net_group *g = group_of(k, b, (eng_group_kind)kind);
            if (g && *removed(k, b, (eng_group_kind)kind) > 0)
                json_object_set_new(
                    e, kind_key(k, (eng_group_kind)kind),
                    ints(*gone_of(k, b, (eng_group_kind)kind), g->count));
        }
        json_array_append_new(blocks, e);
    }
    json_object_set_new(units, "blocks",
                        json_pack("{s:I, s:I, s:s}", "before",
                                  (json_int_t)k->nb, "after", (json_int_t)kept,
                                  "per", "model"));
    json_object_set_new(r->structure, "units", units);
    json_object_set_new(r->structure, "blocks", blocks);
    json_object_set_new(
        r->structure, "compensated",
        json_boolean(k->bias_attention || k->bias_mlp ||
                     (eng_methods[k->s->method].unit == ENG_UNIT_FLAP &&
                      k->s->structure.compensate)));
}

// --- the driver

static void shrink_free(shrink *k)
{
    for (size_t i = 0; k->gone && i < k->nb * ENG_GROUP_COUNT; i++)
        free(k->gone[i]);
    for (size_t i = 0; k->comp && i < k->nb * NL; i++)
        free(k->comp[i]);
    free(k->gone);
    free(k->comp);
    free(k->groups);
    free(k->ngroups);
    free(k->remove);
    free(k->block_gone);
    free(k->new_index);
    stats_free(k);
    eng_net_close(k->net);
}

// Tokens per row of a token dataset at path (its header only), or 0.
static int64_t token_cols(const char *path)
{
    eng_st *st = NULL;
    eng_dataset_info info;
    int64_t cols = 0;
    if (eng_st_open(&st, path, NULL) == 0 &&
        eng_dataset_check(eng_st_header_of(st), &info, NULL) == 0 &&
        info.kind == ENG_DATASET_TOKENS)
        cols = info.cols;
    eng_st_close(st);
    return cols;
}

// The shape every block keeps, the bias flags compensation needs, and the
// config.json they make (the family's rewrite of the input's), in *out.
// Needs counts(); block_gone may still be all false (a check).
static int new_config(shrink *k, json_t **out, sh_diag *d)
{
    eng_net_shape shape = {.block_gone = k->block_gone};
    for (size_t b = 0; b < k->nb; b++)
        shape.blocks += !(k->block_gone && k->block_gone[b]);
    for (int kind = 0; kind < ENG_GROUP_COUNT; kind++) {
        const eng_net_group *g = group_of(k, 0, (eng_group_kind)kind);
        shape.kept[kind] = g ? g->count - *removed(k, 0, kind) : 0;
    }
    if (group_of(k, 0, ENG_GROUP_HEAD))
        shape.kept[ENG_GROUP_HEAD] =
            shape.kept[ENG_GROUP_KV_HEAD] * (k->heads_per - k->heads_cut);
    bool comp = eng_methods[k->s->method].unit == ENG_UNIT_FLAP &&
                k->s->structure.compensate && eng_net_query_linear(k->net) >= 0;
    k->bias_attention = shape.bias_attention =
        comp &&
        (*removed(k, 0, ENG_GROUP_HEAD) || *removed(k, 0, ENG_GROUP_KV_HEAD));
    k->bias_mlp = shape.bias_mlp = comp && *removed(k, 0, ENG_GROUP_CHANNEL);
    const json_t *cfg = eng_model_config(k->m);
    json_t *c = cfg ? json_deep_copy(cfg) : json_object();
    if (!c)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    int rc = eng_net_config_rewrite(k->net, &shape, c, d);
    if (rc != 0) {
        json_decref(c);
        return rc == SH_EUNSUPPORTED ? SH_ESPEC : rc; // the spec asked it
    }
    *out = c;
    return 0;
}

int eng_shrink_check(const eng_spec *s, const eng_model *m, sh_diag *d)
{
    shrink k = {.m = m, .s = s, .last_site = -1};
    json_t *cfg = NULL;
    int rc = eng_net_open(&k.net, m, d);
    if (rc == 0)
        rc = counts(&k, d);
    if (rc == 0) // what the family's config can say (compensation biases)
        rc = new_config(&k, &cfg, d);
    json_decref(cfg);
    shrink_free(&k);
    return rc;
}

int eng_shrink(eng_plan *p, const eng_options *o, const eng_hooks *h,
               eng_out **outp, eng_report *r, sh_diag *d)
{
    shrink k = {.m = p->m, .s = p->s, .in = p->inputs, .h = h, .last_site = -1};
    eng_dataset ds = {0};
    int rc = eng_net_open(&k.net, p->m, d);
    if (rc == 0)
        rc = counts(&k, d);
    if (rc == 0 &&
        (!(k.gone = calloc(k.nb * ENG_GROUP_COUNT, sizeof *k.gone)) ||
         !(k.comp = calloc(k.nb * NL, sizeof *k.comp)) ||
         !(k.block_gone = calloc(k.nb, sizeof *k.block_gone)) ||
         !(k.new_index = calloc(k.nb, sizeof *k.new_index)) ||
         !(r->structure = json_object())))
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    double t0 = sh_time_mono();
    if (rc == 0 && o->calibration_path) {
        rc = eng_dataset_load(&ds, o->calibration_path, p->s->calib_samples,
                              eng_net_vocab(k.net), eng_net_classes(k.net), h,
                              d);
        if (rc == 0)
            rc = eng_net_check_dataset(k.net, &ds.info, d);
        if (rc != 0 && rc != SH_ECANCELED)
            sh_diag_prefix(d, "calibration data");
        if (rc == 0) {
            bool tokens = ds.info.kind == ENG_DATASET_TOKENS;
            r->calib_samples = ds.rows;
            r->calib_tokens = tokens ? ds.rows * ds.info.cols : ds.rows;
            k.context = tokens ? ds.info.cols : 0;
        }
    }
    if (rc == 0 && !k.context && o->evaluation_path) // FLOPs' context
        k.context = token_cols(o->evaluation_path);
    t0 = eng_report_lap(r, NULL, ENG_PHASE_READ, t0);
    if (rc == 0)
        rc = blocks_pass(&k, &ds, r, d);
    if (rc == 0)
        rc = units_pass(&k, &ds, d);
    t0 = eng_report_lap(r, NULL, ENG_PHASE_SOLVE, t0);
    if (rc == 0)
        rc = new_config(&k, &p->config, d);
    if (rc == 0)
        rc = plan_outputs(&k, p, d);
    if (rc == 0)
        rc = eng_out_open(outp, p, eng_format_find(ENG_OUTPUT_DENSE), o, d);
    for (size_t ti = 0; rc == 0 && ti < p->n; ti++) {
        if (ti % 16 == 0 && eng_hooks_cancelled(h))
            rc = SH_ECANCELED;
        else
            rc = write_tensor(&k, *outp, ti, d);
    }
    eng_report_lap(r, NULL, ENG_PHASE_WRITE, t0);
    if (rc == 0) {
        sizes(&k, p, r);
        report(&k, r);
        const eng_net_linear *lin;
        for (size_t b = 0; b < k.nb; b++)
            if (!k.block_gone[b])
                r->target_tensors += eng_net_linears(k.net, b, &lin);
    }
    eng_dataset_deinit(&ds);
    shrink_free(&k);
    // The plan borrows the names until the output is done: handed over.
    p->names = k.names;
    p->n_names = p->cap_names = k.nnames;
    return rc;
}

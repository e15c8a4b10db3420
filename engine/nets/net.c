// net.c: the family table, opening models, blocks, the weight overlay, and
// the block loop that embedding, forward passes and evaluation drive
// through a family (family.h).
#include "engine/nets/net.h"

#include "engine/math/poll.h"
#include "engine/nets/layers.h"

#include "common/util.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

// --- the family table

static const eng_family *const families[] = {&eng_family_mlp,
                                             &eng_family_llama};

static const eng_family *family_of(const char *arch)
{
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++)
        for (const char *const *a = families[f]->archs; *a; a++)
            if (strcmp(arch, *a) == 0)
                return families[f];
    return NULL;
}

bool eng_net_runs(const char *arch) { return family_of(arch) != NULL; }

eng_dataset_kind eng_net_kind_for(const char *arch)
{
    const eng_family *f = family_of(arch);
    return f ? f->kind : ENG_DATASET_TOKENS;
}

static const char *const group_names[] = {
    [ENG_GROUP_BLOCK] = "block",
    [ENG_GROUP_HEAD] = "head",
    [ENG_GROUP_KV_HEAD] = "kv_head",
    [ENG_GROUP_CHANNEL] = "channel",
};
static_assert(sizeof group_names / sizeof group_names[0] == ENG_GROUP_COUNT,
              "a name per group kind");

const char *eng_group_kind_name(eng_group_kind k) { return group_names[k]; }

// --- opening

int eng_net_open(eng_net **out, const eng_model *m, sh_diag *d)
{
    const json_t *cfg = eng_model_config(m);
    const char *arch = eng_model_arch(m);
    if (!cfg)
        return sh_diag_set(d, SH_EUNSUPPORTED, "",
                           "the model has no config.json; running it "
                           "(calibration, evaluation) needs one");
    const eng_family *fam = family_of(arch);
    if (!fam)
        return sh_diag_set(d, SH_EUNSUPPORTED, "",
                           "the engine cannot run architecture \"%s\" "
                           "(it runs mlp and the Llama family: llama, "
                           "mistral, qwen2)",
                           arch);
    eng_net *n = calloc(1, sizeof *n);
    if (!n)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    n->m = m;
    n->fam = fam;
    int rc = fam->open(n, cfg, d);
    if (rc != 0) {
        eng_net_close(n);
        return rc;
    }
    *out = n;
    return 0;
}

void eng_net_close(eng_net *n)
{
    if (!n)
        return;
    n->fam->close(n);
    free(n->overlay);
    free(n->scratch);
    free(n->gscratch);
    free(n->head_w);
    free(n->head_norm);
    free(n->blocks);
    free(n);
}

const char *eng_net_family(const eng_net *n) { return n->fam->name; }

eng_dataset_kind eng_net_input_kind(const eng_net *n) { return n->fam->kind; }

int64_t eng_net_vocab(const eng_net *n) { return n->vocab; }

int64_t eng_net_classes(const eng_net *n) { return n->classes; }

int eng_net_check_dataset(const eng_net *n, const eng_dataset_info *di,
                          sh_diag *d)
{
    eng_dataset_kind want = n->fam->kind;
    if (di->kind != want)
        return sh_diag_set(d, SH_EFORMAT, "dataset",
                           "this model needs a dataset of \"%s\", not \"%s\"",
                           eng_dataset_kind_name(want),
                           eng_dataset_kind_name(di->kind));
    return n->fam->check_dataset(n, di, d);
}

int eng_net_config_rewrite(const eng_net *n, const eng_net_shape *shape,
                           json_t *cfg, sh_diag *d)
{
    return n->fam->config_rewrite ? n->fam->config_rewrite(n, shape, cfg, d)
                                  : 0;
}

// --- the weight overlay

int eng_net_overlay_set(eng_net *n, size_t tensor, const float *values,
                        sh_diag *d)
{
    size_t count = eng_model_tensor_count(n->m);
    if (tensor >= count || !values)
        return sh_diag_set(d, SH_EINVAL, "", "no tensor %zu to overlay",
                           tensor);
    if (!n->overlay && !(n->overlay = calloc(count, sizeof *n->overlay)))
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    n->overlay[tensor] = values;
    return 0;
}

void eng_net_overlay_clear(eng_net *n, size_t tensor)
{
    if (n->overlay && tensor < eng_model_tensor_count(n->m))
        n->overlay[tensor] = NULL;
}

// --- blocks

size_t eng_net_blocks(const eng_net *n) { return n->nblocks; }

size_t eng_net_linears(const eng_net *n, size_t block,
                       const eng_net_linear **out)
{
    *out = n->blocks[block].lin;
    return n->blocks[block].nlin;
}

int eng_net_sites(const eng_net *n, size_t block)
{
    return n->blocks[block].sites;
}

size_t eng_net_groups(const eng_net *n, size_t block, eng_net_group *out,
                      size_t cap)
{
    return n->fam->groups(n, block, out, cap);
}

bool eng_net_find_linear(const eng_net *n, size_t tensor, size_t *block,
                         size_t *linear)
{
    for (size_t b = 0; b < n->nblocks; b++) {
        for (size_t i = 0; i < n->blocks[b].nlin; i++) {
            if (n->blocks[b].lin[i].tensor == tensor) {
                *block = b;
                *linear = i;
                return true;
            }
        }
    }
    return false;
}

static int block_open(eng_net *n, size_t block, bool lazy, eng_net_block **out,
                      sh_diag *d)
{
    eng_net_block *b = calloc(1, sizeof *b);
    if (!b)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    b->index = block;
    b->lazy = lazy;
    const net_block_def *def = &n->blocks[block];
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < def->nlin; i++) {
        if (!lazy)
            rc = net_tensor_load(n, def->lin[i].tensor, &b->w[i], d);
        if (rc == 0 && def->bias[i] != NET_NO_TENSOR)
            rc = net_tensor_load(n, def->bias[i], &b->b[i], d);
    }
    for (size_t i = 0; rc == 0 && i < def->naux; i++)
        rc = net_tensor_load(n, def->aux[i], &b->aux[i], d);
    if (rc != 0) {
        eng_net_block_close(b);
        return rc;
    }
    *out = b;
    return 0;
}

int eng_net_block_open(eng_net *n, size_t block, eng_net_block **out,
                       sh_diag *d)
{
    return block_open(n, block, false, out, d);
}

int eng_net_block_open_lazy(eng_net *n, size_t block, eng_net_block **out,
                            sh_diag *d)
{
    return block_open(n, block, true, out, d);
}

void eng_net_block_close(eng_net_block *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < NET_MAX_LINEARS; i++) {
        free(b->w[i]);
        free(b->b[i]);
    }
    for (size_t i = 0; i < NET_MAX_AUX; i++)
        free(b->aux[i]);
    free(b);
}

float *eng_net_block_weight(eng_net_block *b, size_t i) { return b->w[i]; }
float *eng_net_block_bias(eng_net_block *b, size_t i) { return b->b[i]; }

int eng_net_block_bias_add(eng_net_block *b, size_t i, const float *delta,
                           int64_t rows, sh_diag *d)
{
    if (!b->b[i] &&
        !(b->b[i] = calloc((size_t)(rows ? rows : 1), sizeof(float))))
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    for (int64_t r = 0; r < rows; r++)
        b->b[i][r] += delta[r];
    return 0;
}

bool eng_net_block_prefix(const eng_net *n, size_t block, char *buf,
                          size_t size)
{
    if (!n->fam->block_prefix)
        return false;
    n->fam->block_prefix(n, block, buf, size);
    return true;
}

int eng_net_query_linear(const eng_net *n) { return n->fam->query_linear; }

// --- activations

void eng_acts_deinit(eng_acts *a)
{
    if (!a->borrowed)
        free(a->x);
    a->x = NULL;
    a->borrowed = false;
}

int eng_acts_copy(eng_acts *dst, const eng_acts *src, sh_diag *d)
{
    return eng_acts_copy_polled(dst, src, NULL, d);
}

int eng_acts_copy_polled(eng_acts *dst, const eng_acts *src, const eng_hooks *h,
                         sh_diag *d)
{
    // dst's buffer is reused when it is large enough.
    size_t n = (size_t)(src->rows * src->width);
    size_t have =
        dst->x && !dst->borrowed ? (size_t)(dst->rows * dst->width) : 0;
    float *x = have >= n ? dst->x
                         : realloc(dst->borrowed ? NULL : dst->x,
                                   (n ? n : 1) * sizeof *x);
    if (!x)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    *dst = *src;
    dst->x = x;
    dst->borrowed = false;
    return eng_copy_polled(dst->x, src->x, n, h);
}

// --- running

int eng_net_embed(eng_net *n, const eng_dataset *ds, eng_acts *out, sh_diag *d)
{
    return eng_net_embed_polled(n, ds, out, NULL, d);
}

int eng_net_embed_polled(eng_net *n, const eng_dataset *ds, eng_acts *out,
                         const eng_hooks *h, sh_diag *d)
{
    return n->fam->embed(n, ds, out, h, d);
}

int eng_net_block_forward_polled(eng_net *n, eng_net_block *b, eng_acts *a,
                                 const eng_hooks *h, sh_diag *d)
{
    return n->fam->forward(n, b, a, h, d);
}

int eng_net_block_forward(eng_net *n, eng_net_block *b, eng_acts *a, sh_diag *d)
{
    return eng_net_block_forward_polled(n, b, a, NULL, d);
}

int eng_net_block_stats_polled(eng_net *n, eng_net_block *b, const eng_acts *a,
                               eng_site_fn fn, void *ctx, const eng_hooks *h,
                               sh_diag *d)
{
    return n->fam->stats(n, b, a, fn, ctx, h, d);
}

// The dataset's rows through every block: a holds the last block's output.
// Blocks from..to-1 over a, in place.
static int blocks_over(eng_net *n, size_t from, size_t to, eng_acts *a,
                       const eng_hooks *h, sh_diag *d)
{
    int rc = 0;
    for (size_t b = from; rc == 0 && b < to && b < n->nblocks; b++) {
        if (eng_hooks_cancelled(h)) {
            rc = SH_ECANCELED;
            break;
        }
        eng_net_block *blk = NULL;
        rc = eng_net_block_open(n, b, &blk, d);
        if (rc == 0 && eng_hooks_cancelled(h))
            rc = SH_ECANCELED;
        if (rc == 0)
            rc = eng_net_block_forward_polled(n, blk, a, h, d);
        eng_net_block_close(blk);
    }
    return rc;
}

static int run_blocks(eng_net *n, const eng_dataset *ds, eng_acts *a,
                      const eng_hooks *h, sh_diag *d)
{
    int rc = eng_net_embed_polled(n, ds, a, h, d);
    return rc == 0 ? blocks_over(n, 0, n->nblocks, a, h, d) : rc;
}

int eng_net_run_blocks(eng_net *n, size_t from, size_t to, eng_acts *a,
                       const eng_hooks *h, sh_diag *d)
{
    return blocks_over(n, from, to, a, h, d);
}

// --- evaluation

int eng_net_evaluate_from(eng_net *n, const eng_dataset *ds, size_t from,
                          eng_acts *a, const eng_hooks *h, eng_metric *out,
                          sh_diag *d)
{
    int rc = blocks_over(n, from, n->nblocks, a, h, d);
    return rc == 0 ? n->fam->metric(n, ds, a, h, out, d) : rc;
}

int eng_net_evaluate(eng_net *n, const eng_dataset *ds, const eng_hooks *h,
                     eng_metric *out, sh_diag *d)
{
    eng_acts a = {0};
    int rc = run_blocks(n, ds, &a, h, d);
    if (rc == 0)
        rc = n->fam->metric(n, ds, &a, h, out, d);
    eng_acts_deinit(&a);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_of(double *t, int n)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

// Timing: the tokens (samples) timed at most, and the head's positions.
enum { SPEED_TOKENS = 2048, SPEED_SAMPLES = 4096, SPEED_HEAD_ROWS = 256 };

int eng_net_speed(eng_net *n, const eng_dataset *ds, int passes,
                  const eng_hooks *h, double *per_s, sh_diag *d)
{
    enum { MAX_PASSES = 16 };
    if (passes < 1 || passes > MAX_PASSES)
        passes = 5;
    eng_dataset sub = *ds;
    bool tokens = ds->info.kind == ENG_DATASET_TOKENS;
    int64_t cap = tokens ? SPEED_TOKENS / (ds->info.cols ? ds->info.cols : 1)
                         : SPEED_SAMPLES;
    cap = cap < 1 ? 1 : cap > 8 && tokens ? 8 : cap;
    sub.rows = ds->rows < cap ? ds->rows : cap;
    if (sub.rows <= 0)
        return sh_diag_set(d, SH_EINVAL, "", "no rows to time");
    double units = (double)(tokens ? sub.rows * ds->info.cols : sub.rows);
    // Each piece is timed over the same input `passes` times after a
    // warm-up, the median kept, one block in memory at a time (its weights
    // loaded before its timing, as a runtime holds them).
    double t[MAX_PASSES + 1], total = 0;
    eng_acts a = {0}, in = {0};
    int rc = 0;
    for (int p = 0; rc == 0 && p <= passes; p++) {
        eng_acts_deinit(&a);
        double t0 = sh_time_mono();
        rc = eng_net_embed_polled(n, &sub, &a, h, d);
        t[p] = sh_time_mono() - t0;
    }
    if (rc == 0)
        total += median_of(t + 1, passes);
    for (size_t b = 0; rc == 0 && b < n->nblocks; b++) {
        eng_net_block *blk = NULL;
        if ((rc = eng_net_block_open(n, b, &blk, d)) == 0)
            rc = eng_acts_copy_polled(&in, &a, h, d);
        for (int p = 0; rc == 0 && p <= passes; p++) {
            if (p > 0 && (rc = eng_acts_copy_polled(&a, &in, h, d)) != 0)
                break;
            double t0 = sh_time_mono();
            rc = eng_net_block_forward_polled(n, blk, &a, h, d);
            t[p] = sh_time_mono() - t0;
        }
        if (rc == 0)
            total += median_of(t + 1, passes);
        eng_net_block_close(blk);
    }
    // The head on at most SPEED_HEAD_ROWS positions, scaled to them all
    // (a product per position); its weights loaded once.
    if (rc == 0 && n->fam->logits) {
        eng_acts head = a;
        head.rows = a.rows < SPEED_HEAD_ROWS ? a.rows : SPEED_HEAD_ROWS;
        head.borrowed = true;
        float *logits =
            sh_alloc_bulk((size_t)(head.rows * n->vocab) * sizeof *logits);
        rc = logits ? 0 : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        n->head_keep = true;
        for (int p = 0; rc == 0 && p <= passes; p++) {
            double t0 = sh_time_mono();
            rc = n->fam->logits(n, &head, logits, d);
            t[p] = sh_time_mono() - t0;
        }
        n->head_keep = false;
        free(n->head_w);
        free(n->head_norm);
        n->head_w = n->head_norm = NULL;
        free(logits);
        if (rc == 0)
            total +=
                median_of(t + 1, passes) * (double)a.rows / (double)head.rows;
    }
    if (rc == 0)
        *per_s = units / (total > 0 ? total : 1e-9);
    eng_acts_deinit(&a);
    eng_acts_deinit(&in);
    return rc;
}

int eng_net_logits(eng_net *n, const int32_t *ids, int64_t seqlen, float **out,
                   sh_diag *d)
{
    if (!n->fam->logits)
        return sh_diag_set(d, SH_EUNSUPPORTED, "", "logits need a token model");
    eng_dataset ds = {
        .info = {.kind = ENG_DATASET_TOKENS, .rows = 1, .cols = seqlen},
        .rows = 1,
        .ids = (int32_t *)ids};
    eng_acts a = {0};
    int rc = run_blocks(n, &ds, &a, NULL, d);
    float *logits = malloc((size_t)(seqlen * n->vocab) * sizeof *logits);
    if (rc == 0 && !logits)
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    if (rc == 0)
        rc = n->fam->logits(n, &a, logits, d);
    eng_acts_deinit(&a);
    if (rc != 0) {
        free(logits);
        return rc;
    }
    *out = logits;
    return 0;
}

// --- gradients

size_t eng_net_block_tensors(const eng_net *n, size_t block, size_t *out,
                             size_t cap)
{
    const net_block_def *def = &n->blocks[block];
    size_t count = 0;
    for (size_t i = 0; i < def->nlin; i++) {
        if (count < cap)
            out[count] = def->lin[i].tensor;
        count++;
        if (def->bias[i] != NET_NO_TENSOR) {
            if (count < cap)
                out[count] = def->bias[i];
            count++;
        }
    }
    for (size_t i = 0; i < def->naux; i++, count++)
        if (count < cap)
            out[count] = def->aux[i];
    return count;
}

size_t eng_net_head_tensors(const eng_net *n, size_t *out, size_t cap)
{
    return n->fam->head_tensors(n, out, cap);
}

size_t eng_net_tied_embedding(const eng_net *n)
{
    return n->vocab > 0 && n->head == n->embed ? n->embed : SIZE_MAX;
}

int eng_net_loss_backward(eng_net *n, const eng_dataset *row, const eng_acts *a,
                          float *dy, const eng_grad_sink *sink, double *loss,
                          sh_diag *d)
{
    return n->fam->loss_backward(n, row, a, dy, sink, loss, d);
}

int eng_net_block_backward(eng_net *n, eng_net_block *b, const eng_acts *in,
                           eng_acts *dy, const eng_grad_sink *sink,
                           const eng_hooks *h, sh_diag *d)
{
    return n->fam->backward(n, b, in, dy, sink, h, d);
}

int eng_net_embed_backward(eng_net *n, const eng_dataset *row, const float *dy,
                           const eng_grad_sink *sink, sh_diag *d)
{
    return n->fam->embed_backward ? n->fam->embed_backward(n, row, dy, sink, d)
                                  : 0;
}

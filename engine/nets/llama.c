// llama.c: the Llama decoder family (LlamaForCausalLM as Hugging Face
// computes it; Mistral and Qwen2 fit), read top to bottom:
//
//   h = embed[tokens]                                     (N*T, d)
//   per layer:
//     x1 = rmsnorm(h) * w_in                              site 0
//     q, k, v = x1 Wq^T, x1 Wk^T, x1 Wv^T (+ biases)
//     q, k = rope(q), rope(k)                             rotate half
//     a = softmax(q k^T / sqrt(hd) + causal) v, per head  site 1
//     h = h + a Wo^T
//     x2 = rmsnorm(h) * w_post                            site 2
//     m = silu(x2 Wg^T) * (x2 Wu^T)                       site 3
//     h = h + m Wd^T
//   logits = (rmsnorm(h) * w_norm) W_head^T
//
// Each decoder layer is a block of seven linear layers reading four inputs
// ("sites"): q,k,v read the normed residual; o the attention output; gate,
// up the second normed residual; down the SwiGLU product. The metric is
// perplexity.
#include "engine/nets/layers.h"

#include "common/par.h"
#include "common/util.h"
#include "engine/math/linalg.h"
#include "engine/math/poll.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// --- config

static int64_t cfg_int(const json_t *cfg, const char *key, int64_t dflt)
{
    json_t *v = json_object_get(cfg, key);
    return json_is_integer(v) ? json_integer_value(v) : dflt;
}

static double cfg_num(const json_t *cfg, const char *key, double dflt)
{
    json_t *v = json_object_get(cfg, key);
    return json_is_number(v) ? json_number_value(v) : dflt;
}

enum { Q, K, V, O, GATE, UP, DOWN, LINEARS };
static const char *const proj[] = {
    [Q] = "self_attn.q_proj", [K] = "self_attn.k_proj",
    [V] = "self_attn.v_proj", [O] = "self_attn.o_proj",
    [GATE] = "mlp.gate_proj", [UP] = "mlp.up_proj",
    [DOWN] = "mlp.down_proj"};
static const int site_of[] = {
    [Q] = 0, [K] = 0, [V] = 0, [O] = 1, [GATE] = 2, [UP] = 2, [DOWN] = 3};
static_assert(sizeof proj / sizeof proj[0] == LINEARS &&
                  sizeof site_of / sizeof site_of[0] == LINEARS,
              "a name and a site per linear");
static_assert(LINEARS <= NET_MAX_LINEARS, "a block holds its linears");

// A block's other tensors (eng_net_block.aux).
enum { NORM_IN, NORM_POST, AUX };
static_assert(AUX <= NET_MAX_AUX, "a block holds its norms");

static int rope_tables(eng_net *n, int64_t len, sh_diag *d)
{
    int64_t hd = n->head_dim, half = hd / 2;
    float *c = malloc((size_t)(len * hd) * sizeof *c);
    float *s = malloc((size_t)(len * hd) * sizeof *s);
    if (!c || !s) {
        free(c);
        free(s);
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    }
    for (int64_t i = 0; i < half; i++) {
        // As transformers: inv_freq in F32, angle = pos * inv_freq in F32.
        float inv = (float)(1.0 / pow(n->theta, (double)(2 * i) / hd));
        for (int64_t p = 0; p < len; p++) {
            float ang = (float)p * inv;
            c[p * hd + i] = c[p * hd + i + half] = (float)cos((double)ang);
            s[p * hd + i] = s[p * hd + i + half] = (float)sin((double)ang);
        }
    }
    free(n->rope_cos);
    free(n->rope_sin);
    n->rope_cos = c;
    n->rope_sin = s;
    n->rope_len = len;
    return 0;
}

static int llama_open(eng_net *n, const json_t *cfg, sh_diag *d)
{
    n->hidden = cfg_int(cfg, "hidden_size", 0);
    n->inter = cfg_int(cfg, "intermediate_size", 0);
    int64_t layers = cfg_int(cfg, "num_hidden_layers", 0);
    n->heads = cfg_int(cfg, "num_attention_heads", 0);
    n->kv_heads = cfg_int(cfg, "num_key_value_heads", n->heads);
    n->head_dim =
        cfg_int(cfg, "head_dim", n->heads > 0 ? n->hidden / n->heads : 0);
    n->vocab = cfg_int(cfg, "vocab_size", 0);
    n->eps = cfg_num(cfg, "rms_norm_eps", 1e-6);
    n->theta = cfg_num(cfg, "rope_theta", 10000.0);
    bool tied = json_is_true(json_object_get(cfg, "tie_word_embeddings"));
    const char *act = json_string_value(json_object_get(cfg, "hidden_act"));
    json_t *scaling = json_object_get(cfg, "rope_scaling");
    if (n->hidden <= 0 || n->inter <= 0 || layers <= 0 || n->heads <= 0 ||
        n->kv_heads <= 0 || n->head_dim <= 0 || n->head_dim % 2 ||
        n->heads % n->kv_heads || n->vocab <= 0)
        return sh_diag_set(d, SH_EFORMAT, "config.json",
                           "config.json: hidden_size, intermediate_size, "
                           "num_hidden_layers, num_attention_heads (a "
                           "multiple of num_key_value_heads), an even "
                           "head_dim and vocab_size must be positive");
    if (act && strcmp(act, "silu") != 0)
        return sh_diag_set(d, SH_EUNSUPPORTED, "config.json",
                           "config.json: hidden_act \"%s\" is not supported "
                           "for the Llama family (silu is)",
                           act);
    if (scaling && !json_is_null(scaling))
        return sh_diag_set(d, SH_EUNSUPPORTED, "config.json",
                           "config.json: rope_scaling is not supported yet");
    // Mistral's sliding window (Qwen2's only with use_sliding_window).
    json_t *win = json_object_get(cfg, "sliding_window");
    json_t *use = json_object_get(cfg, "use_sliding_window");
    const char *mt = json_string_value(json_object_get(cfg, "model_type"));
    bool windowed =
        json_is_integer(win) &&
        (json_is_true(use) || (!use && mt && strcmp(mt, "mistral") == 0));
    n->window = windowed ? json_integer_value(win) : 0;

    int64_t d_ = n->hidden, qd = n->heads * n->head_dim,
            kvd = n->kv_heads * n->head_dim;
    int rc;
    if ((rc = net_tensor_find(n, "model.embed_tokens.weight", 2, n->vocab, d_,
                              &n->embed, d)) != 0 ||
        (rc = net_tensor_find(n, "model.norm.weight", 1, d_, 0, &n->final_norm,
                              d)) != 0)
        return rc;
    n->head = n->embed;
    if (!tied && (rc = net_tensor_find(n, "lm_head.weight", 2, n->vocab, d_,
                                       &n->head, d)) != 0)
        return rc;
    n->nblocks = (size_t)layers;
    n->blocks = calloc(n->nblocks, sizeof *n->blocks);
    if (!n->blocks)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    const int64_t shape[LINEARS][2] = {
        {qd, d_},       {kvd, d_},      {kvd, d_},     {d_, qd},
        {n->inter, d_}, {n->inter, d_}, {d_, n->inter}};
    for (int64_t l = 0; l < layers; l++) {
        net_block_def *b = &n->blocks[l];
        char name[160];
        for (int p = 0; p < LINEARS; p++) {
            snprintf(name, sizeof name, "model.layers.%" PRId64 ".%s.weight", l,
                     proj[p]);
            size_t t;
            if ((rc = net_tensor_find(n, name, 2, shape[p][0], shape[p][1], &t,
                                      d)) != 0)
                return rc;
            b->lin[p] =
                (eng_net_linear){t, site_of[p], shape[p][0], shape[p][1]};
            snprintf(name, sizeof name, "model.layers.%" PRId64 ".%s.bias", l,
                     proj[p]);
            b->bias[p] = NET_NO_TENSOR;
            if (eng_model_find(n->m, name) >= 0 &&
                (rc = net_tensor_find(n, name, 1, shape[p][0], 0, &b->bias[p],
                                      d)) != 0)
                return rc;
        }
        b->nlin = LINEARS;
        b->sites = 4;
        snprintf(name, sizeof name,
                 "model.layers.%" PRId64 ".input_layernorm.weight", l);
        if ((rc = net_tensor_find(n, name, 1, d_, 0, &b->aux[NORM_IN], d)) != 0)
            return rc;
        snprintf(name, sizeof name,
                 "model.layers.%" PRId64 ".post_attention_layernorm.weight", l);
        if ((rc = net_tensor_find(n, name, 1, d_, 0, &b->aux[NORM_POST], d)) !=
            0)
            return rc;
        b->naux = AUX;
    }
    return 0;
}

// --- pieces

// The element-wise steps run on the job's threads (math/par.h), a share
// of rows each; every value is computed as the serial loop would.
#define PAR_ROWS 64 // rows per thread at the least

typedef struct rows_job {
    float *y;
    const float *x, *w;
    int64_t d;
    double eps;
} rows_job;

static void rmsnorm_rows(void *ctx, int64_t r0, int64_t r1)
{
    const rows_job *j = ctx;
    const float *restrict x = j->x, *restrict w = j->w;
    float *restrict y = j->y;
    int64_t d = j->d;
    double eps = j->eps;
    for (int64_t r = r0; r < r1; r++) {
        const float *xr = x + r * d;
        double ss = 0;
        for (int64_t c = 0; c < d; c++)
            ss += (double)xr[c] * xr[c];
        float inv = (float)(1.0 / sqrt(ss / (double)d + eps));
        for (int64_t c = 0; c < d; c++)
            y[r * d + c] = w[c] * (xr[c] * inv);
    }
}

// y (rows, d) = x / sqrt(mean(x^2) + eps) * w
static void rmsnorm(float *restrict y, const float *restrict x,
                    const float *restrict w, int64_t rows, int64_t d,
                    double eps)
{
    rows_job j = {.y = y, .x = x, .w = w, .d = d, .eps = eps};
    sh_par_for(rows, 1, PAR_ROWS, rmsnorm_rows, &j);
}

// y += x, (rows, d)
static void add_rows(void *ctx, int64_t r0, int64_t r1)
{
    const rows_job *j = ctx;
    for (int64_t i = r0 * j->d; i < r1 * j->d; i++)
        j->y[i] += j->x[i];
}

static void residual_add(float *y, const float *x, int64_t rows, int64_t d)
{
    rows_job j = {.y = y, .x = x, .d = d};
    sh_par_for(rows, 1, PAR_ROWS, add_rows, &j);
}

// y = silu(w) * x, (rows, d): SwiGLU's product of the gate w (y may be w).
static void swiglu_rows(void *ctx, int64_t r0, int64_t r1)
{
    const rows_job *j = ctx;
    for (int64_t i = r0 * j->d; i < r1 * j->d; i++)
        j->y[i] = j->w[i] / (1.0f + expf(-j->w[i])) * j->x[i];
}

typedef struct rope_job {
    const eng_net *n;
    float *x;
    int64_t seqlen, heads;
} rope_job;

static void rope_seqs(void *ctx, int64_t s0, int64_t s1)
{
    const rope_job *j = ctx;
    const eng_net *n = j->n;
    float *x = j->x;
    int64_t seqlen = j->seqlen, heads = j->heads;
    int64_t hd = n->head_dim, half = hd / 2;
    for (int64_t s = s0; s < s1; s++) {
        for (int64_t p = 0; p < seqlen; p++) {
            const float *c = n->rope_cos + p * hd, *sn = n->rope_sin + p * hd;
            for (int64_t h = 0; h < heads; h++) {
                float *v = x + ((s * seqlen + p) * heads + h) * hd;
                for (int64_t i = 0; i < half; i++) {
                    float a = v[i], b = v[i + half];
                    v[i] = a * c[i] - b * sn[i];
                    v[i + half] = b * c[i + half] + a * sn[i + half];
                }
            }
        }
    }
}

// In place on (rows, heads * hd) laid out as [seq][pos][head][hd]:
// x' = x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1].
static void rope(const eng_net *n, float *x, int64_t seqs, int64_t seqlen,
                 int64_t heads)
{
    rope_job j = {.n = n, .x = x, .seqlen = seqlen, .heads = heads};
    sh_par_for(seqs, 1, (PAR_ROWS + seqlen - 1) / seqlen, rope_seqs, &j);
}

// Causal attention, head by head, sequence by sequence, the sequences
// shared among the engine's threads (each with its own scores, T x T).
typedef struct attn_job {
    const eng_net *n;
    float *ctx;
    const float *q, *k, *v;
    int64_t seqlen;
    float *scores; // (threads' chunks, T, T): chunk c's at c * T * T
    int64_t per;   // sequences a chunk
} attn_job;

// Scores (T, T) become attention weights in place: row i's softmax over
// the positions it sees (causal, within the sliding window), zero elsewhere.
static void causal_softmax(const eng_net *n, float *scores, int64_t seqlen)
{
    for (int64_t i = 0; i < seqlen; i++) {
        float *row = scores + i * seqlen;
        int64_t lo =
            n->window > 0 && i - n->window + 1 > 0 ? i - n->window + 1 : 0;
        float mx = -INFINITY;
        for (int64_t c = lo; c <= i; c++)
            mx = row[c] > mx ? row[c] : mx;
        float sum = 0;
        for (int64_t c = 0; c < seqlen; c++) {
            float e = c >= lo && c <= i ? expf(row[c] - mx) : 0.0f;
            row[c] = e;
            sum += e;
        }
        for (int64_t c = lo; c <= i; c++)
            row[c] /= sum;
    }
}

static void attn_seqs(void *arg, int64_t s0, int64_t s1)
{
    const attn_job *j = arg;
    const eng_net *n = j->n;
    int64_t seqlen = j->seqlen, hd = n->head_dim, qd = n->heads * hd;
    int64_t kvd = n->kv_heads * hd, group = n->heads / n->kv_heads;
    float scale = 1.0f / sqrtf((float)hd);
    float *scores = j->scores + s0 / j->per * seqlen * seqlen;
    for (int64_t s = s0; s < s1; s++) {
        for (int64_t h = 0; h < n->heads; h++) {
            int64_t g = h / group;
            const float *qs = j->q + s * seqlen * qd + h * hd;
            const float *ks = j->k + s * seqlen * kvd + g * hd;
            const float *vs = j->v + s * seqlen * kvd + g * hd;
            // scores (T, T) = q k^T * scale
            eng_gemm1(false, true, seqlen, seqlen, hd, scale, qs, qd, ks, kvd,
                      0.0f, scores, seqlen);
            causal_softmax(n, scores, seqlen);
            eng_gemm1(false, false, seqlen, hd, seqlen, 1.0f, scores, seqlen,
                      vs, kvd, 0.0f, j->ctx + s * seqlen * qd + h * hd, qd);
        }
    }
}

// ctx (rows, qd). Polls between groups of sequences (ATTN_SEQS_A_POLL
// sequences' T^2 scores per head); SH_ECANCELED when a poll said stop.
// scores: room for sh_par_count() score matrices.
static int attention(const eng_net *n, float *ctx, const float *q,
                     const float *k, const float *v, int64_t seqs,
                     int64_t seqlen, float *scores, eng_pacer *pace)
{
    int64_t t = sh_par_count();
    // Sequences per poll: about ENG_POLL_ELEMS scores of every head.
    int64_t step =
        (int64_t)(ENG_POLL_ELEMS / (uint64_t)(seqlen * seqlen * n->heads + 1)) +
        1;
    step = (step + t - 1) / t * t; // whole chunks for every thread
    for (int64_t s0 = 0; s0 < seqs; s0 += step) {
        int64_t m = seqs - s0 < step ? seqs - s0 : step;
        // Chunks of whole sequences; chunk c uses the c-th scores.
        int64_t per = (m + t - 1) / t;
        attn_job j = {n,
                      ctx + s0 * seqlen * n->heads * n->head_dim,
                      q + s0 * seqlen * n->heads * n->head_dim,
                      k + s0 * seqlen * n->kv_heads * n->head_dim,
                      v + s0 * seqlen * n->kv_heads * n->head_dim,
                      seqlen,
                      scores,
                      per};
        sh_par_for(m, per, per, attn_seqs, &j);
        if (eng_pacer_step(pace, (uint64_t)(m * seqlen * seqlen * n->heads)))
            return SH_ECANCELED;
    }
    return 0;
}

static int llama_embed(eng_net *n, const eng_dataset *ds, eng_acts *out,
                       const eng_hooks *h, sh_diag *d)
{
    int64_t T = ds->info.cols, rows = ds->rows * T, dm = n->hidden;
    int rc;
    if (T > n->rope_len && (rc = rope_tables(n, T, d)) != 0)
        return rc;
    float *x = malloc((size_t)(rows * dm) * sizeof *x);
    if (!x)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    // Rows of the embedding, read where they lie (no whole-table load).
    const eng_tensor_info *t = eng_model_tensor(n->m, n->embed);
    unsigned char *row = malloc((size_t)dm * eng_dtype_size(t->dtype));
    rc = row ? 0 : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    eng_pacer pace = {.h = h};
    for (int64_t r = 0; rc == 0 && r < rows; r++) {
        int32_t id = ds->ids[r];
        if (id < 0 || id >= n->vocab) {
            rc = sh_diag_set(
                d, SH_EFORMAT, "tokens",
                "token id %d is outside the vocabulary (0..%" PRId64 ")", id,
                n->vocab - 1);
            break;
        }
        rc = net_tensor_row(n, n->embed, id, x + r * dm, row, d);
        if (rc == 0 && eng_pacer_step(&pace, (uint64_t)dm))
            rc = SH_ECANCELED;
    }
    free(row);
    if (rc != 0) {
        free(x);
        return rc;
    }
    *out = (eng_acts){
        .x = x, .rows = rows, .width = dm, .seqs = ds->rows, .seqlen = T};
    return 0;
}

// Where a block's steps write: each step's output. A forward pass puts
// them in one scratch, sharing space as they are read (the attention
// output in q's place: each head's queries are read before its output is
// written; SwiGLU's product in the gate's; one buffer for both norms' and
// both output projections'); a backward pass keeps each.
typedef struct block_bufs {
    float *x1, *q, *k, *v, *att, *o, *x2, *g, *u, *m, *dn;
    float *scores; // sh_par_count() T x T
} block_bufs;

// The block's steps over its residual stream h (seqs x seqlen rows), in
// place; fn (may be NULL) sees each site's input and may stop the pass
// there (h then holds what the steps before made).
//
// Polls: after every piece of each product (eng_linear_polled), every
// head of a sequence, and rows of the element-wise steps by ENG_POLL_ELEMS.
static int block_steps(eng_net *n, eng_net_block *b, float *h, int64_t seqs,
                       int64_t seqlen, const block_bufs *s, eng_site_fn fn,
                       void *ctx, const eng_hooks *hk, sh_diag *d)
{
    int64_t rows = seqs * seqlen, dm = n->hidden, hd = n->head_dim;
    int64_t qd = n->heads * hd, kvd = n->kv_heads * hd, in = n->inter;
    int rc;
    if (seqlen > n->rope_len && (rc = rope_tables(n, seqlen, d)) != 0)
        return rc;
    eng_pacer pace = {.h = hk};
    uint64_t width = (uint64_t)(rows * dm);

    rmsnorm(s->x1, h, b->aux[NORM_IN], rows, dm, n->eps);
    if (eng_pacer_step(&pace, width))
        return SH_ECANCELED;
    if (fn && !fn(ctx, 0, s->x1, rows, dm))
        return 0;
    if ((rc = net_block_linear(n, b, Q, s->q, s->x1, rows, hk, d)) ||
        (rc = net_block_linear(n, b, K, s->k, s->x1, rows, hk, d)) ||
        (rc = net_block_linear(n, b, V, s->v, s->x1, rows, hk, d)))
        return rc;
    rope(n, s->q, seqs, seqlen, n->heads);
    rope(n, s->k, seqs, seqlen, n->kv_heads);
    if (eng_pacer_step(&pace, (uint64_t)(rows * (qd + kvd))))
        return SH_ECANCELED;
    if ((rc = attention(n, s->att, s->q, s->k, s->v, seqs, seqlen, s->scores,
                        &pace)))
        return rc;
    if (fn && !fn(ctx, 1, s->att, rows, qd))
        return 0;
    if ((rc = net_block_linear(n, b, O, s->o, s->att, rows, hk, d)))
        return rc;
    residual_add(h, s->o, rows, dm);

    rmsnorm(s->x2, h, b->aux[NORM_POST], rows, dm, n->eps);
    if (eng_pacer_step(&pace, 2 * width))
        return SH_ECANCELED;
    if (fn && !fn(ctx, 2, s->x2, rows, dm))
        return 0;
    if ((rc = net_block_linear(n, b, GATE, s->g, s->x2, rows, hk, d)) ||
        (rc = net_block_linear(n, b, UP, s->u, s->x2, rows, hk, d)))
        return rc;
    rows_job sw = {.y = s->m, .x = s->u, .w = s->g, .d = in};
    sh_par_for(rows, 1, PAR_ROWS, swiglu_rows, &sw);
    if (eng_pacer_step(&pace, (uint64_t)(rows * in)))
        return SH_ECANCELED;
    if (fn && !fn(ctx, 3, s->m, rows, in))
        return 0;
    if ((rc = net_block_linear(n, b, DOWN, s->dn, s->m, rows, hk, d)))
        return rc;
    residual_add(h, s->dn, rows, dm);
    return eng_pacer_step(&pace, width) ? SH_ECANCELED : 0;
}

// The block over a: its residual stream a->x updated in place (forward),
// or a copy of it in scratch (a statistics pass, fn set: fn sees each
// site's input and may stop the pass).
static int llama_run(eng_net *n, eng_net_block *b, const eng_acts *a,
                     eng_site_fn fn, void *ctx, const eng_hooks *hk, sh_diag *d)
{
    int64_t rows = a->rows, dm = n->hidden, hd = n->head_dim;
    int64_t qd = n->heads * hd, kvd = n->kv_heads * hd, in = n->inter;
    // Fresh memory costs a page fault a page: the steps share one scratch.
    size_t need = (size_t)rows * (size_t)(dm + qd + 2 * kvd + 2 * in) +
                  (size_t)(a->seqlen * a->seqlen * sh_par_count()) +
                  (fn ? (size_t)(rows * dm) : 0);
    float *buf;
    int rc = net_scratch(n, need, &buf, d);
    if (rc != 0)
        return rc;
    float *x = buf, *q = x + rows * dm, *k = q + rows * qd, *v = k + rows * kvd;
    float *g = v + rows * kvd, *u = g + rows * in, *scores = u + rows * in;
    block_bufs s = {x, q, k, v, q, x, x, g, u, g, x, scores};
    float *h = a->x;
    if (fn) {
        h = scores + a->seqlen * a->seqlen * sh_par_count();
        memcpy(h, a->x, (size_t)(rows * dm) * sizeof *h);
    }
    return block_steps(n, b, h, a->seqs, a->seqlen, &s, fn, ctx, hk, d);
}

static int llama_forward(eng_net *n, eng_net_block *b, eng_acts *a,
                         const eng_hooks *hk, sh_diag *d)
{
    return llama_run(n, b, a, NULL, NULL, hk, d);
}

static int llama_stats(eng_net *n, eng_net_block *b, const eng_acts *a,
                       eng_site_fn fn, void *ctx, const eng_hooks *hk,
                       sh_diag *d)
{
    return llama_run(n, b, a, fn, ctx, hk, d);
}

// Logits (rows, vocab) of final hidden states h (rows, hidden).
static int head_run(eng_net *n, const float *h, int64_t rows, float *logits,
                    const float *head_w, const float *norm_w,
                    const eng_hooks *hk, sh_diag *d)
{
    float *x;
    int rc = net_scratch(n, (size_t)(rows * n->hidden), &x, d);
    if (rc != 0)
        return rc;
    rmsnorm(x, h, norm_w, rows, n->hidden, n->eps);
    return eng_linear_polled(logits, x, head_w, NULL, rows, n->hidden, n->vocab,
                             hk);
}

// The head's weights: the final norm and lm_head (or the embedding).
static int head_load(eng_net *n, float **head, float **norm, sh_diag *d)
{
    int rc = net_tensor_load(n, n->head, head, d);
    if (rc == 0 && (rc = net_tensor_load(n, n->final_norm, norm, d)) != 0) {
        free(*head);
        *head = NULL;
    }
    return rc;
}

static int llama_logits(eng_net *n, const eng_acts *a, float *out, sh_diag *d)
{
    float *head = n->head_w, *norm = n->head_norm;
    int rc = head ? 0 : head_load(n, &head, &norm, d);
    if (rc == 0)
        rc = head_run(n, a->x, a->rows, out, head, norm, NULL, d);
    if (rc == 0 && n->head_keep) { // kept (net.c frees them)
        n->head_w = head;
        n->head_norm = norm;
    } else if (head != n->head_w) {
        free(head);
        free(norm);
    }
    return rc;
}

// Polls: in the head's product, and every ENG_POLL_ELEMS logits.
// Each position's next-token NLL of one sequence, on the engine's
// threads; the caller adds them in order, as one loop would.
typedef struct nll_job {
    const float *logits; // (T, vocab)
    const int32_t *ids;  // the sequence's tokens
    int64_t vocab;
    double *term; // (T,): term[t] for t >= 1
} nll_job;

static void nll_positions(void *ctx, int64_t t0, int64_t t1)
{
    const nll_job *j = ctx;
    for (int64_t t = t0 < 1 ? 1 : t0; t < t1; t++) {
        // Position t - 1 predicts token t.
        j->term[t] = net_xent(j->logits + (t - 1) * j->vocab, j->vocab,
                              j->ids[t], NULL, 0);
    }
}

static int llama_metric(eng_net *n, const eng_dataset *ds, const eng_acts *a,
                        const eng_hooks *hk, eng_metric *out, sh_diag *d)
{
    float *head = NULL, *norm = NULL;
    int64_t T = a->seqlen;
    float *logits = malloc((size_t)(T * n->vocab) * sizeof *logits);
    double *term = malloc((size_t)T * sizeof *term);
    int rc =
        logits && term ? 0 : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    if (rc == 0)
        rc = head_load(n, &head, &norm, d);
    double nll = 0;
    int64_t count = 0;
    eng_pacer pace = {.h = hk};
    for (int64_t s = 0; rc == 0 && s < a->seqs; s++) {
        rc =
            head_run(n, a->x + s * T * n->hidden, T, logits, head, norm, hk, d);
        if (rc != 0)
            break;
        nll_job j = {logits, ds->ids + s * T, n->vocab, term};
        sh_par_for(T, 1, 8, nll_positions, &j);
        for (int64_t t = 1; t < T; t++, count++)
            nll += term[t];
        if (eng_pacer_step(&pace, (uint64_t)(T * n->vocab)))
            rc = SH_ECANCELED;
    }
    free(logits);
    free(term);
    free(head);
    free(norm);
    if (rc != 0)
        return rc;
    double mean = nll / (double)count;
    *out = (eng_metric){"perplexity", exp(mean), mean};
    return 0;
}

// --- gradients
//
// Each step's backward, in the reverse order of llama_run. Sums over
// rows (norm weights, biases) run on the calling thread and the products
// through eng_gemm, so the gradients are the same bytes for any thread
// count.

// The backward of y = rmsnorm(x) * w over rows: gw (d,) += sum of
// dy * x * inv (where gw is not NULL); dx (rows, d) += inv * w * dy -
// x * inv^3 * mean(w * dy * x), with inv = 1 / sqrt(mean(x^2) + eps) as
// the forward pass computes it.
static void rmsnorm_back(float *restrict dx, float *restrict gw,
                         const float *restrict dy, const float *restrict x,
                         const float *restrict w, int64_t rows, int64_t d,
                         double eps)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * d, *dyr = dy + r * d;
        double ss = 0, dot = 0;
        for (int64_t c = 0; c < d; c++) {
            ss += (double)xr[c] * xr[c];
            dot += (double)w[c] * dyr[c] * xr[c];
        }
        float inv = (float)(1.0 / sqrt(ss / (double)d + eps));
        double k = dot * (double)inv * inv * inv / (double)d;
        for (int64_t c = 0; c < d; c++) {
            dx[r * d + c] += inv * w[c] * dyr[c] - (float)(k * xr[c]);
            if (gw)
                gw[c] += dyr[c] * (xr[c] * inv);
        }
    }
}

// The backward of rope: each pair rotated back by its angle.
static void rope_back(const eng_net *n, float *x, int64_t seqs, int64_t seqlen,
                      int64_t heads)
{
    int64_t hd = n->head_dim, half = hd / 2;
    for (int64_t s = 0; s < seqs; s++) {
        for (int64_t p = 0; p < seqlen; p++) {
            const float *c = n->rope_cos + p * hd, *sn = n->rope_sin + p * hd;
            for (int64_t h = 0; h < heads; h++) {
                float *v = x + ((s * seqlen + p) * heads + h) * hd;
                for (int64_t i = 0; i < half; i++) {
                    float a = v[i], b = v[i + half];
                    v[i] = a * c[i] + b * sn[i + half];
                    v[i + half] = b * c[i + half] - a * sn[i];
                }
            }
        }
    }
}

// Attention's backward, one unit a (sequence, KV group) at a time, the
// units shared among the engine's threads: a group's query heads write
// their own rows of dq and add to the group's dk and dv only.
typedef struct attn_back_job {
    const eng_net *n;
    const float *q, *k, *v, *datt;
    float *dq, *dk, *dv;
    int64_t seqlen;
    float *scratch; // (chunks, 2, T, T)
    int64_t per;    // units a chunk
} attn_back_job;

static void attn_back_units(void *arg, int64_t u0, int64_t u1)
{
    const attn_back_job *j = arg;
    const eng_net *n = j->n;
    int64_t T = j->seqlen, hd = n->head_dim, qd = n->heads * hd;
    int64_t kvd = n->kv_heads * hd, group = n->heads / n->kv_heads;
    float scale = 1.0f / sqrtf((float)hd);
    float *p = j->scratch + u0 / j->per * 2 * T * T, *dp = p + T * T;
    for (int64_t u = u0; u < u1; u++) {
        int64_t s = u / n->kv_heads, g = u % n->kv_heads;
        const float *ks = j->k + s * T * kvd + g * hd;
        const float *vs = j->v + s * T * kvd + g * hd;
        float *dks = j->dk + s * T * kvd + g * hd;
        float *dvs = j->dv + s * T * kvd + g * hd;
        for (int64_t h = g * group; h < (g + 1) * group; h++) {
            const float *qs = j->q + s * T * qd + h * hd;
            const float *da = j->datt + s * T * qd + h * hd;
            eng_gemm1(false, true, T, T, hd, scale, qs, qd, ks, kvd, 0.0f, p,
                      T);
            causal_softmax(n, p, T);
            // dP = dA V^T; dV += P^T dA
            eng_gemm1(false, true, T, T, hd, 1.0f, da, qd, vs, kvd, 0.0f, dp,
                      T);
            eng_gemm1(true, false, T, hd, T, 1.0f, p, T, da, qd, 1.0f, dvs,
                      kvd);
            // dS = P * (dP - rowsum(P * dP)), in place of dP
            for (int64_t i = 0; i < T; i++) {
                float *pr = p + i * T, *dr = dp + i * T;
                double dot = 0;
                for (int64_t c = 0; c <= i; c++)
                    dot += (double)pr[c] * dr[c];
                for (int64_t c = 0; c < T; c++)
                    dr[c] = pr[c] * (dr[c] - (float)dot);
            }
            // dQ = scale dS K; dK += scale dS^T Q
            eng_gemm1(false, false, T, hd, T, scale, dp, T, ks, kvd, 0.0f,
                      j->dq + s * T * qd + h * hd, qd);
            eng_gemm1(true, false, T, hd, T, scale, dp, T, qs, qd, 1.0f, dks,
                      kvd);
        }
    }
}

// The backward of a norm: dh += its input gradient; its weight's gradient
// put where wanted.
static int norm_back(eng_net *n, float *dh, size_t tensor, const float *dout,
                     const float *x, const float *w, int64_t rows,
                     const eng_grad_sink *sink, sh_diag *d)
{
    bool want = net_wants(sink, tensor);
    float *gw = want ? calloc((size_t)n->hidden, sizeof *gw) : NULL;
    if (want && !gw)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    rmsnorm_back(dh, gw, dout, x, w, rows, n->hidden, n->eps);
    int rc = want ? sink->put(sink->ctx, tensor, gw, d) : 0;
    free(gw);
    return rc;
}

// A backward pass's recomputation stops at the down projection.
static bool before_down(void *ctx, int site, const float *x, int64_t rows,
                        int64_t cols)
{
    (void)ctx;
    (void)x;
    (void)rows;
    (void)cols;
    return site < 3;
}

static int llama_backward(eng_net *n, eng_net_block *b, const eng_acts *in,
                          eng_acts *dy, const eng_grad_sink *sink,
                          const eng_hooks *hk, sh_diag *d)
{
    const net_block_def *def = &n->blocks[b->index];
    int64_t rows = in->rows, dm = n->hidden, hd = n->head_dim, T = in->seqlen;
    int64_t qd = n->heads * hd, kvd = n->kv_heads * hd, I = n->inter;
    int rc;
    int64_t units = in->seqs * n->kv_heads, t = sh_par_count();
    int64_t per = (units + t - 1) / t, chunks = (units + per - 1) / per;
    // Scores: the forward pass's (one T x T a thread), then the backward's
    // (two a chunk of units).
    int64_t squares = 2 * chunks > t ? 2 * chunks : t;
    size_t need = (size_t)rows * (size_t)(5 * dm + 4 * qd + 4 * kvd + 4 * I) +
                  (size_t)(squares * T * T);
    float *buf = sh_alloc_bulk(need * sizeof *buf);
    if (!buf)
        return sh_diag_set(d, SH_ENOMEM, "",
                           "out of memory for a block's backward pass");
    float *x1 = buf, *q = x1 + rows * dm, *k = q + rows * qd;
    float *v = k + rows * kvd, *att = v + rows * kvd, *h1 = att + rows * qd;
    float *x2 = h1 + rows * dm, *gt = x2 + rows * dm, *u = gt + rows * I;
    float *m = u + rows * I, *dmid = m + rows * I, *dx = dmid + rows * I;
    float *datt = dx + rows * dm, *dq = datt + rows * qd, *dk = dq + rows * qd;
    float *dv = dk + rows * kvd, *dh = dv + rows * kvd;
    float *scratch = dh + rows * dm;
    const float *h0 = in->x;
    eng_pacer pace = {.h = hk};

    // The forward pass again, keeping what the backward reads, as far as
    // the MLP's product (h1: the residual stream between the two halves).
    memcpy(h1, h0, (size_t)(rows * dm) * sizeof *h1);
    block_bufs sb = {x1, q, k, v, att, dx, x2, gt, u, m, NULL, scratch};
    if ((rc =
             block_steps(n, b, h1, in->seqs, T, &sb, before_down, NULL, hk, d)))
        goto out;

    // dh: the residual stream's gradient, from the block's output back.
    memcpy(dh, dy->x, (size_t)(rows * dm) * sizeof *dh);
    if ((rc = net_linear_back(n, b, DOWN, dmid, false, dh, m, rows, sink, d)))
        goto out;
    // SwiGLU: dgate = dm * u * silu'(gate), dup = dm * silu(gate).
    for (int64_t i = 0; i < rows * I; i++) {
        float gv = gt[i], sg = 1.0f / (1.0f + expf(-gv));
        float dgate = dmid[i] * u[i] * sg * (1.0f + gv * (1.0f - sg));
        u[i] = dmid[i] * gv * sg;
        gt[i] = dgate;
    }
    if ((rc = net_linear_back(n, b, GATE, dx, false, gt, x2, rows, sink, d)) ||
        (rc = net_linear_back(n, b, UP, dx, true, u, x2, rows, sink, d)) ||
        (rc = norm_back(n, dh, def->aux[NORM_POST], dx, h1, b->aux[NORM_POST],
                        rows, sink, d)))
        goto out;
    if (eng_pacer_step(&pace, (uint64_t)(rows * I))) {
        rc = SH_ECANCELED;
        goto out;
    }
    if ((rc = net_linear_back(n, b, O, datt, false, dh, att, rows, sink, d)))
        goto out;
    memset(dk, 0, (size_t)(rows * kvd) * sizeof *dk);
    memset(dv, 0, (size_t)(rows * kvd) * sizeof *dv);
    attn_back_job j = {n, q, k, v, datt, dq, dk, dv, T, scratch, per};
    sh_par_for(units, per, per, attn_back_units, &j);
    if (eng_pacer_step(&pace, (uint64_t)(4 * units * T * T))) {
        rc = SH_ECANCELED;
        goto out;
    }
    rope_back(n, dq, in->seqs, T, n->heads);
    rope_back(n, dk, in->seqs, T, n->kv_heads);
    if ((rc = net_linear_back(n, b, Q, dx, false, dq, x1, rows, sink, d)) ||
        (rc = net_linear_back(n, b, K, dx, true, dk, x1, rows, sink, d)) ||
        (rc = net_linear_back(n, b, V, dx, true, dv, x1, rows, sink, d)) ||
        (rc = norm_back(n, dh, def->aux[NORM_IN], dx, h0, b->aux[NORM_IN], rows,
                        sink, d)))
        goto out;
    memcpy(dy->x, dh, (size_t)(rows * dm) * sizeof *dh);
out:
    free(buf);
    return rc;
}

// The loss of one sequence: logits of the final norm's output, each
// position t < T-1 predicting token t+1; dlogits = (softmax - onehot) /
// (T - 1), then back through lm_head and the final norm. The head's
// weights are loaded for the call and freed: between rows memory holds
// no more than a block's one weight.
static int llama_loss_backward(eng_net *n, const eng_dataset *row,
                               const eng_acts *a, float *dy,
                               const eng_grad_sink *sink, double *loss,
                               sh_diag *d)
{
    int64_t T = a->seqlen, dm = n->hidden, nv = n->vocab;
    if (a->seqs != 1)
        return sh_diag_set(d, SH_EINVAL, "", "one sequence at a time");
    float *head = NULL, *norm = NULL, *gw = NULL;
    float *xf = malloc((size_t)(T * dm) * sizeof *xf);
    float *logits = malloc((size_t)(T * nv) * sizeof *logits);
    float *dxf = malloc((size_t)(T * dm) * sizeof *dxf);
    int rc = xf && logits && dxf
                 ? head_load(n, &head, &norm, d)
                 : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    if (rc != 0)
        goto out;
    rmsnorm(xf, a->x, norm, T, dm, n->eps);
    eng_linear(logits, xf, head, NULL, T, dm, nv);
    // In place: each position's logits become their gradient (the last
    // predicts nothing).
    double sum = 0;
    for (int64_t t = 0; t + 1 < T; t++) {
        float *z = logits + t * nv;
        sum += net_xent(z, nv, row->ids[t + 1], z, 1.0 / (double)(T - 1));
    }
    memset(logits + (T - 1) * nv, 0, (size_t)nv * sizeof *logits);
    *loss = sum / (double)(T - 1);
    // lm_head's gradient dlogits^T xf, then dxf = dlogits W_head.
    if (net_wants(sink, n->head)) {
        if ((rc = net_gscratch(n, (size_t)(nv * dm), &gw, d)) != 0)
            goto out;
        eng_gemm(true, false, nv, dm, T, 1.0f, logits, nv, xf, dm, 0.0f, gw,
                 dm);
        if ((rc = sink->put(sink->ctx, n->head, gw, d)) != 0)
            goto out;
    }
    eng_gemm(false, false, T, dm, nv, 1.0f, logits, nv, head, dm, 0.0f, dxf,
             dm);
    memset(dy, 0, (size_t)(T * dm) * sizeof *dy);
    rc = norm_back(n, dy, n->final_norm, dxf, a->x, norm, T, sink, d);
out:
    free(xf);
    free(logits);
    free(dxf);
    free(head);
    free(norm);
    return rc;
}

// The embedding's rows of the sequence's tokens, each the sum of dy over
// the positions holding its token.
static int llama_embed_backward(eng_net *n, const eng_dataset *row,
                                const float *dy, const eng_grad_sink *sink,
                                sh_diag *d)
{
    if (!net_wants(sink, n->embed))
        return 0;
    int64_t T = row->rows * row->info.cols, dm = n->hidden;
    int64_t *ids = malloc((size_t)T * sizeof *ids);
    float *g = calloc((size_t)(T * dm), sizeof *g);
    int rc = ids && g ? 0 : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    if (rc == 0) {
        for (int64_t t = 0; t < T; t++)
            ids[t] = row->ids[t];
        size_t count = sh_sort_unique_i64(ids, (size_t)T);
        for (int64_t t = 0; t < T; t++) {
            int64_t id = row->ids[t];
            const int64_t *at =
                bsearch(&id, ids, count, sizeof *ids, sh_cmp_i64);
            float *gr = g + (at - ids) * dm;
            for (int64_t c = 0; c < dm; c++)
                gr[c] += dy[t * dm + c];
        }
        rc = sink->put_rows(sink->ctx, n->embed, ids, count, g, d);
    }
    free(ids);
    free(g);
    return rc;
}

static size_t llama_head_tensors(const eng_net *n, size_t *out, size_t cap)
{
    size_t t[3] = {n->embed, n->final_norm, n->head}, count = 2;
    if (n->head != n->embed)
        count = 3;
    for (size_t i = 0; i < count && i < cap; i++)
        out[i] = t[i];
    return count;
}

// --- the family

static void llama_close(eng_net *n)
{
    free(n->rope_cos);
    free(n->rope_sin);
    n->rope_cos = n->rope_sin = NULL;
}

static int llama_check_dataset(const eng_net *n, const eng_dataset_info *di,
                               sh_diag *d)
{
    (void)n;
    if (di->cols < 2)
        return sh_diag_set(d, SH_EFORMAT, "tokens",
                           "\"tokens\" rows need at least 2 tokens");
    return 0;
}

// Query head h reads KV head h / (heads / kv_heads), as transformers'
// repeat_kv: a KV group's query heads are consecutive rows of q_proj and
// columns of o_proj.
static size_t llama_groups(const eng_net *n, size_t block, eng_net_group *out,
                           size_t cap)
{
    (void)block;
    int64_t hd = n->head_dim, per = n->heads / n->kv_heads;
    const eng_net_group g[] = {
        {.kind = ENG_GROUP_BLOCK, .count = 1, .consumer = -1},
        {.kind = ENG_GROUP_HEAD,
         .count = n->heads,
         .nspans = 2,
         .span = {{.linear = Q, .size = hd},
                  {.linear = O, .cols = true, .size = hd}},
         .consumer = 1},
        {.kind = ENG_GROUP_KV_HEAD,
         .count = n->kv_heads,
         .nspans = 4,
         .span = {{.linear = K, .size = hd},
                  {.linear = V, .size = hd},
                  {.linear = Q, .size = per * hd},
                  {.linear = O, .cols = true, .size = per * hd}},
         .consumer = 3},
        {.kind = ENG_GROUP_CHANNEL,
         .count = n->inter,
         .nspans = 3,
         .span = {{.linear = GATE, .size = 1},
                  {.linear = UP, .size = 1},
                  {.linear = DOWN, .cols = true, .size = 1}},
         .consumer = 2},
    };
    size_t count = sizeof g / sizeof g[0];
    for (size_t i = 0; i < count && i < cap; i++)
        out[i] = g[i];
    return count;
}

// The shrunk widths, an explicit head_dim (heads x head_dim need no
// longer be hidden_size), and the bias flags the compensation needs.
// Only LlamaForCausalLM reads attention_bias and mlp_bias: Mistral and
// Qwen2 build their o_proj and MLP without biases whatever config says.
static int llama_config_rewrite(const eng_net *n, const eng_net_shape *sh,
                                json_t *cfg, sh_diag *d)
{
    const char *mt = json_string_value(json_object_get(cfg, "model_type"));
    if ((sh->bias_attention || sh->bias_mlp) && (!mt || strcmp(mt, "llama")))
        return sh_diag_set(d, SH_EUNSUPPORTED, "structure.compensate",
                           "compensation adds biases to o_proj and "
                           "down_proj, which only model_type \"llama\" "
                           "loads (this is \"%s\"): set compensate false",
                           mt ? mt : "");
    // Per-layer lists (newer configs' layer_types) lose the removed
    // layers' entries.
    json_t *types = json_object_get(cfg, "layer_types");
    if (json_is_array(types) && json_array_size(types) == n->nblocks &&
        sh->block_gone)
        for (size_t b = n->nblocks; b-- > 0;)
            if (sh->block_gone[b])
                json_array_remove(types, b);
    // Qwen2's max_window_layers counts layers from the bottom: the removed
    // ones below it leave.
    json_t *mwl = json_object_get(cfg, "max_window_layers");
    if (json_is_integer(mwl) && sh->block_gone) {
        json_int_t v = json_integer_value(mwl), below = 0;
        for (size_t b = 0; b < n->nblocks && (json_int_t)b < v; b++)
            below += sh->block_gone[b];
        json_object_set_new(cfg, "max_window_layers", json_integer(v - below));
    }
    json_object_set_new(cfg, "num_hidden_layers", json_integer(sh->blocks));
    json_object_set_new(cfg, "num_attention_heads",
                        json_integer(sh->kept[ENG_GROUP_HEAD]));
    json_object_set_new(cfg, "num_key_value_heads",
                        json_integer(sh->kept[ENG_GROUP_KV_HEAD]));
    json_object_set_new(cfg, "head_dim", json_integer(n->head_dim));
    json_object_set_new(cfg, "intermediate_size",
                        json_integer(sh->kept[ENG_GROUP_CHANNEL]));
    if (sh->bias_attention)
        json_object_set_new(cfg, "attention_bias", json_true());
    if (sh->bias_mlp)
        json_object_set_new(cfg, "mlp_bias", json_true());
    return 0;
}

static void llama_block_prefix(const eng_net *n, size_t block, char *buf,
                               size_t size)
{
    (void)n;
    snprintf(buf, size, "model.layers.%zu.", block);
}

static const char *const llama_archs[] = {"llama",
                                          "mistral",
                                          "qwen2",
                                          "LlamaForCausalLM",
                                          "MistralForCausalLM",
                                          "Qwen2ForCausalLM",
                                          NULL};

const eng_family eng_family_llama = {
    .name = "llama",
    .archs = llama_archs,
    .kind = ENG_DATASET_TOKENS,
    .open = llama_open,
    .close = llama_close,
    .check_dataset = llama_check_dataset,
    .embed = llama_embed,
    .forward = llama_forward,
    .stats = llama_stats,
    .metric = llama_metric,
    .logits = llama_logits,
    .groups = llama_groups,
    .block_prefix = llama_block_prefix,
    .query_linear = Q,
    .config_rewrite = llama_config_rewrite,
    .loss_backward = llama_loss_backward,
    .backward = llama_backward,
    .embed_backward = llama_embed_backward,
    .head_tensors = llama_head_tensors,
};

// net.c: opening runnable models, the MLP, blocks, and evaluation.
#include "engine/nets/layers.h"

#include "engine/math/linalg.h"
#include "engine/math/poll.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const act_names[ACT_COUNT] = {
    [ACT_RELU] = "relu", [ACT_GELU] = "gelu", [ACT_GELU_TANH] = "gelu_tanh",
    [ACT_SILU] = "silu", [ACT_TANH] = "tanh",
};

bool eng_net_runs(const char *arch)
{
    static const char *const families[] = {"mlp",
                                           "llama",
                                           "mistral",
                                           "qwen2",
                                           "LlamaForCausalLM",
                                           "MistralForCausalLM",
                                           "Qwen2ForCausalLM"};
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (strcmp(arch, families[i]) == 0)
            return true;
    return false;
}

eng_dataset_kind eng_net_kind_for(const char *arch)
{
    return strcmp(arch, "mlp") == 0 ? ENG_DATASET_INPUTS : ENG_DATASET_TOKENS;
}

// --- tensors

long net_tensor(const eng_net *n, const char *name, int ndim, int64_t a,
                int64_t b, sh_diag *d)
{
    long i = eng_model_find(n->m, name);
    if (i < 0) {
        sh_diag_set(d, SH_EFORMAT, name, "the model lacks tensor \"%s\"", name);
        return -1;
    }
    const eng_tensor_info *t = eng_model_tensor(n->m, (size_t)i);
    bool ok =
        t->ndim == ndim && t->shape[0] == a && (ndim == 1 || t->shape[1] == b);
    if (!ok) {
        if (ndim == 1)
            sh_diag_set(d, SH_EFORMAT, name,
                        "tensor \"%s\" should be [%" PRId64 "] by the config",
                        name, a);
        else
            sh_diag_set(d, SH_EFORMAT, name,
                        "tensor \"%s\" should be [%" PRId64 ", %" PRId64
                        "] by the config",
                        name, a, b);
        return -1;
    }
    if (!eng_dtypes[t->dtype].prunable) {
        sh_diag_set(d, SH_EUNSUPPORTED, name,
                    "tensor \"%s\" is %s; the forward pass needs F32, F16, "
                    "BF16 or F64",
                    name, eng_dtype_name(t->dtype));
        return -1;
    }
    return i;
}

int net_load_f32(const eng_net *n, size_t ti, float **out, sh_diag *d)
{
    const eng_tensor_info *t = eng_model_tensor(n->m, ti);
    size_t file, idx;
    eng_model_tensor_loc(n->m, ti, &file, &idx);
    const eng_st *st = eng_model_file_at(n->m, file)->st;
    float *w = malloc((t->numel ? t->numel : 1) * sizeof *w);
    if (!w)
        return sh_diag_set(d, SH_ENOMEM, t->name, "out of memory for %s",
                           t->name);
    // Read in chunks by pread and convert (see eng_st_read for why not
    // the mapping).
    size_t es = eng_dtype_size(t->dtype);
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = malloc(CHUNK);
    int rc = buf ? 0 : SH_ENOMEM;
    size_t per = CHUNK / es;
    for (uint64_t at = 0; rc == 0 && at < t->numel; at += per) {
        size_t len = t->numel - at < per ? (size_t)(t->numel - at) : per;
        rc = eng_st_read_range(st, idx, at * es, buf, len * es, d);
        if (rc == 0)
            eng_convert_to_f32(w + at, buf, t->dtype, len);
    }
    free(buf);
    if (rc != 0) {
        free(w);
        return rc == SH_ENOMEM ? sh_diag_set(d, rc, "", "out of memory") : rc;
    }
    *out = w;
    return 0;
}

// --- opening

static int mlp_open(eng_net *n, const json_t *cfg, sh_diag *d)
{
    json_t *layers = json_object_get(cfg, "layers");
    if (!json_is_array(layers) || json_array_size(layers) == 0)
        return sh_diag_set(d, SH_EFORMAT, "config.json",
                           "config.json: an mlp needs \"layers\", the layer "
                           "names in order");
    const char *act = json_string_value(json_object_get(cfg, "hidden_act"));
    n->act = ACT_COUNT;
    for (int i = 0; act && i < ACT_COUNT; i++)
        if (strcmp(act, act_names[i]) == 0)
            n->act = (net_act)i;
    if (strcmp(act ? act : "", "gelu_pytorch_tanh") == 0)
        n->act = ACT_GELU_TANH;
    if (n->act == ACT_COUNT)
        return sh_diag_set(d, SH_EUNSUPPORTED, "config.json",
                           "config.json: hidden_act \"%s\" is not one of "
                           "relu, gelu, gelu_tanh, silu, tanh",
                           act ? act : "");
    n->nblocks = json_array_size(layers);
    n->blocks = calloc(n->nblocks, sizeof *n->blocks);
    if (!n->blocks)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    int64_t prev = -1;
    for (size_t i = 0; i < n->nblocks; i++) {
        const char *name = json_string_value(json_array_get(layers, i));
        char wn[256], bn[256];
        snprintf(wn, sizeof wn, "%s.weight", name ? name : "");
        snprintf(bn, sizeof bn, "%s.bias", name ? name : "");
        long w = eng_model_find(n->m, wn);
        if (!name || w < 0)
            return sh_diag_set(d, SH_EFORMAT, wn,
                               "layer %zu: the model lacks \"%s\"", i, wn);
        const eng_tensor_info *t = eng_model_tensor(n->m, (size_t)w);
        if (t->ndim != 2)
            return sh_diag_set(d, SH_EFORMAT, wn, "\"%s\" must be [out, in]",
                               wn);
        if (prev >= 0 && t->shape[1] != prev)
            return sh_diag_set(d, SH_EFORMAT, wn,
                               "\"%s\" takes %" PRId64 " inputs; the layer "
                               "before gives %" PRId64,
                               wn, t->shape[1], prev);
        if (net_tensor(n, wn, 2, t->shape[0], t->shape[1], d) < 0)
            return d->code;
        net_block_def *b = &n->blocks[i];
        b->lin[0] = (eng_net_linear){(size_t)w, 0, t->shape[0], t->shape[1]};
        b->bias[0] = eng_model_find(n->m, bn);
        if (b->bias[0] >= 0 && net_tensor(n, bn, 1, t->shape[0], 0, d) < 0)
            return d->code;
        b->nlin = 1;
        b->sites = 1;
        prev = t->shape[0];
        if (i == 0)
            n->in_dim = t->shape[1];
    }
    n->classes = prev;
    return 0;
}

int eng_net_open(eng_net **out, const eng_model *m, sh_diag *d)
{
    const json_t *cfg = eng_model_config(m);
    const char *arch = eng_model_arch(m);
    if (!cfg)
        return sh_diag_set(d, SH_EUNSUPPORTED, "",
                           "the model has no config.json; running it "
                           "(calibration, evaluation) needs one");
    if (!eng_net_runs(arch))
        return sh_diag_set(d, SH_EUNSUPPORTED, "",
                           "the engine cannot run architecture \"%s\" "
                           "(it runs mlp and the Llama family: llama, "
                           "mistral, qwen2)",
                           arch);
    eng_net *n = calloc(1, sizeof *n);
    if (!n)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    n->m = m;
    n->arch = strcmp(arch, "mlp") == 0 ? NET_MLP : NET_LLAMA;
    int rc =
        n->arch == NET_MLP ? mlp_open(n, cfg, d) : net_llama_open(n, cfg, d);
    if (rc != 0) {
        eng_net_close(n);
        return rc;
    }
    *out = n;
    return 0;
}

float *net_scratch(eng_net *n, size_t count)
{
    if (count > n->scratch_n) {
        float *grown = realloc(n->scratch, count * sizeof *grown);
        if (!grown)
            return NULL;
        n->scratch = grown;
        n->scratch_n = count;
    }
    return n->scratch;
}

void eng_net_close(eng_net *n)
{
    if (!n)
        return;
    free(n->scratch);
    free(n->blocks);
    free(n->rope_cos);
    free(n->rope_sin);
    free(n);
}

eng_dataset_kind eng_net_input_kind(const eng_net *n)
{
    return n->arch == NET_MLP ? ENG_DATASET_INPUTS : ENG_DATASET_TOKENS;
}

int64_t eng_net_vocab(const eng_net *n)
{
    return n->arch == NET_LLAMA ? n->vocab : 0;
}

int64_t eng_net_classes(const eng_net *n)
{
    return n->arch == NET_MLP ? n->classes : 0;
}

int eng_net_check_dataset(const eng_net *n, const eng_dataset_info *di,
                          sh_diag *d)
{
    eng_dataset_kind want = eng_net_input_kind(n);
    if (di->kind != want)
        return sh_diag_set(d, SH_EFORMAT, "dataset",
                           "this model needs a dataset of \"%s\", not \"%s\"",
                           eng_dataset_kind_name(want),
                           eng_dataset_kind_name(di->kind));
    if (n->arch == NET_MLP && di->cols != n->in_dim)
        return sh_diag_set(d, SH_EFORMAT, "inputs",
                           "\"inputs\" has %" PRId64 " features; the model "
                           "takes %" PRId64,
                           di->cols, n->in_dim);
    if (n->arch == NET_LLAMA && di->cols < 2)
        return sh_diag_set(d, SH_EFORMAT, "tokens",
                           "\"tokens\" rows need at least 2 tokens");
    return 0;
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

int eng_net_block_load(eng_net *n, size_t block, eng_net_block **out,
                       sh_diag *d)
{
    eng_net_block *b = calloc(1, sizeof *b);
    if (!b)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    b->index = block;
    const net_block_def *def = &n->blocks[block];
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < def->nlin; i++) {
        rc = net_load_f32(n, def->lin[i].tensor, &b->w[i], d);
        if (rc == 0 && def->bias[i] >= 0)
            rc = net_load_f32(n, (size_t)def->bias[i], &b->b[i], d);
    }
    if (rc == 0 && n->arch == NET_LLAMA) {
        rc = net_load_f32(n, (size_t)def->norm_in, &b->norm_in, d);
        if (rc == 0)
            rc = net_load_f32(n, (size_t)def->norm_post, &b->norm_post, d);
    }
    if (rc != 0) {
        eng_net_block_free(b);
        return rc;
    }
    *out = b;
    return 0;
}

void eng_net_block_free(eng_net_block *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < NET_MAX_LINEARS; i++) {
        free(b->w[i]);
        free(b->b[i]);
    }
    free(b->norm_in);
    free(b->norm_post);
    free(b);
}

float *eng_net_block_weight(eng_net_block *b, size_t i) { return b->w[i]; }

// --- activations

void eng_acts_free(eng_acts *a)
{
    free(a->x);
    a->x = NULL;
}

int eng_acts_copy(eng_acts *dst, const eng_acts *src)
{
    return eng_acts_copy_polled(dst, src, NULL);
}

int eng_acts_copy_polled(eng_acts *dst, const eng_acts *src, const eng_hooks *h)
{
    // dst's buffer is reused when it is large enough.
    size_t n = (size_t)(src->rows * src->width);
    size_t have = dst->x ? (size_t)(dst->rows * dst->width) : 0;
    float *x = have >= n ? dst->x : realloc(dst->x, (n ? n : 1) * sizeof *x);
    if (!x)
        return SH_ENOMEM;
    *dst = *src;
    dst->x = x;
    return eng_copy_polled(dst->x, src->x, n, h);
}

int eng_net_embed(eng_net *n, const eng_dataset *ds, eng_acts *out, sh_diag *d)
{
    return eng_net_embed_polled(n, ds, out, NULL, d);
}

int eng_net_embed_polled(eng_net *n, const eng_dataset *ds, eng_acts *out,
                         const eng_hooks *h, sh_diag *d)
{
    if (n->arch == NET_LLAMA)
        return net_llama_embed_polled(n, ds, out, h, d);
    size_t count = (size_t)(ds->rows * ds->info.cols);
    *out = (eng_acts){.rows = ds->rows, .width = ds->info.cols};
    if (!(out->x = malloc(count * sizeof *out->x)))
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    return eng_copy_polled(out->x, ds->inputs, count, h);
}

static float act_apply(net_act a, float x)
{
    switch (a) {
    case ACT_RELU: return x > 0 ? x : 0;
    case ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case ACT_GELU_TANH:
        return 0.5f * x *
               (1.0f +
                tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case ACT_SILU: return x / (1.0f + expf(-x));
    case ACT_TANH: return tanhf(x);
    default: return x;
    }
}

static int mlp_forward(eng_net *n, eng_net_block *b, eng_acts *a,
                       eng_site_fn fn, void *ctx, const eng_hooks *h,
                       sh_diag *d)
{
    const eng_net_linear *l = &n->blocks[b->index].lin[0];
    if (fn)
        fn(ctx, 0, a->x, a->rows, a->width);
    float *y = malloc((size_t)(a->rows * l->rows) * sizeof *y);
    if (!y)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    int rc = eng_linear_polled(y, a->x, b->w[0], b->b[0], a->rows, l->cols,
                               l->rows, h);
    eng_pacer pace = {.h = h};
    if (b->index + 1 < n->nblocks) {
        for (int64_t r = 0; rc == 0 && r < a->rows; r++) {
            float *yr = y + r * l->rows;
            for (int64_t j = 0; j < l->rows; j++)
                yr[j] = act_apply(n->act, yr[j]);
            if (eng_pacer_step(&pace, (uint64_t)l->rows))
                rc = SH_ECANCELED;
        }
    }
    if (rc != 0) {
        free(y);
        return rc;
    }
    free(a->x);
    a->x = y;
    a->width = l->rows;
    return 0;
}

int eng_net_block_forward_polled(eng_net *n, eng_net_block *b, eng_acts *a,
                                 eng_site_fn fn, void *ctx, const eng_hooks *h,
                                 sh_diag *d)
{
    return n->arch == NET_MLP
               ? mlp_forward(n, b, a, fn, ctx, h, d)
               : net_llama_forward_polled(n, b, a, fn, ctx, h, d);
}

int eng_net_block_forward(eng_net *n, eng_net_block *b, eng_acts *a,
                          eng_site_fn fn, void *ctx, sh_diag *d)
{
    return eng_net_block_forward_polled(n, b, a, fn, ctx, NULL, d);
}

// --- evaluation

static int mlp_metric(const eng_net *n, const eng_dataset *ds,
                      const eng_acts *a, eng_metric *out, sh_diag *d)
{
    if (!ds->labels)
        return sh_diag_set(d, SH_EFORMAT, "labels",
                           "evaluating a classifier needs \"labels\"");
    int64_t hits = 0;
    double loss = 0;
    for (int64_t r = 0; r < a->rows; r++) {
        const float *z = a->x + r * a->width;
        int64_t best = 0;
        double mx = z[0];
        for (int64_t j = 1; j < a->width; j++) {
            if (z[j] > z[best])
                best = j;
            mx = z[j] > mx ? z[j] : mx;
        }
        double s = 0;
        for (int64_t j = 0; j < a->width; j++)
            s += exp((double)z[j] - mx);
        loss += log(s) + mx - z[ds->labels[r]];
        hits += best == ds->labels[r];
    }
    *out = (eng_metric){"accuracy", (double)hits / (double)a->rows,
                        loss / (double)a->rows};
    (void)n;
    return 0;
}

int eng_net_evaluate(eng_net *n, const eng_dataset *ds, const eng_hooks *h,
                     eng_metric *out, sh_diag *d)
{
    eng_acts a = {0};
    int rc = eng_net_embed_polled(n, ds, &a, h, d);
    for (size_t b = 0; rc == 0 && b < n->nblocks; b++) {
        if (eng_hooks_cancelled(h)) {
            rc = SH_ECANCELED;
            break;
        }
        eng_net_block *blk = NULL;
        rc = eng_net_block_load(n, b, &blk, d);
        if (rc == 0 && eng_hooks_cancelled(h))
            rc = SH_ECANCELED;
        if (rc == 0)
            rc = eng_net_block_forward_polled(n, blk, &a, NULL, NULL, h, d);
        eng_net_block_free(blk);
    }
    if (rc == 0)
        rc = n->arch == NET_MLP
                 ? mlp_metric(n, ds, &a, out, d)
                 : net_llama_evaluate_polled(n, ds, &a, h, out, d);
    eng_acts_free(&a);
    return rc;
}

int eng_net_logits(eng_net *n, const int32_t *ids, int64_t seqlen, float **out,
                   sh_diag *d)
{
    if (n->arch != NET_LLAMA)
        return sh_diag_set(d, SH_EUNSUPPORTED, "", "logits need a token model");
    eng_dataset ds = {
        .info = {.kind = ENG_DATASET_TOKENS, .rows = 1, .cols = seqlen},
        .rows = 1,
        .ids = (int32_t *)ids};
    eng_acts a = {0};
    int rc = eng_net_embed(n, &ds, &a, d);
    for (size_t b = 0; rc == 0 && b < n->nblocks; b++) {
        eng_net_block *blk = NULL;
        rc = eng_net_block_load(n, b, &blk, d);
        if (rc == 0)
            rc = eng_net_block_forward(n, blk, &a, NULL, NULL, d);
        eng_net_block_free(blk);
    }
    float *head = NULL, *norm = NULL;
    float *logits = malloc((size_t)(seqlen * n->vocab) * sizeof *logits);
    if (rc == 0 && !logits)
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    if (rc == 0)
        rc = net_load_f32(n, (size_t)n->head, &head, d);
    if (rc == 0)
        rc = net_load_f32(n, (size_t)n->final_norm, &norm, d);
    if (rc == 0)
        rc = net_llama_head(n, a.x, seqlen, logits, head, norm);
    free(head);
    free(norm);
    eng_acts_free(&a);
    if (rc != 0) {
        free(logits);
        return rc;
    }
    *out = logits;
    return 0;
}

// layers.c: the building blocks of the families: tensors found and loaded
// (through the weight overlay), scratch, activations, and the backward of
// a linear layer.
#include "engine/nets/layers.h"

#include "common/util.h"
#include "engine/math/linalg.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// --- tensors

int net_tensor_find(const eng_net *n, const char *name, int ndim, int64_t a,
                    int64_t b, size_t *out, sh_diag *d)
{
    long i = eng_model_find(n->m, name);
    if (i < 0)
        return sh_diag_set(d, SH_EFORMAT, name, "the model lacks tensor \"%s\"",
                           name);
    const eng_tensor_info *t = eng_model_tensor(n->m, (size_t)i);
    bool ok =
        t->ndim == ndim && t->shape[0] == a && (ndim == 1 || t->shape[1] == b);
    if (!ok && ndim == 1)
        return sh_diag_set(
            d, SH_EFORMAT, name,
            "tensor \"%s\" should be [%" PRId64 "] by the config", name, a);
    if (!ok)
        return sh_diag_set(d, SH_EFORMAT, name,
                           "tensor \"%s\" should be [%" PRId64 ", %" PRId64
                           "] by the config",
                           name, a, b);
    if (!eng_dtypes[t->dtype].prunable)
        return sh_diag_set(d, SH_EUNSUPPORTED, name,
                           "tensor \"%s\" is %s; the forward pass needs F32, "
                           "F16, BF16 or F64",
                           name, eng_dtype_name(t->dtype));
    *out = (size_t)i;
    return 0;
}

static const float *overlay_of(const eng_net *n, size_t ti)
{
    return n->overlay ? n->overlay[ti] : NULL;
}

int net_tensor_load(const eng_net *n, size_t ti, float **out, sh_diag *d)
{
    const eng_tensor_info *t = eng_model_tensor(n->m, ti);
    float *w = sh_alloc_bulk(t->numel * sizeof *w);
    if (!w)
        return sh_diag_set(d, SH_ENOMEM, t->name, "out of memory for %s",
                           t->name);
    const float *over = overlay_of(n, ti);
    if (over) {
        memcpy(w, over, t->numel * sizeof *w);
        *out = w;
        return 0;
    }
    size_t file, idx;
    eng_model_tensor_loc(n->m, ti, &file, &idx);
    const eng_st *st = eng_model_file_at(n->m, file)->st;
    // Read by pread (see eng_st_read for why not the mapping): F32 straight
    // into place, other dtypes in chunks converted.
    if (t->dtype == ENG_DTYPE_F32) {
        int rc = eng_st_read(st, idx, w, d);
        if (rc != 0) {
            free(w);
            return rc;
        }
        *out = w;
        return 0;
    }
    size_t es = eng_dtype_size(t->dtype);
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = malloc(CHUNK);
    int rc = buf ? 0 : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
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
        return rc;
    }
    *out = w;
    return 0;
}

int net_tensor_row(const eng_net *n, size_t ti, int64_t row, float *out,
                   unsigned char *tmp, sh_diag *d)
{
    const eng_tensor_info *t = eng_model_tensor(n->m, ti);
    int64_t cols = t->shape[1];
    const float *over = overlay_of(n, ti);
    if (over) {
        memcpy(out, over + row * cols, (size_t)cols * sizeof *out);
        return 0;
    }
    size_t file, idx;
    eng_model_tensor_loc(n->m, ti, &file, &idx);
    const eng_st *st = eng_model_file_at(n->m, file)->st;
    size_t es = eng_dtype_size(t->dtype);
    int rc = eng_st_read_range(st, idx, (uint64_t)row * (uint64_t)cols * es,
                               tmp, (size_t)cols * es, d);
    if (rc == 0)
        eng_convert_to_f32(out, tmp, t->dtype, (size_t)cols);
    return rc;
}

// --- block weights

int net_weight(eng_net *n, eng_net_block *b, size_t i, float **out, sh_diag *d)
{
    int rc = b->w[i] ? 0
                     : net_tensor_load(n, n->blocks[b->index].lin[i].tensor,
                                       &b->w[i], d);
    *out = b->w[i];
    return rc;
}

void net_weight_done(eng_net_block *b, size_t i)
{
    if (b->lazy) {
        free(b->w[i]);
        b->w[i] = NULL;
    }
}

int net_block_linear(eng_net *n, eng_net_block *b, size_t i, float *y,
                     const float *x, int64_t rows, const eng_hooks *h,
                     sh_diag *d)
{
    const eng_net_linear *l = &n->blocks[b->index].lin[i];
    float *w;
    int rc = net_weight(n, b, i, &w, d);
    if (rc == 0)
        rc = eng_linear_polled(y, x, w, b->b[i], rows, l->cols, l->rows, h);
    net_weight_done(b, i);
    return rc;
}

// --- scratch

int net_scratch(eng_net *n, size_t count, float **out, sh_diag *d)
{
    if (count > n->scratch_n) {
        // Contents need not survive.
        free(n->scratch);
        n->scratch_n = 0;
        if (!(n->scratch = sh_alloc_bulk(count * sizeof(float))))
            return sh_diag_set(d, SH_ENOMEM, "",
                               "out of memory for a block's intermediates");
        n->scratch_n = count;
    }
    *out = n->scratch;
    return 0;
}

// --- activations

static const char *const act_names[] = {
    [ACT_RELU] = "relu", [ACT_GELU] = "gelu", [ACT_GELU_TANH] = "gelu_tanh",
    [ACT_SILU] = "silu", [ACT_TANH] = "tanh",
};
static_assert(sizeof act_names / sizeof act_names[0] == ACT_COUNT,
              "a name per activation");

int net_act_parse(const char *name, net_act *out, sh_diag *d)
{
    for (int i = 0; name && i < ACT_COUNT; i++) {
        if (strcmp(name, act_names[i]) == 0) {
            *out = (net_act)i;
            return 0;
        }
    }
    if (name && strcmp(name, "gelu_pytorch_tanh") == 0) {
        *out = ACT_GELU_TANH;
        return 0;
    }
    return sh_diag_set(d, SH_EUNSUPPORTED, "config.json",
                       "config.json: hidden_act \"%s\" is not one of "
                       "relu, gelu, gelu_tanh, silu, tanh",
                       name ? name : "");
}

float net_act_apply(net_act a, float x)
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

float net_act_grad(net_act a, float x)
{
    switch (a) {
    case ACT_RELU: return x > 0 ? 1.0f : 0.0f;
    case ACT_GELU: {
        // Phi(x) + x phi(x)
        float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
        return cdf + x * 0.39894228040143268f * expf(-0.5f * x * x);
    }
    case ACT_GELU_TANH: {
        const float k = 0.79788456080286536f, c = 0.044715f;
        float t = tanhf(k * (x + c * x * x * x));
        return 0.5f * (1.0f + t) +
               0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * c * x * x);
    }
    case ACT_SILU: {
        float s = 1.0f / (1.0f + expf(-x));
        return s * (1.0f + x * (1.0f - s));
    }
    case ACT_TANH: {
        float t = tanhf(x);
        return 1.0f - t * t;
    }
    default: return 1.0f;
    }
}

// --- the loss

double net_xent(const float *z, int64_t n, int64_t label, float *dz,
                double scale)
{
    double mx = z[0];
    for (int64_t c = 1; c < n; c++)
        mx = z[c] > mx ? z[c] : mx;
    double sum = 0;
    for (int64_t c = 0; c < n; c++)
        sum += exp((double)z[c] - mx);
    for (int64_t c = 0; dz && c < n; c++)
        dz[c] = (float)((exp((double)z[c] - mx) / sum - (c == label)) * scale);
    return log(sum) + mx - z[label];
}

// --- gradients

int net_gscratch(eng_net *n, size_t count, float **out, sh_diag *d)
{
    if (count > n->gscratch_n) {
        free(n->gscratch);
        n->gscratch_n = 0;
        if (!(n->gscratch = sh_alloc_bulk(count * sizeof(float))))
            return sh_diag_set(d, SH_ENOMEM, "",
                               "out of memory for a tensor's gradient");
        n->gscratch_n = count;
    }
    *out = n->gscratch;
    return 0;
}

int net_linear_back(eng_net *n, eng_net_block *b, size_t i, float *dx, bool add,
                    const float *dy, const float *x, int64_t rows,
                    const eng_grad_sink *sink, sh_diag *d)
{
    const net_block_def *def = &n->blocks[b->index];
    const eng_net_linear *l = &def->lin[i];
    int64_t in = l->cols, out = l->rows;
    int rc = 0;
    if (net_wants(sink, l->tensor)) {
        float *gw = NULL;
        if ((rc = net_gscratch(n, (size_t)(in * out), &gw, d)) != 0)
            return rc;
        eng_gemm(true, false, out, in, rows, 1.0f, dy, out, x, in, 0.0f, gw,
                 in);
        if ((rc = sink->put(sink->ctx, l->tensor, gw, d)) != 0)
            return rc;
    }
    if (net_wants(sink, def->bias[i])) {
        float *gb = calloc((size_t)out, sizeof *gb);
        if (!gb)
            return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        for (int64_t r = 0; r < rows; r++)
            for (int64_t o = 0; o < out; o++)
                gb[o] += dy[r * out + o];
        rc = sink->put(sink->ctx, def->bias[i], gb, d);
        free(gb);
        if (rc != 0)
            return rc;
    }
    if (!dx)
        return 0;
    float *w;
    if ((rc = net_weight(n, b, i, &w, d)) == 0)
        eng_gemm(false, false, rows, in, out, 1.0f, dy, out, w, in,
                 add ? 1.0f : 0.0f, dx, in);
    net_weight_done(b, i);
    return rc;
}

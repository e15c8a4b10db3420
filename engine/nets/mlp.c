// mlp.c: the MLP family, a classifier:
//
//   config.json {"model_type": "mlp", "layers": [...], "hidden_act"}
//   per layer "<name>.weight" (out, in) and optional "<name>.bias" (out,)
//   y = x W^T + b, the activation after every layer but the last;
//   the metric is top-1 accuracy of the last layer's logits.
//
// Each layer is a block of one linear layer reading one site.
#include "engine/nets/layers.h"

#include "engine/math/linalg.h"
#include "engine/math/poll.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int mlp_open(eng_net *n, const json_t *cfg, sh_diag *d)
{
    json_t *layers = json_object_get(cfg, "layers");
    if (!json_is_array(layers) || json_array_size(layers) == 0)
        return sh_diag_set(d, SH_EFORMAT, "config.json",
                           "config.json: an mlp needs \"layers\", the layer "
                           "names in order");
    const char *act = json_string_value(json_object_get(cfg, "hidden_act"));
    int rc = net_act_parse(act, &n->act, d);
    if (rc != 0)
        return rc;
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
        size_t wi;
        if ((rc = net_tensor_find(n, wn, 2, t->shape[0], t->shape[1], &wi,
                                  d)) != 0)
            return rc;
        net_block_def *b = &n->blocks[i];
        b->lin[0] = (eng_net_linear){wi, 0, t->shape[0], t->shape[1]};
        b->bias[0] = NET_NO_TENSOR;
        if (eng_model_find(n->m, bn) >= 0 &&
            (rc = net_tensor_find(n, bn, 1, t->shape[0], 0, &b->bias[0], d)))
            return rc;
        b->nlin = 1;
        b->sites = 1;
        prev = t->shape[0];
        if (i == 0)
            n->in_dim = t->shape[1];
    }
    n->classes = prev;
    return 0;
}

static void mlp_close(eng_net *n) { (void)n; }

static int mlp_check_dataset(const eng_net *n, const eng_dataset_info *di,
                             sh_diag *d)
{
    if (di->cols != n->in_dim)
        return sh_diag_set(d, SH_EFORMAT, "inputs",
                           "\"inputs\" has %" PRId64 " features; the model "
                           "takes %" PRId64,
                           di->cols, n->in_dim);
    return 0;
}

static int mlp_embed(eng_net *n, const eng_dataset *ds, eng_acts *out,
                     const eng_hooks *h, sh_diag *d)
{
    (void)n;
    (void)h;
    (void)d;
    // The first layer reads the rows where they lie; its forward pass
    // writes its output to a buffer of its own.
    *out = (eng_acts){.x = (float *)ds->inputs,
                      .borrowed = true,
                      .rows = ds->rows,
                      .width = ds->info.cols};
    return 0;
}

// The block's one site is its input: nothing to run.
static int mlp_stats(eng_net *n, eng_net_block *b, const eng_acts *a,
                     eng_site_fn fn, void *ctx, const eng_hooks *h, sh_diag *d)
{
    (void)n;
    (void)b;
    (void)h;
    (void)d;
    fn(ctx, 0, a->x, a->rows, a->width);
    return 0;
}

static int mlp_forward(eng_net *n, eng_net_block *b, eng_acts *a,
                       const eng_hooks *h, sh_diag *d)
{
    const eng_net_linear *l = &n->blocks[b->index].lin[0];
    float *y = malloc((size_t)(a->rows * l->rows) * sizeof *y);
    if (!y)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    int rc = net_block_linear(n, b, 0, y, a->x, a->rows, h, d);
    eng_pacer pace = {.h = h};
    if (b->index + 1 < n->nblocks) {
        for (int64_t r = 0; rc == 0 && r < a->rows; r++) {
            float *yr = y + r * l->rows;
            for (int64_t j = 0; j < l->rows; j++)
                yr[j] = net_act_apply(n->act, yr[j]);
            if (eng_pacer_step(&pace, (uint64_t)l->rows))
                rc = SH_ECANCELED;
        }
    }
    if (rc != 0) {
        free(y);
        return rc;
    }
    if (!a->borrowed)
        free(a->x);
    a->borrowed = false;
    a->x = y;
    a->width = l->rows;
    return 0;
}

static int mlp_metric(eng_net *n, const eng_dataset *ds, const eng_acts *a,
                      const eng_hooks *h, eng_metric *out, sh_diag *d)
{
    (void)n;
    (void)h;
    if (!ds->labels)
        return sh_diag_set(d, SH_EFORMAT, "labels",
                           "evaluating a classifier needs \"labels\"");
    int64_t hits = 0;
    double loss = 0;
    for (int64_t r = 0; r < a->rows; r++) {
        const float *z = a->x + r * a->width;
        int64_t best = 0;
        for (int64_t j = 1; j < a->width; j++)
            best = z[j] > z[best] ? j : best;
        loss += net_xent(z, a->width, ds->labels[r], NULL, 0);
        hits += best == ds->labels[r];
    }
    *out = (eng_metric){"accuracy", (double)hits / (double)a->rows,
                        loss / (double)a->rows};
    return 0;
}

// A layer's outputs are channels (hidden units): removing one removes a row
// (and bias entry) of this block's linear and the matching column of the
// next block's, which reads it. The last layer's outputs are the classes
// and stay.
static size_t mlp_groups(const eng_net *n, size_t block, eng_net_group *out,
                         size_t cap)
{
    eng_net_group g[2] = {
        {.kind = ENG_GROUP_BLOCK, .count = 1, .consumer = -1}};
    size_t count = 1;
    if (block + 1 < n->nblocks)
        g[count++] = (eng_net_group){
            .kind = ENG_GROUP_CHANNEL,
            .count = n->blocks[block].lin[0].rows,
            .nspans = 2,
            .span = {{.linear = 0, .size = 1},
                     {.linear = 0, .cols = true, .next = true, .size = 1}},
            .consumer = 1};
    for (size_t i = 0; i < count && i < cap; i++)
        out[i] = g[i];
    return count;
}

// --- gradients

// The row's cross-entropy on its label, and dy = softmax(z) - onehot.
static int mlp_loss_backward(eng_net *n, const eng_dataset *row,
                             const eng_acts *a, float *dy,
                             const eng_grad_sink *sink, double *loss,
                             sh_diag *d)
{
    (void)n;
    (void)sink;
    if (!row->labels)
        return sh_diag_set(d, SH_EFORMAT, "labels",
                           "gradients of a classifier need \"labels\"");
    double sum = 0;
    for (int64_t r = 0; r < a->rows; r++)
        sum += net_xent(a->x + r * a->width, a->width, row->labels[r],
                        dy + r * a->width, 1.0);
    *loss = sum / (double)a->rows;
    return 0;
}

// y = act(x W^T + b): the pre-activation recomputed from x, then
// dz = dy * act'(z), gW = dz^T x, gb = sum dz, dx = dz W.
static int mlp_backward(eng_net *n, eng_net_block *b, const eng_acts *in,
                        eng_acts *dy, const eng_grad_sink *sink,
                        const eng_hooks *h, sh_diag *d)
{
    const eng_net_linear *l = &n->blocks[b->index].lin[0];
    int64_t rows = in->rows;
    float *dx = malloc((size_t)(rows * l->cols) * sizeof *dx);
    float *z = NULL;
    int rc = dx ? 0 : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    if (rc == 0 && b->index + 1 < n->nblocks) {
        z = malloc((size_t)(rows * l->rows) * sizeof *z);
        rc = z ? net_block_linear(n, b, 0, z, in->x, rows, h, d)
               : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        for (int64_t i = 0; rc == 0 && i < rows * l->rows; i++)
            dy->x[i] *= net_act_grad(n->act, z[i]);
    }
    if (rc == 0)
        rc = net_linear_back(n, b, 0, dx, false, dy->x, in->x, rows, sink, d);
    free(z);
    if (rc != 0) {
        free(dx);
        return rc;
    }
    if (!dy->borrowed)
        free(dy->x);
    *dy = *in;
    dy->x = dx;
    dy->borrowed = false;
    return 0;
}

static size_t mlp_head_tensors(const eng_net *n, size_t *out, size_t cap)
{
    (void)n;
    (void)out;
    (void)cap;
    return 0;
}

static const char *const mlp_archs[] = {"mlp", NULL};

const eng_family eng_family_mlp = {
    .name = "mlp",
    .archs = mlp_archs,
    .kind = ENG_DATASET_INPUTS,
    .open = mlp_open,
    .close = mlp_close,
    .check_dataset = mlp_check_dataset,
    .embed = mlp_embed,
    .forward = mlp_forward,
    .stats = mlp_stats,
    .metric = mlp_metric,
    .logits = NULL,
    .groups = mlp_groups,
    .query_linear = -1,
    .loss_backward = mlp_loss_backward,
    .backward = mlp_backward,
    .embed_backward = NULL,
    .head_tensors = mlp_head_tensors,
};

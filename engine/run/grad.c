// grad.c: gradients of the loss over a calibration set (engine.h:
// eng_gradients), and the file `shears grad` writes.
//
// One dataset row at a time (a sequence, or a classifier's sample):
//   forward   the row through every block, each block's input kept
//             (a sequence: blocks x T x hidden floats);
//   loss      the row's loss and its gradient at the last block's output,
//             the head's tensors' gradients;
//   backward  block by block from the last, each block's weights loaded
//             again and its activations recomputed from its kept input
//             (activation checkpointing per block), its tensors' row
//             gradients gathered in a scratch buffer of the block's size;
//   fold      g += g_r and, for a Fisher diagonal, F += g_r^2 after each
//             block, the head's after the embedding's backward (a tied
//             embedding gathers both parts first).
// At the end g /= rows: the gradient of the mean loss. Memory: the sums
// (one F32 per wanted element, twice with Fisher), one block's weights as
// F32 and its row scratch, the head's weights and scratch, the kept block
// inputs and one block's activations for one row.
#include "engine/run/run.h"

#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FISHER_PREFIX "fisher."

void eng_grads_deinit(eng_grads *g)
{
    for (size_t i = 0; g->g && i < g->count; i++)
        free(g->g[i]);
    for (size_t i = 0; g->fisher && i < g->count; i++)
        free(g->fisher[i]);
    free(g->g);
    free(g->fisher);
    *g = (eng_grads){0};
}

// A set of tensors whose row gradients gather in one scratch buffer.
typedef struct grad_set {
    size_t t[ENG_NET_MAX_BLOCK_TENSORS];
    size_t n;
} grad_set;

typedef struct grad_ctx {
    const eng_model *m;
    eng_net *net;
    eng_grads *out;
    bool fisher;
    float **row; // (count,) the scratch of the tensors at hand, else NULL
} grad_ctx;

// A scratch buffer, grown as needed.
typedef struct scratch {
    float *p;
    size_t n;
} scratch;

static uint64_t numel_of(const grad_ctx *c, size_t t)
{
    return eng_model_tensor(c->m, t)->numel;
}

// Points c->row at zeroed scratch (from sc) for the wanted tensors of set.
static int set_open(grad_ctx *c, const grad_set *set, scratch *sc, sh_diag *d)
{
    size_t need = 0;
    for (size_t i = 0; i < set->n; i++)
        if (c->out->g[set->t[i]])
            need += (size_t)numel_of(c, set->t[i]);
    if (need > sc->n) {
        free(sc->p);
        sc->n = 0;
        if (!(sc->p = sh_alloc_bulk(need * sizeof(float))))
            return sh_diag_set(d, SH_ENOMEM, "",
                               "out of memory for a row's gradients");
        sc->n = need;
    }
    memset(sc->p, 0, need * sizeof(float));
    float *at = sc->p;
    for (size_t i = 0; i < set->n; i++) {
        size_t t = set->t[i];
        if (c->out->g[t]) {
            c->row[t] = at;
            at += numel_of(c, t);
        }
    }
    return 0;
}

// Folds the row's gradients of set into the sums and detaches them. A
// value that is not finite is an error naming the tensor and the row.
static int set_fold(grad_ctx *c, const grad_set *set, int64_t row, sh_diag *d)
{
    int rc = 0;
    for (size_t i = 0; i < set->n; i++) {
        size_t t = set->t[i];
        float *r = c->row[t], *g = c->out->g[t], *f = c->out->fisher[t];
        c->row[t] = NULL;
        if (!r || rc != 0)
            continue;
        uint64_t n = numel_of(c, t);
        bool bad = false;
        for (uint64_t k = 0; k < n; k++) {
            bad |= !isfinite(r[k]);
            g[k] += r[k];
        }
        if (f)
            for (uint64_t k = 0; k < n; k++)
                f[k] += r[k] * r[k];
        if (bad) {
            const char *name = eng_model_tensor(c->m, t)->name;
            rc = sh_diag_set(d, SH_ENUMERIC, name,
                             "the gradient of \"%s\" is not finite on "
                             "calibration row %" PRId64
                             " (the model's activations or loss overflow "
                             "F32 there)",
                             name, row);
        }
    }
    return rc;
}

static eng_dataset row_view(const eng_dataset *ds, int64_t r)
{
    eng_dataset v = *ds;
    v.rows = 1;
    if (ds->ids)
        v.ids = ds->ids + r * ds->info.cols;
    if (ds->inputs)
        v.inputs = ds->inputs + r * ds->info.cols;
    if (ds->labels)
        v.labels = ds->labels + r;
    v.owned = NULL;
    v.st = NULL;
    return v;
}

// One row forward and back, its gradients folded into the sums. kept
// (blocks,) holds the blocks' inputs; sc[0] the head's row gradients,
// sc[1] the block's at hand.
static int one_row(grad_ctx *c, const eng_dataset *ds, int64_t r,
                   eng_acts *kept, scratch *sc, double *loss,
                   const eng_hooks *h, sh_diag *d)
{
    size_t nb = eng_net_blocks(c->net);
    eng_dataset row = row_view(ds, r);
    grad_set head = {0}, blk = {0};
    head.n = eng_net_head_tensors(c->net, head.t, ENG_NET_MAX_HEAD_TENSORS);
    eng_acts a = {0}, dy = {0};
    eng_net_block *b = NULL;
    int rc = eng_net_embed_polled(c->net, &row, &a, h, d);
    for (size_t i = 0; rc == 0 && i < nb; i++) {
        if ((rc = eng_acts_copy(&kept[i], &a, d)) == 0 &&
            (rc = eng_net_block_open(c->net, i, &b, d)) == 0)
            rc = eng_net_block_forward_polled(c->net, b, &a, h, d);
        eng_net_block_close(b);
        b = NULL;
    }
    if (rc == 0 && (rc = set_open(c, &head, &sc[0], d)) == 0) {
        dy = a;
        dy.borrowed = false;
        if (!(dy.x = malloc((size_t)(a.rows * a.width) * sizeof *dy.x)))
            rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        else
            rc = eng_net_loss_backward(c->net, &row, &a, dy.x, c->row, loss, d);
    }
    for (size_t i = nb; rc == 0 && i-- > 0;) {
        blk.n =
            eng_net_block_tensors(c->net, i, blk.t, ENG_NET_MAX_BLOCK_TENSORS);
        if ((rc = set_open(c, &blk, &sc[1], d)) == 0 &&
            (rc = eng_net_block_open(c->net, i, &b, d)) == 0)
            rc = eng_net_block_backward(c->net, b, &kept[i], &dy, c->row, h, d);
        eng_net_block_close(b);
        b = NULL;
        if (rc == 0)
            rc = set_fold(c, &blk, r, d);
        for (size_t k = 0; k < blk.n; k++)
            c->row[blk.t[k]] = NULL;
    }
    if (rc == 0) {
        eng_net_embed_backward(c->net, &row, dy.x, c->row);
        rc = set_fold(c, &head, r, d);
    }
    for (size_t k = 0; k < head.n; k++)
        c->row[head.t[k]] = NULL;
    eng_acts_deinit(&a);
    eng_acts_deinit(&dy);
    return rc;
}

int eng_gradients(const eng_model *m, const char *calibration, int64_t max_rows,
                  const bool *want, bool fisher, const eng_hooks *h,
                  eng_grads *out, sh_diag *d)
{
    double t0 = sh_time_mono();
    size_t count = eng_model_tensor_count(m);
    *out = (eng_grads){.count = count};
    eng_net *net = NULL;
    eng_dataset ds = {0};
    eng_acts *kept = NULL;
    scratch sc[2] = {0};
    grad_ctx c = {.m = m, .out = out, .fisher = fisher};
    int rc = eng_net_open(&net, m, d);
    if (rc != 0)
        return rc;
    c.net = net;
    size_t nb = eng_net_blocks(net);
    out->g = calloc(count, sizeof *out->g);
    out->fisher = calloc(count, sizeof *out->fisher);
    c.row = calloc(count, sizeof *c.row);
    kept = calloc(nb, sizeof *kept);
    if (!out->g || !out->fisher || !c.row || !kept) {
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        goto out;
    }
    // The tensors the model reads, those wanted given sums.
    for (size_t pass = 0; rc == 0 && pass <= nb; pass++) {
        grad_set set = {0};
        set.n = pass < nb ? eng_net_block_tensors(net, pass, set.t,
                                                  ENG_NET_MAX_BLOCK_TENSORS)
                          : eng_net_head_tensors(net, set.t,
                                                 ENG_NET_MAX_HEAD_TENSORS);
        for (size_t i = 0; rc == 0 && i < set.n; i++) {
            size_t t = set.t[i];
            if ((want && !want[t]) || out->g[t])
                continue;
            size_t n = (size_t)eng_model_tensor(m, t)->numel;
            out->g[t] = sh_calloc_bulk((n ? n : 1) * sizeof(float));
            if (fisher)
                out->fisher[t] = sh_calloc_bulk((n ? n : 1) * sizeof(float));
            if (!out->g[t] || (fisher && !out->fisher[t]))
                rc = sh_diag_set(d, SH_ENOMEM, "",
                                 "out of memory for the gradients' sums");
        }
    }
    if (rc != 0)
        goto out;
    eng_hooks_progress(
        h, &(eng_progress){.phase = "gradients", .stage = "read", .steps = 1});
    if ((rc = eng_dataset_load(&ds, calibration, max_rows, eng_net_vocab(net),
                               eng_net_classes(net), h, d)) != 0 ||
        (rc = eng_net_check_dataset(net, &ds.info, d)) != 0) {
        sh_diag_prefix(d, "calibration data");
        goto out;
    }
    if (ds.rows < 1) {
        rc = sh_diag_set(d, SH_EFORMAT, "calibration",
                         "calibration data: no rows");
        goto out;
    }
    double loss = 0;
    for (int64_t r = 0; rc == 0 && r < ds.rows; r++) {
        eng_hooks_progress(
            h, &(eng_progress){.phase = "gradients",
                               .stage = "backward",
                               .step = (size_t)r,
                               .steps = (size_t)ds.rows,
                               .fraction = (double)r / (double)ds.rows});
        if (eng_hooks_cancelled(h)) {
            rc = SH_ECANCELED;
            break;
        }
        double l = 0;
        rc = one_row(&c, &ds, r, kept, sc, &l, h, d);
        loss += l;
    }
    if (rc != 0)
        goto out;
    for (size_t t = 0; t < count; t++) {
        float *g = out->g[t];
        for (uint64_t k = 0; g && k < eng_model_tensor(m, t)->numel; k++)
            g[k] /= (float)ds.rows;
    }
    out->rows = ds.rows;
    out->loss = loss / (double)ds.rows;
    out->seconds = sh_time_mono() - t0;
out:
    for (size_t i = 0; kept && i < nb; i++)
        eng_acts_deinit(&kept[i]);
    free(kept);
    free(c.row);
    free(sc[0].p);
    free(sc[1].p);
    eng_dataset_deinit(&ds);
    eng_net_head_release(net);
    eng_net_close(net);
    if (rc != 0)
        eng_grads_deinit(out);
    return rc;
}

int eng_grads_write(const eng_model *m, const eng_grads *g, const char *path,
                    bool sync, sh_diag *d)
{
    size_t n = 0;
    for (size_t t = 0; t < g->count; t++)
        n += (g->g[t] != NULL) + (g->fisher[t] != NULL);
    eng_tensor_info *ts = calloc(n ? n : 1, sizeof *ts);
    const float **data = calloc(n ? n : 1, sizeof *data);
    int rc = ts && data ? 0 : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    size_t k = 0;
    for (int part = 0; rc == 0 && part < 2; part++) {
        for (size_t t = 0; rc == 0 && t < g->count; t++) {
            const float *v = part ? g->fisher[t] : g->g[t];
            if (!v)
                continue;
            const eng_tensor_info *src = eng_model_tensor(m, t);
            size_t len = strlen(src->name) + sizeof FISHER_PREFIX;
            ts[k] = *src;
            ts[k].dtype = ENG_DTYPE_F32;
            if (!(ts[k].name = malloc(len)))
                rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
            else
                snprintf(ts[k].name, len, "%s%s", part ? FISHER_PREFIX : "",
                         src->name);
            data[k++] = v;
        }
    }
    char loss[32], rows[32];
    snprintf(loss, sizeof loss, "%.9g", g->loss);
    snprintf(rows, sizeof rows, "%" PRId64, g->rows);
    json_t *meta = json_pack("{s:s, s:s}", "loss", loss, "rows", rows);
    // Written beside path and renamed into place whole.
    char tmp[4096];
    if (rc == 0 &&
        (size_t)snprintf(tmp, sizeof tmp, "%s.partial", path) >= sizeof tmp)
        rc = sh_diag_set(d, SH_EINVAL, "", "the output path is too long");
    eng_st_writer *w = NULL;
    if (rc == 0) {
        unlink(tmp);
        rc = eng_st_writer_create(&w, tmp, ts, n, meta, d);
    }
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = eng_st_writer_put(w, i, 0, data[i], (size_t)ts[i].numel * 4, d);
    if (rc == 0)
        rc = eng_st_writer_finish(w, sync, d);
    eng_st_writer_destroy(w);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = sh_diag_set(d, sh_errno_code(errno), "", "cannot write %s: %s",
                         path, strerror(errno));
    if (rc != 0 && w)
        unlink(tmp);
    json_decref(meta);
    for (size_t i = 0; ts && i < n; i++)
        free(ts[i].name);
    free(ts);
    free(data);
    return rc;
}

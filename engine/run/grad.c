// grad.c: gradients of the loss over a calibration set (engine.h:
// eng_gradients), summed in the file they are written to.
//
// One dataset row at a time (a sequence, or a classifier's sample):
//   forward   the row through every block, each block's input kept
//             (a sequence: blocks x T x hidden floats), the blocks lazy:
//             one weight loaded at a time;
//   loss      the row's loss and its gradient at the last block's output;
//             the head's weights loaded for it and freed;
//   backward  block by block from the last, each block's activations
//             recomputed from its kept input (activation checkpointing per
//             block), each weight loaded again when its product needs it.
// The family puts each tensor's gradient for the row as soon as it is
// known (family.h: eng_grad_sink), and it is folded at once into the sums
// in the output file: g += g_r, and for a Fisher diagonal F += g_r^2, a
// piece at a time through pread/pwrite. So memory holds at most one
// weight and one gradient of the largest tensor (the head's: its weights
// and its gradient), the kept inputs and one block's activations of one
// sequence, whatever the model's size; the sums live in the page cache
// and on disk. An embedding tied to the head gets its head part whole and
// its input part by token rows: the cross term of the square is added from
// the head part's rows, kept for the row's tokens. At the end g /= rows:
// the gradient of the mean loss.
#include "engine/run/run.h"

#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FISHER_PREFIX "fisher."
#define PIECE ((size_t)1 << 20) // floats read, added and written at a time

typedef struct grad_ctx {
    const eng_model *m;
    eng_net *net;
    long *slot;    // (tensors,) the tensor's gradient in the file, or -1
    size_t nslots; // its Fisher sums are slot + nslots
    bool fisher;
    eng_st_writer *w;
    int fd;
    int64_t row; // the row at hand, for messages
    // A tied embedding: its head part's rows of the row's tokens (sorted,
    // distinct), once the head has put it.
    size_t tied;
    int64_t *tok;
    size_t ntok;
    float *tied_rows; // (ntok, cols)
    bool tied_dense;
    float *a; // PIECE floats
} grad_ctx;

void eng_grads_deinit(eng_grads *g)
{
    free(g->g);
    free(g->fisher);
    eng_st_close(g->st);
    *g = (eng_grads){0};
}

static const char *tname(const grad_ctx *c, size_t t)
{
    return eng_model_tensor(c->m, t)->name;
}

// The code of a failed read or write (a short read sets no errno).
static int io_code(void) { return errno ? sh_errno_code(errno) : SH_EIO; }

// How fold changes the sums.
typedef enum fold_op {
    FOLD_ADD,    // += v
    FOLD_SQUARE, // += v^2, + 2 v cross where cross is given
    FOLD_SCALE,  // *= k (v unused)
} fold_op;

// The sums' floats [off, off + n) in the file, read, changed and written
// back a PIECE at a time.
static int fold(grad_ctx *c, uint64_t off, size_t n, fold_op op, const float *v,
                const float *cross, float k, sh_diag *d)
{
    for (size_t at = 0; at < n; at += PIECE) {
        size_t m = n - at < PIECE ? n - at : PIECE;
        size_t bytes = m * sizeof(float);
        off_t o = (off_t)(off + at * sizeof(float));
        errno = 0;
        if (pread(c->fd, c->a, bytes, o) != (ssize_t)bytes)
            return sh_diag_set(d, io_code(), "",
                               "cannot read the gradients' sums: %s",
                               strerror(errno ? errno : EIO));
        const float *x = v ? v + at : NULL, *y = cross ? cross + at : NULL;
        for (size_t i = 0; i < m; i++) {
            switch (op) {
            case FOLD_ADD: c->a[i] += x[i]; break;
            case FOLD_SQUARE:
                c->a[i] += x[i] * x[i] + (y ? 2.0f * x[i] * y[i] : 0.0f);
                break;
            case FOLD_SCALE: c->a[i] *= k; break;
            }
        }
        if (sh_pwrite_all(c->fd, c->a, bytes, o) != 0)
            return sh_diag_set(d, io_code(), "",
                               "cannot write the gradients' sums: %s",
                               strerror(errno ? errno : EIO));
    }
    return 0;
}

static int not_finite(grad_ctx *c, size_t t, sh_diag *d)
{
    const char *name = tname(c, t);
    return sh_diag_set(d, SH_ENUMERIC, name,
                       "the gradient of \"%s\" is not finite on calibration "
                       "row %" PRId64
                       " (the model's activations or loss overflow F32 there)",
                       name, c->row);
}

static bool sink_wants(void *ctx, size_t t)
{
    const grad_ctx *c = ctx;
    return c->slot[t] >= 0;
}

static int sink_put(void *ctx, size_t t, const float *g, sh_diag *d)
{
    grad_ctx *c = ctx;
    long s = c->slot[t];
    if (s < 0)
        return 0;
    uint64_t n = eng_model_tensor(c->m, t)->numel;
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(g[i]))
            return not_finite(c, t, d);
    int rc = fold(c, eng_st_writer_offset(c->w, (size_t)s), n, FOLD_ADD, g,
                  NULL, 0, d);
    if (rc == 0 && c->fisher)
        rc = fold(c, eng_st_writer_offset(c->w, (size_t)s + c->nslots), n,
                  FOLD_SQUARE, g, NULL, 0, d);
    if (rc == 0 && t == c->tied) { // the head part's rows, for the cross term
        int64_t cols = eng_model_tensor(c->m, t)->shape[1];
        for (size_t k = 0; k < c->ntok; k++)
            memcpy(c->tied_rows + (int64_t)k * cols, g + c->tok[k] * cols,
                   (size_t)cols * sizeof(float));
        c->tied_dense = true;
    }
    return rc;
}

static int sink_put_rows(void *ctx, size_t t, const int64_t *idx, size_t count,
                         const float *g, sh_diag *d)
{
    grad_ctx *c = ctx;
    long s = c->slot[t];
    if (s < 0)
        return 0;
    int64_t cols = eng_model_tensor(c->m, t)->shape[1];
    for (size_t i = 0; i < count * (size_t)cols; i++)
        if (!isfinite(g[i]))
            return not_finite(c, t, d);
    uint64_t g0 = eng_st_writer_offset(c->w, (size_t)s);
    uint64_t f0 =
        c->fisher ? eng_st_writer_offset(c->w, (size_t)s + c->nslots) : 0;
    int rc = 0;
    for (size_t k = 0; rc == 0 && k < count; k++) {
        uint64_t off = (uint64_t)idx[k] * (uint64_t)cols * sizeof(float);
        const float *v = g + (int64_t)k * cols, *cross = NULL;
        if (t == c->tied && c->tied_dense) {
            const int64_t *at =
                bsearch(&idx[k], c->tok, c->ntok, sizeof *c->tok, sh_cmp_i64);
            cross = at ? c->tied_rows + (at - c->tok) * cols : NULL;
        }
        rc = fold(c, g0 + off, (size_t)cols, FOLD_ADD, v, NULL, 0, d);
        if (rc == 0 && c->fisher)
            rc = fold(c, f0 + off, (size_t)cols, FOLD_SQUARE, v, cross, 0, d);
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

// The row's distinct tokens (sorted), for a tied embedding's cross term.
static void row_tokens(grad_ctx *c, const eng_dataset *row)
{
    c->ntok = 0;
    c->tied_dense = false;
    if (c->tied == SIZE_MAX)
        return;
    int64_t T = row->info.cols;
    for (int64_t t = 0; t < T; t++)
        c->tok[t] = row->ids[t];
    c->ntok = sh_sort_unique_i64(c->tok, (size_t)T);
}

// One row forward and back, its gradients folded into the sums. kept
// (blocks,) holds the blocks' inputs.
static int one_row(grad_ctx *c, const eng_dataset *ds, int64_t r,
                   eng_acts *kept, double *loss, const eng_hooks *h, sh_diag *d)
{
    eng_grad_sink sink = {c, sink_wants, sink_put, sink_put_rows};
    size_t nb = eng_net_blocks(c->net);
    eng_dataset row = row_view(ds, r);
    c->row = r;
    row_tokens(c, &row);
    eng_acts a = {0}, dy = {0};
    eng_net_block *b = NULL;
    int rc = eng_net_embed_polled(c->net, &row, &a, h, d);
    for (size_t i = 0; rc == 0 && i < nb; i++) {
        if ((rc = eng_acts_copy(&kept[i], &a, d)) == 0 &&
            (rc = eng_net_block_open_lazy(c->net, i, &b, d)) == 0)
            rc = eng_net_block_forward_polled(c->net, b, &a, h, d);
        eng_net_block_close(b);
        b = NULL;
    }
    if (rc == 0) {
        dy = a;
        dy.borrowed = false;
        if (!(dy.x = malloc((size_t)(a.rows * a.width) * sizeof *dy.x)))
            rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        else
            rc = eng_net_loss_backward(c->net, &row, &a, dy.x, &sink, loss, d);
    }
    for (size_t i = nb; rc == 0 && i-- > 0;) {
        if ((rc = eng_net_block_open_lazy(c->net, i, &b, d)) == 0)
            rc = eng_net_block_backward(c->net, b, &kept[i], &dy, &sink, h, d);
        eng_net_block_close(b);
        b = NULL;
        if (rc == 0 && eng_hooks_cancelled(h))
            rc = SH_ECANCELED;
    }
    if (rc == 0)
        rc = eng_net_embed_backward(c->net, &row, dy.x, &sink, d);
    // (A loss that overflows makes gradients that are not finite, named
    // above with their tensor; this is the rest.)
    if (rc == 0 && !isfinite(*loss))
        rc = sh_diag_set(d, SH_ENUMERIC, "calibration",
                         "the loss is not finite on calibration row %" PRId64
                         " (the model's activations overflow F32 there)",
                         r);
    eng_acts_deinit(&a);
    eng_acts_deinit(&dy);
    return rc;
}

// Lays the file out: each wanted tensor the model reads (want NULL: all of
// them), F32, in model order; then their Fisher sums. Zeroed.
static int lay_out(grad_ctx *c, const bool *want, const char *path,
                   int64_t rows, sh_diag *d)
{
    size_t count = eng_model_tensor_count(c->m), nb = eng_net_blocks(c->net);
    bool *read = calloc(count ? count : 1, sizeof *read);
    if (!read)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    for (size_t b = 0; b <= nb; b++) {
        size_t t[ENG_NET_MAX_BLOCK_TENSORS];
        size_t n =
            b < nb
                ? eng_net_block_tensors(c->net, b, t, ENG_NET_MAX_BLOCK_TENSORS)
                : eng_net_head_tensors(c->net, t, ENG_NET_MAX_HEAD_TENSORS);
        for (size_t i = 0; i < n; i++)
            read[t[i]] = true;
    }
    for (size_t t = 0; t < count; t++) {
        c->slot[t] = -1;
        if (read[t] && (!want || want[t]))
            c->slot[t] = (long)c->nslots++;
    }
    free(read);
    size_t n = c->nslots * (c->fisher ? 2 : 1);
    eng_tensor_info *ts = calloc(n ? n : 1, sizeof *ts);
    int rc = ts ? 0 : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    for (size_t t = 0; rc == 0 && t < count; t++) {
        if (c->slot[t] < 0)
            continue;
        for (int part = 0; part < (c->fisher ? 2 : 1); part++) {
            size_t k = (size_t)c->slot[t] + (part ? c->nslots : 0);
            const eng_tensor_info *src = eng_model_tensor(c->m, t);
            size_t len = strlen(src->name) + sizeof FISHER_PREFIX;
            ts[k] = *src;
            ts[k].dtype = ENG_DTYPE_F32;
            if (!(ts[k].name = malloc(len))) {
                rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
                break;
            }
            snprintf(ts[k].name, len, "%s%s", part ? FISHER_PREFIX : "",
                     src->name);
        }
    }
    char rows_s[32];
    snprintf(rows_s, sizeof rows_s, "%" PRId64, rows);
    json_t *meta = json_pack("{s:s}", "rows", rows_s);
    if (rc == 0)
        rc = eng_st_writer_create(&c->w, path, ts, n, meta, d);
    json_decref(meta);
    memset(c->a, 0, PIECE * sizeof(float));
    for (size_t i = 0; rc == 0 && i < n; i++) {
        uint64_t bytes = ts[i].numel * sizeof(float);
        for (uint64_t at = 0; rc == 0 && at < bytes; at += PIECE * 4) {
            size_t k =
                bytes - at < PIECE * 4 ? (size_t)(bytes - at) : PIECE * 4;
            rc = eng_st_writer_put(c->w, i, at, c->a, k, d);
        }
    }
    for (size_t i = 0; ts && i < n; i++)
        free(ts[i].name);
    free(ts);
    // The writer's descriptor writes only: the sums are read back too.
    if (rc == 0 && (c->fd = open(path, O_RDWR | O_CLOEXEC)) < 0)
        rc = sh_diag_set(d, sh_errno_code(errno), "", "cannot open %s: %s",
                         path, strerror(errno));
    return rc;
}

// g /= rows, in the file.
static int scale_sums(grad_ctx *c, int64_t rows, sh_diag *d)
{
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < eng_model_tensor_count(c->m); t++)
        if (c->slot[t] >= 0)
            rc = fold(c, eng_st_writer_offset(c->w, (size_t)c->slot[t]),
                      (size_t)eng_model_tensor(c->m, t)->numel, FOLD_SCALE,
                      NULL, NULL, 1.0f / (float)rows, d);
    return rc;
}

int eng_gradients(const eng_model *m, const char *calibration, int64_t max_rows,
                  const bool *want, bool fisher, const char *path,
                  const eng_hooks *h, eng_grads *out, sh_diag *d)
{
    double t0 = sh_time_mono();
    size_t count = eng_model_tensor_count(m);
    *out = (eng_grads){.count = count};
    eng_dataset ds = {0};
    eng_acts *kept = NULL;
    grad_ctx c = {.m = m, .fisher = fisher, .fd = -1};
    int rc = eng_net_open(&c.net, m, d);
    if (rc != 0)
        return rc;
    size_t nb = eng_net_blocks(c.net);
    c.tied = eng_net_tied_embedding(c.net);
    c.slot = calloc(count ? count : 1, sizeof *c.slot);
    kept = calloc(nb, sizeof *kept);
    c.a = sh_alloc_bulk(PIECE * sizeof(float));
    out->g = calloc(count ? count : 1, sizeof *out->g);
    out->fisher = calloc(count ? count : 1, sizeof *out->fisher);
    if (!c.slot || !kept || !c.a || !out->g || !out->fisher) {
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        goto out;
    }
    eng_hooks_progress(
        h, &(eng_progress){.phase = "gradients", .stage = "read", .steps = 1});
    if ((rc = eng_dataset_load(&ds, calibration, max_rows, eng_net_vocab(c.net),
                               eng_net_classes(c.net), h, d)) != 0 ||
        (rc = eng_net_check_dataset(c.net, &ds.info, d)) != 0) {
        sh_diag_prefix(d, "calibration data");
        goto out;
    }
    if (ds.rows < 1) {
        rc = sh_diag_set(d, SH_EFORMAT, "calibration",
                         "calibration data: no rows");
        goto out;
    }
    if (c.tied != SIZE_MAX) {
        int64_t T = ds.info.cols, cols = eng_model_tensor(m, c.tied)->shape[1];
        c.tok = malloc((size_t)T * sizeof *c.tok);
        c.tied_rows = malloc((size_t)(T * cols) * sizeof *c.tied_rows);
        if (!c.tok || !c.tied_rows) {
            rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
            goto out;
        }
    }
    if ((rc = lay_out(&c, want, path, ds.rows, d)) != 0)
        goto out;
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
        rc = one_row(&c, &ds, r, kept, &l, h, d);
        loss += l;
    }
    if (rc == 0)
        rc = scale_sums(&c, ds.rows, d);
    if (rc == 0)
        rc = eng_st_writer_finish(c.w, false, d);
    if (rc == 0)
        rc = eng_st_open(&out->st, path, d);
    for (size_t t = 0; rc == 0 && t < count; t++) {
        if (c.slot[t] < 0)
            continue;
        out->g[t] = eng_st_data(out->st, (size_t)c.slot[t]);
        if (fisher)
            out->fisher[t] = eng_st_data(out->st, (size_t)c.slot[t] + c.nslots);
    }
    if (rc == 0) {
        out->rows = ds.rows;
        out->loss = loss / (double)ds.rows;
        out->seconds = sh_time_mono() - t0;
    }
out:
    if (c.fd >= 0)
        close(c.fd);
    eng_st_writer_destroy(c.w); // an unfinished file is removed
    if (rc != 0 && out->st)
        unlink(path);
    for (size_t i = 0; kept && i < nb; i++)
        eng_acts_deinit(&kept[i]);
    free(kept);
    free(c.slot);
    free(c.a);
    free(c.tok);
    free(c.tied_rows);
    eng_dataset_deinit(&ds);
    eng_net_close(c.net);
    if (rc != 0)
        eng_grads_deinit(out);
    return rc;
}

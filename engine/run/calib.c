// calib.c: pruning with calibration data, block by block, as the SparseGPT
// and Wanda drivers do:
//
//   acts = the first block's inputs over the calibration set
//   for each block:
//     a statistics pass (dense, as far as the last input a target reads,
//     acts unchanged) collects each input site's statistics:
//       H = sum x x^T (SparseGPT; recon_error true)
//       s = sum x^2 per input (Wanda)
//       the first rows themselves (recon_error "sample")
//     prune its target linear layers from those statistics
//     run it with the pruned weights: the next block's inputs (not after
//     the last block: nobody reads them)
//
// Weights are rounded to their dtype before that run, so later blocks see
// what the written model computes. Targets must be linear layers of the
// model's blocks. Magnitude and random run here when calibration data is
// given and recon_error is asked for; their masks are the same as without.
// Every phase is timed into the report (eng_report_lap).
#include "engine/math/poll.h"
#include "engine/run/run.h"

#include "engine/io/dataset.h"
#include "engine/math/linalg.h"
#include "engine/methods/method.h"
#include "engine/methods/sparsegpt.h"
#include "engine/nets/net.h"

#include "common/util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SITES 8

typedef struct calib {
    const eng_model *m;
    const eng_spec *s;
    const eng_hooks *h;
    eng_out *w;
    eng_report *r;
    eng_net *net;
    const eng_plan *plan;
    bool *written;      // (ntensors,)
    eng_threshold *thr; // (ntensors,) global scope: per-tensor threshold
    size_t nt;
    bool hess_all;       // H over every row (the method's, or recon true)
    int64_t sample_rows; // recon "sample": rows of each input kept
    int64_t sampled[MAX_SITES]; // rows kept so far
    float *sample[MAX_SITES];   // (sample_rows, cols), filled when needed
    const float *sampled_x[MAX_SITES]; // the rows kept: sample, or in place
    const float *block_in;             // the block's input activations
    int64_t block_rows;                // its rows
    // The first block reads the dataset's rows themselves (an mlp's): its
    // statistics pass takes them a piece at a time from the file, into
    // `piece`, instead of through the mapping (read_rows).
    eng_dataset *ds;
    bool stream;
    float *piece;
    double read_s; // seconds spent reading pieces, summed
    // the current block's statistics, per input site
    int nsites;
    bool used[MAX_SITES];
    int64_t cols[MAX_SITES];
    float *hess[MAX_SITES];  // (cols, cols)
    float *colsq[MAX_SITES]; // (cols,)
    bool cancelled;          // a poll in on_site said stop
    int last_site;           // the last site a target of the block reads
    double stat_s;           // seconds on_site spent, summed
    // Buffers kept from one target to the next: fresh memory costs a page
    // fault a page, often more than the work done in it.
    struct buf {
        float *p;
        size_t n;
    } orig, work;
    size_t block, nblocks; // for progress
    eng_owl *owl;          // OWL's pass: outlier ratios, nothing pruned
    bool skip_idle;        // a sweep's run: idle targets left alone
    size_t work_begin;     // blocks before it have no work
    size_t work_end;       // blocks from here on have no work
    size_t first;          // the block the pass starts at
} calib;

// A target with nothing to do (sparsity 0, no grid, no zeros kept): in a
// sensitivity sweep's runs (eng_options.sensitivity_run) it is left as it is,
// copied through, with no statistics and no report row; a block with only
// such targets is run forward for the next ones' inputs, and none after
// the last block with work.
static bool idle(const calib *c, size_t ti)
{
    const eng_share *sh = &c->plan->rows[ti].share;
    return c->skip_idle && sh->target && sh->sparsity == 0 && !sh->quant.bits &&
           !c->s->preserve_zeros && c->s->scope == ENG_SCOPE_LAYER;
}

static bool works(const calib *c, size_t ti)
{
    return c->plan->rows[ti].share.target && !idle(c, ti);
}

static eng_score_kind kind_of(eng_method m) { return eng_methods[m].score; }

static bool on_site(void *ctx, int site, const float *x, int64_t rows,
                    int64_t cols)
{
    calib *c = ctx;
    if (c->cancelled)
        return false;
    if (site >= c->nsites || !c->used[site])
        return site < c->last_site;
    c->cols[site] = cols;
    double t0 = sh_time_mono();
    // The forward pass polls too; this is the long part of a site.
    if (c->hess[site] &&
        eng_syrk_acc_polled(c->hess[site], x, rows, cols, c->h) != 0)
        c->cancelled = true;
    if (c->sample[site]) { // the first rows, for the estimate
        // The block's input stays as it is until the block runs pruned,
        // after the estimate: read in place (its pieces, read from the
        // file, are checked rows of it). The other sites' buffers are the
        // pass's scratch: their first rows are copied, piece by piece.
        int64_t have = c->sampled[site], k = c->sample_rows - have;
        k = rows < k ? rows : k;
        if (x == c->block_in || x == c->piece) {
            c->sampled_x[site] = c->block_in;
            c->sampled[site] =
                c->block_rows < c->sample_rows ? c->block_rows : c->sample_rows;
        } else if (k > 0) {
            memcpy(c->sample[site] + have * cols, x,
                   (size_t)(k * cols) * sizeof(float));
            c->sampled_x[site] = c->sample[site];
            c->sampled[site] = have + k;
        }
    }
    if (c->colsq[site] && !c->cancelled)
        eng_colsq_acc(c->colsq[site], x, rows, cols);
    c->stat_s += sh_time_mono() - t0;
    return !c->cancelled && site < c->last_site;
}

// b's buffer, grown to hold n floats; NULL when out of memory.
static float *scratch(struct buf *b, size_t n)
{
    if (n > b->n) {
        free(b->p);
        b->n = 0;
        if (!(b->p = sh_alloc_bulk(n * sizeof *b->p)))
            return NULL;
        b->n = n;
    }
    return b->p;
}

static void stats_free(calib *c)
{
    for (int i = 0; i < MAX_SITES; i++) {
        free(c->hess[i]);
        free(c->colsq[i]);
        free(c->sample[i]);
        c->hess[i] = c->colsq[i] = c->sample[i] = NULL;
        c->sampled_x[i] = NULL;
        c->sampled[i] = 0;
        c->used[i] = false;
    }
}

// Statistics for the sites the block's targets read.
static int stats_alloc(calib *c, size_t block, sh_diag *d)
{
    const eng_net_linear *lin;
    size_t n = eng_net_linears(c->net, block, &lin);
    c->nsites = eng_net_sites(c->net, block);
    c->last_site = -1;
    for (size_t i = 0; i < n; i++) {
        int s = lin[i].site;
        if (!works(c, lin[i].tensor) || c->used[s])
            continue;
        c->used[s] = true;
        c->last_site = s > c->last_site ? s : c->last_site;
        size_t cols = (size_t)lin[i].cols;
        // H: the solver's statistic, or the reconstruction errors' (on
        // every row); or the first rows themselves for the estimate.
        bool colsq = eng_methods[c->s->method].stats & ENG_STAT_COLSQ || c->owl;
        bool hess = c->hess_all, sample = c->sample_rows > 0;
        if (hess)
            c->hess[s] = sh_calloc_bulk(cols * cols * sizeof(float));
        if (colsq)
            c->colsq[s] = calloc(cols, sizeof(float));
        if (sample)
            c->sample[s] =
                sh_alloc_bulk((size_t)c->sample_rows * cols * sizeof(float));
        if ((hess && !c->hess[s]) || (colsq && !c->colsq[s]) ||
            (sample && !c->sample[s]))
            return sh_diag_set(d, SH_ENOMEM, "",
                               "out of memory for %zux%zu calibration "
                               "statistics",
                               cols, cols);
    }
    return 0;
}

static int nonfinite(sh_diag *d, const char *name)
{
    return sh_diag_set(d, SH_ENUMERIC, name,
                       "tensor \"%s\": NaN or infinite values in the "
                       "weights or the calibration statistics",
                       name);
}

// Global scope: the targets no override names share one threshold.
static bool pooled(const calib *c, size_t i) { return c->plan->rows[i].pooled; }

// Builds the mask of one target from its F32 weights.
static int mask_for(calib *c, size_t ti, const float *w, int64_t rows,
                    int64_t cols, const float *scale, uint64_t *mask,
                    sh_diag *d)
{
    const eng_tensor_info *t = eng_model_tensor(c->m, ti);
    const eng_plan_row *row = &c->plan->rows[ti];
    const eng_share *p = &row->share;
    eng_scorer sc;
    eng_scorer_init(&sc, kind_of(c->s->method), ENG_DTYPE_F32, w,
                    (uint64_t)rows, (uint64_t)cols, c->s->seed, t->name, scale);
    eng_score_inputs_attach(c->plan->inputs, ti, &sc);
    bool bad = false;
    switch (p->pattern.kind) {
    case ENG_PATTERN_NM:
        bad = eng_mask_nm(mask, &sc, p->pattern.n, p->pattern.m);
        break;
    case ENG_PATTERN_ROWS: {
        double *score = malloc((size_t)rows * sizeof *score);
        uint64_t *idx = malloc((size_t)rows * sizeof *idx);
        if (!score || !idx) {
            free(score);
            free(idx);
            return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        }
        bad = eng_mask_rows(mask, &sc, row->k, c->s->norm, score, idx);
        free(score);
        free(idx);
        break;
    }
    default:
        if (eng_methods[c->s->method].compete == ENG_COMPETE_ROW) {
            // The comparison group is the output row (Wanda).
            uint32_t *work = malloc(2 * (size_t)cols * sizeof *work);
            if (!work)
                return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
            int rc = eng_mask_per_row(mask, &sc, row->k, work);
            free(work);
            if (rc == SH_ENOMEM)
                return sh_diag_set(d, rc, "", "out of memory");
            bad = rc != 0;
        } else if (c->thr && pooled(c, ti)) {
            eng_threshold t2 = c->thr[ti];
            eng_mask_threshold(mask, &sc, &t2);
        } else {
            eng_threshold t2;
            int rc = eng_select_one(&sc, row->want, &t2);
            if (rc == SH_ENUMERIC)
                bad = true;
            else if (rc != 0)
                return sh_diag_set(d, rc, "", "out of memory");
            else
                eng_mask_threshold(mask, &sc, &t2);
        }
    }
    return bad ? nonfinite(d, t->name) : 0;
}

// The block at hand and what it is doing (its stage: a phase's name).
static void progress(calib *c, eng_phase stage, const char *tensor)
{
    size_t b = c->block, nb = c->nblocks;
    eng_progress p = {.phase = "pruning",
                      .stage = eng_phase_name(stage),
                      .tensor = tensor,
                      .step = b + 1,
                      .steps = nb,
                      .fraction = ENG_FRAC_BLOCKS +
                                  ENG_FRAC_BLOCKS_SPAN * (double)b / nb};
    eng_hooks_progress(c->h, &p);
}

// The estimate of recon "sample": ||D Xs^T||^2 / ||W Xs^T||^2 over the
// site's first rows Xs and at most RECON_OUTPUTS output rows spread evenly
// (each row's error is its own: the subset samples their sum), D = W - W'.
#define RECON_OUTPUTS 256

static int64_t sample_outputs(int64_t rows)
{
    return rows < RECON_OUTPUTS ? rows : RECON_OUTPUTS;
}

// The i-th of k sampled rows of `rows`.
static int64_t sample_row(int64_t i, int64_t k, int64_t rows)
{
    return i * rows / k;
}

// orig: the sampled rows of W before pruning (k, cols); w the pruned W;
// work: room for (k, cols + sampled rows).
static int recon_sample(calib *c, int site, const float *orig, const float *w,
                        int64_t rows, int64_t cols, float *work, double *num,
                        double *den)
{
    int64_t k = sample_outputs(rows), s = c->sampled[site];
    const float *xs = c->sampled_x[site];
    float *sub = work, *y = work + k * cols; // (k, cols), (k, s)
    for (int pass = 0; pass < 2; pass++) {   // D's rows, then W's
        for (int64_t i = 0; i < k; i++) {
            const float *wr = w + sample_row(i, k, rows) * cols;
            for (int64_t j = 0; j < cols; j++)
                sub[i * cols + j] = orig[i * cols + j] - (pass ? 0.0f : wr[j]);
        }
        eng_gemm(false, true, k, s, cols, 1.0f, sub, cols, xs, cols, 0.0f, y,
                 s);
        double acc = 0;
        for (int64_t i = 0; i < k * s; i++)
            acc += (double)y[i] * y[i];
        *(pass ? den : num) = acc;
        if (eng_hooks_cancelled(c->h))
            return SH_ECANCELED;
    }
    return 0;
}

// Rows on which SparseGPT's errors are checked against D_r H D_r^T.
#define OBS_CHECK_ROWS 16

// tr(D H D^T), D = orig - w, from SparseGPT's errors (sparsegpt.h,
// obs_err): their sum is tr(D H' D^T) with H' = H + add I over the live
// inputs (H_jj > 0; the dead ones have no weight after and no H before),
// exactly in exact arithmetic. The sweep rounds in float, and its sum
// drifts as H + add I grows ill-conditioned (a small dampening, inputs of
// low rank), where the trace does not: on OBS_CHECK_ROWS rows spread
// evenly both are computed, and unless they agree within 1e-3 the result
// is false and the caller takes the trace. work: room for 2 x
// OBS_CHECK_ROWS x cols (rows > 2 x OBS_CHECK_ROWS).
// ||orig_r - w_r||^2 over the live inputs (H_jj > 0), in double.
static double live_sq(const float *orig, const float *w, const float *h,
                      int64_t cols)
{
    double sq = 0;
    for (int64_t j = 0; j < cols; j++) {
        double e = (double)orig[j] - w[j];
        sq += h[j * cols + j] > 0 ? e * e : 0.0;
    }
    return sq;
}

static bool obs_num(const double *obs_err, float add, const float *orig,
                    const float *w, const float *h, int64_t rows, int64_t cols,
                    float *work, double *num)
{
    int64_t k = OBS_CHECK_ROWS;
    float *ds = work, *p = work + k * cols; // D's sampled rows, then D_s H
    for (int64_t i = 0; i < k; i++) {
        int64_t r = sample_row(i, k, rows);
        for (int64_t j = 0; j < cols; j++)
            ds[i * cols + j] = orig[r * cols + j] - w[r * cols + j];
    }
    eng_gemm(false, false, k, cols, cols, 1.0f, ds, cols, h, cols, 0.0f, p,
             cols);
    double check = 0, trace = 0;
    for (int64_t i = 0; i < k; i++) {
        int64_t r = sample_row(i, k, rows);
        check +=
            obs_err[r] - add * live_sq(orig + r * cols, w + r * cols, h, cols);
        for (int64_t j = 0; j < cols; j++)
            trace += (double)p[i * cols + j] * ds[i * cols + j];
    }
    if (!(fabs(check - trace) <= 1e-3 * fabs(trace)))
        return false;
    double sum = 0;
    for (int64_t r = 0; r < rows; r++)
        sum +=
            obs_err[r] - add * live_sq(orig + r * cols, w + r * cols, h, cols);
    *num = sum;
    return true;
}

// Prunes one target linear of the loaded block and writes it.
static int prune_linear(calib *c, size_t ti, float *w, int64_t rows,
                        int64_t cols, int site, sh_diag *d)
{
    const eng_tensor_info *t = eng_model_tensor(c->m, ti);
    const eng_plan_row *row = &c->plan->rows[ti];
    const eng_share *p = &row->share;
    eng_layer_report *l = eng_report_add_layer(c->r, t, p);
    const eng_method_def *md = &eng_methods[c->s->method];
    bool recon = c->s->recon != ENG_RECON_OFF;
    size_t n = (size_t)(rows * cols), cn = (size_t)(cols * cols);
    // The weights before (for the reconstruction error); room for the
    // solver's copy of H, the dtype round trip and the traces' pieces.
    // The estimate keeps only the rows it samples.
    const float *h = c->hess[site];
    int64_t keep = h ? rows : sample_outputs(rows);
    float *orig = recon ? scratch(&c->orig, (size_t)(keep * cols)) : NULL;
    const eng_quant *qt = &p->quant;
    bool obs = md->solve || (qt->bits && !qt->rtn);
    size_t wn = obs && cn > n ? cn : n;
    size_t est = (size_t)(keep * (cols + c->sampled[site]));
    if (recon && !h && est > wn) // the estimate's rows and their products
        wn = est;
    float *work = scratch(&c->work, wn);
    float *scale = NULL, *grid = NULL; // grid: (scale, zero) per row
    uint64_t *mask = NULL;
    // The OBS sweep's own errors give recon's numerator (F32: no rounding
    // to the dtype after it), the trace only its denominator.
    bool from_obs = recon && h && obs && t->dtype == ENG_DTYPE_F32 &&
                    rows > 2 * OBS_CHECK_ROWS;
    double *obs_err = from_obs ? malloc((size_t)rows * sizeof *obs_err) : NULL;
    float obs_add = 0;
    int rc = 0;
    if (!l || (recon && !orig) || !work || (from_obs && !obs_err)) {
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        goto out;
    }
    progress(c, ENG_PHASE_SOLVE, t->name);
    double t0 = sh_time_mono();
    if (recon && h && (rc = eng_copy_polled(orig, w, n, c->h)) != 0)
        goto out;
    for (int64_t i = 0; recon && !h && i < keep; i++)
        memcpy(orig + i * cols, w + sample_row(i, keep, rows) * cols,
               (size_t)cols * sizeof *orig);
    eng_grid g = {.bits = qt->bits,
                  .group = qt->group_size,
                  .symmetric = qt->symmetric,
                  .dtype = t->dtype};
    size_t gn = (size_t)(rows * eng_grid_groups(&g, cols));
    if (qt->bits && (!(grid = malloc(2 * gn * sizeof *grid)))) {
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        goto out;
    }
    eng_sgpt_opts so = {
        .sparsity = p->sparsity,
        .n = p->pattern.kind == ENG_PATTERN_NM ? p->pattern.n : 0,
        .m = p->pattern.kind == ENG_PATTERN_NM ? p->pattern.m : 0,
        .blocksize = c->s->sgpt_blocksize,
        .damp = c->s->sgpt_damp,
        .grid = qt->bits ? &g : NULL,
        .scale = grid,
        .zero = grid ? grid + gn : NULL,
        .preserve_zeros = c->s->preserve_zeros,
        .obs_err = obs_err,
        .obs_add = &obs_add};
    if (!md->solve) { // the method's mask, chosen first
        if (md->scale) {
            if (!(scale = malloc((size_t)cols * sizeof *scale))) {
                rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
                goto out;
            }
            md->scale(scale, c->colsq[site], cols);
        }
        if (!(mask = sh_alloc_bulk(eng_mask_words(n) * sizeof *mask))) {
            rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
            goto out;
        }
        if ((rc = mask_for(c, ti, w, rows, cols, scale, mask, d)) != 0)
            goto out;
        for (size_t i = 0; c->s->preserve_zeros && i < n; i++)
            mask[i >> 6] |= (uint64_t)(w[i] == 0.0f) << (i & 63);
        so.fixed = mask;
    }
    if (obs) {
        // The OBS update (SparseGPT, or GPTQ keeping the mask); the solver
        // consumes its copy of H.
        if ((rc = eng_copy_polled(work, h, cn, c->h)) != 0)
            goto out;
        eng_solver_fn solve = md->solve ? md->solve : eng_sparsegpt;
        rc = solve(w, work, rows, cols, &so, &l->damping, c->h, d);
        if (rc != 0 && rc != SH_ECANCELED) { // a cancel sets no diag
            sh_diag_prefix(d, "tensor \"%s\"", t->name);
            if (!d->field[0])
                snprintf(d->field, sizeof d->field, "%s", t->name);
        }
    } else if (qt->bits) { // round to nearest, grids before the mask
        eng_rtn(w, rows, cols, &g, mask, so.scale, so.zero);
    } else {
        eng_mask_zero(w, mask, n);
    }
    if (rc != 0)
        goto out;
    // What the written model holds: rounded to the tensor's dtype.
    if (t->dtype != ENG_DTYPE_F32) {
        eng_convert_from_f32(work, w, t->dtype, n);
        eng_convert_to_f32(w, work, t->dtype, n);
    }
    t0 = eng_report_lap(c->r, l, ENG_PHASE_SOLVE, t0);
    if (recon) {
        progress(c, ENG_PHASE_RECON, t->name);
        // ||W X - W' X||^2 / ||W X||^2 = tr(D H D^T) / tr(W H W^T), D =
        // W - W'; or the estimate on the first rows.
        double den = 0, num = 0;
        if (!h) {
            rc = recon_sample(c, site, orig, w, rows, cols, work, &num, &den);
        } else if ((rc = eng_quad_trace_polled(&den, orig, h, rows, cols, work,
                                               c->h)) == 0 &&
                   !(obs_err && obs_num(obs_err, obs_add, orig, w, h, rows,
                                        cols, work, &num))) {
            for (size_t i = 0; i < n; i++)
                orig[i] -= w[i];
            rc = eng_quad_trace_polled(&num, orig, h, rows, cols, work, c->h);
        }
        if (rc != 0)
            goto out;
        l->recon_error = den > 0 ? num / den : 0.0;
        t0 = eng_report_lap(c->r, l, ENG_PHASE_RECON, t0);
    }
    progress(c, ENG_PHASE_WRITE, t->name);
    eng_qtensor q = {.bits = qt->bits,
                     .group = qt->group_size,
                     .symmetric = qt->symmetric,
                     .rows = rows,
                     .cols = cols,
                     .groups = eng_grid_groups(&g, cols),
                     .scale = so.scale,
                     .zero = so.zero};
    rc = eng_write_f32(c->w, ti, w, t->dtype, n, qt->bits ? &q : NULL, l,
                       row->want, d);
    eng_report_lap(c->r, l, ENG_PHASE_WRITE, t0);
    if (rc == 0) {
        c->written[ti] = true;
        c->r->target_tensors++;
        c->r->target_params += n;
        c->r->target_zeros += l->zeros;
        c->r->model_zeros += l->zeros;
    }
out:

    free(scale);
    free(grid);
    free(mask);
    free(obs_err);
    return rc;
}

static int read_scorer(calib *c, size_t i, unsigned char *buf, eng_scorer *sc,
                       sh_diag *d)
{
    const eng_tensor_info *t = eng_model_tensor(c->m, i);
    size_t file, idx;
    eng_model_tensor_loc(c->m, i, &file, &idx);
    int rc = eng_st_read(eng_model_file_at(c->m, file)->st, idx, buf, d);
    uint64_t rows, cols;
    eng_tensor_rows_cols(t, &rows, &cols);
    eng_scorer_init(sc, kind_of(c->s->method), t->dtype, buf, rows, cols,
                    c->s->seed, t->name, NULL);
    eng_score_inputs_attach(c->plan->inputs, i, sc);
    return rc;
}

// Splits the plan's pool threshold per tensor: each tensor's keys equal
// to it take ties in file order (the blocks come in another order).
static int global_thresholds(calib *c, sh_diag *d)
{
    uint64_t largest = 0;
    for (size_t i = 0; i < c->nt; i++) {
        const eng_tensor_info *t = eng_model_tensor(c->m, i);
        if (pooled(c, i) && t->end - t->begin > largest)
            largest = t->end - t->begin;
    }
    c->thr = calloc(c->nt, sizeof *c->thr);
    unsigned char *buf = malloc(largest ? largest : 1);
    if (!c->thr || !buf) {
        free(buf);
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    }
    const eng_threshold pool = c->plan->pool_thr;
    uint64_t ties = pool.ties;
    int rc = 0;
    eng_scorer sc;
    for (size_t i = 0; rc == 0 && i < c->nt; i++) {
        if (!pooled(c, i))
            continue;
        if (eng_hooks_cancelled(c->h))
            rc = SH_ECANCELED;
        if (rc || (rc = read_scorer(c, i, buf, &sc, d)))
            continue;
        uint32_t keys[4096];
        uint64_t eq = 0, numel = sc.rows * sc.cols;
        for (uint64_t at = 0; at < numel; at += 4096) {
            size_t m = numel - at < 4096 ? (size_t)(numel - at) : 4096;
            eng_scorer_keys(&sc, keys, at, m);
            for (size_t k = 0; k < m; k++)
                eq += keys[k] == pool.key;
        }
        c->thr[i] = (eng_threshold){pool.key, eq < ties ? eq : ties};
        ties -= c->thr[i].ties;
    }
    free(buf);
    return rc;
}

// Every target must be a linear layer of a block.
static int check_targets(calib *c, sh_diag *d)
{
    for (size_t i = 0; i < c->nt; i++) {
        size_t b, l;
        if (c->plan->rows[i].share.target &&
            !eng_net_find_linear(c->net, i, &b, &l))
            return sh_diag_set(
                d, SH_ESPEC, "targets",
                "with calibration data, the targets must be linear layers "
                "of the model's blocks; \"%s\" is not one (leave it out "
                "with ignore)",
                eng_model_tensor(c->m, i)->name);
    }
    return 0;
}

// OWL's layer outlier distribution for block b: the share of its targets'
// Wanda scores |W_ij| ||x_j|| (|W_ij| without calibration) above m times
// their mean, over all the block's targets together.
static void owl_block(calib *c, size_t b, eng_net_block *blk)
{
    const eng_net_linear *lin;
    size_t nl = eng_net_linears(c->net, b, &lin);
    double sum = 0;
    uint64_t n = 0, above = 0;
    for (int pass = 0; pass < 2; pass++) {
        double bar = pass ? c->owl->m * sum / (double)(n ? n : 1) : 0;
        for (size_t i = 0; i < nl; i++) {
            if (!c->plan->rows[lin[i].tensor].share.target)
                continue;
            const float *w = eng_net_block_weight(blk, i);
            const float *sq = c->colsq[lin[i].site];
            int64_t rows = lin[i].rows, cols = lin[i].cols;
            for (int64_t j = 0; j < cols; j++) {
                double norm = sq ? sqrt((double)sq[j]) : 1.0;
                for (int64_t r = 0; r < rows; r++) {
                    double sc = fabs((double)w[r * cols + j]) * norm;
                    if (pass)
                        above += sc > bar;
                    else
                        sum += sc;
                }
            }
            if (!pass)
                n += (uint64_t)(rows * cols);
        }
    }
    c->owl->ratio[b] = n ? (double)above / (double)n : 0.0;
    c->owl->params[b] = n;
}

// Values a piece of the streamed first block holds: a few MiB, read while
// in cache.
#define STREAM_VALUES ((int64_t)1 << 20)

// The first block's statistics pass when its input is the dataset's rows
// (c->stream): a piece of rows at a time, read from the file into c->piece
// and checked, then passed as the block's input. The rows are independent
// samples and every statistic sums over rows in order, so the statistics
// are those of one pass over them all.
static int stats_streamed(calib *c, eng_net_block *blk, const eng_acts *acts,
                          sh_diag *d)
{
    int64_t rows = acts->rows, cols = acts->width, per = STREAM_VALUES / cols;
    per = per < 1 ? 1 : per > rows ? rows : per;
    if (!c->piece &&
        !(c->piece = sh_alloc_bulk((size_t)(per * cols) * sizeof *c->piece)))
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    int rc = 0;
    for (int64_t r0 = 0; rc == 0 && r0 < rows; r0 += per) {
        int64_t n = rows - r0 < per ? rows - r0 : per;
        double t0 = sh_time_mono();
        if ((rc = eng_dataset_read_rows(c->ds, r0, n, c->piece, d)) != 0) {
            sh_diag_prefix(d, "calibration data");
            break;
        }
        c->read_s += sh_time_mono() - t0;
        eng_acts a = {
            .x = c->piece, .rows = n, .width = cols, .borrowed = true};
        rc = eng_net_block_stats_polled(c->net, blk, &a, on_site, c, c->h, d);
        if (rc == 0 && (c->cancelled || eng_hooks_cancelled(c->h)))
            rc = SH_ECANCELED;
    }
    if (rc == 0)
        c->ds->unchecked = false; // every row read and checked
    return rc;
}

static int run_blocks(calib *c, eng_acts *acts, sh_diag *d)
{
    size_t nb = c->nblocks = eng_net_blocks(c->net);
    int rc = 0;
    // Past the last block with work there is nothing to read or run.
    for (size_t b = c->first; rc == 0 && b < nb && b < c->work_end; b++) {
        if (eng_hooks_cancelled(c->h)) {
            rc = SH_ECANCELED;
            break;
        }
        c->block = b;
        progress(c, ENG_PHASE_READ, NULL);
        double t0 = sh_time_mono();
        eng_net_block *blk = NULL;
        if ((rc = eng_net_block_open(c->net, b, &blk, d)) != 0)
            break;
        t0 = eng_report_lap(c->r, NULL, ENG_PHASE_READ, t0);
        progress(c, ENG_PHASE_FORWARD, NULL);
        if (eng_hooks_cancelled(c->h))
            rc = SH_ECANCELED; // blk freed below
        double stat0 = c->stat_s, read0 = c->read_s;
        c->block_in = acts->x;
        c->block_rows = acts->rows;
        // The dense pass, as far as the block's targets read.
        if (rc == 0 && (rc = stats_alloc(c, b, d)) == 0 && c->last_site >= 0)
            rc = b == 0 && c->stream
                     ? stats_streamed(c, blk, acts, d)
                     : eng_net_block_stats_polled(c->net, blk, acts, on_site, c,
                                                  c->h, d);
        if (rc == 0 && c->cancelled)
            rc = SH_ECANCELED;
        for (int s = 0; rc == 0 && s < c->nsites; s++)
            if (c->hess[s])
                eng_sym_fill(c->hess[s], c->cols[s]);
        // The statistics ran inside the forward pass.
        t0 = eng_report_lap(c->r, NULL, ENG_PHASE_FORWARD, t0);
        c->r->timings[ENG_PHASE_FORWARD] -=
            c->stat_s - stat0 + c->read_s - read0;
        c->r->timings[ENG_PHASE_STATISTICS] += c->stat_s - stat0;
        c->r->timings[ENG_PHASE_READ] += c->read_s - read0;
        const eng_net_linear *lin;
        size_t nl = eng_net_linears(c->net, b, &lin);
        if (rc == 0 && c->owl)
            owl_block(c, b, blk);
        for (size_t i = 0; rc == 0 && !c->owl && i < nl; i++) {
            if (!works(c, lin[i].tensor))
                continue;
            rc = prune_linear(c, lin[i].tensor, eng_net_block_weight(blk, i),
                              lin[i].rows, lin[i].cols, lin[i].site, d);
        }
        // The pruned block makes the next block's inputs; after the last
        // one with work nobody reads them (evaluation reads the written
        // model).
        if (rc == 0 && b + 1 < c->work_end) {
            progress(c, ENG_PHASE_FORWARD, NULL);
            t0 = sh_time_mono();
            if (b == 0 && c->stream) { // its rows, all read now: map them
                eng_st_populate(c->ds->st, c->ds->tensor);
                t0 = eng_report_lap(c->r, NULL, ENG_PHASE_READ, t0);
            }
            rc = eng_net_block_forward_polled(c->net, blk, acts, c->h, d);
            eng_report_lap(c->r, NULL, ENG_PHASE_FORWARD, t0);
        }
        stats_free(c);
        eng_net_block_close(blk);
    }
    return rc;
}

// The sequential driver: prunes into w, or (owl set) only measures OWL's
// outlier ratios on the dense model, w NULL.
static int calibrated(const eng_plan *plan, const eng_options *o,
                      const eng_hooks *h, eng_out *w, eng_report *r,
                      eng_owl *owl, sh_diag *d)
{
    const eng_model *m = plan->m;
    const eng_spec *s = plan->s;
    calib c = {.m = m,
               .s = s,
               .plan = plan,
               .h = h,
               .w = w,
               .r = r,
               .owl = owl,
               .skip_idle = o->sensitivity_run && !owl};
    c.nt = eng_model_tensor_count(m);
    eng_dataset ds = {0};
    eng_acts acts = {0};
    int rc = 0;
    if (!o->calibration_path)
        return sh_diag_set(d, SH_ESPEC, "calibration",
                           "method %s needs calibration data",
                           eng_methods[s->method].name);
    c.written = calloc(c.nt ? c.nt : 1, sizeof *c.written);
    if (!c.written) {
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        goto out;
    }
    if ((rc = eng_net_open(&c.net, m, d)) != 0 ||
        (rc = check_targets(&c, d)) != 0)
        goto out;
    c.work_begin = eng_net_blocks(c.net);
    for (size_t b = 0; b < eng_net_blocks(c.net); b++) {
        const eng_net_linear *lin;
        size_t nl = eng_net_linears(c.net, b, &lin);
        for (size_t i = 0; i < nl; i++) {
            if (!works(&c, lin[i].tensor))
                continue;
            c.work_end = b + 1;
            c.work_begin = b < c.work_begin ? b : c.work_begin;
        }
    }
    if (owl)
        c.work_end = eng_net_blocks(c.net);
    eng_hooks_progress(
        h,
        &(eng_progress){.phase = "calibrating", .stage = "read", .steps = 1});
    double t0 = sh_time_mono();
    if ((rc = eng_dataset_load_lazy(&ds, o->calibration_path, s->calib_samples,
                                    eng_net_vocab(c.net),
                                    eng_net_classes(c.net), h, d)) != 0 ||
        (rc = eng_net_check_dataset(c.net, &ds.info, d)) != 0) {
        sh_diag_prefix(d, "calibration data");
        goto out;
    }
    t0 = eng_report_lap(r, NULL, ENG_PHASE_READ, t0);
    r->calib_samples = ds.rows;
    // H over every row for the method's own use, or recon true; the
    // estimate (recon "sample") without a Hessian keeps the first rows.
    c.hess_all = eng_methods[s->method].stats & ENG_STAT_HESSIAN ||
                 s->recon == ENG_RECON_FULL;
    for (size_t i = 0; i < c.nt; i++) { // GPTQ's H
        const eng_share *sh = &plan->rows[i].share;
        c.hess_all |= sh->target && sh->quant.bits && !sh->quant.rtn;
    }
    c.hess_all &= !owl; // OWL reads column norms only
    c.sample_rows = !c.hess_all && !owl && s->recon == ENG_RECON_SAMPLE
                        ? ENG_RECON_SAMPLE_ROWS
                        : 0;
    r->calib_tokens =
        ds.info.kind == ENG_DATASET_TOKENS ? ds.rows * ds.info.cols : ds.rows;
    r->recon_rows = s->recon == ENG_RECON_OFF ? 0
                    : c.hess_all || r->calib_tokens < c.sample_rows
                        ? r->calib_tokens
                        : c.sample_rows;
    if (!owl && s->scope == ENG_SCOPE_GLOBAL &&
        (rc = global_thresholds(&c, d)) != 0)
        goto out;
    t0 = eng_report_lap(r, NULL, ENG_PHASE_SOLVE, t0);
    // A sweep's run whose earlier blocks have no work starts where the
    // sweep's dense pass is (the same activations the blocks would make).
    const struct eng_calib_prefix *cp = o->calib_prefix;
    if (c.skip_idle && cp && cp->rows == ds.rows && cp->block <= c.work_begin)
        c.first = cp->block;
    if ((rc = c.first ? eng_acts_copy_polled(&acts, &cp->at, h, d)
                      : eng_net_embed_polled(c.net, &ds, &acts, h, d)) != 0)
        goto out;
    t0 = eng_report_lap(r, NULL, ENG_PHASE_FORWARD, t0);
    // Where the first block with work reads the dataset's rows as they
    // lie, its statistics pass reads them from the file in pieces and
    // checks them; else they are checked here, all of them. Pieces of
    // rows are pieces of the input only where rows are independent
    // samples: feature rows, not token sequences.
    c.ds = &ds;
    c.stream = ds.unchecked && ds.info.kind == ENG_DATASET_INPUTS &&
               acts.borrowed && acts.x == ds.inputs && c.first == 0 &&
               c.work_begin == 0 && !c.hess_all && !o->calibration_whole;
    if (!c.stream && (rc = eng_dataset_check_rows(&ds, h, d)) != 0) {
        sh_diag_prefix(d, "calibration data");
        goto out;
    }
    eng_report_lap(r, NULL, ENG_PHASE_READ, t0);
    if ((rc = run_blocks(&c, &acts, d)) != 0 || owl)
        goto out;
    t0 = sh_time_mono();
    // Everything not pruned is copied through, byte for byte.
    for (size_t i = 0; rc == 0 && i < c.nt; i++) {
        if (c.written[i])
            continue;
        uint64_t zeros = 0;
        rc = eng_tensor_zeros(m, i, &zeros, d);
        r->model_zeros += zeros;
        if (rc == 0)
            rc = eng_out_copy(w, i, d);
    }
    eng_report_lap(r, NULL, ENG_PHASE_WRITE, t0);
    for (size_t i = 0; i < c.nt; i++)
        r->model_params += eng_model_tensor(m, i)->numel;
out:
    stats_free(&c);
    eng_acts_deinit(&acts);
    eng_dataset_deinit(&ds);
    eng_net_close(c.net);
    free(c.written);
    free(c.thr);
    free(c.orig.p);
    free(c.work.p);
    free(c.piece);
    return rc;
}

int eng_prune_calibrated(const eng_plan *plan, const eng_options *o,
                         const eng_hooks *h, eng_out *w, eng_report *r,
                         sh_diag *d)
{
    return calibrated(plan, o, h, w, r, NULL, d);
}

int eng_owl_ratios(const eng_plan *plan, const eng_options *o,
                   const eng_hooks *h, eng_report *r, eng_owl *owl, sh_diag *d)
{
    if (o->calibration_path)
        return calibrated(plan, o, h, NULL, r, owl, d);
    // Without calibration (magnitude, random): |W| block by block.
    calib c = {.m = plan->m, .s = plan->s, .plan = plan, .h = h, .owl = owl};
    int rc = eng_net_open(&c.net, plan->m, d);
    size_t nb = rc == 0 ? eng_net_blocks(c.net) : 0;
    for (size_t b = 0; rc == 0 && b < nb; b++) {
        eng_net_block *blk = NULL;
        if ((rc = eng_net_block_open(c.net, b, &blk, d)) != 0)
            break;
        owl_block(&c, b, blk);
        eng_net_block_close(blk);
        if (eng_hooks_cancelled(h))
            rc = SH_ECANCELED;
    }
    eng_net_close(c.net);
    return rc;
}

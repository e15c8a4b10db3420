// prune.c: eng_prune, and the streaming pipeline for criteria that need no
// calibration (magnitude, random): tensor after tensor, read into a reused
// buffer, pruned, written; the next tensor is read and its threshold found
// on a helper thread meanwhile (reader.c).
#include "common/par.h"
#include "engine/math/poll.h"
#include "engine/run/reader.h"
#include "engine/run/run.h"

#include "engine/io/dataset.h"
#include "engine/math/linalg.h"
#include "engine/methods/quant.h"
#include "engine/nets/net.h"
#include "engine/select/kernels.h"

#include "common/util.h"
#include "common/version.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *eng_version(void) { return SH_VERSION; }

void eng_set_threads(int n)
{
    eng_blas_threads(n);
    sh_par_threads(n);
}

// Set beside OPENBLAS_CORETYPE when eng_blas_fix_core chose it.
#define CORE_MARK "SHEARS_BLAS_CORE_CHOSEN"

void eng_blas_fix_core(char **argv)
{
    if (getenv("OPENBLAS_CORETYPE"))
        return; // the user's choice, or ours on the second run
    // SHEARS_BLAS_CORE_SEEN stands in for OpenBLAS's choice: the tests
    // take the re-exec path with it on CPUs where OpenBLAS chooses well.
    const char *seen = getenv("SHEARS_BLAS_CORE_SEEN");
    const char *better =
        eng_blas_better_core(seen ? seen : eng_blas_core(), eng_cpu_features());
    if (!better)
        return;
    setenv("OPENBLAS_CORETYPE", better, 1);
    setenv(CORE_MARK, better, 1);
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_CORETYPE"); // no exec: the generic kernels it is
    unsetenv(CORE_MARK);
}

void eng_blas_info_get(eng_blas_info *out, bool measure)
{
    unsigned f = eng_cpu_features();
    const char *set = getenv("OPENBLAS_CORETYPE"), *mark = getenv(CORE_MARK);
    *out = (eng_blas_info){.core = eng_blas_core(),
                           .source = !set ? "detected"
                                     : mark && strcmp(mark, set) == 0
                                         ? "chosen"
                                         : "OPENBLAS_CORETYPE",
                           .avx2 = f & ENG_CPU_AVX2,
                           .avx512 = f & ENG_CPU_AVX512,
                           .avx512_bf16 = f & ENG_CPU_AVX512_BF16};
    if (!measure)
        return;
    enum { N = 1024 };
    float *a = malloc((size_t)N * N * sizeof *a);
    float *c = malloc((size_t)N * N * sizeof *c);
    if (!a || !c) {
        free(a);
        free(c);
        return;
    }
    for (size_t i = 0; i < (size_t)N * N; i++)
        a[i] = (float)(i % 17) / 17.0f - 0.5f;
    double best = 0;
    for (int r = 0; r < 3; r++) { // the best of three: the first warms up
        double t0 = sh_time_mono();
        eng_gemm(false, true, N, N, N, 1.0f, a, N, a, N, 0.0f, c, N);
        double dt = sh_time_mono() - t0;
        double g = dt > 0 ? 2.0 * N * N * N / dt / 1e9 : 0;
        best = g > best ? g : best;
    }
    free(a);
    free(c);
    out->sgemm_gflops = best;
}

static eng_score_kind score_kind(eng_method m) { return eng_methods[m].score; }

typedef struct stream_ctx {
    const eng_model *m;
    const eng_spec *s;
    const eng_options *o;
    const eng_hooks *h;
    eng_out *w;
    eng_report *r;
    const eng_plan *plan;
    eng_threshold pooled; // the pool's threshold, its ties consumed in order
    uint64_t bytes_total, bytes_done;
    uint64_t largest; // bytes of the largest tensor: the buffer size
} stream_ctx;

static bool threaded(const stream_ctx *c)
{
    if (c->o->threads == 1)
        return false;
    return c->o->threads > 1 || sh_cpu_count() > 1;
}

// A scorer over tensor ti's loaded bytes.
static void scorer_for(const stream_ctx *c, size_t ti,
                       const unsigned char *data, eng_scorer *sc)
{
    const eng_tensor_info *t = eng_model_tensor(c->m, ti);
    uint64_t rows, cols;
    eng_tensor_rows_cols(t, &rows, &cols);
    eng_scorer_init(sc, score_kind(c->s->method), t->dtype, data, rows, cols,
                    c->s->seed, t->name, NULL);
    eng_score_inputs_attach(c->plan->inputs, ti, sc);
}

static bool pooled(const stream_ctx *c, size_t ti)
{
    return c->plan->rows[ti].pooled;
}

// Magnitude on F16/BF16/F32 streams through the kernels; the rest works on
// the whole tensor in memory.
static bool fast(const stream_ctx *c, size_t ti)
{
    return score_kind(c->s->method) == ENG_SCORE_MAGNITUDE &&
           !c->plan->rows[ti].share.quant.bits && // rounding: whole tensors
           eng_k_supports(eng_model_tensor(c->m, ti)->dtype);
}

static const eng_st *tensor_file(const eng_model *m, size_t ti, size_t *idx)
{
    size_t file;
    eng_model_tensor_loc(m, ti, &file, idx);
    return eng_model_file_at(m, file)->st;
}

// Reader callback: targets off the fast path (and rows, which ranks whole
// rows) are needed whole.
static bool want_bytes(void *ctx, size_t ti)
{
    stream_ctx *c = ctx;
    const eng_share *sh = &c->plan->rows[ti].share;
    return sh->target && (!fast(c, ti) || sh->pattern.kind == ENG_PATTERN_ROWS);
}

static void progress(stream_ctx *c, const char *phase, size_t step,
                     size_t steps, const char *tensor, double base, double span)
{
    double f = c->bytes_total ? (double)c->bytes_done / c->bytes_total : 1;
    eng_progress p = {.phase = phase,
                      .step = step,
                      .steps = steps,
                      .tensor = tensor,
                      .bytes_done = c->bytes_done,
                      .bytes_total = c->bytes_total,
                      .fraction = base + span * f};
    eng_hooks_progress(c->h, &p);
}

static int nonfinite(sh_diag *d, const char *name)
{
    return sh_diag_set(d, SH_ENUMERIC, name,
                       "tensor \"%s\" holds NaN or infinite values; refusing "
                       "to prune a broken checkpoint",
                       name);
}

// Reader callback for the global passes: feeds one pooled tensor to the
// shared selection, in order, on the reader's thread.
typedef struct global_pass {
    stream_ctx *c;
    eng_select *sel;
} global_pass;

static int feed_pooled(void *ctx, eng_loaded *l)
{
    global_pass *g = ctx;
    const eng_tensor_info *t = eng_model_tensor(g->c->m, l->ti);
    int rc;
    if (l->data) {
        eng_scorer sc;
        scorer_for(g->c, l->ti, l->data, &sc);
        rc = eng_select_feed(g->sel, &sc) ? SH_ENUMERIC : 0;
    } else {
        size_t idx;
        const eng_st *st = tensor_file(g->c->m, l->ti, &idx);
        rc = eng_stream_feed(st, idx, g->sel, l->scratch, &l->d);
    }
    return rc == SH_ENUMERIC ? nonfinite(&l->d, t->name) : rc;
}

static bool pooled_bytes(void *ctx, size_t ti)
{
    return want_bytes(((global_pass *)ctx)->c, ti);
}

// Global scope: one threshold over every pooled target, in one or two
// streaming passes over them, progress from 0 to span.
static int select_global(stream_ctx *c, double span, sh_diag *d)
{
    size_t nt = eng_model_tensor_count(c->m), n = 0;
    size_t *order = malloc((nt ? nt : 1) * sizeof *order);
    if (!order)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    uint64_t total = 0;
    for (size_t i = 0; i < nt; i++) {
        if (pooled(c, i)) {
            order[n++] = i;
            total += eng_model_tensor(c->m, i)->numel;
        }
    }
    eng_select sel;
    if (eng_select_init(&sel, c->plan->pool_want, total)) {
        free(order);
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    }
    global_pass g = {c, &sel};
    int rc = 0;
    for (int pass = 0; rc == 0 && !sel.done; pass++) {
        eng_reader *rd = NULL;
        if ((rc = eng_reader_start(&rd, c->m, order, n, c->largest, threaded(c),
                                   pooled_bytes, feed_pooled, &g, d)) != 0)
            break;
        c->bytes_done = 0;
        eng_loaded *l;
        while (rc == 0 && (l = eng_reader_next(rd))) {
            const eng_tensor_info *t = eng_model_tensor(c->m, l->ti);
            if ((rc = l->rc) != 0)
                *d = l->d;
            else if (eng_hooks_cancelled(c->h))
                rc = SH_ECANCELED;
            eng_reader_release(rd, l);
            c->bytes_done += t->end - t->begin;
            progress(c, "scoring", l->ti + 1, nt, t->name, pass * span / 2,
                     span / 2);
        }
        eng_reader_stop(rd);
        eng_select_next(&sel);
    }
    c->pooled = sel.result;
    eng_select_deinit(&sel);
    free(order);
    return rc;
}

// On the reader's thread, one tensor ahead of the writer: a non-target's
// zeros are counted, a layer-scope unstructured target gets its threshold.
static int prepare(void *ctx, eng_loaded *l)
{
    stream_ctx *c = ctx;
    const eng_plan_row *p = &c->plan->rows[l->ti];
    const eng_tensor_info *t = eng_model_tensor(c->m, l->ti);
    size_t idx;
    const eng_st *st = tensor_file(c->m, l->ti, &idx);
    l->has_thr = false;
    if (!p->share.target)
        return eng_stream_zeros(st, idx, &l->zeros, l->scratch, &l->d);
    if (p->share.pattern.kind != ENG_PATTERN_UNSTRUCTURED || p->pooled)
        return 0;
    int rc;
    if (l->data) {
        eng_scorer sc;
        scorer_for(c, l->ti, l->data, &sc);
        rc = eng_select_one(&sc, p->want, &l->thr);
    } else {
        rc = eng_stream_select(st, idx, p->want, &l->thr, l->scratch, &l->d);
    }
    if (rc == SH_ENUMERIC)
        return nonfinite(&l->d, t->name);
    if (rc == SH_ENOMEM)
        return sh_diag_set(&l->d, rc, "", "out of memory");
    l->has_thr = rc == 0;
    return rc;
}

// Rows: whole output channels, through a mask.
static int rows_mask(stream_ctx *c, const eng_scorer *sc, uint64_t k,
                     uint64_t *mask, sh_diag *d)
{
    double *score = malloc(sc->rows * sizeof *score);
    uint64_t *idx = malloc(sc->rows * sizeof *idx);
    int rc = 0;
    if (score && idx) {
        if (eng_mask_rows(mask, sc, k, c->s->norm, score, idx))
            rc = SH_ENUMERIC;
    } else {
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    }
    free(score);
    free(idx);
    return rc;
}

// Round to nearest without calibration: the target in F32, the grids from
// its rows, the mask applied, the kept weights on their grids. Frees mask.
static int round_target(stream_ctx *c, size_t ti, const unsigned char *data,
                        uint64_t *mask, eng_layer_report *l, double t0,
                        sh_diag *d)
{
    const eng_tensor_info *t = eng_model_tensor(c->m, ti);
    const eng_quant *qt = &c->plan->rows[ti].share.quant;
    uint64_t rows, cols;
    eng_tensor_rows_cols(t, &rows, &cols);
    eng_grid g = {.bits = qt->bits,
                  .group = qt->group_size,
                  .symmetric = qt->symmetric,
                  .dtype = t->dtype};
    int64_t groups = eng_grid_groups(&g, (int64_t)cols);
    float *w = sh_alloc_bulk(t->numel * sizeof *w);
    float *grid = malloc(2 * rows * (uint64_t)groups * sizeof *grid);
    int rc = 0;
    if (!w || !grid) {
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    } else {
        eng_convert_to_f32(w, data, t->dtype, t->numel);
        eng_rtn(w, (int64_t)rows, (int64_t)cols, &g, mask, grid,
                grid + rows * (uint64_t)groups);
        t0 = eng_report_lap(c->r, l, ENG_PHASE_SOLVE, t0);
        eng_qtensor q = {.bits = qt->bits,
                         .group = qt->group_size,
                         .symmetric = qt->symmetric,
                         .rows = (int64_t)rows,
                         .cols = (int64_t)cols,
                         .groups = groups,
                         .scale = grid,
                         .zero = grid + rows * (uint64_t)groups};
        rc = eng_write_f32(c->w, ti, w, t->dtype, t->numel, &q, l,
                           c->plan->rows[ti].want, d);
        eng_report_lap(c->r, l, ENG_PHASE_WRITE, t0);
    }
    free(w);
    free(grid);
    free(mask);
    return rc;
}

// One target: magnitude on F16/BF16/F32 takes the fused kernels (no mask);
// everything else builds a mask first. Both give the same bytes (the tests
// hold them to it).
static int prune_target(stream_ctx *c, eng_loaded *ld, eng_layer_report *l,
                        sh_diag *d)
{
    size_t ti = ld->ti;
    const eng_tensor_info *t = eng_model_tensor(c->m, ti);
    const eng_plan_row *row = &c->plan->rows[ti];
    const eng_share *p = &row->share;
    eng_src src = {.mem = ld->data};
    src.st = ld->data ? NULL : tensor_file(c->m, ti, &src.idx);
    uint64_t want = row->want; // pooled: 0, the pool's count is the plan's
    eng_threshold *thr = row->pooled ? &c->pooled : &ld->thr;
    int rc = 0;

    // The fused kernels select, mask and write in one pass: write.
    double t0 = sh_time_mono();
    if (p->pattern.kind == ENG_PATTERN_NM) {
        if (!ld->data) {
            rc = eng_write_nm(c->w, ti, src, t->dtype, t->numel, l, want, c->h,
                              d);
            eng_report_lap(c->r, l, ENG_PHASE_WRITE, t0);
            return rc;
        }
    } else if (p->pattern.kind == ENG_PATTERN_UNSTRUCTURED && !ld->data) {
        rc = eng_write_threshold(c->w, ti, src, t->dtype, t->numel, thr, l,
                                 want, c->h, d);
        eng_report_lap(c->r, l, ENG_PHASE_WRITE, t0);
        return rc;
    }

    // Off the fast path: the whole tensor is in memory; build a mask.
    t0 = sh_time_mono();
    eng_scorer sc;
    scorer_for(c, ti, ld->data, &sc);
    uint64_t *mask = malloc(eng_mask_words(t->numel) * sizeof *mask);
    if (!mask)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    switch (p->pattern.kind) {
    case ENG_PATTERN_NM:
        if (eng_mask_nm(mask, &sc, p->pattern.n, p->pattern.m))
            rc = SH_ENUMERIC;
        break;
    case ENG_PATTERN_ROWS: rc = rows_mask(c, &sc, row->k, mask, d); break;
    default: eng_mask_threshold(mask, &sc, thr);
    }
    if (rc == SH_ENUMERIC)
        rc = nonfinite(d, t->name);
    if (rc == 0 && p->quant.bits)
        return round_target(c, ti, ld->data, mask, l, t0, d);
    t0 = eng_report_lap(c->r, l, ENG_PHASE_SOLVE, t0);
    if (rc == 0)
        rc = eng_write_masked(c->w, ti, ld->data, t->dtype, t->numel, mask, l,
                              want, c->h, d);
    eng_report_lap(c->r, l, ENG_PHASE_WRITE, t0);
    free(mask);
    return rc;
}

static int stream_tensor(stream_ctx *c, eng_loaded *ld, sh_diag *d)
{
    const eng_tensor_info *t = eng_model_tensor(c->m, ld->ti);
    const eng_share *p = &c->plan->rows[ld->ti].share;
    if (ld->rc != 0) {
        *d = ld->d;
        return ld->rc;
    }
    c->r->model_params += t->numel;
    if (!p->target) {
        c->r->model_zeros += ld->zeros;
        double t0 = sh_time_mono();
        int rc = eng_out_copy(c->w, ld->ti, d);
        eng_report_lap(c->r, NULL, ENG_PHASE_WRITE, t0);
        return rc;
    }
    eng_layer_report *l = eng_report_add_layer(c->r, t, p);
    if (!l)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    int rc = prune_target(c, ld, l, d);
    if (rc == 0) {
        c->r->target_tensors++;
        c->r->target_params += t->numel;
        c->r->target_zeros += l->zeros;
        c->r->model_zeros += l->zeros;
    }
    return rc;
}

// The sizes the passes need: all bytes, and the largest tensor's.
static void stream_sizes(stream_ctx *c)
{
    for (size_t i = 0; i < eng_model_tensor_count(c->m); i++) {
        const eng_tensor_info *t = eng_model_tensor(c->m, i);
        uint64_t bytes = t->end - t->begin;
        c->bytes_total += bytes;
        c->largest = bytes > c->largest ? bytes : c->largest;
    }
}

int eng_select_pool(eng_plan *plan, const eng_options *o, const eng_hooks *h,
                    double span, sh_diag *d)
{
    stream_ctx c = {.m = plan->m, .s = plan->s, .o = o, .h = h, .plan = plan};
    stream_sizes(&c);
    int rc = select_global(&c, span, d);
    plan->pool_thr = c.pooled;
    return rc;
}

static int prune_streaming(const eng_model *m, const eng_spec *s,
                           const eng_options *o, const eng_hooks *h, eng_out *w,
                           eng_report *r, const eng_plan *plan, sh_diag *d)
{
    stream_ctx c = {.m = m,
                    .s = s,
                    .o = o,
                    .h = h,
                    .w = w,
                    .r = r,
                    .plan = plan,
                    .pooled = plan->pool_thr}; // its ties consumed in order
    size_t nt = eng_model_tensor_count(m);
    size_t *order = malloc((nt ? nt : 1) * sizeof *order);
    if (!order)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    for (size_t i = 0; i < nt; i++)
        order[i] = i;
    stream_sizes(&c);
    bool global = s->scope == ENG_SCOPE_GLOBAL;
    double base = global ? ENG_FRAC_SCORING : 0, span = 1 - base;
    int rc = 0;
    eng_reader *rd = NULL;
    if (rc == 0)
        rc = eng_reader_start(&rd, m, order, nt, c.largest, threaded(&c),
                              want_bytes, prepare, &c, d);
    c.bytes_done = 0;
    eng_loaded *ld;
    // Waiting for the reader (which selects too, beside the writing): read.
    double t0 = sh_time_mono();
    while (rc == 0 && (ld = eng_reader_next(rd))) {
        eng_report_lap(r, NULL, ENG_PHASE_READ, t0);
        const eng_tensor_info *t = eng_model_tensor(m, ld->ti);
        progress(&c, "pruning", ld->ti + 1, nt, t->name, base, span);
        rc = eng_hooks_cancelled(h) ? SH_ECANCELED : stream_tensor(&c, ld, d);
        eng_reader_release(rd, ld);
        c.bytes_done += t->end - t->begin;
        t0 = sh_time_mono();
    }
    eng_reader_stop(rd);
    if (rc == 0)
        progress(&c, "pruning", nt, nt, NULL, base, span);
    free(order);
    return rc;
}

// The metric of a model on the evaluation set (dense: the input model;
// pruned: the written folder, so what is measured is what is shipped).
// The metric of m over the dataset at path, and the speed of its forward
// pass (eng_net_speed) when speed is not NULL.
int eng_measure(const eng_model *m, const char *path, const eng_hooks *h,
                eng_metric *out, double *speed, sh_diag *d)
{
    eng_net *net = NULL;
    eng_dataset ds = {0};
    int rc = eng_net_open(&net, m, d);
    if (rc == 0 &&
        (rc = eng_dataset_load(&ds, path, 0, eng_net_vocab(net),
                               eng_net_classes(net), h, d)) == 0 &&
        (rc = eng_net_check_dataset(net, &ds.info, d)) == 0 &&
        (rc = eng_net_evaluate(net, &ds, h, out, d)) == 0 && speed)
        rc = eng_net_speed(net, &ds, ENG_SPEED_PASSES, h, speed, d);
    else if (rc != 0 && rc != SH_ECANCELED)
        sh_diag_prefix(d, "evaluation");
    eng_dataset_deinit(&ds);
    eng_net_close(net);
    return rc;
}

static void phase(const eng_hooks *h, const char *name, double fraction)
{
    eng_progress p = {
        .phase = name, .step = 1, .steps = 1, .fraction = fraction};
    eng_hooks_progress(h, &p);
}

// The compressed output in dir decompressed into dir/.readback (a hidden
// folder: no model reads it), for the evaluation. evaldir gets its path.
static int readback(const char *dir, char *evaldir, size_t size,
                    const eng_hooks *h, sh_diag *d)
{
    if (snprintf(evaldir, size, "%s/.readback", dir) >= (int)size) {
        evaldir[0] = '\0';
        return sh_diag_set(d, SH_ETOOBIG, "", "output path too long");
    }
    eng_model *cm = NULL;
    eng_options eo = {.out_dir = evaldir};
    int rc = sh_mkdir_p(evaldir);
    if (rc != 0)
        return sh_diag_set(d, rc, "", "cannot create %s", evaldir);
    if ((rc = eng_model_open(&cm, dir, d)) == 0)
        rc = eng_decompress(cm, &eo, h, d);
    eng_model_close(cm);
    return rc;
}

// The output's bytes against the input's, per target and in all.
static void storage_report(const eng_plan *p, const eng_format *f,
                           eng_report *r)
{
    r->format = f->name;
    for (size_t i = 0; i < p->n; i++) {
        const eng_tensor_info *t = eng_model_tensor(p->m, i);
        const eng_plan_row *row = &p->rows[i];
        uint64_t before = t->end - t->begin, after = 0;
        for (size_t j = 0; j < row->n_out; j++) {
            uint64_t n = eng_dtype_size(row->out[j].dtype);
            for (int q = 0; q < row->out[j].ndim; q++)
                n *= (uint64_t)row->out[j].shape[q];
            after += n;
        }
        r->bytes_before += before;
        r->bytes_after += after;
        eng_layer_report *l =
            row->share.target ? eng_report_layer(r, t->name) : NULL;
        if (!l)
            continue;
        r->target_bytes_before += before;
        r->target_bytes_after += after;
        l->stored_as = f->stored_as ? f->stored_as(p, i) : "dense";
        l->store_note = row->note;
        l->bytes_before = before;
        l->bytes_after = after;
        l->quant = row->share.quant;
    }
}

int eng_prune(const eng_model *m, const eng_spec *s, const eng_options *o,
              const eng_hooks *h, eng_report *r, sh_diag *d)
{
    double t0 = sh_time_mono();
    eng_plan plan = {0};
    const eng_format *fmt = s->format == ENG_FORMAT_COMPRESSED
                                ? &eng_format_compressed
                                : &eng_format_dense;
    eng_out *w = NULL;
    eng_model *pruned = NULL;
    eng_metric dense, after;
    char evaldir[4096] = "";
    eng_spec allocated = {0};
    bool has_allocated = false;
    eng_score_inputs inputs = {0};
    int rc = 0;
    if ((rc = eng_check(s, m, 0, NULL, d)) != 0)
        goto out;
    // A chosen allocation: from here on the spec with its overrides.
    // (Its pass over the calibration set times itself into r.)
    if (s->alloc.kind != ENG_ALLOC_UNIFORM) {
        if ((rc = eng_allocate(m, s, o, h, r, &allocated, d)) != 0)
            goto out;
        has_allocated = true;
        s = &allocated;
        if ((rc = eng_check(s, m, 0, NULL, d)) != 0)
            goto out;
    }
    if ((rc = eng_plan_build(&plan, s, m, d)) != 0)
        goto out;
    if ((rc = eng_format_plan(fmt, &plan, d)) != 0)
        goto out;
    // What the criterion reads beside the weights: gradients (a pass over
    // the calibration set, on the dense model), or the base checkpoint's
    // or a scores file's tensors.
    if ((rc = eng_score_inputs_open(&inputs, &plan, o, h, r, d)) != 0)
        goto out;
    plan.inputs = &inputs;
    if (o->evaluation_path && !o->pruned_metric_only) {
        phase(h, "evaluating dense", 0.0);
        double t1 = sh_time_mono();
        if ((rc = eng_measure(m, o->evaluation_path, h, &dense, &r->speed_dense,
                              d)) != 0)
            goto out;
        eng_report_lap(r, NULL, ENG_PHASE_EVALUATE, t1);
    }
    // Calibration data without a calibrated method serves only the
    // reconstruction errors: when none are asked for, it is not read.
    bool calibrated = (eng_methods[s->method].needs_calibration &&
                       !eng_methods[s->method].needs_gradients) ||
                      (o->calibration_path && s->recon != ENG_RECON_OFF) ||
                      (o->calibration_path && eng_plan_quantizes(&plan));
    // The global selection, before output opens: the plan is then whole.
    double t1 = sh_time_mono();
    if (s->scope == ENG_SCOPE_GLOBAL &&
        (rc = eng_select_pool(&plan, o, h, calibrated ? 0 : ENG_FRAC_SCORING,
                              d)) != 0)
        goto out;
    eng_report_lap(r, NULL, ENG_PHASE_SOLVE, t1);
    // A shrink decides its outputs before it opens them.
    if (s->structure.on)
        rc = eng_shrink(&plan, o, h, &w, r, d);
    else if ((rc = eng_out_open(&w, &plan, fmt, o, d)) != 0)
        goto out;
    // Calibration data means the sequential pipeline, for every method:
    // the reconstruction errors need the layers' inputs.
    else if (calibrated)
        rc = eng_prune_calibrated(&plan, o, h, w, r, d);
    else
        rc = prune_streaming(m, s, o, h, w, r, &plan, d);
    // Polls between the phases too: finishing syncs every file.
    if (rc == 0 && eng_hooks_cancelled(h))
        rc = SH_ECANCELED;
    t1 = sh_time_mono();
    if (rc == 0)
        rc = eng_out_finish(w, d);
    t1 = eng_report_lap(r, NULL, ENG_PHASE_WRITE, t1);
    if (rc == 0)
        storage_report(&plan, fmt, r);
    if (rc == 0 && eng_hooks_cancelled(h))
        rc = SH_ECANCELED;
    if (rc == 0 && o->evaluation_path) {
        phase(h, "evaluating pruned", ENG_FRAC_EVAL_PRUNED);
        const char *dir = o->out_dir;
        if (fmt != &eng_format_dense && // as it reads back, into a hidden
            (rc = readback(o->out_dir, evaldir, sizeof evaldir, h, d)) == 0)
            dir = evaldir; //             folder the artifact leaves out
        if (rc == 0)
            rc = eng_model_open(&pruned, dir, d);
        if (rc == 0)
            rc =
                eng_measure(pruned, o->evaluation_path, h, &after,
                            o->pruned_metric_only ? NULL : &r->speed_pruned, d);
        t1 = eng_report_lap(r, NULL, ENG_PHASE_EVALUATE, t1);
        if (rc == 0 && o->pruned_metric_only) {
            r->has_metric = true;
            r->metric_name = after.name;
            r->metric_dense = NAN;
            r->metric_pruned = after.value;
        } else if (rc == 0) {
            r->has_metric = true;
            r->metric_name = dense.name;
            r->metric_dense = dense.value;
            r->metric_pruned = after.value;
            r->has_speed = true;
            r->speed_unit =
                eng_net_kind_for(eng_model_arch(m)) == ENG_DATASET_TOKENS
                    ? "tokens/s"
                    : "samples/s";
        }
    }
    // The manifest names the input's digests (hashed beside the run).
    if (rc == 0 && o->input_sha) {
        o->input_sha(o->input_sha_ctx);
        eng_report_lap(r, NULL, ENG_PHASE_HASH, t1);
    }
    r->seconds = sh_time_mono() - t0;
    if (rc == 0)
        rc = eng_manifest_write(m, s, r, o, d);
out:
    if (rc == SH_ECANCELED) // from any phase, the dense evaluation too
        sh_diag_set(d, rc, "", "cancelled");
    eng_model_close(pruned);
    if (evaldir[0])
        sh_rm_rf(evaldir);
    eng_out_close(w);
    eng_plan_deinit(&plan);
    eng_score_inputs_close(&inputs);
    if (has_allocated)
        eng_spec_deinit(&allocated);
    return rc;
}

// inputs.c: what the gradient and movement criteria read beside each
// target's weights (run.h: eng_score_inputs): the gradients and Fisher
// sums of a gradient pass (grad.c) over the calibration set, the base
// checkpoint's weights (movement), or a file of score tensors (scores).
// Files are mapped, never loaded whole; the gradients are the pass's sums.
#include "engine/run/run.h"

#include "common/util.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool float_dtype(eng_dtype dt)
{
    return dt == ENG_DTYPE_F32 || dt == ENG_DTYPE_F16 || dt == ENG_DTYPE_BF16 ||
           dt == ENG_DTYPE_F64;
}

static void shape_str(char *buf, size_t size, const eng_tensor_info *t)
{
    size_t at = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < t->ndim && at < size; i++)
        at += (size_t)snprintf(buf + at, size - at, "%s%" PRId64, i ? ", " : "",
                               t->shape[i]);
    if (at < size)
        snprintf(buf + at, size - at, "]");
}

static bool same_shape(const eng_tensor_info *a, const eng_tensor_info *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

// A mismatch of tensor t against its counterpart o in the input `field`
// names ("base", "scores"), or 0.
static int match(const eng_tensor_info *t, const eng_tensor_info *o,
                 const char *field, const char *what, bool same_dtype,
                 sh_diag *d)
{
    char a[96], b[96];
    if (!o)
        return sh_diag_set(d, SH_ESPEC, field, "%s lacks \"%s\", a target",
                           what, t->name);
    if (!same_shape(t, o)) {
        shape_str(a, sizeof a, o);
        shape_str(b, sizeof b, t);
        return sh_diag_set(d, SH_ESPEC, field,
                           "\"%s\" is %s in %s and %s in the checkpoint",
                           t->name, a, what, b);
    }
    if (same_dtype && o->dtype != t->dtype)
        return sh_diag_set(
            d, SH_ESPEC, field, "\"%s\" is %s in %s and %s in the checkpoint",
            t->name, eng_dtype_name(o->dtype), what, eng_dtype_name(t->dtype));
    if (!float_dtype(o->dtype))
        return sh_diag_set(d, SH_ESPEC, field,
                           "\"%s\" in %s is %s; scores are floats", t->name,
                           what, eng_dtype_name(o->dtype));
    return 0;
}

static const eng_tensor_info *header_find(const eng_st_header *h,
                                          const char *name)
{
    long i = eng_st_header_find(h, name);
    return i < 0 ? NULL : &h->tensors[i];
}

int eng_check_inputs(const eng_spec *s, const eng_model *m,
                     const eng_model *base, const eng_st_header *scores,
                     sh_diag *d)
{
    unsigned in = eng_score_inputs_of(eng_methods[s->method].score);
    bool want_base =
        in & ENG_SCORE_IN_OTHER && s->method == ENG_METHOD_MOVEMENT;
    bool want_scores = in & ENG_SCORE_IN_OTHER && !want_base;
    for (size_t i = 0; i < eng_model_tensor_count(m); i++) {
        const eng_tensor_info *t = eng_model_tensor(m, i);
        eng_share sh;
        eng_spec_share(s, t, &sh);
        if (!sh.target)
            continue;
        int rc = 0;
        if (want_base && base) {
            long j = eng_model_find(base, t->name);
            rc = match(t, j < 0 ? NULL : eng_model_tensor(base, (size_t)j),
                       "base", "the base checkpoint", true, d);
        }
        if (rc == 0 && want_scores && scores)
            rc = match(t, header_find(scores, t->name), "scores",
                       "the scores file", false, d);
        if (rc != 0)
            return rc;
    }
    return 0;
}

// The first element of a float tensor that is not finite, or -1.
static int64_t first_nonfinite(const void *data, eng_dtype dt, uint64_t n)
{
    enum { PIECE = 4096 };
    float buf[PIECE];
    size_t es = eng_dtype_size(dt);
    for (uint64_t at = 0; at < n; at += PIECE) {
        size_t m = n - at < PIECE ? (size_t)(n - at) : PIECE;
        eng_convert_to_f32(buf, (const unsigned char *)data + at * es, dt, m);
        for (size_t i = 0; i < m; i++)
            if (!isfinite(buf[i]))
                return (int64_t)(at + i);
    }
    return -1;
}

int eng_scores_check_finite(const eng_st *st, sh_diag *d)
{
    const eng_st_header *h = eng_st_header_of(st);
    for (size_t i = 0; i < h->count; i++) {
        const eng_tensor_info *t = &h->tensors[i];
        if (!float_dtype(t->dtype))
            return sh_diag_set(d, SH_EFORMAT, t->name,
                               "score tensor \"%s\" is %s; scores are floats",
                               t->name, eng_dtype_name(t->dtype));
        int64_t bad = first_nonfinite(eng_st_data(st, i), t->dtype, t->numel);
        if (bad >= 0)
            return sh_diag_set(d, SH_EFORMAT, t->name,
                               "score tensor \"%s\" holds a NaN or an "
                               "infinity at element %" PRId64,
                               t->name, bad);
    }
    return 0;
}

// Whether shared gradients hold every wanted tensor's (and its Fisher
// sums when asked).
static bool shared_serves(const eng_grads *g, const bool *want, size_t n,
                          bool fisher)
{
    if (!g || g->count != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (want[i] && (!g->g[i] || (fisher && !g->fisher[i])))
            return false;
    return true;
}

// Gradients into a file beside o->out_dir, unlinked once mapped: never
// among the output's files, gone when the run ends.
static int grads_beside(const eng_model *m, const eng_options *o,
                        int64_t samples, const bool *want, bool fisher,
                        const eng_hooks *h, eng_grads *out, sh_diag *d)
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s.gradients.safetensors",
                         o->out_dir) >= sizeof path)
        return sh_diag_set(d, SH_EINVAL, "", "the output path is too long");
    unlink(path); // a crashed run's
    int rc = eng_gradients(m, o->calibration_path, samples, want, fisher, path,
                           h, out, d);
    if (rc == 0)
        unlink(path);
    return rc;
}

// The tensors whose gradients a plan's criterion reads: its targets; for a
// structured shrink every linear it cuts (the targets of a shrink are the
// shapes' say, not the spec's).
static void wanted(const eng_plan *p, bool *want)
{
    for (size_t i = 0; i < p->n; i++)
        want[i] = p->rows[i].share.target || p->s->structure.on;
}

int eng_grads_for_sweep(const eng_model *m, const eng_spec *s,
                        const eng_options *o, const eng_hooks *h,
                        eng_grads *out, eng_options *runs, sh_diag *d)
{
    *out = (eng_grads){0};
    *runs = *o;
    unsigned need = eng_score_inputs_of(eng_methods[s->method].score);
    for (size_t i = 0; s->kind == ENG_KIND_SWEEP && i < s->sweep.n_methods; i++)
        need |= eng_score_inputs_of(eng_methods[s->sweep.methods[i]].score);
    if (!(need & (ENG_SCORE_IN_GRAD | ENG_SCORE_IN_FISHER)) ||
        !o->calibration_path)
        return 0;
    eng_plan p = {0};
    size_t n = eng_model_tensor_count(m);
    bool *want = calloc(n ? n : 1, sizeof *want);
    int rc = want ? eng_plan_build(&p, s, m, d)
                  : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    if (rc == 0)
        wanted(&p, want);
    if (rc == 0)
        rc = grads_beside(m, o, s->calib_samples, want,
                          need & ENG_SCORE_IN_FISHER, h, out, d);
    eng_plan_deinit(&p);
    free(want);
    if (rc == 0)
        runs->grads = out;
    return rc;
}

int eng_score_inputs_open(eng_score_inputs *in, const eng_plan *plan,
                          const eng_options *o, const eng_hooks *h,
                          eng_report *r, sh_diag *d)
{
    const eng_spec *s = plan->s;
    const eng_model *m = plan->m;
    unsigned need = eng_score_inputs_of(eng_methods[s->method].score);
    *in = (eng_score_inputs){0};
    if (!need)
        return 0;
    size_t n = plan->n;
    in->other = calloc(n ? n : 1, sizeof *in->other);
    in->other_dtype = calloc(n ? n : 1, sizeof *in->other_dtype);
    bool *want = calloc(n ? n : 1, sizeof *want);
    int rc = in->other && in->other_dtype && want
                 ? 0
                 : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    if (want)
        wanted(plan, want);
    bool fisher = need & ENG_SCORE_IN_FISHER;
    if (rc == 0 && need & (ENG_SCORE_IN_GRAD | ENG_SCORE_IN_FISHER) &&
        shared_serves(o->grads, want, n, fisher)) {
        in->grads = o->grads;
        r->calib_samples = o->grads->rows;
    } else if (rc == 0 && need & (ENG_SCORE_IN_GRAD | ENG_SCORE_IN_FISHER)) {
        if (!o->calibration_path)
            rc = sh_diag_set(d, SH_ESPEC, "calibration",
                             "method \"%s\" needs calibration data for its "
                             "gradients",
                             eng_methods[s->method].name);
        double t0 = sh_time_mono();
        if (rc == 0)
            rc = grads_beside(m, o, s->calib_samples, want, fisher, h, &in->own,
                              d);
        if (rc == 0) {
            in->grads = &in->own;
            r->calib_samples = in->own.rows;
            eng_report_lap(r, NULL, ENG_PHASE_STATISTICS, t0);
        }
    }
    if (rc == 0 && need & ENG_SCORE_IN_OTHER) {
        bool movement = s->method == ENG_METHOD_MOVEMENT;
        const char *field = movement ? "base" : "scores";
        if (movement ? !o->base : !o->scores_path)
            rc = sh_diag_set(d, SH_ESPEC, field, "method \"%s\" needs %s",
                             eng_methods[s->method].name,
                             movement ? "a base checkpoint (the weights "
                                        "before fine-tuning)"
                                      : "a file of score tensors");
        else if (movement)
            in->base = o->base;
        else
            rc = eng_st_open(&in->scores, o->scores_path, d);
        if (rc == 0)
            rc = eng_check_inputs(
                s, m, in->base,
                in->scores ? eng_st_header_of(in->scores) : NULL, d);
        if (rc == 0 && in->scores)
            rc = eng_scores_check_finite(in->scores, d);
        if (rc != 0)
            sh_diag_prefix(d, "%s", field);
        for (size_t i = 0; rc == 0 && i < n; i++) {
            if (!want[i])
                continue;
            const char *name = eng_model_tensor(m, i)->name;
            if (in->base) {
                long j = eng_model_find(in->base, name);
                size_t file, idx;
                eng_model_tensor_loc(in->base, (size_t)j, &file, &idx);
                in->other[i] =
                    eng_st_data(eng_model_file_at(in->base, file)->st, idx);
                in->other_dtype[i] =
                    eng_model_tensor(in->base, (size_t)j)->dtype;
            } else {
                const eng_st_header *hd = eng_st_header_of(in->scores);
                long j = eng_st_header_find(hd, name);
                in->other[i] = eng_st_data(in->scores, (size_t)j);
                in->other_dtype[i] = hd->tensors[j].dtype;
            }
        }
    }
    free(want);
    if (rc != 0)
        eng_score_inputs_close(in);
    return rc;
}

void eng_score_inputs_close(eng_score_inputs *in)
{
    if (in->grads == &in->own)
        eng_grads_deinit(&in->own);
    eng_st_close(in->scores);
    free(in->other);
    free(in->other_dtype);
    *in = (eng_score_inputs){0};
}

void eng_score_inputs_attach(const eng_score_inputs *in, size_t ti,
                             eng_scorer *sc)
{
    if (!in)
        return;
    if (in->grads) {
        sc->grad = in->grads->g[ti];
        sc->fisher = in->grads->fisher[ti];
    }
    if (in->other) {
        sc->other = in->other[ti];
        sc->other_dtype = in->other_dtype[ti];
    }
}

// dataset.c: checking and loading calibration / evaluation data.
#include "engine/io/dataset.h"

#include "common/par.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[ENG_DATASET_KIND_COUNT] = {
    [ENG_DATASET_TOKENS] = "tokens",
    [ENG_DATASET_INPUTS] = "inputs",
};

const char *eng_dataset_kind_name(eng_dataset_kind k) { return kind_names[k]; }

static bool is_float(eng_dtype dt)
{
    return dt == ENG_DTYPE_F32 || dt == ENG_DTYPE_F16 || dt == ENG_DTYPE_BF16;
}

int eng_dataset_check(const eng_st_header *h, eng_dataset_info *out, sh_diag *d)
{
    long tok = eng_st_header_find(h, "tokens");
    long inp = eng_st_header_find(h, "inputs");
    long lab = eng_st_header_find(h, "labels");
    eng_dataset_info info = {0};
    if (tok >= 0 && inp >= 0)
        return sh_diag_set(d, SH_EFORMAT, "tokens",
                           "a dataset holds \"tokens\" or \"inputs\", not "
                           "both");
    if (tok < 0 && inp < 0)
        return sh_diag_set(d, SH_EFORMAT, "",
                           "a dataset needs a tensor \"tokens\" [N, T] of "
                           "token ids, or \"inputs\" [N, D] of features with "
                           "optional \"labels\" [N]");
    const eng_tensor_info *t = &h->tensors[tok >= 0 ? tok : inp];
    info.kind = tok >= 0 ? ENG_DATASET_TOKENS : ENG_DATASET_INPUTS;
    if (t->ndim != 2 || t->shape[0] < 1 || t->shape[1] < 1)
        return sh_diag_set(d, SH_EFORMAT, t->name,
                           "\"%s\" must have two non-zero dimensions [N, %s]",
                           t->name, tok >= 0 ? "T" : "D");
    info.rows = t->shape[0];
    info.cols = t->shape[1];
    info.dtype = t->dtype;
    if (tok >= 0 && !eng_dtype_is_int(t->dtype))
        return sh_diag_set(d, SH_EFORMAT, t->name,
                           "\"tokens\" must hold integers (I32 or I64), not "
                           "%s",
                           eng_dtype_name(t->dtype));
    if (inp >= 0 && !is_float(t->dtype))
        return sh_diag_set(d, SH_EFORMAT, t->name,
                           "\"inputs\" must hold F32, F16 or BF16, not %s",
                           eng_dtype_name(t->dtype));
    if (lab >= 0) {
        const eng_tensor_info *l = &h->tensors[lab];
        if (tok >= 0)
            return sh_diag_set(d, SH_EFORMAT, "labels",
                               "\"labels\" go with \"inputs\", not with "
                               "\"tokens\"");
        if (!eng_dtype_is_int(l->dtype))
            return sh_diag_set(d, SH_EFORMAT, "labels",
                               "\"labels\" must hold integers, not %s",
                               eng_dtype_name(l->dtype));
        if (l->ndim != 1 || l->shape[0] != info.rows)
            return sh_diag_set(d, SH_EFORMAT, "labels",
                               "\"labels\" must be [%" PRId64
                               "], one per row of \"inputs\"",
                               info.rows);
        info.has_labels = true;
        info.label_dtype = l->dtype;
    }
    *out = info;
    return 0;
}

// Values converted between two polls of the cancel hook.
#define LOAD_STEP ((size_t)1 << 20)

// Features converted to F32 (when not F32 already) and checked finite, a
// LOAD_STEP at a time on the job's threads; the first non-finite value
// found is the lowest index of any chunk's first.
typedef struct load_job {
    float *owned; // the converted values, or NULL: read in place
    const unsigned char *raw;
    eng_dtype dt;
    size_t elem;
    const float *vals; // (n,): owned, or the mapped F32 values
    size_t n;
    const eng_hooks *hooks;
    _Atomic size_t bad;
    atomic_bool cancelled;
} load_job;

// *first = min(*first, at): the lowest index any thread found.
static void keep_first(_Atomic size_t *first, size_t at)
{
    size_t seen = atomic_load(first);
    while (at < seen && !atomic_compare_exchange_weak(first, &seen, at))
        ;
}

static void load_steps(void *ctx, int64_t s0, int64_t s1)
{
    load_job *j = ctx;
    for (int64_t s = s0; s < s1; s++) {
        // The first chunk runs on the calling thread: it polls.
        if (atomic_load(&j->cancelled) ||
            (s0 == 0 && eng_hooks_cancelled(j->hooks))) {
            atomic_store(&j->cancelled, true);
            return;
        }
        size_t k = (size_t)s * LOAD_STEP;
        size_t step = j->n - k < LOAD_STEP ? j->n - k : LOAD_STEP;
        if (j->owned)
            eng_convert_to_f32(j->owned + k, j->raw + k * j->elem, j->dt, step);
        size_t bad = eng_find_nonfinite(j->vals + k, step);
        if (bad == SIZE_MAX)
            continue;
        keep_first(&j->bad, k + bad);
        return; // later steps of the chunk lie further on
    }
}

// The error for a non-finite value in the inputs' row `row`.
static int nonfinite_row(sh_diag *d, int64_t row)
{
    return sh_diag_set(d, SH_EFORMAT, "inputs",
                       "\"inputs\" holds a non-finite value at row %" PRId64,
                       row);
}

// Converts (into owned, unless NULL) and checks n values of raw.
static int check_values(float *owned, const unsigned char *raw, eng_dtype dt,
                        const float *vals, size_t n, int64_t cols,
                        const eng_hooks *hooks, sh_diag *d)
{
    load_job j = {.owned = owned,
                  .raw = raw,
                  .dt = dt,
                  .elem = eng_dtype_size(dt),
                  .vals = vals,
                  .n = n,
                  .hooks = hooks,
                  .bad = SIZE_MAX};
    sh_par_for((int64_t)((n + LOAD_STEP - 1) / LOAD_STEP), 1, 1, load_steps,
               &j);
    if (atomic_load(&j.cancelled))
        return SH_ECANCELED;
    size_t bad = atomic_load(&j.bad);
    return bad == SIZE_MAX ? 0
                           : nonfinite_row(d, (int64_t)(bad / (size_t)cols));
}

static int load(eng_dataset *ds, const char *path, int64_t max_rows,
                int64_t vocab, int64_t classes, bool lazy,
                const eng_hooks *hooks, sh_diag *d)
{
    memset(ds, 0, sizeof *ds);
    eng_st *st = NULL;
    int rc = eng_st_open(&st, path, d);
    if (rc != 0)
        return rc;
    const eng_st_header *h = eng_st_header_of(st);
    if ((rc = eng_dataset_check(h, &ds->info, d)) != 0)
        goto out;
    ds->rows =
        max_rows > 0 && max_rows < ds->info.rows ? max_rows : ds->info.rows;
    size_t n = (size_t)(ds->rows * ds->info.cols);
    if (ds->info.kind == ENG_DATASET_TOKENS) {
        long i = eng_st_header_find(h, "tokens");
        const void *src = eng_st_data(st, (size_t)i);
        if (!(ds->ids = malloc(n * sizeof *ds->ids))) {
            rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
            goto out;
        }
        for (size_t k = 0; k < n; k++) {
            if (k % LOAD_STEP == LOAD_STEP - 1 && eng_hooks_cancelled(hooks)) {
                rc = SH_ECANCELED;
                goto out;
            }
            int64_t v = eng_read_int(src, ds->info.dtype, k);
            if (v < 0 || (vocab > 0 && v >= vocab) || v > INT32_MAX) {
                rc = sh_diag_set(d, SH_EFORMAT, "tokens",
                                 "token id %" PRId64 " at row %zu, column "
                                 "%zu is outside the vocabulary (0..%" PRId64
                                 ")",
                                 v, k / (size_t)ds->info.cols,
                                 k % (size_t)ds->info.cols, vocab - 1);
                goto out;
            }
            ds->ids[k] = (int32_t)v;
        }
    } else {
        long i = eng_st_header_find(h, "inputs");
        const unsigned char *raw = eng_st_data(st, (size_t)i);
        ds->tensor = (size_t)i;
        if (ds->info.dtype == ENG_DTYPE_F32 &&
            (uintptr_t)raw % _Alignof(float) == 0) {
            // Read where they lie: the mapping's pages come from the page
            // cache, where a copy would fault in fresh memory for each.
            ds->inputs = (const float *)raw;
            ds->st = st;
            ds->unchecked = true;
        } else {
            if (!(ds->owned = malloc(n * sizeof *ds->owned))) {
                rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
                goto out;
            }
            ds->inputs = ds->owned;
            if ((rc = check_values(ds->owned, raw, ds->info.dtype, ds->inputs,
                                   n, ds->info.cols, hooks, d)) != 0)
                goto out;
        }
        if (!lazy && (rc = eng_dataset_check_rows(ds, hooks, d)) != 0)
            goto out;
        if (ds->info.has_labels) {
            long l = eng_st_header_find(h, "labels");
            const void *src = eng_st_data(st, (size_t)l);
            if (!(ds->labels = malloc((size_t)ds->rows * sizeof *ds->labels))) {
                rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
                goto out;
            }
            for (int64_t k = 0; k < ds->rows; k++) {
                int64_t v = eng_read_int(src, ds->info.label_dtype, (size_t)k);
                if (v < 0 || (classes > 0 && v >= classes) || v > INT32_MAX) {
                    rc = sh_diag_set(d, SH_EFORMAT, "labels",
                                     "label %" PRId64 " at row %" PRId64
                                     " is outside the classes (0..%" PRId64 ")",
                                     v, k, classes - 1);
                    goto out;
                }
                ds->labels[k] = (int32_t)v;
            }
        }
    }
out:
    if (ds->st != st) // else the dataset keeps it open
        eng_st_close(st);
    if (rc != 0)
        eng_dataset_deinit(ds);
    return rc;
}

int eng_dataset_load(eng_dataset *ds, const char *path, int64_t max_rows,
                     int64_t vocab, int64_t classes, const eng_hooks *hooks,
                     sh_diag *d)
{
    return load(ds, path, max_rows, vocab, classes, false, hooks, d);
}

int eng_dataset_load_lazy(eng_dataset *ds, const char *path, int64_t max_rows,
                          int64_t vocab, int64_t classes, const eng_hooks *h,
                          sh_diag *d)
{
    return load(ds, path, max_rows, vocab, classes, true, h, d);
}

int eng_dataset_check_rows(eng_dataset *ds, const eng_hooks *h, sh_diag *d)
{
    if (!ds->unchecked)
        return 0;
    eng_st_populate(ds->st, ds->tensor);
    int rc =
        check_values(NULL, NULL, ENG_DTYPE_F32, ds->inputs,
                     (size_t)(ds->rows * ds->info.cols), ds->info.cols, h, d);
    if (rc == 0)
        ds->unchecked = false;
    return rc;
}

// Rows read a piece at a time, each piece checked; the first non-finite
// value is the lowest index of any piece's first.
typedef struct rows_job {
    const eng_dataset *ds;
    int64_t r0, per; // the first row, rows a piece
    int64_t n;
    float *out;
    _Atomic size_t bad; // value index within out
    atomic_flag failed; // taken by the first read error, which sets:
    int rc;
    sh_diag d;
} rows_job;

static void rows_pieces(void *ctx, int64_t p0, int64_t p1)
{
    rows_job *j = ctx;
    size_t cols = (size_t)j->ds->info.cols;
    for (int64_t p = p0; p < p1; p++) {
        int64_t r = p * j->per, m = j->n - r < j->per ? j->n - r : j->per;
        float *dst = j->out + (size_t)r * cols;
        sh_diag d = {0};
        int rc = eng_st_read_range(j->ds->st, j->ds->tensor,
                                   (uint64_t)(j->r0 + r) * cols * sizeof *dst,
                                   dst, (size_t)m * cols * sizeof *dst, &d);
        if (rc != 0) {
            if (!atomic_flag_test_and_set(&j->failed)) {
                j->rc = rc;
                j->d = d;
            }
            return;
        }
        size_t bad = eng_find_nonfinite(dst, (size_t)m * cols);
        if (bad == SIZE_MAX)
            continue;
        keep_first(&j->bad, (size_t)r * cols + bad);
        return; // later pieces of the chunk lie further on
    }
}

int eng_dataset_read_rows(const eng_dataset *ds, int64_t r0, int64_t n,
                          float *out, sh_diag *d)
{
    if (!ds->st || ds->owned || r0 < 0 || n < 0 || r0 > ds->rows - n)
        return sh_diag_set(d, SH_EINVAL, "inputs",
                           "rows %" PRId64 "..%" PRId64 " of \"inputs\": "
                           "not F32 rows in the file, or past the %" PRId64
                           " loaded",
                           r0, r0 + n, ds->rows);
    int64_t cols = ds->info.cols;
    // Pieces of about a quarter of a million values: two threads' share
    // of a few MiB each spans several.
    int64_t per = ((int64_t)1 << 18) / cols;
    per = per < 1 ? 1 : per;
    rows_job j = {.ds = ds,
                  .r0 = r0,
                  .per = per,
                  .n = n,
                  .out = out,
                  .bad = SIZE_MAX,
                  .failed = ATOMIC_FLAG_INIT};
    sh_par_for((n + per - 1) / per, 1, 1, rows_pieces, &j);
    if (j.rc != 0) { // the threads are joined: their writes are seen
        *d = j.d;
        return j.rc;
    }
    size_t bad = atomic_load(&j.bad);
    return bad == SIZE_MAX
               ? 0
               : nonfinite_row(d, r0 + (int64_t)(bad / (size_t)cols));
}

void eng_dataset_deinit(eng_dataset *ds)
{
    free(ds->ids);
    free(ds->owned);
    free(ds->labels);
    eng_st_close(ds->st);
    memset(ds, 0, sizeof *ds);
}

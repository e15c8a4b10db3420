// test_net.c: the numerics: BLAS paths against scalar references, the
// forward passes against the reference logits and metrics, SparseGPT's
// edge cases, datasets.
#include "tests/helpers.h"

#include "common/par.h"

#include "engine/engine.h"
#include "engine/io/dataset.h"
#include "engine/io/model.h"
#include "engine/math/linalg.h"
#include "engine/methods/sparsegpt.h"
#include "engine/nets/net.h"
#include "engine/select/mask.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

// BLAS paths agree with the scalar references (normalized error).
START_TEST(test_linalg_matches_reference)
{
    enum { N = 37, IN = 29, OUT = 23 };
    float x[N * IN], w[OUT * IN], b[OUT], y1[N * OUT], y2[N * OUT];
    th_randn(x, N * IN, 1);
    th_randn(w, OUT * IN, 2);
    th_randn(b, OUT, 3);
    eng_linear(y1, x, w, b, N, IN, OUT);
    eng_linear_ref(y2, x, w, b, N, IN, OUT);
    ck_assert(max_abs_diff(y1, y2, N * OUT) < 1e-4);
    float h1[IN * IN] = {0}, h2[IN * IN] = {0};
    eng_syrk_acc(h1, x, N, IN);
    eng_syrk_acc_ref(h2, x, N, IN);
    for (int i = 0; i < IN; i++)
        for (int j = i; j < IN; j++)
            ck_assert(fabs(h1[i * IN + j] - h2[i * IN + j]) < 1e-3);
}
END_TEST

// Products large enough to be cut in tiles (of rows, or of columns) and
// shared among threads: each agrees with a double-precision reference,
// and 1 and 3 threads give the same bytes.
static void gemm_ref(bool ta, bool tb, int m, int n, int k, const float *a,
                     const float *b, double *c)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++)
                s += (double)(ta ? a[p * m + i] : a[i * k + p]) *
                     (tb ? b[j * k + p] : b[p * n + j]);
            c[i * n + j] = s;
        }
}

START_TEST(test_linalg_tiles)
{
    const int shapes[][3] = {{1300, 300, 50}, {200, 1900, 40}};
    for (int s = 0; s < 2; s++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        float *a = malloc((size_t)m * k * sizeof *a);
        float *b = malloc((size_t)k * n * sizeof *b);
        float *c1 = malloc((size_t)m * n * sizeof *c1);
        float *c3 = malloc((size_t)m * n * sizeof *c3);
        double *r = malloc((size_t)m * n * sizeof *r);
        th_randn(a, (size_t)m * k, 31);
        th_randn(b, (size_t)k * n, 32);
        for (int t = 0; t < 4; t++) {
            bool ta = t & 1, tb = t & 2;
            eng_set_threads(1);
            eng_gemm(ta, tb, m, n, k, 1.0f, a, ta ? m : k, b, tb ? k : n, 0.0f,
                     c1, n);
            eng_set_threads(3);
            eng_gemm(ta, tb, m, n, k, 1.0f, a, ta ? m : k, b, tb ? k : n, 0.0f,
                     c3, n);
            ck_assert(memcmp(c1, c3, (size_t)m * n * sizeof *c1) == 0);
            gemm_ref(ta, tb, m, n, k, a, b, r);
            double e = 0;
            for (size_t i = 0; i < (size_t)m * n; i++)
                e = fmax(e, fabs(c1[i] - r[i]));
            ck_assert_msg(e < 1e-3, "%dx%dx%d ta %d tb %d: %g", m, n, k, ta,
                          tb != 0, e);
        }
        free(a);
        free(b);
        free(c1);
        free(c3);
        free(r);
    }
    // H += X^T X by column panels; the blocked factorisation above 512.
    enum { R = 900, C = 700 };
    float *x = malloc((size_t)R * C * sizeof *x);
    float *h1 = calloc((size_t)C * C, sizeof *h1);
    float *h3 = calloc((size_t)C * C, sizeof *h3);
    float *h2 = calloc((size_t)C * C, sizeof *h2);
    th_randn(x, (size_t)R * C, 33);
    eng_set_threads(1);
    eng_syrk_acc(h1, x, R, C);
    eng_set_threads(3);
    eng_syrk_acc(h3, x, R, C);
    eng_syrk_acc_ref(h2, x, R, C);
    ck_assert(memcmp(h1, h3, (size_t)C * C * sizeof *h1) == 0);
    for (int i = 0; i < C; i++)
        for (int j = i; j < C; j++)
            ck_assert(fabs(h1[i * C + j] - h2[i * C + j]) <
                      1e-4 * (fabs(h2[i * C + j]) + R));
    eng_sym_fill(h1, C);
    for (int i = 0; i < C; i++)
        h1[i * C + i] += 1.0f;
    memcpy(h3, h1, (size_t)C * C * sizeof *h3);
    memcpy(h2, h1, (size_t)C * C * sizeof *h2);
    eng_set_threads(1);
    ck_assert_int_eq(eng_chol_inverse_polled(h1, C, 0, NULL), 0);
    eng_set_threads(3);
    ck_assert_int_eq(eng_chol_inverse_polled(h3, C, 0, NULL), 0);
    ck_assert(memcmp(h1, h3, (size_t)C * C * sizeof *h1) == 0);
    ck_assert_int_eq(eng_chol_inverse_upper_ref(h2, C), 0);
    double e = 0, norm = 0;
    for (size_t i = 0; i < (size_t)C * C; i++) {
        e = fmax(e, fabs(h1[i] - h2[i]));
        norm = fmax(norm, fabs(h2[i]));
    }
    ck_assert_msg(e < 1e-4 * norm, "%g of %g", e, norm);
    eng_set_threads(1);
    free(x);
    free(h1);
    free(h2);
    free(h3);
}
END_TEST

// The BLAS core asked for: only in place of a generic one, the best the
// CPU's features allow.
START_TEST(test_blas_better_core)
{
    const unsigned avx2 = ENG_CPU_AVX2, avx512 = avx2 | ENG_CPU_AVX512,
                   bf16 = avx512 | ENG_CPU_AVX512_BF16;
    ck_assert_str_eq(eng_blas_better_core("Prescott", bf16), "Cooperlake");
    ck_assert_str_eq(eng_blas_better_core("Nehalem", avx512), "SkylakeX");
    ck_assert_str_eq(eng_blas_better_core("Core2", avx2), "Haswell");
    ck_assert_ptr_null(eng_blas_better_core("Prescott", 0));
    ck_assert_ptr_null(eng_blas_better_core("Haswell", bf16));
    ck_assert_ptr_null(eng_blas_better_core("skylakex", bf16));
    ck_assert_ptr_null(eng_blas_better_core("Zen", avx2));
    ck_assert_ptr_nonnull(eng_blas_core());
}
END_TEST

// U = chol(H^-1) upper: fast and reference agree, and U^T U H = I.
START_TEST(test_chol_inverse)
{
    enum { N = 24, S = 60 };
    float x[S * N], h[N * N] = {0};
    th_randn(x, S * N, 4);
    eng_syrk_acc_ref(h, x, S, N);
    eng_sym_fill(h, N);
    for (int i = 0; i < N; i++)
        h[i * N + i] += 0.1f;
    float a[N * N], r[N * N];
    memcpy(a, h, sizeof a);
    memcpy(r, h, sizeof r);
    ck_assert_int_eq(eng_chol_inverse_upper(a, N), 0);
    ck_assert_int_eq(eng_chol_inverse_upper_ref(r, N), 0);
    double scale = 0;
    for (int i = 0; i < N * N; i++)
        scale = fmax(scale, fabs(r[i]));
    ck_assert(max_abs_diff(a, r, N * N) / scale < 1e-4);
    for (int i = 0; i < N; i++) {
        ck_assert(a[i * N + i] > 0);
        for (int j = 0; j < i; j++)
            ck_assert(a[i * N + j] == 0);
    }
    // (U^T U) H = I
    for (int i = 0; i < N; i++) {
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < N; k++) {
                double inv = 0;
                for (int t = 0; t < N; t++)
                    inv += (double)a[t * N + i] * a[t * N + k];
                s += inv * h[k * N + j];
            }
            ck_assert(fabs(s - (i == j)) < 1e-3);
        }
    }
    // Not positive definite: refused.
    float bad[4] = {1, 2, 2, 1};
    ck_assert_int_eq(eng_chol_inverse_upper(bad, 2), SH_ENUMERIC);
}
END_TEST

static eng_model *open_fixture(const char *rel)
{
    char *p = th_fixture(rel);
    eng_model *m = NULL;
    sh_diag d;
    ck_assert_msg(eng_model_open(&m, p, &d) == 0, "%s", d.msg);
    free(p);
    return m;
}

// The Llama forward pass: logits of the first evaluation row against the
// reference logits, within 1e-4 absolute.
START_TEST(test_llama_logits_match_reference)
{
    eng_model *m = open_fixture("llama-kjv");
    eng_net *n = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_net_open(&n, m, &d), 0);
    char *refp = th_fixture("llama-kjv-data/reference-logits.safetensors");
    eng_st *st = NULL;
    ck_assert_int_eq(eng_st_open(&st, refp, &d), 0);
    const eng_st_header *h = eng_st_header_of(st);
    long ti = eng_st_header_find(h, "tokens"),
         li = eng_st_header_find(h, "logits");
    int64_t T = h->tensors[ti].shape[0];
    int32_t ids[256];
    for (int64_t t = 0; t < T; t++)
        ids[t] = (int32_t)eng_read_int(eng_st_data(st, (size_t)ti),
                                       h->tensors[ti].dtype, (size_t)t);
    float *logits = NULL;
    ck_assert_int_eq(eng_net_logits(n, ids, T, &logits, &d), 0);
    float *want = malloc((size_t)(T * 256) * sizeof *want);
    memcpy(want, eng_st_data(st, (size_t)li), (size_t)(T * 256) * sizeof *want);
    double err = max_abs_diff(logits, want, (size_t)(T * 256));
    ck_assert_msg(err < 1e-4, "max |logit - reference| = %g", err);
    free(want);
    free(logits);
    eng_st_close(st);
    free(refp);
    eng_net_close(n);
    eng_model_close(m);
}
END_TEST

static double metric_of(const char *model, const char *data)
{
    eng_model *m = open_fixture(model);
    eng_net *n = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_net_open(&n, m, &d), 0);
    char *p = th_fixture(data);
    eng_dataset ds;
    ck_assert_msg(eng_dataset_load(&ds, p, 0, eng_net_vocab(n),
                                   eng_net_classes(n), NULL, &d) == 0,
                  "%s", d.msg);
    eng_metric mt;
    ck_assert_int_eq(eng_net_evaluate(n, &ds, NULL, &mt, &d), 0);
    eng_dataset_deinit(&ds);
    free(p);
    eng_net_close(n);
    eng_model_close(m);
    return mt.value;
}

// Dense metrics equal REFERENCE.md within 0.1% relative.
START_TEST(test_dense_metrics)
{
    double ppl =
        metric_of("llama-kjv", "llama-kjv-data/evaluation.safetensors");
    ck_assert_msg(fabs(ppl / 3.4410 - 1) < 1e-3, "perplexity %.5f", ppl);
    double acc =
        metric_of("mlp-fmnist", "mlp-fmnist-data/evaluation.safetensors");
    ck_assert_msg(fabs(acc / 0.8900 - 1) < 1e-3, "accuracy %.5f", acc);
}
END_TEST

// H = X^T X for X (S, cols) random, with column dead set to zero.
static void make_hessian(float *h, int64_t s, int64_t cols, int dead,
                         uint64_t seed)
{
    float *x = malloc((size_t)(s * cols) * sizeof *x);
    th_randn(x, (size_t)(s * cols), seed);
    for (int64_t r = 0; dead >= 0 && r < s; r++)
        x[r * cols + dead] = 0;
    memset(h, 0, (size_t)(cols * cols) * sizeof *h);
    eng_syrk_acc(h, x, s, cols);
    eng_sym_fill(h, cols);
    free(x);
}

// SparseGPT: exact count (per block shares add up), dead inputs zeroed,
// N:M in every group, and a smaller reconstruction error than magnitude
// on the same statistics (what OBS updates are for).
START_TEST(test_sparsegpt_basics)
{
    enum { R = 16, C = 200, S = 400 };
    float *w = malloc(R * C * sizeof *w), *h = malloc(C * C * sizeof *h);
    float *orig = malloc(R * C * sizeof *orig),
          *work = malloc(R * C * sizeof *work);
    float *h0 = malloc(C * C * sizeof *h0);
    th_randn(orig, R * C, 5);
    make_hessian(h0, S, C, 7, 6);
    sh_diag d;
    double damp = 0;
    // Unstructured, with a block size that does not divide the columns.
    memcpy(w, orig, R * C * sizeof *w);
    memcpy(h, h0, C * C * sizeof *h);
    eng_sgpt_opts o = {.sparsity = 0.6, .blocksize = 64, .damp = 0.01};
    ck_assert_int_eq(eng_sparsegpt(w, h, R, C, &o, &damp, NULL, &d), 0);
    ck_assert_double_eq(damp, 0.01);
    ck_assert_uint_eq(eng_count_zeros(w, ENG_DTYPE_F32, R * C),
                      eng_count_for(0.6, R * C));
    for (int r = 0; r < R; r++)
        ck_assert(w[r * C + 7] == 0); // the dead input
    // Reconstruction error against magnitude at the same sparsity.
    for (int i = 0; i < R * C; i++)
        work[i] = orig[i] - w[i];
    double sg = eng_quad_trace(work, h0, R, C, h);
    float *mg = malloc(R * C * sizeof *mg);
    memcpy(mg, orig, R * C * sizeof *mg);
    eng_scorer sc;
    eng_scorer_init(&sc, ENG_SCORE_MAGNITUDE, ENG_DTYPE_F32, mg, R, C, 0, "t",
                    NULL);
    eng_threshold t;
    eng_select_one(&sc, eng_count_for(0.6, R * C), &t);
    uint64_t mask[(R * C + 63) / 64];
    eng_mask_threshold(mask, &sc, &t);
    for (int i = 0; i < R * C; i++)
        work[i] = eng_mask_get(mask, (uint64_t)i) ? orig[i] : 0;
    double mag = eng_quad_trace(work, h0, R, C, h);
    ck_assert_msg(sg < mag, "sparsegpt %g >= magnitude %g", sg, mag);
    free(mg);
    // 2:4 and 3:8.
    const int pats[][2] = {{2, 4}, {3, 8}};
    for (int p = 0; p < 2; p++) {
        memcpy(w, orig, R * C * sizeof *w);
        memcpy(h, h0, C * C * sizeof *h);
        eng_sgpt_opts on = {
            .n = pats[p][0], .m = pats[p][1], .blocksize = 128, .damp = 0.01};
        ck_assert_int_eq(eng_sparsegpt(w, h, R, C, &on, &damp, NULL, &d), 0);
        ck_assert(
            eng_check_nm(w, ENG_DTYPE_F32, R * C, pats[p][0], pats[p][1]));
    }
    free(w);
    free(h);
    free(h0);
    free(orig);
    free(work);
}
END_TEST

// Damping: an indefinite H is retried ten times larger until it works, and
// the value used is reported; hopeless ones and NaN are errors.
START_TEST(test_sparsegpt_damping_and_failures)
{
    float w[2 * 2] = {1, -2, 3, 0.5f};
    float h[4] = {1, 2, 2, 1}; // eigenvalues -1 and 3
    eng_sgpt_opts o = {.sparsity = 0.5, .blocksize = 128, .damp = 0.01};
    double damp = 0;
    sh_diag d;
    ck_assert_int_eq(eng_sparsegpt(w, h, 2, 2, &o, &damp, NULL, &d), 0);
    ck_assert_double_eq_tol(damp, 10.0, 1e-9);
    float w2[4] = {1, 2, 3, 4};
    float h2[4] = {1, 100, 100, 1}; // needs more than 10
    ck_assert_int_eq(eng_sparsegpt(w2, h2, 2, 2, &o, &damp, NULL, &d),
                     SH_ENUMERIC);
    ck_assert_ptr_nonnull(strstr(d.msg, "not positive definite"));
    float w3[4] = {1, NAN, 3, 4};
    float h3[4] = {2, 0, 0, 2};
    ck_assert_int_eq(eng_sparsegpt(w3, h3, 2, 2, &o, &damp, NULL, &d),
                     SH_ENUMERIC);
}
END_TEST

static bool stop_now(void *ctx)
{
    (void)ctx;
    return true;
}

// Cancellation is checked between column blocks.
START_TEST(test_sparsegpt_cancel)
{
    enum { R = 8, C = 64 };
    float w[R * C], h[C * C];
    th_randn(w, R * C, 8);
    make_hessian(h, 100, C, -1, 9);
    eng_sgpt_opts o = {.sparsity = 0.5, .blocksize = 16, .damp = 0.01};
    eng_hooks hk = {.cancelled = stop_now};
    double damp;
    sh_diag d;
    ck_assert_int_eq(eng_sparsegpt(w, h, R, C, &o, &damp, &hk, &d),
                     SH_ECANCELED);
}
END_TEST

// Datasets: kinds, shapes and values are checked against the model.
START_TEST(test_dataset_checks)
{
    char *dir = th_tmpdir();
    char *p = th_path(dir, "ds.safetensors");
    int32_t ids[6] = {1, 2, 3, 300, 5, 6}; // row 1 holds 300: outside 256
    th_tensor t[] = {{"tokens", "I32", 2, {2, 3}, ids}};
    th_write_st(p, t, 1, NULL);
    eng_dataset ds;
    sh_diag d;
    ck_assert_int_eq(eng_dataset_load(&ds, p, 0, 256, 0, NULL, &d), SH_EFORMAT);
    ck_assert_ptr_nonnull(strstr(d.msg, "token id 300"));
    ck_assert_int_eq(eng_dataset_load(&ds, p, 1, 256, 0, NULL, &d), 0); // row 0
    ck_assert_int_eq(ds.rows, 1);
    eng_dataset_deinit(&ds);
    // A token dataset for a classifier is refused with words.
    eng_model *m = open_fixture("mlp-fmnist");
    eng_net *n = NULL;
    ck_assert_int_eq(eng_net_open(&n, m, &d), 0);
    eng_dataset_info di = {.kind = ENG_DATASET_TOKENS, .rows = 2, .cols = 3};
    ck_assert_int_eq(eng_net_check_dataset(n, &di, &d), SH_EFORMAT);
    ck_assert_ptr_nonnull(strstr(d.msg, "needs a dataset of \"inputs\""));
    di = (eng_dataset_info){.kind = ENG_DATASET_INPUTS, .rows = 2, .cols = 10};
    ck_assert_int_eq(eng_net_check_dataset(n, &di, &d), SH_EFORMAT);
    ck_assert_ptr_nonnull(strstr(d.msg, "takes 784"));
    eng_net_close(n);
    eng_model_close(m);
    // A model with no config cannot run.
    char *w = th_fixture("llama-kjv/model.safetensors");
    ck_assert_int_eq(eng_model_open(&m, w, &d), 0);
    ck_assert_int_eq(eng_net_open(&n, m, &d), SH_EUNSUPPORTED);
    ck_assert_ptr_nonnull(strstr(d.msg, "config.json"));
    eng_model_close(m);
    free(w);
    th_rmtree(dir);
    free(p);
    free(dir);
}
END_TEST

static long load_polls;

static bool count_and_stop_at_3(void *ctx)
{
    (void)ctx;
    return ++load_polls >= 3;
}

// Loading a large float dataset polls the cancel hook every million
// values, and stops when it says so, holding nothing.
START_TEST(test_dataset_load_cancel)
{
    char *dir = th_tmpdir();
    char *p = th_path(dir, "big.safetensors");
    size_t rows = 2600, cols = 1000; // 2.6 M values
    float *v = malloc(rows * cols * sizeof *v);
    th_randn(v, rows * cols, 7);
    th_tensor t = {"inputs", "F32", 2, {(int64_t)rows, (int64_t)cols}, v};
    th_write_st(p, &t, 1, NULL);
    free(v);
    eng_dataset ds;
    sh_diag d;
    load_polls = 0;
    eng_hooks h = {.cancelled = count_and_stop_at_3};
    ck_assert_int_eq(eng_dataset_load(&ds, p, 0, 0, 0, &h, &d), SH_ECANCELED);
    ck_assert_int_eq(load_polls, 3);
    ck_assert_ptr_null(ds.inputs);
    load_polls = -100; // polls, never stops
    ck_assert_int_eq(eng_dataset_load(&ds, p, 0, 0, 0, &h, &d), 0);
    ck_assert_int_eq(load_polls, -100 + 3); // one per million values
    eng_dataset_deinit(&ds);
    th_rmtree(dir);
    free(dir);
    free(p);
}
END_TEST

// A non-finite feature is refused naming the first row that holds one,
// however many threads check the chunks (each chunk a million values).
START_TEST(test_dataset_nonfinite_row)
{
    char *dir = th_tmpdir();
    char *p = th_path(dir, "nan.safetensors");
    size_t rows = 2600, cols = 1000;
    float *v = malloc(rows * cols * sizeof *v);
    th_randn(v, rows * cols, 7);
    v[2500 * cols + 3] = INFINITY; // the third chunk
    th_tensor t = {"inputs", "F32", 2, {(int64_t)rows, (int64_t)cols}, v};
    eng_dataset ds;
    sh_diag d;
    for (int pass = 0; pass < 2; pass++) {
        if (pass)
            v[1500 * cols + 999] = NAN; // the second chunk: the first bad row
        th_write_st(p, &t, 1, NULL);
        for (int threads = 1; threads <= 4; threads += 3) {
            sh_par_threads(threads);
            ck_assert_int_eq(eng_dataset_load(&ds, p, 0, 0, 0, NULL, &d),
                             SH_EFORMAT);
            ck_assert_msg(strstr(d.msg, pass ? "at row 1500" : "at row 2500"),
                          "%s", d.msg);
            ck_assert_ptr_null(ds.inputs);
        }
    }
    sh_par_threads(1);
    free(v);
    th_rmtree(dir);
    free(dir);
    free(p);
}
END_TEST

// A lazy load leaves F32 inputs unread: rows come from the file piece by
// piece, the same values as the mapping's, each read checked; a check of
// them all names the first bad row, as a plain load does.
START_TEST(test_dataset_read_rows)
{
    char *dir = th_tmpdir();
    char *p = th_path(dir, "x.safetensors");
    size_t rows = 700, cols = 1000; // pieces of 262 rows
    float *v = malloc(rows * cols * sizeof *v);
    th_randn(v, rows * cols, 9);
    v[650 * cols + 5] = NAN;
    th_tensor t = {"inputs", "F32", 2, {(int64_t)rows, (int64_t)cols}, v};
    th_write_st_padded(p, &t, 1);
    float *out = malloc(rows * cols * sizeof *out);
    eng_dataset ds;
    sh_diag d;
    for (int threads = 1; threads <= 4; threads += 3) {
        sh_par_threads(threads);
        ck_assert_int_eq(eng_dataset_load_lazy(&ds, p, 0, 0, 0, NULL, &d), 0);
        ck_assert(ds.unchecked);
        ck_assert_int_eq(eng_dataset_read_rows(&ds, 3, 600, out, &d), 0);
        ck_assert_mem_eq(out, v + 3 * cols, 600 * cols * sizeof *out);
        ck_assert_int_eq(eng_dataset_read_rows(&ds, 100, 600, out, &d),
                         SH_EFORMAT);
        ck_assert_msg(strstr(d.msg, "at row 650"), "%s", d.msg);
        ck_assert_int_eq(eng_dataset_check_rows(&ds, NULL, &d), SH_EFORMAT);
        ck_assert_msg(strstr(d.msg, "at row 650"), "%s", d.msg);
        ck_assert(ds.unchecked);
        eng_dataset_deinit(&ds);
        // The first 650 rows alone are clean.
        ck_assert_int_eq(eng_dataset_load_lazy(&ds, p, 650, 0, 0, NULL, &d), 0);
        ck_assert_int_eq(eng_dataset_check_rows(&ds, NULL, &d), 0);
        ck_assert(!ds.unchecked);
        ck_assert_int_eq(eng_dataset_read_rows(&ds, 600, 51, out, &d),
                         SH_EINVAL); // past the rows loaded
        eng_dataset_deinit(&ds);
    }
    sh_par_threads(1);
    free(out);
    free(v);
    th_rmtree(dir);
    free(dir);
    free(p);
}
END_TEST

// --- the weight overlay
//
// A tensor pruned in memory and set as an overlay gives the same results as
// the model written to disk with those values, bit for bit; clearing it
// gives the checkpoint's results again.

typedef struct swap {
    const char *tensor;
    const float *values; // numel F32
} swap;

// dir/config.json and dir/model.safetensors: the fixture's, with the
// swapped tensors' values replaced (every fixture tensor is F32).
static void write_swapped(const char *fixture, const swap *sw, size_t n,
                          const char *dir)
{
    char rel[256];
    snprintf(rel, sizeof rel, "%s/config.json", fixture);
    char *cfg = th_fixture(rel);
    size_t len;
    unsigned char *bytes = th_read_file(cfg, &len);
    char *out = th_path(dir, "config.json");
    th_write_file(out, bytes, len);
    free(out);
    free(bytes);
    free(cfg);
    snprintf(rel, sizeof rel, "%s/model.safetensors", fixture);
    char *p = th_fixture(rel);
    eng_st *st = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_st_open(&st, p, &d), 0);
    const eng_st_header *h = eng_st_header_of(st);
    th_tensor *ts = calloc(h->count, sizeof *ts);
    for (size_t i = 0; i < h->count; i++) {
        const eng_tensor_info *t = &h->tensors[i];
        ck_assert_int_eq(t->dtype, ENG_DTYPE_F32);
        ts[i] = (th_tensor){t->name, "F32", t->ndim, {0}, eng_st_data(st, i)};
        for (int k = 0; k < t->ndim; k++)
            ts[i].shape[k] = t->shape[k];
        for (size_t j = 0; j < n; j++)
            if (strcmp(t->name, sw[j].tensor) == 0)
                ts[i].data = sw[j].values;
    }
    out = th_path(dir, "model.safetensors");
    th_write_st(out, ts, h->count, NULL);
    free(out);
    free(ts);
    eng_st_close(st);
    free(p);
}

// The tensor called name as F32 (malloc'd), with every third value zeroed.
static float *pruned_copy(eng_net *n, const eng_model *m, const char *name,
                          size_t *ti)
{
    long i = eng_model_find(m, name);
    ck_assert_int_ge(i, 0);
    *ti = (size_t)i;
    const eng_tensor_info *t = eng_model_tensor(m, *ti);
    size_t block, linear;
    float *w = malloc(t->numel * sizeof *w);
    sh_diag d;
    if (eng_net_find_linear(n, *ti, &block, &linear)) {
        eng_net_block *b = NULL;
        ck_assert_int_eq(eng_net_block_open(n, block, &b, &d), 0);
        memcpy(w, eng_net_block_weight(b, linear), t->numel * sizeof *w);
        eng_net_block_close(b);
    } else { // not a linear (the embedding): straight from the file
        char *p = th_fixture("llama-kjv/model.safetensors");
        eng_st *st = NULL;
        ck_assert_int_eq(eng_st_open(&st, p, &d), 0);
        long k = eng_st_header_find(eng_st_header_of(st), name);
        memcpy(w, eng_st_data(st, (size_t)k), t->numel * sizeof *w);
        eng_st_close(st);
        free(p);
    }
    for (uint64_t j = 0; j < t->numel; j += 3)
        w[j] = 0;
    return w;
}

static eng_metric evaluate(eng_net *n, const char *data)
{
    char *p = th_fixture(data);
    eng_dataset ds;
    sh_diag d;
    ck_assert_msg(eng_dataset_load(&ds, p, 0, eng_net_vocab(n),
                                   eng_net_classes(n), NULL, &d) == 0,
                  "%s", d.msg);
    eng_metric mt;
    ck_assert_int_eq(eng_net_evaluate(n, &ds, NULL, &mt, &d), 0);
    eng_dataset_deinit(&ds);
    free(p);
    return mt;
}

static bool same_metric(eng_metric a, eng_metric b)
{
    return a.value == b.value && a.loss == b.loss;
}

START_TEST(test_net_overlay_matches_disk_mlp)
{
    const char *data = "mlp-fmnist-data/evaluation.safetensors";
    eng_model *m = open_fixture("mlp-fmnist");
    eng_net *n = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_net_open(&n, m, &d), 0);
    eng_metric dense = evaluate(n, data);
    size_t ti;
    float *w = pruned_copy(n, m, "fc1.weight", &ti);
    ck_assert_int_eq(eng_net_overlay_set(n, ti, w, &d), 0);
    // The block loads the overlay's values.
    eng_net_block *b = NULL;
    ck_assert_int_eq(eng_net_block_open(n, 0, &b, &d), 0);
    const eng_tensor_info *t = eng_model_tensor(m, ti);
    ck_assert(memcmp(eng_net_block_weight(b, 0), w, t->numel * sizeof *w) == 0);
    eng_net_block_close(b);
    eng_metric over = evaluate(n, data);
    ck_assert(over.loss != dense.loss);
    // The same zeros written to disk.
    char *dir = th_tmpdir();
    swap sw = {"fc1.weight", w};
    write_swapped("mlp-fmnist", &sw, 1, dir);
    eng_model *m2 = NULL;
    eng_net *n2 = NULL;
    ck_assert_msg(eng_model_open(&m2, dir, &d) == 0, "%s", d.msg);
    ck_assert_int_eq(eng_net_open(&n2, m2, &d), 0);
    eng_metric disk = evaluate(n2, data);
    ck_assert_msg(same_metric(over, disk),
                  "overlay %.17g/%.17g, disk %.17g/%.17g", over.value,
                  over.loss, disk.value, disk.loss);
    // Cleared: the checkpoint's values again.
    eng_net_overlay_clear(n, ti);
    ck_assert(same_metric(evaluate(n, data), dense));
    // A tensor outside the model is refused.
    ck_assert_int_eq(eng_net_overlay_set(n, eng_model_tensor_count(m), w, &d),
                     SH_EINVAL);
    eng_net_close(n2);
    eng_model_close(m2);
    eng_net_close(n);
    eng_model_close(m);
    free(w);
    th_rmtree(dir);
    free(dir);
}
END_TEST

// The decoder: an overlay on a block's linear and on the embedding (read
// row by row), for both the metric and the logits.
START_TEST(test_net_overlay_matches_disk_llama)
{
    const char *data = "llama-kjv-data/evaluation.safetensors";
    eng_model *m = open_fixture("llama-kjv");
    eng_net *n = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_net_open(&n, m, &d), 0);
    eng_metric dense = evaluate(n, data);
    int32_t ids[16];
    for (int i = 0; i < 16; i++)
        ids[i] = (int32_t)(i * 37 % 256);
    float *dense_logits = NULL;
    ck_assert_int_eq(eng_net_logits(n, ids, 16, &dense_logits, &d), 0);
    swap sw[2] = {{"model.layers.1.self_attn.q_proj.weight", NULL},
                  {"model.embed_tokens.weight", NULL}};
    float *w[2];
    for (int i = 0; i < 2; i++) {
        size_t ti;
        sw[i].values = w[i] = pruned_copy(n, m, sw[i].tensor, &ti);
        ck_assert_int_eq(eng_net_overlay_set(n, ti, w[i], &d), 0);
    }
    eng_metric over = evaluate(n, data);
    ck_assert(over.value != dense.value);
    float *over_logits = NULL;
    ck_assert_int_eq(eng_net_logits(n, ids, 16, &over_logits, &d), 0);
    char *dir = th_tmpdir();
    write_swapped("llama-kjv", sw, 2, dir);
    eng_model *m2 = NULL;
    eng_net *n2 = NULL;
    ck_assert_msg(eng_model_open(&m2, dir, &d) == 0, "%s", d.msg);
    ck_assert_int_eq(eng_net_open(&n2, m2, &d), 0);
    ck_assert(same_metric(over, evaluate(n2, data)));
    float *disk_logits = NULL;
    ck_assert_int_eq(eng_net_logits(n2, ids, 16, &disk_logits, &d), 0);
    size_t nl = 16 * (size_t)eng_net_vocab(n);
    ck_assert(memcmp(over_logits, disk_logits, nl * sizeof(float)) == 0);
    ck_assert(memcmp(over_logits, dense_logits, nl * sizeof(float)) != 0);
    for (int i = 0; i < 2; i++)
        eng_net_overlay_clear(n, (size_t)eng_model_find(m, sw[i].tensor));
    ck_assert(same_metric(evaluate(n, data), dense));
    float *again = NULL;
    ck_assert_int_eq(eng_net_logits(n, ids, 16, &again, &d), 0);
    ck_assert(memcmp(again, dense_logits, nl * sizeof(float)) == 0);
    free(again);
    free(disk_logits);
    free(over_logits);
    free(dense_logits);
    eng_net_close(n2);
    eng_model_close(m2);
    eng_net_close(n);
    eng_model_close(m);
    free(w[0]);
    free(w[1]);
    th_rmtree(dir);
    free(dir);
}
END_TEST

// The structure groups a family reports, and its name.
START_TEST(test_net_groups)
{
    eng_model *m = open_fixture("llama-kjv");
    eng_net *n = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_net_open(&n, m, &d), 0);
    ck_assert_str_eq(eng_net_family(n), "llama");
    eng_net_group g[ENG_NET_MAX_GROUPS];
    size_t count = eng_net_groups(n, 0, g, ENG_NET_MAX_GROUPS);
    ck_assert_uint_eq(count, 4);
    ck_assert_str_eq(eng_group_kind_name(g[1].kind), "head");
    ck_assert_int_eq(g[1].count, 4);         // num_attention_heads
    ck_assert_int_eq(g[1].span[0].size, 32); // hidden_size / heads
    ck_assert_int_eq(g[3].kind, ENG_GROUP_CHANNEL);
    ck_assert_int_eq(g[3].count, 384); // intermediate_size
    const eng_net_linear *lin;
    eng_net_linears(n, 0, &lin);
    for (size_t k = 0; k < count; k++) // each span tiles its rows or columns
        for (int q = 0; q < g[k].nspans; q++) {
            const eng_group_span *sp = &g[k].span[q];
            const eng_net_linear *l = &lin[sp->linear];
            ck_assert_int_eq(sp->cols ? l->cols : l->rows,
                             g[k].count * sp->size);
        }
    ck_assert_uint_eq(eng_net_groups(n, 0, g, 1), 4); // cap respected
    eng_net_close(n);
    eng_model_close(m);
    m = open_fixture("mlp-fmnist");
    ck_assert_int_eq(eng_net_open(&n, m, &d), 0);
    ck_assert_str_eq(eng_net_family(n), "mlp");
    ck_assert_uint_eq(eng_net_groups(n, 0, g, ENG_NET_MAX_GROUPS), 2);
    ck_assert_int_eq(g[1].count, 512);
    ck_assert(g[1].span[1].next && g[1].span[1].cols);
    ck_assert_int_eq(g[1].consumer, 1);
    ck_assert_uint_eq(eng_net_groups(n, 2, g, ENG_NET_MAX_GROUPS), 1);
    eng_net_close(n);
    eng_model_close(m);
}
END_TEST

Suite *suite_net(void)
{
    Suite *s = suite_create("net");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_linalg_matches_reference);
    tcase_add_test(tc, test_linalg_tiles);
    tcase_add_test(tc, test_blas_better_core);
    tcase_add_test(tc, test_chol_inverse);
    tcase_add_test(tc, test_llama_logits_match_reference);
    tcase_add_test(tc, test_dense_metrics);
    tcase_add_test(tc, test_sparsegpt_basics);
    tcase_add_test(tc, test_sparsegpt_damping_and_failures);
    tcase_add_test(tc, test_sparsegpt_cancel);
    tcase_add_test(tc, test_dataset_checks);
    tcase_add_test(tc, test_dataset_load_cancel);
    tcase_add_test(tc, test_dataset_nonfinite_row);
    tcase_add_test(tc, test_dataset_read_rows);
    tcase_add_test(tc, test_net_overlay_matches_disk_mlp);
    tcase_add_test(tc, test_net_overlay_matches_disk_llama);
    tcase_add_test(tc, test_net_groups);
    suite_add_tcase(s, tc);
    return s;
}

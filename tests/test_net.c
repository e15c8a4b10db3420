// test_net.c: the numerics: BLAS paths against scalar references, the
// forward passes against the reference logits and metrics, SparseGPT's
// edge cases, datasets.
#include "tests/helpers.h"

#include "engine/engine.h"
#include "engine/io/dataset.h"
#include "engine/io/model.h"
#include "engine/math/linalg.h"
#include "engine/methods/sparsegpt.h"
#include "engine/nets/net.h"
#include "engine/select/mask.h"

#include <math.h>
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
    ck_assert(eng_chol_inverse_upper(a, N));
    ck_assert(eng_chol_inverse_upper_ref(r, N));
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
    ck_assert(!eng_chol_inverse_upper(bad, 2));
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

Suite *suite_net(void)
{
    Suite *s = suite_create("net");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_linalg_matches_reference);
    tcase_add_test(tc, test_chol_inverse);
    tcase_add_test(tc, test_llama_logits_match_reference);
    tcase_add_test(tc, test_dense_metrics);
    tcase_add_test(tc, test_sparsegpt_basics);
    tcase_add_test(tc, test_sparsegpt_damping_and_failures);
    tcase_add_test(tc, test_sparsegpt_cancel);
    tcase_add_test(tc, test_dataset_checks);
    tcase_add_test(tc, test_dataset_load_cancel);
    suite_add_tcase(s, tc);
    return s;
}

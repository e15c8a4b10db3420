// test_grad.c: the backward pass against PyTorch autograd. The references
// (tests/fixtures/grad/, made by tools/ref-gradients.py) hold the gradient
// of the mean loss over the first calibration rows of each model, and for
// the small Qwen2-style model (grouped-query attention, tied embeddings,
// q/k/v biases, a sliding window shorter than its rows) the Fisher sums.
#include "tests/helpers.h"

#include "common/util.h"
#include "engine/engine.h"
#include "engine/io/model.h"
#include "engine/io/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ||a - b|| / ||b|| over n floats.
static double rel_err(const float *a, const float *b, uint64_t n)
{
    double num = 0, den = 0;
    for (uint64_t i = 0; i < n; i++) {
        double e = (double)a[i] - b[i];
        num += e * e;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

// The engine's gradients of model over rows of calib against the
// reference file: the same tensors, each within 1e-4.
static void check_against(const char *model, const char *calib, int64_t rows,
                          bool fisher, const char *reference)
{
    char *mp = th_fixture(model), *cp = th_fixture(calib);
    char *rp = th_fixture(reference);
    sh_diag d;
    sh_diag_clear(&d);
    eng_model *m = NULL;
    ck_assert_int_eq(eng_model_open(&m, mp, &d), 0);
    eng_grads g;
    char *dir = th_tmpdir(), *gp = th_path(dir, "g.safetensors");
    int rc = eng_gradients(m, cp, rows, NULL, fisher, gp, NULL, &g, &d);
    ck_assert_msg(rc == 0, "%s: %s", model, d.msg);
    ck_assert_int_eq(g.rows, rows);
    ck_assert(isfinite(g.loss) && g.loss > 0);
    eng_st *ref = NULL;
    ck_assert_int_eq(eng_st_open(&ref, rp, &d), 0);
    const eng_st_header *h = eng_st_header_of(ref);
    size_t matched = 0;
    double worst = 0;
    for (size_t i = 0; i < h->count; i++) {
        const eng_tensor_info *t = &h->tensors[i];
        bool is_f = strncmp(t->name, "fisher.", 7) == 0;
        long ti = eng_model_find(m, is_f ? t->name + 7 : t->name);
        ck_assert_msg(ti >= 0, "%s: no tensor for %s", model, t->name);
        const float *mine = is_f ? g.fisher[ti] : g.g[ti];
        ck_assert_msg(mine, "%s: the engine has no %s", model, t->name);
        ck_assert(t->dtype == ENG_DTYPE_F32);
        ck_assert_uint_eq(t->numel, eng_model_tensor(m, (size_t)ti)->numel);
        double e = rel_err(mine, eng_st_data(ref, i), t->numel);
        ck_assert_msg(e < 1e-4, "%s: %s off by %.3g", model, t->name, e);
        worst = e > worst ? e : worst;
        matched++;
    }
    // Nothing the reference lacks: one gradient per tensor the model
    // reads (a tied head is the embedding), Fisher sums only when asked.
    size_t have = 0;
    for (size_t t = 0; t < g.count; t++)
        have += (g.g[t] != NULL) + (g.fisher[t] != NULL);
    ck_assert_uint_eq(have, matched);
    ck_assert(fisher || have == matched);
    fprintf(stderr, "grad %s: %zu tensors, worst relative error %.2e\n", model,
            matched, worst);
    eng_st_close(ref);
    eng_grads_deinit(&g);
    eng_model_close(m);
    th_rmtree(dir);
    free(dir);
    free(gp);
    free(mp);
    free(cp);
    free(rp);
}

START_TEST(test_grad_llama_matches_autograd)
{
    check_against("llama-kjv", "llama-kjv-data/calibration.safetensors", 4,
                  false, "grad/llama-kjv-reference.safetensors");
}
END_TEST

START_TEST(test_grad_mlp_matches_autograd)
{
    check_against("mlp-fmnist", "mlp-fmnist-data/calibration.safetensors", 64,
                  false, "grad/mlp-fmnist-reference.safetensors");
}
END_TEST

// GQA 4/2, tied embeddings, q/k/v biases, a window of 6 over 16 tokens,
// with the Fisher sums.
START_TEST(test_grad_gqa_tied_bias_window_matches_autograd)
{
    check_against("grad/qwen2-tiny", "grad/qwen2-tiny-tokens.safetensors", 6,
                  true, "grad/qwen2-tiny-reference.safetensors");
}
END_TEST

// The same bytes for any thread count, and `want` keeps only what it says.
START_TEST(test_grad_threads_and_want)
{
    char *mp = th_fixture("grad/qwen2-tiny");
    char *cp = th_fixture("grad/qwen2-tiny-tokens.safetensors");
    sh_diag d;
    eng_model *m = NULL;
    ck_assert_int_eq(eng_model_open(&m, mp, &d), 0);
    eng_grads a, b;
    char *dir = th_tmpdir(), *pa = th_path(dir, "a"), *pb = th_path(dir, "b");
    eng_set_threads(1);
    ck_assert_int_eq(eng_gradients(m, cp, 0, NULL, true, pa, NULL, &a, &d), 0);
    eng_set_threads(4);
    size_t n = eng_model_tensor_count(m);
    bool *want = calloc(n, sizeof *want);
    long q = eng_model_find(m, "model.layers.1.self_attn.q_proj.weight");
    ck_assert(q >= 0);
    want[q] = true;
    ck_assert_int_eq(eng_gradients(m, cp, 0, want, true, pb, NULL, &b, &d), 0);
    for (size_t t = 0; t < n; t++)
        ck_assert((b.g[t] != NULL) == (t == (size_t)q));
    uint64_t numel = eng_model_tensor(m, (size_t)q)->numel;
    ck_assert(memcmp(a.g[q], b.g[q], numel * 4) == 0);
    ck_assert(memcmp(a.fisher[q], b.fisher[q], numel * 4) == 0);
    ck_assert_int_eq(a.rows, 6);
    eng_grads_deinit(&a);
    eng_grads_deinit(&b);
    free(want);
    eng_model_close(m);
    th_rmtree(dir);
    free(dir);
    free(pa);
    free(pb);
    free(mp);
    free(cp);
}
END_TEST

// An overflow on one row is an error naming the tensor and the row,
// never a silent NaN; the file writer leaves nothing half-written.
START_TEST(test_grad_overflow_names_tensor_and_row)
{
    char *dir = th_tmpdir();
    char *cfg = th_path(dir, "config.json");
    const char *cfg_json = "{\"model_type\": \"mlp\", \"layers\": [\"a\", "
                           "\"b\"], \"hidden_act\": \"relu\"}";
    th_write_file(cfg, cfg_json, strlen(cfg_json));
    float wa[4 * 3], wb[2 * 4];
    for (int i = 0; i < 12; i++)
        wa[i] = 1e20f;
    for (int i = 0; i < 8; i++)
        wb[i] = i % 2 ? 1.0f : -1.0f;
    th_tensor mt[] = {{"a.weight", "F32", 2, {4, 3}, wa},
                      {"b.weight", "F32", 2, {2, 4}, wb}};
    char *model = th_path(dir, "model.safetensors");
    th_write_st(model, mt, 2, NULL);
    float x[4 * 3] = {0};
    for (int i = 0; i < 3; i++) {
        x[i] = 1e-21f;     // row 0: small
        x[3 + i] = 2e-21f; // row 1: small
        x[6 + i] = 1e20f;  // row 2: a * x overflows
        x[9 + i] = 1e-21f;
    }
    int32_t y[4] = {0, 1, 0, 1};
    th_tensor dt[] = {{"inputs", "F32", 2, {4, 3}, x},
                      {"labels", "I32", 1, {4}, y}};
    char *calib = th_path(dir, "calib.safetensors");
    th_write_st(calib, dt, 2, NULL);
    sh_diag d;
    sh_diag_clear(&d);
    eng_model *m = NULL;
    ck_assert_int_eq(eng_model_open(&m, dir, &d), 0);
    eng_grads g;
    char *gp = th_path(dir, "g.safetensors");
    ck_assert_int_eq(eng_gradients(m, calib, 2, NULL, false, gp, NULL, &g, &d),
                     0);
    eng_grads_deinit(&g);
    unlink(gp);
    int rc = eng_gradients(m, calib, 0, NULL, false, gp, NULL, &g, &d);
    ck_assert_int_eq(rc, SH_ENUMERIC);
    ck_assert_msg(strstr(d.msg, "row 2") && strstr(d.msg, ".weight"), "%s",
                  d.msg);
    ck_assert_str_eq(d.field, "b.weight");
    ck_assert(g.g == NULL);
    ck_assert(!sh_path_exists(gp)); // nothing half-written
    free(gp);
    eng_model_close(m);
    free(cfg);
    free(model);
    free(calib);
    th_rmtree(dir);
    free(dir);
}
END_TEST

Suite *suite_grad(void)
{
    Suite *s = suite_create("grad");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_grad_llama_matches_autograd);
    tcase_add_test(tc, test_grad_mlp_matches_autograd);
    tcase_add_test(tc, test_grad_gqa_tied_bias_window_matches_autograd);
    tcase_add_test(tc, test_grad_threads_and_want);
    tcase_add_test(tc, test_grad_overflow_names_tensor_and_row);
    suite_add_tcase(s, tc);
    return s;
}

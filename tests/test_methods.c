// test_methods.c: every row of REFERENCE.md on both fixtures: the metric
// within tolerance of the reference implementations (perplexity <= ref x
// 1.02, accuracy >= ref - 0.01), the sparsity exact, N:M in every group of
// the written file, and SparseGPT ahead of magnitude where the reference
// says it is.
//
// Two rows differ by design and are checked at the reference's own counts
// (through per-tensor overrides), with our counts checked for exactness:
// the reference prunes floor(s * cols) per row for Wanda and floor(s *
// numel) + 1 per tensor for magnitude, where the issue asks for round().
// On llama-kjv wanda:0.7 (90 of 128 per row instead of 89) and on
// mlp-fmnist magnitude:0.8 (one weight more or less per tensor, on a
// cliff) that alone moves the metric past the tolerance; at the
// reference's counts ours gives the reference's figures.
#include "tests/helpers.h"

#include "common/util.h"
#include "engine/engine.h"
#include "engine/mask.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ref_row {
    const char *method;
    const char *shape;     // JSON fields: "sparsity":0.5 or "pattern":"2:4"
    double ref;            // the reference's metric
    const char *overrides; // the reference's counts, for the two rows above
} ref_row;

static const ref_row llama_rows[] = {
    {"magnitude", "\"sparsity\":0.5", 3.6365, NULL},
    {"wanda", "\"sparsity\":0.5", 3.6462, NULL},
    {"sparsegpt", "\"sparsity\":0.5", 3.5278, NULL},
    {"magnitude", "\"pattern\":\"2:4\"", 4.3616, NULL},
    {"wanda", "\"pattern\":\"2:4\"", 4.3445, NULL},
    {"sparsegpt", "\"pattern\":\"2:4\"", 3.6075, NULL},
    {"magnitude", "\"pattern\":\"4:8\"", 3.9482, NULL},
    {"wanda", "\"pattern\":\"4:8\"", 3.9095, NULL},
    {"sparsegpt", "\"pattern\":\"4:8\"", 3.5514, NULL},
    {"magnitude", "\"sparsity\":0.7", 5.6454, NULL},
    {"wanda", "\"sparsity\":0.7", 5.3743,
     // 89 of 128 and 268 of 384 per row, as floor(0.7 * cols)
     "\"sparsity\":0.6953125,\"overrides\":[{\"match\":\"down_proj\","
     "\"sparsity\":0.6979166666666666}]"},
    {"sparsegpt", "\"sparsity\":0.7", 4.0670, NULL},
};

static const ref_row mlp_rows[] = {
    {"magnitude", "\"sparsity\":0.5", 0.8840, NULL},
    {"wanda", "\"sparsity\":0.5", 0.8840, NULL},
    {"sparsegpt", "\"sparsity\":0.5", 0.8870, NULL},
    {"magnitude", "\"pattern\":\"2:4\"", 0.8760, NULL},
    {"wanda", "\"pattern\":\"2:4\"", 0.8685, NULL},
    {"sparsegpt", "\"pattern\":\"2:4\"", 0.8905, NULL},
    {"magnitude", "\"pattern\":\"4:8\"", 0.8750, NULL},
    {"wanda", "\"pattern\":\"4:8\"", 0.8775, NULL},
    {"sparsegpt", "\"pattern\":\"4:8\"", 0.8860, NULL},
    {"magnitude", "\"sparsity\":0.7", 0.8205, NULL},
    {"wanda", "\"sparsity\":0.7", 0.8200, NULL},
    {"sparsegpt", "\"sparsity\":0.7", 0.8875, NULL},
    {"magnitude", "\"sparsity\":0.8", 0.6710,
     // floor(0.8 * numel) + 1 per tensor
     "\"sparsity\":0.8,\"overrides\":[{\"match\":\"fc1\",\"sparsity\":"
     "0.8000024912308972},{\"match\":\"fc2\",\"sparsity\":"
     "0.80000305175781250},{\"match\":\"fc3\",\"sparsity\":0.80039062500}]"},
    {"wanda", "\"sparsity\":0.8", 0.5480, NULL},
    {"sparsegpt", "\"sparsity\":0.8", 0.8675, NULL},
    {"magnitude", "\"sparsity\":0.9", 0.3570, NULL},
    {"wanda", "\"sparsity\":0.9", 0.1945, NULL},
    {"sparsegpt", "\"sparsity\":0.9", 0.7440, NULL},
};

typedef struct outcome {
    double metric;
    int rc;
    char msg[400];
} outcome;

// Runs one spec on a fixture with its calibration (every row) and
// evaluation data; checks sparsity and N:M on the written file.
static outcome run_row(const char *fixture, const char *method,
                       const char *shape)
{
    char *model = th_fixture(fixture);
    char data[256], calib_rel[300], eval_rel[300];
    snprintf(data, sizeof data, "%s-data", fixture);
    snprintf(calib_rel, sizeof calib_rel, "%s/calibration.safetensors", data);
    snprintf(eval_rel, sizeof eval_rel, "%s/evaluation.safetensors", data);
    char *calib = th_fixture(calib_rel), *eval = th_fixture(eval_rel);
    char spec_text[1024];
    bool calibrated = strcmp(method, "magnitude") != 0;
    snprintf(spec_text, sizeof spec_text, "{\"method\":\"%s\",%s}", method,
             shape);
    outcome out = {0};
    char *dir = th_tmpdir();
    char *dst = th_path(dir, "out");
    sh_mkdir_p(dst);
    json_t *j = json_loads(spec_text, 0, NULL);
    ck_assert_msg(j, "bad spec %s", spec_text);
    if (calibrated)
        json_object_set_new(j, "calibration",
                            json_pack("{s:s}", "dataset", calib));
    eng_spec s;
    sh_diag d;
    ck_assert_msg(eng_spec_parse(&s, j, &d) == 0, "%s", d.msg);
    json_decref(j);
    eng_model *m = NULL;
    ck_assert_int_eq(eng_model_open(&m, model, &d), 0);
    eng_report r;
    eng_report_init(&r, &s);
    eng_options o = {.out_dir = dst,
                     .calibration_path = calibrated ? calib : NULL,
                     .evaluation_path = eval};
    out.rc = eng_prune(m, &s, &o, NULL, &r, &d);
    snprintf(out.msg, sizeof out.msg, "%s %s: %s", method, shape, d.msg);
    if (out.rc == 0) {
        ck_assert(r.has_metric);
        out.metric = r.metric_pruned;
        char *w = th_path(dst, "model.safetensors");
        eng_st *st = NULL;
        ck_assert_int_eq(eng_st_open(&st, w, &d), 0);
        for (size_t i = 0; i < r.n_layers; i++) {
            const eng_layer_report *l = &r.layers[i];
            ck_assert_msg(l->pattern_ok, "%s: %s", out.msg, l->name);
            ck_assert_msg(!isnan(l->recon_error) || !calibrated, "%s: %s",
                          out.msg, l->name);
            uint64_t rows = (uint64_t)l->shape[0], cols = l->params / rows;
            long k = eng_st_header_find(eng_st_header_of(st), l->name);
            const void *bytes = eng_st_data(st, (size_t)k);
            if (l->pattern.kind == ENG_PATTERN_NM) {
                uint64_t want = l->params / (uint64_t)l->pattern.m *
                                (uint64_t)(l->pattern.m - l->pattern.n);
                ck_assert(eng_check_nm(bytes, l->dtype, l->params, l->pattern.n,
                                       l->pattern.m));
                // Dead inputs (SparseGPT zeroes them) may add zeros.
                ck_assert_msg(l->zeros >= want, "%s: %s", out.msg, l->name);
            } else {
                uint64_t want =
                    strcmp(method, "wanda") == 0
                        ? rows * eng_count_for(l->target_sparsity, cols)
                        : eng_count_for(l->target_sparsity, l->params);
                ck_assert_msg(l->zeros == want,
                              "%s: %s has %llu zeros, want %llu", out.msg,
                              l->name, (unsigned long long)l->zeros,
                              (unsigned long long)want);
            }
            ck_assert_uint_eq(eng_count_zeros(bytes, l->dtype, l->params),
                              l->zeros);
        }
        eng_st_close(st);
        free(w);
    }
    eng_report_deinit(&r);
    eng_model_close(m);
    eng_spec_deinit(&s);
    th_rmtree(dir);
    free(dst);
    free(dir);
    free(model);
    free(calib);
    free(eval);
    return out;
}

static void run_table(const char *fixture, const ref_row *rows, size_t n,
                      bool lower_is_better)
{
    outcome *got = calloc(n, sizeof *got);
    for (size_t i = 0; i < n; i++) {
        const ref_row *row = &rows[i];
        got[i] = run_row(fixture, row->method, row->shape);
        ck_assert_msg(got[i].rc == 0, "%s", got[i].msg);
        double at_ref = got[i].metric;
        if (row->overrides) {
            // Our counts are exact (checked above); the tolerance is held
            // at the reference's counts, see the top of this file.
            outcome o = run_row(fixture, row->method, row->overrides);
            ck_assert_msg(o.rc == 0, "%s", o.msg);
            at_ref = o.metric;
        }
        if (lower_is_better)
            ck_assert_msg(at_ref <= row->ref * 1.02,
                          "%s %s %s: perplexity %.4f, reference %.4f", fixture,
                          row->method, row->shape, at_ref, row->ref);
        else
            ck_assert_msg(at_ref >= row->ref - 0.01,
                          "%s %s %s: accuracy %.4f, reference %.4f", fixture,
                          row->method, row->shape, at_ref, row->ref);
    }
    // SparseGPT ahead of magnitude wherever the reference has it ahead.
    for (size_t i = 0; i < n; i++) {
        if (strcmp(rows[i].method, "sparsegpt") != 0)
            continue;
        for (size_t k = 0; k < n; k++) {
            if (strcmp(rows[k].method, "magnitude") != 0 ||
                strcmp(rows[k].shape, rows[i].shape) != 0)
                continue;
            bool ref_ahead = lower_is_better ? rows[i].ref < rows[k].ref
                                             : rows[i].ref > rows[k].ref;
            bool ours_ahead = lower_is_better ? got[i].metric < got[k].metric
                                              : got[i].metric > got[k].metric;
            ck_assert_msg(!ref_ahead || ours_ahead,
                          "%s %s: sparsegpt %.4f not ahead of magnitude %.4f",
                          fixture, rows[i].shape, got[i].metric, got[k].metric);
        }
    }
    free(got);
}

START_TEST(test_llama_reference_table)
{
    run_table("llama-kjv", llama_rows, sizeof llama_rows / sizeof llama_rows[0],
              true);
}
END_TEST

START_TEST(test_mlp_reference_table)
{
    run_table("mlp-fmnist", mlp_rows, sizeof mlp_rows / sizeof mlp_rows[0],
              false);
}
END_TEST

Suite *suite_methods(void)
{
    Suite *s = suite_create("methods");
    TCase *tc = tcase_create("reference");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_llama_reference_table);
    tcase_add_test(tc, test_mlp_reference_table);
    suite_add_tcase(s, tc);
    return s;
}

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
//
// Then cancellation: a SparseGPT run stops at the first poll that says so,
// and polls at least once per unit of work (a product, a column block),
// with the pieces it splits large work into checked against whole calls.
#include "tests/helpers.h"

#include "common/util.h"
#include "engine/engine.h"
#include "engine/math/linalg.h"
#include "engine/math/poll.h"
#include "engine/methods/sparsegpt.h"
#include "engine/nets/layers.h"
#include "engine/run/run.h"
#include "engine/select/mask.h"

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
    uint64_t zeros, params; // over the targets
} outcome;

// Every written weight of a quantized target (F32) is exactly
// scale * (q - zero) for an integer q in [0, 2^bits - 1] of its row's grid,
// the grid fixed from the input's row; pruned ones are 0 (q = zero).
static void check_on_grid(const eng_model *m, const char *name,
                          const void *bytes, uint64_t rows, uint64_t cols,
                          const eng_quant *qt, const char *what)
{
    long ti = eng_model_find(m, name);
    ck_assert(ti >= 0);
    size_t file, idx;
    eng_model_tensor_loc(m, (size_t)ti, &file, &idx);
    const float *orig = eng_st_data(eng_model_file_at(m, file)->st, idx);
    const float *w = bytes;
    float maxq = (float)((1 << qt->bits) - 1);
    for (uint64_t r = 0; r < rows; r++) {
        float scale, zero;
        eng_grid g = {.bits = qt->bits,
                      .symmetric = qt->symmetric,
                      .dtype = ENG_DTYPE_F32};
        eng_grid_fit(&g, orig + r * cols, (int64_t)cols, &scale, &zero);
        for (uint64_t c = 0; c < cols; c++) {
            float x = w[r * cols + c], q = rintf(x / scale) + zero;
            ck_assert_msg(q >= 0 && q <= maxq && scale * (q - zero) == x,
                          "%s: %s[%llu, %llu] = %g is off its grid (scale "
                          "%g, zero %g)",
                          what, name, (unsigned long long)r,
                          (unsigned long long)c, x, scale, zero);
        }
    }
}

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
            } else if (s.quant.bits) {
                // Kept weights may round to the grid's zero: at least.
                uint64_t want = eng_count_for(l->target_sparsity, l->params);
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
            if (s.quant.bits && s.quant.group_size == 0) // (groups: below)
                check_on_grid(m, l->name, bytes, rows, cols, &s.quant, out.msg);
            out.zeros += l->zeros;
            out.params += l->params;
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

// SparseGPT jointly with its quantizer (REFERENCE.md's second table): the
// metric within tolerance, the share of zeros as the reference's within
// 0.002, every weight on its row's grid.
typedef struct quant_row {
    const char *shape;
    double llama, llama_zeros, mlp, mlp_zeros;
} quant_row;

static const quant_row quant_rows[] = {
    {"\"sparsity\":0.5,\"quantize\":{\"bits\":8}", 3.5462, 0.5009, 0.8900,
     0.5002},
    {"\"sparsity\":0.5,\"quantize\":{\"bits\":4}", 3.5590, 0.5168, 0.8880,
     0.5086},
    {"\"sparsity\":0.5,\"quantize\":{\"bits\":3}", 3.6031, 0.5442, 0.8890,
     0.5714},
    {"\"pattern\":\"2:4\",\"quantize\":{\"bits\":4}", 3.6641, 0.5044, 0.8840,
     0.5177},
};

START_TEST(test_quantized_reference_table)
{
    for (size_t i = 0; i < sizeof quant_rows / sizeof quant_rows[0]; i++) {
        const quant_row *q = &quant_rows[i];
        outcome o = run_row("llama-kjv", "sparsegpt", q->shape);
        ck_assert_msg(o.rc == 0, "%s", o.msg);
        ck_assert_msg(o.metric <= q->llama * 1.02,
                      "llama %s: perplexity %.4f, reference %.4f", q->shape,
                      o.metric, q->llama);
        double z = (double)o.zeros / (double)o.params;
        ck_assert_msg(fabs(z - q->llama_zeros) <= 0.002,
                      "llama %s: zeros %.4f, reference %.4f", q->shape, z,
                      q->llama_zeros);
        o = run_row("mlp-fmnist", "sparsegpt", q->shape);
        ck_assert_msg(o.rc == 0, "%s", o.msg);
        ck_assert_msg(o.metric >= q->mlp - 0.01,
                      "mlp %s: accuracy %.4f, reference %.4f", q->shape,
                      o.metric, q->mlp);
        z = (double)o.zeros / (double)o.params;
        ck_assert_msg(fabs(z - q->mlp_zeros) <= 0.002,
                      "mlp %s: zeros %.4f, reference %.4f", q->shape, z,
                      q->mlp_zeros);
    }
}
END_TEST

// RTN with the other methods: Wanda's mask first, then the kept weights
// on their rows' grids (checked in run_row); and GPTQ alone (sparsegpt at
// sparsity 0) ahead of RTN alone (wanda at sparsity 0: nothing masked) at
// 4 bits.
START_TEST(test_rtn_and_gptq)
{
    // Wanda's mask, then the kept weights rounded (rtn) or updated through
    // H with the mask kept (gptq, the default with calibration).
    outcome w = run_row("llama-kjv", "wanda",
                        "\"sparsity\":0.5,\"quantize\":{\"bits\":4,"
                        "\"method\":\"rtn\"}");
    ck_assert_msg(w.rc == 0, "%s", w.msg);
    ck_assert_msg(w.metric < 3.6462 * 1.05, "wanda 0.5 + rtn 4: %.4f",
                  w.metric);
    outcome wg = run_row("llama-kjv", "wanda",
                         "\"sparsity\":0.5,\"quantize\":{\"bits\":4}");
    ck_assert_msg(wg.rc == 0, "%s", wg.msg);
    ck_assert_msg(wg.metric < w.metric,
                  "wanda 0.5 + gptq 4 %.4f not ahead "
                  "of wanda 0.5 + rtn 4 %.4f",
                  wg.metric, w.metric);
    // Quantizing alone: GPTQ ahead of RTN, per row and per group of 128.
    outcome rtn = run_row("llama-kjv", "magnitude",
                          "\"sparsity\":0,\"quantize\":{\"bits\":4,"
                          "\"method\":\"rtn\"}");
    outcome gptq = run_row("llama-kjv", "sparsegpt",
                           "\"sparsity\":0,\"quantize\":{\"bits\":4}");
    ck_assert_msg(rtn.rc == 0 && gptq.rc == 0, "%s / %s", rtn.msg, gptq.msg);
    ck_assert_msg(gptq.metric < rtn.metric,
                  "GPTQ 4-bit %.4f not ahead of RTN 4-bit %.4f", gptq.metric,
                  rtn.metric);
    // 3 bits, where grids per group of 128 inputs pay: RTN per group
    // ahead of RTN per row, GPTQ per group (wanda at sparsity 0 only
    // carries the calibration) ahead of both.
    outcome rtn3 = run_row("llama-kjv", "magnitude",
                           "\"sparsity\":0,\"quantize\":{\"bits\":3}");
    outcome rtn_g = run_row("llama-kjv", "magnitude",
                            "\"sparsity\":0,\"quantize\":{\"bits\":3,"
                            "\"group_size\":128}");
    outcome gptq_g = run_row("llama-kjv", "wanda",
                             "\"sparsity\":0,\"quantize\":{\"bits\":3,"
                             "\"group_size\":128}");
    ck_assert_msg(rtn3.rc == 0 && rtn_g.rc == 0 && gptq_g.rc == 0,
                  "%s / %s / %s", rtn3.msg, rtn_g.msg, gptq_g.msg);
    ck_assert_msg(gptq_g.metric < rtn_g.metric && rtn_g.metric < rtn3.metric,
                  "3-bit, groups of 128: GPTQ %.4f, RTN %.4f (per row %.4f)",
                  gptq_g.metric, rtn_g.metric, rtn3.metric);
    fprintf(stderr,
            "llama 4-bit: rtn %.4f gptq %.4f; 3-bit rtn %.4f, g128: rtn "
            "%.4f gptq %.4f; wanda 0.5 + rtn %.4f, + gptq %.4f\n",
            rtn.metric, gptq.metric, rtn3.metric, rtn_g.metric, gptq_g.metric,
            w.metric, wg.metric);
}
END_TEST

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

// --- cancellation

// Counts the polls per phase from the progress reports, and says stop at
// the stop_at-th poll of a phase (and step) and at every poll after it.
typedef struct probe {
    const char *stop_phase;
    size_t stop_step;
    long stop_at;
    char phase[32];
    size_t step;
    long eval_polls;   // while evaluating the dense model
    long block0_polls; // while pruning block 1 of 4
    long stop_polls;   // in the phase and step to stop in, up to the stop
    long after;        // polls from the one that said stop on
} probe;

static void probe_progress(void *ctx, const eng_progress *p)
{
    probe *c = ctx;
    snprintf(c->phase, sizeof c->phase, "%s", p->phase);
    c->step = p->step;
}

static bool probe_cancelled(void *ctx)
{
    probe *c = ctx;
    if (c->after > 0 ||
        (strcmp(c->phase, c->stop_phase) == 0 && c->step == c->stop_step &&
         ++c->stop_polls == c->stop_at)) {
        c->after++;
        return true;
    }
    if (strcmp(c->phase, "evaluating dense") == 0)
        c->eval_polls++;
    else if (strcmp(c->phase, "pruning") == 0 && c->step == 1)
        c->block0_polls++;
    return false;
}

// SparseGPT with the smallest block size on llama-kjv (32 calibration
// rows), evaluated, with c's hook.
static int prune_probed(probe *c, sh_diag *d)
{
    char *model = th_fixture("llama-kjv");
    char *calib = th_fixture("llama-kjv-data/calibration.safetensors");
    char *eval = th_fixture("llama-kjv-data/evaluation.safetensors");
    char *dir = th_tmpdir();
    char *dst = th_path(dir, "out");
    sh_mkdir_p(dst);
    json_t *j =
        json_pack("{s:s, s:f, s:{s:i}, s:{s:s, s:i}}", "method", "sparsegpt",
                  "sparsity", 0.5, "sparsegpt", "blocksize", 1, "calibration",
                  "dataset", calib, "samples", 32);
    eng_spec s;
    ck_assert_msg(eng_spec_parse(&s, j, d) == 0, "%s", d->msg);
    json_decref(j);
    eng_model *m = NULL;
    ck_assert_int_eq(eng_model_open(&m, model, d), 0);
    eng_report r;
    eng_report_init(&r, &s);
    eng_options o = {
        .out_dir = dst, .calibration_path = calib, .evaluation_path = eval};
    eng_hooks h = {
        .ctx = c, .progress = probe_progress, .cancelled = probe_cancelled};
    int rc = eng_prune(m, &s, &o, &h, &r, d);
    eng_report_deinit(&r);
    eng_model_close(m);
    eng_spec_deinit(&s);
    th_rmtree(dir);
    free(dst);
    free(dir);
    free(model);
    free(calib);
    free(eval);
    return rc;
}

// The case: SparseGPT with the smallest block size, cancelled in
// the middle of the second model block (and, first, while evaluating the
// dense model). It stops there, at the poll that said so, and had polled
// at least once per unit of work: per linear layer run forward (7 per
// block; once per block is not enough), per column block of the OBS loop,
// per factorisation. No clocks: the counts hold on any machine.
START_TEST(test_sparsegpt_cancel_smallest_blocks)
{
    sh_diag d;
    probe e = {.stop_phase = "evaluating dense", .stop_step = 1, .stop_at = 9};
    ck_assert_int_eq(prune_probed(&e, &d), SH_ECANCELED);
    ck_assert_int_eq(d.code, SH_ECANCELED);
    ck_assert_str_eq(d.msg, "cancelled");
    ck_assert_int_eq(e.after, 1);

    probe c = {.stop_phase = "pruning", .stop_step = 2, .stop_at = 600};
    ck_assert_int_eq(prune_probed(&c, &d), SH_ECANCELED);
    ck_assert_int_eq(d.code, SH_ECANCELED);
    ck_assert_str_eq(d.msg, "cancelled");
    ck_assert_int_eq(c.stop_polls, c.stop_at); // it was mid-block
    ck_assert_int_eq(c.after, 1);              // and stopped right there
    // Four blocks of seven products each, run on the evaluation set.
    ck_assert_int_ge(c.eval_polls, 4 * 7);
    // Block 0 with blocksize 1: a poll per column of its targets (q, k, v,
    // o, gate, up read 128 inputs, down 384), per factorisation, and per
    // product of its two forward passes.
    ck_assert_int_ge(c.block0_polls, (6 * 128 + 384) + 7 + 2 * 7);
}
END_TEST

static double rel_err(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static long polls_left;

static bool stop_when_counted(void *ctx)
{
    (void)ctx;
    return --polls_left < 0;
}

// The factorisation by blocks (used above 512 inputs) against the scalar
// reference and LAPACK, on sizes the blocks do not divide; refusals and
// cancellation.
START_TEST(test_chol_inverse_by_blocks)
{
    enum { N = 203, S = 300 };
    float *x = malloc(S * N * sizeof *x), *h = calloc(N * N, sizeof *h);
    float *a = malloc(N * N * sizeof *a), *ref = malloc(N * N * sizeof *ref);
    th_randn(x, S * N, 11);
    eng_syrk_acc_ref(h, x, S, N);
    eng_sym_fill(h, N);
    for (int i = 0; i < N; i++)
        h[i * N + i] += 1.0f;
    memcpy(ref, h, N * N * sizeof *ref);
    ck_assert_int_eq(eng_chol_inverse_upper_ref(ref, N), 0);
    const int64_t blocks[] = {1, 16, 48, 64, 256};
    for (size_t k = 0; k < sizeof blocks / sizeof blocks[0]; k++) {
        memcpy(a, h, N * N * sizeof *a);
        ck_assert_int_eq(eng_chol_inverse_polled(a, N, blocks[k], NULL), 0);
        ck_assert_msg(rel_err(a, ref, N * N) < 1e-4, "nb %lld: %g",
                      (long long)blocks[k], rel_err(a, ref, N * N));
        for (int i = 0; i < N; i++)
            for (int j = 0; j < i; j++)
                ck_assert(a[i * N + j] == 0.0f);
    }
    // nb 0 at this size is eng_chol_inverse_upper, to the bit.
    memcpy(a, h, N * N * sizeof *a);
    memcpy(ref, h, N * N * sizeof *ref);
    ck_assert_int_eq(eng_chol_inverse_polled(a, N, 0, NULL), 0);
    ck_assert_int_eq(eng_chol_inverse_upper(ref, N), 0);
    ck_assert(memcmp(a, ref, N * N * sizeof *a) == 0);
    // Not positive definite: refused, as eng_chol_inverse_upper does.
    memcpy(a, h, N * N * sizeof *a);
    a[150 * N + 150] = -1.0f;
    ck_assert_int_eq(eng_chol_inverse_polled(a, N, 32, NULL), SH_ENUMERIC);
    // Cancelled between panels.
    memcpy(a, h, N * N * sizeof *a);
    polls_left = 5;
    eng_hooks stop = {.cancelled = stop_when_counted};
    ck_assert_int_eq(eng_chol_inverse_polled(a, N, 16, &stop), SH_ECANCELED);
    free(x);
    free(h);
    free(a);
    free(ref);
}
END_TEST

// Products above ENG_POLL_FMA run in pieces (of rows, or of columns when
// wider than tall) and agree with one call.
START_TEST(test_products_in_pieces)
{
    enum { M = 2048, K = 1024, W = 2304, M2 = 640, W2 = 8192 };
    enum { N = 9000, C = 1024 };
    ck_assert((uint64_t)M * W * K > ENG_POLL_FMA);
    ck_assert((uint64_t)M2 * W2 * K > ENG_POLL_FMA);
    ck_assert((uint64_t)N * C * (C + 1) / 2 > ENG_POLL_FMA);
    float *a = malloc((size_t)M * K * sizeof *a);  // (M, K)
    float *at = malloc((size_t)K * M * sizeof *a); // a^T (K, M)
    float *b = malloc((size_t)W2 * K * sizeof *b); // (K, W) or (W2, K)
    float *c1 = malloc((size_t)M2 * W2 * sizeof *c1);
    float *c2 = malloc((size_t)M2 * W2 * sizeof *c2);
    float *x = malloc((size_t)N * C * sizeof *x);
    float *h1 = calloc((size_t)C * C, sizeof *h1);
    float *h2 = calloc((size_t)C * C, sizeof *h2);
    th_randn(a, (size_t)M * K, 21);
    th_randn(b, (size_t)W2 * K, 22);
    th_randn(x, (size_t)N * C, 23);
    for (int i = 0; i < M; i++)
        for (int k = 0; k < K; k++)
            at[k * M + i] = a[i * K + k];
    // Tall: pieces of rows of op(A), stored as is and transposed.
    eng_gemm(false, false, M, W, K, 1.0f, a, K, b, W, 0.0f, c1, W);
    for (int ta = 0; ta < 2; ta++) {
        ck_assert_int_eq(eng_gemm_polled(ta, false, M, W, K, 1.0f, ta ? at : a,
                                         ta ? M : K, b, W, 0.0f, c2, W, NULL),
                         0);
        ck_assert(rel_err(c2, c1, (size_t)M * W) < 1e-5);
    }
    // Wide: pieces of columns of op(B) = B^T, B (W2, K).
    eng_gemm(false, true, M2, W2, K, 1.0f, a, K, b, K, 0.0f, c1, W2);
    ck_assert_int_eq(eng_gemm_polled(false, true, M2, W2, K, 1.0f, a, K, b, K,
                                     0.0f, c2, W2, NULL),
                     0);
    ck_assert(rel_err(c2, c1, (size_t)M2 * W2) < 1e-5);
    // H += X^T X in pieces of rows of X (upper triangle).
    eng_syrk_acc(h1, x, N, C);
    ck_assert_int_eq(eng_syrk_acc_polled(h2, x, N, C, NULL), 0);
    eng_sym_fill(h1, C);
    eng_sym_fill(h2, C);
    ck_assert(rel_err(h2, h1, (size_t)C * C) < 1e-5);
    // A cancel stops after the piece at hand.
    polls_left = 0;
    eng_hooks stop = {.cancelled = stop_when_counted};
    ck_assert_int_eq(eng_gemm_polled(false, false, M, W, K, 1.0f, a, K, b, W,
                                     0.0f, c2, W, &stop),
                     SH_ECANCELED);
    polls_left = 0;
    ck_assert_int_eq(eng_syrk_acc_polled(h2, x, N, C, &stop), SH_ECANCELED);
    free(a);
    free(at);
    free(b);
    free(c1);
    free(c2);
    free(x);
    free(h1);
    free(h2);
}
END_TEST

Suite *suite_methods(void)
{
    Suite *s = suite_create("methods");
    TCase *tc = tcase_create("reference");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_llama_reference_table);
    tcase_add_test(tc, test_quantized_reference_table);
    tcase_add_test(tc, test_rtn_and_gptq);
    tcase_add_test(tc, test_mlp_reference_table);
    suite_add_tcase(s, tc);
    TCase *cancel = tcase_create("cancel");
    tcase_set_timeout(cancel, 60);
    tcase_add_test(cancel, test_sparsegpt_cancel_smallest_blocks);
    tcase_add_test(cancel, test_chol_inverse_by_blocks);
    tcase_add_test(cancel, test_products_in_pieces);
    suite_add_tcase(s, cancel);
    return s;
}

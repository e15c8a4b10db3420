// bench_methods.c: the calibrated methods on single layers and on the
// fixture model, against sgemm measured in the same run.
//
//   bench_methods SHEARS_BIN FIXTURES [RUNS]
//
// Per layer (16384 calibration tokens): SparseGPT (the Hessian X^T X, its
// inverse's Cholesky factor, the blocked OBS updates) and Wanda (column
// norms, per-row selection). Effective GFLOP/s counts the work the
// algorithm must do:
//   SparseGPT: tokens*cols^2 (H) + 4/3 cols^3 (factorisations)
//              + rows*cols^2 (lazy updates) + rows*cols*128 (in-block)
//   Wanda:     2*tokens*cols (norms) + rows*cols*log2(cols) (selection)
// and is given as a ratio to sgemm's GFLOP/s on a 2048^3 product timed
// just before each run (the median of the runs' ratios). GPTQ
// (4 bits, one grid per row, no pruning: the same solver with a grid) is
// timed on a 4096x4096 layer and counted as SparseGPT. Then the whole
// fixture Llama is pruned by each method through the CLI.
#include "tests/bench/bench.h"

#include "common/util.h"
#include "engine/engine.h"
#include "engine/math/linalg.h"
#include "engine/methods/sparsegpt.h"
#include "engine/select/mask.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float randn(void)
{
    double u[2];
    for (int k = 0; k < 2; k++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        u[k] = ((rng >> 11) + 0.5) / 9007199254740992.0;
    }
    return (float)(sqrt(-2 * log(u[0])) * cos(6.283185307179586 * u[1]));
}

// Seconds are medians; a ratio is the median over runs of the run's
// GFLOP/s over those of an sgemm timed just before it, so that the
// yardstick moves with the machine (a VM's neighbours come and go).
typedef struct layer_result {
    double sgpt_s, wanda_s, sgpt_flop, wanda_flop, sgpt_ratio, wanda_ratio;
} layer_result;

// bits > 0: GPTQ at that width (no pruning), and no Wanda.
static layer_result bench_layer(int64_t rows, int64_t cols, int64_t tokens,
                                int runs, int bits)
{
    float *x = malloc((size_t)(tokens * cols) * sizeof *x);
    float *w0 = malloc((size_t)(rows * cols) * sizeof *w0);
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    float *h = malloc((size_t)(cols * cols) * sizeof *h);
    float *s = malloc((size_t)cols * sizeof *s);
    float *grid = malloc(2 * (size_t)rows * sizeof *grid);
    uint64_t *mask = malloc(eng_mask_words((uint64_t)(rows * cols)) * 8);
    uint32_t *work = malloc(2 * (size_t)cols * sizeof *work);
    for (int64_t i = 0; i < tokens * cols; i++)
        x[i] = randn();
    for (int64_t i = 0; i < rows * cols; i++)
        w0[i] = randn() / sqrtf((float)cols);
    double c = (double)cols, rw = (double)rows, tk = (double)tokens;
    double sgpt_flop =
        tk * c * c + 4.0 / 3 * c * c * c + rw * c * c + rw * c * 128;
    double wanda_flop = 2 * tk * c + rw * c * log2(c);
    double ts[16], tw[16], rs[16], rwd[16];
    for (int r = 0; r < runs; r++) {
        double peak = bench_sgemm_gflops(3);
        memcpy(w, w0, (size_t)(rows * cols) * sizeof *w);
        double t0 = sh_time_mono();
        memset(h, 0, (size_t)(cols * cols) * sizeof *h);
        eng_syrk_acc(h, x, tokens, cols);
        eng_sym_fill(h, cols);
        eng_grid g = {.bits = bits, .dtype = ENG_DTYPE_F32};
        eng_sgpt_opts o = {.sparsity = bits ? 0.0 : 0.5,
                           .blocksize = 128,
                           .damp = 0.01,
                           .grid = bits ? &g : NULL,
                           .scale = grid,
                           .zero = grid + rows};
        double damp;
        sh_diag d;
        if (eng_sparsegpt(w, h, rows, cols, &o, &damp, NULL, &d) != 0) {
            fprintf(stderr, "bench: %s\n", d.msg);
            exit(1);
        }
        ts[r] = sh_time_mono() - t0;
        rs[r] = sgpt_flop / ts[r] / 1e9 / peak;
        tw[r] = rwd[r] = 0;
        if (bits)
            continue;

        memcpy(w, w0, (size_t)(rows * cols) * sizeof *w);
        t0 = sh_time_mono();
        memset(s, 0, (size_t)cols * sizeof *s);
        eng_colsq_acc(s, x, tokens, cols);
        for (int64_t j = 0; j < cols; j++)
            s[j] = sqrtf(s[j]);
        eng_scorer sc;
        eng_scorer_init(&sc, ENG_SCORE_SCALED, ENG_DTYPE_F32, w, (uint64_t)rows,
                        (uint64_t)cols, 0, "w", s);
        eng_mask_per_row(mask, &sc, (uint64_t)cols / 2, work);
        eng_mask_zero(w, mask, (uint64_t)(rows * cols));
        tw[r] = sh_time_mono() - t0;
        rwd[r] = wanda_flop / tw[r] / 1e9 / peak;
    }
    layer_result out = {
        .sgpt_s = bench_median(ts, runs),
        .wanda_s = bench_median(tw, runs),
        .sgpt_flop = sgpt_flop,
        .wanda_flop = wanda_flop,
        .sgpt_ratio = bench_median(rs, runs),
        .wanda_ratio = bench_median(rwd, runs),
    };
    free(x);
    free(w0);
    free(w);
    free(h);
    free(s);
    free(grid);
    free(mask);
    free(work);
    return out;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_methods SHEARS_BIN FIXTURES [RUNS]\n");
        return 2;
    }
    int runs = argc > 3 ? atoi(argv[3]) : 3;
    if (runs < 1 || runs > 16)
        runs = 3;
    double peak = bench_sgemm_gflops(runs + 1);
    eng_set_threads(sh_cpu_count()); // the engine's threads; BLAS on one
    printf("\n%d threads\n", sh_cpu_count());
    printf("\ncalibrated methods, 16384 calibration tokens (%d runs, "
           "medians); sgemm 2048^3: %.1f GFLOP/s\n",
           runs, peak);
    printf("%-28s %10s %12s %16s\n", "", "seconds", "GFLOP/s",
           "ratio to sgemm");
    const int64_t shapes[][2] = {{1024, 1024}, {4096, 1024}};
    for (int s = 0; s < 2; s++) {
        layer_result r =
            bench_layer(shapes[s][0], shapes[s][1], 16384, runs, 0);
        char name[64];
        snprintf(name, sizeof name, "sparsegpt %lldx%lld",
                 (long long)shapes[s][0], (long long)shapes[s][1]);
        double g = r.sgpt_flop / r.sgpt_s / 1e9;
        printf("%-28s %10.3f %12.1f %16.2f\n", name, r.sgpt_s, g, r.sgpt_ratio);
        snprintf(name, sizeof name, "wanda %lldx%lld", (long long)shapes[s][0],
                 (long long)shapes[s][1]);
        g = r.wanda_flop / r.wanda_s / 1e9;
        printf("%-28s %10.3f %12.1f %16.2f\n", name, r.wanda_s, g,
               r.wanda_ratio);
    }
    layer_result q = bench_layer(4096, 4096, 16384, runs, 4);
    double gq = q.sgpt_flop / q.sgpt_s / 1e9;
    printf("%-28s %10.3f %12.1f %16.2f\n", "gptq 4-bit 4096x4096", q.sgpt_s, gq,
           q.sgpt_ratio);

    // The whole fixture model through the CLI, with its calibration set.
    const char *bin = argv[1], *fx = argv[2];
    char model[4096], calib[4096], out[4096];
    snprintf(model, sizeof model, "%s/llama-kjv", fx);
    snprintf(calib, sizeof calib, "%s/llama-kjv-data/calibration.safetensors",
             fx);
    snprintf(out, sizeof out, "%s/.bench-out-%d", "/tmp", (int)getpid());
    printf("\nfixture llama-kjv (0.9M params, 128x128 calibration tokens), "
           "whole runs\n");
    const char *methods[] = {"magnitude", "wanda", "sparsegpt"};
    for (int m = 0; m < 3; m++) {
        double t[16];
        for (int r = 0; r < runs; r++) {
            sh_rm_rf(out);
            char *args[] = {(char *)bin,
                            "prune",
                            "--model",
                            model,
                            "--out",
                            out,
                            "--method",
                            (char *)methods[m],
                            "--calibration",
                            calib,
                            "--quiet",
                            "--no-sync",
                            NULL};
            t[r] = bench_spawn(args, NULL, NULL, true, NULL);
        }
        printf("%-28s %10.3f s\n", methods[m], bench_median(t, runs));
    }
    sh_rm_rf(out);

    // A sensitivity sweep of the fixture (4 blocks x 4 levels, 16 runs and
    // the dense metric): as it runs (each group measured from its block
    // on, the calibration pass only as far as the group) against whole
    // runs (--no-reuse: a whole calibrated prune and evaluation each), and
    // against one `shears eval` of the dense model as the unit.
    char eval[4096];
    snprintf(eval, sizeof eval, "%s/llama-kjv-data/evaluation.safetensors", fx);
    printf("\nsensitivity sweep of llama-kjv: 4 blocks x 4 levels "
           "(0.3,0.5,0.7,0.9), 17 evaluations (%d runs, medians)\n",
           runs);
    printf("%-28s %10s %10s %14s %12s\n", "", "reusing", "whole runs",
           "reuse saves", "one eval");
    char *ev_args[] = {(char *)bin,    "eval", "--model",    model,
                       "--evaluation", eval,   "--no-speed", NULL};
    double te[16];
    for (int r = 0; r < runs; r++)
        te[r] = bench_spawn(ev_args, NULL, NULL, true, NULL);
    double one = bench_median(te, runs);
    for (int m = 0; m < 3; m++) {
        double t[2][16];
        for (int r = 0; r < runs; r++)
            for (int full = 0; full < 2; full++) {
                char *args[] = {(char *)bin,
                                "sensitivity",
                                "--model",
                                model,
                                "--evaluation",
                                eval,
                                "--calibration",
                                calib,
                                "--method",
                                (char *)methods[m],
                                "--levels",
                                "0.3,0.5,0.7,0.9",
                                "--quiet",
                                full ? "--no-reuse" : NULL,
                                NULL};
                t[full][r] = bench_spawn(args, NULL, NULL, true, NULL);
            }
        double a = bench_median(t[0], runs), b = bench_median(t[1], runs);
        char name[64];
        snprintf(name, sizeof name, "%s (s; x one eval)", methods[m]);
        printf("%-28s %5.2f %4.1fx %5.2f %4.1fx %13.0f%% %10.3f s\n", name, a,
               a / one, b, b / one, 100 * (1 - a / b), one);
    }
    return 0;
}

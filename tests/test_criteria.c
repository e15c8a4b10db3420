// test_criteria.c: the gradient and movement criteria through the real
// binary. Each mask is checked against one computed here from its
// definition (the scores sorted, ties by index); a scores file equal to
// |W| gives magnitude's bytes; bad bases and score files are refused
// naming the tensor, leaving nothing behind.
#include "tests/helpers.h"
#include "tests/server.h"

#include "common/util.h"
#include "engine/io/dtype.h"
#include "engine/io/model.h"
#include "engine/io/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MLP "mlp-fmnist"
#define MLP_CALIB "mlp-fmnist-data/calibration.safetensors"

// The model's tensors as F32 (name order of the file), the caller frees.
typedef struct tensors {
    size_t n;
    char **name;
    float **v;
    uint64_t *numel, *rows, *cols;
} tensors;

static void load_tensors(const char *path, tensors *t)
{
    sh_diag d;
    eng_model *m = NULL;
    ck_assert_int_eq(eng_model_open(&m, path, &d), 0);
    size_t n = eng_model_tensor_count(m);
    *t = (tensors){.n = n};
    t->name = calloc(n, sizeof *t->name);
    t->v = calloc(n, sizeof *t->v);
    t->numel = calloc(n, sizeof *t->numel);
    t->rows = calloc(n, sizeof *t->rows);
    t->cols = calloc(n, sizeof *t->cols);
    for (size_t i = 0; i < n; i++) {
        const eng_tensor_info *ti = eng_model_tensor(m, i);
        size_t file, idx;
        eng_model_tensor_loc(m, i, &file, &idx);
        t->name[i] = sh_strdup(ti->name);
        t->numel[i] = ti->numel;
        t->rows[i] = ti->ndim == 2 ? (uint64_t)ti->shape[0] : 1;
        t->cols[i] = ti->numel / t->rows[i];
        t->v[i] = malloc(ti->numel * sizeof(float));
        eng_convert_to_f32(t->v[i],
                           eng_st_data(eng_model_file_at(m, file)->st, idx),
                           ti->dtype, ti->numel);
    }
    eng_model_close(m);
}

static void free_tensors(tensors *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->name[i]);
        free(t->v[i]);
    }
    free(t->name);
    free(t->v);
    free(t->numel);
    free(t->rows);
    free(t->cols);
}

static long find(const tensors *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->name[i], name) == 0)
            return (long)i;
    return -1;
}

// The mlp's targets: the weights, not the biases.
static bool is_target(const char *name)
{
    return sh_str_ends_with(name, ".weight");
}

static const double *sort_scores;
static int by_score(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    double sx = sort_scores[x], sy = sort_scores[y];
    if (sx != sy)
        return sx < sy ? -1 : 1;
    return x < y ? -1 : x > y;
}

// Whether the output's zeros of each target are exactly its round(s * n)
// lowest scores (layer scope), the scores from fn.
typedef double (*score_fn)(const tensors *in, size_t ti, uint64_t k, void *ctx);

static void check_mask(const char *out_dir, const tensors *in, double s,
                       score_fn fn, void *ctx)
{
    tensors out;
    load_tensors(out_dir, &out);
    size_t checked = 0;
    for (size_t i = 0; i < in->n; i++) {
        if (!is_target(in->name[i]))
            continue;
        long j = find(&out, in->name[i]);
        ck_assert(j >= 0);
        uint64_t n = in->numel[i], k = (uint64_t)llround(s * (double)n);
        double *sc = malloc(n * sizeof *sc);
        uint64_t *idx = malloc(n * sizeof *idx);
        for (uint64_t e = 0; e < n; e++) {
            sc[e] = fn(in, i, e, ctx);
            idx[e] = e;
        }
        sort_scores = sc;
        qsort(idx, n, sizeof *idx, by_score);
        bool *gone = calloc(n, sizeof *gone);
        for (uint64_t e = 0; e < k; e++)
            gone[idx[e]] = true;
        uint64_t wrong = 0;
        for (uint64_t e = 0; e < n; e++) {
            float v = out.v[j][e];
            wrong += gone[e] ? v != 0.0f : v != in->v[i][e];
        }
        ck_assert_msg(wrong == 0, "%s: %llu elements differ", in->name[i],
                      (unsigned long long)wrong);
        free(sc);
        free(idx);
        free(gone);
        checked++;
    }
    ck_assert_uint_eq(checked, 3);
    free_tensors(&out);
}

static char *run_ok(const char *const *args)
{
    char *o = NULL, *e = NULL;
    int rc = th_run(&o, &e, args);
    ck_assert_msg(rc == 0, "%s: %s", args[0], e);
    free(e);
    return o;
}

// --- gradient criteria, against `shears grad`'s gradients

typedef struct grads_ctx {
    tensors g;
} grads_ctx;

static const float *grad_of(grads_ctx *c, const tensors *in, size_t ti,
                            bool fisher)
{
    char name[256];
    snprintf(name, sizeof name, "%s%s", fisher ? "fisher." : "", in->name[ti]);
    long j = find(&c->g, name);
    ck_assert_msg(j >= 0, "no %s", name);
    return c->g.v[j];
}

static double snip(const tensors *in, size_t ti, uint64_t k, void *ctx)
{
    float w = in->v[ti][k], g = grad_of(ctx, in, ti, false)[k];
    return fabsf(w * g);
}

static double taylor(const tensors *in, size_t ti, uint64_t k, void *ctx)
{
    float w = in->v[ti][k], g = grad_of(ctx, in, ti, false)[k];
    float f = grad_of(ctx, in, ti, true)[k];
    return fabsf(w * g - 0.5f * w * w * f);
}

static double fisher(const tensors *in, size_t ti, uint64_t k, void *ctx)
{
    float w = in->v[ti][k], f = grad_of(ctx, in, ti, true)[k];
    return 0.5f * w * w * f;
}

START_TEST(test_gradient_criteria_masks)
{
    char *dir = th_tmpdir();
    char *model = th_fixture(MLP), *calib = th_fixture(MLP_CALIB);
    char *gfile = th_path(dir, "g.safetensors");
    const char *gargs[] = {"grad",      "--model", model, "--calibration",
                           calib,       "--out",   gfile, "--fisher",
                           "--samples", "256",     NULL};
    free(run_ok(gargs));
    grads_ctx c;
    load_tensors(gfile, &c.g); // a safetensors file opens as a model
    tensors in;
    load_tensors(model, &in);
    const char *methods[] = {"snip", "taylor", "fisher"};
    score_fn fns[] = {snip, taylor, fisher};
    for (int m = 0; m < 3; m++) {
        char name[32];
        snprintf(name, sizeof name, "out-%s", methods[m]);
        char *out = th_path(dir, name);
        const char *args[] = {"prune",     "--model",
                              model,       "--out",
                              out,         "--method",
                              methods[m],  "--sparsity",
                              "0.6",       "--calibration",
                              calib,       "--samples",
                              "256",       "--recon-error",
                              "false",     "--quiet",
                              "--no-sync", NULL};
        free(run_ok(args));
        check_mask(out, &in, 0.6, fns[m], &c);
        free(out);
    }
    // With the reconstruction errors (the calibrated pipeline) too, and
    // a 2:4 pattern in every group.
    char *out = th_path(dir, "out-nm");
    const char *args[] = {
        "prune",    "--model", model,       "--out", out,
        "--method", "fisher",  "--pattern", "2:4",   "--calibration",
        calib,      "--quiet", "--no-sync", NULL};
    free(run_ok(args));
    tensors o;
    load_tensors(out, &o);
    for (size_t i = 0; i < o.n; i++) {
        if (!is_target(o.name[i]))
            continue;
        for (uint64_t g = 0; g < o.numel[i]; g += 4) {
            int nz = 0;
            for (int e = 0; e < 4; e++)
                nz += o.v[i][g + e] != 0.0f;
            ck_assert_int_le(nz, 2);
        }
    }
    free_tensors(&o);
    free_tensors(&in);
    free_tensors(&c.g);
    th_rmtree(dir);
    free(out);
    free(gfile);
    free(model);
    free(calib);
    free(dir);
}
END_TEST

// Taylor ranks an mlp's hidden units by the sum of |w g - 1/2 w^2 F| over
// their weights (the layer's row and the next layer's column): the units
// shears.json says were removed are exactly the lowest half by that sum.
START_TEST(test_taylor_structure)
{
    char *dir = th_tmpdir();
    char *model = th_fixture(MLP), *calib = th_fixture(MLP_CALIB);
    char *gfile = th_path(dir, "g.safetensors"), *out = th_path(dir, "o");
    const char *gargs[] = {"grad",      "--model", model, "--calibration",
                           calib,       "--out",   gfile, "--fisher",
                           "--samples", "256",     NULL};
    free(run_ok(gargs));
    const char *args[] = {"prune", "--model",       model,       "--out",
                          out,     "--method",      "taylor",    "--neurons",
                          "0.5",   "--calibration", calib,       "--samples",
                          "256",   "--quiet",       "--no-sync", NULL};
    free(run_ok(args));
    grads_ctx c;
    load_tensors(gfile, &c.g);
    tensors in;
    load_tensors(model, &in);
    char *man = th_path(out, "shears.json");
    json_t *m = json_load_file(man, 0, NULL);
    json_t *blocks = json_object_get(
        json_object_get(json_object_get(m, "report"), "structure"), "blocks");
    const char *layer[] = {"fc1.weight", "fc2.weight", "fc3.weight"};
    for (int b = 0; b < 2; b++) {
        long a = find(&in, layer[b]), nx = find(&in, layer[b + 1]);
        uint64_t units = in.rows[a];
        double *sc = calloc(units, sizeof *sc);
        for (uint64_t e = 0; e < in.numel[a]; e++)
            sc[e / in.cols[a]] += taylor(&in, (size_t)a, e, &c);
        for (uint64_t e = 0; e < in.numel[nx]; e++)
            sc[e % in.cols[nx]] += taylor(&in, (size_t)nx, e, &c);
        uint64_t *idx = malloc(units * sizeof *idx);
        for (uint64_t u = 0; u < units; u++)
            idx[u] = u;
        sort_scores = sc;
        qsort(idx, units, sizeof *idx, by_score);
        json_t *gone =
            json_object_get(json_array_get(blocks, (size_t)b), "neurons");
        ck_assert_uint_eq(json_array_size(gone), units / 2);
        bool *want = calloc(units, sizeof *want);
        for (uint64_t i = 0; i < units / 2; i++)
            want[idx[i]] = true;
        for (size_t i = 0; i < json_array_size(gone); i++)
            ck_assert_msg(
                want[json_integer_value(json_array_get(gone, i))],
                "block %d: unit %lld is not among the lowest", b,
                (long long)json_integer_value(json_array_get(gone, i)));
        free(want);
        free(idx);
        free(sc);
    }
    json_decref(m);
    free(man);
    free_tensors(&in);
    free_tensors(&c.g);
    th_rmtree(dir);
    free(out);
    free(gfile);
    free(model);
    free(calib);
    free(dir);
}
END_TEST

// Sweeps compute the dense model's gradients once for all their runs:
// a sensitivity table equals the one of whole runs (each computing its
// own), and a trade-off sweep's point equals `shears prune` of it.
START_TEST(test_sweeps_share_gradients)
{
    char *dir = th_tmpdir();
    char *model = th_fixture(MLP), *calib = th_fixture(MLP_CALIB);
    char *ev = th_fixture("mlp-fmnist-data/evaluation.safetensors");
    char *r1 = th_path(dir, "s1.json"), *r2 = th_path(dir, "s2.json");
    char *r3 = th_path(dir, "sw.json"), *r4 = th_path(dir, "p.json");
    char *out = th_path(dir, "o");
    const char *a1[] = {
        "sensitivity",   "--model",  model,      "--evaluation", ev,
        "--calibration", calib,      "--method", "taylor",       "--levels",
        "0.5,0.8",       "--report", r1,         "--quiet",      NULL};
    free(run_ok(a1));
    const char *a2[] = {"sensitivity",
                        "--model",
                        model,
                        "--evaluation",
                        ev,
                        "--calibration",
                        calib,
                        "--method",
                        "taylor",
                        "--levels",
                        "0.5,0.8",
                        "--report",
                        r2,
                        "--quiet",
                        "--no-reuse",
                        NULL};
    free(run_ok(a2));
    json_t *j1 = json_load_file(r1, 0, NULL), *j2 = json_load_file(r2, 0, NULL);
    ck_assert(json_equal(json_object_get(j1, "groups"),
                         json_object_get(j2, "groups")));
    json_decref(j1);
    json_decref(j2);
    const char *a3[] = {
        "sweep",         "--model",  model,       "--evaluation", ev,
        "--calibration", calib,      "--methods", "snip,fisher",  "--levels",
        "0.6",           "--report", r3,          "--quiet",      NULL};
    free(run_ok(a3));
    const char *a4[] = {"prune", "--model",       model,       "--out",
                        out,     "--method",      "fisher",    "--sparsity",
                        "0.6",   "--calibration", calib,       "--evaluation",
                        ev,      "--recon-error", "false",     "--report",
                        r4,      "--quiet",       "--no-sync", NULL};
    free(run_ok(a4));
    json_t *sw = json_load_file(r3, 0, NULL), *p = json_load_file(r4, 0, NULL);
    json_t *pt = json_array_get(json_object_get(sw, "points"), 1);
    ck_assert_str_eq(json_string_value(json_object_get(pt, "method")),
                     "fisher");
    ck_assert_double_eq(json_number_value(json_object_get(pt, "metric")),
                        json_number_value(json_object_get(
                            json_object_get(p, "metric"), "pruned")));
    json_decref(sw);
    json_decref(p);
    th_rmtree(dir);
    char *frees[] = {dir, model, calib, ev, r1, r2, r3, r4, out};
    for (size_t i = 0; i < sizeof frees / sizeof frees[0]; i++)
        free(frees[i]);
}
END_TEST

// --- movement and given scores

// Writes a copy of tensors t (F32) as dir/model.safetensors with a
// config.json copied from the fixture; fn (may be NULL) changes each
// target's values first.
typedef void (*change_fn)(float *v, uint64_t n, size_t ti, void *ctx);

static void write_model(const char *dir, const tensors *t, const char *dtype,
                        change_fn fn, void *ctx, const char *drop)
{
    sh_mkdir_p(dir);
    char *cfg_src = th_fixture(MLP "/config.json");
    char *cfg = th_path(dir, "config.json");
    ck_assert_int_eq(sh_file_copy(cfg_src, cfg, false), 0);
    th_tensor *ts = calloc(t->n, sizeof *ts);
    void **bufs = calloc(t->n, sizeof *bufs);
    size_t k = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (drop && strcmp(t->name[i], drop) == 0)
            continue;
        float *v = malloc(t->numel[i] * sizeof *v);
        memcpy(v, t->v[i], t->numel[i] * sizeof *v);
        if (fn && is_target(t->name[i]))
            fn(v, t->numel[i], i, ctx);
        bufs[k] = v;
        if (strcmp(dtype, "BF16") == 0) {
            uint16_t *h = malloc(t->numel[i] * 2);
            for (uint64_t e = 0; e < t->numel[i]; e++)
                h[e] = (uint16_t)(eng_f32_bits(v[e]) >> 16);
            free(v);
            bufs[k] = h;
        }
        ts[k] = (th_tensor){
            t->name[i], dtype, t->rows[i] > 1 ? 2 : 1, {0}, bufs[k]};
        if (t->rows[i] > 1) {
            ts[k].shape[0] = (int64_t)t->rows[i];
            ts[k].shape[1] = (int64_t)t->cols[i];
        } else {
            ts[k].shape[0] = (int64_t)t->numel[i];
        }
        k++;
    }
    char *path = th_path(dir, "model.safetensors");
    th_write_st(path, ts, k, NULL);
    for (size_t i = 0; i < k; i++)
        free(bufs[i]);
    free(bufs);
    free(ts);
    free(path);
    free(cfg);
    free(cfg_src);
}

static void perturb(float *v, uint64_t n, size_t ti, void *ctx)
{
    (void)ctx;
    float *noise = malloc(n * sizeof *noise);
    th_randn(noise, n, 100 + ti);
    for (uint64_t e = 0; e < n; e++)
        v[e] += 0.02f * noise[e];
    free(noise);
}

static void absolute(float *v, uint64_t n, size_t ti, void *ctx)
{
    (void)ti;
    (void)ctx;
    for (uint64_t e = 0; e < n; e++)
        v[e] = fabsf(v[e]);
}

static void one_nan(float *v, uint64_t n, size_t ti, void *ctx)
{
    if (ti == *(size_t *)ctx && n > 7)
        v[7] = NAN;
}

static const tensors *base_of;
static double movement(const tensors *in, size_t ti, uint64_t k, void *ctx)
{
    (void)ctx;
    float w = in->v[ti][k], b = base_of->v[ti][k];
    return w * (w - b);
}

START_TEST(test_movement_mask)
{
    char *dir = th_tmpdir();
    char *model = th_fixture(MLP);
    tensors in;
    load_tensors(model, &in);
    char *base = th_path(dir, "base");
    write_model(base, &in, "F32", perturb, NULL, NULL);
    tensors b;
    load_tensors(base, &b);
    base_of = &b;
    const char *pats[] = {"0.5", "0.9"};
    for (int p = 0; p < 2; p++) {
        char name[32];
        snprintf(name, sizeof name, "out-%d", p);
        char *out = th_path(dir, name);
        const char *args[] = {"prune",     "--model",    model,      "--out",
                              out,         "--method",   "movement", "--base",
                              base,        "--sparsity", pats[p],    "--quiet",
                              "--no-sync", NULL};
        free(run_ok(args));
        check_mask(out, &in, atof(pats[p]), movement, NULL);
        // shears.json records the base.
        char *man = th_path(out, "shears.json");
        json_t *m = json_load_file(man, 0, NULL);
        ck_assert_str_eq(json_string_value(json_object_get(
                             json_object_get(m, "spec"), "base")),
                         base);
        json_decref(m);
        free(man);
        free(out);
    }
    // A sweep crossing movement with another method gives base to the
    // movement points alone.
    char *rep = th_path(dir, "sweep.json");
    char *ev = th_fixture("mlp-fmnist-data/evaluation.safetensors");
    const char *sargs[] = {"sweep",
                           "--model",
                           model,
                           "--evaluation",
                           ev,
                           "--methods",
                           "magnitude,movement",
                           "--levels",
                           "0.5",
                           "--base",
                           base,
                           "--report",
                           rep,
                           "--quiet",
                           NULL};
    free(run_ok(sargs));
    json_t *sw = json_load_file(rep, 0, NULL);
    json_t *pts = json_object_get(sw, "points");
    ck_assert_uint_eq(json_array_size(pts), 2);
    ck_assert_str_eq(
        json_string_value(json_object_get(json_array_get(pts, 1), "method")),
        "movement");
    json_decref(sw);
    free(rep);
    free(ev);
    free_tensors(&b);
    free_tensors(&in);
    th_rmtree(dir);
    free(base);
    free(model);
    free(dir);
}
END_TEST

// A scores file of |W| is magnitude, byte for byte, for every pattern
// and scope.
START_TEST(test_scores_equal_magnitude)
{
    char *dir = th_tmpdir();
    char *model = th_fixture(MLP);
    tensors in;
    load_tensors(model, &in);
    char *sdir = th_path(dir, "s");
    write_model(sdir, &in, "F32", absolute, NULL, NULL);
    char *scores = th_path(sdir, "model.safetensors");
    const char *shapes[][4] = {{"--sparsity", "0.7", "--scope", "layer"},
                               {"--pattern", "2:4", "--scope", "layer"},
                               {"--sparsity", "0.6", "--scope", "global"},
                               {"--pattern", "rows", "--sparsity", "0.25"}};
    for (int s = 0; s < 4; s++) {
        char *outs[2];
        for (int m = 0; m < 2; m++) {
            char name[32];
            snprintf(name, sizeof name, "out-%d-%d", s, m);
            outs[m] = th_path(dir, name);
            const char *args[] = {"prune",
                                  "--model",
                                  model,
                                  "--out",
                                  outs[m],
                                  "--method",
                                  m ? "scores" : "magnitude",
                                  shapes[s][0],
                                  shapes[s][1],
                                  shapes[s][2],
                                  shapes[s][3],
                                  "--quiet",
                                  "--no-sync",
                                  m ? "--scores" : NULL,
                                  scores,
                                  NULL};
            free(run_ok(args));
        }
        char *a = th_path(outs[0], "model.safetensors");
        char *b = th_path(outs[1], "model.safetensors");
        size_t la, lb;
        unsigned char *da = th_read_file(a, &la), *db = th_read_file(b, &lb);
        ck_assert_msg(la == lb && memcmp(da, db, la) == 0,
                      "scores |W| differ from magnitude (%s %s)", shapes[s][0],
                      shapes[s][1]);
        free(da);
        free(db);
        free(a);
        free(b);
        free(outs[0]);
        free(outs[1]);
    }
    free_tensors(&in);
    th_rmtree(dir);
    free(scores);
    free(sdir);
    free(model);
    free(dir);
}
END_TEST

// Exit code 2 or more, the words in stderr, and no output folder.
static void refused(const char *const *args, const char *out,
                    const char *words1, const char *words2)
{
    char *o = NULL, *e = NULL;
    int rc = th_run(&o, &e, args);
    ck_assert_msg(rc != 0, "accepted: %s", o);
    ck_assert_msg(strstr(e, words1) && strstr(e, words2), "%s", e);
    ck_assert(!sh_path_exists(out));
    free(o);
    free(e);
}

START_TEST(test_bad_bases_and_scores)
{
    char *dir = th_tmpdir();
    char *model = th_fixture(MLP);
    char *out = th_path(dir, "out");
    tensors in;
    load_tensors(model, &in);
    // A base of another dtype, a base lacking a target, a base of
    // another shape (the fixture's fc2 in fc1's place).
    char *bf = th_path(dir, "bf16"), *lack = th_path(dir, "lack");
    write_model(bf, &in, "BF16", NULL, NULL, NULL);
    write_model(lack, &in, "F32", NULL, NULL, "fc2.weight");
    const char *a1[] = {"prune",    "--model",  model,    "--out", out,
                        "--method", "movement", "--base", bf,      NULL};
    refused(a1, out, "fc1.weight", "BF16");
    const char *a2[] = {"prune",    "--model",  model,    "--out", out,
                        "--method", "movement", "--base", lack,    NULL};
    refused(a2, out, "fc2.weight", "lacks");
    tensors sw = in;
    long f1 = find(&in, "fc1.weight"), f2 = find(&in, "fc2.weight");
    sw.v = malloc(in.n * sizeof *sw.v);
    sw.rows = malloc(in.n * sizeof *sw.rows);
    sw.cols = malloc(in.n * sizeof *sw.cols);
    sw.numel = malloc(in.n * sizeof *sw.numel);
    for (size_t i = 0; i < in.n; i++) {
        size_t j = (long)i == f1 ? (size_t)f2 : i;
        sw.v[i] = in.v[j];
        sw.rows[i] = in.rows[j];
        sw.cols[i] = in.cols[j];
        sw.numel[i] = in.numel[j];
    }
    char *shape = th_path(dir, "shape");
    write_model(shape, &sw, "F32", NULL, NULL, NULL);
    const char *a3[] = {"prune",    "--model",  model,    "--out", out,
                        "--method", "movement", "--base", shape,   NULL};
    refused(a3, out, "fc1.weight", "[256, 512] in the base");
    // Scores lacking a target, scores holding a NaN; a base or scores for
    // a method that takes none, and movement without a base.
    char *sl = th_path(dir, "sl"), *sn = th_path(dir, "sn");
    write_model(sl, &in, "F32", absolute, NULL, "fc3.weight");
    size_t poisoned = (size_t)f2;
    write_model(sn, &in, "F32", one_nan, &poisoned, NULL);
    char *slf = th_path(sl, "model.safetensors");
    char *snf = th_path(sn, "model.safetensors");
    const char *a4[] = {"prune",    "--model", model,      "--out", out,
                        "--method", "scores",  "--scores", slf,     NULL};
    refused(a4, out, "fc3.weight", "lacks");
    const char *a5[] = {"prune",    "--model", model,      "--out", out,
                        "--method", "scores",  "--scores", snf,     NULL};
    refused(a5, out, "fc2.weight", "NaN");
    const char *a6[] = {"prune",    "--model",   model,    "--out", out,
                        "--method", "magnitude", "--base", bf,      NULL};
    refused(a6, out, "base", "movement");
    const char *a7[] = {"prune", "--model",  model,      "--out",
                        out,     "--method", "movement", NULL};
    refused(a7, out, "base", "movement");
    const char *a8[] = {"prune", "--model",  model,  "--out",
                        out,     "--method", "snip", NULL};
    refused(a8, out, "calibration", "snip");
    free(sw.v);
    free(sw.rows);
    free(sw.cols);
    free(sw.numel);
    free_tensors(&in);
    th_rmtree(dir);
    free(slf);
    free(snf);
    free(sl);
    free(sn);
    free(shape);
    free(bf);
    free(lack);
    free(out);
    free(model);
    free(dir);
}
END_TEST

// --- through the service

static const char *jstr(json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

// Submits body and waits for the job to succeed; its id into id.
static void job_ok(th_server *s, const char *body, char id[64])
{
    th_resp r;
    long st = th_post_json(s, "/v1/jobs", body, &r);
    ck_assert_msg(st == 202, "%ld: %s", st, r.body);
    snprintf(id, 64, "%s", jstr(r.json, "id"));
    th_resp_free(&r);
    json_t *job = th_job_wait(s, id, 120);
    ck_assert_msg(strcmp(jstr(job, "status"), "succeeded") == 0, "%s",
                  json_dumps(json_object_get(job, "error"), 0));
    json_decref(job);
}

// The job's model.safetensors into dir (with the fixture's config.json).
static void fetch_model(th_server *s, const char *id, const char *dir)
{
    char path[160];
    snprintf(path, sizeof path, "/v1/jobs/%s/artifact/files/model.safetensors",
             id);
    th_resp r;
    ck_assert_int_eq(th_get(s, path, &r), 200);
    sh_mkdir_p(dir);
    char *f = th_path(dir, "model.safetensors");
    th_write_file(f, r.body, r.len);
    th_resp_free(&r);
    char *cfg_src = th_fixture(MLP "/config.json");
    char *cfg = th_path(dir, "config.json");
    ck_assert_int_eq(sh_file_copy(cfg_src, cfg, false), 0);
    free(f);
    free(cfg);
    free(cfg_src);
}

static char *upload_scores(th_server *s, const char *file)
{
    th_resp r;
    long st = th_upload(s, "/v1/datasets?kind=scores", file,
                        "application/octet-stream", false, &r);
    ck_assert_msg(st == 201, "%ld %s", st, r.body);
    char *id = sh_strdup(jstr(r.json, "id"));
    th_resp_free(&r);
    return id;
}

// A movement job and a scores job with their inputs uploaded, end to end;
// inputs that do not fit the checkpoint are refused at submission naming
// the tensor, a scores file holding a NaN at upload.
START_TEST(test_service_movement_and_scores)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *dir = th_tmpdir();
    char *model = th_fixture(MLP);
    tensors in;
    load_tensors(model, &in);
    char *base = th_path(dir, "base"), *bf = th_path(dir, "bf16");
    char *sdir = th_path(dir, "scores"), *ldir = th_path(dir, "lack");
    char *ndir = th_path(dir, "nan");
    write_model(base, &in, "F32", perturb, NULL, NULL);
    write_model(bf, &in, "BF16", NULL, NULL, NULL);
    write_model(sdir, &in, "F32", absolute, NULL, NULL);
    write_model(ldir, &in, "F32", absolute, NULL, "fc3.weight");
    size_t poisoned = (size_t)find(&in, "fc2.weight");
    write_model(ndir, &in, "F32", one_nan, &poisoned, NULL);
    char *sfile = th_path(sdir, "model.safetensors");
    char *lfile = th_path(ldir, "model.safetensors");
    char *nfile = th_path(ndir, "model.safetensors");

    char *ck = th_upload_checkpoint(&s, model);
    char *bk = th_upload_checkpoint(&s, base);
    char *bfk = th_upload_checkpoint(&s, bf);
    char body[512];
    th_resp r;
    // Score tensors are uploaded as such (?kind=scores); without it the
    // file is no dataset.
    ck_assert_int_eq(th_upload(&s, "/v1/datasets", sfile,
                               "application/octet-stream", false, &r),
                     422);
    th_resp_free(&r);
    char *sc = upload_scores(&s, sfile), *lack = upload_scores(&s, lfile);
    snprintf(body, sizeof body, "/v1/datasets/%s", sc);
    ck_assert_int_eq(th_get(&s, body, &r), 200);
    ck_assert_str_eq(jstr(r.json, "kind"), "scores");
    th_resp_free(&r);
    ck_assert_int_eq(th_upload(&s, "/v1/datasets?kind=scores", nfile,
                               "application/octet-stream", false, &r),
                     422);
    ck_assert_msg(strstr(r.body, "fc2.weight") && strstr(r.body, "NaN"), "%s",
                  r.body);
    th_resp_free(&r);

    char mv[64], sj[64], mg[64];
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"movement\",\"base\":\"%s\","
             "\"sparsity\":0.5}",
             ck, bk);
    job_ok(&s, body, mv);
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"scores\",\"scores\":\"%s\","
             "\"pattern\":\"2:4\"}",
             ck, sc);
    job_ok(&s, body, sj);
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"magnitude\","
             "\"pattern\":\"2:4\"}",
             ck);
    job_ok(&s, body, mg);
    char *mvdir = th_path(dir, "mv"), *sjdir = th_path(dir, "sj");
    char *mgdir = th_path(dir, "mg");
    fetch_model(&s, mv, mvdir);
    fetch_model(&s, sj, sjdir);
    fetch_model(&s, mg, mgdir);
    tensors b;
    load_tensors(base, &b);
    base_of = &b;
    check_mask(mvdir, &in, 0.5, movement, NULL);
    char *a1 = th_path(sjdir, "model.safetensors");
    char *a2 = th_path(mgdir, "model.safetensors");
    size_t l1, l2;
    unsigned char *d1 = th_read_file(a1, &l1), *d2 = th_read_file(a2, &l2);
    ck_assert(l1 == l2 && memcmp(d1, d2, l1) == 0);
    free(d1);
    free(d2);
    free(a1);
    free(a2);

    // Refused at submission, naming the tensor.
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"movement\",\"base\":\"%s\"}",
             ck, bfk);
    ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 422);
    th_expect_problem(&r, 422, "base", "BF16");
    th_resp_free(&r);
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"scores\",\"scores\":\"%s\"}",
             ck, lack);
    ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 422);
    th_expect_problem(&r, 422, "scores", "fc3.weight");
    th_resp_free(&r);
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"scores\",\"scores\":\"%s\"}",
             ck, ck);
    ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 422);
    th_expect_problem(&r, 422, "scores", NULL);
    th_resp_free(&r);
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"movement\",\"base\":"
             "\"ck_nothere\"}",
             ck);
    ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 422);
    th_expect_problem(&r, 422, "base", "does not exist");
    th_resp_free(&r);

    free_tensors(&b);
    free_tensors(&in);
    ck_assert_int_eq(th_server_stop(&s), 0);
    th_server_free(&s);
    th_rmtree(dir);
    char *frees[] = {dir,   model, base, bf,  sdir, ldir, ndir,  sfile, lfile,
                     nfile, ck,    bk,   bfk, sc,   lack, mvdir, sjdir, mgdir};
    for (size_t i = 0; i < sizeof frees / sizeof frees[0]; i++)
        free(frees[i]);
}
END_TEST

Suite *suite_criteria(void)
{
    Suite *s = suite_create("criteria");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_gradient_criteria_masks);
    tcase_add_test(tc, test_taylor_structure);
    tcase_add_test(tc, test_sweeps_share_gradients);
    tcase_add_test(tc, test_movement_mask);
    tcase_add_test(tc, test_scores_equal_magnitude);
    tcase_add_test(tc, test_bad_bases_and_scores);
    suite_add_tcase(s, tc);
    TCase *svc = tcase_create("service");
    tcase_set_timeout(svc, 300);
    tcase_add_test(svc, test_service_movement_and_scores);
    suite_add_tcase(s, svc);
    return s;
}

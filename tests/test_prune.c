// test_prune.c: the engine end to end on real files: fixtures, hand-made
// models of every dtype, sharded folders; exact counts, N:M in every group,
// byte identity of what is not pruned.
#include "tests/helpers.h"

#include "common/util.h"
#include "engine/engine.h"
#include "engine/formats/output.h"
#include "engine/select/mask.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct run {
    char *dir, *out;
    eng_report r;
    sh_diag d;
    int rc;
} run;

static int run_spec_whole(run *x, const char *model, const char *spec_json,
                          const eng_hooks *h, int threads, const char *calib,
                          bool whole)
{
    memset(x, 0, sizeof *x);
    x->dir = th_tmpdir();
    x->out = th_path(x->dir, "out");
    ck_assert_int_eq(sh_mkdir_p(x->out), 0);
    json_t *j = json_loads(spec_json, 0, NULL);
    ck_assert_ptr_nonnull(j);
    eng_spec s;
    ck_assert_int_eq(eng_spec_parse(&s, j, &x->d), 0);
    json_decref(j);
    eng_model *m = NULL;
    ck_assert_msg(eng_model_open(&m, model, &x->d) == 0, "%s", x->d.msg);
    eng_report_init(&x->r, &s);
    eng_options o = {.out_dir = x->out,
                     .sync = false,
                     .threads = threads,
                     .calibration_path = calib,
                     .calibration_whole = whole};
    x->rc = eng_prune(m, &s, &o, h, &x->r, &x->d);
    eng_model_close(m);
    eng_spec_deinit(&s);
    return x->rc;
}

static int run_spec_opts(run *x, const char *model, const char *spec_json,
                         const eng_hooks *h, int threads, const char *calib)
{
    return run_spec_whole(x, model, spec_json, h, threads, calib, false);
}

static int run_spec_threads(run *x, const char *model, const char *spec_json,
                            const eng_hooks *h, int threads)
{
    return run_spec_opts(x, model, spec_json, h, threads, NULL);
}

static int run_spec(run *x, const char *model, const char *spec_json,
                    const eng_hooks *h)
{
    return run_spec_threads(x, model, spec_json, h, 0);
}

static const eng_layer_report *layer_named(const run *x, const char *name)
{
    for (size_t i = 0; i < x->r.n_layers; i++)
        if (strcmp(x->r.layers[i].name, name) == 0)
            return &x->r.layers[i];
    ck_abort_msg("no layer %s in the report", name);
    return NULL;
}

static void run_free(run *x)
{
    eng_report_deinit(&x->r);
    th_rmtree(x->dir);
    free(x->out);
    free(x->dir);
}

static bool same_file(const char *a, const char *b)
{
    size_t na = 0, nb = 0;
    unsigned char *x = th_read_file(a, &na), *y = th_read_file(b, &nb);
    bool same = na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

// Compares every tensor of two safetensors files: non-targets byte for
// byte; targets element by element (kept ones identical, others zero).
static void compare_tensors(const char *in_path, const char *out_path,
                            const eng_report *r)
{
    eng_st *a = NULL, *b = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_st_open(&a, in_path, &d), 0);
    ck_assert_msg(eng_st_open(&b, out_path, &d) == 0, "%s", d.msg);
    const eng_st_header *ha = eng_st_header_of(a), *hb = eng_st_header_of(b);
    ck_assert_uint_eq(ha->count, hb->count);
    for (size_t i = 0; i < ha->count; i++) {
        const eng_tensor_info *t = &ha->tensors[i];
        long j = eng_st_header_find(hb, t->name);
        ck_assert_int_ge(j, 0);
        const eng_tensor_info *u = &hb->tensors[j];
        ck_assert_int_eq(t->dtype, u->dtype);
        ck_assert_uint_eq(t->numel, u->numel);
        size_t es = eng_dtype_size(t->dtype);
        const unsigned char *x = eng_st_data(a, i),
                            *y = eng_st_data(b, (size_t)j);
        bool target = false;
        for (size_t k = 0; k < r->n_layers; k++)
            target = target || strcmp(r->layers[k].name, t->name) == 0;
        if (!target) {
            ck_assert_msg(memcmp(x, y, t->numel * es) == 0,
                          "non-target %s changed", t->name);
            continue;
        }
        for (uint64_t e = 0; e < t->numel; e++) {
            bool zero = eng_count_zeros(y + e * es, t->dtype, 1) == 1;
            ck_assert_msg(zero || memcmp(x + e * es, y + e * es, es) == 0,
                          "%s[%llu] changed", t->name, (unsigned long long)e);
        }
    }
    eng_st_close(a);
    eng_st_close(b);
}

// MLP fixture, magnitude 50% per layer: exact counts, biases and config
// byte-identical, the manifest complete.
START_TEST(test_mlp_magnitude_layer)
{
    char *model = th_fixture("mlp-fmnist");
    run x;
    ck_assert_msg(run_spec(&x, model,
                           "{\"method\":\"magnitude\",\"sparsity\":"
                           "0.5}",
                           NULL) == 0,
                  "%s", x.d.msg);
    ck_assert_uint_eq(x.r.target_tensors, 3);
    for (size_t i = 0; i < x.r.n_layers; i++) {
        const eng_layer_report *l = &x.r.layers[i];
        ck_assert_uint_eq(l->zeros, eng_count_for(0.5, l->params));
        ck_assert(l->pattern_ok);
    }
    char *in_w = th_path(model, "model.safetensors");
    char *out_w = th_path(x.out, "model.safetensors");
    compare_tensors(in_w, out_w, &x.r);
    char *in_c = th_path(model, "config.json"),
         *out_c = th_path(x.out, "config.json");
    ck_assert(same_file(in_c, out_c));
    char *man = th_path(x.out, "shears.json");
    json_t *j = json_load_file(man, 0, NULL);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(
                         json_object_get(json_object_get(j, "spec"), "method")),
                     "magnitude");
    ck_assert_int_eq(json_array_size(json_object_get(
                         json_object_get(j, "report"), "layers")),
                     3);
    ck_assert_int_eq(
        json_array_size(json_object_get(json_object_get(j, "inputs"), "files")),
        2);
    ck_assert(json_is_integer(json_object_get(j, "seed")));
    json_decref(j);
    free(man);
    free(in_c);
    free(out_c);
    free(in_w);
    free(out_w);
    run_free(&x);
    free(model);
}
END_TEST

// Llama fixture with 2:4 and 4:8: every group of the written file holds at
// most N non-zeros; embeddings, norms and lm_head untouched.
START_TEST(test_llama_nm)
{
    char *model = th_fixture("llama-kjv");
    const char *specs[] = {"{\"method\":\"magnitude\",\"pattern\":\"2:4\"}",
                           "{\"method\":\"random\",\"pattern\":\"4:8\","
                           "\"seed\":7}"};
    const int nm[2][2] = {{2, 4}, {4, 8}};
    for (int s = 0; s < 2; s++) {
        run x;
        ck_assert_int_eq(run_spec(&x, model, specs[s], NULL), 0);
        ck_assert_uint_eq(x.r.target_tensors, 28);
        char *out_w = th_path(x.out, "model.safetensors");
        char *in_w = th_path(model, "model.safetensors");
        eng_st *st = NULL;
        sh_diag d;
        ck_assert_int_eq(eng_st_open(&st, out_w, &d), 0);
        for (size_t i = 0; i < x.r.n_layers; i++) {
            const eng_layer_report *l = &x.r.layers[i];
            ck_assert(l->pattern_ok);
            ck_assert_uint_eq(l->zeros, l->params / 2);
            long k = eng_st_header_find(eng_st_header_of(st), l->name);
            ck_assert(eng_check_nm(eng_st_data(st, (size_t)k), ENG_DTYPE_F32,
                                   l->params, nm[s][0], nm[s][1]));
        }
        eng_st_close(st);
        compare_tensors(in_w, out_w, &x.r);
        free(out_w);
        free(in_w);
        run_free(&x);
    }
    free(model);
}
END_TEST

// A model of every float dtype plus an integer tensor: dtypes kept, kept
// elements byte-identical, exact counts per tensor.
START_TEST(test_dtypes_round_trip)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "m.safetensors");
    enum { R = 16, C = 24 };
    float f[R * C];
    uint16_t h[R * C], bf[R * C];
    double dd[R * C];
    int64_t ids[7] = {1, 2, 3, 4, 5, 6, 7};
    th_randn(f, R * C, 11);
    eng_convert_from_f32(h, f, ENG_DTYPE_F16, R * C);
    th_randn(f, R * C, 12);
    eng_convert_from_f32(bf, f, ENG_DTYPE_BF16, R * C);
    th_randn(f, R * C, 13);
    for (int i = 0; i < R * C; i++)
        dd[i] = f[i] * 1.000001;
    th_randn(f, R * C, 14);
    th_tensor ts[] = {
        {"a.weight", "F16", 2, {R, C}, h},  {"b.weight", "BF16", 2, {R, C}, bf},
        {"c.weight", "F64", 2, {R, C}, dd}, {"d.weight", "F32", 2, {R, C}, f},
        {"ids", "I64", 1, {7}, ids},
    };
    th_write_st(path, ts, 5, NULL);
    run x;
    ck_assert_int_eq(run_spec(&x, path,
                              "{\"method\":\"magnitude\","
                              "\"sparsity\":0.3}",
                              NULL),
                     0);
    ck_assert_uint_eq(x.r.target_tensors, 4);
    for (size_t i = 0; i < x.r.n_layers; i++)
        ck_assert_uint_eq(x.r.layers[i].zeros, eng_count_for(0.3, R * C));
    char *out_w = th_path(x.out, "model.safetensors");
    compare_tensors(path, out_w, &x.r);
    free(out_w);
    run_free(&x);
    th_rmtree(dir);
    free(path);
    free(dir);
}
END_TEST

// A sharded folder with an index, a tokenizer and a file in a subfolder:
// the same files come out, the index and the others byte-identical.
START_TEST(test_sharded_folder)
{
    char *dir = th_tmpdir();
    char *model = th_path(dir, "model");
    char *sub = th_path(model, "extra");
    ck_assert_int_eq(sh_mkdir_p(sub), 0);
    float w1[64], w2[96], n1[8];
    th_randn(w1, 64, 1);
    th_randn(w2, 96, 2);
    for (int i = 0; i < 8; i++)
        n1[i] = 1;
    th_tensor s1[] = {{"layers.0.fc.weight", "F32", 2, {8, 8}, w1},
                      {"layers.0.norm.weight", "F32", 1, {8}, n1}};
    th_tensor s2[] = {{"layers.1.fc.weight", "F32", 2, {12, 8}, w2}};
    char *p1 = th_path(model, "model-00001-of-00002.safetensors");
    char *p2 = th_path(model, "model-00002-of-00002.safetensors");
    th_write_st(p1, s1, 2, "{\"format\":\"pt\"}");
    th_write_st(p2, s2, 1, "{\"format\":\"pt\"}");
    const char *index =
        "{\"metadata\":{\"total_size\":1},\"weight_map\":{"
        "\"layers.0.fc.weight\":\"model-00001-of-00002.safetensors\","
        "\"layers.0.norm.weight\":\"model-00001-of-00002.safetensors\","
        "\"layers.1.fc.weight\":\"model-00002-of-00002.safetensors\"}}";
    char *pi = th_path(model, "model.safetensors.index.json");
    th_write_file(pi, index, strlen(index));
    char *pt = th_path(model, "tokenizer.json");
    th_write_file(pt, "{\"v\":1}", 7);
    char *pe = th_path(sub, "notes.txt");
    th_write_file(pe, "hello", 5);
    char *pc = th_path(model, "config.json");
    th_write_file(pc, "{\"model_type\":\"toy\"}", 20);

    run x;
    ck_assert_msg(run_spec(&x, model, "{\"method\":\"magnitude\"}", NULL) == 0,
                  "%s", x.d.msg);
    ck_assert_uint_eq(x.r.target_tensors, 2);
    const char *same[] = {"model.safetensors.index.json", "tokenizer.json",
                          "extra/notes.txt", "config.json"};
    for (int i = 0; i < 4; i++) {
        char *a = th_path(model, same[i]), *b = th_path(x.out, same[i]);
        ck_assert_msg(same_file(a, b), "%s differs", same[i]);
        free(a);
        free(b);
    }
    char *o1 = th_path(x.out, "model-00001-of-00002.safetensors");
    char *o2 = th_path(x.out, "model-00002-of-00002.safetensors");
    compare_tensors(p1, o1, &x.r);
    compare_tensors(p2, o2, &x.r);
    // The output is itself a valid sharded model.
    eng_model *m = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_model_open(&m, x.out, &d), 0);
    ck_assert_uint_eq(eng_model_tensor_count(m), 3);
    ck_assert_str_eq(eng_model_arch(m), "toy");
    eng_model_close(m);
    run_free(&x);

    // An index that lies about a shard is refused, naming the tensor.
    const char *lying = "{\"weight_map\":{\"layers.0.fc.weight\":"
                        "\"model-00002-of-00002.safetensors\"}}";
    th_write_file(pi, lying, strlen(lying));
    ck_assert_int_eq(eng_model_open(&m, model, &d), SH_EFORMAT);
    ck_assert_ptr_nonnull(strstr(d.msg, "layers.0.fc.weight"));

    free(o1);
    free(o2);
    free(p1);
    free(p2);
    free(pi);
    free(pt);
    free(pe);
    free(pc);
    free(sub);
    th_rmtree(dir);
    free(model);
    free(dir);
}
END_TEST

// Global scope: one threshold over all targets: total zeros exact, and
// every kept weight of any target is >= every pruned weight of any target.
START_TEST(test_global_scope)
{
    char *model = th_fixture("mlp-fmnist");
    run x;
    ck_assert_int_eq(run_spec(&x, model,
                              "{\"method\":\"magnitude\","
                              "\"scope\":\"global\","
                              "\"sparsity\":0.6}",
                              NULL),
                     0);
    ck_assert_uint_eq(x.r.target_zeros, eng_count_for(0.6, x.r.target_params));
    char *out_w = th_path(x.out, "model.safetensors");
    char *in_w = th_path(model, "model.safetensors");
    eng_st *a = NULL, *b = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_st_open(&a, in_w, &d), 0);
    ck_assert_int_eq(eng_st_open(&b, out_w, &d), 0);
    float max_pruned = 0, min_kept = INFINITY;
    bool per_layer_differs = false;
    for (size_t i = 0; i < x.r.n_layers; i++) {
        const eng_layer_report *l = &x.r.layers[i];
        long ia = eng_st_header_find(eng_st_header_of(a), l->name);
        long ib = eng_st_header_find(eng_st_header_of(b), l->name);
        const float *wa = eng_st_data(a, (size_t)ia);
        const float *wb = eng_st_data(b, (size_t)ib);
        for (uint64_t e = 0; e < l->params; e++) {
            if (wb[e] == 0 && wa[e] != 0)
                max_pruned = fmaxf(max_pruned, fabsf(wa[e]));
            else if (wb[e] != 0)
                min_kept = fminf(min_kept, fabsf(wa[e]));
        }
        per_layer_differs |= fabs((double)l->zeros / l->params - 0.6) > 0.01;
    }
    ck_assert(max_pruned <= min_kept);
    ck_assert(per_layer_differs); // global differs from layer-wise
    compare_tensors(in_w, out_w, &x.r);
    eng_st_close(a);
    eng_st_close(b);
    free(out_w);
    free(in_w);
    run_free(&x);
    free(model);
}
END_TEST

// Global scope with an override: the override's tensor takes its own count
// and the pooled ones share the global threshold, with or without
// calibration data (which once gave the override an all-zero threshold:
// nothing pruned, and the report said pattern_ok).
START_TEST(test_global_override)
{
    char *model = th_fixture("mlp-fmnist");
    char *calib = th_fixture("mlp-fmnist-data/calibration.safetensors");
    const char *spec =
        "{\"method\":\"magnitude\",\"scope\":\"global\","
        "\"sparsity\":0.6,\"calibration\":{\"dataset\":\"c\",\"samples\":64},"
        "\"overrides\":[{\"match\":\"^fc2\\\\.weight$\","
        "\"sparsity\":0.3}]}";
    run plain, cal;
    ck_assert_int_eq(run_spec(&plain, model, spec, NULL), 0);
    ck_assert_int_eq(run_spec_opts(&cal, model, spec, NULL, 0, calib), 0);
    for (int k = 0; k < 2; k++) {
        const run *x = k ? &cal : &plain;
        const eng_layer_report *l = layer_named(x, "fc2.weight");
        ck_assert_uint_eq(l->zeros, eng_count_for(0.3, l->params));
        ck_assert(l->pattern_ok);
        uint64_t pooled = 0, zeros = 0;
        for (size_t i = 0; i < x->r.n_layers; i++) {
            const eng_layer_report *p = &x->r.layers[i];
            ck_assert_msg(p->pattern_ok, "%s", p->name);
            if (p != l)
                pooled += p->params, zeros += p->zeros;
        }
        ck_assert_uint_eq(zeros, eng_count_for(0.6, pooled));
    }
    // The same masks either way.
    char *pa = th_path(plain.out, "model.safetensors");
    char *pb = th_path(cal.out, "model.safetensors");
    ck_assert(same_file(pa, pb));
    free(pa);
    free(pb);
    run_free(&plain);
    run_free(&cal);
    free(calib);
    free(model);
}
END_TEST

// report.recon_error "sample" (the default without a Hessian) measures
// recon_error on the first ENG_RECON_SAMPLE_ROWS (2048) rows of the
// activations: with 128 sequences of 128 tokens it is the figure of the
// first 16 sequences alone; SparseGPT's default takes every row (its
// Hessian); false measures nothing, true every row.
START_TEST(test_recon_sample)
{
    char *model = th_fixture("llama-kjv");
    char *calib = th_fixture("llama-kjv-data/calibration.safetensors");
    run all, first, sgpt, none, full, dflt;
    ck_assert_int_eq(run_spec_opts(&all, model,
                                   "{\"method\":\"magnitude\",\"calibration\":"
                                   "{\"dataset\":\"c\",\"samples\":128},"
                                   "\"report\":{\"recon_error\":\"sample\"}}",
                                   NULL, 0, calib),
                     0);
    ck_assert_int_eq(run_spec_opts(&first, model,
                                   "{\"method\":\"magnitude\",\"calibration\":"
                                   "{\"dataset\":\"c\",\"samples\":16},"
                                   "\"report\":{\"recon_error\":\"sample\"}}",
                                   NULL, 0, calib),
                     0);
    ck_assert_int_eq(run_spec_opts(&none, model,
                                   "{\"method\":\"wanda\",\"calibration\":"
                                   "{\"dataset\":\"c\"},"
                                   "\"report\":{\"recon_error\":false}}",
                                   NULL, 0, calib),
                     0);
    ck_assert_int_eq(run_spec_opts(&full, model,
                                   "{\"method\":\"wanda\",\"calibration\":"
                                   "{\"dataset\":\"c\"},"
                                   "\"report\":{\"recon_error\":true}}",
                                   NULL, 0, calib),
                     0);
    ck_assert_int_eq(run_spec_opts(&dflt, model,
                                   "{\"method\":\"wanda\",\"calibration\":"
                                   "{\"dataset\":\"c\"}}",
                                   NULL, 0, calib),
                     0);
    ck_assert_int_eq(dflt.r.recon_rows, 2048);
    for (size_t i = 0; i < dflt.r.n_layers; i++)
        ck_assert(dflt.r.layers[i].recon_error > 0);
    run_free(&dflt);
    // Wanda told not to: no H, no trace; asked, every row.
    ck_assert_int_eq(none.r.recon_rows, 0);
    ck_assert(none.r.timings[ENG_PHASE_RECON] == 0.0);
    for (size_t i = 0; i < none.r.n_layers; i++)
        ck_assert(isnan(none.r.layers[i].recon_error));
    ck_assert_int_eq(full.r.recon_rows, 128 * 128);
    ck_assert_uint_eq(full.r.n_layers, none.r.n_layers);
    for (size_t i = 0; i < full.r.n_layers; i++) {
        ck_assert(full.r.layers[i].recon_error > 0);
        ck_assert_uint_eq(full.r.layers[i].zeros, none.r.layers[i].zeros);
    }
    run_free(&none);
    run_free(&full);
    ck_assert_int_eq(run_spec_opts(&sgpt, model,
                                   "{\"method\":\"sparsegpt\",\"calibration\":"
                                   "{\"dataset\":\"c\",\"samples\":128}}",
                                   NULL, 0, calib),
                     0);
    ck_assert_int_eq(all.r.calib_tokens, 128 * 128);
    ck_assert_int_eq(all.r.recon_rows, 2048);
    ck_assert_int_eq(first.r.recon_rows, 2048);
    ck_assert_int_eq(sgpt.r.recon_rows, 128 * 128);
    ck_assert_uint_eq(all.r.n_layers, first.r.n_layers);
    for (size_t i = 0; i < all.r.n_layers; i++) {
        double a = all.r.layers[i].recon_error;
        double b = first.r.layers[i].recon_error;
        ck_assert_msg(a > 0 && fabs(a - b) <= 1e-4 * b, "%s: %g vs %g",
                      all.r.layers[i].name, a, b);
    }
    run_free(&all);
    run_free(&first);
    run_free(&sgpt);
    free(calib);
    free(model);
}
END_TEST

// A model folder `name` under parent holding config.json; free the path.
static char *model_folder(const char *parent, const char *name,
                          const char *config)
{
    char *m = th_path(parent, name), *cfg = th_path(m, "config.json");
    ck_assert_int_eq(sh_mkdir_p(m), 0);
    th_write_file(cfg, config, strlen(config));
    free(cfg);
    return m;
}

// A tensor of an open file as F32 (any float dtype); free it.
static float *tensor_f32(const eng_st *st, const char *name, int64_t *rows,
                         int64_t *cols)
{
    long i = eng_st_header_find(eng_st_header_of(st), name);
    ck_assert_msg(i >= 0, "no %s", name);
    const eng_tensor_info *t = &eng_st_header_of(st)->tensors[i];
    *rows = t->shape[0];
    *cols = t->shape[1];
    float *f = malloc((size_t)t->numel * sizeof *f);
    eng_convert_to_f32(f, eng_st_data(st, (size_t)i), t->dtype,
                       (size_t)t->numel);
    return f;
}

// recon_error is ||W X - W' X||^2 / ||W X||^2 over the calibration rows:
// the report's figure for `layer`, the first layer of an mlp (its inputs
// are the calibration rows themselves), against that computed here from
// the files in double, W and W' as stored.
static void recon_direct(const char *model, const char *calib,
                         const char *layer, const char *spec, double tol)
{
    char *in_w = th_path(model, "model.safetensors");
    eng_st *a = NULL, *x = NULL, *b = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_st_open(&a, in_w, &d), 0);
    ck_assert_int_eq(eng_st_open(&x, calib, &d), 0);
    int64_t rows, cols, n, xc, r2, c2;
    float *w = tensor_f32(a, layer, &rows, &cols);
    float *xs = tensor_f32(x, "inputs", &n, &xc);
    ck_assert_int_eq(xc, cols);
    run r;
    ck_assert_msg(run_spec_opts(&r, model, spec, NULL, 0, calib) == 0, "%s: %s",
                  spec, r.d.msg);
    char *out_w = th_path(r.out, "model.safetensors");
    ck_assert_int_eq(eng_st_open(&b, out_w, &d), 0);
    float *wp = tensor_f32(b, layer, &r2, &c2);
    double num = 0, den = 0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t t = 0; t < n; t++) {
            double y = 0, yp = 0;
            for (int64_t j = 0; j < cols; j++) {
                y += (double)w[i * cols + j] * xs[t * cols + j];
                yp += (double)wp[i * cols + j] * xs[t * cols + j];
            }
            num += (y - yp) * (y - yp);
            den += y * y;
        }
    double want = num / den, got = layer_named(&r, layer)->recon_error;
    ck_assert_msg(fabs(got - want) <= tol * want, "%s: %.8g, direct %.8g", spec,
                  got, want);
    eng_st_close(a);
    eng_st_close(x);
    eng_st_close(b);
    free(w);
    free(xs);
    free(wp);
    free(out_w);
    free(in_w);
    run_free(&r);
}

// recon_error against the direct figure. On the fixture mlp: SparseGPT
// (the numerator from the errors its sweep tracks) at 0.5 and 0.8, 2:4
// with blocks of 100 columns, and Wanda asked for every row (two traces);
// on an F16 copy of it, SparseGPT rounded to F16 after its sweep (two
// traces). On one layer fed inputs of rank 8 with a dampening of 1e-4,
// the sweep's float errors drift from the trace (by 0.7% over the layer,
// more on single rows): the check on 16 rows catches that and the trace is
// taken.
START_TEST(test_recon_direct)
{
#define CAL "\"calibration\":{\"dataset\":\"c\"}"
    static const char *const specs[] = {
        "{\"method\":\"sparsegpt\"," CAL "}",
        "{\"method\":\"sparsegpt\",\"sparsity\":0.8," CAL "}",
        "{\"method\":\"sparsegpt\",\"pattern\":\"2:4\","
        "\"sparsegpt\":{\"blocksize\":100}," CAL "}",
        "{\"method\":\"wanda\",\"report\":{\"recon_error\":true}," CAL "}",
    };
    char *model = th_fixture("mlp-fmnist");
    char *calib = th_fixture("mlp-fmnist-data/calibration.safetensors");
    for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++)
        recon_direct(model, calib, "fc1.weight", specs[k], 1e-4);

    // The fixture mlp in F16.
    char *dir = th_tmpdir(), *in_w = th_path(model, "model.safetensors");
    char *cfg_in = th_path(model, "config.json"),
         *cfg = th_path(dir, "config.json");
    size_t len = 0;
    unsigned char *text = th_read_file(cfg_in, &len);
    th_write_file(cfg, text, len);
    eng_st *st = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_st_open(&st, in_w, &d), 0);
    const eng_st_header *hd = eng_st_header_of(st);
    th_tensor ts[8];
    uint16_t *half[8];
    ck_assert_uint_le(hd->count, 8);
    for (size_t i = 0; i < hd->count; i++) {
        const eng_tensor_info *t = &hd->tensors[i];
        half[i] = malloc((size_t)t->numel * sizeof **half);
        eng_convert_from_f32(half[i], eng_st_data(st, i), ENG_DTYPE_F16,
                             (size_t)t->numel);
        ts[i] = (th_tensor){
            .name = t->name, .dtype = "F16", .ndim = t->ndim, .data = half[i]};
        for (int j = 0; j < t->ndim; j++)
            ts[i].shape[j] = t->shape[j];
    }
    char *f16 = th_path(dir, "model.safetensors");
    th_write_st(f16, ts, hd->count, NULL);
    recon_direct(dir, calib, "fc1.weight", specs[0], 1e-4);
    for (size_t i = 0; i < hd->count; i++)
        free(half[i]);
    eng_st_close(st);

    // One layer, 64 x 256, inputs of rank 8.
    char *low = model_folder(dir, "low",
                             "{\"model_type\": \"mlp\", \"layers\": "
                             "[\"fc\"], \"hidden_act\": \"relu\"}");
    char *lcal = th_path(dir, "low.safetensors"),
         *lw = th_path(low, "model.safetensors");
    enum { OUT = 64, IN = 256, RANK = 8, TOK = 512 };
    float *wl = malloc(OUT * IN * sizeof *wl), *basis = malloc(RANK * IN * 4),
          *z = malloc(TOK * RANK * 4), *xl = calloc(TOK * IN, 4);
    th_randn(wl, OUT * IN, 7);
    th_randn(basis, RANK * IN, 8);
    th_randn(z, TOK * RANK, 9);
    for (int t = 0; t < TOK; t++)
        for (int q = 0; q < RANK; q++)
            for (int j = 0; j < IN; j++)
                xl[t * IN + j] += z[t * RANK + q] * basis[q * IN + j];
    th_tensor tw = {"fc.weight", "F32", 2, {OUT, IN}, wl};
    th_tensor tx = {"inputs", "F32", 2, {TOK, IN}, xl};
    th_write_st(lw, &tw, 1, NULL);
    th_write_st(lcal, &tx, 1, NULL);
    recon_direct(low, lcal, "fc.weight",
                 "{\"method\":\"sparsegpt\",\"sparsegpt\":{\"damp\":1e-4},"
                 "\"calibration\":{\"dataset\":\"c\"}}",
                 1e-3);
#undef CAL
    free(wl);
    free(basis);
    free(z);
    free(xl);
    free(lw);
    free(low);
    free(lcal);
    free(f16);
    free(text);
    free(cfg);
    free(cfg_in);
    free(in_w);
    th_rmtree(dir);
    free(dir);
    free(calib);
    free(model);
}
END_TEST

// The report without its timings (they alone may differ between runs).
static char *report_text(const eng_report *r)
{
    json_t *j = eng_report_to_json(r);
    json_object_del(j, "timings");
    json_object_del(j, "seconds");
    json_t *l;
    size_t i;
    json_array_foreach (json_object_get(j, "layers"), i, l)
        json_object_del(l, "timings");
    char *text = json_dumps(j, JSON_SORT_KEYS);
    json_decref(j);
    return text;
}

// The engine's threads (math/par.h) change who computes what, never the
// result: 1, 2 and 4 threads write the same bytes and report the same
// figures (recon errors included) for every calibrated method and
// pattern, on both families. OpenBLAS runs each call on one thread over
// tiles fixed by the shapes (linalg.c): its own threading would round
// SYRK, GEMM and the factorisations differently for each count.
START_TEST(test_calibrated_threads_same_bytes)
{
    static const char *const specs[] = {
#define CAL "\"calibration\":{\"dataset\":\"c\"}"
        "{\"method\":\"wanda\"," CAL "}",
        "{\"method\":\"wanda\",\"pattern\":\"2:4\"," CAL "}",
        "{\"method\":\"wanda\",\"sparsity\":0.7," CAL "}",
        "{\"method\":\"magnitude\",\"pattern\":\"2:4\"," CAL "}",
        "{\"method\":\"magnitude\",\"pattern\":\"rows\","
        "\"sparsity\":0.25," CAL "}",
        "{\"method\":\"sparsegpt\"," CAL "}",
        "{\"method\":\"sparsegpt\",\"pattern\":\"2:4\"," CAL "}",
        "{\"method\":\"wanda\",\"report\":{\"recon_error\":true}," CAL "}",
#undef CAL
    };
    static const char *const fixtures[][2] = {
        {"mlp-fmnist", "mlp-fmnist-data/calibration.safetensors"},
        {"llama-kjv", "llama-kjv-data/calibration.safetensors"},
    };
    for (size_t f = 0; f < 2; f++) {
        char *model = th_fixture(fixtures[f][0]);
        char *calib = th_fixture(fixtures[f][1]);
        for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
            run one, other;
            eng_set_threads(1);
            ck_assert_int_eq(
                run_spec_opts(&one, model, specs[k], NULL, 1, calib), 0);
            char *a = th_path(one.out, "model.safetensors");
            char *ta = report_text(&one.r);
            for (int t = 2; t <= 4; t += 2) {
                eng_set_threads(t);
                ck_assert_int_eq(
                    run_spec_opts(&other, model, specs[k], NULL, t, calib), 0);
                char *b = th_path(other.out, "model.safetensors");
                char *tb = report_text(&other.r);
                ck_assert_msg(same_file(a, b), "%s %s: %d threads",
                              fixtures[f][0], specs[k], t);
                ck_assert_str_eq(ta, tb);
                free(b);
                free(tb);
                run_free(&other);
            }
            free(a);
            free(ta);
            run_free(&one);
        }
        free(model);
        free(calib);
    }
    eng_set_threads(1);
}
END_TEST

// An mlp's first layer reads its calibration rows from the file a piece
// of rows at a time (about a million values), never through the mapping:
// the bytes and the report are those of reading them whole first, for
// every statistic the pieces feed (column norms, the recon estimate's
// rows, OWL's pass), at any thread count; a non-finite value is named by
// its row either way. Here 2600 rows of 1000 features: three pieces.
START_TEST(test_calibration_streamed)
{
    char *dir = th_tmpdir();
    char *model = model_folder(dir, "m",
                               "{\"model_type\":\"mlp\",\"layers\":"
                               "[\"fc1\",\"fc2\"],\"hidden_act\":\"relu\"}");
    char *calib = th_path(dir, "c.safetensors"),
         *wp = th_path(model, "model.safetensors");
    enum { IN = 1000, HID = 48, OUT = 10, ROWS = 2600 };
    float *w = malloc((HID * IN + HID + OUT * HID + OUT) * sizeof *w);
    th_randn(w, HID * IN + HID + OUT * HID + OUT, 3);
    th_tensor ts[] = {
        {"fc1.weight", "F32", 2, {HID, IN}, w},
        {"fc1.bias", "F32", 1, {HID}, w + HID * IN},
        {"fc2.weight", "F32", 2, {OUT, HID}, w + HID * IN + HID},
        {"fc2.bias", "F32", 1, {OUT}, w + HID * IN + HID + OUT * HID}};
    th_write_st(wp, ts, 4, NULL);
    float *x = malloc((size_t)ROWS * IN * sizeof *x);
    th_randn(x, (size_t)ROWS * IN, 4);
    th_tensor in = {"inputs", "F32", 2, {ROWS, IN}, x};
    th_write_st_padded(calib, &in, 1);
    static const char *const specs[] = {
#define CAL "\"calibration\":{\"dataset\":\"c\"}"
        "{\"method\":\"wanda\"," CAL "}",
        "{\"method\":\"wanda\",\"pattern\":\"2:4\"," CAL "}",
        "{\"method\":\"magnitude\"," CAL "}",
        "{\"method\":\"wanda\",\"sparsity\":0.6,\"allocation\":\"owl\"," CAL
        "}",
        "{\"method\":\"wanda\",\"targets\":[\"^fc1\\\\.weight$\"]," CAL "}",
#undef CAL
    };
    for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
        run whole;
        eng_set_threads(1);
        ck_assert_msg(
            run_spec_whole(&whole, model, specs[k], NULL, 1, calib, true) == 0,
            "%s: %s", specs[k], whole.d.msg);
        char *a = th_path(whole.out, "model.safetensors");
        char *ta = report_text(&whole.r);
        ck_assert_int_eq(whole.r.calib_samples, ROWS);
        for (int t = 1; t <= 3; t += 2) {
            run piece;
            eng_set_threads(t);
            ck_assert_int_eq(
                run_spec_whole(&piece, model, specs[k], NULL, t, calib, false),
                0);
            char *b = th_path(piece.out, "model.safetensors");
            char *tb = report_text(&piece.r);
            ck_assert_msg(same_file(a, b), "%s: %d threads", specs[k], t);
            ck_assert_str_eq(ta, tb);
            free(b);
            free(tb);
            run_free(&piece);
        }
        free(a);
        free(ta);
        run_free(&whole);
    }
    // A NaN in the third piece, and an Inf after it in the same piece.
    x[2200 * IN + 17] = NAN;
    x[2400 * IN] = INFINITY;
    th_write_st_padded(calib, &in, 1);
    for (int whole = 0; whole < 2; whole++) {
        run bad;
        eng_set_threads(2);
        ck_assert_int_eq(
            run_spec_whole(&bad, model, specs[0], NULL, 2, calib, whole),
            SH_EFORMAT);
        ck_assert_msg(strstr(bad.d.msg, "calibration data") &&
                          strstr(bad.d.msg, "at row 2200"),
                      "%s", bad.d.msg);
        run_free(&bad);
    }
    eng_set_threads(1);
    free(x);
    free(w);
    free(wp);
    free(model);
    free(calib);
    th_rmtree(dir);
    free(dir);
}
END_TEST

// Every phase of a calibrated run is timed; together they are the run.
START_TEST(test_timings)
{
    char *model = th_fixture("llama-kjv");
    char *calib = th_fixture("llama-kjv-data/calibration.safetensors");
    run x;
    ck_assert_int_eq(run_spec_opts(&x, model,
                                   "{\"method\":\"sparsegpt\",\"calibration\":"
                                   "{\"dataset\":\"c\"}}",
                                   NULL, 0, calib),
                     0);
    double sum = 0;
    for (int p = 0; p < ENG_PHASE_COUNT; p++) {
        ck_assert(x.r.timings[p] >= 0);
        sum += x.r.timings[p];
    }
    static const eng_phase ran[] = {ENG_PHASE_READ,       ENG_PHASE_FORWARD,
                                    ENG_PHASE_STATISTICS, ENG_PHASE_SOLVE,
                                    ENG_PHASE_RECON,      ENG_PHASE_WRITE};
    for (size_t i = 0; i < sizeof ran / sizeof ran[0]; i++)
        ck_assert_msg(x.r.timings[ran[i]] > 0, "%s", eng_phase_name(ran[i]));
    ck_assert(sum <= x.r.seconds * 1.001 && sum >= x.r.seconds * 0.5);
    // Per tensor: its solve, recon and write, within the run's.
    double solve = 0;
    for (size_t i = 0; i < x.r.n_layers; i++) {
        const eng_layer_report *l = &x.r.layers[i];
        ck_assert(l->timings[ENG_PHASE_SOLVE] > 0);
        ck_assert(l->timings[ENG_PHASE_WRITE] > 0);
        ck_assert(isnan(l->timings[ENG_PHASE_FORWARD]));
        solve += l->timings[ENG_PHASE_SOLVE];
    }
    ck_assert(solve <= x.r.timings[ENG_PHASE_SOLVE] * 1.0001);
    json_t *j = eng_report_to_json(&x.r);
    json_t *t = json_object_get(j, "timings");
    for (int p = 0; p < ENG_PHASE_COUNT; p++)
        ck_assert(json_is_number(json_object_get(t, eng_phase_name(p))));
    json_decref(j);
    run_free(&x);
    free(calib);
    free(model);
}
END_TEST

// The format seam: output.c lays the weight files out from the plan's
// outputs and passes config.json through the format's rewrite. A format
// of the test's own renames every tensor and marks the config.
static int renamed_outputs(eng_plan *p, size_t ti, sh_diag *d)
{
    int rc = eng_format_dense.outputs(p, ti, d);
    const char *name = eng_model_tensor(p->m, ti)->name;
    p->rows[ti].out[0].name =
        strcmp(name, "fc1.weight") == 0 ? "first.weight" : name;
    return rc;
}

static int mark_config(const eng_plan *p, json_t *cfg, sh_diag *d)
{
    (void)d;
    return json_object_set_new(cfg, "planned_tensors",
                               json_integer((json_int_t)p->n));
}

START_TEST(test_format_seam)
{
    const eng_format fmt = {.name = "test",
                            .outputs = renamed_outputs,
                            .rewrite_config = mark_config};
    char *model = th_fixture("mlp-fmnist");
    char *dir = th_tmpdir();
    sh_diag d = {0};
    eng_model *m = NULL;
    ck_assert_int_eq(eng_model_open(&m, model, &d), 0);
    json_t *j = json_loads("{\"method\":\"magnitude\"}", 0, NULL);
    eng_spec s;
    ck_assert_int_eq(eng_spec_parse(&s, j, &d), 0);
    eng_plan plan;
    ck_assert_int_eq(eng_plan_build(&plan, &s, m, &d), 0);
    ck_assert_int_eq(eng_format_plan(&fmt, &plan, &d), 0);
    eng_options o = {.out_dir = dir};
    eng_out *w = NULL;
    ck_assert_msg(eng_out_open(&w, &plan, &fmt, &o, &d) == 0, "%s", d.msg);
    for (size_t i = 0; i < plan.n; i++)
        ck_assert_int_eq(eng_out_copy(w, i, &d), 0);
    ck_assert_msg(eng_out_finish(w, &d) == 0, "%s", d.msg);
    eng_out_close(w);
    char *cfg_path = th_path(dir, "config.json");
    json_t *cfg = json_load_file(cfg_path, 0, NULL);
    ck_assert_ptr_nonnull(cfg);
    ck_assert_int_eq(
        json_integer_value(json_object_get(cfg, "planned_tensors")), 6);
    eng_model *out = NULL;
    ck_assert_int_eq(eng_model_open(&out, dir, &d), 0);
    ck_assert_int_lt(eng_model_find(out, "fc1.weight"), 0);
    long i = eng_model_find(out, "first.weight");
    ck_assert_int_ge(i, 0);
    ck_assert_int_eq(eng_model_tensor(out, (size_t)i)->numel, 512 * 784);
    eng_model_close(out);
    json_decref(cfg);
    free(cfg_path);
    eng_plan_deinit(&plan);
    eng_spec_deinit(&s);
    json_decref(j);
    eng_model_close(m);
    th_rmtree(dir);
    free(dir);
    free(model);
}
END_TEST

// Rows: whole output channels, conv weights pruned as [out, rest], and a
// per-tensor override.
START_TEST(test_rows_conv_overrides)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "m.safetensors");
    float conv[8 * 3 * 2 * 2], fc[10 * 16];
    th_randn(conv, 8 * 12, 3);
    th_randn(fc, 160, 4);
    th_tensor ts[] = {{"conv.weight", "F32", 4, {8, 3, 2, 2}, conv},
                      {"fc.weight", "F32", 2, {10, 16}, fc}};
    th_write_st(path, ts, 2, NULL);
    run x;
    ck_assert_int_eq(
        run_spec(&x, path,
                 "{\"method\":\"magnitude\",\"pattern\":\"rows\","
                 "\"sparsity\":0.25,\"overrides\":[{\"match\":\"^fc\","
                 "\"pattern\":\"2:4\"}]}",
                 NULL),
        0);
    eng_layer_report *lc = eng_report_layer(&x.r, "conv.weight");
    eng_layer_report *lf = eng_report_layer(&x.r, "fc.weight");
    ck_assert_uint_eq(lc->zeros, 2 * 12); // 2 of 8 rows of 12
    ck_assert_int_eq(lf->pattern.kind, ENG_PATTERN_NM);
    ck_assert_uint_eq(lf->zeros, 80);
    ck_assert(lc->pattern_ok && lf->pattern_ok);
    char *out_w = th_path(x.out, "model.safetensors");
    eng_st *st = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_st_open(&st, out_w, &d), 0);
    long k = eng_st_header_find(eng_st_header_of(st), "conv.weight");
    const float *w = eng_st_data(st, (size_t)k);
    int zero_rows = 0;
    for (int r = 0; r < 8; r++) {
        int z = 0;
        for (int c = 0; c < 12; c++)
            z += w[r * 12 + c] == 0;
        ck_assert(z == 0 || z == 12);
        zero_rows += z == 12;
    }
    ck_assert_int_eq(zero_rows, 2);
    eng_st_close(st);
    free(out_w);
    run_free(&x);
    th_rmtree(dir);
    free(path);
    free(dir);
}
END_TEST

// Failures: NaN weights, N:M that does not divide, a spec with no target.
// Each names the tensor or field; nothing claims success.
START_TEST(test_failures_named)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "m.safetensors");
    float w[4 * 6];
    th_randn(w, 24, 5);
    w[7] = NAN;
    th_tensor ts[] = {{"bad.weight", "F32", 2, {4, 6}, w}};
    th_write_st(path, ts, 1, NULL);
    run x;
    ck_assert_int_eq(run_spec(&x, path, "{\"method\":\"magnitude\"}", NULL),
                     SH_ENUMERIC);
    ck_assert_ptr_nonnull(strstr(x.d.msg, "bad.weight"));
    run_free(&x);
    ck_assert_int_eq(run_spec(&x, path,
                              "{\"method\":\"magnitude\","
                              "\"pattern\":\"2:4\"}",
                              NULL),
                     SH_ESPEC);
    ck_assert_ptr_nonnull(strstr(x.d.msg, "\"bad.weight\" has 6"));
    run_free(&x);
    ck_assert_int_eq(run_spec(&x, path,
                              "{\"method\":\"magnitude\","
                              "\"ignore\":[\".\"]}",
                              NULL),
                     SH_ESPEC);
    run_free(&x);
    th_rmtree(dir);
    free(path);
    free(dir);
}
END_TEST

typedef struct watch {
    int calls;
    double last;
    bool monotonic;
    int cancel_after;
} watch;

static void on_progress(void *ctx, const eng_progress *p)
{
    watch *w = ctx;
    w->calls++;
    if (p->fraction + 1e-12 < w->last)
        w->monotonic = false;
    w->last = p->fraction;
}

static bool on_cancel(void *ctx)
{
    watch *w = ctx;
    return w->cancel_after >= 0 && w->calls > w->cancel_after;
}

// Progress rises to 1; cancellation stops the run with SH_ECANCELED.
START_TEST(test_progress_and_cancel)
{
    char *model = th_fixture("llama-kjv");
    watch w = {.monotonic = true, .cancel_after = -1};
    eng_hooks h = {.ctx = &w, .progress = on_progress, .cancelled = on_cancel};
    run x;
    ck_assert_int_eq(run_spec(&x, model, "{\"method\":\"magnitude\"}", &h), 0);
    ck_assert(w.monotonic);
    ck_assert_int_gt(w.calls, 10);
    ck_assert_double_eq_tol(w.last, 1.0, 1e-9);
    run_free(&x);
    w = (watch){.monotonic = true, .cancel_after = 5};
    ck_assert_int_eq(run_spec(&x, model, "{\"method\":\"magnitude\"}", &h),
                     SH_ECANCELED);
    run_free(&x);
    free(model);
}
END_TEST

// The reader thread changes nothing: one thread and two give the same
// bytes, for every path (fast kernels, masks, global scope, rows).
START_TEST(test_threads_same_bytes)
{
    char *model = th_fixture("llama-kjv");
    const char *specs[] = {
        "{\"method\":\"magnitude\",\"sparsity\":0.6}",
        "{\"method\":\"magnitude\",\"scope\":\"global\",\"sparsity\":0.4}",
        "{\"method\":\"magnitude\",\"pattern\":\"4:8\"}",
        "{\"method\":\"random\",\"seed\":5,\"sparsity\":0.3}",
        "{\"method\":\"magnitude\",\"pattern\":\"rows\",\"sparsity\":0.2}",
    };
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        run a, b;
        ck_assert_int_eq(run_spec_threads(&a, model, specs[i], NULL, 1), 0);
        ck_assert_int_eq(run_spec_threads(&b, model, specs[i], NULL, 2), 0);
        char *pa = th_path(a.out, "model.safetensors");
        char *pb = th_path(b.out, "model.safetensors");
        ck_assert_msg(same_file(pa, pb), "%s", specs[i]);
        ck_assert_uint_eq(a.r.target_zeros, b.r.target_zeros);
        ck_assert_uint_eq(a.r.model_zeros, b.r.model_zeros);
        free(pa);
        free(pb);
        run_free(&a);
        run_free(&b);
    }
    free(model);
}
END_TEST

Suite *suite_prune(void)
{
    Suite *s = suite_create("prune");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_mlp_magnitude_layer);
    tcase_add_test(tc, test_llama_nm);
    tcase_add_test(tc, test_dtypes_round_trip);
    tcase_add_test(tc, test_sharded_folder);
    tcase_add_test(tc, test_global_scope);
    tcase_add_test(tc, test_global_override);
    tcase_add_test(tc, test_format_seam);
    tcase_add_test(tc, test_recon_sample);
    tcase_add_test(tc, test_recon_direct);
    tcase_add_test(tc, test_calibrated_threads_same_bytes);
    tcase_add_test(tc, test_calibration_streamed);
    tcase_add_test(tc, test_timings);
    tcase_add_test(tc, test_rows_conv_overrides);
    tcase_add_test(tc, test_failures_named);
    tcase_add_test(tc, test_progress_and_cancel);
    tcase_add_test(tc, test_threads_same_bytes);
    suite_add_tcase(s, tc);
    return s;
}

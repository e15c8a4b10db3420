// test_cli.c: the real binary: `prune` and `inspect`, exit codes, one-line
// errors, reports, and no half-written output.
#include "tests/helpers.h"

#include "common/sha256.h"
#include "common/util.h"
#include "engine/io/safetensors.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

// Exactly one error line, prefixed "shears: error: ", containing words;
// the lines before it, if any, are progress.
static void one_error_line(const char *err, const char *words)
{
    int errors = 0;
    const char *line = NULL;
    for (const char *p = err; *p;) {
        const char *nl = strchr(p, '\n');
        if (strncmp(p, "shears: error: ", 15) == 0) {
            errors++;
            line = p;
        }
        if (!nl)
            break;
        p = nl + 1;
    }
    ck_assert_msg(errors == 1, "%d error lines: %s", errors, err);
    ck_assert_msg(strchr(line, '\n') && strchr(line, '\n')[1] == '\0',
                  "the error is not the last line: %s", err);
    ck_assert_msg(strstr(line, words), "\"%s\" lacks \"%s\"", line, words);
}

// Nothing named *.partial-* is left in dir.
static void no_partials(const char *dir)
{
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)))
        ck_assert_msg(!strstr(e->d_name, ".partial-"), "left %s", e->d_name);
    closedir(d);
}

// inspect --system names the BLAS kernels and how they were chosen: the
// user's OPENBLAS_CORETYPE is kept; a generic core OpenBLAS picked by
// itself on a CPU with AVX2 or AVX-512 makes the program run again with a
// better one (SHEARS_BLAS_CORE_SEEN stands in for OpenBLAS's choice).
static json_t *inspect_system(void)
{
    char *o = NULL, *e = NULL;
    const char *args[] = {"inspect", "--system", "--json", NULL};
    ck_assert_int_eq(th_run(&o, &e, args), 0);
    json_t *j = json_loads(o, 0, NULL);
    ck_assert_msg(j, "not JSON: %s", o);
    ck_assert(json_real_value(json_object_get(json_object_get(j, "blas"),
                                              "sgemm_gflops")) > 0);
    free(o);
    free(e);
    return json_object_get(j, "blas") ? j : NULL;
}

START_TEST(test_inspect_system)
{
    const char *was = getenv("OPENBLAS_CORETYPE");
    char *saved = was ? strdup(was) : NULL;
    setenv("OPENBLAS_CORETYPE", "Prescott", 1);
    json_t *j = inspect_system();
    json_t *b = json_object_get(j, "blas");
    ck_assert_str_eq(json_string_value(json_object_get(b, "source")),
                     "OPENBLAS_CORETYPE");
    ck_assert(strcasecmp(json_string_value(json_object_get(b, "core")),
                         "Prescott") == 0);
    json_decref(j);

    unsetenv("OPENBLAS_CORETYPE");
    setenv("SHEARS_BLAS_CORE_SEEN", "Prescott", 1);
    j = inspect_system();
    b = json_object_get(j, "blas");
    json_t *cpu = json_object_get(j, "cpu");
    const char *src = json_string_value(json_object_get(b, "source"));
    const char *core = json_string_value(json_object_get(b, "core"));
    if (json_is_true(json_object_get(cpu, "avx2"))) {
        ck_assert_str_eq(src, "chosen");
        const char *want =
            json_is_true(json_object_get(cpu, "avx512_bf16")) ? "Cooperlake"
            : json_is_true(json_object_get(cpu, "avx512"))    ? "SkylakeX"
                                                              : "Haswell";
        ck_assert_msg(strcasecmp(core, want) == 0, "%s, not %s", core, want);
    } else {
        ck_assert_str_eq(src, "detected");
    }
    json_decref(j);
    unsetenv("SHEARS_BLAS_CORE_SEEN");
    if (saved)
        setenv("OPENBLAS_CORETYPE", saved, 1);
    free(saved);
}
END_TEST

START_TEST(test_prune_fixture_with_report)
{
    char *dir = th_tmpdir();
    char *out = th_path(dir, "pruned"), *rep = th_path(dir, "r.json");
    char *model = th_fixture("llama-kjv");
    char *o = NULL, *e = NULL;
    const char *args[] = {"prune", "--model",  model,       "--out",
                          out,     "--method", "magnitude", "--pattern",
                          "2:4",   "--report", rep,         NULL};
    ck_assert_int_eq(th_run(&o, &e, args), 0);
    ck_assert_ptr_nonnull(strstr(o, "targets: 28 tensors"));
    json_t *r = json_load_file(rep, 0, NULL);
    ck_assert_ptr_nonnull(r);
    const char *keys[] = {"method",  "pattern", "scope",  "sparsity",
                          "targets", "model",   "layers", "seconds"};
    for (int i = 0; i < 8; i++)
        ck_assert_msg(json_object_get(r, keys[i]), "report lacks %s", keys[i]);
    ck_assert_str_eq(json_string_value(json_object_get(r, "pattern")), "2:4");
    json_t *t = json_object_get(r, "targets");
    ck_assert_double_eq_tol(json_real_value(json_object_get(t, "sparsity")),
                            0.5, 1e-12);
    json_t *l0 = json_array_get(json_object_get(r, "layers"), 0);
    const char *lkeys[] = {"name",  "shape",    "dtype",     "params",
                           "zeros", "sparsity", "pattern_ok"};
    for (int i = 0; i < 7; i++)
        ck_assert_msg(json_object_get(l0, lkeys[i]), "layer lacks %s",
                      lkeys[i]);
    json_decref(r);
    char *man = th_path(out, "shears.json");
    json_t *m = json_load_file(man, 0, NULL);
    json_t *files = json_object_get(json_object_get(m, "inputs"), "files");
    ck_assert_int_eq(json_array_size(files), 2);
    for (size_t i = 0; i < 2; i++)
        ck_assert(sh_sha256_is_hex(json_string_value(
            json_object_get(json_array_get(files, i), "sha256"))));
    ck_assert_str_eq(json_string_value(json_object_get(
                         json_object_get(m, "shears"), "version")),
                     "0.1.0");
    json_decref(m);
    no_partials(dir);
    free(man);
    free(o);
    free(e);

    // The pruned folder is a model inspect can read; sparsity shows.
    const char *iargs[] = {"inspect", "--json", out, NULL};
    ck_assert_int_eq(th_run(&o, &e, iargs), 0);
    json_t *ij = json_loads(o, 0, NULL);
    ck_assert_ptr_nonnull(ij);
    ck_assert_str_eq(json_string_value(json_object_get(ij, "architecture")),
                     "llama");
    ck_assert_int_eq(json_array_size(json_object_get(ij, "tensors")), 39);
    json_decref(ij);
    free(o);
    free(e);
    th_rmtree(dir);
    free(out);
    free(rep);
    free(model);
    free(dir);
}
END_TEST

// --spec supplies the job; flags override its fields.
START_TEST(test_spec_file_and_flags)
{
    char *dir = th_tmpdir();
    char *out = th_path(dir, "o"), *spec = th_path(dir, "s.json");
    char *rep = th_path(dir, "r.json");
    const char *text = "{\"method\":\"random\",\"sparsity\":0.9,\"seed\":3,"
                       "\"ignore\":[\"fc3\"]}";
    th_write_file(spec, text, strlen(text));
    char *model = th_fixture("mlp-fmnist");
    const char *args[] = {
        "prune",      "--model", model,      "--out", out,       "--spec", spec,
        "--sparsity", "0.25",    "--report", rep,     "--quiet", NULL};
    ck_assert_int_eq(th_run(NULL, NULL, args), 0);
    json_t *r = json_load_file(rep, 0, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(r, "method")), "random");
    ck_assert_double_eq(json_real_value(json_object_get(r, "sparsity")), 0.25);
    ck_assert_int_eq(json_array_size(json_object_get(r, "layers")), 2);
    json_decref(r);
    th_rmtree(dir);
    free(out);
    free(spec);
    free(rep);
    free(model);
    free(dir);
}
END_TEST

typedef struct usage_case {
    const char *args[12];
    int code;
    const char *words;
} usage_case;

// Usage errors exit 2, failures exit 1, each with one line saying what.
START_TEST(test_errors_and_codes)
{
    char *dir = th_tmpdir();
    char *model = th_fixture("mlp-fmnist");
    char *out = th_path(dir, "o");
    char *full = th_path(dir, "full");
    char *junk = th_path(full, "x");
    sh_mkdir_p(full);
    th_write_file(junk, "x", 1);
    char *bad = th_path(dir, "bad.safetensors");
    th_write_raw(bad,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
                 "\"data_offsets\":[0,8]}}",
                 -1, "1234", 4);
    const usage_case cases[] = {
        {{"prune", NULL}, 2, "--model and --out are required"},
        {{"prune", "--model", model, "--out", out, "--method", "magnitude",
          "--sparsity", "lots", NULL},
         2,
         "--sparsity"},
        {{"prune", "--model", model, "--out", out, "--method", "magnitude",
          "--frobnicate", NULL},
         2,
         "unknown or incomplete option"},
        {{"prune", "--model", model, "--out", out, "--method", "magnitude",
          "--pattern", "5:4", NULL},
         2,
         "spec field pattern"},
        {{"prune", "--model", model, "--out", out, "--method", "gradient",
          NULL},
         2,
         "spec field method"},
        {{"prune", "--model", model, "--out", full, "--method", "magnitude",
          NULL},
         2,
         "not an empty folder"},
        {{"prune", "--model", "/nonexistent/model", "--out", out, "--method",
          "magnitude", NULL},
         1,
         "/nonexistent/model"},
        {{"prune", "--model", bad, "--out", out, "--method", "magnitude", NULL},
         1,
         "file truncated?"},
        {{"prune", "--model", model, "--out", out, "--method", "magnitude",
          "--pattern", "3:5", NULL},
         1,
         "multiple of 5"},
        {{"prune", "--model", model, "--out", out, "--method", "magnitude",
          "--allocation", "owl:rows", NULL},
         2,
         "spec field allocation.patterns[0]"},
        {{"inspect", bad, NULL}, 1, "file truncated?"},
        {{"inspect", NULL}, 2, "usage"},
        {{"launch", NULL}, 2, "unknown command"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *e = NULL;
        int code = th_run(NULL, &e, cases[i].args);
        ck_assert_msg(code == cases[i].code, "case %zu: exit %d, want %d: %s",
                      i, code, cases[i].code, e);
        one_error_line(e, cases[i].words);
        ck_assert_msg(!sh_path_exists(out), "case %zu left %s", i, out);
        free(e);
    }
    no_partials(dir);
    th_rmtree(dir);
    free(model);
    free(out);
    free(full);
    free(junk);
    free(bad);
    free(dir);
}
END_TEST

// A run that fails half-way (NaN in the second tensor) leaves nothing.
START_TEST(test_failed_run_leaves_nothing)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "m.safetensors");
    float a[64], b[64];
    th_randn(a, 64, 1);
    th_randn(b, 64, 2);
    b[9] = NAN;
    th_tensor ts[] = {{"a.weight", "F32", 2, {8, 8}, a},
                      {"b.weight", "F32", 2, {8, 8}, b}};
    th_write_st(path, ts, 2, NULL);
    char *out = th_path(dir, "o");
    char *e = NULL;
    const char *args[] = {"prune", "--model",  path,        "--out",
                          out,     "--method", "magnitude", NULL};
    ck_assert_int_eq(th_run(NULL, &e, args), 1);
    one_error_line(e, "b.weight");
    ck_assert(!sh_path_exists(out));
    no_partials(dir);
    free(e);
    th_rmtree(dir);
    free(out);
    free(path);
    free(dir);
}
END_TEST

// `shears eval` and a calibrated prune with evaluation, through the CLI.
START_TEST(test_eval_and_calibrated_prune)
{
    char *model = th_fixture("llama-kjv");
    char *bare = th_fixture("llama-kjv/model.safetensors");
    char *ev = th_fixture("llama-kjv-data/evaluation.safetensors");
    char *cal = th_fixture("llama-kjv-data/calibration.safetensors");
    char *o = NULL, *e = NULL;
    const char *a1[] = {"eval", "--model", model, "--evaluation", ev, NULL};
    ck_assert_int_eq(th_run(&o, &e, a1), 0);
    ck_assert_ptr_nonnull(strstr(o, "perplexity 3.4410"));
    ck_assert_ptr_nonnull(strstr(o, "forward speed "));
    ck_assert_ptr_nonnull(strstr(o, " tokens/s"));
    free(o);
    free(e);
    const char *a2[] = {"eval", "--model", bare, "--evaluation", ev, NULL};
    ck_assert_int_eq(th_run(NULL, &e, a2), 1);
    one_error_line(e, "config.json");
    free(e);
    const char *a3[] = {"eval", "--model", model, NULL};
    ck_assert_int_eq(th_run(NULL, &e, a3), 2);
    one_error_line(e, "usage");
    free(e);
    char *dir = th_tmpdir();
    char *out = th_path(dir, "o"), *rep = th_path(dir, "r.json");
    const char *a4[] = {"prune", "--model",  model,   "--out",
                        out,     "--method", "wanda", NULL};
    ck_assert_int_eq(th_run(NULL, &e, a4), 2);
    one_error_line(e, "spec field calibration");
    free(e);
    const char *a5[] = {
        "prune",     "--model",   model, "--out",         out, "--method",
        "sparsegpt", "--pattern", "4:8", "--calibration", cal, "--evaluation",
        ev,          "--report",  rep,   "--quiet",       NULL};
    ck_assert_int_eq(th_run(&o, &e, a5), 0);
    ck_assert_ptr_nonnull(strstr(o, "perplexity: dense 3.4410"));
    json_t *r = json_load_file(rep, 0, NULL);
    json_t *metric = json_object_get(r, "metric");
    ck_assert(json_number_value(json_object_get(metric, "pruned")) <
              3.5514 * 1.02);
    json_t *l = json_array_get(json_object_get(r, "layers"), 0);
    ck_assert(json_number_value(json_object_get(l, "recon_error")) > 0);
    ck_assert(json_number_value(json_object_get(l, "recon_error")) < 1);
    json_decref(r);
    free(o);
    free(e);
    th_rmtree(dir);
    free(out);
    free(rep);
    free(dir);
    free(model);
    free(bare);
    free(ev);
    free(cal);
}
END_TEST

// --model that is not a file or folder is refused at once, by its name:
// a FIFO does not hang, a device is not read.
START_TEST(test_model_not_a_file)
{
    char *dir = th_tmpdir();
    char *fifo = th_path(dir, "pipe"), *out = th_path(dir, "o");
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    const char *models[] = {fifo, "/dev/zero"};
    const char *kinds[] = {"is a FIFO", "is a character device"};
    for (int i = 0; i < 2; i++) {
        char *o = NULL, *e = NULL;
        const char *args[] = {"prune",    "--model",   models[i], "--out", out,
                              "--method", "magnitude", "--quiet", NULL};
        double t0 = sh_time_mono();
        ck_assert_int_eq(th_run(&o, &e, args), 1);
        ck_assert_msg(sh_time_mono() - t0 < 10, "blocked on %s", models[i]);
        one_error_line(e, kinds[i]);
        ck_assert_msg(strstr(e, models[i]), "%s not named: %s", models[i], e);
        ck_assert_msg(!strstr(e, "model.safetensors"), "wrong name: %s", e);
        free(o);
        free(e);
        const char *inspect[] = {"inspect", models[i], NULL};
        ck_assert_int_eq(th_run(&o, &e, inspect), 1);
        one_error_line(e, kinds[i]);
        free(o);
        free(e);
    }
    th_rmtree(dir);
    free(dir);
    free(fifo);
    free(out);
}
END_TEST

// Copies the fixture's files into dir (the link targets of the tests).
static void copy_fixture(const char *dir, const char *name, const char *to)
{
    char rel[128];
    snprintf(rel, sizeof rel, "mlp-fmnist/%s", name);
    char *src = th_fixture(rel), *dst = th_path(dir, to);
    ck_assert_int_eq(sh_file_copy(src, dst, false), 0);
    free(src);
    free(dst);
}

// A Hugging Face cache snapshot is a folder of links into ../../blobs:
// file links are followed and the output holds real files; a folder link
// that loops or leaves the model folder is refused with a clear error.
START_TEST(test_model_links)
{
    char *dir = th_tmpdir();
    char *blobs = th_path(dir, "blobs"), *snap = th_path(dir, "snapshots/abc");
    ck_assert_int_eq(sh_mkdir_p(blobs), 0);
    ck_assert_int_eq(sh_mkdir_p(snap), 0);
    copy_fixture(blobs, "config.json", "1f2e3d");
    copy_fixture(blobs, "model.safetensors", "9a8b7c");
    char *cfg = th_path(snap, "config.json"),
         *w = th_path(snap, "model.safetensors");
    ck_assert_int_eq(symlink("../../blobs/1f2e3d", cfg), 0);
    ck_assert_int_eq(symlink("../../blobs/9a8b7c", w), 0);
    char *out = th_path(dir, "out");
    char *o = NULL, *e = NULL;
    const char *args[] = {"prune",    "--model",   snap,      "--out", out,
                          "--method", "magnitude", "--quiet", NULL};
    ck_assert_msg(th_run(&o, &e, args) == 0, "%s", e);
    free(o);
    free(e);
    char *ow = th_path(out, "model.safetensors");
    struct stat st;
    ck_assert_int_eq(lstat(ow, &st), 0);
    ck_assert(S_ISREG(st.st_mode));
    ck_assert_int_eq(st.st_size, 2143760);
    free(ow);

    // A folder link back to a folder that holds it loops; one that leaves
    // the model folder is refused too.
    static const struct {
        const char *link, *target, *words;
    } bad[] = {{"sub", ".", "a loop"},
               {"d/up", "..", "a loop"},
               {"sub", "..", "leads out of the model folder"},
               {"sub", "../../blobs", "leads out of the model folder"}};
    char *d = th_path(snap, "d");
    ck_assert_int_eq(sh_mkdir_p(d), 0);
    for (int i = 0; i < 4; i++) {
        char *link = th_path(snap, bad[i].link);
        ck_assert_int_eq(symlink(bad[i].target, link), 0);
        char *out2 = th_path(dir, "out2");
        const char *args2[] = {"prune",     "--model", snap,
                               "--out",     out2,      "--method",
                               "magnitude", "--quiet", NULL};
        ck_assert_int_eq(th_run(&o, &e, args2), 1);
        one_error_line(e, bad[i].words);
        char quoted[64];
        snprintf(quoted, sizeof quoted, "\"%s\"", bad[i].link);
        ck_assert_msg(strstr(e, quoted), "the link is not named: %s", e);
        ck_assert(!sh_path_exists(out2));
        unlink(link);
        free(link);
        free(o);
        free(e);
        free(out2);
    }
    rmdir(d);
    free(d);
    // A folder link that stays inside is followed.
    char *link = th_path(snap, "sub");
    char *inner = th_path(snap, "extra");
    ck_assert_int_eq(sh_mkdir_p(inner), 0);
    copy_fixture(inner, "config.json", "notes.json");
    ck_assert_int_eq(symlink("extra", link), 0);
    char *out3 = th_path(dir, "out3");
    const char *args3[] = {"prune",    "--model",   snap,      "--out", out3,
                           "--method", "magnitude", "--quiet", NULL};
    ck_assert_msg(th_run(&o, &e, args3) == 0, "%s", e);
    char *copied = th_path(out3, "sub/notes.json");
    ck_assert(sh_path_exists(copied));
    free(copied);
    free(o);
    free(e);
    free(out3);
    free(inner);
    free(link);
    free(out);
    free(cfg);
    free(w);
    free(snap);
    free(blobs);
    th_rmtree(dir);
    free(dir);
}
END_TEST

// --quantize B and --symmetric reach the spec: GPTQ alone (sparsegpt at
// sparsity 0) writes a model whose every row holds at most 2^B values, and
// the report and shears.json say the grid. A bad width is a usage error.
START_TEST(test_quantize_flags)
{
    char *model = th_fixture("llama-kjv");
    char *cal = th_fixture("llama-kjv-data/calibration.safetensors");
    char *dir = th_tmpdir();
    char *out = th_path(dir, "o"), *rep = th_path(dir, "r.json");
    const char *a[] = {
        "prune",    "--model",     model,           "--out", out,
        "--method", "sparsegpt",   "--sparsity",    "0",     "--quantize",
        "3",        "--symmetric", "--calibration", cal,     "--report",
        rep,        "--quiet",     "--no-sync",     NULL};
    char *e = NULL;
    ck_assert_msg(th_run(NULL, &e, a) == 0, "%s", e);
    free(e);
    json_error_t err;
    json_t *r = json_load_file(rep, 0, &err);
    json_t *q = json_object_get(r, "quantize");
    ck_assert_int_eq(json_integer_value(json_object_get(q, "bits")), 3);
    ck_assert(json_is_true(json_object_get(q, "symmetric")));
    json_decref(r);
    char *w = th_path(out, "model.safetensors");
    eng_st *st = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_st_open(&st, w, &d), 0);
    const eng_st_header *h = eng_st_header_of(st);
    long k = eng_st_header_find(h, "model.layers.0.mlp.up_proj.weight");
    const float *x = eng_st_data(st, (size_t)k);
    int64_t cols = h->tensors[k].shape[1];
    for (int64_t row = 0; row < h->tensors[k].shape[0]; row++) {
        float seen[16] = {0};
        int n = 0;
        for (int64_t c = 0; c < cols; c++) {
            int i = 0;
            while (i < n && seen[i] != x[row * cols + c])
                i++;
            if (i == n) {
                ck_assert_int_lt(n, 8); // 2^3 values at most
                seen[n++] = x[row * cols + c];
            }
        }
    }
    eng_st_close(st);
    free(w);
    const char *bad[] = {"prune",    "--model",   model,        "--out", out,
                         "--method", "sparsegpt", "--quantize", "4:x",   NULL};
    ck_assert_int_eq(th_run(NULL, &e, bad), 2);
    one_error_line(e, "--quantize");
    free(e);
    // The format flags: compressed-tensors with masks, RTN per group of 64
    // without calibration, then decompress; the spec echoes every flag.
    char *ct = th_path(dir, "ct"), *back = th_path(dir, "back");
    const char *c[] = {"prune",
                       "--model",
                       model,
                       "--out",
                       ct,
                       "--method",
                       "magnitude",
                       "--pattern",
                       "2:4",
                       "--quantize",
                       "8:64",
                       "--quantize-method",
                       "rtn",
                       "--symmetric",
                       "--format",
                       "compressed-tensors",
                       "--sparse-format",
                       "sparse-24-bitmask",
                       "--masks",
                       "--preserve-zeros",
                       "--quiet",
                       "--no-sync",
                       NULL};
    char *o = NULL;
    ck_assert_msg(th_run(&o, &e, c) == 0, "%s", e);
    ck_assert_ptr_nonnull(strstr(o, "stored:  compressed-tensors"));
    free(o);
    free(e);
    char *man = th_path(ct, "shears.json");
    r = json_load_file(man, 0, &err);
    json_t *sp = json_object_get(r, "spec");
    json_t *so = json_object_get(sp, "output");
    ck_assert_str_eq(json_string_value(json_object_get(so, "format")),
                     "compressed-tensors");
    ck_assert_str_eq(json_string_value(json_object_get(so, "sparse_format")),
                     "sparse-24-bitmask");
    ck_assert(json_is_true(json_object_get(so, "masks")));
    ck_assert(json_is_true(json_object_get(sp, "preserve_zeros")));
    q = json_object_get(sp, "quantize");
    ck_assert_str_eq(json_string_value(json_object_get(q, "method")), "rtn");
    ck_assert_int_eq(json_integer_value(json_object_get(q, "group_size")), 64);
    json_decref(r);
    free(man);
    char *mk = th_path(ct, "masks.safetensors");
    ck_assert(sh_path_exists(mk));
    free(mk);
    const char *dc[] = {"decompress", "--model", ct, "--out", back, NULL};
    ck_assert_msg(th_run(NULL, &e, dc) == 0, "%s", e);
    free(e);
    const char *dbad[] = {"decompress", "--model", ct, NULL};
    ck_assert_int_eq(th_run(NULL, &e, dbad), 2);
    one_error_line(e, "--out");
    free(e);
    const char *dense[] = {"decompress", "--model", model, "--out", back, NULL};
    ck_assert_int_eq(th_run(NULL, &e, dense), 2); // back exists, not empty
    free(e);
    free(ct);
    free(back);
    th_rmtree(dir);
    free(dir);
    free(out);
    free(rep);
    free(model);
    free(cal);
}
END_TEST

// The sweep's reuse (each group measured from its block on, the blocks
// before it run once; the calibration pass only as far as the group)
// gives the numbers of whole runs exactly: SparseGPT on the fixture
// Llama, block by block and tensor by tensor.
START_TEST(test_sensitivity_reuse)
{
    char *model = th_fixture("llama-kjv");
    char *ev = th_fixture("llama-kjv-data/evaluation.safetensors");
    char *cal = th_fixture("llama-kjv-data/calibration.safetensors");
    char *dir = th_tmpdir();
    static const char *const grans[] = {"block", "tensor"};
    static const char *const levels[] = {"0.6", "0.8"};
    for (int k = 0; k < 2; k++) {
        char *rep[2];
        for (int full = 0; full < 2; full++) {
            char name[32];
            snprintf(name, sizeof name, "%s-%d.json", grans[k], full);
            rep[full] = th_path(dir, name);
            const char *a[] = {"sensitivity",
                               "--model",
                               model,
                               "--evaluation",
                               ev,
                               "--calibration",
                               cal,
                               "--method",
                               "sparsegpt",
                               "--levels",
                               levels[k],
                               "--granularity",
                               grans[k],
                               "--report",
                               rep[full],
                               "--quiet",
                               full ? "--no-reuse" : NULL,
                               NULL};
            char *e = NULL;
            ck_assert_msg(th_run(NULL, &e, a) == 0, "%s", e);
            free(e);
        }
        json_error_t err;
        json_t *x = json_load_file(rep[0], 0, &err),
               *y = json_load_file(rep[1], 0, &err);
        ck_assert(x && y);
        ck_assert_int_eq(json_array_size(json_object_get(x, "groups")),
                         k ? 28 : 4);
        ck_assert_msg(json_equal(json_object_get(x, "groups"),
                                 json_object_get(y, "groups")) &&
                          json_equal(json_object_get(x, "dense"),
                                     json_object_get(y, "dense")),
                      "%s: the reusing sweep differs from whole runs",
                      grans[k]);
        json_decref(x);
        json_decref(y);
        free(rep[0]);
        free(rep[1]);
    }
    th_rmtree(dir);
    free(dir);
    free(model);
    free(ev);
    free(cal);
}
END_TEST

// `shears sweep`: methods x levels, each point the metric `prune` gets
// for that spec, and with --keep the same weights; a bad level or a
// --keep folder in use are usage errors.
START_TEST(test_sweep)
{
    char *model = th_fixture("mlp-fmnist");
    char *ev = th_fixture("mlp-fmnist-data/evaluation.safetensors");
    char *cal = th_fixture("mlp-fmnist-data/calibration.safetensors");
    char *dir = th_tmpdir();
    char *rep = th_path(dir, "sweep.json"), *keep = th_path(dir, "kept"),
         *out = th_path(dir, "o"), *prep = th_path(dir, "p.json");
    const char *a[] = {"sweep",
                       "--model",
                       model,
                       "--evaluation",
                       ev,
                       "--calibration",
                       cal,
                       "--methods",
                       "magnitude,sparsegpt",
                       "--levels",
                       "0.5,0.9",
                       "--report",
                       rep,
                       "--keep",
                       keep,
                       "--quiet",
                       NULL};
    char *o = NULL, *e = NULL;
    ck_assert_msg(th_run(&o, &e, a) == 0, "%s", e);
    ck_assert_ptr_nonnull(strstr(o, "sparsegpt"));
    free(o);
    free(e);
    json_error_t err;
    json_t *r = json_load_file(rep, 0, &err);
    ck_assert_ptr_nonnull(r);
    json_t *pts = json_object_get(r, "points");
    ck_assert_int_eq(json_array_size(pts), 4);
    ck_assert_int_eq(json_integer_value(json_object_get(r, "evaluations")), 5);
    json_t *last = json_array_get(pts, 3);
    ck_assert_str_eq(json_string_value(json_object_get(last, "method")),
                     "sparsegpt");
    ck_assert_str_eq(json_string_value(json_object_get(last, "folder")),
                     "point-03");
    const char *pr[] = {
        "prune",    "--model",      model,        "--out",    out,
        "--method", "sparsegpt",    "--sparsity", "0.9",      "--calibration",
        cal,        "--evaluation", ev,           "--report", prep,
        "--quiet",  "--no-sync",    NULL};
    ck_assert_msg(th_run(NULL, &e, pr) == 0, "%s", e);
    free(e);
    json_t *p = json_load_file(prep, 0, &err);
    ck_assert_double_eq(json_number_value(json_object_get(last, "metric")),
                        json_number_value(json_object_get(
                            json_object_get(p, "metric"), "pruned")));
    json_decref(p);
    json_decref(r);
    char *kw = th_path(keep, "point-03/model.safetensors"),
         *pw = th_path(out, "model.safetensors");
    size_t kn = 0, pn = 0;
    unsigned char *kb = th_read_file(kw, &kn), *pb = th_read_file(pw, &pn);
    ck_assert_msg(kb && pb && kn == pn && memcmp(kb, pb, kn) == 0,
                  "the kept point differs from prune's output");
    free(kb);
    free(pb);
    free(kw);
    free(pw);
    // Levels that fall; a --keep folder that holds something.
    const char *bad[] = {"sweep",   "--model",   model,       "--evaluation",
                         ev,        "--methods", "magnitude", "--levels",
                         "0.7,0.5", "--quiet",   NULL};
    ck_assert_int_eq(th_run(NULL, &e, bad), 2);
    one_error_line(e, "must rise");
    free(e);
    const char *busy[] = {"sweep", "--model",   model,       "--evaluation",
                          ev,      "--methods", "magnitude", "--keep",
                          keep,    "--quiet",   NULL};
    ck_assert_int_eq(th_run(NULL, &e, busy), 2);
    free(e);
    th_rmtree(dir);
    free(dir);
    free(rep);
    free(keep);
    free(out);
    free(prep);
    free(model);
    free(ev);
    free(cal);
}
END_TEST

// `shears sensitivity`: one curve a group, each point the metric of a
// run that prunes that group alone; the fc2 point at 0.9 is what `prune`
// gives with fc2 the only target.
START_TEST(test_sensitivity)
{
    char *model = th_fixture("mlp-fmnist");
    char *ev = th_fixture("mlp-fmnist-data/evaluation.safetensors");
    char *dir = th_tmpdir();
    char *rep = th_path(dir, "s.json"), *out = th_path(dir, "o"),
         *prep = th_path(dir, "p.json");
    const char *a[] = {
        "sensitivity", "--model",   model,      "--evaluation", ev,
        "--method",    "magnitude", "--levels", "0.5,0.9",      "--granularity",
        "tensor",      "--report",  rep,        "--quiet",      NULL};
    char *o = NULL, *e = NULL;
    ck_assert_msg(th_run(&o, &e, a) == 0, "%s", e);
    ck_assert_ptr_nonnull(strstr(o, "fc2.weight"));
    free(o);
    free(e);
    json_error_t err;
    json_t *r = json_load_file(rep, 0, &err);
    ck_assert_ptr_nonnull(r);
    json_t *groups = json_object_get(r, "groups");
    ck_assert_int_eq(json_array_size(groups), 3);
    ck_assert_int_eq(json_integer_value(json_object_get(r, "evaluations")), 7);
    double fc2 = NAN, dense = json_number_value(json_object_get(r, "dense"));
    size_t i;
    json_t *g;
    json_array_foreach (groups, i, g) {
        json_t *pts = json_object_get(g, "points");
        ck_assert_int_eq(json_array_size(pts), 2);
        json_t *p = json_array_get(pts, 1);
        ck_assert_double_eq_tol(
            json_number_value(json_object_get(p, "delta")),
            json_number_value(json_object_get(p, "metric")) - dense, 1e-12);
        if (strcmp(json_string_value(json_object_get(g, "group")),
                   "fc2.weight") == 0)
            fc2 = json_number_value(json_object_get(p, "metric"));
    }
    json_decref(r);
    const char *pr[] = {
        "prune",          "--model",      model,        "--out",    out,
        "--method",       "magnitude",    "--sparsity", "0.9",      "--target",
        "^fc2\\.weight$", "--evaluation", ev,           "--report", prep,
        "--quiet",        "--no-sync",    NULL};
    ck_assert_msg(th_run(NULL, &e, pr) == 0, "%s", e);
    free(e);
    r = json_load_file(prep, 0, &err);
    ck_assert_double_eq(json_number_value(json_object_get(
                            json_object_get(r, "metric"), "pruned")),
                        fc2);
    json_decref(r);
    // Three shards (as an Indexed Job runs them: JOB_COMPLETION_INDEX and
    // --shard auto/3) merged give the single run's report, timings aside.
    char *parts[3];
    for (int k = 0; k < 3; k++) {
        char name[32], idx[16];
        snprintf(name, sizeof name, "part-%d.json", k);
        snprintf(idx, sizeof idx, "%d", k);
        parts[k] = th_path(dir, name);
        setenv("JOB_COMPLETION_INDEX", idx, 1);
        const char *sa[] = {"sensitivity",   "--model",  model,
                            "--evaluation",  ev,         "--method",
                            "magnitude",     "--levels", "0.5,0.9",
                            "--granularity", "tensor",   "--shard",
                            "auto/3",        "--report", parts[k],
                            "--quiet",       NULL};
        ck_assert_msg(th_run(NULL, &e, sa) == 0, "%s", e);
        free(e);
    }
    unsetenv("JOB_COMPLETION_INDEX");
    char *merged = th_path(dir, "merged.json");
    const char *ma[] = {"merge", parts[0], parts[1], parts[2],
                        "--out", merged,   NULL};
    ck_assert_msg(th_run(NULL, &e, ma) == 0, "%s", e);
    free(e);
    json_t *one = json_load_file(rep, 0, &err),
           *all = json_load_file(merged, 0, &err);
    ck_assert(one && all);
    static const char *const timing[] = {"seconds", "first_run_seconds",
                                         "estimate_seconds"};
    for (int k = 0; k < 3; k++) {
        json_object_del(one, timing[k]);
        json_object_del(all, timing[k]);
    }
    ck_assert_msg(json_equal(one, all), "merged shards differ from one run");
    json_decref(one);
    json_decref(all);
    // Two parts of three: an error.
    const char *mb[] = {"merge", parts[0], parts[1], "--out", merged, NULL};
    ck_assert_int_eq(th_run(NULL, &e, mb), 1);
    one_error_line(e, "3");
    free(e);
    for (int k = 0; k < 3; k++)
        free(parts[k]);
    free(merged);
    const char *bad[] = {
        "sensitivity", "--model",   model,      "--evaluation", ev,
        "--method",    "magnitude", "--levels", "0.5,1",        NULL};
    ck_assert_int_eq(th_run(NULL, &e, bad), 2);
    one_error_line(e, "levels");
    free(e);
    th_rmtree(dir);
    free(dir);
    free(rep);
    free(out);
    free(prep);
    free(model);
    free(ev);
}
END_TEST

Suite *suite_cli(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("batch");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_prune_fixture_with_report);
    tcase_add_test(tc, test_inspect_system);
    tcase_add_test(tc, test_spec_file_and_flags);
    tcase_add_test(tc, test_errors_and_codes);
    tcase_add_test(tc, test_failed_run_leaves_nothing);
    tcase_add_test(tc, test_eval_and_calibrated_prune);
    tcase_add_test(tc, test_quantize_flags);
    tcase_add_test(tc, test_sensitivity);
    tcase_add_test(tc, test_sensitivity_reuse);
    tcase_add_test(tc, test_sweep);
    tcase_add_test(tc, test_model_not_a_file);
    tcase_add_test(tc, test_model_links);
    suite_add_tcase(s, tc);
    return s;
}

// cli_inspect.c: `shears inspect PATH [--json]`: what a checkpoint holds.
#include "service/cli.h"

#include "common/util.h"
#include "common/version.h"
#include "engine/engine.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const role_names[ENG_FILE_ROLE_COUNT] = {
    [ENG_FILE_WEIGHTS] = "weights",
    [ENG_FILE_INDEX] = "index",
    [ENG_FILE_CONFIG] = "config",
    [ENG_FILE_OTHER] = "other",
};

static json_t *inspect_json(const eng_model *m, sh_diag *d)
{
    json_t *files = json_array(), *tensors = json_array();
    for (size_t i = 0; i < eng_model_file_count(m); i++) {
        const eng_model_file *f = eng_model_file_at(m, i);
        json_array_append_new(files,
                              json_pack("{s:s, s:I, s:s}", "name", f->name,
                                        "bytes", (json_int_t)f->bytes, "role",
                                        role_names[f->role]));
    }
    uint64_t params = 0, zeros = 0, bytes = 0;
    json_t *dtypes = json_object();
    for (size_t i = 0; i < eng_model_tensor_count(m); i++) {
        const eng_tensor_info *t = eng_model_tensor(m, i);
        size_t file, idx;
        eng_model_tensor_loc(m, i, &file, &idx);
        uint64_t z = 0;
        if (eng_tensor_zeros(m, i, &z, d) != 0) {
            json_decref(files);
            json_decref(tensors);
            json_decref(dtypes);
            return NULL;
        }
        json_t *shape = json_array();
        for (int k = 0; k < t->ndim; k++)
            json_array_append_new(shape, json_integer(t->shape[k]));
        json_array_append_new(
            tensors,
            json_pack("{s:s, s:s, s:o, s:I, s:I, s:f, s:s}", "name", t->name,
                      "dtype", eng_dtype_name(t->dtype), "shape", shape,
                      "params", (json_int_t)t->numel, "zeros", (json_int_t)z,
                      "sparsity", t->numel ? (double)z / t->numel : 0.0, "file",
                      eng_model_file_at(m, file)->name));
        json_t *n = json_object_get(dtypes, eng_dtype_name(t->dtype));
        json_object_set_new(dtypes, eng_dtype_name(t->dtype),
                            json_integer((n ? json_integer_value(n) : 0) +
                                         (json_int_t)t->numel));
        params += t->numel;
        zeros += z;
        bytes += t->end - t->begin;
    }
    return json_pack("{s:s, s:o, s:o, s:{s:I, s:I, s:I, s:f, s:I, s:o}}",
                     "architecture", eng_model_arch(m), "files", files,
                     "tensors", tensors, "totals", "tensors",
                     (json_int_t)eng_model_tensor_count(m), "params",
                     (json_int_t)params, "zeros", (json_int_t)zeros, "sparsity",
                     params ? (double)zeros / params : 0.0, "bytes",
                     (json_int_t)bytes, "dtypes", dtypes);
}

static void print_text(const json_t *j)
{
    printf("architecture: %s\n",
           json_string_value(json_object_get(j, "architecture")));
    size_t i;
    json_t *v;
    printf("files:\n");
    json_array_foreach (json_object_get(j, "files"), i, v) {
        printf("  %-40s %12lld bytes  %s\n",
               json_string_value(json_object_get(v, "name")),
               (long long)json_integer_value(json_object_get(v, "bytes")),
               json_string_value(json_object_get(v, "role")));
    }
    printf("%-56s %-6s %-18s %12s %9s\n", "tensor", "dtype", "shape", "params",
           "sparsity");
    json_array_foreach (json_object_get(j, "tensors"), i, v) {
        char shape[64] = "[";
        size_t n = 1, k;
        json_t *x;
        json_array_foreach (json_object_get(v, "shape"), k, x) {
            n += (size_t)snprintf(shape + n, sizeof shape - n, "%s%lld",
                                  k ? "," : "",
                                  (long long)json_integer_value(x));
            if (n >= sizeof shape - 2)
                break;
        }
        snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "]");
        printf("%-56s %-6s %-18s %12lld %8.2f%%\n",
               json_string_value(json_object_get(v, "name")),
               json_string_value(json_object_get(v, "dtype")), shape,
               (long long)json_integer_value(json_object_get(v, "params")),
               100 * json_real_value(json_object_get(v, "sparsity")));
    }
    json_t *t = json_object_get(j, "totals");
    printf("total: %lld tensors, %lld params, %lld bytes, sparsity %.2f%%\n",
           (long long)json_integer_value(json_object_get(t, "tensors")),
           (long long)json_integer_value(json_object_get(t, "params")),
           (long long)json_integer_value(json_object_get(t, "bytes")),
           100 * json_real_value(json_object_get(t, "sparsity")));
}

// `inspect --system`: what this machine gives the engine.
static int inspect_system(bool as_json)
{
    eng_set_threads(sh_cpu_count());
    eng_blas_info b;
    eng_blas_info_get(&b, true);
    json_t *j = json_pack("{s:s, s:i, s:{s:b, s:b, s:b}, s:{s:s, s:s, s:f}}",
                          "version", SH_VERSION, "threads", sh_cpu_count(),
                          "cpu", "avx2", b.avx2, "avx512", b.avx512,
                          "avx512_bf16", b.avx512_bf16, "blas", "core", b.core,
                          "source", b.source, "sgemm_gflops", b.sgemm_gflops);
    if (as_json) {
        char *text = json_dumps(j, JSON_INDENT(2));
        puts(text);
        free(text);
    } else {
        printf("shears %s, %d threads\n"
               "cpu:   avx2 %s, avx512 %s, avx512_bf16 %s\n"
               "blas:  OpenBLAS core %s (%s), sgemm %.1f GFLOP/s\n",
               SH_VERSION, sh_cpu_count(), b.avx2 ? "yes" : "no",
               b.avx512 ? "yes" : "no", b.avx512_bf16 ? "yes" : "no", b.core,
               b.source, b.sgemm_gflops);
    }
    json_decref(j);
    return SVC_EXIT_OK;
}

int svc_cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", no_argument, 0, 'j'},
        {"system", no_argument, 0, 's'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    bool as_json = false, sys = false;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'j') {
            as_json = true;
        } else if (c == 's') {
            sys = true;
        } else if (c == 'h') {
            puts("usage: shears inspect PATH [--json]\n"
                 "       shears inspect --system [--json]");
            return SVC_EXIT_OK;
        } else {
            return svc_fail(SVC_EXIT_USAGE, "inspect: unknown option \"%s\"",
                            argv[optind - 1]);
        }
    }
    if (sys && optind == argc)
        return inspect_system(as_json);
    if (optind != argc - 1)
        return svc_fail(SVC_EXIT_USAGE, "usage: shears inspect PATH [--json]");
    const char *path = argv[optind];
    eng_model *m = NULL;
    sh_diag d;
    sh_diag_clear(&d);
    if (eng_model_open(&m, path, &d) != 0)
        return svc_fail_diag(SVC_EXIT_FAIL, path, &d);
    json_t *j = inspect_json(m, &d);
    eng_model_close(m);
    if (!j)
        return svc_fail_diag(SVC_EXIT_FAIL, path, &d);
    if (as_json) {
        char *text = json_dumps(j, JSON_INDENT(2));
        puts(text);
        free(text);
    } else {
        print_text(j);
    }
    json_decref(j);
    return SVC_EXIT_OK;
}

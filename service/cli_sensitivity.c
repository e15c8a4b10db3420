// cli_sensitivity.c: `shears sensitivity`, each group of targets pruned
// alone at each level and the model measured (engine.h: eng_sensitivity);
// `shears merge`, its shards joined; `shears sweep`, the trade-off of
// methods x levels (eng_sweep).
#include "service/cli.h"

#include "common/util.h"
#include "engine/engine.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: shears sensitivity --model PATH --evaluation FILE --method M\n"
    "                          --levels 0.3,0.5,0.7 [options]\n"
    "\n"
    "  --model PATH        a .safetensors file or a model folder\n"
    "  --evaluation FILE   the dataset every run is measured on\n"
    "  --calibration FILE  calibration data (wanda, sparsegpt, snip, taylor, "
    "fisher)\n"
    "  --base PATH         movement: the checkpoint before fine-tuning\n"
    "  --scores FILE       scores: the score tensors\n"
    "  --method M          magnitude | random | wanda | sparsegpt | snip | "
    "taylor |\n"
    "                      fisher | movement | scores\n"
    "  --levels L,L,...    sparsities, each strictly between 0 and 1\n"
    "  --granularity G     tensor | block | type (default block)\n"
    "  --spec FILE.json    a base job spec (targets, ignore, seed, ...)\n"
    "  --report FILE.json  write the table there as JSON\n"
    "  --shard I/N         only runs I, I+N, I+2N, ... (I from 0; \"auto\": "
    "the\n"
    "                      JOB_COMPLETION_INDEX of a Kubernetes Indexed Job); "
    "join\n"
    "                      the N reports with `shears merge`\n"
    "  --no-reuse          measure every run's whole model (the same numbers,\n"
    "                      slower; for comparison)\n"
    "  --threads N         threads to use (default: all)\n"
    "  --quiet             no progress output\n"
    "\n"
    "Every group (a tensor, a decoder block, or one tensor name across "
    "blocks) is\n"
    "pruned alone at every level, the rest dense, and the model measured: "
    "(groups x\n"
    "levels) runs, the dense metric once.\n";

static int parse_levels(const char *arg, double *out, size_t cap, size_t *n)
{
    char *copy = strdup(arg), *save = NULL;
    *n = 0;
    int rc = copy ? 0 : -1;
    for (char *t = copy ? strtok_r(copy, ",", &save) : NULL; t && rc == 0;
         t = strtok_r(NULL, ",", &save)) {
        if (*n == cap || !svc_parse_double(t, &out[*n]))
            rc = -1;
        else
            (*n)++;
    }
    free(copy);
    return rc == 0 && *n > 0 ? 0 : -1;
}

// The result as a table: a row a group, a column a level.
static void print_table(const json_t *res)
{
    printf("%s, %s, dense %s %.4f\n",
           json_string_value(json_object_get(res, "method")),
           json_string_value(json_object_get(res, "granularity")),
           json_string_value(json_object_get(res, "metric")),
           json_number_value(json_object_get(res, "dense")));
    printf("%-40s %10s", "group", "params");
    size_t i;
    json_t *g;
    json_array_foreach (json_object_get(res, "levels"), i, g)
        printf(" %9.3g", json_number_value(g));
    printf("\n");
    json_array_foreach (json_object_get(res, "groups"), i, g) {
        printf("%-40s %10lld", json_string_value(json_object_get(g, "group")),
               (long long)json_integer_value(json_object_get(g, "params")));
        size_t k;
        json_t *p;
        json_array_foreach (json_object_get(g, "points"), k, p)
            printf(" %9.4f", json_number_value(json_object_get(p, "metric")));
        printf("\n");
    }
}

static int write_report(const json_t *res, const char *path)
{
    char *text = json_dumps(res, JSON_INDENT(2));
    int rc = text ? sh_file_write_atomic(path, text, strlen(text)) : SH_ENOMEM;
    free(text);
    if (rc != 0)
        return svc_fail(SVC_EXIT_FAIL, "%s: cannot write (%s)", path,
                        sh_strerror(rc));
    return SVC_EXIT_OK;
}

// What the table commands (sensitivity, sweep) share: their common
// options, the base spec from --spec, --method and --calibration, the
// model, a scratch folder, the threads and the progress.
enum {
    T_MODEL = 1,
    T_EVAL,
    T_CALIB,
    T_METHOD,
    T_LEVELS,
    T_SPEC,
    T_REPORT,
    T_THREADS,
    T_QUIET,
    T_BASE,
    T_SCORES,
    T_HELP,
    T_MORE // a command's own options from here
};

#define TABLE_OPTIONS                                                          \
    {"model", required_argument, 0, T_MODEL},                                  \
        {"evaluation", required_argument, 0, T_EVAL},                          \
        {"calibration", required_argument, 0, T_CALIB},                        \
        {"method", required_argument, 0, T_METHOD},                            \
        {"levels", required_argument, 0, T_LEVELS},                            \
        {"spec", required_argument, 0, T_SPEC},                                \
        {"report", required_argument, 0, T_REPORT},                            \
        {"threads", required_argument, 0, T_THREADS},                          \
        {"quiet", no_argument, 0, T_QUIET},                                    \
        {"base", required_argument, 0, T_BASE},                                \
        {"scores", required_argument, 0, T_SCORES},                            \
    {                                                                          \
        "help", no_argument, 0, T_HELP                                         \
    }

typedef struct table_cmd {
    const char *usage;
    const char *model, *eval, *calib, *method, *spec_file, *report;
    const char *base, *scores; // movement's base, method scores' file
    double levels[ENG_SENS_MAX_LEVELS];
    size_t n_levels;
    uint64_t threads;
    bool quiet;
    eng_model *m, *base_m;
    char tmp[4096];
    svc_progress prog;
    eng_hooks hooks;
} table_cmd;

// What table_option did with an option: took it, left it to the
// command, printed the help (exit 0); or a usage error's exit code (> 0),
// said.
enum { TABLE_TAKEN = 0, TABLE_NOT_MINE = -1, TABLE_HELPED = -2 };

static int table_option(table_cmd *t, int c, const char *arg)
{
    switch (c) {
    case T_MODEL: t->model = arg; return TABLE_TAKEN;
    case T_EVAL: t->eval = arg; return TABLE_TAKEN;
    case T_CALIB: t->calib = arg; return TABLE_TAKEN;
    case T_METHOD: t->method = arg; return TABLE_TAKEN;
    case T_SPEC: t->spec_file = arg; return TABLE_TAKEN;
    case T_REPORT: t->report = arg; return TABLE_TAKEN;
    case T_QUIET: t->quiet = true; return TABLE_TAKEN;
    case T_BASE: t->base = arg; return TABLE_TAKEN;
    case T_SCORES: t->scores = arg; return TABLE_TAKEN;
    case T_LEVELS:
        if (parse_levels(arg, t->levels, ENG_SENS_MAX_LEVELS, &t->n_levels) ==
            0)
            return TABLE_TAKEN;
        return svc_fail(SVC_EXIT_USAGE,
                        "--levels: \"%s\" is not a list of up to 32 numbers "
                        "(0.3,0.5,0.7)",
                        arg);
    case T_THREADS:
        if (svc_parse_u64(arg, &t->threads) && t->threads >= 1 &&
            t->threads <= 1024)
            return TABLE_TAKEN;
        return svc_fail(SVC_EXIT_USAGE,
                        "--threads: \"%s\" is not a count from 1 to 1024", arg);
    case T_HELP: fputs(t->usage, stdout); return TABLE_HELPED;
    default: return TABLE_NOT_MINE;
    }
}

// The base spec of kind `kind` (a new reference), or NULL having said why.
static json_t *table_spec(const table_cmd *t, const char *kind)
{
    json_error_t jerr;
    json_t *sj =
        t->spec_file ? json_load_file(t->spec_file, 0, &jerr) : json_object();
    if (!sj) {
        svc_fail(SVC_EXIT_USAGE, "--spec %s: %s", t->spec_file, jerr.text);
        return NULL;
    }
    if (t->method)
        json_object_set_new(sj, "method", json_string(t->method));
    if (t->calib)
        json_object_set_new(sj, "calibration",
                            json_pack("{s:s}", "dataset", t->calib));
    if (t->base)
        json_object_set_new(sj, "base", json_string(t->base));
    if (t->scores)
        json_object_set_new(sj, "scores", json_string(t->scores));
    json_object_set_new(sj, "kind", json_string(kind));
    // The kind's own object, with --levels in it.
    json_t *own = json_object_get(sj, kind);
    if (!json_is_object(own))
        json_object_set_new(sj, kind, own = json_object());
    if (t->n_levels) {
        json_t *lv = json_array();
        for (size_t i = 0; i < t->n_levels; i++)
            json_array_append_new(lv, json_real(t->levels[i]));
        json_object_set_new(own, "levels", lv);
    }
    return sj;
}

// The model, the scratch folder, threads and progress; an exit code.
static int table_open(table_cmd *t, const eng_spec *spec, const char *what)
{
    sh_diag d = {0};
    if (eng_model_open(&t->m, t->model, &d) != 0)
        return svc_fail_diag(SVC_EXIT_FAIL, t->model, &d);
    if (spec->base && eng_model_open(&t->base_m, spec->base, &d) != 0)
        return svc_fail_diag(SVC_EXIT_FAIL, spec->base, &d);
    snprintf(t->tmp, sizeof t->tmp, "%s/shears-%s-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", what);
    if (!mkdtemp(t->tmp)) {
        t->tmp[0] = '\0';
        return svc_fail(SVC_EXIT_FAIL, "cannot create a scratch folder");
    }
    eng_set_threads(t->threads ? (int)t->threads : sh_cpu_count());
    svc_catch_interrupts();
    svc_progress_init(&t->prog, t->quiet);
    t->hooks = (eng_hooks){.ctx = &t->prog,
                           .progress = svc_progress_cb,
                           .cancelled = svc_interrupted};
    return SVC_EXIT_OK;
}

static void table_close(table_cmd *t)
{
    if (t->tmp[0])
        sh_rm_rf(t->tmp);
    eng_model_close(t->base_m);
    eng_model_close(t->m);
}

// An engine failure as an exit code, said.
static int table_failed(int rc, sh_diag *d)
{
    int code = rc == SH_ESPEC ? SVC_EXIT_USAGE : SVC_EXIT_FAIL;
    svc_fail_diag(code, rc == SH_ECANCELED ? "interrupted" : "", d);
    return code;
}

int svc_cmd_sensitivity(int argc, char **argv)
{
    enum { O_GRAN = T_MORE, O_SHARD, O_NO_REUSE };
    static const struct option opts[] = {
        TABLE_OPTIONS,
        {"granularity", required_argument, 0, O_GRAN},
        {"shard", required_argument, 0, O_SHARD},
        {"no-reuse", no_argument, 0, O_NO_REUSE},
        {0, 0, 0, 0},
    };
    table_cmd t = {.usage = usage_text};
    const char *gran = NULL;
    bool no_reuse = false;
    int shard = 0, shards = 1;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int taken = table_option(&t, c, optarg);
        if (taken == TABLE_TAKEN)
            continue;
        if (taken != TABLE_NOT_MINE)
            return taken == TABLE_HELPED ? SVC_EXIT_OK : taken;
        switch (c) {
        case O_GRAN: gran = optarg; break;
        case O_NO_REUSE: no_reuse = true; break;
        case O_SHARD: {
            const char *slash = strchr(optarg, '/');
            const char *idx = optarg;
            char num[32];
            uint64_t i = 0, n = 0;
            if (slash && strncmp(optarg, "auto/", 5) == 0)
                idx = getenv("JOB_COMPLETION_INDEX");
            else if (slash && (size_t)(slash - optarg) < sizeof num) {
                memcpy(num, optarg, (size_t)(slash - optarg));
                num[slash - optarg] = '\0';
                idx = num;
            }
            if (!slash || !idx || !svc_parse_u64(idx, &i) ||
                !svc_parse_u64(slash + 1, &n) || n < 1 || n > 4096 || i >= n)
                return svc_fail(
                    SVC_EXIT_USAGE,
                    "--shard: \"%s\" is not I/N with I from 0 to "
                    "N - 1 (auto/N: I from JOB_COMPLETION_INDEX, "
                    "%s)",
                    optarg, getenv("JOB_COMPLETION_INDEX") ? "set" : "not set");
            shard = (int)i;
            shards = (int)n;
            break;
        }
        default:
            return svc_fail(SVC_EXIT_USAGE, "unknown option %s (try --help)",
                            argv[optind - 1]);
        }
    }
    if (!t.model || !t.eval || (!t.method && !t.spec_file))
        return svc_fail(SVC_EXIT_USAGE,
                        "--model, --evaluation, --levels and --method (or "
                        "--spec) are required");
    // The flags make the spec a sensitivity job's, as the service's.
    json_t *sj = table_spec(&t, "sensitivity");
    if (!sj)
        return SVC_EXIT_USAGE;
    if (gran)
        json_object_set_new(json_object_get(sj, "sensitivity"), "granularity",
                            json_string(gran));
    eng_spec spec;
    sh_diag d = {0};
    int rc = eng_spec_parse(&spec, sj, &d);
    json_decref(sj);
    if (rc != 0)
        return svc_fail_diag(SVC_EXIT_USAGE, "spec", &d);
    json_t *res = NULL;
    int code = table_open(&t, &spec, "sensitivity");
    if (code == SVC_EXIT_OK) {
        eng_options o = {.out_dir = t.tmp,
                         .calibration_path = spec.calib_dataset,
                         .evaluation_path = t.eval,
                         .base = t.base_m,
                         .scores_path = spec.scores,
                         .sensitivity_whole_runs = no_reuse};
        rc = eng_sensitivity(t.m, &spec, &o, shard, shards, &t.hooks, &res, &d);
        svc_progress_done(&t.prog);
        if (rc != 0)
            code = table_failed(rc, &d);
    }
    if (code == SVC_EXIT_OK) {
        print_table(res);
        code = t.report ? write_report(res, t.report) : SVC_EXIT_OK;
    }
    table_close(&t);
    json_decref(res);
    eng_spec_deinit(&spec);
    return code;
}

static const char merge_usage[] =
    "usage: shears merge PART.json... --out REPORT.json\n"
    "\n"
    "Joins the reports of `shears sensitivity --shard I/N`, all N of them, "
    "into the\n"
    "report one run gives (its timings the shards' summed).\n";

int svc_cmd_merge(int argc, char **argv)
{
    enum { O_OUT = 1, O_HELP };
    static const struct option opts[] = {
        {"out", required_argument, 0, O_OUT},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    const char *out = NULL;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == O_OUT)
            out = optarg;
        else if (c == O_HELP) {
            fputs(merge_usage, stdout);
            return SVC_EXIT_OK;
        } else
            return svc_fail(SVC_EXIT_USAGE, "unknown option %s (try --help)",
                            argv[optind - 1]);
    }
    size_t n = (size_t)(argc - optind);
    if (!out || n == 0)
        return svc_fail(SVC_EXIT_USAGE, "give the parts and --out");
    json_t **parts = calloc(n, sizeof *parts);
    int code = parts ? SVC_EXIT_OK : SVC_EXIT_FAIL;
    for (size_t i = 0; code == SVC_EXIT_OK && i < n; i++) {
        json_error_t err;
        if (!(parts[i] = json_load_file(argv[optind + (int)i], 0, &err)))
            code = svc_fail(SVC_EXIT_FAIL, "%s: %s", argv[optind + (int)i],
                            err.text);
    }
    json_t *res = NULL;
    sh_diag d = {0};
    if (code == SVC_EXIT_OK && eng_sensitivity_merge(parts, n, &res, &d) != 0)
        code = svc_fail_diag(SVC_EXIT_FAIL, "merge", &d);
    if (code == SVC_EXIT_OK) {
        print_table(res);
        code = write_report(res, out);
    }
    for (size_t i = 0; parts && i < n; i++)
        json_decref(parts[i]);
    free(parts);
    json_decref(res);
    return code;
}

static const char sweep_usage[] =
    "usage: shears sweep --model PATH --evaluation FILE\n"
    "                    (--methods M,M,... | --levels L,L,...) [options]\n"
    "\n"
    "  --model PATH        a .safetensors file or a model folder\n"
    "  --evaluation FILE   the dataset every point is measured on\n"
    "  --calibration FILE  calibration data (wanda, sparsegpt, snip, taylor, "
    "fisher)\n"
    "  --base PATH         movement: the checkpoint before fine-tuning\n"
    "  --scores FILE       scores: the score tensors\n"
    "  --methods M,M,...   methods to cross with the levels (default: the\n"
    "                      spec's, or --method)\n"
    "  --method M          the base method\n"
    "  --levels L,L,...    sparsities, rising, from 0 to 1 (default: the "
    "spec's)\n"
    "  --spec FILE.json    a base job spec (pattern, targets, quantize, ...)\n"
    "  --report FILE.json  write the table there as JSON\n"
    "  --keep DIR          keep each point's pruned model in DIR/point-NN\n"
    "                      (DIR must not exist, or be empty)\n"
    "  --threads N         threads to use (default: all)\n"
    "  --quiet             no progress output\n"
    "\n"
    "Each point (a method at a level) is pruned and measured, the dense "
    "metric\n"
    "once: the accuracy-vs-sparsity curve of the model, one line per "
    "method.\n";

static void print_sweep(const json_t *res)
{
    printf("sweep, dense %s %.4f\n",
           json_string_value(json_object_get(res, "metric")),
           json_number_value(json_object_get(res, "dense")));
    printf("%-12s %9s %-13s %10s %10s %8s\n", "method", "sparsity", "pattern",
           "metric", "delta", "size");
    size_t i;
    json_t *p;
    json_array_foreach (json_object_get(res, "points"), i, p)
        printf("%-12s %9.4g %-13s %10.4f %+10.4f %8.3f\n",
               json_string_value(json_object_get(p, "method")),
               json_number_value(json_object_get(p, "sparsity")),
               json_string_value(json_object_get(p, "pattern")),
               json_number_value(json_object_get(p, "metric")),
               json_number_value(json_object_get(p, "delta")),
               json_number_value(json_object_get(p, "ratio")));
}

int svc_cmd_sweep(int argc, char **argv)
{
    enum { O_METHODS = T_MORE, O_KEEP };
    static const struct option opts[] = {
        TABLE_OPTIONS,
        {"methods", required_argument, 0, O_METHODS},
        {"keep", required_argument, 0, O_KEEP},
        {0, 0, 0, 0},
    };
    table_cmd t = {.usage = sweep_usage};
    const char *methods = NULL, *keep = NULL;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int taken = table_option(&t, c, optarg);
        if (taken == TABLE_TAKEN)
            continue;
        if (taken != TABLE_NOT_MINE)
            return taken == TABLE_HELPED ? SVC_EXIT_OK : taken;
        if (c == O_METHODS)
            methods = optarg;
        else if (c == O_KEEP)
            keep = optarg;
        else
            return svc_fail(SVC_EXIT_USAGE, "unknown option %s (try --help)",
                            argv[optind - 1]);
    }
    if (!t.model || !t.eval || (!t.method && !methods && !t.spec_file))
        return svc_fail(SVC_EXIT_USAGE,
                        "--model, --evaluation and --methods (or --method, or "
                        "--spec) are required");
    json_t *sj = table_spec(&t, "sweep");
    if (!sj)
        return SVC_EXIT_USAGE;
    if (methods) {
        json_t *ms = json_array();
        char *copy = strdup(methods), *save = NULL;
        for (char *w = copy ? strtok_r(copy, ",", &save) : NULL; w;
             w = strtok_r(NULL, ",", &save))
            json_array_append_new(ms, json_string(w));
        free(copy);
        json_object_set_new(json_object_get(sj, "sweep"), "methods", ms);
        if (!json_object_get(sj, "method"))
            json_object_set(sj, "method", json_array_get(ms, 0));
    }
    eng_spec spec;
    sh_diag d = {0};
    int rc = eng_spec_parse(&spec, sj, &d);
    json_decref(sj);
    if (rc != 0)
        return svc_fail_diag(SVC_EXIT_USAGE, "spec", &d);
    char kept[4096] = "";
    json_t *res = NULL;
    int code = keep && svc_out_check(keep) != 0
                   ? SVC_EXIT_USAGE
                   : table_open(&t, &spec, "sweep");
    // Kept points appear whole or not at all, as prune's --out.
    if (code == SVC_EXIT_OK && keep &&
        svc_out_begin(keep, kept, sizeof kept) != 0)
        code = SVC_EXIT_FAIL;
    if (code == SVC_EXIT_OK) {
        eng_options o = {.out_dir = t.tmp,
                         .calibration_path = spec.calib_dataset,
                         .evaluation_path = t.eval,
                         .base = t.base_m,
                         .scores_path = spec.scores,
                         .sweep_keep = keep ? kept : NULL};
        rc = eng_sweep(t.m, &spec, &o, &t.hooks, &res, &d);
        svc_progress_done(&t.prog);
        if (rc != 0)
            code = table_failed(rc, &d);
    }
    if (code == SVC_EXIT_OK && keep && svc_out_commit(kept, keep, false) != 0)
        code = SVC_EXIT_FAIL;
    if (code == SVC_EXIT_OK) {
        print_sweep(res);
        code = t.report ? write_report(res, t.report) : SVC_EXIT_OK;
    }
    if (kept[0])
        sh_rm_rf(kept);
    table_close(&t);
    json_decref(res);
    eng_spec_deinit(&spec);
    return code;
}

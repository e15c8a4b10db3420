// cli_prune.c: `shears prune`, the engine as one batch command.
//
// The spec comes from --spec (the JSON of POST /v1/jobs) with flags on top.
// The output folder appears whole or not at all: the run writes a hidden
// sibling folder and renames it into place when everything is on disk.
#include "service/cli.h"

#include "common/sha256.h"
#include "common/util.h"
#include "engine/engine.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: shears prune --model PATH --out DIR --method METHOD [options]\n"
    "\n"
    "  --model PATH        a .safetensors file or a Hugging Face model folder\n"
    "  --out DIR           where the pruned model goes (must not exist, or be "
    "empty)\n"
    "  --method M          magnitude | random | wanda | sparsegpt | snip | "
    "taylor |\n"
    "                      fisher (gradients over --calibration) | movement "
    "(--base) |\n"
    "                      scores (--scores); with a structure also flap | "
    "taylor |\n"
    "                      block_influence\n"
    "  --base PATH         movement: the checkpoint before fine-tuning "
    "(same names,\n"
    "                      shapes, dtypes)\n"
    "  --scores FILE       scores: a safetensors file of score tensors, one "
    "per target,\n"
    "                      its shape; the lowest go first\n"
    "  --sparsity S        fraction of each target set to zero (default 0.5)\n"
    "  --pattern P         unstructured | N:M (keep N of every M, e.g. 2:4) | "
    "rows\n"
    "  --scope S           layer | global (one threshold across targets)\n"
    "  --norm N            l1 | l2, how rows are ranked (pattern rows)\n"
    "  --target REGEX      prune tensors matching REGEX (repeatable; replaces "
    "the default)\n"
    "  --ignore REGEX      do not prune tensors matching REGEX (repeatable)\n"
    "  --seed N            seed for random (default: drawn and recorded)\n"
    "  --calibration FILE  calibration dataset (safetensors) for wanda, "
    "sparsegpt\n"
    "  --samples N         calibration rows to use (default: all)\n"
    "  --recon-error R     true | sample | false: measure each layer's "
    "reconstruction\n"
    "                      error on every calibration row, the first 2048, or "
    "not\n"
    "                      (default: true for sparsegpt, sample otherwise)\n"
    "  --evaluation FILE   evaluation dataset: report the metric (and the "
    "forward\n"
    "                      pass's speed) before and after\n"
    "  --quantize B[:G]    quantize the targets to B bits (2..8), a grid "
    "per row\n"
    "                      (G 0) or per G inputs of a row; with "
    "--sparsity 0 only\n"
    "                      quantizes\n"
    "  --quantize-method M gptq (the OBS update; needs calibration; "
    "joint with\n"
    "                      sparsegpt) | rtn (round to nearest after the "
    "mask)\n"
    "                      (default: gptq with calibration, else rtn)\n"
    "  --symmetric         a grid symmetric around 0 (default: min-max)\n"
    "  --preserve-zeros    weights already zero stay zero\n"
    "  --format F          dense | compressed-tensors (sparse and "
    "quantized tensors\n"
    "                      stored compressed; `shears decompress` undoes "
    "it)\n"
    "  --allocation A      uniform | owl: per-block sparsities from the "
    "blocks'\n"
    "                      outlier ratios (OWL), the weighted mean the "
    "target;\n"
    "                      owl:1:4,2:4,3:4: each block one of these N:M "
    "patterns\n"
    "  --sensitivity FILE  allocation from a `shears sensitivity` report: "
    "each\n"
    "                      group's level from its curve, the predicted loss "
    "least\n"
    "  --sparse-format S   compressed-tensors' sparse form: auto | "
    "sparse-bitmask |\n"
    "                      sparse-24-bitmask (default auto: 2:4 where the "
    "pattern is)\n"
    "  --masks             also write masks.safetensors (a bit per weight, "
    "1 = kept)\n"
    "structures (remove whole units from every block; the output is "
    "smaller):\n"
    "  --heads F           fraction of query heads (per KV group under GQA)\n"
    "  --kv-heads F        fraction of KV groups, with their query heads\n"
    "  --channels F        fraction of MLP intermediate channels (Llama)\n"
    "  --neurons F         fraction of each hidden layer's units (mlp)\n"
    "  --blocks N          whole decoder blocks\n"
    "  --blocks-by B       influence (calibration) | last | random\n"
    "  --multiple-of K     round kept widths up to a multiple of K\n"
    "  --no-compensate     flap: no mean-compensation biases\n"
    "  --spec FILE.json    a job spec; flags override its fields\n"
    "  --report FILE.json  write the full report there\n"
    "  --threads N         BLAS threads (default: the CPUs we may use)\n"
    "  --no-sync           skip fsync of the output (faster, not crash-safe)\n"
    "  --quiet             no progress output\n";

typedef struct hash_job {
    const eng_model *m;
    const char *cache_dir; // earlier digests (see sh_sha256_file_cached)
    char (*hex)[SH_SHA256_HEX];
    const char **ptrs;
    pthread_t thread;
    bool started, joined;
} hash_job;

static void *hash_files(void *arg)
{
    hash_job *j = arg;
    for (size_t i = 0; i < eng_model_file_count(j->m); i++) {
        const eng_model_file *f = eng_model_file_at(j->m, i);
        int rc = sh_sha256_file_cached(f->path, j->cache_dir, j->hex[i]);
        j->ptrs[i] = rc == 0 ? j->hex[i] : NULL;
    }
    return NULL;
}

static const char *const *hash_wait(void *ctx)
{
    hash_job *j = ctx;
    if (j->started && !j->joined) {
        pthread_join(j->thread, NULL);
        j->joined = true;
    }
    return j->joined ? j->ptrs : NULL;
}

static int set_flag(json_t *spec, const char *key, json_t *value)
{
    if (!value)
        return -1;
    return json_object_set_new(spec, key, value);
}

static json_t *object_at(json_t *spec, const char *key)
{
    json_t *o = json_object_get(spec, key);
    if (!json_is_object(o)) {
        o = json_object();
        json_object_set_new(spec, key, o);
    }
    return o;
}

// True when dir does not exist or is an empty directory.

static void print_summary(const eng_report *r, const char *out)
{
    char pat[16];
    eng_pattern_format(pat, sizeof pat, r->pattern);
    if (r->structure)
        printf("shears: %s, structured shrink\n", eng_methods[r->method].name);
    else
        printf("shears: %s %s, %s scope, sparsity %.4g\n",
               eng_methods[r->method].name, pat, eng_scope_name(r->scope),
               r->sparsity);
    printf("  targets: %llu tensors, %llu params, %llu zeros (%.2f%%)\n",
           (unsigned long long)r->target_tensors,
           (unsigned long long)r->target_params,
           (unsigned long long)r->target_zeros,
           r->target_params ? 100.0 * r->target_zeros / r->target_params : 0);
    printf("  model:   %llu params, %llu zeros (%.2f%%)\n",
           (unsigned long long)r->model_params,
           (unsigned long long)r->model_zeros,
           r->model_params ? 100.0 * r->model_zeros / r->model_params : 0);
    json_t *units = json_object_get(r->structure, "units");
    const char *key;
    json_t *u;
    json_object_foreach (units, key, u)
        printf("  %-8s %lld -> %lld %s\n", key,
               (long long)json_integer_value(json_object_get(u, "before")),
               (long long)json_integer_value(json_object_get(u, "after")),
               strcmp(json_string_value(json_object_get(u, "per")), "block")
                   ? "in the model"
                   : "per block");
    json_t *size = r->size;
    static const char *const sizes[] = {"params", "bytes", "flops_per_token"};
    for (int i = 0; size && i < 3; i++) {
        json_t *e = json_object_get(size, sizes[i]);
        printf("  %-16s %.4g -> %.4g\n", sizes[i],
               json_number_value(json_object_get(e, "dense")),
               json_number_value(json_object_get(e, "pruned")));
    }
    if (r->has_metric)
        printf("  %s: dense %.4f, pruned %.4f\n", r->metric_name,
               r->metric_dense, r->metric_pruned);
    if (r->has_speed)
        printf("  speed: dense %.4g, pruned %.4g %s (x%.2f)\n", r->speed_dense,
               r->speed_pruned, r->speed_unit,
               r->speed_dense > 0 ? r->speed_pruned / r->speed_dense : 0);
    if (r->format && r->bytes_before)
        printf("  stored:  %s, %.4g MB -> %.4g MB (x%.3f); targets %.2f bits "
               "per weight\n",
               r->format, (double)r->bytes_before / 1e6,
               (double)r->bytes_after / 1e6,
               (double)r->bytes_after / (double)r->bytes_before,
               r->target_params ? 8.0 * (double)r->target_bytes_after /
                                      (double)r->target_params
                                : 0.0);
    size_t bad = 0;
    for (size_t i = 0; i < r->n_layers; i++)
        bad += !r->layers[i].pattern_ok;
    if (bad)
        printf("  WARNING: %zu tensors do not satisfy the pattern\n", bad);
    printf("  wrote %s in %.2f s\n", out, r->seconds);
}

typedef struct prune_args {
    const char *model, *out, *spec_file, *report;
    int threads;
    bool quiet, no_sync;
} prune_args;

// Parses flags into a spec object (on top of --spec). Returns an exit code
// or -1 to continue.
static int parse_args(int argc, char **argv, prune_args *a, json_t **spec_out)
{
    enum {
        O_MODEL = 256,
        O_OUT,
        O_METHOD,
        O_SPARSITY,
        O_PATTERN,
        O_SCOPE,
        O_NORM,
        O_TARGET,
        O_IGNORE,
        O_SEED,
        O_CALIB,
        O_SAMPLES,
        O_RECON,
        O_EVAL,
        O_SPEC,
        O_REPORT,
        O_THREADS,
        O_NO_SYNC,
        O_QUIET,
        O_HELP,
        O_HEADS,
        O_KV_HEADS,
        O_CHANNELS,
        O_NEURONS,
        O_BLOCKS,
        O_BLOCKS_BY,
        O_MULTIPLE_OF,
        O_NO_COMPENSATE,
        O_QUANTIZE,
        O_SYMMETRIC,
        O_QUANTIZE_METHOD,
        O_PRESERVE_ZEROS,
        O_FORMAT,
        O_MASKS,
        O_SPARSE_FORMAT,
        O_ALLOCATION,
        O_SENSITIVITY,
        O_BASE,
        O_SCORES,
    };
    static const struct option opts[] = {
        {"model", required_argument, 0, O_MODEL},
        {"out", required_argument, 0, O_OUT},
        {"method", required_argument, 0, O_METHOD},
        {"sparsity", required_argument, 0, O_SPARSITY},
        {"pattern", required_argument, 0, O_PATTERN},
        {"scope", required_argument, 0, O_SCOPE},
        {"norm", required_argument, 0, O_NORM},
        {"target", required_argument, 0, O_TARGET},
        {"ignore", required_argument, 0, O_IGNORE},
        {"seed", required_argument, 0, O_SEED},
        {"calibration", required_argument, 0, O_CALIB},
        {"samples", required_argument, 0, O_SAMPLES},
        {"recon-error", required_argument, 0, O_RECON},
        {"evaluation", required_argument, 0, O_EVAL},
        {"spec", required_argument, 0, O_SPEC},
        {"report", required_argument, 0, O_REPORT},
        {"threads", required_argument, 0, O_THREADS},
        {"quiet", no_argument, 0, O_QUIET},
        {"no-sync", no_argument, 0, O_NO_SYNC},
        {"help", no_argument, 0, O_HELP},
        {"heads", required_argument, 0, O_HEADS},
        {"kv-heads", required_argument, 0, O_KV_HEADS},
        {"channels", required_argument, 0, O_CHANNELS},
        {"neurons", required_argument, 0, O_NEURONS},
        {"blocks", required_argument, 0, O_BLOCKS},
        {"blocks-by", required_argument, 0, O_BLOCKS_BY},
        {"multiple-of", required_argument, 0, O_MULTIPLE_OF},
        {"no-compensate", no_argument, 0, O_NO_COMPENSATE},
        {"quantize", required_argument, 0, O_QUANTIZE},
        {"symmetric", no_argument, 0, O_SYMMETRIC},
        {"quantize-method", required_argument, 0, O_QUANTIZE_METHOD},
        {"preserve-zeros", no_argument, 0, O_PRESERVE_ZEROS},
        {"format", required_argument, 0, O_FORMAT},
        {"masks", no_argument, 0, O_MASKS},
        {"sparse-format", required_argument, 0, O_SPARSE_FORMAT},
        {"allocation", required_argument, 0, O_ALLOCATION},
        {"sensitivity", required_argument, 0, O_SENSITIVITY},
        {"base", required_argument, 0, O_BASE},
        {"scores", required_argument, 0, O_SCORES},
        {0, 0, 0, 0},
    };
    json_t *flags = json_object();
    json_t *targets = NULL, *ignore = NULL;
    int c, code = -1;
    double x;
    uint64_t u;
    opterr = 0;
    optind = 1;
    while (code < 0 && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_MODEL: a->model = optarg; break;
        case O_OUT: a->out = optarg; break;
        case O_SPEC: a->spec_file = optarg; break;
        case O_REPORT: a->report = optarg; break;
        case O_QUIET: a->quiet = true; break;
        case O_NO_SYNC: a->no_sync = true; break;
        case O_METHOD: set_flag(flags, "method", json_string(optarg)); break;
        case O_PATTERN: set_flag(flags, "pattern", json_string(optarg)); break;
        case O_SCOPE: set_flag(flags, "scope", json_string(optarg)); break;
        case O_NORM: set_flag(flags, "norm", json_string(optarg)); break;
        case O_SPARSITY:
            if (!svc_parse_double(optarg, &x))
                code = svc_fail(SVC_EXIT_USAGE,
                                "--sparsity: \"%s\" is not a number", optarg);
            else
                set_flag(flags, "sparsity", json_real(x));
            break;
        case O_SEED:
            if (!svc_parse_u64(optarg, &u) || u > (1ull << 53))
                code = svc_fail(SVC_EXIT_USAGE,
                                "--seed: \"%s\" is not an integer from 0 to "
                                "2^53",
                                optarg);
            else
                set_flag(flags, "seed", json_integer((json_int_t)u));
            break;
        case O_TARGET:
            if (!targets)
                targets = json_array();
            json_array_append_new(targets, json_string(optarg));
            break;
        case O_IGNORE:
            if (!ignore)
                ignore = json_array();
            json_array_append_new(ignore, json_string(optarg));
            break;
        case O_CALIB:
            json_object_set_new(object_at(flags, "calibration"), "dataset",
                                json_string(optarg));
            break;
        case O_BASE: set_flag(flags, "base", json_string(optarg)); break;
        case O_SCORES: set_flag(flags, "scores", json_string(optarg)); break;
        case O_SAMPLES:
            if (!svc_parse_u64(optarg, &u) || u > INT32_MAX)
                code = svc_fail(SVC_EXIT_USAGE,
                                "--samples: \"%s\" is not a count", optarg);
            else
                json_object_set_new(object_at(flags, "calibration"), "samples",
                                    json_integer((json_int_t)u));
            break;
        case O_RECON:
            if (strcmp(optarg, "true") == 0 || strcmp(optarg, "false") == 0)
                json_object_set_new(object_at(flags, "report"), "recon_error",
                                    json_boolean(optarg[0] == 't'));
            else
                json_object_set_new(object_at(flags, "report"), "recon_error",
                                    json_string(optarg));
            break;
        case O_EVAL:
            json_object_set_new(object_at(flags, "evaluation"), "dataset",
                                json_string(optarg));
            break;
        case O_HEADS:
        case O_KV_HEADS:
        case O_CHANNELS:
        case O_NEURONS: {
            const char *key = c == O_HEADS      ? "heads"
                              : c == O_KV_HEADS ? "kv_heads"
                              : c == O_CHANNELS ? "channels"
                                                : "neurons";
            if (!svc_parse_double(optarg, &x))
                code = svc_fail(SVC_EXIT_USAGE, "--%s: \"%s\" is not a number",
                                c == O_KV_HEADS ? "kv-heads" : key, optarg);
            else
                json_object_set_new(object_at(flags, "structure"), key,
                                    json_real(x));
            break;
        }
        case O_BLOCKS:
        case O_MULTIPLE_OF:
            if (!svc_parse_u64(optarg, &u) || u > INT32_MAX)
                code =
                    svc_fail(SVC_EXIT_USAGE, "--%s: \"%s\" is not a count",
                             c == O_BLOCKS ? "blocks" : "multiple-of", optarg);
            else
                json_object_set_new(object_at(flags, "structure"),
                                    c == O_BLOCKS ? "blocks" : "multiple_of",
                                    json_integer((json_int_t)u));
            break;
        case O_BLOCKS_BY:
            json_object_set_new(object_at(flags, "structure"), "blocks_by",
                                json_string(optarg));
            break;
        case O_QUANTIZE: {
            char *end = NULL;
            long bits = strtol(optarg, &end, 10), group = 0;
            if (end && *end == ':')
                group = strtol(end + 1, &end, 10);
            if (end == optarg || !end || *end || bits < 0 || group < 0)
                code = svc_fail(SVC_EXIT_USAGE,
                                "--quantize: \"%s\" is not BITS or "
                                "BITS:GROUP",
                                optarg);
            else {
                json_t *q = object_at(flags, "quantize");
                json_object_set_new(q, "bits", json_integer(bits));
                json_object_set_new(q, "group_size", json_integer(group));
            }
            break;
        }
        case O_SYMMETRIC:
            json_object_set_new(object_at(flags, "quantize"), "symmetric",
                                json_true());
            break;
        case O_QUANTIZE_METHOD:
            json_object_set_new(object_at(flags, "quantize"), "method",
                                json_string(optarg));
            break;
        case O_PRESERVE_ZEROS:
            set_flag(flags, "preserve_zeros", json_true());
            break;
        case O_FORMAT:
            json_object_set_new(object_at(flags, "output"), "format",
                                json_string(optarg));
            break;
        case O_ALLOCATION:
            if (strncmp(optarg, "owl:", 4) == 0) { // owl:1:4,2:4,3:4
                json_t *pl = json_array();
                char *copy = strdup(optarg + 4), *save = NULL;
                for (char *w = copy ? strtok_r(copy, ",", &save) : NULL; w;
                     w = strtok_r(NULL, ",", &save))
                    json_array_append_new(pl, json_string(w));
                free(copy);
                set_flag(
                    flags, "allocation",
                    json_pack("{s:s, s:o}", "method", "owl", "patterns", pl));
            } else {
                set_flag(flags, "allocation", json_string(optarg));
            }
            break;
        case O_SENSITIVITY:
            set_flag(flags, "allocation",
                     json_pack("{s:s, s:s}", "method", "sensitivity", "from",
                               optarg));
            break;
        case O_SPARSE_FORMAT:
            json_object_set_new(object_at(flags, "output"), "sparse_format",
                                json_string(optarg));
            break;
        case O_MASKS:
            json_object_set_new(object_at(flags, "output"), "masks",
                                json_true());
            break;
        case O_NO_COMPENSATE:
            json_object_set_new(object_at(flags, "structure"), "compensate",
                                json_false());
            break;
        case O_THREADS:
            if (!svc_parse_u64(optarg, &u) || u < 1 || u > 1024)
                code = svc_fail(SVC_EXIT_USAGE,
                                "--threads: \"%s\" is not a count from 1 to "
                                "1024",
                                optarg);
            else
                a->threads = (int)u;
            break;
        case O_HELP:
            fputs(usage_text, stdout);
            code = SVC_EXIT_OK;
            break;
        default:
            code = svc_fail(SVC_EXIT_USAGE,
                            "prune: unknown or incomplete option \"%s\" (see "
                            "shears prune --help)",
                            argv[optind - 1]);
        }
    }
    if (code < 0 && optind < argc)
        code = svc_fail(SVC_EXIT_USAGE, "prune: unexpected argument \"%s\"",
                        argv[optind]);
    if (targets)
        json_object_set_new(flags, "targets", targets);
    if (ignore)
        json_object_set_new(flags, "ignore", ignore);
    if (code < 0 && (!a->model || !a->out))
        code = svc_fail(SVC_EXIT_USAGE,
                        "prune: --model and --out are required (see shears "
                        "prune --help)");

    json_t *spec = NULL;
    if (code < 0 && a->spec_file) {
        json_error_t je;
        spec = json_load_file(a->spec_file, JSON_REJECT_DUPLICATES, &je);
        if (!spec)
            code = svc_fail(SVC_EXIT_USAGE, "--spec %s: %s (line %d)",
                            a->spec_file, je.text, je.line);
        else if (!json_is_object(spec))
            code = svc_fail(SVC_EXIT_USAGE,
                            "--spec %s: must hold a JSON object", a->spec_file);
    }
    if (code < 0) {
        if (!spec)
            spec = json_object();
        // Flags win; calibration/evaluation objects merge field by field.
        const char *k;
        json_t *v;
        json_object_foreach (flags, k, v) {
            json_t *old = json_object_get(spec, k);
            if (json_is_object(v) && json_is_object(old))
                json_object_update(old, v);
            else
                json_object_set(spec, k, v);
        }
        *spec_out = spec;
        spec = NULL;
    }
    json_decref(spec);
    json_decref(flags);
    return code;
}

int svc_cmd_prune(int argc, char **argv)
{
    prune_args a = {0};
    json_t *spec_json = NULL;
    int code = parse_args(argc, argv, &a, &spec_json);
    if (code >= 0)
        return code;

    sh_diag d;
    sh_diag_clear(&d);
    eng_spec spec;
    int rc = eng_spec_parse(&spec, spec_json, &d);
    json_decref(spec_json);
    if (rc != 0) {
        char where[160];
        snprintf(where, sizeof where, "spec field %s",
                 d.field[0] ? d.field : "(root)");
        return svc_fail_diag(SVC_EXIT_USAGE, where, &d);
    }

    eng_model *m = NULL, *base = NULL;
    char tmp[4096] = "";
    hash_job hj = {0};
    eng_report r;
    eng_report_init(&r, &spec);
    code = SVC_EXIT_FAIL;
    if (svc_out_check(a.out) != 0) {
        code = SVC_EXIT_USAGE;
        goto out;
    }
    if ((rc = eng_model_open(&m, a.model, &d)) != 0) {
        svc_fail_diag(SVC_EXIT_FAIL, a.model, &d);
        goto out;
    }
    if (spec.base && (rc = eng_model_open(&base, spec.base, &d)) != 0) {
        svc_fail_diag(SVC_EXIT_FAIL, spec.base, &d);
        goto out;
    }
    if (svc_out_begin(a.out, tmp, sizeof tmp) != 0)
        goto out;

    size_t nf = eng_model_file_count(m);
    char cache[4096];
    hj.m = m;
    hj.cache_dir = sh_cache_dir(cache, sizeof cache);
    hj.hex = calloc(nf ? nf : 1, sizeof *hj.hex);
    hj.ptrs = calloc(nf ? nf : 1, sizeof *hj.ptrs);
    if (hj.hex && hj.ptrs &&
        pthread_create(&hj.thread, NULL, hash_files, &hj) == 0)
        hj.started = true;

    if (a.threads <= 0)
        a.threads = sh_cpu_count();
    eng_set_threads(a.threads);
    svc_catch_interrupts();
    svc_progress prog;
    svc_progress_init(&prog, a.quiet);
    eng_hooks hooks = {.ctx = &prog,
                       .progress = svc_progress_cb,
                       .cancelled = svc_interrupted};
    eng_options o = {.out_dir = tmp,
                     .sync = !a.no_sync,
                     .calibration_path = spec.calib_dataset,
                     .evaluation_path = spec.eval_dataset,
                     .base = base,
                     .scores_path = spec.scores,
                     .input_sha = hash_wait,
                     .input_sha_ctx = &hj,
                     .threads = a.threads};
    rc = eng_prune(m, &spec, &o, &hooks, &r, &d);
    svc_progress_done(&prog);
    if (rc != 0) {
        svc_fail_diag(SVC_EXIT_FAIL, rc == SH_ECANCELED ? "interrupted" : "",
                      &d);
        goto out;
    }
    if (svc_out_commit(tmp, a.out, !a.no_sync) != 0)
        goto out;
    if (a.report) {
        json_t *j = eng_report_to_json(&r);
        char *text = json_dumps(j, JSON_INDENT(2));
        json_decref(j);
        rc = text ? sh_file_write_atomic(a.report, text, strlen(text))
                  : SH_ENOMEM;
        free(text);
        if (rc != 0) {
            svc_fail(SVC_EXIT_FAIL, "--report %s: cannot write (%s)", a.report,
                     sh_strerror(rc));
            goto out;
        }
    }
    print_summary(&r, a.out);
    code = SVC_EXIT_OK;
out:
    hash_wait(&hj);
    if (tmp[0])
        sh_rm_rf(tmp);
    free(hj.hex);
    free(hj.ptrs);
    eng_report_deinit(&r);
    eng_model_close(base);
    eng_model_close(m);
    eng_spec_deinit(&spec);
    return code;
}

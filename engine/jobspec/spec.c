// spec.c: parsing, defaults and checks of the job spec.
#include "engine/jobspec/spec.h"

#include "common/util.h"
#include "engine/io/model.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const scope_names[ENG_SCOPE_COUNT] = {
    [ENG_SCOPE_LAYER] = "layer",
    [ENG_SCOPE_GLOBAL] = "global",
};
static const char *const norm_names[ENG_NORM_COUNT] = {
    [ENG_NORM_L1] = "l1",
    [ENG_NORM_L2] = "l2",
};
static_assert(SH_ARRAY_LEN(scope_names) == ENG_SCOPE_COUNT, "scope names");
static const char *const blocks_by_names[ENG_BLOCKS_BY_COUNT] = {
    [ENG_BLOCKS_INFLUENCE] = "influence",
    [ENG_BLOCKS_LAST] = "last",
    [ENG_BLOCKS_RANDOM] = "random",
};
static_assert(SH_ARRAY_LEN(norm_names) == ENG_NORM_COUNT, "norm names");
static_assert(SH_ARRAY_LEN(blocks_by_names) == ENG_BLOCKS_BY_COUNT,
              "blocks_by names");

const char *eng_scope_name(eng_scope s) { return scope_names[s]; }
const char *eng_norm_name(eng_norm n) { return norm_names[n]; }
const char *eng_blocks_by_name(eng_blocks_by b) { return blocks_by_names[b]; }

#define DEFAULT_SAMPLES 0 // all rows of the calibration set
#define MAX_SAMPLES 1000000

static int bad(sh_diag *d, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int bad(sh_diag *d, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = sh_diag_vset(d, SH_ESPEC, field, fmt, ap);
    va_end(ap);
    return rc;
}

// --- patterns

void eng_pattern_format(char *buf, size_t size, eng_pattern p)
{
    switch (p.kind) {
    case ENG_PATTERN_NM: snprintf(buf, size, "%d:%d", p.n, p.m); break;
    case ENG_PATTERN_ROWS: snprintf(buf, size, "rows"); break;
    default: snprintf(buf, size, "unstructured");
    }
}

// Reads 1 to 3 decimal digits at *p.
static bool digits(const char **p, int *out)
{
    int v = 0, k = 0;
    while (k < 3 && **p >= '0' && **p <= '9') {
        v = v * 10 + (**p - '0');
        (*p)++;
        k++;
    }
    *out = v;
    return k > 0 && !(**p >= '0' && **p <= '9');
}

int eng_pattern_parse(const char *word, eng_pattern *out, const char *field,
                      sh_diag *d)
{
    if (strcmp(word, "unstructured") == 0) {
        *out = (eng_pattern){ENG_PATTERN_UNSTRUCTURED, 0, 0};
        return 0;
    }
    if (strcmp(word, "rows") == 0) {
        *out = (eng_pattern){ENG_PATTERN_ROWS, 0, 0};
        return 0;
    }
    // Digits only: no signs, no spaces.
    int n = 0, m = 0;
    const char *p = word;
    if (digits(&p, &n) && *p++ == ':' && digits(&p, &m) && *p == '\0') {
        if (n <= 0 || m > ENG_NM_MAX || n >= m)
            return bad(d, field,
                       "pattern \"%s\": N:M needs 0 < N < M <= %d, where N "
                       "is the number of weights kept in every M",
                       word, ENG_NM_MAX);
        *out = (eng_pattern){ENG_PATTERN_NM, n, m};
        return 0;
    }
    return bad(d, field,
               "pattern \"%s\" is not one of unstructured, rows, or N:M "
               "such as 2:4 (keep 2 of every 4)",
               word);
}

// --- regexes

static int regex_compile(eng_regex *r, const json_t *v, const char *field,
                         sh_diag *d)
{
    if (!json_is_string(v) || json_string_length(v) == 0)
        return bad(d, field, "%s must be a non-empty regex string", field);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return bad(d, field, "%s holds a NUL character", field);
    return eng_regex_compile(r, json_string_value(v), field, d);
}

static int parse_regex_list(const json_t *v, const char *field, eng_regex **out,
                            size_t *count, sh_diag *d)
{
    if (!json_is_array(v))
        return bad(d, field, "%s must be an array of regex strings", field);
    size_t n = json_array_size(v);
    if (n > ENG_SPEC_MAX_REGEXES)
        return bad(d, field, "%s has %zu entries, at most %d", field, n,
                   ENG_SPEC_MAX_REGEXES);
    eng_regex *rs = calloc(n ? n : 1, sizeof *rs);
    if (!rs)
        return sh_diag_set(d, SH_ENOMEM, field, "out of memory");
    *out = rs;
    for (size_t i = 0; i < n; i++) {
        char f[64];
        snprintf(f, sizeof f, "%s[%zu]", field, i);
        int rc = regex_compile(&rs[i], json_array_get(v, i), f, d);
        if (rc != 0)
            return rc;
        *count = i + 1;
    }
    return 0;
}

// --- field helpers

static int check_keys(const json_t *obj, const char *prefix,
                      const char *const *known, sh_diag *d)
{
    const char *k;
    json_t *v;
    json_object_foreach ((json_t *)obj, k, v) {
        bool ok = false;
        for (const char *const *p = known; *p; p++)
            ok = ok || strcmp(*p, k) == 0;
        if (!ok) {
            char f[160];
            snprintf(f, sizeof f, "%s%s", prefix, k);
            return bad(d, f, "unknown field \"%s\"", f);
        }
    }
    return 0;
}

static int get_string(const json_t *obj, const char *key, const char *field,
                      const char **out, sh_diag *d)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = NULL;
        return 0;
    }
    if (!json_is_string(v))
        return bad(d, field, "%s must be a string", field);
    *out = json_string_value(v);
    return 0;
}

static int get_fraction(const json_t *v, const char *field, double *out,
                        sh_diag *d)
{
    if (!json_is_number(v))
        return bad(d, field, "%s must be a number between 0 and 1", field);
    double x = json_number_value(v);
    if (!(x >= 0.0 && x <= 1.0))
        return bad(d, field, "%s is %g; it must lie between 0 and 1", field, x);
    *out = x == 0.0 ? 0.0 : x; // -0.0 is echoed as 0.0
    return 0;
}

static int dup_str(char **dst, const char *src, const char *field, sh_diag *d)
{
    if (!src)
        return 0;
    if (!(*dst = strdup(src)))
        return sh_diag_set(d, SH_ENOMEM, field, "out of memory");
    return 0;
}

static double implied_sparsity(eng_pattern p)
{
    return p.kind == ENG_PATTERN_NM ? (double)(p.m - p.n) / p.m : -1;
}

// Reconciles an explicit sparsity with an N:M pattern, which implies one.
static int settle_sparsity(eng_pattern p, bool given, double *sparsity,
                           const char *field, sh_diag *d)
{
    double implied = implied_sparsity(p);
    if (implied < 0)
        return 0;
    if (given && fabs(*sparsity - implied) > 1e-9) {
        char pat[16];
        eng_pattern_format(pat, sizeof pat, p);
        return bad(d, field,
                   "%s %g conflicts with pattern %s, which keeps %d of every "
                   "%d weights (sparsity %g); leave it out",
                   field, *sparsity, pat, p.n, p.m, implied);
    }
    *sparsity = implied;
    return 0;
}

static int parse_overrides(eng_spec *s, const json_t *v, sh_diag *d)
{
    if (!json_is_array(v))
        return bad(d, "overrides", "overrides must be an array of objects");
    size_t n = json_array_size(v);
    if (n > ENG_SPEC_MAX_OVERRIDES)
        return bad(d, "overrides", "overrides has %zu entries, at most %d", n,
                   ENG_SPEC_MAX_OVERRIDES);
    s->overrides = calloc(n ? n : 1, sizeof *s->overrides);
    if (!s->overrides)
        return sh_diag_set(d, SH_ENOMEM, "overrides", "out of memory");
    static const char *const known[] = {"match", "sparsity", "pattern",
                                        "quantize", NULL};
    for (size_t i = 0; i < n; i++) {
        char f[64], ff[96];
        snprintf(f, sizeof f, "overrides[%zu]", i);
        json_t *o = json_array_get(v, i);
        if (!json_is_object(o))
            return bad(d, f, "%s must be an object", f);
        snprintf(ff, sizeof ff, "%s.", f);
        int rc = check_keys(o, ff, known, d);
        if (rc != 0)
            return rc;
        eng_override *ov = &s->overrides[i];
        json_t *m = json_object_get(o, "match");
        snprintf(ff, sizeof ff, "%s.match", f);
        if ((rc = regex_compile(&ov->match, m, ff, d)))
            return rc;
        s->n_overrides = i + 1;
        json_t *p = json_object_get(o, "pattern");
        if (p) {
            snprintf(ff, sizeof ff, "%s.pattern", f);
            if (!json_is_string(p))
                return bad(d, ff, "%s must be a string", ff);
            if ((rc = eng_pattern_parse(json_string_value(p), &ov->pattern, ff,
                                        d)))
                return rc;
            ov->has_pattern = true;
        }
        json_t *sp = json_object_get(o, "sparsity");
        snprintf(ff, sizeof ff, "%s.sparsity", f);
        if (sp && (rc = get_fraction(sp, ff, &ov->sparsity, d)))
            return rc;
        ov->has_sparsity = sp != NULL;
        if (!sp && !p && !json_object_get(o, "quantize"))
            return bad(d, f, "%s needs a sparsity, a pattern or quantize", f);
        if (ov->has_pattern &&
            (rc = settle_sparsity(ov->pattern, ov->has_sparsity, &ov->sparsity,
                                  ff, d)))
            return rc;
        if (ov->has_pattern && ov->pattern.kind == ENG_PATTERN_NM)
            ov->has_sparsity = true;
    }
    return 0;
}

static int parse_calibration(eng_spec *s, const json_t *v, sh_diag *d)
{
    if (json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return bad(d, "calibration",
                   "calibration must be an object {dataset, samples}");
    static const char *const known[] = {"dataset", "samples", NULL};
    int rc = check_keys(v, "calibration.", known, d);
    const char *ds = NULL;
    if (rc || (rc = get_string(v, "dataset", "calibration.dataset", &ds, d)))
        return rc;
    if (!ds || !ds[0])
        return bad(d, "calibration.dataset", "calibration.dataset is required");
    json_t *n = json_object_get(v, "samples");
    s->calib_samples = DEFAULT_SAMPLES;
    if (n && !json_is_null(n)) {
        if (!json_is_integer(n) || json_integer_value(n) < 1 ||
            json_integer_value(n) > MAX_SAMPLES)
            return bad(d, "calibration.samples",
                       "calibration.samples must be an integer from 1 to %d",
                       MAX_SAMPLES);
        s->calib_samples = json_integer_value(n);
    }
    return dup_str(&s->calib_dataset, ds, "calibration.dataset", d);
}

static int parse_evaluation(eng_spec *s, const json_t *v, sh_diag *d)
{
    if (json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return bad(d, "evaluation", "evaluation must be an object {dataset}");
    static const char *const known[] = {"dataset", NULL};
    int rc = check_keys(v, "evaluation.", known, d);
    const char *ds = NULL;
    if (rc || (rc = get_string(v, "dataset", "evaluation.dataset", &ds, d)))
        return rc;
    if (!ds || !ds[0])
        return bad(d, "evaluation.dataset", "evaluation.dataset is required");
    return dup_str(&s->eval_dataset, ds, "evaluation.dataset", d);
}

static int parse_sparsegpt(eng_spec *s, const json_t *v, sh_diag *d)
{
    if (!json_is_object(v))
        return bad(d, "sparsegpt",
                   "sparsegpt must be an object {blocksize, damp}");
    static const char *const known[] = {"blocksize", "damp", NULL};
    int rc = check_keys(v, "sparsegpt.", known, d);
    if (rc)
        return rc;
    json_t *b = json_object_get(v, "blocksize");
    if (b) {
        if (!json_is_integer(b) || json_integer_value(b) < 1 ||
            json_integer_value(b) > ENG_SGPT_BLOCKSIZE_MAX)
            return bad(d, "sparsegpt.blocksize",
                       "sparsegpt.blocksize must be an integer from 1 to %d",
                       ENG_SGPT_BLOCKSIZE_MAX);
        s->sgpt_blocksize = (int)json_integer_value(b);
    }
    json_t *p = json_object_get(v, "damp");
    if (p) {
        if (!json_is_number(p) || !(json_number_value(p) > 0) ||
            json_number_value(p) > 1)
            return bad(d, "sparsegpt.damp",
                       "sparsegpt.damp must be a number in (0, 1]");
        s->sgpt_damp = json_number_value(p);
    }
    return 0;
}

static int parse_report(eng_spec *s, const json_t *v, sh_diag *d)
{
    if (!json_is_object(v))
        return bad(d, "report", "report must be an object {recon_error}");
    static const char *const known[] = {"recon_error", NULL};
    int rc = check_keys(v, "report.", known, d);
    json_t *r = json_object_get(v, "recon_error");
    if (rc || !r || json_is_null(r))
        return rc;
    if (json_is_boolean(r))
        s->recon = json_is_true(r) ? ENG_RECON_FULL : ENG_RECON_OFF;
    else if (json_is_string(r) && strcmp(json_string_value(r), "sample") == 0)
        s->recon = ENG_RECON_SAMPLE;
    else
        return bad(d, "report.recon_error",
                   "report.recon_error must be true (every calibration "
                   "row), \"sample\" (the first %d) or false",
                   ENG_RECON_SAMPLE_ROWS);
    return 0;
}

static const char *const format_names[ENG_FORMAT_COUNT] = {
    [ENG_FORMAT_DENSE] = ENG_OUTPUT_DENSE,
    [ENG_FORMAT_COMPRESSED] = ENG_OUTPUT_COMPRESSED,
};

static const char *const sparse_names[ENG_SPARSE_COUNT] = {
    [ENG_SPARSE_AUTO] = "auto",
    [ENG_SPARSE_BITMASK] = "sparse-bitmask",
    [ENG_SPARSE_24] = "sparse-24-bitmask",
};

static int parse_output(eng_spec *s, const json_t *v, sh_diag *d)
{
    if (!json_is_object(v))
        return bad(d, "output",
                   "output must be an object {format, masks, sparse_format}");
    static const char *const known[] = {"format", "masks", "sparse_format",
                                        NULL};
    int rc = check_keys(v, "output.", known, d);
    const char *f = NULL;
    if (rc || (rc = get_string(v, "format", "output.format", &f, d)))
        return rc;
    for (int i = 0; f && i < ENG_FORMAT_COUNT; i++)
        if (strcmp(f, format_names[i]) == 0) {
            s->format = (eng_output_format)i;
            f = NULL;
        }
    if (f)
        return bad(d, "output.format",
                   "output.format \"%s\" is not one of dense (pruned "
                   "weights stored as zeros in place), compressed-tensors",
                   f);
    const char *sf = NULL;
    if ((rc = get_string(v, "sparse_format", "output.sparse_format", &sf, d)))
        return rc;
    for (int i = 0; sf && i < ENG_SPARSE_COUNT; i++)
        if (strcmp(sf, sparse_names[i]) == 0) {
            s->sparse_format = (eng_sparse_format)i;
            sf = NULL;
        }
    if (sf)
        return bad(d, "output.sparse_format",
                   "output.sparse_format \"%s\" is not one of auto, "
                   "sparse-bitmask, sparse-24-bitmask",
                   sf);
    json_t *m = json_object_get(v, "masks");
    if (m && !json_is_null(m)) {
        if (!json_is_boolean(m))
            return bad(d, "output.masks", "output.masks must be true or false");
        s->masks = json_is_true(m);
    }
    return 0;
}

// A fraction of units removed from every block: 1 would leave none.
static int get_share(const json_t *st, const char *key, const char *unit,
                     double *out, sh_diag *d)
{
    json_t *v = json_object_get(st, key);
    if (!v || json_is_null(v))
        return 0;
    char field[64];
    snprintf(field, sizeof field, "structure.%s", key);
    int rc = get_fraction(v, field, out, d);
    if (rc == 0 && *out >= 1.0)
        return bad(d, field,
                   "%s is 1: that removes every %s of every block; give a "
                   "fraction below 1",
                   field, unit);
    return rc;
}

static int get_count(const json_t *st, const char *key, int64_t lo, int64_t hi,
                     int64_t *out, sh_diag *d)
{
    json_t *v = json_object_get(st, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo ||
        json_integer_value(v) > hi)
        return bad(d,
                   key[0] == 'b' ? "structure.blocks" : "structure.multiple_of",
                   "structure.%s must be an integer from %lld to %lld", key,
                   (long long)lo, (long long)hi);
    *out = json_integer_value(v);
    return 0;
}

static int parse_structure(eng_spec *s, const json_t *v, sh_diag *d)
{
    if (!json_is_object(v))
        return bad(d, "structure",
                   "structure must be an object {heads, kv_heads, channels, "
                   "blocks, neurons, multiple_of, compensate, blocks_by}");
    static const char *const known[] = {
        "heads",       "kv_heads",   "channels",  "blocks", "neurons",
        "multiple_of", "compensate", "blocks_by", NULL};
    eng_structure *st = &s->structure;
    *st = (eng_structure){.on = true, .multiple_of = 1, .compensate = true};
    st->blocks_by = s->method == ENG_METHOD_RANDOM ? ENG_BLOCKS_RANDOM
                                                   : ENG_BLOCKS_INFLUENCE;
    int rc = check_keys(v, "structure.", known, d);
    if (rc || (rc = get_share(v, "heads", "head", &st->heads, d)) ||
        (rc = get_share(v, "kv_heads", "KV group", &st->kv_heads, d)) ||
        (rc = get_share(v, "channels", "channel", &st->channels, d)) ||
        (rc = get_share(v, "neurons", "hidden unit", &st->neurons, d)) ||
        (rc = get_count(v, "blocks", 0, 1 << 20, &st->blocks, d)) ||
        (rc = get_count(v, "multiple_of", 1, 1 << 20, &st->multiple_of, d)))
        return rc;
    json_t *c = json_object_get(v, "compensate");
    if (c && !json_is_null(c)) {
        if (!json_is_boolean(c))
            return bad(d, "structure.compensate",
                       "structure.compensate must be true or false");
        st->compensate = json_is_true(c);
    }
    const char *by = NULL;
    if ((rc = get_string(v, "blocks_by", "structure.blocks_by", &by, d)))
        return rc;
    if (by) {
        int i = 0;
        while (i < ENG_BLOCKS_BY_COUNT && strcmp(by, blocks_by_names[i]))
            i++;
        if (i == ENG_BLOCKS_BY_COUNT)
            return bad(d, "structure.blocks_by",
                       "structure.blocks_by \"%s\" is not one of influence, "
                       "last, random",
                       by);
        st->blocks_by = (eng_blocks_by)i;
    }
    if (st->heads == 0 && st->kv_heads == 0 && st->channels == 0 &&
        st->neurons == 0 && st->blocks == 0)
        return bad(d, "structure",
                   "structure removes nothing: give heads, kv_heads, "
                   "channels, neurons (fractions) or blocks (a count)");
    return 0;
}

// A quantize object at field f ("quantize", "overrides[2].quantize") into
// *q; null: not quantized. Calibration is parsed before (the default
// quantizer depends on it).
static int parse_quantize(const eng_spec *s, const json_t *v, const char *f,
                          eng_quant *q, sh_diag *d)
{
    *q = (eng_quant){0};
    if (json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return bad(d, f,
                   "%s must be an object {bits, group_size, symmetric, "
                   "method}",
                   f);
    static const char *const known[] = {"bits", "group_size", "symmetric",
                                        "method", NULL};
    char ff[96];
    snprintf(ff, sizeof ff, "%s.", f);
    int rc = check_keys(v, ff, known, d);
    if (rc)
        return rc;
    json_t *b = json_object_get(v, "bits");
    snprintf(ff, sizeof ff, "%s.bits", f);
    if (!json_is_integer(b) || json_integer_value(b) < 2 ||
        json_integer_value(b) > 8)
        return bad(d, ff, "%s must be an integer from 2 to 8", ff);
    q->bits = (int)json_integer_value(b);
    json_t *g = json_object_get(v, "group_size");
    snprintf(ff, sizeof ff, "%s.group_size", f);
    if (g && !json_is_null(g)) {
        if (!json_is_integer(g) || json_integer_value(g) < 0 ||
            json_integer_value(g) > (1 << 24))
            return bad(d, ff,
                       "%s must be an integer from 0 (one grid per output "
                       "row) to 2^24",
                       ff);
        q->group_size = (int64_t)json_integer_value(g);
    }
    json_t *sy = json_object_get(v, "symmetric");
    snprintf(ff, sizeof ff, "%s.symmetric", f);
    if (sy && !json_is_null(sy)) {
        if (!json_is_boolean(sy))
            return bad(d, ff, "%s must be true or false", ff);
        q->symmetric = json_is_true(sy);
    }
    const char *m = NULL;
    snprintf(ff, sizeof ff, "%s.method", f);
    if ((rc = get_string(v, "method", ff, &m, d)))
        return rc;
    if (m && strcmp(m, "gptq") != 0 && strcmp(m, "rtn") != 0)
        return bad(d, ff, "%s \"%s\" is not one of gptq, rtn", ff, m);
    // The default: GPTQ where the method has the OBS solver or there is
    // calibration, else RTN.
    q->rtn = m ? strcmp(m, "rtn") == 0
               : !eng_methods[s->method].solve && !s->calib_dataset;
    return 0;
}

static const char *const alloc_names[ENG_ALLOC_COUNT] = {
    [ENG_ALLOC_UNIFORM] = "uniform",
    [ENG_ALLOC_OWL] = "owl",
    [ENG_ALLOC_SENSITIVITY] = "sensitivity",
};

const char *eng_alloc_name(eng_alloc_kind k) { return alloc_names[k]; }

static const char *const kind_names[ENG_KIND_COUNT] = {
    [ENG_KIND_PRUNE] = "prune",
    [ENG_KIND_SENSITIVITY] = "sensitivity",
    [ENG_KIND_SWEEP] = "sweep",
};

const char *eng_kind_name(eng_kind k) { return kind_names[k]; }

static const char *const gran_names[ENG_GRAN_COUNT] = {
    [ENG_GRAN_TENSOR] = "tensor",
    [ENG_GRAN_BLOCK] = "block",
    [ENG_GRAN_TYPE] = "type",
};

const char *eng_granularity_name(eng_granularity g) { return gran_names[g]; }

// A rising list of at most ENG_SENS_MAX_LEVELS sparsities (field f):
// strictly between 0 and 1 when open (a sensitivity sweep: 0 is the dense
// model, 1 removes the group), from 0 to 1 otherwise.
static int parse_levels(const json_t *lv, const char *f, bool open, double *out,
                        size_t *n, sh_diag *d)
{
    if ((lv && !json_is_array(lv)) || json_array_size(lv) > ENG_SENS_MAX_LEVELS)
        return bad(d, f, "%s must be a list of up to %d sparsities", f,
                   ENG_SENS_MAX_LEVELS);
    for (size_t i = 0; i < json_array_size(lv); i++) {
        json_t *x = json_array_get(lv, i);
        double v = json_number_value(x);
        char field[48];
        snprintf(field, sizeof field, "%s[%zu]", f, i);
        if (!json_is_number(x) || (open ? !(v > 0 && v < 1) : v < 0 || v > 1))
            return bad(d, field,
                       open ? "%s must be a sparsity strictly between 0 and 1 "
                              "(0 is the dense model, measured anyway; 1 "
                              "removes the group)"
                            : "%s must be a sparsity from 0 to 1",
                       field);
        if (i && !(v > out[i - 1]))
            return bad(d, field, "%s must rise: %g after %g", f, v, out[i - 1]);
        out[i] = v;
    }
    *n = json_array_size(lv);
    return 0;
}

// "sensitivity": {"levels": [...], "granularity": "block"}, for kind
// sensitivity.
static int parse_sensitivity(eng_spec *s, const json_t *v, sh_diag *d)
{
    static const char *const known[] = {"levels", "granularity", NULL};
    if (!json_is_object(v))
        return bad(d, "sensitivity",
                   "sensitivity must be an object: {\"levels\": [0.3, 0.5, "
                   "0.7], \"granularity\": \"block\"}");
    int rc = check_keys(v, "sensitivity.", known, d);
    if (rc)
        return rc;
    s->sens.granularity = ENG_GRAN_BLOCK;
    const char *g = NULL;
    if ((rc = get_string(v, "granularity", "sensitivity.granularity", &g, d)))
        return rc;
    for (int i = 0; g && i < ENG_GRAN_COUNT; i++)
        if (strcmp(g, gran_names[i]) == 0) {
            s->sens.granularity = (eng_granularity)i;
            g = NULL;
        }
    if (g)
        return bad(d, "sensitivity.granularity",
                   "sensitivity.granularity \"%s\" is not one of tensor, "
                   "block, type",
                   g);
    json_t *lv = json_object_get(v, "levels");
    if (!json_array_size(lv))
        return bad(d, "sensitivity.levels",
                   "sensitivity.levels must be a list of 1 to %d sparsities "
                   "([0.3, 0.5, 0.7])",
                   ENG_SENS_MAX_LEVELS);
    return parse_levels(lv, "sensitivity.levels", true, s->sens.levels,
                        &s->sens.n_levels, d);
}

// "uniform", "owl", or {"method", "m", "lambda"} (owl), {"method",
// "from", "min", "max"} (sensitivity).
static int parse_allocation(eng_spec *s, const json_t *v, sh_diag *d)
{
    s->alloc = (eng_alloc){
        .m = ENG_OWL_M, .lambda = ENG_OWL_LAMBDA, .min = 0, .max = 1};
    const json_t *obj = json_is_object(v) ? v : NULL;
    if (obj) {
        static const char *const known[] = {"method", "m",   "lambda",   "from",
                                            "min",    "max", "patterns", NULL};
        int rc = check_keys(obj, "allocation.", known, d);
        if (rc)
            return rc;
        v = json_object_get(obj, "method");
    }
    const char *w = json_string_value(v);
    for (int i = 0; w && i < ENG_ALLOC_COUNT; i++)
        if (strcmp(w, alloc_names[i]) == 0) {
            s->alloc.kind = (eng_alloc_kind)i;
            w = NULL;
            v = NULL;
        }
    if (v)
        return bad(d, obj ? "allocation.method" : "allocation",
                   "allocation must be \"uniform\", \"owl\" or {\"method\": "
                   "\"owl\", \"m\": 5, \"lambda\": 0.08}");
    json_t *m = obj ? json_object_get(obj, "m") : NULL;
    if (m && (!json_is_number(m) || !(json_number_value(m) > 1) ||
              json_number_value(m) > 1000))
        return bad(d, "allocation.m",
                   "allocation.m (outliers are scores above m times the "
                   "mean) must be a number above 1, at most 1000");
    if (m)
        s->alloc.m = json_number_value(m);
    json_t *l = obj ? json_object_get(obj, "lambda") : NULL;
    if (l && (!json_is_number(l) || json_number_value(l) < 0 ||
              json_number_value(l) > 0.5))
        return bad(d, "allocation.lambda",
                   "allocation.lambda (how far a block's sparsity may move "
                   "from the target) must be a number from 0 to 0.5");
    if (l)
        s->alloc.lambda = json_number_value(l);
    const char *from = NULL;
    int rc = obj ? get_string(obj, "from", "allocation.from", &from, d) : 0;
    if (rc)
        return rc;
    if ((s->alloc.kind == ENG_ALLOC_SENSITIVITY) != (from != NULL))
        return bad(d, "allocation.from",
                   from ? "allocation.from belongs to method \"sensitivity\""
                        : "allocation sensitivity needs \"from\": the "
                          "sensitivity report whose curves it reads");
    if (from && !(s->alloc.from = strdup(from)))
        return sh_diag_set(d, SH_ENOMEM, "allocation.from", "out of memory");
    static const char *const bounds[] = {"min", "max"};
    for (int k = 0; k < 2; k++) {
        json_t *b = obj ? json_object_get(obj, bounds[k]) : NULL;
        char f[32];
        snprintf(f, sizeof f, "allocation.%s", bounds[k]);
        if (b && (!json_is_number(b) || json_number_value(b) < 0 ||
                  json_number_value(b) > 1))
            return bad(d, f, "%s must be a fraction from 0 to 1", f);
        if (b)
            *(k ? &s->alloc.max : &s->alloc.min) = json_number_value(b);
    }
    if (s->alloc.min > s->alloc.max)
        return bad(d, "allocation.min", "allocation.min is above max");
    json_t *pl = obj ? json_object_get(obj, "patterns") : NULL;
    if (pl && s->alloc.kind != ENG_ALLOC_OWL)
        return bad(d, "allocation.patterns",
                   "allocation.patterns belongs to method \"owl\"");
    if (pl && (!json_is_array(pl) || json_array_size(pl) < 1 ||
               json_array_size(pl) > ENG_ALLOC_MAX_PATTERNS))
        return bad(d, "allocation.patterns",
                   "allocation.patterns must list 1 to %d N:M patterns "
                   "([\"1:4\", \"2:4\", \"3:4\"])",
                   ENG_ALLOC_MAX_PATTERNS);
    for (size_t i = 0; i < json_array_size(pl); i++) {
        char f[48];
        snprintf(f, sizeof f, "allocation.patterns[%zu]", i);
        eng_pattern *pt = &s->alloc.patterns[i];
        const char *word = json_string_value(json_array_get(pl, i));
        if (!word)
            return bad(d, f, "%s must be an N:M pattern such as \"2:4\"", f);
        if ((rc = eng_pattern_parse(word, pt, f, d)))
            return rc;
        if (pt->kind != ENG_PATTERN_NM)
            return bad(d, f, "%s must be an N:M pattern such as \"2:4\"", f);
        s->alloc.n_patterns++;
    }
    return 0;
}

static int parse_enum(const json_t *j, const char *key,
                      const char *const *names, int count, int *out, sh_diag *d)
{
    const char *w = NULL;
    int rc = get_string(j, key, key, &w, d);
    if (rc || !w)
        return rc;
    for (int i = 0; i < count; i++) {
        if (strcmp(w, names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    char list[256];
    sh_join(list, sizeof list, names, (size_t)count, ", ");
    return bad(d, key, "%s \"%s\" is not one of %s", key, w, list);
}

// "sweep": {"methods": [...], "levels": [...]}, for kind sweep.
static int parse_sweep(eng_spec *s, const json_t *v, sh_diag *d)
{
    static const char *const known[] = {"methods", "levels", NULL};
    if (!json_is_object(v))
        return bad(d, "sweep",
                   "a sweep job needs \"sweep\": {\"methods\": "
                   "[\"magnitude\", \"wanda\"], \"levels\": [0.5, 0.7]}");
    int rc = check_keys(v, "sweep.", known, d);
    if (rc)
        return rc;
    json_t *ms = json_object_get(v, "methods"),
           *lv = json_object_get(v, "levels");
    if ((ms && !json_is_array(ms)) || json_array_size(ms) > ENG_METHOD_COUNT)
        return bad(d, "sweep.methods",
                   "sweep.methods must be a list of method names, each once");
    for (size_t i = 0; i < json_array_size(ms); i++) {
        const char *w = json_string_value(json_array_get(ms, i));
        char field[48];
        snprintf(field, sizeof field, "sweep.methods[%zu]", i);
        int mi = -1;
        for (int k = 0; w && k < ENG_METHOD_COUNT; k++)
            mi = strcmp(w, eng_methods[k].name) == 0 ? k : mi;
        for (size_t k = 0; mi >= 0 && k < i; k++)
            if (s->sweep.methods[k] == (eng_method)mi)
                return bad(d, field, "%s: method %s is listed twice", field, w);
        if (mi < 0)
            return bad(d, field, "%s is not a method name", field);
        s->sweep.methods[s->sweep.n_methods++] = (eng_method)mi;
    }
    if ((rc = parse_levels(lv, "sweep.levels", false, s->sweep.levels,
                           &s->sweep.n_levels, d)))
        return rc;
    if (s->sweep.n_levels && s->structure.on)
        return bad(d, "sweep.levels",
                   "a structured sweep takes no sparsity levels: sweep its "
                   "methods");
    if (s->sweep.n_levels && s->pattern.kind == ENG_PATTERN_NM)
        return bad(d, "sweep.levels",
                   "pattern %d:%d fixes the sparsity: sweep levels with an "
                   "unstructured or rows pattern",
                   s->pattern.n, s->pattern.m);
    if (!s->sweep.n_methods && !s->sweep.n_levels)
        return bad(d, "sweep",
                   "a sweep needs sweep.methods, sweep.levels or both: it "
                   "crosses them");
    return 0;
}

static int parse_fields(eng_spec *s, const json_t *j, sh_diag *d)
{
    static const char *const known[] = {
        "checkpoint",  "method",     "sparsity",       "pattern",    "scope",
        "norm",        "targets",    "ignore",         "overrides",  "seed",
        "calibration", "evaluation", "sparsegpt",      "output",     "report",
        "structure",   "quantize",   "preserve_zeros", "allocation", "kind",
        "sensitivity", "sweep",      "base",           "scores",     NULL};
    int rc = check_keys(j, "", known, d);
    if (rc)
        return rc;

    const char *ck = NULL;
    if ((rc = get_string(j, "checkpoint", "checkpoint", &ck, d)) ||
        (rc = dup_str(&s->checkpoint, ck, "checkpoint", d)))
        return rc;
    const char *base = NULL, *scores = NULL;
    if ((rc = get_string(j, "base", "base", &base, d)) ||
        (rc = dup_str(&s->base, base, "base", d)) ||
        (rc = get_string(j, "scores", "scores", &scores, d)) ||
        (rc = dup_str(&s->scores, scores, "scores", d)))
        return rc;

    const char *method = NULL;
    if ((rc = get_string(j, "method", "method", &method, d)))
        return rc;
    if (!method)
        return bad(d, "method", "method is required");
    const char *names[ENG_METHOD_COUNT];
    for (int i = 0; i < ENG_METHOD_COUNT; i++)
        names[i] = eng_methods[i].name;
    int mi = -1;
    if ((rc = parse_enum(j, "method", names, ENG_METHOD_COUNT, &mi, d)))
        return rc;
    s->method = (eng_method)mi;

    const char *pat = NULL;
    if ((rc = get_string(j, "pattern", "pattern", &pat, d)) ||
        (pat && (rc = eng_pattern_parse(pat, &s->pattern, "pattern", d))))
        return rc;

    json_t *sp = json_object_get(j, "sparsity");
    if (sp && (rc = get_fraction(sp, "sparsity", &s->sparsity, d)))
        return rc;
    if ((rc = settle_sparsity(s->pattern, sp != NULL, &s->sparsity, "sparsity",
                              d)))
        return rc;

    int e = (int)s->scope;
    if ((rc = parse_enum(j, "scope", scope_names, ENG_SCOPE_COUNT, &e, d)))
        return rc;
    s->scope = (eng_scope)e;
    e = (int)s->norm;
    if ((rc = parse_enum(j, "norm", norm_names, ENG_NORM_COUNT, &e, d)))
        return rc;
    s->norm = (eng_norm)e;

    json_t *v;
    if ((v = json_object_get(j, "targets")) && !json_is_null(v) &&
        (rc = parse_regex_list(v, "targets", &s->targets, &s->n_targets, d)))
        return rc;
    if ((v = json_object_get(j, "ignore")) && !json_is_null(v) &&
        (rc = parse_regex_list(v, "ignore", &s->ignore, &s->n_ignore, d)))
        return rc;
    if ((v = json_object_get(j, "overrides")) && !json_is_null(v) &&
        (rc = parse_overrides(s, v, d)))
        return rc;

    if ((v = json_object_get(j, "seed")) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return bad(d, "seed", "seed must be a non-negative integer");
        s->seed = (uint64_t)json_integer_value(v);
    } else {
        // A fresh seed, recorded in the echoed spec so the run reproduces.
        uint64_t r = 0;
        sh_random_bytes(&r, sizeof r);
        s->seed = r & ((1ull << 53) - 1); // exact in every JSON reader
    }

    if ((v = json_object_get(j, "calibration")) &&
        (rc = parse_calibration(s, v, d)))
        return rc;
    if ((v = json_object_get(j, "evaluation")) &&
        (rc = parse_evaluation(s, v, d)))
        return rc;
    if ((v = json_object_get(j, "sparsegpt")) && !json_is_null(v) &&
        (rc = parse_sparsegpt(s, v, d)))
        return rc;
    if ((v = json_object_get(j, "output")) && !json_is_null(v) &&
        (rc = parse_output(s, v, d)))
        return rc;
    if ((v = json_object_get(j, "quantize")) &&
        (rc = parse_quantize(s, v, "quantize", &s->quant, d)))
        return rc;
    // Overrides' quantize (after calibration: it sets the default).
    json_t *ovs = json_object_get(j, "overrides");
    for (size_t i = 0; i < s->n_overrides; i++) {
        json_t *q = json_object_get(json_array_get(ovs, i), "quantize");
        char f[64];
        snprintf(f, sizeof f, "overrides[%zu].quantize", i);
        eng_override *o = &s->overrides[i];
        if (q && (rc = parse_quantize(s, q, f, &o->quant, d)))
            return rc;
        o->has_quant = q != NULL;
    }
    s->alloc = (eng_alloc){
        .m = ENG_OWL_M, .lambda = ENG_OWL_LAMBDA, .min = 0, .max = 1};
    if ((v = json_object_get(j, "allocation")) && !json_is_null(v) &&
        (rc = parse_allocation(s, v, d)))
        return rc;
    if ((v = json_object_get(j, "preserve_zeros")) && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return bad(d, "preserve_zeros",
                       "preserve_zeros must be true or false");
        s->preserve_zeros = json_is_true(v);
    }
    if ((v = json_object_get(j, "structure")) && !json_is_null(v)) {
        if ((rc = parse_structure(s, v, d)))
            return rc;
        static const char *const alone[] = {"sparsity", "pattern", "overrides",
                                            NULL};
        for (int i = 0; alone[i]; i++)
            if ((v = json_object_get(j, alone[i])) && !json_is_null(v) &&
                !(json_is_array(v) && json_array_size(v) == 0))
                return bad(d, alone[i],
                           "%s cannot be combined with structure: a "
                           "structured job removes whole units instead",
                           alone[i]);
        s->sparsity = 0;
    }
    // The method's default first; a report object may change it. A
    // shrink has no zeros to measure.
    s->recon = s->structure.on ? ENG_RECON_OFF
               : eng_methods[s->method].stats & ENG_STAT_HESSIAN
                   ? ENG_RECON_FULL
                   : ENG_RECON_SAMPLE;
    if ((v = json_object_get(j, "report")) && !json_is_null(v) &&
        (rc = parse_report(s, v, d)))
        return rc;
    int k = (int)s->kind;
    if ((rc = parse_enum(j, "kind", kind_names, ENG_KIND_COUNT, &k, d)))
        return rc;
    s->kind = (eng_kind)k;
    v = json_object_get(j, "sensitivity");
    if (v && !json_is_null(v) && s->kind != ENG_KIND_SENSITIVITY)
        return bad(d, "sensitivity",
                   "sensitivity belongs to \"kind\": \"sensitivity\"");
    if (s->kind == ENG_KIND_SENSITIVITY && (!v || json_is_null(v)))
        return bad(d, "sensitivity",
                   "a sensitivity job needs \"sensitivity\": {\"levels\": "
                   "[0.3, 0.5, 0.7], \"granularity\": \"block\"}");
    if (s->kind == ENG_KIND_SENSITIVITY && (rc = parse_sensitivity(s, v, d)))
        return rc;
    v = json_object_get(j, "sweep");
    if (v && !json_is_null(v) && s->kind != ENG_KIND_SWEEP)
        return bad(d, "sweep", "sweep belongs to \"kind\": \"sweep\"");
    if (s->kind == ENG_KIND_SWEEP && (rc = parse_sweep(s, v, d)))
        return rc;
    return 0;
}

// One grid of the spec (field f: "quantize", "overrides[1].quantize")
// against the method, the calibration and the output format.
static int check_quant(const eng_spec *s, const eng_quant *q, const char *f,
                       sh_diag *d)
{
    const eng_method_def *mi = &eng_methods[s->method];
    char ff[96];
    snprintf(ff, sizeof ff, "%s.method", f);
    int b = q->bits;
    if (s->format == ENG_FORMAT_COMPRESSED && b && b != 2 && b != 4 && b != 8)
        return bad(d, "output.format",
                   "compressed-tensors holds 2 and 4 bits (pack-quantized) "
                   "and 8 bits (int-quantized); its packing of %d bits "
                   "changed between library releases, so a reader could "
                   "misread it: use 2, 4 or 8 bits, or output.format "
                   "\"dense\"",
                   b);
    if (b && q->rtn && mi->solve)
        return bad(d, ff,
                   "%s quantizes inside its own update (gptq); rtn is for "
                   "the other methods",
                   mi->name);
    if (b && !q->rtn && !s->calib_dataset &&
        !mi->needs_calibration) // (that check names calibration)
        return bad(d, ff,
                   "gptq needs calibration data (its update goes through "
                   "the layers' Hessians): give calibration.dataset, or "
                   "%s \"rtn\"",
                   ff);
    return 0;
}

// Checks of the method, scope and structure together.
static int check_structure(const eng_spec *s, sh_diag *d)
{
    const eng_method_def *mi = &eng_methods[s->method];
    if (s->scope == ENG_SCOPE_GLOBAL && !s->structure.on) {
        if (!mi->supports_global)
            return bad(d, "scope",
                       "scope \"global\" is not defined for method %s; use "
                       "\"layer\"",
                       mi->name);
        if (s->pattern.kind != ENG_PATTERN_UNSTRUCTURED)
            return bad(d, "scope",
                       "scope \"global\" ranks single weights across "
                       "tensors, so it needs pattern \"unstructured\"");
        for (size_t i = 0; i < s->n_overrides; i++)
            if (s->overrides[i].has_pattern &&
                s->overrides[i].pattern.kind != ENG_PATTERN_UNSTRUCTURED)
                return bad(d, "scope",
                           "overrides with a pattern need scope \"layer\"");
    }
    const eng_structure *st = &s->structure;
    int rc = check_quant(s, &s->quant, "quantize", d);
    for (size_t i = 0; rc == 0 && i < s->n_overrides; i++) {
        char f[64];
        snprintf(f, sizeof f, "overrides[%zu].quantize", i);
        rc = check_quant(s, &s->overrides[i].quant, f, d);
    }
    if (rc != 0)
        return rc;
    if (s->format != ENG_FORMAT_COMPRESSED &&
        s->sparse_format != ENG_SPARSE_AUTO)
        return bad(d, "output.sparse_format",
                   "output.sparse_format applies to output.format "
                   "\"compressed-tensors\"");
    if (s->quant.bits && st->on)
        return bad(d, "quantize", "quantize with a structure is not built yet");
    if (s->alloc.kind != ENG_ALLOC_UNIFORM) {
        const char *why =
            st->on ? "a structure removes the same count from every block"
            : s->scope == ENG_SCOPE_GLOBAL ? "scope global pools the targets"
            : s->pattern.kind != ENG_PATTERN_UNSTRUCTURED
                ? "it chooses each block's level (for N:M, list the "
                  "patterns a block may take in allocation.patterns and give "
                  "the target as sparsity)"
            : s->n_overrides ? "it writes its own overrides, one a block"
                             : NULL;
        if (why)
            return bad(d, "allocation",
                       "allocation %s chooses each block's sparsity; %s: use "
                       "pattern unstructured, scope layer, no overrides and "
                       "no structure",
                       alloc_names[s->alloc.kind], why);
    }
    if (s->masks && st->on)
        return bad(d, "output.masks",
                   "a structured job removes whole units: there is no mask "
                   "to write");
    if (s->format == ENG_FORMAT_COMPRESSED && st->on)
        return bad(d, "output.format",
                   "a structured job writes a smaller dense model; "
                   "compressed-tensors is for sparse or quantized tensors");
    if (!st->on && !mi->patterns)
        return bad(d, "method",
                   "method %s scores whole structures only: give a "
                   "structure (heads, channels, blocks, ...)",
                   mi->name);
    if (!st->on)
        return 0;
    if (mi->unit == ENG_UNIT_NONE)
        return bad(d, "method",
                   "method %s rewrites single weights and cannot rank "
                   "structures; use magnitude, random, wanda, flap or "
                   "block_influence",
                   mi->name);
    if (s->scope == ENG_SCOPE_GLOBAL)
        return bad(d, "scope",
                   "scope \"global\" ranks single weights across tensors; a "
                   "structure removes the same count from every block: use "
                   "\"layer\"");
    if (mi->unit == ENG_UNIT_BLOCKS &&
        (st->heads || st->kv_heads || st->channels || st->neurons))
        return bad(d, "method",
                   "block_influence ranks whole blocks only; for heads, "
                   "channels or neurons use magnitude, random, wanda or flap");
    if (st->blocks > 0 && st->blocks_by == ENG_BLOCKS_INFLUENCE &&
        !s->calib_dataset)
        return bad(d, "structure.blocks",
                   "blocks are chosen by their influence on the calibration "
                   "set: give calibration.dataset (or structure.blocks_by "
                   "\"last\" or \"random\")");
    return 0;
}

// Checks that need several fields at once.
// What a sensitivity sweep sets itself, its base may not.
static int check_sensitivity(const eng_spec *s, sh_diag *d)
{
    if (s->kind != ENG_KIND_SENSITIVITY)
        return 0;
    const char *field = s->n_overrides                       ? "overrides"
                        : s->structure.on                    ? "structure"
                        : s->alloc.kind != ENG_ALLOC_UNIFORM ? "allocation"
                        : s->scope != ENG_SCOPE_LAYER        ? "scope"
                                                             : NULL;
    if (field)
        return bad(d, field,
                   "a sensitivity job sets each group's sparsity itself: "
                   "%s cannot be part of it (no overrides, structure, "
                   "allocation or global scope)",
                   field);
    return 0;
}

// Whether the spec runs method m: its own, or one of its sweep's.
static bool uses_method(const eng_spec *s, eng_method m)
{
    for (size_t i = 0; s->kind == ENG_KIND_SWEEP && i < s->sweep.n_methods; i++)
        if (s->sweep.methods[i] == m)
            return true;
    return s->method == m;
}

static int check_combination(const eng_spec *s, sh_diag *d);

// Every point of a sweep must hold as a spec of its own.
static int check_sweep(const eng_spec *s, sh_diag *d)
{
    size_t n = s->kind == ENG_KIND_SWEEP ? eng_sweep_points(s) : 0;
    if (n > ENG_SWEEP_MAX_POINTS)
        return bad(d, "sweep",
                   "the sweep has %zu points (methods x levels), more than "
                   "%d",
                   n, ENG_SWEEP_MAX_POINTS);
    for (size_t i = 0; i < n; i++) {
        eng_spec p = eng_sweep_point(s, i);
        int rc = check_combination(&p, d);
        if (rc == SH_ESPEC)
            sh_diag_prefix(d, "sweep point %zu (%s at %g)", i,
                           eng_methods[p.method].name, p.sparsity);
        if (rc)
            return rc;
    }
    return 0;
}

static int check_combination(const eng_spec *s, sh_diag *d)
{
    int rc = check_structure(s, d);
    if (rc == 0)
        rc = check_sweep(s, d);
    if (rc == 0)
        rc = check_sensitivity(s, d);
    // Every group within [min, max]: their weighted mean is too.
    if (rc == 0 && s->alloc.kind == ENG_ALLOC_SENSITIVITY &&
        (s->alloc.min > s->sparsity || s->alloc.max < s->sparsity))
        return bad(
            d, s->alloc.min > s->sparsity ? "allocation.min" : "allocation.max",
            "the bounds make the target impossible: every group's "
            "level is from allocation.min %g to allocation.max %g, "
            "the target sparsity is %g",
            s->alloc.min, s->alloc.max, s->sparsity);
    const eng_method_def *mi = &eng_methods[s->method];
    if (rc == 0 && mi->needs_calibration && !s->calib_dataset)
        return bad(d, "calibration",
                   "method %s needs calibration data: give "
                   "calibration.dataset",
                   mi->name);
    // The inputs of movement and scores, and only theirs (a sweep's
    // methods may name them).
    bool movement = uses_method(s, ENG_METHOD_MOVEMENT);
    bool given = uses_method(s, ENG_METHOD_SCORES);
    if (rc == 0 && movement != (s->base != NULL))
        return bad(d, "base",
                   movement ? "method movement needs base: the checkpoint "
                              "before fine-tuning"
                            : "base is the checkpoint method movement "
                              "compares with; method %s takes none (nor "
                              "does any of the sweep's)",
                   mi->name);
    if (rc == 0 && given != (s->scores != NULL))
        return bad(d, "scores",
                   given ? "method scores needs scores: a file of score "
                           "tensors, one per target"
                         : "scores are for method scores; method %s "
                           "takes none",
                   mi->name);
    return rc;
}

int eng_spec_parse(eng_spec *s, const json_t *j, sh_diag *d)
{
    memset(s, 0, sizeof *s);
    s->method = ENG_METHOD_MAGNITUDE;
    s->sparsity = 0.5;
    s->pattern.kind = ENG_PATTERN_UNSTRUCTURED;
    s->scope = ENG_SCOPE_LAYER;
    s->norm = ENG_NORM_L2;
    s->calib_samples = DEFAULT_SAMPLES;
    s->sgpt_blocksize = ENG_SGPT_BLOCKSIZE;
    s->sgpt_damp = ENG_SGPT_DAMP;
    if (!json_is_object(j))
        return bad(d, "", "the job spec must be a JSON object");
    int rc = parse_fields(s, j, d);
    if (rc == 0)
        rc = check_combination(s, d);
    if (rc != 0)
        eng_spec_deinit(s);
    return rc;
}

void eng_spec_deinit(eng_spec *s)
{
    free(s->checkpoint);
    for (size_t i = 0; i < s->n_targets; i++)
        eng_regex_free(&s->targets[i]);
    free(s->targets);
    for (size_t i = 0; i < s->n_ignore; i++)
        eng_regex_free(&s->ignore[i]);
    free(s->ignore);
    for (size_t i = 0; i < s->n_overrides; i++)
        eng_regex_free(&s->overrides[i].match);
    free(s->overrides);
    free(s->calib_dataset);
    free(s->eval_dataset);
    free(s->base);
    free(s->scores);
    free(s->alloc.from);
    memset(s, 0, sizeof *s);
}

static json_t *regex_array(const eng_regex *rs, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(rs[i].text));
    return a;
}

static json_t *quant_json(const eng_quant *q)
{
    if (!q->bits)
        return json_null();
    return json_pack("{s:i, s:I, s:b, s:s}", "bits", q->bits, "group_size",
                     (json_int_t)q->group_size, "symmetric", q->symmetric,
                     "method", q->rtn ? "rtn" : "gptq");
}

json_t *eng_spec_to_json(const eng_spec *s)
{
    char pat[16];
    eng_pattern_format(pat, sizeof pat, s->pattern);
    json_t *j = json_object();
    json_object_set_new(j, "checkpoint",
                        s->checkpoint ? json_string(s->checkpoint)
                                      : json_null());
    json_object_set_new(j, "method", json_string(eng_methods[s->method].name));
    if (!s->structure.on) { // a shrink takes neither
        json_object_set_new(j, "sparsity", json_real(s->sparsity));
        json_object_set_new(j, "pattern", json_string(pat));
    }
    json_object_set_new(j, "scope", json_string(scope_names[s->scope]));
    json_object_set_new(j, "norm", json_string(norm_names[s->norm]));
    json_object_set_new(j, "targets", regex_array(s->targets, s->n_targets));
    json_object_set_new(j, "ignore", regex_array(s->ignore, s->n_ignore));
    json_t *ov = json_array();
    for (size_t i = 0; i < s->n_overrides; i++) {
        const eng_override *o = &s->overrides[i];
        json_t *x = json_pack("{s:s}", "match", o->match.text);
        if (o->has_sparsity)
            json_object_set_new(x, "sparsity", json_real(o->sparsity));
        if (o->has_pattern) {
            eng_pattern_format(pat, sizeof pat, o->pattern);
            json_object_set_new(x, "pattern", json_string(pat));
        }
        if (o->has_quant)
            json_object_set_new(x, "quantize", quant_json(&o->quant));
        json_array_append_new(ov, x);
    }
    json_object_set_new(j, "overrides", ov);
    json_object_set_new(j, "seed", json_integer((json_int_t)s->seed));
    json_t *cal = json_null();
    if (s->calib_dataset) {
        cal = json_pack("{s:s}", "dataset", s->calib_dataset);
        json_object_set_new(cal, "samples",
                            s->calib_samples > 0
                                ? json_integer((json_int_t)s->calib_samples)
                                : json_null()); // null: every row
    }
    json_object_set_new(j, "calibration", cal);
    json_object_set_new(j, "evaluation",
                        s->eval_dataset
                            ? json_pack("{s:s}", "dataset", s->eval_dataset)
                            : json_null());
    if (s->base)
        json_object_set_new(j, "base", json_string(s->base));
    if (s->scores)
        json_object_set_new(j, "scores", json_string(s->scores));
    if (eng_methods[s->method].options) // the solver's
        json_object_set_new(j, eng_methods[s->method].options,
                            json_pack("{s:i, s:f}", "blocksize",
                                      s->sgpt_blocksize, "damp", s->sgpt_damp));
    json_object_set_new(
        j, "output",
        json_pack("{s:s, s:b, s:s}", "format", format_names[s->format], "masks",
                  s->masks, "sparse_format", sparse_names[s->sparse_format]));
    if (s->quant.bits)
        json_object_set_new(j, "quantize", quant_json(&s->quant));
    json_object_set_new(j, "preserve_zeros", json_boolean(s->preserve_zeros));
    json_t *al = NULL;
    if (s->alloc.kind == ENG_ALLOC_UNIFORM)
        al = json_string("uniform");
    else if (s->alloc.kind == ENG_ALLOC_OWL)
        al = json_pack("{s:s, s:f, s:f}", "method", "owl", "m", s->alloc.m,
                       "lambda", s->alloc.lambda);
    else if (s->alloc.kind == ENG_ALLOC_SENSITIVITY)
        al = json_pack("{s:s, s:s, s:f, s:f}", "method", "sensitivity", "from",
                       s->alloc.from, "min", s->alloc.min, "max", s->alloc.max);
    if (json_is_object(al) && s->alloc.n_patterns) {
        json_t *pl = json_array();
        for (size_t i = 0; i < s->alloc.n_patterns; i++) {
            eng_pattern_format(pat, sizeof pat, s->alloc.patterns[i]);
            json_array_append_new(pl, json_string(pat));
        }
        json_object_set_new(al, "patterns", pl);
    }
    json_object_set_new(j, "allocation", al);
    const eng_structure *st = &s->structure;
    if (st->on)
        json_object_set_new(
            j, "structure",
            json_pack("{s:f, s:f, s:f, s:I, s:f, s:I, s:b, s:s}", "heads",
                      st->heads, "kv_heads", st->kv_heads, "channels",
                      st->channels, "blocks", (json_int_t)st->blocks, "neurons",
                      st->neurons, "multiple_of", (json_int_t)st->multiple_of,
                      "compensate", st->compensate, "blocks_by",
                      blocks_by_names[st->blocks_by]));
    json_object_set_new(
        j, "report",
        json_pack("{s:o}", "recon_error",
                  s->recon == ENG_RECON_SAMPLE
                      ? json_string("sample")
                      : json_boolean(s->recon == ENG_RECON_FULL)));
    if (s->kind == ENG_KIND_SWEEP) {
        json_t *ms = json_array(), *lv = json_array();
        for (size_t i = 0; i < s->sweep.n_methods; i++)
            json_array_append_new(
                ms, json_string(eng_methods[s->sweep.methods[i]].name));
        for (size_t i = 0; i < s->sweep.n_levels; i++)
            json_array_append_new(lv, json_real(s->sweep.levels[i]));
        json_object_set_new(j, "kind", json_string("sweep"));
        json_object_set_new(
            j, "sweep", json_pack("{s:o, s:o}", "methods", ms, "levels", lv));
    }
    // A prune says nothing of its kind: its manifests stay as they were.
    if (s->kind == ENG_KIND_SENSITIVITY) {
        json_t *lv = json_array();
        for (size_t i = 0; i < s->sens.n_levels; i++)
            json_array_append_new(lv, json_real(s->sens.levels[i]));
        json_object_set_new(j, "kind", json_string(kind_names[s->kind]));
        json_object_set_new(j, "sensitivity",
                            json_pack("{s:o, s:s}", "levels", lv, "granularity",
                                      gran_names[s->sens.granularity]));
    }
    return j;
}

size_t eng_sweep_points(const eng_spec *s)
{
    size_t nm = s->sweep.n_methods ? s->sweep.n_methods : 1,
           nl = s->sweep.n_levels ? s->sweep.n_levels : 1;
    return s->kind == ENG_KIND_SWEEP ? nm * nl : 0;
}

eng_spec eng_sweep_point(const eng_spec *s, size_t i)
{
    size_t nl = s->sweep.n_levels ? s->sweep.n_levels : 1;
    eng_spec p = *s;
    p.kind = ENG_KIND_PRUNE;
    p.sweep = (eng_sweep_spec){0};
    if (s->sweep.n_methods)
        p.method = s->sweep.methods[i / nl];
    if (s->sweep.n_levels)
        p.sparsity = s->sweep.levels[i % nl];
    p.recon = ENG_RECON_OFF; // a point's figure is its metric
    // The base and the scores belong to the points of their methods.
    if (p.method != ENG_METHOD_MOVEMENT)
        p.base = NULL;
    if (p.method != ENG_METHOD_SCORES)
        p.scores = NULL;
    return p;
}

// share.c: a spec against a model's tensors: which tensors are targets and
// with what share of the spec (eng_spec_share), and the spec's check
// against them (eng_spec_check). Parsing is spec.c's.
#include "engine/jobspec/spec.h"

#include "common/util.h"
#include "engine/io/model.h"
#include "engine/methods/method.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

// Names, norms and embeddings are not pruned by default.
static const char default_exclude[] =
    "(^|\\.)(lm_head|wte|wpe)\\.|embed|norm|(^|\\.)ln_[^.]*\\.";

// The kinds of a pattern set, in words ("unstructured, N:M").
static void pattern_kinds(char *buf, size_t size, unsigned bits)
{
    static const char *const kinds[ENG_PATTERN_KIND_COUNT] = {
        [ENG_PATTERN_UNSTRUCTURED] = "unstructured",
        [ENG_PATTERN_NM] = "N:M",
        [ENG_PATTERN_ROWS] = "rows",
    };
    const char *which[ENG_PATTERN_KIND_COUNT];
    size_t n = 0;
    for (int k = 0; k < ENG_PATTERN_KIND_COUNT; k++)
        if (bits & ENG_PATTERN_BIT(k))
            which[n++] = kinds[k];
    sh_join(buf, size, which, n, ", ");
}

static eng_regex default_exclude_re;
static int default_exclude_rc = SH_ENOMEM;
static pthread_once_t default_exclude_once = PTHREAD_ONCE_INIT;

static void default_exclude_compile(void)
{
    default_exclude_rc = eng_regex_compile(&default_exclude_re, default_exclude,
                                           "default targets", NULL);
}

// Compiled once per process (matching a compiled pattern is thread-safe).
static int default_target(const eng_tensor_info *t)
{
    pthread_once(&default_exclude_once, default_exclude_compile);
    if (default_exclude_rc != 0)
        return default_exclude_rc;
    if (t->ndim < 2 || !sh_str_ends_with(t->name, ".weight"))
        return 0;
    int m = eng_regex_match(&default_exclude_re, t->name);
    return m < 0 ? m : !m;
}

// Matches one of a spec's regexes; a search the limits cut off is an error
// naming the field and the tensor.
static int match(const eng_regex *r, const char *field, size_t i,
                 const char *name, sh_diag *d)
{
    int m = eng_regex_match(r, name);
    if (m >= 0)
        return m;
    char f[64];
    snprintf(f, sizeof f, "%s[%zu]%s", field, i,
             strcmp(field, "overrides") == 0 ? ".match" : "");
    if (m == SH_ETOOBIG)
        return sh_diag_set(d, SH_ESPEC, f,
                           "%s: \"%s\" needs too many steps to match tensor "
                           "\"%.128s\"; simplify the pattern",
                           f, r->text, name);
    return sh_diag_set(d, m, f, "out of memory");
}

// The plan of one tensor, or an error when a regex cannot be matched.
static int plan_tensor(const eng_spec *s, const eng_tensor_info *t,
                       eng_share *out, sh_diag *d)
{
    *out = (eng_share){.target = false,
                       .sparsity = s->sparsity,
                       .pattern = s->pattern,
                       .quant = s->quant,
                       .override_index = -1};
    if (!eng_dtypes[t->dtype].prunable || t->numel == 0 || t->ndim == 0)
        return 0;
    int target = 0;
    if (s->n_targets == 0) {
        target = default_target(t);
        if (target < 0)
            return sh_diag_set(d, target, "targets",
                               "the default targets cannot be matched");
    } else {
        for (size_t i = 0; i < s->n_targets && target == 0; i++)
            target = match(&s->targets[i], "targets", i, t->name, d);
    }
    for (size_t i = 0; i < s->n_ignore && target == 1; i++) {
        int m = match(&s->ignore[i], "ignore", i, t->name, d);
        target = m < 0 ? m : !m;
    }
    if (target <= 0)
        return target;
    for (size_t i = 0; i < s->n_overrides; i++) {
        const eng_override *o = &s->overrides[i];
        int m = match(&o->match, "overrides", i, t->name, d);
        if (m < 0)
            return m;
        if (m == 0)
            continue;
        if (o->has_pattern)
            out->pattern = o->pattern;
        if (o->has_sparsity)
            out->sparsity = o->sparsity;
        else if (o->has_pattern && o->pattern.kind != ENG_PATTERN_NM &&
                 s->pattern.kind == ENG_PATTERN_NM)
            out->sparsity = s->sparsity;
        if (o->has_quant)
            out->quant = o->quant;
        out->override_index = (int)i;
        break;
    }
    out->target = true;
    return 0;
}

void eng_spec_share(const eng_spec *s, const eng_tensor_info *t, eng_share *out)
{
    // eng_spec_check ran the same matches on the same names: the limits
    // are counts of steps, so none can fail here that passed there.
    if (plan_tensor(s, t, out, NULL) != 0)
        out->target = false;
}

void eng_tensor_rows_cols(const eng_tensor_info *t, uint64_t *rows,
                          uint64_t *cols)
{
    if (t->ndim <= 1) {
        *rows = 1;
        *cols = t->numel;
        return;
    }
    *rows = (uint64_t)t->shape[0];
    *cols = t->shape[0] ? t->numel / (uint64_t)t->shape[0] : 0;
}

static int check(const eng_spec *s, const eng_tensor_info *const *tensors,
                 size_t n, const char *arch, bool runs, double deadline,
                 sh_diag *d)
{
    const eng_method_def *md = &eng_methods[s->method];
    size_t targets = 0;
    for (size_t i = 0; i < n; i++) {
        if (deadline > 0 && i % 1024 == 1023 && sh_time_mono() > deadline)
            return sh_diag_set(
                d, SH_ESPEC, "targets",
                "matching targets, ignore and overrides against the "
                "%zu tensors of the checkpoint takes too long; use "
                "fewer or simpler patterns",
                n);
        eng_share p;
        int rc = plan_tensor(s, tensors[i], &p, d);
        if (rc != 0)
            return rc;
        if (!p.target)
            continue;
        targets++;
        unsigned bit = ENG_PATTERN_BIT(p.pattern.kind);
        if (!s->structure.on && !(md->patterns & bit)) {
            char pat[32], can[128], others[128];
            eng_pattern_format(pat, sizeof pat, p.pattern);
            pattern_kinds(can, sizeof can, md->patterns);
            eng_methods_making(others, sizeof others, bit);
            return sh_diag_set(
                d, SH_ESPEC, "pattern",
                "%s prunes %s, not \"%s\" (tensor \"%s\"); for it "
                "use %s",
                md->name, can, pat, tensors[i]->name, others);
        }
        uint64_t rows, cols;
        eng_tensor_rows_cols(tensors[i], &rows, &cols);
        int64_t g = p.quant.group_size;
        if (p.quant.bits && g > 0 && cols % (uint64_t)g != 0)
            return sh_diag_set(
                d, SH_ESPEC,
                p.override_index >= 0 &&
                        s->overrides[p.override_index].has_quant
                    ? "overrides"
                    : "quantize.group_size",
                "quantize.group_size %lld must divide the input "
                "dimension of every target; tensor \"%s\" has %llu",
                (long long)g, tensors[i]->name, (unsigned long long)cols);
        if (s->sparse_format == ENG_SPARSE_24 &&
            !(p.pattern.kind == ENG_PATTERN_NM && p.pattern.n == 2 &&
              p.pattern.m == 4))
            return sh_diag_set(
                d, SH_ESPEC, "output.sparse_format",
                "sparse-24-bitmask stores two weights of every four: "
                "it needs pattern 2:4 on every target; tensor \"%s\" "
                "has another",
                tensors[i]->name);
        if (s->format == ENG_FORMAT_COMPRESSED && p.target &&
            s->scope == ENG_SCOPE_GLOBAL && !p.quant.bits)
            return sh_diag_set(
                d, SH_ESPEC, "output.format",
                "compressed-tensors stores each tensor's kept "
                "weights in a size fixed before writing; scope "
                "\"global\" decides the sizes only while pruning: "
                "use scope \"layer\" or output.format \"dense\"");
        if (p.pattern.kind != ENG_PATTERN_NM)
            continue;
        if (cols % (uint64_t)p.pattern.m != 0) {
            const char *field = p.override_index >= 0 ? "overrides" : "pattern";
            return sh_diag_set(
                d, SH_ESPEC, field,
                "pattern %d:%d needs the input dimension of every "
                "target to be a multiple of %d; tensor \"%s\" has "
                "%llu",
                p.pattern.n, p.pattern.m, p.pattern.m, tensors[i]->name,
                (unsigned long long)cols);
        }
    }
    if (targets == 0)
        return sh_diag_set(
            d, SH_ESPEC, s->n_targets ? "targets" : "ignore",
            "no tensor of the model is a target: check targets and "
            "ignore (the default targets are float .weight tensors "
            "of 2+ dimensions, not embeddings, norms or lm_head)");
    if (s->structure.on && !runs)
        return sh_diag_set(
            d, SH_ESPEC, "structure",
            "structures are defined by a model family the engine "
            "runs (mlp and the Llama family: llama, mistral, qwen2, "
            "with their config.json); \"%s\" is not one",
            arch);
    // Calibration and evaluation run the model forward.
    if (eng_methods[s->method].needs_calibration && !runs)
        return sh_diag_set(
            d, SH_ESPEC, "method",
            "method %s runs the model on calibration data; the "
            "engine cannot run this model (architecture \"%s\"; it "
            "runs mlp and the Llama family: llama, mistral, qwen2, "
            "with their config.json)",
            eng_methods[s->method].name, arch);
    if (s->calib_dataset && !runs)
        return sh_diag_set(d, SH_ESPEC, "calibration",
                           "calibration data needs a model the engine can run; "
                           "\"%s\" is not one",
                           arch);
    if (s->alloc.kind != ENG_ALLOC_UNIFORM && !runs)
        return sh_diag_set(
            d, SH_ESPEC, "allocation",
            "allocation %s groups the targets by the blocks of a "
            "model the engine runs; \"%s\" is not one",
            eng_alloc_name(s->alloc.kind), arch);
    if (s->eval_dataset && !runs)
        return sh_diag_set(
            d, SH_ESPEC, "evaluation",
            "evaluation needs a model the engine can run; \"%s\" "
            "is not one",
            arch);
    return 0;
}

int eng_spec_check(const eng_spec *s, const eng_tensor_info *const *tensors,
                   size_t n, const char *arch, bool runs, double deadline,
                   sh_diag *d)
{
    return check(s, tensors, n, arch, runs, deadline, d);
}

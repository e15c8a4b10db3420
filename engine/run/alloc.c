// alloc.c: per-block sparsities chosen for the user (spec "allocation"),
// written into an effective spec as overrides so that shears.json alone
// reproduces the run.
//
// OWL (Yin et al., ICML 2024): on the dense model, each block's layer
// outlier distribution D_b (the share of its targets' Wanda scores above m
// times their mean; run/calib.c measures it) is mapped linearly onto
// [0, 2 lambda] (the block with the fewest outliers at 0), and the block's
// density is that plus a constant making the parameter-weighted mean
// density 1 - target: more outliers, less pruning, every block within
// lambda of the target's neighbourhood. As the reference does, with the
// mean weighted by parameters so blocks of different sizes (an mlp's
// layers) keep the target overall.
#include "engine/run/run.h"

#include "engine/nets/net.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// "^name" with every character but letters, digits and '_' escaped; the
// whole name when exact ("$" at the end).
static json_t *anchored(const char *name, bool exact)
{
    size_t n = strlen(name);
    char *re = malloc(2 * n + 3), *p = re;
    if (!re)
        return NULL;
    *p++ = '^';
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                     (c >= '0' && c <= '9') || c == '_';
        if (!plain)
            *p++ = '\\';
        *p++ = c;
    }
    if (exact)
        *p++ = '$';
    *p = '\0';
    json_t *j = json_string(re);
    free(re);
    return j;
}

// The blocks' sparsities from their outlier ratios (see the top).
static void owl_levels(const eng_owl *w, size_t nb, double target,
                       double lambda, double *level)
{
    double lo = 1, hi = 0, total = 0, mean = 0;
    for (size_t b = 0; b < nb; b++) {
        if (!w->params[b])
            continue;
        lo = w->ratio[b] < lo ? w->ratio[b] : lo;
        hi = w->ratio[b] > hi ? w->ratio[b] : hi;
        total += (double)w->params[b];
    }
    for (size_t b = 0; b < nb; b++) {
        level[b] = hi > lo ? (w->ratio[b] - lo) / (hi - lo) * 2 * lambda : 0;
        mean += (double)w->params[b] * level[b] / (total > 0 ? total : 1);
    }
    for (size_t b = 0; b < nb; b++) {
        double density = level[b] - mean + (1 - target);
        level[b] = 1 - density;
        level[b] = level[b] < 0 ? 0 : level[b] > 1 ? 1 : level[b];
    }
}

int eng_allocate(const eng_model *m, const eng_spec *s, const eng_options *o,
                 const eng_hooks *h, eng_report *r, eng_spec *out, sh_diag *d)
{
    eng_plan plan = {0};
    eng_net *net = NULL;
    eng_owl w = {.m = s->alloc.m};
    double *level = NULL;
    json_t *j = NULL, *blocks = json_array(), *ovs = json_array();
    int rc = eng_plan_build(&plan, s, m, d);
    if (rc == 0)
        rc = eng_net_open(&net, m, d);
    size_t nb = rc == 0 ? eng_net_blocks(net) : 0;
    if (rc == 0 &&
        (!(w.ratio = calloc(nb + 1, sizeof *w.ratio)) ||
         !(w.params = calloc(nb + 1, sizeof *w.params)) ||
         !(level = calloc(nb + 1, sizeof *level)) || !blocks || !ovs))
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    if (rc == 0) {
        eng_hooks_progress(h, &(eng_progress){.phase = "allocating",
                                              .stage = "statistics",
                                              .steps = 1});
        rc = eng_owl_ratios(&plan, o, h, r, &w, d);
    }
    if (rc == 0)
        owl_levels(&w, nb, s->sparsity, s->alloc.lambda, level);
    // One override a block: its prefix where the family names one, else
    // its targets by name.
    for (size_t b = 0; rc == 0 && b < nb; b++) {
        if (!w.params[b])
            continue;
        json_array_append_new(
            blocks, json_pack("{s:I, s:f, s:I, s:f}", "index", (json_int_t)b,
                              "outlier_ratio", w.ratio[b], "params",
                              (json_int_t)w.params[b], "sparsity", level[b]));
        char prefix[256];
        const eng_net_linear *lin;
        size_t nl = eng_net_linears(net, b, &lin);
        if (eng_net_block_prefix(net, b, prefix, sizeof prefix)) {
            json_array_append_new(ovs, json_pack("{s:o, s:f}", "match",
                                                 anchored(prefix, false),
                                                 "sparsity", level[b]));
            continue;
        }
        for (size_t i = 0; i < nl; i++)
            if (plan.rows[lin[i].tensor].share.target)
                json_array_append_new(
                    ovs,
                    json_pack("{s:o, s:f}", "match",
                              anchored(eng_model_tensor(m, lin[i].tensor)->name,
                                       true),
                              "sparsity", level[b]));
    }
    if (rc == 0 && json_array_size(ovs) > ENG_SPEC_MAX_OVERRIDES)
        rc = sh_diag_set(d, SH_ESPEC, "allocation",
                         "allocation owl would write %zu overrides, more "
                         "than the %d a spec holds",
                         json_array_size(ovs), ENG_SPEC_MAX_OVERRIDES);
    if (rc == 0) {
        j = eng_spec_to_json(s);
        json_object_set(j, "overrides", ovs);
        json_object_set_new(j, "allocation", json_string("uniform"));
        rc = eng_spec_parse(out, j, d);
        if (rc != 0)
            sh_diag_prefix(d, "the allocated spec");
    }
    if (rc == 0) {
        json_decref(r->allocation);
        r->allocation = json_pack(
            "{s:s, s:f, s:f, s:O}", "method", eng_alloc_name(s->alloc.kind),
            "m", s->alloc.m, "lambda", s->alloc.lambda, "blocks", blocks);
    }
    json_decref(j);
    json_decref(blocks);
    json_decref(ovs);
    free(w.ratio);
    free(w.params);
    free(level);
    eng_net_close(net);
    eng_plan_deinit(&plan);
    return rc;
}

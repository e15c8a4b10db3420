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

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// A literal regex as a JSON string (eng_regex_literal), NULL when out of
// memory.
static json_t *literal(const char *text, bool head, bool tail)
{
    char *re = eng_regex_literal(text, head, tail);
    json_t *j = re ? json_string(re) : NULL;
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

// OWL with N:M (spec allocation.patterns): each block takes the allowed
// pattern nearest its level; then, while it brings the weighted mean
// nearer the target, one block moves to the next pattern down (or up):
// the one whose level is farthest below (above) its pattern's sparsity.
// pat[b] is an index into the allowed patterns by rising sparsity (ord).
static double pattern_sparsity(const eng_pattern *p)
{
    return 1.0 - (double)p->n / (double)p->m;
}

static void owl_patterns(const eng_spec *s, const eng_owl *w, size_t nb,
                         const double *level, size_t *ord, size_t *pat)
{
    const eng_pattern *ps = s->alloc.patterns;
    size_t np = s->alloc.n_patterns;
    for (size_t i = 0; i < np; i++) { // by rising sparsity
        size_t j = i;
        for (; j > 0 &&
               pattern_sparsity(&ps[ord[j - 1]]) > pattern_sparsity(&ps[i]);
             j--)
            ord[j] = ord[j - 1];
        ord[j] = i;
    }
    // Patterns of one sparsity (2:4, 4:8): the first listed stands for all.
    size_t kept = 0;
    for (size_t i = 0; i < np; i++)
        if (kept == 0 || pattern_sparsity(&ps[ord[i]]) !=
                             pattern_sparsity(&ps[ord[kept - 1]]))
            ord[kept++] = ord[i];
    np = kept;
    double total = 0, mean = 0;
    for (size_t b = 0; b < nb; b++) {
        size_t best = 0;
        for (size_t k = 1; k < np; k++)
            if (fabs(pattern_sparsity(&ps[ord[k]]) - level[b]) <
                fabs(pattern_sparsity(&ps[ord[best]]) - level[b]))
                best = k;
        pat[b] = best;
        total += (double)w->params[b];
    }
    for (size_t b = 0; total > 0 && b < nb; b++)
        mean +=
            (double)w->params[b] * pattern_sparsity(&ps[ord[pat[b]]]) / total;
    for (;;) {
        int dir = mean > s->sparsity ? -1 : 1;
        size_t pick = nb;
        double want = 0;
        for (size_t b = 0; b < nb; b++) {
            if (!w->params[b] || (dir < 0 && pat[b] == 0) ||
                (dir > 0 && pat[b] + 1 == np))
                continue;
            double gap = (pattern_sparsity(&ps[ord[pat[b]]]) - level[b]) *
                         -dir; // how far it is from where it would go
            if (pick == nb || gap > want) {
                pick = b;
                want = gap;
            }
        }
        if (pick == nb)
            break;
        size_t nxt = (size_t)((long)pat[pick] + dir);
        double moved = mean + (double)w->params[pick] *
                                  (pattern_sparsity(&ps[ord[nxt]]) -
                                   pattern_sparsity(&ps[ord[pat[pick]]])) /
                                  total;
        if (!(fabs(moved - s->sparsity) < fabs(mean - s->sparsity)))
            break;
        pat[pick] = nxt;
        mean = moved;
    }
}

// OWL's overrides into ovs, and how they were chosen into *how.
static int owl_overrides(const eng_plan *plan, eng_net *net, const eng_spec *s,
                         const eng_options *o, const eng_hooks *h,
                         eng_report *r, json_t *ovs, json_t **how, sh_diag *d)
{
    const eng_model *m = plan->m;
    eng_owl w = {.m = s->alloc.m};
    double *level = NULL;
    json_t *blocks = json_array();
    size_t nb = eng_net_blocks(net), *pat = NULL,
           ord[ENG_ALLOC_MAX_PATTERNS] = {0};
    int rc = 0;
    if (!(w.ratio = calloc(nb + 1, sizeof *w.ratio)) ||
        !(w.params = calloc(nb + 1, sizeof *w.params)) ||
        !(level = calloc(nb + 1, sizeof *level)) ||
        !(pat = calloc(nb + 1, sizeof *pat)) || !blocks)
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    if (rc == 0) {
        eng_hooks_progress(h, &(eng_progress){.phase = "allocating",
                                              .stage = "statistics",
                                              .steps = 1});
        rc = eng_owl_ratios(plan, o, h, r, &w, d);
    }
    if (rc == 0)
        owl_levels(&w, nb, s->sparsity, s->alloc.lambda, level);
    if (rc == 0 && s->alloc.n_patterns)
        owl_patterns(s, &w, nb, level, ord, pat);
    // One override a block: its prefix where the family names one, else
    // its targets by name.
    for (size_t b = 0; rc == 0 && b < nb; b++) {
        if (!w.params[b])
            continue;
        // The block's level, or its pattern (which sets its sparsity).
        json_t *at = json_real(level[b]);
        const char *key = "sparsity";
        char pname[16] = "";
        if (s->alloc.n_patterns) {
            const eng_pattern *pt = &s->alloc.patterns[ord[pat[b]]];
            eng_pattern_format(pname, sizeof pname, *pt);
            json_decref(at);
            at = json_string(pname);
            key = "pattern";
        }
        json_t *row = json_pack("{s:I, s:f, s:I, s:f}", "index", (json_int_t)b,
                                "outlier_ratio", w.ratio[b], "params",
                                (json_int_t)w.params[b], "sparsity", level[b]);
        if (pname[0])
            json_object_set_new(row, "pattern", json_string(pname));
        json_array_append_new(blocks, row);
        char prefix[256];
        const eng_net_linear *lin;
        size_t nl = eng_net_linears(net, b, &lin);
        if (eng_net_block_prefix(net, b, prefix, sizeof prefix)) {
            json_array_append_new(ovs, json_pack("{s:o, s:O}", "match",
                                                 literal(prefix, true, false),
                                                 key, at));
            json_decref(at);
            continue;
        }
        for (size_t i = 0; i < nl; i++)
            if (plan->rows[lin[i].tensor].share.target)
                json_array_append_new(
                    ovs,
                    json_pack("{s:o, s:O}", "match",
                              literal(eng_model_tensor(m, lin[i].tensor)->name,
                                      true, true),
                              key, at));
        json_decref(at);
    }
    if (rc == 0)
        *how =
            json_pack("{s:s, s:f, s:f, s:O}", "method", "owl", "m", s->alloc.m,
                      "lambda", s->alloc.lambda, "blocks", blocks);
    json_decref(blocks);
    free(w.ratio);
    free(w.params);
    free(level);
    free(pat);
    return rc;
}

// A sensitivity curve: the loss (worse than dense, in the metric's sense)
// at each measured level, with (0, 0) first; linear between them.
typedef struct curve {
    const char *name;
    char *match;  // its override's regex: the group's name, literally
    eng_regex re; // the same, compiled
    double params;
    size_t n;
    double level[34], loss[34];
    double lo, hi, at; // the bounds and the level chosen
} curve;

static double loss_at(const curve *c, double x)
{
    size_t i = 1;
    while (i + 1 < c->n && c->level[i] < x)
        i++;
    double x0 = c->level[i - 1], x1 = c->level[i];
    double t = x1 > x0 ? (x - x0) / (x1 - x0) : 0;
    return c->loss[i - 1] + t * (c->loss[i] - c->loss[i - 1]);
}

#define SENS_STEP 0.005

// The report's curves, each group's level chosen greedily: from every
// group at its lower bound, the next step of SENS_STEP goes to the group
// whose predicted loss grows least per weight pruned, until the
// parameter-weighted mean reaches the target (the last step cut to hit
// it). On convex curves (each step costs at least the one before) this is
// the knapsack's optimum; measured curves are close to convex, and a
// greedy over them costs groups x target / step evaluations of a line.
static int sensitivity_overrides(const eng_plan *plan, const eng_spec *s,
                                 const eng_options *o, json_t *ovs,
                                 json_t **how, sh_diag *d)
{
    json_error_t err = {.text = ""};
    json_t *rep = o->sensitivity_report
                      ? json_deep_copy(o->sensitivity_report)
                      : json_load_file(s->alloc.from, 0, &err);
    if (!rep)
        return sh_diag_set(d, SH_ESPEC, "allocation.from",
                           "allocation.from: %s is not a sensitivity report "
                           "(%s)",
                           s->alloc.from, err.text);
    const char *gran = json_string_value(json_object_get(rep, "granularity"));
    const char *metric = json_string_value(json_object_get(rep, "metric"));
    json_t *groups = json_object_get(rep, "groups");
    double dense = json_number_value(json_object_get(rep, "dense"));
    size_t ng = json_array_size(groups);
    curve *cs = calloc(ng ? ng : 1, sizeof *cs);
    json_t *chosen = json_array();
    int rc = 0;
    if (!gran || !metric || !ng || !cs || !chosen)
        rc = sh_diag_set(d, SH_ESPEC, "allocation.from",
                         "allocation.from: %s has no granularity, metric or "
                         "groups: not a sensitivity report",
                         s->alloc.from);
    // Perplexity: higher is worse; accuracy: lower is.
    double sign = metric && strcmp(metric, "accuracy") == 0 ? -1 : 1;
    double total = 0, goal = 0;
    for (size_t k = 0; rc == 0 && k < ng; k++) {
        json_t *g = json_array_get(groups, k),
               *pts = json_object_get(g, "points");
        curve *c = &cs[k];
        c->name = json_string_value(json_object_get(g, "group"));
        c->params = (double)json_integer_value(json_object_get(g, "params"));
        c->n = 1; // (0, 0)
        size_t i;
        json_t *p;
        json_array_foreach (pts, i, p) {
            double lv = json_number_value(json_object_get(p, "level"));
            if (c->n == 34 || !(lv > c->level[c->n - 1]))
                break;
            c->level[c->n] = lv;
            c->loss[c->n++] =
                sign *
                (json_number_value(json_object_get(p, "metric")) - dense);
        }
        if (!c->name || c->params <= 0 || c->n < 2 ||
            c->n != json_array_size(pts) + 1) {
            rc = sh_diag_set(d, SH_ESPEC, "allocation.from",
                             "allocation.from: group %zu of %s is not a "
                             "curve of rising levels",
                             k, s->alloc.from);
            break;
        }
        // A block is a name prefix, a type a suffix, a tensor a name.
        bool block = strcmp(gran, "block") == 0,
             type = strcmp(gran, "type") == 0;
        if (!(c->match = eng_regex_literal(c->name, !type, !block))) {
            rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
            break;
        }
        if ((rc = eng_regex_compile(&c->re, c->match, "allocation.from", d)))
            break;
        c->lo = s->alloc.min;
        c->hi = s->alloc.max < c->level[c->n - 1] ? s->alloc.max
                                                  : c->level[c->n - 1];
        c->at = c->lo;
        total += c->params;
        goal += c->lo * c->params;
    }
    double target = s->sparsity * total, room = 0;
    for (size_t k = 0; rc == 0 && k < ng; k++)
        room += cs[k].hi * cs[k].params;
    if (rc == 0 && (goal > target + 0.5 || room < target - 0.5))
        rc = sh_diag_set(d, SH_ESPEC, "allocation",
                         "the bounds make the target impossible: the groups "
                         "reach %.4f to %.4f of their weights (allocation.min, "
                         "allocation.max and the report's highest levels), "
                         "the target is %.4f",
                         goal / total, room / total, s->sparsity);
    while (rc == 0 && goal < target - 1e-9) {
        size_t best = ng;
        double best_cost = 0;
        for (size_t k = 0; k < ng; k++) {
            curve *c = &cs[k];
            if (c->at >= c->hi - 1e-12)
                continue;
            double nx = c->at + SENS_STEP < c->hi ? c->at + SENS_STEP : c->hi;
            double cost = (loss_at(c, nx) - loss_at(c, c->at)) /
                          ((nx - c->at) * c->params);
            if (best == ng || cost < best_cost) {
                best = k;
                best_cost = cost;
            }
        }
        curve *c = &cs[best];
        double nx = c->at + SENS_STEP < c->hi ? c->at + SENS_STEP : c->hi;
        if (goal + (nx - c->at) * c->params > target)
            nx = c->at + (target - goal) / c->params;
        goal += (nx - c->at) * c->params;
        c->at = nx;
    }
    // Every target must fall in a group.
    for (size_t i = 0; rc == 0 && i < plan->n; i++) {
        if (!plan->rows[i].share.target)
            continue;
        const char *name = eng_model_tensor(plan->m, i)->name;
        bool found = false;
        for (size_t k = 0; k < ng && !found; k++)
            found = eng_regex_match(&cs[k].re, name) == 1;
        if (!found)
            rc = sh_diag_set(d, SH_ESPEC, "allocation.from",
                             "allocation.from: target \"%s\" is in no group "
                             "of %s (a report of another checkpoint or "
                             "targets?)",
                             name, s->alloc.from);
    }
    for (size_t k = 0; rc == 0 && k < ng; k++) {
        curve *c = &cs[k];
        json_array_append_new(
            ovs, json_pack("{s:s, s:f}", "match", c->match, "sparsity", c->at));
        json_array_append_new(
            chosen, json_pack("{s:s, s:f, s:f, s:f}", "group", c->name,
                              "params", c->params, "sparsity", c->at,
                              "predicted_loss", loss_at(c, c->at)));
    }
    if (rc == 0)
        *how =
            json_pack("{s:s, s:s, s:s, s:f, s:f, s:O}", "method", "sensitivity",
                      "from", s->alloc.from, "granularity", gran, "min",
                      s->alloc.min, "max", s->alloc.max, "groups", chosen);
    for (size_t k = 0; cs && k < ng; k++) {
        free(cs[k].match);
        eng_regex_free(&cs[k].re);
    }
    free(cs);
    json_decref(chosen);
    json_decref(rep);
    return rc;
}

int eng_allocate(const eng_model *m, const eng_spec *s, const eng_options *o,
                 const eng_hooks *h, eng_report *r, eng_spec *out, sh_diag *d)
{
    eng_plan plan = {0};
    eng_net *net = NULL;
    json_t *j = NULL, *how = NULL, *ovs = json_array();
    int rc = ovs ? eng_plan_build(&plan, s, m, d)
                 : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    if (rc == 0 && s->alloc.kind == ENG_ALLOC_OWL &&
        (rc = eng_net_open(&net, m, d)) == 0)
        rc = owl_overrides(&plan, net, s, o, h, r, ovs, &how, d);
    else if (rc == 0)
        rc = sensitivity_overrides(&plan, s, o, ovs, &how, d);
    if (rc == 0 && json_array_size(ovs) > ENG_SPEC_MAX_OVERRIDES)
        rc = sh_diag_set(d, SH_ESPEC, "allocation",
                         "allocation %s would write %zu overrides, more "
                         "than the %d a spec holds",
                         eng_alloc_name(s->alloc.kind), json_array_size(ovs),
                         ENG_SPEC_MAX_OVERRIDES);
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
        r->allocation = how;
        how = NULL;
    }
    json_decref(how);
    json_decref(j);
    json_decref(ovs);
    eng_net_close(net);
    eng_plan_deinit(&plan);
    return rc;
}

// sensitivity.c: each group of targets pruned alone at each level, the
// model measured each time (engine.h: eng_sensitivity).
//
// A run is the base spec with two overrides: the group's tensors at the
// level, every other target at 0 (which no method changes: nothing is
// pruned, and SparseGPT's update moves nothing without an error). The
// dense metric is measured once; each run measures only its output, and
// its folder is emptied for the next.
#include "engine/run/run.h"

#include "common/util.h"
#include "engine/nets/net.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const gran_names[ENG_GRAN_COUNT] = {
    [ENG_GRAN_TENSOR] = "tensor",
    [ENG_GRAN_BLOCK] = "block",
    [ENG_GRAN_TYPE] = "type",
};

typedef struct group {
    char name[256];
    char *match; // its overrides' regex
    size_t tensors;
    uint64_t params;
} group;

// The groups of the plan's targets, in first-seen order.
static int make_groups(const eng_plan *p, eng_net *net, eng_granularity g,
                       group **out, size_t *n, sh_diag *d)
{
    group *gs = calloc(p->n ? p->n : 1, sizeof *gs);
    if (!gs)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (!p->rows[i].share.target)
            continue;
        const eng_tensor_info *t = eng_model_tensor(p->m, i);
        char name[256], prefix[256] = "";
        size_t block = 0, lin = 0;
        bool in_block = eng_net_find_linear(net, i, &block, &lin) &&
                        eng_net_block_prefix(net, block, prefix, sizeof prefix);
        bool head = true, tail = true;
        if (g == ENG_GRAN_BLOCK && in_block) {
            snprintf(name, sizeof name, "%s", prefix);
            tail = false;
        } else if (g == ENG_GRAN_TYPE && in_block) { // the name past it
            snprintf(name, sizeof name, "%s", t->name + strlen(prefix));
            head = false;
        } else {
            snprintf(name, sizeof name, "%s", t->name);
        }
        size_t j = 0;
        while (j < k && strcmp(gs[j].name, name) != 0)
            j++;
        if (j == k) {
            snprintf(gs[k].name, sizeof gs[k].name, "%s", name);
            if (!(gs[k].match = eng_regex_literal(name, head, tail))) {
                *out = gs;
                *n = k;
                return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
            }
            k++;
        }
        gs[j].tensors++;
        gs[j].params += t->numel;
    }
    *out = gs;
    *n = k;
    return 0;
}

// One run: the group at level, the rest at 0; *metric from the output.
static int one_run(const eng_model *m, json_t *spec, const group *gr,
                   double level, const eng_options *o, const eng_hooks *h,
                   double *metric, sh_diag *d)
{
    json_object_set_new(spec, "overrides",
                        json_pack("[{s:s, s:f}, {s:s, s:f}]", "match",
                                  gr->match, "sparsity", level, "match", ".",
                                  "sparsity", 0.0));
    eng_spec s;
    int rc = eng_spec_parse(&s, spec, d);
    if (rc != 0)
        return rc;
    eng_report r;
    eng_report_init(&r, &s);
    eng_options ro = *o;
    ro.pruned_metric_only = true;
    ro.sync = false;
    ro.input_sha = NULL;
    rc = eng_prune(m, &s, &ro, h, &r, d);
    *metric = r.metric_pruned;
    eng_report_deinit(&r);
    eng_spec_deinit(&s);
    // Empty the scratch folder for the next run.
    sh_rm_rf(o->out_dir);
    if (rc == 0 && sh_mkdir_p(o->out_dir) != 0)
        rc = sh_diag_set(d, SH_EIO, "", "cannot recreate %s", o->out_dir);
    return rc;
}

int eng_sensitivity(const eng_model *m, const eng_spec *base,
                    const eng_options *o, eng_granularity g,
                    const double *levels, size_t n_levels, int shard,
                    int shards, const eng_hooks *h, json_t **out, sh_diag *d)
{
    if (shards < 1 || shard < 0 || shard >= shards)
        return sh_diag_set(d, SH_ESPEC, "shard",
                           "shard %d of %d: the index must be from 0 to the "
                           "count less one",
                           shard, shards);
    double t0 = sh_time_mono();
    if (!o->evaluation_path)
        return sh_diag_set(d, SH_ESPEC, "evaluation",
                           "a sensitivity sweep measures every run: give an "
                           "evaluation dataset");
    if (base->n_overrides || base->structure.on ||
        base->alloc.kind != ENG_ALLOC_UNIFORM || base->scope != ENG_SCOPE_LAYER)
        return sh_diag_set(d, SH_ESPEC, "spec",
                           "a sensitivity sweep sets each group's sparsity "
                           "itself: no overrides, structure, allocation or "
                           "global scope");
    for (size_t i = 0; i < n_levels; i++)
        if (!(levels[i] > 0 && levels[i] < 1))
            return sh_diag_set(d, SH_ESPEC, "levels",
                               "levels must be fractions strictly between 0 "
                               "and 1; %g is not",
                               levels[i]);
    eng_plan p = {0};
    eng_net *net = NULL;
    group *gs = NULL;
    size_t ng = 0;
    json_t *spec = NULL, *groups = json_array(), *res = NULL;
    eng_metric dense = {0};
    int rc = eng_check(base, m, 0, NULL, d);
    if (rc == 0)
        rc = eng_plan_build(&p, base, m, d);
    if (rc == 0)
        rc = eng_net_open(&net, m, d);
    if (rc == 0)
        rc = make_groups(&p, net, g, &gs, &ng, d);
    if (rc == 0)
        rc = eng_measure(m, o->evaluation_path, h, &dense, NULL, d);
    if (rc == 0) {
        spec = eng_spec_to_json(base);
        json_object_del(spec, "allocation");
    }
    size_t runs = 0, total = 0, seq = 0;
    for (size_t r = 0; r < ng * n_levels; r++)
        total += r % (size_t)shards == (size_t)shard;
    double first = 0;
    for (size_t k = 0; rc == 0 && k < ng; k++) {
        json_t *pts = json_array();
        for (size_t l = 0; rc == 0 && l < n_levels; l++) {
            if (seq++ % (size_t)shards != (size_t)shard)
                continue; // another shard's
            eng_hooks_progress(h, &(eng_progress){.phase = "sensitivity",
                                                  .stage = gs[k].name,
                                                  .step = runs,
                                                  .steps = total});
            double t1 = sh_time_mono(), v = NAN;
            rc = one_run(m, spec, &gs[k], levels[l], o, h, &v, d);
            if (runs++ == 0)
                first = sh_time_mono() - t1;
            if (rc == 0)
                json_array_append_new(pts, json_pack("{s:f, s:f, s:f}", "level",
                                                     levels[l], "metric", v,
                                                     "delta", v - dense.value));
        }
        json_array_append_new(
            groups, json_pack("{s:s, s:I, s:I, s:o}", "group", gs[k].name,
                              "tensors", (json_int_t)gs[k].tensors, "params",
                              (json_int_t)gs[k].params, "points", pts));
    }
    if (rc == 0) {
        json_t *lv = json_array();
        for (size_t l = 0; l < n_levels; l++)
            json_array_append_new(lv, json_real(levels[l]));
        res = json_pack(
            "{s:s, s:s, s:s, s:f, s:o, s:O, s:I, s:f, s:f}", "method",
            eng_methods[base->method].name, "granularity", gran_names[g],
            "metric", dense.name, "dense", dense.value, "levels", lv, "groups",
            groups, "evaluations", (json_int_t)(runs + 1), "first_run_seconds",
            first, "seconds", sh_time_mono() - t0);
        if (shards > 1)
            json_object_set_new(
                res, "shard",
                json_pack("{s:i, s:i}", "index", shard, "count", shards));
        *out = res;
    }
    for (size_t k = 0; k < ng; k++)
        free(gs[k].match);
    free(gs);
    json_decref(spec);
    json_decref(groups);
    eng_net_close(net);
    eng_plan_deinit(&p);
    return rc;
}

// The fields every shard must agree on.
static const char *const same[] = {"method", "granularity", "metric",
                                   "dense",  "levels",      NULL};

int eng_sensitivity_merge(json_t *const *parts, size_t n, json_t **out,
                          sh_diag *d)
{
    if (n == 0)
        return sh_diag_set(d, SH_EINVAL, "", "no shards to merge");
    const json_t *p0 = parts[0];
    json_t *shard0 = json_object_get(p0, "shard");
    size_t count = (size_t)json_integer_value(json_object_get(shard0, "count"));
    if (count != n)
        return sh_diag_set(d, SH_EINVAL, "",
                           "%zu parts given, the shards say %zu", n, count);
    bool *seen = calloc(n, sizeof *seen);
    if (!seen)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    int rc = 0;
    double seconds = 0;
    json_int_t evals = 1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        json_t *sh = json_object_get(parts[i], "shard");
        json_int_t idx = json_integer_value(json_object_get(sh, "index"));
        if ((size_t)json_integer_value(json_object_get(sh, "count")) != n ||
            idx < 0 || (size_t)idx >= n || seen[idx])
            rc =
                sh_diag_set(d, SH_EINVAL, "",
                            "part %zu is not one of %zu distinct shards", i, n);
        else
            seen[idx] = true;
        for (int k = 0; rc == 0 && same[k]; k++)
            if (!json_equal(json_object_get(parts[i], same[k]),
                            json_object_get(p0, same[k])))
                rc = sh_diag_set(d, SH_EINVAL, same[k],
                                 "part %zu differs from the first in \"%s\": "
                                 "shards of another sweep",
                                 i, same[k]);
        seconds += json_number_value(json_object_get(parts[i], "seconds"));
        evals +=
            json_integer_value(json_object_get(parts[i], "evaluations")) - 1;
    }
    free(seen);
    json_t *levels = json_object_get(p0, "levels");
    json_t *groups = json_array();
    json_t *g0 = json_object_get(p0, "groups");
    for (size_t k = 0; rc == 0 && k < json_array_size(g0); k++) {
        json_t *g = json_array_get(g0, k), *pts = json_array();
        for (size_t l = 0; rc == 0 && l < json_array_size(levels); l++) {
            double lv = json_number_value(json_array_get(levels, l));
            json_t *found = NULL;
            for (size_t i = 0; rc == 0 && i < n; i++) {
                json_t *gi =
                    json_array_get(json_object_get(parts[i], "groups"), k);
                if (!json_equal(json_object_get(gi, "group"),
                                json_object_get(g, "group"))) {
                    rc = sh_diag_set(d, SH_EINVAL, "groups",
                                     "part %zu lists other groups", i);
                    break;
                }
                size_t q;
                json_t *p;
                json_array_foreach (json_object_get(gi, "points"), q, p)
                    if (json_number_value(json_object_get(p, "level")) == lv) {
                        if (found)
                            rc = sh_diag_set(d, SH_EINVAL, "groups",
                                             "two shards measured one point");
                        found = p;
                    }
            }
            if (rc == 0 && !found)
                rc = sh_diag_set(
                    d, SH_EINVAL, "groups", "group \"%s\" at %g is in no part",
                    json_string_value(json_object_get(g, "group")), lv);
            if (rc == 0)
                json_array_append(pts, found);
        }
        if (rc != 0) {
            json_decref(pts);
            break;
        }
        json_t *m = json_deep_copy(g);
        json_object_set_new(m, "points", pts);
        json_array_append_new(groups, m);
    }
    if (rc == 0) {
        json_t *res = json_deep_copy(p0);
        json_object_del(res, "shard");
        json_object_set_new(res, "groups", groups);
        json_object_set_new(res, "evaluations", json_integer(evals));
        json_object_set_new(res, "seconds", json_real(seconds));
        *out = res;
    } else {
        json_decref(groups);
    }
    return rc;
}

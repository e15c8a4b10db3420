// sensitivity.c: each group of targets pruned alone at each level, the
// model measured each time (engine.h: eng_sensitivity).
//
// A run is the base spec with two overrides: the group's tensors at the
// level, every other target at 0 (which no method changes: nothing is
// pruned, and SparseGPT's update moves nothing without an error). The
// dense metric is measured once; each run measures only its output, and
// its folder is emptied for the next. A group inside one block is
// measured from that block on: the dense model's evaluation is carried
// forward block by block and the runs go in block order, so the blocks
// before a group run once for the whole sweep, not once a run (the
// output's earlier blocks are the dense model's bytes; the number is
// eng_net_evaluate's exactly). The calibration set's dense activations
// are carried forward the same way and lent to each run
// (eng_options.calib_prefix), whose calibrated pass then starts at the
// group's block, leaves the idle targets alone and stops after the
// group's block (calib.c). Groups that span blocks (types) measure the
// whole model; a base with a grid or preserve_zeros touches every target,
// so it reuses nothing.
#include "engine/run/run.h"

#include "common/util.h"
#include "engine/nets/net.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct group {
    char name[256];
    char *match; // its overrides' regex
    size_t tensors;
    uint64_t params;
    long block; // the block all its tensors are in, or -1
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
        bool found = eng_net_find_linear(net, i, &block, &lin);
        bool in_block =
            found && eng_net_block_prefix(net, block, prefix, sizeof prefix);
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
            gs[k].block = found ? (long)block : -1;
            if (!(gs[k].match = eng_regex_literal(name, head, tail))) {
                *out = gs;
                *n = k;
                return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
            }
            k++;
        }
        if (!found || gs[j].block != (long)block)
            gs[j].block = -1; // spans blocks (a type), or in none
        gs[j].tensors++;
        gs[j].params += t->numel;
    }
    *out = gs;
    *n = k;
    return 0;
}

// The dense model over a dataset, kept at one block's input: the runs of
// groups in block b (the blocks before it dense) start there, the earlier
// blocks run once for all of them. One for the evaluation set, one for the
// calibration set where the runs read it.
typedef struct prefix {
    eng_net *net; // the dense model
    eng_dataset ds;
    eng_acts at; // the input of `block` for ds's rows
    size_t block;
} prefix;

static int prefix_open(prefix *px, const eng_model *m, const char *path,
                       int64_t rows, const eng_hooks *h, sh_diag *d)
{
    int rc = eng_net_open(&px->net, m, d);
    if (rc == 0)
        rc = eng_dataset_load(&px->ds, path, rows, eng_net_vocab(px->net),
                              eng_net_classes(px->net), h, d);
    if (rc == 0)
        rc = eng_net_check_dataset(px->net, &px->ds.info, d);
    if (rc == 0)
        rc = eng_net_embed_polled(px->net, &px->ds, &px->at, h, d);
    return rc;
}

// Moves the prefix on to block b's input (never back).
static int prefix_to(prefix *px, size_t b, const eng_hooks *h, sh_diag *d)
{
    if (b <= px->block)
        return 0;
    int rc = eng_net_run_blocks(px->net, px->block, b, &px->at, h, d);
    px->block = b;
    return rc;
}

static void prefix_close(prefix *px)
{
    eng_acts_deinit(&px->at);
    eng_dataset_deinit(&px->ds);
    eng_net_close(px->net);
}

// The metric of the model in dir, measured from block b on.
static int measure_from(prefix *px, size_t b, const char *dir,
                        const eng_hooks *h, double *metric, sh_diag *d)
{
    int rc = prefix_to(px, b, h, d); // the dense model up to b, once
    eng_model *om = NULL;
    eng_net *on = NULL;
    eng_acts a = {0};
    eng_metric mt = {0};
    if (rc == 0)
        rc = eng_model_open(&om, dir, d);
    if (rc == 0)
        rc = eng_net_open(&on, om, d);
    if (rc == 0)
        rc = eng_acts_copy_polled(&a, &px->at, h, d);
    if (rc == 0)
        rc = eng_net_evaluate_from(on, &px->ds, b, &a, h, &mt, d);
    *metric = mt.value;
    eng_acts_deinit(&a);
    eng_net_close(on);
    eng_model_close(om);
    return rc;
}

static void subrun_progress(void *ctx, const eng_progress *p)
{
    const eng_subrun *w = ctx;
    double f = p->fraction > 0 && p->fraction <= 1 ? p->fraction : 0;
    eng_hooks_progress(
        w->outer,
        &(eng_progress){.phase = w->phase,
                        .stage = p->phase,
                        .tensor = w->label,
                        .step = w->step,
                        .steps = w->steps,
                        .fraction = (w->step + f) / (double)(w->steps + 1),
                        .estimate = w->estimate});
}

static bool subrun_cancelled(void *ctx)
{
    return eng_hooks_cancelled(((const eng_subrun *)ctx)->outer);
}

void eng_subrun_init(eng_subrun *r, const eng_hooks *outer, const char *phase,
                     size_t steps)
{
    *r = (eng_subrun){.hooks = {.ctx = r,
                                .progress = subrun_progress,
                                .cancelled = subrun_cancelled},
                      .outer = outer,
                      .phase = phase,
                      .steps = steps};
}

// One run: the group at level, the rest at 0; *metric from the output.
// Where the group is in one block and ev is given, measured from that
// block on; where cal is given too, its calibration pass starts there.
static int one_run(const eng_model *m, json_t *spec, const group *gr,
                   double level, const eng_options *o, const eng_hooks *h,
                   prefix *ev, prefix *cal, double *metric, sh_diag *d)
{
    json_object_set_new(spec, "overrides",
                        json_pack("[{s:s, s:f}, {s:s, s:f}]", "match",
                                  gr->match, "sparsity", level, "match", ".",
                                  "sparsity", 0.0));
    eng_spec s;
    int rc = eng_spec_parse(&s, spec, d);
    if (rc != 0)
        return rc;
    bool reuse = ev && gr->block >= 0;
    struct eng_calib_prefix cp = {0};
    if (reuse && cal && (rc = prefix_to(cal, (size_t)gr->block, h, d)) != 0) {
        eng_spec_deinit(&s);
        return rc;
    }
    if (reuse && cal)
        cp = (struct eng_calib_prefix){
            .at = cal->at, .block = cal->block, .rows = cal->ds.rows};
    eng_report r;
    eng_report_init(&r, &s);
    eng_options ro = *o;
    ro.pruned_metric_only = true;
    ro.sensitivity_run = !o->sensitivity_whole_runs;
    ro.sync = false;
    ro.input_sha = NULL;
    if (reuse)
        ro.evaluation_path = NULL; // measured below, from the group's block
    ro.calib_prefix = reuse && cal ? &cp : NULL;
    rc = eng_prune(m, &s, &ro, h, &r, d);
    *metric = r.metric_pruned;
    if (rc == 0 && reuse) {
        eng_hooks_progress(
            h, &(eng_progress){.phase = "evaluating", .fraction = 1});
        rc = measure_from(ev, (size_t)gr->block, o->out_dir, h, metric, d);
    }
    eng_report_deinit(&r);
    eng_spec_deinit(&s);
    // Empty the scratch folder for the next run.
    sh_rm_rf(o->out_dir);
    if (rc == 0 && sh_mkdir_p(o->out_dir) != 0)
        rc = sh_diag_set(d, SH_EIO, "", "cannot recreate %s", o->out_dir);
    return rc;
}

// The groups in the order their runs go: by block, so the dense prefix
// only moves forward (groups in no one block first; they reuse nothing).
static size_t *run_order(const group *gs, size_t ng)
{
    size_t *ord = malloc((ng ? ng : 1) * sizeof *ord);
    for (size_t i = 0; ord && i < ng; i++) {
        size_t j = i;
        for (; j > 0 && gs[ord[j - 1]].block > gs[i].block; j--)
            ord[j] = ord[j - 1];
        ord[j] = i;
    }
    return ord;
}

int eng_sensitivity(const eng_model *m, const eng_spec *base,
                    const eng_options *o, int shard, int shards,
                    const eng_hooks *h, json_t **out, sh_diag *d)
{
    eng_granularity g = base->sens.granularity;
    const double *levels = base->sens.levels;
    size_t n_levels = base->sens.n_levels;
    if (base->kind != ENG_KIND_SENSITIVITY || !n_levels)
        return sh_diag_set(d, SH_ESPEC, "kind",
                           "a sensitivity sweep takes a spec of kind "
                           "sensitivity, with its levels");
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
    eng_plan p = {0};
    eng_net *net = NULL;
    group *gs = NULL;
    size_t ng = 0, *ord = NULL;
    json_t *spec = NULL, *groups = json_array(), *res = NULL, **pts = NULL;
    eng_metric dense = {0};
    prefix ev = {0}, cal = {0};
    // Reuse needs the other targets untouched: no grid, no zeros kept.
    bool reuse = !o->sensitivity_whole_runs && !base->quant.bits &&
                 !base->preserve_zeros,
         cal_reuse = false;
    int rc = eng_check(base, m, 0, NULL, d);
    if (rc == 0)
        rc = eng_plan_build(&p, base, m, d);
    if (rc == 0)
        rc = eng_net_open(&net, m, d);
    if (rc == 0)
        rc = make_groups(&p, net, g, &gs, &ng, d);
    if (rc == 0 && (!(ord = run_order(gs, ng)) ||
                    !(pts = calloc(ng ? ng : 1, sizeof *pts))))
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    for (size_t k = 0; rc == 0 && k < ng; k++)
        if (!(pts[k] = json_array()))
            rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    eng_hooks_progress(h, &(eng_progress){.phase = "sensitivity",
                                          .stage = "dense",
                                          .steps = ng * n_levels});
    if (rc == 0 && reuse) {
        rc = prefix_open(&ev, m, o->evaluation_path, 0, h, d);
        if (rc == 0)
            rc = eng_net_evaluate(ev.net, &ev.ds, h, &dense, d);
        if (rc != 0 && rc != SH_ECANCELED)
            sh_diag_prefix(d, "evaluation");
        // The runs read the calibration set (recon errors are off).
        cal_reuse =
            o->calibration_path && eng_methods[base->method].needs_calibration;
        if (rc == 0 && cal_reuse &&
            (rc = prefix_open(&cal, m, o->calibration_path, base->calib_samples,
                              h, d)) != 0 &&
            rc != SH_ECANCELED)
            sh_diag_prefix(d, "calibration data");
    } else if (rc == 0) {
        rc = eng_measure(m, o->evaluation_path, h, &dense, NULL, d);
    }
    double dense_s = sh_time_mono() - t0;
    if (rc == 0) {
        spec = eng_spec_to_json(base);
        json_object_del(spec, "allocation");
        json_object_del(spec, "kind");
        json_object_del(spec, "sensitivity");
        // Only the metric is read: no reconstruction errors (SparseGPT
        // builds its H anyway; the others would run a calibration pass
        // for them).
        json_object_set_new(spec, "report",
                            json_pack("{s:b}", "recon_error", 0));
    }
    size_t runs = 0, total = 0;
    for (size_t r = 0; r < ng * n_levels; r++)
        total += r % (size_t)shards == (size_t)shard;
    double first = 0;
    // Gradient criteria: the dense model's gradients once for every run
    // (whole runs compute their own, for comparison).
    eng_grads grads = {0};
    eng_options so = *o;
    if (rc == 0 && reuse)
        rc = eng_grads_for_sweep(m, base, o, h, &grads, &so, d);
    dense_s = sh_time_mono() - t0;
    eng_subrun w;
    eng_subrun_init(&w, h, "sensitivity", total);
    for (size_t q = 0; rc == 0 && q < ng; q++) {
        size_t k = ord[q];
        for (size_t l = 0; rc == 0 && l < n_levels; l++) {
            if ((k * n_levels + l) % (size_t)shards != (size_t)shard)
                continue; // another shard's
            w.label = gs[k].name;
            w.step = runs;
            double t1 = sh_time_mono(), v = NAN;
            rc = one_run(m, spec, &gs[k], levels[l], &so, &w.hooks,
                         reuse ? &ev : NULL, cal_reuse ? &cal : NULL, &v, d);
            // The first run measures the whole model (its group is the
            // earliest): the estimate is at most what the sweep takes.
            if (runs++ == 0) {
                first = sh_time_mono() - t1;
                w.estimate = dense_s + first * (double)total;
            }
            if (rc == 0)
                json_array_append_new(
                    pts[k], json_pack("{s:f, s:f, s:f}", "level", levels[l],
                                      "metric", v, "delta", v - dense.value));
        }
    }
    for (size_t k = 0; rc == 0 && k < ng; k++)
        json_array_append_new(
            groups, json_pack("{s:s, s:I, s:I, s:O}", "group", gs[k].name,
                              "tensors", (json_int_t)gs[k].tensors, "params",
                              (json_int_t)gs[k].params, "points", pts[k]));
    if (rc == 0) {
        json_t *lv = json_array();
        for (size_t l = 0; l < n_levels; l++)
            json_array_append_new(lv, json_real(levels[l]));
        res = json_pack("{s:s, s:s, s:s, s:f, s:o, s:O, s:I, s:f, s:f, s:f}",
                        "method", eng_methods[base->method].name, "granularity",
                        eng_granularity_name(g), "metric", dense.name, "dense",
                        dense.value, "levels", lv, "groups", groups,
                        "evaluations", (json_int_t)(runs + 1),
                        "first_run_seconds", first, "estimate_seconds",
                        w.estimate, "seconds", sh_time_mono() - t0);
        if (shards > 1)
            json_object_set_new(
                res, "shard",
                json_pack("{s:i, s:i}", "index", shard, "count", shards));
        *out = res;
    }
    for (size_t k = 0; k < ng; k++) {
        free(gs[k].match);
        if (pts)
            json_decref(pts[k]);
    }
    free(pts);
    free(ord);
    free(gs);
    eng_grads_deinit(&grads);
    prefix_close(&ev);
    prefix_close(&cal);
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
    double seconds = 0, estimate = 0;
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
        estimate +=
            json_number_value(json_object_get(parts[i], "estimate_seconds"));
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
        json_object_set_new(res, "estimate_seconds", json_real(estimate));
        *out = res;
    } else {
        json_decref(groups);
    }
    return rc;
}

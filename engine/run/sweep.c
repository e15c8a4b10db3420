// sweep.c: a trade-off sweep (engine.h: eng_sweep): the base spec run at
// each of its points (methods x levels), each measured; the dense metric
// once.
#include "engine/run/run.h"

#include "common/util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// One point (a spec borrowing the base's memory) into dir: its row of
// the table in *row.
static int one_point(const eng_model *m, const eng_spec *s,
                     const eng_options *o, const char *dir, const eng_hooks *h,
                     double dense, json_t **row, sh_diag *d)
{
    eng_report r;
    eng_report_init(&r, s);
    eng_options ro = *o;
    ro.out_dir = dir;
    // A shrink's point measures its speed too (the dense metric again).
    ro.pruned_metric_only = !s->structure.on;
    double t0 = sh_time_mono();
    int rc = eng_prune(m, s, &ro, h, &r, d);
    if (rc == 0) {
        char pat[16];
        eng_pattern_format(pat, sizeof pat, s->pattern);
        json_t *x = json_pack(
            "{s:s, s:f, s:s, s:f, s:f, s:f, s:I, s:I, s:f, s:f}", "method",
            eng_methods[s->method].name, "sparsity", s->sparsity, "pattern",
            pat, "achieved",
            r.target_params ? (double)r.target_zeros / (double)r.target_params
                            : 0.0,
            "metric", r.metric_pruned, "delta", r.metric_pruned - dense,
            "bytes_before", (json_int_t)r.bytes_before, "bytes_after",
            (json_int_t)r.bytes_after, "ratio",
            r.bytes_before ? (double)r.bytes_after / (double)r.bytes_before
                           : 1.0,
            "seconds", sh_time_mono() - t0);
        if (s->structure.on && r.size)
            json_object_set(x, "size", r.size);
        if (r.has_speed)
            json_object_set_new(x, "speedup",
                                json_real(r.speed_pruned / r.speed_dense));
        *row = x;
    }
    eng_report_deinit(&r);
    return rc;
}

int eng_sweep(const eng_model *m, const eng_spec *base, const eng_options *o,
              const eng_hooks *h, json_t **out, sh_diag *d)
{
    double t0 = sh_time_mono();
    size_t n = eng_sweep_points(base);
    if (base->kind != ENG_KIND_SWEEP || !n)
        return sh_diag_set(d, SH_ESPEC, "kind",
                           "a trade-off sweep takes a spec of kind sweep");
    if (!o->evaluation_path)
        return sh_diag_set(d, SH_ESPEC, "evaluation",
                           "a sweep measures every point: give an "
                           "evaluation dataset");
    eng_metric dense = {0};
    json_t *points = json_array();
    int rc = points ? eng_check(base, m, 0, NULL, d)
                    : sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    eng_hooks_progress(
        h, &(eng_progress){.phase = "sweep", .stage = "dense", .steps = n});
    if (rc == 0)
        rc = eng_measure(m, o->evaluation_path, h, &dense, NULL, d);
    // Gradient criteria: the dense model's gradients once for every point.
    eng_grads grads = {0};
    eng_options so = *o;
    if (rc == 0)
        rc = eng_grads_for_sweep(m, base, o, h, &grads, &so, d);
    o = &so;
    char label[96];
    eng_subrun w;
    eng_subrun_init(&w, h, "sweep", n);
    w.label = label;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        // Kept points go to their own folder; the others use the scratch
        // folder, emptied after each.
        char dir[4096];
        eng_spec pt = eng_sweep_point(base, i);
        snprintf(label, sizeof label, "%s at %g", eng_methods[pt.method].name,
                 pt.sparsity);
        w.step = i;
        if (o->sweep_keep && snprintf(dir, sizeof dir, "%s/point-%02zu",
                                      o->sweep_keep, i) >= (int)sizeof dir)
            rc = sh_diag_set(d, SH_ETOOBIG, "", "output path too long");
        else if (o->sweep_keep && sh_mkdir_p(dir) != 0)
            rc = sh_diag_set(d, SH_EIO, "", "cannot create %s", dir);
        json_t *row = NULL;
        if (rc == 0)
            rc = one_point(m, &pt, o, o->sweep_keep ? dir : o->out_dir,
                           &w.hooks, dense.value, &row, d);
        if (rc == 0 && o->sweep_keep)
            json_object_set_new(row, "folder",
                                json_string(strrchr(dir, '/') + 1));
        if (rc == 0)
            json_array_append_new(points, row);
        if (rc != 0 && rc != SH_ECANCELED && !d->msg[0])
            sh_diag_set(d, rc, "", "sweep point %zu failed", i);
        if (!o->sweep_keep) {
            sh_rm_rf(o->out_dir);
            if (rc == 0 && sh_mkdir_p(o->out_dir) != 0)
                rc = sh_diag_set(d, SH_EIO, "", "cannot recreate %s",
                                 o->out_dir);
        }
    }
    if (rc == 0)
        *out = json_pack("{s:s, s:s, s:f, s:O, s:I, s:f}", "kind", "sweep",
                         "metric", dense.name, "dense", dense.value, "points",
                         points, "evaluations", (json_int_t)(n + 1), "seconds",
                         sh_time_mono() - t0);
    json_decref(points);
    eng_grads_deinit(&grads);
    return rc;
}

// submit.c: what submitting a job means, for the API (job_submit); the
// inputs it checks are resolved by inputs.c, as the runner's are.
#include "jobs/jobs.h"

#include "common/sha256.h"
#include "common/util.h"
#include "engine/engine.h"
#include "engine/io/dataset.h"
#include "engine/jobspec/spec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// --- submission

// Datasets must be of the kind the model takes (when it runs at all).
static int check_kind(const job_dataset *ds, const char *id, const char *field,
                      const char *arch, const eng_model_needs *needs,
                      sh_diag *d)
{
    const char *want = eng_dataset_kind_name(needs->dataset_kind);
    if (!needs->model_runs || !ds->kind[0] || strcmp(ds->kind, want) == 0)
        return 0;
    return sh_diag_set(d, SH_ESPEC, field,
                       "%s: dataset %s holds \"%s\"; a %s model needs \"%s\"",
                       field, id, ds->kind, arch, want);
}

// A sweep's points against the model: one a method (a level changes
// nothing eng_check looks at), its field named as the point's.
static int check_points(const eng_spec *s, const eng_model *m, double deadline,
                        sh_diag *d)
{
    size_t step = s->sweep.n_levels ? s->sweep.n_levels : 1;
    for (size_t i = 0; i < eng_sweep_points(s); i += step) {
        eng_spec p = eng_sweep_point(s, i);
        int rc = eng_check(&p, m, deadline, NULL, d);
        if (rc == SH_ESPEC)
            sh_diag_prefix(d, "sweep point %zu (%s)", i,
                           eng_methods[p.method].name);
        if (rc)
            return rc;
    }
    return 0;
}

// Movement's base and the scores file against the targets: names, shapes,
// dtypes (engine.h: eng_check_inputs); the scores dataset of its kind.
static int check_movement_inputs(const eng_spec *spec, const job_inputs *in,
                                 sh_diag *d)
{
    if (spec->scores && strcmp(in->scores.kind, "scores") != 0)
        return sh_diag_set(d, SH_ESPEC, "scores",
                           "scores: dataset %s holds \"%s\"; method scores "
                           "needs a dataset of score tensors (kind scores)",
                           spec->scores, in->scores.kind);
    eng_st *st = NULL;
    int rc = spec->scores ? eng_st_open(&st, in->scores.path, d) : 0;
    if (rc == 0)
        rc = eng_check_inputs(spec, in->model, in->base,
                              st ? eng_st_header_of(st) : NULL, d);
    eng_st_close(st);
    return rc == SH_ESPEC || rc == 0 ? rc : (d->code = SH_ESPEC);
}

// The digest of a request body, for Idempotency-Key: its canonical JSON.
static void body_digest(const json_t *body, char out[SH_SHA256_HEX])
{
    out[0] = '\0';
    char *canon = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    sh_sha256 h;
    if (canon && sh_sha256_init(&h) == 0) {
        sh_sha256_update(&h, canon, strlen(canon));
        sh_sha256_final(&h, out);
        sh_sha256_deinit(&h);
    }
    free(canon);
}

int job_submit(store *s, job_runner *r, const job_request *req, json_t **job,
               bool *created, sh_diag *d)
{
    eng_spec spec;
    memset(&spec, 0, sizeof spec);
    job_inputs in;
    memset(&in, 0, sizeof in);
    json_t *echo = NULL;
    int rc = eng_spec_parse(&spec, req->body, d);
    if (rc == 0 && !spec.checkpoint)
        rc = sh_diag_set(d, SH_ESPEC, "checkpoint",
                         "checkpoint is required (a ck_... id)");
    if (rc == 0 && spec.kind != ENG_KIND_PRUNE && !spec.eval_dataset)
        rc = sh_diag_set(d, SH_ESPEC, "evaluation.dataset",
                         "a %s job measures every run: give "
                         "evaluation.dataset",
                         eng_kind_name(spec.kind));
    if (rc == 0 && spec.alloc.kind == ENG_ALLOC_SENSITIVITY)
        rc = job_sensitivity_source(s, spec.alloc.from, spec.checkpoint, NULL,
                                    d);
    job_names names = {.calibration = spec.calib_dataset,
                       .evaluation = spec.eval_dataset,
                       .base = spec.base,
                       .scores = spec.scores};
    if (rc == 0)
        rc = job_inputs_open(&in, s, spec.checkpoint, &names, d);
    if (rc == SH_ENOTFOUND)
        rc = d->code = SH_ESPEC; // the spec names what is not there
    eng_model_needs needs = {0};
    if (rc == 0)
        rc = eng_check(&spec, in.model, req->check_deadline, &needs, d);
    // Each point of a sweep against the checkpoint too (its method may
    // need what the base's does not).
    if (rc == 0)
        rc = check_points(&spec, in.model, req->check_deadline, d);
    if (rc == 0 && spec.calib_dataset)
        rc = check_kind(&in.calibration, spec.calib_dataset,
                        "calibration.dataset", eng_model_arch(in.model), &needs,
                        d);
    if (rc == 0 && spec.eval_dataset)
        rc = check_kind(&in.evaluation, spec.eval_dataset, "evaluation.dataset",
                        eng_model_arch(in.model), &needs, d);
    if (rc == 0 && (spec.base || spec.scores))
        rc = check_movement_inputs(&spec, &in, d);
    if (rc != 0)
        goto out;
    char body_sha[SH_SHA256_HEX], id[48];
    body_digest(req->body, body_sha);
    sh_id_new(id, sizeof id, "job_");
    if (!(echo = eng_spec_to_json(&spec))) {
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        goto out;
    }
    store_job_new nj = {.id = id,
                        .checkpoint = spec.checkpoint,
                        .calibration = spec.calib_dataset,
                        .evaluation = spec.eval_dataset,
                        .spec = echo,
                        .idem_key = req->idem_key,
                        .body_sha256 = body_sha};
    store_conn *c = store_conn_acquire(s);
    rc = store_job_add(c, &nj, job, created, d);
    store_conn_release(s, c);
    if (rc == SH_ENOTFOUND)
        rc = d->code = SH_ESPEC; // a dataset or checkpoint went away just now
    if (rc == 0 && *created && r)
        job_runner_wake(r);
out:
    json_decref(echo);
    job_inputs_close(&in);
    eng_spec_deinit(&spec);
    return rc;
}

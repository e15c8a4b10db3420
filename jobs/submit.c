// submit.c: what submitting a job means, and a job's inputs, resolved in
// one place for the API (at submission) and the runner (at run time).
#include "jobs/jobs.h"

#include "common/sha256.h"
#include "common/util.h"
#include "engine/engine.h"
#include "engine/io/dataset.h"
#include "engine/spec/spec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// --- inputs

// A failure of the store while reading what field names.
static int store_failed(sh_diag *d, int rc, const char *field, const char *id)
{
    return sh_diag_set(d, rc, field, "cannot read %s: %s", id, sh_strerror(rc));
}

// A dataset's one file: its blob path, digest and kind. SH_ENOTFOUND
// naming field when the dataset is gone.
static int dataset_open(store *s, store_conn *c, const char *id,
                        const char *field, job_dataset *out, sh_diag *d)
{
    json_t *ds = NULL;
    int rc = store_dataset_get(c, id, &ds);
    if (rc == SH_ENOTFOUND)
        return sh_diag_set(d, SH_ENOTFOUND, field,
                           "%s: dataset %s does not exist (upload it first)",
                           field, id);
    if (rc != 0)
        return store_failed(d, rc, field, id);
    const char *kind = json_string_value(json_object_get(ds, "kind"));
    const char *sha = json_string_value(json_object_get(
        json_array_get(json_object_get(ds, "files"), 0), "sha256"));
    if (!sha) {
        json_decref(ds);
        return sh_diag_set(d, SH_ENOTFOUND, field, "%s: dataset %s has no file",
                           field, id);
    }
    snprintf(out->sha256, sizeof out->sha256, "%s", sha);
    snprintf(out->kind, sizeof out->kind, "%s", kind ? kind : "");
    rc = store_blob_path(s, sha, out->path, sizeof out->path);
    json_decref(ds);
    return rc == 0 ? 0 : sh_diag_set(d, rc, field, "blob path too long");
}

// The checkpoint's files as the engine takes them.
static int model_open(job_inputs *in, store *s, store_conn *c, const char *id,
                      sh_diag *d)
{
    int rc = store_files_of(c, id, &in->files);
    if (rc == SH_ENOTFOUND)
        return sh_diag_set(d, SH_ENOTFOUND, "checkpoint",
                           "checkpoint %s does not exist", id);
    if (rc != 0)
        return store_failed(d, rc, "checkpoint", id);
    size_t n = json_array_size(in->files);
    eng_file_ref *refs = calloc(n, sizeof *refs);
    char(*paths)[4096] = calloc(n, sizeof *paths);
    in->model_sha = calloc(n, sizeof *in->model_sha);
    if (!refs || !paths || !in->model_sha) {
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *f = json_array_get(in->files, i);
        const char *sha = json_string_value(json_object_get(f, "sha256"));
        if ((rc = store_blob_path(s, sha, paths[i], sizeof paths[i])) != 0) {
            sh_diag_set(d, rc, "checkpoint", "blob path too long");
            goto out;
        }
        refs[i] = (eng_file_ref){json_string_value(json_object_get(f, "name")),
                                 paths[i]};
    }
    if ((rc = eng_model_open_files(&in->model, refs, n, d)) != 0)
        goto out;
    // The model sorts its files by name, as store_files_of does; match
    // digests by name all the same.
    for (size_t i = 0; i < eng_model_file_count(in->model); i++) {
        const char *name = eng_model_file_at(in->model, i)->name;
        for (size_t k = 0; k < n; k++)
            if (strcmp(refs[k].name, name) == 0)
                in->model_sha[i] = json_string_value(
                    json_object_get(json_array_get(in->files, k), "sha256"));
    }
out:
    free(refs);
    free(paths);
    return rc;
}

int job_inputs_open(job_inputs *in, store *s, const char *checkpoint,
                    const char *calibration, const char *evaluation, sh_diag *d)
{
    memset(in, 0, sizeof *in);
    store_conn *c = store_conn_acquire(s);
    int rc = checkpoint ? model_open(in, s, c, checkpoint, d)
                        : sh_diag_set(d, SH_ENOTFOUND, "checkpoint",
                                      "checkpoint is required (a ck_... id)");
    if (rc == 0 && calibration)
        rc = dataset_open(s, c, calibration, "calibration.dataset",
                          &in->calibration, d);
    if (rc == 0 && evaluation)
        rc = dataset_open(s, c, evaluation, "evaluation.dataset",
                          &in->evaluation, d);
    store_conn_release(s, c);
    if (rc != 0)
        job_inputs_close(in);
    return rc;
}

void job_inputs_close(job_inputs *in)
{
    eng_model_close(in->model);
    free(in->model_sha);
    json_decref(in->files);
    memset(in, 0, sizeof *in);
}

// --- submission

// Datasets must be of the kind the model takes (when it runs at all).
static int check_kind(const job_dataset *ds, const char *id, const char *field,
                      const char *arch, const eng_model_needs *needs,
                      sh_diag *d)
{
    const char *want = eng_dataset_kind_name(needs->dataset);
    if (!needs->runs || !ds->kind[0] || strcmp(ds->kind, want) == 0)
        return 0;
    return sh_diag_set(d, SH_ESPEC, field,
                       "%s: dataset %s holds \"%s\"; a %s model needs \"%s\"",
                       field, id, ds->kind, arch, want);
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
    if (rc == 0)
        rc = job_inputs_open(&in, s, spec.checkpoint, spec.calib_dataset,
                             spec.eval_dataset, d);
    if (rc == SH_ENOTFOUND)
        rc = d->code = SH_ESPEC; // the spec names what is not there
    eng_model_needs needs = {0};
    if (rc == 0)
        rc = eng_check(&spec, in.model, req->check_deadline, &needs, d);
    if (rc == 0 && spec.calib_dataset)
        rc = check_kind(&in.calibration, spec.calib_dataset,
                        "calibration.dataset", eng_model_arch(in.model), &needs,
                        d);
    if (rc == 0 && spec.eval_dataset)
        rc = check_kind(&in.evaluation, spec.eval_dataset, "evaluation.dataset",
                        eng_model_arch(in.model), &needs, d);
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

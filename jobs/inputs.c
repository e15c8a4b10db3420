// inputs.c: a job's inputs (checkpoint files, datasets, their digests),
// resolved in one place for the API (at submission, through submit.c) and
// the runner (at run time, through execute.c).
#include "jobs/jobs.h"

#include "common/util.h"
#include "engine/engine.h"
#include "engine/io/dataset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

// A checkpoint's files as the engine takes them: *model, its file rows
// and (when sha is not NULL) each file's digest in the model's order.
static int model_open(store *s, store_conn *c, const char *id,
                      const char *field, eng_model **model, json_t **files,
                      const char ***sha, sh_diag *d)
{
    int rc = store_files_of(c, id, files);
    if (rc == SH_ENOTFOUND)
        return sh_diag_set(d, SH_ENOTFOUND, field, "%s %s does not exist",
                           field, id);
    if (rc != 0)
        return store_failed(d, rc, field, id);
    size_t n = json_array_size(*files);
    eng_file_ref *refs = calloc(n ? n : 1, sizeof *refs);
    char(*paths)[4096] = calloc(n ? n : 1, sizeof *paths);
    if (sha)
        *sha = calloc(n ? n : 1, sizeof **sha);
    if (!refs || !paths || (sha && !*sha)) {
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *f = json_array_get(*files, i);
        const char *hex = json_string_value(json_object_get(f, "sha256"));
        if ((rc = store_blob_path(s, hex, paths[i], sizeof paths[i])) != 0) {
            sh_diag_set(d, rc, field, "blob path too long");
            goto out;
        }
        refs[i] = (eng_file_ref){json_string_value(json_object_get(f, "name")),
                                 paths[i]};
    }
    if ((rc = eng_model_open_files(model, refs, n, d)) != 0)
        goto out;
    // The model sorts its files by name, as store_files_of does; match
    // digests by name all the same.
    for (size_t i = 0; sha && i < eng_model_file_count(*model); i++) {
        const char *name = eng_model_file_at(*model, i)->name;
        for (size_t k = 0; k < n; k++)
            if (strcmp(refs[k].name, name) == 0)
                (*sha)[i] = json_string_value(
                    json_object_get(json_array_get(*files, k), "sha256"));
    }
out:
    free(refs);
    free(paths);
    return rc;
}

int job_inputs_open(job_inputs *in, store *s, const char *checkpoint,
                    const job_names *names, sh_diag *d)
{
    memset(in, 0, sizeof *in);
    store_conn *c = store_conn_acquire(s);
    int rc = checkpoint ? model_open(s, c, checkpoint, "checkpoint", &in->model,
                                     &in->files, &in->model_sha, d)
                        : sh_diag_set(d, SH_ENOTFOUND, "checkpoint",
                                      "checkpoint is required (a ck_... id)");
    if (rc == 0 && names->calibration)
        rc = dataset_open(s, c, names->calibration, "calibration.dataset",
                          &in->calibration, d);
    if (rc == 0 && names->evaluation)
        rc = dataset_open(s, c, names->evaluation, "evaluation.dataset",
                          &in->evaluation, d);
    if (rc == 0 && names->base)
        rc = model_open(s, c, names->base, "base", &in->base, &in->base_files,
                        NULL, d);
    if (rc == 0 && names->scores)
        rc = dataset_open(s, c, names->scores, "scores", &in->scores, d);
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
    eng_model_close(in->base);
    json_decref(in->base_files);
    memset(in, 0, sizeof *in);
}

int job_sensitivity_source(store *s, const char *from, const char *checkpoint,
                           json_t **report, sh_diag *d)
{
    json_t *job = NULL;
    store_conn *c = store_conn_acquire(s);
    int rc = strncmp(from, "job_", 4) == 0 ? store_job_get(c, from, &job)
                                           : SH_ENOTFOUND;
    store_conn_release(s, c);
    if (rc == SH_ENOTFOUND)
        return sh_diag_set(d, SH_ESPEC, "allocation.from",
                           "allocation.from: there is no job %s; give the id "
                           "of a succeeded sensitivity job (job_...)",
                           from);
    if (rc != 0)
        return store_failed(d, rc, "allocation.from", from);
    const char *kind = json_string_value(json_object_get(job, "kind"));
    const char *status = json_string_value(json_object_get(job, "status"));
    const char *ck = json_string_value(json_object_get(job, "checkpoint"));
    json_t *res = json_object_get(job, "result");
    if (!kind || strcmp(kind, "sensitivity") != 0)
        rc = sh_diag_set(d, SH_ESPEC, "allocation.from",
                         "allocation.from: job %s is a %s job, not a "
                         "sensitivity job",
                         from, kind ? kind : "prune");
    else if (!status || strcmp(status, "succeeded") != 0 ||
             !json_is_object(res))
        rc = sh_diag_set(d, SH_ESPEC, "allocation.from",
                         "allocation.from: sensitivity job %s is %s; it "
                         "must have succeeded",
                         from, status ? status : "unknown");
    else if (!ck || !checkpoint || strcmp(ck, checkpoint) != 0)
        rc = sh_diag_set(d, SH_ESPEC, "allocation.from",
                         "allocation.from: sensitivity job %s measured "
                         "checkpoint %s, not %s",
                         from, ck ? ck : "?", checkpoint ? checkpoint : "?");
    if (rc == 0 && report)
        *report = json_incref(res);
    json_decref(job);
    return rc;
}

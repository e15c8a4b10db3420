// execute.c: one job on a worker thread, and the record of how it ended.
#include "jobs/jobs_int.h"

#include "common/log.h"
#include "common/sha256.h"
#include "common/util.h"
#include "engine/engine.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

job_run *job_run_new(struct job_runner *r, const char *id)
{
    job_run *run = calloc(1, sizeof *run);
    if (!run)
        return NULL;
    run->r = r;
    snprintf(run->id, sizeof run->id, "%s", id);
    snprintf(run->progress.phase, sizeof run->progress.phase, "starting");
    run->started = sh_time_mono();
    atomic_init(&run->cancel, JOB_CANCEL_NONE);
    pthread_mutex_init(&run->mu, NULL);
    return run;
}

void job_run_free(job_run *run)
{
    json_decref(run->result);
    free(run->files);
    free(run->names);
    free(run->paths);
    free(run->shas);
    pthread_mutex_destroy(&run->mu);
    free(run);
}

// --- hooks for the engine

static void on_progress(void *ctx, const eng_progress *p)
{
    job_run *run = ctx;
    pthread_mutex_lock(&run->mu);
    job_progress *q = &run->progress;
    snprintf(q->phase, sizeof q->phase, "%s", p->phase);
    snprintf(q->tensor, sizeof q->tensor, "%s", p->tensor ? p->tensor : "");
    q->step = p->step;
    q->steps = p->steps;
    q->bytes_done = p->bytes_done;
    q->bytes_total = p->bytes_total;
    q->fraction = p->fraction;
    run->progress_dirty = true;
    pthread_mutex_unlock(&run->mu);
}

static bool on_cancelled(void *ctx)
{
    job_run *run = ctx;
    return atomic_load_explicit(&run->cancel, memory_order_relaxed) !=
           JOB_CANCEL_NONE;
}

typedef struct inputs {
    const char **sha; // per model file
} inputs;

static const char *const *input_sha(void *ctx) { return ((inputs *)ctx)->sha; }

// --- the run

// The blob path and digest of a dataset's one file.
static int dataset_file(store *s, store_conn *c, const char *id, char *path,
                        size_t size, char sha[65])
{
    json_t *files = NULL;
    int rc = store_files_of(c, id, &files);
    if (rc != 0)
        return rc;
    const char *hex =
        json_string_value(json_object_get(json_array_get(files, 0), "sha256"));
    snprintf(sha, 65, "%s", hex ? hex : "");
    rc = store_blob_path(s, sha, path, size);
    json_decref(files);
    return rc;
}

// The artifact: every file the engine wrote, hashed for ETags.
static int hash_outputs(job_run *run, const eng_model *m)
{
    size_t n = eng_model_file_count(m) + 1;
    run->files = calloc(n, sizeof *run->files);
    run->names = calloc(n, sizeof *run->names);
    run->paths = calloc(n, sizeof *run->paths);
    run->shas = calloc(n, sizeof *run->shas);
    if (!run->files || !run->names || !run->paths || !run->shas)
        return sh_diag_set(&run->d, SH_ENOMEM, "", "out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name =
            i + 1 < n ? eng_model_file_at(m, i)->name : ENG_MANIFEST_NAME;
        if (i + 1 < n && strcmp(name, ENG_MANIFEST_NAME) == 0)
            continue; // replaced by ours, listed last
        if (!sh_strlcpy(run->names[k], sizeof run->names[k], name))
            return sh_diag_set(&run->d, SH_ETOOBIG, name,
                               "output file name longer than %d bytes",
                               ENG_MODEL_NAME_MAX);
        if (sh_path_join(run->paths[k], sizeof run->paths[k], run->out_dir,
                         name) != 0)
            return sh_diag_set(&run->d, SH_ETOOBIG, name, "path too long");
        uint64_t bytes = 0;
        int rc = sh_file_size(run->paths[k], &bytes);
        if (rc == 0)
            rc = sh_sha256_file(run->paths[k], run->shas[k]);
        if (rc != 0)
            return sh_diag_set(&run->d, rc, name, "cannot read output %s",
                               name);
        run->files[k] = (store_file){.name = run->names[k],
                                     .path = run->paths[k],
                                     .sha256 = run->shas[k],
                                     .bytes = bytes};
        k++;
    }
    run->nfiles = k;
    return 0;
}

static int execute(job_run *run, eng_spec *spec, eng_model **model)
{
    store *s = run->r->s;
    store_conn *c = store_conn_acquire(s);
    json_t *job = NULL, *files = NULL;
    eng_file_ref *refs = NULL;
    char(*paths)[4096] = NULL;
    const char **shas = NULL;
    char calib[4096] = "", eval[4096] = "", calib_sha[65], eval_sha[65];
    int rc = store_job_get(c, run->id, &job);
    if (rc != 0) {
        sh_diag_set(&run->d, rc, "", "cannot read the job");
        goto out;
    }
    if ((rc = eng_spec_parse(spec, json_object_get(job, "spec"), &run->d)))
        goto out;
    snprintf(run->method, sizeof run->method, "%s",
             eng_methods[spec->method].name);
    const char *ck = json_string_value(json_object_get(job, "checkpoint"));
    const char *cal = json_string_value(json_object_get(job, "calibration"));
    const char *ev = json_string_value(json_object_get(job, "evaluation"));
    if ((rc = store_files_of(c, ck, &files)) != 0 ||
        (cal &&
         (rc = dataset_file(s, c, cal, calib, sizeof calib, calib_sha)) != 0) ||
        (ev && (rc = dataset_file(s, c, ev, eval, sizeof eval, eval_sha)))) {
        sh_diag_set(&run->d, rc, "", "the job's inputs are gone");
        goto out;
    }
    store_conn_release(s, c);
    c = NULL;

    size_t n = json_array_size(files);
    refs = calloc(n, sizeof *refs);
    paths = calloc(n, sizeof *paths);
    shas = calloc(n, sizeof *shas);
    if (!refs || !paths || !shas) {
        rc = sh_diag_set(&run->d, SH_ENOMEM, "", "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *f = json_array_get(files, i);
        const char *sha = json_string_value(json_object_get(f, "sha256"));
        store_blob_path(s, sha, paths[i], sizeof paths[i]);
        refs[i] = (eng_file_ref){json_string_value(json_object_get(f, "name")),
                                 paths[i]};
    }
    if ((rc = eng_model_open_files(model, refs, n, &run->d)) != 0)
        goto out;
    // The model sorts its files by name, as store_files_of does; match
    // digests by name all the same.
    for (size_t i = 0; i < eng_model_file_count(*model); i++) {
        const char *name = eng_model_file_at(*model, i)->name;
        for (size_t k = 0; k < n; k++)
            if (strcmp(refs[k].name, name) == 0)
                shas[i] = json_string_value(
                    json_object_get(json_array_get(files, k), "sha256"));
    }
    if ((rc = store_tmp_dir(s, "job-", run->out_dir, sizeof run->out_dir))) {
        sh_diag_set(&run->d, rc, "", "cannot create a temp dir");
        run->out_dir[0] = '\0';
        goto out;
    }
    eng_report r;
    eng_report_init(&r, spec);
    eng_hooks hooks = {
        .ctx = run, .progress = on_progress, .cancelled = on_cancelled};
    inputs in = {shas};
    eng_options o = {.out_dir = run->out_dir,
                     .sync = true,
                     .calibration_path = calib[0] ? calib : NULL,
                     .evaluation_path = eval[0] ? eval : NULL,
                     .input_sha = input_sha,
                     .input_sha_ctx = &in,
                     .calibration_sha = calib[0] ? calib_sha : NULL,
                     .evaluation_sha = eval[0] ? eval_sha : NULL,
                     .threads = run->r->cfg.job_threads};
    rc = eng_prune(*model, spec, &o, &hooks, &r, &run->d);
    if (rc == 0) {
        run->result = eng_report_to_json(&r);
        on_progress(run, &(eng_progress){.phase = "storing", .fraction = 1.0});
        rc = hash_outputs(run, *model);
    }
    eng_report_deinit(&r);
out:
    if (c)
        store_conn_release(s, c);
    json_decref(job);
    json_decref(files);
    free(refs);
    free(paths);
    free(shas);
    return rc;
}

void job_run_execute(job_run *run)
{
    eng_spec spec;
    memset(&spec, 0, sizeof spec);
    eng_model *m = NULL;
    sh_diag_clear(&run->d);
    run->rc = execute(run, &spec, &m);
    eng_model_close(m);
    eng_spec_deinit(&spec);
}

// --- the record

typedef struct problem_kind {
    int code;
    const char *slug, *title;
} problem_kind;

static const problem_kind problems[] = {
    {SH_ENUMERIC, "numerical", "Numerical failure"},
    {SH_EFORMAT, "invalid-checkpoint", "Invalid checkpoint or dataset"},
    {SH_ESPEC, "invalid-spec", "Invalid job spec"},
    {SH_EUNSUPPORTED, "unsupported", "Not supported"},
    {SH_EIO, "io", "Input/output error"},
    {SH_ENOMEM, "out-of-memory", "Out of memory"},
    {SH_ECANCELED, "cancelled", "Cancelled"},
    {SH_ENOTFOUND, "missing-input", "Input missing"},
    {SH_ENOSPC, "insufficient-storage", "Insufficient storage"},
};

// The words of a failure, without the server's paths: the job's output
// folder and the data dir become names relative to them.
static void scrub(const job_run *run, char *msg, size_t size)
{
    store *s = run->r->s;
    char out[4200], real[PATH_MAX], data[4200];
    if (run->out_dir[0]) {
        snprintf(out, sizeof out, "%s/", run->out_dir);
        sh_path_scrub(msg, size, out, "");
        sh_path_scrub(msg, size, run->out_dir, "the output folder");
    }
    if (realpath(store_data_dir(s), real)) {
        snprintf(data, sizeof data, "%s/", real);
        sh_path_scrub(msg, size, data, "");
    }
    snprintf(data, sizeof data, "%s/", store_data_dir(s));
    sh_path_scrub(msg, size, data, "");
}

static json_t *problem_for(const job_run *run, int code, const sh_diag *in)
{
    sh_diag scrubbed = *in, *d = &scrubbed;
    scrub(run, d->msg, sizeof d->msg);
    const char *slug = "internal", *title = "Internal error";
    for (size_t i = 0; i < SH_ARRAY_LEN(problems); i++) {
        if (problems[i].code == code) {
            slug = problems[i].slug;
            title = problems[i].title;
        }
    }
    char type[96];
    snprintf(type, sizeof type, "urn:shears:problem:%s", slug);
    json_t *j = json_pack("{s:s, s:s, s:s}", "type", type, "title", title,
                          "detail", d->msg[0] ? d->msg : sh_strerror(code));
    if (d->field[0])
        json_object_set_new(j, "field", json_string(d->field));
    return j;
}

store_job_status job_run_record(struct job_runner *r, job_run *run)
{
    int cancel = atomic_load(&run->cancel);
    store_job_status status;
    if (run->rc == 0)
        status = STORE_JOB_SUCCEEDED;
    else if (run->rc == SH_ECANCELED && cancel == JOB_CANCEL_SHUTDOWN)
        status = STORE_JOB_QUEUED;
    else if (run->rc == SH_ECANCELED)
        status = STORE_JOB_CANCELLED;
    else
        status = STORE_JOB_FAILED;
    json_t *error = NULL;
    if (status == STORE_JOB_CANCELLED) {
        sh_diag_set(&run->d, SH_ECANCELED, "", "cancelled while running");
        error = problem_for(run, SH_ECANCELED, &run->d);
    } else if (status == STORE_JOB_FAILED) {
        error = problem_for(run, run->rc, &run->d);
    }
    // Only a success keeps its output; the rest is removed first, so a
    // job that filled the disk gives the room back before it is recorded.
    if (status != STORE_JOB_SUCCEEDED && run->out_dir[0])
        sh_rm_rf(run->out_dir);
    sh_diag d;
    sh_diag_clear(&d);
    int rc = store_job_finish(r->s, run->id, status, run->result, error,
                              run->files, run->nfiles, &d);
    if (rc != 0 && status == STORE_JOB_SUCCEEDED) {
        // The artifact could not be stored: the job fails, saying why.
        sh_rm_rf(run->out_dir);
        json_decref(error);
        error = problem_for(run, rc, &d);
        status = STORE_JOB_FAILED;
        rc = store_job_finish(r->s, run->id, status, NULL, error, NULL, 0, &d);
    }
    if (rc != 0)
        SH_ERROR("cannot record the end of a job", "job", run->id, "error",
                 d.msg);
    if (run->out_dir[0])
        sh_rm_rf(run->out_dir);
    char secs[32];
    SH_INFO("job ended", "job", run->id, "status",
            store_job_status_name(status), "seconds",
            sh_log_num(secs, sh_time_mono() - run->started), "error",
            error ? json_string_value(json_object_get(error, "detail")) : NULL);
    json_decref(error);
    return status;
}

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
    snprintf(q->stage, sizeof q->stage, "%s", p->stage ? p->stage : "");
    snprintf(q->tensor, sizeof q->tensor, "%s", p->tensor ? p->tensor : "");
    q->step = p->step;
    q->steps = p->steps;
    q->bytes_done = p->bytes_done;
    q->bytes_total = p->bytes_total;
    q->fraction = p->fraction;
    q->estimate = p->estimate;
    run->progress_dirty = true;
    pthread_mutex_unlock(&run->mu);
}

static bool on_cancelled(void *ctx)
{
    job_run *run = ctx;
    return atomic_load_explicit(&run->cancel, memory_order_relaxed) !=
           JOB_CANCEL_NONE;
}

static const char *const *input_sha(void *ctx)
{
    return ((job_inputs *)ctx)->model_sha;
}

// --- the run

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

static int execute(job_run *run, eng_spec *spec, job_inputs *in)
{
    store *s = run->r->s;
    store_conn *c = store_conn_acquire(s);
    json_t *job = NULL;
    int rc = store_job_get(c, run->id, &job);
    store_conn_release(s, c);
    if (rc != 0) {
        sh_diag_set(&run->d, rc, "", "cannot read the job");
        goto out;
    }
    if ((rc = eng_spec_parse(spec, json_object_get(job, "spec"), &run->d)))
        goto out;
    snprintf(run->method, sizeof run->method, "%s",
             eng_methods[spec->method].name);
    if (on_cancelled(run)) { // before it started: nothing to open
        rc = sh_diag_set(&run->d, SH_ECANCELED, "", "cancelled");
        goto out;
    }
    job_names names = {
        .calibration = json_string_value(json_object_get(job, "calibration")),
        .evaluation = json_string_value(json_object_get(job, "evaluation")),
        .base = spec->base,
        .scores = spec->scores};
    rc = job_inputs_open(in, s,
                         json_string_value(json_object_get(job, "checkpoint")),
                         &names, &run->d);
    if (rc == SH_ENOTFOUND)
        sh_diag_prefix(&run->d, "the job's inputs are gone");
    if (rc != 0)
        goto out;
    if ((rc = store_tmp_dir(s, "job-", run->out_dir, sizeof run->out_dir))) {
        sh_diag_set(&run->d, rc, "", "cannot create a temp dir");
        run->out_dir[0] = '\0';
        goto out;
    }
    json_t *sens = NULL; // allocation sensitivity's table, from its job
    if (spec->alloc.kind == ENG_ALLOC_SENSITIVITY &&
        (rc = job_sensitivity_source(s, spec->alloc.from, spec->checkpoint,
                                     &sens, &run->d)) != 0)
        goto out;
    eng_report r;
    eng_report_init(&r, spec);
    eng_hooks hooks = {
        .ctx = run, .progress = on_progress, .cancelled = on_cancelled};
    const job_dataset *cal = &in->calibration, *ev = &in->evaluation;
    eng_options o = {.out_dir = run->out_dir,
                     .sync = true,
                     .calibration_path = cal->path[0] ? cal->path : NULL,
                     .evaluation_path = ev->path[0] ? ev->path : NULL,
                     .base = in->base,
                     .scores_path = in->scores.path[0] ? in->scores.path : NULL,
                     .input_sha = input_sha,
                     .input_sha_ctx = in,
                     .calibration_sha = cal->path[0] ? cal->sha256 : NULL,
                     .evaluation_sha = ev->path[0] ? ev->sha256 : NULL,
                     .threads = run->r->cfg.job_threads,
                     .sensitivity_report = sens};
    if (spec->kind == ENG_KIND_SENSITIVITY) {
        // A table, no model: the runs use the temp dir one after another.
        rc = eng_sensitivity(in->model, spec, &o, 0, 1, &hooks, &run->result,
                             &run->d);
    } else if (spec->kind == ENG_KIND_SWEEP) {
        // Likewise: the points' models are not kept.
        rc = eng_sweep(in->model, spec, &o, &hooks, &run->result, &run->d);
    } else {
        rc = eng_prune(in->model, spec, &o, &hooks, &r, &run->d);
        if (rc == 0) {
            run->result = eng_report_to_json(&r);
            on_progress(run,
                        &(eng_progress){.phase = "storing", .fraction = 1.0});
            rc = hash_outputs(run, in->model);
        }
    }
    eng_report_deinit(&r);
    json_decref(sens);
out:
    json_decref(job);
    return rc;
}

void job_run_execute(job_run *run)
{
    eng_spec spec;
    memset(&spec, 0, sizeof spec);
    job_inputs in;
    memset(&in, 0, sizeof in);
    sh_diag_clear(&run->d);
    run->rc = execute(run, &spec, &in);
    job_inputs_close(&in);
    eng_spec_deinit(&spec);
}

// --- the record

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

// The error a job ends with: code, field and words (scrubbed of paths);
// the API words its problem object.
static void error_for(const job_run *run, int code, const sh_diag *in,
                      sh_diag *out)
{
    *out = *in;
    out->code = code;
    scrub(run, out->msg, sizeof out->msg);
    if (!out->msg[0])
        snprintf(out->msg, sizeof out->msg, "%s", sh_strerror(code));
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
    if (status == STORE_JOB_QUEUED) {
        // A user's cancel that reached only the row (after the stop began)
        // wins over the requeue; store_job_finish checks it again.
        bool asked = false;
        store_conn *c = store_conn_acquire(r->s);
        if (store_job_cancel_requested(c, run->id, &asked) == 0 && asked)
            status = STORE_JOB_CANCELLED;
        store_conn_release(r->s, c);
    }
    sh_diag error;
    sh_diag_clear(&error);
    if (status == STORE_JOB_CANCELLED) {
        sh_diag_set(&run->d, SH_ECANCELED, "",
                    cancel == JOB_CANCEL_SHUTDOWN
                        ? "cancelled while the service stopped"
                        : "cancelled while running");
        error_for(run, SH_ECANCELED, &run->d, &error);
    } else if (status == STORE_JOB_FAILED) {
        error_for(run, run->rc, &run->d, &error);
    }
    bool ended = status == STORE_JOB_CANCELLED || status == STORE_JOB_FAILED;
    // Only a success keeps its output; the rest is removed first, so a
    // job that filled the disk gives the room back before it is recorded.
    if (status != STORE_JOB_SUCCEEDED && run->out_dir[0])
        sh_rm_rf(run->out_dir);
    sh_diag d;
    sh_diag_clear(&d);
    int rc =
        store_job_finish(r->s, run->id, status, run->result,
                         ended ? &error : NULL, run->files, run->nfiles, &d);
    if (rc != 0 && status == STORE_JOB_SUCCEEDED) {
        // The artifact could not be stored: the job fails, saying why.
        sh_rm_rf(run->out_dir);
        error_for(run, rc, &d, &error);
        ended = true;
        status = STORE_JOB_FAILED;
        rc = store_job_finish(r->s, run->id, status, NULL, &error, NULL, 0, &d);
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
            ended ? error.msg : NULL);
    return status;
}

// jobs_int.h: a running job, shared by the loop thread (runner.c) and the
// worker that executes it (execute.c). Not public.
#ifndef JOBS_JOBS_INT_H
#define JOBS_JOBS_INT_H

#include "jobs/jobs.h"

#include "engine/io/model.h"

#include <pthread.h>
#include <stdatomic.h>
#include <uv.h>

enum { JOB_CANCEL_NONE, JOB_CANCEL_USER, JOB_CANCEL_SHUTDOWN };

typedef struct job_progress {
    char phase[32];
    char stage[16];
    char tensor[160];
    uint64_t step, steps, bytes_done, bytes_total;
    double fraction;
    double estimate; // seconds, 0 = none
} job_progress;

typedef struct job_run {
    uv_work_t req;
    struct job_runner *r;
    char id[64];
    char method[32];
    double started;
    atomic_int cancel;  // JOB_CANCEL_*
    pthread_mutex_t mu; // guards progress
    job_progress progress;
    bool progress_dirty;
    // Set by the worker, read by after_work on the loop thread:
    int rc;
    sh_diag d;
    json_t *result;     // the report, on success
    char out_dir[4096]; // the temp dir holding the artifact, or ""
    store_file *files;
    size_t nfiles;
    char (*names)[ENG_MODEL_NAME_MAX + 1];
    char (*paths)[4096];
    char (*shas)[65];
    struct job_run *next;
} job_run;

// Test seams: called on the loop thread right after a job is claimed
// (before it is in the running list), and again once it is listed, before
// it goes to a worker. Both NULL in the service.
typedef struct job_runner_hooks {
    void (*claimed)(void *ctx, job_runner *r, const char *id);
    void (*listed)(void *ctx, job_runner *r, const char *id);
    void *ctx;
} job_runner_hooks;

struct job_runner {
    store *s;
    job_config cfg;
    uv_loop_t loop;
    uv_async_t wake, stop;
    uv_timer_t tick;
    pthread_t thread;
    pthread_mutex_t mu; // guards running, busy, stopping, finished, on_end
    job_run *running;
    int busy;
    bool stopping;
    int64_t finished;
    job_end_fn on_end;
    void *on_end_ctx;
    job_runner_hooks hooks;
};

// Sets the test seams (any thread; takes effect at the next claim).
void job_runner_set_hooks(job_runner *r, const job_runner_hooks *h);

job_run *job_run_new(struct job_runner *r, const char *id);
void job_run_free(job_run *run);

// On a worker thread: runs the engine for the job.
void job_run_execute(job_run *run);

// On the loop thread: records how the job ended (one transaction), removes
// its temp dir, and returns the status recorded.
store_job_status job_run_record(struct job_runner *r, job_run *run);

#endif

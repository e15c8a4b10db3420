// jobs.h: the job runner: one libuv loop thread schedules queued jobs onto
// the libuv worker pool and records how they end.
//
// Life of a job: job_submit checks its spec against its inputs, records it
// `queued` (store/) and wakes the runner;
// the loop thread claims it (`running`, attempt counted) and hands it to a
// worker (uv_queue_work), which runs the engine; after_work, back on the
// loop thread, records the outcome in one transaction: `succeeded` with its
// artifact (written to a temp dir, fsync'd, moved into the blob store before
// the commit), `failed` with a problem object, or `cancelled`. Progress is
// kept in memory for cheap reads and written to SQLite at most twice a
// second. Cancellation is cooperative: an atomic flag the engine polls.
//
// Thread safety: every function may be called from any thread (the API's),
// except start and stop, which belong to the service's main thread.
#ifndef JOBS_JOBS_H
#define JOBS_JOBS_H

#include "common/err.h"
#include "engine/io/model.h"
#include "store/store.h"

#include <jansson.h>
#include <stdbool.h>

// How often a job may be interrupted (a crash, a restart) before it fails.
#define JOB_MAX_ATTEMPTS 3

typedef struct job_config {
    int workers;      // jobs run at once
    int job_threads;  // threads one job may use (engine helpers, BLAS)
    int max_attempts; // a job interrupted this often fails (< 1:
                      // JOB_MAX_ATTEMPTS)
} job_config;

typedef struct job_stats {
    int busy;         // jobs running now
    int workers;      // their limit
    int64_t finished; // jobs this process ended, by any outcome
} job_stats;

typedef struct job_runner job_runner;

// --- a job's inputs (inputs.c), resolved in one place for the API and the
// runner alike

// A dataset as a job reads it: its one file in the blob store.
typedef struct job_dataset {
    char path[4096]; // "" when the job names none
    char sha256[65];
    char kind[16]; // "tokens" or "inputs", as the upload found it
} job_dataset;

typedef struct job_inputs {
    eng_model *model;       // the checkpoint, headers read
    const char **model_sha; // per file of model, in its order (into files)
    json_t *files;          // the checkpoint's file rows
    job_dataset calibration, evaluation;
    eng_model *base; // movement's base checkpoint, or NULL
    json_t *base_files;
    job_dataset scores; // method scores' score tensors
} job_inputs;

// What a job names besides its checkpoint (each may be NULL).
typedef struct job_names {
    const char *calibration, *evaluation; // dataset ids
    const char *base;                     // a checkpoint id (movement)
    const char *scores;                   // a dataset id (method scores)
} job_names;

// Opens what a job names: the checkpoint's files as a model (headers only),
// the base checkpoint's likewise, and its datasets' blobs. On failure *in
// is left closed and the code says why: SH_ENOTFOUND with d->field naming
// the missing input ("checkpoint", "calibration.dataset", "base",
// "scores"), the engine's codes for a file it refuses, the store's for the
// database. Any thread; close with job_inputs_close (safe on a zeroed or
// closed one).
int job_inputs_open(job_inputs *in, store *s, const char *checkpoint,
                    const job_names *names, sh_diag *d);
void job_inputs_close(job_inputs *in);

// Allocation sensitivity's "from": the id of a succeeded sensitivity job
// of the same checkpoint (never a path of the service's machine). *report
// (when not NULL) gets its table (new reference). SH_ESPEC naming
// allocation.from otherwise; the store's codes.
int job_sensitivity_source(store *s, const char *from, const char *checkpoint,
                           json_t **report, sh_diag *d);

// --- submission (submit.c)

typedef struct job_request {
    const json_t *body;    // the spec as the client sent it
    const char *idem_key;  // Idempotency-Key, or NULL
    double check_deadline; // sh_time_mono() by which eng_check gives up
} job_request;

// Submits a job: parses the spec, checks it against its checkpoint and
// datasets (eng_check; datasets of the kind the model takes), records it
// queued and wakes r (which may be NULL). *job is the job resource (new
// reference); *created is false when the Idempotency-Key replays an
// earlier job. On failure nothing is recorded: SH_ESPEC with d naming the
// field (a bad spec, an input that does not exist), SH_ECONFLICT (the key
// came with another body), or the store's code. Any thread; it costs what
// the spec makes it cost (regexes against every tensor), so not an HTTP
// thread's.
int job_submit(store *s, job_runner *r, const job_request *req, json_t **job,
               bool *created, sh_diag *d);

// Recovers jobs a crash left running, then starts the loop thread.
int job_runner_start(job_runner **out, store *s, const job_config *cfg,
                     sh_diag *d);

// Says a job was queued (cheap; coalesces).
void job_runner_wake(job_runner *r);

// Asks a running job to stop. False when it is not running here.
bool job_runner_cancel(job_runner *r, const char *id);

// The live progress of a job running here (new reference), or NULL.
json_t *job_runner_progress(job_runner *r, const char *id);

void job_runner_stats(job_runner *r, job_stats *out);

// Stops claiming jobs; lets running ones finish within grace seconds, then
// cancels them and puts them back in the queue (attempt not counted);
// stops the loop thread. Frees the runner.
void job_runner_stop(job_runner *r, double grace_seconds);

// A hook for metrics: called on the loop thread when a job ends, with its
// method, final status and duration in seconds.
typedef void (*job_end_fn)(void *ctx, const char *method,
                           store_job_status status, double seconds);
void job_runner_on_end(job_runner *r, job_end_fn fn, void *ctx);

#endif

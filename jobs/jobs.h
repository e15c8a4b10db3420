// jobs.h: the job runner: one libuv loop thread schedules queued jobs onto
// the libuv worker pool and records how they end.
//
// Life of a job: the API inserts it `queued` (store/) and wakes the runner;
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
#include "store/store.h"

#include <jansson.h>
#include <stdbool.h>

typedef struct job_config {
    int workers;      // jobs run at once
    int job_threads;  // threads one job may use (engine helpers, BLAS)
    int max_attempts; // a job interrupted this often fails
} job_config;

typedef struct job_stats {
    int busy;         // jobs running now
    int workers;      // their limit
    int64_t finished; // jobs this process ended, by any outcome
} job_stats;

typedef struct job_runner job_runner;

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

// store.h: the data dir: SQLite metadata and content-addressed blobs.
//
//   <data>/shears.db           SQLite, WAL, synchronous=FULL
//   <data>/blobs/ab/abcdef...  every stored file, named by its SHA-256
//   <data>/tmp/                uploads and job outputs being written
//
// Every file of a checkpoint, a dataset or a job's artifact is a blob; the
// `files` table maps (owner id, name) to its digest. A blob is renamed into
// place before the rows that point at it are committed, and removed only
// after no row points at it, under one lock, so no row ever points at a
// missing file. Start-up removes what a crash left: temp files and blobs
// no row points at.
//
// Threads: a store is shared; each thread takes a connection from the pool
// for the time it needs one (store_conn_acquire / _release). Results come
// back as jansson objects whose field names are the API's.
#ifndef STORE_STORE_H
#define STORE_STORE_H

#include "common/err.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct store store;
typedef struct store_conn store_conn;

// Opens (creating or migrating) the data dir. The caller closes it.
int store_open(store **out, const char *data_dir, sh_diag *d);
void store_close(store *s);

// A connection for this thread's current work; never NULL (waits for one).
store_conn *store_conn_acquire(store *s);
void store_conn_release(store *s, store_conn *c);

// True when the database answers and the data dir is writable.
bool store_ready(store *s);

const char *store_data_dir(const store *s);

// --- files on disk

// Makes a fresh directory under tmp/ ("<prefix>XXXXXX") into buf.
int store_tmp_dir(store *s, const char *prefix, char *buf, size_t size);

// Bytes free for this process on the data dir's filesystem.
int store_free_space(const store *s, uint64_t *out);

// The ballast: a file of bytes (0: none) kept in the data dir so that,
// once the disk is full, releasing it leaves SQLite room to delete. Set
// once at start-up; it is made only while more than twice its size is
// free. store_ballast_release removes it (true when it was there);
// store_ballast_restore makes it again when the room is back. Deletes
// release it themselves when they hit a full disk. Any thread.
void store_ballast_set(store *s, uint64_t bytes);
bool store_ballast_release(store *s);
void store_ballast_restore(store *s);

// The path of a blob.
int store_blob_path(const store *s, const char *sha256, char *buf, size_t size);

// A file to add to the store: where it is now, its name and digest.
typedef struct store_file {
    const char *name;
    const char *path; // a temp file, moved into the blob store
    const char *sha256;
    uint64_t bytes;
} store_file;

// --- checkpoints and datasets

// One tensor of a checkpoint, as the API lists it.
typedef struct store_tensor {
    const char *name, *dtype;
    int ndim;
    const int64_t *shape; // ndim entries
    uint64_t params;
    const char *file; // the file of the checkpoint that holds it
} store_tensor;

// Adds a checkpoint: moves the files into the blob store (fsync'd, dir
// fsync'd) and commits its rows in one transaction. info holds the
// resource's fields (bytes, tensors, params, dtypes, architecture, format);
// tensors the per-tensor rows, one table row each so that a page of them
// costs the page. References are not stolen.
int store_checkpoint_add(store *s, const char *id, const char *name,
                         const json_t *info, const store_tensor *tensors,
                         size_t ntensors, const store_file *files, size_t n,
                         sh_diag *d);

// The resource (new reference) or SH_ENOTFOUND.
int store_checkpoint_get(store_conn *c, const char *id, json_t **out);

// A page of a checkpoint's tensors in file order: at most limit rows from
// position cursor (0: the first); *next is the cursor of the next page, 0
// at the end. SH_ENOTFOUND when there is no such checkpoint.
int store_checkpoint_tensors(store_conn *c, const char *id, int64_t cursor,
                             int limit, json_t **items, int64_t *next);

// Newest first, at most limit, before the position `cursor` (0: from the
// top). *next is the cursor of the following page, 0 when there is none.
int store_checkpoint_list(store_conn *c, int64_t cursor, int limit,
                          json_t **items, int64_t *next);

// Removes a checkpoint and the blobs nobody else uses. SH_ECONFLICT when a
// queued or running job uses it.
int store_checkpoint_delete(store *s, const char *id, sh_diag *d);

// A dataset: one safetensors file.
int store_dataset_add(store *s, const char *id, const char *name,
                      const json_t *info, const store_file *file, sh_diag *d);
int store_dataset_get(store_conn *c, const char *id, json_t **out);
int store_dataset_list(store_conn *c, int64_t cursor, int limit, json_t **items,
                       int64_t *next);
int store_dataset_delete(store *s, const char *id, sh_diag *d);

// The files of an owner (checkpoint, dataset or job id): an array of
// {name, bytes, sha256} (new reference), SH_ENOTFOUND when it has none.
int store_files_of(store_conn *c, const char *owner, json_t **out);

// --- jobs

typedef enum store_job_status {
    STORE_JOB_QUEUED,
    STORE_JOB_RUNNING,
    STORE_JOB_SUCCEEDED,
    STORE_JOB_FAILED,
    STORE_JOB_CANCELLED,
    STORE_JOB_STATUS_COUNT
} store_job_status;

const char *store_job_status_name(store_job_status s);
int store_job_status_parse(const char *word, store_job_status *out);

// A new job. spec is the spec with defaults filled in; the ids it names
// must exist. With an idempotency key already used, *out is that job and
// *created false; SH_ECONFLICT when the key came with another body (body
// digests differ).
typedef struct store_job_new {
    const char *id;
    const char *checkpoint;
    const char *calibration; // dataset id or NULL
    const char *evaluation;  // dataset id or NULL
    const json_t *spec;
    const char *idem_key;    // or NULL
    const char *body_sha256; // digest of the request, with idem_key
} store_job_new;

int store_job_add(store_conn *c, const store_job_new *j, json_t **out,
                  bool *created, sh_diag *d);

// The job resource (new reference) or SH_ENOTFOUND. "kind" is the spec's
// ("prune" where it names none); a job of kind sensitivity has no
// artifact (null): its table is its result.
int store_job_get(store_conn *c, const char *id, json_t **out);

// Newest first; status < 0, checkpoint NULL and kind NULL mean any (kind:
// the spec's "kind", "prune" where it names none).
int store_job_list(store_conn *c, int status, const char *checkpoint,
                   const char *kind, int64_t cursor, int limit, json_t **items,
                   int64_t *next);

// Claims the oldest queued job: running, attempts + 1, started now. Sets
// *id (size >= 48) and returns 0, or SH_ENOTFOUND when none is queued.
int store_job_claim(store_conn *c, char *id, size_t size);

// Records a running job's progress (a small JSON object).
int store_job_progress(store_conn *c, const char *id, const json_t *progress);

// Ends a running job. succeeded: result and the artifact files (moved into
// the blob store first, all in one transaction); failed/cancelled: error
// (kept as its code, field and message; the API words it) and no files.
// queued: put back (shutdown), attempts given back; but a job whose
// cancel was asked for meanwhile ends cancelled instead, so a restart does
// not run it again.
//
// A job's resource carries its error as {"code": "SH_E...", "field",
// "message"} (store_job_get and _list), or null.
int store_job_finish(store *s, const char *id, store_job_status status,
                     const json_t *result, const sh_diag *error,
                     const store_file *files, size_t n, sh_diag *d);

// Whether a cancel was asked for the job (*out; SH_ENOTFOUND when there is
// no such job).
int store_job_cancel_requested(store_conn *c, const char *id, bool *out);

// Cancels a queued job at once (returns 0), or marks a running one as
// asked to cancel (SH_EBUSY: the runner finishes it). SH_ECONFLICT when it
// has already ended.
int store_job_cancel(store *s, const char *id);

// Deletes an ended job and its artifact. SH_ECONFLICT while queued/running.
int store_job_delete(store *s, const char *id, sh_diag *d);

// Start-up: jobs left running by a crash go back to the queue, or fail
// with a reason once they were tried max_attempts times. Returns how many
// were requeued and failed.
int store_jobs_recover(store *s, int max_attempts, int *requeued, int *failed);

// Counts of jobs by status (array of STORE_JOB_STATUS_COUNT).
int store_job_counts(store_conn *c, int64_t *counts);

#endif

// jobs.c: the job table: the durable queue and each job's record. Every
// state change is one transaction (BEGIN IMMEDIATE, synchronous=FULL), so
// an acknowledged change survives a crash.
#include "store/store_int.h"

#include "common/util.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const status_names[STORE_JOB_STATUS_COUNT] = {
    [STORE_JOB_QUEUED] = "queued",       [STORE_JOB_RUNNING] = "running",
    [STORE_JOB_SUCCEEDED] = "succeeded", [STORE_JOB_FAILED] = "failed",
    [STORE_JOB_CANCELLED] = "cancelled",
};
static_assert(SH_ARRAY_LEN(status_names) == STORE_JOB_STATUS_COUNT,
              "one name per status");

const char *store_job_status_name(store_job_status s)
{
    return status_names[s];
}

int store_job_status_parse(const char *word, store_job_status *out)
{
    for (int i = 0; i < STORE_JOB_STATUS_COUNT; i++) {
        if (strcmp(word, status_names[i]) == 0) {
            *out = (store_job_status)i;
            return 0;
        }
    }
    return SH_EINVAL;
}

#define JOB_COLUMNS                                                            \
    "id, status, checkpoint_id, calibration_id, evaluation_id, spec, "         \
    "attempts, cancel_requested, created_ms, started_ms, finished_ms, "        \
    "progress, result, seq, error_code, error_field, error_message"

static json_t *json_or_null(json_t *j) { return j ? j : json_null(); }

static json_t *text_or_null(sqlite3_stmt *st, int col)
{
    return sqlite3_column_type(st, col) == SQLITE_NULL
               ? json_null()
               : json_string(store_col_text(st, col));
}

// The job resource from a row of JOB_COLUMNS.
static json_t *job_json(store_conn *c, sqlite3_stmt *st)
{
    const char *id = store_col_text(st, 0);
    const char *status = store_col_text(st, 1);
    json_t *j = json_object();
    json_object_set_new(j, "id", json_string(id));
    json_object_set_new(j, "status", json_string(status));
    json_object_set_new(j, "checkpoint", json_string(store_col_text(st, 2)));
    json_object_set_new(j, "calibration", text_or_null(st, 3));
    json_object_set_new(j, "evaluation", text_or_null(st, 4));
    json_t *spec = json_or_null(store_col_json(st, 5));
    const char *kind = json_string_value(json_object_get(spec, "kind"));
    json_object_set_new(j, "kind", json_string(kind ? kind : "prune"));
    json_object_set_new(j, "spec", spec);
    json_object_set_new(j, "attempts", json_integer(sqlite3_column_int(st, 6)));
    json_object_set_new(j, "cancel_requested",
                        json_boolean(sqlite3_column_int(st, 7)));
    json_object_set_new(j, "created",
                        store_time_json(sqlite3_column_int64(st, 8)));
    json_object_set_new(j, "started",
                        store_time_json(sqlite3_column_int64(st, 9)));
    json_object_set_new(j, "finished",
                        store_time_json(sqlite3_column_int64(st, 10)));
    json_object_set_new(j, "progress", json_or_null(store_col_json(st, 11)));
    json_object_set_new(j, "result", json_or_null(store_col_json(st, 12)));
    json_object_set_new(j, "error",
                        sqlite3_column_type(st, 14) == SQLITE_NULL
                            ? json_null()
                            : json_pack("{s:s, s:s, s:s}", "code",
                                        store_col_text(st, 14), "field",
                                        store_col_text(st, 15), "message",
                                        store_col_text(st, 16)));
    json_t *files = NULL;
    if (strcmp(status, "succeeded") == 0 && (!kind || !strcmp(kind, "prune")) &&
        store_files_of(c, id, &files) == 0)
        json_object_set_new(j, "artifact", json_pack("{s:o}", "files", files));
    else
        json_object_set_new(j, "artifact", json_null());
    return j;
}

int store_job_get(store_conn *c, const char *id, json_t **out)
{
    sqlite3_stmt *st =
        store_prepare(c, "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?");
    if (!st)
        return SH_EDB;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int r = sqlite3_step(st), rc = 0;
    if (r == SQLITE_ROW)
        *out = job_json(c, st);
    else
        rc = r == SQLITE_DONE ? SH_ENOTFOUND : store_fail(c, "job");
    store_done(c, st);
    return rc;
}

int store_job_list(store_conn *c, int status, const char *checkpoint,
                   const char *kind, int64_t cursor, int limit, json_t **items,
                   int64_t *next)
{
    sqlite3_stmt *st = store_prepare(
        c, "SELECT " JOB_COLUMNS " FROM jobs WHERE (?1 = 0 OR seq < ?1) "
           "AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR "
           "checkpoint_id = ?3) AND (?5 IS NULL OR "
           "coalesce(json_extract(spec, '$.kind'), 'prune') = ?5) "
           "ORDER BY seq DESC LIMIT ?4");
    if (!st)
        return SH_EDB;
    sqlite3_bind_int64(st, 1, cursor);
    if (status >= 0)
        sqlite3_bind_text(st, 2, status_names[status], -1, SQLITE_STATIC);
    if (checkpoint)
        sqlite3_bind_text(st, 3, checkpoint, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, limit + 1);
    if (kind)
        sqlite3_bind_text(st, 5, kind, -1, SQLITE_STATIC);
    json_t *list = json_array();
    int r, n = 0;
    *next = 0;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (n++ == limit) {
            *next = sqlite3_column_int64(st, 13) + 1;
            break;
        }
        json_array_append_new(list, job_json(c, st));
    }
    store_done(c, st);
    if (r != SQLITE_ROW && r != SQLITE_DONE) {
        json_decref(list);
        return store_fail(c, "jobs");
    }
    *items = list;
    return 0;
}

// Inside the insert's transaction: the ids the job names exist now, so a
// concurrent delete cannot slip in between the check and the insert.
static int check_refs(store_conn *c, const store_job_new *j, sh_diag *d)
{
    if (!store_row_exists(c, "SELECT 1 FROM checkpoints WHERE id = ?",
                          j->checkpoint))
        return sh_diag_set(d, SH_ENOTFOUND, "checkpoint",
                           "checkpoint %s does not exist", j->checkpoint);
    const char *ds[2] = {j->calibration, j->evaluation};
    const char *field[2] = {"calibration.dataset", "evaluation.dataset"};
    for (int i = 0; i < 2; i++)
        if (ds[i] &&
            !store_row_exists(c, "SELECT 1 FROM datasets WHERE id = ?", ds[i]))
            return sh_diag_set(d, SH_ENOTFOUND, field[i],
                               "dataset %s does not exist", ds[i]);
    return 0;
}

int store_job_add(store_conn *c, const store_job_new *j, json_t **out,
                  bool *created, sh_diag *d)
{
    char *spec = json_dumps(j->spec, JSON_COMPACT);
    if (!spec)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    char existing[64] = "";
    int rc = store_begin(c);
    if (rc != 0) {
        store_diag(d, rc);
        goto out;
    }
    if (j->idem_key) {
        sqlite3_stmt *st = store_prepare(
            c, "SELECT id, body_sha256 FROM jobs WHERE idem_key = ?");
        if (!st) {
            rc = store_diag(d, SH_EDB);
            goto out;
        }
        sqlite3_bind_text(st, 1, j->idem_key, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            snprintf(existing, sizeof existing, "%s", store_col_text(st, 0));
            if (strcmp(store_col_text(st, 1), j->body_sha256) != 0)
                rc = sh_diag_set(d, SH_ECONFLICT, "Idempotency-Key",
                                 "Idempotency-Key was used for job %s with "
                                 "a different request body",
                                 existing);
        }
        store_done(c, st);
        if (rc != 0 || existing[0])
            goto out;
    }
    if ((rc = check_refs(c, j, d)) != 0)
        goto out;
    sqlite3_stmt *st = store_prepare(
        c, "INSERT INTO jobs(id, checkpoint_id, calibration_id, "
           "evaluation_id, status, spec, idem_key, body_sha256, created_ms) "
           "VALUES(?,?,?,?,'queued',?,?,?,?)");
    if (!st) {
        rc = store_diag(d, SH_EDB);
        goto out;
    }
    sqlite3_bind_text(st, 1, j->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, j->checkpoint, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, j->calibration, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, j->evaluation, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, spec, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, j->idem_key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, j->body_sha256, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, sh_time_now_ms());
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = store_diag(d, store_fail(c, "insert job"));
    store_done(c, st);
    if (rc == 0 && (rc = store_commit(c)) != 0)
        store_diag(d, rc);
out:
    store_rollback(c);
    free(spec);
    if (rc != 0)
        return rc;
    *created = existing[0] == '\0';
    rc = store_job_get(c, *created ? j->id : existing, out);
    return rc == 0 ? 0 : sh_diag_set(d, rc, "", "cannot read the job back");
}

int store_job_claim(store_conn *c, char *id, size_t size)
{
    sqlite3_stmt *st = store_prepare(
        c, "UPDATE jobs SET status = 'running', attempts = attempts + 1, "
           "started_ms = ?, progress = NULL WHERE seq = (SELECT seq FROM "
           "jobs WHERE status = 'queued' ORDER BY seq LIMIT 1) RETURNING id");
    if (!st)
        return SH_EDB;
    sqlite3_bind_int64(st, 1, sh_time_now_ms());
    int r = sqlite3_step(st), rc = 0;
    if (r == SQLITE_ROW)
        snprintf(id, size, "%s", store_col_text(st, 0));
    else
        rc = r == SQLITE_DONE ? SH_ENOTFOUND : store_fail(c, "claim");
    store_done(c, st); // at once: an open RETURNING keeps the write lock
    return rc;
}

int store_job_progress(store_conn *c, const char *id, const json_t *progress)
{
    char *text = json_dumps(progress, JSON_COMPACT);
    if (!text)
        return SH_ENOMEM;
    sqlite3_stmt *st = store_prepare(
        c, "UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running'");
    int rc = st ? 0 : SH_EDB;
    if (st) {
        sqlite3_bind_text(st, 1, text, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = store_fail(c, "progress");
        store_done(c, st);
    }
    free(text);
    return rc;
}

static int job_finish_once(store *s, const char *id, store_job_status status,
                           const json_t *result, const sh_diag *error,
                           const store_file *files, size_t n, sh_diag *d)
{
    char *rtext = result ? json_dumps(result, JSON_COMPACT) : NULL;
    store_conn *c = store_conn_acquire(s);
    pthread_mutex_lock(&s->blob_mu);
    int rc = store_begin(c);
    if (rc != 0) {
        store_diag(d, rc);
        goto out;
    }
    if (status == STORE_JOB_SUCCEEDED &&
        (rc = store_files_put(s, c, id, files, n, d)) != 0)
        goto out;
    sqlite3_stmt *st = store_prepare(
        c, status == STORE_JOB_QUEUED
               ? "UPDATE jobs SET status = CASE WHEN cancel_requested THEN "
                 "'cancelled' ELSE 'queued' END, started_ms = CASE WHEN "
                 "cancel_requested THEN started_ms END, finished_ms = CASE "
                 "WHEN cancel_requested THEN ?2 END, progress = CASE WHEN "
                 "cancel_requested THEN progress END, attempts = CASE WHEN "
                 "cancel_requested THEN attempts ELSE max(attempts - 1, 0) "
                 "END, error_code = CASE WHEN cancel_requested THEN "
                 "'SH_ECANCELED' END, error_field = CASE WHEN "
                 "cancel_requested THEN '' END, error_message = CASE WHEN "
                 "cancel_requested THEN 'cancelled while the service "
                 "stopped' END WHERE id = ?1 AND status = 'running'"
               : "UPDATE jobs SET status = ?2, finished_ms = ?3, result = ?4, "
                 "error_code = ?5, error_field = ?6, error_message = ?7, "
                 "progress = CASE WHEN ?2 = 'succeeded' THEN "
                 "json_object('fraction', 1.0, 'phase', 'done') ELSE "
                 "progress END WHERE id = ?1 AND status = 'running'");
    if (!st) {
        rc = store_diag(d, SH_EDB);
        goto out;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (status == STORE_JOB_QUEUED) {
        sqlite3_bind_int64(st, 2, sh_time_now_ms());
    } else {
        sqlite3_bind_text(st, 2, status_names[status], -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, sh_time_now_ms());
        sqlite3_bind_text(st, 4, rtext, -1, SQLITE_STATIC);
        if (error) {
            sqlite3_bind_text(st, 5, sh_err_name(error->code), -1,
                              SQLITE_STATIC);
            sqlite3_bind_text(st, 6, error->field, -1, SQLITE_STATIC);
            sqlite3_bind_text(
                st, 7, error->msg[0] ? error->msg : sh_strerror(error->code),
                -1, SQLITE_STATIC);
        }
    }
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = store_diag(d, store_fail(c, "finish job"));
    else if (sqlite3_changes(c->db) != 1)
        rc = sh_diag_set(d, SH_ECONFLICT, "", "job %s is not running", id);
    store_done(c, st);
    if (rc == 0 && (rc = store_commit(c)) != 0)
        store_diag(d, rc);
out:
    if (rc != 0)
        store_rollback(c);
    pthread_mutex_unlock(&s->blob_mu);
    if (rc != 0 && status == STORE_JOB_SUCCEEDED)
        store_files_unplace(s, c, files, n);
    store_conn_release(s, c);
    free(rtext);
    return rc;
}

// A job's end is recorded even on a full disk: the ballast makes room.
int store_job_finish(store *s, const char *id, store_job_status status,
                     const json_t *result, const sh_diag *error,
                     const store_file *files, size_t n, sh_diag *d)
{
    int rc = job_finish_once(s, id, status, result, error, files, n, d);
    if (rc == SH_ENOSPC && status != STORE_JOB_SUCCEEDED &&
        store_ballast_release(s))
        rc = job_finish_once(s, id, status, result, error, files, n, d);
    return rc;
}

int store_job_cancel_requested(store_conn *c, const char *id, bool *out)
{
    sqlite3_stmt *st =
        store_prepare(c, "SELECT cancel_requested FROM jobs WHERE id = ?");
    if (!st)
        return SH_EDB;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int r = sqlite3_step(st), rc = 0;
    if (r == SQLITE_ROW)
        *out = sqlite3_column_int(st, 0) != 0;
    else
        rc = r == SQLITE_DONE ? SH_ENOTFOUND : store_fail(c, "cancel asked");
    store_done(c, st);
    return rc;
}

static int job_cancel_once(store_conn *c, const char *id)
{
    int rc = store_begin(c);
    if (rc != 0)
        return rc;
    sqlite3_stmt *st = store_prepare(c, "SELECT status FROM jobs WHERE id = ?");
    if (!st) {
        store_rollback(c);
        return SH_EDB;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    char status[16] = "";
    if (sqlite3_step(st) == SQLITE_ROW)
        snprintf(status, sizeof status, "%s", store_col_text(st, 0));
    store_done(c, st);
    const char *sql = NULL;
    if (!status[0])
        rc = SH_ENOTFOUND;
    else if (strcmp(status, "queued") == 0)
        sql = "UPDATE jobs SET status = 'cancelled', finished_ms = ?2, "
              "cancel_requested = 1, error_code = 'SH_ECANCELED', "
              "error_field = '', error_message = 'cancelled before it "
              "started' WHERE id = ?1";
    else if (strcmp(status, "running") == 0)
        sql = "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1";
    else
        rc = SH_ECONFLICT;
    if (sql && (st = store_prepare(c, sql))) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, sh_time_now_ms());
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = store_fail(c, "cancel");
        store_done(c, st);
    } else if (sql) {
        rc = SH_EDB;
    }
    if (rc == 0 && sql && (rc = store_commit(c)) == 0 &&
        strcmp(status, "running") == 0)
        rc = SH_EBUSY;
    store_rollback(c);
    return rc;
}

int store_job_cancel(store *s, const char *id)
{
    store_conn *c = store_conn_acquire(s);
    int rc = job_cancel_once(c, id);
    if (rc == SH_ENOSPC && store_ballast_release(s))
        rc = job_cancel_once(c, id);
    store_conn_release(s, c);
    return rc;
}

static int job_delete_once(store *s, const char *id, sh_diag *d)
{
    store_conn *c = store_conn_acquire(s);
    json_t *shas = NULL;
    int rc = store_begin(c);
    if (rc != 0) {
        store_diag(d, rc);
        goto out;
    }
    sqlite3_stmt *st =
        store_prepare(c, "DELETE FROM jobs WHERE id = ? AND status NOT IN "
                         "('queued','running') RETURNING id");
    if (!st) {
        rc = store_diag(d, SH_EDB);
        goto out;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    store_done(c, st);
    if (r != SQLITE_ROW) {
        rc = store_row_exists(c, "SELECT 1 FROM jobs WHERE id = ?", id)
                 ? sh_diag_set(d, SH_ECONFLICT, "",
                               "job %s has not ended; cancel it first", id)
                 : sh_diag_set(d, SH_ENOTFOUND, "", "no job %s", id);
        goto out;
    }
    if ((rc = store_files_drop(c, id, &shas)) == 0)
        rc = store_commit(c);
out:
    if (rc != 0)
        store_rollback(c);
    else
        store_blobs_sweep(s, c, shas);
    json_decref(shas);
    store_conn_release(s, c);
    return rc;
}

int store_job_delete(store *s, const char *id, sh_diag *d)
{
    int rc = job_delete_once(s, id, d);
    if (rc == SH_ENOSPC && store_ballast_release(s))
        rc = job_delete_once(s, id, d);
    if (rc == 0)
        store_ballast_restore(s);
    return rc;
}

// Runs one UPDATE with a time parameter and counts its rows.
static int update_count(store_conn *c, const char *sql, int64_t n, int *count)
{
    sqlite3_stmt *st = store_prepare(c, sql);
    if (!st)
        return SH_EDB;
    sqlite3_bind_int64(st, 1, sh_time_now_ms());
    sqlite3_bind_int64(st, 2, n);
    int rc = sqlite3_step(st) == SQLITE_DONE ? 0 : store_fail(c, "recover");
    store_done(c, st);
    if (count)
        *count = sqlite3_changes(c->db);
    return rc;
}

int store_jobs_recover(store *s, int max_attempts, int *requeued, int *failed)
{
    store_conn *c = store_conn_acquire(s);
    int cancelled = 0;
    int rc = store_begin(c);
    if (rc == 0)
        rc = update_count(
            c,
            "UPDATE jobs SET status = 'cancelled', finished_ms = ?1, "
            "error_code = 'SH_ECANCELED', error_field = '', error_message = "
            "'cancelled while the service stopped' WHERE status = 'running' "
            "AND cancel_requested = 1 AND ?2 >= 0",
            0, &cancelled);
    if (rc == 0)
        rc = update_count(
            c,
            "UPDATE jobs SET status = 'failed', finished_ms = ?1, "
            "error_code = 'SH_EINTERRUPTED', error_field = '', "
            "error_message = 'the service stopped while the job ran, ' || "
            "attempts || ' times; it is not retried again' WHERE status = "
            "'running' AND attempts >= ?2",
            max_attempts, failed);
    if (rc == 0)
        rc = update_count(c,
                          "UPDATE jobs SET status = 'queued', started_ms = "
                          "NULL, progress = NULL WHERE status = 'running' "
                          "AND ?1 > 0 AND ?2 >= 0",
                          0, requeued);
    if (rc == 0)
        rc = store_commit(c);
    if (rc != 0)
        store_rollback(c);
    store_conn_release(s, c);
    return rc;
}

int store_job_counts(store_conn *c, int64_t *counts)
{
    memset(counts, 0, STORE_JOB_STATUS_COUNT * sizeof *counts);
    sqlite3_stmt *st =
        store_prepare(c, "SELECT status, count(*) FROM jobs GROUP BY status");
    if (!st)
        return SH_EDB;
    while (sqlite3_step(st) == SQLITE_ROW) {
        store_job_status s;
        if (store_job_status_parse(store_col_text(st, 0), &s) == 0)
            counts[s] = sqlite3_column_int64(st, 1);
    }
    store_done(c, st);
    return 0;
}

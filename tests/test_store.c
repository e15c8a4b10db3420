// test_store.c: the store on its own: real SQLite files in a temp dir, no
// HTTP, no runner. The job table's life and records, the migration of rows
// older versions wrote, and its failure paths on purpose: a database
// another connection holds (SQLITE_BUSY) and a full disk (ENOSPC on a
// tmpfs of its own), each with the right code and nothing half-written.
#include "tests/helpers.h"

#include "common/sha256.h"
#include "common/util.h"
#include "store/store_int.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *jstr(json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

// A temp file under the store's tmp/ with n bytes of seed, and its row.
static void temp_file(store *s, const char *name, size_t n, int seed,
                      store_file *f, char sha[65], char path[4096])
{
    ck_assert_int_eq(store_tmp_dir(s, "t-", path, 4096), 0);
    strcat(path, "/f");
    unsigned char *bytes = malloc(n);
    for (size_t i = 0; i < n; i++)
        bytes[i] = (unsigned char)(i * 7 + (size_t)seed);
    th_write_file(path, bytes, n);
    free(bytes);
    ck_assert_int_eq(sh_sha256_file(path, sha), 0);
    *f = (store_file){.name = name, .path = path, .sha256 = sha, .bytes = n};
}

static int add_checkpoint(store *s, const char *id, int seed, sh_diag *d)
{
    store_file f;
    char sha[65], path[4096];
    temp_file(s, "model.safetensors", 1000, seed, &f, sha, path);
    json_t *info = json_object();
    int rc = store_checkpoint_add(s, id, "m", info, NULL, 0, &f, 1, d);
    json_decref(info);
    return rc;
}

static int add_job(store *s, const char *id, sh_diag *d)
{
    json_t *spec = json_pack("{s:s}", "method", "magnitude");
    store_job_new nj = {.id = id, .checkpoint = "ck_a", .spec = spec};
    store_conn *c = store_conn_acquire(s);
    json_t *job = NULL;
    bool created = false;
    int rc = store_job_add(c, &nj, &job, &created, d);
    store_conn_release(s, c);
    json_decref(job);
    json_decref(spec);
    return rc;
}

static json_t *get_job(store *s, const char *id)
{
    json_t *job = NULL;
    store_conn *c = store_conn_acquire(s);
    ck_assert_int_eq(store_job_get(c, id, &job), 0);
    store_conn_release(s, c);
    return job;
}

static void claim(store *s, const char *want)
{
    char id[64];
    store_conn *c = store_conn_acquire(s);
    ck_assert_int_eq(store_job_claim(c, id, sizeof id), 0);
    store_conn_release(s, c);
    ck_assert_str_eq(id, want);
}

typedef struct fx {
    char *dir, *data;
    store *s;
} fx;

static void fx_open(fx *f)
{
    f->dir = th_tmpdir();
    f->data = th_path(f->dir, "data");
    sh_diag d;
    ck_assert_int_eq(store_open(&f->s, f->data, &d), 0);
    ck_assert_int_eq(add_checkpoint(f->s, "ck_a", 1, &d), 0);
}

static void fx_close(fx *f)
{
    store_close(f->s);
    th_rmtree(f->dir);
    free(f->data);
    free(f->dir);
}

// --- a job's life and its records

START_TEST(test_job_claim_finish_and_artifact)
{
    fx f;
    fx_open(&f);
    sh_diag d;
    ck_assert_int_eq(add_job(f.s, "job_1", &d), 0);
    ck_assert_int_eq(add_job(f.s, "job_2", &d), 0);
    claim(f.s, "job_1"); // oldest first
    json_t *job = get_job(f.s, "job_1");
    ck_assert_str_eq(jstr(job, "status"), "running");
    ck_assert_int_eq(json_integer_value(json_object_get(job, "attempts")), 1);
    json_decref(job);
    store_file out;
    char sha[65], path[4096];
    temp_file(f.s, "model.safetensors", 500, 9, &out, sha, path);
    json_t *result = json_pack("{s:f}", "sparsity", 0.5);
    ck_assert_int_eq(store_job_finish(f.s, "job_1", STORE_JOB_SUCCEEDED, result,
                                      NULL, &out, 1, &d),
                     0);
    json_decref(result);
    job = get_job(f.s, "job_1");
    ck_assert_str_eq(jstr(job, "status"), "succeeded");
    ck_assert(json_is_null(json_object_get(job, "error")));
    json_t *files = json_object_get(json_object_get(job, "artifact"), "files");
    ck_assert_str_eq(jstr(json_array_get(files, 0), "sha256"), sha);
    json_decref(job);
    // Finishing twice is a conflict, and deleting a queued job too.
    ck_assert_int_eq(store_job_finish(f.s, "job_1", STORE_JOB_FAILED, NULL,
                                      NULL, NULL, 0, &d),
                     SH_ECONFLICT);
    ck_assert_int_eq(store_job_delete(f.s, "job_2", &d), SH_ECONFLICT);
    ck_assert_int_eq(store_job_delete(f.s, "job_1", &d), 0);
    char blob[4096];
    store_blob_path(f.s, sha, blob, sizeof blob);
    ck_assert(!sh_path_exists(blob)); // no row points at it: gone
    ck_assert_int_eq(store_job_delete(f.s, "job_1", &d), SH_ENOTFOUND);
    fx_close(&f);
}
END_TEST

// The store keeps a failure as code, field and message; no words of HTTP.
START_TEST(test_job_error_kept_as_code_field_message)
{
    fx f;
    fx_open(&f);
    sh_diag d, e;
    ck_assert_int_eq(add_job(f.s, "job_1", &d), 0);
    claim(f.s, "job_1");
    sh_diag_set(&e, SH_ENUMERIC, "fc1.weight", "Cholesky failed");
    ck_assert_int_eq(
        store_job_finish(f.s, "job_1", STORE_JOB_FAILED, NULL, &e, NULL, 0, &d),
        0);
    json_t *job = get_job(f.s, "job_1");
    json_t *err = json_object_get(job, "error");
    ck_assert_str_eq(jstr(err, "code"), "SH_ENUMERIC");
    ck_assert_str_eq(jstr(err, "field"), "fc1.weight");
    ck_assert_str_eq(jstr(err, "message"), "Cholesky failed");
    ck_assert_ptr_null(json_object_get(err, "type"));
    json_decref(job);
    fx_close(&f);
}
END_TEST

START_TEST(test_job_cancel_queued_and_running)
{
    fx f;
    fx_open(&f);
    sh_diag d;
    ck_assert_int_eq(add_job(f.s, "job_1", &d), 0);
    ck_assert_int_eq(add_job(f.s, "job_2", &d), 0);
    ck_assert_int_eq(store_job_cancel(f.s, "job_1"), 0); // queued: at once
    json_t *job = get_job(f.s, "job_1");
    ck_assert_str_eq(jstr(job, "status"), "cancelled");
    ck_assert_str_eq(jstr(json_object_get(job, "error"), "code"),
                     "SH_ECANCELED");
    json_decref(job);
    claim(f.s, "job_2");
    ck_assert_int_eq(store_job_cancel(f.s, "job_2"), SH_EBUSY);
    bool asked = false;
    store_conn *c = store_conn_acquire(f.s);
    ck_assert_int_eq(store_job_cancel_requested(c, "job_2", &asked), 0);
    ck_assert_int_eq(store_job_cancel_requested(c, "job_x", &asked),
                     SH_ENOTFOUND);
    store_conn_release(f.s, c);
    ck_assert(asked);
    ck_assert_int_eq(store_job_cancel(f.s, "job_1"), SH_ECONFLICT);
    ck_assert_int_eq(store_job_cancel(f.s, "job_x"), SH_ENOTFOUND);
    fx_close(&f);
}
END_TEST

// Issue 10, defect 5: a shutdown's requeue must not undo a user's cancel
// that reached the row, or the job runs again after the restart.
START_TEST(test_requeue_after_cancel_ends_cancelled)
{
    fx f;
    fx_open(&f);
    sh_diag d;
    ck_assert_int_eq(add_job(f.s, "job_1", &d), 0);
    claim(f.s, "job_1");
    ck_assert_int_eq(store_job_cancel(f.s, "job_1"), SH_EBUSY);
    ck_assert_int_eq(store_job_finish(f.s, "job_1", STORE_JOB_QUEUED, NULL,
                                      NULL, NULL, 0, &d),
                     0);
    json_t *job = get_job(f.s, "job_1");
    ck_assert_str_eq(jstr(job, "status"), "cancelled");
    ck_assert_str_eq(jstr(json_object_get(job, "error"), "code"),
                     "SH_ECANCELED");
    json_decref(job);
    store_conn *c = store_conn_acquire(f.s);
    char id[64];
    ck_assert_int_eq(store_job_claim(c, id, sizeof id), SH_ENOTFOUND);
    store_conn_release(f.s, c);
    fx_close(&f);
}
END_TEST

// Start-up after a crash: asked-to-cancel jobs end cancelled, jobs tried
// too often fail (interrupted), the rest go back to the queue.
START_TEST(test_recover_after_crash)
{
    fx f;
    fx_open(&f);
    sh_diag d;
    const char *ids[] = {"job_1", "job_2", "job_3"};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(add_job(f.s, ids[i], &d), 0);
        claim(f.s, ids[i]);
    }
    ck_assert_int_eq(store_job_cancel(f.s, "job_1"), SH_EBUSY);
    store_conn *c = store_conn_acquire(f.s);
    ck_assert_int_eq(
        store_exec(c, "UPDATE jobs SET attempts = 3 WHERE id = 'job_2'"), 0);
    store_conn_release(f.s, c);
    int requeued = 0, failed = 0;
    ck_assert_int_eq(store_jobs_recover(f.s, 3, &requeued, &failed), 0);
    ck_assert_int_eq(requeued, 1);
    ck_assert_int_eq(failed, 1);
    json_t *j1 = get_job(f.s, "job_1"), *j2 = get_job(f.s, "job_2"),
           *j3 = get_job(f.s, "job_3");
    ck_assert_str_eq(jstr(j1, "status"), "cancelled");
    ck_assert_str_eq(jstr(j2, "status"), "failed");
    json_t *err = json_object_get(j2, "error");
    ck_assert_str_eq(jstr(err, "code"), "SH_EINTERRUPTED");
    ck_assert_ptr_nonnull(strstr(jstr(err, "message"), "3 times"));
    ck_assert_str_eq(jstr(j3, "status"), "queued");
    json_decref(j1);
    json_decref(j2);
    json_decref(j3);
    fx_close(&f);
}
END_TEST

// --- migration: rows an older version wrote read the same

// The schema of version 2, as it shipped, with the errors it wrote.
static const char *const v2_db =
    "CREATE TABLE checkpoints (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT NOT NULL UNIQUE, name TEXT NOT NULL, created_ms INTEGER NOT "
    "  NULL, info TEXT NOT NULL);"
    "CREATE TABLE datasets (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT NOT NULL UNIQUE, name TEXT NOT NULL, created_ms INTEGER NOT "
    "  NULL, info TEXT NOT NULL);"
    "CREATE TABLE files (owner TEXT NOT NULL, name TEXT NOT NULL,"
    "  sha256 TEXT NOT NULL, bytes INTEGER NOT NULL, PRIMARY KEY (owner, "
    "  name));"
    "CREATE INDEX files_sha256 ON files(sha256);"
    "CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT NOT NULL UNIQUE, checkpoint_id TEXT NOT NULL,"
    "  calibration_id TEXT, evaluation_id TEXT, status TEXT NOT NULL CHECK "
    "  (status IN ('queued','running','succeeded','failed','cancelled')),"
    "  spec TEXT NOT NULL, idem_key TEXT UNIQUE, body_sha256 TEXT,"
    "  attempts INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT "
    "  NULL DEFAULT 0, created_ms INTEGER NOT NULL, started_ms INTEGER,"
    "  finished_ms INTEGER, progress TEXT, result TEXT, error TEXT);"
    "CREATE INDEX jobs_status ON jobs(status, seq);"
    "CREATE INDEX jobs_checkpoint ON jobs(checkpoint_id, seq);"
    "CREATE INDEX jobs_datasets ON jobs(calibration_id, evaluation_id);"
    "CREATE TABLE tensors (checkpoint_id TEXT NOT NULL, seq INTEGER NOT "
    "  NULL, name TEXT NOT NULL, dtype TEXT NOT NULL, shape TEXT NOT NULL,"
    "  params INTEGER NOT NULL, file TEXT NOT NULL,"
    "  PRIMARY KEY (checkpoint_id, seq)) WITHOUT ROWID;"
    "INSERT INTO jobs(id, checkpoint_id, status, spec, created_ms, error) "
    "VALUES ('job_n', 'ck_a', 'failed', '{}', 1, '{\"type\":\"urn:shears:"
    "problem:numerical\",\"title\":\"Numerical failure\",\"detail\":"
    "\"not positive definite\",\"field\":\"fc1.weight\"}'),"
    "('job_c', 'ck_a', 'cancelled', '{}', 2, '{\"type\":\"urn:shears:"
    "problem:cancelled\",\"title\":\"Cancelled\",\"detail\":\"cancelled "
    "before it started\"}'),"
    "('job_i', 'ck_a', 'failed', '{}', 3, json_object('type', "
    "'urn:shears:problem:interrupted', 'title', 'Interrupted too often', "
    "'detail', 'the service stopped while the job ran, 3 times')),"
    "('job_m', 'ck_a', 'failed', '{}', 4, '{\"type\":\"urn:shears:problem:"
    "missing-input\",\"title\":\"Input missing\",\"detail\":\"gone\"}'),"
    "('job_x', 'ck_a', 'failed', '{}', 5, '{\"type\":\"urn:shears:problem:"
    "internal\",\"title\":\"Internal error\",\"detail\":\"odd\"}'),"
    "('job_s', 'ck_a', 'succeeded', '{}', 6, NULL);"
    "PRAGMA user_version=2;";

START_TEST(test_migration_keeps_old_errors)
{
    char *dir = th_tmpdir();
    char *db = th_path(dir, "shears.db");
    sqlite3 *raw = NULL;
    ck_assert_int_eq(sqlite3_open(db, &raw), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(raw, v2_db, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(raw);
    store *s = NULL;
    sh_diag d;
    ck_assert_int_eq(store_open(&s, dir, &d), 0);
    struct {
        const char *id, *code, *field, *message;
    } want[] = {
        {"job_n", "SH_ENUMERIC", "fc1.weight", "not positive definite"},
        {"job_c", "SH_ECANCELED", "", "cancelled before it started"},
        {"job_i", "SH_EINTERRUPTED", "",
         "the service stopped while the job ran, 3 times"},
        {"job_m", "SH_ENOTFOUND", "", "gone"},
        {"job_x", "SH_EIO", "", "odd"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        json_t *job = get_job(s, want[i].id);
        json_t *err = json_object_get(job, "error");
        ck_assert_str_eq(jstr(err, "code"), want[i].code);
        ck_assert_str_eq(jstr(err, "field"), want[i].field);
        ck_assert_str_eq(jstr(err, "message"), want[i].message);
        json_decref(job);
    }
    json_t *job = get_job(s, "job_s");
    ck_assert(json_is_null(json_object_get(job, "error")));
    json_decref(job);
    store_close(s);
    // Opened again: nothing more to migrate, the same rows.
    ck_assert_int_eq(store_open(&s, dir, &d), 0);
    job = get_job(s, "job_n");
    ck_assert_str_eq(jstr(json_object_get(job, "error"), "code"),
                     "SH_ENUMERIC");
    json_decref(job);
    store_close(s);
    th_rmtree(dir);
    free(db);
    free(dir);
}
END_TEST

// --- failure paths: a busy database, a full disk

static bool blob_exists(store *s, const char *sha)
{
    char blob[4096];
    store_blob_path(s, sha, blob, sizeof blob);
    return sh_path_exists(blob);
}

static bool checkpoint_exists(store *s, const char *id)
{
    json_t *ck = NULL;
    store_conn *c = store_conn_acquire(s);
    int rc = store_checkpoint_get(c, id, &ck);
    store_conn_release(s, c);
    json_decref(ck);
    return rc == 0;
}

static bool job_exists(store *s, const char *id)
{
    json_t *job = NULL;
    store_conn *c = store_conn_acquire(s);
    int rc = store_job_get(c, id, &job);
    store_conn_release(s, c);
    json_decref(job);
    return rc == 0;
}

// Another connection holds the write lock: every write says SH_EBUSY once
// the wait is over, and none of them leaves a row or a blob behind.
START_TEST(test_busy_database_says_busy_and_writes_nothing)
{
    fx f;
    fx_open(&f);
    sh_diag d;
    ck_assert_int_eq(add_job(f.s, "job_1", &d), 0);
    store_file file;
    char sha[65], path[4096];
    temp_file(f.s, "model.safetensors", 3000, 5, &file, sha, path);
    store_busy_timeout(f.s, 200);
    char *db = th_path(f.data, "shears.db");
    sqlite3 *other = NULL;
    ck_assert_int_eq(sqlite3_open(db, &other), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL),
                     SQLITE_OK);
    ck_assert_int_eq(add_job(f.s, "job_2", &d), SH_EBUSY);
    ck_assert_int_eq(d.code, SH_EBUSY);
    json_t *info = json_object();
    ck_assert_int_eq(
        store_checkpoint_add(f.s, "ck_b", "m", info, NULL, 0, &file, 1, &d),
        SH_EBUSY);
    json_decref(info);
    ck_assert_int_eq(store_job_cancel(f.s, "job_1"), SH_EBUSY);
    char id[64];
    store_conn *c = store_conn_acquire(f.s);
    ck_assert_int_eq(store_job_claim(c, id, sizeof id), SH_EBUSY);
    store_conn_release(f.s, c);
    ck_assert_int_eq(store_job_delete(f.s, "job_1", &d), SH_EBUSY);
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(other);
    // Nothing of the refused writes is there.
    ck_assert(!job_exists(f.s, "job_2"));
    ck_assert(!checkpoint_exists(f.s, "ck_b"));
    ck_assert(!blob_exists(f.s, sha));
    json_t *job = get_job(f.s, "job_1");
    ck_assert_str_eq(jstr(job, "status"), "queued");
    ck_assert(!json_is_true(json_object_get(job, "cancel_requested")));
    json_decref(job);
    claim(f.s, "job_1"); // and the store works again
    free(db);
    fx_close(&f);
}
END_TEST

// In a child whose data dir is a small tmpfs: fills it, then checks that
// writes fail with SH_ENOSPC and leave nothing, and that a job's end is
// recorded all the same (the ballast makes room). Returns the step that
// went wrong, 0 when none.
#define STEP(cond)                                                             \
    do {                                                                       \
        step++;                                                                \
        if (!(cond))                                                           \
            return step;                                                       \
    } while (0)

static int full_disk(const char *dir, void *ctx)
{
    (void)ctx;
    int step = 0;
    store *s = NULL;
    sh_diag d;
    STEP(store_open(&s, dir, &d) == 0);
    store_ballast_set(s, 128 * 1024);
    STEP(add_checkpoint(s, "ck_a", 1, &d) == 0);
    STEP(add_job(s, "job_1", &d) == 0);
    char id[64];
    store_conn *c = store_conn_acquire(s);
    STEP(store_job_claim(c, id, sizeof id) == 0);
    store_conn_release(s, c);
    store_file file;
    char sha[65], path[4096];
    temp_file(s, "model.safetensors", 3000, 7, &file, sha, path);
    th_fill_disk(dir);
    STEP(add_job(s, "job_2", &d) == SH_ENOSPC);
    STEP(d.code == SH_ENOSPC && strstr(d.msg, "full"));
    json_t *info = json_object();
    STEP(store_checkpoint_add(s, "ck_b", "m", info, NULL, 0, &file, 1, &d) ==
         SH_ENOSPC);
    json_decref(info);
    STEP(!blob_exists(s, sha));
    sh_diag e;
    sh_diag_set(&e, SH_ENOSPC, "", "no room for the output");
    STEP(store_job_finish(s, "job_1", STORE_JOB_FAILED, NULL, &e, NULL, 0,
                          &d) == 0);
    char *filler = th_path(dir, "filler");
    unlink(filler);
    free(filler);
    STEP(!job_exists(s, "job_2"));
    STEP(!checkpoint_exists(s, "ck_b"));
    json_t *job = NULL;
    c = store_conn_acquire(s);
    STEP(store_job_get(c, "job_1", &job) == 0);
    store_conn_release(s, c);
    STEP(strcmp(jstr(job, "status"), "failed") == 0);
    STEP(strcmp(jstr(json_object_get(job, "error"), "code"), "SH_ENOSPC") == 0);
    json_decref(job);
    STEP(add_job(s, "job_3", &d) == 0); // room again: writes go through
    store_close(s);
    return 0;
}

START_TEST(test_full_disk_says_enospc_and_writes_nothing)
{
    char *dir = th_tmpdir();
    char *data = th_path(dir, "data");
    int rc = th_in_tmpfs(data, "2m", full_disk, NULL);
    ck_assert_msg(rc == 0, "full disk: step %d went wrong (-1: no tmpfs)", rc);
    th_rmtree(dir);
    free(data);
    free(dir);
}
END_TEST

Suite *suite_store(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("jobs");
    tcase_add_test(tc, test_job_claim_finish_and_artifact);
    tcase_add_test(tc, test_job_error_kept_as_code_field_message);
    tcase_add_test(tc, test_job_cancel_queued_and_running);
    tcase_add_test(tc, test_requeue_after_cancel_ends_cancelled);
    tcase_add_test(tc, test_recover_after_crash);
    suite_add_tcase(s, tc);
    tc = tcase_create("migrate");
    tcase_add_test(tc, test_migration_keeps_old_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("failures");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_busy_database_says_busy_and_writes_nothing);
    tcase_add_test(tc, test_full_disk_says_enospc_and_writes_nothing);
    suite_add_tcase(s, tc);
    return s;
}

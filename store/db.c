// db.c: opening the data dir, schema migrations, the connection pool, the
// blob store and the start-up sweep.
#include "store/store_int.h"

#include "common/log.h"
#include "common/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

// Each entry moves the schema from version i to i + 1; never edit one that
// shipped, append a new one.
static const char *const migrations[] = {
    "CREATE TABLE checkpoints ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT NOT NULL UNIQUE,"
    "  name TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  info TEXT NOT NULL,"
    "  tensors TEXT NOT NULL);"
    "CREATE TABLE datasets ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT NOT NULL UNIQUE,"
    "  name TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL,"
    "  info TEXT NOT NULL);"
    "CREATE TABLE files ("
    "  owner TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  sha256 TEXT NOT NULL,"
    "  bytes INTEGER NOT NULL,"
    "  PRIMARY KEY (owner, name));"
    "CREATE INDEX files_sha256 ON files(sha256);"
    "CREATE TABLE jobs ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT NOT NULL UNIQUE,"
    "  checkpoint_id TEXT NOT NULL,"
    "  calibration_id TEXT,"
    "  evaluation_id TEXT,"
    "  status TEXT NOT NULL CHECK (status IN"
    "    ('queued','running','succeeded','failed','cancelled')),"
    "  spec TEXT NOT NULL,"
    "  idem_key TEXT UNIQUE,"
    "  body_sha256 TEXT,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  cancel_requested INTEGER NOT NULL DEFAULT 0,"
    "  created_ms INTEGER NOT NULL,"
    "  started_ms INTEGER,"
    "  finished_ms INTEGER,"
    "  progress TEXT,"
    "  result TEXT,"
    "  error TEXT);"
    "CREATE INDEX jobs_status ON jobs(status, seq);"
    "CREATE INDEX jobs_checkpoint ON jobs(checkpoint_id, seq);"
    "CREATE INDEX jobs_datasets ON jobs(calibration_id, evaluation_id);",

    // 2: a checkpoint's tensors as rows, so a page of them costs the page.
    "CREATE TABLE tensors ("
    "  checkpoint_id TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  name TEXT NOT NULL,"
    "  dtype TEXT NOT NULL,"
    "  shape TEXT NOT NULL,"
    "  params INTEGER NOT NULL,"
    "  file TEXT NOT NULL,"
    "  PRIMARY KEY (checkpoint_id, seq)) WITHOUT ROWID;"
    "INSERT INTO tensors SELECT c.id, CAST(t.key AS INTEGER),"
    "  json_extract(t.value, '$.name'), json_extract(t.value, '$.dtype'),"
    "  json_extract(t.value, '$.shape'), json_extract(t.value, '$.params'),"
    "  json_extract(t.value, '$.file')"
    "  FROM checkpoints c, json_each(c.tensors) t;"
    "ALTER TABLE checkpoints DROP COLUMN tensors;",

    // 3: a job's error as (code, field, message); the API words it. Rows
    // written as problem objects get the code their type stood for.
    "ALTER TABLE jobs ADD COLUMN error_code TEXT;"
    "ALTER TABLE jobs ADD COLUMN error_field TEXT;"
    "ALTER TABLE jobs ADD COLUMN error_message TEXT;"
    "UPDATE jobs SET"
    "  error_code = CASE substr(json_extract(error, '$.type'), 20)"
    "    WHEN 'numerical' THEN 'SH_ENUMERIC'"
    "    WHEN 'invalid-checkpoint' THEN 'SH_EFORMAT'"
    "    WHEN 'invalid-spec' THEN 'SH_ESPEC'"
    "    WHEN 'unsupported' THEN 'SH_EUNSUPPORTED'"
    "    WHEN 'io' THEN 'SH_EIO'"
    "    WHEN 'out-of-memory' THEN 'SH_ENOMEM'"
    "    WHEN 'cancelled' THEN 'SH_ECANCELED'"
    "    WHEN 'missing-input' THEN 'SH_ENOTFOUND'"
    "    WHEN 'insufficient-storage' THEN 'SH_ENOSPC'"
    "    WHEN 'interrupted' THEN 'SH_EINTERRUPTED'"
    "    ELSE 'SH_EIO' END,"
    "  error_field = coalesce(json_extract(error, '$.field'), ''),"
    "  error_message = coalesce(json_extract(error, '$.detail'), '')"
    "  WHERE error IS NOT NULL AND json_valid(error);"
    "UPDATE jobs SET error_code = 'SH_EIO', error_field = '',"
    "  error_message = error WHERE error IS NOT NULL AND NOT json_valid(error);"
    "ALTER TABLE jobs DROP COLUMN error;",
};

// --- statements

static int code_of(int sqlite_code)
{
    switch (sqlite_code & 0xff) {
    case SQLITE_FULL: return SH_ENOSPC;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return SH_EBUSY;
    default: return SH_EDB;
    }
}

int store_fail(store_conn *c, const char *what)
{
    int code = sqlite3_extended_errcode(c->db);
    SH_ERROR("database error", "op", what, "sqlite", sqlite3_errmsg(c->db));
    return code_of(code);
}

int store_diag(sh_diag *d, int code)
{
    const char *msg = code == SH_ENOSPC
                          ? "the disk of the data dir is full; delete jobs, "
                            "checkpoints or datasets to make room"
                      : code == SH_EBUSY ? "database busy; try again"
                                         : "database error";
    return sh_diag_set(d, code, "", "%s", msg);
}

int store_exec(store_conn *c, const char *sql)
{
    char *err = NULL;
    if (sqlite3_exec(c->db, sql, NULL, NULL, &err) != SQLITE_OK) {
        int code = code_of(sqlite3_extended_errcode(c->db));
        SH_ERROR("database error", "sql", sql, "sqlite", err ? err : "?");
        sqlite3_free(err);
        return code;
    }
    return 0;
}

sqlite3_stmt *store_prepare(store_conn *c, const char *sql)
{
    bool cacheable = true;
    for (size_t i = 0; i < c->ncache; i++) {
        if (c->cache[i].sql != sql)
            continue;
        if (!sqlite3_stmt_busy(c->cache[i].st))
            return c->cache[i].st;
        cacheable = false; // in use further up the stack: a fresh one
        break;
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(c->db, sql, -1,
                           cacheable ? SQLITE_PREPARE_PERSISTENT : 0, &st,
                           NULL) != SQLITE_OK) {
        store_fail(c, sql);
        return NULL;
    }
    if (cacheable && c->ncache < STORE_STMT_CACHE) {
        c->cache[c->ncache].sql = sql;
        c->cache[c->ncache++].st = st;
    }
    return st;
}

void store_done(store_conn *c, sqlite3_stmt *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < c->ncache; i++) {
        if (c->cache[i].st == st) {
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return;
        }
    }
    sqlite3_finalize(st); // not cached: made fresh for a nested use
}

static void conn_close(store_conn *c)
{
    for (size_t i = 0; i < c->ncache; i++)
        sqlite3_finalize(c->cache[i].st);
    sqlite3_close(c->db);
    free(c);
}

bool store_row_exists(store_conn *c, const char *sql, const char *id)
{
    sqlite3_stmt *st = store_prepare(c, sql);
    if (!st)
        return false;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    bool found = sqlite3_step(st) == SQLITE_ROW;
    store_done(c, st);
    return found;
}

int store_begin(store_conn *c) { return store_exec(c, "BEGIN IMMEDIATE"); }
int store_commit(store_conn *c) { return store_exec(c, "COMMIT"); }

void store_rollback(store_conn *c)
{
    if (!sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
}

const char *store_col_text(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    return t ? (const char *)t : "";
}

json_t *store_col_json(sqlite3_stmt *st, int col)
{
    if (sqlite3_column_type(st, col) == SQLITE_NULL)
        return NULL;
    return json_loads(store_col_text(st, col), 0, NULL);
}

json_t *store_time_json(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    char buf[40];
    sh_time_rfc3339(buf, sizeof buf, ms);
    return json_string(buf);
}

// --- connections

static int conn_open(store *s, store_conn **out)
{
    store_conn *c = calloc(1, sizeof *c);
    if (!c)
        return SH_ENOMEM;
    int flags =
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(s->db_path, &c->db, flags, NULL) != SQLITE_OK) {
        SH_ERROR("cannot open the database", "path", s->db_path, "sqlite",
                 c->db ? sqlite3_errmsg(c->db) : "?");
        sqlite3_close(c->db);
        free(c);
        return SH_EDB;
    }
    sqlite3_busy_timeout(c->db, s->busy_ms);
    int rc = store_exec(c, "PRAGMA journal_mode=WAL;"
                           "PRAGMA synchronous=FULL;"
                           "PRAGMA foreign_keys=ON;");
    if (rc != 0) {
        sqlite3_close(c->db);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

store_conn *store_conn_acquire(store *s)
{
    pthread_mutex_lock(&s->pool_mu);
    store_conn *c = s->free_conns;
    if (c)
        s->free_conns = c->next;
    pthread_mutex_unlock(&s->pool_mu);
    if (c)
        return c;
    // Opening can only fail if the data dir went away; keep trying so
    // callers never see NULL, and say why in the log.
    while (conn_open(s, &c) != 0)
        sleep(1);
    return c;
}

void store_conn_release(store *s, store_conn *c)
{
    if (!c)
        return;
    store_rollback(c); // a transaction left open by mistake ends here
    pthread_mutex_lock(&s->pool_mu);
    c->next = s->free_conns;
    s->free_conns = c;
    pthread_mutex_unlock(&s->pool_mu);
}

// --- schema

static int migrate(store_conn *c, sh_diag *d)
{
    sqlite3_stmt *st = store_prepare(c, "PRAGMA user_version");
    if (!st || sqlite3_step(st) != SQLITE_ROW) {
        store_done(c, st);
        return sh_diag_set(d, SH_EDB, "", "cannot read the schema version");
    }
    int version = sqlite3_column_int(st, 0);
    store_done(c, st);
    int latest = (int)SH_ARRAY_LEN(migrations);
    if (version > latest)
        return sh_diag_set(d, SH_EDB, "",
                           "the database has schema version %d; this shears "
                           "knows up to %d (a newer shears wrote it)",
                           version, latest);
    for (int v = version; v < latest; v++) {
        char bump[64];
        snprintf(bump, sizeof bump, "PRAGMA user_version=%d", v + 1);
        if (store_begin(c) != 0 || store_exec(c, migrations[v]) != 0 ||
            store_exec(c, bump) != 0 || store_commit(c) != 0) {
            store_rollback(c);
            return sh_diag_set(d, SH_EDB, "", "migration to version %d failed",
                               v + 1);
        }
        SH_INFOF("database schema migrated to version %d", v + 1);
    }
    return 0;
}

// --- blobs

int store_blob_path(const store *s, const char *sha, char *buf, size_t size)
{
    int n = snprintf(buf, size, "%s/%.2s/%s", s->blobs, sha, sha);
    return n < 0 || (size_t)n >= size ? SH_ETOOBIG : 0;
}

int store_tmp_dir(store *s, const char *prefix, char *buf, size_t size)
{
    if (snprintf(buf, size, "%s/%sXXXXXX", s->tmp, prefix) >= (int)size)
        return SH_ETOOBIG;
    return mkdtemp(buf) ? 0 : sh_errno_code(errno);
}

// --- free space and the ballast

int store_free_space(const store *s, uint64_t *out)
{
    struct statvfs v;
    if (statvfs(s->dir, &v) != 0)
        return sh_errno_code(errno);
    *out = (uint64_t)v.f_bavail * (uint64_t)v.f_frsize;
    return 0;
}

void store_ballast_set(store *s, uint64_t bytes)
{
    pthread_mutex_lock(&s->ballast_mu);
    s->ballast_bytes = bytes;
    pthread_mutex_unlock(&s->ballast_mu);
    store_ballast_restore(s);
}

bool store_ballast_release(store *s)
{
    pthread_mutex_lock(&s->ballast_mu);
    bool freed = s->ballast_held && unlink(s->ballast) == 0;
    s->ballast_held = false;
    pthread_mutex_unlock(&s->ballast_mu);
    if (freed)
        SH_WARN("the data dir is full: the ballast file was released so "
                "deletes can go through");
    return freed;
}

void store_ballast_restore(store *s)
{
    pthread_mutex_lock(&s->ballast_mu);
    uint64_t free_now = 0;
    // Only with room to spare: the ballast must not be what fills the disk.
    if (!s->ballast_held && s->ballast_bytes > 0 &&
        store_free_space(s, &free_now) == 0 &&
        free_now > 2 * s->ballast_bytes) {
        char tmp[4200];
        snprintf(tmp, sizeof tmp, "%s.new", s->ballast);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        bool ok = fd >= 0 &&
                  posix_fallocate(fd, 0, (off_t)s->ballast_bytes) == 0 &&
                  fsync(fd) == 0;
        if (fd >= 0)
            close(fd);
        if (ok && rename(tmp, s->ballast) == 0)
            s->ballast_held = true;
        else
            unlink(tmp);
    } else if (s->ballast_bytes == 0 && s->ballast_held) {
        unlink(s->ballast);
        s->ballast_held = false;
    }
    pthread_mutex_unlock(&s->ballast_mu);
}

// Moves one file into place (or drops it when the blob exists already).
static int blob_put(store *s, const store_file *f, sh_diag *d)
{
    char path[4096], dir[4096];
    if (store_blob_path(s, f->sha256, path, sizeof path) != 0)
        return sh_diag_set(d, SH_ETOOBIG, f->name, "path too long");
    memcpy(dir, path, sizeof dir);
    *strrchr(dir, '/') = '\0';
    if (sh_path_exists(path)) {
        unlink(f->path);
        return 0;
    }
    if (sh_mkdir_p(dir) != 0 || sh_fsync_path(f->path) != 0 ||
        rename(f->path, path) != 0 || sh_fsync_path(dir) != 0)
        return sh_diag_set(d, sh_errno_code(errno), f->name,
                           "cannot store %s: %s", f->name, strerror(errno));
    return 0;
}

int store_files_put(store *s, store_conn *c, const char *owner,
                    const store_file *files, size_t n, sh_diag *d)
{
    sqlite3_stmt *st = store_prepare(
        c, "INSERT INTO files(owner, name, sha256, bytes) VALUES(?,?,?,?)");
    if (!st)
        return store_diag(d, SH_EDB);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if ((rc = blob_put(s, &files[i], d)) != 0)
            break;
        sqlite3_bind_text(st, 1, owner, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, files[i].name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, files[i].sha256, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)files[i].bytes);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = sh_diag_set(d, store_fail(c, "insert file"), files[i].name,
                             "cannot record %s", files[i].name);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    store_done(c, st);
    return rc;
}

int store_files_drop(store_conn *c, const char *owner, json_t **shas)
{
    json_t *list = json_array();
    sqlite3_stmt *st =
        store_prepare(c, "DELETE FROM files WHERE owner = ? RETURNING sha256");
    if (!st) {
        json_decref(list);
        return SH_EDB;
    }
    sqlite3_bind_text(st, 1, owner, -1, SQLITE_STATIC);
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(list, json_string(store_col_text(st, 0)));
    store_done(c, st);
    if (r != SQLITE_DONE) {
        json_decref(list);
        return store_fail(c, "delete files");
    }
    *shas = list;
    return 0;
}

void store_blobs_sweep(store *s, store_conn *c, const json_t *shas)
{
    sqlite3_stmt *st =
        store_prepare(c, "SELECT 1 FROM files WHERE sha256 = ? LIMIT 1");
    if (!st)
        return;
    pthread_mutex_lock(&s->blob_mu);
    size_t i;
    json_t *v;
    json_array_foreach (shas, i, v) {
        sqlite3_bind_text(st, 1, json_string_value(v), -1, SQLITE_STATIC);
        bool used = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_reset(st);
        char path[4096];
        if (!used &&
            store_blob_path(s, json_string_value(v), path, sizeof path) == 0)
            unlink(path);
    }
    pthread_mutex_unlock(&s->blob_mu);
    store_done(c, st);
}

void store_files_unplace(store *s, store_conn *c, const store_file *files,
                         size_t n)
{
    json_t *shas = json_array();
    for (size_t i = 0; shas && i < n; i++)
        json_array_append_new(shas, json_string(files[i].sha256));
    if (shas)
        store_blobs_sweep(s, c, shas);
    json_decref(shas);
}

// Start-up: empties tmp/ and removes blobs no row points at (a crash
// between a blob's rename and its rows' commit, or after a delete's commit).
static void sweep_all(store *s, store_conn *c)
{
    sh_rm_rf(s->tmp);
    sh_mkdir_p(s->tmp);
    sqlite3_stmt *st =
        store_prepare(c, "SELECT 1 FROM files WHERE sha256 = ? LIMIT 1");
    DIR *top = st ? opendir(s->blobs) : NULL;
    struct dirent *e;
    int removed = 0;
    while (top && (e = readdir(top))) {
        if (e->d_name[0] == '.')
            continue;
        char sub[4096];
        if (sh_path_join(sub, sizeof sub, s->blobs, e->d_name) != 0)
            continue;
        DIR *dir = opendir(sub);
        struct dirent *f;
        while (dir && (f = readdir(dir))) {
            if (f->d_name[0] == '.')
                continue;
            sqlite3_bind_text(st, 1, f->d_name, -1, SQLITE_TRANSIENT);
            bool used = sqlite3_step(st) == SQLITE_ROW;
            sqlite3_reset(st);
            char path[4096];
            if (!used && sh_path_join(path, sizeof path, sub, f->d_name) == 0 &&
                unlink(path) == 0)
                removed++;
        }
        if (dir)
            closedir(dir);
    }
    if (top)
        closedir(top);
    store_done(c, st);
    if (removed) {
        char n[32];
        SH_INFO("removed unreferenced blobs", "count", sh_log_num(n, removed));
    }
}

// --- the store

int store_open(store **out, const char *data_dir, sh_diag *d)
{
    store *s = calloc(1, sizeof *s);
    if (!s || !(s->dir = strdup(data_dir))) {
        free(s);
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    }
    pthread_mutex_init(&s->pool_mu, NULL);
    pthread_mutex_init(&s->blob_mu, NULL);
    pthread_mutex_init(&s->ballast_mu, NULL);
    s->busy_ms = 10000;
    int rc = 0;
    if (sh_path_join(s->db_path, sizeof s->db_path, data_dir, "shears.db") ||
        sh_path_join(s->ballast, sizeof s->ballast, data_dir, "ballast") ||
        sh_path_join(s->blobs, sizeof s->blobs, data_dir, "blobs") ||
        sh_path_join(s->tmp, sizeof s->tmp, data_dir, "tmp")) {
        rc = sh_diag_set(d, SH_ETOOBIG, "", "data dir path too long");
        goto fail;
    }
    if (sh_mkdir_p(s->blobs) != 0 || sh_mkdir_p(s->tmp) != 0) {
        rc = sh_diag_set(d, SH_EIO, "", "cannot create %s: %s", data_dir,
                         strerror(errno));
        goto fail;
    }
    store_conn *c = NULL;
    if ((rc = conn_open(s, &c)) != 0) {
        sh_diag_set(d, rc, "", "cannot open %s", s->db_path);
        goto fail;
    }
    rc = migrate(c, d);
    if (rc == 0)
        sweep_all(s, c);
    store_conn_release(s, c);
    if (rc != 0)
        goto fail;
    *out = s;
    return 0;
fail:
    store_close(s);
    return rc;
}

void store_close(store *s)
{
    if (!s)
        return;
    store_conn *c = s->free_conns;
    while (c) {
        store_conn *next = c->next;
        conn_close(c);
        c = next;
    }
    pthread_mutex_destroy(&s->pool_mu);
    pthread_mutex_destroy(&s->blob_mu);
    pthread_mutex_destroy(&s->ballast_mu);
    free(s->dir);
    free(s);
}

const char *store_data_dir(const store *s) { return s->dir; }

void store_busy_timeout(store *s, int ms)
{
    pthread_mutex_lock(&s->pool_mu);
    s->busy_ms = ms;
    for (store_conn *c = s->free_conns; c; c = c->next)
        sqlite3_busy_timeout(c->db, ms);
    pthread_mutex_unlock(&s->pool_mu);
}

bool store_ready(store *s)
{
    store_conn *c = store_conn_acquire(s);
    sqlite3_stmt *st = store_prepare(c, "SELECT count(*) FROM jobs");
    bool ok = st && sqlite3_step(st) == SQLITE_ROW;
    store_done(c, st);
    store_conn_release(s, c);
    return ok && access(s->tmp, W_OK) == 0;
}

// catalog.c: checkpoints, datasets and their files.
#include "store/store_int.h"

#include "common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Inserts the tensor rows of a checkpoint inside the caller's transaction.
static int tensors_put(store_conn *c, const char *id, const store_tensor *ts,
                       size_t n, sh_diag *d)
{
    sqlite3_stmt *st = store_prepare(
        c, "INSERT INTO tensors(checkpoint_id, seq, name, dtype, shape, "
           "params, file) VALUES(?,?,?,?,?,?,?)");
    if (!st)
        return store_diag(d, SH_EDB);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char shape[8 * 24];
        size_t k = 0;
        shape[k++] = '[';
        for (int j = 0; j < ts[i].ndim; j++)
            k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%lld",
                                  j ? "," : "", (long long)ts[i].shape[j]);
        snprintf(shape + k, sizeof shape - k, "]");
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)i);
        sqlite3_bind_text(st, 3, ts[i].name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, ts[i].dtype, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, shape, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 6, (sqlite3_int64)ts[i].params);
        sqlite3_bind_text(st, 7, ts[i].file, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = store_diag(d, store_fail(c, "insert tensor"));
        sqlite3_reset(st);
    }
    store_done(c, st);
    return rc;
}

// Adds the owner row (checkpoints or datasets), its tensors and its files
// in one transaction, blobs moved into place under the blob lock.
static int add_owner(store *s, const char *sql, const char *id,
                     const char *name, const json_t *info,
                     const store_tensor *tensors, size_t ntensors,
                     const store_file *files, size_t n, sh_diag *d)
{
    char *info_text = json_dumps(info, JSON_COMPACT);
    if (!info_text)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    store_conn *c = store_conn_acquire(s);
    pthread_mutex_lock(&s->blob_mu);
    int rc = store_begin(c);
    if (rc != 0) {
        store_diag(d, rc);
        goto out;
    }
    sqlite3_stmt *st = store_prepare(c, sql);
    if (!st) {
        rc = store_diag(d, SH_EDB);
        goto out;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, sh_time_now_ms());
    sqlite3_bind_text(st, 4, info_text, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = store_diag(d, store_fail(c, "insert"));
    store_done(c, st);
    if (rc == 0 && ntensors)
        rc = tensors_put(c, id, tensors, ntensors, d);
    if (rc == 0)
        rc = store_files_put(s, c, id, files, n, d);
    if (rc == 0 && (rc = store_commit(c)) != 0)
        store_diag(d, rc);
out:
    if (rc != 0)
        store_rollback(c);
    pthread_mutex_unlock(&s->blob_mu);
    if (rc != 0)
        store_files_unplace(s, c, files, n);
    store_conn_release(s, c);
    free(info_text);
    return rc;
}

int store_checkpoint_add(store *s, const char *id, const char *name,
                         const json_t *info, const store_tensor *tensors,
                         size_t ntensors, const store_file *files, size_t n,
                         sh_diag *d)
{
    return add_owner(s,
                     "INSERT INTO checkpoints(id, name, created_ms, info) "
                     "VALUES(?,?,?,?)",
                     id, name, info, tensors, ntensors, files, n, d);
}

int store_dataset_add(store *s, const char *id, const char *name,
                      const json_t *info, const store_file *file, sh_diag *d)
{
    return add_owner(s,
                     "INSERT INTO datasets(id, name, created_ms, info) "
                     "VALUES(?,?,?,?)",
                     id, name, info, NULL, 0, file, 1, d);
}

int store_files_of(store_conn *c, const char *owner, json_t **out)
{
    sqlite3_stmt *st = store_prepare(
        c, "SELECT name, bytes, sha256 FROM files WHERE owner = ? "
           "ORDER BY name");
    if (!st)
        return SH_EDB;
    sqlite3_bind_text(st, 1, owner, -1, SQLITE_STATIC);
    json_t *files = json_array();
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(
            files, json_pack("{s:s, s:I, s:s}", "name", store_col_text(st, 0),
                             "bytes", (json_int_t)sqlite3_column_int64(st, 1),
                             "sha256", store_col_text(st, 2)));
    store_done(c, st);
    if (r != SQLITE_DONE) {
        json_decref(files);
        return store_fail(c, "files");
    }
    if (json_array_size(files) == 0) {
        json_decref(files);
        return SH_ENOTFOUND;
    }
    *out = files;
    return 0;
}

static json_t *json_or_array(json_t *j) { return j ? j : json_array(); }

// Builds the resource of a checkpoint or dataset row: id, name, created,
// the info fields, and (when with_files) the files.
static json_t *owner_json(store_conn *c, sqlite3_stmt *st, bool with_files)
{
    json_t *j = store_col_json(st, 3);
    if (!json_is_object(j)) {
        json_decref(j);
        j = json_object();
    }
    const char *id = store_col_text(st, 0);
    json_object_set_new(j, "id", json_string(id));
    json_object_set_new(j, "name", json_string(store_col_text(st, 1)));
    json_object_set_new(j, "created",
                        store_time_json(sqlite3_column_int64(st, 2)));
    json_t *files = NULL;
    if (with_files && store_files_of(c, id, &files) == 0)
        json_object_set_new(j, "files", files);
    return j;
}

static int get_owner(store_conn *c, const char *sql, const char *id,
                     json_t **out)
{
    sqlite3_stmt *st = store_prepare(c, sql);
    if (!st)
        return SH_EDB;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    int rc = 0;
    if (r == SQLITE_ROW)
        *out = owner_json(c, st, true);
    else
        rc = r == SQLITE_DONE ? SH_ENOTFOUND : store_fail(c, "get");
    store_done(c, st);
    return rc;
}

int store_checkpoint_get(store_conn *c, const char *id, json_t **out)
{
    return get_owner(c,
                     "SELECT id, name, created_ms, info FROM checkpoints "
                     "WHERE id = ?",
                     id, out);
}

int store_dataset_get(store_conn *c, const char *id, json_t **out)
{
    return get_owner(c,
                     "SELECT id, name, created_ms, info FROM datasets "
                     "WHERE id = ?",
                     id, out);
}

int store_checkpoint_tensors(store_conn *c, const char *id, int64_t cursor,
                             int limit, json_t **items, int64_t *next)
{
    sqlite3_stmt *st = store_prepare(
        c, "SELECT seq, name, dtype, shape, params, file FROM tensors WHERE "
           "checkpoint_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3");
    if (!st)
        return SH_EDB;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, cursor);
    sqlite3_bind_int(st, 3, limit + 1);
    json_t *list = json_array();
    int r, n = 0;
    *next = 0;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (n++ == limit) { // one more exists
            *next = sqlite3_column_int64(st, 0);
            break;
        }
        json_array_append_new(
            list,
            json_pack("{s:s, s:s, s:o, s:I, s:s}", "name",
                      store_col_text(st, 1), "dtype", store_col_text(st, 2),
                      "shape", json_or_array(store_col_json(st, 3)), "params",
                      (json_int_t)sqlite3_column_int64(st, 4), "file",
                      store_col_text(st, 5)));
    }
    store_done(c, st);
    int rc = r == SQLITE_ROW || r == SQLITE_DONE ? 0 : store_fail(c, "tensors");
    if (rc == 0 && n == 0 &&
        !store_row_exists(c, "SELECT 1 FROM checkpoints WHERE id = ?", id))
        rc = SH_ENOTFOUND;
    if (rc != 0) {
        json_decref(list);
        return rc;
    }
    *items = list;
    return 0;
}

// Lists rows newest first; seq < cursor when cursor > 0.
static int list_owner(store_conn *c, const char *table, int64_t cursor,
                      int limit, json_t **items, int64_t *next)
{
    // Literal statements only (the statement cache keys on them).
    const char *sql =
        strcmp(table, "checkpoints") == 0
            ? "SELECT id, name, created_ms, info, seq FROM checkpoints "
              "WHERE (?1 = 0 OR seq < ?1) ORDER BY seq DESC LIMIT ?2"
            : "SELECT id, name, created_ms, info, seq FROM datasets "
              "WHERE (?1 = 0 OR seq < ?1) ORDER BY seq DESC LIMIT ?2";
    sqlite3_stmt *st = store_prepare(c, sql);
    if (!st)
        return SH_EDB;
    sqlite3_bind_int64(st, 1, cursor);
    sqlite3_bind_int(st, 2, limit + 1);
    json_t *list = json_array();
    int r, n = 0;
    *next = 0;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (n++ == limit) { // one more exists: the page has a successor
            *next = sqlite3_column_int64(st, 4) + 1;
            break;
        }
        json_array_append_new(list, owner_json(c, st, true));
    }
    store_done(c, st);
    if (r != SQLITE_ROW && r != SQLITE_DONE) {
        json_decref(list);
        return store_fail(c, "list");
    }
    *items = list;
    return 0;
}

int store_checkpoint_list(store_conn *c, int64_t cursor, int limit,
                          json_t **items, int64_t *next)
{
    return list_owner(c, "checkpoints", cursor, limit, items, next);
}

int store_dataset_list(store_conn *c, int64_t cursor, int limit, json_t **items,
                       int64_t *next)
{
    return list_owner(c, "datasets", cursor, limit, items, next);
}

// Deletes an owner row and its files unless a live job uses it.
static int delete_owner_once(store *s, const char *table,
                             const char *in_use_sql, const char *id, sh_diag *d)
{
    store_conn *c = store_conn_acquire(s);
    json_t *shas = NULL;
    int rc = store_begin(c);
    if (rc != 0) {
        store_diag(d, rc);
        goto out;
    }
    sqlite3_stmt *st = store_prepare(c, in_use_sql);
    if (!st) {
        rc = store_diag(d, SH_EDB);
        goto out;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        rc = sh_diag_set(d, SH_ECONFLICT, "",
                         "job %s (%s) uses %s; cancel it or wait for it to "
                         "end",
                         store_col_text(st, 0), store_col_text(st, 1), id);
    store_done(c, st);
    if (rc != 0)
        goto out;
    const char *sql = strcmp(table, "checkpoints") == 0
                          ? "DELETE FROM checkpoints WHERE id = ?"
                          : "DELETE FROM datasets WHERE id = ?";
    if (!(st = store_prepare(c, sql))) {
        rc = store_diag(d, SH_EDB);
        goto out;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        rc = store_diag(d, store_fail(c, "delete"));
    else if (sqlite3_changes(c->db) == 0)
        rc = sh_diag_set(d, SH_ENOTFOUND, "", "no %s", id);
    store_done(c, st);
    if (rc == 0 && strcmp(table, "checkpoints") == 0 &&
        (st =
             store_prepare(c, "DELETE FROM tensors WHERE checkpoint_id = ?"))) {
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            rc = store_diag(d, store_fail(c, "delete tensors"));
        store_done(c, st);
    }
    if (rc == 0 && (rc = store_files_drop(c, id, &shas)) == 0)
        rc = store_commit(c);
out:
    if (rc != 0)
        store_rollback(c);
    else
        store_blobs_sweep(s, c, shas); // after the commit: rows first
    json_decref(shas);
    store_conn_release(s, c);
    return rc;
}

// A full disk must not keep anyone from freeing it: the ballast goes, and
// the delete runs again.
static int delete_owner(store *s, const char *table, const char *in_use_sql,
                        const char *id, sh_diag *d)
{
    int rc = delete_owner_once(s, table, in_use_sql, id, d);
    if (rc == SH_ENOSPC && store_ballast_release(s))
        rc = delete_owner_once(s, table, in_use_sql, id, d);
    if (rc == 0)
        store_ballast_restore(s);
    return rc;
}

int store_checkpoint_delete(store *s, const char *id, sh_diag *d)
{
    return delete_owner(s, "checkpoints",
                        "SELECT id, status FROM jobs WHERE checkpoint_id = ? "
                        "AND status IN ('queued','running') LIMIT 1",
                        id, d);
}

int store_dataset_delete(store *s, const char *id, sh_diag *d)
{
    return delete_owner(s, "datasets",
                        "SELECT id, status FROM jobs WHERE (calibration_id = "
                        "?1 OR evaluation_id = ?1) AND status IN "
                        "('queued','running') LIMIT 1",
                        id, d);
}

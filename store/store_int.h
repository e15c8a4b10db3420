// store_int.h: what the store's files share (not public).
#ifndef STORE_STORE_INT_H
#define STORE_STORE_INT_H

#include "store/store.h"

#include <pthread.h>
#include <sqlite3.h>

#define STORE_STMT_CACHE 64

struct store_conn {
    sqlite3 *db;
    store_conn *next; // free list
    // Prepared statements, kept across uses; keyed by the SQL text's
    // address (every statement of the store is a string literal).
    struct {
        const char *sql;
        sqlite3_stmt *st;
    } cache[STORE_STMT_CACHE];
    size_t ncache;
};

struct store {
    char *dir;
    char db_path[4096];
    char blobs[4096];
    char tmp[4096];
    pthread_mutex_t pool_mu;
    store_conn *free_conns;
    pthread_mutex_t blob_mu; // blob renames + their rows, and blob removal
    pthread_mutex_t ballast_mu;
    char ballast[4096]; // <data>/ballast: space kept for deletes
    uint64_t ballast_bytes;
    bool ballast_held;
    int busy_ms; // how long a statement waits for another's lock
};

// Sets how long statements wait for a lock held elsewhere before failing
// with SH_EBUSY (default 10 s), on pooled connections and new ones. For
// tests that hold a lock on purpose; call while no connection is in use.
void store_busy_timeout(store *s, int ms);

// Runs SQL without results. Returns 0 or SH_EDB (logged).
int store_exec(store_conn *c, const char *sql);

// A prepared statement for a string literal, from the connection's cache
// when it is there and idle; NULL (logged) on failure. Give it back with
// store_done, which resets it (ending it: no lock is kept).
sqlite3_stmt *store_prepare(store_conn *c, const char *sql);
void store_done(store_conn *c, sqlite3_stmt *st);

// True when sql (one parameter: id) returns a row.
bool store_row_exists(store_conn *c, const char *sql, const char *id);

// BEGIN IMMEDIATE / COMMIT / ROLLBACK.
int store_begin(store_conn *c);
int store_commit(store_conn *c);
void store_rollback(store_conn *c);

// Maps a failed sqlite3 result to a code, logging the message:
// SH_ENOSPC for a full disk, SH_EBUSY for a lock held too long, SH_EDB.
int store_fail(store_conn *c, const char *what);

// Sets d's message for a database failure code ("the disk of the data dir
// is full", "database busy", "database error") and returns code.
int store_diag(sh_diag *d, int code);

// Column text as a C string ("" for NULL) and as parsed JSON (NULL for
// NULL or bad JSON).
const char *store_col_text(sqlite3_stmt *st, int col);
json_t *store_col_json(sqlite3_stmt *st, int col);

// An RFC 3339 string for ms since the epoch, or JSON null for 0.
json_t *store_time_json(int64_t ms);

// Moves files into the blob store (fsync'd) and inserts their rows for
// owner, inside a transaction the caller holds, under blob_mu.
int store_files_put(store *s, store_conn *c, const char *owner,
                    const store_file *files, size_t n, sh_diag *d);

// Deletes the rows of owner (inside the caller's transaction) and returns
// their digests (new reference) for store_blobs_sweep after commit.
int store_files_drop(store_conn *c, const char *owner, json_t **shas);

// After a rolled-back store_files_put: removes the blobs of files that
// no row points at (those it moved in), so a failed add leaves no file.
void store_files_unplace(store *s, store_conn *c, const store_file *files,
                         size_t n);

// Removes the blobs among shas that no row points at any more.
void store_blobs_sweep(store *s, store_conn *c, const json_t *shas);

#endif

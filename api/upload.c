// upload.c: checkpoint and dataset uploads, streamed.
//
// A safetensors body goes to a temp file while its SHA-256 and the header
// check (engine's stream check) run on the bytes as they pass. A tar body
// (a Hugging Face model folder) goes through a bounded ring buffer to a
// reader thread where libarchive extracts it, member by member, with the
// same digest and checks per file; only regular files with plain relative
// names are accepted (no "..", no absolute paths, links, devices). Nothing
// is held whole in memory.
//
// At the end the model is opened from the temp files (index against shards,
// config.json), the files move into the blob store and the rows are
// committed in one transaction. Any failure, a dropped connection included,
// removes the temp dir: no row, no file.
#include "api/api_int.h"

#include "api/upload_int.h"
#include "common/log.h"
#include "common/util.h"
#include "engine/engine.h"
#include "engine/io/dataset.h"
#include "engine/io/model.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

// --- the ring buffer between the HTTP thread and the tar reader

typedef struct ring {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *buf;
    size_t cap, head, len;
    bool eof;  // the body ended
    bool stop; // the reader gave up: drop what comes
} ring;

static bool ring_push(ring *q, const char *data, size_t n)
{
    pthread_mutex_lock(&q->mu);
    while (n > 0 && !q->stop) {
        while (q->len == q->cap && !q->stop)
            pthread_cond_wait(&q->cv, &q->mu);
        if (q->stop)
            break;
        size_t tail = (q->head + q->len) % q->cap;
        size_t room = q->cap - q->len;
        size_t k = n < room ? n : room;
        if (k > q->cap - tail)
            k = q->cap - tail;
        memcpy(q->buf + tail, data, k);
        q->len += k;
        data += k;
        n -= k;
        pthread_cond_broadcast(&q->cv);
    }
    bool ok = !q->stop;
    pthread_mutex_unlock(&q->mu);
    return ok;
}

static size_t ring_pull(ring *q, char *out, size_t max)
{
    pthread_mutex_lock(&q->mu);
    while (q->len == 0 && !q->eof)
        pthread_cond_wait(&q->cv, &q->mu);
    size_t k = q->len < max ? q->len : max;
    if (k > q->cap - q->head)
        k = q->cap - q->head;
    memcpy(out, q->buf + q->head, k);
    q->head = (q->head + k) % q->cap;
    q->len -= k;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return k;
}

static void ring_flag(ring *q, bool *flag)
{
    pthread_mutex_lock(&q->mu);
    *flag = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

// --- the upload

typedef struct upload {
    bool dataset, tar;
    bool scores; // a dataset of score tensors (?kind=scores)
    char name[256];
    uint64_t received, dropped;
    int failed;      // the first failure (sticky)
    unsigned status; // its HTTP status
    sh_diag d;
    up_set set; // the files, the limits
    // plain body
    up_file one;
    bool one_open;
    // tar body
    ring q;
    pthread_t thread;
    bool thread_running;
    char io[64 * 1024]; // bytes handed to libarchive (its read callback)
    sh_diag td;         // the reader's diagnostic
    int tfailed;
} upload;

static void fail(upload *u, unsigned status, int code, const sh_diag *d)
{
    if (u->failed)
        return;
    u->failed = code;
    u->status = status;
    if (d && d != &u->d)
        u->d = *d;
}

static la_ssize_t on_archive_read(struct archive *a, void *ctx,
                                  const void **buf)
{
    (void)a;
    upload *u = ctx;
    *buf = u->io;
    return (la_ssize_t)ring_pull(&u->q, u->io, sizeof u->io);
}

static void *tar_reader(void *arg)
{
    upload *u = arg;
    struct archive *a = archive_read_new();
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    int rc = 0;
    if (archive_read_open(a, u, NULL, on_archive_read, NULL) != ARCHIVE_OK)
        rc = sh_diag_set(&u->td, SH_EFORMAT, "", "not a tar archive: %s",
                         archive_error_string(a));
    else
        rc = up_tar_extract(&u->set, a, &u->td);
    archive_read_free(a);
    u->tfailed = rc;
    if (rc != 0)
        ring_flag(&u->q, &u->q.stop); // the HTTP side drops the rest
    // Drain what is still coming so the pusher never blocks.
    char sink[4096];
    while (ring_pull(&u->q, sink, sizeof sink) > 0)
        ;
    return NULL;
}

// --- the ops

// After a failure the rest of the body is read and dropped so the client
// gets its answer, but only this much: then the connection closes.
#define DRAIN_MAX (64u << 20)

static upload *upload_new(api_request *r, bool dataset)
{
    upload *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->dataset = dataset;
    u->set.max_bytes = r->srv->cfg.max_upload;
    u->set.max_tensors = dataset ? 0 : r->srv->cfg.max_tensors;
    u->set.budget = &r->srv->headers;
    u->one.fd = -1;
    pthread_mutex_init(&u->q.mu, NULL);
    pthread_cond_init(&u->q.cv, NULL);
    return u;
}

static bool name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 200)
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

// Refuses, before the body, an upload the disk cannot take while keeping
// --min-free.
static bool room_for(api_request *r, uint64_t len)
{
    uint64_t free_now = 0, keep = r->srv->cfg.min_free;
    if (store_free_space(r->srv->s, &free_now) != 0 ||
        len <= (free_now > keep ? free_now - keep : 0))
        return true;
    char a[32], b[32], c[32];
    sh_format_bytes(a, sizeof a, (double)len);
    sh_format_bytes(b, sizeof b, (double)free_now);
    sh_format_bytes(c, sizeof c, (double)keep);
    api_respond_problem(r, 507, "insufficient-storage", "Insufficient storage",
                        NULL,
                        "the body is %s; the data dir has %s free and keeps "
                        "%s free (--min-free): delete jobs, checkpoints or "
                        "datasets to make room",
                        a, b, c);
    return false;
}

static void begin(api_request *r, bool dataset)
{
    const char *what = dataset ? "dataset" : "checkpoint";
    const char *type = api_header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
    bool octet = type && strncmp(type, "application/octet-stream", 24) == 0;
    bool tar = type && (strncmp(type, "application/x-tar", 17) == 0 ||
                        strncmp(type, "application/tar", 15) == 0);
    if (!octet && !(tar && !dataset)) {
        api_respond_problem(
            r, 415, "unsupported-media-type", "Unsupported media type", NULL,
            "send a %s as %s", what,
            dataset ? "application/octet-stream (a safetensors file)"
                    : "application/octet-stream (one safetensors file) or "
                      "application/x-tar (a model folder)");
        return;
    }
    const char *len = api_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    uint64_t limit = r->srv->cfg.max_upload;
    unsigned long long declared = len ? strtoull(len, NULL, 10) : 0;
    if (declared > limit) {
        // A client waiting on 100-continue sends nothing more: answer now.
        // One already sending gets its answer after the body is read and
        // dropped (up to DRAIN_MAX): closing with a body in flight resets
        // the connection, and the client may never read the answer.
        const char *expect = api_header(r, "Expect");
        bool waits = expect && strcasecmp(expect, "100-continue") == 0;
        upload *u =
            waits || declared > DRAIN_MAX ? NULL : upload_new(r, dataset);
        if (!u) {
            api_respond_problem(r, 413, "too-large", "Upload too large", NULL,
                                "the body is %llu bytes; this service takes "
                                "at most %" PRIu64 " (--max-upload)",
                                declared, limit);
            return;
        }
        r->upload = u;
        sh_diag_set(&u->d, SH_ETOOBIG, "",
                    "the body is %llu bytes; this service takes at most "
                    "%" PRIu64 " (--max-upload)",
                    declared, limit);
        fail(u, 413, SH_ETOOBIG, &u->d);
        return;
    }
    if (!room_for(r, declared))
        return;
    const char *name = api_query(r, "name");
    if (name && !name_ok(name)) {
        api_respond_problem(r, 422, "invalid-query", "Invalid query", "name",
                            "name must be 1 to 200 printable characters");
        return;
    }
    // A dataset's kind comes from its tensors (tokens, inputs); score
    // tensors are asked for.
    const char *kind = dataset ? api_query(r, "kind") : NULL;
    if (kind && strcmp(kind, "scores") != 0) {
        api_respond_problem(r, 422, "invalid-query", "Invalid query", "kind",
                            "kind is scores (a file of score tensors) or "
                            "left out (tokens or inputs, as the file's "
                            "tensors say)");
        return;
    }
    upload *u = upload_new(r, dataset);
    if (!u) {
        api_respond_error(r, SH_ENOMEM, NULL);
        return;
    }
    r->upload = u;
    u->tar = tar;
    u->scores = kind && strcmp(kind, "scores") == 0;
    snprintf(u->name, sizeof u->name, "%s", name ? name : "");
    int rc = store_tmp_dir(r->srv->s, "upload-", u->set.tmp, sizeof u->set.tmp);
    if (rc != 0) {
        u->set.tmp[0] = '\0';
        sh_diag_set(&u->d, rc, "", "cannot create a temp dir: %s",
                    sh_strerror(rc));
        api_respond_error(r, rc, &u->d);
        return;
    }
    if (tar) {
        u->q.cap = 4u << 20;
        if (!(u->q.buf = malloc(u->q.cap)) ||
            pthread_create(&u->thread, NULL, tar_reader, u) != 0)
            rc = SH_ENOMEM;
        else
            u->thread_running = true;
    } else {
        rc = up_file_open(&u->one, &u->set,
                          dataset ? "dataset.safetensors" : "model.safetensors",
                          true, &u->d);
        u->one_open = rc == 0;
    }
    if (rc != 0)
        api_respond_error(r, rc, &u->d);
}

static void begin_checkpoint(api_request *r) { begin(r, false); }
static void begin_dataset(api_request *r) { begin(r, true); }

static bool chunk(api_request *r, const char *data, size_t n)
{
    upload *u = r->upload;
    u->received += n;
    if (u->failed) {
        u->dropped += n;
        return u->dropped <= DRAIN_MAX;
    }
    if (u->received > u->set.max_bytes) {
        sh_diag d;
        sh_diag_set(&d, SH_ETOOBIG, "",
                    "the body exceeds %" PRIu64 " bytes (--max-upload)",
                    u->set.max_bytes);
        fail(u, 413, SH_ETOOBIG, &d);
        if (u->tar)
            ring_flag(&u->q, &u->q.stop);
        return true;
    }
    if (u->tar) {
        if (!ring_push(&u->q, data, n))
            fail(u, 422, SH_EFORMAT, NULL); // the reader says why
        return true;
    }
    int rc = up_file_write(&u->one, &u->set, data, n, &u->d);
    if (rc != 0)
        fail(u, api_status_for(rc), rc, &u->d);
    return true;
}

// Waits for the tar reader and takes its verdict.
static void join_reader(upload *u)
{
    if (!u->thread_running)
        return;
    ring_flag(&u->q, &u->q.eof);
    pthread_join(u->thread, NULL);
    u->thread_running = false;
    if (u->tfailed) {
        u->failed = 0; // the reader's reason beats "dropped"
        fail(u, api_status_for(u->tfailed), u->tfailed, &u->td);
    }
}

// What the API tells about a checkpoint, and its tensor rows.
static int describe(const eng_model *m, json_t **info, store_tensor **rows,
                    sh_diag *d)
{
    size_t n = eng_model_tensor_count(m);
    store_tensor *ts = calloc(n ? n : 1, sizeof *ts);
    json_t *dtypes = json_object();
    uint64_t params = 0;
    uint64_t by_dtype[ENG_DTYPE_COUNT] = {0};
    if (!ts || !dtypes) {
        free(ts);
        json_decref(dtypes);
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        const eng_tensor_info *t = eng_model_tensor(m, i);
        size_t file, idx;
        eng_model_tensor_loc(m, i, &file, &idx);
        ts[i] = (store_tensor){.name = t->name,
                               .dtype = eng_dtype_name(t->dtype),
                               .ndim = t->ndim,
                               .shape = t->shape,
                               .params = t->numel,
                               .file = eng_model_file_at(m, file)->name};
        by_dtype[t->dtype] += t->numel;
        params += t->numel;
    }
    for (int k = 0; k < ENG_DTYPE_COUNT; k++)
        if (by_dtype[k])
            json_object_set_new(dtypes, eng_dtype_name((eng_dtype)k),
                                json_integer((json_int_t)by_dtype[k]));
    *info = json_pack("{s:I, s:I, s:I, s:o, s:s}", "bytes",
                      (json_int_t)eng_model_bytes(m), "tensors", (json_int_t)n,
                      "params", (json_int_t)params, "dtypes", dtypes,
                      "architecture", eng_model_arch(m));
    *rows = ts;
    return 0;
}

static void finish_checkpoint(api_request *r, upload *u, up_file *files,
                              size_t n)
{
    eng_file_ref *refs = calloc(n ? n : 1, sizeof *refs);
    store_file *sf = calloc(n ? n : 1, sizeof *sf);
    eng_model *m = NULL;
    json_t *info = NULL;
    store_tensor *rows = NULL;
    sh_diag d;
    sh_diag_clear(&d);
    int rc = refs && sf ? 0 : SH_ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        refs[i] = (eng_file_ref){files[i].name, files[i].path};
        sf[i] = (store_file){files[i].name, files[i].path, files[i].hex,
                             files[i].bytes};
    }
    if (rc == 0)
        rc = eng_model_open_files(&m, refs, n, &d);
    if (rc == 0)
        rc = describe(m, &info, &rows, &d);
    if (rc != 0) {
        api_respond_error(r, rc == SH_EINVAL ? SH_EFORMAT : rc, &d);
        goto out;
    }
    json_object_set_new(info, "format",
                        json_string(u->tar ? "folder" : "safetensors"));
    char id[48];
    sh_id_new(id, sizeof id, "ck_");
    rc = store_checkpoint_add(r->srv->s, id, u->name[0] ? u->name : id, info,
                              rows, eng_model_tensor_count(m), sf, n, &d);
    if (rc != 0) {
        api_respond_error(r, rc, &d);
        goto out;
    }
    store_conn *c = store_conn_acquire(r->srv->s);
    json_t *res = NULL;
    rc = store_checkpoint_get(c, id, &res);
    store_conn_release(r->srv->s, c);
    if (rc != 0) {
        api_respond_error(r, rc, NULL);
        goto out;
    }
    char location[96];
    snprintf(location, sizeof location, "/v1/checkpoints/%s", id);
    api_respond_at(r, 201, res, location);
out:
    eng_model_close(m);
    json_decref(info);
    free(rows);
    free(refs);
    free(sf);
}

static void finish_dataset(api_request *r, upload *u)
{
    eng_st *st = NULL;
    sh_diag d;
    sh_diag_clear(&d);
    eng_dataset_info di;
    int rc = eng_st_open(&st, u->one.path, &d);
    // Score tensors (method scores, ?kind=scores): floats, every value
    // finite.
    const eng_st_header *h = rc == 0 ? eng_st_header_of(st) : NULL;
    bool scores = u->scores;
    if (rc == 0 && scores && h->count == 0)
        rc = sh_diag_set(&d, SH_EFORMAT, "",
                         "a scores dataset needs a "
                         "score tensor for each target");
    if (rc == 0 && scores)
        rc = eng_scores_check_finite(st, &d);
    else if (rc == 0)
        rc = eng_dataset_check(h, &di, &d);
    json_t *info = NULL;
    if (rc == 0 && scores)
        info = json_pack("{s:s, s:I, s:I, s:I, s:s, s:b, s:s}", "kind",
                         "scores", "bytes", (json_int_t)u->one.bytes, "rows",
                         (json_int_t)h->count, "columns", (json_int_t)0,
                         "dtype", eng_dtype_name(h->tensors[0].dtype), "labels",
                         false, "sha256", u->one.hex);
    else if (rc == 0)
        info = json_pack("{s:s, s:I, s:I, s:I, s:s, s:b, s:s}", "kind",
                         eng_dataset_kind_name(di.kind), "bytes",
                         (json_int_t)u->one.bytes, "rows", (json_int_t)di.rows,
                         "columns", (json_int_t)di.cols, "dtype",
                         eng_dtype_name(di.dtype), "labels", di.has_labels,
                         "sha256", u->one.hex);
    eng_st_close(st);
    if (rc != 0) {
        api_respond_error(r, rc, &d);
        return;
    }
    char id[48];
    sh_id_new(id, sizeof id, "ds_");
    store_file sf = {"dataset.safetensors", u->one.path, u->one.hex,
                     u->one.bytes};
    rc = store_dataset_add(r->srv->s, id, u->name[0] ? u->name : id, info, &sf,
                           &d);
    json_decref(info);
    if (rc != 0) {
        api_respond_error(r, rc, &d);
        return;
    }
    store_conn *c = store_conn_acquire(r->srv->s);
    json_t *res = NULL;
    rc = store_dataset_get(c, id, &res);
    store_conn_release(r->srv->s, c);
    if (rc != 0) {
        api_respond_error(r, rc, NULL);
        return;
    }
    char location[96];
    snprintf(location, sizeof location, "/v1/datasets/%s", id);
    api_respond_at(r, 201, res, location);
}

// On a check thread: opening the model reads every header again, and
// the rows go to SQLite; neither belongs on an HTTP thread.
static void finish(api_request *r)
{
    upload *u = r->upload;
    if (u->dataset)
        finish_dataset(r, u);
    else if (u->tar)
        finish_checkpoint(r, u, u->set.files, u->set.nfiles);
    else
        finish_checkpoint(r, u, &u->one, 1);
}

static void end(api_request *r)
{
    upload *u = r->upload;
    if (u->tar)
        join_reader(u);
    else if (!u->failed && u->one_open) {
        u->one_open = false;
        int rc = up_file_close(&u->one, &u->set, &u->d);
        if (rc != 0)
            fail(u, api_status_for(rc), rc, &u->d);
    }
    if (!u->failed) {
        api_defer(r, finish);
        return;
    }
    if (u->status == 422)
        api_respond_problem(r, 422, "invalid-upload", "Invalid upload",
                            u->d.field, "%s",
                            u->d.msg[0] ? u->d.msg : sh_strerror(u->failed));
    else
        api_respond_error(r, u->failed, &u->d);
}

// Whatever happened, the temp dir goes (stored files were moved out).
static void cleanup(api_request *r)
{
    upload *u = r->upload;
    if (!u)
        return;
    if (u->thread_running) { // the connection dropped mid-body
        ring_flag(&u->q, &u->q.stop);
        ring_flag(&u->q, &u->q.eof);
        pthread_join(u->thread, NULL);
    }
    up_file_drop(&u->one);
    up_set_deinit(&u->set);
    if (u->set.tmp[0])
        sh_rm_rf(u->set.tmp);
    free(u->q.buf);
    pthread_mutex_destroy(&u->q.mu);
    pthread_cond_destroy(&u->q.cv);
    free(u);
    r->upload = NULL;
}

const api_upload_ops api_checkpoint_upload = {begin_checkpoint, chunk, end,
                                              cleanup};
const api_upload_ops api_dataset_upload = {begin_dataset, chunk, end, cleanup};

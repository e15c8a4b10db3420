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

#include "common/log.h"
#include "common/sha256.h"
#include "common/util.h"
#include "engine/dataset.h"
#include "engine/model.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_FILES 10000
#define SYNC_STEP (64u << 20) // start writeback every 64 MiB

// --- one file being received

typedef struct up_file {
    char name[512];
    char path[4096];
    int fd;
    uint64_t bytes, synced;
    sh_sha256 sha;
    char hex[SH_SHA256_HEX];
    bool check; // a .safetensors: run the header check
    eng_st_check chk;
} up_file;

static int file_open(up_file *f, const char *dir, const char *name,
                     size_t index, sh_diag *d)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    snprintf(f->name, sizeof f->name, "%s", name);
    // Temp files are numbered: the names come from the client.
    char leaf[32];
    snprintf(leaf, sizeof leaf, "f%06zu", index);
    if (sh_path_join(f->path, sizeof f->path, dir, leaf) != 0)
        return sh_diag_set(d, SH_ETOOBIG, name, "path too long");
    f->fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (f->fd < 0)
        return sh_diag_set(d, SH_EIO, name, "cannot create a temp file: %s",
                           strerror(errno));
    if (sh_sha256_init(&f->sha) != 0)
        return sh_diag_set(d, SH_ENOMEM, name, "out of memory");
    f->check = sh_str_ends_with(name, ".safetensors");
    eng_st_check_init(&f->chk);
    return 0;
}

static int file_write(up_file *f, const void *data, size_t n, sh_diag *d)
{
    if (f->check) {
        int rc = eng_st_check_feed(&f->chk, data, n, d);
        if (rc != 0) {
            sh_diag_prefix(d, "%s", f->name);
            return rc;
        }
    }
    if (sh_write_all(f->fd, data, n) != 0)
        return sh_diag_set(d, SH_EIO, f->name, "cannot write: %s",
                           strerror(errno));
    sh_sha256_update(&f->sha, data, n);
    f->bytes += n;
    if (f->bytes - f->synced >= SYNC_STEP) {
        // Hand finished ranges to writeback as we go, so the fsync at the
        // end has little left to wait for.
        sync_file_range(f->fd, (off_t)f->synced, (off_t)(f->bytes - f->synced),
                        SYNC_FILE_RANGE_WRITE);
        f->synced = f->bytes;
    }
    return 0;
}

static int file_close(up_file *f, sh_diag *d)
{
    int rc = 0;
    if (f->check && (rc = eng_st_check_finish(&f->chk, d)) != 0)
        sh_diag_prefix(d, "%s", f->name);
    if (rc == 0 && fsync(f->fd) != 0)
        rc =
            sh_diag_set(d, SH_EIO, f->name, "cannot sync: %s", strerror(errno));
    if (close(f->fd) != 0 && rc == 0)
        rc = sh_diag_set(d, SH_EIO, f->name, "cannot close");
    f->fd = -1;
    sh_sha256_final(&f->sha, f->hex);
    return rc;
}

static void file_drop(up_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    if (f->sha.ctx)
        sh_sha256_deinit(&f->sha);
    eng_st_check_deinit(&f->chk);
}

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
    char tmp[4096];
    char name[256];
    uint64_t limit, received, dropped;
    int failed;      // the first failure (sticky)
    unsigned status; // its HTTP status
    sh_diag d;
    // plain body
    up_file one;
    bool one_open;
    // tar body
    ring q;
    pthread_t thread;
    bool thread_running;
    up_file *files;
    size_t nfiles;
    char io[64 * 1024];    // bytes handed to libarchive (its read callback)
    char chunk[64 * 1024]; // member data handed back by libarchive
    sh_diag td;            // the reader's diagnostic
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

// A member name made plain: "./" dropped, and refused when absolute, when
// it climbs out, or holds empty or control characters.
static bool plain_member(const char *in, char *out, size_t size)
{
    while (in[0] == '.' && in[1] == '/')
        in += 2;
    size_t n = strlen(in);
    while (n > 0 && in[n - 1] == '/')
        n--; // a directory's trailing slash
    if (n == 0 || n >= size || in[0] == '/')
        return false;
    memcpy(out, in, n);
    out[n] = '\0';
    for (char *seg = out; seg;) {
        char *slash = strchr(seg, '/');
        size_t len = slash ? (size_t)(slash - seg) : strlen(seg);
        if (len == 0 || (len == 1 && seg[0] == '.') ||
            (len == 2 && seg[0] == '.' && seg[1] == '.'))
            return false;
        seg = slash ? slash + 1 : NULL;
    }
    for (const unsigned char *p = (const unsigned char *)out; *p; p++)
        if (*p < 0x20 || *p == 0x7f || *p == '\\')
            return false;
    return true;
}

static la_ssize_t on_archive_read(struct archive *a, void *ctx,
                                  const void **buf)
{
    (void)a;
    upload *u = ctx;
    *buf = u->io;
    return (la_ssize_t)ring_pull(&u->q, u->io, sizeof u->io);
}

static const char *kind_of(struct archive_entry *e)
{
    if (archive_entry_hardlink(e))
        return "a hard link";
    switch (archive_entry_filetype(e)) {
    case AE_IFLNK: return "a symbolic link";
    case AE_IFCHR: return "a character device";
    case AE_IFBLK: return "a block device";
    case AE_IFIFO: return "a FIFO";
    case AE_IFSOCK: return "a socket";
    default: return "not a regular file";
    }
}

static int tfail(upload *u, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int tfail(upload *u, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char msg[sizeof u->td.msg];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sh_diag_set(&u->td, code, "", "%s", msg);
}

// One member: validated, then copied to a temp file with its checks.
static int extract_member(upload *u, struct archive *a, struct archive_entry *e)
{
    const char *raw = archive_entry_pathname(e);
    char name[512];
    bool dir =
        archive_entry_filetype(e) == AE_IFDIR && !archive_entry_hardlink(e);
    if (dir && raw && (strcmp(raw, ".") == 0 || strcmp(raw, "./") == 0))
        return 0; // the archive's own top, as `tar -C dir .` writes it
    if (!raw || !plain_member(raw, name, sizeof name))
        return tfail(u, SH_EFORMAT,
                     "tar member \"%s\" is not a plain relative name (no "
                     "absolute paths, no \"..\")",
                     raw ? raw : "(none)");
    if (dir)
        return 0;
    if (archive_entry_filetype(e) != AE_IFREG || archive_entry_hardlink(e))
        return tfail(u, SH_EFORMAT,
                     "tar member \"%s\" is %s; only regular files are "
                     "accepted",
                     name, kind_of(e));
    if (u->nfiles == MAX_FILES)
        return tfail(u, SH_ETOOBIG, "more than %d files in the tar", MAX_FILES);
    for (size_t i = 0; i < u->nfiles; i++)
        if (strcmp(u->files[i].name, name) == 0)
            return tfail(u, SH_EFORMAT, "tar member \"%s\" appears twice",
                         name);
    if (u->nfiles % 64 == 0) {
        up_file *grown = realloc(u->files, (u->nfiles + 64) * sizeof *u->files);
        if (!grown)
            return tfail(u, SH_ENOMEM, "out of memory");
        u->files = grown;
    }
    up_file *f = &u->files[u->nfiles++];
    int rc = file_open(f, u->tmp, name, u->nfiles, &u->td);
    while (rc == 0) {
        la_ssize_t n = archive_read_data(a, u->chunk, sizeof u->chunk);
        if (n < 0)
            return tfail(u, SH_EFORMAT, "tar member \"%s\": %s", name,
                         archive_error_string(a));
        if (n == 0)
            break;
        rc = file_write(f, u->chunk, (size_t)n, &u->td);
    }
    if (rc == 0)
        rc = file_close(f, &u->td);
    return rc;
}

static void *tar_reader(void *arg)
{
    upload *u = arg;
    struct archive *a = archive_read_new();
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    int rc = 0;
    if (archive_read_open(a, u, NULL, on_archive_read, NULL) != ARCHIVE_OK) {
        rc = tfail(u, SH_EFORMAT, "not a tar archive: %s",
                   archive_error_string(a));
    } else {
        struct archive_entry *e;
        int r;
        while (rc == 0 && (r = archive_read_next_header(a, &e)) == ARCHIVE_OK)
            rc = extract_member(u, a, e);
        if (rc == 0 && r != ARCHIVE_EOF)
            rc = tfail(u, SH_EFORMAT, "not a valid tar archive: %s",
                       archive_error_string(a));
    }
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

static upload *upload_new(api_request *r, bool dataset)
{
    upload *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->dataset = dataset;
    u->limit = r->srv->cfg.max_upload;
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
    if (len && strtoull(len, NULL, 10) > limit) {
        api_respond_problem(r, 413, "too-large", "Upload too large", NULL,
                            "the body is %s bytes; this service takes at "
                            "most %llu (--max-upload)",
                            len, (unsigned long long)limit);
        return;
    }
    const char *name = api_query(r, "name");
    if (name && !name_ok(name)) {
        api_respond_problem(r, 422, "invalid-query", "Invalid query", "name",
                            "name must be 1 to 200 printable characters");
        return;
    }
    upload *u = upload_new(r, dataset);
    if (!u) {
        api_respond_error(r, SH_ENOMEM, NULL);
        return;
    }
    r->upload = u;
    u->tar = tar;
    snprintf(u->name, sizeof u->name, "%s", name ? name : "");
    if (store_tmp_dir(r->srv->s, "upload-", u->tmp, sizeof u->tmp) != 0) {
        u->tmp[0] = '\0';
        api_respond_problem(r, 500, "io", "Input/output error", NULL,
                            "cannot create a temp dir");
        return;
    }
    int rc = 0;
    if (tar) {
        u->q.cap = 4u << 20;
        if (!(u->q.buf = malloc(u->q.cap)) ||
            pthread_create(&u->thread, NULL, tar_reader, u) != 0)
            rc = SH_ENOMEM;
        else
            u->thread_running = true;
    } else {
        rc = file_open(&u->one, u->tmp,
                       dataset ? "dataset.safetensors" : "model.safetensors", 0,
                       &u->d);
        u->one.check = true;
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
        // Keep reading so the client gets its answer, but not forever: past
        // a bound the connection closes.
        u->dropped += n;
        return u->dropped <= u->limit + (64u << 20);
    }
    if (u->received > u->limit) {
        sh_diag d;
        sh_diag_set(&d, SH_ETOOBIG, "",
                    "the body exceeds %llu bytes (--max-upload)",
                    (unsigned long long)u->limit);
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
    int rc = file_write(&u->one, data, n, &u->d);
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

// A single common top folder ("model/config.json", ...) is dropped.
static void strip_top_folder(upload *u)
{
    if (u->nfiles == 0)
        return;
    const char *first = u->files[0].name;
    const char *slash = strchr(first, '/');
    if (!slash)
        return;
    size_t n = (size_t)(slash - first) + 1;
    for (size_t i = 1; i < u->nfiles; i++)
        if (strncmp(u->files[i].name, first, n) != 0)
            return;
    for (size_t i = 0; i < u->nfiles; i++)
        memmove(u->files[i].name, u->files[i].name + n,
                strlen(u->files[i].name + n) + 1);
}

// What the API tells about a checkpoint, from its model.
static void describe(const eng_model *m, json_t **info, json_t **tensors)
{
    json_t *rows = json_array(), *dtypes = json_object();
    uint64_t params = 0;
    for (size_t i = 0; i < eng_model_tensor_count(m); i++) {
        const eng_tensor_info *t = eng_model_tensor(m, i);
        size_t file, idx;
        eng_model_tensor_loc(m, i, &file, &idx);
        json_t *shape = json_array();
        for (int k = 0; k < t->ndim; k++)
            json_array_append_new(shape, json_integer(t->shape[k]));
        json_array_append_new(
            rows, json_pack("{s:s, s:s, s:o, s:I, s:s}", "name", t->name,
                            "dtype", eng_dtype_name(t->dtype), "shape", shape,
                            "params", (json_int_t)t->numel, "file",
                            eng_model_file_at(m, file)->name));
        json_t *c = json_object_get(dtypes, eng_dtype_name(t->dtype));
        json_object_set_new(dtypes, eng_dtype_name(t->dtype),
                            json_integer((c ? json_integer_value(c) : 0) +
                                         (json_int_t)t->numel));
        params += t->numel;
    }
    *info = json_pack("{s:I, s:I, s:I, s:o, s:s}", "bytes",
                      (json_int_t)eng_model_bytes(m), "tensors",
                      (json_int_t)eng_model_tensor_count(m), "params",
                      (json_int_t)params, "dtypes", dtypes, "architecture",
                      eng_model_arch(m));
    *tensors = rows;
}

static void finish_checkpoint(api_request *r, upload *u, up_file *files,
                              size_t n)
{
    eng_file_ref *refs = calloc(n ? n : 1, sizeof *refs);
    store_file *sf = calloc(n ? n : 1, sizeof *sf);
    eng_model *m = NULL;
    json_t *info = NULL, *tensors = NULL;
    sh_diag d;
    sh_diag_clear(&d);
    int rc = refs && sf ? 0 : SH_ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        refs[i] = (eng_file_ref){files[i].name, files[i].path};
        sf[i] = (store_file){files[i].name, files[i].path, files[i].hex,
                             files[i].bytes};
    }
    if (rc == 0 && n == 0)
        rc = sh_diag_set(&d, SH_EFORMAT, "", "the tar holds no files");
    if (rc == 0)
        rc = eng_model_open_files(&m, refs, n, &d);
    if (rc != 0) {
        api_respond_error(r, rc == SH_EINVAL ? SH_EFORMAT : rc, &d);
        goto out;
    }
    describe(m, &info, &tensors);
    json_object_set_new(info, "format",
                        json_string(u->tar ? "folder" : "safetensors"));
    char id[48];
    sh_id_new(id, sizeof id, "ck_");
    rc = store_checkpoint_add(r->srv->s, id, u->name[0] ? u->name : id, info,
                              tensors, sf, n, &d);
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
    json_decref(tensors);
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
    if (rc == 0)
        rc = eng_dataset_check(eng_st_header_of(st), &di, &d);
    eng_st_close(st);
    if (rc != 0) {
        api_respond_error(r, rc, &d);
        return;
    }
    json_t *info = json_pack(
        "{s:s, s:I, s:I, s:I, s:s, s:b, s:s}", "kind",
        eng_dataset_kind_name(di.kind), "bytes", (json_int_t)u->one.bytes,
        "rows", (json_int_t)di.rows, "columns", (json_int_t)di.cols, "dtype",
        eng_dtype_name(di.dtype), "labels", di.has_labels, "sha256",
        u->one.hex);
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

static void end(api_request *r)
{
    upload *u = r->upload;
    if (u->tar)
        join_reader(u);
    else if (!u->failed && u->one_open) {
        u->one_open = false;
        int rc = file_close(&u->one, &u->d);
        if (rc != 0)
            fail(u, api_status_for(rc), rc, &u->d);
    }
    if (u->failed) {
        const char *slug = u->status == 413 ? "too-large" : "invalid-upload";
        const char *title =
            u->status == 413 ? "Upload too large" : "Invalid upload";
        if (u->status >= 500)
            slug = "io", title = "Input/output error";
        api_respond_problem(r, u->status, slug, title, u->d.field, "%s",
                            u->d.msg[0] ? u->d.msg : sh_strerror(u->failed));
        return;
    }
    if (u->dataset) {
        finish_dataset(r, u);
    } else if (u->tar) {
        strip_top_folder(u);
        finish_checkpoint(r, u, u->files, u->nfiles);
    } else {
        finish_checkpoint(r, u, &u->one, 1);
    }
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
    file_drop(&u->one);
    for (size_t i = 0; i < u->nfiles; i++)
        file_drop(&u->files[i]);
    if (u->tmp[0])
        sh_rm_rf(u->tmp);
    free(u->files);
    free(u->q.buf);
    pthread_mutex_destroy(&u->q.mu);
    pthread_cond_destroy(&u->q.cv);
    free(u);
    r->upload = NULL;
}

const api_upload_ops api_checkpoint_upload = {begin_checkpoint, chunk, end,
                                              cleanup};
const api_upload_ops api_dataset_upload = {begin_dataset, chunk, end, cleanup};

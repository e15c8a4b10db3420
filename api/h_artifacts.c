// h_artifacts.c: downloading a job's pruned model: one file at a time
// (sendfile, ETag = SHA-256, Range requests) or the whole folder as a tar
// stream generated on the fly (POSIX ustar, with pax records for long
// names and files of 8 GiB or more).
#include "api/api_int.h"

#include "api/parse.h"

#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// The artifact's files, or a response saying why there are none.
static json_t *artifact_files(api_request *r)
{
    store_conn *c = store_conn_acquire(r->srv->s);
    json_t *job = NULL, *files = NULL;
    int rc = store_job_get(c, r->param[0], &job);
    if (rc == 0)
        files = json_object_get(json_object_get(job, "artifact"), "files");
    store_conn_release(r->srv->s, c);
    if (rc == SH_ENOTFOUND) {
        api_respond_problem(r, 404, "not-found", "Not found", NULL, "no job %s",
                            r->param[0]);
    } else if (rc != 0) {
        api_respond_error(r, rc, NULL);
    } else if (!files && strcmp(json_string_value(json_object_get(job, "kind")),
                                "prune") != 0) {
        api_respond_problem(r, 409, "no-artifact", "No artifact", NULL,
                            "job %s is a %s job: it measures and keeps no "
                            "model; its table is its result",
                            r->param[0],
                            json_string_value(json_object_get(job, "kind")));
    } else if (!files) {
        api_respond_problem(
            r, 409, "no-artifact", "No artifact", NULL,
            "job %s is %s; only a succeeded job has an artifact", r->param[0],
            json_string_value(json_object_get(job, "status")));
    } else {
        json_incref(files);
    }
    json_decref(job);
    return files;
}

// --- one file, with Range

void api_h_artifact_file(api_request *r)
{
    json_t *files = artifact_files(r);
    if (!files)
        return;
    json_t *f = NULL, *x;
    size_t i;
    json_array_foreach (files, i, x) {
        if (strcmp(json_string_value(json_object_get(x, "name")),
                   r->param[1]) == 0)
            f = x;
    }
    if (!f) {
        api_respond_problem(r, 404, "not-found", "Not found", NULL,
                            "the artifact of %s has no file %s", r->param[0],
                            r->param[1]);
        json_decref(files);
        return;
    }
    const char *sha = json_string_value(json_object_get(f, "sha256"));
    char etag[80], path[4096];
    snprintf(etag, sizeof etag, "\"%s\"", sha);
    store_blob_path(r->srv->s, sha, path, sizeof path);
    const char *inm = api_header(r, MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (inm && (strstr(inm, etag) || strcmp(inm, "*") == 0)) {
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        api_add_header(resp, "ETag", etag);
        api_respond(r, 304, resp);
        json_decref(files);
        return;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0)
            close(fd);
        api_respond_problem(r, 500, "io", "Input/output error", NULL,
                            "cannot open %s", r->param[1]);
        json_decref(files);
        return;
    }
    uint64_t size = (uint64_t)st.st_size, from = 0, to = size ? size - 1 : 0;
    const char *if_range = api_header(r, "If-Range");
    int range = if_range && strcmp(if_range, etag) != 0
                    ? 0
                    : api_range_parse(api_header(r, MHD_HTTP_HEADER_RANGE),
                                      size, &from, &to);
    char cr[96];
    if (range < 0) {
        close(fd);
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        snprintf(cr, sizeof cr, "bytes */%" PRIu64, size);
        api_add_header(resp, "Content-Range", cr);
        api_add_header(resp, "Accept-Ranges", "bytes");
        api_respond(r, 416, resp);
        json_decref(files);
        return;
    }
    uint64_t len = size ? to - from + 1 : 0;
    struct MHD_Response *resp =
        MHD_create_response_from_fd_at_offset64(len, fd, (uint64_t)from);
    if (!resp)
        close(fd); // an fd response owns its fd only once it exists
    char disp[1200];
    api_content_disposition(disp, sizeof disp, r->param[1]);
    api_add_header(resp, "Content-Type",
                   sh_str_ends_with(r->param[1], ".json")
                       ? "application/json"
                       : "application/octet-stream");
    api_add_header(resp, "Content-Disposition", disp);
    api_add_header(resp, "ETag", etag);
    api_add_header(resp, "Accept-Ranges", "bytes");
    if (range > 0) {
        snprintf(cr, sizeof cr, "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, from,
                 to, size);
        api_add_header(resp, "Content-Range", cr);
    }
    r->bytes_out += len;
    api_respond(r, range > 0 ? 206 : 200, resp);
    json_decref(files);
}

// --- the whole folder as a tar stream

typedef struct tar_part {
    unsigned char head[1536]; // pax header (when needed) + ustar header
    size_t head_len;
    char path[4096]; // the blob
    uint64_t bytes;  // data, then padding to 512
} tar_part;

typedef struct tar_stream {
    tar_part *parts;
    size_t n;
    uint64_t total;
    size_t at;      // current part
    uint64_t start; // stream position where parts[at] begins
    int fd;         // open blob of parts[at], or -1
} tar_stream;

// Zero-padded octal in width - 1 digits and a NUL, as ustar wants.
static void octal(char *dst, size_t width, uint64_t v)
{
    dst[width - 1] = '\0';
    for (size_t i = width - 1; i-- > 0; v >>= 3)
        dst[i] = (char)('0' + (v & 7));
}

static void ustar_header(unsigned char *h, const char *name, uint64_t size,
                         char type)
{
    memset(h, 0, 512);
    snprintf((char *)h, 100, "%s", name);
    octal((char *)h + 100, 8, 0644);
    octal((char *)h + 108, 8, 0);
    octal((char *)h + 116, 8, 0);
    octal((char *)h + 124, 12, size < 077777777777ull ? size : 0);
    octal((char *)h + 136, 12, (uint64_t)sh_time_now_ms() / 1000);
    memset(h + 148, ' ', 8);
    h[156] = (unsigned char)type;
    memcpy(h + 257, "ustar", 6);
    memcpy(h + 263, "00", 2);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    h[155] = ' ';
}

// One pax record: "<len> key=value\n" where len counts itself.
static size_t pax_record(char *dst, size_t size, const char *key,
                         const char *value)
{
    size_t body = strlen(key) + strlen(value) + 3; // ' ', '=', '\n'
    size_t len = body + 1;
    while (len != body + (size_t)snprintf(NULL, 0, "%zu", len))
        len = body + (size_t)snprintf(NULL, 0, "%zu", len);
    return (size_t)snprintf(dst, size, "%zu %s=%s\n", len, key, value);
}

static int tar_part_init(tar_part *p, const char *name, uint64_t bytes)
{
    p->bytes = bytes;
    p->head_len = 0;
    bool long_name = strlen(name) >= 100;
    bool big = bytes >= 077777777777ull;
    if (long_name || big) {
        char pax[1024];
        size_t k = 0;
        if (long_name)
            k += pax_record(pax + k, sizeof pax - k, "path", name);
        if (big) {
            char v[32];
            snprintf(v, sizeof v, "%" PRIu64, bytes);
            k += pax_record(pax + k, sizeof pax - k, "size", v);
        }
        if (k > 512)
            return SH_ETOOBIG;
        ustar_header(p->head, "PaxHeader", k, 'x');
        memcpy(p->head + 512, pax, k);
        memset(p->head + 512 + k, 0, 512 - k);
        p->head_len = 1024;
    }
    // Long names live in the pax record; the ustar field gets a prefix.
    char shortname[100];
    size_t n = strlen(name) < sizeof shortname - 1 ? strlen(name)
                                                   : sizeof shortname - 1;
    memcpy(shortname, name, n);
    shortname[n] = '\0';
    ustar_header(p->head + p->head_len, shortname, bytes, '0');
    p->head_len += 512;
    return 0;
}

static uint64_t part_size(const tar_part *p)
{
    return p->head_len + ((p->bytes + 511) & ~(uint64_t)511);
}

static ssize_t tar_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    tar_stream *t = cls;
    if (pos >= t->total)
        return MHD_CONTENT_READER_END_OF_STREAM;
    size_t done = 0;
    while (done < max && pos < t->total) {
        while (t->at < t->n && pos >= t->start + part_size(&t->parts[t->at])) {
            t->start += part_size(&t->parts[t->at]);
            t->at++;
            if (t->fd >= 0)
                close(t->fd);
            t->fd = -1;
        }
        size_t want = max - done;
        if (t->at == t->n) { // the two zero blocks at the end
            size_t n = (size_t)(t->total - pos) < want
                           ? (size_t)(t->total - pos)
                           : want;
            memset(buf + done, 0, n);
            done += n;
            pos += n;
            continue;
        }
        const tar_part *p = &t->parts[t->at];
        uint64_t off = pos - t->start;
        size_t n;
        if (off < p->head_len) {
            n = p->head_len - off < want ? (size_t)(p->head_len - off) : want;
            memcpy(buf + done, p->head + off, n);
        } else if (off - p->head_len < p->bytes) {
            uint64_t d = off - p->head_len;
            n = p->bytes - d < want ? (size_t)(p->bytes - d) : want;
            if (t->fd < 0 && (t->fd = open(p->path, O_RDONLY | O_CLOEXEC)) < 0)
                return MHD_CONTENT_READER_END_WITH_ERROR;
            ssize_t got = pread(t->fd, buf + done, n, (off_t)d);
            if (got <= 0)
                return MHD_CONTENT_READER_END_WITH_ERROR;
            n = (size_t)got;
        } else {
            n = part_size(p) - off < want ? (size_t)(part_size(p) - off) : want;
            memset(buf + done, 0, n);
        }
        done += n;
        pos += n;
    }
    return (ssize_t)done;
}

static void tar_free(void *cls)
{
    tar_stream *t = cls;
    if (t->fd >= 0)
        close(t->fd);
    free(t->parts);
    free(t);
}

void api_h_artifact_tar(api_request *r)
{
    json_t *files = artifact_files(r);
    if (!files)
        return;
    size_t n = json_array_size(files);
    tar_stream *t = calloc(1, sizeof *t);
    if (!t || !(t->parts = calloc(n ? n : 1, sizeof *t->parts))) {
        free(t);
        json_decref(files);
        api_respond_error(r, SH_ENOMEM, NULL);
        return;
    }
    t->fd = -1;
    t->n = n;
    for (size_t i = 0; i < n; i++) {
        json_t *f = json_array_get(files, i);
        char name[2100];
        snprintf(name, sizeof name, "%s/%s", r->param[0],
                 json_string_value(json_object_get(f, "name")));
        tar_part *p = &t->parts[i];
        store_blob_path(r->srv->s,
                        json_string_value(json_object_get(f, "sha256")),
                        p->path, sizeof p->path);
        if (tar_part_init(p, name,
                          (uint64_t)json_integer_value(
                              json_object_get(f, "bytes"))) != 0) {
            tar_free(t);
            json_decref(files);
            api_respond_problem(r, 500, "internal", "Internal error", NULL,
                                "a file name is too long for the tar");
            return;
        }
        t->total += part_size(p);
    }
    t->total += 1024;
    json_decref(files);
    struct MHD_Response *resp = MHD_create_response_from_callback(
        t->total, 256 * 1024, tar_read, t, tar_free);
    if (!resp)
        tar_free(t); // not handed over
    char disp[1100];
    snprintf(disp, sizeof disp, "attachment; filename=\"%s.tar\"", r->param[0]);
    api_add_header(resp, "Content-Type", "application/x-tar");
    api_add_header(resp, "Content-Disposition", disp);
    r->bytes_out += t->total;
    api_respond(r, 200, resp);
}

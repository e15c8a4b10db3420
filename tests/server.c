// server.c: starting the real server and talking to it.
#include "tests/server.h"

#include "common/util.h"
#include "tests/helpers.h"

#include <archive.h>
#include <archive_entry.h>
#include <check.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static void spawn(th_server *s)
{
    const char *bin = getenv("SHEARS_BIN");
    if (!bin || !bin[0])
        bin = "build/shears";
    char *port_file = th_path(s->dir, "port");
    unlink(port_file);
    const char *argv[72];
    int n = 0;
    if (s->tmpfs[0]) {
        // unshare execs the shell and the shell execs shears: one pid.
        static char script[160];
        snprintf(script, sizeof script,
                 "mount -t tmpfs -o size=%s shears-test \"$0\" && exec \"$@\"",
                 s->tmpfs);
        sh_mkdir_p(s->data);
        argv[n++] = "/usr/bin/unshare";
        argv[n++] = "-rm";
        argv[n++] = "/bin/sh";
        argv[n++] = "-c";
        argv[n++] = script;
        argv[n++] = s->data;
    }
    argv[n++] = bin;
    argv[n++] = "serve";
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--data-dir";
    argv[n++] = s->data;
    argv[n++] = "--port-file";
    argv[n++] = port_file;
    char *token_file = NULL;
    if (s->token[0]) {
        token_file = th_path(s->dir, "token");
        th_write_file(token_file, s->token, strlen(s->token));
        argv[n++] = "--token-file";
        argv[n++] = token_file;
    }
    for (int i = 0; s->extra[i] && n < 70; i++)
        argv[n++] = s->extra[i];
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, s->log,
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    int rc =
        posix_spawn(&s->pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    ck_assert_msg(rc == 0, "cannot start %s", bin);
    // Wait for the port file (the server writes it once listening).
    for (int i = 0; i < 400; i++) {
        char *text = NULL;
        size_t len = 0;
        if (sh_file_read(port_file, 64, &text, &len) == 0) {
            s->port = atoi(text);
            free(text);
            break;
        }
        int status;
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            ck_abort_msg("the server exited at start-up; see %s", s->log);
        }
        usleep(25000);
    }
    ck_assert_msg(s->port > 0, "the server did not start; see %s", s->log);
    free(port_file);
    free(token_file);
}

void th_server_start(th_server *s, const char *token, const char *const *extra)
{
    memset(s, 0, sizeof *s);
    s->dir = th_tmpdir();
    s->data = th_path(s->dir, "data");
    s->log = th_path(s->dir, "server.log");
    if (token)
        snprintf(s->token, sizeof s->token, "%s", token);
    for (int i = 0; extra && extra[i] && i < 15; i++)
        s->extra[i] = extra[i];
    spawn(s);
}

void th_server_start_tmpfs(th_server *s, const char *size,
                           const char *const *extra)
{
    memset(s, 0, sizeof *s);
    s->dir = th_tmpdir();
    s->data = th_path(s->dir, "data");
    s->log = th_path(s->dir, "server.log");
    snprintf(s->tmpfs, sizeof s->tmpfs, "%s", size);
    for (int i = 0; extra && extra[i] && i < 15; i++)
        s->extra[i] = extra[i];
    spawn(s);
}

void th_server_restart(th_server *s)
{
    ck_assert_int_eq(s->pid, 0);
    s->port = 0;
    spawn(s);
}

int th_server_wait(th_server *s, double seconds)
{
    if (s->pid <= 0)
        return -1;
    int status = 0;
    double t0 = sh_time_mono();
    do {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status)
                                     : 128 + WTERMSIG(status);
        }
        usleep(20000);
    } while (sh_time_mono() - t0 < seconds);
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    s->pid = 0;
    ck_abort_msg("the server did not exit within %.0f s", seconds);
    return -1;
}

int th_server_stop(th_server *s)
{
    if (s->pid <= 0)
        return -1;
    kill(s->pid, SIGTERM);
    return th_server_wait(s, 60);
}

void th_server_kill(th_server *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

void th_server_free(th_server *s)
{
    th_server_kill(s);
    if (s->dir && !getenv("SHEARS_KEEP_TEST_DIRS"))
        th_rmtree(s->dir);
    free(s->dir);
    free(s->data);
    free(s->log);
    memset(s, 0, sizeof *s);
}

// --- HTTP

typedef struct sink {
    char *buf;
    size_t len, cap;
} sink;

static size_t on_data(char *p, size_t size, size_t n, void *ctx)
{
    sink *k = ctx;
    size_t bytes = size * n;
    if (k->len + bytes + 1 > k->cap) {
        size_t cap = (k->len + bytes + 1) * 2;
        k->buf = realloc(k->buf, cap);
        k->cap = cap;
    }
    memcpy(k->buf + k->len, p, bytes);
    k->len += bytes;
    k->buf[k->len] = '\0';
    return bytes;
}

typedef struct source {
    const char *data;
    size_t len, at;
    FILE *f;
} source;

static size_t on_read(char *p, size_t size, size_t n, void *ctx)
{
    source *s = ctx;
    if (s->f)
        return fread(p, 1, size * n, s->f);
    size_t k = s->len - s->at < size * n ? s->len - s->at : size * n;
    memcpy(p, s->data + s->at, k);
    s->at += k;
    return k;
}

static long perform(th_server *s, const char *method, const char *path,
                    const char *const *headers, source *src, long long len,
                    bool auth, th_resp *out)
{
    CURL *c = curl_easy_init();
    char url[2048];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", s->port, path);
    struct curl_slist *hl = NULL;
    for (int i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    char bearer[128];
    if (auth && s->token[0]) {
        snprintf(bearer, sizeof bearer, "Authorization: Bearer %s", s->token);
        hl = curl_slist_append(hl, bearer);
    }
    hl = curl_slist_append(hl, "Expect:"); // no 100-continue round trip
    sink body = {0}, head = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &head);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    if (src) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, src);
        if (len >= 0)
            curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
    }
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    memset(out, 0, sizeof *out);
    out->status = status;
    out->body = body.buf ? body.buf : strdup("");
    out->len = body.len;
    out->headers = head.buf ? head.buf : strdup("");
    out->json = out->len ? json_loadb(out->body, out->len, 0, NULL) : NULL;
    return status;
}

long th_http(th_server *s, const char *method, const char *path,
             const char *const *headers, const void *body, size_t n, bool auth,
             th_resp *out)
{
    source src = {body, n, 0, NULL};
    return perform(s, method, path, headers, body ? &src : NULL,
                   body ? (long long)n : -1, auth, out);
}

long th_get(th_server *s, const char *path, th_resp *out)
{
    return th_http(s, "GET", path, NULL, NULL, 0, true, out);
}

long th_post_json(th_server *s, const char *path, const char *json,
                  th_resp *out)
{
    const char *h[] = {"Content-Type: application/json", NULL};
    return th_http(s, "POST", path, h, json, strlen(json), true, out);
}

long th_delete(th_server *s, const char *path, th_resp *out)
{
    return th_http(s, "DELETE", path, NULL, NULL, 0, true, out);
}

long th_upload(th_server *s, const char *path, const char *file,
               const char *type, bool chunked, th_resp *out)
{
    FILE *f = fopen(file, "rb");
    ck_assert_ptr_nonnull(f);
    struct stat st;
    fstat(fileno(f), &st);
    char ct[128];
    snprintf(ct, sizeof ct, "Content-Type: %s", type);
    const char *h[] = {ct, chunked ? "Transfer-Encoding: chunked" : NULL, NULL};
    source src = {NULL, 0, 0, f};
    long status = perform(s, "POST", path, h, &src,
                          chunked ? -1 : (long long)st.st_size, true, out);
    fclose(f);
    return status;
}

const char *th_header(const th_resp *r, const char *name, char *buf,
                      size_t size)
{
    size_t nl = strlen(name);
    for (const char *p = r->headers; p && *p;) {
        const char *end = strstr(p, "\r\n");
        if (!end)
            break;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t n =
                (size_t)(end - v) < size - 1 ? (size_t)(end - v) : size - 1;
            memcpy(buf, v, n);
            buf[n] = '\0';
            return buf;
        }
        p = end + 2;
    }
    return NULL;
}

void th_resp_free(th_resp *r)
{
    free(r->body);
    free(r->headers);
    json_decref(r->json);
    memset(r, 0, sizeof *r);
}

static bool ended(const char *status)
{
    return strcmp(status, "succeeded") == 0 || strcmp(status, "failed") == 0 ||
           strcmp(status, "cancelled") == 0;
}

json_t *th_job_wait(th_server *s, const char *id, double timeout)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    double until = sh_time_mono() + timeout;
    while (sh_time_mono() < until) {
        th_resp r;
        th_get(s, path, &r);
        ck_assert_msg(r.status == 200, "GET %s: %ld %s", path, r.status,
                      r.body);
        const char *st = json_string_value(json_object_get(r.json, "status"));
        if (st && ended(st)) {
            json_t *j = json_incref(r.json);
            th_resp_free(&r);
            return j;
        }
        th_resp_free(&r);
        usleep(50000);
    }
    ck_abort_msg("job %s did not end within %.0f s", id, timeout);
    return NULL;
}

bool th_job_wait_running(th_server *s, const char *id, double fraction,
                         double timeout)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    double until = sh_time_mono() + timeout;
    while (sh_time_mono() < until) {
        th_resp r;
        th_get(s, path, &r);
        const char *st = json_string_value(json_object_get(r.json, "status"));
        double f = json_number_value(
            json_object_get(json_object_get(r.json, "progress"), "fraction"));
        bool running = st && strcmp(st, "running") == 0;
        bool done = st && ended(st);
        th_resp_free(&r);
        if (running && f >= fraction)
            return true;
        if (done)
            return false;
        usleep(20000);
    }
    return false;
}

char *th_upload_checkpoint(th_server *s, const char *path)
{
    th_resp r;
    char *tar = NULL;
    const char *file = path;
    const char *type = "application/octet-stream";
    if (sh_path_is_dir(path)) {
        // A folder goes up as a tar of its files (one tar per call: calls
        // may run at once).
        static atomic_int seq;
        char leaf[64];
        snprintf(leaf, sizeof leaf, "upload-%d.tar", atomic_fetch_add(&seq, 1));
        tar = th_path(s->dir, leaf);
        char cmd[8192];
        snprintf(cmd, sizeof cmd, "tar -cf '%s' -C '%s' .", tar, path);
        ck_assert_int_eq(system(cmd), 0);
        file = tar;
        type = "application/x-tar";
    }
    long st = th_upload(s, "/v1/checkpoints?name=test", file, type, false, &r);
    ck_assert_msg(st == 201, "upload %s: %ld %s", path, st, r.body);
    char *id = strdup(json_string_value(json_object_get(r.json, "id")));
    th_resp_free(&r);
    if (tar)
        unlink(tar);
    free(tar);
    return id;
}

char *th_upload_dataset(th_server *s, const char *file)
{
    th_resp r;
    long st = th_upload(s, "/v1/datasets?name=test", file,
                        "application/octet-stream", false, &r);
    ck_assert_msg(st == 201, "upload %s: %ld %s", file, st, r.body);
    char *id = strdup(json_string_value(json_object_get(r.json, "id")));
    th_resp_free(&r);
    return id;
}

void th_write_tar(const char *out, const char *const *names,
                  const char *const *paths, const char *const *data,
                  const int *kinds, size_t n)
{
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    ck_assert_int_eq(archive_write_open_filename(a, out), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, names[i]);
        archive_entry_set_perm(e, 0644);
        unsigned char *bytes = NULL;
        size_t len = 0;
        if (paths && paths[i])
            bytes = th_read_file(paths[i], &len);
        else if (data && data[i])
            len = strlen(data[i]);
        switch (kinds ? kinds[i] : 0) {
        case 1:
            archive_entry_set_filetype(e, AE_IFLNK);
            archive_entry_set_symlink(e, "/etc/passwd");
            len = 0;
            break;
        case 2:
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_hardlink(e, "config.json");
            len = 0;
            break;
        case 3:
            archive_entry_set_filetype(e, AE_IFCHR);
            archive_entry_set_rdev(e, makedev(1, 3));
            len = 0;
            break;
        case 4:
            archive_entry_set_filetype(e, AE_IFDIR);
            archive_entry_set_perm(e, 0755);
            len = 0;
            break;
        default: archive_entry_set_filetype(e, AE_IFREG);
        }
        archive_entry_set_size(e, (la_int64_t)len);
        ck_assert_int_eq(archive_write_header(a, e), ARCHIVE_OK);
        if (len)
            archive_write_data(a, bytes ? (const void *)bytes : data[i], len);
        free(bytes);
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
}

void th_write_big_model(const char *path, int tensors, int rows, int cols)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    json_t *h = json_object();
    json_object_set_new(h, "__metadata__", json_pack("{s:s}", "format", "pt"));
    uint64_t bytes = (uint64_t)rows * (uint64_t)cols * 4, off = 0;
    for (int t = 0; t < tensors; t++) {
        char name[64];
        snprintf(name, sizeof name, "layers.%d.proj.weight", t);
        json_object_set_new(h, name,
                            json_pack("{s:s, s:[i,i], s:[I,I]}", "dtype", "F32",
                                      "shape", rows, cols, "data_offsets",
                                      (json_int_t)off,
                                      (json_int_t)(off + bytes)));
        off += bytes;
    }
    char *text = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    uint64_t hl = strlen(text);
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++)
        lenbuf[i] = (unsigned char)(hl >> (8 * i));
    fwrite(lenbuf, 1, 8, f);
    fwrite(text, 1, hl, f);
    free(text);
    size_t chunk = (size_t)cols;
    float *row = malloc(chunk * sizeof *row);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int t = 0; t < tensors; t++) {
        for (int r = 0; r < rows; r++) {
            for (size_t k = 0; k < chunk; k++) { // uniform in [-1, 1)
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                row[k] = (float)((int32_t)(x >> 32)) / 2147483648.0f;
            }
            fwrite(row, sizeof *row, chunk, f);
        }
    }
    free(row);
    fclose(f);
}

char *th_slow_job(th_server *s)
{
    char *big = th_path(s->dir, "big.safetensors");
    th_write_big_model(big, 8, 4096, 4096);
    char *ck = th_upload_checkpoint(s, big);
    unlink(big);
    free(big);
    char body[256];
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"random\","
             "\"scope\":\"global\",\"seed\":7}",
             ck);
    th_resp r;
    ck_assert_int_eq(th_post_json(s, "/v1/jobs", body, &r), 202);
    char *id = strdup(json_string_value(json_object_get(r.json, "id")));
    th_resp_free(&r);
    free(ck);
    return id;
}

// --- problems

static const char *field_of(const json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

void th_expect_problem(th_resp *r, long status, const char *field,
                       const char *words)
{
    char ct[128];
    ck_assert_msg(r->status == status, "want %ld, got %ld: %s", status,
                  r->status, r->body);
    ck_assert_msg(th_header(r, "Content-Type", ct, sizeof ct) &&
                      strcmp(ct, "application/problem+json") == 0,
                  "not problem+json: %s", r->headers);
    ck_assert_ptr_nonnull(r->json);
    ck_assert_int_eq(json_integer_value(json_object_get(r->json, "status")),
                     status);
    ck_assert(field_of(r->json, "type") && field_of(r->json, "title") &&
              field_of(r->json, "detail"));
    if (field)
        ck_assert_msg(field_of(r->json, "field") &&
                          strcmp(field_of(r->json, "field"), field) == 0,
                      "field: want %s in %s", field, r->body);
    if (words)
        ck_assert_msg(strstr(field_of(r->json, "detail"), words),
                      "detail lacks \"%s\": %s", words, r->body);
}

// test_limits.c: the service against abuse and accidents, one test per
// class: pathological regexes, sparse tars, names that cannot round-trip,
// slow clients, a full disk, huge headers, and the small header and spec
// cases. Each starts the real server and checks, besides the answer, that
// other clients are served meanwhile.
#include "tests/helpers.h"
#include "tests/server.h"

#include "common/util.h"

#include <archive.h>
#include <archive_entry.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *jstr(json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

// --- raw sockets, from a chosen loopback address

static int raw_connect(const char *from, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in src = {.sin_family = AF_INET};
    inet_pton(AF_INET, from, &src.sin_addr);
    ck_assert_msg(bind(fd, (struct sockaddr *)&src, sizeof src) == 0,
                  "bind %s: %s", from, strerror(errno));
    struct sockaddr_in dst = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
    ck_assert_msg(connect(fd, (struct sockaddr *)&dst, sizeof dst) == 0,
                  "connect: %s", strerror(errno));
    return fd;
}

// True when the server has closed fd (EOF or reset) within ms.
static bool closed_within(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    double until = sh_time_mono() + ms / 1000.0;
    for (;;) {
        int left = (int)((until - sh_time_mono()) * 1000);
        if (poll(&p, 1, left > 0 ? left : 0) <= 0)
            return false;
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            return true;
        if (sh_time_mono() >= until)
            return false;
    }
}

// Sends a whole request and reads the answer's status line; 0 when the
// connection closed without one.
static int raw_request(const char *from, int port, const char *text,
                       char *reply, size_t size)
{
    int fd = raw_connect(from, port);
    size_t n = strlen(text);
    ck_assert_int_eq(send(fd, text, n, MSG_NOSIGNAL), (ssize_t)n);
    size_t got = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (got + 1 < size && poll(&p, 1, 5000) > 0) {
        ssize_t k = recv(fd, reply + got, size - 1 - got, 0);
        if (k <= 0)
            break;
        got += (size_t)k;
        reply[got] = '\0';
        if (strstr(reply, "\r\n\r\n") && strstr(reply, "}"))
            break;
    }
    reply[got] = '\0';
    close(fd);
    int status = 0;
    sscanf(reply, "HTTP/1.1 %d", &status);
    return status;
}

static double healthz_from(const char *from, int port)
{
    char reply[4096];
    double t0 = sh_time_mono();
    int st = raw_request(from, port,
                         "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: "
                         "close\r\n\r\n",
                         reply, sizeof reply);
    ck_assert_msg(st == 200, "healthz from %s: %s", from, reply);
    return sh_time_mono() - t0;
}

// --- 1. regexes

typedef struct poster {
    th_server *s;
    const char *body;
    th_resp r;
    pthread_t t;
} poster;

static void *post_thread(void *arg)
{
    poster *p = arg;
    th_post_json(p->s, "/v1/jobs", p->body, &p->r);
    return NULL;
}

// A checkpoint of n one-element tensors whose names make "a.*a.*b.*b"
// backtrack at length: the check against it costs about n half
// milliseconds.
static char *write_many_tensors(const char *dir, size_t n)
{
    th_tensor *ts = calloc(n, sizeof *ts);
    char(*names)[80] = calloc(n, sizeof *names);
    float one = 1;
    for (size_t i = 0; i < n; i++) {
        snprintf(names[i], sizeof names[i],
                 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab%06zu",
                 i);
        ts[i] = (th_tensor){names[i], "F32", 1, {1}, &one};
    }
    char *path = th_path(dir, "many.safetensors");
    th_write_st(path, ts, n, NULL);
    free(ts);
    free(names);
    return path;
}

// Regexes are bounded before they compile and their matching runs off the
// HTTP threads with a deadline: submissions that would have stalled the
// server are refused, naming the field, while /healthz answers at once.
START_TEST(test_regex_submissions)
{
    const char *flags[] = {"--check-timeout", "1", "--check-threads", "2",
                           NULL};
    th_server s;
    th_server_start(&s, NULL, flags);
    char *model = write_many_tensors(s.dir, 20000);
    char *ck = th_upload_checkpoint(&s, model);
    char body[4096];
    th_resp r;
    // The report's classes: stacked and nested repetition.
    static const char *const bad[] = {
        "((a{1,100}){1,100}){1,100}", "(a*)*b", "(x+x+)+y", "a{1,100}{1,100}",
        "((((((((((((((((((((a))))))))))))))))))))"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(body, sizeof body,
                 "{\"checkpoint\":\"%s\",\"method\":\"magnitude\","
                 "\"overrides\":[{\"match\":\"x\",\"sparsity\":0.1},"
                 "{\"match\":\"%s\",\"sparsity\":0.2}]}",
                 ck, bad[i]);
        th_post_json(&s, "/v1/jobs", body, &r);
        th_expect_problem(&r, 422, "overrides[1].match",
                          "is not an accepted regex");
        th_resp_free(&r);
    }
    // 256 patterns no longer fit in a body: 64 per list.
    size_t k = (size_t)snprintf(body, sizeof body,
                                "{\"checkpoint\":\"%s\",\"method\":"
                                "\"magnitude\",\"ignore\":[",
                                ck);
    for (int i = 0; i < 65; i++)
        k += (size_t)snprintf(body + k, sizeof body - k, "%s\"x%d\"",
                              i ? "," : "", i);
    snprintf(body + k, sizeof body - k, "]}");
    th_post_json(&s, "/v1/jobs", body, &r);
    th_expect_problem(&r, 422, "ignore", "at most 64");
    th_resp_free(&r);

    // Legal patterns that cost: six at once, two check threads, one second
    // each; the HTTP threads stay free all along.
    char slow[512];
    snprintf(slow, sizeof slow,
             "{\"checkpoint\":\"%s\",\"method\":\"magnitude\","
             "\"targets\":[\"a.*a.*b.*b\"]}",
             ck);
    poster p[6];
    for (int i = 0; i < 6; i++) {
        p[i] = (poster){.s = &s, .body = slow};
        pthread_create(&p[i].t, NULL, post_thread, &p[i]);
    }
    double worst = 0, t0 = sh_time_mono();
    int probes = 0;
    while (sh_time_mono() - t0 < 2.5) {
        double took = healthz_from("127.0.0.1", s.port);
        worst = took > worst ? took : worst;
        probes++;
        usleep(20000);
    }
    for (int i = 0; i < 6; i++) {
        pthread_join(p[i].t, NULL);
        th_expect_problem(&p[i].r, 422, "targets", "takes too long");
        th_resp_free(&p[i].r);
    }
    ck_assert_msg(worst < 0.5, "/healthz took %.3f s during the checks", worst);
    ck_assert_int_ge(probes, 20);
    // Matches the limit cuts off are refused, naming field and tensor.
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"magnitude\","
             "\"targets\":[\"b\"],\"ignore\":[\".*a.*a.*a.*a.*a.*b.*b\"]}",
             ck);
    th_post_json(&s, "/v1/jobs", body, &r);
    th_expect_problem(&r, 422, "ignore[0]", "too many steps");
    th_resp_free(&r);
    free(ck);
    free(model);
    ck_assert_int_eq(th_server_stop(&s), 0);
    th_server_free(&s);
}
END_TEST

// --- 2. sparse tars

static size_t count_files(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "find '%s' -type f | wc -l", dir);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = 0;
    ck_assert_int_eq(fscanf(f, "%zu", &n), 1);
    pclose(f);
    return n;
}

// A tar whose member is a sparse map is refused (it would expand past
// what was sent; an all-hole member would be stored as nothing), and
// nothing of it stays.
START_TEST(test_sparse_tars)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    static const char *const tars[] = {
        "tar/sparse-gnu.tar", "tar/sparse-pax.tar", "tar/all-hole.tar"};
    for (size_t i = 0; i < 3; i++) {
        char *tar = th_fixture(tars[i]);
        th_resp r;
        th_upload(&s, "/v1/checkpoints", tar, "application/x-tar", false, &r);
        th_expect_problem(&r, 422, NULL, "sparse");
        th_resp_free(&r);
        free(tar);
    }
    th_resp r;
    th_get(&s, "/v1/checkpoints", &r);
    ck_assert_uint_eq(json_array_size(json_object_get(r.json, "items")), 0);
    th_resp_free(&r);
    char *blobs = th_path(s.data, "blobs"), *tmp = th_path(s.data, "tmp");
    ck_assert_uint_eq(count_files(blobs), 0);
    ck_assert_uint_eq(count_files(tmp), 0);
    free(blobs);
    free(tmp);
    ck_assert_int_eq(th_server_stop(&s), 0);
    th_server_free(&s);
}
END_TEST

// --- 3. names

// Names up to the limit go through untouched: the artifact list, one
// file by name, the tar download; longer ones and file/folder clashes are
// refused at upload. Content-Disposition cannot be broken by a quote.
START_TEST(test_names_round_trip)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *cfg = th_fixture("mlp-fmnist/config.json");
    char *weights = th_fixture("mlp-fmnist/model.safetensors");
    char long_name[256];
    memset(long_name, 'n', 255);
    long_name[255] = '\0';
    memcpy(long_name, "docs/", 5); // 255 bytes, in a folder
    char long_name2[256];
    memcpy(long_name2, long_name, sizeof long_name);
    long_name2[254] = 'm'; // differs only in its last byte
    const char *names[] = {"config.json", "model.safetensors", long_name,
                           long_name2, "we\"ird;name.txt"};
    const char *paths[] = {cfg, weights, NULL, NULL, NULL};
    const char *data[] = {NULL, NULL, "one", "two", "quoted"};
    char *tar = th_path(s.dir, "names.tar");
    th_write_tar(tar, names, paths, data, NULL, 5);
    th_resp r;
    ck_assert_int_eq(
        th_upload(&s, "/v1/checkpoints", tar, "application/x-tar", false, &r),
        201);
    char ck[64];
    snprintf(ck, sizeof ck, "%s", jstr(r.json, "id"));
    th_resp_free(&r);
    char body[256];
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"magnitude\"}", ck);
    ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 202);
    char id[64];
    snprintf(id, sizeof id, "%s", jstr(r.json, "id"));
    th_resp_free(&r);
    json_t *job = th_job_wait(&s, id, 60);
    ck_assert_str_eq(jstr(job, "status"), "succeeded");
    json_t *files = json_object_get(json_object_get(job, "artifact"), "files");
    int seen = 0;
    for (size_t i = 0; i < json_array_size(files); i++) {
        const char *n = jstr(json_array_get(files, i), "name");
        seen += strcmp(n, long_name) == 0 || strcmp(n, long_name2) == 0;
    }
    ck_assert_int_eq(seen, 2);
    json_decref(job);
    char path[1024];
    snprintf(path, sizeof path, "/v1/jobs/%s/artifact/files/%s", id,
             long_name2);
    ck_assert_int_eq(th_get(&s, path, &r), 200);
    ck_assert_str_eq(r.body, "two");
    th_resp_free(&r);
    snprintf(path, sizeof path,
             "/v1/jobs/%s/artifact/files/we%%22ird%%3Bname.txt", id);
    ck_assert_int_eq(th_get(&s, path, &r), 200);
    char disp[512];
    ck_assert_str_eq(th_header(&r, "Content-Disposition", disp, sizeof disp),
                     "attachment; filename=\"we_ird;name.txt\"; "
                     "filename*=UTF-8''we%22ird%3Bname.txt");
    th_resp_free(&r);
    // The tar download: every name whole (pax records past 100 bytes).
    snprintf(path, sizeof path, "/v1/jobs/%s/artifact", id);
    ck_assert_int_eq(th_get(&s, path, &r), 200);
    struct archive *a = archive_read_new();
    archive_read_support_format_tar(a);
    ck_assert_int_eq(archive_read_open_memory(a, r.body, r.len), ARCHIVE_OK);
    struct archive_entry *e;
    char want[512];
    snprintf(want, sizeof want, "%s/%s", id, long_name);
    bool found = false;
    while (archive_read_next_header(a, &e) == ARCHIVE_OK)
        found = found || strcmp(archive_entry_pathname(e), want) == 0;
    archive_read_free(a);
    ck_assert_msg(found, "%s is not in the tar", want);
    th_resp_free(&r);

    // Refused at upload, naming the member.
    char too_long[257];
    memset(too_long, 'x', 256);
    too_long[256] = '\0';
    const char *bad1[] = {"config.json", too_long};
    const char *bad1_data[] = {"{}", "x"};
    th_write_tar(tar, bad1, NULL, bad1_data, NULL, 2);
    th_upload(&s, "/v1/checkpoints", tar, "application/x-tar", false, &r);
    th_expect_problem(&r, 422, NULL, "names are at most 255 bytes");
    ck_assert_ptr_nonnull(strstr(jstr(r.json, "detail"), "xxxxxxxx"));
    th_resp_free(&r);
    const char *bad2[] = {"model.safetensors", "x", "x/y"};
    const char *bad2_paths[] = {weights, NULL, NULL};
    const char *bad2_data[] = {NULL, "file", "in a folder of the same name"};
    th_write_tar(tar, bad2, bad2_paths, bad2_data, NULL, 3);
    th_upload(&s, "/v1/checkpoints", tar, "application/x-tar", false, &r);
    th_expect_problem(&r, 422, "x/y", "both a file and a folder");
    th_resp_free(&r);
    free(tar);
    free(cfg);
    free(weights);
    ck_assert_int_eq(th_server_stop(&s), 0);
    th_server_free(&s);
}
END_TEST

// --- 4. slow clients

// A thousand connections trickling header bytes from one address take
// only that address's share; another address is served at once; the
// trickling ones are cut at the head deadline; a body slower than the
// minimum rate is cut too.
START_TEST(test_slow_clients)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 1400 && rl.rlim_max >= 1400) {
        rl.rlim_cur = 1400;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int n = rl.rlim_cur >= 1400 ? 1100 : (int)rl.rlim_cur - 200;
    const char *flags[] = {"--max-conns-per-ip",
                           "8",
                           "--head-timeout",
                           "2",
                           "--min-body-rate",
                           "1K",
                           NULL};
    th_server s;
    th_server_start(&s, NULL, flags);
    int *fds = calloc((size_t)n, sizeof *fds);
    const char *start = "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ";
    for (int i = 0; i < n; i++) {
        fds[i] = raw_connect("127.0.0.1", s.port);
        send(fds[i], start, strlen(start), MSG_NOSIGNAL);
    }
    usleep(300000);
    int open = 0;
    for (int i = 0; i < n; i++) {
        if (closed_within(fds[i], 0)) {
            close(fds[i]);
            fds[i] = -1;
        } else {
            open++;
        }
    }
    ck_assert_msg(open <= 8, "%d of %d trickling connections are open", open,
                  n);
    ck_assert_int_ge(open, 1);
    // Another address is served while they trickle.
    double t0 = sh_time_mono();
    for (int k = 0; k < 5; k++) {
        double took = healthz_from("127.0.0.2", s.port);
        ck_assert_msg(took < 0.5, "/healthz took %.3f s", took);
        for (int i = 0; i < n; i++)
            if (fds[i] >= 0)
                send(fds[i], "b", 1, MSG_NOSIGNAL);
        usleep(200000);
    }
    // The head deadline (2 s) closes them, however they trickle.
    while (open > 0 && sh_time_mono() - t0 < 6) {
        for (int i = 0; i < n; i++) {
            if (fds[i] < 0)
                continue;
            if (closed_within(fds[i], 0)) {
                close(fds[i]);
                fds[i] = -1;
                open--;
            } else {
                send(fds[i], "b", 1, MSG_NOSIGNAL);
            }
        }
        usleep(250000);
    }
    ck_assert_msg(open == 0, "%d trickling connections outlived the deadline",
                  open);
    ck_assert_msg(sh_time_mono() - t0 > 1.2, "closed before the deadline");
    healthz_from("127.0.0.1", s.port); // the address is welcome again
    free(fds);

    // A body at 20 bytes a second, below --min-body-rate 1K.
    int fd = raw_connect("127.0.0.1", s.port);
    const char *head = "POST /v1/checkpoints HTTP/1.1\r\nHost: t\r\n"
                       "Content-Type: application/octet-stream\r\n"
                       "Content-Length: 1000000\r\n\r\n";
    send(fd, head, strlen(head), MSG_NOSIGNAL);
    t0 = sh_time_mono();
    bool cut = false;
    while (!cut && sh_time_mono() - t0 < 20) {
        send(fd, "01234567890123456789", 20, MSG_NOSIGNAL);
        cut = closed_within(fd, 1000);
    }
    close(fd);
    ck_assert_msg(cut, "a 20 B/s body was not cut within 20 s");
    ck_assert_msg(sh_time_mono() - t0 >= 9, "cut before its 10 s window");
    th_resp m;
    ck_assert_int_eq(th_get(&s, "/metrics", &m), 200);
    unsigned long long heads = 0, bodies = 0;
    const char *h = strstr(m.body, "cut_total{reason=\"head_timeout\"} ");
    const char *b = strstr(m.body, "cut_total{reason=\"body_rate\"} ");
    ck_assert(h && b);
    sscanf(strchr(h, ' ') + 1, "%llu", &heads);
    sscanf(strchr(b, ' ') + 1, "%llu", &bodies);
    ck_assert_uint_ge(heads, 8);
    ck_assert_uint_eq(bodies, 1);
    th_resp_free(&m);

    // Too many header fields: problem+json, not libmicrohttpd's HTML.
    char req[16384], reply[4096];
    size_t k = (size_t)snprintf(req, sizeof req,
                                "GET /healthz HTTP/1.1\r\nHost: t\r\n");
    for (int i = 0; i < 150; i++)
        k += (size_t)snprintf(req + k, sizeof req - k, "X-H%d: v\r\n", i);
    snprintf(req + k, sizeof req - k, "Connection: close\r\n\r\n");
    ck_assert_int_eq(raw_request("127.0.0.1", s.port, req, reply, sizeof reply),
                     431);
    ck_assert_ptr_nonnull(strstr(reply, "application/problem+json"));
    ck_assert_ptr_nonnull(strstr(reply, "at most 100 fields"));
    ck_assert_int_eq(th_server_stop(&s), 0);
    th_server_free(&s);
}
END_TEST

// --- 5. a full disk

// A dataset of rows x 16 random floats, distinct every call.
static void write_dataset(const char *path, int rows)
{
    static uint64_t seed = 1;
    float *v = malloc((size_t)rows * 16 * sizeof *v);
    th_randn(v, (size_t)rows * 16, seed++);
    th_tensor t = {"inputs", "F32", 2, {rows, 16}, v};
    th_write_st(path, &t, 1, NULL);
    free(v);
}

// Fills the disk through the API: every write path answers 507; /readyz
// says why it is not ready; deletes still work (the ballast makes room);
// a job that runs out of space fails saying so, naming no server path.
START_TEST(test_disk_full)
{
    const char *flags[] = {"--ballast", "1M", "--min-free", "4M", NULL};
    th_server s;
    th_server_start_tmpfs(&s, "24m", flags);
    th_resp r;
    ck_assert_int_eq(th_get(&s, "/readyz", &r), 200);
    th_resp_free(&r);
    char *model = th_fixture("mlp-fmnist/model.safetensors");
    char *ck = th_upload_checkpoint(&s, model);
    // Chunked uploads (no length to refuse them early) until the disk is
    // full, in smaller and smaller pieces.
    char *file = th_path(s.dir, "ds.safetensors");
    static const int rows[] = {16384, 2048, 256, 32};
    int full = 0;
    char ds[64] = "";
    for (size_t k = 0; k < 4; k++) {
        for (int i = 0; i < 200; i++) {
            write_dataset(file, rows[k]);
            long st = th_upload(&s, "/v1/datasets", file,
                                "application/octet-stream", true, &r);
            if (st == 201) {
                snprintf(ds, sizeof ds, "%s", jstr(r.json, "id"));
                th_resp_free(&r);
                continue;
            }
            th_expect_problem(&r, 507, NULL, NULL);
            ck_assert_str_eq(jstr(r.json, "type"),
                             "urn:shears:problem:insufficient-storage");
            ck_assert_ptr_null(strstr(r.body, s.data));
            th_resp_free(&r);
            full++;
            break;
        }
    }
    ck_assert_int_eq(full, 4);
    ck_assert(ds[0]);
    // With a length, refused before the body.
    write_dataset(file, 16384);
    th_upload(&s, "/v1/datasets", file, "application/octet-stream", false, &r);
    th_expect_problem(&r, 507, NULL, "--min-free");
    th_resp_free(&r);
    ck_assert_int_eq(th_get(&s, "/readyz", &r), 503);
    ck_assert_str_eq(jstr(r.json, "type"), "urn:shears:problem:low-disk-space");
    ck_assert_ptr_nonnull(strstr(jstr(r.json, "detail"), "below --min-free"));
    th_resp_free(&r);
    ck_assert_int_eq(th_get(&s, "/healthz", &r), 200);
    th_resp_free(&r);
    char body[256];
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"magnitude\"}", ck);
    th_post_json(&s, "/v1/jobs", body, &r);
    th_expect_problem(&r, 507, NULL, "full");
    th_resp_free(&r);
    // A delete goes through (the ballast is released for it).
    char path[128];
    snprintf(path, sizeof path, "/v1/datasets/%s", ds);
    ck_assert_int_eq(th_delete(&s, path, &r), 204);
    th_resp_free(&r);
    // Now a job fits in the queue but its output does not fit the disk.
    ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 202);
    char id[64];
    snprintf(id, sizeof id, "%s", jstr(r.json, "id"));
    th_resp_free(&r);
    json_t *job = th_job_wait(&s, id, 60);
    ck_assert_str_eq(jstr(job, "status"), "failed");
    json_t *err = json_object_get(job, "error");
    ck_assert_str_eq(jstr(err, "type"),
                     "urn:shears:problem:insufficient-storage");
    const char *detail = jstr(err, "detail");
    ck_assert_msg(!strstr(detail, s.data) && !strchr(detail, '/'),
                  "a server path in \"%s\"", detail);
    json_decref(job);
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    ck_assert_int_eq(th_delete(&s, path, &r), 204);
    th_resp_free(&r);
    // Deleting everything makes it ready again.
    snprintf(path, sizeof path, "/v1/checkpoints/%s", ck);
    ck_assert_int_eq(th_delete(&s, path, &r), 204);
    th_resp_free(&r);
    for (int round = 0; round < 500; round++) {
        th_get(&s, "/v1/datasets?limit=100", &r);
        json_t *items = json_object_get(r.json, "items");
        size_t n = json_array_size(items);
        for (size_t i = 0; i < n; i++) {
            snprintf(path, sizeof path, "/v1/datasets/%s",
                     jstr(json_array_get(items, i), "id"));
            th_resp d;
            ck_assert_int_eq(th_delete(&s, path, &d), 204);
            th_resp_free(&d);
        }
        th_resp_free(&r);
        if (n == 0)
            break;
    }
    ck_assert_int_eq(th_get(&s, "/readyz", &r), 200);
    th_resp_free(&r);
    free(file);
    free(model);
    free(ck);
    ck_assert_int_eq(th_server_stop(&s), 0);
    th_server_free(&s);
}
END_TEST

// --- 6. huge headers

typedef struct uploader {
    th_server *s;
    const char *file;
    th_resp r;
    pthread_t t;
} uploader;

static void *upload_thread(void *arg)
{
    uploader *u = arg;
    th_upload(u->s, "/v1/checkpoints", u->file, "application/octet-stream",
              false, &u->r);
    return NULL;
}

// Uploads file on a thread while /healthz is polled from another address;
// returns the slowest /healthz, and the upload's answer in *r.
static double upload_polling(th_server *s, const char *file, th_resp *r)
{
    uploader u = {.s = s, .file = file};
    pthread_create(&u.t, NULL, upload_thread, &u);
    double worst = 0;
    for (int i = 0; i < 10 || pthread_tryjoin_np(u.t, NULL) != 0; i++) {
        double took = healthz_from("127.0.0.2", s->port);
        worst = took > worst ? took : worst;
        usleep(20000);
    }
    *r = u.r;
    return worst;
}

// Writes a safetensors file of n zero-size tensors (a long header, no
// data) without building it in memory as JSON.
static void write_empty_tensors(const char *path, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    size_t len = 1; // "{"
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(NULL, 0,
                                "%s\"t%07zu\":{\"dtype\":\"F32\",\"shape\":"
                                "[0],\"data_offsets\":[0,0]}",
                                i ? "," : "", i);
    len += 1; // "}"
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++)
        lenbuf[i] = (unsigned char)((uint64_t)len >> (8 * i));
    fwrite(lenbuf, 1, 8, f);
    fputc('{', f);
    for (size_t i = 0; i < n; i++)
        fprintf(f,
                "%s\"t%07zu\":{\"dtype\":\"F32\",\"shape\":[0],"
                "\"data_offsets\":[0,0]}",
                i ? "," : "", i);
    fputc('}', f);
    fclose(f);
}

// A checkpoint past --max-tensors is refused before its header is parsed;
// one within it is listed a page at a time from rows, the last page as
// cheap as the first; header memory across uploads is bounded.
START_TEST(test_big_headers)
{
    const char *flags[] = {"--max-tensors", "50000", "--max-header-memory",
                           "2M", NULL};
    th_server s;
    th_server_start(&s, NULL, flags);
    char *big = th_path(s.dir, "big.safetensors");
    write_empty_tensors(big, 1000000); // a 60 MB header
    th_resp r;
    // Over the header memory (2M) before anything else; others are served
    // meanwhile.
    double worst = upload_polling(&s, big, &r);
    th_expect_problem(&r, 503, NULL, "--max-header-memory");
    th_resp_free(&r);
    ck_assert_msg(worst < 0.5, "/healthz took %.3f s", worst);
    char *many = th_path(s.dir, "many.safetensors");
    write_empty_tensors(many, 30000); // 1.6 MB of header
    worst = upload_polling(&s, many, &r);
    ck_assert_msg(r.status == 201, "%ld %s", r.status, r.body);
    char *ck = strdup(jstr(r.json, "id"));
    th_resp_free(&r);
    ck_assert_msg(worst < 0.5, "/healthz took %.3f s", worst);
    write_empty_tensors(many, 50001);
    th_upload(&s, "/v1/checkpoints", many, "application/octet-stream", false,
              &r);
    th_expect_problem(&r, 503, NULL, NULL); // 2.8 MB: over the memory
    th_resp_free(&r);

    char path[160];
    snprintf(path, sizeof path, "/v1/checkpoints/%s/tensors?limit=100", ck);
    ck_assert_int_eq(th_get(&s, path, &r), 200);
    ck_assert_uint_eq(json_array_size(json_object_get(r.json, "items")), 100);
    ck_assert_str_eq(
        jstr(json_array_get(json_object_get(r.json, "items"), 0), "name"),
        "t0000000");
    th_resp_free(&r);
    snprintf(path, sizeof path,
             "/v1/checkpoints/%s/tensors?limit=100&cursor=%x", ck, 29950);
    ck_assert_int_eq(th_get(&s, path, &r), 200);
    json_t *items = json_object_get(r.json, "items");
    ck_assert_uint_eq(json_array_size(items), 50);
    ck_assert_str_eq(jstr(json_array_get(items, 0), "name"), "t0029950");
    ck_assert(json_is_null(json_object_get(r.json, "next_cursor")));
    th_resp_free(&r);
    free(ck);
    free(many);
    free(big);
    ck_assert_int_eq(th_server_stop(&s), 0);
    th_server_free(&s);

    // The tensor cap alone, with memory to spare: refused by count.
    const char *flags2[] = {"--max-tensors", "1000", NULL};
    th_server_start(&s, NULL, flags2);
    many = th_path(s.dir, "many.safetensors");
    write_empty_tensors(many, 1001);
    th_upload(&s, "/v1/checkpoints", many, "application/octet-stream", false,
              &r);
    th_expect_problem(&r, 422, NULL, "at most 1000 tensors");
    th_resp_free(&r);
    big = th_path(s.dir, "big.safetensors");
    write_empty_tensors(big, 1000000); // refused by its count, unparsed
    worst = upload_polling(&s, big, &r);
    th_expect_problem(&r, 422, NULL, "1000000 entries");
    th_resp_free(&r);
    ck_assert_msg(worst < 0.5, "/healthz took %.3f s", worst);
    free(big);
    free(many);
    ck_assert_int_eq(th_server_stop(&s), 0);
    th_server_free(&s);
}
END_TEST

// --- 8. the smaller ones

// Lower-case "bearer" is the same scheme; Range with stray minus signs
// is ignored (200, whole file); -0.0 and a padded pattern.
START_TEST(test_small_cases)
{
    th_server s;
    th_server_start(&s, "s3cret-token-42", NULL);
    const char *lower[] = {"Authorization: bearer s3cret-token-42", NULL};
    th_resp r;
    ck_assert_int_eq(th_http(&s, "GET", "/v1/jobs", lower, NULL, 0, false, &r),
                     200);
    th_resp_free(&r);
    char *model = th_fixture("mlp-fmnist/model.safetensors");
    char *ck = th_upload_checkpoint(&s, model);
    char body[256];
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"magnitude\","
             "\"pattern\":\" 2:+4\"}",
             ck);
    th_post_json(&s, "/v1/jobs", body, &r);
    th_expect_problem(&r, 422, "pattern", NULL);
    th_resp_free(&r);
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"magnitude\","
             "\"sparsity\":-0.0}",
             ck);
    ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 202);
    ck_assert_ptr_null(strstr(r.body, "-0.0"));
    char id[64];
    snprintf(id, sizeof id, "%s", jstr(r.json, "id"));
    th_resp_free(&r);
    json_decref(th_job_wait(&s, id, 60));
    char path[160];
    snprintf(path, sizeof path, "/v1/jobs/%s/artifact/files/model.safetensors",
             id);
    static const char *const ignored[] = {
        "Range: bytes=--5", "Range: bytes=0--1", "Range: bytes=9-3"};
    for (int i = 0; i < 3; i++) {
        const char *h[] = {ignored[i], NULL};
        ck_assert_int_eq(th_http(&s, "GET", path, h, NULL, 0, true, &r), 200);
        ck_assert_uint_eq(r.len, 2143760);
        th_resp_free(&r);
    }
    const char *tail[] = {"Range: bytes=-5", NULL};
    ck_assert_int_eq(th_http(&s, "GET", path, tail, NULL, 0, true, &r), 206);
    ck_assert_uint_eq(r.len, 5);
    th_resp_free(&r);
    free(model);
    free(ck);
    ck_assert_int_eq(th_server_stop(&s), 0);
    th_server_free(&s);
}
END_TEST

Suite *suite_limits(void)
{
    Suite *s = suite_create("limits");
    TCase *tc = tcase_create("abuse");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_regex_submissions);
    tcase_add_test(tc, test_sparse_tars);
    tcase_add_test(tc, test_names_round_trip);
    tcase_add_test(tc, test_slow_clients);
    tcase_add_test(tc, test_disk_full);
    tcase_add_test(tc, test_big_headers);
    tcase_add_test(tc, test_small_cases);
    suite_add_tcase(s, tc);
    return s;
}

// test_durability.c: crashes and concurrency against the real server.
// kill -9 mid-job and mid-upload, a client that drops its connection,
// SIGTERM mid-job, sixteen pollers beside uploads and jobs. After each, the
// data dir must be whole: every row's blob exists, no blob lacks a row,
// no temp file is left.
#include "tests/helpers.h"
#include "tests/server.h"

#include "common/util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *jstr(json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

// The data dir of a stopped server is whole.
static void check_data_dir(th_server *s)
{
    char *db = th_path(s->data, "shears.db");
    sqlite3 *h = NULL;
    ck_assert_int_eq(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    sqlite3_stmt *st = NULL;
    sqlite3_prepare_v2(h, "SELECT sha256 FROM files", -1, &st, NULL);
    int rows = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *sha = (const char *)sqlite3_column_text(st, 0);
        char rel[160];
        snprintf(rel, sizeof rel, "blobs/%.2s/%s", sha, sha);
        char *p = th_path(s->data, rel);
        ck_assert_msg(sh_path_exists(p), "a row points at missing %s", p);
        free(p);
        rows++;
    }
    sqlite3_finalize(st);
    // Every blob has a row.
    sqlite3_prepare_v2(h, "SELECT 1 FROM files WHERE sha256 = ?", -1, &st,
                       NULL);
    char *blobs = th_path(s->data, "blobs");
    DIR *top = opendir(blobs);
    struct dirent *e;
    while (top && (e = readdir(top))) {
        if (e->d_name[0] == '.')
            continue;
        char *sub = th_path(blobs, e->d_name);
        DIR *dir = opendir(sub);
        struct dirent *f;
        while (dir && (f = readdir(dir))) {
            if (f->d_name[0] == '.')
                continue;
            sqlite3_bind_text(st, 1, f->d_name, -1, SQLITE_TRANSIENT);
            ck_assert_msg(sqlite3_step(st) == SQLITE_ROW, "blob %s has no row",
                          f->d_name);
            sqlite3_reset(st);
        }
        if (dir)
            closedir(dir);
        free(sub);
    }
    if (top)
        closedir(top);
    sqlite3_finalize(st);
    sqlite3_close(h);
    free(blobs);
    free(db);
    (void)rows;
}

static bool tmp_empty(th_server *s)
{
    char *tmp = th_path(s->data, "tmp");
    DIR *d = opendir(tmp);
    bool empty = true;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.')
            empty = false;
    if (d)
        closedir(d);
    free(tmp);
    return empty;
}

// kill -9 while a job runs: after the restart it runs again (attempt
// counted) and succeeds; nothing of the first run is served.
START_TEST(test_kill_mid_job_recovers)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *id = th_slow_job(&s);
    ck_assert_msg(th_job_wait_running(&s, id, 0.05, 60),
                  "the job never ran long enough to be interrupted");
    char path[160];
    snprintf(path, sizeof path, "/v1/jobs/%s/artifact", id);
    th_resp r;
    ck_assert_int_eq(th_get(&s, path, &r), 409); // no partial artifact
    th_resp_free(&r);
    th_server_kill(&s);
    check_data_dir(&s);
    th_server_restart(&s);
    json_t *job = th_job_wait(&s, id, 120);
    ck_assert_str_eq(jstr(job, "status"), "succeeded");
    ck_assert_int_eq(json_integer_value(json_object_get(job, "attempts")), 2);
    json_decref(job);
    ck_assert_int_eq(th_get(&s, path, &r), 200);
    th_resp_free(&r);
    ck_assert_int_eq(th_server_stop(&s), 0);
    ck_assert(tmp_empty(&s));
    check_data_dir(&s);
    free(id);
    th_server_free(&s);
}
END_TEST

// Interrupted as often as --max-attempts allows, a job fails with a reason.
START_TEST(test_kill_too_often_fails)
{
    th_server s;
    const char *extra[] = {"--max-attempts", "2", NULL};
    th_server_start(&s, NULL, extra);
    char *id = th_slow_job(&s);
    for (int i = 0; i < 2; i++) {
        ck_assert(th_job_wait_running(&s, id, 0.02, 60));
        th_server_kill(&s);
        th_server_restart(&s);
    }
    json_t *job = th_job_wait(&s, id, 30);
    ck_assert_str_eq(jstr(job, "status"), "failed");
    json_t *err = json_object_get(job, "error");
    ck_assert_str_eq(jstr(err, "type"), "urn:shears:problem:interrupted");
    ck_assert_ptr_nonnull(strstr(jstr(err, "detail"), "2 times"));
    json_decref(job);
    ck_assert_int_eq(th_server_stop(&s), 0);
    check_data_dir(&s);
    free(id);
    th_server_free(&s);
}
END_TEST

// Sends the first bytes of an upload on a raw socket, then returns the
// socket (still open).
static int half_upload(th_server *s, const char *file, size_t send_bytes)
{
    size_t n = 0;
    unsigned char *bytes = th_read_file(file, &n);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)s->port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    char head[256];
    int hl = snprintf(head, sizeof head,
                      "POST /v1/checkpoints HTTP/1.1\r\nHost: x\r\n"
                      "Content-Type: application/octet-stream\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      n);
    ck_assert_int_eq(send(fd, head, (size_t)hl, 0), hl);
    ck_assert_int_eq(send(fd, bytes, send_bytes, 0), (ssize_t)send_bytes);
    free(bytes);
    return fd;
}

// A client that drops mid-upload leaves no row and no file; so does a
// server killed mid-upload.
START_TEST(test_interrupted_uploads_leave_nothing)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *model = th_fixture("mlp-fmnist/model.safetensors");
    int fd = half_upload(&s, model, 500000);
    usleep(200000);
    close(fd);
    th_resp r;
    bool clean = false;
    for (int i = 0; i < 100 && !clean; i++) { // the server notices the close
        usleep(50000);
        clean = tmp_empty(&s);
    }
    ck_assert_msg(clean, "the dropped upload left temp files");
    ck_assert_int_eq(th_get(&s, "/v1/checkpoints", &r), 200);
    ck_assert_int_eq(json_array_size(json_object_get(r.json, "items")), 0);
    th_resp_free(&r);

    fd = half_upload(&s, model, 800000);
    usleep(300000);
    th_server_kill(&s);
    close(fd);
    th_server_restart(&s);
    ck_assert(tmp_empty(&s));
    ck_assert_int_eq(th_get(&s, "/v1/checkpoints", &r), 200);
    ck_assert_int_eq(json_array_size(json_object_get(r.json, "items")), 0);
    th_resp_free(&r);
    ck_assert_int_eq(th_server_stop(&s), 0);
    check_data_dir(&s);
    free(model);
    th_server_free(&s);
}
END_TEST

// SIGTERM while a job runs, with no grace: the server exits 0 with the job
// back in the queue (the attempt not counted); after a restart it succeeds.
START_TEST(test_sigterm_requeues)
{
    th_server s;
    const char *extra[] = {"--grace", "0", NULL};
    th_server_start(&s, NULL, extra);
    char *id = th_slow_job(&s);
    ck_assert(th_job_wait_running(&s, id, 0.05, 60));
    double t0 = sh_time_mono();
    ck_assert_int_eq(th_server_stop(&s), 0);
    ck_assert_msg(sh_time_mono() - t0 < 10, "stopping took too long");
    th_server_restart(&s);
    json_t *job = th_job_wait(&s, id, 120);
    ck_assert_str_eq(jstr(job, "status"), "succeeded");
    ck_assert_int_eq(json_integer_value(json_object_get(job, "attempts")), 1);
    json_decref(job);
    ck_assert_int_eq(th_server_stop(&s), 0);
    check_data_dir(&s);
    free(id);
    th_server_free(&s);
}
END_TEST

// --- sixteen pollers while two uploads and two jobs run

typedef struct poller {
    th_server *s;
    atomic_bool *stop;
    char ids[2][64];
    int requests, errors;
    char last_error[256];
} poller;

static void *poll_loop(void *arg)
{
    poller *p = arg;
    char etag[2][80] = {"", ""};
    for (int i = 0; !atomic_load(p->stop); i++) {
        int k = i % 2;
        char path[128], inm[128];
        snprintf(path, sizeof path, "/v1/jobs/%s", p->ids[k]);
        snprintf(inm, sizeof inm, "If-None-Match: %s", etag[k]);
        const char *h[] = {etag[k][0] ? inm : NULL, NULL};
        th_resp r;
        long st = th_http(p->s, "GET", i % 5 == 4 ? "/v1/jobs?limit=5" : path,
                          h, NULL, 0, true, &r);
        p->requests++;
        if (st != 200 && st != 304) {
            p->errors++;
            snprintf(p->last_error, sizeof p->last_error, "%ld %s", st, r.body);
        }
        if (st == 200 && i % 5 != 4)
            th_header(&r, "ETag", etag[k], sizeof etag[k]);
        th_resp_free(&r);
    }
    return NULL;
}

typedef struct uploader {
    th_server *s;
    const char *path;
    char *id;
} uploader;

static void *upload_one(void *arg)
{
    uploader *u = arg;
    u->id = th_upload_checkpoint(u->s, u->path);
    return NULL;
}

START_TEST(test_pollers_uploads_jobs)
{
    th_server s;
    const char *extra[] = {"--workers", "2", "--http-threads", "4", NULL};
    th_server_start(&s, NULL, extra);
    char *llama = th_fixture("llama-kjv");
    char *mlp = th_fixture("mlp-fmnist");
    char *a = th_upload_checkpoint(&s, llama);
    char *b = th_upload_checkpoint(&s, mlp);
    char body[256];
    char jobs[2][64];
    const char *cks[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        snprintf(body, sizeof body,
                 "{\"checkpoint\":\"%s\",\"method\":\"magnitude\","
                 "\"pattern\":\"4:8\"}",
                 cks[i]);
        th_resp r;
        ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 202);
        snprintf(jobs[i], sizeof jobs[i], "%s", jstr(r.json, "id"));
        th_resp_free(&r);
    }
    atomic_bool stop = false;
    poller p[16];
    pthread_t t[16];
    for (int i = 0; i < 16; i++) {
        p[i] = (poller){.s = &s, .stop = &stop};
        memcpy(p[i].ids, jobs, sizeof jobs);
        pthread_create(&t[i], NULL, poll_loop, &p[i]);
    }
    // Two uploads and two more jobs while they poll.
    uploader up[2] = {{&s, llama, NULL}, {&s, mlp, NULL}};
    pthread_t ut[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&ut[i], NULL, upload_one, &up[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(ut[i], NULL);
    char more[2][64];
    for (int i = 0; i < 2; i++) {
        snprintf(body, sizeof body,
                 "{\"checkpoint\":\"%s\",\"method\":\"random\","
                 "\"sparsity\":0.6}",
                 up[i].id);
        th_resp r;
        ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 202);
        snprintf(more[i], sizeof more[i], "%s", jstr(r.json, "id"));
        th_resp_free(&r);
    }
    for (int i = 0; i < 2; i++) {
        json_t *j = th_job_wait(&s, jobs[i], 60);
        ck_assert_str_eq(jstr(j, "status"), "succeeded");
        json_decref(j);
        j = th_job_wait(&s, more[i], 60);
        ck_assert_str_eq(jstr(j, "status"), "succeeded");
        json_decref(j);
    }
    usleep(300000);
    atomic_store(&stop, true);
    int requests = 0;
    for (int i = 0; i < 16; i++) {
        pthread_join(t[i], NULL);
        requests += p[i].requests;
        ck_assert_msg(p[i].errors == 0, "poller %d: %d errors, last %s", i,
                      p[i].errors, p[i].last_error);
    }
    ck_assert_int_gt(requests, 100);
    th_resp r;
    ck_assert_int_eq(th_get(&s, "/v1/checkpoints", &r), 200);
    ck_assert_int_eq(json_array_size(json_object_get(r.json, "items")), 4);
    th_resp_free(&r);
    ck_assert_int_eq(th_get(&s, "/v1/jobs", &r), 200);
    ck_assert_int_eq(json_array_size(json_object_get(r.json, "items")), 4);
    th_resp_free(&r);
    ck_assert_int_eq(th_server_stop(&s), 0);
    check_data_dir(&s);
    free(up[0].id);
    free(up[1].id);
    free(a);
    free(b);
    free(llama);
    free(mlp);
    th_server_free(&s);
}
END_TEST

Suite *suite_durability(void)
{
    Suite *s = suite_create("durability");
    TCase *tc = tcase_create("crash");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_kill_mid_job_recovers);
    tcase_add_test(tc, test_kill_too_often_fails);
    tcase_add_test(tc, test_interrupted_uploads_leave_nothing);
    tcase_add_test(tc, test_sigterm_requeues);
    tcase_add_test(tc, test_pollers_uploads_jobs);
    suite_add_tcase(s, tc);
    return s;
}

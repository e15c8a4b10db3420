// test_ops.c: operating the service: /metrics in the Prometheus text
// format (checked by promtool), one JSON object per log line with request
// ids, routes, statuses, durations and job ids, SIGTERM draining, and the
// dashboard driven in a real browser (tests/browser.mjs).
#include "tests/helpers.h"
#include "tests/server.h"

#include "common/util.h"

#include <curl/curl.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static const char *jstr(json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

// /metrics passes promtool and carries what an operator watches.
START_TEST(test_metrics)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *folder = th_fixture("mlp-fmnist");
    char *ck = th_upload_checkpoint(&s, folder);
    char body[256];
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"magnitude\"}", ck);
    th_resp r;
    th_post_json(&s, "/v1/jobs", body, &r);
    json_decref(th_job_wait(&s, jstr(r.json, "id"), 30));
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s/artifact", jstr(r.json, "id"));
    th_resp_free(&r);
    th_get(&s, path, &r);
    th_resp_free(&r);
    th_get(&s, "/v1/nothing", &r);
    th_resp_free(&r);
    ck_assert_int_eq(th_get(&s, "/metrics", &r), 200);
    char ct[96];
    ck_assert_ptr_nonnull(strstr(th_header(&r, "Content-Type", ct, sizeof ct),
                                 "text/plain; version=0.0.4"));
    const char *want[] = {
        "shears_http_requests_total{method=\"POST\",route=\"/v1/checkpoints\","
        "status=\"201\"} 1",
        "shears_http_requests_total{method=\"GET\",route=\"(none)\","
        "status=\"404\"} 1",
        "shears_http_request_duration_seconds_bucket{route=\"/v1/jobs/{id}\","
        "le=\"+Inf\"}",
        "shears_http_request_duration_seconds_count{route=\"/v1/jobs\"}",
        "shears_jobs{state=\"succeeded\"} 1",
        "shears_jobs{state=\"queued\"} 0",
        "shears_job_duration_seconds_count{method=\"magnitude\","
        "status=\"succeeded\"} 1",
        "shears_queue_depth 0",
        "shears_workers_busy 0",
        "shears_workers 1",
        "shears_http_bytes_total{direction=\"in\"}",
        ",blas_core=\"",
        "shears_sgemm_gflops ",
        "shears_http_bytes_total{direction=\"out\"}",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        ck_assert_msg(strstr(r.body, want[i]), "/metrics lacks %s", want[i]);
    char *file = th_path(s.dir, "metrics.txt");
    th_write_file(file, r.body, r.len);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "promtool check metrics < '%s' 1>&2", file);
    ck_assert_msg(system(cmd) == 0, "promtool rejects /metrics");
    th_resp_free(&r);
    free(file);
    free(ck);
    free(folder);
    th_server_stop(&s);
    th_server_free(&s);
}
END_TEST

// Every log line is one JSON object; requests carry their id, route,
// status, duration and job; jobs log their start and end.
START_TEST(test_json_logs)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *folder = th_fixture("mlp-fmnist");
    char *ck = th_upload_checkpoint(&s, folder);
    char body[256];
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"magnitude\"}", ck);
    th_resp r;
    th_post_json(&s, "/v1/jobs", body, &r);
    char id[64], path[128];
    snprintf(id, sizeof id, "%s", jstr(r.json, "id"));
    th_resp_free(&r);
    json_decref(th_job_wait(&s, id, 30));
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    const char *h[] = {"X-Request-Id: trace-0042", NULL};
    th_http(&s, "GET", path, h, NULL, 0, true, &r);
    th_resp_free(&r);
    ck_assert_int_eq(th_server_stop(&s), 0);

    char *log = (char *)th_read_file(s.log, NULL);
    bool traced = false, started = false, ended = false, created = false;
    int lines = 0;
    for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        ck_assert_msg(json_is_object(j), "not a JSON object: %s", line);
        ck_assert(jstr(j, "time") && jstr(j, "level") && jstr(j, "msg"));
        lines++;
        const char *msg = jstr(j, "msg");
        const char *rid = jstr(j, "request_id");
        if (rid && strcmp(rid, "trace-0042") == 0) {
            traced = true;
            ck_assert_str_eq(jstr(j, "route"), "/v1/jobs/{id}");
            ck_assert_int_eq(json_integer_value(json_object_get(j, "status")),
                             200);
            ck_assert(json_is_number(json_object_get(j, "duration_ms")));
            ck_assert_str_eq(jstr(j, "job"), id);
        }
        if (strcmp(msg, "request") == 0 && jstr(j, "method") &&
            strcmp(jstr(j, "method"), "POST") == 0 &&
            strcmp(jstr(j, "route"), "/v1/jobs") == 0)
            created = jstr(j, "job") && strcmp(jstr(j, "job"), id) == 0;
        if (strcmp(msg, "job started") == 0)
            started = strcmp(jstr(j, "job"), id) == 0;
        if (strcmp(msg, "job ended") == 0)
            ended = strcmp(jstr(j, "job"), id) == 0 &&
                    strcmp(jstr(j, "status"), "succeeded") == 0;
        json_decref(j);
    }
    ck_assert_int_gt(lines, 5);
    ck_assert(traced && started && ended && created);
    free(log);
    free(ck);
    free(folder);
    th_server_free(&s);
}
END_TEST

typedef struct sink {
    size_t n;
} sink;

static size_t drop(char *p, size_t size, size_t n, void *ctx)
{
    (void)p;
    ((sink *)ctx)->n += size * n;
    return size * n;
}

// A request on one reused connection (keep-alive).
static long on_handle(CURL *c, th_server *s, const char *method,
                      const char *path, const char *body)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", s->port, path);
    sink k = {0};
    struct curl_slist *h =
        curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, drop);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &k);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    long status = 0;
    if (curl_easy_perform(c) == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    return status;
}

// SIGTERM: readyz turns 503 and jobs are refused on open connections,
// new connections are not accepted, the running job finishes within the
// grace period, the process exits 0, and the job is there after a restart.
START_TEST(test_sigterm_drains)
{
    th_server s;
    const char *extra[] = {"--grace", "60", NULL};
    th_server_start(&s, NULL, extra);
    char *id = th_slow_job(&s);
    ck_assert(th_job_wait_running(&s, id, 0.02, 60));
    CURL *c = curl_easy_init();
    ck_assert_int_eq(on_handle(c, &s, "GET", "/readyz", NULL), 200);
    kill(s.pid, SIGTERM);
    // As soon as the signal is handled (not a fixed sleep, which a fast
    // machine's job could outlast): readyz on the open connection says 503.
    long ready = 200;
    for (int i = 0; i < 500 && ready == 200; i++) {
        usleep(10000);
        ready = on_handle(c, &s, "GET", "/readyz", NULL);
    }
    ck_assert_int_eq(ready, 503);
    ck_assert_int_eq(on_handle(c, &s, "POST", "/v1/jobs", "{}"), 503);
    th_resp r;
    long fresh = th_get(&s, "/healthz", &r); // a new connection
    th_resp_free(&r);
    ck_assert_msg(fresh == 0, "a new connection was accepted while draining");
    curl_easy_cleanup(c);
    ck_assert_int_eq(th_server_wait(&s, 90), 0);
    th_server_restart(&s);
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    ck_assert_int_eq(th_get(&s, path, &r), 200);
    ck_assert_str_eq(jstr(r.json, "status"), "succeeded");
    ck_assert_int_eq(json_integer_value(json_object_get(r.json, "attempts")),
                     1);
    th_resp_free(&r);
    ck_assert_int_eq(th_server_stop(&s), 0);
    free(id);
    th_server_free(&s);
}
END_TEST

// A thread of pid other than the main one with SIGTERM unblocked (libraries
// start threads before main: OpenBLAS's pool), or 0 if there is none.
static pid_t thread_taking_sigterm(pid_t pid)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    pid_t found = 0;
    struct dirent *e;
    while (!found && (e = readdir(d))) {
        pid_t tid = (pid_t)atoi(e->d_name);
        if (tid <= 0 || tid == pid)
            continue;
        char path[128], line[256];
        snprintf(path, sizeof path, "%s/%d/status", dir, (int)tid);
        FILE *f = fopen(path, "r");
        unsigned long long blocked = ~0ull;
        while (f && fgets(line, sizeof line, f))
            sscanf(line, "SigBlk: %llx", &blocked);
        if (f)
            fclose(f);
        if (!(blocked & (1ull << (SIGTERM - 1))))
            found = tid;
    }
    closedir(d);
    return found;
}

// A SIGTERM that the kernel hands to any thread, not only the main one,
// stops the server cleanly (exit 0, not killed by the signal).
START_TEST(test_sigterm_any_thread)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    th_resp r;
    ck_assert_int_eq(th_get(&s, "/readyz", &r), 200);
    th_resp_free(&r);
    pid_t tid = thread_taking_sigterm(s.pid);
    if (tid)
        ck_assert_int_eq(syscall(SYS_tgkill, s.pid, tid, SIGTERM), 0);
    else
        kill(s.pid, SIGTERM); // a single-threaded BLAS: no such thread
    int code = th_server_wait(&s, 60);
    ck_assert_msg(code == 0, "SIGTERM on thread %d: exit %d", (int)tid, code);
    th_server_free(&s);
}
END_TEST

// The dashboard in Debian's chromium (tests/browser.mjs, playwright-core):
// upload the fixture Llama, submit a job, watch it succeed, check its
// chart, metric and downloads, the API's errors in plain words. Once
// without auth and once with a token typed into the page. Screenshots go
// to build/screenshots/ (SHEARS_SCREENSHOTS overrides).
static void browse(const char *token, const char *shots)
{
    th_server s;
    th_server_start(&s, token, NULL);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "%s%s%snode tests/browser.mjs http://127.0.0.1:%d '%s' 1>&2",
             token ? "SHEARS_TOKEN='" : "", token ? token : "",
             token ? "' " : "", s.port, shots);
    int rc = system(cmd);
    ck_assert_msg(rc == 0, "the browser test failed (%#x): %s", rc, cmd);
    ck_assert_int_eq(th_server_stop(&s), 0);
    th_server_free(&s);
}

START_TEST(test_dashboard_browser)
{
    const char *shots = getenv("SHEARS_SCREENSHOTS");
    browse(NULL, shots ? shots : "build/screenshots");
    browse("dashboard-token-7", shots ? shots : "build/screenshots/token");
}
END_TEST

Suite *suite_ops(void)
{
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("operate");
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_metrics);
    tcase_add_test(tc, test_json_logs);
    tcase_add_test(tc, test_sigterm_drains);
    tcase_add_test(tc, test_sigterm_any_thread);
    suite_add_tcase(s, tc);
    TCase *browser = tcase_create("dashboard");
    tcase_set_timeout(browser, 240);
    tcase_add_test(browser, test_dashboard_browser);
    suite_add_tcase(s, browser);
    return s;
}

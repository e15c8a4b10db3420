// test_api.c: the HTTP API against the real server, what no one resource
// owns: the operations routes, malformed requests, auth, the route table
// and live responses against openapi.yaml. Each resource has its own file
// (test_api_<resource>.c).
#include "tests/helpers.h"
#include "tests/server.h"

#include "api/api_int.h"
#include "common/sha256.h"
#include "common/util.h"
#include "engine/engine.h"

#include <archive.h>
#include <archive_entry.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *fixture_file(const char *rel) { return th_fixture(rel); }

static const char *jstr(json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

// --- the happy paths

// --- the happy paths

START_TEST(test_operations_routes)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    th_resp r;
    ck_assert_int_eq(th_get(&s, "/healthz", &r), 200);
    ck_assert_str_eq(jstr(r.json, "status"), "ok");
    th_resp_free(&r);
    ck_assert_int_eq(th_get(&s, "/readyz", &r), 200);
    th_resp_free(&r);
    ck_assert_int_eq(th_get(&s, "/openapi.yaml", &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, "openapi: 3.1.0"));
    th_resp_free(&r);
    ck_assert_int_eq(th_get(&s, "/metrics", &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, "shears_http_requests_total"));
    th_resp_free(&r);
    ck_assert_int_eq(th_get(&s, "/", &r), 200);
    ck_assert_ptr_nonnull(strstr(r.body, "<html"));
    th_resp_free(&r);
    // A request id is echoed, or made.
    const char *h[] = {"X-Request-Id: abc-123", NULL};
    char buf[80];
    th_http(&s, "GET", "/healthz", h, NULL, 0, true, &r);
    ck_assert_str_eq(th_header(&r, "X-Request-Id", buf, sizeof buf), "abc-123");
    th_resp_free(&r);
    th_get(&s, "/healthz", &r);
    ck_assert_uint_gt(strlen(th_header(&r, "X-Request-Id", buf, sizeof buf)),
                      8);
    th_resp_free(&r);
    ck_assert_int_eq(th_server_stop(&s), 0);
    th_server_free(&s);
}
END_TEST

// --- bad inputs: each a 4xx problem naming what is wrong

// Routing and reads: unknown routes, methods, ids, queries.
START_TEST(test_bad_requests)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    th_resp r;
    th_get(&s, "/v1/nothing", &r);
    th_expect_problem(&r, 404, NULL, "no route");
    th_resp_free(&r);
    th_http(&s, "PUT", "/v1/jobs", NULL, NULL, 0, true, &r);
    th_expect_problem(&r, 405, NULL, "allowed");
    char allow[64];
    ck_assert_str_eq(th_header(&r, "Allow", allow, sizeof allow), "POST, GET");
    th_resp_free(&r);
    th_get(&s, "/v1/jobs/job_nope", &r);
    th_expect_problem(&r, 404, NULL, "job_nope");
    th_resp_free(&r);
    th_get(&s, "/v1/checkpoints/ck_nope/tensors", &r);
    th_expect_problem(&r, 404, NULL, NULL);
    th_resp_free(&r);
    th_delete(&s, "/v1/datasets/ds_nope", &r);
    th_expect_problem(&r, 404, NULL, NULL);
    th_resp_free(&r);
    th_http(&s, "POST", "/v1/jobs/job_nope/cancel", NULL, NULL, 0, true, &r);
    th_expect_problem(&r, 404, NULL, NULL);
    th_resp_free(&r);
    th_get(&s, "/v1/jobs/job_nope/artifact/files/x", &r);
    th_expect_problem(&r, 404, NULL, NULL);
    th_resp_free(&r);
    th_get(&s, "/v1/jobs?limit=0", &r);
    th_expect_problem(&r, 422, "limit", NULL);
    th_resp_free(&r);
    th_get(&s, "/v1/jobs?limit=abc", &r);
    th_expect_problem(&r, 422, "limit", NULL);
    th_resp_free(&r);
    th_get(&s, "/v1/checkpoints?cursor=zz", &r);
    th_expect_problem(&r, 422, "cursor", NULL);
    th_resp_free(&r);
    th_get(&s, "/v1/jobs?status=sleeping", &r);
    th_expect_problem(&r, 422, "status", NULL);
    th_resp_free(&r);
    th_server_stop(&s);
    th_server_free(&s);
}
END_TEST

// Auth: with a token, /v1 needs it (constant-time compare); health stays
// open.
START_TEST(test_auth)
{
    th_server s;
    th_server_start(&s, "s3cret-token-42", NULL);
    th_resp r;
    th_http(&s, "GET", "/v1/jobs", NULL, NULL, 0, false, &r);
    th_expect_problem(&r, 401, NULL, "Bearer");
    char buf[64];
    ck_assert_ptr_nonnull(th_header(&r, "WWW-Authenticate", buf, sizeof buf));
    th_resp_free(&r);
    const char *wrong[] = {"Authorization: Bearer s3cret-token-43", NULL};
    th_http(&s, "GET", "/v1/jobs", wrong, NULL, 0, false, &r);
    th_expect_problem(&r, 401, NULL, NULL);
    th_resp_free(&r);
    const char *basic[] = {"Authorization: Basic czNjcmV0", NULL};
    th_http(&s, "GET", "/v1/jobs", basic, NULL, 0, false, &r);
    th_expect_problem(&r, 401, NULL, NULL);
    th_resp_free(&r);
    char *model = fixture_file("mlp-fmnist/model.safetensors");
    const char *ct[] = {"Content-Type: application/octet-stream", NULL};
    th_http(&s, "POST", "/v1/checkpoints", ct, "xx", 2, false, &r);
    th_expect_problem(&r, 401, NULL, NULL); // before the body
    th_resp_free(&r);
    ck_assert_int_eq(th_get(&s, "/v1/jobs", &r), 200);
    th_resp_free(&r);
    ck_assert_int_eq(th_http(&s, "GET", "/healthz", NULL, NULL, 0, false, &r),
                     200);
    th_resp_free(&r);
    ck_assert_int_eq(th_http(&s, "GET", "/readyz", NULL, NULL, 0, false, &r),
                     200);
    th_resp_free(&r);
    free(model);
    th_server_stop(&s);
    th_server_free(&s);
}
END_TEST

// The route table and openapi.yaml describe the same routes.
START_TEST(test_routes_match_openapi)
{
    char *text = (char *)th_read_file("openapi.yaml", NULL);
    // Collect "  /path:" then "    method:" under the paths section.
    char ops[128][160];
    size_t n = 0;
    char path[128] = "";
    bool in_paths = false;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "paths:", 6) == 0) {
            in_paths = true;
            continue;
        }
        if (in_paths && line[0] != ' ' && line[0] != '#')
            in_paths = false;
        if (!in_paths)
            continue;
        if (strncmp(line, "  /", 3) == 0 && line[strlen(line) - 1] == ':') {
            snprintf(path, sizeof path, "%.*s", (int)strlen(line) - 3,
                     line + 2);
            continue;
        }
        const char *methods[] = {"get", "post", "delete", "put", "patch"};
        for (int m = 0; m < 5; m++) {
            char want[16];
            snprintf(want, sizeof want, "    %s:", methods[m]);
            if (strcmp(line, want) == 0 && n < 128) {
                char up[8];
                for (int k = 0; methods[m][k]; k++)
                    up[k] = (char)(methods[m][k] - 32), up[k + 1] = '\0';
                snprintf(ops[n++], sizeof ops[0], "%s %s", up, path);
            }
        }
    }
    free(text);
    ck_assert_uint_eq(n, api_route_count);
    for (size_t i = 0; i < api_route_count; i++) {
        char want[160], pat[128];
        snprintf(pat, sizeof pat, "%s", api_routes[i].pattern);
        char *star = strstr(pat, "{*}");
        if (star)
            snprintf(star, sizeof pat - (size_t)(star - pat), "{name}");
        snprintf(want, sizeof want, "%s %s", api_routes[i].method, pat);
        bool found = false;
        for (size_t k = 0; k < n && !found; k++)
            found = strcmp(ops[k], want) == 0;
        ck_assert_msg(found, "%s is in the route table, not in openapi.yaml",
                      want);
    }
}
END_TEST

// Live responses match openapi.yaml: a node script (tools/) validates the
// bodies of every kind of response against the document's schemas.
START_TEST(test_responses_match_openapi)
{
    ck_assert_msg(sh_path_exists("tools/node_modules/ajv"),
                  "npm tools missing: run scripts/deps.sh");
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *folder = fixture_file("llama-kjv");
    char *dsf = fixture_file("llama-kjv-data/evaluation.safetensors");
    char *ck = th_upload_checkpoint(&s, folder);
    char *ds = th_upload_dataset(&s, dsf);
    char body[256];
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"magnitude\"}", ck);
    th_resp r;
    ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 202);
    char id[64];
    snprintf(id, sizeof id, "%s",
             json_string_value(json_object_get(r.json, "id")));
    th_resp_free(&r);
    json_decref(th_job_wait(&s, id, 60));
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "node tests/contract.mjs http://127.0.0.1:%d %s %s %s 1>&2",
             s.port, ck, ds, id);
    ck_assert_msg(system(cmd) == 0, "responses differ from openapi.yaml");
    free(ck);
    free(ds);
    free(folder);
    free(dsf);
    th_server_stop(&s);
    th_server_free(&s);
}
END_TEST

Suite *suite_api(void)
{
    Suite *s = suite_create("api");
    TCase *ok = tcase_create("routes");
    tcase_set_timeout(ok, 180);
    tcase_add_test(ok, test_operations_routes);
    tcase_add_test(ok, test_routes_match_openapi);
    tcase_add_test(ok, test_responses_match_openapi);
    suite_add_tcase(s, ok);
    TCase *bad = tcase_create("bad-input");
    tcase_set_timeout(bad, 120);
    tcase_add_test(bad, test_bad_requests);
    tcase_add_test(bad, test_auth);
    suite_add_tcase(s, bad);
    return s;
}

// test_api_datasets.c: /v1/datasets against the real server: tokens and
// inputs, reads, lists, deletes, and datasets of the wrong shape.
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

// Datasets: tokens and inputs, read, list, delete.
START_TEST(test_datasets_routes)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *tok = fixture_file("llama-kjv-data/calibration.safetensors");
    char *inp = fixture_file("mlp-fmnist-data/evaluation.safetensors");
    char *a = th_upload_dataset(&s, tok);
    char *b = th_upload_dataset(&s, inp);
    th_resp r;
    char path[256];
    snprintf(path, sizeof path, "/v1/datasets/%s", a);
    ck_assert_int_eq(th_get(&s, path, &r), 200);
    ck_assert_str_eq(jstr(r.json, "kind"), "tokens");
    ck_assert_int_eq(json_integer_value(json_object_get(r.json, "rows")), 128);
    th_resp_free(&r);
    snprintf(path, sizeof path, "/v1/datasets/%s", b);
    ck_assert_int_eq(th_get(&s, path, &r), 200);
    ck_assert_str_eq(jstr(r.json, "kind"), "inputs");
    ck_assert(json_is_true(json_object_get(r.json, "labels")));
    ck_assert_str_eq(jstr(r.json, "dtype"), "F16");
    th_resp_free(&r);
    ck_assert_int_eq(th_get(&s, "/v1/datasets", &r), 200);
    ck_assert_int_eq(json_array_size(json_object_get(r.json, "items")), 2);
    th_resp_free(&r);
    ck_assert_int_eq(th_delete(&s, path, &r), 204);
    th_resp_free(&r);
    ck_assert_int_eq(th_get(&s, path, &r), 404);
    th_resp_free(&r);
    th_server_stop(&s);
    th_server_free(&s);
    free(a);
    free(b);
    free(tok);
    free(inp);
}
END_TEST

// Datasets with the wrong names, shapes or dtypes.
START_TEST(test_bad_datasets)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    float f[6] = {0};
    int64_t l[2] = {0, 1}, l3[3] = {0, 1, 2};
    th_tensor cases[][2] = {
        {{"features", "F32", 2, {2, 3}, f}, {NULL}},
        {{"tokens", "F32", 2, {2, 3}, f}, {NULL}},
        {{"inputs", "F32", 1, {6}, f}, {NULL}},
        {{"inputs", "F32", 2, {2, 3}, f}, {"labels", "I64", 1, {3}, l3}},
        {{"inputs", "F32", 2, {2, 3}, f}, {"labels", "F32", 1, {2}, f}},
    };
    const char *words[] = {"needs a tensor", "must hold integers",
                           "two non-zero dimensions", "one per row",
                           "must hold integers"};
    (void)l;
    for (size_t i = 0; i < 5; i++) {
        char *p = th_path(s.dir, "ds.safetensors");
        th_write_st(p, cases[i], cases[i][1].name ? 2 : 1, NULL);
        th_resp r;
        th_upload(&s, "/v1/datasets", p, "application/octet-stream", false, &r);
        th_expect_problem(&r, 422, NULL, words[i]);
        th_resp_free(&r);
        free(p);
    }
    th_server_stop(&s);
    th_server_free(&s);
}
END_TEST

Suite *suite_api_datasets(void)
{
    Suite *s = suite_create("api_datasets");
    TCase *ok = tcase_create("routes");
    tcase_set_timeout(ok, 180);
    tcase_add_test(ok, test_datasets_routes);
    suite_add_tcase(s, ok);
    TCase *bad = tcase_create("bad-input");
    tcase_set_timeout(bad, 120);
    tcase_add_test(bad, test_bad_datasets);
    suite_add_tcase(s, bad);
    return s;
}

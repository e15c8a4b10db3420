// test_api_checkpoints.c: /v1/checkpoints against the real server:
// uploads of files and folders, reads, pages, deletes, and every kind of
// bad upload (files, tars, oversize bodies).
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

// Checkpoints: upload a file and a folder, read, list with pages, tensors,
// delete.
START_TEST(test_checkpoints_routes)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *file = fixture_file("llama-kjv/model.safetensors");
    char *folder = fixture_file("mlp-fmnist");
    char *a = th_upload_checkpoint(&s, file);
    char *b = th_upload_checkpoint(&s, folder);
    th_resp r;
    char path[256];
    snprintf(path, sizeof path, "/v1/checkpoints/%s", b);
    ck_assert_int_eq(th_get(&s, path, &r), 200);
    ck_assert_str_eq(jstr(r.json, "architecture"), "mlp");
    ck_assert_str_eq(jstr(r.json, "format"), "folder");
    ck_assert_int_eq(json_integer_value(json_object_get(r.json, "tensors")), 6);
    json_t *files = json_object_get(r.json, "files");
    ck_assert_int_eq(json_array_size(files), 2);
    char sha[SH_SHA256_HEX];
    char *cfg = fixture_file("mlp-fmnist/config.json");
    sh_sha256_file(cfg, sha);
    ck_assert_str_eq(jstr(json_array_get(files, 0), "name"), "config.json");
    ck_assert_str_eq(jstr(json_array_get(files, 0), "sha256"), sha);
    th_resp_free(&r);

    ck_assert_int_eq(th_get(&s, "/v1/checkpoints?limit=1", &r), 200);
    json_t *items = json_object_get(r.json, "items");
    ck_assert_int_eq(json_array_size(items), 1);
    ck_assert_str_eq(jstr(json_array_get(items, 0), "id"), b); // newest
    const char *next = jstr(r.json, "next_cursor");
    ck_assert_ptr_nonnull(next);
    snprintf(path, sizeof path, "/v1/checkpoints?limit=1&cursor=%s", next);
    th_resp r2;
    ck_assert_int_eq(th_get(&s, path, &r2), 200);
    ck_assert_str_eq(
        jstr(json_array_get(json_object_get(r2.json, "items"), 0), "id"), a);
    ck_assert(json_is_null(json_object_get(r2.json, "next_cursor")));
    th_resp_free(&r);
    th_resp_free(&r2);

    snprintf(path, sizeof path, "/v1/checkpoints/%s/tensors?limit=30", a);
    ck_assert_int_eq(th_get(&s, path, &r), 200);
    ck_assert_int_eq(json_array_size(json_object_get(r.json, "items")), 30);
    json_t *t0 = json_array_get(json_object_get(r.json, "items"), 0);
    ck_assert_str_eq(jstr(t0, "dtype"), "F32");
    ck_assert_int_eq(json_array_size(json_object_get(t0, "shape")), 2);
    snprintf(path, sizeof path, "/v1/checkpoints/%s/tensors?limit=30&cursor=%s",
             a, jstr(r.json, "next_cursor"));
    ck_assert_int_eq(th_get(&s, path, &r2), 200);
    ck_assert_int_eq(json_array_size(json_object_get(r2.json, "items")), 9);
    th_resp_free(&r);
    th_resp_free(&r2);

    snprintf(path, sizeof path, "/v1/checkpoints/%s", a);
    ck_assert_int_eq(th_delete(&s, path, &r), 204);
    th_resp_free(&r);
    ck_assert_int_eq(th_get(&s, path, &r), 404);
    th_resp_free(&r);
    ck_assert_int_eq(th_server_stop(&s), 0);
    th_server_free(&s);
    free(a);
    free(b);
    free(file);
    free(folder);
    free(cfg);
}
END_TEST

// --- bad uploads: each a 4xx problem naming what is wrong

typedef struct bad_upload {
    const char *what;
    const char *header; // safetensors header text, or NULL for raw
    int64_t len;        // length field override, -1: true length
    size_t data;        // zero bytes after the header
    const char *type;   // Content-Type
    long status;
    const char *words;
} bad_upload;

static const bad_upload bad_uploads[] = {
    {"truncated data",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],"
     "\"data_offsets\":[0,16]}}",
     -1, 8, "application/octet-stream", 422, "truncated"},
    {"lying header length", "{}", 1 << 20, 0, "application/octet-stream", 422,
     "runs past the end"},
    {"header too long", "{}", 200000000, 0, "application/octet-stream", 422,
     "exceeds the 100000000-byte limit"},
    {"header not JSON", "{nope", -1, 0, "application/octet-stream", 422,
     "not valid JSON"},
    {"overlapping tensors",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     -1, 12, "application/octet-stream", 422, "overlap"},
    {"unknown dtype",
     "{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],"
     "\"data_offsets\":[0,4]}}",
     -1, 4, "application/octet-stream", 422, "unknown dtype"},
    {"extra bytes",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
     "\"data_offsets\":[0,4]}}",
     -1, 40, "application/octet-stream", 422, "longer than its header"},
    {"wrong content type", "{}", -1, 0, "text/plain", 415, "application/"},
};

START_TEST(test_bad_checkpoint_uploads)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    const bad_upload *b = &bad_uploads[_i];
    char *p = th_path(s.dir, "bad.safetensors");
    char *zeros = calloc(1, b->data + 1);
    th_write_raw(p, b->header, b->len, zeros, b->data);
    th_resp r;
    th_upload(&s, "/v1/checkpoints", p, b->type, false, &r);
    th_expect_problem(&r, b->status, NULL, b->words);
    th_resp_free(&r);
    // Nothing was stored.
    ck_assert_int_eq(th_get(&s, "/v1/checkpoints", &r), 200);
    ck_assert_int_eq(json_array_size(json_object_get(r.json, "items")), 0);
    th_resp_free(&r);
    free(zeros);
    free(p);
    th_server_stop(&s);
    th_server_free(&s);
}
END_TEST

// Tars: paths that climb out, absolute paths, links, devices, garbage,
// a folder whose index lies, duplicate members.
START_TEST(test_bad_tars)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *cfg = fixture_file("mlp-fmnist/config.json");
    char *model = fixture_file("mlp-fmnist/model.safetensors");
    const char *cfgp[] = {cfg};
    struct {
        const char *names[3];
        const char *paths[3];
        int kinds[3];
        size_t n;
        const char *words;
    } cases[] = {
        {{"../config.json"}, {cfg}, {0}, 1, "not a plain relative name"},
        {{"/etc/config.json"}, {cfg}, {0}, 1, "not a plain relative name"},
        {{"a/../../x"}, {cfg}, {0}, 1, "not a plain relative name"},
        {{"config.json", "link"}, {cfg, NULL}, {0, 1}, 2, "symbolic link"},
        {{"config.json", "hard"}, {cfg, NULL}, {0, 2}, 2, "hard link"},
        {{"config.json", "dev"}, {cfg, NULL}, {0, 3}, 2, "character device"},
        {{"config.json", "config.json"},
         {cfg, cfg},
         {0, 0},
         2,
         "appears twice"},
        {{"config.json"}, {cfg}, {0}, 1, "no weights"},
        {{"model.safetensors", "model.safetensors.index.json"},
         {model, NULL},
         {0, 0},
         2,
         "model.safetensors.index.json"},
    };
    (void)cfgp;
    const char *lying_index =
        "{\"weight_map\":{\"fc1.weight\":\"other.safetensors\"}}";
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *tar = th_path(s.dir, "bad.tar");
        const char *data[3] = {NULL, lying_index, NULL};
        th_write_tar(tar, cases[i].names, cases[i].paths, data, cases[i].kinds,
                     cases[i].n);
        th_resp r;
        th_upload(&s, "/v1/checkpoints", tar, "application/x-tar", false, &r);
        th_expect_problem(&r, 422, NULL, cases[i].words);
        th_resp_free(&r);
        unlink(tar);
        free(tar);
    }
    char *junk = th_path(s.dir, "junk.tar");
    th_write_file(junk, "this is not a tar at all, not even close....", 44);
    th_resp r;
    th_upload(&s, "/v1/checkpoints", junk, "application/x-tar", false, &r);
    th_expect_problem(&r, 422, NULL, "tar");
    th_resp_free(&r);
    ck_assert_int_eq(th_get(&s, "/v1/checkpoints", &r), 200);
    ck_assert_int_eq(json_array_size(json_object_get(r.json, "items")), 0);
    th_resp_free(&r);
    free(junk);
    free(cfg);
    free(model);
    th_server_stop(&s);
    th_server_free(&s);
}
END_TEST

// Oversize bodies: refused from the Content-Length (the body, already on
// its way from a client that does not wait on 100-continue, is read and
// dropped first, so the answer is not lost to a reset connection), as soon
// as exceeded without one; nothing is left behind.
START_TEST(test_oversize_uploads)
{
    th_server s;
    const char *extra[] = {"--max-upload", "1M", NULL};
    th_server_start(&s, NULL, extra);
    char *model = fixture_file("mlp-fmnist/model.safetensors"); // 2 MB
    th_resp r;
    th_upload(&s, "/v1/checkpoints", model, "application/octet-stream", false,
              &r);
    th_expect_problem(&r, 413, NULL, "at most 1048576");
    th_resp_free(&r);
    th_upload(&s, "/v1/checkpoints", model, "application/octet-stream", true,
              &r);
    th_expect_problem(&r, 413, NULL, "exceeds 1048576");
    th_resp_free(&r);
    th_upload(&s, "/v1/datasets", model, "application/octet-stream", true, &r);
    th_expect_problem(&r, 413, NULL, NULL);
    th_resp_free(&r);
    char *tmp = th_path(s.data, "tmp");
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", tmp);
    ck_assert_int_eq(system(cmd), 0);
    free(tmp);
    free(model);
    th_server_stop(&s);
    th_server_free(&s);
}
END_TEST

Suite *suite_api_checkpoints(void)
{
    Suite *s = suite_create("api_checkpoints");
    TCase *ok = tcase_create("routes");
    tcase_set_timeout(ok, 180);
    tcase_add_test(ok, test_checkpoints_routes);
    suite_add_tcase(s, ok);
    TCase *bad = tcase_create("bad-input");
    tcase_set_timeout(bad, 120);
    tcase_add_loop_test(bad, test_bad_checkpoint_uploads, 0,
                        (int)(sizeof bad_uploads / sizeof bad_uploads[0]));
    tcase_add_test(bad, test_bad_tars);
    tcase_add_test(bad, test_oversize_uploads);
    suite_add_tcase(s, bad);
    return s;
}

// test_api.c: the HTTP API against the real server: every route's happy
// path, the end-to-end run, bad inputs, auth, the route table against
// openapi.yaml.
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

// Asserts a problem+json with this status (and field when given).

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

// Reads a tar (from memory) and returns the bytes of the member whose name
// ends in suffix.
static unsigned char *tar_member(const char *tar, size_t n, const char *suffix,
                                 size_t *len, int *members)
{
    struct archive *a = archive_read_new();
    archive_read_support_format_tar(a);
    ck_assert_int_eq(archive_read_open_memory(a, tar, n), ARCHIVE_OK);
    struct archive_entry *e;
    unsigned char *out = NULL;
    *members = 0;
    while (archive_read_next_header(a, &e) == ARCHIVE_OK) {
        (*members)++;
        if (!sh_str_ends_with(archive_entry_pathname(e), suffix))
            continue;
        size_t size = (size_t)archive_entry_size(e);
        out = malloc(size + 1);
        ck_assert_int_eq(archive_read_data(a, out, size), (la_ssize_t)size);
        *len = size;
    }
    ck_assert_int_eq(archive_read_free(a), ARCHIVE_OK);
    return out;
}

// End to end: upload the fixture as a tar, prune with 2:4, poll with
// ETags, download the whole folder and one file (with ranges), check the
// sparsity of the downloaded weights.
START_TEST(test_end_to_end)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *folder = fixture_file("llama-kjv");
    char *ck = th_upload_checkpoint(&s, folder);
    char body[512];
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"magnitude\","
             "\"pattern\":\"2:4\"}",
             ck);
    th_resp r;
    ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 202);
    char loc[128], id[64];
    snprintf(id, sizeof id, "%s", jstr(r.json, "id"));
    snprintf(body, sizeof body, "/v1/jobs/%s", id);
    ck_assert_str_eq(th_header(&r, "Location", loc, sizeof loc), body);
    ck_assert_str_eq(jstr(r.json, "status"), "queued");
    json_t *spec = json_object_get(r.json, "spec");
    ck_assert_str_eq(jstr(spec, "scope"), "layer");
    ck_assert(json_is_integer(json_object_get(spec, "seed")));
    th_resp_free(&r);

    json_t *job = th_job_wait(&s, id, 60);
    ck_assert_str_eq(jstr(job, "status"), "succeeded");
    json_t *res = json_object_get(job, "result");
    ck_assert_double_eq_tol(json_number_value(json_object_get(
                                json_object_get(res, "targets"), "sparsity")),
                            0.5, 1e-12);
    ck_assert_int_eq(json_integer_value(json_object_get(job, "attempts")), 1);
    ck_assert_double_eq(json_number_value(json_object_get(
                            json_object_get(job, "progress"), "fraction")),
                        1.0);
    json_decref(job);

    // ETag and If-None-Match.
    char etag[80], inm[128];
    char jpath[128];
    snprintf(jpath, sizeof jpath, "/v1/jobs/%s", id);
    th_get(&s, jpath, &r);
    ck_assert_ptr_nonnull(th_header(&r, "ETag", etag, sizeof etag));
    th_resp_free(&r);
    snprintf(inm, sizeof inm, "If-None-Match: %s", etag);
    const char *h[] = {inm, NULL};
    ck_assert_int_eq(th_http(&s, "GET", jpath, h, NULL, 0, true, &r), 304);
    ck_assert_uint_eq(r.len, 0);
    th_resp_free(&r);

    // Layers, paginated.
    snprintf(jpath, sizeof jpath, "/v1/jobs/%s/layers?limit=10", id);
    ck_assert_int_eq(th_get(&s, jpath, &r), 200);
    ck_assert_int_eq(json_array_size(json_object_get(r.json, "items")), 10);
    ck_assert(json_is_true(json_object_get(
        json_array_get(json_object_get(r.json, "items"), 0), "pattern_ok")));
    th_resp_free(&r);

    // The whole folder as a tar.
    snprintf(jpath, sizeof jpath, "/v1/jobs/%s/artifact", id);
    ck_assert_int_eq(th_get(&s, jpath, &r), 200);
    size_t wlen = 0;
    int members = 0;
    unsigned char *w =
        tar_member(r.body, r.len, "/model.safetensors", &wlen, &members);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(members, 3); // config.json, model.safetensors, manifest
    th_resp_free(&r);
    char *wpath = th_path(s.dir, "downloaded.safetensors");
    th_write_file(wpath, w, wlen);
    eng_st *st = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_st_open(&st, wpath, &d), 0);
    const eng_st_header *hd = eng_st_header_of(st);
    long q = eng_st_header_find(hd, "model.layers.1.mlp.up_proj.weight");
    ck_assert(eng_check_nm(eng_st_data(st, (size_t)q), ENG_DTYPE_F32,
                           hd->tensors[q].numel, 2, 4));
    ck_assert_uint_eq(eng_count_zeros(eng_st_data(st, (size_t)q), ENG_DTYPE_F32,
                                      hd->tensors[q].numel),
                      hd->tensors[q].numel / 2);
    eng_st_close(st);

    // One file: full, then ranges; its ETag is its SHA-256.
    snprintf(jpath, sizeof jpath,
             "/v1/jobs/%s/artifact/files/model.safetensors", id);
    ck_assert_int_eq(th_get(&s, jpath, &r), 200);
    ck_assert_uint_eq(r.len, wlen);
    ck_assert_int_eq(memcmp(r.body, w, wlen), 0);
    char sha[SH_SHA256_HEX], want[80];
    sh_sha256_file(wpath, sha);
    snprintf(want, sizeof want, "\"%s\"", sha);
    ck_assert_str_eq(th_header(&r, "ETag", etag, sizeof etag), want);
    th_resp_free(&r);
    const char *range[] = {"Range: bytes=100-199", NULL};
    ck_assert_int_eq(th_http(&s, "GET", jpath, range, NULL, 0, true, &r), 206);
    ck_assert_uint_eq(r.len, 100);
    ck_assert_int_eq(memcmp(r.body, w + 100, 100), 0);
    char cr[80], cr_want[80];
    snprintf(cr_want, sizeof cr_want, "bytes 100-199/%zu", wlen);
    ck_assert_str_eq(th_header(&r, "Content-Range", cr, sizeof cr), cr_want);
    th_resp_free(&r);
    const char *tail[] = {"Range: bytes=-10", NULL};
    ck_assert_int_eq(th_http(&s, "GET", jpath, tail, NULL, 0, true, &r), 206);
    ck_assert_int_eq(memcmp(r.body, w + wlen - 10, 10), 0);
    th_resp_free(&r);
    const char *past[] = {"Range: bytes=99999999-", NULL};
    ck_assert_int_eq(th_http(&s, "GET", jpath, past, NULL, 0, true, &r), 416);
    th_resp_free(&r);
    snprintf(inm, sizeof inm, "If-None-Match: %s", want);
    const char *cond[] = {inm, NULL};
    ck_assert_int_eq(th_http(&s, "GET", jpath, cond, NULL, 0, true, &r), 304);
    th_resp_free(&r);

    // Delete the job: its artifact goes.
    snprintf(jpath, sizeof jpath, "/v1/jobs/%s", id);
    ck_assert_int_eq(th_delete(&s, jpath, &r), 204);
    th_resp_free(&r);
    ck_assert_int_eq(th_get(&s, jpath, &r), 404);
    th_resp_free(&r);
    free(w);
    free(wpath);
    free(ck);
    free(folder);
    ck_assert_int_eq(th_server_stop(&s), 0);
    th_server_free(&s);
}
END_TEST

// Idempotency-Key: the same key returns the same job; with another body it
// is a conflict. Job lists filter by status and checkpoint.
START_TEST(test_idempotency_and_filters)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *file = fixture_file("mlp-fmnist");
    char *ck = th_upload_checkpoint(&s, file);
    char body[256], other[256];
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"magnitude\"}", ck);
    snprintf(other, sizeof other,
             "{\"checkpoint\":\"%s\",\"method\":\"random\"}", ck);
    const char *h[] = {"Content-Type: application/json", "Idempotency-Key: k-1",
                       NULL};
    th_resp a, b, c;
    ck_assert_int_eq(
        th_http(&s, "POST", "/v1/jobs", h, body, strlen(body), true, &a), 202);
    ck_assert_int_eq(
        th_http(&s, "POST", "/v1/jobs", h, body, strlen(body), true, &b), 202);
    ck_assert_str_eq(jstr(a.json, "id"), jstr(b.json, "id"));
    char v[16];
    ck_assert_str_eq(th_header(&b, "Idempotent-Replayed", v, sizeof v), "true");
    th_http(&s, "POST", "/v1/jobs", h, other, strlen(other), true, &c);
    th_expect_problem(&c, 409, "Idempotency-Key", "different request body");
    json_decref(th_job_wait(&s, jstr(a.json, "id"), 30));
    th_resp l;
    ck_assert_int_eq(th_get(&s, "/v1/jobs?status=succeeded", &l), 200);
    ck_assert_int_eq(json_array_size(json_object_get(l.json, "items")), 1);
    th_resp_free(&l);
    ck_assert_int_eq(th_get(&s, "/v1/jobs?status=queued", &l), 200);
    ck_assert_int_eq(json_array_size(json_object_get(l.json, "items")), 0);
    th_resp_free(&l);
    char path[128];
    snprintf(path, sizeof path, "/v1/jobs?checkpoint=%s", ck);
    ck_assert_int_eq(th_get(&s, path, &l), 200);
    ck_assert_int_eq(json_array_size(json_object_get(l.json, "items")), 1);
    th_resp_free(&l);
    ck_assert_int_eq(th_get(&s, "/v1/jobs?checkpoint=ck_none", &l), 200);
    ck_assert_int_eq(json_array_size(json_object_get(l.json, "items")), 0);
    th_resp_free(&l);
    th_resp_free(&a);
    th_resp_free(&b);
    th_resp_free(&c);
    free(ck);
    free(file);
    th_server_stop(&s);
    th_server_free(&s);
}
END_TEST

// Cancel: a queued job at once; a running one within about a second, its
// temp dir removed. A checkpoint in use cannot be deleted; nor a running
// job.
START_TEST(test_cancel_and_conflicts)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *big = th_path(s.dir, "big.safetensors");
    th_write_big_model(big, 8, 4096, 4096);
    char *ck = th_upload_checkpoint(&s, big);
    unlink(big);
    char body[256];
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"random\","
             "\"scope\":\"global\",\"seed\":1}",
             ck);
    th_resp r1, r2, r;
    th_post_json(&s, "/v1/jobs", body, &r1);
    th_post_json(&s, "/v1/jobs", body, &r2); // waits: one worker
    const char *j1 = jstr(r1.json, "id"), *j2 = jstr(r2.json, "id");
    char path[160];
    snprintf(path, sizeof path, "/v1/checkpoints/%s", ck);
    th_delete(&s, path, &r);
    th_expect_problem(&r, 409, NULL, "uses");
    th_resp_free(&r);

    snprintf(path, sizeof path, "/v1/jobs/%s/cancel", j2);
    ck_assert_int_eq(th_http(&s, "POST", path, NULL, NULL, 0, true, &r), 202);
    ck_assert_str_eq(jstr(r.json, "status"), "cancelled");
    th_resp_free(&r);

    ck_assert(th_job_wait_running(&s, j1, 0.0, 30));
    snprintf(path, sizeof path, "/v1/jobs/%s", j1);
    th_delete(&s, path, &r);
    th_expect_problem(&r, 409, NULL, "has not ended");
    th_resp_free(&r);
    snprintf(path, sizeof path, "/v1/jobs/%s/layers", j1);
    th_get(&s, path, &r);
    th_expect_problem(&r, 409, NULL, "per-layer table");
    th_resp_free(&r);
    snprintf(path, sizeof path, "/v1/jobs/%s/artifact", j1);
    th_get(&s, path, &r);
    th_expect_problem(&r, 409, NULL, "only a succeeded job");
    th_resp_free(&r);

    double t0 = sh_time_mono();
    snprintf(path, sizeof path, "/v1/jobs/%s/cancel", j1);
    ck_assert_int_eq(th_http(&s, "POST", path, NULL, NULL, 0, true, &r), 202);
    ck_assert(json_is_true(json_object_get(r.json, "cancel_requested")));
    th_resp_free(&r);
    json_t *job = th_job_wait(&s, j1, 30);
    double took = sh_time_mono() - t0;
    ck_assert_str_eq(jstr(job, "status"), "cancelled");
    ck_assert_msg(took < 3.0, "cancel took %.2f s", took);
    json_decref(job);
    // The job's temp dir is gone.
    char *tmp = th_path(s.data, "tmp");
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s')\"", tmp);
    ck_assert_int_eq(system(cmd), 0);
    free(tmp);
    ck_assert_int_eq(th_http(&s, "POST", path, NULL, NULL, 0, true, &r), 409);
    th_resp_free(&r);
    th_resp_free(&r1);
    th_resp_free(&r2);
    free(big);
    free(ck);
    ck_assert_int_eq(th_server_stop(&s), 0);
    th_server_free(&s);
}
END_TEST

// --- bad inputs: each a 4xx problem naming what is wrong

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

// Oversize bodies: refused before reading with Content-Length, as soon as
// exceeded without; nothing is left behind.
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

// Job specs: malformed JSON, wrong types, unknown fields, ranges, N:M,
// unknown ids, missing calibration, wrong content type, oversize bodies.
START_TEST(test_bad_jobs)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *file = fixture_file("mlp-fmnist");
    char *ck = th_upload_checkpoint(&s, file);
    struct {
        const char *body;
        long status;
        const char *field;
        const char *words;
    } cases[] = {
        {"{\"method\":", 400, NULL, "not valid JSON"},
        {"[1,2]", 422, NULL, "must be a JSON object"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"colour\":1}", 422,
         "colour", "unknown field"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"sparsity\":1.5}",
         422, "sparsity", "between 0 and 1"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"sparsity\":\"x\"}",
         422, "sparsity", "must be a number"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"pattern\":"
         "\"3:5\"}",
         422, "pattern", "multiple of 5"},
        {"{\"checkpoint\":\"%s\",\"method\":\"pruneit\"}", 422, "method",
         "not one of"},
        {"{\"method\":\"magnitude\"}", 422, "checkpoint", "required"},
        {"{\"checkpoint\":\"ck_missing\",\"method\":\"magnitude\"}", 422,
         "checkpoint", "does not exist"},
        {"{\"checkpoint\":\"%s\",\"method\":\"wanda\"}", 422, "calibration",
         "needs calibration"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"evaluation\":{"
         "\"dataset\":\"ds_missing\"}}",
         422, "evaluation.dataset", "does not exist"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"targets\":[\"(\"]}",
         422, "targets[0]", "regex"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"targets\":"
         "[\"nothing\"]}",
         422, "targets", "no tensor"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[512];
        snprintf(body, sizeof body, cases[i].body, ck);
        th_resp r;
        th_post_json(&s, "/v1/jobs", body, &r);
        th_expect_problem(&r, cases[i].status, cases[i].field, cases[i].words);
        th_resp_free(&r);
    }
    // Wrong content type, and a body over 1 MiB.
    const char *h[] = {"Content-Type: text/plain", NULL};
    th_resp r;
    th_http(&s, "POST", "/v1/jobs", h, "{}", 2, true, &r);
    th_expect_problem(&r, 415, NULL, "application/json");
    th_resp_free(&r);
    size_t n = (1u << 20) + 10;
    char *huge = malloc(n + 1);
    memset(huge, ' ', n);
    huge[n] = '\0';
    huge[0] = '{';
    huge[n - 1] = '}';
    th_post_json(&s, "/v1/jobs", huge, &r);
    th_expect_problem(&r, 413, NULL, NULL);
    th_resp_free(&r);
    free(huge);
    // No job was created by any of them.
    ck_assert_int_eq(th_get(&s, "/v1/jobs", &r), 200);
    ck_assert_int_eq(json_array_size(json_object_get(r.json, "items")), 0);
    th_resp_free(&r);
    free(ck);
    free(file);
    th_server_stop(&s);
    th_server_free(&s);
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

// Calibrated methods through the service: SparseGPT with calibration and
// evaluation datasets; the result carries the metric, reconstruction
// errors and the dampening used; datasets of the wrong kind and models the
// engine cannot run are refused at submission.
START_TEST(test_calibrated_job)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *folder = fixture_file("llama-kjv");
    char *file = fixture_file("llama-kjv/model.safetensors");
    char *calf = fixture_file("llama-kjv-data/calibration.safetensors");
    char *evf = fixture_file("llama-kjv-data/evaluation.safetensors");
    char *mlpf = fixture_file("mlp-fmnist-data/calibration.safetensors");
    char *ck = th_upload_checkpoint(&s, folder);
    char *bare = th_upload_checkpoint(&s, file); // no config.json
    char *cal = th_upload_dataset(&s, calf);
    char *ev = th_upload_dataset(&s, evf);
    char *inputs = th_upload_dataset(&s, mlpf);
    char body[512];
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"sparsegpt\","
             "\"pattern\":\"2:4\",\"calibration\":{\"dataset\":\"%s\"},"
             "\"evaluation\":{\"dataset\":\"%s\"}}",
             ck, cal, ev);
    th_resp r;
    ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 202);
    ck_assert(json_is_null(json_object_get(
        json_object_get(json_object_get(r.json, "spec"), "calibration"),
        "samples")));
    char id[64];
    snprintf(id, sizeof id, "%s", jstr(r.json, "id"));
    th_resp_free(&r);
    json_t *job = th_job_wait(&s, id, 120);
    ck_assert_msg(strcmp(jstr(job, "status"), "succeeded") == 0, "%s",
                  json_dumps(json_object_get(job, "error"), 0));
    json_t *res = json_object_get(job, "result");
    json_t *metric = json_object_get(res, "metric");
    ck_assert_str_eq(jstr(metric, "name"), "perplexity");
    ck_assert_double_eq_tol(json_number_value(json_object_get(metric, "dense")),
                            3.4410, 0.001);
    ck_assert(json_number_value(json_object_get(metric, "pruned")) <
              3.6075 * 1.02);
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(res, "calibration"), "samples")),
                     128);
    json_t *l0 = json_array_get(json_object_get(res, "layers"), 0);
    ck_assert(json_is_number(json_object_get(l0, "recon_error")));
    ck_assert(json_is_number(json_object_get(l0, "damping")));
    json_decref(job);

    struct {
        const char *fmt;
        const char *a, *b;
        const char *field, *words;
    } bad[] = {
        {"{\"checkpoint\":\"%s\",\"method\":\"wanda\",\"calibration\":"
         "{\"dataset\":\"%s\"}}",
         ck, inputs, "calibration.dataset", "needs \"tokens\""},
        {"{\"checkpoint\":\"%s\",\"method\":\"wanda\",\"calibration\":"
         "{\"dataset\":\"%s\"}}",
         bare, cal, "method", "cannot run"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"evaluation\":"
         "{\"dataset\":\"%s\"}}",
         bare, ev, "evaluation", "can run"},
        {"{\"checkpoint\":\"%s\",\"method\":\"sparsegpt\",\"pattern\":"
         "\"rows\",\"calibration\":{\"dataset\":\"%s\"}}",
         ck, cal, "pattern", "sparsegpt prunes"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(body, sizeof body, bad[i].fmt, bad[i].a, bad[i].b);
        th_post_json(&s, "/v1/jobs", body, &r);
        th_expect_problem(&r, 422, bad[i].field, bad[i].words);
        th_resp_free(&r);
    }
    free(ck);
    free(bare);
    free(cal);
    free(ev);
    free(inputs);
    free(folder);
    free(file);
    free(calf);
    free(evf);
    free(mlpf);
    ck_assert_int_eq(th_server_stop(&s), 0);
    th_server_free(&s);
}
END_TEST

// Cancel reaches inside a long SparseGPT run, whatever its block size: it
// is cancelled within a second, and shows the phase while it runs.
START_TEST(test_cancel_inside_sparsegpt)
{
    static const int blocksizes[] = {128, 1};
    int blocksize = blocksizes[_i];
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *dir = th_path(s.dir, "model");
    sh_mkdir_p(dir);
    th_write_llama(dir, 256, 1024, 6, 4, 256);
    char *calf = th_path(s.dir, "calib.safetensors");
    th_write_tokens(calf, 128, 128, 256);
    char *ck = th_upload_checkpoint(&s, dir);
    char *cal = th_upload_dataset(&s, calf);
    char body[512];
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"sparsegpt\","
             "\"calibration\":{\"dataset\":\"%s\"},"
             "\"sparsegpt\":{\"blocksize\":%d}}",
             ck, cal, blocksize);
    th_resp r;
    ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 202);
    char id[64], path[128];
    snprintf(id, sizeof id, "%s", jstr(r.json, "id"));
    th_resp_free(&r);
    ck_assert_msg(th_job_wait_running(&s, id, 0.3, 120),
                  "the job never got a third of the way");
    snprintf(path, sizeof path, "/v1/jobs/%s", id);
    th_get(&s, path, &r);
    json_t *p = json_object_get(r.json, "progress");
    ck_assert_str_eq(jstr(p, "phase"), "pruning");
    ck_assert_int_eq(json_integer_value(json_object_get(p, "steps")), 6);
    th_resp_free(&r);
    double t0 = sh_time_mono();
    snprintf(path, sizeof path, "/v1/jobs/%s/cancel", id);
    ck_assert_int_eq(th_http(&s, "POST", path, NULL, NULL, 0, true, &r), 202);
    th_resp_free(&r);
    json_t *job = th_job_wait(&s, id, 30);
    ck_assert_str_eq(jstr(job, "status"), "cancelled");
    double took = sh_time_mono() - t0;
    ck_assert_msg(took < 1.0, "cancel took %.2f s (blocksize %d)", took,
                  blocksize);
    json_decref(job);
    free(dir);
    free(calf);
    free(ck);
    free(cal);
    ck_assert_int_eq(th_server_stop(&s), 0);
    th_server_free(&s);
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
    tcase_add_test(ok, test_checkpoints_routes);
    tcase_add_test(ok, test_datasets_routes);
    tcase_add_test(ok, test_end_to_end);
    tcase_add_test(ok, test_idempotency_and_filters);
    tcase_add_test(ok, test_cancel_and_conflicts);
    tcase_add_test(ok, test_routes_match_openapi);
    tcase_add_test(ok, test_responses_match_openapi);
    tcase_add_test(ok, test_calibrated_job);
    tcase_add_loop_test(ok, test_cancel_inside_sparsegpt, 0, 2);
    suite_add_tcase(s, ok);
    TCase *bad = tcase_create("bad-input");
    tcase_set_timeout(bad, 120);
    tcase_add_loop_test(bad, test_bad_checkpoint_uploads, 0,
                        (int)(sizeof bad_uploads / sizeof bad_uploads[0]));
    tcase_add_test(bad, test_bad_tars);
    tcase_add_test(bad, test_oversize_uploads);
    tcase_add_test(bad, test_bad_jobs);
    tcase_add_test(bad, test_bad_datasets);
    tcase_add_test(bad, test_bad_requests);
    tcase_add_test(bad, test_auth);
    suite_add_tcase(s, bad);
    return s;
}

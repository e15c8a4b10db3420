// test_api_artifacts.c: a job's artifact against the real server, end to
// end: upload, prune, poll with ETags, download the folder as a tar and one
// file with ranges, check the downloaded weights.
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

Suite *suite_api_artifacts(void)
{
    Suite *s = suite_create("api_artifacts");
    TCase *ok = tcase_create("routes");
    tcase_set_timeout(ok, 180);
    tcase_add_test(ok, test_end_to_end);
    suite_add_tcase(s, ok);
    return s;
}

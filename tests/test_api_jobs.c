// test_api_jobs.c: /v1/jobs against the real server: idempotency,
// filters, cancel and conflicts, calibrated jobs, cancel inside SparseGPT,
// and bad specs.
#include "tests/helpers.h"
#include "tests/server.h"

#include "api/api_int.h"
#include "common/sha256.h"
#include "common/util.h"
#include "engine/engine.h"

#include <archive.h>
#include <archive_entry.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *fixture_file(const char *rel) { return th_fixture(rel); }

static const char *jstr(json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

// Submits body (202 expected) and copies the new job's id into id.
static void submit(th_server *s, const char *body, char id[64])
{
    th_resp r;
    ck_assert_int_eq(th_post_json(s, "/v1/jobs", body, &r), 202);
    snprintf(id, 64, "%s", jstr(r.json, "id"));
    th_resp_free(&r);
}

// Waits for job id; it must succeed (the test fails with its error).
// Returns the job (a new reference).
static json_t *succeeded(th_server *s, const char *id, double timeout)
{
    json_t *job = th_job_wait(s, id, timeout);
    ck_assert_msg(strcmp(jstr(job, "status"), "succeeded") == 0, "%s: %s", id,
                  json_dumps(json_object_get(job, "error"), 0));
    return job;
}

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
    json_t *job = succeeded(&s, id, 120);
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
    // Where the time went: every phase of the run, and the layer's own.
    static const char *const phases[] = {"read",     "forward", "statistics",
                                         "solve",    "recon",   "write",
                                         "evaluate", "hash"};
    json_t *tm = json_object_get(res, "timings");
    for (size_t i = 0; i < sizeof phases / sizeof phases[0]; i++)
        ck_assert_msg(json_is_number(json_object_get(tm, phases[i])), "%s",
                      phases[i]);
    ck_assert(json_number_value(json_object_get(tm, "evaluate")) > 0);
    ck_assert(json_number_value(json_object_get(json_object_get(l0, "timings"),
                                                "solve")) > 0);
    ck_assert(json_is_true(
        json_object_get(json_object_get(json_object_get(job, "spec"), "report"),
                        "recon_error")));
    json_decref(job);

    // Pruned and quantized together: the echoed spec says the grid, the
    // result reports it, and the metric stays near the reference's.
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"sparsegpt\","
             "\"sparsity\":0.5,\"quantize\":{\"bits\":4},"
             "\"calibration\":{\"dataset\":\"%s\"},"
             "\"evaluation\":{\"dataset\":\"%s\"}}",
             ck, cal, ev);
    ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 202);
    json_t *q = json_object_get(json_object_get(r.json, "spec"), "quantize");
    ck_assert_str_eq(jstr(q, "method"), "gptq");
    ck_assert_int_eq(json_integer_value(json_object_get(q, "group_size")), 0);
    snprintf(id, sizeof id, "%s", jstr(r.json, "id"));
    th_resp_free(&r);
    job = succeeded(&s, id, 120);
    res = json_object_get(job, "result");
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(res, "quantize"), "bits")),
                     4);
    ck_assert(json_number_value(json_object_get(json_object_get(res, "metric"),
                                                "pruned")) < 3.5590 * 1.02);
    json_decref(job);

    // The same job written as compressed-tensors: its artifact, downloaded
    // and decompressed, is the dense job's byte for byte; the result says
    // how much smaller it is.
    char dense_id[64];
    snprintf(dense_id, sizeof dense_id, "%s", id);
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"sparsegpt\","
             "\"sparsity\":0.5,\"quantize\":{\"bits\":4},"
             "\"calibration\":{\"dataset\":\"%s\"},"
             "\"evaluation\":{\"dataset\":\"%s\"},"
             "\"output\":{\"format\":\"compressed-tensors\"}}",
             ck, cal, ev);
    ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 202);
    ck_assert_str_eq(
        jstr(json_object_get(json_object_get(r.json, "spec"), "output"),
             "format"),
        "compressed-tensors");
    snprintf(id, sizeof id, "%s", jstr(r.json, "id"));
    th_resp_free(&r);
    job = succeeded(&s, id, 120);
    json_t *stg = json_object_get(json_object_get(job, "result"), "storage");
    ck_assert_str_eq(jstr(stg, "format"), "compressed-tensors");
    ck_assert(json_number_value(json_object_get(stg, "ratio")) < 0.5);
    json_decref(job);
    char *ctdir = th_path(s.dir, "ct"), *backdir = th_path(s.dir, "back");
    sh_mkdir_p(ctdir);
    static const char *const files[] = {"model.safetensors", "config.json"};
    for (int i = 0; i < 2; i++) {
        char url[256];
        snprintf(url, sizeof url, "/v1/jobs/%s/artifact/files/%s", id,
                 files[i]);
        ck_assert_int_eq(th_get(&s, url, &r), 200);
        char *dst = th_path(ctdir, files[i]);
        th_write_file(dst, r.body, r.len);
        free(dst);
        th_resp_free(&r);
    }
    char *out = NULL, *err = NULL;
    const char *dargs[] = {"decompress", "--model", ctdir,
                           "--out",      backdir,   NULL};
    ck_assert_msg(th_run(&out, &err, dargs) == 0, "%s", err);
    free(out);
    free(err);
    char url[256];
    snprintf(url, sizeof url, "/v1/jobs/%s/artifact/files/model.safetensors",
             dense_id);
    ck_assert_int_eq(th_get(&s, url, &r), 200);
    char *back = th_path(backdir, "model.safetensors");
    size_t blen;
    unsigned char *bb = th_read_file(back, &blen);
    ck_assert_msg(bb && blen == r.len && memcmp(bb, r.body, blen) == 0,
                  "decompressed artifact differs from the dense job's");
    free(bb);
    free(back);
    th_resp_free(&r);
    free(ctdir);
    free(backdir);

    // OWL through the service: the result says each block's level, and
    // the artifact's shears.json holds them as overrides.
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"wanda\","
             "\"sparsity\":0.7,\"allocation\":\"owl\","
             "\"calibration\":{\"dataset\":\"%s\"}}",
             ck, cal);
    ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 202);
    snprintf(id, sizeof id, "%s", jstr(r.json, "id"));
    th_resp_free(&r);
    job = succeeded(&s, id, 120);
    json_t *al = json_object_get(json_object_get(job, "result"), "allocation");
    ck_assert_str_eq(jstr(al, "method"), "owl");
    ck_assert_int_eq(json_array_size(json_object_get(al, "blocks")), 4);
    json_decref(job);
    snprintf(url, sizeof url, "/v1/jobs/%s/artifact/files/shears.json", id);
    ck_assert_int_eq(th_get(&s, url, &r), 200);
    json_t *man = json_loadb(r.body, r.len, 0, NULL);
    json_t *msp = json_object_get(man, "spec");
    ck_assert_int_eq(json_array_size(json_object_get(msp, "overrides")), 4);
    ck_assert_str_eq(json_string_value(json_object_get(msp, "allocation")),
                     "uniform");
    json_decref(man);
    th_resp_free(&r);

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
        {"{\"checkpoint\":\"%s\",\"method\":\"sparsegpt\",\"quantize\":"
         "{\"bits\":12},\"calibration\":{\"dataset\":\"%s\"}}",
         ck, cal, "quantize.bits", "from 2 to 8"},
        {"{\"checkpoint\":\"%s\",\"method\":\"sparsegpt\",\"quantize\":"
         "{\"bits\":4,\"group_size\":100},\"calibration\":{\"dataset\":"
         "\"%s\"}}",
         ck, cal, "quantize.group_size", "must divide"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"quantize\":"
         "{\"bits\":4,\"method\":\"gptq\"},\"seed\":%s1}",
         ck, "", "quantize.method", "gptq needs calibration"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"output\":"
         "{\"format\":\"compressed-tensors\",\"sparse_format\":"
         "\"sparse-24-bitmask\"},\"seed\":%s1}",
         ck, "", "output.sparse_format", "needs pattern 2:4"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"quantize\":"
         "{\"bits\":3},\"output\":{\"format\":\"compressed-tensors\"},"
         "\"seed\":%s1}",
         ck, "", "output.format", "2 and 4 bits"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"allocation\":"
         "{\"method\":\"sensitivity\",\"from\":\"/etc/passwd\"},\"seed\":"
         "%s1}",
         ck, "", "allocation.from", "no job /etc/passwd"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"allocation\":"
         "\"owl\",\"pattern\":\"2:4\",\"seed\":%s1}",
         ck, "", "allocation", "unstructured"},
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

// A sensitivity job through the service: the fixture Llama at block
// granularity, four levels. Its table is its result (no artifact), served
// at /sensitivity, the same numbers `shears sensitivity` gives; a prune
// job allocates from it. Allocations from what is not a succeeded
// sensitivity job of the same checkpoint, levels outside (0, 1), bounds
// that make the target impossible: 422 naming the field.
START_TEST(test_sensitivity_job)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *folder = fixture_file("llama-kjv");
    char *file = fixture_file("llama-kjv/model.safetensors");
    char *calf = fixture_file("llama-kjv-data/calibration.safetensors");
    char *evf = fixture_file("llama-kjv-data/evaluation.safetensors");
    char *ck = th_upload_checkpoint(&s, folder);
    char *bare = th_upload_checkpoint(&s, file);
    char *cal = th_upload_dataset(&s, calf);
    char *ev = th_upload_dataset(&s, evf);
    char body[1024], id[64], url[256];
    snprintf(body, sizeof body,
             "{\"kind\":\"sensitivity\",\"checkpoint\":\"%s\","
             "\"method\":\"wanda\",\"calibration\":{\"dataset\":\"%s\"},"
             "\"evaluation\":{\"dataset\":\"%s\"},\"sensitivity\":{"
             "\"levels\":[0.3,0.5,0.7,0.9],\"granularity\":\"block\"}}",
             ck, cal, ev);
    th_resp r;
    ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 202);
    ck_assert_str_eq(jstr(r.json, "kind"), "sensitivity");
    snprintf(id, sizeof id, "%s", jstr(r.json, "id"));
    th_resp_free(&r);
    // Not done yet (or done): the table is there only once it succeeded.
    snprintf(url, sizeof url, "/v1/jobs/%s/sensitivity", id);
    int early = th_get(&s, url, &r);
    ck_assert(early == 409 || early == 200);
    th_resp_free(&r);
    json_t *job = succeeded(&s, id, 180);
    ck_assert(json_is_null(json_object_get(job, "artifact")));
    json_decref(job);
    ck_assert_int_eq(th_get(&s, url, &r), 200);
    json_t *tab = json_incref(r.json);
    th_resp_free(&r);
    json_t *groups = json_object_get(tab, "groups");
    ck_assert_int_eq(json_array_size(groups), 4);
    size_t i;
    json_t *g;
    json_array_foreach (groups, i, g) {
        json_t *pts = json_object_get(g, "points");
        ck_assert_int_eq(json_array_size(pts), 4);
        // More pruning, worse perplexity.
        ck_assert(json_number_value(
                      json_object_get(json_array_get(pts, 3), "metric")) >
                  json_number_value(
                      json_object_get(json_array_get(pts, 0), "metric")));
    }
    ck_assert_int_eq(json_integer_value(json_object_get(tab, "evaluations")),
                     17);
    ck_assert(json_number_value(json_object_get(tab, "estimate_seconds")) > 0);
    // The command line's table is the same.
    char *dir = th_tmpdir(), *rep = th_path(dir, "sens.json"), *e = NULL;
    const char *sa[] = {
        "sensitivity",     "--model",  folder,     "--evaluation", evf,
        "--calibration",   calf,       "--method", "wanda",        "--levels",
        "0.3,0.5,0.7,0.9", "--report", rep,        "--quiet",      NULL};
    ck_assert_msg(th_run(NULL, &e, sa) == 0, "%s", e);
    free(e);
    json_error_t jerr;
    json_t *cli = json_load_file(rep, 0, &jerr);
    ck_assert(cli);
    ck_assert_msg(json_equal(json_object_get(cli, "groups"), groups) &&
                      json_equal(json_object_get(cli, "dense"),
                                 json_object_get(tab, "dense")),
                  "the service's table differs from the CLI's");
    json_decref(cli);
    // No artifact; a prune job has no table; the list filters by kind.
    snprintf(url, sizeof url, "/v1/jobs/%s/artifact", id);
    th_get(&s, url, &r);
    th_expect_problem(&r, 409, NULL, "sensitivity job");
    th_resp_free(&r);
    snprintf(url, sizeof url, "/v1/jobs?kind=sensitivity&checkpoint=%s", ck);
    ck_assert_int_eq(th_get(&s, url, &r), 200);
    ck_assert_int_eq(json_array_size(json_object_get(r.json, "items")), 1);
    th_resp_free(&r);
    th_get(&s, "/v1/jobs?kind=bogus", &r);
    th_expect_problem(&r, 422, "kind", "prune, sensitivity or sweep");
    th_resp_free(&r);

    // Allocation from the job: each block's level from its curve, the
    // target met, the levels in the artifact's effective spec.
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"wanda\",\"sparsity\":0.6,"
             "\"calibration\":{\"dataset\":\"%s\"},\"allocation\":{"
             "\"method\":\"sensitivity\",\"from\":\"%s\"}}",
             ck, cal, id);
    char pid[64];
    submit(&s, body, pid);
    job = succeeded(&s, pid, 120);
    json_t *res = json_object_get(job, "result");
    json_t *al = json_object_get(res, "allocation");
    ck_assert_str_eq(jstr(al, "method"), "sensitivity");
    ck_assert_str_eq(jstr(al, "from"), id);
    ck_assert_int_eq(json_array_size(json_object_get(al, "groups")), 4);
    // Within a weight per comparison group (Wanda's: a row).
    double zeros = 0, params = 0, rows = 0;
    json_array_foreach (json_object_get(res, "layers"), i, g) {
        zeros += json_number_value(json_object_get(g, "zeros"));
        params += json_number_value(json_object_get(g, "params"));
        rows +=
            json_number_value(json_array_get(json_object_get(g, "shape"), 0));
    }
    ck_assert_msg(fabs(zeros - 0.6 * params) <= rows, "%g of %g", zeros,
                  params);
    json_decref(job);
    snprintf(url, sizeof url, "/v1/jobs/%s/sensitivity", pid);
    th_get(&s, url, &r);
    th_expect_problem(&r, 404, NULL, "only a sensitivity job");
    th_resp_free(&r);

    // A trade-off sweep: magnitude and SparseGPT at 0.5 and 0.7, one
    // point per pair, each the metric a prune job of that spec gets; no
    // artifact.
    snprintf(body, sizeof body,
             "{\"kind\":\"sweep\",\"checkpoint\":\"%s\","
             "\"method\":\"magnitude\",\"calibration\":{\"dataset\":\"%s\"},"
             "\"evaluation\":{\"dataset\":\"%s\"},\"sweep\":{\"methods\":"
             "[\"magnitude\",\"sparsegpt\"],\"levels\":[0.5,0.7]}}",
             ck, cal, ev);
    ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 202);
    ck_assert_str_eq(jstr(r.json, "kind"), "sweep");
    char sw[64];
    snprintf(sw, sizeof sw, "%s", jstr(r.json, "id"));
    th_resp_free(&r);
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"sparsegpt\",\"sparsity\":0.7,"
             "\"calibration\":{\"dataset\":\"%s\"},\"evaluation\":{"
             "\"dataset\":\"%s\"}}",
             ck, cal, ev);
    char one[64];
    submit(&s, body, one);
    job = succeeded(&s, sw, 180);
    ck_assert(json_is_null(json_object_get(job, "artifact")));
    json_t *pts = json_object_get(json_object_get(job, "result"), "points");
    ck_assert_int_eq(json_array_size(pts), 4);
    json_t *last = json_array_get(pts, 3);
    ck_assert_str_eq(jstr(last, "method"), "sparsegpt");
    ck_assert_double_eq(json_number_value(json_object_get(last, "sparsity")),
                        0.7);
    json_t *oj = succeeded(&s, one, 120);
    ck_assert_double_eq(
        json_number_value(json_object_get(last, "metric")),
        json_number_value(json_object_get(
            json_object_get(json_object_get(oj, "result"), "metric"),
            "pruned")));
    json_decref(oj);
    json_decref(job);

    // A second sweep, queued or running when it is named.
    snprintf(body, sizeof body,
             "{\"kind\":\"sensitivity\",\"checkpoint\":\"%s\","
             "\"method\":\"magnitude\",\"evaluation\":{\"dataset\":\"%s\"},"
             "\"sensitivity\":{\"levels\":[0.5,0.9]}}",
             ck, ev);
    char busy[64];
    submit(&s, body, busy);
    struct {
        const char *fmt;
        const char *a, *b;
        const char *field, *words;
    } bad[] = {
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"allocation\":{"
         "\"method\":\"sensitivity\",\"from\":\"%s\"}}",
         ck, pid, "allocation.from", "not a sensitivity job"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"allocation\":{"
         "\"method\":\"sensitivity\",\"from\":\"%s\"}}",
         ck, busy, "allocation.from", "must have succeeded"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"allocation\":{"
         "\"method\":\"sensitivity\",\"from\":\"%s\"}}",
         bare, id, "allocation.from", "not " /* another checkpoint */},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"allocation\":{"
         "\"method\":\"sensitivity\",\"from\":\"%s\"}}",
         ck, "job_nothere", "allocation.from", "no job job_nothere"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"sparsity\":0.5,"
         "\"allocation\":{\"method\":\"sensitivity\",\"from\":\"%s\","
         "\"min\":0.6}}",
         ck, id, "allocation.min", "target impossible"},
        {"{\"checkpoint\":\"%s\",\"method\":\"wanda\",\"sparsity\":0.5,"
         "\"allocation\":\"owl\",\"seed\":%s1}",
         ck, "", "calibration", "needs calibration"},
        {"{\"kind\":\"sensitivity\",\"checkpoint\":\"%s\",\"method\":"
         "\"magnitude\",\"evaluation\":{\"dataset\":\"%s\"},"
         "\"sensitivity\":{\"levels\":[0.5,1.5]}}",
         ck, ev, "sensitivity.levels[1]", "strictly between 0 and 1"},
        {"{\"kind\":\"sensitivity\",\"checkpoint\":\"%s\",\"method\":"
         "\"magnitude\",\"evaluation\":{\"dataset\":\"%s\"},"
         "\"sensitivity\":{\"levels\":[0,0.5]}}",
         ck, ev, "sensitivity.levels[0]", "strictly between 0 and 1"},
        {"{\"kind\":\"sensitivity\",\"checkpoint\":\"%s\",\"method\":"
         "\"magnitude\",\"sensitivity\":{\"levels\":[0.5]},\"seed\":%s1}",
         ck, "", "evaluation.dataset", "measures every run"},
        {"{\"kind\":\"sensitivity\",\"checkpoint\":\"%s\",\"method\":"
         "\"magnitude\",\"evaluation\":{\"dataset\":\"%s\"},"
         "\"sensitivity\":{\"levels\":[0.5]},\"overrides\":[{\"match\":"
         "\"q_proj\",\"sparsity\":0.1}]}",
         ck, ev, "overrides", "sets each group's sparsity"},
        {"{\"kind\":\"sensitivity\",\"checkpoint\":\"%s\",\"method\":"
         "\"magnitude\",\"evaluation\":{\"dataset\":\"%s\"}}",
         ck, ev, "sensitivity", "needs \"sensitivity\""},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\",\"evaluation\":"
         "{\"dataset\":\"%s\"},\"sensitivity\":{\"levels\":[0.5]}}",
         ck, ev, "sensitivity", "belongs to"},
        {"{\"kind\":\"sweep\",\"checkpoint\":\"%s\",\"method\":"
         "\"magnitude\",\"evaluation\":{\"dataset\":\"%s\"}}",
         ck, ev, "sweep", "a sweep job needs"},
        {"{\"kind\":\"survey\",\"checkpoint\":\"%s\",\"method\":"
         "\"magnitude\",\"evaluation\":{\"dataset\":\"%s\"}}",
         ck, ev, "kind", "not one of"},
        {"{\"kind\":\"sweep\",\"checkpoint\":\"%s\",\"method\":"
         "\"magnitude\",\"sweep\":{\"levels\":[0.5]},\"seed\":%s1}",
         ck, "", "evaluation.dataset", "a sweep job measures"},
        {"{\"kind\":\"sweep\",\"checkpoint\":\"%s\",\"method\":"
         "\"magnitude\",\"evaluation\":{\"dataset\":\"%s\"},"
         "\"sweep\":{\"methods\":[\"magnitude\",\"wanda\"]}}",
         ck, ev, "calibration", "sweep point 1 (wanda"},
        {"{\"kind\":\"sweep\",\"checkpoint\":\"%s\",\"method\":"
         "\"magnitude\",\"evaluation\":{\"dataset\":\"%s\"},"
         "\"sweep\":{\"levels\":[0.7,0.5]}}",
         ck, ev, "sweep.levels[1]", "must rise"},
        {"{\"kind\":\"sweep\",\"checkpoint\":\"%s\",\"method\":"
         "\"magnitude\",\"pattern\":\"2:4\",\"evaluation\":{"
         "\"dataset\":\"%s\"},\"sweep\":{\"levels\":[0.5]}}",
         ck, ev, "sweep.levels", "fixes the sparsity"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        snprintf(body, sizeof body, bad[k].fmt, bad[k].a, bad[k].b);
        th_post_json(&s, "/v1/jobs", body, &r);
        th_expect_problem(&r, 422, bad[k].field, bad[k].words);
        th_resp_free(&r);
    }
    job = succeeded(&s, busy, 120);
    json_decref(job);
    json_decref(tab);
    free(rep);
    free(dir);
    free(ck);
    free(bare);
    free(cal);
    free(ev);
    free(folder);
    free(file);
    free(calf);
    free(evf);
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
    // The stage within the block: one of the phases a block goes through.
    const char *stage = jstr(p, "stage");
    ck_assert_ptr_nonnull(stage);
    ck_assert_msg(
        strstr(" read forward statistics solve recon write ", stage) &&
            !strchr(stage, ' '),
        "stage %s", stage);
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

Suite *suite_api_jobs(void)
{
    Suite *s = suite_create("api_jobs");
    TCase *ok = tcase_create("routes");
    tcase_set_timeout(ok, 180);
    tcase_add_test(ok, test_idempotency_and_filters);
    tcase_add_test(ok, test_cancel_and_conflicts);
    tcase_add_test(ok, test_calibrated_job);
    tcase_add_loop_test(ok, test_cancel_inside_sparsegpt, 0, 2);
    suite_add_tcase(s, ok);
    TCase *sens = tcase_create("sensitivity");
    tcase_set_timeout(sens, 240);
    tcase_add_test(sens, test_sensitivity_job);
    suite_add_tcase(s, sens);
    TCase *bad = tcase_create("bad-input");
    tcase_set_timeout(bad, 120);
    tcase_add_test(bad, test_bad_jobs);
    suite_add_tcase(s, bad);
    return s;
}

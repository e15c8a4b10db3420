// test_jobs.c: the jobs module on its own: a real store in a temp dir, a
// real runner and engine, no HTTP. Submission and input resolution, the
// runner's life of a job, and the windows where a cancel can be lost.
#include "tests/helpers.h"

#include "common/sha256.h"
#include "common/util.h"
#include "jobs/jobs.h"
#include "jobs/jobs_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct fx {
    char *dir, *data;
    store *s;
    job_runner *r;
} fx;

static void fx_open(fx *f)
{
    memset(f, 0, sizeof *f);
    f->dir = th_tmpdir();
    f->data = th_path(f->dir, "data");
    sh_diag d;
    ck_assert_int_eq(store_open(&f->s, f->data, &d), 0);
}

static void fx_close(fx *f)
{
    job_runner_stop(f->r, 0);
    store_close(f->s);
    th_rmtree(f->dir);
    free(f->data);
    free(f->dir);
}

static void fx_start(fx *f)
{
    job_config cfg = {.workers = 1, .job_threads = 1, .max_attempts = 3};
    sh_diag d;
    ck_assert_int_eq(job_runner_start(&f->r, f->s, &cfg, &d), 0);
}

// Adds a file to the store as the upload does: a temp file, its digest.
static void file_of(fx *f, const char *name, const char *src, store_file *out,
                    char sha[65], char path[4096])
{
    ck_assert_int_eq(store_tmp_dir(f->s, "t-", path, 4096), 0);
    strcat(path, "/f");
    size_t n = 0;
    unsigned char *bytes = th_read_file(src, &n);
    th_write_file(path, bytes, n);
    free(bytes);
    ck_assert_int_eq(sh_sha256_file(path, sha), 0);
    *out = (store_file){.name = name, .path = path, .sha256 = sha, .bytes = n};
}

// A checkpoint of one safetensors file: two small F32 matrices.
static void add_checkpoint(fx *f, const char *id)
{
    float a[64 * 32], b[32 * 16];
    th_randn(a, 64 * 32, 1);
    th_randn(b, 32 * 16, 2);
    th_tensor ts[] = {{"fc1.weight", "F32", 2, {64, 32}, a},
                      {"fc2.weight", "F32", 2, {32, 16}, b}};
    char *src = th_path(f->dir, "model.safetensors");
    th_write_st(src, ts, 2, "{\"format\":\"pt\"}");
    store_file file;
    char sha[65], path[4096];
    file_of(f, "model.safetensors", src, &file, sha, path);
    json_t *info = json_pack("{s:s}", "format", "safetensors");
    sh_diag d;
    ck_assert_int_eq(
        store_checkpoint_add(f->s, id, "m", info, NULL, 0, &file, 1, &d), 0);
    json_decref(info);
    free(src);
}

static void add_dataset(fx *f, const char *id, const char *kind)
{
    float x[8 * 32];
    th_randn(x, 8 * 32, 3);
    th_tensor ts[] = {{"inputs", "F32", 2, {8, 32}, x}};
    char *src = th_path(f->dir, "data.safetensors");
    th_write_st(src, ts, 1, NULL);
    store_file file;
    char sha[65], path[4096];
    file_of(f, "data.safetensors", src, &file, sha, path);
    json_t *info = json_pack("{s:s}", "kind", kind);
    sh_diag d;
    ck_assert_int_eq(store_dataset_add(f->s, id, "d", info, &file, &d), 0);
    json_decref(info);
    free(src);
}

static const char *jstr(json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

static int submit(fx *f, const char *body, const char *key, json_t **job,
                  bool *created, sh_diag *d)
{
    json_t *b = json_loads(body, 0, NULL);
    ck_assert_ptr_nonnull(b);
    job_request req = {
        .body = b, .idem_key = key, .check_deadline = sh_time_mono() + 10};
    sh_diag_clear(d);
    int rc = job_submit(f->s, f->r, &req, job, created, d);
    json_decref(b);
    return rc;
}

// Polls a job until it has ended; returns it.
static json_t *wait_ended(fx *f, const char *id)
{
    double until = sh_time_mono() + 30;
    for (;;) {
        json_t *job = NULL;
        store_conn *c = store_conn_acquire(f->s);
        ck_assert_int_eq(store_job_get(c, id, &job), 0);
        store_conn_release(f->s, c);
        const char *st = jstr(job, "status");
        if (strcmp(st, "queued") != 0 && strcmp(st, "running") != 0)
            return job;
        json_decref(job);
        ck_assert_msg(sh_time_mono() < until, "job %s never ended", id);
        usleep(20000);
    }
}

static json_t *get_job(fx *f, const char *id)
{
    json_t *job = NULL;
    store_conn *c = store_conn_acquire(f->s);
    ck_assert_int_eq(store_job_get(c, id, &job), 0);
    store_conn_release(f->s, c);
    return job;
}

// --- inputs: resolved once, the same for submission and run

START_TEST(test_inputs_open_resolves_every_input)
{
    fx f;
    fx_open(&f);
    add_checkpoint(&f, "ck_a");
    add_dataset(&f, "ds_a", "inputs");
    job_inputs in;
    sh_diag d;
    job_names cal = {.calibration = "ds_a"};
    ck_assert_int_eq(job_inputs_open(&in, f.s, "ck_a", &cal, &d), 0);
    ck_assert_uint_eq(eng_model_file_count(in.model), 1);
    ck_assert_uint_eq(eng_model_tensor_count(in.model), 2);
    ck_assert_uint_eq(strlen(in.model_sha[0]), 64);
    ck_assert(sh_path_exists(in.calibration.path));
    ck_assert_str_eq(in.calibration.kind, "inputs");
    ck_assert_str_eq(in.evaluation.path, "");
    char blob[4096];
    store_blob_path(f.s, in.model_sha[0], blob, sizeof blob);
    ck_assert(sh_path_exists(blob));
    job_inputs_close(&in);
    job_inputs_close(&in); // twice is harmless
    fx_close(&f);
}
END_TEST

START_TEST(test_inputs_open_names_what_is_missing)
{
    fx f;
    fx_open(&f);
    add_checkpoint(&f, "ck_a");
    job_inputs in;
    sh_diag d;
    job_names none = {0}, ev = {.evaluation = "ds_none"};
    ck_assert_int_eq(job_inputs_open(&in, f.s, "ck_none", &none, &d),
                     SH_ENOTFOUND);
    ck_assert_str_eq(d.field, "checkpoint");
    ck_assert_ptr_null(in.model);
    ck_assert_int_eq(job_inputs_open(&in, f.s, "ck_a", &ev, &d), SH_ENOTFOUND);
    ck_assert_str_eq(d.field, "evaluation.dataset");
    ck_assert_ptr_nonnull(strstr(d.msg, "ds_none"));
    ck_assert_ptr_null(in.model); // closed again on failure
    // A movement job's base is a checkpoint too, named when missing.
    job_names base = {.base = "ck_gone"};
    ck_assert_int_eq(job_inputs_open(&in, f.s, "ck_a", &base, &d),
                     SH_ENOTFOUND);
    ck_assert_str_eq(d.field, "base");
    ck_assert_ptr_nonnull(strstr(d.msg, "ck_gone"));
    ck_assert_ptr_null(in.model);
    fx_close(&f);
}
END_TEST

// --- submission: validation, the record, idempotency

START_TEST(test_submit_records_a_queued_job)
{
    fx f;
    fx_open(&f);
    add_checkpoint(&f, "ck_a");
    json_t *job = NULL;
    bool created = false;
    sh_diag d;
    ck_assert_int_eq(submit(&f,
                            "{\"checkpoint\":\"ck_a\",\"method\":"
                            "\"magnitude\",\"sparsity\":0.5}",
                            "k1", &job, &created, &d),
                     0);
    ck_assert(created);
    ck_assert_str_eq(jstr(job, "status"), "queued");
    ck_assert_str_eq(jstr(job, "checkpoint"), "ck_a");
    // Defaults are filled in and echoed.
    ck_assert_str_eq(jstr(json_object_get(job, "spec"), "pattern"),
                     "unstructured");
    char id[64];
    snprintf(id, sizeof id, "%s", jstr(job, "id"));
    json_decref(job);
    // The same key and body: the same job, not a second one.
    ck_assert_int_eq(submit(&f,
                            "{\"sparsity\":0.5,\"method\":\"magnitude\","
                            "\"checkpoint\":\"ck_a\"}",
                            "k1", &job, &created, &d),
                     0);
    ck_assert(!created);
    ck_assert_str_eq(jstr(job, "id"), id);
    json_decref(job);
    // The same key with another body: a conflict naming the header.
    ck_assert_int_eq(submit(&f,
                            "{\"checkpoint\":\"ck_a\",\"method\":"
                            "\"magnitude\",\"sparsity\":0.4}",
                            "k1", &job, &created, &d),
                     SH_ECONFLICT);
    ck_assert_str_eq(d.field, "Idempotency-Key");
    fx_close(&f);
}
END_TEST

// Bad specs and missing inputs: SH_ESPEC naming the field, nothing kept.
START_TEST(test_submit_refuses_and_records_nothing)
{
    fx f;
    fx_open(&f);
    add_checkpoint(&f, "ck_a");
    add_dataset(&f, "ds_t", "tokens");
    struct {
        const char *body, *field;
    } cases[] = {
        {"{\"method\":\"magnitude\"}", "checkpoint"},
        {"{\"checkpoint\":\"ck_b\",\"method\":\"magnitude\"}", "checkpoint"},
        {"{\"checkpoint\":\"ck_a\",\"method\":\"magnitude\",\"sparsity\":2}",
         "sparsity"},
        {"{\"checkpoint\":\"ck_a\",\"method\":\"magnitude\",\"evaluation\":"
         "{\"dataset\":\"ds_none\"}}",
         "evaluation.dataset"},
        {"{\"checkpoint\":\"ck_a\",\"method\":\"magnitude\",\"targets\":"
         "[\"nothing\"]}",
         "targets"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *job = NULL;
        bool created = false;
        sh_diag d;
        ck_assert_int_eq(submit(&f, cases[i].body, NULL, &job, &created, &d),
                         SH_ESPEC);
        ck_assert_str_eq(d.field, cases[i].field);
        ck_assert_ptr_null(job);
    }
    store_conn *c = store_conn_acquire(f.s);
    int64_t counts[STORE_JOB_STATUS_COUNT];
    ck_assert_int_eq(store_job_counts(c, counts), 0);
    store_conn_release(f.s, c);
    for (int i = 0; i < STORE_JOB_STATUS_COUNT; i++)
        ck_assert_int_eq(counts[i], 0);
    fx_close(&f);
}
END_TEST

// --- the runner

START_TEST(test_runner_runs_a_submitted_job)
{
    fx f;
    fx_open(&f);
    fx_start(&f);
    add_checkpoint(&f, "ck_a");
    json_t *job = NULL;
    bool created;
    sh_diag d;
    ck_assert_int_eq(submit(&f,
                            "{\"checkpoint\":\"ck_a\",\"method\":"
                            "\"magnitude\",\"sparsity\":0.5}",
                            NULL, &job, &created, &d),
                     0);
    json_t *done = wait_ended(&f, jstr(job, "id"));
    ck_assert_str_eq(jstr(done, "status"), "succeeded");
    ck_assert(json_is_null(json_object_get(done, "error")));
    json_t *files = json_object_get(json_object_get(done, "artifact"), "files");
    ck_assert_uint_ge(json_array_size(files), 2); // weights + manifest
    json_decref(done);
    json_decref(job);
    fx_close(&f);
}
END_TEST

// A job whose checkpoint vanished after submission fails with the code
// and the words, which the store keeps as they are.
START_TEST(test_runner_fails_a_job_whose_inputs_went)
{
    fx f;
    fx_open(&f);
    add_checkpoint(&f, "ck_a");
    json_t *job = NULL;
    bool created;
    sh_diag d;
    ck_assert_int_eq(submit(&f,
                            "{\"checkpoint\":\"ck_a\",\"method\":"
                            "\"magnitude\"}",
                            NULL, &job, &created, &d),
                     0);
    // Delete the checkpoint's files behind the store's back.
    store_conn *c = store_conn_acquire(f.s);
    json_t *shas = NULL;
    ck_assert_int_eq(store_files_of(c, "ck_a", &shas), 0);
    store_conn_release(f.s, c);
    char blob[4096];
    store_blob_path(f.s, jstr(json_array_get(shas, 0), "sha256"), blob,
                    sizeof blob);
    ck_assert_int_eq(unlink(blob), 0);
    json_decref(shas);
    fx_start(&f);
    json_t *done = wait_ended(&f, jstr(job, "id"));
    ck_assert_str_eq(jstr(done, "status"), "failed");
    json_t *err = json_object_get(done, "error");
    ck_assert_str_eq(jstr(err, "code"), "SH_EIO");
    ck_assert_ptr_null(strstr(jstr(err, "message"), f.data)); // no paths
    json_decref(done);
    json_decref(job);
    fx_close(&f);
}
END_TEST

// --- cancels that used to be lost (issue 10, defect 5)

// The API's cancel: the row first, then the runner.
static void cancel_as_api(job_runner *r, store *s, const char *id)
{
    int rc = store_job_cancel(s, id);
    ck_assert_int_eq(rc, SH_EBUSY); // running: the runner finishes it
    job_runner_cancel(r, id);
}

typedef struct window {
    store *s;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool listed, go;
} window;

static void cancel_on_claim(void *ctx, job_runner *r, const char *id)
{
    window *w = ctx;
    cancel_as_api(r, w->s, id); // not in the running list yet
}

// A cancel between the claim and the running list.
START_TEST(test_cancel_between_claim_and_list_is_kept)
{
    fx f;
    fx_open(&f);
    add_checkpoint(&f, "ck_a");
    fx_start(&f);
    window w = {.s = f.s};
    job_runner_set_hooks(
        f.r, &(job_runner_hooks){.claimed = cancel_on_claim, .ctx = &w});
    json_t *job = NULL;
    bool created;
    sh_diag d;
    ck_assert_int_eq(submit(&f,
                            "{\"checkpoint\":\"ck_a\",\"method\":"
                            "\"magnitude\"}",
                            NULL, &job, &created, &d),
                     0);
    json_t *done = wait_ended(&f, jstr(job, "id"));
    ck_assert_str_eq(jstr(done, "status"), "cancelled");
    ck_assert_str_eq(jstr(json_object_get(done, "error"), "code"),
                     "SH_ECANCELED");
    json_decref(done);
    json_decref(job);
    fx_close(&f);
}
END_TEST

// Cancels as the API does once the job is listed, then holds it until the
// stop has begun.
static void cancel_then_wait(void *ctx, job_runner *r, const char *id)
{
    window *w = ctx;
    cancel_as_api(r, w->s, id);
    pthread_mutex_lock(&w->mu);
    w->listed = true;
    pthread_cond_broadcast(&w->cv);
    while (!w->go)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

static void *stop_main(void *arg)
{
    job_runner_stop(arg, 0);
    return NULL;
}

// A shutdown does not turn a user's cancel into a requeue.
START_TEST(test_shutdown_keeps_a_users_cancel)
{
    fx f;
    fx_open(&f);
    add_checkpoint(&f, "ck_a");
    fx_start(&f);
    window w = {.s = f.s};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    job_runner_set_hooks(
        f.r, &(job_runner_hooks){.listed = cancel_then_wait, .ctx = &w});
    json_t *job = NULL;
    bool created;
    sh_diag d;
    ck_assert_int_eq(submit(&f,
                            "{\"checkpoint\":\"ck_a\",\"method\":"
                            "\"magnitude\"}",
                            NULL, &job, &created, &d),
                     0);
    pthread_mutex_lock(&w.mu);
    while (!w.listed)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    // Stop with no grace while the cancelled job is in the list.
    job_runner *r = f.r;
    f.r = NULL;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, stop_main, r), 0);
    for (;;) {
        pthread_mutex_lock(&r->mu);
        bool stopping = r->stopping;
        pthread_mutex_unlock(&r->mu);
        if (stopping)
            break;
        usleep(1000);
    }
    usleep(200000); // the stop marks the running jobs right after
    pthread_mutex_lock(&w.mu);
    w.go = true;
    pthread_cond_broadcast(&w.cv);
    pthread_mutex_unlock(&w.mu);
    pthread_join(t, NULL);
    json_t *done = get_job(&f, jstr(job, "id"));
    ck_assert_str_eq(jstr(done, "status"), "cancelled");
    // The user's cancel, not the stop's: the runner kept it.
    ck_assert_str_eq(jstr(json_object_get(done, "error"), "message"),
                     "cancelled while running");
    json_decref(done);
    // A restart does not run it again.
    fx_start(&f);
    usleep(300000);
    done = get_job(&f, jstr(job, "id"));
    ck_assert_str_eq(jstr(done, "status"), "cancelled");
    json_decref(done);
    json_decref(job);
    fx_close(&f);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
}
END_TEST

Suite *suite_jobs(void)
{
    Suite *s = suite_create("jobs");
    TCase *tc = tcase_create("inputs");
    tcase_add_test(tc, test_inputs_open_resolves_every_input);
    tcase_add_test(tc, test_inputs_open_names_what_is_missing);
    suite_add_tcase(s, tc);
    tc = tcase_create("submit");
    tcase_add_test(tc, test_submit_records_a_queued_job);
    tcase_add_test(tc, test_submit_refuses_and_records_nothing);
    suite_add_tcase(s, tc);
    tc = tcase_create("runner");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_runner_runs_a_submitted_job);
    tcase_add_test(tc, test_runner_fails_a_job_whose_inputs_went);
    tcase_add_test(tc, test_cancel_between_claim_and_list_is_kept);
    tcase_add_test(tc, test_shutdown_keeps_a_users_cancel);
    suite_add_tcase(s, tc);
    return s;
}

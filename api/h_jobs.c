// h_jobs.c: submitting, reading, cancelling and deleting jobs.
#include "api/api_int.h"

#include "common/sha256.h"
#include "common/util.h"
#include "engine/engine.h"
#include "engine/io/dataset.h"
#include "engine/io/model.h"
#include "engine/spec/spec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Opens a checkpoint's model from its blobs (headers only) to check a spec
// against it.
static int open_checkpoint(api_request *r, store_conn *c, const char *id,
                           eng_model **m, sh_diag *d)
{
    json_t *files = NULL;
    int rc = store_files_of(c, id, &files);
    if (rc != 0)
        return sh_diag_set(d, rc == SH_ENOTFOUND ? SH_ESPEC : rc, "checkpoint",
                           "checkpoint %s does not exist", id);
    size_t n = json_array_size(files);
    eng_file_ref *refs = calloc(n, sizeof *refs);
    char(*paths)[4096] = calloc(n, sizeof *paths);
    if (refs && paths) {
        for (size_t i = 0; i < n; i++) {
            json_t *f = json_array_get(files, i);
            store_blob_path(r->srv->s,
                            json_string_value(json_object_get(f, "sha256")),
                            paths[i], sizeof paths[i]);
            refs[i] = (eng_file_ref){
                json_string_value(json_object_get(f, "name")), paths[i]};
        }
        rc = eng_model_open_files(m, refs, n, d);
    } else {
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    }
    free(refs);
    free(paths);
    json_decref(files);
    return rc;
}

// A dataset the spec names must exist and be of the kind the model takes.
static int check_dataset(store_conn *c, const char *id, const char *field,
                         const char *arch, const eng_model_needs *needs,
                         sh_diag *d)
{
    json_t *ds = NULL;
    int rc = store_dataset_get(c, id, &ds);
    if (rc == SH_ENOTFOUND)
        return sh_diag_set(d, SH_ESPEC, field,
                           "%s: dataset %s does not exist (upload it to "
                           "/v1/datasets first)",
                           field, id);
    const char *kind = json_string_value(json_object_get(ds, "kind"));
    const char *want = eng_dataset_kind_name(needs->dataset);
    if (rc == 0 && needs->runs && kind && strcmp(kind, want) != 0)
        rc = sh_diag_set(d, SH_ESPEC, field,
                         "%s: dataset %s holds \"%s\"; a %s model needs "
                         "\"%s\"",
                         field, id, kind, arch, want);
    json_decref(ds);
    return rc;
}

// Everything a spec needs beyond its own fields: the checkpoint exists and
// the spec fits its tensors; datasets exist and are what the model takes.
static int check_spec(api_request *r, const eng_spec *spec, sh_diag *d)
{
    store_conn *c = store_conn_acquire(r->srv->s);
    eng_model *m = NULL;
    eng_model_needs needs = {0};
    int rc = open_checkpoint(r, c, spec->checkpoint, &m, d);
    if (rc == 0)
        rc = eng_check(spec, m, sh_time_mono() + r->srv->cfg.check_timeout,
                       &needs, d);
    if (rc == 0 && spec->calib_dataset)
        rc = check_dataset(c, spec->calib_dataset, "calibration.dataset",
                           eng_model_arch(m), &needs, d);
    if (rc == 0 && spec->eval_dataset)
        rc = check_dataset(c, spec->eval_dataset, "evaluation.dataset",
                           eng_model_arch(m), &needs, d);
    store_conn_release(r->srv->s, c);
    eng_model_close(m);
    return rc;
}

// A job as the API shows it: live progress for a running one.
static json_t *job_view(api_request *r, json_t *job)
{
    const char *status = json_string_value(json_object_get(job, "status"));
    if (status && strcmp(status, "running") == 0) {
        json_t *p = job_runner_progress(
            r->srv->jobs, json_string_value(json_object_get(job, "id")));
        if (p)
            json_object_set_new(job, "progress", p);
    }
    return job;
}

// A submission between its parse (on the HTTP thread) and its check.
typedef struct submission {
    json_t *body;
    eng_spec spec;
} submission;

static void submission_free(void *p)
{
    submission *sub = p;
    eng_spec_deinit(&sub->spec);
    json_decref(sub->body);
    free(sub);
}

// On a check thread: the spec parsed (its regexes compiled) and checked
// against its checkpoint, then the insert.
static void job_create_checked(api_request *r)
{
    submission *sub = r->ctx;
    sh_diag d;
    sh_diag_clear(&d);
    int rc = eng_spec_parse(&sub->spec, sub->body, &d);
    if (rc == 0 && !sub->spec.checkpoint)
        rc = sh_diag_set(&d, SH_ESPEC, "checkpoint",
                         "checkpoint is required (a ck_... id)");
    if (rc == 0)
        rc = check_spec(r, &sub->spec, &d);
    if (rc != 0) {
        api_respond_error(r, rc, &d);
        return;
    }
    // Idempotency: the key is kept with a digest of the request body.
    const char *key = api_header(r, "Idempotency-Key");
    char body_sha[SH_SHA256_HEX] = "";
    char *canon = json_dumps(sub->body, JSON_COMPACT | JSON_SORT_KEYS);
    sh_sha256 h;
    if (canon && sh_sha256_init(&h) == 0) {
        sh_sha256_update(&h, canon, strlen(canon));
        sh_sha256_final(&h, body_sha);
        sh_sha256_deinit(&h);
    }
    free(canon);
    char id[48];
    sh_id_new(id, sizeof id, "job_");
    json_t *echo = eng_spec_to_json(&sub->spec);
    store_job_new nj = {.id = id,
                        .checkpoint = sub->spec.checkpoint,
                        .calibration = sub->spec.calib_dataset,
                        .evaluation = sub->spec.eval_dataset,
                        .spec = echo,
                        .idem_key = key,
                        .body_sha256 = body_sha};
    store_conn *c = store_conn_acquire(r->srv->s);
    json_t *job = NULL;
    bool created = false;
    rc = store_job_add(c, &nj, &job, &created, &d);
    store_conn_release(r->srv->s, c);
    json_decref(echo);
    if (rc == SH_ENOTFOUND)
        rc = d.code = SH_ESPEC; // a dataset or checkpoint went away just now
    if (rc != 0) {
        api_respond_error(r, rc, &d);
        return;
    }
    if (created)
        job_runner_wake(r->srv->jobs);
    char location[128];
    sh_strlcpy(r->job, sizeof r->job,
               json_string_value(json_object_get(job, "id")));
    snprintf(location, sizeof location, "/v1/jobs/%s", r->job);
    struct MHD_Response *resp = api_json_response(r, job_view(r, job));
    if (!resp) {
        api_respond_error(r, SH_ENOMEM, NULL);
        return;
    }
    MHD_add_response_header(resp, "Location", location);
    if (!created)
        MHD_add_response_header(resp, "Idempotent-Replayed", "true");
    api_respond(r, 202, resp);
}

void api_h_job_create(api_request *r)
{
    if (atomic_load(&r->srv->draining)) {
        api_respond_problem(r, 503, "shutting-down", "Shutting down", NULL,
                            "the service is stopping; submit again later");
        return;
    }
    json_error_t je;
    json_t *body =
        r->body ? json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &je)
                : NULL;
    if (!body) {
        api_respond_problem(r, 400, "malformed-json", "Malformed JSON", NULL,
                            "the body is not valid JSON: %s",
                            r->body ? je.text : "empty body");
        return;
    }
    const char *key = api_header(r, "Idempotency-Key");
    if (key && (strlen(key) == 0 || strlen(key) > 255)) {
        json_decref(body);
        api_respond_problem(r, 422, "invalid-header", "Invalid header",
                            "Idempotency-Key",
                            "Idempotency-Key must be 1 to 255 characters");
        return;
    }
    // The rest costs what the spec makes it cost (up to 192 regexes to
    // compile, then to match against every tensor): a check thread's.
    submission *sub = calloc(1, sizeof *sub);
    if (!sub) {
        json_decref(body);
        api_respond_error(r, SH_ENOMEM, NULL);
        return;
    }
    sub->body = body;
    r->ctx = sub;
    r->ctx_free = submission_free;
    api_defer(r, job_create_checked);
}

static int get_job(api_request *r, json_t **job)
{
    store_conn *c = store_conn_acquire(r->srv->s);
    int rc = store_job_get(c, r->param[0], job);
    store_conn_release(r->srv->s, c);
    if (rc == SH_ENOTFOUND)
        api_respond_problem(r, 404, "not-found", "Not found", NULL, "no job %s",
                            r->param[0]);
    else if (rc != 0)
        api_respond_error(r, rc, NULL);
    return rc;
}

static uint64_t fnv(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    return h;
}

static api_cached_job *slot_of(api_server *a, const char *id)
{
    return &a->cache[fnv(id, strlen(id)) % API_JOB_CACHE];
}

// Copies a cached job out (the lock is not held while responding).
static bool cache_get(api_server *a, const char *id, char **body, size_t *len,
                      char etag[40])
{
    bool hit = false;
    pthread_mutex_lock(&a->cache_mu);
    api_cached_job *c = slot_of(a, id);
    if (c->body && strcmp(c->id, id) == 0 && (*body = malloc(c->len + 1))) {
        memcpy(*body, c->body, c->len + 1);
        *len = c->len;
        memcpy(etag, c->etag, 40);
        hit = true;
    }
    pthread_mutex_unlock(&a->cache_mu);
    return hit;
}

static void cache_put(api_server *a, const char *id, const char *body,
                      size_t len, const char *etag)
{
    char *copy = malloc(len + 1);
    if (!copy || strlen(id) >= sizeof a->cache[0].id) {
        free(copy);
        return;
    }
    memcpy(copy, body, len + 1);
    pthread_mutex_lock(&a->cache_mu);
    api_cached_job *c = slot_of(a, id);
    free(c->body);
    sh_strlcpy(c->id, sizeof c->id, id);
    sh_strlcpy(c->etag, sizeof c->etag, etag);
    c->body = copy;
    c->len = len;
    pthread_mutex_unlock(&a->cache_mu);
}

static void cache_drop(api_server *a, const char *id)
{
    pthread_mutex_lock(&a->cache_mu);
    api_cached_job *c = slot_of(a, id);
    if (c->body && strcmp(c->id, id) == 0) {
        free(c->body);
        c->body = NULL;
    }
    pthread_mutex_unlock(&a->cache_mu);
}

void api_h_job_get(api_request *r)
{
    char *text = NULL, etag[40];
    size_t n = 0;
    if (!cache_get(r->srv, r->param[0], &text, &n, etag)) {
        json_t *job = NULL;
        if (get_job(r, &job) != 0)
            return;
        const char *st = json_string_value(json_object_get(job, "status"));
        bool ended =
            st && strcmp(st, "queued") != 0 && strcmp(st, "running") != 0;
        text = json_dumps(job_view(r, job), JSON_COMPACT);
        json_decref(job);
        if (!text) {
            api_respond_error(r, SH_ENOMEM, NULL);
            return;
        }
        n = strlen(text);
        // The ETag is a digest of the representation: it changes exactly
        // when what a poller sees changes, live progress included.
        snprintf(etag, sizeof etag, "\"%016llx\"",
                 (unsigned long long)fnv(text, n));
        if (ended)
            cache_put(r->srv, r->param[0], text, n, etag);
    }
    const char *inm = api_header(r, MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (inm && (strstr(inm, etag) || strcmp(inm, "*") == 0)) {
        free(text);
        struct MHD_Response *resp =
            MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(resp, "ETag", etag);
        api_respond(r, 304, resp);
        return;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "ETag", etag);
    r->bytes_out += n;
    api_respond(r, 200, resp);
}

void api_h_job_list(api_request *r)
{
    int limit;
    int64_t cursor, next = 0;
    if (!api_page_args(r, &limit, &cursor))
        return;
    int status = -1;
    const char *st = api_query(r, "status");
    if (st) {
        store_job_status s;
        if (store_job_status_parse(st, &s) != 0) {
            api_respond_problem(r, 422, "invalid-query", "Invalid query",
                                "status",
                                "status must be one of queued, running, "
                                "succeeded, failed, cancelled");
            return;
        }
        status = (int)s;
    }
    store_conn *c = store_conn_acquire(r->srv->s);
    json_t *items = NULL;
    int rc = store_job_list(c, status, api_query(r, "checkpoint"), cursor,
                            limit, &items, &next);
    store_conn_release(r->srv->s, c);
    if (rc != 0) {
        api_respond_error(r, rc, NULL);
        return;
    }
    size_t i;
    json_t *job;
    json_array_foreach (items, i, job)
        job_view(r, job);
    api_respond_page(r, items, next);
}

void api_h_job_cancel(api_request *r)
{
    int rc = store_job_cancel(r->srv->s, r->param[0]);
    if (rc == SH_EBUSY)
        job_runner_cancel(r->srv->jobs, r->param[0]);
    if (rc == SH_ENOTFOUND) {
        api_respond_problem(r, 404, "not-found", "Not found", NULL, "no job %s",
                            r->param[0]);
        return;
    }
    if (rc == SH_ECONFLICT) {
        api_respond_problem(r, 409, "conflict", "Conflict", NULL,
                            "job %s has already ended", r->param[0]);
        return;
    }
    if (rc != 0 && rc != SH_EBUSY) {
        api_respond_error(r, rc, NULL);
        return;
    }
    json_t *job = NULL;
    if (get_job(r, &job) == 0)
        api_respond_json(r, 202, job_view(r, job));
}

void api_h_job_delete(api_request *r)
{
    sh_diag d;
    sh_diag_clear(&d);
    int rc = store_job_delete(r->srv->s, r->param[0], &d);
    cache_drop(r->srv, r->param[0]);
    if (rc != 0) {
        api_respond_error(r, rc, &d);
        return;
    }
    api_respond(r, 204,
                MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT));
}

void api_h_job_layers(api_request *r)
{
    json_t *job = NULL;
    if (get_job(r, &job) != 0)
        return;
    json_t *layers = json_object_get(json_object_get(job, "result"), "layers");
    if (!json_is_array(layers)) {
        api_respond_problem(r, 409, "no-result", "No result yet", NULL,
                            "job %s is %s; the per-layer table comes with "
                            "its result",
                            r->param[0],
                            json_string_value(json_object_get(job, "status")));
        json_decref(job);
        return;
    }
    json_incref(layers);
    json_decref(job);
    api_respond_slice(r, layers);
}

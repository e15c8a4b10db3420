// h_jobs.c: submitting, reading, cancelling and deleting jobs.
#include "api/api_int.h"

#include "common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *json_or_null(json_t *j) { return j ? j : json_null(); }

// A job as the API shows it: its error as a problem object, live progress
// for a running one.
static json_t *job_view(api_request *r, json_t *job)
{
    json_t *error = json_object_get(job, "error");
    if (json_is_object(error))
        json_object_set_new(job, "error", json_or_null(api_job_problem(error)));
    const char *status = json_string_value(json_object_get(job, "status"));
    if (status && strcmp(status, "running") == 0) {
        json_t *p = job_runner_progress(
            r->srv->jobs, json_string_value(json_object_get(job, "id")));
        if (p)
            json_object_set_new(job, "progress", p);
    }
    return job;
}

static void body_free(void *p) { json_decref(p); }

// On a check thread: job_submit parses the spec (compiling its regexes),
// checks it against its checkpoint and records it.
static void job_create_checked(api_request *r)
{
    sh_diag d;
    sh_diag_clear(&d);
    job_request req = {.body = r->ctx,
                       .idem_key = api_header(r, "Idempotency-Key"),
                       .check_deadline =
                           sh_time_mono() + r->srv->cfg.check_timeout};
    json_t *job = NULL;
    bool created = false;
    int rc = job_submit(r->srv->s, r->srv->jobs, &req, &job, &created, &d);
    if (rc != 0) {
        api_respond_error(r, rc, &d);
        return;
    }
    char location[128];
    sh_strlcpy(r->job, sizeof r->job,
               json_string_value(json_object_get(job, "id")));
    snprintf(location, sizeof location, "/v1/jobs/%s", r->job);
    struct MHD_Response *resp = api_json_response(r, job_view(r, job));
    if (!resp) {
        api_respond_error(r, SH_ENOMEM, NULL);
        return;
    }
    api_add_header(resp, "Location", location);
    if (!created)
        api_add_header(resp, "Idempotent-Replayed", "true");
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
    r->ctx = body;
    r->ctx_free = body_free;
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
        api_add_header(resp, "ETag", etag);
        api_respond(r, 304, resp);
        return;
    }
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        free(text);
    api_add_header(resp, "Content-Type", "application/json");
    api_add_header(resp, "ETag", etag);
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
    const char *kind = api_query(r, "kind");
    if (kind && strcmp(kind, "prune") != 0 &&
        strcmp(kind, "sensitivity") != 0 && strcmp(kind, "sweep") != 0) {
        api_respond_problem(r, 422, "invalid-query", "Invalid query", "kind",
                            "kind must be prune, sensitivity or sweep");
        return;
    }
    store_conn *c = store_conn_acquire(r->srv->s);
    json_t *items = NULL;
    int rc = store_job_list(c, status, api_query(r, "checkpoint"), kind, cursor,
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

// A sensitivity job's table: its result, once it has succeeded.
void api_h_job_sensitivity(api_request *r)
{
    json_t *job = NULL;
    if (get_job(r, &job) != 0)
        return;
    const char *kind = json_string_value(json_object_get(job, "kind"));
    const char *status = json_string_value(json_object_get(job, "status"));
    json_t *res = json_object_get(job, "result");
    if (!kind || strcmp(kind, "sensitivity") != 0)
        api_respond_problem(r, 404, "not-found", "Not found", NULL,
                            "job %s is a %s job; only a sensitivity job has "
                            "a sensitivity table",
                            r->param[0], kind ? kind : "prune");
    else if (!json_is_object(res))
        api_respond_problem(r, 409, "no-result", "No result yet", NULL,
                            "job %s is %s; the table comes when it succeeds",
                            r->param[0], status);
    else
        api_respond_json(r, 200, json_incref(res));
    json_decref(job);
}

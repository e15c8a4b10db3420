// respond.c: JSON and problem+json responses, the error-code table, and
// small request helpers.
#include "api/api_int.h"

#include "common/log.h"
#include "common/util.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// --- the one table from error codes to HTTP statuses

typedef struct status_row {
    unsigned status;
    const char *slug, *title;
} status_row;

static const status_row by_code[SH_ERR_COUNT] = {
    [-SH_OK] = {200, "ok", "OK"},
    [-SH_ENOMEM] = {503, "out-of-memory", "Out of memory"},
    [-SH_EIO] = {500, "io", "Input/output error"},
    [-SH_EINVAL] = {400, "bad-request", "Bad request"},
    [-SH_EFORMAT] = {422, "invalid-file", "Invalid file"},
    [-SH_EUNSUPPORTED] = {422, "unsupported", "Not supported"},
    [-SH_ENOTFOUND] = {404, "not-found", "Not found"},
    [-SH_ECONFLICT] = {409, "conflict", "Conflict"},
    [-SH_ECANCELED] = {409, "cancelled", "Cancelled"},
    [-SH_ETOOBIG] = {413, "too-large", "Too large"},
    [-SH_ESPEC] = {422, "invalid-spec", "Invalid job spec"},
    [-SH_ENUMERIC] = {422, "numerical", "Numerical failure"},
    [-SH_EBUSY] = {503, "busy", "Busy"},
    [-SH_EDB] = {500, "database", "Database error"},
    [-SH_EAUTH] = {401, "unauthorized", "Unauthorized"},
    [-SH_ESHUTDOWN] = {503, "shutting-down", "Shutting down"},
    [-SH_ENOSPC] = {507, "insufficient-storage", "Insufficient storage"},
    [-SH_EINTERRUPTED] = {500, "interrupted", "Interrupted too often"},
};
static_assert(sizeof by_code / sizeof by_code[0] == SH_ERR_COUNT,
              "one row per error code");

static const status_row *row_for(int code)
{
    if (code > 0 || code <= -SH_ERR_COUNT)
        return &by_code[-SH_EIO];
    return &by_code[-code];
}

unsigned api_status_for(int code) { return row_for(code)->status; }

json_t *api_job_problem(const json_t *error)
{
    int code = SH_EIO;
    sh_err_parse(json_string_value(json_object_get(error, "code")), &code);
    const status_row *row = row_for(code);
    const char *field = json_string_value(json_object_get(error, "field"));
    const char *msg = json_string_value(json_object_get(error, "message"));
    char type[128];
    snprintf(type, sizeof type, "urn:shears:problem:%s", row->slug);
    json_t *j = json_pack("{s:s, s:s, s:s}", "type", type, "title", row->title,
                          "detail", msg && msg[0] ? msg : sh_strerror(code));
    if (j && field && field[0])
        json_object_set_new(j, "field", json_string(field));
    return j;
}

// --- responses

void api_add_header(struct MHD_Response *resp, const char *name,
                    const char *value)
{
    if (resp)
        MHD_add_response_header(resp, name, value);
}

void api_respond(api_request *r, unsigned status, struct MHD_Response *resp)
{
    if (r->responded) { // a handler bug; never two responses
        if (resp)
            MHD_destroy_response(resp);
        return;
    }
    if (!resp) {
        // The response could not be made (out of memory): a bare 500 if
        // even that can be had, else none, and the connection closes.
        SH_WARN("cannot build a response", "request_id", r->id, "status",
                sh_log_num((char[32]){0}, status));
        resp = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        status = 500;
        if (!resp)
            return;
    }
    api_add_header(resp, "X-Request-Id", r->id);
    api_add_header(resp, "Cache-Control", "no-store");
    r->status = (int)status;
    r->responded = true;
    api_guard_phase(r, API_CONN_REPLY); // no deadline while it is sent
    MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
}

static void respond_text(api_request *r, unsigned status, const char *type,
                         char *text)
{
    size_t n = strlen(text);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return;
    }
    api_add_header(resp, "Content-Type", type);
    if (status == 503)
        api_add_header(resp, "Retry-After", "5");
    r->bytes_out += n;
    api_respond(r, status, resp);
}

void api_respond_json(api_request *r, unsigned status, json_t *j)
{
    struct MHD_Response *resp = api_json_response(r, j);
    if (!resp) {
        api_respond_problem(r, 500, "internal", "Internal error", NULL,
                            "cannot render the response");
        return;
    }
    api_respond(r, status, resp);
}

struct MHD_Response *api_json_response(api_request *r, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return NULL;
    }
    api_add_header(resp, "Content-Type", "application/json");
    r->bytes_out += n;
    return resp;
}

void api_respond_at(api_request *r, unsigned status, json_t *j,
                    const char *location)
{
    struct MHD_Response *resp = api_json_response(r, j);
    if (!resp) {
        api_respond_error(r, SH_ENOMEM, NULL);
        return;
    }
    api_add_header(resp, "Location", location);
    api_respond(r, status, resp);
}

void api_respond_problem(api_request *r, unsigned status, const char *slug,
                         const char *title, const char *field, const char *fmt,
                         ...)
{
    char detail[1024], type[128], dir[4200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    // No message names a server-side path: the data dir's go relative.
    snprintf(dir, sizeof dir, "%s/", r->srv->data_dir);
    sh_path_scrub(detail, sizeof detail, dir, "");
    snprintf(dir, sizeof dir, "%s/", store_data_dir(r->srv->s));
    sh_path_scrub(detail, sizeof detail, dir, "");
    snprintf(type, sizeof type, "urn:shears:problem:%s", slug);
    json_t *j =
        json_pack("{s:s, s:s, s:i, s:s, s:s}", "type", type, "title", title,
                  "status", (int)status, "detail", detail, "instance", r->path);
    if (field && field[0])
        json_object_set_new(j, "field", json_string(field));
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text)
        respond_text(r, status, "application/problem+json", text);
}

void api_respond_error(api_request *r, int code, const sh_diag *d)
{
    const status_row *row = row_for(code);
    const char *detail = d && d->msg[0] ? d->msg : sh_strerror(code);
    api_respond_problem(r, row->status, row->slug, row->title,
                        d ? d->field : NULL, "%s", detail);
}

// --- request helpers

const char *api_header(api_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *api_query(api_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

bool api_page_args(api_request *r, int *limit, int64_t *cursor)
{
    const char *l = api_query(r, "limit"), *c = api_query(r, "cursor");
    *limit = 20;
    *cursor = 0;
    if (l) {
        char *end = NULL;
        errno = 0;
        long v = strtol(l, &end, 10);
        if (errno || !*l || *end || v < 1 || v > 100) {
            api_respond_problem(r, 422, "invalid-query", "Invalid query",
                                "limit",
                                "limit must be an integer from 1 to 100");
            return false;
        }
        *limit = (int)v;
    }
    if (c) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(c, &end, 16);
        if (errno || !*c || *end || v <= 0) {
            api_respond_problem(r, 422, "invalid-query", "Invalid query",
                                "cursor",
                                "cursor is not one this service handed out");
            return false;
        }
        *cursor = v;
    }
    return true;
}

void api_respond_page(api_request *r, json_t *items, int64_t next)
{
    json_t *j = json_pack("{s:o}", "items", items);
    if (next > 0) {
        char c[32];
        snprintf(c, sizeof c, "%llx", (long long)next);
        json_object_set_new(j, "next_cursor", json_string(c));
    } else {
        json_object_set_new(j, "next_cursor", json_null());
    }
    api_respond_json(r, 200, j);
}

// server.c: the libmicrohttpd daemon and the life of a request: route,
// authenticate, collect or stream the body, dispatch, log.
//
// libmicrohttpd calls the access handler first with the headers, then once
// per body piece, then a last time with no data. A response can be queued
// on the first call or the last; an error found mid-body is answered on the
// last call, the rest of the body read and dropped.
#include "api/api_int.h"

#include "api/parse.h"

#include "common/log.h"
#include "common/util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool token_ok(api_request *r)
{
    const char *want = r->srv->cfg.token;
    if (!want || r->route->open)
        return true;
    const char *got = NULL;
    size_t n = 0;
    if (!api_bearer_token(api_header(r, MHD_HTTP_HEADER_AUTHORIZATION), &got,
                          &n))
        return false;
    return sh_consttime_eq(got, n, want, strlen(want));
}

// Accepts a client's X-Request-Id when it is short and plain, else makes
// one.
static void request_id(api_request *r)
{
    const char *h = api_header(r, "X-Request-Id");
    size_t n = h ? strlen(h) : 0;
    bool ok = n > 0 && n < sizeof r->id;
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)h[i]) || strchr("-_.:", h[i]);
    if (ok) {
        memcpy(r->id, h, n + 1);
        return;
    }
    unsigned char raw[12];
    sh_random_bytes(raw, sizeof raw);
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(r->id + 2 * i, 3, "%02x", raw[i]);
}

static api_request *request_new(api_server *srv, struct MHD_Connection *conn,
                                const char *method, const char *url)
{
    api_request *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->srv = srv;
    r->conn = conn;
    r->method = method;
    r->start = sh_time_mono();
    atomic_init(&r->defer_done, false);
    snprintf(r->path, sizeof r->path, "%s", url);
    request_id(r);
    return r;
}

// Called once, at the final call. A handler answers, or hands the work to
// a check thread (api_defer), which answers.
static void dispatch(api_request *r)
{
    r->dispatched = true;
    api_guard_phase(r, API_CONN_REPLY);
    if (r->route->body == API_BODY_STREAM) {
        r->route->upload->end(r);
    } else if (r->body_too_big) {
        api_respond_problem(r, 413, "too-large", "Request too large", NULL,
                            "the JSON body exceeds %u bytes", API_MAX_JSON);
    } else {
        r->route->handler(r);
    }
    if (!r->deferred && !r->responded)
        api_respond_problem(r, 500, "internal", "Internal error", NULL,
                            "the handler gave no response");
}

// A request head this service reads at most: libmicrohttpd answers heads
// beyond its per-connection memory with its own HTML 431; below that this
// limit answers first, as problem+json.
#define API_MAX_HEAD (64u << 10)
#define API_MAX_HEADERS 100

static bool head_ok(api_request *r)
{
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(
        r->conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    size_t bytes = info ? info->header_size : 0;
    int count = MHD_get_connection_values(r->conn, MHD_HEADER_KIND, NULL, NULL);
    if (bytes <= API_MAX_HEAD && count <= API_MAX_HEADERS)
        return true;
    api_respond_problem(r, 431, "headers-too-large",
                        "Request header fields too large", NULL,
                        "the request head has %d header fields in %zu bytes; "
                        "this service reads at most %d fields and %u bytes",
                        count, bytes, API_MAX_HEADERS, API_MAX_HEAD);
    return false;
}

// The first call: headers only. Returns false when a response was queued.
static bool first_call(api_request *r)
{
    if (!head_ok(r))
        return false;
    char allow[64];
    r->route =
        api_route_match(r->method, r->path, r->param, allow, sizeof allow);
    if (!r->route) {
        if (allow[0]) {
            // Answer as problem+json, with Allow.
            char detail[160];
            snprintf(detail, sizeof detail,
                     "%s is not served here; allowed: %s", r->method, allow);
            json_t *j = json_pack("{s:s, s:s, s:i, s:s, s:s}", "type",
                                  "urn:shears:problem:method-not-allowed",
                                  "title", "Method not allowed", "status", 405,
                                  "detail", detail, "instance", r->path);
            char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
            json_decref(j);
            struct MHD_Response *resp =
                text ? MHD_create_response_from_buffer(strlen(text), text,
                                                       MHD_RESPMEM_MUST_FREE)
                     : NULL;
            if (!resp)
                free(text);
            api_add_header(resp, "Allow", allow);
            api_add_header(resp, "Content-Type", "application/problem+json");
            api_respond(r, 405, resp);
        } else {
            api_respond_problem(r, 404, "not-found", "Not found", NULL,
                                "no route %s %s", r->method, r->path);
        }
        return false;
    }
    if (!token_ok(r)) {
        struct MHD_Response *resp;
        json_t *j = json_pack("{s:s, s:s, s:i, s:s, s:s}", "type",
                              "urn:shears:problem:unauthorized", "title",
                              "Unauthorized", "status", 401, "detail",
                              "this route needs Authorization: Bearer <token>",
                              "instance", r->path);
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        resp = text ? MHD_create_response_from_buffer(strlen(text), text,
                                                      MHD_RESPMEM_MUST_FREE)
                    : NULL;
        if (!resp)
            free(text);
        api_add_header(resp, "Content-Type", "application/problem+json");
        api_add_header(resp, "WWW-Authenticate", "Bearer realm=\"shears\"");
        api_respond(r, 401, resp);
        return false;
    }
    if (r->route->body == API_BODY_STREAM) {
        r->route->upload->begin(r);
        return !r->responded;
    }
    if (r->route->body == API_BODY_JSON) {
        const char *len = api_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (len && strtoull(len, NULL, 10) > API_MAX_JSON) {
            api_respond_problem(r, 413, "too-large", "Request too large", NULL,
                                "the JSON body exceeds %u bytes", API_MAX_JSON);
            return false;
        }
        const char *type = api_header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (!type || strncmp(type, "application/json", 16) != 0) {
            api_respond_problem(r, 415, "unsupported-media-type",
                                "Unsupported media type", NULL,
                                "send the body as application/json");
            return false;
        }
        return true;
    }
    return true;
}

static void body_piece(api_request *r, const char *data, size_t n)
{
    if (r->body_too_big)
        return;
    if (r->body_len + n > API_MAX_JSON) {
        r->body_too_big = true;
        return;
    }
    char *grown = realloc(r->body, r->body_len + n + 1);
    if (!grown) {
        r->body_too_big = true;
        return;
    }
    r->body = grown;
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn,
                                 const char *url, const char *method,
                                 const char *version, const char *data,
                                 size_t *size, void **con_cls)
{
    (void)version;
    api_server *srv = cls;
    api_request *r = *con_cls;
    if (!r) {
        if (!(r = request_new(srv, conn, method, url)))
            return MHD_NO;
        *con_cls = r;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        r->guard = ci ? ci->socket_context : NULL;
        api_guard_phase(r, API_CONN_BODY);
        // Errors found in the headers are answered now (an upload that
        // waits on Expect: 100-continue then sends nothing); the rest on
        // the final call: a response queued before libmicrohttpd has read
        // the whole request costs the connection its keep-alive.
        first_call(r);
        return MHD_YES;
    }
    if (*size > 0) {
        r->bytes_in += *size;
        size_t n = *size;
        *size = 0; // all consumed, kept or dropped
        api_guard_body(r, n);
        if (r->responded)
            return MHD_YES;
        if (r->route->body == API_BODY_STREAM)
            return r->route->upload->chunk(r, data, n) ? MHD_YES : MHD_NO;
        body_piece(r, data, n);
        return MHD_YES;
    }
    if (!r->responded && !r->dispatched)
        dispatch(r);
    // Suspended for a check thread, which answers; called again after the
    // resume, with its answer queued or not.
    if (r->deferred && !atomic_load(&r->defer_done))
        return MHD_YES;
    if (r->responded)
        return MHD_YES;
    // No response could be made (out of memory): closing the connection
    // is the answer left; waiting would call this again and again.
    SH_WARN("no response; closing the connection", "request_id", r->id);
    return MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode why)
{
    (void)conn;
    api_server *srv = cls;
    api_request *r = *con_cls;
    if (!r)
        return;
    if (r->route && r->route->body == API_BODY_STREAM)
        r->route->upload->abort(r);
    double secs = sh_time_mono() - r->start;
    const char *route = r->route ? r->route->pattern : "(none)";
    if (!r->job[0] && r->route && strncmp(route, "/v1/jobs/{id}", 13) == 0)
        sh_strlcpy(r->job, sizeof r->job, r->param[0]);
    if (srv->obs.request)
        srv->obs.request(srv->obs.ctx, r->method, route, r->status, secs,
                         r->bytes_in, r->bytes_out);
    char st[32], ms[32], bin[32], bout[32];
    SH_LOG(r->status >= 500 ? SH_LOG_WARN : SH_LOG_INFO, "request",
           "request_id", r->id, "method", r->method, "path", r->path, "route",
           route, "status", sh_log_num(st, r->status), "duration_ms",
           sh_log_num(ms, secs * 1000), "bytes_in",
           sh_log_num(bin, (double)r->bytes_in), "bytes_out",
           sh_log_num(bout, (double)r->bytes_out), "job",
           r->job[0] ? r->job : NULL, "aborted",
           why == MHD_REQUEST_TERMINATED_COMPLETED_OK ? NULL : "true");
    if (r->ctx_free)
        r->ctx_free(r->ctx);
    api_guard_request_done(srv, r->guard);
    free(r->body);
    free(r);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    SH_DEBUG("http", "detail", msg);
}

static void server_free(api_server *a)
{
    up_budget_deinit(&a->headers);
    pthread_mutex_destroy(&a->guard_mu);
    pthread_cond_destroy(&a->guard_cv);
    for (size_t i = 0; i < API_JOB_CACHE; i++)
        free(a->cache[i].body);
    pthread_mutex_destroy(&a->cache_mu);
    free(a);
}

int api_start(api_server **out, const api_config *cfg, store *s,
              job_runner *jobs, const api_observer *obs, sh_diag *d)
{
    api_server *a = calloc(1, sizeof *a);
    if (!a)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    a->cfg = *cfg;
    a->s = s;
    a->jobs = jobs;
    if (obs)
        a->obs = *obs;
    atomic_init(&a->draining, false);
    atomic_init(&a->cut_head, 0);
    atomic_init(&a->cut_body, 0);
    pthread_mutex_init(&a->cache_mu, NULL);
    pthread_mutex_init(&a->guard_mu, NULL);
    pthread_cond_init(&a->guard_cv, NULL);
    up_budget_init(&a->headers, cfg->max_header_memory ? cfg->max_header_memory
                                                       : UINT64_MAX);
    if (!realpath(store_data_dir(s), a->data_dir))
        sh_strlcpy(a->data_dir, sizeof a->data_dir, store_data_dir(s));

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    // poll(), not epoll: with a thread pool, libmicrohttpd 0.9.75's
    // MHD_quiesce_daemon removes the listen socket from each worker's epoll
    // set while the worker may already have (it checks was_quiesced too),
    // and panics on the ENOENT (seen as an abort at SIGTERM). With poll
    // the quiesce only signals the workers. poll has no FD_SETSIZE bound.
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, cfg->host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(cfg->port);
    } else if (inet_pton(AF_INET6, cfg->host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(cfg->port);
        flags |= MHD_USE_IPv6;
    } else {
        server_free(a);
        return sh_diag_set(d, SH_EINVAL, "listen",
                           "\"%s\" is not an IPv4 or IPv6 address", cfg->host);
    }
    int rc = api_defer_start(a, d);
    if (rc == 0)
        rc = api_guard_start(a, d);
    if (rc != 0) {
        api_defer_stop(a);
        server_free(a);
        return rc;
    }
    unsigned threads = cfg->threads > 0 ? (unsigned)cfg->threads : 4;
    // Per connection: the request head and the upload chunks (about half
    // of it) live here; libmicrohttpd zeroes it between requests, so it
    // is resident for every open connection.
    size_t conn_memory = 256u << 10;
    a->daemon = MHD_start_daemon(
        flags, cfg->port, NULL, NULL, on_access, a, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)(cfg->conn_timeout ? cfg->conn_timeout : 120),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, conn_memory,
        MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(cfg->max_conns ? cfg->max_conns : 1024),
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->max_conns_per_ip,
        MHD_OPTION_NOTIFY_CONNECTION, api_guard_notify, a,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL, MHD_OPTION_END);
    if (!a->daemon) {
        api_defer_stop(a);
        api_guard_stop(a);
        server_free(a);
        return sh_diag_set(d, SH_EIO, "listen",
                           "cannot listen on %s:%u (in use, or not allowed)",
                           cfg->host, cfg->port);
    }
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(a->daemon, MHD_DAEMON_INFO_BIND_PORT);
    a->port = info ? info->port : cfg->port;
    *out = a;
    return 0;
}

uint16_t api_port(const api_server *a) { return a->port; }

void api_set_draining(api_server *a) { atomic_store(&a->draining, true); }

void api_quiesce(api_server *a)
{
    if (a && a->daemon)
        MHD_quiesce_daemon(a->daemon);
}

void api_stop(api_server *a)
{
    if (!a)
        return;
    api_defer_stop(a); // resumes what it holds: the daemon still runs
    if (a->daemon)
        MHD_stop_daemon(a->daemon);
    api_guard_stop(a);
    server_free(a);
}

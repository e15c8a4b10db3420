// api_int.h: requests, routes and responses, shared by the API's files.
#ifndef API_API_INT_H
#define API_API_INT_H

#include "api/api.h"
#include "api/upload_int.h"

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

typedef struct api_request api_request;

typedef void (*api_handler)(api_request *r);

// A streamed request body (uploads). begin runs on the first call, with
// the headers: it may respond at once (415, 413, 422). chunk gets each
// piece; returning false closes the connection (a client that will not
// stop sending). end runs on the final call and responds. abort cleans up
// whatever the request leaves (also after end).
typedef struct api_upload_ops {
    void (*begin)(api_request *r);
    bool (*chunk)(api_request *r, const char *data, size_t n);
    void (*end)(api_request *r);
    void (*abort)(api_request *r);
} api_upload_ops;

typedef enum api_body {
    API_BODY_NONE,   // no body expected; handler runs at once
    API_BODY_JSON,   // a JSON body of at most API_MAX_JSON bytes
    API_BODY_STREAM, // upload ops
} api_body;

#define API_MAX_JSON (1u << 20)

typedef struct api_route {
    const char *method;
    const char *pattern; // "/v1/jobs/{id}", "{*}" takes the rest
    api_body body;
    api_handler handler;          // NONE and JSON bodies
    const api_upload_ops *upload; // STREAM bodies
    bool open;                    // no token needed
} api_route;

extern const api_route api_routes[];
extern const size_t api_route_count;

// Ended jobs never change (until deleted): their rendered JSON and ETag
// are kept, direct-mapped by id, so pollers of finished jobs cost a copy.
#define API_JOB_CACHE 256

typedef struct api_cached_job {
    char id[48];
    char etag[40];
    char *body;
    size_t len;
} api_cached_job;

// A connection as the guard sees it (guard.c): when its current request
// head began, how much body has arrived, and whether it is anyone's turn
// to wait. Lives from accept to close.
typedef enum api_conn_phase {
    API_CONN_HEAD,     // waiting for a whole request head
    API_CONN_BODY,     // receiving a body
    API_CONN_REPLY,    // the request is in; answering it
    API_CONN_DEFERRED, // suspended while a check thread works
} api_conn_phase;

typedef struct api_conn {
    struct api_conn *prev, *next;
    int fd;
    api_conn_phase phase;
    double since;             // when the phase (or rate window) began
    uint64_t body, body_mark; // body bytes in all, and at since
    bool cut;                 // shut down by the guard
} api_conn;

// Requests waiting for a check thread (defer.c).
#define API_DEFER_QUEUE 64

struct api_server {
    api_config cfg;
    pthread_mutex_t cache_mu;
    api_cached_job cache[API_JOB_CACHE];
    store *s;
    job_runner *jobs;
    api_observer obs;
    struct MHD_Daemon *daemon;
    atomic_bool draining;
    uint16_t port;
    char data_dir[4096]; // absolute; scrubbed from every message
    up_budget headers;   // safetensors header bytes across uploads
    // the check threads
    pthread_mutex_t defer_mu;
    pthread_cond_t defer_cv;
    api_request *defer_queue[API_DEFER_QUEUE];
    size_t defer_head, defer_len;
    pthread_t *defer_threads;
    int defer_n;
    bool defer_stop;
    // the connection guard
    pthread_mutex_t guard_mu;
    pthread_cond_t guard_cv;
    api_conn *conns;
    pthread_t reaper;
    bool reaper_running, guard_stop;
    atomic_uint_fast64_t cut_head, cut_body; // connections the guard closed
};

struct api_request {
    api_server *srv;
    struct MHD_Connection *conn;
    const char *method;
    char path[1024];
    const api_route *route;
    char param[2][1024]; // path parameters in pattern order
    char id[72];         // request id (X-Request-Id)
    char job[64];        // the job the request is about, for the log
    double start;
    int status;
    uint64_t bytes_in, bytes_out;
    bool responded;
    char *body; // API_BODY_JSON
    size_t body_len;
    bool body_too_big;
    void *upload;           // API_BODY_STREAM state
    api_conn *guard;        // the connection's guard record
    bool dispatched;        // the final call has run the handler
    api_handler deferred;   // runs on a check thread (api_defer)
    atomic_bool defer_done; // the check thread is done with it
    void *ctx;              // a handler's state across the defer
    void (*ctx_free)(void *ctx);
};

// --- off the HTTP threads (defer.c)

// Runs fn(r) on a check thread: the connection is suspended, fn responds,
// the connection resumes. For work whose cost depends on what a client
// uploaded (opening a model's headers, matching a spec against it,
// writing its rows). When every check thread is busy and the queue is
// full, responds 503 instead. Call from a handler, on the final call.
void api_defer(api_request *r, api_handler fn);

int api_defer_start(api_server *a, sh_diag *d);
void api_defer_stop(api_server *a);

// --- the connection guard (guard.c)

// libmicrohttpd's connection notifications: a guard record per connection.
void api_guard_notify(void *cls, struct MHD_Connection *c, void **socket_ctx,
                      enum MHD_ConnectionNotificationCode code);

// Moves a request's connection to another phase (restarting its clock).
void api_guard_phase(api_request *r, api_conn_phase phase);

// Counts n body bytes.
void api_guard_body(api_request *r, uint64_t n);

// After a request: its connection waits for the next head.
void api_guard_request_done(api_server *a, api_conn *c);

// The reaper: every quarter second, shuts down connections whose head is
// late (head_timeout) or whose body falls below min_body_rate.
int api_guard_start(api_server *a, sh_diag *d);
void api_guard_stop(api_server *a);

// --- routing (routes.c)

// Finds the route for method and path; fills params. When the path exists
// with other methods, returns NULL and writes them into allow.
const api_route *api_route_match(const char *method, const char *path,
                                 char params[2][1024], char *allow,
                                 size_t allow_size);

// --- responses (respond.c); each queues at most one response

// Sends j (stolen) as application/json.
void api_respond_json(api_request *r, unsigned status, json_t *j);

// A JSON response for j (stolen) that the caller adds headers to before
// api_respond; counts its bytes on r. NULL when out of memory.
struct MHD_Response *api_json_response(api_request *r, json_t *j);

// Sends j (stolen) with a Location header: a created resource.
void api_respond_at(api_request *r, unsigned status, json_t *j,
                    const char *location);

// Sends a problem+json: slug becomes the type URN.
void api_respond_problem(api_request *r, unsigned status, const char *slug,
                         const char *title, const char *field, const char *fmt,
                         ...) __attribute__((format(printf, 6, 7)));

// Sends the problem for an error code and its diagnostic.
void api_respond_error(api_request *r, int code, const sh_diag *d);

// Queues a prepared response (taken over) with the common headers. resp
// may be NULL (an MHD_create_response_* that failed): then a bare 500
// goes out when one can be made; when not, nothing is queued and the
// access handler closes the connection.
void api_respond(api_request *r, unsigned status, struct MHD_Response *resp);

// MHD_add_response_header for a response that may be NULL (it is not
// NULL-safe); the NULL goes on to api_respond.
void api_add_header(struct MHD_Response *resp, const char *name,
                    const char *value);

// The HTTP status for an error code (one table).
unsigned api_status_for(int code);

// A job's error as the store keeps it ({code, field, message}, code an
// SH_E* name) as the problem object the API shows (type, title, detail,
// field), from the same table (new reference; NULL when out of memory).
json_t *api_job_problem(const json_t *error);

// --- request helpers

const char *api_header(api_request *r, const char *name);
const char *api_query(api_request *r, const char *name);

// Parses limit and cursor; responds 422 and returns false when invalid.
bool api_page_args(api_request *r, int *limit, int64_t *cursor);

// Pages through a JSON array (stolen) by position, as api_page_args says.
void api_respond_slice(api_request *r, json_t *all);

// Adds {"items": items, "next_cursor": ...} and responds 200.
void api_respond_page(api_request *r, json_t *items, int64_t next);

// The handlers (h_*.c) and upload ops (upload.c).
void api_h_healthz(api_request *r);
void api_h_readyz(api_request *r);
void api_h_openapi(api_request *r);
void api_h_metrics(api_request *r);
void api_h_dashboard(api_request *r);
void api_h_checkpoint_list(api_request *r);
void api_h_checkpoint_get(api_request *r);
void api_h_checkpoint_tensors(api_request *r);
void api_h_checkpoint_delete(api_request *r);
void api_h_dataset_list(api_request *r);
void api_h_dataset_get(api_request *r);
void api_h_dataset_delete(api_request *r);
void api_h_job_create(api_request *r);
void api_h_job_list(api_request *r);
void api_h_job_get(api_request *r);
void api_h_job_cancel(api_request *r);
void api_h_job_delete(api_request *r);
void api_h_job_layers(api_request *r);
void api_h_job_sensitivity(api_request *r);
void api_h_artifact_tar(api_request *r);
void api_h_artifact_file(api_request *r);

extern const api_upload_ops api_checkpoint_upload;
extern const api_upload_ops api_dataset_upload;

// Embedded files (assets.c).
extern const char api_openapi_yaml[];
extern const size_t api_openapi_yaml_len;
extern const char api_dashboard_html[];
extern const size_t api_dashboard_html_len;

#endif

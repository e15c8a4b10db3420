// api.h: the HTTP API on libmicrohttpd.
//
// Routes live in one table (routes.c) that openapi.yaml mirrors; a test
// holds the two together. Handlers are small: parse, validate, call one
// store/ or jobs/ function, render. No handler runs pruning work: jobs go
// to the runner's worker pool, and the only engine calls here are the
// cheap checks the CLI shares (the spec parser, the safetensors header
// check, opening a model's headers).
//
// Errors are RFC 9457 problem+json everywhere (404 for unknown routes, 405
// with Allow). With a token configured, every /v1 request needs
// `Authorization: Bearer <token>`; /healthz, /readyz, /metrics, / and
// /openapi.yaml stay open.
#ifndef API_API_H
#define API_API_H

#include "common/err.h"
#include "jobs/jobs.h"
#include "store/store.h"

#include <stdbool.h>
#include <stdint.h>

// The limits that keep one client from taking the server; serve.c gives
// every one a flag (README, "Security and limits").
typedef struct api_config {
    const char *host; // listen address ("127.0.0.1", "0.0.0.0", "::")
    uint16_t port;    // 0: an ephemeral port, see api_port()
    int threads;      // HTTP threads
    uint64_t max_upload;
    const char *token;          // NULL: no auth
    unsigned conn_timeout;      // seconds of silence before a connection closes
    unsigned max_conns;         // connections at once
    unsigned max_conns_per_ip;  // connections at once from one address
    double head_timeout;        // seconds to receive a whole request head
    uint64_t min_body_rate;     // bytes/s a body must keep up (0: no minimum)
    int check_threads;          // threads for checks off the HTTP threads
    double check_timeout;       // seconds a job spec's check may take
    uint64_t max_tensors;       // tensors in one checkpoint
    uint64_t max_header_memory; // safetensors header bytes across uploads
    uint64_t min_free;          // bytes /readyz wants free in the data dir
} api_config;

// What the API reports to metrics; all optional. Called from HTTP threads.
typedef struct api_observer {
    void *ctx;
    void (*request)(void *ctx, const char *method, const char *route,
                    int status, double seconds, uint64_t bytes_in,
                    uint64_t bytes_out);
    // Renders /metrics (text format); returns a malloc'd string.
    char *(*metrics)(void *ctx);
} api_observer;

typedef struct api_server api_server;

// Starts listening. The store and runner must outlive the server.
int api_start(api_server **out, const api_config *cfg, store *s,
              job_runner *jobs, const api_observer *obs, sh_diag *d);

// The port actually bound.
uint16_t api_port(const api_server *a);

// From now on /readyz answers 503 and new jobs are refused.
void api_set_draining(api_server *a);

// Stops accepting connections (in-flight requests finish).
void api_quiesce(api_server *a);

void api_stop(api_server *a);

#endif

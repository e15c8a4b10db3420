// h_misc.c: health, readiness, metrics and the OpenAPI document.
#include "api/api_int.h"

#include "common/util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void api_h_healthz(api_request *r)
{
    // Liveness stays trivial: no database, no disk.
    api_respond_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

void api_h_readyz(api_request *r)
{
    if (atomic_load(&r->srv->draining)) {
        api_respond_problem(r, 503, "shutting-down", "Not ready", NULL,
                            "the service is shutting down");
        return;
    }
    if (!store_ready(r->srv->s)) {
        api_respond_problem(r, 503, "not-ready", "Not ready", NULL,
                            "the database or the data dir is not usable");
        return;
    }
    uint64_t free_now = 0;
    if (r->srv->cfg.min_free && store_free_space(r->srv->s, &free_now) == 0 &&
        free_now < r->srv->cfg.min_free) {
        char a[32], b[32];
        sh_format_bytes(a, sizeof a, (double)free_now);
        sh_format_bytes(b, sizeof b, (double)r->srv->cfg.min_free);
        api_respond_problem(r, 503, "low-disk-space", "Not ready", NULL,
                            "the data dir has %s free, below --min-free %s: "
                            "delete jobs, checkpoints or datasets, or grow "
                            "the volume",
                            a, b);
        return;
    }
    store_ballast_restore(r->srv->s); // room again: keep some for deletes
    api_respond_json(r, 200, json_pack("{s:s}", "status", "ready"));
}

void api_h_openapi(api_request *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        api_openapi_yaml_len, (void *)api_openapi_yaml, MHD_RESPMEM_PERSISTENT);
    api_add_header(resp, "Content-Type", "application/yaml");
    r->bytes_out += api_openapi_yaml_len;
    api_respond(r, 200, resp);
}

// The HTTP layer's own series, after the service's.
static char *with_api_metrics(api_server *a, char *text)
{
    pthread_mutex_lock(&a->defer_mu);
    size_t waiting = a->defer_len;
    pthread_mutex_unlock(&a->defer_mu);
    pthread_mutex_lock(&a->headers.mu);
    uint64_t held = a->headers.used;
    pthread_mutex_unlock(&a->headers.mu);
    char *out = NULL;
    if (asprintf(&out,
                 "%s# HELP shears_connections_cut_total Connections the "
                 "guard closed: a head slower than --head-timeout, a body "
                 "slower than --min-body-rate.\n"
                 "# TYPE shears_connections_cut_total counter\n"
                 "shears_connections_cut_total{reason=\"head_timeout\"} "
                 "%llu\n"
                 "shears_connections_cut_total{reason=\"body_rate\"} %llu\n"
                 "# HELP shears_checks_waiting Uploads and job submissions "
                 "waiting for a check thread.\n"
                 "# TYPE shears_checks_waiting gauge\n"
                 "shears_checks_waiting %zu\n"
                 "# HELP shears_upload_header_bytes Safetensors header bytes "
                 "uploads hold now (--max-header-memory).\n"
                 "# TYPE shears_upload_header_bytes gauge\n"
                 "shears_upload_header_bytes %llu\n",
                 text, (unsigned long long)atomic_load(&a->cut_head),
                 (unsigned long long)atomic_load(&a->cut_body), waiting,
                 (unsigned long long)held) < 0)
        out = NULL;
    free(text);
    return out;
}

void api_h_metrics(api_request *r)
{
    char *text =
        r->srv->obs.metrics ? r->srv->obs.metrics(r->srv->obs.ctx) : strdup("");
    if (text)
        text = with_api_metrics(r->srv, text);
    if (!text) {
        api_respond_error(r, SH_ENOMEM, NULL);
        return;
    }
    size_t n = strlen(text);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        free(text);
    api_add_header(resp, "Content-Type",
                   "text/plain; version=0.0.4; charset=utf-8");
    r->bytes_out += n;
    api_respond(r, 200, resp);
}

void api_h_dashboard(api_request *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        api_dashboard_html_len, (void *)api_dashboard_html,
        MHD_RESPMEM_PERSISTENT);
    api_add_header(resp, "Content-Type", "text/html; charset=utf-8");
    api_add_header(resp, "Content-Security-Policy",
                   "default-src 'self'; script-src 'unsafe-inline'; "
                   "style-src 'unsafe-inline'; img-src data:");
    r->bytes_out += api_dashboard_html_len;
    api_respond(r, 200, resp);
}

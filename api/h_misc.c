// h_misc.c: health, readiness, metrics and the OpenAPI document.
#include "api/api_int.h"

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
    api_respond_json(r, 200, json_pack("{s:s}", "status", "ready"));
}

void api_h_openapi(api_request *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        api_openapi_yaml_len, (void *)api_openapi_yaml, MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(resp, "Content-Type", "application/yaml");
    r->bytes_out += api_openapi_yaml_len;
    api_respond(r, 200, resp);
}

void api_h_metrics(api_request *r)
{
    char *text =
        r->srv->obs.metrics ? r->srv->obs.metrics(r->srv->obs.ctx) : strdup("");
    if (!text) {
        api_respond_error(r, SH_ENOMEM, NULL);
        return;
    }
    size_t n = strlen(text);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(resp, "Content-Type",
                            "text/plain; version=0.0.4; charset=utf-8");
    r->bytes_out += n;
    api_respond(r, 200, resp);
}

void api_h_dashboard(api_request *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        api_dashboard_html_len, (void *)api_dashboard_html,
        MHD_RESPMEM_PERSISTENT);
    MHD_add_response_header(resp, "Content-Type", "text/html; charset=utf-8");
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'self'; script-src 'unsafe-inline'; "
                            "style-src 'unsafe-inline'; img-src data:");
    r->bytes_out += api_dashboard_html_len;
    api_respond(r, 200, resp);
}

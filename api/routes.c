// routes.c: the route table, the one place that says what the API serves.
// openapi.yaml describes the same routes; tests/test_api.c checks that the
// two agree.
#include "api/api_int.h"

#include <stdio.h>
#include <string.h>

const api_route api_routes[] = {
    {"GET", "/healthz", API_BODY_NONE, api_h_healthz, NULL, true},
    {"GET", "/readyz", API_BODY_NONE, api_h_readyz, NULL, true},
    {"GET", "/metrics", API_BODY_NONE, api_h_metrics, NULL, true},
    {"GET", "/openapi.yaml", API_BODY_NONE, api_h_openapi, NULL, true},
    {"GET", "/", API_BODY_NONE, api_h_dashboard, NULL, true},

    {"POST", "/v1/checkpoints", API_BODY_STREAM, NULL, &api_checkpoint_upload,
     false},
    {"GET", "/v1/checkpoints", API_BODY_NONE, api_h_checkpoint_list, NULL,
     false},
    {"GET", "/v1/checkpoints/{id}", API_BODY_NONE, api_h_checkpoint_get, NULL,
     false},
    {"DELETE", "/v1/checkpoints/{id}", API_BODY_NONE, api_h_checkpoint_delete,
     NULL, false},
    {"GET", "/v1/checkpoints/{id}/tensors", API_BODY_NONE,
     api_h_checkpoint_tensors, NULL, false},

    {"POST", "/v1/datasets", API_BODY_STREAM, NULL, &api_dataset_upload, false},
    {"GET", "/v1/datasets", API_BODY_NONE, api_h_dataset_list, NULL, false},
    {"GET", "/v1/datasets/{id}", API_BODY_NONE, api_h_dataset_get, NULL, false},
    {"DELETE", "/v1/datasets/{id}", API_BODY_NONE, api_h_dataset_delete, NULL,
     false},

    {"POST", "/v1/jobs", API_BODY_JSON, api_h_job_create, NULL, false},
    {"GET", "/v1/jobs", API_BODY_NONE, api_h_job_list, NULL, false},
    {"GET", "/v1/jobs/{id}", API_BODY_NONE, api_h_job_get, NULL, false},
    {"DELETE", "/v1/jobs/{id}", API_BODY_NONE, api_h_job_delete, NULL, false},
    {"POST", "/v1/jobs/{id}/cancel", API_BODY_NONE, api_h_job_cancel, NULL,
     false},
    {"GET", "/v1/jobs/{id}/layers", API_BODY_NONE, api_h_job_layers, NULL,
     false},
    {"GET", "/v1/jobs/{id}/sensitivity", API_BODY_NONE, api_h_job_sensitivity,
     NULL, false},
    {"GET", "/v1/jobs/{id}/artifact", API_BODY_NONE, api_h_artifact_tar, NULL,
     false},
    {"GET", "/v1/jobs/{id}/artifact/files/{*}", API_BODY_NONE,
     api_h_artifact_file, NULL, false},
};
const size_t api_route_count = sizeof api_routes / sizeof api_routes[0];

// Matches one pattern; params get the {…} segments in order.
static bool match(const char *pattern, const char *path, char params[2][1024])
{
    int np = 0;
    const char *p = pattern, *s = path;
    while (*p) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            bool rest = p[1] == '*';
            size_t n = rest ? strlen(s) : strcspn(s, "/");
            if (n == 0 || n >= 1024 || np == 2)
                return false;
            memcpy(params[np], s, n);
            params[np++][n] = '\0';
            s += n;
            p = close + 1;
            continue;
        }
        if (*p++ != *s++)
            return false;
    }
    return *s == '\0';
}

const api_route *api_route_match(const char *method, const char *path,
                                 char params[2][1024], char *allow,
                                 size_t allow_size)
{
    size_t used = 0;
    allow[0] = '\0';
    for (size_t i = 0; i < api_route_count; i++) {
        char tmp[2][1024];
        if (!match(api_routes[i].pattern, path, tmp))
            continue;
        if (strcmp(api_routes[i].method, method) == 0 ||
            (strcmp(method, "HEAD") == 0 &&
             strcmp(api_routes[i].method, "GET") == 0)) {
            memcpy(params, tmp, sizeof tmp);
            return &api_routes[i];
        }
        if (!strstr(allow, api_routes[i].method))
            used += (size_t)snprintf(allow + used, allow_size - used, "%s%s",
                                     used ? ", " : "", api_routes[i].method);
        if (used >= allow_size)
            used = allow_size - 1;
    }
    return NULL;
}

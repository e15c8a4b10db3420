// metrics.h: counters and histograms for /metrics (Prometheus text format).
//
//   shears_http_requests_total{method,route,status}
//   shears_http_request_duration_seconds{route}       histogram
//   shears_http_bytes_total{direction="in"|"out"}     uploaded / served
//   shears_jobs{state}                                jobs by state (gauge)
//   shears_job_duration_seconds{method,status}        histogram
//   shears_queue_depth, shears_workers_busy, shears_workers
//   shears_up, shears_build_info{version}
//
// Routes are the route table's patterns, so labels stay few. Thread-safe.
#ifndef SVC_METRICS_H
#define SVC_METRICS_H

#include "engine/engine.h"
#include "jobs/jobs.h"
#include "store/store.h"

#include <stdint.h>

typedef struct svc_metrics svc_metrics;

svc_metrics *svc_metrics_create(store *s);
void svc_metrics_destroy(svc_metrics *m);

// The runner to read busy workers from (set once it runs).
// The BLAS kernels and sgemm's speed, for shears_build_info.
void svc_metrics_set_blas(svc_metrics *m, const eng_blas_info *b);
void svc_metrics_set_runner(svc_metrics *m, job_runner *r);

// api_observer.request
void svc_metrics_request(void *ctx, const char *method, const char *route,
                         int status, double seconds, uint64_t bytes_in,
                         uint64_t bytes_out);

// job_end_fn
void svc_metrics_job(void *ctx, const char *method, store_job_status status,
                     double seconds);

// api_observer.metrics: the exposition text (malloc'd).
char *svc_metrics_render(void *ctx);

#endif

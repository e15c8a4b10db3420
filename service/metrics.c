// metrics.c: the collector behind /metrics.
#include "service/metrics.h"

#include "common/util.h"
#include "common/version.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double http_buckets[] = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
static const double job_buckets[] = {1,   5,   10,   30,   60,   120,
                                     300, 600, 1800, 3600, 7200, 21600};
#define HTTP_NB (sizeof http_buckets / sizeof http_buckets[0])
#define JOB_NB (sizeof job_buckets / sizeof job_buckets[0])
#define MAX_SERIES 512

typedef struct counter_row {
    char method[8], route[64];
    int status;
    uint64_t count;
} counter_row;

typedef struct hist_row {
    char a[64], b[16];    // labels: route, or method and status
    uint64_t buckets[16]; // cumulative on render; here per bucket
    uint64_t count;
    double sum;
} hist_row;

struct svc_metrics {
    pthread_mutex_t mu;
    store *s;
    job_runner *r;
    counter_row requests[MAX_SERIES];
    size_t nrequests;
    hist_row http[64];
    size_t nhttp;
    hist_row jobs[64];
    size_t njobs;
    uint64_t bytes_in, bytes_out;
    eng_blas_info blas; // measured at start-up
};

svc_metrics *svc_metrics_create(store *s)
{
    svc_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    pthread_mutex_init(&m->mu, NULL);
    m->s = s;
    return m;
}

void svc_metrics_destroy(svc_metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

void svc_metrics_set_blas(svc_metrics *m, const eng_blas_info *b)
{
    pthread_mutex_lock(&m->mu);
    m->blas = *b;
    pthread_mutex_unlock(&m->mu);
}

void svc_metrics_set_runner(svc_metrics *m, job_runner *r)
{
    pthread_mutex_lock(&m->mu);
    m->r = r;
    pthread_mutex_unlock(&m->mu);
}

static hist_row *hist_find(hist_row *rows, size_t *n, size_t cap, const char *a,
                           const char *b)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(rows[i].a, a) == 0 && strcmp(rows[i].b, b) == 0)
            return &rows[i];
    if (*n == cap)
        return NULL;
    hist_row *h = &rows[(*n)++];
    memset(h, 0, sizeof *h);
    snprintf(h->a, sizeof h->a, "%s", a);
    snprintf(h->b, sizeof h->b, "%s", b);
    return h;
}

static void observe(hist_row *h, const double *bounds, size_t nb, double v)
{
    size_t i = 0;
    while (i < nb && v > bounds[i])
        i++;
    h->buckets[i]++; // i == nb: only +Inf
    h->count++;
    h->sum += v;
}

void svc_metrics_request(void *ctx, const char *method, const char *route,
                         int status, double seconds, uint64_t bytes_in,
                         uint64_t bytes_out)
{
    svc_metrics *m = ctx;
    pthread_mutex_lock(&m->mu);
    counter_row *c = NULL;
    for (size_t i = 0; i < m->nrequests && !c; i++)
        if (m->requests[i].status == status &&
            strcmp(m->requests[i].route, route) == 0 &&
            strcmp(m->requests[i].method, method) == 0)
            c = &m->requests[i];
    if (!c && m->nrequests < MAX_SERIES) {
        c = &m->requests[m->nrequests++];
        snprintf(c->method, sizeof c->method, "%s", method);
        snprintf(c->route, sizeof c->route, "%s", route);
        c->status = status;
        c->count = 0;
    }
    if (c)
        c->count++;
    hist_row *h =
        hist_find(m->http, &m->nhttp, SH_ARRAY_LEN(m->http), route, "");
    if (h)
        observe(h, http_buckets, HTTP_NB, seconds);
    m->bytes_in += bytes_in;
    m->bytes_out += bytes_out;
    pthread_mutex_unlock(&m->mu);
}

void svc_metrics_job(void *ctx, const char *method, store_job_status status,
                     double seconds)
{
    svc_metrics *m = ctx;
    pthread_mutex_lock(&m->mu);
    hist_row *h = hist_find(m->jobs, &m->njobs, SH_ARRAY_LEN(m->jobs),
                            method[0] ? method : "unknown",
                            store_job_status_name(status));
    if (h)
        observe(h, job_buckets, JOB_NB, seconds);
    pthread_mutex_unlock(&m->mu);
}

// --- rendering

typedef struct text {
    char *buf;
    size_t len, cap;
} text;

static void put(text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void put(text *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap * 2 + (size_t)(n > 0 ? n : 0);
        char *grown = realloc(t->buf, cap);
        if (!grown)
            return;
        t->buf = grown;
        t->cap = cap;
    }
}

// Label values are quoted; \, " and newline escaped.
static const char *esc(char *buf, size_t size, const char *s)
{
    size_t n = 0;
    for (; *s && n + 2 < size; s++) {
        if (*s == '\\' || *s == '"')
            buf[n++] = '\\', buf[n++] = *s;
        else if (*s == '\n')
            buf[n++] = '\\', buf[n++] = 'n';
        else
            buf[n++] = *s;
    }
    buf[n] = '\0';
    return buf;
}

static void render_hist(text *t, const char *name, const hist_row *h,
                        const char *labels, const double *bounds, size_t nb)
{
    uint64_t acc = 0;
    for (size_t i = 0; i < nb; i++) {
        acc += h->buckets[i];
        put(t, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels, bounds[i],
            (unsigned long long)acc);
    }
    acc += h->buckets[nb];
    put(t, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels,
        (unsigned long long)acc);
    size_t ll = strlen(labels);
    char trimmed[256];
    snprintf(trimmed, sizeof trimmed, "%.*s", ll ? (int)ll - 1 : 0, labels);
    put(t, "%s_sum{%s} %.6f\n", name, trimmed, h->sum);
    put(t, "%s_count{%s} %llu\n", name, trimmed, (unsigned long long)h->count);
}

char *svc_metrics_render(void *ctx)
{
    svc_metrics *m = ctx;
    text t = {malloc(16384), 0, 16384};
    if (!t.buf)
        return NULL;
    int64_t counts[STORE_JOB_STATUS_COUNT] = {0};
    store_conn *c = store_conn_acquire(m->s);
    store_job_counts(c, counts);
    store_conn_release(m->s, c);
    job_stats js = {0};
    pthread_mutex_lock(&m->mu);
    if (m->r)
        job_runner_stats(m->r, &js);
    char e1[160], e2[160], labels[400];
    put(&t, "# HELP shears_up Whether the service is up.\n"
            "# TYPE shears_up gauge\nshears_up 1\n");
    put(&t,
        "# HELP shears_build_info The running version, and the BLAS "
        "kernels it runs (the OpenBLAS core and how it was chosen).\n"
        "# TYPE shears_build_info gauge\n"
        "shears_build_info{version=\"%s\",blas_core=\"%s\","
        "blas_core_source=\"%s\"} 1\n"
        "# HELP shears_sgemm_gflops sgemm speed measured at start-up "
        "(1024^3, the job threads).\n"
        "# TYPE shears_sgemm_gflops gauge\nshears_sgemm_gflops %.1f\n",
        SH_VERSION, esc(e1, sizeof e1, m->blas.core ? m->blas.core : ""),
        esc(e2, sizeof e2, m->blas.source ? m->blas.source : ""),
        m->blas.sgemm_gflops);
    put(&t, "# HELP shears_http_requests_total HTTP requests by route and "
            "status.\n# TYPE shears_http_requests_total counter\n");
    for (size_t i = 0; i < m->nrequests; i++) {
        const counter_row *r = &m->requests[i];
        put(&t,
            "shears_http_requests_total{method=\"%s\",route=\"%s\","
            "status=\"%d\"} %llu\n",
            esc(e1, sizeof e1, r->method), esc(e2, sizeof e2, r->route),
            r->status, (unsigned long long)r->count);
    }
    put(&t, "# HELP shears_http_request_duration_seconds HTTP request "
            "duration by route.\n"
            "# TYPE shears_http_request_duration_seconds histogram\n");
    for (size_t i = 0; i < m->nhttp; i++) {
        snprintf(labels, sizeof labels, "route=\"%s\",",
                 esc(e1, sizeof e1, m->http[i].a));
        render_hist(&t, "shears_http_request_duration_seconds", &m->http[i],
                    labels, http_buckets, HTTP_NB);
    }
    put(&t,
        "# HELP shears_http_bytes_total Bytes received (uploads) and "
        "sent (downloads).\n# TYPE shears_http_bytes_total counter\n"
        "shears_http_bytes_total{direction=\"in\"} %llu\n"
        "shears_http_bytes_total{direction=\"out\"} %llu\n",
        (unsigned long long)m->bytes_in, (unsigned long long)m->bytes_out);
    put(&t, "# HELP shears_jobs Jobs by state.\n# TYPE shears_jobs gauge\n");
    for (int s = 0; s < STORE_JOB_STATUS_COUNT; s++)
        put(&t, "shears_jobs{state=\"%s\"} %lld\n",
            store_job_status_name((store_job_status)s), (long long)counts[s]);
    put(&t, "# HELP shears_job_duration_seconds Job run time by method and "
            "outcome.\n# TYPE shears_job_duration_seconds histogram\n");
    for (size_t i = 0; i < m->njobs; i++) {
        snprintf(labels, sizeof labels, "method=\"%s\",status=\"%s\",",
                 esc(e1, sizeof e1, m->jobs[i].a),
                 esc(e2, sizeof e2, m->jobs[i].b));
        render_hist(&t, "shears_job_duration_seconds", &m->jobs[i], labels,
                    job_buckets, JOB_NB);
    }
    put(&t,
        "# HELP shears_queue_depth Jobs waiting to run.\n"
        "# TYPE shears_queue_depth gauge\nshears_queue_depth %lld\n",
        (long long)counts[STORE_JOB_QUEUED]);
    put(&t,
        "# HELP shears_workers_busy Workers running a job.\n"
        "# TYPE shears_workers_busy gauge\nshears_workers_busy %d\n",
        js.busy);
    put(&t,
        "# HELP shears_workers Workers configured.\n"
        "# TYPE shears_workers gauge\nshears_workers %d\n",
        js.workers);
    pthread_mutex_unlock(&m->mu);
    return t.buf;
}

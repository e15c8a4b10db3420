// serve.c: `shears serve`: configuration, wiring, signals, shutdown.
//
// Every setting is a flag and a SHEARS_* variable (flags win). SIGTERM or
// SIGINT: readyz turns 503 and new jobs are refused, the listening socket
// closes, running jobs get --grace seconds to finish and are otherwise put
// back in the queue, the HTTP server stops, the database closes, exit 0.
#include "service/cli.h"

#include "api/api.h"
#include "common/log.h"
#include "common/util.h"
#include "common/version.h"
#include "engine/engine.h"
#include "jobs/jobs.h"
#include "service/metrics.h"
#include "store/store.h"

#include <errno.h>
#include <getopt.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct serve_config {
    char host[128];
    uint16_t port;
    const char *data_dir;
    int workers, http_threads, threads, max_attempts, check_threads;
    int max_conns, max_conns_per_ip;
    uint64_t max_upload, max_tensors, max_header_memory, min_body_rate;
    uint64_t min_free, ballast;
    const char *token_file;
    const char *port_file;
    double grace, idle_timeout, head_timeout, check_timeout;
    const char *log_level;
} serve_config;

typedef enum opt_kind {
    OPT_STRING,
    OPT_INT,
    OPT_COUNT, // an integer into a uint64_t
    OPT_BYTES,
    OPT_SECONDS,
    OPT_LISTEN
} opt_kind;

typedef struct opt_def {
    const char *flag, *env, *help;
    opt_kind kind;
    size_t offset; // in serve_config
    long min, max;
} opt_def;

#define OFF(f) offsetof(serve_config, f)
static const opt_def opt_defs[] = {
    {"listen", "SHEARS_LISTEN", "HOST:PORT to listen on (127.0.0.1:8080)",
     OPT_LISTEN, 0, 0, 0},
    {"data-dir", "SHEARS_DATA_DIR", "the data dir: database and blobs (./var)",
     OPT_STRING, OFF(data_dir), 0, 0},
    {"workers", "SHEARS_WORKERS", "jobs run at once (1)", OPT_INT, OFF(workers),
     1, 256},
    {"http-threads", "SHEARS_HTTP_THREADS", "HTTP threads (4)", OPT_INT,
     OFF(http_threads), 1, 256},
    {"threads", "SHEARS_THREADS",
     "BLAS threads per job (0: the CPUs this process may use / workers)",
     OPT_INT, OFF(threads), 0, 1024},
    {"max-upload", "SHEARS_MAX_UPLOAD",
     "largest upload in bytes, K/M/G/T suffixes allowed (64G)", OPT_BYTES,
     OFF(max_upload), 1, 0},
    {"token-file", "SHEARS_TOKEN_FILE",
     "file holding the API token; /v1 then needs Authorization: Bearer",
     OPT_STRING, OFF(token_file), 0, 0},
    {"grace", "SHEARS_GRACE",
     "seconds running jobs get to finish on SIGTERM (20)", OPT_SECONDS,
     OFF(grace), 0, 0},
    {"max-attempts", "SHEARS_MAX_ATTEMPTS",
     "a job interrupted this often fails (3)", OPT_INT, OFF(max_attempts), 1,
     100},
    {"log-level", "SHEARS_LOG_LEVEL", "error, warn, info or debug (info)",
     OPT_STRING, OFF(log_level), 0, 0},
    {"port-file", "SHEARS_PORT_FILE",
     "write the bound port there (for --listen with port 0)", OPT_STRING,
     OFF(port_file), 0, 0},
    // Limits: README, "Security and limits".
    {"max-conns", "SHEARS_MAX_CONNS", "connections at once (1024)", OPT_INT,
     OFF(max_conns), 1, 65536},
    {"max-conns-per-ip", "SHEARS_MAX_CONNS_PER_IP",
     "connections at once from one address (64; 0: no limit)", OPT_INT,
     OFF(max_conns_per_ip), 0, 65536},
    {"idle-timeout", "SHEARS_IDLE_TIMEOUT",
     "seconds of silence before a connection closes (120)", OPT_SECONDS,
     OFF(idle_timeout), 1, 0},
    {"head-timeout", "SHEARS_HEAD_TIMEOUT",
     "seconds to receive a whole request head (30; 0: none)", OPT_SECONDS,
     OFF(head_timeout), 0, 0},
    {"min-body-rate", "SHEARS_MIN_BODY_RATE",
     "bytes a second a request body must keep up, over 10 s (1K; 0: none)",
     OPT_BYTES, OFF(min_body_rate), 0, 0},
    {"max-tensors", "SHEARS_MAX_TENSORS",
     "tensors in one uploaded checkpoint (200000)", OPT_COUNT, OFF(max_tensors),
     1, 100000000},
    {"max-header-memory", "SHEARS_MAX_HEADER_MEMORY",
     "safetensors header bytes all uploads may hold at once (64M)", OPT_BYTES,
     OFF(max_header_memory), 1, 0},
    {"check-threads", "SHEARS_CHECK_THREADS",
     "threads that check uploads and job specs off the HTTP threads (2)",
     OPT_INT, OFF(check_threads), 1, 64},
    {"check-timeout", "SHEARS_CHECK_TIMEOUT",
     "seconds a job spec's regexes may take against its checkpoint (10)",
     OPT_SECONDS, OFF(check_timeout), 1, 0},
    {"min-free", "SHEARS_MIN_FREE",
     "bytes the data dir keeps free: /readyz fails and uploads are refused "
     "below it (128M; 0: none)",
     OPT_BYTES, OFF(min_free), 0, 0},
    {"ballast", "SHEARS_BALLAST",
     "bytes kept in a ballast file, released on a full disk so deletes "
     "work (64M; 0: none)",
     OPT_BYTES, OFF(ballast), 0, 0},
};

static bool parse_bytes(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || s[0] == '-')
        return false;
    uint64_t mul = 1;
    switch (*end) {
    case 'K':
    case 'k':
        mul = 1ull << 10;
        end++;
        break;
    case 'M':
    case 'm':
        mul = 1ull << 20;
        end++;
        break;
    case 'G':
    case 'g':
        mul = 1ull << 30;
        end++;
        break;
    case 'T':
    case 't':
        mul = 1ull << 40;
        end++;
        break;
    default: break;
    }
    if (*end == 'i' || *end == 'B')
        end++;
    if (*end || v > UINT64_MAX / mul)
        return false;
    *out = v * mul;
    return true;
}

static bool parse_listen(const char *s, serve_config *c)
{
    const char *colon = strrchr(s, ':');
    if (!colon)
        return false;
    size_t hl = (size_t)(colon - s);
    const char *h = s;
    if (hl >= 2 && s[0] == '[' && s[hl - 1] == ']') { // [::1]:8080
        h = s + 1;
        hl -= 2;
    }
    uint64_t port;
    if (hl == 0 || hl >= sizeof c->host || !svc_parse_u64(colon + 1, &port) ||
        port > 65535)
        return false;
    memcpy(c->host, h, hl);
    c->host[hl] = '\0';
    c->port = (uint16_t)port;
    return true;
}

static int apply(const opt_def *o, const char *value, serve_config *c,
                 const char *source)
{
    char *base = (char *)c;
    uint64_t u;
    double x;
    switch (o->kind) {
    case OPT_LISTEN:
        if (parse_listen(value, c))
            return 0;
        break;
    case OPT_STRING: *(const char **)(base + o->offset) = value; return 0;
    case OPT_INT:
        if (svc_parse_u64(value, &u) && (long)u >= o->min &&
            (long)u <= o->max) {
            *(int *)(base + o->offset) = (int)u;
            return 0;
        }
        break;
    case OPT_COUNT:
        if (svc_parse_u64(value, &u) && u >= (uint64_t)o->min &&
            u <= (uint64_t)o->max) {
            *(uint64_t *)(base + o->offset) = u;
            return 0;
        }
        break;
    case OPT_BYTES:
        if (parse_bytes(value, &u) && u >= (uint64_t)o->min) {
            *(uint64_t *)(base + o->offset) = u;
            return 0;
        }
        break;
    case OPT_SECONDS:
        if (svc_parse_double(value, &x) && x >= (double)o->min && x <= 86400) {
            *(double *)(base + o->offset) = x;
            return 0;
        }
        break;
    }
    return svc_fail(SVC_EXIT_USAGE, "%s: \"%s\" is not valid for %s", source,
                    value, o->help);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: shears serve [options]\n\n");
    for (size_t i = 0; i < SH_ARRAY_LEN(opt_defs); i++)
        fprintf(f, "  --%-14s %s\n  %-16s (env %s)\n", opt_defs[i].flag,
                opt_defs[i].help, "", opt_defs[i].env);
}

static int parse_config(int argc, char **argv, serve_config *c)
{
    *c = (serve_config){.host = "127.0.0.1",
                        .port = 8080,
                        .data_dir = "./var",
                        .workers = 1,
                        .http_threads = 4,
                        .max_attempts = JOB_MAX_ATTEMPTS,
                        .max_upload = 64ull << 30,
                        .grace = 20,
                        .log_level = "info",
                        .check_threads = 2,
                        .max_conns = 1024,
                        .max_conns_per_ip = 64,
                        .idle_timeout = 120,
                        .head_timeout = 30,
                        .min_body_rate = 1024,
                        .max_tensors = 200000,
                        .max_header_memory = 64ull << 20,
                        .check_timeout = 10,
                        .min_free = 128ull << 20,
                        .ballast = 64ull << 20};
    for (size_t i = 0; i < SH_ARRAY_LEN(opt_defs); i++) {
        const char *v = getenv(opt_defs[i].env);
        int rc;
        if (v && v[0] && (rc = apply(&opt_defs[i], v, c, opt_defs[i].env)))
            return rc;
    }
    struct option longopts[SH_ARRAY_LEN(opt_defs) + 2];
    for (size_t i = 0; i < SH_ARRAY_LEN(opt_defs); i++)
        longopts[i] =
            (struct option){opt_defs[i].flag, required_argument, NULL, (int)i};
    longopts[SH_ARRAY_LEN(opt_defs)] =
        (struct option){"help", no_argument, NULL, 'h'};
    longopts[SH_ARRAY_LEN(opt_defs) + 1] = (struct option){0, 0, 0, 0};
    opterr = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (ch == 'h') {
            usage(stdout);
            return SVC_EXIT_OK;
        }
        if (ch < 0 || ch >= (int)SH_ARRAY_LEN(opt_defs))
            return svc_fail(SVC_EXIT_USAGE,
                            "serve: unknown or incomplete option \"%s\" (see "
                            "shears serve --help)",
                            argv[optind - 1]);
        char src[64];
        snprintf(src, sizeof src, "--%s", opt_defs[ch].flag);
        int rc = apply(&opt_defs[ch], optarg, c, src);
        if (rc)
            return rc;
    }
    if (optind < argc)
        return svc_fail(SVC_EXIT_USAGE, "serve: unexpected argument \"%s\"",
                        argv[optind]);
    sh_log_level level;
    if (sh_log_level_parse(c->log_level, &level) != 0)
        return svc_fail(SVC_EXIT_USAGE,
                        "log level \"%s\" is not error, warn, info or debug",
                        c->log_level);
    sh_log_threshold = level;
    return -1;
}

// The token: the file's first line, spaces trimmed.
static int read_token(const char *path, char **out)
{
    char *text = NULL;
    size_t n = 0;
    int rc = sh_file_read(path, 4096, &text, &n);
    if (rc != 0)
        return svc_fail(SVC_EXIT_FAIL, "--token-file %s: cannot read (%s)",
                        path, sh_strerror(rc));
    text[strcspn(text, "\r\n")] = '\0';
    char *p = text;
    while (*p == ' ' || *p == '\t')
        p++;
    size_t len = strlen(p);
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        p[--len] = '\0';
    if (len < 8) {
        free(text);
        return svc_fail(SVC_EXIT_FAIL,
                        "--token-file %s: the token must be at least 8 "
                        "characters",
                        path);
    }
    memmove(text, p, len + 1);
    *out = text;
    return 0;
}

static sem_t stop_sem;
static volatile sig_atomic_t stop_signal;

// Async-signal-safe: records the signal and wakes svc_cmd_serve.
static void on_stop_signal(int sig)
{
    stop_signal = sig;
    sem_post(&stop_sem);
}

int svc_cmd_serve(int argc, char **argv)
{
    serve_config cfg;
    int code = parse_config(argc, argv, &cfg);
    if (code >= 0)
        return code;
    char *token = NULL;
    if (cfg.token_file && read_token(cfg.token_file, &token) != 0)
        return SVC_EXIT_FAIL;

    // SIGTERM and SIGINT stay blocked while the threads below start, so
    // they inherit the mask; then this thread alone unblocks them. Threads
    // that libraries start before main (OpenBLAS's pool) have them
    // unblocked, so a handler, not sigwait, must take them: with the
    // default action a signal landing on such a thread would kill us.
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    sem_init(&stop_sem, 0, 0);
    struct sigaction sa = {.sa_handler = on_stop_signal,
                           .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    // Threads: workers x per-job threads stay within the CPUs we may use
    // (a container's CPU limit included); libuv's pool gets one spare slot
    // beyond the workers.
    int cpus = sh_cpu_count();
    int job_threads = cfg.threads > 0          ? cfg.threads
                      : cpus / cfg.workers > 1 ? cpus / cfg.workers
                                               : 1;
    char pool[16];
    snprintf(pool, sizeof pool, "%d", cfg.workers + 1);
    setenv("UV_THREADPOOL_SIZE", pool, 1);
    eng_set_threads(job_threads);

    sh_diag d;
    sh_diag_clear(&d);
    store *s = NULL;
    job_runner *jobs = NULL;
    api_server *api = NULL;
    svc_metrics *metrics = NULL;
    code = SVC_EXIT_FAIL;
    if (store_open(&s, cfg.data_dir, &d) != 0) {
        svc_fail_diag(SVC_EXIT_FAIL, cfg.data_dir, &d);
        goto out;
    }
    if (!(metrics = svc_metrics_create(s))) {
        svc_fail(SVC_EXIT_FAIL, "out of memory");
        goto out;
    }
    eng_blas_info blas;
    eng_blas_info_get(&blas, true);
    svc_metrics_set_blas(metrics, &blas);
    char gf[32], bt[32];
    snprintf(gf, sizeof gf, "%.1f", blas.sgemm_gflops);
    SH_INFO("blas", "core", blas.core, "source", blas.source, "sgemm_gflops",
            gf, "threads", sh_log_num(bt, job_threads));
    job_config jc = {.workers = cfg.workers,
                     .job_threads = job_threads,
                     .max_attempts = cfg.max_attempts};
    if (job_runner_start(&jobs, s, &jc, &d) != 0) {
        svc_fail_diag(SVC_EXIT_FAIL, "jobs", &d);
        goto out;
    }
    svc_metrics_set_runner(metrics, jobs);
    job_runner_on_end(jobs, svc_metrics_job, metrics);
    store_ballast_set(s, cfg.ballast);
    api_config ac = {.host = cfg.host,
                     .port = cfg.port,
                     .threads = cfg.http_threads,
                     .max_upload = cfg.max_upload,
                     .token = token,
                     .conn_timeout = (unsigned)cfg.idle_timeout,
                     .max_conns = (unsigned)cfg.max_conns,
                     .max_conns_per_ip = (unsigned)cfg.max_conns_per_ip,
                     .head_timeout = cfg.head_timeout,
                     .min_body_rate = cfg.min_body_rate,
                     .check_threads = cfg.check_threads,
                     .check_timeout = cfg.check_timeout,
                     .max_tensors = cfg.max_tensors,
                     .max_header_memory = cfg.max_header_memory,
                     .min_free = cfg.min_free};
    api_observer obs = {.ctx = metrics,
                        .request = svc_metrics_request,
                        .metrics = svc_metrics_render};
    if (api_start(&api, &ac, s, jobs, &obs, &d) != 0) {
        svc_fail_diag(SVC_EXIT_FAIL, "listen", &d);
        goto out;
    }
    char port[16], pn[32], nw[32], nt[32];
    snprintf(port, sizeof port, "%u", api_port(api));
    if (cfg.port_file &&
        sh_file_write_atomic(cfg.port_file, port, strlen(port)) != 0) {
        svc_fail(SVC_EXIT_FAIL, "--port-file %s: cannot write", cfg.port_file);
        goto out;
    }
    SH_INFO("listening", "version", SH_VERSION, "host", cfg.host, "port",
            sh_log_num(pn, api_port(api)), "data_dir", cfg.data_dir, "workers",
            sh_log_num(nw, cfg.workers), "job_threads",
            sh_log_num(nt, job_threads), "auth", token ? "bearer" : "none");

    pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
    while (sem_wait(&stop_sem) != 0 && errno == EINTR)
        ;
    SH_INFO("stopping", "signal",
            stop_signal == SIGTERM ? "SIGTERM" : "SIGINT");
    api_set_draining(api);
    api_quiesce(api);
    job_runner_stop(jobs, cfg.grace);
    jobs = NULL;
    api_stop(api);
    api = NULL;
    code = SVC_EXIT_OK;
out:
    api_stop(api);
    job_runner_stop(jobs, 0);
    svc_metrics_destroy(metrics);
    store_close(s);
    free(token);
    if (code == SVC_EXIT_OK)
        SH_INFO("stopped");
    return code;
}

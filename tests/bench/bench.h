// bench.h: what the benchmarks share: medians, and sgemm's GFLOP/s as a
// yardstick.
#ifndef BENCH_H
#define BENCH_H

#include "common/util.h"
#include "engine/math/linalg.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

// OpenBLAS's own entry points: the yardstick is its threaded sgemm, on
// every core (the engine runs it on one thread per tile); after it the
// workers are stopped, or they would spin for a tenth of a second beside
// whatever is timed next (engine/math/blas.c).
void openblas_set_num_threads(int n);
int blas_thread_shutdown_(void) __attribute__((weak));

static inline int bench_by_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

// The median of v[0..n), n <= 64; v is left as it was.
static inline double bench_median(const double *v, int n)
{
    double s[64];
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, bench_by_double);
    return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

// GFLOP/s of a 2048^3 sgemm on every core (median of runs), OpenBLAS
// threaded; leaves OpenBLAS on one thread as the engine runs it.
static inline double bench_sgemm_gflops(int runs)
{
    enum { N = 2048 };
    float *a = malloc((size_t)N * N * sizeof *a),
          *b = malloc((size_t)N * N * sizeof *b);
    float *c = calloc((size_t)N * N, sizeof *c);
    for (size_t i = 0; i < (size_t)N * N; i++) {
        a[i] = (float)(i * 2654435761u % 1000) / 1000.0f - 0.5f;
        b[i] = (float)(i * 40503u % 997) / 997.0f - 0.5f;
    }
    openblas_set_num_threads(sh_cpu_count());
    double t[64];
    runs = runs < 1 ? 1 : runs > 64 ? 64 : runs;
    for (int r = 0; r < runs; r++) {
        double t0 = sh_time_mono();
        eng_gemm1(false, false, N, N, N, 1.0f, a, N, b, N, 0.0f, c, N);
        t[r] = sh_time_mono() - t0;
    }
    openblas_set_num_threads(1);
    if (blas_thread_shutdown_)
        blas_thread_shutdown_();
    free(a);
    free(b);
    free(c);
    return 2.0 * N * N * N / bench_median(t, runs) / 1e9;
}

// Runs argv as a whole process, its stdout (with quiet_err its stderr too)
// to /dev/null, env_name=env_value set in it when env_name is not NULL;
// ends the bench when it fails. Returns its wall seconds; *rss (unless
// NULL) gets its peak RSS in bytes.
static inline double bench_spawn(char *const *argv, const char *env_name,
                                 const char *env_value, bool quiet_err,
                                 double *rss)
{
    double t0 = sh_time_mono();
    fflush(NULL); // a child's freopen would write our buffer again
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stdout) ||
            (quiet_err && !freopen("/dev/null", "w", stderr)))
            _exit(126);
        if (env_name)
            setenv(env_name, env_value, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    wait4(pid, &status, 0, &ru);
    double wall = sh_time_mono() - t0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench: %s %s exited with %d\n", argv[0],
                argv[1] ? argv[1] : "", status);
        exit(1);
    }
    if (rss)
        *rss = (double)ru.ru_maxrss * 1024;
    return wall;
}

#endif

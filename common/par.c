// par.c: parallel loops over index ranges (par.h).
#include "common/par.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define MAX_THREADS 256

static atomic_int threads = 1;

void sh_par_threads(int n)
{
    atomic_store(&threads, n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : n);
}

int sh_par_count(void) { return atomic_load(&threads); }

typedef struct chunk {
    sh_par_fn fn;
    void *ctx;
    int64_t begin, end;
} chunk;

static void *run_chunk(void *arg)
{
    chunk *c = arg;
    c->fn(c->ctx, c->begin, c->end);
    return NULL;
}

int64_t sh_par_mask_rows(int64_t cols)
{
    int64_t a = 64;
    while (a > 1 && (cols * (a / 2)) % 64 == 0)
        a /= 2;
    return a;
}

void sh_par_for(int64_t n, int64_t align, int64_t min_chunk, sh_par_fn fn,
                void *ctx)
{
    if (n <= 0)
        return;
    if (align < 1)
        align = 1;
    if (min_chunk < 1)
        min_chunk = 1;
    int64_t t = sh_par_count();
    if (t > (n + min_chunk - 1) / min_chunk)
        t = (n + min_chunk - 1) / min_chunk;
    // Chunks of whole `align` units, as even as they fall.
    int64_t units = (n + align - 1) / align;
    if (t > units)
        t = units;
    if (t <= 1) {
        fn(ctx, 0, n);
        return;
    }
    chunk c[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    bool started[MAX_THREADS] = {false};
    for (int64_t i = 0; i < t; i++) {
        int64_t b = units * i / t * align, e = units * (i + 1) / t * align;
        c[i] = (chunk){fn, ctx, b, e < n ? e : n};
    }
    for (int64_t i = 1; i < t; i++)
        started[i] = pthread_create(&tid[i], NULL, run_chunk, &c[i]) == 0;
    run_chunk(&c[0]);
    for (int64_t i = 1; i < t; i++) {
        if (started[i])
            pthread_join(tid[i], NULL);
        else
            run_chunk(&c[i]); // no thread: the caller does it
    }
}

// alloc.c: see alloc.h.
#include "tests/alloc.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
int __real_posix_memalign(void **p, size_t align, size_t n);
void *__real_aligned_alloc(size_t align, size_t n);
void __real_free(void *p);

// Live blocks: open addressing on the pointer, tombstones for frees.
#define SLOTS ((size_t)1 << 20)
#define TOMB ((void *)1)

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static void **live; // SLOTS entries while tracking
static size_t used; // entries not NULL (live or tombstones)
static size_t n_live;
static bool tracking, overflow;
static long fail_at = -1, count;
static bool failed;

static size_t slot_of(const void *p)
{
    uint64_t h = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull;
    return (size_t)(h >> 44) & (SLOTS - 1);
}

static void track_add(void *p)
{
    if (!tracking || !p)
        return;
    if (used >= SLOTS / 4 * 3) {
        overflow = true;
        return;
    }
    size_t i = slot_of(p);
    while (live[i] && live[i] != TOMB)
        i = (i + 1) & (SLOTS - 1);
    if (!live[i])
        used++;
    live[i] = p;
    n_live++;
}

static void track_remove(void *p)
{
    if (!tracking || !p)
        return;
    for (size_t i = slot_of(p); live[i]; i = (i + 1) & (SLOTS - 1)) {
        if (live[i] == p) {
            live[i] = TOMB;
            n_live--;
            return;
        }
    }
}

// Counts an allocation; true when this one must fail.
static bool must_fail(void)
{
    if (!tracking)
        return false;
    bool fail = fail_at >= 0 && count == fail_at;
    count++;
    if (fail) {
        fail_at = -1;
        failed = true;
    }
    return fail;
}

void *__wrap_malloc(size_t n)
{
    pthread_mutex_lock(&lock);
    void *p = must_fail() ? NULL : __real_malloc(n);
    track_add(p);
    pthread_mutex_unlock(&lock);
    return p;
}

void *__wrap_calloc(size_t n, size_t size)
{
    pthread_mutex_lock(&lock);
    void *p = must_fail() ? NULL : __real_calloc(n, size);
    track_add(p);
    pthread_mutex_unlock(&lock);
    return p;
}

void *__wrap_realloc(void *old, size_t n)
{
    pthread_mutex_lock(&lock);
    void *p = must_fail() ? NULL : __real_realloc(old, n);
    if (p || n == 0) // realloc(p, 0) may free p and return NULL
        track_remove(old);
    track_add(p);
    pthread_mutex_unlock(&lock);
    return p;
}

int __wrap_posix_memalign(void **out, size_t align, size_t n)
{
    pthread_mutex_lock(&lock);
    int rc = must_fail() ? ENOMEM : __real_posix_memalign(out, align, n);
    if (rc == 0)
        track_add(*out);
    pthread_mutex_unlock(&lock);
    return rc;
}

void *__wrap_aligned_alloc(size_t align, size_t n)
{
    pthread_mutex_lock(&lock);
    void *p = must_fail() ? NULL : __real_aligned_alloc(align, n);
    track_add(p);
    pthread_mutex_unlock(&lock);
    return p;
}

char *__wrap_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = __wrap_malloc(n);
    return p ? memcpy(p, s, n) : NULL;
}

void __wrap_free(void *p)
{
    pthread_mutex_lock(&lock);
    track_remove(p);
    pthread_mutex_unlock(&lock);
    __real_free(p);
}

void th_alloc_track_begin(void)
{
    void **table = __real_calloc(SLOTS, sizeof *table);
    ck_assert_ptr_nonnull(table);
    pthread_mutex_lock(&lock);
    live = table;
    used = n_live = 0;
    overflow = false;
    tracking = true;
    pthread_mutex_unlock(&lock);
}

size_t th_alloc_track_end(void)
{
    pthread_mutex_lock(&lock);
    tracking = false;
    size_t n = n_live;
    bool over = overflow;
    void **table = live;
    live = NULL;
    pthread_mutex_unlock(&lock);
    __real_free(table);
    ck_assert_msg(!over, "too many live blocks to track");
    return n;
}

void th_alloc_fail_at(long n)
{
    pthread_mutex_lock(&lock);
    fail_at = n;
    count = 0;
    failed = false;
    pthread_mutex_unlock(&lock);
}

bool th_alloc_failed(void)
{
    pthread_mutex_lock(&lock);
    bool f = failed;
    pthread_mutex_unlock(&lock);
    return f;
}

long th_alloc_count(void)
{
    pthread_mutex_lock(&lock);
    long n = count;
    pthread_mutex_unlock(&lock);
    return n;
}

// alloc.h: the test binary's allocator hooks (run-tests links with
// -Wl,--wrap for malloc, calloc, realloc, posix_memalign, aligned_alloc,
// strdup and free, so every call from the project's objects comes here first;
// libraries such as jansson and OpenBLAS allocate on their own).
//
// Two uses, as SQLite's tests use its malloc layer:
//   - leaks: between th_alloc_track_begin and th_alloc_track_end the
//     blocks allocated and not yet freed are counted;
//   - failures: th_alloc_fail_at(n) makes the n-th allocation of the next
//     tracking window (0: the first) return NULL, once, as a full heap
//     would. Only allocations inside a window count: check's own (every
//     ck_assert sends a message) must stay outside.
#ifndef TH_ALLOC_H
#define TH_ALLOC_H

#include <stdbool.h>
#include <stddef.h>

// Starts counting the blocks allocated from now on.
void th_alloc_track_begin(void);

// Stops counting; returns the blocks allocated since the begin and not
// freed (the table of live blocks must not have overflowed: checked).
size_t th_alloc_track_end(void);

// The n-th allocation of the tracking windows from now fails (n < 0:
// none). Resets the count.
void th_alloc_fail_at(long n);

// Whether the failure set by th_alloc_fail_at happened; the allocations
// made since th_alloc_fail_at.
bool th_alloc_failed(void);
long th_alloc_count(void);

#endif

// par.h: parallel loops over index ranges: the engine's own threads (masks,
// selections, the OBS rows of a SparseGPT block, the forward pass's
// element-wise steps, the BLAS calls over their tiles, dataset checks).
//
// Plain pthreads, started per parallel loop and joined before it returns:
// no pool to share between the jobs a service runs at once, nothing left
// running when a job ends, and the loops are long (a block of rows, a
// tensor) so the start costs a few microseconds in milliseconds. OpenMP
// would do the same with a runtime of its own beside OpenBLAS's threads.
//
// Each loop splits its range into contiguous chunks, one per thread, and
// each element is computed by exactly one thread in the same order as
// the serial loop: results are the same bytes for any thread count.
// Reductions are never split across threads.
#ifndef SH_PAR_H
#define SH_PAR_H

#include <stdint.h>

// The threads a parallel loop may use (at least 1), for the whole process;
// the engine's eng_set_threads sets it.
void sh_par_threads(int n);
int sh_par_count(void);

// fn(ctx, begin, end) for contiguous chunks covering [0, n). Chunk
// boundaries are multiples of align (so chunks of mask bits never share a
// 64-bit word when align makes begin * bits-per-index a multiple of 64);
// a chunk holds at least min_chunk indices. Runs on the calling thread
// when one chunk is all there is, or when a thread cannot be started.
typedef void (*sh_par_fn)(void *ctx, int64_t begin, int64_t end);
void sh_par_for(int64_t n, int64_t align, int64_t min_chunk, sh_par_fn fn,
                void *ctx);

// The row alignment at which rows of `cols` bits start on a 64-bit word.
int64_t sh_par_mask_rows(int64_t cols);

#endif

// poll.h: how long work is cut into pieces between polls of the cancel
// hook. Every room that loops long uses it.
#ifndef ENG_POLL_H
#define ENG_POLL_H

#include "common/err.h"
#include "engine/hooks.h"

#include <string.h>

// --- cancel polls
//
// Long work runs in pieces of at most about 0.1 s of one core of a current
// CPU, with a poll of the cancel hook after each, so a cancel is seen
// within a small part of a second whatever the shapes and the SparseGPT
// block size. The pieces are counted in work done, never timed:
//   ENG_POLL_FMA    multiply-adds of a BLAS-3 product: a larger product is
//                   split in pieces of rows (or columns); a smaller one is
//                   one call, so the fixtures' results stay bit for bit
//                   (OpenBLAS rounds differently once split),
//   ENG_POLL_ELEMS  elements visited by a plain loop (memory-bound, page
//                   faults or transcendental: slower per unit).
#define ENG_POLL_FMA ((uint64_t)1 << 32)
#define ENG_POLL_ELEMS ((uint64_t)1 << 22)

// A plain loop's work counter: eng_pacer_step adds the elements just done
// and polls the hook once ENG_POLL_ELEMS have gathered since the last poll.
typedef struct eng_pacer {
    const eng_hooks *h; // may be NULL: never cancelled
    uint64_t done;      // elements since the last poll
} eng_pacer;

// True when the work should stop (the hook said so at this poll).
static inline bool eng_pacer_step(eng_pacer *p, uint64_t elems)
{
    p->done += elems;
    if (p->done < ENG_POLL_ELEMS)
        return false;
    p->done = 0;
    return eng_hooks_cancelled(p->h);
}

// Copies n floats in pieces of ENG_POLL_ELEMS, polling after each: a fresh
// buffer takes a page fault per page as it is written, dearly on virtual
// machines. Returns 0 or SH_ECANCELED (dst partly written).
static inline int eng_copy_polled(float *dst, const float *src, size_t n,
                                  const eng_hooks *h)
{
    for (size_t at = 0; at < n; at += ENG_POLL_ELEMS) {
        size_t len = n - at < ENG_POLL_ELEMS ? n - at : ENG_POLL_ELEMS;
        memcpy(dst + at, src + at, len * sizeof *dst);
        if (eng_hooks_cancelled(h))
            return SH_ECANCELED;
    }
    return 0;
}

#endif

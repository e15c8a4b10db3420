// hooks.h: how the engine reports progress and learns of cancellation.
//
// The engine never knows who listens. Long loops call eng_hooks_cancelled()
// between units of work (a tensor, a block of columns, a few MiB of data)
// and stop with SH_ECANCELED when it says so.
#ifndef ENG_HOOKS_H
#define ENG_HOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct eng_progress {
    const char *phase;  // "scoring", "pruning", "calibrating", "evaluating"...
    const char *stage;  // within it (eng_phase_name: "forward", "solve"...),
                        // or NULL
    size_t step, steps; // e.g. tensor 3 of 40, block 2 of 4
    const char *tensor; // the tensor at hand, or NULL
    uint64_t bytes_done, bytes_total;
    double fraction; // 0..1 of the whole job
    double estimate; // seconds the whole job should take, 0 = not known
} eng_progress;

typedef struct eng_hooks {
    void *ctx;
    // Called from the engine's thread; must be cheap and must not block.
    void (*progress)(void *ctx, const eng_progress *p);
    // Polled often; returns true once the work should stop.
    bool (*cancelled)(void *ctx);
} eng_hooks;

static inline bool eng_hooks_cancelled(const eng_hooks *h)
{
    return h && h->cancelled && h->cancelled(h->ctx);
}

static inline void eng_hooks_progress(const eng_hooks *h, const eng_progress *p)
{
    if (h && h->progress)
        h->progress(h->ctx, p);
}

#endif

// method.h: the method table. A method is a row: what it needs, which
// statistics of the layers' inputs it collects, how it scores weights (or
// which solver rewrites them), and the patterns it can make. The drivers
// (run/) and the checks read the row; nothing else branches on the method.
// Adding a method is a row here and, for a new criterion or solver, a
// file of methods/.
#ifndef ENG_METHOD_H
#define ENG_METHOD_H

#include "common/err.h"
#include "engine/hooks.h"
#include "engine/methods/sparsegpt.h"
#include "engine/select/mask.h"
#include "engine/select/pattern.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum eng_method {
    ENG_METHOD_MAGNITUDE,
    ENG_METHOD_RANDOM,
    ENG_METHOD_WANDA,
    ENG_METHOD_SPARSEGPT,
    ENG_METHOD_FLAP,
    ENG_METHOD_BLOCK_INFLUENCE,
    ENG_METHOD_SNIP,
    ENG_METHOD_TAYLOR,
    ENG_METHOD_FISHER,
    ENG_METHOD_MOVEMENT,
    ENG_METHOD_SCORES,
    ENG_METHOD_COUNT
} eng_method;

// Statistics of a linear layer's inputs X (rows, cols) over the
// calibration set, collected block by block (run/calib.c).
enum {
    ENG_STAT_HESSIAN = 1u << 0, // H = X^T X (cols, cols)
    ENG_STAT_COLSQ = 1u << 1,   // sum of x_j^2 per input (cols,)
    ENG_STAT_SUM = 1u << 2,     // sum of x_j per input (cols,)
};

// How a method scores the units of a structured shrink (heads, KV groups,
// channels, neurons: run/shrink.c). Blocks are chosen by their influence
// (or at random, or the last ones: spec structure.blocks_by).
typedef enum eng_unit_score {
    ENG_UNIT_NONE,      // it cannot (a solver)
    ENG_UNIT_MAGNITUDE, // L1 or L2 (spec norm) of all the unit's weights
    ENG_UNIT_RANDOM,    // seeded uniform
    ENG_UNIT_WANDA,     // Wanda-sp: sum |W_ij| ||x_j|| over the consumer's
                        // columns of the unit
    ENG_UNIT_FLAP,      // FLAP: sum var(x_j) ||W_:j||^2 over them; the
                        // removed columns' mean output becomes a bias
    ENG_UNIT_BLOCKS,    // scores whole blocks only (block_influence)
    ENG_UNIT_TAYLOR,    // LLM-Pruner: sum of |W g - 1/2 W^2 F| over all
                        // the unit's weights (gradients, run/grad.c)
} eng_unit_score;

// Which weights compete for the zeros of an unstructured pattern.
typedef enum eng_compete {
    ENG_COMPETE_TENSOR, // the whole tensor (or the global pool)
    ENG_COMPETE_ROW,    // each output row on its own (Wanda)
} eng_compete;

// Rewrites a layer's weights w (rows, cols) in place given its Hessian h
// (consumed), as an OBS solver does; *damp_used is the dampening it took.
typedef int (*eng_solver_fn)(float *w, float *h, int64_t rows, int64_t cols,
                             const eng_sgpt_opts *o, double *damp_used,
                             const eng_hooks *hooks, sh_diag *d);

typedef struct eng_method_def {
    const char *name;
    bool needs_calibration; // runs the model over calibration data
    bool needs_gradients;   // a backward pass over the calibration set
                            // (run/grad.c) before any selection; its
                            // score reads the gradients (mask.h)
    unsigned stats;         // ENG_STAT_*: what calibration collects for it
    unsigned patterns;      // ENG_PATTERN_BIT(kind) it can make
    bool supports_global;   // scope "global": one threshold for the pool
    // Scoring methods: the criterion, and its scale from the statistics
    // (NULL: none). scale_j = f(stats of input j).
    eng_score_kind score;
    void (*scale)(float *scale, const float *colsq, int64_t cols);
    eng_compete compete; // unstructured: who competes
    // Solver methods: the solver (the scorer above is then unused).
    eng_solver_fn solve;
    // The spec object that holds the solver's options, or NULL.
    const char *options;
    // Structured shrinks: how it scores units, and the statistics of the
    // consumers' inputs it needs for that (ENG_STAT_*).
    eng_unit_score unit;
    unsigned unit_stats;
} eng_method_def;

extern const eng_method_def eng_methods[ENG_METHOD_COUNT];

// The names of the methods whose row has patterns & bit, joined by ", "
// into buf (for messages).
void eng_methods_making(char *buf, size_t size, unsigned pattern_bits);

#endif

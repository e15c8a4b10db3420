// quant.h: uniform integer grids for weights, as the GPTQ and SparseGPT
// references' quant.py Quantizer fits them and compressed-tensors stores
// them.
//
// A grid covers `group` consecutive weights of one output row (the whole
// row when the spec's group_size is 0): min-max with 0 inside,
//   asymmetric: scale = (max - min) / (2^bits - 1), zero = round(-min / scale)
//   symmetric:  max = max(|min|, max), min = -max, zero = 2^(bits-1)
// and a weight w becomes scale * (q - zero), q = clamp(round(w / scale) +
// zero, 0, 2^bits - 1), in F32, rounding half to even as torch.round does.
// A pruned weight (0) is exactly 0 on every grid. The scale is rounded to
// the written tensor's dtype first, so a reader that dequantizes with the
// stored scale gets the same values bit for bit.
#ifndef ENG_QUANT_H
#define ENG_QUANT_H

#include "engine/io/dtype.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct eng_grid {
    int bits;        // 2..8
    int64_t group;   // weights per grid along the row; 0: the whole row
    bool symmetric;  // around 0
    eng_dtype dtype; // the scales are rounded to it (F16, BF16, F32)
} eng_grid;

// Grids per row of cols inputs.
static inline int64_t eng_grid_groups(const eng_grid *g, int64_t cols)
{
    return g->group > 0 ? (cols + g->group - 1) / g->group : 1;
}

// The grid of the n values x: *scale and *zero as above.
void eng_grid_fit(const eng_grid *g, const float *x, int64_t n, float *scale,
                  float *zero);

// x on the grid (scale, zero, maxq = 2^bits - 1).
static inline float eng_quantize(float x, float scale, float zero, float maxq)
{
    float q = __builtin_rintf(x / scale) + zero;
    q = q < 0.0f ? 0.0f : q > maxq ? maxq : q;
    return scale * (q - zero);
}

// The integer q of a value already on the grid.
static inline int eng_quant_level(float x, float scale, float zero)
{
    return (int)(__builtin_rintf(x / scale) + zero);
}

// Round to nearest: fits each grid of W (rows, cols) from the weights as
// they are, into scale and zero (rows, groups); then zeroes the weights
// `pruned` marks (a bit per weight, may be NULL) and puts the others on
// their grids.
void eng_rtn(float *w, int64_t rows, int64_t cols, const eng_grid *g,
             const uint64_t *pruned, float *scale, float *zero);

#endif

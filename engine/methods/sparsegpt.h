// sparsegpt.h: SparseGPT (Frantar & Alistarh 2023) on one linear layer.
//
// Given W (rows, cols) and H = sum of x x^T over the layer's calibration
// inputs (cols, cols), as the reference implementation computes it:
//
//   dead inputs (H_jj = 0): H_jj = 1, W[:, j] = 0
//   H += damp * mean(diag H) * I
//   U = chol(H^-1) upper                   (LAPACK spotrf / spotri)
//   for each block of `blocksize` columns:
//     mask: per block, the lowest w^2 / U_jj^2 (unstructured: exactly
//           the block's share of round(s * numel); N:M: the M-N lowest of
//           each group of M, chosen when the group starts)
//     column by column: q = w masked (and, with bits, rounded to the
//           row's grid), err = (w - q) / U_jj,
//           W1[:, j:] -= err U[j, j:]   (OBS update inside the block)
//     W[:, later] -= Err1 U[block, later] (lazy, BLAS-3)
//
// With bits (the reference's --wbits, its quant.py Quantizer): one grid
// per output row, fixed from the whole row before anything else (min-max
// with 0 inside; asymmetric: scale = (max - min) / (2^bits - 1), zero =
// round(-min / scale); symmetric: max = max(|min|, max), zero = 2^(bits-1));
// q = scale * (clamp(round(w / scale) + zero, 0, 2^bits - 1) - zero) in
// F32, rounding half to even as torch.round does. A pruned weight is
// exactly 0 on every such grid. Without pruning (sparsity 0) this is GPTQ.
//
// H's scale does not matter (the reference's 2/n cancels). If the
// Cholesky factorisation fails, the dampening is tried ten times larger,
// up to three times; the one used is reported.
#ifndef ENG_SPARSEGPT_H
#define ENG_SPARSEGPT_H

#include "common/err.h"
#include "engine/hooks.h"

#include <stdbool.h>
#include <stdint.h>

// The spec's defaults and bounds for SparseGPT's options, and how often a
// factorisation that fails is retried, with ten times the dampening.
#define ENG_SGPT_BLOCKSIZE 128
#define ENG_SGPT_BLOCKSIZE_MAX 4096
#define ENG_SGPT_DAMP 0.01
#define ENG_SGPT_ATTEMPTS 4

typedef struct eng_sgpt_opts {
    double sparsity; // unstructured, when m == 0
    int n, m;        // N:M: keep n of every m
    int blocksize;
    double damp;    // relative to the mean of diag(H)
    int bits;       // quantize to a 2^bits grid per row; 0: no
    bool symmetric; // the grid symmetric around 0
} eng_sgpt_opts;

// The grid of one row x (n values) for bits: *scale and *zero as above.
void eng_quant_grid(const float *x, int64_t n, int bits, bool symmetric,
                    float *scale, float *zero);

// x on the grid (scale, zero, maxq = 2^bits - 1).
static inline float eng_quantize(float x, float scale, float zero, float maxq)
{
    float q = __builtin_rintf(x / scale) + zero;
    q = q < 0.0f ? 0.0f : q > maxq ? maxq : q;
    return scale * (q - zero);
}

// Prunes W in place and updates the kept weights. h (cols, cols), full
// symmetric, is consumed (overwritten). *damp_used gets the dampening that
// worked. Returns 0, SH_ENUMERIC (non-finite input, or no dampening made
// H positive definite), SH_ECANCELED or SH_ENOMEM.
int eng_sparsegpt(float *w, float *h, int64_t rows, int64_t cols,
                  const eng_sgpt_opts *o, double *damp_used,
                  const eng_hooks *hooks, sh_diag *d);

#endif

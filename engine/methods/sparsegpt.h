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
// With a grid (quant.h; the reference's --wbits, its quant.py Quantizer):
// q above is also put on the grid, so both errors go through the same
// update. One grid per output row is fixed from the whole row before
// anything else, as the reference does; grids per group of columns are fit
// when the sweep reaches the group's first column, from W as it is then
// (GPTQ's groupsize, not static). A pruned weight is exactly 0 on every
// grid. Without pruning (sparsity 0) this is GPTQ.
//
// With `fixed`, the mask was chosen before (another method's): the solver
// keeps it, a pruned weight never comes back, and only the kept weights
// are updated and quantized. With `preserve_zeros`, the weights that are 0
// on input are pruned whatever else is chosen.
//
// H's scale does not matter (the reference's 2/n cancels). If the
// Cholesky factorisation fails, the dampening is tried ten times larger,
// up to three times; the one used is reported.
#ifndef ENG_SPARSEGPT_H
#define ENG_SPARSEGPT_H

#include "common/err.h"
#include "engine/hooks.h"
#include "engine/methods/quant.h"

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
    double damp;           // relative to the mean of diag(H)
    const eng_grid *grid;  // quantize; NULL: no
    float *scale, *zero;   // with grid: (rows, groups), filled
    const uint64_t *fixed; // the pruned weights, chosen before; NULL: choose
    bool preserve_zeros;   // the input's zeros stay pruned
    // When not NULL (rows): each row's sum of err^2 = ((w - q) / U_jj)^2
    // over the sweep, and *obs_add the dampening added to H's diagonal.
    // Each OBS step raises the quadratic error by its err^2 exactly, so a
    // row's sum is (W - W')_r H' (W - W')_r^T for the H' it factorised (H
    // with the dampening, a dead input's 1 as well, its weights 0 on both
    // sides): the reconstruction error without a trace, in exact
    // arithmetic (run/calib.c checks it against the trace on a few rows).
    double *obs_err;
    float *obs_add;
} eng_sgpt_opts;

// Prunes W in place and updates the kept weights. h (cols, cols), full
// symmetric, is consumed (overwritten). *damp_used gets the dampening that
// worked. Returns 0, SH_ENUMERIC (non-finite input, or no dampening made
// H positive definite), SH_ECANCELED or SH_ENOMEM.
int eng_sparsegpt(float *w, float *h, int64_t rows, int64_t cols,
                  const eng_sgpt_opts *o, double *damp_used,
                  const eng_hooks *hooks, sh_diag *d);

#endif

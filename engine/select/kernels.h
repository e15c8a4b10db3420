// kernels.h: the hot loops of magnitude pruning, straight on tensor bytes.
//
// Each kernel has a plain reference beside it (the generic scorer path in
// mask.c); tests hold the two to exactly the same output. Keys are the F32
// bit patterns of |w| (see mask.h), so a threshold found over tensors of
// different dtypes means the same thing in each. Sources may be unaligned.
// Supported dtypes: F16, BF16, F32; callers use the generic path for F64.
#ifndef ENG_KERNELS_H
#define ENG_KERNELS_H

#include "engine/select/mask.h"

#include <stddef.h>
#include <stdint.h>

// True when the kernels handle dt.
bool eng_k_supports(eng_dtype dt);

// hist (2, 65536) += the high 16 bits of the keys of src (n,), alternating
// between the two sub-histograms. Returns the OR of the keys' low halves.
// NaN and infinities land in buckets >= 0x7f80 (see eng_k_nonfinite).
uint32_t eng_k_hist_hi(uint32_t *restrict hist, const void *restrict src,
                       eng_dtype dt, size_t n);

// Count of keys in the non-finite buckets of a (2, 65536) histogram.
uint64_t eng_k_nonfinite(const uint32_t *hist);

// hist (65536,) += the low 16 bits of the keys of src (n,) whose high half
// is hi.
void eng_k_hist_lo(uint64_t *restrict hist, const void *restrict src,
                   eng_dtype dt, size_t n, uint32_t hi);

// dst (n,) <- src (n,) with every element whose key is under t zeroed, and
// the first t->ties elements whose key equals t->key (consumed). Returns
// the number of zero elements in dst.
uint64_t eng_k_apply_threshold(void *restrict dst, const void *restrict src,
                               eng_dtype dt, size_t n, eng_threshold *t);

// dst (n,) <- src (n,) with the m - keep smallest |w| of every group of m
// zeroed (ties: lower index first). n is a multiple of m. Returns the zeros
// in dst; *nonfinite is set when src holds NaN or an infinity.
uint64_t eng_k_apply_nm(void *restrict dst, const void *restrict src,
                        eng_dtype dt, size_t n, int keep, int m,
                        bool *nonfinite);

#endif

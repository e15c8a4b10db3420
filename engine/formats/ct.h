// ct.h: the compressed-tensors format's names (compressed.c writes them,
// decompress.c reads them back).
#ifndef ENG_CT_H
#define ENG_CT_H

#include "engine/jobspec/plan.h"

#define ENG_CT_METHOD "compressed-tensors"
#define ENG_CT_PACK_QUANTIZED "pack-quantized"
#define ENG_CT_INT_QUANTIZED "int-quantized"
#define ENG_CT_SPARSE_BITMASK "sparse-bitmask"
#define ENG_CT_SPARSE_24 "sparse-24-bitmask"

// How a target is stored: its quantized form and its sparse one (a plan
// row's `stored` is q | s << 2).
enum { ENG_CT_Q_NONE, ENG_CT_Q_PACK, ENG_CT_Q_INT };
enum { ENG_CT_S_NONE, ENG_CT_S_BITMASK, ENG_CT_S_24 };

// The forms of tensor ti under plan p, and why sparsity is not stacked on
// a quantized form where it is not (NULL otherwise).
int eng_ct_kinds(const eng_plan *p, size_t ti, int *qk, int *sk,
                 const char **note);

#endif

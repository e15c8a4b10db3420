// blas.c: the engine's one touch of BLAS configuration.
#include "engine/math/linalg.h"

// OpenBLAS's own entry point (from its cblas.h), declared here so the
// engine needs no OpenBLAS-specific header path.
void openblas_set_num_threads(int n);

void eng_blas_threads(int n) { openblas_set_num_threads(n > 0 ? n : 1); }

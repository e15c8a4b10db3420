// linalg.h: the dense linear algebra the engine needs, row-major F32,
// through OpenBLAS (BLAS-3 and LAPACK), with plain scalar `_ref` versions
// beside the fast ones for the tests.
//
// Shapes are given as (rows, cols); every matrix is row-major and
// contiguous unless a leading dimension says otherwise.
#ifndef ENG_LINALG_H
#define ENG_LINALG_H

#include "common/err.h"
#include "engine/hooks.h"

#include <stdbool.h>
#include <stdint.h>

// Sets the threads BLAS may use, for the whole process (eng_set_threads):
// OpenBLAS runs each call on one thread and the engine's threads (par.h)
// share the calls of a product out over tiles fixed by its shape.
void eng_blas_threads(int n);

// The kernels OpenBLAS chose (its core name: "Haswell", "Prescott"...).
// It chooses before main runs, from cpuid; on some virtual machines (a
// generic model name in cpuid) it falls back to generic SSE kernels, five
// times slower than the CPU allows.
const char *eng_blas_core(void);

// What this CPU and its OS support, as ENG_CPU_* bits.
enum {
    ENG_CPU_AVX2 = 1u << 0,        // with FMA
    ENG_CPU_AVX512 = 1u << 1,      // F, DQ, CD, BW, VL
    ENG_CPU_AVX512_BF16 = 1u << 2, // and BF16
};
unsigned eng_cpu_features(void);

// The core to run OpenBLAS as (OPENBLAS_CORETYPE) when `current` is a
// generic one and the features allow better; NULL when current is good.
const char *eng_blas_better_core(const char *current, unsigned features);

// Y (n, out) = X (n, in) @ W (out, in)^T [+ b (out,)]. A linear layer.
void eng_linear(float *restrict y, const float *restrict x,
                const float *restrict w, const float *restrict b, int64_t n,
                int64_t in, int64_t out);
void eng_linear_ref(float *restrict y, const float *restrict x,
                    const float *restrict w, const float *restrict b, int64_t n,
                    int64_t in, int64_t out);

// C (m, n) = alpha * A (m, k) @ B (k, n) + beta * C, with leading
// dimensions. Transposes as BLAS does. On the engine's threads, by tiles of
// rows (or columns) of C; eng_gemm1 is one call on the calling thread, for
// use inside a parallel loop.
void eng_gemm1(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
               const float *a, int64_t lda, const float *b, int64_t ldb,
               float beta, float *c, int64_t ldc);
void eng_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb,
              float beta, float *c, int64_t ldc);

// H (cols, cols) += X (n, cols)^T @ X; the upper triangle only (row-major
// sense: H[i][j], i <= j). eng_sym_fill copies it to the lower.
void eng_syrk_acc(float *restrict h, const float *restrict x, int64_t n,
                  int64_t cols);
void eng_syrk_acc_ref(float *restrict h, const float *restrict x, int64_t n,
                      int64_t cols);
void eng_sym_fill(float *h, int64_t n);

// s (cols,) += column sums of squares of X (n, cols).
void eng_colsq_acc(float *restrict s, const float *restrict x, int64_t n,
                   int64_t cols);

// In place: A (n, n) symmetric positive definite (full or upper) becomes
// U, the upper Cholesky factor of A^-1 (A^-1 = U^T U), row-major, zero
// below the diagonal. Returns 0, or SH_ENUMERIC when A is not positive
// definite (numerically), leaving A undefined (the _ref: SH_ENOMEM too).
int eng_chol_inverse_upper(float *a, int64_t n);
int eng_chol_inverse_upper_ref(float *a, int64_t n);

// trace(D H D^T) for D (rows, cols), H (cols, cols) symmetric (only its
// upper triangle is read). work: (rows, cols). Accumulated in double.
double eng_quad_trace(const float *d, const float *h, int64_t rows,
                      int64_t cols, float *work);

// --- linear algebra in pieces (linalg.c)
//
// linalg.h's products, split as ENG_POLL_FMA says, polling h after every
// piece. Each returns 0, or SH_ECANCELED with the output partly written.
// When a product fits in one piece the call is exactly linalg.h's.

// C (m, n) = alpha * op(A) (m, k) @ op(B) (k, n) + beta * C, as eng_gemm;
// split into pieces of rows of C (op(A) rows), or of columns when n > m.
int eng_gemm_polled(bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                    float alpha, const float *a, int64_t lda, const float *b,
                    int64_t ldb, float beta, float *c, int64_t ldc,
                    const eng_hooks *h);

// Y (n, out) = X (n, in) @ W (out, in)^T [+ b (out,)], as eng_linear.
int eng_linear_polled(float *restrict y, const float *restrict x,
                      const float *restrict w, const float *restrict b,
                      int64_t n, int64_t in, int64_t out, const eng_hooks *h);

// H (cols, cols) upper += X (n, cols)^T @ X, as eng_syrk_acc, in pieces of
// rows of X (the sums then add piece by piece).
int eng_syrk_acc_polled(float *restrict h, const float *restrict x, int64_t n,
                        int64_t cols, const eng_hooks *hk);

// *out = trace(D H D^T), as eng_quad_trace, in pieces of rows of D (the
// sums then add piece by piece), with work (rows, cols) as there.
int eng_quad_trace_polled(double *out, const float *d, const float *h,
                          int64_t rows, int64_t cols, float *work,
                          const eng_hooks *hk);

// As eng_chol_inverse_upper: A (n, n) symmetric positive definite (full or
// upper) becomes U upper with A^-1 = U^T U, zero below the diagonal.
// nb = 0: eng_chol_inverse_upper itself while n^3 <= 2 ENG_POLL_FMA (n <=
// 2048), else blocks of 256; nb > 0: blocks of nb (tests). By blocks, A is
// reversed (B = J A J), factored B = M M^T (right-looking, by row panels) and M
// inverted (by column blocks), and U = J M^-1 J: the same U, by two n^3/3
// steps. Returns 0, SH_ENUMERIC (not positive definite; A undefined) or
// SH_ECANCELED.
int eng_chol_inverse_polled(float *a, int64_t n, int64_t nb,
                            const eng_hooks *h);

#endif

// linalg.c: OpenBLAS calls and their scalar references, and the same
// products split into pieces with cancel polls (engine_int.h).
#include "engine/math/linalg.h"

#include "engine/math/poll.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// LAPACK from OpenBLAS (Fortran calling convention).
void spotrf_(const char *uplo, const int *n, float *a, const int *lda,
             int *info);
void spotri_(const char *uplo, const int *n, float *a, const int *lda,
             int *info);
void strtri_(const char *uplo, const char *diag, const int *n, float *a,
             const int *lda, int *info);

void eng_linear(float *restrict y, const float *restrict x,
                const float *restrict w, const float *restrict b, int64_t n,
                int64_t in, int64_t out)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)out,
                (int)in, 1.0f, x, (int)in, w, (int)in, 0.0f, y, (int)out);
    if (b)
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < out; j++)
                y[i * out + j] += b[j];
}

void eng_linear_ref(float *restrict y, const float *restrict x,
                    const float *restrict w, const float *restrict b, int64_t n,
                    int64_t in, int64_t out)
{
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < out; j++) {
            double acc = b ? b[j] : 0.0;
            for (int64_t k = 0; k < in; k++)
                acc += (double)x[i * in + k] * w[j * in + k];
            y[i * out + j] = (float)acc;
        }
    }
}

void eng_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb,
              float beta, float *c, int64_t ldc)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha,
                a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

void eng_syrk_acc(float *restrict h, const float *restrict x, int64_t n,
                  int64_t cols)
{
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)cols, (int)n, 1.0f,
                x, (int)cols, 1.0f, h, (int)cols);
}

void eng_syrk_acc_ref(float *restrict h, const float *restrict x, int64_t n,
                      int64_t cols)
{
    for (int64_t i = 0; i < cols; i++) {
        for (int64_t j = i; j < cols; j++) {
            double acc = 0;
            for (int64_t r = 0; r < n; r++)
                acc += (double)x[r * cols + i] * x[r * cols + j];
            h[i * cols + j] += (float)acc;
        }
    }
}

void eng_sym_fill(float *h, int64_t n)
{
    // By tiles, so both sides stay in cache (a plain transpose of a large
    // H misses on every read).
    enum { TILE = 64 };
    for (int64_t i0 = 0; i0 < n; i0 += TILE)
        for (int64_t j0 = 0; j0 <= i0; j0 += TILE)
            for (int64_t i = i0; i < i0 + TILE && i < n; i++)
                for (int64_t j = j0; j < j0 + TILE && j < i; j++)
                    h[i * n + j] = h[j * n + i];
}

void eng_colsq_acc(float *restrict s, const float *restrict x, int64_t n,
                   int64_t cols)
{
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < cols; j++)
            s[j] += x[r * cols + j] * x[r * cols + j];
}

// Row-major upper (H[i][j], i <= j) is column-major lower: LAPACK works on
// 'L' of the same memory.
int eng_chol_inverse_upper(float *a, int64_t n)
{
    int nn = (int)n, info = 0;
    // A = L L^T (column-major lower == our upper).
    spotrf_("L", &nn, a, &nn, &info);
    if (info != 0)
        return SH_ENUMERIC;
    // A^-1 from the factor, in the same triangle.
    spotri_("L", &nn, a, &nn, &info);
    if (info != 0)
        return SH_ENUMERIC;
    // A^-1 = L' L'^T (column-major lower); L'^T is our upper U with
    // A^-1 = U^T U... in row-major terms the stored triangle is U.
    spotrf_("L", &nn, a, &nn, &info);
    if (info != 0)
        return SH_ENUMERIC;
    // What we hold, read row-major, is the upper factor U of A^-1 with
    // A^-1 = U^T U: column-major L (lower) transposed. Zero the rest.
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++)
            a[i * n + j] = 0.0f;
    return 0;
}

// Cholesky A = L L^T of a full symmetric row-major matrix, in double.
static bool chol_ref(double *a, int64_t n)
{
    for (int64_t j = 0; j < n; j++) {
        double s = a[j * n + j];
        for (int64_t k = 0; k < j; k++)
            s -= a[j * n + k] * a[j * n + k];
        if (!(s > 0))
            return false;
        a[j * n + j] = sqrt(s);
        for (int64_t i = j + 1; i < n; i++) {
            double t = a[i * n + j];
            for (int64_t k = 0; k < j; k++)
                t -= a[i * n + k] * a[j * n + k];
            a[i * n + j] = t / a[j * n + j];
        }
        for (int64_t k = j + 1; k < n; k++)
            a[j * n + k] = 0;
    }
    return true;
}

int eng_chol_inverse_upper_ref(float *a, int64_t n)
{
    size_t nn = (size_t)(n * n);
    double *m = malloc(nn * sizeof *m), *inv = calloc(nn, sizeof *inv);
    if (!m || !inv) {
        free(m);
        free(inv);
        return SH_ENOMEM;
    }
    bool ok = true;
    for (int64_t i = 0; ok && i < n; i++)
        for (int64_t j = 0; j < n; j++)
            m[i * n + j] = a[(i <= j ? i : j) * n + (i <= j ? j : i)];
    ok = ok && chol_ref(m, n);
    // A^-1 = L^-T L^-1: invert L column by column (forward substitution).
    for (int64_t c = 0; ok && c < n; c++) {
        for (int64_t i = 0; i < n; i++) {
            double t = i == c ? 1.0 : 0.0;
            for (int64_t k = 0; k < i; k++)
                t -= m[i * n + k] * inv[k * n + c];
            inv[i * n + c] = t / m[i * n + i]; // inv = L^-1
        }
    }
    if (ok) {
        // S = L^-T L^-1, then its Cholesky S = R R^T; U = R^T.
        for (int64_t i = 0; i < n; i++) {
            for (int64_t j = 0; j < n; j++) {
                double t = 0;
                for (int64_t k = 0; k < n; k++)
                    t += inv[k * n + i] * inv[k * n + j];
                m[i * n + j] = t;
            }
        }
        ok = chol_ref(m, n);
    }
    for (int64_t i = 0; ok && i < n; i++)
        for (int64_t j = 0; j < n; j++)
            a[i * n + j] = j >= i ? (float)m[j * n + i] : 0.0f;
    free(m);
    free(inv);
    return ok ? 0 : SH_ENUMERIC;
}

double eng_quad_trace(const float *d, const float *h, int64_t rows,
                      int64_t cols, float *work)
{
    // work = D H, then sum of work .* D.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)cols,
                (int)cols, 1.0f, d, (int)cols, h, (int)cols, 0.0f, work,
                (int)cols);
    double t = 0;
    for (int64_t i = 0; i < rows * cols; i++)
        t += (double)work[i] * d[i];
    return t;
}

// --- in pieces, with polls

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Rows (of a product with `per_row` multiply-adds a row) in a piece.
static int64_t piece_rows(uint64_t per_row)
{
    uint64_t r = per_row ? ENG_POLL_FMA / per_row : ENG_POLL_FMA;
    return r > 0 ? (int64_t)r : 1;
}

int eng_gemm_polled(bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                    float alpha, const float *a, int64_t lda, const float *b,
                    int64_t ldb, float beta, float *c, int64_t ldc,
                    const eng_hooks *h)
{
    if (n > m) { // pieces of columns of C: of op(B)
        int64_t per = piece_rows((uint64_t)m * (uint64_t)k);
        for (int64_t c0 = 0; c0 < n; c0 += per) {
            int64_t w = min64(per, n - c0);
            eng_gemm(ta, tb, m, w, k, alpha, a, lda, tb ? b + c0 * ldb : b + c0,
                     ldb, beta, c + c0, ldc);
            if (eng_hooks_cancelled(h))
                return SH_ECANCELED;
        }
        return 0;
    }
    int64_t per = piece_rows((uint64_t)n * (uint64_t)k);
    for (int64_t r0 = 0; r0 < m; r0 += per) { // pieces of rows of op(A)
        int64_t w = min64(per, m - r0);
        eng_gemm(ta, tb, w, n, k, alpha, ta ? a + r0 : a + r0 * lda, lda, b,
                 ldb, beta, c + r0 * ldc, ldc);
        if (eng_hooks_cancelled(h))
            return SH_ECANCELED;
    }
    return 0;
}

int eng_linear_polled(float *restrict y, const float *restrict x,
                      const float *restrict w, const float *restrict b,
                      int64_t n, int64_t in, int64_t out, const eng_hooks *h)
{
    if ((uint64_t)n * (uint64_t)in * (uint64_t)out <= ENG_POLL_FMA) {
        eng_linear(y, x, w, b, n, in, out);
        return eng_hooks_cancelled(h) ? SH_ECANCELED : 0;
    }
    int rc = eng_gemm_polled(false, true, n, out, in, 1.0f, x, in, w, in, 0.0f,
                             y, out, h);
    if (rc == 0 && b) // as eng_linear: the bias after the product
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < out; j++)
                y[i * out + j] += b[j];
    return rc;
}

int eng_syrk_acc_polled(float *restrict h, const float *restrict x, int64_t n,
                        int64_t cols, const eng_hooks *hk)
{
    // A row of X costs cols (cols + 1) / 2 multiply-adds.
    int64_t per = piece_rows((uint64_t)cols * (uint64_t)(cols + 1) / 2);
    for (int64_t r0 = 0; r0 < n; r0 += per) {
        eng_syrk_acc(h, x + r0 * cols, min64(per, n - r0), cols);
        if (eng_hooks_cancelled(hk))
            return SH_ECANCELED;
    }
    return 0;
}

int eng_quad_trace_polled(double *out, const float *d, const float *h,
                          int64_t rows, int64_t cols, float *work,
                          const eng_hooks *hk)
{
    int64_t per = piece_rows((uint64_t)cols * (uint64_t)cols);
    double t = 0;
    for (int64_t r0 = 0; r0 < rows; r0 += per) {
        int64_t r = min64(per, rows - r0);
        const float *dr = d + r0 * cols;
        // work = D H for these rows, then their part of sum(work .* D),
        // added in eng_quad_trace's order.
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)r,
                    (int)cols, (int)cols, 1.0f, dr, (int)cols, h, (int)cols,
                    0.0f, work, (int)cols);
        for (int64_t i = 0; i < r * cols; i++)
            t += (double)work[i] * dr[i];
        if (eng_hooks_cancelled(hk))
            return SH_ECANCELED;
    }
    *out = t;
    return 0;
}

// Reverses the n * n array: row-major J A J.
static void reverse_all(float *a, int64_t n)
{
    for (int64_t i = 0, j = n * n - 1; i < j; i++, j--) {
        float t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

// In place, B (n, n) lower (row-major) = M M^T, M lower; right-looking by
// blocks of nb columns, the trailing update by row panels. LAPACK works
// column-major, where our lower is its upper.
static int chol_lower_blocked(float *a, int64_t n, int64_t nb,
                              const eng_hooks *h)
{
    for (int64_t k = 0; k < n; k += nb) {
        int64_t kb = min64(nb, n - k);
        int kbi = (int)kb, lda = (int)n, info = 0;
        spotrf_("U", &kbi, a + k * n + k, &lda, &info);
        if (info != 0)
            return SH_ENUMERIC;
        int64_t r = k + kb, rest = n - r;
        if (rest == 0)
            break;
        // Panel below: P (rest, kb) := P M_kk^-T.
        cblas_strsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans,
                    CblasNonUnit, (int)rest, kbi, 1.0f, a + k * n + k, lda,
                    a + r * n + k, lda);
        if (eng_hooks_cancelled(h))
            return SH_ECANCELED;
        // Trailing lower -= P P^T, a row panel at a time.
        for (int64_t i = r; i < n; i += nb) {
            int64_t ib = min64(nb, n - i);
            if (i > r) // left of the diagonal block
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ib,
                            (int)(i - r), kbi, -1.0f, a + i * n + k, lda,
                            a + r * n + k, lda, 1.0f, a + i * n + r, lda);
            cblas_ssyrk(CblasRowMajor, CblasLower, CblasNoTrans, (int)ib, kbi,
                        -1.0f, a + i * n + k, lda, 1.0f, a + i * n + i, lda);
            if (eng_hooks_cancelled(h))
                return SH_ECANCELED;
        }
    }
    return 0;
}

// In place, M (n, n) lower (row-major) becomes M^-1, by column blocks
// from the last (LAPACK's strtri, lower): the block column below a
// diagonal block is -(M^-1 of what follows) P M_jj^-1, the first product
// by row panels from the bottom (each reads only rows above it, still
// unchanged).
static int tri_inverse_lower_blocked(float *a, int64_t n, int64_t nb,
                                     const eng_hooks *h)
{
    int lda = (int)n;
    for (int64_t j = (n - 1) / nb * nb; j >= 0; j -= nb) {
        int64_t jb = min64(nb, n - j), r = j + jb;
        int jbi = (int)jb, info = 0;
        for (int64_t i = (n - 1 - r) / nb * nb + r; r < n && i >= r; i -= nb) {
            int64_t ib = min64(nb, n - i);
            // P_i := X_ii P_i + X[i, r:i] P[r:i]  (X = M^-1 below r)
            cblas_strmm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans,
                        CblasNonUnit, (int)ib, jbi, 1.0f, a + i * n + i, lda,
                        a + i * n + j, lda);
            if (i > r)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ib,
                            jbi, (int)(i - r), 1.0f, a + i * n + r, lda,
                            a + r * n + j, lda, 1.0f, a + i * n + j, lda);
            if (eng_hooks_cancelled(h))
                return SH_ECANCELED;
        }
        if (r < n) // P := -P M_jj^-1
            cblas_strsm(CblasRowMajor, CblasRight, CblasLower, CblasNoTrans,
                        CblasNonUnit, (int)(n - r), jbi, -1.0f, a + j * n + j,
                        lda, a + r * n + j, lda);
        strtri_("U", "N", &jbi, a + j * n + j, &lda, &info);
        if (info != 0)
            return SH_ENUMERIC;
        if (eng_hooks_cancelled(h))
            return SH_ECANCELED;
    }
    return 0;
}

int eng_chol_inverse_polled(float *a, int64_t n, int64_t nb, const eng_hooks *h)
{
    if (nb <= 0 &&
        (uint64_t)n * (uint64_t)n * (uint64_t)n <= 2 * ENG_POLL_FMA) {
        if (eng_chol_inverse_upper(a, n) != 0)
            return SH_ENUMERIC;
        return eng_hooks_cancelled(h) ? SH_ECANCELED : 0;
    }
    if (nb <= 0)
        nb = 256;
    // A = R R^T with R = J M J upper, so A^-1 = (R^-1)^T R^-1: U = R^-1 =
    // J M^-1 J. The upper triangle of A is the lower one of J A J.
    reverse_all(a, n);
    int rc = chol_lower_blocked(a, n, nb, h);
    if (rc == 0)
        rc = tri_inverse_lower_blocked(a, n, nb, h);
    if (rc != 0)
        return rc;
    reverse_all(a, n);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++)
            a[i * n + j] = 0.0f;
    return 0;
}

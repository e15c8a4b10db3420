// linalg.c: OpenBLAS calls and their scalar references.
#include "engine/linalg.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

// LAPACK from OpenBLAS (Fortran calling convention).
void spotrf_(const char *uplo, const int *n, float *a, const int *lda,
             int *info);
void spotri_(const char *uplo, const int *n, float *a, const int *lda,
             int *info);

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
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++)
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
bool eng_chol_inverse_upper(float *a, int64_t n)
{
    int nn = (int)n, info = 0;
    // A = L L^T (column-major lower == our upper).
    spotrf_("L", &nn, a, &nn, &info);
    if (info != 0)
        return false;
    // A^-1 from the factor, in the same triangle.
    spotri_("L", &nn, a, &nn, &info);
    if (info != 0)
        return false;
    // A^-1 = L' L'^T (column-major lower); L'^T is our upper U with
    // A^-1 = U^T U... in row-major terms the stored triangle is U.
    spotrf_("L", &nn, a, &nn, &info);
    if (info != 0)
        return false;
    // What we hold, read row-major, is the upper factor U of A^-1 with
    // A^-1 = U^T U: column-major L (lower) transposed. Zero the rest.
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < i; j++)
            a[i * n + j] = 0.0f;
    return true;
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

bool eng_chol_inverse_upper_ref(float *a, int64_t n)
{
    size_t nn = (size_t)(n * n);
    double *m = malloc(nn * sizeof *m), *inv = calloc(nn, sizeof *inv);
    bool ok = m && inv;
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
    return ok;
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

// linalg.c: OpenBLAS calls and their scalar references, and the same
// products split into pieces with cancel polls.
//
// OpenBLAS runs on one thread (eng_blas_threads): its own threading splits
// work by the thread count, and its GEMM, SYRK and factorisations then
// round differently for each count. The engine's threads (par.h) run the
// calls instead, over tiles that depend on the shapes alone (TILE_N rows or
// columns), so every value comes from the same calls whatever the thread
// count, and a run's bytes are the same for 1 thread or 64.
#include "engine/math/linalg.h"

#include "common/par.h"
#include "common/util.h"
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

#define TILE_N 256 // rows or columns of a BLAS call on one thread

void eng_linear(float *restrict y, const float *restrict x,
                const float *restrict w, const float *restrict b, int64_t n,
                int64_t in, int64_t out)
{
    eng_gemm(false, true, n, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
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

void eng_gemm1(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
               const float *a, int64_t lda, const float *b, int64_t ldb,
               float beta, float *c, int64_t ldc)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans,
                tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha,
                a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

typedef struct gemm_job {
    bool ta, tb, by_rows;
    int64_t m, n, k, lda, ldb, ldc;
    float alpha, beta;
    const float *a, *b;
    float *c;
    int64_t tile;
} gemm_job;

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Rows (or columns) of C a tile: a sixteenth, at least TILE_N, in
// multiples of 64. Every tile packs the other operand again: tiles must
// not be small.
static int64_t gemm_tile(int64_t dim)
{
    int64_t t = ((dim + 15) / 16 + 63) / 64 * 64;
    return t < TILE_N ? TILE_N : t;
}

// Tiles [t0, t1) of C: j->tile rows (with A's) or columns (with B's).
static void gemm_tiles(void *ctx, int64_t t0, int64_t t1)
{
    const gemm_job *j = ctx;
    for (int64_t t = t0; t < t1; t++) {
        int64_t at = t * j->tile;
        if (j->by_rows)
            eng_gemm1(j->ta, j->tb, min64(j->tile, j->m - at), j->n, j->k,
                      j->alpha, j->ta ? j->a + at : j->a + at * j->lda, j->lda,
                      j->b, j->ldb, j->beta, j->c + at * j->ldc, j->ldc);
        else
            eng_gemm1(j->ta, j->tb, j->m, min64(j->tile, j->n - at), j->k,
                      j->alpha, j->a, j->lda,
                      j->tb ? j->b + at * j->ldb : j->b + at, j->ldb, j->beta,
                      j->c + at, j->ldc);
    }
}

// C's tiles in groups of `group` tiles, each group on the threads, a poll
// of h after each. The groups may depend on the thread count; the tiles,
// and so the values, do not.
static int gemm_groups(gemm_job j, int64_t group, const eng_hooks *h)
{
    int64_t dim = j.by_rows ? j.m : j.n;
    for (int64_t at = 0; at < dim; at += group * j.tile) {
        gemm_job g = j;
        int64_t len = min64(group * j.tile, dim - at);
        if (j.by_rows) {
            g.m = len;
            g.a = j.ta ? j.a + at : j.a + at * j.lda;
            g.c = j.c + at * j.ldc;
        } else {
            g.n = len;
            g.b = j.tb ? j.b + at * j.ldb : j.b + at;
            g.c = j.c + at;
        }
        sh_par_for((len + j.tile - 1) / j.tile, 1, 1, gemm_tiles, &g);
        if (eng_hooks_cancelled(h))
            return SH_ECANCELED;
    }
    return 0;
}

static gemm_job gemm_plan(bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                          float alpha, const float *a, int64_t lda,
                          const float *b, int64_t ldb, float beta, float *c,
                          int64_t ldc)
{
    gemm_job j = {ta, tb, m >= n, m, n, k, lda, ldb, ldc, alpha, beta, a, b, c};
    j.tile = gemm_tile(j.by_rows ? m : n);
    return j;
}

void eng_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
              const float *a, int64_t lda, const float *b, int64_t ldb,
              float beta, float *c, int64_t ldc)
{
    gemm_job j =
        gemm_plan(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    gemm_groups(j, INT64_MAX / j.tile, NULL); // one group: every tile
}

// H's upper triangle in column panels of equal work: panel j spans columns
// [b_j, b_j+1) of every row above its end, b_j = cols sqrt(j / P) (in
// multiples of 64), P fixed by the width alone. Each panel is a product
// (the rows above its diagonal block) and a SYRK (the block).
enum { SYRK_MAX_PANELS = 16 };

typedef struct syrk_job {
    float *h;
    const float *x;
    int64_t n, cols;
    int64_t b[SYRK_MAX_PANELS + 1];
} syrk_job;

static void syrk_panels(void *ctx, int64_t p0, int64_t p1)
{
    const syrk_job *j = ctx;
    int64_t cols = j->cols;
    for (int64_t p = p0; p < p1; p++) {
        int64_t c0 = j->b[p], w = j->b[p + 1] - c0;
        if (w <= 0)
            continue;
        if (c0 > 0)
            eng_gemm1(true, false, c0, w, j->n, 1.0f, j->x, cols, j->x + c0,
                      cols, 1.0f, j->h + c0, cols);
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)w, (int)j->n,
                    1.0f, j->x + c0, (int)cols, 1.0f, j->h + c0 * cols + c0,
                    (int)cols);
    }
}

void eng_syrk_acc(float *restrict h, const float *restrict x, int64_t n,
                  int64_t cols)
{
    syrk_job j = {.h = h, .x = x, .n = n, .cols = cols};
    int64_t p = cols >= 2048 ? 16 : cols >= 512 ? 8 : 1;
    for (int64_t i = 0; i <= p; i++) {
        int64_t b = (int64_t)((double)cols * sqrt((double)i / (double)p));
        b = (b + 32) / 64 * 64;
        j.b[i] = i == p || b > cols ? cols : b;
    }
    sh_par_for(p, 1, 1, syrk_panels, &j);
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

typedef struct colsq_job {
    float *s;
    const float *x;
    int64_t n, cols;
} colsq_job;

// s (n,) += x * x, eight at a time for the vectoriser (the same
// operations, so the same sums).
static inline void add_squares(float *restrict s, const float *restrict x,
                               int64_t n)
{
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++)
            s[j + l] += x[j + l] * x[j + l];
    for (; j < n; j++)
        s[j] += x[j] * x[j];
}

// Columns [j0, j1): each sums its rows in order, whoever runs it; the rows
// stream in order.
SH_HOT static void colsq_cols(void *ctx, int64_t j0, int64_t j1)
{
    const colsq_job *c = ctx;
    for (int64_t r = 0; r < c->n; r++)
        add_squares(c->s + j0, c->x + r * c->cols + j0, j1 - j0);
}

void eng_colsq_acc(float *restrict s, const float *restrict x, int64_t n,
                   int64_t cols)
{
    colsq_job c = {s, x, n, cols};
    sh_par_for(cols, 16, n * cols < (1 << 16) ? cols : 64, colsq_cols, &c);
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

// trace(D H D^T) over rows of D, from H's upper triangle U (H = U + U^T -
// diag): 2 sum((D U) .* D) - sum_j H_jj |D_:j|^2. D U is a triangular
// product, half the multiply-adds of D H.
static double quad_trace_tile(const float *d, const float *h, int64_t rows,
                              int64_t cols, float *work)
{
    memcpy(work, d, (size_t)(rows * cols) * sizeof *work);
    cblas_strmm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans,
                CblasNonUnit, (int)rows, (int)cols, 1.0f, h, (int)cols, work,
                (int)cols);
    // 2 sum((D U) .* D), then the diagonal's part, with the diagonal
    // copied into work's first row (read already) for unit strides.
    double t = 0;
    for (int64_t r = 0; r < rows; r++) {
        const float *dr = d + r * cols;
        float *wr = work + r * cols;
        double s = 0;
        for (int64_t j = 0; j < cols; j++)
            s += (double)wr[j] * dr[j];
        t += 2 * s;
    }
    for (int64_t j = 0; j < cols; j++)
        work[j] = h[j * cols + j]; // the diagonal, once
    for (int64_t r = 0; r < rows; r++) {
        const float *dr = d + r * cols;
        double s = 0;
        for (int64_t j = 0; j < cols; j++)
            s += (double)work[j] * dr[j] * dr[j];
        t -= s;
    }
    return t;
}

typedef struct trace_job {
    const float *d, *h;
    float *work;
    double *part; // a sum per tile, added in tile order after
    int64_t rows, cols;
} trace_job;

static void trace_tiles(void *ctx, int64_t t0, int64_t t1)
{
    const trace_job *j = ctx;
    for (int64_t t = t0; t < t1; t++) {
        int64_t r0 = t * TILE_N;
        j->part[t] = quad_trace_tile(j->d + r0 * j->cols, j->h,
                                     min64(TILE_N, j->rows - r0), j->cols,
                                     j->work + r0 * j->cols);
    }
}

static double quad_trace_rows(const float *d, const float *h, int64_t rows,
                              int64_t cols, float *work)
{
    enum { MAX_TILES = 1024 };
    double part[MAX_TILES];
    int64_t tiles = (rows + TILE_N - 1) / TILE_N;
    if (tiles > MAX_TILES) { // a piece that large: halves
        int64_t half = (tiles / 2) * TILE_N;
        return quad_trace_rows(d, h, half, cols, work) +
               quad_trace_rows(d + half * cols, h, rows - half, cols,
                               work + half * cols);
    }
    trace_job j = {d, h, work, part, rows, cols};
    sh_par_for(tiles, 1, 1, trace_tiles, &j);
    double t = 0;
    for (int64_t i = 0; i < tiles; i++)
        t += part[i];
    return t;
}

double eng_quad_trace(const float *d, const float *h, int64_t rows,
                      int64_t cols, float *work)
{
    return quad_trace_rows(d, h, rows, cols, work);
}

// --- in pieces, with polls

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
    // Groups of about ENG_POLL_FMA multiply-adds a thread.
    gemm_job j =
        gemm_plan(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    uint64_t tile_fma = (uint64_t)j.tile * (uint64_t)(j.by_rows ? n : m) *
                        (uint64_t)(k ? k : 1);
    int64_t group = (int64_t)(ENG_POLL_FMA * (uint64_t)sh_par_count() /
                              (tile_fma ? tile_fma : 1));
    return gemm_groups(j, group < 1 ? 1 : group, h);
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
    // A row of X costs cols (cols + 1) / 2 multiply-adds; a piece has at
    // least 2048 rows (each piece reads and writes all of H once).
    int64_t per = piece_rows((uint64_t)cols * (uint64_t)(cols + 1) / 2);
    per = per < 2048 ? 2048 : per;
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
    int64_t per = piece_rows((uint64_t)cols * (uint64_t)(cols + 1) / 2);
    double t = 0;
    for (int64_t r0 = 0; r0 < rows; r0 += per) {
        int64_t r = min64(per, rows - r0);
        t += quad_trace_rows(d + r0 * cols, h, r, cols, work);
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
typedef struct chol_job {
    float *a, *tmp;
    int64_t n, nb, k, kb, r, j, jb; // the step: rows r.., block k or j
    // the panel solve: P (rows r.., w) := alpha P op(M_dd)^-1
    int64_t d, w;
    bool trans;
    float alpha;
} chol_job;

// The panel solve, TILE_N rows a tile (rows are independent).
static void panel_solve_tiles(void *ctx, int64_t t0, int64_t t1)
{
    const chol_job *c = ctx;
    int lda = (int)c->n;
    for (int64_t t = t0; t < t1; t++) {
        int64_t i = c->r + t * TILE_N;
        cblas_strsm(CblasRowMajor, CblasRight, CblasLower,
                    c->trans ? CblasTrans : CblasNoTrans, CblasNonUnit,
                    (int)min64(TILE_N, c->n - i), (int)c->w, c->alpha,
                    c->a + c->d * c->n + c->d, lda, c->a + i * c->n + c->d,
                    lda);
    }
}

// The trailing lower -= P P^T, row panels [p0, p1) of nb rows.
static void chol_trailing(void *ctx, int64_t p0, int64_t p1)
{
    const chol_job *c = ctx;
    float *a = c->a;
    int64_t n = c->n, k = c->k, r = c->r;
    int lda = (int)n, kbi = (int)c->kb;
    for (int64_t p = p0; p < p1; p++) {
        int64_t i = r + p * c->nb, ib = min64(c->nb, n - i);
        if (i > r) // left of the diagonal block
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ib,
                        (int)(i - r), kbi, -1.0f, a + i * n + k, lda,
                        a + r * n + k, lda, 1.0f, a + i * n + r, lda);
        cblas_ssyrk(CblasRowMajor, CblasLower, CblasNoTrans, (int)ib, kbi,
                    -1.0f, a + i * n + k, lda, 1.0f, a + i * n + i, lda);
    }
}

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
        // Panel below: P (rest, kb) := P M_kk^-T, by row tiles.
        chol_job c = {.a = a,
                      .n = n,
                      .nb = nb,
                      .k = k,
                      .kb = kb,
                      .r = r,
                      .d = k,
                      .w = kb,
                      .trans = true,
                      .alpha = 1.0f};
        sh_par_for((rest + TILE_N - 1) / TILE_N, 1, 1, panel_solve_tiles, &c);
        if (eng_hooks_cancelled(h))
            return SH_ECANCELED;
        // Trailing lower -= P P^T, row panels on the threads.
        sh_par_for((rest + nb - 1) / nb, 1, 1, chol_trailing, &c);
        if (eng_hooks_cancelled(h))
            return SH_ECANCELED;
    }
    return 0;
}

// In place, M (n, n) lower (row-major) becomes M^-1, by column blocks
// from the last (LAPACK's strtri, lower): the block column below a
// diagonal block is -(M^-1 of what follows) P M_jj^-1, the first product
// by row panels from the bottom (each reads only rows above it, still
// unchanged).
// P_i := X_ii P_i + X[i, r:i] P[r:i] (X = M^-1 below r) for row panels
// [p0, p1): P[r:i] read from the copy made before, so panels are
// independent.
static void tri_panels(void *ctx, int64_t p0, int64_t p1)
{
    const chol_job *c = ctx;
    float *a = c->a;
    int64_t n = c->n, j = c->j, r = c->r, jb = c->jb;
    int lda = (int)n, jbi = (int)jb;
    for (int64_t p = p0; p < p1; p++) {
        int64_t i = r + p * c->nb, ib = min64(c->nb, n - i);
        cblas_strmm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans,
                    CblasNonUnit, (int)ib, jbi, 1.0f, a + i * n + i, lda,
                    a + i * n + j, lda);
        if (i > r)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ib, jbi,
                        (int)(i - r), 1.0f, a + i * n + r, lda, c->tmp, jbi,
                        1.0f, a + i * n + j, lda);
    }
}

static int tri_inverse_lower_blocked(float *a, int64_t n, int64_t nb,
                                     const eng_hooks *h)
{
    int lda = (int)n;
    float *tmp = malloc((size_t)n * (size_t)nb * sizeof *tmp);
    if (!tmp)
        return SH_ENOMEM;
    for (int64_t j = (n - 1) / nb * nb; j >= 0; j -= nb) {
        int64_t jb = min64(nb, n - j), r = j + jb;
        int jbi = (int)jb, info = 0;
        chol_job c = {.a = a,
                      .tmp = tmp,
                      .n = n,
                      .nb = nb,
                      .r = r,
                      .j = j,
                      .jb = jb,
                      .d = j,
                      .w = jb,
                      .alpha = -1.0f};
        if (r < n) {
            for (int64_t i = r; i < n; i++) // P as it is, for every panel
                memcpy(tmp + (i - r) * jb, a + i * n + j,
                       (size_t)jb * sizeof *tmp);
            sh_par_for((n - r + nb - 1) / nb, 1, 1, tri_panels, &c);
            if (eng_hooks_cancelled(h)) {
                free(tmp);
                return SH_ECANCELED;
            }
            sh_par_for((n - r + TILE_N - 1) / TILE_N, 1, 1, panel_solve_tiles,
                       &c); // P := -P M_jj^-1
        }
        strtri_("U", "N", &jbi, a + j * n + j, &lda, &info);
        if (info != 0 || eng_hooks_cancelled(h)) {
            free(tmp);
            return info != 0 ? SH_ENUMERIC : SH_ECANCELED;
        }
    }
    free(tmp);
    return 0;
}

int eng_chol_inverse_polled(float *a, int64_t n, int64_t nb, const eng_hooks *h)
{
    // Small ones in one LAPACK call (on one thread); the rest blocked,
    // their products on the engine's threads.
    if (nb <= 0 && n <= 512) {
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

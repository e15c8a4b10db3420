// sparsegpt.c: SparseGPT on one layer (see sparsegpt.h for the algorithm).
#include "engine/methods/sparsegpt.h"

#include "common/par.h"
#include "common/util.h"
#include "engine/math/linalg.h"
#include "engine/math/poll.h"
#include "engine/select/mask.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool finite_all(const float *x, size_t n)
{
    float acc = 0;
    for (size_t i = 0; i < n; i++)
        acc += x[i] * 0.0f; // NaN or Inf turns the sum NaN
    return acc == 0.0f;
}

// Marks, in a block (rows, count) of scores, exactly k to prune (the
// lowest; ties by position). Returns 0, or SH_ENOMEM or SH_ENUMERIC (a
// score not finite) with d set.
static int mask_block(uint8_t *mask, const float *score, int64_t rows,
                      int64_t count, uint64_t k, uint64_t *bits, sh_diag *d)
{
    eng_scorer sc;
    eng_scorer_init(&sc, ENG_SCORE_MAGNITUDE, ENG_DTYPE_F32, score,
                    (uint64_t)rows, (uint64_t)count, 0, NULL, NULL);
    eng_threshold t;
    int rc = eng_select_one(&sc, k, &t);
    if (rc == SH_ENOMEM)
        return sh_diag_set(d, rc, "", "out of memory");
    if (rc != 0)
        return sh_diag_set(d, SH_ENUMERIC, "",
                           "the SparseGPT scores are not finite");
    eng_mask_threshold(bits, &sc, &t);
    for (int64_t i = 0; i < rows * count; i++)
        mask[i] = eng_mask_get(bits, (uint64_t)i);
    return 0;
}

// In each row, the m - n lowest scores of the group starting at column c.
static void mask_group(uint8_t *mask, const float *score, int64_t rows,
                       int64_t count, int64_t c, int n, int m)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *s = score + r * count + c;
        for (int i = 0; i < m; i++) {
            int rank = 0;
            for (int j = 0; j < m; j++)
                rank += s[j] < s[i] || (s[j] == s[i] && j < i);
            mask[r * count + c + i] = rank < m - n;
        }
    }
}

// One block of columns [i1, i1 + count) of W, its rows shared among
// threads (rows are independent within a block).
typedef struct block_job {
    float *w, *w1, *q1, *err, *score;
    uint8_t *mask;
    const float *u;
    int64_t cols, i1, count;
    int n, m;
    const eng_grid *g; // with a grid: scale and zero (rows, groups)
    float *scale, *zero;
    int64_t groups;
    const uint64_t *fixed, *zeros; // the mask chosen before; input zeros
    double *obs_err;               // rows, or NULL (eng_sgpt_opts)
} block_job;

static bool bit(const uint64_t *b, int64_t i)
{
    return b && (b[i >> 6] >> (i & 63)) & 1;
}

// The block's columns into w1 and, unstructured, their scores.
static void block_load(void *ctx, int64_t r0, int64_t r1)
{
    block_job *j = ctx;
    int64_t count = j->count, cols = j->cols, i1 = j->i1;
    for (int64_t r = r0; r < r1; r++) {
        memcpy(j->w1 + r * count, j->w + r * cols + i1,
               (size_t)count * sizeof *j->w1);
        for (int64_t c = 0; j->m == 0 && !j->fixed && c < count; c++) {
            float dd = j->u[(i1 + c) * cols + i1 + c];
            float x = j->w1[r * count + c];
            j->score[r * count + c] = bit(j->zeros, r * cols + i1 + c)
                                          ? 0.0f // among the first chosen
                                          : x * x / (dd * dd);
        }
    }
}

// y (n,) -= a x: the in-block update, rows x count^2 / 2 of them. Eight
// at a time for the vectoriser (the same operations, so the same bits).
static inline void sub_scaled(float *restrict y, const float *restrict x,
                              float a, int64_t n)
{
    int64_t k = 0;
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++)
            y[k + l] -= a * x[k + l];
    for (; k < n; k++)
        y[k] -= a * x[k];
}

// The OBS updates inside the block, row by row (N:M: each group's mask
// chosen when the sweep reaches it), and the result back into W.
SH_HOT static void block_sweep(void *ctx, int64_t r0, int64_t r1)
{
    block_job *j = ctx;
    int64_t count = j->count, cols = j->cols, i1 = j->i1;
    const float *u = j->u;
    const eng_grid *g = j->g;
    float maxq = g ? (float)((1 << g->bits) - 1) : 0.0f;
    for (int64_t r = r0; r < r1; r++) {
        float *row = j->w1 + r * count, *sc = j->score + r * count;
        uint8_t *mk = j->mask + r * count;
        float *scale = g ? j->scale + r * j->groups : NULL,
              *zero = g ? j->zero + r * j->groups : NULL;
        int64_t grp = 0;
        double sq = 0;
        for (int64_t i = 0; i < count; i++) {
            const float *urow = u + (i1 + i) * cols + i1; // U[i1+i, i1..i2)
            float dd = urow[i];
            int64_t c = i1 + i;
            if (j->fixed) {
                mk[i] = bit(j->fixed, r * cols + c);
            } else if (j->m > 0 && i % j->m == 0) {
                for (int k = 0; k < j->m; k++) {
                    float du = u[(c + k) * cols + c + k];
                    float x = row[i + k];
                    sc[i + k] = bit(j->zeros, r * cols + c + k)
                                    ? -1.0f
                                    : x * x / (du * du);
                }
                mask_group(mk, sc, 1, count, i, j->n, j->m);
            }
            mk[i] |= bit(j->zeros, r * cols + c);
            // A group's grid from W as it is when the sweep reaches it:
            // this row's columns of the block before its updates, later
            // ones with the lazy updates so far (the reference's W).
            if (g && g->group > 0) {
                grp = c / g->group;
                if (c % g->group == 0) {
                    int64_t n = cols - c < g->group ? cols - c : g->group;
                    eng_grid_fit(g, j->w + r * cols + c, n, &scale[grp],
                                 &zero[grp]);
                }
            }
            float x = row[i];
            float q = mk[i] ? 0.0f : x;
            if (g)
                q = eng_quantize(q, scale[grp], zero[grp], maxq);
            float e = (x - q) / dd;
            j->q1[r * count + i] = q;
            j->err[r * count + i] = e;
            sq += (double)e * e;
            sub_scaled(row + i, urow + i, e, count - i);
        }
        if (j->obs_err)
            j->obs_err[r] += sq;
        memcpy(j->w + r * cols + i1, j->q1 + r * count,
               (size_t)count * sizeof *j->q1);
    }
}

// Rows per thread at the least: a thread's start is worth some work.
#define SWEEP_MIN_ROWS 16

int eng_sparsegpt(float *w, float *h, int64_t rows, int64_t cols,
                  const eng_sgpt_opts *o, double *damp_used,
                  const eng_hooks *hooks, sh_diag *d)
{
    if (!finite_all(w, (size_t)(rows * cols)) ||
        !finite_all(h, (size_t)(cols * cols)))
        return sh_diag_set(d, SH_ENUMERIC, "",
                           "NaN or infinite values in the weights or the "
                           "calibration statistics");
    int64_t bs = o->blocksize > 0 ? o->blocksize : ENG_SGPT_BLOCKSIZE;
    if (o->m > 0 && bs % o->m != 0)
        bs = (bs / o->m + 1) * o->m; // groups never straddle blocks
    size_t hn = (size_t)(cols * cols);
    // Bulk buffers: a fault per 2 MiB page, not per 4 KiB.
    float *h0 = sh_alloc_bulk(hn * sizeof *h0);
    float *w1 = sh_alloc_bulk((size_t)(rows * bs) * sizeof *w1);
    float *q1 = sh_alloc_bulk((size_t)(rows * bs) * sizeof *q1);
    float *err = sh_alloc_bulk((size_t)(rows * bs) * sizeof *err);
    float *score = sh_alloc_bulk((size_t)(rows * bs) * sizeof *score);
    uint8_t *mask = sh_alloc_bulk((size_t)(rows * bs));
    uint64_t *bits = malloc(eng_mask_words((uint64_t)(rows * bs)) * 8);
    size_t n = (size_t)(rows * cols);
    uint64_t *zeros =
        o->preserve_zeros ? calloc(eng_mask_words(n), sizeof *zeros) : NULL;
    int rc = 0;
    if (!h0 || !w1 || !q1 || !err || !score || !mask || !bits ||
        (o->preserve_zeros && !zeros)) {
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        goto out;
    }
    for (size_t i = 0; zeros && i < n; i++)
        zeros[i >> 6] |= (uint64_t)(w[i] == 0.0f) << (i & 63);
    for (int64_t r = 0; o->obs_err && r < rows; r++)
        o->obs_err[r] = 0;
    // One grid a row: from the whole row as it came (the reference fixes
    // it before the dead inputs are zeroed).
    for (int64_t r = 0; o->grid && o->grid->group == 0 && r < rows; r++)
        eng_grid_fit(o->grid, w + r * cols, cols, &o->scale[r], &o->zero[r]);

    // Dead inputs: never seen non-zero, so their weights cannot matter.
    double mean = 0;
    for (int64_t j = 0; j < cols; j++) {
        if (h[j * cols + j] == 0) {
            h[j * cols + j] = 1;
            for (int64_t r = 0; r < rows; r++)
                w[r * cols + j] = 0;
        }
        mean += h[j * cols + j];
    }
    mean /= (double)cols;
    if (eng_copy_polled(h0, h, hn, hooks))
        goto cancelled;

    // Dampening, ten times more after each failed factorisation.
    double damp = o->damp;
    rc = SH_ENUMERIC;
    for (int attempt = 0; attempt < ENG_SGPT_ATTEMPTS && rc == SH_ENUMERIC;
         attempt++, damp *= 10) {
        if (attempt && eng_copy_polled(h, h0, hn, hooks))
            goto cancelled;
        float add = (float)(damp * mean);
        for (int64_t j = 0; j < cols; j++)
            h[j * cols + j] += add;
        rc = eng_chol_inverse_polled(h, cols, 0, hooks);
        if (rc == 0)
            *damp_used = damp;
        if (rc == 0 && o->obs_add)
            *o->obs_add = add;
    }
    if (rc == SH_ENUMERIC)
        rc = sh_diag_set(d, SH_ENUMERIC, "",
                         "the Hessian is not positive definite even with "
                         "dampening %g",
                         damp / 10);
    if (rc != 0)
        goto out;
    const float *u = h; // (cols, cols) upper: H^-1 = U^T U

    // Polls: before each block and its passes, and between pieces of the
    // lazy update. A block's passes run on the job's threads, a share of
    // rows each; one is rows * count^2 / 2 multiply-adds at most.
    for (int64_t i1 = 0; i1 < cols; i1 += bs) {
        if (eng_hooks_cancelled(hooks))
            goto cancelled;
        int64_t i2 = i1 + bs < cols ? i1 + bs : cols, count = i2 - i1;
        block_job job = {.w = w,
                         .w1 = w1,
                         .q1 = q1,
                         .err = err,
                         .score = score,
                         .mask = mask,
                         .u = u,
                         .cols = cols,
                         .i1 = i1,
                         .count = count,
                         .n = o->n,
                         .m = o->m,
                         .g = o->grid,
                         .scale = o->scale,
                         .zero = o->zero,
                         .groups = o->grid ? eng_grid_groups(o->grid, cols) : 1,
                         .fixed = o->fixed,
                         .zeros = zeros,
                         .obs_err = o->obs_err};
        sh_par_for(rows, 1, SWEEP_MIN_ROWS, block_load, &job);
        memset(mask, 0, (size_t)(rows * count));
        if (o->m == 0 && !o->fixed) {
            // This block's share of round(s * numel), so the tensor gets
            // exactly its count however the blocks fall.
            uint64_t k = eng_count_for(o->sparsity, (uint64_t)(rows * i2)) -
                         eng_count_for(o->sparsity, (uint64_t)(rows * i1));
            if ((rc = mask_block(mask, score, rows, count, k, bits, d)) != 0)
                goto out;
            // (the input's zeros scored lowest; more of them than the
            // block's count are added in the sweep)
            if (eng_hooks_cancelled(hooks))
                goto cancelled;
        }
        sh_par_for(rows, 1, SWEEP_MIN_ROWS, block_sweep, &job);
        if (eng_hooks_cancelled(hooks))
            goto cancelled;
        if (i2 < cols && // W[:, i2:] -= Err1 @ U[i1:i2, i2:]
            (rc = eng_gemm_polled(false, false, rows, cols - i2, count, -1.0f,
                                  err, count, u + i1 * cols + i2, cols, 1.0f,
                                  w + i2, cols, hooks)) != 0)
            goto out;
    }
    if (!finite_all(w, (size_t)(rows * cols)))
        rc = sh_diag_set(d, SH_ENUMERIC, "",
                         "the updated weights are not finite");
    goto out;
cancelled:
    rc = SH_ECANCELED;
out:
    free(h0);
    free(w1);
    free(q1);
    free(err);
    free(score);
    free(mask);
    free(bits);
    free(zeros);
    return rc;
}

// quant.c: grids and round to nearest (see quant.h).
#include "engine/methods/quant.h"

#include "common/par.h"

// The scale as the dtype stores it (F32: itself).
static float stored(float x, eng_dtype dt)
{
    if (dt == ENG_DTYPE_F32)
        return x;
    unsigned char b[4];
    float y;
    eng_convert_from_f32(b, &x, dt, 1);
    eng_convert_to_f32(&y, b, dt, 1);
    return y;
}

void eng_grid_fit(const eng_grid *g, const float *x, int64_t n, float *scale,
                  float *zero)
{
    float lo = 0.0f, hi = 0.0f, maxq = (float)((1 << g->bits) - 1);
    for (int64_t i = 0; i < n; i++) {
        lo = x[i] < lo ? x[i] : lo;
        hi = x[i] > hi ? x[i] : hi;
    }
    if (g->symmetric) {
        hi = -lo > hi ? -lo : hi;
        if (lo < 0)
            lo = -hi;
    }
    if (lo == 0.0f && hi == 0.0f) {
        lo = -1.0f;
        hi = 1.0f;
    }
    float s = stored((hi - lo) / maxq, g->dtype);
    if (!(s > 0.0f)) // below the dtype's least step: every weight to 0
        s = stored(1.0f, g->dtype);
    *scale = s;
    *zero = g->symmetric ? (maxq + 1.0f) / 2.0f : __builtin_rintf(-lo / s);
    if (*zero > maxq) // a scale rounded down can push it past the top
        *zero = maxq;
}

typedef struct rtn_job {
    float *w;
    int64_t cols, groups;
    const eng_grid *g;
    const uint64_t *pruned;
    float *scale, *zero;
} rtn_job;

static void rtn_rows(void *ctx, int64_t r0, int64_t r1)
{
    const rtn_job *j = ctx;
    int64_t cols = j->cols, per = j->g->group > 0 ? j->g->group : cols;
    float maxq = (float)((1 << j->g->bits) - 1);
    for (int64_t r = r0; r < r1; r++) {
        float *row = j->w + r * cols;
        for (int64_t k = 0; k < j->groups; k++) {
            int64_t c0 = k * per, n = cols - c0 < per ? cols - c0 : per;
            float *s = &j->scale[r * j->groups + k],
                  *z = &j->zero[r * j->groups + k];
            eng_grid_fit(j->g, row + c0, n, s, z);
            for (int64_t c = c0; c < c0 + n; c++) {
                uint64_t i = (uint64_t)(r * cols + c);
                bool off = j->pruned && (j->pruned[i >> 6] >> (i & 63)) & 1;
                row[c] = off ? 0.0f : eng_quantize(row[c], *s, *z, maxq);
            }
        }
    }
}

void eng_rtn(float *w, int64_t rows, int64_t cols, const eng_grid *g,
             const uint64_t *pruned, float *scale, float *zero)
{
    rtn_job j = {.w = w,
                 .cols = cols,
                 .groups = eng_grid_groups(g, cols),
                 .g = g,
                 .pruned = pruned,
                 .scale = scale,
                 .zero = zero};
    sh_par_for(rows, 1, 64, rtn_rows, &j);
}

// mask.c: scorers, radix selection and masks for every pattern.
#include "engine/select/mask.h"

#include "common/par.h"
#include "common/util.h"
#include "engine/select/kernels.h"

#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define CHUNK 4096 // keys computed at a time; a multiple of 64
// The fewest elements worth a thread of their own.
#define PAR_MIN_ELEMS ((int64_t)1 << 16)

// --- scorers

static inline uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; s && *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

void eng_scorer_init(eng_scorer *s, eng_score_kind kind, eng_dtype dtype,
                     const void *data, uint64_t rows, uint64_t cols,
                     uint64_t seed, const char *name, const float *scale)
{
    *s = (eng_scorer){.kind = kind,
                      .dtype = dtype,
                      .data = data,
                      .rows = rows,
                      .cols = cols,
                      .salt = splitmix64(seed ^ fnv1a(name)),
                      .scale = scale};
}

// keys[i] <- |F32 value i of p|'s bits; the OR of a "non-finite" flag.
static inline uint32_t f32_abs_key(uint32_t *restrict keys,
                                   const unsigned char *restrict p, size_t i)
{
    uint32_t u;
    memcpy(&u, p + 4 * i, 4);
    keys[i] = u & 0x7fffffffu;
    return keys[i] >= 0x7f800000u;
}

// keys[i] <- the bits of |w| keys[i] times scale[i]; the same flag.
static inline uint32_t scale_key(uint32_t *restrict keys,
                                 const float *restrict scale, size_t i)
{
    keys[i] = eng_f32_bits(eng_bits_f32(keys[i]) * scale[i]);
    return keys[i] >= 0x7f800000u;
}

// The loops over them eight at a time, in blocks the vectoriser takes at
// -O2 (a loop of unknown count it leaves scalar there), then the tail.
SH_HOT static bool f32_abs_keys(uint32_t *restrict keys,
                                const unsigned char *restrict p, size_t n)
{
    uint32_t bad = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t l = 0; l < 8; l++)
            bad |= f32_abs_key(keys, p, i + l);
    for (; i < n; i++)
        bad |= f32_abs_key(keys, p, i);
    return bad != 0;
}

SH_HOT static bool scale_keys(uint32_t *restrict keys,
                              const float *restrict scale, size_t n)
{
    uint32_t bad = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t l = 0; l < 8; l++)
            bad |= scale_key(keys, scale, i + l);
    for (; i < n; i++)
        bad |= scale_key(keys, scale, i);
    return bad != 0;
}

// keys (n,) <- bits of |w| for elements [start, start+n); returns the OR of
// a "non-finite" flag over them.
static bool abs_keys(const eng_scorer *s, uint32_t *restrict keys,
                     uint64_t start, size_t n)
{
    const unsigned char *p = s->data + start * eng_dtype_size(s->dtype);
    uint32_t bad = 0;
    switch (s->dtype) {
    case ENG_DTYPE_F32: return f32_abs_keys(keys, p, n);
    case ENG_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            uint32_t u = (uint32_t)(h & 0x7fffu) << 16;
            bad |= u >= 0x7f800000u;
            keys[i] = u;
        }
        break;
    case ENG_DTYPE_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            h &= 0x7fffu;
            bad |= h >= 0x7c00u;
            keys[i] = eng_f32_bits(eng_f16_to_f32(h));
        }
        break;
    case ENG_DTYPE_F64:
        for (size_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, p + 8 * i, 8);
            v = fabs(v);
            bad |= !(v <= 3.4028234663852886e38);
            keys[i] = eng_f32_bits((float)v) & 0x7fffffffu;
        }
        break;
    default: memset(keys, 0, n * sizeof *keys);
    }
    return bad != 0;
}

unsigned eng_score_inputs_of(eng_score_kind kind)
{
    switch (kind) {
    case ENG_SCORE_SNIP: return ENG_SCORE_IN_GRAD;
    case ENG_SCORE_TAYLOR: return ENG_SCORE_IN_GRAD | ENG_SCORE_IN_FISHER;
    case ENG_SCORE_FISHER: return ENG_SCORE_IN_FISHER;
    case ENG_SCORE_MOVEMENT:
    case ENG_SCORE_GIVEN: return ENG_SCORE_IN_OTHER;
    default: return 0;
    }
}

bool eng_score_signed(eng_score_kind kind)
{
    return kind == ENG_SCORE_MOVEMENT || kind == ENG_SCORE_GIVEN;
}

// An order-keeping key of any float: negative ones below the rest, -0
// taken as +0.
static inline uint32_t signed_key(float v)
{
    uint32_t u = eng_f32_bits(v);
    if (u == 0x80000000u)
        u = 0;
    return u & 0x80000000u ? ~u : u | 0x80000000u;
}

double eng_key_score(const eng_scorer *s, uint32_t key)
{
    if (!eng_score_signed(s->kind))
        return eng_bits_f32(key);
    uint32_t u = key & 0x80000000u ? key & 0x7fffffffu : ~key;
    return eng_bits_f32(u);
}

// Keys of the criteria that read other inputs beside W, a piece at a time.
static bool input_keys(const eng_scorer *s, uint32_t *restrict keys,
                       uint64_t start, size_t n)
{
    enum { PIECE = 1024 };
    float w[PIECE], o[PIECE];
    bool bad = false;
    size_t ws = eng_dtype_size(s->dtype), os = eng_dtype_size(s->other_dtype);
    for (size_t at = 0; at < n; at += PIECE) {
        size_t m = n - at < PIECE ? n - at : PIECE;
        uint64_t e = start + at;
        if (s->kind != ENG_SCORE_GIVEN)
            eng_convert_to_f32(w, s->data + e * ws, s->dtype, m);
        if (s->other)
            eng_convert_to_f32(o, s->other + e * os, s->other_dtype, m);
        const float *g = s->grad ? s->grad + e : NULL;
        const float *f = s->fisher ? s->fisher + e : NULL;
        for (size_t i = 0; i < m; i++) {
            float v;
            switch (s->kind) {
            case ENG_SCORE_SNIP: v = fabsf(w[i] * g[i]); break;
            case ENG_SCORE_TAYLOR:
                v = fabsf(w[i] * g[i] - 0.5f * w[i] * w[i] * f[i]);
                break;
            case ENG_SCORE_FISHER: v = 0.5f * w[i] * w[i] * f[i]; break;
            case ENG_SCORE_MOVEMENT: v = w[i] * (w[i] - o[i]); break;
            default: v = o[i]; break;
            }
            bad |= !isfinite(v);
            keys[at + i] =
                eng_score_signed(s->kind) ? signed_key(v) : eng_f32_bits(v);
        }
    }
    return bad;
}

int eng_scorer_keys(const eng_scorer *s, uint32_t *restrict keys,
                    uint64_t start, size_t n)
{
    if (eng_score_inputs_of(s->kind))
        return input_keys(s, keys, start, n) ? SH_ENUMERIC : 0;
    bool bad = abs_keys(s, keys, start, n);
    switch (s->kind) {
    case ENG_SCORE_MAGNITUDE: break;
    case ENG_SCORE_RANDOM:
        for (size_t i = 0; i < n; i++)
            keys[i] = (uint32_t)(splitmix64(s->salt + start + i) >> 32);
        break;
    case ENG_SCORE_SCALED: { // the run of columns to each row's end
        uint64_t col = start % s->cols;
        for (size_t i = 0; i < n;) {
            size_t m = n - i < s->cols - col ? n - i : (size_t)(s->cols - col);
            bad |= scale_keys(keys + i, s->scale + col, m);
            i += m;
            col = 0;
        }
        break;
    }
    default: break;
    }
    return bad ? SH_ENUMERIC : 0;
}

// --- counting and selection

uint64_t eng_count_for(double s, uint64_t n)
{
    double k = nearbyint(s * (double)n);
    if (!(k > 0))
        return 0;
    if (k >= (double)n)
        return n;
    return (uint64_t)k;
}

static inline void swap32(uint32_t *a, uint32_t *b)
{
    uint32_t t = *a;
    *a = *b;
    *b = t;
}

uint32_t eng_select_kth(uint32_t *a, size_t n, size_t k)
{
    size_t lo = 0, hi = n - 1;
    while (hi > lo) {
        // median of three as pivot, then a three-way partition so runs of
        // equal keys (pruned zeros, say) cost one pass.
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < a[lo])
            swap32(&a[mid], &a[lo]);
        if (a[hi] < a[lo])
            swap32(&a[hi], &a[lo]);
        if (a[hi] < a[mid])
            swap32(&a[hi], &a[mid]);
        uint32_t pivot = a[mid];
        size_t lt = lo, i = lo, gt = hi;
        while (i <= gt) {
            if (a[i] < pivot)
                swap32(&a[lt++], &a[i++]);
            else if (a[i] > pivot)
                swap32(&a[i], &a[gt--]);
            else
                i++;
        }
        if (k < lt)
            hi = lt - 1;
        else if (k > gt)
            lo = gt + 1;
        else
            return pivot;
    }
    return a[lo];
}

// Finds the bucket holding the k-th (1-based) key; *below = keys in lower
// buckets.
static uint32_t find_bucket(const uint64_t *hist, uint64_t k, uint64_t *below)
{
    uint64_t acc = 0;
    for (uint32_t b = 0; b < 65536; b++) {
        if (acc + hist[b] >= k) {
            *below = acc;
            return b;
        }
        acc += hist[b];
    }
    *below = acc;
    return 65535;
}

int eng_select_init(eng_select *s, uint64_t k, uint64_t total)
{
    memset(s, 0, sizeof *s);
    s->k = k;
    s->total = total;
    s->pass = 1;
    if (k == 0) {
        s->done = true;
        s->result = (eng_threshold){0, 0};
        return 0;
    }
    if (k >= total) {
        s->done = true;
        s->result = (eng_threshold){UINT32_MAX, total};
        return 0;
    }
    s->hist = calloc(65536, sizeof *s->hist);
    s->sub = calloc(2 * 65536, sizeof *s->sub);
    if (!s->hist || !s->sub) {
        eng_select_deinit(s);
        return SH_ENOMEM;
    }
    return 0;
}

void eng_select_deinit(eng_select *s)
{
    free(s->hist);
    free(s->sub);
    s->hist = NULL;
    s->sub = NULL;
}

static void fold_sub(eng_select *s)
{
    for (size_t b = 0; b < 65536; b++)
        s->hist[b] += (uint64_t)s->sub[b] + s->sub[65536 + b];
    memset(s->sub, 0, 2 * 65536 * sizeof *s->sub);
    s->pending = 0;
}

// Pass 1 for magnitude on F16/BF16/F32: histogram the bytes directly.
// Non-finite values are the keys that land in the top buckets.
static bool feed_magnitude(eng_select *s, const eng_scorer *sc)
{
    uint64_t numel = sc->rows * sc->cols;
    size_t es = eng_dtype_size(sc->dtype);
    if (s->pass == 2) {
        eng_k_hist_lo(s->hist, sc->data, sc->dtype, numel, s->hi);
        return false;
    }
    uint64_t bad = eng_k_nonfinite(s->sub);
    const uint64_t step = 1ull << 28; // folds keep the u32 counts exact
    for (uint64_t at = 0; at < numel; at += step) {
        size_t m = numel - at < step ? (size_t)(numel - at) : (size_t)step;
        s->or_low |= eng_k_hist_hi(s->sub, sc->data + at * es, sc->dtype, m);
        s->pending += m;
        if (eng_k_nonfinite(s->sub) != bad)
            return true;
        if (s->pending > (1ull << 31)) {
            fold_sub(s);
            bad = 0;
        }
    }
    return false;
}

int eng_select_feed(eng_select *s, const eng_scorer *sc)
{
    if (s->done)
        return 0;
    if (sc->kind == ENG_SCORE_MAGNITUDE && eng_k_supports(sc->dtype))
        return feed_magnitude(s, sc) ? SH_ENUMERIC : 0;
    uint32_t keys[CHUNK];
    uint64_t numel = sc->rows * sc->cols;
    for (uint64_t at = 0; at < numel; at += CHUNK) {
        size_t m = numel - at < CHUNK ? (size_t)(numel - at) : CHUNK;
        if (eng_scorer_keys(sc, keys, at, m))
            return SH_ENUMERIC;
        if (s->pass == 2) {
            for (size_t i = 0; i < m; i++)
                if ((keys[i] >> 16) == s->hi)
                    s->hist[keys[i] & 0xffffu]++;
            continue;
        }
        // Two sub-histograms alternate so runs of one bucket do not
        // serialise on a single counter; folded before they can overflow.
        uint32_t *a = s->sub, *b = s->sub + 65536;
        uint32_t or_low = 0;
        size_t i = 0;
        for (; i + 1 < m; i += 2) {
            a[keys[i] >> 16]++;
            b[keys[i + 1] >> 16]++;
            or_low |= (keys[i] | keys[i + 1]) & 0xffffu;
        }
        for (; i < m; i++) {
            a[keys[i] >> 16]++;
            or_low |= keys[i] & 0xffffu;
        }
        s->or_low |= or_low;
        s->pending += m;
        if (s->pending > (1ull << 31))
            fold_sub(s);
    }
    return 0;
}

void eng_select_next(eng_select *s)
{
    if (s->done)
        return;
    uint64_t below = 0;
    if (s->pass == 1) {
        fold_sub(s);
        s->hi = find_bucket(s->hist, s->k, &below);
        s->r = s->k - below;  // >= 1
        if (s->or_low == 0) { // every low half is zero: no second pass
            s->result = (eng_threshold){s->hi << 16, s->r};
            s->done = true;
            return;
        }
        memset(s->hist, 0, 65536 * sizeof *s->hist);
        s->pass = 2;
        return;
    }
    uint32_t lo = find_bucket(s->hist, s->r, &below);
    s->result = (eng_threshold){(s->hi << 16) | lo, s->r - below};
    s->done = true;
}

int eng_select_one(const eng_scorer *sc, uint64_t k, eng_threshold *out)
{
    eng_select sel;
    int rc = eng_select_init(&sel, k, sc->rows * sc->cols);
    while (rc == 0 && !sel.done) {
        if (eng_select_feed(&sel, sc))
            rc = SH_ENUMERIC;
        else
            eng_select_next(&sel);
    }
    if (rc == 0)
        *out = sel.result;
    eng_select_deinit(&sel);
    return rc;
}

// --- masks

void eng_mask_threshold(uint64_t *mask, const eng_scorer *s, eng_threshold *t)
{
    uint64_t numel = s->rows * s->cols;
    uint32_t keys[CHUNK];
    uint32_t cut = t->key;
    uint64_t ties = t->ties;
    for (uint64_t at = 0; at < numel; at += CHUNK) {
        size_t m = numel - at < CHUNK ? (size_t)(numel - at) : CHUNK;
        eng_scorer_keys(s, keys, at, m);
        for (size_t w = 0; w < (m + 63) / 64; w++) {
            uint64_t bits = 0;
            size_t end = (w + 1) * 64 < m ? (w + 1) * 64 : m;
            for (size_t i = w * 64; i < end; i++)
                bits |= (uint64_t)(keys[i] < cut) << (i & 63);
            if (ties) {
                for (size_t i = w * 64; i < end && ties; i++) {
                    if (keys[i] == cut) {
                        bits |= 1ull << (i & 63);
                        ties--;
                    }
                }
            }
            mask[(at >> 6) + w] = bits;
        }
    }
    t->ties = ties;
}

static inline void set_bit(uint64_t *mask, uint64_t i)
{
    mask[i >> 6] |= 1ull << (i & 63);
}

static_assert(CHUNK >= 64 * ENG_NM_MAX, "a chunk holds 64 groups of any M");

typedef struct nm_job {
    uint64_t *mask;
    const eng_scorer *s;
    int n, m;
    size_t chunk;
    atomic_bool bad;
} nm_job;

// Chunks [c0, c1) of the tensor's groups.
static void nm_chunks(void *ctx, int64_t c0, int64_t c1)
{
    nm_job *job = ctx;
    const eng_scorer *s = job->s;
    uint64_t *mask = job->mask;
    int m = job->m, drop = job->m - job->n;
    size_t chunk = job->chunk;
    uint64_t numel = s->rows * s->cols;
    uint32_t keys[CHUNK]; // chunk <= CHUNK: see the assertion above
    bool bad = false;
    for (uint64_t at = (uint64_t)c0 * chunk;
         at < numel && at < (uint64_t)c1 * chunk; at += chunk) {
        size_t len = numel - at < chunk ? (size_t)(numel - at) : chunk;
        bad |= eng_scorer_keys(s, keys, at, len);
        for (size_t g = 0; g < len; g += (size_t)m) {
            const uint32_t *k = keys + g;
            if (m == 4 && drop == 2) {
                // 2:4, the common case: rank without loops.
                for (int i = 0; i < 4; i++) {
                    int rank = 0;
                    for (int j = 0; j < 4; j++)
                        rank += k[j] < k[i] || (k[j] == k[i] && j < i);
                    if (rank < 2)
                        set_bit(mask, at + g + (size_t)i);
                }
                continue;
            }
            for (int i = 0; i < m; i++) {
                int rank = 0;
                for (int j = 0; j < m; j++)
                    rank += k[j] < k[i] || (k[j] == k[i] && j < i);
                if (rank < drop)
                    set_bit(mask, at + g + (size_t)i);
            }
        }
    }
    if (bad)
        atomic_store(&job->bad, true);
}

int eng_mask_nm(uint64_t *mask, const eng_scorer *s, int n, int m)
{
    uint64_t numel = s->rows * s->cols;
    memset(mask, 0, eng_mask_words(numel) * sizeof *mask);
    // Chunks hold whole groups: a multiple of m, and of 64 for alignment.
    size_t chunk = (size_t)(CHUNK / (64 * m)) * 64 * (size_t)m;
    if (chunk == 0)
        chunk = 64 * (size_t)m;
    nm_job j = {.mask = mask, .s = s, .n = n, .m = m, .chunk = chunk};
    int64_t chunks = (int64_t)((numel + chunk - 1) / chunk);
    sh_par_for(chunks, 1, PAR_MIN_ELEMS / (int64_t)chunk + 1, nm_chunks, &j);
    return atomic_load(&j.bad) ? SH_ENUMERIC : 0;
}

typedef struct per_row_job {
    uint64_t *mask;
    const eng_scorer *s;
    uint64_t k;
    uint32_t *work; // the caller's: the first chunk's
    atomic_bool bad, nomem;
} per_row_job;

// The k-th smallest (0-based) of keys[0..n): a histogram of the top 12
// bits finds the bucket that holds it, and only that bucket's keys (moved
// to tmp) are selected among. Keys of one row crowd into few buckets (one
// exponent range), which is still a small share of n. *lt and *eq: the
// keys below it and equal to it (those lie in its bucket).
static uint32_t kth_by_bucket(const uint32_t *keys, uint32_t *tmp, size_t n,
                              size_t k, uint64_t *lt, uint64_t *eq)
{
    enum { BITS = 12, SHIFT = 32 - BITS };
    uint32_t hist[1 << BITS];
    memset(hist, 0, sizeof hist);
    for (size_t i = 0; i < n; i++)
        hist[keys[i] >> SHIFT]++;
    size_t below = 0;
    uint32_t b = 0;
    while (below + hist[b] <= k)
        below += hist[b++];
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        tmp[m] = keys[i]; // kept when in the bucket: no branch
        m += keys[i] >> SHIFT == b;
    }
    uint32_t cut = eng_select_kth(tmp, m, k - below);
    uint64_t l = 0, e = 0;
    for (size_t i = 0; i < m; i++) {
        l += tmp[i] < cut;
        e += tmp[i] == cut;
    }
    *lt = below + l;
    *eq = e;
    return cut;
}

// Sets the bits of keys[i] <= cut for the row at bit base, a word at a
// time and without branches on the keys (half of them go either way).
static void row_bits_le(uint64_t *mask, uint64_t base, const uint32_t *keys,
                        size_t n, uint32_t cut)
{
    for (size_t i = 0; i < n;) {
        unsigned off = (unsigned)(base & 63);
        size_t m = n - i < 64 - off ? n - i : 64 - off;
        uint64_t word = 0;
        for (size_t b = 0; b < m; b++)
            word |= (uint64_t)(keys[i + b] <= cut) << (off + b);
        mask[base >> 6] |= word;
        i += m;
        base += m;
    }
}

static void per_row_chunk(void *ctx, int64_t r0, int64_t r1)
{
    per_row_job *j = ctx;
    const eng_scorer *s = j->s;
    uint64_t *mask = j->mask, k = j->k;
    size_t cols = (size_t)s->cols;
    uint32_t *work = r0 == 0 ? j->work : malloc(2 * cols * sizeof *work);
    if (!work) {
        atomic_store(&j->nomem, true);
        return;
    }
    bool bad = false;
    uint32_t *keys = work, *tmp = work + cols;
    for (uint64_t r = (uint64_t)r0; r < (uint64_t)r1 && k > 0; r++) {
        uint64_t base = r * s->cols;
        bad |= eng_scorer_keys(s, keys, base, cols);
        if (k >= s->cols) {
            for (size_t i = 0; i < cols; i++)
                set_bit(mask, base + i);
            continue;
        }
        uint64_t lt, eq;
        uint32_t cut = kth_by_bucket(keys, tmp, cols, (size_t)k - 1, &lt, &eq);
        uint64_t ties = k - lt;
        if (ties == eq) { // every key at the cut goes: no order to keep
            row_bits_le(mask, base, keys, cols, cut);
            continue;
        }
        for (size_t i = 0; i < cols; i++) {
            if (keys[i] < cut || (keys[i] == cut && ties > 0)) {
                if (keys[i] == cut)
                    ties--;
                set_bit(mask, base + i);
            }
        }
    }
    if (work != j->work)
        free(work);
    if (bad)
        atomic_store(&j->bad, true);
}

int eng_mask_per_row(uint64_t *mask, const eng_scorer *s, uint64_t k,
                     uint32_t *work)
{
    uint64_t numel = s->rows * s->cols;
    memset(mask, 0, eng_mask_words(numel) * sizeof *mask);
    per_row_job j = {.mask = mask, .s = s, .k = k, .work = work};
    // Rows start on whole words of the mask, so chunks never share one.
    sh_par_for((int64_t)s->rows, sh_par_mask_rows((int64_t)s->cols),
               PAR_MIN_ELEMS / (int64_t)(s->cols ? s->cols : 1), per_row_chunk,
               &j);
    if (atomic_load(&j.nomem))
        return SH_ENOMEM;
    return atomic_load(&j.bad) ? SH_ENUMERIC : 0;
}

typedef struct zero_job {
    float *w;
    const uint64_t *mask;
    uint64_t n;
} zero_job;

// The bits of a 32-bit half word, one per lane: the loops below compare
// against a constant per lane, which the compiler turns into vector ands.
static const uint32_t lane_bit[32] = {
    1u << 0,  1u << 1,  1u << 2,  1u << 3,  1u << 4,  1u << 5,  1u << 6,
    1u << 7,  1u << 8,  1u << 9,  1u << 10, 1u << 11, 1u << 12, 1u << 13,
    1u << 14, 1u << 15, 1u << 16, 1u << 17, 1u << 18, 1u << 19, 1u << 20,
    1u << 21, 1u << 22, 1u << 23, 1u << 24, 1u << 25, 1u << 26, 1u << 27,
    1u << 28, 1u << 29, 1u << 30, 1u << 31};

// w (32,) as bit patterns: those whose bit is set in half become +0.
static inline void zero_half(uint32_t *restrict w, uint32_t half)
{
    for (int b = 0; b < 32; b++)
        w[b] &= -(uint32_t)((half & lane_bit[b]) == 0);
}

static void zero_words(void *ctx, int64_t w0, int64_t w1)
{
    zero_job *j = ctx;
    uint32_t u[64];
    for (int64_t wi = w0; wi < w1; wi++) {
        uint64_t bits = j->mask[wi], at = (uint64_t)wi * 64;
        size_t m = j->n - at < 64 ? (size_t)(j->n - at) : 64;
        float *w = j->w + at;
        if (bits == 0)
            continue;
        memcpy(u, w, m * sizeof *w);
        zero_half(u, (uint32_t)bits);
        zero_half(u + 32, (uint32_t)(bits >> 32));
        memcpy(w, u, m * sizeof *w);
    }
}

void eng_mask_zero(float *w, const uint64_t *mask, uint64_t n)
{
    zero_job j = {.w = w, .mask = mask, .n = n};
    sh_par_for((int64_t)eng_mask_words(n), 1, PAR_MIN_ELEMS / 64, zero_words,
               &j);
}

static int by_score(const void *a, const void *b, void *ctx)
{
    const double *score = ctx;
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    if (score[x] != score[y])
        return score[x] < score[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

int eng_mask_rows(uint64_t *mask, const eng_scorer *s, uint64_t k,
                  eng_norm norm, double *score, uint64_t *idx)
{
    uint64_t numel = s->rows * s->cols;
    memset(mask, 0, eng_mask_words(numel) * sizeof *mask);
    uint32_t keys[CHUNK];
    bool bad = false;
    for (uint64_t r = 0; r < s->rows; r++) {
        double acc = 0;
        for (uint64_t at = 0; at < s->cols; at += CHUNK) {
            size_t m = s->cols - at < CHUNK ? (size_t)(s->cols - at) : CHUNK;
            bad |= eng_scorer_keys(s, keys, r * s->cols + at, m);
            if (s->kind == ENG_SCORE_RANDOM)
                continue;
            for (size_t i = 0; i < m; i++) {
                double v = fabs(eng_key_score(s, keys[i]));
                acc += norm == ENG_NORM_L1 ? v : v * v;
            }
        }
        score[r] =
            s->kind == ENG_SCORE_RANDOM
                ? (double)(splitmix64(s->salt ^ (r * 0x2545f4914f6cdd1dull)) >>
                           11)
                : (norm == ENG_NORM_L2 ? sqrt(acc) : acc);
        idx[r] = r;
    }
    qsort_r(idx, (size_t)s->rows, sizeof *idx, by_score, score);
    for (uint64_t i = 0; i < k && i < s->rows; i++) {
        uint64_t base = idx[i] * s->cols;
        for (uint64_t c = 0; c < s->cols; c++)
            set_bit(mask, base + c);
    }
    return bad ? SH_ENUMERIC : 0;
}

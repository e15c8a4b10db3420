// test_mask.c: exact selection and masks, checked against brute force.
#include "tests/helpers.h"

#include "engine/engine.h"
#include "engine/select/kernels.h"
#include "engine/select/mask.h"

#include "common/par.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct keyed {
    uint32_t key;
    uint64_t index; // global position across tensors
} keyed;

static int by_key_then_index(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

// The brute-force answer: sort all (key, index) and take the k first.
static bool *brute_mask(const eng_scorer *const *ss, size_t n, uint64_t k)
{
    uint64_t total = 0;
    for (size_t t = 0; t < n; t++)
        total += ss[t]->rows * ss[t]->cols;
    keyed *all = malloc(total * sizeof *all);
    uint64_t at = 0;
    for (size_t t = 0; t < n; t++) {
        uint64_t numel = ss[t]->rows * ss[t]->cols;
        uint32_t *keys = malloc(numel * sizeof *keys);
        eng_scorer_keys(ss[t], keys, 0, numel);
        for (uint64_t i = 0; i < numel; i++)
            all[at + i] = (keyed){keys[i], at + i};
        free(keys);
        at += numel;
    }
    qsort(all, total, sizeof *all, by_key_then_index);
    bool *pruned = calloc(total, 1);
    for (uint64_t i = 0; i < k; i++)
        pruned[all[i].index] = true;
    free(all);
    return pruned;
}

static void quantize(float *w, size_t n, float step)
{
    // Coarse values force many ties, the hard case for exact counts.
    for (size_t i = 0; i < n; i++)
        w[i] = roundf(w[i] / step) * step;
}

// Global threshold equals a brute-force sort, over tensors of three dtypes,
// many ties included, for several k.
START_TEST(test_global_matches_brute_force)
{
    enum { A = 300, B = 517, C = 64 };
    float fa[A], fb[B], fc[C];
    th_randn(fa, A, 1);
    th_randn(fb, B, 2);
    th_randn(fc, C, 3);
    quantize(fa, A, 0.25f);
    quantize(fb, B, 0.5f);
    uint16_t hb[B];
    double dc[C];
    eng_convert_from_f32(hb, fb, ENG_DTYPE_BF16, B);
    for (int i = 0; i < C; i++)
        dc[i] = fc[i];
    eng_scorer sa, sb, sc;
    eng_scorer_init(&sa, ENG_SCORE_MAGNITUDE, ENG_DTYPE_F32, fa, 20, 15, 0, "a",
                    NULL);
    eng_scorer_init(&sb, ENG_SCORE_MAGNITUDE, ENG_DTYPE_BF16, hb, 11, 47, 0,
                    "b", NULL);
    eng_scorer_init(&sc, ENG_SCORE_MAGNITUDE, ENG_DTYPE_F64, dc, 8, 8, 0, "c",
                    NULL);
    const eng_scorer *ss[3] = {&sa, &sb, &sc};
    const uint64_t total = A + B + C;
    const uint64_t ks[] = {0, 1, 2, 100, 440, 441, total / 2, total - 1, total};
    for (size_t q = 0; q < sizeof ks / sizeof ks[0]; q++) {
        eng_select sel;
        ck_assert_int_eq(eng_select_init(&sel, ks[q], total), 0);
        while (!sel.done) {
            for (int t = 0; t < 3; t++)
                ck_assert(!eng_select_feed(&sel, ss[t]));
            eng_select_next(&sel);
        }
        eng_threshold thr = sel.result;
        eng_select_deinit(&sel);
        bool *want = brute_mask(ss, 3, ks[q]);
        uint64_t at = 0, count = 0;
        for (int t = 0; t < 3; t++) {
            uint64_t numel = ss[t]->rows * ss[t]->cols;
            uint64_t *mask = calloc(eng_mask_words(numel), 8);
            eng_mask_threshold(mask, ss[t], &thr);
            for (uint64_t i = 0; i < numel; i++) {
                ck_assert_msg(eng_mask_get(mask, i) == want[at + i],
                              "k=%llu tensor %d element %llu",
                              (unsigned long long)ks[q], t,
                              (unsigned long long)i);
                count += eng_mask_get(mask, i);
            }
            free(mask);
            at += numel;
        }
        ck_assert_uint_eq(count, ks[q]);
        free(want);
    }
}
END_TEST

// Layer selection: exactly k per tensor, for many sizes (including ones
// that are not multiples of 64) and both histogram passes.
START_TEST(test_layer_exact_count)
{
    const uint64_t sizes[] = {1, 63, 64, 65, 1000, 4097, 70001};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        uint64_t n = sizes[s];
        float *w = malloc(n * sizeof *w);
        th_randn(w, n, n);
        if (s % 2)
            quantize(w, n, 0.1f);
        eng_scorer sc;
        eng_scorer_init(&sc, ENG_SCORE_MAGNITUDE, ENG_DTYPE_F32, w, 1, n, 0,
                        "t", NULL);
        const eng_scorer *ss[1] = {&sc};
        for (double f = 0; f <= 1.0; f += 0.25) {
            uint64_t k = eng_count_for(f, n);
            eng_threshold thr;
            ck_assert_int_eq(eng_select_one(&sc, k, &thr), 0);
            uint64_t *mask = calloc(eng_mask_words(n), 8);
            eng_mask_threshold(mask, &sc, &thr);
            bool *want = brute_mask(ss, 1, k);
            uint64_t count = 0;
            for (uint64_t i = 0; i < n; i++) {
                ck_assert(eng_mask_get(mask, i) == want[i]);
                count += eng_mask_get(mask, i);
            }
            ck_assert_uint_eq(count, k);
            free(want);
            free(mask);
        }
        free(w);
    }
}
END_TEST

// round(s * n): the count a fraction means.
START_TEST(test_count_for)
{
    ck_assert_uint_eq(eng_count_for(0.5, 10), 5);
    ck_assert_uint_eq(eng_count_for(0.7, 128), 90); // 89.6 rounds to 90
    ck_assert_uint_eq(eng_count_for(0.0, 10), 0);
    ck_assert_uint_eq(eng_count_for(1.0, 10), 10);
    ck_assert_uint_eq(eng_count_for(0.33, 3), 1);
}
END_TEST

// N:M: every group keeps exactly n (the n largest), for several n:m and
// dtypes; ties break toward pruning the lower index.
START_TEST(test_nm_every_group)
{
    const int pats[][2] = {{2, 4}, {1, 4}, {4, 8}, {3, 5}, {1, 32}, {31, 32}};
    enum { ROWS = 6, COLS = 160 };
    float w[ROWS * COLS];
    th_randn(w, ROWS * COLS, 9);
    quantize(w, ROWS * COLS, 0.5f);
    for (size_t p = 0; p < sizeof pats / sizeof pats[0]; p++) {
        int n = pats[p][0], m = pats[p][1];
        if (COLS % m)
            continue;
        eng_scorer sc;
        eng_scorer_init(&sc, ENG_SCORE_MAGNITUDE, ENG_DTYPE_F32, w, ROWS, COLS,
                        0, "t", NULL);
        uint64_t mask[(ROWS * COLS + 63) / 64];
        ck_assert(!eng_mask_nm(mask, &sc, n, m));
        for (int g = 0; g < ROWS * COLS; g += m) {
            int kept = 0;
            for (int i = 0; i < m; i++) {
                kept += !eng_mask_get(mask, (uint64_t)(g + i));
                // Every kept weight is >= every pruned one in its group.
                for (int j = 0; j < m; j++)
                    if (!eng_mask_get(mask, (uint64_t)(g + i)) &&
                        eng_mask_get(mask, (uint64_t)(g + j)))
                        ck_assert(fabsf(w[g + i]) >= fabsf(w[g + j]));
            }
            ck_assert_int_eq(kept, n);
        }
    }
    // Ties: all equal in a group of 4 with 2:4 prunes the first two.
    float eq[4] = {1, -1, 1, -1};
    eng_scorer sc;
    eng_scorer_init(&sc, ENG_SCORE_MAGNITUDE, ENG_DTYPE_F32, eq, 1, 4, 0, "t",
                    NULL);
    uint64_t mask[1];
    eng_mask_nm(mask, &sc, 2, 4);
    ck_assert_uint_eq(mask[0], 0x3);
}
END_TEST

// Per-row selection (Wanda's comparison group): k per row, the lowest.
START_TEST(test_per_row)
{
    enum { ROWS = 5, COLS = 37 };
    float w[ROWS * COLS], scale[COLS];
    th_randn(w, ROWS * COLS, 4);
    for (int j = 0; j < COLS; j++)
        scale[j] = (float)(j % 7) * 0.5f;
    eng_scorer sc;
    eng_scorer_init(&sc, ENG_SCORE_SCALED, ENG_DTYPE_F32, w, ROWS, COLS, 0, "t",
                    scale);
    uint64_t mask[(ROWS * COLS + 63) / 64];
    uint32_t work[2 * COLS];
    ck_assert(!eng_mask_per_row(mask, &sc, 18, work));
    for (int r = 0; r < ROWS; r++) {
        int pruned = 0;
        float max_pruned = 0, min_kept = INFINITY;
        for (int j = 0; j < COLS; j++) {
            float s = fabsf(w[r * COLS + j]) * scale[j];
            if (eng_mask_get(mask, (uint64_t)(r * COLS + j))) {
                pruned++;
                max_pruned = fmaxf(max_pruned, s);
            } else {
                min_kept = fminf(min_kept, s);
            }
        }
        ck_assert_int_eq(pruned, 18);
        ck_assert(max_pruned <= min_kept);
    }
}
END_TEST

// Per row with ties at the cut: the lowest indices among the equal keys
// go first, whether all of them go (rows 0, 2) or only some (row 1).
START_TEST(test_per_row_ties)
{
    enum { ROWS = 3, COLS = 70 };
    float w[ROWS * COLS];
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < COLS; j++)
            w[r * COLS + j] = j < 20 ? 0.5f + (float)j : 0.25f;
    // Row 2: 10 keys below the ties, 10 above, the tie group whole.
    for (int j = 0; j < 20; j++)
        w[2 * COLS + j] = j < 10 ? 0.125f : 5.0f;
    uint64_t k[ROWS] = {60, 30, 60};
    eng_scorer sc;
    uint64_t mask[(ROWS * COLS + 63) / 64];
    uint32_t work[2 * COLS];
    for (int r = 0; r < ROWS; r++) {
        eng_scorer_init(&sc, ENG_SCORE_MAGNITUDE, ENG_DTYPE_F32, w + r * COLS,
                        1, COLS, 0, "t", NULL);
        ck_assert(!eng_mask_per_row(mask, &sc, k[r], work));
        uint64_t pruned = 0;
        for (int j = 0; j < COLS; j++)
            pruned += eng_mask_get(mask, (uint64_t)j);
        ck_assert_uint_eq(pruned, k[r]);
        for (int j = 20; j < COLS; j++) // the 50 ties: lowest index first
            ck_assert(eng_mask_get(mask, (uint64_t)j) ==
                      (r == 1 ? j < 50 : true));
        for (int j = 0; j < 20; j++) // the ten smallest besides the ties
            ck_assert(eng_mask_get(mask, (uint64_t)j) == (r != 1 && j < 10));
    }
}
END_TEST

// Zeroing by a mask: the same bytes as a bit-by-bit loop, on any number
// of threads, with a length that ends inside a word.
START_TEST(test_mask_zero)
{
    enum { N = 300001 };
    float *w = malloc(N * sizeof *w), *ref = malloc(N * sizeof *ref);
    uint64_t *mask = malloc(eng_mask_words(N) * sizeof *mask);
    th_randn(ref, N, 9);
    for (size_t i = 0; i < eng_mask_words(N); i++)
        mask[i] = i % 5 == 0   ? 0
                  : i % 5 == 1 ? ~0ull
                               : 0x9e3779b97f4a7c15ull * i;
    for (size_t i = 0; i < N; i++)
        ref[i] = eng_mask_get(mask, i) ? 0.0f : ref[i];
    for (int threads = 1; threads <= 4; threads += 3) {
        sh_par_threads(threads);
        th_randn(w, N, 9);
        eng_mask_zero(w, mask, N);
        ck_assert(memcmp(w, ref, N * sizeof *w) == 0);
    }
    sh_par_threads(1);
    free(w);
    free(ref);
    free(mask);
}
END_TEST

// Rows: whole rows, the ones of smallest L2 (or L1) norm.
START_TEST(test_rows)
{
    enum { ROWS = 10, COLS = 12 };
    float w[ROWS * COLS];
    for (int r = 0; r < ROWS; r++)
        for (int j = 0; j < COLS; j++)
            w[r * COLS + j] = (float)((r * 7) % ROWS + 1) * (j % 2 ? 1 : -1);
    eng_scorer sc;
    eng_scorer_init(&sc, ENG_SCORE_MAGNITUDE, ENG_DTYPE_F32, w, ROWS, COLS, 0,
                    "t", NULL);
    uint64_t mask[(ROWS * COLS + 63) / 64];
    double score[ROWS];
    uint64_t idx[ROWS];
    ck_assert(!eng_mask_rows(mask, &sc, 3, ENG_NORM_L2, score, idx));
    for (int r = 0; r < ROWS; r++) {
        bool expect = (r * 7) % ROWS + 1 <= 3; // the three smallest rows
        for (int j = 0; j < COLS; j++)
            ck_assert(eng_mask_get(mask, (uint64_t)(r * COLS + j)) == expect);
    }
}
END_TEST

// Random: seeded, so the same seed gives the same mask and another seed a
// different one; still exactly k.
START_TEST(test_random_seeded)
{
    enum { N = 4096 };
    float w[N];
    th_randn(w, N, 5);
    uint64_t m1[N / 64], m2[N / 64], m3[N / 64];
    uint64_t *ms[3] = {m1, m2, m3};
    const uint64_t seeds[3] = {42, 42, 43};
    for (int i = 0; i < 3; i++) {
        eng_scorer sc;
        eng_scorer_init(&sc, ENG_SCORE_RANDOM, ENG_DTYPE_F32, w, 64, 64,
                        seeds[i], "layer", NULL);
        eng_threshold thr;
        ck_assert_int_eq(eng_select_one(&sc, 1000, &thr), 0);
        eng_mask_threshold(ms[i], &sc, &thr);
        uint64_t count = 0;
        for (int k = 0; k < N / 64; k++)
            count += (uint64_t)__builtin_popcountll(ms[i][k]);
        ck_assert_uint_eq(count, 1000);
    }
    ck_assert_int_eq(memcmp(m1, m2, sizeof m1), 0);
    ck_assert_int_ne(memcmp(m1, m3, sizeof m1), 0);
}
END_TEST

// Non-finite values are reported, never ranked.
START_TEST(test_nonfinite_detected)
{
    float w[8] = {1, 2, 3, NAN, 5, 6, 7, 8};
    eng_scorer sc;
    eng_scorer_init(&sc, ENG_SCORE_MAGNITUDE, ENG_DTYPE_F32, w, 2, 4, 0, "t",
                    NULL);
    eng_threshold thr;
    ck_assert_int_eq(eng_select_one(&sc, 4, &thr), SH_ENUMERIC);
    uint64_t mask[1];
    ck_assert_int_eq(eng_mask_nm(mask, &sc, 2, 4), SH_ENUMERIC);
    eng_select sel; // the kernels' path says it with the code too
    ck_assert_int_eq(eng_select_init(&sel, 4, 8), 0);
    ck_assert_int_eq(eng_select_feed(&sel, &sc), SH_ENUMERIC);
    eng_select_deinit(&sel);
    w[3] = INFINITY;
    ck_assert_int_eq(eng_select_one(&sc, 4, &thr), SH_ENUMERIC);
    uint16_t h[4] = {0x3c00, 0x7c00, 0, 0}; // F16 with an Inf
    eng_scorer_init(&sc, ENG_SCORE_MAGNITUDE, ENG_DTYPE_F16, h, 1, 4, 0, "t",
                    NULL);
    ck_assert_int_eq(eng_select_one(&sc, 2, &thr), SH_ENUMERIC);
}
END_TEST

// kth selection agrees with sorting, including runs of equal keys.
START_TEST(test_select_kth)
{
    enum { N = 999 };
    uint32_t a[N], b[N];
    for (int i = 0; i < N; i++)
        a[i] = (uint32_t)((i * 7919) % 53);
    for (int k = 0; k < N; k += 37) {
        memcpy(b, a, sizeof a);
        uint32_t v = eng_select_kth(b, N, (size_t)k);
        uint64_t below = 0, upto = 0;
        for (int i = 0; i < N; i++) {
            below += a[i] < v;
            upto += a[i] <= v;
        }
        ck_assert((uint64_t)k >= below && (uint64_t)k < upto);
    }
}
END_TEST

// Zero counting and N:M verification on raw bytes.
START_TEST(test_count_and_check)
{
    float f[8] = {0, -0.0f, 1, 2, 0, 3, 0, 0};
    ck_assert_uint_eq(eng_count_zeros(f, ENG_DTYPE_F32, 8), 5);
    ck_assert(eng_check_nm(f, ENG_DTYPE_F32, 8, 2, 4));
    ck_assert(!eng_check_nm(f, ENG_DTYPE_F32, 8, 1, 4));
    int64_t ints[3] = {0, 5, 0};
    ck_assert_uint_eq(eng_count_zeros(ints, ENG_DTYPE_I64, 3), 2);
}
END_TEST

// The reference output of a mask: src with masked elements zeroed.
static void masked_ref(unsigned char *dst, const unsigned char *src,
                       const uint64_t *mask, size_t n, size_t es)
{
    memcpy(dst, src, n * es);
    for (size_t i = 0; i < n; i++)
        if (eng_mask_get(mask, i))
            memset(dst + i * es, 0, es);
}

// Builds n values of dtype dt with many ties and some zeros.
static void tied_values(unsigned char *buf, eng_dtype dt, size_t n,
                        uint64_t seed)
{
    float *f = malloc(n * sizeof *f);
    th_randn(f, n, seed);
    quantize(f, n, 0.125f);
    eng_convert_from_f32(buf, f, dt, n);
    free(f);
}

// Kernels against the reference: the fused threshold writer and the N:M
// writer give byte-for-byte what the mask path gives, for F16, BF16, F32,
// including ties split at the threshold and an unaligned source.
START_TEST(test_kernels_match_reference)
{
    const eng_dtype types[] = {ENG_DTYPE_F16, ENG_DTYPE_BF16, ENG_DTYPE_F32};
    enum { ROWS = 24, COLS = 96, N = ROWS * COLS };
    for (size_t t = 0; t < 3; t++) {
        eng_dtype dt = types[t];
        ck_assert(eng_k_supports(dt));
        size_t es = eng_dtype_size(dt);
        unsigned char *raw = malloc(N * es + 1), *src = raw + 1; // unaligned
        unsigned char *fast = malloc(N * es), *ref = malloc(N * es);
        uint64_t mask[(N + 63) / 64];
        tied_values(src, dt, N, 100 + t);
        eng_scorer sc;
        eng_scorer_init(&sc, ENG_SCORE_MAGNITUDE, dt, src, ROWS, COLS, 0, "t",
                        NULL);
        const uint64_t ks[] = {0, 1, N / 3, N / 2, N - 1, N};
        for (size_t q = 0; q < 6; q++) {
            eng_threshold a, b;
            ck_assert_int_eq(eng_select_one(&sc, ks[q], &a), 0);
            b = a;
            // The kernel in two pieces, as the writer calls it per chunk.
            uint64_t z = eng_k_apply_threshold(fast, src, dt, N / 2, &a);
            z += eng_k_apply_threshold(fast + (N / 2) * es, src + (N / 2) * es,
                                       dt, N - N / 2, &a);
            eng_mask_threshold(mask, &sc, &b);
            masked_ref(ref, src, mask, N, es);
            ck_assert_msg(memcmp(fast, ref, N * es) == 0, "threshold %s k=%llu",
                          eng_dtype_name(dt), (unsigned long long)ks[q]);
            ck_assert_uint_eq(z, eng_count_zeros(ref, dt, N));
            ck_assert_uint_eq(a.ties, b.ties);
        }
        const int pats[][2] = {{2, 4},  {1, 4},  {3, 4}, {4, 8},  {2, 8},
                               {8, 16}, {5, 12}, {1, 2}, {16, 32}};
        for (size_t p = 0; p < sizeof pats / sizeof pats[0]; p++) {
            int keep = pats[p][0], m = pats[p][1];
            bool bad = false;
            uint64_t z = eng_k_apply_nm(fast, src, dt, N, keep, m, &bad);
            ck_assert(!bad);
            ck_assert(!eng_mask_nm(mask, &sc, keep, m));
            masked_ref(ref, src, mask, N, es);
            ck_assert_msg(memcmp(fast, ref, N * es) == 0, "%d:%d %s", keep, m,
                          eng_dtype_name(dt));
            ck_assert_uint_eq(z, eng_count_zeros(ref, dt, N));
        }
        free(raw);
        free(fast);
        free(ref);
    }
}
END_TEST

// The kernels' histogram agrees with the generic key path, and NaN or Inf
// shows in the top buckets.
START_TEST(test_kernel_histogram)
{
    enum { N = 5000 };
    const eng_dtype types[] = {ENG_DTYPE_F16, ENG_DTYPE_BF16, ENG_DTYPE_F32};
    for (size_t t = 0; t < 3; t++) {
        eng_dtype dt = types[t];
        eng_k_supports(dt);
        unsigned char buf[N * 4];
        tied_values(buf, dt, N, 7 + t);
        uint32_t *fast = calloc(2 * 65536, sizeof *fast);
        eng_k_hist_hi(fast, buf, dt, N);
        eng_scorer sc;
        eng_scorer_init(&sc, ENG_SCORE_MAGNITUDE, dt, buf, 1, N, 0, "t", NULL);
        uint32_t keys[N];
        eng_scorer_keys(&sc, keys, 0, N);
        uint32_t *ref = calloc(65536, sizeof *ref);
        for (int i = 0; i < N; i++)
            ref[keys[i] >> 16]++;
        for (int b = 0; b < 65536; b++)
            ck_assert_uint_eq(fast[b] + fast[65536 + b], ref[b]);
        ck_assert_uint_eq(eng_k_nonfinite(fast), 0);
        float inf = INFINITY;
        eng_convert_from_f32(buf + 3 * eng_dtype_size(dt), &inf, dt, 1);
        memset(fast, 0, 2 * 65536 * sizeof *fast);
        eng_k_hist_hi(fast, buf, dt, N);
        ck_assert_uint_eq(eng_k_nonfinite(fast), 1);
        free(fast);
        free(ref);
    }
}
END_TEST

// The F16 kernels build their table themselves: a process whose first F16
// work is a histogram (no eng_k_supports before) gets the right one. (The
// table was once filled by eng_k_supports alone.)
START_TEST(test_kernel_f16_table)
{
    enum { N = 3000 };
    unsigned char buf[N * 2];
    tied_values(buf, ENG_DTYPE_F16, N, 3);
    uint32_t *fast = calloc(2 * 65536, sizeof *fast);
    eng_k_hist_hi(fast, buf, ENG_DTYPE_F16, N);
    eng_scorer sc;
    eng_scorer_init(&sc, ENG_SCORE_MAGNITUDE, ENG_DTYPE_F16, buf, 1, N, 0, "t",
                    NULL);
    uint32_t keys[N];
    eng_scorer_keys(&sc, keys, 0, N);
    uint32_t *ref = calloc(65536, sizeof *ref);
    for (int i = 0; i < N; i++)
        ref[keys[i] >> 16]++;
    for (int b = 0; b < 65536; b++)
        ck_assert_uint_eq(fast[b] + fast[65536 + b], ref[b]);
    free(fast);
    free(ref);
}
END_TEST

Suite *suite_mask(void)
{
    Suite *s = suite_create("mask");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_global_matches_brute_force);
    tcase_add_test(tc, test_layer_exact_count);
    tcase_add_test(tc, test_count_for);
    tcase_add_test(tc, test_nm_every_group);
    tcase_add_test(tc, test_per_row);
    tcase_add_test(tc, test_per_row_ties);
    tcase_add_test(tc, test_mask_zero);
    tcase_add_test(tc, test_rows);
    tcase_add_test(tc, test_random_seeded);
    tcase_add_test(tc, test_nonfinite_detected);
    tcase_add_test(tc, test_select_kth);
    tcase_add_test(tc, test_count_and_check);
    tcase_add_test(tc, test_kernels_match_reference);
    tcase_add_test(tc, test_kernel_histogram);
    tcase_add_test(tc, test_kernel_f16_table);
    suite_add_tcase(s, tc);
    return s;
}

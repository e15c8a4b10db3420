// kernels.c: magnitude histograms, threshold and N:M writers on raw bytes.
//
// Loops are written for the compiler to vectorise: one element type per
// loop, no calls, restrict pointers, unaligned loads through memcpy.
#include "engine/select/kernels.h"

#include "engine/select/pattern.h"

#include "common/util.h"

#include <assert.h>
#include <pthread.h>
#include <string.h>

// --- keys of 16-bit floats

// F16 |h| (15 bits) -> the F32 bit pattern of its value, built once, by
// whichever kernel needs it first (f16_table at every entry that reads it).
static uint32_t f16_key[32768];
static pthread_once_t f16_once = PTHREAD_ONCE_INIT;

static void f16_init(void)
{
    for (uint32_t h = 0; h < 32768; h++) {
        float f = eng_f16_to_f32((uint16_t)h);
        memcpy(&f16_key[h], &f, 4);
    }
}

static void f16_table(eng_dtype dt)
{
    if (dt == ENG_DTYPE_F16)
        pthread_once(&f16_once, f16_init);
}

// The group index rides in the low 5 bits of the N:M kernels' keys.
static_assert(ENG_NM_MAX <= 32, "N:M keys carry the index in 5 bits");

bool eng_k_supports(eng_dtype dt)
{
    return dt == ENG_DTYPE_F16 || dt == ENG_DTYPE_BF16 || dt == ENG_DTYPE_F32;
}

static inline uint16_t ld16(const unsigned char *p, size_t i)
{
    uint16_t v;
    memcpy(&v, p + 2 * i, 2);
    return v;
}

static inline uint32_t ld32(const unsigned char *p, size_t i)
{
    uint32_t v;
    memcpy(&v, p + 4 * i, 4);
    return v;
}

static inline void st16(unsigned char *p, size_t i, uint16_t v)
{
    memcpy(p + 2 * i, &v, 2);
}

static inline void st32(unsigned char *p, size_t i, uint32_t v)
{
    memcpy(p + 4 * i, &v, 4);
}

// --- histograms

SH_HOT
uint32_t eng_k_hist_hi(uint32_t *restrict hist, const void *restrict src,
                       eng_dtype dt, size_t n)
{
    f16_table(dt);
    const unsigned char *p = src;
    uint32_t *a = hist, *b = hist + 65536;
    uint32_t or_low = 0;
    size_t i = 0;
    switch (dt) {
    case ENG_DTYPE_BF16: // key = (h & 0x7fff) << 16: the low half is zero
        for (; i + 1 < n; i += 2) {
            a[ld16(p, i) & 0x7fffu]++;
            b[ld16(p, i + 1) & 0x7fffu]++;
        }
        for (; i < n; i++)
            a[ld16(p, i) & 0x7fffu]++;
        break;
    case ENG_DTYPE_F16:
        for (; i + 1 < n; i += 2) {
            uint32_t x = f16_key[ld16(p, i) & 0x7fffu];
            uint32_t y = f16_key[ld16(p, i + 1) & 0x7fffu];
            a[x >> 16]++;
            b[y >> 16]++;
            or_low |= (x | y) & 0xffffu;
        }
        for (; i < n; i++) {
            uint32_t x = f16_key[ld16(p, i) & 0x7fffu];
            a[x >> 16]++;
            or_low |= x & 0xffffu;
        }
        break;
    case ENG_DTYPE_F32:
        for (; i + 1 < n; i += 2) {
            uint32_t x = ld32(p, i) & 0x7fffffffu;
            uint32_t y = ld32(p, i + 1) & 0x7fffffffu;
            a[x >> 16]++;
            b[y >> 16]++;
            or_low |= (x | y) & 0xffffu;
        }
        for (; i < n; i++) {
            uint32_t x = ld32(p, i) & 0x7fffffffu;
            a[x >> 16]++;
            or_low |= x & 0xffffu;
        }
        break;
    default: break;
    }
    return or_low;
}

uint64_t eng_k_nonfinite(const uint32_t *hist)
{
    uint64_t n = 0;
    for (uint32_t b = 0x7f80; b < 0x8000; b++)
        n += (uint64_t)hist[b] + hist[65536 + b];
    return n;
}

SH_HOT
void eng_k_hist_lo(uint64_t *restrict hist, const void *restrict src,
                   eng_dtype dt, size_t n, uint32_t hi)
{
    f16_table(dt);
    const unsigned char *p = src;
    switch (dt) {
    case ENG_DTYPE_BF16: // every low half is zero
        for (size_t i = 0; i < n; i++)
            hist[0] += (ld16(p, i) & 0x7fffu) == hi;
        break;
    case ENG_DTYPE_F16:
        for (size_t i = 0; i < n; i++) {
            uint32_t x = f16_key[ld16(p, i) & 0x7fffu];
            if ((x >> 16) == hi)
                hist[x & 0xffffu]++;
        }
        break;
    case ENG_DTYPE_F32:
        for (size_t i = 0; i < n; i++) {
            uint32_t x = ld32(p, i) & 0x7fffffffu;
            if ((x >> 16) == hi)
                hist[x & 0xffffu]++;
        }
        break;
    default: break;
    }
}

// --- threshold

#define NO_TIE UINT32_MAX

// The threshold in the dtype's own |w| bits: prune a < cut, and ties on
// a == tie.
static void native_cut(eng_dtype dt, uint32_t key, uint32_t *cut, uint32_t *tie)
{
    switch (dt) {
    case ENG_DTYPE_BF16:
        *cut = (uint32_t)(((uint64_t)key + 0xffffu) >> 16);
        *tie = (key & 0xffffu) == 0 ? key >> 16 : NO_TIE;
        break;
    case ENG_DTYPE_F16: { // first |h| whose key reaches the threshold
        uint32_t lo = 0, hi = 0x7c01; // finite values and +Inf
        while (lo < hi) {
            uint32_t mid = (lo + hi) / 2;
            if (f16_key[mid] < key)
                lo = mid + 1;
            else
                hi = mid;
        }
        *cut = lo;
        *tie = lo < 32768 && f16_key[lo] == key ? lo : NO_TIE;
        break;
    }
    default: *cut = key; *tie = key;
    }
}

SH_HOT
uint64_t eng_k_apply_threshold(void *restrict dst, const void *restrict src,
                               eng_dtype dt, size_t n, eng_threshold *t)
{
    const unsigned char *s = src;
    unsigned char *d = dst;
    uint32_t cut, tie;
    f16_table(dt);
    native_cut(dt, t->key, &cut, &tie);
    uint64_t zeros = 0;
    if (dt == ENG_DTYPE_F32) {
        for (size_t i = 0; i < n; i++) {
            uint32_t u = ld32(s, i);
            uint32_t out = (u & 0x7fffffffu) < cut ? 0 : u;
            st32(d, i, out);
            zeros += (out & 0x7fffffffu) == 0;
        }
        for (size_t i = 0; i < n && t->ties; i++) {
            uint32_t a = ld32(s, i) & 0x7fffffffu;
            if (a == tie) {
                zeros += a != 0;
                st32(d, i, 0);
                t->ties--;
            }
        }
        return zeros;
    }
    uint16_t cut16 = cut > 0x8000u ? 0x8000u : (uint16_t)cut;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = ld16(s, i);
        uint16_t out = (uint16_t)(h & 0x7fffu) < cut16 ? 0 : h;
        st16(d, i, out);
        zeros += (out & 0x7fffu) == 0;
    }
    for (size_t i = 0; i < n && t->ties && tie != NO_TIE; i++) {
        uint32_t a = ld16(s, i) & 0x7fffu;
        if (a == tie) {
            zeros += a != 0;
            st16(d, i, 0);
            t->ties--;
        }
    }
    return zeros;
}

// --- N:M

// Groups of four, the 2:4 and 1:4 case, written straight so the compiler
// vectorises across groups. rank_i = how many of the group go before i in
// pruning order (smaller |w|, or equal at a lower index); i is pruned when
// rank_i < drop.
#define NM4_BODY(T, LD, ST, ABS)                                               \
    for (size_t g = 0; g < n; g += 4) {                                        \
        T v0 = LD(s, g), v1 = LD(s, g + 1), v2 = LD(s, g + 2),                 \
          v3 = LD(s, g + 3);                                                   \
        T a0 = v0 & ABS, a1 = v1 & ABS, a2 = v2 & ABS, a3 = v3 & ABS;          \
        int r0 = (a1 < a0) + (a2 < a0) + (a3 < a0);                            \
        int r1 = (a0 <= a1) + (a2 < a1) + (a3 < a1);                           \
        int r2 = (a0 <= a2) + (a1 <= a2) + (a3 < a2);                          \
        int r3 = (a0 <= a3) + (a1 <= a3) + (a2 <= a3);                         \
        T o0 = r0 < drop ? 0 : v0, o1 = r1 < drop ? 0 : v1,                    \
          o2 = r2 < drop ? 0 : v2, o3 = r3 < drop ? 0 : v3;                    \
        ST(d, g, o0);                                                          \
        ST(d, g + 1, o1);                                                      \
        ST(d, g + 2, o2);                                                      \
        ST(d, g + 3, o3);                                                      \
        zeros += ((o0 & ABS) == 0) + ((o1 & ABS) == 0) + ((o2 & ABS) == 0) +   \
                 ((o3 & ABS) == 0);                                            \
        T m01 = a0 > a1 ? a0 : a1, m23 = a2 > a3 ? a2 : a3;                    \
        T mx = m01 > m23 ? m01 : m23;                                          \
        amax = mx > amax ? mx : amax;                                          \
    }

SH_HOT
static uint64_t nm4_16(unsigned char *restrict d,
                       const unsigned char *restrict s, size_t n, int drop,
                       uint32_t *amax_out)
{
    uint64_t zeros = 0;
    uint16_t amax = 0;
    NM4_BODY(uint16_t, ld16, st16, 0x7fffu)
    *amax_out = amax;
    return zeros;
}

SH_HOT
static uint64_t nm4_32(unsigned char *restrict d,
                       const unsigned char *restrict s, size_t n, int drop,
                       uint32_t *amax_out)
{
    uint64_t zeros = 0;
    uint32_t amax = 0;
    NM4_BODY(uint32_t, ld32, st32, 0x7fffffffu)
    *amax_out = amax;
    return zeros;
}

// Any other m (up to ENG_NM_MAX): ranks by pairwise comparison within the
// group, on keys that carry the index in their low 5 bits so every comparison
// is strict and branch-free. M is a compile-time constant in the common cases
// so the loops unroll.
#define NM_GROUPS(M)                                                           \
    for (size_t g = 0; g < n; g += (size_t)(M)) {                              \
        uint64_t k[ENG_NM_MAX];                                                \
        uint32_t v[ENG_NM_MAX];                                                \
        for (int i = 0; i < (M); i++) {                                        \
            v[i] = wide ? ld32(s, g + (size_t)i) : ld16(s, g + (size_t)i);     \
            uint32_t a = v[i] & mask;                                          \
            amax = a > amax ? a : amax;                                        \
            k[i] = ((uint64_t)a << 5) | (uint64_t)i;                           \
        }                                                                      \
        for (int i = 0; i < (M); i++) {                                        \
            int rank = 0;                                                      \
            for (int j = 0; j < (M); j++)                                      \
                rank += k[j] < k[i];                                           \
            uint32_t out = rank < drop ? 0 : v[i];                             \
            zeros += (out & mask) == 0;                                        \
            if (wide)                                                          \
                st32(d, g + (size_t)i, out);                                   \
            else                                                               \
                st16(d, g + (size_t)i, (uint16_t)out);                         \
        }                                                                      \
    }

// Groups of eight (4:8 and the like): an optimal 19-comparator sorting
// network finds the drop-th smallest key of the group without branches;
// keys carry the index, so they are distinct and "below it" is exact.
#define CSWAP(x, y)                                                            \
    do {                                                                       \
        uint64_t lo_ = x < y ? x : y, hi_ = x < y ? y : x;                     \
        x = lo_;                                                               \
        y = hi_;                                                               \
    } while (0)

SH_HOT
static uint64_t nm8(unsigned char *restrict d, const unsigned char *restrict s,
                    size_t n, int drop, bool wide, uint32_t *amax_out)
{
    uint32_t amax = 0, mask = wide ? 0x7fffffffu : 0x7fffu;
    uint64_t zeros = 0;
    for (size_t g = 0; g < n; g += 8) {
        uint32_t v[8];
        uint64_t k[8], t[8];
        for (int i = 0; i < 8; i++) {
            v[i] = wide ? ld32(s, g + (size_t)i) : ld16(s, g + (size_t)i);
            uint32_t a = v[i] & mask;
            amax = a > amax ? a : amax;
            k[i] = t[i] = ((uint64_t)a << 5) | (uint64_t)i;
        }
        CSWAP(t[0], t[2]);
        CSWAP(t[1], t[3]);
        CSWAP(t[4], t[6]);
        CSWAP(t[5], t[7]);
        CSWAP(t[0], t[4]);
        CSWAP(t[1], t[5]);
        CSWAP(t[2], t[6]);
        CSWAP(t[3], t[7]);
        CSWAP(t[0], t[1]);
        CSWAP(t[2], t[3]);
        CSWAP(t[4], t[5]);
        CSWAP(t[6], t[7]);
        CSWAP(t[2], t[4]);
        CSWAP(t[3], t[5]);
        CSWAP(t[1], t[4]);
        CSWAP(t[3], t[6]);
        CSWAP(t[1], t[2]);
        CSWAP(t[3], t[4]);
        CSWAP(t[5], t[6]);
        uint64_t cut = t[0]; // t[drop], selected without a dynamic index
        for (int j = 1; j < 8; j++)
            cut = j == drop ? t[j] : cut;
        for (int i = 0; i < 8; i++) {
            uint32_t out = k[i] < cut ? 0 : v[i];
            zeros += (out & mask) == 0;
            if (wide)
                st32(d, g + (size_t)i, out);
            else
                st16(d, g + (size_t)i, (uint16_t)out);
        }
    }
    *amax_out = amax;
    return zeros;
}

SH_HOT
static uint64_t nm_generic(unsigned char *restrict d,
                           const unsigned char *restrict s, size_t n, int keep,
                           int m, bool wide, uint32_t *amax_out)
{
    uint32_t amax = 0, mask = wide ? 0x7fffffffu : 0x7fffu;
    int drop = m - keep;
    uint64_t zeros = 0;
    if (m == 16)
        NM_GROUPS(16)
    else
        NM_GROUPS(m)
    *amax_out = amax;
    return zeros;
}

uint64_t eng_k_apply_nm(void *restrict dst, const void *restrict src,
                        eng_dtype dt, size_t n, int keep, int m,
                        bool *nonfinite)
{
    bool wide = dt == ENG_DTYPE_F32;
    uint32_t inf = dt == ENG_DTYPE_F32    ? 0x7f800000u
                   : dt == ENG_DTYPE_BF16 ? 0x7f80u
                                          : 0x7c00u;
    uint32_t amax = 0;
    uint64_t zeros;
    if (m == 4 && wide)
        zeros = nm4_32(dst, src, n, 4 - keep, &amax);
    else if (m == 4)
        zeros = nm4_16(dst, src, n, 4 - keep, &amax);
    else if (m == 8)
        zeros = nm8(dst, src, n, 8 - keep, wide, &amax);
    else
        zeros = nm_generic(dst, src, n, keep, m, wide, &amax);
    if (amax >= inf)
        *nonfinite = true;
    return zeros;
}

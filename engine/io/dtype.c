// dtype.c: dtype table and F16/BF16/F64 <-> F32 conversions.
#include "engine/io/dtype.h"

#include "common/err.h"
#include "common/util.h"

#include <assert.h>
#include <string.h>

const eng_dtype_info eng_dtypes[ENG_DTYPE_COUNT] = {
    [ENG_DTYPE_BOOL] = {"BOOL", 1, false},
    [ENG_DTYPE_U8] = {"U8", 1, false},
    [ENG_DTYPE_I8] = {"I8", 1, false},
    [ENG_DTYPE_F8_E5M2] = {"F8_E5M2", 1, false},
    [ENG_DTYPE_F8_E4M3] = {"F8_E4M3", 1, false},
    [ENG_DTYPE_F8_E8M0] = {"F8_E8M0", 1, false},
    [ENG_DTYPE_I16] = {"I16", 2, false},
    [ENG_DTYPE_U16] = {"U16", 2, false},
    [ENG_DTYPE_F16] = {"F16", 2, true},
    [ENG_DTYPE_BF16] = {"BF16", 2, true},
    [ENG_DTYPE_I32] = {"I32", 4, false},
    [ENG_DTYPE_U32] = {"U32", 4, false},
    [ENG_DTYPE_F32] = {"F32", 4, true},
    [ENG_DTYPE_F64] = {"F64", 8, true},
    [ENG_DTYPE_I64] = {"I64", 8, false},
    [ENG_DTYPE_U64] = {"U64", 8, false},
};
static_assert(sizeof eng_dtypes / sizeof eng_dtypes[0] == ENG_DTYPE_COUNT,
              "one row per dtype");

int eng_dtype_parse(const char *name, eng_dtype *out)
{
    for (int i = 0; i < ENG_DTYPE_COUNT; i++) {
        if (strcmp(name, eng_dtypes[i].name) == 0) {
            *out = (eng_dtype)i;
            return 0;
        }
    }
    return SH_ENOTFOUND;
}

float eng_bf16_to_f32(uint16_t h) { return eng_bits_f32((uint32_t)h << 16); }

uint16_t eng_f32_to_bf16(float f)
{
    uint32_t u = eng_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) // NaN: keep it quiet and NaN
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u); // round to nearest even
    return (uint16_t)(u >> 16);
}

float eng_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0x1f) { // Inf or NaN
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) { // normal
        u = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) { // zero
        u = sign;
    } else { // subnormal: normalise
        int shift = 0;
        while (!(man & 0x400u)) {
            man <<= 1;
            shift++;
        }
        man &= 0x3ffu;
        u = sign | ((uint32_t)(113 - shift) << 23) | (man << 13);
    }
    return eng_bits_f32(u);
}

uint16_t eng_f32_to_f16(float f)
{
    uint32_t u = eng_f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) // NaN
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) // rounds to >= 65520: Inf
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) {   // below the smallest normal: subnormal or zero
        if (a < 0x33000000u) // below half the smallest subnormal
            return sign;
        uint32_t exp = a >> 23;
        uint32_t man = (a & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - exp; // 14 + (113 - exp) - 1 ... see below
        // value = man * 2^(exp-150); subnormal unit is 2^-24, so the
        // result is man * 2^(exp-126) rounded to an integer.
        uint32_t q = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u)))
            q++;
        return (uint16_t)(sign | q);
    }
    // normal: rebias exponent (127 -> 15) and round 23 -> 10 mantissa bits
    uint32_t r = a - 0x38000000u; // exp - 112
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}

void eng_convert_to_f32(float *restrict dst, const void *restrict src,
                        eng_dtype dt, size_t n)
{
    const unsigned char *s = src;
    switch (dt) {
    case ENG_DTYPE_F32: memcpy(dst, s, n * 4); break;
    case ENG_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = eng_bits_f32((uint32_t)h << 16);
        }
        break;
    case ENG_DTYPE_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = eng_f16_to_f32(h);
        }
        break;
    case ENG_DTYPE_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, s + 8 * i, 8);
            dst[i] = (float)d;
        }
        break;
    default: assert(!"eng_convert_to_f32: not a float dtype");
    }
}

void eng_convert_from_f32(void *restrict dst, const float *restrict src,
                          eng_dtype dt, size_t n)
{
    unsigned char *d = dst;
    switch (dt) {
    case ENG_DTYPE_F32: memcpy(d, src, n * 4); break;
    case ENG_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = eng_f32_to_bf16(src[i]);
            memcpy(d + 2 * i, &h, 2);
        }
        break;
    case ENG_DTYPE_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = eng_f32_to_f16(src[i]);
            memcpy(d + 2 * i, &h, 2);
        }
        break;
    case ENG_DTYPE_F64:
        for (size_t i = 0; i < n; i++) {
            double v = src[i];
            memcpy(d + 8 * i, &v, 8);
        }
        break;
    default: assert(!"eng_convert_from_f32: not a float dtype");
    }
}

bool eng_dtype_is_int(eng_dtype dt)
{
    switch (dt) {
    case ENG_DTYPE_U8:
    case ENG_DTYPE_I8:
    case ENG_DTYPE_I16:
    case ENG_DTYPE_U16:
    case ENG_DTYPE_I32:
    case ENG_DTYPE_U32:
    case ENG_DTYPE_I64:
    case ENG_DTYPE_U64: return true;
    default: return false;
    }
}

int64_t eng_read_int(const void *src, eng_dtype dt, size_t i)
{
    const unsigned char *s = src;
    switch (dt) {
    case ENG_DTYPE_U8: return s[i];
    case ENG_DTYPE_I8: return (int8_t)s[i];
    case ENG_DTYPE_I16: {
        int16_t v;
        memcpy(&v, s + 2 * i, 2);
        return v;
    }
    case ENG_DTYPE_U16: {
        uint16_t v;
        memcpy(&v, s + 2 * i, 2);
        return v;
    }
    case ENG_DTYPE_I32: {
        int32_t v;
        memcpy(&v, s + 4 * i, 4);
        return v;
    }
    case ENG_DTYPE_U32: {
        uint32_t v;
        memcpy(&v, s + 4 * i, 4);
        return v;
    }
    case ENG_DTYPE_I64: {
        int64_t v;
        memcpy(&v, s + 8 * i, 8);
        return v;
    }
    case ENG_DTYPE_U64: {
        uint64_t v;
        memcpy(&v, s + 8 * i, 8);
        return v > INT64_MAX ? -1 : (int64_t)v;
    }
    default: assert(!"eng_read_int: not an integer dtype"); return 0;
    }
}

// The exponent all ones is NaN or Inf.
static inline bool nonfinite_bits(const float *x)
{
    uint32_t u;
    memcpy(&u, x, 4);
    return (u & 0x7f800000u) == 0x7f800000u;
}

// Whole blocks of a fixed length, which the compiler vectorises (at -O2
// too, where it takes only loops of a known count), up to the first that
// holds one; then one at a time through that block or the tail.
SH_HOT size_t eng_find_nonfinite(const float *x, size_t n)
{
    enum { B = 256 };
    size_t at = 0;
    for (; at + B <= n; at += B) {
        uint32_t any = 0;
        for (size_t k = 0; k < B; k++)
            any |= nonfinite_bits(&x[at + k]);
        if (any)
            break;
    }
    for (; at < n; at++)
        if (nonfinite_bits(&x[at]))
            return at;
    return SIZE_MAX;
}

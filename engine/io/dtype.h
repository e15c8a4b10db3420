// dtype.h: the element types of safetensors and conversions to and from F32.
//
// Every dtype safetensors names is known (so a file that uses one is read
// and copied through untouched); the float types F16, BF16, F32 and F64 can
// be pruned. Conversions to narrower types round to nearest even; NaN stays
// NaN. Source pointers may be unaligned (tensor data in a third-party file
// need not be aligned for its dtype).
#ifndef ENG_DTYPE_H
#define ENG_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum eng_dtype {
    ENG_DTYPE_BOOL,
    ENG_DTYPE_U8,
    ENG_DTYPE_I8,
    ENG_DTYPE_F8_E5M2,
    ENG_DTYPE_F8_E4M3,
    ENG_DTYPE_F8_E8M0,
    ENG_DTYPE_I16,
    ENG_DTYPE_U16,
    ENG_DTYPE_F16,
    ENG_DTYPE_BF16,
    ENG_DTYPE_I32,
    ENG_DTYPE_U32,
    ENG_DTYPE_F32,
    ENG_DTYPE_F64,
    ENG_DTYPE_I64,
    ENG_DTYPE_U64,
    ENG_DTYPE_COUNT
} eng_dtype;

typedef struct eng_dtype_info {
    const char *name; // as safetensors spells it
    uint8_t size;     // bytes per element
    bool prunable;    // a float type the engine can score and rewrite
} eng_dtype_info;

// Indexed by eng_dtype.
extern const eng_dtype_info eng_dtypes[ENG_DTYPE_COUNT];

// Maps a safetensors dtype name to the enum. Returns 0 or SH_ENOTFOUND.
int eng_dtype_parse(const char *name, eng_dtype *out);

static inline const char *eng_dtype_name(eng_dtype dt)
{
    return eng_dtypes[dt].name;
}
static inline size_t eng_dtype_size(eng_dtype dt)
{
    return eng_dtypes[dt].size;
}

// The bits of an F32 and back, without aliasing trouble.
static inline uint32_t eng_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float eng_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// Scalar conversions (bit patterns in, bit patterns out).
float eng_f16_to_f32(uint16_t h);
uint16_t eng_f32_to_f16(float f);
float eng_bf16_to_f32(uint16_t h);
uint16_t eng_f32_to_bf16(float f);

// dst (n,) F32 <- src (n,) of a prunable dtype. src may be unaligned.
// The index of the first NaN or infinity in x[0..n), or SIZE_MAX.
size_t eng_find_nonfinite(const float *x, size_t n);

void eng_convert_to_f32(float *restrict dst, const void *restrict src,
                        eng_dtype dt, size_t n);

// dst (n,) of a prunable dtype <- src (n,) F32, rounding to nearest even.
// dst may be unaligned.
void eng_convert_from_f32(void *restrict dst, const float *restrict src,
                          eng_dtype dt, size_t n);

// Integer dtypes (I32, I64, U8, I16...) read as int64 for dataset tokens
// and labels. Returns false for a non-integer dtype.
bool eng_dtype_is_int(eng_dtype dt);
int64_t eng_read_int(const void *src, eng_dtype dt, size_t i);

#endif

// test_dtype.c: the dtype table and conversions (round to nearest even).
#include "tests/helpers.h"

#include "engine/io/dtype.h"

#include <math.h>
#include <string.h>

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// Table: every dtype parses back to itself; sizes are right.
START_TEST(test_dtype_table)
{
    for (int i = 0; i < ENG_DTYPE_COUNT; i++) {
        eng_dtype dt;
        ck_assert_int_eq(eng_dtype_parse(eng_dtypes[i].name, &dt), 0);
        ck_assert_int_eq(dt, i);
        ck_assert_uint_gt(eng_dtypes[i].size, 0);
    }
    eng_dtype dt;
    ck_assert_int_ne(eng_dtype_parse("F4", &dt), 0);
    ck_assert_int_ne(eng_dtype_parse("f32", &dt), 0);
    ck_assert_uint_eq(eng_dtype_size(ENG_DTYPE_BF16), 2);
    ck_assert_uint_eq(eng_dtype_size(ENG_DTYPE_F64), 8);
}
END_TEST

// BF16: exact values, ties to even, NaN and Inf.
START_TEST(test_bf16_rounding)
{
    ck_assert_uint_eq(eng_f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(eng_f32_to_bf16(-2.0f), 0xc000);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
    ck_assert_uint_eq(eng_f32_to_bf16(from_bits(0x3f808000)), 0x3f80);
    // 1 + 3*2^-8 is halfway between two; the even one is 1 + 2^-6.
    ck_assert_uint_eq(eng_f32_to_bf16(from_bits(0x3f818000)), 0x3f82);
    // Just above half rounds up.
    ck_assert_uint_eq(eng_f32_to_bf16(from_bits(0x3f808001)), 0x3f81);
    ck_assert_uint_eq(eng_f32_to_bf16(INFINITY), 0x7f80);
    uint16_t n = eng_f32_to_bf16(NAN);
    ck_assert(isnan(eng_bf16_to_f32(n)));
    // Every BF16 value survives a round trip through F32.
    for (uint32_t h = 0; h < 65536; h++) {
        float f = eng_bf16_to_f32((uint16_t)h);
        if (isnan(f))
            continue;
        ck_assert_uint_eq(eng_f32_to_bf16(f), h);
    }
}
END_TEST

// F16: every value round-trips; subnormals, overflow and ties.
START_TEST(test_f16_rounding)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = eng_f16_to_f32((uint16_t)h);
        if (isnan(f)) {
            ck_assert(isnan(eng_f16_to_f32(eng_f32_to_f16(f))));
            continue;
        }
        ck_assert_uint_eq(eng_f32_to_f16(f), h);
    }
    ck_assert_uint_eq(eng_f32_to_f16(1.0f), 0x3c00);
    ck_assert_uint_eq(eng_f32_to_f16(65504.0f), 0x7bff);
    ck_assert_uint_eq(eng_f32_to_f16(65519.0f), 0x7bff);
    ck_assert_uint_eq(eng_f32_to_f16(65520.0f), 0x7c00); // ties to even: Inf
    ck_assert_uint_eq(eng_f32_to_f16(1e6f), 0x7c00);
    ck_assert_uint_eq(eng_f32_to_f16(ldexpf(1, -24)), 0x0001);
    ck_assert_uint_eq(eng_f32_to_f16(ldexpf(1, -25)), 0x0000); // tie to 0
    ck_assert_uint_eq(eng_f32_to_f16(ldexpf(3, -26)), 0x0001);
    ck_assert_uint_eq(eng_f32_to_f16(ldexpf(3, -25)), 0x0002); // 1.5: even
    ck_assert_uint_eq(eng_f32_to_f16(-0.0f), 0x8000);
    // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
    ck_assert_uint_eq(eng_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00);
    ck_assert_uint_eq(eng_f32_to_f16(1.0f + 3 * ldexpf(1, -11)), 0x3c02);
}
END_TEST

// Buffer conversions from unaligned sources, every float dtype.
// The first NaN or infinity, wherever it falls: in a whole block of the
// scan, at a block's edges, in the tail, or nowhere; large finite values
// are not caught.
START_TEST(test_find_nonfinite)
{
    enum { N = 256 * 5 + 37 };
    static float x[N];
    for (size_t i = 0; i < N; i++)
        x[i] = i % 3 ? 3.0e38f : -1.5f;
    ck_assert_uint_eq(eng_find_nonfinite(x, N), SIZE_MAX);
    ck_assert_uint_eq(eng_find_nonfinite(x, 0), SIZE_MAX);
    const size_t at[] = {0, 255, 256, 700, 1279, 1280, N - 1};
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (size_t a = 0; a < sizeof at / sizeof at[0]; a++) {
        float keep = x[at[a]];
        x[at[a]] = bad[a % 3];
        ck_assert_uint_eq(eng_find_nonfinite(x, N), at[a]);
        ck_assert_uint_eq(eng_find_nonfinite(x, at[a]), SIZE_MAX);
        if (at[a] + 1 < N) { // a later one does not hide it
            x[N - 1] = NAN;
            ck_assert_uint_eq(eng_find_nonfinite(x, N), at[a]);
            x[N - 1] = (N - 1) % 3 ? 3.0e38f : -1.5f;
        }
        x[at[a]] = keep;
    }
}
END_TEST

START_TEST(test_convert_unaligned)
{
    const float vals[5] = {0.5f, -1.25f, 3.0f, 0.0f, 1024.0f};
    const eng_dtype types[] = {ENG_DTYPE_F32, ENG_DTYPE_F16, ENG_DTYPE_BF16,
                               ENG_DTYPE_F64};
    for (size_t t = 0; t < 4; t++) {
        unsigned char raw[1 + 5 * 8];
        eng_convert_from_f32(raw + 1, vals, types[t], 5);
        float back[5];
        eng_convert_to_f32(back, raw + 1, types[t], 5);
        for (int i = 0; i < 5; i++)
            ck_assert_float_eq(back[i], vals[i]);
    }
    unsigned char ints[9] = {0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff};
    ck_assert_int_eq(eng_read_int(ints + 1, ENG_DTYPE_I32, 0), 1);
    ck_assert_int_eq(eng_read_int(ints + 1, ENG_DTYPE_I32, 1), -1);
    ck_assert(eng_dtype_is_int(ENG_DTYPE_I64));
    ck_assert(!eng_dtype_is_int(ENG_DTYPE_F32));
}
END_TEST

Suite *suite_dtype(void)
{
    Suite *s = suite_create("dtype");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_dtype_table);
    tcase_add_test(tc, test_bf16_rounding);
    tcase_add_test(tc, test_f16_rounding);
    tcase_add_test(tc, test_convert_unaligned);
    tcase_add_test(tc, test_find_nonfinite);
    suite_add_tcase(s, tc);
    return s;
}

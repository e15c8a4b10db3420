// method.c: the method table (see method.h).
#include "engine/methods/method.h"

#include "common/util.h"

#include <assert.h>
#include <math.h>
#include <string.h>

// Wanda: |w_ij| * ||x_j||, the norm of input j over the calibration set.
static void wanda_scale(float *scale, const float *colsq, int64_t cols)
{
    for (int64_t j = 0; j < cols; j++)
        scale[j] = sqrtf(colsq[j]);
}

const eng_method_def eng_methods[ENG_METHOD_COUNT] = {
    [ENG_METHOD_MAGNITUDE] =
        {
            .name = "magnitude",
            .patterns = ENG_PATTERNS_ALL,
            .supports_global = true,
            .score = ENG_SCORE_MAGNITUDE,
            .unit = ENG_UNIT_MAGNITUDE,
        },
    [ENG_METHOD_RANDOM] =
        {
            .name = "random",
            .patterns = ENG_PATTERNS_ALL,
            .supports_global = true,
            .score = ENG_SCORE_RANDOM,
            .unit = ENG_UNIT_RANDOM,
        },
    [ENG_METHOD_WANDA] =
        {
            .name = "wanda",
            .needs_calibration = true,
            .stats = ENG_STAT_COLSQ,
            .patterns = ENG_PATTERNS_ALL,
            .score = ENG_SCORE_SCALED,
            .scale = wanda_scale,
            .compete = ENG_COMPETE_ROW,
            .unit = ENG_UNIT_WANDA,
            .unit_stats = ENG_STAT_COLSQ,
        },
    [ENG_METHOD_SPARSEGPT] =
        {
            .name = "sparsegpt",
            .needs_calibration = true,
            .stats = ENG_STAT_HESSIAN,
            .patterns = ENG_PATTERN_BIT(ENG_PATTERN_UNSTRUCTURED) |
                        ENG_PATTERN_BIT(ENG_PATTERN_NM),
            .solve = eng_sparsegpt,
            .options = "sparsegpt",
        },
    // Structured only: no pattern of single weights.
    [ENG_METHOD_FLAP] =
        {
            .name = "flap",
            .needs_calibration = true,
            .unit = ENG_UNIT_FLAP,
            .unit_stats = ENG_STAT_COLSQ | ENG_STAT_SUM,
        },
    [ENG_METHOD_BLOCK_INFLUENCE] =
        {
            .name = "block_influence",
            .needs_calibration = true,
            .unit = ENG_UNIT_BLOCKS,
        },
    // First-order and Fisher criteria from the dense model's gradients
    // (the whole set's: the weights compete across the tensor, or the
    // pool).
    [ENG_METHOD_SNIP] =
        {
            .name = "snip",
            .needs_calibration = true,
            .needs_gradients = true,
            .patterns = ENG_PATTERNS_ALL,
            .supports_global = true,
            .score = ENG_SCORE_SNIP,
        },
    [ENG_METHOD_TAYLOR] =
        {
            .name = "taylor",
            .needs_calibration = true,
            .needs_gradients = true,
            .patterns = ENG_PATTERNS_ALL,
            .supports_global = true,
            .score = ENG_SCORE_TAYLOR,
            .unit = ENG_UNIT_TAYLOR,
        },
    [ENG_METHOD_FISHER] =
        {
            .name = "fisher",
            .needs_calibration = true,
            .needs_gradients = true,
            .patterns = ENG_PATTERNS_ALL,
            .supports_global = true,
            .score = ENG_SCORE_FISHER,
        },
    // Movement from the base checkpoint (spec "base"); scores given in a
    // file (spec "scores").
    [ENG_METHOD_MOVEMENT] =
        {
            .name = "movement",
            .patterns = ENG_PATTERNS_ALL,
            .supports_global = true,
            .score = ENG_SCORE_MOVEMENT,
        },
    [ENG_METHOD_SCORES] =
        {
            .name = "scores",
            .patterns = ENG_PATTERNS_ALL,
            .supports_global = true,
            .score = ENG_SCORE_GIVEN,
        },
};
static_assert(SH_ARRAY_LEN(eng_methods) == ENG_METHOD_COUNT,
              "a row for every method");

void eng_methods_making(char *buf, size_t size, unsigned pattern_bits)
{
    const char *which[ENG_METHOD_COUNT];
    size_t n = 0;
    for (int i = 0; i < ENG_METHOD_COUNT; i++)
        if ((eng_methods[i].patterns & pattern_bits) == pattern_bits)
            which[n++] = eng_methods[i].name;
    sh_join(buf, size, which, n, ", ");
}

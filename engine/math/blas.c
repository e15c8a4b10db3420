// blas.c: the engine's one touch of BLAS configuration: threads, and the
// kernels OpenBLAS runs on this CPU.
#include "engine/math/linalg.h"

#include <cpuid.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

// OpenBLAS's own entry points (from its cblas.h), declared here so the
// engine needs no OpenBLAS-specific header path.
void openblas_set_num_threads(int n);
char *openblas_get_corename(void);
// OpenBLAS's own stop for its worker threads (what its fork handler
// calls); weak: called only where the library exports it.
int blas_thread_shutdown_(void) __attribute__((weak));

static void one_thread(void)
{
    openblas_set_num_threads(1);
    if (blas_thread_shutdown_)
        blas_thread_shutdown_();
}

// OpenBLAS on one thread: the engine's threads run its calls over tiles
// (linalg.c), which keeps results the same for any thread count. Its
// worker threads then never get work, yet they start when the library
// loads and spin on sched_yield for about 2^28 cycles before they sleep:
// on two cores that took one from the first tenth of a second of every
// run (Wanda on a 4096^2 layer: its solve 0.04 -> 0.07 s). They are
// stopped once, whoever calls first: the stop is not safe from two
// threads at once, and in 0.3.21 setting the thread count again starts
// them again.
void eng_blas_threads(int n)
{
    (void)n;
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, one_thread);
}

const char *eng_blas_core(void)
{
    const char *c = openblas_get_corename();
    return c ? c : "unknown";
}

unsigned eng_cpu_features(void)
{
    unsigned a, b, c, d, f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    bool fma = c & bit_FMA, osxsave = c & bit_OSXSAVE;
    if (!osxsave)
        return 0; // no AVX state saved by the OS: SSE kernels only
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    bool ymm = (lo & 0x6) == 0x6, zmm = (lo & 0xe6) == 0xe6;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    if (ymm && fma && (b & bit_AVX2))
        f |= ENG_CPU_AVX2;
    const unsigned avx512 =
        bit_AVX512F | bit_AVX512DQ | bit_AVX512CD | bit_AVX512BW | bit_AVX512VL;
    if (zmm && (f & ENG_CPU_AVX2) && (b & avx512) == avx512)
        f |= ENG_CPU_AVX512;
    if ((f & ENG_CPU_AVX512) && __get_cpuid_count(7, 1, &a, &b, &c, &d) &&
        (a & (1u << 5)))
        f |= ENG_CPU_AVX512_BF16;
    return f;
}

const char *eng_blas_better_core(const char *current, unsigned features)
{
    // Cores whose kernels use AVX2 or AVX-512: nothing better to ask for.
    static const char *const fast[] = {"Haswell", "Zen", "SkylakeX",
                                       "Cooperlake", "SapphireRapids"};
    for (size_t i = 0; current && i < sizeof fast / sizeof fast[0]; i++)
        if (strcasecmp(current, fast[i]) == 0)
            return NULL;
    if (features & ENG_CPU_AVX512_BF16)
        return "Cooperlake";
    if (features & ENG_CPU_AVX512)
        return "SkylakeX";
    if (features & ENG_CPU_AVX2)
        return "Haswell";
    return NULL;
}

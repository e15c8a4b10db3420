// pattern.h: what a selection keeps, in words the spec, the methods and the
// kernels share: the pattern of a tensor's zeros and how rows are scored.
#ifndef ENG_PATTERN_H
#define ENG_PATTERN_H

// The largest M of an N:M pattern: the spec refuses more, and the kernels'
// and the masks' per-group arrays hold this many.
#define ENG_NM_MAX 32

typedef enum eng_pattern_kind {
    ENG_PATTERN_UNSTRUCTURED,
    ENG_PATTERN_NM,
    ENG_PATTERN_ROWS,
    ENG_PATTERN_KIND_COUNT
} eng_pattern_kind;

// A set of pattern kinds, as a method supports them.
#define ENG_PATTERN_BIT(k) (1u << (k))
#define ENG_PATTERNS_ALL ((1u << ENG_PATTERN_KIND_COUNT) - 1)

typedef struct eng_pattern {
    eng_pattern_kind kind;
    int n, m; // ENG_PATTERN_NM: keep n of every m (0 < n < m <= ENG_NM_MAX)
} eng_pattern;

// How a row's weights add up to its score (rows pattern).
typedef enum eng_norm { ENG_NORM_L1, ENG_NORM_L2, ENG_NORM_COUNT } eng_norm;

#endif

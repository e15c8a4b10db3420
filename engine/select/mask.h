// mask.h: scores, exact selection and pruning masks.
//
// A scorer maps each element of a (rows, cols) tensor to a 32-bit key whose
// order is the order of the criterion's scores: the lowest keys are pruned
// first. For magnitude the key is the F32 bit pattern of |w| (monotonic for
// non-negative floats), for random a seeded hash of the tensor name and the
// element's index, for Wanda the bits of |w_ij| * s_j. Ties are broken by
// index, lower first, so a mask is a pure function of the data and the seed.
//
// A mask is a bitset of numel bits, bit i set = element i is pruned. Masks
// are built without copying the tensor: the selections stream over the
// source in chunks and keep only histograms.
#ifndef ENG_MASK_H
#define ENG_MASK_H

#include "common/err.h"
#include "engine/hooks.h"
#include "engine/io/dtype.h"
#include "engine/select/pattern.h"

#include <stdbool.h>
#include <stdint.h>

typedef enum eng_score_kind {
    ENG_SCORE_MAGNITUDE, // |w|
    ENG_SCORE_RANDOM,    // hash(seed, name, index)
    ENG_SCORE_SCALED,    // |w_ij| * scale_j (Wanda)
    ENG_SCORE_SNIP,      // |w g|, g the loss's gradient
    ENG_SCORE_TAYLOR,    // |w g - 1/2 w^2 F|, F a Fisher diagonal
    ENG_SCORE_FISHER,    // 1/2 w^2 F
    ENG_SCORE_MOVEMENT,  // w (w - w_base), signed
    ENG_SCORE_GIVEN,     // a score tensor as it is, signed
    ENG_SCORE_KIND_COUNT
} eng_score_kind;

// The per-element inputs a kind reads beside W (eng_scorer fields), as
// ENG_SCORE_IN_* bits.
enum {
    ENG_SCORE_IN_GRAD = 1u << 0,   // grad
    ENG_SCORE_IN_FISHER = 1u << 1, // fisher
    ENG_SCORE_IN_OTHER = 1u << 2,  // other: the base weights, or the scores
};
unsigned eng_score_inputs_of(eng_score_kind kind);

// Whether keys order signed scores (movement, given): every float, negative
// ones first; the others order non-negative scores by their F32 bits.
bool eng_score_signed(eng_score_kind kind);

typedef struct eng_scorer {
    eng_score_kind kind;
    eng_dtype dtype;
    const unsigned char *data; // W (rows, cols) row-major, maybe unaligned
    uint64_t rows, cols;
    uint64_t salt;      // random: seed mixed with the name's hash
    const float *scale; // scaled: (cols,) non-negative
    // Gradient and movement criteria: (rows, cols) like W.
    const float *grad, *fisher;
    const unsigned char *other; // base weights or given scores
    eng_dtype other_dtype;
} eng_scorer;

// Sets up a scorer over a tensor's bytes. For random, salt derives from the
// seed and the tensor's name, so masks do not depend on processing order.
void eng_scorer_init(eng_scorer *s, eng_score_kind kind, eng_dtype dtype,
                     const void *data, uint64_t rows, uint64_t cols,
                     uint64_t seed, const char *name, const float *scale);

// keys (n,) <- keys of elements [start, start + n). Returns 0, or
// SH_ENUMERIC when an element in the range is NaN or infinite.
int eng_scorer_keys(const eng_scorer *s, uint32_t *restrict keys,
                    uint64_t start, size_t n);

// The score a key stands for (for row norms).
double eng_key_score(const eng_scorer *s, uint32_t key);

// A threshold: prune keys < key, and the first `ties` elements whose key
// equals it (in index order, across tensors for a global selection).
typedef struct eng_threshold {
    uint32_t key;
    uint64_t ties;
} eng_threshold;

// Selects the k lowest keys over one or several scorers (global scope) in
// O(total) time without copying: pass 1 histograms the high 16 bits of
// every key, pass 2 (skipped when every low half is zero, as for BF16
// magnitudes) the low 16 bits of the keys in the chosen bucket. The caller
// feeds each scorer to each pass, so it can release pages, poll cancel
// and report progress between tensors:
//
//   eng_select_init(&sel, k, total);
//   while (!sel.done) {
//       for each scorer: eng_select_feed(&sel, sc);
//       eng_select_next(&sel);
//   }
//   eng_threshold t = sel.result;
typedef struct eng_select {
    uint64_t k, total;
    uint64_t *hist; // (65536,) counts of the current pass
    uint32_t *sub;  // (2, 65536) pass-1 sub-histograms
    uint64_t pending;
    uint32_t or_low;
    int pass;    // 1 or 2
    uint32_t hi; // the bucket chosen by pass 1
    uint64_t r;  // keys still to take from it
    bool done;
    eng_threshold result;
} eng_select;

// total: elements over all scorers. Returns 0 or SH_ENOMEM.
int eng_select_init(eng_select *s, uint64_t k, uint64_t total);
void eng_select_deinit(eng_select *s);

// Feeds one scorer's keys to the current pass. Returns 0, or SH_ENUMERIC
// (and feeds nothing further) when one of its elements is NaN or infinite.
int eng_select_feed(eng_select *s, const eng_scorer *sc);

// Closes the current pass; sets s->done and s->result when the threshold
// is known.
void eng_select_next(eng_select *s);

// The whole selection over one scorer. Returns 0, SH_ENOMEM, or
// SH_ENUMERIC when a key is non-finite.
int eng_select_one(const eng_scorer *sc, uint64_t k, eng_threshold *out);

// mask (numel bits) <- elements under the threshold; t->ties is consumed,
// so passing one threshold through several tensors in order splits the
// ties as a global selection must.
void eng_mask_threshold(uint64_t *mask, const eng_scorer *s, eng_threshold *t);

// mask <- in each group of m consecutive elements of a row, the m - n
// lowest. Requires cols % m == 0 and m <= ENG_NM_MAX. Returns 0, or
// SH_ENUMERIC when a key was non-finite.
int eng_mask_nm(uint64_t *mask, const eng_scorer *s, int n, int m);

// mask <- in each row, the k lowest keys. Returns 0, SH_ENUMERIC when a
// key was non-finite, or SH_ENOMEM. work: (2 * cols) uint32 of scratch
// (for the first of the threads the rows are shared among).
int eng_mask_per_row(uint64_t *mask, const eng_scorer *s, uint64_t k,
                     uint32_t *work);

// mask <- whole rows: the k rows of lowest norm (L1 or L2 of the scores;
// for random, a seeded score per row). Returns 0, or SH_ENUMERIC when a
// score was non-finite. work: (rows) double and (rows) uint64 of scratch.
int eng_mask_rows(uint64_t *mask, const eng_scorer *s, uint64_t k,
                  eng_norm norm, double *work_scores, uint64_t *work_idx);

// Number of whole 64-bit words a mask of n bits needs.
static inline size_t eng_mask_words(uint64_t n)
{
    return (size_t)((n + 63) / 64);
}

static inline bool eng_mask_get(const uint64_t *mask, uint64_t i)
{
    return (mask[i >> 6] >> (i & 63)) & 1u;
}

// w (n,): the elements whose mask bit is set become 0 (on the job's
// threads).
void eng_mask_zero(float *w, const uint64_t *mask, uint64_t n);

// round(s * n), the number of elements a fraction s of n means.
uint64_t eng_count_for(double s, uint64_t n);

// k-th smallest (0-based) of keys (n,), reordering keys. Used per row.
uint32_t eng_select_kth(uint32_t *keys, size_t n, size_t k);

#endif

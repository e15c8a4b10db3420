// dataset.h: calibration and evaluation data sets, as safetensors files.
//
// Two kinds:
//   tokens  "tokens" [N, T] of I32/I64 (or another integer type): N rows of
//           T token ids, for language models.
//   inputs  "inputs" [N, D] of F32/F16/BF16 with optional "labels" [N] of an
//           integer type, for classifiers.
// Other tensors in the file are ignored. The header check needs no data;
// eng_dataset_load reads the rows a run uses and checks their values
// (token ids inside the vocabulary, labels inside the classes).
#ifndef ENG_DATASET_H
#define ENG_DATASET_H

#include "common/err.h"
#include "engine/hooks.h"
#include "engine/io/safetensors.h"

#include <stdint.h>

typedef enum eng_dataset_kind {
    ENG_DATASET_TOKENS,
    ENG_DATASET_INPUTS,
    ENG_DATASET_KIND_COUNT
} eng_dataset_kind;

typedef struct eng_dataset_info {
    eng_dataset_kind kind;
    int64_t rows, cols; // N and T (tokens) or D (inputs)
    eng_dtype dtype;    // of tokens or inputs
    bool has_labels;
    eng_dtype label_dtype;
} eng_dataset_info;

// Checks a header for one of the two kinds. d names the tensor at fault.
int eng_dataset_check(const eng_st_header *h, eng_dataset_info *out,
                      sh_diag *d);

const char *eng_dataset_kind_name(eng_dataset_kind k);

// A loaded dataset: the first `rows` rows, ids as int32 or inputs as F32.
typedef struct eng_dataset {
    eng_dataset_info info;
    int64_t rows;        // rows loaded (<= info.rows)
    int32_t *ids;        // (rows, cols) token ids, kind TOKENS
    const float *inputs; // (rows, cols) features, kind INPUTS: F32 files
                         // in place (mapped), other dtypes converted
    int32_t *labels;     // (rows,), or NULL
    float *owned;        // inputs when converted (ours to free)
    eng_st *st;          // the open file while inputs point into it
    size_t tensor;       // the index of "inputs" in st
    bool unchecked;      // eng_dataset_load_lazy: inputs not yet read
} eng_dataset;

// Opens path, checks it, loads at most max_rows rows (0: all). vocab > 0
// checks every token id against it; classes > 0 every label. Polls h (may
// be NULL) every million values: SH_ECANCELED. Frees with
// eng_dataset_deinit.
int eng_dataset_load(eng_dataset *ds, const char *path, int64_t max_rows,
                     int64_t vocab, int64_t classes, const eng_hooks *h,
                     sh_diag *d);
void eng_dataset_deinit(eng_dataset *ds);

// As eng_dataset_load, except that F32 inputs read in place are not read
// yet (ds->unchecked; other dtypes are converted and checked as there). A
// caller then reads them in pieces with eng_dataset_read_rows, which checks
// what it reads, or checks them all with eng_dataset_check_rows before
// reading ds->inputs.
int eng_dataset_load_lazy(eng_dataset *ds, const char *path, int64_t max_rows,
                          int64_t vocab, int64_t classes, const eng_hooks *h,
                          sh_diag *d);
// Checks the inputs a lazy load left unread, as eng_dataset_load does
// (SH_EFORMAT naming the first row holding a non-finite value); a no-op
// for a dataset with nothing unchecked. Clears ds->unchecked on success.
int eng_dataset_check_rows(eng_dataset *ds, const eng_hooks *h, sh_diag *d);
// Inputs rows [r0, r0 + n) of a lazily loaded F32 dataset into out
// (n, cols), copied from the file with pread on the job's threads (a
// caller's buffer reused from piece to piece beats touching every mapped
// page), and checked: SH_EFORMAT naming the first row holding a non-finite
// value; SH_EINVAL for rows past ds->rows or inputs not read in place.
// A lazy load checks the labels first, the inputs as they are read.
int eng_dataset_read_rows(const eng_dataset *ds, int64_t r0, int64_t n,
                          float *out, sh_diag *d);

#endif

// spec.h: the job spec, the same JSON for POST /v1/jobs and `prune --spec`.
//
//   {"checkpoint": "ck_...",            opaque to the engine
//    "method": "magnitude",             a row of eng_methods
//    "sparsity": 0.5,                   [0, 1]; implied by an N:M pattern
//    "pattern": "unstructured",         unstructured | "N:M" | rows
//    "scope": "layer",                  layer | global (unstructured only)
//    "norm": "l2",                      l1 | l2: how rows are scored
//    "targets": ["regex"],              replaces the default set; [] = default
//    "ignore": ["regex"],               removes from the set
//    "overrides": [{"match": "regex", "sparsity": 0.3, "pattern": "2:4",
//                   "quantize": {...} | null}],
//    "seed": 1234,                      drawn at random when absent
//    "calibration": {"dataset": "...", "samples": null},  null: all rows
//    "evaluation": {"dataset": "..."},
//    "sparsegpt": {"blocksize": 128, "damp": 0.01},
//    "output": {"format": "dense", "masks": false, "sparse_format": "auto"},
//    "quantize": {"bits": 4, "group_size": 0, "symmetric": false,
//                 "method": "gptq"},
//    "preserve_zeros": false,
//    "allocation": "uniform" | "owl" | {"method": "owl", "m": 5,
//                  "lambda": 0.08, "patterns": ["1:4", "2:4", "3:4"]},
//    "structure": {"heads": 0.25, "kv_heads": 0, "channels": 0.3,
//                  "blocks": 1, "neurons": 0, "multiple_of": 1,
//                  "compensate": true, "blocks_by": "influence"},
//    "base": "ck_...",                 method movement: the weights before
//                                       fine-tuning (same names, shapes,
//                                       dtypes); opaque to the engine
//    "scores": "ds_...",                method scores: score tensors, one
//                                       per target, its shape; opaque
//    "kind": "prune" | "sensitivity" | "sweep",
//    "sensitivity": {"levels": [0.3, 0.5, 0.7, 0.9],
//                    "granularity": "block"},
//    "sweep": {"methods": ["magnitude", "wanda"], "levels": [0.5, 0.7]}}
//
// "kind": "sensitivity" makes the spec the base of a sensitivity sweep
// (engine.h: eng_sensitivity): every group of its targets pruned alone at
// each level, the model measured each time. It takes no overrides,
// structure, allocation or global scope: the sweep sets each group's
// sparsity itself.
//
// "kind": "sweep" makes it the base of a trade-off sweep (engine.h:
// eng_sweep): the spec run once for each method of sweep.methods (the
// base's alone when absent) at each sparsity of sweep.levels (the base's
// when absent), each point measured; every point must be a valid spec.
//
// With "structure" the job shrinks instead of zeroing (run/shrink.c): whole
// units go from every block, the same count from each (fractions of query
// heads, KV groups, MLP channels, mlp hidden units; a count of blocks), and
// the output has the smaller shapes. It takes no sparsity, pattern,
// overrides or global scope.
//
// N:M keeps at most N non-zero weights in every M consecutive ones along the
// input dimension (2:4 keeps 2 of 4, as NVIDIA's sparse tensor cores read
// it). Regexes are POSIX extended within the rule of regex.h, searched
// anywhere in the tensor name (anchor with ^ and $); at most
// ENG_SPEC_MAX_REGEXES in each list. The first override whose regex
// matches applies.
//
// The default targets are float tensors of two or more dimensions whose
// name ends in ".weight", except embeddings, norms and lm_head.
#ifndef ENG_SPEC_H
#define ENG_SPEC_H

#include "common/err.h"
#include "engine/io/safetensors.h"
#include "engine/jobspec/regex.h"
#include "engine/methods/method.h"
#include "engine/select/pattern.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

// The output formats the spec takes (formats/ names its writers alike).
#define ENG_OUTPUT_DENSE "dense"
#define ENG_OUTPUT_COMPRESSED "compressed-tensors"

typedef enum eng_output_format {
    ENG_FORMAT_DENSE,
    ENG_FORMAT_COMPRESSED,
    ENG_FORMAT_COUNT
} eng_output_format;

// compressed-tensors' sparse form (spec output.sparse_format): auto takes
// sparse-24-bitmask where the pattern is 2:4, sparse-bitmask elsewhere.
typedef enum eng_sparse_format {
    ENG_SPARSE_AUTO,
    ENG_SPARSE_BITMASK,
    ENG_SPARSE_24,
    ENG_SPARSE_COUNT
} eng_sparse_format;

// Entries of each of targets, ignore and overrides.
#define ENG_SPEC_MAX_REGEXES 64
// Entries of overrides: an allocation writes one a block (80 for the
// largest Llama models), each an anchored literal prefix.
#define ENG_SPEC_MAX_OVERRIDES 256

typedef enum eng_scope {
    ENG_SCOPE_LAYER,
    ENG_SCOPE_GLOBAL,
    ENG_SCOPE_COUNT
} eng_scope;

// Quantization of the targets (spec "quantize"; methods/quant.h): a grid
// of 2^bits values per output row (group_size 0) or per group_size inputs
// of a row, min-max, asymmetric unless symmetric. "gptq": the OBS update
// through H (needs calibration; with sparsegpt joint with its pruning, as
// the reference's --wbits; with another method the mask is chosen first
// and kept). "rtn": the kept weights rounded to their grids once the mask
// is chosen. The default: gptq with calibration, else rtn (sparsegpt: gptq
// only). bits 0: none. With sparsity 0 a job only quantizes.
typedef struct eng_quant {
    int bits;
    int64_t group_size;
    bool symmetric;
    bool rtn; // round to nearest after the mask, no update (else GPTQ)
} eng_quant;

typedef struct eng_override {
    eng_regex match;
    bool has_sparsity, has_pattern, has_quant;
    double sparsity;
    eng_pattern pattern;
    eng_quant quant; // has_quant: the tensor's grid (bits 0: none)
} eng_override;

// Which reconstruction errors a run measures (spec "report.recon_error"):
// none (false), an estimate ("sample": the first ENG_RECON_SAMPLE_ROWS
// calibration rows and at most 256 output rows of each target, the cost of
// a small product), or the whole set (true: H over every row and two
// traces, rows x cols^2 each). Left out: true where the method builds the
// Hessian anyway (sparsegpt), "sample" elsewhere, where a whole-set figure
// would cost more than the method itself. With a Hessian, "sample" is
// measured on every row too (it costs the same).
typedef enum eng_recon {
    ENG_RECON_OFF,
    ENG_RECON_SAMPLE,
    ENG_RECON_FULL,
} eng_recon;

#define ENG_RECON_SAMPLE_ROWS 2048

// How blocks to remove are chosen: the lowest block influence over the
// calibration set (ShortGPT), the last ones, or at random (seeded).
typedef enum eng_blocks_by {
    ENG_BLOCKS_INFLUENCE,
    ENG_BLOCKS_LAST,
    ENG_BLOCKS_RANDOM,
    ENG_BLOCKS_BY_COUNT
} eng_blocks_by;

typedef struct eng_structure {
    bool on;                                   // the spec has a structure
    double heads, kv_heads, channels, neurons; // fractions removed, [0, 1)
    int64_t blocks;                            // whole blocks removed
    int64_t multiple_of; // kept widths rounded up to a multiple of it
    bool compensate;     // flap: the removed channels' mean as a bias
    eng_blocks_by blocks_by;
} eng_structure;

// How target sparsities are chosen (spec "allocation"): the same for every
// target (uniform), or OWL's (Yin et al. 2024): per block, from the share
// of its Wanda scores above m times their mean (the layer outlier
// distribution), spread over [target - lambda, target + lambda], more
// outliers pruned less, the parameter-weighted mean the target.
// "sensitivity": each group's level from the measured curves of a
// sensitivity report (`from`, a file the caller resolved), bounded by
// [min, max], the predicted loss least (run/alloc.c).
typedef enum eng_alloc_kind {
    ENG_ALLOC_UNIFORM,
    ENG_ALLOC_OWL,
    ENG_ALLOC_SENSITIVITY,
    ENG_ALLOC_COUNT
} eng_alloc_kind;

#define ENG_ALLOC_MAX_PATTERNS 8

typedef struct eng_alloc {
    eng_alloc_kind kind;
    double m, lambda; // owl
    // owl with N:M: each block takes one of these (its level the nearest,
    // the weighted mean as near the target as they allow); none: any
    // unstructured level.
    eng_pattern patterns[ENG_ALLOC_MAX_PATTERNS];
    size_t n_patterns;
    char *from;      // sensitivity: the report's path
    double min, max; // sensitivity: bounds on every group's level
} eng_alloc;

#define ENG_OWL_M 5.0
#define ENG_OWL_LAMBDA 0.08

// What a job does (spec "kind"): prune once, or measure each group's
// sensitivity (spec "sensitivity").
typedef enum eng_kind {
    ENG_KIND_PRUNE,
    ENG_KIND_SENSITIVITY,
    ENG_KIND_SWEEP,
    ENG_KIND_COUNT
} eng_kind;

// A sensitivity sweep's groups: a tensor, a decoder block, or a type (the
// tensors of one name across blocks).
typedef enum eng_granularity {
    ENG_GRAN_TENSOR,
    ENG_GRAN_BLOCK,
    ENG_GRAN_TYPE,
    ENG_GRAN_COUNT
} eng_granularity;

#define ENG_SENS_MAX_LEVELS 32

typedef struct eng_sens {
    double levels[ENG_SENS_MAX_LEVELS]; // each in (0, 1), rising
    size_t n_levels;
    eng_granularity granularity;
} eng_sens;

#define ENG_SWEEP_MAX_POINTS 64

// A trade-off sweep's points: methods x levels (either may be empty: the
// base's method, or its sparsity).
typedef struct eng_sweep_spec {
    eng_method methods[ENG_METHOD_COUNT];
    size_t n_methods;
    double levels[ENG_SENS_MAX_LEVELS];
    size_t n_levels;
} eng_sweep_spec;

typedef struct eng_spec {
    eng_kind kind;
    eng_sens sens;        // kind sensitivity
    eng_sweep_spec sweep; // kind sweep
    char *checkpoint;     // may be NULL
    eng_method method;
    double sparsity;
    eng_pattern pattern;
    eng_scope scope;
    eng_norm norm;
    eng_regex *targets;
    size_t n_targets;
    eng_regex *ignore;
    size_t n_ignore;
    eng_override *overrides;
    size_t n_overrides;
    uint64_t seed;
    char *calib_dataset; // NULL when there is no calibration
    int64_t calib_samples;
    char *eval_dataset; // NULL when there is no evaluation
    char *base;         // method movement: the base checkpoint, else NULL
    char *scores;       // method scores: the scores file (a dataset id)
    int sgpt_blocksize;
    double sgpt_damp;
    eng_recon recon;
    eng_structure structure;
    eng_quant quant;
    bool preserve_zeros;      // weights zero on input stay zero
    eng_output_format format; // spec output.format
    eng_sparse_format sparse_format;
    bool masks; // output.masks: also masks.safetensors
    eng_alloc alloc;
} eng_spec;

// A tensor's share of the spec.
typedef struct eng_share {
    bool target;
    double sparsity;
    eng_pattern pattern;
    eng_quant quant;    // the spec's, or its override's
    int override_index; // -1 when none applied
} eng_share;

// Parses a spec object, fills defaults and checks every field on its own.
// On failure d->field names the offending field ("overrides[1].match") and
// *s is left empty. Free with eng_spec_deinit.
int eng_spec_parse(eng_spec *s, const json_t *j, sh_diag *d);
void eng_spec_deinit(eng_spec *s);

// The spec with every default filled in (a new reference).
json_t *eng_spec_to_json(const eng_spec *s);

// Checks the spec against a model's tensors: some target exists, N:M
// divides every target's input dimension, what runs the model forward
// (calibrated methods, calibration, evaluation) has a model the engine can
// run (`runnable`: a family of nets/ takes it, and it has its config.json).
// d->field names the spec field, the message the tensor. With deadline > 0
// (sh_time_mono() seconds) a check still matching names then gives up
// (SH_ESPEC): the service bounds what a request may cost; the CLI passes 0.
// The check knows no family: eng_check (engine.h) asks them.
int eng_spec_check(const eng_spec *s, const eng_tensor_info *const *tensors,
                   size_t n, const char *arch, bool runnable, double deadline,
                   sh_diag *d);

// Decides whether tensor t is a target and at what sparsity and pattern.
void eng_spec_share(const eng_spec *s, const eng_tensor_info *t,
                    eng_share *out);

// Formats a pattern ("unstructured", "2:4", "rows") into buf.
void eng_pattern_format(char *buf, size_t size, eng_pattern p);

// Parses a pattern word. Returns 0 or SH_ESPEC with the reason in d.
int eng_pattern_parse(const char *word, eng_pattern *out, const char *field,
                      sh_diag *d);

// Names of the enums, for reports.
const char *eng_scope_name(eng_scope s);
const char *eng_norm_name(eng_norm n);
const char *eng_blocks_by_name(eng_blocks_by b);
const char *eng_alloc_name(eng_alloc_kind k);
const char *eng_kind_name(eng_kind k);

// A sweep's points (methods x levels), and point i as a spec of kind
// prune: s with the point's method and sparsity and no reconstruction
// errors. The point borrows s's memory (regexes, names): it lives while s
// does and is never given to eng_spec_deinit.
size_t eng_sweep_points(const eng_spec *s);
eng_spec eng_sweep_point(const eng_spec *s, size_t i);
const char *eng_granularity_name(eng_granularity g);

// A (rows, cols) view of a tensor: dim 0 by the product of the rest; a 1-D
// tensor is one row.
void eng_tensor_rows_cols(const eng_tensor_info *t, uint64_t *rows,
                          uint64_t *cols);

#endif

// report.h: what a pruning run did, tensor by tensor, and what it cost.
//
// The JSON form (eng_report_to_json) is the job's `result` in the API and
// the `--report` file of the CLI; its field names are a public contract:
//
//   {"method", "pattern", "scope", "sparsity",
//    "targets": {"tensors", "params", "zeros", "sparsity"},
//    "model":   {"params", "zeros", "sparsity"},
//    "layers":  [{"name", "shape", "dtype", "params", "zeros", "sparsity",
//                 "target_sparsity", "pattern", "pattern_ok",
//                 "recon_error"?, "damping"?, "quantize"?,
//                 "storage": {"as", "bytes_before", "bytes_after",
//                             "bits_per_weight", "note"?}}],
//    "metric"?: {"name", "dense", "pruned"},
//    "calibration"?: {"samples", "tokens", "recon_rows"},
//    "timings": {"read", "forward", "statistics", "solve", "recon",
//                "write", "evaluate", "hash"},
//    "structure"?: {"units": {"heads": {"before", "after"}, ...},
//                   "blocks": [{"index", "as", "heads": [removed], ...} |
//                              {"index", "removed": true}],
//                   "compensated", "block_influence"?},
//    "size"?: {"params", "bytes", "flops_per_token": {"dense", "pruned"},
//              "context"},
//    "speed"?: {"dense", "pruned", "unit", "speedup"},
//    "allocation"?: {"method", "m", "lambda", "blocks": [{"index",
//                    "outlier_ratio", "params", "sparsity"}]},
//    "quantize"?: {"bits", "group_size", "symmetric", "method"},
//    "storage": {"format", "bytes_before", "bytes_after", "ratio",
//                "targets": {"bytes_before", "bytes_after",
//                            "bits_per_weight"}},
//    "seconds"}
//
// A layer row has "timings" too: the phases spent on that tensor alone
// (read, solve, recon, write; those that applied).
#ifndef ENG_REPORT_H
#define ENG_REPORT_H

#include "engine/io/safetensors.h"
#include "engine/jobspec/spec.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

// Where a run's time goes. Each phase sums the wall time the run's own
// thread spent in it (work on helper threads counts where it is waited
// for), so the phases add up to about `seconds`.
typedef enum eng_phase {
    ENG_PHASE_READ,       // checkpoint and dataset bytes into memory
    ENG_PHASE_FORWARD,    // the model's forward passes over calibration data
    ENG_PHASE_STATISTICS, // H = X^T X, column norms, from those passes
    ENG_PHASE_SOLVE,      // the method: selection, masks, OBS updates
    ENG_PHASE_RECON,      // the reconstruction errors
    ENG_PHASE_WRITE,      // the output files (copies of the rest included)
    ENG_PHASE_EVALUATE,   // the metric before and after
    ENG_PHASE_HASH,       // waiting for the input's digests
    ENG_PHASE_COUNT
} eng_phase;

const char *eng_phase_name(eng_phase p);

typedef struct eng_layer_report {
    char *name;
    eng_dtype dtype;
    int ndim;
    int64_t shape[ENG_MAX_DIMS];
    uint64_t params, zeros;
    double target_sparsity;
    eng_pattern pattern;
    bool pattern_ok;    // N:M holds in every group; exact count otherwise
    double recon_error; // NAN when there was no calibration data
    double damping;     // NAN unless SparseGPT ran
    double timings[ENG_PHASE_COUNT]; // seconds; NAN: did not apply
    // How the output stores it: the format's form ("dense",
    // "pack-quantized", "sparse-bitmask", ...), its bytes in the input
    // and the output (scales, masks and offsets included), and why it is
    // stored less compactly than asked, if so. Static strings.
    const char *stored_as, *store_note;
    uint64_t bytes_before, bytes_after;
    eng_quant quant; // its grid (bits 0: not quantized)
} eng_layer_report;

typedef struct eng_report {
    eng_method method;
    eng_pattern pattern;
    eng_scope scope;
    double sparsity;
    uint64_t target_tensors, target_params, target_zeros;
    uint64_t model_params, model_zeros;
    eng_layer_report *layers;
    size_t n_layers, cap_layers;
    bool has_metric;
    const char *metric_name; // "perplexity" or "accuracy"
    double metric_dense, metric_pruned;
    int64_t calib_samples, calib_tokens; // 0 without calibration
    int64_t recon_rows; // rows of them the recon_errors were measured on
    double timings[ENG_PHASE_COUNT]; // seconds, summed over the run
    double seconds;
    // A structured shrink: the units before and after, what went from each
    // block ("structure"); params, bytes and FLOPs per token before and
    // after ("size"). NULL otherwise; owned.
    json_t *structure, *size;
    // An allocation other than uniform: how it chose ("allocation"):
    // {"method", "m", "lambda", "blocks": [{"index", "outlier_ratio",
    // "params", "sparsity"}]}. Owned.
    json_t *allocation;
    eng_quant quant; // the targets' grid (bits 0: not quantized)
    // The output's bytes (weight files' tensors) against the input's, in
    // all and over the targets ("storage"); format NULL: not measured.
    const char *format;
    uint64_t bytes_before, bytes_after, target_bytes_before, target_bytes_after;
    // The forward pass's speed on the input and the output (evaluation).
    bool has_speed;
    const char *speed_unit; // "tokens/s" or "samples/s"
    double speed_dense, speed_pruned;
} eng_report;

void eng_report_init(eng_report *r, const eng_spec *s);
void eng_report_deinit(eng_report *r);

// Appends a layer row for tensor t; returns it (owned by r), or NULL when
// out of memory. recon_error and damping start as NAN.
eng_layer_report *eng_report_add_layer(eng_report *r, const eng_tensor_info *t,
                                       const eng_share *p);

// The JSON form described above (a new reference).
json_t *eng_report_to_json(const eng_report *r);

// Adds the time since `since` (sh_time_mono) to phase p of r and, when l
// is given, of that layer; returns the time now, the next lap's start.
double eng_report_lap(eng_report *r, eng_layer_report *l, eng_phase p,
                      double since);

// Finds the layer row called name, or NULL.
eng_layer_report *eng_report_layer(eng_report *r, const char *name);

#endif

// engine.h: the pruning engine's entry point.
//
// The engine is a pure library: it gets a model (paths), a spec and hooks,
// writes the pruned model into a directory and returns a report. It knows
// nothing of HTTP, jobs or databases. Weights are read through mmap tensor
// by tensor (block by block for calibrated methods) and each tensor's pages
// are given back when it is done, so memory stays near the largest tensor.
//
// Output: every file of the input, weight files rewritten with pruned
// tensors (same names, dtypes, shapes and order; non-target tensors byte
// for byte), and shears.json, which records the spec with its defaults,
// the report, the SHA-256 of every input and the engine version.
#ifndef ENG_ENGINE_H
#define ENG_ENGINE_H

#include "common/err.h"
#include "engine/hooks.h"
#include "engine/io/dataset.h"
#include "engine/io/model.h"
#include "engine/jobspec/report.h"
#include "engine/jobspec/spec.h"

#include <stdbool.h>

#define ENG_MANIFEST_NAME "shears.json"

typedef struct eng_options {
    const char *out_dir;          // an existing, empty directory
    bool sync;                    // fsync every file written, and the dir
    const char *calibration_path; // safetensors dataset, or NULL
    const char *evaluation_path;  // safetensors dataset, or NULL
    const eng_model *base;        // movement: the base checkpoint, or NULL
    const char *scores_path;      // scores: the score tensors, or NULL
    // Called once, just before the manifest is written, for the SHA-256 of
    // every model file (eng_model_file_at order; NULL: not recorded). A
    // caller may hash its inputs on another thread while the run goes on.
    const char *const *(*input_sha)(void *ctx);
    void *input_sha_ctx;
    const char *calibration_sha; // or NULL
    const char *evaluation_sha;  // or NULL
    int threads;                 // BLAS threads for this run; 0 = leave
    // With evaluation: measure the pruned model only (the dense metric is
    // known), and no speed. For sweeps of many runs of one model.
    bool pruned_metric_only;
    // A sensitivity sweep measures every run's whole model, reusing no
    // dense prefix (for comparison: the numbers are the same).
    bool sensitivity_whole_runs;
    // Calibration inputs an mlp's first block reads are streamed from the
    // file a piece at a time; this reads and checks them whole first
    // instead (for comparison: the bytes are the same).
    bool calibration_whole;
    // A sensitivity sweep's run: targets at sparsity 0 with no grid are
    // left as they are (copied through, no statistics, no report row),
    // and the calibration pass stops after the last block with work.
    bool sensitivity_run;
    // With sensitivity_run: the sweep's dense calibration activations at some
    // block's input (run/run.h), or NULL. Engine-internal.
    const struct eng_calib_prefix *calib_prefix;
    // A trade-off sweep keeps each point's output in its own folder under
    // this one (point-00, point-01, ...); NULL: none kept, out_dir is the
    // scratch folder.
    const char *sweep_keep;
    // Gradients the runs of a sweep share (run/inputs.c computes them once
    // on the dense model), or NULL: a run computes its own.
    // Engine-internal.
    const struct eng_grads *grads;
    // Allocation sensitivity: the report spec allocation.from names, as
    // the caller resolved it (the service: a sensitivity job's result);
    // NULL: from is a file to read.
    const json_t *sensitivity_report;
} eng_options;

// What running a model takes, as its family says (nets/).
typedef struct eng_model_needs {
    bool model_runs;               // a family runs it (with its config.json)
    eng_dataset_kind dataset_kind; // the datasets it takes, when it runs
} eng_model_needs;

// Checks s against m (eng_spec_check, with the family's word on whether m
// runs) and, when needs is not NULL, says what running m takes. deadline
// as eng_spec_check's. Returns 0 or SH_ESPEC (SH_ENOMEM) with d set.
int eng_check(const eng_spec *s, const eng_model *m, double deadline,
              eng_model_needs *needs, sh_diag *d);

// Prunes m as s says into o->out_dir. On success fills *r (caller inits it
// with eng_report_init and deinits it) and returns 0. On failure returns a
// code, d says what went wrong (naming the tensor), and out_dir may hold
// partial files: the caller owns that directory and removes it. The call is
// synchronous and runs on the caller's thread; hooks are called from it.
int eng_prune(const eng_model *m, const eng_spec *s, const eng_options *o,
              const eng_hooks *h, eng_report *r, sh_diag *d);

// A sensitivity sweep (run/sensitivity.c): base is a spec of kind
// sensitivity; every group of its targets (base->sens.granularity: a
// tensor, a block, or a type: the tensors of one name across blocks)
// pruned alone at each of base->sens.levels with base's method, the rest
// dense, and the model measured on o->evaluation_path each time; the
// dense metric once.
// *out: {"method", "granularity", "metric", "dense", "levels",
// "groups": [{"group", "tensors", "params", "points": [{"level",
// "metric", "delta"}]}], "evaluations", "seconds"}. o->out_dir is a scratch
// folder the runs use one after another (left empty).
// shards > 1: only the runs whose number (group x levels + level) is shard
// modulo shards, and "shard": {"index", "count"} in *out;
// eng_sensitivity_merge joins the shards' results (all of them, once each)
// into what one run gives (timings summed).
int eng_sensitivity(const eng_model *m, const eng_spec *base,
                    const eng_options *o, int shard, int shards,
                    const eng_hooks *h, json_t **out, sh_diag *d);
int eng_sensitivity_merge(json_t *const *parts, size_t n, json_t **out,
                          sh_diag *d);

// A trade-off sweep (run/sweep.c): base is a spec of kind sweep; each of
// its points (eng_sweep_point: methods x levels) pruned and measured on
// o->evaluation_path, the dense metric once. *out: {"kind": "sweep",
// "metric", "dense", "points": [{"method", "sparsity", "pattern",
// "achieved", "metric", "delta", "bytes_before", "bytes_after", "ratio",
// "seconds", ("size", "speedup" for a shrink), ("folder" when kept)}],
// "evaluations", "seconds"}. o->out_dir is a scratch folder (left empty)
// unless o->sweep_keep.
int eng_sweep(const eng_model *m, const eng_spec *base, const eng_options *o,
              const eng_hooks *h, json_t **out, sh_diag *d);

// Gradients of the model's loss (the metric's: mean next-token NLL over
// positions 1..T-1 of a row, a classifier's cross-entropy) over the first
// max_rows rows (0: all) of the calibration dataset at `calibration`
// (run/grad.c): g, the gradient of the mean of the rows' losses; with
// fisher, F, the sum over rows of each row's gradient squared (a Fisher
// diagonal). want (eng_model_tensor_count bools; NULL: every tensor the
// model reads) says which tensors' gradients to compute.
//
// The sums are kept in the file at path (which must not exist) as they
// accumulate, an F32 safetensors file: each gradient under its tensor's
// name, each Fisher sum under "fisher." and the name, metadata {"rows"}.
// Memory holds one tensor's weights and gradient at a time (README: the
// formula). On success *out maps the file (the caller may rename or
// unlink it); on failure nothing is left at path. A value that is not
// finite is SH_ENUMERIC naming the tensor and the row. Free with
// eng_grads_deinit.
typedef struct eng_grads {
    size_t count;         // the model's tensors
    const float **g;      // (count,) numel F32 each, NULL where not kept
    const float **fisher; // (count,) likewise, NULL without fisher
    int64_t rows;         // calibration rows
    double loss;          // the mean loss
    double seconds;
    eng_st *st; // the mapped file
} eng_grads;

int eng_gradients(const eng_model *m, const char *calibration, int64_t max_rows,
                  const bool *want, bool fisher, const char *path,
                  const eng_hooks *h, eng_grads *out, sh_diag *d);
void eng_grads_deinit(eng_grads *g);

// Checks the inputs a criterion reads beside the weights against s's
// targets in m: with method movement, base (may be NULL: not checked) must
// hold every target with the same shape and dtype; with method scores,
// the scores file's header must hold a float tensor of each target's
// shape. SH_ESPEC with d->field "base" or "scores", naming the tensor.
int eng_check_inputs(const eng_spec *s, const eng_model *m,
                     const eng_model *base, const eng_st_header *scores,
                     sh_diag *d);
// Every tensor of a scores file is a float tensor with finite values;
// SH_EFORMAT naming the tensor and the element otherwise.
int eng_scores_check_finite(const eng_st *st, sh_diag *d);

// Writes the compressed-tensors folder m (output.format
// "compressed-tensors") back as dense tensors into o->out_dir: the bytes
// the same job's dense output holds. SH_EFORMAT naming the module when a
// part is missing or does not fit the others.
int eng_decompress(const eng_model *m, const eng_options *o, const eng_hooks *h,
                   sh_diag *d);

// Statistics on raw tensor bytes, for reports and `inspect`.

// Zero elements among n of dtype (+0 and -0 for floats).
uint64_t eng_count_zeros(const void *data, eng_dtype dt, uint64_t n);

// The zero elements of model tensor ti, read in chunks (no mapping).
int eng_tensor_zeros(const eng_model *m, size_t ti, uint64_t *zeros,
                     sh_diag *d);

// True when every group of m consecutive elements of n (a multiple of m)
// has at most keep non-zeros.
bool eng_check_nm(const void *data, eng_dtype dt, uint64_t n, int keep, int m);

// Sets the threads BLAS and the engine's own parallel loops (common/par.h)
// may use, for the whole process (OpenBLAS keeps one setting). Call once at
// start-up. Results are the same bytes for any count.
void eng_set_threads(int n);

// The BLAS kernels. OpenBLAS picks them before main runs; where cpuid names
// no model (some cloud VMs) it falls back to generic SSE kernels, several
// times slower than the CPU allows. eng_blas_fix_core, first thing in main:
// when OpenBLAS runs a generic core on a CPU with AVX2 or AVX-512 and the
// user did not set OPENBLAS_CORETYPE, runs the program again (execv of
// /proc/self/exe with argv) with OPENBLAS_CORETYPE set to the best core the
// CPU supports. Returns when nothing needs doing or the exec failed.
void eng_blas_fix_core(char **argv);

typedef struct eng_blas_info {
    const char *core;   // "Haswell", "SkylakeX", "Prescott"...
    const char *source; // "detected" (OpenBLAS's choice), "OPENBLAS_CORETYPE"
                        // (the user's), "chosen" (eng_blas_fix_core's)
    bool avx2, avx512, avx512_bf16; // what the CPU and OS support
    double sgemm_gflops; // a 1024^3 product on the set threads (0: not run)
} eng_blas_info;

// The kernels in use; with measure, times sgemm (about 0.05 s).
void eng_blas_info_get(eng_blas_info *out, bool measure);

// The engine's version string.
const char *eng_version(void);

#endif

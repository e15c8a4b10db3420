// run.h: the drivers behind eng_prune (not public).
#ifndef ENG_RUN_H
#define ENG_RUN_H

#include "engine/engine.h"
#include "engine/formats/output.h"
#include "engine/jobspec/plan.h"
#include "engine/nets/net.h"

// --- what gradient and movement criteria read (inputs.c)

// Per model tensor, what a criterion reads beside the weights (mask.h's
// scorer fields): the gradients and Fisher sums of a pass over the
// calibration set, or the mapped bytes of the base checkpoint's tensor
// (movement) or of the scores file's (scores).
typedef struct eng_score_inputs {
    const eng_grads *grads; // &own, or o->grads when it serves; or NULL
    eng_grads own;
    const eng_model *base; // o->base
    eng_st *scores;
    const unsigned char **other; // (tensors,) or NULL
    eng_dtype *other_dtype;
} eng_score_inputs;

// Opens what the plan's method reads (nothing for the others): runs the
// gradient pass (timed as statistics), or takes o->base / opens
// o->scores_path and checks them against the targets (eng_check_inputs)
// and the scores for values that are not finite.
int eng_score_inputs_open(eng_score_inputs *in, const eng_plan *plan,
                          const eng_options *o, const eng_hooks *h,
                          eng_report *r, sh_diag *d);
void eng_score_inputs_close(eng_score_inputs *in);

// The options of a sweep's runs: *runs = *o, with runs->grads = out when
// a run of a sweep of s (its method, or any of its sweep's methods) needs
// gradients: computed once into out over o->calibration_path for s's
// targets, with the Fisher sums when one needs them. out is left empty
// when none does. The file lies beside o->out_dir, unlinked once mapped.
// Free out with eng_grads_deinit (empty or not).
int eng_grads_for_sweep(const eng_model *m, const eng_spec *s,
                        const eng_options *o, const eng_hooks *h,
                        eng_grads *out, eng_options *runs, sh_diag *d);
// Sets sc's inputs for model tensor ti; in may be NULL (none).
void eng_score_inputs_attach(const eng_score_inputs *in, size_t ti,
                             eng_scorer *sc);

// --- calibrated methods (calib.c)

// Where the phases of a prune sit in its progress fraction (0..1): the
// streaming driver's global scoring passes take [0, SCORING) and its
// writing the rest; the sequential driver's blocks take [BLOCKS,
// BLOCKS + BLOCKS_SPAN) after calibration; the pruned evaluation starts
// at EVAL_PRUNED.
#define ENG_FRAC_SCORING 0.5
#define ENG_FRAC_BLOCKS 0.15
#define ENG_FRAC_BLOCKS_SPAN 0.7
#define ENG_FRAC_EVAL_PRUNED 0.9

// Timed forward passes for a speed figure (after one warm-up).
#define ENG_SPEED_PASSES 5

// Global scope: one exact selection over the pooled targets of the plan
// (one or two streaming passes), into plan->pool_thr, before any output
// opens. Progress goes from 0 to span.
int eng_select_pool(eng_plan *plan, const eng_options *o, const eng_hooks *h,
                    double span, sh_diag *d);

// The sequential driver: the plan's targets pruned block by block from
// statistics of their inputs over the calibration set.
// OWL's layer outlier distribution per block of the dense model: ratio[b]
// the share of block b's target scores (Wanda's |W_ij| ||x_j|| over the
// calibration set, |W_ij| without one) above m times their mean; params[b]
// the block's target weights. Both (eng_net_blocks,), the caller's.
typedef struct eng_owl {
    double m;
    double *ratio;
    uint64_t *params;
} eng_owl;

int eng_owl_ratios(const eng_plan *plan, const eng_options *o,
                   const eng_hooks *h, eng_report *r, eng_owl *owl, sh_diag *d);

// The metric of m on the dataset at path and, when speed is not NULL, the
// forward pass's speed (prune.c).
int eng_measure(const eng_model *m, const char *path, const eng_hooks *h,
                eng_metric *out, double *speed, sh_diag *d);

// An allocation other than uniform (alloc.c): *out becomes s with the
// chosen sparsities as overrides (allocation uniform), r->allocation says
// how they were chosen. Free *out with eng_spec_deinit.
int eng_allocate(const eng_model *m, const eng_spec *s, const eng_options *o,
                 const eng_hooks *h, eng_report *r, eng_spec *out, sh_diag *d);

// A sensitivity sweep's dense calibration activations at the input of
// `block` (run/sensitivity.c keeps them, eng_options.calib_prefix lends
// them to a run): a run whose targets before `block` are all idle (see
// calib.c) starts its calibration pass there instead of at the embedding.
// rows: the calibration rows they were made from.
struct eng_calib_prefix {
    eng_acts at;
    size_t block;
    int64_t rows;
};

// A run inside a sweep (a sensitivity run, a sweep's point): its hooks'
// cancellation is the outer run's, its progress a piece of the outer's:
// phase `phase`, the inner phase as stage, `label` as the tensor, step
// `step` of `steps` (and one more for the dense metric), the estimate
// when known. eng_subrun_init sets hooks; the fields after may change
// between runs.
typedef struct eng_subrun {
    eng_hooks hooks;
    const eng_hooks *outer;
    const char *phase, *label;
    size_t step, steps;
    double estimate;
} eng_subrun;

void eng_subrun_init(eng_subrun *r, const eng_hooks *outer, const char *phase,
                     size_t steps);

int eng_prune_calibrated(const eng_plan *plan, const eng_options *o,
                         const eng_hooks *h, eng_out *w, eng_report *r,
                         sh_diag *d);

// --- structured shrinks (shrink.c)

// Checks a spec's structure against the model's family: the counts it
// asks for exist and leave something (SH_ESPEC naming the field).
int eng_shrink_check(const eng_spec *s, const eng_model *m, sh_diag *d);

// Shrinks the plan's model as its spec's structure says: decides the
// units (with the calibration set where the criterion or blocks need it),
// gives the plan its outputs and config, opens the output (*out, the
// caller's to finish and close) and writes every tensor. Fills r's
// structure and size.
int eng_shrink(eng_plan *p, const eng_options *o, const eng_hooks *h,
               eng_out **out, eng_report *r, sh_diag *d);

#endif

// plan.h: the plan of a prune, built once from the spec and the model
// before any output is opened: for every tensor whether it is pruned, with
// which pattern and count, and the output tensors it becomes. The drivers
// (run/) and the format (formats/) read it; none of them decides again.
#ifndef ENG_PLAN_H
#define ENG_PLAN_H

#include "engine/io/model.h"
#include "engine/jobspec/spec.h"

#include <jansson.h>

#include <stdbool.h>
#include <stdint.h>

// One output tensor of a row, as the output format gives them
// (formats/format.h: eng_format_plan). The dense format keeps the input
// tensor as it is: one output, its name, dtype and shape; a compressed
// format will give several (values, bitmask, scales), a structured shrink
// a smaller shape.
typedef struct eng_plan_out {
    const char *name; // borrowed from the model, or owned by the format
    eng_dtype dtype;
    int ndim;
    int64_t shape[ENG_MAX_DIMS];
} eng_plan_out;

#define ENG_PLAN_MAX_OUTS 6

typedef struct eng_plan_row {
    eng_share share;     // the spec's word on the tensor
    bool pooled;         // global scope and no override: the pool's threshold
    uint64_t want;       // zeros the pattern asks for (pooled: 0; the pool's
                         // count is the plan's)
    uint64_t rows, cols; // the (rows, cols) view the pattern works on
    uint64_t k;          // rows pattern: the rows to zero; unstructured,
                         // each row competing: the zeros of each row
    size_t n_out;
    eng_plan_out out[ENG_PLAN_MAX_OUTS];
    unsigned stored;  // the format's word on how it encodes the row; 0:
                      // the outputs are the values as they are
    const char *note; // why the row is stored less compactly than asked
} eng_plan_row;

typedef struct eng_plan {
    const eng_model *m;
    const eng_spec *s;
    size_t n;                        // tensors of the model
    eng_plan_row *rows;              // (n,)
    uint64_t pool_params, pool_want; // global scope: the pooled targets,
    eng_threshold pool_thr;          //   their threshold (eng_select_pool)
    // A structured shrink (run/shrink.c): the config.json written in
    // place of the input's (NULL: the format's say), and whether outputs
    // were renamed or dropped (the shard index is then rebuilt from them).
    json_t *config;
    bool reshaped;
    char **names; // output names the rows borrow, freed with the plan
    size_t n_names, cap_names;
    // What the method's scorers read beside the weights (run/run.h), or
    // NULL; borrowed.
    const struct eng_score_inputs *inputs;
} eng_plan;

// Whether some target of p is quantized.
bool eng_plan_quantizes(const eng_plan *p);

// Keeps name (owned from now on) with the plan; returns it, or NULL when
// out of memory (name is then freed).
char *eng_plan_keep_name(eng_plan *p, char *name);

// Builds the plan of s on m (the spec checked against m before). Returns
// 0 or SH_ENOMEM with d set; free with eng_plan_deinit.
int eng_plan_build(eng_plan *p, const eng_spec *s, const eng_model *m,
                   sh_diag *d);
void eng_plan_deinit(eng_plan *p);

// The zeros a pattern asks for on a (rows, cols) tensor, with the method's
// comparison group for unstructured ones (a whole row's count rounds per
// row).
uint64_t eng_plan_want(const eng_share *sh, eng_method method, uint64_t rows,
                       uint64_t cols);

#endif

// format.h: the format interface. A format says what tensors each plan row
// becomes and how the folder's descriptions (config.json, the shard index)
// change with them; output.c lays the files out from that, and the
// format's writer fills them. Dense (dense.c) is the first: the tensors
// as they were, pruned weights stored as zeros. Adding a format is a file
// of formats/ and a row of eng_formats.
#ifndef ENG_FORMAT_H
#define ENG_FORMAT_H

#include "common/err.h"
#include "engine/jobspec/plan.h"

#include <jansson.h>

typedef struct eng_format {
    const char *name; // as the spec's output.format spells it
    // Fills row->out (and n_out) with the tensors input tensor `in`
    // becomes; called for every row before the output opens.
    void (*outputs)(const eng_tensor_info *in, eng_plan_row *row);
    // Rewrites the model's config.json for the plan (NULL: copied).
    int (*rewrite_config)(const eng_plan *p, json_t *config, sh_diag *d);
    // Rewrites the shard index's weight map (NULL: copied).
    int (*rewrite_index)(const eng_plan *p, json_t *index, sh_diag *d);
} eng_format;

extern const eng_format eng_format_dense;

// The format named name, or NULL.
const eng_format *eng_format_find(const char *name);

// Gives every row of p its outputs in format f.
void eng_format_plan(const eng_format *f, eng_plan *p);

#endif

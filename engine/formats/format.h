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

typedef struct eng_out eng_out;
struct eng_qtensor;
typedef struct eng_enc eng_enc; // a tensor being encoded by a format

typedef struct eng_format {
    const char *name; // as the spec's output.format spells it
    // Fills row ti's out (and n_out, and stored when the format encodes
    // it) with the tensors the input tensor becomes; called for every row
    // before the output opens. Names it makes go to p->names.
    int (*outputs)(eng_plan *p, size_t ti, sh_diag *d);
    // The form row ti is stored in, in the report's words (NULL: "dense").
    const char *(*stored_as)(const eng_plan *p, size_t ti);
    // A row with `stored` set is written through the format's encoder: its
    // values in order, in chunks of whole 64-element words (their dtype's
    // bytes, and the F32 values they came from when quantized), then end
    // (which frees it; free alone on failure).
    int (*enc_begin)(eng_out *w, size_t ti, const struct eng_qtensor *q,
                     eng_enc **e, sh_diag *d);
    int (*enc_put)(eng_enc *e, const unsigned char *vals, const float *f32,
                   size_t len, sh_diag *d);
    int (*enc_end)(eng_enc *e, sh_diag *d);
    void (*enc_free)(eng_enc *e);
    // Rewrites the model's config.json for the plan (NULL: copied).
    int (*rewrite_config)(const eng_plan *p, json_t *config, sh_diag *d);
    // Rewrites the shard index's weight map (NULL: copied).
    int (*rewrite_index)(const eng_plan *p, json_t *index, sh_diag *d);
} eng_format;

extern const eng_format eng_format_dense, eng_format_compressed;

// The format named name, or NULL.
const eng_format *eng_format_find(const char *name);

// Gives every row of p its outputs in format f. 0 or SH_ENOMEM.
int eng_format_plan(const eng_format *f, eng_plan *p, sh_diag *d);

#endif

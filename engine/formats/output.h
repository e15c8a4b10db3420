// output.h: the pruned model folder being written, and the dense writer.
#ifndef ENG_OUTPUT_H
#define ENG_OUTPUT_H

#include "engine/engine.h"
#include "engine/formats/format.h"
#include "engine/select/mask.h"

// --- output: the pruned model folder being written

typedef struct eng_out eng_out;

// Creates one writer per weight file of the plan's model in o->out_dir,
// laid out from the plan's outputs (each file holds the outputs of its
// tensors, in its order), and copies every other file through, config.json
// and the shard index rewritten when the format says so (an input
// shears.json is replaced).
int eng_out_open(eng_out **out, const eng_plan *p, const eng_format *fmt,
                 const eng_options *o, sh_diag *d);

// Copies model tensor ti unchanged (in the kernel where possible): a row
// whose one output is the tensor itself.
int eng_out_copy(eng_out *w, size_t ti, sh_diag *d);

// Writes n bytes at offset off of model tensor ti's first output, or of its
// output j.
int eng_out_put(eng_out *w, size_t ti, uint64_t off, const void *buf, size_t n,
                sh_diag *d);
int eng_out_put_at(eng_out *w, size_t ti, size_t j, uint64_t off,
                   const void *buf, size_t n, sh_diag *d);

// Completes every file (fsync when asked) and syncs the directory.
int eng_out_finish(eng_out *w, sh_diag *d);
void eng_out_close(eng_out *w);

// Writes out_dir/shears.json: spec, report, inputs and their hashes.
int eng_manifest_write(const eng_model *m, const eng_spec *s,
                       const eng_report *r, const eng_options *o, sh_diag *d);

// Writes tensor ti of the model from a source of its own dtype (possibly
// the input mapping) with the masked elements zeroed; fills the layer's
// zeros and pattern_ok. `mask` may be NULL (nothing pruned).
int eng_write_masked(eng_out *w, size_t ti, const void *src, eng_dtype dt,
                     uint64_t numel, const uint64_t *mask, eng_layer_report *l,
                     uint64_t want_zeros, const eng_hooks *h, sh_diag *d);

// Where a tensor's bytes come from: memory, or its file read in chunks
// (L2-sized, so a pass costs one copy and stays in cache).
typedef struct eng_src {
    const unsigned char *mem; // the whole tensor, or NULL:
    const eng_st *st;         //   read it from this file,
    size_t idx;               //   tensor idx of it
} eng_src;

// Magnitude fast paths (kernels.h; F16, BF16, F32 only): tensor ti from
// src with the elements under t zeroed (t's ties consumed), or with the
// layer's N:M pattern applied. Fill the layer's zeros and pattern_ok.
int eng_write_threshold(eng_out *w, size_t ti, eng_src src, eng_dtype dt,
                        uint64_t numel, eng_threshold *t, eng_layer_report *l,
                        uint64_t want_zeros, const eng_hooks *h, sh_diag *d);
int eng_write_nm(eng_out *w, size_t ti, eng_src src, eng_dtype dt,
                 uint64_t numel, eng_layer_report *l, uint64_t want_zeros,
                 const eng_hooks *h, sh_diag *d);

// Bytes read at a time by the chunked passes: fits in L2 with a histogram.
#define ENG_STREAM_CHUNK (256u << 10)

// Chunked passes over a tensor from its file, for the reader's thread,
// through buf (ENG_STREAM_CHUNK bytes):
// feeding one pass of a (magnitude) selection, the k lowest magnitudes (as
// eng_select_one), and the count of zeros. SH_ENUMERIC on NaN or Inf.
int eng_stream_feed(const eng_st *st, size_t idx, eng_select *sel,
                    unsigned char *buf, sh_diag *d);
int eng_stream_select(const eng_st *st, size_t idx, uint64_t k,
                      eng_threshold *out, unsigned char *buf, sh_diag *d);
int eng_stream_zeros(const eng_st *st, size_t idx, uint64_t *zeros,
                     unsigned char *buf, sh_diag *d);

// A quantized tensor's grids (methods/quant.h), for the formats that store
// them: the values written are already on them.
typedef struct eng_qtensor {
    int bits;
    int64_t group; // inputs per grid; 0: the whole row
    bool symmetric;
    int64_t rows, cols, groups;
    const float *scale, *zero; // (rows, groups)
} eng_qtensor;

// Writes tensor ti from F32 values (rounded to the tensor's dtype); fills
// the layer's zeros and pattern_ok. q: the grids, or NULL.
int eng_write_f32(eng_out *w, size_t ti, const float *src, eng_dtype dt,
                  uint64_t numel, const eng_qtensor *q, eng_layer_report *l,
                  uint64_t want_zeros, sh_diag *d);

#endif

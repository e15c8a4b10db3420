// engine_int.h: pieces shared by the engine's pipelines (not public).
#ifndef ENG_ENGINE_INT_H
#define ENG_ENGINE_INT_H

#include "engine/engine.h"
#include "engine/mask.h"
#include "engine/net.h"

#include <string.h>

// --- cancel polls
//
// Long work runs in pieces of at most about 0.1 s of one core of a current
// CPU, with a poll of the cancel hook after each, so a cancel is seen
// within a small part of a second whatever the shapes and the SparseGPT
// block size. The pieces are counted in work done, never timed:
//   ENG_POLL_FMA    multiply-adds of a BLAS-3 product: a larger product is
//                   split in pieces of rows (or columns); a smaller one is
//                   one call, so the fixtures' results stay bit for bit
//                   (OpenBLAS rounds differently once split),
//   ENG_POLL_ELEMS  elements visited by a plain loop (memory-bound, page
//                   faults or transcendental: slower per unit).
#define ENG_POLL_FMA ((uint64_t)1 << 32)
#define ENG_POLL_ELEMS ((uint64_t)1 << 22)

// A plain loop's work counter: eng_pacer_step adds the elements just done
// and polls the hook once ENG_POLL_ELEMS have gathered since the last poll.
typedef struct eng_pacer {
    const eng_hooks *h; // may be NULL: never cancelled
    uint64_t done;      // elements since the last poll
} eng_pacer;

// True when the work should stop (the hook said so at this poll).
static inline bool eng_pacer_step(eng_pacer *p, uint64_t elems)
{
    p->done += elems;
    if (p->done < ENG_POLL_ELEMS)
        return false;
    p->done = 0;
    return eng_hooks_cancelled(p->h);
}

// Copies n floats in pieces of ENG_POLL_ELEMS, polling after each: a fresh
// buffer takes a page fault per page as it is written, dearly on virtual
// machines. Returns 0 or SH_ECANCELED (dst partly written).
static inline int eng_copy_polled(float *dst, const float *src, size_t n,
                                  const eng_hooks *h)
{
    for (size_t at = 0; at < n; at += ENG_POLL_ELEMS) {
        size_t len = n - at < ENG_POLL_ELEMS ? n - at : ENG_POLL_ELEMS;
        memcpy(dst + at, src + at, len * sizeof *dst);
        if (eng_hooks_cancelled(h))
            return SH_ECANCELED;
    }
    return 0;
}

// --- linear algebra in pieces (linalg.c)
//
// linalg.h's products, split as ENG_POLL_FMA says, polling h after every
// piece. Each returns 0, or SH_ECANCELED with the output partly written.
// When a product fits in one piece the call is exactly linalg.h's.

// C (m, n) = alpha * op(A) (m, k) @ op(B) (k, n) + beta * C, as eng_gemm;
// split into pieces of rows of C (op(A) rows), or of columns when n > m.
int eng_gemm_polled(bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                    float alpha, const float *a, int64_t lda, const float *b,
                    int64_t ldb, float beta, float *c, int64_t ldc,
                    const eng_hooks *h);

// Y (n, out) = X (n, in) @ W (out, in)^T [+ b (out,)], as eng_linear.
int eng_linear_polled(float *restrict y, const float *restrict x,
                      const float *restrict w, const float *restrict b,
                      int64_t n, int64_t in, int64_t out, const eng_hooks *h);

// H (cols, cols) upper += X (n, cols)^T @ X, as eng_syrk_acc, in pieces of
// rows of X (the sums then add piece by piece).
int eng_syrk_acc_polled(float *restrict h, const float *restrict x, int64_t n,
                        int64_t cols, const eng_hooks *hk);

// *out = trace(D H D^T), as eng_quad_trace (same order of the sum), with
// work (rows, cols) as there.
int eng_quad_trace_polled(double *out, const float *d, const float *h,
                          int64_t rows, int64_t cols, float *work,
                          const eng_hooks *hk);

// As eng_chol_inverse_upper: A (n, n) symmetric positive definite (full or
// upper) becomes U upper with A^-1 = U^T U, zero below the diagonal.
// nb = 0: eng_chol_inverse_upper itself while n^3 <= 2 ENG_POLL_FMA (n <=
// 2048), else blocks of 256; nb > 0: blocks of nb (tests). By blocks, A is
// reversed (B = J A J), factored B = M M^T (right-looking, by row panels) and M
// inverted (by column blocks), and U = J M^-1 J: the same U, by two n^3/3
// steps. Returns 0, SH_ENUMERIC (not positive definite; A undefined) or
// SH_ECANCELED.
int eng_chol_inverse_polled(float *a, int64_t n, int64_t nb,
                            const eng_hooks *h);

// --- running models with polls (net.c, net_llama.c)
//
// net.h's embedding, copy and forward pass, and net_int.h's Llama pieces,
// polling h between pieces of the work (rows of the copies and products,
// attention heads, positions of the metric). SH_ECANCELED leaves the
// output's values undefined; its buffer, if any, is still the caller's to
// free (eng_acts_free). With h NULL each is the function of the same name
// without _polled.
int eng_net_embed_polled(eng_net *n, const eng_dataset *ds, eng_acts *out,
                         const eng_hooks *h, sh_diag *d);
int eng_acts_copy_polled(eng_acts *dst, const eng_acts *src,
                         const eng_hooks *h);
int eng_net_block_forward_polled(eng_net *n, eng_net_block *b, eng_acts *a,
                                 eng_site_fn fn, void *ctx, const eng_hooks *h,
                                 sh_diag *d);
int net_llama_embed_polled(eng_net *n, const eng_dataset *ds, eng_acts *out,
                           const eng_hooks *h, sh_diag *d);
int net_llama_forward_polled(eng_net *n, eng_net_block *b, eng_acts *a,
                             eng_site_fn fn, void *ctx, const eng_hooks *h,
                             sh_diag *d);
int net_llama_evaluate_polled(eng_net *n, const eng_dataset *ds,
                              const eng_acts *a, const eng_hooks *h,
                              eng_metric *out, sh_diag *d);

// --- output: the pruned model folder being written

typedef struct eng_out eng_out;

// Creates one writer per weight file of m in o->out_dir and copies every
// other file through (except an input shears.json, which is replaced).
int eng_out_open(eng_out **out, const eng_model *m, const eng_options *o,
                 sh_diag *d);

// Copies model tensor ti unchanged (in the kernel where possible).
int eng_out_copy(eng_out *w, size_t ti, sh_diag *d);

// Writes n bytes at offset off of model tensor ti.
int eng_out_put(eng_out *w, size_t ti, uint64_t off, const void *buf, size_t n,
                sh_diag *d);

// Completes every file (fsync when asked) and syncs the directory.
int eng_out_finish(eng_out *w, sh_diag *d);
void eng_out_destroy(eng_out *w);

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

// Writes tensor ti from F32 values (rounded to the tensor's dtype); fills
// the layer's zeros and pattern_ok.
int eng_write_f32(eng_out *w, size_t ti, const float *src, eng_dtype dt,
                  uint64_t numel, eng_layer_report *l, uint64_t want_zeros,
                  sh_diag *d);

// --- the tensor reader (reader.c)

// A tensor the reader went through, and what `prepare` found on it.
typedef struct eng_loaded {
    size_t ti;                 // model tensor index
    const unsigned char *data; // its bytes when asked for, else NULL;
                               // valid until released
    int rc;                    // the read's (or prepare's) result
    sh_diag d;                 // the reason when rc != 0
    bool has_thr;              // prepare found a threshold:
    eng_threshold thr;         //   this one,
    uint64_t want;             //   for this many zeros
    uint64_t zeros;            // prepare counted the tensor's zeros
    unsigned char *scratch;    // ENG_STREAM_CHUNK bytes for prepare, owned
                               // by the reader's thread
} eng_loaded;

// On the reader's thread: whether tensor ti must be in memory whole.
typedef bool (*eng_bytes_fn)(void *ctx, size_t ti);

// Runs on the reader's thread for each tensor, after it was read (if it
// was). Must not call hooks; returns 0 or a code with l->d set.
typedef int (*eng_prepare_fn)(void *ctx, eng_loaded *l);

typedef struct eng_reader eng_reader;

// Starts going through the tensors listed in order (n of them), reading
// those want_bytes asks for into buffers of buf_bytes (allocated on first
// need), on a helper thread when threaded.
int eng_reader_start(eng_reader **out, const eng_model *m, const size_t *order,
                     size_t n, uint64_t buf_bytes, bool threaded,
                     eng_bytes_fn want_bytes, eng_prepare_fn prepare, void *ctx,
                     sh_diag *d);

// The next tensor of the order (blocking), or NULL after the last.
eng_loaded *eng_reader_next(eng_reader *r);

// Gives a tensor's buffer back; call before the next eng_reader_next.
void eng_reader_release(eng_reader *r, eng_loaded *l);

// Stops the helper (also mid-way) and frees everything.
void eng_reader_stop(eng_reader *r);

// --- calibrated methods (calib.c)

int eng_prune_calibrated(const eng_model *m, const eng_spec *s,
                         const eng_options *o, const eng_hooks *h, eng_out *w,
                         eng_report *r, sh_diag *d);

#endif

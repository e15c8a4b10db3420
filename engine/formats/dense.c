// dense.c: the dense format, today's output: every tensor keeps its name,
// dtype and shape, pruned weights are stored as zeros. Its writer fills
// a tensor chunk by chunk (masked source, magnitude kernels or F32
// values), counting zeros and checking the pattern on the way.
#include "engine/formats/out_int.h"

#include "engine/math/poll.h"
#include "engine/select/kernels.h"

#include <stdlib.h>
#include <string.h>

// The dense outputs of a row: the input tensor as it is.
static int dense_outputs(eng_plan *p, size_t ti, sh_diag *d)
{
    (void)d;
    const eng_tensor_info *in = eng_model_tensor(p->m, ti);
    eng_plan_row *row = &p->rows[ti];
    row->n_out = 1;
    row->out[0] =
        (eng_plan_out){.name = in->name, .dtype = in->dtype, .ndim = in->ndim};
    memcpy(row->out[0].shape, in->shape, sizeof in->shape);
    return 0;
}

const eng_format eng_format_dense = {
    .name = ENG_OUTPUT_DENSE, .outputs = dense_outputs,
    // config.json and the shard index describe the same tensors: copied.
};

static const eng_format *const formats[] = {&eng_format_dense,
                                            &eng_format_compressed};

const eng_format *eng_format_find(const char *name)
{
    for (size_t i = 0; i < sizeof formats / sizeof formats[0]; i++)
        if (strcmp(formats[i]->name, name) == 0)
            return formats[i];
    return NULL;
}

int eng_format_plan(const eng_format *f, eng_plan *p, sh_diag *d)
{
    for (size_t i = 0; i < p->n; i++) {
        int rc = f->outputs(p, i, d);
        if (rc != 0)
            return rc;
        if (p->rows[i].stored) // renamed outputs: the index from them
            p->reshaped = true;
    }
    return 0;
}

// Elements per output chunk: about 1 MiB, whole 64-bit mask words, whole
// N:M groups.
static size_t chunk_elems(eng_dtype dt, int m)
{
    size_t unit = 64 * (size_t)(m > 0 ? m : 1);
    size_t k = OUT_CHUNK / eng_dtype_size(dt) / unit;
    return (k ? k : 1) * unit;
}

static void zero_masked(unsigned char *buf, size_t es, const uint64_t *mask,
                        uint64_t at, size_t len)
{
    for (size_t w = 0; w < (len + 63) / 64; w++) {
        uint64_t bits = mask[(at >> 6) + w];
        if (len - w * 64 < 64)
            bits &= (1ull << (len - w * 64)) - 1;
        while (bits) {
            size_t i = w * 64 + (size_t)__builtin_ctzll(bits);
            memset(buf + i * es, 0, es);
            bits &= bits - 1;
        }
    }
}

// What fills each chunk of a tensor being written.
typedef enum fill_kind {
    FILL_MASKED,    // source bytes, masked elements zeroed
    FILL_THRESHOLD, // magnitude kernel: zero under a threshold
    FILL_NM,        // magnitude kernel: N:M
    FILL_F32,       // F32 values rounded to the dtype
} fill_kind;

typedef struct fill {
    fill_kind kind;
    eng_src src;          // FILL_MASKED (memory only), _THRESHOLD, _NM
    const uint64_t *mask; // FILL_MASKED, may be NULL
    eng_threshold *thr;   // FILL_THRESHOLD
    const float *f32;     // FILL_F32
    const eng_qtensor *q; // FILL_F32: its grids, or NULL
    bool nonfinite;       // FILL_NM: seen NaN or Inf
} fill;

// A tensor's rows of masks.safetensors, made as its values go by.
typedef struct mask_rows {
    long k;        // its tensor in the masks file; -1: none
    uint64_t cols; // per row
    uint64_t at;   // elements seen
    unsigned char *row;
} mask_rows;

static int mask_put(eng_out *w, mask_rows *mr, const unsigned char *buf,
                    eng_dtype dt, size_t len, sh_diag *d)
{
    size_t es = eng_dtype_size(dt), bpr = (size_t)(mr->cols + 7) / 8;
    for (size_t i = 0; i < len; i++, mr->at++) {
        uint64_t c = mr->at % mr->cols;
        if (!eng_is_zero(buf + i * es, dt))
            mr->row[c / 8] |= (unsigned char)(1u << (c % 8));
        if (c + 1 < mr->cols)
            continue;
        int rc = eng_st_writer_put(w->masks, (size_t)mr->k,
                                   mr->at / mr->cols * bpr, mr->row, bpr, d);
        if (rc != 0)
            return rc;
        memset(mr->row, 0, bpr);
    }
    return 0;
}

// The one chunk loop: fill, count zeros, verify N:M, write, poll cancel.
static int write_tensor(eng_out *w, size_t ti, eng_dtype dt, uint64_t numel,
                        fill *f, eng_layer_report *l, uint64_t want_zeros,
                        const eng_hooks *h, sh_diag *d)
{
    bool nm = l->pattern.kind == ENG_PATTERN_NM;
    size_t es = eng_dtype_size(dt);
    size_t chunk = chunk_elems(dt, nm ? l->pattern.m : 1);
    for (int i = 0; i < 2; i++)
        if (!w->scratch[i] && !(w->scratch[i] = malloc(OUT_CHUNK)))
            return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    unsigned char *buf = w->scratch[0], *in = w->scratch[1];
    uint64_t zeros = 0;
    bool nm_ok = true;
    eng_enc *enc = NULL;
    mask_rows mr = {.k = w->masks ? w->mask_of[ti] : -1,
                    .cols = w->plan->rows[ti].cols};
    int rc = 0;
    if (mr.k >= 0 && !(mr.row = calloc((size_t)(mr.cols + 7) / 8, 1)))
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    if (w->plan->rows[ti].stored &&
        (rc = w->fmt->enc_begin(w, ti, f->q, &enc, d)) != 0) {
        free(mr.row);
        return rc;
    }
    for (uint64_t at = 0; at < numel; at += chunk) {
        size_t len = numel - at < chunk ? (size_t)(numel - at) : chunk;
        const unsigned char *src = f->src.mem ? f->src.mem + at * es : in;
        if (f->src.st && (rc = eng_st_read_range(f->src.st, f->src.idx, at * es,
                                                 in, len * es, d)))
            break;
        switch (f->kind) {
        case FILL_MASKED:
            memcpy(buf, src, len * es);
            if (f->mask)
                zero_masked(buf, es, f->mask, at, len);
            zeros += eng_count_zeros(buf, dt, len);
            break;
        case FILL_THRESHOLD:
            zeros += eng_k_apply_threshold(buf, src, dt, len, f->thr);
            break;
        case FILL_NM:
            zeros += eng_k_apply_nm(buf, src, dt, len, l->pattern.n,
                                    l->pattern.m, &f->nonfinite);
            break;
        case FILL_F32:
            eng_convert_from_f32(buf, f->f32 + at, dt, len);
            zeros += eng_count_zeros(buf, dt, len);
            break;
        }
        if (nm)
            nm_ok =
                nm_ok && eng_check_nm(buf, dt, len, l->pattern.n, l->pattern.m);
        if (mr.k >= 0 && (rc = mask_put(w, &mr, buf, dt, len, d)) != 0)
            break;
        rc = enc ? w->fmt->enc_put(enc, buf,
                                   f->kind == FILL_F32 ? f->f32 + at : NULL,
                                   len, d)
                 : eng_out_put(w, ti, at * es, buf, len * es, d);
        if (rc != 0)
            break;
        if ((at / chunk) % 64 == 63 && eng_hooks_cancelled(h)) {
            rc = SH_ECANCELED;
            break;
        }
    }
    free(mr.row);
    if (enc && rc == 0)
        rc = w->fmt->enc_end(enc, d);
    else if (enc)
        w->fmt->enc_free(enc);
    if (rc == 0) {
        l->zeros = zeros;
        l->pattern_ok = nm ? nm_ok : zeros >= want_zeros;
    }
    return rc;
}

int eng_write_masked(eng_out *w, size_t ti, const void *src, eng_dtype dt,
                     uint64_t numel, const uint64_t *mask, eng_layer_report *l,
                     uint64_t want_zeros, const eng_hooks *h, sh_diag *d)
{
    fill f = {.kind = FILL_MASKED, .src = {.mem = src}, .mask = mask};
    return write_tensor(w, ti, dt, numel, &f, l, want_zeros, h, d);
}

int eng_write_threshold(eng_out *w, size_t ti, eng_src src, eng_dtype dt,
                        uint64_t numel, eng_threshold *t, eng_layer_report *l,
                        uint64_t want_zeros, const eng_hooks *h, sh_diag *d)
{
    fill f = {.kind = FILL_THRESHOLD, .src = src, .thr = t};
    return write_tensor(w, ti, dt, numel, &f, l, want_zeros, h, d);
}

int eng_write_nm(eng_out *w, size_t ti, eng_src src, eng_dtype dt,
                 uint64_t numel, eng_layer_report *l, uint64_t want_zeros,
                 const eng_hooks *h, sh_diag *d)
{
    fill f = {.kind = FILL_NM, .src = src};
    int rc = write_tensor(w, ti, dt, numel, &f, l, want_zeros, h, d);
    if (rc == 0 && f.nonfinite)
        rc = sh_diag_set(d, SH_ENUMERIC, l->name,
                         "tensor \"%s\" holds NaN or infinite values; "
                         "refusing to prune a broken checkpoint",
                         l->name);
    return rc;
}

int eng_write_f32(eng_out *w, size_t ti, const float *src, eng_dtype dt,
                  uint64_t numel, const eng_qtensor *q, eng_layer_report *l,
                  uint64_t want_zeros, sh_diag *d)
{
    fill f = {.kind = FILL_F32, .f32 = src, .q = q};
    return write_tensor(w, ti, dt, numel, &f, l, want_zeros, NULL, d);
}

// --- chunked passes for the reader's thread

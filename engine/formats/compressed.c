// compressed.c: the compressed-tensors format, as llm-compressor writes it
// and vLLM and transformers load it (the library's 0.9 - 0.14 layouts; the
// sparse compressors went from the library in 0.15, readers of the older
// releases still take them). For a target M.weight (R, C) of dtype D:
//
//   pack-quantized (2, 4 bits)
//     M.weight_packed      I32 (R, C*b/32)  q row by row, element 0 in the
//                                           low bits of word 0
//     M.weight_scale       D   (R, G)       G = C / group_size, or 1
//     M.weight_shape       I64 (2,)         R, C
//     M.weight_zero_point  I32 (R*b/32, G)  asymmetric only; packed down
//                                           the rows the same way
//   int-quantized (8 bits)
//     M.weight             I8  (R, C)       q - 128
//     M.weight_scale       D   (R, G)
//     M.weight_zero_point  I8  (R, G)       zero - 128; asymmetric only
//   sparse-bitmask (any pattern)
//     M.shape              I64 (2,)         R, C
//     M.compressed         V   (S,)         the stored values, row-major
//     M.bitmask            U8  (R, C/8)     bit c%8 of byte c/8 of a row:
//                                           element c is stored
//     M.row_offsets        I64 (R,)         each row's first stored value
//   sparse-24-bitmask (2:4)
//     M.shape              I64 (2, 1)
//     M.compressed         V   (R, C/2)     two stored values of every four
//     M.bitmask            U8  (R, C/8)
//
// q is the unsigned level of quant.h (0 .. 2^b - 1) and zero its zero, so
// the library's signed q - 2^(b-1) and zero point z - 2^(b-1) dequantize
// to the same (q - zero) * scale; a symmetric grid's zero point is 0 and
// is not stored. V is D, or I8 when an 8-bit symmetric tensor is also
// sparse: the library applies its sparse compressor to `weight` after
// quantizing, and so do we. Pack-quantized renames `weight`, so sparsity
// is not stacked on it; an asymmetric int8 tensor is not either (its
// pruned weights are q = zero, not 0). The report says so per tensor.
//
// S, the stored values, is fixed before writing: the weights the plan
// does not prune. A kept weight that is 0 (or rounds to 0) is stored as 0
// with its bit set; the library's reader scatters the stored values to
// the set bits, so the tensor reads back the same. 2:4 groups store two:
// their non-zeros, then their first zeros.
#include "engine/formats/ct.h"
#include "engine/formats/out_int.h"

#include "engine/methods/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// --- the plan: how each target is stored

static int name_out(eng_plan *p, eng_plan_row *row, const char *prefix,
                    const char *suffix, eng_dtype dt, int ndim, int64_t d0,
                    int64_t d1, sh_diag *d)
{
    size_t n = strlen(prefix) + strlen(suffix) + 1;
    char *name = malloc(n);
    if (name)
        snprintf(name, n, "%s%s", prefix, suffix);
    if (!eng_plan_keep_name(p, name))
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    eng_plan_out *o = &row->out[row->n_out++];
    *o = (eng_plan_out){.name = name, .dtype = dt, .ndim = ndim};
    o->shape[0] = d0;
    o->shape[1] = d1;
    return 0;
}

int eng_ct_kinds(const eng_plan *p, size_t ti, int *qk, int *sk,
                 const char **note)
{
    const eng_plan_row *row = &p->rows[ti];
    const eng_spec *s = p->s;
    const eng_quant *q = &row->share.quant;
    *qk = ENG_CT_Q_NONE;
    *sk = ENG_CT_S_NONE;
    *note = NULL;
    if (!row->share.target)
        return 0;
    if (q->bits)
        *qk = q->bits == 8 ? ENG_CT_Q_INT : ENG_CT_Q_PACK;
    if (row->want == 0 && !row->pooled)
        return 0; // quantized only
    bool is24 = row->share.pattern.kind == ENG_PATTERN_NM &&
                row->share.pattern.n == 2 && row->share.pattern.m == 4;
    int want = s->sparse_format == ENG_SPARSE_24 ||
                       (is24 && s->sparse_format == ENG_SPARSE_AUTO)
                   ? ENG_CT_S_24
                   : ENG_CT_S_BITMASK;
    if (row->pooled)
        *note = "scope global decides the count while pruning, after the "
                "sizes are laid out: the zeros are stored in place";
    else if (*qk == ENG_CT_Q_PACK)
        *note = "pack-quantized renames weight, and compressed-tensors "
                "applies its sparse compressor to weight only: the zeros "
                "are stored as packed levels";
    else if (*qk == ENG_CT_Q_INT && !q->symmetric)
        *note = "an asymmetric int8 grid stores a pruned weight as its zero "
                "point, which a sparse reader would fill in as 0: the "
                "zeros are stored as levels";
    else
        *sk = want;
    return 0;
}

// M, the module, from M.weight.
static int module_of(const char *name, char *buf, size_t size)
{
    size_t n = strlen(name), k = strlen(".weight");
    if (n <= k || strcmp(name + n - k, ".weight") != 0 || n - k >= size)
        return -1;
    memcpy(buf, name, n - k);
    buf[n - k] = '\0';
    return 0;
}

static int ct_outputs(eng_plan *p, size_t ti, sh_diag *d)
{
    int rc = eng_format_dense.outputs(p, ti, d);
    eng_plan_row *row = &p->rows[ti];
    const eng_tensor_info *t = eng_model_tensor(p->m, ti);
    int qk, sk;
    if (rc != 0 || (rc = eng_ct_kinds(p, ti, &qk, &sk, &row->note)) != 0)
        return rc;
    if (qk == ENG_CT_Q_NONE && sk == ENG_CT_S_NONE)
        return 0;
    char m[1024];
    if (module_of(t->name, m, sizeof m) != 0 || t->ndim != 2)
        return sh_diag_set(d, SH_ESPEC, "output.format",
                           "compressed-tensors stores linear layers' "
                           "M.weight (2-D); target \"%s\" is not one",
                           t->name);
    const eng_quant *qt = &row->share.quant;
    int64_t R = t->shape[0], C = t->shape[1];
    int64_t G = qt->group_size > 0 ? C / qt->group_size : 1;
    int b = qt->bits;
    bool zp = qk != ENG_CT_Q_NONE && !qt->symmetric;
    row->n_out = 0;
    row->stored = (unsigned)(qk | sk << 2);
    if (sk != ENG_CT_S_NONE) {
        eng_dtype v = qk == ENG_CT_Q_INT ? ENG_DTYPE_I8 : t->dtype;
        uint64_t kept = (uint64_t)(R * C) - row->want;
        bool b24 = sk == ENG_CT_S_24;
        if ((rc = name_out(p, row, m, ".shape", ENG_DTYPE_I64, b24 ? 2 : 1, 2,
                           1, d)) ||
            (rc = b24 ? name_out(p, row, m, ".compressed", v, 2, R, C / 2, d)
                      : name_out(p, row, m, ".compressed", v, 1, (int64_t)kept,
                                 0, d)) ||
            (rc = name_out(p, row, m, ".bitmask", ENG_DTYPE_U8, 2, R,
                           (C + 7) / 8, d)) ||
            (!b24 && (rc = name_out(p, row, m, ".row_offsets", ENG_DTYPE_I64, 1,
                                    R, 0, d))))
            return rc;
    } else if (qk == ENG_CT_Q_PACK) {
        if ((rc = name_out(p, row, m, ".weight_packed", ENG_DTYPE_I32, 2, R,
                           (C * b + 31) / 32, d)))
            return rc;
    } else if (qk == ENG_CT_Q_INT &&
               (rc =
                    name_out(p, row, m, ".weight", ENG_DTYPE_I8, 2, R, C, d))) {
        return rc;
    }
    if (qk == ENG_CT_Q_NONE)
        return 0;
    if ((rc = name_out(p, row, m, ".weight_scale", t->dtype, 2, R, G, d)) ||
        (qk == ENG_CT_Q_PACK && (rc = name_out(p, row, m, ".weight_shape",
                                               ENG_DTYPE_I64, 1, 2, 0, d))))
        return rc;
    if (zp && qk == ENG_CT_Q_PACK)
        return name_out(p, row, m, ".weight_zero_point", ENG_DTYPE_I32, 2,
                        (R * b + 31) / 32, G, d);
    if (zp)
        return name_out(p, row, m, ".weight_zero_point", ENG_DTYPE_I8, 2, R, G,
                        d);
    return 0;
}

// --- config.json: quantization_config

static json_t *module_list(const eng_plan *p,
                           bool (*pick)(const eng_plan *, size_t))
{
    json_t *a = json_array();
    char m[1024];
    for (size_t i = 0; a && i < p->n; i++)
        if (pick(p, i) &&
            module_of(eng_model_tensor(p->m, i)->name, m, sizeof m) == 0)
            json_array_append_new(a, json_string(m));
    return a;
}

static bool sparse_stored(const eng_plan *p, size_t i)
{
    return (p->rows[i].stored >> 2) != ENG_CT_S_NONE;
}

// The linear layers not quantized: 2-D float tensors of no grid.
static bool unquantized(const eng_plan *p, size_t i)
{
    const eng_tensor_info *t = eng_model_tensor(p->m, i);
    const eng_share *sh = &p->rows[i].share;
    return !(sh->target && sh->quant.bits) && t->ndim == 2 &&
           eng_dtypes[t->dtype].prunable;
}

static bool same_grid(const eng_quant *a, const eng_quant *b)
{
    return a->bits == b->bits && a->group_size == b->group_size &&
           a->symmetric == b->symmetric;
}

// config_groups: one group per grid the targets use, in order of first
// use; sets *fmt to the format all share, or "mixed-precision".
static json_t *config_groups(const eng_plan *p, const char **fmt)
{
    json_t *groups = json_object();
    const eng_quant **seen = calloc(p->n ? p->n : 1, sizeof *seen);
    size_t n = 0;
    *fmt = NULL;
    for (size_t i = 0; seen && i < p->n; i++) {
        const eng_share *sh = &p->rows[i].share;
        bool known = !(sh->target && sh->quant.bits);
        for (size_t k = 0; k < n && !known; k++)
            known = same_grid(seen[k], &sh->quant);
        if (known)
            continue;
        const eng_quant *q = seen[n] = &sh->quant;
        const char *f =
            q->bits == 8 ? ENG_CT_INT_QUANTIZED : ENG_CT_PACK_QUANTIZED;
        *fmt = !*fmt || strcmp(*fmt, f) == 0 ? f : "mixed-precision";
        json_t *targets = json_array();
        char m[1024];
        for (size_t j = i; j < p->n; j++) {
            const eng_share *o = &p->rows[j].share;
            if (o->target && o->quant.bits && same_grid(q, &o->quant) &&
                module_of(eng_model_tensor(p->m, j)->name, m, sizeof m) == 0)
                json_array_append_new(targets, json_string(m));
        }
        json_t *w = json_pack(
            "{s:i, s:s, s:b, s:s, s:o, s:b, s:n, s:n, s:s, s:{}}", "num_bits",
            q->bits, "type", "int", "symmetric", q->symmetric, "strategy",
            q->group_size > 0 ? "group" : "channel", "group_size",
            q->group_size > 0 ? json_integer((json_int_t)q->group_size)
                              : json_null(),
            "dynamic", 0, "actorder", "block_structure", "observer", "minmax",
            "observer_kwargs");
        char name[32];
        snprintf(name, sizeof name, "group_%zu", n++);
        json_object_set_new(groups, name,
                            json_pack("{s:o, s:o, s:n, s:n, s:s}", "targets",
                                      targets, "weights", w,
                                      "input_activations", "output_activations",
                                      "format", f));
    }
    free(seen);
    return groups;
}

static const char *pattern_word(const eng_plan *p, char *buf, size_t size)
{
    eng_pattern_format(buf, size, p->s->pattern);
    return buf;
}

static int ct_config(const eng_plan *p, json_t *cfg, sh_diag *d)
{
    json_t *qc = json_object();
    int sk = ENG_CT_S_NONE;
    uint64_t params = 0, want = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (!p->rows[i].share.target)
            continue;
        params += eng_model_tensor(p->m, i)->numel;
        want += p->rows[i].pooled ? 0 : p->rows[i].want;
        if (sparse_stored(p, i))
            sk = (int)(p->rows[i].stored >> 2);
    }
    if (p->pool_params) // scope global: the pool's count
        want += p->pool_want;
    if (eng_plan_quantizes(p)) {
        const char *fmt;
        json_object_set_new(qc, "config_groups", config_groups(p, &fmt));
        json_object_set_new(qc, "format", json_string(fmt));
        json_object_set_new(qc, "ignore", module_list(p, unquantized));
        json_object_set_new(qc, "kv_cache_scheme", json_null());
        json_object_set_new(qc, "global_compression_ratio", json_null());
        json_object_set_new(qc, "quantization_status",
                            json_string("compressed"));
    }
    json_object_set_new(qc, "quant_method", json_string(ENG_CT_METHOD));
    json_t *sc = json_object();
    if (want > 0) {
        char pat[32];
        json_object_set_new(sc, "format",
                            json_string(sk == ENG_CT_S_24 ? ENG_CT_SPARSE_24
                                        : sk == ENG_CT_S_BITMASK
                                            ? ENG_CT_SPARSE_BITMASK
                                            : "dense"));
        json_object_set_new(
            sc, "global_sparsity",
            json_real(params ? (double)want / (double)params : 0.0));
        json_object_set_new(sc, "sparsity_structure",
                            json_string(pattern_word(p, pat, sizeof pat)));
        json_object_set_new(sc, "targets", module_list(p, sparse_stored));
        json_object_set_new(sc, "ignore", json_array());
        json_object_set_new(sc, "registry_requires_subclass", json_false());
    }
    json_object_set_new(qc, "sparsity_config", sc);
    if (json_object_set_new(cfg, "quantization_config", qc) != 0)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    return 0;
}

// --- the encoder

struct eng_enc {
    eng_out *w;
    size_t ti;
    const char *name;
    int qk, sk, bits;
    const eng_qtensor *q;
    eng_dtype dt, vt; // the tensor's dtype; the stored values'
    size_t es, vs;    // their sizes
    uint64_t rows, cols, numel, at;
    uint64_t slots, stored; // sparse: values to store, stored so far
    unsigned char *row;     // the row being made: packed words, int8, bits
    size_t row_bytes, bm_bytes;
    unsigned char *bm;   // sparse: the row's bitmask
    int64_t *row_off;    // sparse-bitmask: (rows,)
    unsigned char *vals; // staged stored values
    size_t nvals, cap;
    uint64_t vals_at;      // stored values already written
    unsigned char keep[4]; // 2:4: the group's stored elements
};

// Output j of the row in the order ct_outputs made them.
enum { J_SHAPE, J_COMPRESSED, J_BITMASK, J_ROW_OFFSETS };

static size_t j_scale(const eng_enc *e)
{
    if (e->sk == ENG_CT_S_NONE)
        return 1;
    return e->sk == ENG_CT_S_24 ? 3 : 4;
}

static int put(eng_enc *e, size_t j, uint64_t off, const void *buf, size_t n,
               sh_diag *d)
{
    return eng_out_put_at(e->w, e->ti, j, off, buf, n, d);
}

static void enc_free(eng_enc *e)
{
    if (!e)
        return;
    free(e->row);
    free(e->bm);
    free(e->row_off);
    free(e->vals);
    free(e);
}

static int enc_begin(eng_out *w, size_t ti, const eng_qtensor *q, eng_enc **out,
                     sh_diag *d)
{
    const eng_plan_row *row = &w->plan->rows[ti];
    const eng_tensor_info *t = eng_model_tensor(w->m, ti);
    eng_enc *e = calloc(1, sizeof *e);
    if (!e)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    *e = (eng_enc){.w = w,
                   .ti = ti,
                   .name = t->name,
                   .qk = (int)(row->stored & 3),
                   .sk = (int)(row->stored >> 2),
                   .q = q,
                   .dt = t->dtype,
                   .es = eng_dtype_size(t->dtype),
                   .rows = (uint64_t)t->shape[0],
                   .cols = (uint64_t)t->shape[1],
                   .numel = t->numel};
    e->bits = q ? q->bits : 0;
    e->vt = e->qk == ENG_CT_Q_INT ? ENG_DTYPE_I8 : e->dt;
    e->vs = eng_dtype_size(e->vt);
    e->bm_bytes = (size_t)(e->cols + 7) / 8;
    if (e->qk != ENG_CT_Q_NONE && !q) {
        enc_free(e);
        return sh_diag_set(d, SH_EINVAL, t->name,
                           "tensor \"%s\": quantized output without its grids",
                           t->name);
    }
    bool ok = true;
    if (e->sk != ENG_CT_S_NONE) {
        e->slots = e->numel - row->want;
        e->cap = OUT_CHUNK / e->vs;
        ok = (e->bm = calloc(e->bm_bytes, 1)) &&
             (e->vals = malloc(e->cap * e->vs)) &&
             (e->sk != ENG_CT_S_BITMASK ||
              (e->row_off = malloc(e->rows * sizeof *e->row_off)));
    } else {
        e->row_bytes = e->qk == ENG_CT_Q_PACK
                           ? (size_t)(e->cols * (uint64_t)e->bits + 31) / 32 * 4
                           : (size_t)e->cols;
        ok = (e->row = calloc(e->row_bytes, 1)) != NULL;
    }
    if (!ok) {
        enc_free(e);
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    }
    *out = e;
    return 0;
}

static int flush_vals(eng_enc *e, sh_diag *d)
{
    int rc = e->nvals ? put(e, J_COMPRESSED, e->vals_at * e->vs, e->vals,
                            e->nvals * e->vs, d)
                      : 0;
    e->vals_at += e->nvals;
    e->nvals = 0;
    return rc;
}

// The level of value f of element (r, c) (the written value: in F16 or
// BF16, scale * (q - zero) rounded to the dtype, which the reader rounds
// alike), or the tensor is refused: a value off its grid would not read
// back.
static int level(const eng_enc *e, float f, uint64_t r, uint64_t c, int *lv,
                 sh_diag *d)
{
    const eng_qtensor *q = e->q;
    uint64_t g = q->group > 0 ? c / (uint64_t)q->group : 0;
    float scale = q->scale[r * (uint64_t)q->groups + g],
          zero = q->zero[r * (uint64_t)q->groups + g];
    int v = eng_quant_level(f, scale, zero);
    float x[2] = {scale * ((float)v - zero), f};
    if (e->dt != ENG_DTYPE_F32) { // as written
        unsigned char b[16];
        eng_convert_from_f32(b, x, e->dt, 2);
        eng_convert_to_f32(x, b, e->dt, 2);
    }
    if (v < 0 || v > (1 << e->bits) - 1 || x[0] != x[1])
        return sh_diag_set(d, SH_EINVAL, e->name,
                           "tensor \"%s\": weight [%llu, %llu] = %g is not on "
                           "its grid",
                           e->name, (unsigned long long)r,
                           (unsigned long long)c, (double)f);
    *lv = v;
    return 0;
}

// The 2:4 group at element i of the chunk: which two are stored.
static int group24(eng_enc *e, const unsigned char *vals, uint64_t r,
                   sh_diag *d)
{
    int nz = 0;
    for (int k = 0; k < 4; k++)
        nz += (e->keep[k] = !eng_is_zero(vals + (size_t)k * e->es, e->dt));
    if (nz > 2)
        return sh_diag_set(d, SH_EINVAL, e->name,
                           "tensor \"%s\" row %llu is not 2:4 (a group of "
                           "four holds %d non-zero weights)",
                           e->name, (unsigned long long)r, nz);
    for (int k = 0; k < 4 && nz < 2; k++)
        if (!e->keep[k]) {
            e->keep[k] = 1;
            nz++;
        }
    return 0;
}

static int enc_put(eng_enc *e, const unsigned char *vals, const float *f32,
                   size_t len, sh_diag *d)
{
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0; i++, e->at++) {
        uint64_t r = e->at / e->cols, c = e->at % e->cols;
        const unsigned char *v = vals + i * e->es;
        int lv = 0;
        if (e->qk != ENG_CT_Q_NONE &&
            (rc = level(e, f32[i], r, c, &lv, d)) != 0)
            break;
        if (e->sk == ENG_CT_S_NONE && e->qk == ENG_CT_Q_PACK) {
            uint64_t bit = c * (uint64_t)e->bits;
            uint32_t word;
            memcpy(&word, e->row + bit / 32 * 4, 4);
            word |= (uint32_t)lv << (bit % 32);
            memcpy(e->row + bit / 32 * 4, &word, 4);
        } else if (e->sk == ENG_CT_S_NONE) {
            e->row[c] = (unsigned char)(int8_t)(lv - 128);
        } else {
            if (c == 0 && e->row_off)
                e->row_off[r] = (int64_t)e->stored;
            bool keep;
            if (e->sk == ENG_CT_S_24) {
                if (c % 4 == 0 && (rc = group24(e, v, r, d)) != 0)
                    break;
                keep = e->keep[c % 4];
            } else { // every non-zero; zeros once the rest must all go in
                keep = !eng_is_zero(v, e->dt) ||
                       e->slots - e->stored == e->numel - e->at;
            }
            if (keep) {
                if (e->stored == e->slots)
                    return sh_diag_set(d, SH_EINVAL, e->name,
                                       "tensor \"%s\" has more non-zero "
                                       "weights than its plan keeps",
                                       e->name);
                if (e->nvals == e->cap && (rc = flush_vals(e, d)) != 0)
                    break;
                unsigned char *dst = e->vals + e->nvals * e->vs;
                if (e->qk == ENG_CT_Q_INT)
                    *dst = (unsigned char)(int8_t)(lv - 128);
                else
                    memcpy(dst, v, e->es);
                e->nvals++;
                e->stored++;
                e->bm[c / 8] |= (unsigned char)(1u << (c % 8));
            }
        }
        if (c + 1 < e->cols)
            continue;
        if (e->sk != ENG_CT_S_NONE) {
            rc = put(e, J_BITMASK, r * e->bm_bytes, e->bm, e->bm_bytes, d);
            memset(e->bm, 0, e->bm_bytes);
        } else {
            rc = put(e, 0, r * e->row_bytes, e->row, e->row_bytes, d);
            memset(e->row, 0, e->row_bytes);
        }
    }
    return rc;
}

// The scales in the tensor's dtype and the zero points, signed, as the
// library keeps them: I8 (R, G) for int8, packed I32 down the rows for
// pack-quantized.
static int write_grids(eng_enc *e, sh_diag *d)
{
    const eng_qtensor *q = e->q;
    uint64_t n = e->rows * (uint64_t)q->groups;
    size_t js = j_scale(e);
    unsigned char *buf = malloc(n * 8 + 8);
    if (!buf)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    eng_convert_from_f32(buf, q->scale, e->dt, n);
    int rc = put(e, js, 0, buf, n * e->es, d);
    if (rc == 0 && e->qk == ENG_CT_Q_PACK) {
        int64_t shape[2] = {(int64_t)e->rows, (int64_t)e->cols};
        rc = put(e, js + 1, 0, shape, sizeof shape, d);
    }
    if (rc == 0 && !q->symmetric) {
        size_t jz = js + (e->qk == ENG_CT_Q_PACK ? 2 : 1), bytes;
        if (e->qk == ENG_CT_Q_INT) {
            for (uint64_t i = 0; i < n; i++)
                buf[i] = (unsigned char)(int8_t)((int)q->zero[i] - 128);
            bytes = n;
        } else {
            uint64_t G = (uint64_t)q->groups, b = (uint64_t)e->bits;
            uint64_t words = (e->rows * b + 31) / 32;
            memset(buf, 0, words * G * 4);
            for (uint64_t r = 0; r < e->rows; r++)
                for (uint64_t g = 0; g < G; g++) {
                    uint64_t bit = r * b, at = (bit / 32 * G + g) * 4;
                    uint32_t word;
                    memcpy(&word, buf + at, 4);
                    word |= (uint32_t)q->zero[r * G + g] << (bit % 32);
                    memcpy(buf + at, &word, 4);
                }
            bytes = words * G * 4;
        }
        rc = put(e, jz, 0, buf, bytes, d);
    }
    free(buf);
    return rc;
}

static int enc_end(eng_enc *e, sh_diag *d)
{
    int rc = 0;
    if (e->at != e->numel)
        rc = sh_diag_set(
            d, SH_EINVAL, e->name, "tensor \"%s\": %llu of %llu values written",
            e->name, (unsigned long long)e->at, (unsigned long long)e->numel);
    if (rc == 0 && e->sk != ENG_CT_S_NONE) {
        int64_t shape[2] = {(int64_t)e->rows, (int64_t)e->cols};
        if ((rc = flush_vals(e, d)) == 0 && e->stored != e->slots)
            rc = sh_diag_set(d, SH_EINVAL, e->name,
                             "tensor \"%s\": %llu values stored, %llu planned",
                             e->name, (unsigned long long)e->stored,
                             (unsigned long long)e->slots);
        if (rc == 0)
            rc = put(e, J_SHAPE, 0, shape, sizeof shape, d);
        if (rc == 0 && e->row_off)
            rc = put(e, J_ROW_OFFSETS, 0, e->row_off,
                     e->rows * sizeof *e->row_off, d);
    }
    if (rc == 0 && e->qk != ENG_CT_Q_NONE)
        rc = write_grids(e, d);
    enc_free(e);
    return rc;
}

static const char *ct_stored_as(const eng_plan *p, size_t ti)
{
    static const char *const forms[3][3] = {
        {"dense", ENG_CT_SPARSE_BITMASK, ENG_CT_SPARSE_24},
        {ENG_CT_PACK_QUANTIZED, "", ""}, // never stacked
        {ENG_CT_INT_QUANTIZED, ENG_CT_INT_QUANTIZED "+" ENG_CT_SPARSE_BITMASK,
         ENG_CT_INT_QUANTIZED "+" ENG_CT_SPARSE_24},
    };
    unsigned st = p->rows[ti].stored;
    return forms[st & 3][st >> 2];
}

const eng_format eng_format_compressed = {
    .name = ENG_OUTPUT_COMPRESSED,
    .outputs = ct_outputs,
    .stored_as = ct_stored_as,
    .rewrite_config = ct_config,
    .enc_begin = enc_begin,
    .enc_put = enc_put,
    .enc_end = enc_end,
    .enc_free = enc_free,
};

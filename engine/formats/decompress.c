// decompress.c: a compressed-tensors folder back to dense tensors (the
// layouts of compressed.c; pack-quantized 2, 4 and 8 bits, int-quantized,
// sparse-bitmask and sparse-24-bitmask, sparse stacked on int8). Each
// module M's tensors become M.weight where the first of them was; every
// other tensor is copied; config.json loses quantization_config. The
// values are those the job's dense output holds: (q - zero) * scale in F32,
// rounded to the scale's dtype; sparse values scattered to their bits.
#include "engine/engine.h"
#include "engine/formats/ct.h"
#include "engine/formats/out_int.h"

#include <stdlib.h>
#include <string.h>

// The parts a module may have, by name suffix.
enum {
    P_PACKED,
    P_SCALE,
    P_ZERO,
    P_WSHAPE,
    P_WEIGHT,
    P_SHAPE,
    P_COMPRESSED,
    P_BITMASK,
    P_OFFSETS,
    P_COUNT
};
static const char *const suffixes[P_COUNT] = {
    [P_PACKED] = ".weight_packed",   [P_SCALE] = ".weight_scale",
    [P_ZERO] = ".weight_zero_point", [P_WSHAPE] = ".weight_shape",
    [P_WEIGHT] = ".weight",          [P_SHAPE] = ".shape",
    [P_COMPRESSED] = ".compressed",  [P_BITMASK] = ".bitmask",
    [P_OFFSETS] = ".row_offsets",
};

typedef struct module {
    char *name;         // M
    long part[P_COUNT]; // model tensor index, or -1
    long first;         // the part that comes first: M.weight goes there
    int64_t rows, cols;
    eng_dtype dtype; // of M.weight
    int bits;        // pack-quantized: its config group's num_bits
} module;

typedef struct dec {
    const eng_model *m;
    const json_t *groups; // quantization_config.config_groups
    module *mods;
    size_t n, cap;
    long *owner; // per tensor: its module, or -1
} dec;

static int part_of(const char *name, size_t *stem)
{
    size_t n = strlen(name);
    // Longest suffix first: ".weight" is a suffix of none of the others.
    for (int p = 0; p < P_COUNT; p++) {
        size_t k = strlen(suffixes[p]);
        if (n > k && strcmp(name + n - k, suffixes[p]) == 0) {
            *stem = n - k;
            return p;
        }
    }
    return -1;
}

static long find_module(dec *x, const char *name, size_t len)
{
    for (size_t i = 0; i < x->n; i++)
        if (strlen(x->mods[i].name) == len &&
            memcmp(x->mods[i].name, name, len) == 0)
            return (long)i;
    return -1;
}

// Groups the tensors into modules: a module is compressed when it has
// weight_packed, compressed, or an I8 weight with a weight_scale.
static int group(dec *x, sh_diag *d)
{
    size_t nt = eng_model_tensor_count(x->m);
    if (!(x->owner = malloc((nt ? nt : 1) * sizeof *x->owner)))
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    for (size_t i = 0; i < nt; i++) {
        const char *name = eng_model_tensor(x->m, i)->name;
        size_t stem;
        int p = part_of(name, &stem);
        x->owner[i] = -1;
        if (p < 0)
            continue;
        long k = find_module(x, name, stem);
        if (k < 0) {
            if (x->n == x->cap) {
                size_t cap = x->cap ? 2 * x->cap : 64;
                module *mm = realloc(x->mods, cap * sizeof *mm);
                if (!mm)
                    return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
                x->mods = mm;
                x->cap = cap;
            }
            module *mo = &x->mods[x->n];
            *mo = (module){.name = strndup(name, stem), .first = (long)i};
            if (!mo->name)
                return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
            for (int q = 0; q < P_COUNT; q++)
                mo->part[q] = -1;
            k = (long)x->n++;
        }
        x->mods[k].part[p] = (long)i;
        x->owner[i] = k;
    }
    // Modules that are not compressed keep their tensors as they are.
    for (size_t k = 0; k < x->n; k++) {
        module *mo = &x->mods[k];
        bool packed = mo->part[P_PACKED] >= 0,
             sparse = mo->part[P_COMPRESSED] >= 0,
             int8 = mo->part[P_WEIGHT] >= 0 && mo->part[P_SCALE] >= 0 &&
                    eng_model_tensor(x->m, (size_t)mo->part[P_WEIGHT])->dtype ==
                        ENG_DTYPE_I8;
        if (packed || sparse || int8)
            continue;
        for (int q = 0; q < P_COUNT; q++)
            if (mo->part[q] >= 0)
                x->owner[mo->part[q]] = -1;
        mo->first = -1;
    }
    return 0;
}

static const eng_tensor_info *part(const dec *x, const module *mo, int p)
{
    return mo->part[p] >= 0 ? eng_model_tensor(x->m, (size_t)mo->part[p])
                            : NULL;
}

static int bad(const module *mo, sh_diag *d, const char *what)
{
    return sh_diag_set(d, SH_EFORMAT, mo->name, "module \"%s\": %s", mo->name,
                       what);
}

// The num_bits of the config group whose targets name module M (the
// library also takes class names and "re:" patterns: then the only group).
static int group_bits(const dec *x, const char *m)
{
    const char *k;
    json_t *g;
    int only = 0;
    size_t n = 0;
    json_object_foreach ((json_t *)x->groups, k, g) {
        int bits = (int)json_integer_value(
            json_object_get(json_object_get(g, "weights"), "num_bits"));
        json_t *t;
        size_t i;
        json_array_foreach (json_object_get(g, "targets"), i, t)
            if (json_is_string(t) && strcmp(json_string_value(t), m) == 0)
                return bits;
        only = bits;
        n++;
    }
    return n == 1 ? only : 0;
}

// Reads a small I32/I64 vector of 2 (a shape).
static int read_shape(const dec *x, const module *mo, int p, int64_t *rows,
                      int64_t *cols, sh_diag *d)
{
    const eng_tensor_info *t = part(x, mo, p);
    if (t->numel != 2 ||
        (t->dtype != ENG_DTYPE_I64 && t->dtype != ENG_DTYPE_I32))
        return bad(mo, d, "its shape is not two integers");
    size_t file, idx;
    eng_model_tensor_loc(x->m, (size_t)mo->part[p], &file, &idx);
    const unsigned char *b =
        eng_st_data(eng_model_file_at(x->m, file)->st, idx);
    if (t->dtype == ENG_DTYPE_I64) {
        memcpy(rows, b, 8);
        memcpy(cols, b + 8, 8);
    } else {
        int32_t v[2];
        memcpy(v, b, 8);
        *rows = v[0];
        *cols = v[1];
    }
    if (*rows <= 0 || *cols <= 0 || *rows > (1ll << 31) || *cols > (1ll << 31))
        return bad(mo, d, "its shape is out of range");
    return 0;
}

// The shape and dtype of M.weight, with every part's shape checked.
static int describe(dec *x, module *mo, sh_diag *d)
{
    const eng_tensor_info *scale = part(x, mo, P_SCALE),
                          *packed = part(x, mo, P_PACKED),
                          *comp = part(x, mo, P_COMPRESSED),
                          *bm = part(x, mo, P_BITMASK),
                          *w = part(x, mo, P_WEIGHT);
    int rc = 0;
    if (packed) {
        if (!part(x, mo, P_WSHAPE) || !scale)
            return bad(mo, d,
                       "weight_packed without weight_shape and "
                       "weight_scale");
        if ((rc = read_shape(x, mo, P_WSHAPE, &mo->rows, &mo->cols, d)))
            return rc;
        mo->bits = group_bits(x, mo->name);
        if (mo->bits != 2 && mo->bits != 4 && mo->bits != 8)
            return bad(mo, d,
                       "pack-quantized with num_bits other than 2, 4 or 8, "
                       "or no config group naming the module, is not read");
        if (packed->dtype != ENG_DTYPE_I32 || packed->ndim != 2 ||
            packed->shape[0] != mo->rows ||
            packed->shape[1] != (mo->cols * mo->bits + 31) / 32)
            return bad(mo, d, "weight_packed does not match weight_shape");
    } else if (comp) {
        if (!bm || !part(x, mo, P_SHAPE))
            return bad(mo, d, "compressed without bitmask and shape");
        if ((rc = read_shape(x, mo, P_SHAPE, &mo->rows, &mo->cols, d)))
            return rc;
        if (bm->dtype != ENG_DTYPE_U8 || bm->ndim != 2 ||
            bm->shape[0] != mo->rows || bm->shape[1] != (mo->cols + 7) / 8)
            return bad(mo, d, "bitmask does not match shape");
        if (scale && comp->dtype != ENG_DTYPE_I8)
            return bad(mo, d, "a quantized sparse tensor is not int8");
    } else {
        mo->rows = w->shape[0];
        mo->cols = w->ndim == 2 ? w->shape[1] : 0;
        if (w->ndim != 2)
            return bad(mo, d, "an int8 weight that is not 2-D");
    }
    if (!scale) {
        mo->dtype = comp->dtype;
        return 0;
    }
    if (!eng_dtypes[scale->dtype].prunable || scale->ndim != 2 ||
        scale->shape[0] != mo->rows || scale->shape[1] < 1 ||
        mo->cols % scale->shape[1] != 0)
        return bad(mo, d,
                   "weight_scale is not (rows, groups) of a float type "
                   "with groups dividing the columns");
    mo->dtype = scale->dtype;
    const eng_tensor_info *z = part(x, mo, P_ZERO);
    int64_t G = scale->shape[1];
    if (z && packed &&
        (z->dtype != ENG_DTYPE_I32 || z->ndim != 2 ||
         z->shape[0] != (mo->rows * mo->bits + 31) / 32 || z->shape[1] != G))
        return bad(mo, d,
                   "weight_zero_point is not packed as weight_scale's "
                   "rows");
    if (z && !packed &&
        (z->dtype != ENG_DTYPE_I8 || z->ndim != 2 || z->shape[0] != mo->rows ||
         z->shape[1] != G))
        return bad(mo, d, "weight_zero_point is not int8 (rows, groups)");
    return 0;
}

static const unsigned char *bytes_of(const dec *x, long ti)
{
    size_t file, idx;
    eng_model_tensor_loc(x->m, (size_t)ti, &file, &idx);
    return eng_st_data(eng_model_file_at(x->m, file)->st, idx);
}

// M.weight of module mo into out (rows * cols of its dtype).
static int decode(const dec *x, const module *mo, unsigned char *out, float *f,
                  int8_t *lv, sh_diag *d)
{
    uint64_t R = (uint64_t)mo->rows, C = (uint64_t)mo->cols, n = R * C;
    const eng_tensor_info *scale = part(x, mo, P_SCALE);
    // Levels (signed, the library's) or values: the stored ones first.
    if (mo->part[P_COMPRESSED] >= 0) {
        const eng_tensor_info *ct = part(x, mo, P_COMPRESSED);
        const unsigned char *bm = bytes_of(x, mo->part[P_BITMASK]),
                            *v = bytes_of(x, mo->part[P_COMPRESSED]);
        size_t vs = eng_dtype_size(ct->dtype), bpr = (size_t)(C + 7) / 8;
        unsigned char *dst = scale ? (unsigned char *)lv : out;
        memset(dst, 0, n * vs);
        uint64_t k = 0;
        for (uint64_t r = 0; r < R; r++)
            for (uint64_t c = 0; c < C; c++)
                if (bm[r * bpr + c / 8] >> (c % 8) & 1) {
                    if (k == ct->numel)
                        return bad(mo, d,
                                   "bitmask marks more values than "
                                   "compressed holds");
                    memcpy(dst + (r * C + c) * vs, v + k++ * vs, vs);
                }
        if (k != ct->numel)
            return bad(mo, d,
                       "compressed holds more values than bitmask "
                       "marks");
        if (!scale)
            return 0;
    } else if (mo->part[P_PACKED] >= 0) {
        const unsigned char *p = bytes_of(x, mo->part[P_PACKED]);
        uint64_t wpr = (C * (uint64_t)mo->bits + 31) / 32,
                 mask = (1u << mo->bits) - 1;
        for (uint64_t r = 0; r < R; r++)
            for (uint64_t c = 0; c < C; c++) {
                uint64_t bit = c * (uint64_t)mo->bits;
                uint32_t word;
                memcpy(&word, p + (r * wpr + bit / 32) * 4, 4);
                lv[r * C + c] = (int8_t)((int)((word >> (bit % 32)) & mask) -
                                         (1 << (mo->bits - 1)));
            }
    } else {
        memcpy(lv, bytes_of(x, mo->part[P_WEIGHT]), n);
    }
    // (q - zero) * scale in F32, rounded to the scale's dtype.
    uint64_t G = (uint64_t)scale->shape[1], per = C / G;
    float *s = malloc(R * G * sizeof *s), *z = calloc(R * G, sizeof *z);
    if (!s || !z) {
        free(s);
        free(z);
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    }
    eng_convert_to_f32(s, bytes_of(x, mo->part[P_SCALE]), scale->dtype, R * G);
    if (mo->part[P_ZERO] >= 0) {
        const unsigned char *zb = bytes_of(x, mo->part[P_ZERO]);
        for (uint64_t r = 0; r < R; r++)
            for (uint64_t g = 0; g < G; g++) {
                if (mo->part[P_PACKED] < 0) {
                    z[r * G + g] = (float)(int8_t)zb[r * G + g];
                    continue;
                }
                uint64_t bit = r * (uint64_t)mo->bits;
                uint32_t word;
                memcpy(&word, zb + (bit / 32 * G + g) * 4, 4);
                z[r * G + g] = (float)((int)((word >> (bit % 32)) &
                                             ((1u << mo->bits) - 1)) -
                                       (1 << (mo->bits - 1)));
            }
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t at = i / C * G + i % C / per;
        f[i] = s[at] * ((float)lv[i] - z[at]);
    }
    eng_convert_from_f32(out, f, mo->dtype, n);
    free(s);
    free(z);
    return 0;
}

static int plan_rows(dec *x, eng_plan *p, sh_diag *d)
{
    for (size_t i = 0; i < p->n; i++) {
        eng_plan_row *row = &p->rows[i];
        long k = x->owner[i];
        if (k < 0) { // as it is
            int rc = eng_format_dense.outputs(p, i, d);
            if (rc != 0)
                return rc;
            continue;
        }
        module *mo = &x->mods[k];
        if (mo->first != (long)i)
            continue; // n_out 0: folded into M.weight
        size_t len = strlen(mo->name) + sizeof ".weight";
        char *name = malloc(len);
        if (name)
            snprintf(name, len, "%s.weight", mo->name);
        if (!eng_plan_keep_name(p, name))
            return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        row->n_out = 1;
        row->out[0] = (eng_plan_out){.name = name,
                                     .dtype = mo->dtype,
                                     .ndim = 2,
                                     .shape = {mo->rows, mo->cols}};
    }
    p->reshaped = true;
    return 0;
}

int eng_decompress(const eng_model *m, const eng_options *o, const eng_hooks *h,
                   sh_diag *d)
{
    const json_t *cfg = eng_model_config(m);
    const json_t *qc = cfg ? json_object_get(cfg, "quantization_config") : NULL;
    const char *qm = json_string_value(json_object_get(qc, "quant_method"));
    if (!qm || strcmp(qm, ENG_CT_METHOD) != 0)
        return sh_diag_set(d, SH_EFORMAT, "config.json",
                           "not a compressed-tensors folder: config.json has "
                           "no quantization_config with quant_method "
                           "\"compressed-tensors\"");
    dec x = {.m = m, .groups = json_object_get(qc, "config_groups")};
    eng_plan p = {.m = m, .n = eng_model_tensor_count(m)};
    eng_out *out = NULL;
    unsigned char *buf = NULL;
    float *f = NULL;
    int8_t *lv = NULL;
    int rc = group(&x, d);
    uint64_t most = 0;
    for (size_t k = 0; rc == 0 && k < x.n; k++) {
        if (x.mods[k].first < 0)
            continue;
        if ((rc = describe(&x, &x.mods[k], d)) != 0)
            break;
        uint64_t n = (uint64_t)(x.mods[k].rows * x.mods[k].cols);
        most = n > most ? n : most;
    }
    if (rc == 0 && !(p.rows = calloc(p.n ? p.n : 1, sizeof *p.rows)))
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    if (rc == 0 && !(p.config = json_deep_copy(cfg)))
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    if (rc == 0) {
        json_object_del(p.config, "quantization_config");
        rc = plan_rows(&x, &p, d);
    }
    if (rc == 0 && most &&
        (!(buf = malloc(most * 8)) || !(f = malloc(most * sizeof *f)) ||
         !(lv = malloc(most))))
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    if (rc == 0)
        rc = eng_out_open(&out, &p, &eng_format_dense, o, d);
    for (size_t i = 0; rc == 0 && i < p.n; i++) {
        long k = x.owner[i];
        if (eng_hooks_cancelled(h)) {
            rc = SH_ECANCELED;
        } else if (k < 0) {
            rc = eng_out_copy(out, i, d);
        } else if (x.mods[k].first == (long)i) {
            module *mo = &x.mods[k];
            uint64_t n = (uint64_t)(mo->rows * mo->cols);
            if ((rc = decode(&x, mo, buf, f, lv, d)) == 0)
                rc = eng_out_put(out, i, 0, buf, n * eng_dtype_size(mo->dtype),
                                 d);
        }
    }
    if (rc == 0)
        rc = eng_out_finish(out, d);
    eng_out_close(out);
    free(buf);
    free(f);
    free(lv);
    for (size_t k = 0; k < x.n; k++)
        free(x.mods[k].name);
    free(x.mods);
    free(x.owner);
    eng_plan_deinit(&p);
    return rc;
}

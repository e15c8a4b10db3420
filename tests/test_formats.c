// test_formats.c: compressed-tensors output, `decompress`, masks and
// preserve_zeros, on the fixture Llama (F32) and a BF16 copy of it.
//
// Round trip: for each form (sparse-bitmask, sparse-24-bitmask stacked on
// int8, pack-quantized 2 and 4 bits per row and per group, int8
// asymmetric, quantizing alone) the same job is run dense and compressed;
// the compressed folder decompressed is byte-identical to the dense one.
// Exactness: every weight of the dense output is scale * (q - zero) of
// the levels the compressed folder stores, read back here by a decoder of
// the test's own; pruned weights are 0. The library's pack_to_int32
// vectors (its tests) decode to their levels.
#include "tests/helpers.h"

#include "common/util.h"
#include "engine/engine.h"
#include "engine/io/safetensors.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct job {
    int rc;
    char msg[512];
    json_t *report; // eng_report_to_json
} job;

// Runs spec_text on model into out (calibration and evaluation from the
// fixture's sets when cal is set).
static job run_job(const char *model, const char *out, const char *spec_text,
                   bool cal)
{
    char *calf = th_fixture("llama-kjv-data/calibration.safetensors");
    char *evf = th_fixture("llama-kjv-data/evaluation.safetensors");
    job j = {0};
    json_t *sj = json_loads(spec_text, 0, NULL);
    ck_assert_msg(sj, "bad spec %s", spec_text);
    if (cal)
        json_object_set_new(sj, "calibration",
                            json_pack("{s:s}", "dataset", calf));
    eng_spec s;
    sh_diag d = {0};
    ck_assert_msg(eng_spec_parse(&s, sj, &d) == 0, "%s: %s", spec_text, d.msg);
    json_decref(sj);
    eng_model *m = NULL;
    ck_assert_msg(eng_model_open(&m, model, &d) == 0, "%s", d.msg);
    ck_assert_int_eq(sh_mkdir_p(out), 0);
    eng_report r;
    eng_report_init(&r, &s);
    eng_options o = {.out_dir = out,
                     .calibration_path = cal ? calf : NULL,
                     .evaluation_path = evf};
    j.rc = eng_prune(m, &s, &o, NULL, &r, &d);
    snprintf(j.msg, sizeof j.msg, "%s: %s", spec_text, d.msg);
    if (j.rc == 0)
        j.report = eng_report_to_json(&r);
    eng_report_deinit(&r);
    eng_model_close(m);
    eng_spec_deinit(&s);
    free(calf);
    free(evf);
    return j;
}

static void decompress(const char *in, const char *out)
{
    eng_model *m = NULL;
    sh_diag d = {0};
    ck_assert_msg(eng_model_open(&m, in, &d) == 0, "%s", d.msg);
    ck_assert_int_eq(sh_mkdir_p(out), 0);
    eng_options o = {.out_dir = out};
    ck_assert_msg(eng_decompress(m, &o, NULL, &d) == 0, "%s", d.msg);
    eng_model_close(m);
}

static bool same_file(const char *a, const char *b)
{
    size_t na, nb;
    unsigned char *x = th_read_file(a, &na), *y = th_read_file(b, &nb);
    bool same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

static double storage(const job *j, const char *key)
{
    json_t *t =
        json_object_get(json_object_get(j->report, "storage"), "targets");
    return json_number_value(json_object_get(t, key));
}

// The targets' bytes after against their bytes before.
static double target_ratio(const job *j)
{
    return storage(j, "bytes_after") / storage(j, "bytes_before");
}

static double metric(const job *j)
{
    return json_number_value(
        json_object_get(json_object_get(j->report, "metric"), "pruned"));
}

static const json_t *qconfig(const char *dir)
{
    char path[600];
    snprintf(path, sizeof path, "%s/config.json", dir);
    static json_t *cfg;
    json_decref(cfg);
    cfg = json_load_file(path, 0, NULL);
    ck_assert_ptr_nonnull(cfg);
    return json_object_get(cfg, "quantization_config");
}

// Runs spec dense and compressed, checks the round trip; returns the
// compressed job (the caller frees its report).
static job both(const char *model, const char *dir, const char *tag,
                const char *spec_fields, bool cal)
{
    char dense[512], comp[512], back[512], spec[1024], a[600], b[600];
    snprintf(dense, sizeof dense, "%s/%s-dense", dir, tag);
    snprintf(comp, sizeof comp, "%s/%s-ct", dir, tag);
    snprintf(back, sizeof back, "%s/%s-back", dir, tag);
    snprintf(spec, sizeof spec, "{%s}", spec_fields);
    job jd = run_job(model, dense, spec, cal);
    ck_assert_msg(jd.rc == 0, "%s", jd.msg);
    snprintf(spec, sizeof spec,
             "{%s,\"output\":{\"format\":\"compressed-tensors\"}}",
             spec_fields);
    job jc = run_job(model, comp, spec, cal);
    ck_assert_msg(jc.rc == 0, "%s", jc.msg);
    decompress(comp, back);
    snprintf(a, sizeof a, "%s/model.safetensors", dense);
    snprintf(b, sizeof b, "%s/model.safetensors", back);
    ck_assert_msg(same_file(a, b), "%s: decompressed differs from dense", tag);
    // The metric is the model's as it reads back: the dense job's.
    ck_assert_msg(metric(&jc) == metric(&jd), "%s: %.6f against %.6f", tag,
                  metric(&jc), metric(&jd));
    json_decref(jd.report);
    return jc;
}

START_TEST(test_round_trip_and_sizes)
{
    char *model = th_fixture("llama-kjv");
    char *dir = th_tmpdir();
    // 50% unstructured, not quantized: sparse-bitmask, about 0.53.
    job j = both(model, dir, "bitmask",
                 "\"method\":\"magnitude\",\"sparsity\":0.5", false);
    double r = target_ratio(&j);
    ck_assert_msg(r > 0.52 && r < 0.56, "sparse-bitmask at 50%%: %.4f", r);
    char ct[600];
    snprintf(ct, sizeof ct, "%s/bitmask-ct", dir);
    const json_t *qc = qconfig(ct);
    ck_assert_str_eq(json_string_value(json_object_get(qc, "quant_method")),
                     "compressed-tensors");
    const json_t *sc = json_object_get(qc, "sparsity_config");
    ck_assert_str_eq(json_string_value(json_object_get(sc, "format")),
                     "sparse-bitmask");
    ck_assert_ptr_null(json_object_get(qc, "config_groups"));
    fprintf(stderr, "sparse-bitmask 50%%: %.4f of F32\n", r);
    json_decref(j.report);

    // 2:4 + 8 bits symmetric (the pairing vLLM runs): at most 0.20.
    j = both(model, dir, "s24i8",
             "\"method\":\"sparsegpt\",\"pattern\":\"2:4\",\"quantize\":{"
             "\"bits\":8,\"symmetric\":true}",
             true);
    r = target_ratio(&j);
    ck_assert_msg(r <= 0.20, "2:4 + int8: %.4f", r);
    snprintf(ct, sizeof ct, "%s/s24i8-ct", dir);
    qc = qconfig(ct);
    ck_assert_str_eq(json_string_value(json_object_get(qc, "format")),
                     "int-quantized");
    sc = json_object_get(qc, "sparsity_config");
    ck_assert_str_eq(json_string_value(json_object_get(sc, "format")),
                     "sparse-24-bitmask");
    ck_assert_str_eq(
        json_string_value(json_object_get(sc, "sparsity_structure")), "2:4");
    fprintf(stderr, "2:4 + int8: %.4f of F32\n", r);
    json_decref(j.report);

    // 4 bits, groups of 128, asymmetric (pack-quantized): at most 0.15.
    j = both(model, dir, "g128",
             "\"method\":\"wanda\",\"sparsity\":0,\"quantize\":{\"bits\":4,"
             "\"group_size\":128}",
             true);
    r = target_ratio(&j);
    ck_assert_msg(r <= 0.15, "4-bit g128: %.4f", r);
    snprintf(ct, sizeof ct, "%s/g128-ct", dir);
    qc = qconfig(ct);
    const json_t *w = json_object_get(
        json_object_get(json_object_get(qc, "config_groups"), "group_0"),
        "weights");
    ck_assert_int_eq(json_integer_value(json_object_get(w, "num_bits")), 4);
    ck_assert_int_eq(json_integer_value(json_object_get(w, "group_size")), 128);
    ck_assert_str_eq(json_string_value(json_object_get(w, "strategy")),
                     "group");
    ck_assert(json_is_false(json_object_get(w, "symmetric")));
    ck_assert_str_eq(json_string_value(json_object_get(qc, "format")),
                     "pack-quantized");
    fprintf(stderr, "4-bit g128: %.4f of F32\n", r);
    json_decref(j.report);

    // The other forms round-trip too: 2 bits per row with pruning (no
    // stacking: the report says why), int8 asymmetric with pruning, RTN
    // without calibration, symmetric 4 bits.
    j = both(model, dir, "p2",
             "\"method\":\"sparsegpt\",\"sparsity\":0.5,\"quantize\":{"
             "\"bits\":2}",
             true);
    json_t *l0 = json_array_get(json_object_get(j.report, "layers"), 0);
    json_t *st = json_object_get(l0, "storage");
    ck_assert_str_eq(json_string_value(json_object_get(st, "as")),
                     "pack-quantized");
    ck_assert_ptr_nonnull(strstr(json_string_value(json_object_get(st, "note")),
                                 "renames weight"));
    json_decref(j.report);
    j = both(model, dir, "i8a",
             "\"method\":\"magnitude\",\"sparsity\":0.5,\"quantize\":{"
             "\"bits\":8}",
             false);
    json_decref(j.report);
    j = both(model, dir, "s4",
             "\"method\":\"magnitude\",\"sparsity\":0,\"quantize\":{"
             "\"bits\":4,\"symmetric\":true,\"group_size\":64}",
             false);
    json_decref(j.report);
    // An override changes the grid per tensor: the MLP in 8 bits, k_proj
    // not quantized (only pruned), the rest 4 bits in groups of 64. Two
    // config groups, mixed precision, each tensor where its group says.
    j = both(model, dir, "mixed",
             "\"method\":\"magnitude\",\"sparsity\":0.5,\"quantize\":{"
             "\"bits\":4,\"group_size\":64},\"overrides\":[{\"match\":"
             "\"mlp\",\"quantize\":{\"bits\":8,\"symmetric\":true}},{"
             "\"match\":\"k_proj\",\"quantize\":null}]",
             false);
    snprintf(ct, sizeof ct, "%s/mixed-ct", dir);
    qc = qconfig(ct);
    ck_assert_str_eq(json_string_value(json_object_get(qc, "format")),
                     "mixed-precision");
    const json_t *groups = json_object_get(qc, "config_groups");
    ck_assert_int_eq(json_object_size(groups), 2);
    json_t *layers = json_object_get(j.report, "layers");
    size_t li;
    json_t *l;
    int seen = 0;
    json_array_foreach (layers, li, l) {
        const char *name = json_string_value(json_object_get(l, "name"));
        const char *as = json_string_value(
            json_object_get(json_object_get(l, "storage"), "as"));
        const char *want = strstr(name, "mlp") ? "int-quantized+sparse-bitmask"
                           : strstr(name, "k_proj") ? "sparse-bitmask"
                                                    : "pack-quantized";
        ck_assert_msg(strcmp(as, want) == 0, "%s stored as %s", name, as);
        seen++;
    }
    ck_assert_int_eq(seen, 28);
    json_decref(j.report);
    th_rmtree(dir);
    free(dir);
    free(model);
}
END_TEST

// --- a decoder of the test's own (the library's layouts)

static const void *tensor(const eng_st *st, const char *name,
                          eng_tensor_info *t)
{
    long k = eng_st_header_find(eng_st_header_of(st), name);
    ck_assert_msg(k >= 0, "no tensor %s", name);
    *t = eng_st_header_of(st)->tensors[k];
    return eng_st_data(st, (size_t)k);
}

// Level c of a row of 32-bit words (bits per level b), unsigned.
static unsigned level_at(const unsigned char *row, int64_t c, int b)
{
    uint32_t w;
    memcpy(&w, row + (c * b / 32) * 4, 4);
    return (w >> (c * b % 32)) & ((1u << b) - 1);
}

START_TEST(test_levels_exact)
{
    char *model = th_fixture("llama-kjv");
    char *dir = th_tmpdir();
    const char *fields = "\"method\":\"sparsegpt\",\"sparsity\":0.5,"
                         "\"quantize\":{\"bits\":4,\"group_size\":64}";
    job j = both(model, dir, "ex", fields, true);
    json_decref(j.report);
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/ex-ct/model.safetensors", dir);
    snprintf(b, sizeof b, "%s/ex-dense/model.safetensors", dir);
    eng_st *ct = NULL, *dn = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_st_open(&ct, a, &d), 0);
    ck_assert_int_eq(eng_st_open(&dn, b, &d), 0);
    const char *mod = "model.layers.1.mlp.down_proj";
    char name[256];
    eng_tensor_info tp, ts, tz, tw;
    snprintf(name, sizeof name, "%s.weight_packed", mod);
    const unsigned char *packed = tensor(ct, name, &tp);
    snprintf(name, sizeof name, "%s.weight_scale", mod);
    const float *scale = tensor(ct, name, &ts);
    snprintf(name, sizeof name, "%s.weight_zero_point", mod);
    const unsigned char *zp = tensor(ct, name, &tz);
    snprintf(name, sizeof name, "%s.weight", mod);
    const float *w = tensor(dn, name, &tw);
    int64_t R = tw.shape[0], C = tw.shape[1], G = ts.shape[1];
    ck_assert_int_eq(G, C / 64);
    ck_assert_int_eq(tp.shape[1], C / 8);
    ck_assert_int_eq(tz.shape[0], (R + 7) / 8);
    uint64_t zeros = 0;
    for (int64_t r = 0; r < R; r++)
        for (int64_t c = 0; c < C; c++) {
            unsigned q = level_at(packed + r * C / 2, c, 4);
            uint32_t word; // zero points: packed down the rows
            memcpy(&word, zp + ((r / 8) * G + c / 64) * 4, 4);
            unsigned zz = (word >> (r % 8 * 4)) & 15;
            float s = scale[r * G + c / 64];
            float want = s * ((float)q - (float)zz);
            ck_assert_msg(w[r * C + c] == want,
                          "[%lld, %lld] = %g, not %g x (%u - %u)", (long long)r,
                          (long long)c, (double)w[r * C + c], (double)s, q, zz);
            zeros += w[r * C + c] == 0.0f;
        }
    ck_assert_uint_ge(zeros, (uint64_t)(R * C / 2));
    eng_st_close(ct);
    eng_st_close(dn);
    th_rmtree(dir);
    free(dir);
    free(model);
}
END_TEST

// A folder of one pack-quantized module "a" (scale 1, symmetric, bits)
// from its packed words, decompressed: its weights must be want (rows x
// cols levels).
static void read_back_levels(int bits, const int32_t *packed, int64_t rows,
                             int64_t words, int64_t cols, const float *want)
{
    char *dir = th_tmpdir();
    char in[512], out[512], path[600], cfg[512];
    snprintf(in, sizeof in, "%s/in", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    ck_assert_int_eq(sh_mkdir_p(in), 0);
    int64_t shape[2] = {rows, cols};
    float one[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    th_tensor ts[] = {
        {"a.weight_packed", "I32", 2, {rows, words}, packed},
        {"a.weight_scale", "F32", 2, {rows, 1}, one},
        {"a.weight_shape", "I64", 1, {2}, shape},
    };
    snprintf(path, sizeof path, "%s/model.safetensors", in);
    th_write_st(path, ts, 3, NULL);
    snprintf(path, sizeof path, "%s/config.json", in);
    snprintf(cfg, sizeof cfg,
             "{\"quantization_config\":{\"quant_method\":"
             "\"compressed-tensors\",\"format\":\"pack-quantized\","
             "\"config_groups\":{\"group_0\":{\"weights\":{\"num_bits\":%d,"
             "\"symmetric\":true}}}}}",
             bits);
    th_write_file(path, cfg, strlen(cfg));
    decompress(in, out);
    eng_st *st = NULL;
    sh_diag d;
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    ck_assert_int_eq(eng_st_open(&st, path, &d), 0);
    eng_tensor_info t;
    const float *w = tensor(st, "a.weight", &t);
    for (int64_t i = 0; i < rows * cols; i++)
        ck_assert_msg(w[i] == want[i], "%d bits [%lld] = %g", bits,
                      (long long)i, (double)w[i]);
    eng_st_close(st);
    th_rmtree(dir);
    free(dir);
}

// pack_to_int32's vectors from the compressed-tensors tests read back.
START_TEST(test_library_vectors)
{
    // 4 bits: [[-8..-1, 1, 2, 3, 4, -8, -8, -8, -8], [1, 2, 3, 4, -8 x 4,
    // -8..-1]] packs to [[1985229328, 52137], [52137, 1985229328]].
    static const int32_t p4[4] = {1985229328, 52137, 52137, 1985229328};
    static const float want4[32] = {-8, -7, -6, -5, -4, -3, -2, -1, 1,  2,  3,
                                    4,  -8, -8, -8, -8, 1,  2,  3,  4,  -8, -8,
                                    -8, -8, -8, -7, -6, -5, -4, -3, -2, -1};
    read_back_levels(4, p4, 2, 2, 16, want4);
    // 8 bits: [[1, 2, 3, 4], [-128, -127, -126, -125]] packs to
    // [[-2071756159], [50462976]].
    static const int32_t p8[2] = {-2071756159, 50462976};
    static const float want8[8] = {1, 2, 3, 4, -128, -127, -126, -125};
    read_back_levels(8, p8, 2, 1, 4, want8);
}
END_TEST

// A BF16 copy of the fixture: scales are stored in BF16 and the round
// trip stays exact.
START_TEST(test_bf16_round_trip)
{
    char *src = th_fixture("llama-kjv/model.safetensors");
    char *cfg = th_fixture("llama-kjv/config.json");
    char *dir = th_tmpdir();
    char model[512], path[600];
    snprintf(model, sizeof model, "%s/bf16", dir);
    ck_assert_int_eq(sh_mkdir_p(model), 0);
    eng_st *st = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_st_open(&st, src, &d), 0);
    const eng_st_header *h = eng_st_header_of(st);
    th_tensor *ts = calloc(h->count, sizeof *ts);
    void **bufs = calloc(h->count, sizeof *bufs);
    for (size_t i = 0; i < h->count; i++) {
        const eng_tensor_info *t = &h->tensors[i];
        ck_assert(t->dtype == ENG_DTYPE_F32);
        bufs[i] = malloc(t->numel * 2);
        eng_convert_from_f32(bufs[i], eng_st_data(st, i), ENG_DTYPE_BF16,
                             t->numel);
        ts[i] = (th_tensor){t->name, "BF16", t->ndim, {0}, bufs[i]};
        for (int k = 0; k < t->ndim; k++)
            ts[i].shape[k] = t->shape[k];
    }
    snprintf(path, sizeof path, "%s/model.safetensors", model);
    th_write_st(path, ts, h->count, NULL);
    size_t n;
    unsigned char *c = th_read_file(cfg, &n);
    snprintf(path, sizeof path, "%s/config.json", model);
    th_write_file(path, c, n);
    free(c);
    for (size_t i = 0; i < h->count; i++)
        free(bufs[i]);
    free(bufs);
    free(ts);
    eng_st_close(st);
    job j = both(model, dir, "b4",
                 "\"method\":\"wanda\",\"sparsity\":0.5,\"quantize\":{"
                 "\"bits\":4,\"group_size\":32}",
                 true);
    json_decref(j.report);
    j = both(model, dir, "b8",
             "\"method\":\"magnitude\",\"pattern\":\"2:4\",\"quantize\":{"
             "\"bits\":8,\"symmetric\":true}",
             false);
    json_decref(j.report);
    th_rmtree(dir);
    free(dir);
    free(src);
    free(cfg);
}
END_TEST

// Masks mark the non-zero weights; preserve_zeros keeps a pruned model's
// zeros through GPTQ's update (without it, the update fills some in).
START_TEST(test_masks_and_preserve_zeros)
{
    char *model = th_fixture("llama-kjv");
    char *dir = th_tmpdir();
    char first[512], again[512], loose[512], path[600], mpath[600];
    snprintf(first, sizeof first, "%s/first", dir);
    snprintf(again, sizeof again, "%s/again", dir);
    snprintf(loose, sizeof loose, "%s/loose", dir);
    job j = run_job(model, first,
                    "{\"method\":\"magnitude\",\"sparsity\":0.5,\"output\":{"
                    "\"masks\":true}}",
                    false);
    ck_assert_msg(j.rc == 0, "%s", j.msg);
    json_decref(j.report);
    snprintf(path, sizeof path, "%s/model.safetensors", first);
    snprintf(mpath, sizeof mpath, "%s/masks.safetensors", first);
    eng_st *w = NULL, *m = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_st_open(&w, path, &d), 0);
    ck_assert_int_eq(eng_st_open(&m, mpath, &d), 0);
    const eng_st_header *mh = eng_st_header_of(m);
    ck_assert_int_eq(mh->count, 28);
    for (size_t k = 0; k < mh->count; k++) {
        eng_tensor_info t;
        const float *x = tensor(w, mh->tensors[k].name, &t);
        const unsigned char *bits = eng_st_data(m, k);
        int64_t C = t.shape[1], bpr = (C + 7) / 8;
        ck_assert_int_eq(mh->tensors[k].shape[1], bpr);
        for (int64_t r = 0; r < t.shape[0]; r++)
            for (int64_t c = 0; c < C; c++)
                ck_assert((bits[r * bpr + c / 8] >> (c % 8) & 1) ==
                          (x[r * C + c] != 0.0f));
    }
    eng_st_close(m);
    eng_st_close(w);
    // GPTQ alone on the pruned model, with and without preserve_zeros.
    const char *q = "{\"method\":\"sparsegpt\",\"sparsity\":0,\"quantize\":"
                    "{\"bits\":4},\"preserve_zeros\":%s}";
    char spec[256];
    snprintf(spec, sizeof spec, q, "true");
    job kept = run_job(first, again, spec, true);
    snprintf(spec, sizeof spec, q, "false");
    job lost = run_job(first, loose, spec, true);
    ck_assert_msg(kept.rc == 0 && lost.rc == 0, "%s / %s", kept.msg, lost.msg);
    json_t *tk = json_object_get(kept.report, "targets"),
           *tl = json_object_get(lost.report, "targets");
    int64_t zk = json_integer_value(json_object_get(tk, "zeros")),
            zl = json_integer_value(json_object_get(tl, "zeros"));
    ck_assert_msg(zk >= 425984 && zl < 425984,
                  "zeros kept %lld, without preserve_zeros %lld", (long long)zk,
                  (long long)zl);
    json_decref(kept.report);
    json_decref(lost.report);
    th_rmtree(dir);
    free(dir);
    free(model);
}
END_TEST

// A compressed folder given to prune, a dense one to decompress, a
// compressed one whose parts disagree: clear errors.
START_TEST(test_bad_inputs)
{
    char *model = th_fixture("llama-kjv");
    char *dir = th_tmpdir();
    char ct[512], out[512], path[600];
    snprintf(ct, sizeof ct, "%s/ct", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    job j = run_job(model, ct,
                    "{\"method\":\"magnitude\",\"sparsity\":0.5,\"output\":{"
                    "\"format\":\"compressed-tensors\"}}",
                    false);
    ck_assert_msg(j.rc == 0, "%s", j.msg);
    json_decref(j.report);
    j = run_job(ct, out, "{\"method\":\"magnitude\"}", false);
    ck_assert_int_eq(j.rc, SH_ESPEC);
    ck_assert_ptr_nonnull(strstr(j.msg, "stored compressed"));
    sh_diag d;
    eng_model *m = NULL;
    ck_assert_int_eq(eng_model_open(&m, model, &d), 0);
    eng_options o = {.out_dir = out};
    ck_assert_int_eq(eng_decompress(m, &o, NULL, &d), SH_EFORMAT);
    ck_assert_ptr_nonnull(strstr(d.msg, "not a compressed-tensors folder"));
    eng_model_close(m);
    // The bitmask of one module says more values than it holds: flip a
    // zero bit in its first byte that is zero.
    snprintf(path, sizeof path, "%s/model.safetensors", ct);
    eng_st *st = NULL;
    ck_assert_int_eq(eng_st_open(&st, path, &d), 0);
    long k = eng_st_header_find(eng_st_header_of(st),
                                "model.layers.0.mlp.up_proj.bitmask");
    ck_assert(k >= 0);
    uint64_t off = eng_st_header_of(st)->data_start +
                   eng_st_header_of(st)->tensors[k].begin;
    eng_st_close(st);
    size_t n;
    unsigned char *bytes = th_read_file(path, &n);
    int bit = 0;
    while (bytes[off] >> bit & 1)
        bit++;
    ck_assert_int_lt(bit, 8);
    bytes[off] |= (unsigned char)(1u << bit);
    th_write_file(path, bytes, n);
    free(bytes);
    ck_assert_int_eq(eng_model_open(&m, ct, &d), 0);
    th_rmtree(out);
    ck_assert_int_eq(sh_mkdir_p(out), 0);
    ck_assert_int_eq(eng_decompress(m, &o, NULL, &d), SH_EFORMAT);
    ck_assert_msg(strstr(d.msg, "model.layers.0.mlp.up_proj") &&
                      strstr(d.msg, "bitmask"),
                  "%s", d.msg);
    eng_model_close(m);
    th_rmtree(dir);
    free(dir);
    free(model);
}
END_TEST

Suite *suite_formats(void)
{
    Suite *s = suite_create("formats");
    TCase *tc = tcase_create("compressed");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_round_trip_and_sizes);
    tcase_add_test(tc, test_levels_exact);
    tcase_add_test(tc, test_library_vectors);
    tcase_add_test(tc, test_bf16_round_trip);
    tcase_add_test(tc, test_masks_and_preserve_zeros);
    tcase_add_test(tc, test_bad_inputs);
    suite_add_tcase(s, tc);
    return s;
}

// test_structure.c: structured shrinks through the CLI, on both fixtures.
//
// Equivalence: the engine's logits (mlp: outputs) on the shrunk model equal
// its logits on the input with the removed units' weights set to zero
// (a removed block: its o_proj and down_proj zero, so it passes its input
// through), within 1e-5 relative, for heads, kv_heads, channels, blocks
// and neurons, each criterion. The removed units come from the report.
//
// Independent loader: reference logits of a shrunk fixture made by a plain
// PyTorch Hugging Face Llama forward (tools/hf-llama-logits.py), committed;
// the shrunk model must agree within 1e-4 (explicit head_dim, FLAP's
// compensation biases).
#include "tests/helpers.h"
#include "tests/server.h"

#include "common/util.h"
#include "engine/engine.h"
#include "engine/io/dataset.h"
#include "engine/io/safetensors.h"
#include "engine/nets/layers.h"
#include "engine/nets/net.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static eng_model *open_model(const char *path)
{
    eng_model *m = NULL;
    sh_diag d;
    ck_assert_msg(eng_model_open(&m, path, &d) == 0, "%s", d.msg);
    return m;
}

// Paths of a model and its calibration and evaluation sets.
typedef struct subject {
    char model[512], cal[512], eval[512];
} subject;

static subject fixture(const char *fx)
{
    subject j;
    char rel[256], *p;
    p = th_fixture(fx);
    snprintf(j.model, sizeof j.model, "%s", p);
    free(p);
    snprintf(rel, sizeof rel, "%s-data/calibration.safetensors", fx);
    p = th_fixture(rel);
    snprintf(j.cal, sizeof j.cal, "%s", p);
    free(p);
    snprintf(rel, sizeof rel, "%s-data/evaluation.safetensors", fx);
    p = th_fixture(rel);
    snprintf(j.eval, sizeof j.eval, "%s", p);
    free(p);
    return j;
}

// Removes the folder shrink_cli made for out, and frees out.
static void drop_output(char *out)
{
    *strrchr(out, '/') = '\0';
    th_rmtree(out);
    free(out);
}

// A generated Llama (vocab 64) in dir/model with token sets of seqlen
// tokens: 16 calibration rows, 4 evaluation rows.
static subject generated(const char *dir, int hidden, int inter, int layers,
                         int heads, int kv_heads, int seqlen)
{
    subject sj;
    snprintf(sj.model, sizeof sj.model, "%s/model", dir);
    snprintf(sj.cal, sizeof sj.cal, "%s/cal.safetensors", dir);
    snprintf(sj.eval, sizeof sj.eval, "%s/eval.safetensors", dir);
    ck_assert_int_eq(sh_mkdir_p(sj.model), 0);
    th_write_llama_gqa(sj.model, hidden, inter, layers, heads, kv_heads, 64);
    th_write_tokens(sj.cal, 16, seqlen, 64);
    th_write_tokens(sj.eval, 4, seqlen, 64);
    return sj;
}

// Runs `shears prune` on the subject with the extra args; returns the
// report (the output is in *out, a folder "out" in a fresh temporary
// folder the caller removes).
static json_t *shrink_cli(const subject *sj, const char *const *extra,
                          char **out)
{
    char *dir = th_tmpdir();
    char rep[512], *o = th_path(dir, "out");
    snprintf(rep, sizeof rep, "%s/report.json", dir);
    const char *args[40] = {"prune", "--model",       sj->model,  "--out",
                            o,       "--calibration", sj->cal,    "--report",
                            rep,     "--quiet",       "--no-sync"};
    size_t n = 11;
    for (size_t i = 0; extra[i]; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    char *so = NULL, *se = NULL;
    int rc = th_run(&so, &se, args);
    ck_assert_msg(rc == 0, "prune failed: %s", se);
    json_error_t err;
    json_t *r = json_load_file(rep, 0, &err);
    ck_assert_msg(r, "report: %s", err.text);
    free(so);
    free(se);
    free(dir);
    *out = o;
    return r;
}

typedef struct zeroed {
    float *w[256];
    size_t n;
} zeroed;

// Zeroes rows [lo, hi) (cols false) or columns of tensor name in the
// overlay of n (the copy kept in z, reused by later calls).
static void zero(eng_net *net, const eng_model *m, zeroed *z, const char *name,
                 bool cols, int64_t lo, int64_t hi)
{
    long at = eng_model_find(m, name);
    ck_assert(at >= 0);
    const eng_tensor_info *t = eng_model_tensor(m, (size_t)at);
    float *w = NULL;
    for (size_t i = 0; i < z->n; i++)
        if (net->overlay && net->overlay[at] == z->w[i])
            w = z->w[i];
    if (!w) { // the checkpoint's values, as F32
        sh_diag d;
        ck_assert_int_eq(net_tensor_load(net, (size_t)at, &w, &d), 0);
        z->w[z->n++] = w;
        ck_assert_int_eq(eng_net_overlay_set(net, (size_t)at, w, &d), 0);
    }
    int64_t rows = t->shape[0], ncols = t->ndim == 2 ? t->shape[1] : 1;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < ncols; c++)
            if ((cols ? c : r) >= lo && (cols ? c : r) < hi)
                w[r * ncols + c] = 0.0f;
}

// The input model with the report's removed units zeroed, in n's overlay.
static void zero_removed(eng_net *net, const eng_model *m, const json_t *rep,
                         zeroed *z)
{
    const json_t *cfg = eng_model_config(m);
    bool llama = json_object_get(cfg, "num_attention_heads") != NULL;
    json_t *blocks =
        json_object_get(json_object_get(rep, "structure"), "blocks");
    ck_assert(json_array_size(blocks) > 0);
    size_t i;
    json_t *b;
    char name[128];
    json_array_foreach (blocks, i, b) {
        int64_t bi = json_integer_value(json_object_get(b, "index"));
        if (llama) {
            int64_t heads = json_integer_value(
                        json_object_get(cfg, "num_attention_heads")),
                    kv = json_integer_value(
                        json_object_get(cfg, "num_key_value_heads")),
                    hd = json_integer_value(
                             json_object_get(cfg, "hidden_size")) /
                         heads,
                    per = heads / kv;
#define NM(p)                                                                  \
    (snprintf(name, sizeof name, "model.layers.%lld." p ".weight",             \
              (long long)bi),                                                  \
     name)
            if (json_is_true(json_object_get(b, "removed"))) {
                zero(net, m, z, NM("self_attn.o_proj"), false, 0, 1 << 30);
                zero(net, m, z, NM("mlp.down_proj"), false, 0, 1 << 30);
                continue;
            }
            size_t j;
            json_t *u;
            json_array_foreach (json_object_get(b, "kv_heads"), j, u) {
                int64_t g = json_integer_value(u);
                zero(net, m, z, NM("self_attn.k_proj"), false, g * hd,
                     (g + 1) * hd);
                zero(net, m, z, NM("self_attn.v_proj"), false, g * hd,
                     (g + 1) * hd);
                zero(net, m, z, NM("self_attn.q_proj"), false, g * per * hd,
                     (g + 1) * per * hd);
                zero(net, m, z, NM("self_attn.o_proj"), true, g * per * hd,
                     (g + 1) * per * hd);
            }
            json_array_foreach (json_object_get(b, "heads"), j, u) {
                int64_t h = json_integer_value(u);
                zero(net, m, z, NM("self_attn.q_proj"), false, h * hd,
                     (h + 1) * hd);
                zero(net, m, z, NM("self_attn.o_proj"), true, h * hd,
                     (h + 1) * hd);
            }
            json_array_foreach (json_object_get(b, "channels"), j, u) {
                int64_t c = json_integer_value(u);
                zero(net, m, z, NM("mlp.gate_proj"), false, c, c + 1);
                zero(net, m, z, NM("mlp.up_proj"), false, c, c + 1);
                zero(net, m, z, NM("mlp.down_proj"), true, c, c + 1);
            }
#undef NM
        } else {
            json_t *layers = json_object_get(cfg, "layers");
            size_t j;
            json_t *u;
            json_array_foreach (json_object_get(b, "neurons"), j, u) {
                int64_t c = json_integer_value(u);
                snprintf(name, sizeof name, "%s.weight",
                         json_string_value(json_array_get(layers, (size_t)bi)));
                zero(net, m, z, name, false, c, c + 1);
                snprintf(
                    name, sizeof name, "%s.weight",
                    json_string_value(json_array_get(layers, (size_t)bi + 1)));
                zero(net, m, z, name, true, c, c + 1);
            }
        }
    }
}

// The model's outputs on the first rows of the evaluation set: logits
// (llama, 2 rows) or the last layer's outputs (mlp, 256 rows).
static float *outputs(eng_net *net, const char *path, size_t *n)
{
    eng_dataset ds;
    sh_diag d;
    ck_assert_msg(eng_dataset_load(&ds, path, 0, eng_net_vocab(net),
                                   eng_net_classes(net), NULL, &d) == 0,
                  "%s", d.msg);
    float *res = NULL;
    if (eng_net_vocab(net) > 0) {
        int64_t T = ds.info.cols, V = eng_net_vocab(net);
        res = malloc((size_t)(2 * T * V) * sizeof *res);
        for (int r = 0; r < 2; r++) {
            float *l = NULL;
            ck_assert_int_eq(eng_net_logits(net, ds.ids + r * T, T, &l, &d), 0);
            memcpy(res + r * T * V, l, (size_t)(T * V) * sizeof *l);
            free(l);
        }
        *n = (size_t)(2 * T * V);
    } else {
        ds.rows = 256;
        eng_acts a = {0};
        ck_assert_int_eq(eng_net_embed(net, &ds, &a, &d), 0);
        for (size_t b = 0; b < eng_net_blocks(net); b++) {
            eng_net_block *blk = NULL;
            ck_assert_int_eq(eng_net_block_open(net, b, &blk, &d), 0);
            ck_assert_int_eq(eng_net_block_forward(net, blk, &a, &d), 0);
            eng_net_block_close(blk);
        }
        *n = (size_t)(a.rows * a.width);
        res = malloc(*n * sizeof *res);
        memcpy(res, a.x, *n * sizeof *res);
        eng_acts_deinit(&a);
    }
    eng_dataset_deinit(&ds);
    return res;
}

// max |a - b| / max |b|
static double rel_diff(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs((double)b[i]));
    }
    return md / (mb > 0 ? mb : 1);
}

static void check_equivalent(const subject *sj, const char *const *extra)
{
    char *out = NULL;
    json_t *rep = shrink_cli(sj, extra, &out);
    eng_model *in = open_model(sj->model), *shrunk = open_model(out);
    eng_net *a = NULL, *b = NULL;
    sh_diag d;
    ck_assert_msg(eng_net_open(&a, shrunk, &d) == 0, "%s", d.msg);
    ck_assert_msg(eng_net_open(&b, in, &d) == 0, "%s", d.msg);
    zeroed z = {0};
    zero_removed(b, in, rep, &z);
    size_t na, nb;
    float *ya = outputs(a, sj->eval, &na), *yb = outputs(b, sj->eval, &nb);
    ck_assert_uint_eq(na, nb);
    double rd = rel_diff(ya, yb, na);
    ck_assert_msg(rd <= 1e-5, "%s %s: shrunk and zeroed differ by %g",
                  sj->model, extra[0], rd);
    // Smaller, and by the counts the report gives.
    json_t *size = json_object_get(rep, "size");
    ck_assert(json_number_value(
                  json_object_get(json_object_get(size, "params"), "pruned")) <
              json_number_value(
                  json_object_get(json_object_get(size, "params"), "dense")));
    free(ya);
    free(yb);
    for (size_t i = 0; i < z.n; i++)
        free(z.w[i]);
    eng_net_close(a);
    eng_net_close(b);
    eng_model_close(in);
    eng_model_close(shrunk);
    json_decref(rep);
    drop_output(out);
}

START_TEST(test_equivalent_llama)
{
    static const char *const cases[][10] = {
        {"--heads", "0.25", "--method", "magnitude", "--no-compensate", NULL},
        {"--kv-heads", "0.5", "--method", "wanda", NULL},
        {"--channels", "0.3", "--method", "flap", "--no-compensate", NULL},
        {"--blocks", "1", "--method", "block_influence", NULL},
        {"--blocks", "1", "--heads", "0.25", "--channels", "0.5", "--method",
         "random"},
        {"--channels", "0.25", "--multiple-of", "64", "--method", "wanda",
         NULL},
    };
    subject fx = fixture("llama-kjv");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_equivalent(&fx, cases[i]);
}
END_TEST

// Grouped-query attention (8 query heads over 2 KV groups): heads are
// removed per group, KV groups with their 4 query heads.
START_TEST(test_equivalent_gqa)
{
    char *dir = th_tmpdir();
    subject sj = generated(dir, 128, 256, 3, 8, 2, 32);
    static const char *const cases[][10] = {
        {"--heads", "0.5", "--method", "wanda", NULL},
        {"--heads", "0.25", "--method", "flap", "--no-compensate", NULL},
        {"--kv-heads", "0.5", "--heads", "0.25", "--method", "magnitude", NULL},
        {"--kv-heads", "0.5", "--channels", "0.5", "--blocks", "1", "--method",
         "flap", "--no-compensate", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_equivalent(&sj, cases[i]);
    // Per group: 8 heads over 2 groups, a quarter of each group's 4 heads
    // is 1, so 6 heads stay, 3 in each group.
    char *out = NULL;
    static const char *const quarter[] = {"--heads", "0.25", "--method",
                                          "magnitude", NULL};
    json_t *rep = shrink_cli(&sj, quarter, &out);
    json_t *heads = json_object_get(
        json_object_get(json_object_get(rep, "structure"), "units"), "heads");
    ck_assert_int_eq(json_integer_value(json_object_get(heads, "after")), 6);
    json_t *b0 = json_array_get(
        json_object_get(json_object_get(rep, "structure"), "blocks"), 0);
    json_t *gone = json_object_get(b0, "heads");
    ck_assert_uint_eq(json_array_size(gone), 2);
    ck_assert_int_lt(json_integer_value(json_array_get(gone, 0)), 4);
    ck_assert_int_ge(json_integer_value(json_array_get(gone, 1)), 4);
    json_decref(rep);
    drop_output(out);
    th_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_equivalent_mlp)
{
    static const char *const cases[][10] = {
        {"--neurons", "0.5", "--method", "magnitude", NULL},
        {"--neurons", "0.5", "--method", "wanda", NULL},
        {"--neurons", "0.25", "--method", "flap", "--no-compensate"},
        {"--neurons", "0.3", "--method", "random", NULL},
    };
    subject fx = fixture("mlp-fmnist");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_equivalent(&fx, cases[i]);
}
END_TEST

// The fixture Llama shrunk by FLAP (3 of 4 heads with head_dim 32 kept
// explicit, 288 of 384 channels, compensation biases on every projection)
// against logits from tools/hf-llama-logits.py on the same shrink.
START_TEST(test_shrunk_matches_independent_loader)
{
    static const char *const args[] = {"--method",   "flap", "--heads", "0.25",
                                       "--channels", "0.25", NULL};
    char *out = NULL;
    subject fx = fixture("llama-kjv");
    json_t *rep = shrink_cli(&fx, args, &out);
    char cfgp[512];
    snprintf(cfgp, sizeof cfgp, "%s/config.json", out);
    json_error_t err;
    json_t *cfg = json_load_file(cfgp, 0, &err);
    ck_assert(cfg);
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "head_dim")), 32);
    ck_assert_int_eq(
        json_integer_value(json_object_get(cfg, "num_attention_heads")), 3);
    ck_assert(json_is_true(json_object_get(cfg, "attention_bias")));
    ck_assert(json_is_true(json_object_get(cfg, "mlp_bias")));
    json_decref(cfg);
    eng_model *m = open_model(out);
    ck_assert_int_ge(eng_model_find(m, "model.layers.0.self_attn.o_proj.bias"),
                     0);
    eng_net *n = NULL;
    sh_diag d;
    ck_assert_msg(eng_net_open(&n, m, &d) == 0, "%s", d.msg);
    char *refp =
        th_fixture("llama-kjv-data/shrunk-reference-logits.safetensors");
    eng_st *st = NULL;
    ck_assert_int_eq(eng_st_open(&st, refp, &d), 0);
    const eng_st_header *h = eng_st_header_of(st);
    long ti = eng_st_header_find(h, "tokens"),
         li = eng_st_header_find(h, "logits");
    int64_t T = h->tensors[ti].shape[0], V = eng_net_vocab(n);
    int32_t ids[256];
    for (int64_t t = 0; t < T; t++)
        ids[t] = (int32_t)eng_read_int(eng_st_data(st, (size_t)ti),
                                       h->tensors[ti].dtype, (size_t)t);
    float *logits = NULL;
    ck_assert_int_eq(eng_net_logits(n, ids, T, &logits, &d), 0);
    const float *want = eng_st_data(st, (size_t)li);
    double md = 0;
    for (int64_t i = 0; i < T * V; i++)
        md = fmax(md, fabs((double)logits[i] - want[i]));
    ck_assert_msg(md < 1e-4, "max |logit - reference| = %g", md);
    free(logits);
    eng_st_close(st);
    free(refp);
    eng_net_close(n);
    eng_model_close(m);
    json_decref(rep);
    drop_output(out);
}
END_TEST

// Through the service: upload, a structured job, download; shapes, config
// and metric checked; bad structures are 422s naming the field.
START_TEST(test_structured_job)
{
    th_server s;
    th_server_start(&s, NULL, NULL);
    char *folder = th_fixture("llama-kjv");
    char *calf = th_fixture("llama-kjv-data/calibration.safetensors");
    char *evf = th_fixture("llama-kjv-data/evaluation.safetensors");
    char *mlp = th_fixture("mlp-fmnist");
    char *ck = th_upload_checkpoint(&s, folder);
    char *mk = th_upload_checkpoint(&s, mlp);
    char *barefile = th_fixture("llama-kjv/model.safetensors");
    char *bare = th_upload_checkpoint(&s, barefile); // no config.json
    // The fixture as a Mistral: its config cannot carry FLAP's biases.
    char *mdir = th_path(s.dir, "mistral");
    ck_assert_int_eq(sh_mkdir_p(mdir), 0);
    char mpath[600], cpath[600];
    snprintf(mpath, sizeof mpath, "%s/model.safetensors", mdir);
    snprintf(cpath, sizeof cpath, "%s/config.json", mdir);
    size_t mlen = 0;
    unsigned char *mbytes = th_read_file(barefile, &mlen);
    th_write_file(mpath, mbytes, mlen);
    free(mbytes);
    char *fcfg = th_fixture("llama-kjv/config.json");
    json_error_t jerr;
    json_t *mc = json_load_file(fcfg, 0, &jerr);
    json_object_set_new(mc, "model_type", json_string("mistral"));
    ck_assert_int_eq(json_dump_file(mc, cpath, 0), 0);
    json_decref(mc);
    free(fcfg);
    char *mis = th_upload_checkpoint(&s, mdir);
    char *cal = th_upload_dataset(&s, calf);
    char *ev = th_upload_dataset(&s, evf);
    char body[768];
    snprintf(body, sizeof body,
             "{\"checkpoint\":\"%s\",\"method\":\"flap\","
             "\"structure\":{\"heads\":0.25,\"channels\":0.25,"
             "\"blocks\":1},\"calibration\":{\"dataset\":\"%s\"},"
             "\"evaluation\":{\"dataset\":\"%s\"}}",
             ck, cal, ev);
    th_resp r;
    ck_assert_int_eq(th_post_json(&s, "/v1/jobs", body, &r), 202);
    json_t *spec = json_object_get(r.json, "spec");
    ck_assert(json_is_true(
        json_object_get(json_object_get(spec, "structure"), "compensate")));
    ck_assert_ptr_null(json_object_get(spec, "sparsity"));
    char id[64];
    snprintf(id, sizeof id, "%s",
             json_string_value(json_object_get(r.json, "id")));
    th_resp_free(&r);
    json_t *job = th_job_wait(&s, id, 120);
    ck_assert_msg(strcmp(json_string_value(json_object_get(job, "status")),
                         "succeeded") == 0,
                  "%s", json_dumps(json_object_get(job, "error"), 0));
    json_t *res = json_object_get(job, "result");
    json_t *metric = json_object_get(res, "metric");
    double dense = json_number_value(json_object_get(metric, "dense")),
           pruned = json_number_value(json_object_get(metric, "pruned"));
    ck_assert_double_eq_tol(dense, 3.4410, 0.001);
    ck_assert(pruned > dense && isfinite(pruned));
    json_t *units = json_object_get(json_object_get(res, "structure"), "units");
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(units, "blocks"), "after")),
                     3);
    json_t *speed = json_object_get(res, "speed");
    ck_assert_str_eq(json_string_value(json_object_get(speed, "unit")),
                     "tokens/s");
    ck_assert(json_number_value(json_object_get(speed, "pruned")) > 0);
    json_decref(job);

    // The files: config.json rewritten, tensors smaller and renumbered.
    char path[256];
    snprintf(path, sizeof path, "/v1/jobs/%s/artifact/files/config.json", id);
    ck_assert_int_eq(th_get(&s, path, &r), 200);
    json_error_t err;
    json_t *cfg = json_loadb(r.body, r.len, 0, &err);
    ck_assert(cfg);
    ck_assert_int_eq(
        json_integer_value(json_object_get(cfg, "num_hidden_layers")), 3);
    ck_assert_int_eq(
        json_integer_value(json_object_get(cfg, "num_attention_heads")), 3);
    ck_assert_int_eq(
        json_integer_value(json_object_get(cfg, "intermediate_size")), 288);
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "head_dim")), 32);
    json_decref(cfg);
    th_resp_free(&r);
    snprintf(path, sizeof path, "/v1/jobs/%s/artifact/files/model.safetensors",
             id);
    ck_assert_int_eq(th_get(&s, path, &r), 200);
    char *wpath = th_path(s.dir, "shrunk.safetensors");
    th_write_file(wpath, r.body, r.len);
    th_resp_free(&r);
    eng_st *st = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_st_open(&st, wpath, &d), 0);
    const eng_st_header *h = eng_st_header_of(st);
    long q = eng_st_header_find(h, "model.layers.2.self_attn.q_proj.weight");
    ck_assert(q >= 0);
    ck_assert_int_eq(h->tensors[q].shape[0], 96);
    ck_assert(eng_st_header_find(h, "model.layers.3.self_attn.q_proj.weight") <
              0);
    long g = eng_st_header_find(h, "model.layers.0.mlp.gate_proj.weight");
    ck_assert_int_eq(h->tensors[g].shape[0], 288);
    ck_assert(eng_st_header_find(h, "model.layers.0.mlp.down_proj.bias") >= 0);
    eng_st_close(st);
    free(wpath);

    char misbody[512];
    snprintf(misbody, sizeof misbody,
             "{\"checkpoint\":\"%s\",\"method\":\"flap\",\"structure\":"
             "{\"heads\":0.25},\"calibration\":{\"dataset\":\"%s\"}}",
             mis, cal);
    struct {
        const char *fmt;
        const char *a;
        const char *field, *words;
    } bad[] = {
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\","
         "\"structure\":{\"heads\":1}}",
         ck, "structure.heads", "every head"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\","
         "\"structure\":{\"blocks\":4, \"blocks_by\":\"last\"}}",
         ck, "structure.blocks", "every block"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\","
         "\"structure\":{\"blocks\":1}}",
         ck, "structure.blocks", "calibration"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\","
         "\"scope\":\"global\",\"structure\":{\"channels\":0.5}}",
         ck, "scope", "every block"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\","
         "\"sparsity\":0.5,\"structure\":{\"channels\":0.5}}",
         ck, "sparsity", "structure"},
        {"{\"checkpoint\":\"%s\",\"method\":\"sparsegpt\","
         "\"structure\":{\"channels\":0.5}}",
         ck, "method", "structures"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\","
         "\"structure\":{\"heads\":0.5}}",
         mk, "structure.heads", "no attention heads"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\","
         "\"structure\":{\"channels\":0.999}}",
         ck, "structure.channels", "every channel"},
        {"{\"checkpoint\":\"%s\",\"method\":\"flap\"}", ck, "method",
         "structure"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\","
         "\"structure\":{\"channels\":0.5}}",
         bare, "structure", "family"},
        {"%s", misbody, "structure.compensate", "only model_type"},
        {"{\"checkpoint\":\"%s\",\"method\":\"magnitude\","
         "\"structure\":{\"heads\":1e-9}}",
         ck, "structure", "removes nothing"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(body, sizeof body, bad[i].fmt, bad[i].a);
        th_post_json(&s, "/v1/jobs", body, &r);
        th_expect_problem(&r, 422, bad[i].field, bad[i].words);
        th_resp_free(&r);
    }
    free(ck);
    free(mk);
    free(bare);
    free(barefile);
    free(mis);
    free(mdir);
    free(cal);
    free(ev);
    free(folder);
    free(calf);
    free(evf);
    free(mlp);
    ck_assert_int_eq(th_server_stop(&s), 0);
    th_server_free(&s);
}
END_TEST

// Splits dir/model.safetensors into two shards and an index.
static void reshard(const char *dir)
{
    char path[600], shard[2][600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    eng_st *st = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_st_open(&st, path, &d), 0);
    const eng_st_header *h = eng_st_header_of(st);
    th_tensor *ts = calloc(h->count, sizeof *ts);
    json_t *map = json_object();
    size_t half = h->count / 2;
    for (int f = 0; f < 2; f++) {
        snprintf(shard[f], sizeof shard[f],
                 "%s/model-0000%d-of-00002.safetensors", dir, f + 1);
        size_t lo = f ? half : 0, hi = f ? h->count : half;
        for (size_t i = lo; i < hi; i++) {
            const eng_tensor_info *t = &h->tensors[i];
            ts[i] = (th_tensor){t->name,
                                "F32",
                                t->ndim,
                                {t->shape[0], t->ndim > 1 ? t->shape[1] : 0},
                                eng_st_data(st, i)};
            json_object_set_new(map, t->name,
                                json_string(strrchr(shard[f], '/') + 1));
        }
        th_write_st(shard[f], ts + lo, hi - lo, "{\"format\":\"pt\"}");
    }
    eng_st_close(st);
    free(ts);
    unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    json_t *idx = json_pack("{s:{s:I}, s:o}", "metadata", "total_size",
                            (json_int_t)12345, "weight_map", map);
    ck_assert_int_eq(json_dump_file(idx, path, 0), 0);
    json_decref(idx);
}

// A sharded model loses a block and half its channels: the index is
// rebuilt from the outputs (renamed, dropped) and the folder opens and
// computes what the zeroed input does.
START_TEST(test_sharded_index_rebuilt)
{
    char *dir = th_tmpdir();
    subject sj = generated(dir, 64, 128, 4, 4, 2, 16);
    reshard(sj.model);
    // A per-layer list, as newer configs carry.
    char cfgp[600];
    snprintf(cfgp, sizeof cfgp, "%s/config.json", sj.model);
    json_error_t err;
    json_t *cfg = json_load_file(cfgp, 0, &err);
    json_object_set_new(cfg, "layer_types",
                        json_pack("[s,s,s,s]", "t0", "t1", "t2", "t3"));
    ck_assert_int_eq(json_dump_file(cfg, cfgp, 0), 0);
    json_decref(cfg);
    static const char *const args[] = {"--blocks",  "1",          "--blocks-by",
                                       "influence", "--channels", "0.5",
                                       "--method",  "wanda",      NULL};
    check_equivalent(&sj, args);
    char *out = NULL;
    json_t *rep = shrink_cli(&sj, args, &out);
    char path[700];
    snprintf(path, sizeof path, "%s/config.json", out);
    cfg = json_load_file(path, 0, &err);
    json_t *types = json_object_get(cfg, "layer_types");
    ck_assert_uint_eq(json_array_size(types), 3);
    size_t bi;
    json_t *b;
    json_array_foreach (
        json_object_get(json_object_get(rep, "structure"), "blocks"), bi, b) {
        if (json_is_true(json_object_get(b, "removed")))
            continue;
        char want[32];
        snprintf(want, sizeof want, "t%zu", bi);
        ck_assert_str_eq(
            json_string_value(json_array_get(
                types, (size_t)json_integer_value(json_object_get(b, "as")))),
            want);
    }
    json_decref(cfg);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", out);
    json_t *idx = json_load_file(path, 0, &err);
    ck_assert_msg(idx, "%s", err.text);
    json_t *map = json_object_get(idx, "weight_map");
    ck_assert_ptr_nonnull(
        json_object_get(map, "model.layers.2.mlp.down_proj.weight"));
    ck_assert_ptr_null(
        json_object_get(map, "model.layers.3.mlp.down_proj.weight"));
    eng_model *m = open_model(out); // checks the map against the shards
    ck_assert_int_eq(json_object_size(map), eng_model_tensor_count(m));
    uint64_t bytes = 0;
    for (size_t i = 0; i < eng_model_tensor_count(m); i++)
        bytes += eng_model_tensor(m, i)->end - eng_model_tensor(m, i)->begin;
    ck_assert_int_eq(json_integer_value(json_object_get(
                         json_object_get(idx, "metadata"), "total_size")),
                     (json_int_t)bytes);
    eng_model_close(m);
    json_decref(idx);
    json_decref(rep);
    drop_output(out);
    th_rmtree(dir);
    free(dir);
}
END_TEST

Suite *suite_structure(void)
{
    Suite *s = suite_create("structure");
    TCase *tc = tcase_create("equivalence");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_equivalent_llama);
    tcase_add_test(tc, test_equivalent_gqa);
    tcase_add_test(tc, test_equivalent_mlp);
    tcase_add_test(tc, test_sharded_index_rebuilt);
    tcase_add_test(tc, test_shrunk_matches_independent_loader);
    suite_add_tcase(s, tc);
    TCase *svc = tcase_create("service");
    tcase_set_timeout(svc, 180);
    tcase_add_test(svc, test_structured_job);
    suite_add_tcase(s, svc);
    return s;
}

// bench_pipeline.c: calibrated pruning as whole `shears prune` runs, on a
// single 4096x4096 layer and on a 2-block Llama, against yardsticks
// measured in the same run.
//
//   bench_pipeline SHEARS_BIN WORKDIR [RUNS]
//
// The models (F32, random weights) and their calibration sets (16384 rows
// or tokens) are generated once and cached in WORKDIR. The yardsticks:
//   I/O floor   cp of the model folder and the calibration file (reading
//               both once, writing as many bytes)
//   read floor  this program again (--touch): the model and calibration
//               files read with pread a MiB at a time into one reused
//               buffer a thread, on every CPU, every value summed, the
//               model's bytes written to a file; cp moves the bytes in
//               the kernel and never brings them into a process
//   sgemm       GFLOP/s of a 2048^3 product, for the layer's
//               ratio of SparseGPT's necessary arithmetic
//   forward     `shears eval` of the dense Llama on its calibration set:
//               one dense forward pass over the calibration tokens
// Each round runs every row once, interleaved; the table gives medians
// and the phase timings of the median run's report.
#include "tests/bench/bench.h"

#include "common/par.h"
#include "common/util.h"
#include "engine/io/safetensors.h"
#include "engine/math/linalg.h"

#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { TOKENS = 16384, SEQ = 128 };
enum { LAYER = 4096 };
enum { HID = 1024, HEADS = 16, KV = 4, FFN = 2816, BLOCKS = 2, VOCAB = 8192 };

static uint64_t rng = 0x6a09e667f3bcc909ull;

static uint64_t next64(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static float randn(void)
{
    double u1 = ((next64() >> 11) + 0.5) / 9007199254740992.0;
    double u2 = ((next64() >> 11) + 0.5) / 9007199254740992.0;
    return (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2));
}

typedef struct gen_tensor {
    const char *name;
    eng_dtype dtype;
    int64_t a, b; // b 0: a vector
    float scale;  // normal(0, scale); 0: ones (norms)
} gen_tensor;

// Writes a safetensors file; F32 tensors are drawn from normal(0, scale)
// (scale 0: ones), I32 tokens uniform below `vocab`, column c of a
// feature matrix scaled by 0.5 + (c % 7) / 4 (unequal input norms, so
// Wanda and magnitude differ).
static int write_st(const char *path, const gen_tensor *g, size_t n,
                    int64_t vocab)
{
    eng_tensor_info ts[64];
    for (size_t i = 0; i < n; i++) {
        ts[i] = (eng_tensor_info){.name = (char *)g[i].name,
                                  .dtype = g[i].dtype,
                                  .ndim = g[i].b ? 2 : 1,
                                  .shape = {g[i].a, g[i].b}};
        ts[i].numel = (uint64_t)g[i].a * (uint64_t)(g[i].b ? g[i].b : 1);
    }
    eng_st_writer *w = NULL;
    sh_diag d;
    if (eng_st_writer_create(&w, path, ts, n, NULL, &d) != 0) {
        fprintf(stderr, "bench: %s\n", d.msg);
        return -1;
    }
    enum { CHUNK = 1 << 20 };
    float *buf = malloc(CHUNK * sizeof *buf);
    int rc = buf ? 0 : -1;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        int64_t cols = g[i].b ? g[i].b : 1;
        for (uint64_t at = 0; rc == 0 && at < ts[i].numel; at += CHUNK) {
            size_t len = ts[i].numel - at < CHUNK ? ts[i].numel - at : CHUNK;
            for (size_t k = 0; k < len; k++) {
                if (g[i].dtype == ENG_DTYPE_I32) {
                    int32_t t = (int32_t)(next64() % (uint64_t)vocab);
                    memcpy(&buf[k], &t, 4);
                } else if (g[i].scale == 0) {
                    buf[k] = 1.0f;
                } else {
                    float f = randn() * g[i].scale;
                    if (g[i].scale < 0) // features: unequal column norms
                        f = -f * (0.5f + (float)((at + k) % cols % 7) / 4);
                    buf[k] = f;
                }
            }
            rc = eng_st_writer_put(w, i, at * 4, buf, len * 4, &d);
        }
    }
    free(buf);
    if (rc == 0)
        rc = eng_st_writer_finish(w, false, &d);
    eng_st_writer_destroy(w);
    if (rc != 0)
        fprintf(stderr, "bench: %s\n", d.msg);
    return rc;
}

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static int gen_layer(const char *dir, const char *calib)
{
    char p[4096];
    if (sh_mkdir_p(dir) != 0)
        return -1;
    snprintf(p, sizeof p, "%s/config.json", dir);
    if (write_text(p, "{\"model_type\": \"mlp\", \"layers\": [\"fc\"], "
                      "\"hidden_act\": \"relu\"}\n"))
        return -1;
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    gen_tensor w[] = {{"fc.weight", ENG_DTYPE_F32, LAYER, LAYER, 1 / 64.0f}};
    gen_tensor x[] = {{"inputs", ENG_DTYPE_F32, TOKENS, LAYER, -1}};
    return write_st(p, w, 1, 0) || write_st(calib, x, 1, 0);
}

static int gen_llama(const char *dir, const char *calib)
{
    char p[4096];
    if (sh_mkdir_p(dir) != 0)
        return -1;
    snprintf(p, sizeof p, "%s/config.json", dir);
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": "
             "\"llama\", \"hidden_size\": %d, \"intermediate_size\": %d, "
             "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, "
             "\"num_key_value_heads\": %d, \"rms_norm_eps\": 1e-05, "
             "\"rope_theta\": 10000.0, \"vocab_size\": %d, "
             "\"max_position_embeddings\": %d, \"tie_word_embeddings\": "
             "false, \"hidden_act\": \"silu\", \"torch_dtype\": "
             "\"float32\"}\n",
             HID, FFN, BLOCKS, HEADS, KV, VOCAB, SEQ);
    if (write_text(p, cfg))
        return -1;
    static char names[BLOCKS * 9][96];
    gen_tensor g[3 + BLOCKS * 9];
    size_t n = 0;
    const float sh = 1 / 32.0f, sf = 1 / 53.0f; // 1/sqrt(in)
    g[n++] = (gen_tensor){"model.embed_tokens.weight", ENG_DTYPE_F32, VOCAB,
                          HID, 1.0f};
    const struct {
        const char *name;
        int64_t a, b;
        float s;
    } per[] = {{"self_attn.q_proj", HID, HID, sh},
               {"self_attn.k_proj", HID / HEADS * KV, HID, sh},
               {"self_attn.v_proj", HID / HEADS * KV, HID, sh},
               {"self_attn.o_proj", HID, HID, sh},
               {"mlp.gate_proj", FFN, HID, sh},
               {"mlp.up_proj", FFN, HID, sh},
               {"mlp.down_proj", HID, FFN, sf},
               {"input_layernorm", HID, 0, 0},
               {"post_attention_layernorm", HID, 0, 0}};
    for (int l = 0; l < BLOCKS; l++)
        for (size_t k = 0; k < 9; k++) {
            char *nm = names[l * 9 + k];
            snprintf(nm, 96, "model.layers.%d.%s.weight", l, per[k].name);
            g[n++] =
                (gen_tensor){nm, ENG_DTYPE_F32, per[k].a, per[k].b, per[k].s};
        }
    g[n++] = (gen_tensor){"model.norm.weight", ENG_DTYPE_F32, HID, 0, 0};
    g[n++] = (gen_tensor){"lm_head.weight", ENG_DTYPE_F32, VOCAB, HID, sh};
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    gen_tensor t[] = {{"tokens", ENG_DTYPE_I32, TOKENS / SEQ, SEQ, 1}};
    return write_st(p, g, n, 0) || write_st(calib, t, 1, VOCAB);
}

// Generates what is missing (a .complete mark says it is whole).
static int prepare(const char *work, const char *name,
                   int (*gen)(const char *, const char *), char *dir,
                   char *calib)
{
    char done[4096];
    snprintf(dir, 4096, "%s/%s", work, name);
    snprintf(calib, 4096, "%s/%s-calibration.safetensors", work, name);
    snprintf(done, sizeof done, "%s/%s.complete", work, name);
    if (sh_path_exists(done))
        return 0;
    fprintf(stderr, "bench: generating %s\n", dir);
    sh_rm_rf(dir);
    if (gen(dir, calib) != 0)
        return -1;
    return write_text(done, "");
}

// The phase timings of a report, "read 0.12 forward 1.03 ...".
static void phases(const char *report, char *out, size_t cap)
{
    out[0] = 0;
    json_t *r = json_load_file(report, 0, NULL);
    json_t *t = json_object_get(r, "timings");
    const char *k;
    json_t *v;
    size_t at = 0;
    json_object_foreach (t, k, v) {
        if (!json_is_number(v) || at + 32 > cap)
            continue;
        at += (size_t)snprintf(out + at, cap - at, "%s%s %.2f", at ? " " : "",
                               k, json_number_value(v));
    }
    json_decref(r);
}

typedef struct row {
    const char *name;
    char *argv[24];
    double t[64];
    char phases[512];
} row;

// A structured shrink of the Llama (half its query heads, half its MLP
// channels): the engine's forward speed on the input and the output, each
// the median of its passes (the report's speed), against the ratio of
// forward FLOPs per token (the report's size), over rounds.
static int shrink_speed(const char *bin, const char *llama, const char *eval,
                        const char *out, const char *rep, int runs)
{
    char *argv[] = {(char *)bin,    "prune",      "--model",    (char *)llama,
                    "--out",        (char *)out,  "--method",   "magnitude",
                    "--heads",      "0.5",        "--channels", "0.5",
                    "--evaluation", (char *)eval, "--quiet",    "--no-sync",
                    "--report",     (char *)rep,  NULL};
    double up[16], fr[16], dense[16], pruned[16];
    runs = runs > 16 ? 16 : runs;
    for (int r = 0; r < runs; r++) {
        sh_rm_rf(out);
        bench_spawn(argv, NULL, NULL, false, NULL);
        json_t *j = json_load_file(rep, 0, NULL);
        json_t *sp = json_object_get(j, "speed"),
               *fl = json_object_get(json_object_get(j, "size"),
                                     "flops_per_token");
        if (!sp || !fl) {
            fprintf(stderr, "bench: the shrink wrote no speed\n");
            json_decref(j);
            return 1;
        }
        dense[r] = json_number_value(json_object_get(sp, "dense"));
        pruned[r] = json_number_value(json_object_get(sp, "pruned"));
        up[r] = json_number_value(json_object_get(sp, "speedup"));
        fr[r] = json_number_value(json_object_get(fl, "dense")) /
                json_number_value(json_object_get(fl, "pruned"));
        json_decref(j);
    }
    sh_rm_rf(out);
    unlink(rep);
    double u = bench_median(up, runs), f = bench_median(fr, runs);
    printf("\nstructured shrink of the llama: heads 16 -> 8, channels 2816 -> "
           "1408 (%d runs, medians)\n",
           runs);
    printf("forward tokens/s dense %.0f, shrunk %.0f: speedup %.2f; FLOP "
           "ratio %.2f; speedup / FLOP ratio %.2f (target >= 0.8)\n",
           bench_median(dense, runs), bench_median(pruned, runs), u, f, u / f);
    return 0;
}

typedef struct touch_job {
    int fd, out;           // out < 0: nothing written
    _Atomic uint32_t sink; // the values' bits, so no read is left out
    atomic_bool bad;
} touch_job;

enum { PIECE = 1 << 20 };

// Pieces [b, e) of the file read into one reused buffer (what the engine
// does with calibration rows: a mapping would fault in every page), each
// value XORed in eight lanes, and written at its offset to out.
static void touch_pieces(void *ctx, int64_t b, int64_t e)
{
    touch_job *j = ctx;
    unsigned char *buf = malloc(PIECE);
    uint32_t acc[8] = {0}, u[8];
    int64_t p = b;
    for (; p < e && buf; p++) {
        off_t at = (off_t)p * PIECE;
        ssize_t k = pread(j->fd, buf, PIECE, at);
        if (k < 0 || (j->out >= 0 && pwrite(j->out, buf, (size_t)k, at) != k))
            break;
        size_t i = 0;
        for (; i + sizeof u <= (size_t)k; i += sizeof u) {
            memcpy(u, buf + i, sizeof u);
            for (int l = 0; l < 8; l++)
                acc[l] ^= u[l];
        }
        for (; i < (size_t)k; i++)
            acc[0] ^= buf[i];
    }
    free(buf);
    if (p < e)
        atomic_store(&j->bad, true);
    for (int l = 1; l < 8; l++)
        acc[0] ^= acc[l];
    atomic_fetch_xor(&j->sink, acc[0]);
}

// The read floor: each file read with pread in pieces on every CPU, every
// value of it summed; the first (the model) also written to out.
static int touch_floor(char **paths, int n, const char *out)
{
    eng_blas_threads(1); // OpenBLAS's idle workers stopped, as shears does
    sh_par_threads(sh_cpu_count());
    uint32_t sink = 0;
    for (int i = 0; i < n; i++) {
        int fd = open(paths[i], O_RDONLY);
        struct stat st;
        int o = i == 0 ? open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644) : -1;
        bool bad = fd < 0 || fstat(fd, &st) != 0 || (i == 0 && o < 0);
        touch_job j = {.fd = fd, .out = o};
        int64_t pieces =
            bad ? 0 : (int64_t)(((size_t)st.st_size + PIECE - 1) / PIECE);
        sh_par_for(pieces, 1, 1, touch_pieces, &j);
        sink ^= atomic_load(&j.sink);
        bad |= atomic_load(&j.bad) || (o >= 0 && close(o) != 0);
        if (fd >= 0)
            close(fd);
        if (bad)
            return 1;
    }
    return sink == 0x7fc00001u; // never, but the sums are used
}

int main(int argc, char **argv)
{
    if (argc > 3 && strcmp(argv[1], "--touch") == 0)
        return touch_floor(argv + 3, argc - 3, argv[2]);
    if (argc < 3) {
        fprintf(stderr, "usage: bench_pipeline SHEARS_BIN WORKDIR [RUNS]\n");
        return 2;
    }
    const char *bin = argv[1], *work = argv[2];
    int runs = argc > 3 ? atoi(argv[3]) : 3;
    if (runs < 1 || runs > 64)
        runs = 3;
    static char layer[4096], lcal[4096], llama[4096], kcal[4096], out[4096],
        cpdst[4096], rep[4096], self[4096], lmodel[4200], touched[4200];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0)
        return 1;
    self[sl] = 0;
    if (sh_mkdir_p(work) != 0 ||
        prepare(work, "layer4096", gen_layer, layer, lcal) != 0 ||
        prepare(work, "llama2", gen_llama, llama, kcal) != 0)
        return 1;
    snprintf(out, sizeof out, "%s/pipeline-out", work);
    snprintf(cpdst, sizeof cpdst, "%s/pipeline-copy", work);
    snprintf(rep, sizeof rep, "%s/pipeline-report.json", work);
    snprintf(lmodel, sizeof lmodel, "%s/model.safetensors", layer);
    snprintf(touched, sizeof touched, "%s/pipeline-touched", work);
    double gf = bench_sgemm_gflops(5);

#define PRUNE(model, cal, method)                                              \
    {(char *)bin, "prune",     "--model",  model,      "--calibration",        \
     cal,         "--out",     out,        "--method", method,                 \
     "--quiet",   "--no-sync", "--report", rep,        NULL}
#define COPY(model, cal)                                                       \
    {                                                                          \
        "/bin/cp", "-r", "--reflink=never", model, cal, cpdst, NULL            \
    }
    row rows[] = {
        {"4096^2 I/O floor (cp)", COPY(layer, lcal), {0}, ""},
        {"4096^2 read floor (pread)",
         {self, "--touch", touched, lmodel, lcal, NULL},
         {0},
         ""},
        {"4096^2 wanda", PRUNE(layer, lcal, "wanda"), {0}, ""},
        {"4096^2 sparsegpt", PRUNE(layer, lcal, "sparsegpt"), {0}, ""},
        {"llama I/O floor (cp)", COPY(llama, kcal), {0}, ""},
        {"llama dense forward (eval)",
         {(char *)bin, "eval", "--model", llama, "--evaluation", kcal,
          "--no-speed", NULL},
         {0},
         ""},
        {"llama wanda", PRUNE(llama, kcal, "wanda"), {0}, ""},
        {"llama sparsegpt", PRUNE(llama, kcal, "sparsegpt"), {0}, ""},
    };
#undef PRUNE
#undef COPY
    const int n = (int)(sizeof rows / sizeof rows[0]);
    // A warm-up round puts the inputs in the page cache for everyone.
    for (int r = -1; r < runs; r++)
        for (int i = 0; i < n; i++) {
            sh_rm_rf(out);
            sh_rm_rf(cpdst);
            if (rows[i].argv[0][0] == '/' &&
                strcmp(rows[i].argv[0], "/bin/cp") == 0 &&
                sh_mkdir_p(cpdst) != 0)
                return 1;
            double t = bench_spawn(rows[i].argv, NULL, NULL, false, NULL);
            if (r < 0)
                continue;
            rows[i].t[r] = t;
            // Keep the phases of the run nearest the median so far.
            if (strcmp(rows[i].argv[1], "prune") == 0 &&
                fabs(t - bench_median(rows[i].t, r + 1)) < 1e-9 + 0.5 * t)
                phases(rep, rows[i].phases, sizeof rows[i].phases);
        }
    sh_rm_rf(out);
    sh_rm_rf(cpdst);
    unlink(rep);
    unlink(touched);

    double floor_l = bench_median(rows[0].t, runs),
           floor_k = bench_median(rows[4].t, runs),
           read_l = bench_median(rows[1].t, runs);
    double fwd = bench_median(rows[5].t, runs);
    double c = LAYER, tk = TOKENS;
    // SparseGPT's necessary arithmetic on the layer: H as a SYRK, the
    // factorisations, the lazy updates and the in-block updates.
    double sgpt_flop =
        tk * c * c + 4.0 / 3 * c * c * c + c * c * c + c * c * 128;
    printf("\ncalibrated pruning, whole CLI runs, %d tokens (%d runs, "
           "medians); sgemm 2048^3: %.1f GFLOP/s\n",
           TOKENS, runs, gf);
    printf("%-28s %9s %10s %10s %10s %10s\n", "", "seconds", "/ I/O", "/ read",
           "/ fwd", "sgemm");
    for (int i = 0; i < n; i++) {
        double t = bench_median(rows[i].t, runs);
        bool lay = i < 4;
        char fw[16] = "", sg[16] = "", rd[16] = "";
        if (!lay && i != 4)
            snprintf(fw, sizeof fw, "%.2f", t / fwd);
        if (lay && i > 0)
            snprintf(rd, sizeof rd, "%.2f", t / read_l);
        if (i == 3)
            snprintf(sg, sizeof sg, "%.2f", sgpt_flop / t / 1e9 / gf);
        printf("%-28s %9.3f %10.2f %10s %10s %10s\n", rows[i].name, t,
               t / (lay ? floor_l : floor_k), rd, fw, sg);
        if (rows[i].phases[0])
            printf("    %s\n", rows[i].phases);
    }
    printf("targets: 4096^2 wanda <= 1.5 x I/O, sparsegpt <= 5.5 s; llama "
           "wanda <= 10.5 s (<= 2 fwd), sparsegpt <= 11.8 s (<= 3 fwd)\n");
    return shrink_speed(bin, llama, kcal, out, rep, runs);
}

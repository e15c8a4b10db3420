// bench_grad.c: the backward pass (`shears grad`) on the >= 1 GiB BF16
// checkpoint of bench_prune (its shapes: hidden 2048, MLP 5632, 11 layers,
// vocabulary 8192, tied embeddings), against the forward pass over the
// same rows (`shears eval`), in the same run.
//
//   bench_grad SHEARS_BIN WORKDIR [RUNS]
//
// WORKDIR holds model-bf16/model.safetensors (bench_prune makes it); this
// adds a folder linking it with a config.json, and a calibration set of
// 2 sequences of 256 tokens. The table gives medians of whole processes:
// seconds, the ratio to the forward pass, and peak RSS beside the bound
// README states: 2 x the largest tensor as F32 (its weights and its
// gradient) + one block's backward activations of one sequence + the kept
// block inputs + the head's logits, over the process's baseline (the
// forward yardstick of a one-layer model).
#include "tests/bench/bench.h"

#include "common/util.h"
#include "engine/io/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { HIDDEN = 2048, INTER = 5632, LAYERS = 11, VOCAB = 8192, HEADS = 16 };
enum { ROWS = 2, T = 256 };

static int write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs(text, f);
    return fclose(f);
}

static int prepare(const char *work, char *model, char *tokens, size_t size)
{
    char weights[4096], link_path[4096], cfg[4096];
    if (sh_path_join(model, size, work, "grad-model") ||
        sh_path_join(tokens, size, work, "grad-tokens.safetensors") ||
        sh_path_join(weights, sizeof weights, work,
                     "model-bf16/model.safetensors") ||
        sh_path_join(link_path, sizeof link_path, model, "model.safetensors") ||
        sh_path_join(cfg, sizeof cfg, model, "config.json"))
        return -1;
    if (!sh_path_exists(weights)) {
        fprintf(stderr, "bench_grad: %s is missing (bench_prune makes it)\n",
                weights);
        return -1;
    }
    sh_mkdir_p(model);
    char abs[4096];
    if (!realpath(weights, abs))
        return -1;
    unlink(link_path);
    if (symlink(abs, link_path) != 0)
        return -1;
    char text[1024];
    snprintf(text, sizeof text,
             "{\"model_type\": \"llama\", \"architectures\": "
             "[\"LlamaForCausalLM\"], \"hidden_size\": %d, "
             "\"intermediate_size\": %d, \"num_hidden_layers\": %d, "
             "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, "
             "\"vocab_size\": %d, \"rms_norm_eps\": 1e-05, "
             "\"tie_word_embeddings\": true, \"hidden_act\": \"silu\"}\n",
             HIDDEN, INTER, LAYERS, HEADS, HEADS, VOCAB);
    if (write_text(cfg, text) != 0)
        return -1;
    int32_t ids[ROWS * T];
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < ROWS * T; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ids[i] = (int32_t)(x % VOCAB);
    }
    eng_tensor_info t = {.name = "tokens",
                         .dtype = ENG_DTYPE_I32,
                         .ndim = 2,
                         .shape = {ROWS, T},
                         .numel = ROWS * T};
    unlink(tokens);
    eng_st_writer *w = NULL;
    sh_diag d;
    int rc = eng_st_writer_create(&w, tokens, &t, 1, NULL, &d);
    if (rc == 0)
        rc = eng_st_writer_put(w, 0, 0, ids, sizeof ids, &d);
    if (rc == 0)
        rc = eng_st_writer_finish(w, false, &d);
    eng_st_writer_destroy(w);
    return rc;
}

// A one-layer model of width 64 (the vocabulary's 8192) in dir: `shears grad`
// on it is the process's baseline (the program, its libraries, OpenBLAS's
// buffers).
static int tiny(const char *dir)
{
    enum { D = 64, I = 128, V = VOCAB };
    const char *names[] = {"model.embed_tokens.weight",
                           "model.norm.weight",
                           "model.layers.0.input_layernorm.weight",
                           "model.layers.0.post_attention_layernorm.weight",
                           "model.layers.0.self_attn.q_proj.weight",
                           "model.layers.0.self_attn.k_proj.weight",
                           "model.layers.0.self_attn.v_proj.weight",
                           "model.layers.0.self_attn.o_proj.weight",
                           "model.layers.0.mlp.gate_proj.weight",
                           "model.layers.0.mlp.up_proj.weight",
                           "model.layers.0.mlp.down_proj.weight"};
    const int64_t shape[][2] = {{V, D}, {D, 0}, {D, 0}, {D, 0}, {D, D}, {D, D},
                                {D, D}, {D, D}, {I, D}, {I, D}, {D, I}};
    eng_tensor_info ts[11];
    for (int i = 0; i < 11; i++)
        ts[i] = (eng_tensor_info){
            .name = (char *)names[i],
            .dtype = ENG_DTYPE_F32,
            .ndim = shape[i][1] ? 2 : 1,
            .shape = {shape[i][0], shape[i][1]},
            .numel = (uint64_t)shape[i][0] *
                     (uint64_t)(shape[i][1] ? shape[i][1] : 1)};
    char path[4096], cfg[4096];
    if (sh_path_join(path, sizeof path, dir, "model.safetensors") ||
        sh_path_join(cfg, sizeof cfg, dir, "config.json"))
        return -1;
    sh_mkdir_p(dir);
    unlink(path);
    char text[512];
    snprintf(text, sizeof text,
             "{\"model_type\": \"llama\", \"hidden_size\": %d, "
             "\"intermediate_size\": %d, \"num_hidden_layers\": 1, "
             "\"num_attention_heads\": 4, \"vocab_size\": %d, "
             "\"tie_word_embeddings\": true}\n",
             D, I, V);
    if (write_text(cfg, text) != 0)
        return -1;
    eng_st_writer *w = NULL;
    sh_diag d;
    int rc = eng_st_writer_create(&w, path, ts, 11, NULL, &d);
    float *buf = malloc((size_t)V * D * sizeof *buf);
    for (int i = 0; buf && i < V * D; i++)
        buf[i] = (float)((i * 37) % 101) / 1010.0f;
    for (int i = 0; rc == 0 && i < 11; i++)
        rc = buf ? eng_st_writer_put(w, (size_t)i, 0, buf, ts[i].numel * 4, &d)
                 : -1;
    if (rc == 0)
        rc = eng_st_writer_finish(w, false, &d);
    eng_st_writer_destroy(w);
    free(buf);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_grad SHEARS_BIN WORKDIR [RUNS]\n");
        return 2;
    }
    const char *bin = argv[1], *work = argv[2];
    int runs = argc > 3 ? atoi(argv[3]) : 3;
    if (runs < 1 || runs > 64)
        runs = 3;
    char model[4096], tokens[4096], out[4096], small[4096];
    if (prepare(work, model, tokens, sizeof model) != 0 ||
        sh_path_join(out, sizeof out, work, "grad.safetensors") ||
        sh_path_join(small, sizeof small, work, "grad-tiny") ||
        tiny(small) != 0)
        return 1;
    char *base[] = {(char *)bin, "grad",  "--model", small, "--calibration",
                    tokens,      "--out", out,       NULL};
    char *fwd[] = {(char *)bin,    "eval", "--model",    model,
                   "--evaluation", tokens, "--no-speed", NULL};
    char *grad[] = {(char *)bin, "grad",  "--model", model, "--calibration",
                    tokens,      "--out", out,       NULL};
    char *fisher[] = {(char *)bin,     "grad", "--model", model,
                      "--calibration", tokens, "--out",   out,
                      "--fisher",      NULL};
    struct {
        const char *name;
        char **argv;
        double wall[64], rss[64];
    } rows[] = {
        {"baseline (grad, 1 tiny layer)", base, {0}, {0}},
        {"forward (eval, yardstick)", fwd, {0}, {0}},
        {"gradients (grad)", grad, {0}, {0}},
        {"gradients + Fisher", fisher, {0}, {0}},
    };
    int nrows = (int)(sizeof rows / sizeof rows[0]);
    for (int r = -1; r < runs; r++) { // one warm-up round
        for (int i = 0; i < nrows; i++) {
            unlink(out);
            double rss,
                wall = bench_spawn(rows[i].argv, NULL, NULL, false, &rss);
            if (r >= 0) {
                rows[i].wall[r] = wall;
                rows[i].rss[r] = rss;
            }
        }
    }
    unlink(out);
    // The bound: the largest tensor (the embedding, 8192 x 2048) twice as
    // F32; one block's backward buffer for a sequence (llama.c:
    // T x (5d + 4q + 4kv + 4I) floats and the threads' T x T scores); the
    // kept inputs (layers x T x d); the head's logits and its two (T, d).
    double largest = 4.0 * VOCAB * HIDDEN;
    double acts = 4.0 * T * (5.0 * HIDDEN + 8.0 * HIDDEN + 4.0 * INTER) +
                  4.0 * T * T * 2 * sh_cpu_count() + 4.0 * LAYERS * T * HIDDEN +
                  4.0 * T * (VOCAB + 2.0 * HIDDEN);
    double fw = bench_median(rows[1].wall, runs);
    double baseline = bench_median(rows[0].rss, runs);
    printf("\nbackward pass on the 1 GiB BF16 checkpoint's shapes, %d "
           "sequences of %d tokens (%d runs, medians)\n",
           ROWS, T, runs);
    printf("%-28s %10s %18s %16s\n", "", "seconds", "ratio to forward",
           "peak RSS (MiB)");
    double worst = 0;
    for (int i = 1; i < nrows; i++) {
        double w = bench_median(rows[i].wall, runs);
        double rss = bench_median(rows[i].rss, runs);
        printf("%-28s %10.3f %18.2f %16.1f\n", rows[i].name, w, w / fw,
               rss / 1048576.0);
        if (i > 1)
            worst = rss > worst ? rss : worst;
    }
    double bound = 2 * largest + acts;
    printf("bound: baseline %.1f MiB + 2 x largest tensor as F32 %.1f MiB + "
           "activations of one sequence %.1f MiB = %.1f MiB; the backward "
           "peaks at %.1f MiB over the baseline (%s)\n",
           baseline / 1048576.0, 2 * largest / 1048576.0, acts / 1048576.0,
           (baseline + bound) / 1048576.0, (worst - baseline) / 1048576.0,
           worst - baseline <= bound ? "within" : "OVER");
    return 0;
}

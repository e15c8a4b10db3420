// bench_prune.c: `shears prune` on a >= 1 GiB BF16 checkpoint against
// copying the same file, in the same run.
//
//   bench_prune SHEARS_BIN WORKDIR [RUNS]
//
// The checkpoint (Llama-shaped, BF16, random weights) is generated once
// and cached in WORKDIR. Each round runs the yardstick (cp of the weights
// file) and every prune variant, interleaved, as whole processes; the
// table gives medians: throughput as a ratio to the copy (bytes/s of the
// prune over bytes/s of cp: above 1 is faster than copying) and peak RSS as
// a fraction of the file size. Outputs are written without fsync by both,
// so the figures measure the work, not the disk.
#include "tests/bench/bench.h"

#include "common/util.h"
#include "engine/io/safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { HIDDEN = 2048, INTER = 5632, LAYERS = 11, VOCAB = 8192 };

static uint64_t rng = 0x243f6a8885a308d3ull;

static uint32_t next32(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

static int generate(const char *dir)
{
    char path[4096], done[4096];
    if (sh_path_join(path, sizeof path, dir, "model.safetensors") ||
        sh_path_join(done, sizeof done, dir, ".complete"))
        return -1;
    if (sh_path_exists(done))
        return 0;
    sh_rm_rf(dir);
    if (sh_mkdir_p(dir) != 0)
        return -1;
    const char *proj[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
    const char *mlp[] = {"gate_proj", "up_proj", "down_proj"};
    eng_tensor_info ts[2 + LAYERS * 9];
    char names[2 + LAYERS * 9][96];
    size_t n = 0;
#define ADD(nm, a, b)                                                          \
    do {                                                                       \
        snprintf(names[n], sizeof names[n], "%s", nm);                         \
        ts[n] = (eng_tensor_info){.name = names[n],                            \
                                  .dtype = ENG_DTYPE_BF16,                     \
                                  .ndim = (b) ? 2 : 1,                         \
                                  .shape = {a, b}};                            \
        ts[n].numel = (uint64_t)(a) * ((b) ? (uint64_t)(b) : 1);               \
        n++;                                                                   \
    } while (0)
    ADD("model.embed_tokens.weight", VOCAB, HIDDEN);
    for (int l = 0; l < LAYERS; l++) {
        char nm[96];
        for (int p = 0; p < 4; p++) {
            snprintf(nm, sizeof nm, "model.layers.%d.self_attn.%s.weight", l,
                     proj[p]);
            ADD(nm, HIDDEN, HIDDEN);
        }
        for (int p = 0; p < 3; p++) {
            snprintf(nm, sizeof nm, "model.layers.%d.mlp.%s.weight", l, mlp[p]);
            if (p == 2)
                ADD(nm, HIDDEN, INTER);
            else
                ADD(nm, INTER, HIDDEN);
        }
        snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", l);
        ADD(nm, HIDDEN, 0);
        snprintf(nm, sizeof nm,
                 "model.layers.%d.post_attention_layernorm.weight", l);
        ADD(nm, HIDDEN, 0);
    }
    ADD("model.norm.weight", HIDDEN, 0);
#undef ADD
    eng_st_writer *w = NULL;
    sh_diag d;
    if (eng_st_writer_create(&w, path, ts, n, NULL, &d) != 0) {
        fprintf(stderr, "bench: %s\n", d.msg);
        return -1;
    }
    enum { CHUNK = 1 << 20 };
    uint16_t *buf = malloc(CHUNK * sizeof *buf);
    for (size_t i = 0; i < n; i++) {
        for (uint64_t at = 0; at < ts[i].numel; at += CHUNK) {
            size_t len = ts[i].numel - at < CHUNK ? ts[i].numel - at : CHUNK;
            for (size_t k = 0; k < len; k++) {
                // Uniform in about [-0.06, 0.06], as BF16 bits.
                uint32_t r = next32();
                float f = ((float)(int32_t)r) * (0.06f / 2147483648.0f);
                uint32_t u;
                memcpy(&u, &f, 4);
                buf[k] = (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
            }
            eng_st_writer_put(w, i, at * 2, buf, len * 2, &d);
        }
    }
    free(buf);
    int rc = eng_st_writer_finish(w, true, &d);
    eng_st_writer_destroy(w);
    if (rc == 0) {
        FILE *f = fopen(done, "w");
        if (f)
            fclose(f);
    }
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_prune SHEARS_BIN WORKDIR [RUNS]\n");
        return 2;
    }
    const char *bin = argv[1], *work = argv[2];
    int runs = argc > 3 ? atoi(argv[3]) : 5;
    char model[4096], file[4096], out[4096], dst[4096];
    if (sh_path_join(model, sizeof model, work, "model-bf16") ||
        sh_path_join(file, sizeof file, model, "model.safetensors") ||
        sh_path_join(out, sizeof out, work, "pruned") ||
        sh_path_join(dst, sizeof dst, work, "copy.safetensors"))
        return 2;
    fprintf(stderr, "bench: preparing %s\n", model);
    if (generate(model) != 0)
        return 1;
    uint64_t size = 0;
    sh_file_size(file, &size);

    char *copy[] = {"/bin/cp", "--reflink=never", file, dst, NULL};
#define PRUNE(...)                                                             \
    {                                                                          \
        (char *)bin, "prune", "--model", model, "--out", out, "--no-sync",     \
            "--quiet", "--method", __VA_ARGS__, NULL                           \
    }
    char *layer[] = PRUNE("magnitude", "--sparsity", "0.5");
    char *global[] =
        PRUNE("magnitude", "--sparsity", "0.5", "--scope", "global");
    char *nm[] = PRUNE("magnitude", "--pattern", "2:4");
#undef PRUNE
    // The input's SHA-256 goes into the manifest; runs after the first find
    // it in the hash cache (keyed by inode, size, mtime, ctime). The last
    // row turns the cache off: the digest (about 1.6 GB/s with SHA-NI)
    // then runs on a second thread beside the pruning.
    char cache[4096];
    if (sh_path_join(cache, sizeof cache, work, "hash-cache"))
        return 2;
    struct {
        const char *name;
        char **argv;
        const char *cache;
        double wall[64], rss[64];
    } rows[] = {
        {"copy (cp, yardstick)", copy, NULL, {0}, {0}},
        {"magnitude, layer scope", layer, cache, {0}, {0}},
        {"magnitude, global scope", global, cache, {0}, {0}},
        {"magnitude, 2:4", nm, cache, {0}, {0}},
        {"layer scope, no hash cache", layer, "off", {0}, {0}},
    };
    int nrows = (int)(sizeof rows / sizeof rows[0]);
    if (runs < 1 || runs > 64)
        runs = 5;
    // One warm-up round puts the input in the page cache for everyone.
    for (int r = -1; r < runs; r++) {
        for (int i = 0; i < nrows; i++) {
            sh_rm_rf(out);
            unlink(dst);
            double rss,
                wall = bench_spawn(rows[i].argv,
                                   rows[i].cache ? "SHEARS_CACHE_DIR" : NULL,
                                   rows[i].cache, false, &rss);
            if (r >= 0) {
                rows[i].wall[r] = wall;
                rows[i].rss[r] = rss;
            }
        }
    }
    sh_rm_rf(out);
    unlink(dst);
    double copy_wall = bench_median(rows[0].wall, runs);
    char sz[32];
    sh_format_bytes(sz, sizeof sz, (double)size);
    printf("\nprune throughput on a %s BF16 checkpoint (%d runs, medians)\n",
           sz, runs);
    printf("%-28s %10s %12s %18s %16s\n", "", "seconds", "MB/s",
           "ratio to copy", "peak RSS / file");
    for (int i = 0; i < nrows; i++) {
        double w = bench_median(rows[i].wall, runs);
        double rss = bench_median(rows[i].rss, runs);
        printf("%-28s %10.3f %12.0f %18.2f %15.1f%%\n", rows[i].name, w,
               (double)size / w / 1e6, copy_wall / w, 100 * rss / (double)size);
    }
    printf("targets: ratio >= 0.50 of copy speed; peak RSS < 10%% of the file "
           "for layer scope\n");
    return 0;
}

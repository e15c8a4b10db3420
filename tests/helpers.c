// helpers.c: shared test helpers.
#include "tests/helpers.h"

#include "common/util.h"
#include "engine/io/dtype.h"

#include <fcntl.h>
#include <math.h>
#include <sched.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

char *th_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/shears-test-XXXXXX",
             base && base[0] ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(tmpl));
    return strdup(tmpl);
}

void th_rmtree(const char *path) { sh_rm_rf(path); }

static bool write_proc(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
    close(fd);
    return ok;
}

int th_in_tmpfs(const char *dir, const char *size,
                int (*fn)(const char *dir, void *ctx), void *ctx)
{
    sh_mkdir_p(dir);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        // The child of a fork has one thread, as unshare wants.
        char map[64], opts[64];
        uid_t uid = getuid();
        gid_t gid = getgid();
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
            _exit(255);
        snprintf(map, sizeof map, "0 %u 1", (unsigned)uid);
        if (!write_proc("/proc/self/uid_map", map) ||
            !write_proc("/proc/self/setgroups", "deny"))
            _exit(255);
        snprintf(map, sizeof map, "0 %u 1", (unsigned)gid);
        snprintf(opts, sizeof opts, "size=%s", size);
        if (!write_proc("/proc/self/gid_map", map) ||
            mount("shears-test", dir, "tmpfs", 0, opts) != 0)
            _exit(255);
        int rc = fn(dir, ctx);
        _exit(rc < 0 || rc > 254 ? 254 : rc);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) == 255)
        return -1;
    return WEXITSTATUS(status);
}

void th_fill_disk(const char *dir)
{
    char *path = th_path(dir, "filler");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    free(path);
    if (fd < 0)
        return;
    static const char block[4096];
    while (write(fd, block, sizeof block) > 0)
        ;
    while (write(fd, block, 1) > 0) // the last bytes of a partial block
        ;
    close(fd);
}

char *th_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

void th_write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    if (n)
        ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

void th_write_raw(const char *path, const char *header, int64_t len_override,
                  const void *data, size_t data_len)
{
    size_t hl = strlen(header);
    uint64_t n = len_override >= 0 ? (uint64_t)len_override : hl;
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++)
        lenbuf[i] = (unsigned char)(n >> (8 * i));
    fwrite(lenbuf, 1, 8, f);
    fwrite(header, 1, hl, f);
    if (data_len)
        fwrite(data, 1, data_len, f);
    fclose(f);
}

unsigned char *th_read_file(const char *path, size_t *len)
{
    char *buf = NULL;
    size_t n = 0;
    ck_assert_int_eq(sh_file_read(path, (size_t)1 << 34, &buf, &n), 0);
    if (len)
        *len = n;
    return (unsigned char *)buf;
}

static void write_st(const char *path, const th_tensor *ts, size_t n,
                     const char *metadata_json, bool pad)
{
    json_t *h = json_object();
    if (metadata_json)
        json_object_set_new(h, "__metadata__",
                            json_loads(metadata_json, 0, NULL));
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        eng_dtype dt;
        ck_assert_int_eq(eng_dtype_parse(ts[i].dtype, &dt), 0);
        uint64_t numel = 1;
        json_t *shape = json_array();
        for (int k = 0; k < ts[i].ndim; k++) {
            numel *= (uint64_t)ts[i].shape[k];
            json_array_append_new(shape, json_integer(ts[i].shape[k]));
        }
        uint64_t bytes = numel * eng_dtype_size(dt);
        json_object_set_new(h, ts[i].name,
                            json_pack("{s:s, s:o, s:[I,I]}", "dtype",
                                      ts[i].dtype, "shape", shape,
                                      "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + bytes)));
        off += bytes;
    }
    char *text = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    uint64_t len = strlen(text), hl = pad ? (len + 7) / 8 * 8 : len;
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++)
        lenbuf[i] = (unsigned char)(hl >> (8 * i));
    fwrite(lenbuf, 1, 8, f);
    fwrite(text, 1, len, f);
    for (uint64_t i = len; i < hl; i++)
        fputc(' ', f);
    free(text);
    for (size_t i = 0; i < n; i++) {
        eng_dtype dt;
        eng_dtype_parse(ts[i].dtype, &dt);
        uint64_t numel = 1;
        for (int k = 0; k < ts[i].ndim; k++)
            numel *= (uint64_t)ts[i].shape[k];
        if (numel)
            fwrite(ts[i].data, eng_dtype_size(dt), numel, f);
    }
    fclose(f);
}

void th_write_st(const char *path, const th_tensor *ts, size_t n,
                 const char *metadata_json)
{
    write_st(path, ts, n, metadata_json, false);
}

void th_write_st_padded(const char *path, const th_tensor *ts, size_t n)
{
    write_st(path, ts, n, NULL, true);
}

char *th_fixture(const char *rel)
{
    const char *root = getenv("SHEARS_FIXTURES");
    return th_path(root && root[0] ? root : "tests/fixtures", rel);
}

static char *slurp_fd(int fd)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 1 == cap)
            buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return buf;
}

int th_run(char **out, char **err, const char *const *args)
{
    const char *bin = getenv("SHEARS_BIN");
    if (!bin || !bin[0])
        bin = "build/shears";
    size_t n = 0;
    while (args[n])
        n++;
    char **argv = calloc(n + 2, sizeof *argv);
    argv[0] = (char *)bin;
    for (size_t i = 0; i < n; i++)
        argv[i + 1] = (char *)args[i];
    char outpath[] = "/tmp/shears-out-XXXXXX",
         errpath[] = "/tmp/shears-err-XXXXXX";
    int ofd = mkstemp(outpath), efd = mkstemp(errpath);
    ck_assert(ofd >= 0 && efd >= 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, ofd, 1);
    posix_spawn_file_actions_adddup2(&fa, efd, 2);
    pid_t pid;
    int rc = posix_spawn(&pid, bin, &fa, NULL, argv, environ);
    ck_assert_msg(rc == 0, "cannot start %s", bin);
    int status = 0;
    waitpid(pid, &status, 0);
    posix_spawn_file_actions_destroy(&fa);
    free(argv);
    lseek(ofd, 0, SEEK_SET);
    lseek(efd, 0, SEEK_SET);
    char *o = slurp_fd(ofd), *e = slurp_fd(efd);
    close(ofd);
    close(efd);
    unlink(outpath);
    unlink(errpath);
    if (out)
        *out = o;
    else
        free(o);
    if (err)
        *err = e;
    else
        free(e);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void th_randn(float *buf, size_t n, uint64_t seed)
{
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i++) {
        // Box-Muller on two xorshift draws.
        double u[2];
        for (int k = 0; k < 2; k++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            u[k] = ((s >> 11) + 0.5) / 9007199254740992.0;
        }
        buf[i] = (float)(sqrt(-2 * log(u[0])) * cos(6.283185307179586 * u[1]));
    }
}

void th_write_llama(const char *dir, int hidden, int inter, int layers,
                    int heads, int vocab)
{
    th_write_llama_gqa(dir, hidden, inter, layers, heads, heads, vocab);
}

void th_write_llama_gqa(const char *dir, int hidden, int inter, int layers,
                        int heads, int kv_heads, int vocab)
{
    int kvd = hidden / heads * kv_heads;
    char *cfg = th_path(dir, "config.json");
    char text[1024];
    int n = snprintf(text, sizeof text,
                     "{\"model_type\":\"llama\",\"architectures\":"
                     "[\"LlamaForCausalLM\"],\"hidden_size\":%d,"
                     "\"intermediate_size\":%d,\"num_hidden_layers\":%d,"
                     "\"num_attention_heads\":%d,\"num_key_value_heads\":%d,"
                     "\"vocab_size\":%d,\"rms_norm_eps\":1e-5,"
                     "\"rope_theta\":10000.0,\"hidden_act\":\"silu\","
                     "\"tie_word_embeddings\":false}",
                     hidden, inter, layers, heads, kv_heads, vocab);
    th_write_file(cfg, text, (size_t)n);
    free(cfg);
    // Tensors: names and shapes, then random data scaled by 1/sqrt(in).
    enum { MAXT = 512 };
    static char names[MAXT][96];
    th_tensor ts[MAXT];
    float *data[MAXT];
    size_t nt = 0;
#define T2(nm, a, b)                                                           \
    do {                                                                       \
        snprintf(names[nt], sizeof names[nt], "%s", nm);                       \
        ts[nt] = (th_tensor){names[nt], "F32", 2, {a, b}, NULL};               \
        data[nt] = malloc((size_t)(a) * (size_t)(b) * sizeof(float));          \
        th_randn(data[nt], (size_t)(a) * (size_t)(b), nt + 1);                 \
        for (size_t k_ = 0; k_ < (size_t)(a) * (size_t)(b); k_++)              \
            data[nt][k_] /= sqrtf((float)(b));                                 \
        ts[nt].data = data[nt];                                                \
        nt++;                                                                  \
    } while (0)
#define T1(nm, a)                                                              \
    do {                                                                       \
        snprintf(names[nt], sizeof names[nt], "%s", nm);                       \
        ts[nt] = (th_tensor){names[nt], "F32", 1, {a}, NULL};                  \
        data[nt] = malloc((size_t)(a) * sizeof(float));                        \
        for (int k_ = 0; k_ < (a); k_++)                                       \
            data[nt][k_] = 1.0f;                                               \
        ts[nt].data = data[nt];                                                \
        nt++;                                                                  \
    } while (0)
    T2("model.embed_tokens.weight", vocab, hidden);
    T2("lm_head.weight", vocab, hidden);
    T1("model.norm.weight", hidden);
    char nm[96];
    const char *att[] = {"q_proj", "k_proj", "v_proj", "o_proj"};
    for (int l = 0; l < layers; l++) {
        for (int p = 0; p < 4; p++) {
            snprintf(nm, sizeof nm, "model.layers.%d.self_attn.%s.weight", l,
                     att[p]);
            T2(nm, p == 1 || p == 2 ? kvd : hidden, hidden);
        }
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.gate_proj.weight", l);
        T2(nm, inter, hidden);
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.up_proj.weight", l);
        T2(nm, inter, hidden);
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.down_proj.weight", l);
        T2(nm, hidden, inter);
        snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", l);
        T1(nm, hidden);
        snprintf(nm, sizeof nm,
                 "model.layers.%d.post_attention_layernorm.weight", l);
        T1(nm, hidden);
    }
#undef T1
#undef T2
    char *w = th_path(dir, "model.safetensors");
    th_write_st(w, ts, nt, "{\"format\":\"pt\"}");
    free(w);
    for (size_t i = 0; i < nt; i++)
        free(data[i]);
}

void th_write_tokens(const char *path, int rows, int seqlen, int vocab)
{
    int32_t *ids = malloc((size_t)rows * (size_t)seqlen * sizeof *ids);
    uint64_t x = 0x853c49e6748fea9bull;
    for (int i = 0; i < rows * seqlen; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((x >> 33) % (uint64_t)vocab);
    }
    th_tensor t = {"tokens", "I32", 2, {rows, seqlen}, ids};
    th_write_st(path, &t, 1, NULL);
    free(ids);
}

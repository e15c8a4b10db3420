// helpers.h: what the suites share: temp dirs, hand-made safetensors
// files, running the real binary, fixtures.
#ifndef TEST_HELPERS_H
#define TEST_HELPERS_H

#include <check.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Suites, one per module (tests/test_<module>.c).
Suite *suite_common(void);
Suite *suite_dtype(void);
Suite *suite_safetensors(void);
Suite *suite_spec(void);
Suite *suite_mask(void);
Suite *suite_prune(void);
Suite *suite_net(void);
Suite *suite_grad(void);
Suite *suite_criteria(void);
Suite *suite_headers(void);
Suite *suite_tar(void);
Suite *suite_faults(void);
Suite *suite_store(void);
Suite *suite_jobs(void);
Suite *suite_methods(void);
Suite *suite_cli(void);
Suite *suite_api(void);
Suite *suite_api_checkpoints(void);
Suite *suite_api_datasets(void);
Suite *suite_api_jobs(void);
Suite *suite_api_artifacts(void);
Suite *suite_durability(void);
Suite *suite_ops(void);
Suite *suite_limits(void);
Suite *suite_structure(void);
Suite *suite_formats(void);
Suite *suite_alloc(void);

// A fresh directory under $TMPDIR; the caller frees the string and removes
// the tree with th_rmtree.
char *th_tmpdir(void);
void th_rmtree(const char *path);

// Runs fn(dir, ctx) in a child process whose dir is a tmpfs of size bytes
// ("2m") that only it sees (a user and mount namespace of its own, as
// `unshare -rm`), so a test can fill a disk. Returns fn's result: 0 for
// success, else what the child says went wrong (a line number); -1 when
// the child could not set the tmpfs up or died.
int th_in_tmpfs(const char *dir, const char *size,
                int (*fn)(const char *dir, void *ctx), void *ctx);

// Fills the filesystem holding dir with a file "filler" until it is full.
void th_fill_disk(const char *dir);

// Joins a dir and a name into a new string.
char *th_path(const char *dir, const char *name);

// Writes a raw safetensors file: the 8-byte length (len_override when
// >= 0, else strlen(header)), the header bytes, then data.
void th_write_raw(const char *path, const char *header, int64_t len_override,
                  const void *data, size_t data_len);

// Writes bytes to a file.
void th_write_file(const char *path, const void *data, size_t n);

// Reads a whole file; the caller frees it.
unsigned char *th_read_file(const char *path, size_t *len);

// A tensor for th_write_st: name, dtype name, shape, data.
typedef struct th_tensor {
    const char *name;
    const char *dtype;
    int ndim;
    int64_t shape[4];
    const void *data; // numel * dtype size bytes
} th_tensor;

// Writes a valid safetensors file with the tensors in the given order.
void th_write_st(const char *path, const th_tensor *ts, size_t n,
                 const char *metadata_json);
// The same with the header padded with spaces to a multiple of 8 bytes (as
// the reference writer does), so that the data lie aligned.
void th_write_st_padded(const char *path, const th_tensor *ts, size_t n);

// Fixture path: tests/fixtures/<rel> (SHEARS_FIXTURES overrides the root).
char *th_fixture(const char *rel);

// Runs the shears binary (SHEARS_BIN, default build/shears) with args;
// captures stdout and stderr (caller frees) and returns the exit status.
int th_run(char **out, char **err, const char *const *args);

// A Llama-family model folder with random weights (config.json and
// model.safetensors): hidden, inter, layers, heads (= kv heads), vocab.
void th_write_llama(const char *dir, int hidden, int inter, int layers,
                    int heads, int vocab);
// The same with grouped-query attention: kv_heads KV groups.
void th_write_llama_gqa(const char *dir, int hidden, int inter, int layers,
                        int heads, int kv_heads, int vocab);

// A token dataset "tokens" I32 [rows, seqlen] of random ids < vocab.
void th_write_tokens(const char *path, int rows, int seqlen, int vocab);

// Fills buf with n floats from a seeded generator, roughly N(0, 1).
void th_randn(float *buf, size_t n, uint64_t seed);

#endif

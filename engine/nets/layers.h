// net_int.h: the runner's state, shared by net.c (config, MLP, evaluation)
// and net_llama.c (the decoder). Not public.
#ifndef ENG_NET_INT_H
#define ENG_NET_INT_H

#include "engine/nets/net.h"

#define NET_MAX_LINEARS 8

typedef enum net_arch { NET_MLP, NET_LLAMA, NET_ARCH_COUNT } net_arch;

typedef enum net_act {
    ACT_RELU,
    ACT_GELU,
    ACT_GELU_TANH,
    ACT_SILU,
    ACT_TANH,
    ACT_COUNT
} net_act;

typedef struct net_block_def {
    eng_net_linear lin[NET_MAX_LINEARS];
    long bias[NET_MAX_LINEARS]; // bias tensor per linear, or -1
    size_t nlin;
    int sites;
    long norm_in, norm_post; // llama: the two RMSNorm weights
} net_block_def;

struct eng_net {
    const eng_model *m;
    net_arch arch;
    net_block_def *blocks;
    size_t nblocks;
    // mlp
    net_act act;
    int64_t in_dim, classes;
    // llama
    int64_t hidden, inter, heads, kv_heads, head_dim, vocab, window;
    double eps, theta;
    long embed, final_norm, head; // head == embed when tied
    float *rope_cos, *rope_sin;   // (rope_len, head_dim)
    int64_t rope_len;
    // Scratch for a block's intermediates, kept between calls: fresh
    // pages cost a fault each (dearly on virtual machines).
    float *scratch;
    size_t scratch_n;
};

// A scratch buffer of at least n floats (owned by n; valid until the next
// call), or NULL when out of memory.
float *net_scratch(eng_net *n, size_t count);

struct eng_net_block {
    size_t index;
    float *w[NET_MAX_LINEARS];
    float *b[NET_MAX_LINEARS];
    float *norm_in, *norm_post;
};

// Reads model tensor ti as F32 (malloc'd); non-float dtypes are an error.
int net_load_f32(const eng_net *n, size_t ti, float **out, sh_diag *d);

// The tensor called name, checked against a shape (ndim 1 or 2; b unused
// for 1); -1 with d set when absent or shaped otherwise.
long net_tensor(const eng_net *n, const char *name, int ndim, int64_t a,
                int64_t b, sh_diag *d);

// --- llama (net_llama.c)
int net_llama_open(eng_net *n, const json_t *cfg, sh_diag *d);
int net_llama_embed(eng_net *n, const eng_dataset *ds, eng_acts *out,
                    sh_diag *d);
int net_llama_forward(eng_net *n, eng_net_block *b, eng_acts *a, eng_site_fn fn,
                      void *ctx, sh_diag *d);
int net_llama_evaluate(eng_net *n, const eng_dataset *ds, const eng_acts *a,
                       eng_metric *out, sh_diag *d);
int net_llama_head(eng_net *n, const float *h, int64_t rows, float *logits,
                   const float *head_w, const float *norm_w);

// As net.h's _polled functions, for the decoder.
int net_llama_embed_polled(eng_net *n, const eng_dataset *ds, eng_acts *out,
                           const eng_hooks *h, sh_diag *d);
int net_llama_forward_polled(eng_net *n, eng_net_block *b, eng_acts *a,
                             eng_site_fn fn, void *ctx, const eng_hooks *h,
                             sh_diag *d);
int net_llama_evaluate_polled(eng_net *n, const eng_dataset *ds,
                              const eng_acts *a, const eng_hooks *h,
                              eng_metric *out, sh_diag *d);

#endif

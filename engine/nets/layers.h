// layers.h: the building blocks the families share (layers.c), and the
// state of an opened model. Below the families: net.c, mlp.c and llama.c use
// it; it uses none of them. Not public outside nets/.
#ifndef ENG_NETS_LAYERS_H
#define ENG_NETS_LAYERS_H

#include "engine/io/model.h"
#include "engine/nets/family.h"

#define NET_MAX_LINEARS 8
#define NET_MAX_AUX 2

// The activations of config.json's hidden_act.
typedef enum net_act {
    ACT_RELU,
    ACT_GELU,
    ACT_GELU_TANH,
    ACT_SILU,
    ACT_TANH,
    ACT_COUNT
} net_act;

// A tensor slot that holds no tensor (an absent bias).
#define NET_NO_TENSOR SIZE_MAX

// What a block is made of, as the family's open found it.
typedef struct net_block_def {
    eng_net_linear lin[NET_MAX_LINEARS];
    size_t bias[NET_MAX_LINEARS]; // bias tensor per linear, or NET_NO_TENSOR
    size_t nlin;
    int sites;
    size_t aux[NET_MAX_AUX]; // other tensors loaded with the block (llama:
    size_t naux;             // its two RMSNorm weights), in the family's order
} net_block_def;

struct eng_net {
    const eng_model *m;
    const eng_family *fam;
    net_block_def *blocks;
    size_t nblocks;
    int64_t vocab;   // token models, else 0
    int64_t classes; // classifiers, else 0
    // Weights in place of the checkpoint's: overlay[tensor] (numel F32,
    // borrowed from the caller) or NULL; the array is NULL until first set.
    const float **overlay;
    // mlp
    net_act act;
    int64_t in_dim;
    // llama
    int64_t hidden, inter, heads, kv_heads, head_dim, window;
    double eps, theta;
    size_t embed, final_norm, head; // head == embed when tied
    float *rope_cos, *rope_sin;     // (rope_len, head_dim)
    int64_t rope_len;
    // The head's F32 weights kept between logits calls while head_keep is
    // set (a speed measurement times the product, not the load); NULL.
    bool head_keep;
    float *head_w, *head_norm;
    // Scratch for a block's intermediates, kept between calls: fresh
    // pages cost a fault each (dearly on virtual machines).
    float *scratch;
    size_t scratch_n;
    float *gscratch; // a tensor's gradient (net_gscratch)
    size_t gscratch_n;
};

// A block's tensors as F32, in the order of its net_block_def. A lazy
// block (eng_net_block_open_lazy) holds its biases and norms; each weight
// is loaded when a product needs it and freed after (net_weight).
struct eng_net_block {
    size_t index;
    bool lazy;
    float *w[NET_MAX_LINEARS]; // (rows, cols)
    float *b[NET_MAX_LINEARS]; // (rows,) or NULL
    float *aux[NET_MAX_AUX];   // as def->aux
};

// --- tensors
//
// Each reads the overlay's values where one is set for the tensor, else
// the checkpoint's, converted to F32.

// *out = the index of the tensor called name, checked against a shape
// (ndim 1 or 2; b unused for 1) and a float dtype. SH_EFORMAT when absent
// or shaped otherwise, SH_EUNSUPPORTED for other dtypes; *out untouched.
int net_tensor_find(const eng_net *n, const char *name, int ndim, int64_t a,
                    int64_t b, size_t *out, sh_diag *d);

// *out = tensor ti as F32 (malloc'd, the caller frees it).
int net_tensor_load(const eng_net *n, size_t ti, float **out, sh_diag *d);

// out (cols,) = row `row` of the 2-D tensor ti as F32. tmp holds one row
// in the tensor's dtype (cols * dtype size bytes), for the conversion.
int net_tensor_row(const eng_net *n, size_t ti, int64_t row, float *out,
                   unsigned char *tmp, sh_diag *d);

// --- block weights

// *out = linear i's weight of b (loading it when b is lazy); give it back
// with net_weight_done (frees it when b is lazy).
int net_weight(eng_net *n, eng_net_block *b, size_t i, float **out, sh_diag *d);
void net_weight_done(eng_net_block *b, size_t i);

// y (rows, out) = x W_i^T (+ b_i) for linear i of b, polling h.
int net_block_linear(eng_net *n, eng_net_block *b, size_t i, float *y,
                     const float *x, int64_t rows, const eng_hooks *h,
                     sh_diag *d);

// --- scratch

// *out = a buffer of at least count floats, owned by n and valid until the
// next call. SH_ENOMEM (d set) when it cannot grow.
int net_scratch(eng_net *n, size_t count, float **out, sh_diag *d);

// --- activations

// *out = the activation config.json's hidden_act names (also the
// transformers alias gelu_pytorch_tanh). SH_EUNSUPPORTED (d set) for others.
int net_act_parse(const char *name, net_act *out, sh_diag *d);

float net_act_apply(net_act a, float x);
// d act(x) / dx.
float net_act_grad(net_act a, float x);

// --- the loss

// The cross-entropy of logits z (n,) against `label`: log sum exp(z) -
// z[label], in double. With dz not NULL, dz = (softmax(z) - onehot(label))
// * scale, its gradient.
double net_xent(const float *z, int64_t n, int64_t label, float *dz,
                double scale);

// --- gradients

// Whether model tensor t (NET_NO_TENSOR: none) is wanted by sink.
static inline bool net_wants(const eng_grad_sink *sink, size_t t)
{
    return t != NET_NO_TENSOR && sink->wants(sink->ctx, t);
}

// *out = a buffer of at least count floats for one tensor's gradient,
// owned by n and valid until the next call.
int net_gscratch(eng_net *n, size_t count, float **out, sh_diag *d);

// The backward of linear i of b, y = x W^T (+ b), over rows: the weight's
// and bias's gradients (dy^T x, the column sums of dy) put to sink where
// wanted; dx (rows, in) = dy W, or += with add (dx NULL: not wanted).
// Loads W when b is lazy.
int net_linear_back(eng_net *n, eng_net_block *b, size_t i, float *dx, bool add,
                    const float *dy, const float *x, int64_t rows,
                    const eng_grad_sink *sink, sh_diag *d);

#endif

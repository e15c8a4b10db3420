// net.h: models the engine can run forward, block by block, for
// calibration and evaluation. Each model family is one eng_family
// (family.h, with the values passed here: activations, linears, metrics,
// structure groups); this is the face the rest of the engine uses.
//
//   mlp    config.json {"model_type": "mlp", "layers": [...], "hidden_act"},
//          each layer "<name>.weight" (out, in) and "<name>.bias";
//          y = x W^T + b, the activation after every layer but the last.
//          Each layer is a block with one linear layer.
//   llama  LlamaForCausalLM as Hugging Face computes it (Mistral and Qwen2
//          fit): RMSNorm, rotate-half RoPE, grouped-query causal attention,
//          SwiGLU, final norm, lm_head or tied embeddings, optional q/k/v
//          biases. Each decoder layer is a block of seven linear layers
//          reading four inputs ("sites"): q,k,v read the normed residual;
//          o the attention output; gate, up the second normed residual;
//          down the SwiGLU product.
//
// Activations are F32 (rows, width); for llama, rows = sequences x tokens.
// Weights are read tensor by tensor (converted from their dtype) when a
// block is loaded, so memory is one block, not the model; a weight overlay
// stands in for a tensor's stored values (a block pruned in memory).
//
// Errors: each int function returns 0 or an SH_E* code with d set where
// the error is found; SH_ECANCELED (a poll said stop) sets no diag. An eng_net
// is used by one thread at a time.
#ifndef ENG_NET_H
#define ENG_NET_H

#include "engine/hooks.h"
#include "engine/io/dataset.h"
#include "engine/io/model.h"
#include "engine/nets/family.h"

// Opens a runnable model (m must outlive it); SH_EUNSUPPORTED (saying why)
// for others. *out is untouched on failure.
int eng_net_open(eng_net **out, const eng_model *m, sh_diag *d);
// Frees n and what it holds (not the overlay's values); NULL is a no-op.
void eng_net_close(eng_net *n);

// The name of n's family ("mlp", "llama").
const char *eng_net_family(const eng_net *n);

// True when arch (eng_model_arch) names a family eng_net can run.
bool eng_net_runs(const char *arch);

// The dataset kind a runnable architecture eats.
eng_dataset_kind eng_net_kind_for(const char *arch);

// The dataset kind the model eats (tokens or inputs), and checks that a
// dataset fits it (ids inside the vocabulary, widths).
eng_dataset_kind eng_net_input_kind(const eng_net *n);
int eng_net_check_dataset(const eng_net *n, const eng_dataset_info *di,
                          sh_diag *d);
int64_t eng_net_vocab(const eng_net *n);   // token models, else 0
int64_t eng_net_classes(const eng_net *n); // classifiers, else 0

// Rewrites config.json (cfg, in place) for a model shrunk to shape, as the
// family says (family.h).
int eng_net_config_rewrite(const eng_net *n, const eng_net_shape *shape,
                           json_t *cfg, sh_diag *d);

// --- blocks and their linear layers

size_t eng_net_blocks(const eng_net *n);
size_t eng_net_linears(const eng_net *n, size_t block,
                       const eng_net_linear **out);
int eng_net_sites(const eng_net *n, size_t block);

// The block and linear of a model tensor, or false.
bool eng_net_find_linear(const eng_net *n, size_t tensor, size_t *block,
                         size_t *linear);

// The structure groups of a block (family.h): writes up to cap of them to
// out and returns how many there are (at most ENG_NET_MAX_GROUPS).
size_t eng_net_groups(const eng_net *n, size_t block, eng_net_group *out,
                      size_t cap);
const char *eng_group_kind_name(eng_group_kind k); // "head", "channel", ...

// Opens block: reads its tensors as F32 (through the overlay). *out is the
// caller's to close with eng_net_block_close, untouched on failure.
int eng_net_block_open(eng_net *n, size_t block, eng_net_block **out,
                       sh_diag *d);
// The same holding only its biases and norms: each weight is loaded when
// a product needs it and freed after (memory: one weight at a time, each
// converted again at every use).
int eng_net_block_open_lazy(eng_net *n, size_t block, eng_net_block **out,
                            sh_diag *d);
void eng_net_block_close(eng_net_block *b);

// The F32 weight (rows, cols) of linear i, which pruning may rewrite.
float *eng_net_block_weight(eng_net_block *b, size_t i);
// The F32 bias (rows,) of linear i, or NULL when it has none.
float *eng_net_block_bias(eng_net_block *b, size_t i);
// Adds delta (rows,) to linear i's bias, making a zero one first where it
// has none; the block's forward pass then applies it.
int eng_net_block_bias_add(eng_net_block *b, size_t i, const float *delta,
                           int64_t rows, sh_diag *d);

// The name prefix of block's tensors ("model.layers.3."), false for
// families whose blocks cannot be removed (their tensors are not renamed).
bool eng_net_block_prefix(const eng_net *n, size_t block, char *buf,
                          size_t size);
// The linear of every block whose rows are the attention's query width,
// or -1 (no attention).
int eng_net_query_linear(const eng_net *n);

// --- the weight overlay
//
// While set, values (the tensor's numel F32, row-major) stand in for model
// tensor `tensor` wherever n loads it: block weights and biases, norms, the
// embedding, the head. values is borrowed: it must stay valid and unchanged
// until cleared or n is closed. Setting again replaces; SH_EINVAL for a
// tensor index outside the model, SH_ENOMEM.
int eng_net_overlay_set(eng_net *n, size_t tensor, const float *values,
                        sh_diag *d);
// The checkpoint's values again; a tensor without an overlay is a no-op.
void eng_net_overlay_clear(eng_net *n, size_t tensor);

// --- running

// Frees a's buffer and sets a->x to NULL; a itself is the caller's.
void eng_acts_deinit(eng_acts *a);
// Copies src into dst, reusing dst's buffer when it is large enough.
int eng_acts_copy(eng_acts *dst, const eng_acts *src, sh_diag *d);

// The first `rows` dataset rows as the first block's input.
int eng_net_embed(eng_net *n, const eng_dataset *ds, eng_acts *out, sh_diag *d);

// Runs one block over a (in place; width may change).
int eng_net_block_forward(eng_net *n, eng_net_block *b, eng_acts *a,
                          sh_diag *d);

// The metric over a dataset (eng_metric, family.h).
int eng_net_evaluate(eng_net *n, const eng_dataset *ds, const eng_hooks *h,
                     eng_metric *out, sh_diag *d);

// Blocks from..to-1 over a (in place), and the metric of ds from block
// `from` on, a holding that block's input for ds's rows (a is run over,
// in place). With a from eng_net_embed and blocks before `from` run by
// eng_net_run_blocks, eng_net_evaluate_from is eng_net_evaluate's number
// exactly: a sweep that changes only later blocks runs the earlier ones
// once.
int eng_net_run_blocks(eng_net *n, size_t from, size_t to, eng_acts *a,
                       const eng_hooks *h, sh_diag *d);
int eng_net_evaluate_from(eng_net *n, const eng_dataset *ds, size_t from,
                          eng_acts *a, const eng_hooks *h, eng_metric *out,
                          sh_diag *d);

// The speed of the forward pass: the first rows of ds (at most 8 token
// rows, 4096 input rows) through the embedding, every block and the head
// (logits), `passes` times after one warm-up, with every block's weights
// loaded once beforehand (as a runtime holds them). *per_s is the median
// rate in tokens (token models) or samples per second.
int eng_net_speed(eng_net *n, const eng_dataset *ds, int passes,
                  const eng_hooks *h, double *per_s, sh_diag *d);

// Logits (seqlen, vocab) of one token row, for tests against reference
// logits. out is malloc'd.
int eng_net_logits(eng_net *n, const int32_t *ids, int64_t seqlen, float **out,
                   sh_diag *d);

// --- gradients (family.h: loss_backward, backward, embed_backward)
//
// Each puts the row's gradients to a sink (family.h: eng_grad_sink);
// run/grad.c drives them a dataset row at a time.

// The model tensors block reads (weights, biases, norms), and those
// outside the blocks (embedding, final norm, lm_head): up to cap written
// to out, the count returned.
size_t eng_net_block_tensors(const eng_net *n, size_t block, size_t *out,
                             size_t cap);
size_t eng_net_head_tensors(const eng_net *n, size_t *out, size_t cap);
// The embedding's tensor when lm_head is tied to it (its gradient comes
// whole from the head, then by rows from the input), else SIZE_MAX.
size_t eng_net_tied_embedding(const eng_net *n);
// The one row's loss of the last block's output a, and dy = d loss / d a
// (a->rows, a->width); the head's gradients put.
int eng_net_loss_backward(eng_net *n, const eng_dataset *row, const eng_acts *a,
                          float *dy, const eng_grad_sink *sink, double *loss,
                          sh_diag *d);
// Block b's backward from its input in: dy, its output's gradient, becomes
// its input's; b's gradients put.
int eng_net_block_backward(eng_net *n, eng_net_block *b, const eng_acts *in,
                           eng_acts *dy, const eng_grad_sink *sink,
                           const eng_hooks *h, sh_diag *d);
// The embedding's gradient from the first block's input gradient dy
// (token models; nothing for others).
int eng_net_embed_backward(eng_net *n, const eng_dataset *row, const float *dy,
                           const eng_grad_sink *sink, sh_diag *d);

// --- running models with polls
//
// The embedding, copy and forward pass above, polling h between pieces of the
// work (rows of the copies and products, attention heads, positions of the
// metric). SH_ECANCELED leaves the output's values undefined; its buffer, if
// any, is still the caller's to free (eng_acts_deinit). With h NULL each is the
// function of the same name without _polled.
int eng_net_embed_polled(eng_net *n, const eng_dataset *ds, eng_acts *out,
                         const eng_hooks *h, sh_diag *d);
int eng_acts_copy_polled(eng_acts *dst, const eng_acts *src, const eng_hooks *h,
                         sh_diag *d);
int eng_net_block_forward_polled(eng_net *n, eng_net_block *b, eng_acts *a,
                                 const eng_hooks *h, sh_diag *d);
// A statistics pass over one block (family.h, stats): fn sees each site's
// input up to the one it answers false to; a is unchanged.
int eng_net_block_stats_polled(eng_net *n, eng_net_block *b, const eng_acts *a,
                               eng_site_fn fn, void *ctx, const eng_hooks *h,
                               sh_diag *d);

#endif

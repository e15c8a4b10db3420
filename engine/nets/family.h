// family.h: the model-family interface, and the values that cross it
// (activations, linear layers, metrics, structure groups).
//
// A family (mlp.c, llama.c) is one const eng_family: the architectures it
// accepts and the functions that parse its config and run it. net.c keeps
// the table of families, looks one up by architecture name, and drives the
// block loop and evaluation through it. Families build on layers.c and never
// call net.c. Adding a family is a file and a row in net.c's table.
#ifndef ENG_NETS_FAMILY_H
#define ENG_NETS_FAMILY_H

#include "common/err.h"
#include "engine/hooks.h"
#include "engine/io/dataset.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct eng_net eng_net;             // an opened model (layers.h)
typedef struct eng_net_block eng_net_block; // one block's weights, as F32

// A linear layer of a block: y = x W^T (+ b), W (rows, cols).
typedef struct eng_net_linear {
    size_t tensor; // model tensor index of its weight
    int site;      // which input of the block it reads
    int64_t rows, cols;
} eng_net_linear;

// Activations, F32 (rows, width); for token models rows = seqs * seqlen.
typedef struct eng_acts {
    float *x; // (rows, width)
    int64_t rows, width;
    int64_t seqs, seqlen; // token models: rows = seqs * seqlen
    bool borrowed; // x is not ours to free or change (the dataset's rows):
                   // a forward pass writes a new buffer
} eng_acts;

// Called with each site's input during a statistics pass: X (rows, cols).
// Returns false when the caller wants no later site of the block: the pass
// stops there.
typedef bool (*eng_site_fn)(void *ctx, int site, const float *x, int64_t rows,
                            int64_t cols);

// The metric over a dataset: perplexity for token models (exp of the mean
// next-token NLL over positions 1..T-1 of every row), top-1 accuracy for
// classifiers (with the mean cross-entropy as loss).
typedef struct eng_metric {
    const char *name; // "perplexity" or "accuracy"
    double value;
    double loss; // mean NLL / cross-entropy
} eng_metric;

// --- structure groups
//
// The units a structured shrink may remove from a block, as the family
// defines them. A group kind comes `count` times in the block; unit u
// spans, for each of its spans, rows (with their bias entries) or columns
// [u * size, (u + 1) * size) of one linear: of this block, or with `next`
// of the next block (an mlp's hidden units: the layer's rows and the next
// layer's columns). The `consumer` span is the one whose columns read the
// unit's output: data-aware criteria weigh those columns by statistics of
// that linear's input, and compensation adds to that linear's bias.
// ENG_GROUP_BLOCK is the whole block (no spans: the block is skipped).
typedef enum eng_group_kind {
    ENG_GROUP_BLOCK,   // the block itself
    ENG_GROUP_HEAD,    // an attention (query) head
    ENG_GROUP_KV_HEAD, // a key/value head and the query heads that share it
    ENG_GROUP_CHANNEL, // a hidden channel between two linears
    ENG_GROUP_COUNT
} eng_group_kind;

typedef struct eng_group_span {
    int linear;   // index of the linear in its block
    bool cols;    // its columns, else its rows and bias entries
    bool next;    // the linear is the next block's
    int64_t size; // rows or columns per unit
} eng_group_span;

#define ENG_GROUP_MAX_SPANS 4

typedef struct eng_net_group {
    eng_group_kind kind;
    int64_t count;
    int nspans;
    eng_group_span span[ENG_GROUP_MAX_SPANS];
    int consumer; // the span reading the unit's output, or -1
} eng_net_group;

#define ENG_NET_MAX_GROUPS 8

// The most model tensors one block reads (eng_net_block_tensors), and
// those outside the blocks (eng_net_head_tensors).
#define ENG_NET_MAX_BLOCK_TENSORS 24
#define ENG_NET_MAX_HEAD_TENSORS 4

// What a structured shrink leaves in every block (the same in each), for
// the family's config rewrite.
typedef struct eng_net_shape {
    int64_t blocks;                // blocks kept
    const bool *block_gone;        // (the input's blocks,) the removed ones
    int64_t kept[ENG_GROUP_COUNT]; // units of each group kind kept per block
    bool bias_attention, bias_mlp; // compensation biases were added
} eng_net_shape;

// --- gradients
//
// Where a backward pass puts each tensor's gradient for the row at hand:
// once per tensor and row (an embedding tied to the head: its head part
// whole, then its token rows), as soon as it is known, so no more than one
// tensor's gradient is held at a time.
typedef struct eng_grad_sink {
    void *ctx;
    // Whether model tensor t's gradient is wanted (else it is not computed).
    bool (*wants)(void *ctx, size_t t);
    // The row's gradient of model tensor t (numel F32).
    int (*put)(void *ctx, size_t t, const float *g, sh_diag *d);
    // The row's gradient of `count` distinct rows idx of the 2-D tensor t
    // (count x cols F32, in idx's order); its other rows get nothing.
    int (*put_rows)(void *ctx, size_t t, const int64_t *idx, size_t count,
                    const float *g, sh_diag *d);
} eng_grad_sink;

// --- the interface
//
// Every function pointer is set (no NULL) unless its comment says it may be
// NULL. All return 0 or an SH_E* code with d set where the error is found;
// SH_ECANCELED (a poll of h said stop) sets no diag. h may be NULL (never
// cancelled). They run on the calling thread and touch only n.
typedef struct eng_family {
    const char *name;         // "mlp", "llama"
    const char *const *archs; // the architectures it accepts, NULL-terminated
    eng_dataset_kind kind;    // the dataset kind it eats

    // Parses config.json into n (n->m is set, n->fam is this family):
    // the blocks, their linears and other tensors, n->vocab or n->classes.
    // On failure n holds what it parsed; close frees it.
    int (*open)(eng_net *n, const json_t *cfg, sh_diag *d);
    // Frees what open and the other functions stored in n (not n).
    void (*close)(eng_net *n);

    // Checks that a dataset of the right kind fits the model (widths).
    int (*check_dataset)(const eng_net *n, const eng_dataset_info *di,
                         sh_diag *d);
    // The first block's input from the dataset's rows; out is malloc'd.
    int (*embed)(eng_net *n, const eng_dataset *ds, eng_acts *out,
                 const eng_hooks *h, sh_diag *d);
    // Runs block b over a in place (width may change).
    int (*forward)(eng_net *n, eng_net_block *b, eng_acts *a,
                   const eng_hooks *h, sh_diag *d);
    // A statistics pass: runs block b over a as forward does, showing fn
    // each site's input in order, up to the site fn answers false to
    // (nothing after it is computed); a is left as it was.
    int (*stats)(eng_net *n, eng_net_block *b, const eng_acts *a,
                 eng_site_fn fn, void *ctx, const eng_hooks *h, sh_diag *d);
    // The metric of the last block's output a over ds.
    int (*metric)(eng_net *n, const eng_dataset *ds, const eng_acts *a,
                  const eng_hooks *h, eng_metric *out, sh_diag *d);
    // Logits (a->rows, n->vocab) of the last block's output; NULL for
    // families without a language-model head.
    int (*logits)(eng_net *n, const eng_acts *a, float *out, sh_diag *d);

    // Writes the structure groups of block into out (up to cap) and returns
    // how many the block has. Cannot fail.
    size_t (*groups)(const eng_net *n, size_t block, eng_net_group *out,
                     size_t cap);
    // Writes the name prefix of block's tensors ("model.layers.3.") into
    // buf; NULL for families whose blocks cannot be removed.
    void (*block_prefix)(const eng_net *n, size_t block, char *buf,
                         size_t size);
    // The linear whose rows are the attention's query width (each row
    // costs 4 FLOPs per context position: scores and weighted sum), or -1.
    int query_linear;
    // Rewrites config.json (cfg, in place) for a model shrunk to shape.
    // May be NULL: the family's config names no width (an mlp's widths
    // are its tensors'). SH_EUNSUPPORTED where the family's config cannot
    // say it (biases a model type never loads).
    int (*config_rewrite)(const eng_net *n, const eng_net_shape *shape,
                          json_t *cfg, sh_diag *d);

    // --- gradients (run/grad.c drives them, one dataset row at a time)
    //
    // Each function puts every wanted tensor's gradient for the row to the
    // sink as soon as it is known (eng_grad_sink). The loss is the
    // metric's: a token row's mean next-token NLL over positions 1..T-1, a
    // classifier row's cross-entropy.

    // The loss of the last block's output a for the one row of `row`, and
    // dy (a->rows, a->width) = d loss / d a; the head's tensors' gradients
    // (final norm, lm_head or the tied embedding's head part) put.
    int (*loss_backward)(eng_net *n, const eng_dataset *row, const eng_acts *a,
                         float *dy, const eng_grad_sink *sink, double *loss,
                         sh_diag *d);
    // Block b backward: in is its input as forward got it, dy its output's
    // gradient (in->rows, the output's width), replaced by its input's
    // (in->width; dy->x may be reallocated). Block b's activations are
    // recomputed from in (nothing is kept from the forward pass); b may be
    // lazy (eng_net_block_open_lazy): one weight in memory at a time.
    int (*backward)(eng_net *n, eng_net_block *b, const eng_acts *in,
                    eng_acts *dy, const eng_grad_sink *sink, const eng_hooks *h,
                    sh_diag *d);
    // Puts the embedding's gradient from the first block's input gradient
    // dy: the rows of the row's tokens (put_rows). NULL where the input
    // goes in as it is (an mlp's features).
    int (*embed_backward)(eng_net *n, const eng_dataset *row, const float *dy,
                          const eng_grad_sink *sink, sh_diag *d);
    // The tensors outside the blocks that the model reads (embedding, final
    // norm, lm_head): writes up to cap of them and returns how many.
    size_t (*head_tensors)(const eng_net *n, size_t *out, size_t cap);
} eng_family;

extern const eng_family eng_family_mlp;   // mlp.c
extern const eng_family eng_family_llama; // llama.c

#endif

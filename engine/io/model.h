// model.h: a checkpoint as a set of named files.
//
// A model is either one .safetensors file, or a Hugging Face folder:
// config.json, weights as model.safetensors or as shards listed by
// model.safetensors.index.json, and any other files (tokenizer, generation
// config, ...), which the engine copies through unchanged. Its tensors are
// the union of the weight files' tensors, in file-name then offset order.
//
// Opening validates every weight file (see safetensors.h), the index against
// the shards (every tensor of the map in its shard, every shard tensor in
// the map, no name twice) and config.json as a JSON object.
#ifndef ENG_MODEL_H
#define ENG_MODEL_H

#include "common/err.h"
#include "engine/io/safetensors.h"

#include <jansson.h>
#include <stdint.h>

// The longest file name inside a model: its path from the model's top,
// '/'-separated, in bytes (so every component fits a file system's 255).
#define ENG_MODEL_NAME_MAX 255

typedef enum eng_file_role {
    ENG_FILE_WEIGHTS, // a safetensors file holding model tensors
    ENG_FILE_INDEX,   // model.safetensors.index.json
    ENG_FILE_CONFIG,  // config.json
    ENG_FILE_OTHER,   // copied through
    ENG_FILE_ROLE_COUNT
} eng_file_role;

typedef struct eng_model_file {
    char *name; // relative name in the model, '/'-separated
    char *path; // where its bytes are
    uint64_t bytes;
    eng_file_role role;
    eng_st *st; // open reader for ENG_FILE_WEIGHTS, else NULL
} eng_model_file;

// A file given by name and location (the service's blobs).
typedef struct eng_file_ref {
    const char *name;
    const char *path;
} eng_file_ref;

typedef struct eng_model eng_model;

// Opens a .safetensors file (its output name is model.safetensors) or a
// model folder (regular files, symlinks followed, dot-directories skipped).
int eng_model_open(eng_model **out, const char *path, sh_diag *d);

// Opens a model from files given by name. Names must be relative and plain,
// at most ENG_MODEL_NAME_MAX bytes, and no name may be a folder of another
// ("x" and "x/y").
int eng_model_open_files(eng_model **out, const eng_file_ref *refs, size_t n,
                         sh_diag *d);

void eng_model_close(eng_model *m);

// Checks one name of a file in a model: relative, plain (no "..", ".",
// empty segments, control characters, backslashes), at most
// ENG_MODEL_NAME_MAX bytes. SH_EINVAL with the reason in d.
int eng_model_name_check(const char *name, sh_diag *d);

// Checks a set of names as one folder tree: none twice, none a folder of
// another. Sorts names (the pointers) in place. SH_EINVAL naming the
// offender.
int eng_model_names_check(const char **names, size_t n, sh_diag *d);

size_t eng_model_file_count(const eng_model *m);
const eng_model_file *eng_model_file_at(const eng_model *m, size_t i);

// Tensors across all weight files.
size_t eng_model_tensor_count(const eng_model *m);
const eng_tensor_info *eng_model_tensor(const eng_model *m, size_t i);

// The weight file (index into files) and position within it of tensor i.
void eng_model_tensor_loc(const eng_model *m, size_t i, size_t *file,
                          size_t *index);

// Index of the tensor called name, or -1.
long eng_model_find(const eng_model *m, const char *name);

// The parsed config.json (borrowed), or NULL when there is none.
const json_t *eng_model_config(const eng_model *m);

// The architecture: config's model_type when present ("llama", "mlp", ...),
// otherwise a guess from tensor names, otherwise "unknown".
const char *eng_model_arch(const eng_model *m);

// Total bytes of all files, and of all tensors.
uint64_t eng_model_bytes(const eng_model *m);

#endif

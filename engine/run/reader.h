// reader.h: the tensor reader of the streaming driver (not public).
#ifndef ENG_READER_H
#define ENG_READER_H

#include "engine/formats/output.h"
#include "engine/io/model.h"

// --- the tensor reader (reader.c)

// A tensor the reader went through, and what `prepare` found on it.
typedef struct eng_loaded {
    size_t ti;                 // model tensor index
    const unsigned char *data; // its bytes when asked for, else NULL;
                               // valid until released
    int rc;                    // the read's (or prepare's) result
    sh_diag d;                 // the reason when rc != 0
    bool has_thr;              // prepare found a threshold:
    eng_threshold thr;         //   this one, for the plan's count
    uint64_t zeros;            // prepare counted the tensor's zeros
    unsigned char *scratch;    // ENG_STREAM_CHUNK bytes for prepare, owned
                               // by the reader's thread
} eng_loaded;

// On the reader's thread: whether tensor ti must be in memory whole.
typedef bool (*eng_bytes_fn)(void *ctx, size_t ti);

// Runs on the reader's thread for each tensor, after it was read (if it
// was). Must not call hooks; returns 0 or a code with l->d set.
typedef int (*eng_prepare_fn)(void *ctx, eng_loaded *l);

typedef struct eng_reader eng_reader;

// Starts going through the tensors listed in order (n of them), reading
// those want_bytes asks for into buffers of buf_bytes (allocated on first
// need), on a helper thread when threaded.
int eng_reader_start(eng_reader **out, const eng_model *m, const size_t *order,
                     size_t n, uint64_t buf_bytes, bool threaded,
                     eng_bytes_fn want_bytes, eng_prepare_fn prepare, void *ctx,
                     sh_diag *d);

// The next tensor of the order (blocking), or NULL after the last.
eng_loaded *eng_reader_next(eng_reader *r);

// Gives a tensor's buffer back; call before the next eng_reader_next.
void eng_reader_release(eng_reader *r, eng_loaded *l);

// Stops the helper (also mid-way) and frees everything.
void eng_reader_stop(eng_reader *r);

#endif

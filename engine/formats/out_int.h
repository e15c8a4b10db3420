// out_int.h: the output folder's state, shared by output.c (the folder)
// and the format writers (dense.c). Not public.
#ifndef ENG_OUT_INT_H
#define ENG_OUT_INT_H

#include "engine/formats/format.h"
#include "engine/formats/output.h"

struct eng_out {
    const eng_model *m;
    const eng_options *o;
    const eng_format *fmt;
    size_t *first_out;       // per model tensor: its first output in its file
    eng_st_writer **writers; // per model file; NULL for non-weight files
    size_t nfiles;
    unsigned char *scratch[2]; // OUT_CHUNK bytes each, reused by every write
};

// Chunk buffers are allocated once per run: fresh pages cost a fault each,
// and glibc maps blocks this large anew on every malloc.
#define OUT_CHUNK ((size_t)1 << 20)

#endif

// out_int.h: the output folder's state, shared by output.c (the folder)
// and the format writers (dense.c). Not public.
#ifndef ENG_OUT_INT_H
#define ENG_OUT_INT_H

#include "engine/formats/format.h"
#include "engine/formats/output.h"

struct eng_out {
    const eng_plan *plan;
    const eng_model *m;
    const eng_options *o;
    const eng_format *fmt;
    size_t *first_out;       // per model tensor: its first output in its file
    eng_st_writer **writers; // per model file; NULL for non-weight files
    size_t nfiles;
    unsigned char *scratch[2]; // OUT_CHUNK bytes each, reused by every write
    // output.masks: masks.safetensors, and each tensor's mask in it (-1:
    // none, not a target).
    eng_st_writer *masks;
    long *mask_of;
};

// The masks file's name in the output folder.
#define ENG_MASKS_NAME "masks.safetensors"

// Chunk buffers are allocated once per run: fresh pages cost a fault each,
// and glibc maps blocks this large anew on every malloc.
#define OUT_CHUNK ((size_t)1 << 20)

// Whether the element at p is zero (either sign for the float types).
static inline bool eng_is_zero(const unsigned char *p, eng_dtype dt)
{
    switch (dt) {
    case ENG_DTYPE_F16:
    case ENG_DTYPE_BF16: {
        uint16_t h;
        memcpy(&h, p, 2);
        return (h & 0x7fffu) == 0;
    }
    case ENG_DTYPE_F32: {
        uint32_t u;
        memcpy(&u, p, 4);
        return (u & 0x7fffffffu) == 0;
    }
    case ENG_DTYPE_F64: {
        uint64_t u;
        memcpy(&u, p, 8);
        return (u & 0x7fffffffffffffffull) == 0;
    }
    default:
        for (size_t i = 0; i < eng_dtype_size(dt); i++)
            if (p[i])
                return false;
        return true;
    }
}

#endif

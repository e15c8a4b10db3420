// reader.c: loads tensors, in a given order, into one of two buffers on a
// helper thread, so reading a tensor (and the `prepare` work on it, such as
// finding its threshold) overlaps with the caller's work on the previous
// one. Without a thread it does the same inline.
//
// Slot life: FREE -> FILLING (reader) -> READY -> TAKEN (caller) -> FREE.
// Slot k % 2 holds the k-th tensor of the order, so the caller receives
// tensors in order and the reader is at most one tensor ahead.
#include "engine/run/reader.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef enum slot_state {
    SLOT_FREE,
    SLOT_FILLING,
    SLOT_READY,
    SLOT_TAKEN
} slot_state;

typedef struct slot {
    eng_loaded l;
    unsigned char *buf;
    slot_state state;
} slot;

// The reader thread's chunk buffer, shared by both slots (one is filled at
// a time), allocated once.

struct eng_reader {
    const eng_model *m;
    const size_t *order;
    size_t n;
    uint64_t buf_bytes;
    eng_bytes_fn want_bytes;
    eng_prepare_fn prepare;
    void *ctx;
    slot slots[2];
    unsigned char *scratch; // ENG_STREAM_CHUNK bytes for prepare
    size_t taken;           // tensors handed to the caller so far
    bool threaded, stop;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void fill(eng_reader *r, slot *s, size_t k)
{
    size_t file, idx;
    s->l.ti = r->order[k];
    s->l.data = NULL;
    s->l.has_thr = false;
    s->l.zeros = 0;
    s->l.scratch = r->scratch;
    s->l.rc = 0;
    sh_diag_clear(&s->l.d);
    if (!r->want_bytes || r->want_bytes(r->ctx, s->l.ti)) {
        if (!s->buf && !(s->buf = malloc(r->buf_bytes ? r->buf_bytes : 1))) {
            s->l.rc = sh_diag_set(&s->l.d, SH_ENOMEM, "",
                                  "out of memory for a %llu-byte tensor",
                                  (unsigned long long)r->buf_bytes);
            return;
        }
        eng_model_tensor_loc(r->m, s->l.ti, &file, &idx);
        s->l.rc = eng_st_read(eng_model_file_at(r->m, file)->st, idx, s->buf,
                              &s->l.d);
        s->l.data = s->buf;
    }
    if (s->l.rc == 0 && r->prepare)
        s->l.rc = r->prepare(r->ctx, &s->l);
}

static void *run(void *arg)
{
    eng_reader *r = arg;
    for (size_t k = 0; k < r->n; k++) {
        slot *s = &r->slots[k % 2];
        pthread_mutex_lock(&r->mu);
        while (s->state != SLOT_FREE && !r->stop)
            pthread_cond_wait(&r->cv, &r->mu);
        if (r->stop) {
            pthread_mutex_unlock(&r->mu);
            break;
        }
        s->state = SLOT_FILLING;
        pthread_mutex_unlock(&r->mu);
        fill(r, s, k);
        pthread_mutex_lock(&r->mu);
        s->state = SLOT_READY;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
    return NULL;
}

int eng_reader_start(eng_reader **out, const eng_model *m, const size_t *order,
                     size_t n, uint64_t buf_bytes, bool threaded,
                     eng_bytes_fn want_bytes, eng_prepare_fn prepare, void *ctx,
                     sh_diag *d)
{
    eng_reader *r = calloc(1, sizeof *r);
    if (!r)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    *r = (eng_reader){.m = m,
                      .order = order,
                      .n = n,
                      .buf_bytes = buf_bytes,
                      .want_bytes = want_bytes,
                      .prepare = prepare,
                      .ctx = ctx,
                      .threaded = threaded && n > 1};
    if (!(r->scratch = malloc(ENG_STREAM_CHUNK))) {
        free(r);
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    }
    if (r->threaded) {
        pthread_mutex_init(&r->mu, NULL);
        pthread_cond_init(&r->cv, NULL);
        if (pthread_create(&r->thread, NULL, run, r) != 0) {
            pthread_mutex_destroy(&r->mu);
            pthread_cond_destroy(&r->cv);
            r->threaded = false; // carry on inline
        }
    }
    *out = r;
    return 0;
}

eng_loaded *eng_reader_next(eng_reader *r)
{
    if (r->taken >= r->n)
        return NULL;
    size_t k = r->taken++;
    if (!r->threaded) {
        fill(r, &r->slots[0], k);
        return &r->slots[0].l;
    }
    slot *s = &r->slots[k % 2];
    pthread_mutex_lock(&r->mu);
    while (s->state != SLOT_READY)
        pthread_cond_wait(&r->cv, &r->mu);
    s->state = SLOT_TAKEN;
    pthread_mutex_unlock(&r->mu);
    return &s->l;
}

void eng_reader_release(eng_reader *r, eng_loaded *l)
{
    if (!r->threaded)
        return;
    slot *s = (slot *)((char *)l - offsetof(slot, l));
    pthread_mutex_lock(&r->mu);
    s->state = SLOT_FREE;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

void eng_reader_stop(eng_reader *r)
{
    if (!r)
        return;
    if (r->threaded) {
        pthread_mutex_lock(&r->mu);
        r->stop = true;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
    }
    free(r->slots[0].buf);
    free(r->slots[1].buf);
    free(r->scratch);
    free(r);
}

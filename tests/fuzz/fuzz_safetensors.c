// fuzz_safetensors.c: the safetensors checker and reader on any bytes.
//
// The same bytes go through the stream check (fed in pieces whose sizes
// the input chooses), the header parser, and the mapped reader on a file;
// the three must agree on whether the file is valid, and a valid file's
// tensors must read back within its bounds.
#include "engine/io/safetensors.h"

#include <assert.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(path, sizeof path, "/dev/shm/fuzz-st-%d", (int)getpid());
    if (access("/dev/shm", W_OK) != 0)
        snprintf(path, sizeof path, "/tmp/fuzz-st-%d", (int)getpid());
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t n)
{
    if (n < 1)
        return 0;
    // The first byte picks the piece size of the stream check.
    size_t step = 1 + (size_t)data[0] * 7;
    data++;
    n--;
    eng_st_check c;
    eng_st_check_init(&c);
    c.max_tensors = 64;
    sh_diag d;
    int rc = 0;
    for (size_t at = 0; at < n && rc == 0; at += step)
        rc =
            eng_st_check_feed(&c, data + at, n - at < step ? n - at : step, &d);
    if (rc == 0)
        rc = eng_st_check_finish(&c, &d);
    bool stream_ok = rc == 0;
    size_t tensors = stream_ok ? c.h.count : 0;
    eng_st_check_deinit(&c);

    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return 0;
    bool written = write(fd, data, n) == (ssize_t)n;
    close(fd);
    eng_st *st = NULL;
    if (written && eng_st_open(&st, path, &d) == 0) {
        const eng_st_header *h = eng_st_header_of(st);
        // The stream check refuses more than 64 tensors; the reader does not.
        assert(!stream_ok || h->count == tensors);
        assert(h->count > 64 || stream_ok);
        for (size_t i = 0; i < h->count; i++) {
            const eng_tensor_info *t = &h->tensors[i];
            assert(t->end >= t->begin && h->data_start + t->end <= n);
            size_t bytes = (size_t)(t->end - t->begin);
            unsigned char *buf = malloc(bytes ? bytes : 1);
            if (buf && eng_st_read(st, i, buf, &d) == 0 && bytes)
                assert(memcmp(buf, data + h->data_start + t->begin, bytes) ==
                       0);
            free(buf);
        }
        eng_st_close(st);
    } else {
        assert(!stream_ok || !written);
    }
    unlink(path);
    return 0;
}

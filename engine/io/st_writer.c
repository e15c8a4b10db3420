// st_writer.c: writes a safetensors file whose layout is fixed up front,
// so tensors can arrive in any order (block by block for LLM methods).
#include "engine/io/safetensors.h"

#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct eng_st_writer {
    char *path;
    int fd;
    size_t count;
    uint64_t data_start;
    uint64_t *begin;   // (count,) offsets in the data area
    uint64_t *size;    // (count,) bytes
    uint64_t *written; // (count,) bytes written so far
    bool created;      // we made the file, so we remove it unless finished
    bool finished;
};

static json_t *header_json(const eng_tensor_info *ts, size_t n,
                           const json_t *metadata, const uint64_t *begin)
{
    json_t *root = json_object();
    json_t *meta = metadata ? json_deep_copy(metadata) : json_object();
    if (!root || !meta)
        goto fail;
    if (!json_object_get(meta, "format"))
        json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(root, "__metadata__", meta);
    meta = NULL;
    for (size_t i = 0; i < n; i++) {
        json_t *shape = json_array();
        for (int k = 0; k < ts[i].ndim; k++)
            json_array_append_new(shape, json_integer(ts[i].shape[k]));
        uint64_t bytes = ts[i].numel * eng_dtype_size(ts[i].dtype);
        json_t *e = json_pack("{s:s, s:o, s:[I,I]}", "dtype",
                              eng_dtype_name(ts[i].dtype), "shape", shape,
                              "data_offsets", (json_int_t)begin[i],
                              (json_int_t)(begin[i] + bytes));
        if (!e || json_object_set_new(root, ts[i].name, e) != 0)
            goto fail;
    }
    return root;
fail:
    json_decref(meta);
    json_decref(root);
    return NULL;
}

int eng_st_writer_create(eng_st_writer **out, const char *path,
                         const eng_tensor_info *tensors, size_t count,
                         const json_t *metadata, sh_diag *d)
{
    eng_st_writer *w = calloc(1, sizeof *w);
    char *text = NULL;
    json_t *root = NULL;
    int rc = SH_ENOMEM;
    if (!w)
        return sh_diag_set(d, rc, "", "out of memory");
    w->fd = -1;
    w->count = count;
    w->path = strdup(path);
    w->begin = calloc(count + 1, sizeof *w->begin);
    w->size = calloc(count + 1, sizeof *w->size);
    w->written = calloc(count + 1, sizeof *w->written);
    if (!w->path || !w->begin || !w->size || !w->written)
        goto fail_nomem;

    uint64_t cursor = 0;
    for (size_t i = 0; i < count; i++) {
        w->begin[i] = cursor;
        w->size[i] = tensors[i].numel * eng_dtype_size(tensors[i].dtype);
        cursor += w->size[i];
    }
    if (!(root = header_json(tensors, count, metadata, w->begin)))
        goto fail_nomem;
    if (!(text = json_dumps(root, JSON_COMPACT | JSON_ENSURE_ASCII)))
        goto fail_nomem;
    size_t len = strlen(text);
    size_t padded = (len + 7) & ~(size_t)7;
    char *grown = realloc(text, padded + 8);
    if (!grown)
        goto fail_nomem;
    text = grown;
    memset(text + len, ' ', padded - len);
    w->data_start = 8 + padded;

    w->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        rc = sh_diag_set(d, sh_errno_code(errno), "", "cannot create %s: %s",
                         path, strerror(errno));
        goto fail;
    }
    w->created = true;
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++)
        lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    if (sh_write_all(w->fd, lenbuf, 8) != 0 ||
        sh_write_all(w->fd, text, padded) != 0 ||
        ftruncate(w->fd, (off_t)(w->data_start + cursor)) != 0) {
        rc = sh_diag_set(d, sh_errno_code(errno), "", "cannot write %s: %s",
                         path, strerror(errno));
        goto fail;
    }
    free(text);
    json_decref(root);
    *out = w;
    return 0;
fail_nomem:
    rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
fail:
    free(text);
    json_decref(root);
    eng_st_writer_destroy(w);
    return rc;
}

uint64_t eng_st_writer_offset(const eng_st_writer *w, size_t i)
{
    return w->data_start + w->begin[i];
}

int eng_st_writer_fd(const eng_st_writer *w) { return w->fd; }

int eng_st_writer_put(eng_st_writer *w, size_t i, uint64_t off, const void *buf,
                      size_t n, sh_diag *d)
{
    if (off + n > w->size[i])
        return sh_diag_set(d, SH_EINVAL, "", "write past tensor %zu", i);
    int rc =
        sh_pwrite_all(w->fd, buf, n, (off_t)(eng_st_writer_offset(w, i) + off));
    if (rc != 0)
        return sh_diag_set(d, rc, "", "cannot write %s: %s", w->path,
                           strerror(errno));
    w->written[i] += n;
    return 0;
}

int eng_st_writer_copy(eng_st_writer *w, size_t i, const eng_st *src, size_t j,
                       sh_diag *d)
{
    const eng_st_header *h = eng_st_header_of(src);
    uint64_t n = h->tensors[j].end - h->tensors[j].begin;
    if (n != w->size[i])
        return sh_diag_set(d, SH_EINVAL, "", "copy of a different size");
    loff_t in = (loff_t)(h->data_start + h->tensors[j].begin);
    loff_t at = (loff_t)eng_st_writer_offset(w, i);
    uint64_t left = n;
    while (left > 0) {
        ssize_t c = copy_file_range(eng_st_fd(src), &in, w->fd, &at,
                                    left > (1u << 30) ? (1u << 30) : left, 0);
        if (c < 0 && errno == EINTR)
            continue;
        if (c <= 0)
            break; // not supported here: write the rest from the mapping
        left -= (uint64_t)c;
    }
    w->written[i] += n - left;
    if (left == 0)
        return 0;
    const unsigned char *p = eng_st_data(src, j);
    return eng_st_writer_put(w, i, n - left, p + (n - left), left, d);
}

int eng_st_writer_finish(eng_st_writer *w, bool sync, sh_diag *d)
{
    for (size_t i = 0; i < w->count; i++)
        if (w->written[i] != w->size[i])
            return sh_diag_set(d, SH_EIO, "",
                               "%s: tensor %zu has %" PRIu64 " of %" PRIu64
                               " bytes",
                               w->path, i, w->written[i], w->size[i]);
    if (sync && fsync(w->fd) != 0)
        return sh_diag_set(d, sh_errno_code(errno), "", "cannot sync %s: %s",
                           w->path, strerror(errno));
    if (close(w->fd) != 0) {
        w->fd = -1;
        return sh_diag_set(d, sh_errno_code(errno), "", "cannot close %s: %s",
                           w->path, strerror(errno));
    }
    w->fd = -1;
    w->finished = true;
    return 0;
}

void eng_st_writer_destroy(eng_st_writer *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    if (w->created && !w->finished)
        unlink(w->path);
    free(w->path);
    free(w->begin);
    free(w->size);
    free(w->written);
    free(w);
}

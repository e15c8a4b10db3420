// safetensors.c: header validation, the mapped reader and the stream check.
#include "engine/io/safetensors.h"

#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

// --- header parsing

static int fail(sh_diag *d, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(sh_diag *d, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = sh_diag_vset(d, SH_EFORMAT, field, fmt, ap);
    va_end(ap);
    return rc;
}

static void shape_text(char *buf, size_t size, const eng_tensor_info *t)
{
    size_t n = 0;
    n += (size_t)snprintf(buf + n, size - n, "[");
    for (int i = 0; i < t->ndim && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%" PRId64, i ? ", " : "",
                              t->shape[i]);
    if (n < size)
        snprintf(buf + n, size - n, "]");
}

static int parse_metadata(json_t *meta, sh_diag *d)
{
    if (!json_is_object(meta))
        return fail(d, "__metadata__",
                    "__metadata__ must be an object mapping strings to "
                    "strings");
    const char *k;
    json_t *v;
    json_object_foreach (meta, k, v) {
        if (!json_is_string(v))
            return fail(d, "__metadata__",
                        "__metadata__ must map strings to strings; key "
                        "\"%s\" holds a non-string",
                        k);
    }
    return 0;
}

static int parse_tensor(eng_tensor_info *t, const char *name, json_t *e,
                        sh_diag *d)
{
    if (name[0] == '\0')
        return fail(d, "", "a tensor has an empty name");
    if (!json_is_object(e))
        return fail(d, name, "tensor \"%s\": entry must be an object", name);

    json_t *jd = json_object_get(e, "dtype");
    if (!jd)
        return fail(d, name, "tensor \"%s\": missing \"dtype\"", name);
    if (!json_is_string(jd))
        return fail(d, name, "tensor \"%s\": \"dtype\" must be a string", name);
    if (eng_dtype_parse(json_string_value(jd), &t->dtype) != 0)
        return fail(d, name, "tensor \"%s\": unknown dtype \"%s\"", name,
                    json_string_value(jd));

    json_t *js = json_object_get(e, "shape");
    if (!js)
        return fail(d, name, "tensor \"%s\": missing \"shape\"", name);
    if (!json_is_array(js))
        return fail(d, name, "tensor \"%s\": \"shape\" must be an array", name);
    size_t nd = json_array_size(js);
    if (nd > ENG_MAX_DIMS)
        return fail(d, name,
                    "tensor \"%s\": %zu dimensions, at most %d are supported",
                    name, nd, ENG_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    bool overflow = false;
    for (size_t i = 0; i < nd; i++) {
        json_t *x = json_array_get(js, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0)
            return fail(d, name,
                        "tensor \"%s\": shape[%zu] must be a non-negative "
                        "integer",
                        name, i);
        t->shape[i] = json_integer_value(x);
        if (__builtin_mul_overflow(numel, (uint64_t)t->shape[i], &numel))
            overflow = true;
    }
    uint64_t bytes = 0;
    if (overflow || __builtin_mul_overflow(
                        numel, (uint64_t)eng_dtype_size(t->dtype), &bytes))
        return fail(d, name, "tensor \"%s\": shape overflows 64 bits of bytes",
                    name);
    t->numel = numel;

    json_t *jo = json_object_get(e, "data_offsets");
    if (!jo)
        return fail(d, name, "tensor \"%s\": missing \"data_offsets\"", name);
    if (!json_is_array(jo) || json_array_size(jo) != 2 ||
        !json_is_integer(json_array_get(jo, 0)) ||
        !json_is_integer(json_array_get(jo, 1)))
        return fail(d, name,
                    "tensor \"%s\": \"data_offsets\" must be two integers "
                    "[begin, end]",
                    name);
    json_int_t b = json_integer_value(json_array_get(jo, 0));
    json_int_t en = json_integer_value(json_array_get(jo, 1));
    if (b < 0 || en < 0)
        return fail(d, name, "tensor \"%s\": negative data offset", name);
    if (en < b)
        return fail(d, name,
                    "tensor \"%s\": data_offsets [%lld, %lld] end before "
                    "they begin",
                    name, (long long)b, (long long)en);
    t->begin = (uint64_t)b;
    t->end = (uint64_t)en;
    if (t->end - t->begin != bytes) {
        char sh[160];
        shape_text(sh, sizeof sh, t);
        return fail(d, name,
                    "tensor \"%s\": shape %s of %s needs %" PRIu64
                    " bytes but data_offsets cover %" PRIu64,
                    name, sh, eng_dtype_name(t->dtype), bytes,
                    t->end - t->begin);
    }
    return 0;
}

static int by_offset(const void *a, const void *b)
{
    const eng_tensor_info *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

static void free_tensors(eng_tensor_info *t, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(t[i].name);
    free(t);
}

int eng_st_header_parse(eng_st_header *h, const char *json, size_t len,
                        uint64_t file_size, sh_diag *d)
{
    if (len == 0)
        return fail(d, "", "header is empty");
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        if (strstr(je.text, "duplicate"))
            return fail(d, "", "header repeats a tensor name (%s)", je.text);
        return fail(d, "", "header is not valid JSON: %s at byte %d", je.text,
                    je.position);
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return fail(d, "", "header must be a JSON object");
    }

    size_t cap = json_object_size(root);
    eng_tensor_info *ts = calloc(cap ? cap : 1, sizeof *ts);
    if (!ts) {
        json_decref(root);
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory reading header");
    }
    size_t n = 0;
    json_t *meta = NULL;
    int rc = 0;
    const char *key;
    json_t *val;
    json_object_foreach (root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if ((rc = parse_metadata(val, d)) != 0)
                goto fail;
            meta = val;
            continue;
        }
        if ((rc = parse_tensor(&ts[n], key, val, d)) != 0)
            goto fail;
        if (!(ts[n].name = strdup(key))) {
            rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
            goto fail;
        }
        n++;
    }

    qsort(ts, n, sizeof *ts, by_offset);
    uint64_t data_start = 8 + (uint64_t)len;
    uint64_t data_size = file_size ? file_size - data_start : UINT64_MAX;
    uint64_t cursor = 0;
    for (size_t i = 0; i < n; i++) {
        const eng_tensor_info *t = &ts[i];
        if (t->end > data_size) {
            rc = fail(d, t->name,
                      "tensor \"%s\": data ends at byte %" PRIu64
                      " of a data area of %" PRIu64 " bytes (file truncated?)",
                      t->name, t->end, data_size);
            goto fail;
        }
        if (t->begin < cursor) {
            rc = fail(d, t->name,
                      "tensors \"%s\" and \"%s\" overlap in the data area",
                      ts[i - 1].name, t->name);
            goto fail;
        }
        if (t->begin > cursor) {
            rc = fail(d, t->name,
                      "gap of %" PRIu64
                      " unused bytes in the data area before tensor \"%s\"",
                      t->begin - cursor, t->name);
            goto fail;
        }
        cursor = t->end;
    }
    if (file_size && cursor != data_size) {
        rc = fail(d, "",
                  "%" PRIu64 " bytes after the last tensor: the data area "
                  "must end where the last tensor ends",
                  data_size - cursor);
        goto fail;
    }

    h->tensors = ts;
    h->count = n;
    h->metadata = meta ? json_incref(meta) : NULL;
    h->data_start = data_start;
    h->file_size = data_start + cursor;
    json_decref(root);
    return 0;
fail:
    free_tensors(ts, n);
    json_decref(root);
    return rc;
}

void eng_st_header_deinit(eng_st_header *h)
{
    free_tensors(h->tensors, h->count);
    json_decref(h->metadata);
    memset(h, 0, sizeof *h);
}

long eng_st_header_find(const eng_st_header *h, const char *name)
{
    for (size_t i = 0; i < h->count; i++)
        if (strcmp(h->tensors[i].name, name) == 0)
            return (long)i;
    return -1;
}

// --- the mapped reader

struct eng_st {
    char *path;
    int fd;
    unsigned char *map;
    size_t map_size;
    eng_st_header h;
};

static uint64_t read_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int check_header_len(uint64_t n, uint64_t file_size, sh_diag *d)
{
    if (n > ENG_ST_MAX_HEADER)
        return fail(d, "",
                    "header length %" PRIu64 " exceeds the %llu-byte limit", n,
                    ENG_ST_MAX_HEADER);
    if (file_size && 8 + n > file_size)
        return fail(d, "",
                    "header length %" PRIu64
                    " runs past the end of the file (%" PRIu64 " bytes)",
                    n, file_size);
    return 0;
}

int eng_st_open(eng_st **out, const char *path, sh_diag *d)
{
    eng_st *st = calloc(1, sizeof *st);
    if (!st)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    st->fd = -1;
    int rc;
    char *hdr = NULL;
    if (!(st->path = strdup(path))) {
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        goto fail;
    }
    // O_NONBLOCK: a FIFO or a device must not hang the open; the fstat
    // below refuses anything but a regular file.
    st->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (st->fd < 0) {
        rc = sh_diag_set(d, errno == ENOENT ? SH_ENOTFOUND : SH_EIO, "",
                         "cannot open: %s", strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(st->fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        rc = sh_diag_set(d, SH_EIO, "", "not a regular file");
        goto fail;
    }
    uint64_t size = (uint64_t)sb.st_size;
    unsigned char lenbuf[8];
    if (size < 8) {
        rc = fail(d, "",
                  "file is %" PRIu64 " bytes, too short for the 8-byte "
                  "header length",
                  size);
        goto fail;
    }
    if (pread(st->fd, lenbuf, 8, 0) != 8) {
        rc = sh_diag_set(d, SH_EIO, "", "cannot read: %s", strerror(errno));
        goto fail;
    }
    uint64_t n = read_le64(lenbuf);
    if ((rc = check_header_len(n, size, d)) != 0)
        goto fail;
    if (!(hdr = malloc(n ? n : 1))) {
        rc = sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        goto fail;
    }
    if (pread(st->fd, hdr, n, 8) != (ssize_t)n) {
        rc = sh_diag_set(d, SH_EIO, "", "cannot read header");
        goto fail;
    }
    if ((rc = eng_st_header_parse(&st->h, hdr, n, size, d)) != 0)
        goto fail;
    free(hdr);
    hdr = NULL;
    st->map_size = size;
    st->map = mmap(NULL, size, PROT_READ, MAP_SHARED, st->fd, 0);
    if (st->map == MAP_FAILED) {
        st->map = NULL;
        rc = sh_diag_set(d, SH_EIO, "", "cannot map: %s", strerror(errno));
        goto fail;
    }
    *out = st;
    return 0;
fail:
    free(hdr);
    eng_st_close(st);
    return rc;
}

void eng_st_close(eng_st *st)
{
    if (!st)
        return;
    if (st->map)
        munmap(st->map, st->map_size);
    if (st->fd >= 0)
        close(st->fd);
    eng_st_header_deinit(&st->h);
    free(st->path);
    free(st);
}

const eng_st_header *eng_st_header_of(const eng_st *st) { return &st->h; }

const void *eng_st_data(const eng_st *st, size_t i)
{
    return st->map + st->h.data_start + st->h.tensors[i].begin;
}

int eng_st_fd(const eng_st *st) { return st->fd; }
const char *eng_st_path(const eng_st *st) { return st->path; }

int eng_st_read_range(const eng_st *st, size_t i, uint64_t off, void *buf,
                      size_t n, sh_diag *d)
{
    const eng_tensor_info *t = &st->h.tensors[i];
    if (off + n > t->end - t->begin)
        return sh_diag_set(d, SH_EINVAL, t->name, "read past tensor %s",
                           t->name);
    off_t at = (off_t)(st->h.data_start + t->begin + off);
    size_t done = 0;
    while (done < n) {
        size_t want = n - done > (1u << 30) ? (1u << 30) : n - done;
        ssize_t r = pread(st->fd, (char *)buf + done, want, at + (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return sh_diag_set(d, SH_EIO, t->name, "cannot read tensor %s: %s",
                               t->name, r < 0 ? strerror(errno) : "short read");
        done += (size_t)r;
    }
    return 0;
}

int eng_st_read(const eng_st *st, size_t i, void *buf, sh_diag *d)
{
    const eng_tensor_info *t = &st->h.tensors[i];
    return eng_st_read_range(st, i, 0, buf, (size_t)(t->end - t->begin), d);
}

static void advise(const eng_st *st, size_t i, int advice)
{
    const eng_tensor_info *t = &st->h.tensors[i];
    if (t->end == t->begin)
        return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)(st->map + st->h.data_start + t->begin);
    uintptr_t b = (uintptr_t)(st->map + st->h.data_start + t->end);
    a &= ~(page - 1);
    madvise((void *)a, b - a, advice);
}

void eng_st_prefetch(const eng_st *st, size_t i)
{
    advise(st, i, MADV_WILLNEED);
}
void eng_st_release(const eng_st *st, size_t i)
{
    advise(st, i, MADV_DONTNEED);
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 // Linux 5.14
#endif

void eng_st_populate(const eng_st *st, size_t i)
{
    advise(st, i, MADV_POPULATE_READ);
}

// --- the stream check

void eng_st_check_init(eng_st_check *c)
{
    memset(c, 0, sizeof *c);
    c->max_tensors = UINT64_MAX;
}

// The members of a JSON object's top level: the ':' outside strings at
// depth 1. Exact for valid JSON; for invalid JSON the parser says why.
static uint64_t count_entries(const char *p, uint64_t n)
{
    uint64_t count = 0;
    int depth = 0;
    bool str = false, esc = false;
    for (uint64_t i = 0; i < n; i++) {
        char c = p[i];
        if (str) {
            if (esc)
                esc = false;
            else if (c == '\\')
                esc = true;
            else if (c == '"')
                str = false;
            continue;
        }
        switch (c) {
        case '"': str = true; break;
        case '{':
        case '[': depth++; break;
        case '}':
        case ']': depth--; break;
        case ':': count += depth == 1; break;
        default: break;
        }
    }
    return count;
}

void eng_st_check_deinit(eng_st_check *c)
{
    free(c->header);
    if (c->parsed)
        eng_st_header_deinit(&c->h);
    eng_st_check_init(c);
}

int eng_st_check_feed(eng_st_check *c, const void *data, size_t n, sh_diag *d)
{
    if (c->failed)
        return c->failed;
    const unsigned char *p = data;
    uint64_t before = c->seen;
    c->seen += n;
    if (c->parsed) {
        if (c->seen > c->h.file_size)
            return c->failed = fail(d, "",
                                    "file is longer than its header "
                                    "promises (%" PRIu64 " bytes)",
                                    c->h.file_size);
        return 0;
    }
    // Collect the length and the header bytes; one buffer holds both.
    uint64_t want = before < 8 ? 8 : 8 + c->header_len;
    size_t off = 0;
    while (off < n) {
        uint64_t pos = before + off;
        if (pos < 8) {
            if (!c->header && !(c->header = malloc(8)))
                return c->failed = SH_ENOMEM;
            size_t take =
                (size_t)(8 - pos) < n - off ? (size_t)(8 - pos) : n - off;
            memcpy(c->header + pos, p + off, take);
            off += take;
            if (pos + take == 8) {
                c->header_len = read_le64((unsigned char *)c->header);
                int rc = check_header_len(c->header_len, 0, d);
                if (rc != 0)
                    return c->failed = rc;
                want = 8 + c->header_len;
            }
            continue;
        }
        // Grow the header buffer with the bytes that arrived, never to the
        // declared length at once: a lying length costs nothing.
        size_t take =
            (size_t)(want - pos) < n - off ? (size_t)(want - pos) : n - off;
        char *grown = realloc(c->header, (size_t)(pos + take));
        if (!grown)
            return c->failed = SH_ENOMEM;
        c->header = grown;
        memcpy(c->header + pos, p + off, take);
        off += take;
        if (pos + take == want) {
            // One entry may be __metadata__.
            uint64_t entries = count_entries(c->header + 8, c->header_len);
            if (entries > 0 && entries - 1 > c->max_tensors)
                return c->failed = fail(d, "",
                                        "the header lists %" PRIu64
                                        " entries; at most %" PRIu64
                                        " tensors are accepted",
                                        entries, c->max_tensors);
            int rc = eng_st_header_parse(&c->h, c->header + 8,
                                         (size_t)c->header_len, 0, d);
            if (rc != 0)
                return c->failed = rc;
            if (c->h.count > c->max_tensors) {
                c->parsed = true; // deinit frees it
                return c->failed = fail(d, "",
                                        "the header lists %zu tensors; at "
                                        "most %" PRIu64 " tensors are accepted",
                                        c->h.count, c->max_tensors);
            }
            c->parsed = true;
            free(c->header);
            c->header = NULL;
            if (c->seen > c->h.file_size)
                return c->failed = fail(d, "",
                                        "file is longer than its header "
                                        "promises (%" PRIu64 " bytes)",
                                        c->h.file_size);
            break;
        }
    }
    return 0;
}

int eng_st_check_finish(eng_st_check *c, sh_diag *d)
{
    if (c->failed)
        return c->failed;
    if (c->seen < 8)
        return c->failed = fail(d, "",
                                "file is %" PRIu64 " bytes, too short for "
                                "the 8-byte header length",
                                c->seen);
    if (!c->parsed)
        return c->failed =
                   fail(d, "",
                        "header length %" PRIu64
                        " runs past the end of the file (%" PRIu64 " bytes)",
                        c->header_len, c->seen);
    if (c->seen != c->h.file_size)
        return c->failed = fail(d, "",
                                "file is truncated: its header promises "
                                "%" PRIu64 " bytes, %" PRIu64 " arrived",
                                c->h.file_size, c->seen);
    return 0;
}

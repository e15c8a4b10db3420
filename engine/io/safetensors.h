// safetensors.h: read, check and write safetensors files.
//
// The format:
//
//   u64 LE  N                 header length in bytes (we refuse N > 100 MB)
//   N bytes header            UTF-8 JSON object, may end in spaces:
//                               "__metadata__": {string: string}  optional
//                               "<name>": {"dtype": "F32",
//                                          "shape": [d0, d1, ...],
//                                          "data_offsets": [begin, end]}
//   data area                 tensors' bytes, offsets relative to its start
//
// Rules enforced: the header fits in the file; it is a JSON object with
// unique names; each tensor has a known dtype, a shape of non-negative
// integers whose byte size does not overflow and equals end - begin; sorted
// by begin, the tensors tile the data area exactly from 0 with no gap and no
// overlap, and the file ends at the last end offset. Every violation is its
// own message naming the tensor.
//
// The reader maps the file read-only and hands out pointers into the mapping;
// eng_st_release() gives a tensor's pages back once it is done, so the
// resident set stays near one tensor however large the file.
#ifndef ENG_SAFETENSORS_H
#define ENG_SAFETENSORS_H

#include "common/err.h"
#include "engine/io/dtype.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#define ENG_ST_MAX_HEADER 100000000ull
#define ENG_MAX_DIMS 8

// One tensor of a header. Offsets are relative to the data area.
typedef struct eng_tensor_info {
    char *name;
    eng_dtype dtype;
    int ndim;
    int64_t shape[ENG_MAX_DIMS];
    uint64_t numel;
    uint64_t begin, end; // [begin, end) in the data area
} eng_tensor_info;

// A parsed header: tensors sorted by begin offset, plus __metadata__.
typedef struct eng_st_header {
    eng_tensor_info *tensors;
    size_t count;
    json_t *metadata;    // object of strings, or NULL when absent
    uint64_t data_start; // 8 + N
    uint64_t file_size;  // data_start + data bytes
} eng_st_header;

// Parses and validates a header. json/len are the N header bytes; file_size
// is the size of the whole file, or 0 when not yet known (a stream), in
// which case h->file_size is the size the file must have. On failure d says
// what is wrong and *h is untouched.
int eng_st_header_parse(eng_st_header *h, const char *json, size_t len,
                        uint64_t file_size, sh_diag *d);
void eng_st_header_deinit(eng_st_header *h);

// Index of the tensor called name, or -1.
long eng_st_header_find(const eng_st_header *h, const char *name);

// --- reading a file

typedef struct eng_st eng_st;

// Opens, validates and maps a file. On failure d names the problem and the
// path. The returned object owns the mapping; close it with eng_st_close.
int eng_st_open(eng_st **out, const char *path, sh_diag *d);
void eng_st_close(eng_st *st);

const eng_st_header *eng_st_header_of(const eng_st *st);

// The tensor's bytes inside the mapping (possibly unaligned). Any thread may
// read them while st is open.
const void *eng_st_data(const eng_st *st, size_t i);

// The file descriptor (for copy_file_range) and the path.
int eng_st_fd(const eng_st *st);
const char *eng_st_path(const eng_st *st);

// Copies tensor i's bytes into buf (end - begin bytes) with pread. For a
// pass over a whole tensor this beats the mapping where first touches of
// mapped pages are dear (virtual machines with shadow paging: ~1 us per
// 4 KiB page), since one reused buffer is touched only once.
int eng_st_read(const eng_st *st, size_t i, void *buf, sh_diag *d);

// Copies n bytes from offset off within tensor i into buf.
int eng_st_read_range(const eng_st *st, size_t i, uint64_t off, void *buf,
                      size_t n, sh_diag *d);

// Hints the kernel to read a tensor ahead / gives its pages back.
void eng_st_prefetch(const eng_st *st, size_t i);
void eng_st_release(const eng_st *st, size_t i);

// Maps all of a tensor's pages now, in one call, for a reader about to
// touch every byte: one fault per page costs more than the reading.
// Where the kernel cannot, the pages come as they are touched.
void eng_st_populate(const eng_st *st, size_t i);

// --- checking a stream (uploads): feed the bytes as they arrive.

typedef struct eng_st_check {
    uint64_t seen;       // bytes fed so far
    uint64_t header_len; // N, once 8 bytes are in
    char *header;        // collects the N header bytes
    bool parsed;         // header parsed; expect h.file_size bytes in all
    eng_st_header h;
    int failed;           // sticky error code
    uint64_t max_tensors; // set after init (UINT64_MAX: no limit)
} eng_st_check;

void eng_st_check_init(eng_st_check *c);
void eng_st_check_deinit(eng_st_check *c);

// Feeds n bytes. Fails as soon as the bytes cannot be a valid file (bad
// header, or more bytes than the header allows). With max_tensors set, a
// header listing more tensors is refused (SH_EFORMAT) before it is parsed:
// the entries are counted with a scan that allocates nothing. Once it
// failed, it stays failed and d is not touched again.
int eng_st_check_feed(eng_st_check *c, const void *data, size_t n, sh_diag *d);

// Declares the end of the stream: fails unless exactly the size the header
// promises arrived. On success c->h holds the parsed header.
int eng_st_check_finish(eng_st_check *c, sh_diag *d);

// --- writing

// A writer lays tensors out in the order given, contiguously, after a
// header padded with spaces to a multiple of 8 bytes. Bytes may be written
// in any order; eng_st_writer_finish checks that every byte was written.
typedef struct eng_st_writer eng_st_writer;

// Creates path (must not exist) and writes the header. tensors' begin/end
// are ignored and recomputed; metadata may be NULL. "format": "pt" is added
// to the metadata when missing, every other key is kept.
int eng_st_writer_create(eng_st_writer **out, const char *path,
                         const eng_tensor_info *tensors, size_t count,
                         const json_t *metadata, sh_diag *d);

// Absolute file offset of tensor i's first byte.
uint64_t eng_st_writer_offset(const eng_st_writer *w, size_t i);
int eng_st_writer_fd(const eng_st_writer *w);

// Writes n bytes at offset off within tensor i.
int eng_st_writer_put(eng_st_writer *w, size_t i, uint64_t off, const void *buf,
                      size_t n, sh_diag *d);

// Copies tensor j of src into tensor i (same byte size) in the kernel.
int eng_st_writer_copy(eng_st_writer *w, size_t i, const eng_st *src, size_t j,
                       sh_diag *d);

// Checks completeness, optionally fsyncs, closes. The file stays.
int eng_st_writer_finish(eng_st_writer *w, bool sync, sh_diag *d);

// Frees the writer; an unfinished file is removed.
void eng_st_writer_destroy(eng_st_writer *w);

#endif

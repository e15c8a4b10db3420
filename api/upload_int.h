// upload_int.h: the files of an upload, checked as they arrive, and the
// tar members that become them. No HTTP here: upload.c feeds these from
// request bodies; the fuzzers feed them from memory.
#ifndef API_UPLOAD_INT_H
#define API_UPLOAD_INT_H

#include "common/err.h"
#include "common/sha256.h"
#include "engine/io/model.h"
#include "engine/io/safetensors.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct archive;

// Header bytes that uploads being checked may hold at once, across all
// connections (--max-header-memory). A file reserves its safetensors
// header's length once it is known and gives it back when its check ends.
typedef struct up_budget {
    pthread_mutex_t mu;
    uint64_t used, max;
} up_budget;

void up_budget_init(up_budget *b, uint64_t max);
void up_budget_deinit(up_budget *b);

// One file being received into a temp file, hashed and (a .safetensors)
// checked on the way.
typedef struct up_file {
    char name[ENG_MODEL_NAME_MAX + 1];
    char path[4096];
    int fd;
    uint64_t bytes, synced;
    sh_sha256 sha;
    char hex[SH_SHA256_HEX];
    bool check; // a .safetensors: run the header check
    eng_st_check chk;
    up_budget *budget;
    uint64_t reserved; // header bytes held in the budget
} up_file;

// What an upload may hold, and what it holds so far.
typedef struct up_set {
    char tmp[4096]; // the temp dir the files go to
    up_file *files;
    size_t nfiles;
    uint64_t bytes, max_bytes;     // written, and --max-upload
    uint64_t tensors, max_tensors; // in checked headers; 0: no limit
    up_budget *budget;             // or NULL
} up_set;

#define UP_MAX_FILES 10000

// Opens f as a temp file (numbered: names come from the client) in dir.
// f->name is name; check: run the safetensors check.
int up_file_open(up_file *f, up_set *s, const char *name, bool check,
                 sh_diag *d);

// Writes n bytes through the digest and the check. Counts them against
// the set's byte limit (SH_ETOOBIG) and, once the header length is known,
// the budget (SH_EBUSY).
int up_file_write(up_file *f, up_set *s, const void *data, size_t n,
                  sh_diag *d);

// Ends the check (every promised byte arrived), fsyncs, closes, finishes
// the digest, gives the header reservation back and adds the header's
// tensors to the set's count (SH_EFORMAT past max_tensors).
int up_file_close(up_file *f, up_set *s, sh_diag *d);

// Frees what f holds (its temp file stays for the caller to remove).
void up_file_drop(up_file *f);

// Reads every member of an opened archive into the set: regular files with
// plain relative names of at most ENG_MODEL_NAME_MAX bytes, no sparse
// members, exactly the declared size of each; folders are implied; the
// archive's own "." and a single common top folder are dropped; no name
// twice and none both a file and a folder. On failure d says which member
// and why.
int up_tar_extract(up_set *s, struct archive *a, sh_diag *d);

void up_set_deinit(up_set *s);

#endif

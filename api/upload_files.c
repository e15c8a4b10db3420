// upload_files.c: an upload's files as they arrive, and tar members.
#include "api/upload_int.h"

#include "common/util.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SYNC_STEP (64u << 20) // start writeback every 64 MiB

// --- the header budget

void up_budget_init(up_budget *b, uint64_t max)
{
    pthread_mutex_init(&b->mu, NULL);
    b->used = 0;
    b->max = max;
}

void up_budget_deinit(up_budget *b) { pthread_mutex_destroy(&b->mu); }

static bool budget_take(up_budget *b, uint64_t n)
{
    pthread_mutex_lock(&b->mu);
    bool ok = b->used + n <= b->max;
    if (ok)
        b->used += n;
    pthread_mutex_unlock(&b->mu);
    return ok;
}

static void budget_give(up_budget *b, uint64_t n)
{
    pthread_mutex_lock(&b->mu);
    b->used -= n;
    pthread_mutex_unlock(&b->mu);
}

static void file_unreserve(up_file *f)
{
    if (f->budget && f->reserved)
        budget_give(f->budget, f->reserved);
    f->reserved = 0;
}

// --- one file

int up_file_open(up_file *f, up_set *s, const char *name, bool check,
                 sh_diag *d)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    if (!sh_strlcpy(f->name, sizeof f->name, name))
        return sh_diag_set(d, SH_EFORMAT, "", "file name too long");
    char leaf[32];
    snprintf(leaf, sizeof leaf, "f%06zu", s->nfiles);
    if (sh_path_join(f->path, sizeof f->path, s->tmp, leaf) != 0)
        return sh_diag_set(d, SH_ETOOBIG, name, "path too long");
    f->fd = open(f->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (f->fd < 0)
        return sh_diag_set(d, sh_errno_code(errno), name,
                           "cannot create a temp file: %s", strerror(errno));
    if (sh_sha256_init(&f->sha) != 0)
        return sh_diag_set(d, SH_ENOMEM, name, "out of memory");
    f->check = check;
    f->budget = s->budget;
    eng_st_check_init(&f->chk);
    if (s->max_tensors)
        f->chk.max_tensors =
            s->max_tensors > s->tensors ? s->max_tensors - s->tensors : 0;
    return 0;
}

int up_file_write(up_file *f, up_set *s, const void *data, size_t n, sh_diag *d)
{
    if (n > s->max_bytes - s->bytes)
        return sh_diag_set(d, SH_ETOOBIG, "",
                           "the upload holds more than %" PRIu64
                           " bytes (--max-upload)",
                           s->max_bytes);
    if (f->check) {
        // The 8 length bytes first: the header's bytes are reserved once
        // its length is known, before any of them is collected.
        size_t head = f->chk.seen < 8 ? (size_t)(8 - f->chk.seen) : 0;
        head = head < n ? head : n;
        int rc = head ? eng_st_check_feed(&f->chk, data, head, d) : 0;
        if (rc == 0 && f->budget && f->chk.header_len && !f->reserved &&
            !f->chk.parsed) {
            if (!budget_take(f->budget, f->chk.header_len))
                return sh_diag_set(
                    d, SH_EBUSY, "",
                    "%s: its header of %" PRIu64 " bytes does not fit in the "
                    "header memory left for uploads now (--max-header-memory "
                    "%" PRIu64 " bytes across uploads); retry later",
                    f->name, f->chk.header_len, f->budget->max);
            f->reserved = f->chk.header_len;
        }
        if (rc == 0 && n > head)
            rc = eng_st_check_feed(&f->chk, (const char *)data + head, n - head,
                                   d);
        if (rc != 0) {
            sh_diag_prefix(d, "%s", f->name);
            return rc;
        }
        if (f->chk.parsed)
            file_unreserve(f); // parsed: the header bytes are gone
    }
    int rc = sh_write_all(f->fd, data, n);
    if (rc != 0)
        return sh_diag_set(d, rc, f->name, "cannot write %s: %s", f->name,
                           sh_strerror(rc));
    sh_sha256_update(&f->sha, data, n);
    f->bytes += n;
    s->bytes += n;
    if (f->bytes - f->synced >= SYNC_STEP) {
        // Hand finished ranges to writeback as we go, so the fsync at the
        // end has little left to wait for.
        sync_file_range(f->fd, (off_t)f->synced, (off_t)(f->bytes - f->synced),
                        SYNC_FILE_RANGE_WRITE);
        f->synced = f->bytes;
    }
    return 0;
}

int up_file_close(up_file *f, up_set *s, sh_diag *d)
{
    int rc = 0;
    if (f->check && (rc = eng_st_check_finish(&f->chk, d)) != 0)
        sh_diag_prefix(d, "%s", f->name);
    if (rc == 0 && f->check) {
        s->tensors += f->chk.h.count;
        eng_st_check_deinit(&f->chk); // the model is opened anew at the end
    }
    file_unreserve(f);
    if (rc == 0 && fsync(f->fd) != 0)
        rc = sh_diag_set(d, sh_errno_code(errno), f->name, "cannot sync %s: %s",
                         f->name, strerror(errno));
    if (close(f->fd) != 0 && rc == 0)
        rc = sh_diag_set(d, sh_errno_code(errno), f->name,
                         "cannot close %s: %s", f->name, strerror(errno));
    f->fd = -1;
    sh_sha256_final(&f->sha, f->hex);
    return rc;
}

void up_file_drop(up_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    if (f->sha.ctx)
        sh_sha256_deinit(&f->sha);
    eng_st_check_deinit(&f->chk);
    file_unreserve(f);
}

void up_set_deinit(up_set *s)
{
    for (size_t i = 0; i < s->nfiles; i++)
        up_file_drop(&s->files[i]);
    free(s->files);
    s->files = NULL;
    s->nfiles = 0;
}

// --- tar members

// A member name made plain: leading "./" and a directory's trailing '/'
// dropped. False when nothing is left or it does not fit.
static bool trim_member(const char *in, char *out, size_t size)
{
    while (in[0] == '.' && in[1] == '/')
        in += 2;
    size_t n = strlen(in);
    while (n > 0 && in[n - 1] == '/')
        n--;
    if (n == 0 || n >= size)
        return false;
    memcpy(out, in, n);
    out[n] = '\0';
    return true;
}

static const char *kind_of(struct archive_entry *e)
{
    if (archive_entry_hardlink(e))
        return "a hard link";
    switch (archive_entry_filetype(e)) {
    case AE_IFLNK: return "a symbolic link";
    case AE_IFCHR: return "a character device";
    case AE_IFBLK: return "a block device";
    case AE_IFIFO: return "a FIFO";
    case AE_IFSOCK: return "a socket";
    default: return "not a regular file";
    }
}

// A name the engine refused is a malformed upload: SH_EFORMAT, the
// message prefixed.
static int as_format(sh_diag *d, const char *prefix)
{
    sh_diag_prefix(d, "%s", prefix);
    if (d)
        d->code = SH_EFORMAT;
    return SH_EFORMAT;
}

// One member: validated, then copied to a temp file with its checks.
static int extract_member(up_set *s, struct archive *a, struct archive_entry *e,
                          sh_diag *d)
{
    const char *raw = archive_entry_pathname(e);
    char name[ENG_MODEL_NAME_MAX + 1];
    bool dir =
        archive_entry_filetype(e) == AE_IFDIR && !archive_entry_hardlink(e);
    if (dir && raw && (strcmp(raw, ".") == 0 || strcmp(raw, "./") == 0))
        return 0; // the archive's own top, as `tar -C dir .` writes it
    if (!raw)
        return sh_diag_set(d, SH_EFORMAT, "", "a tar member has no name");
    if (!trim_member(raw, name, sizeof name))
        return sh_diag_set(d, SH_EFORMAT, "",
                           "tar member \"%.64s...\" has a name of %zu bytes; "
                           "names are at most %d bytes",
                           raw, strlen(raw), ENG_MODEL_NAME_MAX);
    int rc = eng_model_name_check(name, d);
    if (rc != 0)
        return as_format(d, "tar member");
    if (dir)
        return 0; // folders are implied by the files in them
    if (archive_entry_filetype(e) != AE_IFREG || archive_entry_hardlink(e))
        return sh_diag_set(d, SH_EFORMAT, name,
                           "tar member \"%s\" is %s; only regular files are "
                           "accepted",
                           name, kind_of(e));
    if (archive_entry_sparse_count(e) > 0)
        return sh_diag_set(d, SH_EFORMAT, name,
                           "tar member \"%s\" is a sparse file (a GNU or pax "
                           "sparse map); send it as a plain file (tar without "
                           "--sparse)",
                           name);
    if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0)
        return sh_diag_set(d, SH_EFORMAT, name,
                           "tar member \"%s\" does not declare its size", name);
    uint64_t declared = (uint64_t)archive_entry_size(e);
    if (s->nfiles == UP_MAX_FILES)
        return sh_diag_set(d, SH_ETOOBIG, "", "more than %d files in the tar",
                           UP_MAX_FILES);
    if (s->nfiles % 64 == 0) {
        up_file *grown = realloc(s->files, (s->nfiles + 64) * sizeof *s->files);
        if (!grown)
            return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
        s->files = grown;
    }
    up_file *f = &s->files[s->nfiles];
    rc = up_file_open(f, s, name, sh_str_ends_with(name, ".safetensors"), d);
    s->nfiles++; // dropped with the rest, opened or not
    char chunk[64 * 1024];
    while (rc == 0) {
        la_ssize_t n = archive_read_data(a, chunk, sizeof chunk);
        if (n < 0)
            return sh_diag_set(d, SH_EFORMAT, name, "tar member \"%s\": %s",
                               name, archive_error_string(a));
        if (n == 0)
            break;
        if ((uint64_t)n > declared - f->bytes)
            return sh_diag_set(d, SH_EFORMAT, name,
                               "tar member \"%s\" holds more than the %" PRIu64
                               " bytes it declares",
                               name, declared);
        rc = up_file_write(f, s, chunk, (size_t)n, d);
    }
    if (rc == 0 && f->bytes != declared)
        return sh_diag_set(d, SH_EFORMAT, name,
                           "tar member \"%s\" declares %" PRIu64
                           " bytes and holds %" PRIu64,
                           name, declared, f->bytes);
    if (rc == 0)
        rc = up_file_close(f, s, d);
    return rc;
}

// A single common top folder ("model/config.json", ...) is dropped.
static void strip_top_folder(up_set *s)
{
    if (s->nfiles == 0)
        return;
    const char *first = s->files[0].name;
    const char *slash = strchr(first, '/');
    if (!slash)
        return;
    size_t n = (size_t)(slash - first) + 1;
    for (size_t i = 1; i < s->nfiles; i++)
        if (strncmp(s->files[i].name, first, n) != 0)
            return;
    for (size_t i = 0; i < s->nfiles; i++)
        memmove(s->files[i].name, s->files[i].name + n,
                strlen(s->files[i].name + n) + 1);
}

int up_tar_extract(up_set *s, struct archive *a, sh_diag *d)
{
    struct archive_entry *e;
    int r, rc = 0;
    while (rc == 0 && (r = archive_read_next_header(a, &e)) == ARCHIVE_OK)
        rc = extract_member(s, a, e, d);
    if (rc == 0 && r != ARCHIVE_EOF)
        rc = sh_diag_set(d, SH_EFORMAT, "", "not a valid tar archive: %s",
                         archive_error_string(a));
    if (rc != 0)
        return rc;
    if (s->nfiles == 0)
        return sh_diag_set(d, SH_EFORMAT, "", "the tar holds no files");
    strip_top_folder(s);
    const char **names = calloc(s->nfiles, sizeof *names);
    if (!names)
        return sh_diag_set(d, SH_ENOMEM, "", "out of memory");
    for (size_t i = 0; i < s->nfiles; i++)
        names[i] = s->files[i].name;
    rc = eng_model_names_check(names, s->nfiles, d);
    free(names);
    return rc != 0 ? as_format(d, "tar") : 0;
}

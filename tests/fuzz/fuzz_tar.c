// fuzz_tar.c: tar member validation and extraction (api/upload_files.c)
// on any bytes: whatever the archive holds, extraction ends with a verdict,
// writes only under its temp dir, keeps its byte limit, and gives back
// every byte of header memory it reserved.
#include "api/upload_int.h"
#include "common/util.h"

#include <archive.h>
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];

// No path component of name is "." or ".." (inside a component, as in
// "a..b", two dots are a plain name).
static int plain_components(const char *name)
{
    for (const char *p = name; *p;) {
        size_t n = strcspn(p, "/");
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        p += n;
        if (*p == '/')
            p++;
    }
    return 1;
}
static up_budget budget;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "/dev/shm/fuzz-tar-%d", (int)getpid());
    if (access("/dev/shm", W_OK) != 0)
        snprintf(dir, sizeof dir, "/tmp/fuzz-tar-%d", (int)getpid());
    up_budget_init(&budget, 1u << 20);
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t n)
{
    sh_rm_rf(dir);
    if (sh_mkdir_p(dir) != 0)
        return 0;
    up_set s;
    memset(&s, 0, sizeof s);
    snprintf(s.tmp, sizeof s.tmp, "%s", dir);
    s.max_bytes = 1u << 20;
    s.max_tensors = 32;
    s.budget = &budget;
    struct archive *a = archive_read_new();
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    sh_diag d;
    sh_diag_clear(&d);
    if (archive_read_open_memory(a, data, n) == ARCHIVE_OK) {
        int rc = up_tar_extract(&s, a, &d);
        assert(s.bytes <= s.max_bytes);
        assert(s.nfiles <= UP_MAX_FILES);
        if (rc == 0) {
            for (size_t i = 0; i < s.nfiles; i++) {
                assert(s.files[i].name[0] && s.files[i].name[0] != '/');
                assert(plain_components(s.files[i].name));
                assert(strlen(s.files[i].name) <= ENG_MODEL_NAME_MAX);
            }
        } else {
            assert(d.msg[0]);
        }
    }
    archive_read_free(a);
    up_set_deinit(&s);
    assert(budget.used == 0);
    return 0;
}

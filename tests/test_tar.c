// test_tar.c: an upload's tar members and files (api/upload_files.c),
// without HTTP: names, sparse members, declared sizes, folder conflicts,
// the byte, tensor and header-memory limits.
#include "tests/helpers.h"

#include "api/upload_int.h"
#include "common/util.h"
#include "tests/server.h"

#include <archive.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tar_run {
    char *dir;
    up_set set;
    up_budget budget;
    sh_diag d;
    int rc;
} tar_run;

// Extracts the tar at path into a fresh set with these limits.
static void extract(tar_run *t, const char *path, uint64_t max_bytes,
                    uint64_t max_tensors, uint64_t max_header)
{
    memset(t, 0, sizeof *t);
    t->dir = th_tmpdir();
    char *tmp = th_path(t->dir, "files");
    ck_assert_int_eq(sh_mkdir_p(tmp), 0);
    snprintf(t->set.tmp, sizeof t->set.tmp, "%s", tmp);
    free(tmp);
    up_budget_init(&t->budget, max_header);
    t->set.max_bytes = max_bytes;
    t->set.max_tensors = max_tensors;
    t->set.budget = &t->budget;
    struct archive *a = archive_read_new();
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    ck_assert_int_eq(archive_read_open_filename(a, path, 4096), ARCHIVE_OK);
    sh_diag_clear(&t->d);
    t->rc = up_tar_extract(&t->set, a, &t->d);
    archive_read_free(a);
}

static void done(tar_run *t)
{
    up_set_deinit(&t->set);
    ck_assert_int_eq(t->budget.used, 0); // every reservation came back
    up_budget_deinit(&t->budget);
    th_rmtree(t->dir);
    free(t->dir);
}

// Writes a tar of (name, text) members into dir; returns its path.
static char *tar_of(const char *dir, const char *const *names,
                    const char *const *data, const int *kinds, size_t n)
{
    char *path = th_path(dir, "in.tar");
    th_write_tar(path, names, NULL, data, kinds, n);
    return path;
}

static void expect_refused(tar_run *t, const char *words)
{
    ck_assert_msg(t->rc == SH_EFORMAT, "rc %d (%s)", t->rc, t->d.msg);
    ck_assert_msg(strstr(t->d.msg, words), "\"%s\" lacks \"%s\"", t->d.msg,
                  words);
}

// A member with a sparse map is refused: its expansion is not what was
// sent (a few KiB of tar, 300 MiB of file), and an all-hole member would
// be stored as nothing. GNU and pax sparse formats, from GNU tar
// (tools/make-sparse-tars.sh).
START_TEST(test_tar_sparse_refused)
{
    static const char *const fixtures[] = {
        "tar/sparse-gnu.tar", "tar/sparse-pax.tar", "tar/all-hole.tar"};
    char *path = th_fixture(fixtures[_i]);
    tar_run t;
    extract(&t, path, 1ull << 40, 0, 1u << 30);
    expect_refused(&t, "sparse");
    ck_assert_msg(strstr(t.d.msg, "model.safetensors"), "%s", t.d.msg);
    ck_assert_uint_lt(t.set.bytes, 1u << 20); // no hole was written out
    done(&t);
    free(path);
}
END_TEST

// One limit for a member's path, 255 bytes, and every name stays whole.
START_TEST(test_tar_name_limit)
{
    char *dir = th_tmpdir();
    char ok[256], long_name[257];
    memset(ok, 'a', 255);
    ok[255] = '\0';
    memcpy(ok, "d/", 2); // a folder and a 253-byte file name
    memset(long_name, 'b', 256);
    long_name[256] = '\0';
    const char *names[] = {ok};
    const char *data[] = {"x"};
    char *path = tar_of(dir, names, data, NULL, 1);
    tar_run t;
    extract(&t, path, 1ull << 40, 0, 1u << 30);
    ck_assert_msg(t.rc == 0, "%s", t.d.msg);
    ck_assert_uint_eq(t.set.nfiles, 1);
    ck_assert_str_eq(t.set.files[0].name, ok + 2); // the top folder goes
    done(&t);
    free(path);

    const char *names2[] = {"config.json", long_name};
    const char *data2[] = {"{}", "x"};
    path = tar_of(dir, names2, data2, NULL, 2);
    extract(&t, path, 1ull << 40, 0, 1u << 30);
    expect_refused(&t, "names are at most 255 bytes");
    ck_assert_msg(strstr(t.d.msg, "bbbbbbbb"), "%s", t.d.msg);
    done(&t);
    th_rmtree(dir);
    free(dir);
    free(path);
}
END_TEST

// A name that is a file cannot also be a folder, in either order; and no
// name twice (also after "./").
START_TEST(test_tar_conflicts)
{
    static const struct {
        const char *a, *b, *words;
    } cases[] = {
        {"x", "x/y", "both a file and a folder"},
        {"m/x/y", "m/x", "both a file and a folder"},
        {"a", "./a", "appears twice"},
    };
    char *dir = th_tmpdir();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *names[] = {"z", cases[i].a, cases[i].b};
        const char *data[] = {"1", "2", "3"};
        char *path = tar_of(dir, names, data, NULL, 3);
        tar_run t;
        extract(&t, path, 1ull << 40, 0, 1u << 30);
        expect_refused(&t, cases[i].words);
        done(&t);
        free(path);
    }
    // "x-a" sorts between "x" and "x/" byte-wise: still no false alarm.
    const char *names[] = {"x", "x-a", "x.b/c"};
    const char *data[] = {"1", "2", "3"};
    char *path = tar_of(dir, names, data, NULL, 3);
    tar_run t;
    extract(&t, path, 1ull << 40, 0, 1u << 30);
    ck_assert_msg(t.rc == 0, "%s", t.d.msg);
    done(&t);
    free(path);
    th_rmtree(dir);
    free(dir);
}
END_TEST

// Bytes written count against the upload's limit, whatever the body was.
START_TEST(test_tar_byte_limit)
{
    char *dir = th_tmpdir();
    char big[5000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *names[] = {"a", "b"};
    const char *data[] = {big, big};
    char *path = tar_of(dir, names, data, NULL, 2);
    tar_run t;
    extract(&t, path, 6000, 0, 1u << 30);
    ck_assert_int_eq(t.rc, SH_ETOOBIG);
    ck_assert_msg(strstr(t.d.msg, "--max-upload"), "%s", t.d.msg);
    done(&t);
    free(path);
    th_rmtree(dir);
    free(dir);
}
END_TEST

// Tensors are counted across the tar's weight files before their headers
// are parsed; a header that does not fit the memory left is refused
// without collecting it, and every reservation is given back.
START_TEST(test_tar_tensor_and_header_limits)
{
    char *dir = th_tmpdir();
    float v[2] = {1, 2};
    th_tensor ts[3] = {{"a", "F32", 1, {2}, v},
                       {"b", "F32", 1, {2}, v},
                       {"c", "F32", 1, {2}, v}};
    char *w1 = th_path(dir, "w1.safetensors");
    char *w2 = th_path(dir, "w2.safetensors");
    th_write_st(w1, ts, 2, NULL);
    th_write_st(w2, ts + 2, 1, "{\"format\":\"pt\"}");
    char *path = th_path(dir, "in.tar");
    const char *names[] = {"w1.safetensors", "w2.safetensors"};
    const char *paths[] = {w1, w2};
    th_write_tar(path, names, paths, NULL, NULL, 2);
    tar_run t;
    extract(&t, path, 1ull << 40, 3, 1u << 30);
    ck_assert_msg(t.rc == 0, "%s", t.d.msg);
    ck_assert_uint_eq(t.set.tensors, 3);
    done(&t);
    extract(&t, path, 1ull << 40, 2, 1u << 30);
    expect_refused(&t, "at most 0 tensors are accepted"); // w1 took 2
    ck_assert_msg(strstr(t.d.msg, "w2.safetensors"), "%s", t.d.msg);
    done(&t);
    extract(&t, path, 1ull << 40, 0, 16);
    ck_assert_int_eq(t.rc, SH_EBUSY);
    ck_assert_msg(strstr(t.d.msg, "--max-header-memory"), "%s", t.d.msg);
    done(&t);
    free(path);
    free(w1);
    free(w2);
    th_rmtree(dir);
    free(dir);
}
END_TEST

// Links, devices and names that climb out are refused, naming the member.
START_TEST(test_tar_member_kinds)
{
    static const struct {
        const char *name;
        int kind;
        const char *words;
    } cases[] = {
        {"l", 1, "a symbolic link"},    {"h", 2, "a hard link"},
        {"c", 3, "a character device"}, {"../up", 0, "plain relative"},
        {"/abs", 0, "plain relative"},  {"a\\b", 0, "backslash"},
    };
    char *dir = th_tmpdir();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *names[] = {"config.json", cases[i].name};
        const char *data[] = {"{}", "x"};
        const int kinds[] = {0, cases[i].kind};
        char *path = tar_of(dir, names, data, kinds, 2);
        tar_run t;
        extract(&t, path, 1ull << 40, 0, 1u << 30);
        expect_refused(&t, cases[i].words);
        done(&t);
        free(path);
    }
    th_rmtree(dir);
    free(dir);
}
END_TEST

Suite *suite_tar(void)
{
    Suite *s = suite_create("tar");
    TCase *tc = tcase_create("members");
    tcase_add_loop_test(tc, test_tar_sparse_refused, 0, 3);
    tcase_add_test(tc, test_tar_name_limit);
    tcase_add_test(tc, test_tar_conflicts);
    tcase_add_test(tc, test_tar_byte_limit);
    tcase_add_test(tc, test_tar_tensor_and_header_limits);
    tcase_add_test(tc, test_tar_member_kinds);
    suite_add_tcase(s, tc);
    return s;
}

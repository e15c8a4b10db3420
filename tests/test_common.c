// test_common.c: errors, diagnostics, files, ids, SHA-256.
#include "tests/helpers.h"

#include "common/err.h"
#include "common/sha256.h"
#include "common/util.h"

#include <sched.h>
#include <string.h>
#include <unistd.h>

// Diagnostics: set, prefix, NULL-safety, truncation.
// Joined words never pass the buffer: a list longer than it is cut at a
// word and marked. (The spec's enum messages once joined names with
// snprintf's would-be lengths and wrote past 256 bytes.)
START_TEST(test_join_bounded)
{
    const char *words[40];
    for (size_t i = 0; i < 40; i++)
        words[i] = "a-rather-long-method-name";
    char buf[256 + 16];
    memset(buf, 'X', sizeof buf);
    ck_assert(!sh_join(buf, 256, words, 40, ", "));
    ck_assert_uint_lt(strlen(buf), 256);
    ck_assert(sh_str_ends_with(buf, "..."));
    for (size_t i = 256; i < sizeof buf; i++)
        ck_assert_int_eq(buf[i], 'X');
    ck_assert(sh_join(buf, 256, words, 3, ", "));
    ck_assert_str_eq(buf, "a-rather-long-method-name, a-rather-long-method-"
                          "name, a-rather-long-method-name");
    ck_assert(!sh_join(buf, 8, words, 1, ", "));
    ck_assert_str_eq(buf, "...");
    ck_assert(sh_join(buf, 8, words, 0, ", "));
    ck_assert_str_eq(buf, "");
}
END_TEST

START_TEST(test_diag_set_and_prefix)
{
    sh_diag d;
    sh_diag_clear(&d);
    ck_assert_int_eq(sh_diag_set(&d, SH_EFORMAT, "x", "bad %d", 7), SH_EFORMAT);
    ck_assert_str_eq(d.msg, "bad 7");
    ck_assert_str_eq(d.field, "x");
    sh_diag_prefix(&d, "file %s", "a.st");
    ck_assert_str_eq(d.msg, "file a.st: bad 7");
    ck_assert_int_eq(sh_diag_set(NULL, SH_EIO, NULL, "ignored"), SH_EIO);
    char big[1000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    sh_diag_set(&d, SH_EIO, "", "%s", big);
    sh_diag_prefix(&d, "%s", big);
    ck_assert_uint_eq(strlen(d.msg), sizeof d.msg - 1);
}
END_TEST

START_TEST(test_strerror_every_code)
{
    for (int c = 0; c > -SH_ERR_COUNT; c--) {
        ck_assert_str_ne(sh_strerror(c), "unknown error");
        ck_assert_str_ne(sh_err_name(c), "SH_EUNKNOWN");
    }
    ck_assert_str_eq(sh_strerror(-999), "unknown error");
}
END_TEST

// Names round-trip: the store keeps a job's error by its code's name.
START_TEST(test_err_parse_every_name)
{
    for (int c = 0; c > -SH_ERR_COUNT; c--) {
        int back = 1;
        ck_assert_int_eq(sh_err_parse(sh_err_name(c), &back), 0);
        ck_assert_int_eq(back, c);
    }
    int kept = 7;
    ck_assert_int_eq(sh_err_parse("SH_ENOPE", &kept), SH_EINVAL);
    ck_assert_int_eq(sh_err_parse(NULL, &kept), SH_EINVAL);
    ck_assert_int_eq(kept, 7);
}
END_TEST

// SHA-256 against known vectors, streaming and whole-file.
START_TEST(test_sha256_vectors)
{
    sh_sha256 s;
    char hex[SH_SHA256_HEX];
    ck_assert_int_eq(sh_sha256_init(&s), 0);
    sh_sha256_final(&s, hex);
    sh_sha256_deinit(&s);
    ck_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934c"
                          "a495991b7852b855");
    ck_assert_int_eq(sh_sha256_init(&s), 0);
    sh_sha256_update(&s, "a", 1);
    sh_sha256_update(&s, "bc", 2);
    sh_sha256_final(&s, hex);
    sh_sha256_deinit(&s);
    ck_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9c"
                          "b410ff61f20015ad");
    char *dir = th_tmpdir();
    char *p = th_path(dir, "f");
    th_write_file(p, "abc", 3);
    char hex2[SH_SHA256_HEX];
    ck_assert_int_eq(sh_sha256_file(p, hex2), 0);
    ck_assert_str_eq(hex, hex2);
    ck_assert(sh_sha256_is_hex(hex2));
    ck_assert(!sh_sha256_is_hex("abc"));
    char *missing = th_path(dir, "nope");
    ck_assert_int_eq(sh_sha256_file(missing, hex2), SH_ENOTFOUND);
    th_rmtree(dir);
    free(missing);
    free(p);
    free(dir);
}
END_TEST

// Files: atomic write, copy, mkdir -p, rm -rf, size limits.
START_TEST(test_files)
{
    char *dir = th_tmpdir();
    char *a = th_path(dir, "a.txt"), *b = th_path(dir, "x/y/b.txt");
    char *xy = th_path(dir, "x/y");
    ck_assert_int_eq(sh_file_write_atomic(a, "hello", 5), 0);
    ck_assert_int_eq(sh_mkdir_p(xy), 0);
    ck_assert_int_eq(sh_mkdir_p(xy), 0);
    ck_assert_int_eq(sh_file_copy(a, b, true), 0);
    char *text = NULL;
    size_t n = 0;
    ck_assert_int_eq(sh_file_read(b, 100, &text, &n), 0);
    ck_assert_str_eq(text, "hello");
    free(text);
    ck_assert_int_eq(sh_file_read(b, 3, &text, &n), SH_ETOOBIG);
    uint64_t size = 0;
    ck_assert_int_eq(sh_file_size(b, &size), 0);
    ck_assert_uint_eq(size, 5);
    char *x = th_path(dir, "x");
    ck_assert_int_eq(sh_rm_rf(x), 0);
    ck_assert(!sh_path_exists(b));
    ck_assert_int_eq(sh_rm_rf(x), 0); // absent is fine
    th_rmtree(dir);
    free(x);
    free(a);
    free(b);
    free(xy);
    free(dir);
}
END_TEST

// Ids and the constant-time compare.
START_TEST(test_ids_and_compare)
{
    char a[48], b[48];
    ck_assert_int_eq(sh_id_new(a, sizeof a, "job_"), 0);
    ck_assert_int_eq(sh_id_new(b, sizeof b, "job_"), 0);
    ck_assert_uint_eq(strlen(a), 24);
    ck_assert_str_ne(a, b);
    ck_assert(strncmp(a, "job_", 4) == 0);
    ck_assert(sh_consttime_eq("secret", 6, "secret", 6));
    ck_assert(!sh_consttime_eq("secret", 6, "secreT", 6));
    ck_assert(!sh_consttime_eq("secret", 6, "secret2", 7));
    ck_assert(!sh_consttime_eq("", 0, "a", 1));
    char small[8];
    ck_assert_int_eq(sh_id_new(small, sizeof small, "job_"), SH_ETOOBIG);
}
END_TEST

START_TEST(test_alloc_bulk)
{
    // Small buffers come from malloc; from 2 MiB up they are aligned to
    // 2 MiB (huge pages); the zeroed form is zero everywhere.
    unsigned char *small = sh_calloc_bulk(100);
    ck_assert_ptr_nonnull(small);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(small[i], 0);
    free(small);
    size_t n = (3u << 20) + 5;
    unsigned char *big = sh_calloc_bulk(n);
    ck_assert_ptr_nonnull(big);
    ck_assert_uint_eq((uintptr_t)big % (2u << 20), 0);
    size_t nonzero = 0;
    for (size_t i = 0; i < n; i++)
        nonzero += big[i] != 0;
    ck_assert_uint_eq(nonzero, 0);
    big[n - 1] = 1; // the whole size is ours
    free(big);
    ck_assert_ptr_null(sh_alloc_bulk(SIZE_MAX - 16));
}
END_TEST

// The CPU count follows the affinity mask (and so a `taskset` or a
// container's cpuset), never exceeds the online cores, never drops to 0.
START_TEST(test_cpu_count)
{
    int all = sh_cpu_count();
    ck_assert_int_ge(all, 1);
    ck_assert_int_le(all, (int)sysconf(_SC_NPROCESSORS_ONLN));
    cpu_set_t saved, one;
    ck_assert_int_eq(sched_getaffinity(0, sizeof saved, &saved), 0);
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &saved)) {
            CPU_SET(c, &one);
            break;
        }
    ck_assert_int_eq(sched_setaffinity(0, sizeof one, &one), 0);
    int pinned = sh_cpu_count();
    ck_assert_int_eq(sched_setaffinity(0, sizeof saved, &saved), 0);
    ck_assert_int_eq(pinned, 1);
    ck_assert_int_eq(sh_cpu_count(), all);
}
END_TEST

Suite *suite_common(void)
{
    Suite *s = suite_create("common");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_diag_set_and_prefix);
    tcase_add_test(tc, test_strerror_every_code);
    tcase_add_test(tc, test_err_parse_every_name);
    tcase_add_test(tc, test_sha256_vectors);
    tcase_add_test(tc, test_files);
    tcase_add_test(tc, test_ids_and_compare);
    tcase_add_test(tc, test_alloc_bulk);
    tcase_add_test(tc, test_cpu_count);
    tcase_add_test(tc, test_join_bounded);
    suite_add_tcase(s, tc);
    return s;
}

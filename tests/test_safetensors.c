// test_safetensors.c: the reader's validation, the stream check and the
// writer.
#include "tests/helpers.h"

#include "engine/io/safetensors.h"

#include <stdlib.h>
#include <string.h>

// --- malformed files: each is refused, with its own message.

typedef struct bad_case {
    const char *what;
    const char *header;
    int64_t len_override; // -1: the header's true length
    size_t data_len;      // zero bytes after the header
    const char *expect;   // substring of the reader's message
} bad_case;

#define F32(name, shape, b, e)                                                 \
    "\"" name "\":{\"dtype\":\"F32\",\"shape\":" shape                         \
    ",\"data_offsets\":[" #b "," #e "]}"

static const bad_case bad_cases[] = {
    {"empty file", "", 0, 0, "too short for the 8-byte header length"},
    {"header length over 100 MB", "{}", 100000001, 0,
     "exceeds the 100000000-byte limit"},
    {"header length past the end", "{}", 4096, 0,
     "runs past the end of the file"},
    {"zero header length", "{}", 0, 2, "header is empty"},
    {"not JSON", "{\"a\":", -1, 0, "not valid JSON"},
    {"JSON array", "[1,2]", -1, 0, "must be a JSON object"},
    {"duplicate names", "{" F32("a", "[1]", 0, 4) "," F32("a", "[1]", 4, 8) "}",
     -1, 8, "repeats a tensor name"},
    {"entry not an object", "{\"a\":[1,2]}", -1, 0, "entry must be an object"},
    {"missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 4,
     "missing \"dtype\""},
    {"dtype not a string",
     "{\"a\":{\"dtype\":5,\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 4,
     "\"dtype\" must be a string"},
    {"unknown dtype",
     "{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", -1, 4,
     "unknown dtype \"Q4\""},
    {"missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", -1,
     4, "missing \"shape\""},
    {"shape not an array", "{" F32("a", "7", 0, 4) "}", -1, 4,
     "\"shape\" must be an array"},
    {"negative dimension", "{" F32("a", "[2,-1]", 0, 4) "}", -1, 4,
     "shape[1] must be a non-negative integer"},
    {"fractional dimension", "{" F32("a", "[1.5]", 0, 4) "}", -1, 4,
     "shape[0] must be a non-negative integer"},
    {"too many dimensions", "{" F32("a", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", -1,
     4, "at most 8 are supported"},
    {"shape overflows", "{" F32("a", "[4294967296,4294967296]", 0, 4) "}", -1,
     4, "shape overflows 64 bits"},
    {"missing data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", -1, 4,
     "missing \"data_offsets\""},
    {"data_offsets of three", "{" F32("a", "[1]", 0, 4) "}", -1, 4, NULL},
    {"negative offset", "{" F32("a", "[1]", -4, 0) "}", -1, 4,
     "negative data offset"},
    {"end before begin", "{" F32("a", "[0]", 4, 0) "}", -1, 4,
     "end before they begin"},
    {"size does not match shape", "{" F32("a", "[2]", 0, 4) "}", -1, 4,
     "needs 8 bytes but data_offsets cover 4"},
    {"data truncated", "{" F32("a", "[4]", 0, 16) "}", -1, 8,
     "file truncated?"},
    {"overlap", "{" F32("a", "[2]", 0, 8) "," F32("b", "[2]", 4, 12) "}", -1,
     12, "overlap in the data area"},
    {"gap", "{" F32("a", "[1]", 0, 4) "," F32("b", "[1]", 8, 12) "}", -1, 12,
     "gap of 4 unused bytes"},
    {"gap at the start", "{" F32("a", "[1]", 4, 8) "}", -1, 8,
     "gap of 4 unused bytes in the data area before tensor \"a\""},
    {"trailing bytes", "{" F32("a", "[1]", 0, 4) "}", -1, 12,
     "8 bytes after the last tensor"},
    {"metadata not an object", "{\"__metadata__\":[1]}", -1, 0,
     "__metadata__ must be an object"},
    {"metadata value not a string", "{\"__metadata__\":{\"format\":1}}", -1, 0,
     "holds a non-string"},
    {"empty tensor name", "{" F32("", "[1]", 0, 4) "}", -1, 4, "empty name"},
    {"invalid UTF-8", "{\"\xff\xfe\":{}}", -1, 0, "not valid JSON"},
    {"data_offsets not integers",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",\"4\"]}}",
     -1, 4, "must be two integers"},
};

// The "data_offsets of three" case needs a header the macro cannot write.
static const char three_offsets[] =
    "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}";

static const bad_case *case_at(int i, bad_case *tmp)
{
    *tmp = bad_cases[i];
    if (!tmp->expect) {
        tmp->header = three_offsets;
        tmp->expect = "must be two integers";
    }
    return tmp;
}

START_TEST(test_malformed_file_refused)
{
    bad_case tmp;
    const bad_case *c = case_at(_i, &tmp);
    char *dir = th_tmpdir();
    char *path = th_path(dir, "bad.safetensors");
    unsigned char *zeros = calloc(1, c->data_len + 1);
    if (_i == 0)
        th_write_file(path, "", 0);
    else
        th_write_raw(path, c->header, c->len_override, zeros, c->data_len);
    eng_st *st = NULL;
    sh_diag d;
    sh_diag_clear(&d);
    int rc = eng_st_open(&st, path, &d);
    ck_assert_msg(rc != 0, "%s: accepted", c->what);
    ck_assert_ptr_null(st);
    ck_assert_int_eq(rc, SH_EFORMAT);
    ck_assert_msg(strstr(d.msg, c->expect), "%s: message \"%s\" lacks \"%s\"",
                  c->what, d.msg, c->expect);
    free(zeros);
    th_rmtree(dir);
    free(path);
    free(dir);
}
END_TEST

// The same bytes fed to the stream check (uploads) are refused too.
START_TEST(test_malformed_stream_refused)
{
    bad_case tmp;
    const bad_case *c = case_at(_i, &tmp);
    char *dir = th_tmpdir();
    char *path = th_path(dir, "bad.safetensors");
    unsigned char *zeros = calloc(1, c->data_len + 1);
    if (_i == 0)
        th_write_file(path, "", 0);
    else
        th_write_raw(path, c->header, c->len_override, zeros, c->data_len);
    size_t n = 0;
    unsigned char *bytes = th_read_file(path, &n);
    eng_st_check chk;
    eng_st_check_init(&chk);
    sh_diag d;
    sh_diag_clear(&d);
    // Feed in awkward 3-byte pieces.
    int rc = 0;
    for (size_t at = 0; at < n && rc == 0; at += 3)
        rc = eng_st_check_feed(&chk, bytes + at, n - at < 3 ? n - at : 3, &d);
    if (rc == 0)
        rc = eng_st_check_finish(&chk, &d);
    ck_assert_msg(rc != 0, "%s: stream accepted", c->what);
    ck_assert(d.msg[0] != '\0');
    eng_st_check_deinit(&chk);
    free(bytes);
    free(zeros);
    th_rmtree(dir);
    free(path);
    free(dir);
}
END_TEST

// Every case has its own message: no two expected texts are the same
// failure (cases sharing a message test the same rule twice on purpose).
START_TEST(test_malformed_messages_distinct)
{
    size_t n = sizeof bad_cases / sizeof bad_cases[0];
    size_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        bad_case ti;
        case_at((int)i, &ti);
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) {
            bad_case tj;
            case_at((int)j, &tj);
            seen = strcmp(ti.expect, tj.expect) == 0;
        }
        distinct += !seen;
    }
    ck_assert_uint_ge(distinct, 25);
}
END_TEST

// --- valid files

START_TEST(test_valid_file_read)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "ok.safetensors");
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[2] = {0x3f80, 0x4000};
    int32_t c[3] = {7, 8, 9};
    th_tensor ts[] = {
        {"w", "F32", 2, {2, 3}, a},
        {"b", "BF16", 1, {2}, b},
        {"ids", "I32", 1, {3}, c},
        {"empty", "F32", 2, {0, 3}, NULL},
    };
    th_write_st(path, ts, 4, "{\"format\":\"pt\",\"note\":\"x\"}");
    eng_st *st = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_st_open(&st, path, &d), 0);
    const eng_st_header *h = eng_st_header_of(st);
    ck_assert_uint_eq(h->count, 4);
    long i = eng_st_header_find(h, "w");
    ck_assert_int_ge(i, 0);
    ck_assert_int_eq(h->tensors[i].ndim, 2);
    ck_assert_uint_eq(h->tensors[i].numel, 6);
    float got[6];
    memcpy(got, eng_st_data(st, (size_t)i), sizeof got);
    ck_assert_float_eq(got[5], 6);
    ck_assert_str_eq(json_string_value(json_object_get(h->metadata, "note")),
                     "x");
    // Tensors come sorted by offset.
    for (size_t k = 1; k < h->count; k++)
        ck_assert_uint_le(h->tensors[k - 1].begin, h->tensors[k].begin);
    eng_st_release(st, (size_t)i);
    eng_st_close(st);
    th_rmtree(dir);
    free(path);
    free(dir);
}
END_TEST

// Writer: any write order, metadata kept plus format, 8-byte aligned data,
// and what it writes reads back identically.
START_TEST(test_writer_round_trip)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "out.safetensors");
    eng_tensor_info ts[2] = {
        {.name = "a",
         .dtype = ENG_DTYPE_F16,
         .ndim = 1,
         .shape = {3},
         .numel = 3},
        {.name = "b",
         .dtype = ENG_DTYPE_F32,
         .ndim = 2,
         .shape = {2, 2},
         .numel = 4},
    };
    json_t *meta = json_pack("{s:s}", "origin", "test");
    eng_st_writer *w = NULL;
    sh_diag d;
    ck_assert_int_eq(eng_st_writer_create(&w, path, ts, 2, meta, &d), 0);
    ck_assert_uint_eq(eng_st_writer_offset(w, 0) % 8, 0);
    float bv[4] = {1, 2, 3, 4};
    uint16_t av[3] = {1, 2, 3};
    ck_assert_int_eq(eng_st_writer_put(w, 1, 8, bv + 2, 8, &d), 0);
    ck_assert_int_eq(eng_st_writer_put(w, 1, 0, bv, 8, &d), 0);
    // Unfinished: tensor a is missing.
    ck_assert_int_ne(eng_st_writer_finish(w, false, &d), 0);
    ck_assert_int_eq(eng_st_writer_put(w, 0, 0, av, 6, &d), 0);
    ck_assert_int_eq(eng_st_writer_finish(w, true, &d), 0);
    eng_st_writer_destroy(w);

    eng_st *st = NULL;
    ck_assert_int_eq(eng_st_open(&st, path, &d), 0);
    const eng_st_header *h = eng_st_header_of(st);
    ck_assert_str_eq(json_string_value(json_object_get(h->metadata, "format")),
                     "pt");
    ck_assert_str_eq(json_string_value(json_object_get(h->metadata, "origin")),
                     "test");
    ck_assert_uint_eq(h->data_start % 8, 0);
    long b = eng_st_header_find(h, "b");
    ck_assert_int_eq(memcmp(eng_st_data(st, (size_t)b), bv, 16), 0);
    eng_st_close(st);

    // A second create on the same path refuses and leaves the file alone.
    ck_assert_int_ne(eng_st_writer_create(&w, path, ts, 2, NULL, &d), 0);
    ck_assert_int_eq(eng_st_open(&st, path, &d), 0);
    eng_st_close(st);
    json_decref(meta);
    th_rmtree(dir);
    free(path);
    free(dir);
}
END_TEST

// A destroyed, unfinished writer leaves no file behind.
START_TEST(test_writer_abandoned_removed)
{
    char *dir = th_tmpdir();
    char *path = th_path(dir, "out.safetensors");
    eng_tensor_info t = {.name = "a",
                         .dtype = ENG_DTYPE_F32,
                         .ndim = 1,
                         .shape = {1},
                         .numel = 1};
    eng_st_writer *w = NULL;
    ck_assert_int_eq(eng_st_writer_create(&w, path, &t, 1, NULL, NULL), 0);
    eng_st_writer_destroy(w);
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_null(f);
    th_rmtree(dir);
    free(path);
    free(dir);
}
END_TEST

// The stream check accepts a valid file fed in any split, and refuses a
// file with bytes missing or extra.
START_TEST(test_stream_check_valid_and_sizes)
{
    char *fx = th_fixture("mlp-fmnist/model.safetensors");
    size_t n = 0;
    unsigned char *bytes = th_read_file(fx, &n);
    // Small pieces over the header and the start of the data, then the
    // rest at once.
    const size_t splits[] = {1, 7, 4096, n};
    for (size_t s = 0; s < 4; s++) {
        eng_st_check c;
        eng_st_check_init(&c);
        sh_diag d;
        size_t at = 0;
        int rc = 0;
        for (; at < 20000 && at < n && rc == 0; at += splits[s])
            rc = eng_st_check_feed(&c, bytes + at,
                                   n - at < splits[s] ? n - at : splits[s], &d);
        if (at < n && rc == 0)
            rc = eng_st_check_feed(&c, bytes + at, n - at, &d);
        ck_assert_int_eq(rc, 0);
        ck_assert_int_eq(eng_st_check_finish(&c, &d), 0);
        ck_assert_uint_eq(c.h.count, 6);
        eng_st_check_deinit(&c);
    }
    eng_st_check c;
    sh_diag d;
    eng_st_check_init(&c);
    ck_assert_int_eq(eng_st_check_feed(&c, bytes, n - 1, &d), 0);
    ck_assert_int_ne(eng_st_check_finish(&c, &d), 0);
    ck_assert_ptr_nonnull(strstr(d.msg, "truncated"));
    eng_st_check_deinit(&c);
    eng_st_check_init(&c);
    ck_assert_int_eq(eng_st_check_feed(&c, bytes, n, &d), 0);
    ck_assert_int_ne(eng_st_check_feed(&c, "x", 1, &d), 0);
    ck_assert_ptr_nonnull(strstr(d.msg, "longer than its header"));
    eng_st_check_deinit(&c);
    free(bytes);
    free(fx);
}
END_TEST

// A lying header length costs no memory up front: only arrived bytes are
// buffered.
START_TEST(test_stream_check_lying_length)
{
    unsigned char head[8] = {0x00, 0xe1, 0xf5, 0x05, 0, 0, 0, 0}; // 1e8
    eng_st_check c;
    sh_diag d;
    eng_st_check_init(&c);
    ck_assert_int_eq(eng_st_check_feed(&c, head, 8, &d), 0);
    ck_assert_int_eq(eng_st_check_feed(&c, "{}", 2, &d), 0);
    ck_assert_int_ne(eng_st_check_finish(&c, &d), 0);
    ck_assert_ptr_nonnull(strstr(d.msg, "runs past the end"));
    eng_st_check_deinit(&c);
}
END_TEST

Suite *suite_safetensors(void)
{
    Suite *s = suite_create("safetensors");
    TCase *bad = tcase_create("malformed");
    int n = (int)(sizeof bad_cases / sizeof bad_cases[0]);
    tcase_add_loop_test(bad, test_malformed_file_refused, 0, n);
    tcase_add_loop_test(bad, test_malformed_stream_refused, 0, n);
    tcase_add_test(bad, test_malformed_messages_distinct);
    suite_add_tcase(s, bad);
    TCase *ok = tcase_create("valid");
    tcase_add_test(ok, test_valid_file_read);
    tcase_add_test(ok, test_writer_round_trip);
    tcase_add_test(ok, test_writer_abandoned_removed);
    tcase_add_test(ok, test_stream_check_valid_and_sizes);
    tcase_add_test(ok, test_stream_check_lying_length);
    suite_add_tcase(s, ok);
    return s;
}

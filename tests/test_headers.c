// test_headers.c: the request headers the API parses itself (api/parse.c):
// Range, Authorization, and the Content-Disposition it writes.
#include "tests/helpers.h"

#include "api/parse.h"

#include <stdio.h>
#include <string.h>

// Single ranges are served; malformed or backwards ones are ignored (the
// whole file, 200); one that starts past the end is 416.
START_TEST(test_range)
{
    static const struct {
        const char *h;
        int want;
        uint64_t from, to;
    } cases[] = {
        {"bytes=0-99", 1, 0, 99},
        {"bytes=10-", 1, 10, 999},
        {"bytes=-5", 1, 995, 999},
        {"bytes=-5000", 1, 0, 999},
        {"bytes=990-5000", 1, 990, 999},
        {"Bytes=1-1", 1, 1, 1},
        {"bytes=1000-", -1, 0, 0},
        {"bytes=-0", -1, 0, 0},
        {"bytes=99999999999999999999999-", -1, 0, 0},
        {"bytes=0-99999999999999999999999", 1, 0, 999},
        {"bytes=--5", 0, 0, 0},
        {"bytes=0--1", 0, 0, 0},
        {"bytes=5-4", 0, 0, 0},
        {"bytes=+1-2", 0, 0, 0},
        {"bytes= 1-2", 0, 0, 0},
        {"bytes=1-2 ", 0, 0, 0},
        {"bytes=0x10-", 0, 0, 0},
        {"bytes=1-2,4-5", 0, 0, 0},
        {"bytes=", 0, 0, 0},
        {"bytes=-", 0, 0, 0},
        {"items=0-1", 0, 0, 0},
        {"", 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint64_t from = 7, to = 7;
        int got = api_range_parse(cases[i].h, 1000, &from, &to);
        ck_assert_msg(got == cases[i].want, "\"%s\": %d, not %d", cases[i].h,
                      got, cases[i].want);
        if (got == 1) {
            ck_assert_msg(from == cases[i].from && to == cases[i].to,
                          "\"%s\": %llu-%llu", cases[i].h,
                          (unsigned long long)from, (unsigned long long)to);
        } else {
            ck_assert_msg(from == 7 && to == 7, "\"%s\" touched the range",
                          cases[i].h);
        }
    }
    ck_assert_int_eq(api_range_parse(NULL, 1000, NULL, NULL), 0);
    uint64_t f, t;
    ck_assert_int_eq(api_range_parse("bytes=0-", 0, &f, &t), -1);
}
END_TEST

// The scheme is case-insensitive (RFC 9110 11.1); spaces around the
// token do not count; anything else is no token.
START_TEST(test_bearer)
{
    static const struct {
        const char *h, *token;
    } cases[] = {
        {"Bearer abc", "abc"},  {"bearer abc", "abc"},
        {"BEARER abc", "abc"},  {"Bearer   abc  ", "abc"},
        {"Bearer\tabc", "abc"}, {"Bearer", NULL},
        {"Bearer ", NULL},      {"Bearerabc", NULL},
        {"Basic YWJj", NULL},   {"", NULL},
        {"Bearer a b", "a b"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *tok = NULL;
        size_t n = 0;
        bool ok = api_bearer_token(cases[i].h, &tok, &n);
        ck_assert_msg(ok == (cases[i].token != NULL), "\"%s\"", cases[i].h);
        if (ok)
            ck_assert_msg(n == strlen(cases[i].token) &&
                              memcmp(tok, cases[i].token, n) == 0,
                          "\"%s\" gave \"%.*s\"", cases[i].h, (int)n, tok);
    }
    const char *tok;
    size_t n;
    ck_assert(!api_bearer_token(NULL, &tok, &n));
}
END_TEST

// A file name with quotes, backslashes or bytes outside ASCII cannot
// break out of the quoted filename; the extended form keeps it exact.
START_TEST(test_content_disposition)
{
    char buf[1200];
    ck_assert(api_content_disposition(buf, sizeof buf, "model.safetensors"));
    ck_assert_str_eq(buf, "attachment; filename=\"model.safetensors\"; "
                          "filename*=UTF-8''model.safetensors");
    ck_assert(api_content_disposition(buf, sizeof buf,
                                      "sub/a\"b\\c;d\r\n\xc3\xa9.json"));
    ck_assert_str_eq(buf, "attachment; filename=\"a_b_c;d____.json\"; "
                          "filename*=UTF-8''a%22b%5Cc%3Bd%0D%0A%C3%A9.json");
    char small[16];
    ck_assert(!api_content_disposition(small, sizeof small, "x"));
    ck_assert_uint_eq(strlen(small), sizeof small - 1);
    char name[256];
    memset(name, '"', 255);
    name[255] = '\0';
    ck_assert(api_content_disposition(buf, sizeof buf, name));
}
END_TEST

Suite *suite_headers(void)
{
    Suite *s = suite_create("headers");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, test_range);
    tcase_add_test(tc, test_bearer);
    tcase_add_test(tc, test_content_disposition);
    suite_add_tcase(s, tc);
    return s;
}

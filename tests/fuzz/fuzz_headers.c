// fuzz_headers.c: the Range and Authorization parsers and the
// Content-Disposition writer on any text: a satisfiable range lies inside
// the file, a token lies inside its header, a disposition is always
// terminated and never breaks out of its quotes.
#include "api/parse.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t n)
{
    if (n < 8)
        return 0;
    uint64_t size = 0;
    for (int i = 0; i < 8; i++)
        size = size << 8 | data[i];
    size >>= data[0] & 63; // small sizes too
    char *text = malloc(n - 8 + 1);
    if (!text)
        return 0;
    memcpy(text, data + 8, n - 8);
    text[n - 8] = '\0';

    uint64_t from = 0, to = 0;
    int r = api_range_parse(text, size, &from, &to);
    assert(r >= -1 && r <= 1);
    if (r == 1)
        assert(size > 0 && from <= to && to < size);

    const char *tok = NULL;
    size_t len = 0;
    if (api_bearer_token(text, &tok, &len))
        assert(len > 0 && tok >= text && tok + len <= text + strlen(text));

    char buf[600];
    api_content_disposition(buf, sizeof buf, text);
    size_t bl = strlen(buf);
    assert(bl < sizeof buf);
    const char *q = strchr(buf, '"');
    if (q) { // the quoted name holds no quote, backslash or control byte
        const char *end = strstr(q + 1, "\"; filename*=");
        for (const char *p = q + 1; end && p < end; p++)
            assert(*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20);
    }
    free(text);
    return 0;
}

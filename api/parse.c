// parse.c: Range, Authorization and Content-Disposition, strictly.
#include "api/parse.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

// Reads 1DIGIT+ at *p. Saturates at UINT64_MAX (the caller only compares).
static bool read_digits(const char **p, uint64_t *out)
{
    const char *s = *p;
    uint64_t v = 0;
    while (*s >= '0' && *s <= '9') {
        unsigned dg = (unsigned)(*s - '0');
        v = v > (UINT64_MAX - dg) / 10 ? UINT64_MAX : v * 10 + dg;
        s++;
    }
    if (s == *p)
        return false;
    *p = s;
    *out = v;
    return true;
}

int api_range_parse(const char *h, uint64_t size, uint64_t *from, uint64_t *to)
{
    if (!h || strncasecmp(h, "bytes=", 6) != 0)
        return 0;
    const char *p = h + 6;
    uint64_t a = 0, b = 0;
    if (*p == '-') { // the last n bytes
        p++;
        if (!read_digits(&p, &b) || *p)
            return 0;
        if (b == 0 || size == 0)
            return -1;
        *from = b >= size ? 0 : size - b;
        *to = size - 1;
        return 1;
    }
    if (!read_digits(&p, &a) || *p++ != '-')
        return 0;
    bool open_end = *p == '\0';
    if (!open_end && (!read_digits(&p, &b) || *p || b < a))
        return 0; // malformed, several ranges, or backwards: ignored
    if (a >= size)
        return -1;
    *from = a;
    *to = open_end || b >= size ? size - 1 : b;
    return 1;
}

bool api_bearer_token(const char *h, const char **token, size_t *len)
{
    if (!h || strncasecmp(h, "Bearer", 6) != 0 || (h[6] != ' ' && h[6] != '\t'))
        return false;
    const char *t = h + 6;
    while (*t == ' ' || *t == '\t')
        t++;
    size_t n = strlen(t);
    while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        n--;
    if (n == 0)
        return false;
    *token = t;
    *len = n;
    return true;
}

// RFC 8187 attr-char: ALPHA / DIGIT / "!#$&+-.^_`|~".
static bool attr_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || (c && strchr("!#$&+-.^_`|~", c));
}

bool api_content_disposition(char *buf, size_t size, const char *name)
{
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    size_t k = 0;
    bool fits = true;
#define PUT(c)                                                                 \
    do {                                                                       \
        if (k + 1 < size)                                                      \
            buf[k++] = (char)(c);                                              \
        else                                                                   \
            fits = false;                                                      \
    } while (0)
    const char *lead = "attachment; filename=\"";
    for (const char *s = lead; *s; s++)
        PUT(*s);
    for (const unsigned char *s = (const unsigned char *)base; *s; s++)
        PUT(*s >= 0x20 && *s < 0x7f && *s != '"' && *s != '\\' ? *s : '_');
    const char *ext = "\"; filename*=UTF-8''";
    for (const char *s = ext; *s; s++)
        PUT(*s);
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *s = (const unsigned char *)base; *s; s++) {
        if (attr_char(*s)) {
            PUT(*s);
        } else {
            PUT('%');
            PUT(hex[*s >> 4]);
            PUT(hex[*s & 15]);
        }
    }
#undef PUT
    if (size)
        buf[k < size ? k : size - 1] = '\0';
    return fits;
}

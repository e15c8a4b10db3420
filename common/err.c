// err.c: error code strings and diagnostics.
#include "common/err.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#define SH_ERR_COUNT_ONE(name, value, text) +1
static_assert(0 SH_ERRORS(SH_ERR_COUNT_ONE) == SH_ERR_COUNT,
              "SH_ERR_COUNT must match the SH_ERRORS table");
#undef SH_ERR_COUNT_ONE

const char *sh_strerror(int code)
{
    switch (code) {
#define SH_ERR_TEXT(name, value, text)                                         \
    case name: return text;
        SH_ERRORS(SH_ERR_TEXT)
#undef SH_ERR_TEXT
    }
    return "unknown error";
}

const char *sh_err_name(int code)
{
    switch (code) {
#define SH_ERR_NAME(name, value, text)                                         \
    case name: return #name;
        SH_ERRORS(SH_ERR_NAME)
#undef SH_ERR_NAME
    }
    return "SH_EUNKNOWN";
}

int sh_err_parse(const char *name, int *code)
{
    static const struct {
        const char *name;
        int code;
    } names[] = {
#define SH_ERR_ROW(n, value, text) {#n, n},
        SH_ERRORS(SH_ERR_ROW)
#undef SH_ERR_ROW
    };
    for (size_t i = 0; name && i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i].name) == 0) {
            *code = names[i].code;
            return 0;
        }
    }
    return SH_EINVAL;
}

int sh_diag_vset(sh_diag *d, int code, const char *field, const char *fmt,
                 va_list ap)
{
    if (!d)
        return code;
    d->code = code;
    snprintf(d->field, sizeof d->field, "%s", field ? field : "");
    vsnprintf(d->msg, sizeof d->msg, fmt, ap);
    return code;
}

int sh_diag_set(sh_diag *d, int code, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sh_diag_vset(d, code, field, fmt, ap);
    va_end(ap);
    return code;
}

void sh_diag_clear(sh_diag *d)
{
    if (!d)
        return;
    d->code = 0;
    d->field[0] = '\0';
    d->msg[0] = '\0';
}

void sh_diag_prefix(sh_diag *d, const char *fmt, ...)
{
    if (!d)
        return;
    char head[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    // Shift the old message right and put "head: " in front, truncating
    // the tail if the two do not fit.
    size_t hl = strlen(head), ml = strlen(d->msg), cap = sizeof d->msg - 1;
    if (hl + 2 > cap)
        hl = cap - 2;
    if (hl + 2 + ml > cap)
        ml = cap - hl - 2;
    memmove(d->msg + hl + 2, d->msg, ml);
    memcpy(d->msg, head, hl);
    d->msg[hl] = ':';
    d->msg[hl + 1] = ' ';
    d->msg[hl + 2 + ml] = '\0';
}

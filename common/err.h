// err.h: the one error convention of shears, shared by every module.
//
// Functions return int: 0 on success, a negative SH_E* code on failure.
// Results travel through out-parameters, which are left untouched on
// failure unless a contract comment says otherwise. Where a failure needs
// words for a person (a malformed file, a bad field), the function also
// fills an sh_diag the caller passes in: the message names what and where.
// Only api/ maps codes to HTTP statuses, through one table.
#ifndef SH_ERR_H
#define SH_ERR_H

#include <stdarg.h>
#include <stddef.h>

// X(name, value, text)
#define SH_ERRORS(X)                                                           \
    X(SH_OK, 0, "ok")                                                          \
    X(SH_ENOMEM, -1, "out of memory")                                          \
    X(SH_EIO, -2, "input/output error")                                        \
    X(SH_EINVAL, -3, "invalid argument")                                       \
    X(SH_EFORMAT, -4, "malformed input")                                       \
    X(SH_EUNSUPPORTED, -5, "unsupported")                                      \
    X(SH_ENOTFOUND, -6, "not found")                                           \
    X(SH_ECONFLICT, -7, "conflict")                                            \
    X(SH_ECANCELED, -8, "cancelled")                                           \
    X(SH_ETOOBIG, -9, "too large")                                             \
    X(SH_ESPEC, -10, "invalid job spec")                                       \
    X(SH_ENUMERIC, -11, "numerical failure")                                   \
    X(SH_EBUSY, -12, "busy")                                                   \
    X(SH_EDB, -13, "database error")                                           \
    X(SH_EAUTH, -14, "unauthorized")                                           \
    X(SH_ESHUTDOWN, -15, "shutting down")                                      \
    X(SH_ENOSPC, -16, "no space left on the device")                           \
    X(SH_EINTERRUPTED, -17, "interrupted too often")

enum {
#define SH_ERR_ENUM(name, value, text) name = value,
    SH_ERRORS(SH_ERR_ENUM)
#undef SH_ERR_ENUM
        SH_ERR_COUNT = 18
};

// sh_strerror returns a static string for a code; never NULL.
const char *sh_strerror(int code);

// sh_err_name returns the code's symbolic name ("SH_EFORMAT"); never NULL.
const char *sh_err_name(int code);

// sh_err_parse sets *code from a symbolic name and returns 0, or returns
// SH_EINVAL (leaving *code) for a name that is not one of the codes.
int sh_err_parse(const char *name, int *code);

// A diagnostic: the words behind an error code. `field` names the offending
// input (a JSON field such as "sparsity", a tensor name, a file name) and may
// be empty. Callers own the struct; functions only write into it.
typedef struct sh_diag {
    int code;
    char field[128];
    char msg[384];
} sh_diag;

// sh_diag_set formats a message into d (which may be NULL), stores code and
// field, and returns code, so a failure reads `return sh_diag_set(...)`.
// A message already set is overwritten.
int sh_diag_set(sh_diag *d, int code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

// sh_diag_vset is sh_diag_set with a va_list.
int sh_diag_vset(sh_diag *d, int code, const char *field, const char *fmt,
                 va_list ap) __attribute__((format(printf, 4, 0)));

// sh_diag_clear empties d (which may be NULL).
void sh_diag_clear(sh_diag *d);

// sh_diag_prefix prepends "<prefix>: " to d's message, keeping code and field.
void sh_diag_prefix(sh_diag *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif

// log.c: JSON-lines logger on stderr.
#include "common/log.h"

#include "common/err.h"
#include "common/util.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

sh_log_level sh_log_threshold = SH_LOG_INFO;

static const char *const level_names[SH_LOG_LEVEL_COUNT] = {
    [SH_LOG_ERROR] = "error",
    [SH_LOG_WARN] = "warn",
    [SH_LOG_INFO] = "info",
    [SH_LOG_DEBUG] = "debug",
};
static_assert(sizeof level_names / sizeof level_names[0] == SH_LOG_LEVEL_COUNT,
              "one name per level");

int sh_log_level_parse(const char *word, sh_log_level *out)
{
    for (int i = 0; i < SH_LOG_LEVEL_COUNT; i++) {
        if (strcmp(word, level_names[i]) == 0) {
            *out = (sh_log_level)i;
            return 0;
        }
    }
    return SH_EINVAL;
}

const char *sh_log_num(char buf[32], double v)
{
    buf[0] = '\x01';
    if (v == (double)(long long)v && v > -1e15 && v < 1e15)
        snprintf(buf + 1, 31, "%lld", (long long)v);
    else
        snprintf(buf + 1, 31, "%.6g", v);
    return buf;
}

typedef struct line {
    char buf[4096];
    size_t len;
} line;

static void put(line *l, const char *s, size_t n)
{
    if (l->len + n > sizeof l->buf - 2)
        n = sizeof l->buf - 2 - l->len;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_str(line *l, const char *s) { put(l, s, strlen(s)); }

static void put_json_string(line *l, const char *s)
{
    char esc[8];
    put(l, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            put(l, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            put(l, esc, 6);
        } else {
            put(l, (const char *)p, 1);
        }
    }
    put(l, "\"", 1);
}

static void begin(line *l, sh_log_level level, const char *msg)
{
    char stamp[40];
    sh_time_rfc3339(stamp, sizeof stamp, sh_time_now_ms());
    l->len = 0;
    put_str(l, "{\"time\":\"");
    put_str(l, stamp);
    put_str(l, "\",\"level\":\"");
    put_str(l, level_names[level]);
    put_str(l, "\",\"msg\":");
    put_json_string(l, msg);
}

static void finish(line *l)
{
    l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
    ssize_t r = write(STDERR_FILENO, l->buf, l->len);
    (void)r;
}

void sh_log_write(sh_log_level level, const char *msg, ...)
{
    line l;
    begin(&l, level, msg);
    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (!key)
            break;
        const char *val = va_arg(ap, const char *);
        if (!val)
            continue; // absent values are left out
        put(&l, ",", 1);
        put_json_string(&l, key);
        put(&l, ":", 1);
        if (val[0] == '\x01')
            put_str(&l, val + 1);
        else
            put_json_string(&l, val);
    }
    va_end(ap);
    finish(&l);
}

void sh_log_writef(sh_log_level level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    line l;
    begin(&l, level, msg);
    finish(&l);
}

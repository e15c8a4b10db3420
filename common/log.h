// log.h: one JSON object per line on stderr.
//
// Each record carries "time" (RFC 3339, UTC, milliseconds), "level", "msg"
// and any extra key/value pairs. The macros check the level before they
// format anything, so a disabled debug line costs one comparison.
//
//   SH_INFO("job finished", "job", id, "status", "succeeded");
//   SH_ERRORF("cannot open %s", path);
//
// Extra pairs are string keys and string values, NULL-terminated by the
// macro. Values are escaped as JSON strings; a value that starts with the
// byte '\x01' is written raw (a number or literal), see sh_log_num(); a
// NULL value leaves its pair out.
//
// Thread safety: every call writes its line with a single write(2), so lines
// from different threads never interleave. The level is set once at start-up.
#ifndef SH_LOG_H
#define SH_LOG_H

#include <stdint.h>

typedef enum sh_log_level {
    SH_LOG_ERROR,
    SH_LOG_WARN,
    SH_LOG_INFO,
    SH_LOG_DEBUG,
    SH_LOG_LEVEL_COUNT
} sh_log_level;

// The configured level; records above it are dropped. Set at start-up only.
extern sh_log_level sh_log_threshold;

// sh_log_level_parse maps "error", "warn", "info", "debug" to a level.
// Returns 0 and sets *out, or SH_EINVAL for another word.
int sh_log_level_parse(const char *word, sh_log_level *out);

// sh_log_write emits one record: msg plus NULL-terminated key, value pairs.
void sh_log_write(sh_log_level level, const char *msg, ...);

// sh_log_writef emits one record whose msg is printf-formatted.
void sh_log_writef(sh_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

// sh_log_num formats v into buf as a raw JSON number value for a pair.
const char *sh_log_num(char buf[32], double v);

#define SH_LOG(level, ...)                                                     \
    do {                                                                       \
        if ((level) <= sh_log_threshold)                                       \
            sh_log_write((level), __VA_ARGS__, (const char *)0);               \
    } while (0)
#define SH_LOGF(level, ...)                                                    \
    do {                                                                       \
        if ((level) <= sh_log_threshold)                                       \
            sh_log_writef((level), __VA_ARGS__);                               \
    } while (0)

#define SH_ERROR(...) SH_LOG(SH_LOG_ERROR, __VA_ARGS__)
#define SH_WARN(...) SH_LOG(SH_LOG_WARN, __VA_ARGS__)
#define SH_INFO(...) SH_LOG(SH_LOG_INFO, __VA_ARGS__)
#define SH_DEBUG(...) SH_LOG(SH_LOG_DEBUG, __VA_ARGS__)
#define SH_ERRORF(...) SH_LOGF(SH_LOG_ERROR, __VA_ARGS__)
#define SH_WARNF(...) SH_LOGF(SH_LOG_WARN, __VA_ARGS__)
#define SH_INFOF(...) SH_LOGF(SH_LOG_INFO, __VA_ARGS__)
#define SH_DEBUGF(...) SH_LOGF(SH_LOG_DEBUG, __VA_ARGS__)

#endif

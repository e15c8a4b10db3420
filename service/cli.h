// cli.h: the subcommands of the shears binary, and what they share.
//
// Exit codes: 0 success, 1 failure, 2 usage error. Every error is one line
// on stderr: "shears: error: <what and where>".
#ifndef SVC_CLI_H
#define SVC_CLI_H

#include "common/err.h"
#include "engine/hooks.h"

#include <stdbool.h>
#include <stdint.h>

enum { SVC_EXIT_OK = 0, SVC_EXIT_FAIL = 1, SVC_EXIT_USAGE = 2 };

int svc_cmd_prune(int argc, char **argv);
int svc_cmd_inspect(int argc, char **argv);
int svc_cmd_eval(int argc, char **argv);
int svc_cmd_grad(int argc, char **argv);
int svc_cmd_serve(int argc, char **argv);
int svc_cmd_decompress(int argc, char **argv);
int svc_cmd_sensitivity(int argc, char **argv);
int svc_cmd_merge(int argc, char **argv);
int svc_cmd_sweep(int argc, char **argv);

// An output folder that appears whole or not at all. svc_out_check: --out
// may be used (absent, or an empty folder; else prints why, returns -1).
// svc_out_begin makes the hidden sibling the run writes into (tmp);
// svc_out_commit renames it into place (tmp emptied). Both print their
// error and return -1 on failure; the caller removes a tmp left set.
int svc_out_check(const char *out);
int svc_out_begin(const char *out, char *tmp, size_t size);
int svc_out_commit(char *tmp, const char *out, bool sync);

// Prints "shears: error: ..." and returns code, for `return svc_fail(...)`.
int svc_fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

// Prints a diagnostic as one line: "shears: error: <prefix>: <field>: msg".
int svc_fail_diag(int code, const char *prefix, const sh_diag *d);

// Strict number parsing for flags: the whole word must be the number.
bool svc_parse_double(const char *s, double *out);
bool svc_parse_u64(const char *s, uint64_t *out);

// --- progress on stderr: a bar on a terminal, plain lines otherwise.

typedef struct svc_progress {
    bool tty;
    bool quiet;
    double start;
    double last;
    char last_phase[32];
} svc_progress;

void svc_progress_init(svc_progress *p, bool quiet);
// The callback for eng_hooks.progress; ctx is an svc_progress.
void svc_progress_cb(void *ctx, const eng_progress *e);
// Ends a bar's line.
void svc_progress_done(svc_progress *p);

// Cancellation by SIGINT/SIGTERM for batch commands: installs handlers;
// svc_interrupted is the eng_hooks.cancelled callback.
void svc_catch_interrupts(void);
bool svc_interrupted(void *ctx);

#endif

// cli_common.c: errors, number parsing, progress, interrupts and output
// folders for the batch subcommands.
#include "service/cli.h"

#include "common/util.h"

#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int svc_fail(int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "shears: error: %s\n", msg);
    return code;
}

int svc_fail_diag(int code, const char *prefix, const sh_diag *d)
{
    const char *msg = d->msg[0] ? d->msg : sh_strerror(d->code);
    if (prefix && prefix[0])
        return svc_fail(code, "%s: %s", prefix, msg);
    return svc_fail(code, "%s", msg);
}

bool svc_parse_double(const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return false;
    *out = v;
    return true;
}

bool svc_parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    if (s[0] == '-' || s[0] == '\0')
        return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

// --- progress

void svc_progress_init(svc_progress *p, bool quiet)
{
    memset(p, 0, sizeof *p);
    p->tty = isatty(STDERR_FILENO);
    p->quiet = quiet;
    p->start = sh_time_mono();
}

void svc_progress_cb(void *ctx, const eng_progress *e)
{
    svc_progress *p = ctx;
    if (p->quiet)
        return;
    double now = sh_time_mono();
    bool new_phase = strncmp(p->last_phase, e->phase, sizeof p->last_phase);
    bool last = e->fraction >= 1.0;
    if (!new_phase && !last && now - p->last < (p->tty ? 0.1 : 2.0))
        return;
    p->last = now;
    snprintf(p->last_phase, sizeof p->last_phase, "%s", e->phase);
    double elapsed = now - p->start;
    double eta =
        e->fraction > 0.01 ? elapsed * (1 - e->fraction) / e->fraction : -1;
    char done[32], total[32], eta_text[32] = "--";
    sh_format_bytes(done, sizeof done, (double)e->bytes_done);
    sh_format_bytes(total, sizeof total, (double)e->bytes_total);
    if (eta >= 0)
        snprintf(eta_text, sizeof eta_text, "%.0fs", eta);
    int pct = (int)(e->fraction * 100 + 0.5);
    if (p->tty) {
        char bar[31];
        int fill = (int)(e->fraction * 30);
        for (int i = 0; i < 30; i++)
            bar[i] = i < fill ? '#' : '-';
        bar[30] = '\0';
        fprintf(stderr, "\r\033[K[%s] %3d%% %s %zu/%zu%s%s %s/%s ETA %s", bar,
                pct, e->phase, e->step, e->steps, e->stage ? " " : "",
                e->stage ? e->stage : "", done, total, eta_text);
    } else {
        fprintf(stderr, "%3d%% %s %zu/%zu %s %s/%s eta %s\n", pct, e->phase,
                e->step, e->steps, e->tensor ? e->tensor : "", done, total,
                eta_text);
    }
    fflush(stderr);
}

void svc_progress_done(svc_progress *p)
{
    if (p->tty && !p->quiet && p->last > 0)
        fputc('\n', stderr);
}

// --- interrupts

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

void svc_catch_interrupts(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

bool svc_interrupted(void *ctx)
{
    (void)ctx;
    return interrupted != 0;
}

// --- output folders

int svc_out_check(const char *out)
{
    if (!sh_path_exists(out))
        return 0;
    DIR *d = opendir(out);
    bool empty = d != NULL;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            empty = false;
    if (d)
        closedir(d);
    if (empty)
        return 0;
    svc_fail(SVC_EXIT_USAGE, "--out %s exists and is not an empty folder", out);
    return -1;
}

int svc_out_begin(const char *out, char *tmp, size_t size)
{
    char outcopy[4096], basecopy[4096];
    snprintf(outcopy, sizeof outcopy, "%s", out);
    snprintf(basecopy, sizeof basecopy, "%s", out);
    const char *parent = dirname(outcopy);
    const char *base = basename(basecopy);
    tmp[0] = '\0';
    if (!sh_path_is_dir(parent)) {
        svc_fail(SVC_EXIT_FAIL, "--out: folder %s does not exist", parent);
        return -1;
    }
    if (snprintf(tmp, size, "%s/.%s.partial-XXXXXX", parent, base) >=
            (int)size ||
        !mkdtemp(tmp)) {
        svc_fail(SVC_EXIT_FAIL, "--out: cannot create a folder beside %s: %s",
                 out, strerror(errno));
        tmp[0] = '\0';
        return -1;
    }
    return 0;
}

int svc_out_commit(char *tmp, const char *out, bool sync)
{
    chmod(tmp, 0755); // mkdtemp made it private
    if (sh_path_exists(out) && rmdir(out) != 0) {
        svc_fail(SVC_EXIT_FAIL, "--out %s: cannot replace: %s", out,
                 strerror(errno));
        return -1;
    }
    if (rename(tmp, out) != 0) {
        svc_fail(SVC_EXIT_FAIL, "cannot move the result to %s: %s", out,
                 strerror(errno));
        return -1;
    }
    tmp[0] = '\0';
    char outcopy[4096];
    snprintf(outcopy, sizeof outcopy, "%s", out);
    if (sync)
        sh_fsync_path(dirname(outcopy));
    return 0;
}

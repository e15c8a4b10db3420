// util.c: time, file, id and string helpers.
#include "common/util.h"

#include "common/err.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

// --- time

int64_t sh_time_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double sh_time_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void sh_time_rfc3339(char *buf, size_t size, int64_t ms)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

// --- files

int sh_errno_code(int err)
{
    switch (err) {
    case ENOSPC:
    case EDQUOT: return SH_ENOSPC;
    case ENOENT: return SH_ENOTFOUND;
    case ENOMEM: return SH_ENOMEM;
    default: return SH_EIO;
    }
}

void sh_path_scrub(char *msg, size_t size, const char *prefix, const char *with)
{
    size_t pn = prefix ? strlen(prefix) : 0, wn = strlen(with);
    if (pn == 0 || size == 0)
        return;
    char *at = msg;
    while ((at = strstr(at, prefix))) {
        size_t tail = strlen(at + pn);
        size_t room = size - (size_t)(at - msg) - 1; // bytes after at
        if (wn > room)
            wn = room;
        size_t keep = tail < room - wn ? tail : room - wn;
        memmove(at + wn, at + pn, keep);
        memcpy(at, with, wn);
        at[wn + keep] = '\0';
        at += wn;
    }
}

int sh_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return sh_errno_code(errno);
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int sh_pwrite_all(int fd, const void *buf, size_t n, off_t off)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return sh_errno_code(errno);
        }
        p += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

int sh_file_read(const char *path, size_t max, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? SH_ENOTFOUND : SH_EIO;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return SH_EIO;
    }
    if ((uint64_t)st.st_size > max) {
        close(fd);
        return SH_ETOOBIG;
    }
    size_t n = (size_t)st.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        close(fd);
        return SH_ENOMEM;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != n) {
        free(buf);
        return SH_EIO;
    }
    buf[n] = '\0';
    *out = buf;
    if (len)
        *len = n;
    return 0;
}

static int dir_of(const char *path, char *dir, size_t size)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(dir, size, ".");
        return 0;
    }
    size_t n = (size_t)(slash - path);
    if (n == 0)
        n = 1;
    if (n >= size)
        return SH_ETOOBIG;
    memcpy(dir, path, n);
    dir[n] = '\0';
    return 0;
}

int sh_fsync_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return sh_errno_code(errno);
    int rc = fsync(fd) == 0 ? 0 : sh_errno_code(errno);
    close(fd);
    return rc;
}

int sh_file_write_atomic(const char *path, const void *data, size_t n)
{
    char tmp[4096], dir[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%d", path, (int)getpid()) >=
            (int)sizeof tmp ||
        dir_of(path, dir, sizeof dir) != 0)
        return SH_ETOOBIG;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return sh_errno_code(errno);
    int rc = sh_write_all(fd, data, n);
    if (rc == 0 && fsync(fd) != 0)
        rc = sh_errno_code(errno);
    if (close(fd) != 0 && rc == 0)
        rc = sh_errno_code(errno);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = sh_errno_code(errno);
    if (rc != 0) {
        unlink(tmp);
        return rc;
    }
    return sh_fsync_path(dir);
}

int sh_file_copy(const char *src, const char *dst, bool sync)
{
    int in = open(src, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (in < 0)
        return errno == ENOENT ? SH_ENOTFOUND : SH_EIO;
    int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0) {
        int e = errno;
        close(in);
        return sh_errno_code(e);
    }
    int rc = 0;
    bool kernel = true;
    char *buf = NULL;
    for (;;) {
        ssize_t n;
        if (kernel) {
            n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0);
            if (n < 0 && (errno == EXDEV || errno == ENOSYS ||
                          errno == EINVAL || errno == EOPNOTSUPP)) {
                kernel = false;
                continue;
            }
        } else {
            if (!buf && !(buf = malloc(1 << 20))) {
                rc = SH_ENOMEM;
                break;
            }
            n = read(in, buf, 1 << 20);
            if (n > 0 && (rc = sh_write_all(out, buf, (size_t)n)) != 0)
                break;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = sh_errno_code(errno);
            break;
        }
        if (n == 0)
            break;
    }
    free(buf);
    if (rc == 0 && sync && fsync(out) != 0)
        rc = sh_errno_code(errno);
    if (close(out) != 0 && rc == 0)
        rc = sh_errno_code(errno);
    close(in);
    if (rc != 0)
        unlink(dst);
    return rc;
}

int sh_mkdir_p(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return SH_EINVAL;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return sh_errno_code(errno);
        buf[i] = c;
    }
    return sh_path_is_dir(path) ? 0 : SH_EIO;
}

int sh_rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : SH_EIO;
    if (!S_ISDIR(st.st_mode))
        return unlink(path) == 0 || errno == ENOENT ? 0 : SH_EIO;
    DIR *d = opendir(path);
    if (!d)
        return SH_EIO;
    int rc = 0;
    struct dirent *e;
    char child[4096];
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (sh_path_join(child, sizeof child, path, e->d_name) != 0 ||
            sh_rm_rf(child) != 0)
            rc = SH_EIO;
    }
    closedir(d);
    if (rmdir(path) != 0 && errno != ENOENT)
        rc = SH_EIO;
    return rc;
}

bool sh_path_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

bool sh_path_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int sh_file_size(const char *path, uint64_t *out)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return errno == ENOENT ? SH_ENOTFOUND : SH_EIO;
    *out = (uint64_t)st.st_size;
    return 0;
}

int sh_path_join(char *buf, size_t size, const char *a, const char *b)
{
    size_t la = strlen(a);
    bool slash = la > 0 && a[la - 1] == '/';
    int n = snprintf(buf, size, "%s%s%s", a, slash ? "" : "/", b);
    return n < 0 || (size_t)n >= size ? SH_ETOOBIG : 0;
}

// --- ids and randomness

int sh_random_bytes(void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return SH_EIO;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int sh_id_new(char *out, size_t size, const char *prefix)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    unsigned char raw[20];
    int rc = sh_random_bytes(raw, sizeof raw);
    if (rc != 0)
        return rc;
    size_t plen = strlen(prefix);
    if (size < plen + sizeof raw + 1)
        return SH_ETOOBIG;
    memcpy(out, prefix, plen);
    for (size_t i = 0; i < sizeof raw; i++)
        out[plen + i] = alphabet[raw[i] & 31];
    out[plen + sizeof raw] = '\0';
    return 0;
}

bool sh_consttime_eq(const void *a, size_t alen, const void *b, size_t blen)
{
    // Compare over the longer length so the time depends on it alone.
    const unsigned char *pa = a, *pb = b;
    size_t n = alen > blen ? alen : blen;
    unsigned diff = (unsigned)(alen ^ blen);
    for (size_t i = 0; i < n; i++) {
        unsigned ca = i < alen ? pa[i] : 0;
        unsigned cb = i < blen ? pb[i] : 0;
        diff |= ca ^ cb;
    }
    return diff == 0;
}

// --- strings

bool sh_str_ends_with(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && memcmp(s + ls - lx, suffix, lx) == 0;
}

bool sh_strlcpy(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    bool fits = n < size;
    if (!fits)
        n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
    return fits;
}

char *sh_strdup(const char *s) { return s ? strdup(s) : NULL; }

int sh_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

size_t sh_sort_unique_i64(int64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, sh_cmp_i64);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || v[k - 1] != v[i])
            v[k++] = v[i];
    return k;
}

bool sh_join(char *buf, size_t size, const char *const *words, size_t n,
             const char *sep)
{
    static const char more[] = "...";
    size_t at = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t need = (i ? strlen(sep) : 0) + strlen(words[i]);
        // Room for this word, and for the mark should a later one not fit.
        size_t keep = i + 1 < n ? sizeof more - 1 : 0;
        if (at + need + keep >= size) {
            if (at + sizeof more <= size)
                memcpy(buf + at, more, sizeof more);
            return false;
        }
        at += (size_t)snprintf(buf + at, size - at, "%s%s", i ? sep : "",
                               words[i]);
    }
    return true;
}

void sh_format_bytes(char *buf, size_t size, double bytes)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    size_t u = 0;
    while (bytes >= 1024 && u + 1 < SH_ARRAY_LEN(units)) {
        bytes /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, size, "%.0f B", bytes);
    else
        snprintf(buf, size, "%.2f %s", bytes, units[u]);
}

// --- memory

enum { HUGE_PAGE = 2 << 20 };

void *sh_alloc_bulk(size_t n)
{
    if (n < HUGE_PAGE)
        return malloc(n ? n : 1);
    if (n > SIZE_MAX - HUGE_PAGE)
        return NULL;
    size_t bytes = (n + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    void *p = aligned_alloc(HUGE_PAGE, bytes);
    if (p)
        madvise(p, bytes, MADV_HUGEPAGE); // advice: no huge pages is fine
    return p;
}

void *sh_calloc_bulk(size_t n)
{
    if (n < HUGE_PAGE)
        return calloc(1, n ? n : 1);
    void *p = sh_alloc_bulk(n);
    if (p)
        memset(p, 0, n);
    return p;
}

// --- machine

// ceil(quota / period) from a cgroup v2 cpu.max line ("max 100000" or
// "200000 100000"), or 0 when there is no quota.
static int cgroup_cpus(void)
{
    char *text = NULL;
    size_t len = 0;
    if (sh_file_read("/sys/fs/cgroup/cpu.max", 256, &text, &len) != 0)
        return 0;
    long long quota = 0, period = 0;
    int n = sscanf(text, "%lld %lld", &quota, &period);
    free(text);
    if (n != 2 || quota <= 0 || period <= 0)
        return 0;
    return (int)((quota + period - 1) / period);
}

int sh_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0 &&
        CPU_COUNT(&set) < n)
        n = CPU_COUNT(&set);
    int quota = cgroup_cpus();
    if (quota > 0 && quota < n)
        n = quota;
    return n > 0 ? (int)n : 1;
}

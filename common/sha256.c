// sha256.c: SHA-256 through libcrypto's EVP interface.
#include "common/sha256.h"

#include "common/err.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"

int sh_sha256_init(sh_sha256 *s)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return SH_ENOMEM;
    if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(ctx);
        return SH_ENOMEM;
    }
    s->ctx = ctx;
    return 0;
}

void sh_sha256_deinit(sh_sha256 *s)
{
    EVP_MD_CTX_free(s->ctx);
    s->ctx = NULL;
}

void sh_sha256_update(sh_sha256 *s, const void *data, size_t n)
{
    EVP_DigestUpdate(s->ctx, data, n);
}

void sh_sha256_final(sh_sha256 *s, char hex[SH_SHA256_HEX])
{
    static const char digits[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(s->ctx, md, &n);
    for (unsigned i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
}

int sh_sha256_file(const char *path, char hex[SH_SHA256_HEX])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? SH_ENOTFOUND : SH_EIO;
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    enum { CHUNK = 1 << 20 };
    char *buf = malloc(CHUNK);
    sh_sha256 s;
    int rc = buf ? sh_sha256_init(&s) : SH_ENOMEM;
    if (rc != 0) {
        free(buf);
        close(fd);
        return rc;
    }
    for (;;) {
        ssize_t r = read(fd, buf, CHUNK);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = SH_EIO;
            break;
        }
        if (r == 0)
            break;
        sh_sha256_update(&s, buf, (size_t)r);
    }
    if (rc == 0)
        sh_sha256_final(&s, hex);
    sh_sha256_deinit(&s);
    free(buf);
    close(fd);
    return rc;
}

int sh_sha256_is_hex(const char *s)
{
    size_t n = strlen(s);
    if (n != 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return 0;
    }
    return 1;
}

const char *sh_cache_dir(char *buf, size_t size)
{
    const char *own = getenv("SHEARS_CACHE_DIR");
    if (own)
        return own[0] && strcmp(own, "off") != 0 &&
                       snprintf(buf, size, "%s", own) < (int)size
                   ? buf
                   : NULL;
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n;
    if (xdg && xdg[0] == '/')
        n = snprintf(buf, size, "%s/shears", xdg);
    else if (home && home[0] == '/')
        n = snprintf(buf, size, "%s/.cache/shears", home);
    else
        return NULL;
    return n > 0 && (size_t)n < size ? buf : NULL;
}

static void stat_line(char *buf, size_t size, const struct stat *st)
{
    snprintf(buf, size, "v1 %lld %lld.%09ld %lld.%09ld", (long long)st->st_size,
             (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec,
             (long long)st->st_ctim.tv_sec, st->st_ctim.tv_nsec);
}

int sh_sha256_file_cached(const char *path, const char *cache_dir,
                          char hex[SH_SHA256_HEX])
{
    struct stat before;
    if (!cache_dir || stat(path, &before) != 0)
        return sh_sha256_file(path, hex);
    char entry[4096], want[160];
    if (snprintf(entry, sizeof entry, "%s/sha256/%llx-%llx", cache_dir,
                 (unsigned long long)before.st_dev,
                 (unsigned long long)before.st_ino) >= (int)sizeof entry)
        return sh_sha256_file(path, hex);
    stat_line(want, sizeof want, &before);
    char *text = NULL;
    size_t len = 0;
    if (sh_file_read(entry, 512, &text, &len) == 0) {
        size_t wl = strlen(want);
        bool hit = len == wl + 1 + 64 + 1 && memcmp(text, want, wl) == 0 &&
                   text[wl] == ' ' && text[len - 1] == '\n';
        if (hit) {
            memcpy(hex, text + wl + 1, 64);
            hex[64] = '\0';
            hit = sh_sha256_is_hex(hex);
        }
        free(text);
        if (hit)
            return 0;
    }
    int rc = sh_sha256_file(path, hex);
    if (rc != 0)
        return rc;
    // Record it only if the file did not change while it was read.
    struct stat after;
    char now[160], line[256], dir[4096];
    if (stat(path, &after) != 0)
        return 0;
    stat_line(now, sizeof now, &after);
    if (strcmp(now, want) != 0)
        return 0;
    int n = snprintf(line, sizeof line, "%s %s\n", want, hex);
    if (snprintf(dir, sizeof dir, "%s/sha256", cache_dir) < (int)sizeof dir &&
        sh_mkdir_p(dir) == 0)
        sh_file_write_atomic(entry, line, (size_t)n);
    return 0;
}

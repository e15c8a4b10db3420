// sha256.h: streaming SHA-256 over OpenSSL's libcrypto (EVP), hex output.
//
// libcrypto is used rather than a hand-written digest: it is maintained,
// audited and uses the CPU's SHA extensions where present.
#ifndef SH_SHA256_H
#define SH_SHA256_H

#include <stdbool.h>
#include <stddef.h>

#define SH_SHA256_HEX 65 // 64 hex digits and a NUL

typedef struct sh_sha256 {
    void *ctx; // EVP_MD_CTX *
} sh_sha256;

// Initialises a digest. Returns 0 or SH_ENOMEM; pair with _deinit.
int sh_sha256_init(sh_sha256 *s);
void sh_sha256_deinit(sh_sha256 *s);

// Feeds n bytes.
void sh_sha256_update(sh_sha256 *s, const void *data, size_t n);

// Writes the lowercase hex digest; the context may then only be deinit'd.
void sh_sha256_final(sh_sha256 *s, char hex[SH_SHA256_HEX]);

// Digest of a whole file. Returns 0, SH_ENOTFOUND or SH_EIO.
int sh_sha256_file(const char *path, char hex[SH_SHA256_HEX]);

// Digest of a whole file through a cache of earlier digests kept in
// cache_dir (NULL: no cache). An entry is keyed by device and inode and
// holds size, mtime and ctime with nanoseconds: any write to the file
// changes mtime and ctime (ctime cannot be set back from user space), so a
// matching entry is the digest of the file as it is, as git's index
// assumes. Missing or unwritable cache dirs just mean computing the digest.
int sh_sha256_file_cached(const char *path, const char *cache_dir,
                          char hex[SH_SHA256_HEX]);

// The default cache dir: $SHEARS_CACHE_DIR, else $XDG_CACHE_HOME/shears,
// else $HOME/.cache/shears; "" or "off" in SHEARS_CACHE_DIR disables it.
// Writes into buf and returns it, or returns NULL for no cache.
const char *sh_cache_dir(char *buf, size_t size);

// True when s is 64 lowercase hex digits.
int sh_sha256_is_hex(const char *s);

#endif

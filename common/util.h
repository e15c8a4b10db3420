// util.h: small helpers every module shares: time, files, ids.
//
// All functions are thread-safe and return 0 or a negative SH_E* code.
#ifndef SH_UTIL_H
#define SH_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SH_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

// Hot loops get an AVX2 (x86-64-v3) clone beside the baseline one; the
// loader picks one per CPU (gcc; clang builds are the fuzzers). Elsewhere
// they are plain functions.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) &&         \
    !defined(__SANITIZE_ADDRESS__)
#define SH_HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define SH_HOT
#endif

// --- time

// Milliseconds since the Unix epoch (wall clock).
int64_t sh_time_now_ms(void);

// Seconds on the monotonic clock, for durations.
double sh_time_mono(void);

// Formats ms since the epoch as "2026-11-22T10:51:00.123Z" into buf.
void sh_time_rfc3339(char *buf, size_t size, int64_t ms);

// --- files

// The code for a failed system call's errno: SH_ENOSPC for a full disk or
// quota (ENOSPC, EDQUOT), SH_ENOTFOUND for ENOENT, SH_ENOMEM for ENOMEM,
// SH_EIO for the rest. The file functions below return these.
int sh_errno_code(int err);

// Replaces every occurrence of prefix in msg (size bytes) with with, so a
// message about a server's files names them relative to a folder the
// client knows nothing of. A NULL or empty prefix changes nothing.
void sh_path_scrub(char *msg, size_t size, const char *prefix,
                   const char *with);

// Writes all n bytes, retrying short writes and EINTR.
int sh_write_all(int fd, const void *buf, size_t n);

// Writes all n bytes at offset off.
int sh_pwrite_all(int fd, const void *buf, size_t n, off_t off);

// Reads a whole file of at most max bytes into a NUL-terminated buffer the
// caller frees. SH_ETOOBIG when larger, SH_ENOTFOUND when absent.
int sh_file_read(const char *path, size_t max, char **out, size_t *len);

// Writes data to path atomically: a temp file beside it, fsync, rename,
// fsync of the directory.
int sh_file_write_atomic(const char *path, const void *data, size_t n);

// Copies src to dst (created, mode 0644) in the kernel where it can,
// then fsyncs dst when sync is true.
int sh_file_copy(const char *src, const char *dst, bool sync);

// fsyncs a file or directory by path.
int sh_fsync_path(const char *path);

// Creates a directory and its parents (mode 0755); existing is fine.
int sh_mkdir_p(const char *path);

// Removes a file or a directory tree; absent is fine.
int sh_rm_rf(const char *path);

// True when path exists (any type).
bool sh_path_exists(const char *path);

// True when path is a directory.
bool sh_path_is_dir(const char *path);

// Size of the file at path, or a negative code.
int sh_file_size(const char *path, uint64_t *out);

// Joins a and b with one '/' into buf; SH_ETOOBIG when it does not fit.
int sh_path_join(char *buf, size_t size, const char *a, const char *b);

// --- ids and randomness

// Fills buf with n bytes from the kernel's CSPRNG.
int sh_random_bytes(void *buf, size_t n);

// Writes "<prefix><20 lowercase base32 chars>" into out (size >= 48).
int sh_id_new(char *out, size_t size, const char *prefix);

// Constant-time comparison of two byte strings; lengths may differ.
bool sh_consttime_eq(const void *a, size_t alen, const void *b, size_t blen);

// --- strings

// True when s ends with suffix.
bool sh_str_ends_with(const char *s, const char *suffix);

// Copies src into dst (size >= 1), truncating; true when it all fit.
bool sh_strlcpy(char *dst, size_t size, const char *src);

// strdup that returns NULL only on allocation failure of a non-NULL s.
char *sh_strdup(const char *s);

// Joins the n words with sep into buf (size > 0), always terminated; what
// does not fit is cut at a word and marked with "...". Returns false when
// cut.
bool sh_join(char *buf, size_t size, const char *const *words, size_t n,
             const char *sep);

// qsort/bsearch order of int64_t; sorts v (n,) and keeps each value once,
// returning how many stay.
int sh_cmp_i64(const void *a, const void *b);
size_t sh_sort_unique_i64(int64_t *v, size_t n);

// Formats bytes as "1.50 GiB" into buf.
void sh_format_bytes(char *buf, size_t size, double bytes);

// --- memory

// A buffer of n bytes for bulk data (weights, activations, statistics),
// freed by free(). From 2 MiB up it is aligned to 2 MiB and asks for
// transparent huge pages: a first touch of a small page costs about as
// much as reading a megabyte, and these buffers are touched whole.
// NULL when out of memory.
void *sh_alloc_bulk(size_t n);

// As sh_alloc_bulk, zeroed.
void *sh_calloc_bulk(size_t n);

// --- machine

// The CPUs this process may use: the online cores, narrowed by its
// affinity mask and by a cgroup v2 CPU quota (a container's CPU limit,
// rounded up). At least 1.
int sh_cpu_count(void);

#endif

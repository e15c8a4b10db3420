// server.h: the real `shears serve` for integration tests, and an HTTP
// client (libcurl) to talk to it.
#ifndef TEST_SERVER_H
#define TEST_SERVER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct th_server {
    pid_t pid;
    int port;
    char *dir;             // the test's temp dir (data dir, logs, files)
    char *data;            // the data dir
    char *log;             // the server's stderr
    char token[64];        // "" = no auth
    const char *extra[16]; // extra flags for every start
    char tmpfs[16];        // a size: the data dir is a tmpfs of its own
} th_server;

// Starts a server in a fresh temp dir with the extra flags (NULL-ended).
// With token non-NULL, writes it to a file and passes --token-file.
void th_server_start(th_server *s, const char *token, const char *const *extra);

// The same, with the data dir on a tmpfs of size bytes ("24m") that only
// the server sees: it runs in a mount namespace of its own (unshare -rm),
// so a test can fill the disk through the API alone.
void th_server_start_tmpfs(th_server *s, const char *size,
                           const char *const *extra);

// Starts again on the same data dir (after a stop or a kill).
void th_server_restart(th_server *s);

// Waits up to seconds for the server to exit; returns its exit status, or
// 128 + the signal that killed it. Fails the test (after SIGKILL) on
// timeout.
int th_server_wait(th_server *s, double seconds);

// SIGTERM, then th_server_wait(s, 60).
int th_server_stop(th_server *s);

// SIGKILL, then waits.
void th_server_kill(th_server *s);

// Stops if running and removes the temp dir.
void th_server_free(th_server *s);

typedef struct th_resp {
    long status;
    char *body;
    size_t len;
    char *headers; // raw, "Name: value\r\n" lines
    json_t *json;  // parsed body, or NULL
} th_resp;

// One request. headers NULL-ended ("Name: value"); body may be NULL. The
// bearer token is added when the server has one and auth is true.
long th_http(th_server *s, const char *method, const char *path,
             const char *const *headers, const void *body, size_t n, bool auth,
             th_resp *out);

// GET/POST/DELETE with the token and no extra headers.
long th_get(th_server *s, const char *path, th_resp *out);
long th_post_json(th_server *s, const char *path, const char *json,
                  th_resp *out);
long th_delete(th_server *s, const char *path, th_resp *out);

// Uploads a file streamed from disk (Content-Length set unless chunked).
long th_upload(th_server *s, const char *path, const char *file,
               const char *type, bool chunked, th_resp *out);

// The value of a response header (case-insensitive), copied into buf.
const char *th_header(const th_resp *r, const char *name, char *buf,
                      size_t size);

void th_resp_free(th_resp *r);

// Asserts r is an RFC 9457 problem+json of this status, naming field
// (unless NULL), with words in its detail (unless NULL).
void th_expect_problem(th_resp *r, long status, const char *field,
                       const char *words);

// Polls a job until it ends (or timeout seconds pass); returns its JSON.
json_t *th_job_wait(th_server *s, const char *id, double timeout);

// Polls until the job runs with at least this fraction done.
bool th_job_wait_running(th_server *s, const char *id, double fraction,
                         double timeout);

// Uploads a file or folder (as a tar) and returns the new id (malloc'd).
char *th_upload_checkpoint(th_server *s, const char *path);
char *th_upload_dataset(th_server *s, const char *file);

// Writes a tar of files: names[i] with contents from paths[i] (or from
// data[i] when paths[i] is NULL). kinds[i]: 0 regular, 1 symlink,
// 2 hardlink, 3 char device, 4 directory. Names are written as given.
void th_write_tar(const char *out, const char *const *names,
                  const char *const *paths, const char *const *data,
                  const int *kinds, size_t n);

// Uploads a 512 MiB model and submits a job on it that runs a few
// seconds (random, global scope); returns the job id (malloc'd).
char *th_slow_job(th_server *s);

// A model large enough that a job on it runs a few seconds: `tensors`
// F32 tensors of rows x cols in one safetensors file.
void th_write_big_model(const char *path, int tensors, int rows, int cols);

#endif

// parse.h: the request headers the API reads itself, as pure functions of
// their text (no libmicrohttpd), so they can be tested and fuzzed alone.
#ifndef API_PARSE_H
#define API_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Parses a Range header against a file of size bytes (RFC 9110 14.1.2).
// Only one range of the "bytes" unit (case-insensitive) is served:
// "bytes=a-b", "bytes=a-" or "bytes=-n", with digits only. Returns 1 and
// sets [*from, *to] for a satisfiable range; 0 to send the whole file (no
// header, several ranges, another unit, or a malformed or backwards range,
// which the RFC says to ignore); -1 for a range that starts beyond the end
// (416). *from and *to are untouched unless 1 is returned.
int api_range_parse(const char *h, uint64_t size, uint64_t *from, uint64_t *to);

// Reads the token of "Authorization: Bearer <token>". The scheme is
// case-insensitive and may be followed by several spaces (RFC 9110 11.4);
// the token is the rest, trailing spaces dropped. Returns true and points
// *token into h (*len bytes) when the header has that form.
bool api_bearer_token(const char *h, const char **token, size_t *len);

// Writes a Content-Disposition value for a download named after the last
// segment of name: `attachment; filename="<ascii>"; filename*=UTF-8''<pct>`.
// The quoted form keeps printable ASCII except '"' and '\', which become
// '_'; the extended form percent-encodes every byte outside RFC 8187's
// attr-char. Always NUL-terminates; returns false when it did not fit.
bool api_content_disposition(char *buf, size_t size, const char *name);

#endif

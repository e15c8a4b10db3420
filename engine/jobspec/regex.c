// regex.c: the rule a spec's regexes must keep, and PCRE2 under limits.
//
// Why PCRE2: glibc's regcomp has no bound on the time or memory it spends
// compiling (counted repetitions are expanded, then a DFA is built: a
// 40-byte pattern took seconds and gigabytes), and regexec has no step
// limit. RE2 is linear-time but C++ only (no C binding in Debian). PCRE2 is
// C, on every Debian system already (grep links it), and bounds both
// sides: the pattern length and parenthesis depth at compile time, the
// steps, recursion depth and heap of every match.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "engine/jobspec/regex.h"

#include <ctype.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Steps of one match. Tensor names are at most a few hundred bytes; a
// pattern within the rule needs a few hundred steps on them, so a match
// that needs more than this is pathological, not unlucky.
#define MATCH_LIMIT 50000
#define DEPTH_LIMIT 1000
#define HEAP_LIMIT_KIB 1024

static pcre2_compile_context *compile_ctx;
static pcre2_match_context *match_ctx;
static pthread_once_t contexts_once = PTHREAD_ONCE_INIT;

// Made once per process and only read afterwards.
static void contexts_init(void)
{
    compile_ctx = pcre2_compile_context_create(NULL);
    match_ctx = pcre2_match_context_create(NULL);
    if (compile_ctx) {
        pcre2_set_max_pattern_length(compile_ctx, ENG_REGEX_MAX_LEN + 16);
        pcre2_set_parens_nest_limit(compile_ctx, ENG_REGEX_MAX_DEPTH + 2);
    }
    if (match_ctx) {
        pcre2_set_match_limit(match_ctx, MATCH_LIMIT);
        pcre2_set_depth_limit(match_ctx, DEPTH_LIMIT);
        pcre2_set_heap_limit(match_ctx, HEAP_LIMIT_KIB);
    }
}

// --- the rule

static int refuse(sh_diag *d, const char *field, const char *text,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int refuse(sh_diag *d, const char *field, const char *text,
                  const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return sh_diag_set(d, SH_ESPEC, field,
                       "%s: \"%.*s\" is not an accepted regex: %s", field,
                       ENG_REGEX_MAX_LEN, text, why);
}

// A backslash escape: punctuation, or one of the classes.
static bool escape_ok(unsigned char e, bool in_brackets)
{
    if (ispunct(e))
        return true;
    if (strchr("dDwWsS", e))
        return true;
    return !in_brackets && (e == 'b' || e == 'B');
}

// A bracket expression starting at text[i] == '['. Returns the index after
// its closing ']', or 0 with d set.
static size_t bracket_end(const char *text, size_t n, size_t i,
                          const char *field, sh_diag *d)
{
    size_t j = i + 1;
    if (j < n && text[j] == '^')
        j++;
    if (j < n && text[j] == ']')
        j++; // a leading ']' is a member
    while (j < n && text[j] != ']') {
        if (text[j] == '[' && j + 1 < n &&
            (text[j + 1] == '.' || text[j + 1] == '=')) {
            refuse(d, field, text,
                   "it uses a collating element or equivalence class at "
                   "offset %zu; they are not accepted",
                   j);
            return 0;
        }
        if (text[j] == '[' && j + 1 < n && text[j + 1] == ':') {
            const char *close = strstr(text + j + 2, ":]");
            if (!close) {
                refuse(d, field, text,
                       "it has an unclosed [: class at offset %zu", j);
                return 0;
            }
            j = (size_t)(close - text) + 2;
            continue;
        }
        if (text[j] == '\\') {
            if (j + 1 >= n || !escape_ok((unsigned char)text[j + 1], true)) {
                refuse(d, field, text,
                       "it has an escape at offset %zu that is not accepted "
                       "in brackets (escape punctuation, or use \\d \\w \\s)",
                       j);
                return 0;
            }
            j += 2;
            continue;
        }
        j++;
    }
    if (j >= n) {
        refuse(d, field, text, "it has an unclosed [ at offset %zu", i);
        return 0;
    }
    return j + 1;
}

// A bound "{n}", "{n,}" or "{n,m}" at text[i] == '{'. Returns the index
// after '}' and sets *repeats (m > 1 or unbounded), or 0 with d set.
static size_t bound_end(const char *text, size_t n, size_t i, bool *repeats,
                        const char *field, sh_diag *d)
{
    size_t j = i + 1;
    long lo = -1, hi = -1;
    bool comma = false;
    for (long *v = &lo; j < n; j++) {
        if (isdigit((unsigned char)text[j])) {
            *v = (*v < 0 ? 0 : *v) * 10 + (text[j] - '0');
            if (*v > ENG_REGEX_MAX_COUNT)
                break;
        } else if (text[j] == ',' && !comma) {
            comma = true;
            v = &hi;
        } else {
            break;
        }
    }
    if (j < n && text[j] == '}' && lo >= 0 && lo <= ENG_REGEX_MAX_COUNT &&
        hi <= ENG_REGEX_MAX_COUNT && (!comma || hi < 0 || lo <= hi)) {
        *repeats = comma ? hi < 0 || hi > 1 : lo > 1;
        return j + 1;
    }
    refuse(d, field, text,
           "it has a { at offset %zu that is not a bound {n}, {n,} or {n,m} "
           "with n <= m <= %d (write \\{ for the character)",
           i, ENG_REGEX_MAX_COUNT);
    return 0;
}

int eng_regex_check(const char *text, const char *field, sh_diag *d)
{
    size_t n = strlen(text);
    if (n == 0)
        return sh_diag_set(d, SH_ESPEC, field,
                           "%s must be a non-empty regex string", field);
    if (n > ENG_REGEX_MAX_LEN)
        return sh_diag_set(d, SH_ESPEC, field,
                           "%s is %zu bytes long; a pattern may have at most "
                           "%d",
                           field, n, ENG_REGEX_MAX_LEN);
    // What came just before: nothing to repeat, an atom, a group (with what
    // it holds), an anchor, or a quantifier.
    enum { P_NONE, P_ATOM, P_GROUP, P_ANCHOR, P_QUANT } prev = P_NONE;
    struct {
        bool quant, alt;
    } stack[ENG_REGEX_MAX_DEPTH + 1] = {{false, false}}, closed = {0};
    int depth = 0;
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c == 0x7f)
            return refuse(d, field, text,
                          "it holds a control character at offset %zu", i);
        bool repeats = false;
        size_t next = i + 1;
        switch (c) {
        case '\\':
            if (i + 1 >= n || !escape_ok((unsigned char)text[i + 1], false))
                return refuse(d, field, text,
                              "it has an escape at offset %zu that is not "
                              "accepted (escape punctuation, or use \\d \\w "
                              "\\s \\b; no backreferences)",
                              i);
            prev = text[i + 1] == 'b' || text[i + 1] == 'B' ? P_ANCHOR : P_ATOM;
            i += 2;
            continue;
        case '[':
            if (!(next = bracket_end(text, n, i, field, d)))
                return SH_ESPEC;
            prev = P_ATOM;
            i = next;
            continue;
        case '(':
            if (i + 1 < n && text[i + 1] == '?')
                return refuse(d, field, text,
                              "it has a (? group at offset %zu; lookaround, "
                              "options and special groups are not accepted",
                              i);
            if (depth == ENG_REGEX_MAX_DEPTH)
                return refuse(d, field, text,
                              "it nests groups more than %d deep",
                              ENG_REGEX_MAX_DEPTH);
            stack[++depth].quant = false;
            stack[depth].alt = false;
            prev = P_NONE;
            i++;
            continue;
        case ')':
            if (depth == 0)
                return refuse(d, field, text,
                              "it has an unmatched ) at offset %zu", i);
            closed.quant = stack[depth].quant;
            closed.alt = stack[depth].alt;
            depth--;
            stack[depth].quant |= closed.quant;
            stack[depth].alt |= closed.alt;
            prev = P_GROUP;
            i++;
            continue;
        case '|':
            stack[depth].alt = true;
            prev = P_NONE;
            i++;
            continue;
        case '^':
        case '$':
            prev = P_ANCHOR;
            i++;
            continue;
        case '{':
            if (!(next = bound_end(text, n, i, &repeats, field, d)))
                return SH_ESPEC;
            break;
        case '*':
        case '+': repeats = true; break;
        case '?': break;
        default:
            prev = P_ATOM;
            i++;
            continue;
        }
        // A quantifier at text[i .. next).
        if (prev == P_NONE)
            return refuse(d, field, text,
                          "it has a quantifier at offset %zu with nothing to "
                          "repeat",
                          i);
        if (prev == P_QUANT)
            return refuse(d, field, text,
                          "it has a quantifier right after another at offset "
                          "%zu (stacked, lazy and possessive quantifiers "
                          "are not accepted)",
                          i);
        if (prev == P_ANCHOR)
            return refuse(d, field, text, "it repeats an anchor at offset %zu",
                          i);
        if (repeats && prev == P_GROUP && (closed.quant || closed.alt))
            return refuse(d, field, text,
                          "it repeats a group that holds a %s (offset %zu): "
                          "nested repetition is not accepted",
                          closed.quant ? "quantifier" : "|", i);
        stack[depth].quant = true;
        prev = P_QUANT;
        i = next;
    }
    if (depth != 0)
        return refuse(d, field, text, "it has an unclosed (");
    return 0;
}

// --- compiled patterns

int eng_regex_compile(eng_regex *r, const char *text, const char *field,
                      sh_diag *d)
{
    memset(r, 0, sizeof *r);
    int rc = eng_regex_check(text, field, d);
    if (rc != 0)
        return rc;
    pthread_once(&contexts_once, contexts_init);
    if (!compile_ctx || !match_ctx)
        return sh_diag_set(d, SH_ENOMEM, field, "out of memory");
    // Searched as one anchored match behind a lazy ".*?": PCRE2 counts its
    // match limit per start position, so a plain search of an n-byte name
    // may take n times the limit; this way the limit bounds the search.
    char wrapped[ENG_REGEX_MAX_LEN + 16];
    snprintf(wrapped, sizeof wrapped, "(?s:.*?)(?:%s)", text);
    int err = 0;
    PCRE2_SIZE off = 0;
    pcre2_code *code = pcre2_compile(
        (PCRE2_SPTR)wrapped, strlen(wrapped),
        PCRE2_ANCHORED | PCRE2_NO_AUTO_CAPTURE | PCRE2_NEVER_UTF |
            PCRE2_NEVER_UCP | PCRE2_NEVER_BACKSLASH_C | PCRE2_DOLLAR_ENDONLY,
        &err, &off, compile_ctx);
    off = off >= 11 ? off - 11 : 0; // an offset into text, not wrapped
    if (!code) {
        PCRE2_UCHAR why[160];
        if (pcre2_get_error_message(err, why, sizeof why) < 0)
            snprintf((char *)why, sizeof why, "error %d", err);
        return refuse(d, field, text, "%s (offset %zu)", (const char *)why,
                      (size_t)off);
    }
    if (!(r->text = strdup(text))) {
        pcre2_code_free(code);
        return sh_diag_set(d, SH_ENOMEM, field, "out of memory");
    }
    r->code = code;
    return 0;
}

void eng_regex_free(eng_regex *r)
{
    if (r->code)
        pcre2_code_free(r->code);
    free(r->text);
    memset(r, 0, sizeof *r);
}

int eng_regex_match(const eng_regex *r, const char *s)
{
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md)
        return SH_ENOMEM;
    int rc =
        pcre2_match(r->code, (PCRE2_SPTR)s, strlen(s), 0, 0, md, match_ctx);
    pcre2_match_data_free(md);
    if (rc >= 0)
        return 1;
    return rc == PCRE2_ERROR_NOMATCH ? 0 : SH_ETOOBIG;
}

char *eng_regex_literal(const char *text, bool head, bool tail)
{
    size_t n = strlen(text);
    char *re = malloc(2 * n + 3), *p = re;
    if (!re)
        return NULL;
    if (head)
        *p++ = '^';
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_'))
            *p++ = '\\';
        *p++ = c;
    }
    if (tail)
        *p++ = '$';
    *p = '\0';
    return re;
}

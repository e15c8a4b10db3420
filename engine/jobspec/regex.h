// regex.h: the regexes of a job spec (targets, ignore, overrides[].match),
// bounded before they are compiled and matched with bounded work.
//
// A spec comes from a request, so a pattern is checked against a rule
// before PCRE2 sees it, and every match runs under PCRE2's match, depth
// and heap limits. The rule:
//
//   - at most ENG_REGEX_MAX_LEN bytes, no NUL, no control characters;
//   - POSIX extended syntax, read as PCRE2 reads it: literals, `.`,
//     bracket expressions (with [:class:]), `^`, `$`, groups `( )`, `|`,
//     the quantifiers `* + ? {n} {n,} {n,m}`, backslash before punctuation,
//     and the classes \d \D \w \W \s \S and \b \B;
//   - no backreferences, no `(?...)` groups (lookaround, options, named or
//     atomic groups), no lazy or possessive quantifiers (`*?`, `++`): a
//     quantifier directly after another is refused;
//   - counted repetition at most ENG_REGEX_MAX_COUNT, n <= m;
//   - a repeated group (`*`, `+`, `{n,m}` with m > 1) holds neither a
//     quantifier nor a `|`: nested repetition and repeated alternation are
//     what make backtracking exponential;
//   - groups nest at most ENG_REGEX_MAX_DEPTH deep.
//
// What the rule leaves (say `.*a.*b` on a long name) is polynomial; the
// match limit cuts it off, deterministically (a count of steps, not time),
// and eng_regex_match says so instead of guessing.
#ifndef ENG_REGEX_H
#define ENG_REGEX_H

#include "common/err.h"

#include <stdbool.h>

#define ENG_REGEX_MAX_LEN 256
#define ENG_REGEX_MAX_COUNT 100
#define ENG_REGEX_MAX_DEPTH 8

typedef struct eng_regex {
    char *text; // the pattern as given
    void *code; // pcre2_code_8 *
} eng_regex;

// Checks text against the rule and compiles it. On failure d names field
// and says which part of the rule the pattern breaks; *r is left empty.
// Any thread.
int eng_regex_compile(eng_regex *r, const char *text, const char *field,
                      sh_diag *d);

// Frees what compile made; an empty r is fine.
void eng_regex_free(eng_regex *r);

// A regex that matches text literally (every character but letters,
// digits and '_' escaped), "^" before it and "$" after it when asked; the
// caller frees it. NULL when out of memory.
char *eng_regex_literal(const char *text, bool head, bool tail);

// Searches s (anywhere; anchor with ^ and $). Returns 1 on a match, 0 on
// none, SH_ETOOBIG when the match limits cut the search off. Thread-safe
// on the same r.
int eng_regex_match(const eng_regex *r, const char *s);

// The rule alone (no compile), for callers that only validate.
int eng_regex_check(const char *text, const char *field, sh_diag *d);

#endif

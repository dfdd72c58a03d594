/*
 * examples/cli_args.h — argument parsing the example programs share
 * (header-only, because the Makefile builds every .c file in examples/ as
 * its own program).
 */
#ifndef TG_EXAMPLES_CLI_ARGS_H
#define TG_EXAMPLES_CLI_ARGS_H

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

/* *out = s as a base-10 integer in [lo, hi]; false (out untouched) when s is
 * empty, has trailing characters, overflows or falls outside the range. */
static inline bool cli_parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

#endif

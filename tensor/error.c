/* tensor/error.c — the one failure path (see tg_error in tensor.h). */
#include "tensor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Debug builds (make debug) name the gdb extension in a .debug_gdb_scripts
 * entry, so gdb loads it by itself (docs/DEBUGGING.md). It sits here because
 * every program links this object (everything reports through tg_error); an
 * object of its own in the archive would be dropped by the linker. The path
 * is absolute, fixed at build time: gdb's working directory does not matter. */
#ifdef TG_GDB_SCRIPT
__asm__(".pushsection \".debug_gdb_scripts\", \"MS\", @progbits, 1\n"
        ".byte 1\n" /* SECTION_SCRIPT_ID_PYTHON_FILE */
        ".asciz \"" TG_GDB_SCRIPT "\"\n"
        ".popsection\n");
#endif

static tg_error_handler g_handler;   /* NULL: print and abort */
static void *g_handler_user;

tg_error_handler tg_set_error_handler(tg_error_handler h, void *user)
{
    tg_error_handler prev = g_handler;
    g_handler = h;
    g_handler_user = user;
    return prev;
}

void tg_error(const char *op, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (g_handler)
        g_handler(op, msg, g_handler_user);
    /* Default, or a handler that returned: never continue with bad input.
     * Flush stdout first so what the program printed so far comes before. */
    fflush(stdout);
    fprintf(stderr, "tapegrad: %s: %s\n", op, msg);
    fflush(stderr);
    abort();
}

char *tg_shape_str(char *buf, int ndim, const int *shape)
{
    /* Each dimension is formatted apart and copied only if it fits with room
     * left for the closing ",...]": the result never passes the buffer. */
    const size_t cap = TG_SHAPE_STR_LEN;
    size_t n = 0;
    buf[n++] = '[';
    for (int i = 0; i < ndim; i++) {
        char d[16];
        int w = snprintf(d, sizeof d, i ? ",%d" : "%d", shape[i]);
        size_t room = i + 1 < ndim ? 6 : 2; /* a later cut needs ",...]" + NUL; the end "]" + NUL */
        if (w < 0 || n + (size_t)w + room > cap) {
            memcpy(buf + n, i ? ",...]" : "...]", i ? 6 : 5);
            return buf;
        }
        memcpy(buf + n, d, (size_t)w);
        n += (size_t)w;
    }
    buf[n++] = ']';
    buf[n] = '\0';
    return buf;
}

void tg_check_ptr(const char *op, const void *p, const char *what)
{
    if (!p)
        tg_error(op, "%s is NULL", what);
}

int tg_fail(char *err, size_t size, const char *fmt, ...)
{
    if (err && size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, size, fmt, ap);
        va_end(ap);
        for (char *c = err; *c; c++)
            if (*c == '\n' || *c == '\r')
                *c = ' ';
    }
    return -1;
}

/* nn/module_util.h — helpers every module file uses (private to nn/):
 * allocation, parameter naming, and the argument checks that turn misuse
 * into one clear tg_error instead of a segfault. */
#ifndef TG_NN_MODULE_UTIL_H
#define TG_NN_MODULE_UTIL_H

#include <stdio.h>
#include <stdlib.h>

#include "nn.h"

static inline tg_generator *tg_nn_gen(tg_generator *g) { return g ? g : tg_default_generator(); }

static inline void *tg_nn_alloc(size_t bytes, const char *op)
{
    void *m = calloc(1, bytes);
    if (!m)
        tg_error(op, "out of memory");
    return m;
}

/* "<prefix><name>." into buf, for a child module's parameters. */
static inline const char *tg_nn_child_prefix(char *buf, size_t size, const char *prefix, const char *name)
{
    int n = snprintf(buf, size, "%s%s.", prefix ? prefix : "", name);
    if (n < 0 || (size_t)n >= size)
        tg_error("tg_params", "parameter name prefix too long: %s%s.", prefix ? prefix : "", name);
    return buf;
}

static inline void tg_nn_check_forward(const char *op, const void *m, const tg_tensor *x)
{
    tg_check_ptr(op, m, "module");
    tg_check_ptr(op, x, "input");
}

static inline void tg_nn_check_params_call(const char *op, const void *m, const tg_params *list)
{
    tg_check_ptr(op, m, "module");
    tg_check_ptr(op, list, "parameter list");
}

#endif

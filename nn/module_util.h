/* nn/module_util.h — helpers every module file uses (private to nn/):
 * allocation and the argument checks that turn misuse
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

static inline void tg_nn_check_forward(const char *op, const void *m, const tg_tensor *x)
{
    tg_check_ptr(op, m, "module");
    tg_check_ptr(op, x, "input");
}

#endif

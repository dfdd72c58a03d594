/* autograd/ops_internal.h — helpers shared by the op files (not public). */
#ifndef TG_OPS_INTERNAL_H
#define TG_OPS_INTERNAL_H

#include "../tensor/kernels.h"
#include "autograd.h"

/* Formats a tensor's shape for error messages. */
#define SHAPE(buf, t) tg_shape_str((buf), (t)->ndim, (t)->shape)

/* Resolves a possibly negative dim against t's dims (torch's wrap_dim). */
static inline int tg_wrap_dim(const char *op, int dim, const tg_tensor *t)
{
    const int ndim = t->ndim;
    const int lo = ndim ? -ndim : -1, hi = ndim ? ndim - 1 : 0;
    if (dim < lo || dim > hi) {
        char b[64];
        tg_error(op, "dimension %d is out of range for shape %s (expected to be in range of [%d, %d])", dim,
                 tg_shape_str(b, t->ndim, t->shape), lo, hi);
    }
    return dim < 0 ? dim + (ndim ? ndim : 1) : dim;
}

/* [outer, n, inner] around dim d of t. */
static inline void tg_split_dim(const tg_tensor *t, int d, int64_t *outer, int *n, int64_t *inner)
{
    int64_t o = 1, in = 1;
    for (int i = 0; i < d; i++)
        o *= t->shape[i];
    for (int i = d + 1; i < t->ndim; i++)
        in *= t->shape[i];
    *outer = o;
    *n = t->ndim ? t->shape[d] : 1;
    *inner = in;
}


#endif

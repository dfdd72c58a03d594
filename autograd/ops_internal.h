/* autograd/ops_internal.h — helpers shared by the op files (not public). */
#ifndef TG_OPS_INTERNAL_H
#define TG_OPS_INTERNAL_H

#include "../tensor/kernels.h"
#include "autograd.h"

/* Formats a tensor's shape for error messages. */
#define SHAPE(buf, t) tg_shape_str((buf), (t)->ndim, (t)->shape)

/* Resolves a possibly negative dim against ndim (torch's wrap_dim). */
static inline int tg_wrap_dim(const char *op, int dim, int ndim)
{
    const int lo = ndim ? -ndim : -1, hi = ndim ? ndim - 1 : 0;
    if (dim < lo || dim > hi)
        tg_error(op, "dimension out of range (expected to be in range of [%d, %d], but got %d)", lo, hi, dim);
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

static inline void tg_check_not_null(const char *op, const void *p, const char *what)
{
    if (!p)
        tg_error(op, "%s is NULL", what);
}

#endif

/* autograd/ops_shape.c — transpose, permute, reshape/view, concat, narrow/select,
 * stack. Tensors are always contiguous: transpose, permute, concat, narrow,
 * select and stack copy; reshape and view share the data (no copy) and only
 * the grad is separate. */
#include "ops_internal.h"

#include <string.h>

/* ---------------------------------------------------------------- permute
 * a: (d0..dn-1), dims: a permutation of 0..n-1 -> out: (d[dims[0]], ...) */

static void permute_backward(tg_node *n)
{
    float *ga = tg_grad_of(n->in[0]);
    if (ga)
        tg_k_permute_backward(n->out->grad, ga, n->in[0]->ndim, n->in[0]->shape, n->iarg);
}

static tg_tensor *permute(const char *opname, tg_tensor *a, const int *dims_in)
{
    int dims[TG_MAX_DIMS], seen[TG_MAX_DIMS] = {0}, shape[TG_MAX_DIMS];
    char b1[64];
    for (int i = 0; i < a->ndim; i++) {
        dims[i] = tg_wrap_dim(opname, dims_in[i], a);
        if (seen[dims[i]]++)
            tg_error(opname, "dims repeat dimension %d for a tensor of shape %s", dims[i], SHAPE(b1, a));
        shape[i] = a->shape[dims[i]];
    }
    tg_tensor *out = tg_new_tensor(a->ndim, shape);
    tg_k_permute(a->data, out->data, a->ndim, a->shape, dims);
    tg_node *n = tg_record(opname, out, &a, 1, permute_backward);
    if (n)
        memcpy(n->iarg, dims, sizeof dims);
    return out;
}

tg_tensor *tg_permute(tg_tensor *a, const int *dims)
{
    tg_check_ptr("tg_permute", a, "input");
    tg_check_ptr("tg_permute", dims, "dims");
    return permute("tg_permute", a, dims);
}

tg_tensor *tg_transpose(tg_tensor *a, int d0, int d1)
{
    tg_check_ptr("tg_transpose", a, "input");
    d0 = tg_wrap_dim("tg_transpose", d0, a);
    d1 = tg_wrap_dim("tg_transpose", d1, a);
    int dims[TG_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++)
        dims[i] = i;
    dims[d0] = d1;
    dims[d1] = d0;
    return permute("tg_transpose", a, dims);
}

/* ---------------------------------------------------------------- reshape
 * a: any shape; shape: same numel, one entry may be -1 -> out shares a's data */

static void reshape_backward(tg_node *n)
{
    if (tg_grad_pass(n, 0)) /* the same gradient, its buffer handed on */
        return;
    bool add;
    float *ga = tg_grad_dest(n, 0, &add);
    if (!ga)
        return;
    const float *g = n->out->grad;
    if (!add) { /* the first writer: a copy */
        memcpy(ga, g, (size_t)n->out->numel * sizeof(float));
        return;
    }
    for (int64_t i = 0; i < n->out->numel; i++)
        ga[i] += g[i];
}

static tg_tensor *reshape(const char *opname, tg_tensor *a, int ndim, const int *shape_in)
{
    char b1[64], b2[64];
    tg_check_ptr(opname, a, "input");
    if (ndim < 0 || ndim > TG_MAX_DIMS)
        tg_error(opname, "%d dimensions requested, tapegrad supports 0 to %d", ndim, TG_MAX_DIMS);
    if (ndim > 0)
        tg_check_ptr(opname, shape_in, "shape");
    int shape[TG_MAX_DIMS], infer = -1;
    int64_t known = 1;
    for (int i = 0; i < ndim; i++) {
        shape[i] = shape_in[i];
        if (shape[i] == -1) {
            if (infer >= 0)
                tg_error(opname, "only one dimension can be inferred in %s", tg_shape_str(b2, ndim, shape_in));
            infer = i;
        } else if (shape[i] < 0) {
            tg_error(opname, "invalid shape dimension %d in %s", shape[i], tg_shape_str(b2, ndim, shape_in));
        } else {
            known *= shape[i];
        }
    }
    if (infer >= 0) {
        if (known == 0 || a->numel % known != 0)
            tg_error(opname, "shape %s is invalid for input of shape %s", tg_shape_str(b2, ndim, shape_in),
                     SHAPE(b1, a));
        shape[infer] = (int)(a->numel / known);
        known *= shape[infer];
    }
    if (known != a->numel)
        tg_error(opname, "shape %s is invalid for input of shape %s", tg_shape_str(b2, ndim, shape_in),
                 SHAPE(b1, a));
    /* A view: a fresh tensor header over the same data. */
    tg_tensor *out = tg_tape_alloc(sizeof *out);
    memset(out, 0, sizeof *out);
    out->data = a->data;
    out->data_borrowed = true;
    out->storage = TG_STORAGE_ARENA;
    out->ndim = ndim;
    memcpy(out->shape, shape, (size_t)ndim * sizeof(int));
    out->numel = a->numel;
    out->node = -1;
    tg_record(opname, out, &a, 1, reshape_backward);
    return out;
}

tg_tensor *tg_reshape(tg_tensor *a, int ndim, const int *shape) { return reshape("tg_reshape", a, ndim, shape); }
tg_tensor *tg_view(tg_tensor *a, int ndim, const int *shape) { return reshape("tg_view", a, ndim, shape); }

/* ---------------------------------------------------------------- concat
 * ts[i]: equal shapes except along dim -> out: sizes along dim added */

static void concat_backward(tg_node *n)
{
    const int dim = n->iarg[0];
    int64_t outer, inner;
    int nout;
    tg_split_dim(n->out, dim, &outer, &nout, &inner);
    int off = 0;
    for (int k = 0; k < n->n_in; k++) {
        tg_tensor *t = n->in[k];
        const int nk = t->shape[dim];
        bool add; /* its first writer copies: the slices cover the whole input */
        float *g = tg_grad_dest(n, k, &add);
        if (g)
            for (int64_t o = 0; o < outer; o++) {
                const float *src = n->out->grad + (o * nout + off) * inner;
                float *dst = g + o * nk * inner;
                if (!add)
                    memcpy(dst, src, (size_t)(nk * inner) * sizeof(float));
                else
                    for (int64_t i = 0; i < nk * inner; i++)
                        dst[i] += src[i];
            }
        off += nk;
    }
}

tg_tensor *tg_concat(tg_tensor **ts, int n, int dim)
{
    char b1[64], b2[64];
    tg_check_ptr("tg_concat", ts, "tensor list");
    if (n < 1)
        tg_error("tg_concat", "expects a non-empty list of tensors, got %d", n);
    for (int k = 0; k < n; k++)
        tg_check_ptr("tg_concat", ts[k], "a tensor in the list");
    tg_tensor *t0 = ts[0];
    if (t0->ndim == 0)
        tg_error("tg_concat", "zero-dimensional tensor cannot be concatenated");
    dim = tg_wrap_dim("tg_concat", dim, t0);
    int shape[TG_MAX_DIMS];
    memcpy(shape, t0->shape, sizeof shape);
    shape[dim] = 0;
    for (int k = 0; k < n; k++) {
        tg_tensor *t = ts[k];
        bool ok = t->ndim == t0->ndim;
        for (int i = 0; ok && i < t->ndim; i++)
            ok = i == dim || t->shape[i] == t0->shape[i];
        if (!ok)
            tg_error("tg_concat", "tensor %d has shape %s, expected %s except along dim %d", k, SHAPE(b1, t),
                     SHAPE(b2, t0), dim);
        shape[dim] += t->shape[dim];
    }
    tg_tensor *out = tg_new_tensor(t0->ndim, shape);
    int64_t outer, inner;
    int nout;
    tg_split_dim(out, dim, &outer, &nout, &inner);
    int off = 0;
    for (int k = 0; k < n; k++) {
        const int nk = ts[k]->shape[dim];
        for (int64_t o = 0; o < outer; o++)
            memcpy(out->data + (o * nout + off) * inner, ts[k]->data + o * nk * inner,
                   (size_t)(nk * inner) * sizeof(float));
        off += nk;
    }
    tg_node *node = tg_record("tg_concat", out, ts, n, concat_backward);
    if (node)
        node->iarg[0] = dim;
    return out;
}

/* ---------------------------------------------------------------- narrow / select
 * narrow: a (..., n, ...) along dim, start, length -> (..., length, ...),
 *         elements start .. start+length-1 of dim (torch.narrow; a copy here).
 * select: a (..., n, ...), index -> a's shape without dim (torch.select),
 *         the same slice of length 1 with the dim dropped.
 * The backward adds the output's grad into that slice of the input's grad. */

static void slice_backward(tg_node *n)
{
    float *ga = tg_grad_of(n->in[0]);
    if (!ga)
        return;
    const int dim = n->iarg[0], start = n->iarg[1], len = n->iarg[2];
    int64_t outer, inner;
    int size;
    tg_split_dim(n->in[0], dim, &outer, &size, &inner);
    const float *g = n->out->grad;
    for (int64_t o = 0; o < outer; o++) {
        float *dst = ga + (o * size + start) * inner;
        const float *src = g + o * len * inner;
        for (int64_t i = 0; i < len * inner; i++)
            dst[i] += src[i];
    }
}

/* out has a's shape with dim set to len (narrow) or removed (select). */
static tg_tensor *slice(const char *opname, tg_tensor *a, int dim, int start, int len, bool drop_dim)
{
    int shape[TG_MAX_DIMS], nd = 0;
    for (int i = 0; i < a->ndim; i++)
        if (i != dim)
            shape[nd++] = a->shape[i];
        else if (!drop_dim)
            shape[nd++] = len;
    tg_tensor *out = tg_new_tensor(nd, shape);
    int64_t outer, inner;
    int size;
    tg_split_dim(a, dim, &outer, &size, &inner);
    for (int64_t o = 0; o < outer; o++)
        memcpy(out->data + o * len * inner, a->data + (o * size + start) * inner,
               (size_t)(len * inner) * sizeof(float));
    tg_node *n = tg_record(opname, out, &a, 1, slice_backward);
    if (n) {
        n->iarg[0] = dim;
        n->iarg[1] = start;
        n->iarg[2] = len;
    }
    return out;
}

tg_tensor *tg_narrow(tg_tensor *a, int dim, int start, int length)
{
    char b1[64];
    tg_check_ptr("tg_narrow", a, "input");
    if (a->ndim == 0)
        tg_error("tg_narrow", "cannot be applied to a 0-dim tensor");
    dim = tg_wrap_dim("tg_narrow", dim, a);
    const int size = a->shape[dim];
    if (start < -size || start > size)
        tg_error("tg_narrow", "start %d is out of range for dimension %d of size %d (shape %s)", start, dim, size,
                 SHAPE(b1, a));
    if (start < 0)
        start += size;
    if (length < 0 || length > size - start)
        tg_error("tg_narrow", "start (%d) + length (%d) exceeds dimension %d of size %d (shape %s)", start, length,
                 dim, size, SHAPE(b1, a));
    return slice("tg_narrow", a, dim, start, length, false);
}

tg_tensor *tg_select(tg_tensor *a, int dim, int index)
{
    char b1[64];
    tg_check_ptr("tg_select", a, "input");
    if (a->ndim == 0)
        tg_error("tg_select", "cannot be applied to a 0-dim tensor");
    dim = tg_wrap_dim("tg_select", dim, a);
    const int size = a->shape[dim];
    if (index < -size || index >= size)
        tg_error("tg_select", "index %d out of range for dimension %d of size %d (shape %s)", index, dim, size,
                 SHAPE(b1, a));
    if (index < 0)
        index += size;
    return slice("tg_select", a, dim, index, 1, true);
}

/* ---------------------------------------------------------------- stack
 * ts[i]: n tensors of one shape S -> out: S with a new dim of size n inserted
 * at dim (torch.stack; dim may be -(ndim+1) .. ndim). out[..., k, ...] = ts[k]. */

static void stack_backward(tg_node *n)
{
    const int dim = n->iarg[0];
    int64_t outer, inner;
    int nout;
    tg_split_dim(n->out, dim, &outer, &nout, &inner);
    for (int k = 0; k < n->n_in; k++) {
        bool add; /* its first writer copies: the slices cover the whole input */
        float *g = tg_grad_dest(n, k, &add);
        if (g)
            for (int64_t o = 0; o < outer; o++) {
                const float *src = n->out->grad + (o * nout + k) * inner;
                float *dst = g + o * inner;
                if (!add)
                    memcpy(dst, src, (size_t)inner * sizeof(float));
                else
                    for (int64_t i = 0; i < inner; i++)
                        dst[i] += src[i];
            }
    }
}

tg_tensor *tg_stack(tg_tensor **ts, int n, int dim)
{
    char b1[64], b2[64];
    tg_check_ptr("tg_stack", ts, "tensor list");
    if (n < 1)
        tg_error("tg_stack", "expects a non-empty list of tensors, got %d", n);
    for (int k = 0; k < n; k++)
        tg_check_ptr("tg_stack", ts[k], "a tensor in the list");
    tg_tensor *t0 = ts[0];
    if (t0->ndim + 1 > TG_MAX_DIMS)
        tg_error("tg_stack", "stacking tensors of shape %s needs %d dimensions, tapegrad supports %d",
                 SHAPE(b1, t0), t0->ndim + 1, TG_MAX_DIMS);
    const int nd = t0->ndim + 1;
    if (dim < -nd || dim >= nd)
        tg_error("tg_stack", "dimension %d is out of range for %d-dim result (expected to be in range of [%d, %d])",
                 dim, nd, -nd, nd - 1);
    if (dim < 0)
        dim += nd;
    for (int k = 1; k < n; k++)
        if (!tg_same_shape(ts[k], t0))
            tg_error("tg_stack", "stack expects each tensor to be equal size, but got %s at entry 0 and %s at entry %d",
                     SHAPE(b1, t0), SHAPE(b2, ts[k]), k);
    int shape[TG_MAX_DIMS];
    for (int i = 0, j = 0; i < nd; i++)
        shape[i] = i == dim ? n : t0->shape[j++];
    tg_tensor *out = tg_new_tensor(nd, shape);
    int64_t outer, inner;
    int nout;
    tg_split_dim(out, dim, &outer, &nout, &inner);
    for (int k = 0; k < n; k++)
        for (int64_t o = 0; o < outer; o++)
            memcpy(out->data + (o * nout + k) * inner, ts[k]->data + o * inner, (size_t)inner * sizeof(float));
    tg_node *node = tg_record("tg_stack", out, ts, n, stack_backward);
    if (node)
        node->iarg[0] = dim;
    return out;
}

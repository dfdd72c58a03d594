/* autograd/ops_reduce.c — the reductions: sum, mean, max (softmax and
 * log_softmax are in ops_nn.c, beside cross_entropy). */
#include "ops_internal.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- sum / mean
 * all: a -> 0-d.  along dim: a (.., n, ..) -> (.., 1, ..) with keepdim, else
 * the dim removed. mean scales by 1/n. */

static void sum_backward(tg_node *n)
{
    float *ga = tg_grad_of(n->in[0]);
    if (!ga)
        return;
    const bool mean = n->iarg[3];
    const int64_t outer = n->iarg[1], inner = n->iarg[2];
    const int len = n->iarg[0];
    const float *g = n->out->grad;
    for (int64_t o = 0; o < outer; o++)
        for (int i = 0; i < len; i++) {
            float *dst = ga + (o * len + i) * inner;
            const float *src = g + o * inner;
            if (mean) /* torch: grad / n */
                for (int64_t k = 0; k < inner; k++)
                    dst[k] += src[k] / (float)len;
            else
                for (int64_t k = 0; k < inner; k++)
                    dst[k] += src[k];
        }
}

static void reduced_shape(const tg_tensor *a, int dim, bool keepdim, int *nd, int *shape)
{
    int k = 0;
    for (int i = 0; i < a->ndim; i++) {
        if (i == dim) {
            if (keepdim)
                shape[k++] = 1;
        } else {
            shape[k++] = a->shape[i];
        }
    }
    *nd = k;
}

static tg_tensor *sum_impl(const char *opname, tg_tensor *a, int dim, bool all, bool keepdim, bool mean)
{
    tg_check_ptr(opname, a, "input");
    int64_t outer, inner;
    int len, nd, shape[TG_MAX_DIMS] = {0};
    if (all) {
        outer = 1;
        len = (int)a->numel;
        inner = 1;
        nd = 0;
    } else {
        dim = tg_wrap_dim(opname, dim, a);
        tg_split_dim(a, dim, &outer, &len, &inner);
        reduced_shape(a, dim, keepdim, &nd, shape);
    }
    tg_tensor *out = tg_new_tensor(nd, shape);
    tg_k_sum_dim(a->data, out->data, outer, len, inner, mean);
    tg_node *n = tg_record(opname, out, &a, 1, sum_backward);
    if (n) {
        n->iarg[0] = len;
        n->iarg[1] = (int)outer;
        n->iarg[2] = (int)inner;
        n->iarg[3] = mean;
    }
    return out;
}

tg_tensor *tg_sum(tg_tensor *a) { return sum_impl("tg_sum", a, 0, true, false, false); }
tg_tensor *tg_sum_dim(tg_tensor *a, int dim, bool keepdim) { return sum_impl("tg_sum_dim", a, dim, false, keepdim, false); }
tg_tensor *tg_mean(tg_tensor *a) { return sum_impl("tg_mean", a, 0, true, false, true); }
tg_tensor *tg_mean_dim(tg_tensor *a, int dim, bool keepdim) { return sum_impl("tg_mean_dim", a, dim, false, keepdim, true); }

/* ---------------------------------------------------------------- max
 * all: a -> 0-d, the gradient shared evenly among all maximal elements (torch).
 * along dim: values; the gradient goes to the first maximal index (torch). */

static void max_all_backward(tg_node *n)
{
    float *ga = tg_grad_of(n->in[0]);
    if (!ga)
        return;
    const tg_tensor *a = n->in[0];
    const float m = n->out->data[0];
    int64_t count = 0;
    for (int64_t i = 0; i < a->numel; i++)
        count += a->data[i] == m;
    const float g = n->out->grad[0] / (float)(count ? count : 1);
    for (int64_t i = 0; i < a->numel; i++)
        if (a->data[i] == m)
            ga[i] += g;
}

tg_tensor *tg_max(tg_tensor *a)
{
    tg_check_ptr("tg_max", a, "input");
    if (a->numel == 0)
        tg_error("tg_max", "cannot take the max of an empty tensor");
    tg_tensor *out = tg_new_tensor(0, NULL);
    float m = a->data[0];
    for (int64_t i = 1; i < a->numel; i++)
        if (a->data[i] > m || isnan(a->data[i]))
            m = a->data[i];
    out->data[0] = m;
    tg_record("tg_max", out, &a, 1, max_all_backward);
    return out;
}

static void max_dim_backward(tg_node *n)
{
    float *ga = tg_grad_of(n->in[0]);
    if (!ga)
        return;
    const int32_t *idx = n->ctx;
    const int len = n->iarg[0];
    const int64_t outer = n->iarg[1], inner = n->iarg[2];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t k = 0; k < inner; k++)
            ga[(o * len + idx[o * inner + k]) * inner + k] += n->out->grad[o * inner + k];
}

tg_tensor *tg_max_dim(tg_tensor *a, int dim, bool keepdim)
{
    tg_check_ptr("tg_max_dim", a, "input");
    dim = tg_wrap_dim("tg_max_dim", dim, a);
    int64_t outer, inner;
    int len, nd, shape[TG_MAX_DIMS];
    tg_split_dim(a, dim, &outer, &len, &inner);
    if (len == 0) {
        char b1[64];
        tg_error("tg_max_dim", "cannot reduce an empty dimension %d of %s", dim, SHAPE(b1, a));
    }
    reduced_shape(a, dim, keepdim, &nd, shape);
    tg_tensor *out = tg_new_tensor(nd, shape);
    int32_t *idx = tg_tape_alloc((size_t)(outer * inner) * sizeof *idx);
    tg_k_max_dim(a->data, out->data, idx, outer, len, inner);
    tg_node *n = tg_record("tg_max_dim", out, &a, 1, max_dim_backward);
    if (n) {
        n->ctx = idx;
        n->iarg[0] = len;
        n->iarg[1] = (int)outer;
        n->iarg[2] = (int)inner;
    }
    return out;
}

/* tensor/tensor.c — the tensor type: creation, copies, grads, printing. */
#include "tensor.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int64_t tg_shape_numel(int ndim, const int *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

static void check_shape(const char *op, int ndim, const int *shape)
{
    if (ndim < 0 || ndim > TG_MAX_DIMS)
        tg_error(op, "%d dimensions requested, tapegrad supports 0 to %d", ndim, TG_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) {
            char b[64];
            tg_error(op, "negative dimension in shape %s", tg_shape_str(b, ndim, shape));
        }
}

tg_tensor *tg_tensor_alloc(tg_arena *a, int ndim, const int *shape)
{
    check_shape("tg_tensor_alloc", ndim, shape);
    const int64_t numel = tg_shape_numel(ndim, shape);
    tg_tensor *t;
    if (a) {
        t = tg_arena_alloc(a, sizeof *t);
        memset(t, 0, sizeof *t);
        t->data = tg_arena_alloc(a, (size_t)numel * sizeof(float));
        t->storage = TG_STORAGE_ARENA;
    } else {
        t = calloc(1, sizeof *t);
        if (!t)
            tg_error("tg_tensor_alloc", "out of memory");
        t->data = malloc((size_t)(numel ? numel : 1) * sizeof(float));
        if (!t->data)
            tg_error("tg_tensor_alloc", "out of memory for %lld floats", (long long)numel);
        t->storage = TG_STORAGE_HEAP;
    }
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->numel = numel;
    t->node = -1;
    return t;
}

void tg_free(tg_tensor *t)
{
    if (!t || t->storage != TG_STORAGE_HEAP)
        return;
    if (!t->data_borrowed)
        free(t->data);
    free(t->grad);
    free(t);
}

tg_tensor *tg_empty(int ndim, const int *shape) { return tg_tensor_alloc(NULL, ndim, shape); }

tg_tensor *tg_full(int ndim, const int *shape, float value)
{
    tg_tensor *t = tg_empty(ndim, shape);
    for (int64_t i = 0; i < t->numel; i++)
        t->data[i] = value;
    return t;
}

tg_tensor *tg_zeros(int ndim, const int *shape) { return tg_full(ndim, shape, 0.0f); }
tg_tensor *tg_ones(int ndim, const int *shape) { return tg_full(ndim, shape, 1.0f); }
tg_tensor *tg_scalar(float value) { return tg_full(0, NULL, value); }

tg_tensor *tg_from_array(int ndim, const int *shape, const float *values)
{
    tg_tensor *t = tg_empty(ndim, shape);
    if (t->numel)
        memcpy(t->data, values, (size_t)t->numel * sizeof(float));
    return t;
}

tg_tensor *tg_arange(float start, float end, float step)
{
    if (step == 0.0f || !isfinite(start) || !isfinite(end) || !isfinite(step) ||
        (step > 0 && end < start) || (step < 0 && end > start))
        tg_error("tg_arange", "cannot go from %g to %g in steps of %g", start, end, step);
    /* torch computes the length in double: ceil((end - start) / step). */
    int n = (int)ceil(((double)end - (double)start) / (double)step);
    tg_tensor *t = tg_empty(1, (int[]){n});
    for (int i = 0; i < n; i++)
        t->data[i] = (float)((double)start + (double)i * (double)step);
    return t;
}

tg_tensor *tg_copy(const tg_tensor *src)
{
    tg_tensor *t = tg_from_array(src->ndim, src->shape, src->data);
    t->name = src->name;
    return t;
}

tg_tensor *tg_set_name(tg_tensor *t, const char *name)
{
    t->name = name;
    return t;
}

tg_tensor *tg_requires_grad(tg_tensor *t, bool on)
{
    t->requires_grad = on;
    return t;
}

float *tg_grad_buffer(tg_tensor *t, tg_arena *a)
{
    if (t->grad)
        return t->grad;
    const size_t bytes = (size_t)(t->numel ? t->numel : 1) * sizeof(float);
    if (t->storage == TG_STORAGE_HEAP || !a) {
        t->grad = calloc(1, bytes);
        if (!t->grad)
            tg_error("tg_grad_buffer", "out of memory for %zu bytes", bytes);
    } else {
        t->grad = tg_arena_alloc(a, bytes);
        memset(t->grad, 0, bytes);
    }
    return t->grad;
}

void tg_zero_grad_tensor(tg_tensor *t)
{
    if (t->grad)
        memset(t->grad, 0, (size_t)t->numel * sizeof(float));
}

bool tg_same_shape(const tg_tensor *a, const tg_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

void tg_copy_data(tg_tensor *dst, const tg_tensor *src)
{
    if (dst->numel != src->numel) {
        char b1[64], b2[64];
        tg_error("tg_copy_data", "sizes differ: %s and %s", tg_shape_str(b1, dst->ndim, dst->shape),
                 tg_shape_str(b2, src->ndim, src->shape));
    }
    memmove(dst->data, src->data, (size_t)src->numel * sizeof(float));
}

static void tri_(tg_tensor *t, int diagonal, bool upper, const char *op)
{
    if (t->ndim < 2)
        tg_error(op, "input tensor must have at least 2 dimensions, got %d", t->ndim);
    const int R = t->shape[t->ndim - 2], C = t->shape[t->ndim - 1];
    const int64_t rc = (int64_t)R * C;
    const int64_t mats = rc > 0 ? t->numel / rc : 0;
    for (int64_t m = 0; m < mats; m++)
        for (int i = 0; i < R; i++)
            for (int j = 0; j < C; j++) {
                const bool keep = upper ? (j - i >= diagonal) : (j - i <= diagonal);
                if (!keep)
                    t->data[(m * R + i) * C + j] = 0.0f;
            }
}

void tg_triu_(tg_tensor *t, int diagonal) { tri_(t, diagonal, true, "tg_triu_"); }
void tg_tril_(tg_tensor *t, int diagonal) { tri_(t, diagonal, false, "tg_tril_"); }

/* ---------------------------------------------------------------- printing
 * A port of the essentials of torch/_tensor_str.py: one formatter for the
 * whole tensor (integer mode, fixed 4 decimals or scientific), right-aligned
 * to a common width, 80-column wrapping of the last dim, and summarisation
 * ("...", 3 edge items) above 1000 elements. */

typedef struct {
    char *buf;
    size_t size, len;
} sbuf;

static void put(sbuf *s, const char *str)
{
    size_t n = strlen(str);
    if (s->len + 1 < s->size) {
        size_t room = s->size - s->len - 1;
        memcpy(s->buf + s->len, str, n < room ? n : room);
        s->buf[s->len + (n < room ? n : room)] = '\0';
    }
    s->len += n;
}

typedef struct {
    bool int_mode, sci_mode;
    int width;
} fmt_t;

static void fmt_value(const fmt_t *f, float v, char *out)
{
    if (isnan(v))
        strcpy(out, "nan");
    else if (isinf(v))
        strcpy(out, v > 0 ? "inf" : "-inf");
    else if (f->sci_mode)
        sprintf(out, "%.4e", (double)v);
    else if (f->int_mode)
        sprintf(out, "%.0f.", (double)v);
    else
        sprintf(out, "%.4f", (double)v);
}

static bool summarise_dim(const tg_tensor *t, int d, bool summarise) { return summarise && t->shape[d] > 6; }

/* Visits the printed elements (all, or the summarised edges) to build the formatter. */
static void collect(const tg_tensor *t, int d, int64_t off, bool summ, float *mx, float *mn, bool *all_int,
                    bool *any_finite, bool *nonzero_seen, float *mn_nz)
{
    if (d == t->ndim) {
        float v = t->data[off];
        if (!isfinite(v))
            return;
        float a = fabsf(v);
        *any_finite = true;
        if (v != truncf(v))
            *all_int = false;
        if (a > *mx)
            *mx = a;
        if (a < *mn)
            *mn = a;
        if (a != 0.0f) {
            if (!*nonzero_seen || a < *mn_nz)
                *mn_nz = a;
            *nonzero_seen = true;
        }
        return;
    }
    int64_t stride = 1;
    for (int k = d + 1; k < t->ndim; k++)
        stride *= t->shape[k];
    for (int i = 0; i < t->shape[d]; i++) {
        if (summarise_dim(t, d, summ) && i == 3)
            i = t->shape[d] - 3;
        collect(t, d + 1, off + i * stride, summ, mx, mn, all_int, any_finite, nonzero_seen, mn_nz);
    }
}

static void emit(sbuf *s, const tg_tensor *t, const fmt_t *f, int d, int64_t off, int indent, bool summ)
{
    char item[64], pad[80];
    if (t->ndim == 0) {
        fmt_value(f, t->data[0], item);
        put(s, item);
        return;
    }
    int64_t stride = 1;
    for (int k = d + 1; k < t->ndim; k++)
        stride *= t->shape[k];
    put(s, "[");
    const int n = t->shape[d];
    if (d == t->ndim - 1) {
        int per_line = (80 - indent) / (f->width + 2);
        if (per_line < 1)
            per_line = 1;
        int on_line = 0;
        for (int i = 0; i < n; i++) {
            if (summarise_dim(t, d, summ) && i == 3) {
                put(s, " ...,");
                i = n - 3;
            }
            if (i > 0 && on_line == 0) {
                put(s, "\n");
                for (int k = 0; k < indent + 1; k++)
                    put(s, " ");
            } else if (i > 0) {
                put(s, " ");
            }
            fmt_value(f, t->data[off + i], item);
            int w = (int)strlen(item);
            int np = f->width - w;
            for (int k = 0; k < np && k < 79; k++)
                pad[k] = ' ';
            pad[np > 0 ? (np < 79 ? np : 79) : 0] = '\0';
            put(s, pad);
            put(s, item);
            if (i < n - 1)
                put(s, ",");
            if (++on_line == per_line)
                on_line = 0;
        }
    } else {
        for (int i = 0; i < n; i++) {
            if (summarise_dim(t, d, summ) && i == 3) {
                put(s, "\n");
                for (int k = 0; k < indent + 1; k++)
                    put(s, " ");
                put(s, "...,");
                i = n - 3;
            }
            if (i > 0) {
                for (int k = 0; k < t->ndim - d - 1; k++)
                    put(s, "\n");
                for (int k = 0; k < indent + 1; k++)
                    put(s, " ");
            }
            emit(s, t, f, d + 1, off + i * stride, indent + 1, summ);
            if (i < n - 1)
                put(s, ",");
        }
    }
    put(s, "]");
}

int tg_snprint(char *buf, size_t size, const tg_tensor *t)
{
    sbuf s = {buf, size, 0};
    if (size)
        buf[0] = '\0';
    const bool summ = t->numel > 1000;
    float mx = 0.0f, mn = INFINITY, mn_nz = 0.0f;
    bool all_int = true, any_finite = false, nz = false;
    if (t->numel > 0)
        collect(t, 0, 0, summ, &mx, &mn, &all_int, &any_finite, &nz, &mn_nz);
    fmt_t f = {false, false, 1};
    if (any_finite) {
        if (all_int) {
            f.int_mode = true;
            f.sci_mode = mx > 1e8f;
        } else {
            /* torch: sci when max/min > 1000 or max > 1e8 or min < 1e-4, over nonzero |values| */
            f.sci_mode = nz && (mx / mn_nz > 1000.0f || mx > 1e8f || mn_nz < 1e-4f);
        }
    }
    /* width: widest formatted element */
    {
        fmt_t probe = f;
        char item[64];
        /* scan the same elements again for width */
        int64_t idx[TG_MAX_DIMS] = {0};
        (void)idx;
        for (int64_t i = 0; i < t->numel; i++) {
            if (summ) {
                /* only edges count; cheap check per dim */
                int64_t r = i;
                bool edge = true;
                for (int d = t->ndim - 1; d >= 0; d--) {
                    int c = (int)(r % t->shape[d]);
                    r /= t->shape[d];
                    if (t->shape[d] > 6 && c >= 3 && c < t->shape[d] - 3)
                        edge = false;
                }
                if (!edge)
                    continue;
            }
            if (!isfinite(t->data[i]))
                continue; /* torch sizes columns by the finite values only */
            fmt_value(&probe, t->data[i], item);
            int w = (int)strlen(item);
            if (w > f.width)
                f.width = w;
        }
    }
    put(&s, "tensor(");
    if (t->numel == 0 && t->ndim > 0) {
        put(&s, "[]");
    } else {
        emit(&s, t, &f, 0, 0, 7, summ);
    }
    put(&s, ")");
    return (int)s.len;
}

void tg_fprint(FILE *f, const tg_tensor *t)
{
    char small[4096];
    int n = tg_snprint(small, sizeof small, t);
    if ((size_t)n < sizeof small) {
        fputs(small, f);
    } else {
        char *big = malloc((size_t)n + 1);
        if (!big)
            tg_error("tg_fprint", "out of memory");
        tg_snprint(big, (size_t)n + 1, t);
        fputs(big, f);
        free(big);
    }
    fputc('\n', f);
}

void tg_print(const tg_tensor *t) { tg_fprint(stdout, t); }

void tg_print_grad(const tg_tensor *t)
{
    if (!t->grad) {
        puts("None");
        return;
    }
    tg_tensor view = *t;
    view.data = t->grad;
    view.grad = NULL;
    tg_fprint(stdout, &view);
}

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
    if (ndim > 0)
        tg_check_ptr(op, shape, "shape");
    char b[64];
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            tg_error(op, "negative dimension in shape %s", tg_shape_str(b, ndim, shape));
        /* element counts and byte sizes must fit: at most 2^31 - 1 elements */
        numel *= shape[i];
        if (numel > INT32_MAX)
            tg_error(op, "shape %s has more than %d elements", tg_shape_str(b, ndim, shape), INT32_MAX);
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
    for (tg_hook *h = t->hooks, *next; h; h = next) {
        next = h->next;
        if (h->heap)
            free(h);
    }
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
    if (t->numel && !values) {
        tg_free(t);
        tg_error("tg_from_array", "values is NULL");
    }
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
    const double len = ceil(((double)end - (double)start) / (double)step);
    if (len > INT32_MAX)
        tg_error("tg_arange", "from %g to %g in steps of %g is %.0f elements, more than %d", start, end, step, len,
                 INT32_MAX);
    int n = (int)len;
    tg_tensor *t = tg_empty(1, (int[]){n});
    for (int i = 0; i < n; i++)
        t->data[i] = (float)((double)start + (double)i * (double)step);
    return t;
}

tg_tensor *tg_copy(const tg_tensor *src)
{
    tg_check_ptr("tg_copy", src, "tensor");
    tg_tensor *t = tg_from_array(src->ndim, src->shape, src->data);
    t->name = src->name;
    return t;
}

tg_tensor *tg_set_name(tg_tensor *t, const char *name)
{
    tg_check_ptr("tg_set_name", t, "tensor");
    t->name = name;
    return t;
}

tg_tensor *tg_requires_grad(tg_tensor *t, bool on)
{
    tg_check_ptr("tg_requires_grad", t, "tensor");
    t->requires_grad = on;
    return t;
}

float *tg_grad_buffer(tg_tensor *t, tg_arena *a)
{
    tg_check_ptr("tg_grad_buffer", t, "tensor");
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
    tg_check_ptr("tg_zero_grad_tensor", t, "tensor");
    if (t->grad)
        memset(t->grad, 0, (size_t)t->numel * sizeof(float));
}

bool tg_same_shape(const tg_tensor *a, const tg_tensor *b)
{
    tg_check_ptr("tg_same_shape", a, "first tensor");
    tg_check_ptr("tg_same_shape", b, "second tensor");
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

void tg_copy_data(tg_tensor *dst, const tg_tensor *src)
{
    tg_check_ptr("tg_copy_data", dst, "dst");
    tg_check_ptr("tg_copy_data", src, "src");
    if (dst->numel != src->numel) {
        char b1[64], b2[64];
        tg_error("tg_copy_data", "sizes differ: %s and %s", tg_shape_str(b1, dst->ndim, dst->shape),
                 tg_shape_str(b2, src->ndim, src->shape));
    }
    memmove(dst->data, src->data, (size_t)src->numel * sizeof(float));
}

static void tri_(tg_tensor *t, int diagonal, bool upper, const char *op)
{
    tg_check_ptr(op, t, "tensor");
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
 * A port of torch/_tensor_str.py (precision 4, linewidth 80, threshold 1000,
 * edgeitems 3). One _Formatter for the whole tensor, built from the nonzero
 * finite values (of the summarised data when numel > 1000): integer mode if
 * they are all integers, scientific if max/min > 1000 or max > 1e8 (or, not
 * in integer mode, min < 1e-4); every element is right-aligned to the widest.
 * The last dim wraps at 80 columns, counting " ..." as an element. */

#define TG_EDGE 3

typedef struct {
    char *buf;
    size_t size, len;
} sbuf;

static void put(sbuf *s, const char *str)
{
    size_t n = strlen(str);
    if (s->len + 1 < s->size) {
        size_t room = s->size - s->len - 1;
        size_t k = n < room ? n : room;
        memcpy(s->buf + s->len, str, k);
        s->buf[s->len + k] = '\0';
    }
    s->len += n;
}

static void put_spaces(sbuf *s, int n)
{
    for (int i = 0; i < n; i++)
        put(s, " ");
}

typedef struct {
    bool int_mode, sci_mode;
    int width;
} fmt_t;

/* The formatted value without padding. */
static int fmt_raw(const fmt_t *f, float v, char *out, size_t size)
{
    if (isnan(v))
        return snprintf(out, size, "nan");
    if (isinf(v))
        return snprintf(out, size, v > 0 ? "inf" : "-inf");
    if (f->sci_mode)
        return snprintf(out, size, "%.4e", (double)v);
    if (f->int_mode)
        return snprintf(out, size, "%.0f.", (double)v);
    return snprintf(out, size, "%.4f", (double)v);
}

static void put_value(sbuf *s, const fmt_t *f, float v)
{
    char item[64];
    int w = fmt_raw(f, v, item, sizeof item);
    put_spaces(s, f->width - w);
    put(s, item);
}

static int64_t dim_stride(const tg_tensor *t, int d)
{
    int64_t st = 1;
    for (int k = d + 1; k < t->ndim && k < TG_MAX_DIMS; k++)
        st *= t->shape[k];
    return st;
}

static bool summarised(const tg_tensor *t, int d, bool summ) { return summ && t->shape[d] > 2 * TG_EDGE; }

/* Calls visit on every printed element (all, or the summarised edges). */
typedef void (*visit_fn)(float v, void *ctx);
static void visit(const tg_tensor *t, int d, int64_t off, bool summ, visit_fn fn, void *ctx)
{
    if (d >= t->ndim || d >= TG_MAX_DIMS) {
        fn(t->data[off], ctx);
        return;
    }
    const int64_t st = dim_stride(t, d);
    for (int i = 0; i < t->shape[d]; i++) {
        if (summarised(t, d, summ) && i == TG_EDGE)
            i = t->shape[d] - TG_EDGE;
        visit(t, d + 1, off + i * st, summ, fn, ctx);
    }
}

typedef struct {
    bool any, all_int;
    double mn, mx;
} stats_t;

static void stats_visit(float v, void *ctx)
{
    stats_t *s = ctx;
    if (!isfinite(v) || v == 0.0f)
        return;
    const double a = fabs((double)v);
    if (!s->any || a < s->mn)
        s->mn = a;
    if (!s->any || a > s->mx)
        s->mx = a;
    s->any = true;
    if (v != ceilf(v))
        s->all_int = false;
}

typedef struct {
    fmt_t *f;
} width_ctx;

static void width_visit(float v, void *ctx)
{
    width_ctx *w = ctx;
    if (!isfinite(v) || v == 0.0f)
        return;
    char item[64];
    const int n = fmt_raw(w->f, v, item, sizeof item);
    if (n > w->f->width)
        w->f->width = n;
}

static void emit(sbuf *s, const tg_tensor *t, const fmt_t *f, int d, int64_t off, int indent, bool summ)
{
    if (d >= TG_MAX_DIMS)
        return;
    const int n = t->shape[d];
    const int64_t st = dim_stride(t, d);
    put(s, "[");
    if (d == t->ndim - 1) {
        int per_line = (80 - indent) / (f->width + 2);
        if (per_line < 1)
            per_line = 1;
        int k = 0; /* element index in the printed list, " ..." included */
        for (int i = 0; i < n; i++, k++) {
            if (k > 0)
                put(s, k % per_line == 0 ? ",\n" : ", ");
            if (k > 0 && k % per_line == 0)
                put_spaces(s, indent + 1);
            if (summarised(t, d, summ) && i == TG_EDGE) {
                put(s, " ...");
                i = n - TG_EDGE - 1;
                continue;
            }
            put_value(s, f, t->data[off + i * st]);
        }
    } else {
        for (int i = 0; i < n; i++) {
            if (i > 0) {
                put(s, ",");
                for (int k = 0; k < t->ndim - d - 1; k++)
                    put(s, "\n");
                put_spaces(s, indent + 1);
            }
            if (summarised(t, d, summ) && i == TG_EDGE) {
                put(s, "...");
                i = n - TG_EDGE - 1;
                continue;
            }
            emit(s, t, f, d + 1, off + i * st, indent + 1, summ);
        }
    }
    put(s, "]");
}

int tg_snprint(char *buf, size_t size, const tg_tensor *t)
{
    tg_check_ptr("tg_snprint", t, "tensor");
    if (size)
        tg_check_ptr("tg_snprint", buf, "buffer");
    sbuf s = {buf, size, 0};
    if (size)
        buf[0] = '\0';
    const bool summ = t->numel > 1000;
    fmt_t f = {true, false, 1};
    stats_t st = {false, true, 0.0, 0.0};
    if (t->numel > 0)
        visit(t, 0, 0, summ, stats_visit, &st);
    if (st.any) {
        f.int_mode = st.all_int;
        f.sci_mode = st.mx / st.mn > 1000.0 || st.mx > 1e8 || (!f.int_mode && st.mn < 1e-4);
        width_ctx w = {&f};
        visit(t, 0, 0, summ, width_visit, &w);
    }
    put(&s, "tensor(");
    if (t->ndim == 0) {
        char item[64];
        fmt_raw(&f, t->data[0], item, sizeof item);
        put(&s, item);
    } else if (t->numel == 0) {
        put(&s, "[]");
        if (t->ndim > 1) { /* torch: tensor([], size=(2, 0, 4)) */
            char item[32];
            put(&s, ", size=(");
            for (int i = 0; i < t->ndim; i++) {
                snprintf(item, sizeof item, i ? ", %d" : "%d", t->shape[i]);
                put(&s, item);
            }
            put(&s, ")");
        }
    } else {
        emit(&s, t, &f, 0, 0, 7, summ);
    }
    put(&s, ")");
    return (int)s.len;
}

void tg_fprint(FILE *f, const tg_tensor *t)
{
    tg_check_ptr("tg_fprint", f, "stream");
    tg_check_ptr("tg_fprint", t, "tensor");
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
    tg_check_ptr("tg_print_grad", t, "tensor");
    if (!t->grad) {
        puts("None");
        return;
    }
    tg_tensor view = *t;
    view.data = t->grad;
    view.grad = NULL;
    tg_fprint(stdout, &view);
}

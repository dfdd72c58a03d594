/* autograd/ops_nn.c — the neural-network ops: masked_fill, triu/tril,
 * dropout, embedding, softmax/log_softmax, cross_entropy, layernorm. */
#include "ops_internal.h"
#include "../tensor/rowmath.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- masked_fill
 * a: any shape; mask: broadcastable to a (nonzero = fill) -> out: a's shape.
 * The backward needs only the mask: a copy of it (its own shape, e.g. the
 * (T, T) causal mask, not a's) and the broadcast plan are saved. */

typedef struct {
    tg_bcast bc;
    const float *mask;
} masked_fill_ctx;

static void masked_fill_backward(tg_node *n)
{
    bool add; /* its first writer writes the filled places' zeros too */
    float *ga = tg_grad_dest(n, 0, &add);
    if (!ga)
        return;
    const masked_fill_ctx *c = n->ctx;
    const tg_bcast *bc = &c->bc;
    const float *g = n->out->grad;
    int64_t i = 0;
    for (int i0 = 0; i0 < bc->shape[0]; i0++)
        for (int i1 = 0; i1 < bc->shape[1]; i1++)
            for (int i2 = 0; i2 < bc->shape[2]; i2++) {
                const float *m = c->mask + i0 * bc->sb[0] + i1 * bc->sb[1] + i2 * bc->sb[2];
                for (int i3 = 0; i3 < bc->shape[3]; i3++, i++)
                    if (m[i3 * bc->sb[3]] == 0.0f) /* select, not multiply: NaN under the mask stays out */
                        ga[i] = add ? ga[i] + g[i] : g[i];
                    else if (!add)
                        ga[i] = 0.0f;
            }
}

tg_tensor *tg_masked_fill(tg_tensor *a, const tg_tensor *mask, float value)
{
    char b1[64], b2[64];
    tg_check_ptr("tg_masked_fill", a, "input");
    tg_check_ptr("tg_masked_fill", mask, "mask");
    tg_bcast bc;
    int nd;
    bool ok = tg_bcast_init(&bc, a->ndim, a->shape, mask->ndim, mask->shape, &nd) && nd == a->ndim;
    for (int i = 0; ok && i < nd; i++)
        ok = bc.shape[TG_MAX_DIMS - nd + i] == a->shape[i];
    if (!ok)
        tg_error("tg_masked_fill", "mask of shape %s cannot be broadcast to the input's shape %s",
                 SHAPE(b1, mask), SHAPE(b2, a));
    tg_tensor *out = tg_new_tensor(a->ndim, a->shape);
    int64_t i = 0;
    for (int i0 = 0; i0 < bc.shape[0]; i0++)
        for (int i1 = 0; i1 < bc.shape[1]; i1++)
            for (int i2 = 0; i2 < bc.shape[2]; i2++) {
                const float *m = mask->data + i0 * bc.sb[0] + i1 * bc.sb[1] + i2 * bc.sb[2];
                for (int i3 = 0; i3 < bc.shape[3]; i3++, i++)
                    out->data[i] = m[i3 * bc.sb[3]] != 0.0f ? value : a->data[i];
            }
    tg_node *n = tg_record("tg_masked_fill", out, &a, 1, masked_fill_backward);
    if (n) {
        masked_fill_ctx *c = tg_tape_alloc(sizeof *c);
        float *copy = tg_tape_alloc((size_t)(mask->numel ? mask->numel : 1) * sizeof(float));
        memcpy(copy, mask->data, (size_t)mask->numel * sizeof(float));
        c->bc = bc;
        c->mask = copy;
        n->ctx = c;
    }
    return out;
}

/* ---------------------------------------------------------------- triu / tril
 * a: (..., R, C) -> out: same shape, elements below (triu) or above (tril)
 * diagonal d zeroed; the gradient passes where elements are kept. */

static void tri_backward(tg_node *n)
{
    bool add; /* its first writer writes the zeroed places' zeros too */
    float *ga = tg_grad_dest(n, 0, &add);
    if (!ga)
        return;
    const int R = n->out->shape[n->out->ndim - 2], C = n->out->shape[n->out->ndim - 1];
    const int d = n->iarg[0], upper = n->iarg[1];
    for (int64_t i = 0; i < n->out->numel; i++) {
        const int r = (int)((i / C) % R), c = (int)(i % C);
        if (upper ? (c - r >= d) : (c - r <= d))
            ga[i] = add ? ga[i] + n->out->grad[i] : n->out->grad[i];
        else if (!add)
            ga[i] = 0.0f;
    }
}

static tg_tensor *tri(const char *opname, tg_tensor *a, int diagonal, bool upper)
{
    tg_check_ptr(opname, a, "input");
    if (a->ndim < 2) {
        char b1[64];
        tg_error(opname, "input tensor must have at least 2 dimensions, got %s", SHAPE(b1, a));
    }
    tg_tensor *out = tg_new_tensor(a->ndim, a->shape);
    memcpy(out->data, a->data, (size_t)a->numel * sizeof(float));
    if (upper)
        tg_triu_(out, diagonal);
    else
        tg_tril_(out, diagonal);
    tg_node *n = tg_record(opname, out, &a, 1, tri_backward);
    if (n) {
        n->iarg[0] = diagonal;
        n->iarg[1] = upper;
    }
    return out;
}

tg_tensor *tg_triu(tg_tensor *a, int diagonal) { return tri("tg_triu", a, diagonal, true); }
tg_tensor *tg_tril(tg_tensor *a, int diagonal) { return tri("tg_tril", a, diagonal, false); }

/* ---------------------------------------------------------------- dropout
 * a: any shape -> out: same shape. torch's CPU path exactly: noise =
 * bernoulli_(1-p) (one double uniform per element, in order) / (1-p), out =
 * a * noise. Eval mode, p = 0 or an empty tensor return a itself and draw
 * nothing; p = 1 returns a * 0 (zeros, nan where a is inf or nan) and draws
 * nothing. */

#define DROPOUT_CHUNK 32768 /* elements per thread chunk at least, and per row call */

typedef struct {
    const uint64_t *keep; /* one bit per element (tg_random_bits) */
    const float *x;
    float *y;
    float scale;
} dropout_args;

typedef struct {
    const uint64_t *keep;
    const float *gout;
    float *ga;
    float scale;
    bool add; /* ga += gout * noise, or (its first writer) ga = gout * noise */
} dropout_backward_args;

/* y[i] (+)= x[i] * noise(i), noise = keep ? scale : 0, over one range */
TG_TARGET_CLONES
static void dropout_range(void *vctx, int64_t i0, int64_t i1)
{
    const dropout_args *j = vctx;
    for (int64_t i = i0; i < i1; i += DROPOUT_CHUNK) {
        const int n = i1 - i < DROPOUT_CHUNK ? (int)(i1 - i) : DROPOUT_CHUNK;
        tg_row_dropout(j->keep, i, j->scale, j->x + i, j->y + i, n);
    }
}

TG_TARGET_CLONES
static void dropout_backward_range(void *vctx, int64_t i0, int64_t i1)
{
    const dropout_backward_args *j = vctx;
    for (int64_t i = i0; i < i1; i += DROPOUT_CHUNK) {
        const int n = i1 - i < DROPOUT_CHUNK ? (int)(i1 - i) : DROPOUT_CHUNK;
        if (j->add)
            tg_row_dropout_backward(j->keep, i, j->scale, j->gout + i, j->ga + i, n);
        else /* the forward's product, gout * noise */
            tg_row_dropout(j->keep, i, j->scale, j->gout + i, j->ga + i, n);
    }
}

static void dropout_backward(tg_node *n)
{
    bool add;
    float *ga = tg_grad_dest(n, 0, &add);
    const uint64_t *keep = n->ctx;
    if (!ga)
        return;
    dropout_backward_args j = {keep, n->out->grad, ga, n->farg[0], add}; /* ga (+)= gout * noise */
    tg_parallel_for(n->out->numel, DROPOUT_CHUNK, dropout_backward_range, &j);
}

tg_tensor *tg_dropout(tg_tensor *a, float p, bool train, tg_generator *g)
{
    tg_check_ptr("tg_dropout", a, "input");
    if (!(p >= 0.0f && p <= 1.0f))
        tg_error("tg_dropout", "dropout probability has to be between 0 and 1, but got %g", p);
    if (!train || p == 0.0f || a->numel == 0)
        return a;
    tg_tensor *out = tg_new_tensor(a->ndim, a->shape);
    uint64_t *keep = NULL;
    float scale = 0.0f;
    keep = tg_tape_alloc((size_t)((a->numel + 63) / 64) * sizeof *keep);
    if (p == 1.0f) { /* torch: input * 0, drawing nothing (an inf or nan gives nan) */
        memset(keep, 0, (size_t)((a->numel + 63) / 64) * sizeof *keep);
    } else {
        tg_check_ptr("tg_dropout", g, "generator");
        /* the noise torch multiplies by: bernoulli(1-p) / (1-p), in float */
        const double keep_p = 1.0 - (double)p;
        scale = 1.0f / (float)keep_p;
        tg_random_bits(g, a->numel, keep_p, keep);
    }
    dropout_args j = {keep, a->data, out->data, scale};
    tg_parallel_for(a->numel, DROPOUT_CHUNK, dropout_range, &j);
    tg_node *n = tg_record("tg_dropout", out, &a, 1, dropout_backward);
    if (n) {
        n->ctx = keep;
        n->farg[0] = scale;
    }
    return out;
}

/* ---------------------------------------------------------------- embedding
 * weight: (num, dim); ids: integers of shape S -> out: S + (dim) */

static void embedding_backward(tg_node *n)
{
    float *gw = tg_grad_of(n->in[0]);
    if (!gw)
        return;
    const int32_t *ids = n->ctx;
    const int dim = n->in[0]->shape[1];
    const int64_t count = n->out->numel / (dim ? dim : 1);
    for (int64_t i = 0; i < count; i++) {
        float *dst = gw + (int64_t)ids[i] * dim;
        const float *src = n->out->grad + i * dim;
        for (int k = 0; k < dim; k++)
            dst[k] += src[k];
    }
}

tg_tensor *tg_embedding(tg_tensor *weight, const int32_t *ids, int ndim, const int *shape)
{
    char b1[64], b2[64];
    tg_check_ptr("tg_embedding", weight, "weight");
    if (weight->ndim != 2)
        tg_error("tg_embedding", "weight must be 2-D (num, dim), got %s", SHAPE(b1, weight));
    if (ndim > 0)
        tg_check_ptr("tg_embedding", shape, "ids shape");
    /* Validated before anything is formatted: a shape is printed only when
     * it has a number of dimensions a tensor can have. */
    if (ndim < 0 || ndim + 1 > TG_MAX_DIMS) {
        if (ndim >= 0 && ndim <= TG_MAX_DIMS)
            tg_error("tg_embedding", "index shape %s has %d dimensions, at most %d", tg_shape_str(b2, ndim, shape),
                     ndim, TG_MAX_DIMS - 1);
        tg_error("tg_embedding", "index shape has %d dimensions, at most %d", ndim, TG_MAX_DIMS - 1);
    }
    const int64_t count = tg_shape_numel(ndim, shape);
    if (count > 0)
        tg_check_ptr("tg_embedding", ids, "ids");
    const int num = weight->shape[0], dim = weight->shape[1];
    for (int64_t i = 0; i < count; i++)
        if (ids[i] < 0 || ids[i] >= num)
            tg_error("tg_embedding", "index %d at position %lld is out of range for weight %s", ids[i],
                     (long long)i, SHAPE(b1, weight));
    int oshape[TG_MAX_DIMS];
    memcpy(oshape, shape, (size_t)ndim * sizeof(int));
    oshape[ndim] = dim;
    tg_tensor *out = tg_new_tensor(ndim + 1, oshape);
    for (int64_t i = 0; i < count; i++)
        memcpy(out->data + i * dim, weight->data + (int64_t)ids[i] * dim, (size_t)dim * sizeof(float));
    tg_node *n = tg_record("tg_embedding", out, &weight, 1, embedding_backward);
    if (n) {
        int32_t *saved = tg_tape_alloc((size_t)(count ? count : 1) * sizeof *saved);
        memcpy(saved, ids, (size_t)count * sizeof *saved);
        n->ctx = saved;
    }
    return out;
}

/* ---------------------------------------------------------------- softmax
 * a: any shape, dim -> out: same shape; rows along dim sum to 1 (or, for
 * log_softmax, logsumexp to 0). The max is subtracted first. */

static void softmax_backward(tg_node *n)
{
    float *ga = tg_grad_of(n->in[0]);
    if (!ga)
        return;
    int64_t outer, inner;
    int len;
    tg_split_dim(n->out, n->iarg[0], &outer, &len, &inner);
    tg_k_softmax_backward(n->out->data, n->out->grad, ga, outer, len, inner, n->iarg[1]);
}

static tg_tensor *softmax_impl(const char *opname, tg_tensor *a, int dim, bool log)
{
    tg_check_ptr(opname, a, "input");
    dim = tg_wrap_dim(opname, dim, a);
    int64_t outer, inner;
    int len;
    tg_split_dim(a, dim, &outer, &len, &inner);
    tg_tensor *out = tg_new_tensor(a->ndim, a->shape);
    tg_k_softmax(a->data, out->data, outer, len, inner, log);
    tg_node *n = tg_record(opname, out, &a, 1, softmax_backward);
    if (n) {
        n->iarg[0] = dim;
        n->iarg[1] = log;
    }
    return out;
}

tg_tensor *tg_softmax(tg_tensor *a, int dim) { return softmax_impl("tg_softmax", a, dim, false); }
tg_tensor *tg_log_softmax(tg_tensor *a, int dim) { return softmax_impl("tg_log_softmax", a, dim, true); }

/* ---------------------------------------------------------------- cross_entropy
 * logits: (..., C); targets: numel/C integers in [0, C) or -100 (ignored, like
 * torch's ignore_index) -> 0-d mean of -log_softmax(logits)[target] over the
 * counted targets. */

#define TG_IGNORE_INDEX (-100)

static void cross_entropy_backward(tg_node *n)
{
    bool add; /* its first writer writes dlogits, ignored rows as zeros */
    float *gl = tg_grad_dest(n, 0, &add);
    if (!gl)
        return;
    const tg_tensor *probs = n->saved[0];
    const int32_t *targets = n->ctx;
    const int C = n->iarg[0];
    const int64_t rows = probs->numel / C;
    const float scale = n->out->grad[0] * n->farg[0];
    for (int64_t r = 0; r < rows; r++) {
        const float *p = probs->data + r * C;
        float *g = gl + r * C;
        if (targets[r] == TG_IGNORE_INDEX) {
            if (!add)
                memset(g, 0, (size_t)C * sizeof(float));
            continue;
        }
        if (add)
            for (int c = 0; c < C; c++)
                g[c] += scale * p[c];
        else
            for (int c = 0; c < C; c++)
                g[c] = scale * p[c];
        g[targets[r]] -= scale;
    }
}

tg_tensor *tg_cross_entropy(tg_tensor *logits, const int32_t *targets)
{
    char b1[64];
    tg_check_ptr("tg_cross_entropy", logits, "logits");
    tg_check_ptr("tg_cross_entropy", targets, "targets");
    if (logits->ndim < 1 || logits->shape[logits->ndim - 1] < 1)
        tg_error("tg_cross_entropy", "logits need a class dimension, got %s", SHAPE(b1, logits));
    const int C = logits->shape[logits->ndim - 1];
    const int64_t rows = logits->numel / C;
    for (int64_t r = 0; r < rows; r++)
        if (targets[r] != TG_IGNORE_INDEX && (targets[r] < 0 || targets[r] >= C))
            tg_error("tg_cross_entropy", "target %d at position %lld is out of range for logits %s (%d classes)",
                     targets[r], (long long)r, SHAPE(b1, logits), C);
    tg_tensor *probs = tg_new_tensor(logits->ndim, logits->shape);
    tg_k_softmax(logits->data, probs->data, rows, C, 1, true); /* log-probs for now */
    double loss = 0.0;
    int64_t counted = 0;
    for (int64_t r = 0; r < rows; r++)
        if (targets[r] != TG_IGNORE_INDEX) {
            loss -= probs->data[r * C + targets[r]];
            counted++;
        }
    for (int64_t i = 0; i < probs->numel; i++)
        probs->data[i] = expf(probs->data[i]);
    tg_tensor *out = tg_new_tensor(0, NULL);
    out->data[0] = counted ? (float)(loss / (double)counted) : NAN;
    tg_node *n = tg_record("tg_cross_entropy", out, &logits, 1, cross_entropy_backward);
    if (n) {
        n->saved[0] = probs;
        n->iarg[0] = C;
        n->farg[0] = counted ? 1.0f / (float)counted : 0.0f;
        int32_t *t = tg_tape_alloc((size_t)rows * sizeof *t);
        memcpy(t, targets, (size_t)rows * sizeof *t);
        n->ctx = t;
    }
    return out;
}

/* ---------------------------------------------------------------- layernorm
 * x: (..., n); scale, shift: (n) -> out: x's shape. The book's LayerNorm:
 * (x - mean) / sqrt(var + eps) * scale + shift, var biased (unbiased=False). */

static void layernorm_backward(tg_node *n)
{
    tg_tensor *x = n->in[0], *scale = n->in[1], *shift = n->in[2];
    const int len = x->shape[x->ndim - 1];
    const int64_t rows = x->numel / len;
    bool add_x; /* dx written, not added, by its first writer */
    float *gx = tg_grad_dest(n, 0, &add_x), *gs = tg_grad_of(scale), *gb = tg_grad_of(shift);
    const float *mean = n->ctx, *rstd = mean + rows;
    tg_k_layernorm_backward(x->data, scale->data, mean, rstd, n->out->grad, gx, add_x, gs, gb, rows, len);
}

tg_tensor *tg_layernorm(tg_tensor *x, tg_tensor *scale, tg_tensor *shift, float eps)
{
    char b1[64], b2[64], b3[64];
    tg_check_ptr("tg_layernorm", x, "input");
    tg_check_ptr("tg_layernorm", scale, "scale");
    tg_check_ptr("tg_layernorm", shift, "shift");
    const int len = x->ndim ? x->shape[x->ndim - 1] : 0;
    if (x->ndim < 1 || len < 1 || scale->numel != len || shift->numel != len || scale->ndim != 1 ||
        shift->ndim != 1)
        tg_error("tg_layernorm", "input %s needs scale and shift of shape [%d], got %s and %s", SHAPE(b1, x), len,
                 SHAPE(b2, scale), SHAPE(b3, shift));
    const int64_t rows = x->numel / len;
    tg_tensor *out = tg_new_tensor(x->ndim, x->shape);
    float *stats = tg_tape_alloc((size_t)(2 * rows) * sizeof(float));
    tg_k_layernorm(x->data, scale->data, shift->data, out->data, stats, stats + rows, rows, len, eps);
    tg_tensor *in[3] = {x, scale, shift};
    tg_node *n = tg_record("tg_layernorm", out, in, 3, layernorm_backward);
    if (n)
        n->ctx = stats;
    return out;
}

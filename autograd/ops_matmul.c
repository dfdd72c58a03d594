/* autograd/ops_matmul.c — torch.matmul for ndim >= 2.
 *   a: (..., M, K)  b: (..., K, N)  ->  out: (..., M, N)
 * The batch dims (...) broadcast. When b is a plain matrix the batch of a is
 * folded into M, so x(B,T,C) @ W(C,D) is a single gemm. */
#include "ops_internal.h"

#include <string.h>

typedef struct {
    int M, N, K;
    int nbatch;                    /* number of output batch matrices */
    int bshape[2];                 /* output batch shape, left-padded (<= 2 dims) */
    int64_t sa[2], sb[2];          /* batch strides in matrices (0 = broadcast) */
} mm_plan;

static void mm_offsets(const mm_plan *p, int bi, int64_t *oa, int64_t *ob)
{
    const int i0 = bi / p->bshape[1], i1 = bi % p->bshape[1];
    *oa = (i0 * p->sa[0] + i1 * p->sa[1]) * (int64_t)p->M * p->K;
    *ob = (i0 * p->sb[0] + i1 * p->sb[1]) * (int64_t)p->K * p->N;
}

/* The batch loop runs on the thread pool when there are several matrices
 * (kernels.h's pattern: an args struct, a range over batch matrices, the
 * entry that hands it to the pool); each gemm is then single-threaded. A
 * gradient is only written in parallel when its operand is not broadcast
 * over the batch (else two batches would add into the same matrix). */
typedef struct {
    const mm_plan *p;
    const float *a, *b;
    float *out;
} matmul_args;

static void matmul_range(void *ctx, int64_t b0, int64_t b1)
{
    const matmul_args *j = ctx;
    const mm_plan *p = j->p;
    for (int64_t bi = b0; bi < b1; bi++) {
        int64_t oa, ob;
        mm_offsets(p, (int)bi, &oa, &ob);
        tg_k_gemm(false, false, p->M, p->N, p->K, j->a + oa, j->b + ob, j->out + bi * p->M * p->N, false);
    }
}

typedef struct {
    const mm_plan *p;
    const float *a, *b, *gout;
    float *ga, *gb; /* either may be NULL */
    bool add_a, add_b; /* add into them, or write them (tg_grad_dest) */
} matmul_backward_args;

static void matmul_backward_range(void *ctx, int64_t b0, int64_t b1)
{
    const matmul_backward_args *j = ctx;
    const mm_plan *p = j->p;
    for (int64_t bi = b0; bi < b1; bi++) {
        int64_t oa, ob;
        mm_offsets(p, (int)bi, &oa, &ob);
        const float *gc = j->gout + bi * p->M * p->N;
        if (j->ga) /* dA += dC @ B^T */
            tg_k_gemm(false, true, p->M, p->K, p->N, gc, j->b + ob, j->ga + oa, j->add_a);
        if (j->gb) /* dB += A^T @ dC */
            tg_k_gemm(true, false, p->K, p->N, p->M, j->a + oa, gc, j->gb + ob, j->add_b);
    }
}

static bool batch_broadcast(const int64_t *s, const int *bshape)
{
    return (bshape[0] > 1 && s[0] == 0) || (bshape[1] > 1 && s[1] == 0);
}

/* A first writer's buffer (tg_grad_dest) that batches write more than once
 * (a broadcast operand) is zeroed and added to. */
static void add_if_broadcast(float *g, bool *add, const tg_tensor *t, const int64_t *s, const int *bshape)
{
    if (g && !*add && batch_broadcast(s, bshape)) {
        memset(g, 0, (size_t)t->numel * sizeof(float));
        *add = true;
    }
}

static void matmul_backward(tg_node *n)
{
    const mm_plan *p = n->ctx;
    tg_tensor *a = n->in[0], *b = n->in[1];
    matmul_backward_args j = {p, a->data, b->data, n->out->grad, NULL, NULL, true, true};
    j.ga = tg_grad_dest(n, 0, &j.add_a);
    j.gb = tg_grad_dest(n, 1, &j.add_b);
    add_if_broadcast(j.ga, &j.add_a, a, p->sa, p->bshape);
    add_if_broadcast(j.gb, &j.add_b, b, p->sb, p->bshape);
    const bool race = (j.ga && batch_broadcast(p->sa, p->bshape)) || (j.gb && batch_broadcast(p->sb, p->bshape));
    if (race)
        matmul_backward_range(&j, 0, p->nbatch);
    else
        tg_parallel_for(p->nbatch, 1, matmul_backward_range, &j);
}

tg_tensor *tg_matmul(tg_tensor *a, tg_tensor *b)
{
    char b1[64], b2[64];
    tg_check_ptr("tg_matmul", a, "first operand");
    tg_check_ptr("tg_matmul", b, "second operand");
    if (a->ndim < 2 || b->ndim < 2)
        tg_error("tg_matmul", "both operands need at least 2 dimensions, got %s and %s", SHAPE(b1, a),
                 SHAPE(b2, b));
    mm_plan p;
    p.M = a->shape[a->ndim - 2];
    p.K = a->shape[a->ndim - 1];
    p.N = b->shape[b->ndim - 1];
    if (b->shape[b->ndim - 2] != p.K)
        tg_error("tg_matmul", "shapes %s and %s do not match", SHAPE(b1, a), SHAPE(b2, b));

    int out_shape[TG_MAX_DIMS], nd;
    if (b->ndim == 2) {
        /* fold a's batch into M */
        int64_t rows = a->numel / (p.K ? p.K : 1);
        if (p.K == 0)
            rows = tg_shape_numel(a->ndim - 1, a->shape);
        for (int i = 0; i < a->ndim - 1; i++)
            out_shape[i] = a->shape[i];
        out_shape[a->ndim - 1] = p.N;
        nd = a->ndim;
        p.M = (int)rows;
        p.nbatch = 1;
        p.bshape[0] = p.bshape[1] = 1;
        p.sa[0] = p.sa[1] = p.sb[0] = p.sb[1] = 0;
    } else {
        /* broadcast the batch dims (at most 2 of them with TG_MAX_DIMS = 4) */
        const int na = a->ndim - 2, nb = b->ndim - 2;
        int as[2], bs[2];
        for (int i = 0; i < 2; i++) {
            int ia = i - (2 - na), ib = i - (2 - nb);
            as[i] = ia >= 0 ? a->shape[ia] : 1;
            bs[i] = ib >= 0 ? b->shape[ib] : 1;
            if (as[i] != bs[i] && as[i] != 1 && bs[i] != 1)
                tg_error("tg_matmul", "batch dimensions of %s and %s cannot be broadcast", SHAPE(b1, a),
                         SHAPE(b2, b));
            p.bshape[i] = as[i] == 1 ? bs[i] : as[i];
        }
        p.sa[1] = as[1] == 1 ? 0 : 1;
        p.sa[0] = as[0] == 1 ? 0 : as[1];
        p.sb[1] = bs[1] == 1 ? 0 : 1;
        p.sb[0] = bs[0] == 1 ? 0 : bs[1];
        p.nbatch = p.bshape[0] * p.bshape[1];
        const int nbd = na > nb ? na : nb;
        nd = nbd + 2;
        for (int i = 0; i < nbd; i++)
            out_shape[i] = p.bshape[2 - nbd + i];
        out_shape[nbd] = p.M;
        out_shape[nbd + 1] = p.N;
    }

    tg_tensor *out = tg_new_tensor(nd, out_shape);
    matmul_args j = {&p, a->data, b->data, out->data};
    tg_parallel_for(p.nbatch, 1, matmul_range, &j);
    tg_tensor *in[2] = {a, b};
    tg_node *n = tg_record("tg_matmul", out, in, 2, matmul_backward);
    if (n) {
        mm_plan *saved = tg_tape_alloc(sizeof *saved);
        *saved = p;
        n->ctx = saved;
    }
    return out;
}

/* ---------------------------------------------------------------- bias gradient
 * gb[j] += sum over rows of dy[r][j], each column in row order; columns go to
 * the pool (kernels.h's pattern), so the bits do not depend on the threads. */
#define BIAS_GRAD_CHUNK 32768 /* elements per thread at least */

typedef struct {
    const float *dy;
    float *gb;
    int rows, out;
} bias_grad_args;

TG_TARGET_CLONES
static void bias_grad_range(void *ctx, int64_t j0, int64_t j1)
{
    const bias_grad_args *a = ctx;
    for (int r = 0; r < a->rows; r++) {
        const float *row = a->dy + (int64_t)r * a->out;
        for (int64_t j = j0; j < j1; j++)
            a->gb[j] += row[j];
    }
}

static void bias_grad(float *gb, const float *dy, int rows, int out)
{
    bias_grad_args a = {dy, gb, rows, out};
    tg_parallel_for(out, rows > 0 ? BIAS_GRAD_CHUNK / rows + 1 : out, bias_grad_range, &a);
}

/* ---------------------------------------------------------------- affine
 * x: (..., in), weight: (out, in), bias: (out) or NULL -> (..., out)
 * forward  y  = x @ W^T + b        (rows = numel(x) / in)
 * backward dx += dy @ W,  dW += dy^T @ x,  db += sum over rows of dy
 * (dx and dW written, not added, by their first writer: tg_grad_dest) */

static void affine_backward(tg_node *n)
{
    tg_tensor *x = n->in[0], *w = n->in[1], *b = n->n_in > 2 ? n->in[2] : NULL;
    const int in = w->shape[1], out = w->shape[0];
    const int rows = (int)tg_shape_numel(x->ndim - 1, x->shape);
    const float *dy = n->out->grad;
    bool add_x, add_w;
    float *gx = tg_grad_dest(n, 0, &add_x), *gw = tg_grad_dest(n, 1, &add_w), *gb = b ? tg_grad_of(b) : NULL;
    if (gx)
        tg_k_gemm(false, false, rows, in, out, dy, w->data, gx, add_x);
    if (gw)
        tg_k_gemm(true, false, out, in, rows, dy, x->data, gw, add_w);
    if (gb)
        bias_grad(gb, dy, rows, out);
}

tg_tensor *tg_affine(tg_tensor *x, tg_tensor *weight, tg_tensor *bias)
{
    char b1[64], b2[64], b3[64];
    tg_check_ptr("tg_affine", x, "input");
    tg_check_ptr("tg_affine", weight, "weight");
    if (weight->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != weight->shape[1])
        tg_error("tg_affine", "input %s does not match weight %s (expects (..., in) and (out, in))", SHAPE(b1, x),
                 SHAPE(b2, weight));
    const int out = weight->shape[0];
    if (bias && (bias->ndim != 1 || bias->shape[0] != out))
        tg_error("tg_affine", "bias %s does not match weight %s", SHAPE(b3, bias), SHAPE(b2, weight));
    int shape[TG_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++)
        shape[i] = x->shape[i];
    shape[x->ndim - 1] = out;
    tg_tensor *y = tg_new_tensor(x->ndim, shape);
    const int rows = (int)tg_shape_numel(x->ndim - 1, x->shape);
    if (bias)
        for (int r = 0; r < rows; r++)
            memcpy(y->data + (int64_t)r * out, bias->data, (size_t)out * sizeof(float));
    tg_k_gemm(false, true, rows, out, weight->shape[1], x->data, weight->data, y->data, bias != NULL);
    tg_tensor *ins[3] = {x, weight, bias};
    tg_record("tg_affine", y, ins, bias ? 3 : 2, affine_backward);
    return y;
}

/* ---------------------------------------------------------------- feed-forward
 * x: (..., d), w1: (h, d), b1: (h) or NULL, w2: (d2, h), b2: (d2) or NULL
 *   -> (..., d2) = affine(gelu(affine(x, w1, b1)), w2, b2)
 * The composed ops' values (the same kernels in the same order), keeping
 * only u = affine(x, w1, b1) for backward: gelu(u) is rebuilt when needed,
 * so the (..., h) activation is not stored.
 * backward, per block of rows: da = dy w2; a = gelu(u) and du = da * gelu'(u)
 *           in one pass; dw2 += dy^T a; db2; dx += du w1; dw1 += du^T x; db1
 * Both run over blocks of FF_ROWS rows, so a and da are per-thread scratch
 * of FF_ROWS x h, not (..., h): the blocks are whole TG_GEMM_KC blocks of
 * the weight gradients' k (rows), which therefore get the bits of one gemm
 * over all rows (kernels.h), and the bias gradients sum rows in order. */
#define FF_ROWS TG_GEMM_KC

static void affine_into(float *y, const float *x, const tg_tensor *w, const tg_tensor *b, int rows)
{
    const int out = w->shape[0];
    if (b)
        for (int r = 0; r < rows; r++)
            memcpy(y + (int64_t)r * out, b->data, (size_t)out * sizeof(float));
    tg_k_gemm(false, true, rows, out, w->shape[1], x, w->data, y, b != NULL);
}

static void feedforward_backward(tg_node *n)
{
    tg_tensor *x = n->in[0], *w1 = n->in[1], *w2 = n->in[2];
    tg_tensor *b1 = n->iarg[0] ? n->in[3] : NULL, *b2 = n->iarg[1] ? n->in[3 + n->iarg[0]] : NULL;
    const float *u = n->ctx, *dy = n->out->grad;
    const int d = w1->shape[1], h = w1->shape[0], d2 = w2->shape[0];
    const int rows = (int)tg_shape_numel(x->ndim - 1, x->shape);
    const int blk = rows < FF_ROWS ? rows : FF_ROWS;
    bool add_x; /* dx's row blocks are written, not added, by its first writer */
    float *gx = tg_grad_dest(n, 0, &add_x), *gw1 = tg_grad_of(w1), *gw2 = tg_grad_of(w2);
    float *gb1 = b1 ? tg_grad_of(b1) : NULL, *gb2 = b2 ? tg_grad_of(b2) : NULL;
    const bool need_du = gx || gw1 || gb1;
    float *a = gw2 ? tg_k_scratch(TG_SCRATCH_FF, (size_t)blk * h) : NULL;
    float *du = need_du ? tg_k_scratch(TG_SCRATCH_FF_GRAD, (size_t)blk * h) : NULL;
    for (int r0 = 0; r0 < rows; r0 += FF_ROWS) {
        const int nr = rows - r0 < FF_ROWS ? rows - r0 : FF_ROWS;
        const float *ub = u + (int64_t)r0 * h, *dyb = dy + (int64_t)r0 * d2;
        if (need_du)
            tg_k_gemm(false, false, nr, h, d2, dyb, w2->data, du, false); /* da */
        if (gw2 && need_du)
            tg_k_gelu_with_grad((int64_t)nr * h, ub, a, du); /* a, du */
        else if (gw2)
            tg_k_unary(TG_UN_GELU, (int64_t)nr * h, ub, 0.0f, a);
        else if (need_du)
            tg_k_gelu_backward_inplace((int64_t)nr * h, ub, du);
        if (gw2)
            tg_k_gemm(true, false, d2, h, nr, dyb, a, gw2, true);
        if (gb2)
            bias_grad(gb2, dyb, nr, d2);
        if (gx)
            tg_k_gemm(false, false, nr, d, h, du, w1->data, gx + (int64_t)r0 * d, add_x);
        if (gw1)
            tg_k_gemm(true, false, h, d, nr, du, x->data + (int64_t)r0 * d, gw1, true);
        if (gb1)
            bias_grad(gb1, du, nr, h);
    }
}

tg_tensor *tg_feedforward_gelu(tg_tensor *x, tg_tensor *w1, tg_tensor *b1, tg_tensor *w2, tg_tensor *b2)
{
    char s1[64], s2[64], s3[64];
    tg_check_ptr("tg_feedforward_gelu", x, "input");
    tg_check_ptr("tg_feedforward_gelu", w1, "first weight");
    tg_check_ptr("tg_feedforward_gelu", w2, "second weight");
    if (w1->ndim != 2 || w2->ndim != 2 || x->ndim < 1 || x->shape[x->ndim - 1] != w1->shape[1] ||
        w2->shape[1] != w1->shape[0])
        tg_error("tg_feedforward_gelu", "input %s, weights %s and %s do not chain (expects (..., d), (h, d), (d2, h))",
                 SHAPE(s1, x), SHAPE(s2, w1), SHAPE(s3, w2));
    if ((b1 && (b1->ndim != 1 || b1->shape[0] != w1->shape[0])) ||
        (b2 && (b2->ndim != 1 || b2->shape[0] != w2->shape[0])))
        tg_error("tg_feedforward_gelu", "biases %s and %s do not match weights (h=%d) and (d2=%d)",
                 b1 ? SHAPE(s1, b1) : "none", b2 ? SHAPE(s3, b2) : "none", w1->shape[0], w2->shape[0]);
    const int rows = (int)tg_shape_numel(x->ndim - 1, x->shape), h = w1->shape[0], d2 = w2->shape[0];
    int shape[TG_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++)
        shape[i] = x->shape[i];
    shape[x->ndim - 1] = d2;
    float *u = tg_tape_alloc((size_t)rows * h * sizeof(float));
    affine_into(u, x->data, w1, b1, rows);
    float *a = tg_k_scratch(TG_SCRATCH_FF, (size_t)(rows < FF_ROWS ? rows : FF_ROWS) * h);
    tg_tensor *y = tg_new_tensor(x->ndim, shape);
    for (int r0 = 0; r0 < rows; r0 += FF_ROWS) { /* (a row of y takes all of h: any blocks give its bits) */
        const int nr = rows - r0 < FF_ROWS ? rows - r0 : FF_ROWS;
        tg_k_unary(TG_UN_GELU, (int64_t)nr * h, u + (int64_t)r0 * h, 0.0f, a);
        affine_into(y->data + (int64_t)r0 * d2, a, w2, b2, nr);
    }
    tg_tensor *ins[5] = {x, w1, w2, NULL, NULL};
    int n_in = 3;
    if (b1)
        ins[n_in++] = b1;
    if (b2)
        ins[n_in++] = b2;
    tg_node *n = tg_record("tg_feedforward_gelu", y, ins, n_in, feedforward_backward);
    if (n) {
        n->ctx = u;
        n->iarg[0] = b1 != NULL;
        n->iarg[1] = b2 != NULL;
    }
    return y;
}

/* autograd/ops_arith.c — broadcast arithmetic and elementwise functions.
 * Each op: shape contract, forward kernel call, tape record; its backward
 * right below it. */
#include "ops_internal.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- binary
 * a: any shape, b: any shape broadcastable with a (NumPy rules)
 * -> out: the broadcast shape. Grads are summed back to each input's shape. */

/* The gradient of operand which (0 = a, 1 = b) into g: the kernel adds it,
 * except that the first writer (add false) of a sum's or difference's
 * operand that is not broadcast copies +-gout (the values the kernel would
 * add to zeros); any other first writer zeroes g first. */
static void binary_grad(tg_node *n, int which, float *g, bool add)
{
    const tg_binop op = (tg_binop)n->iarg[0];
    const tg_bcast *bc = n->ctx;
    const tg_tensor *x = n->in[which];
    const float *gout = n->out->grad;
    if (!add && (op == TG_BIN_ADD || op == TG_BIN_SUB) && x->numel == n->out->numel) {
        if (op == TG_BIN_SUB && which == 1)
            for (int64_t i = 0; i < x->numel; i++)
                g[i] = -gout[i];
        else
            memcpy(g, gout, (size_t)x->numel * sizeof(float));
        return;
    }
    if (!add)
        memset(g, 0, (size_t)x->numel * sizeof(float));
    tg_k_binary_backward(op, which, bc, n->in[0]->data, n->in[1]->data, gout, g);
}

static void binary_backward(tg_node *n)
{
    bool add_a, add_b;
    if ((tg_binop)n->iarg[0] == TG_BIN_ADD || (tg_binop)n->iarg[0] == TG_BIN_SUB) {
        /* a's gradient is gout itself: b's first, then a may take gout's buffer */
        float *gb = tg_grad_dest(n, 1, &add_b);
        if (gb)
            binary_grad(n, 1, gb, add_b);
        if (tg_grad_pass(n, 0))
            return;
        float *ga = tg_grad_dest(n, 0, &add_a);
        if (ga)
            binary_grad(n, 0, ga, add_a);
        return;
    }
    float *ga = tg_grad_dest(n, 0, &add_a), *gb = tg_grad_dest(n, 1, &add_b);
    if (ga)
        binary_grad(n, 0, ga, add_a);
    if (gb)
        binary_grad(n, 1, gb, add_b);
}

static tg_tensor *binary(const char *opname, tg_binop op, tg_tensor *a, tg_tensor *b)
{
    tg_check_ptr(opname, a, "first operand");
    tg_check_ptr(opname, b, "second operand");
    tg_bcast bc;
    int nd;
    if (!tg_bcast_init(&bc, a->ndim, a->shape, b->ndim, b->shape, &nd)) {
        char b1[64], b2[64];
        tg_error(opname, "shapes %s and %s cannot be broadcast", SHAPE(b1, a), SHAPE(b2, b));
    }
    tg_tensor *out = tg_new_tensor(nd, bc.shape + (TG_MAX_DIMS - nd));
    tg_k_binary(op, &bc, a->data, b->data, out->data);
    tg_tensor *in[2] = {a, b};
    tg_node *n = tg_record(opname, out, in, 2, binary_backward);
    if (n) {
        n->iarg[0] = (int)op;
        tg_bcast *saved = tg_tape_alloc(sizeof *saved);
        *saved = bc;
        n->ctx = saved;
    }
    return out;
}

tg_tensor *tg_add(tg_tensor *a, tg_tensor *b) { return binary("tg_add", TG_BIN_ADD, a, b); }
tg_tensor *tg_sub(tg_tensor *a, tg_tensor *b) { return binary("tg_sub", TG_BIN_SUB, a, b); }
tg_tensor *tg_mul(tg_tensor *a, tg_tensor *b) { return binary("tg_mul", TG_BIN_MUL, a, b); }
tg_tensor *tg_div(tg_tensor *a, tg_tensor *b) { return binary("tg_div", TG_BIN_DIV, a, b); }

/* ---------------------------------------------------------------- unary
 * a: any shape -> out: same shape. */

static void unary_backward(tg_node *n)
{
    float *ga = tg_grad_of(n->in[0]);
    if (ga)
        tg_k_unary_backward((tg_unop)n->iarg[0], n->out->numel, n->in[0]->data, n->out->data, n->farg[0],
                            n->out->grad, ga);
}

static tg_tensor *unary(const char *opname, tg_unop op, tg_tensor *a, float s)
{
    tg_check_ptr(opname, a, "input");
    tg_tensor *out = tg_new_tensor(a->ndim, a->shape);
    tg_k_unary(op, a->numel, a->data, s, out->data);
    tg_node *n = tg_record(opname, out, &a, 1, unary_backward);
    if (n) {
        n->iarg[0] = (int)op;
        n->farg[0] = s;
    }
    return out;
}

tg_tensor *tg_add_scalar(tg_tensor *a, float s) { return unary("tg_add_scalar", TG_UN_ADDS, a, s); }
tg_tensor *tg_mul_scalar(tg_tensor *a, float s) { return unary("tg_mul_scalar", TG_UN_MULS, a, s); }
tg_tensor *tg_neg(tg_tensor *a) { return unary("tg_neg", TG_UN_NEG, a, 0.0f); }
tg_tensor *tg_exp(tg_tensor *a) { return unary("tg_exp", TG_UN_EXP, a, 0.0f); }
tg_tensor *tg_log(tg_tensor *a) { return unary("tg_log", TG_UN_LOG, a, 0.0f); }
tg_tensor *tg_sqrt(tg_tensor *a) { return unary("tg_sqrt", TG_UN_SQRT, a, 0.0f); }
tg_tensor *tg_pow_scalar(tg_tensor *a, float p) { return unary("tg_pow_scalar", TG_UN_POW, a, p); }
tg_tensor *tg_tanh(tg_tensor *a) { return unary("tg_tanh", TG_UN_TANH, a, 0.0f); }
tg_tensor *tg_relu(tg_tensor *a) { return unary("tg_relu", TG_UN_RELU, a, 0.0f); }
tg_tensor *tg_gelu(tg_tensor *a) { return unary("tg_gelu", TG_UN_GELU, a, 0.0f); }

/* ---------------------------------------------------------------- sigmoid
 * a: any shape -> out: same shape, 1 / (1 + e^-x), evaluated so that neither
 * branch overflows (e^x / (1 + e^x) for x < 0); NaN stays NaN.
 * Backward from the output alone: dx += dy * y * (1 - y). */

static void sigmoid_backward(tg_node *n)
{
    bool add;
    float *ga = tg_grad_dest(n, 0, &add);
    if (!ga)
        return;
    const float *y = n->out->data, *g = n->out->grad;
    if (add)
        for (int64_t i = 0; i < n->out->numel; i++)
            ga[i] += g[i] * (y[i] * (1.0f - y[i]));
    else /* its first writer */
        for (int64_t i = 0; i < n->out->numel; i++)
            ga[i] = g[i] * (y[i] * (1.0f - y[i]));
}

tg_tensor *tg_sigmoid(tg_tensor *a)
{
    tg_check_ptr("tg_sigmoid", a, "input");
    tg_tensor *out = tg_new_tensor(a->ndim, a->shape);
    for (int64_t i = 0; i < a->numel; i++) {
        const float x = a->data[i];
        if (x >= 0.0f) {
            out->data[i] = 1.0f / (1.0f + expf(-x));
        } else {
            const float e = expf(x); /* also the NaN path: NaN >= 0 is false and expf(NaN) is NaN */
            out->data[i] = e / (1.0f + e);
        }
    }
    tg_record("tg_sigmoid", out, &a, 1, sigmoid_backward);
    return out;
}

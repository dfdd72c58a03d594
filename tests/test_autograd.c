/*
 * tests/test_autograd.c — suite "autograd": every op of autograd/autograd.h
 * against PyTorch (forward output and the gradient of every input after
 * backward with a fixed random upstream gradient, tests/golden/ops.txt from
 * tests/golden/gen_ops.py), tg_gradcheck on the golden inputs and on random
 * (broadcast) shapes with independent forward references, the tape's
 * behaviour, and the error messages.
 */
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Tolerances (float32 kernels). */
#define FWD_ATOL 1e-6
#define FWD_RTOL 1e-5
#define BWD_ATOL 1e-5
#define BWD_RTOL 1e-4
/* tg_gradcheck: central differences at eps; float32 rounding of the
 * perturbed outputs gives ~1e-7 * |out| / eps noise per element. */
#define GC_EPS 1e-2
#define GC_ATOL 1e-3
#define GC_RTOL 1e-2

static golden_file *G;
static void load_goldens(void) { G = golden_open("ops"); }
static void close_goldens(void)
{
    golden_close(G);
    G = NULL;
}

/* ================================================================ op cases
 * One row per golden case: the golden key prefix, the function computing
 * the output from the float inputs (also the tg_gradcheck function), the
 * number of float inputs and the op's arguments. */

enum { NO_GC = 1 }; /* no gradcheck on the golden inputs (ties, -inf outputs) */

typedef struct op_case {
    const char *name;
    tg_gradcheck_fn fn;
    int n_in;
    int i[6];      /* dims, flags, reshape (ndim, shape...) */
    float f;       /* scalar argument */
    unsigned flags;
    double gc_eps; /* 0: GC_EPS */
} op_case;

typedef struct {
    const op_case *c;
    int32_t *ids; /* embedding ids / cross-entropy targets */
    int ids_ndim;
    int ids_shape[TG_MAX_DIMS];
    tg_tensor *mask;
    uint64_t seed;
    tg_generator gen;
    float f;       /* for random cases */
    int i[6];
} op_ctx;

#define C_(p) (((op_ctx *)(p))->c)
#define X_(p) ((op_ctx *)(p))

static tg_tensor *f_add(tg_tensor **x, void *p) { (void)p; return tg_add(x[0], x[1]); }
static tg_tensor *f_sub(tg_tensor **x, void *p) { (void)p; return tg_sub(x[0], x[1]); }
static tg_tensor *f_mul(tg_tensor **x, void *p) { (void)p; return tg_mul(x[0], x[1]); }
static tg_tensor *f_div(tg_tensor **x, void *p) { (void)p; return tg_div(x[0], x[1]); }
static tg_tensor *f_mul_self(tg_tensor **x, void *p) { (void)p; return tg_mul(x[0], x[0]); }
static tg_tensor *f_add_scalar(tg_tensor **x, void *p) { return tg_add_scalar(x[0], C_(p)->f); }
static tg_tensor *f_mul_scalar(tg_tensor **x, void *p) { return tg_mul_scalar(x[0], C_(p)->f); }
static tg_tensor *f_neg(tg_tensor **x, void *p) { (void)p; return tg_neg(x[0]); }
static tg_tensor *f_exp(tg_tensor **x, void *p) { (void)p; return tg_exp(x[0]); }
static tg_tensor *f_log(tg_tensor **x, void *p) { (void)p; return tg_log(x[0]); }
static tg_tensor *f_sqrt(tg_tensor **x, void *p) { (void)p; return tg_sqrt(x[0]); }
static tg_tensor *f_pow(tg_tensor **x, void *p) { return tg_pow_scalar(x[0], C_(p)->f); }
static tg_tensor *f_tanh(tg_tensor **x, void *p) { (void)p; return tg_tanh(x[0]); }
static tg_tensor *f_relu(tg_tensor **x, void *p) { (void)p; return tg_relu(x[0]); }
static tg_tensor *f_gelu(tg_tensor **x, void *p) { (void)p; return tg_gelu(x[0]); }
static tg_tensor *f_matmul(tg_tensor **x, void *p) { (void)p; return tg_matmul(x[0], x[1]); }
/* matmul on intermediates (scaled by one): their gradients' first writer */
static tg_tensor *f_matmul_mid(tg_tensor **x, void *p)
{
    (void)p;
    return tg_matmul(tg_mul_scalar(x[0], 1.0f), tg_mul_scalar(x[1], 1.0f));
}
static tg_tensor *f_transpose(tg_tensor **x, void *p) { return tg_transpose(x[0], C_(p)->i[0], C_(p)->i[1]); }
static tg_tensor *f_permute(tg_tensor **x, void *p) { return tg_permute(x[0], C_(p)->i); }
static tg_tensor *f_reshape(tg_tensor **x, void *p) { return tg_reshape(x[0], C_(p)->i[0], C_(p)->i + 1); }
static tg_tensor *f_view(tg_tensor **x, void *p) { return tg_view(x[0], C_(p)->i[0], C_(p)->i + 1); }
static tg_tensor *f_concat(tg_tensor **x, void *p) { return tg_concat(x, C_(p)->n_in, C_(p)->i[0]); }
static tg_tensor *f_sum(tg_tensor **x, void *p) { (void)p; return tg_sum(x[0]); }
static tg_tensor *f_sum_dim(tg_tensor **x, void *p) { return tg_sum_dim(x[0], C_(p)->i[0], C_(p)->i[1]); }
static tg_tensor *f_mean(tg_tensor **x, void *p) { (void)p; return tg_mean(x[0]); }
static tg_tensor *f_mean_dim(tg_tensor **x, void *p) { return tg_mean_dim(x[0], C_(p)->i[0], C_(p)->i[1]); }
static tg_tensor *f_max(tg_tensor **x, void *p) { (void)p; return tg_max(x[0]); }
static tg_tensor *f_max_dim(tg_tensor **x, void *p) { return tg_max_dim(x[0], C_(p)->i[0], C_(p)->i[1]); }
static tg_tensor *f_softmax(tg_tensor **x, void *p) { return tg_softmax(x[0], C_(p)->i[0]); }
static tg_tensor *f_log_softmax(tg_tensor **x, void *p) { return tg_log_softmax(x[0], C_(p)->i[0]); }
static tg_tensor *f_masked_fill(tg_tensor **x, void *p) { return tg_masked_fill(x[0], X_(p)->mask, C_(p)->f); }
static tg_tensor *f_masked_softmax(tg_tensor **x, void *p)
{
    return tg_softmax(tg_masked_fill(x[0], X_(p)->mask, -INFINITY), -1);
}
static tg_tensor *f_triu(tg_tensor **x, void *p) { return tg_triu(x[0], C_(p)->i[0]); }
static tg_tensor *f_tril(tg_tensor **x, void *p) { return tg_tril(x[0], C_(p)->i[0]); }
/* Re-seeded on every call, so every gradcheck evaluation sees the same mask. */
static tg_tensor *f_dropout(tg_tensor **x, void *p)
{
    op_ctx *c = p;
    tg_manual_seed(&c->gen, c->seed);
    return tg_dropout(x[0], c->c->f, c->c->i[0], &c->gen);
}
static tg_tensor *f_embedding(tg_tensor **x, void *p)
{
    op_ctx *c = p;
    return tg_embedding(x[0], c->ids, c->ids_ndim, c->ids_shape);
}
static tg_tensor *f_cross_entropy(tg_tensor **x, void *p) { return tg_cross_entropy(x[0], X_(p)->ids); }
static tg_tensor *f_layernorm(tg_tensor **x, void *p) { (void)p; return tg_layernorm(x[0], x[1], x[2], 1e-5f); }
/* F.linear: a third input is the bias, else none. */
static tg_tensor *f_affine(tg_tensor **x, void *p) { return tg_affine(x[0], x[1], C_(p)->n_in > 2 ? x[2] : NULL); }

/* x (B,4,6), wq/wk/wv (6,6): causal single-head attention as in the book. */
static tg_tensor *f_chain_attn(tg_tensor **x, void *p)
{
    tg_tensor *q = tg_matmul(x[0], x[1]), *k = tg_matmul(x[0], x[2]), *v = tg_matmul(x[0], x[3]);
    tg_tensor *s = tg_masked_fill(tg_matmul(q, tg_transpose(k, 1, 2)), X_(p)->mask, -INFINITY);
    tg_tensor *w = tg_softmax(tg_mul_scalar(s, (float)(1.0 / sqrt(6.0))), -1);
    return tg_matmul(w, v);
}

/* x (2,3,4), w1 (4,8), b1 (8), w2 (8,4), scale/shift (4): a pre-norm MLP block -> mean. */
static tg_tensor *f_chain_mlp(tg_tensor **x, void *p)
{
    (void)p;
    tg_tensor *h = tg_layernorm(x[0], x[4], x[5], 1e-5f);
    h = tg_gelu(tg_add(tg_matmul(h, x[1]), x[2]));
    return tg_mean(tg_add(tg_matmul(h, x[3]), x[0]));
}

/* OP(name, fn, n_in, designated extras...) */
#define OP(nm, f_, ...) {.name = nm, .fn = f_, .n_in = __VA_ARGS__}
static const op_case CASES[] = {
    OP("add.same", f_add, 2),
    OP("add.bc_last", f_add, 2),
    OP("add.bc_mid", f_add, 2),
    OP("add.bc_4d", f_add, 2),
    OP("add.scalar_rhs", f_add, 2),
    OP("add.scalar_both", f_add, 2),
    OP("sub.bc_last", f_sub, 2),
    OP("sub.bc_lhs", f_sub, 2),
    OP("sub.scalar_lhs", f_sub, 2),
    OP("mul.same", f_mul, 2),
    OP("mul.bc_col", f_mul, 2),
    OP("mul.bc_mid", f_mul, 2),
    OP("mul.scalar_rhs", f_mul, 2),
    OP("mul.self", f_mul_self, 1),
    OP("div.same", f_div, 2),
    OP("div.bc_last", f_div, 2),
    OP("div.bc_mid", f_div, 2),
    OP("div.scalar_lhs", f_div, 2),
    OP("add_scalar", f_add_scalar, 1, .f = 2.5f),
    OP("mul_scalar", f_mul_scalar, 1, .f = -1.5f),
    OP("neg", f_neg, 1),

    OP("exp", f_exp, 1),
    OP("log", f_log, 1),
    OP("sqrt", f_sqrt, 1),
    OP("pow.2", f_pow, 1, .f = 2.0f),
    OP("pow.3", f_pow, 1, .f = 3.0f),
    OP("pow.half", f_pow, 1, .f = 0.5f),
    OP("pow.m1_5", f_pow, 1, .f = -1.5f),
    OP("tanh", f_tanh, 1),
    OP("relu", f_relu, 1),
    OP("gelu", f_gelu, 1),

    OP("matmul.2d", f_matmul, 2),
    OP("matmul.3d", f_matmul, 2),
    OP("matmul.4d", f_matmul, 2),
    OP("matmul.bc_rhs2d", f_matmul, 2),
    OP("matmul.bc_lhs2d", f_matmul, 2),
    OP("matmul.bc_4d3d", f_matmul, 2),
    OP("matmul.bc_ones", f_matmul, 2),

    OP("transpose.01", f_transpose, 1, .i = {0, 1}),
    OP("transpose.neg", f_transpose, 1, .i = {-1, -2}),
    OP("transpose.2d", f_transpose, 1, .i = {1, 0}),
    OP("transpose.02", f_transpose, 1, .i = {0, 2}),
    OP("permute.3d", f_permute, 1, .i = {2, 0, 1}),
    OP("permute.heads", f_permute, 1, .i = {0, 2, 1, 3}),
    OP("permute.neg", f_permute, 1, .i = {-1, 0, 1}),
    OP("reshape.m1_last", f_reshape, 1, .i = {2, -1, 4}),
    OP("reshape.m1_first", f_reshape, 1, .i = {2, 6, -1}),
    OP("reshape.flat", f_reshape, 1, .i = {1, 24}),
    OP("reshape.4d", f_reshape, 1, .i = {4, 2, 3, 2, 2}),
    OP("reshape.m1_mid", f_reshape, 1, .i = {3, 2, -1, 3}),
    OP("view.2d", f_view, 1, .i = {2, 4, 6}),
    OP("view.m1", f_view, 1, .i = {2, 2, -1}),
    OP("concat.d0", f_concat, 3, .i = {0}),
    OP("concat.d1", f_concat, 2, .i = {1}),
    OP("concat.neg", f_concat, 2, .i = {-1}),
    OP("concat.4d", f_concat, 2, .i = {2}),
    OP("concat.single", f_concat, 1, .i = {1}),

    OP("sum.all", f_sum, 1),
    OP("sum.all0d", f_sum, 1),
    OP("sum.d1", f_sum_dim, 1, .i = {1, 0}),
    OP("sum.d1k", f_sum_dim, 1, .i = {1, 1}),
    OP("sum.neg", f_sum_dim, 1, .i = {-1, 0}),
    OP("sum.d0k", f_sum_dim, 1, .i = {0, 1}),
    OP("mean.all", f_mean, 1),
    OP("mean.d2", f_mean_dim, 1, .i = {2, 0}),
    OP("mean.negk", f_mean_dim, 1, .i = {-2, 1}),
    OP("mean.d0", f_mean_dim, 1, .i = {0, 0}),
    OP("max.all", f_max, 1),
    OP("max.all_ties", f_max, 1, .flags = NO_GC),
    OP("max.d1", f_max_dim, 1, .i = {1, 0}),
    OP("max.negk", f_max_dim, 1, .i = {-1, 1}),
    OP("max.d_ties", f_max_dim, 1, .i = {1, 0}, .flags = NO_GC),
    OP("max.d0", f_max_dim, 1, .i = {0, 0}),

    OP("softmax.last", f_softmax, 1, .i = {-1}),
    OP("softmax.d0", f_softmax, 1, .i = {0}),
    OP("softmax.d1", f_softmax, 1, .i = {1}),
    OP("softmax.neg2", f_softmax, 1, .i = {-2}),
    OP("softmax.big", f_softmax, 1, .i = {-1}),
    OP("softmax.4d", f_softmax, 1, .i = {-1}),
    OP("log_softmax.last", f_log_softmax, 1, .i = {-1}),
    OP("log_softmax.d0", f_log_softmax, 1, .i = {0}),
    OP("log_softmax.d1", f_log_softmax, 1, .i = {1}),
    OP("log_softmax.neg2", f_log_softmax, 1, .i = {-2}),
    OP("log_softmax.big", f_log_softmax, 1, .i = {-1}),
    OP("log_softmax.4d", f_log_softmax, 1, .i = {-1}),

    {"masked_fill.causal", f_masked_fill, 1, .f = -INFINITY, .flags = NO_GC}, /* -inf output */
    OP("masked_fill.bcast", f_masked_fill, 1, .f = 0.5f),
    OP("masked_fill.3d", f_masked_fill, 1, .f = -2.0f),
    OP("masked_fill.attn", f_masked_softmax, 1),
    OP("triu.d0", f_triu, 1, .i = {0}),
    OP("triu.d1", f_triu, 1, .i = {1}),
    OP("triu.dm1", f_triu, 1, .i = {-1}),
    OP("tril.dm1", f_tril, 1, .i = {-1}),
    OP("tril.d0", f_tril, 1, .i = {0}),
    OP("tril.d2", f_tril, 1, .i = {2}),

    OP("dropout.p01", f_dropout, 1, .i = {1}, .f = 0.1f),
    OP("dropout.p05", f_dropout, 1, .i = {1}, .f = 0.5f),
    OP("dropout.eval", f_dropout, 1, .i = {0}, .f = 0.5f),
    OP("dropout.p0", f_dropout, 1, .i = {1}, .f = 0.0f),
    OP("dropout.p1", f_dropout, 1, .i = {1}, .f = 1.0f),
    OP("embedding.2d", f_embedding, 1),
    OP("embedding.1d", f_embedding, 1),
    OP("cross_entropy.2d", f_cross_entropy, 1),
    OP("cross_entropy.3d", f_cross_entropy, 1),
    OP("cross_entropy.big", f_cross_entropy, 1),
    OP("layernorm.3d", f_layernorm, 3),
    OP("layernorm.2d", f_layernorm, 3),
    OP("chain.attn", f_chain_attn, 4),
    OP("chain.mlp", f_chain_mlp, 6),
    OP("cross_entropy.ignore", f_cross_entropy, 1),
    OP("cross_entropy.1d", f_cross_entropy, 1),
    OP("affine.bias", f_affine, 3),
    OP("affine.nobias", f_affine, 2),
    OP("affine.1d", f_affine, 3),
    OP("affine.4d", f_affine, 3),
};
#define N_CASES ((int)(sizeof CASES / sizeof CASES[0]))

static void ctx_load(op_ctx *x, const op_case *c)
{
    memset(x, 0, sizeof *x);
    x->c = c;
    char key[128];
    snprintf(key, sizeof key, "%s.ids", c->name);
    if (golden_has(G, key)) {
        tg_tensor *t = golden_tensor(G, key);
        x->ids_ndim = t->ndim;
        memcpy(x->ids_shape, t->shape, sizeof x->ids_shape);
        x->ids = golden_ints(G, key, NULL);
        tg_free(t);
    }
    snprintf(key, sizeof key, "%s.mask", c->name);
    if (golden_has(G, key))
        x->mask = golden_tensor(G, key);
    snprintf(key, sizeof key, "%s.seed", c->name);
    if (golden_has(G, key)) {
        tg_tensor *t = golden_tensor(G, key);
        x->seed = (uint64_t)t->data[0];
        tg_free(t);
    }
}

static void ctx_free(op_ctx *x)
{
    free(x->ids);
    tg_free(x->mask);
}

static void load_inputs(const op_case *c, tg_tensor **in)
{
    for (int k = 0; k < c->n_in; k++)
        in[k] = tg_requires_grad(golden_tensorf(G, "%s.in%d", c->name, k), true);
}

/* Forward and the backward of every input against torch. */
START_TEST(test_op_golden)
{
    const op_case *c = &CASES[_i];
    op_ctx x;
    ctx_load(&x, c);
    tg_tensor *in[8];
    load_inputs(c, in);
    char what[160];

    tg_tape_reset(NULL);
    tg_tensor *out = c->fn(in, &x);
    tg_tensor *want = golden_tensorf(G, "%s.out", c->name);
    snprintf(what, sizeof what, "%s forward", c->name);
    assert_tensor_close(out, want, FWD_ATOL, FWD_RTOL, what);
    if (strncmp(c->name, "dropout.", 8) == 0) /* the mask itself must be torch's, element for element */
        for (int64_t i = 0; i < want->numel; i++)
            ck_assert_msg((out->data[i] == 0.0f) == (want->data[i] == 0.0f),
                          "%s: element %lld is %g, torch has %g (different dropout mask)", c->name, (long long)i,
                          (double)out->data[i], (double)want->data[i]);

    tg_tensor *gout = golden_tensorf(G, "%s.gout", c->name);
    tg_backward(out, gout);
    for (int k = 0; k < c->n_in; k++) {
        tg_tensor *gw = golden_tensorf(G, "%s.grad%d", c->name, k);
        ck_assert_msg(in[k]->grad != NULL, "%s: input %d got no gradient", c->name, k);
        snprintf(what, sizeof what, "%s grad of input %d", c->name, k);
        assert_close(in[k]->grad, gw, BWD_ATOL, BWD_RTOL, what);
        tg_free(gw);
    }
    tg_tape_reset(NULL);
    tg_free(want);
    tg_free(gout);
    for (int k = 0; k < c->n_in; k++)
        tg_free(in[k]);
    ctx_free(&x);
}
END_TEST

static void assert_gradcheck(tg_gradcheck_result r, int n_in, const char *what, double eps)
{
    char info[512];
    int n = 0;
    for (int k = 0; k < r.n_inputs && k < TG_GRADCHECK_MAX_INPUTS; k++)
        n += snprintf(info + n, sizeof info - (size_t)n, " in%d: max abs %.3g, max rel %.3g (element %d);", k,
                      r.max_abs_err[k], r.max_rel_err[k], r.worst_index[k]);
    ck_assert_msg(r.n_inputs == n_in, "%s: gradcheck reports %d inputs, expected %d", what, r.n_inputs, n_in);
    ck_assert_msg(r.ok, "%s: gradcheck failed (eps %g, atol %g, rtol %g):%s", what, eps, GC_ATOL, GC_RTOL, info);
}

/* Gradcheck indices: the cases without NO_GC. */
static int GC_IDX[N_CASES];
static int N_GC;

START_TEST(test_op_gradcheck)
{
    const op_case *c = &CASES[GC_IDX[_i]];
    op_ctx x;
    ctx_load(&x, c);
    tg_tensor *in[8];
    load_inputs(c, in);
    const double eps = c->gc_eps > 0 ? c->gc_eps : GC_EPS;
    tg_gradcheck_result r = tg_gradcheck(c->fn, &x, in, c->n_in, eps, GC_ATOL, GC_RTOL);
    char what[160];
    snprintf(what, sizeof what, "gradcheck %s", c->name);
    assert_gradcheck(r, c->n_in, what, eps);
    for (int k = 0; k < c->n_in; k++)
        tg_free(in[k]);
    ctx_free(&x);
}
END_TEST

/* ================================================================ random shapes
 * Shapes drawn from a seeded generator, broadcast cases included; every
 * forward is checked against a plain reference written here, then
 * tg_gradcheck. */

static int rnd(tg_generator *g, int n) { return (int)(tg_random_u32(g) % (uint32_t)n); }

static tg_tensor *rand_leaf(tg_generator *g, int ndim, const int *shape, float lo, float hi)
{
    return tg_requires_grad(tg_uniform(g, lo, hi, ndim, shape), true);
}

static void unravel(int64_t i, int ndim, const int *shape, int *idx)
{
    for (int d = ndim - 1; d >= 0; d--) {
        idx[d] = (int)(i % shape[d]);
        i /= shape[d];
    }
}

/* Offset into a tensor of (ndim, shape) broadcast against an output index of out_ndim dims. */
static int64_t bcast_off(int ndim, const int *shape, int out_ndim, const int *idx)
{
    int64_t off = 0;
    for (int d = 0; d < ndim; d++)
        off = off * shape[d] + (shape[d] == 1 ? 0 : idx[d + out_ndim - ndim]);
    return off;
}

static void check_ref(const tg_tensor *got, int ndim, const int *shape, const double *ref, const char *what)
{
    char b1[64], b2[64];
    ck_assert_msg(got->ndim == ndim && memcmp(got->shape, shape, (size_t)ndim * sizeof(int)) == 0,
                  "%s: shape %s, expected %s", what, tg_shape_str(b1, got->ndim, got->shape),
                  tg_shape_str(b2, ndim, shape));
    for (int64_t i = 0; i < got->numel; i++)
        ck_assert_msg(fabs(got->data[i] - ref[i]) <= FWD_ATOL + 1e-5 * fabs(ref[i]),
                      "%s: element %lld is %.7g, reference %.7g", what, (long long)i, (double)got->data[i], ref[i]);
}

/* A random shape of ndim dims, each 1..4 */
static void rand_shape(tg_generator *g, int ndim, int *shape)
{
    for (int d = 0; d < ndim; d++)
        shape[d] = 1 + rnd(g, 4);
}

/* A shape that broadcasts to out: trailing k <= ndim dims, some set to 1. */
static int bcast_shape(tg_generator *g, int ndim, const int *out, int *shape)
{
    int k = rnd(g, ndim + 1);
    for (int d = 0; d < k; d++)
        shape[d] = rnd(g, 3) == 0 ? 1 : out[ndim - k + d];
    return k;
}

static const char *BIN_NAMES[4] = {"add", "sub", "mul", "div"};
static const tg_gradcheck_fn BIN_FNS[4] = {f_add, f_sub, f_mul, f_div};

START_TEST(test_random_broadcast_binary)
{
    tg_generator g;
    tg_manual_seed(&g, 1000 + (uint64_t)_i);
    for (int trial = 0; trial < 10; trial++) {
        int n = 1 + rnd(&g, 4), out[4], sa[4], sb[4];
        rand_shape(&g, n, out);
        int na = bcast_shape(&g, n, out, sa), nb = bcast_shape(&g, n, out, sb);
        if (trial % 2) /* make one side full so the output shape is out */
            na = n, memcpy(sa, out, sizeof out);
        else
            nb = n, memcpy(sb, out, sizeof out);
        tg_tensor *in[2];
        in[0] = rand_leaf(&g, na, sa, -2, 2);
        in[1] = _i == 3 ? rand_leaf(&g, nb, sb, 0.5f, 2) : rand_leaf(&g, nb, sb, -2, 2);
        if (_i == 3)
            for (int64_t i = 0; i < in[1]->numel; i++)
                if (rnd(&g, 2))
                    in[1]->data[i] = -in[1]->data[i];
        char what[160], b1[64], b2[64];
        snprintf(what, sizeof what, "tg_%s %s %s", BIN_NAMES[_i], tg_shape_str(b1, na, sa), tg_shape_str(b2, nb, sb));

        int64_t numel = tg_shape_numel(n, out);
        double *ref = malloc((size_t)numel * sizeof *ref);
        for (int64_t i = 0; i < numel; i++) {
            int idx[4];
            unravel(i, n, out, idx);
            double a = in[0]->data[bcast_off(na, sa, n, idx)], b = in[1]->data[bcast_off(nb, sb, n, idx)];
            ref[i] = _i == 0 ? a + b : _i == 1 ? a - b : _i == 2 ? a * b : a / b;
        }
        tg_tensor *y = BIN_FNS[_i](in, NULL);
        check_ref(y, n, out, ref, what);
        tg_tape_reset(NULL);
        free(ref);
        assert_gradcheck(tg_gradcheck(BIN_FNS[_i], NULL, in, 2, GC_EPS, GC_ATOL, GC_RTOL), 2, what, GC_EPS);
        tg_free(in[0]);
        tg_free(in[1]);
    }
}
END_TEST

START_TEST(test_random_matmul)
{
    tg_generator g;
    tg_manual_seed(&g, 2000);
    for (int trial = 0; trial < 14; trial++) {
        int M = 1 + rnd(&g, 4), K = 1 + rnd(&g, 4), N = 1 + rnd(&g, 4);
        int nbat = rnd(&g, 3), bat[2];
        rand_shape(&g, nbat, bat);
        int sa[4], sb[4];
        int ka = bcast_shape(&g, nbat, bat, sa), kb = bcast_shape(&g, nbat, bat, sb);
        if (trial % 2)
            ka = nbat, memcpy(sa, bat, sizeof bat);
        else
            kb = nbat, memcpy(sb, bat, sizeof bat);
        sa[ka] = M, sa[ka + 1] = K;
        sb[kb] = K, sb[kb + 1] = N;
        tg_tensor *in[2] = {rand_leaf(&g, ka + 2, sa, -1, 1), rand_leaf(&g, kb + 2, sb, -1, 1)};
        char what[160], b1[64], b2[64];
        snprintf(what, sizeof what, "tg_matmul %s @ %s", tg_shape_str(b1, ka + 2, sa), tg_shape_str(b2, kb + 2, sb));
        int out[4];
        memcpy(out, bat, sizeof bat);
        out[nbat] = M, out[nbat + 1] = N;
        int64_t nb = tg_shape_numel(nbat, bat);
        double *ref = malloc((size_t)(nb * M * N) * sizeof *ref);
        for (int64_t bi = 0; bi < nb; bi++) {
            int idx[2];
            unravel(bi, nbat, bat, idx);
            int64_t oa = bcast_off(ka, sa, nbat, idx), ob = bcast_off(kb, sb, nbat, idx);
            for (int m = 0; m < M; m++)
                for (int j = 0; j < N; j++) {
                    double s = 0;
                    for (int k = 0; k < K; k++)
                        s += (double)in[0]->data[(oa * M + m) * K + k] * in[1]->data[(ob * K + k) * N + j];
                    ref[(bi * M + m) * N + j] = s;
                }
        }
        tg_tensor *y = tg_matmul(in[0], in[1]);
        check_ref(y, nbat + 2, out, ref, what);
        tg_tape_reset(NULL);
        free(ref);
        assert_gradcheck(tg_gradcheck(f_matmul, NULL, in, 2, GC_EPS, GC_ATOL, GC_RTOL), 2, what, GC_EPS);
        /* a batch-broadcast operand's first writer sums every batch's part */
        assert_gradcheck(tg_gradcheck(f_matmul_mid, NULL, in, 2, GC_EPS, GC_ATOL, GC_RTOL), 2, what, GC_EPS);
        tg_free(in[0]);
        tg_free(in[1]);
    }
}
END_TEST

/* Unary ops: name, function, input range, scalar, reference. */
static double gelu_ref(double x) { return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x))); }

static const struct {
    const char *name;
    tg_gradcheck_fn fn;
    float lo, hi, f;
    bool away_from_zero;
} UNARY[] = {
    {"add_scalar", f_add_scalar, -2, 2, 0.75f, false}, {"mul_scalar", f_mul_scalar, -2, 2, -2.5f, false},
    {"neg", f_neg, -2, 2, 0, false},                   {"exp", f_exp, -2, 2, 0, false},
    {"log", f_log, 0.5f, 3, 0, false},                 {"sqrt", f_sqrt, 0.5f, 3, 0, false},
    {"pow", f_pow, 0.5f, 2, 2.5f, false},              {"pow_int", f_pow, -2, 2, 3.0f, false},
    {"tanh", f_tanh, -2, 2, 0, false},                 {"relu", f_relu, -2, 2, 0, true},
    {"gelu", f_gelu, -3, 3, 0, false},
};
#define N_UNARY ((int)(sizeof UNARY / sizeof UNARY[0]))

START_TEST(test_random_unary)
{
    tg_generator g;
    tg_manual_seed(&g, 3000 + (uint64_t)_i);
    op_case c = {UNARY[_i].name, UNARY[_i].fn, 1, {0}, UNARY[_i].f, 0, 0};
    op_ctx x = {.c = &c};
    for (int trial = 0; trial < 4; trial++) {
        int n = rnd(&g, 5), shape[4];
        rand_shape(&g, n, shape);
        tg_tensor *in[1] = {rand_leaf(&g, n, shape, UNARY[_i].lo, UNARY[_i].hi)};
        if (UNARY[_i].away_from_zero)
            for (int64_t i = 0; i < in[0]->numel; i++)
                in[0]->data[i] += in[0]->data[i] < 0 ? -0.1f : 0.1f;
        double *ref = malloc((size_t)in[0]->numel * sizeof *ref);
        for (int64_t i = 0; i < in[0]->numel; i++) {
            double v = in[0]->data[i], f = UNARY[_i].f;
            switch (_i) {
            case 0: ref[i] = (float)v + (float)f; break;
            case 1: ref[i] = v * f; break;
            case 2: ref[i] = -v; break;
            case 3: ref[i] = exp(v); break;
            case 4: ref[i] = log(v); break;
            case 5: ref[i] = sqrt(v); break;
            case 6:
            case 7: ref[i] = pow(v, f); break;
            case 8: ref[i] = tanh(v); break;
            case 9: ref[i] = v > 0 ? v : 0; break;
            default: ref[i] = gelu_ref(v); break;
            }
        }
        char what[160], b1[64];
        snprintf(what, sizeof what, "tg_%s %s", UNARY[_i].name, tg_shape_str(b1, n, shape));
        tg_tensor *y = UNARY[_i].fn(in, &x);
        check_ref(y, n, shape, ref, what);
        tg_tape_reset(NULL);
        free(ref);
        assert_gradcheck(tg_gradcheck(UNARY[_i].fn, &x, in, 1, GC_EPS, GC_ATOL, GC_RTOL), 1, what, GC_EPS);
        tg_free(in[0]);
    }
}
END_TEST

/* Reductions and softmax along a random dim: [outer, n, inner] references. */
enum { R_SUM, R_MEAN, R_MAX, R_SOFTMAX, R_LOG_SOFTMAX, R_N };
static const char *RED_NAMES[R_N] = {"sum_dim", "mean_dim", "max_dim", "softmax", "log_softmax"};
static const tg_gradcheck_fn RED_FNS[R_N] = {f_sum_dim, f_mean_dim, f_max_dim, f_softmax, f_log_softmax};

START_TEST(test_random_reduce)
{
    tg_generator g;
    tg_manual_seed(&g, 4000 + (uint64_t)_i);
    for (int trial = 0; trial < 6; trial++) {
        int n = 1 + rnd(&g, 4), shape[4];
        rand_shape(&g, n, shape);
        int d = rnd(&g, n), keep = rnd(&g, 2);
        int dim_arg = rnd(&g, 2) ? d - n : d; /* negative half the time */
        op_case c = {RED_NAMES[_i], RED_FNS[_i], 1, {dim_arg, keep}, 0, 0, 0};
        op_ctx x = {.c = &c};
        tg_tensor *in[1] = {rand_leaf(&g, n, shape, -2, 2)};
        if (_i == R_MAX) { /* distinct values, spaced well beyond eps */
            int64_t m = in[0]->numel;
            for (int64_t i = 0; i < m; i++)
                in[0]->data[i] = (float)(((i * 37) % m) - m / 2) * 0.25f + 0.01f * in[0]->data[i];
        }
        int64_t outer = 1, inner = 1;
        for (int k = 0; k < d; k++)
            outer *= shape[k];
        for (int k = d + 1; k < n; k++)
            inner *= shape[k];
        const int len = shape[d];
        const bool reduces = _i <= R_MAX;
        int oshape[4], on = 0;
        for (int k = 0; k < n; k++) {
            if (k != d || !reduces)
                oshape[on++] = shape[k];
            else if (keep)
                oshape[on++] = 1;
        }
        double *ref = malloc((size_t)in[0]->numel * sizeof *ref);
        const float *a = in[0]->data;
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < inner; j++) {
                double s = 0, mx = -INFINITY;
                for (int k = 0; k < len; k++) {
                    double v = a[(o * len + k) * inner + j];
                    s += v;
                    mx = fmax(mx, v);
                }
                if (reduces) {
                    ref[o * inner + j] = _i == R_SUM ? s : _i == R_MEAN ? s / len : mx;
                    continue;
                }
                double z = 0;
                for (int k = 0; k < len; k++)
                    z += exp(a[(o * len + k) * inner + j] - mx);
                for (int k = 0; k < len; k++) {
                    double v = a[(o * len + k) * inner + j] - mx;
                    ref[(o * len + k) * inner + j] = _i == R_SOFTMAX ? exp(v) / z : v - log(z);
                }
            }
        char what[160], b1[64];
        snprintf(what, sizeof what, "tg_%s %s dim %d keepdim %d", RED_NAMES[_i], tg_shape_str(b1, n, shape), dim_arg,
                 reduces ? keep : -1);
        tg_tensor *y = RED_FNS[_i](in, &x);
        check_ref(y, on, oshape, ref, what);
        tg_tape_reset(NULL);
        free(ref);
        assert_gradcheck(tg_gradcheck(RED_FNS[_i], &x, in, 1, GC_EPS, GC_ATOL, GC_RTOL), 1, what, GC_EPS);
        tg_free(in[0]);
    }
}
END_TEST

START_TEST(test_random_shape_ops)
{
    tg_generator g;
    tg_manual_seed(&g, 5000);
    for (int trial = 0; trial < 8; trial++) {
        int n = 2 + rnd(&g, 3), shape[4];
        rand_shape(&g, n, shape);
        tg_tensor *in[3] = {rand_leaf(&g, n, shape, -2, 2), NULL, NULL};
        char what[160], b1[64];

        /* permute by a random permutation (transpose when it is a swap) */
        int perm[6] = {0, 1, 2, 3}, oshape[4];
        for (int k = n - 1; k > 0; k--) {
            int j = rnd(&g, k + 1), t = perm[k];
            perm[k] = perm[j], perm[j] = t;
        }
        for (int k = 0; k < n; k++)
            oshape[k] = shape[perm[k]];
        op_case c = {"permute", f_permute, 1, {perm[0], perm[1], perm[2], perm[3]}, 0, 0, 0};
        op_ctx x = {.c = &c};
        double *ref = malloc((size_t)in[0]->numel * sizeof *ref);
        for (int64_t i = 0; i < in[0]->numel; i++) {
            int oidx[4], aidx[4];
            unravel(i, n, oshape, oidx);
            for (int k = 0; k < n; k++)
                aidx[perm[k]] = oidx[k];
            ref[i] = in[0]->data[bcast_off(n, shape, n, aidx)];
        }
        snprintf(what, sizeof what, "tg_permute %s [%d,%d,%d,%d]", tg_shape_str(b1, n, shape), perm[0], perm[1],
                 perm[2], perm[3]);
        check_ref(tg_permute(in[0], perm), n, oshape, ref, what);
        tg_tape_reset(NULL);
        assert_gradcheck(tg_gradcheck(f_permute, &x, in, 1, GC_EPS, GC_ATOL, GC_RTOL), 1, what, GC_EPS);

        /* transpose two random dims */
        int d0 = rnd(&g, n), d1 = rnd(&g, n);
        memcpy(oshape, shape, sizeof oshape);
        oshape[d0] = shape[d1], oshape[d1] = shape[d0];
        for (int64_t i = 0; i < in[0]->numel; i++) {
            int idx[4];
            unravel(i, n, oshape, idx);
            int t = idx[d0];
            idx[d0] = idx[d1], idx[d1] = t;
            ref[i] = in[0]->data[bcast_off(n, shape, n, idx)];
        }
        op_case ct = {"transpose", f_transpose, 1, {d0, d1 - n}, 0, 0, 0};
        x.c = &ct;
        snprintf(what, sizeof what, "tg_transpose %s %d %d", tg_shape_str(b1, n, shape), d0, d1 - n);
        check_ref(tg_transpose(in[0], d0, d1 - n), n, oshape, ref, what);
        tg_tape_reset(NULL);
        assert_gradcheck(tg_gradcheck(f_transpose, &x, in, 1, GC_EPS, GC_ATOL, GC_RTOL), 1, what, GC_EPS);
        free(ref);

        /* concat 2..3 tensors along a random dim */
        int cd = rnd(&g, n), k_in = 2 + rnd(&g, 2), sizes[3], total = 0;
        for (int k = 0; k < k_in; k++) {
            int s[4];
            memcpy(s, shape, sizeof s);
            s[cd] = sizes[k] = 1 + rnd(&g, 3);
            total += sizes[k];
            if (k)
                in[k] = rand_leaf(&g, n, s, -2, 2);
            else {
                tg_free(in[0]);
                in[0] = rand_leaf(&g, n, s, -2, 2);
            }
        }
        memcpy(oshape, shape, sizeof oshape);
        oshape[cd] = total;
        int64_t on = tg_shape_numel(n, oshape);
        ref = malloc((size_t)on * sizeof *ref);
        for (int64_t i = 0; i < on; i++) {
            int idx[4], k = 0;
            unravel(i, n, oshape, idx);
            while (idx[cd] >= sizes[k])
                idx[cd] -= sizes[k++];
            ref[i] = in[k]->data[bcast_off(n, in[k]->shape, n, idx)];
        }
        op_case cc = {"concat", f_concat, k_in, {cd}, 0, 0, 0};
        x.c = &cc;
        snprintf(what, sizeof what, "tg_concat of %d along %d, first %s", k_in, cd,
                 tg_shape_str(b1, n, in[0]->shape));
        check_ref(tg_concat(in, k_in, cd), n, oshape, ref, what);
        tg_tape_reset(NULL);
        free(ref);
        assert_gradcheck(tg_gradcheck(f_concat, &x, in, k_in, GC_EPS, GC_ATOL, GC_RTOL), k_in, what, GC_EPS);
        for (int k = 0; k < 3; k++)
            tg_free(in[k]);
    }
}
END_TEST

/* layernorm, embedding, cross_entropy, masked_fill, triu/tril, dropout on random shapes. */
START_TEST(test_random_nn_ops)
{
    tg_generator g;
    tg_manual_seed(&g, 6000);
    char what[160], b1[64];
    for (int trial = 0; trial < 4; trial++) {
        /* layernorm over the last dim C of (..., C) */
        int n = 1 + rnd(&g, 3), shape[4];
        rand_shape(&g, n, shape);
        shape[n - 1] = 2 + rnd(&g, 5);
        int C = shape[n - 1];
        tg_tensor *in[3] = {rand_leaf(&g, n, shape, -2, 2), rand_leaf(&g, 1, &C, 0.5f, 1.5f),
                            rand_leaf(&g, 1, &C, -1, 1)};
        snprintf(what, sizeof what, "tg_layernorm %s", tg_shape_str(b1, n, shape));
        assert_gradcheck(tg_gradcheck(f_layernorm, NULL, in, 3, GC_EPS, GC_ATOL, GC_RTOL), 3, what, GC_EPS);
        for (int k = 0; k < 3; k++)
            tg_free(in[k]);

        /* cross_entropy of (..., C) logits and embedding of (...) ids into (V, D) */
        op_ctx x = {0};
        int64_t rows = tg_shape_numel(n - 1, shape);
        x.ids = malloc((size_t)rows * sizeof *x.ids);
        for (int64_t i = 0; i < rows; i++)
            x.ids[i] = rnd(&g, C);
        in[0] = rand_leaf(&g, n, shape, -3, 3);
        snprintf(what, sizeof what, "tg_cross_entropy %s", tg_shape_str(b1, n, shape));
        assert_gradcheck(tg_gradcheck(f_cross_entropy, &x, in, 1, GC_EPS, GC_ATOL, GC_RTOL), 1, what, GC_EPS);
        tg_free(in[0]);
        int wshape[2] = {C, 1 + rnd(&g, 4)};
        x.ids_ndim = n - 1;
        memcpy(x.ids_shape, shape, sizeof x.ids_shape);
        in[0] = rand_leaf(&g, 2, wshape, -1, 1);
        tg_tensor *e = tg_embedding(in[0], x.ids, x.ids_ndim, x.ids_shape);
        ck_assert_int_eq(e->ndim, n);
        ck_assert_int_eq(e->shape[n - 1], wshape[1]);
        for (int64_t i = 0; i < rows; i++)
            ck_assert_mem_eq(e->data + i * wshape[1], in[0]->data + (int64_t)x.ids[i] * wshape[1],
                             (size_t)wshape[1] * sizeof(float));
        tg_tape_reset(NULL);
        snprintf(what, sizeof what, "tg_embedding ids %s", tg_shape_str(b1, n - 1, shape));
        assert_gradcheck(tg_gradcheck(f_embedding, &x, in, 1, GC_EPS, GC_ATOL, GC_RTOL), 1, what, GC_EPS);
        tg_free(in[0]);
        free(x.ids);

        /* masked_fill with a broadcast mask, triu/tril, dropout (re-seeded) on a >= 2-D shape */
        int m = 2 + rnd(&g, 3), s2[4];
        rand_shape(&g, m, s2);
        int ms[4];
        int mn = bcast_shape(&g, m, s2, ms);
        x.mask = tg_empty(mn, ms);
        for (int64_t i = 0; i < x.mask->numel; i++)
            x.mask->data[i] = (float)rnd(&g, 2);
        op_case cm = {"masked_fill", f_masked_fill, 1, {0}, -1.25f, 0, 0};
        x.c = &cm;
        in[0] = rand_leaf(&g, m, s2, -2, 2);
        snprintf(what, sizeof what, "tg_masked_fill %s mask %s", tg_shape_str(b1, m, s2), "(random broadcast)");
        tg_tensor *y = tg_masked_fill(in[0], x.mask, -1.25f);
        for (int64_t i = 0; i < y->numel; i++) {
            int idx[4];
            unravel(i, m, s2, idx);
            bool masked = x.mask->data[bcast_off(mn, ms, m, idx)] != 0;
            ck_assert_msg(y->data[i] == (masked ? -1.25f : in[0]->data[i]), "%s: element %lld", what, (long long)i);
        }
        tg_tape_reset(NULL);
        assert_gradcheck(tg_gradcheck(f_masked_fill, &x, in, 1, GC_EPS, GC_ATOL, GC_RTOL), 1, what, GC_EPS);
        tg_free(x.mask);
        x.mask = NULL;

        op_case ctri = {"triu", rnd(&g, 2) ? f_triu : f_tril, 1, {rnd(&g, 5) - 2}, 0, 0, 0};
        x.c = &ctri;
        snprintf(what, sizeof what, "tg_%s %s diagonal %d", ctri.fn == f_triu ? "triu" : "tril",
                 tg_shape_str(b1, m, s2), ctri.i[0]);
        assert_gradcheck(tg_gradcheck(ctri.fn, &x, in, 1, GC_EPS, GC_ATOL, GC_RTOL), 1, what, GC_EPS);

        op_case cd = {"dropout", f_dropout, 1, {1}, trial % 2 ? 0.5f : 0.2f, 0, 0};
        x.c = &cd;
        x.seed = 77 + (uint64_t)trial;
        snprintf(what, sizeof what, "tg_dropout %s p %g", tg_shape_str(b1, m, s2), (double)cd.f);
        assert_gradcheck(tg_gradcheck(f_dropout, &x, in, 1, GC_EPS, GC_ATOL, GC_RTOL), 1, what, GC_EPS);
        tg_free(in[0]);
    }
}
END_TEST

/* reshape / view to a random regrouping of the dims (one of them -1 half the
 * time), and sum / mean / max over all elements, on random shapes. */
START_TEST(test_random_reshape_and_full_reduce)
{
    tg_generator g;
    tg_manual_seed(&g, 7000);
    char what[160], b1[64], b2[64];
    for (int trial = 0; trial < 8; trial++) {
        int n = rnd(&g, 5), shape[4];
        rand_shape(&g, n, shape);
        tg_tensor *in[1] = {rand_leaf(&g, n, shape, -2, 2)};
        const int64_t numel = in[0]->numel;

        /* the same dims shuffled, plus or minus a merge of two neighbours */
        int m = n, tshape[4], want[4];
        memcpy(tshape, shape, sizeof tshape);
        for (int k = m - 1; k > 0; k--) {
            int j = rnd(&g, k + 1), t = tshape[k];
            tshape[k] = tshape[j], tshape[j] = t;
        }
        if (m >= 2 && rnd(&g, 2)) {
            tshape[0] *= tshape[1];
            for (int k = 1; k < m - 1; k++)
                tshape[k] = tshape[k + 1];
            m--;
        }
        memcpy(want, tshape, sizeof want);
        if (m > 0 && rnd(&g, 2))
            tshape[rnd(&g, m)] = -1;
        op_case c = {"reshape", trial % 2 ? f_view : f_reshape, 1, {m, tshape[0], tshape[1], tshape[2], tshape[3]},
                     0, 0, 0};
        op_ctx x = {.c = &c};
        snprintf(what, sizeof what, "tg_%s %s -> %s", trial % 2 ? "view" : "reshape", tg_shape_str(b1, n, shape),
                 tg_shape_str(b2, m, tshape));
        double *ref = malloc((size_t)(numel ? numel : 1) * sizeof *ref);
        for (int64_t i = 0; i < numel; i++)
            ref[i] = in[0]->data[i];
        tg_tensor *y = c.fn(in, &x);
        check_ref(y, m, want, ref, what);
        tg_tape_reset(NULL);
        free(ref);
        assert_gradcheck(tg_gradcheck(c.fn, &x, in, 1, GC_EPS, GC_ATOL, GC_RTOL), 1, what, GC_EPS);

        /* sum, mean, max of everything -> 0-d */
        static const tg_gradcheck_fn FULL[3] = {f_sum, f_mean, f_max};
        static const char *FULL_NAMES[3] = {"sum", "mean", "max"};
        for (int64_t i = 0; i < numel; i++) /* distinct values, spaced well beyond eps, for max */
            in[0]->data[i] = (float)(((i * 37) % numel) - numel / 2) * 0.25f + 0.01f * in[0]->data[i];
        double s = 0, mx = -INFINITY;
        for (int64_t i = 0; i < numel; i++) {
            s += in[0]->data[i];
            mx = fmax(mx, in[0]->data[i]);
        }
        for (int k = 0; k < 3; k++) {
            const double r = k == 0 ? s : k == 1 ? s / (double)numel : mx;
            snprintf(what, sizeof what, "tg_%s of %s", FULL_NAMES[k], tg_shape_str(b1, n, shape));
            check_ref(FULL[k](in, NULL), 0, shape, &r, what);
            tg_tape_reset(NULL);
            assert_gradcheck(tg_gradcheck(FULL[k], NULL, in, 1, GC_EPS, GC_ATOL, GC_RTOL), 1, what, GC_EPS);
        }
        tg_free(in[0]);
    }
}
END_TEST

/* tg_affine (F.linear) on random batch shapes, with and without bias. */
START_TEST(test_random_affine)
{
    tg_generator g;
    tg_manual_seed(&g, 8000);
    char what[160], b1[64];
    for (int trial = 0; trial < 8; trial++) {
        int n = 1 + rnd(&g, 4), shape[4];
        rand_shape(&g, n, shape);
        const int in_f = shape[n - 1], out_f = 1 + rnd(&g, 5);
        const bool bias = trial % 2 == 0;
        op_case c = {"affine", f_affine, bias ? 3 : 2, {0}, 0, 0, 0};
        op_ctx x = {.c = &c};
        tg_tensor *in[3] = {rand_leaf(&g, n, shape, -1, 1), rand_leaf(&g, 2, (int[]){out_f, in_f}, -1, 1),
                            bias ? rand_leaf(&g, 1, &out_f, -1, 1) : NULL};
        const int64_t rows = in[0]->numel / in_f;
        int oshape[4];
        memcpy(oshape, shape, sizeof oshape);
        oshape[n - 1] = out_f;
        double *ref = malloc((size_t)(rows * out_f) * sizeof *ref);
        for (int64_t r = 0; r < rows; r++)
            for (int o = 0; o < out_f; o++) {
                double acc = bias ? in[2]->data[o] : 0.0;
                for (int k = 0; k < in_f; k++)
                    acc += (double)in[0]->data[r * in_f + k] * in[1]->data[o * in_f + k];
                ref[r * out_f + o] = acc;
            }
        snprintf(what, sizeof what, "tg_affine %s, weight [%d,%d], %s", tg_shape_str(b1, n, shape), out_f, in_f,
                 bias ? "bias" : "no bias");
        check_ref(f_affine(in, &x), n, oshape, ref, what);
        tg_tape_reset(NULL);
        free(ref);
        assert_gradcheck(tg_gradcheck(f_affine, &x, in, c.n_in, GC_EPS, GC_ATOL, GC_RTOL), c.n_in, what, GC_EPS);
        for (int k = 0; k < 3; k++)
            tg_free(in[k]);
    }
}
END_TEST

/* max over all elements: gradient split evenly among ties (torch). */
START_TEST(test_max_all_tie_split)
{
    tg_tensor *a = tg_requires_grad(tg_from_array(TG_SHAPE(2, 3), (const float[]){1, 5, 2, 5, 5, 0}), true);
    tg_tensor *m = tg_max(a);
    ck_assert_int_eq(m->ndim, 0);
    ck_assert(m->data[0] == 5.0f);
    tg_backward(m, NULL);
    const float want[6] = {0, 1.0f / 3, 0, 1.0f / 3, 1.0f / 3, 0};
    for (int i = 0; i < 6; i++)
        ck_assert_msg(fabsf(a->grad[i] - want[i]) < 1e-7f, "grad[%d] = %g, want %g", i, (double)a->grad[i],
                      (double)want[i]);
    tg_tape_reset(NULL);
    tg_free(a);
}
END_TEST

/* ================================================================ the tape */

START_TEST(test_no_grad_records_nothing)
{
    tg_tape_reset(NULL);
    tg_generator g;
    tg_manual_seed(&g, 1);
    tg_tensor *a = tg_requires_grad(tg_randn(&g, TG_SHAPE(2, 3)), true);
    tg_tensor *b = tg_requires_grad(tg_randn(&g, TG_SHAPE(3, 4)), true);
    ck_assert(tg_is_grad_enabled());
    bool prev = tg_set_grad_enabled(false);
    ck_assert(prev);
    ck_assert(!tg_is_grad_enabled());
    tg_tensor *y = tg_sum(tg_softmax(tg_relu(tg_matmul(tg_mul(a, a), b)), -1));
    ck_assert_int_eq(tg_tape_current()->n_nodes, 0);
    ck_assert(!y->requires_grad);
    ck_assert_int_eq(y->node, -1);
    const float v = y->data[0];
    ck_assert(!tg_set_grad_enabled(true));
    tg_tensor *z = tg_sum(tg_softmax(tg_relu(tg_matmul(tg_mul(a, a), b)), -1));
    ck_assert_int_eq(tg_tape_current()->n_nodes, 5);
    ck_assert(z->requires_grad && z->node == 4);
    ck_assert(z->data[0] == v);
    tg_tape_reset(NULL);
    tg_free(a);
    tg_free(b);
}
END_TEST

START_TEST(test_inputs_without_grad_record_nothing)
{
    tg_tape_reset(NULL);
    tg_tensor *a = tg_ones(TG_SHAPE(2, 3)), *b = tg_ones(TG_SHAPE(3));
    tg_tensor *y = tg_mean(tg_exp(tg_add(a, b)));
    ck_assert_int_eq(tg_tape_current()->n_nodes, 0);
    ck_assert(!y->requires_grad);
    ck_assert(fabsf(y->data[0] - expf(2.0f)) < 1e-5f);
    /* one input requiring grad: recorded, and only that input gets a grad */
    tg_requires_grad(a, true);
    y = tg_sum(tg_mul(a, b));
    ck_assert_int_eq(tg_tape_current()->n_nodes, 2);
    tg_backward(y, NULL);
    ck_assert(b->grad == NULL);
    for (int i = 0; i < 6; i++)
        ck_assert(a->grad[i] == 1.0f);
    tg_tape_reset(NULL);
    tg_free(a);
    tg_free(b);
}
END_TEST

START_TEST(test_leaves_accumulate)
{
    tg_tensor *x = tg_requires_grad(tg_from_array(TG_SHAPE(3), (const float[]){1, -2, 0.5f}), true);
    tg_tensor *w = tg_requires_grad(tg_scalar(3.0f), true);
    for (int round = 1; round <= 2; round++) {
        /* loss = sum(w * x * x): dx = 2 w x, dw = sum(x^2) */
        tg_tensor *loss = tg_sum(tg_mul(w, tg_mul(x, x)));
        tg_backward(loss, NULL);
        for (int i = 0; i < 3; i++)
            ck_assert_msg(fabsf(x->grad[i] - round * 6.0f * x->data[i]) < 1e-5f, "round %d: x.grad[%d] = %g", round,
                          i, (double)x->grad[i]);
        ck_assert(fabsf(w->grad[0] - round * 5.25f) < 1e-5f);
        tg_tape_reset(NULL); /* leaves keep their grads */
    }
    tg_tensor *params[2] = {x, w};
    tg_zero_grad(params, 2);
    for (int i = 0; i < 3; i++)
        ck_assert(x->grad[i] == 0.0f);
    ck_assert(w->grad[0] == 0.0f);
    tg_free(x);
    tg_free(w);
}
END_TEST

START_TEST(test_intermediate_grads_do_not_leak)
{
    const bool was = tg_retain_grads(true); /* keep y.grad to look at it */
    tg_tensor *x = tg_requires_grad(tg_from_array(TG_SHAPE(2), (const float[]){1, 2}), true);
    tg_tensor *y = tg_mul_scalar(x, 3.0f); /* intermediate */
    tg_tensor *loss = tg_sum(tg_mul(y, y));
    tg_backward(loss, NULL);
    ck_assert(y->grad != NULL);
    ck_assert(fabsf(y->grad[0] - 6.0f) < 1e-6f && fabsf(y->grad[1] - 12.0f) < 1e-6f);
    ck_assert(fabsf(x->grad[0] - 18.0f) < 1e-5f && fabsf(x->grad[1] - 36.0f) < 1e-5f);
    /* a second backward over the same tape: the leaf accumulates, the intermediate starts over */
    tg_backward(loss, NULL);
    ck_assert_msg(fabsf(y->grad[0] - 6.0f) < 1e-6f && fabsf(y->grad[1] - 12.0f) < 1e-6f,
                  "intermediate grad leaked across backwards: %g %g", (double)y->grad[0], (double)y->grad[1]);
    ck_assert(fabsf(x->grad[0] - 36.0f) < 1e-5f && fabsf(x->grad[1] - 72.0f) < 1e-5f);
    tg_tape_reset(NULL);
    /* a fresh forward after reset starts with no intermediate grads */
    y = tg_mul_scalar(x, 3.0f);
    ck_assert(y->grad == NULL);
    tg_tape_reset(NULL);
    tg_free(x);
    tg_retain_grads(was);
}
END_TEST

/* Without retain_grads (the default, as in PyTorch) an intermediate's grad
 * is gone after backward and its buffer serves later grads of the same size:
 * a chain of 20 ops then needs a few grad buffers, not 20, and the leaf's
 * grad is the same either way. */
static size_t chain_backward_arena(bool retain, float *xgrad)
{
    const bool was = tg_retain_grads(retain);
    tg_tensor *x = tg_requires_grad(tg_full(TG_SHAPE(64, 64), 0.5f), true);
    tg_tensor *h = x, *mid = NULL;
    for (int i = 0; i < 20; i++) {
        h = tg_tanh(tg_mul_scalar(h, 1.1f));
        if (i == 10)
            mid = h;
    }
    tg_tensor *loss = tg_sum(h);
    const size_t before = tg_arena_used(tg_tape_current()->arena);
    tg_backward(loss, NULL);
    const size_t used = tg_arena_used(tg_tape_current()->arena) - before;
    ck_assert_msg((mid->grad != NULL) == retain, "intermediate grad %s with retain_grads %d",
                  mid->grad ? "kept" : "released", retain);
    *xgrad = x->grad[0];
    tg_tape_reset(NULL);
    tg_free(x);
    tg_retain_grads(was);
    return used;
}

START_TEST(test_grads_recycled_without_retain)
{
    float g_keep, g_recycle;
    const size_t keep = chain_backward_arena(true, &g_keep);
    const size_t recycle = chain_backward_arena(false, &g_recycle);
    ck_assert_msg(g_keep == g_recycle, "leaf grad %g with retain, %g without", (double)g_keep, (double)g_recycle);
    ck_assert_msg(recycle * 8 < keep, "backward took %zu bytes without retain_grads, %zu with", recycle, keep);
}
END_TEST

START_TEST(test_backward_with_seed_and_one_element)
{
    tg_tensor *x = tg_requires_grad(tg_from_array(TG_SHAPE(2, 2), (const float[]){1, 2, 3, 4}), true);
    tg_tensor *y = tg_mul(x, x);
    tg_tensor *seed = tg_from_array(TG_SHAPE(2, 2), (const float[]){1, 0, -1, 0.5f});
    tg_backward(y, seed);
    const float want[4] = {2, 0, -6, 4};
    for (int i = 0; i < 4; i++)
        ck_assert(fabsf(x->grad[i] - want[i]) < 1e-6f);
    tg_tape_reset(NULL);
    tg_zero_grad_tensor(x);
    /* a one-element but not 0-d loss needs no seed */
    y = tg_sum_dim(tg_sum_dim(x, 1, true), 0, true);
    ck_assert_int_eq(y->ndim, 2);
    tg_backward(y, NULL);
    for (int i = 0; i < 4; i++)
        ck_assert(x->grad[i] == 1.0f);
    tg_tape_reset(NULL);
    tg_free(seed);
    tg_free(x);
}
END_TEST

START_TEST(test_tape_reset_releases)
{
    tg_tape *t = tg_tape_current();
    tg_tensor *x = tg_requires_grad(tg_ones(TG_SHAPE(4, 4)), true);
    tg_tensor *y = tg_sum(tg_matmul(x, x));
    tg_backward(y, NULL);
    ck_assert_int_eq(t->n_nodes, 2);
    ck_assert(tg_arena_used(t->arena) > 0);
    tg_tape_reset(NULL);
    ck_assert_int_eq(t->n_nodes, 0);
    ck_assert_int_eq(tg_arena_used(t->arena), 0);
    ck_assert(x->grad != NULL); /* the leaf's grad survives */
    ck_assert(x->grad[0] == 8.0f);
    tg_free(x);
}
END_TEST

START_TEST(test_private_tape)
{
    tg_tape *def = tg_tape_current();
    tg_tape_reset(def);
    tg_tape *mine = tg_tape_new();
    tg_tape *prev = tg_tape_use(mine);
    ck_assert(prev == def);
    ck_assert(tg_tape_current() == mine);
    tg_tensor *x = tg_requires_grad(tg_ones(TG_SHAPE(3)), true);
    tg_tensor *y = tg_sum(tg_exp(x));
    ck_assert_int_eq(mine->n_nodes, 2);
    ck_assert_int_eq(def->n_nodes, 0);
    tg_backward(y, NULL);
    ck_assert(fabsf(x->grad[0] - expf(1.0f)) < 1e-6f);
    ck_assert(tg_tape_use(prev) == mine);
    ck_assert(tg_tape_current() == def);
    tg_tape_free(mine);
    tg_free(x);
}
END_TEST

/* A small MLP classifier trained for a few steps: after the 2nd step the
 * arena never mallocs again and the tape's node array stops growing. */
START_TEST(test_warm_training_loop_no_mallocs)
{
    tg_tape *tape = tg_tape_new();
    tg_tape *prev = tg_tape_use(tape);
    tg_generator g;
    tg_manual_seed(&g, 123);
    tg_tensor *x = tg_randn(&g, TG_SHAPE(8, 6));
    tg_tensor *w1 = tg_requires_grad(tg_uniform(&g, -0.4f, 0.4f, TG_SHAPE(6, 16)), true);
    tg_tensor *b1 = tg_requires_grad(tg_zeros(TG_SHAPE(16)), true);
    tg_tensor *w2 = tg_requires_grad(tg_uniform(&g, -0.25f, 0.25f, TG_SHAPE(16, 3)), true);
    tg_tensor *b2 = tg_requires_grad(tg_zeros(TG_SHAPE(3)), true);
    tg_tensor *sc = tg_requires_grad(tg_ones(TG_SHAPE(16)), true);
    tg_tensor *sh = tg_requires_grad(tg_zeros(TG_SHAPE(16)), true);
    tg_tensor *params[6] = {w1, b1, w2, b2, sc, sh};
    const int32_t targets[8] = {0, 1, 2, 0, 1, 2, 2, 1};
    size_t warm_mallocs = 0;
    int warm_cap = 0;
    float first = 0, last = 0;
    for (int step = 0; step < 12; step++) {
        tg_tensor *h = tg_add(tg_matmul(x, w1), b1);
        h = tg_dropout(tg_gelu(tg_layernorm(h, sc, sh, 1e-5f)), 0.1f, true, &g);
        tg_tensor *logits = tg_add(tg_matmul(h, w2), b2);
        tg_tensor *loss = tg_cross_entropy(logits, targets);
        if (step == 0)
            first = loss->data[0];
        last = loss->data[0];
        tg_backward(loss, NULL);
        for (int p = 0; p < 6; p++) {
            for (int64_t i = 0; i < params[p]->numel; i++)
                params[p]->data[i] -= 0.1f * params[p]->grad[i];
        }
        tg_zero_grad(params, 6);
        tg_tape_reset(tape);
        ck_assert_int_eq(tape->n_nodes, 0);
        ck_assert_int_eq(tg_arena_used(tape->arena), 0);
        if (step == 1) {
            warm_mallocs = tg_arena_mallocs(tape->arena);
            warm_cap = tape->cap_nodes;
        } else if (step > 1) {
            ck_assert_msg(tg_arena_mallocs(tape->arena) == warm_mallocs, "step %d: arena mallocs %zu, warm %zu",
                          step, tg_arena_mallocs(tape->arena), warm_mallocs);
            ck_assert_int_eq(tape->cap_nodes, warm_cap);
        }
    }
    ck_assert_msg(last < first, "loss went from %g to %g", (double)first, (double)last);
    tg_tape_use(prev);
    tg_tape_free(tape);
    tg_free(x);
    for (int p = 0; p < 6; p++)
        tg_free(params[p]);
}
END_TEST

START_TEST(test_tape_print_names_ops)
{
    tg_tape_reset(NULL);
    tg_tensor *a = tg_set_name(tg_requires_grad(tg_ones(TG_SHAPE(2, 3)), true), "a");
    tg_tensor *b = tg_requires_grad(tg_ones(TG_SHAPE(3, 4)), true);
    tg_tensor *c = tg_requires_grad(tg_ones(TG_SHAPE(4)), true);
    tg_sum(tg_softmax(tg_add(tg_matmul(a, b), c), -1));
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    tg_tape_print(NULL, f);
    fclose(f);
    const char *need[] = {"tg_matmul", "tg_add", "tg_softmax", "tg_sum", "#0", "#3", "[2,3]", "[3,4]", "[2,4]"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        ck_assert_msg(strstr(mem, need[i]) != NULL, "tape print lacks '%s':\n%s", need[i], mem);
    ck_assert_msg(strstr(mem, "tg_matmul") < strstr(mem, "tg_add") && strstr(mem, "tg_add") < strstr(mem, "tg_sum"),
                  "tape print not in execution order:\n%s", mem);
    free(mem);
    tg_tape_reset(NULL);
    tg_free(a);
    tg_free(b);
    tg_free(c);
}
END_TEST

START_TEST(test_view_shares_data)
{
    tg_tensor *a = tg_requires_grad(tg_from_array(TG_SHAPE(2, 3), (const float[]){1, 2, 3, 4, 5, 6}), true);
    tg_tensor *v = tg_view(a, TG_SHAPE(3, 2));
    ck_assert_int_eq(v->shape[0], 3);
    ck_assert_msg(v->data == a->data, "tg_view should share its input's data (autograd.h)");
    tg_backward(tg_sum(tg_mul_scalar(v, 2.0f)), NULL);
    for (int i = 0; i < 6; i++)
        ck_assert(a->grad[i] == 2.0f);
    tg_tape_reset(NULL);
    tg_free(a);
}
END_TEST

/* A custom op through tg_new_tensor + tg_record (header's recipe), once with
 * a correct backward and once with a wrong one: gradcheck must tell them apart. */
static void square_backward_ok(tg_node *n)
{
    float *ga = tg_grad_of(n->in[0]);
    if (ga)
        for (int64_t i = 0; i < n->out->numel; i++)
            ga[i] += 2.0f * n->in[0]->data[i] * n->out->grad[i];
}
static void square_backward_wrong(tg_node *n)
{
    float *ga = tg_grad_of(n->in[0]);
    if (ga)
        for (int64_t i = 0; i < n->out->numel; i++)
            ga[i] += n->in[0]->data[i] * n->out->grad[i];
}
static tg_tensor *f_custom_square(tg_tensor **x, void *p)
{
    tg_tensor *out = tg_new_tensor(x[0]->ndim, x[0]->shape);
    for (int64_t i = 0; i < out->numel; i++)
        out->data[i] = x[0]->data[i] * x[0]->data[i];
    tg_record("custom_square", out, x, 1, p ? square_backward_wrong : square_backward_ok);
    return out;
}

START_TEST(test_gradcheck_custom_op_and_detects_wrong_grad)
{
    tg_tape *def = tg_tape_current();
    tg_tape_reset(def);
    tg_generator g;
    tg_manual_seed(&g, 3);
    tg_tensor *in[1] = {tg_requires_grad(tg_uniform(&g, 0.5f, 2.0f, TG_SHAPE(3, 4)), true)};
    float *user = tg_grad_buffer(in[0], NULL);
    user[0] = 42.0f;
    tg_gradcheck_result ok = tg_gradcheck(f_custom_square, NULL, in, 1, GC_EPS, GC_ATOL, GC_RTOL);
    assert_gradcheck(ok, 1, "custom_square", GC_EPS);
    ck_assert(ok.max_abs_err[0] < 1e-3);
    int dummy;
    tg_gradcheck_result bad = tg_gradcheck(f_custom_square, &dummy, in, 1, GC_EPS, GC_ATOL, GC_RTOL);
    ck_assert_msg(!bad.ok, "gradcheck accepted a gradient off by a factor 2 (max abs err %g)", bad.max_abs_err[0]);
    ck_assert(bad.max_abs_err[0] > 0.1);
    ck_assert_int_ge(bad.worst_index[0], 0);
    /* private tape; the caller's grad buffer and values untouched */
    ck_assert_int_eq(def->n_nodes, 0);
    ck_assert(tg_tape_current() == def);
    ck_assert(in[0]->grad == user && user[0] == 42.0f);
    tg_free(in[0]);
}
END_TEST

/* ================================================================ errors */

typedef struct {
    tg_tensor *a, *b;
    int32_t ids[2];
    tg_generator g;
} err_ctx;

static void e_matmul(void *p) { tg_matmul(((err_ctx *)p)->a, ((err_ctx *)p)->b); }
static void e_add(void *p) { tg_add(((err_ctx *)p)->a, ((err_ctx *)p)->b); }
static void e_sub(void *p) { tg_sub(((err_ctx *)p)->a, ((err_ctx *)p)->b); }
static void e_mul(void *p) { tg_mul(((err_ctx *)p)->a, ((err_ctx *)p)->b); }
static void e_div(void *p) { tg_div(((err_ctx *)p)->a, ((err_ctx *)p)->b); }
static void e_transpose(void *p) { tg_transpose(((err_ctx *)p)->a, 0, 3); }
static void e_transpose_neg(void *p) { tg_transpose(((err_ctx *)p)->a, -3, 0); }
static void e_permute(void *p) { tg_permute(((err_ctx *)p)->a, (const int[]){0, 0, 1}); }
static void e_softmax(void *p) { tg_softmax(((err_ctx *)p)->a, 2); }
static void e_log_softmax(void *p) { tg_log_softmax(((err_ctx *)p)->a, -3); }
static void e_sum_dim(void *p) { tg_sum_dim(((err_ctx *)p)->a, 2, false); }
static void e_mean_dim(void *p) { tg_mean_dim(((err_ctx *)p)->a, -3, true); }
static void e_max_dim(void *p) { tg_max_dim(((err_ctx *)p)->a, 5, false); }
static void e_reshape(void *p) { tg_reshape(((err_ctx *)p)->a, TG_SHAPE(4, 2)); }
static void e_reshape_2m1(void *p) { tg_reshape(((err_ctx *)p)->a, TG_SHAPE(-1, -1)); }
static void e_view(void *p) { tg_view(((err_ctx *)p)->a, TG_SHAPE(5)); }
static void e_concat(void *p)
{
    err_ctx *c = p;
    tg_concat((tg_tensor *[]){c->a, c->b}, 2, 0);
}
static void e_concat_dim(void *p)
{
    err_ctx *c = p;
    tg_concat((tg_tensor *[]){c->a, c->a}, 2, 2);
}
static void e_embedding(void *p)
{
    err_ctx *c = p;
    tg_embedding(c->a, c->ids, TG_SHAPE(2));
}
static void e_cross_entropy(void *p)
{
    err_ctx *c = p;
    tg_cross_entropy(c->a, c->ids);
}
static void e_backward(void *p) { tg_backward(tg_mul_scalar(((err_ctx *)p)->a, 2.0f), NULL); }
static void e_backward_seed(void *p)
{
    err_ctx *c = p;
    tg_backward(tg_mul_scalar(c->a, 2.0f), c->b);
}
static void e_masked_fill(void *p) { tg_masked_fill(((err_ctx *)p)->a, ((err_ctx *)p)->b, 0.0f); }
static void e_layernorm(void *p) { tg_layernorm(((err_ctx *)p)->a, ((err_ctx *)p)->b, ((err_ctx *)p)->b, 1e-5f); }
static void e_dropout(void *p)
{
    err_ctx *c = p;
    tg_dropout(c->a, 1.5f, true, &c->g);
}
static void e_triu(void *p) { tg_triu(((err_ctx *)p)->a, 0); }
static void e_add_null(void *p) { tg_add(((err_ctx *)p)->a, NULL); }
static void e_matmul_null(void *p) { tg_matmul(NULL, ((err_ctx *)p)->a); }
static void e_exp_null(void *p) { (void)p; tg_exp(NULL); }
static void e_softmax_null(void *p) { (void)p; tg_softmax(NULL, -1); }
static void e_sum_null(void *p) { (void)p; tg_sum(NULL); }
static void e_layernorm_null(void *p) { tg_layernorm(((err_ctx *)p)->a, NULL, NULL, 1e-5f); }
static void e_masked_fill_null(void *p) { tg_masked_fill(((err_ctx *)p)->a, NULL, 0.0f); }
static void e_dropout_null_gen(void *p) { tg_dropout(((err_ctx *)p)->a, 0.5f, true, NULL); }
static void e_cross_entropy_null(void *p) { tg_cross_entropy(((err_ctx *)p)->a, NULL); }
static void e_embedding_null(void *p) { tg_embedding(((err_ctx *)p)->a, NULL, TG_SHAPE(2)); }
static void e_concat_empty(void *p) { tg_concat(&((err_ctx *)p)->a, 0, 0); }
static void e_max_empty(void *p) { tg_max(((err_ctx *)p)->a); }
static void e_max_dim_empty(void *p) { tg_max_dim(((err_ctx *)p)->a, 1, false); }
static void e_affine(void *p) { tg_affine(((err_ctx *)p)->a, ((err_ctx *)p)->b, NULL); }
static void e_affine_bias(void *p)
{
    err_ctx *c = p;
    tg_affine(c->a, c->a, c->b);
}
static void e_embedding_ndim(void *p)
{
    err_ctx *c = p;
    tg_embedding(c->a, c->ids, TG_SHAPE(1, 1, 1, 2));
}
/* 8 dimensions of 1e9: validated before anything is formatted (once, this
 * overflowed the 64-byte shape buffer) */
static void e_embedding_ndim8(void *p)
{
    err_ctx *c = p;
    tg_embedding(c->a, c->ids, TG_SHAPE(1000000000, 1000000000, 1000000000, 1000000000, 1000000000, 1000000000,
                                        1000000000, 1000000000));
}

typedef struct {
    const char *what;
    void (*fn)(void *);
    int na, sa[4], nb, sb[4];
    int32_t ids[2];
    const char *exact;   /* the whole message, or NULL */
    const char *op;      /* message starts with "<op>: " */
    const char *sub[3];  /* and contains these */
} err_case;

static const err_case ERRS[] = {
    {"matmul inner dims", e_matmul, 3, {2, 6, 3}, 2, {2, 4}, {0}, "tg_matmul: shapes [2,6,3] and [2,4] do not match",
     "tg_matmul", {NULL}},
    {"matmul 1-D", e_matmul, 1, {3}, 1, {3}, {0}, NULL, "tg_matmul", {"[3]"}},
    {"matmul batch", e_matmul, 3, {2, 3, 4}, 3, {3, 4, 5}, {0}, NULL, "tg_matmul", {"[2,3,4]", "[3,4,5]"}},
    {"add broadcast", e_add, 2, {2, 3}, 1, {4}, {0}, NULL, "tg_add", {"[2,3]", "[4]"}},
    {"sub broadcast", e_sub, 2, {2, 3}, 2, {3, 2}, {0}, NULL, "tg_sub", {"[2,3]", "[3,2]"}},
    {"mul broadcast", e_mul, 3, {2, 3, 4}, 2, {2, 4}, {0}, NULL, "tg_mul", {"[2,3,4]", "[2,4]"}},
    {"div broadcast", e_div, 1, {5}, 1, {3}, {0}, NULL, "tg_div", {"[5]", "[3]"}},
    {"transpose dim 3", e_transpose, 2, {2, 3}, 0, {0}, {0}, NULL, "tg_transpose", {"[2,3]"}},
    {"transpose dim -3", e_transpose_neg, 2, {2, 3}, 0, {0}, {0}, NULL, "tg_transpose", {"[2,3]"}},
    {"permute repeat", e_permute, 3, {2, 3, 4}, 0, {0}, {0}, NULL, "tg_permute", {"[2,3,4]"}},
    {"softmax dim", e_softmax, 2, {2, 3}, 0, {0}, {0}, NULL, "tg_softmax", {"[2,3]"}},
    {"log_softmax dim", e_log_softmax, 2, {2, 3}, 0, {0}, {0}, NULL, "tg_log_softmax", {"[2,3]"}},
    {"sum dim", e_sum_dim, 2, {2, 3}, 0, {0}, {0}, NULL, "tg_sum_dim", {"[2,3]"}},
    {"mean dim", e_mean_dim, 2, {2, 3}, 0, {0}, {0}, NULL, "tg_mean_dim", {"[2,3]"}},
    {"max dim", e_max_dim, 2, {2, 3}, 0, {0}, {0}, NULL, "tg_max_dim", {"[2,3]"}},
    {"reshape numel", e_reshape, 2, {2, 3}, 0, {0}, {0}, NULL, "tg_reshape", {"[2,3]", "[4,2]"}},
    {"reshape two -1", e_reshape_2m1, 2, {2, 3}, 0, {0}, {0}, NULL, "tg_reshape", {"[-1,-1]"}},
    {"view numel", e_view, 2, {2, 3}, 0, {0}, {0}, NULL, "tg_view", {"[2,3]", "[5]"}},
    {"concat sizes", e_concat, 2, {2, 3}, 2, {2, 4}, {0}, NULL, "tg_concat", {"[2,3]", "[2,4]"}},
    {"concat ndim", e_concat, 2, {2, 3}, 1, {3}, {0}, NULL, "tg_concat", {"[2,3]", "[3]"}},
    {"concat dim", e_concat_dim, 2, {2, 3}, 0, {0}, {0}, NULL, "tg_concat", {"[2,3]"}},
    {"embedding index high", e_embedding, 2, {10, 4}, 0, {0}, {0, 10}, NULL, "tg_embedding", {"[10,4]", "10"}},
    {"embedding index negative", e_embedding, 2, {10, 4}, 0, {0}, {-1, 0}, NULL, "tg_embedding", {"[10,4]", "-1"}},
    {"cross_entropy target high", e_cross_entropy, 2, {2, 5}, 0, {0}, {1, 5}, NULL, "tg_cross_entropy", {"[2,5]"}},
    {"cross_entropy target negative", e_cross_entropy, 2, {2, 5}, 0, {0}, {-1, 0}, NULL, "tg_cross_entropy",
     {"[2,5]", "-1"}},
    {"backward non-scalar", e_backward, 2, {2, 3}, 0, {0}, {0}, NULL, "tg_backward", {"[2,3]"}},
    {"backward seed shape", e_backward_seed, 2, {2, 3}, 1, {4}, {0}, NULL, "tg_backward", {"[2,3]", "[4]"}},
    {"masked_fill mask", e_masked_fill, 2, {2, 4}, 1, {3}, {0}, NULL, "tg_masked_fill", {"[2,4]", "[3]"}},
    {"layernorm params", e_layernorm, 2, {2, 4}, 1, {5}, {0}, NULL, "tg_layernorm", {"[2,4]", "[5]"}},
    {"dropout p", e_dropout, 2, {2, 4}, 0, {0}, {0}, NULL, "tg_dropout", {"1.5"}},
    {"triu 1-D", e_triu, 1, {3}, 0, {0}, {0}, NULL, "tg_triu", {"[3]"}},
    {"add NULL", e_add_null, 2, {2, 3}, 0, {0}, {0}, NULL, "tg_add", {"NULL"}},
    {"matmul NULL", e_matmul_null, 2, {2, 3}, 0, {0}, {0}, NULL, "tg_matmul", {"NULL"}},
    {"exp NULL", e_exp_null, 1, {1}, 0, {0}, {0}, NULL, "tg_exp", {"NULL"}},
    {"softmax NULL", e_softmax_null, 1, {1}, 0, {0}, {0}, NULL, "tg_softmax", {"NULL"}},
    {"sum NULL", e_sum_null, 1, {1}, 0, {0}, {0}, NULL, "tg_sum", {"NULL"}},
    {"layernorm NULL", e_layernorm_null, 2, {2, 4}, 0, {0}, {0}, NULL, "tg_layernorm", {"NULL"}},
    {"masked_fill NULL mask", e_masked_fill_null, 2, {2, 4}, 0, {0}, {0}, NULL, "tg_masked_fill", {"NULL"}},
    {"dropout NULL generator", e_dropout_null_gen, 2, {2, 4}, 0, {0}, {0}, NULL, "tg_dropout", {"NULL"}},
    {"cross_entropy NULL targets", e_cross_entropy_null, 2, {2, 5}, 0, {0}, {0}, NULL, "tg_cross_entropy", {"NULL"}},
    {"embedding NULL ids", e_embedding_null, 2, {10, 4}, 0, {0}, {0}, NULL, "tg_embedding", {"NULL"}},
    {"embedding ids ndim", e_embedding_ndim, 2, {10, 4}, 0, {0}, {0}, NULL, "tg_embedding", {"[1,1,1,2]"}},
    {"embedding ids 8 dims", e_embedding_ndim8, 2, {10, 4}, 0, {0}, {0}, NULL, "tg_embedding",
     {"8 dimensions", "at most 3"}},
    {"concat empty list", e_concat_empty, 2, {2, 3}, 0, {0}, {0}, NULL, "tg_concat", {"0"}},
    {"max of empty", e_max_empty, 1, {0}, 0, {0}, {0}, NULL, "tg_max", {"empty"}},
    {"max_dim of empty dim", e_max_dim_empty, 2, {2, 0}, 0, {0}, {0}, NULL, "tg_max_dim", {"[2,0]"}},
    {"affine weight", e_affine, 2, {2, 3}, 2, {4, 2}, {0}, NULL, "tg_affine", {"[2,3]", "[4,2]"}},
    {"affine bias", e_affine_bias, 2, {3, 3}, 1, {4}, {0}, NULL, "tg_affine", {"[4]", "[3,3]"}},
};
#define N_ERRS ((int)(sizeof ERRS / sizeof ERRS[0]))

START_TEST(test_errors)
{
    const err_case *e = &ERRS[_i];
    err_ctx c = {0};
    tg_manual_seed(&c.g, 1);
    c.a = tg_requires_grad(tg_rand(&c.g, e->na, e->sa), true);
    c.b = e->nb ? tg_requires_grad(tg_rand(&c.g, e->nb, e->sb), true) : NULL;
    memcpy(c.ids, e->ids, sizeof c.ids);
    char msg[600];
    tg_tape_reset(NULL);
    bool raised = catch_error(e->fn, &c, msg, sizeof msg);
    tg_tape_reset(NULL);
    tg_free(c.a);
    tg_free(c.b);
    ck_assert_msg(raised, "%s: no error raised", e->what);
    if (e->exact)
        ck_assert_msg(strcmp(msg, e->exact) == 0, "%s: message '%s', expected exactly '%s'", e->what, msg, e->exact);
    size_t n = strlen(e->op);
    ck_assert_msg(strncmp(msg, e->op, n) == 0 && msg[n] == ':', "%s: message '%s' should start with '%s:'", e->what,
                  msg, e->op);
    for (int k = 0; k < 3 && e->sub[k]; k++)
        ck_assert_msg(strstr(msg + n, e->sub[k]) != NULL, "%s: message '%s' should contain '%s'", e->what, msg,
                      e->sub[k]);
}
END_TEST


/* ================================================================ edge cases
 * Values from identities and from torch's documented behaviour. */

START_TEST(test_masked_row_gets_zero_grad)
{
    /* A fully masked row: torch's softmax gives NaN there, and the masked
     * positions pass no gradient, so x.grad is exactly 0 (not NaN). */
    const float xv[6] = {0.5f, 1.0f, 2.0f, 1.0f, 2.0f, 3.0f};
    const float mv[6] = {1, 1, 1, 0, 0, 1};
    tg_tensor *x = tg_requires_grad(tg_from_array(TG_SHAPE(2, 3), xv), true);
    tg_tensor *mask = tg_from_array(TG_SHAPE(2, 3), mv);
    tg_tensor *seed = tg_from_array(TG_SHAPE(2, 3), (const float[]){1, 2, 3, 4, 5, 6});
    tg_tensor *y = tg_softmax(tg_masked_fill(x, mask, -INFINITY), 1);
    for (int j = 0; j < 3; j++)
        ck_assert_msg(isnan(y->data[j]), "row 0 of a fully masked softmax should be NaN, got %g", (double)y->data[j]);
    tg_backward(y, seed);
    for (int j = 0; j < 3; j++)
        ck_assert_msg(x->grad[j] == 0.0f, "x.grad[0][%d] = %g, want 0", j, (double)x->grad[j]);
    ck_assert(x->grad[5] == 0.0f);
    /* row 1: softmax over the first two, d/dx = y*(g - sum(g*y)) */
    const double e = exp(1.0), y0 = 1.0 / (1.0 + e), y1 = e / (1.0 + e), dot = 4.0 * y0 + 5.0 * y1;
    ck_assert_msg(fabs(x->grad[3] - y0 * (4.0 - dot)) < 1e-6, "x.grad[1][0] = %g", (double)x->grad[3]);
    ck_assert_msg(fabs(x->grad[4] - y1 * (5.0 - dot)) < 1e-6, "x.grad[1][1] = %g", (double)x->grad[4]);
    tg_tape_reset(NULL);
    tg_free(x);
    tg_free(mask);
    tg_free(seed);
}
END_TEST

START_TEST(test_nan_and_tiny_values)
{
    tg_tensor *x = tg_from_array(TG_SHAPE(4), (const float[]){NAN, -100.0f, -88.0f, 0.25f});
    tg_tensor *th = tg_tanh(x), *re = tg_relu(x), *ex = tg_exp(x), *ge = tg_gelu(x);
    ck_assert(isnan(th->data[0]) && isnan(re->data[0]) && isnan(ex->data[0]) && isnan(ge->data[0]));
    /* exp reaches the denormals like libm (one rounding): expf(-100) = 3.72e-44 */
    for (int i = 1; i < 4; i++)
        ck_assert_msg(fabsf(ex->data[i] - expf(x->data[i])) <= fmaxf(1e-45f, 2e-7f * expf(x->data[i])),
                      "exp(%g) = %g, libm %g", (double)x->data[i], (double)ex->data[i], (double)expf(x->data[i]));
    ck_assert(ex->data[1] > 0.0f);
    tg_tape_reset(NULL);
    tg_free(x);
}
END_TEST

START_TEST(test_affine_with_no_inputs)
{
    /* in = 0: y is the bias on every row (torch.nn.functional.linear), and
     * the bias gradient is the sum of the rows of dy */
    tg_tensor *x = tg_requires_grad(tg_zeros(TG_SHAPE(2, 0)), true);
    tg_tensor *w = tg_requires_grad(tg_zeros(TG_SHAPE(3, 0)), true);
    tg_tensor *b = tg_requires_grad(tg_from_array(TG_SHAPE(3), (const float[]){1, 2, 3}), true);
    tg_tensor *seed = tg_from_array(TG_SHAPE(2, 3), (const float[]){1, 2, 3, 4, 5, 6});
    tg_tensor *y = tg_affine(x, w, b);
    ck_assert_int_eq(y->ndim, 2);
    ck_assert_int_eq(y->shape[0], 2);
    ck_assert_int_eq(y->shape[1], 3);
    for (int i = 0; i < 6; i++)
        ck_assert(y->data[i] == (float)(i % 3 + 1));
    tg_backward(y, seed);
    ck_assert(b->grad[0] == 5.0f && b->grad[1] == 7.0f && b->grad[2] == 9.0f);
    tg_tape_reset(NULL);
    tg_free(x);
    tg_free(w);
    tg_free(b);
    tg_free(seed);
}
END_TEST

static void e_zeros_null_shape(void *ctx) { (void)ctx; tg_zeros(2, NULL); }
static void e_arange_huge(void *ctx) { (void)ctx; tg_arange(0.0f, 1e30f, 1.0f); }
static void e_shape_overflow(void *ctx) { (void)ctx; tg_zeros(TG_SHAPE(1 << 16, 1 << 16, 4)); }
static void e_backward_null(void *ctx) { (void)ctx; tg_backward(NULL, NULL); }
static void e_print_null(void *ctx) { (void)ctx; tg_print(NULL); }
static void e_view_null_shape(void *ctx) { tg_view(ctx, 2, NULL); }
static tg_tensor *gc_mul(tg_tensor **in, void *ctx) { (void)ctx; return tg_mul(in[0], in[1]); }
static void e_gradcheck_same_input(void *ctx)
{
    tg_tensor *in[2] = {ctx, ctx};
    tg_gradcheck(gc_mul, NULL, in, 2, 1e-2, 1e-3, 1e-2);
}

START_TEST(test_bad_pointers_and_sizes)
{
    struct { void (*fn)(void *); const char *want; } cases[] = {
        {e_zeros_null_shape, "shape is NULL"},
        {e_arange_huge, "tg_arange: "},
        {e_shape_overflow, "more than 2147483647 elements"},
        {e_backward_null, "tg_backward: loss is NULL"},
        {e_print_null, "tensor is NULL"},
        {e_view_null_shape, "tg_view: shape is NULL"},
        {e_gradcheck_same_input, "tg_gradcheck: input 1 is the same tensor as input 0"},
    };
    tg_tensor *t = tg_requires_grad(tg_ones(TG_SHAPE(2, 3)), true);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char msg[600];
        ck_assert_msg(catch_error(cases[i].fn, t, msg, sizeof msg), "case %zu: no error", i);
        ck_assert_msg(strstr(msg, cases[i].want) != NULL, "case %zu: '%s' should contain '%s'", i, msg,
                      cases[i].want);
    }
    tg_tape_reset(NULL);
    tg_free(t);
}
END_TEST

START_TEST(test_empty_tensor_prints_size)
{
    char buf[128];
    tg_tensor *a = tg_zeros(TG_SHAPE(2, 0, 4)), *b = tg_zeros(TG_SHAPE(0));
    tg_snprint(buf, sizeof buf, a);
    ck_assert_str_eq(buf, "tensor([], size=(2, 0, 4))"); /* torch.zeros(2, 0, 4) */
    tg_snprint(buf, sizeof buf, b);
    ck_assert_str_eq(buf, "tensor([])");                 /* torch.zeros(0) */
    tg_free(a);
    tg_free(b);
}
END_TEST

/* ================================================================ suite */

/* Every thread has its own default tape (tensor.h: "each has its own current
 * tape"): two threads train at once without tg_tape_use, see different
 * tg_tape_current() values (while both are alive), get the single-threaded
 * results, and their tapes are freed when they exit (valgrind: no leak).
 * tg_tape_release_default in a thread frees that thread's tape only. */
typedef struct {
    uint64_t seed;
    float loss, grad_sum;
    tg_tape *tape;           /* the thread's tg_tape_current() */
    bool stable;             /* it stayed the same through training */
    pthread_barrier_t *both; /* NULL when run alone */
    const tg_tape **other;   /* the other thread's tape, seen after the barrier */
    bool skipped;            /* shared a tape with the other thread: not trained */
} default_job;

static void *train_on_default_tape(void *arg)
{
    default_job *j = arg;
    j->tape = tg_tape_current();
    if (j->both) {
        pthread_barrier_wait(j->both); /* both alive: their tapes exist at once */
        if (*j->other == j->tape) {
            j->skipped = true; /* training on one tape from two threads would corrupt it */
            return NULL;
        }
    }
    tg_generator g;
    tg_manual_seed(&g, j->seed);
    tg_tensor *x = tg_randn(&g, TG_SHAPE(4, 16, 24));
    tg_tensor *w = tg_requires_grad(tg_randn(&g, TG_SHAPE(24, 24)), true);
    j->stable = true;
    for (int step = 0; step < 4; step++) {
        tg_tensor *h = tg_gelu(tg_affine(x, w, NULL));
        tg_tensor *a = tg_softmax(tg_matmul(h, tg_transpose(h, 1, 2)), -1);
        tg_tensor *l = tg_mean(tg_mul(tg_matmul(a, h), h));
        j->loss = l->data[0];
        tg_backward(l, NULL);
        j->stable = j->stable && tg_tape_current() == j->tape && j->tape->n_nodes > 0;
        tg_tape_reset(NULL);
    }
    double gs = 0.0;
    for (int64_t i = 0; i < w->numel; i++)
        gs += w->grad[i];
    j->grad_sum = (float)gs;
    tg_free(x);
    tg_free(w);
    if (j->both && j->seed % 2 == 0)
        tg_tape_release_default(); /* this thread's; the other's and main's live on */
    return NULL;
}

START_TEST(test_default_tape_per_thread)
{
    default_job ref[2] = {{.seed = 20}, {.seed = 21}};
    train_on_default_tape(&ref[0]);
    train_on_default_tape(&ref[1]);
    /* an op output on the main thread's default tape, alive across the threads */
    tg_tape *mine = tg_tape_current();
    tg_tensor *src = tg_full(TG_SHAPE(1000), 2.0f);
    tg_tensor *keep = tg_mul_scalar(src, 3.0f);

    pthread_barrier_t both;
    ck_assert_int_eq(pthread_barrier_init(&both, NULL, 2), 0);
    default_job par[2] = {{.seed = 20, .both = &both}, {.seed = 21, .both = &both}};
    par[0].other = (const tg_tape **)&par[1].tape;
    par[1].other = (const tg_tape **)&par[0].tape;
    pthread_t t[2];
    for (int k = 0; k < 2; k++)
        ck_assert_int_eq(pthread_create(&t[k], NULL, train_on_default_tape, &par[k]), 0);
    for (int k = 0; k < 2; k++)
        pthread_join(t[k], NULL);
    pthread_barrier_destroy(&both);

    ck_assert_msg(par[0].tape != par[1].tape, "two threads share the default tape %p", (void *)par[0].tape);
    ck_assert_msg(par[0].tape != mine && par[1].tape != mine, "a thread got the main thread's default tape");
    for (int k = 0; k < 2; k++) {
        ck_assert(!par[k].skipped && par[k].stable);
        ck_assert_msg(par[k].loss == ref[k].loss, "thread %d: loss %.9g, alone %.9g", k, (double)par[k].loss,
                      (double)ref[k].loss);
        ck_assert_msg(par[k].grad_sum == ref[k].grad_sum, "thread %d: grad sum %.9g, alone %.9g", k,
                      (double)par[k].grad_sum, (double)ref[k].grad_sum);
    }
    /* the main thread's default tape was neither replaced nor freed */
    ck_assert_ptr_eq(tg_tape_current(), mine);
    for (int i = 0; i < 1000; i++)
        ck_assert(keep->data[i] == 6.0f);
    tg_tape_reset(NULL);
    tg_free(src);
}
END_TEST

/* ================================================================ first writers
 * The backwards that write an intermediate's first gradient instead of
 * adding it to zeros (tg_grad_dest) must cover every element whatever the
 * buffer held, and a tensor used twice must still get the sum. */

enum { FW_B = 2, FW_T = 5, FW_C = 8, FW_H = 2, FW_V = 11, FW_HID = 12, FW_NP = 20 };

typedef struct {
    tg_tensor *p[FW_NP]; /* heap leaves: the graph's parameters */
    int32_t ids[FW_B * FW_T], pos[FW_T], tgt[FW_B * FW_T];
    tg_generator g;      /* dropout draws, re-seeded per forward */
} fw_model;

static void fw_model_init(fw_model *m)
{
    tg_generator g;
    tg_manual_seed(&g, 2026);
    const int sh[FW_NP][3] = {
        {2, FW_V, FW_C}, {2, FW_T, FW_C}, {1, FW_C, 0}, {1, FW_C, 0},      /* tok, pos, ln1 scale, shift */
        {2, FW_C, FW_C}, {2, FW_C, FW_C}, {2, FW_C, FW_C}, {1, FW_C, 0},   /* wq, wk, wv, bv */
        {2, FW_C, FW_C}, {1, FW_C, 0}, {1, FW_C, 0}, {1, FW_C, 0},         /* wo, bo, ln2 scale, shift */
        {2, FW_HID, FW_C}, {1, FW_HID, 0}, {2, FW_C, FW_HID}, {1, FW_C, 0}, /* ff w1, b1, w2, b2 */
        {2, FW_C, FW_C}, {2, FW_T, FW_C}, {2, FW_V, FW_C}, {2, FW_C, FW_T}, /* wm, wt, out head, wr */
    };
    for (int i = 0; i < FW_NP; i++) {
        m->p[i] = tg_requires_grad(tg_uniform(&g, -1.0f, 1.0f, sh[i][0], sh[i] + 1), true);
        if (sh[i][0] == 1 && (i == 2 || i == 10))
            tg_uniform_(m->p[i], 0.5f, 1.5f, &g); /* layernorm scales */
    }
    for (int i = 0; i < FW_B * FW_T; i++) {
        m->ids[i] = (int32_t)(tg_random_u32(&g) % FW_V);
        m->tgt[i] = (int32_t)(tg_random_u32(&g) % FW_V);
    }
    m->tgt[3] = -100; /* an ignored row: its logits' gradient is zero */
    for (int i = 0; i < FW_T; i++)
        m->pos[i] = i;
}

static void fw_model_free(fw_model *m)
{
    for (int i = 0; i < FW_NP; i++)
        tg_free(m->p[i]);
}

/* Every op whose backward writes first: broadcast add, dropout, layernorm,
 * affine (with and without bias), view, the fused attention and feed-
 * forward, residual add, sub, matmul (folded, batched, with a batch-
 * broadcast intermediate), reshape, cross-entropy with an ignored target;
 * after an embedding, whose backward adds (its weight is a parameter). */
static tg_tensor *fw_loss(fw_model *m)
{
    tg_tensor **p = m->p;
    tg_manual_seed(&m->g, 99);
    const int B = FW_B, T = FW_T, C = FW_C, H = FW_H;
    tg_tensor *e = tg_embedding(p[0], m->ids, 2, (const int[]){B, T});
    tg_tensor *pe = tg_embedding(p[1], m->pos, 1, (const int[]){T});
    tg_tensor *d = tg_dropout(tg_add(e, pe), 0.2f, true, &m->g);
    tg_tensor *h = tg_layernorm(d, p[2], p[3], 1e-5f);
    const int hs[4] = {B, T, H, C / H};
    tg_tensor *q = tg_view(tg_affine(h, p[4], NULL), 4, hs), *k = tg_view(tg_affine(h, p[5], NULL), 4, hs);
    tg_tensor *v = tg_view(tg_affine(h, p[6], p[7]), 4, hs);
    tg_tensor *a = tg_view(tg_sdpa_causal_heads_last(q, k, v, 0.25f, true, &m->g, NULL), 3, (const int[]){B, T, C});
    tg_tensor *r = tg_add(d, tg_dropout(tg_affine(a, p[8], p[9]), 0.2f, true, &m->g));
    tg_tensor *f = tg_feedforward_gelu(tg_layernorm(r, p[10], p[11], 1e-5f), p[12], p[13], p[14], p[15]);
    tg_tensor *r2 = tg_sub(r, f);
    tg_tensor *mm = tg_matmul(r2, p[16]);                                    /* [B,T,C] @ [C,C] */
    tg_tensor *s = tg_add(tg_matmul(mm, tg_reshape(r2, 3, (const int[]){B, C, T})), /* [B,T,T], batched */
                          tg_matmul(mm, tg_reshape(p[19], 3, (const int[]){1, C, T}))); /* broadcast b */
    tg_tensor *wt = tg_mul_scalar(tg_reshape(p[17], 3, (const int[]){1, T, C}), 0.5f);
    tg_tensor *u = tg_add(tg_matmul(s, wt), mm); /* [B,T,T] @ [1,T,C]: a broadcast intermediate */
    return tg_cross_entropy(tg_affine(u, p[18], NULL), m->tgt);
}

/* The composed-attention and RNN ops: sigmoid, tril, triu, masked_fill,
 * concat and stack, on (5, 8) parameters. */
static tg_tensor *fw_loss_composed(fw_model *m)
{
    tg_tensor **p = m->p;
    static const float up[FW_T * FW_T] = {0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0};
    tg_tensor *mask = tg_from_array(TG_SHAPE(FW_T, FW_T), up);
    tg_tensor *a = tg_sigmoid(tg_mul_scalar(p[1], 2.0f));
    tg_tensor *sc = tg_matmul(a, tg_transpose(p[17], 0, 1)); /* (5, 5) */
    tg_tensor *lo = tg_tril(sc, 0), *hi = tg_triu(tg_mul_scalar(sc, 0.5f), 1);
    tg_tensor *parts[3] = {lo, tg_masked_fill(tg_mul_scalar(sc, -1.0f), mask, -3.0f), hi};
    tg_tensor *cat = tg_concat(parts, 3, 1), *st = tg_stack((tg_tensor *[]){lo, hi}, 2, 0);
    tg_free(mask);
    return tg_add(tg_sum(tg_mul(cat, tg_sigmoid(cat))), tg_sum(tg_mul(st, tg_sigmoid(st))));
}

/* every parameter's grad after one zero_grad + backward, in one malloc'd array */
static float *fw_grads(fw_model *m, tg_tensor *loss)
{
    tg_zero_grad(m->p, FW_NP);
    tg_backward(loss, NULL);
    int64_t total = 0;
    for (int i = 0; i < FW_NP; i++)
        total += m->p[i]->numel;
    float *g = malloc((size_t)total * sizeof *g), *o = g;
    for (int i = 0; i < FW_NP; i++) {
        if (m->p[i]->grad)
            memcpy(o, m->p[i]->grad, (size_t)m->p[i]->numel * sizeof *g);
        else /* not in this graph */
            memset(o, 0, (size_t)m->p[i]->numel * sizeof *g);
        o += m->p[i]->numel;
    }
    return g;
}

static void assert_same_bits(const float *got, const float *want, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(memcmp(got + i, want + i, sizeof *got) == 0, "%s: grad element %lld is %a, %a fresh", what,
                      (long long)i, (double)got[i], (double)want[i]);
}

static void fill_nan(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
}

START_TEST(test_first_writer_ignores_stale_buffers)
{
    tg_tensor *(*const graph)(fw_model *) = _i ? fw_loss_composed : fw_loss;
    fw_model m;
    fw_model_init(&m);
    int64_t n = 0;
    for (int i = 0; i < FW_NP; i++)
        n += m.p[i]->numel;
    tg_tape *fresh = tg_tape_new(), *prev = tg_tape_use(fresh);
    float *want = fw_grads(&m, graph(&m));
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(isfinite(want[i]), "fresh grad element %lld is %g", (long long)i, (double)want[i]);
    tg_tape_free(fresh);

    /* Arena memory full of NaN: two rounds of the forward plus a block
     * filled with NaN, then a reset (the second round reuses the first's
     * coalesced block, so the third finds the NaN where backward allocates) */
    tg_tape *t = tg_tape_new();
    tg_tape_use(t);
    const size_t big = (size_t)1 << 20;
    for (int round = 0; round < 2; round++) {
        graph(&m);
        fill_nan(tg_tape_alloc(big * sizeof(float)), big);
        tg_tape_reset(t);
    }
    tg_tensor *loss = graph(&m);
    float *got = fw_grads(&m, loss);
    assert_same_bits(got, want, n, "grad buffers from NaN-filled arena memory");
    free(got);
    /* A second backward of the same tape takes the first's released grad
     * buffers: poisoned with NaN here */
    ck_assert_int_gt(t->n_free_grads, 0);
    for (int i = 0; i < t->n_free_grads; i++)
        fill_nan(t->free_grads[i].p, t->free_grads[i].bytes / sizeof(float));
    got = fw_grads(&m, loss);
    assert_same_bits(got, want, n, "reused grad buffers poisoned with NaN");
    free(got);
    /* Within one backward a first writer may take a buffer released earlier
     * in it, stale but finite, and the same in the fresh run: with
     * retain_grads none is released, so every first writer's buffer comes
     * from the NaN-filled arena */
    const bool was = tg_retain_grads(true);
    for (int round = 0; round < 2; round++) {
        graph(&m);
        fill_nan(tg_tape_alloc(big * sizeof(float)), big);
        tg_tape_reset(t);
    }
    got = fw_grads(&m, graph(&m));
    assert_same_bits(got, want, n, "retained grads in NaN-filled arena memory");
    tg_retain_grads(was);
    free(got);
    free(want);
    tg_tape_use(prev);
    tg_tape_free(t);
    fw_model_free(&m);
}
END_TEST

/* One op applied to the intermediate h (consumers once or twice). */
typedef struct {
    const char *name;
    tg_tensor *(*fn)(tg_tensor *h, tg_tensor **p, tg_generator *g);
} fw_op;

static tg_tensor *fw_view(tg_tensor *h, tg_tensor **p, tg_generator *g)
{
    (void)p, (void)g;
    return tg_view(h, 2, (const int[]){FW_B * FW_T, FW_C});
}
static tg_tensor *fw_dropout(tg_tensor *h, tg_tensor **p, tg_generator *g)
{
    (void)p;
    return tg_dropout(h, 0.3f, true, g);
}
static tg_tensor *fw_layernorm(tg_tensor *h, tg_tensor **p, tg_generator *g)
{
    (void)g;
    return tg_layernorm(h, p[2], p[3], 1e-5f);
}
static tg_tensor *fw_affine(tg_tensor *h, tg_tensor **p, tg_generator *g)
{
    (void)g;
    return tg_affine(h, p[6], p[7]);
}
static tg_tensor *fw_ff(tg_tensor *h, tg_tensor **p, tg_generator *g)
{
    (void)g;
    return tg_feedforward_gelu(h, p[12], p[13], p[14], p[15]);
}
static tg_tensor *fw_sdpa(tg_tensor *h, tg_tensor **p, tg_generator *g)
{
    (void)p;
    const int hs[4] = {FW_B, FW_T, FW_H, FW_C / FW_H};
    static const int32_t ids[FW_B * FW_T] = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3};
    /* h has this one consumer (several would sum in another order when twice) */
    tg_tensor *q = tg_view(h, 4, hs), *k = tg_view(tg_embedding(p[0], ids, 2, (const int[]){FW_B, FW_T}), 4, hs);
    tg_tensor *v = tg_view(tg_embedding(p[18], ids, 2, (const int[]){FW_B, FW_T}), 4, hs);
    return tg_sdpa_causal_heads_last(q, k, v, 0.25f, true, g, NULL);
}
static tg_tensor *fw_add(tg_tensor *h, tg_tensor **p, tg_generator *g)
{
    (void)g;
    return tg_add(h, tg_embedding(p[0], (const int32_t[]){1, 4, 2, 9, 0}, 1, (const int[]){FW_T}));
}
static tg_tensor *fw_sub(tg_tensor *h, tg_tensor **p, tg_generator *g)
{
    (void)g;
    return tg_sub(tg_reshape(p[1], 3, (const int[]){1, FW_T, FW_C}), h);
}
static tg_tensor *fw_matmul(tg_tensor *h, tg_tensor **p, tg_generator *g)
{
    (void)g;
    return tg_matmul(h, tg_reshape(p[19], 3, (const int[]){1, FW_C, FW_T}));
}
static tg_tensor *fw_ce(tg_tensor *h, tg_tensor **p, tg_generator *g)
{
    (void)g;
    static const int32_t tgt[FW_B * FW_T] = {1, 7, -100, 0, 3, 3, 5, 6, 2, 4};
    return tg_cross_entropy(h, tgt);
}

/* sum(f(h) * R) for a fixed R of f's shape (re-seeded: the same both times) */
static tg_tensor *fw_project(const fw_op *op, tg_tensor *h, fw_model *m, tg_tensor **keep)
{
    tg_manual_seed(&m->g, 5);
    tg_tensor *y = op->fn(h, m->p, &m->g);
    tg_generator gr;
    tg_manual_seed(&gr, 17);
    tg_tensor *r = tg_uniform(&gr, -1.0f, 1.0f, y->ndim, y->shape);
    *keep = r;
    return tg_sum(tg_mul(y, r));
}

START_TEST(test_first_writer_sums_a_tensor_used_twice)
{
    static const fw_op ops[] = {
        {"tg_view", fw_view},     {"tg_dropout", fw_dropout}, {"tg_layernorm", fw_layernorm},
        {"tg_affine", fw_affine}, {"tg_feedforward_gelu", fw_ff}, {"tg_sdpa_causal_heads_last", fw_sdpa},
        {"tg_add", fw_add},       {"tg_sub", fw_sub},         {"tg_matmul", fw_matmul},
        {"tg_cross_entropy", fw_ce},
    };
    fw_model m;
    fw_model_init(&m);
    tg_generator gx;
    tg_manual_seed(&gx, 3);
    tg_tensor *x = tg_requires_grad(tg_uniform(&gx, -2.0f, 2.0f, TG_SHAPE(FW_B, FW_T, FW_C)), true);
    tg_tensor *xv = tg_requires_grad(tg_uniform(&gx, -2.0f, 2.0f, TG_SHAPE(FW_B, FW_T, FW_V)), true);
    for (size_t o = 0; o < sizeof ops / sizeof *ops; o++) {
        tg_tensor *leaf = strcmp(ops[o].name, "tg_cross_entropy") ? x : xv, *r1, *r2;
        float *g[2];
        for (int twice = 0; twice < 2; twice++) {
            tg_zero_grad(m.p, FW_NP);
            tg_zero_grad_tensor(leaf);
            tg_tensor *h = tg_mul_scalar(leaf, 1.5f); /* an intermediate: its grad is written first */
            tg_tensor *loss = fw_project(&ops[o], h, &m, &r1);
            if (twice)
                loss = tg_add(loss, fw_project(&ops[o], h, &m, &r2));
            tg_backward(loss, NULL);
            /* the leaf's grad only: parameters that sum rows into their
             * grads (layernorm's scale) do it in another order when twice */
            const int64_t n = leaf->numel;
            g[twice] = malloc((size_t)n * sizeof(float));
            memcpy(g[twice], leaf->grad, (size_t)n * sizeof(float));
            tg_tape_reset(NULL);
            tg_free(r1);
            if (twice)
                tg_free(r2);
            if (twice) {
                bool any = false;
                for (int64_t i = 0; i < n; i++) {
                    ck_assert_msg(g[1][i] == 2.0f * g[0][i], "%s: h used twice gives grad element %lld = %a, "
                                  "not twice %a", ops[o].name, (long long)i, (double)g[1][i], (double)g[0][i]);
                    any |= g[0][i] != 0.0f;
                }
                ck_assert_msg(any, "%s: the input got no gradient", ops[o].name);
            }
        }
        free(g[0]);
        free(g[1]);
    }
    tg_free(x);
    tg_free(xv);
    fw_model_free(&m);
}
END_TEST

/* Views and sums hand their output's gradient buffer on (tg_grad_pass) only
 * when it dies: with retain_grads every intermediate keeps its own. */
START_TEST(test_grad_pass_keeps_retained_grads)
{
    tg_generator g;
    tg_manual_seed(&g, 8);
    tg_tensor *x = tg_requires_grad(tg_uniform(&g, -1.0f, 1.0f, TG_SHAPE(2, 6)), true);
    tg_tensor *R = tg_uniform(&g, -1.0f, 1.0f, TG_SHAPE(3, 4));
    tg_tensor *c = tg_uniform(&g, -1.0f, 1.0f, TG_SHAPE(3, 4));
    for (int retain = 0; retain < 2; retain++) {
        const bool was = tg_retain_grads(retain);
        tg_zero_grad_tensor(x);
        tg_tensor *h = tg_mul_scalar(x, 2.0f), *v = tg_view(h, TG_SHAPE(3, 4)), *r = tg_add(v, c);
        tg_tensor *s = tg_sub(r, c);
        tg_backward(tg_sum(tg_mul(s, R)), NULL);
        for (int i = 0; i < 12; i++) /* dloss/ds = R, exactly; ds/dx = 2 */
            ck_assert_msg(x->grad[i] == 2.0f * R->data[i], "retain %d: x.grad[%d] = %g, not %g", retain, i,
                          (double)x->grad[i], 2.0 * R->data[i]);
        const tg_tensor *mid[4] = {s, r, v, h};
        for (int k = 0; k < 4; k++) {
            ck_assert_msg((mid[k]->grad != NULL) == (bool)retain, "retain %d: intermediate %d grad %s", retain, k,
                          mid[k]->grad ? "kept" : "released");
            for (int i = 0; retain && i < 12; i++)
                ck_assert_msg(mid[k]->grad[i] == R->data[i], "intermediate %d grad[%d] = %g, not %g", k, i,
                              (double)mid[k]->grad[i], (double)R->data[i]);
        }
        tg_retain_grads(was);
        tg_tape_reset(NULL);
    }
    tg_free(x);
    tg_free(R);
    tg_free(c);
}
END_TEST

/* a + b, same shapes, whose backward takes both destinations first and then
 * writes b's before a's: taken twice, the input must be added to both times
 * (tg_grad_dest's contract), whatever order a backward writes in. */
static void sum2_backward(tg_node *n)
{
    bool add_a, add_b;
    float *ga = tg_grad_dest(n, 0, &add_a), *gb = tg_grad_dest(n, 1, &add_b);
    const float *g = n->out->grad;
    for (int64_t i = 0; gb && i < n->out->numel; i++)
        gb[i] = add_b ? gb[i] + g[i] : g[i];
    for (int64_t i = 0; ga && i < n->out->numel; i++)
        ga[i] = add_a ? ga[i] + g[i] : g[i];
}

static tg_tensor *sum2(tg_tensor *a, tg_tensor *b)
{
    tg_tensor *out = tg_new_tensor(a->ndim, a->shape);
    for (int64_t i = 0; i < a->numel; i++)
        out->data[i] = a->data[i] + b->data[i];
    tg_tensor *in[2] = {a, b};
    tg_record("sum2", out, in, 2, sum2_backward);
    return out;
}

/* An input an op takes twice: both of its gradients land, summed (the two
 * terms are equal here, so the sum is exactly twice one). */
START_TEST(test_first_writer_input_taken_twice)
{
    tg_generator gx;
    tg_manual_seed(&gx, 4);
    tg_tensor *x = tg_requires_grad(tg_uniform(&gx, -2.0f, 2.0f, TG_SHAPE(3, 4)), true);
    for (int op = 0; op < 3; op++) {
        float once[12];
        for (int same = 0; same < 2; same++) {
            tg_zero_grad_tensor(x);
            tg_tensor *h = tg_mul_scalar(x, 1.5f);
            tg_tensor *c = tg_copy(h); /* the same values, no grad */
            tg_tensor *other = same ? h : c;
            tg_tensor *y = op == 2 ? sum2(h, other) : op ? tg_mul(h, other) : tg_add(h, other);
            tg_backward(tg_sum(tg_mul(y, y)), NULL);
            for (int i = 0; i < 12; i++)
                if (!same)
                    once[i] = x->grad[i];
                else
                    ck_assert_msg(x->grad[i] == 2.0f * once[i], "%s(h, h): grad %d = %g, not twice %g",
                                  op == 2 ? "sum2" : op ? "tg_mul" : "tg_add", i, (double)x->grad[i],
                                  (double)once[i]);
            tg_tape_reset(NULL);
            tg_free(c);
        }
    }
    tg_free(x);
}
END_TEST

static Suite *autograd_suite(void)
{
    Suite *s = suite_create("autograd");
    N_GC = 0;
    for (int i = 0; i < N_CASES; i++)
        if (!(CASES[i].flags & NO_GC))
            GC_IDX[N_GC++] = i;

    TCase *tc = tcase_create("golden");
    tcase_add_unchecked_fixture(tc, load_goldens, close_goldens);
    tcase_add_loop_test(tc, test_op_golden, 0, N_CASES);
    suite_add_tcase(s, tc);

    tc = tcase_create("gradcheck");
    tcase_add_unchecked_fixture(tc, load_goldens, close_goldens);
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_op_gradcheck, 0, N_GC);
    tcase_add_loop_test(tc, test_random_broadcast_binary, 0, 4);
    tcase_add_test(tc, test_random_matmul);
    tcase_add_loop_test(tc, test_random_unary, 0, N_UNARY);
    tcase_add_loop_test(tc, test_random_reduce, 0, R_N);
    tcase_add_test(tc, test_random_shape_ops);
    tcase_add_test(tc, test_random_nn_ops);
    tcase_add_test(tc, test_random_reshape_and_full_reduce);
    tcase_add_test(tc, test_random_affine);
    tcase_add_test(tc, test_max_all_tie_split);
    suite_add_tcase(s, tc);

    tc = tcase_create("tape");
    tcase_add_test(tc, test_no_grad_records_nothing);
    tcase_add_test(tc, test_inputs_without_grad_record_nothing);
    tcase_add_test(tc, test_leaves_accumulate);
    tcase_add_test(tc, test_intermediate_grads_do_not_leak);
    tcase_add_test(tc, test_grads_recycled_without_retain);
    tcase_add_test(tc, test_backward_with_seed_and_one_element);
    tcase_add_test(tc, test_tape_reset_releases);
    tcase_add_test(tc, test_private_tape);
    tcase_add_test(tc, test_warm_training_loop_no_mallocs);
    tcase_add_test(tc, test_tape_print_names_ops);
    tcase_add_test(tc, test_view_shares_data);
    tcase_add_test(tc, test_gradcheck_custom_op_and_detects_wrong_grad);
    tcase_add_test(tc, test_default_tape_per_thread);
    suite_add_tcase(s, tc);

    tc = tcase_create("first writers");
    tcase_add_loop_test(tc, test_first_writer_ignores_stale_buffers, 0, 2); /* the GPT's ops, the composed ones */
    tcase_add_test(tc, test_first_writer_sums_a_tensor_used_twice);
    tcase_add_test(tc, test_first_writer_input_taken_twice);
    tcase_add_test(tc, test_grad_pass_keeps_retained_grads);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_loop_test(tc, test_errors, 0, N_ERRS);
    tcase_add_test(tc, test_bad_pointers_and_sizes);
    suite_add_tcase(s, tc);

    tc = tcase_create("edge cases");
    tcase_add_test(tc, test_masked_row_gets_zero_grad);
    tcase_add_test(tc, test_nan_and_tiny_values);
    tcase_add_test(tc, test_affine_with_no_inputs);
    tcase_add_test(tc, test_empty_tensor_prints_size);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(autograd_suite()) ? 1 : 0; }

/*
 * tests/test_rnn.c — suite "rnn": the recurrent ops and layers against PyTorch.
 *
 *   ops         sigmoid, narrow, select, stack: forward and every input grad
 *               vs torch (tests/golden/gen_rnn.py), gradchecks, bad arguments
 *   modules     RNNCell, GRUCell, GRU, AdditiveAttention: bit-identical initial
 *               weights from the same seed under torch's names and order,
 *               forward, input/hidden grads and every parameter grad vs torch
 *               (nn.RNNCell, nn.GRUCell, nn.GRU, the script's AdditiveAttention),
 *               gradchecks, the padding mask, errors naming module and shapes
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn.h"
#include "testutil.h"

/* Opened once, before Check forks each test (an unchecked fixture). */
static golden_file *G;
static void golden_setup(void) { G = golden_open("rnn"); }
static void golden_teardown(void)
{
    golden_close(G);
    G = NULL;
}

/* ---------------------------------------------------------------- op cases
 * Mirrors ops_section() in tests/golden/gen_rnn.py. */

typedef enum { OP_SIGMOID, OP_NARROW, OP_SELECT, OP_STACK, OP_NARROW_TWICE, OP_STACK_SAME } op_kind;

typedef struct {
    const char *name;
    op_kind kind;
    int n_in;
    int dim, a, b;   /* narrow: start a, length b; select: index a */
} op_case;

static const op_case OPS[] = {
    {"sigmoid.3d", OP_SIGMOID, 1, 0, 0, 0},
    {"sigmoid.big", OP_SIGMOID, 1, 0, 0, 0},
    {"narrow.d0", OP_NARROW, 1, 0, 1, 2},
    {"narrow.d1", OP_NARROW, 1, 1, 2, 3},
    {"narrow.last", OP_NARROW, 1, -1, 0, 2},
    {"narrow.negstart", OP_NARROW, 1, 1, -3, 2},
    {"narrow.4d", OP_NARROW, 1, 2, 1, 1},
    {"narrow.twice", OP_NARROW_TWICE, 1, 1, 0, 2},
    {"select.d1", OP_SELECT, 1, 1, 2, 0},
    {"select.d0", OP_SELECT, 1, 0, 1, 0},
    {"select.neg", OP_SELECT, 1, -1, -1, 0},
    {"select.1d", OP_SELECT, 1, 0, 3, 0},
    {"stack.d0", OP_STACK, 3, 0, 0, 0},
    {"stack.d1", OP_STACK, 2, 1, 0, 0},
    {"stack.last", OP_STACK, 3, -1, 0, 0},
    {"stack.neg2", OP_STACK, 2, -2, 0, 0},
    {"stack.0d", OP_STACK, 2, 0, 0, 0},
    {"stack.same", OP_STACK_SAME, 1, 1, 0, 0},
};
#define N_OPS ((int)(sizeof OPS / sizeof OPS[0]))

static tg_tensor *op_run(const op_case *c, tg_tensor **in)
{
    switch (c->kind) {
    case OP_SIGMOID: return tg_sigmoid(in[0]);
    case OP_NARROW: return tg_narrow(in[0], c->dim, c->a, c->b);
    case OP_SELECT: return tg_select(in[0], c->dim, c->a);
    case OP_STACK: return tg_stack(in, c->n_in, c->dim);
    case OP_NARROW_TWICE: return tg_mul(tg_narrow(in[0], 1, 0, 2), tg_narrow(in[0], 1, 2, 2));
    case OP_STACK_SAME: {
        tg_tensor *pair[2] = {in[0], tg_mul_scalar(in[0], 2.0f)};
        return tg_stack(pair, 2, c->dim);
    }
    }
    return NULL;
}

START_TEST(test_op_golden)
{
    const op_case *c = &OPS[_i];
    tg_tensor *in[4];
    char what[128];
    for (int k = 0; k < c->n_in; k++)
        in[k] = tg_requires_grad(golden_tensorf(G, "%s.in%d", c->name, k), true);
    tg_tensor *out = op_run(c, in);
    tg_tensor *want = golden_tensorf(G, "%s.out", c->name);
    snprintf(what, sizeof what, "%s forward", c->name);
    assert_tensor_close(out, want, 1e-6, 1e-6, what);
    tg_free(want);
    tg_tensor *gout = golden_tensorf(G, "%s.gout", c->name);
    tg_backward(out, gout);
    tg_free(gout);
    for (int k = 0; k < c->n_in; k++) {
        want = golden_tensorf(G, "%s.grad%d", c->name, k);
        snprintf(what, sizeof what, "%s grad of input %d", c->name, k);
        ck_assert_msg(in[k]->grad != NULL, "%s: none", what);
        assert_close(in[k]->grad, want, 1e-6, 1e-5, what);
        tg_free(want);
        tg_free(in[k]);
    }
    tg_tape_reset(NULL);
}
END_TEST

static tg_tensor *op_gc_fn(tg_tensor **in, void *ctx) { return op_run(ctx, in); }

START_TEST(test_op_gradcheck)
{
    const op_case *c = &OPS[_i];
    tg_tensor *in[4] = {0};
    for (int k = 0; k < c->n_in; k++)
        in[k] = tg_requires_grad(golden_tensorf(G, "%s.in%d", c->name, k), true);
    if (c->kind == OP_SIGMOID) /* keep the finite differences off the flat tails */
        for (int64_t i = 0; i < in[0]->numel; i++)
            in[0]->data[i] = fmaxf(-6.0f, fminf(6.0f, in[0]->data[i]));
    tg_gradcheck_result r = tg_gradcheck(op_gc_fn, (void *)c, in, c->n_in, 1e-2, 1e-3, 1e-2);
    for (int k = 0; k < c->n_in; k++) {
        ck_assert_msg(r.ok, "%s gradcheck: input %d max abs err %g (rel %g) at %d", c->name, k, r.max_abs_err[k],
                      r.max_rel_err[k], r.worst_index[k]);
        tg_free(in[k]);
    }
}
END_TEST

/* sigmoid's identities: sigmoid(-x) = 1 - sigmoid(x), no overflow at the
 * extremes, NaN stays NaN. */
START_TEST(test_sigmoid_edges)
{
    const float v[] = {-1000.0f, -88.0f, -20.0f, -1.0f, 0.0f, 1.0f, 20.0f, 88.0f, 1000.0f, NAN};
    tg_tensor *x = tg_from_array(TG_SHAPE(10), v);
    tg_tensor *y = tg_sigmoid(x), *yn = tg_sigmoid(tg_neg(x));
    for (int i = 0; i < 9; i++) {
        ck_assert_msg(isfinite(y->data[i]) && y->data[i] >= 0.0f && y->data[i] <= 1.0f, "sigmoid(%g) = %g",
                      (double)v[i], (double)y->data[i]);
        ck_assert_msg(fabsf(y->data[i] + yn->data[i] - 1.0f) <= 1e-7f, "sigmoid(%g) + sigmoid(-x) = %g",
                      (double)v[i], (double)(y->data[i] + yn->data[i]));
    }
    ck_assert_float_eq(y->data[4], 0.5f);
    ck_assert_float_eq(y->data[0], 0.0f);
    ck_assert_float_eq(y->data[8], 1.0f);
    ck_assert(isnan(y->data[9]));
    tg_tape_reset(NULL);
    tg_free(x);
}
END_TEST

/* Selecting every step and stacking them back is the identity, in both
 * directions, for every dim (an identity independent of torch). */
START_TEST(test_select_stack_roundtrip)
{
    tg_generator g;
    tg_manual_seed(&g, 3);
    tg_tensor *x = tg_requires_grad(tg_randn(&g, TG_SHAPE(2, 3, 4)), true);
    for (int d = 0; d < 3; d++) {
        tg_tensor *parts[4];
        for (int i = 0; i < x->shape[d]; i++)
            parts[i] = tg_select(x, d, i);
        tg_tensor *y = tg_stack(parts, x->shape[d], d);
        ck_assert(tg_same_shape(x, y));
        ck_assert_mem_eq(x->data, y->data, (size_t)x->numel * sizeof(float));
        tg_tensor *ones = tg_ones(y->ndim, y->shape);
        tg_zero_grad(&x, 1);
        tg_backward(y, ones);
        for (int64_t i = 0; i < x->numel; i++)
            ck_assert_float_eq(x->grad[i], 1.0f);
        tg_free(ones);
        tg_tape_reset(NULL);
    }
    tg_free(x);
}
END_TEST

typedef struct {
    int which;
    tg_tensor *a, *b;
} op_misuse_ctx;

static void op_misuse(void *vctx)
{
    op_misuse_ctx *c = vctx;
    tg_tensor *pair[2] = {c->a, c->b};
    switch (c->which) {
    case 0: tg_narrow(c->a, 1, 2, 3); break;
    case 1: tg_narrow(c->a, 1, -5, 1); break;
    case 2: tg_narrow(c->a, 2, 0, 1); break;
    case 3: tg_select(c->a, 0, 2); break;
    case 4: tg_select(c->a, 1, -5); break;
    case 5: tg_stack(pair, 2, 0); break;
    case 6: tg_stack(pair, 1, 3); break;
    case 7: tg_stack(pair, 0, 0); break;
    case 8: tg_sigmoid(NULL); break;
    case 9: tg_narrow(c->a, 0, 0, -1); break;
    }
}

START_TEST(test_op_misuse)
{
    struct {
        const char *op, *needle;
    } want[] = {
        {"tg_narrow", "start (2) + length (3) exceeds dimension 1 of size 4 (shape [2,4])"},
        {"tg_narrow", "start -5 is out of range for dimension 1 of size 4 (shape [2,4])"},
        {"tg_narrow", "dimension 2 is out of range for shape [2,4]"},
        {"tg_select", "index 2 out of range for dimension 0 of size 2 (shape [2,4])"},
        {"tg_select", "index -5 out of range for dimension 1 of size 4"},
        {"tg_stack", "equal size, but got [2,4] at entry 0 and [4,2] at entry 1"},
        {"tg_stack", "dimension 3 is out of range for 3-dim result"},
        {"tg_stack", "non-empty list of tensors, got 0"},
        {"tg_sigmoid", "input is NULL"},
        {"tg_narrow", "length (-1)"},
    };
    op_misuse_ctx c = {0, tg_zeros(TG_SHAPE(2, 4)), tg_zeros(TG_SHAPE(4, 2))};
    for (int i = 0; i < (int)(sizeof want / sizeof want[0]); i++) {
        char msg[256];
        c.which = i;
        ck_assert_msg(catch_error(op_misuse, &c, msg, sizeof msg), "case %d raised no error", i);
        ck_assert_msg(strncmp(msg, want[i].op, strlen(want[i].op)) == 0, "case %d: '%s' does not name %s", i, msg,
                      want[i].op);
        ck_assert_msg(strstr(msg, want[i].needle) != NULL, "case %d: '%s' lacks '%s'", i, msg, want[i].needle);
    }
    tg_tape_reset(NULL);
    tg_free(c.a);
    tg_free(c.b);
}
END_TEST

/* ---------------------------------------------------------------- module cases
 * Mirrors MODULES in tests/golden/gen_rnn.py. */

typedef enum { M_RNNCELL, M_GRUCELL, M_GRU, M_ATTN } mod_kind;

typedef struct {
    const char *name;
    uint64_t seed;
    mod_kind kind;
    int a, b, c;      /* input_size, hidden_size; attention: query, key, attn sizes */
    bool has_h, has_mask;
} mod_case;

static const mod_case MODS[] = {
    {"rnncell_a", 1, M_RNNCELL, 3, 4, 0, true, false},
    {"rnncell_b", 2, M_RNNCELL, 6, 5, 0, false, false},
    {"rnncell_c", 3, M_RNNCELL, 4, 3, 0, true, false},
    {"grucell_a", 4, M_GRUCELL, 3, 4, 0, true, false},
    {"grucell_b", 5, M_GRUCELL, 5, 6, 0, false, false},
    {"grucell_c", 6, M_GRUCELL, 2, 3, 0, true, false},
    {"gru_a", 7, M_GRU, 3, 4, 0, true, false},
    {"gru_b", 8, M_GRU, 4, 6, 0, false, false},
    {"gru_c", 9, M_GRU, 2, 3, 0, false, false},
    {"attn_a", 10, M_ATTN, 4, 5, 6, true, true},
    {"attn_b", 11, M_ATTN, 3, 3, 8, true, true},
    {"attn_c", 12, M_ATTN, 2, 4, 3, true, false},
};
#define N_MODS ((int)(sizeof MODS / sizeof MODS[0]))

typedef struct {
    mod_kind kind;
    tg_module *m;
    const tg_params *params;   /* owned by m */
    tg_tensor *mask;           /* attention */
} mod;

static mod mod_build(const mod_case *c, tg_generator *g)
{
    mod md = {.kind = c->kind};
    switch (c->kind) {
    case M_RNNCELL: md.m = &tg_rnn_cell_new(c->a, c->b, g)->base; break;
    case M_GRUCELL: md.m = &tg_gru_cell_new(c->a, c->b, g)->base; break;
    case M_GRU: md.m = &tg_gru_new(c->a, c->b, g)->base; break;
    case M_ATTN: md.m = &tg_additive_attention_new(c->a, c->b, c->c, g)->base; break;
    }
    md.params = tg_module_params(md.m);
    return md;
}

static void mod_free(mod *md)
{
    tg_module_free(md->m);
    tg_free(md->mask);
}

/* Runs the module; for GRU *hn gets the last hidden state. For attention x
 * is the values and h the query. */
static tg_tensor *mod_forward(mod *md, tg_tensor *x, tg_tensor *h, tg_tensor **hn)
{
    switch (md->kind) {
    case M_RNNCELL: return tg_rnn_cell_forward((tg_rnn_cell *)md->m, x, h);
    case M_GRUCELL: return tg_gru_cell_forward((tg_gru_cell *)md->m, x, h);
    case M_GRU: return tg_gru_forward((tg_gru *)md->m, x, h, hn);
    case M_ATTN: return tg_additive_attention_forward((tg_additive_attention *)md->m, h, x, md->mask);
    }
    return NULL;
}

START_TEST(test_module_golden)
{
    const mod_case *c = &MODS[_i];
    tg_generator g;
    tg_manual_seed(&g, c->seed);
    mod md = mod_build(c, &g);
    char what[160], key[160];

    /* torch's parameter names, order and bit-identical initial values */
    tg_tensor *np = golden_tensorf(G, "%s.nparams", c->name);
    ck_assert_msg(md.params->n == (int)np->data[0], "%s: %d params, torch has %g", c->name, md.params->n,
                  (double)np->data[0]);
    tg_free(np);
    for (int i = 0; i < md.params->n; i++) {
        snprintf(key, sizeof key, "%s.init.%d.%s", c->name, i, md.params->items[i].name);
        ck_assert_msg(golden_has(G, key), "%s: param %d is named '%s', not torch's", c->name, i,
                      md.params->items[i].name);
        tg_tensor *want = golden_tensor(G, key);
        assert_tensor_close(md.params->items[i].t, want, 0.0, 0.0, key);
        tg_free(want);
    }

    tg_tensor *x = tg_requires_grad(golden_tensorf(G, "%s.x", c->name), true);
    tg_tensor *h = c->has_h ? tg_requires_grad(golden_tensorf(G, "%s.h", c->name), true) : NULL;
    if (c->has_mask)
        md.mask = golden_tensorf(G, "%s.mask", c->name);
    tg_tensor *hn = NULL;
    tg_tensor *out = mod_forward(&md, x, h, &hn);
    tg_tensor *want = golden_tensorf(G, "%s.out", c->name);
    snprintf(what, sizeof what, "%s forward", c->name);
    assert_tensor_close(out, want, 1e-5, 1e-4, what);
    tg_free(want);

    /* the loss torch differentiated: sum(out * w) (+ sum(hn * wh) for GRU) */
    tg_tensor *w = golden_tensorf(G, "%s.w", c->name);
    tg_tensor *loss = tg_sum(tg_mul(out, w));
    if (c->kind == M_GRU) {
        want = golden_tensorf(G, "%s.hn", c->name);
        snprintf(what, sizeof what, "%s h_n", c->name);
        assert_tensor_close(hn, want, 1e-5, 1e-4, what);
        tg_free(want);
        tg_tensor *wh = golden_tensorf(G, "%s.wh", c->name);
        loss = tg_add(loss, tg_sum(tg_mul(hn, wh)));
        tg_backward(loss, NULL);
        tg_free(wh);
    } else {
        tg_backward(loss, NULL);
    }
    tg_free(w);
    if (c->kind == M_ATTN) {
        const tg_tensor *attn = tg_additive_attention_weights((tg_additive_attention *)md.m);
        ck_assert_ptr_nonnull(attn);
        want = golden_tensorf(G, "%s.attn", c->name);
        snprintf(what, sizeof what, "%s attn_weights", c->name);
        assert_tensor_close(attn, want, 1e-6, 1e-5, what);
        tg_free(want);
    }
    want = golden_tensorf(G, "%s.grad.x", c->name);
    snprintf(what, sizeof what, "%s grad of x", c->name);
    ck_assert_msg(x->grad != NULL, "%s: none", what);
    assert_close(x->grad, want, 1e-5, 1e-4, what);
    tg_free(want);
    if (h) {
        want = golden_tensorf(G, "%s.grad.h", c->name);
        snprintf(what, sizeof what, "%s grad of h", c->name);
        ck_assert_msg(h->grad != NULL, "%s: none", what);
        assert_close(h->grad, want, 1e-5, 1e-4, what);
        tg_free(want);
    }
    for (int i = 0; i < md.params->n; i++) {
        tg_tensor *p = md.params->items[i].t;
        want = golden_tensorf(G, "%s.grad.%d", c->name, i);
        snprintf(what, sizeof what, "%s grad of %s", c->name, md.params->items[i].name);
        ck_assert_msg(p->grad != NULL, "%s: no grad", what);
        assert_close(p->grad, want, 1e-5, 1e-4, what);
        tg_free(want);
    }
    tg_tape_reset(NULL);
    tg_free(x);
    tg_free(h);
    mod_free(&md);
}
END_TEST

typedef struct {
    mod *md;
    tg_tensor *x, *h;
} mod_gc_ctx;

/* The module's output (for GRU, h_n is out's last step, so out covers it). */
static tg_tensor *mod_gc_fn(tg_tensor **in, void *vctx)
{
    mod_gc_ctx *c = vctx;
    return mod_forward(c->md, c->x, c->h, NULL);
}

START_TEST(test_module_gradcheck)
{
    const mod_case *c = &MODS[_i];
    tg_generator g;
    tg_manual_seed(&g, c->seed);
    mod md = mod_build(c, &g);
    tg_tensor *x = tg_requires_grad(golden_tensorf(G, "%s.x", c->name), true);
    tg_tensor *h = c->has_h ? tg_requires_grad(golden_tensorf(G, "%s.h", c->name), true) : NULL;
    if (c->has_mask)
        md.mask = golden_tensorf(G, "%s.mask", c->name);
    mod_gc_ctx ctx = {&md, x, h};
    tg_tensor *inputs[TG_GRADCHECK_MAX_INPUTS];
    int n = 0;
    inputs[n++] = x;
    if (h)
        inputs[n++] = h;
    for (int i = 0; i < md.params->n; i++)
        inputs[n++] = md.params->items[i].t;
    tg_gradcheck_result r = tg_gradcheck(mod_gc_fn, &ctx, inputs, n, 1e-2, 2e-3, 2e-2);
    for (int k = 0; k < n; k++)
        ck_assert_msg(r.ok, "%s gradcheck: input %d max abs err %g (rel %g) at %d", c->name, k, r.max_abs_err[k],
                      r.max_rel_err[k], r.worst_index[k]);
    tg_tape_reset(NULL);
    tg_free(x);
    tg_free(h);
    mod_free(&md);
}
END_TEST

/* GRU over T steps equals T GRUCell steps with the same weights (an identity
 * between the two modules), h0 given. */
START_TEST(test_gru_equals_cells)
{
    tg_generator g;
    tg_manual_seed(&g, 77);
    tg_gru *gru = tg_gru_new(3, 5, &g);
    tg_manual_seed(&g, 77);
    tg_gru_cell *cell = tg_gru_cell_new(3, 5, &g);
    tg_tensor *x = tg_randn(&g, TG_SHAPE(2, 6, 3)), *h0 = tg_randn(&g, TG_SHAPE(1, 2, 5));
    tg_tensor *hn;
    tg_tensor *out = tg_gru_forward(gru, x, h0, &hn);
    tg_tensor *h = tg_reshape(h0, TG_SHAPE(2, 5));
    for (int t = 0; t < 6; t++) {
        h = tg_gru_cell_forward(cell, tg_select(x, 1, t), h);
        tg_tensor *o = tg_select(out, 1, t);
        ck_assert_mem_eq(o->data, h->data, (size_t)h->numel * sizeof(float));
    }
    ck_assert_mem_eq(hn->data, h->data, (size_t)h->numel * sizeof(float));
    tg_tape_reset(NULL);
    tg_free(x);
    tg_free(h0);
    tg_module_free(&gru->base);
    tg_module_free(&cell->base);
}
END_TEST

/* Padding: masked positions get weight exactly 0 and no gradient, and the
 * context equals attending over the unpadded prefix alone. */
START_TEST(test_attention_padding)
{
    tg_generator g;
    tg_manual_seed(&g, 5);
    tg_additive_attention *m = tg_additive_attention_new(4, 3, 6, &g);
    tg_tensor *q = tg_randn(&g, TG_SHAPE(2, 4));
    tg_tensor *v = tg_requires_grad(tg_randn(&g, TG_SHAPE(2, 5, 3)), true);
    const float mv[] = {0, 0, 0, 1, 1, 0, 0, 0, 0, 0};
    tg_tensor *mask = tg_from_array(TG_SHAPE(2, 5), mv);
    tg_tensor *ctx = tg_additive_attention_forward(m, q, v, mask);
    tg_tensor *seed = tg_ones(TG_SHAPE(2, 3));
    tg_backward(ctx, seed);
    const tg_tensor *a = tg_additive_attention_weights(m);
    ck_assert_int_eq(a->ndim, 2);
    ck_assert_int_eq(a->shape[1], 5);
    ck_assert_float_eq(a->data[3], 0.0f);
    ck_assert_float_eq(a->data[4], 0.0f);
    for (int j = 3 * 3; j < 5 * 3; j++)
        ck_assert_float_eq(v->grad[j], 0.0f);
    double s = 0.0;
    for (int j = 0; j < 5; j++)
        s += a->data[5 + j];
    ck_assert_msg(fabs(s - 1.0) < 1e-6, "row 1 sums to %g", s);
    /* row 0 against the first 3 positions alone */
    tg_tensor *q0 = tg_narrow(q, 0, 0, 1), *v0 = tg_narrow(tg_narrow(v, 0, 0, 1), 1, 0, 3);
    tg_tensor *ctx0 = tg_additive_attention_forward(m, q0, v0, NULL);
    for (int k = 0; k < 3; k++)
        ck_assert_msg(fabsf(ctx0->data[k] - ctx->data[k]) <= 1e-6f, "context %d: %g vs %g", k,
                      (double)ctx0->data[k], (double)ctx->data[k]);
    tg_tape_reset(NULL);
    tg_free(q);
    tg_free(v);
    tg_free(mask);
    tg_free(seed);
    tg_module_free(&m->base);
}
END_TEST

/* On the module interface: torch's nested names under a parent, the
 * single-input forward (zero initial state, as torch's cell(x) and gru(x))
 * equals the typed one with h = NULL, tape scopes carry the module path. */
START_TEST(test_module_interface)
{
    tg_generator g;
    tg_manual_seed(&g, 9);
    tg_module *root = tg_module_list_new();
    tg_gru *gru = tg_gru_new(3, 4, &g);
    tg_additive_attention *att = tg_additive_attention_new(4, 4, 5, &g);
    tg_module_append(root, &gru->base);
    tg_module_append(root, &att->base);
    const tg_params *p = tg_module_params(root);
    const char *names[] = {"0.weight_ih_l0", "0.weight_hh_l0", "0.bias_ih_l0", "0.bias_hh_l0",
                           "1.W_query.weight", "1.W_key.weight", "1.w_v.weight"};
    ck_assert_int_eq(p->n, 7);
    for (int i = 0; i < 7; i++) {
        ck_assert_str_eq(p->items[i].name, names[i]);
        ck_assert_str_eq(p->items[i].t->name, names[i]);
    }
    tg_tensor *x = tg_requires_grad(tg_randn(&g, TG_SHAPE(2, 3, 3)), true);
    tg_tensor *a = tg_module_forward(&gru->base, x);
    tg_tensor *b = tg_gru_forward(gru, x, NULL, NULL);
    ck_assert(tg_same_shape(a, b));
    ck_assert_mem_eq(a->data, b->data, (size_t)a->numel * sizeof(float));
    ck_assert_str_eq(tg_tape_current()->nodes[a->node].path, "0");
    tg_tensor *ctx = tg_additive_attention_forward(att, tg_select(a, 1, 2), a, NULL);
    ck_assert_str_eq(tg_tape_current()->nodes[ctx->node].path, "1");
    tg_module_train(root, false);
    ck_assert(!gru->base.training && !att->W_query->base.training);
    tg_tape_reset(NULL);
    tg_free(x);
    tg_module_free(root);
}
END_TEST

typedef struct {
    int which;
    tg_generator g;
    tg_rnn_cell *rnn;
    tg_gru_cell *cell;
    tg_gru *gru;
    tg_additive_attention *att;
} mod_misuse_ctx;

static void mod_misuse(void *vctx)
{
    mod_misuse_ctx *c = vctx;
    tg_tensor *x24 = tg_new_tensor(TG_SHAPE(2, 4)), *x23 = tg_new_tensor(TG_SHAPE(2, 3));
    tg_tensor *h25 = tg_new_tensor(TG_SHAPE(2, 5)), *h35 = tg_new_tensor(TG_SHAPE(3, 5));
    tg_tensor *s253 = tg_new_tensor(TG_SHAPE(2, 5, 3)), *s234 = tg_new_tensor(TG_SHAPE(2, 3, 4));
    switch (c->which) {
    case 0: tg_gru_cell_forward(c->cell, x24, NULL); break;
    case 1: tg_gru_cell_forward(c->cell, x23, h35); break;
    case 2: tg_rnn_cell_forward(c->rnn, x24, h25); break;
    case 3: tg_gru_forward(c->gru, x23, NULL, NULL); break;
    case 4: tg_gru_forward(c->gru, s234, NULL, NULL); break;
    case 5: tg_gru_forward(c->gru, s253, h25, NULL); break;
    case 6: tg_additive_attention_forward(c->att, h25, s253, NULL); break;
    case 7: tg_additive_attention_forward(c->att, x24, s234, NULL); break;
    case 8: tg_additive_attention_forward(c->att, x24, s253, h35); break;
    case 9: tg_gru_cell_new(0, 4, &c->g); break;
    case 10: tg_additive_attention_new(4, 3, 0, &c->g); break;
    case 11: tg_gru_forward(NULL, s253, NULL, NULL); break;
    case 12: tg_rnn_cell_forward(c->rnn, NULL, NULL); break;
    case 13: tg_module_forward(&c->att->base, x24); break;
    }
}

START_TEST(test_module_misuse)
{
    struct {
        const char *op, *needle;
    } want[] = {
        {"tg_gru_cell_forward", "expects input (B, input_size=3) or (input_size=3), got [2,4]"},
        {"tg_gru_cell_forward", "hidden state [3,5] does not fit input [2,3]"},
        {"tg_rnn_cell_forward", "expects input (B, input_size=3) or (input_size=3), got [2,4]"},
        {"tg_gru_forward", "expects input (B, T>=1, input_size=3) (batch_first=True only), got [2,3]"},
        {"tg_gru_forward", "input_size=3) (batch_first=True only), got [2,3,4]"},
        {"tg_gru_forward", "expects h0 (1, B=2, hidden_size=5) for input [2,5,3], got [2,5]"},
        {"tg_additive_attention_forward", "expects query (B=2, query_size=4) for values [2,5,3], got [2,5]"},
        {"tg_additive_attention_forward", "expects values (B, T>=1, key_size=3), got [2,3,4]"},
        {"tg_additive_attention_forward", "expects mask (B=2, T=5) for values [2,5,3], got [3,5]"},
        {"tg_gru_cell_new", "input_size=0"},
        {"tg_additive_attention_new", "attn_size=0"},
        {"tg_gru_forward", "module is NULL"},
        {"tg_rnn_cell_forward", "input is NULL"},
        {"tg_module_forward", "AdditiveAttention"},
    };
    mod_misuse_ctx c;
    memset(&c, 0, sizeof c);
    tg_manual_seed(&c.g, 1);
    c.rnn = tg_rnn_cell_new(3, 5, &c.g);
    c.cell = tg_gru_cell_new(3, 5, &c.g);
    c.gru = tg_gru_new(3, 5, &c.g);
    c.att = tg_additive_attention_new(4, 3, 6, &c.g);
    for (int i = 0; i < (int)(sizeof want / sizeof want[0]); i++) {
        char msg[256];
        c.which = i;
        ck_assert_msg(catch_error(mod_misuse, &c, msg, sizeof msg), "case %d raised no error", i);
        ck_assert_msg(strncmp(msg, want[i].op, strlen(want[i].op)) == 0, "case %d: '%s' does not name %s", i, msg,
                      want[i].op);
        ck_assert_msg(strstr(msg, want[i].needle) != NULL, "case %d: '%s' lacks '%s'", i, msg, want[i].needle);
        tg_tape_reset(NULL);
    }
    tg_module_free(&c.rnn->base);
    tg_module_free(&c.cell->base);
    tg_module_free(&c.gru->base);
    tg_module_free(&c.att->base);
}
END_TEST

static Suite *rnn_suite(void)
{
    Suite *s = suite_create("rnn");
    TCase *tc = tcase_create("ops");
    tcase_add_unchecked_fixture(tc, golden_setup, golden_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_op_golden, 0, N_OPS);
    tcase_add_loop_test(tc, test_op_gradcheck, 0, N_OPS);
    tcase_add_test(tc, test_sigmoid_edges);
    tcase_add_test(tc, test_select_stack_roundtrip);
    tcase_add_test(tc, test_op_misuse);
    suite_add_tcase(s, tc);

    tc = tcase_create("modules");
    tcase_add_unchecked_fixture(tc, golden_setup, golden_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_module_golden, 0, N_MODS);
    tcase_add_loop_test(tc, test_module_gradcheck, 0, N_MODS);
    tcase_add_test(tc, test_gru_equals_cells);
    tcase_add_test(tc, test_attention_padding);
    tcase_add_test(tc, test_module_misuse);
    tcase_add_test(tc, test_module_interface);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(rnn_suite()) ? 1 : 0; }

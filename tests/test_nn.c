/*
 * tests/test_nn.c — suite "nn": every module against PyTorch.
 *
 *   golden      forward, input grad and every parameter grad vs torch
 *               (tests/golden/gen_nn.py), plus bit-identical initial weights
 *               from the same seed and torch's parameter names and order
 *   gradcheck   finite differences for every module (dropout masks fixed by
 *               reseeding the generator before each evaluation)
 *   dropout     train-mode statistics, survivors x/(1-p), eval identity,
 *               p = 0 and p = 1, train switches reaching nested dropouts
 *   ch03        the values examples/ch03_attention.c prints, against the
 *               numbers printed in the book (4 decimals)
 *   counts      parameter counts equal torch's
 *   misuse      clear errors for bad configurations and inputs
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn.h"
#include "testutil.h"
#include "examples/book_inputs.h"

/* ---------------------------------------------------------------- module cases
 * Mirrors CASES in tests/golden/gen_nn.py. */

typedef enum { K_LINEAR, K_SOFTMAX, K_DROPOUT, K_EMBEDDING, K_LAYERNORM, K_GELU, K_FF, K_V1, K_V2, K_CAUSAL,
               K_WRAPPER, K_MHA } kind;

typedef struct {
    const char *name;
    uint64_t seed;
    kind kind;
    int a, b;          /* in/out, d_in/d_out, num/dim, emb_dim; softmax: a = dim */
    int ctx, heads;
    float p;
    bool bias;
} nn_case;

static const nn_case CASES[] = {
    {"linear_a", 1, K_LINEAR, 3, 2, 0, 0, 0, true},
    {"linear_b", 2, K_LINEAR, 5, 4, 0, 0, 0, false},
    {"linear_c", 3, K_LINEAR, 16, 8, 0, 0, 0, true},
    {"linear_d", 4, K_LINEAR, 7, 3, 0, 0, 0, true},
    {"softmax_a", 5, K_SOFTMAX, -1, 0, 0, 0, 0, false},
    {"softmax_b", 6, K_SOFTMAX, 0, 0, 0, 0, 0, false},
    {"dropout_a", 7, K_DROPOUT, 0, 0, 0, 0, 0.5f, false},
    {"dropout_b", 8, K_DROPOUT, 0, 0, 0, 0, 0.1f, false},
    {"embedding_a", 9, K_EMBEDDING, 10, 4, 0, 0, 0, false},
    {"embedding_b", 10, K_EMBEDDING, 3, 5, 0, 0, 0, false},
    {"embedding_c", 11, K_EMBEDDING, 50, 7, 0, 0, 0, false},
    {"layernorm_a", 12, K_LAYERNORM, 5, 0, 0, 0, 0, false},
    {"layernorm_b", 13, K_LAYERNORM, 8, 0, 0, 0, 0, false},
    {"gelu_a", 14, K_GELU, 0, 0, 0, 0, 0, false},
    {"gelu_b", 26, K_GELU, 0, 0, 0, 0, 0, false},
    {"feedforward_a", 15, K_FF, 4, 0, 0, 0, 0, false},
    {"feedforward_b", 16, K_FF, 8, 0, 0, 0, 0, false},
    {"sa_v1_a", 123, K_V1, 3, 2, 0, 0, 0, false},
    {"sa_v1_b", 17, K_V1, 4, 3, 0, 0, 0, false},
    {"sa_v2_a", 789, K_V2, 3, 2, 0, 0, 0, false},
    {"sa_v2_b", 18, K_V2, 4, 6, 0, 0, 0, true},
    {"causal_a", 123, K_CAUSAL, 3, 2, 6, 0, 0.0f, false},
    {"causal_b", 19, K_CAUSAL, 4, 3, 8, 0, 0.0f, true},
    {"causal_c", 20, K_CAUSAL, 4, 3, 6, 0, 0.5f, false},
    {"wrapper_a", 123, K_WRAPPER, 3, 2, 6, 2, 0.0f, false},
    {"wrapper_b", 21, K_WRAPPER, 4, 3, 5, 3, 0.0f, true},
    {"wrapper_c", 22, K_WRAPPER, 4, 2, 5, 2, 0.3f, false},
    {"mha_a", 123, K_MHA, 3, 2, 6, 2, 0.0f, false},
    {"mha_b", 23, K_MHA, 8, 8, 10, 4, 0.0f, true},
    {"mha_c", 24, K_MHA, 6, 6, 6, 3, 0.3f, false},
    {"mha_d", 25, K_MHA, 5, 4, 9, 1, 0.0f, false},
};
#define N_CASES ((int)(sizeof CASES / sizeof CASES[0]))

/* A module of any kind behind the one module interface, with its parameter list. */
typedef struct {
    kind kind;
    tg_module *m;
    const tg_params *params;   /* owned by m */
} mod;

static mod mod_build(const nn_case *c, tg_generator *g)
{
    mod md = {.kind = c->kind};
    switch (c->kind) {
    case K_LINEAR: md.m = &tg_linear_new(c->a, c->b, c->bias, g)->base; break;
    case K_SOFTMAX: md.m = &tg_softmax_mod_new(c->a)->base; break;
    case K_DROPOUT: md.m = &tg_dropout_mod_new(c->p, g)->base; break;
    case K_EMBEDDING: md.m = &tg_embedding_mod_new(c->a, c->b, g)->base; break;
    case K_LAYERNORM: md.m = &tg_layernorm_mod_new(c->a)->base; break;
    case K_GELU: md.m = &tg_gelu_mod_new()->base; break;
    case K_FF: md.m = &tg_feedforward_new(c->a, g)->base; break;
    case K_V1: md.m = &tg_self_attention_v1_new(c->a, c->b, g)->base; break;
    case K_V2: md.m = &tg_self_attention_v2_new(c->a, c->b, c->bias, g)->base; break;
    case K_CAUSAL: md.m = &tg_causal_attention_new(c->a, c->b, c->ctx, c->p, c->bias, g)->base; break;
    case K_WRAPPER: md.m = &tg_mha_wrapper_new(c->a, c->b, c->ctx, c->p, c->heads, c->bias, g)->base; break;
    case K_MHA: md.m = &tg_mha_new(c->a, c->b, c->ctx, c->p, c->heads, c->bias, g)->base; break;
    }
    md.params = tg_module_params(md.m);
    return md;
}

/* x is the input tensor, or for embeddings the ids (as floats). Every other
 * kind goes through the generic forward. */
static tg_tensor *mod_forward(mod *md, tg_tensor *x, const int32_t *ids)
{
    if (md->kind == K_EMBEDDING)
        return tg_embedding_mod_forward((tg_embedding_mod *)md->m, ids, x->ndim, x->shape);
    return tg_module_forward(md->m, x);
}

static void mod_free(mod *md) { tg_module_free(md->m); }

/* ---------------------------------------------------------------- golden forward/backward */

/* Opened once, before Check forks each test (an unchecked fixture). */
static golden_file *G;
static void golden_setup(void) { G = golden_open("nn"); }
static void golden_teardown(void)
{
    golden_close(G);
    G = NULL;
}

START_TEST(test_module_golden)
{
    const nn_case *c = &CASES[_i];
    golden_file *gf = G;
    tg_generator g;
    tg_manual_seed(&g, c->seed);
    mod md = mod_build(c, &g);
    char what[160];

    /* torch's parameter names, order and bit-identical initial values */
    tg_tensor *np = golden_tensorf(gf, "%s.nparams", c->name);
    ck_assert_msg(md.params->n == (int)np->data[0], "%s: %d params, torch has %g", c->name, md.params->n,
                  (double)np->data[0]);
    tg_free(np);
    for (int i = 0; i < md.params->n; i++) {
        char key[160];
        snprintf(key, sizeof key, "%s.init.%d.%s", c->name, i, md.params->items[i].name);
        ck_assert_msg(golden_has(gf, key), "%s: param %d is named '%s', not torch's", c->name, i,
                      md.params->items[i].name);
        tg_tensor *want = golden_tensor(gf, key);
        /* Bit-exact: uniform_ and normal_ reproduce torch's kernels. */
        assert_tensor_close(md.params->items[i].t, want, 0.0, 0.0, key);
        tg_free(want);
    }
    if (c->kind == K_LAYERNORM) { /* non-trivial scale/shift, as the golden set them */
        tg_layernorm_mod *ln = (tg_layernorm_mod *)md.m;
        tg_tensor *s = golden_tensorf(gf, "%s.set.scale", c->name), *h = golden_tensorf(gf, "%s.set.shift", c->name);
        tg_copy_data(ln->scale, s);
        tg_copy_data(ln->shift, h);
        tg_free(s);
        tg_free(h);
    }

    tg_tensor *x = golden_tensorf(gf, "%s.x", c->name);
    int32_t *ids = NULL;
    if (c->kind == K_EMBEDDING) {
        snprintf(what, sizeof what, "%s.x", c->name);
        ids = golden_ints(gf, what, NULL);
    } else {
        tg_requires_grad(x, true);
    }
    tg_tensor *out = mod_forward(&md, x, ids);
    tg_tensor *want = golden_tensorf(gf, "%s.out", c->name);
    snprintf(what, sizeof what, "%s forward", c->name);
    assert_tensor_close(out, want, 1e-5, 1e-4, what);
    tg_free(want);

    if (c->kind == K_MHA) { /* the kept attention weights, before dropout */
        const tg_tensor *attn = tg_mha_attn_weights((tg_mha *)md.m);
        ck_assert_ptr_nonnull(attn);
        want = golden_tensorf(gf, "%s.attn", c->name);
        snprintf(what, sizeof what, "%s attn_weights", c->name);
        assert_tensor_close(attn, want, 1e-5, 1e-4, what);
        tg_free(want);
    }

    tg_tensor *w = golden_tensorf(gf, "%s.w", c->name);
    tg_backward(out, w);
    tg_free(w);
    if (c->kind != K_EMBEDDING) {
        want = golden_tensorf(gf, "%s.grad.x", c->name);
        ck_assert_ptr_nonnull(x->grad);
        snprintf(what, sizeof what, "%s grad of x", c->name);
        assert_close(x->grad, want, 1e-5, 1e-4, what);
        tg_free(want);
    }
    for (int i = 0; i < md.params->n; i++) {
        tg_tensor *p = md.params->items[i].t;
        want = golden_tensorf(gf, "%s.grad.%d", c->name, i);
        snprintf(what, sizeof what, "%s grad of %s", c->name, md.params->items[i].name);
        ck_assert_msg(p->grad != NULL, "%s: no grad", what);
        assert_close(p->grad, want, 1e-5, 1e-4, what);
        tg_free(want);
    }
    tg_tape_reset(NULL);
    free(ids);
    tg_free(x);
    mod_free(&md);
}
END_TEST

/* ---------------------------------------------------------------- gradcheck */

typedef struct {
    mod *md;
    tg_generator *g;
    uint64_t reseed;     /* dropout: same mask at every evaluation */
    const int32_t *ids;  /* embeddings */
    tg_tensor *ids_shape;
} gc_ctx;

static tg_tensor *gc_forward(tg_tensor **in, void *vctx)
{
    gc_ctx *c = vctx;
    tg_manual_seed(c->g, c->reseed);
    if (c->md->kind == K_EMBEDDING)
        return mod_forward(c->md, c->ids_shape, c->ids);
    return mod_forward(c->md, in[0], NULL);
}

START_TEST(test_module_gradcheck)
{
    const nn_case *c = &CASES[_i];
    golden_file *gf = G;
    tg_generator g;
    tg_manual_seed(&g, c->seed);
    mod md = mod_build(c, &g);
    tg_tensor *x = golden_tensorf(gf, "%s.x", c->name);
    int32_t *ids = NULL;
    char key[160];
    if (c->kind == K_EMBEDDING) {
        snprintf(key, sizeof key, "%s.x", c->name);
        ids = golden_ints(gf, key, NULL);
    }
    gc_ctx ctx = {&md, &g, 4242, ids, x};
    if (c->kind == K_LAYERNORM) { /* move scale/shift off ones/zeros */
        tg_generator pg;
        tg_manual_seed(&pg, 7);
        for (int i = 0; i < md.params->n; i++)
            tg_normal_(md.params->items[i].t, 0.0f, 1.0f, &pg);
    }

    /* inputs: x first (unless embedding), then the parameters in groups that
     * fit tg_gradcheck's input limit; forward ignores all but in[0]. */
    tg_tensor *inputs[TG_GRADCHECK_MAX_INPUTS];
    const bool with_x = c->kind != K_EMBEDDING;
    if (with_x)
        tg_requires_grad(x, true);
    int next = 0;
    do {
        int n = 0;
        if (with_x)
            inputs[n++] = x;
        while (n < TG_GRADCHECK_MAX_INPUTS && next < md.params->n)
            inputs[n++] = md.params->items[next++].t;
        ck_assert_int_gt(n, 0);
        tg_gradcheck_result r = tg_gradcheck(gc_forward, &ctx, inputs, n, 1e-2, 2e-3, 2e-2);
        for (int k = 0; k < n; k++)
            ck_assert_msg(r.ok, "%s gradcheck: input %d max abs err %g (rel %g) at %d", c->name, k,
                          r.max_abs_err[k], r.max_rel_err[k], r.worst_index[k]);
    } while (next < md.params->n);

    tg_tape_reset(NULL);
    free(ids);
    tg_free(x);
    mod_free(&md);
}
END_TEST

/* ---------------------------------------------------------------- dropout */

START_TEST(test_dropout_statistics)
{
    const float ps[] = {0.1f, 0.5f, 0.8f};
    const int n = 40000;
    for (int k = 0; k < 3; k++) {
        const float p = ps[k];
        tg_generator g, xg;
        tg_manual_seed(&g, 100 + (uint64_t)k);
        tg_manual_seed(&xg, 200 + (uint64_t)k);
        tg_tensor *x = tg_uniform(&xg, 1.0f, 2.0f, TG_SHAPE(n));
        tg_requires_grad(x, true);
        tg_dropout_mod *d = tg_dropout_mod_new(p, &g);
        ck_assert(d->base.training); /* torch modules start in train mode */
        tg_tensor *y = tg_dropout_mod_forward(d, x);
        tg_tensor *seed = tg_ones(TG_SHAPE(n));
        tg_backward(y, seed);
        int zeros = 0;
        const double scale = 1.0 / (1.0 - (double)p);
        for (int i = 0; i < n; i++) {
            if (y->data[i] == 0.0f) {
                zeros++;
                ck_assert_msg(x->grad[i] == 0.0f, "p=%g: dropped element %d has grad %g", p, i, x->grad[i]);
                continue;
            }
            /* survivors are x / (1-p), up to float rounding (one ulp) */
            const double want = (double)x->data[i] * scale;
            ck_assert_msg(fabs(y->data[i] - want) <= 1.2e-7 * fabs(want), "p=%g: survivor %d is %.9g, not %.9g", p,
                          i, y->data[i], want);
            ck_assert_msg(fabs(x->grad[i] - scale) <= 1.2e-7 * scale, "p=%g: survivor grad %g", p, x->grad[i]);
        }
        /* zeroed fraction ~ p: binomial std sqrt(p(1-p)/n), allow 5 of them */
        const double frac = (double)zeros / n, tol = 5.0 * sqrt((double)p * (1.0 - p) / n);
        ck_assert_msg(fabs(frac - p) <= tol, "p=%g: zeroed fraction %g (tolerance %g)", p, frac, tol);
        tg_tape_reset(NULL);
        tg_free(seed);
        tg_free(x);
        tg_module_free(&d->base);
    }
}
END_TEST

START_TEST(test_dropout_eval_and_edges)
{
    tg_generator g, g0;
    tg_manual_seed(&g, 5);
    g0 = g;
    tg_tensor *x = tg_uniform(&g0, -1.0f, 1.0f, TG_SHAPE(8, 9));
    tg_manual_seed(&g0, 5);
    tg_requires_grad(x, true);

    /* eval mode: the identity, no draws */
    tg_dropout_mod *d = tg_dropout_mod_new(0.5f, &g);
    tg_module_train(&d->base, false);
    tg_tensor *y = tg_dropout_mod_forward(d, x);
    ck_assert_int_eq(memcmp(y->data, x->data, (size_t)x->numel * sizeof(float)), 0);
    ck_assert_uint_eq(tg_random_u32(&g), tg_random_u32(&g0));
    tg_module_free(&d->base);

    /* p = 0 in train mode: the identity, no draws (torch returns the input) */
    d = tg_dropout_mod_new(0.0f, &g);
    y = tg_dropout_mod_forward(d, x);
    ck_assert_int_eq(memcmp(y->data, x->data, (size_t)x->numel * sizeof(float)), 0);
    ck_assert_uint_eq(tg_random_u32(&g), tg_random_u32(&g0));
    tg_module_free(&d->base);

    /* p = 1 in train mode: zeros, zero grads, no draws */
    d = tg_dropout_mod_new(1.0f, &g);
    y = tg_dropout_mod_forward(d, x);
    for (int64_t i = 0; i < y->numel; i++)
        ck_assert(y->data[i] == 0.0f);
    tg_tensor *seed = tg_ones(TG_SHAPE(8, 9));
    tg_backward(y, seed);
    for (int64_t i = 0; i < x->numel; i++)
        ck_assert(x->grad == NULL || x->grad[i] == 0.0f);
    ck_assert_uint_eq(tg_random_u32(&g), tg_random_u32(&g0));
    tg_module_free(&d->base);

    /* p = 1 multiplies by zero, as torch's `input * zeros`: torch 1.13 gives
     * F.dropout(tensor([1., inf, nan]), 1.0) = [0., nan, nan] */
    {
        tg_tape_reset(NULL);
        tg_tensor *w = tg_from_array(TG_SHAPE(3), (float[]){1.0f, INFINITY, NAN});
        tg_tensor *z = tg_dropout(w, 1.0f, true, &g);
        ck_assert(z->data[0] == 0.0f && !signbit(z->data[0]));
        ck_assert(isnan(z->data[1]) && isnan(z->data[2]));
        ck_assert_uint_eq(tg_random_u32(&g), tg_random_u32(&g0));
        tg_free(w);
    }

    tg_tape_reset(NULL);
    tg_free(seed);
    tg_free(x);
}
END_TEST

/* Output of a module with dropout p in eval mode == the same seed's module
 * with p = 0 (dropout draws nothing at construction); in train mode with p
 * > 0 it differs. Checks that _train reaches every nested dropout. */
static void check_train_switch(kind k)
{
    nn_case c = {"switch", 31, k, 4, 4, 6, 2, 0.5f, true};
    nn_case c0 = c;
    c0.p = 0.0f;
    tg_generator g, g0, xg;
    tg_manual_seed(&g, 31);
    tg_manual_seed(&g0, 31);
    tg_manual_seed(&xg, 32);
    mod md = mod_build(&c, &g), md0 = mod_build(&c0, &g0);
    tg_tensor *x = tg_randn(&xg, TG_SHAPE(2, 6, 4));

    tg_tensor *ref = mod_forward(&md0, x, NULL);
    tg_tensor *train = mod_forward(&md, x, NULL);
    ck_assert_int_ne(memcmp(train->data, ref->data, (size_t)ref->numel * sizeof(float)), 0);

    switch (k) {
    case K_CAUSAL: {
        tg_causal_attention *m = (tg_causal_attention *)md.m;
        tg_module_train(md.m, false);
        ck_assert(!m->base.training && !m->dropout->base.training);
        break;
    }
    case K_WRAPPER: {
        tg_mha_wrapper *m = (tg_mha_wrapper *)md.m;
        tg_module_train(md.m, false);
        for (int h = 0; h < m->num_heads; h++) {
            tg_causal_attention *head = tg_module_as(tg_module_child_at(m->heads, h), &tg_causal_attention_type);
            ck_assert(head && !head->base.training && !head->dropout->base.training);
        }
        break;
    }
    case K_MHA: {
        tg_mha *m = (tg_mha *)md.m;
        tg_module_train(md.m, false);
        ck_assert(!m->base.training && !m->dropout->base.training);
        break;
    }
    default: ck_abort();
    }
    tg_tensor *eval = mod_forward(&md, x, NULL);
    ck_assert_int_eq(memcmp(eval->data, ref->data, (size_t)ref->numel * sizeof(float)), 0);

    tg_tape_reset(NULL);
    tg_free(x);
    mod_free(&md);
    mod_free(&md0);
}

START_TEST(test_train_switch_causal) { check_train_switch(K_CAUSAL); }
END_TEST
START_TEST(test_train_switch_wrapper) { check_train_switch(K_WRAPPER); }
END_TEST
START_TEST(test_train_switch_mha) { check_train_switch(K_MHA); }
END_TEST

/* ---------------------------------------------------------------- MultiHeadAttention extras */

START_TEST(test_mha_attn_weights_kept)
{
    tg_generator g, xg;
    tg_manual_seed(&g, 3);
    tg_manual_seed(&xg, 4);
    tg_mha *m = tg_mha_new(4, 6, 8, 0.0f, 3, false, &g);
    ck_assert_ptr_null(tg_mha_attn_weights(m));
    const int Ts[] = {8, 3, 5, 8};
    for (int k = 0; k < 4; k++) {
        const int T = Ts[k];
        tg_tensor *x = tg_randn(&xg, TG_SHAPE(2, T, 4));
        tg_mha_forward(m, x);
        tg_tape_reset(NULL); /* the copy outlives the tape */
        const tg_tensor *a = tg_mha_attn_weights(m);
        ck_assert_int_eq(a->ndim, 4);
        ck_assert_int_eq(a->shape[0], 2);
        ck_assert_int_eq(a->shape[1], 3);
        ck_assert_int_eq(a->shape[2], T);
        ck_assert_int_eq(a->shape[3], T);
        for (int r = 0; r < 2 * 3 * T; r++) { /* rows: causal, sum to 1 */
            const float *row = a->data + (size_t)r * T;
            const int i = r % T;
            double s = 0.0;
            for (int j = 0; j < T; j++) {
                if (j > i)
                    ck_assert_msg(row[j] == 0.0f, "future weight [%d,%d] = %g", i, j, row[j]);
                s += row[j];
            }
            ck_assert_msg(fabs(s - 1.0) < 1e-5, "row %d sums to %g", r, s);
        }
        tg_free(x);
    }
    tg_module_free(&m->base);
}
END_TEST

/* The MHA forward reads like the book; with one head and no out_proj
 * effect it must agree with CausalAttention: check head split/merge by
 * comparing MHA(H heads) against H CausalAttention heads that carry the
 * same weight slices, followed by out_proj. */
START_TEST(test_mha_equals_heads)
{
    const int d_in = 5, d_out = 6, H = 3, hd = 2, T = 4, ctx = 7;
    tg_generator g, xg;
    tg_manual_seed(&g, 11);
    tg_manual_seed(&xg, 12);
    tg_mha *m = tg_mha_new(d_in, d_out, ctx, 0.0f, H, true, &g);
    tg_tensor *x = tg_randn(&xg, TG_SHAPE(2, T, d_in));
    tg_tensor *y = tg_mha_forward(m, x);

    tg_tensor *outs[3];
    tg_causal_attention *heads[3];
    for (int h = 0; h < H; h++) {
        heads[h] = tg_causal_attention_new(d_in, hd, ctx, 0.0f, true, &g);
        tg_linear *src[3] = {m->W_query, m->W_key, m->W_value};
        tg_linear *dst[3] = {heads[h]->W_query, heads[h]->W_key, heads[h]->W_value};
        for (int k = 0; k < 3; k++) {
            memcpy(dst[k]->weight->data, src[k]->weight->data + (size_t)h * hd * d_in, sizeof(float) * hd * d_in);
            memcpy(dst[k]->bias->data, src[k]->bias->data + (size_t)h * hd, sizeof(float) * hd);
        }
        outs[h] = tg_causal_attention_forward(heads[h], x);
    }
    tg_tensor *y2 = tg_linear_forward(m->out_proj, tg_concat(outs, H, -1));
    assert_tensor_close(y, y2, 1e-6, 1e-5, "MHA vs concatenated CausalAttention heads");
    tg_tape_reset(NULL);
    for (int h = 0; h < H; h++)
        tg_module_free(&heads[h]->base);
    tg_free(x);
    tg_module_free(&m->base);
}
END_TEST

/* ---------------------------------------------------------------- parameter counts */

START_TEST(test_param_counts)
{
    golden_file *gf = G;
    tg_generator g;
    tg_manual_seed(&g, 0);
    struct {
        const char *name;
        nn_case c;
    } cfg[] = {
        {"mha_gpt2", {"", 0, K_MHA, 768, 768, 1024, 12, 0.0f, false}},
        {"mha_gpt2_bias", {"", 0, K_MHA, 768, 768, 1024, 12, 0.0f, true}},
        {"mha_small", {"", 0, K_MHA, 3, 2, 6, 2, 0.0f, false}},
        {"wrapper_small", {"", 0, K_WRAPPER, 3, 2, 6, 2, 0.0f, false}},
        {"wrapper_bias", {"", 0, K_WRAPPER, 16, 8, 32, 4, 0.0f, true}},
        {"causal_small", {"", 0, K_CAUSAL, 3, 2, 6, 0, 0.0f, false}},
        {"feedforward_768", {"", 0, K_FF, 768, 0, 0, 0, 0.0f, false}},
        {"layernorm_768", {"", 0, K_LAYERNORM, 768, 0, 0, 0, 0.0f, false}},
        {"embedding_256x64", {"", 0, K_EMBEDDING, 256, 64, 0, 0, 0.0f, false}},
        {"linear_768x3072", {"", 0, K_LINEAR, 768, 3072, 0, 0, 0.0f, true}},
        {"sa_v1_small", {"", 0, K_V1, 3, 2, 0, 0, 0.0f, false}},
        {"sa_v2_bias", {"", 0, K_V2, 10, 6, 0, 0, 0.0f, true}},
    };
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        mod md = mod_build(&cfg[i].c, &g);
        tg_tensor *want = golden_tensorf(gf, "count.%s", cfg[i].name);
        ck_assert_msg(tg_params_numel(md.params) == (int64_t)want->data[0], "%s: %lld parameters, torch has %.0f",
                      cfg[i].name, (long long)tg_params_numel(md.params), (double)want->data[0]);
        if (i == 0) /* the book's number for GPT-2 small's attention */
            ck_assert_int_eq(tg_params_numel(md.params), 2360064);
        tg_free(want);
        mod_free(&md);
    }
}
END_TEST

/* A container type of the test's own (no forward): the module interface
 * takes user types as it takes built-in ones. */
static const tg_module_type test_container_type = {"TestContainer", NULL, NULL};

START_TEST(test_nested_param_names)
{
    tg_generator g;
    tg_manual_seed(&g, 0);
    /* root.trf_blocks (ModuleList).0 (TestContainer).{att, ff, norm1} */
    tg_module *root = tg_module_new(sizeof(tg_module), &test_container_type);
    tg_module *blocks = tg_module_add_child(root, "trf_blocks", tg_module_list_new());
    tg_module *blk = tg_module_new(sizeof(tg_module), &test_container_type);
    tg_mha *m = tg_mha_new(4, 4, 5, 0.0f, 2, true, &g);
    tg_module_add_child(blk, "att", &m->base);
    /* children registered before their parent joins the tree get renamed with it */
    tg_module_append(blocks, blk);
    tg_module_add_child(blk, "ff", &tg_feedforward_new(4, &g)->base);
    tg_module_add_child(blk, "norm1", &tg_layernorm_mod_new(4)->base);
    const char *want[] = {
        "trf_blocks.0.att.W_query.weight", "trf_blocks.0.att.W_query.bias", "trf_blocks.0.att.W_key.weight",
        "trf_blocks.0.att.W_key.bias", "trf_blocks.0.att.W_value.weight", "trf_blocks.0.att.W_value.bias",
        "trf_blocks.0.att.out_proj.weight", "trf_blocks.0.att.out_proj.bias", "trf_blocks.0.ff.layers.0.weight",
        "trf_blocks.0.ff.layers.0.bias", "trf_blocks.0.ff.layers.2.weight", "trf_blocks.0.ff.layers.2.bias",
        "trf_blocks.0.norm1.scale", "trf_blocks.0.norm1.shift",
    };
    const int n = (int)(sizeof want / sizeof want[0]);
    const tg_params *p = tg_module_params(root);
    ck_assert_int_eq(p->n, n);
    for (int i = 0; i < p->n; i++) {
        ck_assert_str_eq(p->items[i].name, want[i]);
        ck_assert_str_eq(p->items[i].t->name, want[i]); /* the tensor carries its full name */
        ck_assert(p->items[i].t->requires_grad);
    }
    ck_assert_ptr_eq(tg_params_find(p, "trf_blocks.0.att.out_proj.bias"), m->out_proj->bias);
    /* a subtree lists its parameters relative to itself, as torch's block.named_parameters() */
    const tg_params *pb = tg_module_params(blk);
    ck_assert_int_eq(pb->n, n);
    ck_assert_str_eq(pb->items[0].name, "att.W_query.weight");
    ck_assert_str_eq(pb->items[0].t->name, "trf_blocks.0.att.W_query.weight");
    /* buffers are named but are not parameters */
    ck_assert_str_eq(m->mask->name, "trf_blocks.0.att.mask");
    ck_assert(!m->mask->requires_grad);
    /* paths and lookups */
    ck_assert_str_eq(m->W_key->base.path, "trf_blocks.0.att.W_key");
    ck_assert_ptr_eq(tg_module_get(root, "trf_blocks.0.att.W_key"), &m->W_key->base);
    ck_assert_ptr_eq(tg_module_get(root, ""), root);
    ck_assert_ptr_null(tg_module_get(root, "trf_blocks.0.att.W_nope"));
    ck_assert_ptr_null(tg_module_get(root, "trf_blocks.0."));
    ck_assert_ptr_null(tg_module_get(root, "trf_blocks.1"));
    ck_assert_ptr_eq(tg_module_as(tg_module_get(root, "trf_blocks.0.ff.layers.1"), &tg_gelu_type),
                     tg_module_get(root, "trf_blocks.0.ff.layers.1"));
    ck_assert_ptr_null(tg_module_as(tg_module_get(root, "trf_blocks.0.ff.layers.1"), &tg_linear_type));
    /* train/eval reaches every descendant */
    tg_module_train(root, false);
    ck_assert(!m->dropout->base.training && !tg_module_get(root, "trf_blocks.0.ff.layers.2")->training);
    tg_module_train(root, true);
    ck_assert(m->dropout->base.training && blk->training);
    tg_module_free(root); /* frees the whole tree: valgrind/asan see no leak */
}
END_TEST

/* ---------------------------------------------------------------- misuse */

typedef struct {
    int which;
    tg_generator g;
    tg_mha *mha;
    tg_causal_attention *ca;
    tg_linear *lin;
    tg_mha_wrapper *wr;
    tg_tensor *x;
} misuse_ctx;

/* Every module and input is built by the test before the call, so nothing
 * leaks when tg_error longjmps out. */
static void misuse(void *vctx)
{
    misuse_ctx *c = vctx;
    switch (c->which) {
    case 0: tg_mha_new(4, 6, 5, 0.0f, 4, false, &c->g); break;
    case 1: case 2: case 3: tg_mha_forward(c->mha, c->x); break;
    case 4: tg_causal_attention_forward(c->ca, c->x); break;
    case 5: tg_linear_forward(c->lin, c->x); break;
    case 6: tg_dropout_mod_new(1.5f, &c->g); break;
    case 7: tg_mha_wrapper_new(3, 2, 4, 0.0f, 0, false, &c->g); break;
    /* bad configurations are caught before anything is allocated: nothing
     * leaks when the error handler longjmps (checked by make valgrind/asan) */
    case 8: tg_causal_attention_new(3, 2, 4, 2.0f, false, &c->g); break;
    case 9: tg_mha_new(3, 4, 4, -1.0f, 2, false, &c->g); break;
    case 10: tg_mha_wrapper_new(0, 2, 4, 0.0f, 2, false, &c->g); break;
    case 11: tg_mha_wrapper_new(3, 2, 0, 0.0f, 2, false, &c->g); break;
    case 12: tg_mha_wrapper_new(3, 2, 4, 1.5f, 2, false, &c->g); break;
    case 13: tg_feedforward_new(1 << 30, &c->g); break;
    /* NULL modules and inputs */
    case 14: tg_linear_forward(NULL, c->x); break;
    case 15: tg_linear_forward(c->lin, NULL); break;
    case 16: tg_mha_forward(c->mha, NULL); break;
    case 17: tg_mha_forward(NULL, c->x); break;
    case 18: tg_causal_attention_forward(NULL, c->x); break;
    case 19: tg_causal_attention_forward(c->ca, NULL); break;
    case 20: tg_mha_wrapper_forward(c->wr, NULL); break;
    case 21: tg_mha_wrapper_forward(c->wr, c->x); break;
    case 22: tg_self_attention_v1_forward(NULL, c->x); break;
    case 23: tg_self_attention_v2_forward(NULL, c->x); break;
    case 24: tg_layernorm_mod_forward(NULL, c->x); break;
    case 25: tg_feedforward_forward(NULL, c->x); break;
    case 26: tg_gelu_mod_forward(NULL, c->x); break;
    case 27: tg_softmax_mod_forward(NULL, c->x); break;
    case 28: tg_dropout_mod_forward(NULL, c->x); break;
    case 29: tg_embedding_mod_forward(NULL, (const int32_t[]){0}, TG_SHAPE(1)); break;
    /* the module interface */
    case 30: tg_module_params(NULL); break;
    case 31: tg_module_replace(&c->mha->base, "W_query", &c->lin->base); break;
    case 32: tg_module_train(NULL, false); break;
    case 33: tg_module_free(&c->mha->W_query->base); break;
    case 34: tg_module_add_child(&c->mha->base, "W_key", &c->lin->base); break;
    case 35: tg_module_replace(&c->mha->base, "W_value.nope", &c->lin->base); break;
    case 36: tg_module_add_param(&c->lin->base, "a.b", c->x); break;
    case 37: tg_module_replace(&c->wr->base, "heads.1", &c->mha->W_query->base); break;
    case 38: tg_module_add_param(&c->mha->base, "tied", c->mha->W_key->weight); break;
    }
}

START_TEST(test_misuse_errors)
{
    struct {
        const char *op, *needle;
        int ndim, shape[3];
    } want[] = {
        {"tg_mha_new", "d_out=6 must be divisible by num_heads=4", 0, {0}},
        {"tg_mha_forward", "has 6 tokens, more than context_length=5", 3, {1, 6, 3}},
        {"tg_mha_forward", "expects input (batch, num_tokens, d_in=3), got [1,5,4]", 3, {1, 5, 4}},
        {"tg_mha_forward", "got [5,3]", 2, {5, 3}},
        {"tg_causal_attention_forward", "context_length=4", 3, {2, 5, 3}},
        {"tg_linear_forward", "in_features=3), got [4,2]", 2, {4, 2}},
        {"tg_dropout_mod_new", "between 0 and 1", 0, {0}},
        {"tg_mha_wrapper_new", "num_heads=0", 0, {0}},
        {"tg_causal_attention_new", "between 0 and 1, but got 2", 0, {0}},
        {"tg_mha_new", "between 0 and 1, but got -1", 0, {0}},
        {"tg_mha_wrapper_new", "d_in=0", 0, {0}},
        {"tg_mha_wrapper_new", "context_length=0", 0, {0}},
        {"tg_mha_wrapper_new", "between 0 and 1, but got 1.5", 0, {0}},
        {"tg_feedforward_new", "emb_dim=1073741824", 0, {0}},
        {"tg_linear_forward", "module is NULL", 2, {4, 3}},
        {"tg_linear_forward", "input is NULL", 0, {0}},
        {"tg_mha_forward", "input is NULL", 0, {0}},
        {"tg_mha_forward", "module is NULL", 3, {1, 2, 3}},
        {"tg_causal_attention_forward", "module is NULL", 3, {1, 2, 3}},
        {"tg_causal_attention_forward", "input is NULL", 0, {0}},
        {"tg_mha_wrapper_forward", "input is NULL", 0, {0}},
        {"tg_mha_wrapper_forward", "expects input (batch, num_tokens, d_in=3), got [2,3]", 2, {2, 3}},
        {"tg_self_attention_v1_forward", "module is NULL", 2, {2, 3}},
        {"tg_self_attention_v2_forward", "module is NULL", 2, {2, 3}},
        {"tg_layernorm_mod_forward", "module is NULL", 2, {2, 3}},
        {"tg_feedforward_forward", "module is NULL", 2, {2, 3}},
        {"tg_gelu_mod_forward", "module is NULL", 2, {2, 3}},
        {"tg_softmax_mod_forward", "module is NULL", 2, {2, 3}},
        {"tg_dropout_mod_forward", "module is NULL", 2, {2, 3}},
        {"tg_embedding_mod_forward", "module is NULL", 0, {0}},
        {"tg_module_params", "module is NULL", 0, {0}},
        {"tg_module_replace", "\"W_query\" (Linear 'W_query') is a fixed child of MultiHeadAttention (a root), not a slot", 0, {0}},
        {"tg_module_train", "module is NULL", 0, {0}},
        {"tg_module_free", "Linear 'W_query' belongs to its parent", 0, {0}},
        {"tg_module_add_child", "MultiHeadAttention (a root) already has a child named \"W_key\"", 0, {0}},
        {"tg_module_replace", "has no child at \"W_value.nope\"", 0, {0}},
        {"tg_module_add_param", "name \"a.b\" for Linear (a root) must be non-empty and contain no '.'", 1, {2}},
        {"tg_module_replace", "Linear 'W_query' already has a parent", 0, {0}},
        {"tg_module_add_param", "the tensor for \"tied\" is already registered as \"W_key.weight\"", 0, {0}},
    };
    misuse_ctx c;
    memset(&c, 0, sizeof c);
    tg_manual_seed(&c.g, 1);
    c.mha = tg_mha_new(3, 4, 5, 0.0f, 2, false, &c.g);
    c.ca = tg_causal_attention_new(3, 2, 4, 0.0f, false, &c.g);
    c.lin = tg_linear_new(3, 2, true, &c.g);
    c.wr = tg_mha_wrapper_new(3, 2, 4, 0.0f, 2, false, &c.g);
    for (int i = 0; i < (int)(sizeof want / sizeof want[0]); i++) {
        char msg[256];
        c.which = i;
        c.x = want[i].ndim ? tg_zeros(want[i].ndim, want[i].shape) : NULL;
        const bool raised = catch_error(misuse, &c, msg, sizeof msg);
        tg_free(c.x);
        ck_assert_msg(raised, "case %d raised no error", i);
        ck_assert_msg(strncmp(msg, want[i].op, strlen(want[i].op)) == 0, "case %d: '%s' does not name %s", i, msg,
                      want[i].op);
        ck_assert_msg(strstr(msg, want[i].needle) != NULL, "case %d: '%s' lacks '%s'", i, msg, want[i].needle);
    }
    tg_tape_reset(NULL);
    tg_module_free(&c.mha->base);
    tg_module_free(&c.ca->base);
    tg_module_free(&c.lin->base);
    tg_module_free(&c.wr->base);
}
END_TEST

/* ---------------------------------------------------------------- chapter 3, against the book
 * The same computations as examples/ch03_attention.c; every expected value
 * is a number printed in the book (4 decimals), so |got - book| <= 5e-5. */


static void assert_book(const tg_tensor *got, const float *book, int64_t n, const char *what)
{
    ck_assert_msg(got->numel == n, "%s: %lld values, the book prints %lld", what, (long long)got->numel,
                  (long long)n);
    for (int64_t i = 0; i < n; i++) {
        const float v = got->data[i], b = book[i];
        const bool ok = isinf(b) ? v == b : fabsf(v - b) <= 5e-5f + 1e-6f;
        ck_assert_msg(ok, "%s[%lld] = %.6f, the book prints %.4f", what, (long long)i, v, b);
    }
}
#define ASSERT_BOOK(t, ...)                                                                             \
    do {                                                                                                \
        const float book_[] = {__VA_ARGS__};                                                            \
        assert_book((t), book_, (int64_t)(sizeof book_ / sizeof book_[0]), #t);                         \
    } while (0)

START_TEST(test_ch03_simple_attention)
{
    /* 3.3.1: attention for the query x(2), no trainable weights */
    tg_tensor *inputs = tg_from_array(TG_SHAPE(6, 3), BOOK_INPUTS);
    tg_tensor *query = tg_from_array(TG_SHAPE(3, 1), BOOK_INPUTS + 3);
    tg_tensor *attn_scores_2 = tg_view(tg_matmul(inputs, query), TG_SHAPE(6));
    ASSERT_BOOK(attn_scores_2, 0.9544f, 1.4950f, 1.4754f, 0.8434f, 0.7070f, 1.0865f);
    tg_tensor *attn_weights_2_tmp = tg_div(attn_scores_2, tg_sum(attn_scores_2));
    ASSERT_BOOK(attn_weights_2_tmp, 0.1455f, 0.2278f, 0.2249f, 0.1285f, 0.1077f, 0.1656f);
    ASSERT_BOOK(tg_sum(attn_weights_2_tmp), 1.0f);
    /* softmax_naive(x) = exp(x) / exp(x).sum(dim=0) */
    tg_tensor *e = tg_exp(attn_scores_2);
    tg_tensor *attn_weights_2_naive = tg_div(e, tg_sum_dim(e, 0, false));
    ASSERT_BOOK(attn_weights_2_naive, 0.1385f, 0.2379f, 0.2333f, 0.1240f, 0.1082f, 0.1581f);
    ASSERT_BOOK(tg_sum(attn_weights_2_naive), 1.0f);
    tg_tensor *attn_weights_2 = tg_softmax(attn_scores_2, 0);
    ASSERT_BOOK(attn_weights_2, 0.1385f, 0.2379f, 0.2333f, 0.1240f, 0.1082f, 0.1581f);
    ASSERT_BOOK(tg_sum(attn_weights_2), 1.0f);
    tg_tensor *context_vec_2 = tg_view(tg_matmul(tg_view(attn_weights_2, TG_SHAPE(1, 6)), inputs), TG_SHAPE(3));
    ASSERT_BOOK(context_vec_2, 0.4419f, 0.6515f, 0.5683f);
    char buf[128];
    tg_snprint(buf, sizeof buf, context_vec_2);
    ck_assert_str_eq(buf, "tensor([0.4419, 0.6515, 0.5683])");

    /* 3.3.2: all tokens */
    tg_tensor *attn_scores = tg_matmul(inputs, tg_transpose(inputs, 0, 1));
    ASSERT_BOOK(attn_scores,
                0.9995f, 0.9544f, 0.9422f, 0.4753f, 0.4576f, 0.6310f, 0.9544f, 1.4950f, 1.4754f, 0.8434f, 0.7070f,
                1.0865f, 0.9422f, 1.4754f, 1.4570f, 0.8296f, 0.7154f, 1.0605f, 0.4753f, 0.8434f, 0.8296f, 0.4937f,
                0.3474f, 0.6565f, 0.4576f, 0.7070f, 0.7154f, 0.3474f, 0.6654f, 0.2935f, 0.6310f, 1.0865f, 1.0605f,
                0.6565f, 0.2935f, 0.9450f);
    tg_tensor *attn_weights = tg_softmax(attn_scores, -1);
    ASSERT_BOOK(attn_weights,
                0.2098f, 0.2006f, 0.1981f, 0.1242f, 0.1220f, 0.1452f, 0.1385f, 0.2379f, 0.2333f, 0.1240f, 0.1082f,
                0.1581f, 0.1390f, 0.2369f, 0.2326f, 0.1242f, 0.1108f, 0.1565f, 0.1435f, 0.2074f, 0.2046f, 0.1462f,
                0.1263f, 0.1720f, 0.1526f, 0.1958f, 0.1975f, 0.1367f, 0.1879f, 0.1295f, 0.1385f, 0.2184f, 0.2128f,
                0.1420f, 0.0988f, 0.1896f);
    tg_tensor *row_sums = tg_sum_dim(attn_weights, -1, false);
    ASSERT_BOOK(row_sums, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f);
    tg_tensor *all_context_vecs = tg_matmul(attn_weights, inputs);
    ASSERT_BOOK(all_context_vecs,
                0.4421f, 0.5931f, 0.5790f, 0.4419f, 0.6515f, 0.5683f, 0.4431f, 0.6496f, 0.5671f, 0.4304f, 0.6298f,
                0.5510f, 0.4671f, 0.5910f, 0.5266f, 0.4177f, 0.6503f, 0.5645f);
    tg_tape_reset(NULL);
    tg_free(query);
    tg_free(inputs);
}
END_TEST

START_TEST(test_ch03_trainable_weights)
{
    tg_tensor *inputs = tg_from_array(TG_SHAPE(6, 3), BOOK_INPUTS);
    tg_tensor *x_2 = tg_from_array(TG_SHAPE(1, 3), BOOK_INPUTS + 3);
    tg_generator g;

    /* 3.4.1, torch.manual_seed(123); three torch.rand(3, 2) */
    tg_manual_seed(&g, 123);
    tg_tensor *W_query = tg_rand(&g, TG_SHAPE(3, 2));
    tg_tensor *W_key = tg_rand(&g, TG_SHAPE(3, 2));
    tg_tensor *W_value = tg_rand(&g, TG_SHAPE(3, 2));
    tg_tensor *query_2 = tg_matmul(x_2, W_query);                    /* (1, 2) */
    ASSERT_BOOK(query_2, 0.4306f, 1.4551f);
    tg_tensor *keys = tg_matmul(inputs, W_key);                      /* (6, 2) */
    tg_tensor *values = tg_matmul(inputs, W_value);
    tg_tensor *attn_scores_2 = tg_matmul(query_2, tg_transpose(keys, 0, 1)); /* (1, 6) */
    tg_tensor *attn_score_22 = tg_scalar(attn_scores_2->data[1]);
    ASSERT_BOOK(attn_score_22, 1.8524f);
    ASSERT_BOOK(attn_scores_2, 1.2705f, 1.8524f, 1.8111f, 1.0795f, 0.5577f, 1.5440f);
    tg_tensor *attn_weights_2 = tg_softmax(tg_mul_scalar(attn_scores_2, 1.0f / sqrtf(2.0f)), -1);
    ASSERT_BOOK(attn_weights_2, 0.1500f, 0.2264f, 0.2199f, 0.1311f, 0.0906f, 0.1820f);
    tg_tensor *context_vec_2 = tg_matmul(attn_weights_2, values);
    ASSERT_BOOK(context_vec_2, 0.3061f, 0.8210f);

    /* 3.4.2 */
    tg_manual_seed(&g, 123);
    tg_self_attention_v1 *sa_v1 = tg_self_attention_v1_new(3, 2, &g);
    tg_tensor *out_v1 = tg_self_attention_v1_forward(sa_v1, inputs);
    ASSERT_BOOK(out_v1, 0.2996f, 0.8053f, 0.3061f, 0.8210f, 0.3058f, 0.8203f, 0.2948f, 0.7939f, 0.2927f, 0.7891f,
                0.2990f, 0.8040f);
    tg_manual_seed(&g, 789);
    tg_self_attention_v2 *sa_v2 = tg_self_attention_v2_new(3, 2, false, &g);
    tg_tensor *out_v2 = tg_self_attention_v2_forward(sa_v2, inputs);
    ASSERT_BOOK(out_v2, -0.0739f, 0.0713f, -0.0748f, 0.0703f, -0.0749f, 0.0702f, -0.0760f, 0.0685f, -0.0763f,
                0.0679f, -0.0754f, 0.0693f);

    tg_tape_reset(NULL);
    tg_module_free(&sa_v1->base);
    tg_module_free(&sa_v2->base);
    tg_free(attn_score_22);
    tg_free(W_query);
    tg_free(W_key);
    tg_free(W_value);
    tg_free(x_2);
    tg_free(inputs);
}
END_TEST

START_TEST(test_ch03_causal_attention)
{
    tg_tensor *inputs = tg_from_array(TG_SHAPE(6, 3), BOOK_INPUTS);
    tg_generator g;
    tg_manual_seed(&g, 789);
    tg_self_attention_v2 *sa_v2 = tg_self_attention_v2_new(3, 2, false, &g);

    /* 3.5.1 */
    tg_tensor *queries = tg_linear_forward(sa_v2->W_query, inputs);
    tg_tensor *keys = tg_linear_forward(sa_v2->W_key, inputs);
    tg_tensor *attn_scores = tg_matmul(queries, tg_transpose(keys, 0, 1));
    const float scale = 1.0f / sqrtf(2.0f);
    tg_tensor *attn_weights = tg_softmax(tg_mul_scalar(attn_scores, scale), -1);
    ASSERT_BOOK(attn_weights,
                0.1921f, 0.1646f, 0.1652f, 0.1550f, 0.1721f, 0.1510f, 0.2041f, 0.1659f, 0.1662f, 0.1496f, 0.1665f,
                0.1477f, 0.2036f, 0.1659f, 0.1662f, 0.1498f, 0.1664f, 0.1480f, 0.1869f, 0.1667f, 0.1668f, 0.1571f,
                0.1661f, 0.1564f, 0.1830f, 0.1669f, 0.1670f, 0.1588f, 0.1658f, 0.1585f, 0.1935f, 0.1663f, 0.1666f,
                0.1542f, 0.1666f, 0.1529f);
    tg_tensor *mask_simple = tg_ones(TG_SHAPE(6, 6));
    tg_tril_(mask_simple, 0);
    ASSERT_BOOK(mask_simple, 1, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0,
                1, 1, 1, 1, 1, 1);
    tg_tensor *masked_simple = tg_mul(attn_weights, mask_simple);
    ASSERT_BOOK(masked_simple,
                0.1921f, 0, 0, 0, 0, 0, 0.2041f, 0.1659f, 0, 0, 0, 0, 0.2036f, 0.1659f, 0.1662f, 0, 0, 0, 0.1869f,
                0.1667f, 0.1668f, 0.1571f, 0, 0, 0.1830f, 0.1669f, 0.1670f, 0.1588f, 0.1658f, 0, 0.1935f, 0.1663f,
                0.1666f, 0.1542f, 0.1666f, 0.1529f);
    tg_tensor *masked_simple_norm = tg_div(masked_simple, tg_sum_dim(masked_simple, -1, true));
    static const float norm[] = {
        1.0f,    0,       0,       0,       0,       0,       0.5517f, 0.4483f, 0,       0,       0,       0,
        0.3800f, 0.3097f, 0.3103f, 0,       0,       0,       0.2758f, 0.2460f, 0.2462f, 0.2319f, 0,       0,
        0.2175f, 0.1983f, 0.1984f, 0.1888f, 0.1971f, 0,       0.1935f, 0.1663f, 0.1666f, 0.1542f, 0.1666f, 0.1529f};
    assert_book(masked_simple_norm, norm, 36, "masked_simple_norm");
    tg_tensor *mask = tg_ones(TG_SHAPE(6, 6));
    tg_triu_(mask, 1);
    tg_tensor *masked = tg_masked_fill(attn_scores, mask, -INFINITY);
    const float ninf = -INFINITY;
    ASSERT_BOOK(masked, 0.2899f, ninf, ninf, ninf, ninf, ninf, 0.4656f, 0.1723f, ninf, ninf, ninf, ninf, 0.4594f,
                0.1703f, 0.1731f, ninf, ninf, ninf, 0.2642f, 0.1024f, 0.1036f, 0.0186f, ninf, ninf, 0.2183f, 0.0874f,
                0.0882f, 0.0177f, 0.0786f, ninf, 0.3408f, 0.1270f, 0.1290f, 0.0198f, 0.1290f, 0.0078f);
    attn_weights = tg_softmax(tg_mul_scalar(masked, scale), -1);
    assert_book(attn_weights, norm, 36, "attn_weights (masked with -inf)");

    /* 3.5.2: dropout(0.5), torch.manual_seed(123) before each call */
    tg_dropout_mod *dropout = tg_dropout_mod_new(0.5f, &g);
    tg_tensor *example = tg_ones(TG_SHAPE(6, 6));
    tg_manual_seed(&g, 123);
    tg_tensor *dropped = tg_dropout_mod_forward(dropout, example);
    ASSERT_BOOK(dropped, 2, 2, 0, 2, 2, 0, 0, 0, 0, 2, 0, 2, 2, 2, 2, 2, 0, 2, 0, 2, 2, 0, 0, 2, 0, 2, 0, 2, 0, 2, 0,
                2, 2, 2, 2, 0);
    tg_manual_seed(&g, 123);
    dropped = tg_dropout_mod_forward(dropout, attn_weights);
    ASSERT_BOOK(dropped, 2.0f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0.7599f, 0.6194f, 0.6206f, 0, 0, 0, 0, 0.4921f,
                0.4925f, 0, 0, 0, 0, 0.3966f, 0, 0.3775f, 0, 0, 0, 0.3327f, 0.3331f, 0.3084f, 0.3331f, 0);

    /* 3.5.3: CausalAttention on the batch of two, torch.manual_seed(123) */
    tg_tensor *batch = tg_empty(TG_SHAPE(2, 6, 3));
    memcpy(batch->data, BOOK_INPUTS, sizeof BOOK_INPUTS);
    memcpy(batch->data + 18, BOOK_INPUTS, sizeof BOOK_INPUTS);
    tg_manual_seed(&g, 123);
    tg_causal_attention *ca = tg_causal_attention_new(3, 2, 6, 0.0f, false, &g);
    tg_tensor *context_vecs = tg_causal_attention_forward(ca, batch);
    ASSERT_BOOK(context_vecs, -0.4519f, 0.2216f, -0.5874f, 0.0058f, -0.6300f, -0.0632f, -0.5675f, -0.0843f,
                -0.5526f, -0.0981f, -0.5299f, -0.1081f, -0.4519f, 0.2216f, -0.5874f, 0.0058f, -0.6300f, -0.0632f,
                -0.5675f, -0.0843f, -0.5526f, -0.0981f, -0.5299f, -0.1081f);

    tg_tape_reset(NULL);
    tg_module_free(&ca->base);
    tg_module_free(&dropout->base);
    tg_module_free(&sa_v2->base);
    tg_free(batch);
    tg_free(example);
    tg_free(mask);
    tg_free(mask_simple);
    tg_free(inputs);
}
END_TEST

START_TEST(test_ch03_multihead_attention)
{
    tg_tensor *batch = tg_empty(TG_SHAPE(2, 6, 3));
    memcpy(batch->data, BOOK_INPUTS, sizeof BOOK_INPUTS);
    memcpy(batch->data + 18, BOOK_INPUTS, sizeof BOOK_INPUTS);
    tg_generator g;

    /* 3.6.1 */
    tg_manual_seed(&g, 123);
    tg_mha_wrapper *wrapper = tg_mha_wrapper_new(3, 2, 6, 0.0f, 2, false, &g);
    tg_tensor *context_vecs = tg_mha_wrapper_forward(wrapper, batch);
    ASSERT_BOOK(context_vecs, -0.4519f, 0.2216f, 0.4772f, 0.1063f, -0.5874f, 0.0058f, 0.5891f, 0.3257f, -0.6300f,
                -0.0632f, 0.6202f, 0.3860f, -0.5675f, -0.0843f, 0.5478f, 0.3589f, -0.5526f, -0.0981f, 0.5321f,
                0.3428f, -0.5299f, -0.1081f, 0.5077f, 0.3493f, -0.4519f, 0.2216f, 0.4772f, 0.1063f, -0.5874f,
                0.0058f, 0.5891f, 0.3257f, -0.6300f, -0.0632f, 0.6202f, 0.3860f, -0.5675f, -0.0843f, 0.5478f,
                0.3589f, -0.5526f, -0.0981f, 0.5321f, 0.3428f, -0.5299f, -0.1081f, 0.5077f, 0.3493f);

    /* 3.6.2 */
    tg_manual_seed(&g, 123);
    tg_mha *mha = tg_mha_new(3, 2, 6, 0.0f, 2, false, &g);
    context_vecs = tg_mha_forward(mha, batch);
    ASSERT_BOOK(context_vecs, 0.3190f, 0.4858f, 0.2943f, 0.3897f, 0.2856f, 0.3593f, 0.2693f, 0.3873f, 0.2639f,
                0.3928f, 0.2575f, 0.4028f, 0.3190f, 0.4858f, 0.2943f, 0.3897f, 0.2856f, 0.3593f, 0.2693f, 0.3873f,
                0.2639f, 0.3928f, 0.2575f, 0.4028f);

    /* (b, num_heads, num_tokens, head_dim) = (1, 2, 3, 4): a @ a^T per head */
    static const float av[] = {0.2745f, 0.6584f, 0.2775f, 0.8573f, 0.8993f, 0.0390f, 0.9268f, 0.7388f,
                               0.7179f, 0.7058f, 0.9156f, 0.4340f, 0.0772f, 0.3565f, 0.1479f, 0.5331f,
                               0.4066f, 0.2318f, 0.4545f, 0.9737f, 0.4606f, 0.5159f, 0.4220f, 0.5786f};
    tg_tensor *a = tg_from_array(TG_SHAPE(1, 2, 3, 4), av);
    tg_tensor *aat = tg_matmul(a, tg_transpose(a, 2, 3));
    ASSERT_BOOK(aat, 1.3208f, 1.1631f, 1.2879f, 1.1631f, 2.2150f, 1.8424f, 1.2879f, 1.8424f, 2.0402f, 0.4391f,
                0.7003f, 0.5903f, 0.7003f, 1.3737f, 1.0620f, 0.5903f, 1.0620f, 0.9912f);

    /* GPT-2 small's attention: MultiHeadAttention(768, 768, 1024, 0.0, 12) */
    tg_mha *gpt2 = tg_mha_new(768, 768, 1024, 0.0f, 12, false, &g);
    ck_assert_int_eq(tg_params_numel(tg_module_params(&gpt2->base)), 2360064);

    tg_tape_reset(NULL);
    tg_module_free(&gpt2->base);
    tg_module_free(&mha->base);
    tg_module_free(&wrapper->base);
    tg_free(a);
    tg_free(batch);
}
END_TEST

static Suite *nn_suite(void)
{
    Suite *s = suite_create("nn");
    /* every case that reads goldens shares the file opened once */
#define GOLDEN_TCASE(tc) tcase_add_unchecked_fixture((tc), golden_setup, golden_teardown)
    TCase *tc = tcase_create("golden");
    GOLDEN_TCASE(tc);
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_module_golden, 0, N_CASES);
    suite_add_tcase(s, tc);

    tc = tcase_create("gradcheck");
    GOLDEN_TCASE(tc);
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_module_gradcheck, 0, N_CASES);
    suite_add_tcase(s, tc);

    tc = tcase_create("dropout");
    tcase_add_test(tc, test_dropout_statistics);
    tcase_add_test(tc, test_dropout_eval_and_edges);
    tcase_add_test(tc, test_train_switch_causal);
    tcase_add_test(tc, test_train_switch_wrapper);
    tcase_add_test(tc, test_train_switch_mha);
    suite_add_tcase(s, tc);

    tc = tcase_create("modules");
    GOLDEN_TCASE(tc);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_mha_attn_weights_kept);
    tcase_add_test(tc, test_mha_equals_heads);
    tcase_add_test(tc, test_param_counts);
    tcase_add_test(tc, test_nested_param_names);
    tcase_add_test(tc, test_misuse_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("ch03");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_ch03_simple_attention);
    tcase_add_test(tc, test_ch03_trainable_weights);
    tcase_add_test(tc, test_ch03_causal_attention);
    tcase_add_test(tc, test_ch03_multihead_attention);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(nn_suite()) ? 1 : 0; }

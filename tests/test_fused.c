/* tests/test_fused.c — the fused ops against the composed ops they replace:
 * causal attention (tg_sdpa_causal, _heads_last) against the book's steps,
 * the same bits in forward, weights and every gradient and the same dropout
 * draws (the generators end in the same state); the feed-forward op
 * (tg_feedforward_gelu) against affine, gelu, affine; gradchecks against
 * double-precision finite differences; a GPT with dropout trains to the same
 * losses, bit for bit, on 1 and 2 threads. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn.h"
#include "optim/optim.h"
#include "tensor/kernels.h"
#include "testutil.h"

/* The book's steps: scores = q k^T, masked_fill(triu(1), -inf), / sqrt(hd)
 * (as a multiply, like nn/attention.c), softmax, dropout, @ v. */
static tg_tensor *composed(tg_tensor *q, tg_tensor *k, tg_tensor *v, float p, bool train, tg_generator *g,
                           tg_tensor **weights)
{
    const int T = q->shape[q->ndim - 2], hd = q->shape[q->ndim - 1];
    tg_tensor *mask = tg_ones(TG_SHAPE(T, T));
    tg_triu_(mask, 1);
    tg_tensor *s = tg_matmul(q, tg_transpose(k, -2, -1));
    s = tg_masked_fill(s, mask, -INFINITY);
    tg_tensor *w = tg_softmax(tg_mul_scalar(s, (float)(1.0 / sqrt((double)hd))), -1);
    if (weights)
        *weights = w;
    tg_tensor *out = tg_matmul(tg_dropout(w, p, train, g), v);
    tg_free(mask);
    return out;
}

static tg_tensor *rand_input(tg_generator *g, int ndim, const int *shape)
{
    return tg_requires_grad(tg_randn(g, ndim, shape), true);
}

static void assert_same_bits(const float *a, const float *b, int64_t n, const char *what, int T, int hd, float p)
{
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(memcmp(&a[i], &b[i], sizeof(float)) == 0 || (a[i] == 0.0f && b[i] == 0.0f),
                      "%s T=%d hd=%d p=%g: [%lld] fused %.9g, composed %.9g", what, T, hd, (double)p, (long long)i,
                      (double)a[i], (double)b[i]);
}

static void check_against_composed(int B, int H, int T, int hd, float p, bool train)
{
    tg_generator gi;
    tg_manual_seed(&gi, (uint64_t)(T * 131 + hd));
    const int shape[4] = {B, H, T, hd};
    tg_tensor *q = rand_input(&gi, 4, shape), *k = rand_input(&gi, 4, shape), *v = rand_input(&gi, 4, shape);
    tg_tensor *dy = tg_randn(&gi, 4, shape);
    const int64_t n = q->numel;
    float *want[4];
    tg_generator gc, gf;
    tg_manual_seed(&gc, 99);
    tg_manual_seed(&gf, 99);

    /* composed */
    tg_tensor *wc;
    tg_tensor *yc = composed(q, k, v, p, train, &gc, &wc);
    tg_backward(yc, dy);
    tg_tensor *ins[3] = {q, k, v};
    for (int i = 0; i < 3; i++) {
        want[i] = malloc(sizeof(float) * (size_t)n);
        memcpy(want[i], ins[i]->grad, sizeof(float) * (size_t)n);
        memset(ins[i]->grad, 0, sizeof(float) * (size_t)n);
    }
    want[3] = malloc(sizeof(float) * (size_t)n);
    memcpy(want[3], yc->data, sizeof(float) * (size_t)n);
    float *wwant = malloc(sizeof(float) * (size_t)wc->numel);
    memcpy(wwant, wc->data, sizeof(float) * (size_t)wc->numel);
    tg_tape_reset(NULL);

    /* fused */
    tg_tensor *w = tg_empty(TG_SHAPE(B, H, T, T));
    tg_tensor *y = tg_sdpa_causal(q, k, v, p, train, &gf, w);
    assert_same_bits(y->data, want[3], n, "forward", T, hd, p);
    assert_same_bits(w->data, wwant, w->numel, "weights", T, hd, p);
    tg_backward(y, dy);
    assert_same_bits(q->grad, want[0], n, "grad q", T, hd, p);
    assert_same_bits(k->grad, want[1], n, "grad k", T, hd, p);
    assert_same_bits(v->grad, want[2], n, "grad v", T, hd, p);
    /* the same number of draws: both generators go on alike */
    ck_assert_msg(tg_random_u32(&gc) == tg_random_u32(&gf), "T=%d p=%g: the generators diverged", T, (double)p);
    tg_tape_reset(NULL);
    for (int i = 0; i < 4; i++)
        free(want[i]);
    free(wwant);
    tg_free(w);
    tg_free(q);
    tg_free(k);
    tg_free(v);
    tg_free(dy);
}

START_TEST(test_equals_composed)
{
    /* T crosses the op's 28-row blocks and, at 300, gemm's K block of 256 */
    const int Ts[] = {1, 2, 5, 28, 29, 57, 300};
    const int hds[] = {1, 8, 16, 33};
    for (int t = 0; t < 7; t++)
        for (int h = 0; h < 4; h++) {
            if (Ts[t] == 300 && hds[h] < 16) /* 33: K blocks and panels of the packed k and v */
                continue;
            check_against_composed(2, 2, Ts[t], hds[h], 0.1f, true);
        }
    check_against_composed(1, 3, 40, 8, 0.5f, true);
    check_against_composed(2, 2, 29, 8, 0.0f, true);  /* no dropout: no draws */
    check_against_composed(2, 2, 29, 8, 0.1f, false); /* eval */
    check_against_composed(2, 2, 29, 8, 1.0f, true);  /* all dropped, no draws */
}
END_TEST

START_TEST(test_equals_composed_every_isa_and_threads)
{
    const tg_gemm_isa isas[] = {TG_GEMM_AVX512, TG_GEMM_AVX2, TG_GEMM_GENERIC};
    for (int i = 0; i < 3; i++) {
        if (!tg_k_gemm_set_isa(isas[i]))
            continue;
        for (int threads = 1; threads <= 3; threads++) {
            tg_set_num_threads(threads);
            check_against_composed(2, 3, 45, 8, 0.1f, true);
            /* the bits are drawn head by head as threads need them: T * T
             * of 841 puts head boundaries inside 64-bit words */
            check_against_composed(3, 4, 29, 8, 0.3f, true);
            check_against_composed(1, 2, 45, 33, 0.1f, true); /* packed k, v in several panels */
        }
    }
    tg_set_num_threads(1);
    ck_assert(tg_k_gemm_set_isa(TG_GEMM_BEST));
}
END_TEST

/* (B, T, H, hd) inputs: the transposed op's bits, without the transposes */
START_TEST(test_heads_last_equals_transposed)
{
    const int B = 2, T = 33, H = 3, hd = 8;
    tg_generator gi;
    tg_manual_seed(&gi, 17);
    tg_tensor *in[3], *dy = tg_randn(&gi, TG_SHAPE(B, T, H, hd));
    for (int i = 0; i < 3; i++)
        in[i] = rand_input(&gi, TG_SHAPE(B, T, H, hd));
    const int64_t n = dy->numel;
    float *want[4];
    tg_tensor *w1 = tg_empty(TG_SHAPE(B, H, T, T)), *w2 = tg_empty(TG_SHAPE(B, H, T, T));
    tg_generator g1, g2;
    tg_manual_seed(&g1, 4);
    tg_manual_seed(&g2, 4);
    tg_tensor *y = tg_transpose(tg_sdpa_causal(tg_transpose(in[0], 1, 2), tg_transpose(in[1], 1, 2),
                                               tg_transpose(in[2], 1, 2), 0.2f, true, &g1, w1), 1, 2);
    tg_backward(y, dy);
    want[3] = malloc(sizeof(float) * (size_t)n);
    memcpy(want[3], y->data, sizeof(float) * (size_t)n);
    for (int i = 0; i < 3; i++) {
        want[i] = malloc(sizeof(float) * (size_t)n);
        memcpy(want[i], in[i]->grad, sizeof(float) * (size_t)n);
        memset(in[i]->grad, 0, sizeof(float) * (size_t)n);
    }
    tg_tape_reset(NULL);
    y = tg_sdpa_causal_heads_last(in[0], in[1], in[2], 0.2f, true, &g2, w2);
    assert_same_bits(y->data, want[3], n, "heads_last forward", T, hd, 0.2f);
    assert_same_bits(w2->data, w1->data, w1->numel, "heads_last weights", T, hd, 0.2f);
    tg_backward(y, dy);
    for (int i = 0; i < 3; i++)
        assert_same_bits(in[i]->grad, want[i], n, "heads_last grad", T, hd, 0.2f);
    ck_assert(tg_random_u32(&g1) == tg_random_u32(&g2));
    tg_tape_reset(NULL);
    for (int i = 0; i < 4; i++)
        free(want[i]);
    for (int i = 0; i < 3; i++)
        tg_free(in[i]);
    tg_free(dy);
    tg_free(w1);
    tg_free(w2);
}
END_TEST

/* gradcheck, dropout included: each evaluation reseeds, so the mask is fixed */
static tg_tensor *f_sdpa(tg_tensor **in, void *ctx)
{
    tg_generator g;
    tg_manual_seed(&g, 5);
    return tg_sdpa_causal(in[0], in[1], in[2], *(const float *)ctx, true, &g, NULL);
}

/* q, k and v also used by later ops, whose backwards run first: the
 * attention's backward must add to the gradients they wrote */
static tg_tensor *f_sdpa_shared(tg_tensor **in, void *ctx)
{
    tg_tensor *y = f_sdpa(in, ctx); /* recorded first, so its backward runs last */
    return tg_add(y, tg_add(tg_mul_scalar(in[0], 0.5f), tg_mul(in[1], in[2])));
}

START_TEST(test_gradcheck)
{
    const float ps[] = {0.0f, 0.3f};
    for (int c = 0; c < 2; c++) {
        tg_generator g;
        tg_manual_seed(&g, 3);
        tg_tensor *in[3];
        for (int i = 0; i < 3; i++)
            in[i] = rand_input(&g, TG_SHAPE(2, 6, 5));
        tg_gradcheck_result r = tg_gradcheck(f_sdpa, (void *)&ps[c], in, 3, 1e-2, 1e-3, 1e-2);
        ck_assert_int_eq(r.n_inputs, 3);
        ck_assert_msg(r.ok, "p=%g: max abs err q %.3g k %.3g v %.3g", (double)ps[c], r.max_abs_err[0],
                      r.max_abs_err[1], r.max_abs_err[2]);
        r = tg_gradcheck(f_sdpa_shared, (void *)&ps[c], in, 3, 1e-2, 1e-3, 1e-2);
        ck_assert_msg(r.ok, "p=%g, inputs used again: max abs err q %.3g k %.3g v %.3g", (double)ps[c],
                      r.max_abs_err[0], r.max_abs_err[1], r.max_abs_err[2]);
        for (int i = 0; i < 3; i++)
            tg_free(in[i]);
    }
}
END_TEST

typedef struct {
    tg_tensor *q, *k, *v, *w;
    float p;
} bad_call;

static void call_sdpa(void *ctx)
{
    bad_call *c = ctx;
    tg_sdpa_causal(c->q, c->k, c->v, c->p, true, NULL, c->w);
}

START_TEST(test_bad_input)
{
    tg_tensor *q = tg_zeros(TG_SHAPE(2, 4, 3)), *k = tg_zeros(TG_SHAPE(2, 4, 2));
    tg_tensor *w = tg_zeros(TG_SHAPE(2, 4, 3));
    char msg[256];
    bad_call c1 = {q, k, q, NULL, 0.0f}, c2 = {q, q, q, NULL, 1.5f}, c3 = {q, q, q, w, 0.0f};
    ck_assert(catch_error(call_sdpa, &c1, msg, sizeof msg));
    ck_assert_msg(strstr(msg, "tg_sdpa_causal") && strstr(msg, "[2,4,3]") && strstr(msg, "[2,4,2]"), "%s", msg);
    ck_assert(catch_error(call_sdpa, &c2, msg, sizeof msg));
    ck_assert_msg(strstr(msg, "between 0 and 1"), "%s", msg);
    ck_assert(catch_error(call_sdpa, &c3, msg, sizeof msg));
    ck_assert_msg(strstr(msg, "weights"), "%s", msg);
    tg_tape_reset(NULL);
    tg_free(q);
    tg_free(k);
    tg_free(w);
}
END_TEST

/* ---------------------------------------------------------------- feed-forward */

static void check_ff(int rows, int d, int h, bool bias)
{
    tg_generator g;
    tg_manual_seed(&g, (uint64_t)(rows + d + h));
    tg_tensor *x = rand_input(&g, TG_SHAPE(rows, d)), *w1 = rand_input(&g, TG_SHAPE(h, d));
    tg_tensor *w2 = rand_input(&g, TG_SHAPE(d, h)), *dy = tg_randn(&g, TG_SHAPE(rows, d));
    tg_tensor *b1 = bias ? rand_input(&g, TG_SHAPE(h)) : NULL, *b2 = bias ? rand_input(&g, TG_SHAPE(d)) : NULL;
    tg_tensor *ins[5] = {x, w1, w2, b1, b2};
    const int n_in = bias ? 5 : 3;
    float *want[6];
    tg_tensor *yc = tg_affine(tg_gelu(tg_affine(x, w1, b1)), w2, b2);
    tg_backward(yc, dy);
    want[5] = malloc(sizeof(float) * (size_t)yc->numel);
    memcpy(want[5], yc->data, sizeof(float) * (size_t)yc->numel);
    for (int i = 0; i < n_in; i++) {
        want[i] = malloc(sizeof(float) * (size_t)ins[i]->numel);
        memcpy(want[i], ins[i]->grad, sizeof(float) * (size_t)ins[i]->numel);
        memset(ins[i]->grad, 0, sizeof(float) * (size_t)ins[i]->numel);
    }
    tg_tape_reset(NULL);
    tg_tensor *y = tg_feedforward_gelu(x, w1, b1, w2, b2);
    assert_same_bits(y->data, want[5], y->numel, "feedforward forward", rows, d, 0.0f);
    tg_backward(y, dy);
    for (int i = 0; i < n_in; i++)
        assert_same_bits(ins[i]->grad, want[i], ins[i]->numel, "feedforward grad", rows, d, (float)i);
    tg_tape_reset(NULL);
    free(want[5]);
    for (int i = 0; i < n_in; i++) {
        free(want[i]);
        tg_free(ins[i]);
    }
    tg_free(dy);
}

START_TEST(test_feedforward_equals_composed)
{
    check_ff(1, 1, 4, true);
    check_ff(37, 16, 64, true);
    check_ff(300, 40, 160, false);
    check_ff(3 * TG_GEMM_KC + 37, 24, 96, true); /* the op's row blocks: three whole and a part */
    tg_set_num_threads(2);
    check_ff(300, 40, 160, true);
    check_ff(2 * TG_GEMM_KC, 24, 96, true);
    tg_set_num_threads(1);
}
END_TEST

static tg_tensor *f_ff(tg_tensor **in, void *ctx)
{
    (void)ctx;
    return tg_feedforward_gelu(in[0], in[1], in[2], in[3], in[4]);
}

START_TEST(test_feedforward_gradcheck)
{
    tg_generator g;
    tg_manual_seed(&g, 8);
    tg_tensor *in[5] = {rand_input(&g, TG_SHAPE(3, 4)), rand_input(&g, TG_SHAPE(6, 4)), rand_input(&g, TG_SHAPE(6)),
                        rand_input(&g, TG_SHAPE(2, 6)), rand_input(&g, TG_SHAPE(2))};
    tg_gradcheck_result r = tg_gradcheck(f_ff, NULL, in, 5, 1e-2, 1e-3, 1e-2);
    ck_assert_int_eq(r.n_inputs, 5);
    ck_assert_msg(r.ok, "max abs err x %.3g w1 %.3g b1 %.3g w2 %.3g b2 %.3g", r.max_abs_err[0], r.max_abs_err[1],
                  r.max_abs_err[2], r.max_abs_err[3], r.max_abs_err[4]);
    for (int i = 0; i < 5; i++)
        tg_free(in[i]);
}
END_TEST

/* FeedForward takes the fused op only while its slots hold Linear, GELU,
 * Linear: with another activation in layers.1 it runs the slots. */
START_TEST(test_feedforward_module_fused_and_swapped)
{
    tg_generator g;
    tg_manual_seed(&g, 9);
    tg_feedforward *ff = tg_feedforward_new(8, &g);
    tg_tensor *x = tg_randn(&g, TG_SHAPE(2, 3, 8));
    tg_tensor *y = tg_feedforward_forward(ff, x);
    tg_tape *tape = tg_tape_current();
    ck_assert_int_eq(tape->n_nodes, 1);
    ck_assert_str_eq(tape->nodes[0].op, "tg_feedforward_gelu");
    tg_tensor *want = tg_module_forward(ff->layers, x); /* the slots one by one */
    assert_same_bits(y->data, want->data, y->numel, "FeedForward module", 3, 8, 0.0f);
    tg_tape_reset(NULL);
    tg_module_replace(&ff->base, "layers.1", &tg_softmax_mod_new(-1)->base);
    y = tg_feedforward_forward(ff, x);
    ck_assert_int_gt(tape->n_nodes, 1); /* the slots ran: affine, softmax, affine */
    tg_linear *first = tg_module_as(tg_module_get(&ff->base, "layers.0"), &tg_linear_type);
    tg_linear *last = tg_module_as(tg_module_get(&ff->base, "layers.2"), &tg_linear_type);
    want = tg_affine(tg_softmax(tg_affine(x, first->weight, first->bias), -1), last->weight, last->bias);
    assert_same_bits(y->data, want->data, y->numel, "FeedForward with Softmax in layers.1", 3, 8, 0.0f);
    tg_tape_reset(NULL);
    tg_free(x);
    tg_module_free(&ff->base);
}
END_TEST

/* ---------------------------------------------------------------- GPT, threads */

static void train_losses(int threads, int steps, float *losses)
{
    tg_set_num_threads(threads);
    tg_gpt_config cfg = {.vocab_size = 50, .context_length = 40, .emb_dim = 48, .n_heads = 4, .n_layers = 2,
                         .drop_rate = 0.1f, .qkv_bias = false};
    tg_generator g;
    tg_manual_seed(&g, 123);
    tg_gpt *m = tg_gpt_new(&cfg, &g);
    tg_optim_config oc = tg_adamw_config(1e-3);
    tg_optim *opt = tg_optim_new(tg_gpt_params(m), &oc);
    const int B = 4, T = cfg.context_length;
    int32_t x[4 * 40], y[4 * 40];
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < B * T; i++) {
            x[i] = (int32_t)(tg_random_u32(&g) % 50u);
            y[i] = (int32_t)(tg_random_u32(&g) % 50u);
        }
        tg_tensor *l = tg_cross_entropy(tg_gpt_forward(m, x, B, T), y);
        losses[s] = l->data[0];
        tg_backward(l, NULL);
        tg_optim_step(opt);
        tg_optim_zero_grad(opt);
        tg_tape_reset(NULL);
    }
    tg_optim_free(opt);
    tg_gpt_free(m);
    tg_set_num_threads(1);
}

START_TEST(test_gpt_dropout_threads_identical)
{
    float l1[6], l2[6];
    train_losses(1, 6, l1);
    train_losses(2, 6, l2);
    for (int s = 0; s < 6; s++)
        ck_assert_msg(memcmp(&l1[s], &l2[s], sizeof(float)) == 0, "step %d: loss %.9g on 1 thread, %.9g on 2", s,
                      (double)l1[s], (double)l2[s]);
    ck_assert(l1[5] < l1[0]); /* it trains */
}
END_TEST

static Suite *fused_suite(void)
{
    Suite *s = suite_create("fused");
    TCase *tc = tcase_create("fused");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_equals_composed);
    tcase_add_test(tc, test_equals_composed_every_isa_and_threads);
    tcase_add_test(tc, test_heads_last_equals_transposed);
    tcase_add_test(tc, test_gradcheck);
    tcase_add_test(tc, test_bad_input);
    tcase_add_test(tc, test_feedforward_equals_composed);
    tcase_add_test(tc, test_feedforward_gradcheck);
    tcase_add_test(tc, test_feedforward_module_fused_and_swapped);
    tcase_add_test(tc, test_gpt_dropout_threads_identical);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(fused_suite()) ? 1 : 0; }

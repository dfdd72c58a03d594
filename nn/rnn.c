/*
 * nn/rnn.c — recurrent layers and Bahdanau's additive attention, as torch's.
 *
 *   RNNCell    x (B, I) or (I), h (B, H) or (H) or NULL     -> h' (B, H) or (H)
 *              h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)
 *   GRUCell    x (B, I) or (I), h (B, H) or (H) or NULL     -> h' (B, H) or (H)
 *              r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
 *              z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
 *              n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
 *              h' = (1 - z) * n + z * h
 *              (weight_ih stacks W_ir, W_iz, W_in: gate order r, z, n)
 *   GRU        one layer, batch_first=True only: x (B, T, I), h0 (1, B, H) or
 *              NULL -> output (B, T, H) (every step's h) and h_n (1, B, H)
 *   AdditiveAttention (Bahdanau et al. 2014)
 *              query s (B, Dq), values h (B, T, Dk), mask (B, T) or NULL
 *              score_j = w_v(tanh(W_query s + W_key h_j)); alpha = softmax_j
 *              (padded positions, mask != 0, get -inf); context = sum_j
 *              alpha_j h_j -> (B, Dk)
 *
 * A missing hidden state means zeros, as in torch. Initialisation: every
 * recurrent parameter ~ U(-1/sqrt(H), 1/sqrt(H)), drawn in torch's parameter
 * order (weight_ih, weight_hh, bias_ih, bias_hh), so the same seed gives
 * torch's weights; AdditiveAttention's three Linear layers (no bias) are
 * drawn W_query, W_key, w_v with torch's Linear init.
 */
#include "module_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* torch's RNNBase/RNNCellBase reset_parameters: stdv = 1 / sqrt(hidden_size)
 * in double, then uniform_(-stdv, stdv) on each parameter in registration
 * order; names[] are weight_ih, weight_hh, bias_ih, bias_hh (+ "_l0"). */
static void init_recurrent(tg_module *base, tg_tensor **w, int gates, int input_size, int hidden_size,
                           const char *const *names, tg_generator *g)
{
    const double stdv = 1.0 / sqrt((double)hidden_size);
    const int gh = gates * hidden_size;
    w[0] = tg_module_add_param(base, names[0], tg_empty(TG_SHAPE(gh, input_size)));
    w[1] = tg_module_add_param(base, names[1], tg_empty(TG_SHAPE(gh, hidden_size)));
    w[2] = tg_module_add_param(base, names[2], tg_empty(TG_SHAPE(gh)));
    w[3] = tg_module_add_param(base, names[3], tg_empty(TG_SHAPE(gh)));
    for (int i = 0; i < 4; i++)
        tg_uniform_(w[i], (float)-stdv, (float)stdv, g);
}

static void check_sizes(const char *op, int input_size, int hidden_size, int gates)
{
    if (input_size < 1 || hidden_size < 1 || hidden_size > (1 << 24) / gates)
        tg_error(op, "input_size=%d and hidden_size=%d must be >= 1 (hidden_size <= %d)", input_size, hidden_size,
                 (1 << 24) / gates);
}

/* A cell's input (B, I) or (I) and hidden (B, H), (H) or NULL, checked and
 * brought to 2-D; *batched says whether to return (B, H) or (H). */
static void cell_inputs(const char *op, tg_tensor **x, tg_tensor **h, int input_size, int hidden_size,
                        bool *batched)
{
    char s1[64], s2[64];
    tg_tensor *xi = *x, *hi = *h;
    tg_check_ptr(op, xi, "input");
    if (!((xi->ndim == 1 || xi->ndim == 2) && xi->shape[xi->ndim - 1] == input_size))
        tg_error(op, "expects input (B, input_size=%d) or (input_size=%d), got %s", input_size, input_size,
                 tg_shape_str(s1, xi->ndim, xi->shape));
    *batched = xi->ndim == 2;
    const int B = *batched ? xi->shape[0] : 1;
    if (hi && !(hi->ndim == xi->ndim && hi->shape[hi->ndim - 1] == hidden_size && (!*batched || hi->shape[0] == B)))
        tg_error(op, "hidden state %s does not fit input %s: expects %s(hidden_size=%d)", tg_shape_str(s1, hi->ndim, hi->shape),
                 tg_shape_str(s2, xi->ndim, xi->shape), *batched ? "(B, " : "(", hidden_size);
    if (!*batched) {
        *x = tg_reshape(xi, TG_SHAPE(1, input_size));
        if (hi)
            *h = tg_reshape(hi, TG_SHAPE(1, hidden_size));
    }
    if (!*h) {
        tg_tensor *z = tg_new_tensor(TG_SHAPE(B, hidden_size));
        memset(z->data, 0, (size_t)z->numel * sizeof(float));
        *h = z;
    }
}

static tg_tensor *cell_output(tg_tensor *h, bool batched, int hidden_size)
{
    return batched ? h : tg_reshape(h, TG_SHAPE(hidden_size));
}

/* One GRU step from the input projection gi = x W_ih^T + b_ih (B, 3H) and
 * the hidden state h (B, H); shared by GRUCell and GRU. */
static tg_tensor *gru_step(tg_tensor *gi, tg_tensor *h, tg_tensor *weight_hh, tg_tensor *bias_hh, int H)
{
    tg_tensor *gh = tg_affine(h, weight_hh, bias_hh);                               /* (B, 3H) */
    tg_tensor *rz = tg_sigmoid(tg_add(tg_narrow(gi, 1, 0, 2 * H), tg_narrow(gh, 1, 0, 2 * H)));
    tg_tensor *r = tg_narrow(rz, 1, 0, H), *z = tg_narrow(rz, 1, H, H);
    tg_tensor *n = tg_tanh(tg_add(tg_narrow(gi, 1, 2 * H, H), tg_mul(r, tg_narrow(gh, 1, 2 * H, H))));
    return tg_add(n, tg_mul(z, tg_sub(h, n)));                                        /* (1-z)*n + z*h */
}

/* ---------------------------------------------------------------- RNNCell */

static const char *const CELL_NAMES[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};

static tg_tensor *rnn_cell_step(tg_rnn_cell *m, tg_tensor *x, tg_tensor *h)
{
    bool batched;
    cell_inputs("tg_rnn_cell_forward", &x, &h, m->input_size, m->hidden_size, &batched);
    tg_tensor *pre = tg_add(tg_affine(x, m->weight_ih, m->bias_ih), tg_affine(h, m->weight_hh, m->bias_hh));
    return cell_output(tg_tanh(pre), batched, m->hidden_size);
}

/* the single-input forward: h = zeros, as rnn_cell(x) in torch */
static tg_tensor *rnn_cell_forward1(tg_module *base, tg_tensor *x) { return rnn_cell_step((tg_rnn_cell *)base, x, NULL); }

const tg_module_type tg_rnn_cell_type = {"RNNCell", rnn_cell_forward1, NULL};

tg_rnn_cell *tg_rnn_cell_new(int input_size, int hidden_size, tg_generator *g)
{
    check_sizes("tg_rnn_cell_new", input_size, hidden_size, 1);
    tg_rnn_cell *m = tg_module_new(sizeof *m, &tg_rnn_cell_type);
    m->input_size = input_size;
    m->hidden_size = hidden_size;
    tg_tensor *w[4];
    init_recurrent(&m->base, w, 1, input_size, hidden_size, CELL_NAMES, tg_nn_gen(g));
    m->weight_ih = w[0], m->weight_hh = w[1], m->bias_ih = w[2], m->bias_hh = w[3];
    return m;
}

tg_tensor *tg_rnn_cell_forward(tg_rnn_cell *m, tg_tensor *x, tg_tensor *h)
{
    tg_check_ptr("tg_rnn_cell_forward", m, "module");
    tg_module_enter(&m->base);
    tg_tensor *y = rnn_cell_step(m, x, h);
    tg_module_leave(&m->base);
    return y;
}

/* ---------------------------------------------------------------- GRUCell */

static tg_tensor *gru_cell_step(tg_gru_cell *m, tg_tensor *x, tg_tensor *h)
{
    bool batched;
    cell_inputs("tg_gru_cell_forward", &x, &h, m->input_size, m->hidden_size, &batched);
    tg_tensor *gi = tg_affine(x, m->weight_ih, m->bias_ih);
    return cell_output(gru_step(gi, h, m->weight_hh, m->bias_hh, m->hidden_size), batched, m->hidden_size);
}

static tg_tensor *gru_cell_forward1(tg_module *base, tg_tensor *x) { return gru_cell_step((tg_gru_cell *)base, x, NULL); }

const tg_module_type tg_gru_cell_type = {"GRUCell", gru_cell_forward1, NULL};

tg_gru_cell *tg_gru_cell_new(int input_size, int hidden_size, tg_generator *g)
{
    check_sizes("tg_gru_cell_new", input_size, hidden_size, 3);
    tg_gru_cell *m = tg_module_new(sizeof *m, &tg_gru_cell_type);
    m->input_size = input_size;
    m->hidden_size = hidden_size;
    tg_tensor *w[4];
    init_recurrent(&m->base, w, 3, input_size, hidden_size, CELL_NAMES, tg_nn_gen(g));
    m->weight_ih = w[0], m->weight_hh = w[1], m->bias_ih = w[2], m->bias_hh = w[3];
    return m;
}

tg_tensor *tg_gru_cell_forward(tg_gru_cell *m, tg_tensor *x, tg_tensor *h)
{
    tg_check_ptr("tg_gru_cell_forward", m, "module");
    tg_module_enter(&m->base);
    tg_tensor *y = gru_cell_step(m, x, h);
    tg_module_leave(&m->base);
    return y;
}

/* ---------------------------------------------------------------- GRU */

static const char *const GRU_NAMES[4] = {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"};

static tg_tensor *gru_run(tg_gru *m, tg_tensor *x, tg_tensor *h0, tg_tensor **h_n)
{
    char s1[64], s2[64];
    tg_check_ptr("tg_gru_forward", x, "input");
    const int H = m->hidden_size;
    if (x->ndim != 3 || x->shape[2] != m->input_size || x->shape[1] < 1)
        tg_error("tg_gru_forward", "expects input (B, T>=1, input_size=%d) (batch_first=True only), got %s",
                 m->input_size, tg_shape_str(s1, x->ndim, x->shape));
    const int B = x->shape[0], T = x->shape[1];
    if (h0 && !(h0->ndim == 3 && h0->shape[0] == 1 && h0->shape[1] == B && h0->shape[2] == H))
        tg_error("tg_gru_forward", "expects h0 (1, B=%d, hidden_size=%d) for input %s, got %s", B, H,
                 tg_shape_str(s1, x->ndim, x->shape), tg_shape_str(s2, h0->ndim, h0->shape));
    tg_tensor *h;
    if (h0) {
        h = tg_reshape(h0, TG_SHAPE(B, H));
    } else {
        h = tg_new_tensor(TG_SHAPE(B, H));
        memset(h->data, 0, (size_t)h->numel * sizeof(float));
    }
    /* every step's input projection in one gemm */
    tg_tensor *gi_all = tg_affine(x, m->weight_ih_l0, m->bias_ih_l0); /* (B, T, 3H) */
    tg_tensor **steps = tg_tape_alloc((size_t)T * sizeof *steps);
    for (int t = 0; t < T; t++) {
        h = gru_step(tg_select(gi_all, 1, t), h, m->weight_hh_l0, m->bias_hh_l0, H);
        steps[t] = h;
    }
    if (h_n)
        *h_n = tg_reshape(h, TG_SHAPE(1, B, H));
    return tg_stack(steps, T, 1); /* (B, T, H) */
}

/* the single-input forward: zero initial state, returns every step's output */
static tg_tensor *gru_forward1(tg_module *base, tg_tensor *x) { return gru_run((tg_gru *)base, x, NULL, NULL); }

const tg_module_type tg_gru_type = {"GRU", gru_forward1, NULL};

tg_gru *tg_gru_new(int input_size, int hidden_size, tg_generator *g)
{
    check_sizes("tg_gru_new", input_size, hidden_size, 3);
    tg_gru *m = tg_module_new(sizeof *m, &tg_gru_type);
    m->input_size = input_size;
    m->hidden_size = hidden_size;
    tg_tensor *w[4];
    init_recurrent(&m->base, w, 3, input_size, hidden_size, GRU_NAMES, tg_nn_gen(g));
    m->weight_ih_l0 = w[0], m->weight_hh_l0 = w[1], m->bias_ih_l0 = w[2], m->bias_hh_l0 = w[3];
    return m;
}

tg_tensor *tg_gru_forward(tg_gru *m, tg_tensor *x, tg_tensor *h0, tg_tensor **h_n)
{
    tg_check_ptr("tg_gru_forward", m, "module");
    tg_module_enter(&m->base);
    tg_tensor *y = gru_run(m, x, h0, h_n);
    tg_module_leave(&m->base);
    return y;
}

/* ---------------------------------------------------------------- AdditiveAttention */

/* attn_weights is a scratch copy, not a registered buffer (its size follows the input). */
static void additive_attention_release(tg_module *base) { tg_free(((tg_additive_attention *)base)->attn_weights); }

/* Its inputs are a query, values and a mask: no single-input forward. */
const tg_module_type tg_additive_attention_type = {"AdditiveAttention", NULL, additive_attention_release};

tg_additive_attention *tg_additive_attention_new(int query_size, int key_size, int attn_size, tg_generator *g)
{
    if (query_size < 1 || key_size < 1 || attn_size < 1)
        tg_error("tg_additive_attention_new", "query_size=%d, key_size=%d and attn_size=%d must be >= 1",
                 query_size, key_size, attn_size);
    g = tg_nn_gen(g);
    tg_additive_attention *m = tg_module_new(sizeof *m, &tg_additive_attention_type);
    m->query_size = query_size;
    m->key_size = key_size;
    m->attn_size = attn_size;
    m->keep_attn = true;
    m->W_query = (tg_linear *)tg_module_add_child(&m->base, "W_query", &tg_linear_new(query_size, attn_size, false, g)->base);
    m->W_key = (tg_linear *)tg_module_add_child(&m->base, "W_key", &tg_linear_new(key_size, attn_size, false, g)->base);
    m->w_v = (tg_linear *)tg_module_add_child(&m->base, "w_v", &tg_linear_new(attn_size, 1, false, g)->base);
    return m;
}

static void check_values(const char *op, const tg_additive_attention *m, const tg_tensor *values)
{
    char s1[64];
    tg_check_ptr(op, m, "module");
    tg_check_ptr(op, values, "values");
    if (values->ndim != 3 || values->shape[2] != m->key_size || values->shape[1] < 1)
        tg_error(op, "expects values (B, T>=1, key_size=%d), got %s", m->key_size,
                 tg_shape_str(s1, values->ndim, values->shape));
}

tg_tensor *tg_additive_attention_keys(tg_additive_attention *m, tg_tensor *values)
{
    check_values("tg_additive_attention_keys", m, values);
    tg_module_enter(&m->base);
    tg_tensor *k = tg_linear_forward(m->W_key, values); /* (B, T, A) */
    tg_module_leave(&m->base);
    return k;
}

/* Copies w (B, T) into m->attn_weights, growing the buffer only when it
 * does not fit (so a loop with fixed shapes mallocs once). */
static void keep_weights(tg_additive_attention *m, const tg_tensor *w)
{
    if (!m->attn_weights || m->attn_cap < w->numel) {
        tg_free(m->attn_weights);
        m->attn_weights = tg_set_name(tg_empty(w->ndim, w->shape), "attn_weights");
        m->attn_cap = w->numel;
    }
    tg_tensor *a = m->attn_weights;
    a->ndim = w->ndim;
    memcpy(a->shape, w->shape, sizeof a->shape);
    a->numel = w->numel;
    memcpy(a->data, w->data, (size_t)w->numel * sizeof(float));
}

static tg_tensor *attend(tg_additive_attention *m, tg_tensor *query, tg_tensor *keys, tg_tensor *values,
                         const tg_tensor *mask)
{
    const char *op = "tg_additive_attention_forward";
    char s1[64], s2[64];
    check_values(op, m, values);
    tg_check_ptr(op, query, "query");
    tg_check_ptr(op, keys, "projected keys");
    const int B = values->shape[0], T = values->shape[1], A = m->attn_size;
    if (query->ndim != 2 || query->shape[0] != B || query->shape[1] != m->query_size)
        tg_error(op, "expects query (B=%d, query_size=%d) for values %s, got %s", B, m->query_size,
                 tg_shape_str(s1, values->ndim, values->shape), tg_shape_str(s2, query->ndim, query->shape));
    if (keys->ndim != 3 || keys->shape[0] != B || keys->shape[1] != T || keys->shape[2] != A)
        tg_error(op, "expects projected keys (B=%d, T=%d, attn_size=%d), got %s", B, T, A,
                 tg_shape_str(s1, keys->ndim, keys->shape));
    if (mask && !(mask->ndim == 2 && mask->shape[0] == B && mask->shape[1] == T))
        tg_error(op, "expects mask (B=%d, T=%d) for values %s, got %s", B, T,
                 tg_shape_str(s1, values->ndim, values->shape), tg_shape_str(s2, mask->ndim, mask->shape));
    tg_tensor *q = tg_reshape(tg_linear_forward(m->W_query, query), TG_SHAPE(B, 1, A));
    tg_tensor *e = tg_tanh(tg_add(q, keys)); /* (B, T, A) */
    /* w_v(e) and sum_j alpha_j h_j as a broadcast product and a sum: the same
     * maths as the Linear and the (1, T) @ (T, Dk) matmul, without gemms that
     * have a single output column or row */
    tg_tensor *scores = tg_sum_dim(tg_mul(e, m->w_v->weight), -1, false); /* (B, T) */
    if (mask)
        scores = tg_masked_fill(scores, mask, -INFINITY);
    tg_tensor *alpha = tg_softmax(scores, -1); /* (B, T) */
    if (m->keep_attn)
        keep_weights(m, alpha);
    return tg_sum_dim(tg_mul(tg_reshape(alpha, TG_SHAPE(B, T, 1)), values), 1, false); /* (B, Dk) */
}

tg_tensor *tg_additive_attention_attend(tg_additive_attention *m, tg_tensor *query, tg_tensor *keys,
                                        tg_tensor *values, const tg_tensor *mask)
{
    check_values("tg_additive_attention_forward", m, values);
    tg_module_enter(&m->base);
    tg_tensor *c = attend(m, query, keys, values, mask);
    tg_module_leave(&m->base);
    return c;
}

tg_tensor *tg_additive_attention_forward(tg_additive_attention *m, tg_tensor *query, tg_tensor *values,
                                         const tg_tensor *mask)
{
    check_values("tg_additive_attention_forward", m, values);
    tg_module_enter(&m->base);
    tg_tensor *c = attend(m, query, tg_linear_forward(m->W_key, values), values, mask);
    tg_module_leave(&m->base);
    return c;
}

const tg_tensor *tg_additive_attention_weights(const tg_additive_attention *m)
{
    tg_check_ptr("tg_additive_attention_weights", m, "module");
    return m->attn_weights;
}

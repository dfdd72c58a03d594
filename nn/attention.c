/*
 * nn/attention.c — the chapter-3 attention family, as the book writes it.
 *
 *   SelfAttention_v1        x (..., T, d_in) -> (..., T, d_out)   raw W matrices, x @ W
 *   SelfAttention_v2        x (..., T, d_in) -> (..., T, d_out)   three Linear layers
 *   CausalAttention         x (B, T, d_in)   -> (B, T, d_out)     + causal mask, dropout
 *   MultiHeadAttentionWrapper x (B, T, d_in) -> (B, T, H*d_out)   H CausalAttention heads
 *   MultiHeadAttention      x (B, T, d_in)   -> (B, T, d_out)     split heads, out_proj
 *
 * Constructors draw in the order of the book's __init__ (W_query, W_key,
 * W_value, then out_proj), so the same seed gives torch's weights. The
 * causal mask is a (context_length, context_length) buffer, 1 above the
 * diagonal (torch.triu(ones, diagonal=1)); a forward over T tokens uses its
 * top-left T x T corner, like the book's mask[:T, :T].
 */
#include "module_util.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static void check_dims(const char *op, int d_in, int d_out)
{
    if (d_in < 1 || d_out < 1)
        tg_error(op, "d_in=%d and d_out=%d must be >= 1", d_in, d_out);
}

/* Everything a causal module's constructor takes, checked before anything
 * is allocated (so an error handler that returns control leaks nothing). */
static void check_causal_config(const char *op, int d_in, int d_out, int context_length, float dropout)
{
    check_dims(op, d_in, d_out);
    if (context_length < 1)
        tg_error(op, "context_length=%d must be >= 1", context_length);
    if (!(dropout >= 0.0f && dropout <= 1.0f))
        tg_error(op, "dropout probability has to be between 0 and 1, but got %g", dropout);
}

/* x must be (..., T, d_in) with at least two dims. */
static void check_tokens_input(const char *op, const tg_tensor *x, int d_in)
{
    if (x->ndim < 2 || x->shape[x->ndim - 1] != d_in) {
        char s[64];
        tg_error(op, "expects input (..., num_tokens, d_in=%d), got %s", d_in, tg_shape_str(s, x->ndim, x->shape));
    }
}

/* x must be (batch, num_tokens, d_in) with num_tokens <= context_length. */
static void check_batch_input(const char *op, const tg_tensor *x, int d_in, int context_length)
{
    char s[64];
    if (x->ndim != 3 || x->shape[2] != d_in)
        tg_error(op, "expects input (batch, num_tokens, d_in=%d), got %s", d_in, tg_shape_str(s, x->ndim, x->shape));
    if (x->shape[1] > context_length)
        tg_error(op, "input %s has %d tokens, more than context_length=%d", tg_shape_str(s, x->ndim, x->shape),
                 x->shape[1], context_length);
}

/* torch.triu(torch.ones(n, n), diagonal=1) on the heap. */
static tg_tensor *causal_mask_buffer(int n)
{
    tg_tensor *m = tg_ones(TG_SHAPE(n, n));
    tg_triu_(m, 1);
    return m;
}

/* The book's self.mask.bool()[:T, :T]: the buffer itself when T is the full
 * context, else a copy of its top-left corner in the tape's arena. */
static tg_tensor *causal_mask_slice(tg_tensor *mask, int T)
{
    const int n = mask->shape[0];
    if (T == n)
        return mask;
    tg_tensor *s = tg_new_tensor(TG_SHAPE(T, T));
    for (int i = 0; i < T; i++)
        memcpy(s->data + (size_t)i * T, mask->data + (size_t)i * n, (size_t)T * sizeof(float));
    return s;
}

/* softmax(scores / sqrt(d_k)) over the last dim. */
static tg_tensor *scaled_softmax(tg_tensor *scores, int d_k)
{
    return tg_softmax(tg_mul_scalar(scores, (float)(1.0 / sqrt((double)d_k))), -1);
}

/* ---------------------------------------------------------------- SelfAttention_v1 */

static tg_tensor *self_attention_v1_forward(tg_module *base, tg_tensor *x)
{
    tg_self_attention_v1 *m = (tg_self_attention_v1 *)base;
    tg_nn_check_forward("tg_self_attention_v1_forward", m, x);
    check_tokens_input("tg_self_attention_v1_forward", x, m->d_in);
    tg_tensor *keys = tg_matmul(x, m->W_key);       /* (..., T, d_out) */
    tg_tensor *queries = tg_matmul(x, m->W_query);
    tg_tensor *values = tg_matmul(x, m->W_value);
    tg_tensor *attn_scores = tg_matmul(queries, tg_transpose(keys, -2, -1)); /* omega, (..., T, T) */
    tg_tensor *attn_weights = scaled_softmax(attn_scores, keys->shape[keys->ndim - 1]);
    return tg_matmul(attn_weights, values);
}

const tg_module_type tg_self_attention_v1_type = {"SelfAttention_v1", self_attention_v1_forward, NULL};

tg_self_attention_v1 *tg_self_attention_v1_new(int d_in, int d_out, tg_generator *g)
{
    check_dims("tg_self_attention_v1_new", d_in, d_out);
    g = tg_nn_gen(g);
    tg_self_attention_v1 *m = tg_module_new(sizeof *m, &tg_self_attention_v1_type);
    m->d_in = d_in;
    m->d_out = d_out;
    /* nn.Parameter(torch.rand(d_in, d_out)), three times, in this order */
    m->W_query = tg_module_add_param(&m->base, "W_query", tg_rand(g, TG_SHAPE(d_in, d_out)));
    m->W_key = tg_module_add_param(&m->base, "W_key", tg_rand(g, TG_SHAPE(d_in, d_out)));
    m->W_value = tg_module_add_param(&m->base, "W_value", tg_rand(g, TG_SHAPE(d_in, d_out)));
    return m;
}

tg_tensor *tg_self_attention_v1_forward(tg_self_attention_v1 *m, tg_tensor *x)
{
    tg_check_ptr("tg_self_attention_v1_forward", m, "module");
    return tg_module_forward(&m->base, x);
}

/* ---------------------------------------------------------------- SelfAttention_v2 */

/* W_query, W_key, W_value: Linear(d_in, d_out) children, drawn in that order. */
static void add_qkv(tg_module *base, tg_linear **q, tg_linear **k, tg_linear **v, int d_in, int d_out,
                    bool qkv_bias, tg_generator *g)
{
    *q = (tg_linear *)tg_module_add_child(base, "W_query", &tg_linear_new(d_in, d_out, qkv_bias, g)->base);
    *k = (tg_linear *)tg_module_add_child(base, "W_key", &tg_linear_new(d_in, d_out, qkv_bias, g)->base);
    *v = (tg_linear *)tg_module_add_child(base, "W_value", &tg_linear_new(d_in, d_out, qkv_bias, g)->base);
}

static tg_tensor *self_attention_v2_forward(tg_module *base, tg_tensor *x)
{
    tg_self_attention_v2 *m = (tg_self_attention_v2 *)base;
    tg_nn_check_forward("tg_self_attention_v2_forward", m, x);
    check_tokens_input("tg_self_attention_v2_forward", x, m->d_in);
    tg_tensor *keys = tg_linear_forward(m->W_key, x);
    tg_tensor *queries = tg_linear_forward(m->W_query, x);
    tg_tensor *values = tg_linear_forward(m->W_value, x);
    tg_tensor *attn_scores = tg_matmul(queries, tg_transpose(keys, -2, -1));
    tg_tensor *attn_weights = scaled_softmax(attn_scores, keys->shape[keys->ndim - 1]);
    return tg_matmul(attn_weights, values);
}

const tg_module_type tg_self_attention_v2_type = {"SelfAttention_v2", self_attention_v2_forward, NULL};

tg_self_attention_v2 *tg_self_attention_v2_new(int d_in, int d_out, bool qkv_bias, tg_generator *g)
{
    check_dims("tg_self_attention_v2_new", d_in, d_out);
    g = tg_nn_gen(g);
    tg_self_attention_v2 *m = tg_module_new(sizeof *m, &tg_self_attention_v2_type);
    m->d_in = d_in;
    m->d_out = d_out;
    add_qkv(&m->base, &m->W_query, &m->W_key, &m->W_value, d_in, d_out, qkv_bias, g);
    return m;
}

tg_tensor *tg_self_attention_v2_forward(tg_self_attention_v2 *m, tg_tensor *x)
{
    tg_check_ptr("tg_self_attention_v2_forward", m, "module");
    return tg_module_forward(&m->base, x);
}

/* ---------------------------------------------------------------- CausalAttention */

static tg_tensor *causal_attention_forward(tg_module *base, tg_tensor *x)
{
    tg_causal_attention *m = (tg_causal_attention *)base;
    tg_nn_check_forward("tg_causal_attention_forward", m, x);
    check_batch_input("tg_causal_attention_forward", x, m->d_in, m->context_length);
    const int num_tokens = x->shape[1];
    tg_tensor *keys = tg_linear_forward(m->W_key, x);       /* (b, T, d_out) */
    tg_tensor *queries = tg_linear_forward(m->W_query, x);
    tg_tensor *values = tg_linear_forward(m->W_value, x);

    tg_tensor *attn_scores = tg_matmul(queries, tg_transpose(keys, 1, 2)); /* (b, T, T) */
    attn_scores = tg_masked_fill(attn_scores, causal_mask_slice(m->mask, num_tokens), -INFINITY);
    tg_tensor *attn_weights = scaled_softmax(attn_scores, keys->shape[2]);
    attn_weights = tg_dropout_mod_forward(m->dropout, attn_weights);

    return tg_matmul(attn_weights, values); /* (b, T, d_out) */
}

const tg_module_type tg_causal_attention_type = {"CausalAttention", causal_attention_forward, NULL};

tg_causal_attention *tg_causal_attention_new(int d_in, int d_out, int context_length, float dropout,
                                             bool qkv_bias, tg_generator *g)
{
    check_causal_config("tg_causal_attention_new", d_in, d_out, context_length, dropout);
    g = tg_nn_gen(g);
    tg_causal_attention *m = tg_module_new(sizeof *m, &tg_causal_attention_type);
    m->d_in = d_in;
    m->d_out = d_out;
    m->context_length = context_length;
    add_qkv(&m->base, &m->W_query, &m->W_key, &m->W_value, d_in, d_out, qkv_bias, g);
    m->dropout = (tg_dropout_mod *)tg_module_add_child(&m->base, "dropout", &tg_dropout_mod_new(dropout, g)->base);
    m->mask = tg_module_add_buffer(&m->base, "mask", causal_mask_buffer(context_length));
    return m;
}

tg_tensor *tg_causal_attention_forward(tg_causal_attention *m, tg_tensor *x)
{
    tg_check_ptr("tg_causal_attention_forward", m, "module");
    return tg_module_forward(&m->base, x);
}

/* ---------------------------------------------------------------- MultiHeadAttentionWrapper */

static tg_tensor *mha_wrapper_forward(tg_module *base, tg_tensor *x)
{
    tg_mha_wrapper *m = (tg_mha_wrapper *)base;
    tg_nn_check_forward("tg_mha_wrapper_forward", m, x);
    check_batch_input("tg_mha_wrapper_forward", x, m->d_in, m->context_length);
    /* torch.cat([head(x) for head in self.heads], dim=-1) */
    tg_tensor **outs = tg_tape_alloc((size_t)m->num_heads * sizeof *outs);
    tg_module_enter(m->heads); /* the ModuleList's scope, as its own forward would */
    for (int h = 0; h < m->num_heads; h++)
        outs[h] = tg_module_forward(tg_module_child_at(m->heads, h), x);
    tg_module_leave(m->heads);
    return m->num_heads == 1 ? outs[0] : tg_concat(outs, m->num_heads, -1);
}

const tg_module_type tg_mha_wrapper_type = {"MultiHeadAttentionWrapper", mha_wrapper_forward, NULL};

tg_mha_wrapper *tg_mha_wrapper_new(int d_in, int d_out, int context_length, float dropout, int num_heads,
                                   bool qkv_bias, tg_generator *g)
{
    if (num_heads < 1)
        tg_error("tg_mha_wrapper_new", "num_heads=%d must be >= 1", num_heads);
    check_causal_config("tg_mha_wrapper_new", d_in, d_out, context_length, dropout);
    if (d_out > INT_MAX / num_heads)
        tg_error("tg_mha_wrapper_new", "num_heads=%d * d_out=%d overflows the output dim", num_heads, d_out);
    tg_mha_wrapper *m = tg_module_new(sizeof *m, &tg_mha_wrapper_type);
    m->num_heads = num_heads;
    m->d_in = d_in;
    m->context_length = context_length;
    m->heads = tg_module_add_child(&m->base, "heads", tg_module_list_new());
    for (int h = 0; h < num_heads; h++)
        tg_module_append(m->heads, &tg_causal_attention_new(d_in, d_out, context_length, dropout, qkv_bias, g)->base);
    return m;
}

tg_tensor *tg_mha_wrapper_forward(tg_mha_wrapper *m, tg_tensor *x)
{
    tg_check_ptr("tg_mha_wrapper_forward", m, "module");
    return tg_module_forward(&m->base, x);
}

/* ---------------------------------------------------------------- MultiHeadAttention */

/* m->attn_weights shaped (B, H, T, T), its buffer grown only when it does
 * not fit (so a training loop with fixed shapes mallocs once). */
static tg_tensor *attn_weights_buffer(tg_mha *m, int b, int H, int T)
{
    const int64_t numel = (int64_t)b * H * T * T;
    if (!m->attn_weights || m->attn_cap < numel) {
        tg_free(m->attn_weights);
        m->attn_weights = tg_set_name(tg_empty(TG_SHAPE(b, H, T, T)), "attn_weights");
        m->attn_cap = numel;
    }
    tg_tensor *a = m->attn_weights;
    const int shape[4] = {b, H, T, T};
    a->ndim = 4;
    memcpy(a->shape, shape, sizeof shape);
    a->numel = numel;
    return a;
}

static tg_tensor *mha_forward(tg_module *base, tg_tensor *x)
{
    tg_mha *m = (tg_mha *)base;
    tg_nn_check_forward("tg_mha_forward", m, x);
    check_batch_input("tg_mha_forward", x, m->d_in, m->context_length);
    const int b = x->shape[0], num_tokens = x->shape[1];
    const int H = m->num_heads, hd = m->head_dim;

    tg_tensor *keys = tg_linear_forward(m->W_key, x); /* (b, T, d_out) */
    tg_tensor *queries = tg_linear_forward(m->W_query, x);
    tg_tensor *values = tg_linear_forward(m->W_value, x);

    /* split the last dim into heads: (b, T, d_out) -> (b, T, H, hd) */
    keys = tg_view(keys, TG_SHAPE(b, num_tokens, H, hd));
    values = tg_view(values, TG_SHAPE(b, num_tokens, H, hd));
    queries = tg_view(queries, TG_SHAPE(b, num_tokens, H, hd));

    /* scaled dot-product attention per head, in one op with the same bits as
     * the book's steps: (b, T, H, hd) -> (b, H, T, hd), attn_scores = queries
     * @ keys^T, masked_fill with -inf above the diagonal, softmax(attn_scores
     * / sqrt(hd)), dropout, @ values, (b, H, T, hd) -> (b, T, H, hd); the op
     * reads the heads in place, so the transposes cost no copies */
    tg_tensor *weights = m->keep_attn ? attn_weights_buffer(m, b, H, num_tokens) : NULL;
    tg_dropout_mod *drop = m->dropout;
    tg_tensor *context_vec = tg_sdpa_causal_heads_last(queries, keys, values, drop->p, drop->base.training,
                                                       tg_nn_gen(drop->g), weights); /* (b, T, H, hd) */

    /* merge heads: (b, T, H, hd) -> (b, T, d_out) */
    context_vec = tg_view(context_vec, TG_SHAPE(b, num_tokens, m->d_out));
    return tg_linear_forward(m->out_proj, context_vec);
}

const tg_tensor *tg_mha_attn_weights(const tg_mha *m)
{
    tg_check_ptr("tg_mha_attn_weights", m, "module");
    return m->attn_weights;
}

/* attn_weights is a scratch copy, not a registered buffer (its size follows the input). */
static void mha_release(tg_module *base) { tg_free(((tg_mha *)base)->attn_weights); }

const tg_module_type tg_mha_type = {"MultiHeadAttention", mha_forward, mha_release};

tg_mha *tg_mha_new(int d_in, int d_out, int context_length, float dropout, int num_heads, bool qkv_bias,
                   tg_generator *g)
{
    check_causal_config("tg_mha_new", d_in, d_out, context_length, dropout);
    if (num_heads < 1 || d_out % num_heads != 0)
        tg_error("tg_mha_new", "d_out=%d must be divisible by num_heads=%d", d_out, num_heads);
    g = tg_nn_gen(g);
    tg_mha *m = tg_module_new(sizeof *m, &tg_mha_type);
    m->d_in = d_in;
    m->d_out = d_out;
    m->context_length = context_length;
    m->num_heads = num_heads;
    m->head_dim = d_out / num_heads;
    m->keep_attn = true;
    add_qkv(&m->base, &m->W_query, &m->W_key, &m->W_value, d_in, d_out, qkv_bias, g);
    m->out_proj = (tg_linear *)tg_module_add_child(&m->base, "out_proj", &tg_linear_new(d_out, d_out, true, g)->base);
    m->dropout = (tg_dropout_mod *)tg_module_add_child(&m->base, "dropout", &tg_dropout_mod_new(dropout, g)->base);
    m->mask = tg_module_add_buffer(&m->base, "mask", causal_mask_buffer(context_length));
    return m;
}

tg_tensor *tg_mha_forward(tg_mha *m, tg_tensor *x)
{
    tg_check_ptr("tg_mha_forward", m, "module");
    return tg_module_forward(&m->base, x);
}

/*
 * nn/layers.c — the basic modules: Linear, Dropout, Softmax, Embedding,
 * LayerNorm, GELU and the book's FeedForward.
 *
 *   Linear       x (..., in)  -> (..., out)        y = x W^T + b
 *   Dropout      x (any)      -> same shape
 *   Softmax      x (any)      -> same shape        over dim
 *   Embedding    ids (shape)  -> shape + [dim]
 *   LayerNorm    x (..., d)   -> (..., d)
 *   GELU         x (any)      -> same shape        tanh approximation
 *   FeedForward  x (..., d)   -> (..., d)          Linear(d,4d), GELU, Linear(4d,d)
 *
 * Initial values come from the caller's generator in torch's order, with
 * torch's bounds computed in double exactly as torch.nn.init does, so the
 * same seed gives bit-identical weights.
 */
#include "module_util.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A heap leaf that requires grad (a parameter). */
static tg_tensor *param(tg_tensor *t, const char *name)
{
    tg_set_name(t, name);
    return tg_requires_grad(t, true);
}

/* Checks that x's last dim is want; names the module and both shapes. */
static void check_last_dim(const char *op, const tg_tensor *x, int want, const char *what)
{
    if (!x)
        tg_error(op, "input is NULL");
    if (x->ndim < 1 || x->shape[x->ndim - 1] != want) {
        char s[64];
        tg_error(op, "expects input (..., %s=%d), got %s", what, want, tg_shape_str(s, x->ndim, x->shape));
    }
}

/* ---------------------------------------------------------------- Linear */

tg_linear *tg_linear_new(int in_features, int out_features, bool bias, tg_generator *g)
{
    if (in_features < 1 || out_features < 1)
        tg_error("tg_linear_new", "in_features=%d and out_features=%d must be >= 1", in_features, out_features);
    g = tg_nn_gen(g);
    tg_linear *m = tg_nn_alloc(sizeof *m, "tg_linear_new");
    m->in_features = in_features;
    m->out_features = out_features;
    /* torch: kaiming_uniform_(weight, a=sqrt(5)), i.e. gain = sqrt(2/(1+a^2)),
     * bound = sqrt(3) * gain / sqrt(fan_in); then bias ~ U(±1/sqrt(fan_in)).
     * Both bounds are computed in double as Python does (they are 1/sqrt(in)
     * up to the last bit, and the last bit matters for bit-exact weights). */
    const double a = sqrt(5.0);
    const double gain = sqrt(2.0 / (1.0 + a * a));
    const double wbound = sqrt(3.0) * (gain / sqrt((double)in_features));
    m->weight = param(tg_empty(TG_SHAPE(out_features, in_features)), "weight");
    tg_uniform_(m->weight, (float)-wbound, (float)wbound, g);
    if (bias) {
        const double bbound = 1.0 / sqrt((double)in_features);
        m->bias = param(tg_empty(TG_SHAPE(out_features)), "bias");
        tg_uniform_(m->bias, (float)-bbound, (float)bbound, g);
    }
    return m;
}

tg_tensor *tg_linear_forward(tg_linear *m, tg_tensor *x)
{
    tg_nn_check_forward("tg_linear_forward", m, x);
    check_last_dim("tg_linear_forward", x, m->in_features, "in_features");
    /* torch accepts a plain vector too: (in) -> (out) */
    return tg_affine(x, m->weight, m->bias);
}

void tg_linear_params(tg_linear *m, tg_params *list, const char *prefix)
{
    tg_nn_check_params_call("tg_linear_params", m, list);
    tg_params_add(list, prefix, "weight", m->weight);
    if (m->bias)
        tg_params_add(list, prefix, "bias", m->bias);
}

void tg_linear_free(tg_linear *m)
{
    if (!m)
        return;
    tg_free(m->weight);
    tg_free(m->bias);
    free(m);
}

/* ---------------------------------------------------------------- Dropout */

tg_dropout_mod *tg_dropout_mod_new(float p, tg_generator *g)
{
    if (!(p >= 0.0f && p <= 1.0f))
        tg_error("tg_dropout_mod_new", "dropout probability has to be between 0 and 1, but got %g", p);
    tg_dropout_mod *m = tg_nn_alloc(sizeof *m, "tg_dropout_mod_new");
    m->p = p;
    m->training = true;
    m->g = g;
    return m;
}

tg_tensor *tg_dropout_mod_forward(tg_dropout_mod *m, tg_tensor *x)
{
    tg_nn_check_forward("tg_dropout_mod_forward", m, x);
    return tg_dropout(x, m->p, m->training, tg_nn_gen(m->g));
}

void tg_dropout_mod_train(tg_dropout_mod *m, bool on)
{
    tg_check_ptr("tg_dropout_mod_train", m, "module");
    m->training = on;
}

void tg_dropout_mod_free(tg_dropout_mod *m) { free(m); }

/* ---------------------------------------------------------------- Softmax */

tg_softmax_mod *tg_softmax_mod_new(int dim)
{
    tg_softmax_mod *m = tg_nn_alloc(sizeof *m, "tg_softmax_mod_new");
    m->dim = dim;
    return m;
}

tg_tensor *tg_softmax_mod_forward(tg_softmax_mod *m, tg_tensor *x)
{
    tg_nn_check_forward("tg_softmax_mod_forward", m, x);
    return tg_softmax(x, m->dim);
}

void tg_softmax_mod_free(tg_softmax_mod *m) { free(m); }

/* ---------------------------------------------------------------- Embedding */

tg_embedding_mod *tg_embedding_mod_new(int num_embeddings, int embedding_dim, tg_generator *g)
{
    if (num_embeddings < 1 || embedding_dim < 1)
        tg_error("tg_embedding_mod_new", "num_embeddings=%d and embedding_dim=%d must be >= 1", num_embeddings,
                 embedding_dim);
    tg_embedding_mod *m = tg_nn_alloc(sizeof *m, "tg_embedding_mod_new");
    m->num_embeddings = num_embeddings;
    m->embedding_dim = embedding_dim;
    m->weight = param(tg_empty(TG_SHAPE(num_embeddings, embedding_dim)), "weight");
    tg_normal_(m->weight, 0.0f, 1.0f, tg_nn_gen(g)); /* torch: init.normal_(weight) */
    return m;
}

tg_tensor *tg_embedding_mod_forward(tg_embedding_mod *m, const int32_t *ids, int ndim, const int *shape)
{
    tg_check_ptr("tg_embedding_mod_forward", m, "module");
    if (ndim > 0 && !shape)
        tg_error("tg_embedding_mod_forward", "ids shape is NULL for %d dimensions", ndim);
    return tg_embedding(m->weight, ids, ndim, shape);
}

void tg_embedding_mod_params(tg_embedding_mod *m, tg_params *list, const char *prefix)
{
    tg_nn_check_params_call("tg_embedding_mod_params", m, list);
    tg_params_add(list, prefix, "weight", m->weight);
}

void tg_embedding_mod_free(tg_embedding_mod *m)
{
    if (!m)
        return;
    tg_free(m->weight);
    free(m);
}

/* ---------------------------------------------------------------- LayerNorm */

tg_layernorm_mod *tg_layernorm_mod_new(int emb_dim)
{
    if (emb_dim < 1)
        tg_error("tg_layernorm_mod_new", "emb_dim=%d must be >= 1", emb_dim);
    tg_layernorm_mod *m = tg_nn_alloc(sizeof *m, "tg_layernorm_mod_new");
    m->emb_dim = emb_dim;
    m->eps = 1e-5f;
    m->scale = param(tg_ones(TG_SHAPE(emb_dim)), "scale");
    m->shift = param(tg_zeros(TG_SHAPE(emb_dim)), "shift");
    return m;
}

tg_tensor *tg_layernorm_mod_forward(tg_layernorm_mod *m, tg_tensor *x)
{
    tg_nn_check_forward("tg_layernorm_mod_forward", m, x);
    check_last_dim("tg_layernorm_mod_forward", x, m->emb_dim, "emb_dim");
    return tg_layernorm(x, m->scale, m->shift, m->eps);
}

void tg_layernorm_mod_params(tg_layernorm_mod *m, tg_params *list, const char *prefix)
{
    tg_nn_check_params_call("tg_layernorm_mod_params", m, list);
    tg_params_add(list, prefix, "scale", m->scale);
    tg_params_add(list, prefix, "shift", m->shift);
}

void tg_layernorm_mod_free(tg_layernorm_mod *m)
{
    if (!m)
        return;
    tg_free(m->scale);
    tg_free(m->shift);
    free(m);
}

/* ---------------------------------------------------------------- GELU */

tg_gelu_mod *tg_gelu_mod_new(void) { return tg_nn_alloc(sizeof(tg_gelu_mod), "tg_gelu_mod_new"); }

tg_tensor *tg_gelu_mod_forward(tg_gelu_mod *m, tg_tensor *x)
{
    tg_nn_check_forward("tg_gelu_mod_forward", m, x);
    return tg_gelu(x);
}

void tg_gelu_mod_free(tg_gelu_mod *m) { free(m); }

/* ---------------------------------------------------------------- FeedForward */

tg_feedforward *tg_feedforward_new(int emb_dim, tg_generator *g)
{
    if (emb_dim < 1 || emb_dim > INT_MAX / 4)
        tg_error("tg_feedforward_new", "emb_dim=%d must be in [1, %d]", emb_dim, INT_MAX / 4);
    tg_feedforward *m = tg_nn_alloc(sizeof *m, "tg_feedforward_new");
    m->emb_dim = emb_dim;
    m->fc1 = tg_linear_new(emb_dim, 4 * emb_dim, true, g);
    m->gelu = tg_gelu_mod_new();
    m->fc2 = tg_linear_new(4 * emb_dim, emb_dim, true, g);
    return m;
}

tg_tensor *tg_feedforward_forward(tg_feedforward *m, tg_tensor *x)
{
    tg_nn_check_forward("tg_feedforward_forward", m, x);
    check_last_dim("tg_feedforward_forward", x, m->emb_dim, "emb_dim");
    tg_tensor *h = tg_linear_forward(m->fc1, x); /* (..., 4d) */
    h = tg_gelu_mod_forward(m->gelu, h);
    return tg_linear_forward(m->fc2, h);         /* (..., d) */
}

void tg_feedforward_params(tg_feedforward *m, tg_params *list, const char *prefix)
{
    tg_nn_check_params_call("tg_feedforward_params", m, list);
    char buf[256];
    tg_linear_params(m->fc1, list, tg_nn_child_prefix(buf, sizeof buf, prefix, "layers.0"));
    tg_linear_params(m->fc2, list, tg_nn_child_prefix(buf, sizeof buf, prefix, "layers.2"));
}

void tg_feedforward_free(tg_feedforward *m)
{
    if (!m)
        return;
    tg_linear_free(m->fc1);
    tg_gelu_mod_free(m->gelu);
    tg_linear_free(m->fc2);
    free(m);
}

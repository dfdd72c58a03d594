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

static tg_tensor *linear_forward(tg_module *base, tg_tensor *x)
{
    tg_linear *m = (tg_linear *)base;
    tg_nn_check_forward("tg_linear_forward", m, x);
    check_last_dim("tg_linear_forward", x, m->in_features, "in_features");
    /* torch accepts a plain vector too: (in) -> (out) */
    return tg_affine(x, m->weight, m->bias);
}

const tg_module_type tg_linear_type = {"Linear", linear_forward, NULL};

tg_linear *tg_linear_new(int in_features, int out_features, bool bias, tg_generator *g)
{
    if (in_features < 1 || out_features < 1)
        tg_error("tg_linear_new", "in_features=%d and out_features=%d must be >= 1", in_features, out_features);
    g = tg_nn_gen(g);
    tg_linear *m = tg_module_new(sizeof *m, &tg_linear_type);
    m->in_features = in_features;
    m->out_features = out_features;
    /* torch: kaiming_uniform_(weight, a=sqrt(5)), i.e. gain = sqrt(2/(1+a^2)),
     * bound = sqrt(3) * gain / sqrt(fan_in); then bias ~ U(±1/sqrt(fan_in)).
     * Both bounds are computed in double as Python does (they are 1/sqrt(in)
     * up to the last bit, and the last bit matters for bit-exact weights). */
    const double a = sqrt(5.0);
    const double gain = sqrt(2.0 / (1.0 + a * a));
    const double wbound = sqrt(3.0) * (gain / sqrt((double)in_features));
    m->weight = tg_module_add_param(&m->base, "weight", tg_empty(TG_SHAPE(out_features, in_features)));
    tg_uniform_(m->weight, (float)-wbound, (float)wbound, g);
    if (bias) {
        const double bbound = 1.0 / sqrt((double)in_features);
        m->bias = tg_module_add_param(&m->base, "bias", tg_empty(TG_SHAPE(out_features)));
        tg_uniform_(m->bias, (float)-bbound, (float)bbound, g);
    }
    return m;
}

tg_tensor *tg_linear_forward(tg_linear *m, tg_tensor *x)
{
    tg_check_ptr("tg_linear_forward", m, "module");
    return tg_module_forward(&m->base, x);
}

/* ---------------------------------------------------------------- Dropout */

static tg_tensor *dropout_forward(tg_module *base, tg_tensor *x)
{
    tg_dropout_mod *m = (tg_dropout_mod *)base;
    tg_nn_check_forward("tg_dropout_mod_forward", m, x);
    return tg_dropout(x, m->p, m->base.training, tg_nn_gen(m->g));
}

const tg_module_type tg_dropout_type = {"Dropout", dropout_forward, NULL};

tg_dropout_mod *tg_dropout_mod_new(float p, tg_generator *g)
{
    if (!(p >= 0.0f && p <= 1.0f))
        tg_error("tg_dropout_mod_new", "dropout probability has to be between 0 and 1, but got %g", p);
    tg_dropout_mod *m = tg_module_new(sizeof *m, &tg_dropout_type);
    m->p = p;
    m->g = g;
    return m;
}

tg_tensor *tg_dropout_mod_forward(tg_dropout_mod *m, tg_tensor *x)
{
    tg_check_ptr("tg_dropout_mod_forward", m, "module");
    return tg_module_forward(&m->base, x);
}

/* ---------------------------------------------------------------- Softmax */

static tg_tensor *softmax_forward(tg_module *base, tg_tensor *x)
{
    tg_softmax_mod *m = (tg_softmax_mod *)base;
    tg_nn_check_forward("tg_softmax_mod_forward", m, x);
    return tg_softmax(x, m->dim);
}

const tg_module_type tg_softmax_type = {"Softmax", softmax_forward, NULL};

tg_softmax_mod *tg_softmax_mod_new(int dim)
{
    tg_softmax_mod *m = tg_module_new(sizeof *m, &tg_softmax_type);
    m->dim = dim;
    return m;
}

tg_tensor *tg_softmax_mod_forward(tg_softmax_mod *m, tg_tensor *x)
{
    tg_check_ptr("tg_softmax_mod_forward", m, "module");
    return tg_module_forward(&m->base, x);
}

/* ---------------------------------------------------------------- Embedding */

/* Its input is ids, not a tensor: no single-input forward. */
const tg_module_type tg_embedding_type = {"Embedding", NULL, NULL};

tg_embedding_mod *tg_embedding_mod_new(int num_embeddings, int embedding_dim, tg_generator *g)
{
    if (num_embeddings < 1 || embedding_dim < 1)
        tg_error("tg_embedding_mod_new", "num_embeddings=%d and embedding_dim=%d must be >= 1", num_embeddings,
                 embedding_dim);
    tg_embedding_mod *m = tg_module_new(sizeof *m, &tg_embedding_type);
    m->num_embeddings = num_embeddings;
    m->embedding_dim = embedding_dim;
    m->weight = tg_module_add_param(&m->base, "weight", tg_empty(TG_SHAPE(num_embeddings, embedding_dim)));
    tg_normal_(m->weight, 0.0f, 1.0f, tg_nn_gen(g)); /* torch: init.normal_(weight) */
    return m;
}

tg_tensor *tg_embedding_mod_forward(tg_embedding_mod *m, const int32_t *ids, int ndim, const int *shape)
{
    tg_check_ptr("tg_embedding_mod_forward", m, "module");
    if (ndim > 0 && !shape)
        tg_error("tg_embedding_mod_forward", "ids shape is NULL for %d dimensions", ndim);
    tg_module_enter(&m->base); /* its tape scope, as tg_module_forward enters */
    tg_tensor *y = tg_embedding(m->weight, ids, ndim, shape);
    tg_module_leave(&m->base);
    return y;
}

/* ---------------------------------------------------------------- LayerNorm */

static tg_tensor *layernorm_forward(tg_module *base, tg_tensor *x)
{
    tg_layernorm_mod *m = (tg_layernorm_mod *)base;
    tg_nn_check_forward("tg_layernorm_mod_forward", m, x);
    check_last_dim("tg_layernorm_mod_forward", x, m->emb_dim, "emb_dim");
    return tg_layernorm(x, m->scale, m->shift, m->eps);
}

const tg_module_type tg_layernorm_type = {"LayerNorm", layernorm_forward, NULL};

tg_layernorm_mod *tg_layernorm_mod_new(int emb_dim)
{
    if (emb_dim < 1)
        tg_error("tg_layernorm_mod_new", "emb_dim=%d must be >= 1", emb_dim);
    tg_layernorm_mod *m = tg_module_new(sizeof *m, &tg_layernorm_type);
    m->emb_dim = emb_dim;
    m->eps = 1e-5f;
    m->scale = tg_module_add_param(&m->base, "scale", tg_ones(TG_SHAPE(emb_dim)));
    m->shift = tg_module_add_param(&m->base, "shift", tg_zeros(TG_SHAPE(emb_dim)));
    return m;
}

tg_tensor *tg_layernorm_mod_forward(tg_layernorm_mod *m, tg_tensor *x)
{
    tg_check_ptr("tg_layernorm_mod_forward", m, "module");
    return tg_module_forward(&m->base, x);
}

/* ---------------------------------------------------------------- GELU */

static tg_tensor *gelu_forward(tg_module *base, tg_tensor *x)
{
    tg_nn_check_forward("tg_gelu_mod_forward", base, x);
    return tg_gelu(x);
}

const tg_module_type tg_gelu_type = {"GELU", gelu_forward, NULL};

tg_gelu_mod *tg_gelu_mod_new(void) { return tg_module_new(sizeof(tg_gelu_mod), &tg_gelu_type); }

tg_tensor *tg_gelu_mod_forward(tg_gelu_mod *m, tg_tensor *x)
{
    tg_check_ptr("tg_gelu_mod_forward", m, "module");
    return tg_module_forward(&m->base, x);
}

/* ---------------------------------------------------------------- FeedForward */

static tg_tensor *feedforward_forward(tg_module *base, tg_tensor *x)
{
    tg_feedforward *m = (tg_feedforward *)base;
    tg_nn_check_forward("tg_feedforward_forward", m, x);
    check_last_dim("tg_feedforward_forward", x, m->emb_dim, "emb_dim");
    /* while the slots hold the built-in Linear, GELU, Linear, one fused op
     * with the same values that stores no (..., 4d) activation */
    tg_module *l = m->layers;
    tg_linear *up = l->n_children == 3 ? tg_module_as(tg_module_child_at(l, 0), &tg_linear_type) : NULL;
    tg_linear *down = up ? tg_module_as(tg_module_child_at(l, 2), &tg_linear_type) : NULL;
    if (down && tg_module_as(tg_module_child_at(l, 1), &tg_gelu_type) && up->out_features == down->in_features)
        return tg_feedforward_gelu(x, up->weight, up->bias, down->weight, down->bias);
    return tg_module_forward(m->layers, x); /* (..., d) -> (..., 4d) -> (..., d) */
}

const tg_module_type tg_feedforward_type = {"FeedForward", feedforward_forward, NULL};

tg_feedforward *tg_feedforward_new(int emb_dim, tg_generator *g)
{
    if (emb_dim < 1 || emb_dim > INT_MAX / 4)
        tg_error("tg_feedforward_new", "emb_dim=%d must be in [1, %d]", emb_dim, INT_MAX / 4);
    tg_feedforward *m = tg_module_new(sizeof *m, &tg_feedforward_type);
    m->emb_dim = emb_dim;
    m->layers = tg_module_add_child(&m->base, "layers", tg_sequential_new());
    tg_module_append(m->layers, &tg_linear_new(emb_dim, 4 * emb_dim, true, g)->base);
    tg_module_append(m->layers, &tg_gelu_mod_new()->base);
    tg_module_append(m->layers, &tg_linear_new(4 * emb_dim, emb_dim, true, g)->base);
    return m;
}

tg_tensor *tg_feedforward_forward(tg_feedforward *m, tg_tensor *x)
{
    tg_check_ptr("tg_feedforward_forward", m, "module");
    return tg_module_forward(&m->base, x);
}

/*
 * nn/nn.h — modules: the nn layer's public contract.
 *
 * Convention (PyTorch's nn.Module, in C):
 *   - a module is a struct whose first member is a tg_module header (its
 *     type, its named parameters, buffers and children, its train/eval flag);
 *   - tg_<mod>_new(...) builds it, drawing initial values from the caller's
 *     generator in PyTorch's order, so the same seed gives torch's weights,
 *     and registers each parameter and each child once, under its name;
 *   - everything else is a walk over that tree: tg_module_params (the
 *     state_dict names and order), tg_module_train, tg_module_free, and
 *     tg_module_forward for single-input modules;
 *   - typed entry points stay for callers who know the type:
 *     tg_<mod>_forward(m, x) runs it on the current tape.
 * docs/EXTENDING.md shows how to write a module of your own.
 */
#ifndef TG_NN_H
#define TG_NN_H

#include "../autograd/autograd.h"

struct tg_module;

/* ---------------------------------------------------------------- parameter lists */

typedef struct {
    char *name;       /* full dotted state_dict name, owned by the list */
    tg_tensor *t;     /* borrowed: the module owns the tensor */
} tg_param;

typedef struct {
    tg_param *items;
    int n, cap;
    /* Set for the lists tg_module_params returns: the module they list and
     * its generation then (optimizers check it; see tg_module_generation). */
    const struct tg_module *module;
    uint64_t generation;
} tg_params;

void tg_params_init(tg_params *p);
void tg_params_free(tg_params *p);            /* frees names, not tensors */
/* Appends t under prefix+name (prefix may be NULL or ""). */
void tg_params_add(tg_params *p, const char *prefix, const char *name, tg_tensor *t);
tg_tensor *tg_params_find(const tg_params *p, const char *name);  /* NULL if absent */
int64_t tg_params_numel(const tg_params *p);  /* total elements */
void tg_params_zero_grad(const tg_params *p);

/* ---------------------------------------------------------------- the module interface
 * A module is a heap struct whose FIRST member is `tg_module base;`. The
 * header holds what torch.nn.Module holds: the type, the named parameters
 * and buffers (owned), the named children (owned) and the training flag.
 *
 *   typedef struct { tg_module base; tg_tensor *weight; float eps; } rmsnorm;
 *   static tg_tensor *rmsnorm_forward(tg_module *base, tg_tensor *x) {...}
 *   static const tg_module_type rmsnorm_type = {"RMSNorm", rmsnorm_forward, NULL};
 *   rmsnorm *m = tg_module_new(sizeof *m, &rmsnorm_type);
 *   m->weight = tg_module_add_param(&m->base, "weight", tg_ones(TG_SHAPE(d)));
 *
 * Names. A child's path is its parent's path, a dot and its name
 * ("trf_blocks.0.att"); a root's path is "". Every parameter's and buffer's
 * tensor->name is its full dotted name from the root
 * ("trf_blocks.0.att.W_query.weight"), kept up to date as the module is
 * attached or replaced; the strings belong to the module.
 *
 * Children are either fixed (tg_module_add_child: the parent keeps a typed
 * pointer to them) or slots (tg_module_add_slot, and every entry of a
 * Sequential or ModuleList), which tg_module_replace may swap for any module
 * with a single-input forward, as a torch user writes
 * model.trf_blocks[0].norm1 = RMSNorm(768).
 *
 * Every structural change (a parameter, buffer or child added, a slot
 * replaced) bumps the generation of the module and of all its ancestors.
 * An optimizer records the generation of the module its parameter list came
 * from and stops with a clear error if it changed: build optimizers after
 * the swaps. */
typedef struct tg_module tg_module;

typedef struct tg_module_type {
    const char *name;       /* torch's class name: "Linear", "LayerNorm", ... */
    /* The single-input forward x -> y, or NULL for modules that take
     * something else (Embedding: ids; GPTModel: ids) or nothing (ModuleList).
     * Call it through tg_module_forward, never directly. */
    tg_tensor *(*forward)(tg_module *m, tg_tensor *x);
    /* Frees what the module holds beyond its registered parameters, buffers
     * and children (a scratch buffer, an id array), or NULL. The struct
     * itself is freed by tg_module_free. */
    void (*release)(tg_module *m);
} tg_module_type;

typedef struct {
    char *name;             /* "weight": the name inside its module */
    char *full;             /* "trf_blocks.0.att.W_query.weight": t->name points here */
    tg_tensor *t;           /* owned by the module */
} tg_module_tensor;

typedef struct {
    char *name;             /* "att", "0" */
    tg_module *m;           /* owned by the parent */
    tg_module **slot;       /* the parent's field mirroring m (slots), or NULL */
    bool replaceable;       /* a slot: tg_module_replace may swap it */
    bool needs_forward;     /* what fills it must have a single-input forward */
} tg_module_child;

struct tg_module {
    const tg_module_type *type;
    tg_module *parent;      /* NULL for a root */
    const char *name;       /* the name in the parent ("att"), "" for a root */
    char *path;             /* full dotted path, "" for a root */
    bool training;          /* true after construction, like torch */
    tg_module_tensor *params, *buffers;
    tg_module_child *children;
    int n_params, n_buffers, n_children;
    int cap_params, cap_buffers, cap_children;
    uint64_t generation;    /* structural changes in this subtree */
    tg_params list;         /* cache of tg_module_params */
    bool list_valid;
};

/* A zeroed heap module of size bytes (>= sizeof(tg_module)) with its header
 * initialised: type, root, training on. Free it with tg_module_free. */
void *tg_module_new(size_t size, const tg_module_type *type);
/* Frees m and everything registered in it: children (recursively),
 * parameters and buffers, then type->release and the struct. m must be a
 * root (a child is freed by its parent, or by tg_module_replace). NULL is
 * ignored. */
void tg_module_free(tg_module *m);

/* Registers t (a heap tensor; m takes ownership) as parameter name of m:
 * requires_grad on, t->name = its full name. Returns t. Registration order
 * is state_dict order. A tensor already registered in m's tree is an error
 * (each module frees its own: weights cannot be tied by registering twice). */
tg_tensor *tg_module_add_param(tg_module *m, const char *name, tg_tensor *t);
/* A buffer: owned and named like a parameter, but not a parameter (no
 * grad, not in tg_module_params, not in checkpoints), like torch's
 * register_buffer(persistent=False). Returns t. */
tg_tensor *tg_module_add_buffer(tg_module *m, const char *name, tg_tensor *t);
/* Registers child (a root) as a fixed child of m under name. Returns child. */
tg_module *tg_module_add_child(tg_module *m, const char *name, tg_module *child);
/* Registers child (a root with a single-input forward) as a replaceable
 * slot of m under name; *slot (the parent's field, may be NULL) is set to
 * child and kept pointing at whatever occupies the slot. Returns child. */
tg_module *tg_module_add_slot(tg_module *m, const char *name, tg_module **slot, tg_module *child);

/* The child of m at a dotted path relative to m ("trf_blocks.0.norm1"), or
 * NULL if there is none. "" is m itself. */
tg_module *tg_module_get(tg_module *m, const char *path);
/* The i-th registered child (0 <= i < m->n_children). */
tg_module *tg_module_child_at(const tg_module *m, int i);
/* m itself when it is of type t, else NULL (a checked downcast). */
void *tg_module_as(tg_module *m, const tg_module_type *t);

/* Replaces the slot at path (relative to m) with new_child, a root with a
 * single-input forward (any module in a ModuleList): the old module is freed, new_child takes its name
 * and its place in the parameter order (its parameters are renamed to their
 * full names), its training flag is set to the parent's, and the
 * generations of the parent and every ancestor are bumped. An optimizer
 * built before the swap refuses to step (tg_error); build it after. A path
 * that is not a slot, or a new module that is not a root or has no
 * single-input forward, is a tg_error naming both. */
void tg_module_replace(tg_module *m, const char *path, tg_module *new_child);

/* m's parameters under their names relative to m (m's own first, in
 * registration order, then each child's in registration order: torch's
 * named_parameters() / state_dict order). Built on first use and kept up to
 * date in place after every change of the subtree; owned by m. */
const tg_params *tg_module_params(tg_module *m);
uint64_t tg_module_generation(const tg_module *m);

/* Sets the training flag of m and of every descendant (torch's
 * train(on) / eval()). */
void tg_module_train(tg_module *m, bool on);

/* The single-input forward of any module, whatever its type: enters the
 * module's tape scope (its name, when it has a parent; see tg_scope_push),
 * runs type->forward, and leaves the scope. A module without a single-input
 * forward is a tg_error naming its type and path. Every typed forward of a
 * single-input module (tg_linear_forward, tg_mha_forward, ...) comes here. */
tg_tensor *tg_module_forward(tg_module *m, tg_tensor *x);
/* The scope tg_module_forward enters and leaves, for typed forwards that
 * take something else (ids, several inputs): enter on entry, leave before
 * returning. Nothing for a root. */
void tg_module_enter(const tg_module *m);
void tg_module_leave(const tg_module *m);

/* Sequential: its children, "0", "1", ..., run one after the other; every
 * entry is a slot. ModuleList: the same container without a forward. */
extern const tg_module_type tg_sequential_type, tg_module_list_type;
tg_module *tg_sequential_new(void);
tg_module *tg_module_list_new(void);
/* Appends child (a root) to a Sequential or ModuleList under the next index. */
void tg_module_append(tg_module *container, tg_module *child);

/* Each built-in module's type, for tg_module_as. */
extern const tg_module_type tg_linear_type, tg_dropout_type, tg_softmax_type, tg_embedding_type,
    tg_layernorm_type, tg_gelu_type, tg_feedforward_type, tg_self_attention_v1_type, tg_self_attention_v2_type,
    tg_causal_attention_type, tg_mha_wrapper_type, tg_mha_type, tg_gpt_block_type, tg_gpt_type;

/* ---------------------------------------------------------------- modules
 * Every constructor returns a heap module; free it (and all it holds) with
 * tg_module_free(&m->base). Parameters are heap leaves with requires_grad
 * on, registered under torch's names. Modules that draw (initial values,
 * dropout masks) take a generator at construction: initial values are drawn
 * from it at once, in torch's order, and modules with dropout keep the
 * pointer for their masks (torch uses its global generator for both; NULL
 * here means tg_default_generator()). The generator must outlive the module.
 * Forward functions return tape tensors (valid until tg_tape_reset). */

/* Linear: y = x W^T + b.  x (..., in) -> (..., out).
 * weight (out, in) ~ U(±1/sqrt(in)) drawn first, then bias (out) likewise
 * (torch's kaiming_uniform_(a=sqrt(5)) and bias init). Params: weight, bias. */
typedef struct {
    tg_module base;
    tg_tensor *weight;     /* (out_features, in_features) */
    tg_tensor *bias;       /* (out_features), NULL when built without bias */
    int in_features, out_features;
} tg_linear;
tg_linear *tg_linear_new(int in_features, int out_features, bool bias, tg_generator *g);
tg_tensor *tg_linear_forward(tg_linear *m, tg_tensor *x);

/* Dropout(p): train mode zeroes with probability p and scales survivors by
 * 1/(1-p) (mask from g as torch's); eval mode (base.training false) is the
 * identity. No parameters. Shape unchanged. */
typedef struct {
    tg_module base;
    float p;
    tg_generator *g;
} tg_dropout_mod;
tg_dropout_mod *tg_dropout_mod_new(float p, tg_generator *g);   /* 0 <= p <= 1 */
tg_tensor *tg_dropout_mod_forward(tg_dropout_mod *m, tg_tensor *x);

/* Softmax(dim). Shape unchanged. No parameters. */
typedef struct {
    tg_module base;
    int dim;
} tg_softmax_mod;
tg_softmax_mod *tg_softmax_mod_new(int dim);
tg_tensor *tg_softmax_mod_forward(tg_softmax_mod *m, tg_tensor *x);

/* Embedding(num, dim): ids (shape) -> shape + [dim]; weight (num, dim) ~ N(0,1)
 * (torch.nn.Embedding's init). Every id must be in [0, num). Params: weight.
 * Its input is ids, so it has no tg_module_forward; call it typed. */
typedef struct {
    tg_module base;
    tg_tensor *weight;     /* (num_embeddings, embedding_dim) */
    int num_embeddings, embedding_dim;
} tg_embedding_mod;
tg_embedding_mod *tg_embedding_mod_new(int num_embeddings, int embedding_dim, tg_generator *g);
tg_tensor *tg_embedding_mod_forward(tg_embedding_mod *m, const int32_t *ids, int ndim, const int *shape);

/* LayerNorm(emb_dim), the book's: normalise over the last dim with the biased
 * variance and eps 1e-5, then * scale + shift. x (..., emb_dim), shape kept.
 * scale = ones, shift = zeros (no random draws). Params: scale, shift. */
typedef struct {
    tg_module base;
    tg_tensor *scale, *shift;   /* (emb_dim) */
    float eps;
    int emb_dim;
} tg_layernorm_mod;
tg_layernorm_mod *tg_layernorm_mod_new(int emb_dim);
tg_tensor *tg_layernorm_mod_forward(tg_layernorm_mod *m, tg_tensor *x);

/* GELU, tanh approximation (the book's). Shape unchanged. No parameters. */
typedef struct {
    tg_module base;
} tg_gelu_mod;
tg_gelu_mod *tg_gelu_mod_new(void);
tg_tensor *tg_gelu_mod_forward(tg_gelu_mod *m, tg_tensor *x);

/* FeedForward(emb_dim), the book's: layers = Sequential(Linear(d, 4d), GELU,
 * Linear(4d, d)). x (..., d) -> (..., d). Draws layers.0 then layers.2.
 * The three entries of layers are slots ("layers.1" may become a SiLU).
 * Params: layers.0.weight, layers.0.bias, layers.2.weight, layers.2.bias. */
typedef struct {
    tg_module base;
    tg_module *layers;     /* Sequential: Linear (4d, d), GELU, Linear (d, 4d) */
    int emb_dim;
} tg_feedforward;
tg_feedforward *tg_feedforward_new(int emb_dim, tg_generator *g);
tg_tensor *tg_feedforward_forward(tg_feedforward *m, tg_tensor *x);

/* ---------------------------------------------------------------- chapter 3 attention */

/* SelfAttention_v1(d_in, d_out): raw (d_in, d_out) matrices drawn with rand in
 * the order W_query, W_key, W_value; q = x @ W_query, ...;
 * softmax(q k^T / sqrt(d_out)) @ v.  x (..., T, d_in) -> (..., T, d_out).
 * Params: W_query, W_key, W_value. */
typedef struct {
    tg_module base;
    tg_tensor *W_query, *W_key, *W_value;   /* (d_in, d_out) */
    int d_in, d_out;
} tg_self_attention_v1;
tg_self_attention_v1 *tg_self_attention_v1_new(int d_in, int d_out, tg_generator *g);
tg_tensor *tg_self_attention_v1_forward(tg_self_attention_v1 *m, tg_tensor *x);

/* SelfAttention_v2(d_in, d_out, qkv_bias): as v1 with three Linear layers
 * (drawn W_query, W_key, W_value). x (..., T, d_in) -> (..., T, d_out).
 * Params: W_query.weight, W_key.weight, W_value.weight (+ .bias each). */
typedef struct {
    tg_module base;
    tg_linear *W_query, *W_key, *W_value;
    int d_in, d_out;
} tg_self_attention_v2;
tg_self_attention_v2 *tg_self_attention_v2_new(int d_in, int d_out, bool qkv_bias, tg_generator *g);
tg_tensor *tg_self_attention_v2_forward(tg_self_attention_v2 *m, tg_tensor *x);

/* CausalAttention(d_in, d_out, context_length, dropout, qkv_bias): v2 plus a
 * causal mask (buffer "mask", not a parameter) and dropout on the attention
 * weights. x (B, T, d_in) with T <= context_length -> (B, T, d_out).
 * Params: as v2. */
typedef struct {
    tg_module base;
    tg_linear *W_query, *W_key, *W_value;
    tg_dropout_mod *dropout;
    tg_tensor *mask;       /* (context_length, context_length): 1 above the diagonal */
    int d_in, d_out, context_length;
} tg_causal_attention;
tg_causal_attention *tg_causal_attention_new(int d_in, int d_out, int context_length, float dropout,
                                             bool qkv_bias, tg_generator *g);
tg_tensor *tg_causal_attention_forward(tg_causal_attention *m, tg_tensor *x);

/* MultiHeadAttentionWrapper(d_in, d_out, context_length, dropout, num_heads,
 * qkv_bias): heads = ModuleList of num_heads CausalAttention (drawn head 0
 * first), outputs concatenated on the last dim. x (B, T, d_in) -> (B, T,
 * num_heads*d_out). Params: heads.{i}.W_query.weight, ... */
typedef struct {
    tg_module base;
    tg_module *heads;      /* ModuleList; head i is tg_module_child_at(heads, i) */
    int num_heads, d_in, context_length;
} tg_mha_wrapper;
tg_mha_wrapper *tg_mha_wrapper_new(int d_in, int d_out, int context_length, float dropout, int num_heads,
                                   bool qkv_bias, tg_generator *g);
tg_tensor *tg_mha_wrapper_forward(tg_mha_wrapper *m, tg_tensor *x);

/* MultiHeadAttention(d_in, d_out, context_length, dropout, num_heads,
 * qkv_bias), the book's: one Q, K, V projection each (drawn W_query, W_key,
 * W_value, then out_proj), split into num_heads heads of head_dim =
 * d_out/num_heads; causal mask, / sqrt(head_dim), softmax, dropout, @ values,
 * heads merged, out_proj (with bias). x (B, T, d_in), T <= context_length
 * -> (B, T, d_out).
 * After each forward, attn_weights holds a heap copy of the softmax weights
 * (B, num_heads, T, T), before dropout (what the model attends to), unless
 * keep_attn is false (default true). Its buffer is reused while it fits.
 * Params: W_query.weight, W_key.weight, W_value.weight (+ .bias each with
 * qkv_bias), out_proj.weight, out_proj.bias. */
typedef struct {
    tg_module base;
    tg_linear *W_query, *W_key, *W_value, *out_proj;
    tg_dropout_mod *dropout;
    tg_tensor *mask;           /* (context_length, context_length) buffer */
    tg_tensor *attn_weights;   /* last forward's (B, H, T, T), or NULL */
    int64_t attn_cap;          /* floats allocated in attn_weights */
    int d_in, d_out, context_length, num_heads, head_dim;
    bool keep_attn;
} tg_mha;
tg_mha *tg_mha_new(int d_in, int d_out, int context_length, float dropout, int num_heads, bool qkv_bias,
                   tg_generator *g);
tg_tensor *tg_mha_forward(tg_mha *m, tg_tensor *x);
/* The last forward's attention weights (B, H, T, T) or NULL: owned by m. */
const tg_tensor *tg_mha_attn_weights(const tg_mha *m);

/* ---------------------------------------------------------------- recurrent layers (nn/rnn.c)
 * torch's equations and parameter names. A NULL hidden state means zeros.
 * Every parameter ~ U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), drawn in
 * the order weight_ih, weight_hh, bias_ih, bias_hh, so the same seed gives
 * torch's weights. Biases are always present (torch's default bias=True).
 * Modules on the module interface: free with tg_module_free(&m->base),
 * parameters from tg_module_params(&m->base). The cells' and GRU's
 * single-input forward (tg_module_forward) starts from a zero state, as
 * torch's cell(x) and gru(x) (GRU: returns output); AdditiveAttention takes
 * a query, values and a mask, so it has none: call its typed forwards. */
extern const tg_module_type tg_rnn_cell_type, tg_gru_cell_type, tg_gru_type, tg_additive_attention_type;

/* RNNCell(input_size, hidden_size), tanh: h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh).
 * x (B, I) with h (B, H) or NULL -> (B, H); or unbatched x (I), h (H) -> (H).
 * Params: weight_ih (H, I), weight_hh (H, H), bias_ih (H), bias_hh (H). */
typedef struct {
    tg_module base;
    tg_tensor *weight_ih, *weight_hh, *bias_ih, *bias_hh;
    int input_size, hidden_size;
} tg_rnn_cell;
tg_rnn_cell *tg_rnn_cell_new(int input_size, int hidden_size, tg_generator *g);
tg_tensor *tg_rnn_cell_forward(tg_rnn_cell *m, tg_tensor *x, tg_tensor *h);

/* GRUCell(input_size, hidden_size), gate order r, z, n:
 *   r = sigmoid(W_ir x + b_ir + W_hr h + b_hr),  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz),
 *   n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h.
 * Shapes as RNNCell. Params: weight_ih (3H, I), weight_hh (3H, H), bias_ih (3H),
 * bias_hh (3H), each stacking the r, z, n rows. */
typedef struct {
    tg_module base;
    tg_tensor *weight_ih, *weight_hh, *bias_ih, *bias_hh;
    int input_size, hidden_size;
} tg_gru_cell;
tg_gru_cell *tg_gru_cell_new(int input_size, int hidden_size, tg_generator *g);
tg_tensor *tg_gru_cell_forward(tg_gru_cell *m, tg_tensor *x, tg_tensor *h);

/* GRU(input_size, hidden_size, batch_first=True): one layer, one direction.
 * Only batch_first=True is supported: x (B, T, I), h0 (1, B, H) or NULL
 * (zeros) -> output (B, T, H), the hidden state after every step; *h_n (if
 * h_n is not NULL) gets the last one, (1, B, H). The GRUCell's equations.
 * Params: weight_ih_l0 (3H, I), weight_hh_l0 (3H, H), bias_ih_l0, bias_hh_l0 (3H). */
typedef struct {
    tg_module base;
    tg_tensor *weight_ih_l0, *weight_hh_l0, *bias_ih_l0, *bias_hh_l0;
    int input_size, hidden_size;
} tg_gru;
tg_gru *tg_gru_new(int input_size, int hidden_size, tg_generator *g);
tg_tensor *tg_gru_forward(tg_gru *m, tg_tensor *x, tg_tensor *h0, tg_tensor **h_n);

/* AdditiveAttention(query_size, key_size, attn_size), Bahdanau et al. (2014):
 *   score(s, h_j) = w_v(tanh(W_query s + W_key h_j)),  alpha = softmax over j
 *   (positions where mask != 0, the padding, are excluded),  context = sum_j alpha_j h_j.
 * query s (B, Dq) (a decoder's previous hidden state), values h (B, T, Dk)
 * (the encoder's states), mask (B, T) or NULL -> context (B, Dk). A row with
 * every position masked gives NaN, as in torch. W_query (A, Dq), W_key
 * (A, Dk), w_v (1, A): Linear layers without bias, drawn in that order with
 * torch's Linear init. After each forward, attn_weights holds a heap copy of
 * alpha (B, T) (unless keep_attn is false; default true), as MultiHeadAttention.
 * Params: W_query.weight, W_key.weight, w_v.weight. */
typedef struct {
    tg_module base;
    tg_linear *W_query, *W_key, *w_v;   /* children */
    tg_tensor *attn_weights;   /* last forward's (B, T), or NULL */
    int64_t attn_cap;
    int query_size, key_size, attn_size;
    bool keep_attn;
} tg_additive_attention;
tg_additive_attention *tg_additive_attention_new(int query_size, int key_size, int attn_size, tg_generator *g);
tg_tensor *tg_additive_attention_forward(tg_additive_attention *m, tg_tensor *query, tg_tensor *values,
                                         const tg_tensor *mask);
/* The same in two parts, for a decoder that attends to the same values at
 * every step: keys = W_key(values) (B, T, A) once, then attend per step. */
tg_tensor *tg_additive_attention_keys(tg_additive_attention *m, tg_tensor *values);
tg_tensor *tg_additive_attention_attend(tg_additive_attention *m, tg_tensor *query, tg_tensor *keys,
                                        tg_tensor *values, const tg_tensor *mask);
/* The last forward's weights (B, T) or NULL: owned by m. */
const tg_tensor *tg_additive_attention_weights(const tg_additive_attention *m);

/* ================================================================
 * Checkpoints (safetensors), tokenizers, text data and the book's GPTModel
 * ================================================================ */

/* ---------------------------------------------------------------- safetensors
 * File: u64 LE header length N | N bytes of JSON | raw LE float32 data.
 * JSON: {"__metadata__": {string: string}, "<name>": {"dtype": "F32",
 * "shape": [..], "data_offsets": [begin, end]}, ...}; offsets relative to the
 * start of the data. Loaders validate everything and return an error code with
 * a one-line message "<file>: <reason>"; they never abort on a bad file.
 * Writes are atomic (temp file beside the target, fsync, rename). */
typedef enum {
    TG_ST_OK = 0,
    TG_ST_EIO,         /* cannot open, read or write the file */
    TG_ST_ETRUNCATED,  /* too small, or the header length runs past the end */
    TG_ST_EJSON,       /* header not valid JSON or not the safetensors schema */
    TG_ST_EDTYPE,      /* a tensor is not F32 */
    TG_ST_EOFFSETS,    /* data_offsets outside the data, != numel*4, overlapping or gapped */
    TG_ST_EMISSING,    /* an expected tensor is absent */
    TG_ST_EEXTRA,      /* a tensor the model does not have */
    TG_ST_ESHAPE,      /* a tensor's shape differs from the model's */
    TG_ST_ECONFIG,     /* metadata (config, tokenizer, ...) does not fit */
    TG_ST_ENOMEM,
    TG_ST_ENONFINITE   /* a tensor being loaded holds NaN or Inf */
} tg_st_code;

typedef struct {
    tg_st_code code;
    char msg[384];     /* "<file>: <reason>", one line */
} tg_st_error;
const char *tg_st_code_name(tg_st_code code);

/* __metadata__: an ordered string -> string map (copies its strings). */
typedef struct { char *key, *value; } tg_st_kv;
typedef struct {
    tg_st_kv *items;   /* in insertion order */
    int n, cap;
    void *index;       /* private: hash index of the keys (O(1) set and get) */
} tg_st_meta;
void tg_st_meta_init(tg_st_meta *m);
void tg_st_meta_free(tg_st_meta *m);
void tg_st_meta_set(tg_st_meta *m, const char *key, const char *value);  /* adds or replaces */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
void tg_st_meta_setf(tg_st_meta *m, const char *key, const char *fmt, ...);
const char *tg_st_meta_get(const tg_st_meta *m, const char *key);       /* NULL if absent */

/* Writes every tensor of the list (its names, in list order) and meta (may be
 * NULL) to path, atomically. Returns 0 or a tg_st_code (err filled). On
 * failure nothing is left behind and an existing file at path is untouched. */
int tg_st_save(const char *path, const tg_params *tensors, const tg_st_meta *meta, tg_st_error *err);

/* A parsed, fully validated file (header, dtypes, offsets tiling the data). */
#define TG_ST_MAX_DIMS 8
typedef struct {
    char *name;
    int ndim;
    int shape[TG_ST_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end;   /* byte range in the data section */
} tg_st_entry;
typedef struct tg_st_file tg_st_file;

int tg_st_open(const char *path, tg_st_file **out, tg_st_error *err);
/* Same from memory (copied); label names it in messages (fuzzing, tests). */
int tg_st_open_mem(const void *buf, size_t len, const char *label, tg_st_file **out, tg_st_error *err);
void tg_st_close(tg_st_file *f);
int tg_st_count(const tg_st_file *f);
const tg_st_entry *tg_st_entry_at(const tg_st_file *f, int i);
const tg_st_entry *tg_st_find(const tg_st_file *f, const char *name);    /* NULL if absent */
const tg_st_meta *tg_st_metadata(const tg_st_file *f);
const char *tg_st_label(const tg_st_file *f);
/* Copies tensor name into t (shapes must be equal, values finite: NaN or Inf
 * is TG_ST_ENONFINITE, naming tensor and element, and t is left as it was). */
int tg_st_read(const tg_st_file *f, const char *name, tg_tensor *t, tg_st_error *err);
/* Loads every tensor of params (by name; shapes must be equal). A file tensor
 * that is not in params is an error (TG_ST_EEXTRA) unless allow_extra(e, ctx)
 * returns true. Every value must be finite (NaN or Inf: TG_ST_ENONFINITE,
 * naming the tensor). Everything is checked before anything is copied: on
 * failure the parameters are unchanged. */
typedef bool (*tg_st_extra_fn)(const tg_st_entry *e, void *ctx);
int tg_st_load_params(const tg_st_file *f, const tg_params *params, tg_st_extra_fn allow_extra, void *ctx,
                      tg_st_error *err);

/* ---------------------------------------------------------------- text data and tokenizers
 * Error-returning functions return 0, or -1 with a one-line reason in err. */

/* Reads a whole training text: a missing, unreadable, empty or binary (NUL
 * byte) file is an error naming the file, and so is anything but a regular
 * file of at most TG_TEXT_MAX_BYTES (a FIFO or a device is refused at once,
 * without reading). *text is malloc'd (caller frees). */
#define TG_TEXT_MAX_BYTES (1LL << 30)
int tg_text_load(const char *path, char **text, size_t *len, char *err, size_t errsize);

typedef enum { TG_TOK_CHAR = 0, TG_TOK_BYTE = 1 } tg_tok_kind;
typedef struct {
    tg_tok_kind kind;
    int vocab_size;
    uint32_t *chars;   /* char: the vocabulary's code points, sorted, id = index; byte: NULL */
} tg_tokenizer;

/* Char-level: vocabulary = sorted unique characters of text (UTF-8 decoded,
 * like Python's sorted(set(text))). Invalid UTF-8 is an error. */
int tg_tokenizer_char_build(tg_tokenizer *t, const char *text, size_t len, char *err, size_t errsize);
/* Byte-level: 256 symbols, id = byte. */
void tg_tokenizer_byte_init(tg_tokenizer *t);
void tg_tokenizer_free(tg_tokenizer *t);
/* ids must hold len entries (every token is at least one byte); *n = count.
 * A character outside the vocabulary is an error naming it and its offset. */
int tg_tokenizer_encode(const tg_tokenizer *t, const char *text, size_t len, int32_t *ids, int64_t *n, char *err,
                        size_t errsize);
/* Writes id's bytes (UTF-8 for char, the raw byte for byte) to out (>= 4
 * bytes); returns their count, 0 for an id outside the vocabulary. */
int tg_tokenizer_decode(const tg_tokenizer *t, int32_t id, char *out);
/* Metadata keys: "tokenizer" = "char" | "byte"; "vocab" = the characters in id order (char). */
void tg_tokenizer_to_meta(const tg_tokenizer *t, tg_st_meta *m);
int tg_tokenizer_from_meta(tg_tokenizer *t, const tg_st_meta *m, const char *label, tg_st_error *err);

/* ---------------------------------------------------------------- GPTModel (the book's, ch. 4)
 * in_idx (B, T) token ids, T <= context_length -> logits (B, T, vocab_size):
 *   x = tok_emb(in_idx) + pos_emb(arange(T)); x = drop_emb(x)
 *   each of n_layers blocks:  x = x + drop_resid(att(norm1(x)))
 *                             x = x + drop_resid(ff(norm2(x)))
 *   logits = out_head(final_norm(x))            (Linear without bias)
 * Construction draws in GPTModel.__init__'s order (tok_emb, pos_emb, then per
 * block att [W_query, W_key, W_value, out_proj] and ff, then out_head), so the
 * same seed gives torch's weights. Parameters, in state_dict order:
 *   tok_emb.weight, pos_emb.weight,
 *   trf_blocks.{i}.att.W_query.weight (W_key, W_value; + .bias with qkv_bias),
 *   trf_blocks.{i}.att.out_proj.weight/bias, trf_blocks.{i}.ff.layers.0.weight/bias,
 *   trf_blocks.{i}.ff.layers.2.weight/bias, trf_blocks.{i}.norm1.scale/shift,
 *   trf_blocks.{i}.norm2.scale/shift, final_norm.scale/shift, out_head.weight.
 * (torch's state_dict also holds the buffers trf_blocks.{i}.att.mask.) */
typedef struct {
    int vocab_size, context_length, emb_dim, n_heads, n_layers;
    float drop_rate;
    bool qkv_bias;
} tg_gpt_config;

/* Checks sizes (>= 1, emb_dim % n_heads == 0, 0 <= drop_rate < 1, sane upper
 * bounds); returns 0, or -1 with a one-line reason. */
int tg_gpt_config_check(const tg_gpt_config *c, char *err, size_t errsize);
/* Metadata keys, as the book's cfg dict: vocab_size, context_length, emb_dim,
 * n_heads, n_layers, drop_rate, qkv_bias ("true"/"false"). */
void tg_gpt_config_to_meta(const tg_gpt_config *c, tg_st_meta *m);
bool tg_gpt_meta_has_config(const tg_st_meta *m);      /* any of those keys present */
/* All keys required and well-formed, and the config valid; else TG_ST_ECONFIG. */
int tg_gpt_config_from_meta(tg_gpt_config *c, const tg_st_meta *m, const char *label, tg_st_error *err);

/* TransformerBlock: x = x + drop_resid(att(norm1(x))); x = x + drop_resid(ff(norm2(x))).
 * att, ff, norm1 and norm2 are slots (tg_module_replace). */
typedef struct {
    tg_module base;
    tg_module *att;           /* MultiHeadAttention (a tg_mha) */
    tg_module *ff;            /* FeedForward */
    tg_module *norm1, *norm2; /* LayerNorm */
    tg_dropout_mod *drop_resid;
} tg_gpt_block;

typedef struct {
    tg_module base;
    tg_gpt_config cfg;
    tg_embedding_mod *tok_emb, *pos_emb;
    tg_dropout_mod *drop_emb;
    tg_module *trf_blocks;        /* Sequential of n_layers TransformerBlocks */
    tg_module *final_norm;        /* a slot: LayerNorm */
    tg_linear *out_head;
    int32_t *positions;           /* 0 .. context_length-1 */
} tg_gpt;

/* tg_error on an invalid config (check it first with tg_gpt_config_check).
 * g is kept for dropout masks (NULL: the default generator). */
tg_gpt *tg_gpt_new(const tg_gpt_config *cfg, tg_generator *g);
tg_tensor *tg_gpt_forward(tg_gpt *m, const int32_t *ids, int batch, int tokens);
/* Block i (0 <= i < n_layers) as a TransformerBlock; tg_error if that entry
 * of trf_blocks was replaced by a module of another type. */
tg_gpt_block *tg_gpt_block_at(tg_gpt *m, int i);
/* Every parameter, state_dict names and order: tg_module_params(&m->base). */
const tg_params *tg_gpt_params(tg_gpt *m);
/* tg_module_train(&m->base, on) and tg_module_free(&m->base). */
void tg_gpt_train(tg_gpt *m, bool on);
void tg_gpt_free(tg_gpt *m);

/* Loads m's weights from f. If f's metadata holds a config, it must match m's
 * (all but drop_rate), else TG_ST_ECONFIG. Every parameter must be present
 * with m's shape. Extra tensors allowed: torch's trf_blocks.{i}.att.mask
 * buffers of shape (context_length, context_length), and "optim.*" entries
 * when allow_optim. Nothing is changed on failure. */
int tg_gpt_load(tg_gpt *m, const tg_st_file *f, bool allow_optim, tg_st_error *err);

/* Autoregressive generation, as the book's generate() (ch. 5): for each new
 * token, run the model (eval mode, no grad, on a private tape) on the last
 * context_length ids, take the last position's logits and pick the next id
 * with tg_sample_logits (below). ids holds n_prompt ids (>= 1) and has room
 * for n_new more; on_token (may be NULL) is called with each new id. The
 * model's train/eval mode is restored. tg_gpt_generate is
 * tg_gpt_generate_with {temperature, top_k, top_p = 1}. */
typedef void (*tg_gpt_token_fn)(int32_t id, void *ctx);
void tg_gpt_generate(tg_gpt *m, int32_t *ids, int n_prompt, int n_new, float temperature, int top_k,
                     tg_generator *g, tg_gpt_token_fn on_token, void *ctx);

/* ---------------------------------------------------------------- sampling (nn/sampling.c) */

/* The settings of build/train's own samples and build/sample's defaults, so
 * that a checkpoint samples alike in both. */
#define TG_SAMPLE_TEMPERATURE 0.8f
#define TG_SAMPLE_TOP_K 20

typedef struct {
    float temperature;  /* 0: greedy (argmax, the first maximum, no draw); > 0: sample */
    int top_k;          /* keep the top_k largest logits (ties with the k-th too); <= 0 or >= V: all */
    float top_p;        /* nucleus sampling, in (0, 1]; 1: off */
} tg_sampling;

void tg_gpt_generate_with(tg_gpt *m, int32_t *ids, int n_prompt, int n_new, const tg_sampling *s, tg_generator *g,
                          tg_gpt_token_fn on_token, void *ctx);

/* tg_error unless temperature is finite and >= 0 and top_p is in (0, 1]. */
void tg_sampling_check(const char *op, const tg_sampling *s);

/* Picks the next token id from one row of V logits, applying temperature,
 * top-k and top-p in that order (HF's and nanoGPT's): softmax(logits /
 * temperature) over the top_k largest; of those, the nucleus is the smallest
 * set of most probable tokens (ties: lower id first) whose probability sums
 * to >= top_p, at least one; renormalised over what is kept, the id is drawn
 * with one tg_random_double from g (NULL: the default generator) by inverse
 * CDF in id order. temperature 0 draws nothing. work: NULL (allocated per
 * call) or V slots of scratch. A NaN or +inf logit, or all -inf, is a
 * tg_error. */
typedef struct {
    double p;
    int32_t id;
} tg_sample_slot;
int32_t tg_sample_logits(const float *logits, int V, const tg_sampling *s, tg_generator *g, tg_sample_slot *work);

/* Writes n bytes of generated text to f; with escape (pass isatty(fileno(f)))
 * the control bytes a terminal would act on, below 0x20 except '\n' and
 * '\t', and 0x7f, print as \xNN. Returns 0, or -1 on a write error. */
int tg_write_text(FILE *f, const char *s, size_t n, bool escape);
/* Token id's bytes (tg_tokenizer_decode) through tg_write_text. */
int tg_tokenizer_print(const tg_tokenizer *t, int32_t id, FILE *f, bool escape);

#endif /* TG_NN_H */

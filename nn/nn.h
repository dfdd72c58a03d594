/*
 * nn/nn.h — modules: the nn layer's public contract.
 *
 * Convention (PyTorch's, in C):
 *   - a module is a struct holding its parameters (heap leaves with
 *     requires_grad) and its config;
 *   - tg_<mod>_new(...) builds it, drawing initial values from the caller's
 *     generator in PyTorch's order, so the same seed gives torch's weights;
 *   - tg_<mod>_forward(m, x) runs it on the current tape;
 *   - tg_<mod>_free(m) frees it and its parameters;
 *   - tg_<mod>_params(m, list, prefix) appends its parameters to a tg_params
 *     list under state_dict names ("W_query.weight"), prefixed by the
 *     parent's path ("trf_blocks.0.att.") for nested modules;
 *   - modules with dropout have a `training` flag; tg_<mod>_train(m, on)
 *     sets it on the module and everything inside.
 */
#ifndef TG_NN_H
#define TG_NN_H

#include "../autograd/autograd.h"

/* ---------------------------------------------------------------- parameter lists */

typedef struct {
    char *name;       /* full dotted state_dict name, owned by the list */
    tg_tensor *t;     /* borrowed: the module owns the tensor */
} tg_param;

typedef struct {
    tg_param *items;
    int n, cap;
} tg_params;

void tg_params_init(tg_params *p);
void tg_params_free(tg_params *p);            /* frees names, not tensors */
/* Appends t under prefix+name (prefix may be NULL or ""). */
void tg_params_add(tg_params *p, const char *prefix, const char *name, tg_tensor *t);
tg_tensor *tg_params_find(const tg_params *p, const char *name);  /* NULL if absent */
int64_t tg_params_numel(const tg_params *p);  /* total elements */
void tg_params_zero_grad(const tg_params *p);

/* ---------------------------------------------------------------- modules
 * Every constructor returns a heap module (free it with its _free, which
 * also frees its parameters). Parameters are heap leaves with requires_grad
 * on. Modules that draw (initial values, dropout masks) take a generator at
 * construction: initial values are drawn from it at once, in torch's order,
 * and modules with dropout keep the pointer for their masks (torch uses its
 * global generator for both; NULL here means tg_default_generator()). The
 * generator must outlive the module.
 * Forward functions return tape tensors (valid until tg_tape_reset). */

/* Linear: y = x W^T + b.  x (..., in) -> (..., out).
 * weight (out, in) ~ U(±1/sqrt(in)) drawn first, then bias (out) likewise
 * (torch's kaiming_uniform_(a=sqrt(5)) and bias init). Params: weight, bias. */
typedef struct {
    tg_tensor *weight;     /* (out_features, in_features) */
    tg_tensor *bias;       /* (out_features), NULL when built without bias */
    int in_features, out_features;
} tg_linear;
tg_linear *tg_linear_new(int in_features, int out_features, bool bias, tg_generator *g);
tg_tensor *tg_linear_forward(tg_linear *m, tg_tensor *x);
void tg_linear_params(tg_linear *m, tg_params *list, const char *prefix);
void tg_linear_free(tg_linear *m);

/* Dropout(p): train mode zeroes with probability p and scales survivors by
 * 1/(1-p) (mask from g as torch's); eval mode is the identity. Starts in
 * train mode, like torch. No parameters. Shape unchanged. */
typedef struct {
    float p;
    bool training;
    tg_generator *g;
} tg_dropout_mod;
tg_dropout_mod *tg_dropout_mod_new(float p, tg_generator *g);   /* 0 <= p <= 1 */
tg_tensor *tg_dropout_mod_forward(tg_dropout_mod *m, tg_tensor *x);
void tg_dropout_mod_train(tg_dropout_mod *m, bool on);
void tg_dropout_mod_free(tg_dropout_mod *m);

/* Softmax(dim). Shape unchanged. No parameters. */
typedef struct {
    int dim;
} tg_softmax_mod;
tg_softmax_mod *tg_softmax_mod_new(int dim);
tg_tensor *tg_softmax_mod_forward(tg_softmax_mod *m, tg_tensor *x);
void tg_softmax_mod_free(tg_softmax_mod *m);

/* Embedding(num, dim): ids (shape) -> shape + [dim]; weight (num, dim) ~ N(0,1)
 * (torch.nn.Embedding's init). Every id must be in [0, num). Params: weight. */
typedef struct {
    tg_tensor *weight;     /* (num_embeddings, embedding_dim) */
    int num_embeddings, embedding_dim;
} tg_embedding_mod;
tg_embedding_mod *tg_embedding_mod_new(int num_embeddings, int embedding_dim, tg_generator *g);
tg_tensor *tg_embedding_mod_forward(tg_embedding_mod *m, const int32_t *ids, int ndim, const int *shape);
void tg_embedding_mod_params(tg_embedding_mod *m, tg_params *list, const char *prefix);
void tg_embedding_mod_free(tg_embedding_mod *m);

/* LayerNorm(emb_dim), the book's: normalise over the last dim with the biased
 * variance and eps 1e-5, then * scale + shift. x (..., emb_dim), shape kept.
 * scale = ones, shift = zeros (no random draws). Params: scale, shift. */
typedef struct {
    tg_tensor *scale, *shift;   /* (emb_dim) */
    float eps;
    int emb_dim;
} tg_layernorm_mod;
tg_layernorm_mod *tg_layernorm_mod_new(int emb_dim);
tg_tensor *tg_layernorm_mod_forward(tg_layernorm_mod *m, tg_tensor *x);
void tg_layernorm_mod_params(tg_layernorm_mod *m, tg_params *list, const char *prefix);
void tg_layernorm_mod_free(tg_layernorm_mod *m);

/* GELU, tanh approximation (the book's). Shape unchanged. No parameters. */
typedef struct {
    int unused;
} tg_gelu_mod;
tg_gelu_mod *tg_gelu_mod_new(void);
tg_tensor *tg_gelu_mod_forward(tg_gelu_mod *m, tg_tensor *x);
void tg_gelu_mod_free(tg_gelu_mod *m);

/* FeedForward(emb_dim), the book's: Linear(d, 4d) -> GELU -> Linear(4d, d).
 * x (..., d) -> (..., d). Draws fc1 then fc2.
 * Params: layers.0.weight, layers.0.bias, layers.2.weight, layers.2.bias. */
typedef struct {
    tg_linear *fc1;        /* layers.0: (4d, d) */
    tg_gelu_mod *gelu;     /* layers.1 */
    tg_linear *fc2;        /* layers.2: (d, 4d) */
    int emb_dim;
} tg_feedforward;
tg_feedforward *tg_feedforward_new(int emb_dim, tg_generator *g);
tg_tensor *tg_feedforward_forward(tg_feedforward *m, tg_tensor *x);
void tg_feedforward_params(tg_feedforward *m, tg_params *list, const char *prefix);
void tg_feedforward_free(tg_feedforward *m);

/* ---------------------------------------------------------------- chapter 3 attention */

/* SelfAttention_v1(d_in, d_out): raw (d_in, d_out) matrices drawn with rand in
 * the order W_query, W_key, W_value; q = x @ W_query, ...;
 * softmax(q k^T / sqrt(d_out)) @ v.  x (..., T, d_in) -> (..., T, d_out).
 * Params: W_query, W_key, W_value. */
typedef struct {
    tg_tensor *W_query, *W_key, *W_value;   /* (d_in, d_out) */
    int d_in, d_out;
} tg_self_attention_v1;
tg_self_attention_v1 *tg_self_attention_v1_new(int d_in, int d_out, tg_generator *g);
tg_tensor *tg_self_attention_v1_forward(tg_self_attention_v1 *m, tg_tensor *x);
void tg_self_attention_v1_params(tg_self_attention_v1 *m, tg_params *list, const char *prefix);
void tg_self_attention_v1_free(tg_self_attention_v1 *m);

/* SelfAttention_v2(d_in, d_out, qkv_bias): as v1 with three Linear layers
 * (drawn W_query, W_key, W_value). x (..., T, d_in) -> (..., T, d_out).
 * Params: W_query.weight, W_key.weight, W_value.weight (+ .bias each). */
typedef struct {
    tg_linear *W_query, *W_key, *W_value;
    int d_in, d_out;
} tg_self_attention_v2;
tg_self_attention_v2 *tg_self_attention_v2_new(int d_in, int d_out, bool qkv_bias, tg_generator *g);
tg_tensor *tg_self_attention_v2_forward(tg_self_attention_v2 *m, tg_tensor *x);
void tg_self_attention_v2_params(tg_self_attention_v2 *m, tg_params *list, const char *prefix);
void tg_self_attention_v2_free(tg_self_attention_v2 *m);

/* CausalAttention(d_in, d_out, context_length, dropout, qkv_bias): v2 plus a
 * causal mask (a buffer, not a parameter) and dropout on the attention
 * weights. x (B, T, d_in) with T <= context_length -> (B, T, d_out).
 * Params: as v2. */
typedef struct {
    tg_linear *W_query, *W_key, *W_value;
    tg_dropout_mod *dropout;
    tg_tensor *mask;       /* (context_length, context_length): 1 above the diagonal */
    int d_in, d_out, context_length;
    bool training;
} tg_causal_attention;
tg_causal_attention *tg_causal_attention_new(int d_in, int d_out, int context_length, float dropout,
                                             bool qkv_bias, tg_generator *g);
tg_tensor *tg_causal_attention_forward(tg_causal_attention *m, tg_tensor *x);
void tg_causal_attention_params(tg_causal_attention *m, tg_params *list, const char *prefix);
void tg_causal_attention_train(tg_causal_attention *m, bool on);
void tg_causal_attention_free(tg_causal_attention *m);

/* MultiHeadAttentionWrapper(d_in, d_out, context_length, dropout, num_heads,
 * qkv_bias): num_heads CausalAttention heads (drawn head 0 first), outputs
 * concatenated on the last dim. x (B, T, d_in) -> (B, T, num_heads*d_out).
 * Params: heads.{i}.W_query.weight, ... */
typedef struct {
    tg_causal_attention **heads;
    int num_heads;
    bool training;
} tg_mha_wrapper;
tg_mha_wrapper *tg_mha_wrapper_new(int d_in, int d_out, int context_length, float dropout, int num_heads,
                                   bool qkv_bias, tg_generator *g);
tg_tensor *tg_mha_wrapper_forward(tg_mha_wrapper *m, tg_tensor *x);
void tg_mha_wrapper_params(tg_mha_wrapper *m, tg_params *list, const char *prefix);
void tg_mha_wrapper_train(tg_mha_wrapper *m, bool on);
void tg_mha_wrapper_free(tg_mha_wrapper *m);

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
    tg_linear *W_query, *W_key, *W_value, *out_proj;
    tg_dropout_mod *dropout;
    tg_tensor *mask;           /* (context_length, context_length) buffer */
    tg_tensor *attn_weights;   /* last forward's (B, H, T, T), or NULL */
    int64_t attn_cap;          /* floats allocated in attn_weights */
    int d_in, d_out, context_length, num_heads, head_dim;
    bool training;
    bool keep_attn;
} tg_mha;
tg_mha *tg_mha_new(int d_in, int d_out, int context_length, float dropout, int num_heads, bool qkv_bias,
                   tg_generator *g);
tg_tensor *tg_mha_forward(tg_mha *m, tg_tensor *x);
/* The last forward's attention weights (B, H, T, T) or NULL: owned by m. */
const tg_tensor *tg_mha_attn_weights(const tg_mha *m);
void tg_mha_params(tg_mha *m, tg_params *list, const char *prefix);
void tg_mha_train(tg_mha *m, bool on);
void tg_mha_free(tg_mha *m);

/* ================================================================
 * Checkpoints (safetensors), tokenizers, text data and the book's GPTModel
 * [issue 5: nn/safetensors.c, nn/tokenizer.c, nn/gpt.c]
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
    TG_ST_ENOMEM
} tg_st_code;

typedef struct {
    tg_st_code code;
    char msg[384];     /* "<file>: <reason>", one line */
} tg_st_error;
const char *tg_st_code_name(tg_st_code code);

/* __metadata__: an ordered string -> string map (copies its strings). */
typedef struct { char *key, *value; } tg_st_kv;
typedef struct { tg_st_kv *items; int n, cap; } tg_st_meta;
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
/* Copies tensor name into t (shapes must be equal). */
int tg_st_read(const tg_st_file *f, const char *name, tg_tensor *t, tg_st_error *err);
/* Loads every tensor of params (by name; shapes must be equal). A file tensor
 * that is not in params is an error (TG_ST_EEXTRA) unless allow_extra(e, ctx)
 * returns true. Everything is checked before anything is copied: on failure
 * the parameters are unchanged. */
typedef bool (*tg_st_extra_fn)(const tg_st_entry *e, void *ctx);
int tg_st_load_params(const tg_st_file *f, const tg_params *params, tg_st_extra_fn allow_extra, void *ctx,
                      tg_st_error *err);

#endif /* TG_NN_H */

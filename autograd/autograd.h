/*
 * autograd/autograd.h — the tape and every differentiable op.
 *
 * The tape is a Wengert list: a plain array of tg_node entries, one per op
 * that ran while grad mode was on and some input required grad. Each entry
 * holds the op's name, its inputs, its output, its backward function and what
 * it saved. tg_backward() seeds the output gradient and runs the entries in
 * reverse; every backward accumulates (+=) into its inputs' .grad, except
 * that the first writer of an intermediate's gradient may write it (=)
 * instead of adding to zeros (tg_grad_dest).
 *
 * Memory: op outputs (and the grads of intermediates) come from the current
 * tape's arena and stay valid until tg_tape_reset(). Leaves — tensors made by
 * the tensor layer's creation functions — live on the heap, keep their grads
 * across resets, and are freed by their owner. Keep a result past a reset
 * with tg_copy().
 *
 * Debugging: every entry records the module path active when it ran (see
 * tg_scope_push) and every op output the tape and entry that made it;
 * tg_tape_print and tg_tape_dot show the tape; anomaly mode stops at the
 * first NaN; gradient hooks see (and may change) gradients during backward.
 * In gdb, docs/gdb/tapegrad_gdb.py reads all of it without calling into the
 * program (docs/DEBUGGING.md).
 */
#ifndef TG_AUTOGRAD_H
#define TG_AUTOGRAD_H

#include "../tensor/tensor.h"

/* ---------------------------------------------------------------- the tape */

typedef struct tg_node tg_node;
typedef void (*tg_backward_fn)(tg_node *n);

#define TG_NODE_SAVED 4

struct tg_node {
    const char *op;            /* "tg_matmul", ... */
    const char *path;          /* module path active when it ran ("trf_blocks.1.att"; "" at the top) */
    int scope;                 /* that path's index in the tape's path table */
    tg_backward_fn backward;   /* accumulates into in[i]->grad from out->grad */
    tg_tensor *out;
    tg_tensor **in;            /* n_in inputs, arena-allocated */
    int n_in;
    tg_tensor *saved[TG_NODE_SAVED]; /* tensors kept for backward (arena) */
    int iarg[4];               /* small integer arguments (dims, flags) */
    float farg[4];             /* small float arguments (scalars, p) */
    void *ctx;                 /* anything larger, arena-allocated */
};

/* One interned module path: its last component and the whole dotted path.
 * paths[0] is the top level (""). Entries are made the first time a scope is
 * entered and kept across resets, so warm steps never grow the table. */
typedef struct tg_scope_path {
    char *name;                /* last component, "att" */
    char *path;                /* "trf_blocks.1.att" */
    int parent, first_child, next_sibling;   /* indices, -1 for none */
} tg_scope_path;

typedef struct tg_tape {
    tg_node *nodes;            /* nodes[0..n_nodes) in execution order */
    int n_nodes, cap_nodes;
    tg_arena *arena;           /* op outputs, intermediate grads, node extras */
    bool grad_enabled;
    bool retain_grads;         /* keep intermediates' grads after backward */
    bool detect_anomaly;       /* check every output and gradient (tg_set_detect_anomaly) */
    tg_scope_path *paths;      /* interned module paths, paths[0] = "" */
    int n_paths, cap_paths;
    int scope;                 /* the current path's index */
    /* grad buffers of intermediates whose backward has run, for reuse by
     * later ones of the same size (so backward needs about one layer of grad
     * memory, not the whole graph's) */
    struct { size_t bytes; float *p; } free_grads[64];
    int n_free_grads;
} tg_tape;

tg_tape *tg_tape_new(void);
void tg_tape_free(tg_tape *t);
/* The tape ops record on (per thread). Each thread has its own default tape,
 * made on first use. */
tg_tape *tg_tape_current(void);
/* Makes t current (NULL: the default) and returns the previous one. */
tg_tape *tg_tape_use(tg_tape *t);
/* Forgets all entries and releases every op output; leaves are untouched.
 * NULL means the current tape. */
void tg_tape_reset(tg_tape *t);
/* Frees the calling thread's default tape (for leak checkers at exit); a
 * thread's default tape is also freed when the thread exits. */
void tg_tape_release_default(void);
/* Prints one line per entry, "#57 tg_softmax  trf_blocks.1.att  [8,4,32,32] -> [8,4,32,32]"
 * (op, module path or "-", input shapes, named leaves in parentheses, the
 * output shape). NULL: current. */
void tg_tape_print(const tg_tape *t, FILE *f);
/* Writes the tape as a Graphviz DOT graph: one box per op (entry, op, output
 * shape and name, grad norm when it has a grad), one ellipse per leaf (name,
 * shape, grad norm), edges from inputs to ops, module paths as nested
 * clusters. NULL: current. Returns 0, or -1 if writing to f failed. */
int tg_tape_dot(const tg_tape *t, FILE *f);

/* ---------------------------------------------------------------- module scopes
 * A module's forward enters a scope named after it (its attribute name in
 * the parent: "att", "trf_blocks.1") and leaves it on return; every entry
 * recorded meanwhile carries the dotted path ("trf_blocks.1.att"). Paths are
 * interned in the current tape the first time they are entered, so a warm
 * step mallocs nothing. name is copied. Pops must match pushes;
 * tg_tape_reset returns to the top level. */
void tg_scope_push(const char *name);
void tg_scope_pop(void);
/* The current module path of the current tape ("" at the top level). */
const char *tg_scope_path_current(void);

/* ---------------------------------------------------------------- anomaly mode
 * Like torch.autograd.set_detect_anomaly, for the current tape: with it on,
 * every op's output is checked for NaN as it is made (infinities are
 * legitimate in a forward: masked_fill writes -inf), and every gradient a
 * backward produces for NaN and +-Inf. The first bad value stops through
 * tg_error, naming forward or backward, the op, its tape entry and module
 * path, the shapes, and the first bad element's index and value. Off (the
 * default) it costs one branch per op. Returns the previous setting. */
bool tg_set_detect_anomaly(bool on);
bool tg_is_anomaly_enabled(void);

/* ---------------------------------------------------------------- gradient hooks
 * Like Tensor.register_hook: fn(t, grad, ctx) runs during tg_backward once
 * t's gradient for this backward is complete (grad: t->numel floats; it may
 * read it or change it in place, and what it leaves is what flows on). For an
 * op output that is before its own entry's backward runs; for a leaf it is
 * after the last entry using it, and the hook sees this backward's gradient
 * alone, which is then added to .grad (leaves accumulate). t must require
 * grad. Hooks run in registration order. A hook on an op output lives until
 * its tape is reset; one on a leaf until removed or tg_free. Registering on
 * an op output mallocs nothing (the record is in the tape's arena). */
typedef void (*tg_hook_fn)(tg_tensor *t, float *grad, void *ctx);
tg_hook *tg_register_hook(tg_tensor *t, tg_hook_fn fn, void *ctx);
/* Removes a hook (NULL is ignored); h must still be alive. */
void tg_remove_hook(tg_hook *h);

/* Grad mode of the current tape (like torch.set_grad_enabled); returns the
 * previous value. With it off, ops record nothing. */
bool tg_set_grad_enabled(bool on);
bool tg_is_grad_enabled(void);

/* Like torch's retain_grad(), for the whole tape: with it on, every op
 * output keeps its .grad after tg_backward (to inspect, e.g. in gdb). Off
 * (the default, as in PyTorch), an intermediate's grad buffer is recycled as
 * soon as its own backward has run and .grad is NULL afterwards; leaves
 * always keep theirs. Returns the previous setting. */
bool tg_retain_grads(bool on);

/* Runs the tape backward from loss. seed is the gradient of loss (same
 * shape); NULL means 1, which requires a one-element loss. */
void tg_backward(tg_tensor *loss, const tg_tensor *seed);

/* Zero the .grad of every tensor in a list (leaves). */
void tg_zero_grad(tg_tensor **params, int n);

/* ---------------------------------------------------------------- writing ops
 * How an op (built in or a user's own) is written:
 *   tg_tensor *out = tg_new_tensor(ndim, shape);
 *   ...forward kernel writes out->data...
 *   tg_node *n = tg_record("my_op", out, in, n_in, my_op_backward);
 *   if (n) { n->saved[0] = ...; n->farg[0] = ...; }
 * tg_record returns NULL (records nothing) when grad mode is off or no input
 * requires grad. In the backward, tg_grad_of(n->in[i]) gives the input's
 * grad buffer to accumulate into, or NULL if that input needs no grad.
 */
tg_tensor *tg_new_tensor(int ndim, const int *shape);  /* from the current tape's arena */
tg_node *tg_record(const char *op, tg_tensor *out, tg_tensor **in, int n_in, tg_backward_fn backward);
float *tg_grad_of(tg_tensor *t);
/* The first-writer form of tg_grad_of(n->in[k]), for a backward that can
 * write its gradient instead of adding it (a gemm with accumulate false, a
 * copy): the buffer, or NULL if that input needs no grad. *accumulate true:
 * add into it, exactly as into tg_grad_of's. false: the buffer holds no
 * gradient yet, its contents are garbage (a recycled buffer is not zeroed),
 * and this backward must write every one of its numel elements (=) before
 * it returns, zeros included. That is the case for an op output (or another
 * arena tensor) that has no gradient yet and is not also another input of
 * n; leaves (parameters) and later consumers always accumulate, so
 * gradients of a tensor used twice still sum. Both forms mix freely: an op
 * that never calls this one stays correct. */
float *tg_grad_dest(tg_node *n, int k, bool *accumulate);
/* For a backward whose input k's gradient is its output's gradient itself
 * (a view, a sum's operand): when input k has none yet (as for
 * tg_grad_dest's first writer), has the output's numel, and the output's
 * gradient dies as this backward returns (tg_retain_grads off, not the
 * loss), moves that buffer to the input and returns true: no copy. Else
 * false, changing nothing: then write or add as usual. Call it after every
 * other read of n->out->grad. */
bool tg_grad_pass(tg_node *n, int k);
void *tg_tape_alloc(size_t bytes);   /* scratch from the current tape's arena */

/* ---------------------------------------------------------------- ops
 * Every op returns a new tensor from the current tape's arena. Shapes follow
 * PyTorch: binary ops broadcast (NumPy rules) and their grads are summed back
 * to each input's shape; dims may be negative (counted from the end).
 */

/* Arithmetic. */
tg_tensor *tg_add(tg_tensor *a, tg_tensor *b);
tg_tensor *tg_sub(tg_tensor *a, tg_tensor *b);
tg_tensor *tg_mul(tg_tensor *a, tg_tensor *b);
tg_tensor *tg_div(tg_tensor *a, tg_tensor *b);
tg_tensor *tg_add_scalar(tg_tensor *a, float s);
tg_tensor *tg_mul_scalar(tg_tensor *a, float s);
tg_tensor *tg_neg(tg_tensor *a);

/* Elementwise. */
tg_tensor *tg_exp(tg_tensor *a);
tg_tensor *tg_log(tg_tensor *a);
tg_tensor *tg_sqrt(tg_tensor *a);
tg_tensor *tg_pow_scalar(tg_tensor *a, float p);
tg_tensor *tg_tanh(tg_tensor *a);
tg_tensor *tg_relu(tg_tensor *a);
tg_tensor *tg_gelu(tg_tensor *a);   /* tanh approximation, as the book's GELU */
tg_tensor *tg_sigmoid(tg_tensor *a);

/* torch.matmul for ndim >= 2: (..., M, K) @ (..., K, N) -> (..., M, N),
 * batch dims broadcast. */
tg_tensor *tg_matmul(tg_tensor *a, tg_tensor *b);

/* torch.nn.functional.linear: x (..., in) @ weight(out, in)^T + bias (out)
 * -> (..., out); bias may be NULL. One gemm, no transposed copy. */
tg_tensor *tg_affine(tg_tensor *x, tg_tensor *weight, tg_tensor *bias);
/* affine(gelu(affine(x, w1, b1)), w2, b2) in one op, the book's FeedForward:
 *   x (..., d), w1 (h, d), b1 (h) or NULL, w2 (d2, h), b2 (d2) or NULL
 * The composed ops' values; backward keeps only the hidden pre-activation
 * and rebuilds gelu of it, so the (..., h) activation is never stored. */
tg_tensor *tg_feedforward_gelu(tg_tensor *x, tg_tensor *w1, tg_tensor *b1, tg_tensor *w2, tg_tensor *b2);

/* Shape ops. Outputs are contiguous: transpose, permute and concat copy;
 * reshape and view share their input's data (a tensor is always contiguous,
 * so that is always possible). */
tg_tensor *tg_transpose(tg_tensor *a, int d0, int d1);
tg_tensor *tg_permute(tg_tensor *a, const int *dims);       /* a->ndim entries */
tg_tensor *tg_reshape(tg_tensor *a, int ndim, const int *shape); /* one -1 allowed */
tg_tensor *tg_view(tg_tensor *a, int ndim, const int *shape);    /* same as reshape */
tg_tensor *tg_concat(tg_tensor **ts, int n, int dim);
/* torch.narrow: elements start .. start+length-1 along dim (start may be
 * negative, counted from the end); the dim keeps size length. A copy. */
tg_tensor *tg_narrow(tg_tensor *a, int dim, int start, int length);
/* torch.select (a[..., index, ...]): one index along dim, which is removed. */
tg_tensor *tg_select(tg_tensor *a, int dim, int index);
/* torch.stack: n tensors of one shape joined along a new dim inserted at dim
 * (-(ndim+1) .. ndim); out[..., k, ...] = ts[k]. */
tg_tensor *tg_stack(tg_tensor **ts, int n, int dim);

/* Reductions. */
tg_tensor *tg_sum(tg_tensor *a);                              /* 0-d */
tg_tensor *tg_sum_dim(tg_tensor *a, int dim, bool keepdim);
tg_tensor *tg_mean(tg_tensor *a);                             /* 0-d */
tg_tensor *tg_mean_dim(tg_tensor *a, int dim, bool keepdim);
tg_tensor *tg_max(tg_tensor *a);                              /* 0-d; grad split evenly among ties, like torch */
tg_tensor *tg_max_dim(tg_tensor *a, int dim, bool keepdim);   /* values; grad to the first argmax, like torch */

/* Softmax family, numerically stable (max subtracted). */
tg_tensor *tg_softmax(tg_tensor *a, int dim);
tg_tensor *tg_log_softmax(tg_tensor *a, int dim);

/* masked_fill: where mask != 0 (mask broadcasts to a's shape), value. */
tg_tensor *tg_masked_fill(tg_tensor *a, const tg_tensor *mask, float value);
/* torch.triu / torch.tril over the last two dims (differentiable). */
tg_tensor *tg_triu(tg_tensor *a, int diagonal);
tg_tensor *tg_tril(tg_tensor *a, int diagonal);

/* Causal scaled dot-product attention in one op: torch 2.x's
 * scaled_dot_product_attention(q, k, v, dropout_p, is_causal=True).
 *   q, k, v (..., T, head_dim) -> (..., T, head_dim)
 *   = dropout(softmax(q k^T / sqrt(head_dim), keys j <= query i)) v
 * The same bits as the composed ops (matmul, masked_fill, mul_scalar,
 * softmax, dropout, matmul) in forward and backward, and the same draws from
 * g as tg_dropout on the (..., T, T) weights; the masked half is skipped and
 * only P's lower triangle and a 1-bit mask are kept for backward. Dropout
 * applies when train and dropout_p > 0. weights: NULL, or a (..., T, T)
 * tensor that receives the softmax (before dropout), e.g. for a heatmap. */
tg_tensor *tg_sdpa_causal(tg_tensor *q, tg_tensor *k, tg_tensor *v, float dropout_p, bool train, tg_generator *g,
                          tg_tensor *weights);
/* The same on (batch, T, heads, head_dim) inputs and output: the result and
 * gradients of transpose(tg_sdpa_causal(transpose(q, 1, 2), ...), 1, 2),
 * bit for bit, without the four transposed copies. weights: NULL or
 * (batch, heads, T, T). */
tg_tensor *tg_sdpa_causal_heads_last(tg_tensor *q, tg_tensor *k, tg_tensor *v, float dropout_p, bool train,
                                     tg_generator *g, tg_tensor *weights);

/* Dropout: in train mode zero each element with probability p (mask drawn
 * from g exactly as torch does) and scale survivors by 1/(1-p). */
tg_tensor *tg_dropout(tg_tensor *a, float p, bool train, tg_generator *g);

/* Embedding: ids has shape (ndim, shape); the result is shape + [dim]. */
tg_tensor *tg_embedding(tg_tensor *weight, const int32_t *ids, int ndim, const int *shape);

/* Cross-entropy of logits (..., C) against n = numel/C integer targets,
 * mean over targets, through log-sum-exp. Returns a 0-d tensor. */
tg_tensor *tg_cross_entropy(tg_tensor *logits, const int32_t *targets);

/* LayerNorm over the last dim, the book's version: biased variance, eps,
 * then * scale + shift (both of shape [last dim]). Fused for speed. */
tg_tensor *tg_layernorm(tg_tensor *x, tg_tensor *scale, tg_tensor *shift, float eps);

/* ---------------------------------------------------------------- gradcheck
 * Like torch.autograd.gradcheck: f maps the inputs to one output tensor; the
 * output is projected onto fixed random weights to a scalar, and every
 * analytic d(scalar)/d(input) is compared with a central finite difference
 * (x+eps, x-eps) whose arithmetic is done in double. Runs on a private tape.
 */
typedef tg_tensor *(*tg_gradcheck_fn)(tg_tensor **inputs, void *ctx);

#define TG_GRADCHECK_MAX_INPUTS 8
typedef struct {
    int n_inputs;
    double max_abs_err[TG_GRADCHECK_MAX_INPUTS];  /* per input */
    double max_rel_err[TG_GRADCHECK_MAX_INPUTS];  /* |a-n| / max(|a|,|n|,1e-3) */
    int worst_index[TG_GRADCHECK_MAX_INPUTS];     /* element with the largest abs error */
    bool ok;                                      /* every element within atol + rtol*|n| */
} tg_gradcheck_result;

/* inputs: heap tensors; those with requires_grad are checked. eps is the
 * finite-difference step (1e-2 suits float32 kernels). */
tg_gradcheck_result tg_gradcheck(tg_gradcheck_fn f, void *ctx, tg_tensor **inputs, int n_inputs, double eps,
                                 double atol, double rtol);

#endif /* TG_AUTOGRAD_H */

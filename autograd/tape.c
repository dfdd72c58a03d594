/* autograd/tape.c — the Wengert list: recording, module scopes, anomaly
 * mode, gradient hooks, backward, printing. */
#include "autograd.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Each thread has its own default tape, made on first use and freed when the
 * thread exits (a pthread key's destructor, as the gemm scratch does) or by
 * tg_tape_release_default() in that thread. */
static _Thread_local tg_tape *t_default;
static _Thread_local tg_tape *g_current;
static pthread_key_t g_default_key;
static pthread_once_t g_default_once = PTHREAD_ONCE_INIT;

static void tape_init(tg_tape *t)
{
    memset(t, 0, sizeof *t);
    t->arena = tg_arena_new(1 << 20);
    t->grad_enabled = true;
}

tg_tape *tg_tape_new(void)
{
    tg_tape *t = malloc(sizeof *t);
    if (!t)
        tg_error("tg_tape_new", "out of memory");
    tape_init(t);
    return t;
}

static void tape_release(tg_tape *t)
{
    for (int i = 0; i < t->n_paths; i++) {
        free(t->paths[i].name);
        free(t->paths[i].path);
    }
    free(t->paths);
    free(t->nodes);
    tg_arena_free(t->arena);
    memset(t, 0, sizeof *t);
}

/* Runs at thread exit with the exiting thread's default tape. */
static void default_destructor(void *p)
{
    tg_tape *t = p;
    if (t_default == t) /* a later destructor may still run ops: it gets a new tape */
        t_default = NULL;
    if (g_current == t)
        g_current = NULL;
    tape_release(t);
    free(t);
}
static void default_key_init(void) { pthread_key_create(&g_default_key, default_destructor); }

void tg_tape_release_default(void)
{
    tg_tape *t = t_default;
    if (!t)
        return;
    if (g_current == t)
        g_current = NULL;
    t_default = NULL;
    pthread_setspecific(g_default_key, NULL);
    tape_release(t);
    free(t);
}

void tg_tape_free(tg_tape *t)
{
    if (!t)
        return;
    if (t == t_default) {
        tg_tape_release_default();
        return;
    }
    if (g_current == t)
        g_current = NULL;
    tape_release(t);
    free(t);
}

tg_tape *tg_tape_current(void)
{
    if (!g_current) {
        if (!t_default) {
            pthread_once(&g_default_once, default_key_init);
            t_default = tg_tape_new();
            pthread_setspecific(g_default_key, t_default);
        }
        g_current = t_default;
    }
    return g_current;
}

tg_tape *tg_tape_use(tg_tape *t)
{
    tg_tape *prev = tg_tape_current();
    g_current = t;
    if (!t)
        tg_tape_current();
    return prev;
}

void tg_tape_reset(tg_tape *t)
{
    if (!t)
        t = tg_tape_current();
    t->n_nodes = 0;
    t->n_free_grads = 0;
    t->scope = 0;
    tg_arena_reset(t->arena);
}

bool tg_set_grad_enabled(bool on)
{
    tg_tape *t = tg_tape_current();
    bool prev = t->grad_enabled;
    t->grad_enabled = on;
    return prev;
}

bool tg_is_grad_enabled(void) { return tg_tape_current()->grad_enabled; }

bool tg_retain_grads(bool on)
{
    tg_tape *t = tg_tape_current();
    bool prev = t->retain_grads;
    t->retain_grads = on;
    return prev;
}

/* ---------------------------------------------------------------- module scopes */

static char *dup_str(const char *op, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (!d)
        tg_error(op, "out of memory");
    return memcpy(d, s, n);
}

/* Index of child `name` of path `parent`, interned on first use. */
static int intern_path(tg_tape *t, int parent, const char *name)
{
    if (t->n_paths == 0) {   /* paths[0]: the top level */
        t->paths = malloc(16 * sizeof *t->paths);
        if (!t->paths)
            tg_error("tg_scope_push", "out of memory");
        t->cap_paths = 16;
        t->paths[0] = (tg_scope_path){dup_str("tg_scope_push", ""), dup_str("tg_scope_push", ""), -1, -1, -1};
        t->n_paths = 1;
    }
    for (int c = t->paths[parent].first_child; c >= 0; c = t->paths[c].next_sibling)
        if (strcmp(t->paths[c].name, name) == 0)
            return c;
    if (t->n_paths == t->cap_paths) {
        tg_scope_path *p = realloc(t->paths, (size_t)t->cap_paths * 2 * sizeof *p);
        if (!p)
            tg_error("tg_scope_push", "out of memory growing the path table");
        t->paths = p;
        t->cap_paths *= 2;
    }
    const char *pp = t->paths[parent].path;
    const size_t lp = strlen(pp), ln = strlen(name);
    char *full = malloc(lp + ln + 2);
    if (!full)
        tg_error("tg_scope_push", "out of memory");
    memcpy(full, pp, lp);
    if (lp)
        full[lp] = '.';
    memcpy(full + lp + (lp ? 1 : 0), name, ln + 1);
    const int id = t->n_paths++;
    t->paths[id] = (tg_scope_path){dup_str("tg_scope_push", name), full, parent, -1, t->paths[parent].first_child};
    t->paths[parent].first_child = id;
    return id;
}

void tg_scope_push(const char *name)
{
    tg_check_ptr("tg_scope_push", name, "scope name");
    if (!*name)
        tg_error("tg_scope_push", "the scope name is empty");
    tg_tape *t = tg_tape_current();
    t->scope = intern_path(t, t->n_paths ? t->scope : 0, name);
}

void tg_scope_pop(void)
{
    tg_tape *t = tg_tape_current();
    if (t->scope == 0)
        tg_error("tg_scope_pop", "no module scope is open (more pops than pushes)");
    t->scope = t->paths[t->scope].parent;
}

const char *tg_scope_path_current(void)
{
    const tg_tape *t = tg_tape_current();
    return t->n_paths ? t->paths[t->scope].path : "";
}

/* ---------------------------------------------------------------- anomaly mode
 * Off, the mode is one branch per recorded op and per backward entry.
 * TG_NO_ANOMALY_MODE compiles those branches out: the mode-free build that
 * make bench measures this one against (bench_train_nomode). */
#ifdef TG_NO_ANOMALY_MODE
#define ANOMALY_ON(t) false
#else
#define ANOMALY_ON(t) ((t)->detect_anomaly)
#endif

bool tg_set_detect_anomaly(bool on)
{
#ifdef TG_NO_ANOMALY_MODE
    if (on)
        tg_error("tg_set_detect_anomaly", "this build has no anomaly mode (compiled with TG_NO_ANOMALY_MODE)");
#endif
    tg_tape *t = tg_tape_current();
    bool prev = t->detect_anomaly;
    t->detect_anomaly = on;
    return prev;
}

bool tg_is_anomaly_enabled(void) { return tg_tape_current()->detect_anomaly; }

/* Index of the first NaN (or, with inf, NaN or +-Inf) in v[0..n), or -1. */
static int64_t first_bad(const float *v, int64_t n, bool inf)
{
    for (int64_t i = 0; i < n; i++)
        if (isnan(v[i]) || (inf && isinf(v[i])))
            return i;
    return -1;
}

/* "[1,2]": the multi-index of flat element i of t. */
static char *index_str(char *buf, const tg_tensor *t, int64_t i)
{
    int idx[TG_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        idx[d] = t->shape[d] ? (int)(i % t->shape[d]) : 0;
        i = t->shape[d] ? i / t->shape[d] : 0;
    }
    return tg_shape_str(buf, t->ndim, idx);
}

/* "[2,3], [3](w) -> [2]": shapes, with the names of named leaves, as tg_tape_print */
static void node_shapes(char *buf, size_t size, const tg_node *n)
{
    char b[64];
    size_t len = 0;
    buf[0] = '\0';
    for (int k = 0; k < n->n_in && len < size; k++) {
        const tg_tensor *x = n->in[k];
        const bool named = x->node < 0 && x->name;
        len += (size_t)snprintf(buf + len, size - len, "%s%s%s%s%s", k ? ", " : "", tg_shape_str(b, x->ndim, x->shape),
                                named ? "(" : "", named ? x->name : "", named ? ")" : "");
    }
    if (len < size)
        snprintf(buf + len, size - len, " -> %s", tg_shape_str(b, n->out->ndim, n->out->shape));
}

/* A bad value as torch prints it: "nan" whatever its sign bit, "inf", "-inf". */
static const char *bad_str(float v) { return isnan(v) ? "nan" : v > 0 ? "inf" : "-inf"; }

static const char *path_or_top(const char *p) { return p && *p ? p : "(top level)"; }

static void check_forward(const tg_tape *t, const char *op, tg_tensor *out, tg_tensor **in, int n_in, int entry)
{
    const int64_t i = first_bad(out->data, out->numel, false);
    if (i < 0)
        return;
    tg_node tmp = {.op = op, .out = out, .in = in, .n_in = n_in};
    char shapes[400], ix[64], where[32];
    node_shapes(shapes, sizeof shapes, &tmp);
    if (entry >= 0)
        snprintf(where, sizeof where, "tape entry #%d", entry);
    else
        snprintf(where, sizeof where, "not recorded");
    tg_error(op, "anomaly in forward: %s, module %s, %s: output element %s (flat %lld) is %s",
             where, path_or_top(t->n_paths ? t->paths[t->scope].path : ""), shapes, index_str(ix, out, i),
             (long long)i, bad_str(out->data[i]));
}

/* After n's backward: every gradient it added to must be finite. */
static void check_backward(const tg_tape *t, const tg_node *n)
{
    for (int k = 0; k < n->n_in; k++) {
        const tg_tensor *x = n->in[k];
        if (!x->requires_grad || !x->grad)
            continue;
        const int64_t i = first_bad(x->grad, x->numel, true);
        if (i < 0)
            continue;
        char shapes[400], ix[64], b[64];
        node_shapes(shapes, sizeof shapes, n);
        tg_error(n->op, "anomaly in backward: tape entry #%d, module %s, %s: the gradient of input %d %s%s%s%s "
                 "at %s (flat %lld) is %s",
                 (int)(n - t->nodes), path_or_top(n->path), shapes, k, tg_shape_str(b, x->ndim, x->shape),
                 x->name ? " (" : "", x->name ? x->name : "", x->name ? ")" : "", index_str(ix, x, i),
                 (long long)i, bad_str(x->grad[i]));
    }
}

/* ---------------------------------------------------------------- gradient hooks */

static size_t grad_bytes(const tg_tensor *t) { return (size_t)(t->numel ? t->numel : 1) * sizeof(float); }

static int g_leaf_hooks;   /* hooks on heap tensors alive, process-wide (atomic) */

tg_hook *tg_register_hook(tg_tensor *t, tg_hook_fn fn, void *ctx)
{
    tg_check_ptr("tg_register_hook", t, "tensor");
    tg_check_ptr("tg_register_hook", fn, "hook function");
    if (!t->requires_grad) {
        char b[64];
        tg_error("tg_register_hook", "cannot register a hook on a tensor %s that does not require grad",
                 tg_shape_str(b, t->ndim, t->shape));
    }
    const bool heap = t->storage == TG_STORAGE_HEAP;
    tg_hook *h;
    if (heap) {
        h = malloc(sizeof *h);
        if (!h)
            tg_error("tg_register_hook", "out of memory");
        __atomic_add_fetch(&g_leaf_hooks, 1, __ATOMIC_RELAXED);
    } else {
        h = tg_arena_alloc(t->tape ? t->tape->arena : tg_tape_current()->arena, sizeof *h);
    }
    *h = (tg_hook){fn, ctx, t, NULL, heap};
    tg_hook **end = &t->hooks;
    while (*end)
        end = &(*end)->next;
    *end = h;
    return h;
}

void tg_remove_hook(tg_hook *h)
{
    if (!h)
        return;
    for (tg_hook **p = &h->tensor->hooks; *p; p = &(*p)->next)
        if (*p == h) {
            *p = h->next;
            if (h->heap) {
                __atomic_sub_fetch(&g_leaf_hooks, 1, __ATOMIC_RELAXED);
                free(h);
            }
            return;
        }
    tg_error("tg_remove_hook", "the hook is not registered on its tensor (removed twice?)");
}

static void run_hooks(tg_tensor *t)
{
    for (tg_hook *h = t->hooks; h; h = h->next)
        h->fn(t, t->grad, h->ctx);
}

/* A leaf with hooks during one backward: its gradient of this pass goes to
 * a fresh buffer (so the hooks see it alone), added to .grad at last_use. */
typedef struct {
    tg_tensor *t;
    float *saved;      /* .grad before this backward (NULL if none) */
    int last_use;      /* lowest entry index that takes it as input */
    bool reached;      /* some entry using it ran its backward */
} leaf_pass;

static int collect_hooked_leaves(tg_tape *t, int last, leaf_pass **out)
{
    if (!__atomic_load_n(&g_leaf_hooks, __ATOMIC_RELAXED))
        return 0;
    int n = 0, cap = 0;
    leaf_pass *lp = NULL;
    for (int i = last; i >= 0; i--)
        for (int k = 0; k < t->nodes[i].n_in; k++) {
            tg_tensor *x = t->nodes[i].in[k];
            if (!x->hooks || !x->requires_grad || (x->node >= 0 && x->tape == t))
                continue;
            int j = 0;
            while (j < n && lp[j].t != x)
                j++;
            if (j == n) {
                if (n == cap) {   /* from the arena: reused every step */
                    leaf_pass *g = tg_arena_alloc(t->arena, (size_t)(cap ? cap * 2 : 8) * sizeof *g);
                    if (n)
                        memcpy(g, lp, (size_t)n * sizeof *g);
                    lp = g;
                    cap = cap ? cap * 2 : 8;
                }
                lp[n++] = (leaf_pass){x, x->grad, i, false};
                x->grad = tg_arena_alloc(t->arena, grad_bytes(x));
                memset(x->grad, 0, grad_bytes(x));
            }
            lp[j].last_use = i;
        }
    *out = lp;
    return n;
}

/* The pass is over for p's leaf: run its hooks, then accumulate into .grad. */
static void finish_leaf(tg_tape *t, leaf_pass *p)
{
    tg_tensor *x = p->t;
    float *pass = x->grad;
    if (p->reached)
        run_hooks(x);
    x->grad = p->saved;
    if (!p->reached)
        return;
    float *g = tg_grad_buffer(x, t->arena);
    for (int64_t i = 0; i < x->numel; i++)
        g[i] += pass[i];
}

/* ---------------------------------------------------------------- recording and backward */


/* An intermediate's backward has run: its grad is dead; keep the buffer. */
static void release_grad(tg_tape *tape, tg_tensor *t)
{
    if (t->storage != TG_STORAGE_ARENA || !t->grad || tape->n_free_grads == 64)
        return;
    tape->free_grads[tape->n_free_grads].bytes = grad_bytes(t);
    tape->free_grads[tape->n_free_grads].p = t->grad;
    tape->n_free_grads++;
    t->grad = NULL;
}

tg_tensor *tg_new_tensor(int ndim, const int *shape)
{
    return tg_tensor_alloc(tg_tape_current()->arena, ndim, shape);
}

void *tg_tape_alloc(size_t bytes) { return tg_arena_alloc(tg_tape_current()->arena, bytes); }

tg_node *tg_record(const char *op, tg_tensor *out, tg_tensor **in, int n_in, tg_backward_fn backward)
{
    tg_check_ptr("tg_record", op, "op name");
    tg_check_ptr(op, out, "output");
    tg_check_ptr(op, backward, "backward function");
    if (n_in < 1)
        tg_error(op, "records %d inputs, at least 1 is needed", n_in);
    tg_check_ptr(op, in, "input list");
    for (int i = 0; i < n_in; i++)
        tg_check_ptr(op, in[i], "an input");
    tg_tape *t = tg_tape_current();
    bool any = false;
    for (int i = 0; i < n_in; i++)
        any |= in[i]->requires_grad;
    if (!t->grad_enabled || !any) {
        if (ANOMALY_ON(t))
            check_forward(t, op, out, in, n_in, -1);
        return NULL;
    }
    if (t->n_nodes == t->cap_nodes) {
        int cap = t->cap_nodes ? t->cap_nodes * 2 : 256;
        tg_node *nodes = realloc(t->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes)
            tg_error(op, "out of memory growing the tape to %d entries", cap);
        t->nodes = nodes;
        t->cap_nodes = cap;
    }
    tg_node *n = &t->nodes[t->n_nodes];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->scope = t->n_paths ? t->scope : 0;
    n->path = t->n_paths ? t->paths[t->scope].path : "";
    n->backward = backward;
    n->out = out;
    n->n_in = n_in;
    n->in = tg_arena_alloc(t->arena, (size_t)n_in * sizeof *n->in);
    memcpy(n->in, in, (size_t)n_in * sizeof *n->in);
    out->requires_grad = true;
    out->node = t->n_nodes++;
    out->tape = t;
    if (ANOMALY_ON(t))
        check_forward(t, op, out, in, n_in, out->node);
    return n;
}

/* A buffer for t's first gradient, its contents undefined: a released one of
 * its size, else a new one from the arena. */
static float *take_grad_buffer(tg_tape *tape, const tg_tensor *t)
{
    const size_t bytes = grad_bytes(t);
    for (int i = tape->n_free_grads - 1; i >= 0; i--)
        if (tape->free_grads[i].bytes == bytes) {
            float *p = tape->free_grads[i].p;
            tape->free_grads[i] = tape->free_grads[--tape->n_free_grads];
            return p;
        }
    return tg_arena_alloc(tape->arena, bytes);
}

float *tg_grad_of(tg_tensor *t)
{
    tg_check_ptr("tg_grad_of", t, "tensor");
    if (!t->requires_grad)
        return NULL;
    tg_tape *tape = tg_tape_current();
    if (!t->grad && t->storage == TG_STORAGE_ARENA) {
        t->grad = take_grad_buffer(tape, t);
        memset(t->grad, 0, grad_bytes(t)); /* callers add: the first one adds to zeros */
    }
    return tg_grad_buffer(t, tape->arena);
}

/* The entry whose backward is running, when its output's gradient dies as
 * that backward returns (no retain_grads, not the loss): tg_grad_pass may
 * then hand the buffer on. NULL otherwise. */
static _Thread_local const tg_node *t_dying_out;

/* t has no gradient yet and is input k of n alone: its first writer is n */
static bool first_writer(const tg_node *n, int k)
{
    const tg_tensor *t = n->in[k];
    if (!t->requires_grad || t->grad || t->storage != TG_STORAGE_ARENA)
        return false;
    for (int i = 0; i < n->n_in; i++)
        if (i != k && n->in[i] == t)
            return false;
    return true;
}

bool tg_grad_pass(tg_node *n, int k)
{
    tg_check_ptr("tg_grad_pass", n, "node");
    if (k < 0 || k >= n->n_in)
        tg_error("tg_grad_pass", "%s has inputs 0 to %d, not %d", n->op, n->n_in - 1, k);
    tg_tensor *t = n->in[k], *out = n->out;
    if (t_dying_out != n || out->storage != TG_STORAGE_ARENA || !out->grad || t->numel != out->numel ||
        !first_writer(n, k))
        return false;
    t->grad = out->grad;
    out->grad = NULL;
    return true;
}

float *tg_grad_dest(tg_node *n, int k, bool *accumulate)
{
    tg_check_ptr("tg_grad_dest", n, "node");
    tg_check_ptr("tg_grad_dest", accumulate, "accumulate flag");
    if (k < 0 || k >= n->n_in)
        tg_error("tg_grad_dest", "%s has inputs 0 to %d, not %d", n->op, n->n_in - 1, k);
    tg_tensor *t = n->in[k];
    *accumulate = true;
    if (!t->requires_grad)
        return NULL;
    /* a gradient already there (a leaf's, or from another consumer) is added
     * to; so is one of an input that n takes twice, whose two writes would
     * otherwise each take the buffer for the first */
    if (!first_writer(n, k))
        return tg_grad_of(t);
    t->grad = take_grad_buffer(tg_tape_current(), t);
    *accumulate = false;
    return t->grad;
}

void tg_backward(tg_tensor *loss, const tg_tensor *seed)
{
    tg_check_ptr("tg_backward", loss, "loss");
    tg_tape *t = tg_tape_current();
    char b1[64], b2[64];
    if (!loss->requires_grad)
        tg_error("tg_backward", "the loss %s does not require grad (no recorded op leads to it)",
                 tg_shape_str(b1, loss->ndim, loss->shape));
    if (!seed && loss->numel != 1)
        tg_error("tg_backward", "grad can be implicitly created only for one-element outputs, got %s",
                 tg_shape_str(b1, loss->ndim, loss->shape));
    if (seed && seed->numel != loss->numel)
        tg_error("tg_backward", "seed gradient %s does not match the loss %s",
                 tg_shape_str(b1, seed->ndim, seed->shape), tg_shape_str(b2, loss->ndim, loss->shape));
    if (loss->node >= 0 && (loss->tape != t || loss->node >= t->n_nodes || t->nodes[loss->node].out != loss))
        tg_error("tg_backward", "the loss was not recorded on the current tape (was it reset?)");

    /* Intermediate grads start from zero on every backward; leaves accumulate. */
    for (int i = 0; i < t->n_nodes; i++)
        t->nodes[i].out->grad = NULL;
    leaf_pass *leaves = NULL;
    const int n_leaves = collect_hooked_leaves(t, loss->node, &leaves);

    float *g = tg_grad_of(loss);
    for (int64_t i = 0; i < loss->numel; i++)
        g[i] += seed ? seed->data[i] : 1.0f;

    const tg_node *outer_dying = t_dying_out; /* (a backward run from inside another's) */
    for (int i = loss->node; i >= 0; i--) {
        tg_node *n = &t->nodes[i];
        if (n->out->grad) {
            if (n->out->hooks)
                run_hooks(n->out);   /* its gradient is complete: every consumer has run */
            t_dying_out = !t->retain_grads && n->out != loss ? n : NULL;
            n->backward(n);
            t_dying_out = outer_dying;
            if (ANOMALY_ON(t))
                check_backward(t, n);
            if (!t->retain_grads && n->out != loss)
                release_grad(t, n->out);
            for (int j = 0; j < n_leaves; j++)
                for (int k = 0; k < n->n_in; k++)
                    leaves[j].reached |= n->in[k] == leaves[j].t;
        }
        for (int j = 0; j < n_leaves; j++)
            if (leaves[j].last_use == i)
                finish_leaf(t, &leaves[j]);
    }
}

void tg_zero_grad(tg_tensor **params, int n)
{
    if (n > 0)
        tg_check_ptr("tg_zero_grad", params, "parameter list");
    for (int i = 0; i < n; i++)
        tg_zero_grad_tensor(params[i]);
}

/* ---------------------------------------------------------------- printing */

void tg_tape_print(const tg_tape *t, FILE *f)
{
    if (!t)
        t = tg_tape_current();
    tg_check_ptr("tg_tape_print", f, "stream");
    char b[64];
    fprintf(f, "tape: %d entries, arena %zu bytes used\n", t->n_nodes, tg_arena_used(t->arena));
    for (int i = 0; i < t->n_nodes; i++) {
        const tg_node *n = &t->nodes[i];
        fprintf(f, "#%d %s  %s ", i, n->op, n->path && *n->path ? n->path : "-");
        for (int k = 0; k < n->n_in; k++) {
            const tg_tensor *x = n->in[k];
            fprintf(f, "%s%s", k ? ", " : " ", tg_shape_str(b, x->ndim, x->shape));
            if (x->node < 0 && x->name)
                fprintf(f, "(%s)", x->name);
        }
        fprintf(f, " -> %s\n", tg_shape_str(b, n->out->ndim, n->out->shape));
    }
}

static double grad_norm(const tg_tensor *x)
{
    double s = 0.0;
    for (int64_t i = 0; i < x->numel; i++)
        s += (double)x->grad[i] * x->grad[i];
    return sqrt(s);
}

/* A DOT string literal's body: quotes and backslashes escaped. */
static void dot_str(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
}

/* A tensor's label lines: name (if any), shape, grad norm (if a grad). */
static void dot_tensor_label(FILE *f, const tg_tensor *x)
{
    char b[64];
    if (x->name) {
        dot_str(f, x->name);
        fputs("\\n", f);
    }
    fputs(tg_shape_str(b, x->ndim, x->shape), f);
    if (x->grad)
        fprintf(f, "\\ngrad norm %.4g", grad_norm(x));
}

static bool is_entry_of(const tg_tape *t, const tg_tensor *x)
{
    return x->node >= 0 && x->node < t->n_nodes && x->tape == t && t->nodes[x->node].out == x;
}

/* Where a leaf (any input no entry of this tape made) is first used: its
 * DOT node is named after that entry and input, and drawn in its cluster. */
static void first_use(const tg_tape *t, const tg_tensor *x, int *entry, int *input)
{
    for (int i = 0; i < t->n_nodes; i++)
        for (int k = 0; k < t->nodes[i].n_in; k++)
            if (t->nodes[i].in[k] == x) {
                *entry = i;
                *input = k;
                return;
            }
}

/* The ops of path p and the leaves they use first, then the child paths'
 * clusters, nested. */
static void dot_cluster(const tg_tape *t, FILE *f, int p, int depth)
{
    const int ind = depth * 2 + 2;
    if (p > 0) {
        fprintf(f, "%*ssubgraph cluster_%d {\n%*slabel=\"", ind - 2, "", p, ind, "");
        dot_str(f, t->paths[p].path);
        fprintf(f, "\"; style=rounded; color=gray50;\n");
    }
    for (int i = 0; i < t->n_nodes; i++) {
        const tg_node *n = &t->nodes[i];
        if (n->scope != p)
            continue;
        for (int k = 0; k < n->n_in; k++) {
            const tg_tensor *x = n->in[k];
            int fi = -1, fk = -1;
            if (is_entry_of(t, x) || (first_use(t, x, &fi, &fk), fi != i || fk != k))
                continue;
            fprintf(f, "%*sl%d_%d [shape=ellipse, style=%s, label=\"", ind, "", i, k,
                    x->requires_grad ? "filled, fillcolor=lightblue" : "solid");
            dot_tensor_label(f, x);
            fputs("\"];\n", f);
        }
        fprintf(f, "%*sn%d [shape=box, label=\"#%d ", ind, "", i, i);
        dot_str(f, n->op);
        fputs("\\n", f);
        dot_tensor_label(f, n->out);
        fputs("\"];\n", f);
    }
    if (t->n_paths)
        for (int c = t->paths[p].first_child; c >= 0; c = t->paths[c].next_sibling)
            dot_cluster(t, f, c, depth + 1);
    if (p > 0)
        fprintf(f, "%*s}\n", ind - 2, "");
}

int tg_tape_dot(const tg_tape *t, FILE *f)
{
    if (!t)
        t = tg_tape_current();
    tg_check_ptr("tg_tape_dot", f, "stream");
    fputs("digraph tape {\n  rankdir=TB;\n  node [fontname=\"monospace\", fontsize=10];\n", f);
    dot_cluster(t, f, 0, 0);
    for (int i = 0; i < t->n_nodes; i++) {
        const tg_node *n = &t->nodes[i];
        for (int k = 0; k < n->n_in; k++) {
            const tg_tensor *x = n->in[k];
            int fi = i, fk = k;
            if (is_entry_of(t, x)) {
                fprintf(f, "  n%d -> n%d;\n", x->node, i);
            } else {
                first_use(t, x, &fi, &fk);
                fprintf(f, "  l%d_%d -> n%d;\n", fi, fk, i);
            }
        }
    }
    fputs("}\n", f);
    return ferror(f) ? -1 : 0;
}

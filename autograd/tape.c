/* autograd/tape.c — the Wengert list: recording, backward, printing. */
#include "autograd.h"

#include <stdlib.h>
#include <string.h>

static tg_tape g_default_tape;            /* lazily initialised, see current() */
static _Thread_local tg_tape *g_current;

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
    free(t->nodes);
    tg_arena_free(t->arena);
    memset(t, 0, sizeof *t);
}

void tg_tape_free(tg_tape *t)
{
    if (!t)
        return;
    if (g_current == t)
        g_current = NULL;
    if (t == &g_default_tape) {
        tape_release(t);
        return;
    }
    tape_release(t);
    free(t);
}

tg_tape *tg_tape_current(void)
{
    if (!g_current) {
        if (!g_default_tape.arena)
            tape_init(&g_default_tape);
        g_current = &g_default_tape;
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
    tg_arena_reset(t->arena);
}

void tg_tape_release_default(void)
{
    if (g_current == &g_default_tape)
        g_current = NULL;
    if (g_default_tape.arena)
        tape_release(&g_default_tape);
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

static size_t grad_bytes(const tg_tensor *t) { return (size_t)(t->numel ? t->numel : 1) * sizeof(float); }

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
    if (!t->grad_enabled)
        return NULL;
    bool any = false;
    for (int i = 0; i < n_in; i++)
        any |= in[i]->requires_grad;
    if (!any)
        return NULL;
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
    n->backward = backward;
    n->out = out;
    n->n_in = n_in;
    n->in = tg_arena_alloc(t->arena, (size_t)n_in * sizeof *n->in);
    memcpy(n->in, in, (size_t)n_in * sizeof *n->in);
    out->requires_grad = true;
    out->node = t->n_nodes++;
    return n;
}

float *tg_grad_of(tg_tensor *t)
{
    tg_check_ptr("tg_grad_of", t, "tensor");
    if (!t->requires_grad)
        return NULL;
    tg_tape *tape = tg_tape_current();
    if (!t->grad && t->storage == TG_STORAGE_ARENA) {
        const size_t bytes = grad_bytes(t);
        for (int i = tape->n_free_grads - 1; i >= 0; i--)
            if (tape->free_grads[i].bytes == bytes) {
                t->grad = tape->free_grads[i].p;
                tape->free_grads[i] = tape->free_grads[--tape->n_free_grads];
                memset(t->grad, 0, bytes);
                break;
            }
    }
    return tg_grad_buffer(t, tape->arena);
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
    if (loss->node >= t->n_nodes || (loss->node >= 0 && t->nodes[loss->node].out != loss))
        tg_error("tg_backward", "the loss was not recorded on the current tape (was it reset?)");

    /* Intermediate grads start from zero on every backward; leaves accumulate. */
    for (int i = 0; i < t->n_nodes; i++)
        t->nodes[i].out->grad = NULL;

    float *g = tg_grad_of(loss);
    for (int64_t i = 0; i < loss->numel; i++)
        g[i] += seed ? seed->data[i] : 1.0f;

    for (int i = loss->node; i >= 0; i--) {
        tg_node *n = &t->nodes[i];
        if (!n->out->grad)
            continue;
        n->backward(n);
        if (!t->retain_grads && n->out != loss)
            release_grad(t, n->out);
    }
}

void tg_zero_grad(tg_tensor **params, int n)
{
    if (n > 0)
        tg_check_ptr("tg_zero_grad", params, "parameter list");
    for (int i = 0; i < n; i++)
        tg_zero_grad_tensor(params[i]);
}

void tg_tape_print(const tg_tape *t, FILE *f)
{
    if (!t)
        t = tg_tape_current();
    char b[64];
    fprintf(f, "tape: %d entries, arena %zu bytes used\n", t->n_nodes, tg_arena_used(t->arena));
    for (int i = 0; i < t->n_nodes; i++) {
        const tg_node *n = &t->nodes[i];
        fprintf(f, "#%-4d %-20s", i, n->op);
        for (int k = 0; k < n->n_in; k++) {
            const tg_tensor *x = n->in[k];
            fprintf(f, "%s%s", k ? ", " : " ", tg_shape_str(b, x->ndim, x->shape));
            if (x->node >= 0)
                fprintf(f, "(#%d)", x->node);
            else if (x->name)
                fprintf(f, "(%s)", x->name);
        }
        fprintf(f, " -> %s\n", tg_shape_str(b, n->out->ndim, n->out->shape));
    }
}

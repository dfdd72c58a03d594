/*
 * tests/test_debug.c — suite "debug": the debugging aids of autograd.h.
 * Module-path scopes on tape entries and tg_tape_print's line, tensors
 * naming the tape entry that made them, anomaly mode (forward NaN named
 * with op, entry, module path, shapes, element; a NaN born in backward;
 * the -inf of a causal mask is not an anomaly), gradient hooks (exact
 * scaling, once per backward with the completed gradient, removal,
 * intermediates), tg_tape_dot (checked by Graphviz where installed), and a
 * warm training step with scopes, names and hooks that mallocs nothing:
 * this binary is linked with --wrap=malloc,... (Makefile) so every call the
 * library makes is counted (which also checks that a gemm on slices of C
 * grows every pool thread's pack buffers at once).
 */
#include "testutil.h"

#include "nn/nn.h"
#include "tensor/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- malloc counting through the linker's --wrap */
static long g_allocs;
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t s);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
void *__wrap_malloc(size_t n) { __atomic_add_fetch(&g_allocs, 1, __ATOMIC_RELAXED); return __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t s) { __atomic_add_fetch(&g_allocs, 1, __ATOMIC_RELAXED); return __real_calloc(n, s); }
void *__wrap_realloc(void *p, size_t n) { __atomic_add_fetch(&g_allocs, 1, __ATOMIC_RELAXED); return __real_realloc(p, n); }
void *__wrap_aligned_alloc(size_t a, size_t n) { __atomic_add_fetch(&g_allocs, 1, __ATOMIC_RELAXED); return __real_aligned_alloc(a, n); }

static char *tape_text(const tg_tape *t)
{
    char *mem = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&mem, &len);
    tg_tape_print(t, f);
    fclose(f);
    return mem;
}

/* ================================================================ scopes */

START_TEST(test_scope_paths_on_entries_and_print)
{
    tg_tape *tape = tg_tape_new();
    tg_tape *prev = tg_tape_use(tape);
    tg_tensor *x = tg_requires_grad(tg_ones(TG_SHAPE(8, 4, 32, 32)), true);
    tg_tensor *w = tg_set_name(tg_requires_grad(tg_ones(TG_SHAPE(2)), true), "w");
    tg_tensor *a = tg_mul_scalar(x, 2.0f);                 /* #0, top level */
    tg_scope_push("trf_blocks");
    tg_scope_push("1");
    tg_scope_push("att");
    ck_assert_str_eq(tg_scope_path_current(), "trf_blocks.1.att");
    tg_tensor *s = tg_softmax(a, -1);                      /* #1 */
    tg_scope_pop();
    tg_scope_push("ff");
    tg_tensor *v = tg_mul(tg_sum(s), w);                   /* #2, #3 */
    tg_scope_pop();
    tg_scope_pop();
    tg_scope_pop();
    ck_assert_str_eq(tg_scope_path_current(), "");
    ck_assert_int_eq(tape->n_nodes, 4);
    ck_assert_str_eq(tape->nodes[0].path, "");
    ck_assert_str_eq(tape->nodes[1].path, "trf_blocks.1.att");
    ck_assert_str_eq(tape->nodes[2].path, "trf_blocks.1.ff");
    /* each op output names the tape and entry that made it */
    ck_assert(s->tape == tape && s->node == 1 && tape->nodes[1].out == s);
    ck_assert(v->tape == tape && v->node == 3);
    ck_assert(x->tape == NULL && x->node == -1);
    char *txt = tape_text(tape);
    ck_assert_msg(strstr(txt, "\n#1 tg_softmax  trf_blocks.1.att  [8,4,32,32] -> [8,4,32,32]\n"), "%s", txt);
    ck_assert_msg(strstr(txt, "\n#0 tg_mul_scalar  -  [8,4,32,32] -> [8,4,32,32]\n"), "%s", txt);
    ck_assert_msg(strstr(txt, "\n#3 tg_mul  trf_blocks.1.ff  [], [2](w) -> [2]\n"), "%s", txt);
    free(txt);
    tg_tape_use(prev);
    tg_tape_free(tape);
    tg_free(x);
    tg_free(w);
}
END_TEST

static void pop_at_top(void *ctx)
{
    (void)ctx;
    tg_scope_pop();
}

START_TEST(test_scope_pop_without_push_is_an_error)
{
    char msg[512];
    tg_tape_reset(NULL);
    ck_assert(catch_error(pop_at_top, NULL, msg, sizeof msg));
    ck_assert_msg(strstr(msg, "tg_scope_pop") && strstr(msg, "no module scope is open"), "%s", msg);
}
END_TEST

/* The path table is built in the first step and reused; a reset returns
 * to the top level even when a forward was left half-way. */
START_TEST(test_scope_table_stops_growing)
{
    tg_tape *tape = tg_tape_new();
    tg_tape *prev = tg_tape_use(tape);
    tg_tensor *x = tg_requires_grad(tg_ones(TG_SHAPE(3)), true);
    int n_paths = -1;
    for (int step = 0; step < 4; step++) {
        for (int blk = 0; blk < 3; blk++) {
            char name[24];
            snprintf(name, sizeof name, "blocks.%d", blk);
            tg_scope_push(name);
            tg_scope_push("att");
            tg_exp(x);
            tg_scope_pop();
            tg_scope_pop();
        }
        tg_scope_push("left_open");
        tg_tape_reset(tape);
        ck_assert_str_eq(tg_scope_path_current(), "");
        if (step == 0)
            n_paths = tape->n_paths;
        ck_assert_int_eq(tape->n_paths, n_paths);
    }
    ck_assert_int_eq(n_paths, 1 + 3 * 2 + 1);
    tg_tape_use(prev);
    tg_tape_free(tape);
    tg_free(x);
}
END_TEST

/* ================================================================ anomaly mode */

typedef struct {
    tg_tensor *x, *w, *b;
} small_model;

/* net.0: Linear(2 -> 3) ; net.1: log ; net.2: sum. With w's second row
 * negative, the log sees a negative number at element [0,1] only. */
static void run_small_model(void *ctx)
{
    small_model *m = ctx;
    tg_scope_push("net");
    tg_scope_push("0");
    tg_tensor *h = tg_affine(m->x, m->w, m->b);
    tg_scope_pop();
    tg_scope_push("1");
    h = tg_log(h);
    tg_scope_pop();
    tg_scope_pop();
    tg_backward(tg_sum(h), NULL);
}

START_TEST(test_anomaly_forward_log_of_negative)
{
    tg_tape_reset(NULL);
    small_model m;
    m.x = tg_from_array(TG_SHAPE(1, 2), (const float[]){1.0f, 2.0f});
    m.w = tg_set_name(tg_requires_grad(tg_from_array(TG_SHAPE(3, 2), (const float[]){1, 1, -1, -1, 2, 0}), true),
                      "net.0.weight");
    m.b = tg_set_name(tg_requires_grad(tg_zeros(TG_SHAPE(3)), true), "net.0.bias");
    char msg[512];
    /* off: the NaN goes through silently, as in torch */
    ck_assert(!tg_is_anomaly_enabled());
    ck_assert(!catch_error(run_small_model, &m, msg, sizeof msg));
    tg_tape_reset(NULL);
    tg_zero_grad((tg_tensor *[]){m.w, m.b}, 2);
    ck_assert(!tg_set_detect_anomaly(true));
    ck_assert(catch_error(run_small_model, &m, msg, sizeof msg));
    tg_set_detect_anomaly(false);
    ck_assert_str_eq(msg, "tg_log: anomaly in forward: tape entry #1, module net.1, [1,3] -> [1,3]: "
                          "output element [0,1] (flat 1) is nan");
    tg_tape_reset(NULL);
    tg_free(m.x);
    tg_free(m.w);
    tg_free(m.b);
}
END_TEST

/* sqrt at 0 is fine forward (0) and its backward is 0 / (2 sqrt 0) = NaN
 * when the later op sends back a zero gradient: a NaN born in backward. */
static void run_sqrt_model(void *ctx)
{
    tg_tensor **t = ctx;
    tg_scope_push("norm");
    tg_tensor *y = tg_sqrt(t[0]);
    tg_scope_pop();
    tg_tensor *z = tg_mul(y, t[1]);
    ck_assert(isfinite(z->data[0]) && isfinite(z->data[1]));
    tg_backward(tg_sum(z), NULL);
}

START_TEST(test_anomaly_nan_only_in_backward)
{
    tg_tape_reset(NULL);
    tg_tensor *t[2];
    t[0] = tg_set_name(tg_requires_grad(tg_from_array(TG_SHAPE(3), (const float[]){4.0f, 0.0f, 1.0f}), true), "x");
    t[1] = tg_from_array(TG_SHAPE(3), (const float[]){1.0f, 0.0f, 1.0f});
    tg_set_detect_anomaly(true);
    char msg[512];
    ck_assert(catch_error(run_sqrt_model, t, msg, sizeof msg));
    tg_set_detect_anomaly(false);
    ck_assert_str_eq(msg, "tg_sqrt: anomaly in backward: tape entry #0, module norm, [3](x) -> [3]: "
                          "the gradient of input 0 [3] (x) at [1] (flat 1) is nan");
    tg_tape_reset(NULL);
    tg_free(t[0]);
    tg_free(t[1]);
}
END_TEST

/* The gradient of a backward may also turn infinite: caught as well. */
START_TEST(test_anomaly_inf_in_backward)
{
    tg_tape_reset(NULL);
    tg_tensor *t[2];
    t[0] = tg_requires_grad(tg_from_array(TG_SHAPE(3), (const float[]){4.0f, 0.0f, 1.0f}), true);
    t[1] = tg_from_array(TG_SHAPE(3), (const float[]){1.0f, 1.0f, 1.0f});
    tg_set_detect_anomaly(true);
    char msg[512];
    ck_assert(catch_error(run_sqrt_model, t, msg, sizeof msg));
    tg_set_detect_anomaly(false);
    ck_assert_msg(strstr(msg, "tg_sqrt: anomaly in backward") && strstr(msg, "at [1] (flat 1) is inf"), "%s", msg);
    tg_tape_reset(NULL);
    tg_free(t[0]);
    tg_free(t[1]);
}
END_TEST

static void run_causal_attention(void *ctx)
{
    tg_causal_attention *att = ctx; /* the book's steps (MultiHeadAttention fuses them) */
    tg_generator g;
    tg_manual_seed(&g, 7);
    tg_tensor *x = tg_randn(&g, TG_SHAPE(2, 5, 8));
    tg_tensor *y = tg_causal_attention_forward(att, x);
    tg_backward(tg_sum(tg_mul(y, y)), NULL);
    tg_free(x);
}

START_TEST(test_anomaly_causal_mask_inf_is_legit)
{
    tg_tape_reset(NULL);
    tg_generator g;
    tg_manual_seed(&g, 123);
    tg_causal_attention *att = tg_causal_attention_new(8, 8, 6, 0.0f, false, &g);
    tg_set_detect_anomaly(true);
    char msg[512];
    ck_assert_msg(!catch_error(run_causal_attention, att, msg, sizeof msg), "%s", msg);
    tg_set_detect_anomaly(false);
    /* the masked scores did hold -inf: the check saw them and let them be */
    tg_tape *tape = tg_tape_current();
    bool saw_inf = false;
    for (int i = 0; i < tape->n_nodes; i++)
        if (strcmp(tape->nodes[i].op, "tg_masked_fill") == 0)
            saw_inf |= isinf(tape->nodes[i].out->data[1]) && tape->nodes[i].out->data[1] < 0;
    ck_assert(saw_inf);
    ck_assert(att->W_query->weight->grad && isfinite(att->W_query->weight->grad[0]));
    tg_tape_reset(NULL);
    tg_module_free(&att->base);

    /* MultiHeadAttention's fused causal attention (tg_sdpa_causal) too */
    tg_mha *mha = tg_mha_new(8, 8, 6, 0.0f, 2, false, &g);
    tg_set_detect_anomaly(true);
    tg_tensor *x = tg_randn(&g, TG_SHAPE(2, 5, 8));
    tg_tensor *y = tg_mha_forward(mha, x);
    tg_backward(tg_sum(tg_mul(y, y)), NULL);   /* an anomaly would abort the test */
    tg_set_detect_anomaly(false);
    ck_assert(isfinite(mha->W_query->weight->grad[0]));
    tg_tape_reset(NULL);
    tg_free(x);
    tg_module_free(&mha->base);
}
END_TEST

/* ================================================================ hooks */

typedef struct {
    int calls;
    float factor;
    float seen[8];
    int n_seen;
} hook_log;

static void scale_hook(tg_tensor *t, float *grad, void *ctx)
{
    hook_log *h = ctx;
    h->calls++;
    h->n_seen = (int)(t->numel < 8 ? t->numel : 8);
    memcpy(h->seen, grad, (size_t)h->n_seen * sizeof(float));
    for (int64_t i = 0; i < t->numel; i++)
        grad[i] *= h->factor;
}

/* loss = sum(tanh(x @ w) * w2): w used once, x @ w feeding two ops. */
static void hook_model(tg_tensor *x, tg_tensor *w, tg_tensor *w2, tg_tensor **mid_out, tg_hook_fn mid_fn,
                       void *mid_ctx)
{
    tg_tensor *h = tg_matmul(x, w);
    if (mid_fn)
        tg_register_hook(h, mid_fn, mid_ctx);
    if (mid_out)
        *mid_out = h;
    tg_tensor *y = tg_add(tg_mul(tg_tanh(h), w2), h);   /* h used twice */
    tg_backward(tg_sum(y), NULL);
}

START_TEST(test_hook_scales_leaf_grad_exactly)
{
    tg_tape_reset(NULL);
    tg_generator g;
    tg_manual_seed(&g, 5);
    tg_tensor *x = tg_randn(&g, TG_SHAPE(3, 4));
    tg_tensor *w = tg_requires_grad(tg_randn(&g, TG_SHAPE(4, 2)), true);
    tg_tensor *w2 = tg_requires_grad(tg_randn(&g, TG_SHAPE(2)), true);
    hook_model(x, w, w2, NULL, NULL, NULL);
    float plain[8], plain2[2];
    memcpy(plain, w->grad, sizeof plain);
    memcpy(plain2, w2->grad, sizeof plain2);
    tg_tape_reset(NULL);
    tg_zero_grad((tg_tensor *[]){w, w2}, 2);

    hook_log log = {.factor = 3.0f};
    tg_hook *hk = tg_register_hook(w, scale_hook, &log);
    hook_model(x, w, w2, NULL, NULL, NULL);
    ck_assert_int_eq(log.calls, 1);
    for (int i = 0; i < 8; i++) {
        ck_assert_msg(w->grad[i] == 3.0f * plain[i], "w.grad[%d] = %g, want 3 * %g", i, w->grad[i], plain[i]);
        ck_assert(log.seen[i] == plain[i]);   /* the completed gradient, before the hook */
    }
    for (int i = 0; i < 2; i++)
        ck_assert(w2->grad[i] == plain2[i]);  /* other leaves untouched */

    /* a second backward: the hook sees this pass's gradient alone, once,
     * and .grad accumulates the scaled one */
    tg_tape_reset(NULL);
    hook_model(x, w, w2, NULL, NULL, NULL);
    ck_assert_int_eq(log.calls, 2);
    for (int i = 0; i < 8; i++) {
        ck_assert(log.seen[i] == plain[i]);
        ck_assert(w->grad[i] == 3.0f * plain[i] + 3.0f * plain[i]);
    }

    /* removed: the grad is the plain one again */
    tg_remove_hook(hk);
    ck_assert(w->hooks == NULL);
    tg_tape_reset(NULL);
    tg_zero_grad((tg_tensor *[]){w, w2}, 2);
    hook_model(x, w, w2, NULL, NULL, NULL);
    ck_assert_int_eq(log.calls, 2);
    for (int i = 0; i < 8; i++)
        ck_assert(w->grad[i] == plain[i]);
    tg_tape_reset(NULL);
    tg_free(x);
    tg_free(w);
    tg_free(w2);
}
END_TEST

/* On an op output used twice the hook fires once, with the sum of both
 * consumers' contributions: d/dh [tanh(h) w2 + h] = (1 - tanh^2 h) w2 + 1. */
START_TEST(test_hook_on_intermediate_sees_completed_grad)
{
    tg_tape_reset(NULL);
    tg_generator g;
    tg_manual_seed(&g, 9);
    tg_tensor *x = tg_randn(&g, TG_SHAPE(3, 4));
    tg_tensor *w = tg_requires_grad(tg_randn(&g, TG_SHAPE(4, 2)), true);
    tg_tensor *w2 = tg_requires_grad(tg_randn(&g, TG_SHAPE(2)), true);
    hook_log log = {.factor = 1.0f};
    tg_tensor *h;
    hook_model(x, w, w2, &h, scale_hook, &log);
    ck_assert_int_eq(log.calls, 1);
    for (int i = 0; i < 6; i++) {
        const double th = tanh((double)h->data[i]);
        const double want = (1.0 - th * th) * w2->data[i % 2] + 1.0;
        ck_assert_msg(fabs(log.seen[i] - want) < 1e-5, "h.grad[%d] seen %g, want %g", i, log.seen[i], want);
    }
    /* a hook that zeroes an intermediate's gradient cuts everything upstream */
    tg_tape_reset(NULL);
    tg_zero_grad((tg_tensor *[]){w, w2}, 2);
    log = (hook_log){.factor = 0.0f};
    hook_model(x, w, w2, &h, scale_hook, &log);
    ck_assert_int_eq(log.calls, 1);
    for (int i = 0; i < 8; i++)
        ck_assert(w->grad[i] == 0.0f);
    ck_assert(w2->grad[0] != 0.0f);
    /* removal on an intermediate */
    tg_tape_reset(NULL);
    log = (hook_log){.factor = 0.0f};
    tg_tensor *hh = tg_matmul(x, w);
    tg_hook *hk = tg_register_hook(hh, scale_hook, &log);
    tg_remove_hook(hk);
    tg_backward(tg_sum(hh), NULL);
    ck_assert_int_eq(log.calls, 0);
    tg_tape_reset(NULL);
    tg_free(x);
    tg_free(w);
    tg_free(w2);
}
END_TEST

/* A leaf two entries use: its hook fires once, when both have sent their
 * part, with the sum, and what it leaves is what .grad gets.
 * loss = sum(x * w + exp(x) * w), so d/dw = x + exp(x). */
START_TEST(test_hook_on_leaf_used_twice_sees_the_sum)
{
    tg_tape_reset(NULL);
    const float xv[3] = {0.5f, -1.0f, 2.0f};
    tg_tensor *x = tg_from_array(TG_SHAPE(3), xv);
    tg_tensor *w = tg_requires_grad(tg_from_array(TG_SHAPE(3), (const float[]){1.0f, 2.0f, 3.0f}), true);
    hook_log log = {.factor = 2.0f};
    tg_register_hook(w, scale_hook, &log);
    tg_tensor *a = tg_mul(x, w);                                    /* #0: w's last use in backward */
    tg_tensor *b = tg_mul(tg_exp(x), w);                            /* #1, #2 */
    tg_backward(tg_sum(tg_add(a, b)), NULL);
    ck_assert_int_eq(log.calls, 1);
    for (int i = 0; i < 3; i++) {
        const double want = (double)xv[i] + exp((double)xv[i]);
        ck_assert_msg(fabs(log.seen[i] - want) < 1e-5 * fabs(want), "hook saw w.grad[%d] = %g, want %g", i,
                      log.seen[i], want);
        ck_assert(w->grad[i] == 2.0f * log.seen[i]);
    }
    tg_tape_reset(NULL);
    tg_free(x);
    tg_free(w);
}
END_TEST

static void hook_no_grad(void *ctx) { tg_register_hook(ctx, scale_hook, NULL); }

START_TEST(test_hook_needs_requires_grad)
{
    tg_tensor *x = tg_ones(TG_SHAPE(2));
    char msg[512];
    ck_assert(catch_error(hook_no_grad, x, msg, sizeof msg));
    ck_assert_msg(strstr(msg, "tg_register_hook") && strstr(msg, "does not require grad"), "%s", msg);
    tg_free(x);
}
END_TEST

/* ================================================================ DOT */

START_TEST(test_tape_dot_graph)
{
    tg_tape_reset(NULL);
    tg_tensor *x = tg_set_name(tg_ones(TG_SHAPE(2, 3)), "x");
    tg_tensor *w = tg_set_name(tg_requires_grad(tg_ones(TG_SHAPE(3, 2)), true), "enc.fc.weight");
    tg_scope_push("enc");
    tg_scope_push("fc");
    tg_tensor *h = tg_matmul(x, w);
    tg_scope_pop();
    h = tg_tanh(h);
    tg_scope_pop();
    tg_tensor *loss = tg_sum(tg_mul(h, h));
    tg_backward(loss, NULL);
    char dir[64], path[128];
    tmpdir_create(dir, sizeof dir, "tg_dot");
    snprintf(path, sizeof path, "%s/tape.dot", dir);
    FILE *f = fopen(path, "w");
    ck_assert(f);
    ck_assert_int_eq(tg_tape_dot(NULL, f), 0);
    fclose(f);
    f = fopen(path, "r");
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    const char *need[] = {"digraph tape {", "subgraph cluster_", "label=\"enc\"", "label=\"enc.fc\"",
                          "#0 tg_matmul\\n[2,2]", "enc.fc.weight\\n[3,2]\\ngrad norm", "x\\n[2,3]", "n0 -> n1;",
                          "#3 tg_sum\\n[]\\ngrad norm 1"};
    for (size_t i = 0; i < sizeof need / sizeof *need; i++)
        ck_assert_msg(strstr(buf, need[i]), "DOT lacks '%s':\n%s", need[i], buf);
    /* enc.fc nests inside enc */
    ck_assert(strstr(buf, "label=\"enc\"") < strstr(buf, "label=\"enc.fc\""));
    if (system("command -v dot >/dev/null 2>&1") == 0) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "dot -Tsvg '%s' -o '%s/tape.svg'", path, dir);
        ck_assert_msg(system(cmd) == 0, "dot -Tsvg rejected:\n%s", buf);
    } else {
        printf("test_tape_dot_graph: Graphviz 'dot' not installed, SVG check skipped\n");
    }
    tmpdir_remove(dir);
    tg_tape_reset(NULL);
    tg_free(x);
    tg_free(w);
}
END_TEST

/* ================================================================ warm steps */

static void count_hook(tg_tensor *t, float *grad, void *ctx)
{
    (void)t;
    (void)grad;
    (*(int *)ctx)++;
}

/* A small GPT step with every debugging aid that may stay on in training:
 * scopes (the model's forward), full parameter names, a hook on a leaf
 * and one on an intermediate each step: after the first two steps, no
 * malloc at all. */
/* A gemm with too few row blocks for 2 threads, M < N, gives each thread a
 * slice of C's columns; claims are dynamic, so either thread may take the
 * wider slice in a later call. The call therefore grows every pool thread's
 * op(B) pack buffer for the widest slice (an odd number of NR panels here,
 * so the widest is one panel wider): growing any thread's buffer to that
 * size afterwards allocates nothing. */
static void grow_gemm_b(void *ctx, int64_t i0, int64_t i1)
{
    (void)i0, (void)i1;
    tg_k_scratch(TG_SCRATCH_GEMM_B, *(const size_t *)ctx);
}

START_TEST(test_gemm_column_slices_reserve_every_thread)
{
    enum { M = 40, N = 270, K = 128 }; /* 9 panels of 32 (AVX-512) or 17 of 16 */
    const int nr = strcmp(tg_k_gemm_isa_name(), "avx512") == 0 ? 32 : 16;
    const int panels = (N + nr - 1) / nr;
    ck_assert_int_eq(panels % 2, 1);
    size_t widest = (size_t)(panels + 1) / 2 * nr * TG_GEMM_KC;
    float *A = calloc(M * K, sizeof(float)), *B = calloc(K * N, sizeof(float)), *C = calloc(M * N, sizeof(float));
    tg_set_num_threads(2);
    tg_k_gemm(false, false, M, N, K, A, B, C, false);
    const long before = __atomic_load_n(&g_allocs, __ATOMIC_RELAXED);
    const bool ran = tg_parallel_each(grow_gemm_b, &widest); /* no ck_assert in between: Check mallocs */
    const long grown = __atomic_load_n(&g_allocs, __ATOMIC_RELAXED) - before;
    ck_assert(ran);
    ck_assert_msg(grown == 0, "a pool thread grew its op(B) buffer for the widest slice: %ld mallocs", grown);
    tg_set_num_threads(1);
    free(A);
    free(B);
    free(C);
}
END_TEST

START_TEST(test_warm_steps_no_mallocs_with_scopes_and_hooks)
{
    tg_tape *tape = tg_tape_new();
    tg_tape *prev = tg_tape_use(tape);
    tg_generator g;
    tg_manual_seed(&g, 1);
    tg_gpt_config cfg = {.vocab_size = 11, .context_length = 8, .emb_dim = 8, .n_heads = 2, .n_layers = 2,
                         .drop_rate = 0.1f, .qkv_bias = false};
    tg_gpt *m = tg_gpt_new(&cfg, &g);
    int32_t ids[16], targets[16];
    for (int i = 0; i < 16; i++) {
        ids[i] = i % 11;
        targets[i] = (i * 3) % 11;
    }
    int leaf_calls = 0, mid_calls = 0;
    tg_hook *leaf_hook = tg_register_hook(tg_gpt_params(m)->items[0].t, count_hook, &leaf_calls);
    long warm = -1;
    for (int step = 0; step < 5; step++) {
        long before = __atomic_load_n(&g_allocs, __ATOMIC_RELAXED);
        tg_scope_push("model");
        tg_tensor *logits = tg_gpt_forward(m, ids, 2, 8);
        tg_register_hook(logits, count_hook, &mid_calls);
        tg_scope_pop();
        tg_backward(tg_cross_entropy(logits, targets), NULL);
        tg_params_zero_grad(tg_gpt_params(m));
        tg_tape_reset(tape);
        long made = __atomic_load_n(&g_allocs, __ATOMIC_RELAXED) - before;
        if (step >= 2)
            ck_assert_msg(made == 0, "warm step %d made %ld mallocs", step, made);
        warm = made;
    }
    ck_assert_int_eq(warm, 0);
    ck_assert_int_eq(leaf_calls, 5);
    ck_assert_int_eq(mid_calls, 5);
    tg_remove_hook(leaf_hook);
    tg_gpt_free(m);
    tg_tape_use(prev);
    tg_tape_free(tape);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("debug");
    TCase *tc = tcase_create("scopes");
    tcase_add_test(tc, test_scope_paths_on_entries_and_print);
    tcase_add_test(tc, test_scope_pop_without_push_is_an_error);
    tcase_add_test(tc, test_scope_table_stops_growing);
    suite_add_tcase(s, tc);

    tc = tcase_create("anomaly");
    tcase_add_test(tc, test_anomaly_forward_log_of_negative);
    tcase_add_test(tc, test_anomaly_nan_only_in_backward);
    tcase_add_test(tc, test_anomaly_inf_in_backward);
    tcase_add_test(tc, test_anomaly_causal_mask_inf_is_legit);
    suite_add_tcase(s, tc);

    tc = tcase_create("hooks");
    tcase_add_test(tc, test_hook_scales_leaf_grad_exactly);
    tcase_add_test(tc, test_hook_on_intermediate_sees_completed_grad);
    tcase_add_test(tc, test_hook_on_leaf_used_twice_sees_the_sum);
    tcase_add_test(tc, test_hook_needs_requires_grad);
    suite_add_tcase(s, tc);

    tc = tcase_create("graph");
    tcase_add_test(tc, test_tape_dot_graph);
    tcase_add_test(tc, test_warm_steps_no_mallocs_with_scopes_and_hooks);
    tcase_add_test(tc, test_gemm_column_slices_reserve_every_thread);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()) ? 1 : 0; }

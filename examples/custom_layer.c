/*
 * examples/custom_layer.c — extending tapegrad from outside the library, with
 * its public headers alone (docs/EXTENDING.md walks through this file):
 *
 *   1. an op of our own, SiLU: forward, backward and the tg_record call;
 *   2. a module of our own, RMSNorm with a learnable weight, on the module
 *      interface (a tg_module header, its parameter registered once);
 *   3. a gradcheck of both against finite differences;
 *   4. the book's GPT with every LayerNorm swapped for RMSNorm and the
 *      FeedForward's GELU for SiLU (tg_module_replace, as a torch user writes
 *      model.trf_blocks[0].norm1 = RMSNorm(d)), trained by the library
 *      trainer (optim/trainer.h) on data/the-verdict.txt with progress lines;
 *   5. a checkpoint halfway, a resume from it in a fresh model, and a check
 *      that the resumed run equals the uninterrupted one bit for bit.
 *
 *   custom_layer [--steps N] [--data FILE] [--save FILE]
 *
 * Exits 0 when every check holds, 1 when one fails, 2 on a usage error.
 */
#include "autograd/autograd.h"
#include "nn/nn.h"
#include "optim/trainer.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- 1. an op: SiLU
 * silu(x) = x * sigmoid(x) (torch.nn.functional.silu). x (any) -> same shape.
 * d silu / dx = s + x s (1 - s), s = sigmoid(x). */

static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

static void silu_backward(tg_node *n)
{
    const tg_tensor *x = n->in[0];
    float *gx = tg_grad_of(n->in[0]); /* NULL when x needs no grad */
    if (!gx)
        return;
    for (int64_t i = 0; i < x->numel; i++) {
        const float s = sigmoid(x->data[i]);
        gx[i] += n->out->grad[i] * (s + x->data[i] * s * (1.0f - s)); /* always += */
    }
}

static tg_tensor *silu(tg_tensor *x)
{
    tg_tensor *out = tg_new_tensor(x->ndim, x->shape);
    for (int64_t i = 0; i < x->numel; i++)
        out->data[i] = x->data[i] * sigmoid(x->data[i]);
    tg_record("silu", out, &x, 1, silu_backward);
    return out;
}

/* SiLU as a module (no parameters), so it fits a FeedForward slot. */
static tg_tensor *silu_module_forward(tg_module *m, tg_tensor *x) { return silu(x); }
static const tg_module_type silu_type = {"SiLU", silu_module_forward, NULL};
static tg_module *silu_new(void) { return tg_module_new(sizeof(tg_module), &silu_type); }

/* ---------------------------------------------------------------- 2. a module: RMSNorm
 * RMSNorm(dim, eps): y = x / sqrt(mean(x^2 over the last dim) + eps) * weight,
 * weight (dim) = ones, learnable (torch.nn.RMSNorm(dim, eps), torch >= 2.4).
 * x (..., dim) -> same shape. Built from library ops, so its backward comes
 * with them. */

typedef struct {
    tg_module base;      /* first: the module interface */
    tg_tensor *weight;   /* (dim) */
    float eps;
    int dim;
} rmsnorm;

static tg_tensor *rmsnorm_forward(tg_module *base, tg_tensor *x)
{
    rmsnorm *m = (rmsnorm *)base;
    if (x->ndim < 1 || x->shape[x->ndim - 1] != m->dim) {
        char s[64];
        tg_error("RMSNorm", "expects input (..., %d), got %s", m->dim, tg_shape_str(s, x->ndim, x->shape));
    }
    tg_tensor *ms = tg_mean_dim(tg_mul(x, x), -1, true);            /* (..., 1) */
    tg_tensor *inv = tg_pow_scalar(tg_add_scalar(ms, m->eps), -0.5f); /* 1 / rms */
    return tg_mul(tg_mul(x, inv), m->weight);                       /* (..., dim) */
}

static const tg_module_type rmsnorm_type = {"RMSNorm", rmsnorm_forward, NULL};

static tg_module *rmsnorm_new(int dim, float eps)
{
    rmsnorm *m = tg_module_new(sizeof *m, &rmsnorm_type);
    m->dim = dim;
    m->eps = eps;
    m->weight = tg_module_add_param(&m->base, "weight", tg_ones(TG_SHAPE(dim)));
    return &m->base;
}

/* ---------------------------------------------------------------- 3. gradchecks */

static tg_tensor *silu_fn(tg_tensor **in, void *ctx) { return silu(in[0]); }

/* in[0] = x, in[1] = the module's weight (the module reads its own field) */
static tg_tensor *rmsnorm_fn(tg_tensor **in, void *ctx) { return tg_module_forward(ctx, in[0]); }

static bool gradchecks(void)
{
    tg_generator g;
    tg_manual_seed(&g, 7);
    tg_tensor *x = tg_requires_grad(tg_randn(&g, TG_SHAPE(3, 5)), true);
    tg_gradcheck_result r = tg_gradcheck(silu_fn, NULL, &x, 1, 1e-2, 1e-3, 1e-2);
    printf("gradcheck SiLU: %s (max abs err %.2e)\n", r.ok ? "ok" : "FAILED", r.max_abs_err[0]);
    bool ok = r.ok;

    rmsnorm *norm = (rmsnorm *)rmsnorm_new(5, 1e-5f);
    tg_normal_(norm->weight, 1.0f, 0.5f, &g); /* not all ones: its grad is checked too */
    tg_tensor *in[2] = {x, norm->weight};
    r = tg_gradcheck(rmsnorm_fn, &norm->base, in, 2, 1e-2, 1e-3, 1e-2);
    printf("gradcheck RMSNorm: %s (max abs err: input %.2e, weight %.2e)\n", r.ok ? "ok" : "FAILED",
           r.max_abs_err[0], r.max_abs_err[1]);
    ok = ok && r.ok;

    /* an identity beside it: with weight 1 every row has root mean square 1 */
    tg_tensor *ones = tg_ones(TG_SHAPE(5));
    tg_copy_data(norm->weight, ones);
    tg_tensor *y = tg_module_forward(&norm->base, x);
    double worst = 0;
    for (int row = 0; row < 3; row++) {
        double ss = 0;
        for (int j = 0; j < 5; j++)
            ss += (double)y->data[row * 5 + j] * y->data[row * 5 + j];
        worst = fmax(worst, fabs(sqrt(ss / 5) - 1.0));
    }
    printf("RMSNorm rows have rms 1: %s (max |rms - 1| %.1e)\n", worst < 1e-4 ? "ok" : "FAILED", worst);
    ok = ok && worst < 1e-4;
    tg_tape_reset(NULL);
    tg_free(ones);
    tg_free(x);
    tg_module_free(&norm->base);
    return ok;
}

/* ---------------------------------------------------------------- 4. the swapped GPT */

/* The book's GPTModel, then every LayerNorm -> RMSNorm and every
 * FeedForward's GELU (layers.1) -> SiLU. The swaps come before the
 * optimizer is built (the trainer builds it). */
static tg_gpt *build_model(const tg_gpt_config *cfg, tg_generator *g)
{
    tg_gpt *m = tg_gpt_new(cfg, g);
    char path[64];
    for (int i = 0; i < cfg->n_layers; i++) {
        snprintf(path, sizeof path, "trf_blocks.%d.norm1", i);
        tg_module_replace(&m->base, path, rmsnorm_new(cfg->emb_dim, 1e-5f));
        snprintf(path, sizeof path, "trf_blocks.%d.norm2", i);
        tg_module_replace(&m->base, path, rmsnorm_new(cfg->emb_dim, 1e-5f));
        snprintf(path, sizeof path, "trf_blocks.%d.ff.layers.1", i);
        tg_module_replace(&m->base, path, silu_new());
    }
    tg_module_replace(&m->base, "final_norm", rmsnorm_new(cfg->emb_dim, 1e-5f));
    return m;
}

typedef struct {
    int64_t steps, every;
    const tg_gpt_config *cfg;
} progress;

static void on_step(void *user, tg_trainer *tr, const tg_train_event *e)
{
    const progress *p = user;
    if (e->step % p->every != 0 && e->step != p->steps && !e->evaluated)
        return;
    char val[32] = "";
    if (e->evaluated)
        snprintf(val, sizeof val, " | val loss %.4f", e->val);
    printf("  step %" PRId64 "/%" PRId64 " | batch loss %.4f%s | lr %.2e\n", e->step, p->steps, e->loss, val, e->lr);
    fflush(stdout);
}

/* The checkpoint's metadata: the model's config, so tg_gpt_load checks it. */
static void on_save_meta(void *user, tg_trainer *tr, tg_st_meta *m)
{
    const progress *p = user;
    tg_gpt_config_to_meta(p->cfg, m);
    tg_st_meta_set(m, "model", "GPTModel with RMSNorm and SiLU (examples/custom_layer.c)");
}

typedef struct {
    tg_generator gen;     /* weights, dropout masks and batches: one generator, as examples/train.c */
    tg_gpt *model;
    tg_trainer *tr;
} run;

static void run_start(run *r, const tg_gpt_config *cfg, const tg_trainer_config *tc, tg_text_windows *w,
                      uint64_t seed)
{
    tg_manual_seed(&r->gen, seed);
    r->model = build_model(cfg, &r->gen);
    tg_train_model tm = tg_train_model_gpt(r->model); /* its parameter list is the swapped model's */
    tg_batch_source src = tg_text_windows_source(w);
    r->tr = tg_trainer_new(&tm, &src, &r->gen, tc);
}

static void run_end(run *r)
{
    tg_trainer_free(r->tr);
    tg_gpt_free(r->model);
}

/* ---------------------------------------------------------------- main */

static int usage(const char *why)
{
    fprintf(stderr, "custom_layer: %s\nusage: custom_layer [--steps N (>= 2) [200]] [--data FILE "
                    "[data/the-verdict.txt]] [--save FILE [custom_layer.safetensors]]\n", why);
    return 2;
}

int main(int argc, char **argv)
{
    long steps = 200;
    const char *data = "data/the-verdict.txt", *save = "custom_layer.safetensors";
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            return usage("every flag takes a value");
        if (!strcmp(argv[i], "--steps")) {
            char *end;
            steps = strtol(argv[++i], &end, 10);
            if (*end || steps < 2 || steps > 1000000)
                return usage("--steps needs an integer in [2, 1000000]");
        } else if (!strcmp(argv[i], "--data")) {
            data = argv[++i];
        } else if (!strcmp(argv[i], "--save")) {
            save = argv[++i];
        } else {
            return usage("unknown flag");
        }
    }

    /* 1-3: the op and the module, checked */
    if (!gradchecks())
        return 1;

    /* the data: a char-level tokenizer, 90% train, 10% val */
    char err[512];
    char *text;
    size_t len;
    tg_tokenizer tok;
    if (tg_text_load(data, &text, &len, err, sizeof err) || tg_tokenizer_char_build(&tok, text, len, err, sizeof err)) {
        fprintf(stderr, "custom_layer: %s\n", err);
        return 1;
    }
    int32_t *ids = malloc(len * sizeof *ids);
    int64_t n_ids = 0;
    if (!ids || tg_tokenizer_encode(&tok, text, len, ids, &n_ids, err, sizeof err)) {
        fprintf(stderr, "custom_layer: %s\n", ids ? err : "out of memory");
        return 1;
    }
    free(text);
    const int64_t n_val = n_ids / 10, n_train = n_ids - n_val;
    const tg_gpt_config cfg = {.vocab_size = tok.vocab_size, .context_length = 32, .emb_dim = 32, .n_heads = 2,
                               .n_layers = 2, .drop_rate = 0.1f, .qkv_bias = false};
    tg_text_windows w;
    if (tg_text_windows_init(&w, ids, n_train, ids + n_train, n_val, 8, cfg.context_length, TG_WINDOWS_RANDOM, 16,
                             err, sizeof err)) {
        fprintf(stderr, "custom_layer: %s\n", err);
        return 1;
    }

    const int64_t half = steps / 2;
    progress prog = {.steps = steps, .every = steps / 10 > 0 ? steps / 10 : 1, .cfg = &cfg};
    tg_trainer_config tc = {.optim = tg_adamw_config(3e-3),
                            .sched = {.kind = TG_LR_COSINE, .lr = 3e-3, .min_lr = 3e-4,
                                      .warmup = steps / 10, .decay_iters = steps},
                            .steps = steps, .clip = 1.0, .eval_every = half,
                            .hooks = {.user = &prog, .on_step = on_step, .on_save_meta = on_save_meta}};

    /* 4: the swapped model, trained uninterrupted */
    run a;
    run_start(&a, &cfg, &tc, &w, 123);
    const tg_params *pa = tg_gpt_params(a.model);
    printf("model: the book's GPTModel (%d layers, emb %d, ctx %d, vocab %d), every LayerNorm an RMSNorm and "
           "FeedForward's GELU a SiLU: %" PRId64 " parameters in %d tensors\n", cfg.n_layers, cfg.emb_dim,
           cfg.context_length, cfg.vocab_size, tg_params_numel(pa), pa->n);
    for (int i = 0; i < pa->n; i++)
        if (strstr(pa->items[i].name, "norm"))
            printf("  %s\n", pa->items[i].name);
    printf("run 1: %ld steps on %s, uninterrupted\n", steps, data);
    if (tg_trainer_run(a.tr, steps) != TG_TRAIN_DONE) {
        fprintf(stderr, "custom_layer: the loss diverged at step %" PRId64 "\n", a.tr->step);
        return 1;
    }

    /* 5: the same run stopped halfway with a checkpoint, resumed in a fresh model */
    printf("run 2: %" PRId64 " steps, checkpoint %s, then a fresh model resumes from it\n", half, save);
    run b;
    run_start(&b, &cfg, &tc, &w, 123);
    if (tg_trainer_run(b.tr, half) != TG_TRAIN_DONE || tg_trainer_save(b.tr, save, err, sizeof err)) {
        fprintf(stderr, "custom_layer: %s\n", err);
        return 1;
    }
    run_end(&b);
    run c;
    run_start(&c, &cfg, &tc, &w, 999); /* other weights and generator: the checkpoint restores both */
    tg_st_file *f;
    tg_st_error se;
    if (tg_st_open(save, &f, &se) || tg_gpt_load(c.model, f, true, &se)) {
        fprintf(stderr, "custom_layer: %s\n", se.msg);
        return 1;
    }
    if (tg_trainer_restore(c.tr, f, err, sizeof err)) {
        fprintf(stderr, "custom_layer: %s\n", err);
        return 1;
    }
    tg_st_close(f);
    printf("  resumed at step %" PRId64 "\n", c.tr->step);
    if (tg_trainer_run(c.tr, steps) != TG_TRAIN_DONE) {
        fprintf(stderr, "custom_layer: the resumed loss diverged at step %" PRId64 "\n", c.tr->step);
        return 1;
    }

    /* the resumed run's batch losses, final evaluation and weights equal run 1's */
    bool same = c.tr->first_step == half && c.tr->n_train == steps - half && a.tr->n_train == steps;
    for (int64_t i = 0; same && i < c.tr->n_train; i++)
        same = memcmp(&c.tr->train_loss[i], &a.tr->train_loss[half + i], sizeof(float)) == 0;
    same = same && a.tr->n_val > 0 && c.tr->n_val > 0 &&
           memcmp(&a.tr->val_loss[a.tr->n_val - 1], &c.tr->val_loss[c.tr->n_val - 1], sizeof(float)) == 0;
    const tg_params *pc = tg_gpt_params(c.model);
    same = same && pa->n == pc->n;
    for (int i = 0; same && i < pa->n; i++)
        same = strcmp(pa->items[i].name, pc->items[i].name) == 0 &&
               memcmp(pa->items[i].t->data, pc->items[i].t->data, (size_t)pa->items[i].t->numel * sizeof(float)) == 0;
    printf("resume equals the uninterrupted run: %s (%" PRId64 " batch losses, the final val loss %.4f and %d "
           "parameter tensors compared bit for bit)\n", same ? "yes" : "NO", c.tr->n_train,
           c.tr->n_val ? c.tr->val_loss[c.tr->n_val - 1] : NAN, pa->n);

    run_end(&a);
    run_end(&c);
    tg_text_windows_free(&w);
    tg_tokenizer_free(&tok);
    free(ids);
    tg_tape_release_default();
    return same ? 0 : 1;
}

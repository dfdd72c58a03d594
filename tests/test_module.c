/*
 * tests/test_module.c — the module interface on the book's GPT: swapping
 * parts after construction (torch's model.trf_blocks[0].norm1 = RMSNorm(d)).
 *
 * Two test modules of the test's own (outside the library, on the public
 * header only) replace block 0's norm1 and block 1's FeedForward activation.
 * The parameter names and order, full names on the tensors, train/eval,
 * forward, free, the optimizer's guard and a checkpoint round trip are
 * checked against what the swap must give. make valgrind / make asan check
 * that the replaced modules and the new ones are freed exactly once.
 */
#include "testutil.h"

#include "nn/nn.h"
#include "optim/trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------- test modules */

static int norm_forwards, norm_frees, act_forwards, act_frees;
static bool norm_saw_training, act_saw_training;

/* TestNorm(d): y = x * weight, weight (d) = ones; one parameter "weight". */
typedef struct {
    tg_module base;
    tg_tensor *weight;
} test_norm;

static tg_tensor *test_norm_forward(tg_module *base, tg_tensor *x)
{
    test_norm *m = (test_norm *)base;
    norm_forwards++;
    norm_saw_training = base->training;
    return tg_mul(x, m->weight);
}

static void test_norm_release(tg_module *base) { norm_frees++; }

static const tg_module_type test_norm_type = {"TestNorm", test_norm_forward, test_norm_release};

static tg_module *test_norm_new(int d)
{
    test_norm *m = tg_module_new(sizeof *m, &test_norm_type);
    m->weight = tg_module_add_param(&m->base, "weight", tg_ones(TG_SHAPE(d)));
    return &m->base;
}

/* TestAct: tanh, no parameters. */
static tg_tensor *test_act_forward(tg_module *base, tg_tensor *x)
{
    act_forwards++;
    act_saw_training = base->training;
    return tg_tanh(x);
}

static void test_act_release(tg_module *base) { act_frees++; }

static const tg_module_type test_act_type = {"TestAct", test_act_forward, test_act_release};

static tg_module *test_act_new(void) { return tg_module_new(sizeof(tg_module), &test_act_type); }

/* ---------------------------------------------------------------- the GPT with swapped parts */

static const tg_gpt_config CFG = {.vocab_size = 11, .context_length = 6, .emb_dim = 8, .n_heads = 2,
                                  .n_layers = 2, .drop_rate = 0.1f, .qkv_bias = false};

/* The state_dict names after the swaps, in torch's order: block 0's norm1 is
 * TestNorm (weight), block 1's FeedForward has no parameter at layers.1
 * either way. */
static const char *const SWAPPED_NAMES[] = {
    "tok_emb.weight", "pos_emb.weight",
    "trf_blocks.0.att.W_query.weight", "trf_blocks.0.att.W_key.weight", "trf_blocks.0.att.W_value.weight",
    "trf_blocks.0.att.out_proj.weight", "trf_blocks.0.att.out_proj.bias",
    "trf_blocks.0.ff.layers.0.weight", "trf_blocks.0.ff.layers.0.bias",
    "trf_blocks.0.ff.layers.2.weight", "trf_blocks.0.ff.layers.2.bias",
    "trf_blocks.0.norm1.weight",
    "trf_blocks.0.norm2.scale", "trf_blocks.0.norm2.shift",
    "trf_blocks.1.att.W_query.weight", "trf_blocks.1.att.W_key.weight", "trf_blocks.1.att.W_value.weight",
    "trf_blocks.1.att.out_proj.weight", "trf_blocks.1.att.out_proj.bias",
    "trf_blocks.1.ff.layers.0.weight", "trf_blocks.1.ff.layers.0.bias",
    "trf_blocks.1.ff.layers.2.weight", "trf_blocks.1.ff.layers.2.bias",
    "trf_blocks.1.norm1.scale", "trf_blocks.1.norm1.shift",
    "trf_blocks.1.norm2.scale", "trf_blocks.1.norm2.shift",
    "final_norm.scale", "final_norm.shift", "out_head.weight",
};
#define N_SWAPPED ((int)(sizeof SWAPPED_NAMES / sizeof *SWAPPED_NAMES))

static tg_gpt *swapped_gpt(uint64_t seed, tg_generator *g)
{
    tg_manual_seed(g, seed);
    tg_gpt *m = tg_gpt_new(&CFG, g);
    tg_module_replace(&m->base, "trf_blocks.0.norm1", test_norm_new(CFG.emb_dim));
    tg_module_replace(&m->base, "trf_blocks.1.ff.layers.1", test_act_new());
    return m;
}

static const int32_t IDS[2 * 5] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

START_TEST(test_swap_names_order_and_slots)
{
    tg_generator g;
    tg_manual_seed(&g, 3);
    tg_gpt *m = tg_gpt_new(&CFG, &g);
    const tg_params *p = tg_gpt_params(m);       /* taken before the swap: updated in place */
    const uint64_t gen0 = tg_module_generation(&m->base);
    tg_tensor *kept = tg_params_find(p, "trf_blocks.0.att.W_query.weight");
    norm_frees = act_frees = 0;

    tg_module *norm = test_norm_new(CFG.emb_dim);
    tg_module_replace(&m->base, "trf_blocks.0.norm1", norm);
    tg_module *act = test_act_new();
    tg_module_replace(tg_gpt_block_at(m, 1)->ff, "layers.1", act); /* relative to the FeedForward */

    /* the slots now hold the new modules, named and attached where the old ones were */
    ck_assert_ptr_eq(tg_gpt_block_at(m, 0)->norm1, norm);
    ck_assert_ptr_eq(tg_module_get(&m->base, "trf_blocks.1.ff.layers.1"), act);
    ck_assert_str_eq(norm->path, "trf_blocks.0.norm1");
    ck_assert_str_eq(act->path, "trf_blocks.1.ff.layers.1");
    ck_assert_ptr_eq(norm->parent, &tg_gpt_block_at(m, 0)->base);
    ck_assert(tg_module_as(tg_gpt_block_at(m, 1)->norm1, &tg_layernorm_type)); /* the other block is untouched */
    ck_assert(tg_module_generation(&m->base) > gen0);

    /* parameter names and order: the new parameter takes the old ones' place */
    ck_assert_int_eq(p->n, N_SWAPPED);
    for (int i = 0; i < N_SWAPPED; i++) {
        ck_assert_str_eq(p->items[i].name, SWAPPED_NAMES[i]);
        ck_assert_str_eq(p->items[i].t->name, SWAPPED_NAMES[i]); /* full names on the tensors too */
    }
    ck_assert_ptr_eq(tg_params_find(p, "trf_blocks.0.norm1.weight"), ((test_norm *)norm)->weight);
    ck_assert_ptr_eq(tg_params_find(p, "trf_blocks.0.att.W_query.weight"), kept); /* the rest is kept */
    ck_assert_ptr_null(tg_params_find(p, "trf_blocks.0.norm1.scale"));

    /* the forward runs through the new modules, in their tape scopes */
    tg_tensor *logits = tg_gpt_forward(m, IDS, 2, 5);
    ck_assert_int_eq(logits->shape[2], CFG.vocab_size);
    ck_assert_int_eq(norm_forwards, 1);
    ck_assert_int_eq(act_forwards, 1);
    const tg_tape *tape = tg_tape_current();
    bool norm_scoped = false, act_scoped = false;
    for (int i = 0; i < tape->n_nodes; i++) {
        norm_scoped |= strcmp(tape->nodes[i].op, "tg_mul") == 0 && strcmp(tape->nodes[i].path, "trf_blocks.0.norm1") == 0;
        act_scoped |= strcmp(tape->nodes[i].op, "tg_tanh") == 0 &&
                      strcmp(tape->nodes[i].path, "trf_blocks.1.ff.layers.1") == 0;
    }
    ck_assert(norm_scoped && act_scoped);
    tg_tape_reset(NULL);

    /* train/eval reach the new modules */
    ck_assert(norm->training && act->training && norm_saw_training && act_saw_training);
    tg_gpt_train(m, false);
    ck_assert(!norm->training && !act->training);
    tg_gpt_forward(m, IDS, 2, 5);
    ck_assert(!norm_saw_training && !act_saw_training);
    tg_tape_reset(NULL);
    /* a module swapped into an eval-mode model starts in eval mode (its parent's) */
    tg_module *act2 = test_act_new();
    tg_module_replace(&m->base, "trf_blocks.0.ff.layers.1", act2);
    ck_assert(!act2->training);
    tg_gpt_train(m, true);
    ck_assert(norm->training && act->training && act2->training);

    /* a swap frees the old module: replacing a test module counts its free */
    ck_assert_int_eq(act_frees, 0);
    tg_module_replace(&m->base, "trf_blocks.0.ff.layers.1", &tg_gelu_mod_new()->base);
    ck_assert_int_eq(act_frees, 1);

    /* free reaches the new modules */
    tg_gpt_free(m);
    ck_assert_int_eq(norm_frees, 1);
    ck_assert_int_eq(act_frees, 2);
    tg_tape_release_default();
}
END_TEST

/* An optimizer built before a swap refuses to step; one built after works. */
static void step_stale(void *o) { tg_optim_step(o); }

START_TEST(test_swap_after_optimizer_is_an_error)
{
    tg_generator g;
    tg_manual_seed(&g, 4);
    tg_gpt *m = tg_gpt_new(&CFG, &g);
    tg_optim_config oc = tg_adamw_config(1e-3);
    tg_optim *before = tg_optim_new(tg_gpt_params(m), &oc);
    tg_module_replace(&m->base, "final_norm", test_norm_new(CFG.emb_dim));
    char msg[512];
    ck_assert(catch_error(step_stale, before, msg, sizeof msg));
    ck_assert_msg(strstr(msg, "tg_optim_step") && strstr(msg, "changed after this optimizer was built") &&
                      strstr(msg, "GPTModel"),
                  "%s", msg);
    /* its state no longer fits the model: a checkpoint of it (the trainer's save checks the state first) would
     * name final_norm.scale beside the model's final_norm.weight and never resume */
    ck_assert(!tg_optim_state_check(before, msg, sizeof msg));
    ck_assert_msg(strstr(msg, "changed after this optimizer was built") && strstr(msg, "GPTModel"), "%s", msg);
    tg_optim_free(before);

    tg_optim *after = tg_optim_new(tg_gpt_params(m), &oc);
    ck_assert_int_eq(tg_optim_num_params(after), tg_gpt_params(m)->n);
    tg_tensor *logits = tg_gpt_forward(m, IDS, 2, 5);
    tg_backward(tg_cross_entropy(logits, IDS), NULL);
    tg_tensor *w = tg_params_find(tg_gpt_params(m), "final_norm.weight");
    const float w0 = w->data[0];
    ck_assert(w->grad != NULL);
    tg_optim_step(after); /* the new parameter trains */
    ck_assert(w->data[0] != w0);
    tg_optim_zero_grad(after);
    tg_tape_reset(NULL);
    tg_optim_free(after);
    tg_gpt_free(m);
    tg_tape_release_default();
}
END_TEST

/* A small GPT trained through the library trainer for one step and saved: the fixture of the trainer's
 * save and restore tests (each takes its own seed and token stride). */
typedef struct {
    char dir[128], path[256];
    tg_generator g;
    tg_gpt *m;
    int32_t tok[40];
    tg_text_windows w;
    tg_batch_source src;
    tg_train_model tm;
    tg_trainer *tr;
} trained_run;

static void trained_run_setup(trained_run *r, uint64_t seed, int stride, int64_t steps)
{
    tmpdir_create(r->dir, sizeof r->dir, "tg_module_");
    snprintf(r->path, sizeof r->path, "%s/run.safetensors", r->dir);
    tg_manual_seed(&r->g, seed);
    r->m = tg_gpt_new(&CFG, &r->g);
    for (int i = 0; i < 40; i++)
        r->tok[i] = (i * stride) % CFG.vocab_size;
    char err[512];
    ck_assert_msg(tg_text_windows_init(&r->w, r->tok, 40, NULL, 0, 2, CFG.context_length, TG_WINDOWS_RANDOM, 2, err,
                                       sizeof err) == 0, "%s", err);
    r->src = tg_text_windows_source(&r->w);
    r->tm = tg_train_model_gpt(r->m);
    tg_trainer_config tc = {.optim = tg_adamw_config(1e-3), .sched = {.kind = TG_LR_CONST, .lr = 1e-3}, .steps = steps};
    r->tr = tg_trainer_new(&r->tm, &r->src, &r->g, &tc);
    ck_assert_int_eq(tg_trainer_run(r->tr, 1), TG_TRAIN_DONE);
    ck_assert_msg(tg_trainer_save(r->tr, r->path, err, sizeof err) == 0, "%s", err);
}

static void trained_run_free(trained_run *r)
{
    tg_trainer_free(r->tr);
    tg_text_windows_free(&r->w);
    tg_gpt_free(r->m);
    tmpdir_remove(r->dir);
    tg_tape_release_default();
}

/* A trainer whose model had a part swapped after it was built writes no checkpoint (its optimizer state names
 * the old parameters) and the file on disk stays as it was. */
START_TEST(test_swap_after_trainer_save_refused)
{
    trained_run r;
    trained_run_setup(&r, 9, 7, 2);
    tg_gpt *m = r.m;
    tg_trainer *tr = r.tr;
    const char *path = r.path;
    char err[512];
    size_t n0;
    char *before = read_whole_file(path, &n0);
    tg_module_replace(&m->base, "trf_blocks.0.norm1", test_norm_new(CFG.emb_dim));
    ck_assert_int_eq(tg_trainer_save(tr, path, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "changed after this optimizer was built"), "%s", err);
    assert_file_holds(path, before, n0, "a refused save changed the checkpoint");
    free(before);
    trained_run_free(&r);
}
END_TEST

/* The trainer's save writes nothing that is not finite: a NaN in a weight or in an optimizer moment is refused,
 * naming it, and the good checkpoint on disk stays byte for byte (a diverged run keeps its last one). */
START_TEST(test_trainer_save_refuses_nonfinite)
{
    trained_run r;
    trained_run_setup(&r, 10, 5, 2);
    tg_gpt *m = r.m;
    tg_trainer *tr = r.tr;
    const char *path = r.path;
    char err[512];
    size_t n0;
    char *good = read_whole_file(path, &n0);

    tg_tensor *wq = tg_params_find(tg_gpt_params(m), "trf_blocks.1.att.W_query.weight");
    const float keep = wq->data[3];
    wq->data[3] = NAN;
    ck_assert_int_eq(tg_trainer_save(tr, path, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "not saving") && strstr(err, "trf_blocks.1.att.W_query.weight") &&
                      strstr(err, "element 3"), "%s", err);
    wq->data[3] = keep;

    const tg_optim_state *st = tg_optim_state_find(tr->opt, "optim.exp_avg_sq.final_norm.shift");
    ck_assert_ptr_nonnull(st);
    const float keep_sq = st->data[0];
    st->data[0] = INFINITY;
    ck_assert_int_eq(tg_trainer_save(tr, path, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "not saving") && strstr(err, "optim.exp_avg_sq.final_norm.shift"), "%s", err);
    st->data[0] = keep_sq;

    assert_file_holds(path, good, n0, "a refused save changed the checkpoint");
    ck_assert_msg(tg_trainer_save(tr, path, err, sizeof err) == 0, "%s", err); /* finite again: saved */
    assert_file_holds(path, good, n0, "the state saved again differs from the first save");
    free(good);
    trained_run_free(&r);
}
END_TEST

/* A checkpoint that fails the restore's final check (a negative second moment: finite, so every read
 * succeeds) leaves the optimizer's state and the step exactly as they were: nothing changes before
 * everything is checked (optim/trainer.h). */
START_TEST(test_trainer_restore_failure_changes_nothing)
{
    trained_run r;
    trained_run_setup(&r, 11, 7, 3);
    tg_trainer *tr = r.tr;
    const char *path = r.path;
    char err[512];
    ck_assert_int_eq(tg_trainer_run(tr, 2), TG_TRAIN_DONE); /* the live state now differs from the file's */

    /* The file's last second moment made negative, in place (8-byte header length, JSON, data). */
    tg_st_file *f;
    tg_st_error se;
    ck_assert_int_eq(tg_st_open(path, &f, &se), 0);
    const tg_st_entry *bad = NULL;
    for (int i = 0; i < tg_st_count(f); i++)
        if (strncmp(tg_st_entry_at(f, i)->name, "optim.exp_avg_sq.", 17) == 0)
            bad = tg_st_entry_at(f, i);
    ck_assert_ptr_nonnull(bad);
    size_t n;
    unsigned char *bytes = (unsigned char *)read_whole_file(path, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | bytes[i];
    const float neg = -1.0f;
    memcpy(bytes + 8 + hl + bad->begin, &neg, sizeof neg);
    tg_st_close(f);
    FILE *out = fopen(path, "wb");
    ck_assert(out && fwrite(bytes, 1, n, out) == n && fclose(out) == 0);
    free(bytes);

    int ns = tg_optim_state_count(tr->opt);
    int64_t total = 0;
    for (int i = 0; i < ns; i++)
        total += tg_optim_state_get(tr->opt, i)->numel;
    float *before = malloc((size_t)total * sizeof(float));
    for (int i = 0, at = 0; i < ns; at += (int)tg_optim_state_get(tr->opt, i)->numel, i++)
        memcpy(before + at, tg_optim_state_get(tr->opt, i)->data, (size_t)tg_optim_state_get(tr->opt, i)->numel * 4);
    const int64_t step = tr->step;

    ck_assert_int_eq(tg_st_open(path, &f, &se), 0);
    ck_assert_int_eq(tg_trainer_restore(tr, f, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "invalid optimizer state"), "%s", err);
    tg_st_close(f);
    ck_assert_int_eq(tr->step, step);
    for (int i = 0, at = 0; i < ns; at += (int)tg_optim_state_get(tr->opt, i)->numel, i++)
        ck_assert_msg(memcmp(before + at, tg_optim_state_get(tr->opt, i)->data,
                             (size_t)tg_optim_state_get(tr->opt, i)->numel * 4) == 0,
                      "optimizer state '%s' changed by a restore that failed", tg_optim_state_get(tr->opt, i)->name);
    free(before);
    trained_run_free(&r);
}
END_TEST

/* Misuse of slots: one clear error each. */
typedef struct {
    int which;
    tg_gpt *m;
    tg_module *spare_emb; /* an Embedding: no single-input forward */
} slot_ctx;

static void slot_misuse(void *vctx)
{
    slot_ctx *c = vctx;
    switch (c->which) {
    case 0: tg_module_replace(&c->m->base, "trf_blocks.0.norm1", c->spare_emb); break;
    case 1: tg_module_replace(&c->m->base, "tok_emb", c->spare_emb); break;
    case 2: tg_module_replace(&c->m->base, "trf_blocks.0.norm3", c->spare_emb); break;
    case 3: tg_module_replace(&c->m->base, "trf_blocks.0.norm1", &tg_gpt_block_at(c->m, 1)->base); break;
    case 4: tg_module_forward(c->spare_emb, NULL); break;
    }
}

START_TEST(test_slot_misuse)
{
    const char *want[] = {
        "tg_module_replace: slot \"trf_blocks.0.norm1\" needs a module with a single-input forward; Embedding (a root) has none",
        "tg_module_replace: \"tok_emb\" (Embedding 'tok_emb') is a fixed child of GPTModel (a root), not a slot",
        "tg_module_replace: GPTModel (a root) has no child at \"trf_blocks.0.norm3\"",
        "tg_module_replace: TransformerBlock 'trf_blocks.1' already has a parent",
        "tg_module_forward: Embedding (a root) has no single-input forward",
    };
    tg_generator g;
    tg_manual_seed(&g, 5);
    slot_ctx c = {0, tg_gpt_new(&CFG, &g), &tg_embedding_mod_new(3, 8, &g)->base};
    for (int i = 0; i < (int)(sizeof want / sizeof *want); i++) {
        char msg[512];
        c.which = i;
        ck_assert_msg(catch_error(slot_misuse, &c, msg, sizeof msg), "case %d raised nothing", i);
        ck_assert_msg(strstr(msg, want[i]), "case %d: '%s' lacks '%s'", i, msg, want[i]);
    }
    /* nothing changed: a block's norm1 is still the LayerNorm */
    ck_assert(tg_module_as(tg_gpt_block_at(c.m, 0)->norm1, &tg_layernorm_type));
    tg_module_free(c.spare_emb);
    tg_gpt_free(c.m);
}
END_TEST

/* A checkpoint saved with the swapped modules loads back into a model with
 * the same swaps, and only into such a model. */
START_TEST(test_swapped_checkpoint_round_trip)
{
    char dir[128], path[256];
    tmpdir_create(dir, sizeof dir, "tg_module_");
    snprintf(path, sizeof path, "%s/swapped.safetensors", dir);
    tg_generator g;
    tg_gpt *a = swapped_gpt(6, &g);
    tg_normal_(tg_params_find(tg_gpt_params(a), "trf_blocks.0.norm1.weight"), 0.0f, 1.0f, &g); /* not all ones */
    tg_st_meta meta;
    tg_st_meta_init(&meta);
    tg_gpt_config_to_meta(&a->cfg, &meta);
    tg_st_error err;
    ck_assert_msg(tg_st_save(path, tg_gpt_params(a), &meta, &err) == 0, "%s", err.msg);
    tg_st_meta_free(&meta);

    tg_st_file *f;
    ck_assert_msg(tg_st_open(path, &f, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(tg_st_count(f), N_SWAPPED);
    /* into the same swaps, other weights: every tensor comes back */
    tg_gpt *b = swapped_gpt(7, &g);
    ck_assert_msg(tg_gpt_load(b, f, false, &err) == 0, "%s", err.msg);
    const tg_params *pa = tg_gpt_params(a), *pb = tg_gpt_params(b);
    ck_assert_int_eq(pa->n, pb->n);
    for (int i = 0; i < pa->n; i++) {
        ck_assert_str_eq(pa->items[i].name, pb->items[i].name);
        ck_assert_int_eq(memcmp(pa->items[i].t->data, pb->items[i].t->data, (size_t)pa->items[i].t->numel * 4), 0);
    }
    /* and the loaded model computes what the saved one does */
    tg_gpt_train(a, false);
    tg_gpt_train(b, false);
    tg_tensor *la = tg_copy(tg_gpt_forward(a, IDS, 2, 5));
    tg_tensor *lb = tg_gpt_forward(b, IDS, 2, 5);
    ck_assert_int_eq(memcmp(la->data, lb->data, (size_t)la->numel * 4), 0);
    tg_tape_reset(NULL);
    tg_free(la);
    /* an unswapped model misses trf_blocks.0.norm1.scale: refused, unchanged */
    tg_manual_seed(&g, 8);
    tg_gpt *plain = tg_gpt_new(&CFG, &g);
    const float before = tg_gpt_params(plain)->items[0].t->data[0];
    ck_assert_int_eq(tg_gpt_load(plain, f, false, &err), TG_ST_EMISSING);
    ck_assert_msg(strstr(err.msg, "trf_blocks.0.norm1.scale"), "%s", err.msg);
    ck_assert(tg_gpt_params(plain)->items[0].t->data[0] == before);
    tg_st_close(f);
    tg_gpt_free(plain);
    tg_gpt_free(a);
    tg_gpt_free(b);
    tmpdir_remove(dir);
    tg_tape_release_default();
}
END_TEST

/* Containers and nesting: a ModuleList takes modules without a forward (and
 * swaps them), a Sequential refuses them; a whole GPT inside a model of the
 * user's gets its names and tape scopes under its attribute name. */
static const tg_module_type wrapper_type = {"Wrapper", NULL, NULL};

static void append_to_sequential(void *ctx)
{
    tg_module **pair = ctx; /* {sequential, module} */
    tg_module_append(pair[0], pair[1]);
}

START_TEST(test_containers_and_nesting)
{
    tg_generator g;
    tg_manual_seed(&g, 9);
    tg_module *list = tg_module_list_new();
    tg_module_append(list, &tg_embedding_mod_new(4, 3, &g)->base);
    tg_module_append(list, &tg_linear_new(3, 2, true, &g)->base);
    tg_module_replace(list, "0", &tg_embedding_mod_new(5, 3, &g)->base); /* no forward needed here */
    const tg_params *p = tg_module_params(list);
    ck_assert_int_eq(p->n, 3);
    ck_assert_str_eq(p->items[0].name, "0.weight");
    ck_assert_int_eq(p->items[0].t->shape[0], 5);
    ck_assert_str_eq(p->items[2].name, "1.bias");

    tg_module *emb = &tg_embedding_mod_new(4, 3, &g)->base, *seq = tg_sequential_new();
    tg_module *pair[2] = {seq, emb};
    char msg[512];
    ck_assert(catch_error(append_to_sequential, pair, msg, sizeof msg));
    ck_assert_msg(strstr(msg, "tg_module_append: slot \"0\" needs a module with a single-input forward; "
                              "Embedding (a root) has none"), "%s", msg);
    ck_assert_int_eq(seq->n_children, 0);
    tg_module_free(seq);
    tg_module_free(emb);
    tg_module_free(list);

    tg_module *outer = tg_module_new(sizeof(tg_module), &wrapper_type);
    tg_gpt *m = tg_gpt_new(&CFG, &g);
    tg_module_add_child(outer, "gpt", &m->base);
    ck_assert_str_eq(tg_module_params(outer)->items[0].name, "gpt.tok_emb.weight");
    ck_assert_str_eq(tg_gpt_params(m)->items[0].name, "tok_emb.weight"); /* relative to the GPT */
    ck_assert_str_eq(tg_gpt_params(m)->items[0].t->name, "gpt.tok_emb.weight");
    tg_tape_reset(NULL);
    tg_gpt_forward(m, IDS, 2, 5);
    const tg_tape *tape = tg_tape_current();
    bool emb_scoped = false, att_scoped = false, top_level = false;
    for (int i = 0; i < tape->n_nodes; i++) {
        emb_scoped |= strcmp(tape->nodes[i].path, "gpt.tok_emb") == 0;
        att_scoped |= strcmp(tape->nodes[i].path, "gpt.trf_blocks.1.att") == 0;
        top_level |= strcmp(tape->nodes[i].path, "") == 0;
    }
    ck_assert(emb_scoped && att_scoped && !top_level);
    ck_assert_str_eq(tg_scope_path_current(), ""); /* every scope entered was left */
    tg_tape_reset(NULL);
    tg_module_free(outer);
    tg_tape_release_default();
}
END_TEST

static Suite *module_suite(void)
{
    Suite *s = suite_create("module");
    TCase *tc = tcase_create("swap");
    tcase_add_test(tc, test_swap_names_order_and_slots);
    tcase_add_test(tc, test_swap_after_optimizer_is_an_error);
    tcase_add_test(tc, test_swap_after_trainer_save_refused);
    tcase_add_test(tc, test_trainer_save_refuses_nonfinite);
    tcase_add_test(tc, test_trainer_restore_failure_changes_nothing);
    tcase_add_test(tc, test_slot_misuse);
    tcase_add_test(tc, test_swapped_checkpoint_round_trip);
    tcase_add_test(tc, test_containers_and_nesting);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(module_suite()) ? 1 : 0; }

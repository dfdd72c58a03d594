/*
 * tests/test_gpt.c — the book's GPTModel against PyTorch (tests/golden/gen_gpt.py).
 *
 * Same seed, same weights (construction order), the state_dict names, the
 * logits, the loss and parameter grads, greedy generation; plus the train
 * switch reaching every dropout, and config validation.
 */
#include "testutil.h"

#include "nn/nn.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *key;
    tg_gpt_config cfg;
} gpt_case;

/* mirrors CASES in gen_gpt.py */
static const gpt_case CASES[] = {
    {"a", {.vocab_size = 11, .context_length = 6, .emb_dim = 8, .n_heads = 2, .n_layers = 2, .drop_rate = 0.1f,
           .qkv_bias = false}},
    {"b", {.vocab_size = 7, .context_length = 5, .emb_dim = 12, .n_heads = 3, .n_layers = 1, .drop_rate = 0.0f,
           .qkv_bias = true}},
};
static const char *const INIT[] = {"tok_emb.weight", "pos_emb.weight", "trf_blocks.0.att.W_query.weight",
                                   "trf_blocks.0.att.out_proj.bias", "trf_blocks.0.ff.layers.2.weight",
                                   "out_head.weight"};
static const char *const GRAD[] = {"tok_emb.weight", "pos_emb.weight", "trf_blocks.0.att.W_key.weight",
                                   "trf_blocks.0.norm1.scale", "trf_blocks.0.ff.layers.0.bias", "final_norm.shift",
                                   "out_head.weight"};

/* The book's state_dict names, in named_parameters() order. */
START_TEST(test_param_names)
{
    tg_gpt_config cfg = CASES[1].cfg; /* qkv_bias on */
    cfg.n_layers = 2;
    tg_gpt *m = tg_gpt_new(&cfg, NULL);
    const char *want[] = {"tok_emb.weight", "pos_emb.weight"};
    const char *block[] = {"att.W_query.weight", "att.W_query.bias", "att.W_key.weight",     "att.W_key.bias",
                           "att.W_value.weight", "att.W_value.bias", "att.out_proj.weight",  "att.out_proj.bias",
                           "ff.layers.0.weight", "ff.layers.0.bias", "ff.layers.2.weight",   "ff.layers.2.bias",
                           "norm1.scale",        "norm1.shift",      "norm2.scale",          "norm2.shift"};
    ck_assert_int_eq(tg_gpt_params(m)->n, 2 + 2 * 16 + 3);
    for (int i = 0; i < 2; i++)
        ck_assert_str_eq(tg_gpt_params(m)->items[i].name, want[i]);
    for (int l = 0; l < 2; l++)
        for (int j = 0; j < 16; j++) {
            char name[96];
            snprintf(name, sizeof name, "trf_blocks.%d.%s", l, block[j]);
            ck_assert_str_eq(tg_gpt_params(m)->items[2 + 16 * l + j].name, name);
        }
    ck_assert_str_eq(tg_gpt_params(m)->items[34].name, "final_norm.scale");
    ck_assert_str_eq(tg_gpt_params(m)->items[35].name, "final_norm.shift");
    ck_assert_str_eq(tg_gpt_params(m)->items[36].name, "out_head.weight");
    /* out_head has no bias; W_query is (out, in) */
    ck_assert_ptr_null(m->out_head->bias);
    ck_assert_int_eq(tg_params_find(tg_gpt_params(m), "trf_blocks.1.att.W_query.weight")->shape[0], 12);
    tg_gpt_free(m);
}
END_TEST

START_TEST(test_matches_torch)
{
    const gpt_case *c = &CASES[_i];
    golden_file *gf = golden_open("gpt");
    tg_generator g;
    tg_manual_seed(&g, 123);
    tg_gpt *m = tg_gpt_new(&c->cfg, &g);
    tg_gpt_train(m, false);

    /* same seed, same weights */
    for (size_t i = 0; i < sizeof INIT / sizeof *INIT; i++) {
        tg_tensor *want = golden_tensorf(gf, "%s.init.%s", c->key, INIT[i]);
        assert_tensor_close(tg_params_find(tg_gpt_params(m), INIT[i]), want, 0.0, 0.0, INIT[i]); /* bit-exact */
        tg_free(want);
    }
    if (c->cfg.qkv_bias) {
        tg_tensor *want = golden_tensorf(gf, "%s.init.trf_blocks.0.att.W_value.bias", c->key);
        assert_tensor_close(tg_params_find(tg_gpt_params(m), "trf_blocks.0.att.W_value.bias"), want, 0.0, 0.0,
                            "W_value.bias");
        tg_free(want);
    }
    tg_tensor *numel = golden_tensorf(gf, "%s.numel", c->key);
    ck_assert_int_eq(numel->numel, tg_gpt_params(m)->n);
    for (int i = 0; i < tg_gpt_params(m)->n; i++)
        ck_assert_int_eq(tg_gpt_params(m)->items[i].t->numel, (int64_t)numel->data[i]);
    tg_free(numel);

    /* forward, loss, backward */
    char key[64];
    int64_t n;
    snprintf(key, sizeof key, "%s.ids", c->key);
    int32_t *ids = golden_ints(gf, key, &n);
    snprintf(key, sizeof key, "%s.tgt", c->key);
    int32_t *tgt = golden_ints(gf, key, &n);
    const int T = c->cfg.context_length - 1;
    tg_tensor *logits = tg_gpt_forward(m, ids, 2, T);
    ck_assert_int_eq(logits->ndim, 3);
    ck_assert_int_eq(logits->shape[2], c->cfg.vocab_size);
    tg_tensor *want = golden_tensorf(gf, "%s.logits", c->key);
    assert_tensor_close(logits, want, 1e-5, 1e-5, "logits");
    tg_free(want);
    tg_tensor *loss = tg_cross_entropy(logits, tgt);
    want = golden_tensorf(gf, "%s.loss", c->key);
    assert_tensor_close(loss, want, 1e-6, 1e-6, "loss");
    tg_free(want);
    tg_backward(loss, NULL);
    for (size_t i = 0; i < sizeof GRAD / sizeof *GRAD; i++) {
        tg_tensor *p = tg_params_find(tg_gpt_params(m), GRAD[i]);
        ck_assert_ptr_nonnull(p->grad);
        want = golden_tensorf(gf, "%s.grad.%s", c->key, GRAD[i]);
        assert_close(p->grad, want, 1e-6, 1e-4, GRAD[i]);
        tg_free(want);
    }
    tg_tape_reset(NULL);

    /* greedy generation (the book's generate_text_simple) */
    want = golden_tensorf(gf, "%s.greedy", c->key);
    int32_t gen[16];
    memcpy(gen, ids, 3 * sizeof *gen);
    tg_gpt_generate(m, gen, 3, 6, 0.0f, 0, NULL, NULL, NULL);
    for (int i = 0; i < 9; i++)
        ck_assert_int_eq(gen[i], (int32_t)want->data[i]);
    tg_free(want);
    ck_assert(!m->base.training); /* mode kept */

    free(ids);
    free(tgt);
    tg_gpt_free(m);
    golden_close(gf);
    tg_tape_release_default();
}
END_TEST

/* Dropout acts in train mode only; eval is deterministic and draws nothing. */
START_TEST(test_train_switch)
{
    tg_gpt_config cfg = CASES[0].cfg;
    cfg.drop_rate = 0.5f;
    tg_generator g;
    tg_manual_seed(&g, 1);
    tg_gpt *m = tg_gpt_new(&cfg, &g);
    int32_t ids[5] = {1, 2, 3, 4, 5};
    tg_gpt_train(m, false);
    ck_assert(!tg_gpt_block_at(m, 1)->att->training);
    ck_assert(!tg_gpt_block_at(m, 1)->drop_resid->base.training);
    ck_assert(!m->drop_emb->base.training);
    tg_generator before = g;
    tg_tensor *a = tg_copy(tg_gpt_forward(m, ids, 1, 5));
    tg_tensor *b = tg_gpt_forward(m, ids, 1, 5);
    ck_assert_int_eq(memcmp(a->data, b->data, (size_t)a->numel * 4), 0);
    ck_assert_int_eq(memcmp(&before.state, &g.state, sizeof g.state), 0);
    ck_assert_int_eq(before.index, g.index);
    tg_tape_reset(NULL);
    tg_gpt_train(m, true);
    ck_assert(((tg_mha *)tg_gpt_block_at(m, 0)->att)->dropout->base.training);
    tg_tensor *c = tg_gpt_forward(m, ids, 1, 5);
    ck_assert_int_ne(memcmp(a->data, c->data, (size_t)a->numel * 4), 0);
    ck_assert_int_ne(before.index, g.index);
    tg_tape_reset(NULL);
    tg_free(a);
    tg_gpt_free(m);
    tg_tape_release_default();
}
END_TEST

/* Sampling: temperature > 0 draws from the generator (reproducible per seed),
 * top-k 1 equals greedy. */
START_TEST(test_sampling)
{
    tg_gpt_config cfg = CASES[0].cfg;
    tg_generator g;
    tg_manual_seed(&g, 123);
    tg_gpt *m = tg_gpt_new(&cfg, &g);
    int32_t greedy[12] = {1, 2}, top1[12] = {1, 2}, s1[12] = {1, 2}, s2[12] = {1, 2};
    tg_gpt_generate(m, greedy, 2, 10, 0.0f, 0, NULL, NULL, NULL); /* longer than the context: it slides */
    tg_manual_seed(&g, 5);
    tg_gpt_generate(m, top1, 2, 10, 1.0f, 1, &g, NULL, NULL);
    ck_assert_int_eq(memcmp(greedy, top1, sizeof greedy), 0);
    tg_manual_seed(&g, 9);
    tg_gpt_generate(m, s1, 2, 10, 2.0f, 0, &g, NULL, NULL);
    tg_manual_seed(&g, 9);
    tg_gpt_generate(m, s2, 2, 10, 2.0f, 0, &g, NULL, NULL);
    ck_assert_int_eq(memcmp(s1, s2, sizeof s1), 0);
    for (int i = 0; i < 12; i++)
        ck_assert(s1[i] >= 0 && s1[i] < cfg.vocab_size);
    ck_assert(m->base.training); /* a new model trains; generate restored that */
    tg_gpt_free(m);
    tg_tape_release_default();
}
END_TEST

START_TEST(test_config_check)
{
    char why[256];
    tg_gpt_config c = CASES[0].cfg;
    ck_assert_int_eq(tg_gpt_config_check(&c, why, sizeof why), 0);
    c.n_heads = 3;
    ck_assert_int_eq(tg_gpt_config_check(&c, why, sizeof why), -1);
    ck_assert_ptr_nonnull(strstr(why, "does not divide"));
    c = CASES[0].cfg;
    c.context_length = 0;
    ck_assert_int_eq(tg_gpt_config_check(&c, why, sizeof why), -1);
    ck_assert_ptr_nonnull(strstr(why, "context_length"));
    c = CASES[0].cfg;
    c.drop_rate = 1.0f;
    ck_assert_int_eq(tg_gpt_config_check(&c, why, sizeof why), -1);
    c = CASES[0].cfg;
    c.vocab_size = 0;
    ck_assert_int_eq(tg_gpt_config_check(&c, why, sizeof why), -1);
    c = CASES[0].cfg;
    c.emb_dim = 65536;
    c.n_heads = 1;
    c.n_layers = 100;
    ck_assert_int_eq(tg_gpt_config_check(&c, why, sizeof why), -1);
    ck_assert_ptr_nonnull(strstr(why, "too large"));
}
END_TEST

static void forward_too_long(void *ctx)
{
    tg_gpt *m = ctx;
    int32_t ids[8] = {0};
    tg_gpt_forward(m, ids, 1, 7); /* ctx is 6 */
}

static void forward_bad_id(void *ctx)
{
    tg_gpt *m = ctx;
    int32_t ids[2] = {0, 11};
    tg_gpt_forward(m, ids, 1, 2);
}

START_TEST(test_forward_misuse)
{
    tg_gpt_config cfg = CASES[0].cfg;
    tg_gpt *m = tg_gpt_new(&cfg, NULL);
    char msg[512];
    ck_assert(catch_error(forward_too_long, m, msg, sizeof msg));
    ck_assert_ptr_nonnull(strstr(msg, "context_length=6"));
    ck_assert(catch_error(forward_bad_id, m, msg, sizeof msg));
    ck_assert_ptr_nonnull(strstr(msg, "token id 11"));
    tg_tape_reset(NULL);
    tg_gpt_free(m);
    tg_tape_release_default();
}
END_TEST

static Suite *gpt_suite(void)
{
    Suite *s = suite_create("gpt");
    TCase *tc = tcase_create("gpt");
    tcase_add_test(tc, test_param_names);
    tcase_add_loop_test(tc, test_matches_torch, 0, (int)(sizeof CASES / sizeof *CASES));
    tcase_add_test(tc, test_train_switch);
    tcase_add_test(tc, test_sampling);
    tcase_add_test(tc, test_config_check);
    tcase_add_test(tc, test_forward_misuse);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(gpt_suite()) ? 1 : 0; }

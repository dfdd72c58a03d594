/*
 * tests/test_attention_learns.c — suite "attention_learns": the repeat task of
 * examples/attention_task.h (L random tokens, then the same L again), trained
 * with Adam. Seeded and deterministic.
 *   - accuracy on the predictable positions goes from chance (1/vocab) to
 *     >= 99%, and every head puts >= 90% of its weight on the key the task
 *     needs (position p looks at p - (L-1));
 *   - the same model with W_query and W_key frozen at init (requires_grad
 *     off), trained just as long, stays far below (< 60%): learning the
 *     attention weights is what solves the task.
 */
#include <string.h>

#include "examples/attention_task.h"
#include "testutil.h"

#define STEPS 200
#define EVAL_BATCHES 8

START_TEST(test_attention_learns)
{
    attn_task_config cfg = attn_task_defaults();
    attn_task m;
    attn_task_init(&m, &cfg);
    const double chance = 1.0 / cfg.vocab;
    double acc0 = attn_task_eval(&m, EVAL_BATCHES);
    ck_assert_msg(acc0 > chance / 3 && acc0 < 2 * chance, "initial accuracy %.3f is not near chance %.3f", acc0, chance);
    float first = attn_task_train_step(&m), last = first;
    for (int s = 1; s < STEPS; s++)
        last = attn_task_train_step(&m);
    double acc = attn_task_eval(&m, EVAL_BATCHES);
    ck_assert_msg(acc >= 0.99, "accuracy after %d steps is %.4f, want >= 0.99", STEPS, acc);
    ck_assert_msg(last < first, "loss did not fall: %g -> %g", (double)first, (double)last);
    for (int h = 0; h < cfg.heads; h++) {
        double mass = attn_task_target_mass(&m, h);
        ck_assert_msg(mass >= 0.9, "head %d puts only %.3f of its weight on key p-(L-1)", h, mass);
    }
    attn_task_free(&m);
}
END_TEST

START_TEST(test_frozen_qk_does_not_learn)
{
    attn_task_config cfg = attn_task_defaults();
    cfg.freeze_qk = true;
    attn_task m;
    attn_task_init(&m, &cfg);
    tg_tensor *wq0 = tg_copy(m.att->W_query->weight), *wk0 = tg_copy(m.att->W_key->weight);
    tg_tensor *wv0 = tg_copy(m.att->W_value->weight);
    for (int s = 0; s < STEPS; s++)
        attn_task_train_step(&m);
    double acc = attn_task_eval(&m, EVAL_BATCHES);
    ck_assert_msg(acc < 0.6, "with W_query/W_key frozen the accuracy is %.4f, want < 0.6", acc);
    ck_assert_msg(acc > 1.0 / cfg.vocab, "the control did not train at all (%.4f)", acc);
    /* frozen means frozen; the rest trained */
    ck_assert(memcmp(wq0->data, m.att->W_query->weight->data, (size_t)wq0->numel * sizeof(float)) == 0);
    ck_assert(memcmp(wk0->data, m.att->W_key->weight->data, (size_t)wk0->numel * sizeof(float)) == 0);
    ck_assert(memcmp(wv0->data, m.att->W_value->weight->data, (size_t)wv0->numel * sizeof(float)) != 0);
    for (int h = 0; h < cfg.heads; h++) {
        double mass = attn_task_target_mass(&m, h);
        ck_assert_msg(mass < 0.5, "frozen head %d still found key p-(L-1) (%.3f)", h, mass);
    }
    tg_free(wq0);
    tg_free(wk0);
    tg_free(wv0);
    attn_task_free(&m);
}
END_TEST

static Suite *attention_learns_suite(void)
{
    Suite *s = suite_create("attention_learns");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_attention_learns);
    tcase_add_test(tc, test_frozen_qk_does_not_learn);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(attention_learns_suite()) ? 1 : 0; }

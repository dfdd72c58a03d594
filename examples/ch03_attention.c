/*
 * examples/ch03_attention.c — chapter 3 of "Build a Large Language Model
 * (From Scratch)", sections 3.3 to 3.6, in tapegrad.
 *
 * Every value the chapter's notebook prints is printed here, in the same
 * order, with the same seeds (torch.manual_seed(123) and 789 become
 * tg_manual_seed on a generator that reproduces torch's), so the numbers
 * can be read side by side with the book. tests/test_nn.c asserts them.
 *
 *   make && ./build/ch03_attention
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nn/nn.h"
#include "book_inputs.h"


static void heading(const char *title) { printf("\n== %s\n\n", title); }

/* print("label", t) as Python prints it: label, a space, the tensor. */
static void show(const char *label, const tg_tensor *t)
{
    if (label) {
        fputs(label, stdout);
        fputc(t->ndim > 1 ? '\n' : ' ', stdout);
    }
    tg_print(t);
}

static void show_shape(const char *label, const tg_tensor *t)
{
    printf("%s torch.Size([", label);
    for (int i = 0; i < t->ndim; i++)
        printf(i ? ", %d" : "%d", t->shape[i]);
    printf("])\n");
}

/* The batch of two used from section 3.5.3 on: (2, 6, 3). */
static tg_tensor *make_batch(void)
{
    tg_tensor *batch = tg_empty(TG_SHAPE(2, 6, 3));
    memcpy(batch->data, BOOK_INPUTS, sizeof BOOK_INPUTS);
    memcpy(batch->data + 18, BOOK_INPUTS, sizeof BOOK_INPUTS);
    return batch;
}

/* ---------------------------------------------------------------- 3.3 */

static void section_3_3(tg_tensor *inputs)
{
    heading("3.3.1 A simple self-attention mechanism without trainable weights");
    /* query = inputs[1]; attn_scores_2[i] = dot(x_i, query) */
    tg_tensor *query = tg_from_array(TG_SHAPE(3, 1), BOOK_INPUTS + 3);
    tg_tensor *attn_scores_2 = tg_view(tg_matmul(inputs, query), TG_SHAPE(6));
    show("attn_scores_2:", attn_scores_2);

    tg_tensor *attn_weights_2_tmp = tg_div(attn_scores_2, tg_sum(attn_scores_2));
    show("Attention weights (sum-normalised):", attn_weights_2_tmp);
    show("Sum:", tg_sum(attn_weights_2_tmp));

    /* softmax_naive(x) = exp(x) / exp(x).sum(dim=0) */
    tg_tensor *e = tg_exp(attn_scores_2);
    tg_tensor *attn_weights_2_naive = tg_div(e, tg_sum_dim(e, 0, false));
    show("Attention weights (softmax_naive):", attn_weights_2_naive);
    show("Sum:", tg_sum(attn_weights_2_naive));

    tg_tensor *attn_weights_2 = tg_softmax(attn_scores_2, 0);
    show("Attention weights (torch.softmax):", attn_weights_2);
    show("Sum:", tg_sum(attn_weights_2));

    /* context_vec_2 = sum_i attn_weights_2[i] * x_i */
    tg_tensor *context_vec_2 = tg_view(tg_matmul(tg_view(attn_weights_2, TG_SHAPE(1, 6)), inputs), TG_SHAPE(3));
    show("context_vec_2 = z(2):", context_vec_2);

    heading("3.3.2 Computing attention weights for all input tokens");
    tg_tensor *attn_scores = tg_matmul(inputs, tg_transpose(inputs, 0, 1));
    show("attn_scores = inputs @ inputs.T:", attn_scores);
    tg_tensor *attn_weights = tg_softmax(attn_scores, -1);
    show("attn_weights = softmax(attn_scores, dim=-1):", attn_weights);
    double row_2_sum = 0.0;
    for (int j = 0; j < 6; j++)
        row_2_sum += attn_weights->data[6 + j];
    printf("Row 2 sum: %.4f\n", row_2_sum);
    show("All row sums:", tg_sum_dim(attn_weights, -1, false));
    tg_tensor *all_context_vecs = tg_matmul(attn_weights, inputs);
    show("all_context_vecs = attn_weights @ inputs:", all_context_vecs);
    show("Previous 2nd context vector:", context_vec_2);

    tg_tape_reset(NULL);
    tg_free(query);
}

/* ---------------------------------------------------------------- 3.4 */

static void section_3_4(tg_tensor *inputs, tg_generator *g)
{
    heading("3.4.1 Computing the attention weights step by step");
    const int d_in = 3, d_out = 2;
    tg_tensor *x_2 = tg_from_array(TG_SHAPE(1, 3), BOOK_INPUTS + 3);

    tg_manual_seed(g, 123);
    tg_tensor *W_query = tg_rand(g, TG_SHAPE(d_in, d_out));
    tg_tensor *W_key = tg_rand(g, TG_SHAPE(d_in, d_out));
    tg_tensor *W_value = tg_rand(g, TG_SHAPE(d_in, d_out));

    tg_tensor *query_2 = tg_view(tg_matmul(x_2, W_query), TG_SHAPE(2));
    show("query_2 = x_2 @ W_query:", query_2);
    tg_tensor *keys = tg_matmul(inputs, W_key);
    tg_tensor *values = tg_matmul(inputs, W_value);
    show_shape("keys.shape:", keys);
    show_shape("values.shape:", values);

    tg_tensor *keys_2 = tg_from_array(TG_SHAPE(2), keys->data + 2);
    tg_tensor *attn_score_22 = tg_sum(tg_mul(query_2, keys_2));
    show("attn_score_22 = query_2 . keys[1]:", attn_score_22);
    tg_tensor *attn_scores_2 = tg_view(tg_matmul(tg_view(query_2, TG_SHAPE(1, 2)), tg_transpose(keys, 0, 1)),
                                       TG_SHAPE(6));
    show("attn_scores_2 = query_2 @ keys.T:", attn_scores_2);
    const int d_k = keys->shape[1];
    tg_tensor *attn_weights_2 = tg_softmax(tg_mul_scalar(attn_scores_2, 1.0f / sqrtf((float)d_k)), -1);
    show("attn_weights_2 = softmax(attn_scores_2 / d_k**0.5):", attn_weights_2);
    tg_tensor *context_vec_2 =
        tg_view(tg_matmul(tg_view(attn_weights_2, TG_SHAPE(1, 6)), values), TG_SHAPE(2));
    show("context_vec_2 = attn_weights_2 @ values:", context_vec_2);

    heading("3.4.2 Implementing a compact SelfAttention class");
    tg_manual_seed(g, 123);
    tg_self_attention_v1 *sa_v1 = tg_self_attention_v1_new(d_in, d_out, g);
    show("SelfAttention_v1(d_in=3, d_out=2), seed 123:", tg_self_attention_v1_forward(sa_v1, inputs));
    tg_manual_seed(g, 789);
    tg_self_attention_v2 *sa_v2 = tg_self_attention_v2_new(d_in, d_out, false, g);
    show("SelfAttention_v2(d_in=3, d_out=2), seed 789:", tg_self_attention_v2_forward(sa_v2, inputs));

    tg_tape_reset(NULL);
    tg_module_free(&sa_v1->base);
    tg_module_free(&sa_v2->base);
    tg_free(keys_2);
    tg_free(W_query);
    tg_free(W_key);
    tg_free(W_value);
    tg_free(x_2);
}

/* ---------------------------------------------------------------- 3.5 */

static void section_3_5(tg_tensor *inputs, tg_tensor *batch, tg_generator *g)
{
    heading("3.5.1 Applying a causal attention mask");
    /* reuse the query and key weights of SelfAttention_v2 (seed 789) */
    tg_manual_seed(g, 789);
    tg_self_attention_v2 *sa_v2 = tg_self_attention_v2_new(3, 2, false, g);
    tg_tensor *queries = tg_linear_forward(sa_v2->W_query, inputs);
    tg_tensor *keys = tg_linear_forward(sa_v2->W_key, inputs);
    tg_tensor *attn_scores = tg_matmul(queries, tg_transpose(keys, 0, 1));
    const float inv_sqrt_dk = 1.0f / sqrtf((float)keys->shape[1]);
    tg_tensor *attn_weights = tg_softmax(tg_mul_scalar(attn_scores, inv_sqrt_dk), -1);
    show("attn_weights:", attn_weights);

    const int context_length = attn_scores->shape[0];
    tg_tensor *mask_simple = tg_ones(TG_SHAPE(context_length, context_length));
    tg_tril_(mask_simple, 0);
    show("mask_simple = tril(ones(6, 6)):", mask_simple);
    tg_tensor *masked_simple = tg_mul(attn_weights, mask_simple);
    show("masked_simple = attn_weights * mask_simple:", masked_simple);
    tg_tensor *masked_simple_norm = tg_div(masked_simple, tg_sum_dim(masked_simple, -1, true));
    show("masked_simple_norm (rows renormalised):", masked_simple_norm);

    tg_tensor *mask = tg_ones(TG_SHAPE(context_length, context_length));
    tg_triu_(mask, 1);
    tg_tensor *masked = tg_masked_fill(attn_scores, mask, -INFINITY);
    show("masked = attn_scores.masked_fill(triu(ones, 1), -inf):", masked);
    attn_weights = tg_softmax(tg_mul_scalar(masked, inv_sqrt_dk), -1);
    show("attn_weights = softmax(masked / d_k**0.5):", attn_weights);

    heading("3.5.2 Masking additional attention weights with dropout");
    tg_dropout_mod *dropout = tg_dropout_mod_new(0.5f, g);
    tg_tensor *example = tg_ones(TG_SHAPE(6, 6));
    tg_manual_seed(g, 123);
    show("Dropout(0.5) on ones(6, 6), seed 123:", tg_dropout_mod_forward(dropout, example));
    tg_manual_seed(g, 123);
    show("Dropout(0.5) on attn_weights, seed 123:", tg_dropout_mod_forward(dropout, attn_weights));

    heading("3.5.3 Implementing a compact causal attention class");
    show_shape("batch.shape:", batch);
    tg_manual_seed(g, 123);
    tg_causal_attention *ca = tg_causal_attention_new(3, 2, batch->shape[1], 0.0f, false, g);
    tg_tensor *context_vecs = tg_causal_attention_forward(ca, batch);
    show("CausalAttention(3, 2, 6, 0.0), seed 123:", context_vecs);
    show_shape("context_vecs.shape:", context_vecs);

    tg_tape_reset(NULL);
    tg_module_free(&ca->base);
    tg_module_free(&dropout->base);
    tg_module_free(&sa_v2->base);
    tg_free(example);
    tg_free(mask);
    tg_free(mask_simple);
}

/* ---------------------------------------------------------------- 3.6 */

static void section_3_6(tg_tensor *batch, tg_generator *g)
{
    heading("3.6.1 Stacking multiple single-head attention layers");
    tg_manual_seed(g, 123);
    tg_mha_wrapper *wrapper = tg_mha_wrapper_new(3, 2, batch->shape[1], 0.0f, 2, false, g);
    tg_tensor *context_vecs = tg_mha_wrapper_forward(wrapper, batch);
    show("MultiHeadAttentionWrapper(3, 2, 6, 0.0, num_heads=2), seed 123:", context_vecs);
    show_shape("context_vecs.shape:", context_vecs);

    heading("3.6.2 Implementing multi-head attention with weight splits");
    tg_manual_seed(g, 123);
    tg_mha *mha = tg_mha_new(3, 2, batch->shape[1], 0.0f, 2, false, g);
    context_vecs = tg_mha_forward(mha, batch);
    show("MultiHeadAttention(3, 2, 6, 0.0, num_heads=2), seed 123:", context_vecs);
    show_shape("context_vecs.shape:", context_vecs);

    /* (b, num_heads, num_tokens, head_dim) = (1, 2, 3, 4) */
    static const float av[] = {0.2745f, 0.6584f, 0.2775f, 0.8573f, 0.8993f, 0.0390f, 0.9268f, 0.7388f,
                               0.7179f, 0.7058f, 0.9156f, 0.4340f, 0.0772f, 0.3565f, 0.1479f, 0.5331f,
                               0.4066f, 0.2318f, 0.4545f, 0.9737f, 0.4606f, 0.5159f, 0.4220f, 0.5786f};
    tg_tensor *a = tg_from_array(TG_SHAPE(1, 2, 3, 4), av);
    show("a @ a.transpose(2, 3):", tg_matmul(a, tg_transpose(a, 2, 3)));
    tg_tensor *first_head = tg_from_array(TG_SHAPE(3, 4), av);
    tg_tensor *second_head = tg_from_array(TG_SHAPE(3, 4), av + 12);
    show("First head:", tg_matmul(first_head, tg_transpose(first_head, 0, 1)));
    show("Second head:", tg_matmul(second_head, tg_transpose(second_head, 0, 1)));

    /* GPT-2 small's attention layer */
    tg_mha *gpt2 = tg_mha_new(768, 768, 1024, 0.0f, 12, false, g);
    const tg_params *params = tg_module_params(&gpt2->base);
    const long long n = (long long)tg_params_numel(params);
    printf("Parameters of MultiHeadAttention(768, 768, 1024, 0.0, num_heads=12): %lld,%03lld,%03lld\n",
           n / 1000000, n / 1000 % 1000, n % 1000);
    for (int i = 0; i < params->n; i++) {
        char s[64];
        const tg_tensor *t = params->items[i].t;
        printf("  %-16s %s\n", params->items[i].name, tg_shape_str(s, t->ndim, t->shape));
    }

    tg_tape_reset(NULL);
    tg_module_free(&gpt2->base);
    tg_module_free(&mha->base);
    tg_module_free(&wrapper->base);
    tg_free(first_head);
    tg_free(second_head);
    tg_free(a);
}

int main(void)
{
    tg_generator g;
    tg_tensor *inputs = tg_from_array(TG_SHAPE(6, 3), BOOK_INPUTS);
    tg_tensor *batch = make_batch();
    tg_set_grad_enabled(false); /* a walkthrough: forward only */

    printf("Chapter 3: Coding attention mechanisms (tapegrad)\n");
    show("inputs (\"Your journey starts with one step\"):", inputs);
    section_3_3(inputs);
    section_3_4(inputs, &g);
    section_3_5(inputs, batch, &g);
    section_3_6(batch, &g);

    tg_free(batch);
    tg_free(inputs);
    tg_tape_release_default();
    return 0;
}

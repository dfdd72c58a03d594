/*
 * examples/attention_task.h — the repeat task that only attention can solve,
 * and the small model that learns it. Shared by examples/attention_learns.c
 * and tests/test_attention_learns.c (header-only, because the Makefile builds
 * every .c file in examples/ as its own program; hence static inline functions).
 *
 * The task. A sequence is L random tokens t_0..t_{L-1} from [0, vocab),
 * then the same L tokens again: s = t_0 .. t_{L-1} t_0 .. t_{L-1}. The model
 * reads x = s[0 .. 2L-2] (T = 2L-1 tokens) and predicts the next token at
 * every position: y[p] = s[p+1].
 *   - p <  L-1: y[p] = t_{p+1} is a fresh random token: chance (1/vocab).
 *   - p >= L-1: y[p] = s[p+1] = t_{p+1-L}, which sits in the input at
 *     position j = p - (L-1). These L positions are "predictable".
 * So position p must copy the token it sees at p - (L-1): a fixed look-back
 * whose source token varies, which needs attention. With the causal mask,
 * j <= p always holds.
 *
 * The model (no residual, no MLP, so everything goes through attention):
 *   tok_emb (vocab, emb) + pos_emb (T, emb)          (B, T, emb)
 *   -> MultiHeadAttention(emb, emb, T, 0.0, heads)    (B, T, emb)
 *   -> head Linear(emb, vocab)                        (B, T, vocab)
 * trained with Adam on the mean cross-entropy over all positions.
 *
 * pos_emb is drawn N(0,1) like nn.Embedding but kept fixed by default
 * (train_pos off): the scores are (tok+pos) W_q^T W_k (tok+pos)^T, so with a
 * trainable pos_emb the model can learn *where* to look through pos_emb
 * even when W_query and W_key are frozen (measured: it then still reaches
 * 100%, only slower). With fixed positional codes the only place the model
 * can learn the look-back is W_query/W_key, which is what the frozen-QK
 * control demonstrates: it plateaus near 30% however long it trains.
 */
#ifndef TG_ATTENTION_TASK_H
#define TG_ATTENTION_TASK_H

#include <stdlib.h>
#include <string.h>

#include "optim/optim.h"

typedef struct {
    int vocab, L, emb, heads, batch;
    double lr;
    uint64_t seed;          /* weights from seed, training data from seed+1, eval data from seed+2 */
    bool freeze_qk;         /* W_query and W_key keep their initial values (requires_grad off) */
    bool train_pos;         /* let pos_emb learn too (default off: fixed random codes) */
} attn_task_config;

/* The defaults the test and the example use: chance is 1/10. */
static inline attn_task_config attn_task_defaults(void)
{
    return (attn_task_config){.vocab = 10, .L = 5, .emb = 16, .heads = 2, .batch = 32, .lr = 1e-2, .seed = 123};
}

typedef struct {
    attn_task_config cfg;
    int T;                          /* 2L - 1 input tokens */
    tg_generator wgen, data, eval;  /* weights, training batches, the eval set */
    tg_embedding_mod *tok, *pos;
    tg_mha *att;
    tg_linear *head;
    tg_module *net;                 /* the tree: tok_emb, pos_emb, att, out_head */
    tg_optim *opt;
    int32_t *ids, *targets, *pos_ids; /* (batch, T), (batch, T), (T) */
} attn_task;

static inline void attn_task_init(attn_task *m, const attn_task_config *cfg)
{
    if (cfg->vocab < 2 || cfg->L < 1 || cfg->L > 64 || cfg->emb < 1 || cfg->heads < 1 || cfg->batch < 1 ||
        !(cfg->lr > 0))
        tg_error("attn_task_init", "invalid config: vocab %d (>= 2), L %d (1..64), emb %d, heads %d, batch %d, lr %g",
                 cfg->vocab, cfg->L, cfg->emb, cfg->heads, cfg->batch, cfg->lr);
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->T = 2 * cfg->L - 1;
    tg_manual_seed(&m->wgen, cfg->seed);
    tg_manual_seed(&m->data, cfg->seed + 1);
    tg_manual_seed(&m->eval, cfg->seed + 2);
    /* a model of our own: a container module with each part registered once */
    static const tg_module_type net_type = {"AttentionTaskModel", NULL, NULL};
    m->net = tg_module_new(sizeof(tg_module), &net_type);
    m->tok = tg_embedding_mod_new(cfg->vocab, cfg->emb, &m->wgen);
    tg_module_add_child(m->net, "tok_emb", &m->tok->base);
    m->pos = tg_embedding_mod_new(m->T, cfg->emb, &m->wgen);
    tg_module_add_child(m->net, "pos_emb", &m->pos->base);
    m->att = tg_mha_new(cfg->emb, cfg->emb, m->T, 0.0f, cfg->heads, false, &m->wgen);
    tg_module_add_child(m->net, "att", &m->att->base);
    m->head = tg_linear_new(cfg->emb, cfg->vocab, true, &m->wgen);
    tg_module_add_child(m->net, "out_head", &m->head->base);
    if (!cfg->train_pos)
        tg_requires_grad(m->pos->weight, false);
    if (cfg->freeze_qk) {
        tg_requires_grad(m->att->W_query->weight, false);
        tg_requires_grad(m->att->W_key->weight, false);
    }
    tg_optim_config oc = tg_adam_config(cfg->lr);
    m->opt = tg_optim_new(tg_module_params(m->net), &oc);
    m->ids = malloc((size_t)cfg->batch * (size_t)m->T * sizeof *m->ids);
    m->targets = malloc((size_t)cfg->batch * (size_t)m->T * sizeof *m->targets);
    m->pos_ids = malloc((size_t)m->T * sizeof *m->pos_ids);
    if (!m->ids || !m->targets || !m->pos_ids)
        tg_error("attn_task_init", "out of memory");
    for (int p = 0; p < m->T; p++)
        m->pos_ids[p] = p;
}

static inline void attn_task_free(attn_task *m)
{
    tg_optim_free(m->opt);
    tg_module_free(m->net);
    free(m->ids);
    free(m->targets);
    free(m->pos_ids);
}

/* Fills ids/targets with n sequences drawn from g (n <= batch). */
static inline void attn_task_sample(attn_task *m, tg_generator *g, int n)
{
    const int L = m->cfg.L, T = m->T;
    for (int b = 0; b < n; b++) {
        int32_t s[2 * 64];
        for (int i = 0; i < L; i++)
            s[i] = s[L + i] = (int32_t)(tg_random_u32(g) % (uint32_t)m->cfg.vocab);
        for (int p = 0; p < T; p++) {
            m->ids[b * T + p] = s[p];
            m->targets[b * T + p] = s[p + 1];
        }
    }
}

/* Forward on the first n sequences of ids: logits (n, T, vocab) on the tape. */
static inline tg_tensor *attn_task_forward(attn_task *m, int n)
{
    tg_tensor *x = tg_add(tg_embedding_mod_forward(m->tok, m->ids, TG_SHAPE(n, m->T)),
                          tg_embedding_mod_forward(m->pos, m->pos_ids, TG_SHAPE(m->T)));
    return tg_linear_forward(m->head, tg_mha_forward(m->att, x));
}

/* Correct argmax predictions at the predictable positions (p >= L-1) of the
 * first n sequences; *total gets how many positions were scored. */
static inline int attn_task_correct(const attn_task *m, const tg_tensor *logits, int n, int *total)
{
    const int T = m->T, V = m->cfg.vocab;
    int ok = 0;
    for (int b = 0; b < n; b++)
        for (int p = m->cfg.L - 1; p < T; p++) {
            const float *row = logits->data + ((int64_t)b * T + p) * V;
            int best = 0;
            for (int v = 1; v < V; v++)
                if (row[v] > row[best])
                    best = v;
            ok += best == m->targets[b * T + p];
        }
    *total = n * m->cfg.L;
    return ok;
}

/* One Adam step on a fresh batch; returns the loss. */
static inline float attn_task_train_step(attn_task *m)
{
    attn_task_sample(m, &m->data, m->cfg.batch);
    tg_tensor *loss = tg_cross_entropy(attn_task_forward(m, m->cfg.batch), m->targets);
    float l = loss->data[0];
    tg_backward(loss, NULL);
    tg_optim_step(m->opt);
    tg_optim_zero_grad(m->opt);
    tg_tape_reset(NULL);
    return l;
}

/* Accuracy on the predictable positions of n_batches fresh batches from the
 * eval generator (reseeded, so every call scores the same sequences). */
static inline double attn_task_eval(attn_task *m, int n_batches)
{
    tg_manual_seed(&m->eval, m->cfg.seed + 2);
    bool was = tg_set_grad_enabled(false);
    int ok = 0, total = 0;
    for (int k = 0; k < n_batches; k++) {
        int t;
        attn_task_sample(m, &m->eval, m->cfg.batch);
        ok += attn_task_correct(m, attn_task_forward(m, m->cfg.batch), m->cfg.batch, &t);
        total += t;
        tg_tape_reset(NULL);
    }
    tg_set_grad_enabled(was);
    return (double)ok / total;
}

/* Mean attention weight (over the eval set's first batch) that head h puts,
 * from every predictable query position p, on the key the task needs:
 * p - (L-1). 1.0 means each head looks exactly where the answer is. */
static inline double attn_task_target_mass(attn_task *m, int h)
{
    tg_manual_seed(&m->eval, m->cfg.seed + 2);
    bool was = tg_set_grad_enabled(false);
    attn_task_sample(m, &m->eval, m->cfg.batch);
    attn_task_forward(m, m->cfg.batch);
    const tg_tensor *w = tg_mha_attn_weights(m->att); /* (B, H, T, T) */
    const int T = m->T, H = m->cfg.heads, L = m->cfg.L;
    double sum = 0;
    for (int b = 0; b < m->cfg.batch; b++)
        for (int p = L - 1; p < T; p++)
            sum += w->data[(((int64_t)b * H + h) * T + p) * T + (p - (L - 1))];
    tg_tape_reset(NULL);
    tg_set_grad_enabled(was);
    return sum / (m->cfg.batch * L);
}

#endif /* TG_ATTENTION_TASK_H */

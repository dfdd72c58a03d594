/*
 * examples/seq2seq_task.h — the sequence-to-sequence task of chapter 3's
 * opening and the two models that show it: a GRU encoder–decoder, and the
 * same with Bahdanau's additive attention. Shared by
 * examples/seq2seq_attention.c and tests/test_seq2seq.c (header-only,
 * because the Makefile builds every .c file in examples/ as its own program).
 *
 * The tasks. A source is L random tokens x_0..x_{L-1} from [0, vocab), L
 * uniform in [min_len, max_len]; the target has the same length:
 *   reverse   y_t = x_{L-1-t}
 *   verbs     tokens below n_verbs are "verbs": the target is the source with
 *             every verb moved to the end, in order (the German sentence's
 *             verb at the end), so the last outputs depend on early inputs.
 * A batch holds sequences of one length (batches are bucketed by length, so
 * no step computes on padding); the length is drawn per batch.
 *
 * The models (the same embeddings, encoder, hidden size and output layer):
 *   encoder     src_emb (vocab, emb), then two GRU(emb, H): enc_fwd reads
 *               x_0 .. x_{L-1} and its final state s_0 starts the decoder;
 *               enc_bwd reads x_{L-1} .. x_0 and its states, put back in
 *               source order, are the annotations h_j (B, L, H): h_j has read
 *               x_{L-1} .. x_j, so x_j is what it saw last, and the token
 *               after it, x_{j+1}, just before.
 *   decoder     teacher forcing: input at step t is tgt_emb(y_{t-1}) (BOS =
 *               vocab first) -> GRUCell -> s_t; logits = out(s_t) over vocab.
 *   attention   the same, plus AdditiveAttention(H, H, A): at each step the
 *               query is the previous decoder state s_{t-1}, the context
 *               c_t = sum_j alpha_tj h_j joins the decoder's input and the
 *               output layer: s_t = GRUCell([emb; c_t], s_{t-1}),
 *               logits = out([s_t; c_t]).
 * Why the backward states as annotations (Bahdanau's concatenate both
 * directions): when the decoder needs x_j it has just written x_{j+1}, so it
 * finds the mirrored position by content and reads the answer there. With
 * forward states in the annotations (h_j holding x_j and x_{j-1}) it finds
 * "where its last output was" instead and reads the token before it: as
 * accurate, but the alignment settles one position off the mirror
 * (measured, for both [fwd_j; bwd_j] and [fwd_j; bwd_{j+1}]). s_0 is the
 * forward final state, the plain model's best summary for reversal (its
 * first output is the last token read).
 * The plain decoder sees the source only through s_0: the bottleneck.
 * Training (tg_trainer, with the batch source and loss below): Adam on the
 * mean cross-entropy over target tokens, lr cosine-decayed to a tenth,
 * gradient clipping at 1. Evaluation: greedy decoding (each step's argmax is
 * the next input), no teacher forcing.
 */
#ifndef TG_SEQ2SEQ_TASK_H
#define TG_SEQ2SEQ_TASK_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optim/trainer.h"

#define S2S_MAX_LEN 64

typedef enum { S2S_REVERSE = 0, S2S_VERBS = 1 } s2s_task;

typedef struct {
    s2s_task task;
    int vocab, n_verbs;      /* n_verbs: the verbs task's verb tokens 0 .. n_verbs-1 */
    int min_len, max_len;
    int emb, hidden, attn_size, batch;
    double lr, clip;
    bool attention;          /* model 2 */
    uint64_t seed;           /* weights from seed, training batches from seed+1 */
} s2s_config;

static inline s2s_config s2s_defaults(void)
{
    return (s2s_config){.task = S2S_REVERSE, .vocab = 20, .n_verbs = 4, .min_len = 4, .max_len = 40, .emb = 32,
                        .hidden = 64, .attn_size = 64, .batch = 32, .lr = 6e-3, .clip = 1.0, .attention = false,
                        .seed = 1};
}

/* The model: a module tree (root "Seq2Seq", children in the order below),
 * so its parameters have state_dict names like "enc_fwd.weight_ih_l0". */
typedef struct {
    tg_module base;
    tg_embedding_mod *src_emb, *tgt_emb;
    tg_gru *enc_fwd, *enc_bwd;
    tg_additive_attention *att;  /* NULL for the plain model */
    tg_gru_cell *dec;
    tg_linear *out;
} s2s_net;

static const tg_module_type s2s_net_type = {"Seq2Seq", NULL, NULL};

/* One batch: n sequences of length L; src, its reverse (for the backward
 * encoder), the target and the decoder's teacher-forced input (BOS, y_0 ..
 * y_{L-2}), each (n, L). */
typedef struct {
    int32_t *src, *src_rev, *tgt, *tgt_in;
    int n, L;
} s2s_batch;

typedef struct {
    s2s_config cfg;
    tg_generator wgen;           /* initial weights */
    s2s_net *net;
    s2s_batch b;                 /* the batch buffers, batch x S2S_MAX_LEN each */
} s2s_model;

static inline void s2s_check(const s2s_config *c)
{
    if (c->vocab < 2 || c->min_len < 1 || c->max_len < c->min_len || c->max_len > S2S_MAX_LEN || c->emb < 1 ||
        c->hidden < 1 || c->attn_size < 1 || c->batch < 1 || !(c->lr > 0) ||
        (c->task == S2S_VERBS && (c->n_verbs < 1 || c->n_verbs >= c->vocab)))
        tg_error("s2s_init",
                 "invalid config: vocab %d (>= 2), lengths %d..%d (1..%d), emb %d, hidden %d, attn %d, batch %d, "
                 "lr %g, verbs %d",
                 c->vocab, c->min_len, c->max_len, S2S_MAX_LEN, c->emb, c->hidden, c->attn_size, c->batch, c->lr,
                 c->n_verbs);
}

static inline void s2s_init(s2s_model *m, const s2s_config *cfg)
{
    s2s_check(cfg);
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    tg_manual_seed(&m->wgen, cfg->seed);
    const int E = cfg->emb, H = cfg->hidden, K = H;
    tg_generator *g = &m->wgen;
    s2s_net *n = m->net = tg_module_new(sizeof *n, &s2s_net_type);
    tg_module *root = &n->base;
    n->src_emb = (tg_embedding_mod *)tg_module_add_child(root, "src_emb", &tg_embedding_mod_new(cfg->vocab, E, g)->base);
    n->enc_fwd = (tg_gru *)tg_module_add_child(root, "enc_fwd", &tg_gru_new(E, H, g)->base);
    n->enc_bwd = (tg_gru *)tg_module_add_child(root, "enc_bwd", &tg_gru_new(E, H, g)->base);
    n->tgt_emb = (tg_embedding_mod *)tg_module_add_child(root, "tgt_emb", &tg_embedding_mod_new(cfg->vocab + 1, E, g)->base);
    if (cfg->attention)
        n->att = (tg_additive_attention *)tg_module_add_child(
            root, "att", &tg_additive_attention_new(H, K, cfg->attn_size, g)->base);
    n->dec = (tg_gru_cell *)tg_module_add_child(root, "dec", &tg_gru_cell_new(E + (n->att ? K : 0), H, g)->base);
    n->out = (tg_linear *)tg_module_add_child(root, "out", &tg_linear_new(H + (n->att ? K : 0), cfg->vocab, true, g)->base);
    const size_t len = (size_t)cfg->batch * S2S_MAX_LEN;
    m->b.src = malloc(len * sizeof *m->b.src);
    m->b.src_rev = malloc(len * sizeof *m->b.src_rev);
    m->b.tgt = malloc(len * sizeof *m->b.tgt);
    m->b.tgt_in = malloc(len * sizeof *m->b.tgt_in);
    if (!m->b.src || !m->b.src_rev || !m->b.tgt || !m->b.tgt_in)
        tg_error("s2s_init", "out of memory");
}

static inline void s2s_free(s2s_model *m)
{
    tg_module_free(&m->net->base);
    free(m->b.src);
    free(m->b.src_rev);
    free(m->b.tgt);
    free(m->b.tgt_in);
}

static inline const tg_params *s2s_params(s2s_model *m) { return tg_module_params(&m->net->base); }

/* The target of source x (L tokens) for the task. */
static inline void s2s_target(const s2s_config *c, const int32_t *x, int L, int32_t *y)
{
    if (c->task == S2S_REVERSE) {
        for (int t = 0; t < L; t++)
            y[t] = x[L - 1 - t];
        return;
    }
    int k = 0;
    for (int t = 0; t < L; t++)
        if (x[t] >= c->n_verbs)
            y[k++] = x[t];
    for (int t = 0; t < L; t++)
        if (x[t] < c->n_verbs)
            y[k++] = x[t];
}

/* n (<= batch) sequences of length L from g into the batch buffers. */
static inline const s2s_batch *s2s_sample(s2s_model *m, tg_generator *g, int n, int L)
{
    const int V = m->cfg.vocab;
    s2s_batch *bt = &m->b;
    bt->n = n;
    bt->L = L;
    for (int b = 0; b < n; b++) {
        int32_t *x = bt->src + b * L, *y = bt->tgt + b * L;
        for (int t = 0; t < L; t++)
            x[t] = (int32_t)(tg_random_u32(g) % (uint32_t)V);
        for (int t = 0; t < L; t++)
            bt->src_rev[b * L + t] = x[L - 1 - t];
        s2s_target(&m->cfg, x, L, y);
        bt->tgt_in[b * L] = V; /* BOS */
        for (int t = 1; t < L; t++)
            bt->tgt_in[b * L + t] = y[t - 1];
    }
    return bt;
}

/* The length of a training batch: uniform in [min_len, max_len], from g. */
static inline int s2s_draw_len(const s2s_config *c, tg_generator *g)
{
    const int span = c->max_len - c->min_len + 1;
    return c->min_len + (int)(tg_random_u32(g) % (uint32_t)span);
}

typedef struct {
    tg_tensor *states;   /* (n, L, 2H) */
    tg_tensor *keys;     /* (n, L, A), attention only */
    tg_tensor *s0;       /* (n, H) */
} s2s_encoded;

/* The encoder on batch bt: a forward GRU reads x_0 .. x_{L-1} and its final
 * state is s_0; a backward GRU reads x_{L-1} .. x_0 and its states, put
 * back in source order, are the annotations (h_j has read x_{L-1} .. x_j). */
static inline s2s_encoded s2s_encode(s2s_model *m, const s2s_batch *bt)
{
    s2s_net *net = m->net;
    const int n = bt->n, L = bt->L, H = m->cfg.hidden;
    tg_tensor *h_n;
    tg_gru_forward(net->enc_fwd, tg_embedding_mod_forward(net->src_emb, bt->src, TG_SHAPE(n, L)), NULL, &h_n);
    tg_tensor *rev = tg_gru_forward(net->enc_bwd, tg_embedding_mod_forward(net->src_emb, bt->src_rev, TG_SHAPE(n, L)),
                                    NULL, NULL); /* rev[:, i]: the state after x_{L-1-i} */
    tg_tensor *steps[S2S_MAX_LEN];
    for (int j = 0; j < L; j++)
        steps[j] = tg_select(rev, 1, L - 1 - j);
    s2s_encoded e = {tg_stack(steps, L, 1), NULL, tg_reshape(h_n, TG_SHAPE(n, H))};
    if (net->att)
        e.keys = tg_additive_attention_keys(net->att, e.states);
    return e;
}

/* One decoder step from input embedding d (n, E) and state *s: updates *s
 * and returns what the output layer reads, s_t or [s_t; c_t]. */
static inline tg_tensor *s2s_decode_step(s2s_model *m, const s2s_encoded *e, tg_tensor *d, tg_tensor **s)
{
    s2s_net *net = m->net;
    if (!net->att) {
        *s = tg_gru_cell_forward(net->dec, d, *s);
        return *s;
    }
    tg_tensor *c = tg_additive_attention_attend(net->att, *s, e->keys, e->states, NULL); /* query s_{t-1} */
    tg_tensor *in[2] = {d, c};
    *s = tg_gru_cell_forward(net->dec, tg_concat(in, 2, 1), *s);
    tg_tensor *o[2] = {*s, c};
    return tg_concat(o, 2, 1);
}

/* Teacher-forced logits (n, L, vocab) of batch bt. */
static inline tg_tensor *s2s_forward(s2s_model *m, const s2s_batch *bt)
{
    const int n = bt->n, L = bt->L;
    s2s_encoded e = s2s_encode(m, bt);
    tg_tensor *dec_in = tg_embedding_mod_forward(m->net->tgt_emb, bt->tgt_in, TG_SHAPE(n, L)); /* (n, L, E) */
    tg_tensor *s = e.s0;
    tg_tensor *outs[S2S_MAX_LEN];
    for (int t = 0; t < L; t++)
        outs[t] = s2s_decode_step(m, &e, tg_select(dec_in, 1, t), &s);
    return tg_linear_forward(m->net->out, tg_stack(outs, L, 1)); /* every step's logits in one gemm */
}

/* The mean cross-entropy over the batch's target tokens. */
static inline tg_tensor *s2s_loss(s2s_model *m, const s2s_batch *bt)
{
    return tg_cross_entropy(s2s_forward(m, bt), bt->tgt);
}

/* Greedy decoding of batch bt (no grad) into pred (n, L). With align !=
 * NULL (attention model), the weights go there: align[(b*L + t)*L + j] =
 * alpha_tj of sequence b (n x L x L). */
static inline void s2s_greedy(s2s_model *m, const s2s_batch *bt, int32_t *pred, float *align)
{
    const bool was = tg_set_grad_enabled(false);
    const int n = bt->n, L = bt->L, V = m->cfg.vocab;
    s2s_encoded e = s2s_encode(m, bt);
    tg_tensor *s = e.s0;
    int32_t prev[1024];
    if (n > 1024)
        tg_error("s2s_greedy", "decodes at most 1024 sequences at once, got %d", n);
    for (int b = 0; b < n; b++)
        prev[b] = V; /* BOS */
    for (int t = 0; t < L; t++) {
        tg_tensor *d = tg_embedding_mod_forward(m->net->tgt_emb, prev, TG_SHAPE(n));
        tg_tensor *logits = tg_linear_forward(m->net->out, s2s_decode_step(m, &e, d, &s));
        for (int b = 0; b < n; b++) {
            const float *row = logits->data + (int64_t)b * V;
            int best = 0;
            for (int v = 1; v < V; v++)
                if (row[v] > row[best])
                    best = v;
            pred[b * L + t] = prev[b] = best;
        }
        if (align && m->net->att) {
            const float *a = tg_additive_attention_weights(m->net->att)->data; /* (n, L) */
            for (int b = 0; b < n; b++)
                memcpy(align + ((int64_t)b * L + t) * L, a + (int64_t)b * L, (size_t)L * sizeof(float));
        }
    }
    tg_tape_reset(NULL);
    tg_set_grad_enabled(was);
}

/* ---------------------------------------------------------------- the trainer's view
 * The model for tg_trainer (its own loss: no token forward), and a batch
 * source: training batches drawn from the trainer's generator (a length,
 * then the tokens), and a fixed validation split of eval_batches batches
 * with lengths spread over min_len..max_len, each from its own seed. */
typedef struct {
    s2s_model *m;
    int eval_batches;
    uint64_t val_seed;
} s2s_source;

/* The module tree as the trainer's model; no token forward (the loss below
 * runs the encoder and decoder itself). */
static inline tg_train_model s2s_train_model(s2s_model *m) { return tg_train_model_module(&m->net->base, NULL); }

static inline const void *s2s_src_train_batch(void *ctx, int64_t step, tg_generator *g)
{
    s2s_model *m = ((s2s_source *)ctx)->m;
    (void)step;
    const int L = s2s_draw_len(&m->cfg, g);
    return s2s_sample(m, g, m->cfg.batch, L);
}

static inline int64_t s2s_src_eval_rows(void *ctx, int split)
{
    const s2s_source *src = ctx;
    return split == TG_SPLIT_VAL ? (int64_t)src->eval_batches * src->m->cfg.batch : 0;
}

static inline const void *s2s_src_eval_batch(void *ctx, int split, int64_t first, int *rows)
{
    const s2s_source *src = ctx;
    s2s_model *m = src->m;
    (void)split;
    const int k = (int)(first / m->cfg.batch), K = src->eval_batches;
    const int L = K > 1 ? m->cfg.min_len + k * (m->cfg.max_len - m->cfg.min_len) / (K - 1) : m->cfg.max_len;
    tg_generator g;
    tg_manual_seed(&g, src->val_seed + (uint64_t)k);
    *rows = m->cfg.batch;
    return s2s_sample(m, &g, m->cfg.batch, L);
}

static inline tg_tensor *s2s_src_loss(void *ctx, const tg_train_model *tm, const void *batch)
{
    (void)tm; /* tm->self is the module tree; the source knows the whole model */
    return s2s_loss(((s2s_source *)ctx)->m, batch);
}

static inline tg_batch_source s2s_batch_source(s2s_source *src)
{
    const s2s_config *c = &src->m->cfg;
    return (tg_batch_source){.ctx = src,
                             .train_batch = s2s_src_train_batch,
                             .eval_rows = s2s_src_eval_rows,
                             .eval_batch = s2s_src_eval_batch,
                             .loss = s2s_src_loss,
                             .tokens_per_step = (int64_t)c->batch * (c->min_len + c->max_len) / 2};
}

/* The trainer config the example and the test use: Adam, the learning rate
 * decayed from cfg.lr to cfg.lr/10 on a cosine over the run (the late steps
 * sharpen the alignment instead of shaking it), clipping at cfg.clip. */
static inline tg_trainer_config s2s_trainer_config(const s2s_config *c, int64_t steps, int64_t eval_every)
{
    return (tg_trainer_config){.optim = tg_adam_config(c->lr),
                               .sched = {.kind = TG_LR_COSINE, .lr = c->lr, .min_lr = c->lr / 10, .decay_iters = steps},
                               .steps = steps,
                               .clip = c->clip,
                               .eval_every = eval_every};
}

/* ---------------------------------------------------------------- evaluation
 * Held-out sequences from their own generator (seed eval_seed): per_len of
 * each length min_len..max_len, decoded greedily, scored per length. */
typedef struct {
    int64_t tokens, tokens_ok, seqs, seqs_ok;
    double mirror;       /* reversal: sum over output steps of alpha on x_{L-1-t} */
    int64_t mirror_n;
} s2s_score;

static inline void s2s_evaluate(s2s_model *m, uint64_t eval_seed, int per_len, s2s_score *by_len /* [max_len+1] */)
{
    tg_generator g;
    tg_manual_seed(&g, eval_seed);
    const int n = per_len < m->cfg.batch ? per_len : m->cfg.batch;
    int32_t *pred = malloc((size_t)n * S2S_MAX_LEN * sizeof *pred);
    float *align = malloc((size_t)n * S2S_MAX_LEN * S2S_MAX_LEN * sizeof *align);
    if (!pred || !align)
        tg_error("s2s_evaluate", "out of memory");
    for (int L = m->cfg.min_len; L <= m->cfg.max_len; L++) {
        s2s_score *sc = &by_len[L];
        memset(sc, 0, sizeof *sc);
        for (int done = 0; done < per_len; done += n) {
            const int k = per_len - done < n ? per_len - done : n;
            const s2s_batch *bt = s2s_sample(m, &g, k, L);
            s2s_greedy(m, bt, pred, align);
            for (int b = 0; b < k; b++) {
                int ok = 0;
                for (int t = 0; t < L; t++)
                    ok += pred[b * L + t] == bt->tgt[b * L + t];
                sc->tokens += L;
                sc->tokens_ok += ok;
                sc->seqs++;
                sc->seqs_ok += ok == L;
            }
            if (m->net->att && m->cfg.task == S2S_REVERSE)
                for (int b = 0; b < k; b++)
                    for (int t = 0; t < L; t++) {
                        sc->mirror += align[((int64_t)b * L + t) * L + (L - 1 - t)];
                        sc->mirror_n++;
                    }
        }
    }
    free(pred);
    free(align);
}

#endif /* TG_SEQ2SEQ_TASK_H */

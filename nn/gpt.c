/*
 * nn/gpt.c — the book's GPTModel (ch04 gpt.py), built from the nn modules.
 *
 *   in_idx (B, T) -> tok_emb (B, T, E) + pos_emb (T, E) -> drop_emb
 *   -> n_layers x [ x + drop(att(norm1(x))) ; x + drop(ff(norm2(x))) ]
 *   -> final_norm -> out_head -> logits (B, T, V)
 */
#include "module_util.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- config */

int tg_gpt_config_check(const tg_gpt_config *c, char *err, size_t errsize)
{
    if (c->vocab_size < 1 || c->vocab_size > (1 << 24))
        return tg_fail(err, errsize, "vocab_size %d must be in [1, 2^24]", c->vocab_size);
    if (c->context_length < 1 || c->context_length > (1 << 16))
        return tg_fail(err, errsize, "context_length (--ctx) %d must be in [1, 65536]", c->context_length);
    if (c->emb_dim < 1 || c->emb_dim > (1 << 16))
        return tg_fail(err, errsize, "emb_dim (--emb) %d must be in [1, 65536]", c->emb_dim);
    if (c->n_heads < 1 || c->n_heads > c->emb_dim)
        return tg_fail(err, errsize, "n_heads (--heads) %d must be in [1, emb_dim=%d]", c->n_heads, c->emb_dim);
    if (c->emb_dim % c->n_heads != 0)
        return tg_fail(err, errsize, "n_heads (--heads) %d does not divide emb_dim (--emb) %d", c->n_heads,
                        c->emb_dim);
    if (c->n_layers < 0 || c->n_layers > 1024)
        return tg_fail(err, errsize, "n_layers (--layers) %d must be in [0, 1024]", c->n_layers);
    if (!(c->drop_rate >= 0.0f && c->drop_rate < 1.0f))
        return tg_fail(err, errsize, "drop_rate (--dropout) %g must be in [0, 1)", (double)c->drop_rate);
    /* Every tensor must fit tg_tensor's int shapes and int64 numel comfortably. */
    double e = c->emb_dim, n = (double)c->vocab_size * e * 2 + (double)c->context_length * e +
                               (double)c->n_layers * (12 * e * e + 13 * e);
    if (n > 4e9)
        return tg_fail(err, errsize, "model too large (%.3g parameters)", n);
    return 0;
}

static const char *const cfg_keys[] = {"vocab_size", "context_length", "emb_dim", "n_heads",
                                       "n_layers",   "drop_rate",      "qkv_bias"};

void tg_gpt_config_to_meta(const tg_gpt_config *c, tg_st_meta *m)
{
    tg_st_meta_setf(m, "vocab_size", "%d", c->vocab_size);
    tg_st_meta_setf(m, "context_length", "%d", c->context_length);
    tg_st_meta_setf(m, "emb_dim", "%d", c->emb_dim);
    tg_st_meta_setf(m, "n_heads", "%d", c->n_heads);
    tg_st_meta_setf(m, "n_layers", "%d", c->n_layers);
    /* the shortest text that reads back as the same float: "0.2", not "0.200000003" */
    char dr[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(dr, sizeof dr, "%.*g", prec, (double)c->drop_rate);
        if ((float)strtod(dr, NULL) == c->drop_rate)
            break;
    }
    tg_st_meta_set(m, "drop_rate", dr);
    tg_st_meta_set(m, "qkv_bias", c->qkv_bias ? "true" : "false");
}

bool tg_gpt_meta_has_config(const tg_st_meta *m)
{
    for (size_t i = 0; i < sizeof cfg_keys / sizeof *cfg_keys; i++)
        if (tg_st_meta_get(m, cfg_keys[i]))
            return true;
    return false;
}

static bool parse_int(const char *s, int *out)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < -2147483647L || v > 2147483647L || s[0] == ' ' || s[0] == '+')
        return false;
    *out = (int)v;
    return true;
}

static int meta_fail(tg_st_error *err, const char *label, const char *fmt, const char *a, const char *b)
{
    if (err) {
        err->code = TG_ST_ECONFIG;
        int n = snprintf(err->msg, sizeof err->msg, "%s: ", label ? label : "(checkpoint)");
        if (n < 0 || (size_t)n >= sizeof err->msg)
            n = 0;
        snprintf(err->msg + n, sizeof err->msg - (size_t)n, fmt, a, b);
    }
    return TG_ST_ECONFIG;
}

int tg_gpt_config_from_meta(tg_gpt_config *c, const tg_st_meta *m, const char *label, tg_st_error *err)
{
    memset(c, 0, sizeof *c);
    int *ints[] = {&c->vocab_size, &c->context_length, &c->emb_dim, &c->n_heads, &c->n_layers};
    for (int i = 0; i < 5; i++) {
        const char *v = tg_st_meta_get(m, cfg_keys[i]);
        if (!v)
            return meta_fail(err, label, "metadata lacks \"%s\"%s", cfg_keys[i], " (not a tapegrad GPT checkpoint?)");
        if (!parse_int(v, ints[i]))
            return meta_fail(err, label, "metadata \"%s\" = \"%.40s\" is not an integer", cfg_keys[i], v);
    }
    const char *d = tg_st_meta_get(m, "drop_rate");
    if (!d)
        return meta_fail(err, label, "metadata lacks \"%s\"%s", "drop_rate", "");
    char *end;
    errno = 0;
    double dr = strtod(d, &end);
    if (errno || !*d || *end || !isfinite(dr))
        return meta_fail(err, label, "metadata \"%s\" = \"%.40s\" is not a number", "drop_rate", d);
    c->drop_rate = (float)dr;
    const char *q = tg_st_meta_get(m, "qkv_bias");
    if (!q)
        return meta_fail(err, label, "metadata lacks \"%s\"%s", "qkv_bias", "");
    if (strcmp(q, "true") == 0 || strcmp(q, "True") == 0)
        c->qkv_bias = true;
    else if (strcmp(q, "false") == 0 || strcmp(q, "False") == 0)
        c->qkv_bias = false;
    else
        return meta_fail(err, label, "metadata \"%s\" = \"%.40s\" is not true/false", "qkv_bias", q);
    char why[200];
    if (tg_gpt_config_check(c, why, sizeof why) != 0)
        return meta_fail(err, label, "invalid config in the metadata: %s%s", why, "");
    return 0;
}

/* ---------------------------------------------------------------- model */

static tg_tensor *block_forward(tg_module *base, tg_tensor *x)
{
    tg_gpt_block *b = (tg_gpt_block *)base;
    tg_nn_check_forward("TransformerBlock", b, x);
    tg_tensor *h = tg_module_forward(b->att, tg_module_forward(b->norm1, x)); /* (B, T, E) */
    x = tg_add(tg_dropout_mod_forward(b->drop_resid, h), x);
    h = tg_module_forward(b->ff, tg_module_forward(b->norm2, x));
    return tg_add(tg_dropout_mod_forward(b->drop_resid, h), x);
}

const tg_module_type tg_gpt_block_type = {"TransformerBlock", block_forward, NULL};

/* The order of TransformerBlock.__init__: att, ff, norm1, norm2, drop_resid. */
static tg_gpt_block *block_new(const tg_gpt_config *cfg, tg_generator *g)
{
    const int E = cfg->emb_dim;
    tg_gpt_block *b = tg_module_new(sizeof *b, &tg_gpt_block_type);
    tg_mha *att = tg_mha_new(E, E, cfg->context_length, cfg->drop_rate, cfg->n_heads, cfg->qkv_bias, g);
    att->keep_attn = false; /* no per-step copy of the weights while training */
    tg_module_add_slot(&b->base, "att", &b->att, &att->base);
    tg_module_add_slot(&b->base, "ff", &b->ff, &tg_feedforward_new(E, g)->base);
    tg_module_add_slot(&b->base, "norm1", &b->norm1, &tg_layernorm_mod_new(E)->base);
    tg_module_add_slot(&b->base, "norm2", &b->norm2, &tg_layernorm_mod_new(E)->base);
    b->drop_resid =
        (tg_dropout_mod *)tg_module_add_child(&b->base, "drop_resid", &tg_dropout_mod_new(cfg->drop_rate, g)->base);
    return b;
}

static void gpt_release(tg_module *base) { free(((tg_gpt *)base)->positions); }

/* Its input is token ids: no single-input forward. */
const tg_module_type tg_gpt_type = {"GPTModel", NULL, gpt_release};

tg_gpt *tg_gpt_new(const tg_gpt_config *cfg, tg_generator *g)
{
    char why[200];
    if (tg_gpt_config_check(cfg, why, sizeof why) != 0)
        tg_error("tg_gpt_new", "%s", why);
    tg_gpt *m = tg_module_new(sizeof *m, &tg_gpt_type);
    m->cfg = *cfg;
    m->positions = malloc((size_t)cfg->context_length * sizeof *m->positions);
    if (!m->positions)
        tg_error("tg_gpt_new", "out of memory");
    for (int t = 0; t < cfg->context_length; t++)
        m->positions[t] = t;
    const int E = cfg->emb_dim;
    /* The order of GPTModel.__init__; each child registered once, under its name. */
    tg_module *root = &m->base;
    m->tok_emb = (tg_embedding_mod *)tg_module_add_child(root, "tok_emb", &tg_embedding_mod_new(cfg->vocab_size, E, g)->base);
    m->pos_emb =
        (tg_embedding_mod *)tg_module_add_child(root, "pos_emb", &tg_embedding_mod_new(cfg->context_length, E, g)->base);
    m->drop_emb = (tg_dropout_mod *)tg_module_add_child(root, "drop_emb", &tg_dropout_mod_new(cfg->drop_rate, g)->base);
    m->trf_blocks = tg_module_add_child(root, "trf_blocks", tg_sequential_new());
    for (int i = 0; i < cfg->n_layers; i++)
        tg_module_append(m->trf_blocks, &block_new(cfg, g)->base);
    tg_module_add_slot(root, "final_norm", &m->final_norm, &tg_layernorm_mod_new(E)->base);
    m->out_head = (tg_linear *)tg_module_add_child(root, "out_head", &tg_linear_new(E, cfg->vocab_size, false, g)->base);
    return m;
}

tg_tensor *tg_gpt_forward(tg_gpt *m, const int32_t *ids, int batch, int tokens)
{
    tg_check_ptr("tg_gpt_forward", m, "model");
    if (batch < 1 || tokens < 1 || tokens > m->cfg.context_length)
        tg_error("tg_gpt_forward", "input (%d, %d) needs batch >= 1 and 1 <= tokens <= context_length=%d", batch,
                 tokens, m->cfg.context_length);
    for (int64_t i = 0; i < (int64_t)batch * tokens; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab_size)
            tg_error("tg_gpt_forward", "token id %d at %lld outside the vocabulary [0, %d)", ids[i], (long long)i,
                     m->cfg.vocab_size);
    tg_module_enter(&m->base); /* nothing at the root; a GPT inside a model of yours gets its scope */
    tg_tensor *tok = tg_embedding_mod_forward(m->tok_emb, ids, TG_SHAPE(batch, tokens)); /* (B, T, E) */
    tg_tensor *pos = tg_embedding_mod_forward(m->pos_emb, m->positions, TG_SHAPE(tokens)); /* (T, E) */
    tg_tensor *x = tg_dropout_mod_forward(m->drop_emb, tg_add(tok, pos));
    x = tg_module_forward(m->trf_blocks, x);
    x = tg_linear_forward(m->out_head, tg_module_forward(m->final_norm, x)); /* (B, T, V) */
    tg_module_leave(&m->base);
    return x;
}

tg_gpt_block *tg_gpt_block_at(tg_gpt *m, int i)
{
    tg_check_ptr("tg_gpt_block_at", m, "model");
    tg_module *b = tg_module_child_at(m->trf_blocks, i);
    if (b->type != &tg_gpt_block_type)
        tg_error("tg_gpt_block_at", "trf_blocks.%d is a %s, not a TransformerBlock", i, b->type->name);
    return (tg_gpt_block *)b;
}

const tg_params *tg_gpt_params(tg_gpt *m)
{
    tg_check_ptr("tg_gpt_params", m, "model");
    return tg_module_params(&m->base);
}

void tg_gpt_train(tg_gpt *m, bool on)
{
    tg_check_ptr("tg_gpt_train", m, "model");
    tg_module_train(&m->base, on);
}

void tg_gpt_free(tg_gpt *m)
{
    if (m)
        tg_module_free(&m->base);
}

/* ---------------------------------------------------------------- loading */

typedef struct {
    const tg_gpt *m;
    bool allow_optim;
} extra_ctx;

/* torch's buffer "trf_blocks.{i}.att.mask" (i < n_layers, shape (ctx, ctx)),
 * and the optimizer's "optim.*" entries when allowed. */
static bool gpt_allow_extra(const tg_st_entry *e, void *vctx)
{
    const extra_ctx *c = vctx;
    if (c->allow_optim && strncmp(e->name, "optim.", 6) == 0)
        return true;
    int i, n = 0;
    if (sscanf(e->name, "trf_blocks.%d.att.mask%n", &i, &n) == 1 && e->name[n] == '\0' && i >= 0 &&
        i < c->m->cfg.n_layers) {
        char canon[64];
        snprintf(canon, sizeof canon, "trf_blocks.%d.att.mask", i);
        return strcmp(canon, e->name) == 0 && e->ndim == 2 && e->shape[0] == c->m->cfg.context_length &&
               e->shape[1] == c->m->cfg.context_length;
    }
    return false;
}

int tg_gpt_load(tg_gpt *m, const tg_st_file *f, bool allow_optim, tg_st_error *err)
{
    const tg_st_meta *meta = tg_st_metadata(f);
    const char *label = tg_st_label(f);
    if (tg_gpt_meta_has_config(meta)) {
        tg_gpt_config c;
        int rc = tg_gpt_config_from_meta(&c, meta, label, err);
        if (rc)
            return rc;
        const struct {
            const char *name;
            int file, model;
        } cmp[] = {{"vocab_size", c.vocab_size, m->cfg.vocab_size},
                   {"context_length", c.context_length, m->cfg.context_length},
                   {"emb_dim", c.emb_dim, m->cfg.emb_dim},
                   {"n_heads", c.n_heads, m->cfg.n_heads},
                   {"n_layers", c.n_layers, m->cfg.n_layers},
                   {"qkv_bias", c.qkv_bias, m->cfg.qkv_bias}};
        for (size_t i = 0; i < sizeof cmp / sizeof *cmp; i++)
            if (cmp[i].file != cmp[i].model) {
                if (err) {
                    err->code = TG_ST_ECONFIG;
                    snprintf(err->msg, sizeof err->msg,
                             "%s: checkpoint of another config: its %s is %d, the model's is %d", label, cmp[i].name,
                             cmp[i].file, cmp[i].model);
                }
                return TG_ST_ECONFIG;
            }
    }
    extra_ctx ctx = {m, allow_optim};
    return tg_st_load_params(f, tg_gpt_params(m), gpt_allow_extra, &ctx, err);
}

/* ---------------------------------------------------------------- generation */

void tg_gpt_generate(tg_gpt *m, int32_t *ids, int n_prompt, int n_new, float temperature, int top_k,
                     tg_generator *g, tg_gpt_token_fn on_token, void *ctx)
{
    tg_sampling s = {temperature, top_k, 1.0f};
    tg_gpt_generate_with(m, ids, n_prompt, n_new, &s, g, on_token, ctx);
}

void tg_gpt_generate_with(tg_gpt *m, int32_t *ids, int n_prompt, int n_new, const tg_sampling *s, tg_generator *g,
                          tg_gpt_token_fn on_token, void *ctx)
{
    tg_check_ptr("tg_gpt_generate", m, "model");
    tg_check_ptr("tg_gpt_generate", ids, "ids");
    tg_sampling_check("tg_gpt_generate", s);
    if (n_prompt < 1 || n_new < 0)
        tg_error("tg_gpt_generate", "needs n_prompt >= 1 (got %d), n_new >= 0 (got %d)", n_prompt, n_new);
    const int V = m->cfg.vocab_size, C = m->cfg.context_length;
    bool was_training = m->base.training;
    tg_gpt_train(m, false);
    tg_tape *tape = tg_tape_new();
    tg_tape *prev = tg_tape_use(tape);
    bool grad = tg_set_grad_enabled(false);
    tg_sample_slot *work = malloc((size_t)V * sizeof *work);
    if (!work)
        tg_error("tg_gpt_generate", "out of memory");
    for (int k = 0; k < n_new; k++) {
        int n = n_prompt + k, T = n < C ? n : C;
        tg_tensor *logits = tg_gpt_forward(m, ids + (n - T), 1, T);
        int32_t next = tg_sample_logits(logits->data + (int64_t)(T - 1) * V, V, s, g, work);
        ids[n] = next;
        tg_tape_reset(tape);
        if (on_token)
            on_token(next, ctx);
    }
    free(work);
    tg_set_grad_enabled(grad);
    tg_tape_use(prev);
    tg_tape_free(tape);
    tg_gpt_train(m, was_training);
}

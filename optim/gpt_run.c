/*
 * optim/gpt_run.c — a next-token training run of the book's GPTModel on a
 * text file (see gpt_run.h): the checkpoint and the settings, the data, the
 * model, the trainer, the checkpoint's metadata.
 */
#include "gpt_run.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static bool given(const tg_gpt_run_settings *s, const char *flag) { return s->given && s->given(flag); }

/* ---------------------------------------------------------------- the training settings in the checkpoint */

/* In the checkpoint's order. A resume reads each back when not given, in the
 * range of its flag (d: [lo, hi), or (lo, hi) for "> 0"; l: [lo, hi]). */
typedef struct {
    const char *flag, *key;
    char type;                   /* c: a choice, d: double, p: double > lo, l: long, u: the seed (never read back) */
    size_t off;
    double lo, hi;
    const char *const *choices;
} setting;

#define SET(flag, key, t, f, lo, hi, ch) {flag, key, t, offsetof(tg_gpt_run_settings, f), lo, hi, ch}
#define CH(...) (const char *const[]){__VA_ARGS__, NULL}
static const setting k_settings[] = {
    SET("--optimizer", "optimizer", 'c', optimizer, 0, 0, CH("sgd", "adam", "adamw")),
    SET("--lr", "lr", 'p', lr, 0, INFINITY, NULL),
    SET("--lr-schedule", "lr_schedule", 'c', schedule, 0, 0, CH("const", "cosine")),
    SET("--steps", "steps", 'l', steps, 0, 1099511627776.0, NULL),
    SET("--seed", "seed", 'u', seed, 0, 0, NULL),
    SET("--batches", "batches", 'c', batches, 0, 0, CH("random", "sequential")),
    SET("--weight-decay", "weight_decay", 'd', weight_decay, 0, INFINITY, NULL),
    SET("--momentum", "momentum", 'd', momentum, 0, 1, NULL),
    SET("--warmup", "warmup", 'l', warmup, 0, 1099511627776.0, NULL),
    SET("--min-lr", "min_lr", 'd', min_lr, 0, INFINITY, NULL),
    SET("--clip", "clip", 'd', clip, 0, INFINITY, NULL),
    SET("--batch", "batch", 'l', batch, 1, 1 << 20, NULL),
    SET("--val-frac", "val_frac", 'd', val_frac, 0, 1, NULL),
};
#define N_SETTINGS (sizeof k_settings / sizeof *k_settings)

/* A setting's value from its text; false if missing, not a number or out of range. */
static bool read_setting(const setting *k, const char *v, tg_gpt_run_settings *s)
{
    void *p = (char *)s + k->off;
    char *end = NULL;
    if (!v)
        return false;
    if (k->type == 'c') {
        for (int i = 0; k->choices[i]; i++)
            if (strcmp(k->choices[i], v) == 0) {
                *(const char **)p = k->choices[i]; /* static: the file's text goes when it closes */
                return true;
            }
        return false;
    }
    errno = 0;
    double x = k->type == 'l' ? (double)strtol(v, &end, 10) : strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < k->lo || (k->type == 'p' && x == k->lo) ||
        (k->type == 'l' ? x > k->hi : x >= k->hi))
        return false;
    if (k->type == 'l')
        *(long *)p = (long)x;
    else
        *(double *)p = x;
    return true;
}

static void write_settings(const tg_gpt_run_settings *s, tg_st_meta *m)
{
    for (const setting *k = k_settings; k < k_settings + N_SETTINGS; k++) {
        const void *p = (const char *)s + k->off;
        if (k->type == 'd' || k->type == 'p')
            tg_meta_set_double(m, k->key, *(const double *)p);
        else if (k->type == 'l')
            tg_st_meta_setf(m, k->key, "%ld", *(const long *)p);
        else if (k->type == 'u')
            tg_st_meta_setf(m, k->key, "%" PRIu64, *(const uint64_t *)p);
        else
            tg_st_meta_set(m, k->key, *(const char *const *)p);
    }
}

int tg_gpt_run_check(const tg_gpt_run_settings *s, char *err, size_t errsize)
{
    if (!s->data)
        return tg_fail(err, errsize, "--data FILE is required (see --help)");
    if (s->resume && s->init)
        return tg_fail(err, errsize, "--resume and --init cannot be combined (--resume continues a run, --init starts "
                    "one)");
    if (s->eval_only && !s->resume && !s->init)
        return tg_fail(err, errsize, "--eval-only needs a checkpoint to evaluate (--init or --resume)");
    if (s->val_data && given(s, "--val-frac"))
        return tg_fail(err, errsize, "--val-data and --val-frac cannot be combined (with --val-data all of --data "
                    "trains)");
    if (s->min_lr > s->lr)
        return tg_fail(err, errsize, "--min-lr %g must not exceed --lr %g", s->min_lr, s->lr);
    if (s->momentum > 0.0 && strcmp(s->optimizer, "sgd") != 0)
        return tg_fail(err, errsize, "--momentum applies to --optimizer sgd only");
    if (s->heads < 1 || s->emb % s->heads)
        return tg_fail(err, errsize, "--heads %ld does not divide --emb %ld", s->heads, s->emb);
    return 0;
}

/* --resume continues the saved run: every training setting not given takes the checkpoint's value. */
static int adopt_training_settings(tg_gpt_run *r, const tg_st_file *f, char *err, size_t errsize)
{
    tg_gpt_run_settings *s = r->s;
    const tg_st_meta *m = tg_st_metadata(f);
    for (const setting *k = k_settings; k < k_settings + N_SETTINGS; k++)
        if (k->type != 'u' && !given(s, k->flag) && !read_setting(k, tg_st_meta_get(m, k->key), s))
            return tg_fail(err, errsize, "%s: metadata \"%s\" is missing or invalid", tg_st_label(f), k->key);
    const char *v = tg_st_meta_get(m, "steps");
    r->ck_steps = v ? atol(v) : s->steps; /* another total: another cosine schedule (the caller may say so) */
    return tg_gpt_run_check(s, err, errsize);
}

/* The checkpoint's metadata: format, config, tokenizer, step, the training settings, the data's hash. */
static void run_meta(void *user, tg_trainer *tr, tg_st_meta *m)
{
    tg_gpt_run *r = user;
    tg_gpt_checkpoint_meta(&r->cfg, &r->d.tok, m);
    tg_st_meta_setf(m, "step", "%" PRId64, tr->step);
    write_settings(r->s, m);
    tg_st_meta_setf(m, "data_hash", "%016" PRIx64, tg_tokens_hash(r->d.ids, r->d.n_ids));
}

/* ---------------------------------------------------------------- setup */

/* The checkpoint's model config and tokenizer, if it has them; a model setting given must agree. */
static int adopt_checkpoint_config(tg_gpt_run *r, const tg_st_file *f, char *err, size_t errsize)
{
    const tg_gpt_run_settings *s = r->s;
    const char *label = tg_st_label(f);
    tg_gpt_config c;
    bool has_tok;
    int rc = tg_gpt_checkpoint_config(f, &c, &r->d.tok, &has_tok, err, errsize);
    if (rc == 0 && s->resume)
        return tg_fail(err, errsize, "%s: not a tapegrad training checkpoint (no model config in its metadata)", label);
    if (rc <= 0) /* an error, or weights without a config (from PyTorch, say): the settings give the config */
        return rc;
    const struct {
        const char *flag;
        long want, have;
    } chk[] = {{"--layers", s->layers, c.n_layers}, {"--heads", s->heads, c.n_heads},
               {"--emb", s->emb, c.emb_dim},         {"--ctx", s->ctx, c.context_length},
               {"--qkv-bias", s->qkv_bias, c.qkv_bias}};
    for (size_t i = 0; i < sizeof chk / sizeof *chk; i++)
        if (given(s, chk[i].flag) && chk[i].want != chk[i].have)
            return tg_fail(err, errsize, "%s: checkpoint of another config: it has %s %ld, the command line asks for %ld",
                        label, chk[i].flag, chk[i].have, chk[i].want);
    const char *tk = r->d.tok.kind == TG_TOK_BYTE ? "byte" : "char";
    if (!has_tok && s->resume)
        return tg_fail(err, errsize, "%s: not a tapegrad training checkpoint (no tokenizer in its metadata)", label);
    if (has_tok && given(s, "--tokenizer") && strcmp(tk, s->tokenizer) != 0)
        return tg_fail(err, errsize, "%s: checkpoint of another config: it has --tokenizer %s, the command line asks "
                    "for %s", label, tk, s->tokenizer);
    c.drop_rate = given(s, "--dropout") ? (float)s->dropout : c.drop_rate;
    r->cfg = c;
    return 0;
}

/* The data (in the checkpoint's vocabulary, if it has one), long enough for the context. */
static int load_data(tg_gpt_run *r, char *err, size_t errsize)
{
    const tg_gpt_run_settings *s = r->s;
    const int64_t T1 = r->cfg.context_length + 1;
    if (tg_text_data_load(&r->d, s->data, s->val_data, strcmp(s->tokenizer, "byte") ? TG_TOK_CHAR : TG_TOK_BYTE,
                          s->val_frac, err, errsize))
        return -1;
    if (r->d.n_ids < T1)
        return tg_fail(err, errsize, "%s: %" PRId64 " tokens is shorter than --ctx + 1 = %" PRId64, s->data, r->d.n_ids,
                    T1);
    if (r->d.n_train < T1)
        return tg_fail(err, errsize, "%s: the training split has %" PRId64 " tokens, fewer than --ctx + 1 = %" PRId64
                    " (lower --ctx or --val-frac)", s->data, r->d.n_train, T1);
    if (r->d.n_val > 0 && r->d.n_val < T1)
        return tg_fail(err, errsize, "%s: the validation %s has %" PRId64 " tokens, fewer than --ctx + 1 = %" PRId64
                    " (lower --ctx%s)", s->val_data ? s->val_data : s->data, s->val_data ? "text" : "split",
                    r->d.n_val, T1, s->val_data ? "" : ", raise --val-frac, or --val-frac 0");
    return 0;
}

/* The samples' start: the prompt (an error if it has a character outside the vocabulary), else the data's
 * first characters (a sentence start the model saw). */
static int encode_prompt(tg_gpt_run *r, char *err, size_t errsize)
{
    const size_t len = r->s->prompt ? strlen(r->s->prompt) : 0;
    int64_t n = r->d.n_train < 16 ? r->d.n_train : 16;
    char why[512];
    if (!(r->prompt = malloc((len > 16 ? len : 16) * sizeof *r->prompt)))
        return tg_fail(err, errsize, "--prompt: out of memory");
    if (len > 0 && tg_tokenizer_encode(&r->d.tok, r->s->prompt, len, r->prompt, &n, why, sizeof why))
        return tg_fail(err, errsize, "--prompt: %s", why);
    n = len == 0 && n > r->cfg.context_length ? r->cfg.context_length : n;
    if (len == 0)
        memcpy(r->prompt, r->d.ids, (size_t)n * sizeof *r->prompt);
    r->n_prompt = (int)n;
    return 0;
}

static int build(tg_gpt_run *r, const tg_st_file *f, const tg_trainer_hooks *hooks, volatile sig_atomic_t *stop,
                 char *err, size_t errsize)
{
    tg_gpt_run_settings *s = r->s;
    tg_st_error e;
    char hash[17];
    const char *h, *bt;
    if ((f && adopt_checkpoint_config(r, f, err, errsize)) || (s->resume && adopt_training_settings(r, f, err, errsize))
        || load_data(r, err, errsize))
        return -1;
    snprintf(hash, sizeof hash, "%016" PRIx64, tg_tokens_hash(r->d.ids, r->d.n_ids));
    r->other_data = s->resume && (h = tg_st_meta_get(tg_st_metadata(f), "data_hash")) && strcmp(h, hash) != 0;
    if (s->resume && (bt = tg_st_meta_get(tg_st_metadata(f), "batches")) && strcmp(bt, s->batches) != 0 &&
        !(r->ck_batches = strdup(bt)))
        return tg_fail(err, errsize, "out of memory");
    r->cfg.vocab_size = r->cfg.vocab_size ? r->cfg.vocab_size : r->d.tok.vocab_size;
    if (tg_gpt_config_check(&r->cfg, err, errsize)) {
        char why[512];
        snprintf(why, sizeof why, "%s", err);
        return tg_fail(err, errsize, "invalid model: %s", why);
    }
    if (encode_prompt(r, err, errsize))
        return -1;
    tg_manual_seed(&r->gen, s->seed);
    r->model = tg_gpt_new(&r->cfg, &r->gen);
    if (f && tg_gpt_load(r->model, f, true, &e))
        return tg_fail(err, errsize, "%s", e.msg);
    if (tg_text_windows_init(&r->win, r->d.train, r->d.n_train, r->d.val, r->d.n_val, (int)s->batch,
                             r->cfg.context_length, strcmp(s->batches, "random") ? TG_WINDOWS_SEQUENTIAL
                                                                                 : TG_WINDOWS_RANDOM,
                             s->eval_batches * s->batch, err, errsize))
        return -1;
    tg_optim_kind k = (tg_optim_kind)tg_optim_kind_parse(s->optimizer);
    tg_trainer_config tc = {
        .optim = k == TG_OPTIM_SGD ? tg_sgd_config(s->lr) : k == TG_OPTIM_ADAM ? tg_adam_config(s->lr)
                                                                             : tg_adamw_config(s->lr),
        .sched = {.kind = (tg_lr_kind)tg_lr_kind_parse(s->schedule), .lr = s->lr, .min_lr = s->min_lr,
                  .warmup = s->warmup, .decay_iters = s->steps > s->warmup ? s->steps : s->warmup},
        .steps = s->steps, .clip = s->clip, .eval_every = s->eval_every, .sample_every = s->sample_every,
        .save_every = s->save_every, .save_path = s->save ? s->save : "interrupted.safetensors", .stop = stop,
        .hooks = hooks ? *hooks : (tg_trainer_hooks){0}};
    tc.optim.momentum = s->momentum;
    tc.optim.weight_decay = s->weight_decay;
    tc.hooks.user = r;
    tc.hooks.on_save_meta = run_meta;
    tg_train_model tm = tg_train_model_gpt(r->model);
    tg_batch_source src = tg_text_windows_source(&r->win);
    r->tr = tg_trainer_new(&tm, &src, &r->gen, &tc);
    if ((s->resume && tg_trainer_restore(r->tr, f, err, errsize)) ||
        (s->log && !s->eval_only && tg_trainer_log_open(r->tr, s->log, s->resume != NULL, err, errsize)))
        return -1;
    return 0;
}

int tg_gpt_run_setup(tg_gpt_run *r, tg_gpt_run_settings *s, const tg_trainer_hooks *hooks,
                     volatile sig_atomic_t *stop, char *err, size_t errsize)
{
    *r = (tg_gpt_run){.s = s, .user = hooks ? hooks->user : NULL, .ck_steps = -1};
    r->cfg = (tg_gpt_config){.context_length = (int)s->ctx, .emb_dim = (int)s->emb, .n_heads = (int)s->heads,
                             .n_layers = (int)s->layers, .drop_rate = (float)s->dropout, .qkv_bias = s->qkv_bias};
    const char *ck = s->resume ? s->resume : s->init;
    tg_st_file *f = NULL;
    tg_st_error e;
    if (ck && tg_st_open(ck, &f, &e))
        return tg_fail(err, errsize, "%s", e.msg);
    int rc = build(r, f, hooks, stop, err, errsize);
    tg_st_close(f);
    return rc;
}

void tg_gpt_run_free(tg_gpt_run *r)
{
    tg_trainer_free(r->tr);
    tg_text_windows_free(&r->win);
    tg_gpt_free(r->model);
    tg_text_data_free(&r->d);
    free(r->prompt);
    free(r->ck_batches);
    r->tr = NULL;
    r->model = NULL;
    r->prompt = NULL;
    r->ck_batches = NULL;
}

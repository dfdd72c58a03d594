/*
 * optim/trainer.c — the training loop as a library (see trainer.h): text
 * windows, the step, evaluation, checkpoints, the history, log and plot.
 */
#include "trainer.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        tg_error("tg_trainer", "out of memory");
    return q;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---------------------------------------------------------------- the GPT as a model */

static void module_train(void *self, bool on) { tg_module_train(self, on); }

tg_train_model tg_train_model_module(tg_module *m, tg_token_forward_fn forward)
{
    return (tg_train_model){.self = m, .params = tg_module_params(m), .train = module_train, .forward = forward};
}

static tg_tensor *gpt_forward(void *self, const int32_t *ids, int batch, int tokens)
{
    return tg_gpt_forward(self, ids, batch, tokens);
}

tg_train_model tg_train_model_gpt(tg_gpt *m) { return tg_train_model_module(&m->base, gpt_forward); }

void tg_gpt_checkpoint_meta(const tg_gpt_config *c, const tg_tokenizer *t, tg_st_meta *m)
{
    tg_st_meta_set(m, "format", "tapegrad-gpt");
    tg_gpt_config_to_meta(c, m);
    tg_tokenizer_to_meta(t, m);
}

int tg_gpt_checkpoint_config(const tg_st_file *f, tg_gpt_config *c, tg_tokenizer *t, bool *has_tok, char *err,
                             size_t errsize)
{
    const tg_st_meta *meta = tg_st_metadata(f);
    tg_st_error e;
    *has_tok = false;
    if (!tg_gpt_meta_has_config(meta))
        return 0;
    if (tg_gpt_config_from_meta(c, meta, tg_st_label(f), &e))
        return tg_fail(err, errsize, "%s", e.msg);
    if (!tg_st_meta_get(meta, "tokenizer"))
        return 1;
    if (tg_tokenizer_from_meta(t, meta, tg_st_label(f), &e))
        return tg_fail(err, errsize, "%s", e.msg);
    if (t->vocab_size != c->vocab_size) {
        tg_fail(err, errsize, "%s: its tokenizer has %d symbols but vocab_size is %d", tg_st_label(f), t->vocab_size,
             c->vocab_size);
        tg_tokenizer_free(t);
        return -1;
    }
    *has_tok = true;
    return 1;
}

typedef struct {
    FILE *f;
    const tg_tokenizer *t;
    bool escape;
} sample_printer;

static void print_token(int32_t id, void *ctx)
{
    const sample_printer *sp = ctx;
    tg_tokenizer_print(sp->t, id, sp->f, sp->escape);
    fflush(sp->f);
}

void tg_gpt_print_sample(FILE *f, tg_gpt *m, const tg_tokenizer *t, const char *title, const int32_t *prompt,
                         int n_prompt, int n_new, const tg_sampling *s, uint64_t seed, bool escape)
{
    int32_t *ids = malloc(((size_t)n_prompt + (size_t)n_new) * sizeof *ids);
    if (!ids)
        tg_error("tg_gpt_print_sample", "out of memory");
    memcpy(ids, prompt, (size_t)n_prompt * sizeof *ids);
    sample_printer sp = {f, t, escape};
    fprintf(f, "--- %s (temperature %.1f, top-k %d) ---\n", title, (double)s->temperature, s->top_k);
    for (int i = 0; i < n_prompt; i++)
        print_token(ids[i], &sp);
    tg_generator g;
    tg_manual_seed(&g, seed);
    tg_gpt_generate_with(m, ids, n_prompt, n_new, s, &g, print_token, &sp);
    fprintf(f, "\n---\n");
    fflush(f);
    free(ids);
}

/* ---------------------------------------------------------------- text windows */

static const void *windows_train(void *ctx, int64_t step, tg_generator *g)
{
    tg_text_windows *w = ctx;
    const int B = w->batch, T = w->ctx;
    const int64_t span = w->n[0] - T;   /* >= 1: windows start in [0, span) */
    for (int b = 0; b < B; b++) {
        int64_t s = w->kind == TG_WINDOWS_SEQUENTIAL
                        ? (int64_t)(((uint64_t)step * (uint64_t)B + (uint64_t)b) * (uint64_t)T % (uint64_t)span)
                        : (int64_t)(tg_random_u32(g) % (uint64_t)span);
        memcpy(w->x + (int64_t)b * T, w->tok[0] + s, (size_t)T * sizeof(int32_t));
        memcpy(w->y + (int64_t)b * T, w->tok[0] + s + 1, (size_t)T * sizeof(int32_t));
    }
    w->b = (tg_token_batch){.x = w->x, .y = w->y, .rows = B, .tokens = T};
    return &w->b;
}

static int64_t windows_eval_rows(void *ctx, int split)
{
    tg_text_windows *w = ctx;
    int64_t n = w->n[split], K = w->eval_windows, fit = (n - 1) / w->ctx;
    if (n < w->ctx + 1)
        return 0;
    if (K > fit)
        K = fit;
    return K < 1 ? 1 : K;
}

static const void *windows_eval(void *ctx, int split, int64_t first, int *rows)
{
    tg_text_windows *w = ctx;
    const int T = w->ctx, B = w->batch;
    const int64_t K = windows_eval_rows(ctx, split), n = w->n[split];
    int nb = (int)(K - first < B ? K - first : B);
    for (int b = 0; b < nb; b++) {
        int64_t k = first + b;
        int64_t s = K == 1 ? 0 : k * (n - 1 - T) / (K - 1);
        memcpy(w->x + (int64_t)b * T, w->tok[split] + s, (size_t)T * sizeof(int32_t));
        memcpy(w->y + (int64_t)b * T, w->tok[split] + s + 1, (size_t)T * sizeof(int32_t));
    }
    w->b = (tg_token_batch){.x = w->x, .y = w->y, .rows = nb, .tokens = T};
    *rows = nb;
    return &w->b;
}

static tg_tensor *windows_loss(void *ctx, const tg_train_model *m, const void *batch)
{
    (void)ctx;
    const tg_token_batch *b = batch;
    return tg_cross_entropy(m->forward(m->self, b->x, b->rows, b->tokens), b->y);
}

int tg_text_windows_init(tg_text_windows *w, const int32_t *train, int64_t n_train, const int32_t *val,
                         int64_t n_val, int batch, int ctx, tg_window_kind kind, int64_t eval_windows, char *err,
                         size_t errsize)
{
    memset(w, 0, sizeof *w);
    if (batch < 1 || ctx < 1 || eval_windows < 1)
        return tg_fail(err, errsize, "text windows: batch %d, ctx %d and eval windows %" PRId64 " must be >= 1", batch,
                    ctx, eval_windows);
    if (n_train < (int64_t)ctx + 1)
        return tg_fail(err, errsize, "text windows: the training split has %" PRId64 " tokens, fewer than ctx + 1 = %d",
                    n_train, ctx + 1);
    *w = (tg_text_windows){.tok = {train, val}, .n = {n_train, n_val > 0 ? n_val : 0}, .batch = batch,
                           .ctx = ctx, .kind = kind, .eval_windows = eval_windows};
    w->x = malloc((size_t)batch * (size_t)ctx * sizeof *w->x);
    w->y = malloc((size_t)batch * (size_t)ctx * sizeof *w->y);
    if (!w->x || !w->y) {
        tg_text_windows_free(w);
        return tg_fail(err, errsize, "out of memory for a batch of %d x %d", batch, ctx);
    }
    return 0;
}

void tg_text_windows_free(tg_text_windows *w)
{
    free(w->x);
    free(w->y);
    w->x = w->y = NULL;
}

tg_batch_source tg_text_windows_source(tg_text_windows *w)
{
    return (tg_batch_source){.ctx = w,
                             .train_batch = windows_train,
                             .eval_rows = windows_eval_rows,
                             .eval_batch = windows_eval,
                             .loss = windows_loss,
                             .tokens_per_step = (int64_t)w->batch * w->ctx};
}

/* ---------------------------------------------------------------- text data */

static int encode_file(const tg_tokenizer *t, const char *path, const char *text, size_t len, int32_t *ids,
                       int64_t *n, const char *whose, char *err, size_t errsize)
{
    char why[384];
    if (tg_tokenizer_encode(t, text, len, ids, n, why, sizeof why))
        return tg_fail(err, errsize, "%s: %s (the vocabulary is %s)", path, why, whose);
    return 0;
}

int tg_text_data_load(tg_text_data *d, const char *path, const char *val_path, tg_tok_kind kind, double val_frac,
                      char *err, size_t errsize)
{
    char *text = NULL, *vtext = NULL, why[384];
    size_t len = 0, vlen = 0;
    const bool given_tok = d->tok.vocab_size > 0;
    d->ids = NULL;
    if (tg_text_load(path, &text, &len, err, errsize) ||
        (val_path && tg_text_load(val_path, &vtext, &vlen, err, errsize))) {
        free(text);
        return -1;
    }
    int rc = 0;
    if (!given_tok && kind == TG_TOK_BYTE)
        tg_tokenizer_byte_init(&d->tok);
    else if (!given_tok && tg_tokenizer_char_build(&d->tok, text, len, why, sizeof why))
        rc = tg_fail(err, errsize, "%s: %s", path, why);
    if (!rc && !(d->ids = malloc((len + vlen + 1) * sizeof *d->ids)))
        rc = tg_fail(err, errsize, "%s: out of memory", path);
    int64_t nv = 0;
    if (!rc)
        rc = encode_file(&d->tok, path, text, len, d->ids, &d->n_ids, "the checkpoint's", err, errsize);
    if (!rc && val_path)
        rc = encode_file(&d->tok, val_path, vtext, vlen, d->ids + d->n_ids, &nv,
                         given_tok ? "the checkpoint's" : "the training text's", err, errsize);
    free(text);
    free(vtext);
    if (rc) {
        tg_text_data_free(d);
        return rc;
    }
    d->n_val = val_path ? nv : (int64_t)((double)d->n_ids * val_frac);
    d->n_train = val_path ? d->n_ids : d->n_ids - d->n_val;
    d->train = d->ids;
    d->val = d->ids + d->n_train;
    return 0;
}

void tg_text_data_free(tg_text_data *d)
{
    tg_tokenizer_free(&d->tok);
    free(d->ids);
    d->ids = NULL;
}

uint64_t tg_tokens_hash(const int32_t *ids, int64_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) {
            h ^= ((uint32_t)ids[i] >> (8 * k)) & 0xffu;
            h *= 1099511628211ull;
        }
    return h;
}

int tg_output_path_check(const char *path, char *err, size_t errsize)
{
    char *dir = strdup(path), *slash = dir ? strrchr(dir, '/') : NULL;
    if (!dir)
        return tg_fail(err, errsize, "%s: out of memory", path);
    const char *d = ".";
    if (slash) {
        slash[slash == dir ? 1 : 0] = '\0';
        d = dir;
    }
    struct stat st;
    int rc = 0;
    if (stat(d, &st) != 0 || !S_ISDIR(st.st_mode))
        rc = tg_fail(err, errsize, "%s: the directory '%s' does not exist", path, d);
    else if (access(d, W_OK) != 0)
        rc = tg_fail(err, errsize, "%s: the directory '%s' is not writable", path, d);
    else if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        rc = tg_fail(err, errsize, "%s: is a directory", path);
    free(dir);
    return rc;
}

/* ---------------------------------------------------------------- the trainer */

tg_trainer *tg_trainer_new(const tg_train_model *model, const tg_batch_source *src, tg_generator *gen,
                           const tg_trainer_config *cfg)
{
    if (!model || !model->params || !model->train || !src || !src->train_batch || !src->loss || !gen || !cfg)
        tg_error("tg_trainer_new", "the model (params, train), the source (train_batch, loss), the generator "
                                   "and the config are required");
    tg_lr_schedule_check(&cfg->sched);
    tg_trainer *tr = calloc(1, sizeof *tr);
    if (!tr)
        tg_error("tg_trainer_new", "out of memory");
    tr->model = *model;
    tr->src = *src;
    tr->cfg = *cfg;
    tr->gen = gen;
    tr->opt = tg_optim_new(model->params, &cfg->optim);
    tr->last_loss = NAN;
    tr->saved_step = -1;
    return tr;
}

void tg_trainer_free(tg_trainer *tr)
{
    if (!tr)
        return;
    tg_optim_free(tr->opt);
    free(tr->restored_from);
    free(tr->train_loss);
    free(tr->val_loss);
    free(tr->val_step);
    if (tr->log)
        fclose(tr->log);
    free(tr);
}

static void push_train(tg_trainer *tr, float loss)
{
    if (tr->n_train == tr->cap_train) {
        tr->cap_train = tr->cap_train ? 2 * tr->cap_train : 256;
        tr->train_loss = xrealloc(tr->train_loss, (size_t)tr->cap_train * sizeof *tr->train_loss);
    }
    tr->train_loss[tr->n_train++] = loss;
}

static void push_val(tg_trainer *tr, int64_t step, float loss)
{
    if (tr->n_val == tr->cap_val) {
        tr->cap_val = tr->cap_val ? 2 * tr->cap_val : 64;
        tr->val_loss = xrealloc(tr->val_loss, (size_t)tr->cap_val * sizeof *tr->val_loss);
        tr->val_step = xrealloc(tr->val_step, (size_t)tr->cap_val * sizeof *tr->val_step);
    }
    tr->val_loss[tr->n_val] = loss;
    tr->val_step[tr->n_val++] = step;
}

double tg_trainer_evaluate(tg_trainer *tr, int split)
{
    const tg_batch_source *s = &tr->src;
    int64_t K = s->eval_rows ? s->eval_rows(s->ctx, split) : 0;
    if (K < 1)
        return NAN;
    tr->model.train(tr->model.self, false);
    bool grad = tg_set_grad_enabled(false);
    double total = 0.0;
    for (int64_t k0 = 0; k0 < K;) {
        int nb = 0;
        const void *b = s->eval_batch(s->ctx, split, k0, &nb);
        tg_tensor *loss = s->loss(s->ctx, &tr->model, b);
        total += (double)loss->data[0] * nb;
        tg_tape_reset(NULL);
        k0 += nb > 0 ? nb : 1;
    }
    tg_set_grad_enabled(grad);
    tr->model.train(tr->model.self, true);
    return total / (double)K;
}

static bool has_val(tg_trainer *tr)
{
    return tr->src.eval_rows && tr->src.eval_rows(tr->src.ctx, TG_SPLIT_VAL) > 0;
}

static tg_train_status diverged_in_eval(tg_trainer *tr, double val)
{
    tr->last_loss = val;
    tr->diverged_in_eval = true;
    return TG_TRAIN_DIVERGED;
}

tg_train_status tg_trainer_run(tg_trainer *tr, int64_t until)
{
    const tg_trainer_config *c = &tr->cfg;
    const tg_trainer_hooks *h = &c->hooks;
    const int64_t start = tr->step;
    if (tr->n_train == 0 && !tr->history_from_log)
        tr->first_step = start;
    tr->model.train(tr->model.self, true);
    if (start < until && c->eval_every > 0 && has_val(tr)) {
        tg_train_event e = {.step = start, .lr = NAN, .loss = NAN, .evaluated = true};
        e.val = tg_trainer_evaluate(tr, TG_SPLIT_VAL);
        if (!isfinite(e.val))
            return diverged_in_eval(tr, e.val);
        push_val(tr, start, (float)e.val);
        if (tr->log && start == 0) {
            fprintf(tr->log, "0,,,%.9g,\n", e.val);
            fflush(tr->log);
        }
        if (h->on_eval)
            h->on_eval(h->user, tr, &e);
    }
    if (h->on_sample)
        h->on_sample(h->user, tr, start);
    for (int64_t it = start; it < until; it++) {
        if (c->stop && *c->stop)
            return TG_TRAIN_STOPPED;
        double ts = now_s();
        double lr = tg_lr_at(&c->sched, it);
        tg_optim_set_lr(tr->opt, lr);
        const void *batch = tr->src.train_batch(tr->src.ctx, it, tr->gen);
        tg_tensor *loss = tr->src.loss(tr->src.ctx, &tr->model, batch);
        tg_backward(loss, NULL);
        if (h->on_backward)
            h->on_backward(h->user, tr, it + 1, loss);
        if (c->clip > 0)
            tg_clip_grad_norm(tr->model.params, c->clip);
        tg_optim_step(tr->opt);
        tg_optim_zero_grad(tr->opt);
        tr->last_loss = loss->data[0];
        tg_tape_reset(NULL);
        tr->step = it + 1;
        tr->steps_done++;
        tr->train_seconds += now_s() - ts;
        if (!isfinite(tr->last_loss)) {
            tr->diverged_in_eval = false;
            return TG_TRAIN_DIVERGED;
        }
        push_train(tr, (float)tr->last_loss);
        tg_train_event e = {.step = tr->step, .lr = lr, .loss = tr->last_loss, .val = NAN};
        e.tokens_per_s = (double)(tr->steps_done * tr->src.tokens_per_step) /
                         (tr->train_seconds > 0 ? tr->train_seconds : 1e-9);
        e.evaluated = c->eval_every > 0 && has_val(tr) && (tr->step % c->eval_every == 0 || tr->step == c->steps);
        if (e.evaluated) {
            e.val = tg_trainer_evaluate(tr, TG_SPLIT_VAL);
            if (!isfinite(e.val))
                return diverged_in_eval(tr, e.val);
            push_val(tr, tr->step, (float)e.val);
            if (h->on_eval)
                h->on_eval(h->user, tr, &e);
        }
        if (tr->log) {
            fprintf(tr->log, "%" PRId64 ",%.9g,%.9g,", tr->step, lr, tr->last_loss);
            if (e.evaluated)
                fprintf(tr->log, "%.9g", e.val);
            fprintf(tr->log, ",%.1f\n", e.tokens_per_s);
            fflush(tr->log);
        }
        if (h->on_step)
            h->on_step(h->user, tr, &e);
        if (c->sample_every > 0 && tr->step % c->sample_every == 0 && tr->step < until && h->on_sample)
            h->on_sample(h->user, tr, tr->step);
        if (c->save_every > 0 && tr->step % c->save_every == 0 && tr->step < until &&
            tg_trainer_save(tr, c->save_path, tr->err, sizeof tr->err))
            return TG_TRAIN_ESAVE;
    }
    return TG_TRAIN_DONE;
}

/* ---------------------------------------------------------------- checkpoints */

void tg_meta_set_double(tg_st_meta *m, const char *key, double v)
{
    char buf[32];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    tg_st_meta_set(m, key, buf);
}

/* The generator: "<index> <has_normal> <normal as hex bits> <seed> <624 words in hex>" */
static void rng_to_meta(const tg_generator *g, tg_st_meta *m)
{
    size_t cap = 624 * 9 + 128;
    char *s = malloc(cap);
    if (!s)
        tg_error("tg_trainer_save", "out of memory");
    uint64_t bits;
    memcpy(&bits, &g->next_double_normal, 8);
    int n = snprintf(s, cap, "%d %d %016" PRIx64 " %" PRIu64, g->index, g->has_next_double_normal ? 1 : 0, bits,
                     g->seed);
    for (int i = 0; i < 624; i++)
        n += snprintf(s + n, cap - (size_t)n, " %08" PRIx32, g->state[i]);
    tg_st_meta_set(m, "rng", s);
    free(s);
}

static bool rng_from_meta(tg_generator *g, const char *s)
{
    if (!s)
        return false;
    tg_generator r;
    memset(&r, 0, sizeof r);
    int has, used;
    uint64_t bits;
    if (sscanf(s, "%d %d %16" SCNx64 " %" SCNu64 "%n", &r.index, &has, &bits, &r.seed, &used) != 4)
        return false;
    if (r.index < 0 || r.index > 624 || (has != 0 && has != 1))
        return false;
    s += used;
    for (int i = 0; i < 624; i++) {
        if (sscanf(s, " %8" SCNx32 "%n", &r.state[i], &used) != 1)
            return false;
        s += used;
    }
    if (*s)
        return false;
    r.has_next_double_normal = has;
    memcpy(&r.next_double_normal, &bits, 8);
    *g = r;
    return true;
}

/* A tensor header over an optimizer state entry (borrowed data). */
static tg_tensor state_view(const tg_optim_state *s)
{
    tg_tensor v;
    memset(&v, 0, sizeof v);
    v.data = s->data;
    v.numel = s->numel;
    v.ndim = s->ndim;
    memcpy(v.shape, s->shape, sizeof s->shape);
    v.data_borrowed = true;
    v.node = -1;
    return v;
}

/* Nothing that is not finite reaches a file: the weights, the optimizer state, the last evaluation. */
static int check_finite(const tg_trainer *tr, const char *path, char *err, size_t errsize)
{
    const tg_params *mp = tr->model.params;
    for (int i = 0; i < mp->n; i++)
        for (int64_t k = 0; k < mp->items[i].t->numel; k++)
            if (!isfinite(mp->items[i].t->data[k]))
                return tg_fail(err, errsize, "not saving %s: parameter '%s' holds %g at element %" PRId64
                            " (the run diverged)", path, mp->items[i].name, (double)mp->items[i].t->data[k], k);
    char why[256];
    if (!tg_optim_state_check(tr->opt, why, sizeof why))
        return tg_fail(err, errsize, "not saving %s: the optimizer state is not valid: %s", path, why);
    if (tr->n_val > 0 && !isfinite(tr->val_loss[tr->n_val - 1]))
        return tg_fail(err, errsize, "not saving %s: the evaluation at step %" PRId64 " is %g", path,
                    tr->val_step[tr->n_val - 1], (double)tr->val_loss[tr->n_val - 1]);
    return 0;
}

int tg_trainer_save(tg_trainer *tr, const char *path, char *err, size_t errsize)
{
    tr->save_skipped = tr->restored_from && strcmp(path, tr->restored_from) == 0 && tr->step == tr->restored_step;
    if (tr->save_skipped) /* nothing trained since it was read: it holds this very state */
        return 0;
    if (check_finite(tr, path, err, errsize))
        return -1;
    tg_params all;
    tg_params_init(&all);
    const tg_params *mp = tr->model.params;
    for (int i = 0; i < mp->n; i++)
        tg_params_add(&all, NULL, mp->items[i].name, mp->items[i].t);
    int ns = tg_optim_state_count(tr->opt);
    tg_tensor *views = calloc((size_t)(ns > 0 ? ns : 1), sizeof *views);
    if (!views)
        tg_error("tg_trainer_save", "out of memory");
    for (int i = 0; i < ns; i++) {
        const tg_optim_state *s = tg_optim_state_get(tr->opt, i);
        views[i] = state_view(s);
        tg_params_add(&all, NULL, s->name, &views[i]);
    }
    tg_st_meta meta;
    tg_st_meta_init(&meta);
    if (tr->cfg.hooks.on_save_meta)
        tr->cfg.hooks.on_save_meta(tr->cfg.hooks.user, tr, &meta);
    tg_st_meta_setf(&meta, "step", "%" PRId64, tr->step);
    rng_to_meta(tr->gen, &meta);
    tg_st_error e;
    int rc = tg_st_save(path, &all, &meta, &e);
    tg_st_meta_free(&meta);
    tg_params_free(&all);
    free(views);
    if (rc)
        return tg_fail(err, errsize, "cannot save checkpoint: %s", e.msg);
    tr->saved_step = tr->step;
    return 0;
}

int tg_trainer_restore(tg_trainer *tr, const tg_st_file *f, char *err, size_t errsize)
{
    const char *label = tg_st_label(f);
    const tg_st_meta *meta = tg_st_metadata(f);
    const char *kind = tg_optim_kind_name(tg_optim_get_config(tr->opt)->kind);
    int ns = tg_optim_state_count(tr->opt);
    for (int i = 0; i < ns; i++) {
        const tg_optim_state *s = tg_optim_state_get(tr->opt, i);
        const tg_st_entry *e = tg_st_find(f, s->name);
        if (!e)
            return tg_fail(err, errsize, "%s: no optimizer state '%s' (saved with another optimizer than %s?)", label,
                        s->name, kind);
        if (e->numel != s->numel || e->ndim != s->ndim)
            return tg_fail(err, errsize, "%s: optimizer state '%s' has the wrong shape", label, s->name);
    }
    for (int i = 0; i < tg_st_count(f); i++) {
        const tg_st_entry *e = tg_st_entry_at(f, i);
        if (strncmp(e->name, "optim.", 6) == 0 && !tg_optim_state_find(tr->opt, e->name))
            return tg_fail(err, errsize, "%s: optimizer state '%s' does not fit the optimizer %s", label, e->name, kind);
    }
    const char *st = tg_st_meta_get(meta, "step");
    char *end;
    errno = 0;
    long long step = st ? strtoll(st, &end, 10) : -1;
    if (!st || errno || end == st || *end || step < 0)
        return tg_fail(err, errsize, "%s: metadata \"step\" is missing or invalid", label);
    tg_generator g;
    if (!rng_from_meta(&g, tg_st_meta_get(meta, "rng")))
        return tg_fail(err, errsize, "%s: metadata \"rng\" (generator state) is missing or invalid", label);
    /* The values are read straight into the optimizer's buffers and can only be
     * checked as a whole there, so what they held is kept aside: a read or the
     * final check that fails puts it back, and nothing has changed. */
    int64_t total = 0;
    for (int i = 0; i < ns; i++)
        total += tg_optim_state_get(tr->opt, i)->numel;
    float *kept = malloc((size_t)(total > 0 ? total : 1) * sizeof(float));
    if (!kept)
        tg_error("tg_trainer_restore", "out of memory");
    int64_t at = 0;
    for (int i = 0; i < ns; at += tg_optim_state_get(tr->opt, i)->numel, i++)
        memcpy(kept + at, tg_optim_state_get(tr->opt, i)->data,
               (size_t)tg_optim_state_get(tr->opt, i)->numel * sizeof(float));
    int rc = 0;
    for (int i = 0; i < ns && rc == 0; i++) {
        tg_tensor view = state_view(tg_optim_state_get(tr->opt, i));
        tg_st_error e;
        if (tg_st_read(f, tg_optim_state_get(tr->opt, i)->name, &view, &e))
            rc = tg_fail(err, errsize, "%s", e.msg);
    }
    char why[256];
    if (rc == 0 && !tg_optim_state_check(tr->opt, why, sizeof why))
        rc = tg_fail(err, errsize, "%s: invalid optimizer state: %s", label, why);
    at = 0;
    for (int i = 0; rc != 0 && i < ns; at += tg_optim_state_get(tr->opt, i)->numel, i++)
        memcpy(tg_optim_state_get(tr->opt, i)->data, kept + at,
               (size_t)tg_optim_state_get(tr->opt, i)->numel * sizeof(float));
    free(kept);
    if (rc != 0)
        return rc;
    tr->step = tr->restored_step = step;
    *tr->gen = g;
    free(tr->restored_from);
    if (!(tr->restored_from = strdup(label)))
        tg_error("tg_trainer_restore", "out of memory");
    return 0;
}

/* ---------------------------------------------------------------- the CSV log */

#define LOG_HEADER "step,lr,train_loss,val_loss,tokens_per_s"

static char *read_all(const char *path, size_t *len)
{
    FILE *in = fopen(path, "r");
    if (!in)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *text = malloc(cap);
    for (size_t got = 1; text && got > 0;) {
        if (n + 1 == cap) {
            char *t = realloc(text, cap * 2);
            if (!t) {
                free(text);
                text = NULL;
                break;
            }
            text = t;
            cap *= 2;
        }
        got = fread(text + n, 1, cap - 1 - n, in);
        n += got;
    }
    fclose(in);
    if (text)
        text[n] = '\0';
    *len = n;
    return text;
}

/* Keeps the rows of an existing log up to tr->step (returns their length, 0
 * when it is not a log of ours) and reads them into the history. */
static size_t continue_log(tg_trainer *tr, char *text)
{
    size_t hl = strlen(LOG_HEADER);
    if (strncmp(text, LOG_HEADER, hl) != 0 || text[hl] != '\n')
        return 0;
    size_t keep = hl + 1;
    for (char *line = text + keep; *line;) {
        char *nl = strchr(line, '\n');
        if (!nl)
            break; /* a row cut short (killed mid-write): drop it */
        char *end;
        long long step = strtoll(line, &end, 10);
        if (end == line || *end != ',' || step > tr->step)
            break;
        /* step,lr,train_loss,val_loss,... : the losses into the history */
        char *f = strchr(end + 1, ',');
        if (f && f + 1 < nl && f[1] != ',') {
            if (tr->n_train == 0)
                tr->first_step = step - 1;
            push_train(tr, strtof(f + 1, NULL));
        }
        f = f ? strchr(f + 1, ',') : NULL;
        if (f && f + 1 < nl && f[1] != ',')
            push_val(tr, step, strtof(f + 1, NULL));
        line = nl + 1;
        keep = (size_t)(line - text);
    }
    tr->history_from_log = tr->n_train > 0 || tr->n_val > 0;
    return keep;
}

int tg_trainer_log_open(tg_trainer *tr, const char *path, bool cont, char *err, size_t errsize)
{
    size_t n = 0, keep = 0;
    char *text = cont ? read_all(path, &n) : NULL;
    if (cont && !text && errno == ENOMEM)
        return tg_fail(err, errsize, "out of memory reading the log %s", path);
    if (text)
        keep = continue_log(tr, text);
    char msg[512];
    if (keep && keep != n && tg_write_file(path, text, keep, msg, sizeof msg) != 0) {
        free(text);
        return tg_fail(err, errsize, "cannot rewrite the log to continue it: %s", msg);
    }
    free(text);
    tr->log = fopen(path, keep ? "a" : "w");
    if (!tr->log)
        return tg_fail(err, errsize, "%s: cannot write the log: %s", path, strerror(errno));
    if (!keep)
        fprintf(tr->log, "%s\n", LOG_HEADER);
    return 0;
}

/* ---------------------------------------------------------------- the plot */

int tg_trainer_plot(const tg_trainer *tr, const char *path, char *err, size_t errsize)
{
    if (tr->n_train == 0 && tr->n_val == 0)
        return 0;
    tg_atomic_file f;
    tg_atomic_open(&f, path);
    const double W = 720, H = 420, L = 60, R = 20, Tp = 30, Bm = 45;
    const int64_t first = tr->first_step;
    double ymin = INFINITY, ymax = -INFINITY;
    for (int64_t i = 0; i < tr->n_train; i++)
        if (isfinite(tr->train_loss[i])) {
            ymin = fmin(ymin, tr->train_loss[i]);
            ymax = fmax(ymax, tr->train_loss[i]);
        }
    for (int64_t i = 0; i < tr->n_val; i++)
        if (isfinite(tr->val_loss[i])) {
            ymin = fmin(ymin, tr->val_loss[i]);
            ymax = fmax(ymax, tr->val_loss[i]);
        }
    if (!(ymax > ymin)) {
        ymin = isfinite(ymin) ? ymin - 1 : 0;
        ymax = ymin + 2;
    }
    double x0 = (double)first, x1 = (double)(first + (tr->n_train > 1 ? tr->n_train : 1));
    for (int64_t i = 0; i < tr->n_val; i++)
        x1 = fmax(x1, (double)tr->val_step[i]);
#define PX(s) (L + ((double)(s)-x0) / (x1 - x0) * (W - L - R))
#define PY(v) (Tp + (ymax - (double)(v)) / (ymax - ymin) * (H - Tp - Bm))
    tg_atomic_printf(&f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                         "font-family=\"sans-serif\" "
               "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H);
    tg_atomic_printf(&f, "<text x=\"%.0f\" y=\"18\" font-size=\"14\">loss (nats/token) vs step</text>\n", L);
    for (int k = 0; k <= 4; k++) {
        double v = ymin + (ymax - ymin) * k / 4.0;
        tg_atomic_printf(&f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>", L, PY(v), W - R,
                         PY(v));
        tg_atomic_printf(&f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n", L - 5, PY(v) + 4, v);
        double s = x0 + (x1 - x0) * k / 4.0;
        tg_atomic_printf(&f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n", PX(s), H - Bm + 18, s);
    }
    tg_atomic_printf(&f, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1\" points=\"");
    for (int64_t i = 0; i < tr->n_train; i++)
        if (isfinite(tr->train_loss[i]))
            tg_atomic_printf(&f, "%.1f,%.1f ", PX(first + i + 1), PY(tr->train_loss[i]));
    tg_atomic_printf(&f, "\"/>\n<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\"");
    for (int64_t i = 0; i < tr->n_val; i++)
        if (isfinite(tr->val_loss[i]))
            tg_atomic_printf(&f, "%.1f,%.1f ", PX(tr->val_step[i]), PY(tr->val_loss[i]));
    tg_atomic_printf(&f, "\"/>\n");
    /* val points as dots too (there may be only a few) */
    for (int64_t i = 0; i < tr->n_val; i++)
        if (isfinite(tr->val_loss[i]))
            tg_atomic_printf(&f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"#d62728\"/>", PX(tr->val_step[i]),
                    PY(tr->val_loss[i]));
    tg_atomic_printf(&f, "\n<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">step</text>\n", (L + W - R) / 2, H - 8);
    const double lx = W - R - 230, ly = Tp + 10;
    tg_atomic_printf(&f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#1f77b4\"/>"
               "<text x=\"%.0f\" y=\"%.0f\">train: batch loss (dropout on)</text>\n",
            lx, ly, lx + 20, ly, lx + 26, ly + 4);
    tg_atomic_printf(&f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#d62728\" stroke-width=\"2\"/>"
               "<text x=\"%.0f\" y=\"%.0f\">val: eval loss (dropout off)</text>\n</svg>\n",
            lx, ly + 18, lx + 20, ly + 18, lx + 26, ly + 22);
#undef PX
#undef PY
    if (tg_atomic_commit(&f) != 0)
        return tg_fail(err, errsize, "cannot write the plot: %s", f.msg);
    return 0;
}

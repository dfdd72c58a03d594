/*
 * optim/trainer.h — the training loop as a library: batches, the step,
 * evaluation, callbacks, a stop flag, checkpoints with resume, the loss
 * history, the CSV log and the loss plot. examples/train.c is a command line
 * over it; a program with a model of its own gets all of it too.
 *
 * The library prints nothing, parses no argv and installs no signal handler:
 * the program sets cfg.stop from its handler, and prints from the callbacks.
 *
 *   tg_trainer *tr = tg_trainer_new(&model, &source, &gen, &cfg);
 *   tg_trainer_restore(tr, file, ...);        (optional: continue a run)
 *   tg_trainer_run(tr, steps);                 forward, loss, backward, clip, step
 *   tg_trainer_save(tr, "run.safetensors", ...);
 *
 * The model is anything with a parameter list (state_dict names and order),
 * a train/eval switch and a forward from token ids to logits. The batch
 * source yields the training batch of a step and the evaluation batches of
 * a split, and its loss function turns a batch into a scalar loss: next-token
 * text windows with cross-entropy are built in (tg_text_windows); a
 * sequence-to-sequence model supplies its own batch source and loss (which
 * calls its own forward; the model's forward may then be NULL).
 *
 * Text windows (the built-in source). Training windows are
 * (x, y) = (tokens[s : s+T], tokens[s+1 : s+T+1]) over the training split of
 * N tokens, T = ctx, B = batch.
 *   TG_WINDOWS_RANDOM      row b of every step: s = u32 % (N - T), one 32-bit
 *                          draw of the trainer's generator per row (what
 *                          torch.randint(N - T, (B,)) does with that generator)
 *   TG_WINDOWS_SEQUENTIAL  row b of step i: s = ((i*B + b) * T) mod (N - T),
 *                          from i alone: a run can be reproduced elsewhere.
 * Evaluation (deterministic, no draws): K = min(eval_windows, (N-1)/T), at
 * least 1, windows per split, window k starting at k*(N-1-T)/(K-1) (0 when
 * K == 1), in batches of B; the loss is the mean over all K, dropout off.
 *
 * The data position of a run is its step and its generator state, both in
 * the checkpoint, so a resumed run continues with exactly the batches, the
 * dropout masks and the losses of an uninterrupted one.
 */
#ifndef TG_TRAINER_H
#define TG_TRAINER_H

#include "optim.h"

#include <signal.h>
#include <stdio.h>

/* ---------------------------------------------------------------- the model */

typedef struct {
    void *self;
    const tg_params *params;                        /* trained and saved, in this order */
    void (*train)(void *self, bool on);              /* train (dropout on) / eval mode */
    /* ids (batch, tokens) -> logits (batch, tokens, vocab) on the current tape */
    tg_tensor *(*forward)(void *self, const int32_t *ids, int batch, int tokens);
} tg_train_model;

/* The book's GPTModel as a trainer model. */
tg_train_model tg_train_model_gpt(tg_gpt *m);

/* ---------------------------------------------------------------- batches */

enum { TG_SPLIT_TRAIN = 0, TG_SPLIT_VAL = 1 };

typedef struct {
    void *ctx;
    /* The batch of training step `step` (0-based); may draw from g. Owned by
     * the source, valid until its next call. */
    const void *(*train_batch)(void *ctx, int64_t step, tg_generator *g);
    /* The number of evaluation rows of a split (0: nothing to evaluate), and
     * the batch of rows starting at row `first` (*rows set to its count). */
    int64_t (*eval_rows)(void *ctx, int split);
    const void *(*eval_batch)(void *ctx, int split, int64_t first, int *rows);
    /* The batch's mean loss, a scalar on the current tape. */
    tg_tensor *(*loss)(void *ctx, const tg_train_model *m, const void *batch);
    int64_t tokens_per_step;                         /* for tokens/s */
} tg_batch_source;

/* A batch of next-token windows: x and y (rows, tokens), y = x shifted by one. */
typedef struct {
    const int32_t *x, *y;
    int rows, tokens;
} tg_token_batch;

typedef enum { TG_WINDOWS_RANDOM = 0, TG_WINDOWS_SEQUENTIAL = 1 } tg_window_kind;

typedef struct {
    const int32_t *tok[2];       /* the train and val splits (borrowed) */
    int64_t n[2];
    int batch, ctx;
    tg_window_kind kind;
    int64_t eval_windows;        /* K before capping: e.g. eval_batches * batch */
    int32_t *x, *y;              /* (batch, ctx) */
    tg_token_batch b;
} tg_text_windows;

/* Windows over the splits (val may be empty: n_val 0). The training split
 * needs at least ctx + 1 tokens. Returns 0, or -1 with a reason. */
int tg_text_windows_init(tg_text_windows *w, const int32_t *train, int64_t n_train, const int32_t *val,
                         int64_t n_val, int batch, int ctx, tg_window_kind kind, int64_t eval_windows, char *err,
                         size_t errsize);
void tg_text_windows_free(tg_text_windows *w);
/* The source over w, with cross-entropy of model.forward(x) against y. */
tg_batch_source tg_text_windows_source(tg_text_windows *w);

/* ---------------------------------------------------------------- the trainer */

typedef struct tg_trainer tg_trainer;

/* What a callback is told: after an evaluation (on_eval) or a step (on_step). */
typedef struct {
    int64_t step;                /* steps done */
    double lr, loss;             /* the step's lr and batch loss (on_step) */
    double val;                  /* the evaluation of this step, NAN if none */
    bool evaluated;
    double tokens_per_s;         /* this run's steps, training time only */
} tg_train_event;

typedef struct {
    void *user;
    void (*on_eval)(void *user, tg_trainer *tr, const tg_train_event *e);   /* each val evaluation */
    void (*on_step)(void *user, tg_trainer *tr, const tg_train_event *e);   /* after each step (and its eval) */
    /* once as a run starts (step = where it starts), then every sample_every steps */
    void (*on_sample)(void *user, tg_trainer *tr, int64_t step);
    /* checkpoint metadata: keys it sets keep their place; the trainer then
     * sets "step" and "rng" (replacing or appending) */
    void (*on_save_meta)(void *user, tg_trainer *tr, tg_st_meta *m);
} tg_trainer_hooks;

typedef struct {
    tg_optim_config optim;
    tg_lr_schedule sched;        /* lr of step i = tg_lr_at(&sched, i) */
    int64_t steps;               /* the run's length: the last step evaluates */
    double clip;                 /* clip_grad_norm_ max norm, 0: off */
    int64_t eval_every;          /* evaluate val every N steps and at `steps`; 0: never */
    int64_t sample_every;        /* on_sample every N steps, not at the stop step; 0: never */
    volatile sig_atomic_t *stop; /* non-zero: stop before the next step (may be NULL) */
    tg_trainer_hooks hooks;
} tg_trainer_config;

struct tg_trainer {
    tg_train_model model;
    tg_batch_source src;
    tg_trainer_config cfg;
    tg_generator *gen;           /* borrowed: batches draw from it (and the model's dropout, if it shares it) */
    tg_optim *opt;               /* owned, over model.params */
    int64_t step;                /* steps done */
    double last_loss;
    /* this run */
    int64_t steps_done;
    double train_seconds;
    /* the loss history: train_loss[i] is the batch loss of step first_step + i + 1 */
    float *train_loss;
    int64_t n_train, cap_train, first_step;
    float *val_loss;             /* evaluations, at val_step[i] */
    int64_t *val_step;
    int64_t n_val, cap_val;
    bool history_from_log;       /* the history before this run came from the CSV log */
    FILE *log;
};

/* Builds the optimizer over model.params (config checked by tg_optim_new and
 * tg_lr_schedule_check). The model must outlive the trainer. */
tg_trainer *tg_trainer_new(const tg_train_model *model, const tg_batch_source *src, tg_generator *gen,
                           const tg_trainer_config *cfg);
void tg_trainer_free(tg_trainer *tr);

typedef enum {
    TG_TRAIN_DONE = 0,           /* reached the requested step */
    TG_TRAIN_STOPPED = 1,        /* *cfg.stop was set */
    TG_TRAIN_DIVERGED = 2        /* the loss of step tr->step is not finite (tr->last_loss) */
} tg_train_status;

/* Trains from tr->step up to step `until` (at most cfg.steps is not
 * enforced): first the start evaluation (if any steps are to be made,
 * eval_every > 0 and val has rows) and on_sample(start), then each step
 * lr -> batch -> forward -> loss -> backward -> clip -> optimizer step ->
 * zero_grad, its evaluation when due, the log row, on_step, on_sample. */
tg_train_status tg_trainer_run(tg_trainer *tr, int64_t until);

/* The mean loss over a split's evaluation batches (eval mode, no grad), NAN
 * when the split has none. Changes nothing and draws nothing. */
double tg_trainer_evaluate(tg_trainer *tr, int split);

/* A checkpoint: the model's parameters under their names, the optimizer
 * state ("optim.*"), and in __metadata__ the hook's keys, "step" and "rng"
 * (the generator's state). Written atomically. Returns 0, or -1 with a
 * one-line reason. */
int tg_trainer_save(tg_trainer *tr, const char *path, char *err, size_t errsize);
/* Continues a run from a checkpoint saved by tg_trainer_save (the weights
 * are loaded by the caller, who knows the model's format): the optimizer
 * state, the step and the generator. Everything is checked before anything
 * changes. Returns 0, or -1 with a one-line reason naming the file. */
int tg_trainer_restore(tg_trainer *tr, const tg_st_file *f, char *err, size_t errsize);

/* The CSV log "step,lr,train_loss,val_loss,tokens_per_s", a row per step
 * (val_loss on eval steps). With cont, an existing log of ours is continued:
 * its rows up to tr->step are kept (later ones dropped, the file rewritten
 * atomically) and read into the history. Returns 0, or -1 with a reason. */
int tg_trainer_log_open(tg_trainer *tr, const char *path, bool cont, char *err, size_t errsize);

/* The loss history as an SVG (batch loss per step, evaluations as dots),
 * written atomically. Nothing is written for an empty history. */
int tg_trainer_plot(const tg_trainer *tr, const char *path, char *err, size_t errsize);

/* Metadata helpers: a double as the shortest text that reads back exactly
 * (0.003, not 0.0030000000000000001), as Python's repr writes it. */
void tg_meta_set_double(tg_st_meta *m, const char *key, double v);

#endif /* TG_TRAINER_H */

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

/* Any module (nn.h's tg_module tree) with a token forward: its parameters
 * (tg_module_params, state_dict order) and train/eval (tg_module_train) come
 * from the tree; forward gets the module as self. */
typedef tg_tensor *(*tg_token_forward_fn)(void *self, const int32_t *ids, int batch, int tokens);
tg_train_model tg_train_model_module(tg_module *m, tg_token_forward_fn forward);
/* The book's GPTModel as a trainer model. */
tg_train_model tg_train_model_gpt(tg_gpt *m);
/* A GPT checkpoint's metadata: "format" = "tapegrad-gpt", the config (the
 * book's cfg keys) and the tokenizer ("tokenizer", "vocab"). */
void tg_gpt_checkpoint_meta(const tg_gpt_config *c, const tg_tokenizer *t, tg_st_meta *m);
/* Reads them back. Returns 1 with *c (and *t, *has_tok when the file has a
 * tokenizer, whose size must be the config's vocab_size), 0 when the file
 * has no config (weights saved from PyTorch, say), -1 with a reason. */
int tg_gpt_checkpoint_config(const tg_st_file *f, tg_gpt_config *c, tg_tokenizer *t, bool *has_tok, char *err,
                             size_t errsize);

/* A sample, printed to f: "--- title (temperature T, top-k K) ---", the
 * prompt's text, n_new tokens of tg_gpt_generate_with (a generator seeded
 * with seed, so that printing a sample changes no other draw), "---".
 * With escape (pass isatty), control bytes print as \xNN (tg_write_text). */
void tg_gpt_print_sample(FILE *f, tg_gpt *m, const tg_tokenizer *t, const char *title, const int32_t *prompt,
                         int n_prompt, int n_new, const tg_sampling *s, uint64_t seed, bool escape);

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

/* ---------------------------------------------------------------- text data */

typedef struct {
    tg_tokenizer tok;
    int32_t *ids;                /* the training text's n_ids tokens, then the validation text's */
    int64_t n_ids;
    const int32_t *train, *val;  /* the splits, into ids */
    int64_t n_train, n_val;
} tg_text_data;

/* Reads and encodes the training text at path (tg_text_load: a regular file
 * of at most 1 GiB). The tokenizer is d->tok when it has a vocabulary (e.g.
 * from a checkpoint; set it before the call), else built from the text
 * (kind). Validation: the text at val_path encoded with that vocabulary (a
 * character outside it is an error naming it and its offset), else the last
 * val_frac of the tokens. Returns 0, or -1 with a reason naming the file. */
int tg_text_data_load(tg_text_data *d, const char *path, const char *val_path, tg_tok_kind kind, double val_frac,
                      char *err, size_t errsize);
void tg_text_data_free(tg_text_data *d);
/* FNV-1a over token ids (4 bytes each, little end first): tells whether a run has the same data. */
uint64_t tg_tokens_hash(const int32_t *ids, int64_t n);

/* An output file must be creatable: its directory exists and is writable and
 * path is not a directory. Returns 0, or -1 with "<path>: <reason>". */
int tg_output_path_check(const char *path, char *err, size_t errsize);

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
    /* after each step's backward (step: the one being made, from 1), before
     * clipping and the optimizer step: the step's tape and gradients are all
     * there, for debugging (the graph, gradient norms, tg_register_hook) */
    void (*on_backward)(void *user, tg_trainer *tr, int64_t step, tg_tensor *loss);
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
    int64_t save_every;          /* a checkpoint to save_path every N steps, not at the stop step; 0: never */
    const char *save_path;
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
    int64_t saved_step;          /* the step of the last checkpoint this trainer wrote, -1: none */
    char *restored_from;         /* the checkpoint tg_trainer_restore read (its label), and its step */
    int64_t restored_step;
    bool save_skipped;           /* the last tg_trainer_save found nothing to write (see there) */
    bool diverged_in_eval;       /* TG_TRAIN_DIVERGED: the evaluation (in last_loss), not the batch loss */
    char err[512];               /* TG_TRAIN_ESAVE: the reason */
};

/* Builds the optimizer over model.params (config checked by tg_optim_new and
 * tg_lr_schedule_check). The model must outlive the trainer. */
tg_trainer *tg_trainer_new(const tg_train_model *model, const tg_batch_source *src, tg_generator *gen,
                           const tg_trainer_config *cfg);
void tg_trainer_free(tg_trainer *tr);

typedef enum {
    TG_TRAIN_DONE = 0,           /* reached the requested step */
    TG_TRAIN_STOPPED = 1,        /* *cfg.stop was set */
    TG_TRAIN_DIVERGED = 2,       /* the loss or the evaluation of step tr->step is not finite (tr->last_loss) */
    TG_TRAIN_ESAVE = 3           /* a periodic checkpoint could not be written (tr->err); the old one stays */
} tg_train_status;

/* Trains from tr->step up to step `until`: first the start evaluation (if
 * any steps are to be made, eval_every > 0 and val has rows; logged as the
 * row of step 0 when the run starts there) and on_sample(start), then each
 * step lr -> batch -> forward -> loss -> backward (on_backward) -> clip -> optimizer step
 * -> zero_grad, its evaluation when due, the log row, on_step, on_sample,
 * the periodic checkpoint. A loss or an evaluation that is not finite stops
 * the run at once (TG_TRAIN_DIVERGED) before anything is saved. */
tg_train_status tg_trainer_run(tg_trainer *tr, int64_t until);

/* The mean loss over a split's evaluation batches (eval mode, no grad), NAN
 * when the split has none. Changes nothing and draws nothing. */
double tg_trainer_evaluate(tg_trainer *tr, int split);

/* A checkpoint: the model's parameters under their names, the optimizer
 * state ("optim.*"), and in __metadata__ the hook's keys, "step" and "rng"
 * (the generator's state). Written atomically, and only when every weight
 * and optimizer moment is finite and so is the last evaluation: NaN or Inf
 * is never written (the file on disk stays as it was). Saving back to the
 * checkpoint a resumed run came from, with no step trained since, writes
 * nothing (save_skipped): the file is left byte for byte as it was. Returns
 * 0, or -1 with a one-line reason. */
int tg_trainer_save(tg_trainer *tr, const char *path, char *err, size_t errsize);
/* Continues a run from a checkpoint saved by tg_trainer_save (the weights
 * are loaded by the caller, who knows the model's format): the optimizer
 * state, the step and the generator. Everything is checked before anything
 * changes. Returns 0, or -1 with a one-line reason naming the file. */
int tg_trainer_restore(tg_trainer *tr, const tg_st_file *f, char *err, size_t errsize);

/* The CSV log "step,lr,train_loss,val_loss,tokens_per_s", a row per step
 * (val_loss on eval steps; the start evaluation of a run from step 0 is the
 * row "0,,,val,"). With cont, an existing log of ours is continued: its rows
 * up to tr->step are kept (later ones dropped, the file rewritten
 * atomically) and read into the history, so that the plot shows the whole
 * run (history_from_log). Returns 0, or -1 with a reason. */
int tg_trainer_log_open(tg_trainer *tr, const char *path, bool cont, char *err, size_t errsize);

/* The loss history as an SVG (batch loss per step, evaluations as dots),
 * written atomically. Nothing is written for an empty history. */
int tg_trainer_plot(const tg_trainer *tr, const char *path, char *err, size_t errsize);

/* Metadata helpers: a double as the shortest text that reads back exactly
 * (0.003, not 0.0030000000000000001), as Python's repr writes it. */
void tg_meta_set_double(tg_st_meta *m, const char *key, double v);

#endif /* TG_TRAINER_H */

/*
 * optim/gpt_run.h — a next-token training run of the book's GPTModel on a
 * text file, set up from one settings struct: the checkpoint it continues
 * (resume) or starts from (init) and how the settings agree with it, the
 * data, the model and its weights, the text windows, the trainer and the
 * checkpoint's metadata. build/train is a command line over it: its flags
 * fill the settings, it prints; this file prints nothing and parses no argv.
 * Settings are named, and errors worded, as train's flags (--emb, --ctx), so
 * that a message says what to change.
 *
 *   tg_gpt_run_settings s = {...};             (every field set: train's defaults)
 *   tg_gpt_run r;
 *   if (tg_gpt_run_check(&s, err, n) || tg_gpt_run_setup(&r, &s, &hooks, &stop, err, n))
 *       ...                                     (r's facts, e.g. r.other_data, hold even then)
 *   tg_trainer_run(r.tr, s.steps);
 *   tg_gpt_run_free(&r);
 *
 * A checkpoint it saves holds the weights (the book's state_dict names), the
 * optimizer state, and in its metadata the config, the tokenizer, the step,
 * the training settings (optimizer, lr, lr_schedule, steps, seed, batches,
 * weight_decay, momentum, warmup, min_lr, clip, batch, val_frac), the data's
 * hash and the generator.
 */
#ifndef TG_GPT_RUN_H
#define TG_GPT_RUN_H

#include "trainer.h"

typedef struct {
    /* the model: the book's cfg (vocab_size: the tokenizer's); an init or
     * resume checkpoint's config wins over those not given */
    long layers, heads, emb, ctx;
    double dropout;
    bool qkv_bias;
    /* the data; tokenizer "char" | "byte" */
    const char *data, *val_data, *tokenizer;
    /* the training settings, in the checkpoint: a resume takes those not
     * given (all but the seed) from it. optimizer "sgd" | "adam" | "adamw",
     * schedule "const" | "cosine", batches "random" | "sequential" */
    const char *optimizer, *schedule, *batches;
    double lr, weight_decay, momentum, min_lr, clip, val_frac;
    long steps, warmup, batch;
    uint64_t seed;
    /* evaluation (eval_batches x batch windows a split), samples, checkpoints
     * (save: tg_trainer_config.save_path; NULL: "interrupted.safetensors") */
    long eval_every, eval_batches, sample_every, save_every;
    const char *prompt, *save, *resume, *init, *log;
    bool eval_only;              /* no log is opened */
    /* whether the caller fixed the setting of that flag ("--emb"): a given
     * model setting must agree with the checkpoint's, a given training one
     * stays on resume (NULL: none is given) */
    bool (*given)(const char *flag);
} tg_gpt_run_settings;

typedef struct {
    tg_gpt_run_settings *s;      /* borrowed; a resume fills in the settings not given */
    tg_text_data d;
    tg_gpt_config cfg;
    tg_gpt *model;
    tg_generator gen;            /* seeded with s->seed: draws the weights, then dropout and random batches */
    tg_text_windows win;
    tg_trainer *tr;              /* its hooks get this tg_gpt_run as user */
    void *user;                  /* the user of the hooks given to tg_gpt_run_setup */
    int32_t *prompt;             /* the samples' start: the prompt's tokens, else the data's first 16 (at most ctx) */
    int n_prompt;
    /* facts about the checkpoint a caller may tell, set as they are found (also when the setup then fails) */
    long ck_steps;               /* resume: the checkpoint run's steps (-1: not known yet) */
    bool other_data;             /* resume: the data's hash is not the checkpoint run's */
    char *ck_batches;            /* resume: the checkpoint's batches when they differ from s->batches */
} tg_gpt_run;

/* The settings a run needs (data; not both resume and init; eval_only: one of them) and the constraints
 * between them (checked again after a resume fills some in). Returns 0, or -1 with a reason. */
int tg_gpt_run_check(const tg_gpt_run_settings *s, char *err, size_t errsize);

/* The checkpoint (s->resume, else s->init) first: it may fix the config, the
 * tokenizer and, resuming, the training settings not given; then the data
 * (in the checkpoint's vocabulary, if it has one, long enough for the
 * context), the prompt, the model and its weights, the windows, the trainer
 * (its hooks: hooks, may be NULL, with on_save_meta replaced by this run's
 * metadata), its restored state and the log. The settings must have passed
 * tg_gpt_run_check. Returns 0, or -1 with a one-line reason; free r either way. */
int tg_gpt_run_setup(tg_gpt_run *r, tg_gpt_run_settings *s, const tg_trainer_hooks *hooks,
                     volatile sig_atomic_t *stop, char *err, size_t errsize);
void tg_gpt_run_free(tg_gpt_run *r);

#endif /* TG_GPT_RUN_H */

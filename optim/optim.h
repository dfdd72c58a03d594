/*
 * optim/optim.h — optimizers, gradient clipping and learning-rate schedules:
 * the optim layer's public contract.
 *
 * Semantics are PyTorch 1.13's single-tensor (non-foreach) implementations,
 * operation for operation in float32, with hyperparameters held as doubles
 * like torch's Python floats (each scalar is rounded to float where torch's
 * kernel rounds it):
 *
 *   SGD   (torch.optim.SGD)    d = g (+ wd*p)
 *                              momentum: buf = d on a parameter's first step,
 *                                        then buf = buf*m + (1-dampening)*d;
 *                                        d = nesterov ? d + m*buf : buf
 *                              p = p + (-lr)*d
 *   Adam  (torch.optim.Adam)   g = g + wd*p                     (coupled decay)
 *   AdamW (torch.optim.AdamW)  p = p * (1 - lr*wd)              (decoupled decay)
 *         both then:           m = m*b1 + (1-b1)*g
 *                              v = v*b2 + ((1-b2)*g)*g
 *                              vmax = max(vmax, v)              (amsgrad; use vmax below)
 *                              step_size = lr / (1 - b1^t)
 *                              denom = sqrt(v) / sqrt(1 - b2^t) + eps
 *                              p = p + ((-step_size)*m) / denom
 *
 * t is a per-parameter step count (torch keeps state['step'] per parameter).
 * A parameter is skipped by step() — no update, no state change, its t does
 * not advance — when its requires_grad is false or its grad is NULL (torch
 * skips parameters whose .grad is None).
 *
 * Memory: state is flat. Each moment (exp_avg, exp_avg_sq, max_exp_avg_sq,
 * momentum_buffer) is ONE contiguous float buffer covering all parameters in
 * list order; parameter i owns [offset_i, offset_i + numel_i). step() loops
 * over parameters with that offset and never allocates.
 *
 * A training step:
 *   tg_optim_set_lr(o, tg_lr_at(&sched, it));
 *   loss = forward(...); tg_backward(loss, NULL);
 *   if (clip > 0) tg_clip_grad_norm(&params, clip);
 *   tg_optim_step(o); tg_optim_zero_grad(o); tg_tape_reset(NULL);
 */
#ifndef TG_OPTIM_H
#define TG_OPTIM_H

#include "../nn/nn.h"

/* ---------------------------------------------------------------- config */

typedef enum { TG_OPTIM_SGD = 0, TG_OPTIM_ADAM = 1, TG_OPTIM_ADAMW = 2 } tg_optim_kind;

typedef struct {
    tg_optim_kind kind;
    double lr;
    double weight_decay;   /* SGD, Adam: added to the grad; AdamW: decoupled */
    /* SGD only */
    double momentum;
    double dampening;
    bool nesterov;         /* needs momentum > 0 and dampening == 0, like torch */
    /* Adam / AdamW only */
    double beta1, beta2;
    double eps;
    bool amsgrad;
} tg_optim_config;

/* Configs filled with torch's defaults for the given lr; change fields after.
 *   SGD  : momentum 0, dampening 0, nesterov false, weight_decay 0
 *   Adam : betas (0.9, 0.999), eps 1e-8, weight_decay 0,    amsgrad false
 *   AdamW: betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2, amsgrad false
 * (torch's default lr is 1e-3 for Adam/AdamW; SGD has none.) */
tg_optim_config tg_sgd_config(double lr);
tg_optim_config tg_adam_config(double lr);
tg_optim_config tg_adamw_config(double lr);
/* "sgd" | "adam" | "adamw" and back; tg_optim_kind_parse returns -1 if unknown. */
const char *tg_optim_kind_name(tg_optim_kind k);
int tg_optim_kind_parse(const char *s);

/* ---------------------------------------------------------------- optimizer */

typedef struct tg_optim tg_optim;

/* Builds an optimizer over every tensor in params (names and tensor pointers
 * are copied: the list may be freed afterwards; the tensors must outlive the
 * optimizer). A tensor listed twice (tied weights) is taken once, under its
 * first name, as torch's model.parameters() does. For a list from
 * tg_module_params, it records the module's generation: after a module of
 * that tree is replaced or added (its old tensors are gone), step and
 * zero_grad stop with tg_error instead of touching them; build optimizers
 * after the swaps. Invalid hyperparameters
 * stop with tg_error("tg_optim_new", ...) where torch raises: lr < 0,
 * momentum < 0, weight_decay < 0, eps < 0, betas outside [0, 1), nesterov
 * without momentum or with dampening. */
tg_optim *tg_optim_new(const tg_params *params, const tg_optim_config *cfg);
void tg_optim_free(tg_optim *o);

/* One update of every parameter that has a grad (see above). */
void tg_optim_step(tg_optim *o);
/* grad := 0 for every parameter that has a grad buffer (torch's
 * zero_grad(set_to_none=False)); buffers are kept, so no malloc next step. */
void tg_optim_zero_grad(tg_optim *o);

/* The learning rate used by the next step (schedules set it every step). */
void tg_optim_set_lr(tg_optim *o, double lr);
double tg_optim_get_lr(const tg_optim *o);
/* The config the optimizer runs with (lr as last set). */
const tg_optim_config *tg_optim_get_config(const tg_optim *o);
int tg_optim_num_params(const tg_optim *o);

/* ---------------------------------------------------------------- state
 * The optimizer state as a list of named float views into its flat buffers,
 * for checkpoints. Entry names, for each parameter name P in list order,
 * grouped by kind in this order:
 *   "optim.step.P"             0-d  per-parameter step count t, a float as
 *                                   torch's state['step'] (exact to 2^24)
 *   "optim.momentum_buffer.P"  P's shape   SGD with momentum != 0
 *   "optim.exp_avg.P"          P's shape   Adam, AdamW
 *   "optim.exp_avg_sq.P"       P's shape   Adam, AdamW
 *   "optim.max_exp_avg_sq.P"   P's shape   Adam, AdamW with amsgrad
 * The set of names depends only on the kind, momentum != 0 and amsgrad, so
 * a checkpoint's names tell whether it fits an optimizer. (SGD's momentum
 * buffer counts as unset — torch's None — while its step is 0.)
 * Hyperparameters are not state: store the config separately if needed.
 *
 * Save: for each entry, write data[0..numel). Restore: build an optimizer
 * with the same params and config, then copy each saved array into the
 * entry's data (same numel) and call tg_optim_state_check(). With the
 * weights restored too, the run then continues bit-identically to the
 * uninterrupted one (tests/test_optim.c checks this). */
typedef enum {
    TG_STATE_STEP = 0,         /* a step count: an integer in [0, 2^24] */
    TG_STATE_MOMENT,           /* exp_avg, momentum_buffer: any finite value */
    TG_STATE_SECOND_MOMENT     /* exp_avg_sq, max_exp_avg_sq: finite and >= 0 */
} tg_optim_state_kind;
typedef struct {
    const char *name;          /* owned by the optimizer */
    float *data;               /* writable view into the flat buffer */
    int64_t numel;
    int ndim;                  /* 0 for steps, else the parameter's */
    int shape[TG_MAX_DIMS];
    tg_optim_state_kind kind;  /* what the values are (the checks go by it, not by the name) */
} tg_optim_state;

int tg_optim_state_count(const tg_optim *o);
const tg_optim_state *tg_optim_state_get(const tg_optim *o, int i);     /* 0 <= i < count */
const tg_optim_state *tg_optim_state_find(const tg_optim *o, const char *name); /* NULL if absent */
/* Validates state after a restore, entry by entry by its kind (whatever the
 * order or names): every step count an integer in [0, 2^24], every value
 * finite, second moments >= 0, and the optimizer's module tree unchanged
 * since it was built (no swap: see tg_module_generation). Returns true if
 * fine; otherwise false with a one-line reason naming the entry in msg. */
bool tg_optim_state_check(const tg_optim *o, char *msg, size_t size);
/* The largest per-parameter step count (the number of step() calls for a
 * model whose parameters all get grads every step). */
int64_t tg_optim_step_count(const tg_optim *o);

/* ---------------------------------------------------------------- clipping
 * torch.nn.utils.clip_grad_norm_(params, max_norm) with norm_type 2: over
 * every parameter whose grad is not NULL, total = ||(||g_1||, ||g_2||, ...)||,
 * coef = max_norm / (total + 1e-6); if coef < 1 every grad is scaled by coef
 * (a NaN total makes every grad NaN, as torch's clamp(coef, max=1) does). A
 * tensor listed twice (tied weights) counts and is scaled once, like torch's
 * model.parameters(). Returns the total norm (before clipping). max_norm
 * must be > 0. */
float tg_clip_grad_norm(const tg_params *params, double max_norm);

/* The k largest per-parameter gradient norms (L2, summed in double), largest
 * first: out[i] is the index into params and norms[i] its norm. Parameters
 * without a grad are skipped, a NaN norm counts as the largest, and a tensor
 * listed twice (tied weights) appears once, at its first index, as in
 * tg_clip_grad_norm. Returns how many were written (<= k). Allocates nothing. */
int tg_grad_norms_top(const tg_params *params, int k, int *out, double *norms);

/* ---------------------------------------------------------------- schedules
 * Learning rate at iteration it (0-based: the lr of the it-th step), exactly
 * nanoGPT's get_lr (train.py):
 *   it < warmup                  lr * (it + 1) / (warmup + 1)      linear warmup
 *   TG_LR_CONST, it >= warmup    lr
 *   TG_LR_COSINE:
 *     it > decay_iters           min_lr
 *     otherwise                  r = (it - warmup) / (decay_iters - warmup)
 *                                min_lr + 0.5 * (1 + cos(pi * r)) * (lr - min_lr)
 * warmup 0 means no warmup. Usually decay_iters = the total number of steps.
 * If decay_iters == warmup, r is taken as 0 at it == warmup (nanoGPT would
 * divide by zero there). Computed in double like Python. */
typedef enum { TG_LR_CONST = 0, TG_LR_COSINE = 1 } tg_lr_kind;

typedef struct {
    tg_lr_kind kind;
    double lr;             /* peak lr (after warmup) */
    double min_lr;         /* cosine only: the floor */
    int64_t warmup;        /* warmup iterations, >= 0 */
    int64_t decay_iters;   /* cosine only: where the decay reaches min_lr, >= warmup */
} tg_lr_schedule;

/* Checks a schedule: lr > 0, 0 <= min_lr <= lr, warmup >= 0, and for cosine
 * decay_iters >= warmup; tg_error("tg_lr_schedule", ...) otherwise. */
void tg_lr_schedule_check(const tg_lr_schedule *s);
double tg_lr_at(const tg_lr_schedule *s, int64_t it);
/* "const" | "cosine" and back; parse returns -1 if unknown. */
const char *tg_lr_kind_name(tg_lr_kind k);
int tg_lr_kind_parse(const char *s);

#endif /* TG_OPTIM_H */

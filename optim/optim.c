/*
 * optim/optim.c — SGD, Adam and AdamW over a parameter list, with flat state,
 * and clip_grad_norm_. The update formulas (and their float32 operation
 * order, which follows torch 1.13's _single_tensor_sgd / _single_tensor_adam
 * / _single_tensor_adamw and the ATen CPU kernels they call) are in optim.h.
 */
#include "optim.h"

#include "../tensor/kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Flat moment buffers, by kind: SGD uses slot 0 (momentum_buffer); Adam and
 * AdamW use 0 (exp_avg), 1 (exp_avg_sq) and 2 (max_exp_avg_sq, amsgrad). */
enum { MOM_BUF = 0, EXP_AVG = 0, EXP_AVG_SQ = 1, MAX_EXP_AVG_SQ = 2, N_SLOTS = 3 };

/* The per-parameter constants of one step, computed once before the loop. */
typedef struct {
    bool active;         /* requires grad and has one */
    bool first;          /* SGD: the momentum buffer starts from d_p */
    float neg_step_size; /* Adam: -(lr / bias_correction1) */
    float bc2_sqrt;      /* Adam: sqrt(bias_correction2) */
} param_step;

struct tg_optim {
    tg_optim_config cfg;
    int n;                 /* parameters */
    tg_tensor **t;         /* [n] borrowed */
    int64_t *off;          /* [n] offset of parameter i in every flat buffer */
    int64_t total;         /* sum of numel */
    float *steps;          /* [n] per-parameter step count (torch's state['step']) */
    param_step *ps;        /* [n] the current step's per-parameter constants */
    float *slot[N_SLOTS];  /* flat [total] buffers, NULL when unused */
    tg_optim_state *st;    /* state entries (views), names owned */
    int n_st;
    const tg_module *module;   /* the module the parameter list came from, or NULL */
    uint64_t generation;       /* its generation then */
};

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        tg_error("tg_optim_new", "out of memory");
    return p;
}

/* ---------------------------------------------------------------- configs */

tg_optim_config tg_sgd_config(double lr)
{
    return (tg_optim_config){.kind = TG_OPTIM_SGD, .lr = lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
}

tg_optim_config tg_adam_config(double lr)
{
    return (tg_optim_config){.kind = TG_OPTIM_ADAM, .lr = lr, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
}

tg_optim_config tg_adamw_config(double lr)
{
    tg_optim_config c = tg_adam_config(lr);
    c.kind = TG_OPTIM_ADAMW;
    c.weight_decay = 1e-2;
    return c;
}

static const char *const kind_names[] = {"sgd", "adam", "adamw"};

const char *tg_optim_kind_name(tg_optim_kind k)
{
    return (unsigned)k < 3 ? kind_names[k] : "?";
}

int tg_optim_kind_parse(const char *s)
{
    for (int i = 0; i < 3; i++)
        if (s && strcmp(s, kind_names[i]) == 0)
            return i;
    return -1;
}

static void check_config(const tg_optim_config *c)
{
    const char *op = "tg_optim_new";
    if ((unsigned)c->kind > TG_OPTIM_ADAMW)
        tg_error(op, "unknown optimizer kind %d", (int)c->kind);
    if (!(c->lr >= 0))
        tg_error(op, "invalid learning rate %g (must be >= 0)", c->lr);
    if (!(c->weight_decay >= 0))
        tg_error(op, "invalid weight_decay %g (must be >= 0)", c->weight_decay);
    if (c->kind == TG_OPTIM_SGD) {
        if (!(c->momentum >= 0))
            tg_error(op, "invalid momentum %g (must be >= 0)", c->momentum);
        if (c->nesterov && (c->momentum <= 0 || c->dampening != 0))
            tg_error(op, "nesterov momentum requires a momentum > 0 and zero dampening (momentum %g, dampening %g)",
                     c->momentum, c->dampening);
    } else {
        if (!(c->eps >= 0))
            tg_error(op, "invalid eps %g (must be >= 0)", c->eps);
        if (!(c->beta1 >= 0 && c->beta1 < 1))
            tg_error(op, "invalid beta1 %g (must be in [0, 1))", c->beta1);
        if (!(c->beta2 >= 0 && c->beta2 < 1))
            tg_error(op, "invalid beta2 %g (must be in [0, 1))", c->beta2);
    }
}

/* ---------------------------------------------------------------- construction */

static char *cat3(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = xcalloc(la + lb + lc + 1, 1);
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc);
    return s;
}

/* Appends one entry per parameter for a view kind ("exp_avg") over buf
 * (steps when buf is the steps array: 0-d entries). */
static void add_entries(tg_optim *o, const char **names, const char *kind, float *buf, tg_optim_state_kind what)
{
    const bool is_steps = what == TG_STATE_STEP;
    for (int i = 0; i < o->n; i++) {
        tg_optim_state *e = &o->st[o->n_st++];
        e->name = cat3("optim.", kind, names[i]);
        e->kind = what;
        if (is_steps) {
            e->data = &buf[i];
            e->numel = 1;
            e->ndim = 0;
        } else {
            const tg_tensor *t = o->t[i];
            e->data = buf + o->off[i];
            e->numel = t->numel;
            e->ndim = t->ndim;
            memcpy(e->shape, t->shape, sizeof e->shape);
        }
    }
}

tg_optim *tg_optim_new(const tg_params *params, const tg_optim_config *cfg)
{
    check_config(cfg);
    tg_optim *o = xcalloc(1, sizeof *o);
    o->cfg = *cfg;
    o->t = xcalloc((size_t)params->n, sizeof *o->t);
    o->off = xcalloc((size_t)params->n, sizeof *o->off);
    o->steps = xcalloc((size_t)params->n, sizeof *o->steps);
    o->ps = xcalloc((size_t)params->n, sizeof *o->ps);
    o->module = params->module;
    o->generation = params->generation;
    const char **names = xcalloc((size_t)params->n, sizeof *names);
    for (int i = 0; i < params->n; i++) {
        tg_tensor *t = params->items[i].t;
        bool dup = false;   /* a tied tensor listed twice is updated once, like model.parameters() */
        for (int k = 0; k < o->n && !dup; k++)
            dup = o->t[k] == t;
        if (dup)
            continue;
        names[o->n] = params->items[i].name;
        o->t[o->n] = t;
        o->off[o->n] = o->total;
        o->total += t->numel;
        o->n++;
    }
    int n_slots = 0;
    const char *slot_names[N_SLOTS] = {0};
    if (cfg->kind == TG_OPTIM_SGD) {
        if (cfg->momentum != 0)
            slot_names[n_slots++] = "momentum_buffer.";
    } else {
        slot_names[n_slots++] = "exp_avg.";
        slot_names[n_slots++] = "exp_avg_sq.";
        if (cfg->amsgrad)
            slot_names[n_slots++] = "max_exp_avg_sq.";
    }
    for (int s = 0; s < n_slots; s++)
        o->slot[s] = xcalloc((size_t)o->total, sizeof(float));

    o->st = xcalloc((size_t)o->n * (size_t)(1 + n_slots), sizeof *o->st);
    add_entries(o, names, "step.", o->steps, TG_STATE_STEP);
    for (int s = 0; s < n_slots; s++)
        add_entries(o, names, slot_names[s], o->slot[s],
                    s == EXP_AVG_SQ || s == MAX_EXP_AVG_SQ ? TG_STATE_SECOND_MOMENT : TG_STATE_MOMENT);
    free(names);
    return o;
}

void tg_optim_free(tg_optim *o)
{
    if (!o)
        return;
    for (int i = 0; i < o->n_st; i++)
        free((char *)o->st[i].name);
    free(o->st);
    for (int s = 0; s < N_SLOTS; s++)
        free(o->slot[s]);
    free(o->steps);
    free(o->ps);
    free(o->off);
    free(o->t);
    free(o);
}

/* ---------------------------------------------------------------- updates
 * One step is one loop over the flat index space [0, total) of the state
 * buffers, split over the threads in contiguous chunks; a chunk walks the
 * parameters it overlaps. Each element's arithmetic is the same whatever the
 * split, so the values do not depend on the thread count. The loop bodies
 * are branch-free (the branches are loop-invariant) and this file is built
 * with -fno-math-errno, so sqrtf vectorises (it is correctly rounded either
 * way), and with -ffp-contract=off, so no build fuses a multiply-add that
 * torch rounds twice. */

/* torch's _single_tensor_sgd on elements [0, n) of one parameter. */
TG_TARGET_CLONES
static void sgd_update(const tg_optim_config *c, bool first, int64_t n, float *restrict p, const float *restrict g,
                       float *restrict buf)
{
    const float wd = (float)c->weight_decay, m = (float)c->momentum;
    const float damp = (float)(1.0 - c->dampening), neg_lr = (float)(-c->lr);
    const bool has_wd = c->weight_decay != 0, has_m = c->momentum != 0, nesterov = c->nesterov;
    for (int64_t j = 0; j < n; j++) {
        float d = g[j];
        if (has_wd)
            d = d + wd * p[j];                       /* d_p.add(param, alpha=wd) */
        if (has_m) {
            float b = first ? d : buf[j] * m + damp * d; /* buf.mul_(m).add_(d_p, alpha=1-damp) */
            buf[j] = b;
            d = nesterov ? d + m * b : b;
        }
        p[j] = p[j] + neg_lr * d;                    /* param.add_(d_p, alpha=-lr) */
    }
}

/* torch's _single_tensor_adam / _single_tensor_adamw on elements [0, n) of
 * one parameter. */
TG_TARGET_CLONES
static void adam_update(const tg_optim_config *c, const param_step *ps, int64_t n, float *restrict p,
                        const float *restrict g, float *restrict m, float *restrict v, float *restrict vmax)
{
    const bool decoupled = c->kind == TG_OPTIM_ADAMW;
    const float neg_step_size = ps->neg_step_size, bc2_sqrt = ps->bc2_sqrt;
    const float b1 = (float)c->beta1, omb1 = (float)(1.0 - c->beta1);
    const float b2 = (float)c->beta2, omb2 = (float)(1.0 - c->beta2);
    const float eps = (float)c->eps, wd = (float)c->weight_decay;
    const float decay = (float)(1.0 - c->lr * c->weight_decay);
    const bool coupled_wd = !decoupled && c->weight_decay != 0;
    for (int64_t j = 0; j < n; j++) {
        float gj = g[j];
        if (coupled_wd)
            gj = gj + wd * p[j];                     /* grad.add(param, alpha=wd) */
        float pj = p[j];
        if (decoupled)
            pj = pj * decay;                         /* param.mul_(1 - lr*wd) */
        const float mj = m[j] * b1 + omb1 * gj;      /* exp_avg.mul_(b1).add_(g, alpha=1-b1) */
        float vv = v[j] * b2 + omb2 * gj * gj;       /* exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2) */
        m[j] = mj;
        v[j] = vv;
        if (vmax) {
            const float vm = vmax[j];
            vv = vv > vm || vv != vv ? vv : vm;      /* torch.maximum (NaN propagates) */
            vmax[j] = vv;
        }
        const float denom = sqrtf(vv) / bc2_sqrt + eps; /* (sqrt() / bc2_sqrt).add_(eps) */
        p[j] = pj + neg_step_size * mj / denom;      /* addcdiv_(m, denom, value=-step_size) */
    }
}

/* The parameter holding flat element i0: the last with off <= i0. */
static int param_at(const tg_optim *o, int64_t i0)
{
    int lo = 0, hi = o->n - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (o->off[mid] <= i0)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Elements [i0, i1) of the flat index space: the parameters they overlap. */
static void step_range(void *vctx, int64_t i0, int64_t i1)
{
    const tg_optim *o = vctx;
    const tg_optim_config *c = &o->cfg;
    for (int i = param_at(o, i0); i < o->n && o->off[i] < i1; i++) {
        const param_step *ps = &o->ps[i];
        if (!ps->active)
            continue;
        tg_tensor *t = o->t[i];
        const int64_t a = i0 > o->off[i] ? i0 - o->off[i] : 0;
        const int64_t b = i1 < o->off[i] + t->numel ? i1 - o->off[i] : t->numel;
        const int64_t at = o->off[i] + a;
        if (a >= b) /* an empty parameter */
            continue;
        if (c->kind == TG_OPTIM_SGD)
            sgd_update(c, ps->first, b - a, t->data + a, t->grad + a,
                       o->slot[MOM_BUF] ? o->slot[MOM_BUF] + at : NULL);
        else
            adam_update(c, ps, b - a, t->data + a, t->grad + a, o->slot[EXP_AVG] + at, o->slot[EXP_AVG_SQ] + at,
                        o->slot[MAX_EXP_AVG_SQ] ? o->slot[MAX_EXP_AVG_SQ] + at : NULL);
    }
}

/* zero_grad on elements [i0, i1) of the flat index space */
static void zero_range(void *vctx, int64_t i0, int64_t i1)
{
    const tg_optim *o = vctx;
    for (int i = param_at(o, i0); i < o->n && o->off[i] < i1; i++) {
        tg_tensor *t = o->t[i];
        const int64_t a = i0 > o->off[i] ? i0 - o->off[i] : 0;
        const int64_t b = i1 < o->off[i] + t->numel ? i1 - o->off[i] : t->numel;
        if (t->grad && a < b)
            memset(t->grad + a, 0, (size_t)(b - a) * sizeof(float));
    }
}

/* The tensors an optimizer holds die when a module of its list is replaced:
 * one comparison per call catches that before any of them is touched. */
static bool changed(const tg_optim *o, char *msg, size_t size)
{
    if (!o->module || tg_module_generation(o->module) == o->generation)
        return false;
    snprintf(msg, size, "the parameters of %s %s changed after this optimizer was built (a module was replaced or "
             "added); build the optimizer after the swaps", o->module->type->name,
             *o->module->path ? o->module->path : "(the root)");
    return true;
}

static void check_unchanged(const tg_optim *o, const char *op)
{
    char msg[512];
    if (changed(o, msg, sizeof msg))
        tg_error(op, "%s", msg);
}

/* below this many elements per thread a hand-off costs more than it saves */
#define STEP_CHUNK 32768

void tg_optim_step(tg_optim *o)
{
    check_unchanged(o, "tg_optim_step");
    const tg_optim_config *c = &o->cfg;
    for (int i = 0; i < o->n; i++) {
        tg_tensor *t = o->t[i];
        param_step *ps = &o->ps[i];
        ps->active = t->requires_grad && t->grad;
        if (!ps->active)
            continue;
        ps->first = o->steps[i] == 0;
        o->steps[i] += 1;
        /* step is the parameter's step count after the increment */
        const double bc1 = 1.0 - pow(c->beta1, (double)o->steps[i]);
        const double bc2 = 1.0 - pow(c->beta2, (double)o->steps[i]);
        ps->neg_step_size = (float)-(c->lr / bc1);
        ps->bc2_sqrt = (float)sqrt(bc2);
    }
    tg_parallel_for(o->total, STEP_CHUNK, step_range, o);
}

void tg_optim_zero_grad(tg_optim *o)
{
    check_unchanged(o, "tg_optim_zero_grad");
    tg_parallel_for(o->total, STEP_CHUNK, zero_range, o);
}

void tg_optim_set_lr(tg_optim *o, double lr)
{
    if (!(lr >= 0))
        tg_error("tg_optim_set_lr", "invalid learning rate %g (must be >= 0)", lr);
    o->cfg.lr = lr;
}

double tg_optim_get_lr(const tg_optim *o) { return o->cfg.lr; }
const tg_optim_config *tg_optim_get_config(const tg_optim *o) { return &o->cfg; }
int tg_optim_num_params(const tg_optim *o) { return o->n; }

/* ---------------------------------------------------------------- state */

int tg_optim_state_count(const tg_optim *o) { return o->n_st; }

const tg_optim_state *tg_optim_state_get(const tg_optim *o, int i)
{
    if (i < 0 || i >= o->n_st)
        tg_error("tg_optim_state_get", "index %d out of range [0, %d)", i, o->n_st);
    return &o->st[i];
}

const tg_optim_state *tg_optim_state_find(const tg_optim *o, const char *name)
{
    for (int i = 0; i < o->n_st; i++)
        if (strcmp(o->st[i].name, name) == 0)
            return &o->st[i];
    return NULL;
}

bool tg_optim_state_check(const tg_optim *o, char *msg, size_t size)
{
    if (changed(o, msg, size)) /* the state is the old parameters': no checkpoint may hold it */
        return false;
    for (int k = 0; k < o->n_st; k++) {
        const tg_optim_state *e = &o->st[k];
        if (e->kind == TG_STATE_STEP) {
            float s = e->data[0];
            if (!(s >= 0 && s <= 16777216.0f && s == floorf(s))) {
                snprintf(msg, size, "%s: step count %g is not an integer in [0, 2^24]", e->name, (double)s);
                return false;
            }
            continue;
        }
        const bool second = e->kind == TG_STATE_SECOND_MOMENT;
        for (int64_t j = 0; j < e->numel; j++) {
            float x = e->data[j];
            if (!isfinite(x) || (second && x < 0)) {
                snprintf(msg, size, "%s: element %lld is %g (must be finite%s)", e->name, (long long)j, (double)x,
                         second ? " and >= 0" : "");
                return false;
            }
        }
    }
    if (size)
        msg[0] = '\0';
    return true;
}

int64_t tg_optim_step_count(const tg_optim *o)
{
    float m = 0;
    for (int i = 0; i < o->n; i++)
        if (o->steps[i] > m)
            m = o->steps[i];
    return (int64_t)m;
}

/* ---------------------------------------------------------------- clipping */

/* True if params->items[i] repeats an earlier item's tensor (tied weights):
 * torch's model.parameters() yields a shared tensor once, so it counts once. */
static bool listed_before(const tg_params *params, int i)
{
    for (int k = 0; k < i; k++)
        if (params->items[k].t == params->items[i].t)
            return true;
    return false;
}

int tg_grad_norms_top(const tg_params *params, int k, int *out, double *norms)
{
    tg_check_ptr("tg_grad_norms_top", params, "parameter list");
    int n = 0;
    for (int i = 0; i < params->n && k > 0; i++) {
        const tg_tensor *t = params->items[i].t;
        if (!t->grad || listed_before(params, i))
            continue;
        double s = 0;
        for (int64_t j = 0; j < t->numel; j++)
            s += (double)t->grad[j] * t->grad[j];
        const double norm = isnan(s) ? INFINITY : sqrt(s);   /* NaN first: it is what one looks for */
        int at = n < k ? n++ : k;                           /* insertion into the sorted top k */
        while (at > 0 && (isnan(norms[at - 1]) ? false : norms[at - 1] < norm)) {
            if (at < k) {
                out[at] = out[at - 1];
                norms[at] = norms[at - 1];
            }
            at--;
        }
        if (at < k) {
            out[at] = i;
            norms[at] = isnan(s) ? NAN : norm;
        }
    }
    return n;
}

float tg_clip_grad_norm(const tg_params *params, double max_norm)
{
    if (!(max_norm > 0))
        tg_error("tg_clip_grad_norm", "max_norm %g must be > 0", max_norm);
    /* torch: total = norm(stack([norm(g) for g])) in float32; we sum squares
     * in double and round each norm to float as torch's stack holds floats. */
    double total2 = 0;
    for (int i = 0; i < params->n; i++) {
        const tg_tensor *t = params->items[i].t;
        if (!t->grad || listed_before(params, i))
            continue;
        double s = 0;
        for (int64_t j = 0; j < t->numel; j++)
            s += (double)t->grad[j] * t->grad[j];
        float norm = (float)sqrt(s);
        total2 += (double)norm * norm;
    }
    const float total = (float)sqrt(total2);
    /* clip_coef = max_norm / (total_norm + 1e-6): a tensor's __rdiv__ is
     * reciprocal() * max_norm, in float32. torch then multiplies every grad
     * by clamp(coef, max=1): a no-op at 1, and a NaN coef (a NaN grad
     * somewhere) turns every grad NaN, which the !(coef >= 1) test keeps. */
    const float coef = (1.0f / (total + 1e-6f)) * (float)max_norm;
    if (!(coef >= 1.0f)) {
        for (int i = 0; i < params->n; i++) {
            tg_tensor *t = params->items[i].t;
            if (!t->grad || listed_before(params, i))
                continue;
            for (int64_t j = 0; j < t->numel; j++)
                t->grad[j] *= coef;
        }
    }
    return total;
}

/* optim/schedule.c — learning-rate schedules: nanoGPT's get_lr (see optim.h). */
#include "optim.h"

#include <math.h>
#include <string.h>

void tg_lr_schedule_check(const tg_lr_schedule *s)
{
    const char *op = "tg_lr_schedule";
    if (s->kind != TG_LR_CONST && s->kind != TG_LR_COSINE)
        tg_error(op, "unknown schedule kind %d", (int)s->kind);
    if (!(s->lr > 0))
        tg_error(op, "lr %g must be > 0", s->lr);
    if (s->warmup < 0)
        tg_error(op, "warmup %lld must be >= 0", (long long)s->warmup);
    if (s->kind == TG_LR_COSINE) {
        if (!(s->min_lr >= 0 && s->min_lr <= s->lr))
            tg_error(op, "min_lr %g must be in [0, lr = %g]", s->min_lr, s->lr);
        if (s->decay_iters < s->warmup)
            tg_error(op, "decay_iters %lld must be >= warmup %lld", (long long)s->decay_iters, (long long)s->warmup);
    }
}

double tg_lr_at(const tg_lr_schedule *s, int64_t it)
{
    if (it < s->warmup)
        return s->lr * (double)(it + 1) / (double)(s->warmup + 1);
    if (s->kind == TG_LR_CONST)
        return s->lr;
    if (it > s->decay_iters)
        return s->min_lr;
    double ratio = s->decay_iters > s->warmup ? (double)(it - s->warmup) / (double)(s->decay_iters - s->warmup) : 0.0;
    double coeff = 0.5 * (1.0 + cos(M_PI * ratio));
    return s->min_lr + coeff * (s->lr - s->min_lr);
}

static const char *const lr_names[] = {"const", "cosine"};

const char *tg_lr_kind_name(tg_lr_kind k) { return (unsigned)k < 2 ? lr_names[k] : "?"; }

int tg_lr_kind_parse(const char *s)
{
    for (int i = 0; i < 2; i++)
        if (s && strcmp(s, lr_names[i]) == 0)
            return i;
    return -1;
}

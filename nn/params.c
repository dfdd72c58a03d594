/* nn/params.c — named parameter lists (state_dict order and names). */
#include "nn.h"

#include <stdlib.h>
#include <string.h>

void tg_params_init(tg_params *p) { memset(p, 0, sizeof *p); }

void tg_params_free(tg_params *p)
{
    for (int i = 0; i < p->n; i++)
        free(p->items[i].name);
    free(p->items);
    memset(p, 0, sizeof *p);
}

void tg_params_add(tg_params *p, const char *prefix, const char *name, tg_tensor *t)
{
    tg_check_ptr("tg_params_add", p, "parameter list");
    tg_check_ptr("tg_params_add", name, "name");
    tg_check_ptr("tg_params_add", t, "tensor");
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 16;
        tg_param *items = realloc(p->items, (size_t)cap * sizeof *items);
        if (!items)
            tg_error("tg_params_add", "out of memory");
        p->items = items;
        p->cap = cap;
    }
    size_t lp = prefix ? strlen(prefix) : 0, ln = strlen(name);
    char *full = malloc(lp + ln + 1);
    if (!full)
        tg_error("tg_params_add", "out of memory");
    if (lp)
        memcpy(full, prefix, lp);
    memcpy(full + lp, name, ln + 1);
    p->items[p->n].name = full;
    p->items[p->n].t = t;
    p->n++;
}

tg_tensor *tg_params_find(const tg_params *p, const char *name)
{
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->items[i].name, name) == 0)
            return p->items[i].t;
    return NULL;
}

int64_t tg_params_numel(const tg_params *p)
{
    int64_t n = 0;
    for (int i = 0; i < p->n; i++)
        n += p->items[i].t->numel;
    return n;
}

void tg_params_zero_grad(const tg_params *p)
{
    for (int i = 0; i < p->n; i++)
        tg_zero_grad_tensor(p->items[i].t);
}

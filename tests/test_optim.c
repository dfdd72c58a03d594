/*
 * tests/test_optim.c — suite "optim": SGD / Adam / AdamW trajectories against
 * torch.optim (tests/golden/optim.txt from gen_optim.py), clipping,
 * schedules, state save/restore (resume == uninterrupted), and misuse.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optim/optim.h"
#include "testutil.h"

/* Trajectory tolerance: float32 kernels differ from ATen's in summation
 * order (and ATen's AVX2 fused multiply-adds) by a few ulps per step. */
#define TRAJ_ATOL 1e-6
#define TRAJ_RTOL 1e-5

/* ---------------------------------------------------------------- problems
 * lin: Linear(4, 3), mse(lin(x), y);  mha: MultiHeadAttention(4, 6, ctx 5,
 * dropout 0, 2 heads, no qkv bias), mse(mha(x), y). Initial weights, x and
 * y come from the golden file (see gen_optim.py). */
typedef struct {
    const char *name;      /* "lin" | "mha" */
    tg_linear *lin;
    tg_mha *mha;
    tg_params params;
    tg_tensor *x, *y;
} problem;

static void problem_init(problem *p, golden_file *g, const char *name)
{
    tg_generator gen;
    tg_manual_seed(&gen, 1);
    memset(p, 0, sizeof *p);
    p->name = name;
    tg_params_init(&p->params);
    if (strcmp(name, "lin") == 0)
        p->lin = tg_linear_new(4, 3, true, &gen);
    else
        p->mha = tg_mha_new(4, 6, 5, 0.0f, 2, false, &gen);
    /* a copy of the module's list, which the test may then edit */
    const tg_params *mp = tg_module_params(p->lin ? &p->lin->base : &p->mha->base);
    for (int i = 0; i < mp->n; i++)
        tg_params_add(&p->params, NULL, mp->items[i].name, mp->items[i].t);
    for (int i = 0; i < p->params.n; i++) {
        tg_tensor *init = golden_tensorf(g, "%s.init.%s", name, p->params.items[i].name);
        ck_assert_int_eq(init->numel, p->params.items[i].t->numel);
        tg_copy_data(p->params.items[i].t, init);
        tg_free(init);
    }
    p->x = golden_tensorf(g, "%s.x", name);
    p->y = golden_tensorf(g, "%s.y", name);
}

static void problem_free(problem *p)
{
    tg_module_free(p->lin ? &p->lin->base : &p->mha->base);
    tg_params_free(&p->params);
    tg_free(p->x);
    tg_free(p->y);
}

static tg_tensor *problem_loss(problem *p)
{
    tg_tensor *out = p->lin ? tg_linear_forward(p->lin, p->x) : tg_mha_forward(p->mha, p->x);
    return tg_mean(tg_pow_scalar(tg_sub(out, p->y), 2.0f));
}

/* ---------------------------------------------------------------- configs
 * Mirrors CONFIGS in gen_optim.py (same names and values). */
typedef struct {
    const char *name;
    tg_optim_config cfg;
    int steps;             /* 0: 6 */
    double clip;           /* 0: none */
    bool sched;
    tg_lr_schedule s;      /* lr filled from cfg.lr */
    bool frozen;
    int drop[2];           /* 0-based steps where the dropped param has no grad; -1 none */
} optcase;

static tg_optim_config sgd(double lr, double mom, double damp, bool nest, double wd)
{
    tg_optim_config c = tg_sgd_config(lr);
    c.momentum = mom;
    c.dampening = damp;
    c.nesterov = nest;
    c.weight_decay = wd;
    return c;
}

static tg_optim_config adam(tg_optim_config c, double b1, double b2, double eps, double wd, bool ams)
{
    c.beta1 = b1;
    c.beta2 = b2;
    c.eps = eps;
    c.weight_decay = wd;
    c.amsgrad = ams;
    return c;
}

#define NODROP .drop = {-1, -1}
static optcase *cases(int *n)
{
    static optcase c[32];
    int k = 0;
    c[k++] = (optcase){"sgd", sgd(0.1, 0, 0, false, 0), NODROP};
    c[k++] = (optcase){"sgd_mom", sgd(0.1, 0.9, 0, false, 0), NODROP};
    c[k++] = (optcase){"sgd_damp", sgd(0.1, 0.9, 0.5, false, 0), NODROP};
    c[k++] = (optcase){"sgd_nesterov", sgd(0.1, 0.9, 0, true, 0), NODROP};
    c[k++] = (optcase){"sgd_wd", sgd(0.1, 0, 0, false, 0.1), NODROP};
    c[k++] = (optcase){"sgd_mom_damp_wd", sgd(0.05, 0.8, 0.3, false, 0.05), NODROP};
    c[k++] = (optcase){"sgd_nesterov_wd", sgd(0.05, 0.8, 0, true, 0.1), NODROP};
    c[k++] = (optcase){"adam", tg_adam_config(0.01), NODROP};
    c[k++] = (optcase){"adam_default", tg_adam_config(1e-3), NODROP};
    c[k++] = (optcase){"adam_wd", adam(tg_adam_config(0.01), 0.9, 0.999, 1e-8, 0.1, false), NODROP};
    c[k++] = (optcase){"adam_amsgrad", adam(tg_adam_config(0.01), 0.9, 0.999, 1e-8, 0, true), NODROP};
    c[k++] = (optcase){"adam_betas_eps_wd_amsgrad", adam(tg_adam_config(0.02), 0.8, 0.99, 1e-6, 0.05, true), NODROP};
    c[k++] = (optcase){"adamw", tg_adamw_config(0.01), NODROP};
    c[k++] = (optcase){"adamw_default", tg_adamw_config(1e-3), NODROP};
    c[k++] = (optcase){"adamw_amsgrad", adam(tg_adamw_config(0.01), 0.9, 0.999, 1e-8, 0.1, true), NODROP};
    c[k++] = (optcase){"adamw_betas_eps_nowd", adam(tg_adamw_config(0.02), 0.8, 0.99, 1e-6, 0, false), NODROP};
    c[k++] = (optcase){"sgd_damp_nomom", sgd(0.1, 0, 0.5, false, 0.01), NODROP}; /* dampening needs momentum */
    c[k++] = (optcase){"sgd_mom_clip", sgd(0.1, 0.9, 0, false, 0), .clip = 0.05, NODROP};
    c[k++] = (optcase){"adam_clip", tg_adam_config(0.01), .clip = 0.05, NODROP};
    c[k++] = (optcase){"adamw_clip_loose", tg_adamw_config(0.01), .clip = 100.0, NODROP};
    c[k++] = (optcase){"sgd_warmup_const", sgd(0.1, 0.9, 0, false, 0), .sched = true,
                       .s = {.kind = TG_LR_CONST, .warmup = 3}, NODROP};
    c[k++] = (optcase){"adamw_cosine", tg_adamw_config(0.02), .steps = 9, .sched = true,
                       .s = {.kind = TG_LR_COSINE, .warmup = 2, .decay_iters = 6, .min_lr = 0.002}, NODROP};
    c[k++] = (optcase){"adam_cosine_clip", adam(tg_adam_config(0.02), 0.9, 0.999, 1e-8, 0, true), .steps = 8,
                       .clip = 0.05, .sched = true,
                       .s = {.kind = TG_LR_COSINE, .warmup = 0, .decay_iters = 5, .min_lr = 0.001}, NODROP};
    c[k++] = (optcase){"adam_frozen", tg_adam_config(0.01), .frozen = true, NODROP};
    c[k++] = (optcase){"sgd_frozen", sgd(0.1, 0.9, 0.2, false, 0), .frozen = true, NODROP};
    c[k++] = (optcase){"adam_dropped", tg_adam_config(0.01), .drop = {1, 3}};
    c[k++] = (optcase){"sgd_dropped", sgd(0.1, 0.9, 0.5, false, 0), .drop = {0, 2}};
    for (int i = 0; i < k; i++)
        c[i].s.lr = c[i].cfg.lr;
    *n = k;
    return c;
}

static const char *const lin_frozen[] = {"bias", NULL};
static const char *const mha_frozen[] = {"W_query.weight", "W_key.weight", NULL};

static const char *dropped_name(const problem *p) { return p->lin ? "bias" : "out_proj.bias"; }

static void freeze(problem *p, const optcase *c)
{
    if (!c->frozen)
        return;
    for (const char *const *n = p->lin ? lin_frozen : mha_frozen; *n; n++) {
        tg_tensor *t = tg_params_find(&p->params, *n);
        ck_assert_ptr_nonnull(t);
        tg_requires_grad(t, false);
    }
}

/* Runs steps [from, to) of case c on p with optimizer o. If g is given,
 * checks lr, clip norm and every parameter after every step against it. */
static void run_steps(problem *p, tg_optim *o, const optcase *c, int from, int to, golden_file *g)
{
    tg_tensor *lrs = g ? golden_tensorf(g, "%s.%s.lr", p->name, c->name) : NULL;
    tg_tensor *norms = g && c->clip > 0 ? golden_tensorf(g, "%s.%s.norm", p->name, c->name) : NULL;
    tg_tensor *dropped = tg_params_find(&p->params, dropped_name(p));
    char what[256];
    for (int it = from; it < to; it++) {
        if (c->sched)
            tg_optim_set_lr(o, tg_lr_at(&c->s, it));
        if (lrs)
            ck_assert_msg(fabs(tg_optim_get_lr(o) - lrs->data[it]) <= 1e-7 * lrs->data[it], "%s.%s: lr %g at %d",
                          p->name, c->name, tg_optim_get_lr(o), it);
        bool drop = it == c->drop[0] || it == c->drop[1];
        if (drop)
            tg_requires_grad(dropped, false);
        tg_backward(problem_loss(p), NULL);
        if (c->clip > 0) {
            float norm = tg_clip_grad_norm(&p->params, c->clip);
            if (norms)
                ck_assert_msg(fabs(norm - norms->data[it]) <= 1e-5 * norms->data[it], "%s.%s: norm %.8g, want %.8g",
                              p->name, c->name, norm, norms->data[it]);
        }
        tg_optim_step(o);
        tg_optim_zero_grad(o);
        tg_tape_reset(NULL);
        if (drop)
            tg_requires_grad(dropped, true);
        for (int i = 0; g && i < p->params.n; i++) {
            tg_tensor *want = golden_tensorf(g, "%s.%s.s%d.%s", p->name, c->name, it + 1, p->params.items[i].name);
            snprintf(what, sizeof what, "%s.%s step %d %s", p->name, c->name, it + 1, p->params.items[i].name);
            assert_tensor_close(p->params.items[i].t, want, TRAJ_ATOL, TRAJ_RTOL, what);
            tg_free(want);
        }
    }
    tg_free(lrs);
    tg_free(norms);
}

static int case_steps(const optcase *c) { return c->steps ? c->steps : 6; }

static void check_trajectories(const char *model)
{
    golden_file *g = golden_open("optim");
    int n;
    optcase *c = cases(&n);
    for (int k = 0; k < n; k++) {
        problem p;
        problem_init(&p, g, model);
        freeze(&p, &c[k]);
        tg_optim *o = tg_optim_new(&p.params, &c[k].cfg);
        run_steps(&p, o, &c[k], 0, case_steps(&c[k]), g);
        tg_optim_free(o);
        problem_free(&p);
    }
    golden_close(g);
}

START_TEST(test_trajectories_linear) { check_trajectories("lin"); }
END_TEST

START_TEST(test_trajectories_mha) { check_trajectories("mha"); }
END_TEST

/* Frozen parameters (requires_grad off) never move; the goldens above check
 * it too, this states it directly. */
START_TEST(test_frozen_untouched)
{
    golden_file *g = golden_open("optim");
    int n;
    optcase *c = cases(&n);
    for (int k = 0; k < n; k++) {
        if (!c[k].frozen)
            continue;
        problem p;
        problem_init(&p, g, "mha");
        freeze(&p, &c[k]);
        tg_optim *o = tg_optim_new(&p.params, &c[k].cfg);
        run_steps(&p, o, &c[k], 0, 4, NULL);
        for (const char *const *nm = mha_frozen; *nm; nm++) {
            tg_tensor *init = golden_tensorf(g, "mha.init.%s", *nm);
            tg_tensor *t = tg_params_find(&p.params, *nm);
            ck_assert_msg(memcmp(t->data, init->data, (size_t)t->numel * sizeof(float)) == 0, "%s moved", *nm);
            char key[128];
            snprintf(key, sizeof key, "optim.step.%s", *nm);
            ck_assert_float_eq(tg_optim_state_find(o, key)->data[0], 0.0f);
            tg_free(init);
        }
        ck_assert_int_eq(tg_optim_step_count(o), 4);
        tg_optim_free(o);
        problem_free(&p);
    }
    golden_close(g);
}
END_TEST

/* ---------------------------------------------------------------- resume */

typedef struct {
    int n;
    char **names;
    float **data;
    int64_t *numel;
} saved_state;

static void state_save(const tg_optim *o, saved_state *s)
{
    s->n = tg_optim_state_count(o);
    s->names = calloc((size_t)s->n, sizeof *s->names);
    s->data = calloc((size_t)s->n, sizeof *s->data);
    s->numel = calloc((size_t)s->n, sizeof *s->numel);
    for (int i = 0; i < s->n; i++) {
        const tg_optim_state *e = tg_optim_state_get(o, i);
        s->names[i] = strdup(e->name);
        s->numel[i] = e->numel;
        s->data[i] = malloc((size_t)e->numel * sizeof(float));
        memcpy(s->data[i], e->data, (size_t)e->numel * sizeof(float));
    }
}

static void state_restore(tg_optim *o, const saved_state *s)
{
    ck_assert_int_eq(tg_optim_state_count(o), s->n);
    for (int i = 0; i < s->n; i++) {
        const tg_optim_state *e = tg_optim_state_find(o, s->names[i]);
        ck_assert_msg(e != NULL, "state %s missing", s->names[i]);
        ck_assert_int_eq(e->numel, s->numel[i]);
        memcpy(e->data, s->data[i], (size_t)e->numel * sizeof(float));
    }
    char msg[256];
    ck_assert_msg(tg_optim_state_check(o, msg, sizeof msg), "%s", msg);
}

static void state_free(saved_state *s)
{
    for (int i = 0; i < s->n; i++) {
        free(s->names[i]);
        free(s->data[i]);
    }
    free(s->names);
    free(s->data);
    free(s->numel);
}

/* N steps, save, a fresh optimizer (and fresh module holding the saved
 * weights) restored, M more steps == N+M uninterrupted steps, bit for bit,
 * and == torch's trajectory. */
static void check_resume(const char *model, const char *case_name, int split)
{
    golden_file *g = golden_open("optim");
    int n;
    optcase *cs = cases(&n), *c = NULL;
    for (int k = 0; k < n; k++)
        if (strcmp(cs[k].name, case_name) == 0)
            c = &cs[k];
    ck_assert_ptr_nonnull(c);
    const int total = case_steps(c);

    problem a;
    problem_init(&a, g, model);
    freeze(&a, c);
    tg_optim *oa = tg_optim_new(&a.params, &c->cfg);
    run_steps(&a, oa, c, 0, total, NULL);

    problem b;
    problem_init(&b, g, model);
    freeze(&b, c);
    tg_optim *ob = tg_optim_new(&b.params, &c->cfg);
    run_steps(&b, ob, c, 0, split, NULL);
    saved_state s;
    state_save(ob, &s);
    tg_params saved_w;                     /* the "checkpoint" of the weights */
    tg_params_init(&saved_w);
    for (int i = 0; i < b.params.n; i++)
        tg_params_add(&saved_w, NULL, b.params.items[i].name, tg_copy(b.params.items[i].t));
    tg_optim_free(ob);
    problem_free(&b);

    problem r;                             /* resumed: fresh module and optimizer */
    problem_init(&r, g, model);
    freeze(&r, c);
    for (int i = 0; i < r.params.n; i++)
        tg_copy_data(r.params.items[i].t, saved_w.items[i].t);
    tg_optim *orr = tg_optim_new(&r.params, &c->cfg);
    state_restore(orr, &s);
    ck_assert_int_eq(tg_optim_step_count(orr), tg_optim_step_count(oa) - (total - split));
    run_steps(&r, orr, c, split, total, g);

    for (int i = 0; i < a.params.n; i++)
        ck_assert_msg(memcmp(a.params.items[i].t->data, r.params.items[i].t->data,
                             (size_t)a.params.items[i].t->numel * sizeof(float)) == 0,
                      "%s %s: resumed %s differs from the uninterrupted run", model, case_name, a.params.items[i].name);
    for (int i = 0; i < tg_optim_state_count(oa); i++) {
        const tg_optim_state *ea = tg_optim_state_get(oa, i), *er = tg_optim_state_get(orr, i);
        ck_assert_str_eq(ea->name, er->name);
        ck_assert_msg(memcmp(ea->data, er->data, (size_t)ea->numel * sizeof(float)) == 0, "state %s differs", ea->name);
    }

    for (int i = 0; i < saved_w.n; i++)
        tg_free(saved_w.items[i].t);
    tg_params_free(&saved_w);
    state_free(&s);
    tg_optim_free(orr);
    problem_free(&r);
    tg_optim_free(oa);
    problem_free(&a);
    golden_close(g);
}

START_TEST(test_resume)
{
    static const struct {
        const char *model, *name;
        int split;
    } r[] = {
        {"lin", "sgd_mom_damp_wd", 3},  {"mha", "sgd_damp", 1},          {"mha", "sgd_nesterov_wd", 4},
        {"lin", "adam_betas_eps_wd_amsgrad", 3}, {"mha", "adamw_amsgrad", 3}, {"mha", "adam_dropped", 2},
        {"lin", "sgd_dropped", 1},      {"mha", "adamw_cosine", 4},      {"mha", "adam_cosine_clip", 5},
        {"mha", "adam_frozen", 3},
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        check_resume(r[i].model, r[i].name, r[i].split);
}
END_TEST

/* ---------------------------------------------------------------- state API */

START_TEST(test_state_names)
{
    tg_tensor *w = tg_zeros(TG_SHAPE(3, 2)), *b = tg_zeros(TG_SHAPE(3));
    tg_params ps;
    tg_params_init(&ps);
    tg_params_add(&ps, "layer.", "weight", w);
    tg_params_add(&ps, "layer.", "bias", b);
    static const struct {
        int kind;
        double momentum;
        bool amsgrad;
        const char *names[8];
    } want[] = {
        {TG_OPTIM_SGD, 0, false, {"optim.step.layer.weight", "optim.step.layer.bias"}},
        {TG_OPTIM_SGD, 0.9, false,
         {"optim.step.layer.weight", "optim.step.layer.bias", "optim.momentum_buffer.layer.weight",
          "optim.momentum_buffer.layer.bias"}},
        {TG_OPTIM_ADAM, 0, false,
         {"optim.step.layer.weight", "optim.step.layer.bias", "optim.exp_avg.layer.weight", "optim.exp_avg.layer.bias",
          "optim.exp_avg_sq.layer.weight", "optim.exp_avg_sq.layer.bias"}},
        {TG_OPTIM_ADAMW, 0, true,
         {"optim.step.layer.weight", "optim.step.layer.bias", "optim.exp_avg.layer.weight", "optim.exp_avg.layer.bias",
          "optim.exp_avg_sq.layer.weight", "optim.exp_avg_sq.layer.bias", "optim.max_exp_avg_sq.layer.weight",
          "optim.max_exp_avg_sq.layer.bias"}},
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        tg_optim_config c = want[k].kind == TG_OPTIM_SGD ? tg_sgd_config(0.1)
                            : want[k].kind == TG_OPTIM_ADAM ? tg_adam_config(0.1) : tg_adamw_config(0.1);
        c.momentum = want[k].momentum;
        c.amsgrad = want[k].amsgrad;
        tg_optim *o = tg_optim_new(&ps, &c);
        tg_params_free(&ps);   /* the optimizer keeps its own copy of the names */
        tg_params_init(&ps);
        tg_params_add(&ps, "layer.", "weight", w);
        tg_params_add(&ps, "layer.", "bias", b);
        int n = 0;
        while (n < 8 && want[k].names[n])
            n++;
        ck_assert_int_eq(tg_optim_state_count(o), n);
        for (int i = 0; i < n; i++) {
            const tg_optim_state *e = tg_optim_state_get(o, i);
            ck_assert_str_eq(e->name, want[k].names[i]);
            ck_assert_ptr_eq(tg_optim_state_find(o, want[k].names[i]), e);
            bool is_step = strncmp(e->name, "optim.step.", 11) == 0;
            const tg_tensor *t = strstr(e->name, "weight") ? w : b;
            ck_assert_int_eq(e->ndim, is_step ? 0 : t->ndim);
            ck_assert_int_eq(e->numel, is_step ? 1 : t->numel);
            for (int d = 0; d < e->ndim; d++)
                ck_assert_int_eq(e->shape[d], t->shape[d]);
            for (int64_t j = 0; j < e->numel; j++)
                ck_assert_float_eq(e->data[j], 0.0f);
        }
        ck_assert_ptr_null(tg_optim_state_find(o, "optim.exp_avg.nope"));
        /* flat: a kind's entries are consecutive in one buffer */
        if (n > 2)
            ck_assert_ptr_eq(tg_optim_state_get(o, 3)->data, tg_optim_state_get(o, 2)->data + w->numel);
        tg_optim_free(o);
    }
    tg_params_free(&ps);
    tg_free(w);
    tg_free(b);
}
END_TEST

START_TEST(test_state_check)
{
    tg_tensor *w = tg_requires_grad(tg_ones(TG_SHAPE(2, 2)), true);
    tg_params ps;
    tg_params_init(&ps);
    tg_params_add(&ps, NULL, "w", w);
    tg_optim_config c = tg_adam_config(0.1);
    c.amsgrad = true;
    tg_optim *o = tg_optim_new(&ps, &c);
    char msg[256];
    ck_assert(tg_optim_state_check(o, msg, sizeof msg));
    float *step = tg_optim_state_find(o, "optim.step.w")->data;
    float *v = tg_optim_state_find(o, "optim.exp_avg_sq.w")->data;
    float *m = tg_optim_state_find(o, "optim.exp_avg.w")->data;
    float *vmax = tg_optim_state_find(o, "optim.max_exp_avg_sq.w")->data;

    *step = 1.5f;
    ck_assert(!tg_optim_state_check(o, msg, sizeof msg));
    ck_assert_msg(strstr(msg, "optim.step.w") != NULL, "%s", msg);
    *step = -1;
    ck_assert(!tg_optim_state_check(o, msg, sizeof msg));
    *step = 3;
    v[2] = -0.5f;
    ck_assert(!tg_optim_state_check(o, msg, sizeof msg));
    ck_assert_msg(strstr(msg, "optim.exp_avg_sq.w") && strstr(msg, "element 2"), "%s", msg);
    v[2] = 0.5f;
    m[1] = NAN;
    ck_assert(!tg_optim_state_check(o, msg, sizeof msg));
    ck_assert_msg(strstr(msg, "optim.exp_avg.w") != NULL, "%s", msg);
    m[1] = 0.25f;
    vmax[3] = INFINITY;
    ck_assert(!tg_optim_state_check(o, msg, sizeof msg));
    vmax[3] = 1;
    ck_assert_msg(tg_optim_state_check(o, msg, sizeof msg), "%s", msg);
    ck_assert_int_eq(tg_optim_step_count(o), 3);

    tg_optim_free(o);
    tg_params_free(&ps);
    tg_free(w);
}
END_TEST

/* tg_optim_state_check tells what an entry is by the entry itself, not by
 * its name or its place in the list: here the entries are reversed and
 * renamed (through the public structs; restored before the free), and a bad
 * step count, a negative second moment, a NaN first moment are still found
 * and named, while a negative first moment is fine. */
START_TEST(test_state_check_any_order_and_name)
{
    tg_tensor *w = tg_requires_grad(tg_ones(TG_SHAPE(2, 2)), true);
    tg_tensor *b = tg_requires_grad(tg_ones(TG_SHAPE(3)), true);
    tg_params ps;
    tg_params_init(&ps);
    tg_params_add(&ps, NULL, "w", w);
    tg_params_add(&ps, NULL, "b", b);
    tg_optim_config c = tg_adam_config(0.1);
    c.amsgrad = true;
    tg_optim *o = tg_optim_new(&ps, &c);
    const int n = tg_optim_state_count(o);
    ck_assert_int_eq(n, 8);
    float *step_b = tg_optim_state_find(o, "optim.step.b")->data;
    float *m_w = tg_optim_state_find(o, "optim.exp_avg.w")->data;
    float *v_b = tg_optim_state_find(o, "optim.exp_avg_sq.b")->data;
    float *vmax_w = tg_optim_state_find(o, "optim.max_exp_avg_sq.w")->data;
    /* reverse the entries, and give each a name that says nothing */
    tg_optim_state *st = (tg_optim_state *)tg_optim_state_get(o, 0);
    for (int i = 0; i < n / 2; i++) {
        tg_optim_state tmp = st[i];
        st[i] = st[n - 1 - i];
        st[n - 1 - i] = tmp;
    }
    const char *orig[8];
    char names[8][24];
    for (int i = 0; i < n; i++) {
        orig[i] = st[i].name;
        snprintf(names[i], sizeof names[i], "entry%d", i);
        st[i].name = names[i];
    }
    /* where the four views went, by their data */
    int at_step_b = -1, at_v_b = -1, at_vmax_w = -1, at_m_w = -1;
    for (int i = 0; i < n; i++) {
        at_step_b = st[i].data == step_b ? i : at_step_b;
        at_v_b = st[i].data == v_b ? i : at_v_b;
        at_vmax_w = st[i].data == vmax_w ? i : at_vmax_w;
        at_m_w = st[i].data == m_w ? i : at_m_w;
    }
    char msg[256], want[32];
    ck_assert_msg(tg_optim_state_check(o, msg, sizeof msg), "%s", msg);

    step_b[0] = 1.5f;
    ck_assert(!tg_optim_state_check(o, msg, sizeof msg));
    snprintf(want, sizeof want, "entry%d: step count 1.5", at_step_b);
    ck_assert_msg(strstr(msg, want) != NULL, "'%s' should name %s", msg, want);
    step_b[0] = 2;

    v_b[1] = -0.5f;
    ck_assert(!tg_optim_state_check(o, msg, sizeof msg));
    snprintf(want, sizeof want, "entry%d: element 1", at_v_b);
    ck_assert_msg(strstr(msg, want) && strstr(msg, ">= 0"), "'%s' should name %s", msg, want);
    v_b[1] = 0.5f;

    vmax_w[3] = -1;
    ck_assert(!tg_optim_state_check(o, msg, sizeof msg));
    snprintf(want, sizeof want, "entry%d: element 3", at_vmax_w);
    ck_assert_msg(strstr(msg, want) != NULL, "'%s' should name %s", msg, want);
    vmax_w[3] = 1;

    m_w[0] = -0.5f; /* a first moment may be negative */
    ck_assert_msg(tg_optim_state_check(o, msg, sizeof msg), "%s", msg);
    m_w[0] = NAN;
    ck_assert(!tg_optim_state_check(o, msg, sizeof msg));
    snprintf(want, sizeof want, "entry%d: element 0", at_m_w);
    ck_assert_msg(strstr(msg, want) != NULL, "'%s' should name %s", msg, want);
    m_w[0] = 0;

    for (int i = 0; i < n; i++) /* the optimizer frees its own names */
        st[i].name = orig[i];
    tg_optim_free(o);
    tg_params_free(&ps);
    tg_free(w);
    tg_free(b);
}
END_TEST

/* One Adam step by hand (t = 1: m = (1-b1)g, v = (1-b2)g^2, update = lr*g/(|g|+eps)
 * up to bias correction), and params without grads are skipped. */
START_TEST(test_skip_and_first_adam_step)
{
    tg_tensor *a = tg_requires_grad(tg_from_array(TG_SHAPE(3), (const float[]){1, 2, 3}), true);
    tg_tensor *b = tg_requires_grad(tg_from_array(TG_SHAPE(2), (const float[]){5, 6}), true); /* grad stays NULL */
    tg_tensor *f = tg_requires_grad(tg_from_array(TG_SHAPE(2), (const float[]){7, 8}), false);
    tg_params ps;
    tg_params_init(&ps);
    tg_params_add(&ps, NULL, "a", a);
    tg_params_add(&ps, NULL, "b", b);
    tg_params_add(&ps, NULL, "f", f);
    tg_optim_config c = tg_adam_config(0.5);
    tg_optim *o = tg_optim_new(&ps, &c);
    /* f has a grad buffer but requires_grad off: still skipped */
    float *fg = tg_grad_buffer(f, NULL);
    fg[0] = 1, fg[1] = 1;
    float *ag = tg_grad_buffer(a, NULL);
    ag[0] = 2, ag[1] = -4, ag[2] = 0;
    tg_optim_step(o);
    /* bias-corrected m/sqrt(v) = sign(g) exactly up to eps: 1 - 0.5*(2/(2+1e-8)) ... */
    ck_assert_float_eq_tol(a->data[0], 0.5f, 1e-6f);
    ck_assert_float_eq_tol(a->data[1], 2.5f, 1e-6f);
    ck_assert_float_eq(a->data[2], 3.0f); /* zero grad: m = 0, no move */
    ck_assert_float_eq(b->data[0], 5.0f);
    ck_assert_float_eq(f->data[0], 7.0f);
    ck_assert_float_eq(f->data[1], 8.0f);
    ck_assert_float_eq(tg_optim_state_find(o, "optim.step.a")->data[0], 1.0f);
    ck_assert_float_eq(tg_optim_state_find(o, "optim.step.b")->data[0], 0.0f);
    ck_assert_float_eq(tg_optim_state_find(o, "optim.step.f")->data[0], 0.0f);
    ck_assert_float_eq_tol(tg_optim_state_find(o, "optim.exp_avg.a")->data[1], -0.4f, 1e-7f);
    ck_assert_float_eq_tol(tg_optim_state_find(o, "optim.exp_avg_sq.a")->data[1], 0.016f, 1e-9f);
    ck_assert_float_eq(tg_optim_state_find(o, "optim.exp_avg.f")->data[0], 0.0f);
    /* zero_grad keeps the buffers, zeroes them (f too: it has one) */
    tg_optim_zero_grad(o);
    ck_assert_ptr_eq(a->grad, ag);
    ck_assert_float_eq(ag[1], 0.0f);
    ck_assert_float_eq(fg[0], 0.0f);
    ck_assert_ptr_null(b->grad);
    tg_optim_free(o);
    tg_params_free(&ps);
    tg_free(a);
    tg_free(b);
    tg_free(f);
}
END_TEST

/* A tensor listed twice (tied weights) is updated once, under its first name:
 * the same as a list holding it once. */
START_TEST(test_tied_once)
{
    float g[3] = {0.5f, -1.0f, 2.0f};
    tg_tensor *a = tg_requires_grad(tg_from_array(TG_SHAPE(3), (const float[]){1, 2, 3}), true);
    tg_tensor *b = tg_requires_grad(tg_from_array(TG_SHAPE(3), (const float[]){1, 2, 3}), true);
    tg_params twice, once;
    tg_params_init(&twice);
    tg_params_init(&once);
    tg_params_add(&twice, NULL, "tok_emb.weight", a);
    tg_params_add(&twice, NULL, "out_head.weight", a);
    tg_params_add(&once, NULL, "tok_emb.weight", b);
    tg_optim_config c = tg_sgd_config(0.1);
    c.momentum = 0.9;
    tg_optim *o2 = tg_optim_new(&twice, &c), *o1 = tg_optim_new(&once, &c);
    ck_assert_int_eq(tg_optim_num_params(o2), 1);
    ck_assert_int_eq(tg_optim_state_count(o2), 2);
    ck_assert_ptr_nonnull(tg_optim_state_find(o2, "optim.momentum_buffer.tok_emb.weight"));
    ck_assert_ptr_null(tg_optim_state_find(o2, "optim.momentum_buffer.out_head.weight"));
    for (int s = 0; s < 3; s++) {
        memcpy(tg_grad_buffer(a, NULL), g, sizeof g);
        memcpy(tg_grad_buffer(b, NULL), g, sizeof g);
        tg_optim_step(o2);
        tg_optim_step(o1);
    }
    ck_assert(memcmp(a->data, b->data, sizeof g) == 0);
    ck_assert_float_eq_tol(a->data[0], 1.0f - 0.1f * 0.5f * (1 + 1.9f + 2.71f), 1e-6f);
    tg_optim_free(o2);
    tg_optim_free(o1);
    tg_params_free(&twice);
    tg_params_free(&once);
    tg_free(a);
    tg_free(b);
}
END_TEST

/* One step runs as a single loop over the flat state, split over threads
 * in chunks that cut through parameters. Three large parameters (and a
 * frozen one between them), four steps of every optimizer: 1 and 2 threads
 * give the same bits, and AdamW's equal the torch formula evaluated one
 * element at a time in float (each multiply and add rounded on its own). */
static void run_big(const tg_optim_config *c, int threads, tg_tensor **t, int n)
{
    tg_generator gen;
    tg_manual_seed(&gen, 7);
    tg_params ps;
    tg_params_init(&ps);
    static const char *const names[] = {"w0", "frozen", "w1", "w2"};
    for (int i = 0; i < n; i++) {
        tg_tensor *init = tg_randn(&gen, TG_SHAPE((int)t[i]->numel));
        tg_copy_data(t[i], init);
        tg_free(init);
        tg_params_add(&ps, NULL, names[i], t[i]);
    }
    tg_set_num_threads(threads);
    tg_optim *o = tg_optim_new(&ps, c);
    for (int s = 0; s < 4; s++) {
        for (int i = 0; i < n; i++) {
            if (!t[i]->requires_grad)
                continue;
            tg_tensor *g = tg_randn(&gen, TG_SHAPE((int)t[i]->numel));
            memcpy(tg_grad_buffer(t[i], NULL), g->data, (size_t)g->numel * sizeof(float));
            tg_free(g);
        }
        tg_optim_step(o);
    }
    tg_optim_zero_grad(o); /* on the same threads: every grad element, across the chunk cuts */
    for (int i = 0; i < n; i++)
        for (int64_t j = 0; t[i]->grad && j < t[i]->numel; j++)
            ck_assert_msg(t[i]->grad[j] == 0.0f, "grad %d[%lld] not zeroed", i, (long long)j);
    tg_set_num_threads(1);
    tg_optim_free(o);
    tg_params_free(&ps);
}

START_TEST(test_step_threads_identical)
{
    static const int sizes[] = {70001, 4099, 40000, 33};
    const int n = 4;
    tg_optim_config cfgs[4] = {tg_sgd_config(0.1), tg_adam_config(1e-2), tg_adamw_config(1e-2), tg_adam_config(1e-2)};
    cfgs[0].momentum = 0.9, cfgs[0].nesterov = true, cfgs[0].weight_decay = 0.01;
    cfgs[1].weight_decay = 0.1;
    cfgs[3].amsgrad = true;
    for (int k = 0; k < 4; k++) {
        tg_tensor *a[4], *b[4];
        for (int i = 0; i < n; i++) {
            a[i] = tg_requires_grad(tg_zeros(TG_SHAPE(sizes[i])), i != 1);
            b[i] = tg_requires_grad(tg_zeros(TG_SHAPE(sizes[i])), i != 1);
        }
        run_big(&cfgs[k], 1, a, n);
        run_big(&cfgs[k], 2, b, n);
        for (int i = 0; i < n; i++) {
            ck_assert_msg(memcmp(a[i]->data, b[i]->data, (size_t)sizes[i] * sizeof(float)) == 0,
                          "%s: parameter %d differs between 1 and 2 threads", tg_optim_kind_name(cfgs[k].kind), i);
            tg_free(a[i]);
            tg_free(b[i]);
        }
    }
    /* AdamW by hand, element by element, from the same draws */
    tg_tensor *t[4];
    for (int i = 0; i < n; i++)
        t[i] = tg_requires_grad(tg_zeros(TG_SHAPE(sizes[i])), i != 1);
    run_big(&cfgs[2], 2, t, n);
    tg_generator gen;
    tg_manual_seed(&gen, 7);
    tg_tensor *p[4], *m[4], *v[4];
    for (int i = 0; i < n; i++) {
        p[i] = tg_randn(&gen, TG_SHAPE(sizes[i]));
        m[i] = tg_zeros(TG_SHAPE(sizes[i]));
        v[i] = tg_zeros(TG_SHAPE(sizes[i]));
    }
    const tg_optim_config *c = &cfgs[2];
    const float b1 = (float)c->beta1, omb1 = (float)(1.0 - c->beta1), b2 = (float)c->beta2;
    const float omb2 = (float)(1.0 - c->beta2), eps = (float)c->eps, decay = (float)(1.0 - c->lr * c->weight_decay);
    for (int s = 1; s <= 4; s++) {
        const float neg_step_size = (float)-(c->lr / (1.0 - pow(c->beta1, s)));
        const float bc2_sqrt = (float)sqrt(1.0 - pow(c->beta2, s));
        for (int i = 0; i < n; i++) {
            if (i == 1)
                continue;
            tg_tensor *g = tg_randn(&gen, TG_SHAPE(sizes[i]));
            for (int j = 0; j < sizes[i]; j++) {
                volatile float pj = p[i]->data[j] * decay, gj = g->data[j];
                volatile float mj = m[i]->data[j] * b1, vj = v[i]->data[j] * b2, gg = omb2 * gj;
                mj = mj + omb1 * gj;
                gg = gg * gj;
                vj = vj + gg;
                volatile float denom = sqrtf(vj) / bc2_sqrt;
                denom = denom + eps;
                volatile float q = neg_step_size * mj;
                q = q / denom;
                p[i]->data[j] = pj + q;
                m[i]->data[j] = mj;
                v[i]->data[j] = vj;
            }
            tg_free(g);
        }
    }
    for (int i = 0; i < n; i++) {
        ck_assert_msg(memcmp(t[i]->data, p[i]->data, (size_t)sizes[i] * sizeof(float)) == 0,
                      "adamw parameter %d differs from the formula", i);
        tg_free(t[i]);
        tg_free(p[i]);
        tg_free(m[i]);
        tg_free(v[i]);
    }
}
END_TEST

/* ---------------------------------------------------------------- clipping */

START_TEST(test_clip_grad_norm)
{
    tg_tensor *a = tg_requires_grad(tg_zeros(TG_SHAPE(2)), true);
    tg_tensor *b = tg_requires_grad(tg_zeros(TG_SHAPE(1)), true);
    tg_tensor *none = tg_requires_grad(tg_zeros(TG_SHAPE(4)), true);  /* no grad: ignored */
    tg_params ps;
    tg_params_init(&ps);
    tg_params_add(&ps, NULL, "a", a);
    tg_params_add(&ps, NULL, "b", b);
    tg_params_add(&ps, NULL, "none", none);
    float *ga = tg_grad_buffer(a, NULL), *gb = tg_grad_buffer(b, NULL);
    ga[0] = 3, ga[1] = 4, gb[0] = 12;   /* ||(5, 12)|| = 13 */

    /* max_norm above the norm: grads untouched, bit for bit */
    ck_assert_float_eq(tg_clip_grad_norm(&ps, 20.0), 13.0f);
    ck_assert_float_eq(ga[0], 3.0f);
    ck_assert_float_eq(gb[0], 12.0f);
    /* max_norm == norm: 13 + 1e-6 rounds up in float, so coef < 1 and torch
     * scales (values from torch 1.13's clip_grad_norm_ on these grads) */
    ck_assert_float_eq(tg_clip_grad_norm(&ps, 13.0), 13.0f);
    ck_assert_float_eq(ga[0], 2.999999761581421f);
    ck_assert_float_eq(ga[1], 3.999999761581421f);
    ck_assert_float_eq(gb[0], 11.999999046325684f);
    /* half: every grad scaled by 6.5/(13+1e-6) (torch: 1.49999988 1.99999988 5.99999952) */
    ck_assert_float_eq_tol(tg_clip_grad_norm(&ps, 6.5), 13.0f, 2e-6f);
    ck_assert_float_eq(ga[0], 1.49999988f);
    ck_assert_float_eq(ga[1], 1.99999988f);
    ck_assert_float_eq(gb[0], 5.99999952f);
    ck_assert_float_eq_tol(tg_clip_grad_norm(&ps, 100.0), 6.5f, 1e-6f);
    ck_assert_ptr_null(none->grad);

    tg_params empty;
    tg_params_init(&empty);
    ck_assert_float_eq(tg_clip_grad_norm(&empty, 1.0), 0.0f);

    /* a tensor listed twice (tied weights) counts once, as in torch's
     * model.parameters(): the same norm and scaling as listing it once */
    tg_params tied;
    tg_params_init(&tied);
    tg_params_add(&tied, NULL, "a", a);
    tg_params_add(&tied, NULL, "b", b);
    tg_params_add(&tied, NULL, "a_again", a);
    ga[0] = 3, ga[1] = 4, gb[0] = 12;
    ck_assert_float_eq(tg_clip_grad_norm(&tied, 6.5), 13.0f);
    ck_assert_float_eq(ga[0], 1.49999988f);
    ck_assert_float_eq(gb[0], 5.99999952f);
    tg_params_free(&tied);

    /* a NaN anywhere: torch's clamp(coef, max=1) is NaN, so every grad turns
     * NaN (torch 1.13: clip_grad_norm_ of [3, nan], [12] -> nan, all nan) */
    ga[0] = 3, ga[1] = NAN, gb[0] = 12;
    ck_assert(isnan(tg_clip_grad_norm(&ps, 1.0)));
    ck_assert(isnan(ga[0]) && isnan(ga[1]) && isnan(gb[0]));

    tg_params_free(&ps);
    tg_free(a);
    tg_free(b);
    tg_free(none);
}
END_TEST

/* ---------------------------------------------------------------- schedules */

START_TEST(test_schedules)
{
    golden_file *g = golden_open("optim");
    static const struct {
        const char *key;
        tg_lr_schedule s;
    } sc[] = {
        {"sched.cosine", {TG_LR_COSINE, 6e-4, 6e-5, 10, 50}},
        {"sched.cosine_nowarm", {TG_LR_COSINE, 0.1, 0.0, 0, 7}},
        {"sched.const_warm", {TG_LR_CONST, 3e-3, 0, 5, 0}},
        {"sched.const", {TG_LR_CONST, 1e-3, 0, 0, 0}},
    };
    for (size_t k = 0; k < sizeof sc / sizeof sc[0]; k++) {
        tg_lr_schedule_check(&sc[k].s);
        tg_tensor *want = golden_tensor(g, sc[k].key);
        for (int64_t i = 0; i < want->numel; i++) {
            float got = (float)tg_lr_at(&sc[k].s, i);
            ck_assert_msg(got == want->data[i], "%s[%lld] = %.9g, want %.9g", sc[k].key, (long long)i, (double)got,
                          (double)want->data[i]);
        }
        tg_free(want);
    }
    /* identities: warmup ends just below lr, the cosine peak is lr, the floor min_lr */
    tg_lr_schedule s = {TG_LR_COSINE, 1.0, 0.1, 4, 10};
    ck_assert_double_eq(tg_lr_at(&s, 0), 1.0 / 5);
    ck_assert_double_eq(tg_lr_at(&s, 3), 4.0 / 5);
    ck_assert_double_eq(tg_lr_at(&s, 4), 1.0);
    ck_assert_double_eq_tol(tg_lr_at(&s, 7), 0.55, 1e-15);
    ck_assert_double_eq_tol(tg_lr_at(&s, 10), 0.1, 1e-15);
    ck_assert_double_eq(tg_lr_at(&s, 11), 0.1);
    ck_assert_double_eq(tg_lr_at(&s, 1000000), 0.1);
    tg_lr_schedule z = {TG_LR_COSINE, 1.0, 0.1, 3, 3};   /* decay_iters == warmup */
    ck_assert_double_eq(tg_lr_at(&z, 3), 1.0);
    ck_assert_double_eq(tg_lr_at(&z, 4), 0.1);

    ck_assert_str_eq(tg_lr_kind_name(TG_LR_COSINE), "cosine");
    ck_assert_int_eq(tg_lr_kind_parse("const"), TG_LR_CONST);
    ck_assert_int_eq(tg_lr_kind_parse("cosine"), TG_LR_COSINE);
    ck_assert_int_eq(tg_lr_kind_parse("linear"), -1);
    ck_assert_str_eq(tg_optim_kind_name(TG_OPTIM_ADAMW), "adamw");
    ck_assert_int_eq(tg_optim_kind_parse("sgd"), TG_OPTIM_SGD);
    ck_assert_int_eq(tg_optim_kind_parse("adam"), TG_OPTIM_ADAM);
    ck_assert_int_eq(tg_optim_kind_parse("adamw"), TG_OPTIM_ADAMW);
    ck_assert_int_eq(tg_optim_kind_parse("Adam"), -1);
    ck_assert_int_eq(tg_optim_kind_parse(NULL), -1);
    golden_close(g);
}
END_TEST

/* ---------------------------------------------------------------- misuse */

typedef struct {
    tg_optim_config cfg;
    tg_lr_schedule s;
    double v;
    tg_optim *o;
} bad_ctx;

static void new_optim_fn(void *p)
{
    bad_ctx *c = p;
    tg_params ps;
    tg_params_init(&ps);
    tg_optim_free(tg_optim_new(&ps, &c->cfg));
}

static void sched_fn(void *p) { tg_lr_schedule_check(&((bad_ctx *)p)->s); }

static void set_lr_fn(void *p) { tg_optim_set_lr(((bad_ctx *)p)->o, ((bad_ctx *)p)->v); }

static void clip_fn(void *p)
{
    tg_params ps;
    tg_params_init(&ps);
    tg_clip_grad_norm(&ps, ((bad_ctx *)p)->v);
}

START_TEST(test_errors)
{
    char msg[256];
    static const struct {
        const char *want;
        int kind;
        double lr, mom, damp, wd, b1, b2, eps;
        bool nest;
    } bad[] = {
        {"invalid learning rate -0.1", TG_OPTIM_SGD, -0.1, 0, 0, 0, 0.9, 0.999, 1e-8, false},
        {"invalid momentum", TG_OPTIM_SGD, 0.1, -0.5, 0, 0, 0.9, 0.999, 1e-8, false},
        {"invalid weight_decay", TG_OPTIM_SGD, 0.1, 0, 0, -1, 0.9, 0.999, 1e-8, false},
        {"nesterov momentum requires", TG_OPTIM_SGD, 0.1, 0, 0, 0, 0.9, 0.999, 1e-8, true},
        {"nesterov momentum requires", TG_OPTIM_SGD, 0.1, 0.9, 0.1, 0, 0.9, 0.999, 1e-8, true},
        {"invalid beta1 1", TG_OPTIM_ADAM, 0.1, 0, 0, 0, 1.0, 0.999, 1e-8, false},
        {"invalid beta2 -0.1", TG_OPTIM_ADAMW, 0.1, 0, 0, 0, 0.9, -0.1, 1e-8, false},
        {"invalid eps", TG_OPTIM_ADAM, 0.1, 0, 0, 0, 0.9, 0.999, -1e-8, false},
        {"invalid learning rate nan", TG_OPTIM_ADAM, NAN, 0, 0, 0, 0.9, 0.999, 1e-8, false},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        bad_ctx c = {.cfg = {.kind = bad[k].kind, .lr = bad[k].lr, .momentum = bad[k].mom, .dampening = bad[k].damp,
                             .weight_decay = bad[k].wd, .beta1 = bad[k].b1, .beta2 = bad[k].b2, .eps = bad[k].eps,
                             .nesterov = bad[k].nest}};
        ck_assert_msg(catch_error(new_optim_fn, &c, msg, sizeof msg), "case %zu did not fail", k);
        ck_assert_msg(strncmp(msg, "tg_optim_new: ", 14) == 0 && strstr(msg, bad[k].want), "case %zu: %s", k, msg);
    }
    /* valid corner cases torch accepts: lr 0, beta 0, nesterov with momentum */
    bad_ctx ok = {.cfg = tg_adam_config(0)};
    ok.cfg.beta1 = 0;
    ck_assert(!catch_error(new_optim_fn, &ok, msg, sizeof msg));
    ok.cfg = tg_sgd_config(0.1);
    ok.cfg.momentum = 0.5;
    ok.cfg.nesterov = true;
    ck_assert(!catch_error(new_optim_fn, &ok, msg, sizeof msg));

    tg_params none;
    tg_params_init(&none);
    bad_ctx c = {.cfg = tg_sgd_config(0.1), .v = -1};
    c.o = tg_optim_new(&none, &c.cfg);
    ck_assert(catch_error(set_lr_fn, &c, msg, sizeof msg));
    ck_assert_msg(strstr(msg, "tg_optim_set_lr: invalid learning rate -1") != NULL, "%s", msg);
    ck_assert_double_eq(tg_optim_get_lr(c.o), 0.1);
    tg_optim_free(c.o);
    c.v = 0;
    ck_assert(catch_error(clip_fn, &c, msg, sizeof msg));
    ck_assert_msg(strstr(msg, "tg_clip_grad_norm: max_norm 0 must be > 0") != NULL, "%s", msg);

    static const struct {
        tg_lr_schedule s;
        const char *want;
    } bs[] = {
        {{TG_LR_CONST, 0, 0, 0, 0}, "lr 0 must be > 0"},
        {{TG_LR_CONST, 1, 0, -1, 0}, "warmup -1 must be >= 0"},
        {{TG_LR_COSINE, 1, 2, 0, 10}, "min_lr 2 must be in [0, lr = 1]"},
        {{TG_LR_COSINE, 1, 0.1, 10, 5}, "decay_iters 5 must be >= warmup 10"},
        {{(tg_lr_kind)7, 1, 0.1, 10, 5}, "unknown schedule kind 7"},
    };
    for (size_t k = 0; k < sizeof bs / sizeof bs[0]; k++) {
        c.s = bs[k].s;
        ck_assert_msg(catch_error(sched_fn, &c, msg, sizeof msg), "schedule %zu did not fail", k);
        ck_assert_msg(strncmp(msg, "tg_lr_schedule: ", 16) == 0 && strstr(msg, bs[k].want), "schedule %zu: %s", k,
                      msg);
    }
}
END_TEST

/* tg_grad_norms_top: sqrt of the sum of squares, largest first, NaN first
 * of all, parameters without a grad skipped, a tensor listed twice (tied)
 * once, at most k. */
START_TEST(test_grad_norms_top)
{
    const float g[5][2] = {{3, 4}, {1, 0}, {0, 0}, {NAN, 1}, {6, 8}};
    tg_params ps;
    tg_params_init(&ps);
    tg_tensor *t[6];
    for (int i = 0; i < 6; i++) {
        t[i] = tg_requires_grad(tg_zeros(TG_SHAPE(2)), true);
        if (i < 5) {
            float *gr = tg_grad_buffer(t[i], NULL);
            gr[0] = g[i][0];
            gr[1] = g[i][1];
        }
        char name[16];
        snprintf(name, sizeof name, "p%d", i);
        tg_params_add(&ps, NULL, name, t[i]);
    }
    tg_params_add(&ps, NULL, "p4_tied", t[4]); /* index 6: the largest again, listed a second time */
    int idx[4];
    double norm[4];
    ck_assert_int_eq(tg_grad_norms_top(&ps, 4, idx, norm), 4);
    ck_assert(idx[0] == 3 && isnan(norm[0]));
    ck_assert(idx[1] == 4 && norm[1] == 10.0);
    ck_assert(idx[2] == 0 && norm[2] == 5.0);
    ck_assert(idx[3] == 1 && norm[3] == 1.0);
    int idx10[10];
    double n10[10];
    ck_assert_int_eq(tg_grad_norms_top(&ps, 10, idx10, n10), 5);   /* p5 has no grad, p4_tied is p4 */
    ck_assert(idx10[4] == 2 && n10[4] == 0.0);
    for (int i = 0; i < 5; i++)
        ck_assert_int_ne(idx10[i], 6);
    tg_params_free(&ps);
    for (int i = 0; i < 6; i++)
        tg_free(t[i]);
}
END_TEST

static Suite *optim_suite(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_trajectories_linear);
    tcase_add_test(tc, test_trajectories_mha);
    tcase_add_test(tc, test_frozen_untouched);
    tcase_add_test(tc, test_resume);
    tcase_add_test(tc, test_state_names);
    tcase_add_test(tc, test_state_check);
    tcase_add_test(tc, test_state_check_any_order_and_name);
    tcase_add_test(tc, test_skip_and_first_adam_step);
    tcase_add_test(tc, test_tied_once);
    tcase_add_test(tc, test_step_threads_identical);
    tcase_add_test(tc, test_clip_grad_norm);
    tcase_add_test(tc, test_grad_norms_top);
    tcase_add_test(tc, test_schedules);
    tcase_add_test(tc, test_errors);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(optim_suite()) ? 1 : 0; }

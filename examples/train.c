/*
 * examples/train.c — next-token training of the book's GPTModel on a text file: a command line (the flags,
 * the printing, the signals) over the library trainer, optim/trainer.h, where the batch and evaluation
 * formulas, the checkpoints, the log and the plot are.    build/train --data data/the-verdict.txt --seed 123
 * One generator (--seed) draws the initial weights, then dropout masks and random batches; samples use their
 * own (seed + 1), so printing them changes nothing. A checkpoint holds the weights (the book's state_dict
 * names), the optimizer state, and in its metadata the config, tokenizer, training flags, step and generator.
 */
#include "optim/trainer.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- flags */

typedef struct {
    const char *data, *val_data, *tokenizer, *optimizer, *schedule, *batches, *save, *resume, *init, *log, *plot,
        *prompt, *dot;
    double val_frac, dropout, lr, weight_decay, momentum, min_lr, clip;
    long layers, heads, emb, ctx, batch, threads, steps, warmup, eval_every, eval_batches, sample_every,
        sample_tokens, stop_after, save_every, grad_norms;
    uint64_t seed;
    bool qkv_bias, quiet, eval_only, detect_anomaly;
} options;

/* One table: the parser, --help, the defaults and the checkpoint's training settings all come from it. */
typedef enum { F_HEAD, F_STR, F_CHOICE, F_LONG, F_DBL, F_SEED, F_BOOL } ftype;
typedef struct {
    const char *name;
    ftype type;
    size_t off;
    double lo, hi;              /* F_LONG, F_DBL: the range (open at hi for F_DBL with finite hi, at lo for "> 0") */
    const char *rule;           /* F_DBL: the range in words */
    const char *const *choices; /* F_CHOICE, NULL-terminated */
    const char *meta;           /* a training setting's key in the checkpoint (in the checkpoint's order) */
    const char *def, *help;     /* def: the default (NULL: none, or computed) */
    bool set;                   /* given on the command line */
} flagdef;

#define FL(n, t, f, lo, hi, rule, ch, meta, def, help)                                                        \
    {n, t, offsetof(options, f), lo, hi, rule, ch, meta, def, help, 0}
#define HEAD(n) {n, F_HEAD, 0, 0, 0, 0, 0, 0, 0, 0, 0}
#define CH(...) (const char *const[]){__VA_ARGS__, NULL}
#define L40 1099511627776.0
static flagdef g_flags[] = {
    HEAD("training"),
    FL("--optimizer", F_CHOICE, optimizer, 0, 0, 0, CH("sgd", "adam", "adamw"), "optimizer", "adamw", ""),
    FL("--lr", F_DBL, lr, 0, INFINITY, "> 0", 0, "lr", "3e-3", "F  peak learning rate"),
    FL("--lr-schedule", F_CHOICE, schedule, 0, 0, 0, CH("const", "cosine"), "lr_schedule", "cosine", ""),
    FL("--steps", F_LONG, steps, 0, L40, 0, 0, "steps", "600", "N  the run's length (the cosine's too)"),
    FL("--seed", F_SEED, seed, 0, 0, 0, 0, "seed", "123", "N"),
    FL("--batches", F_CHOICE, batches, 0, 0, 0, CH("random", "sequential"), "batches", "random",
       "\n      random: row b starts at u32 % (N - T), one draw of the seeded generator (torch.randint);\n"
       "      sequential: row b of step i starts at ((i*B + b) * T) mod (N - T), from i alone\n"
       "      (N training tokens, T = --ctx, B = --batch; x = tokens[s:s+T], y = tokens[s+1:s+T+1])"),
    FL("--weight-decay", F_DBL, weight_decay, 0, INFINITY, ">= 0", 0, "weight_decay", NULL,
       "F  on every parameter, as the book's AdamW(model.parameters()) [adamw 0.1, else 0]"),
    FL("--momentum", F_DBL, momentum, 0, 1, "in [0, 1)", 0, "momentum", "0", "F  sgd only"),
    FL("--warmup", F_LONG, warmup, 0, L40, 0, 0, "warmup", "20", "N  linear warmup steps"),
    FL("--min-lr", F_DBL, min_lr, 0, INFINITY, ">= 0", 0, "min_lr", NULL, "F  the cosine's floor [lr/10]"),
    FL("--clip", F_DBL, clip, 0, INFINITY, ">= 0 (0 turns clipping off;", 0, "clip", "1", "F  clip_grad_norm_, 0: off"),
    FL("--batch", F_LONG, batch, 1, 1 << 20, 0, 0, "batch", "32", "N  rows per step"),
    FL("--val-frac", F_DBL, val_frac, 0, 1, "in [0, 1)", 0, "val_frac", "0.1", "F  the end of the text validates"),
    FL("--threads", F_LONG, threads, 1, 256, 0, 0, 0, NULL, "N [all cores]"),
    HEAD("data"),
    FL("--data", F_STR, data, 0, 0, 0, 0, 0, NULL, "FILE  training text, a regular file of at most 1 GiB (required)"),
    FL("--val-data", F_STR, val_data, 0, 0, 0, 0, 0, NULL, "FILE  validation text instead, in the training vocabulary"),
    FL("--tokenizer", F_CHOICE, tokenizer, 0, 0, 0, CH("char", "byte"), 0, "char", "vocabulary: the text's or 256"),
    HEAD("model (the book's GPTModel)"),
    FL("--layers", F_LONG, layers, 1, 1024, 0, 0, 0, "4", "N"),
    FL("--heads", F_LONG, heads, 1, 65536, 0, 0, 0, "4", "N"),
    FL("--emb", F_LONG, emb, 1, 65536, 0, 0, 0, "128", "N"),
    FL("--ctx", F_LONG, ctx, 1, 65536, 0, 0, 0, "64", "N  context length"),
    FL("--dropout", F_DBL, dropout, 0, 1, "in [0, 1)", 0, 0, "0.2", "F"),
    FL("--qkv-bias", F_BOOL, qkv_bias, 0, 0, 0, 0, 0, NULL, " biases in the attention's query, key and value"),
    HEAD("evaluation and output (losses in nats per token, and in bits per char or byte)"),
    FL("--eval-every", F_LONG, eval_every, 0, L40, 0, 0, 0, "50", "N  val loss every N steps, 0: never"),
    FL("--eval-batches", F_LONG, eval_batches, 1, 1 << 20, 0, 0, 0, "8",
       "N  eval loss: N x --batch fixed windows spread over the split, dropout off"),
    FL("--sample-every", F_LONG, sample_every, 0, L40, 0, 0, 0, "0", "N  0: off"),
    FL("--sample-tokens", F_LONG, sample_tokens, 0, 1 << 20, 0, 0, 0, "200", "N  before/after training, 0: none"),
    FL("--prompt", F_STR, prompt, 0, 0, 0, 0, 0, NULL, "TEXT  the samples' start [the data's start]"),
    FL("--log", F_STR, log, 0, 0, 0, 0, 0, NULL,
       "FILE.csv  step,lr,train_loss,val_loss,tokens_per_s: train_loss is the step's batch (dropout\n"
       "      on), val_loss is set on eval steps (and step 0); --resume continues an existing log"),
    FL("--plot", F_STR, plot, 0, 0, 0, 0, 0, NULL, "FILE.svg  loss curves (after --resume with --log: the whole run)"),
    FL("--quiet", F_BOOL, quiet, 0, 0, 0, 0, 0, NULL, " only the summary"),
    HEAD("checkpoints (safetensors)"),
    FL("--save", F_STR, save, 0, 0, 0, 0, 0, NULL, "FILE  written at the end (and at a signal or --stop-after)"),
    FL("--save-every", F_LONG, save_every, 0, L40, 0, 0, 0, "0", "N  also every N steps; never NaN or Inf"),
    FL("--resume", F_STR, resume, 0, 0, 0, 0, 0, NULL,
       "FILE  continue a run: weights, optimizer state, step, generator; model and training flags\n"
       "      not given default to the checkpoint's; saves back to FILE unless --save names another"),
    FL("--init", F_STR, init, 0, 0, 0, 0, 0, NULL, "FILE  start from weights only (e.g. saved from PyTorch)"),
    FL("--stop-after", F_LONG, stop_after, 0, L40, 0, 0, 0, NULL, "N  stop after N steps of this run, saving"),
    FL("--eval-only", F_BOOL, eval_only, 0, 0, 0, 0, 0, NULL, " evaluate the --init or --resume checkpoint, exit"),
    HEAD("debugging (docs/DEBUGGING.md)"),
    FL("--detect-anomaly", F_BOOL, detect_anomaly, 0, 0, 0, 0, 0, NULL, " stop at the first NaN an op or NaN/Inf a "
       "backward makes, naming\n      op, tape entry and module; errors then abort (gdb stops there, a core is left)"),
    FL("--dot", F_STR, dot, 0, 0, 0, 0, 0, NULL, "FILE  the first step's graph, Graphviz DOT (dot -Tsvg FILE)"),
    FL("--grad-norms", F_LONG, grad_norms, 0, L40, 0, 0, 0, "0", "N  every N steps the ten largest grad norms, 0: off"),
};
#define N_FLAGS (sizeof g_flags / sizeof *g_flags)

static void usage(void)
{
    printf("usage: train --data FILE [flags]   (--flag value or --flag=value)\n");
    for (const flagdef *f = g_flags; f < g_flags + N_FLAGS; f++) {
        printf(f->type == F_HEAD ? "%s:\n" : "  %s", f->name);
        for (int i = 0; f->choices && f->choices[i]; i++)
            printf("%s%s", i ? "|" : " ", f->choices[i]);
        if (f->type != F_HEAD)
            printf(f->def ? "%s%s [%s]\n" : "%s%s\n", f->choices ? "  " : " ", f->help, f->def);
    }
    printf("Ctrl-C or SIGTERM saves a checkpoint (to --save, else interrupted.safetensors), exits 130 or 143.\n");
}

static char g_err[640];

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return -1;
}

static flagdef *find_flag(const char *name)
{
    for (flagdef *f = g_flags; f < g_flags + N_FLAGS; f++)
        if (strcmp(name, f->name) == 0)
            return f;
    return NULL;
}

static bool given(const char *name) { return find_flag(name)->set; }

/* Parses v into f's option: a flag's value, or with label a checkpoint's (any fault: "missing or invalid"). */
static int set_value(const flagdef *f, const char *v, options *o, const char *label)
{
    void *p = (char *)o + f->off;
    char *end = NULL, opts[80] = "";
    errno = 0;
    bool num = f->type == F_DBL || f->type == F_LONG, dbl = f->type == F_DBL;
    double x = v && dbl ? strtod(v, &end) : v && num ? (double)strtol(v, &end, 10) : 0;
    bool bad = num && (errno || end == v || *end || (dbl && !isfinite(x)));
    bool in = x >= f->lo && (dbl && f->hi < INFINITY ? x < f->hi : x <= f->hi) &&
              !(f->rule && strncmp(f->rule, "> ", 2) == 0 && x == f->lo); /* "> 0": open at lo */
    int c = 0;
    while (f->type == F_CHOICE && v && f->choices[c] && strcmp(f->choices[c], v) != 0)
        c++;
    if (label && (!v || bad || (num && !in) || (f->type == F_CHOICE && !f->choices[c])))
        return fail("%s: metadata \"%s\" is missing or invalid", label, f->meta);
    if (bad && (errno == ERANGE || (dbl && isinf(x))))
        return fail("%s: '%s' is out of range", f->name, v);
    if (bad || (dbl && isnan(x)))
        return fail("%s: '%s' is not %s", f->name, v, dbl ? "a number" : "an integer");
    if (num && !in)
        return dbl ? fail("%s must be %s%sgot %g)", f->name, f->rule, strchr(f->rule, '(') ? " " : " (", x)
                   : fail("%s must be in [%.0f, %.0f] (got %.0f)", f->name, f->lo, f->hi, x);
    for (int i = 0; f->type == F_CHOICE && !f->choices[c] && f->choices[i]; i++)
        snprintf(opts + strlen(opts), sizeof opts - strlen(opts), "%s%s", !i ? "" : f->choices[i + 1] ? ", " : " or ",
                 f->choices[i]);
    if (*opts)
        return fail("%s must be %s (got '%s')", f->name, opts, v);
    if (f->type == F_SEED) {
        unsigned long long u = strtoull(v, &end, 10);
        if (errno || end == v || *end || v[0] == '-')
            return fail("--seed: '%s' is not a non-negative integer", v);
        *(uint64_t *)p = u;
    }
    if (f->type == F_STR || f->type == F_CHOICE) /* a choice is stored as the table's static string */
        *(const char **)p = f->type == F_STR ? v : f->choices[c];
    else if (num && dbl)
        *(double *)p = x;
    else if (num)
        *(long *)p = (long)x;
    return 0;
}

/* Constraints between flags (checked again after --resume fills some in). */
static int check_combinations(const options *o)
{
    if (o->min_lr > o->lr)
        return fail("--min-lr %g must not exceed --lr %g", o->min_lr, o->lr);
    if (o->momentum > 0.0 && strcmp(o->optimizer, "sgd") != 0)
        return fail("--momentum applies to --optimizer sgd only");
    return o->emb % o->heads ? fail("--heads %ld does not divide --emb %ld", o->heads, o->emb) : 0;
}

static int parse_args(int argc, char **argv, options *o)
{
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (options){.weight_decay = 0.1, .min_lr = -1.0 /* lr / 10 */, .stop_after = -1,
                   .threads = nc < 1 ? 1 : nc > 64 ? 64 : nc};
    for (const flagdef *f = g_flags; f < g_flags + N_FLAGS; f++)
        if (f->def)
            set_value(f, f->def, o, NULL);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = strchr(a, '='); /* --flag value or --flag=value */
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0)
            return fail("unexpected argument '%s' (flags start with --; see --help)", a);
        char name[64];
        size_t nl = v ? (size_t)(v - a) : strlen(a);
        snprintf(name, sizeof name, "%.*s", (int)nl, a);
        flagdef *f = nl < sizeof name ? find_flag(name) : NULL;
        if (!f || f->type == F_HEAD)
            return fail("unknown flag '%s' (see --help)", name);
        f->set = true;
        if (f->type == F_BOOL) {
            *(bool *)((char *)o + f->off) = true;
            continue;
        }
        if (!v && i + 1 >= argc)
            return fail("%s needs a value", name);
        v = v ? v + 1 : argv[++i];
        if (set_value(f, v, o, NULL))
            return -1;
        if (!*v && strcmp(name, "--prompt") != 0)
            return fail("%s needs a non-empty value", name);
    }
    if (!o->data)
        return fail("--data FILE is required (see --help)");
    if (o->resume && o->init)
        return fail("--resume and --init cannot be combined (--resume continues a run, --init starts one)");
    if (o->eval_only && !o->resume && !o->init)
        return fail("--eval-only needs a checkpoint to evaluate (--init or --resume)");
    if (o->val_data && given("--val-frac"))
        return fail("--val-data and --val-frac cannot be combined (with --val-data all of --data trains)");
    o->save = o->resume && !o->save ? o->resume : o->save; /* a resumed run keeps saving where it came from */
    o->weight_decay = !given("--weight-decay") && strcmp(o->optimizer, "adamw") != 0 ? 0.0 : o->weight_decay;
    o->min_lr = o->min_lr < 0.0 ? o->lr / 10.0 : o->min_lr;
    return check_combinations(o);
}

/* --resume continues the saved run: every training flag not given takes the checkpoint's value. */
static int adopt_training_settings(options *o, const tg_st_file *f)
{
    const tg_st_meta *m = tg_st_metadata(f);
    for (const flagdef *fl = g_flags; fl < g_flags + N_FLAGS; fl++)
        if (fl->meta && fl->type != F_SEED && !fl->set && set_value(fl, tg_st_meta_get(m, fl->meta), o, tg_st_label(f)))
            return -1;
    const char *v = tg_st_meta_get(m, "steps");
    long l = v ? atol(v) : o->steps;
    if (l != o->steps && strcmp(o->schedule, "cosine") == 0 && !o->quiet) /* a new total: a new schedule */
        fprintf(stderr, "train: note: the checkpoint's run had --steps %ld; with --steps %ld the cosine schedule "
                        "now decays over %ld steps, so the lr from here on differs from the original run's\n",
                l, o->steps, o->steps);
    return check_combinations(o);
}

/* ---------------------------------------------------------------- the run */

typedef struct {
    options o;
    tg_text_data d;
    tg_gpt_config cfg;
    tg_gpt *model;
    tg_generator gen;
    tg_text_windows win;
    tg_trainer *tr;
    int64_t start, stop;
    double t0, ema, val, last_draw;
} run;

/* Ctrl-C and SIGTERM: the step in progress ends, the run saves and exits 128 + the signal. */
static volatile sig_atomic_t g_signal;
static void on_signal(int sig) { g_signal = sig; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* From the prompt (checked at start-up), else the data's first characters (a sentence start the model saw),
 * with build/sample's default settings, so that a checkpoint samples alike in both. */
static void print_sample(run *r, const char *title)
{
    if (r->o.sample_tokens <= 0 || r->o.quiet)
        return;
    const size_t len = r->o.prompt ? strlen(r->o.prompt) : 0;
    int64_t np = r->d.n_train < 16 ? r->d.n_train : 16;
    int32_t *p = malloc((len > 16 ? len : 16) * sizeof *p);
    if (!p)
        tg_error("train", "out of memory");
    if (len == 0 || tg_tokenizer_encode(&r->d.tok, r->o.prompt, len, p, &np, NULL, 0) != 0)
        memcpy(p, r->d.ids, (size_t)(np = np > r->cfg.context_length ? r->cfg.context_length : np) * sizeof *p);
    const tg_sampling s = {TG_SAMPLE_TEMPERATURE, TG_SAMPLE_TOP_K, 1.0f};
    tg_gpt_print_sample(stdout, r->model, &r->d.tok, title, p, (int)np, (int)r->o.sample_tokens, &s, r->o.seed + 1,
                        isatty(STDOUT_FILENO));
    free(p);
}

/* "1.7952 nats = 2.590 bits/char (perplexity 6.02)": a loss per token in both units. */
static const char *units(const run *r, double nats, bool ppl, char *buf, size_t n)
{
    const char *unit = r->d.tok.kind == TG_TOK_BYTE ? "byte" : "char";
    int w = snprintf(buf, n, "%.4f nats = %.3f bits/%s", nats, nats / M_LN2, unit);
    if (ppl)
        snprintf(buf + w, n - (size_t)w, " (perplexity %.2f)", exp(nats));
    return buf;
}

static void on_eval(void *user, tg_trainer *tr, const tg_train_event *e)
{
    run *r = user;
    char u[96];
    r->val = e->val;
    if (tr->steps_done == 0 && !r->o.quiet) /* the start's; a step's evaluation is on its line */
        printf("step %" PRId64 "/%ld | val loss %s\n", e->step, r->o.steps, units(r, e->val, false, u, sizeof u));
}

static void on_sample(void *user, tg_trainer *tr, int64_t step)
{
    char title[64];
    snprintf(title, sizeof title, "sample at step %" PRId64, step);
    print_sample(user, tr->steps_done > 0 ? title : step == 0 ? "sample before training" : "sample at resume");
}

/* --dot and --grad-norms: the step's tape and gradients, right after its backward. */
static void on_backward(void *user, tg_trainer *tr, int64_t step, tg_tensor *loss)
{
    run *r = user;
    char *buf = NULL, why[600] = "out of memory";
    size_t len = 0;
    FILE *f = r->o.dot && step == r->start + 1 ? open_memstream(&buf, &len) : NULL;
    if (r->o.dot && step == r->start + 1) {
        if (!f || tg_tape_dot(NULL, f) != 0 || fclose(f) != 0 || tg_write_file(r->o.dot, buf, len, why, sizeof why))
            tg_error("train", "--dot %s: %s", r->o.dot, why);
        free(buf);
        tg_retain_grads(false); /* on for the graph's grad norms, the first step only */
    }
    int idx[10], n = r->o.grad_norms > 0 && step % r->o.grad_norms == 0 ? 10 : 0;
    double norm[10];
    n = n ? tg_grad_norms_top(tr->model.params, n, idx, norm) : 0;
    if (n)
        printf("%sgrad norms at step %" PRId64 " (largest %d, loss %.4f):\n", isatty(STDOUT_FILENO) ? "\r\033[K" : "",
               step, n, loss->data[0]);
    for (int i = 0; i < n; i++)
        printf("  %-40s %.6g\n", tr->model.params->items[idx[i]].name, norm[i]);
    fflush(stdout);
}

/* Piped: a line every --eval-every steps. On a terminal: one live line, redrawn at most every 0.1 s. */
static void on_step(void *user, tg_trainer *tr, const tg_train_event *e)
{
    run *r = user;
    r->ema = isnan(r->ema) ? e->loss : 0.9 * r->ema + 0.1 * e->loss;
    const int64_t every = r->o.eval_every > 0 ? r->o.eval_every : (r->o.steps / 10 > 0 ? r->o.steps / 10 : 1);
    const bool last = e->step == r->stop, tty = isatty(STDOUT_FILENO);
    char eta[32], vbuf[96] = "-", line[320];
    long t = lround((now_s() - r->t0) / (double)tr->steps_done * (double)(r->stop - e->step));
    if (t >= 3600)
        snprintf(eta, sizeof eta, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(eta, sizeof eta, "%ld:%02ld", t / 60, t % 60);
    snprintf(line, sizeof line, "step %" PRId64 "/%ld | batch loss %.4f | val loss %s | lr %.2e | %.0f tok/s | ETA %s",
             e->step, r->o.steps, r->ema, isnan(r->val) ? vbuf : units(r, r->val, false, vbuf, sizeof vbuf), e->lr,
             e->tokens_per_s, eta);
    if (!r->o.quiet && tty && (e->evaluated || last || now_s() - r->last_draw >= 0.1)) {
        /* the live line must not wrap, or "\r" would leave the wrapped part behind: the short form, then cut */
        struct winsize ws = {0};
        int width = ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0 ? 80 : ws.ws_col < 20 ? 20 : ws.ws_col;
        r->last_draw = now_s();
        if ((int)strlen(line) > width - 1)
            snprintf(line, sizeof line, "step %" PRId64 "/%ld | batch %.4f | val %.4f | lr %.2e | %.0f tok/s",
                     e->step, r->o.steps, r->ema, r->val, e->lr, e->tokens_per_s);
        line[width - 1 < (int)strlen(line) ? width - 1 : (int)strlen(line)] = '\0';
        printf("\r\033[K%s%s", line, e->evaluated || last ? "\n" : "");
    } else if (!r->o.quiet && !tty && (e->step % every == 0 || last || e->evaluated)) {
        printf("%s\n", line);
    }
    fflush(stdout);
}

/* The summary: both losses are evaluations (dropout off, the val loss's fixed windows), so they compare with
 * each other; the live "batch loss" is the training batches' loss with dropout on. */
static void summary(run *r, const char *what)
{
    tg_trainer *tr = r->tr;
    double trl = tg_trainer_evaluate(tr, TG_SPLIT_TRAIN);
    if (r->d.n_val > 0 && (isnan(r->val) || r->o.eval_every == 0 || tr->val_step[tr->n_val - 1] != tr->step))
        r->val = tg_trainer_evaluate(tr, TG_SPLIT_VAL);
    char u1[96], u2[96];
    printf("%s | eval loss (dropout off): train %s, val %s | %.0f tok/s | wall %.1f s\n", what,
           units(r, trl, true, u1, sizeof u1), isnan(r->val) ? "n/a" : units(r, r->val, true, u2, sizeof u2),
           tr->steps_done > 0 ? (double)(tr->steps_done * tr->src.tokens_per_step) / tr->train_seconds : 0.0,
           now_s() - r->t0);
}

/* ---------------------------------------------------------------- setup */

/* The checkpoint's metadata: format, config, tokenizer, step, the training settings, the data's hash. */
static void on_save_meta(void *user, tg_trainer *tr, tg_st_meta *m)
{
    run *r = user;
    tg_gpt_checkpoint_meta(&r->cfg, &r->d.tok, m);
    tg_st_meta_setf(m, "step", "%" PRId64, tr->step);
    for (const flagdef *f = g_flags; f < g_flags + N_FLAGS; f++) {
        const void *p = (const char *)&r->o + f->off;
        if (f->meta && f->type == F_DBL)
            tg_meta_set_double(m, f->meta, *(const double *)p);
        else if (f->meta && f->type == F_LONG)
            tg_st_meta_setf(m, f->meta, "%ld", *(const long *)p);
        else if (f->meta && f->type == F_SEED)
            tg_st_meta_setf(m, f->meta, "%" PRIu64, *(const uint64_t *)p);
        else if (f->meta)
            tg_st_meta_set(m, f->meta, *(const char *const *)p);
    }
    tg_st_meta_setf(m, "data_hash", "%016" PRIx64, tg_tokens_hash(r->d.ids, r->d.n_ids));
}

/* The checkpoint's model config and tokenizer, if it has them; a model flag the user gave must agree. */
static int adopt_checkpoint_config(run *r, const tg_st_file *f)
{
    const char *label = tg_st_label(f);
    tg_gpt_config c;
    bool has_tok;
    int rc = tg_gpt_checkpoint_config(f, &c, &r->d.tok, &has_tok, g_err, sizeof g_err);
    if (rc == 0 && r->o.resume)
        return fail("%s: not a tapegrad training checkpoint (no model config in its metadata)", label);
    if (rc <= 0) /* an error, or weights without a config (from PyTorch, say): the flags give the config */
        return rc;
    const struct {
        const char *flag;
        long want, have;
    } chk[] = {{"--layers", r->o.layers, c.n_layers}, {"--heads", r->o.heads, c.n_heads},
               {"--emb", r->o.emb, c.emb_dim},         {"--ctx", r->o.ctx, c.context_length},
               {"--qkv-bias", r->o.qkv_bias, c.qkv_bias}};
    for (size_t i = 0; i < sizeof chk / sizeof *chk; i++)
        if (given(chk[i].flag) && chk[i].want != chk[i].have)
            return fail("%s: checkpoint of another config: it has %s %ld, the command line asks for %ld", label,
                        chk[i].flag, chk[i].have, chk[i].want);
    const char *tk = r->d.tok.kind == TG_TOK_BYTE ? "byte" : "char";
    if (!has_tok && r->o.resume)
        return fail("%s: not a tapegrad training checkpoint (no tokenizer in its metadata)", label);
    if (has_tok && given("--tokenizer") && strcmp(tk, r->o.tokenizer) != 0)
        return fail("%s: checkpoint of another config: it has --tokenizer %s, the command line asks for %s", label,
                    tk, r->o.tokenizer);
    c.drop_rate = given("--dropout") ? (float)r->o.dropout : c.drop_rate;
    r->cfg = c;
    return 0;
}

/* The data (in the checkpoint's vocabulary, if it has one), long enough for the context. */
static int load_data(run *r)
{
    const options *o = &r->o;
    const int64_t T1 = r->cfg.context_length + 1;
    if (tg_text_data_load(&r->d, o->data, o->val_data, strcmp(o->tokenizer, "byte") ? TG_TOK_CHAR : TG_TOK_BYTE,
                          o->val_frac, g_err, sizeof g_err))
        return -1;
    if (r->d.n_ids < T1)
        return fail("%s: %" PRId64 " tokens is shorter than --ctx + 1 = %" PRId64, o->data, r->d.n_ids, T1);
    if (r->d.n_train < T1)
        return fail("%s: the training split has %" PRId64 " tokens, fewer than --ctx + 1 = %" PRId64 " (lower --ctx "
                    "or --val-frac)", o->data, r->d.n_train, T1);
    if (r->d.n_val > 0 && r->d.n_val < T1)
        return fail("%s: the validation %s has %" PRId64 " tokens, fewer than --ctx + 1 = %" PRId64 " (lower --ctx%s)",
                    o->val_data ? o->val_data : o->data, o->val_data ? "text" : "split", r->d.n_val, T1,
                    o->val_data ? "" : ", raise --val-frac, or --val-frac 0");
    return 0;
}

/* A checkpoint first (it may fix the config, the tokenizer and, resuming, the training flags), then the data,
 * the model and its weights, the trainer and its state, the log. */
static int setup(run *r, tg_st_file **f)
{
    options *o = &r->o;
    const char *outs[][2] = {{"--save", o->save}, {"--log", o->log}, {"--plot", o->plot}, {"--dot", o->dot}};
    const char *ck = o->resume ? o->resume : o->init, *h, *bt;
    char why[512];
    tg_st_error err;
    for (int i = 0; i < 4; i++)
        if (outs[i][1] && tg_output_path_check(outs[i][1], why, sizeof why))
            return fail("%s %s", outs[i][0], why);
    tg_set_num_threads((int)o->threads);
    r->cfg = (tg_gpt_config){.context_length = (int)o->ctx, .emb_dim = (int)o->emb, .n_heads = (int)o->heads,
                             .n_layers = (int)o->layers, .drop_rate = (float)o->dropout, .qkv_bias = o->qkv_bias};
    if (ck && tg_st_open(ck, f, &err))
        return fail("%s", err.msg);
    if ((*f && adopt_checkpoint_config(r, *f)) || (o->resume && adopt_training_settings(o, *f)) || load_data(r))
        return -1;
    snprintf(why, sizeof why, "%016" PRIx64, tg_tokens_hash(r->d.ids, r->d.n_ids));
    if (o->resume && (h = tg_st_meta_get(tg_st_metadata(*f), "data_hash")) && strcmp(h, why) != 0 && !o->quiet)
        fprintf(stderr, "train: note: %s holds other data than the run in %s was trained on\n", o->data, o->resume);
    if (o->resume && (bt = tg_st_meta_get(tg_st_metadata(*f), "batches")) && strcmp(bt, o->batches) != 0)
        fprintf(stderr, "train: note: the checkpoint was trained with --batches %s, continuing with %s\n", bt,
                o->batches);
    r->cfg.vocab_size = r->cfg.vocab_size ? r->cfg.vocab_size : r->d.tok.vocab_size;
    if (tg_gpt_config_check(&r->cfg, why, sizeof why))
        return fail("invalid model: %s", why);
    int32_t *tmp = o->prompt ? malloc((strlen(o->prompt) + 1) * sizeof *tmp) : NULL;
    int64_t n;
    bool bad = tmp && tg_tokenizer_encode(&r->d.tok, o->prompt, strlen(o->prompt), tmp, &n, why, sizeof why);
    free(tmp);
    if (bad || (o->prompt && !tmp))
        return fail("--prompt: %s", bad ? why : "out of memory");
    tg_manual_seed(&r->gen, o->seed);
    r->model = tg_gpt_new(&r->cfg, &r->gen);
    if (*f && tg_gpt_load(r->model, *f, true, &err))
        return fail("%s", err.msg);
    if (tg_text_windows_init(&r->win, r->d.train, r->d.n_train, r->d.val, r->d.n_val, (int)o->batch,
                             r->cfg.context_length, strcmp(o->batches, "random") ? TG_WINDOWS_SEQUENTIAL
                                                                                 : TG_WINDOWS_RANDOM,
                             o->eval_batches * o->batch, why, sizeof why))
        return fail("%s", why);
    tg_optim_kind k = (tg_optim_kind)tg_optim_kind_parse(o->optimizer);
    tg_trainer_config tc = {
        .optim = k == TG_OPTIM_SGD ? tg_sgd_config(o->lr) : k == TG_OPTIM_ADAM ? tg_adam_config(o->lr)
                                                                             : tg_adamw_config(o->lr),
        .sched = {.kind = (tg_lr_kind)tg_lr_kind_parse(o->schedule), .lr = o->lr, .min_lr = o->min_lr,
                  .warmup = o->warmup, .decay_iters = o->steps > o->warmup ? o->steps : o->warmup},
        .steps = o->steps, .clip = o->clip, .eval_every = o->eval_every, .sample_every = o->sample_every,
        .save_every = o->save_every, .save_path = o->save ? o->save : "interrupted.safetensors", .stop = &g_signal,
        .hooks = {.user = r, .on_eval = on_eval, .on_step = on_step, .on_sample = on_sample,
                  .on_save_meta = on_save_meta, .on_backward = on_backward}};
    tg_set_detect_anomaly(o->detect_anomaly);
    tg_retain_grads(o->dot != NULL);
    tc.optim.momentum = o->momentum;
    tc.optim.weight_decay = o->weight_decay;
    tg_train_model tm = tg_train_model_gpt(r->model);
    tg_batch_source src = tg_text_windows_source(&r->win);
    r->tr = tg_trainer_new(&tm, &src, &r->gen, &tc);
    if ((o->resume && tg_trainer_restore(r->tr, *f, why, sizeof why)) ||
        (o->log && !o->eval_only && tg_trainer_log_open(r->tr, o->log, o->resume != NULL, why, sizeof why)))
        return fail("%s", why);
    return 0;
}

/* ---------------------------------------------------------------- main */

/* The run's end: divergence, a signal, --stop-after or the last step; what was saved, the summary, the plot. */
static int finish(run *r, tg_train_status st)
{
    const options *o = &r->o;
    tg_trainer *tr = r->tr;
    const char *ck = tr->cfg.save_path;
    const int sig = g_signal;
    char why[512];
    if (isatty(STDOUT_FILENO) && !o->quiet && (st != TG_TRAIN_DONE || sig))
        printf("\n");
    snprintf(why, sizeof why, "; %s keeps the checkpoint of step %" PRId64, ck, tr->saved_step);
    if (st == TG_TRAIN_ESAVE)
        return fail("at step %" PRId64 ": %s", tr->step, tr->err);
    if (st == TG_TRAIN_DIVERGED)
        return fail("the %s became %g at step %" PRId64 " (try a lower --lr%s); nothing was saved%s",
                    tr->diverged_in_eval ? "val loss" : "loss", tr->last_loss, tr->step,
                    o->clip > 0 ? "" : " or --clip 1", tr->saved_step >= 0 ? why : "");
    if (sig && tr->steps_done == 0) {
        printf("interrupted before the first step: nothing was trained, so nothing was saved\n");
        return 128 + sig;
    }
    if (sig || tr->step < o->steps) { /* (a resumed run that trained nothing leaves its checkpoint as it was) */
        if (tg_trainer_save(tr, ck, why, sizeof why) || (o->plot && tg_trainer_plot(tr, o->plot, why, sizeof why)))
            return fail("%s", why);
        printf("%s at step %" PRId64 "/%ld: %s %s (continue with --resume %s)\n", sig ? "interrupted" : "stopped",
               tr->step, o->steps, tr->save_skipped ? "kept" : "saved", ck, ck);
        return sig ? 128 + sig : 0;
    }
    print_sample(r, "sample after training");
    snprintf(why, sizeof why, "done: %" PRId64 " steps", tr->steps_done);
    summary(r, why);
    if (o->save && tg_trainer_save(tr, o->save, why, sizeof why))
        return fail("%s", why);
    if (o->save)
        printf(tr->save_skipped ? "nothing trained: %s left as it was\n" : "saved %s\n", o->save);
    if (o->plot && tg_trainer_plot(tr, o->plot, why, sizeof why))
        return fail("%s", why);
    if (o->plot)
        printf("plot %s%s\n", o->plot, r->start > 0 && !tr->history_from_log
                                            ? " (this run's steps only: with --log the plot shows the whole run)" : "");
    return 0;
}

static int train(run *r)
{
    const options *o = &r->o;
    const char *unit = r->d.tok.kind == TG_TOK_BYTE ? "byte" : "char";
    r->start = r->tr->step;
    r->stop = o->stop_after >= 0 && r->start + o->stop_after < o->steps ? r->start + o->stop_after : o->steps;
    r->ema = r->val = NAN;
    r->t0 = now_s();
    if (!o->quiet)
        printf("model: %d layers, %d heads, emb %d, ctx %d, vocab %d (%s tokenizer), dropout %g%s: %" PRId64
               " parameters\ndata: %s: %" PRId64 " tokens, %" PRId64 " train / %" PRId64 " val%s%s; %s, lr %g (%s, "
               "warmup %ld), batch %ld, %s batches, %ld threads\n", r->cfg.n_layers, r->cfg.n_heads, r->cfg.emb_dim,
               r->cfg.context_length, r->cfg.vocab_size, unit, (double)r->cfg.drop_rate,
               r->cfg.qkv_bias ? ", qkv bias" : "", tg_params_numel(tg_gpt_params(r->model)), o->data, r->d.n_ids,
               r->d.n_train, r->d.n_val, o->val_data ? " in " : "", o->val_data ? o->val_data : "", o->optimizer,
               o->lr, o->schedule, o->warmup, o->batch, o->batches, o->threads);
    if (!o->quiet && r->start > 0)
        printf("resuming at step %" PRId64 "\n", r->start);
    if (!o->quiet && !o->eval_only && r->start >= o->steps)
        printf("nothing to train: the run is at step %" PRId64 " of --steps %ld (give a larger --steps to go on)\n",
               r->start, o->steps);
    else if (!o->quiet && !o->eval_only)
        printf("batch loss: the training batches' loss, smoothed (EMA 0.9), dropout on; val loss: the held-out "
               "split, dropout off; in nats per token and bits per %s\n", unit);
    if (o->eval_only)
        summary(r, "eval");
    return o->eval_only ? 0 : finish(r, tg_trainer_run(r->tr, r->stop));
}

/* Bad input below the argument parser goes through tg_error (an invalid config reaching a constructor, say). */
static void error_handler(const char *op, const char *msg, void *user)
{
    fflush(stdout);
    fprintf(stderr, "train: error: %s: %s\n", op, msg);
    if (*(const bool *)user) /* --detect-anomaly: abort, so gdb stops at the fault and a core can be left */
        abort();
    exit(1);
}

int main(int argc, char **argv)
{
    static run r;
    tg_st_file *f = NULL;
    tg_set_error_handler(error_handler, &r.o.detect_anomaly);
    if (parse_args(argc, argv, &r.o)) {
        fprintf(stderr, "train: error: %s\n", g_err);
        return 2;
    }
    /* before start-up: a signal there stops the run before its first step, and nothing is saved */
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = setup(&r, &f);
    tg_st_close(f);
    if (rc == 0 && g_signal)
        printf("interrupted during start-up: nothing was trained, so nothing was saved\n");
    rc = rc ? rc : g_signal ? 128 + g_signal : train(&r);
    if (rc < 0)
        fprintf(stderr, "train: error: %s\n", g_err);
    tg_trainer_free(r.tr);
    tg_text_windows_free(&r.win);
    tg_gpt_free(r.model);
    tg_text_data_free(&r.d);
    tg_tape_release_default();
    return rc < 0 ? 1 : rc;
}

/*
 * examples/train.c — next-token training of the book's GPTModel on a text file: a command line (the flags,
 * the printing, the signals) over the library: optim/gpt_run.h sets the run up from the flags (checkpoint,
 * data, model, trainer, the checkpoint's metadata), optim/trainer.h trains it (batches, evaluation,
 * checkpoints, the log and the plot).    build/train --data data/the-verdict.txt --seed 123
 * One generator (--seed) draws the initial weights, then dropout masks and random batches; samples use their
 * own (seed + 1), so printing them changes nothing. A checkpoint holds the weights (the book's state_dict
 * names), the optimizer state, and in its metadata the config, tokenizer, training flags, step and generator.
 */
#include "optim/gpt_run.h"

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
    tg_gpt_run_settings run; /* what the library sets the run up from */
    const char *plot, *dot;
    long threads, sample_tokens, stop_after, grad_norms;
    bool quiet, detect_anomaly;
} options;

/* One table: the parser, --help and the defaults come from it. */
typedef enum { F_HEAD, F_STR, F_CHOICE, F_LONG, F_DBL, F_SEED, F_BOOL } ftype;
typedef struct {
    const char *name;
    ftype type;
    size_t off;
    double lo, hi;              /* F_LONG, F_DBL: the range (open at hi for F_DBL with finite hi, at lo for "> 0") */
    const char *rule;           /* F_DBL: the range in words */
    const char *const *choices; /* F_CHOICE, NULL-terminated */
    const char *def, *help;     /* def: the default (NULL: none, or computed) */
    bool set;                   /* given on the command line */
} flagdef;

#define FL(n, t, f, lo, hi, rule, ch, def, help) {n, t, offsetof(options, f), lo, hi, rule, ch, def, help, 0}
#define R(f) run.f /* a setting of the library's run (optim/gpt_run.h) */
#define HEAD(n) {n, F_HEAD, 0, 0, 0, 0, 0, 0, 0, 0}
#define CH(...) (const char *const[]){__VA_ARGS__, NULL}
#define L40 1099511627776.0
static flagdef g_flags[] = {
    HEAD("training"),
    FL("--optimizer", F_CHOICE, R(optimizer), 0, 0, 0, CH("sgd", "adam", "adamw"), "adamw", ""),
    FL("--lr", F_DBL, R(lr), 0, INFINITY, "> 0", 0, "3e-3", "F  peak learning rate"),
    FL("--lr-schedule", F_CHOICE, R(schedule), 0, 0, 0, CH("const", "cosine"), "cosine", ""),
    FL("--steps", F_LONG, R(steps), 0, L40, 0, 0, "600", "N  the run's length (the cosine's too)"),
    FL("--seed", F_SEED, R(seed), 0, 0, 0, 0, "123", "N"),
    FL("--batches", F_CHOICE, R(batches), 0, 0, 0, CH("random", "sequential"), "random",
       "\n      random: row b starts at u32 % (N - T), one draw of the seeded generator (torch.randint);\n"
       "      sequential: row b of step i starts at ((i*B + b) * T) mod (N - T), from i alone\n"
       "      (N training tokens, T = --ctx, B = --batch; x = tokens[s:s+T], y = tokens[s+1:s+T+1])"),
    FL("--weight-decay", F_DBL, R(weight_decay), 0, INFINITY, ">= 0", 0, NULL,
       "F  on every parameter, as the book's AdamW(model.parameters()) [adamw 0.1, else 0]"),
    FL("--momentum", F_DBL, R(momentum), 0, 1, "in [0, 1)", 0, "0", "F  sgd only"),
    FL("--warmup", F_LONG, R(warmup), 0, L40, 0, 0, "20", "N  linear warmup steps"),
    FL("--min-lr", F_DBL, R(min_lr), 0, INFINITY, ">= 0", 0, NULL, "F  the cosine's floor [lr/10]"),
    FL("--clip", F_DBL, R(clip), 0, INFINITY, ">= 0 (0 turns clipping off;", 0, "1", "F  clip_grad_norm_, 0: off"),
    FL("--batch", F_LONG, R(batch), 1, 1 << 20, 0, 0, "32", "N  rows per step"),
    FL("--val-frac", F_DBL, R(val_frac), 0, 1, "in [0, 1)", 0, "0.1", "F  the end of the text validates"),
    FL("--threads", F_LONG, threads, 1, 256, 0, 0, NULL, "N [all cores]"),
    HEAD("data"),
    FL("--data", F_STR, R(data), 0, 0, 0, 0, NULL, "FILE  training text, a regular file of at most 1 GiB (required)"),
    FL("--val-data", F_STR, R(val_data), 0, 0, 0, 0, NULL, "FILE  validation text instead, in the training vocabulary"),
    FL("--tokenizer", F_CHOICE, R(tokenizer), 0, 0, 0, CH("char", "byte"), "char", "vocabulary: the text's or 256"),
    HEAD("model (the book's GPTModel)"),
    FL("--layers", F_LONG, R(layers), 1, 1024, 0, 0, "4", "N"),
    FL("--heads", F_LONG, R(heads), 1, 65536, 0, 0, "4", "N"),
    FL("--emb", F_LONG, R(emb), 1, 65536, 0, 0, "128", "N"),
    FL("--ctx", F_LONG, R(ctx), 1, 65536, 0, 0, "64", "N  context length"),
    FL("--dropout", F_DBL, R(dropout), 0, 1, "in [0, 1)", 0, "0.2", "F"),
    FL("--qkv-bias", F_BOOL, R(qkv_bias), 0, 0, 0, 0, NULL, " biases in the attention's query, key and value"),
    HEAD("evaluation and output (losses in nats per token, and in bits per char or byte)"),
    FL("--eval-every", F_LONG, R(eval_every), 0, L40, 0, 0, "50", "N  val loss every N steps, 0: never"),
    FL("--eval-batches", F_LONG, R(eval_batches), 1, 1 << 20, 0, 0, "8",
       "N  eval loss: N x --batch fixed windows spread over the split, dropout off"),
    FL("--sample-every", F_LONG, R(sample_every), 0, L40, 0, 0, "0", "N  0: off"),
    FL("--sample-tokens", F_LONG, sample_tokens, 0, 1 << 20, 0, 0, "200", "N  before/after training, 0: none"),
    FL("--prompt", F_STR, R(prompt), 0, 0, 0, 0, NULL, "TEXT  the samples' start [the data's start]"),
    FL("--log", F_STR, R(log), 0, 0, 0, 0, NULL,
       "FILE.csv  step,lr,train_loss,val_loss,tokens_per_s: train_loss is the step's batch (dropout\n"
       "      on), val_loss is set on eval steps (and step 0); --resume continues an existing log"),
    FL("--plot", F_STR, plot, 0, 0, 0, 0, NULL, "FILE.svg  loss curves (after --resume with --log: the whole run)"),
    FL("--quiet", F_BOOL, quiet, 0, 0, 0, 0, NULL, " only the summary"),
    HEAD("checkpoints (safetensors)"),
    FL("--save", F_STR, R(save), 0, 0, 0, 0, NULL, "FILE  written at the end (and at a signal or --stop-after)"),
    FL("--save-every", F_LONG, R(save_every), 0, L40, 0, 0, "0", "N  also every N steps; never NaN or Inf"),
    FL("--resume", F_STR, R(resume), 0, 0, 0, 0, NULL,
       "FILE  continue a run: weights, optimizer state, step, generator; model and training flags\n"
       "      not given default to the checkpoint's; saves back to FILE unless --save names another"),
    FL("--init", F_STR, R(init), 0, 0, 0, 0, NULL, "FILE  start from weights only (e.g. saved from PyTorch)"),
    FL("--stop-after", F_LONG, stop_after, 0, L40, 0, 0, NULL, "N  stop after N steps of this run, saving"),
    FL("--eval-only", F_BOOL, R(eval_only), 0, 0, 0, 0, NULL, " evaluate the --init or --resume checkpoint, exit"),
    HEAD("debugging (docs/DEBUGGING.md)"),
    FL("--detect-anomaly", F_BOOL, detect_anomaly, 0, 0, 0, 0, NULL, " stop at the first NaN an op or NaN/Inf a "
       "backward makes, naming\n      op, tape entry and module; errors then abort (gdb stops there, a core is left)"),
    FL("--dot", F_STR, dot, 0, 0, 0, 0, NULL, "FILE  the first step's graph, Graphviz DOT (dot -Tsvg FILE)"),
    FL("--grad-norms", F_LONG, grad_norms, 0, L40, 0, 0, "0", "N  every N steps the ten largest grad norms, 0: off"),
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

static bool given(const char *name) { return find_flag(name) && find_flag(name)->set; }

/* Parses v, a flag's value, into f's option. */
static int set_value(const flagdef *f, const char *v, options *o)
{
    void *p = (char *)o + f->off;
    char *end = NULL, opts[80] = "";
    errno = 0;
    bool num = f->type == F_DBL || f->type == F_LONG, dbl = f->type == F_DBL;
    double x = dbl ? strtod(v, &end) : num ? (double)strtol(v, &end, 10) : 0;
    bool bad = num && (errno || end == v || *end || (dbl && !isfinite(x)));
    bool in = x >= f->lo && (dbl && f->hi < INFINITY ? x < f->hi : x <= f->hi) &&
              !(f->rule && strncmp(f->rule, "> ", 2) == 0 && x == f->lo); /* "> 0": open at lo */
    int c = 0;
    while (f->type == F_CHOICE && f->choices[c] && strcmp(f->choices[c], v) != 0)
        c++;
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

static int parse_args(int argc, char **argv, options *o)
{
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    tg_gpt_run_settings *s = &o->run;
    *o = (options){.run = {.weight_decay = 0.1, .min_lr = -1.0 /* lr / 10 */, .given = given}, .stop_after = -1,
                   .threads = nc < 1 ? 1 : nc > 64 ? 64 : nc};
    for (const flagdef *f = g_flags; f < g_flags + N_FLAGS; f++)
        if (f->def)
            set_value(f, f->def, o);
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
        if (set_value(f, v, o))
            return -1;
        if (!*v && strcmp(name, "--prompt") != 0)
            return fail("%s needs a non-empty value", name);
    }
    s->save = s->resume && !s->save ? s->resume : s->save; /* a resumed run keeps saving where it came from */
    s->weight_decay = !given("--weight-decay") && strcmp(s->optimizer, "adamw") != 0 ? 0.0 : s->weight_decay;
    s->min_lr = s->min_lr < 0.0 ? s->lr / 10.0 : s->min_lr;
    return tg_gpt_run_check(s, g_err, sizeof g_err);
}

/* ---------------------------------------------------------------- the run */

typedef struct {
    options o;
    tg_gpt_run g; /* the data, the model, the trainer; g.s is o.run */
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

/* From the run's prompt, with build/sample's default settings, so that a checkpoint samples alike in both. */
static void print_sample(run *r, const char *title)
{
    const tg_sampling s = {TG_SAMPLE_TEMPERATURE, TG_SAMPLE_TOP_K, 1.0f};
    if (r->o.sample_tokens > 0 && !r->o.quiet)
        tg_gpt_print_sample(stdout, r->g.model, &r->g.d.tok, title, r->g.prompt, r->g.n_prompt, (int)r->o.sample_tokens,
                            &s, r->o.run.seed + 1, isatty(STDOUT_FILENO));
}

/* "1.7952 nats = 2.590 bits/char (perplexity 6.02)": a loss per token in both units. */
static const char *units(const run *r, double nats, bool ppl, char *buf, size_t n)
{
    const char *unit = r->g.d.tok.kind == TG_TOK_BYTE ? "byte" : "char";
    int w = snprintf(buf, n, "%.4f nats = %.3f bits/%s", nats, nats / M_LN2, unit);
    if (ppl)
        snprintf(buf + w, n - (size_t)w, " (perplexity %.2f)", exp(nats));
    return buf;
}

/* The trainer's callbacks get the tg_gpt_run; its user is this program's run. */
static void on_eval(void *user, tg_trainer *tr, const tg_train_event *e)
{
    run *r = ((tg_gpt_run *)user)->user;
    char u[96];
    r->val = e->val;
    if (tr->steps_done == 0 && !r->o.quiet) /* the start's; a step's evaluation is on its line */
        printf("step %" PRId64 "/%ld | val loss %s\n", e->step, r->o.run.steps, units(r, e->val, false, u, sizeof u));
}

static void on_sample(void *user, tg_trainer *tr, int64_t step)
{
    char title[64];
    snprintf(title, sizeof title, "sample at step %" PRId64, step);
    print_sample(((tg_gpt_run *)user)->user,
                 tr->steps_done > 0 ? title : step == 0 ? "sample before training" : "sample at resume");
}

/* --dot and --grad-norms: the step's tape and gradients, right after its backward. */
static void on_backward(void *user, tg_trainer *tr, int64_t step, tg_tensor *loss)
{
    run *r = ((tg_gpt_run *)user)->user;
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
    run *r = ((tg_gpt_run *)user)->user;
    const long steps = r->o.run.steps, eval_every = r->o.run.eval_every;
    r->ema = isnan(r->ema) ? e->loss : 0.9 * r->ema + 0.1 * e->loss;
    const int64_t every = eval_every > 0 ? eval_every : (steps / 10 > 0 ? steps / 10 : 1);
    const bool last = e->step == r->stop, tty = isatty(STDOUT_FILENO);
    char eta[32], vbuf[96] = "-", line[320];
    long t = lround((now_s() - r->t0) / (double)tr->steps_done * (double)(r->stop - e->step));
    if (t >= 3600)
        snprintf(eta, sizeof eta, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(eta, sizeof eta, "%ld:%02ld", t / 60, t % 60);
    snprintf(line, sizeof line, "step %" PRId64 "/%ld | batch loss %.4f | val loss %s | lr %.2e | %.0f tok/s | ETA %s",
             e->step, steps, r->ema, isnan(r->val) ? vbuf : units(r, r->val, false, vbuf, sizeof vbuf), e->lr,
             e->tokens_per_s, eta);
    if (!r->o.quiet && tty && (e->evaluated || last || now_s() - r->last_draw >= 0.1)) {
        /* the live line must not wrap, or "\r" would leave the wrapped part behind: the short form, then cut */
        struct winsize ws = {0};
        int width = ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0 ? 80 : ws.ws_col < 20 ? 20 : ws.ws_col;
        r->last_draw = now_s();
        if ((int)strlen(line) > width - 1)
            snprintf(line, sizeof line, "step %" PRId64 "/%ld | batch %.4f | val %.4f | lr %.2e | %.0f tok/s",
                     e->step, steps, r->ema, r->val, e->lr, e->tokens_per_s);
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
    tg_trainer *tr = r->g.tr;
    double trl = tg_trainer_evaluate(tr, TG_SPLIT_TRAIN);
    if (r->g.d.n_val > 0 && (isnan(r->val) || r->o.run.eval_every == 0 || tr->val_step[tr->n_val - 1] != tr->step))
        r->val = tg_trainer_evaluate(tr, TG_SPLIT_VAL);
    char u1[96], u2[96];
    printf("%s | eval loss (dropout off): train %s, val %s | %.0f tok/s | wall %.1f s\n", what,
           units(r, trl, true, u1, sizeof u1), isnan(r->val) ? "n/a" : units(r, r->val, true, u2, sizeof u2),
           tr->steps_done > 0 ? (double)(tr->steps_done * tr->src.tokens_per_step) / tr->train_seconds : 0.0,
           now_s() - r->t0);
}

/* ---------------------------------------------------------------- setup */

/* The output files first, then the library's setup; its notes on the checkpoint, even when it then failed. */
static int setup(run *r)
{
    const options *o = &r->o;
    const tg_gpt_run_settings *s = &o->run;
    const char *outs[][2] = {{"--save", s->save}, {"--log", s->log}, {"--plot", o->plot}, {"--dot", o->dot}};
    char why[512];
    for (int i = 0; i < 4; i++)
        if (outs[i][1] && tg_output_path_check(outs[i][1], why, sizeof why))
            return fail("%s %s", outs[i][0], why);
    tg_set_num_threads((int)o->threads);
    const tg_trainer_hooks hooks = {.user = r, .on_eval = on_eval, .on_step = on_step, .on_sample = on_sample,
                                    .on_backward = on_backward};
    int rc = tg_gpt_run_setup(&r->g, &r->o.run, &hooks, &g_signal, g_err, sizeof g_err);
    if (r->g.ck_steps >= 0 && r->g.ck_steps != s->steps && strcmp(s->schedule, "cosine") == 0 && !o->quiet)
        fprintf(stderr, "train: note: the checkpoint's run had --steps %ld; with --steps %ld the cosine schedule "
                        "now decays over %ld steps, so the lr from here on differs from the original run's\n",
                r->g.ck_steps, s->steps, s->steps);
    if (r->g.other_data && !o->quiet)
        fprintf(stderr, "train: note: %s holds other data than the run in %s was trained on\n", s->data, s->resume);
    if (r->g.ck_batches)
        fprintf(stderr, "train: note: the checkpoint was trained with --batches %s, continuing with %s\n",
                r->g.ck_batches, s->batches);
    tg_set_detect_anomaly(o->detect_anomaly);
    tg_retain_grads(o->dot != NULL);
    return rc;
}

/* ---------------------------------------------------------------- main */

/* The run's end: divergence, a signal, --stop-after or the last step; what was saved, the summary, the plot. */
static int finish(run *r, tg_train_status st)
{
    const options *o = &r->o;
    tg_trainer *tr = r->g.tr;
    const char *ck = tr->cfg.save_path, *save = o->run.save;
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
                    o->run.clip > 0 ? "" : " or --clip 1", tr->saved_step >= 0 ? why : "");
    if (sig && tr->steps_done == 0) {
        printf("interrupted before the first step: nothing was trained, so nothing was saved\n");
        return 128 + sig;
    }
    if (sig || tr->step < o->run.steps) { /* (a resumed run that trained nothing leaves its checkpoint as it was) */
        if (tg_trainer_save(tr, ck, why, sizeof why) || (o->plot && tg_trainer_plot(tr, o->plot, why, sizeof why)))
            return fail("%s", why);
        printf("%s at step %" PRId64 "/%ld: %s %s (continue with --resume %s)\n", sig ? "interrupted" : "stopped",
               tr->step, o->run.steps, tr->save_skipped ? "kept" : "saved", ck, ck);
        return sig ? 128 + sig : 0;
    }
    print_sample(r, "sample after training");
    snprintf(why, sizeof why, "done: %" PRId64 " steps", tr->steps_done);
    summary(r, why);
    if (save && tg_trainer_save(tr, save, why, sizeof why))
        return fail("%s", why);
    if (save)
        printf(tr->save_skipped ? "nothing trained: %s left as it was\n" : "saved %s\n", save);
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
    const tg_gpt_run_settings *s = &o->run;
    const tg_gpt_config *c = &r->g.cfg;
    const char *unit = r->g.d.tok.kind == TG_TOK_BYTE ? "byte" : "char";
    r->start = r->g.tr->step;
    r->stop = o->stop_after >= 0 && r->start + o->stop_after < s->steps ? r->start + o->stop_after : s->steps;
    r->ema = r->val = NAN;
    r->t0 = now_s();
    if (!o->quiet)
        printf("model: %d layers, %d heads, emb %d, ctx %d, vocab %d (%s tokenizer), dropout %g%s: %" PRId64
               " parameters\ndata: %s: %" PRId64 " tokens, %" PRId64 " train / %" PRId64 " val%s%s; %s, lr %g (%s, "
               "warmup %ld), batch %ld, %s batches, %ld threads\n", c->n_layers, c->n_heads, c->emb_dim,
               c->context_length, c->vocab_size, unit, (double)c->drop_rate, c->qkv_bias ? ", qkv bias" : "",
               tg_params_numel(tg_gpt_params(r->g.model)), s->data, r->g.d.n_ids, r->g.d.n_train, r->g.d.n_val,
               s->val_data ? " in " : "", s->val_data ? s->val_data : "", s->optimizer, s->lr, s->schedule, s->warmup,
               s->batch, s->batches, o->threads);
    if (!o->quiet && r->start > 0)
        printf("resuming at step %" PRId64 "\n", r->start);
    if (!o->quiet && !s->eval_only && r->start >= s->steps)
        printf("nothing to train: the run is at step %" PRId64 " of --steps %ld (give a larger --steps to go on)\n",
               r->start, s->steps);
    else if (!o->quiet && !s->eval_only)
        printf("batch loss: the training batches' loss, smoothed (EMA 0.9), dropout on; val loss: the held-out "
               "split, dropout off; in nats per token and bits per %s\n", unit);
    if (s->eval_only)
        summary(r, "eval");
    return s->eval_only ? 0 : finish(r, tg_trainer_run(r->g.tr, r->stop));
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
    tg_set_error_handler(error_handler, &r.o.detect_anomaly);
    if (parse_args(argc, argv, &r.o)) {
        fprintf(stderr, "train: error: %s\n", g_err);
        return 2;
    }
    /* before start-up: a signal there stops the run before its first step, and nothing is saved */
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = setup(&r);
    if (rc == 0 && g_signal)
        printf("interrupted during start-up: nothing was trained, so nothing was saved\n");
    rc = rc ? rc : g_signal ? 128 + g_signal : train(&r);
    if (rc < 0)
        fprintf(stderr, "train: error: %s\n", g_err);
    tg_gpt_run_free(&r.g);
    tg_tape_release_default();
    return rc < 0 ? 1 : rc;
}

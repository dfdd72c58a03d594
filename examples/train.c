/*
 * examples/train.c — next-token training of the book's GPTModel on a text file, a command line over the
 * library trainer (optim/trainer.h: the batch and evaluation formulas, checkpoints, the log and the plot).
 * This file holds the flags, the printing and the signal handling.
 *
 *   build/train --data data/the-verdict.txt --tokenizer char --seed 123
 *
 * One generator (seeded with --seed) draws the initial weights, then dropout masks and random batches;
 * samples use their own generator (seed + 1), so printing them changes nothing. A checkpoint holds the
 * weights under the book's state_dict names, the optimizer state ("optim.*"), and in __metadata__ the
 * config, tokenizer, training flags, step and generator: --resume continues an uninterrupted run's losses.
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- flags */

typedef struct {
    const char *data, *tokenizer, *optimizer, *schedule, *batches, *save, *resume, *init, *log, *plot, *prompt;
    double val_frac, dropout, lr, weight_decay, momentum, min_lr, clip;
    int layers, heads, emb, ctx, batch, threads;
    long steps, warmup, eval_every, eval_batches, sample_every, sample_tokens, stop_after;
    uint64_t seed;
    bool qkv_bias, quiet;
} options;

typedef enum { F_HEAD, F_STR, F_CHOICE, F_INT, F_LONG, F_DBL, F_SEED, F_BOOL } ftype;
typedef struct {
    const char *name;
    ftype type;
    size_t off;
    double lo, hi;              /* F_INT, F_LONG, F_DBL */
    const char *rule;           /* F_DBL: "> 0", "in [0, 1)"... (the range's ends are open where it says so) */
    const char *const *choices; /* F_CHOICE, NULL-terminated */
    const char *meta;           /* the checkpoint's key of a training setting (in the checkpoint's order) */
    bool adopt;                 /* --resume takes the checkpoint's value when the flag is not given */
    const char *help;
    bool set;                   /* given on the command line */
} flagdef;

#define O(f) offsetof(options, f)
#define L40 1099511627776.0
#define CH(...) (const char *const[]){__VA_ARGS__, NULL}
static flagdef g_flags[] = {
    {"training", F_HEAD, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"--optimizer", F_CHOICE, O(optimizer), 0, 0, 0, CH("sgd", "adam", "adamw"), "optimizer", 1, "[adamw]", 0},
    {"--lr", F_DBL, O(lr), 0, INFINITY, "> 0", 0, "lr", 1, "F  peak learning rate [3e-3]", 0},
    {"--lr-schedule", F_CHOICE, O(schedule), 0, 0, 0, CH("const", "cosine"), "lr_schedule", 1, "[cosine]", 0},
    {"--steps", F_LONG, O(steps), 0, L40, 0, 0, "steps", 1, "N  the run's length (the cosine's too) [600]", 0},
    {"--seed", F_SEED, O(seed), 0, 0, 0, 0, "seed", 0, "N [123]", 0},
    {"--batches", F_CHOICE, O(batches), 0, 0, 0, CH("random", "sequential"), "batches", 1,
     "[random]\n      random: row b starts at u32 % (N - T), one draw of the seeded generator (torch.randint);\n"
     "      sequential: row b of step i starts at ((i*B + b) * T) mod (N - T), from i alone\n"
     "      (N training tokens, T = --ctx, B = --batch; x = tokens[s:s+T], y = tokens[s+1:s+T+1])", 0},
    {"--weight-decay", F_DBL, O(weight_decay), 0, INFINITY, ">= 0", 0, "weight_decay", 1,
     "F  on every parameter, as the book's AdamW(model.parameters()) [adamw 0.1, else 0]", 0},
    {"--momentum", F_DBL, O(momentum), 0, 1, "in [0, 1)", 0, "momentum", 1, "F  sgd only [0]", 0},
    {"--warmup", F_LONG, O(warmup), 0, L40, 0, 0, "warmup", 1, "N  linear warmup steps [20]", 0},
    {"--min-lr", F_DBL, O(min_lr), 0, INFINITY, ">= 0", 0, "min_lr", 1, "F  the cosine's floor [lr/10]", 0},
    {"--clip", F_DBL, O(clip), 0, INFINITY, ">= 0 (0 turns clipping off;", 0, "clip", 1,
     "F  clip_grad_norm_ max norm (0: off) [1]", 0},
    {"--batch", F_INT, O(batch), 1, 1 << 20, 0, 0, "batch", 1, "N  rows per step [32]", 0},
    {"--threads", F_INT, O(threads), 1, 256, 0, 0, 0, 0, "N [all cores]", 0},
    {"data", F_HEAD, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"--data", F_STR, O(data), 0, 0, 0, 0, 0, 0, "FILE  training text (required)", 0},
    {"--val-frac", F_DBL, O(val_frac), 0, 1, "in [0, 1)", 0, "val_frac", 1,
     "F  fraction held out for validation, the end of the text [0.1]", 0},
    {"--tokenizer", F_CHOICE, O(tokenizer), 0, 0, 0, CH("char", "byte"), 0, 0,
     "char: vocabulary = the text's characters; byte: 256 [char]", 0},
    {"model (the book's GPTModel)", F_HEAD, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"--layers", F_INT, O(layers), 1, 1024, 0, 0, 0, 0, "N [4]", 0},
    {"--heads", F_INT, O(heads), 1, 65536, 0, 0, 0, 0, "N [4]", 0},
    {"--emb", F_INT, O(emb), 1, 65536, 0, 0, 0, 0, "N [128]", 0},
    {"--ctx", F_INT, O(ctx), 1, 65536, 0, 0, 0, 0, "N  context length [64]", 0},
    {"--dropout", F_DBL, O(dropout), 0, 1, "in [0, 1)", 0, 0, 0, "F [0.2]", 0},
    {"--qkv-bias", F_BOOL, O(qkv_bias), 0, 0, 0, 0, 0, 0, " biases in the attention's query, key and value", 0},
    {"evaluation and output", F_HEAD, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"--eval-every", F_LONG, O(eval_every), 0, L40, 0, 0, 0, 0, "N  val loss every N steps (0: never) [50]", 0},
    {"--eval-batches", F_LONG, O(eval_batches), 1, 1 << 20, 0, 0, 0, 0,
     "N  eval loss: N x --batch fixed windows spread over the split, dropout off; also\n"
     "      the summary's train loss [8]", 0},
    {"--sample-every", F_LONG, O(sample_every), 0, L40, 0, 0, 0, 0, "N  (0: off) [0]", 0},
    {"--sample-tokens", F_LONG, O(sample_tokens), 0, 1 << 20, 0, 0, 0, 0, "N  before/after training (0: none) [200]", 0},
    {"--prompt", F_STR, O(prompt), 0, 0, 0, 0, 0, 0, "TEXT  the samples' start [the data's start]", 0},
    {"--log", F_STR, O(log), 0, 0, 0, 0, 0, 0,
     "FILE.csv  step,lr,train_loss,val_loss,tokens_per_s: train_loss is the step's batch (dropout\n"
     "      on), val_loss is set on eval steps; --resume continues an existing log", 0},
    {"--plot", F_STR, O(plot), 0, 0, 0, 0, 0, 0, "FILE.svg  loss curves", 0},
    {"--quiet", F_BOOL, O(quiet), 0, 0, 0, 0, 0, 0, " only the summary", 0},
    {"checkpoints (safetensors)", F_HEAD, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"--save", F_STR, O(save), 0, 0, 0, 0, 0, 0, "FILE  written at the end (and on Ctrl-C)", 0},
    {"--resume", F_STR, O(resume), 0, 0, 0, 0, 0, 0,
     "FILE  continue a run: weights, optimizer state, step, generator; model and training flags\n"
     "      not given default to the checkpoint's; saves back to FILE unless --save names another", 0},
    {"--init", F_STR, O(init), 0, 0, 0, 0, 0, 0, "FILE  start from weights only (e.g. saved from PyTorch)", 0},
    {"--stop-after", F_LONG, O(stop_after), 0, L40, 0, 0, 0, 0, "N  stop after N steps of this run, saving as Ctrl-C does", 0},
};
#define N_FLAGS (sizeof g_flags / sizeof *g_flags)

static void usage(void)
{
    printf("usage: train --data FILE [flags]   (--flag value or --flag=value)");
    for (size_t k = 0; k < N_FLAGS; k++) {
        const flagdef *f = &g_flags[k];
        if (f->type == F_HEAD) {
            printf("\n%s:\n", f->name);
            continue;
        }
        printf("  %s", f->name);
        for (int i = 0; f->choices && f->choices[i]; i++)
            printf("%s%s", i ? "|" : " ", f->choices[i]);
        printf(f->choices ? "  %s\n" : " %s\n", f->help);
    }
    printf("Ctrl-C or SIGTERM saves a checkpoint (to --save, else interrupted.safetensors) and exits.\n");
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
    for (size_t k = 0; k < N_FLAGS; k++)
        if (strcmp(name, g_flags[k].name) == 0)
            return &g_flags[k];
    return NULL;
}

static bool given(const char *name) { return find_flag(name)->set; }

/* Parses v into the option of f (from a flag when from_meta is NULL, else from a checkpoint). */
static int set_value(const flagdef *f, const char *v, options *o, const char *from_meta)
{
    void *p = (char *)o + f->off;
    char *end, what[128];
    snprintf(what, sizeof what, from_meta ? "%s: metadata \"%s\" is missing or invalid" : "%s", from_meta ? from_meta : f->name,
             f->meta);
    if (from_meta && !v)
        return fail("%s", what);
    errno = 0;
    if (f->type == F_STR) {
        *(const char **)p = v;
    } else if (f->type == F_CHOICE) {
        const char *const *c = f->choices;
        int n = 0;
        while (c[n] && strcmp(c[n], v) != 0)
            n++;
        if (c[n]) {
            *(const char **)p = c[n]; /* a static string: outlives a checkpoint's metadata */
            return 0;
        }
        if (from_meta)
            return fail("%s", what);
        char opts[80] = "";
        for (int i = 0; c[i]; i++)
            snprintf(opts + strlen(opts), sizeof opts - strlen(opts), "%s%s", i == 0 ? "" : c[i + 1] ? ", " : " or ",
                     c[i]);
        return fail("%s must be %s (got '%s')", f->name, opts, v);
    } else if (f->type == F_INT || f->type == F_LONG) {
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end)
            return from_meta ? fail("%s", what) : fail("%s: '%s' is not an integer", f->name, v);
        if (x < f->lo || (double)x > f->hi)
            return from_meta ? fail("%s", what)
                             : fail("%s must be in [%.0f, %.0f] (got %ld)", f->name, f->lo, f->hi, x);
        if (f->type == F_INT)
            *(int *)p = (int)x;
        else
            *(long *)p = x;
    } else if (f->type == F_DBL) {
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x))
            return from_meta ? fail("%s", what) : fail("%s: '%s' is not a number", f->name, v);
        bool lo_open = f->rule[0] == '>' && f->rule[1] == ' ', hi_open = f->hi < INFINITY;
        if (!(lo_open ? x > f->lo : x >= f->lo) || !(hi_open ? x < f->hi : x <= f->hi)) {
            if (from_meta)
                return fail("%s", what);
            bool note = strchr(f->rule, '(') != NULL;
            return fail("%s must be %s%sgot %g)", f->name, f->rule, note ? " " : " (", x);
        }
        *(double *)p = x;
    } else if (f->type == F_SEED) {
        unsigned long long s = strtoull(v, &end, 10);
        if (errno || end == v || *end || v[0] == '-')
            return fail("--seed: '%s' is not a non-negative integer", v);
        *(uint64_t *)p = s;
    }
    return 0;
}

static void default_options(options *o)
{
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    *o = (options){.tokenizer = "char", .optimizer = "adamw", .schedule = "cosine", .batches = "random",
                   .val_frac = 0.1, .layers = 4, .heads = 4, .emb = 128, .ctx = 64, .dropout = 0.2, .batch = 32,
                   .steps = 600, .lr = 3e-3, .weight_decay = 0.1, .min_lr = -1.0 /* lr / 10 */, .clip = 1.0,
                   .warmup = 20, .seed = 123, .threads = nc < 1 ? 1 : nc > 64 ? 64 : (int)nc, .eval_every = 50,
                   .eval_batches = 8, .sample_tokens = 200, .stop_after = -1};
}

/* Constraints between flags (checked again after --resume fills some in). */
static int check_combinations(const options *o)
{
    if (o->min_lr > o->lr)
        return fail("--min-lr %g must not exceed --lr %g", o->min_lr, o->lr);
    if (o->momentum > 0.0 && strcmp(o->optimizer, "sgd") != 0)
        return fail("--momentum applies to --optimizer sgd only");
    if (o->emb % o->heads != 0)
        return fail("--heads %d does not divide --emb %d", o->heads, o->emb);
    return 0;
}

static int parse_args(int argc, char **argv, options *o)
{
    default_options(o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage();
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0)
            return fail("unexpected argument '%s' (flags start with --; see --help)", a);
        /* --flag value or --flag=value */
        char name[64];
        const char *v = strchr(a, '=');
        size_t nl = v ? (size_t)(v - a) : strlen(a);
        flagdef *f = NULL;
        if (nl < sizeof name) {
            memcpy(name, a, nl);
            name[nl] = '\0';
            f = find_flag(name);
        }
        if (!f)
            return fail("unknown flag '%s' (see --help)", nl < sizeof name ? name : a);
        f->set = true;
        if (f->type == F_BOOL) {
            *(bool *)((char *)o + f->off) = true;
            continue;
        }
        if (v)
            v++;
        else if (i + 1 < argc)
            v = argv[++i];
        else
            return fail("%s needs a value", name);
        if (set_value(f, v, o, NULL))
            return -1;
        if (!*v && strcmp(name, "--prompt") != 0)
            return fail("%s needs a non-empty value", name);
    }
    if (!o->data)
        return fail("--data FILE is required (see --help)");
    if (o->resume && o->init)
        return fail("--resume and --init cannot be combined (--resume continues a run, --init starts one)");
    if (o->resume && !o->save)
        o->save = o->resume; /* a resumed run keeps saving where it came from */
    if (!given("--weight-decay") && strcmp(o->optimizer, "adamw") != 0)
        o->weight_decay = 0.0;
    if (o->min_lr < 0.0)
        o->min_lr = o->lr / 10.0;
    return check_combinations(o);
}

/* --resume continues the saved run: every training flag not given on the
 * command line takes the checkpoint's value. */
static int adopt_training_settings(options *o, const tg_st_file *f)
{
    const tg_st_meta *m = tg_st_metadata(f);
    long saved_steps = o->steps;
    for (size_t k = 0; k < N_FLAGS; k++) {
        const flagdef *fl = &g_flags[k];
        if (fl->adopt && !fl->set && set_value(fl, tg_st_meta_get(m, fl->meta), o, tg_st_label(f)))
            return -1;
    }
    char *end;
    const char *v = tg_st_meta_get(m, "steps");
    long l = v ? strtol(v, &end, 10) : -1;
    (void)saved_steps;
    if (given("--steps") && v && !*end && l != o->steps && strcmp(o->schedule, "cosine") == 0 && !o->quiet)
        /* the cosine decays over --steps: a new total is a new schedule from here on */
        fprintf(stderr, "train: note: the checkpoint's run had --steps %ld; with --steps %ld the cosine schedule "
                        "now decays over %ld steps, so the lr from here on differs from the original run's\n",
                l, o->steps, o->steps);
    return check_combinations(o);
}

/* ---------------------------------------------------------------- the run */

typedef struct {
    options o;
    tg_tokenizer tok;
    int32_t *ids;
    int64_t n_ids, n_train, n_val;
    tg_gpt_config cfg;
    tg_gpt *model;
    tg_generator gen;
    tg_text_windows win;
    tg_trainer *tr;
    int64_t start, stop;
    double t0, ema, val, last_draw;
    bool tty;
} run;

static volatile sig_atomic_t g_interrupted;
static void on_signal(int sig) { g_interrupted = sig; }

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A sample's tokens; on a terminal, control bytes print as \xNN (tg_write_text). */
typedef struct {
    const tg_tokenizer *tok;
    bool escape;
} sample_printer;

static void print_token(int32_t id, void *ctx)
{
    const sample_printer *sp = ctx;
    tg_tokenizer_print(sp->tok, id, stdout, sp->escape);
    fflush(stdout);
}

static void print_sample(run *r, const char *title)
{
    if (r->o.sample_tokens <= 0 || r->o.quiet)
        return;
    const int T = r->cfg.context_length;
    /* the prompt (checked at start-up), else the first characters of the data (a sentence start the model saw) */
    size_t len = r->o.prompt ? strlen(r->o.prompt) : 0;
    int64_t np = r->n_train < 16 ? r->n_train : 16;
    np = np > T ? T : np;
    int32_t *ids = malloc((len + (size_t)np + (size_t)r->o.sample_tokens) * sizeof *ids);
    if (!ids)
        tg_error("train", "out of memory");
    if (len > 0 && tg_tokenizer_encode(&r->tok, r->o.prompt, len, ids, &np, NULL, 0) != 0)
        np = 0;
    else if (len == 0)
        memcpy(ids, r->ids, (size_t)np * sizeof *ids);
    /* the settings build/sample defaults to, so that a checkpoint samples alike in both */
    printf("--- %s (temperature %.1f, top-k %d) ---\n", title, (double)TG_SAMPLE_TEMPERATURE, TG_SAMPLE_TOP_K);
    sample_printer sp = {&r->tok, isatty(STDOUT_FILENO) == 1};
    for (int64_t i = 0; i < np; i++)
        print_token(ids[i], &sp);
    tg_generator sg;
    tg_manual_seed(&sg, r->o.seed + 1);
    tg_gpt_generate(r->model, ids, (int)np, (int)r->o.sample_tokens, TG_SAMPLE_TEMPERATURE, TG_SAMPLE_TOP_K, &sg,
                    print_token, &sp);
    printf("\n---\n");
    fflush(stdout);
    free(ids);
}

/* FNV-1a over the token ids: tells --resume whether the data is the same. */
static uint64_t data_hash(const run *r)
{
    uint64_t h = 1469598103934665603ull;
    for (int64_t i = 0; i < r->n_ids; i++)
        for (int k = 0; k < 4; k++) {
            h ^= ((uint32_t)r->ids[i] >> (8 * k)) & 0xffu;
            h *= 1099511628211ull;
        }
    return h;
}

/* The checkpoint's metadata: format, config, tokenizer, step, the training settings. */
static void on_save_meta(void *user, tg_trainer *tr, tg_st_meta *m)
{
    run *r = user;
    tg_st_meta_set(m, "format", "tapegrad-gpt");
    tg_gpt_config_to_meta(&r->cfg, m);
    tg_tokenizer_to_meta(&r->tok, m);
    tg_st_meta_setf(m, "step", "%" PRId64, tr->step);
    for (size_t k = 0; k < N_FLAGS; k++) {
        const flagdef *f = &g_flags[k];
        const void *p = (const char *)&r->o + f->off;
        if (!f->meta)
            continue;
        if (f->type == F_DBL)
            tg_meta_set_double(m, f->meta, *(const double *)p);
        else if (f->type == F_LONG)
            tg_st_meta_setf(m, f->meta, "%ld", *(const long *)p);
        else if (f->type == F_INT)
            tg_st_meta_setf(m, f->meta, "%d", *(const int *)p);
        else if (f->type == F_SEED)
            tg_st_meta_setf(m, f->meta, "%" PRIu64, *(const uint64_t *)p);
        else
            tg_st_meta_set(m, f->meta, *(const char *const *)p);
    }
    tg_st_meta_setf(m, "data_hash", "%016" PRIx64, data_hash(r));
}

/* Model config and tokenizer of a checkpoint that carries them; a model flag
 * the user gave must agree with it. */
static int adopt_checkpoint_config(run *r, const tg_st_file *f)
{
    const tg_st_meta *meta = tg_st_metadata(f);
    const char *label = tg_st_label(f);
    tg_st_error err;
    if (!tg_gpt_meta_has_config(meta)) {
        if (r->o.resume)
            return fail("%s: not a tapegrad training checkpoint (no model config in its metadata)", label);
        return 0; /* e.g. weights from PyTorch: the flags give the config */
    }
    tg_gpt_config c;
    if (tg_gpt_config_from_meta(&c, meta, label, &err))
        return fail("%s", err.msg);
    const struct {
        const char *flag;
        int want, have;
    } chk[] = {{"--layers", r->o.layers, c.n_layers}, {"--heads", r->o.heads, c.n_heads},
               {"--emb", r->o.emb, c.emb_dim},         {"--ctx", r->o.ctx, c.context_length},
               {"--qkv-bias", r->o.qkv_bias, c.qkv_bias}};
    for (size_t i = 0; i < sizeof chk / sizeof *chk; i++)
        if (given(chk[i].flag) && chk[i].want != chk[i].have)
            return fail("%s: checkpoint of another config: it has %s %d, the command line asks for %d", label,
                        chk[i].flag, chk[i].have, chk[i].want);
    if (given("--dropout"))
        c.drop_rate = (float)r->o.dropout;
    r->cfg = c;
    const char *tk = tg_st_meta_get(meta, "tokenizer");
    if (!tk)
        return r->o.resume ? fail("%s: not a tapegrad training checkpoint (no tokenizer in its metadata)", label) : 0;
    if (given("--tokenizer") && strcmp(tk, r->o.tokenizer) != 0)
        return fail("%s: checkpoint of another config: it has --tokenizer %s, the command line asks for %s", label,
                    tk, r->o.tokenizer);
    if (tg_tokenizer_from_meta(&r->tok, meta, label, &err))
        return fail("%s", err.msg);
    if (r->tok.vocab_size != c.vocab_size)
        return fail("%s: its tokenizer has %d symbols but vocab_size is %d", label, r->tok.vocab_size, c.vocab_size);
    return 0;
}

static int load_data(run *r)
{
    char *text, why[512];
    size_t len;
    if (tg_text_load(r->o.data, &text, &len, why, sizeof why))
        return fail("%s", why);
    int rc = 0;
    if (r->tok.vocab_size == 0) {
        if (strcmp(r->o.tokenizer, "byte") == 0)
            tg_tokenizer_byte_init(&r->tok);
        else if (tg_tokenizer_char_build(&r->tok, text, len, why, sizeof why))
            rc = fail("%s: %s", r->o.data, why);
    }
    if (!rc && !(r->ids = malloc((len ? len : 1) * sizeof *r->ids)))
        rc = fail("out of memory");
    if (!rc && tg_tokenizer_encode(&r->tok, text, len, r->ids, &r->n_ids, why, sizeof why))
        rc = fail("%s: %s (the checkpoint's tokenizer)", r->o.data, why);
    free(text);
    if (rc)
        return rc;
    const int T = r->o.ctx = r->cfg.context_length;
    if (r->n_ids < (int64_t)T + 1)
        return fail("%s: %" PRId64 " tokens is shorter than --ctx + 1 = %d", r->o.data, r->n_ids, T + 1);
    r->n_val = (int64_t)((double)r->n_ids * r->o.val_frac);
    r->n_train = r->n_ids - r->n_val;
    if (r->n_train < (int64_t)T + 1)
        return fail("%s: the training split has %" PRId64 " tokens, fewer than --ctx + 1 = %d (lower --ctx or "
                    "--val-frac)", r->o.data, r->n_train, T + 1);
    if (r->n_val > 0 && r->n_val < (int64_t)T + 1)
        return fail("%s: the validation split has %" PRId64 " tokens, fewer than --ctx + 1 = %d (lower --ctx, "
                    "raise --val-frac, or --val-frac 0)", r->o.data, r->n_val, T + 1);
    return 0;
}

/* An output file must be creatable: its directory exists and is writable
 * (checked up front, so a long run does not fail only at its end). */
static int check_output_path(const char *flag, const char *path)
{
    if (!path)
        return 0;
    char *dir = strdup(path), *slash = dir ? strrchr(dir, '/') : NULL;
    if (!dir)
        return fail("out of memory");
    const char *d = ".";
    if (slash) {
        slash[slash == dir ? 1 : 0] = '\0';
        d = dir;
    }
    struct stat st;
    int rc = 0;
    if (stat(d, &st) != 0 || !S_ISDIR(st.st_mode))
        rc = fail("%s %s: the directory '%s' does not exist", flag, path, d);
    else if (access(d, W_OK) != 0)
        rc = fail("%s %s: the directory '%s' is not writable", flag, path, d);
    else if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        rc = fail("%s %s: is a directory", flag, path);
    free(dir);
    return rc;
}

static int setup(run *r)
{
    options *o = &r->o;
    if (check_output_path("--save", o->save) || check_output_path("--log", o->log) ||
        check_output_path("--plot", o->plot))
        return -1;
    tg_set_num_threads(o->threads);
    r->cfg = (tg_gpt_config){.context_length = o->ctx, .emb_dim = o->emb, .n_heads = o->heads,
                             .n_layers = o->layers, .drop_rate = (float)o->dropout, .qkv_bias = o->qkv_bias};
    /* A checkpoint first: it may fix the config, the tokenizer and (--resume) the training settings. */
    const char *ck = o->resume ? o->resume : o->init;
    tg_st_file *f = NULL;
    tg_st_error err;
    char why[512];
    if (ck && tg_st_open(ck, &f, &err))
        return fail("%s", err.msg);
    int rc = f ? adopt_checkpoint_config(r, f) : 0;
    rc = rc ? rc : o->resume ? adopt_training_settings(o, f) : 0;
    rc = rc ? rc : load_data(r);
    if (!rc && o->resume) {
        const char *h = tg_st_meta_get(tg_st_metadata(f), "data_hash");
        char mine[32];
        snprintf(mine, sizeof mine, "%016" PRIx64, data_hash(r));
        if (h && strcmp(h, mine) != 0 && !o->quiet)
            fprintf(stderr, "train: note: %s holds other data than the run in %s was trained on\n", o->data, o->resume);
        const char *bt = tg_st_meta_get(tg_st_metadata(f), "batches");
        if (bt && strcmp(bt, o->batches) != 0)
            fprintf(stderr, "train: note: the checkpoint was trained with --batches %s, continuing with %s\n", bt,
                    o->batches);
    }
    if (!rc && r->cfg.vocab_size == 0)
        r->cfg.vocab_size = r->tok.vocab_size;
    if (!rc && tg_gpt_config_check(&r->cfg, why, sizeof why))
        rc = fail("invalid model: %s", why);
    if (!rc && o->prompt && *o->prompt) {
        int32_t *tmp = malloc(strlen(o->prompt) * sizeof *tmp);
        int64_t n;
        if (!tmp || tg_tokenizer_encode(&r->tok, o->prompt, strlen(o->prompt), tmp, &n, why, sizeof why))
            rc = fail("--prompt: %s", tmp ? why : "out of memory");
        free(tmp);
    }
    if (!rc) {
        tg_manual_seed(&r->gen, o->seed);
        r->model = tg_gpt_new(&r->cfg, &r->gen);
        if (f && tg_gpt_load(r->model, f, true, &err))
            rc = fail("%s", err.msg);
    }
    if (!rc && tg_text_windows_init(&r->win, r->ids, r->n_train, r->ids + r->n_train, r->n_val, o->batch, r->cfg.context_length,
                                    strcmp(o->batches, "sequential") == 0 ? TG_WINDOWS_SEQUENTIAL : TG_WINDOWS_RANDOM,
                                    o->eval_batches * o->batch, why, sizeof why))
        rc = fail("%s", why);
    if (rc) {
        tg_st_close(f);
        return rc;
    }
    tg_trainer_config tc = {.sched = {.kind = (tg_lr_kind)tg_lr_kind_parse(o->schedule), .lr = o->lr,
                                      .min_lr = o->min_lr, .warmup = o->warmup,
                                      .decay_iters = o->steps > o->warmup ? o->steps : o->warmup},
                            .steps = o->steps, .clip = o->clip, .eval_every = o->eval_every,
                            .sample_every = o->sample_every, .stop = &g_interrupted};
    switch (tg_optim_kind_parse(o->optimizer)) {
    case TG_OPTIM_SGD:
        tc.optim = tg_sgd_config(o->lr);
        tc.optim.momentum = o->momentum;
        break;
    case TG_OPTIM_ADAM: tc.optim = tg_adam_config(o->lr); break;
    default: tc.optim = tg_adamw_config(o->lr); break;
    }
    tc.optim.weight_decay = o->weight_decay;
    tg_train_model tm = tg_train_model_gpt(r->model);
    tg_batch_source src = tg_text_windows_source(&r->win);
    r->tr = tg_trainer_new(&tm, &src, &r->gen, &tc);
    rc = o->resume ? tg_trainer_restore(r->tr, f, why, sizeof why) : 0;
    tg_st_close(f);
    if (rc)
        return fail("%s", why);
    if (o->log && tg_trainer_log_open(r->tr, o->log, o->resume != NULL, why, sizeof why))
        return fail("%s", why);
    return 0;
}

/* ---------------------------------------------------------------- printing */

/* Columns of the terminal on stdout (80 if unknown), at least 20. */
static int terminal_width(void)
{
    struct winsize ws = {0};
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0)
        return 80;
    return ws.ws_col < 20 ? 20 : ws.ws_col > 255 ? 255 : ws.ws_col;
}

static void on_eval(void *user, tg_trainer *tr, const tg_train_event *e)
{
    run *r = user;
    r->val = e->val;
    if (tr->steps_done == 0 && !r->o.quiet) /* the start's; a step's evaluation is on its line */
        printf("step %" PRId64 "/%ld | val loss %.4f\n", e->step, r->o.steps, e->val);
}

static void on_sample(void *user, tg_trainer *tr, int64_t step)
{
    char title[64];
    snprintf(title, sizeof title, "sample at step %" PRId64, step);
    print_sample(user, tr->steps_done > 0 ? title : step == 0 ? "sample before training" : "sample at resume");
}

static void on_step(void *user, tg_trainer *tr, const tg_train_event *e)
{
    run *r = user;
    r->ema = isnan(r->ema) ? e->loss : 0.9 * r->ema + 0.1 * e->loss;
    if (r->o.quiet)
        return;
    const int64_t every = r->o.eval_every > 0 ? r->o.eval_every : (r->o.steps / 10 > 0 ? r->o.steps / 10 : 1);
    const bool last = e->step == r->stop;
    char eta[32], vbuf[32], line[256];
    long t = lround((now_s() - r->t0) / (double)tr->steps_done * (double)(r->stop - e->step));
    if (t >= 3600)
        snprintf(eta, sizeof eta, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(eta, sizeof eta, "%ld:%02ld", t / 60, t % 60);
    snprintf(vbuf, sizeof vbuf, isnan(r->val) ? "-" : "%.4f", r->val);
    snprintf(line, sizeof line, "step %" PRId64 "/%ld | batch loss %.4f | val loss %s | lr %.2e | %.0f tok/s | ETA %s",
             e->step, r->o.steps, r->ema, vbuf, e->lr, e->tokens_per_s, eta);
    if (r->tty && (e->evaluated || last || now_s() - r->last_draw >= 0.1)) {
        /* one live line: it must not wrap, or "\r" would leave the wrapped part behind */
        r->last_draw = now_s();
        int width = terminal_width();
        if ((int)strlen(line) > width - 1) /* the short form, then cut */
            snprintf(line, sizeof line, "step %" PRId64 "/%ld | batch %.4f | val %s | lr %.2e | %.0f tok/s | ETA %s",
                     e->step, r->o.steps, r->ema, vbuf, e->lr, e->tokens_per_s, eta);
        if ((int)strlen(line) > width - 1)
            line[width - 1] = '\0';
        printf("\r\033[K%s%s", line, e->evaluated || last ? "\n" : "");
        fflush(stdout);
    } else if (!r->tty && (e->step % every == 0 || last || e->evaluated)) {
        printf("%s\n", line);
        fflush(stdout);
    }
}

/* ---------------------------------------------------------------- main */

static int train(run *r)
{
    options *o = &r->o;
    tg_trainer *tr = r->tr;
    r->start = tr->step;
    r->stop = o->stop_after >= 0 && r->start + o->stop_after < o->steps ? r->start + o->stop_after : o->steps;
    r->tty = isatty(STDOUT_FILENO) && !o->quiet;
    r->ema = r->val = NAN;
    const char *ckpath = o->save ? o->save : "interrupted.safetensors";
    char why[512];
    if (!o->quiet) {
        printf("model: %d layers, %d heads, emb %d, ctx %d, vocab %d (%s tokenizer), dropout %g%s: %" PRId64
               " parameters\n", r->cfg.n_layers, r->cfg.n_heads, r->cfg.emb_dim, r->cfg.context_length,
               r->cfg.vocab_size, r->tok.kind == TG_TOK_BYTE ? "byte" : "char", (double)r->cfg.drop_rate,
               r->cfg.qkv_bias ? ", qkv bias" : "", tg_params_numel(tg_gpt_params(r->model)));
        printf("data: %s: %" PRId64 " tokens, %" PRId64 " train / %" PRId64 " val; %s, lr %g (%s, warmup %ld), batch "
               "%d, %s batches, %d threads\n", o->data, r->n_ids, r->n_train, r->n_val, o->optimizer, o->lr,
               o->schedule, o->warmup, o->batch, o->batches, o->threads);
        if (r->start > 0)
            printf("resuming at step %" PRId64 "\n", r->start);
        if (r->start >= o->steps)
            printf("nothing to train: the run is at step %" PRId64 " of --steps %ld (give a larger --steps to go "
                   "on)\n", r->start, o->steps);
        else
            printf("batch loss: the training batches' loss, smoothed (EMA 0.9), dropout on; val loss: the held-out "
                   "split, dropout off\n");
        fflush(stdout);
    }
    tr->cfg.hooks = (tg_trainer_hooks){.user = r, .on_eval = on_eval, .on_step = on_step, .on_sample = on_sample,
                                       .on_save_meta = on_save_meta};
    r->t0 = now_s();
    tg_train_status st = tg_trainer_run(tr, r->stop);
    if (st == TG_TRAIN_DIVERGED) {
        if (r->tty)
            printf("\n");
        return fail("the loss became %g at step %" PRId64 " (try a lower --lr or --clip 1)", tr->last_loss, tr->step);
    }
    bool interrupted = g_interrupted != 0;
    double wall = now_s() - r->t0;
    if (r->tty && interrupted)
        printf("\n");
    if (interrupted || tr->step < o->steps) {
        if (tg_trainer_save(tr, ckpath, why, sizeof why) || (o->plot && tg_trainer_plot(tr, o->plot, why, sizeof why)))
            return fail("%s", why);
        printf("%s at step %" PRId64 "/%ld: saved %s (continue with --resume %s)\n",
               interrupted ? "interrupted" : "stopped", tr->step, o->steps, ckpath, ckpath);
        return interrupted ? 130 : 0;
    }
    print_sample(r, "sample after training");
    double trl = tg_trainer_evaluate(tr, TG_SPLIT_TRAIN);
    if (r->n_val > 0 && (isnan(r->val) || o->eval_every == 0 || tr->n_val == 0 || tr->val_step[tr->n_val - 1] != tr->step))
        r->val = tg_trainer_evaluate(tr, TG_SPLIT_VAL);
    char vbuf[32];
    snprintf(vbuf, sizeof vbuf, isnan(r->val) ? "n/a" : "%.4f", r->val);
    /* Both losses of the summary are evaluations (dropout off, the same fixed windows as the val loss), so
     * they compare with each other; the live "batch loss" is the training batches' loss with dropout on. */
    printf("done: %" PRId64 " steps | eval loss (dropout off): train %.4f, val %s | %.0f tok/s | wall %.1f s\n",
           tr->steps_done, trl, vbuf,
           tr->steps_done > 0 ? (double)(tr->steps_done * tr->src.tokens_per_step) / tr->train_seconds : 0.0, wall);
    if (o->save) {
        if (tg_trainer_save(tr, o->save, why, sizeof why))
            return fail("%s", why);
        printf("saved %s\n", o->save);
    }
    if (o->plot) {
        if (tg_trainer_plot(tr, o->plot, why, sizeof why))
            return fail("%s", why);
        printf("plot %s\n", o->plot);
    }
    return 0;
}

/* Bad input anywhere below the argument parser goes through tg_error (an
 * invalid config reaching a constructor, say): report it in one line too. */
static void error_handler(const char *op, const char *msg, void *user)
{
    (void)user;
    fflush(stdout);
    fprintf(stderr, "train: error: %s: %s\n", op, msg);
    exit(1);
}

int main(int argc, char **argv)
{
    run r = {0};
    tg_set_error_handler(error_handler, NULL);
    if (parse_args(argc, argv, &r.o)) {
        fprintf(stderr, "train: error: %s\n", g_err);
        return 2;
    }
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = setup(&r);
    if (rc == 0)
        rc = train(&r);
    if (rc < 0) {
        fflush(stdout);
        fprintf(stderr, "train: error: %s\n", g_err);
        rc = 1;
    }
    tg_trainer_free(r.tr);
    tg_text_windows_free(&r.win);
    tg_gpt_free(r.model);
    tg_tokenizer_free(&r.tok);
    free(r.ids);
    tg_tape_release_default();
    return rc;
}

/*
 * examples/train.c — next-token training of the book's GPTModel on a text file.
 *
 *   build/train --data data/the-verdict.txt --tokenizer char --seed 123
 *
 * Run with --help for every flag. The defaults train a small char-level model
 * on the-verdict in about a minute on two cores (`make run`).
 *
 * Batches. Training windows are (x, y) = (tokens[s : s+T], tokens[s+1 : s+T+1])
 * over the training split of N tokens, T = --ctx, B = --batch.
 *   --batches random      (default) row b of every step: s = u32 % (N - T),
 *                         one 32-bit draw of the seeded generator per row (what
 *                         torch.randint(N - T, (B,)) does with that generator)
 *   --batches sequential  row b of step i: s = ((i*B + b) * T) mod (N - T),
 *                         from i alone: a run can be reproduced outside tapegrad.
 * Evaluation (deterministic, no draws): K = min(--eval-batches * B, (N-1)/T)
 * windows per split, window k starting at k*(N-1-T)/(K-1) (0 when K == 1),
 * mean cross-entropy over all of them, dropout off.
 * The split: the first (1 - --val-frac) of the tokens train, the rest validate.
 *
 * Output. The progress line's "batch loss" is the loss of the training
 * batches (dropout on), smoothed with an EMA of 0.9 (nanoGPT's "loss"); its
 * "val loss" is the evaluation above (nanoGPT's estimate_loss). The summary's
 * "eval loss" gives both splits evaluated that way, so train and val compare.
 * The --log CSV has the raw batch loss of every step and the val loss of the
 * eval steps; --resume continues a log (cut back to the checkpoint's step).
 *
 * One generator (seeded with --seed) draws the initial weights, then dropout
 * masks and random batches; samples use their own generator (seed + 1) so
 * printing them changes nothing. A checkpoint (--save, Ctrl-C) holds the
 * weights under the book's state_dict names, the optimizer state ("optim.*"),
 * and in __metadata__ the config, tokenizer, step and generator state, so
 * --resume continues with exactly the losses of an uninterrupted run.
 */
#include "nn/nn.h"
#include "optim/optim.h"
#include "tensor/kernels.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- options */

typedef struct {
    const char *data, *tokenizer, *optimizer, *schedule, *batches;
    double val_frac;
    int layers, heads, emb, ctx;
    double dropout;
    bool qkv_bias;
    int batch;
    long steps;
    double lr, weight_decay, momentum, min_lr, clip;
    long warmup;
    uint64_t seed;
    int threads;
    long eval_every, eval_batches, sample_every, sample_tokens, stop_after;
    const char *save, *resume, *init, *log, *plot, *prompt;
    bool quiet;
    /* which model / tokenizer flags the user gave (they must then match a checkpoint) */
    bool set_layers, set_heads, set_emb, set_ctx, set_qkv, set_tokenizer, set_wd, set_dropout;
    /* training flags: --resume takes the checkpoint's value for those not given */
    bool set_opt, set_lr, set_mom, set_warmup, set_sched, set_minlr, set_clip, set_batch, set_steps, set_batches,
        set_valfrac;
} options;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: train --data FILE [flags]\n"
            "data:\n"
            "  --data FILE             training text (required)\n"
            "  --val-frac F            fraction held out for validation, the end of the text [0.1]\n"
            "  --tokenizer char|byte   char: vocabulary = the text's characters; byte: 256 [char]\n"
            "model (the book's GPTModel):\n"
            "  --layers N [4]  --heads N [4]  --emb N [128]  --ctx N [64]  --dropout F [0.2]  --qkv-bias\n"
            "training:\n"
            "  --batch N [32]  --steps N [600]  --lr F [3e-3]  --optimizer sgd|adam|adamw [adamw]\n"
            "  --weight-decay F [adamw 0.1, else 0] (on every parameter, as the book's AdamW(model.parameters()))\n"
            "  --momentum F (sgd) [0]\n"
            "  --warmup N [20]  --lr-schedule const|cosine [cosine]  --min-lr F [lr/10]\n"
            "  --clip F  clip_grad_norm_ max norm (0: off) [1]\n"
            "  --batches random|sequential [random]  --seed N [123]  --threads N [all cores]\n"
            "    random: each row starts at u32 %% (N - T) (one draw of the seeded generator, as torch.randint);\n"
            "    sequential: row b of step i starts at ((i*B + b) * T) mod (N - T), from i alone\n"
            "    (N training tokens, T = --ctx, B = --batch; x = tokens[s:s+T], y = tokens[s+1:s+T+1])\n"
            "evaluation and output:\n"
            "  --eval-every N [50]  --eval-batches N [8]  (eval loss: N x --batch fixed windows spread over\n"
            "                  the split, dropout off; also the summary's train loss)\n"
            "  --sample-every N (0: off) [0]\n"
            "  --sample-tokens N (before/after training; 0: none) [200]  --prompt TEXT [the data's start]\n"
            "  --log FILE.csv  CSV step,lr,train_loss,val_loss,tokens_per_s: train_loss is the step's batch\n"
            "                  (dropout on), val_loss is set on eval steps; --resume continues an existing log\n"
            "  --plot FILE.svg  loss curves   --quiet  only the summary\n"
            "checkpoints (safetensors):\n"
            "  --save FILE       write the checkpoint at the end (and on Ctrl-C)\n"
            "  --resume FILE     continue a run: weights, optimizer state, step, generator; model and\n"
            "                    training flags not given default to the checkpoint's; saves back to\n"
            "                    FILE unless --save names another (--log and --plot are not stored)\n"
            "  --init FILE       start from weights only (e.g. saved from PyTorch)\n"
            "  --stop-after N    stop after N steps of this run, saving as Ctrl-C does\n"
            "Ctrl-C saves a checkpoint (to --save, else interrupted.safetensors) and exits.\n");
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

static int parse_long(const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end)
        return fail("%s: '%s' is not an integer", flag, s);
    if (v < lo || v > hi)
        return fail("%s must be in [%ld, %ld] (got %ld)", flag, lo, hi, v);
    *out = v;
    return 0;
}

static int parse_int(const char *flag, const char *s, int lo, int hi, int *out)
{
    long v;
    if (parse_long(flag, s, lo, hi, &v))
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_double(const char *flag, const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return fail("%s: '%s' is not a number", flag, s);
    *out = v;
    return 0;
}

static void default_options(options *o)
{
    memset(o, 0, sizeof *o);
    o->tokenizer = "char";
    o->optimizer = "adamw";
    o->schedule = "cosine";
    o->batches = "random";
    o->val_frac = 0.1;
    o->layers = 4;
    o->heads = 4;
    o->emb = 128;
    o->ctx = 64;
    o->dropout = 0.2;
    o->batch = 32;
    o->steps = 600;
    o->lr = 3e-3;
    o->weight_decay = 0.1;
    o->momentum = 0.0;
    o->min_lr = -1.0;     /* lr / 10 */
    o->clip = 1.0;
    o->warmup = 20;
    o->seed = 123;
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    o->threads = nc < 1 ? 1 : nc > 64 ? 64 : (int)nc;
    o->eval_every = 50;
    o->eval_batches = 8;
    o->sample_every = 0;
    o->sample_tokens = 200;
    o->stop_after = -1;
}

static int check_combinations(const options *o);

static int parse_args(int argc, char **argv, options *o)
{
    default_options(o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strcmp(a, "--qkv-bias") == 0) {
            o->qkv_bias = o->set_qkv = true;
            continue;
        }
        if (strcmp(a, "--quiet") == 0) {
            o->quiet = true;
            continue;
        }
        if (strncmp(a, "--", 2) != 0)
            return fail("unexpected argument '%s' (flags start with --; see --help)", a);
        /* --flag value or --flag=value */
        char name[64];
        const char *v = strchr(a, '=');
        size_t nl = v ? (size_t)(v - a) : strlen(a);
        if (nl >= sizeof name)
            return fail("unknown flag '%s' (see --help)", a);
        memcpy(name, a, nl);
        name[nl] = '\0';
        static const char *const known[] = {
            "--data", "--val-frac", "--tokenizer", "--layers", "--heads", "--emb", "--ctx", "--dropout", "--batch",
            "--steps", "--lr", "--optimizer", "--weight-decay", "--momentum", "--warmup", "--lr-schedule",
            "--min-lr", "--clip", "--seed", "--threads", "--eval-every", "--eval-batches", "--save", "--resume",
            "--init", "--log", "--sample-every", "--sample-tokens", "--prompt", "--plot", "--batches",
            "--stop-after"};
        bool ok = false;
        for (size_t k = 0; k < sizeof known / sizeof *known; k++)
            ok |= strcmp(name, known[k]) == 0;
        if (!ok)
            return fail("unknown flag '%s' (see --help)", name);
        if (v)
            v++;
        else if (i + 1 < argc)
            v = argv[++i];
        else
            return fail("%s needs a value", name);
        int rc = 0;
        if (!strcmp(name, "--data"))
            o->data = v;
        else if (!strcmp(name, "--val-frac")) {
            rc = parse_double(name, v, &o->val_frac);
            o->set_valfrac = true;
            if (!rc && !(o->val_frac >= 0.0 && o->val_frac < 1.0))
                rc = fail("--val-frac must be in [0, 1) (got %g)", o->val_frac);
        } else if (!strcmp(name, "--tokenizer")) {
            o->tokenizer = v;
            o->set_tokenizer = true;
            if (strcmp(v, "char") && strcmp(v, "byte"))
                rc = fail("--tokenizer must be char or byte (got '%s')", v);
        } else if (!strcmp(name, "--layers")) {
            rc = parse_int(name, v, 1, 1024, &o->layers);
            o->set_layers = true;
        } else if (!strcmp(name, "--heads")) {
            rc = parse_int(name, v, 1, 65536, &o->heads);
            o->set_heads = true;
        } else if (!strcmp(name, "--emb")) {
            rc = parse_int(name, v, 1, 65536, &o->emb);
            o->set_emb = true;
        } else if (!strcmp(name, "--ctx")) {
            rc = parse_int(name, v, 1, 65536, &o->ctx);
            o->set_ctx = true;
        } else if (!strcmp(name, "--dropout")) {
            rc = parse_double(name, v, &o->dropout);
            o->set_dropout = true;
            if (!rc && !(o->dropout >= 0.0 && o->dropout < 1.0))
                rc = fail("--dropout must be in [0, 1) (got %g)", o->dropout);
        } else if (!strcmp(name, "--batch"))
            rc = parse_int(name, v, 1, 1 << 20, &o->batch), o->set_batch = true;
        else if (!strcmp(name, "--steps"))
            rc = parse_long(name, v, 0, 1L << 40, &o->steps), o->set_steps = true;
        else if (!strcmp(name, "--lr")) {
            rc = parse_double(name, v, &o->lr);
            o->set_lr = true;
            if (!rc && !(o->lr > 0.0))
                rc = fail("--lr must be > 0 (got %g)", o->lr);
        } else if (!strcmp(name, "--optimizer")) {
            o->optimizer = v;
            o->set_opt = true;
            if (tg_optim_kind_parse(v) < 0)
                rc = fail("--optimizer must be sgd, adam or adamw (got '%s')", v);
        } else if (!strcmp(name, "--weight-decay")) {
            rc = parse_double(name, v, &o->weight_decay);
            o->set_wd = true;
            if (!rc && !(o->weight_decay >= 0.0))
                rc = fail("--weight-decay must be >= 0 (got %g)", o->weight_decay);
        } else if (!strcmp(name, "--momentum")) {
            rc = parse_double(name, v, &o->momentum);
            o->set_mom = true;
            if (!rc && !(o->momentum >= 0.0 && o->momentum < 1.0))
                rc = fail("--momentum must be in [0, 1) (got %g)", o->momentum);
        } else if (!strcmp(name, "--warmup"))
            rc = parse_long(name, v, 0, 1L << 40, &o->warmup), o->set_warmup = true;
        else if (!strcmp(name, "--lr-schedule")) {
            o->schedule = v;
            o->set_sched = true;
            if (tg_lr_kind_parse(v) < 0)
                rc = fail("--lr-schedule must be const or cosine (got '%s')", v);
        } else if (!strcmp(name, "--min-lr")) {
            rc = parse_double(name, v, &o->min_lr);
            o->set_minlr = true;
            if (!rc && !(o->min_lr >= 0.0))
                rc = fail("--min-lr must be >= 0 (got %g)", o->min_lr);
        } else if (!strcmp(name, "--clip")) {
            rc = parse_double(name, v, &o->clip);
            o->set_clip = true;
            if (!rc && !(o->clip >= 0.0))
                rc = fail("--clip must be >= 0 (0 turns clipping off; got %g)", o->clip);
        } else if (!strcmp(name, "--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-')
                rc = fail("--seed: '%s' is not a non-negative integer", v);
            o->seed = s;
        } else if (!strcmp(name, "--threads"))
            rc = parse_int(name, v, 1, 256, &o->threads);
        else if (!strcmp(name, "--eval-every"))
            rc = parse_long(name, v, 0, 1L << 40, &o->eval_every);
        else if (!strcmp(name, "--eval-batches"))
            rc = parse_long(name, v, 1, 1L << 20, &o->eval_batches);
        else if (!strcmp(name, "--sample-every"))
            rc = parse_long(name, v, 0, 1L << 40, &o->sample_every);
        else if (!strcmp(name, "--sample-tokens"))
            rc = parse_long(name, v, 0, 1L << 20, &o->sample_tokens);
        else if (!strcmp(name, "--stop-after"))
            rc = parse_long(name, v, 0, 1L << 40, &o->stop_after);
        else if (!strcmp(name, "--batches")) {
            o->batches = v;
            o->set_batches = true;
            if (strcmp(v, "random") && strcmp(v, "sequential"))
                rc = fail("--batches must be random or sequential (got '%s')", v);
        } else if (!strcmp(name, "--save"))
            o->save = v;
        else if (!strcmp(name, "--resume"))
            o->resume = v;
        else if (!strcmp(name, "--init"))
            o->init = v;
        else if (!strcmp(name, "--log"))
            o->log = v;
        else if (!strcmp(name, "--plot"))
            o->plot = v;
        else if (!strcmp(name, "--prompt"))
            o->prompt = v;
        if (rc)
            return rc;
        if (v && !*v && strcmp(name, "--prompt") != 0)
            return fail("%s needs a non-empty value", name);
    }
    if (!o->data)
        return fail("--data FILE is required (see --help)");
    if (o->resume && o->init)
        return fail("--resume and --init cannot be combined (--resume continues a run, --init starts one)");
    if (o->resume && !o->save)
        o->save = o->resume; /* a resumed run keeps saving where it came from */
    if (!o->set_wd && strcmp(o->optimizer, "adamw") != 0)
        o->weight_decay = 0.0;
    if (o->min_lr < 0.0)
        o->min_lr = o->lr / 10.0;
    return check_combinations(o);
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

/* ---------------------------------------------------------------- generator state in metadata */

static void rng_to_meta(const tg_generator *g, tg_st_meta *m)
{
    /* "<index> <has_normal> <normal as hex bits> <624 words in hex>" */
    size_t cap = 624 * 9 + 128;
    char *s = malloc(cap);
    if (!s)
        tg_error("train", "out of memory");
    uint64_t bits;
    memcpy(&bits, &g->next_double_normal, 8);
    int n = snprintf(s, cap, "%d %d %016" PRIx64 " %" PRIu64, g->index, g->has_next_double_normal ? 1 : 0, bits,
                     g->seed);
    for (int i = 0; i < 624; i++)
        n += snprintf(s + n, cap - (size_t)n, " %08" PRIx32, g->state[i]);
    tg_st_meta_set(m, "rng", s);
    free(s);
}

static bool rng_from_meta(tg_generator *g, const char *s)
{
    if (!s)
        return false;
    tg_generator r;
    memset(&r, 0, sizeof r);
    int has, used;
    uint64_t bits;
    if (sscanf(s, "%d %d %16" SCNx64 " %" SCNu64 "%n", &r.index, &has, &bits, &r.seed, &used) != 4)
        return false;
    if (r.index < 0 || r.index > 624 || (has != 0 && has != 1))
        return false;
    s += used;
    for (int i = 0; i < 624; i++) {
        if (sscanf(s, " %8" SCNx32 "%n", &r.state[i], &used) != 1)
            return false;
        s += used;
    }
    if (*s)
        return false;
    r.has_next_double_normal = has;
    memcpy(&r.next_double_normal, &bits, 8);
    *g = r;
    return true;
}

/* ---------------------------------------------------------------- the run */

typedef struct {
    int32_t *tok;
    int64_t n;
} split;

typedef struct {
    options o;
    tg_tokenizer tok;
    int32_t *ids;
    int64_t n_ids;
    split train, val;
    tg_gpt_config cfg;
    tg_gpt *model;
    tg_generator gen;
    tg_optim *opt;
    tg_lr_schedule sched;
    int64_t step;           /* steps done */
    int32_t *x, *y;         /* (B, T) */
    FILE *log;
    /* loss history for the plot */
    float *hist_train;
    int64_t hist_n, hist_cap;
    float *hist_val;
    int64_t *hist_val_step;
    int64_t nval, cap_val;
    bool tty;
} run;

static volatile sig_atomic_t g_interrupted;
static void on_signal(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The rows of one training batch (see the header comment for the formulas). */
static void make_batch(run *r, int64_t step)
{
    const int B = r->o.batch, T = r->cfg.context_length;
    const int64_t span = r->train.n - T;   /* >= 1: windows start in [0, span) */
    bool seq = strcmp(r->o.batches, "sequential") == 0;
    for (int b = 0; b < B; b++) {
        int64_t s = seq ? (int64_t)(((uint64_t)step * (uint64_t)B + (uint64_t)b) * (uint64_t)T % (uint64_t)span)
                        : (int64_t)(tg_random_u32(&r->gen) % (uint64_t)span);
        memcpy(r->x + (int64_t)b * T, r->train.tok + s, (size_t)T * sizeof(int32_t));
        memcpy(r->y + (int64_t)b * T, r->train.tok + s + 1, (size_t)T * sizeof(int32_t));
    }
}

/* Mean loss over the split's evaluation windows; NAN for an empty split. */
static double evaluate(run *r, const split *sp)
{
    const int T = r->cfg.context_length, B = r->o.batch;
    if (sp->n < T + 1)
        return NAN;
    int64_t K = r->o.eval_batches * B, fit = (sp->n - 1) / T;
    if (K > fit)
        K = fit;
    if (K < 1)
        K = 1;
    bool was = r->model->training;
    tg_gpt_train(r->model, false);
    bool grad = tg_set_grad_enabled(false);
    double total = 0.0;
    for (int64_t k0 = 0; k0 < K; k0 += B) {
        int nb = (int)(K - k0 < B ? K - k0 : B);
        for (int b = 0; b < nb; b++) {
            int64_t k = k0 + b;
            int64_t s = K == 1 ? 0 : k * (sp->n - 1 - T) / (K - 1);
            memcpy(r->x + (int64_t)b * T, sp->tok + s, (size_t)T * sizeof(int32_t));
            memcpy(r->y + (int64_t)b * T, sp->tok + s + 1, (size_t)T * sizeof(int32_t));
        }
        tg_tensor *loss = tg_cross_entropy(tg_gpt_forward(r->model, r->x, nb, T), r->y);
        total += (double)loss->data[0] * nb;
        tg_tape_reset(NULL);
    }
    tg_set_grad_enabled(grad);
    tg_gpt_train(r->model, was);
    return total / (double)K;
}

static void print_token(int32_t id, void *ctx)
{
    const tg_tokenizer *t = ctx;
    char buf[4];
    int n = tg_tokenizer_decode(t, id, buf);
    fwrite(buf, 1, (size_t)n, stdout);
    fflush(stdout);
}

static void print_sample(run *r, const char *title)
{
    if (r->o.sample_tokens <= 0 || r->o.quiet)
        return;
    const int T = r->cfg.context_length;
    int32_t *ids = NULL;
    int64_t np = 0;
    if (r->o.prompt && *r->o.prompt) {
        size_t len = strlen(r->o.prompt);
        ids = malloc((len + (size_t)r->o.sample_tokens) * sizeof *ids);
        if (!ids)
            tg_error("train", "out of memory");
        if (tg_tokenizer_encode(&r->tok, r->o.prompt, len, ids, &np, NULL, 0) != 0)
            np = 0; /* checked at startup */
    } else {
        /* the first characters of the data (a sentence start the model has seen) */
        np = r->train.n < 16 ? r->train.n : 16;
        if (np > T)
            np = T;
        ids = malloc(((size_t)np + (size_t)r->o.sample_tokens) * sizeof *ids);
        if (!ids)
            tg_error("train", "out of memory");
        memcpy(ids, r->train.tok, (size_t)np * sizeof *ids);
    }
    printf("--- %s (temperature 0.8, top-k 20) ---\n", title);
    for (int64_t i = 0; i < np; i++)
        print_token(ids[i], &r->tok);
    tg_generator sg;
    tg_manual_seed(&sg, r->o.seed + 1);
    tg_gpt_generate(r->model, ids, (int)np, (int)r->o.sample_tokens, 0.8f, 20, &sg, print_token, &r->tok);
    printf("\n---\n");
    fflush(stdout);
    free(ids);
}

/* ---------------------------------------------------------------- checkpoints */

/* FNV-1a over the token ids: tells --resume whether the data is the same. */
static uint64_t data_hash(const run *r)
{
    uint64_t h = 1469598103934665603ull;
    for (int64_t i = 0; i < r->n_ids; i++) {
        uint32_t v = (uint32_t)r->ids[i];
        for (int k = 0; k < 4; k++) {
            h ^= (v >> (8 * k)) & 0xffu;
            h *= 1099511628211ull;
        }
    }
    return h;
}

static bool meta_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0.0;
    if (!s || errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool meta_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* --resume continues the saved run: every training flag not given on the
 * command line takes the checkpoint's value. */
static int adopt_training_settings(run *r, const tg_st_file *f)
{
    options *o = &r->o;
    const tg_st_meta *m = tg_st_metadata(f);
    const char *label = tg_st_label(f), *v;
    long l;
#define BAD(key) return fail("%s: metadata \"%s\" is missing or invalid", label, key)
    if (!o->set_opt) {
        int k = tg_optim_kind_parse(tg_st_meta_get(m, "optimizer") ? tg_st_meta_get(m, "optimizer") : "");
        if (k < 0)
            BAD("optimizer");
        o->optimizer = tg_optim_kind_name((tg_optim_kind)k);
    }
    if (!o->set_sched) {
        int k = tg_lr_kind_parse((v = tg_st_meta_get(m, "lr_schedule")) ? v : "");
        if (k < 0)
            BAD("lr_schedule");
        o->schedule = tg_lr_kind_name((tg_lr_kind)k);
    }
    if (!o->set_batches) {
        v = tg_st_meta_get(m, "batches");
        if (!v || (strcmp(v, "random") && strcmp(v, "sequential")))
            BAD("batches");
        o->batches = strcmp(v, "random") == 0 ? "random" : "sequential";
    }
    if (!o->set_lr && !meta_double(tg_st_meta_get(m, "lr"), 1e-300, 1e300, &o->lr))
        BAD("lr");
    if (!o->set_wd && !meta_double(tg_st_meta_get(m, "weight_decay"), 0, 1e300, &o->weight_decay))
        BAD("weight_decay");
    if (!o->set_mom && !meta_double(tg_st_meta_get(m, "momentum"), 0, 0.999999, &o->momentum))
        BAD("momentum");
    if (!o->set_minlr && !meta_double(tg_st_meta_get(m, "min_lr"), 0, 1e300, &o->min_lr))
        BAD("min_lr");
    if (!o->set_clip && !meta_double(tg_st_meta_get(m, "clip"), 0, 1e300, &o->clip))
        BAD("clip");
    if (!o->set_valfrac && !meta_double(tg_st_meta_get(m, "val_frac"), 0, 0.999999, &o->val_frac))
        BAD("val_frac");
    if (!o->set_warmup) {
        if (!meta_long(tg_st_meta_get(m, "warmup"), 0, 1L << 40, &l))
            BAD("warmup");
        o->warmup = l;
    }
    if (!o->set_steps) {
        if (!meta_long(tg_st_meta_get(m, "steps"), 0, 1L << 40, &l))
            BAD("steps");
        o->steps = l;
    } else if (meta_long(tg_st_meta_get(m, "steps"), 0, 1L << 40, &l) && l != o->steps &&
               strcmp(o->schedule, "cosine") == 0 && !o->quiet) {
        /* the cosine decays over --steps: a new total is a new schedule from here on */
        fprintf(stderr, "train: note: the checkpoint's run had --steps %ld; with --steps %ld the cosine schedule "
                        "now decays over %ld steps, so the lr from here on differs from the original run's\n",
                l, o->steps, o->steps);
    }
    if (!o->set_batch) {
        if (!meta_long(tg_st_meta_get(m, "batch"), 1, 1L << 20, &l))
            BAD("batch");
        o->batch = (int)l;
    }
#undef BAD
    return check_combinations(o);
}

/* A double as the shortest text that reads back exactly (0.003, not
 * 0.0030000000000000001), as Python's repr writes it. */
static void meta_set_double(tg_st_meta *m, const char *key, double v)
{
    char buf[32];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    tg_st_meta_set(m, key, buf);
}

static int save_checkpoint(run *r, const char *path)
{
    tg_params all;
    tg_params_init(&all);
    const tg_params *mp = &r->model->params;
    for (int i = 0; i < mp->n; i++)
        tg_params_add(&all, NULL, mp->items[i].name, mp->items[i].t);
    int ns = tg_optim_state_count(r->opt);
    tg_tensor *views = calloc((size_t)(ns > 0 ? ns : 1), sizeof *views);
    if (!views)
        tg_error("train", "out of memory");
    for (int i = 0; i < ns; i++) {
        const tg_optim_state *s = tg_optim_state_get(r->opt, i);
        views[i].data = s->data;
        views[i].numel = s->numel;
        views[i].ndim = s->ndim;
        memcpy(views[i].shape, s->shape, sizeof s->shape);
        views[i].data_borrowed = true;
        views[i].node = -1;
        tg_params_add(&all, NULL, s->name, &views[i]);
    }
    tg_st_meta meta;
    tg_st_meta_init(&meta);
    tg_st_meta_set(&meta, "format", "tapegrad-gpt");
    tg_gpt_config_to_meta(&r->cfg, &meta);
    tg_tokenizer_to_meta(&r->tok, &meta);
    tg_st_meta_setf(&meta, "step", "%" PRId64, r->step);
    tg_st_meta_set(&meta, "optimizer", r->o.optimizer);
    meta_set_double(&meta, "lr", r->o.lr);
    tg_st_meta_set(&meta, "lr_schedule", r->o.schedule);
    tg_st_meta_setf(&meta, "steps", "%ld", r->o.steps);
    tg_st_meta_setf(&meta, "seed", "%" PRIu64, r->o.seed);
    tg_st_meta_set(&meta, "batches", r->o.batches);
    meta_set_double(&meta, "weight_decay", r->o.weight_decay);
    meta_set_double(&meta, "momentum", r->o.momentum);
    tg_st_meta_setf(&meta, "warmup", "%ld", r->o.warmup);
    meta_set_double(&meta, "min_lr", r->o.min_lr);
    meta_set_double(&meta, "clip", r->o.clip);
    tg_st_meta_setf(&meta, "batch", "%d", r->o.batch);
    meta_set_double(&meta, "val_frac", r->o.val_frac);
    tg_st_meta_setf(&meta, "data_hash", "%016" PRIx64, data_hash(r));
    rng_to_meta(&r->gen, &meta);
    tg_st_error err;
    int rc = tg_st_save(path, &all, &meta, &err);
    tg_st_meta_free(&meta);
    tg_params_free(&all);
    free(views);
    if (rc)
        return fail("cannot save checkpoint: %s", err.msg);
    return 0;
}

/* Model config and tokenizer of a checkpoint that carries them; a model flag
 * the user gave must agree with it. */
static int adopt_checkpoint_config(run *r, const tg_st_file *f, bool *have_tok)
{
    const tg_st_meta *meta = tg_st_metadata(f);
    const char *label = tg_st_label(f);
    tg_st_error err;
    *have_tok = false;
    if (!tg_gpt_meta_has_config(meta)) {
        if (r->o.resume)
            return fail("%s: not a tapegrad training checkpoint (no model config in its metadata)", label);
        return 0;   /* e.g. weights from PyTorch: the flags give the config */
    }
    tg_gpt_config c;
    if (tg_gpt_config_from_meta(&c, meta, label, &err))
        return fail("%s", err.msg);
    const struct {
        const char *flag;
        bool set;
        int want, have;
    } chk[] = {{"--layers", r->o.set_layers, r->o.layers, c.n_layers},
               {"--heads", r->o.set_heads, r->o.heads, c.n_heads},
               {"--emb", r->o.set_emb, r->o.emb, c.emb_dim},
               {"--ctx", r->o.set_ctx, r->o.ctx, c.context_length},
               {"--qkv-bias", r->o.set_qkv, r->o.qkv_bias, c.qkv_bias}};
    for (size_t i = 0; i < sizeof chk / sizeof *chk; i++)
        if (chk[i].set && chk[i].want != chk[i].have)
            return fail("%s: checkpoint of another config: it has %s %d, the command line asks for %d", label,
                        chk[i].flag, chk[i].have, chk[i].want);
    if (r->o.set_dropout)
        c.drop_rate = (float)r->o.dropout;
    r->cfg = c;
    const char *tk = tg_st_meta_get(meta, "tokenizer");
    if (tk) {
        if (r->o.set_tokenizer && strcmp(tk, r->o.tokenizer) != 0)
            return fail("%s: checkpoint of another config: it has --tokenizer %s, the command line asks for %s",
                        label, tk, r->o.tokenizer);
        if (tg_tokenizer_from_meta(&r->tok, meta, label, &err))
            return fail("%s", err.msg);
        if (r->tok.vocab_size != c.vocab_size) {
            tg_tokenizer_free(&r->tok);
            return fail("%s: its tokenizer has %d symbols but vocab_size is %d", label, r->tok.vocab_size,
                        c.vocab_size);
        }
        *have_tok = true;
    } else if (r->o.resume) {
        return fail("%s: not a tapegrad training checkpoint (no tokenizer in its metadata)", label);
    }
    return 0;
}

/* Optimizer state, step and generator from a --resume checkpoint; all checked
 * before anything changes. */
static int restore_training_state(run *r, const tg_st_file *f)
{
    const char *label = tg_st_label(f);
    const tg_st_meta *meta = tg_st_metadata(f);
    int ns = tg_optim_state_count(r->opt);
    for (int i = 0; i < ns; i++) {
        const tg_optim_state *s = tg_optim_state_get(r->opt, i);
        const tg_st_entry *e = tg_st_find(f, s->name);
        if (!e)
            return fail("%s: no optimizer state '%s' (saved with another --optimizer?)", label, s->name);
        if (e->numel != s->numel || e->ndim != s->ndim)
            return fail("%s: optimizer state '%s' has the wrong shape", label, s->name);
    }
    for (int i = 0; i < tg_st_count(f); i++) {
        const tg_st_entry *e = tg_st_entry_at(f, i);
        if (strncmp(e->name, "optim.", 6) == 0 && !tg_optim_state_find(r->opt, e->name))
            return fail("%s: optimizer state '%s' does not fit --optimizer %s", label, e->name, r->o.optimizer);
    }
    const char *st = tg_st_meta_get(meta, "step");
    char *end;
    errno = 0;
    long long step = st ? strtoll(st, &end, 10) : -1;
    if (!st || errno || end == st || *end || step < 0)
        return fail("%s: metadata \"step\" is missing or invalid", label);
    tg_generator g;
    if (!rng_from_meta(&g, tg_st_meta_get(meta, "rng")))
        return fail("%s: metadata \"rng\" (generator state) is missing or invalid", label);
    const char *bt = tg_st_meta_get(meta, "batches");
    if (bt && strcmp(bt, r->o.batches) != 0)
        fprintf(stderr, "train: note: the checkpoint was trained with --batches %s, continuing with %s\n", bt,
                r->o.batches);
    /* commit */
    for (int i = 0; i < ns; i++) {
        const tg_optim_state *s = tg_optim_state_get(r->opt, i);
        const tg_st_entry *e = tg_st_find(f, s->name);
        tg_tensor view;
        memset(&view, 0, sizeof view);
        view.data = s->data;
        view.numel = s->numel;
        view.ndim = s->ndim;
        memcpy(view.shape, s->shape, sizeof s->shape);
        (void)e;
        tg_st_error err;
        if (tg_st_read(f, s->name, &view, &err))
            return fail("%s", err.msg);
    }
    char why[256];
    if (!tg_optim_state_check(r->opt, why, sizeof why))
        return fail("%s: invalid optimizer state: %s", label, why);
    r->step = step;
    r->gen = g;
    return 0;
}

/* ---------------------------------------------------------------- output */

static void hist_push(run *r, float loss)
{
    if (r->hist_n == r->hist_cap) {
        int64_t cap = r->hist_cap ? 2 * r->hist_cap : 256;
        float *h = realloc(r->hist_train, (size_t)cap * sizeof *h);
        if (!h)
            tg_error("train", "out of memory");
        r->hist_train = h;
        r->hist_cap = cap;
    }
    r->hist_train[r->hist_n++] = loss;
}

static void hist_push_val(run *r, int64_t step, float loss)
{
    if (r->nval == r->cap_val) {
        int64_t cap = r->cap_val ? 2 * r->cap_val : 64;
        float *v = realloc(r->hist_val, (size_t)cap * sizeof *v);
        if (v)
            r->hist_val = v;
        int64_t *s = realloc(r->hist_val_step, (size_t)cap * sizeof *s);
        if (s)
            r->hist_val_step = s;
        if (!v || !s)
            tg_error("train", "out of memory");
        r->cap_val = cap;
    }
    r->hist_val[r->nval] = loss;
    r->hist_val_step[r->nval++] = step;
}

/* Loss curves as an SVG, written atomically (tg_atomic_file). */
static int write_plot(run *r, const char *path, int64_t first_step)
{
    if (r->hist_n == 0 && r->nval == 0)
        return 0;
    tg_atomic_file f;
    tg_atomic_open(&f, path);
    const double W = 720, H = 420, L = 60, R = 20, Tp = 30, Bm = 45;
    double ymin = INFINITY, ymax = -INFINITY;
    for (int64_t i = 0; i < r->hist_n; i++)
        if (isfinite(r->hist_train[i])) {
            ymin = fmin(ymin, r->hist_train[i]);
            ymax = fmax(ymax, r->hist_train[i]);
        }
    for (int64_t i = 0; i < r->nval; i++)
        if (isfinite(r->hist_val[i])) {
            ymin = fmin(ymin, r->hist_val[i]);
            ymax = fmax(ymax, r->hist_val[i]);
        }
    if (!(ymax > ymin)) {
        ymin = isfinite(ymin) ? ymin - 1 : 0;
        ymax = ymin + 2;
    }
    double x0 = (double)first_step, x1 = (double)(first_step + (r->hist_n > 1 ? r->hist_n : 1));
    for (int64_t i = 0; i < r->nval; i++)
        x1 = fmax(x1, (double)r->hist_val_step[i]);
#define PX(s) (L + ((double)(s)-x0) / (x1 - x0) * (W - L - R))
#define PY(v) (Tp + (ymax - (double)(v)) / (ymax - ymin) * (H - Tp - Bm))
    tg_atomic_printf(&f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" "
               "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", W, H);
    tg_atomic_printf(&f, "<text x=\"%.0f\" y=\"18\" font-size=\"14\">loss (nats/token) vs step</text>\n", L);
    for (int k = 0; k <= 4; k++) {
        double v = ymin + (ymax - ymin) * k / 4.0;
        tg_atomic_printf(&f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>", L, PY(v), W - R, PY(v));
        tg_atomic_printf(&f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n", L - 5, PY(v) + 4, v);
        double s = x0 + (x1 - x0) * k / 4.0;
        tg_atomic_printf(&f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n", PX(s), H - Bm + 18, s);
    }
    tg_atomic_printf(&f, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1\" points=\"");
    for (int64_t i = 0; i < r->hist_n; i++)
        if (isfinite(r->hist_train[i]))
            tg_atomic_printf(&f, "%.1f,%.1f ", PX(first_step + i + 1), PY(r->hist_train[i]));
    tg_atomic_printf(&f, "\"/>\n<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\"");
    for (int64_t i = 0; i < r->nval; i++)
        if (isfinite(r->hist_val[i]))
            tg_atomic_printf(&f, "%.1f,%.1f ", PX(r->hist_val_step[i]), PY(r->hist_val[i]));
    tg_atomic_printf(&f, "\"/>\n");
    /* val points as dots too (there may be only a few) */
    for (int64_t i = 0; i < r->nval; i++)
        if (isfinite(r->hist_val[i]))
            tg_atomic_printf(&f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"#d62728\"/>", PX(r->hist_val_step[i]),
                    PY(r->hist_val[i]));
    tg_atomic_printf(&f, "\n<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">step</text>\n", (L + W - R) / 2, H - 8);
    const double lx = W - R - 230, ly = Tp + 10;
    tg_atomic_printf(&f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#1f77b4\"/>"
               "<text x=\"%.0f\" y=\"%.0f\">train: batch loss (dropout on)</text>\n",
            lx, ly, lx + 20, ly, lx + 26, ly + 4);
    tg_atomic_printf(&f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#d62728\" stroke-width=\"2\"/>"
               "<text x=\"%.0f\" y=\"%.0f\">val: eval loss (dropout off)</text>\n</svg>\n",
            lx, ly + 18, lx + 20, ly + 18, lx + 26, ly + 22);
#undef PX
#undef PY
    if (tg_atomic_commit(&f) != 0)
        return fail("cannot write the plot: %s", f.msg);
    return 0;
}

/* Columns of the terminal on stdout (80 if unknown), at least 20. */
static int terminal_width(void)
{
    struct winsize ws;
    memset(&ws, 0, sizeof ws);
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) != 0 || ws.ws_col == 0)
        return 80;
    return ws.ws_col < 20 ? 20 : ws.ws_col > 255 ? 255 : ws.ws_col;
}

static void fmt_eta(double s, char *buf, size_t size)
{
    if (!isfinite(s) || s < 0)
        s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, size, "%ld:%02ld", t / 60, t % 60);
}

/* ---------------------------------------------------------------- setup */

static int load_data(run *r)
{
    char *text;
    size_t len;
    char why[512];
    if (tg_text_load(r->o.data, &text, &len, why, sizeof why))
        return fail("%s", why);
    bool have_tok = r->tok.vocab_size > 0;
    if (!have_tok) {
        if (strcmp(r->o.tokenizer, "byte") == 0)
            tg_tokenizer_byte_init(&r->tok);
        else if (tg_tokenizer_char_build(&r->tok, text, len, why, sizeof why)) {
            free(text);
            return fail("%s: %s", r->o.data, why);
        }
    }
    r->ids = malloc((len ? len : 1) * sizeof *r->ids);
    if (!r->ids) {
        free(text);
        return fail("out of memory");
    }
    if (tg_tokenizer_encode(&r->tok, text, len, r->ids, &r->n_ids, why, sizeof why)) {
        free(text);
        return fail("%s: %s (the checkpoint's tokenizer)", r->o.data, why);
    }
    free(text);
    const int T = r->cfg.context_length;
    if (r->n_ids < (int64_t)T + 1)
        return fail("%s: %" PRId64 " tokens is shorter than --ctx + 1 = %d", r->o.data, r->n_ids, T + 1);
    int64_t n_val = (int64_t)((double)r->n_ids * r->o.val_frac);
    int64_t n_train = r->n_ids - n_val;
    if (n_train < (int64_t)T + 1)
        return fail("%s: the training split has %" PRId64 " tokens, fewer than --ctx + 1 = %d (lower --ctx or "
                    "--val-frac)", r->o.data, n_train, T + 1);
    if (n_val > 0 && n_val < (int64_t)T + 1)
        return fail("%s: the validation split has %" PRId64 " tokens, fewer than --ctx + 1 = %d (lower --ctx, "
                    "raise --val-frac, or --val-frac 0)", r->o.data, n_val, T + 1);
    r->train.tok = r->ids;
    r->train.n = n_train;
    r->val.tok = r->ids + n_train;
    r->val.n = n_val;
    return 0;
}

static void run_free(run *r)
{
    tg_optim_free(r->opt);
    tg_gpt_free(r->model);
    tg_tokenizer_free(&r->tok);
    free(r->ids);
    free(r->x);
    free(r->y);
    free(r->hist_train);
    free(r->hist_val);
    free(r->hist_val_step);
    if (r->log)
        fclose(r->log);
    tg_tape_release_default();
}

/* An output file must be creatable: its directory exists and is writable
 * (checked up front, so a long run does not fail only at its end). */
static int check_output_path(const char *flag, const char *path)
{
    if (!path)
        return 0;
    char *dir = strdup(path);
    if (!dir)
        return fail("out of memory");
    char *slash = strrchr(dir, '/');
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

#define LOG_HEADER "step,lr,train_loss,val_loss,tokens_per_s"

/* --log with --resume: an existing log of ours is continued, so that it reads
 * like the log of an uninterrupted run. Its rows up to step `upto` (the
 * checkpoint's) are kept, later ones dropped (written atomically). Returns 0
 * (append to it), 1 (no such log: start a new one) or -1 (error). */
static int continue_log(const char *path, int64_t upto)
{
    FILE *in = fopen(path, "r");
    if (!in)
        return 1;
    size_t cap = 1 << 16, n = 0;
    char *text = malloc(cap);
    for (size_t got = 1; text && got > 0;) {
        if (n + 1 == cap) {
            char *t = realloc(text, cap * 2);
            if (!t) {
                free(text);
                text = NULL;
                break;
            }
            text = t;
            cap *= 2;
        }
        got = fread(text + n, 1, cap - 1 - n, in);
        n += got;
    }
    fclose(in);
    if (!text)
        return fail("out of memory reading the log %s", path);
    text[n] = '\0';
    size_t hl = strlen(LOG_HEADER);
    if (strncmp(text, LOG_HEADER, hl) != 0 || text[hl] != '\n') {
        free(text);
        return 1; /* not a log of ours (or empty): start afresh */
    }
    /* keep the header and every row whose step is <= upto */
    size_t keep = hl + 1;
    for (char *line = text + keep; *line;) {
        char *nl = strchr(line, '\n');
        if (!nl)
            break; /* a row cut short (killed mid-write): drop it */
        char *end;
        long long step = strtoll(line, &end, 10);
        if (end == line || *end != ',' || step > upto)
            break;
        line = nl + 1;
        keep = (size_t)(line - text);
    }
    int rc = 0;
    char msg[512];
    if (keep != n && tg_write_file(path, text, keep, msg, sizeof msg) != 0)
        rc = fail("cannot rewrite the log to continue it: %s", msg);
    free(text);
    return rc;
}

static int setup(run *r)
{
    options *o = &r->o;
    if (check_output_path("--save", o->save) || check_output_path("--log", o->log) ||
        check_output_path("--plot", o->plot))
        return -1;
    tg_set_num_threads(o->threads);
    r->cfg = (tg_gpt_config){.vocab_size = 0,
                             .context_length = o->ctx,
                             .emb_dim = o->emb,
                             .n_heads = o->heads,
                             .n_layers = o->layers,
                             .drop_rate = (float)o->dropout,
                             .qkv_bias = o->qkv_bias};
    /* A checkpoint first: it may fix the config and the tokenizer. */
    const char *ck = o->resume ? o->resume : o->init;
    tg_st_file *f = NULL;
    if (ck) {
        tg_st_error err;
        if (tg_st_open(ck, &f, &err))
            return fail("%s", err.msg);
        bool have_tok;
        if (adopt_checkpoint_config(r, f, &have_tok)) {
            tg_st_close(f);
            return -1;
        }
    }
    if (o->resume && adopt_training_settings(r, f)) {
        tg_st_close(f);
        return -1;
    }
    if (load_data(r)) {
        tg_st_close(f);
        return -1;
    }
    if (o->resume) {
        const char *h = tg_st_meta_get(tg_st_metadata(f), "data_hash");
        char mine[32];
        snprintf(mine, sizeof mine, "%016" PRIx64, data_hash(r));
        if (h && strcmp(h, mine) != 0 && !o->quiet)
            fprintf(stderr, "train: note: %s holds other data than the run in %s was trained on\n", o->data, o->resume);
    }
    if (r->cfg.vocab_size == 0)
        r->cfg.vocab_size = r->tok.vocab_size;
    char why[256];
    if (tg_gpt_config_check(&r->cfg, why, sizeof why)) {
        tg_st_close(f);
        return fail("invalid model: %s", why);
    }
    if (o->prompt && *o->prompt) {
        int32_t *tmp = malloc(strlen(o->prompt) * sizeof *tmp);
        int64_t n;
        int rc = tmp ? tg_tokenizer_encode(&r->tok, o->prompt, strlen(o->prompt), tmp, &n, why, sizeof why) : -1;
        free(tmp);
        if (rc) {
            tg_st_close(f);
            return fail("--prompt: %s", tmp ? why : "out of memory");
        }
    }
    tg_manual_seed(&r->gen, o->seed);
    r->model = tg_gpt_new(&r->cfg, &r->gen);
    if (f) {
        tg_st_error err;
        if (tg_gpt_load(r->model, f, true, &err)) {
            tg_st_close(f);
            return fail("%s", err.msg);
        }
    }
    tg_optim_config oc;
    switch (tg_optim_kind_parse(o->optimizer)) {
    case TG_OPTIM_SGD:
        oc = tg_sgd_config(o->lr);
        oc.momentum = o->momentum;
        break;
    case TG_OPTIM_ADAM: oc = tg_adam_config(o->lr); break;
    default: oc = tg_adamw_config(o->lr); break;
    }
    oc.weight_decay = o->weight_decay;
    r->opt = tg_optim_new(&r->model->params, &oc);
    if (o->resume && restore_training_state(r, f)) {
        tg_st_close(f);
        return -1;
    }
    tg_st_close(f);
    r->sched = (tg_lr_schedule){.kind = (tg_lr_kind)tg_lr_kind_parse(o->schedule),
                                .lr = o->lr,
                                .min_lr = o->min_lr,
                                .warmup = o->warmup,
                                .decay_iters = o->steps > o->warmup ? o->steps : o->warmup};
    const int64_t bt = (int64_t)o->batch * r->cfg.context_length;
    r->x = malloc((size_t)bt * sizeof *r->x);
    r->y = malloc((size_t)bt * sizeof *r->y);
    if (!r->x || !r->y)
        return fail("out of memory for a batch of %d x %d", o->batch, r->cfg.context_length);
    if (o->log) {
        int rc = o->resume ? continue_log(o->log, r->step) : 1;
        if (rc < 0)
            return -1;
        r->log = fopen(o->log, rc == 0 ? "a" : "w");
        if (!r->log)
            return fail("%s: cannot write the log: %s", o->log, strerror(errno));
        if (rc == 1)
            fprintf(r->log, "%s\n", LOG_HEADER);
    }
    return 0;
}

/* ---------------------------------------------------------------- main loop */

static int train(run *r)
{
    options *o = &r->o;
    const int64_t start = r->step, bt = (int64_t)o->batch * r->cfg.context_length;
    const int64_t stop = o->stop_after >= 0 && start + o->stop_after < o->steps ? start + o->stop_after : o->steps;
    const char *ckpath = o->save ? o->save : "interrupted.safetensors";
    r->tty = isatty(STDOUT_FILENO) && !o->quiet;
    const int64_t print_every = o->eval_every > 0 ? o->eval_every : (o->steps / 10 > 0 ? o->steps / 10 : 1);

    if (!o->quiet) {
        printf("model: %d layers, %d heads, emb %d, ctx %d, vocab %d (%s tokenizer), dropout %g%s: %" PRId64
               " parameters\n",
               r->cfg.n_layers, r->cfg.n_heads, r->cfg.emb_dim, r->cfg.context_length, r->cfg.vocab_size,
               r->tok.kind == TG_TOK_BYTE ? "byte" : "char", (double)r->cfg.drop_rate,
               r->cfg.qkv_bias ? ", qkv bias" : "", tg_params_numel(&r->model->params));
        printf("data: %s: %" PRId64 " tokens, %" PRId64 " train / %" PRId64 " val; %s, lr %g (%s, warmup %ld), batch "
               "%d, %s batches, %d threads\n",
               o->data, r->n_ids, r->train.n, r->val.n, o->optimizer, o->lr, o->schedule, o->warmup, o->batch,
               o->batches, o->threads);
        if (start > 0)
            printf("resuming at step %" PRId64 "\n", start);
        if (start >= o->steps)
            printf("nothing to train: the run is at step %" PRId64 " of --steps %ld (give a larger --steps to go "
                   "on)\n", start, o->steps);
        else
            printf("batch loss: the training batches' loss, smoothed (EMA 0.9), dropout on; val loss: the held-out "
                   "split, dropout off\n");
        fflush(stdout);
    }
    double val = NAN;
    if (r->val.n > 0 && start < stop && o->eval_every > 0) {
        val = evaluate(r, &r->val);
        hist_push_val(r, start, (float)val);
        if (!o->quiet)
            printf("step %" PRId64 "/%ld | val loss %.4f\n", start, o->steps, val);
    }
    print_sample(r, start == 0 ? "sample before training" : "sample at resume");

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    double t_train = 0.0, t0 = now_s(), ema = NAN, last_loss = NAN, last_draw = 0.0;
    int64_t done = 0;
    bool interrupted = false;
    for (int64_t it = start; it < stop; it++) {
        if (g_interrupted) {
            interrupted = true;
            break;
        }
        double ts = now_s();
        double lr = tg_lr_at(&r->sched, it);
        tg_optim_set_lr(r->opt, lr);
        make_batch(r, it);
        tg_tensor *loss = tg_cross_entropy(tg_gpt_forward(r->model, r->x, o->batch, r->cfg.context_length), r->y);
        tg_backward(loss, NULL);
        if (o->clip > 0)
            tg_clip_grad_norm(&r->model->params, o->clip);
        tg_optim_step(r->opt);
        tg_optim_zero_grad(r->opt);
        last_loss = loss->data[0];
        tg_tape_reset(NULL);
        r->step = it + 1;
        done++;
        t_train += now_s() - ts;
        if (!isfinite(last_loss)) {
            if (r->tty)
                printf("\n");
            return fail("the loss became %g at step %" PRId64 " (try a lower --lr or --clip 1)", last_loss, it + 1);
        }
        ema = isnan(ema) ? last_loss : 0.9 * ema + 0.1 * last_loss;
        hist_push(r, (float)last_loss);
        double tps = (double)(done * bt) / (t_train > 0 ? t_train : 1e-9);
        bool eval_now = o->eval_every > 0 && r->val.n > 0 && (r->step % o->eval_every == 0 || r->step == o->steps);
        if (eval_now) {
            val = evaluate(r, &r->val);
            hist_push_val(r, r->step, (float)val);
        }
        if (r->log) {
            fprintf(r->log, "%" PRId64 ",%.9g,%.9g,", r->step, lr, last_loss);
            if (eval_now)
                fprintf(r->log, "%.9g", val);
            fprintf(r->log, ",%.1f\n", tps);
            fflush(r->log);
        }
        if (!o->quiet) {
            char eta[32], vbuf[32];
            double per = (now_s() - t0) / (double)done;
            fmt_eta(per * (double)(stop - r->step), eta, sizeof eta);
            if (isnan(val))
                snprintf(vbuf, sizeof vbuf, "-");
            else
                snprintf(vbuf, sizeof vbuf, "%.4f", val);
            char line[256];
            snprintf(line, sizeof line, "step %" PRId64 "/%ld | batch loss %.4f | val loss %s | lr %.2e | %.0f tok/s | ETA %s",
                     r->step, o->steps, ema, vbuf, lr, tps, eta);
            if (r->tty && (eval_now || r->step == stop || now_s() - last_draw >= 0.1)) {
                /* one live line: it must not wrap, or "\r" would leave the wrapped part behind */
                last_draw = now_s();
                int width = terminal_width();
                if ((int)strlen(line) > width - 1) /* the short form, then cut */
                    snprintf(line, sizeof line, "step %" PRId64 "/%ld | batch %.4f | val %s | lr %.2e | %.0f tok/s | ETA %s",
                             r->step, o->steps, ema, vbuf, lr, tps, eta);
                if ((int)strlen(line) > width - 1)
                    line[width - 1] = '\0';
                printf("\r\033[K%s", line);
                if (eval_now || r->step == stop)
                    printf("\n");
                fflush(stdout);
            } else if (!r->tty && (r->step % print_every == 0 || r->step == stop || eval_now)) {
                printf("%s\n", line);
                fflush(stdout);
            }
        }
        if (o->sample_every > 0 && r->step % o->sample_every == 0 && r->step < stop) {
            char title[64];
            snprintf(title, sizeof title, "sample at step %" PRId64, r->step);
            print_sample(r, title);
        }
    }
    interrupted = interrupted || g_interrupted;
    double wall = now_s() - t0;
    bool stopped = interrupted || r->step < o->steps;
    if (r->tty && interrupted)
        printf("\n");
    if (stopped) {
        if (save_checkpoint(r, ckpath))
            return -1;
        if (o->plot && write_plot(r, o->plot, start))
            return -1;
        printf("%s at step %" PRId64 "/%ld: saved %s (continue with --resume %s)\n",
               interrupted ? "interrupted" : "stopped", r->step, o->steps, ckpath, ckpath);
        return interrupted ? 130 : 0;
    }
    print_sample(r, "sample after training");
    double tr = evaluate(r, &r->train);
    if (r->val.n > 0 && (isnan(val) || o->eval_every == 0 || r->nval == 0 || r->hist_val_step[r->nval - 1] != r->step))
        val = evaluate(r, &r->val);
    double tps = done > 0 ? (double)(done * bt) / t_train : 0.0;
    char vbuf[32];
    if (isnan(val))
        snprintf(vbuf, sizeof vbuf, "n/a");
    else
        snprintf(vbuf, sizeof vbuf, "%.4f", val);
    /* Both losses of the summary are evaluations (dropout off, the same fixed windows as the val loss), so
     * they compare with each other; the live "batch loss" is the training batches' loss with dropout on. */
    printf("done: %" PRId64 " steps | eval loss (dropout off): train %.4f, val %s | %.0f tok/s | wall %.1f s\n",
           done, tr, vbuf, tps, wall);
    if (o->save) {
        if (save_checkpoint(r, o->save))
            return -1;
        printf("saved %s\n", o->save);
    }
    if (o->plot) {
        if (write_plot(r, o->plot, start))
            return -1;
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
    run r;
    memset(&r, 0, sizeof r);
    tg_set_error_handler(error_handler, NULL);
    if (parse_args(argc, argv, &r.o)) {
        fprintf(stderr, "train: error: %s\n", g_err);
        return 2;
    }
    int rc = setup(&r);
    if (rc == 0)
        rc = train(&r);
    if (rc < 0) {
        fflush(stdout);
        fprintf(stderr, "train: error: %s\n", g_err);
        rc = 1;
    }
    run_free(&r);
    return rc;
}

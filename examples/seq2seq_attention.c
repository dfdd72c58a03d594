/*
 * examples/seq2seq_attention.c — chapter 3's opening claim, measured: a GRU
 * encoder–decoder must squeeze the whole input into one hidden state and
 * loses long inputs; Bahdanau's additive attention lets the decoder look at
 * every encoder state and recovers them.
 *
 *   build/seq2seq_attention [--task reverse|verbs] [--steps N] [--hidden H] [--seed S] ...
 *
 * Two models (examples/seq2seq_task.h), the same data, hidden size, steps and
 * seed, each trained with the library trainer (optim/trainer.h) through its
 * own batch source and loss: (1) the plain encoder–decoder, (2) the same with
 * attention. Then, on held-out sequences decoded greedily: token and
 * exact-sequence accuracy per length bucket (a table and a summary line),
 * accuracy against length for both models and one example's attention
 * alignment, on the terminal and in an SVG (default seq2seq_attention.svg,
 * written atomically).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli_args.h"
#include "seq2seq_task.h"

#define N_BUCKETS 5
static const int BUCKET_LO[N_BUCKETS] = {4, 9, 17, 25, 33}, BUCKET_HI[N_BUCKETS] = {8, 16, 24, 32, 40};

typedef struct {
    s2s_config cfg;
    long steps, eval_per_len, log_every;
    const char *svg;
} options;

static void usage(FILE *f)
{
    s2s_config d = s2s_defaults();
    fprintf(f,
            "usage: seq2seq_attention [options]\n"
            "  --task reverse|verbs  reverse the sequence, or move every verb (token < --verbs) to the end\n"
            "                        in order (default reverse)\n"
            "  --steps N             training steps per model (default 2400)\n"
            "  --hidden H            GRU hidden size (default %d); --emb E (default %d); --attn A (default %d)\n"
            "  --batch B             sequences per step (default %d)\n"
            "  --lr LR               Adam learning rate (default %g)\n"
            "  --vocab V             symbols (default %d); --verbs K verbs for --task verbs (default %d)\n"
            "  --min-len N --max-len N   input lengths, uniform, within 4..40 (default %d..%d)\n"
            "  --seed S              weights from S, training batches from S+1 (default %llu)\n"
            "  --eval N              held-out sequences per length (default 32)\n"
            "  --log-every N         progress line every N steps (default 100, 0: none)\n"
            "  --svg PATH            the figures (default seq2seq_attention.svg)\n",
            d.hidden, d.emb, d.attn_size, d.batch, d.lr, d.vocab, d.n_verbs, d.min_len, d.max_len,
            (unsigned long long)d.seed);
}

static int parse_args(int argc, char **argv, options *o)
{
    o->cfg = s2s_defaults();
    o->steps = 2400;
    o->eval_per_len = 32;
    o->log_every = 100;
    o->svg = "seq2seq_attention.svg";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (!v) {
            fprintf(stderr, "seq2seq_attention: %s needs a value\n", a);
            return -1;
        }
        bool ok = true;
        i++;
        if (strcmp(a, "--task") == 0) {
            ok = strcmp(v, "reverse") == 0 || strcmp(v, "verbs") == 0;
            o->cfg.task = strcmp(v, "verbs") == 0 ? S2S_VERBS : S2S_REVERSE;
        } else if (strcmp(a, "--svg") == 0) {
            o->svg = v;
        } else if (strcmp(a, "--lr") == 0) {
            char *end;
            errno = 0;
            o->cfg.lr = strtod(v, &end);
            ok = !errno && end != v && !*end && o->cfg.lr > 0 && o->cfg.lr < 1;
        } else if (!cli_parse_long(v, 0, 1L << 30, &n)) {
            ok = false;
        } else if (strcmp(a, "--steps") == 0) {
            o->steps = n, ok = n >= 1;
        } else if (strcmp(a, "--hidden") == 0) {
            o->cfg.hidden = (int)n, ok = n >= 1 && n <= 1024;
        } else if (strcmp(a, "--emb") == 0) {
            o->cfg.emb = (int)n, ok = n >= 1 && n <= 1024;
        } else if (strcmp(a, "--attn") == 0) {
            o->cfg.attn_size = (int)n, ok = n >= 1 && n <= 1024;
        } else if (strcmp(a, "--batch") == 0) {
            o->cfg.batch = (int)n, ok = n >= 1 && n <= 1024;
        } else if (strcmp(a, "--vocab") == 0) {
            o->cfg.vocab = (int)n, ok = n >= 2 && n <= 1000;
        } else if (strcmp(a, "--verbs") == 0) {
            o->cfg.n_verbs = (int)n, ok = n >= 1;
        } else if (strcmp(a, "--min-len") == 0) {
            o->cfg.min_len = (int)n, ok = n >= 4 && n <= 40;
        } else if (strcmp(a, "--max-len") == 0) {
            o->cfg.max_len = (int)n, ok = n >= 4 && n <= 40;
        } else if (strcmp(a, "--seed") == 0) {
            o->cfg.seed = (uint64_t)n;
        } else if (strcmp(a, "--eval") == 0) {
            o->eval_per_len = n, ok = n >= 1 && n <= 100000;
        } else if (strcmp(a, "--log-every") == 0) {
            o->log_every = n;
        } else {
            fprintf(stderr, "seq2seq_attention: unknown option '%s'\n", a);
            return -1;
        }
        if (!ok) {
            fprintf(stderr, "seq2seq_attention: bad value '%s' for %s\n", v, a);
            return -1;
        }
    }
    const s2s_config *c = &o->cfg;
    if (c->min_len > c->max_len || (c->task == S2S_VERBS && c->n_verbs >= c->vocab)) {
        fprintf(stderr, "seq2seq_attention: need --min-len <= --max-len%s\n",
                c->task == S2S_VERBS ? " and --verbs < --vocab" : "");
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- training */

typedef struct {
    const char *name;
    long every;
    double t0;
} progress;

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void on_step(void *user, tg_trainer *tr, const tg_train_event *e)
{
    progress *p = user;
    if (p->every > 0 && (e->step % p->every == 0 || e->step == tr->cfg.steps)) {
        printf("  %-18s step %5lld  loss %.4f  (%.0fs)\n", p->name, (long long)e->step, e->loss, seconds() - p->t0);
        fflush(stdout);
    }
}

/* Trains a fresh model of cfg for steps steps with the library trainer;
 * returns 0, or 1 if the loss diverged. */
static int train_model(s2s_model *m, const char *name, long steps, long log_every)
{
    s2s_source src = {.m = m, .eval_batches = 0};
    tg_batch_source bs = s2s_batch_source(&src);
    tg_train_model tm = s2s_train_model(m);
    tg_trainer_config tc = s2s_trainer_config(&m->cfg, steps, 0);
    progress p = {name, log_every, seconds()};
    tc.hooks.user = &p;
    tc.hooks.on_step = on_step;
    tg_generator gen; /* the batches: the same for both models */
    tg_manual_seed(&gen, m->cfg.seed + 1);
    tg_trainer *tr = tg_trainer_new(&tm, &bs, &gen, &tc);
    tg_train_status st = tg_trainer_run(tr, steps);
    const double last = tr->last_loss;
    tg_trainer_free(tr);
    if (st == TG_TRAIN_DIVERGED) {
        fprintf(stderr, "seq2seq_attention: %s diverged (loss %g)\n", name, last);
        return 1;
    }
    printf("  %-18s %ld steps in %.0fs, last batch loss %.4f\n", name, steps, seconds() - p.t0, last);
    return 0;
}

/* ---------------------------------------------------------------- results */

typedef struct {
    double tok[N_BUCKETS], seq[N_BUCKETS], mirror[N_BUCKETS];
    double tok_len[S2S_MAX_LEN + 1];   /* token accuracy per length */
} results;

static void summarise(const s2s_config *c, const s2s_score *sc, results *r)
{
    for (int k = 0; k < N_BUCKETS; k++) {
        int64_t t = 0, to = 0, s = 0, so = 0, mn = 0;
        double mi = 0;
        for (int L = BUCKET_LO[k]; L <= BUCKET_HI[k]; L++)
            if (L >= c->min_len && L <= c->max_len) {
                t += sc[L].tokens, to += sc[L].tokens_ok, s += sc[L].seqs, so += sc[L].seqs_ok;
                mi += sc[L].mirror, mn += sc[L].mirror_n;
            }
        r->tok[k] = t ? 100.0 * (double)to / (double)t : NAN;
        r->seq[k] = s ? 100.0 * (double)so / (double)s : NAN;
        r->mirror[k] = mn ? mi / (double)mn : NAN;
    }
    for (int L = c->min_len; L <= c->max_len; L++)
        r->tok_len[L] = 100.0 * (double)sc[L].tokens_ok / (double)sc[L].tokens;
}

static void print_pct(double v)
{
    if (isnan(v))
        printf("      -");
    else
        printf(" %5.1f%%", v);
}

static void print_table(const results *plain, const results *att, bool reverse)
{
    printf("\n%-28s", "input length");
    for (int k = 0; k < N_BUCKETS; k++)
        printf("  %2d-%-2d", BUCKET_LO[k], BUCKET_HI[k]);
    printf("\n");
    const struct {
        const char *label;
        const double *v;
    } rows[] = {{"encoder-decoder   tokens", plain->tok}, {"encoder-decoder   sequences", plain->seq},
                {"with attention    tokens", att->tok},   {"with attention    sequences", att->seq}};
    for (int i = 0; i < 4; i++) {
        printf("%-28s", rows[i].label);
        for (int k = 0; k < N_BUCKETS; k++)
            print_pct(rows[i].v[k]);
        printf("\n");
    }
    if (reverse) {
        printf("%-28s", "attention on x[L-1-t]");
        for (int k = 0; k < N_BUCKETS; k++)
            isnan(att->mirror[k]) ? printf("      -") : printf("   %4.2f", att->mirror[k]);
        printf("\n");
    }
}

/* Accuracy against length, one column per length: 'o' plain, '*' attention. */
static void print_curves(const s2s_config *c, const results *plain, const results *att)
{
    printf("\ntoken accuracy vs input length   o encoder-decoder   * with attention\n");
    for (int level = 100; level >= 0; level -= 10) {
        printf("%4d%% |", level);
        for (int L = c->min_len; L <= c->max_len; L++) {
            const bool p = (int)lround(plain->tok_len[L] / 10.0) * 10 == level;
            const bool a = (int)lround(att->tok_len[L] / 10.0) * 10 == level;
            printf("%c", a && p ? '@' : a ? '*' : p ? 'o' : ' ');
        }
        printf("\n");
    }
    printf("      +");
    for (int L = c->min_len; L <= c->max_len; L++)
        printf("%c", L % 5 == 0 ? '+' : '-');
    printf("\n       length %d .. %d ('+' every 5; '@' both)\n", c->min_len, c->max_len);
}

static const char *const SHADE[] = {"  ", "░░", "▒▒", "▓▓", "██"};

static const char *shade_of(float w)
{
    const float upper[] = {0.1f, 0.3f, 0.5f, 0.8f};
    int k = 0;
    while (k < 4 && w >= upper[k])
        k++;
    return SHADE[k];
}

/* align (L, L): row t = output step, column j = input position. */
static void print_alignment(const int32_t *src, const int32_t *pred, const float *align, int L)
{
    printf("\nattention alignment of one held-out input (%d tokens): rows = output step t (predicted token),\n"
           "columns = input position j; shade = weight ('%s' < 0.1, '%s' < 0.3, '%s' < 0.5, '%s' < 0.8, '%s' above)\n",
           L, SHADE[0], SHADE[1], SHADE[2], SHADE[3], SHADE[4]);
    printf("         ");
    for (int j = 0; j < L; j++)
        printf("%2d", src[j]);
    printf("  <- input token\n");
    for (int t = 0; t < L; t++) {
        printf("t%-2d (%2d) ", t, pred[t]);
        for (int j = 0; j < L; j++)
            fputs(shade_of(align[t * L + j]), stdout);
        printf("\n");
    }
}

/* ---------------------------------------------------------------- SVG */

static void svg_color(float w, char out[8])
{
    w = w < 0 ? 0 : w > 1 ? 1 : w;
    /* white -> dark blue */
    const int r = (int)lround(255 - w * (255 - 8)), g = (int)lround(255 - w * (255 - 48)),
              b = (int)lround(255 - w * (255 - 107));
    snprintf(out, 8, "#%02x%02x%02x", r, g, b);
}

static int write_svg(const char *path, const s2s_config *c, const results *plain, const results *att,
                     const int32_t *src, const float *align, int n, long steps)
{
    const int W = 1120, Hh = 620;
    tg_atomic_file f;
    tg_atomic_open(&f, path);
    tg_atomic_printf(&f,
                     "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
                     "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
                     W, Hh);
    tg_atomic_printf(&f,
                     "<text x=\"20\" y=\"24\" font-size=\"15\" font-weight=\"bold\">%s of random token sequences "
                     "(vocab %d): GRU encoder-decoder vs. the same with additive attention</text>\n",
                     c->task == S2S_REVERSE ? "Reversal" : "Verbs to the end", c->vocab);
    tg_atomic_printf(&f,
                     "<text x=\"20\" y=\"42\">hidden %d, %ld steps of batch %d each, seed %llu; held-out sequences, "
                     "greedy decoding</text>\n",
                     c->hidden, steps, c->batch, (unsigned long long)c->seed);
    /* left: accuracy vs length */
    const int x0 = 70, y0 = 80, pw = 440, ph = 400;
    tg_atomic_printf(&f, "<text x=\"%d\" y=\"%d\" font-weight=\"bold\">Token accuracy vs. input length</text>\n", x0,
                     y0 - 12);
    tg_atomic_printf(&f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#444\"/>\n", x0, y0,
                     pw, ph);
    for (int p = 0; p <= 100; p += 20) {
        const int y = y0 + ph - p * ph / 100;
        tg_atomic_printf(&f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#ddd\"/>\n", x0, y, x0 + pw, y);
        tg_atomic_printf(&f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%d%%</text>\n", x0 - 6, y + 4, p);
    }
    const int span = c->max_len > c->min_len ? c->max_len - c->min_len : 1;
#define LX(L) (x0 + ((L) - c->min_len) * pw / span)
#define PY(v) (y0 + ph - (int)lround((v) * ph / 100.0))
    for (int L = c->min_len; L <= c->max_len; L++)
        if (L % 4 == 0 || L == c->min_len)
            tg_atomic_printf(&f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", LX(L), y0 + ph + 16, L);
    tg_atomic_printf(&f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">input length (tokens)</text>\n", x0 + pw / 2,
                     y0 + ph + 34);
    const results *rs[2] = {plain, att};
    const char *colors[2] = {"#d62728", "#1f77b4"}, *names[2] = {"encoder-decoder", "with attention"};
    for (int k = 0; k < 2; k++) {
        tg_atomic_printf(&f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colors[k]);
        for (int L = c->min_len; L <= c->max_len; L++)
            tg_atomic_printf(&f, "%d,%d ", LX(L), PY(rs[k]->tok_len[L]));
        tg_atomic_printf(&f, "\"/>\n");
        tg_atomic_printf(&f, "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"4\" fill=\"%s\"/>\n", x0 + 12,
                         y0 + ph - 40 + 18 * k, colors[k]);
        tg_atomic_printf(&f, "<text x=\"%d\" y=\"%d\">%s</text>\n", x0 + 32, y0 + ph - 34 + 18 * k, names[k]);
    }
#undef LX
#undef PY
    /* right: the alignment heatmap */
    const int hx = 600, hy = 80, cell = n > 0 ? 440 / n : 10;
    tg_atomic_printf(&f,
                     "<text x=\"%d\" y=\"%d\" font-weight=\"bold\">Attention alignment, one held-out input of %d "
                     "tokens</text>\n",
                     hx, hy - 12, n);
    for (int t = 0; t < n; t++)
        for (int j = 0; j < n; j++) {
            char col[8];
            svg_color(align[t * n + j], col);
            tg_atomic_printf(&f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\"/>\n", hx + j * cell,
                             hy + t * cell, cell, cell, col);
        }
    tg_atomic_printf(&f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#444\"/>\n", hx, hy,
                     n * cell, n * cell);
    for (int j = 0; j < n; j++)
        tg_atomic_printf(&f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"8\">%d</text>\n",
                         hx + j * cell + cell / 2, hy + n * cell + 11, src[j]);
    tg_atomic_printf(&f,
                     "<text x=\"%d\" y=\"%d\">columns: input position j (token below); rows: output step t, top to "
                     "bottom</text>\n",
                     hx, hy + n * cell + 30);
    tg_atomic_printf(&f, "<text x=\"%d\" y=\"%d\">weight</text>\n", hx, hy + n * cell + 52);
    for (int k = 0; k <= 10; k++) {
        char col[8];
        svg_color(k / 10.0f, col);
        tg_atomic_printf(&f, "<rect x=\"%d\" y=\"%d\" width=\"20\" height=\"12\" fill=\"%s\" stroke=\"#ddd\"/>\n",
                         hx + 50 + 20 * k, hy + n * cell + 42, col);
        if (k % 5 == 0)
            tg_atomic_printf(&f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%.1f</text>\n", hx + 60 + 20 * k,
                             hy + n * cell + 68, k / 10.0);
    }
    tg_atomic_printf(&f, "</svg>\n");
    if (tg_atomic_commit(&f) != 0) {
        fprintf(stderr, "seq2seq_attention: %s\n", f.msg);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    options o;
    if (parse_args(argc, argv, &o)) {
        usage(stderr);
        return 2;
    }
    s2s_config c = o.cfg;
    const bool reverse = c.task == S2S_REVERSE;
    printf("Task: %s; %d symbols, input lengths %d..%d (uniform), batches of one length.\n",
           reverse ? "reverse the input (y_t = x_{L-1-t})" : "move every verb (a token below --verbs) to the end, in order",
           c.vocab, c.min_len, c.max_len);
    printf("Models: a bidirectional GRU encoder (emb %d, hidden %d) -> GRUCell decoder, starting from the forward\n"
           "GRU's final state; model 2 adds additive attention (size %d) over the backward GRU's states at every\n"
           "step, its query the decoder's previous state.\n"
           "Both: Adam lr %g, clip %g, batch %d, %ld steps, seed %llu, teacher forcing; greedy decoding to test.\n\n",
           c.emb, c.hidden, c.attn_size, c.lr, c.clip, c.batch, o.steps, (unsigned long long)c.seed);

    s2s_model plain, att;
    c.attention = false;
    s2s_init(&plain, &c);
    c.attention = true;
    s2s_init(&att, &c);
    int rc = train_model(&plain, "encoder-decoder", o.steps, o.log_every);
    rc = rc || train_model(&att, "with attention", o.steps, o.log_every);

    s2s_score *sc = calloc(S2S_MAX_LEN + 1, sizeof *sc);
    results rp, ra;
    if (!rc && sc) {
        const uint64_t eval_seed = c.seed + 1000003; /* held out: not the training generator's stream */
        s2s_evaluate(&plain, eval_seed, (int)o.eval_per_len, sc);
        summarise(&c, sc, &rp);
        s2s_evaluate(&att, eval_seed, (int)o.eval_per_len, sc);
        summarise(&c, sc, &ra);
        print_table(&rp, &ra, reverse);
        int last = N_BUCKETS - 1; /* the longest bucket with inputs */
        while (last > 0 && isnan(rp.tok[last]))
            last--;
        const int lo = BUCKET_LO[last] > c.min_len ? BUCKET_LO[last] : c.min_len;
        const int hi = BUCKET_HI[last] < c.max_len ? BUCKET_HI[last] : c.max_len;
        printf("\nlongest inputs (%d-%d tokens): encoder-decoder %.1f%%, with attention %.1f%%\n", lo, hi,
               rp.tok[last], ra.tok[last]);
        print_curves(&c, &rp, &ra);

        /* one held-out example from the longest bucket */
        const int L = c.max_len < 36 ? c.max_len : c.min_len > 36 ? c.min_len : 36;
        tg_generator g;
        tg_manual_seed(&g, c.seed + 2000003);
        int32_t pred[S2S_MAX_LEN], src[S2S_MAX_LEN];
        float *align = malloc((size_t)L * L * sizeof *align);
        if (!align) {
            fprintf(stderr, "seq2seq_attention: out of memory\n");
            rc = 1;
        } else {
            const s2s_batch *bt = s2s_sample(&att, &g, 1, L);
            memcpy(src, bt->src, (size_t)L * sizeof *src);
            s2s_greedy(&att, bt, pred, align);
            print_alignment(src, pred, align, L);
            if (write_svg(o.svg, &c, &rp, &ra, src, align, L, o.steps) == 0)
                printf("\nwrote %s (accuracy-vs-length curves and the alignment heatmap)\n", o.svg);
            else
                rc = 1;
            free(align);
        }
    } else if (!sc) {
        fprintf(stderr, "seq2seq_attention: out of memory\n");
        rc = 1;
    }
    free(sc);
    s2s_free(&plain);
    s2s_free(&att);
    tg_tape_release_default();
    return rc;
}

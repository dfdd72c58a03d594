/*
 * examples/attention_learns.c — proof that MultiHeadAttention's trainable
 * weights learn: a task only attention can solve (examples/attention_task.h:
 * L random tokens, then the same L tokens again), trained with Adam.
 *
 *   build/attention_learns [OUT.svg] [--steps N] [--seed S] [--freeze-qk] [--train-pos]
 *
 * Prints loss and accuracy on the predictable positions while training, then
 * the attention weights of one sequence per head as a shaded heatmap in the
 * terminal and as an SVG file (default attention.svg, written atomically),
 * and finally the same training with W_query and W_key frozen at their
 * initial values, as a control.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_args.h"
#include "attention_task.h"

#define EVAL_BATCHES 8

/* ---------------------------------------------------------------- terminal heatmap */

/* Five shades, two columns per cell so the grid looks square. */
static const char *const shade[] = {"  ", "░░", "▒▒", "▓▓", "██"};
static const float shade_upper[] = {0.1f, 0.3f, 0.5f, 0.8f, 1.01f};

static const char *shade_of(float w)
{
    int k = 0;
    while (k < 4 && w >= shade_upper[k])
        k++;
    return shade[k];
}

/* w: (T, T) weights of one head for one sequence; ids: its T input tokens. */
static void print_heatmap(const float *w, const int32_t *ids, int T, int L, int head)
{
    printf("\nhead %d   rows: query position (token), columns: key position; '*' rows are predictable\n", head);
    printf("             ");
    for (int j = 0; j < T; j++)
        printf("%-2d", j);
    printf("\n             ");
    for (int j = 0; j < T; j++)
        printf("%-2d", ids[j]);
    printf("  <- key token\n");
    for (int p = 0; p < T; p++) {
        const float *row = w + (int64_t)p * T;
        int best = 0;
        for (int j = 1; j < T; j++)
            if (row[j] > row[best])
                best = j;
        printf(" %c p%-2d (%2d) |", p >= L - 1 ? '*' : ' ', p, ids[p]);
        for (int j = 0; j < T; j++)
            fputs(shade_of(row[j]), stdout);
        printf("|  max at key %d (%.2f)", best, (double)row[best]);
        if (p >= L - 1)
            printf("; needs key %d, token %d: %s", p - (L - 1), ids[p - (L - 1)],
                   best == p - (L - 1) ? "yes" : "NO");
        printf("\n");
    }
}

static void print_legend(void)
{
    printf("\nlegend: '%s' < 0.1   '%s' 0.1-0.3   '%s' 0.3-0.5   '%s' 0.5-0.8   '%s' >= 0.8\n", shade[0], shade[1],
           shade[2], shade[3], shade[4]);
}

/* ---------------------------------------------------------------- SVG heatmap */

static void svg_color(float w, char out[8])
{
    /* white (w = 0) to dark blue #08306b (w = 1) */
    int r = (int)(255 + (8 - 255) * w + 0.5f), g = (int)(255 + (48 - 255) * w + 0.5f),
        b = (int)(255 + (107 - 255) * w + 0.5f);
    snprintf(out, 8, "#%02x%02x%02x", r, g, b);
}

/* w: (H, T, T). Writes path atomically (tg_atomic_file). Returns 0 or
 * prints the reason and returns -1. */
static int write_svg(const char *path, const float *w, const int32_t *ids, int H, int T, int L)
{
    const int cell = 34, left = 70, top = 112, gap = 50;
    const int panel = T * cell, height = top + panel + 70;
    int width = left + H * (panel + gap) + 10;
    if (width < 720) /* room for the caption lines */
        width = 720;
    tg_atomic_file f;
    tg_atomic_open(&f, path);
    tg_atomic_printf(&f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
               "font-size=\"11\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n", width, height);
    tg_atomic_printf(&f, "<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">Attention weights after training, "
               "one eval sequence: ");
    for (int j = 0; j < T; j++)
        tg_atomic_printf(&f, "%d ", ids[j]);
    tg_atomic_printf(&f, "</text>\n");
    tg_atomic_printf(&f, "<text x=\"10\" y=\"40\">Each predictable position p (rows marked *) attends to key p-%d, where the "
               "token that comes next sits.</text>\n", L - 1);
    tg_atomic_printf(&f, "<text x=\"10\" y=\"56\">Rows: query position:token; columns: key position:token. Red outline: the "
               "key the task needs. Grey: future keys (causal mask).</text>\n");
    for (int h = 0; h < H; h++) {
        const int x0 = left + h * (panel + gap);
        tg_atomic_printf(&f, "<text x=\"%d\" y=\"%d\" font-size=\"13\" font-weight=\"bold\">head %d</text>\n", x0, top - 34, h);
        for (int j = 0; j < T; j++)
            tg_atomic_printf(&f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">k%d:%d</text>\n", x0 + j * cell + cell / 2,
                    top - 6, j, ids[j]);
        for (int p = 0; p < T; p++) {
            tg_atomic_printf(&f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%sq%d:%d</text>\n", x0 - 4,
                    top + p * cell + cell / 2 + 4, p >= L - 1 ? "*" : "", p, ids[p]);
            for (int j = 0; j < T; j++) {
                float v = w[((int64_t)h * T + p) * T + j];
                char col[8];
                if (j > p) /* a future key: masked by the causal mask */
                    snprintf(col, sizeof col, "#eeeeee");
                else
                    svg_color(v < 0 ? 0 : v > 1 ? 1 : v, col);
                tg_atomic_printf(&f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"%s\" stroke=\"#ddd\"/>\n",
                        x0 + j * cell, top + p * cell, cell, cell, col);
                if (j <= p)
                    tg_atomic_printf(&f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\" font-size=\"9\" fill=\"%s\">%.2f</text>\n",
                            x0 + j * cell + cell / 2, top + p * cell + cell / 2 + 3, v > 0.5f ? "white" : "#333",
                            (double)v);
            }
            if (p >= L - 1)
                tg_atomic_printf(&f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#d62728\" "
                           "stroke-width=\"2.5\"/>\n", x0 + (p - (L - 1)) * cell, top + p * cell, cell, cell);
        }
    }
    /* legend: a colour bar from 0 to 1 */
    const int ly = top + panel + 24;
    tg_atomic_printf(&f, "<text x=\"%d\" y=\"%d\">weight</text>\n", left - 60, ly + 12);
    for (int k = 0; k <= 10; k++) {
        char col[8];
        svg_color(k / 10.0f, col);
        tg_atomic_printf(&f, "<rect x=\"%d\" y=\"%d\" width=\"24\" height=\"16\" fill=\"%s\" stroke=\"#ddd\"/>\n", left + k * 24,
                ly, col);
        if (k % 5 == 0)
            tg_atomic_printf(&f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%.1f</text>\n", left + k * 24 + 12, ly + 30,
                    k / 10.0);
    }
    tg_atomic_printf(&f, "</svg>\n");
    if (tg_atomic_commit(&f) != 0) {
        fprintf(stderr, "attention_learns: %s\n", f.msg);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *f)
{
    fprintf(f, "usage: attention_learns [OUT.svg] [--steps N] [--seed S] [--freeze-qk] [--train-pos]\n"
               "  OUT.svg      heatmap file (default attention.svg)\n"
               "  --steps N    Adam steps (default 300)\n"
               "  --seed S     seed for weights and data (default 123)\n"
               "  --freeze-qk  keep W_query and W_key at their initial values\n"
               "  --train-pos  let the positional embedding learn too\n");
}

/* Trains m for steps steps, printing progress every `every` steps (0: silent). */
static void train(attn_task *m, int steps, int every)
{
    double acc = attn_task_eval(m, EVAL_BATCHES);
    if (every)
        printf("step %4d  loss      -  accuracy %5.1f%%  (chance %.1f%%)\n", 0, 100 * acc, 100.0 / m->cfg.vocab);
    for (int s = 1; s <= steps; s++) {
        float loss = attn_task_train_step(m);
        if (every && (s % every == 0 || s == steps)) {
            acc = attn_task_eval(m, EVAL_BATCHES);
            printf("step %4d  loss %.4f  accuracy %5.1f%%  target weight", s, (double)loss, 100 * acc);
            for (int h = 0; h < m->cfg.heads; h++)
                printf(" h%d %.2f", h, attn_task_target_mass(m, h));
            printf("\n");
        }
    }
}

int main(int argc, char **argv)
{
    attn_task_config cfg = attn_task_defaults();
    const char *svg = "attention.svg";
    long steps = 300, v;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc && cli_parse_long(argv[i + 1], 1, 1000000, &v)) {
            steps = v;
            i++;
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc && cli_parse_long(argv[i + 1], 0, 1L << 30, &v)) {
            cfg.seed = (uint64_t)v;
            i++;
        } else if (strcmp(argv[i], "--freeze-qk") == 0) {
            cfg.freeze_qk = true;
        } else if (strcmp(argv[i], "--train-pos") == 0) {
            cfg.train_pos = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] != '-' && argv[i][0]) {
            svg = argv[i];
        } else {
            fprintf(stderr, "attention_learns: bad argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }

    const int L = cfg.L, T = 2 * cfg.L - 1;
    printf("Task: %d random tokens (vocab %d), then the same %d again; predict the next token.\n", L, cfg.vocab, L);
    printf("Input positions %d..%d are predictable: position p must copy the token at p-%d.\n", L - 1, T - 1, L - 1);
    printf("Model: tok_emb + pos_emb (fixed%s) -> MultiHeadAttention(%d, %d heads, causal) -> Linear head; "
           "Adam lr %g, batch %d, seed %llu%s.\n",
           cfg.train_pos ? ", here trainable" : "", cfg.emb, cfg.heads, cfg.lr, cfg.batch,
           (unsigned long long)cfg.seed, cfg.freeze_qk ? ", W_query/W_key frozen" : "");

    /* The loss covers every position, and the first L-1 targets are fresh random tokens: even a
     * perfect model pays ln(vocab) there, so the loss cannot fall below (L-1)/T * ln(vocab). */
    printf("Loss: mean cross-entropy over all %d positions; the %d unpredictable ones keep it >= %.3f even when "
           "every predictable token is right.\n\n", T, L - 1, (double)(L - 1) / T * log((double)cfg.vocab));
    attn_task m;
    attn_task_init(&m, &cfg);
    train(&m, (int)steps, steps >= 100 ? 25 : 5);
    double acc = attn_task_eval(&m, EVAL_BATCHES);

    /* one eval sequence, batch row 0 */
    tg_manual_seed(&m.eval, cfg.seed + 2);
    attn_task_sample(&m, &m.eval, 1);
    bool was = tg_set_grad_enabled(false);
    attn_task_forward(&m, 1);
    tg_set_grad_enabled(was);
    /* (1, H, T, T); copied, since the next forward reuses the module's buffer */
    float *w = malloc((size_t)cfg.heads * T * T * sizeof *w);
    if (!w) {
        fprintf(stderr, "attention_learns: out of memory\n");
        return 1;
    }
    memcpy(w, tg_mha_attn_weights(m.att)->data, (size_t)cfg.heads * T * T * sizeof *w);
    printf("\nAttention weights for the sequence");
    for (int j = 0; j < T; j++)
        printf(" %d", m.ids[j]);
    printf(" (next: %d)\n", m.targets[T - 1]);
    for (int h = 0; h < cfg.heads; h++)
        print_heatmap(w + (int64_t)h * T * T, m.ids, T, L, h);
    print_legend();
    printf("\nPattern: every predictable position p (%d..%d) attends to key p-%d, the earlier copy of the token "
           "that comes next.\n", L - 1, T - 1, L - 1);
    printf("Mean weight on that key over %d eval sequences:", cfg.batch);
    for (int h = 0; h < cfg.heads; h++)
        printf(" head %d %.3f", h, attn_task_target_mass(&m, h));
    printf("\n");
    int rc = write_svg(svg, w, m.ids, cfg.heads, T, L) == 0 ? 0 : 1;
    free(w);
    tg_tape_reset(NULL);
    if (rc == 0)
        printf("Heatmap written to %s\n", svg);
    printf("\nFinal accuracy on predictable positions: %.1f%% (chance %.1f%%)\n", 100 * acc, 100.0 / cfg.vocab);
    attn_task_free(&m);

    if (!cfg.freeze_qk) {
        attn_task_config ctl = cfg;
        ctl.freeze_qk = true;
        attn_task c;
        attn_task_init(&c, &ctl);
        train(&c, (int)steps, 0);
        double cacc = attn_task_eval(&c, EVAL_BATCHES);
        printf("Control, the same model and steps with W_query and W_key frozen at init: %.1f%%, target weight",
               100 * cacc);
        for (int h = 0; h < cfg.heads; h++)
            printf(" h%d %.2f", h, attn_task_target_mass(&c, h));
        printf("\n");
        if (acc >= 0.99 && cacc < 0.6)
            printf("=> learning W_query and W_key is what solves the task.\n");
        else if (cfg.train_pos)
            printf("(With a trainable pos_emb the frozen model can learn where to look through pos_emb instead.)\n");
        attn_task_free(&c);
    }
    tg_tape_release_default();
    return rc;
}

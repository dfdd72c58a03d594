/*
 * tests/test_sample.c — the sampler: its maths (tg_sample_logits) and the
 * program build/sample, run as a user runs it.
 *
 *   - top-p against distributions whose nucleus is known by hand, in HF's
 *     order (temperature, top-k, top-p): the draw for a given uniform is the
 *     renormalised inverse CDF over the nucleus, tokens outside it are never
 *     drawn in many draws, frequencies match, top-p 1 is plain sampling draw
 *     for draw, ties and the one-token minimum;
 *   - tg_write_text's escaping of control bytes, byte by byte;
 *   - build/sample: defaults equal to build/train's own samples (the same
 *     text from the same checkpoint), --top-p, --num-samples, --prompt-file,
 *     usage errors (exit 2) and errors (exit 1), control bytes escaped on a
 *     terminal (a pseudo-terminal) and written raw to a file; build/train's
 *     samples escaped too.
 */
#include "testutil.h"

#include "nn/nn.h"

#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- tg_sample_logits */

/* The test's distributions, as probabilities; logits are their logs. */
static void logits_of(const double *p, int V, float *logits)
{
    for (int v = 0; v < V; v++)
        logits[v] = (float)log(p[v]);
}

/* The expected draw, computed here from the known nucleus: the first id of
 * keep (ascending) whose cumulative weight exceeds u * (their total). */
static int expected_draw(const double *w, const int *keep, int nkeep, double u)
{
    double total = 0.0, acc = 0.0;
    for (int i = 0; i < nkeep; i++)
        total += w[keep[i]];
    for (int i = 0; i < nkeep; i++) {
        acc += w[keep[i]];
        if (u * total < acc)
            return keep[i];
    }
    return keep[nkeep - 1];
}

/* Draws n tokens; checks each against expected_draw (the generator's next
 * double, read from a copy), counts them per id. */
static void check_draws(const float *logits, const double *w, int V, tg_sampling s, const int *keep, int nkeep,
                        int n, int *count)
{
    tg_generator g, peek;
    tg_manual_seed(&g, 2024);
    tg_sample_slot work[16];
    ck_assert_int_le(V, 16);
    memset(count, 0, (size_t)V * sizeof *count);
    for (int i = 0; i < n; i++) {
        peek = g;
        double u = tg_random_double(&peek);
        int32_t id = tg_sample_logits(logits, V, &s, &g, i % 2 ? work : NULL);
        ck_assert_msg(id == expected_draw(w, keep, nkeep, u), "draw %d (u %.17g): got id %d, expected %d", i, u,
                      (int)id, expected_draw(w, keep, nkeep, u));
        ck_assert_int_eq(g.index, peek.index); /* exactly one double per draw */
        count[id]++;
    }
}

/* Distribution A (ids 0..4): probabilities .05 .40 .10 .30 .15.
 * Sorted: id1 .40, id3 .30, id4 .15, id2 .10, id0 .05; cumulative .40 .70 .85 .95 1. */
static const double PA[5] = {0.05, 0.40, 0.10, 0.30, 0.15};

START_TEST(test_top_p_nucleus)
{
    float lg[5];
    logits_of(PA, 5, lg);
    int count[5];
    const int N = 20000;
    const struct {
        float top_p;
        int keep[5], nkeep;
    } cases[] = {
        {0.01f, {1}, 1},          /* at least one token: the most likely */
        {0.3f, {1}, 1},           /* .40 >= .3 */
        {0.65f, {1, 3}, 2},       /* .70 >= .65 */
        {0.8f, {1, 3, 4}, 3},     /* .85 >= .8 */
        {0.9f, {1, 2, 3, 4}, 4},  /* .95 >= .9 */
        {0.99f, {0, 1, 2, 3, 4}, 5},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        tg_sampling s = {1.0f, 0, cases[c].top_p};
        check_draws(lg, PA, 5, s, cases[c].keep, cases[c].nkeep, N, count);
        /* outside the nucleus: never; inside: as often as the renormalised probability says (5 sigma) */
        double mass = 0.0;
        for (int i = 0; i < cases[c].nkeep; i++)
            mass += PA[cases[c].keep[i]];
        for (int v = 0; v < 5; v++) {
            bool in = false;
            for (int i = 0; i < cases[c].nkeep; i++)
                in |= cases[c].keep[i] == v;
            if (!in) {
                ck_assert_msg(count[v] == 0, "top_p %g: id %d is outside the nucleus, drawn %d times",
                              (double)cases[c].top_p, v, count[v]);
                continue;
            }
            double q = PA[v] / mass, sd = sqrt(N * q * (1 - q));
            ck_assert_msg(fabs(count[v] - N * q) <= 5 * sd + 1, "top_p %g: id %d drawn %d times, expected %.0f",
                          (double)cases[c].top_p, v, count[v], N * q);
        }
    }
}
END_TEST

/* The order: temperature, then top-k, then top-p over the renormalised rest. */
START_TEST(test_top_p_order)
{
    float lg[5];
    logits_of(PA, 5, lg);
    int count[5];
    /* top-k 3 keeps ids 1, 3, 4: .40/.85 = .47, .30/.85 = .35, .15/.85 = .18; cumulative .47 .82 1,
     * so top-p .8 keeps {1, 3}. (top-p .8 alone keeps {1, 3, 4}; top-p first, then top-k, too.) */
    tg_sampling s = {1.0f, 3, 0.8f};
    check_draws(lg, PA, 5, s, (const int[]){1, 3}, 2, 5000, count);
    /* temperature 2 first: p^(1/2) renormalised = .106 .300 .150 .260 .184; sorted id1 .300, id3 .260,
     * id4 .184 (cumulative .744), so top-p .65 keeps {1, 3, 4} (at temperature 1 it keeps {1, 3}) */
    double w2[5];
    for (int v = 0; v < 5; v++)
        w2[v] = sqrt(PA[v]);
    s = (tg_sampling){2.0f, 0, 0.65f};
    check_draws(lg, w2, 5, s, (const int[]){1, 3, 4}, 3, 5000, count);
    /* top-k with ties at the k-th value keeps them all, as torch.topk + where does */
    float tie[5] = {0.0f, 2.0f, 1.0f, 1.0f, -1.0f};
    double wt[5];
    for (int v = 0; v < 5; v++)
        wt[v] = exp((double)tie[v]);
    s = (tg_sampling){1.0f, 2, 1.0f};
    check_draws(tie, wt, 5, s, (const int[]){1, 2, 3}, 3, 2000, count);
}
END_TEST

/* Ties in the nucleus: the smallest prefix, lower ids first. */
START_TEST(test_top_p_ties)
{
    float lg[4] = {0.5f, 0.5f, 0.5f, 0.5f};
    double w[4] = {1, 1, 1, 1};
    int count[4];
    tg_sampling s = {1.0f, 0, 0.5f}; /* cumulative .25 .5: two tokens */
    check_draws(lg, w, 4, s, (const int[]){0, 1}, 2, 2000, count);
    s.top_p = 0.51f;
    check_draws(lg, w, 4, s, (const int[]){0, 1, 2}, 3, 2000, count);
}
END_TEST

/* top-p 1 is plain sampling, draw for draw, with and without top-k; temperature 0 draws nothing. */
START_TEST(test_top_p_one_is_plain)
{
    tg_generator lg_gen, g1, g2;
    tg_manual_seed(&lg_gen, 7);
    float lg[13];
    for (int trial = 0; trial < 50; trial++) {
        for (int v = 0; v < 13; v++)
            lg[v] = 3.0f * (float)tg_random_double(&lg_gen) - 1.5f;
        tg_manual_seed(&g1, (uint64_t)trial);
        tg_manual_seed(&g2, (uint64_t)trial);
        for (int i = 0; i < 40; i++) {
            tg_sampling plain = {0.7f, trial % 3 ? 0 : 5, 1.0f}, p1 = plain;
            /* plain sampling written out: softmax over the top-k by inverse CDF in id order */
            float sorted[13];
            memcpy(sorted, lg, sizeof sorted);
            for (int a = 0; a < 13; a++)
                for (int b = a + 1; b < 13; b++)
                    if (sorted[b] > sorted[a]) {
                        float t = sorted[a];
                        sorted[a] = sorted[b];
                        sorted[b] = t;
                    }
            float floor_v = plain.top_k ? sorted[plain.top_k - 1] : -INFINITY;
            double w[13], mx = (double)sorted[0] / 0.7f;
            int keep[13], nk = 0;
            for (int v = 0; v < 13; v++) {
                w[v] = exp((double)lg[v] / 0.7f - mx);
                if (lg[v] >= floor_v)
                    keep[nk++] = v;
            }
            tg_generator peek = g1;
            int want = expected_draw(w, keep, nk, tg_random_double(&peek));
            ck_assert_int_eq(tg_sample_logits(lg, 13, &plain, &g1, NULL), want);
            ck_assert_int_eq(tg_sample_logits(lg, 13, &p1, &g2, NULL), want);
        }
    }
    /* temperature 0: the first maximum, whatever top-k and top-p say, and no draw */
    int argmax = 0;
    for (int v = 1; v < 13; v++)
        if (lg[v] > lg[argmax])
            argmax = v;
    tg_generator before = g1;
    tg_sampling greedy = {0.0f, 3, 0.5f};
    ck_assert_int_eq(tg_sample_logits(lg, 13, &greedy, &g1, NULL), argmax);
    ck_assert(g1.index == before.index && memcmp(g1.state, before.state, sizeof g1.state) == 0);
}
END_TEST

typedef struct {
    float logits[3];
    tg_sampling s;
} sample_call;

static void call_sample(void *ctx)
{
    sample_call *c = ctx;
    tg_sample_logits(c->logits, 3, &c->s, NULL, NULL);
}

START_TEST(test_sample_errors)
{
    const struct {
        sample_call c;
        const char *want;
    } cases[] = {
        {{{0, 1, 2}, {1.0f, 0, 0.0f}}, "top_p must be in (0, 1] (got 0)"},
        {{{0, 1, 2}, {1.0f, 0, 1.5f}}, "top_p must be in (0, 1] (got 1.5)"},
        {{{0, 1, 2}, {1.0f, 0, NAN}}, "top_p must be in (0, 1]"},
        {{{0, 1, 2}, {-1.0f, 0, 1.0f}}, "temperature must be a finite number >= 0 (got -1)"},
        {{{0, 1, 2}, {INFINITY, 0, 1.0f}}, "temperature must be a finite number >= 0"},
        {{{0, NAN, 2}, {1.0f, 0, 1.0f}}, "logit 1 of 3 is nan"},
        {{{0, INFINITY, 2}, {0.0f, 0, 1.0f}}, "logit 1 of 3 is inf"},
        {{{-INFINITY, -INFINITY, -INFINITY}, {1.0f, 0, 1.0f}}, "all 3 logits are -inf"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char msg[256];
        sample_call c = cases[i].c;
        ck_assert_msg(catch_error(call_sample, &c, msg, sizeof msg), "case %zu: no error", i);
        ck_assert_msg(strstr(msg, "tg_sample_logits: ") == msg && strstr(msg, cases[i].want), "case %zu: '%s'", i,
                      msg);
    }
    /* -inf logits are allowed (masked): never drawn */
    float lg[3] = {-INFINITY, 0.0f, -INFINITY};
    tg_sampling s = {1.0f, 0, 1.0f};
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(tg_sample_logits(lg, 3, &s, NULL, NULL), 1);
}
END_TEST

/* ---------------------------------------------------------------- tg_write_text */

/* The rule, written out: bytes < 0x20 except '\n' and '\t', and 0x7f, as \xNN. */
static size_t escape_expected(const unsigned char *in, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if ((in[i] < 0x20 && in[i] != '\n' && in[i] != '\t') || in[i] == 0x7f)
            k += (size_t)sprintf(out + k, "\\x%02x", in[i]);
        else
            out[k++] = (char)in[i];
    }
    return k;
}

START_TEST(test_write_text)
{
    unsigned char all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    char want[1024];
    size_t wn = escape_expected(all, 256, want);
    ck_assert_uint_eq(wn, 256 + 31 * 3); /* 30 control bytes + 0x7f, 4 bytes each */
    for (int esc = 0; esc < 2; esc++) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(tg_write_text(f, (const char *)all, 256, esc), 0);
        ck_assert_int_eq(tg_write_text(f, "", 0, esc), 0);
        fclose(f);
        if (esc) {
            ck_assert_uint_eq(len, wn);
            ck_assert_int_eq(memcmp(buf, want, wn), 0);
            ck_assert_int_eq(memcmp(buf, "\\x00\\x01", 8), 0);
        } else {
            ck_assert_uint_eq(len, 256);
            ck_assert_int_eq(memcmp(buf, all, 256), 0);
        }
        free(buf);
    }
    /* token by token: a byte tokenizer's ids are bytes; a char tokenizer's are UTF-8 (never escaped) */
    tg_tokenizer bt, ct;
    tg_tokenizer_byte_init(&bt);
    const char *text = "a\x1b\xc3\xa9\x7f\n";
    ck_assert_int_eq(tg_tokenizer_char_build(&ct, text, strlen(text), NULL, 0), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_int_eq(tg_tokenizer_print(&bt, 0x1b, f, true), 0);
    ck_assert_int_eq(tg_tokenizer_print(&bt, 'x', f, true), 0);
    for (int id = 0; id < ct.vocab_size; id++)
        ck_assert_int_eq(tg_tokenizer_print(&ct, id, f, true), 0);
    ck_assert_int_eq(tg_tokenizer_print(&ct, ct.vocab_size, f, true), 0); /* outside the vocabulary: nothing */
    fclose(f);
    /* the char vocabulary in code point order: \n, ESC, a, DEL, é */
    const char *expect = "\\x1bx\n\\x1ba\\x7f\xc3\xa9";
    ck_assert_uint_eq(len, strlen(expect));
    ck_assert_int_eq(memcmp(buf, expect, len), 0);
    free(buf);
    tg_tokenizer_free(&bt);
    tg_tokenizer_free(&ct);
}
END_TEST

/* ---------------------------------------------------------------- build/sample */

static char g_dir[256];
static char g_bin[512]; /* the build directory holding train and sample */

static void setup_dir(void)
{
    tmpdir_create(g_dir, sizeof g_dir, "tg_sample_");
    char self[512];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert_int_gt(n, 0);
    self[n] = '\0';
    /* <build>/tests/test_sample -> <build> */
    snprintf(g_bin, sizeof g_bin, "%s", dirname(dirname(self)));
}

static void teardown_dir(void) { tmpdir_remove(g_dir); }

static char *path_in(char *buf, const char *name)
{
    snprintf(buf, 512, "%s/%s", g_dir, name);
    return buf;
}

static void write_file(const char *name, const void *data, size_t n)
{
    char p[512];
    write_whole_file(path_in(p, name), data, n);
}

static char *read_file(const char *name, size_t *len)
{
    char p[512];
    return read_whole_file(path_in(p, name), len);
}

/* Runs <build>/<prog> with args (NULL-terminated; "@x" means the temp path x), stdout into out.txt (through
 * a pseudo-terminal with tty), stderr into err.txt; returns the exit status. */
static int run_tty(const char *prog, bool tty, const char *const *args)
{
    char exe[600], storage[32][512], out[512], err[512];
    char *argv[34];
    int n = 0;
    snprintf(exe, sizeof exe, "%s/%s", g_bin, prog);
    ck_assert_msg(access(exe, X_OK) == 0, "%s is not built", exe);
    argv[n++] = exe;
    for (int i = 0; args[i]; i++, n++) {
        ck_assert_int_lt(n, 32);
        argv[n] = args[i][0] == '@' ? path_in(storage[n], args[i] + 1) : (char *)args[i];
    }
    argv[n] = NULL;
    return run_program(argv, path_in(out, "out.txt"), path_in(err, "err.txt"), tty);
}
#define RUN(prog, ...) run_tty(prog, false, (const char *const[]){__VA_ARGS__, NULL})
#define RUN_TTY(prog, ...) run_tty(prog, true, (const char *const[]){__VA_ARGS__, NULL})

/* out.txt of the last run */
static char *out_text(size_t *len) { return read_file("out.txt", len); }

#define TINY "--layers", "1", "--heads", "2", "--emb", "16", "--ctx", "16", "--batch", "4", "--threads", "1"
#define PARA                                                                                                  \
    "It was the best of times, it was the worst of times; it was the age of wisdom, "                     \
    "it was the age of foolishness.\n"

/* ck.safetensors: a char model trained a few steps on PARA x 30 (text.txt); train's stdout in train_out.txt */
static void make_checkpoint(void)
{
    char text[4096] = "";
    for (int i = 0; i < 30; i++)
        strcat(text, PARA);
    write_file("text.txt", text, strlen(text));
    ck_assert_int_eq(RUN("train", "--data", "@text.txt", TINY, "--steps", "20", "--eval-every", "0",
                         "--sample-tokens", "60", "--seed", "5", "--save", "@ck.safetensors"),
                     0);
    size_t n;
    char *out = out_text(&n);
    write_file("train_out.txt", out, n);
    free(out);
}

/* The defaults are the trainer's sample settings: its "sample after training" (generator seed + 1, the
 * data's first 16 characters as the prompt) is what build/sample prints from the saved checkpoint. */
START_TEST(test_defaults_match_trainer)
{
    make_checkpoint();
    char *tr = read_file("train_out.txt", NULL);
    const char *head = "--- sample after training (temperature 0.8, top-k 20) ---\n";
    char *a = strstr(tr, head);
    ck_assert_msg(a != NULL, "no sample after training in: %s", tr);
    a += strlen(head);
    char *end = strstr(a, "\n---\n");
    ck_assert_ptr_nonnull(end);
    end[1] = '\0'; /* the sample and its newline */
    ck_assert_uint_eq(strlen(a), 16 + 60 + 1);
    char prompt[17];
    memcpy(prompt, PARA, 16);
    prompt[16] = '\0';
    ck_assert_int_eq(RUN("sample", "--load", "@ck.safetensors", "--prompt", prompt, "--tokens", "60", "--seed", "6"),
                     0);
    char *s = out_text(NULL);
    ck_assert_str_eq(s, a);
    /* and the defaults are 0.8 and 20 spelled out */
    ck_assert_int_eq(RUN("sample", "--load", "@ck.safetensors", "--prompt", prompt, "--tokens", "60", "--seed", "6",
                         "--temperature", "0.8", "--top-k", "20"),
                     0);
    char *s2 = out_text(NULL);
    ck_assert_str_eq(s2, a);
    ck_assert_int_eq(RUN("sample", "--load", "@ck.safetensors", "--prompt", prompt, "--tokens", "60", "--seed", "6",
                         "--temperature", "1", "--top-k", "0"),
                     0);
    char *s3 = out_text(NULL);
    ck_assert_str_ne(s3, a);
    ck_assert_int_eq(RUN("sample", "--help"), 0);
    char *help = out_text(NULL);
    const char *flags[] = {"--top-p", "--num-samples", "--prompt-file", "[0.8,", "[20,", "\\xNN"};
    for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
        ck_assert_msg(strstr(help, flags[i]), "--help lacks %s", flags[i]);
    free(help);
    free(s3);
    free(s2);
    free(s);
    free(tr);
}
END_TEST

START_TEST(test_top_p_program)
{
    make_checkpoint();
#define SAMPLE "--load", "@ck.safetensors", "--prompt", "It was", "--tokens", "80", "--seed", "11"
    ck_assert_int_eq(RUN("sample", SAMPLE, "--temperature", "1", "--top-k", "0"), 0);
    char *plain = out_text(NULL);
    /* top-p 1: plain sampling, draw for draw */
    ck_assert_int_eq(RUN("sample", SAMPLE, "--temperature", "1", "--top-k", "0", "--top-p", "1"), 0);
    char *p1 = out_text(NULL);
    ck_assert_str_eq(p1, plain);
    /* a tiny nucleus is the most likely token alone: greedy, alone and after top-k */
    ck_assert_int_eq(RUN("sample", SAMPLE, "--temperature", "0"), 0);
    char *greedy = out_text(NULL);
    ck_assert_int_eq(RUN("sample", SAMPLE, "--temperature", "1", "--top-k", "0", "--top-p=1e-6"), 0);
    char *tiny = out_text(NULL);
    ck_assert_str_eq(tiny, greedy);
    ck_assert_int_eq(RUN("sample", SAMPLE, "--top-k", "5", "--top-p", "1e-6"), 0);
    char *tiny_k = out_text(NULL);
    ck_assert_str_eq(tiny_k, greedy);
    /* a real nucleus samples: neither greedy nor (with these seeds) the plain sample */
    ck_assert_int_eq(RUN("sample", SAMPLE, "--temperature", "1", "--top-k", "0", "--top-p", "0.9"), 0);
    char *nuc = out_text(NULL);
    ck_assert_uint_eq(strlen(nuc), 6 + 80 + 1);
    ck_assert_str_ne(nuc, greedy);
    ck_assert_str_ne(nuc, plain);
    free(nuc);
    free(tiny_k);
    free(tiny);
    free(greedy);
    free(p1);
    free(plain);
}
END_TEST

START_TEST(test_num_samples)
{
    make_checkpoint();
    ck_assert_int_eq(RUN("sample", SAMPLE), 0);
    char *one = out_text(NULL);
    ck_assert_int_eq(RUN("sample", SAMPLE, "--num-samples", "3"), 0);
    char *three = out_text(NULL);
    /* sample 1 as --num-samples 1, then the separator line, ...: s1 SEP s2 SEP s3 */
    const char *sep = "---------------\n";
    ck_assert_int_eq(strncmp(three, one, strlen(one)), 0);
    char *s2 = three + strlen(one);
    ck_assert_int_eq(strncmp(s2, sep, strlen(sep)), 0);
    s2 += strlen(sep);
    ck_assert_int_eq(strncmp(s2, "It was", 6), 0);
    char *s3 = s2 + 6 + 80 + 1;
    ck_assert_int_eq(s3[-1], '\n');
    ck_assert_int_eq(strncmp(s3, sep, strlen(sep)), 0);
    s3 += strlen(sep);
    ck_assert_uint_eq(strlen(s3), 6 + 80 + 1);
    ck_assert_int_eq(strncmp(s3, "It was", 6), 0);
    /* one generator seeded once: the samples differ (the separator text is not in them) */
    ck_assert_int_ne(strncmp(one, s2, 6 + 80), 0);
    ck_assert_int_ne(strncmp(s2, s3, 6 + 80), 0);
    /* greedy: three equal samples */
    ck_assert_int_eq(RUN("sample", SAMPLE, "--num-samples=3", "--temperature", "0"), 0);
    char *g3 = out_text(NULL);
    ck_assert_int_eq(RUN("sample", SAMPLE, "--temperature", "0"), 0);
    char *g1 = out_text(NULL);
    char want[1024];
    snprintf(want, sizeof want, "%s%s%s%s%s", g1, sep, g1, sep, g1);
    ck_assert_str_eq(g3, want);
    free(g1);
    free(g3);
    free(three);
    free(one);
}
END_TEST

START_TEST(test_prompt_file)
{
    make_checkpoint();
    ck_assert_int_eq(RUN("sample", SAMPLE), 0);
    char *want = out_text(NULL);
    write_file("prompt.txt", "It was", 6);
    ck_assert_int_eq(RUN("sample", "--load", "@ck.safetensors", "--prompt-file", "@prompt.txt", "--tokens", "80",
                         "--seed", "11"),
                     0);
    char *got = out_text(NULL);
    ck_assert_str_eq(got, want);
    /* an empty file is no prompt (a newline) */
    write_file("empty.txt", "", 0);
    ck_assert_int_eq(RUN("sample", "--load", "@ck.safetensors", "--prompt-file", "@empty.txt", "--tokens", "20"), 0);
    char *e1 = out_text(NULL);
    ck_assert_int_eq(RUN("sample", "--load", "@ck.safetensors", "--tokens", "20"), 0);
    char *e2 = out_text(NULL);
    ck_assert_str_eq(e1, e2);
    ck_assert_int_eq(e1[0], '\n');
    free(e1);
    free(e2);
    free(got);
    free(want);
}
END_TEST

/* Usage errors exit 2, other errors 1; always one line naming the problem, nothing on stdout. */
START_TEST(test_errors)
{
    make_checkpoint();
    write_file("quiz.txt", "Quiz", 4);
    mkdir(path_in((char[512]){0}, "adir"), 0755);
    const struct {
        int status;
        const char *args[12];
        const char *want;
    } cases[] = {
        {2, {"--load", "@ck.safetensors", "--top-p", "0", NULL}, "--top-p: '0' is out of range (0, 1]"},
        {2, {"--load", "@ck.safetensors", "--top-p", "1.5", NULL}, "--top-p: '1.5' is out of range (0, 1]"},
        {2, {"--load", "@ck.safetensors", "--top-p", "nan", NULL}, "--top-p: 'nan' is not a number"},
        {2, {"--load", "@ck.safetensors", "--top-p", "0.5x", NULL}, "--top-p: '0.5x' is not a number"},
        {2, {"--load", "@ck.safetensors", "--top-p", NULL}, "--top-p needs a value"},
        {2, {"--load", "@ck.safetensors", "--num-samples", "0", NULL}, "--num-samples: '0' is out of range"},
        {2, {"--load", "@ck.safetensors", "--num-samples", "2.5", NULL}, "--num-samples: '2.5' is not an integer"},
        {2, {"--load", "@ck.safetensors", "--tokens", "-1", NULL}, "--tokens: '-1' is out of range"},
        {2, {"--load", "@ck.safetensors", "--top-k", "99999999999999999999", NULL}, "--top-k: "},
        {2, {"--load", "@ck.safetensors", "--temperature", "-1", NULL}, "--temperature: '-1' is out of range"},
        {2, {"--load", "@ck.safetensors", "--temperature", "1e999", NULL}, "--temperature: '1e999' is out of range"},
        {2, {"--load", "@ck.safetensors", "--seed", "-3", NULL}, "--seed: '-3' is not a non-negative integer"},
        {2, {"--load", "@ck.safetensors", "--frobnicate", "1", NULL}, "unknown flag '--frobnicate'"},
        {2, {"--prompt", "x", NULL}, "--load FILE is required"},
        {2, {"--load", "@ck.safetensors", "--prompt", "It", "--prompt-file", "@quiz.txt", NULL},
         "--prompt and --prompt-file are mutually exclusive"},
        {1, {"--load", "@ck.safetensors", "--prompt-file", "@none.txt", NULL},
         "none.txt: cannot open: No such file or directory"},
        {1, {"--load", "@ck.safetensors", "--prompt-file", "@adir", NULL}, "adir: cannot read: Is a directory"},
        {1, {"--load", "@ck.safetensors", "--prompt-file", "/dev/zero", NULL},
         "--prompt-file /dev/zero: larger than 16 MiB"},
        {1, {"--load", "@ck.safetensors", "--prompt-file", "@quiz.txt", NULL},
         "quiz.txt: character 'Q' at offset 0 is not in the vocabulary"},
        {1, {"--load", "@none.safetensors", NULL}, "none.safetensors: cannot open"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = run_tty("sample", false, cases[i].args);
        char *err = read_file("err.txt", NULL), *out = out_text(NULL);
        int lines = 0;
        for (const char *c = err; *c; c++)
            lines += *c == '\n';
        ck_assert_msg(rc == cases[i].status, "case %zu: exit %d, expected %d (%s)", i, rc, cases[i].status, err);
        ck_assert_msg(lines == 1 && strncmp(err, "sample: error: ", 15) == 0 && strstr(err, cases[i].want),
                      "case %zu: '%s' lacks '%s'", i, err, cases[i].want);
        ck_assert_msg(out[0] == '\0', "case %zu: printed '%s'", i, out);
        free(err);
        free(out);
    }
}
END_TEST

/* ---------------------------------------------------------------- control bytes on a terminal */

/* CTL: text with control bytes (no NUL) for a byte-level model. */
static const char CTL[] = "bell\a esc\x1b[31m red\x1b[0m cr\r bs\b del\x7f tab\t nl\n";

static bool has_raw_control(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f)
            return true;
    }
    return false;
}

START_TEST(test_tty_escapes)
{
    char text[4096] = "";
    for (int i = 0; i < 40; i++)
        strcat(text, CTL);
    write_file("ctl.txt", text, strlen(text));
    ck_assert_int_eq(RUN("train", "--data", "@ctl.txt", "--tokenizer", "byte", TINY, "--steps", "3", "--eval-every",
                         "0", "--sample-tokens", "0", "--save", "@byte.safetensors"),
                     0);
    write_file("prompt.txt", CTL, strlen(CTL));
#define BYTES "--load", "@byte.safetensors", "--prompt-file", "@prompt.txt", "--tokens", "300", "--temperature", "1", \
              "--top-k", "0", "--num-samples", "2"
    /* to a file: the bytes as they are */
    ck_assert_int_eq(RUN("sample", BYTES), 0);
    size_t rn, tn;
    char *raw = out_text(&rn);
    ck_assert_int_eq(memcmp(raw, CTL, strlen(CTL)), 0);
    ck_assert_msg(has_raw_control(raw + strlen(CTL), 300), "the generated part holds no control byte");
    /* to a terminal: each control byte as \xNN, everything else as it is */
    ck_assert_int_eq(RUN_TTY("sample", BYTES), 0);
    char *tty = out_text(&tn);
    char *want = malloc(rn * 4 + 1);
    size_t wn = escape_expected((const unsigned char *)raw, rn, want);
    ck_assert_uint_eq(tn, wn);
    ck_assert_int_eq(memcmp(tty, want, wn), 0);
    ck_assert(!has_raw_control(tty, tn));
    ck_assert_int_eq(memcmp(tty, "bell\\x07 esc\\x1b[31m", 20), 0);
    free(want);
    free(tty);
    free(raw);

    /* build/train's samples: raw to a file, escaped on a terminal (the prompt is the data's start) */
    const char *const targs[] = {"--data", "@ctl.txt", "--tokenizer", "byte", "--init", "@byte.safetensors", TINY,
                                 "--steps", "1", "--eval-every", "0", "--sample-tokens", "200", NULL};
    const char *head = "--- sample before training (temperature 0.8, top-k 20) ---\n";
    ck_assert_int_eq(run_tty("train", false, targs), 0);
    raw = out_text(&rn);
    char *a = strstr(raw, head);
    ck_assert_ptr_nonnull(a);
    a += strlen(head);
    char *a_end = strstr(a, "\n---\n");
    ck_assert_ptr_nonnull(a_end);
    ck_assert(has_raw_control(a, (size_t)(a_end - a)));
    ck_assert_int_eq(run_tty("train", true, targs), 0);
    tty = out_text(&tn);
    char *b = strstr(tty, head);
    ck_assert_msg(b != NULL, "no sample on the terminal: %s", tty);
    b += strlen(head);
    char *b_end = strstr(b, "\n---\n");
    ck_assert_ptr_nonnull(b_end);
    want = malloc((size_t)(a_end - a) * 4 + 1);
    wn = escape_expected((const unsigned char *)a, (size_t)(a_end - a), want);
    ck_assert_uint_eq((size_t)(b_end - b), wn);
    ck_assert_int_eq(memcmp(b, want, wn), 0);
    ck_assert(!has_raw_control(b, wn));
    free(want);
    free(tty);
    free(raw);
}
END_TEST

static Suite *sample_suite(void)
{
    Suite *s = suite_create("sample");
    TCase *tm = tcase_create("sampling");
    tcase_add_test(tm, test_top_p_nucleus);
    tcase_add_test(tm, test_top_p_order);
    tcase_add_test(tm, test_top_p_ties);
    tcase_add_test(tm, test_top_p_one_is_plain);
    tcase_add_test(tm, test_sample_errors);
    tcase_add_test(tm, test_write_text);
    suite_add_tcase(s, tm);
    TCase *tp = tcase_create("program");
    tcase_set_timeout(tp, 120);
    tcase_add_checked_fixture(tp, setup_dir, teardown_dir);
    tcase_add_test(tp, test_defaults_match_trainer);
    tcase_add_test(tp, test_top_p_program);
    tcase_add_test(tp, test_num_samples);
    tcase_add_test(tp, test_prompt_file);
    tcase_add_test(tp, test_errors);
    tcase_add_test(tp, test_tty_escapes);
    suite_add_tcase(s, tp);
    return s;
}

int main(void) { return run_suite(sample_suite()) ? 1 : 0; }

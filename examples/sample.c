/*
 * examples/sample.c — generate text from a checkpoint written by build/train.
 *
 *   build/sample --load model.safetensors --prompt "I had" --tokens 200 --top-p 0.9 --num-samples 3
 *
 * The checkpoint's metadata gives the model config and the tokenizer.
 * --temperature 0 decodes greedily (argmax); otherwise the next token is drawn
 * from softmax(logits / temperature) over the --top-k largest logits (0: all),
 * then restricted to the --top-p nucleus (1: off), with a generator seeded
 * once by --seed (tg_sample_logits). The defaults (temperature 0.8, top-k 20)
 * are the trainer's own samples' (TG_SAMPLE_TEMPERATURE, TG_SAMPLE_TOP_K).
 * --num-samples N prints N samples, a line '---------------' between them,
 * as nanoGPT's sample.py. The prompt is --prompt TEXT or the bytes of
 * --prompt-file FILE (not both). On a terminal, control bytes print as \xNN.
 * Usage errors exit 2, other errors 1.
 *
 * --dump-logits FILE (for tests/interop) writes the logits of the prompt
 * instead of sampling: a line "T V", then T lines of V values ('%.9g').
 */
#include "nn/nn.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: sample --load FILE [flags]\n"
               "  --load FILE            checkpoint written by build/train (required)\n"
               "  --prompt TEXT          text to continue [a newline]\n"
               "  --prompt-file FILE     the prompt is FILE's bytes (at most 16 MiB; not with --prompt)\n"
               "  --tokens N             new tokens per sample [200]\n"
               "  --num-samples N        samples, a line '---------------' between them [1]\n"
               "  --temperature F        softmax temperature; 0: greedy [%.1f, as build/train's samples]\n"
               "  --top-k N              keep the N most likely tokens; 0: all [%d, as build/train's samples]\n"
               "  --top-p F              nucleus: keep the most likely tokens up to probability F, in (0, 1];\n"
               "                         1: off [1]; applied after --temperature and --top-k\n"
               "  --seed N               generator seed [123]\n"
               "  --dump-logits FILE     write the prompt's logits instead of sampling (tests/interop)\n"
               "On a terminal, control bytes of the text (below 0x20 except newline and tab, and 0x7f)\n"
               "print as \\xNN. Exit status: 0 ok, 1 error, 2 usage error.\n",
            (double)TG_SAMPLE_TEMPERATURE, TG_SAMPLE_TOP_K);
}

/* One line on stderr; returns the exit status (1: error, 2: usage error). */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "sample: error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    return status;
}
#define die(...) fail(1, __VA_ARGS__)
#define usage_error(...) fail(2, __VA_ARGS__)

static void error_handler(const char *op, const char *msg, void *user)
{
    (void)user;
    fflush(stdout);
    fprintf(stderr, "sample: error: %s: %s\n", op, msg);
    exit(1);
}

typedef struct {
    const tg_tokenizer *tok;
    bool escape; /* stdout is a terminal */
} printer;

static void print_token(int32_t id, void *ctx)
{
    const printer *pr = ctx;
    tg_tokenizer_print(pr->tok, id, stdout, pr->escape);
    fflush(stdout);
}

/* --prompt-file: the file's bytes, at most 16 MiB (a FIFO or /dev/zero cannot
 * make it read forever). *text is malloc'd. */
#define PROMPT_FILE_MAX (16L << 20)
static int read_prompt_file(const char *path, char **text, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return die("--prompt-file %s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    int rc = b ? 0 : die("out of memory");
    while (rc == 0) {
        if (n == cap) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                rc = die("out of memory");
                break;
            }
            b = nb;
            cap *= 2;
        }
        size_t got = fread(b + n, 1, cap - n, f);
        n += got;
        if (n > (size_t)PROMPT_FILE_MAX)
            rc = die("--prompt-file %s: larger than 16 MiB", path);
        else if (got == 0 && ferror(f))
            rc = die("--prompt-file %s: cannot read: %s", path, strerror(errno));
        else if (got == 0)
            break;
    }
    fclose(f);
    if (rc) {
        free(b);
        return rc;
    }
    *text = b;
    *len = n;
    return 0;
}

/* Writes the prompt's logits (T, V) as text, atomically. */
static int dump_logits(tg_gpt *m, const int32_t *ids, int n, const char *path)
{
    int T = n < m->cfg.context_length ? n : m->cfg.context_length;
    tg_gpt_train(m, false);
    tg_set_grad_enabled(false);
    tg_tensor *logits = tg_gpt_forward(m, ids + (n - T), 1, T);
    tg_atomic_file f;
    tg_atomic_open(&f, path);
    const int V = m->cfg.vocab_size;
    tg_atomic_printf(&f, "%d %d\n", T, V);
    for (int t = 0; t < T; t++)
        for (int v = 0; v < V; v++)
            tg_atomic_printf(&f, "%.9g%c", (double)logits->data[(int64_t)t * V + v], v + 1 == V ? '\n' : ' ');
    if (tg_atomic_commit(&f) != 0)
        return die("%s", f.msg);
    tg_tape_reset(NULL);
    return 0;
}

/* Parses v fully as a number in [lo, hi] (integer: no fraction); else a usage error naming the flag
 * and the range (as text). */
static int parse_num(const char *flag, const char *v, double lo, double hi, bool integer, const char *range,
                     double *out)
{
    char *end;
    errno = 0;
    double x = integer ? (double)strtoll(v, &end, 10) : strtod(v, &end);
    if (end == v || *end || (!integer && isnan(x)))
        return usage_error("%s: '%s' is not %s", flag, v, integer ? "an integer" : "a number");
    if (errno == ERANGE || !(x >= lo && x <= hi))
        return usage_error("%s: '%s' is out of range %s", flag, v, range);
    *out = x;
    return 0;
}

int main(int argc, char **argv)
{
    const char *load = NULL, *prompt = NULL, *prompt_file = NULL, *dump = NULL;
    long tokens = 200, num_samples = 1;
    tg_sampling smp = {TG_SAMPLE_TEMPERATURE, TG_SAMPLE_TOP_K, 1.0f};
    unsigned long long seed = 123;
    tg_set_error_handler(error_handler, NULL);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        static const char *const known[] = {"--load",  "--prompt", "--tokens",      "--temperature", "--top-k",
                                            "--seed",  "--dump-logits", "--top-p", "--num-samples",
                                            "--prompt-file"};
        const int nknown = (int)(sizeof known / sizeof *known);
        /* --flag value or --flag=value, as build/train takes them */
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        int k = -1;
        for (int j = 0; j < nknown; j++)
            if (strlen(known[j]) == nl && !strncmp(a, known[j], nl))
                k = j;
        if (k < 0)
            return usage_error("unknown flag '%s' (see --help)", a);
        if (!eq && i + 1 >= argc)
            return usage_error("%s needs a value", a);
        const char *v = eq ? eq + 1 : argv[++i];
        double x = 0;
        int rc = 0;
        switch (k) {
        case 0: load = v; break;
        case 1: prompt = v; break;
        case 2:
            if (!(rc = parse_num("--tokens", v, 0, 1 << 24, true, "[0, 2^24]", &x)))
                tokens = (long)x;
            break;
        case 3:
            if (!(rc = parse_num("--temperature", v, 0, 1e30, false, "[0, 1e30]", &x)))
                smp.temperature = (float)x;
            break;
        case 4:
            if (!(rc = parse_num("--top-k", v, 0, 1 << 24, true, "[0, 2^24]", &x)))
                smp.top_k = (int)x;
            break;
        case 5: {
            char *end;
            errno = 0;
            seed = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-')
                return usage_error("--seed: '%s' is not a non-negative integer", v);
            break;
        }
        case 6: dump = v; break;
        case 7:
            /* (float)x > 0 also refuses a positive x below float's range */
            if (!(rc = parse_num("--top-p", v, 0, 1, false, "(0, 1]", &x)) && !((float)x > 0.0f))
                rc = usage_error("--top-p: '%s' is out of range (0, 1]", v);
            smp.top_p = (float)x;
            break;
        case 8:
            if (!(rc = parse_num("--num-samples", v, 1, 1 << 20, true, "[1, 2^20]", &x)))
                num_samples = (long)x;
            break;
        case 9: prompt_file = v; break;
        }
        if (rc)
            return rc;
    }
    if (!load)
        return usage_error("--load FILE is required");
    if (prompt && prompt_file)
        return usage_error("--prompt and --prompt-file are mutually exclusive");

    char *file_text = NULL;
    size_t len = 0;
    if (prompt_file && read_prompt_file(prompt_file, &file_text, &len))
        return 1;
    tg_st_file *f;
    tg_st_error err;
    if (tg_st_open(load, &f, &err)) {
        free(file_text);
        return die("%s", err.msg);
    }
    tg_gpt_config cfg;
    tg_tokenizer tok;
    if (tg_gpt_config_from_meta(&cfg, tg_st_metadata(f), load, &err) ||
        tg_tokenizer_from_meta(&tok, tg_st_metadata(f), load, &err)) {
        tg_st_close(f);
        free(file_text);
        return die("%s", err.msg);
    }
    if (tok.vocab_size != cfg.vocab_size) {
        tg_tokenizer_free(&tok);
        tg_st_close(f);
        free(file_text);
        return die("%s: its tokenizer does not match vocab_size", load);
    }
    tg_generator g;
    tg_manual_seed(&g, seed);
    tg_gpt *m = tg_gpt_new(&cfg, &g);
    int rc = tg_gpt_load(m, f, true, &err);
    tg_st_close(f);
    int32_t *ids = NULL;
    if (rc) {
        rc = die("%s", err.msg);
        goto done;
    }

    /* the prompt: --prompt-file's bytes or --prompt's text; none (or empty): a newline */
    const char *p = file_text ? file_text : prompt ? prompt : "";
    if (!file_text)
        len = strlen(p);
    const bool given = len > 0;
    if (!given) {
        p = "\n";
        len = 1;
    }
    ids = malloc((len + (size_t)tokens) * sizeof *ids);
    int64_t n = 0;
    char why[256];
    if (!ids) {
        rc = die("out of memory");
        goto done;
    }
    if (tg_tokenizer_encode(&tok, p, len, ids, &n, why, sizeof why)) {
        if (given) {
            rc = prompt_file ? die("--prompt-file %s: %s", prompt_file, why) : die("--prompt: %s", why);
            goto done;
        }
        ids[0] = 0;   /* no prompt and no newline in the vocabulary: start from id 0 */
        n = 1;
        len = 0;
    }
    if (dump) {
        rc = dump_logits(m, ids, (int)n, dump);
        goto done;
    }
    /* one generator for all samples, seeded once, as nanoGPT's sample.py */
    printer pr = {&tok, isatty(STDOUT_FILENO) == 1};
    tg_manual_seed(&g, seed);
    for (long s = 0; s < num_samples; s++) {
        if (s > 0)
            printf("---------------\n");
        tg_write_text(stdout, p, len, pr.escape);
        tg_gpt_generate_with(m, ids, (int)n, (int)tokens, &smp, &g, print_token, &pr);
        printf("\n");
    }
    if (fflush(stdout) != 0)
        rc = die("stdout: %s", strerror(errno));
done:
    free(ids);
    free(file_text);
    tg_gpt_free(m);
    tg_tokenizer_free(&tok);
    tg_tape_release_default();
    return rc;
}

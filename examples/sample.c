/*
 * examples/sample.c — generate text from a checkpoint written by build/train.
 *
 *   build/sample --load model.safetensors --prompt "I had" --tokens 200 --temperature 0.8 --top-k 20
 *
 * The checkpoint's metadata gives the model config and the tokenizer.
 * --temperature 0 decodes greedily (argmax); otherwise the next token is drawn
 * from softmax(logits / temperature) over the --top-k largest logits (0: all),
 * with a generator seeded by --seed.
 *
 * --dump-logits FILE (for tests/interop) writes the logits of the prompt
 * instead of sampling: a line "T V", then T lines of V values ('%.9g').
 */
#include "nn/nn.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: sample --load FILE [--prompt TEXT] [--tokens N (200)] [--temperature F (1.0; 0: greedy)]\n"
               "              [--top-k N (0: all)] [--seed N (123)]\n");
}

static int die(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "sample: error: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    return 1;
}

static void error_handler(const char *op, const char *msg, void *user)
{
    (void)user;
    fflush(stdout);
    fprintf(stderr, "sample: error: %s: %s\n", op, msg);
    exit(1);
}

static void print_token(int32_t id, void *ctx)
{
    char buf[4];
    int n = tg_tokenizer_decode(ctx, id, buf);
    fwrite(buf, 1, (size_t)n, stdout);
    fflush(stdout);
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
        return die("%s%s", f.msg, "");
    tg_tape_reset(NULL);
    return 0;
}

int main(int argc, char **argv)
{
    const char *load = NULL, *prompt = NULL, *dump = NULL;
    long tokens = 200, top_k = 0;
    double temperature = 1.0;
    unsigned long long seed = 123;
    tg_set_error_handler(error_handler, NULL);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        const char *known[] = {"--load", "--prompt", "--tokens", "--temperature", "--top-k", "--seed", "--dump-logits"};
        /* --flag value or --flag=value, as build/train takes them */
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        int k = -1;
        for (int j = 0; j < 7; j++)
            if (strlen(known[j]) == nl && !strncmp(a, known[j], nl))
                k = j;
        if (k < 0)
            return die("unknown flag '%s'%s (see --help)", a, "");
        if (!eq && i + 1 >= argc)
            return die("%s needs a value%s", a, "");
        const char *v = eq ? eq + 1 : argv[++i];
        char *end;
        errno = 0;
        switch (k) {
        case 0: load = v; break;
        case 1: prompt = v; break;
        case 2:
            tokens = strtol(v, &end, 10);
            if (errno || end == v || *end || tokens < 0 || tokens > (1L << 24))
                return die("--tokens: '%s' is not an integer in [0, 2^24]%s", v, "");
            break;
        case 3:
            temperature = strtod(v, &end);
            if (errno || end == v || *end || !(temperature >= 0.0) || !isfinite(temperature))
                return die("--temperature: '%s' is not a number >= 0%s", v, "");
            break;
        case 4:
            top_k = strtol(v, &end, 10);
            if (errno || end == v || *end || top_k < 0 || top_k > (1L << 24))
                return die("--top-k: '%s' is not an integer >= 0%s", v, "");
            break;
        case 5:
            seed = strtoull(v, &end, 10);
            if (errno || end == v || *end || v[0] == '-')
                return die("--seed: '%s' is not a non-negative integer%s", v, "");
            break;
        case 6: dump = v; break;
        }
    }
    if (!load)
        return die("--load FILE is required%s%s", "", "");

    tg_st_file *f;
    tg_st_error err;
    if (tg_st_open(load, &f, &err))
        return die("%s%s", err.msg, "");
    tg_gpt_config cfg;
    tg_tokenizer tok;
    if (tg_gpt_config_from_meta(&cfg, tg_st_metadata(f), load, &err) ||
        tg_tokenizer_from_meta(&tok, tg_st_metadata(f), load, &err)) {
        tg_st_close(f);
        return die("%s%s", err.msg, "");
    }
    if (tok.vocab_size != cfg.vocab_size) {
        tg_tokenizer_free(&tok);
        tg_st_close(f);
        return die("%s: its tokenizer does not match vocab_size%s", load, "");
    }
    tg_generator g;
    tg_manual_seed(&g, seed);
    tg_gpt *m = tg_gpt_new(&cfg, &g);
    int rc = tg_gpt_load(m, f, true, &err);
    tg_st_close(f);
    if (rc) {
        tg_gpt_free(m);
        tg_tokenizer_free(&tok);
        return die("%s%s", err.msg, "");
    }

    const char *p = prompt && *prompt ? prompt : "\n";
    size_t len = strlen(p);
    int32_t *ids = malloc((len + (size_t)tokens) * sizeof *ids);
    int64_t n = 0;
    char why[256];
    if (!ids) {
        rc = die("out of memory%s%s", "", "");
        goto done;
    }
    if (tg_tokenizer_encode(&tok, p, len, ids, &n, why, sizeof why)) {
        if (prompt && *prompt) {
            rc = die("--prompt: %s%s", why, "");
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
    fwrite(p, 1, len, stdout);
    tg_manual_seed(&g, seed);
    tg_gpt_generate(m, ids, (int)n, (int)tokens, (float)temperature, (int)top_k, &g, print_token, &tok);
    printf("\n");
done:
    free(ids);
    tg_gpt_free(m);
    tg_tokenizer_free(&tok);
    tg_tape_release_default();
    return rc;
}

/*
 * nn/sampling.c — the next-token sampler of tg_gpt_generate, and the printing
 * of generated text that never sends raw control bytes to a terminal.
 *
 * One row of logits (V) -> one token id, with the settings applied in the
 * order of HF's and nanoGPT's samplers:
 *   temperature  0: argmax (no draw); else x = logits / temperature
 *   top-k        keep the k largest logits; ties with the k-th are kept, as
 *                torch.topk + where(logits < v[-1], -inf) keeps them
 *   softmax      p = exp(x - max) over the kept tokens
 *   top-p        sort p descending (ties: lower id first), keep the smallest
 *                prefix whose cumulative probability is >= top_p (at least one
 *                token), as HF's TopPLogitsWarper
 *   draw         one tg_random_double u; the first kept id (in id order)
 *                whose running sum exceeds u * sum (renormalised over the kept)
 * With top_p = 1 nothing is sorted or dropped by the nucleus, so the draw is
 * the plain softmax sample's, draw for draw.
 */
#include "nn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- next-token sampler */

static int by_value_desc(const void *a, const void *b)
{
    const tg_sample_slot *x = a, *y = b;
    if (x->p != y->p)
        return x->p > y->p ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int by_id(const void *a, const void *b)
{
    const tg_sample_slot *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

void tg_sampling_check(const char *op, const tg_sampling *s)
{
    tg_check_ptr(op, s, "sampling settings");
    if (!(s->temperature >= 0.0f) || !isfinite(s->temperature))
        tg_error(op, "temperature must be a finite number >= 0 (got %g)", (double)s->temperature);
    if (!(s->top_p > 0.0f && s->top_p <= 1.0f))
        tg_error(op, "top_p must be in (0, 1] (got %g)", (double)s->top_p);
}

int32_t tg_sample_logits(const float *logits, int V, const tg_sampling *s, tg_generator *g, tg_sample_slot *work)
{
    static const char *op = "tg_sample_logits";
    tg_check_ptr(op, logits, "logits");
    tg_sampling_check(op, s);
    if (V < 1)
        tg_error(op, "needs V >= 1 logits (got %d)", V);
    int finite = 0;
    for (int v = 0; v < V; v++) {
        if (isnan(logits[v]) || logits[v] == INFINITY)
            tg_error(op, "logit %d of %d is %g: the model's output is not finite", v, V, (double)logits[v]);
        finite += logits[v] != -INFINITY;
    }
    if (!finite)
        tg_error(op, "all %d logits are -inf: nothing to sample", V);
    if (s->temperature == 0.0f) {
        int32_t best = 0;
        for (int v = 1; v < V; v++)
            if (logits[v] > logits[best])
                best = v;
        return best;
    }
    tg_sample_slot *w = work ? work : malloc((size_t)V * sizeof *w);
    if (!w)
        tg_error(op, "out of memory");
    for (int v = 0; v < V; v++)
        w[v] = (tg_sample_slot){(double)logits[v], v};
    /* w[0..n) are the candidates */
    int n = V;
    const bool topk = s->top_k > 0 && s->top_k < V, topp = s->top_p < 1.0f;
    if (topk || topp) {
        qsort(w, (size_t)V, sizeof *w, by_value_desc);
        if (topk) {
            const double floor_v = w[s->top_k - 1].p;
            n = s->top_k;
            while (n < V && w[n].p >= floor_v)
                n++;
        }
    }
    /* softmax numerators; the max is taken in id order over the candidates, as the sum below */
    const double T = s->temperature;
    double mx = -INFINITY;
    for (int i = 0; i < n; i++)
        if (w[i].p / T > mx)
            mx = w[i].p / T;
    for (int i = 0; i < n; i++)
        w[i].p = exp(w[i].p / T - mx);
    if (topp) {
        /* w is still sorted descending: the nucleus is its shortest prefix reaching top_p */
        double total = 0.0, acc = 0.0;
        for (int i = 0; i < n; i++)
            total += w[i].p;
        int m = 0;
        while (m < n) {
            acc += w[m++].p;
            if (acc / total >= (double)s->top_p)
                break;
        }
        n = m;
    }
    if (topk || topp)
        qsort(w, (size_t)n, sizeof *w, by_id);
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += w[i].p;
    double u = tg_random_double(g ? g : tg_default_generator()) * sum, acc = 0.0;
    int32_t next = -1;
    for (int i = 0; i < n; i++) {
        if (w[i].p <= 0.0)
            continue;
        next = w[i].id; /* the last candidate catches rounding at the top */
        acc += w[i].p;
        if (u < acc)
            break;
    }
    if (next < 0)
        next = w[0].id;
    if (!work)
        free(w);
    return next;
}

/* ---------------------------------------------------------------- printing generated text */

int tg_write_text(FILE *f, const char *s, size_t n, bool escape)
{
    tg_check_ptr("tg_write_text", f, "stream");
    if (n && !s)
        tg_check_ptr("tg_write_text", s, "text");
    if (!escape)
        return fwrite(s, 1, n, f) == n ? 0 : -1;
    int rc = 0;
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 0x20 && c != 0x7f) || c == '\n' || c == '\t')
            continue;
        if (fwrite(s + start, 1, i - start, f) != i - start || fprintf(f, "\\x%02x", c) != 4)
            rc = -1;
        start = i + 1;
    }
    if (fwrite(s + start, 1, n - start, f) != n - start)
        rc = -1;
    return rc;
}

int tg_tokenizer_print(const tg_tokenizer *t, int32_t id, FILE *f, bool escape)
{
    tg_check_ptr("tg_tokenizer_print", t, "tokenizer");
    char buf[4];
    int n = tg_tokenizer_decode(t, id, buf);
    return tg_write_text(f, buf, (size_t)n, escape);
}

/* tests/bench/bench_train.c — GPT training-step throughput and memory.
 *
 * One step = forward, cross-entropy, backward, AdamW step, zero_grad, tape
 * reset, on random token batches: the same work as bench_train.py does in
 * PyTorch with the book's GPTModel. Prints one line of key=value figures:
 * tokens/s (median step), peak RSS, and the malloc calls counted during the
 * warm steps (the binary is linked with --wrap=malloc,... so every call from
 * the library is seen).
 *
 *   bench_train [--vocab V] [--emb E] [--heads H] [--layers L] [--ctx T]
 *               [--batch B] [--dropout P] [--steps N] [--threads N]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "nn/nn.h"
#include "optim/optim.h"

/* ---- malloc counting through the linker's --wrap */
static long g_allocs;
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t s);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
void *__wrap_malloc(size_t n) { __atomic_add_fetch(&g_allocs, 1, __ATOMIC_RELAXED); return __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t s) { __atomic_add_fetch(&g_allocs, 1, __ATOMIC_RELAXED); return __real_calloc(n, s); }
void *__wrap_realloc(void *p, size_t n) { __atomic_add_fetch(&g_allocs, 1, __ATOMIC_RELAXED); return __real_realloc(p, n); }
void *__wrap_aligned_alloc(size_t a, size_t n) { __atomic_add_fetch(&g_allocs, 1, __ATOMIC_RELAXED); return __real_aligned_alloc(a, n); }

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    tg_gpt_config cfg = {.vocab_size = 65, .context_length = 128, .emb_dim = 128, .n_heads = 4, .n_layers = 4,
                         .drop_rate = 0.1f, .qkv_bias = false};
    int batch = 16, steps = 20, threads = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i];
        const double v = atof(argv[i + 1]);
        if (!strcmp(k, "--vocab")) cfg.vocab_size = (int)v;
        else if (!strcmp(k, "--emb")) cfg.emb_dim = (int)v;
        else if (!strcmp(k, "--heads")) cfg.n_heads = (int)v;
        else if (!strcmp(k, "--layers")) cfg.n_layers = (int)v;
        else if (!strcmp(k, "--ctx")) cfg.context_length = (int)v;
        else if (!strcmp(k, "--dropout")) cfg.drop_rate = (float)v;
        else if (!strcmp(k, "--batch")) batch = (int)v;
        else if (!strcmp(k, "--steps")) steps = (int)v;
        else if (!strcmp(k, "--threads")) threads = (int)v;
        else { fprintf(stderr, "bench_train: unknown flag %s\n", k); return 2; }
    }
    char err[256];
    if (tg_gpt_config_check(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "bench_train: %s\n", err);
        return 2;
    }
    if (batch < 1 || steps < 3) { /* two warm-up steps, then at least one timed */
        fprintf(stderr, "bench_train: --batch must be >= 1 and --steps >= 3 (got %d and %d)\n", batch, steps);
        return 2;
    }
    tg_set_num_threads(threads);
    tg_generator g;
    tg_manual_seed(&g, 123);
    tg_gpt *m = tg_gpt_new(&cfg, &g);
    tg_optim_config oc = tg_adamw_config(3e-4);
    tg_optim *opt = tg_optim_new(tg_gpt_params(m), &oc);
    const int T = cfg.context_length, n = batch * T;
    int32_t *x = malloc(sizeof *x * (size_t)n), *y = malloc(sizeof *y * (size_t)n);
    double *times = malloc(sizeof *times * (size_t)steps);
    long warm_allocs = 0, warm_faults = 0;
    float loss = 0.0f;
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < n; i++) {
            x[i] = (int32_t)(tg_random_u32(&g) % (uint32_t)cfg.vocab_size);
            y[i] = (int32_t)(tg_random_u32(&g) % (uint32_t)cfg.vocab_size);
        }
        const long a0 = g_allocs;
        struct rusage r0;
        getrusage(RUSAGE_SELF, &r0);
        const double t0 = now();
        tg_tensor *logits = tg_gpt_forward(m, x, batch, T);
        tg_tensor *l = tg_cross_entropy(logits, y);
        loss = l->data[0];
        tg_backward(l, NULL);
        tg_optim_step(opt);
        tg_optim_zero_grad(opt);
        tg_tape_reset(NULL);
        times[s] = now() - t0;
        if (s >= 2) {
            struct rusage r1;
            getrusage(RUSAGE_SELF, &r1);
            warm_allocs += g_allocs - a0;
            warm_faults += r1.ru_minflt - r0.ru_minflt;
        }
    }
    /* the first two steps warm the arena and the pack buffers */
    qsort(times + 2, (size_t)steps - 2, sizeof *times, cmp_double);
    const double med = times[2 + (steps - 2) / 2];
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    /* PaLM's MFU numerator: 6 N + 12 L T d per token, N the weights of every
     * matmul (q, k, v, out_proj, the two FeedForward layers, out_head) */
    const double d = cfg.emb_dim, L = cfg.n_layers;
    const double n_matmul = L * 12.0 * d * d + d * cfg.vocab_size;
    const double flops_per_token = 6.0 * n_matmul + 12.0 * L * T * d;
    printf("impl=tapegrad threads=%d params=%lld step_ms=%.2f tokens_per_s=%.0f peak_rss_mb=%.1f "
           "warm_mallocs_per_step=%.2f warm_page_faults_per_step=%.0f final_loss=%.4f flops_per_token=%.0f\n",
           threads, (long long)tg_params_numel(tg_gpt_params(m)), med * 1e3, n / med, ru.ru_maxrss / 1024.0,
           (double)warm_allocs / (steps - 2), (double)warm_faults / (steps - 2), loss, flops_per_token);
    free(x);
    free(y);
    free(times);
    tg_optim_free(opt);
    tg_gpt_free(m);
    tg_tape_release_default();
    return 0;
}

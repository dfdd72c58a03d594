/* tests/bench/bench_ops.c — kernel-level figures for make bench.
 *
 *   bench_ops peak  --threads N   the FP32 FMA peak: N threads each run a loop
 *                                 of independent fused multiply-adds
 *   bench_ops gemm  --threads N   GFLOP/s of the training step's gemm shapes
 *   bench_ops attn  --threads N   one causal attention layer, forward and
 *                                 backward (tg_sdpa_causal, dropout 0.1)
 *
 * One key=value line per measurement; each figure is the median of 5 timed
 * batches of about 0.1 s. bench_ops.py measures the same in PyTorch.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/nn.h"
#include "tensor/kernels.h"

/* bench_train.c counts mallocs through --wrap; this program is linked the same way */
void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t s);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
void *__wrap_malloc(size_t n) { return __real_malloc(n); }
void *__wrap_calloc(size_t n, size_t s) { return __real_calloc(n, s); }
void *__wrap_realloc(void *p, size_t n) { return __real_realloc(p, n); }
void *__wrap_aligned_alloc(size_t a, size_t n) { return __real_aligned_alloc(a, n); }

/* Wall time; BENCH_CLOCK=thread times the calling thread's CPU time instead
 * (steadier on a busy machine, meaningful for one thread only). */
static double now(void)
{
    static int clock_id = -1;
    if (clock_id < 0) {
        const char *e = getenv("BENCH_CLOCK");
        clock_id = e && !strcmp(e, "thread") ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
    }
    struct timespec t;
    clock_gettime(clock_id, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Seconds per call of fn(ctx): the median of 5 batches, each ~0.1 s. */
static double time_per_call(void (*fn)(void *), void *ctx)
{
    fn(ctx); /* warm up: pack buffers, arena */
    double t0 = now();
    int reps = 0;
    do {
        fn(ctx);
        reps++;
    } while (now() - t0 < 0.1);
    double s[5];
    for (int b = 0; b < 5; b++) {
        t0 = now();
        for (int r = 0; r < reps; r++)
            fn(ctx);
        s[b] = (now() - t0) / reps;
    }
    qsort(s, 5, sizeof *s, cmp_double);
    return s[2];
}

/* ---------------------------------------------------------------- peak */

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define PEAK_ITERS 20000000L
typedef struct {
    double gflops;
    float sink;
} peak_arg;

/* 20 independent accumulators hide the FMA latency on two FMA ports */
__attribute__((target("avx512f"))) static void *peak_avx512(void *varg)
{
    peak_arg *a = varg;
    /* named accumulators (an array would go through the stack each iteration) */
#define ACC(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16) \
    X(17) X(18) X(19)
#define DECL(i) __m512 acc##i = _mm512_set1_ps((float)i * 1e-3f);
#define STEP(i) acc##i = _mm512_fmadd_ps(acc##i, x, y);
#define SUM(i) s = _mm512_add_ps(s, acc##i);
    ACC(DECL)
    const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    const double t0 = now();
    for (long it = 0; it < PEAK_ITERS; it++) {
        ACC(STEP)
    }
    const double dt = now() - t0;
    __m512 s = _mm512_setzero_ps();
    ACC(SUM)
    a->sink = _mm512_reduce_add_ps(s);
    a->gflops = (double)PEAK_ITERS * 20 * 16 * 2 / dt * 1e-9;
    return NULL;
}

static int run_peak(int threads)
{
    if (!__builtin_cpu_supports("avx512f")) {
        printf("bench=peak impl=fma threads=%d gflops=nan note=no-avx512\n", threads);
        return 0;
    }
    double best = 0.0;
    for (int rep = 0; rep < 3; rep++) { /* the best of 3: the others' jobs only ever slow it down */
        pthread_t tid[64];
        peak_arg args[64];
        for (int t = 0; t < threads; t++)
            pthread_create(&tid[t], NULL, peak_avx512, &args[t]);
        double sum = 0.0;
        for (int t = 0; t < threads; t++) {
            pthread_join(tid[t], NULL);
            sum += args[t].gflops;
        }
        if (sum > best)
            best = sum;
    }
    printf("bench=peak impl=fma-avx512 threads=%d gflops=%.1f\n", threads, best);
    return 0;
}
#else
static int run_peak(int threads)
{
    printf("bench=peak impl=fma threads=%d gflops=nan note=not-x86\n", threads);
    return 0;
}
#endif

/* ---------------------------------------------------------------- gemm */

typedef struct {
    const char *name;
    bool ta, tb;
    int batch, M, N, K;
} gemm_shape;

/* The training step's shapes at config c (emb 256, 8 heads, ctx 128, batch 8). */
static const gemm_shape k_shapes[] = {
    {"linear_xWt", false, true, 1, 1024, 256, 256},
    {"ff_up", false, true, 1, 1024, 1024, 256},
    {"dW_dYtX", true, false, 1, 256, 256, 1024},
    {"attn_QKt", false, true, 64, 128, 128, 32},
    {"attn_PV", false, false, 64, 128, 32, 128},
};

typedef struct {
    const gemm_shape *s;
    float *A, *B, *C;
} gemm_ctx;

static void gemm_batch_range(void *vctx, int64_t b0, int64_t b1)
{
    const gemm_ctx *c = vctx;
    const gemm_shape *s = c->s;
    for (int64_t b = b0; b < b1; b++)
        tg_k_gemm(s->ta, s->tb, s->M, s->N, s->K, c->A + b * s->M * s->K, c->B + b * s->K * s->N,
                  c->C + b * s->M * s->N, false);
}

/* the batch runs on the pool, each gemm single-threaded, as tg_matmul does */
static void gemm_call(void *vctx)
{
    const gemm_ctx *c = vctx;
    if (c->s->batch > 1)
        tg_parallel_for(c->s->batch, 1, gemm_batch_range, vctx);
    else
        gemm_batch_range(vctx, 0, 1);
}

static int run_gemm(int threads)
{
    tg_generator g;
    tg_manual_seed(&g, 1);
    for (size_t i = 0; i < sizeof k_shapes / sizeof *k_shapes; i++) {
        const gemm_shape *s = &k_shapes[i];
        const int64_t na = (int64_t)s->batch * s->M * s->K, nb = (int64_t)s->batch * s->K * s->N;
        tg_tensor *A = tg_randn(&g, TG_SHAPE((int)na)), *B = tg_randn(&g, TG_SHAPE((int)nb));
        float *C = malloc(sizeof(float) * (size_t)s->batch * s->M * s->N);
        gemm_ctx ctx = {s, A->data, B->data, C};
        const double t = time_per_call(gemm_call, &ctx);
        printf("bench=gemm impl=tapegrad isa=%s threads=%d shape=%s batch=%d M=%d N=%d K=%d gflops=%.1f\n",
               tg_k_gemm_isa_name(), threads, s->name, s->batch, s->M, s->N, s->K,
               2.0 * s->batch * s->M * s->N * s->K / t * 1e-9);
        free(C);
        tg_free(A);
        tg_free(B);
    }
    return 0;
}

/* ---------------------------------------------------------------- attention */

typedef struct {
    tg_tensor *q, *k, *v, *dy;
    tg_generator g;
} attn_ctx;

static void attn_call(void *vctx)
{
    attn_ctx *c = vctx;
    tg_backward(tg_sdpa_causal(c->q, c->k, c->v, 0.1f, true, &c->g, NULL), c->dy);
    tg_tape_reset(NULL);
}

static int run_attn(int threads)
{
    const int B = 8, H = 8, T = 128, hd = 32; /* config c's attention */
    attn_ctx c;
    tg_manual_seed(&c.g, 1);
    c.q = tg_requires_grad(tg_randn(&c.g, TG_SHAPE(B, H, T, hd)), true);
    c.k = tg_requires_grad(tg_randn(&c.g, TG_SHAPE(B, H, T, hd)), true);
    c.v = tg_requires_grad(tg_randn(&c.g, TG_SHAPE(B, H, T, hd)), true);
    c.dy = tg_randn(&c.g, TG_SHAPE(B, H, T, hd));
    const double t = time_per_call(attn_call, &c);
    printf("bench=attn impl=tapegrad threads=%d B=%d H=%d T=%d hd=%d dropout=0.1 ms=%.3f\n", threads, B, H, T, hd,
           t * 1e3);
    tg_free(c.q);
    tg_free(c.k);
    tg_free(c.v);
    tg_free(c.dy);
    tg_tape_release_default();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_ops peak|gemm|attn [--threads N]\n");
        return 2;
    }
    int threads = 1;
    for (int i = 2; i + 1 < argc; i += 2)
        if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
    if (threads < 1 || threads > 64) {
        fprintf(stderr, "bench_ops: --threads must be 1..64\n");
        return 2;
    }
    tg_set_num_threads(threads);
    if (!strcmp(argv[1], "peak"))
        return run_peak(threads);
    if (!strcmp(argv[1], "gemm"))
        return run_gemm(threads);
    if (!strcmp(argv[1], "attn"))
        return run_attn(threads);
    fprintf(stderr, "bench_ops: unknown mode %s\n", argv[1]);
    return 2;
}

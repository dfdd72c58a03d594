/* tests/bench/bench_ops.c — kernel-level figures for make bench.
 *
 *   bench_ops peak  --threads N   the FP32 FMA peak: N threads each run a loop
 *                                 of independent fused multiply-adds
 *   bench_ops gemm  --threads N   GFLOP/s of the training step's gemm shapes
 *   bench_ops attn  --threads N   one causal attention layer, forward and
 *                                 backward (tg_sdpa_causal, dropout 0.1)
 *   bench_ops gemm_pair [--pairs P]  the linear-layer shapes against the
 *                                 system's BLAS (the libblas.so.3 torch uses),
 *                                 in this one process: 1 and 2 threads of each,
 *                                 in turn, P rounds
 *
 * One key=value line per measurement; each figure is the median of 5 timed
 * batches of about 0.1 s. bench_ops.py measures the same in PyTorch.
 * gemm_pair instead takes, for every round, one batch of each of the four
 * (tapegrad and the BLAS, 1 and 2 threads) back to back, and reports the
 * median over the rounds of each ratio: the two libraries run on the same
 * buffers within a fraction of a second of each other, so a burst of load
 * from another process on a shared machine hits both sides of a ratio alike.
 * Each round also times two ceilings for the 2-thread scaling at that
 * moment: an FMA loop as a job of the pool (fma_scaling), and two whole
 * 1-thread calls at once, one per thread (two_scaling).
 * The BLAS is only loaded (dlopen) by this mode, for the comparison; the
 * library itself links nothing but libc and libm.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <math.h>
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

/* n rounds of 20 independent FMAs (20 accumulators hide the FMA latency on
 * two FMA ports); the sum returned keeps the loop from being dropped. */
#define ACC(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16) \
    X(17) X(18) X(19)
#define FMA_ACCS 20
#define DECL(i) __m512 acc##i = _mm512_set1_ps((float)i * 1e-3f);
#define STEP(i) acc##i = _mm512_fmadd_ps(acc##i, x, y);
#define SUM(i) s = _mm512_add_ps(s, acc##i);
__attribute__((target("avx512f"))) static float fma_loop(long n)
{
    /* named accumulators (an array would go through the stack each iteration) */
    ACC(DECL)
    const __m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
    for (long it = 0; it < n; it++) {
        ACC(STEP)
    }
    __m512 s = _mm512_setzero_ps();
    ACC(SUM)
    return _mm512_reduce_add_ps(s);
}

static void *peak_thread(void *varg)
{
    peak_arg *a = varg;
    const double t0 = now();
    a->sink = fma_loop(PEAK_ITERS);
    a->gflops = (double)PEAK_ITERS * FMA_ACCS * 16 * 2 / (now() - t0) * 1e-9;
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
            pthread_create(&tid[t], NULL, peak_thread, &args[t]);
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

/* ---------------------------------------------------------------- gemm against the BLAS, paired */

/* cblas_sgemm's enums (cblas.h), so that no BLAS header is needed */
enum { CBLAS_ROW_MAJOR = 101, CBLAS_NO_TRANS = 111, CBLAS_TRANS = 112 };
typedef void (*cblas_sgemm_fn)(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                               const float *B, int ldb, float beta, float *C, int ldc);

typedef struct {
    const gemm_shape *s;
    float *A, *B, *C;
    cblas_sgemm_fn sgemm;
} blas_ctx;

static void blas_call(void *vctx)
{
    const blas_ctx *c = vctx;
    const gemm_shape *s = c->s;
    c->sgemm(CBLAS_ROW_MAJOR, s->ta ? CBLAS_TRANS : CBLAS_NO_TRANS, s->tb ? CBLAS_TRANS : CBLAS_NO_TRANS, s->M,
             s->N, s->K, 1.0f, c->A, s->ta ? s->M : s->K, c->B, s->tb ? s->K : s->N, 0.0f, c->C, s->N);
}

/* Seconds per call of `reps` calls in a row, after 10 ms of untimed calls:
 * a thread that slept through the last batches (the second core, after a
 * batch on one thread) is running again, and the other library's idle
 * threads have gone back to sleep, before the clock starts. */
static double batch_time(void (*fn)(void *), void *ctx, int reps)
{
    const double w = now();
    do
        fn(ctx);
    while (now() - w < 0.01);
    const double t0 = now();
    for (int r = 0; r < reps; r++)
        fn(ctx);
    return (now() - t0) / reps;
}

static double median_of(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The peak's FMA loop as a job of the pool, a fixed amount of work split
 * between the threads: on 2 threads it takes half the time of 1 at best,
 * the ceiling for a gemm's 2-thread scaling at that moment on this host (a
 * shared machine gives the second core less at times). */
#if defined(__x86_64__) && defined(__GNUC__)
typedef struct {
    long iters; /* for all threads together */
    float sink[64];
} fma_job;

static void fma_range(void *vctx, int64_t c0, int64_t c1)
{
    fma_job *j = vctx;
    for (int64_t c = c0; c < c1; c++)
        j->sink[c & 63] = fma_loop(j->iters / tg_get_num_threads());
}

static void fma_call(void *vctx) { tg_parallel_for(tg_get_num_threads(), 1, fma_range, vctx); }
#endif

/* Two whole single-thread products at once, one on each thread of the
 * pool, each on its own operands: the work of two calls on one thread.
 * Twice one call's time on one thread over this job's time is the ceiling
 * for a gemm's 2-thread scaling that counts what the FMA job leaves out:
 * two cores moving operands through their caches and memory at the same
 * time, with nothing shared and no splitting. A ceiling of the moment, not
 * a bound: the 1-thread time is an earlier batch's, and a split call has
 * half the working set per core, so a round can read above it (or above 2). */
typedef struct {
    gemm_ctx one[2];
} two_ctx;

static void two_range(void *vctx, int64_t c0, int64_t c1)
{
    two_ctx *t = vctx;
    /* run on 2 threads; c < 2 keeps any other count from reading past one[] */
    for (int64_t c = c0; c < c1 && c < 2; c++)
        gemm_batch_range(&t->one[c], 0, 1);
}

static void two_call(void *vctx) { tg_parallel_each(two_range, vctx); }

static int run_gemm_pair(int pairs)
{
    void *blas = dlopen("libblas.so.3", RTLD_NOW | RTLD_LOCAL);
    cblas_sgemm_fn sgemm = NULL;
    void (*set_threads)(int) = NULL;
    const char *(*corename)(void) = NULL;
    if (blas) {
        *(void **)&sgemm = dlsym(blas, "cblas_sgemm");
        *(void **)&set_threads = dlsym(blas, "openblas_set_num_threads");
        *(void **)&corename = dlsym(blas, "openblas_get_corename");
    }
    if (!sgemm) {
        printf("bench=gemm_pair note=no-cblas_sgemm-in-libblas.so.3\n");
        fprintf(stderr, "bench_ops gemm_pair: %s\n", blas ? "libblas.so.3 has no cblas_sgemm" : dlerror());
        return 0;
    }
    Dl_info info = {0};
    dladdr(*(void **)&sgemm, &info);
    printf("bench=gemm_pair_blas blas=%s kind=%s core=%s\n", info.dli_fname ? info.dli_fname : "?",
           set_threads ? "openblas" : "other", corename ? corename() : "-");
    tg_generator g;
    tg_manual_seed(&g, 1);
    for (size_t i = 0; i < sizeof k_shapes / sizeof *k_shapes; i++) {
        const gemm_shape *s = &k_shapes[i];
        if (s->batch != 1)
            continue; /* the linear layers' shapes */
        tg_tensor *A = tg_randn(&g, TG_SHAPE(s->M * s->K)), *B = tg_randn(&g, TG_SHAPE(s->K * s->N));
        float *C = malloc(sizeof(float) * (size_t)s->M * s->N), *Cb = malloc(sizeof(float) * (size_t)s->M * s->N);
        gemm_ctx tc = {s, A->data, B->data, C};
        blas_ctx bc = {s, A->data, B->data, Cb, sgemm};
        tg_tensor *A2 = tg_randn(&g, TG_SHAPE(s->M * s->K)), *B2 = tg_randn(&g, TG_SHAPE(s->K * s->N));
        float *C2 = malloc(sizeof(float) * (size_t)s->M * s->N);
        two_ctx two = {{tc, {s, A2->data, B2->data, C2}}};
        /* the same product, as a check that both sides compute it */
        gemm_call(&tc);
        blas_call(&bc);
        double err = 0.0;
        for (int64_t e = 0; e < (int64_t)s->M * s->N; e++)
            err = fabs(C[e] - Cb[e]) > err ? fabs(C[e] - Cb[e]) : err;
        if (!(err <= 1e-5 * s->K)) { /* sums of K products of N(0,1) values: rounding differs by ~1e-7 K */
            fprintf(stderr, "bench_ops gemm_pair: %s: tapegrad and the BLAS differ by %g (not the same product)\n",
                    s->name, err);
            return 1;
        }
        /* calls per batch: about 0.05 s of tapegrad on one thread */
        tg_set_num_threads(1);
        int reps = 1;
        while (batch_time(gemm_call, &tc, reps) * reps < 0.05)
            reps *= 2;
        double *t = malloc(sizeof(double) * 4 * (size_t)pairs), r[8][256];
#if defined(__x86_64__) && defined(__GNUC__)
        /* the FMA job: as long on one thread as one call of this gemm at the peak */
        fma_job fj = {.iters = (long)(2.0 * s->M * s->N * s->K / (FMA_ACCS * 16 * 2))};
        const bool fma = __builtin_cpu_supports("avx512f");
#else
        const bool fma = false;
#endif
        for (int p = 0; p < pairs; p++) { /* one round: tapegrad and the BLAS on 1 thread, then on 2 */
            for (int th = 1; th <= 2; th++) {
                tg_set_num_threads(th);
                if (set_threads)
                    set_threads(th);
                t[4 * p + 2 * (th - 1)] = batch_time(gemm_call, &tc, reps);
                t[4 * p + 2 * (th - 1) + 1] = batch_time(blas_call, &bc, reps);
            }
            const double *q = t + 4 * p; /* tg1 blas1 tg2 blas2 */
            r[0][p] = q[1] / q[0]; /* tapegrad over the BLAS, 1 thread (speed) */
            r[1][p] = q[3] / q[2]; /* the same, 2 threads */
            r[2][p] = q[0] / q[2]; /* tapegrad 2 threads over 1 */
            r[3][p] = q[1] / q[3]; /* the BLAS 2 threads over 1 */
            r[4][p] = q[0];
            r[5][p] = q[1];
            r[6][p] = NAN;
            tg_set_num_threads(2);
            r[7][p] = 2.0 * q[0] / batch_time(two_call, &two, reps); /* two 1-thread calls at once */
#if defined(__x86_64__) && defined(__GNUC__)
            if (fma) {
                tg_set_num_threads(1);
                const double f1 = batch_time(fma_call, &fj, reps);
                tg_set_num_threads(2);
                r[6][p] = f1 / batch_time(fma_call, &fj, reps); /* the FMA job's 2 threads over 1 */
            }
#endif
        }
        const double flop = 2.0 * s->M * s->N * s->K, tg1 = flop / median_of(r[4], pairs) * 1e-9,
                     bl1 = flop / median_of(r[5], pairs) * 1e-9;
        for (int p = 0; p < pairs; p++)
            r[4][p] = t[4 * p + 2], r[5][p] = t[4 * p + 3];
        const double tg2 = flop / median_of(r[4], pairs) * 1e-9, bl2 = flop / median_of(r[5], pairs) * 1e-9;
        printf("bench=gemm_pair shape=%s M=%d N=%d K=%d pairs=%d tapegrad_gflops_1t=%.1f blas_gflops_1t=%.1f "
               "ratio_1t=%.3f tapegrad_gflops_2t=%.1f blas_gflops_2t=%.1f ratio_2t=%.3f tapegrad_scaling=%.3f "
               "blas_scaling=%.3f fma_scaling=%.3f two_scaling=%.3f max_abs_diff=%.2g\n",
               s->name, s->M, s->N, s->K, pairs, tg1, bl1, median_of(r[0], pairs), tg2, bl2, median_of(r[1], pairs),
               median_of(r[2], pairs), median_of(r[3], pairs), fma ? median_of(r[6], pairs) : NAN, median_of(r[7], pairs), err);
        fflush(stdout);
        free(t);
        free(C);
        free(Cb);
        free(C2);
        tg_free(A);
        tg_free(B);
        tg_free(A2);
        tg_free(B2);
    }
    return 0; /* the BLAS stays loaded: an OpenMP BLAS's idle threads still run its code */
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
        fprintf(stderr, "usage: bench_ops peak|gemm|attn|gemm_pair [--threads N] [--pairs P]\n");
        return 2;
    }
    int threads = 1, pairs = 15;
    for (int i = 2; i + 1 < argc; i += 2)
        if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--pairs"))
            pairs = atoi(argv[i + 1]);
    if (pairs < 1 || pairs > 255) {
        fprintf(stderr, "bench_ops: --pairs must be 1..255\n");
        return 2;
    }
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
    if (!strcmp(argv[1], "gemm_pair"))
        return run_gemm_pair(pairs);
    fprintf(stderr, "bench_ops: unknown mode %s\n", argv[1]);
    return 2;
}

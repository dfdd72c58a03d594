/* tests/test_kernels.c — the kernel layer against plain double-precision
 * reference loops: gemm in all four transpose cases at odd sizes that hit
 * every edge of the register tile and cache blocks, single- and
 * multi-threaded; parallel_for coverage. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tensor/kernels.h"
#include "testutil.h"

static void ref_gemm(bool ta, bool tb, int M, int N, int K, const float *A, const float *B, double *C)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) {
                const double a = ta ? A[(int64_t)k * M + i] : A[(int64_t)i * K + k];
                const double b = tb ? B[(int64_t)j * K + k] : B[(int64_t)k * N + j];
                s += a * b;
            }
            C[(int64_t)i * N + j] = s;
        }
}

static void check_gemm(int M, int N, int K, int threads)
{
    tg_generator g;
    tg_manual_seed(&g, (uint64_t)(M * 1000003 + N * 1009 + K));
    tg_tensor *A = tg_randn(&g, TG_SHAPE(M * K > 0 ? M * K : 1));
    tg_tensor *B = tg_randn(&g, TG_SHAPE(K * N > 0 ? K * N : 1));
    float *C = malloc(sizeof(float) * (size_t)(M * N + 1));
    double *R = malloc(sizeof(double) * (size_t)(M * N + 1));
    tg_set_num_threads(threads);
    for (int c = 0; c < 4; c++) {
        const bool ta = c & 1, tb = c & 2;
        for (int i = 0; i < M * N; i++)
            C[i] = 0.5f; /* accumulate onto a known value */
        tg_k_gemm(ta, tb, M, N, K, A->data, B->data, C, true);
        ref_gemm(ta, tb, M, N, K, A->data, B->data, R);
        for (int i = 0; i < M * N; i++) {
            const double want = R[i] + 0.5;
            ck_assert_msg(fabs(C[i] - want) <= 1e-4 * sqrt((double)K) * (1.0 + fabs(want)),
                          "gemm %s ta=%d tb=%d %dx%dx%d threads=%d: C[%d] = %.7g, want %.7g",
                          tg_k_gemm_isa_name(), ta, tb, M, N, K, threads, i, (double)C[i], want);
        }
        tg_k_gemm(ta, tb, M, N, K, A->data, B->data, C, false);
        for (int i = 0; i < M * N; i++)
            ck_assert_msg(fabs(C[i] - R[i]) <= 1e-4 * sqrt((double)K) * (1.0 + fabs(R[i])),
                          "gemm %s (overwrite) ta=%d tb=%d %dx%dx%d: C[%d] = %.7g, want %.7g",
                          tg_k_gemm_isa_name(), ta, tb, M, N, K, i,
                          (double)C[i], R[i]);
    }
    tg_set_num_threads(1);
    free(C);
    free(R);
    tg_free(A);
    tg_free(B);
}

/* Every micro-kernel this CPU can run (the best one is left selected). */
static const tg_gemm_isa k_isas[] = {TG_GEMM_AVX512, TG_GEMM_AVX2, TG_GEMM_GENERIC};
#define FOR_EACH_ISA(i) \
    for (int i = 0; i < 3; i++) \
        if (tg_k_gemm_set_isa(k_isas[i]))

START_TEST(test_gemm_small_shapes)
{
    const int sizes[] = {1, 2, 5, 6, 7, 13, 14, 15, 16, 17, 31, 32, 33};
    FOR_EACH_ISA(isa)
        for (int a = 0; a < 13; a++)
            for (int b = 0; b < 13; b++)
                check_gemm(sizes[a], sizes[b], sizes[(a + b) % 13], 1);
    ck_assert(tg_k_gemm_set_isa(TG_GEMM_BEST));
    ck_assert(tg_k_gemm_set_isa(TG_GEMM_GENERIC)); /* the portable path always exists */
    ck_assert_str_eq(tg_k_gemm_isa_name(), "generic");
    ck_assert(tg_k_gemm_set_isa(TG_GEMM_BEST));
}
END_TEST

START_TEST(test_gemm_blocked_shapes)
{
    /* crosses KC = 256, MC, NC = 2048 and several NR panels; 2 and 3 threads
     * share out row blocks (700 rows) or take slices of rows (200 x 65) or of
     * columns (40 x 300); 20 and 28 rows (two panels, the second short in the
     * first) across K blocks */
    FOR_EACH_ISA(isa) {
        check_gemm(20, 64, 300, 1);
        check_gemm(28, 96, 513, 1);
        check_gemm(97, 70, 300, 1);
        check_gemm(200, 65, 513, 2);
        check_gemm(700, 70, 300, 2);
        check_gemm(64, 2050, 3, 2);
        check_gemm(29, 300, 40, 3);
        check_gemm(40, 300, 513, 2);
        check_gemm(40, 300, 513, 3);
        check_gemm(330, 100, 300, 3);
    }
    ck_assert(tg_k_gemm_set_isa(TG_GEMM_BEST));
}
END_TEST

static void check_threads_bit_identical(int M, int N, int K)
{
    tg_generator g;
    tg_manual_seed(&g, 7);
    tg_tensor *A = tg_randn(&g, TG_SHAPE(M * K)), *B = tg_randn(&g, TG_SHAPE(K * N));
    float *C1 = malloc(sizeof(float) * (size_t)M * N), *C2 = malloc(sizeof(float) * (size_t)M * N);
    FOR_EACH_ISA(isa)
        for (int c = 0; c < 4; c++) {
            tg_set_num_threads(1);
            tg_k_gemm(c & 1, c & 2, M, N, K, A->data, B->data, C1, false);
            for (int threads = 2; threads <= 3; threads++) {
                tg_set_num_threads(threads);
                tg_k_gemm(c & 1, c & 2, M, N, K, A->data, B->data, C2, false);
                ck_assert_msg(memcmp(C1, C2, sizeof(float) * (size_t)M * N) == 0,
                              "gemm %s ta=%d tb=%d: %d threads differ from 1", tg_k_gemm_isa_name(), c & 1,
                              (c & 2) != 0, threads);
            }
        }
    tg_set_num_threads(1);
    ck_assert(tg_k_gemm_set_isa(TG_GEMM_BEST));
    free(C1);
    free(C2);
    tg_free(A);
    tg_free(B);
}

/* tg_parallel_each runs its function once on every pool thread, the
 * caller's included, each on a thread of its own (tg_k_scratch_reserve
 * grows every thread's scratch through it), also on the call that starts
 * the workers. */
typedef struct {
    pthread_mutex_t mu;
    pthread_t seen[8];
    int calls;
} each_log;

static void each_record(void *ctx, int64_t i0, int64_t i1)
{
    each_log *l = ctx;
    ck_assert_int_eq(i1, i0 + 1);
    pthread_mutex_lock(&l->mu);
    if (l->calls < 8)
        l->seen[l->calls] = pthread_self();
    l->calls++;
    pthread_mutex_unlock(&l->mu);
}

START_TEST(test_parallel_each_every_thread)
{
    /* up, then down again: a count set lower than the workers started is
     * the count that runs */
    static const int counts[] = {1, 2, 3, 2, 1, 3};
    for (size_t ci = 0; ci < sizeof counts / sizeof *counts; ci++) {
        const int threads = counts[ci];
        tg_set_num_threads(threads);
        for (int rep = 0; rep < 20; rep++) {
            each_log l = {.mu = PTHREAD_MUTEX_INITIALIZER};
            ck_assert(tg_parallel_each(each_record, &l));
            ck_assert_int_eq(l.calls, threads);
            for (int a = 0; a < l.calls; a++)
                for (int b = a + 1; b < l.calls; b++)
                    ck_assert(!pthread_equal(l.seen[a], l.seen[b]));
        }
    }
    tg_set_num_threads(1);
}
END_TEST

/* tg_parallel_for runs on at most the threads set: after 3 (two workers
 * started), 2 leaves one worker out. Each chunk waits until it has run for
 * a millisecond, so a third thread, if it took part, would claim some of
 * the 16. */
static void for_record(void *ctx, int64_t i0, int64_t i1)
{
    (void)i0, (void)i1;
    each_log *l = ctx;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do
        clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < 1000000L);
    pthread_mutex_lock(&l->mu);
    bool seen = false;
    for (int a = 0; a < l->calls && a < 8; a++)
        seen = seen || pthread_equal(l->seen[a], pthread_self());
    if (!seen && l->calls < 8)
        l->seen[l->calls++] = pthread_self();
    pthread_mutex_unlock(&l->mu);
}

START_TEST(test_parallel_for_fewer_threads)
{
    tg_set_num_threads(3);
    each_log l3 = {.mu = PTHREAD_MUTEX_INITIALIZER};
    tg_parallel_for(16, 1, for_record, &l3); /* starts the two workers */
    ck_assert_int_le(l3.calls, 3);
    for (int rep = 0; rep < 5; rep++) {
        tg_set_num_threads(2);
        each_log l = {.mu = PTHREAD_MUTEX_INITIALIZER}; /* calls: the distinct threads */
        tg_parallel_for(16, 1, for_record, &l);
        ck_assert_int_le(l.calls, 2);
        ck_assert_int_ge(l.calls, 1);
    }
    tg_set_num_threads(1);
}
END_TEST

/* Threads split only rows and columns of C: the bits never depend on the
 * thread count. For AVX-512, 300 x 333 is two row blocks (each thread takes a
 * slice of the columns), 700 x 333 five (the threads share out row blocks),
 * 400 x 150 three (slices of the rows). */
START_TEST(test_gemm_threads_bit_identical)
{
    for (int M = 300; M <= 700; M += 400)
        check_threads_bit_identical(M, 333, 600);
    check_threads_bit_identical(400, 150, 600);
}
END_TEST

START_TEST(test_gemm_zero_sizes)
{
    float C[4] = {1, 2, 3, 4};
    const float A[1] = {0}, B[1] = {0};
    tg_k_gemm(false, false, 2, 2, 0, A, B, C, true); /* K = 0: C unchanged */
    ck_assert(C[0] == 1 && C[3] == 4);
    tg_k_gemm(false, false, 2, 2, 0, A, B, C, false); /* overwrite: zeros */
    ck_assert(C[0] == 0 && C[3] == 0);
}
END_TEST

/* Operands and C inside wider rows (lda, ldb, ldc past the matrix, as the
 * attention's heads are): the same bits as tg_k_gemm on contiguous copies,
 * and the floats between C's rows (NaN) never touched; every ISA, 1 to 3
 * threads, adding and overwriting. Each shape is over the threading
 * threshold; with threads, 60 x 70 takes slices of C's columns, 70 x 60
 * slices of its rows (a slice's offset into A and C is in lda and ldc) and
 * 700 x 20 shares out row blocks. */
static void check_gemm_ld(int M, int N, int K)
{
    enum { PAD = 7 };
    tg_generator g;
    tg_manual_seed(&g, 5);
    tg_tensor *A = tg_randn(&g, TG_SHAPE(M * K)), *B = tg_randn(&g, TG_SHAPE(K * N));
    float *Aw = malloc(sizeof(float) * (M + PAD) * (K + PAD)), *Bw = malloc(sizeof(float) * (K + PAD) * (N + PAD));
    float *Cw = malloc(sizeof(float) * M * (N + PAD)), *C = malloc(sizeof(float) * M * N);
    FOR_EACH_ISA(isa)
        for (int c = 0; c < 8; c++) {
            const bool ta = c & 1, tb = c & 2, add = c & 4;
            const int ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N; /* as stored */
            for (int r = 0; r < ar; r++)
                memcpy(Aw + r * (ac + PAD), A->data + r * ac, sizeof(float) * ac);
            for (int r = 0; r < br; r++)
                memcpy(Bw + r * (bc + PAD), B->data + r * bc, sizeof(float) * bc);
            for (int th = 1; th <= 3; th++) {
                tg_set_num_threads(th);
                for (int i = 0; i < M * (N + PAD); i++)
                    Cw[i] = i % (N + PAD) < N ? 0.25f : NAN;
                for (int i = 0; i < M * N; i++)
                    C[i] = 0.25f;
                tg_k_gemm_ld(ta, tb, M, N, K, Aw, ac + PAD, Bw, bc + PAD, Cw, N + PAD, add);
                tg_k_gemm(ta, tb, M, N, K, A->data, B->data, C, add);
                for (int i = 0; i < M; i++) {
                    ck_assert_msg(memcmp(Cw + i * (N + PAD), C + i * N, sizeof(float) * N) == 0,
                                  "gemm_ld %s %dx%dx%d ta=%d tb=%d add=%d threads=%d: row %d differs from tg_k_gemm's",
                                  tg_k_gemm_isa_name(), M, N, K, ta, tb, add, th, i);
                    for (int j = N; j < N + PAD; j++)
                        ck_assert_msg(isnan(Cw[i * (N + PAD) + j]), "gemm_ld %s %dx%dx%d: C[%d][%d] past N written",
                                      tg_k_gemm_isa_name(), M, N, K, i, j);
                }
            }
        }
    tg_set_num_threads(1);
    ck_assert(tg_k_gemm_set_isa(TG_GEMM_BEST));
    free(C);
    free(Cw);
    free(Bw);
    free(Aw);
    tg_free(A);
    tg_free(B);
}

START_TEST(test_gemm_ld_strides)
{
    check_gemm_ld(60, 70, 300);
    check_gemm_ld(70, 60, 300);
    check_gemm_ld(700, 20, 300);
}
END_TEST

/* op(B) [300, 40] packed once: gemms on leading columns and on k ranges from
 * 0, inside one K block and in the second block give tg_k_gemm_ld's bits
 * on those rows and columns of op(B) (and the double reference's values),
 * each case adding to C and overwriting it (t even, odd) */
START_TEST(test_gemm_packed_b)
{
    enum { M = 30, PK = 300, PN = 40 };
    static const int cases[][3] = {{0, PK, PN}, {0, 100, 17}, {0, 270, 33}, {50, 150, 40}, {256, 44, 5}, {0, 7, 1}};
    tg_generator g;
    tg_manual_seed(&g, 77);
    tg_tensor *A = tg_randn(&g, TG_SHAPE(M * PK)), *B = tg_randn(&g, TG_SHAPE(PK * PN));
    float *C = malloc(sizeof(float) * M * PN), *W = malloc(sizeof(float) * M * PN);
    double *R = malloc(sizeof(double) * M * PN);
    float *Bs = malloc(sizeof(float) * PK * PN); /* op(B)'s sub-block, stored as op's input */
    FOR_EACH_ISA(isa) {
        float *bp = aligned_alloc(64, (tg_k_gemm_packed_size(PK, PN) * sizeof(float) + 63) / 64 * 64);
        for (int c = 0; c < 4; c++) {
            const bool ta = c & 1, tb = c & 2;
            tg_k_gemm_pack(tb, PK, PN, B->data, tb ? PK : PN, bp);
            for (size_t t = 0; t < 2 * sizeof cases / sizeof cases[0]; t++) {
                const int k0 = cases[t / 2][0], K = cases[t / 2][1], N = cases[t / 2][2];
                const float *Bsub = B->data + (tb ? k0 : k0 * PN);
                const int64_t ldb = tb ? PK : PN, lda = ta ? M : K;
                for (int i = 0; i < M * N; i++)
                    C[i] = W[i] = 0.25f;
                tg_k_gemm_packed(ta, M, N, K, A->data, lda, bp, k0, PK, PN, C, N, t % 2 == 0);
                tg_k_gemm_ld(ta, tb, M, N, K, A->data, lda, Bsub, ldb, W, N, t % 2 == 0);
                for (int kk = 0; kk < K; kk++) /* op(B)[k0 + kk, j] as a [K, N] or [N, K] matrix */
                    for (int j = 0; j < N; j++)
                        Bs[tb ? j * K + kk : kk * N + j] = tb ? Bsub[j * ldb + kk] : Bsub[kk * ldb + j];
                ref_gemm(ta, tb, M, N, K, A->data, Bs, R);
                for (int i = 0; i < M * N; i++) {
                    const double want = R[i] + (t % 2 == 0 ? 0.25 : 0.0);
                    ck_assert_msg(memcmp(&C[i], &W[i], sizeof(float)) == 0 &&
                                      fabs(C[i] - want) <= 1e-4 * sqrt((double)K) * (1.0 + fabs(want)),
                                  "packed gemm %s ta=%d tb=%d k %d:%d N=%d: C[%d] = %.9g, gemm_ld %.9g, want %.9g",
                                  tg_k_gemm_isa_name(), ta, tb, k0, k0 + K, N, i, (double)C[i], (double)W[i], want);
                }
            }
        }
        free(bp);
    }
    ck_assert(tg_k_gemm_set_isa(TG_GEMM_BEST));
    free(Bs);
    free(R);
    free(W);
    free(C);
    tg_free(A);
    tg_free(B);
}
END_TEST

static void call_packed_past_end(void *ctx)
{
    float *buf = ctx;
    tg_k_gemm_packed(false, 1, 4, 3, buf, 3, buf, 2, 4, 4, buf, 4, false); /* rows 2:5 of 4 */
}

START_TEST(test_gemm_packed_b_bad_range)
{
    float *buf = aligned_alloc(64, 64 * 64);
    memset(buf, 0, 64 * 64);
    char msg[256];
    ck_assert(catch_error(call_packed_past_end, buf, msg, sizeof msg));
    ck_assert_msg(strstr(msg, "tg_k_gemm_packed") && strstr(msg, "2:5") && strstr(msg, "4 x 4"), "%s", msg);
    free(buf);
}
END_TEST

static void mark(void *ctx, int64_t i0, int64_t i1)
{
    int *hits = ctx;
    for (int64_t i = i0; i < i1; i++)
        __atomic_add_fetch(&hits[i], 1, __ATOMIC_RELAXED);
}

START_TEST(test_parallel_for_covers_once)
{
    int hits[1000] = {0};
    tg_set_num_threads(3);
    tg_parallel_for(1000, 1, mark, hits);
    tg_parallel_for(7, 1, mark, hits);
    tg_set_num_threads(1);
    for (int i = 0; i < 1000; i++)
        ck_assert_int_eq(hits[i], i < 7 ? 2 : 1);
}
END_TEST


/* A chain big enough that every kernel takes its threaded path (gemm row
 * blocks, the batched-matmul batch loop, elementwise ranges, softmax rows,
 * broadcast rows, dropout, layernorm rows and columns): the results must be
 * bit-identical to one thread, since the split never changes the arithmetic
 * of any element. A kernel splits only when it has two chunks of work
 * (TG_ELEM_CHUNK = 32768 elements, rows counted by their elements): at
 * 16 x 64 rows every tensor here has at least 98304 elements. */
typedef struct {
    float loss;
    tg_tensor *grads[4];
} chain_result;

static chain_result run_chain(int threads)
{
    tg_set_num_threads(threads);
    tg_generator g;
    tg_manual_seed(&g, 7);
    tg_tensor *x = tg_requires_grad(tg_randn(&g, TG_SHAPE(16, 64, 96)), true);
    tg_tensor *w = tg_requires_grad(tg_randn(&g, TG_SHAPE(192, 96)), true);
    tg_tensor *b = tg_requires_grad(tg_randn(&g, TG_SHAPE(192)), true);
    tg_tensor *scale = tg_requires_grad(tg_randn(&g, TG_SHAPE(96)), true);
    tg_tensor *h = tg_gelu(tg_affine(x, w, b));                               /* (16,64,192) */
    tg_tensor *q = tg_transpose(tg_view(h, TG_SHAPE(16, 64, 4, 48)), 1, 2);   /* (16,4,64,48) */
    tg_tensor *att = tg_softmax(tg_mul_scalar(tg_matmul(q, tg_transpose(q, 2, 3)), 0.1f), -1);
    tg_tensor *ctx = tg_matmul(tg_dropout(att, 0.1f, true, &g), q);          /* (16,4,64,48) */
    tg_tensor *y = tg_add(tg_view(tg_transpose(ctx, 1, 2), TG_SHAPE(16, 64, 192)), h);
    tg_tensor *z = tg_mul(tg_exp(tg_mul_scalar(y, 0.01f)), tg_tanh(y));
    tg_tensor *n = tg_layernorm(tg_matmul(z, w), scale, tg_mul_scalar(scale, 0.5f), 1e-5f); /* (16,64,96) */
    tg_tensor *loss = tg_mean(tg_mul(n, n));
    tg_backward(loss, NULL);
    chain_result r = {loss->data[0], {x, w, b, scale}};
    tg_tape_reset(NULL);
    tg_set_num_threads(1);
    return r;
}

START_TEST(test_threads_bit_identical)
{
    chain_result one = run_chain(1);
    chain_result many = run_chain(3);
    ck_assert_msg(one.loss == many.loss, "loss %.9g with 1 thread, %.9g with 3", (double)one.loss,
                  (double)many.loss);
    for (int k = 0; k < 4; k++) {
        const tg_tensor *a = one.grads[k], *b = many.grads[k];
        for (int64_t i = 0; i < a->numel; i++)
            ck_assert_msg(a->grad[i] == b->grad[i], "grad %d[%lld]: %.9g with 1 thread, %.9g with 3", k,
                          (long long)i, (double)a->grad[i], (double)b->grad[i]);
    }
    for (int k = 0; k < 4; k++) {
        tg_free(one.grads[k]);
        tg_free(many.grads[k]);
    }
}
END_TEST


/* Sums and means equal torch's bit for bit (its cascade order), at sizes
 * that leave ragged tails of every block, along every dim. */
START_TEST(test_sums_match_torch_exactly)
{
    golden_file *g = golden_open("sums");
    int checked = 0;
    for (int i = 0;; i++) {
        char key[64];
        snprintf(key, sizeof key, "s%d.x", i);
        if (!golden_has(g, key))
            break;
        tg_tensor *x = golden_tensor(g, key);
        for (int d = -1; d < x->ndim; d++)
            for (int mean = 0; mean < 2; mean++) {
                tg_tensor *y = d < 0 ? (mean ? tg_mean(x) : tg_sum(x)) : (mean ? tg_mean_dim(x, d, false)
                                                                             : tg_sum_dim(x, d, false));
                char what[64];
                snprintf(what, sizeof what, "s%d.%s%s", i, mean ? "mean" : "sum", d < 0 ? "" : (char[]){(char)('0' + d), 0});
                tg_tensor *want = golden_tensor(g, what);
                assert_tensor_close(y, want, 0.0, 0.0, what);
                tg_free(want);
                checked++;
            }
        tg_free(x);
        tg_tape_reset(NULL);
    }
    ck_assert_int_ge(checked, 100);
    golden_close(g);
}
END_TEST


/* Two user threads training at once, each on its own tape, while the pool
 * has workers: whichever gets the pool, the other runs inline, and both get
 * exactly the single-threaded result. */
typedef struct {
    uint64_t seed;
    float loss;
    float grad_sum;
} user_job;

static void *user_thread(void *arg)
{
    user_job *j = arg;
    tg_tape *tape = tg_tape_new();
    tg_tape_use(tape);
    tg_generator g;
    tg_manual_seed(&g, j->seed);
    tg_tensor *x = tg_randn(&g, TG_SHAPE(8, 64, 96));
    tg_tensor *w = tg_requires_grad(tg_randn(&g, TG_SHAPE(96, 96)), true);
    float loss = 0.0f;
    for (int step = 0; step < 3; step++) {
        tg_tensor *h = tg_gelu(tg_affine(x, w, NULL));
        tg_tensor *a = tg_softmax(tg_matmul(h, tg_transpose(h, 1, 2)), -1);
        tg_tensor *l = tg_mean(tg_mul(tg_matmul(a, h), h));
        loss = l->data[0];
        tg_backward(l, NULL);
        tg_tape_reset(tape);
    }
    double gs = 0.0;
    for (int64_t i = 0; i < w->numel; i++)
        gs += w->grad[i];
    j->loss = loss;
    j->grad_sum = (float)gs;
    tg_free(x);
    tg_free(w);
    tg_tape_use(NULL);
    tg_tape_free(tape);
    return NULL;
}

START_TEST(test_concurrent_user_threads)
{
    user_job ref[2] = {{11, 0, 0}, {12, 0, 0}}, par[2] = {{11, 0, 0}, {12, 0, 0}};
    tg_set_num_threads(1);
    user_thread(&ref[0]);
    user_thread(&ref[1]);
    tg_set_num_threads(2);
    pthread_t t[2];
    for (int k = 0; k < 2; k++)
        ck_assert_int_eq(pthread_create(&t[k], NULL, user_thread, &par[k]), 0);
    for (int k = 0; k < 2; k++)
        pthread_join(t[k], NULL);
    tg_set_num_threads(1);
    for (int k = 0; k < 2; k++) {
        ck_assert_msg(par[k].loss == ref[k].loss, "thread %d: loss %.9g, alone %.9g", k, (double)par[k].loss,
                      (double)ref[k].loss);
        ck_assert_msg(par[k].grad_sum == ref[k].grad_sum, "thread %d: grad sum %.9g, alone %.9g", k,
                      (double)par[k].grad_sum, (double)ref[k].grad_sum);
    }
}
END_TEST

/* GELU's derivative against the exact one of its tanh form, in double, on
 * a dense grid of [-8, 8]; and the feed-forward's one-pass kernel (one tanh
 * for gelu and gelu') against the forward and the in-place backward. */
static double gelu_grad_ref(double x)
{
    const double b = sqrt(2.0 / M_PI), k = 0.044715, t = tanh(b * (x + k * x * x * x));
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * b * (1.0 + 3.0 * k * x * x);
}

START_TEST(test_gelu_grad_and_one_pass)
{
    enum { N = 160001 };
    float *u = malloc(N * sizeof *u), *a = malloc(N * sizeof *a), *g = malloc(N * sizeof *g);
    float *a_ref = malloc(N * sizeof *a_ref), *g_ref = malloc(N * sizeof *g_ref);
    for (int i = 0; i < N; i++) {
        u[i] = -8.0f + 16.0f * (float)i / (float)(N - 1);
        g_ref[i] = g[i] = 1.0f;
    }
    tg_k_gelu_backward_inplace(N, u, g_ref);
    double worst = 0.0;
    for (int i = 0; i < N; i++) {
        const double want = gelu_grad_ref(u[i]), err = fabs(g_ref[i] - want) / (1.0 + fabs(want));
        worst = err > worst ? err : worst;
    }
    ck_assert_msg(worst < 1e-6, "gelu' off by %.3g (relative to 1 + |gelu'|) from the exact derivative", worst);
    for (int i = 0; i < N; i++)
        g_ref[i] = g[i] = (float)(i % 7) - 3.0f;
    tg_k_unary(TG_UN_GELU, N, u, 0.0f, a_ref);
    tg_k_gelu_backward_inplace(N, u, g_ref);
    tg_k_gelu_with_grad(N, u, a, g);
    ck_assert(memcmp(a, a_ref, N * sizeof *a) == 0);
    ck_assert(memcmp(g, g_ref, N * sizeof *g) == 0);
    free(u);
    free(a);
    free(g);
    free(a_ref);
    free(g_ref);
}
END_TEST

/* GELU's value and derivative against double precision over every 97th
 * float with 2^-20 <= |v| <= 12, both signs. The reference is the same
 * function as torch's tanh form written without its cancellations: with
 * w = 2z, (1 + tanh z) / 2 = 1 / (1 + e^-w) = s and 1 - s = e^-w s, so
 * gelu = v s and gelu' = s + 2 beta v s (1 - s) (1 + 3 kappa v^2). Measured
 * (every 13th float): gelu within 8.8e-7 relative for |v| <= 3 and within
 * 1.7e-7 (1 + |w|) beyond (the rounding of w in float is amplified by |w|
 * where s ~ e^w), gelu' within 1.0e-7 of the reference relative to
 * 1 + |gelu'|; the Cephes-tanh kernels it replaced were off by 1.3e-5 at
 * v = -3 and returned 0 below v = -5.2. Beyond |w| = 80 the kernel's s is
 * 0 or 1, off by at most |v| e^-80 in gelu. Then the ends: NaN stays, huge
 * inputs give 0 or v, and gelu' 0 or 1. */
static double gelu_sigmoid_ref(double v, double *c)
{
    const double b = sqrt(2.0 / M_PI), k = 0.044715, e = exp(-2.0 * b * (v + k * v * v * v)), s = 1.0 / (1.0 + e);
    *c = e * s;
    return s;
}

START_TEST(test_gelu_against_double)
{
    enum { STRIDE = 97 };
    const float lo = 0x1p-20f, hi = 12.0f;
    uint32_t b0, b1;
    memcpy(&b0, &lo, sizeof b0);
    memcpy(&b1, &hi, sizeof b1);
    const int64_t n = 2 * (int64_t)((b1 - b0) / STRIDE + 1);
    float *u = malloc((size_t)n * sizeof *u), *a = malloc((size_t)n * sizeof *a), *g = malloc((size_t)n * sizeof *g);
    for (int64_t i = 0; i < n; i += 2) {
        const uint32_t bits = b0 + (uint32_t)(i / 2) * STRIDE;
        memcpy(&u[i], &bits, sizeof bits);
        u[i + 1] = -u[i];
        g[i] = g[i + 1] = 1.0f;
    }
    tg_k_gelu_with_grad(n, u, a, g);
    double worst_a = 0.0, worst_g = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double v = u[i], w = 2.0 * sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v);
        double c;
        const double s = gelu_sigmoid_ref(v, &c), want_a = v * s;
        const double want_g = s + 2.0 * sqrt(2.0 / M_PI) * v * s * c * (1.0 + 3.0 * 0.044715 * v * v);
        /* beyond |w| = 80 the kernel's s is 0 or 1: off by at most |v| e^-80 */
        const double ea = fabs(w) > 80.0 ? (fabs(a[i] - want_a) <= 2e-35 * fabs(v) ? 0.0 : 1.0)
                                         : fabs(a[i] - want_a) / (fabs(want_a) * (1.0 + (fabs(v) > 3.0 ? fabs(w) : 0.0)));
        const double eg = fabs(g[i] - want_g) / (1.0 + fabs(want_g));
        ck_assert_msg(ea < 1e-6, "gelu(%.9g) = %.9g, double %.9g", v, (double)a[i], want_a);
        ck_assert_msg(eg < 2e-7, "gelu'(%.9g) = %.9g, double %.9g", v, (double)g[i], want_g);
        worst_a = ea > worst_a ? ea : worst_a;
        worst_g = eg > worst_g ? eg : worst_g;
    }
    ck_assert_msg(worst_a > 0.0 && worst_g > 0.0, "the sweep compared nothing");
    free(u);
    free(a);
    free(g);

    const float x[] = {NAN, -INFINITY, -1e18f, -100.0f, 100.0f, 1e18f};
    const float want_a[] = {NAN, NAN, 0.0f, 0.0f, 100.0f, 1e18f}, want_g[] = {NAN, NAN, 0.0f, 0.0f, 1.0f, 1.0f};
    float ea_[6], eg_[6] = {1, 1, 1, 1, 1, 1};
    tg_k_gelu_with_grad(6, x, ea_, eg_);
    for (int i = 0; i < 6; i++) {
        ck_assert_msg(isnan(want_a[i]) ? isnan(ea_[i]) : ea_[i] == want_a[i], "gelu(%g) = %g", (double)x[i],
                      (double)ea_[i]);
        ck_assert_msg(isnan(want_g[i]) ? isnan(eg_[i]) : eg_[i] == want_g[i], "gelu'(%g) = %g", (double)x[i],
                      (double)eg_[i]);
    }
}
END_TEST

static Suite *kernels_suite(void)
{
    Suite *s = suite_create("kernels");
    TCase *tc = tcase_create("gemm");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_gemm_small_shapes);
    tcase_add_test(tc, test_gemm_blocked_shapes);
    tcase_add_test(tc, test_parallel_each_every_thread);
    tcase_add_test(tc, test_parallel_for_fewer_threads);
    tcase_add_test(tc, test_gemm_threads_bit_identical);
    tcase_add_test(tc, test_gemm_zero_sizes);
    tcase_add_test(tc, test_gemm_ld_strides);
    tcase_add_test(tc, test_gemm_packed_b);
    tcase_add_test(tc, test_gemm_packed_b_bad_range);
    tcase_add_test(tc, test_parallel_for_covers_once);
    tcase_add_test(tc, test_threads_bit_identical);
    tcase_add_test(tc, test_sums_match_torch_exactly);
    tcase_add_test(tc, test_concurrent_user_threads);
    tcase_add_test(tc, test_gelu_grad_and_one_pass);
    tcase_add_test(tc, test_gelu_against_double);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(kernels_suite()) ? 1 : 0; }

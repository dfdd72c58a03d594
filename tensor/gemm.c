/* tensor/gemm.c — single-precision matrix multiply, row-major.
 *
 * The BLIS scheme in plain C: B is packed into column panels of NR floats per
 * row of K, A into row panels of MR floats per column of K, and a micro-kernel
 * keeps an MR x NR tile of C in registers across the whole K block (MR*NR/16
 * vector accumulators), so every loaded value feeds several FMAs. Transposed
 * operands only change how the panels are packed. Vectors are GCC vector
 * extensions; the micro-kernel is compiled for AVX-512, AVX2+FMA and baseline
 * x86-64 and picked at load time (function multi-versioning).
 *
 * Threads split the rows of C (blocks of MC); each thread packs its own A
 * block, the packed B block is shared. Pack buffers are thread-local, grown
 * once and then reused, so a warm training step allocates nothing here.
 */
#include "kernels.h"

#include <stdlib.h>
#include <string.h>

#define MR 6
#define NR 32
#define KC 256
#define MC 96
#define NC 2048

typedef float vf __attribute__((vector_size(64)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__) && !defined(TG_NO_CLONES)
#define TG_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TG_TARGET_CLONES
#endif

/* C[mr x nr] += Ap (kc x MR, interleaved) * Bp (kc x NR) */
TG_TARGET_CLONES
static void micro_kernel(int kc, const float *restrict ap, const float *restrict bp, float *restrict C, int ldc,
                         int mr, int nr)
{
    vf c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
    vf c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
    for (int k = 0; k < kc; k++) {
        vf b0, b1;
        memcpy(&b0, bp + k * NR, sizeof b0);
        memcpy(&b1, bp + k * NR + 16, sizeof b1);
        const float *a = ap + k * MR;
        c00 += a[0] * b0; c01 += a[0] * b1;
        c10 += a[1] * b0; c11 += a[1] * b1;
        c20 += a[2] * b0; c21 += a[2] * b1;
        c30 += a[3] * b0; c31 += a[3] * b1;
        c40 += a[4] * b0; c41 += a[4] * b1;
        c50 += a[5] * b0; c51 += a[5] * b1;
    }
    float tile[MR][NR] __attribute__((aligned(64)));
    memcpy(&tile[0][0], &c00, 64); memcpy(&tile[0][16], &c01, 64);
    memcpy(&tile[1][0], &c10, 64); memcpy(&tile[1][16], &c11, 64);
    memcpy(&tile[2][0], &c20, 64); memcpy(&tile[2][16], &c21, 64);
    memcpy(&tile[3][0], &c30, 64); memcpy(&tile[3][16], &c31, 64);
    memcpy(&tile[4][0], &c40, 64); memcpy(&tile[4][16], &c41, 64);
    memcpy(&tile[5][0], &c50, 64); memcpy(&tile[5][16], &c51, 64);
    for (int r = 0; r < mr; r++) {
        float *crow = C + (int64_t)r * ldc;
        for (int j = 0; j < nr; j++)
            crow[j] += tile[r][j];
    }
}

typedef struct {
    const float *A, *B;
    float *C;
    int M, N, K;
    bool ta, tb;
    /* the current (jc, pc) block, set by the caller before each parallel run */
    int jc, nc, pc, kc;
    const float *bpack;
    int mc;   /* rows per task */
} gemm_job;

static _Thread_local float *t_apack, *t_bpack;
static _Thread_local size_t t_apack_cap, t_bpack_cap;

static float *grow(float **buf, size_t *cap, size_t n)
{
    if (n > *cap) {
        free(*buf);
        *buf = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
        if (!*buf)
            tg_error("tg_k_gemm", "out of memory packing %zu floats", n);
        *cap = n;
    }
    return *buf;
}

/* Pack op(B)[pc:pc+kc, jc:jc+nc] into NR-wide panels, zero-padded. */
static void pack_b(const gemm_job *j, float *bp)
{
    const int kc = j->kc, nc = j->nc;
    for (int p0 = 0; p0 < nc; p0 += NR) {
        const int w = nc - p0 < NR ? nc - p0 : NR;
        float *dst = bp + (int64_t)p0 * kc;
        for (int k = 0; k < kc; k++) {
            float *d = dst + k * NR;
            const int kk = j->pc + k;
            if (!j->tb) {
                memcpy(d, j->B + (int64_t)kk * j->N + j->jc + p0, (size_t)w * sizeof(float));
            } else {
                for (int x = 0; x < w; x++)
                    d[x] = j->B[(int64_t)(j->jc + p0 + x) * j->K + kk];
            }
            for (int x = w; x < NR; x++)
                d[x] = 0.0f;
        }
    }
}

/* Pack op(A)[i0:i0+mc, pc:pc+kc] into MR-tall panels, zero-padded. */
static void pack_a(const gemm_job *j, int i0, int mc, float *ap)
{
    const int kc = j->kc;
    for (int r0 = 0; r0 < mc; r0 += MR) {
        const int h = mc - r0 < MR ? mc - r0 : MR;
        float *dst = ap + (int64_t)r0 * kc;
        for (int k = 0; k < kc; k++) {
            const int kk = j->pc + k;
            float *d = dst + k * MR;
            for (int r = 0; r < h; r++) {
                const int i = i0 + r0 + r;
                d[r] = j->ta ? j->A[(int64_t)kk * j->M + i] : j->A[(int64_t)i * j->K + kk];
            }
            for (int r = h; r < MR; r++)
                d[r] = 0.0f;
        }
    }
}

static void gemm_task(void *vctx, int64_t t0, int64_t t1)
{
    const gemm_job *j = vctx;
    float *ap = grow(&t_apack, &t_apack_cap, (size_t)(j->mc + MR) * KC);
    for (int64_t t = t0; t < t1; t++) {
        const int i0 = (int)t * j->mc;
        const int mc = j->M - i0 < j->mc ? j->M - i0 : j->mc;
        pack_a(j, i0, mc, ap);
        for (int p0 = 0; p0 < j->nc; p0 += NR) {
            const int nr = j->nc - p0 < NR ? j->nc - p0 : NR;
            const float *bp = j->bpack + (int64_t)p0 * j->kc;
            for (int r0 = 0; r0 < mc; r0 += MR) {
                const int mr = mc - r0 < MR ? mc - r0 : MR;
                micro_kernel(j->kc, ap + (int64_t)r0 * j->kc, bp, j->C + (int64_t)(i0 + r0) * j->N + j->jc + p0,
                             j->N, mr, nr);
            }
        }
    }
}

void tg_k_gemm(bool ta, bool tb, int M, int N, int K, const float *A, const float *B, float *C, bool accumulate)
{
    if (!accumulate)
        memset(C, 0, (size_t)M * N * sizeof(float));
    if (M == 0 || N == 0 || K == 0)
        return;
    gemm_job j = {.A = A, .B = B, .C = C, .M = M, .N = N, .K = K, .ta = ta, .tb = tb};
    const int threads = tg_get_num_threads();
    const int64_t flops = (int64_t)M * N * K;
    /* rows per task: MC, or fewer so that every thread gets work */
    int mc = MC;
    if (threads > 1 && flops >= (1 << 18)) {
        int per = (M + threads - 1) / threads;
        per = (per + MR - 1) / MR * MR;
        if (per < mc)
            mc = per;
    }
    j.mc = mc;
    const int64_t tasks = (M + mc - 1) / mc;
    for (int jc = 0; jc < N; jc += NC) {
        j.jc = jc;
        j.nc = N - jc < NC ? N - jc : NC;
        for (int pc = 0; pc < K; pc += KC) {
            j.pc = pc;
            j.kc = K - pc < KC ? K - pc : KC;
            float *bp = grow(&t_bpack, &t_bpack_cap, (size_t)((j.nc + NR - 1) / NR * NR) * KC);
            pack_b(&j, bp);
            j.bpack = bp;
            if (threads > 1 && flops >= (1 << 18))
                tg_parallel_for(tasks, 1, gemm_task, &j);
            else
                gemm_task(&j, 0, tasks);
        }
    }
}

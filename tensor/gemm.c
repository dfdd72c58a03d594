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

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MR 6
#define NR 32
#define KC 256
#define MC 96
#define NC 2048

typedef float vf __attribute__((vector_size(64)));

/* C[mr x nr] += A (MR x kc, element (r,k) at a[r*rs + k*cs]) * Bp (kc x NR).
 * A is read in place (rs, cs are its strides) or from a packed panel
 * (rs = 1, cs = MR); either way each A value is one broadcast load. */
TG_TARGET_CLONES
static void micro_kernel(int kc, const float *restrict a, int64_t rs, int64_t cs, const float *restrict bp,
                         float *restrict C, int ldc, int mr, int nr)
{
    vf c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
    vf c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
    const float *a0 = a, *a1 = a + rs, *a2 = a + 2 * rs, *a3 = a + 3 * rs, *a4 = a + 4 * rs, *a5 = a + 5 * rs;
    for (int k = 0; k < kc; k++) {
        vf b0, b1;
        memcpy(&b0, bp + k * NR, sizeof b0);
        memcpy(&b1, bp + k * NR + 16, sizeof b1);
        const int64_t o = k * cs;
        c00 += a0[o] * b0; c01 += a0[o] * b1;
        c10 += a1[o] * b0; c11 += a1[o] * b1;
        c20 += a2[o] * b0; c21 += a2[o] * b1;
        c30 += a3[o] * b0; c31 += a3[o] * b1;
        c40 += a4[o] * b0; c41 += a4[o] * b1;
        c50 += a5[o] * b0; c51 += a5[o] * b1;
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

/* A thread that exits frees its pack buffers: the first growth registers a
 * pthread key whose destructor runs tg_k_release_scratch in that thread. */
static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;
static void scratch_destructor(void *unused)
{
    (void)unused;
    tg_k_release_scratch();
}
static void scratch_key_init(void) { pthread_key_create(&g_scratch_key, scratch_destructor); }

static float *grow(float **buf, size_t *cap, size_t n)
{
    if (n > *cap) {
        pthread_once(&g_scratch_once, scratch_key_init);
        pthread_setspecific(g_scratch_key, (void *)1);
        free(*buf);
        *buf = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
        if (!*buf)
            tg_error("tg_k_gemm", "out of memory packing %zu floats", n);
        *cap = n;
    }
    return *buf;
}

void tg_k_release_scratch(void)
{
    free(t_apack);
    free(t_bpack);
    t_apack = t_bpack = NULL;
    t_apack_cap = t_bpack_cap = 0;
}

/* Pack op(B)[pc:pc+kc, jc:jc+nc] into NR-wide panels, zero-padded:
 * panel p holds bp[p*kc*NR + k*NR + x] = op(B)[pc+k, jc+p*NR+x]. */
static void pack_b(const gemm_job *j, float *bp)
{
    const int kc = j->kc, nc = j->nc;
    for (int p0 = 0; p0 < nc; p0 += NR) {
        const int w = nc - p0 < NR ? nc - p0 : NR;
        float *dst = bp + (int64_t)p0 * kc;
        if (!j->tb) {
            for (int k = 0; k < kc; k++) {
                float *d = dst + k * NR;
                memcpy(d, j->B + (int64_t)(j->pc + k) * j->N + j->jc + p0, (size_t)w * sizeof(float));
                for (int x = w; x < NR; x++)
                    d[x] = 0.0f;
            }
        } else {
            /* B stored [N,K]: read each of its rows contiguously */
            for (int x = 0; x < w; x++) {
                const float *src = j->B + (int64_t)(j->jc + p0 + x) * j->K + j->pc;
                for (int k = 0; k < kc; k++)
                    dst[k * NR + x] = src[k];
            }
            for (int x = w; x < NR; x++)
                for (int k = 0; k < kc; k++)
                    dst[k * NR + x] = 0.0f;
        }
    }
}

/* Pack op(A)[i0:i0+mc, pc:pc+kc] into MR-tall panels, zero-padded:
 * panel q holds ap[q*kc*MR + k*MR + r] = op(A)[i0+q*MR+r, pc+k]. */
static void pack_a(const gemm_job *j, int i0, int mc, float *ap)
{
    const int kc = j->kc;
    for (int r0 = 0; r0 < mc; r0 += MR) {
        const int h = mc - r0 < MR ? mc - r0 : MR;
        float *dst = ap + (int64_t)r0 * kc;
        if (j->ta) {
            /* A stored [K,M]: the MR values of one k are contiguous */
            for (int k = 0; k < kc; k++) {
                const float *src = j->A + (int64_t)(j->pc + k) * j->M + i0 + r0;
                float *d = dst + k * MR;
                for (int r = 0; r < h; r++)
                    d[r] = src[r];
                for (int r = h; r < MR; r++)
                    d[r] = 0.0f;
            }
        } else {
            for (int r = 0; r < h; r++) {
                const float *src = j->A + (int64_t)(i0 + r0 + r) * j->K + j->pc;
                for (int k = 0; k < kc; k++)
                    dst[k * MR + r] = src[k];
            }
            for (int r = h; r < MR; r++)
                for (int k = 0; k < kc; k++)
                    dst[k * MR + r] = 0.0f;
        }
    }
}

static void gemm_task(void *vctx, int64_t t0, int64_t t1)
{
    const gemm_job *j = vctx;
    float *ap = grow(&t_apack, &t_apack_cap, (size_t)MR * KC);
    /* strides of op(A) in place: element (i, k) at A[i*rs + k*cs] */
    const int64_t rs = j->ta ? 1 : j->K, cs = j->ta ? j->M : 1;
    for (int64_t t = t0; t < t1; t++) {
        const int i0 = (int)t * j->mc;
        const int mc = j->M - i0 < j->mc ? j->M - i0 : j->mc;
        for (int p0 = 0; p0 < j->nc; p0 += NR) {
            const int nr = j->nc - p0 < NR ? j->nc - p0 : NR;
            const float *bp = j->bpack + (int64_t)p0 * j->kc;
            for (int r0 = 0; r0 < mc; r0 += MR) {
                const int mr = mc - r0 < MR ? mc - r0 : MR;
                float *c = j->C + (int64_t)(i0 + r0) * j->N + j->jc + p0;
                if (mr == MR) {
                    const float *a = j->A + (int64_t)(i0 + r0) * rs + (int64_t)j->pc * cs;
                    micro_kernel(j->kc, a, rs, cs, bp, c, j->N, mr, nr);
                } else {
                    /* a ragged last panel: pack it zero-padded to MR rows */
                    pack_a(j, i0 + r0, mr, ap);
                    micro_kernel(j->kc, ap, 1, MR, bp, c, j->N, mr, nr);
                }
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
    const int threads = tg_in_parallel_region() ? 1 : tg_get_num_threads();
    const int64_t flops = (int64_t)M * N * K;
    /* rows per task: MC, or fewer so that every thread gets work */
    int mc = MC;
    if (threads > 1 && flops >= (1 << 21)) {
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
            if (threads > 1 && flops >= (1 << 21))
                tg_parallel_for(tasks, 1, gemm_task, &j);
            else
                gemm_task(&j, 0, tasks);
        }
    }
}

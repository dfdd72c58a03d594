/* tensor/gemm.c — single-precision matrix multiply, row-major.
 *
 * The core is C[i, :] += A[i, k] * B[k, :] with four rows of C at a time, so
 * each row of B loaded into L1 serves four rows and the innermost loop is a
 * contiguous axpy the compiler vectorises. K and N are blocked to keep the
 * working set of B in cache. A transposed B is first packed into a
 * thread-local buffer (grown once, then reused) so every case runs the same
 * inner loop; a transposed A is read with a stride, which costs nothing
 * since each A element is loaded once per row of B.
 */
#include "kernels.h"

#include <stdlib.h>
#include <string.h>

#define KB 256   /* rows of B per block */
#define NB 512   /* columns of B per block */

typedef struct {
    const float *A, *B;
    float *C;
    int M, N, K;
    int64_t lda_i, lda_k; /* element (i,k) of op(A) is A[i*lda_i + k*lda_k] */
} gemm_job;

static void gemm_rows(void *vctx, int64_t r0, int64_t r1)
{
    const gemm_job *j = vctx;
    const int N = j->N, K = j->K;
    for (int k0 = 0; k0 < K; k0 += KB) {
        const int k1 = k0 + KB < K ? k0 + KB : K;
        for (int n0 = 0; n0 < N; n0 += NB) {
            const int n1 = n0 + NB < N ? n0 + NB : N;
            const int nn = n1 - n0;
            int64_t i = r0;
            for (; i + 4 <= r1; i += 4) {
                float *restrict c0 = j->C + i * N + n0, *restrict c1 = c0 + N, *restrict c2 = c1 + N,
                               *restrict c3 = c2 + N;
                for (int k = k0; k < k1; k++) {
                    const float *restrict b = j->B + (int64_t)k * N + n0;
                    const float a0 = j->A[i * j->lda_i + k * j->lda_k];
                    const float a1 = j->A[(i + 1) * j->lda_i + k * j->lda_k];
                    const float a2 = j->A[(i + 2) * j->lda_i + k * j->lda_k];
                    const float a3 = j->A[(i + 3) * j->lda_i + k * j->lda_k];
                    for (int x = 0; x < nn; x++) {
                        const float bv = b[x];
                        c0[x] += a0 * bv;
                        c1[x] += a1 * bv;
                        c2[x] += a2 * bv;
                        c3[x] += a3 * bv;
                    }
                }
            }
            for (; i < r1; i++) {
                float *restrict c0 = j->C + i * N + n0;
                for (int k = k0; k < k1; k++) {
                    const float *restrict b = j->B + (int64_t)k * N + n0;
                    const float a0 = j->A[i * j->lda_i + k * j->lda_k];
                    for (int x = 0; x < nn; x++)
                        c0[x] += a0 * b[x];
                }
            }
        }
    }
}

static _Thread_local float *t_pack;
static _Thread_local size_t t_pack_cap;

static float *pack_buffer(size_t n)
{
    if (n > t_pack_cap) {
        free(t_pack);
        t_pack = malloc(n * sizeof(float));
        if (!t_pack)
            tg_error("tg_k_gemm", "out of memory packing %zu floats", n);
        t_pack_cap = n;
    }
    return t_pack;
}

void tg_k_gemm(bool ta, bool tb, int M, int N, int K, const float *A, const float *B, float *C, bool accumulate)
{
    if (!accumulate)
        memset(C, 0, (size_t)M * N * sizeof(float));
    if (M == 0 || N == 0 || K == 0)
        return;
    if (tb) {
        /* B is stored [N,K]: pack its transpose [K,N]. */
        float *p = pack_buffer((size_t)K * N);
        for (int n = 0; n < N; n++) {
            const float *src = B + (int64_t)n * K;
            for (int k = 0; k < K; k++)
                p[(int64_t)k * N + n] = src[k];
        }
        B = p;
    }
    gemm_job j = {A, B, C, M, N, K, ta ? 1 : K, ta ? M : 1};
    /* Split rows across threads in multiples of 4 once the work is worth it. */
    const int64_t flops = (int64_t)M * N * K;
    if (flops < (1 << 18) || tg_get_num_threads() == 1) {
        gemm_rows(&j, 0, M);
        return;
    }
    tg_parallel_for(M, 8, gemm_rows, &j);
}

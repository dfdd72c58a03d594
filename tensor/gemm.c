/* tensor/gemm.c — single-precision matrix multiply, row-major.
 *
 * The BLIS scheme: op(B) is packed into panels NR floats wide, contiguous in
 * K (bp[k*NR + x]); op(A) into panels MR rows tall, contiguous in K
 * (ap[k*P + r], the pitch P = MR, or 16 on AVX-512: each k of a panel one
 * aligned cache line, stored whole when packing); a micro-kernel keeps an
 * MR x NR tile of C in registers across a K block of KC, so every loaded
 * value feeds several FMAs, and writes the tile with vector stores.
 * Transposed operands only change how the panels are packed (with
 * in-register 16x16 transposes on AVX-512).
 *
 * Three micro-kernels, picked at run time from what the CPU has:
 *   avx512  14 x 32, 28 zmm accumulators, FMA (Skylake-X and later); the
 *           last row panel, when shorter, by a kernel of as few (even) rows
 *   avx2     6 x 16, 12 ymm accumulators, FMA (Haswell and later)
 *   generic  6 x 16 in portable C (separate multiply and add)
 * tg_k_gemm_set_isa() forces one, so tests run every path the CPU can.
 *
 * Summation order: every element of C sums its K block of KC products in
 * order, from zero, then adds the block to C. Threads only split the rows
 * and columns of C, so the result is the same bit for bit for any thread
 * count. op(B)'s block is packed first (by the threads together), then each
 * MC block of op(A) just before it is used (while it is in L2), by the
 * thread that takes it. With threads the whole call is one job of the pool,
 * the pack and compute phases of every block in a row (see "the threaded
 * schedule"). When there are too few row blocks to share out, each thread
 * instead computes a slice of C's rows or columns on its own, packing its
 * own operands (see "few row blocks"). Pack buffers are scratch, grown once
 * and then reused, so a warm training step allocates nothing here.
 */
#include "kernels.h"

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TG_GEMM_X86 1
#endif

#define KC TG_GEMM_KC
#define MR_MAX 14
#define NR_MAX 32
#define AP_PITCH 16 /* floats per k in an AVX-512 A panel: 14 rows, padded to a cache line */

/* ---------------------------------------------------------------- the kernel table
 * kernel: C[mr x nr] = (add ? C : 0) + sum over k < kc of ap[k*P + r] * bp[k*NR + x]
 * pack_a: the h rows i0.. of op(A) as ceil(h / MR) panels of pitch P (ap_pitch >= MR
 *         floats per k), panel q at ap + q*P*kc:
 *         ap[q*P*kc + k*P + r] = op(A)[i0 + q*MR + r, p0 + k], zero past row h (r < MR;
 *         what the padding r >= MR holds is never read)
 * pack_b: the w columns j0.. of op(B) as ceil(w / NR) panels, panel q at bp + q*NR*kc:
 *         bp[q*NR*kc + k*NR + x] = op(B)[p0 + k, j0 + q*NR + x], zero past column w
 * An operand whose rows of one k are contiguous in memory (A when ta, B when
 * !tb) is read a whole row of the block at a time, k outermost, so the reads
 * stream through memory instead of taking a few floats from each row. */
typedef struct {
    const float *A, *B;
    int M, N, K;
    int64_t lda, ldb;   /* row strides of A and B as stored */
    bool ta, tb;
} gemm_args;

typedef struct {
    const char *name;
    int mr, nr, mc, nc;
    int ap_pitch; /* floats per k in a packed A panel (mr, or more to align each k to a cache line) */
    void (*kernel)(int kc, const float *ap, const float *bp, float *c, int64_t ldc, int mr, int nr, bool add);
    void (*pack_a)(const gemm_args *g, int i0, int h, int p0, int kc, float *ap);
    void (*pack_b)(const gemm_args *g, int j0, int w, int p0, int kc, float *bp);
    /* the same as kernel for the last panel's mr < MR rows (only those rows
     * computed: every element of C the same bits), or NULL to use kernel */
    void (*kernel_short)(int kc, const float *ap, const float *bp, float *c, int64_t ldc, int mr, int nr, bool add);
} gemm_isa;

/* ---------------------------------------------------------------- portable packing */

/* The rows of one k contiguous (A when ta, B when !tb): k outermost, each
 * row's n floats dealt out to the panels, P floats to a panel. */
static void pack_rows_any(const float *src, int64_t ld, int n, int kc, float *dst, int P)
{
    for (int k = 0; k < kc; k++) {
        const float *s = src + k * ld;
        for (int x0 = 0; x0 < n; x0 += P) {
            float *d = dst + (int64_t)x0 * kc + k * P;
            const int w = n - x0 < P ? n - x0 : P;
            memcpy(d, s + x0, (size_t)w * sizeof(float));
            for (int x = w; x < P; x++)
                d[x] = 0.0f;
        }
    }
}

/* The other layout: each panel's rows are contiguous in k (row x at src + x*ld). */
static void pack_cols_any(const float *src, int64_t ld, int n, int kc, float *dst, int P)
{
    for (int x0 = 0; x0 < n; x0 += P) {
        float *d = dst + (int64_t)x0 * kc;
        const int w = n - x0 < P ? n - x0 : P;
        for (int x = 0; x < w; x++) {
            const float *s = src + (x0 + x) * ld;
            for (int k = 0; k < kc; k++)
                d[k * P + x] = s[k];
        }
        for (int x = w; x < P; x++)
            for (int k = 0; k < kc; k++)
                d[k * P + x] = 0.0f;
    }
}

static void pack_a_6(const gemm_args *g, int i0, int h, int p0, int kc, float *ap)
{
    if (g->ta) /* A stored [K,M] */
        pack_rows_any(g->A + p0 * g->lda + i0, g->lda, h, kc, ap, 6);
    else
        pack_cols_any(g->A + i0 * g->lda + p0, g->lda, h, kc, ap, 6);
}

static void pack_b_16(const gemm_args *g, int j0, int w, int p0, int kc, float *bp)
{
    if (!g->tb)
        pack_rows_any(g->B + p0 * g->ldb + j0, g->ldb, w, kc, bp, 16);
    else /* B stored [N,K] */
        pack_cols_any(g->B + j0 * g->ldb + p0, g->ldb, w, kc, bp, 16);
}


/* ---------------------------------------------------------------- generic 6 x 16 */

static void kernel_generic(int kc, const float *restrict ap, const float *restrict bp, float *restrict c,
                           int64_t ldc, int mr, int nr, bool add)
{
    float acc[6][16] = {{0}};
    for (int k = 0; k < kc; k++) {
        const float *a = ap + k * 6, *b = bp + k * 16;
        for (int r = 0; r < 6; r++)
            for (int x = 0; x < 16; x++)
                acc[r][x] += a[r] * b[x];
    }
    for (int r = 0; r < mr; r++) {
        float *crow = c + r * ldc;
        for (int x = 0; x < nr; x++)
            crow[x] = add ? crow[x] + acc[r][x] : acc[r][x];
    }
}

#ifdef TG_GEMM_X86
/* ---------------------------------------------------------------- AVX2 6 x 16 */

__attribute__((target("avx2,fma"))) static void kernel_avx2(int kc, const float *restrict ap,
                                                             const float *restrict bp, float *restrict c,
                                                             int64_t ldc, int mr, int nr, bool add)
{
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int k = 0; k < kc; k++) {
        const __m256 b0 = _mm256_load_ps(bp), b1 = _mm256_load_ps(bp + 8);
        __m256 a;
        a = _mm256_broadcast_ss(ap + 0); c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
        a = _mm256_broadcast_ss(ap + 1); c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
        a = _mm256_broadcast_ss(ap + 2); c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
        a = _mm256_broadcast_ss(ap + 3); c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
        a = _mm256_broadcast_ss(ap + 4); c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
        a = _mm256_broadcast_ss(ap + 5); c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
        ap += 6;
        bp += 16;
    }
    __m256 tile[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    if (nr == 16) {
        for (int r = 0; r < mr; r++) {
            float *cr = c + r * ldc;
            if (add) {
                tile[r][0] = _mm256_add_ps(_mm256_loadu_ps(cr), tile[r][0]);
                tile[r][1] = _mm256_add_ps(_mm256_loadu_ps(cr + 8), tile[r][1]);
            }
            _mm256_storeu_ps(cr, tile[r][0]);
            _mm256_storeu_ps(cr + 8, tile[r][1]);
        }
    } else {
        float t[16];
        for (int r = 0; r < mr; r++) {
            float *cr = c + r * ldc;
            _mm256_storeu_ps(t, tile[r][0]);
            _mm256_storeu_ps(t + 8, tile[r][1]);
            for (int x = 0; x < nr; x++)
                cr[x] = add ? cr[x] + t[x] : t[x];
        }
    }
}

/* ---------------------------------------------------------------- AVX-512 14 x 32 */

#define AVX512 __attribute__((target("avx512f")))

static inline AVX512 __mmask16 lanes(int n) { return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n > 0 ? n : 0)) - 1u); }

/* In-register transpose of 16 rows of 16 floats. */
static inline AVX512 void transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* q[4g + j]: in 128-bit lane L, rows 4g..4g+3 of column 4L + j */
    __m512 q[16];
    for (int g = 0; g < 4; g++) {
        const __m512d lo01 = _mm512_castps_pd(t[4 * g]), hi01 = _mm512_castps_pd(t[4 * g + 1]);
        const __m512d lo23 = _mm512_castps_pd(t[4 * g + 2]), hi23 = _mm512_castps_pd(t[4 * g + 3]);
        q[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo01, lo23));
        q[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo01, lo23));
        q[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi01, hi23));
        q[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi01, hi23));
    }
    /* a 4 x 4 transpose of 128-bit lanes for each j */
    for (int j = 0; j < 4; j++) {
        const __m512 u0 = _mm512_shuffle_f32x4(q[j], q[4 + j], 0x44), u1 = _mm512_shuffle_f32x4(q[j], q[4 + j], 0xEE);
        const __m512 u2 = _mm512_shuffle_f32x4(q[8 + j], q[12 + j], 0x44);
        const __m512 u3 = _mm512_shuffle_f32x4(q[8 + j], q[12 + j], 0xEE);
        r[0 + j] = _mm512_shuffle_f32x4(u0, u2, 0x88);
        r[4 + j] = _mm512_shuffle_f32x4(u0, u2, 0xDD);
        r[8 + j] = _mm512_shuffle_f32x4(u1, u3, 0x88);
        r[12 + j] = _mm512_shuffle_f32x4(u1, u3, 0xDD);
    }
}

/* dst[k*ld + x] = src[x*ss + k] for x < rows (zero for rows <= x < 16 and
 * written for x < width), k < kc: rows contiguous in k become columns. */
static AVX512 void pack_transposed(const float *src, int64_t ss, int rows, int kc, float *dst, int ld, int width)
{
    const __mmask16 wmask = lanes(width);
    for (int k0 = 0; k0 < kc; k0 += 16) {
        const int kn = kc - k0 < 16 ? kc - k0 : 16;
        const __mmask16 km = lanes(kn);
        __m512 r[16];
        for (int x = 0; x < 16; x++)
            r[x] = x < rows ? _mm512_maskz_loadu_ps(km, src + x * ss + k0) : _mm512_setzero_ps();
        transpose16(r);
        for (int k = 0; k < kn; k++)
            _mm512_mask_storeu_ps(dst + (int64_t)(k0 + k) * ld, wmask, r[k]);
    }
}

static AVX512 void pack_a_avx512(const gemm_args *g, int i0, int h, int p0, int kc, float *ap)
{
    if (g->ta) { /* A stored [K,M]: row k of the block, 14 floats to each panel, one aligned line */
        for (int k = 0; k < kc; k++) {
            const float *src = g->A + (p0 + k) * g->lda + i0;
            for (int r0 = 0, q = 0; r0 < h; r0 += MR_MAX, q++)
                _mm512_store_ps(ap + ((int64_t)q * kc + k) * AP_PITCH,
                                _mm512_maskz_loadu_ps(lanes(h - r0 < MR_MAX ? h - r0 : MR_MAX), src + r0));
        }
    } else {
        for (int r0 = 0, q = 0; r0 < h; r0 += MR_MAX, q++)
            pack_transposed(g->A + (i0 + r0) * g->lda + p0, g->lda, h - r0 < MR_MAX ? h - r0 : MR_MAX, kc,
                            ap + (int64_t)q * kc * AP_PITCH, AP_PITCH, AP_PITCH);
    }
}

static AVX512 void pack_b_avx512(const gemm_args *g, int j0, int w, int p0, int kc, float *bp)
{
    if (!g->tb) { /* row k of the block, 32 floats to each panel */
        for (int k = 0; k < kc; k++) {
            const float *src = g->B + (p0 + k) * g->ldb + j0;
            for (int x0 = 0; x0 < w; x0 += NR_MAX) {
                float *d = bp + (int64_t)x0 * kc + k * NR_MAX;
                _mm512_store_ps(d, _mm512_maskz_loadu_ps(lanes(w - x0), src + x0));
                _mm512_store_ps(d + 16, _mm512_maskz_loadu_ps(lanes(w - x0 - 16), src + x0 + 16));
            }
        }
    } else {
        for (int x0 = 0; x0 < w; x0 += NR_MAX) {
            const float *src = g->B + (j0 + x0) * g->ldb + p0;
            const int n = w - x0 < NR_MAX ? w - x0 : NR_MAX;
            float *d = bp + (int64_t)x0 * kc;
            pack_transposed(src, g->ldb, n < 16 ? n : 16, kc, d, NR_MAX, 16);
            pack_transposed(src + 16 * g->ldb, g->ldb, n - 16, kc, d + 16, NR_MAX, 16);
        }
    }
}

#define ROW_FMA(i)                                                                                                 \
    do {                                                                                                           \
        const __m512 a = _mm512_set1_ps(ap[i]);                                                                    \
        c##i##0 = _mm512_fmadd_ps(a, b0, c##i##0);                                                                 \
        c##i##1 = _mm512_fmadd_ps(a, b1, c##i##1);                                                                 \
    } while (0)

#define ROW_STORE(i)                                                                                               \
    do {                                                                                                           \
        if (i < mr) {                                                                                              \
            float *cr = c + i * ldc;                                                                               \
            if (add) {                                                                                             \
                c##i##0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), c##i##0);                                    \
                c##i##1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), c##i##1);                               \
            }                                                                                                      \
            _mm512_mask_storeu_ps(cr, m0, c##i##0);                                                                \
            _mm512_mask_storeu_ps(cr + 16, m1, c##i##1);                                                           \
        }                                                                                                          \
    } while (0)

static AVX512 void kernel_avx512(int kc, const float *restrict ap, const float *restrict bp, float *restrict c,
                                 int64_t ldc, int mr, int nr, bool add)
{
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    __m512 c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    __m512 c80 = c00, c81 = c00, c90 = c00, c91 = c00, c100 = c00, c101 = c00, c110 = c00, c111 = c00;
    __m512 c120 = c00, c121 = c00, c130 = c00, c131 = c00;
    for (int r = 0; r < mr; r++) { /* the tile of C, in cache by the time it is stored */
        _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + (nr > 16 ? 16 : 0)), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + nr - 1), _MM_HINT_T0);
    }
    for (int k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
        _mm_prefetch((const char *)(bp + 8 * NR_MAX), _MM_HINT_T0);
        ROW_FMA(0); ROW_FMA(1); ROW_FMA(2); ROW_FMA(3); ROW_FMA(4); ROW_FMA(5); ROW_FMA(6);
        _mm_prefetch((const char *)(ap + 8 * AP_PITCH), _MM_HINT_T0);
        ROW_FMA(7); ROW_FMA(8); ROW_FMA(9); ROW_FMA(10); ROW_FMA(11); ROW_FMA(12); ROW_FMA(13);
        ap += AP_PITCH;
        bp += NR_MAX;
    }
    const __mmask16 m0 = lanes(nr), m1 = lanes(nr - 16);
    ROW_STORE(0); ROW_STORE(1); ROW_STORE(2); ROW_STORE(3); ROW_STORE(4); ROW_STORE(5); ROW_STORE(6);
    ROW_STORE(7); ROW_STORE(8); ROW_STORE(9); ROW_STORE(10); ROW_STORE(11); ROW_STORE(12); ROW_STORE(13);
}

/* The kernel on the first R rows of a panel (R < 14, even): the accumulators
 * of those rows only, the FMAs in the same order as kernel_avx512's. */
static inline __attribute__((always_inline)) AVX512 void kernel_avx512_rows(const int R, int kc, const float *restrict ap,
                                                                          const float *restrict bp, float *restrict c,
                                                                          int64_t ldc, int mr, int nr, bool add)
{
    __m512 acc[MR_MAX - 2][2];
    for (int r = 0; r < R; r++)
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    for (int r = 0; r < mr; r++) {
        _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
        _mm_prefetch((const char *)(c + r * ldc + nr - 1), _MM_HINT_T0);
    }
    for (int k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_load_ps(bp), b1 = _mm512_load_ps(bp + 16);
        _mm_prefetch((const char *)(bp + 8 * NR_MAX), _MM_HINT_T0);
        _mm_prefetch((const char *)(ap + 8 * AP_PITCH), _MM_HINT_T0);
        for (int r = 0; r < R; r++) {
            const __m512 a = _mm512_set1_ps(ap[r]);
            acc[r][0] = _mm512_fmadd_ps(a, b0, acc[r][0]);
            acc[r][1] = _mm512_fmadd_ps(a, b1, acc[r][1]);
        }
        ap += AP_PITCH;
        bp += NR_MAX;
    }
    const __mmask16 m0 = lanes(nr), m1 = lanes(nr - 16);
    for (int r = 0; r < R; r++) {
        if (r < mr) {
            float *cr = c + r * ldc;
            if (add) {
                acc[r][0] = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, cr), acc[r][0]);
                acc[r][1] = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, cr + 16), acc[r][1]);
            }
            _mm512_mask_storeu_ps(cr, m0, acc[r][0]);
            _mm512_mask_storeu_ps(cr + 16, m1, acc[r][1]);
        }
    }
}

#define KERNEL_ROWS(R)                                                                                             \
    static AVX512 void kernel_avx512_##R(int kc, const float *restrict ap, const float *restrict bp,               \
                                         float *restrict c, int64_t ldc, int mr, int nr, bool add)                \
    {                                                                                                              \
        kernel_avx512_rows(R, kc, ap, bp, c, ldc, mr, nr, add);                                                    \
    }
KERNEL_ROWS(2)
KERNEL_ROWS(4)
KERNEL_ROWS(6)
KERNEL_ROWS(8)
KERNEL_ROWS(10)
KERNEL_ROWS(12)

static AVX512 void kernel_avx512_short(int kc, const float *restrict ap, const float *restrict bp,
                                       float *restrict c, int64_t ldc, int mr, int nr, bool add)
{
    static void (*const by_rows[])(int, const float *, const float *, float *, int64_t, int, int, bool) = {
        kernel_avx512_2, kernel_avx512_4, kernel_avx512_6, kernel_avx512_8, kernel_avx512_10, kernel_avx512_12,
        kernel_avx512};
    by_rows[(mr - 1) / 2](kc, ap, bp, c, ldc, mr, nr, add);
}

#endif /* TG_GEMM_X86 */

/* ---------------------------------------------------------------- dispatch */

static const gemm_isa g_generic = {"generic", 6, 16, 96, 2048, 6, kernel_generic, pack_a_6, pack_b_16, NULL};
#ifdef TG_GEMM_X86
static const gemm_isa g_avx2 = {"avx2", 6, 16, 96, 2048, 6, kernel_avx2, pack_a_6, pack_b_16, NULL};
#ifndef AVX512_MC
#define AVX512_MC (14 * 12)
#endif
static const gemm_isa g_avx512 = {"avx512", MR_MAX, NR_MAX, AVX512_MC, 2048, AP_PITCH, kernel_avx512, pack_a_avx512,
                                  pack_b_avx512, kernel_avx512_short};
#endif

static const gemm_isa *g_isa; /* NULL until the first call picks the best */

static bool isa_supported(tg_gemm_isa isa)
{
#ifdef TG_GEMM_X86
    __builtin_cpu_init();
    if (isa == TG_GEMM_AVX512)
        return __builtin_cpu_supports("avx512f");
    if (isa == TG_GEMM_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return isa == TG_GEMM_GENERIC;
}

static const gemm_isa *isa_table(tg_gemm_isa isa)
{
#ifdef TG_GEMM_X86
    if (isa == TG_GEMM_AVX512)
        return &g_avx512;
    if (isa == TG_GEMM_AVX2)
        return &g_avx2;
#endif
    return &g_generic;
}

bool tg_k_gemm_set_isa(tg_gemm_isa isa)
{
    if (isa == TG_GEMM_BEST)
        isa = isa_supported(TG_GEMM_AVX512) ? TG_GEMM_AVX512 : isa_supported(TG_GEMM_AVX2) ? TG_GEMM_AVX2
                                                                                              : TG_GEMM_GENERIC;
    if (!isa_supported(isa))
        return false;
    __atomic_store_n(&g_isa, isa_table(isa), __ATOMIC_RELEASE);
    return true;
}

/* The micro-kernel in use: the best this CPU has until tg_k_gemm_set_isa
 * picks another. */
static const gemm_isa *current_isa(void)
{
    const gemm_isa *isa = __atomic_load_n(&g_isa, __ATOMIC_ACQUIRE);
    if (!isa) {
        tg_k_gemm_set_isa(TG_GEMM_BEST);
        isa = g_isa;
    }
    return isa;
}

const char *tg_k_gemm_isa_name(void) { return current_isa()->name; }

/* Where row r of op(A)'s packed block starts (r a multiple of MR), and how
 * many floats a block of h rows takes. */
static inline int64_t a_offset(const gemm_isa *isa, int r, int kc) { return (int64_t)(r / isa->mr) * isa->ap_pitch * kc; }
static inline size_t a_size(const gemm_isa *isa, int h, int kc) { return (size_t)a_offset(isa, h + isa->mr - 1, kc); }
/* Floats of one K block of op(B) packed, for N columns (up to the column block NC). */
static inline size_t b_size(const gemm_isa *isa, int N)
{
    return (size_t)(((N < isa->nc ? N : isa->nc) + isa->nr - 1) / isa->nr) * isa->nr * KC;
}

/* ---------------------------------------------------------------- scratch */

static _Thread_local float *t_scratch[TG_SCRATCH_N];
static _Thread_local size_t t_scratch_cap[TG_SCRATCH_N];

/* A thread that exits frees its scratch: the first growth registers a
 * pthread key whose destructor runs tg_k_release_scratch in that thread. */
static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;
static void scratch_destructor(void *unused)
{
    (void)unused;
    tg_k_release_scratch();
}
static void scratch_key_init(void) { pthread_key_create(&g_scratch_key, scratch_destructor); }

float *tg_k_scratch(int slot, size_t n)
{
    if (n > t_scratch_cap[slot]) {
        pthread_once(&g_scratch_once, scratch_key_init);
        pthread_setspecific(g_scratch_key, (void *)1);
        free(t_scratch[slot]);
        t_scratch[slot] = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
        if (!t_scratch[slot])
            tg_error("tg_k_scratch", "out of memory for %zu floats of scratch", n);
        t_scratch_cap[slot] = n;
    }
    return t_scratch[slot];
}

typedef struct {
    int slot;
    size_t n;
} scratch_reserve_args;

static void scratch_reserve_range(void *ctx, int64_t i0, int64_t i1)
{
    (void)i0, (void)i1;
    const scratch_reserve_args *a = ctx;
    tg_k_scratch(a->slot, a->n);
}

void tg_k_scratch_reserve(int slot, size_t n)
{
    /* what every pool thread has, per slot: floats and thread count */
    static size_t reserved[TG_SCRATCH_N];
    static int reserved_threads[TG_SCRATCH_N];
    const int t = tg_get_num_threads();
    if (n <= __atomic_load_n(&reserved[slot], __ATOMIC_ACQUIRE) &&
        t <= __atomic_load_n(&reserved_threads[slot], __ATOMIC_ACQUIRE)) {
        tg_k_scratch(slot, n); /* this thread may be a user thread of its own */
        return;
    }
    scratch_reserve_args a = {slot, n};
    if (tg_parallel_each(scratch_reserve_range, &a)) {
        __atomic_store_n(&reserved_threads[slot], t, __ATOMIC_RELEASE);
        if (n > __atomic_load_n(&reserved[slot], __ATOMIC_ACQUIRE)) /* never less: no thread's scratch shrinks */
            __atomic_store_n(&reserved[slot], n, __ATOMIC_RELEASE);
    }
}

void tg_k_gemm_reserve(int N)
{
    const gemm_isa *isa = current_isa();
    tg_k_scratch_reserve(TG_SCRATCH_GEMM_A, a_size(isa, isa->mc, KC));
    tg_k_scratch_reserve(TG_SCRATCH_GEMM_B, b_size(isa, N));
}

void tg_k_release_scratch(void)
{
    for (int s = 0; s < TG_SCRATCH_N; s++) {
        free(t_scratch[s]);
        t_scratch[s] = NULL;
        t_scratch_cap[s] = 0;
    }
}

/* ---------------------------------------------------------------- the blocked loops */

typedef struct {
    gemm_args g;
    const gemm_isa *isa;
    float *C;
    int64_t ldc;
    bool add;            /* add to C (accumulate, or a K block after the first) */
    int jc, nc, pc, kc;  /* the current block of op(B) */
    float *bpack;
    int m_blocks;
} gemm_job;

/* panels of B per pack item when threads share the packing */
#define B_GROUP 2

/* item p: B panels group p */
static void pack_range(void *vctx, int64_t p0, int64_t p1)
{
    const gemm_job *j = vctx;
    const gemm_isa *isa = j->isa;
    for (int64_t p = p0; p < p1; p++) {
        const int x0 = (int)p * B_GROUP * isa->nr;
        const int w = j->nc - x0 < B_GROUP * isa->nr ? j->nc - x0 : B_GROUP * isa->nr;
        isa->pack_b(&j->g, j->jc + x0, w, j->pc, j->kc, j->bpack + (int64_t)x0 * j->kc);
    }
}

/* C[mc, n] (+)= one packed block of op(A) (mc rows) times n columns of
 * packed op(B) panels (panel q at bp + q * bstride), tile by tile; the
 * block's last panel, when short, by the kernel of as few rows. Row panel
 * outermost, so consecutive tiles are neighbours along the rows of C and
 * reuse one A panel: on AVX-512 this order measured 1-4.5% faster than B
 * panel outermost on the training shapes (1024 x 1024 x 256 1.033x on 1
 * thread, 1.045x on 2; medians of 31 interleaved pairs, never slower),
 * though it reads more bytes of B from L2 than the other order reads of A
 * (there are no hardware counters here to say which cache effect wins). */
static void block_tiles(const gemm_isa *isa, int kc, const float *ap, int mc, const float *bp, int64_t bstride,
                        int n, float *C, int64_t ldc, bool add)
{
    const int MR = isa->mr, NR = isa->nr;
    for (int r0 = 0; r0 < mc; r0 += MR) {
        const int mr = mc - r0 < MR ? mc - r0 : MR;
        for (int x0 = 0, q = 0; x0 < n; x0 += NR, q++) {
            const int nr = n - x0 < NR ? n - x0 : NR;
            float *c = C + r0 * ldc + x0;
            if (mr < MR && isa->kernel_short)
                isa->kernel_short(kc, ap + a_offset(isa, r0, kc), bp + q * bstride, c, ldc, mr, nr, add);
            else
                isa->kernel(kc, ap + a_offset(isa, r0, kc), bp + q * bstride, c, ldc, mr, nr, add);
        }
    }
}

/* task t: row block t (MC rows), its op(A) packed into this thread's scratch,
 * against every panel of the packed op(B) block */
static void compute_range(void *vctx, int64_t t0, int64_t t1)
{
    const gemm_job *j = vctx;
    const gemm_isa *isa = j->isa;
    const int MC = isa->mc, kc = j->kc;
    float *ap = tg_k_scratch(TG_SCRATCH_GEMM_A, a_size(isa, MC, KC));
    for (int64_t t = t0; t < t1; t++) {
        const int i0 = (int)t * MC, mc = j->g.M - i0 < MC ? j->g.M - i0 : MC;
        isa->pack_a(&j->g, i0, mc, j->pc, kc, ap);
        block_tiles(isa, kc, ap, mc, j->bpack, (int64_t)isa->nr * kc, j->nc, j->C + i0 * j->ldc + j->jc, j->ldc,
                    j->add);
    }
}

/* The whole product on this thread: for each column block and K block, op(B)
 * packed into this thread's scratch, then every row block. */
static void gemm_serial(const gemm_isa *isa, const gemm_args *g, float *C, int64_t ldc, bool accumulate)
{
    gemm_job j = {.g = *g, .isa = isa, .C = C, .ldc = ldc, .m_blocks = (g->M + isa->mc - 1) / isa->mc};
    j.bpack = tg_k_scratch(TG_SCRATCH_GEMM_B, b_size(isa, g->N));
    for (int jc = 0; jc < g->N; jc += isa->nc) {
        j.jc = jc;
        j.nc = g->N - jc < isa->nc ? g->N - jc : isa->nc;
        for (int pc = 0; pc < g->K; pc += KC) {
            j.pc = pc;
            j.kc = g->K - pc < KC ? g->K - pc : KC;
            j.add = accumulate || pc > 0;
            isa->pack_b(&j.g, jc, j.nc, pc, j.kc, j.bpack);
            compute_range(&j, 0, j.m_blocks);
        }
    }
}

/* ---------------------------------------------------------------- the threaded schedule
 * Many row blocks (at least two per thread): the threads share out the row
 * blocks, each packing its own block of op(A), against one op(B) block that
 * they pack together. Every block (jc, pc) of the loops is then two phases,
 * packing (B_GROUP items) then computing (the tasks of compute_range). Items
 * are numbered one after another through all the phases; each thread of the
 * pool claims the next number (an atomic counter) and, before it runs the
 * item, waits until every item of the earlier phases is done (another
 * counter: an item of a phase only starts once all before the phase are
 * done, so done >= the phase's first number means exactly that). A single
 * hand-off to the pool per call then replaces two per K block, each with its
 * wake-up and join; a thread that joins late or never just leaves more items
 * to the others, so one thread alone still runs everything, in the same
 * order. */
typedef struct {
    gemm_job base;      /* g, isa, C, ldc, m_blocks, bpack: the same for every block */
    bool accumulate;
    int n_pc;           /* K blocks per column block */
    int64_t next, done; /* atomic: the next item to claim, the items finished */
} gemm_sched;

/* The job of block b (column block b / n_pc, K block b % n_pc). */
static void sched_block(const gemm_sched *s, int b, gemm_job *j)
{
    *j = s->base;
    const gemm_isa *isa = j->isa;
    j->jc = b / s->n_pc * isa->nc;
    j->nc = j->g.N - j->jc < isa->nc ? j->g.N - j->jc : isa->nc;
    j->pc = b % s->n_pc * KC;
    j->kc = j->g.K - j->pc < KC ? j->g.K - j->pc : KC;
    j->add = s->accumulate || j->pc > 0;
}

/* pack items of a block: its groups of B panels */
static int64_t b_groups(const gemm_job *j) { return ((j->nc + j->isa->nr - 1) / j->isa->nr + B_GROUP - 1) / B_GROUP; }

static void wait_done(gemm_sched *s, int64_t n)
{
    for (int spin = 0; __atomic_load_n(&s->done, __ATOMIC_ACQUIRE) < n; spin++) {
#ifdef TG_GEMM_X86
        __builtin_ia32_pause();
#endif
        if (spin >= 256) /* the other thread was preempted (a shared machine) */
            sched_yield();
    }
}

static void sched_run(void *vctx, int64_t i0, int64_t i1)
{
    (void)i0, (void)i1;
    gemm_sched *s = vctx;
    const int n_blocks = (s->base.g.N + s->base.isa->nc - 1) / s->base.isa->nc * s->n_pc;
    gemm_job j;
    int b = 0, phase = 0; /* the phase this thread is in: block b, packing (0) or computing (1) */
    int64_t start = 0;    /* its first item's number */
    sched_block(s, 0, &j);
    for (;;) {
        const int64_t t = __atomic_fetch_add(&s->next, 1, __ATOMIC_RELAXED);
        int64_t size = phase ? j.m_blocks : b_groups(&j);
        while (t >= start + size) {
            start += size;
            if (phase && ++b == n_blocks)
                return;
            if (phase)
                sched_block(s, b, &j);
            phase = !phase;
            size = phase ? j.m_blocks : b_groups(&j);
        }
        wait_done(s, start);
        if (phase)
            compute_range(&j, t - start, t - start + 1);
        else
            pack_range(&j, t - start, t - start + 1);
        __atomic_add_fetch(&s->done, 1, __ATOMIC_RELEASE);
    }
}

/* ---------------------------------------------------------------- few row blocks: slices
 * Too few row blocks to share out (a weight gradient dY^T X, say): each
 * thread takes one slice of C, whole panels of rows (when M >= N) or of
 * columns, and runs gemm_serial on it alone, packing its own op(A) and op(B)
 * for the slice. The other operand is then packed once per thread, but
 * nothing a thread reads was written by another core and there is no
 * hand-off inside the call. On two cores this measured faster than packing
 * shared by both threads: 256 x 256 x 1024 (ta) ran 1.89x and 1.92x faster
 * than on one thread, against 1.52x and 1.65x (two runs, each the median of
 * 15 pairs of batches); 256 x 1024 x 1024 1.94x against 1.77x. */
typedef struct {
    const gemm_isa *isa;
    gemm_args g;
    float *C;
    int64_t ldc;
    bool accumulate, by_rows;
    int slices;
} gemm_slices;

static void slice_range(void *vctx, int64_t s0, int64_t s1)
{
    const gemm_slices *sl = vctx;
    const int P = sl->by_rows ? sl->isa->mr : sl->isa->nr, n = sl->by_rows ? sl->g.M : sl->g.N;
    const int panels = (n + P - 1) / P;
    for (int64_t s = s0; s < s1; s++) {
        const int x0 = (int)(s * panels / sl->slices) * P, x1 = (int)((s + 1) * panels / sl->slices) * P;
        const int w = (x1 < n ? x1 : n) - x0;
        gemm_args g = sl->g;
        float *c = sl->C;
        if (sl->by_rows) {
            g.M = w;
            g.A += g.ta ? x0 : x0 * g.lda;
            c += x0 * sl->ldc;
        } else {
            g.N = w;
            g.B += g.tb ? x0 * g.ldb : x0;
            c += x0;
        }
        if (w > 0)
            gemm_serial(sl->isa, &g, c, sl->ldc, sl->accumulate);
    }
}

/* Nothing to multiply (M, N or K zero): C is left as it is, or set to
 * zero when not accumulating. True if so. */
static bool gemm_empty(int M, int N, int K, float *C, int64_t ldc, bool accumulate)
{
    if (M == 0 || N == 0)
        return true;
    if (K > 0)
        return false;
    if (!accumulate)
        for (int i = 0; i < M; i++)
            memset(C + i * ldc, 0, (size_t)N * sizeof(float));
    return true;
}

void tg_k_gemm(bool ta, bool tb, int M, int N, int K, const float *A, const float *B, float *C, bool accumulate)
{
    tg_k_gemm_ld(ta, tb, M, N, K, A, ta ? M : K, B, tb ? K : N, C, N, accumulate);
}

void tg_k_gemm_ld(bool ta, bool tb, int M, int N, int K, const float *A, int64_t lda, const float *B, int64_t ldb,
                  float *C, int64_t ldc, bool accumulate)
{
    if (gemm_empty(M, N, K, C, ldc, accumulate))
        return;
    const gemm_isa *isa = current_isa();
    const gemm_args g = {A, B, M, N, K, lda, ldb, ta, tb};
    /* below about a million multiply-adds a thread hand-off costs more than it saves */
    const int threads = tg_in_parallel_region() ? 1 : tg_get_num_threads();
    const bool par = threads > 1 && (int64_t)M * N * K >= (1 << 20);
    const int m_blocks = (M + isa->mc - 1) / isa->mc;
    if (par && m_blocks >= 2 * threads) {
        gemm_job j = {.g = g, .isa = isa, .C = C, .ldc = ldc, .m_blocks = m_blocks};
        j.bpack = tg_k_scratch(TG_SCRATCH_GEMM_B, b_size(isa, N));
        gemm_sched s = {.base = j, .accumulate = accumulate, .n_pc = (K + KC - 1) / KC};
        tg_parallel_each(sched_run, &s);
        return;
    }
    const int row_panels = (M + isa->mr - 1) / isa->mr, col_panels = (N + isa->nr - 1) / isa->nr;
    if (par && (row_panels >= threads || col_panels >= threads)) {
        const bool by_rows = col_panels < threads || (M >= N && row_panels >= threads);
        gemm_slices sl = {isa, g, C, ldc, accumulate, by_rows, threads};
        /* every thread's pack buffers, for the widest slice: no slice grows them in a later call */
        tg_k_gemm_reserve(by_rows ? N : (col_panels + threads - 1) / threads * isa->nr);
        tg_parallel_for(threads, 1, slice_range, &sl);
        return;
    }
    gemm_serial(isa, &g, C, ldc, accumulate);
}

/* ---------------------------------------------------------------- op(B) packed once
 * K block b (rows b*KC ..) at bp + b*KC*np, np = the panels' width (N up to
 * whole panels), its panel q at + q*NR*kcb (kcb: the block's rows), as
 * pack_b lays out one block; a prefix of a block's rows is the first rows
 * of each of its panels, and the columns past N of the last panel used are
 * computed but not stored, so each element of C gets the bits a fresh pack
 * of just those rows and columns would give. */

static inline int64_t panels_width(const gemm_isa *isa, int N) { return (int64_t)(N + isa->nr - 1) / isa->nr * isa->nr; }

size_t tg_k_gemm_packed_size(int K, int N) { return (size_t)((int64_t)K * panels_width(current_isa(), N)); }

void tg_k_gemm_pack(bool tb, int K, int N, const float *B, int64_t ldb, float *bp)
{
    const gemm_isa *isa = current_isa();
    const gemm_args g = {.B = B, .N = N, .K = K, .ldb = ldb, .tb = tb};
    const int64_t np = panels_width(isa, N);
    for (int pc = 0; pc < K && N > 0; pc += KC)
        isa->pack_b(&g, 0, N, pc, K - pc < KC ? K - pc : KC, bp + pc * np);
}

void tg_k_gemm_packed(bool ta, int M, int N, int K, const float *A, int64_t lda, const float *bp, int k0, int pK,
                      int pN, float *C, int64_t ldc, bool accumulate)
{
    if (gemm_empty(M, N, K, C, ldc, accumulate))
        return;
    if (N > pN || k0 < 0 || K > pK - k0)
        tg_error("tg_k_gemm_packed", "columns 0:%d and rows %d:%d of a packed op(B) of %d x %d", N, k0, k0 + K, pK,
                 pN);
    const gemm_isa *isa = current_isa();
    const int NR = isa->nr, MC = isa->mc;
    const int64_t np = panels_width(isa, pN);
    const gemm_args g = {.A = A, .M = M, .K = K, .lda = lda, .ta = ta};
    float *ap = tg_k_scratch(TG_SCRATCH_GEMM_A, a_size(isa, MC, KC));
    for (int ks = k0; ks < k0 + K;) {
        const int pc = ks / KC * KC, kcb = pK - pc < KC ? pK - pc : KC; /* the block of op(B) and its rows */
        const int ke = pc + KC < k0 + K ? pc + KC : k0 + K, kc = ke - ks;
        const float *bblock = bp + pc * np + (int64_t)(ks - pc) * NR;
        const bool add = accumulate || ks > k0;
        for (int i0 = 0; i0 < M; i0 += MC) {
            const int mc = M - i0 < MC ? M - i0 : MC;
            isa->pack_a(&g, i0, mc, ks - k0, kc, ap);
            block_tiles(isa, kc, ap, mc, bblock, (int64_t)NR * kcb, N, C + i0 * ldc, ldc, add);
        }
        ks = ke;
    }
}

/* tensor/rowmath.h — row bodies shared by the composed kernels and the fused
 * attention, so both give the same bits (private to tensor/ and autograd/):
 *   tensor/kernels.c         softmax rows (forward and backward, stride 1)
 *   autograd/ops_nn.c        tg_dropout and its backward
 *   autograd/ops_attention.c the fused attention's rows
 *
 * Sums run in TG_ROW_LANES partial sums, element c into lane c % 16, added
 * at the end in a fixed tree: plain C whose result does not depend on the
 * vector width the compiler picks, so every target clone and every caller
 * gets the same float. A row that continues with zeros (the masked half of a
 * causal row after exp) sums to the same bits as the row cut before them.
 * Call them from TG_TARGET_CLONES functions so they vectorise.
 */
#ifndef TG_ROWMATH_H
#define TG_ROWMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "fastmath.h"

#define TG_ROW_LANES 16

/* inlined into each caller, so every target clone gets its own vector code */
#if defined(__GNUC__)
#define TG_ROW static inline __attribute__((always_inline))
#else
#define TG_ROW static inline
#endif

/* The 16 lanes as one GNU C vector (gcc and clang): the compiler maps it to
 * one zmm, two ymm or four xmm registers; the lanes' arithmetic is the same
 * float operations whichever it picks. */
typedef float tg_row_vec __attribute__((vector_size(TG_ROW_LANES * sizeof(float))));
typedef int32_t tg_row_ivec __attribute__((vector_size(TG_ROW_LANES * sizeof(float))));
/* halves, quarters and eighths of it, for the trees that end a row */
typedef float tg_row_vec8 __attribute__((vector_size(8 * sizeof(float))));
typedef float tg_row_vec4 __attribute__((vector_size(4 * sizeof(float))));
typedef float tg_row_vec2 __attribute__((vector_size(2 * sizeof(float))));
typedef int32_t tg_row_ivec8 __attribute__((vector_size(8 * sizeof(float))));
typedef int32_t tg_row_ivec4 __attribute__((vector_size(4 * sizeof(float))));

/* *v = x[c : c + 16], the lanes at or past n set to pad (vectors go by
 * pointer: by value they would change the ABI between target clones) */
TG_ROW void tg_row_load(tg_row_vec *v, const float *x, int c, int n, float pad)
{
    if (c + TG_ROW_LANES <= n) {
        memcpy(v, x + c, sizeof *v);
    } else {
        float t[TG_ROW_LANES];
        for (int l = 0; l < TG_ROW_LANES; l++)
            t[l] = c + l < n ? x[c + l] : pad;
        memcpy(v, t, sizeof *v);
    }
}

/* the tree lane[l] += lane[l + w] for w = 8, 4, 2, 1, as halves of
 * vectors added (one instruction a level, where gcc's loop over the lanes
 * went through memory, one float at a time); the same additions */
TG_ROW float tg_row_lanes_total(const tg_row_vec *v)
{
    tg_row_vec8 h8[2];
    tg_row_vec4 h4[2];
    tg_row_vec2 h2[2];
    memcpy(h8, v, sizeof h8);
    const tg_row_vec8 s8 = h8[0] + h8[1];
    memcpy(h4, &s8, sizeof h4);
    const tg_row_vec4 s4 = h4[0] + h4[1];
    memcpy(h2, &s4, sizeof h2);
    const tg_row_vec2 s2 = h2[0] + h2[1];
    return s2[0] + s2[1];
}

/* sum of x[0:n]; the zeros padding the last vector change no lane (a lane
 * starts at +0 and never becomes -0) */
TG_ROW float tg_row_sum(const float *restrict x, int n)
{
    tg_row_vec acc = {0}, v;
    for (int c = 0; c < n; c += TG_ROW_LANES) {
        tg_row_load(&v, x, c, n, 0.0f);
        acc += v;
    }
    return tg_row_lanes_total(&acc);
}

/* sum of x[c] * y[c] over c < n */
TG_ROW float tg_row_dot(const float *restrict x, const float *restrict y, int n)
{
    tg_row_vec acc = {0}, vx, vy;
    for (int c = 0; c < n; c += TG_ROW_LANES) {
        tg_row_load(&vx, x, c, n, 0.0f);
        tg_row_load(&vy, y, c, n, 0.0f);
        acc += vx * vy;
    }
    return tg_row_lanes_total(&acc);
}

/* max of x[0:n] (NaNs skipped: x > m is false, m stays), -inf for n = 0:
 * exact in any order */
TG_ROW float tg_row_max(const float *restrict x, int n)
{
    tg_row_vec acc = {0}, v;
    acc -= INFINITY;
    for (int c = 0; c < n; c += TG_ROW_LANES) {
        tg_row_load(&v, x, c, n, -INFINITY);
        const tg_row_ivec gt = v > acc;
        acc = (tg_row_vec)(((tg_row_ivec)v & gt) | ((tg_row_ivec)acc & ~gt));
    }
    /* lane[l] = lane[l + w] > lane[l] ? lane[l + w] : lane[l], w = 8, 4, 2, 1,
     * on vector halves as in tg_row_lanes_total */
    tg_row_vec8 h8[2];
    tg_row_vec4 h4[2];
    memcpy(h8, &acc, sizeof h8);
    const tg_row_ivec8 g8 = h8[1] > h8[0];
    const tg_row_vec8 s8 = (tg_row_vec8)(((tg_row_ivec8)h8[1] & g8) | ((tg_row_ivec8)h8[0] & ~g8));
    memcpy(h4, &s8, sizeof h4);
    const tg_row_ivec4 g4 = h4[1] > h4[0];
    const tg_row_vec4 s4 = (tg_row_vec4)(((tg_row_ivec4)h4[1] & g4) | ((tg_row_ivec4)h4[0] & ~g4));
    const float a0 = s4[2] > s4[0] ? s4[2] : s4[0], a1 = s4[3] > s4[1] ? s4[3] : s4[1];
    return a1 > a0 ? a1 : a0;
}

/* y = exp(x - max), *sum = their sum; returns the max (0 for an all -inf
 * row). log_softmax's rows. */
TG_ROW float tg_row_softmax_exp(const float *restrict x, float *restrict y, int n, float *sum)
{
    float mx = tg_row_max(x, n);
    if (mx == -INFINITY)
        mx = 0.0f;
    for (int c = 0; c < n; c++)
        y[c] = tg_fast_expf(x[c] - mx);
    *sum = tg_row_sum(y, n);
    return mx;
}

/* y = softmax(y) over the row, in place */
TG_ROW void tg_row_softmax(float *y, int n)
{
    float mx = tg_row_max(y, n);
    if (mx == -INFINITY)
        mx = 0.0f; /* an all -inf row: exps of 0, 0/0 = nan as torch */
    for (int c = 0; c < n; c++)
        y[c] = tg_fast_expf(y[c] - mx);
    const float inv = 1.0f / tg_row_sum(y, n);
    for (int c = 0; c < n; c++)
        y[c] *= inv;
}

/* ---------------------------------------------------------------- dropout bits
 * bit e % 64 of bits[e / 64] set: element e is kept (tg_random_bits). The
 * dropout factor is torch's noise, keep ? 1/(1-p) : 0, and outputs are
 * x * noise as torch's (so an inf dropped gives nan, as there). */

/* the bits of elements e .. e + cnt - 1 (cnt <= 32) in the low bits */
TG_ROW uint32_t tg_bits_window(const uint64_t *bits, int64_t e, int cnt)
{
    const int64_t w = e >> 6;
    const int o = (int)(e & 63);
    uint64_t v = bits[w] >> o;
    if (o + cnt > 64)
        v |= bits[w + 1] << (64 - o);
    return (uint32_t)v;
}

/* y[c] = x[c] * noise(e0 + c) for c < n */
TG_ROW void tg_row_dropout(const uint64_t *bits, int64_t e0, float scale, const float *restrict x,
                                  float *restrict y, int n)
{
    for (int c = 0; c < n; c += 32) {
        const int cnt = n - c < 32 ? n - c : 32;
        const uint32_t m = tg_bits_window(bits, e0 + c, cnt);
        for (int l = 0; l < cnt; l++)
            y[c + l] = x[c + l] * ((m >> l & 1u) ? scale : 0.0f);
    }
}

/* the same in place: y[c] *= noise(e0 + c) */
TG_ROW void tg_row_dropout_inplace(const uint64_t *bits, int64_t e0, float scale, float *y, int n)
{
    for (int c = 0; c < n; c += 32) {
        const int cnt = n - c < 32 ? n - c : 32;
        const uint32_t m = tg_bits_window(bits, e0 + c, cnt);
        for (int l = 0; l < cnt; l++)
            y[c + l] = y[c + l] * ((m >> l & 1u) ? scale : 0.0f);
    }
}

/* gx[c] += gy[c] * noise(e0 + c) for c < n: dropout's backward */
TG_ROW void tg_row_dropout_backward(const uint64_t *bits, int64_t e0, float scale,
                                           const float *restrict gy, float *restrict gx, int n)
{
    for (int c = 0; c < n; c += 32) {
        const int cnt = n - c < 32 ? n - c : 32;
        const uint32_t m = tg_bits_window(bits, e0 + c, cnt);
        for (int l = 0; l < cnt; l++)
            gx[c + l] += gy[c + l] * ((m >> l & 1u) ? scale : 0.0f);
    }
}

#endif /* TG_ROWMATH_H */

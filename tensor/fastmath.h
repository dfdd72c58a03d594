/* tensor/fastmath.h — branch-free expf and tanhf the compiler can vectorise
 * (libm's are calls, one element at a time). Private to the kernels.
 *
 * tg_fast_expf: Cephes' expf — x = n*ln2 + r, |r| <= ln2/2, a degree-6
 * polynomial for e^r, then 2^n through the exponent bits; within 2 ulp of
 * expf over the float range (denormal results included), exactly 0 below
 * -103.97 (so exp(-inf) = 0, as a masked softmax needs), inf above 88.72.
 * tg_fast_expf_normal: the same for x in [-87, 88] only (the caller
 * clamps), where e^x is a normal float: the same polynomial and n, with 2^n
 * applied by one multiply, so the same value as tg_fast_expf, in fewer
 * operations (no clamps, no NaN select, no halves).
 * tg_fast_tanhf: Cephes' tanhf — an odd polynomial below |x| = 0.625, else
 * 1 - 2 / (e^(2|x|) + 1) with the sign of x; within 2 ulp of tanhf. */
#ifndef TG_FASTMATH_H
#define TG_FASTMATH_H

#include <stdint.h>
#include <string.h>

/* e^(x - n ln2) for n = round(x / ln2): Cody-Waite's two-part ln2, then
 * Cephes' degree-6 polynomial for e^r, |r| <= ln2/2 */
static inline float tg_fast_exp_reduced(float x, float n)
{
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    const float r2 = r * r;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    return p * r2 + r + 1.0f;
}

static inline float tg_fast_expf(float x)
{
    const float hi = 88.72283935546875f, lo = -103.972084f;
    const float xc = x > hi ? hi : (x < lo ? lo : x);
    /* n = round(x / ln2) by the magic-number trick (no libm call) */
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    const float n = (xc * 1.44269504088896341f + magic) - magic;
    const float p = tg_fast_exp_reduced(xc, n);
    /* scale by 2^n, n in [-150, 128], in two halves that are each a normal
     * float, so a denormal result is rounded once, by the last multiply */
    const int32_t ni = (int32_t)n;
    const int32_t n1 = ni >> 1, n2 = ni - n1;
    uint32_t b1 = (uint32_t)(n1 + 127) << 23, b2 = (uint32_t)(n2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    float y = p * s1 * s2;
    y = x < lo ? 0.0f : y;
    y = x > hi ? __builtin_inff() : y;
    return x != x ? x : y;
}

static inline float tg_fast_expf_normal(float x)
{
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    const float t = x * 1.44269504088896341f + magic;
    const float n = t - magic;
    const float p = tg_fast_exp_reduced(x, n);
    /* t's bits are magic's plus n, and magic's shifted by 23 leave 32 bits:
     * (bits(t) << 23) + (127 << 23) is the float 2^n */
    uint32_t b;
    memcpy(&b, &t, sizeof b);
    b = (b << 23) + (127u << 23);
    float s;
    memcpy(&s, &b, sizeof s);
    return p * s;
}

static inline float tg_fast_tanhf(float x)
{
    const float a = x < 0.0f ? -x : x;
    /* small |x|: odd minimax polynomial */
    const float z = x * x;
    float p = -5.70498872745E-3f;
    p = p * z + 2.06390887954E-2f;
    p = p * z - 5.37397155531E-2f;
    p = p * z + 1.33314422036E-1f;
    p = p * z - 3.33332819422E-1f;
    const float small = p * z * x + x;
    /* large |x|: 1 - 2 / (e^(2|x|) + 1), saturating to 1 */
    const float e = tg_fast_expf(2.0f * (a < 20.0f ? a : 20.0f));
    float big = 1.0f - 2.0f / (e + 1.0f);
    big = x < 0.0f ? -big : big;
    const float y = a < 0.625f ? small : big;
    return x != x ? x : y;
}

#endif

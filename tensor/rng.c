/* tensor/rng.c — PyTorch's CPU generator, reproduced.
 *
 * torch's CPUGeneratorImpl is a plain mt19937 seeded with init_genrand(seed).
 * On top of it (ATen's core/DistributionsHelper.h and TransformationHelper.h):
 *   float uniform : (u32 & 0xFFFFFF) * 2^-24, then * (to - from) + from in float,
 *                   fused into one fma as torch's vectorised build does
 *   double uniform: (u64 & (2^53-1)) * 2^-53, u64 = (first draw << 32) | second
 *   bernoulli(p)  : double uniform < p, one per element, in order
 *   normal, numel >= 16 (contiguous float): fill with float uniforms, then
 *                   Box-Muller on pairs (j, j+8) of every 16-block with torch's
 *                   AVX2 log/sincos (emulated exactly below); a ragged tail
 *                   redraws and redoes the last 16 elements
 *   normal, numel < 16: per element, double Box-Muller with a cached second
 *                   value (u1 -> angle, u2 -> radius through log1p(-u2))
 */
#include "tensor.h"
#include "kernels.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define RNG_X86 1
#endif

#define TG_PI 3.14159265358979323846

#define MT_N 624
#define MT_M 397

void tg_manual_seed(tg_generator *g, uint64_t seed)
{
    tg_check_ptr("tg_manual_seed", g, "generator");
    g->seed = seed;
    g->state[0] = (uint32_t)(seed & 0xffffffffu);
    for (int j = 1; j < MT_N; j++)
        g->state[j] = 1812433253u * (g->state[j - 1] ^ (g->state[j - 1] >> 30)) + (uint32_t)j;
    g->index = MT_N;
    g->has_next_double_normal = false;
    g->next_double_normal = 0.0;
}

tg_generator *tg_default_generator(void)
{
    static tg_generator g;
    static bool seeded;
    if (!seeded) {
        tg_manual_seed(&g, 67280421310721ull); /* torch's default_rng_seed_val */
        seeded = true;
    }
    return &g;
}

/* One mt19937 twist of the whole state. Branch-free (the lookup table
 * mag01[y & 1] is -(y & 1) & 0x9908b0df), in three ranges where every read
 * is independent of the writes of a 16-wide vector, so it vectorises:
 *   k < 227         reads s[k + 1], s[k + 397]: all still old
 *   227 <= k < 623  reads s[k - 227]: new, written at least 227 words before
 *   k = 623         wraps to s[0] (new) and s[396] (new). */
static inline uint32_t twist_word(uint32_t a, uint32_t b, uint32_t m)
{
    const uint32_t y = (a & 0x80000000u) | (b & 0x7fffffffu);
    return m ^ (y >> 1) ^ (-(y & 1u) & 0x9908b0dfu);
}

TG_TARGET_CLONES
static void mt_twist(tg_generator *g)
{
    uint32_t *s = g->state;
    for (int k = 0; k < MT_N - MT_M; k++)
        s[k] = twist_word(s[k], s[k + 1], s[k + MT_M]);
    for (int k = MT_N - MT_M; k < MT_N - 1; k++)
        s[k] = twist_word(s[k], s[k + 1], s[k - (MT_N - MT_M)]);
    s[MT_N - 1] = twist_word(s[MT_N - 1], s[0], s[MT_M - 1]);
    g->index = 0;
}

static inline uint32_t temper(uint32_t y)
{
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= (y >> 18);
    return y;
}

uint32_t tg_random_u32(tg_generator *g)
{
    if (g->index >= MT_N)
        mt_twist(g);
    return temper(g->state[g->index++]);
}

uint64_t tg_random_u64(tg_generator *g)
{
    uint64_t hi = tg_random_u32(g);
    uint64_t lo = tg_random_u32(g);
    return (hi << 32) | lo;
}

double tg_random_double(tg_generator *g)
{
    return (double)(tg_random_u64(g) & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0);
}

float tg_random_float(tg_generator *g)
{
    return (float)(tg_random_u32(g) & 0xFFFFFFu) * (1.0f / 16777216.0f);
}

void tg_uniform_(tg_tensor *t, float from, float to, tg_generator *g)
{
    tg_check_ptr("tg_uniform_", t, "tensor");
    g = g ? g : tg_default_generator();
    if (!(from <= to))
        tg_error("tg_uniform_", "expects from <= to, but got from=%g to=%g", from, to);
    const float range = to - from;
    for (int64_t i = 0; i < t->numel; i++)
        t->data[i] = fmaf(tg_random_float(g), range, from); /* torch's AVX2 kernel fuses this */
}

static double normal_double(tg_generator *g)
{
    if (g->has_next_double_normal) {
        g->has_next_double_normal = false;
        return g->next_double_normal;
    }
    const double u1 = tg_random_double(g);
    const double u2 = tg_random_double(g);
    const double r = sqrt(-2.0 * log1p(-u2));
    const double theta = 2.0 * TG_PI * u1;
    g->next_double_normal = r * sin(theta);
    g->has_next_double_normal = true;
    return r * cos(theta);
}

/* torch's normal_fill_16_AVX2 (ATen cpu/DistributionKernels.cpp, with
 * log256_ps and sincos256_ps from cpu/avx_mathfun.h, Cephes polynomials),
 * one lane at a time, in its exact float operations — including the fused
 * multiply-adds its build contracts (a product whose only use is an add) —
 * so randn / normal_ of >= 16 values equal torch's bit for bit on the x86
 * machines torch runs its AVX2 kernels on. */
static inline uint32_t f2u(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float u2f(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static float log_avx_mathfun(float x)
{
    const bool invalid = x <= 0.0f;
    const float min_norm = u2f(0x00800000u);
    x = x > min_norm ? x : min_norm;
    int32_t imm0 = (int32_t)(f2u(x) >> 23) - 0x7f;
    x = u2f((f2u(x) & ~0x7f800000u) | f2u(0.5f));
    float e = (float)imm0 + 1.0f;
    const bool below = x < 0.707106781186547524f;
    const float tmp = below ? x : 0.0f;
    x = x - 1.0f;
    e = e - (below ? 1.0f : 0.0f);
    x = x + tmp;
    const float z = x * x;
    float y = 7.0376836292E-2f;
    y = fmaf(y, x, -1.1514610310E-1f);
    y = fmaf(y, x, 1.1676998740E-1f);
    y = fmaf(y, x, -1.2420140846E-1f);
    y = fmaf(y, x, 1.4249322787E-1f);
    y = fmaf(y, x, -1.6668057665E-1f);
    y = fmaf(y, x, 2.0000714765E-1f);
    y = fmaf(y, x, -2.4999993993E-1f);
    y = fmaf(y, x, 3.3333331174E-1f);
    y = y * x;
    const float eq1 = e * -2.12194440e-4f;
    y = fmaf(y, z, eq1);
    y = fmaf(-z, 0.5f, y);
    x = x + y;
    x = fmaf(e, 0.693359375f, x);
    return invalid ? u2f(0xffffffffu) : x; /* NaN */
}

static void sincos_avx_mathfun(float xin, float *s, float *c)
{
    uint32_t sign_sin = f2u(xin) & 0x80000000u;
    float x = u2f(f2u(xin) & 0x7fffffffu);
    int32_t j = (int32_t)(x * 1.27323954473516f); /* 4/pi, truncated */
    j = (j + 1) & ~1;
    const float y0 = (float)j;
    const uint32_t swap_sign_sin = (uint32_t)(j & 4) << 29;
    const bool poly_cos_for_sin = (j & 2) == 0;
    x = fmaf(y0, -0.78515625f, x);
    x = fmaf(y0, -2.4187564849853515625e-4f, x);
    x = fmaf(y0, -3.77489497744594108e-8f, x);
    const uint32_t sign_cos = (uint32_t)(~(j - 2) & 4) << 29;
    sign_sin ^= swap_sign_sin;
    const float z = x * x;
    float y = 2.443315711809948E-005f; /* cos polynomial, 0 <= x <= pi/4 */
    y = fmaf(y, z, -1.388731625493765E-003f);
    y = fmaf(y, z, 4.166664568298827E-002f);
    y = y * z;
    const float half_z = z * 0.5f;
    y = fmaf(y, z, -half_z);
    y = y + 1.0f;
    float y2 = -1.9515295891E-4f; /* sin polynomial */
    y2 = fmaf(y2, z, 8.3321608736E-3f);
    y2 = fmaf(y2, z, -1.6666654611E-1f);
    y2 = y2 * z;
    y2 = fmaf(y2, x, x);
    const float ysin = poly_cos_for_sin ? y2 : y, ycos = poly_cos_for_sin ? y : y2;
    /* torch adds the selected value to a zero: (y - 0) + 0, the same float */
    *s = u2f(f2u(ysin + 0.0f) ^ sign_sin);
    *c = u2f(f2u(ycos + 0.0f) ^ sign_cos);
}

static void normal_fill_16(float *d, float mean, float std)
{
    const float two_pi = (float)(2.0 * TG_PI);
    for (int j = 0; j < 8; j++) {
        const float u1 = 1.0f - d[j]; /* [0,1) -> (0,1] for the log */
        const float u2 = d[j + 8];
        const float radius = sqrtf(-2.0f * log_avx_mathfun(u1));
        const float theta = two_pi * u2;
        float st, ct;
        sincos_avx_mathfun(theta, &st, &ct);
        const float n1 = radius * ct, n2 = radius * st;
        d[j] = fmaf(n1, std, mean);
        d[j + 8] = fmaf(n2, std, mean);
    }
}

void tg_normal_(tg_tensor *t, float mean, float std, tg_generator *g)
{
    tg_check_ptr("tg_normal_", t, "tensor");
    g = g ? g : tg_default_generator();
    if (!(std >= 0.0f))
        tg_error("tg_normal_", "expects std >= 0.0, but found std %g", std);
    const int64_t n = t->numel;
    float *d = t->data;
    if (n >= 16) {
        for (int64_t i = 0; i < n; i++)
            d[i] = tg_random_float(g);
        for (int64_t i = 0; i + 16 <= n; i += 16)
            normal_fill_16(d + i, mean, std);
        if (n % 16 != 0) {
            float *tail = d + n - 16;
            for (int i = 0; i < 16; i++)
                tail[i] = tg_random_float(g);
            normal_fill_16(tail, mean, std);
        }
    } else {
        for (int64_t i = 0; i < n; i++)
            d[i] = (float)(normal_double(g) * (double)std + (double)mean);
    }
}

/* v[k] for k < take from the tempered pairs of raw state words s[2k], s[2k+1]:
 * u = m * 2^-53 < p with m the low 53 bits of (first << 32 | second), which
 * for an integer m is m < ceil(p * 2^53) (p * 2^53 is exact in double). */
TG_TARGET_CLONES
static void mask_block(const uint32_t *restrict s, int64_t take, uint64_t threshold, float on, float *restrict v)
{
    for (int64_t k = 0; k < take; k++) {
        const uint64_t hi = temper(s[2 * k]), lo = temper(s[2 * k + 1]);
        const uint64_t m = ((hi << 32) | lo) & ((1ull << 53) - 1);
        v[k] = m < threshold ? on : 0.0f;
    }
}

void tg_random_mask(tg_generator *g, int64_t n, double p, float on, float *v)
{
    g = g ? g : tg_default_generator();
    if (n > 0)
        tg_check_ptr("tg_random_mask", v, "output");
    const uint64_t threshold = (uint64_t)ceil(p * 9007199254740992.0);
    int64_t i = 0;
    while (i < n) {
        if (g->index >= MT_N)
            mt_twist(g);
        /* draw pairs straight from the state block while two are left */
        const int avail = (MT_N - g->index) / 2;
        const int64_t take = n - i < avail ? n - i : avail;
        mask_block(g->state + g->index, take, threshold, on, v + i);
        g->index += (int)(2 * take);
        i += take;
        if (take == 0 && i < n) { /* one word left in this block: straddle */
            v[i] = tg_random_double(g) < p ? on : 0.0f;
            i++;
        }
    }
}

/* bits[e / 64] bit e % 64 |= (double uniform < p) for e = k0 + k, k < take.
 * The 53-bit compare m < threshold in 32-bit halves (m's high part is the
 * first word's low 21 bits), a byte per draw the compiler vectorises, the
 * bytes packed 8 at a time by one multiply (byte i's bit lands at 56 + i). */
static inline uint8_t keep_draw(const uint32_t *s, int64_t k, uint32_t th_hi, uint32_t th_lo)
{
    const uint32_t hi = temper(s[2 * k]) & 0x1fffffu, lo = temper(s[2 * k + 1]);
    return (uint8_t)((hi < th_hi) | ((hi == th_hi) & (lo < th_lo)));
}

static inline uint64_t pack_bytes(const uint8_t b[64])
{
    uint64_t w = 0;
    for (int g8 = 0; g8 < 8; g8++) {
        uint64_t x;
        memcpy(&x, b + 8 * g8, sizeof x);
        w |= ((x * 0x0102040810204080ull) >> 56) << (8 * g8);
    }
    return w;
}

TG_TARGET_CLONES
static void bits_block(const uint32_t *restrict s, int64_t k0, int64_t take, uint64_t threshold,
                       uint64_t *restrict bits)
{
    const uint32_t th_hi = (uint32_t)(threshold >> 32), th_lo = (uint32_t)threshold;
    for (int64_t k = 0; k < take; k += 64) {
        const int cnt = take - k < 64 ? (int)(take - k) : 64, off = (int)((k0 + k) & 63);
        uint8_t b[64];
        if (cnt == 64) {
            for (int i = 0; i < 64; i++)
                b[i] = keep_draw(s, k + i, th_hi, th_lo);
        } else {
            memset(b, 0, sizeof b);
            for (int i = 0; i < cnt; i++)
                b[i] = keep_draw(s, k + i, th_hi, th_lo);
        }
        const uint64_t w = pack_bytes(b);
        const int64_t wi = (k0 + k) >> 6;
        bits[wi] |= w << off;
        if (off && off + cnt > 64)
            bits[wi + 1] |= w >> (64 - off);
    }
}

/* The same with AVX-512 at any bit offset, 8 draws (16 words) per vector:
 * temper 16 lanes, swap the halves of each 64-bit lane (the first word is
 * the high one), keep 53 bits, one unsigned compare gives 8 keep bits; two
 * vectors a step while 16 draws are left. */
#ifdef RNG_X86
#define RNG_AVX512 __attribute__((target("avx512f")))

static inline RNG_AVX512 __m512i temper16(__m512i y)
{
    y = _mm512_xor_si512(y, _mm512_srli_epi32(y, 11));
    y = _mm512_xor_si512(y, _mm512_and_si512(_mm512_slli_epi32(y, 7), _mm512_set1_epi32((int)0x9d2c5680u)));
    y = _mm512_xor_si512(y, _mm512_and_si512(_mm512_slli_epi32(y, 15), _mm512_set1_epi32((int)0xefc60000u)));
    return _mm512_xor_si512(y, _mm512_srli_epi32(y, 18));
}

/* the 53-bit values (first << 32 | second) of 8 tempered pairs */
static inline RNG_AVX512 __m512i draws8(__m512i words)
{
    const __m512i low53 = _mm512_set1_epi64((long long)((1ull << 53) - 1));
    return _mm512_and_si512(_mm512_ror_epi64(temper16(words), 32), low53);
}

RNG_AVX512 static void bits_block_avx512(const uint32_t *s, int64_t k0, int64_t take, uint64_t threshold,
                                         uint64_t *bits)
{
    const __m512i th = _mm512_set1_epi64((long long)threshold);
    int64_t wi = k0 >> 6, k = 0;
    uint64_t acc = 0; /* the bits of word wi drawn so far */
    for (; k + 16 <= take; k += 16) { /* 16 draws from two vectors */
        const __mmask8 lo = _mm512_cmplt_epu64_mask(draws8(_mm512_loadu_si512(s + 2 * k)), th);
        const __mmask8 hi = _mm512_cmplt_epu64_mask(draws8(_mm512_loadu_si512(s + 2 * k + 16)), th);
        const uint64_t keep = _cvtmask16_u32(_mm512_kunpackb(hi, lo));
        const int off = (int)((k0 + k) & 63);
        acc |= keep << off;
        if (off + 16 >= 64) { /* word wi is complete; the rest starts wi + 1 */
            bits[wi++] |= acc;
            acc = keep >> (64 - off);
        }
    }
    for (; k < take; k += 8) { /* the last < 16, by masked loads */
        const int cnt = take - k < 8 ? (int)(take - k) : 8, off = (int)((k0 + k) & 63);
        const __m512i m = draws8(_mm512_maskz_loadu_epi32((__mmask16)((1u << (2 * cnt)) - 1u), s + 2 * k));
        const uint64_t keep = _mm512_mask_cmplt_epu64_mask((__mmask8)((1u << cnt) - 1u), m, th);
        acc |= keep << off;
        if (off + cnt >= 64) {
            bits[wi++] |= acc;
            acc = keep >> (64 - off);
        }
    }
    if (acc)
        bits[wi] |= acc;
}
#endif

static bool g_bits_portable; /* tests: the portable path on an AVX-512 CPU */

bool tg_k_random_bits_portable(bool on)
{
    const bool was = g_bits_portable;
    g_bits_portable = on;
    return was;
}

#ifdef RNG_X86
static bool bits_avx512(void)
{
    __builtin_cpu_init();
    return !g_bits_portable && __builtin_cpu_supports("avx512f");
}
#endif

void tg_random_bits(tg_generator *g, int64_t n, double p, uint64_t *bits)
{
    g = g ? g : tg_default_generator();
    if (n <= 0)
        return;
    tg_check_ptr("tg_random_bits", bits, "output");
    memset(bits, 0, (size_t)((n + 63) / 64) * sizeof *bits);
#ifdef RNG_X86
    const bool fast = bits_avx512();
#endif
    const uint64_t threshold = (uint64_t)ceil(p * 9007199254740992.0);
    int64_t i = 0;
    while (i < n) {
        if (g->index >= MT_N)
            mt_twist(g);
        const int avail = (MT_N - g->index) / 2;
        const int64_t take = n - i < avail ? n - i : avail;
#ifdef RNG_X86
        if (fast)
            bits_block_avx512(g->state + g->index, i, take, threshold, bits);
        else
#endif
            bits_block(g->state + g->index, i, take, threshold, bits);
        g->index += (int)(2 * take);
        i += take;
        if (take == 0 && i < n) { /* one word left in this block: straddle */
            bits[i >> 6] |= (uint64_t)(tg_random_double(g) < p) << (i & 63);
            i++;
        }
    }
}

void tg_bernoulli_(tg_tensor *t, double p, tg_generator *g)
{
    tg_check_ptr("tg_bernoulli_", t, "tensor");
    if (!(p >= 0.0 && p <= 1.0))
        tg_error("tg_bernoulli_", "expects 0 <= p <= 1, but got p=%g", p);
    tg_random_mask(g, t->numel, p, 1.0f, t->data);
}

tg_tensor *tg_rand(tg_generator *g, int ndim, const int *shape)
{
    return tg_uniform(g, 0.0f, 1.0f, ndim, shape);
}

tg_tensor *tg_uniform(tg_generator *g, float from, float to, int ndim, const int *shape)
{
    tg_tensor *t = tg_empty(ndim, shape);
    tg_uniform_(t, from, to, g);
    return t;
}

tg_tensor *tg_randn(tg_generator *g, int ndim, const int *shape)
{
    tg_tensor *t = tg_empty(ndim, shape);
    tg_normal_(t, 0.0f, 1.0f, g);
    return t;
}

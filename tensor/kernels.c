/* tensor/kernels.c — elementwise, broadcast, row-wise and permute kernels.
 * (gemm lives in tensor/gemm.c.) */
#include "kernels.h"

#include "fastmath.h"

/* Elementwise work is split into ranges of about this many elements on the
 * thread pool. */
#define TG_ELEM_CHUNK 32768

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- broadcasting */

bool tg_bcast_init(tg_bcast *bc, int na, const int *a, int nb, const int *b, int *out_ndim)
{
    int nd = na > nb ? na : nb;
    int as[TG_MAX_DIMS], bs[TG_MAX_DIMS];
    for (int i = 0; i < TG_MAX_DIMS; i++) {
        int ia = i - (TG_MAX_DIMS - na), ib = i - (TG_MAX_DIMS - nb);
        as[i] = ia >= 0 ? a[ia] : 1;
        bs[i] = ib >= 0 ? b[ib] : 1;
        if (as[i] != bs[i] && as[i] != 1 && bs[i] != 1)
            return false;
        bc->shape[i] = as[i] == 1 ? bs[i] : as[i];
    }
    int64_t sa = 1, sb = 1;
    for (int i = TG_MAX_DIMS - 1; i >= 0; i--) {
        bc->sa[i] = (as[i] == 1) ? 0 : sa;
        bc->sb[i] = (bs[i] == 1) ? 0 : sb;
        sa *= as[i];
        sb *= bs[i];
    }
    if (out_ndim)
        *out_ndim = nd;
    return true;
}

/* One inner row of a binary op: n elements, strides a_s, b_s (0 or 1 mostly). */
#define BIN_ROW(EXPR)                                                                      \
    do {                                                                                   \
        if (a_s == 1 && b_s == 1)                                                          \
            for (int i = 0; i < n; i++) { float x = pa[i], y = pb[i]; po[i] = (EXPR); }    \
        else if (a_s == 1 && b_s == 0) {                                                   \
            const float y = pb[0];                                                         \
            for (int i = 0; i < n; i++) { float x = pa[i]; po[i] = (EXPR); }               \
        } else if (a_s == 0 && b_s == 1) {                                                 \
            const float x = pa[0];                                                         \
            for (int i = 0; i < n; i++) { float y = pb[i]; po[i] = (EXPR); }               \
        } else                                                                             \
            for (int i = 0; i < n; i++) { float x = pa[i * a_s], y = pb[i * b_s]; po[i] = (EXPR); } \
    } while (0)

/* The broadcast index space is rows (i0, i1, i2) of S[3] elements; ranges
 * of rows go to the thread pool. */
typedef struct {
    tg_binop op;
    int which;
    const tg_bcast *bc;
    const float *a, *b, *g;
    float *out;
} binary_job;

static void binary_range(void *vctx, int64_t r0, int64_t r1)
{
    const binary_job *j = vctx;
    const tg_bcast *bc = j->bc;
    const int *S = bc->shape;
    const int n = S[3];
    const int64_t a_s = bc->sa[3], b_s = bc->sb[3];
    for (int64_t r = r0; r < r1; r++) {
        const int64_t i2 = r % S[2], i1 = (r / S[2]) % S[1], i0 = r / ((int64_t)S[2] * S[1]);
        const float *pa = j->a + i0 * bc->sa[0] + i1 * bc->sa[1] + i2 * bc->sa[2];
        const float *pb = j->b + i0 * bc->sb[0] + i1 * bc->sb[1] + i2 * bc->sb[2];
        float *po = j->out + r * n;
        switch (j->op) {
        case TG_BIN_ADD: BIN_ROW(x + y); break;
        case TG_BIN_SUB: BIN_ROW(x - y); break;
        case TG_BIN_MUL: BIN_ROW(x * y); break;
        case TG_BIN_DIV: BIN_ROW(x / y); break;
        }
    }
}

static int64_t bcast_rows(const tg_bcast *bc) { return (int64_t)bc->shape[0] * bc->shape[1] * bc->shape[2]; }

void tg_k_binary(tg_binop op, const tg_bcast *bc, const float *a, const float *b, float *out)
{
    binary_job j = {op, 0, bc, a, b, NULL, out};
    const int64_t n = bc->shape[3] > 0 ? bc->shape[3] : 1;
    tg_parallel_for(bcast_rows(bc), TG_ELEM_CHUNK / n + 1, binary_range, &j);
}

static void binary_backward_range(void *vctx, int64_t r0, int64_t r1)
{
    const binary_job *j = vctx;
    const tg_bcast *bc = j->bc;
    const int *S = bc->shape;
    const int which = j->which;
    const tg_binop op = j->op;
    const int64_t *s = which ? bc->sb : bc->sa;
    for (int64_t r = r0; r < r1; r++) {
        const int64_t i2 = r % S[2], i1 = (r / S[2]) % S[1], i0 = r / ((int64_t)S[2] * S[1]);
        const int64_t ao = i0 * bc->sa[0] + i1 * bc->sa[1] + i2 * bc->sa[2];
        const int64_t bo = i0 * bc->sb[0] + i1 * bc->sb[1] + i2 * bc->sb[2];
        float *gi = j->out + (which ? bo : ao);
        const float *g = j->g + r * S[3];
        const float *pa = j->a ? j->a + ao : NULL, *pb = j->b ? j->b + bo : NULL;
        const int64_t as = bc->sa[3], bs = bc->sb[3], is = s[3];
        for (int i = 0; i < S[3]; i++) {
            float d;
            switch (op) {
            case TG_BIN_ADD: d = g[i]; break;
            case TG_BIN_SUB: d = which ? -g[i] : g[i]; break;
            case TG_BIN_MUL: d = g[i] * (which ? pa[i * as] : pb[i * bs]); break;
            default: /* DIV */
                if (!which)
                    d = g[i] / pb[i * bs];
                else {
                    const float y = pb[i * bs];
                    d = -g[i] * pa[i * as] / (y * y);
                }
                break;
            }
            gi[i * is] += d;
        }
    }
}

void tg_k_binary_backward(tg_binop op, int which, const tg_bcast *bc, const float *a, const float *b,
                          const float *gout, float *gin)
{
    binary_job j = {op, which, bc, a, b, gout, gin};
    /* rows write disjoint parts of gin only when that operand is not
     * broadcast (a zero stride would make rows add into the same place) */
    const int64_t *s = which ? bc->sb : bc->sa;
    bool broadcast = false;
    for (int d = 0; d < TG_MAX_DIMS; d++)
        broadcast |= bc->shape[d] > 1 && s[d] == 0;
    if (broadcast) {
        binary_backward_range(&j, 0, bcast_rows(bc));
        return;
    }
    const int64_t n = bc->shape[3] > 0 ? bc->shape[3] : 1;
    tg_parallel_for(bcast_rows(bc), TG_ELEM_CHUNK / n + 1, binary_backward_range, &j);
}

/* ---------------------------------------------------------------- elementwise */

#define GELU_BETA 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_KAPPA 0.044715f

/* GELU (tanh approximation) and its derivative, torch's GeluBackward
 * (approximate='tanh'); every GELU kernel goes through these two. */
static inline float gelu(float v) { return 0.5f * v * (1.0f + tg_fast_tanhf(GELU_BETA * (v + GELU_KAPPA * v * v * v))); }
static inline float gelu_grad(float v)
{
    const float v2 = v * v;
    const float t = tg_fast_tanhf(GELU_BETA * (v + GELU_KAPPA * v2 * v));
    const float left_d = 0.5f * (1.0f + t);
    const float right_d = 0.5f * v * (1.0f - t * t) * GELU_BETA * (1.0f + 3.0f * GELU_KAPPA * v2);
    return left_d + right_d;
}

TG_TARGET_CLONES
static void unary_serial(tg_unop op, int64_t n, const float *x, float s, float *y)
{
    switch (op) {
    case TG_UN_NEG: for (int64_t i = 0; i < n; i++) y[i] = -x[i]; break;
    case TG_UN_EXP: for (int64_t i = 0; i < n; i++) y[i] = tg_fast_expf(x[i]); break;
    case TG_UN_LOG: for (int64_t i = 0; i < n; i++) y[i] = logf(x[i]); break;
    case TG_UN_SQRT: for (int64_t i = 0; i < n; i++) y[i] = sqrtf(x[i]); break;
    case TG_UN_TANH: for (int64_t i = 0; i < n; i++) y[i] = tg_fast_tanhf(x[i]); break;
    case TG_UN_RELU: for (int64_t i = 0; i < n; i++) y[i] = x[i] < 0.0f ? 0.0f : x[i]; break; /* NaN stays */
    case TG_UN_GELU: for (int64_t i = 0; i < n; i++) y[i] = gelu(x[i]); break;
    case TG_UN_POW:
        if (s == 2.0f)
            for (int64_t i = 0; i < n; i++) y[i] = x[i] * x[i];
        else
            for (int64_t i = 0; i < n; i++) y[i] = powf(x[i], s);
        break;
    case TG_UN_ADDS: for (int64_t i = 0; i < n; i++) y[i] = x[i] + s; break;
    case TG_UN_MULS: for (int64_t i = 0; i < n; i++) y[i] = x[i] * s; break;
    }
}

TG_TARGET_CLONES
static void unary_backward_serial(tg_unop op, int64_t n, const float *x, const float *y, float s,
                                  const float *dy, float *gx)
{
    switch (op) {
    case TG_UN_NEG: for (int64_t i = 0; i < n; i++) gx[i] -= dy[i]; break;
    case TG_UN_EXP: for (int64_t i = 0; i < n; i++) gx[i] += dy[i] * y[i]; break;
    case TG_UN_LOG: for (int64_t i = 0; i < n; i++) gx[i] += dy[i] / x[i]; break;
    case TG_UN_SQRT: for (int64_t i = 0; i < n; i++) gx[i] += dy[i] / (2.0f * y[i]); break;
    case TG_UN_TANH: for (int64_t i = 0; i < n; i++) gx[i] += dy[i] * (1.0f - y[i] * y[i]); break;
    case TG_UN_RELU: for (int64_t i = 0; i < n; i++) gx[i] += x[i] > 0.0f ? dy[i] : 0.0f; break;
    case TG_UN_GELU: for (int64_t i = 0; i < n; i++) gx[i] += dy[i] * gelu_grad(x[i]); break;
    case TG_UN_POW:
        if (s == 0.0f)
            break;
        for (int64_t i = 0; i < n; i++)
            gx[i] += dy[i] * (s * powf(x[i], s - 1.0f));
        break;
    case TG_UN_ADDS: for (int64_t i = 0; i < n; i++) gx[i] += dy[i]; break;
    case TG_UN_MULS: for (int64_t i = 0; i < n; i++) gx[i] += dy[i] * s; break;
    }
}


/* g = g * gelu'(x), in place (the GELU backward onto a fresh gradient) */
TG_TARGET_CLONES
static void gelu_backward_inplace_serial(int64_t n, const float *x, float *g)
{
    for (int64_t i = 0; i < n; i++)
        g[i] = g[i] * gelu_grad(x[i]);
}

typedef struct {
    tg_unop op;
    const float *x, *y, *dy;
    float s;
    float *out;
} unary_job;

static void gelu_backward_inplace_range(void *vctx, int64_t i0, int64_t i1)
{
    const unary_job *j = vctx;
    gelu_backward_inplace_serial(i1 - i0, j->x + i0, j->out + i0);
}

void tg_k_gelu_backward_inplace(int64_t n, const float *x, float *g)
{
    unary_job j = {TG_UN_GELU, x, NULL, NULL, 0.0f, g};
    tg_parallel_for(n, TG_ELEM_CHUNK, gelu_backward_inplace_range, &j);
}

static void unary_range(void *vctx, int64_t i0, int64_t i1)
{
    const unary_job *j = vctx;
    unary_serial(j->op, i1 - i0, j->x + i0, j->s, j->out + i0);
}

void tg_k_unary(tg_unop op, int64_t n, const float *x, float s, float *y)
{
    unary_job j = {op, x, NULL, NULL, s, y};
    tg_parallel_for(n, TG_ELEM_CHUNK, unary_range, &j);
}

static void unary_backward_range(void *vctx, int64_t i0, int64_t i1)
{
    const unary_job *j = vctx;
    unary_backward_serial(j->op, i1 - i0, j->x + i0, j->y ? j->y + i0 : NULL, j->s, j->dy + i0, j->out + i0);
}

void tg_k_unary_backward(tg_unop op, int64_t n, const float *x, const float *y, float s, const float *dy,
                         float *gx)
{
    unary_job j = {op, x, y, dy, s, gx};
    tg_parallel_for(n, TG_ELEM_CHUNK, unary_backward_range, &j);
}

/* ---------------------------------------------------------------- rows */

/* One row of n elements with stride 1: y = softmax(x) or log_softmax(x). */
static inline void softmax_row(const float *restrict px, float *restrict py, int n, bool log)
{
    float mx = -INFINITY;
    for (int i = 0; i < n; i++)
        mx = px[i] > mx ? px[i] : mx;
    if (mx == -INFINITY)
        mx = 0.0f; /* an all -inf row: exp gives 0s, 0/0 = nan as in torch */
    for (int i = 0; i < n; i++)
        py[i] = tg_fast_expf(px[i] - mx);
    float sum = 0.0f;
    for (int i = 0; i < n; i++)
        sum += py[i];
    if (log) {
        const float lse = mx + logf(sum);
        for (int i = 0; i < n; i++)
            py[i] = px[i] - lse;
    } else {
        const float inv = 1.0f / sum;
        for (int i = 0; i < n; i++)
            py[i] *= inv;
    }
}

TG_TARGET_CLONES
static void softmax_serial(const float *x, float *y, int64_t outer, int n, int64_t inner, bool log)
{
    if (inner == 1) {
        for (int64_t o = 0; o < outer; o++)
            softmax_row(x + o * n, y + o * n, n, log);
        return;
    }
    for (int64_t o = 0; o < outer; o++)
        for (int64_t in = 0; in < inner; in++) {
            const float *px = x + o * n * inner + in;
            float *py = y + o * n * inner + in;
            float mx = -INFINITY;
            for (int i = 0; i < n; i++)
                mx = px[i * inner] > mx ? px[i * inner] : mx;
            if (mx == -INFINITY)
                mx = 0.0f;
            float sum = 0.0f;
            for (int i = 0; i < n; i++)
                sum += tg_fast_expf(px[i * inner] - mx);
            if (log) {
                const float lse = mx + logf(sum);
                for (int i = 0; i < n; i++)
                    py[i * inner] = px[i * inner] - lse;
            } else {
                const float inv = 1.0f / sum;
                for (int i = 0; i < n; i++)
                    py[i * inner] = tg_fast_expf(px[i * inner] - mx) * inv;
            }
        }
}

TG_TARGET_CLONES
static void softmax_backward_serial(const float *y, const float *dy, float *gx, int64_t outer, int n,
                                    int64_t inner, bool log)
{
    for (int64_t o = 0; o < outer; o++)
        for (int64_t in = 0; in < inner; in++) {
            const int64_t base = o * n * inner + in;
            const float *py = y + base, *pd = dy + base;
            float *pg = gx + base;
            float dot = 0.0f;
            if (log) {
                for (int i = 0; i < n; i++)
                    dot += pd[i * inner];
                for (int i = 0; i < n; i++)
                    pg[i * inner] += pd[i * inner] - tg_fast_expf(py[i * inner]) * dot;
            } else {
                for (int i = 0; i < n; i++)
                    dot += pd[i * inner] * py[i * inner];
                for (int i = 0; i < n; i++)
                    pg[i * inner] += py[i * inner] * (pd[i * inner] - dot);
            }
        }
}

typedef struct {
    const float *x, *dy;
    float *y;
    int n;
    int64_t inner;
    bool log;
} softmax_job;

static void softmax_range(void *vctx, int64_t o0, int64_t o1)
{
    const softmax_job *j = vctx;
    const int64_t row = j->n * j->inner;
    softmax_serial(j->x + o0 * row, j->y + o0 * row, o1 - o0, j->n, j->inner, j->log);
}

/* outer blocks of [n, inner] go to the thread pool */
void tg_k_softmax(const float *x, float *y, int64_t outer, int n, int64_t inner, bool log)
{
    softmax_job j = {x, NULL, y, n, inner, log};
    const int64_t per = n * inner > 0 ? n * inner : 1;
    tg_parallel_for(outer, TG_ELEM_CHUNK / per + 1, softmax_range, &j);
}

static void softmax_backward_range(void *vctx, int64_t o0, int64_t o1)
{
    const softmax_job *j = vctx; /* x: y (the output), y: gx */
    const int64_t row = j->n * j->inner;
    softmax_backward_serial(j->x + o0 * row, j->dy + o0 * row, j->y + o0 * row, o1 - o0, j->n, j->inner, j->log);
}

void tg_k_softmax_backward(const float *y, const float *dy, float *gx, int64_t outer, int n, int64_t inner,
                           bool log)
{
    softmax_job j = {y, dy, gx, n, inner, log};
    const int64_t per = n * inner > 0 ? n * inner : 1;
    tg_parallel_for(outer, TG_ELEM_CHUNK / per + 1, softmax_backward_range, &j);
}

/* ---------------------------------------------------------------- sums
 * torch's cascade sum (ATen's cpu/SumKernel.cpp), in its exact order of
 * float additions, so sums and means equal torch's to the last bit: blocks
 * of SUM_W lanes (torch's AVX2 vector), four interleaved accumulators (its
 * "ilp"), and four levels of partial sums that each take 2^level_power
 * terms, so only values of similar size are ever added. Lanes are plain
 * float adds, identical whether or not the compiler vectorises them. */
#define SUM_W 8

static int ceil_log2(int64_t x)
{
    int r = 0;
    while (((int64_t)1 << r) < x)
        r++;
    return r;
}

/* For k < nrows, out[k][0..w) = sum over i < size of the w floats at
 * base + i*rs + k*ks (torch's multi_row_sum). */
static void multi_row_sum(const float *base, int64_t rs, int64_t ks, int w, int nrows, int64_t size,
                          float out[4][SUM_W])
{
    enum { LEVELS = 4 };
    int lp = ceil_log2(size) / LEVELS;
    if (lp < 4)
        lp = 4;
    const int64_t step = (int64_t)1 << lp, mask = step - 1;
    float acc[LEVELS][4][SUM_W];
    memset(acc, 0, sizeof acc);
    int64_t i = 0;
    while (i + step <= size) {
        for (int64_t j = 0; j < step; j++, i++)
            for (int k = 0; k < nrows; k++)
                for (int l = 0; l < w; l++)
                    acc[0][k][l] += base[i * rs + k * ks + l];
        for (int j = 1; j < LEVELS; j++) {
            for (int k = 0; k < nrows; k++)
                for (int l = 0; l < w; l++) {
                    acc[j][k][l] += acc[j - 1][k][l];
                    acc[j - 1][k][l] = 0.0f;
                }
            if ((i & (mask << (j * lp))) != 0)
                break;
        }
    }
    for (; i < size; i++)
        for (int k = 0; k < nrows; k++)
            for (int l = 0; l < w; l++)
                acc[0][k][l] += base[i * rs + k * ks + l];
    for (int j = 1; j < LEVELS; j++)
        for (int k = 0; k < nrows; k++)
            for (int l = 0; l < w; l++)
                acc[0][k][l] += acc[j][k][l];
    memcpy(out, acc[0], sizeof acc[0]);
}

/* out[0..w) = sum over i < size of the w floats at base + i*stride, with
 * four interleaved accumulators (torch's row_sum). */
static void row_sum(const float *base, int64_t stride, int w, int64_t size, float *out)
{
    float ps[4][SUM_W];
    const int64_t size_ilp = size / 4;
    multi_row_sum(base, 4 * stride, stride, w, 4, size_ilp, ps);
    for (int64_t i = size_ilp * 4; i < size; i++)
        for (int l = 0; l < w; l++)
            ps[0][l] += base[i * stride + l];
    for (int k = 1; k < 4; k++)
        for (int l = 0; l < w; l++)
            ps[0][l] += ps[k][l];
    memcpy(out, ps[0], (size_t)w * sizeof(float));
}

/* Sum of n contiguous floats (torch's vectorized_inner_sum / scalar path). */
static float inner_sum(const float *x, int64_t n)
{
    float r;
    if (n >= SUM_W) {
        const int64_t vecs = n / SUM_W;
        float v[SUM_W];
        row_sum(x, SUM_W, SUM_W, vecs, v);
        r = 0.0f;
        for (int64_t k = vecs * SUM_W; k < n; k++)
            r += x[k];
        for (int l = 0; l < SUM_W; l++)
            r += v[l];
    } else {
        row_sum(x, 1, 1, n, &r);
    }
    return 0.0f + r; /* torch accumulates into a zeroed output */
}

/* out[c] = sum over i < n of x[i*C + c] (torch's vectorized/scalar outer sum). */
static void outer_sum(const float *x, int64_t n, int64_t C, float *out)
{
    float s[4][SUM_W];
    int64_t j = 0;
    if (C >= SUM_W) {
        for (; j + 4 * SUM_W <= C; j += 4 * SUM_W) {
            multi_row_sum(x + j, C, SUM_W, SUM_W, 4, n, s);
            for (int k = 0; k < 4; k++)
                for (int l = 0; l < SUM_W; l++)
                    out[j + k * SUM_W + l] = 0.0f + s[k][l];
        }
        for (; j + SUM_W <= C; j += SUM_W) {
            row_sum(x + j, C, SUM_W, n, s[0]);
            for (int l = 0; l < SUM_W; l++)
                out[j + l] = 0.0f + s[0][l];
        }
    } else {
        for (; j + 3 < C; j += 4) {
            multi_row_sum(x + j, C, 1, 1, 4, n, s);
            for (int k = 0; k < 4; k++)
                out[j + k] = 0.0f + s[k][0];
        }
    }
    for (; j < C; j++) {
        row_sum(x + j, C, 1, n, s[0]);
        out[j] = 0.0f + s[0][0];
    }
}

float tg_k_sum_all(const float *x, int64_t n) { return inner_sum(x, n); }

void tg_k_sum_dim(const float *x, float *y, int64_t outer, int n, int64_t inner, bool mean)
{
    for (int64_t o = 0; o < outer; o++) {
        const float *px = x + o * n * inner;
        float *py = y + o * inner;
        if (inner == 1)
            py[0] = inner_sum(px, n);
        else
            outer_sum(px, n, inner, py);
        if (mean) /* torch's mean is the sum divided by the count */
            for (int64_t k = 0; k < inner; k++)
                py[k] /= (float)n;
    }
}

void tg_k_max_dim(const float *x, float *y, int32_t *idx, int64_t outer, int n, int64_t inner)
{
    for (int64_t o = 0; o < outer; o++)
        for (int64_t in = 0; in < inner; in++) {
            const float *px = x + o * n * inner + in;
            float mx = px[0];
            int32_t arg = 0;
            for (int i = 1; i < n; i++) {
                const float v = px[i * inner];
                if (v > mx || (isnan(v) && !isnan(mx))) {
                    mx = v;
                    arg = i;
                }
            }
            y[o * inner + in] = mx;
            idx[o * inner + in] = arg;
        }
}

TG_TARGET_CLONES
static void layernorm_serial(const float *x, const float *scale, const float *shift, float *y, float *mean,
                             float *rstd, int64_t rows, int n, float eps)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *px = x + r * n;
        float *py = y + r * n;
        float m = 0.0f;
        for (int i = 0; i < n; i++)
            m += px[i];
        m /= (float)n;
        float v = 0.0f;
        for (int i = 0; i < n; i++) {
            const float d = px[i] - m;
            v += d * d;
        }
        v /= (float)n;
        const float s = 1.0f / sqrtf(v + eps);
        for (int i = 0; i < n; i++)
            py[i] = (px[i] - m) * s * scale[i] + shift[i];
        mean[r] = m;
        rstd[r] = s;
    }
}

TG_TARGET_CLONES
static void layernorm_backward_serial(const float *x, const float *scale, const float *mean, const float *rstd,
                                      const float *dy, float *gx, float *gscale, float *gshift, int64_t rows, int n)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *px = x + r * n, *pd = dy + r * n;
        const float m = mean[r], s = rstd[r];
        float dn_mean = 0.0f, dn_norm_mean = 0.0f;
        for (int i = 0; i < n; i++) {
            const float norm = (px[i] - m) * s;
            const float dn = pd[i] * scale[i];
            dn_mean += dn;
            dn_norm_mean += dn * norm;
            if (gscale)
                gscale[i] += pd[i] * norm;
            if (gshift)
                gshift[i] += pd[i];
        }
        dn_mean /= (float)n;
        dn_norm_mean /= (float)n;
        if (gx) {
            float *pg = gx + r * n;
            for (int i = 0; i < n; i++) {
                const float norm = (px[i] - m) * s;
                pg[i] += s * (pd[i] * scale[i] - dn_mean - norm * dn_norm_mean);
            }
        }
    }
}

/* Only static functions are multi-versioned (clang resolves clones per
 * translation unit); these are the public entry points. Rows go to the
 * thread pool; in the backward, gx is per row while gscale and gshift sum
 * over rows, so those are done apart, split by columns. */
typedef struct {
    const float *x, *scale, *shift, *mean, *rstd, *dy;
    float *y, *gx, *gscale, *gshift, *mean_out, *rstd_out;
    int n;
    float eps;
    int64_t rows;
} ln_job;

static void ln_forward_range(void *vctx, int64_t r0, int64_t r1)
{
    const ln_job *j = vctx;
    const int64_t o = r0 * j->n;
    layernorm_serial(j->x + o, j->scale, j->shift, j->y + o, j->mean_out + r0, j->rstd_out + r0, r1 - r0, j->n,
                     j->eps);
}

void tg_k_layernorm(const float *x, const float *scale, const float *shift, float *y, float *mean, float *rstd,
                    int64_t rows, int n, float eps)
{
    ln_job j = {.x = x, .scale = scale, .shift = shift, .y = y, .mean_out = mean, .rstd_out = rstd, .n = n,
                .eps = eps, .rows = rows};
    tg_parallel_for(rows, TG_ELEM_CHUNK / (n > 0 ? n : 1) + 1, ln_forward_range, &j);
}

static void ln_backward_rows(void *vctx, int64_t r0, int64_t r1)
{
    const ln_job *j = vctx;
    const int64_t o = r0 * j->n;
    layernorm_backward_serial(j->x + o, j->scale, j->mean + r0, j->rstd + r0, j->dy + o, j->gx + o, NULL, NULL,
                              r1 - r0, j->n);
}

static void ln_backward_cols(void *vctx, int64_t c0, int64_t c1)
{
    const ln_job *j = vctx;
    for (int64_t r = 0; r < j->rows; r++) {
        const float *px = j->x + r * j->n, *pd = j->dy + r * j->n;
        const float m = j->mean[r], s = j->rstd[r];
        for (int64_t c = c0; c < c1; c++) {
            if (j->gscale)
                j->gscale[c] += pd[c] * ((px[c] - m) * s);
            if (j->gshift)
                j->gshift[c] += pd[c];
        }
    }
}

void tg_k_layernorm_backward(const float *x, const float *scale, const float *mean, const float *rstd,
                             const float *dy, float *gx, float *gscale, float *gshift, int64_t rows, int n)
{
    ln_job j = {.x = x, .scale = scale, .mean = mean, .rstd = rstd, .dy = dy, .gx = gx, .gscale = gscale,
                .gshift = gshift, .n = n, .rows = rows};
    if (gx)
        tg_parallel_for(rows, TG_ELEM_CHUNK / (n > 0 ? n : 1) + 1, ln_backward_rows, &j);
    if (gscale || gshift)
        tg_parallel_for(n, rows > 0 ? TG_ELEM_CHUNK / rows + 1 : n, ln_backward_cols, &j);
}

/* ---------------------------------------------------------------- permute */

static void permute_setup(int ndim, const int *in_shape, const int *dims, int *oshape, int64_t *istride_for_out)
{
    int64_t istr[TG_MAX_DIMS];
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        istr[i] = s;
        s *= in_shape[i];
    }
    /* pad to 4 dims on the left */
    for (int i = 0; i < TG_MAX_DIMS; i++) {
        int k = i - (TG_MAX_DIMS - ndim);
        oshape[i] = k >= 0 ? in_shape[dims[k]] : 1;
        istride_for_out[i] = k >= 0 ? istr[dims[k]] : 0;
    }
}

void tg_k_permute(const float *x, float *y, int ndim, const int *in_shape, const int *dims)
{
    int os[TG_MAX_DIMS];
    int64_t st[TG_MAX_DIMS];
    permute_setup(ndim, in_shape, dims, os, st);
    int64_t o = 0;
    for (int i0 = 0; i0 < os[0]; i0++)
        for (int i1 = 0; i1 < os[1]; i1++)
            for (int i2 = 0; i2 < os[2]; i2++) {
                const float *px = x + i0 * st[0] + i1 * st[1] + i2 * st[2];
                const int64_t s3 = st[3];
                if (s3 == 1) {
                    memcpy(y + o, px, (size_t)os[3] * sizeof(float));
                    o += os[3];
                } else
                    for (int i3 = 0; i3 < os[3]; i3++)
                        y[o++] = px[i3 * s3];
            }
}

void tg_k_permute_backward(const float *gy, float *gx, int ndim, const int *in_shape, const int *dims)
{
    int os[TG_MAX_DIMS];
    int64_t st[TG_MAX_DIMS];
    permute_setup(ndim, in_shape, dims, os, st);
    int64_t o = 0;
    for (int i0 = 0; i0 < os[0]; i0++)
        for (int i1 = 0; i1 < os[1]; i1++)
            for (int i2 = 0; i2 < os[2]; i2++) {
                float *px = gx + i0 * st[0] + i1 * st[1] + i2 * st[2];
                const int64_t s3 = st[3];
                for (int i3 = 0; i3 < os[3]; i3++)
                    px[i3 * s3] += gy[o++];
            }
}

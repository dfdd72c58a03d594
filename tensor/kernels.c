/* tensor/kernels.c — elementwise, broadcast, row-wise and permute kernels.
 * (gemm lives in tensor/gemm.c.) */

/* GCC, by default, assumes a float operation may trap and so will not
 * evaluate both sides of a select: the range clamps of tg_fast_expf get
 * jump-threaded into constant paths whose products overflow, and the AVX2
 * clones of every loop using expf/tanhf/GELU stay scalar (AVX-512's masks
 * hide it). This changes no value: the same IEEE operations, in the same
 * order; only the floating-point exception flags, which nothing reads, may
 * be raised differently. Not -ffast-math. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include "kernels.h"

#include "fastmath.h"
#include "rowmath.h"

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

/* ---------------------------------------------------------------- binary
 * One line per op: the forward out = f(x, y), then what each operand's
 * gradient gains from g = d out at that element (x is a's element, y b's). */
#define TG_BINARY_OPS(X)                                \
    /* op    forward   a's grad += b's grad +=   */     \
    X(ADD,   x + y,    g,         g)                    \
    X(SUB,   x - y,    g,         -g)                   \
    X(MUL,   x * y,    g * y,     g * x)                \
    X(DIV,   x / y,    g / y,     -g * x / (y * y))

/* One inner row: n elements at strides a_s, b_s (0 or 1 mostly), written
 * with a loop the compiler vectorises for each common stride pair. */
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

/* One inner row of a gradient: gi[i * g_s] += TERM, in element order (so a
 * broadcast operand, g_s = 0, sums in the same order on every path). */
#define BIN_GRAD_ROW(TERM)                                                                 \
    do {                                                                                   \
        if (a_s == 1 && b_s == 1 && g_s == 1)                                              \
            for (int i = 0; i < n; i++) {                                                  \
                const float g = pg[i], x = pa[i], y = pb[i];                               \
                (void)x, (void)y;                                                          \
                gi[i] += (TERM);                                                           \
            }                                                                              \
        else                                                                               \
            for (int i = 0; i < n; i++) {                                                  \
                const float g = pg[i], x = pa[i * a_s], y = pb[i * b_s];                   \
                (void)x, (void)y;                                                          \
                gi[i * g_s] += (TERM);                                                     \
            }                                                                              \
    } while (0)

/* The broadcast index space is rows (i0, i1, i2) of shape[3] elements. */
static int64_t bcast_rows(const tg_bcast *bc) { return (int64_t)bc->shape[0] * bc->shape[1] * bc->shape[2]; }

static void bcast_row_offsets(const tg_bcast *bc, int64_t r, int64_t *ao, int64_t *bo)
{
    const int *S = bc->shape;
    const int64_t i2 = r % S[2], i1 = (r / S[2]) % S[1], i0 = r / ((int64_t)S[2] * S[1]);
    *ao = i0 * bc->sa[0] + i1 * bc->sa[1] + i2 * bc->sa[2];
    *bo = i0 * bc->sb[0] + i1 * bc->sb[1] + i2 * bc->sb[2];
}

/* rows of at least TG_ELEM_CHUNK elements per thread */
static int64_t rows_chunk(int64_t row_len) { return TG_ELEM_CHUNK / (row_len > 0 ? row_len : 1) + 1; }

typedef struct {
    tg_binop op;
    const tg_bcast *bc;
    const float *a, *b;
    float *out;
} binary_args;

TG_TARGET_CLONES
static void binary_range(void *ctx, int64_t r0, int64_t r1)
{
    const binary_args *j = ctx;
    const int n = j->bc->shape[3];
    const int64_t a_s = j->bc->sa[3], b_s = j->bc->sb[3];
    for (int64_t r = r0; r < r1; r++) {
        int64_t ao, bo;
        bcast_row_offsets(j->bc, r, &ao, &bo);
        const float *pa = j->a + ao, *pb = j->b + bo;
        float *po = j->out + r * n;
        switch (j->op) {
#define X(OP, FWD, GA, GB) case TG_BIN_##OP: BIN_ROW(FWD); break;
            TG_BINARY_OPS(X)
#undef X
        }
    }
}

void tg_k_binary(tg_binop op, const tg_bcast *bc, const float *a, const float *b, float *out)
{
    binary_args j = {op, bc, a, b, out};
    tg_parallel_for(bcast_rows(bc), rows_chunk(bc->shape[3]), binary_range, &j);
}

typedef struct {
    tg_binop op;
    int which; /* the operand whose gradient this is: 0 = a, 1 = b */
    const tg_bcast *bc;
    const float *a, *b, *gout;
    float *gin;
} binary_backward_args;

TG_TARGET_CLONES
static void binary_backward_range(void *ctx, int64_t r0, int64_t r1)
{
    const binary_backward_args *j = ctx;
    const tg_bcast *bc = j->bc;
    const int n = bc->shape[3];
    const int64_t a_s = bc->sa[3], b_s = bc->sb[3], g_s = j->which ? b_s : a_s;
    for (int64_t r = r0; r < r1; r++) {
        int64_t ao, bo;
        bcast_row_offsets(bc, r, &ao, &bo);
        const float *pa = j->a + ao, *pb = j->b + bo, *pg = j->gout + r * n;
        float *gi = j->gin + (j->which ? bo : ao);
        if (j->which)
            switch (j->op) {
#define X(OP, FWD, GA, GB) case TG_BIN_##OP: BIN_GRAD_ROW(GB); break;
                TG_BINARY_OPS(X)
#undef X
            }
        else
            switch (j->op) {
#define X(OP, FWD, GA, GB) case TG_BIN_##OP: BIN_GRAD_ROW(GA); break;
                TG_BINARY_OPS(X)
#undef X
            }
    }
}

void tg_k_binary_backward(tg_binop op, int which, const tg_bcast *bc, const float *a, const float *b,
                          const float *gout, float *gin)
{
    binary_backward_args j = {op, which, bc, a, b, gout, gin};
    /* rows write disjoint parts of gin only when that operand is not
     * broadcast (a zero stride would make rows add into the same place) */
    const int64_t *s = which ? bc->sb : bc->sa;
    bool broadcast = false;
    for (int d = 0; d < TG_MAX_DIMS; d++)
        broadcast |= bc->shape[d] > 1 && s[d] == 0;
    if (broadcast)
        binary_backward_range(&j, 0, bcast_rows(bc));
    else
        tg_parallel_for(bcast_rows(bc), rows_chunk(bc->shape[3]), binary_backward_range, &j);
}

/* ---------------------------------------------------------------- elementwise */

/* GELU, tanh form (torch's approximate='tanh'): gelu(v) = v (1 + t) / 2,
 * t = tanh(z), z = beta (v + kappa v^3), and its derivative as torch's
 * GeluBackward writes it, (1 + t) / 2 + v (1 - t^2) beta (1 + 3 kappa v^2) / 2.
 * Both are built from s = (1 + t) / 2, which is exactly 1 / (1 + e^-2z), and
 * its complement 1 - s = e^-2z s (so 1 - t^2 = 4 s (1 - s)): one exp and one
 * division for the value and the derivative, no branch, and no cancellation
 * in 1 + t at t near -1 or in 1 - t^2 at t near +-1 (tests/test_kernels.c
 * holds gelu and gelu' to double-precision references). Beyond |2z| = 80,
 * s and 1 - s are within 2e-35 of 0 or 1 and are set to them (as torch's
 * t = +-1 there), so huge inputs give gelu(v) = 0 or v and gelu' = 0 or 1.
 * Every GELU kernel goes through gelu_sc. */
#define GELU_2BETA 1.5957691216057308f /* 2 sqrt(2/pi) */
#define GELU_2BETA_KAPPA (1.5957691216057308f * 0.044715f)
#define GELU_6BETA_KAPPA (3.0f * 1.5957691216057308f * 0.044715f)
#define GELU_W_MAX 80.0f
typedef struct {
    float s, c; /* s = (1 + tanh z) / 2, c = 1 - s */
} gelu_sc;
static inline gelu_sc gelu_parts(float v)
{
    const float w = v * (GELU_2BETA + GELU_2BETA_KAPPA * (v * v)); /* 2z */
    const float m = w > GELU_W_MAX ? -GELU_W_MAX : (w < -GELU_W_MAX ? GELU_W_MAX : -w);
    const float e = tg_fast_expf_normal(m); /* e^-2z */
    const float s = 1.0f / (1.0f + e);
    gelu_sc r = {w < -GELU_W_MAX ? 0.0f : s, w > GELU_W_MAX ? 0.0f : e * s};
    return r;
}
static inline float gelu_of(float v, gelu_sc p) { return v * p.s; }
static inline float gelu_grad_of(float v, gelu_sc p)
{
    /* (1 + t) / 2 + v (1 - t^2) beta (1 + 3 kappa v^2) / 2 */
    return p.s + v * p.s * p.c * (GELU_2BETA + GELU_6BETA_KAPPA * (v * v));
}
static inline float gelu(float v) { return gelu_of(v, gelu_parts(v)); }
static inline float gelu_grad(float v) { return gelu_grad_of(v, gelu_parts(v)); }

static inline float pow_fwd(float x, float s) { return s == 2.0f ? x * x : powf(x, s); }

/* One line per op: the forward y = f(x), then what the input's gradient
 * gains from g = dy at that element; both may use s (the exponent of POW,
 * the scalar of ADDS and MULS) and the gradient may use y = f(x). */
#define TG_UNARY_OPS(X)                                              \
    /* op    forward               gx +=                    */       \
    X(NEG,   -x,                   -g)                               \
    X(EXP,   tg_fast_expf(x),      g * y)                            \
    X(LOG,   logf(x),              g / x)                            \
    X(SQRT,  sqrtf(x),             g / (2.0f * y))                   \
    X(TANH,  tg_fast_tanhf(x),     g * (1.0f - y * y))               \
    X(RELU,  x < 0.0f ? 0.0f : x,  x > 0.0f ? g : 0.0f) /* NaN stays */ \
    X(GELU,  gelu(x),              g * gelu_grad(x))                 \
    X(POW,   pow_fwd(x, s),        g * (s * powf(x, s - 1.0f)))      \
    X(ADDS,  x + s,                g)                                \
    X(MULS,  x * s,                g * s)

typedef struct {
    tg_unop op;
    const float *x;
    float s;
    float *y;
} unary_args;

TG_TARGET_CLONES
static void unary_range(void *ctx, int64_t i0, int64_t i1)
{
    const unary_args *j = ctx;
    const float *px = j->x, s = j->s;
    float *py = j->y;
    switch (j->op) {
#define X(OP, FWD, GRAD)                        \
    case TG_UN_##OP:                            \
        for (int64_t i = i0; i < i1; i++) {     \
            const float x = px[i];              \
            py[i] = (FWD);                      \
        }                                       \
        break;
        TG_UNARY_OPS(X)
#undef X
    }
}

void tg_k_unary(tg_unop op, int64_t n, const float *x, float s, float *y)
{
    unary_args j = {op, x, s, y};
    tg_parallel_for(n, TG_ELEM_CHUNK, unary_range, &j);
}

typedef struct {
    tg_unop op;
    const float *x, *y, *dy;
    float s;
    float *gx;
} unary_backward_args;

TG_TARGET_CLONES
static void unary_backward_range(void *ctx, int64_t i0, int64_t i1)
{
    const unary_backward_args *j = ctx;
    const float *px = j->x, *py = j->y, *pd = j->dy, s = j->s;
    float *pg = j->gx;
    switch (j->op) {
#define X(OP, FWD, GRAD)                                            \
    case TG_UN_##OP:                                                \
        for (int64_t i = i0; i < i1; i++) {                         \
            const float x = px[i], y = py[i], g = pd[i];            \
            (void)x, (void)y;                                       \
            pg[i] += (GRAD);                                        \
        }                                                           \
        break;
        TG_UNARY_OPS(X)
#undef X
    }
}

void tg_k_unary_backward(tg_unop op, int64_t n, const float *x, const float *y, float s, const float *dy,
                         float *gx)
{
    if (op == TG_UN_POW && s == 0.0f)
        return; /* x^0 is constant: nothing flows (not 0 * x^-1, NaN at 0) */
    unary_backward_args j = {op, x, y, dy, s, gx};
    tg_parallel_for(n, TG_ELEM_CHUNK, unary_backward_range, &j);
}

typedef struct {
    const float *x;
    float *g; /* in: dy; out: dy * gelu'(x) */
} gelu_backward_inplace_args;

TG_TARGET_CLONES
static void gelu_backward_inplace_range(void *ctx, int64_t i0, int64_t i1)
{
    const gelu_backward_inplace_args *j = ctx;
    for (int64_t i = i0; i < i1; i++)
        j->g[i] = j->g[i] * gelu_grad(j->x[i]);
}

void tg_k_gelu_backward_inplace(int64_t n, const float *x, float *g)
{
    gelu_backward_inplace_args j = {x, g};
    tg_parallel_for(n, TG_ELEM_CHUNK, gelu_backward_inplace_range, &j);
}

typedef struct {
    const float *u;
    float *a; /* out: gelu(u) */
    float *g; /* in: d a; out: d a * gelu'(u) */
} gelu_with_grad_args;

TG_TARGET_CLONES
static void gelu_with_grad_range(void *ctx, int64_t i0, int64_t i1)
{
    const gelu_with_grad_args *j = ctx;
    for (int64_t i = i0; i < i1; i++) {
        const float v = j->u[i];
        const gelu_sc p = gelu_parts(v);
        j->a[i] = gelu_of(v, p);
        j->g[i] = j->g[i] * gelu_grad_of(v, p);
    }
}

void tg_k_gelu_with_grad(int64_t n, const float *u, float *a, float *g)
{
    gelu_with_grad_args j = {u, a, g};
    tg_parallel_for(n, TG_ELEM_CHUNK, gelu_with_grad_range, &j);
}

/* ---------------------------------------------------------------- rows */

/* One row of n elements with stride 1: y = softmax(x) or log_softmax(x),
 * in tensor/rowmath.h's lane sums (the fused attention's rows share them). */
TG_ROW void softmax_row(const float *restrict px, float *restrict py, int n, bool log)
{
    if (!log) { /* in place on a copy: the very code of the fused attention's rows */
        memcpy(py, px, (size_t)n * sizeof(float));
        tg_row_softmax(py, n);
        return;
    }
    float sum;
    const float lse = tg_row_softmax_exp(px, py, n, &sum) + logf(sum);
    for (int i = 0; i < n; i++)
        py[i] = px[i] - lse;
}

/* One row of n elements at stride inner (one running sum, so its last bits
 * may differ from softmax_row's lane sums). */
static inline void softmax_row_strided(const float *px, float *py, int n, int64_t inner, bool log)
{
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

/* Softmax's backward for one row at stride inner (1 for contiguous rows). */
static inline void softmax_backward_row(const float *py, const float *pd, float *pg, int n, int64_t inner, bool log)
{
    float dot = 0.0f;
    if (inner == 1 && !log) { /* the fused attention's rows: tensor/rowmath.h */
        dot = tg_row_dot(pd, py, n);
        for (int i = 0; i < n; i++)
            pg[i] += py[i] * (pd[i] - dot);
    } else if (log) {
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

/* Both go to the thread pool by blocks o of [n, inner]. */
typedef struct {
    const float *x;
    float *y;
    int n;
    int64_t inner;
    bool log;
} softmax_args;

TG_TARGET_CLONES
static void softmax_range(void *ctx, int64_t o0, int64_t o1)
{
    const softmax_args *j = ctx;
    const int n = j->n;
    const int64_t inner = j->inner;
    for (int64_t o = o0; o < o1; o++)
        if (inner == 1)
            softmax_row(j->x + o * n, j->y + o * n, n, j->log);
        else
            for (int64_t in = 0; in < inner; in++)
                softmax_row_strided(j->x + o * n * inner + in, j->y + o * n * inner + in, n, inner, j->log);
}

void tg_k_softmax(const float *x, float *y, int64_t outer, int n, int64_t inner, bool log)
{
    softmax_args j = {x, y, n, inner, log};
    tg_parallel_for(outer, rows_chunk(n * inner), softmax_range, &j);
}

typedef struct {
    const float *y, *dy;
    float *gx;
    int n;
    int64_t inner;
    bool log;
} softmax_backward_args;

TG_TARGET_CLONES
static void softmax_backward_range(void *ctx, int64_t o0, int64_t o1)
{
    const softmax_backward_args *j = ctx;
    const int n = j->n;
    const int64_t inner = j->inner;
    for (int64_t o = o0; o < o1; o++)
        if (inner == 1) /* (the constant stride lets the loops vectorise) */
            softmax_backward_row(j->y + o * n, j->dy + o * n, j->gx + o * n, n, 1, j->log);
        else
            for (int64_t in = 0; in < inner; in++) {
                const int64_t base = o * n * inner + in;
                softmax_backward_row(j->y + base, j->dy + base, j->gx + base, n, inner, j->log);
            }
}

void tg_k_softmax_backward(const float *y, const float *dy, float *gx, int64_t outer, int n, int64_t inner,
                           bool log)
{
    softmax_backward_args j = {y, dy, gx, n, inner, log};
    tg_parallel_for(outer, rows_chunk(n * inner), softmax_backward_range, &j);
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

/* ---------------------------------------------------------------- layernorm
 * Rows of n: y = (x - mean) * rstd * scale + shift, mean and rstd saved per
 * row. In the backward gx is per row, while gscale and gshift sum over rows,
 * so those go to the pool apart, split by columns. */
typedef struct {
    const float *x, *scale, *shift;
    float *y, *mean, *rstd;
    int n;
    float eps;
} layernorm_args;

/* Each row's sums run in tensor/rowmath.h's 16 lane sums (element c into
 * lane c % 16, a fixed tree at the end): vector code in every target clone,
 * and the same float whatever the vector width, thread count or row split. */

/* mean and rstd of the row of n at px (two passes: the mean, then the
 * squares of x - mean) */
TG_ROW void layernorm_stats(const float *px, int n, float eps, float *mean, float *rstd)
{
    const float m = tg_row_sum(px, n) / (float)n;
    tg_row_vec acc = {0}, v;
    for (int c = 0; c < n; c += TG_ROW_LANES) {
        tg_row_load(&v, px, c, n, m); /* padded with m: adds (m - m)^2 = +0 */
        v -= m;
        acc += v * v;
    }
    *mean = m;
    *rstd = 1.0f / sqrtf(tg_row_lanes_total(&acc) / (float)n + eps);
}

TG_TARGET_CLONES
static void layernorm_range(void *ctx, int64_t r0, int64_t r1)
{
    const layernorm_args *j = ctx;
    const int n = j->n;
    for (int64_t r = r0; r < r1; r++) {
        const float *px = j->x + r * n;
        float *py = j->y + r * n;
        layernorm_stats(px, n, j->eps, j->mean + r, j->rstd + r);
        const float m = j->mean[r], s = j->rstd[r];
        for (int i = 0; i < n; i++)
            py[i] = (px[i] - m) * s * j->scale[i] + j->shift[i];
    }
}

void tg_k_layernorm(const float *x, const float *scale, const float *shift, float *y, float *mean, float *rstd,
                    int64_t rows, int n, float eps)
{
    layernorm_args j = {x, scale, shift, y, mean, rstd, n, eps};
    tg_parallel_for(rows, rows_chunk(n), layernorm_range, &j);
}

typedef struct {
    const float *x, *scale, *mean, *rstd, *dy;
    float *gx, *gscale, *gshift; /* each may be NULL */
    int64_t rows;
    int n;
    bool gx_add; /* gx += or gx = */
} layernorm_backward_args;

/* dn_mean and dn_norm_mean (the means of dy * scale and of that times the
 * normalised x) of row r, in lane sums as in the forward */
TG_ROW void layernorm_backward_stats(const layernorm_backward_args *j, int64_t r, float *dn_mean,
                                     float *dn_norm_mean)
{
    const int n = j->n;
    const float *px = j->x + r * n, *pd = j->dy + r * n;
    const float m = j->mean[r], s = j->rstd[r];
    tg_row_vec a = {0}, b = {0}, x, d, sc;
    for (int c = 0; c < n; c += TG_ROW_LANES) {
        tg_row_load(&x, px, c, n, m); /* padded: norm = 0 and dn = 0 there */
        tg_row_load(&d, pd, c, n, 0.0f);
        tg_row_load(&sc, j->scale, c, n, 0.0f);
        const tg_row_vec norm = (x - m) * s, dn = d * sc;
        a += dn;
        b += dn * norm;
    }
    *dn_mean = tg_row_lanes_total(&a) / (float)n;
    *dn_norm_mean = tg_row_lanes_total(&b) / (float)n;
}

/* rows r0..r1 of gx */
TG_TARGET_CLONES
static void layernorm_backward_range(void *ctx, int64_t r0, int64_t r1)
{
    const layernorm_backward_args *j = ctx;
    const int n = j->n;
    const float *scale = j->scale;
    for (int64_t r = r0; r < r1; r++) {
        float dn_mean, dn_norm_mean;
        layernorm_backward_stats(j, r, &dn_mean, &dn_norm_mean);
        const float *px = j->x + r * n, *pd = j->dy + r * n;
        const float m = j->mean[r], s = j->rstd[r];
        float *pg = j->gx + r * n;
#define LN_GX(i) (s * (pd[i] * scale[i] - dn_mean - (px[i] - m) * s * dn_norm_mean))
        if (j->gx_add)
            for (int i = 0; i < n; i++)
                pg[i] += LN_GX(i);
        else
            for (int i = 0; i < n; i++)
                pg[i] = LN_GX(i);
#undef LN_GX
    }
}

/* columns c0..c1 of gscale and gshift, summed over every row in order */
TG_TARGET_CLONES
static void layernorm_param_grad_range(void *ctx, int64_t c0, int64_t c1)
{
    const layernorm_backward_args *j = ctx;
    for (int64_t r = 0; r < j->rows; r++) {
        const float *px = j->x + r * j->n, *pd = j->dy + r * j->n;
        const float m = j->mean[r], s = j->rstd[r];
        if (j->gscale)
            for (int64_t c = c0; c < c1; c++)
                j->gscale[c] += pd[c] * ((px[c] - m) * s);
        if (j->gshift)
            for (int64_t c = c0; c < c1; c++)
                j->gshift[c] += pd[c];
    }
}

void tg_k_layernorm_backward(const float *x, const float *scale, const float *mean, const float *rstd,
                             const float *dy, float *gx, bool gx_accumulate, float *gscale, float *gshift,
                             int64_t rows, int n)
{
    layernorm_backward_args j = {x, scale, mean, rstd, dy, gx, gscale, gshift, rows, n, gx_accumulate};
    if (gx)
        tg_parallel_for(rows, rows_chunk(n), layernorm_backward_range, &j);
    if (gscale || gshift)
        tg_parallel_for(n, rows > 0 ? TG_ELEM_CHUNK / rows + 1 : n, layernorm_param_grad_range, &j);
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

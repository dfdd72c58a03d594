/* autograd/ops_attention.c — causal scaled dot-product attention as one op,
 * torch 2.x's scaled_dot_product_attention(q, k, v, dropout_p, is_causal=True):
 *
 *   q, k, v (..., T, hd) -> out (..., T, hd)
 *   S = q k^T * scale            scale = 1/sqrt(hd), row i sees keys j <= i
 *   P = softmax(S)               over j, the masked j > i are 0
 *   out = dropout(P) v           dropout as tg_dropout (the same draws)
 *
 * It gives the same bits as the book's composed ops (matmul, masked_fill
 * with -inf, mul_scalar, softmax, dropout, matmul) in forward and backward:
 * every gemm sums over the same k in the same order (tg_k_gemm_ld's
 * contract), the masked half only ever adds zeros there, so it is skipped,
 * and the row arithmetic is the composed kernels' own. The dropout mask is
 * one bit per element of the full (..., T, T) tensor in row-major order
 * (masked half included), so the generator advances exactly as tg_dropout's
 * would; it is drawn head by head while the heads already drawn run in
 * parallel (draw_bits_through).
 *
 * Saved for backward: P's lower triangle (T(T+1)/2 floats per head) and the
 * 1-bit mask; the composed form keeps six (T, T) tensors and their grads.
 */
#include "ops_internal.h"
#include "../tensor/rowmath.h"

#include <math.h>
#include <string.h>

#define BLK 28 /* query rows (forward) and key columns (backward) per block */

typedef struct {
    const float *q, *k, *v;
    float *out, *weights;   /* weights: NULL or (..., T, T) to receive P */
    float *P;               /* lower triangles, row i at i(i+1)/2 */
    const uint64_t *bits;   /* NULL: no dropout */
    const float *dout;
    float *gq, *gk, *gv;
    bool add_q, add_k, add_v; /* add into them, or write them (tg_grad_dest) */
    int T, hd;
    int H;                   /* heads_last: heads per batch; else 1 */
    int64_t ld;              /* row stride of q, k, v, out and their grads */
    float scale, keep_scale; /* keep_scale: 1/(1-p), or 0 when p = 1 */
    bool drop;
} attn_job;

/* The forward's job: the bits are drawn as the heads need them, in order, by
 * one drawer at a time (whichever thread waits for them). */
typedef struct {
    const attn_job *j;
    int64_t heads;
    tg_generator *g;         /* NULL: nothing to draw */
    uint64_t *bits;          /* j->bits, writable */
    double keep_p;
    int64_t drawn;           /* elements drawn so far (atomic; a multiple of 64 until all are) */
    int drawing;             /* atomic flag: a thread is drawing */
} attn_forward_job;

static inline int64_t tri(int i) { return (int64_t)i * (i + 1) / 2; }

/* where head h (of batch h / H, head h % H) starts in q, k, v and out */
static inline int64_t head_offset(const attn_job *j, int64_t h)
{
    return (h / j->H) * j->T * j->ld + (h % j->H) * j->hd;
}

/* y[0:n] = dropout(x[0:n]) at elements e0.. of the (..., T, T) tensor, in
 * place when x is NULL; no bits with dropout on is p = 1: nothing kept. */
static inline void row_dropout(const attn_job *j, int64_t e0, const float *x, float *y, int n)
{
    if (!j->bits)
        memset(y, 0, (size_t)n * sizeof(float));
    else if (x)
        tg_row_dropout(j->bits, e0, j->keep_scale, x, y, n);
    else
        tg_row_dropout_inplace(j->bits, e0, j->keep_scale, y, n);
}

/* Returns once the bits of heads 0..h are drawn. The generator's draws are
 * one sequence (mt19937 has no cheap skip-ahead), so a waiting thread draws
 * the next head's worth itself, if no other thread is drawing, while the
 * others compute the heads already drawn. Each draw starts and ends on a
 * 64-element word boundary (or at the end), so no word is written while
 * another thread reads it; the draws in pieces are the same words of the
 * generator as tg_random_bits over the whole tensor. */
static void draw_bits_through(attn_forward_job *f, int64_t h)
{
    if (!f->g)
        return;
    const int64_t TT = (int64_t)f->j->T * f->j->T, total = f->heads * TT, need = (h + 1) * TT;
    while (__atomic_load_n(&f->drawn, __ATOMIC_ACQUIRE) < need) {
        if (__atomic_exchange_n(&f->drawing, 1, __ATOMIC_ACQUIRE)) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
            continue;
        }
        const int64_t a = __atomic_load_n(&f->drawn, __ATOMIC_RELAXED);
        if (a < need) {
            int64_t b = (a + TT + 63) / 64 * 64;
            b = b < total ? b : total;
            tg_random_bits(f->g, b - a, f->keep_p, f->bits + a / 64);
            __atomic_store_n(&f->drawn, b, __ATOMIC_RELEASE);
        }
        __atomic_store_n(&f->drawing, 0, __ATOMIC_RELEASE);
    }
}

/* ---------------------------------------------------------------- backward
 * per head, with dS and dropout(P) as dense (T, T) scratch:
 *   dPd = dout v^T, dP = dropout's backward, dS = P (dP - sum_j dP P) * scale
 *   dq += dS k (by query blocks), dv += dropout(P)^T dout, dk += dS^T q (by key
 *   blocks, from the block's first row on; the gemm's k range is split at
 *   multiples of TG_GEMM_KC so its summation order is the composed one's).
 * Each block of dq, dk and dv is made by one gemm call, once, so a first
 * writer's gradient is written, not added to zeros. v (as v^T), k, dout and
 * q are packed once per head (tg_k_gemm_pack), the block gemms run on their
 * leading rows and columns. */

/* the packs of a head's operands: [K, N] for tb = false, one after another */
static size_t pack_floats(int T, int hd, int n_tb, int n_rows)
{
    return (size_t)n_tb * tg_k_gemm_packed_size(hd, T) + (size_t)n_rows * tg_k_gemm_packed_size(T, hd);
}

TG_TARGET_CLONES
static void attn_backward_range(void *vctx, int64_t h0, int64_t h1)
{
    const attn_job *j = vctx;
    const int T = j->T, hd = j->hd;
    const int64_t ld = j->ld;
    float *dS = tg_k_scratch(TG_SCRATCH_ATTN_0, (size_t)T * T);
    float *Pd = tg_k_scratch(TG_SCRATCH_ATTN_1, (size_t)T * T);
    const size_t st = tg_k_gemm_packed_size(hd, T), sr = tg_k_gemm_packed_size(T, hd);
    float *vtp = tg_k_scratch(TG_SCRATCH_ATTN_PACK, pack_floats(T, hd, 1, 3));
    float *kp = vtp + st, *doutp = kp + sr, *qp = doutp + sr;
    for (int64_t h = h0; h < h1; h++) {
        const int64_t off = head_offset(j, h);
        const float *q = j->q + off, *k = j->k + off, *v = j->v + off, *dout = j->dout + off;
        const float *P = j->P + h * tri(T);
        tg_k_gemm_pack(true, hd, T, v, ld, vtp);
        if (j->gq)
            tg_k_gemm_pack(false, T, hd, k, ld, kp);
        if (j->gv)
            tg_k_gemm_pack(false, T, hd, dout, ld, doutp);
        if (j->gk)
            tg_k_gemm_pack(false, T, hd, q, ld, qp);
        for (int i0 = 0; i0 < T; i0 += BLK) {
            const int i1 = i0 + BLK < T ? i0 + BLK : T;
            /* dPd[i0:i1, 0:i1] = dout[i0:i1] v[0:i1]^T */
            tg_k_gemm_packed(false, i1 - i0, i1, hd, dout + i0 * ld, ld, vtp, 0, hd, T, dS + (int64_t)i0 * T, T,
                             false);
            for (int i = i0; i < i1; i++) {
                float *ds = dS + (int64_t)i * T, *pd = Pd + (int64_t)i * T;
                const float *p = P + tri(i);
                const int64_t e0 = (h * T + i) * T;
                if (j->drop) { /* dP = dropout's backward of dPd; Pd = dropout(P) */
                    row_dropout(j, e0, NULL, ds, i + 1);
                    row_dropout(j, e0, p, pd, i + 1);
                } else {
                    memcpy(pd, p, (size_t)(i + 1) * sizeof(float));
                }
                const float dot = tg_row_dot(ds, p, i + 1); /* as softmax's backward rows */
                for (int c = 0; c <= i; c++)
                    ds[c] = p[c] * (ds[c] - dot) * j->scale;
                /* zeros up to the block edge: the column gemms read them */
                for (int c = i + 1; c < i1; c++)
                    ds[c] = pd[c] = 0.0f;
            }
            if (j->gq) /* dq[i0:i1] += dS[i0:i1, 0:i1] k[0:i1] */
                tg_k_gemm_packed(false, i1 - i0, hd, i1, dS + (int64_t)i0 * T, T, kp, 0, T, hd,
                                 j->gq + off + i0 * ld, ld, j->add_q);
        }
        for (int j0 = 0; j0 < T; j0 += BLK) {
            const int bn = j0 + BLK < T ? BLK : T - j0;
            /* dv[j0:] = Pd[j0:T, j0:]^T dout[j0:T], dk the same with dS and q;
             * k split at multiples of TG_GEMM_KC (the composed gemm's blocks) */
            if (j->gv)
                tg_k_gemm_packed(true, bn, hd, T - j0, Pd + (int64_t)j0 * T + j0, T, doutp, j0, T, hd,
                                 j->gv + off + j0 * ld, ld, j->add_v);
            if (j->gk)
                tg_k_gemm_packed(true, bn, hd, T - j0, dS + (int64_t)j0 * T + j0, T, qp, j0, T, hd,
                                 j->gk + off + j0 * ld, ld, j->add_k);
        }
    }
}

static void sdpa_backward(tg_node *n)
{
    if (!n->ctx) /* T = 0 or head_dim = 0: no products, no gradient */
        return;
    attn_job j = *(const attn_job *)n->ctx;
    j.dout = n->out->grad;
    j.gq = tg_grad_dest(n, 0, &j.add_q);
    j.gk = tg_grad_dest(n, 1, &j.add_k);
    j.gv = tg_grad_dest(n, 2, &j.add_v);
    tg_k_scratch_reserve(TG_SCRATCH_ATTN_0, (size_t)j.T * j.T); /* dS and Pd on every thread */
    tg_k_scratch_reserve(TG_SCRATCH_ATTN_1, (size_t)j.T * j.T);
    tg_k_scratch_reserve(TG_SCRATCH_ATTN_PACK, pack_floats(j.T, j.hd, 1, 3));
    tg_k_gemm_reserve(j.T > j.hd ? j.T : j.hd);
    tg_parallel_for(n->out->numel / ((int64_t)j.T * j.hd), 1, attn_backward_range, &j);
}

/* ---------------------------------------------------------------- forward
 * per head, by blocks of query rows [i0, i1): S = q k[0:i1]^T, then per row
 * scale, max, exp, sum and normalise over j <= i (as tg_softmax's rows),
 * dropout, and out[i0:i1] = dropout(P) v[0:i1]. */

/* a row length rounded up to whole vectors of the row helpers */
static inline int lanes_up(int n) { return (n + TG_ROW_LANES - 1) / TG_ROW_LANES * TG_ROW_LANES; }

TG_TARGET_CLONES
static void attn_forward_range(void *vctx, int64_t h0, int64_t h1)
{
    attn_forward_job *f = vctx;
    const attn_job *j = f->j;
    const int T = j->T, hd = j->hd, ns = lanes_up(T); /* S's row stride */
    const int64_t ld = j->ld;
    float *S = tg_k_scratch(TG_SCRATCH_ATTN_0, (size_t)BLK * ns);
    float *kp = tg_k_scratch(TG_SCRATCH_ATTN_PACK, pack_floats(T, hd, 1, 1));
    float *vp = kp + tg_k_gemm_packed_size(hd, T);
    for (int64_t h = h0; h < h1; h++) {
        const int64_t off = head_offset(j, h);
        const float *q = j->q + off, *k = j->k + off, *v = j->v + off;
        float *P = j->P + h * tri(T);
        tg_k_gemm_pack(true, hd, T, k, ld, kp); /* k^T and v, once for all the blocks */
        tg_k_gemm_pack(false, T, hd, v, ld, vp);
        draw_bits_through(f, h);
        for (int i0 = 0; i0 < T; i0 += BLK) {
            const int i1 = i0 + BLK < T ? i0 + BLK : T, n = i1;
            tg_k_gemm_packed(false, i1 - i0, n, hd, q + i0 * ld, ld, kp, 0, hd, T, S, ns, false);
            for (int i = i0; i < i1; i++) {
                /* the softmax runs over whole vectors: the columns from i + 1
                 * to np are -inf, whose exps only add zeros to the lane sums */
                float *s = S + (int64_t)(i - i0) * ns, *p = P + tri(i);
                const int np = lanes_up(i + 1);
                for (int c = i + 1; c < np; c++)
                    s[c] = -INFINITY;
                for (int c = 0; c < np; c++)
                    s[c] *= j->scale;
                tg_row_softmax(s, np); /* tg_softmax's rows: the masked j > i only add zeros */
                memcpy(p, s, (size_t)(i + 1) * sizeof(float));
                const int64_t e0 = (h * T + i) * T;
                if (j->drop)
                    row_dropout(j, e0, NULL, s, i + 1);
                for (int c = i + 1; c < n; c++)
                    s[c] = 0.0f;
                if (j->weights) {
                    float *w = j->weights + e0;
                    memcpy(w, p, (size_t)(i + 1) * sizeof(float));
                    memset(w + i + 1, 0, (size_t)(T - i - 1) * sizeof(float));
                }
            }
            tg_k_gemm_packed(false, i1 - i0, hd, n, S, ns, vp, 0, T, hd, j->out + off + i0 * ld, ld, false);
        }
    }
}

/* heads_last: q, k, v (B, T, H, hd), else (..., T, hd) */
static tg_tensor *sdpa(const char *op, tg_tensor *q, tg_tensor *k, tg_tensor *v, float dropout_p, bool train,
                       tg_generator *g, tg_tensor *weights, bool heads_last)
{
    char b1[64], b2[64], b3[64];
    tg_check_ptr(op, q, "query");
    tg_check_ptr(op, k, "key");
    tg_check_ptr(op, v, "value");
    if (q->ndim < (heads_last ? 4 : 2) || (heads_last && q->ndim != 4) || k->ndim != q->ndim ||
        v->ndim != q->ndim || memcmp(q->shape, k->shape, sizeof(int) * (size_t)q->ndim) != 0 ||
        memcmp(q->shape, v->shape, sizeof(int) * (size_t)q->ndim) != 0)
        tg_error(op, "query %s, key %s and value %s must have one shape %s", SHAPE(b1, q), SHAPE(b2, k),
                 SHAPE(b3, v), heads_last ? "(batch, T, heads, head_dim)" : "(..., T, head_dim)");
    if (!(dropout_p >= 0.0f && dropout_p <= 1.0f))
        tg_error(op, "dropout probability has to be between 0 and 1, but got %g", dropout_p);
    const int nd = q->ndim;
    const int T = q->shape[heads_last ? 1 : nd - 2], hd = q->shape[nd - 1], H = heads_last ? q->shape[2] : 1;
    const int64_t heads = T && hd ? q->numel / ((int64_t)T * hd) : 0;
    if (weights) {
        int ws[TG_MAX_DIMS];
        memcpy(ws, q->shape, sizeof ws);
        if (heads_last) {
            ws[1] = H;
            ws[2] = T;
        }
        ws[nd - 1] = T;
        if (weights->ndim != nd || memcmp(weights->shape, ws, sizeof(int) * (size_t)nd) != 0)
            tg_error(op, "weights %s must be %s for query %s", SHAPE(b1, weights),
                     heads_last ? "(batch, heads, T, T)" : "(..., T, T)", SHAPE(b2, q));
    }
    tg_tensor *out = tg_new_tensor(nd, q->shape);
    attn_job j = {.q = q->data, .k = k->data, .v = v->data, .out = out->data, .weights = weights ? weights->data : NULL,
                  .T = T, .hd = hd, .H = H, .ld = (int64_t)H * hd,
                  .scale = hd ? (float)(1.0 / sqrt((double)hd)) : 1.0f};
    const bool drop = train && dropout_p > 0.0f;
    attn_forward_job f = {.j = &j, .heads = heads};
    if (heads > 0) {
        j.drop = drop;
        if (drop && dropout_p < 1.0f) {
            tg_check_ptr(op, g, "generator");
            const int64_t n = heads * T * T;
            uint64_t *bits = tg_tape_alloc((size_t)((n + 63) / 64) * sizeof *bits);
            f.keep_p = 1.0 - (double)dropout_p;
            f.g = g; /* drawn by attn_forward_range, head by head */
            j.bits = f.bits = bits;
            j.keep_scale = 1.0f / (float)f.keep_p;
        }
        j.P = tg_tape_alloc((size_t)(heads * tri(T)) * sizeof(float));
        tg_k_scratch_reserve(TG_SCRATCH_ATTN_0, (size_t)BLK * lanes_up(T)); /* S on every thread */
        tg_k_scratch_reserve(TG_SCRATCH_ATTN_PACK, pack_floats(T, hd, 1, 1)); /* k^T and v packed */
        tg_k_gemm_reserve(T > hd ? T : hd);
        tg_parallel_for(heads, 1, attn_forward_range, &f);
    } else if (out->numel > 0) {
        memset(out->data, 0, (size_t)out->numel * sizeof(float)); /* T = 0 or hd = 0: nothing to sum */
    }
    tg_tensor *in[3] = {q, k, v};
    tg_node *node = tg_record(op, out, in, 3, sdpa_backward);
    if (node && heads > 0) {
        attn_job *saved = tg_tape_alloc(sizeof *saved);
        *saved = j;
        saved->out = saved->weights = NULL;
        node->ctx = saved;
    }
    return out;
}

tg_tensor *tg_sdpa_causal(tg_tensor *q, tg_tensor *k, tg_tensor *v, float dropout_p, bool train, tg_generator *g,
                          tg_tensor *weights)
{
    return sdpa("tg_sdpa_causal", q, k, v, dropout_p, train, g, weights, false);
}

tg_tensor *tg_sdpa_causal_heads_last(tg_tensor *q, tg_tensor *k, tg_tensor *v, float dropout_p, bool train,
                                     tg_generator *g, tg_tensor *weights)
{
    return sdpa("tg_sdpa_causal_heads_last", q, k, v, dropout_p, train, g, weights, true);
}

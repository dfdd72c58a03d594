/*
 * tensor/kernels.h — the numeric kernels: plain loops over contiguous float
 * arrays, no tape, no allocation. The autograd ops call these for forward
 * and backward; this is the one place to block, vectorise and thread.
 */
#ifndef TG_KERNELS_H
#define TG_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "tensor.h"

/* Hot loops are compiled for AVX-512, AVX2+FMA and baseline x86-64 and the
 * loader picks the best the CPU has (GCC/clang function multi-versioning),
 * so the build stays portable. Put it on static functions only. Off under
 * the sanitizers. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TG_NO_CLONES 1
#endif
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__) && !defined(TG_NO_CLONES) && \
    !defined(__clang_analyzer__)
#define TG_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TG_TARGET_CLONES
#endif

/* ---------------------------------------------------------------- threads
 * (tg_set_num_threads / tg_get_num_threads are in tensor.h.)
 *
 * Every threaded kernel, here and in autograd/, has the same three parts:
 *   typedef struct { const float *x; float *y; int n; } X_args;
 *       its arguments, one field per meaning (a backward has its own
 *       struct: no field is y in the forward and gx in the backward);
 *   TG_TARGET_CLONES
 *   static void X_range(void *ctx, int64_t i0, int64_t i1) { ... }
 *       the whole loop body, over items [i0, i1) (elements, rows, ...),
 *       multi-versioned when it has loops of its own to vectorise (not
 *       when it only calls gemm, as matmul's batch ranges do);
 *   void tg_k_X(...) { X_args a = {...}; tg_parallel_for(n, min, X_range, &a); }
 *       the entry: fills the struct and hands the range to the pool, which
 *       runs it inline when the work is small. There is no serial twin: a
 *       caller that must not split (a broadcast gradient, where two ranges
 *       would add into one place) calls X_range(&a, 0, n) itself.
 * Two places differ, on purpose: gemm (tensor/gemm.c) hands the pool one
 * job per call, either (many row blocks, tg_parallel_each) one in which the
 * threads claim the pack items and compute tasks of every K block in turn,
 * each phase after the one before is done, or (few row blocks,
 * tg_parallel_for) one slice of C's rows or columns per thread, each slice
 * the unthreaded gemm through the same pack and compute functions; the
 * optimizer's step_range and zero_range take the tg_optim itself as their
 * arguments. */
/* Runs fn(ctx, i0, i1) over [0, n) split into contiguous chunks of at
 * least min_chunk items, a few per thread, claimed as threads come free;
 * runs inline when n is below min_chunk * 2 or one thread is set. */
typedef void (*tg_range_fn)(void *ctx, int64_t i0, int64_t i1);
void tg_parallel_for(int64_t n, int64_t min_chunk, tg_range_fn fn, void *ctx);
/* Runs fn(ctx, i, i + 1) once on every thread of the pool, the caller's
 * included (i numbers the threads), as many as tg_set_num_threads last set.
 * Returns false when it could run only on the calling thread (another user
 * thread had the pool, no worker thread could start, or inside a chunk). */
bool tg_parallel_each(tg_range_fn fn, void *ctx);
/* True inside a tg_parallel_for chunk (where a nested one runs inline). */
bool tg_in_parallel_region(void);

/* Per-thread kernel scratch: at least n floats, 64-byte aligned, grown once
 * and then reused (so warm steps allocate nothing). One slot per user, so
 * a kernel that calls gemm keeps its own buffers. */
enum { TG_SCRATCH_GEMM_A, TG_SCRATCH_GEMM_B, TG_SCRATCH_ATTN_0, TG_SCRATCH_ATTN_1, TG_SCRATCH_ATTN_PACK, TG_SCRATCH_FF, TG_SCRATCH_FF_GRAD,
       TG_SCRATCH_N };
float *tg_k_scratch(int slot, size_t n);
/* Grows slot to n floats on every thread of the pool at once (a no-op once
 * done for this n and thread count). A kernel whose parallel chunks take
 * scratch calls it first: chunks are claimed dynamically, so a worker may
 * take its first chunk only in a later step, and must not allocate then. */
void tg_k_scratch_reserve(int slot, size_t n);
/* The same for the pack buffers of a gemm run inside a chunk (serial) with
 * at most N columns, for kernels whose chunks call tg_k_gemm_ld. */
void tg_k_gemm_reserve(int N);
/* Frees the calling thread's kernel scratch; it regrows on next use. The
 * pool calls it as workers exit and at exit. */
void tg_k_release_scratch(void);

/* ---------------------------------------------------------------- gemm
 * C[M,N] = (accumulate ? C : 0) + op(A) @ op(B), all row-major.
 * op(A) is [M,K]: A stored [M,K], or [K,M] when ta. op(B) is [K,N]: B stored
 * [K,N], or [N,K] when tb. */
void tg_k_gemm(bool ta, bool tb, int M, int N, int K, const float *A, const float *B, float *C, bool accumulate);
/* The same on sub-matrices: lda, ldb, ldc are the row strides of A, B and C
 * as stored. Every element of C sums its products over k in order, from
 * zero, in blocks of TG_GEMM_KC (then adds each block to C), whatever the
 * shapes, strides or threads: two calls whose k ranges agree up to zeros at
 * either end, with the same k offsets modulo TG_GEMM_KC, give the same bits. */
void tg_k_gemm_ld(bool ta, bool tb, int M, int N, int K, const float *A, int64_t lda, const float *B, int64_t ldb,
                  float *C, int64_t ldc, bool accumulate);
#define TG_GEMM_KC 256
/* op(B) packed once for many gemms on its leading parts (the fused
 * attention's K and V per head): tg_k_gemm_pack packs op(B) [pK,pN] (B
 * stored [pK,pN], or [pN,pK] when tb) into bp, 64-byte aligned, of
 * tg_k_gemm_packed_size(pK, pN) floats: the micro-kernel's panels in K
 * blocks of TG_GEMM_KC from zero. tg_k_gemm_packed then computes, unthreaded
 * (for a parallel chunk; A's pack buffer is tg_k_gemm_reserve's),
 *   C[M,N] = (accumulate ? C : 0) + op(A)[M,K] @ op(B)[k0 : k0+K, 0 : N]
 * (N <= pN, k0 + K <= pK), in k blocks split at op(B)'s multiples of
 * TG_GEMM_KC: the same bits as tg_k_gemm_ld on those rows and columns of
 * op(B) whenever that call's blocks are the same (k0 = 0, or k0 .. k0 + K
 * inside one block). The pack and its gemms must run on one micro-kernel. */
size_t tg_k_gemm_packed_size(int K, int N);
void tg_k_gemm_pack(bool tb, int K, int N, const float *B, int64_t ldb, float *bp);
void tg_k_gemm_packed(bool ta, int M, int N, int K, const float *A, int64_t lda, const float *bp, int k0, int pK,
                      int pN, float *C, int64_t ldc, bool accumulate);
/* The micro-kernel in use: the best the CPU has unless one is forced (tests
 * run each path this CPU can). Returns false, changing nothing, when the CPU
 * lacks it. Not to be switched while another thread is in a gemm. */
typedef enum { TG_GEMM_BEST, TG_GEMM_AVX512, TG_GEMM_AVX2, TG_GEMM_GENERIC } tg_gemm_isa;
bool tg_k_gemm_set_isa(tg_gemm_isa isa);
const char *tg_k_gemm_isa_name(void); /* "avx512", "avx2" or "generic" */

/* ---------------------------------------------------------------- broadcasting
 * Shapes are right-aligned into TG_MAX_DIMS slots; a stride of 0 repeats. */
typedef struct {
    int shape[TG_MAX_DIMS];        /* output shape, left-padded with 1 */
    int64_t sa[TG_MAX_DIMS];       /* a's strides in the output's index space */
    int64_t sb[TG_MAX_DIMS];
} tg_bcast;
/* Fills bc; returns false if the shapes cannot broadcast. out_ndim gets max(ndim). */
bool tg_bcast_init(tg_bcast *bc, int na, const int *a, int nb, const int *b, int *out_ndim);

typedef enum { TG_BIN_ADD, TG_BIN_SUB, TG_BIN_MUL, TG_BIN_DIV } tg_binop;
void tg_k_binary(tg_binop op, const tg_bcast *bc, const float *a, const float *b, float *out);
/* Backward of a broadcast binary op for the operand with strides s (a or b):
 *   ADD/SUB: g_in[s-index] += sign * g_out
 *   MUL    : g_in += g_out * other
 *   DIV    : for a: g_in += g_out / b;  for b: g_in -= g_out * a / b^2
 * which selects the operand: 0 = a, 1 = b. */
void tg_k_binary_backward(tg_binop op, int which, const tg_bcast *bc, const float *a, const float *b,
                          const float *gout, float *gin);

/* ---------------------------------------------------------------- elementwise
 * Each op's forward and derivative are one line of TG_UNARY_OPS in
 * kernels.c (the binary ops': TG_BINARY_OPS). */
typedef enum {
    TG_UN_NEG, TG_UN_EXP, TG_UN_LOG, TG_UN_SQRT, TG_UN_TANH, TG_UN_RELU, TG_UN_GELU,
    TG_UN_POW, TG_UN_ADDS, TG_UN_MULS
} tg_unop;
/* y = f(x) (s: exponent for POW, the scalar for ADDS/MULS). */
void tg_k_unary(tg_unop op, int64_t n, const float *x, float s, float *y);
/* gx += dy * f'(x); y = f(x), the forward's output (EXP, SQRT and TANH's
 * derivatives are written with it). */
void tg_k_unary_backward(tg_unop op, int64_t n, const float *x, const float *y, float s, const float *dy,
                         float *gx);
/* g = g * gelu'(x) in place: the same values as tg_k_unary_backward(GELU)
 * adds onto a zero gradient. */
void tg_k_gelu_backward_inplace(int64_t n, const float *x, float *g);
/* Both in one pass over u: a = gelu(u), and g = g * gelu'(u) in place (the
 * values of tg_k_unary(GELU) and tg_k_gelu_backward_inplace). */
void tg_k_gelu_with_grad(int64_t n, const float *u, float *a, float *g);

/* ---------------------------------------------------------------- rows
 * A tensor viewed as [outer, n, inner] around one dim. */
void tg_k_softmax(const float *x, float *y, int64_t outer, int n, int64_t inner, bool log);
/* gx += softmax backward: y*(dy - sum(dy*y)) or, for log, dy - exp(y)*sum(dy) */
void tg_k_softmax_backward(const float *y, const float *dy, float *gx, int64_t outer, int n, int64_t inner,
                           bool log);
/* Sums in torch's exact order of float additions (its cascade sum), so the
 * results equal torch's bit for bit; mean divides by n as torch does. */
float tg_k_sum_all(const float *x, int64_t n);
void tg_k_sum_dim(const float *x, float *y, int64_t outer, int n, int64_t inner, bool mean);
/* max along the dim: values y and first argmax idx */
void tg_k_max_dim(const float *x, float *y, int32_t *idx, int64_t outer, int n, int64_t inner);

/* LayerNorm over rows of length n: y = (x - mean) * rstd * scale + shift,
 * saving mean and rstd per row for the backward. */
void tg_k_layernorm(const float *x, const float *scale, const float *shift, float *y, float *mean, float *rstd,
                    int64_t rows, int n, float eps);
/* gx (+)= dx (added when gx_accumulate, else written); gscale, gshift +=.
 * Any of the three may be NULL. */
void tg_k_layernorm_backward(const float *x, const float *scale, const float *mean, const float *rstd,
                             const float *dy, float *gx, bool gx_accumulate, float *gscale, float *gshift,
                             int64_t rows, int n);

/* Permute a contiguous tensor of shape in_shape (ndim) by dims into out. */
void tg_k_permute(const float *x, float *y, int ndim, const int *in_shape, const int *dims);
/* Inverse-accumulate: gx += permute^-1(gy). */
void tg_k_permute_backward(const float *gy, float *gx, int ndim, const int *in_shape, const int *dims);

/* ---------------------------------------------------------------- random
 * tg_random_bits takes an AVX-512 path when the CPU has it; on sets the
 * portable path instead (tests compare the two). Returns the old setting. */
bool tg_k_random_bits_portable(bool on);

#endif /* TG_KERNELS_H */

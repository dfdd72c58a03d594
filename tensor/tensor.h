/*
 * tensor/tensor.h — the tensor layer's public contract.
 *
 * A tg_tensor is a float32, contiguous, row-major n-d array of at most
 * TG_MAX_DIMS dimensions, in PyTorch dimension order (outermost first).
 * This layer knows nothing of the tape: it holds the data type, creation,
 * printing, the torch-compatible random generator, the growing arena that
 * op outputs live in, and the one error path every layer reports through.
 * The numeric kernels live apart, in tensor/kernels.h.
 */
#ifndef TG_TENSOR_H
#define TG_TENSOR_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TG_MAX_DIMS 4

/* Where a tensor's memory comes from. */
typedef enum {
    TG_STORAGE_HEAP = 0, /* malloc'd; the caller owns it and calls tg_free() */
    TG_STORAGE_ARENA = 1 /* from an arena; released when that arena is reset */
} tg_storage;

struct tg_tape;   /* the autograd layer's tape (opaque here) */
struct tg_tensor;

/* A gradient hook on a tensor (registered and run by the autograd layer:
 * tg_register_hook in autograd.h). A tensor owns its list: a heap tensor's
 * records are malloc'd and tg_free() frees them; an op output's come from
 * its tape's arena and die with it. */
typedef struct tg_hook {
    void (*fn)(struct tg_tensor *t, float *grad, void *ctx);
    void *ctx;
    struct tg_tensor *tensor;
    struct tg_hook *next;
    bool heap;
} tg_hook;

typedef struct tg_tensor {
    float *data;          /* numel floats, contiguous, row-major */
    float *grad;          /* same layout as data; NULL until a gradient arrives */
    int64_t numel;        /* product of shape; 1 for a 0-d (scalar) tensor */
    int ndim;             /* 0..TG_MAX_DIMS */
    int shape[TG_MAX_DIMS];
    bool requires_grad;   /* leaves: set by the user; op outputs: inherited */
    bool data_borrowed;   /* data belongs to another tensor (views) */
    uint8_t storage;      /* tg_storage */
    int node;             /* tape entry that produced it, -1 for a leaf */
    struct tg_tape *tape; /* the tape holding that entry; NULL for a leaf */
    tg_hook *hooks;       /* gradient hooks, NULL for none */
    const char *name;     /* optional, for printing and debugging */
} tg_tensor;

/* ---------------------------------------------------------------- errors
 * Every layer reports misuse through tg_error(): op (or file) name first,
 * then a printf-style reason, e.g.
 *   tg_matmul: shapes [2,6,3] and [2,4] do not match
 * The default handler prints "tapegrad: <op>: <reason>" on stderr and calls
 * abort(), so a debugger stops right at the fault. A program may install its
 * own handler (tests longjmp out of it); if a handler returns, tg_error()
 * still aborts: execution never continues past bad input with garbage.
 */
typedef void (*tg_error_handler)(const char *op, const char *msg, void *user);
/* Install handler (NULL restores the default); returns the previous one. */
tg_error_handler tg_set_error_handler(tg_error_handler h, void *user);
#if defined(__GNUC__)
__attribute__((noreturn, format(printf, 2, 3)))
#endif
void tg_error(const char *op, const char *fmt, ...);
/* tg_error(op, "<what> is NULL") when p is NULL: the check every entry
 * point makes on its pointer arguments. */
void tg_check_ptr(const char *op, const void *p, const char *what);

/* The error return of every function that reports into a caller's buffer
 * (char *err, size_t errsize): formats the message into err (when err is not
 * NULL and size > 0), folds any newline to a space so it stays one line, and
 * returns -1, so that `return tg_fail(err, errsize, "...", ...);` is the
 * whole error path. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
int tg_fail(char *err, size_t size, const char *fmt, ...);
/* Formats a shape as "[2,6,3]" into buf (TG_SHAPE_STR_LEN bytes); returns
 * buf. Never writes more: a shape too long to fit ends in ",...]". */
#define TG_SHAPE_STR_LEN 64
char *tg_shape_str(char *buf, int ndim, const int *shape);

/* ---------------------------------------------------------------- arena
 * A bump allocator that grows by itself. tg_arena_reset() rewinds it; if it
 * had to grow during the last round it coalesces into one block big enough
 * for everything, so from the second identical round on it never mallocs.
 */
typedef struct tg_arena tg_arena;
tg_arena *tg_arena_new(size_t initial_bytes);
void tg_arena_free(tg_arena *a);
void *tg_arena_alloc(tg_arena *a, size_t bytes);  /* 64-byte aligned, uninitialised */
void tg_arena_reset(tg_arena *a);
size_t tg_arena_used(const tg_arena *a);
size_t tg_arena_capacity(const tg_arena *a);
size_t tg_arena_mallocs(const tg_arena *a);      /* blocks malloc'd so far, ever */

/* ---------------------------------------------------------------- creation
 * All creation functions return heap tensors the caller frees with tg_free().
 * Shapes are given as (ndim, shape[]); the TG_SHAPE helper spells them:
 *   tg_tensor *x = tg_zeros(TG_SHAPE(2, 3));
 */
#define TG_SHAPE(...) (int)(sizeof((int[]){__VA_ARGS__}) / sizeof(int)), (const int[]){__VA_ARGS__}

tg_tensor *tg_empty(int ndim, const int *shape);               /* uninitialised */
tg_tensor *tg_zeros(int ndim, const int *shape);
tg_tensor *tg_ones(int ndim, const int *shape);
tg_tensor *tg_full(int ndim, const int *shape, float value);
tg_tensor *tg_from_array(int ndim, const int *shape, const float *values); /* copies */
tg_tensor *tg_scalar(float value);                              /* 0-d */
tg_tensor *tg_arange(float start, float end, float step);       /* 1-d, like torch.arange */
tg_tensor *tg_copy(const tg_tensor *t);       /* deep copy of data (not grad) onto the heap */
/* Allocates a tensor struct and its data from arena a (or the heap if a is
 * NULL). Used by the autograd layer for op outputs. */
tg_tensor *tg_tensor_alloc(tg_arena *a, int ndim, const int *shape);
/* Frees a heap tensor and its grad; a NULL or arena tensor is ignored. */
void tg_free(tg_tensor *t);

tg_tensor *tg_set_name(tg_tensor *t, const char *name);       /* returns t */
tg_tensor *tg_requires_grad(tg_tensor *t, bool on);           /* returns t */
/* The gradient buffer of t, allocated zero-filled from arena a (or the heap
 * for heap tensors) on first use. */
float *tg_grad_buffer(tg_tensor *t, tg_arena *a);
void tg_zero_grad_tensor(tg_tensor *t);       /* grad := 0 (keeps the buffer) */

bool tg_same_shape(const tg_tensor *a, const tg_tensor *b);
int64_t tg_shape_numel(int ndim, const int *shape);
/* Elementwise copy of src's values into dst (same numel); no autograd. */
void tg_copy_data(tg_tensor *dst, const tg_tensor *src);
/* In-place, non-differentiable: zero the elements below / above diagonal d of
 * the last two dims, like torch.Tensor.triu_ / tril_. */
void tg_triu_(tg_tensor *t, int diagonal);
void tg_tril_(tg_tensor *t, int diagonal);

/* ---------------------------------------------------------------- printing
 * PyTorch's style: tensor([[0.4419, 0.6515, 0.5683]]). 4 decimals, or
 * scientific notation when the magnitudes call for it, like torch. */
void tg_print(const tg_tensor *t);                 /* to stdout, newline */
void tg_fprint(FILE *f, const tg_tensor *t);
/* Prints t's gradient the same way, or "None" when it has none yet. */
void tg_print_grad(const tg_tensor *t);
/* Prints into buf (snprintf semantics); returns the length it needed. */
int tg_snprint(char *buf, size_t size, const tg_tensor *t);

/* ---------------------------------------------------------------- random
 * A generator reproducing PyTorch's CPU generator (mt19937): after
 * tg_manual_seed(g, s), rand / uniform / randn / bernoulli / normal give the
 * same numbers as torch after torch.manual_seed(s), for the same shapes and
 * call order. The caller owns generators; tg_default_generator() is a
 * process-wide instance seeded with 67280421310721 like torch's, and a NULL
 * generator argument means that one.
 */
typedef struct tg_generator {
    uint32_t state[624];
    int index;
    uint64_t seed;
    bool has_next_double_normal;   /* torch caches the second Box-Muller value */
    double next_double_normal;
} tg_generator;

void tg_manual_seed(tg_generator *g, uint64_t seed);
tg_generator *tg_default_generator(void);
uint32_t tg_random_u32(tg_generator *g);   /* one mt19937 draw */
uint64_t tg_random_u64(tg_generator *g);   /* two draws, first is the high word */
double tg_random_double(tg_generator *g);  /* 53-bit uniform [0,1) as torch's double path */
float tg_random_float(tg_generator *g);    /* 24-bit uniform [0,1) as torch's float path */

/* n values v[i] = (double uniform < p) ? on : 0, drawing exactly what n
 * bernoulli(p) draws would: torch's dropout mask in one call. */
void tg_random_mask(tg_generator *g, int64_t n, double p, float on, float *v);
/* The same draws, one bit per element: bit k % 64 of bits[k / 64] is set
 * when element k would be kept (bits needs (n + 63) / 64 words). */
void tg_random_bits(tg_generator *g, int64_t n, double p, uint64_t *bits);

/* In-place fills (torch.Tensor.uniform_, normal_, bernoulli_): */
void tg_uniform_(tg_tensor *t, float from, float to, tg_generator *g);
void tg_normal_(tg_tensor *t, float mean, float std, tg_generator *g);
void tg_bernoulli_(tg_tensor *t, double p, tg_generator *g);
/* New heap tensors (torch.rand, torch.randn, and an empty tensor + uniform_): */
tg_tensor *tg_rand(tg_generator *g, int ndim, const int *shape);
tg_tensor *tg_randn(tg_generator *g, int ndim, const int *shape);
tg_tensor *tg_uniform(tg_generator *g, float from, float to, int ndim, const int *shape);

/* ---------------------------------------------------------------- files
 * The one way the library and its programs replace a file (checkpoints,
 * plots, rewritten logs): the bytes go to a temp file "<path>.XXXXXX.tmp" in
 * the target's directory, which is fsync'ed and then renamed over the target,
 * so a reader sees the old file or the whole new one, never a part.
 *   - A new file gets 0666 & ~umask from open(2) itself (the process umask is
 *     never touched, so other threads are safe); an existing target keeps its
 *     mode.
 *   - A target the caller may not write is refused ("Permission denied"), as
 *     cp(1) refuses it; root may replace it, as with cp.
 *   - Any failure (creating the temp file, write, fsync, close, rename; ENOSPC,
 *     EIO, ...) removes the temp file, leaves the old target as it was, sets
 *     msg to one line "<path>: <what failed>: <strerror>" and returns errno.
 * Writes are buffered and any amount streams through a fixed buffer. After a
 * failure the later calls do nothing, so a caller checks once, at commit:
 *     tg_atomic_file f;
 *     tg_atomic_open(&f, path);
 *     tg_atomic_write(&f, p, n); tg_atomic_printf(&f, "%d\n", x); ...
 *     if (tg_atomic_commit(&f) != 0) report(f.msg);
 * Every tg_atomic_open is ended by exactly one commit or abort.
 */
typedef struct tg_atomic_file {
    int fd;              /* the temp file; -1 when not open */
    int err;             /* the first errno, 0 while all is well */
    unsigned mode;       /* the existing target's mode, or ~0u for a new file */
    char *path, *tmp;    /* target and temp names (malloc'd) */
    unsigned char *buf;  /* write buffer of TG_ATOMIC_BUF bytes */
    size_t nbuf;
    char msg[512];       /* the failure, "<path>: <what>: <reason>" */
} tg_atomic_file;
#define TG_ATOMIC_BUF ((size_t)1 << 16)

/* Starts replacing path; returns 0 or the errno (also kept in f). */
int tg_atomic_open(tg_atomic_file *f, const char *path);
/* Appends n bytes; returns 0 or the first error so far. */
int tg_atomic_write(tg_atomic_file *f, const void *p, size_t n);
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
int tg_atomic_printf(tg_atomic_file *f, const char *fmt, ...);
/* Flushes, fsyncs and renames over the target; returns 0 or the errno of the
 * first failure (f->msg says what). Frees what open allocated. */
int tg_atomic_commit(tg_atomic_file *f);
/* Gives up: removes the temp file, leaves the target as it was. */
void tg_atomic_abort(tg_atomic_file *f);
/* The whole of data[0..n) as path's new contents; msg (size bytes, may be
 * NULL) gets the failure line. Returns 0 or errno. */
int tg_write_file(const char *path, const void *data, size_t n, char *msg, size_t size);

/* ---------------------------------------------------------------- threads
 * The kernels split large loops over a small pthread pool (the caller's
 * thread works too). 1 = single-threaded; the default is 1 unless the
 * environment sets TG_THREADS. Set it from one thread, between ops. Ops may
 * run in several user threads at once (each has its own current tape); a
 * kernel that finds the pool busy with another thread's job runs inline. */
void tg_set_num_threads(int n);
int tg_get_num_threads(void);

#endif /* TG_TENSOR_H */

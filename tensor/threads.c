/* tensor/threads.c — a small persistent pthread pool for tg_parallel_for.
 * The calling thread takes chunks too, so n threads means n-1 workers.
 * Between jobs a worker spins briefly on the job counter (a training step
 * issues jobs back to back, and a condition-variable wake-up costs more than
 * a small kernel), then sleeps on a condition variable. A tg_parallel_for
 * issued from inside a chunk runs inline: nested parallelism is serial. */
#include "kernels.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#define TG_MAX_THREADS 64

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* One job at a time: a second user thread calling in meanwhile runs its
 * loop inline rather than wait (or clobber the job). */
static pthread_mutex_t g_job_mu = PTHREAD_MUTEX_INITIALIZER;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    pthread_t tid[TG_MAX_THREADS];
    int n_workers;           /* threads started */
    int n_threads;           /* configured (>= 1) */
    int job_threads;         /* the current job's: n_threads when it started (workers 0.. job_threads - 2 take part) */
    bool configured;
    /* the current job */
    tg_range_fn fn;
    void *ctx;
    int64_t n, chunk;
    int n_chunks;
    int next;                /* next chunk to take */
    bool quit;               /* set at exit: workers return */
    int pending;             /* chunks not finished */
    bool each;               /* tg_parallel_each: one chunk per thread */
    unsigned long generation;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .start = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

static _Thread_local unsigned long t_each_generation; /* the last each-job this thread ran a chunk of */

static void run_chunks(void)
{
    /* called with pool.mu held; returns with it held */
    while (pool.next < pool.n_chunks) {
        if (pool.each) { /* one chunk per thread, so every thread runs one */
            if (t_each_generation == pool.generation)
                break;
            t_each_generation = pool.generation;
        }
        int c = pool.next++;
        tg_range_fn fn = pool.fn;
        void *ctx = pool.ctx;
        int64_t i0 = c * pool.chunk, i1 = i0 + pool.chunk;
        if (i1 > pool.n)
            i1 = pool.n;
        pthread_mutex_unlock(&pool.mu);
        fn(ctx, i0, i1);
        pthread_mutex_lock(&pool.mu);
        if (--pool.pending == 0)
            pthread_cond_broadcast(&pool.done);
    }
}

static _Thread_local bool t_in_chunk;

typedef struct {
    unsigned long generation; /* the generation before the job it was started for */
    int index;                /* 0 .. n_workers - 1 */
} worker_start;

static worker_start g_starts[TG_MAX_THREADS];

static void *worker(void *arg)
{
    t_in_chunk = true;
    const worker_start *ws = arg;
    pthread_mutex_lock(&pool.mu);
    /* the generation before the job it was started for, so it joins that
     * job (tg_parallel_each needs every thread in it) */
    unsigned long seen = ws->generation;
    const int index = ws->index;
    for (;;) {
        if (pool.generation == seen && !pool.quit) {
            /* spin a little without the lock before sleeping */
            pthread_mutex_unlock(&pool.mu);
            for (int spin = 0; spin < 2000 && __atomic_load_n(&pool.generation, __ATOMIC_ACQUIRE) == seen; spin++)
                cpu_relax();
            pthread_mutex_lock(&pool.mu);
            while (pool.generation == seen && !pool.quit) /* (a worker started late may have missed the quit) */
                pthread_cond_wait(&pool.start, &pool.mu);
        }
        seen = pool.generation;
        if (pool.quit)
            break;
        if (index < pool.job_threads - 1) /* a worker past the thread count set for this job sits it out */
            run_chunks();
    }
    pthread_mutex_unlock(&pool.mu);
    tg_k_release_scratch();
    return NULL;
}

/* At exit: wake the workers, let them return, and join them, so nothing
 * of theirs is left for a leak checker. */
static void shutdown_pool(void)
{
    pthread_mutex_lock(&pool.mu);
    pool.quit = true;
    __atomic_add_fetch(&pool.generation, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pool.start);
    const int n = pool.n_workers;
    pool.n_workers = 0;
    pthread_mutex_unlock(&pool.mu);
    for (int i = 0; i < n; i++)
        pthread_join(pool.tid[i], NULL);
    tg_k_release_scratch(); /* the exiting thread's own */
}

bool tg_in_parallel_region(void) { return t_in_chunk; }

static void configure_default(void)
{
    if (pool.configured)
        return;
    const char *env = getenv("TG_THREADS");
    int n = env ? atoi(env) : 1;
    pool.n_threads = n >= 1 ? (n > TG_MAX_THREADS ? TG_MAX_THREADS : n) : 1;
    pool.configured = true;
}

void tg_set_num_threads(int n)
{
    pthread_mutex_lock(&pool.mu);
    pool.configured = true;
    pool.n_threads = n < 1 ? 1 : (n > TG_MAX_THREADS ? TG_MAX_THREADS : n);
    pthread_mutex_unlock(&pool.mu);
}

int tg_get_num_threads(void)
{
    configure_default();
    return pool.n_threads;
}

/* The pool's job: fn over [0, n) in chunks of `chunk`, or with each, one
 * chunk [i, i+1) per thread, the caller's included, on as many threads as
 * tg_set_num_threads last set. Returns false, running nothing, when another
 * user thread has the pool or no worker could start (the caller then runs
 * the loop inline). */
static bool run_job(int64_t n, int64_t chunk, bool each, tg_range_fn fn, void *ctx);

void tg_parallel_for(int64_t n, int64_t min_chunk, tg_range_fn fn, void *ctx)
{
    configure_default();
    int t = t_in_chunk ? 1 : pool.n_threads;
    if (min_chunk < 1)
        min_chunk = 1;
    if (t > 1 && n / min_chunk < t)
        t = (int)(n / min_chunk);
    if (t <= 1) {
        if (n > 0)
            fn(ctx, 0, n);
        return;
    }
    /* several chunks per thread, claimed dynamically: a thread that the OS
     * preempts (a shared machine) then holds up at most a small piece */
    int64_t chunk = (n + 4 * t - 1) / (4 * t);
    if (chunk < min_chunk)
        chunk = min_chunk;
    if (!run_job(n, chunk, false, fn, ctx))
        fn(ctx, 0, n);
}

bool tg_parallel_each(tg_range_fn fn, void *ctx)
{
    configure_default();
    if (t_in_chunk || pool.n_threads <= 1) {
        fn(ctx, 0, 1);
        return !t_in_chunk;
    }
    if (!run_job(0, 1, true, fn, ctx)) {
        fn(ctx, 0, 1);
        return false;
    }
    return true;
}

static bool run_job(int64_t n, int64_t chunk, bool each, tg_range_fn fn, void *ctx)
{
    if (pthread_mutex_trylock(&g_job_mu) != 0)
        return false;
    pthread_mutex_lock(&pool.mu);
    static bool registered;
    if (!registered) {
        atexit(shutdown_pool);
        registered = true;
    }
    while (pool.n_workers < pool.n_threads - 1 && !pool.quit) {
        g_starts[pool.n_workers] = (worker_start){pool.generation, pool.n_workers};
        if (pthread_create(&pool.tid[pool.n_workers], NULL, worker, &g_starts[pool.n_workers]) != 0)
            break;
        pool.n_workers++;
    }
    if (pool.n_workers == 0) { /* no worker could start: the caller runs the loop inline */
        pthread_mutex_unlock(&pool.mu);
        pthread_mutex_unlock(&g_job_mu);
        return false;
    }
    /* the thread count set now, not the workers started: after a higher
     * count the extra workers sit this job out */
    pool.job_threads = pool.n_workers + 1 < pool.n_threads ? pool.n_workers + 1 : pool.n_threads;
    if (each)
        n = pool.job_threads;
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    pool.each = each;
    pool.chunk = chunk;
    pool.n_chunks = (int)((n + pool.chunk - 1) / pool.chunk);
    pool.next = 0;
    pool.pending = pool.n_chunks;
    __atomic_add_fetch(&pool.generation, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pool.start);
    t_in_chunk = true;
    run_chunks();
    t_in_chunk = false;
    while (pool.pending > 0)
        pthread_cond_wait(&pool.done, &pool.mu);
    pool.each = false;
    pthread_mutex_unlock(&pool.mu);
    pthread_mutex_unlock(&g_job_mu);
    return true;
}

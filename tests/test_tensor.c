/*
 * tests/test_tensor.c — suite "tensor": the generator against torch's CPU
 * generator, creation, arange, triu_/tril_, the arena, and printing against
 * torch's str(). Goldens: tests/golden/ops.txt and tests/golden/print.txt,
 * both written by tests/golden/gen_ops.py.
 *
 * The file writer (tg_atomic_file) is tested with fault injection: this suite
 * is linked with -Wl,--wrap=write,--wrap=fsync,--wrap=rename,--wrap=umask, and
 * the wrappers below fail (or shorten) the calls made on files in the test's
 * directory when a test arms them. The permission case runs this binary again
 * as nobody (setpriv), in a mode-1777 directory.
 */
#include "tensor/kernels.h"
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static golden_file *G;

static void load_goldens(void) { G = golden_open("ops"); }
static void close_goldens(void)
{
    golden_close(G);
    G = NULL;
}

/* Compares got with the golden under key and frees got. The first mismatch
 * is kept in FAIL and asserted by expect_done() at the end of the test, so a
 * failing test still frees everything (clean under valgrind). */
static char FAIL[600];

static void expect_close(tg_tensor *got, const char *key, double atol, double rtol)
{
    tg_tensor *want = golden_tensor(G, key);
    bool same_shape = tg_same_shape(got, want);
    int64_t worst = -1;
    double wv = 0, gv = 0;
    for (int64_t i = 0; same_shape && i < want->numel; i++) {
        double w = want->data[i], x = got->data[i];
        if (!(fabs(x - w) <= atol + rtol * fabs(w)) && worst < 0) {
            worst = i;
            wv = w;
            gv = x;
        }
    }
    char b1[64], b2[64];
    tg_shape_str(b1, got->ndim, got->shape);
    tg_shape_str(b2, want->ndim, want->shape);
    tg_free(got);
    tg_free(want);
    if (FAIL[0])
        return;
    if (!same_shape)
        snprintf(FAIL, sizeof FAIL, "%s: shape %s, expected %s", key, b1, b2);
    else if (worst >= 0)
        snprintf(FAIL, sizeof FAIL, "%s: first mismatch at element %lld: %.9g, torch %.9g (atol %g, rtol %g)", key,
                 (long long)worst, gv, wv, atol, rtol);
}

static void expect_done(void)
{
    char msg[sizeof FAIL];
    memcpy(msg, FAIL, sizeof msg);
    FAIL[0] = '\0';
    ck_assert_msg(msg[0] == '\0', "%s", msg);
}

/* The uniform paths are bit-exact by construction. */
static void assert_exact(tg_tensor *got, const char *key) { expect_close(got, key, 0.0, 0.0); }

/* randn / normal_ are bit-exact too: below 16 elements torch's double
 * Box-Muller path, from 16 on its AVX2 kernel (emulated operation for
 * operation in tensor/rng.c). */
static void assert_normal(tg_tensor *got, const char *key) { expect_close(got, key, 0.0, 0.0); }

/* ---------------------------------------------------------------- generator */

START_TEST(test_gen_rand_issue_goldens)
{
    tg_generator g;
    tg_manual_seed(&g, 123);
    tg_tensor *t = tg_rand(&g, TG_SHAPE(3, 2));
    const float want[6] = {0.2961f, 0.5166f, 0.2517f, 0.6886f, 0.0740f, 0.8665f};
    float got[7];
    memcpy(got, t->data, 6 * sizeof(float));
    assert_exact(t, "gen.rand_123");
    tg_manual_seed(&g, 0);
    t = tg_rand(&g, TG_SHAPE(1));
    got[6] = t->data[0];
    assert_exact(t, "gen.rand_0");
    for (int i = 0; i < 6; i++)
        ck_assert_msg(fabsf(got[i] - want[i]) <= 5e-5f, "seed 123 rand(3,2)[%d] = %.6f, issue says %.4f", i,
                      (double)got[i], (double)want[i]);
    ck_assert_msg(fabsf(got[6] - 0.4963f) <= 5e-5f, "seed 0 rand(1) = %.6f, issue says 0.4963", (double)got[6]);
    expect_done();
}
END_TEST

START_TEST(test_gen_mt19937_reference)
{
    /* std::mt19937 with the default seed 5489: the C++ standard fixes the
     * 10000th output at 4123659995; the first is 3499211612. */
    tg_generator g;
    tg_manual_seed(&g, 5489);
    uint32_t first = tg_random_u32(&g), x = first;
    for (int i = 1; i < 10000; i++)
        x = tg_random_u32(&g);
    ck_assert_uint_eq(first, 3499211612u);
    ck_assert_uint_eq(x, 4123659995u);
    /* random64: first draw is the high word */
    tg_manual_seed(&g, 5489);
    uint64_t hi = tg_random_u32(&g), lo = tg_random_u32(&g);
    tg_manual_seed(&g, 5489);
    ck_assert(tg_random_u64(&g) == ((hi << 32) | lo));
    tg_manual_seed(&g, 5489);
    ck_assert(tg_random_double(&g) == (double)(((hi << 32) | lo) & ((1ull << 53) - 1)) / 9007199254740992.0);
    tg_manual_seed(&g, 5489);
    ck_assert(tg_random_float(&g) == (float)(hi & 0xFFFFFFu) / 16777216.0f);
}
END_TEST

/* The plain scalar mt19937 of the C++ standard, one word at a time (the
 * library's twist is vectorised and its dropout draws temper 16 words per
 * vector): the reference for the fast paths below. */
typedef struct {
    uint32_t s[624];
    int i;
} ref_mt;

static void ref_mt_seed(ref_mt *r, uint32_t seed)
{
    r->s[0] = seed;
    for (int j = 1; j < 624; j++)
        r->s[j] = 1812433253u * (r->s[j - 1] ^ (r->s[j - 1] >> 30)) + (uint32_t)j;
    r->i = 624;
}

static uint32_t ref_mt_next(ref_mt *r)
{
    if (r->i >= 624) {
        for (int k = 0; k < 624; k++) {
            const uint32_t y = (r->s[k] & 0x80000000u) | (r->s[(k + 1) % 624] & 0x7fffffffu);
            r->s[k] = r->s[(k + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        r->i = 0;
    }
    uint32_t y = r->s[r->i++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
}

/* torch's bernoulli draw: 53 bits of (first << 32 | second) * 2^-53 < p */
static bool ref_keep(ref_mt *r, double p)
{
    const uint64_t hi = ref_mt_next(r), lo = ref_mt_next(r);
    return (double)(((hi << 32) | lo) & ((1ull << 53) - 1)) * (1.0 / 9007199254740992.0) < p;
}

START_TEST(test_gen_fast_paths_match_scalar_mt19937)
{
    /* odd and even start offsets into the state, lengths around the vector
     * (8), word (64) and state-block (312 pairs) sizes, and runs over several
     * twists; tg_random_bits on both of its paths and tg_random_mask */
    static const int skips[] = {0, 1, 2, 7, 311, 623};
    static const int64_t lens[] = {1, 5, 8, 9, 63, 64, 65, 129, 311, 312, 313, 1000, 4099};
    static const double ps[] = {0.9, 0.5, 0.03};
    uint64_t bits[4099 / 64 + 1];
    float mask[4099];
    for (int path = 0; path < 2; path++) {
        const bool was = tg_k_random_bits_portable(path == 1);
        for (size_t a = 0; a < sizeof skips / sizeof *skips; a++)
            for (size_t b = 0; b < sizeof lens / sizeof *lens; b++) {
                const double p = ps[(a + b) % 3];
                const int64_t n = lens[b];
                const uint32_t seed = (uint32_t)(1000 + 17 * a + b);
                tg_generator g;
                ref_mt r;
                tg_manual_seed(&g, seed);
                ref_mt_seed(&r, seed);
                for (int i = 0; i < skips[a]; i++)
                    if (tg_random_u32(&g) != ref_mt_next(&r))
                        ck_abort_msg("skip %d: word %d differs", skips[a], i);
                /* three calls in a row, so later ones start mid-state */
                for (int rep = 0; rep < 3; rep++) {
                    tg_random_bits(&g, n, p, bits);
                    /* (plain compares, ck_assert only on a mismatch: ASan runs this too) */
                    for (int64_t e = 0; e < n; e++)
                        if ((bool)(bits[e >> 6] >> (e & 63) & 1) != ref_keep(&r, p))
                            ck_abort_msg("portable=%d skip %d n %lld rep %d: bit %lld", path, skips[a],
                                         (long long)n, rep, (long long)e);
                    for (int64_t e = n; e < (n + 63) / 64 * 64; e++)
                        if (bits[e >> 6] >> (e & 63) & 1)
                            ck_abort_msg("bit %lld past n = %lld is set", (long long)e, (long long)n);
                    tg_random_mask(&g, n, p, 2.5f, mask);
                    for (int64_t e = 0; e < n; e++)
                        if (mask[e] != (ref_keep(&r, p) ? 2.5f : 0.0f))
                            ck_abort_msg("tg_random_mask: skip %d n %lld: element %lld", skips[a], (long long)n,
                                         (long long)e);
                }
                ck_assert_uint_eq(tg_random_u32(&g), ref_mt_next(&r));
            }
        tg_k_random_bits_portable(was);
    }
    /* a long run: hundreds of twists of the vectorised state update */
    tg_generator g;
    ref_mt r;
    tg_manual_seed(&g, 42);
    ref_mt_seed(&r, 42);
    for (int i = 0; i < 624 * 300; i++)
        if (tg_random_u32(&g) != ref_mt_next(&r))
            ck_abort_msg("word %d differs from the scalar mt19937", i);
}
END_TEST

/* p placed exactly at one draw's 53-bit value m (threshold m: dropped) and
 * one above it (threshold m + 1: kept), so the compares meet an equal high
 * word and an equal value, on both paths of tg_random_bits and in
 * tg_random_mask. Random p hit such a tie about once in millions of draws,
 * so the test above passes a compare of the high 21 bits alone, or <= for <. */
START_TEST(test_gen_bits_threshold_ties)
{
    enum { N = 100 };
    uint64_t bits[(N + 63) / 64];
    float mask[N];
    for (int path = 0; path < 2; path++) {
        const bool was = tg_k_random_bits_portable(path == 1);
        for (int k = 0; k < N; k += 9)
            for (int above = 0; above < 2; above++) {
                ref_mt r;
                ref_mt_seed(&r, 5);
                ref_mt peek = r;
                for (int i = 0; i < 2 * k; i++)
                    ref_mt_next(&peek);
                const uint64_t hi = ref_mt_next(&peek), lo = ref_mt_next(&peek);
                const uint64_t m = ((hi << 32) | lo) & ((1ull << 53) - 1);
                const double p = (double)(m + (uint64_t)above) / 9007199254740992.0; /* exact */
                tg_generator g;
                tg_manual_seed(&g, 5);
                tg_random_bits(&g, N, p, bits);
                ck_assert_msg((bits[k >> 6] >> (k & 63) & 1) == (uint64_t)above,
                              "portable=%d: draw %d with p at its value%s: kept %d", path, k, above ? " + 1" : "",
                              (int)(bits[k >> 6] >> (k & 63) & 1));
                for (int e = 0; e < N; e++)
                    if ((bool)(bits[e >> 6] >> (e & 63) & 1) != ref_keep(&r, p))
                        ck_abort_msg("portable=%d p at draw %d%s: bit %d", path, k, above ? " + 1" : "", e);
                tg_manual_seed(&g, 5);
                tg_random_mask(&g, N, p, 1.0f, mask);
                ck_assert_msg(mask[k] == (float)above, "tg_random_mask: draw %d with p at its value%s", k,
                              above ? " + 1" : "");
            }
        tg_k_random_bits_portable(was);
    }
}
END_TEST

START_TEST(test_gen_rand_sequence)
{
    tg_generator g;
    tg_manual_seed(&g, 42);
    tg_tensor *a = tg_rand(&g, TG_SHAPE(5));
    tg_tensor *b = tg_rand(&g, TG_SHAPE(2, 3));
    tg_tensor *c = tg_rand(&g, TG_SHAPE(1000));
    tg_tensor *d = tg_rand(&g, TG_SHAPE(4));
    assert_exact(a, "gen.seq.a");
    assert_exact(b, "gen.seq.b");
    assert_exact(c, "gen.seq.c");
    assert_exact(d, "gen.seq.d");
    expect_done();
}
END_TEST

START_TEST(test_gen_uniform)
{
    tg_generator g;
    tg_manual_seed(&g, 7);
    tg_tensor *a = tg_uniform(&g, -2.0f, 3.0f, TG_SHAPE(4, 5));
    tg_tensor *b = tg_empty(TG_SHAPE(7));
    tg_uniform_(b, 0.5f, 0.75f, &g);
    assert_exact(a, "gen.uniform.a");
    assert_exact(b, "gen.uniform.b");
    expect_done();
}
END_TEST

START_TEST(test_gen_randn_small_cached)
{
    /* n < 16: double Box-Muller; randn(3) leaves a cached value that randn(5) starts with. */
    tg_generator g;
    tg_manual_seed(&g, 1);
    tg_tensor *a = tg_randn(&g, TG_SHAPE(3));
    tg_tensor *b = tg_randn(&g, TG_SHAPE(5));
    tg_tensor *c = tg_randn(&g, TG_SHAPE(1));
    tg_tensor *d = tg_randn(&g, TG_SHAPE(2, 3));
    assert_exact(a, "gen.randn_small.a");
    assert_exact(b, "gen.randn_small.b");
    assert_exact(c, "gen.randn_small.c");
    assert_exact(d, "gen.randn_small.d");
    expect_done();
}
END_TEST

START_TEST(test_gen_randn_16)
{
    tg_generator g;
    tg_manual_seed(&g, 2);
    tg_tensor *a = tg_randn(&g, TG_SHAPE(16));
    tg_tensor *b = tg_randn(&g, TG_SHAPE(4, 4));
    assert_normal(a, "gen.randn16.a");
    assert_normal(b, "gen.randn16.b");
    expect_done();
}
END_TEST

START_TEST(test_gen_randn_ragged_and_mixed)
{
    /* 37 and 100 hit the tail redo; the >= 16 path leaves the small path's cache alone. */
    tg_generator g;
    tg_manual_seed(&g, 3);
    tg_tensor *t[5];
    t[0] = tg_randn(&g, TG_SHAPE(3));
    t[1] = tg_randn(&g, TG_SHAPE(37));
    t[2] = tg_randn(&g, TG_SHAPE(100));
    t[3] = tg_randn(&g, TG_SHAPE(1));
    t[4] = tg_randn(&g, TG_SHAPE(3, 7));
    const char *keys[5] = {"gen.randn_mix.a", "gen.randn_mix.b", "gen.randn_mix.c", "gen.randn_mix.d",
                           "gen.randn_mix.e"};
    for (int i = 0; i < 5; i++) {
        if (t[i]->numel < 16) /* the double path is exact */
            assert_exact(t[i], keys[i]);
        else
            assert_normal(t[i], keys[i]);
    }
    expect_done();
}
END_TEST

START_TEST(test_gen_normal)
{
    tg_generator g;
    tg_manual_seed(&g, 4);
    tg_tensor *a = tg_empty(TG_SHAPE(20)), *b = tg_empty(TG_SHAPE(5)), *c = tg_empty(TG_SHAPE(2, 9));
    tg_normal_(a, 2.0f, 0.5f, &g);
    tg_normal_(b, -1.0f, 3.0f, &g);
    tg_normal_(c, 0.0f, 0.02f, &g);
    assert_normal(a, "gen.normal.a");
    assert_exact(b, "gen.normal.b");
    assert_normal(c, "gen.normal.c");
    expect_done();
}
END_TEST

START_TEST(test_gen_bernoulli)
{
    tg_generator g;
    tg_manual_seed(&g, 5);
    tg_tensor *a = tg_empty(TG_SHAPE(50)), *b = tg_empty(TG_SHAPE(50)), *c = tg_empty(TG_SHAPE(4, 5));
    tg_tensor *d = tg_empty(TG_SHAPE(10));
    tg_bernoulli_(a, 0.3, &g);
    tg_bernoulli_(b, 0.5, &g);
    tg_bernoulli_(c, 0.9, &g);
    tg_bernoulli_(d, 0.0, &g);
    tg_tensor *e = tg_rand(&g, TG_SHAPE(3));
    assert_exact(a, "gen.bernoulli.a");
    assert_exact(b, "gen.bernoulli.b");
    assert_exact(c, "gen.bernoulli.c");
    assert_exact(d, "gen.bernoulli.d");
    assert_exact(e, "gen.bernoulli.e");
    expect_done();
}
END_TEST

START_TEST(test_gen_default_and_big_seed)
{
    ck_assert(tg_default_generator()->seed == 67280421310721ull);
    tg_generator g;
    tg_manual_seed(&g, 67280421310721ull);
    tg_tensor *a = tg_rand(&g, TG_SHAPE(3));
    assert_exact(a, "gen.default");
    tg_manual_seed(&g, (1ull << 40) + 5);
    tg_tensor *b = tg_rand(&g, TG_SHAPE(4));
    assert_exact(b, "gen.bigseed");
    /* re-seeding resets the cached normal: same seed, same numbers */
    tg_manual_seed(&g, 9);
    tg_tensor *c = tg_randn(&g, TG_SHAPE(3));
    tg_manual_seed(&g, 9);
    tg_tensor *d = tg_randn(&g, TG_SHAPE(3));
    ck_assert_mem_eq(c->data, d->data, 3 * sizeof(float));
    tg_free(c);
    tg_free(d);
    expect_done();
}
END_TEST

/* ---------------------------------------------------------------- errors */

typedef struct {
    tg_tensor *t;
    tg_generator g;
    int which;
} rng_err_ctx;

static void rng_err(void *p)
{
    rng_err_ctx *c = p;
    switch (c->which) {
    case 0: tg_uniform_(c->t, 2.0f, 1.0f, &c->g); break;
    case 1: tg_bernoulli_(c->t, 1.5, &c->g); break;
    case 2: tg_normal_(c->t, 0.0f, -1.0f, &c->g); break;
    case 3: tg_free(tg_zeros(TG_SHAPE(2, -1))); break;
    case 4: tg_free(tg_zeros(5, (const int[]){1, 1, 1, 1, 1})); break;
    case 5: tg_free(tg_arange(0.0f, 1.0f, 0.0f)); break;
    case 6: tg_free(tg_arange(0.0f, 1.0f, -1.0f)); break;
    case 7: tg_triu_(c->t, 0); break; /* 1-D */
    }
}

START_TEST(test_tensor_errors)
{
    static const char *ops[8] = {"tg_uniform_", "tg_bernoulli_", "tg_normal_", "tg_", "tg_", "tg_arange",
                                 "tg_arange", "tg_triu_"};
    rng_err_ctx c = {.t = tg_zeros(TG_SHAPE(4)), .which = 0};
    tg_manual_seed(&c.g, 1);
    for (int i = 0; i < 8; i++) {
        char msg[600];
        c.which = i;
        ck_assert_msg(catch_error(rng_err, &c, msg, sizeof msg), "case %d: no error raised", i);
        ck_assert_msg(strncmp(msg, ops[i], strlen(ops[i])) == 0, "case %d: message '%s' should start with %s", i,
                      msg, ops[i]);
    }
    tg_free(c.t);
}
END_TEST

/* ---------------------------------------------------------------- creation */

START_TEST(test_creation)
{
    tg_tensor *z = tg_zeros(TG_SHAPE(2, 3, 4));
    ck_assert_int_eq(z->ndim, 3);
    ck_assert_int_eq(z->shape[0], 2);
    ck_assert_int_eq(z->shape[1], 3);
    ck_assert_int_eq(z->shape[2], 4);
    ck_assert_int_eq(z->numel, 24);
    ck_assert(!z->requires_grad && z->grad == NULL && z->node == -1 && z->storage == TG_STORAGE_HEAP);
    for (int i = 0; i < 24; i++)
        ck_assert(z->data[i] == 0.0f);

    tg_tensor *o = tg_ones(TG_SHAPE(5));
    tg_tensor *f = tg_full(TG_SHAPE(2, 2), -3.25f);
    for (int i = 0; i < 5; i++)
        ck_assert(o->data[i] == 1.0f);
    for (int i = 0; i < 4; i++)
        ck_assert(f->data[i] == -3.25f);

    const float vals[6] = {1, 2, 3, 4, 5, 6};
    tg_tensor *a = tg_from_array(TG_SHAPE(3, 2), vals);
    ck_assert_mem_eq(a->data, vals, sizeof vals);
    ck_assert(a->data != vals);

    tg_tensor *s = tg_scalar(2.5f);
    ck_assert_int_eq(s->ndim, 0);
    ck_assert_int_eq(s->numel, 1);
    ck_assert(s->data[0] == 2.5f);

    tg_tensor *e = tg_empty(TG_SHAPE(4, 1, 2, 3));
    ck_assert_int_eq(e->ndim, 4);
    ck_assert_int_eq(e->numel, 24);

    /* copy is deep and keeps the name, not the grad */
    tg_set_name(a, "a");
    tg_requires_grad(a, true);
    float *ga = tg_grad_buffer(a, NULL);
    for (int i = 0; i < 6; i++)
        ck_assert(ga[i] == 0.0f);
    ga[0] = 7.0f;
    tg_tensor *c = tg_copy(a);
    ck_assert_str_eq(c->name, "a");
    ck_assert(c->grad == NULL);
    ck_assert(c->data != a->data);
    a->data[0] = 100.0f;
    ck_assert(c->data[0] == 1.0f);
    ck_assert(tg_same_shape(a, c));
    ck_assert(!tg_same_shape(a, f));
    tg_zero_grad_tensor(a);
    ck_assert(a->grad[0] == 0.0f);

    tg_tensor *d = tg_zeros(TG_SHAPE(6));
    tg_copy_data(d, c);
    ck_assert_mem_eq(d->data, vals, sizeof vals);

    ck_assert_int_eq(tg_shape_numel(TG_SHAPE(2, 3, 4)), 24);
    ck_assert_int_eq(tg_shape_numel(0, NULL), 1);
    char b[64];
    ck_assert_str_eq(tg_shape_str(b, TG_SHAPE(2, 6, 3)), "[2,6,3]");
    ck_assert_str_eq(tg_shape_str(b, 0, NULL), "[]");

    tg_free(z);
    tg_free(o);
    tg_free(f);
    tg_free(a);
    tg_free(s);
    tg_free(e);
    tg_free(c);
    tg_free(d);
    tg_free(NULL);
}
END_TEST

START_TEST(test_arange)
{
    static const struct {
        const char *key;
        float start, end, step;
    } cases[] = {{"arange.a", 0, 5, 1},      {"arange.b", 0, 1, 0.1f},  {"arange.c", -1, 1, 0.25f},
                 {"arange.d", 10, 0, -3},    {"arange.e", 0.5f, 3.2f, 0.7f}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_tensor *t = tg_arange(cases[i].start, cases[i].end, cases[i].step);
        tg_tensor *want = golden_tensor(G, cases[i].key);
        /* torch steps in double from the double 0.1; we get the float 0.1f */
        assert_tensor_close(t, want, 1e-6, 1e-6, cases[i].key);
        tg_free(t);
        tg_free(want);
    }
}
END_TEST

START_TEST(test_triu_tril_inplace)
{
    static const struct {
        const char *name;
        bool upper;
        int d;
    } cases[] = {{"triu34_0", true, 0},   {"triu34_1", true, 1},   {"triu43_m1", true, -1},
                 {"tril34_0", false, 0},  {"tril34_m1", false, -1}, {"tril233_2", false, 2},
                 {"triu233_1", true, 1},  {"triu34_5", true, 5}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char key[64];
        snprintf(key, sizeof key, "tri.%s.in", cases[i].name);
        tg_tensor *t = golden_tensor(G, key);
        if (cases[i].upper)
            tg_triu_(t, cases[i].d);
        else
            tg_tril_(t, cases[i].d);
        snprintf(key, sizeof key, "tri.%s.out", cases[i].name);
        assert_exact(t, key);
    }
    expect_done();
}
END_TEST

/* ---------------------------------------------------------------- arena */

START_TEST(test_arena_grows_then_stays_warm)
{
    tg_arena *a = tg_arena_new(4096);
    const size_t sizes[] = {1000, 3000, 5000, 17, 20000, 64, 1};
    size_t after_round2 = 0;
    for (int round = 0; round < 6; round++) {
        size_t total = 0;
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            unsigned char *p = tg_arena_alloc(a, sizes[i]);
            ck_assert_msg(((uintptr_t)p % 64) == 0, "allocation not 64-byte aligned");
            memset(p, 0xab, sizes[i]); /* ASan: the whole request is usable */
            total += sizes[i];
        }
        ck_assert(tg_arena_used(a) >= total);
        ck_assert(tg_arena_capacity(a) >= tg_arena_used(a));
        tg_arena_reset(a);
        ck_assert_int_eq(tg_arena_used(a), 0);
        if (round == 1)
            after_round2 = tg_arena_mallocs(a);
        if (round >= 2)
            ck_assert_msg(tg_arena_mallocs(a) == after_round2, "round %d: mallocs grew from %zu to %zu", round,
                          after_round2, tg_arena_mallocs(a));
    }
    ck_assert(after_round2 >= 2); /* it did have to grow past 4096 bytes */
    /* a bigger round grows again, then is warm again */
    for (int round = 0; round < 3; round++) {
        tg_arena_alloc(a, 100000);
        tg_arena_alloc(a, 50000);
        tg_arena_reset(a);
        if (round == 0)
            after_round2 = tg_arena_mallocs(a);
    }
    ck_assert_int_eq(tg_arena_mallocs(a), after_round2);
    tg_arena_free(a);
}
END_TEST

START_TEST(test_arena_tensors)
{
    tg_arena *a = tg_arena_new(0);
    tg_tensor *t = tg_tensor_alloc(a, TG_SHAPE(3, 5));
    ck_assert(t->storage == TG_STORAGE_ARENA);
    ck_assert_int_eq(t->numel, 15);
    ck_assert(t->node == -1 && t->grad == NULL && !t->requires_grad);
    float *g = tg_grad_buffer(t, a);
    for (int i = 0; i < 15; i++)
        ck_assert(g[i] == 0.0f);
    tg_free(t); /* ignored for arena tensors */
    tg_tensor *s = tg_tensor_alloc(a, 0, NULL);
    ck_assert_int_eq(s->numel, 1);
    tg_arena_free(a);
}
END_TEST

/* ---------------------------------------------------------------- printing
 * print.txt: "<name> <escaped str>", \n = newline, \\ = backslash. */

typedef struct {
    char name[64];
    char *text;
} print_entry;

static print_entry *P;
static int NP;

static void load_prints(void)
{
    load_goldens();
    FILE *f = fopen("tests/golden/print.txt", "r");
    ck_assert_msg(f != NULL, "tests/golden/print.txt is missing (run from the repo root)");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int capn = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        if (line[len - 1] == '\n')
            line[--len] = '\0';
        if (len == 0 || line[0] == '#')
            continue;
        char *sp = strchr(line, ' ');
        ck_assert_msg(sp != NULL && sp - line < 64, "print.txt: malformed line '%s'", line);
        if (NP == capn) {
            capn = capn ? 2 * capn : 32;
            P = realloc(P, (size_t)capn * sizeof *P);
        }
        print_entry *e = &P[NP++];
        memcpy(e->name, line, (size_t)(sp - line));
        e->name[sp - line] = '\0';
        e->text = malloc(strlen(sp + 1) + 1);
        char *o = e->text;
        for (const char *p = sp + 1; *p; p++) {
            if (*p == '\\' && p[1] == 'n') {
                *o++ = '\n';
                p++;
            } else if (*p == '\\' && p[1] == '\\') {
                *o++ = '\\';
                p++;
            } else {
                *o++ = *p;
            }
        }
        *o = '\0';
    }
    free(line);
    fclose(f);
}

static void free_prints(void)
{
    for (int i = 0; i < NP; i++)
        free(P[i].text);
    free(P);
    P = NULL;
    NP = 0;
    close_goldens();
}

/* The names gen_ops.py writes, in order (one Check test each). */
static const char *PRINT_NAMES[] = {
    "rand_123", "dropout_book", "negative",  "three_d",   "four_d",      "scalar",      "scalar_neg",
    "scalar_int", "long_1d",    "long_2d",   "ints_neg",  "summ_2d",     "summ_1d_int", "summ_1d",
    "summ_3d",  "sci_mixed",    "sci_small", "sci_big",   "int_ratio",   "causal_mask", "attn_masked",
    "mixed_width", "zeros",     "empty",     "nan_inf",   "int_inf",     "softmax"};
#define N_PRINT ((int)(sizeof PRINT_NAMES / sizeof PRINT_NAMES[0]))

/* Escapes newlines so a failure message shows the strings on one line. */
static void escape(char *dst, size_t size, const char *src)
{
    size_t n = 0;
    for (; *src && n + 3 < size; src++) {
        if (*src == '\n') {
            dst[n++] = '\\';
            dst[n++] = 'n';
        } else {
            dst[n++] = *src;
        }
    }
    dst[n] = '\0';
}

START_TEST(test_print_matches_torch)
{
    const char *name = PRINT_NAMES[_i];
    const print_entry *e = NULL;
    for (int i = 0; i < NP; i++)
        if (strcmp(P[i].name, name) == 0)
            e = &P[i];
    ck_assert_msg(e != NULL, "print.txt has no entry '%s'", name);
    char key[80];
    snprintf(key, sizeof key, "print.%s", name);
    tg_tensor *t = golden_tensor(G, key);
    char buf[8192];
    int n = tg_snprint(buf, sizeof buf, t);
    tg_free(t);
    if (strcmp(buf, e->text) != 0) {
        /* Check caps message length: show the strings from a little before the first difference. */
        size_t k = 0;
        while (buf[k] && buf[k] == e->text[k])
            k++;
        size_t from = k > 160 ? k - 160 : 0;
        static char ge[700], we[700];
        escape(ge, sizeof ge, buf + from);
        escape(we, sizeof we, e->text + from);
        ck_abort_msg("print %s: first difference at char %zu%s\n  expected (torch): %s%s\n  got:              %s%s",
                     name, k, from ? " (both shown from 160 chars before it)" : "", from ? "..." : "", we,
                     from ? "..." : "", ge);
    }
    ck_assert_int_eq(n, (int)strlen(e->text));
}
END_TEST

START_TEST(test_print_file_has_all_entries)
{
    ck_assert_int_eq(NP, N_PRINT);
}
END_TEST

START_TEST(test_print_snprintf_semantics)
{
    tg_tensor *t = golden_tensor(G, "print.three_d");
    char full[4096], small[16];
    int n = tg_snprint(full, sizeof full, t);
    int m = tg_snprint(small, sizeof small, t);
    ck_assert_int_eq(n, m);
    ck_assert_int_eq((int)strlen(full), n);
    ck_assert_int_eq((int)strlen(small), (int)sizeof small - 1);
    ck_assert(strncmp(small, full, sizeof small - 1) == 0);
    ck_assert_int_eq(tg_snprint(NULL, 0, t), n);
    /* tg_fprint writes the same text and a newline */
    char *mem = NULL;
    size_t memlen = 0;
    FILE *f = open_memstream(&mem, &memlen);
    tg_fprint(f, t);
    fclose(f);
    ck_assert_int_eq((int)memlen, n + 1);
    ck_assert(strncmp(mem, full, (size_t)n) == 0 && mem[n] == '\n');
    free(mem);
    /* a big one (> 4096 characters) goes through tg_fprint's heap path */
    tg_tensor *big = tg_full(TG_SHAPE(30, 30), -1.2345f);
    int nb = tg_snprint(NULL, 0, big);
    ck_assert_int_gt(nb, 8000);
    char *bigs = malloc((size_t)nb + 1);
    ck_assert_int_eq(tg_snprint(bigs, (size_t)nb + 1, big), nb);
    f = open_memstream(&mem, &memlen);
    tg_fprint(f, big);
    fclose(f);
    ck_assert_int_eq((int)memlen, nb + 1);
    ck_assert(strncmp(mem, bigs, (size_t)nb) == 0);
    free(mem);
    free(bigs);
    tg_free(big);
    tg_free(t);
}
END_TEST

/* tg_shape_str never writes past its 64-byte buffer: 8 dimensions of 1e9 need
 * 89 characters, and are cut short ("...]") instead. */
START_TEST(test_shape_str_bounded)
{
    int big[8];
    for (int i = 0; i < 8; i++)
        big[i] = 1000000000;
    struct {
        char buf[64];
        char canary[64];
    } s;
    memset(s.canary, 0x5a, sizeof s.canary);
    ck_assert_ptr_eq(tg_shape_str(s.buf, 8, big), s.buf);
    for (size_t i = 0; i < sizeof s.canary; i++)
        ck_assert_msg(s.canary[i] == 0x5a, "tg_shape_str wrote past its buffer (byte %zu)", 64 + i);
    size_t n = strnlen(s.buf, sizeof s.buf);
    ck_assert_uint_lt(n, 64);
    ck_assert_int_eq(strncmp(s.buf, "[1000000000,1000000000,", 23), 0);
    ck_assert_str_eq(s.buf + n - 4, "...]");
    /* exactly 64 heap bytes, so ASan sees any overrun */
    char *h = malloc(64);
    tg_shape_str(h, 8, big);
    ck_assert_uint_lt(strlen(h), 64);
    free(h);
    /* what fits is whole: 4 dimensions of INT_MIN take 48 characters */
    int neg[4] = {-2147483647 - 1, -2147483647 - 1, -2147483647 - 1, -2147483647 - 1};
    char b[64];
    ck_assert_str_eq(tg_shape_str(b, 4, neg), "[-2147483648,-2147483648,-2147483648,-2147483648]");
    ck_assert_str_eq(tg_shape_str(b, -3, NULL), "[]");
}
END_TEST

/* ---------------------------------------------------------------- file writer
 * Fault injection: calls on files under FDIR go through these wrappers; the
 * rest (Check's own output) pass straight through. */
ssize_t __real_write(int fd, const void *p, size_t n);
int __real_fsync(int fd);
int __real_rename(const char *from, const char *to);
mode_t __real_umask(mode_t m);

static char FDIR[256];
static struct {
    long budget;       /* bytes the writes may still take before failing; <0: no limit */
    int write_errno;   /* errno once the budget is spent */
    size_t max_chunk;  /* >0: each write takes at most this many bytes */
    int eintr;         /* the next this-many writes fail with EINTR */
    int fsync_errno, rename_errno;
    long writes, fsyncs, renames, umasks;
} FAULT;

static void fault_reset(void)
{
    memset(&FAULT, 0, sizeof FAULT);
    FAULT.budget = -1;
}

static bool in_fdir(const char *path)
{
    size_t n = strlen(FDIR);
    return n > 0 && strncmp(path, FDIR, n) == 0 && path[n] == '/';
}

static bool fd_in_fdir(int fd)
{
    char link[64], target[512];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return false;
    target[n] = '\0';
    return in_fdir(target);
}

ssize_t __wrap_write(int fd, const void *p, size_t n)
{
    if (!fd_in_fdir(fd))
        return __real_write(fd, p, n);
    FAULT.writes++;
    if (FAULT.eintr > 0) {
        FAULT.eintr--;
        errno = EINTR;
        return -1;
    }
    if (FAULT.max_chunk && n > FAULT.max_chunk)
        n = FAULT.max_chunk;
    if (FAULT.budget >= 0) {
        if (FAULT.budget == 0) {
            errno = FAULT.write_errno;
            return -1;
        }
        if ((long)n > FAULT.budget)
            n = (size_t)FAULT.budget; /* a partial write first, as a full disk does */
    }
    ssize_t w = __real_write(fd, p, n);
    if (w > 0 && FAULT.budget >= 0)
        FAULT.budget -= w;
    return w;
}

int __wrap_fsync(int fd)
{
    if (fd_in_fdir(fd)) {
        FAULT.fsyncs++;
        if (FAULT.fsync_errno) {
            errno = FAULT.fsync_errno;
            return -1;
        }
    }
    return __real_fsync(fd);
}

int __wrap_rename(const char *from, const char *to)
{
    if (in_fdir(to)) {
        FAULT.renames++;
        if (FAULT.rename_errno) {
            errno = FAULT.rename_errno;
            return -1;
        }
    }
    return __real_rename(from, to);
}

mode_t __wrap_umask(mode_t m)
{
    FAULT.umasks++;
    return __real_umask(m);
}

static void fdir_setup(void)
{
    char d[256];
    tmpdir_create(d, sizeof d, "tg_file_");
    ck_assert_ptr_nonnull(realpath(d, FDIR)); /* as /proc/self/fd shows it */
    fault_reset();
}

static void fdir_teardown(void)
{
    tmpdir_remove(FDIR);
    FDIR[0] = '\0';
    fault_reset();
}

static char *fpath(char *buf, const char *name)
{
    snprintf(buf, 512, "%s/%s", FDIR, name);
    return buf;
}

static void put_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    ck_assert_int_eq(chmod(path, mode), 0);
}

static unsigned file_mode(const char *path)
{
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return (unsigned)(st.st_mode & 07777);
}

static int fdir_entries(void)
{
    int n = 0;
    DIR *d = opendir(FDIR);
    ck_assert_ptr_nonnull(d);
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

/* 300 KB of a known pattern, written as printf lines, small writes and one
 * block larger than the buffer, so every path of the buffering runs. */
#define BIG_N (300 * 1024)
static void write_pattern(tg_atomic_file *f, char *want, size_t *nwant)
{
    size_t n = 0;
    for (int i = 0; i < 1000; i++) {
        n += (size_t)sprintf(want + n, "line %d\n", i);
        tg_atomic_printf(f, "line %d\n", i);
    }
    for (size_t i = 0; i < BIG_N; i++)
        want[n + i] = (char)('a' + (i * 7) % 26);
    tg_atomic_write(f, want + n, 10);
    tg_atomic_write(f, want + n + 10, BIG_N - 20); /* > TG_ATOMIC_BUF: straight through */
    tg_atomic_write(f, want + n + BIG_N - 10, 10);
    n += BIG_N;
    *nwant = n;
}

START_TEST(test_file_writer_contents_and_modes)
{
    char p[512];
    char *want = malloc(BIG_N + 20000);
    size_t nwant, ngot;
    mode_t old_umask = __real_umask(027);

    /* a new file: all the bytes, 0666 & ~umask, and the umask never touched */
    tg_atomic_file f;
    ck_assert_int_eq(tg_atomic_open(&f, fpath(p, "new.txt")), 0);
    write_pattern(&f, want, &nwant);
    ck_assert_int_eq(fdir_entries(), 1); /* only the temp file so far */
    ck_assert_int_eq(tg_atomic_commit(&f), 0);
    char *got = read_whole_file(p, &ngot);
    ck_assert_uint_eq(ngot, nwant);
    ck_assert(memcmp(got, want, nwant) == 0);
    free(got);
    ck_assert_uint_eq(file_mode(p), 0640);
    ck_assert_int_eq(FAULT.umasks, 0);
    ck_assert_int_eq(FAULT.fsyncs, 1);
    ck_assert_int_eq(FAULT.renames, 1);
    ck_assert_int_eq(fdir_entries(), 1);

    /* an existing target keeps its mode (0604 is no umask's result) */
    put_file(fpath(p, "old.txt"), "old", 0604);
    ck_assert_int_eq(tg_write_file(p, "new contents", 12, NULL, 0), 0);
    got = read_whole_file(p, &ngot);
    ck_assert_str_eq(got, "new contents");
    free(got);
    ck_assert_uint_eq(file_mode(p), 0604);
    ck_assert_int_eq(chmod(p, 0600), 0);
    ck_assert_int_eq(tg_write_file(p, "x", 1, NULL, 0), 0);
    ck_assert_uint_eq(file_mode(p), 0600);

    /* short writes and EINTR are retried: the file is still whole */
    FAULT.max_chunk = 7;
    FAULT.eintr = 3;
    FAULT.writes = 0;
    tg_atomic_open(&f, fpath(p, "short.txt"));
    write_pattern(&f, want, &nwant);
    ck_assert_int_eq(tg_atomic_commit(&f), 0);
    ck_assert_int_gt(FAULT.writes, (long)(nwant / 7));
    got = read_whole_file(p, &ngot);
    ck_assert_uint_eq(ngot, nwant);
    ck_assert(memcmp(got, want, nwant) == 0);
    free(got);
    fault_reset();

    /* abort leaves the old file and no temp file */
    put_file(fpath(p, "kept.txt"), "kept", 0644);
    int before = fdir_entries();
    tg_atomic_open(&f, p);
    tg_atomic_printf(&f, "never seen");
    tg_atomic_abort(&f);
    got = read_whole_file(p, NULL);
    ck_assert_str_eq(got, "kept");
    free(got);
    ck_assert_int_eq(fdir_entries(), before);
    ck_assert_int_eq(FAULT.umasks, 0);
    __real_umask(old_umask);
    free(want);
}
END_TEST

/* Each injected failure: the old file intact, no temp file, the errno
 * returned, and a message naming the file, the step and the error. */
START_TEST(test_file_writer_faults)
{
    static const struct {
        const char *what;
        long budget;
        int write_errno, fsync_errno, rename_errno;
        const char *step;
    } cases[] = {
        {"disk full half way", 5000, ENOSPC, 0, 0, "write failed"},
        {"disk full at once", 0, ENOSPC, 0, 0, "write failed"},
        {"I/O error", 70000, EIO, 0, 0, "write failed"},
        {"quota", 100, EDQUOT, 0, 0, "write failed"},
        {"fsync fails", -1, 0, EIO, 0, "fsync failed"},
        {"rename fails", -1, 0, 0, EIO, "rename failed"},
        {"rename across devices", -1, 0, 0, EXDEV, "rename failed"},
    };
    char p[512];
    char *want = malloc(BIG_N + 20000);
    size_t nwant;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        put_file(fpath(p, "ckpt.bin"), "the old checkpoint", 0644);
        fault_reset();
        FAULT.budget = cases[c].budget;
        FAULT.write_errno = cases[c].write_errno;
        FAULT.fsync_errno = cases[c].fsync_errno;
        FAULT.rename_errno = cases[c].rename_errno;
        int want_errno = cases[c].write_errno | cases[c].fsync_errno | cases[c].rename_errno;
        tg_atomic_file f;
        ck_assert_int_eq(tg_atomic_open(&f, p), 0);
        write_pattern(&f, want, &nwant);
        int rc = tg_atomic_commit(&f);
        fault_reset();
        ck_assert_msg(rc == want_errno, "%s: returned %d, want %d", cases[c].what, rc, want_errno);
        ck_assert_msg(strstr(f.msg, p) && strstr(f.msg, cases[c].step) && strstr(f.msg, strerror(want_errno)),
                      "%s: message '%s'", cases[c].what, f.msg);
        char *got = read_whole_file(p, NULL);
        ck_assert_msg(strcmp(got, "the old checkpoint") == 0, "%s: old file changed", cases[c].what);
        free(got);
        ck_assert_msg(fdir_entries() == 1, "%s: a temp file was left", cases[c].what);
        /* the one-call form says the same */
        FAULT.budget = cases[c].budget;
        FAULT.write_errno = cases[c].write_errno;
        FAULT.fsync_errno = cases[c].fsync_errno;
        FAULT.rename_errno = cases[c].rename_errno;
        char msg[600];
        rc = tg_write_file(p, want, nwant, msg, sizeof msg);
        fault_reset();
        ck_assert_int_eq(rc, want_errno);
        ck_assert_str_eq(msg, f.msg);
        ck_assert_int_eq(fdir_entries(), 1);
    }
    free(want);

    /* a directory in the way, a missing directory: refused before writing */
    tg_atomic_file f;
    ck_assert_int_eq(mkdir(fpath(p, "adir"), 0755), 0);
    ck_assert_int_eq(tg_atomic_open(&f, p), EISDIR);
    tg_atomic_printf(&f, "ignored");
    ck_assert_int_eq(tg_atomic_commit(&f), EISDIR);
    ck_assert_ptr_nonnull(strstr(f.msg, p));
    rmdir(p);
    ck_assert_int_eq(tg_write_file(fpath(p, "no/such/dir/x"), "x", 1, NULL, 0), ENOENT);
    ck_assert_int_eq(fdir_entries(), 1);
}
END_TEST

/* Run as "<this binary> --atomic-write PATH TEXT": prints the writer's message
 * and exits with its return code (the permission test runs it as nobody). */
static int atomic_write_main(const char *path, const char *text)
{
    char msg[600] = "";
    int rc = tg_write_file(path, text, strlen(text), msg, sizeof msg);
    printf("%s\n", msg);
    return rc;
}

/* Writes TEXT to path as nobody; returns the exit status, msg its output. */
static int write_as_nobody(const char *path, const char *text, char *msg, size_t size)
{
    char self[512];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert_int_gt(n, 0);
    self[n] = '\0';
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(pfd[1], 1);
        close(pfd[0]);
        execl("/usr/bin/setpriv", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", self,
              "--atomic-write", path, text, (char *)NULL);
        _exit(127);
    }
    close(pfd[1]);
    size_t got = 0;
    for (ssize_t r; got + 1 < size && (r = read(pfd[0], msg + got, size - 1 - got)) > 0;)
        got += (size_t)r;
    msg[got] = '\0';
    close(pfd[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 127, "setpriv did not run");
    return WEXITSTATUS(st);
}

/* A read-only file is not replaced by someone who may not write it, even in
 * a directory they may write (rename alone would allow it); root may, as
 * with cp. */
START_TEST(test_file_writer_permission)
{
    char p[512], q[512], msg[700];
    if (geteuid() != 0) {
        /* not root: this process is the user who is refused */
        put_file(fpath(p, "ro.bin"), "read-only", 0444);
        ck_assert_int_eq(tg_write_file(p, "new", 3, msg, sizeof msg), EACCES);
        ck_assert_ptr_nonnull(strstr(msg, p));
        ck_assert_ptr_nonnull(strstr(msg, "Permission denied"));
        char *got = read_whole_file(p, NULL);
        ck_assert_str_eq(got, "read-only");
        free(got);
        ck_assert_int_eq(fdir_entries(), 1);
        return;
    }
    /* nobody may enter and write the directory; only the file's mode refuses */
    ck_assert_int_eq(chmod(FDIR, 01777), 0);
    put_file(fpath(p, "ro.bin"), "read-only", 0444);
    ck_assert_int_eq(chown(p, 65534, 65534), 0);
    put_file(fpath(q, "rw.bin"), "writable", 0640);
    ck_assert_int_eq(chown(q, 65534, 65534), 0);

    int rc = write_as_nobody(p, "replaced", msg, sizeof msg);
    ck_assert_msg(rc == EACCES, "nobody replaced a 0444 file (exit %d: %s)", rc, msg);
    ck_assert_msg(strstr(msg, p) && strstr(msg, "Permission denied"), "message '%s'", msg);
    char *got = read_whole_file(p, NULL);
    ck_assert_str_eq(got, "read-only");
    free(got);
    ck_assert_int_eq(fdir_entries(), 2);
    /* the same user replaces a file they may write, and it keeps its mode */
    rc = write_as_nobody(q, "replaced", msg, sizeof msg);
    ck_assert_msg(rc == 0, "nobody could not replace its own 0640 file: %s", msg);
    got = read_whole_file(q, NULL);
    ck_assert_str_eq(got, "replaced");
    free(got);
    ck_assert_uint_eq(file_mode(q), 0640);
    /* root may replace the read-only file, which stays read-only */
    ck_assert_int_eq(tg_write_file(p, "by root", 7, msg, sizeof msg), 0);
    got = read_whole_file(p, NULL);
    ck_assert_str_eq(got, "by root");
    free(got);
    ck_assert_uint_eq(file_mode(p), 0444);
    ck_assert_int_eq(fdir_entries(), 2);
}
END_TEST

static Suite *tensor_suite(void)
{
    Suite *s = suite_create("tensor");
    TCase *tc = tcase_create("generator");
    tcase_set_timeout(tc, 60); /* the fast-path check runs thousands of twists: seconds under ASan on a loaded machine */
    tcase_add_unchecked_fixture(tc, load_goldens, close_goldens);
    tcase_add_test(tc, test_gen_rand_issue_goldens);
    tcase_add_test(tc, test_gen_mt19937_reference);
    tcase_add_test(tc, test_gen_fast_paths_match_scalar_mt19937);
    tcase_add_test(tc, test_gen_bits_threshold_ties);
    tcase_add_test(tc, test_gen_rand_sequence);
    tcase_add_test(tc, test_gen_uniform);
    tcase_add_test(tc, test_gen_randn_small_cached);
    tcase_add_test(tc, test_gen_randn_16);
    tcase_add_test(tc, test_gen_randn_ragged_and_mixed);
    tcase_add_test(tc, test_gen_normal);
    tcase_add_test(tc, test_gen_bernoulli);
    tcase_add_test(tc, test_gen_default_and_big_seed);
    suite_add_tcase(s, tc);

    tc = tcase_create("creation");
    tcase_add_unchecked_fixture(tc, load_goldens, close_goldens);
    tcase_add_test(tc, test_creation);
    tcase_add_test(tc, test_arange);
    tcase_add_test(tc, test_triu_tril_inplace);
    tcase_add_test(tc, test_tensor_errors);
    tcase_add_test(tc, test_shape_str_bounded);
    tcase_add_test(tc, test_arena_grows_then_stays_warm);
    tcase_add_test(tc, test_arena_tensors);
    suite_add_tcase(s, tc);

    tc = tcase_create("print");
    tcase_add_unchecked_fixture(tc, load_prints, free_prints);
    tcase_add_loop_test(tc, test_print_matches_torch, 0, N_PRINT);
    tcase_add_test(tc, test_print_file_has_all_entries);
    tcase_add_test(tc, test_print_snprintf_semantics);
    suite_add_tcase(s, tc);

    tc = tcase_create("file writer");
    tcase_add_checked_fixture(tc, fdir_setup, fdir_teardown);
    tcase_add_test(tc, test_file_writer_contents_and_modes);
    tcase_add_test(tc, test_file_writer_faults);
    tcase_add_test(tc, test_file_writer_permission);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--atomic-write") == 0)
        return atomic_write_main(argv[2], argv[3]);
    return run_suite(tensor_suite()) ? 1 : 0;
}

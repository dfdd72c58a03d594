/*
 * tests/test_checkpoint.c — safetensors checkpoints, tokenizers, text data.
 *
 * Files are written to a fresh temp directory. Corrupt files are built byte
 * by byte (header text + data), so every check names exactly what is wrong;
 * the expected error code is asserted, and the message must name the file.
 *
 * This suite is linked with -Wl,--wrap=strcmp, so that the name lookups of
 * files with 100k entries can be counted (every name comparison is a strcmp).
 */
#include "testutil.h"

#include "nn/nn.h"

#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[256];

static void setup_dir(void)
{
    tmpdir_create(g_dir, sizeof g_dir, "tg_ckpt_");
}

static void teardown_dir(void) { tmpdir_remove(g_dir); }

static const char *tmp_path(char *buf, const char *name)
{
    snprintf(buf, 512, "%s/%s", g_dir, name);
    return buf;
}

static int count_dir_entries(void)
{
    DIR *d = opendir(g_dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(p, 1, n, f), n);
    fclose(f);
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n ? *n : 1);
    ck_assert_uint_eq(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

/* A file = LE u64 length | header | data (nfloat floats 0, 1, 2, ...). */
static void write_st(const char *path, const char *header, int nfloat)
{
    size_t hl = strlen(header);
    size_t n = 8 + hl + (size_t)nfloat * 4;
    unsigned char *b = malloc(n);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    for (int i = 0; i < nfloat; i++) {
        float v = (float)i;
        memcpy(b + 8 + hl + 4 * (size_t)i, &v, 4);
    }
    write_bytes(path, b, n);
    free(b);
}

/* Opens path and expects code; the message must name the file and hold want. */
static void expect_open(const char *path, tg_st_code code, const char *want)
{
    tg_st_file *f = NULL;
    tg_st_error err;
    int rc = tg_st_open(path, &f, &err);
    ck_assert_msg(rc == (int)code, "%s: expected code %d (%s), got %d: %s", path, code, tg_st_code_name(code), rc,
                  err.msg);
    ck_assert_ptr_null(f);
    ck_assert_int_eq(err.code, code);
    ck_assert_msg(strncmp(err.msg, path, strlen(path)) == 0, "message does not name the file: %s", err.msg);
    ck_assert_msg(strstr(err.msg, want) != NULL, "message '%s' lacks '%s'", err.msg, want);
    ck_assert_ptr_null(strchr(err.msg, '\n'));
}

/* ---------------------------------------------------------------- round trip */

START_TEST(test_round_trip)
{
    char p[512];
    tg_generator g;
    tg_manual_seed(&g, 5);
    tg_tensor *a = tg_randn(&g, TG_SHAPE(3, 4));
    tg_tensor *b = tg_scalar(-2.5f);
    tg_tensor *c = tg_randn(&g, TG_SHAPE(2, 1, 3, 2));
    tg_params ps;
    tg_params_init(&ps);
    tg_params_add(&ps, "m.", "a.weight", a);
    tg_params_add(&ps, "m.", "b", b);
    tg_params_add(&ps, NULL, "c", c);
    tg_st_meta meta;
    tg_st_meta_init(&meta);
    tg_st_meta_set(&meta, "vocab", "\n \"quoted\" \\ tab\t caf\xc3\xa9 \xf0\x9f\x98\x80 \x01");
    tg_st_meta_set(&meta, "step", "42");
    tg_st_error err;
    ck_assert_int_eq(tg_st_save(tmp_path(p, "rt.safetensors"), &ps, &meta, &err), 0);

    /* the layout, read independently of the loader */
    size_t n;
    unsigned char *raw = read_bytes(p, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | raw[i];
    ck_assert_uint_eq(hl % 8, 0);
    ck_assert_uint_eq(n, 8 + hl + 4 * (12 + 1 + 12));
    ck_assert_int_eq(raw[8], '{');
    ck_assert_int_eq(memcmp(raw + 8 + hl, a->data, 48), 0);   /* data in list order */
    ck_assert_int_eq(memcmp(raw + 8 + hl + 48, b->data, 4), 0);
    free(raw);

    tg_st_file *f;
    ck_assert_int_eq(tg_st_open(p, &f, &err), 0);
    ck_assert_int_eq(tg_st_count(f), 3);
    const tg_st_entry *e = tg_st_find(f, "m.a.weight");
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->ndim, 2);
    ck_assert_int_eq(e->shape[0], 3);
    ck_assert_int_eq(e->shape[1], 4);
    ck_assert_int_eq(tg_st_find(f, "m.b")->ndim, 0);
    ck_assert_int_eq(tg_st_find(f, "c")->shape[2], 3);
    ck_assert_str_eq(tg_st_meta_get(tg_st_metadata(f), "vocab"), tg_st_meta_get(&meta, "vocab"));
    ck_assert_str_eq(tg_st_meta_get(tg_st_metadata(f), "step"), "42");

    tg_tensor *a2 = tg_zeros(TG_SHAPE(3, 4)), *b2 = tg_zeros(0, NULL), *c2 = tg_zeros(TG_SHAPE(2, 1, 3, 2));
    tg_params q;
    tg_params_init(&q);
    tg_params_add(&q, "m.", "a.weight", a2);
    tg_params_add(&q, "m.", "b", b2);
    tg_params_add(&q, NULL, "c", c2);
    ck_assert_int_eq(tg_st_load_params(f, &q, NULL, NULL, &err), 0);
    ck_assert_int_eq(memcmp(a->data, a2->data, 48), 0);
    ck_assert_float_eq(b2->data[0], -2.5f);
    ck_assert_int_eq(memcmp(c->data, c2->data, 48), 0);
    tg_st_close(f);

    /* overwrite in place: the new content replaces the old */
    a->data[0] = 123.0f;
    ck_assert_int_eq(tg_st_save(p, &ps, NULL, &err), 0);
    ck_assert_int_eq(tg_st_open(p, &f, &err), 0);
    ck_assert_int_eq(tg_st_read(f, "m.a.weight", a2, &err), 0);
    ck_assert_float_eq(a2->data[0], 123.0f);
    ck_assert_int_eq(tg_st_metadata(f)->n, 0);
    tg_st_close(f);
    ck_assert_int_eq(count_dir_entries(), 1);   /* no temp files left */

    tg_params_free(&ps);
    tg_params_free(&q);
    tg_st_meta_free(&meta);
    tg_free(a), tg_free(b), tg_free(c), tg_free(a2), tg_free(b2), tg_free(c2);
}
END_TEST

/* A hand-made file in the format's documented form, with the header keys in
 * another order, escapes and padding, loads. */
START_TEST(test_reads_foreign_writer)
{
    char p[512];
    write_st(tmp_path(p, "hand.safetensors"),
             "{ \"b\" : {\"data_offsets\":[8,32], \"shape\":[2,3],\"dtype\":\"F32\"},\n"
             "  \"__metadata__\": {\"k\\u00e9y\": \"v\\n\\ud83d\\ude00\"},"
             " \"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}    ",
             8);
    tg_st_file *f;
    tg_st_error err;
    ck_assert_msg(tg_st_open(p, &f, &err) == 0, "%s", err.msg);
    ck_assert_str_eq(tg_st_meta_get(tg_st_metadata(f), "k\xc3\xa9y"), "v\n\xf0\x9f\x98\x80");
    tg_tensor *b = tg_zeros(TG_SHAPE(2, 3));
    ck_assert_int_eq(tg_st_read(f, "b", b, &err), 0);
    for (int i = 0; i < 6; i++)
        ck_assert_float_eq(b->data[i], (float)(i + 2));
    tg_free(b);
    tg_st_close(f);
}
END_TEST

/* ---------------------------------------------------------------- corruption */

START_TEST(test_too_small_and_truncated)
{
    char p[512];
    write_bytes(tmp_path(p, "empty.safetensors"), "", 0);
    expect_open(p, TG_ST_ETRUNCATED, "too small");
    write_bytes(tmp_path(p, "five.safetensors"), "\x10\0\0\0\0", 5);
    expect_open(p, TG_ST_ETRUNCATED, "too small");
    /* header length beyond the file */
    unsigned char h[20] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    write_bytes(tmp_path(p, "hlen.safetensors"), h, 10);
    expect_open(p, TG_ST_ETRUNCATED, "exceeds");
    h[0] = 0xff, h[7] = 0xff; /* absurd length: no overflow, just an error */
    write_bytes(tmp_path(p, "huge.safetensors"), h, 10);
    expect_open(p, TG_ST_ETRUNCATED, "exceeds");

    /* every truncation of a valid file is refused, never a crash */
    tg_params ps;
    tg_params_init(&ps);
    tg_tensor *t = tg_arange(0, 10, 1);
    tg_params_add(&ps, NULL, "t", t);
    tg_st_error err;
    char good[512];
    ck_assert_int_eq(tg_st_save(tmp_path(good, "good.safetensors"), &ps, NULL, &err), 0);
    size_t n;
    unsigned char *raw = read_bytes(good, &n);
    for (size_t k = 0; k < n; k++) {
        tg_st_file *f;
        int rc = tg_st_open_mem(raw, k, "cut", &f, &err);
        ck_assert_msg(rc != 0, "a file cut to %zu of %zu bytes loaded", k, n);
        ck_assert_msg(rc == TG_ST_ETRUNCATED || rc == TG_ST_EJSON || rc == TG_ST_EOFFSETS, "cut %zu: code %d", k, rc);
    }
    /* cut inside the data: the message says where the tensor lies */
    write_bytes(tmp_path(p, "cut.safetensors"), raw, n - 4);
    expect_open(p, TG_ST_EOFFSETS, "outside the 36 data bytes");
    free(raw);
    tg_params_free(&ps);
    tg_free(t);
}
END_TEST

START_TEST(test_bad_json)
{
    static const char *const bad[] = {
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}",           /* unclosed */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},}",          /* trailing comma */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,],\"data_offsets\":[0,4]}}",          /* trailing comma */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}",          /* leading zero */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}",         /* not an integer */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}",          /* negative */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}",             /* one offset */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}",         /* three */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}",                                  /* no offsets */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}",   /* unknown key */
        "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", /* repeated key */
        ("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}"),          /* duplicate tensor */
        "{\"a\\q\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",        /* bad escape */
        "{\"a\\ud800\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",    /* lone surrogate */
        "{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",       /* invalid UTF-8 */
        "{\"a\xc0\x80\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",   /* overlong UTF-8 */
        "{\"a\x01\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",       /* control char */
        "{\"__metadata__\":{\"k\":1},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", /* meta value */
        "{\"__metadata__\":[],\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x",         /* trailing bytes */
        "{\"a\":[]}",
        "{'a':{}}",
        "{\"a\":{\"dtype\":F32,\"shape\":[1],\"data_offsets\":[0,4]}}",
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", /* > 8 dims */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999],\"data_offsets\":[0,4]}}",       /* > INT_MAX */
    };
    char p[512];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char name[64];
        snprintf(name, sizeof name, "bad%zu.safetensors", i);
        write_st(tmp_path(p, name), bad[i], 1);
        expect_open(p, TG_ST_EJSON, "");
    }
    /* not a JSON object at all */
    write_st(tmp_path(p, "arr.safetensors"), "[1,2]", 1);
    expect_open(p, TG_ST_EJSON, "not a safetensors file");
}
END_TEST

START_TEST(test_foreign_file)
{
    char p[512];
    const char *text = "I HAD always thought Jack Gisburn rather a cheap genius--though a good fellow enough";
    write_bytes(tmp_path(p, "text.safetensors"), text, strlen(text));
    expect_open(p, TG_ST_ETRUNCATED, "not a safetensors file");
    static const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R'};
    write_bytes(tmp_path(p, "img.safetensors"), png, sizeof png);
    expect_open(p, TG_ST_ETRUNCATED, "not a safetensors file");
    /* a small length that happens to fit, but no JSON object behind it */
    unsigned char junk[24] = {8, 0, 0, 0, 0, 0, 0, 0, 'E', 'L', 'F', 1, 2, 3, 4, 5};
    write_bytes(tmp_path(p, "elf.safetensors"), junk, sizeof junk);
    expect_open(p, TG_ST_EJSON, "not a safetensors file");
    expect_open(tmp_path(p, "missing.safetensors"), TG_ST_EIO, "cannot open");
    expect_open(g_dir, TG_ST_EIO, "not a regular file");
}
END_TEST

START_TEST(test_wrong_dtype)
{
    char p[512];
    write_st(tmp_path(p, "f16.safetensors"), "{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 1);
    expect_open(p, TG_ST_EDTYPE, "dtype \"F16\"");
    write_st(tmp_path(p, "f64.safetensors"), "{\"a\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 2);
    expect_open(p, TG_ST_EDTYPE, "only F32");
}
END_TEST

START_TEST(test_bad_offsets)
{
    struct {
        const char *header;
        int nfloat;
        const char *want;
    } cases[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 1, "outside"},        /* past the end */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,4]}}", 3, "outside"},        /* end < begin */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 2, "its shape needs 12"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 3, "overlaps"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 2, "gap"},             /* hole at 0 */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 3, "not described"},  /* trailing */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2147483647,2147483647,2147483647],\"data_offsets\":[0,4]}}", 1,
         "impossible shape"},
    };
    char p[512];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char name[64];
        snprintf(name, sizeof name, "off%zu.safetensors", i);
        write_st(tmp_path(p, name), cases[i].header, cases[i].nfloat);
        expect_open(p, TG_ST_EOFFSETS, cases[i].want);
    }
}
END_TEST

/* Missing, extra and reshaped tensors against an expected parameter list; a
 * failed load leaves the parameters untouched. */
START_TEST(test_names_and_shapes)
{
    char p[512];
    write_st(tmp_path(p, "ab.safetensors"),
             "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"F32\",\"shape\":[1,3],\"data_offsets\":[8,20]}}",
             5);
    tg_st_file *f;
    tg_st_error err;
    ck_assert_int_eq(tg_st_open(p, &f, &err), 0);
    tg_tensor *a = tg_full(TG_SHAPE(2), 7.0f), *b = tg_full(TG_SHAPE(1, 3), 7.0f), *b_bad = tg_full(TG_SHAPE(3), 7.0f),
              *c = tg_full(TG_SHAPE(1), 7.0f);
    tg_params ps;

    tg_params_init(&ps); /* missing: the model has c, the file does not */
    tg_params_add(&ps, NULL, "a", a);
    tg_params_add(&ps, NULL, "b", b);
    tg_params_add(&ps, NULL, "c", c);
    ck_assert_int_eq(tg_st_load_params(f, &ps, NULL, NULL, &err), TG_ST_EMISSING);
    ck_assert_ptr_nonnull(strstr(err.msg, "'c' is missing"));
    ck_assert_float_eq(a->data[0], 7.0f); /* untouched */
    tg_params_free(&ps);

    tg_params_init(&ps); /* extra: the file has b, the model does not */
    tg_params_add(&ps, NULL, "a", a);
    ck_assert_int_eq(tg_st_load_params(f, &ps, NULL, NULL, &err), TG_ST_EEXTRA);
    ck_assert_ptr_nonnull(strstr(err.msg, "unexpected tensor 'b'"));
    ck_assert_float_eq(a->data[0], 7.0f);
    tg_params_free(&ps);

    tg_params_init(&ps); /* shape */
    tg_params_add(&ps, NULL, "a", a);
    tg_params_add(&ps, NULL, "b", b_bad);
    ck_assert_int_eq(tg_st_load_params(f, &ps, NULL, NULL, &err), TG_ST_ESHAPE);
    ck_assert_ptr_nonnull(strstr(err.msg, "shape [1,3] but the model expects [3]"));
    ck_assert_float_eq(a->data[0], 7.0f);
    ck_assert_int_eq(tg_st_read(f, "b", b_bad, &err), TG_ST_ESHAPE);
    ck_assert_int_eq(tg_st_read(f, "zz", b_bad, &err), TG_ST_EMISSING);
    tg_params_free(&ps);

    tg_params_init(&ps); /* all good */
    tg_params_add(&ps, NULL, "b", b);
    tg_params_add(&ps, NULL, "a", a);
    ck_assert_int_eq(tg_st_load_params(f, &ps, NULL, NULL, &err), 0);
    ck_assert_float_eq(a->data[1], 1.0f);
    ck_assert_float_eq(b->data[2], 4.0f);
    tg_params_free(&ps);
    tg_st_close(f);
    tg_free(a), tg_free(b), tg_free(b_bad), tg_free(c);
}
END_TEST

/* ---------------------------------------------------------------- GPT checkpoints */

static tg_gpt_config tiny_cfg(void)
{
    return (tg_gpt_config){.vocab_size = 5, .context_length = 4, .emb_dim = 8, .n_heads = 2, .n_layers = 2,
                           .drop_rate = 0.1f, .qkv_bias = false};
}

START_TEST(test_gpt_checkpoint_config)
{
    char p[512];
    tg_generator g;
    tg_manual_seed(&g, 1);
    tg_gpt_config cfg = tiny_cfg();
    tg_gpt *m = tg_gpt_new(&cfg, &g);
    tg_st_meta meta;
    tg_st_meta_init(&meta);
    tg_gpt_config_to_meta(&cfg, &meta);
    tg_st_error err;
    ck_assert_int_eq(tg_st_save(tmp_path(p, "gpt.safetensors"), tg_gpt_params(m), &meta, &err), 0);

    tg_st_file *f;
    ck_assert_int_eq(tg_st_open(p, &f, &err), 0);
    tg_gpt_config back;
    ck_assert_int_eq(tg_gpt_config_from_meta(&back, tg_st_metadata(f), p, &err), 0);
    ck_assert_int_eq(back.vocab_size, cfg.vocab_size);
    ck_assert_int_eq(back.context_length, cfg.context_length);
    ck_assert_int_eq(back.emb_dim, cfg.emb_dim);
    ck_assert_int_eq(back.n_heads, cfg.n_heads);
    ck_assert_int_eq(back.n_layers, cfg.n_layers);
    ck_assert_float_eq(back.drop_rate, cfg.drop_rate);
    ck_assert(back.qkv_bias == cfg.qkv_bias);
    tg_gpt *m2 = tg_gpt_new(&cfg, NULL);
    ck_assert_int_eq(tg_gpt_load(m2, f, false, &err), 0);
    for (int i = 0; i < tg_gpt_params(m)->n; i++)
        ck_assert_int_eq(memcmp(tg_gpt_params(m)->items[i].t->data, tg_gpt_params(m2)->items[i].t->data,
                                (size_t)tg_gpt_params(m)->items[i].t->numel * 4), 0);
    tg_gpt_free(m2);

    /* another config: emb_dim differs -> ECONFIG naming the field */
    tg_gpt_config other = cfg;
    other.emb_dim = 4;
    m2 = tg_gpt_new(&other, NULL);
    ck_assert_int_eq(tg_gpt_load(m2, f, false, &err), TG_ST_ECONFIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "another config: its emb_dim is 8, the model's is 4"));
    tg_gpt_free(m2);
    other = cfg;
    other.qkv_bias = true;
    m2 = tg_gpt_new(&other, NULL);
    ck_assert_int_eq(tg_gpt_load(m2, f, false, &err), TG_ST_ECONFIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "qkv_bias"));
    tg_gpt_free(m2);
    tg_st_close(f);

    /* without metadata, a shape tells the configs apart */
    ck_assert_int_eq(tg_st_save(p, tg_gpt_params(m), NULL, &err), 0);
    ck_assert_int_eq(tg_st_open(p, &f, &err), 0);
    other = cfg;
    other.vocab_size = 6;
    m2 = tg_gpt_new(&other, NULL);
    ck_assert_int_eq(tg_gpt_load(m2, f, false, &err), TG_ST_ESHAPE);
    ck_assert_ptr_nonnull(strstr(err.msg, "tok_emb.weight"));
    tg_gpt_free(m2);
    other = cfg;
    other.n_layers = 3;
    m2 = tg_gpt_new(&other, NULL);
    ck_assert_int_eq(tg_gpt_load(m2, f, false, &err), TG_ST_EMISSING);
    ck_assert_ptr_nonnull(strstr(err.msg, "trf_blocks.2."));
    tg_gpt_free(m2);
    other.n_layers = 1;
    m2 = tg_gpt_new(&other, NULL);
    ck_assert_int_eq(tg_gpt_load(m2, f, false, &err), TG_ST_EEXTRA);
    ck_assert_ptr_nonnull(strstr(err.msg, "trf_blocks.1."));
    tg_gpt_free(m2);
    tg_st_close(f);

    /* malformed config metadata */
    tg_st_meta_set(&meta, "emb_dim", "8x");
    ck_assert_int_eq(tg_st_save(p, tg_gpt_params(m), &meta, &err), 0);
    ck_assert_int_eq(tg_st_open(p, &f, &err), 0);
    ck_assert_int_eq(tg_gpt_load(m, f, false, &err), TG_ST_ECONFIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "\"emb_dim\" = \"8x\" is not an integer"));
    tg_st_close(f);
    tg_st_meta_set(&meta, "emb_dim", "9"); /* 2 heads do not divide 9 */
    ck_assert_int_eq(tg_st_save(p, tg_gpt_params(m), &meta, &err), 0);
    ck_assert_int_eq(tg_st_open(p, &f, &err), 0);
    ck_assert_int_eq(tg_gpt_config_from_meta(&back, tg_st_metadata(f), p, &err), TG_ST_ECONFIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "does not divide"));
    tg_st_close(f);

    tg_st_meta_free(&meta);
    tg_gpt_free(m);
}
END_TEST

/* torch's state_dict holds the att.mask buffers: accepted with the right
 * shape, refused otherwise; optimizer entries only when allowed. */
START_TEST(test_gpt_checkpoint_extras)
{
    char p[512];
    tg_gpt_config cfg = tiny_cfg();
    tg_gpt *m = tg_gpt_new(&cfg, NULL);
    tg_params ps;
    tg_params_init(&ps);
    for (int i = 0; i < tg_gpt_params(m)->n; i++)
        tg_params_add(&ps, NULL, tg_gpt_params(m)->items[i].name, tg_gpt_params(m)->items[i].t);
    tg_tensor *mask = tg_ones(TG_SHAPE(4, 4)), *bad = tg_ones(TG_SHAPE(3, 3)), *opt = tg_zeros(TG_SHAPE(5, 8));
    tg_params_add(&ps, NULL, "trf_blocks.0.att.mask", mask);
    tg_params_add(&ps, NULL, "trf_blocks.1.att.mask", mask);
    tg_params_add(&ps, NULL, "optim.exp_avg.tok_emb.weight", opt);
    tg_st_error err;
    tg_st_file *f;
    ck_assert_int_eq(tg_st_save(tmp_path(p, "x.safetensors"), &ps, NULL, &err), 0);
    ck_assert_int_eq(tg_st_open(p, &f, &err), 0);
    ck_assert_int_eq(tg_gpt_load(m, f, true, &err), 0);
    ck_assert_int_eq(tg_gpt_load(m, f, false, &err), TG_ST_EEXTRA);
    ck_assert_ptr_nonnull(strstr(err.msg, "optim.exp_avg.tok_emb.weight"));
    tg_st_close(f);
    ps.items[ps.n - 2].t = bad; /* trf_blocks.1.att.mask (3, 3) */
    ck_assert_int_eq(tg_st_save(p, &ps, NULL, &err), 0);
    ck_assert_int_eq(tg_st_open(p, &f, &err), 0);
    ck_assert_int_eq(tg_gpt_load(m, f, true, &err), TG_ST_EEXTRA);
    ck_assert_ptr_nonnull(strstr(err.msg, "trf_blocks.1.att.mask"));
    tg_st_close(f);
    tg_params_free(&ps);
    tg_free(mask), tg_free(bad), tg_free(opt);
    tg_gpt_free(m);
}
END_TEST

/* ---------------------------------------------------------------- atomic writes */

START_TEST(test_atomic_failed_writes)
{
    char p[512], q[512];
    tg_tensor *t = tg_arange(0, 4096, 1);
    tg_params ps;
    tg_params_init(&ps);
    tg_params_add(&ps, NULL, "t", t);
    tg_st_error err;

    /* a directory that does not exist: EIO, nothing created */
    snprintf(q, sizeof q, "%s/no/such/dir/x.safetensors", g_dir);
    ck_assert_int_eq(tg_st_save(q, &ps, NULL, &err), TG_ST_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, q));
    ck_assert_int_eq(count_dir_entries(), 0);

    /* the target is a directory: the rename fails, the temp file goes */
    ck_assert_int_eq(mkdir(tmp_path(q, "adir"), 0755), 0);
    ck_assert_int_eq(tg_st_save(q, &ps, NULL, &err), TG_ST_EIO);
    ck_assert_int_eq(count_dir_entries(), 1);
    rmdir(q);

    /* a write that fails half way (file size limit): the old file stays intact */
    tg_params small;
    tg_params_init(&small);
    tg_tensor *s = tg_full(TG_SHAPE(3), 1.5f);
    tg_params_add(&small, NULL, "t", s);
    ck_assert_int_eq(tg_st_save(tmp_path(p, "old.safetensors"), &small, NULL, &err), 0);
    size_t n0;
    unsigned char *before = read_bytes(p, &n0);
    struct rlimit old_lim, lim;
    getrlimit(RLIMIT_FSIZE, &old_lim);
    void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
    lim = old_lim;
    lim.rlim_cur = 4096; /* the new file needs 16 KB */
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
    int rc = tg_st_save(p, &ps, NULL, &err);
    setrlimit(RLIMIT_FSIZE, &old_lim);
    signal(SIGXFSZ, old_sig);
    ck_assert_int_eq(rc, TG_ST_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "write failed"));
    size_t n1;
    unsigned char *after = read_bytes(p, &n1);
    ck_assert_uint_eq(n0, n1);
    ck_assert_int_eq(memcmp(before, after, n0), 0);
    ck_assert_int_eq(count_dir_entries(), 1); /* no temp file left behind */
    free(before);
    free(after);

    /* names that cannot be saved fail before anything is written */
    tg_params dup;
    tg_params_init(&dup);
    tg_params_add(&dup, NULL, "t", s);
    tg_params_add(&dup, NULL, "t", s);
    ck_assert_int_eq(tg_st_save(tmp_path(q, "dup.safetensors"), &dup, NULL, &err), TG_ST_EJSON);
    ck_assert_int_eq(count_dir_entries(), 1);
    tg_params_free(&dup);
    tg_params_free(&small);
    tg_params_free(&ps);
    tg_free(t);
    tg_free(s);
}
END_TEST

/* Random byte flips of a valid GPT checkpoint: every result is either a clean
 * load or an error with a code and one line (the fuzz target goes further). */
START_TEST(test_mutations_never_crash)
{
    char p[512];
    tg_gpt_config cfg = tiny_cfg();
    tg_gpt *m = tg_gpt_new(&cfg, NULL);
    tg_st_meta meta;
    tg_st_meta_init(&meta);
    tg_gpt_config_to_meta(&cfg, &meta);
    tg_st_error err;
    ck_assert_int_eq(tg_st_save(tmp_path(p, "m.safetensors"), tg_gpt_params(m), &meta, &err), 0);
    size_t n;
    unsigned char *raw = read_bytes(p, &n);
    tg_generator g;
    tg_manual_seed(&g, 3);
    int loaded = 0, refused = 0;
    for (int trial = 0; trial < 400; trial++) {
        unsigned char *b = malloc(n);
        memcpy(b, raw, n);
        int flips = 1 + (int)(tg_random_u32(&g) % 3);
        for (int k = 0; k < flips; k++) {
            size_t at = tg_random_u32(&g) % (trial % 2 ? n : 600); /* half of them in the header */
            b[at] = (unsigned char)tg_random_u32(&g);
        }
        tg_st_file *f;
        if (tg_st_open_mem(b, n, "mut", &f, &err) == 0) {
            if (tg_gpt_load(m, f, false, &err) == 0)
                loaded++;
            else
                refused++;
            tg_st_close(f);
        } else {
            ck_assert_int_ne(err.code, TG_ST_OK);
            ck_assert_ptr_null(strchr(err.msg, '\n'));
            refused++;
        }
        free(b);
    }
    ck_assert_int_gt(refused, 100);
    ck_assert_int_gt(loaded, 10); /* flips in the float data still load */
    free(raw);
    tg_st_meta_free(&meta);
    tg_gpt_free(m);
}
END_TEST

/* ---------------------------------------------------------------- tokenizers and text */

START_TEST(test_char_tokenizer)
{
    const char *text = "hello world\ncaf\xc3\xa9 \xe2\x80\x94 ok";
    tg_tokenizer t;
    char why[256];
    ck_assert_int_eq(tg_tokenizer_char_build(&t, text, strlen(text), why, sizeof why), 0);
    /* sorted(set(text)) in Python: '\n',' ','a','c','d','e','f','h','k','l','o','r','w','é','—' */
    static const uint32_t want[] = {'\n', ' ', 'a', 'c', 'd', 'e', 'f', 'h', 'k', 'l', 'o', 'r', 'w', 0xE9, 0x2014};
    ck_assert_int_eq(t.vocab_size, 15);
    for (int i = 0; i < 15; i++)
        ck_assert_uint_eq(t.chars[i], want[i]);
    int32_t ids[64];
    int64_t n;
    ck_assert_int_eq(tg_tokenizer_encode(&t, text, strlen(text), ids, &n, why, sizeof why), 0);
    ck_assert_int_eq(n, 21);
    ck_assert_int_eq(ids[0], 7);   /* h */
    ck_assert_int_eq(ids[15], 13); /* é */
    ck_assert_int_eq(ids[17], 14); /* — */
    char out[128];
    size_t len = 0;
    for (int64_t i = 0; i < n; i++)
        len += (size_t)tg_tokenizer_decode(&t, ids[i], out + len);
    ck_assert_uint_eq(len, strlen(text));
    ck_assert_int_eq(memcmp(out, text, len), 0);
    ck_assert_int_eq(tg_tokenizer_decode(&t, 15, out), 0);

    /* unknown characters name themselves */
    ck_assert_int_eq(tg_tokenizer_encode(&t, "hex", 3, ids, &n, why, sizeof why), -1);
    ck_assert_ptr_nonnull(strstr(why, "character 'x' at offset 2 is not in the vocabulary"));
    ck_assert_int_eq(tg_tokenizer_encode(&t, "\xc3\xa8", 2, ids, &n, why, sizeof why), -1);
    ck_assert_ptr_nonnull(strstr(why, "U+00E8"));

    /* metadata round trip */
    tg_st_meta m;
    tg_st_meta_init(&m);
    tg_tokenizer_to_meta(&t, &m);
    ck_assert_str_eq(tg_st_meta_get(&m, "tokenizer"), "char");
    tg_tokenizer t2;
    tg_st_error err;
    ck_assert_int_eq(tg_tokenizer_from_meta(&t2, &m, "x", &err), 0);
    ck_assert_int_eq(t2.vocab_size, 15);
    ck_assert_int_eq(memcmp(t.chars, t2.chars, 15 * sizeof *t.chars), 0);
    tg_tokenizer_free(&t2);
    tg_st_meta_set(&m, "vocab", "ba"); /* not sorted */
    ck_assert_int_eq(tg_tokenizer_from_meta(&t2, &m, "x", &err), TG_ST_ECONFIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "sorted"));
    tg_st_meta_set(&m, "tokenizer", "bpe");
    ck_assert_int_eq(tg_tokenizer_from_meta(&t2, &m, "x", &err), TG_ST_ECONFIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "unknown tokenizer \"bpe\""));
    tg_st_meta_free(&m);
    tg_tokenizer_free(&t);

    /* invalid UTF-8 cannot be char-tokenized */
    ck_assert_int_eq(tg_tokenizer_char_build(&t, "ab\xff", 3, why, sizeof why), -1);
    ck_assert_ptr_nonnull(strstr(why, "offset 2"));
}
END_TEST

START_TEST(test_byte_tokenizer)
{
    tg_tokenizer t;
    tg_tokenizer_byte_init(&t);
    ck_assert_int_eq(t.vocab_size, 256);
    int32_t ids[8];
    int64_t n;
    ck_assert_int_eq(tg_tokenizer_encode(&t, "A\xff\x01", 3, ids, &n, NULL, 0), 0);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(ids[0], 65);
    ck_assert_int_eq(ids[1], 255);
    char c[4];
    ck_assert_int_eq(tg_tokenizer_decode(&t, 255, c), 1);
    ck_assert_int_eq((unsigned char)c[0], 255);
    tg_st_meta m;
    tg_st_meta_init(&m);
    tg_tokenizer_to_meta(&t, &m);
    tg_tokenizer t2;
    ck_assert_int_eq(tg_tokenizer_from_meta(&t2, &m, "x", NULL), 0);
    ck_assert_int_eq(t2.kind, TG_TOK_BYTE);
    tg_st_meta_free(&m);
    tg_tokenizer_free(&t);
}
END_TEST

START_TEST(test_text_load)
{
    char p[512], why[512];
    char *text;
    size_t len;
    ck_assert_int_eq(tg_text_load(tmp_path(p, "nope.txt"), &text, &len, why, sizeof why), -1);
    ck_assert_ptr_nonnull(strstr(why, "nope.txt: cannot open"));
    write_bytes(tmp_path(p, "empty.txt"), "", 0);
    ck_assert_int_eq(tg_text_load(p, &text, &len, why, sizeof why), -1);
    ck_assert_ptr_nonnull(strstr(why, "empty"));
    write_bytes(tmp_path(p, "bin.txt"), "abc\0def", 7);
    ck_assert_int_eq(tg_text_load(p, &text, &len, why, sizeof why), -1);
    ck_assert_ptr_nonnull(strstr(why, "binary file (NUL byte at offset 3)"));
    write_bytes(tmp_path(p, "ok.txt"), "abc", 3);
    ck_assert_int_eq(tg_text_load(p, &text, &len, why, sizeof why), 0);
    ck_assert_uint_eq(len, 3);
    ck_assert_int_eq(memcmp(text, "abc", 3), 0);
    free(text);
}
END_TEST

/* Loading weights that are not finite is an error naming the tensor, the
 * element and the value (tg_st_load_params and tg_st_read: the sampler's and
 * the trainer's load path); the parameters stay as they were. The file itself
 * is well-formed, so it still opens (for inspection). */
START_TEST(test_nonfinite_tensors_refused)
{
    char p[512];
    const float bad_values[] = {NAN, INFINITY, -INFINITY};
    const char *shown[] = {"nan", "inf", "-inf"};
    for (int k = 0; k < 3; k++) {
        tg_tensor *a = tg_full(TG_SHAPE(2, 3), 1.0f), *b = tg_arange(0, 8, 1);
        b->data[6] = bad_values[k];
        tg_params ps;
        tg_params_init(&ps);
        tg_params_add(&ps, NULL, "layer.a", a);
        tg_params_add(&ps, NULL, "layer.b", b);
        tg_st_error err;
        ck_assert_int_eq(tg_st_save(tmp_path(p, "bad.safetensors"), &ps, NULL, &err), 0);
        tg_st_file *f;
        ck_assert_msg(tg_st_open(p, &f, &err) == 0, "%s", err.msg);
        /* into fresh parameters: refused, nothing copied */
        tg_tensor *a2 = tg_zeros(TG_SHAPE(2, 3)), *b2 = tg_zeros(TG_SHAPE(8));
        tg_params ps2;
        tg_params_init(&ps2);
        tg_params_add(&ps2, NULL, "layer.a", a2);
        tg_params_add(&ps2, NULL, "layer.b", b2);
        int rc = tg_st_load_params(f, &ps2, NULL, NULL, &err);
        ck_assert_str_eq(tg_st_code_name(rc), "tensor not finite");
        ck_assert_msg(strstr(err.msg, p) && strstr(err.msg, "tensor 'layer.b'") && strstr(err.msg, "element 6") &&
                          strstr(err.msg, shown[k]),
                      "'%s'", err.msg);
        for (int i = 0; i < 6; i++)
            ck_assert(a2->data[i] == 0.0f);
        for (int i = 0; i < 8; i++)
            ck_assert(b2->data[i] == 0.0f);
        rc = tg_st_read(f, "layer.b", b2, &err);
        ck_assert_str_eq(tg_st_code_name(rc), "tensor not finite");
        ck_assert_ptr_nonnull(strstr(err.msg, "tensor 'layer.b'"));
        ck_assert_int_eq(tg_st_read(f, "layer.a", a2, &err), 0); /* the finite one reads */
        ck_assert(a2->data[0] == 1.0f);
        tg_st_close(f);
        tg_params_free(&ps);
        tg_params_free(&ps2);
        tg_free(a);
        tg_free(b);
        tg_free(a2);
        tg_free(b2);
    }
}
END_TEST

/* ---------------------------------------------------------------- lookups scale
 * Every name lookup (the duplicate checks when saving and parsing, tg_st_find,
 * tg_st_load_params, the metadata map) takes O(1) or O(log n) comparisons: on
 * 100k entries each phase may make at most 40 per entry, where a linear scan
 * makes ~n/2 = 50,000. Counted, not timed; a phase over budget stops at once. */
int __real_strcmp(const char *a, const char *b);
static long long g_cmp_count = -1; /* < 0: not counting */
static long long g_cmp_budget;
static const char *g_cmp_phase;

int __wrap_strcmp(const char *a, const char *b)
{
    if (g_cmp_count >= 0 && ++g_cmp_count > g_cmp_budget) {
        g_cmp_count = -1;
        ck_abort_msg("%s: more than %lld name comparisons for 100000 entries (a linear scan?)", g_cmp_phase,
                     g_cmp_budget);
    }
    return __real_strcmp(a, b);
}

#define LOOKUP_N 100000
static void count_start(const char *phase)
{
    g_cmp_phase = phase;
    g_cmp_budget = 40LL * LOOKUP_N;
    g_cmp_count = 0;
}
static long long count_stop(void)
{
    long long n = g_cmp_count;
    g_cmp_count = -1;
    return n;
}

START_TEST(test_lookups_scale)
{
    char p[512], name[64], val[64];
    tg_tensor *t = tg_full(TG_SHAPE(1), 0.5f);
    tg_params ps;
    tg_params_init(&ps);
    for (int i = 0; i < LOOKUP_N; i++) { /* a scrambled order: not sorted, not reverse */
        snprintf(name, sizeof name, "h.%d.w", (int)(((long long)i * 7919) % LOOKUP_N));
        tg_params_add(&ps, NULL, name, t);
    }
    tg_st_meta meta;
    tg_st_meta_init(&meta);
    count_start("tg_st_meta_set");
    for (int i = 0; i < LOOKUP_N; i++) {
        snprintf(name, sizeof name, "k%d", (int)(((long long)i * 7919) % LOOKUP_N));
        snprintf(val, sizeof val, "%d", i);
        tg_st_meta_set(&meta, name, val);
    }
    tg_st_meta_set(&meta, "k7", "replaced"); /* an existing key is replaced, not added */
    count_stop();
    ck_assert_int_eq(meta.n, LOOKUP_N);
    ck_assert_str_eq(tg_st_meta_get(&meta, "k7"), "replaced");

    tg_st_error err;
    count_start("tg_st_save");
    int rc = tg_st_save(tmp_path(p, "many.safetensors"), &ps, &meta, &err);
    count_stop();
    ck_assert_msg(rc == 0, "%s", err.msg);

    tg_st_file *f;
    count_start("tg_st_open");
    rc = tg_st_open(p, &f, &err);
    count_stop();
    ck_assert_msg(rc == 0, "%s", err.msg);
    ck_assert_int_eq(tg_st_count(f), LOOKUP_N);

    /* (one assertion after each loop: Check records every ck_assert) */
    int wrong = 0;
    count_start("tg_st_find");
    for (int i = 0; i < LOOKUP_N; i++) {
        snprintf(name, sizeof name, "h.%d.w", i);
        const tg_st_entry *e = tg_st_find(f, name);
        wrong += !e || __real_strcmp(e->name, name) != 0;
        snprintf(name, sizeof name, "h.%d.x", i);
        wrong += tg_st_find(f, name) != NULL;
    }
    count_stop();
    ck_assert_int_eq(wrong, 0);

    count_start("tg_st_meta_get");
    const tg_st_meta *fm = tg_st_metadata(f);
    for (int i = 0; i < LOOKUP_N; i++) {
        snprintf(name, sizeof name, "k%d", i);
        wrong += tg_st_meta_get(fm, name) == NULL;
    }
    wrong += tg_st_meta_get(fm, "k-1") != NULL;
    count_stop();
    ck_assert_int_eq(wrong, 0);
    ck_assert_str_eq(tg_st_meta_get(fm, "k7"), "replaced");

    count_start("tg_st_load_params");
    rc = tg_st_load_params(f, &ps, NULL, NULL, &err);
    count_stop();
    ck_assert_msg(rc == 0, "%s", err.msg);
    tg_st_close(f);

    /* duplicates are still found among them, when saving and when parsing */
    tg_params_add(&ps, NULL, "h.4242.w", t);
    count_start("tg_st_save (duplicate)");
    rc = tg_st_save(tmp_path(p, "dup.safetensors"), &ps, NULL, &err);
    count_stop();
    ck_assert_int_eq(rc, TG_ST_EJSON);
    ck_assert_msg(strstr(err.msg, "tensor name 'h.4242.w' appears twice") != NULL, "%s", err.msg);
    tg_params_free(&ps);
    tg_st_meta_free(&meta);
    tg_free(t);
}
END_TEST

START_TEST(test_lookups_scale_duplicate_in_file)
{
    /* a header with 100k tensors, one name twice: rejected, in few comparisons */
    size_t cap = (size_t)(LOOKUP_N + 1) * 96 + 256, n = 0;
    char *h = malloc(cap);
    n += (size_t)snprintf(h + n, cap - n, "{");
    for (int i = 0; i <= LOOKUP_N; i++) {
        int id = i == LOOKUP_N ? 777 : (int)(((long long)i * 7919) % LOOKUP_N);
        n += (size_t)snprintf(h + n, cap - n, "%s\"h.%d.w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[%d,%d]}",
                              i ? "," : "", id, 4 * i, 4 * i + 4);
    }
    n += (size_t)snprintf(h + n, cap - n, "}");
    while (n % 8)
        h[n++] = ' ';
    size_t total = 8 + n + 4 * ((size_t)LOOKUP_N + 1);
    unsigned char *buf = calloc(1, total);
    for (int b = 0; b < 8; b++)
        buf[b] = (unsigned char)((uint64_t)n >> (8 * b));
    memcpy(buf + 8, h, n);
    free(h);
    tg_st_file *f;
    tg_st_error err;
    count_start("tg_st_open_mem (duplicate)");
    int rc = tg_st_open_mem(buf, total, "dup.safetensors", &f, &err);
    count_stop();
    free(buf);
    ck_assert_int_eq(rc, TG_ST_EJSON);
    ck_assert_msg(strstr(err.msg, "tensor 'h.777.w' appears twice") != NULL, "%s", err.msg);
}
END_TEST

static Suite *checkpoint_suite(void)
{
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("safetensors");
    tcase_add_checked_fixture(tc, setup_dir, teardown_dir);
    tcase_add_test(tc, test_round_trip);
    tcase_add_test(tc, test_reads_foreign_writer);
    tcase_add_test(tc, test_too_small_and_truncated);
    tcase_add_test(tc, test_bad_json);
    tcase_add_test(tc, test_foreign_file);
    tcase_add_test(tc, test_wrong_dtype);
    tcase_add_test(tc, test_bad_offsets);
    tcase_add_test(tc, test_names_and_shapes);
    tcase_add_test(tc, test_gpt_checkpoint_config);
    tcase_add_test(tc, test_gpt_checkpoint_extras);
    tcase_add_test(tc, test_atomic_failed_writes);
    tcase_add_test(tc, test_mutations_never_crash);
    tcase_add_test(tc, test_nonfinite_tensors_refused);
    suite_add_tcase(s, tc);
    TCase *tl = tcase_create("lookups"); /* 100k entries: slow under ASan and valgrind */
    tcase_set_timeout(tl, 300);
    tcase_add_checked_fixture(tl, setup_dir, teardown_dir);
    tcase_add_test(tl, test_lookups_scale);
    tcase_add_test(tl, test_lookups_scale_duplicate_in_file);
    suite_add_tcase(s, tl);

    TCase *tt = tcase_create("tokenizers");
    tcase_add_checked_fixture(tt, setup_dir, teardown_dir);
    tcase_add_test(tt, test_char_tokenizer);
    tcase_add_test(tt, test_byte_tokenizer);
    tcase_add_test(tt, test_text_load);
    suite_add_tcase(s, tt);
    return s;
}

int main(void) { return run_suite(checkpoint_suite()) ? 1 : 0; }

/*
 * nn/safetensors.c — checkpoints in the safetensors format, libc only.
 *
 * Layout (https://github.com/huggingface/safetensors, "Format"):
 *   u64 little-endian N | N bytes of JSON header | raw tensor bytes
 * The header is one JSON object: "__metadata__" maps strings to strings; every
 * other key names a tensor {"dtype":"F32","shape":[...],"data_offsets":[b,e]}
 * whose bytes are data[b:e] (offsets relative to the start of the data).
 *
 * Writing: the header is padded with spaces to a multiple of 8 (as the Rust
 * writer does), tensors follow in list order, and the file is replaced with
 * tg_atomic_file (temp file beside the target, fsync, rename; tensor.h).
 *
 * Reading is strict and never trusts the file: every length and offset is
 * checked before use, the JSON parser accepts exactly RFC 8259 (UTF-8 checked,
 * depth limited, duplicate keys rejected), and the tensors must tile the data
 * section exactly (sorted by offset: first begins at 0, each begins where the
 * previous ended, the last ends at the end of the file), as the reference
 * implementation requires. Only F32 is supported.
 */
#include "nn.h"
#include "utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER (100u * 1024u * 1024u) /* the reference reader's limit */
#define ST_MAX_DEPTH 64

/* ---------------------------------------------------------------- errors */

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static int st_fail(tg_st_error *err, tg_st_code code, const char *label, const char *fmt, ...)
{
    if (err) {
        err->code = code;
        int n = snprintf(err->msg, sizeof err->msg, "%s: ", label ? label : "(memory)");
        if (n < 0 || (size_t)n >= sizeof err->msg)
            n = 0;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg + n, sizeof err->msg - (size_t)n, fmt, ap);
        va_end(ap);
        /* One line, always: file names and tensor names could hold newlines. */
        for (char *c = err->msg; *c; c++)
            if (*c == '\n' || *c == '\r')
                *c = ' ';
    }
    return (int)code;
}

static void st_ok(tg_st_error *err)
{
    if (err) {
        err->code = TG_ST_OK;
        err->msg[0] = '\0';
    }
}

const char *tg_st_code_name(tg_st_code code)
{
    switch (code) {
    case TG_ST_OK: return "ok";
    case TG_ST_EIO: return "i/o error";
    case TG_ST_ETRUNCATED: return "truncated";
    case TG_ST_EJSON: return "bad header";
    case TG_ST_EDTYPE: return "wrong dtype";
    case TG_ST_EOFFSETS: return "bad offsets";
    case TG_ST_EMISSING: return "missing tensor";
    case TG_ST_EEXTRA: return "unexpected tensor";
    case TG_ST_ESHAPE: return "shape mismatch";
    case TG_ST_ECONFIG: return "config mismatch";
    case TG_ST_ENOMEM: return "out of memory";
    case TG_ST_ENONFINITE: return "tensor not finite";
    }
    return "unknown error";
}

/* ---------------------------------------------------------------- name index
 * Every lookup by name (metadata keys, tensor names when saving, parsing and
 * loading) goes through a hash index: open addressing with linear probing,
 * FNV-1a, at most half full, so a lookup makes O(1) name comparisons on
 * average and a file of n entries is handled in O(n), not O(n^2). The index
 * maps a name to a position in an array of records (stride bytes each) whose
 * name pointer sits at byte offset off. */
typedef struct {
    uint32_t hash;
    int pos;          /* position + 1; 0: empty slot */
} st_slot;
typedef struct {
    st_slot *slot;
    size_t cap;       /* a power of two, or 0 */
    int n;
} st_index;

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *c = (const unsigned char *)s; *c; c++)
        h = (h ^ *c) * 16777619u;
    return h;
}

static const char *rec_name(const void *base, size_t stride, size_t off, int i)
{
    const char *const *p = (const char *const *)((const char *)base + (size_t)i * stride + off);
    return *p;
}

/* Position of name in the records, or -1. */
static int index_find(const st_index *x, const void *base, size_t stride, size_t off, const char *name)
{
    if (x->cap == 0)
        return -1;
    uint32_t h = name_hash(name);
    for (size_t i = h & (x->cap - 1);; i = (i + 1) & (x->cap - 1)) {
        const st_slot *s = &x->slot[i];
        if (s->pos == 0)
            return -1;
        if (s->hash == h && strcmp(rec_name(base, stride, off, s->pos - 1), name) == 0)
            return s->pos - 1;
    }
}

static void index_put(st_slot *slot, size_t cap, uint32_t h, int pos)
{
    size_t i = h & (cap - 1);
    while (slot[i].pos != 0)
        i = (i + 1) & (cap - 1);
    slot[i].hash = h;
    slot[i].pos = pos + 1;
}

/* Adds record pos (its name must not be in the index yet). false: out of memory. */
static bool index_add(st_index *x, const void *base, size_t stride, size_t off, int pos)
{
    if ((size_t)(x->n + 1) * 2 > x->cap) {
        size_t cap = x->cap ? 2 * x->cap : 16;
        st_slot *slot = calloc(cap, sizeof *slot);
        if (!slot)
            return false;
        for (size_t i = 0; i < x->cap; i++)
            if (x->slot[i].pos)
                index_put(slot, cap, x->slot[i].hash, x->slot[i].pos - 1);
        free(x->slot);
        x->slot = slot;
        x->cap = cap;
    }
    index_put(x->slot, x->cap, name_hash(rec_name(base, stride, off, pos)), pos);
    x->n++;
    return true;
}

static void index_free(st_index *x)
{
    free(x->slot);
    memset(x, 0, sizeof *x);
}

#define KV_NAME sizeof(tg_st_kv), offsetof(tg_st_kv, key)
#define PARAM_NAME sizeof(tg_param), offsetof(tg_param, name)
#define ENTRY_NAME sizeof(tg_st_entry), offsetof(tg_st_entry, name)

/* ---------------------------------------------------------------- metadata */

void tg_st_meta_init(tg_st_meta *m) { memset(m, 0, sizeof *m); }

void tg_st_meta_free(tg_st_meta *m)
{
    for (int i = 0; i < m->n; i++) {
        free(m->items[i].key);
        free(m->items[i].value);
    }
    free(m->items);
    if (m->index) {
        index_free(m->index);
        free(m->index);
    }
    memset(m, 0, sizeof *m);
}

static char *st_strndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* Takes ownership of key and value (both malloc'd). Returns false on OOM. */
static bool meta_put_owned(tg_st_meta *m, char *key, char *value)
{
    if (!m->index && !(m->index = calloc(1, sizeof(st_index))))
        return false;
    int i = index_find(m->index, m->items, KV_NAME, key);
    if (i >= 0) {
        free(m->items[i].value);
        m->items[i].value = value;
        free(key);
        return true;
    }
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 8;
        tg_st_kv *items = realloc(m->items, (size_t)cap * sizeof *items);
        if (!items)
            return false;
        m->items = items;
        m->cap = cap;
    }
    m->items[m->n].key = key;
    m->items[m->n].value = value;
    if (!index_add(m->index, m->items, KV_NAME, m->n))
        return false;
    m->n++;
    return true;
}

void tg_st_meta_set(tg_st_meta *m, const char *key, const char *value)
{
    char *k = st_strndup(key, strlen(key)), *v = st_strndup(value, strlen(value));
    if (!k || !v || !meta_put_owned(m, k, v)) {
        free(k);
        free(v);
        tg_error("tg_st_meta_set", "out of memory");
    }
}

void tg_st_meta_setf(tg_st_meta *m, const char *key, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    tg_st_meta_set(m, key, buf);
}

const char *tg_st_meta_get(const tg_st_meta *m, const char *key)
{
    if (!m->index) /* filled by hand (or empty): no index to ask */
        for (int i = 0; i < m->n; i++)
            if (strcmp(m->items[i].key, key) == 0)
                return m->items[i].value;
    int i = m->index ? index_find(m->index, m->items, KV_NAME, key) : -1;
    return i >= 0 ? m->items[i].value : NULL;
}

/* ---------------------------------------------------------------- little endian */

static bool host_is_le(void)
{
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static uint64_t read_u64_le(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void write_u64_le(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

/* Copies n floats from little-endian bytes (any alignment). */
static void floats_from_le(float *dst, const unsigned char *src, int64_t n)
{
    if (host_is_le()) {
        memcpy(dst, src, (size_t)n * 4);
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[4 * i] | (uint32_t)src[4 * i + 1] << 8 | (uint32_t)src[4 * i + 2] << 16 |
                     (uint32_t)src[4 * i + 3] << 24;
        memcpy(&dst[i], &u, 4);
    }
}

/* Index of the first NaN or Inf among n little-endian floats (exponent bits
 * all ones), its value in *val; -1 if all are finite. */
static int64_t first_nonfinite(const unsigned char *src, int64_t n, float *val)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)src[4 * i] | (uint32_t)src[4 * i + 1] << 8 | (uint32_t)src[4 * i + 2] << 16 |
                     (uint32_t)src[4 * i + 3] << 24;
        if ((u & 0x7f800000u) == 0x7f800000u) {
            memcpy(val, &u, 4);
            return i;
        }
    }
    return -1;
}

/* ---------------------------------------------------------------- growable buffer (writer) */

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} st_buf;

static void buf_put(st_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (b->n + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void buf_puts(st_buf *b, const char *s) { buf_put(b, s, strlen(s)); }

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void buf_printf(st_buf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        buf_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string literal. Bytes >= 0x80 pass through (the input is UTF-8). */
static void buf_json_string(st_buf *b, const char *s)
{
    buf_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        switch (*c) {
        case '"': buf_puts(b, "\\\""); break;
        case '\\': buf_puts(b, "\\\\"); break;
        case '\n': buf_puts(b, "\\n"); break;
        case '\r': buf_puts(b, "\\r"); break;
        case '\t': buf_puts(b, "\\t"); break;
        case '\b': buf_puts(b, "\\b"); break;
        case '\f': buf_puts(b, "\\f"); break;
        default:
            if (*c < 0x20)
                buf_printf(b, "\\u%04x", *c);
            else
                buf_put(b, (const char *)c, 1);
        }
    }
    buf_put(b, "\"", 1);
}

/* ---------------------------------------------------------------- writer */

static bool is_valid_utf8(const unsigned char *s, size_t n);

int tg_st_save(const char *path, const tg_params *tensors, const tg_st_meta *meta, tg_st_error *err)
{
    /* Validate names first: JSON strings must be valid UTF-8 and unique. */
    st_index names = {0};
    for (int i = 0; i < tensors->n; i++) {
        const char *nm = tensors->items[i].name;
        int rc = 0;
        if (!is_valid_utf8((const unsigned char *)nm, strlen(nm)) || strcmp(nm, "__metadata__") == 0)
            rc = st_fail(err, TG_ST_EJSON, path, "cannot save tensor name '%s'", nm);
        else if (index_find(&names, tensors->items, PARAM_NAME, nm) >= 0)
            rc = st_fail(err, TG_ST_EJSON, path, "tensor name '%s' appears twice", nm);
        else if (!index_add(&names, tensors->items, PARAM_NAME, i))
            rc = st_fail(err, TG_ST_ENOMEM, path, "out of memory");
        if (rc) {
            index_free(&names);
            return rc;
        }
    }
    index_free(&names);
    if (meta)
        for (int i = 0; i < meta->n; i++)
            if (!is_valid_utf8((const unsigned char *)meta->items[i].key, strlen(meta->items[i].key)) ||
                !is_valid_utf8((const unsigned char *)meta->items[i].value, strlen(meta->items[i].value)))
                return st_fail(err, TG_ST_EJSON, path, "metadata '%s' is not valid UTF-8", meta->items[i].key);

    st_buf h = {0};
    buf_put(&h, "{", 1);
    bool first = true;
    if (meta && meta->n > 0) {
        buf_puts(&h, "\"__metadata__\":{");
        for (int i = 0; i < meta->n; i++) {
            if (i)
                buf_put(&h, ",", 1);
            buf_json_string(&h, meta->items[i].key);
            buf_put(&h, ":", 1);
            buf_json_string(&h, meta->items[i].value);
        }
        buf_put(&h, "}", 1);
        first = false;
    }
    uint64_t off = 0;
    for (int i = 0; i < tensors->n; i++) {
        const tg_tensor *t = tensors->items[i].t;
        if (!first)
            buf_put(&h, ",", 1);
        first = false;
        buf_json_string(&h, tensors->items[i].name);
        buf_puts(&h, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++)
            buf_printf(&h, d ? ",%d" : "%d", t->shape[d]);
        uint64_t bytes = (uint64_t)t->numel * 4u;
        buf_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                   (unsigned long long)(off + bytes));
        off += bytes;
    }
    buf_put(&h, "}", 1);
    while (!h.oom && h.n % 8 != 0)
        buf_put(&h, " ", 1);
    if (h.oom) {
        free(h.p);
        return st_fail(err, TG_ST_ENOMEM, path, "out of memory building the header");
    }

    /* Streamed through the library's atomic writer: temp file beside the
     * target, fsync, rename (tensor.h). */
    tg_atomic_file f;
    tg_atomic_open(&f, path);
    unsigned char len8[8];
    write_u64_le(len8, h.n);
    tg_atomic_write(&f, len8, 8);
    tg_atomic_write(&f, h.p, h.n);
    free(h.p);
    if (host_is_le()) {
        for (int i = 0; !f.err && i < tensors->n; i++)
            tg_atomic_write(&f, tensors->items[i].t->data, (size_t)tensors->items[i].t->numel * 4);
    } else {
        for (int i = 0; !f.err && i < tensors->n; i++) {
            const tg_tensor *t = tensors->items[i].t;
            for (int64_t k = 0; !f.err && k < t->numel; k++) {
                uint32_t u;
                memcpy(&u, &t->data[k], 4);
                unsigned char b[4] = {(unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16),
                                      (unsigned char)(u >> 24)};
                tg_atomic_write(&f, b, 4);
            }
        }
    }
    if (tg_atomic_commit(&f) != 0) {
        if (err) {
            err->code = TG_ST_EIO;
            snprintf(err->msg, sizeof err->msg, "%.*s", (int)sizeof err->msg - 1, f.msg);
        }
        return TG_ST_EIO;
    }
    st_ok(err);
    return 0;
}

/* ---------------------------------------------------------------- strict JSON reader */

struct tg_st_file {
    char *label;             /* file name, for messages */
    unsigned char *buf;      /* the whole file */
    size_t len;
    const unsigned char *data; /* buf + 8 + header length */
    uint64_t data_len;
    tg_st_entry *entries;
    int n, cap;
    st_index names;          /* entries by name */
    tg_st_meta meta;
};

typedef struct {
    const unsigned char *s;
    size_t n, i;
    const char *label;
    tg_st_error *err;
    int code;                /* set on the first failure */
} jp;

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static bool jfail(jp *p, tg_st_code code, const char *fmt, ...)
{
    if (p->code)
        return false;
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    p->code = st_fail(p->err, code, p->label, "invalid header JSON at byte %zu: %s", p->i, msg);
    return false;
}

static void jws(jp *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static bool jexpect(jp *p, char c)
{
    jws(p);
    if (p->i >= p->n)
        return jfail(p, TG_ST_EJSON, "expected '%c', found the end", c);
    if (p->s[p->i] != (unsigned char)c)
        return jfail(p, TG_ST_EJSON, "expected '%c'", c);
    p->i++;
    return true;
}

/* Peeks the next non-space byte (0 at the end). */
static int jpeek(jp *p)
{
    jws(p);
    return p->i < p->n ? p->s[p->i] : 0;
}

static bool is_valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    uint32_t cp;
    while (i < n) {
        size_t k = tg_utf8_decode(s + i, n - i, &cp);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

static void put_utf8(st_buf *b, uint32_t cp)
{
    char o[4];
    buf_put(b, o, (size_t)tg_utf8_encode(cp, o));
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool jhex4(jp *p, uint32_t *v)
{
    if (p->n - p->i < 4)
        return jfail(p, TG_ST_EJSON, "truncated \\u escape");
    *v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(p->s[p->i + (size_t)k]);
        if (h < 0)
            return jfail(p, TG_ST_EJSON, "bad \\u escape");
        *v = (*v << 4) | (uint32_t)h;
    }
    p->i += 4;
    return true;
}

/* Parses a string literal into a malloc'd NUL-terminated UTF-8 string. A
 * string holding U+0000 is refused (names and metadata are C strings). */
static char *jstring(jp *p)
{
    if (!jexpect(p, '"'))
        return NULL;
    st_buf b = {0};
    buf_put(&b, "", 0);
    for (;;) {
        if (p->i >= p->n) {
            jfail(p, TG_ST_EJSON, "unterminated string");
            break;
        }
        unsigned char c = p->s[p->i];
        if (c == '"') {
            p->i++;
            if (b.oom) {
                free(b.p);
                p->code = st_fail(p->err, TG_ST_ENOMEM, p->label, "out of memory parsing the header");
                return NULL;
            }
            return b.p;
        }
        if (c < 0x20) {
            jfail(p, TG_ST_EJSON, "control character in a string");
            break;
        }
        if (c == '\\') {
            p->i++;
            if (p->i >= p->n) {
                jfail(p, TG_ST_EJSON, "unterminated escape");
                break;
            }
            unsigned char e = p->s[p->i++];
            const char *rep = NULL;
            switch (e) {
            case '"': rep = "\""; break;
            case '\\': rep = "\\"; break;
            case '/': rep = "/"; break;
            case 'b': rep = "\b"; break;
            case 'f': rep = "\f"; break;
            case 'n': rep = "\n"; break;
            case 'r': rep = "\r"; break;
            case 't': rep = "\t"; break;
            case 'u': break;
            default: jfail(p, TG_ST_EJSON, "bad escape '\\%c'", e >= 0x20 && e < 0x7f ? e : '?');
            }
            if (p->code)
                break;
            if (rep) {
                buf_puts(&b, rep);
                continue;
            }
            uint32_t cp;
            if (!jhex4(p, &cp))
                break;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (p->n - p->i < 2 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u') {
                    jfail(p, TG_ST_EJSON, "unpaired surrogate");
                    break;
                }
                p->i += 2;
                if (!jhex4(p, &lo))
                    break;
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    jfail(p, TG_ST_EJSON, "unpaired surrogate");
                    break;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                jfail(p, TG_ST_EJSON, "unpaired surrogate");
                break;
            }
            if (cp == 0) {
                jfail(p, TG_ST_EJSON, "\\u0000 in a string");
                break;
            }
            put_utf8(&b, cp);
            continue;
        }
        uint32_t cp;
        size_t k = tg_utf8_decode(p->s + p->i, p->n - p->i, &cp);
        if (!k) {
            jfail(p, TG_ST_EJSON, "invalid UTF-8 in a string");
            break;
        }
        buf_put(&b, (const char *)p->s + p->i, k);
        p->i += k;
    }
    free(b.p);
    return NULL;
}

/* A JSON number that must be a non-negative integer <= limit. Other numbers
 * are parsed by the JSON grammar first so that the message is accurate. */
static bool juint(jp *p, uint64_t limit, uint64_t *out, const char *what)
{
    jws(p);
    size_t start = p->i;
    bool neg = false, frac = false;
    if (p->i < p->n && p->s[p->i] == '-') {
        neg = true;
        p->i++;
    }
    if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9')
        return jfail(p, TG_ST_EJSON, "expected a number for %s", what);
    if (p->s[p->i] == '0' && p->i + 1 < p->n && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9')
        return jfail(p, TG_ST_EJSON, "leading zero in a number");
    uint64_t v = 0;
    bool overflow = false;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        unsigned d = p->s[p->i] - '0';
        if (v > (UINT64_MAX - d) / 10)
            overflow = true;
        else
            v = v * 10 + d;
        p->i++;
    }
    if (p->i < p->n && p->s[p->i] == '.') {
        frac = true;
        p->i++;
        if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9')
            return jfail(p, TG_ST_EJSON, "bad number");
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
            p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        frac = true;
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-'))
            p->i++;
        if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9')
            return jfail(p, TG_ST_EJSON, "bad number");
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
            p->i++;
    }
    if (neg || frac || overflow || v > limit) {
        p->i = start;
        return jfail(p, TG_ST_EJSON, "%s must be an integer in [0, %llu]", what, (unsigned long long)limit);
    }
    *out = v;
    return true;
}

/* "[u, u, ...]" with at most max entries. */
static bool juint_array(jp *p, uint64_t *vals, int max, int *count, uint64_t limit, const char *what)
{
    if (!jexpect(p, '['))
        return false;
    *count = 0;
    if (jpeek(p) == ']') {
        p->i++;
        return true;
    }
    for (;;) {
        if (*count == max)
            return jfail(p, TG_ST_EJSON, "%s has more than %d entries", what, max);
        if (!juint(p, limit, &vals[*count], what))
            return false;
        (*count)++;
        int c = jpeek(p);
        if (c == ',') {
            p->i++;
            continue;
        }
        if (c == ']') {
            p->i++;
            return true;
        }
        return jfail(p, TG_ST_EJSON, "expected ',' or ']' in %s", what);
    }
}

static bool parse_metadata(jp *p, tg_st_meta *m)
{
    if (jpeek(p) != '{')
        return jfail(p, TG_ST_EJSON, "__metadata__ must be an object of strings");
    p->i++;
    if (jpeek(p) == '}') {
        p->i++;
        return true;
    }
    for (;;) {
        char *k = jstring(p);
        if (!k)
            return false;
        if (tg_st_meta_get(m, k)) {
            jfail(p, TG_ST_EJSON, "duplicate metadata key '%.60s'", k);
            free(k);
            return false;
        }
        if (!jexpect(p, ':')) {
            free(k);
            return false;
        }
        if (jpeek(p) != '"') {
            jfail(p, TG_ST_EJSON, "metadata value of '%.60s' is not a string", k);
            free(k);
            return false;
        }
        char *v = jstring(p);
        if (!v) {
            free(k);
            return false;
        }
        if (!meta_put_owned(m, k, v)) {
            free(k);
            free(v);
            p->code = st_fail(p->err, TG_ST_ENOMEM, p->label, "out of memory parsing the header");
            return false;
        }
        int c = jpeek(p);
        if (c == ',') {
            p->i++;
            continue;
        }
        if (c == '}') {
            p->i++;
            return true;
        }
        return jfail(p, TG_ST_EJSON, "expected ',' or '}' in __metadata__");
    }
}

/* {"dtype": "...", "shape": [...], "data_offsets": [b, e]}, keys in any order,
 * each exactly once, nothing else. */
static bool parse_tensor(jp *p, tg_st_entry *e, char *dtype, size_t dtype_size)
{
    if (jpeek(p) != '{')
        return jfail(p, TG_ST_EJSON, "tensor '%.60s' is not an object", e->name);
    p->i++;
    bool have_dtype = false, have_shape = false, have_offsets = false;
    if (jpeek(p) != '}')
        for (;;) {
            char *k = jstring(p);
            if (!k)
                return false;
            bool ok = jexpect(p, ':');
            if (ok && strcmp(k, "dtype") == 0 && !have_dtype) {
                char *v = jpeek(p) == '"' ? jstring(p) : NULL;
                if (!v)
                    ok = p->code ? false : jfail(p, TG_ST_EJSON, "dtype of '%.60s' is not a string", e->name);
                else {
                    snprintf(dtype, dtype_size, "%s", v);
                    free(v);
                }
                have_dtype = true;
            } else if (ok && strcmp(k, "shape") == 0 && !have_shape) {
                uint64_t dims[TG_ST_MAX_DIMS];
                ok = juint_array(p, dims, TG_ST_MAX_DIMS, &e->ndim, INT_MAX, "shape");
                for (int d = 0; ok && d < e->ndim; d++)
                    e->shape[d] = (int)dims[d];
                have_shape = true;
            } else if (ok && strcmp(k, "data_offsets") == 0 && !have_offsets) {
                uint64_t offs[2];
                int cnt = 0;
                ok = juint_array(p, offs, 2, &cnt, UINT64_MAX / 2, "data_offsets");
                if (ok && cnt != 2)
                    ok = jfail(p, TG_ST_EJSON, "data_offsets of '%.60s' needs 2 entries", e->name);
                if (ok) {
                    e->begin = offs[0];
                    e->end = offs[1];
                }
                have_offsets = true;
            } else if (ok) {
                ok = jfail(p, TG_ST_EJSON, "unexpected or repeated key '%.30s' in tensor '%.60s'", k, e->name);
            }
            free(k);
            if (!ok)
                return false;
            int c = jpeek(p);
            if (c == ',') {
                p->i++;
                continue;
            }
            if (c == '}')
                break;
            return jfail(p, TG_ST_EJSON, "expected ',' or '}' in tensor '%.60s'", e->name);
        }
    p->i++;
    if (!have_dtype || !have_shape || !have_offsets)
        return jfail(p, TG_ST_EJSON, "tensor '%.60s' lacks %s", e->name,
                     !have_dtype ? "dtype" : !have_shape ? "shape" : "data_offsets");
    return true;
}

static int find_entry(const tg_st_file *f, const char *name)
{
    return index_find(&f->names, f->entries, ENTRY_NAME, name);
}

/* The whole header; entry dtypes are collected for the checks that follow. */
static bool parse_header(jp *p, tg_st_file *f, char (**dtypes)[16])
{
    if (jpeek(p) != '{')
        return jfail(p, TG_ST_EJSON, "the header is not a JSON object");
    p->i++;
    bool have_meta = false;
    if (jpeek(p) != '}')
        for (;;) {
            char *k = jstring(p);
            if (!k)
                return false;
            if (!jexpect(p, ':')) {
                free(k);
                return false;
            }
            if (strcmp(k, "__metadata__") == 0) {
                free(k);
                if (have_meta)
                    return jfail(p, TG_ST_EJSON, "__metadata__ appears twice");
                have_meta = true;
                if (!parse_metadata(p, &f->meta))
                    return false;
            } else {
                if (find_entry(f, k) >= 0) {
                    jfail(p, TG_ST_EJSON, "tensor '%.60s' appears twice", k);
                    free(k);
                    return false;
                }
                if (f->n == f->cap) {
                    int cap = f->cap ? 2 * f->cap : 16;
                    tg_st_entry *e = realloc(f->entries, (size_t)cap * sizeof *e);
                    char(*d)[16] = realloc(*dtypes, (size_t)cap * sizeof **dtypes);
                    if (e)
                        f->entries = e;
                    if (d)
                        *dtypes = d;
                    if (!e || !d) {
                        free(k);
                        p->code = st_fail(p->err, TG_ST_ENOMEM, p->label, "out of memory parsing the header");
                        return false;
                    }
                    f->cap = cap;
                }
                tg_st_entry *e = &f->entries[f->n];
                memset(e, 0, sizeof *e);
                e->name = k;
                (*dtypes)[f->n][0] = '\0';
                f->n++;
                if (!index_add(&f->names, f->entries, ENTRY_NAME, f->n - 1)) {
                    p->code = st_fail(p->err, TG_ST_ENOMEM, p->label, "out of memory parsing the header");
                    return false;
                }
                if (!parse_tensor(p, e, (*dtypes)[f->n - 1], sizeof **dtypes))
                    return false;
            }
            int c = jpeek(p);
            if (c == ',') {
                p->i++;
                continue;
            }
            if (c == '}')
                break;
            return jfail(p, TG_ST_EJSON, "expected ',' or '}' in the header object");
        }
    p->i++;
    if (jpeek(p) != 0)
        return jfail(p, TG_ST_EJSON, "trailing bytes after the header object");
    return true;
}

static int cmp_by_begin(const void *a, const void *b)
{
    const tg_st_entry *x = *(tg_st_entry *const *)a, *y = *(tg_st_entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int validate_entries(tg_st_file *f, char (*dtypes)[16], tg_st_error *err)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(dtypes[i], "F32") != 0)
            return st_fail(err, TG_ST_EDTYPE, f->label, "tensor '%.60s' has dtype \"%.15s\"; only F32 is supported",
                           f->entries[i].name, dtypes[i]);
    for (int i = 0; i < f->n; i++) {
        tg_st_entry *e = &f->entries[i];
        uint64_t numel = 1;
        bool overflow = false;
        for (int d = 0; d < e->ndim; d++) {
            uint64_t s = (uint64_t)e->shape[d];
            if (s && numel > UINT64_MAX / 8 / s)
                overflow = true;
            else
                numel *= s;
        }
        if (overflow)
            return st_fail(err, TG_ST_EOFFSETS, f->label, "tensor '%.60s' has an impossible shape", e->name);
        e->numel = (int64_t)numel;
        if (e->end < e->begin || e->end > f->data_len)
            return st_fail(err, TG_ST_EOFFSETS, f->label,
                           "tensor '%.60s': data_offsets [%llu,%llu] lie outside the %llu data bytes (truncated file?)",
                           e->name,
                           (unsigned long long)e->begin, (unsigned long long)e->end,
                           (unsigned long long)f->data_len);
        if (e->end - e->begin != numel * 4)
            return st_fail(err, TG_ST_EOFFSETS, f->label,
                           "tensor '%.60s': data_offsets [%llu,%llu] hold %llu bytes but its shape needs %llu",
                           e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                           (unsigned long long)(e->end - e->begin), (unsigned long long)(numel * 4));
    }
    /* The tensors must tile [0, data_len) exactly: no overlap, no gap. */
    tg_st_entry **order = malloc((f->n > 0 ? (size_t)f->n : 1u) * sizeof *order);
    if (!order)
        return st_fail(err, TG_ST_ENOMEM, f->label, "out of memory");
    for (int i = 0; i < f->n; i++)
        order[i] = &f->entries[i];
    qsort(order, (size_t)f->n, sizeof *order, cmp_by_begin);
    uint64_t at = 0;
    for (int i = 0; i < f->n; i++) {
        if (order[i]->begin != at) {
            int rc = st_fail(err, TG_ST_EOFFSETS, f->label, "tensor '%.60s' %s at data byte %llu (expected %llu)",
                             order[i]->name, order[i]->begin < at ? "overlaps the previous tensor" : "leaves a gap",
                             (unsigned long long)order[i]->begin, (unsigned long long)at);
            free(order);
            return rc;
        }
        at = order[i]->end;
    }
    free(order);
    if (at != f->data_len)
        return st_fail(err, TG_ST_EOFFSETS, f->label, "%llu bytes after the last tensor are not described",
                       (unsigned long long)(f->data_len - at));
    return 0;
}

void tg_st_close(tg_st_file *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n; i++)
        free(f->entries[i].name);
    free(f->entries);
    index_free(&f->names);
    tg_st_meta_free(&f->meta);
    free(f->buf);
    free(f->label);
    free(f);
}

/* Takes ownership of buf (malloc'd, len bytes). */
static int st_open_owned(unsigned char *buf, size_t len, const char *label, tg_st_file **out, tg_st_error *err)
{
    *out = NULL;
    tg_st_file *f = calloc(1, sizeof *f);
    char *lab = st_strndup(label, strlen(label));
    if (!f || !lab) {
        free(f);
        free(lab);
        free(buf);
        return st_fail(err, TG_ST_ENOMEM, label, "out of memory");
    }
    f->label = lab;
    f->buf = buf;
    f->len = len;
    tg_st_meta_init(&f->meta);
    if (len < 8) {
        int rc = st_fail(err, TG_ST_ETRUNCATED, label, "file too small (%zu bytes) to be a safetensors file", len);
        tg_st_close(f);
        return rc;
    }
    uint64_t hlen = read_u64_le(buf);
    if (hlen > len - 8) {
        int rc = st_fail(err, TG_ST_ETRUNCATED, label,
                         "header length %llu exceeds the %zu bytes after it (truncated or not a safetensors file)",
                         (unsigned long long)hlen, len - 8);
        tg_st_close(f);
        return rc;
    }
    if (hlen < 2 || hlen > ST_MAX_HEADER || buf[8] != '{') {
        int rc = st_fail(err, TG_ST_EJSON, label, "not a safetensors file (header does not start with '{')");
        tg_st_close(f);
        return rc;
    }
    f->data = buf + 8 + hlen;
    f->data_len = len - 8 - hlen;
    jp p = {.s = buf + 8, .n = (size_t)hlen, .i = 0, .label = label, .err = err, .code = 0};
    char(*dtypes)[16] = NULL;
    bool ok = parse_header(&p, f, &dtypes);
    int rc = ok ? validate_entries(f, dtypes, err) : p.code;
    free(dtypes);
    if (rc) {
        tg_st_close(f);
        return rc;
    }
    *out = f;
    st_ok(err);
    return 0;
}

int tg_st_open_mem(const void *buf, size_t len, const char *label, tg_st_file **out, tg_st_error *err)
{
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy) {
        *out = NULL;
        return st_fail(err, TG_ST_ENOMEM, label, "out of memory");
    }
    if (len)
        memcpy(copy, buf, len);
    return st_open_owned(copy, len, label ? label : "(memory)", out, err);
}

int tg_st_open(const char *path, tg_st_file **out, tg_st_error *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return st_fail(err, TG_ST_EIO, path, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return st_fail(err, TG_ST_EIO, path, "not a regular file");
    }
    size_t len = (size_t)sb.st_size;
    unsigned char *buf = malloc(len ? len : 1);
    if (!buf) {
        close(fd);
        return st_fail(err, TG_ST_ENOMEM, path, "out of memory reading %zu bytes", len);
    }
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    if (got != len) {
        free(buf);
        return st_fail(err, TG_ST_EIO, path, "read failed");
    }
    return st_open_owned(buf, len, path, out, err);
}

int tg_st_count(const tg_st_file *f) { return f->n; }
const tg_st_entry *tg_st_entry_at(const tg_st_file *f, int i) { return i >= 0 && i < f->n ? &f->entries[i] : NULL; }
const tg_st_meta *tg_st_metadata(const tg_st_file *f) { return &f->meta; }
const char *tg_st_label(const tg_st_file *f) { return f->label; }

const tg_st_entry *tg_st_find(const tg_st_file *f, const char *name)
{
    int i = find_entry(f, name);
    return i >= 0 ? &f->entries[i] : NULL;
}

static bool entry_matches(const tg_st_entry *e, const tg_tensor *t)
{
    if (e->ndim != t->ndim)
        return false;
    for (int d = 0; d < e->ndim; d++)
        if (e->shape[d] != t->shape[d])
            return false;
    return true;
}

static void entry_shape_str(const tg_st_entry *e, char *buf, size_t size)
{
    size_t n = 0;
    n += (size_t)snprintf(buf + n, size - n, "[");
    for (int d = 0; d < e->ndim && n < size; d++)
        n += (size_t)snprintf(buf + n, size - n, d ? ",%d" : "%d", e->shape[d]);
    if (n < size)
        snprintf(buf + n, size - n, "]");
}

static int shape_error(const tg_st_file *f, const tg_st_entry *e, const tg_tensor *t, tg_st_error *err)
{
    char a[128], b[64];
    entry_shape_str(e, a, sizeof a);
    if (t->ndim > TG_MAX_DIMS)
        snprintf(b, sizeof b, "?");
    else
        tg_shape_str(b, t->ndim, t->shape);
    return st_fail(err, TG_ST_ESHAPE, f->label,
                   "tensor '%.60s' has shape %s but the model expects %s (checkpoint of another config?)", e->name, a,
                   b);
}

/* A model never computes with NaN or Inf weights on purpose: a file holding
 * them comes from a run that diverged, and would only sample silence. */
static bool nonfinite_error(const tg_st_file *f, const tg_st_entry *e, tg_st_error *err)
{
    float v;
    int64_t at = first_nonfinite(f->data + e->begin, e->numel, &v);
    if (at < 0)
        return false;
    st_fail(err, TG_ST_ENONFINITE, f->label,
            "tensor '%.60s' holds %g at element %lld: its values must be finite (saved from a run that diverged?)",
            e->name, (double)v, (long long)at);
    return true;
}

int tg_st_read(const tg_st_file *f, const char *name, tg_tensor *t, tg_st_error *err)
{
    const tg_st_entry *e = tg_st_find(f, name);
    if (!e)
        return st_fail(err, TG_ST_EMISSING, f->label, "tensor '%.60s' is missing", name);
    if (!entry_matches(e, t))
        return shape_error(f, e, t, err);
    if (nonfinite_error(f, e, err))
        return TG_ST_ENONFINITE;
    floats_from_le(t->data, f->data + e->begin, e->numel);
    st_ok(err);
    return 0;
}

int tg_st_load_params(const tg_st_file *f, const tg_params *params, tg_st_extra_fn allow_extra, void *ctx,
                      tg_st_error *err)
{
    /* Check everything before touching the model, so a failed load leaves it as it was. */
    for (int i = 0; i < params->n; i++) {
        const tg_st_entry *e = tg_st_find(f, params->items[i].name);
        if (!e)
            return st_fail(err, TG_ST_EMISSING, f->label, "tensor '%.60s' is missing", params->items[i].name);
        if (!entry_matches(e, params->items[i].t))
            return shape_error(f, e, params->items[i].t, err);
        if (nonfinite_error(f, e, err))
            return TG_ST_ENONFINITE;
    }
    st_index wanted = {0};
    for (int i = 0; i < params->n; i++)
        if (index_find(&wanted, params->items, PARAM_NAME, params->items[i].name) < 0 &&
            !index_add(&wanted, params->items, PARAM_NAME, i)) {
            index_free(&wanted);
            return st_fail(err, TG_ST_ENOMEM, f->label, "out of memory");
        }
    for (int i = 0; i < f->n; i++) {
        const char *nm = f->entries[i].name;
        if (index_find(&wanted, params->items, PARAM_NAME, nm) >= 0)
            continue;
        if (allow_extra && allow_extra(&f->entries[i], ctx))
            continue;
        index_free(&wanted);
        return st_fail(err, TG_ST_EEXTRA, f->label, "unexpected tensor '%.60s' (not a parameter of this model)", nm);
    }
    index_free(&wanted);
    for (int i = 0; i < params->n; i++) {
        const tg_st_entry *e = tg_st_find(f, params->items[i].name);
        floats_from_le(params->items[i].t->data, f->data + e->begin, e->numel);
    }
    st_ok(err);
    return 0;
}

/*
 * nn/tokenizer.c — text data and the two tokenizers of the trainer.
 *
 * Char-level: the vocabulary is the sorted set of Unicode characters (code
 * points, decoded from UTF-8) of the training text, like the book's
 * `sorted(set(text))`; id = rank in that order. It is stored in a
 * checkpoint's metadata as "vocab": the characters concatenated, in order.
 * Byte-level: 256 symbols, id = byte value.
 */
#include "nn.h"
#include "utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


/* ---------------------------------------------------------------- text files */

int tg_text_load(const char *path, char **text, size_t *len, char *err, size_t errsize)
{
    *text = NULL;
    *len = 0;
    /* O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below, as is every file that is not
     * a regular one (a device such as /dev/zero never ends) or is larger than the limit. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return tg_fail(err, errsize, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return tg_fail(err, errsize, "%s: cannot open: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return tg_fail(err, errsize, "%s: not a regular file (%s); give a text file", path,
                        S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO" : "a device or socket");
    }
    if (st.st_size > TG_TEXT_MAX_BYTES) {
        close(fd);
        return tg_fail(err, errsize, "%s: %lld bytes is more than the limit of 1 GiB", path, (long long)st.st_size);
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return tg_fail(err, errsize, "%s: cannot open: %s", path, strerror(errno));
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return tg_fail(err, errsize, "%s: out of memory", path);
    }
    for (;;) {
        if (n == cap) {
            char *nb = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                free(buf);
                fclose(f);
                return tg_fail(err, errsize, "%s: out of memory", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0 || n > TG_TEXT_MAX_BYTES)
            break;
    }
    bool bad = ferror(f) != 0;
    int e = errno;
    fclose(f);
    if (bad) {
        free(buf);
        return tg_fail(err, errsize, "%s: read failed: %s", path, strerror(e));
    }
    if (n > TG_TEXT_MAX_BYTES) {
        free(buf);
        return tg_fail(err, errsize, "%s: more than the limit of 1 GiB (the file grew while read)", path);
    }
    if (n == 0) {
        free(buf);
        return tg_fail(err, errsize, "%s: the file is empty", path);
    }
    const char *nul = memchr(buf, '\0', n);
    if (nul) {
        size_t at = (size_t)(nul - buf);
        free(buf);
        return tg_fail(err, errsize, "%s: looks like a binary file (NUL byte at offset %zu), expected text", path, at);
    }
    *text = buf;
    *len = n;
    return 0;
}

/* ---------------------------------------------------------------- tokenizers */

void tg_tokenizer_byte_init(tg_tokenizer *t)
{
    memset(t, 0, sizeof *t);
    t->kind = TG_TOK_BYTE;
    t->vocab_size = 256;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts v[0..n) and drops repeats; returns the new count. */
static size_t sort_unique(uint32_t *v, size_t n)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, cmp_u32);
    size_t u = 1;
    for (size_t j = 1; j < n; j++)
        if (v[u - 1] != v[j])
            v[u++] = v[j];
    return u;
}

int tg_tokenizer_char_build(tg_tokenizer *t, const char *text, size_t len, char *err, size_t errsize)
{
    memset(t, 0, sizeof *t);
    t->kind = TG_TOK_CHAR;
    /* Mark ASCII in a table, collect the rest, then sort and dedupe. */
    bool ascii[128] = {false};
    uint32_t *other = NULL;
    size_t n_other = 0, cap_other = 0;
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = tg_utf8_decode(s + i, len - i, &cp);
        if (!k) {
            free(other);
            return tg_fail(err, errsize, "not UTF-8 text (invalid byte 0x%02x at offset %zu); use --tokenizer byte",
                            s[i], i);
        }
        if (cp == 0) {
            free(other);
            return tg_fail(err, errsize, "NUL character at offset %zu", i);
        }
        if (cp < 128) {
            ascii[cp] = true;
        } else {
            if (n_other == cap_other) {
                size_t c = cap_other ? 2 * cap_other : 64;
                uint32_t *o = realloc(other, c * sizeof *o);
                if (!o) {
                    free(other);
                    return tg_fail(err, errsize, "out of memory");
                }
                other = o;
                cap_other = c;
            }
            other[n_other++] = cp;
            /* keep the scratch small on large texts: dedupe when it fills */
            if (n_other == cap_other && n_other >= 4096)
                n_other = sort_unique(other, n_other);
        }
        i += k;
    }
    n_other = sort_unique(other, n_other);
    int n_ascii = 0;
    for (int c = 0; c < 128; c++)
        n_ascii += ascii[c];
    size_t total = (size_t)n_ascii + n_other;
    if (total == 0) {
        free(other);
        return tg_fail(err, errsize, "the text is empty");
    }
    if (total > (1u << 20)) {
        free(other);
        return tg_fail(err, errsize, "too many distinct characters (%zu)", total);
    }
    t->chars = malloc(total * sizeof *t->chars);
    if (!t->chars) {
        free(other);
        return tg_fail(err, errsize, "out of memory");
    }
    int v = 0;
    for (int c = 0; c < 128; c++)
        if (ascii[c])
            t->chars[v++] = (uint32_t)c;
    for (size_t j = 0; j < n_other; j++)
        t->chars[v++] = other[j];
    free(other);
    t->vocab_size = v;
    return 0;
}

void tg_tokenizer_free(tg_tokenizer *t)
{
    free(t->chars);
    memset(t, 0, sizeof *t);
}

static int char_id(const tg_tokenizer *t, uint32_t cp)
{
    int lo = 0, hi = t->vocab_size - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (t->chars[mid] == cp)
            return mid;
        if (t->chars[mid] < cp)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

/* A printable rendering of a character for messages: 'x' or U+XXXX. */
static void char_repr(uint32_t cp, char *buf, size_t size)
{
    if (cp >= 0x20 && cp < 0x7f && cp != '\'')
        snprintf(buf, size, "'%c'", (char)cp);
    else if (cp >= 0x80) {
        char u[5] = {0};
        tg_utf8_encode(cp, u);
        snprintf(buf, size, "'%s' (U+%04X)", u, (unsigned)cp);
    } else
        snprintf(buf, size, "U+%04X", (unsigned)cp);
}

int tg_tokenizer_encode(const tg_tokenizer *t, const char *text, size_t len, int32_t *ids, int64_t *n, char *err,
                        size_t errsize)
{
    *n = 0;
    const unsigned char *s = (const unsigned char *)text;
    if (t->kind == TG_TOK_BYTE) {
        for (size_t i = 0; i < len; i++)
            ids[i] = s[i];
        *n = (int64_t)len;
        return 0;
    }
    int64_t k = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t step = tg_utf8_decode(s + i, len - i, &cp);
        if (!step)
            return tg_fail(err, errsize, "invalid UTF-8 byte 0x%02x at offset %zu", s[i], i);
        int id = char_id(t, cp);
        if (id < 0) {
            char r[32];
            char_repr(cp, r, sizeof r);
            return tg_fail(err, errsize,
                            "character %s at offset %zu is not in the vocabulary of %d characters",
                            r, i, t->vocab_size);
        }
        ids[k++] = id;
        i += step;
    }
    *n = k;
    return 0;
}

int tg_tokenizer_decode(const tg_tokenizer *t, int32_t id, char *out)
{
    if (id < 0 || id >= t->vocab_size)
        return 0;
    if (t->kind == TG_TOK_BYTE) {
        out[0] = (char)(unsigned char)id;
        return 1;
    }
    return tg_utf8_encode(t->chars[id], out);
}

void tg_tokenizer_to_meta(const tg_tokenizer *t, tg_st_meta *m)
{
    tg_st_meta_set(m, "tokenizer", t->kind == TG_TOK_BYTE ? "byte" : "char");
    if (t->kind != TG_TOK_CHAR)
        return;
    char *v = malloc((size_t)t->vocab_size * 4 + 1);
    if (!v)
        tg_error("tg_tokenizer_to_meta", "out of memory");
    size_t n = 0;
    for (int i = 0; i < t->vocab_size; i++)
        n += (size_t)tg_utf8_encode(t->chars[i], v + n);
    v[n] = '\0';
    tg_st_meta_set(m, "vocab", v);
    free(v);
}

int tg_tokenizer_from_meta(tg_tokenizer *t, const tg_st_meta *m, const char *label, tg_st_error *err)
{
    memset(t, 0, sizeof *t);
    const char *kind = tg_st_meta_get(m, "tokenizer");
    char msg[200];
    if (!kind) {
        snprintf(msg, sizeof msg, "no \"tokenizer\" in the metadata");
        goto fail;
    }
    if (strcmp(kind, "byte") == 0) {
        tg_tokenizer_byte_init(t);
        return 0;
    }
    if (strcmp(kind, "char") != 0) {
        snprintf(msg, sizeof msg, "unknown tokenizer \"%.40s\" in the metadata", kind);
        goto fail;
    }
    const char *vocab = tg_st_meta_get(m, "vocab");
    if (!vocab || !*vocab) {
        snprintf(msg, sizeof msg, "char tokenizer without a \"vocab\" in the metadata");
        goto fail;
    }
    size_t len = strlen(vocab);
    t->kind = TG_TOK_CHAR;
    t->chars = malloc(len * sizeof *t->chars);
    if (!t->chars) {
        snprintf(msg, sizeof msg, "out of memory");
        goto fail;
    }
    int v = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = tg_utf8_decode((const unsigned char *)vocab + i, len - i, &cp);
        if (!k || (v > 0 && cp <= t->chars[v - 1])) {
            snprintf(msg, sizeof msg, "the \"vocab\" in the metadata is not a sorted set of characters");
            goto fail;
        }
        t->chars[v++] = cp;
        i += k;
    }
    t->vocab_size = v;
    return 0;
fail:
    tg_tokenizer_free(t);
    if (err) {
        err->code = TG_ST_ECONFIG;
        snprintf(err->msg, sizeof err->msg, "%s: %s", label ? label : "(checkpoint)", msg);
    }
    return TG_ST_ECONFIG;
}

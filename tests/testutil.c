/* tests/testutil.c — golden loading, closeness asserts, error capture. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#ifndef TG_GOLDEN_DIR
#define TG_GOLDEN_DIR "tests/golden"
#endif

typedef struct {
    char *key;
    int ndim;
    int shape[TG_MAX_DIMS];
    int64_t numel;
    float *data;
} golden_entry;

struct golden_file {
    char path[512];
    golden_entry *e;
    int n, cap;
};

golden_file *golden_open(const char *name)
{
    golden_file *g = calloc(1, sizeof *g);
    snprintf(g->path, sizeof g->path, "%s/%s.txt", TG_GOLDEN_DIR, name);
    FILE *f = fopen(g->path, "r");
    ck_assert_msg(f != NULL, "golden file %s is missing (run from the repo root)", g->path);
    size_t cap = 1 << 16;
    char *line = malloc(cap);
    for (;;) {
        /* read one arbitrarily long line */
        size_t len = 0;
        int c;
        while ((c = fgetc(f)) != EOF && c != '\n') {
            if (len + 2 >= cap)
                line = realloc(line, cap *= 2);
            line[len++] = (char)c;
        }
        line[len] = '\0';
        if (len == 0 && c == EOF)
            break;
        if (len == 0 || line[0] == '#')
            continue;
        if (g->n == g->cap) {
            g->cap = g->cap ? g->cap * 2 : 64;
            g->e = realloc(g->e, (size_t)g->cap * sizeof *g->e);
        }
        golden_entry *e = &g->e[g->n];
        char *p = line, *end;
        char *sp = strchr(p, ' ');
        ck_assert_msg(sp != NULL, "%s: malformed line", g->path);
        e->key = strndup(p, (size_t)(sp - p));
        p = sp;
        e->ndim = (int)strtol(p, &end, 10);
        p = end;
        e->numel = 1;
        for (int i = 0; i < e->ndim; i++) {
            e->shape[i] = (int)strtol(p, &end, 10);
            p = end;
            e->numel *= e->shape[i];
        }
        p = strchr(p, ':');
        ck_assert_msg(p != NULL, "%s: key %s has no ':'", g->path, e->key);
        p++;
        e->data = malloc((size_t)(e->numel ? e->numel : 1) * sizeof(float));
        for (int64_t i = 0; i < e->numel; i++) {
            e->data[i] = strtof(p, &end);
            ck_assert_msg(end != p, "%s: key %s has too few values", g->path, e->key);
            p = end;
        }
        g->n++;
        if (c == EOF)
            break;
    }
    free(line);
    fclose(f);
    return g;
}

void golden_close(golden_file *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->n; i++) {
        free(g->e[i].key);
        free(g->e[i].data);
    }
    free(g->e);
    free(g);
}

static golden_entry *find(golden_file *g, const char *key)
{
    for (int i = 0; i < g->n; i++)
        if (strcmp(g->e[i].key, key) == 0)
            return &g->e[i];
    return NULL;
}

bool golden_has(golden_file *g, const char *key) { return find(g, key) != NULL; }

tg_tensor *golden_tensor(golden_file *g, const char *key)
{
    golden_entry *e = find(g, key);
    ck_assert_msg(e != NULL, "%s: no golden '%s'", g->path, key);
    return tg_from_array(e->ndim, e->shape, e->data);
}

tg_tensor *golden_tensorf(golden_file *g, const char *fmt, ...)
{
    char key[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    return golden_tensor(g, key);
}

int32_t *golden_ints(golden_file *g, const char *key, int64_t *n)
{
    golden_entry *e = find(g, key);
    ck_assert_msg(e != NULL, "%s: no golden '%s'", g->path, key);
    int32_t *v = malloc((size_t)(e->numel ? e->numel : 1) * sizeof *v);
    for (int64_t i = 0; i < e->numel; i++)
        v[i] = (int32_t)lrintf(e->data[i]);
    if (n)
        *n = e->numel;
    return v;
}

void assert_close(const float *got, const tg_tensor *want, double atol, double rtol, const char *what)
{
    int64_t worst = -1;
    double worst_excess = 0.0;
    for (int64_t i = 0; i < want->numel; i++) {
        double w = want->data[i], x = got[i];
        double err = fabs(x - w), tol = atol + rtol * fabs(w);
        bool bad = !(err <= tol) && !(isinf(w) && x == w);
        if (bad && (worst < 0 || err - tol > worst_excess || isnan(x))) {
            worst = i;
            worst_excess = err - tol;
        }
    }
    ck_assert_msg(worst < 0, "%s: element %lld is %.7g, expected %.7g (atol %g, rtol %g)", what, (long long)worst,
                  worst >= 0 ? (double)got[worst] : 0.0, worst >= 0 ? (double)want->data[worst] : 0.0, atol, rtol);
}

void assert_tensor_close(const tg_tensor *got, const tg_tensor *want, double atol, double rtol, const char *what)
{
    char b1[64], b2[64];
    ck_assert_msg(got->numel == want->numel && (got->ndim == want->ndim || got->numel == 1),
                  "%s: shape %s, expected %s", what, tg_shape_str(b1, got->ndim, got->shape),
                  tg_shape_str(b2, want->ndim, want->shape));
    for (int i = 0; i < got->ndim && got->ndim == want->ndim; i++)
        ck_assert_msg(got->shape[i] == want->shape[i], "%s: shape %s, expected %s", what,
                      tg_shape_str(b1, got->ndim, got->shape), tg_shape_str(b2, want->ndim, want->shape));
    assert_close(got->data, want, atol, rtol, what);
}

static jmp_buf *g_jmp;
static char *g_msg;
static size_t g_msg_size;

static void jump_handler(const char *op, const char *msg, void *user)
{
    (void)user;
    snprintf(g_msg, g_msg_size, "%s: %s", op, msg);
    longjmp(*g_jmp, 1);
}

bool catch_error(void (*fn)(void *ctx), void *ctx, char *msg, size_t size)
{
    jmp_buf jb;
    jmp_buf *prev_jmp = g_jmp;
    g_jmp = &jb;
    g_msg = msg;
    g_msg_size = size;
    msg[0] = '\0';
    tg_error_handler prev = tg_set_error_handler(jump_handler, NULL);
    bool raised = false;
    if (setjmp(jb) == 0)
        fn(ctx);
    else
        raised = true;
    tg_set_error_handler(prev, NULL);
    g_jmp = prev_jmp;
    return raised;
}

int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    tg_tape_release_default();
    return failed;
}

void tmpdir_create(char *dir, size_t size, const char *prefix)
{
    snprintf(dir, size, "/tmp/%sXXXXXX", prefix);
    ck_assert_msg(mkdtemp(dir) != NULL, "mkdtemp %s failed", dir);
}

void tmpdir_remove(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[1024];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(dir);
}

int run_program(char *const argv[], const char *out_path, const char *err_path, bool tty)
{
    /* with tty, the slave end is opened here and inherited, so the master reads EIO (end) only once the
     * program and everything it started have closed it */
    int master = -1, slave = -1;
    if (tty) {
        master = posix_openpt(O_RDWR | O_NOCTTY);
        ck_assert_msg(master >= 0 && grantpt(master) == 0 && unlockpt(master) == 0, "no pseudo-terminal: %s",
                      strerror(errno));
        slave = open(ptsname(master), O_RDWR | O_NOCTTY);
        ck_assert_msg(slave >= 0, "cannot open %s: %s", ptsname(master), strerror(errno));
        struct termios tio;
        ck_assert_int_eq(tcgetattr(slave, &tio), 0);
        cfmakeraw(&tio);
        ck_assert_int_eq(tcsetattr(slave, TCSANOW, &tio), 0);
    }
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fo = tty ? slave : open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fi = open("/dev/null", O_RDONLY);
        if (fo < 0 || fe < 0 || fi < 0)
            _exit(126);
        dup2(fi, 0);
        dup2(fo, 1);
        dup2(fe, 2);
        if (tty) {
            close(master);
            close(slave);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    if (tty) {
        close(slave);
        FILE *out = fopen(out_path, "wb");
        ck_assert_msg(out != NULL, "cannot write %s", out_path);
        char buf[4096];
        for (;;) {
            ssize_t n = read(master, buf, sizeof buf);
            if (n > 0)
                ck_assert_uint_eq(fwrite(buf, 1, (size_t)n, out), (size_t)n);
            else if (n < 0 && errno == EINTR)
                continue;
            else
                break; /* EIO: every slave descriptor is closed */
        }
        fclose(out);
        close(master);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

char *read_whole_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    b[n] = '\0';
    if (len)
        *len = (size_t)n;
    return b;
}

void assert_file_holds(const char *path, const void *want, size_t n, const char *what)
{
    size_t got;
    char *now = read_whole_file(path, &got);
    const bool same = got == n && memcmp(now, want, n) == 0;
    free(now);
    ck_assert_msg(same, "%s: %s (%zu bytes now, %zu before)", path, what, got, n);
}

void write_whole_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

/* tensor/file.c — the one safe file writer (tg_atomic_file in tensor.h):
 * temp file beside the target, fsync, rename. */
#include "tensor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Records the first failure: errno e, what failed, one line naming the file. */
static int atomic_fail(tg_atomic_file *f, const char *path, int e, const char *what)
{
    if (f->err)
        return f->err;
    f->err = e ? e : EIO;
    snprintf(f->msg, sizeof f->msg, "%s: %s: %s", path, what, strerror(f->err));
    for (char *c = f->msg; *c; c++) /* one line, whatever the file name holds */
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    return f->err;
}

static void atomic_release(tg_atomic_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    if (f->tmp)
        unlink(f->tmp);
    f->fd = -1;
    free(f->path);
    free(f->tmp);
    free(f->buf);
    f->path = f->tmp = NULL;
    f->buf = NULL;
    f->nbuf = 0;
}

/* write(2) until done: retries short writes and EINTR. 0 or errno. */
static int write_all(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? errno : EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Six characters for the temp name, different per call and per process. */
static void temp_suffix(char *out)
{
    static const char abc[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    static unsigned long counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long long x = (unsigned long long)ts.tv_nsec ^ ((unsigned long long)ts.tv_sec << 30) ^
                           ((unsigned long long)getpid() << 20) ^
                           (unsigned long long)__atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED) * 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 6; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        out[i] = abc[(x >> 33) % (sizeof abc - 1)];
    }
}

int tg_atomic_open(tg_atomic_file *f, const char *path)
{
    tg_check_ptr("tg_atomic_open", f, "f");
    tg_check_ptr("tg_atomic_open", path, "path");
    memset(f, 0, sizeof *f);
    f->fd = -1;
    f->mode = ~0u;
    if (!*path)
        return atomic_fail(f, path, ENOENT, "cannot write");
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return atomic_fail(f, path, EISDIR, "cannot write");
        /* rename(2) only asks for the directory's permission; ask for the
         * file's too, as cp does (root passes, as with cp). */
        if (faccessat(AT_FDCWD, path, W_OK, AT_EACCESS) != 0)
            return atomic_fail(f, path, errno, "cannot replace it");
        f->mode = (unsigned)(st.st_mode & 07777);
    } else if (errno != ENOENT) {
        return atomic_fail(f, path, errno, "cannot write");
    }
    size_t lp = strlen(path);
    f->path = malloc(lp + 1);
    f->tmp = malloc(lp + 12);
    f->buf = malloc(TG_ATOMIC_BUF);
    if (!f->path || !f->tmp || !f->buf) {
        atomic_release(f);
        return atomic_fail(f, path, ENOMEM, "cannot write");
    }
    memcpy(f->path, path, lp + 1);
    memcpy(f->tmp, path, lp);
    memcpy(f->tmp + lp, ".XXXXXX.tmp", 12);
    /* mkstemp would make it 0600 and leave fixing the mode to a umask() call,
     * which races with other threads; open(2) applies the umask itself. */
    for (int tries = 0; tries < 100 && f->fd < 0; tries++) {
        temp_suffix(f->tmp + lp + 1);
        f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (f->fd < 0 && errno != EEXIST)
            break;
    }
    if (f->fd < 0) {
        int e = errno;
        free(f->tmp); /* not ours: never unlink it */
        f->tmp = NULL;
        atomic_release(f);
        return atomic_fail(f, path, e, "cannot create a temp file beside it");
    }
    return 0;
}

static int atomic_flush(tg_atomic_file *f)
{
    if (f->err || f->nbuf == 0)
        return f->err;
    int e = write_all(f->fd, f->buf, f->nbuf);
    f->nbuf = 0;
    return e ? atomic_fail(f, f->path, e, "write failed") : 0;
}

int tg_atomic_write(tg_atomic_file *f, const void *p, size_t n)
{
    tg_check_ptr("tg_atomic_write", f, "f");
    if (f->err || n == 0)
        return f->err;
    tg_check_ptr("tg_atomic_write", p, "p");
    if (f->fd < 0)
        tg_error("tg_atomic_write", "the file is not open (commit or abort came first)");
    const unsigned char *c = p;
    if (f->nbuf + n <= TG_ATOMIC_BUF) {
        memcpy(f->buf + f->nbuf, c, n);
        f->nbuf += n;
        return 0;
    }
    if (atomic_flush(f))
        return f->err;
    if (n >= TG_ATOMIC_BUF) { /* large blocks go straight through */
        int e = write_all(f->fd, c, n);
        return e ? atomic_fail(f, f->path, e, "write failed") : 0;
    }
    memcpy(f->buf, c, n);
    f->nbuf = n;
    return 0;
}

int tg_atomic_printf(tg_atomic_file *f, const char *fmt, ...)
{
    tg_check_ptr("tg_atomic_printf", f, "f");
    if (f->err)
        return f->err;
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return atomic_fail(f, f->path, EINVAL, "cannot format");
    if ((size_t)n < sizeof small)
        return tg_atomic_write(f, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big)
        return atomic_fail(f, f->path, ENOMEM, "write failed");
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    tg_atomic_write(f, big, (size_t)n);
    free(big);
    return f->err;
}

/* The directory entry is durable only once the directory is synced too
 * (best effort: some file systems refuse fsync on a directory). */
static void sync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if ((size_t)(slash - path) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    else
        return;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
}

int tg_atomic_commit(tg_atomic_file *f)
{
    tg_check_ptr("tg_atomic_commit", f, "f");
    if (!f->err && f->fd < 0)
        tg_error("tg_atomic_commit", "the file is not open (commit or abort came first)");
    if (!f->err)
        atomic_flush(f);
    if (!f->err && f->mode != ~0u && fchmod(f->fd, (mode_t)f->mode) != 0)
        atomic_fail(f, f->path, errno, "cannot set the mode");
    if (!f->err && fsync(f->fd) != 0)
        atomic_fail(f, f->path, errno, "fsync failed");
    if (!f->err) {
        int rc = close(f->fd);
        f->fd = -1;
        if (rc != 0)
            atomic_fail(f, f->path, errno, "write failed");
    }
    if (!f->err && rename(f->tmp, f->path) != 0)
        atomic_fail(f, f->path, errno, "rename failed");
    if (!f->err) {
        sync_parent(f->path);
        free(f->tmp); /* it is the target now */
        f->tmp = NULL;
    }
    atomic_release(f);
    return f->err;
}

void tg_atomic_abort(tg_atomic_file *f)
{
    if (f)
        atomic_release(f);
}

int tg_write_file(const char *path, const void *data, size_t n, char *msg, size_t size)
{
    tg_atomic_file f;
    tg_atomic_open(&f, path);
    tg_atomic_write(&f, data, n);
    int rc = tg_atomic_commit(&f);
    if (rc && msg && size)
        snprintf(msg, size, "%s", f.msg);
    return rc;
}

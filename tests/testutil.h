/*
 * tests/testutil.h — shared helpers for the Check suites.
 *
 * Goldens: tests/golden/<name>.txt, written by the scripts in tests/golden/
 * (PyTorch), one tensor per line:
 *     <key> <ndim> <d0> ... <dn-1> : <v0> <v1> ...
 * Lines starting with '#' are comments. Integer data (ids, targets) is stored
 * as floats too.
 */
#ifndef TG_TESTUTIL_H
#define TG_TESTUTIL_H

#include <check.h>
#include <setjmp.h>

#include "autograd/autograd.h"

typedef struct golden_file golden_file;

/* Loads tests/golden/<name>.txt (aborts the test with a clear message if missing). */
golden_file *golden_open(const char *name);
void golden_close(golden_file *g);
/* A heap copy of the tensor under key (caller frees); fails the test if absent. */
tg_tensor *golden_tensor(golden_file *g, const char *key);
/* Same, formatted key: golden_tensorf(g, "matmul.%d.out", i). */
tg_tensor *golden_tensorf(golden_file *g, const char *fmt, ...);
bool golden_has(golden_file *g, const char *key);
/* Integer view of a golden tensor's values (ids, targets): malloc'd array. */
int32_t *golden_ints(golden_file *g, const char *key, int64_t *n);

/* Asserts |got - want| <= atol + rtol*|want| elementwise, and equal numel;
 * the message names what, the worst index and both values. */
void assert_close(const float *got, const tg_tensor *want, double atol, double rtol, const char *what);
void assert_tensor_close(const tg_tensor *got, const tg_tensor *want, double atol, double rtol, const char *what);

/* Runs fn(ctx) with an error handler that longjmps back; returns true if
 * tg_error was called, copying "op: message" into msg. */
bool catch_error(void (*fn)(void *ctx), void *ctx, char *msg, size_t size);

/* A fresh directory /tmp/<prefix>XXXXXX for the files a test writes, in dir
 * (at least 64 bytes); tmpdir_remove deletes it and the files in it. */
void tmpdir_create(char *dir, size_t size, const char *prefix);
void tmpdir_remove(const char *dir);
/* The whole file at path, NUL-terminated (caller frees), *len its size (len
 * may be NULL); fails the test, naming path and errno, when it cannot be read. */
char *read_whole_file(const char *path, size_t *len);
/* Fails the test (naming path and what) unless the file at path holds exactly
 * the n bytes at want: a file an operation must have left as it was. */
void assert_file_holds(const char *path, const void *want, size_t n, const char *what);
/* Writes n bytes to path (created or truncated); fails the test on error. */
void write_whole_file(const char *path, const void *data, size_t n);

/* Runs the program argv[0] (a path) with argv (NULL-terminated): stdin from
 * /dev/null, stderr into err_path, stdout into out_path, or, with tty, into
 * a pseudo-terminal in raw mode (no "\n" -> "\r\n") whose output is copied
 * to out_path. Returns the exit status, or 128 + the signal that ended it. */
int run_program(char *const argv[], const char *out_path, const char *err_path, bool tty);

/* Runs one suite (CK_NORMAL output, Check's summary line); returns the
 * number failed. Each test binary's main is: return run_suite(suite()) ? 1 : 0; */
int run_suite(Suite *s);

#endif

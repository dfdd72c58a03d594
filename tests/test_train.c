/*
 * tests/test_train.c — the trainer and sampler programs, run as a user runs them.
 *
 * The binaries are the ones built beside this test (build/train and
 * build/sample for build/tests/test_train; build-asan/... under make asan),
 * run with fork/exec, stdout and stderr captured in a temp directory.
 *   - every bad input of the issue: a one-line error that names the problem,
 *     a non-zero exit, and no output file (--save, --log, --plot) left behind;
 *   - train -> save -> resume gives the very losses of an uninterrupted run
 *     (random and sequential batches, dropout, warmup + cosine);
 *   - Ctrl-C (SIGINT) saves a checkpoint that resumes;
 *   - the sampler: greedy is deterministic, an unknown prompt char is an error.
 */
#include "testutil.h"

#include "optim/gpt_run.h"

#include <dirent.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char g_dir[256];
static int g_send_sig = SIGINT; /* what run_prog_sig sends */
static char g_bin[512]; /* the build directory holding train and sample */

static void setup_dir(void)
{
    tmpdir_create(g_dir, sizeof g_dir, "tg_train_");
    char self[512];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert_int_gt(n, 0);
    self[n] = '\0';
    /* <build>/tests/test_train -> <build> */
    snprintf(g_bin, sizeof g_bin, "%s", dirname(dirname(self)));
}

static void teardown_dir(void) { tmpdir_remove(g_dir); }

static char *path_in(char *buf, const char *name)
{
    snprintf(buf, 512, "%s/%s", g_dir, name);
    return buf;
}

static bool exists(const char *name)
{
    char p[512];
    struct stat st;
    return stat(path_in(p, name), &st) == 0;
}

static void write_file(const char *name, const void *data, size_t n)
{
    char p[512];
    write_whole_file(path_in(p, name), data, n);
}

static char *read_file(const char *name, size_t *len)
{
    char p[512];
    return read_whole_file(path_in(p, name), len);
}

/* A text of a few thousand characters with some structure to learn. */
static void write_text(const char *name, int repeats)
{
    const char *para = "It was the best of times, it was the worst of times; it was the age of wisdom, "
                       "it was the age of foolishness.\n";
    char p[512];
    FILE *f = fopen(path_in(p, name), "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < repeats; i++)
        fputs(para, f);
    fclose(f);
}

/* Runs <bin>/<prog> with args (NULL-terminated; "@x" and "--flag=@x" mean the temp path x),
 * stdout/stderr into out.txt/err.txt. Returns the exit status, or 128+signal.
 * If sig_after_lines > 0, sends SIGINT once the log file has that many lines. */
static int run_prog_sig(const char *prog, const char *const *args, const char *log_for_sig, int sig_after_lines)
{
    char exe[600], out[512], err[512];
    snprintf(exe, sizeof exe, "%s/%s", g_bin, prog);
    ck_assert_msg(access(exe, X_OK) == 0, "%s is not built", exe);
    char *argv[64];
    char storage[64][512];
    int n = 0;
    argv[n++] = exe;
    for (int i = 0; args[i]; i++, n++) {
        ck_assert_int_lt(n, 62);
        const char *at = strstr(args[i], "=@");
        if (args[i][0] == '@') {
            argv[n] = path_in(storage[n], args[i] + 1);
        } else if (at) { /* "--flag=@x" */
            char p[512];
            int w = snprintf(storage[n], sizeof storage[n], "%.*s=%s", (int)(at - args[i]), args[i],
                             path_in(p, at + 2));
            ck_assert_int_lt(w, (int)sizeof storage[n]);
            argv[n] = storage[n];
        } else {
            argv[n] = (char *)args[i];
        }
    }
    argv[n] = NULL;
    path_in(out, "out.txt");
    path_in(err, "err.txt");
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fo < 0 || fe < 0)
            _exit(126);
        dup2(fo, 1);
        dup2(fe, 2);
        int fi = open("/dev/null", O_RDONLY);
        if (fi >= 0)
            dup2(fi, 0);
        execv(exe, argv);
        _exit(127);
    }
    int status;
    if (sig_after_lines > 0) {
        bool sent = false;
        for (int waited = 0; waited < 60000; waited += 5) {
            if (waitpid(pid, &status, WNOHANG) == pid)
                goto done;
            if (!sent) {
                char p[512];
                FILE *f = fopen(path_in(p, log_for_sig), "r");
                int lines = 0, c;
                if (f) {
                    while ((c = fgetc(f)) != EOF)
                        lines += c == '\n';
                    fclose(f);
                }
                if (lines >= sig_after_lines) {
                    kill(pid, g_send_sig);
                    sent = true;
                }
            }
            struct timespec ts = {0, 5000000};
            nanosleep(&ts, NULL);
        }
        kill(pid, SIGKILL);
    }
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
done:
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

static int run_prog(const char *prog, const char *const *args) { return run_prog_sig(prog, args, NULL, 0); }

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

#define TINY "--layers", "1", "--heads", "2", "--emb", "16", "--ctx", "16", "--batch", "4", "--threads", "1"

/* A small good checkpoint (emb 16, char vocab of text.txt) in good.safetensors. */
static void make_good_checkpoint(void)
{
    write_text("text.txt", 30);
    const char *args[] = {"--data", "@text.txt", TINY, "--steps", "3", "--eval-every", "0", "--sample-tokens", "0",
                          "--save", "@good.safetensors", NULL};
    ck_assert_int_eq(run_prog("train", args), 0);
    ck_assert(exists("good.safetensors"));
}

/* Checkpoints that must be refused, beside good.safetensors (made first):
 * truncated, corrupt (header), foreign (a valid file of another model), and
 * torch_emb8 (the book's GPTModel of another size, no metadata). */
static void make_bad_checkpoints(void)
{
    char *ck;
    size_t ckn;
    ck = read_file("good.safetensors", &ckn);
    write_file("truncated.safetensors", ck, ckn - 100);
    /* a corrupt header: flip the JSON's first brace */
    ck[8] = '[';
    write_file("corrupt.safetensors", ck, ckn);
    free(ck);
    /* foreign: a valid safetensors file of some other model (other names, no metadata) */
    {
        char p[512];
        tg_tensor *w = tg_zeros(TG_SHAPE(4, 3)), *b = tg_zeros(TG_SHAPE(4));
        tg_params ps;
        tg_params_init(&ps);
        tg_params_add(&ps, NULL, "classifier.weight", w);
        tg_params_add(&ps, NULL, "classifier.bias", b);
        tg_st_error e;
        ck_assert_msg(tg_st_save(path_in(p, "foreign.safetensors"), &ps, NULL, &e) == 0, "%s", e.msg);
        tg_params_free(&ps);
        tg_free(w);
        tg_free(b);
    }
    /* weights of the book's GPTModel of another size, as torch would save them (no metadata) */
    {
        char p[512];
        tg_gpt_config c = {.vocab_size = 256, .context_length = 16, .emb_dim = 8, .n_heads = 2, .n_layers = 1};
        tg_gpt *m = tg_gpt_new(&c, NULL);
        tg_st_error e;
        ck_assert_msg(tg_st_save(path_in(p, "torch_emb8.safetensors"), tg_gpt_params(m), NULL, &e) == 0, "%s", e.msg);
        tg_gpt_free(m);
    }
}

/* ---------------------------------------------------------------- bad input */

typedef struct {
    const char *what;
    const char *args[32];
    const char *want; /* substring of the one-line error */
} bad_case;

START_TEST(test_bad_inputs)
{
    make_good_checkpoint();
    write_file("empty.txt", "", 0);
    write_file("binary.txt", "\x7f" "ELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0>\0", 20);
    write_file("short.txt", "just ten c", 10);
    make_bad_checkpoints();
    write_file("other.txt", "Zebras quietly zigzag.", 22); /* Z, q, z: not in text.txt's vocabulary */
    write_file("latin1.txt", "caf\xe9 au lait, caf\xe9 noir, caf\xe9 cr\xe8me; caf\xe9 au lait, caf\xe9 noir.\n", 49);
#define OUTS "--save", "@out.safetensors", "--log", "@log.csv", "--plot", "@plot.svg"
    const bad_case cases[] = {
        {"missing data", {"--data", "@nope.txt", OUTS, NULL}, "nope.txt: cannot open"},
        {"empty data", {"--data", "@empty.txt", OUTS, NULL}, "empty.txt: the file is empty"},
        {"binary data", {"--data", "@binary.txt", OUTS, NULL}, "binary.txt: looks like a binary file"},
        {"data < ctx+1", {"--data", "@short.txt", "--ctx", "16", OUTS, NULL}, "shorter than --ctx + 1 = 17"},
        {"val split < ctx+1", {"--data", "@text.txt", "--ctx", "400", "--val-frac", "0.1", OUTS, NULL},
         "validation split"},
        {"no data flag", {OUTS, NULL}, "--data FILE is required"},
        {"unknown flag", {"--data", "@text.txt", "--bogus", "1", OUTS, NULL}, "unknown flag '--bogus'"},
        {"missing value", {"--data", "@text.txt", OUTS, "--lr", NULL}, "--lr needs a value"},
        {"lr = 0", {"--data", "@text.txt", "--lr", "0", OUTS, NULL}, "--lr must be > 0"},
        {"lr < 0", {"--data", "@text.txt", "--lr", "-0.1", OUTS, NULL}, "--lr must be > 0"},
        {"lr not a number", {"--data", "@text.txt", "--lr=abc", OUTS, NULL}, "--lr: 'abc' is not a number"},
        {"heads do not divide emb", {"--data", "@text.txt", "--emb", "16", "--heads", "3", OUTS, NULL},
         "--heads 3 does not divide --emb 16"},
        {"ctx < 1", {"--data", "@text.txt", "--ctx", "0", OUTS, NULL}, "--ctx must be in [1,"},
        {"bad tokenizer", {"--data", "@text.txt", "--tokenizer", "bpe", OUTS, NULL},
         "--tokenizer must be char or byte"},
        {"dropout 1", {"--data", "@text.txt", "--dropout", "1", OUTS, NULL}, "--dropout must be in [0, 1)"},
        {"steps negative", {"--data", "@text.txt", "--steps", "-5", OUTS, NULL}, "--steps must be in [0,"},
        {"corrupt checkpoint", {"--data", "@text.txt", "--resume", "@corrupt.safetensors", OUTS, NULL},
         "corrupt.safetensors: not a safetensors file"},
        {"truncated checkpoint", {"--data", "@text.txt", "--resume", "@truncated.safetensors", OUTS, NULL},
         "truncated.safetensors:"},
        {"foreign checkpoint", {"--data", "@text.txt", "--init", "@text.txt", OUTS, NULL},
         "text.txt: header length"},
        {"missing checkpoint", {"--data", "@text.txt", "--resume", "@none.safetensors", OUTS, NULL},
         "none.safetensors: cannot open"},
        {"foreign safetensors (init)", {"--data", "@text.txt", "--init", "@foreign.safetensors", OUTS, NULL},
         "foreign.safetensors: tensor 'tok_emb.weight' is missing"},
        {"foreign safetensors (resume)", {"--data", "@text.txt", "--resume", "@foreign.safetensors", OUTS, NULL},
         "not a tapegrad training checkpoint"},
        {"weights of another size, no metadata",
         {"--data", "@text.txt", "--tokenizer", "byte", "--init", "@torch_emb8.safetensors", TINY, OUTS, NULL},
         "tensor 'tok_emb.weight' has shape [256,8] but the model expects [256,16]"},
        {"resume with another optimizer",
         {"--data", "@text.txt", "--resume", "@good.safetensors", "--optimizer", "sgd", OUTS, NULL},
         "does not fit the optimizer sgd"},
        {"not UTF-8 text (char tokenizer)", {"--data", "@latin1.txt", "--ctx", "8", OUTS, NULL},
         "latin1.txt: not UTF-8 text (invalid byte 0xe9 at offset 3); use --tokenizer byte"},
        {"another config (resume)",
         {"--data", "@text.txt", "--resume", "@good.safetensors", "--emb", "32", OUTS, NULL},
         "checkpoint of another config: it has --emb 16, the command line asks for 32"},
        {"another config (init)",
         {"--data", "@text.txt", "--init", "@good.safetensors", "--layers", "2", OUTS, NULL},
         "checkpoint of another config: it has --layers 1"},
        {"another tokenizer", {"--data", "@text.txt", "--init", "@good.safetensors", "--tokenizer", "byte", OUTS, NULL},
         "it has --tokenizer char"},
        {"data outside the checkpoint's vocabulary",
         {"--data", "@other.txt", "--resume", "@good.safetensors", "--ctx", "16", OUTS, NULL},
         "character 'Z' at offset 0 is not in the vocabulary"},
        {"prompt outside the vocabulary", {"--data", "@text.txt", "--prompt", "Xylophone", OUTS, NULL},
         "--prompt: character 'X'"},
        {"save into a missing directory", {"--data", "@text.txt", "--save", "/nonexistent-dir/x.safetensors", NULL},
         "--save /nonexistent-dir/x.safetensors: the directory '/nonexistent-dir' does not exist"},
        {"lr out of range", {"--data", "@text.txt", "--lr", "1e999", OUTS, NULL}, "--lr: '1e999' is out of range"},
        {"steps out of range", {"--data", "@text.txt", "--steps", "99999999999999999999", OUTS, NULL},
         "--steps: '99999999999999999999' is out of range"},
        {"eval-only without a checkpoint", {"--data", "@text.txt", "--eval-only", OUTS, NULL},
         "--eval-only needs a checkpoint"},
        {"val-data with a character outside the training vocabulary",
         {"--data", "@text.txt", "--val-data", "@other.txt", "--ctx", "8", OUTS, NULL},
         "other.txt: character 'Z' at offset 0 is not in the vocabulary"},
        {"val-data and val-frac", {"--data", "@text.txt", "--val-data", "@text.txt", "--val-frac", "0.2", OUTS, NULL},
         "cannot be combined"},
        {"data is a directory", {"--data", "@.", OUTS, NULL}, "not a regular file (a directory)"},
        {"val-data is a device", {"--data", "@text.txt", "--val-data", "/dev/zero", OUTS, NULL},
         "/dev/zero: not a regular file"},
        {"resume + init",
         {"--data", "@text.txt", "--resume", "@good.safetensors", "--init", "@good.safetensors", OUTS, NULL},
         "cannot be combined"},
    };
#undef OUTS
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = run_prog("train", cases[i].args);
        char *err = read_file("err.txt", NULL);
        ck_assert_msg(rc != 0 && rc < 128, "%s: exit status %d (%s)", cases[i].what, rc, err);
        ck_assert_msg(count_lines(err) == 1, "%s: stderr is not one line: %s", cases[i].what, err);
        ck_assert_msg(strncmp(err, "train: error: ", 14) == 0, "%s: %s", cases[i].what, err);
        ck_assert_msg(strstr(err, cases[i].want) != NULL, "%s: '%s' lacks '%s'", cases[i].what, err, cases[i].want);
        ck_assert_msg(!exists("out.safetensors") && !exists("log.csv") && !exists("plot.svg"),
                      "%s: left a file behind", cases[i].what);
        free(err);
    }
    /* the checkpoints used above are unchanged and nothing else appeared */
    DIR *d = opendir(g_dir);
    struct dirent *e;
    while ((e = readdir(d)))
        ck_assert_msg(strstr(e->d_name, ".tmp") == NULL && strstr(e->d_name, "XXXX") == NULL, "stray %s", e->d_name);
    closedir(d);
}
END_TEST

/* ---------------------------------------------------------------- resume */

/* The loss column of a --log CSV, one string per step (exact text). */
static int log_losses(const char *name, char rows[][48], int max)
{
    char *s = read_file(name, NULL);
    int n = 0;
    char *save = NULL;
    char *line = strtok_r(s, "\n", &save); /* header */
    ck_assert_str_eq(line, "step,lr,train_loss,val_loss,tokens_per_s");
    while ((line = strtok_r(NULL, "\n", &save)) && n < max) {
        /* step,lr,train_loss,... -> "step,lr,train_loss,val_loss" */
        int commas = 0;
        char *c = line;
        for (; *c && commas < 4; c++)
            commas += *c == ',';
        size_t len = (size_t)(c - line) - (commas == 4); /* without the 4th comma */
        ck_assert_uint_lt(len, 48);
        memcpy(rows[n], line, len);
        rows[n][len] = '\0';
        n++;
    }
    free(s);
    return n;
}

static void check_resume(const char *batches, const char *dropout)
{
    write_text("text.txt", 30);
    char rows_a[32][48], rows_b[32][48], rows_c[32][48];
    const char *full[] = {"--data", "@text.txt", TINY, "--steps", "12", "--eval-every", "4", "--eval-batches", "2",
                          "--warmup", "3", "--lr-schedule", "cosine", "--dropout", dropout, "--batches", batches,
                          "--sample-tokens", "0", "--log", "@a.csv", NULL};
    ck_assert_int_eq(run_prog("train", full), 0);
    const char *first[] = {"--data", "@text.txt", TINY, "--steps", "12", "--eval-every", "4", "--eval-batches", "2",
                           "--warmup", "3", "--lr-schedule", "cosine", "--dropout", dropout, "--batches", batches,
                           "--sample-tokens", "0", "--log", "@b.csv", "--stop-after", "5", "--save", "@ck.safetensors",
                           NULL};
    ck_assert_int_eq(run_prog("train", first), 0);
    char *out = read_file("out.txt", NULL);
    ck_assert_ptr_nonnull(strstr(out, "stopped at step 5/12"));
    free(out);
    ck_assert_int_eq(log_losses("b.csv", rows_b, 32), 6); /* the step-0 evaluation, then steps 1..5 */
    /* c.csv: a log that ran past the checkpoint (the full run's), to be cut back to step 5 and continued */
    size_t la;
    char *full_log = read_file("a.csv", &la);
    write_file("c.csv", full_log, la);
    free(full_log);
    /* the model and training flags (batch, steps, warmup, schedule, batches, dropout) come from the checkpoint;
     * b.csv, the first part's log, is continued */
    const char *second[] = {"--data", "@text.txt", "--threads", "1", "--eval-every", "4", "--eval-batches", "2",
                            "--sample-tokens", "0", "--log", "@b.csv", "--resume", "@ck.safetensors",
                            "--save", "@ck2.safetensors", NULL};
    ck_assert_int_eq(run_prog("train", second), 0);
    /* without --save, a resumed run saves back to the checkpoint it came from */
    const char *third[] = {"--data", "@text.txt", "--threads", "1", "--eval-every", "4", "--eval-batches", "2",
                           "--sample-tokens", "0", "--log", "@c.csv", "--resume", "@ck.safetensors", NULL};
    ck_assert_int_eq(run_prog("train", third), 0);
    out = read_file("out.txt", NULL);
    ck_assert_msg(strstr(out, "saved ") != NULL, "a resumed run without --save should save back: %s", out);
    free(out);
    size_t l1, l2;
    char *ck = read_file("ck.safetensors", &l1), *ck2 = read_file("ck2.safetensors", &l2);
    ck_assert_msg(l1 == l2 && memcmp(ck, ck2, l1) == 0, "the checkpoint saved back differs from --save's");
    free(ck);
    free(ck2);
    int na = log_losses("a.csv", rows_a, 32), nb = log_losses("b.csv", rows_b, 32);
    int nc = log_losses("c.csv", rows_c, 32);
    ck_assert_int_eq(na, 13);
    ck_assert_int_eq(nb, 13);
    ck_assert_int_eq(nc, 13);
    for (int i = 0; i < 13; i++) {
        ck_assert_str_eq(rows_b[i], rows_a[i]);
        ck_assert_str_eq(rows_c[i], rows_a[i]);
    }
    /* and training did something: the val loss at step 12 is below that at step 4 */
    ck_assert_double_lt(strtod(strrchr(rows_a[12], ',') + 1, NULL), strtod(strrchr(rows_a[4], ',') + 1, NULL));
}

START_TEST(test_resume_random) { check_resume("random", "0.1"); }
END_TEST

START_TEST(test_resume_sequential) { check_resume("sequential", "0"); }
END_TEST

/* Ctrl-C: the step in progress ends, the checkpoint is saved, exit 130. */
START_TEST(test_sigint_saves)
{
    write_text("text.txt", 30);
    const char *args[] = {"--data", "@text.txt", TINY, "--steps", "100000", "--eval-every", "0", "--sample-tokens",
                          "0", "--log", "@s.csv", "--save", "@int.safetensors", NULL};
    int rc = run_prog_sig("train", args, "s.csv", 4);
    ck_assert_int_eq(rc, 130);
    char *out = read_file("out.txt", NULL);
    ck_assert_ptr_nonnull(strstr(out, "interrupted at step"));
    free(out);
    char p[512];
    tg_st_file *f;
    tg_st_error err;
    ck_assert_msg(tg_st_open(path_in(p, "int.safetensors"), &f, &err) == 0, "%s", err.msg);
    const char *step = tg_st_meta_get(tg_st_metadata(f), "step");
    ck_assert_ptr_nonnull(step);
    char rows[4096][48];
    int n = log_losses("s.csv", rows, 4096);
    ck_assert_int_eq(atoi(step), n); /* the checkpoint holds every logged step */
    ck_assert_ptr_nonnull(tg_st_find(f, "optim.exp_avg.tok_emb.weight"));
    tg_st_close(f);
    /* and it resumes */
    char steps[32];
    snprintf(steps, sizeof steps, "%d", n + 2);
    const char *more2[] = {"--data", "@text.txt", "--threads", "1", "--batch", "4", "--steps", steps, "--eval-every",
                           "0", "--sample-tokens", "0", "--resume", "@int.safetensors", NULL};
    ck_assert_int_eq(run_prog("train", more2), 0);
    out = read_file("out.txt", NULL);
    ck_assert_ptr_nonnull(strstr(out, "done: 2 steps"));
    free(out);
}
END_TEST

/* Output files of a normal run: the CSV log, the SVG plot, the summary. */
START_TEST(test_outputs)
{
    write_text("text.txt", 30);
    const char *args[] = {"--data", "@text.txt", TINY, "--steps", "6", "--eval-every", "3", "--sample-tokens", "20",
                          "--log", "@l.csv", "--plot", "@p.svg", "--save", "@m.safetensors", NULL};
    ck_assert_int_eq(run_prog("train", args), 0);
    char *out = read_file("out.txt", NULL);
    ck_assert_ptr_nonnull(strstr(out, "sample before training"));
    ck_assert_ptr_nonnull(strstr(out, "sample after training"));
    /* the summary's losses are both evaluations (dropout off), labelled so; the live lines say "batch loss" */
    ck_assert_ptr_nonnull(strstr(out, "done: 6 steps | eval loss (dropout off): train "));
    ck_assert_ptr_nonnull(strstr(out, "step 3/6 | batch loss "));
    ck_assert_ptr_nonnull(strstr(out, " | val loss "));
    ck_assert_ptr_nonnull(strstr(out, "tok/s | wall "));
    ck_assert_ptr_null(strchr(out, '\r')); /* not a terminal: plain lines */
    /* losses in nats and bits per char (nats / ln 2), the summary with perplexity (exp of nats) */
    {
        double nats, bits, ppl;
        const char *v = strstr(out, ", val ");
        ck_assert_ptr_nonnull(v);
        ck_assert_int_eq(sscanf(v, ", val %lf nats = %lf bits/char (perplexity %lf)", &nats, &bits, &ppl), 3);
        ck_assert_double_eq_tol(bits, nats / log(2.0), 1e-3);
        ck_assert_double_eq_tol(ppl, exp(nats), 0.01 * exp(nats));
        ck_assert_ptr_nonnull(strstr(out, "step 3/6 | batch loss "));
        ck_assert_int_eq(sscanf(strstr(out, "step 3/6 | "), "step 3/6 | batch loss %*f | val loss %lf nats = %lf bits/char",
                                &nats, &bits), 2);
        ck_assert_double_eq_tol(bits, nats / log(2.0), 1e-3);
    }
    char *out0 = out;
    char *svg = read_file("p.svg", NULL);
    ck_assert_int_eq(strncmp(svg, "<svg", 4), 0);
    ck_assert_ptr_nonnull(strstr(svg, "</svg>"));
    free(svg);
    char rows[16][48];
    ck_assert_int_eq(log_losses("l.csv", rows, 16), 7);
    ck_assert_int_eq(strncmp(rows[0], "0,,,", 4), 0); /* the step-0 evaluation the console shows */
    {
        char want[96];
        snprintf(want, sizeof want, "step 0/6 | val loss %.4f nats = ", strtod(rows[0] + 4, NULL));
        ck_assert_msg(strstr(out0, want) != NULL, "'%s' is not on the console: %s", want, out0);
    }
    ck_assert_ptr_nonnull(strstr(rows[3], "3,")); /* step 3 has a val loss */
    ck_assert(rows[3][strlen(rows[3]) - 1] != ',');
    ck_assert(rows[2][strlen(rows[2]) - 1] == ',');  /* step 2 has none */
    char *out0_summary = strdup(strstr(out0, "done: 6 steps"));
    free(out0);
    ck_assert(exists("m.safetensors"));
    /* numbers in the metadata read as a Python user wrote them: "0.2", not "0.200000003" */
    {
        char p[512];
        tg_st_file *f;
        tg_st_error e;
        ck_assert_msg(tg_st_open(path_in(p, "m.safetensors"), &f, &e) == 0, "%s", e.msg);
        const tg_st_meta *m = tg_st_metadata(f);
        ck_assert_str_eq(tg_st_meta_get(m, "drop_rate"), "0.2");
        ck_assert_str_eq(tg_st_meta_get(m, "lr"), "0.003");
        ck_assert_str_eq(tg_st_meta_get(m, "weight_decay"), "0.1");
        ck_assert_str_eq(tg_st_meta_get(m, "val_frac"), "0.1");
        tg_st_close(f);
    }
    /* resuming a finished run says there is nothing to train, and leaves the checkpoint byte for byte as it
     * was (also with a smaller --steps, which once rewrote it as a run of 1 step) */
    size_t n0, n1;
    char *before = read_file("m.safetensors", &n0);
    const char *again[] = {"--data", "@text.txt", "--threads", "1", "--sample-tokens", "0", "--resume",
                           "@m.safetensors", NULL};
    ck_assert_int_eq(run_prog("train", again), 0);
    out = read_file("out.txt", NULL);
    ck_assert_msg(strstr(out, "nothing to train: the run is at step 6 of --steps 6") != NULL, "%s", out);
    ck_assert_ptr_nonnull(strstr(out, "done: 0 steps"));
    ck_assert_ptr_nonnull(strstr(out, "left as it was"));
    free(out);
    const char *fewer[] = {"--data", "@text.txt", "--threads", "1", "--sample-tokens", "0", "--steps", "1",
                           "--resume", "@m.safetensors", NULL};
    ck_assert_int_eq(run_prog("train", fewer), 0);
    char *after = read_file("m.safetensors", &n1);
    ck_assert_msg(n0 == n1 && memcmp(before, after, n0) == 0, "a resume with nothing to train rewrote the file");
    free(before);
    free(after);
    /* --eval-only: the checkpoint's losses, as the run's summary gave them, and nothing written */
    const char *ev[] = {"--data", "@text.txt", "--threads", "1", "--batch", "4", "--eval-only", "--init", "@m.safetensors",
                        "--log", "@ev.csv", NULL};
    ck_assert_int_eq(run_prog("train", ev), 0);
    out = read_file("out.txt", NULL);
    const char *t = strstr(out0_summary, "train ");
    ck_assert_ptr_nonnull(t);
    char want[160];
    snprintf(want, sizeof want, "eval | eval loss (dropout off): %.*s", (int)(strstr(t, " | ") - t), t);
    ck_assert_msg(strstr(out, want) != NULL, "'%s' not in %s", want, out);
    ck_assert(!exists("ev.csv"));
    free(out);
    free(out0_summary);
}
END_TEST

/* ---------------------------------------------------------------- issue 8/9: files, signals, divergence */

static double elapsed_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + 1e-9 * (double)(t.tv_nsec - t0->tv_nsec);
}

/* --data and --val-data: regular files of at most 1 GiB; a FIFO and /dev/zero are refused at once. */
START_TEST(test_data_files)
{
    char fifo[512], big[512];
    write_text("text.txt", 30);
    ck_assert_int_eq(mkfifo(path_in(fifo, "fifo"), 0600), 0);
    int fd = open(path_in(big, "big.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0600); /* sparse: 1 GiB + 1 byte */
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, (1LL << 30) + 1), 0);
    close(fd);
    const struct {
        const char *args[8];
        const char *want;
    } cases[] = {
        {{"--data", "@fifo", NULL}, "fifo: not a regular file (a FIFO)"},
        {{"--data", "/dev/zero", NULL}, "/dev/zero: not a regular file (a device or socket)"},
        {{"--data", "@text.txt", "--val-data", "@fifo", NULL}, "fifo: not a regular file (a FIFO)"},
        {{"--data", "@big.txt", NULL}, "big.txt: 1073741825 bytes is more than the limit of 1 GiB"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int rc = run_prog("train", cases[i].args);
        double took = elapsed_since(&t0);
        char *err = read_file("err.txt", NULL);
        ck_assert_msg(rc == 1 && count_lines(err) == 1 && strstr(err, cases[i].want), "case %zu: rc %d, '%s'", i, rc,
                      err);
        ck_assert_msg(took < 2.0, "case %zu took %.1f s: not refused at once", i, took);
        free(err);
    }
}
END_TEST

/* --val-data: a separate validation text in the training vocabulary; the run reports its tokens. */
START_TEST(test_val_data)
{
    write_text("text.txt", 30);
    write_text("val.txt", 3);
    const char *args[] = {"--data", "@text.txt", "--val-data", "@val.txt", TINY, "--steps", "4", "--eval-every", "2",
                          "--sample-tokens", "0", NULL};
    ck_assert_int_eq(run_prog("train", args), 0);
    char *out = read_file("out.txt", NULL);
    /* all of text.txt trains (30 x 110 characters), val.txt (3 x 110) validates */
    ck_assert_msg(strstr(out, "3300 tokens, 3300 train / 330 val in ") != NULL, "%s", out);
    ck_assert_ptr_nonnull(strstr(out, "step 2/4 | batch loss "));
    free(out);
}
END_TEST

/* SIGTERM saves like SIGINT and exits 143; the checkpoint resumes. */
START_TEST(test_sigterm_saves)
{
    write_text("text.txt", 30);
    const char *args[] = {"--data", "@text.txt", TINY, "--steps", "100000", "--eval-every", "0", "--sample-tokens",
                          "0", "--log", "@s.csv", "--save", "@term.safetensors", NULL};
    g_send_sig = SIGTERM;
    int rc = run_prog_sig("train", args, "s.csv", 4);
    g_send_sig = SIGINT;
    ck_assert_int_eq(rc, 143);
    char *out = read_file("out.txt", NULL);
    ck_assert_ptr_nonnull(strstr(out, "interrupted at step"));
    free(out);
    char p[512];
    tg_st_file *f;
    tg_st_error err;
    ck_assert_msg(tg_st_open(path_in(p, "term.safetensors"), &f, &err) == 0, "%s", err.msg);
    ck_assert_int_ge(atoi(tg_st_meta_get(tg_st_metadata(f), "step")), 3);
    tg_st_close(f);
}
END_TEST

/* Whether process pid has a handler for sig (the SigCgt mask of /proc/pid/status). */
static bool catches(pid_t pid, int sig)
{
    char p[64], line[256], exe[512];
    snprintf(p, sizeof p, "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(p, exe, sizeof exe - 1);
    if (n < 6 || memcmp(exe + n - 6, "/train", 6) != 0) /* not yet exec'd: the handlers are this test's */
        return false;
    snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
    FILE *f = fopen(p, "r");
    unsigned long long mask = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "SigCgt: %llx", &mask) == 1)
            break;
    if (f)
        fclose(f);
    return (mask >> (sig - 1)) & 1;
}

/* A signal during start-up (here: while a large text loads) says nothing was trained or saved: 130 / 143. */
START_TEST(test_signal_at_startup)
{
    char p[512];
    FILE *f = fopen(path_in(p, "large.txt"), "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 600000; i++) /* 66 MB */
        fputs("It was the best of times, it was the worst of times; it was the age of wisdom, it was...\n", f);
    fclose(f);
    const int sigs[] = {SIGINT, SIGTERM};
    for (int k = 0; k < 2; k++) {
        char exe[600], out[512];
        snprintf(exe, sizeof exe, "%s/train", g_bin);
        path_in(out, "out.txt");
        fflush(NULL);
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            dup2(fo, 1);
            dup2(fo, 2);
            execl(exe, exe, "--data", p, "--steps", "3", "--save", path_in(out + 256, "x.safetensors"), (char *)NULL);
            _exit(127);
        }
        /* once the handler is installed (the process catches the signal: /proc's SigCgt), long before the
         * 66 MB are loaded and tokenized */
        for (int waited = 0; waited < 20000 && !catches(pid, sigs[k]); waited++) {
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        }
        ck_assert(catches(pid, sigs[k]));
        kill(pid, sigs[k]);
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        char *o = read_file("out.txt", NULL);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 128 + sigs[k], "status %d: %s", status, o);
        ck_assert_msg(strstr(o, "nothing was trained, so nothing was saved") != NULL, "%s", o);
        ck_assert(!exists("x.safetensors"));
        free(o);
    }
}
END_TEST

/* Reads every tensor of a checkpoint; true if all values are finite. */
static bool checkpoint_finite(const char *path)
{
    tg_st_file *f;
    tg_st_error e;
    ck_assert_msg(tg_st_open(path, &f, &e) == 0, "%s", e.msg);
    bool ok = true;
    for (int i = 0; i < tg_st_count(f); i++) {
        const tg_st_entry *en = tg_st_entry_at(f, i);
        int shape[TG_MAX_DIMS] = {1};
        for (int d = 0; d < en->ndim; d++)
            shape[d] = en->shape[d];
        tg_tensor *t = tg_zeros(en->ndim, shape);
        ck_assert_msg(tg_st_read(f, en->name, t, &e) == 0, "%s", e.msg);
        for (int64_t k = 0; k < t->numel; k++)
            ok = ok && isfinite(t->data[k]);
        tg_free(t);
    }
    tg_st_close(f);
    return ok;
}

/* A diverged run with --save-every: exit non-zero naming the step, every file on disk finite, the last periodic
 * checkpoint loads and samples; the NaN hint matches the flags in force. */
START_TEST(test_diverged_run)
{
    write_text("text.txt", 30);
    const char *args[] = {"--data", "@text.txt", TINY, "--steps", "60", "--optimizer", "sgd", "--lr", "1e4", "--clip",
                          "0", "--eval-every", "5", "--sample-tokens", "0", "--save-every", "5", "--log", "@d.csv",
                          "--save", "@d.safetensors", NULL};
    int rc = run_prog("train", args);
    char *err = read_file("err.txt", NULL);
    ck_assert_msg(rc == 1, "a diverged run exits %d: %s", rc, err);
    int bad_step = 0, kept = 0;
    ck_assert_msg(sscanf(strstr(err, " at step ") ? strstr(err, " at step ") : "", " at step %d", &bad_step) == 1,
                  "%s", err);
    const char *k = strstr(err, "keeps the checkpoint of step ");
    ck_assert_msg(k && sscanf(k, "keeps the checkpoint of step %d", &kept) == 1, "%s", err);
    ck_assert_int_gt(bad_step, kept);
    ck_assert_int_eq(kept % 5, 0);
    ck_assert_ptr_nonnull(strstr(err, "try a lower --lr or --clip 1")); /* clipping is off: the hint suggests it */
    free(err);
    DIR *d = opendir(g_dir);
    struct dirent *e;
    int checked = 0;
    while ((e = readdir(d))) {
        char p[512];
        ck_assert_msg(strstr(e->d_name, ".tmp") == NULL, "stray %s", e->d_name);
        if (strstr(e->d_name, ".safetensors")) {
            ck_assert_msg(checkpoint_finite(path_in(p, e->d_name)), "%s holds NaN or Inf", e->d_name);
            checked++;
        }
    }
    closedir(d);
    ck_assert_int_eq(checked, 1);
    char *log = read_file("d.csv", NULL); /* the log never says nan either: it stops at the last finite step */
    ck_assert_ptr_null(strstr(log, "nan"));
    free(log);
    const char *smp[] = {"--load", "@d.safetensors", "--tokens", "20", NULL};
    ck_assert_int_eq(run_prog("sample", smp), 0);
    char *out = read_file("out.txt", NULL);
    ck_assert_uint_ge(strlen(out), 20);
    free(out);
    /* with clipping on, the hint does not suggest --clip 1 */
    const char *clip[] = {"--data", "@text.txt", TINY, "--steps", "60", "--optimizer", "sgd", "--lr", "1e30",
                          "--sample-tokens", "0", "--eval-every", "0", NULL};
    ck_assert_int_eq(run_prog("train", clip), 1);
    err = read_file("err.txt", NULL);
    ck_assert_msg(strstr(err, "(try a lower --lr)") != NULL && strstr(err, "--clip 1") == NULL, "%s", err);
    free(err);
}
END_TEST

/* The SVG's first polyline (the batch loss): its points. */
static int plot_points(const char *name)
{
    char *svg = read_file(name, NULL);
    char *a = strstr(svg, "points=\"");
    ck_assert_ptr_nonnull(a);
    int n = 0;
    for (char *c = a + 8; *c && *c != '"'; c++)
        n += *c == ',';
    free(svg);
    return n;
}

/* --plot after --resume: the whole run with --log (read back from the CSV), else this run's part, said so. */
START_TEST(test_plot_after_resume)
{
    write_text("text.txt", 30);
    const char *first[] = {"--data", "@text.txt", TINY, "--steps", "10", "--eval-every", "5", "--sample-tokens", "0",
                           "--stop-after", "4", "--log", "@p.csv", "--save", "@p.safetensors", NULL};
    ck_assert_int_eq(run_prog("train", first), 0);
    const char *second[] = {"--data", "@text.txt", "--threads", "1", "--sample-tokens", "0", "--resume",
                            "@p.safetensors", "--log", "@p.csv", "--plot", "@whole.svg", "--save", "@q.safetensors",
                            NULL};
    ck_assert_int_eq(run_prog("train", second), 0);
    ck_assert_int_eq(plot_points("whole.svg"), 10);
    const char *third[] = {"--data", "@text.txt", "--threads", "1", "--sample-tokens", "0", "--resume",
                           "@p.safetensors", "--plot", "@part.svg", "--save", "@r.safetensors", NULL};
    ck_assert_int_eq(run_prog("train", third), 0);
    ck_assert_int_eq(plot_points("part.svg"), 6);
    char *out = read_file("out.txt", NULL);
    ck_assert_msg(strstr(out, "this run's steps only") != NULL, "%s", out);
    free(out);
}
END_TEST

/* ---------------------------------------------------------------- sampler */


/* The debugging flags: --dot writes the first step's graph (Graphviz accepts
 * it), --grad-norms N prints the ten largest per-parameter grad norms by
 * name every N steps, --detect-anomaly stops at the first NaN naming op,
 * entry and module, and aborts (SIGABRT) instead of exiting. */
/* The run build/train makes, through the library alone (optim/gpt_run.h): the checkpoint's metadata in its
 * order, a resume taking the training settings not given from it and keeping those given, a given model
 * setting that disagrees with it refused, and the settings a run needs. */
static bool g_given_steps_only(const char *flag) { return strcmp(flag, "--steps") == 0; }
static bool g_given_emb(const char *flag) { return strcmp(flag, "--emb") == 0; }

START_TEST(test_gpt_run_library)
{
    char data[512], ck[512], err[640];
    write_text("text.txt", 30);
    path_in(data, "text.txt");
    path_in(ck, "run.safetensors");
    const tg_gpt_run_settings base = {
        .layers = 1, .heads = 2, .emb = 16, .ctx = 16, .dropout = 0.1, .data = data, .tokenizer = "char",
        .optimizer = "adamw", .schedule = "cosine", .batches = "random", .lr = 3e-3, .weight_decay = 0.1,
        .min_lr = 3e-4, .clip = 1, .val_frac = 0.1, .steps = 4, .warmup = 1, .batch = 4, .seed = 123,
        .eval_every = 2, .eval_batches = 2, .save = ck};
    tg_gpt_run_settings s = base;
    tg_gpt_run r;
    const tg_trainer_hooks none = {0};
    ck_assert_msg(tg_gpt_run_check(&s, err, sizeof err) == 0, "%s", err);
    ck_assert_msg(tg_gpt_run_setup(&r, &s, &none, NULL, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(r.cfg.vocab_size, r.d.tok.vocab_size);
    ck_assert_int_eq(tg_trainer_run(r.tr, 2), TG_TRAIN_DONE);
    ck_assert_msg(tg_trainer_save(r.tr, ck, err, sizeof err) == 0, "%s", err);
    tg_gpt_run_free(&r);

    tg_st_file *f;
    tg_st_error e;
    ck_assert_msg(tg_st_open(ck, &f, &e) == 0, "%s", e.msg);
    const tg_st_meta *m = tg_st_metadata(f);
    const char *order[] = {"format", "step", "optimizer", "lr", "lr_schedule", "steps", "seed", "batches",
                           "weight_decay", "momentum", "warmup", "min_lr", "clip", "batch", "val_frac", "data_hash",
                           "rng"};
    int at = -1;
    for (size_t k = 0; k < sizeof order / sizeof *order; k++) {
        int i = 0;
        while (i < m->n && strcmp(m->items[i].key, order[k]) != 0)
            i++;
        ck_assert_msg(i < m->n && i > at, "metadata '%s' missing or out of order", order[k]);
        at = i;
    }
    ck_assert_str_eq(tg_st_meta_get(m, "step"), "2");
    ck_assert_str_eq(tg_st_meta_get(m, "lr"), "0.003");
    ck_assert_str_eq(tg_st_meta_get(m, "steps"), "4");
    tg_st_close(f);

    /* resume: lr, optimizer, warmup from the checkpoint (not given), steps as given */
    s = base;
    s.resume = ck;
    s.lr = 0.5;
    s.optimizer = "sgd";
    s.warmup = 0;
    s.steps = 9;
    s.given = g_given_steps_only;
    ck_assert_msg(tg_gpt_run_setup(&r, &s, &none, NULL, err, sizeof err) == 0, "%s", err);
    ck_assert(s.lr == 3e-3 && s.warmup == 1 && s.steps == 9);
    ck_assert_str_eq(s.optimizer, "adamw");
    ck_assert_int_eq(r.ck_steps, 4);
    ck_assert_int_eq(r.tr->step, 2);
    ck_assert(!r.other_data && !r.ck_batches);
    tg_gpt_run_free(&r);

    /* a model setting given that the checkpoint contradicts */
    s = base;
    s.init = ck;
    s.emb = 32;
    s.given = g_given_emb;
    ck_assert_int_eq(tg_gpt_run_setup(&r, &s, &none, NULL, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "checkpoint of another config: it has --emb 16") != NULL, "%s", err);
    tg_gpt_run_free(&r);

    /* what a run needs */
    s = base;
    s.data = NULL;
    ck_assert_int_eq(tg_gpt_run_check(&s, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "--data FILE is required") != NULL, "%s", err);
    s = base;
    s.eval_only = true;
    ck_assert_int_eq(tg_gpt_run_check(&s, err, sizeof err), -1);
    ck_assert_msg(strstr(err, "--eval-only needs a checkpoint") != NULL, "%s", err);
    tg_tape_release_default();
}
END_TEST

START_TEST(test_debug_flags)
{
    write_text("text.txt", 30);
    const char *args[] = {"--data", "@text.txt", TINY, "--steps", "4", "--eval-every", "0", "--sample-tokens", "0",
                          "--quiet", "--dot", "@g.dot", "--grad-norms", "2", NULL};
    ck_assert_int_eq(run_prog("train", args), 0);
    char *dot = read_file("g.dot", NULL);
    const char *need[] = {"digraph tape {", "label=\"trf_blocks.0.att\"", "trf_blocks.0.att.W_query.weight\\n[16,16]\\ngrad norm",
                          "tg_cross_entropy", "tg_affine"};
    for (size_t i = 0; i < sizeof need / sizeof *need; i++)
        ck_assert_msg(strstr(dot, need[i]), "--dot output lacks '%s'", need[i]);
    free(dot);
    if (system("command -v dot >/dev/null 2>&1") == 0) {
        char cmd[1200], p[512], q[512];
        snprintf(cmd, sizeof cmd, "dot -Tsvg '%s' -o '%s'", path_in(p, "g.dot"), path_in(q, "g.svg"));
        ck_assert_msg(system(cmd) == 0, "dot -Tsvg rejects train's --dot output");
    } else {
        printf("test_debug_flags: Graphviz 'dot' not installed, the dot -Tsvg check is skipped\n");
    }
    char *out = read_file("out.txt", NULL);
    ck_assert_msg(strstr(out, "grad norms at step 2 (largest 10") && strstr(out, "grad norms at step 4 (largest 10"),
                  "%s", out);
    ck_assert_msg(!strstr(out, "grad norms at step 1 ") && !strstr(out, "grad norms at step 3 "), "%s", out);
    /* ten "  name norm" lines after each header, names of the model, norms descending */
    const char *h = strstr(out, "grad norms at step 2");
    const char *line = strchr(h, '\n') + 1;
    double prev = INFINITY;
    for (int i = 0; i < 10; i++) {
        char name[128];
        double v;
        ck_assert_msg(sscanf(line, " %127s %lf", name, &v) == 2, "bad grad-norm line: %.80s", line);
        ck_assert_msg(v <= prev && v > 0, "norms not descending at '%s' %g", name, v);
        ck_assert_msg(strstr(name, "weight") || strstr(name, "bias") || strstr(name, "scale") || strstr(name, "shift"),
                      "'%s' is not a parameter name", name);
        prev = v;
        line = strchr(line, '\n') + 1;
    }
    free(out);

    /* a huge lr blows the weights up: without the flag the run ends on the
     * NaN loss (exit 1); with it the first NaN op is named and it aborts */
    const char *blow[] = {"--data", "@text.txt", TINY, "--steps", "5", "--eval-every", "0", "--sample-tokens", "0",
                          "--quiet", "--lr", "1e30", NULL};
    ck_assert_int_eq(run_prog("train", blow), 1);
    const char *blow_a[] = {"--data", "@text.txt", TINY, "--steps", "5", "--eval-every", "0", "--sample-tokens", "0",
                            "--quiet", "--lr", "1e30", "--detect-anomaly", NULL};
    ck_assert_int_eq(run_prog("train", blow_a), 128 + SIGABRT);
    char *err = read_file("err.txt", NULL);
    ck_assert_msg(strstr(err, ": anomaly in forward: tape entry #") && strstr(err, ", module trf_blocks.0.") &&
                      strstr(err, " is nan"), "%s", err);
    free(err);
}
END_TEST

START_TEST(test_sample)
{
    make_good_checkpoint();
    make_bad_checkpoints();
    const char *greedy[] = {"--load", "@good.safetensors", "--prompt", "It was", "--tokens", "30", "--temperature",
                            "0", NULL};
    ck_assert_int_eq(run_prog("sample", greedy), 0);
    char *a = read_file("out.txt", NULL);
    ck_assert_int_eq(strncmp(a, "It was", 6), 0);
    ck_assert_uint_eq(strlen(a), 6 + 30 + 1);
    /* greedy is deterministic (the seed does not matter), and --flag=value works as in build/train */
    const char *greedy2[] = {"--load=@good.safetensors", "--prompt=It was", "--tokens=30", "--temperature=0",
                             "--seed=99", NULL};
    ck_assert_int_eq(run_prog("sample", greedy2), 0);
    char *b = read_file("out.txt", NULL);
    ck_assert_str_eq(a, b);
    free(a);
    free(b);
    const char *topk[] = {"--load", "@good.safetensors", "--prompt", "It", "--tokens", "20", "--temperature", "0.8",
                          "--top-k", "5", "--seed", "3", NULL};
    ck_assert_int_eq(run_prog("sample", topk), 0);

    const struct {
        const char *args[12];
        const char *want;
    } bad[] = {
        {{"--load", "@good.safetensors", "--prompt", "Quiz", NULL}, "--prompt: character 'Q' at offset 0"},
        {{"--load", "@nope.safetensors", NULL}, "nope.safetensors: cannot open"},
        {{"--load", "@text.txt", NULL}, "text.txt: header length"},
        {{"--load", "@truncated.safetensors", NULL}, "truncated.safetensors: "},
        {{"--load", "@foreign.safetensors", NULL}, "foreign.safetensors: metadata lacks \"vocab_size\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int rc = run_prog("sample", bad[i].args);
        char *err = read_file("err.txt", NULL);
        ck_assert_msg(rc == 1, "case %zu: exit %d", i, rc);
        ck_assert_msg(count_lines(err) == 1 && strstr(err, bad[i].want), "case %zu: '%s' lacks '%s'", i, err,
                      bad[i].want);
        free(err);
    }
}
END_TEST

/* examples/custom_layer.c, the extension walkthrough of docs/EXTENDING.md: its
 * SiLU op and RMSNorm module gradcheck, the GPT with them swapped in trains
 * through the library trainer on data/the-verdict.txt, and a resume from its
 * checkpoint equals the uninterrupted run (the program compares bit for bit
 * and exits 1 otherwise). A few steps here; make asan runs it too. */
START_TEST(test_custom_layer_example)
{
    char root[512], data[600];
    snprintf(root, sizeof root, "%s", g_bin);
    snprintf(data, sizeof data, "%s/data/the-verdict.txt", dirname(root));
    const char *args[] = {"--steps", "6", "--data", data, "--save", "@custom.safetensors", NULL};
    ck_assert_int_eq(run_prog("custom_layer", args), 0);
    char *out = read_file("out.txt", NULL);
    const char *want[] = {"gradcheck SiLU: ok", "gradcheck RMSNorm: ok", "RMSNorm rows have rms 1: ok",
                          "every LayerNorm an RMSNorm", "\n  trf_blocks.0.norm1.weight\n", "\n  final_norm.weight\n",
                          "  step 6/6 | batch loss ", "resumed at step 3",
                          "resume equals the uninterrupted run: yes (3 batch losses"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        ck_assert_msg(strstr(out, want[i]), "custom_layer's output lacks '%s':\n%s", want[i], out);
    free(out);
    /* the checkpoint holds the swapped model's names */
    char p[512];
    tg_st_file *f;
    tg_st_error e;
    ck_assert_msg(tg_st_open(path_in(p, "custom.safetensors"), &f, &e) == 0, "%s", e.msg);
    ck_assert_ptr_nonnull(tg_st_find(f, "trf_blocks.1.norm2.weight"));
    ck_assert_ptr_null(tg_st_find(f, "trf_blocks.1.norm2.scale"));
    ck_assert_ptr_nonnull(tg_st_find(f, "optim.exp_avg.final_norm.weight"));
    tg_st_close(f);
    /* a usage error is exit 2 */
    const char *bad[] = {"--steps", "1", NULL};
    ck_assert_int_eq(run_prog("custom_layer", bad), 2);
}
END_TEST

/* ---------------------------------------------------------------- non-finite checkpoints
 * A checkpoint whose weights hold NaN or Inf is refused when it is loaded,
 * naming the tensor: by the sampler (which once printed nothing and exited 0)
 * and by --resume and --init. */
START_TEST(test_nonfinite_checkpoint)
{
    make_good_checkpoint();
    size_t n;
    char *ck = read_file("good.safetensors", &n);
    uint64_t hlen = 0;
    for (int b = 7; b >= 0; b--)
        hlen = hlen << 8 | (unsigned char)ck[b];
    char p[512];
    tg_st_file *f;
    tg_st_error e;
    ck_assert_msg(tg_st_open(path_in(p, "good.safetensors"), &f, &e) == 0, "%s", e.msg);
    const tg_st_entry *w = tg_st_find(f, "trf_blocks.0.att.W_query.weight");
    ck_assert_ptr_nonnull(w);
    const size_t at = 8 + (size_t)hlen + (size_t)w->begin + 4 * 5; /* element 5 */
    tg_st_close(f);
    const unsigned char nan_le[4] = {0x00, 0x00, 0xc0, 0x7f}, inf_le[4] = {0x00, 0x00, 0x80, 0xff};
    memcpy(ck + at, nan_le, 4);
    write_file("nan.safetensors", ck, n);
    memcpy(ck + at, inf_le, 4);
    write_file("inf.safetensors", ck, n);
    free(ck);
    write_text("text.txt", 30);
    const struct {
        const char *prog;
        const char *args[16];
        const char *file;
    } cases[] = {
        {"sample", {"--load", "@nan.safetensors", "--prompt", "It", "--tokens", "5", NULL}, "nan.safetensors"},
        {"sample", {"--load", "@inf.safetensors", "--prompt", "It", "--tokens", "5", NULL}, "inf.safetensors"},
        {"train", {"--data", "@text.txt", "--threads", "1", "--resume", "@nan.safetensors", NULL},
         "nan.safetensors"},
        {"train", {"--data", "@text.txt", "--threads", "1", "--steps", "2", "--init", "@inf.safetensors", NULL},
         "inf.safetensors"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int rc = run_prog(cases[i].prog, cases[i].args);
        char *err = read_file("err.txt", NULL);
        char *out = read_file("out.txt", NULL);
        ck_assert_msg(rc == 1, "case %zu (%s): exit %d: %s", i, cases[i].prog, rc, err);
        ck_assert_msg(count_lines(err) == 1 && strstr(err, cases[i].file) &&
                          strstr(err, "'trf_blocks.0.att.W_query.weight'") && strstr(err, "element 5") &&
                          strstr(err, i % 2 ? "-inf" : "nan"),
                      "case %zu (%s): '%s' should name the file, the tensor, the element and the value", i,
                      cases[i].prog, err);
        ck_assert_msg(cases[i].prog[0] != 's' || out[0] == '\0', "case %zu: the sampler printed '%s'", i, out);
        free(err);
        free(out);
    }
}
END_TEST

/* ---------------------------------------------------------------- build
 * The Makefile, run from the source tree (the tests' working directory) into
 * a build directory of the test's own. Check is installed on the machines
 * that run this suite, so its absence is simulated in a private mount
 * namespace: /dev/null bound over check.h and check.pc, and an apt-get first
 * on PATH that records how it was called and "installs" Check by lifting the
 * mounts. */

/* sh -c script with D = the test directory, B = the build directory holding
 * the programs, out.txt / err.txt in D, and no
 * make variables of the make running this suite. Returns the exit status. */
static int run_sh(const char *script)
{
    char out[512], err[512];
    path_in(out, "out.txt");
    path_in(err, "err.txt");
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fo < 0 || fe < 0)
            _exit(126);
        dup2(fo, 1);
        dup2(fe, 2);
        unsetenv("MAKEFLAGS");
        unsetenv("MFLAGS");
        unsetenv("MAKELEVEL");
        unsetenv("MAKEOVERRIDES");
        setenv("D", g_dir, 1);
        setenv("B", g_bin, 1);
        execl("/bin/sh", "sh", "-c", script, (char *)NULL);
        _exit(127);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

#define PC_PATH "pc=$(pkg-config --variable=pcfiledir check 2>/dev/null || echo /usr/lib/x86_64-linux-gnu/pkgconfig)/check.pc; "
#define HIDE_CHECK PC_PATH "mount --bind /dev/null /usr/include/check.h && mount --bind /dev/null \"$pc\" && "

START_TEST(test_build_run_needs_no_check)
{
    ck_assert_msg(access("tests/need_check.sh", R_OK) == 0, "run from the source tree");
    /* make -n run: the library and build/train, nothing of the tests */
    ck_assert_int_eq(run_sh("make -n run BUILD=\"$D/b\""), 0);
    char *out = read_file("out.txt", NULL);
    ck_assert_ptr_null(strstr(out, "tests/"));
    ck_assert_ptr_null(strstr(out, "need_check"));
    ck_assert_ptr_nonnull(strstr(out, "libtapegrad.a"));
    ck_assert_ptr_nonnull(strstr(out, "examples/train.c"));
    ck_assert_ptr_nonnull(strstr(out, "/b/train --data data/the-verdict.txt"));
    ck_assert_ptr_null(strstr(out, "examples/sample.c")); /* only the program it runs */
    free(out);
    if (geteuid() != 0)
        return; /* hiding Check needs a mount namespace */
    /* with check.h unreadable, what make run builds still builds (-O0: quick) */
    int rc = run_sh("unshare -m sh -c '" HIDE_CHECK "make -j2 OPT=-O0 BUILD=\"$D/b\" \"$D/b/train\"' && "
                    "\"$D/b/train\" --help");
    char *err = read_file("err.txt", NULL);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    free(err);
    out = read_file("out.txt", NULL);
    ck_assert_ptr_nonnull(strstr(out, "usage: train"));
    free(out);
    ck_assert_int_eq(run_sh("rm -rf \"$D/b\""), 0);
}
END_TEST

START_TEST(test_build_test_gets_check)
{
    ck_assert_msg(access("tests/need_check.sh", R_OK) == 0, "run from the source tree");
    if (geteuid() != 0)
        return; /* hiding Check needs a mount namespace */
    /* root: apt-get update, then install -y check, noninteractive, before any
     * test object is compiled (one would fail against the empty check.h) */
    ck_assert_int_eq(run_sh("mkdir -p \"$D/bin\" && cat > \"$D/bin/apt-get\" <<'EOF'\n"
                            "#!/bin/sh\n"
                            "echo \"apt-get $* DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-}\" >> \"$D/apt.log\"\n"
                            "if [ \"$1\" = install ]; then umount /usr/include/check.h; umount \"$pc\"; "
                            "mount --bind \"$D/check.pc\" \"$pc\"; fi\n"
                            "exit 0\n"
                            "EOF\n"
                            "chmod +x \"$D/bin/apt-get\""),
                     0);
    /* the "installed" check.pc gives a flag of its own, to show the flags are read after the install */
    int rc = run_sh("unshare -m sh -c '" PC_PATH "sed \"s/^Cflags:.*/& -DTG_CHECK_FROM_PC/\" \"$pc\" > \"$D/check.pc\" && "
                    HIDE_CHECK "export pc; PATH=\"$D/bin:$PATH\" "
                    "make -j2 OPT=-O0 BUILD=\"$D/b\" \"$D/b/tests/test_attention_learns\" \"$D/b/tests/testutil.o\"'");
    char *err = read_file("err.txt", NULL), *out = read_file("out.txt", NULL);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    char *log = read_file("apt.log", NULL);
    ck_assert_str_eq(log, "apt-get update DEBIAN_FRONTEND=noninteractive\n"
                          "apt-get install -y check DEBIAN_FRONTEND=noninteractive\n");
    free(log);
    char *installed = strstr(out, "== Check installed"), *first_test = strstr(out, "tests/");
    ck_assert_msg(installed && first_test && installed < first_test, "a test compiled before Check was installed:\n%s",
                  out);
    ck_assert_msg(strstr(first_test, "-DTG_CHECK_FROM_PC") != NULL, "Check's flags were read before it was installed");
    free(out);
    free(err);
    ck_assert_int_eq(run_sh("rm -rf \"$D/b\" \"$D/apt.log\" \"$D/check.pc\""), 0);

    /* not root: the command to run, exit 2, never a compiler error */
    ck_assert_int_eq(chmod(g_dir, 01777), 0);
    rc = run_sh("unshare -m sh -c '" HIDE_CHECK "setpriv --reuid=65534 --regid=65534 --clear-groups "
                "env PATH=\"$D/bin:$PATH\" make OPT=-O0 BUILD=\"$D/b\" \"$D/b/tests/test_attention_learns\"'");
    err = read_file("err.txt", NULL);
    ck_assert_msg(rc == 2, "exit %d: %s", rc, err);
    ck_assert_msg(strstr(err, "sudo apt-get update && sudo apt-get install -y check") != NULL, "%s", err);
    ck_assert_msg(strstr(err, "error:") == NULL && strstr(err, "check.h") == NULL, "%s", err);
    free(err);
    ck_assert(!exists("apt.log")); /* nobody cannot install: apt-get is not run */
    ck_assert(!exists("b/tests/testutil.o"));
    ck_assert_int_eq(run_sh("rm -rf \"$D/b\" \"$D/bin\""), 0);
}
END_TEST

/* ---------------------------------------------------------------- files the programs replace
 * Through the library's writer (tg_atomic_file): a checkpoint saved back over
 * its file keeps that file's mode; a file its user may not write is not
 * replaced ("Permission denied", as cp; the sampler's --dump-logits as
 * nobody in a mode-1777 directory); a full disk (a small tmpfs, in a mount
 * namespace) leaves the old checkpoint whole and says so. */
START_TEST(test_programs_replace_files_safely)
{
    make_good_checkpoint();
    write_text("text.txt", 30);
    char p[512];
    /* mode: --resume saves back over a 0600 checkpoint, which stays 0600 */
    ck_assert_int_eq(chmod(path_in(p, "good.safetensors"), 0600), 0);
    const char *more[] = {"--data", "@text.txt", "--threads", "1", "--steps", "4", "--eval-every", "0",
                          "--sample-tokens", "0", "--resume", "@good.safetensors", NULL};
    ck_assert_int_eq(run_prog("train", more), 0);
    struct stat st;
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0600);
    if (geteuid() != 0)
        return; /* the rest needs root: setpriv, chown, mount */

    /* permission: nobody may not replace its own 0444 file, may replace a 0640 one */
    ck_assert_int_eq(chmod(p, 0644), 0);
    ck_assert_int_eq(chmod(g_dir, 01777), 0);
    write_file("ro.txt", "old", 3);
    ck_assert_int_eq(chown(path_in(p, "ro.txt"), 65534, 65534), 0);
    ck_assert_int_eq(chmod(p, 0444), 0);
    write_file("rw.txt", "old", 3);
    ck_assert_int_eq(chown(path_in(p, "rw.txt"), 65534, 65534), 0);
    ck_assert_int_eq(chmod(p, 0640), 0);
    const char *as_nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups \"$B/sample\" --load "
                            "\"$D/good.safetensors\" --prompt It --dump-logits \"$D/%s\"";
    char cmd[512];
    snprintf(cmd, sizeof cmd, as_nobody, "ro.txt");
    int rc = run_sh(cmd);
    char *err = read_file("err.txt", NULL);
    ck_assert_msg(rc == 1 && strstr(err, "ro.txt") && strstr(err, "Permission denied"), "exit %d: %s", rc, err);
    free(err);
    char *txt = read_file("ro.txt", NULL);
    ck_assert_str_eq(txt, "old");
    free(txt);
    snprintf(cmd, sizeof cmd, as_nobody, "rw.txt");
    rc = run_sh(cmd);
    err = read_file("err.txt", NULL);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    free(err);
    txt = read_file("rw.txt", NULL);
    ck_assert_msg(strncmp(txt, "2 22\n", 5) == 0, "rw.txt: %.40s", txt); /* T V, then the logits */
    free(txt);
    ck_assert_int_eq(stat(p, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0640);
    ck_assert_uint_eq(st.st_uid, 65534);

    /* a full disk: room for the old checkpoint and half of a new one */
    ck_assert_int_eq(stat(path_in(p, "good.safetensors"), &st), 0);
    snprintf(cmd, sizeof cmd,
             "unshare -m sh -c 'mkdir -p \"$D/full\" && mount -t tmpfs -o size=%lld tmpfs \"$D/full\" && "
             "cp \"$D/good.safetensors\" \"$D/full/m.safetensors\" && "
             "\"$B/train\" --data \"$D/text.txt\" --threads 1 --steps 6 --eval-every 0 --sample-tokens 0 "
             "--resume \"$D/full/m.safetensors\"; echo \"exit $?\"; "
             "cmp -s \"$D/full/m.safetensors\" \"$D/good.safetensors\" && echo intact; ls -A \"$D/full\"'; "
             "rmdir \"$D/full\"",
             (long long)(st.st_size * 3 / 2 / 4096 * 4096 + 4096));
    rc = run_sh(cmd);
    char *out = read_file("out.txt", NULL);
    err = read_file("err.txt", NULL);
    ck_assert_msg(rc == 0, "exit %d: %s", rc, err);
    ck_assert_msg(strstr(out, "exit 1\nintact\nm.safetensors\n") != NULL, "%s", out); /* no temp file left */
    ck_assert_msg(strstr(err, "full/m.safetensors") && strstr(err, "No space left on device"), "%s", err);
    free(out);
    free(err);
}
END_TEST

static Suite *train_suite(void)
{
    Suite *s = suite_create("train");
    TCase *tc = tcase_create("programs");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup_dir, teardown_dir);
    tcase_add_test(tc, test_bad_inputs);
    tcase_add_test(tc, test_resume_random);
    tcase_add_test(tc, test_resume_sequential);
    tcase_add_test(tc, test_sigint_saves);
    tcase_add_test(tc, test_outputs);
    tcase_add_test(tc, test_debug_flags);
    tcase_add_test(tc, test_sample);
    tcase_add_test(tc, test_data_files);
    tcase_add_test(tc, test_val_data);
    tcase_add_test(tc, test_sigterm_saves);
    tcase_add_test(tc, test_signal_at_startup);
    tcase_add_test(tc, test_diverged_run);
    tcase_add_test(tc, test_plot_after_resume);
    tcase_add_test(tc, test_gpt_run_library);
    tcase_add_test(tc, test_custom_layer_example);
    tcase_add_test(tc, test_nonfinite_checkpoint);
    suite_add_tcase(s, tc);

    tc = tcase_create("build");
    tcase_set_timeout(tc, 600);
    tcase_add_checked_fixture(tc, setup_dir, teardown_dir);
    tcase_add_test(tc, test_build_run_needs_no_check);
    tcase_add_test(tc, test_build_test_gets_check);
    suite_add_tcase(s, tc);

    tc = tcase_create("files");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup_dir, teardown_dir);
    tcase_add_test(tc, test_programs_replace_files_safely);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(train_suite()) ? 1 : 0; }

/*
 * tests/test_gdb.c — suite "gdb": docs/DEBUGGING.md stays true. It runs
 * tests/gdb/replay.py, which builds the debug programs itself (make
 * debug-examples), replays every gdb session of the document with gdb
 * -batch (the extension reads memory only: no inferior calls, which fail on
 * this machine) and compares the transcripts with the document, numbers
 * included, after normalising addresses and gdb's banners; and the
 * extension's tensor print matches torch's. Skipped, saying
 * so, where gdb is missing and under ASan (gdb and the sanitizers' shadow
 * memory do not mix, and the replay needs the plain debug build anyway).
 */
#include "testutil.h"

#include <stdlib.h>
#include <sys/wait.h>

#if defined(__SANITIZE_ADDRESS__)
#define TG_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TG_ASAN 1
#endif
#endif

/* The extension prints values as torch does: its port of torch's print
 * against torch's own strings (tests/golden/print.txt). */
START_TEST(test_extension_prints_like_torch)
{
#ifdef TG_ASAN
    printf("test_gdb: skipped under ASan\n");
    return;
#else
    if (system("command -v gdb >/dev/null 2>&1") != 0) {
        printf("test_gdb: gdb is not installed: the extension's print check is skipped\n");
        return;
    }
    fflush(stdout);
    int rc = system("gdb -batch -nx -x docs/gdb/tapegrad_gdb.py -x tests/gdb/check_print.py");
    ck_assert_msg(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "the extension's tensor print differs from torch's");
#endif
}
END_TEST

START_TEST(test_debugging_md_replays)
{
#ifdef TG_ASAN
    printf("test_gdb: skipped under ASan (the replay runs in the plain test build)\n");
    return;
#else
    if (system("command -v gdb >/dev/null 2>&1") != 0) {
        printf("test_gdb: gdb is not installed: the docs/DEBUGGING.md replay is skipped\n");
        return;
    }
    if (system("command -v python3 >/dev/null 2>&1") != 0) {
        printf("test_gdb: python3 is not installed: the docs/DEBUGGING.md replay is skipped\n");
        return;
    }
    fflush(stdout);
    int rc = system("python3 tests/gdb/replay.py");
    ck_assert_msg(WIFEXITED(rc) && WEXITSTATUS(rc) == 0,
                  "docs/DEBUGGING.md no longer matches a real gdb session (diff above; exit %d)",
                  WIFEXITED(rc) ? WEXITSTATUS(rc) : -1);
#endif
}
END_TEST

/* `tg tape` (reading memory) prints the very lines tg_tape_print does. */
START_TEST(test_tg_tape_matches_tg_tape_print)
{
#ifdef TG_ASAN
    printf("test_gdb: skipped under ASan\n");
    return;
#else
    if (system("command -v gdb >/dev/null 2>&1") != 0) {
        printf("test_gdb: gdb is not installed: the tg tape check is skipped\n");
        return;
    }
    fflush(stdout);
    int rc = system("bash tests/gdb/check_tape.sh");
    ck_assert_msg(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "tg tape differs from tg_tape_print (diff above)");
#endif
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("gdb");
    TCase *tc = tcase_create("replay");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, test_extension_prints_like_torch);
    tcase_add_test(tc, test_debugging_md_replays);
    tcase_add_test(tc, test_tg_tape_matches_tg_tape_print);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return run_suite(suite()) ? 1 : 0; }

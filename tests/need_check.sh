#!/bin/sh
# tests/need_check.sh — makes sure the Check framework the tests use can be
# compiled and linked against, before make compiles any test (the Makefile runs
# it as an order-only prerequisite of everything under $(BUILD)/tests/).
#   present           : says nothing, exit 0
#   missing, as root  : apt-get update; apt-get install -y check (noninteractive)
#   missing, otherwise: prints the command to run and exits 2
# The flags are found as the Makefile finds them (CHECK_CFLAGS, CHECK_LIBS).
set -u
CC=${CC:-cc}

probe() {
    dir=$(mktemp -d "${TMPDIR:-/tmp}/tg_check_XXXXXX") || return 1
    cflags=$(pkg-config --cflags check 2>/dev/null)
    libs=$(pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm -pthread)
    printf '#include <check.h>\nint main(void) { SRunner *r = srunner_create(suite_create("probe")); srunner_free(r); return 0; }\n' \
        > "$dir/probe.c"
    # shellcheck disable=SC2086  # the flags are word lists
    $CC $cflags "$dir/probe.c" $libs -o "$dir/probe" > "$dir/log" 2>&1
    rc=$?
    rm -rf "$dir"
    return $rc
}

probe && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "The tests need the Check unit-test framework, which is not installed. Install it with:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y check" >&2
    echo "then run make test again (make run does not need it)." >&2
    exit 2
fi
if ! command -v apt-get > /dev/null 2>&1; then
    echo "The tests need the Check unit-test framework (https://libcheck.github.io/check/), which is not" >&2
    echo "installed, and this machine has no apt-get: install Check with its package manager." >&2
    exit 2
fi
echo "== Check (the test framework) is missing: installing it"
echo "export DEBIAN_FRONTEND=noninteractive; apt-get update && apt-get install -y check"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update || ! apt-get install -y check; then
    echo "apt-get could not install Check; install the Debian package 'check' and run make test again." >&2
    exit 2
fi
if ! probe; then
    echo "Check was installed but a test program still cannot be built against it ($CC)." >&2
    exit 2
fi
echo "== Check installed"

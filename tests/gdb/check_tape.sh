#!/usr/bin/env bash
# tests/gdb/check_tape.sh — the extension's `tg tape` prints what tg_tape_print prints.
# Runs build-debug/quickstart (which prints its tape with tg_tape_print), then the
# same program under gdb, stopped at its tg_tape_reset, where `tg tape` reads the
# tape from memory; the two must be the same lines.
set -euo pipefail
cd "$(dirname "$0")/../.."
env -u MAKEFLAGS -u MAKELEVEL make -s debug-examples
prog=build-debug/quickstart
want=$("$prog" | sed -n '/^tape: /,$p')
have=$(gdb -batch -nx -iex 'add-auto-load-safe-path .' -ex 'break tg_tape_reset' -ex 'run > /dev/null' \
           -ex 'tg tape' "$prog" 2>&1 | sed -n '/^tape: /,$p')
if [ "$want" != "$have" ]; then
    echo "check_tape: tg tape differs from tg_tape_print:"
    diff <(echo "$want") <(echo "$have") || true
    exit 1
fi
echo "check_tape: tg tape matches tg_tape_print ($(echo "$want" | wc -l) lines)"

#!/usr/bin/env bash
# Runs every Check suite given on the command line (all of them, even after a
# failure), then prints one closing line "tests: N passed, M failed" summed
# over Check's per-suite summaries. Exits non-zero if any suite failed or
# crashed.
set -u
passed=0; failed=0; status=0
for t in "$@"; do
  echo "== $t"
  out=$("$t" 2>&1); rc=$?
  printf '%s\n' "$out"
  line=$(printf '%s\n' "$out" | grep -E '^[0-9]+%: Checks: [0-9]+' | tail -n 1)
  if [ -z "$line" ]; then
    echo "$t: no Check summary (exit $rc)"; failed=$((failed + 1)); status=1; continue
  fi
  n=$(echo "$line" | sed -E 's/.*Checks: ([0-9]+).*/\1/')
  f=$(echo "$line" | sed -E 's/.*Failures: ([0-9]+).*/\1/')
  e=$(echo "$line" | sed -E 's/.*Errors: ([0-9]+).*/\1/')
  passed=$((passed + n - f - e)); failed=$((failed + f + e))
  [ "$rc" -eq 0 ] && [ $((f + e)) -eq 0 ] || status=1
done
echo "tests: $passed passed, $failed failed"
exit $status

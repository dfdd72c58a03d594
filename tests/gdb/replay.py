#!/usr/bin/env python3
"""tests/gdb/replay.py — replays the gdb sessions of docs/DEBUGGING.md.

Every ```console block of the document whose first line is "$ gdb ..." is a
session: the gdb arguments, then "(gdb) COMMAND" lines and what gdb printed.
This script builds the debug programs (make debug-examples), runs each
session's commands with gdb -batch and the block's arguments, from the
repository root, and compares the transcript with the document after
normalising addresses, process ids, source line numbers and gdb's thread
banners.

  tests/gdb/replay.py           compare; exit 1 with a diff if they differ
  tests/gdb/replay.py --update  rewrite the document's blocks from a fresh run
                                (after a change to the ops or the trainer)
Exit status 77 when gdb is not installed (the caller reports a skip).
"""
import difflib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOC = os.path.join(ROOT, "docs", "DEBUGGING.md")
PROMPT = "(gdb) "

BLOCK = re.compile(r"^```console\n(\$ gdb [^\n]*)\n(.*?)^```$", re.S | re.M)

DROP = [
    re.compile(r"^\[Thread debugging using libthread_db enabled\]$"),
    re.compile(r"^Using host libthread_db library .*$"),
    re.compile(r"^\[New LWP \d+\]$"),
    re.compile(r"^\[New Thread .*\]$"),
    re.compile(r"^\[Thread .* exited\]$"),
    re.compile(r"^warning: Memory read failed for corefile section, .*$"),
    re.compile(r"^warning: Error reading shared library list entry.*$"),
    re.compile(r"^warning: Could not load shared library symbols for .*$"),
    re.compile(r"^Do you need \"set solib-search-path\" or \"set sysroot\"\?$"),
]


def normalise(text):
    out = []
    for line in text.splitlines():
        line = line.rstrip()
        if any(p.match(line) for p in DROP):
            continue
        line = line.replace(ROOT + "/", "")   # the checkout's absolute path (cores name the program by it)
        line = re.sub(r"0x[0-9a-fA-F]+", "0xADDR", line)
        line = re.sub(r"<([A-Za-z_][A-Za-z0-9_.]*)\+\d+>", r"<\1+OFF>", line)
        line = re.sub(r"/proc/\d+/", "/proc/PID/", line)
        line = re.sub(r"\b(process|LWP|Thread 0xADDR \(LWP) \d+", r"\1 PID", line)
        line = re.sub(r"\bpid \d+", "pid PID", line)
        # source line numbers move with every edit of a file; the code shown does not
        line = re.sub(r"(\.[ch]):\d+", r"\1:LINE", line)
        line = re.sub(r"\bline \d+\.", "line LINE.", line)
        line = re.sub(r"^\d+\t", "LINE\t", line)
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return out


def sessions(doc):
    for m in BLOCK.finditer(doc):
        head, body = m.group(1), m.group(2)
        cmds = [l[len(PROMPT):] for l in body.splitlines() if l.startswith(PROMPT)]
        yield m, shlex.split(head[2:])[1:], cmds


def gdb_echo(cmd):
    """A gdb `echo` line that prints "(gdb) cmd" and a newline."""
    esc = (PROMPT + cmd).replace("\\", "\\\\")
    return "echo " + esc + "\\n"


def run_session(args, cmds):
    with tempfile.NamedTemporaryFile("w", suffix=".gdb", delete=False) as f:
        for c in cmds:
            f.write(gdb_echo(c) + "\n" + c + "\n")
        script = f.name
    env = dict(os.environ)
    env.pop("MAKEFLAGS", None)
    env.pop("MAKELEVEL", None)
    env["TERM"] = "dumb"
    try:
        # -batch: no prompt, stop at the end; -nx: no ~/.gdbinit, so the
        # session shows every line it needs (the safe-path one included).
        p = subprocess.run(["gdb", "-batch", "-nx"] + args + ["-x", script], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    finally:
        os.unlink(script)
    return p.stdout


def build():
    env = dict(os.environ)
    env.pop("MAKEFLAGS", None)
    env.pop("MAKELEVEL", None)
    p = subprocess.run(["make", "-s", "debug-examples"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sys.stdout.write(p.stdout)
        sys.exit("replay: make debug-examples failed")


def main():
    update = "--update" in sys.argv[1:]
    if shutil.which("gdb") is None:
        print("replay: gdb is not installed: the DEBUGGING.md replay is skipped")
        return 77
    build()
    with open(DOC) as f:
        doc = f.read()
    found = list(sessions(doc))
    if not found:
        print("replay: no gdb session in %s" % DOC)
        return 1
    failed = 0
    new_doc, last = [], 0
    for i, (m, args, cmds) in enumerate(found):
        got = run_session(args, cmds)
        ran = [l for l in got.splitlines() if l.startswith(PROMPT)]
        if update and len(ran) != len(cmds):
            # gdb -batch stops at the first failing command: keep the document
            print("replay: session %d stopped after %d of %d commands; the document is left as it was:\n%s" % (
                i + 1, len(ran), len(cmds), got))
            return 1
        if update:
            new_doc.append(doc[last:m.start(2)])
            new_doc.append(got.rstrip("\n") + "\n")
            last = m.end(2)
            continue
        want = normalise(m.group(2))
        have = normalise(got)
        if want != have:
            failed += 1
            print("replay: session %d (%s) differs from docs/DEBUGGING.md:" % (i + 1, " ".join(args)))
            sys.stdout.writelines(l + "\n" for l in difflib.unified_diff(want, have, "document", "gdb", lineterm=""))
    if update:
        new_doc.append(doc[last:])
        tmp = DOC + ".tmp"
        with open(tmp, "w") as f:
            f.write("".join(new_doc))
        os.replace(tmp, DOC)
        print("replay: %d sessions written to docs/DEBUGGING.md" % len(found))
        return 0
    if failed:
        print("replay: %d of %d sessions differ (regenerate with tests/gdb/replay.py --update and review)" % (
            failed, len(found)))
        return 1
    print("replay: %d sessions match docs/DEBUGGING.md" % len(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())

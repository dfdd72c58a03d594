# tests/gdb/check_print.py — run inside gdb after docs/gdb/tapegrad_gdb.py:
#   gdb -batch -nx -x docs/gdb/tapegrad_gdb.py -x tests/gdb/check_print.py
# The extension's port of torch's print (torch_str) against torch itself:
# every tensor stored as print.<name> in tests/golden/ops.txt must print as
# torch's str() recorded in tests/golden/print.txt. No program is needed.
import struct

def _f32(x):
    return struct.unpack("<f", struct.pack("<f", float(x)))[0]

want = {}
with open("tests/golden/print.txt") as f:
    for line in f:
        if line.startswith("#") or not line.strip():
            continue
        name, s = line.rstrip("\n").split(" ", 1)
        want[name] = s.replace("\\\\", "\0").replace("\\n", "\n").replace("\0", "\\")
checked, bad = 0, []
with open("tests/golden/ops.txt") as f:
    for line in f:
        if not line.startswith("print."):
            continue
        head, vals = line.split(":", 1)
        key, ndim, *dims = head.split()
        shape = [int(d) for d in dims[: int(ndim)]]
        data = [_f32(v) for v in vals.split()]
        name = key[len("print."):]
        count = 1
        for d in shape:
            count *= d
        got = torch_str(shape, count, data)  # noqa: F821 (defined by the extension)
        checked += 1
        if got != want.get(name):
            bad.append("%s:\n  want %r\n  got  %r" % (name, want.get(name), got))
if bad or checked == 0:
    print("check_print: %d of %d differ from torch\n%s" % (len(bad), checked, "\n".join(bad)))
    gdb.execute("quit 1")
print("check_print: %d tensors print as torch prints them" % checked)

# docs/gdb/tapegrad_gdb.py — tapegrad's gdb extension (docs/DEBUGGING.md).
#
# It reads the program's memory and never calls into it, so it works where
# gdb cannot make inferior calls ("Couldn't write extended state status") and
# on core files. It needs the debug build's types (make debug).
#
# Loading:
#   automatic: debug builds carry a .debug_gdb_scripts entry naming this file
#              (tensor/error.c); allow it once with
#                gdb -iex 'add-auto-load-safe-path /path/to/tapegrad' ...
#              or the same line (without -iex) in ~/.gdbinit
#   by hand:   (gdb) source /path/to/tapegrad/docs/gdb/tapegrad_gdb.py
#
# Pretty-printers: tg_tensor (name, shape, values in torch's style, grad and
# its norm, the tape entry that made it), tg_node (one tape line), tg_tape.
# Commands (T: an expression giving a tg_tensor or a pointer to one, or @N /
# #N for the output of entry N of the current tape):
#   tg tape [TAPE] [FROM [TO]]   the tape, as tg_tape_print writes it
#   tg node I                    entry I in full
#   tg print T                   T's values, as tg_print prints them
#   tg grad T                    T's gradient (or None) and its norm
#   tg path T [NAME]             T's graph back to the leaves; with NAME, the
#                                chain from T to the leaf named NAME
#   tg stats T [grad]            min, max, mean, norm, NaN and Inf counts
import array
import math

import gdb

TG_MAX_DIMS = 4
STORAGE_ARENA = 1


# ---------------------------------------------------------------- reading memory

def _inferior():
    return gdb.selected_inferior()


def read_floats(addr, start, count):
    """count float32 values from addr + 4*start, as Python floats."""
    if count <= 0:
        return []
    mem = _inferior().read_memory(int(addr) + 4 * start, 4 * count)
    return array.array("f", bytes(mem)).tolist()   # the host's floats: gdb runs where the program ran


class FloatReader:
    """Random access to a float buffer, read in cached 4 KiB blocks, so that
    printing a summarised tensor reads only the blocks its edges are in."""
    BLOCK = 1024

    def __init__(self, addr, n):
        self.addr, self.n, self.blocks = int(addr), n, {}

    def __getitem__(self, i):
        b = i // self.BLOCK
        if b not in self.blocks:
            start = b * self.BLOCK
            self.blocks[b] = read_floats(self.addr, start, min(self.BLOCK, self.n - start))
        return self.blocks[b][i - b * self.BLOCK]

    def all(self):
        out = []
        for start in range(0, self.n, 1 << 18):
            out.extend(read_floats(self.addr, start, min(1 << 18, self.n - start)))
        return out


def cstr(v):
    try:
        if int(v) == 0:
            return None
        return v.string()
    except gdb.error:
        return None


# ---------------------------------------------------------------- values

def tensor_type():
    return gdb.lookup_type("tg_tensor")


def as_tensor(val):
    """A tg_tensor struct value from a tg_tensor, a pointer to one, or an
    address."""
    t = val.type.strip_typedefs()
    if t.code == gdb.TYPE_CODE_PTR:
        if int(val) == 0:
            raise gdb.GdbError("the tensor pointer is NULL")
        return val.cast(tensor_type().pointer()).dereference()
    if t.code == gdb.TYPE_CODE_INT:
        return val.cast(tensor_type().pointer()).dereference()
    return val


def invalid(t):
    """Why t cannot be a live tensor (uninitialised or freed memory), or None."""
    nd = int(t["ndim"])
    if not 0 <= nd <= TG_MAX_DIMS:
        return "ndim %d" % nd
    n = 1
    for d in shape_of(t):
        if d < 0:
            return "shape %s" % shape_str(shape_of(t))
        n *= d
    if n != numel(t) or n >= 1 << 31:
        return "numel %d for shape %s" % (numel(t), shape_str(shape_of(t)))
    if n and int(t["data"]) == 0:
        return "data is NULL"
    return None


def parse_tensor(arg):
    arg = arg.strip()
    if not arg:
        raise gdb.GdbError("a tensor expression is needed (a tg_tensor, a pointer to one, or @N for entry N)")
    if arg[0] in "@#" and arg[1:].strip().isdigit():
        tape = current_tape()
        i = int(arg[1:])
        n = int(tape["n_nodes"])
        if not 0 <= i < n:
            raise gdb.GdbError("the current tape has entries #0..#%d, not #%d" % (n - 1, i))
        return tape["nodes"][i]["out"].dereference()
    t = as_tensor(gdb.parse_and_eval(arg))
    bad = invalid(t)
    if bad:
        raise gdb.GdbError("%s is not a valid tensor (%s): uninitialised or freed?" % (arg, bad))
    return t


def shape_of(t):
    return [int(t["shape"][i]) for i in range(int(t["ndim"]))]


def shape_str(shape):        # as tg_shape_str: [2,3]
    return "[" + ",".join(str(d) for d in shape) + "]"


def shape_str_spaced(shape):  # as torch.Size: [2, 3]
    return "[" + ", ".join(str(d) for d in shape) + "]"


def numel(t):
    return int(t["numel"])


def tensor_name(t):
    return cstr(t["name"])


def current_tape():
    """The selected thread's current tape (tape.c's thread-local g_current),
    else its default tape (t_default). Only variables are read: no call into
    the program, so this works on a core file too."""
    for name in ("g_current", "t_default"):
        try:
            sym = gdb.lookup_static_symbol(name)
            if sym is None:
                continue
            p = sym.value()
            if int(p) != 0:
                return p.dereference()
        except gdb.error:
            pass
    raise gdb.GdbError("this thread has no tapegrad tape yet (or the program is not a make debug build)")


def as_tape(val):
    if val.type.strip_typedefs().code == gdb.TYPE_CODE_PTR:
        if int(val) == 0:
            return current_tape()
        return val.dereference()
    return val


def arena_used(tape):
    try:
        a = tape["arena"]
        if int(a) == 0:
            return 0
        return int(a.dereference()["total_used"])
    except gdb.error:
        return None


def producer(t):
    """(tape, index) of the entry that made t, or None for a leaf; raises
    gdb.GdbError naming the problem if the entry is gone."""
    node = int(t["node"])
    tp = t["tape"]
    if node < 0 or int(tp) == 0:
        return None
    tape = tp.dereference()
    if node >= int(tape["n_nodes"]) or int(tape["nodes"][node]["out"]) != int(t.address):
        return (tape, node, False)
    return (tape, node, True)


def node_index(node):
    out = node["out"]
    if int(out) == 0:
        return None
    tp = out.dereference()["tape"]
    if int(tp) == 0:
        return None
    base = int(tp.dereference()["nodes"])
    return (int(node.address) - base) // node.type.strip_typedefs().sizeof


def node_line(i, n):
    """One entry as tg_tape_print writes it."""
    path = cstr(n["path"]) or "-"
    parts = []
    for k in range(int(n["n_in"])):
        x = n["in"][k].dereference()
        s = shape_str(shape_of(x))
        name = tensor_name(x)
        if int(x["node"]) < 0 and name:
            s += "(%s)" % name
        parts.append(s)
    out = n["out"].dereference()
    return "#%d %s  %s  %s -> %s" % (i, cstr(n["op"]), path, ", ".join(parts), shape_str(shape_of(out)))


def made_by(t):
    p = producer(t)
    if p is None:
        return "leaf"
    tape, i, ok = p
    if not ok:
        return "tape entry #%d, which is gone (the tape was reset since)" % i
    n = tape["nodes"][i]
    path = cstr(n["path"]) or "(top level)"
    return "#%d %s in %s" % (i, cstr(n["op"]), path)


# ---------------------------------------------------------------- torch's print
# A port of tg_snprint (tensor/tensor.c), itself a port of torch/_tensor_str.py:
# precision 4, linewidth 80, threshold 1000, edgeitems 3.

EDGE = 3


def _fmt_raw(fmt, v):
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if fmt["sci"]:
        return "%.4e" % v
    if fmt["int"]:
        return "%.0f." % v
    return "%.4f" % v


def _strides(shape):
    st = [1] * len(shape)
    for d in range(len(shape) - 2, -1, -1):
        st[d] = st[d + 1] * shape[d + 1]
    return st


def _visit(shape, st, data, d, off, summ, out):
    if d >= len(shape):
        out.append(data[off])
        return
    i = 0
    while i < shape[d]:
        if summ and shape[d] > 2 * EDGE and i == EDGE:
            i = shape[d] - EDGE
        _visit(shape, st, data, d + 1, off + i * st[d], summ, out)
        i += 1


def _emit(buf, shape, st, data, fmt, d, off, indent, summ):
    n = shape[d]
    buf.append("[")
    summarised = summ and n > 2 * EDGE
    if d == len(shape) - 1:
        per_line = max(1, (80 - indent) // (fmt["width"] + 2))
        k = 0
        i = 0
        while i < n:
            if k > 0:
                buf.append(",\n" if k % per_line == 0 else ", ")
                if k % per_line == 0:
                    buf.append(" " * (indent + 1))
            if summarised and i == EDGE:
                buf.append(" ...")
                i = n - EDGE
                k += 1
                continue
            item = _fmt_raw(fmt, data[off + i * st[d]])
            buf.append(" " * (fmt["width"] - len(item)) + item)
            i += 1
            k += 1
    else:
        i = 0
        while i < n:
            if i > 0:
                buf.append(",")
                buf.append("\n" * (len(shape) - d - 1))
                buf.append(" " * (indent + 1))
            if summarised and i == EDGE:
                buf.append("...")
                i = n - EDGE
                continue
            _emit(buf, shape, st, data, fmt, d + 1, off + i * st[d], indent + 1, summ)
            i += 1
    buf.append("]")


def torch_str(shape, count, data):
    """What tg_print prints for a tensor of this shape (without the newline);
    data[i] gives element i."""
    summ = count > 1000
    fmt = {"int": True, "sci": False, "width": 1}
    st = _strides(shape)
    vals = []
    if count > 0:
        _visit(shape, st, data, 0, 0, summ, vals)
    nz = [abs(v) for v in vals if math.isfinite(v) and v != 0.0]
    if nz:
        mn, mx = min(nz), max(nz)
        fmt["int"] = all(v == math.ceil(v) for v in vals if math.isfinite(v) and v != 0.0)
        fmt["sci"] = mx / mn > 1000.0 or mx > 1e8 or (not fmt["int"] and mn < 1e-4)
        for v in vals:
            if math.isfinite(v) and v != 0.0:
                fmt["width"] = max(fmt["width"], len(_fmt_raw(fmt, v)))
    if len(shape) == 0:
        return "tensor(" + _fmt_raw(fmt, data[0]) + ")"
    if count == 0:
        s = "tensor([]"
        if len(shape) > 1:
            s += ", size=(" + ", ".join(str(d) for d in shape) + ")"
        return s + ")"
    buf = ["tensor("]
    _emit(buf, shape, st, data, fmt, 0, 0, 7, summ)
    buf.append(")")
    return "".join(buf)


def tensor_values_str(t, grad=False):
    ptr = t["grad"] if grad else t["data"]
    if int(ptr) == 0:
        return "None"
    n = numel(t)
    return torch_str(shape_of(t), n, FloatReader(ptr, max(n, 1)))


def norm_of(ptr, n):
    s = 0.0
    for v in FloatReader(ptr, n).all():
        s += v * v
    return math.sqrt(s)


NORM_MAX = 1 << 22   # the printers read at most this many grad values for a norm


def grad_summary(t):
    if int(t["grad"]) == 0:
        if int(t["node"]) >= 0 and t["requires_grad"]:
            return "grad None (not made yet, or released after its own backward; tg_retain_grads(true) keeps it)"
        return "grad None"
    if numel(t) > NORM_MAX:
        return "grad present (%d values: tg stats T grad reads them all for the norm)" % numel(t)
    return "grad norm %.4f" % norm_of(t["grad"], numel(t))


def tensor_header(t):
    name = tensor_name(t)
    head = "tg_tensor " + (('"%s" ' % name) if name else "") + shape_str_spaced(shape_of(t))
    flags = []
    if t["requires_grad"]:
        flags.append("requires_grad")
    flags.append("made by " + made_by(t))
    return head + ", " + ", ".join(flags)


# ---------------------------------------------------------------- pretty-printers

class TensorPrinter:
    """print *w:
    tg_tensor "w" [3, 2], requires_grad, made by leaf
    tensor([[0.2961, 0.5166], ...])
    grad norm 0.1660"""

    def __init__(self, val):
        self.val = val

    def to_string(self):
        t = self.val
        try:
            bad = invalid(t)
            if bad:
                return "tg_tensor (not a valid tensor: %s)" % bad
            return "%s\n%s\n%s" % (tensor_header(t), tensor_values_str(t), grad_summary(t))
        except (gdb.error, gdb.MemoryError) as e:
            return "tg_tensor (unreadable: %s)" % e


class NodePrinter:
    def __init__(self, val):
        self.val = val

    def to_string(self):
        try:
            i = node_index(self.val)
            return node_line(i if i is not None else -1, self.val)
        except (gdb.error, gdb.MemoryError) as e:
            return "tg_node (unreadable: %s)" % e


class TapePrinter:
    SHOWN = 40

    def __init__(self, val):
        self.val = val

    def to_string(self):
        tape = self.val
        try:
            n = int(tape["n_nodes"])
            used = arena_used(tape)
            lines = ["tg_tape: %d entries, arena %s bytes used, grad mode %s, anomaly mode %s, module scope %s" % (
                n, used if used is not None else "?", "on" if tape["grad_enabled"] else "off",
                "on" if tape["detect_anomaly"] else "off", scope_of(tape) or "(top level)")]
            for i in range(min(n, self.SHOWN)):
                lines.append(node_line(i, tape["nodes"][i]))
            if n > self.SHOWN:
                lines.append("... %d more (tg tape %d %d)" % (n - self.SHOWN, self.SHOWN, n - 1))
            return "\n".join(lines)
        except (gdb.error, gdb.MemoryError) as e:
            return "tg_tape (unreadable: %s)" % e


def scope_of(tape):
    if int(tape["n_paths"]) == 0:
        return ""
    return cstr(tape["paths"][int(tape["scope"])]["path"])


def lookup_printer(val):
    t = val.type.strip_typedefs()
    if t.code != gdb.TYPE_CODE_STRUCT:
        return None
    tag = t.tag
    if tag == "tg_tensor":
        return TensorPrinter(val)
    if tag == "tg_node":
        return NodePrinter(val)
    if tag == "tg_tape":
        return TapePrinter(val)
    return None


# ---------------------------------------------------------------- commands

class TgCommand(gdb.Command):
    """tapegrad: read tensors and the tape without calling into the program.
tg tape [TAPE] [FROM [TO]] | tg node I | tg print T | tg grad T | tg path T [NAME] | tg stats T [grad]
T is a tg_tensor expression (a struct or a pointer), or @N for the output of entry N."""

    def __init__(self):
        super().__init__("tg", gdb.COMMAND_DATA, gdb.COMPLETE_NONE, True)

    def invoke(self, arg, from_tty):   # a bare `tg` (or an unknown subcommand): the list, not silence
        if arg.strip():
            raise gdb.GdbError("tg: no subcommand \"%s\" (help tg lists them)" % arg.strip().split()[0])
        gdb.execute("help tg")


class TgTape(gdb.Command):
    """tg tape [TAPE] [FROM [TO]]: the tape's entries FROM..TO (inclusive), as tg_tape_print writes them.
TAPE is a tg_tape expression; without it, the current thread's tape."""

    def __init__(self):
        super().__init__("tg tape", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        args = gdb.string_to_argv(arg)
        tape = None
        if args and not args[0].lstrip("-").isdigit():
            tape = as_tape(gdb.parse_and_eval(args.pop(0)))
        if tape is None:
            tape = current_tape()
        n = int(tape["n_nodes"])
        lo = int(args[0]) if args else 0
        hi = int(args[1]) if len(args) > 1 else n - 1
        lo, hi = max(lo, 0), min(hi, n - 1)
        used = arena_used(tape)
        gdb.write("tape: %d entries, arena %s bytes used\n" % (n, used if used is not None else "?"))
        for i in range(lo, hi + 1):
            gdb.write(node_line(i, tape["nodes"][i]) + "\n")


def tensor_brief(x):
    name = tensor_name(x)
    s = shape_str(shape_of(x))
    p = producer(x)
    if p is None:
        return "%s %s" % (name or "(unnamed leaf)", s)
    return "%s from #%d%s" % (s, p[1], (" " + name) if name else "")


class TgNode(gdb.Command):
    """tg node I: entry I of the current tape in full: op, module path, backward, inputs, output, saved."""

    def __init__(self):
        super().__init__("tg node", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        args = gdb.string_to_argv(arg)
        if not args:
            raise gdb.GdbError("usage: tg node I")
        tape = current_tape() if len(args) < 2 else as_tape(gdb.parse_and_eval(args[1]))
        i = int(gdb.parse_and_eval(args[0]))
        n_nodes = int(tape["n_nodes"])
        if not 0 <= i < n_nodes:
            raise gdb.GdbError("the tape has entries #0..#%d, not #%d" % (n_nodes - 1, i))
        n = tape["nodes"][i]
        w = gdb.write
        w(node_line(i, n) + "\n")
        w("  op        %s\n" % cstr(n["op"]))
        w("  module    %s\n" % (cstr(n["path"]) or "(top level)"))
        w("  backward  %s\n" % str(n["backward"]).split(" ", 1)[-1])
        for k in range(int(n["n_in"])):
            x = n["in"][k].dereference()
            w("  in[%d]     %s, %s\n" % (k, tensor_brief(x), grad_summary(x)))
        out = n["out"].dereference()
        w("  out       %s, %s\n" % (shape_str(shape_of(out)), grad_summary(out)))
        for k in range(4):
            s = n["saved"][k]
            if int(s) != 0:
                w("  saved[%d]  %s\n" % (k, shape_str(shape_of(s.dereference()))))
        w("  iarg      {%s}\n" % ", ".join(str(int(n["iarg"][k])) for k in range(4)))
        w("  farg      {%s}\n" % ", ".join("%g" % float(n["farg"][k]) for k in range(4)))


class TgPrint(gdb.Command):
    """tg print T: T's header, values (torch's style) and grad norm, like print *T."""

    def __init__(self):
        super().__init__("tg print", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        t = parse_tensor(arg)
        gdb.write(TensorPrinter(t).to_string() + "\n")


class TgGrad(gdb.Command):
    """tg grad T: T's gradient in torch's style, or None, and its norm."""

    def __init__(self):
        super().__init__("tg grad", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        t = parse_tensor(arg)
        gdb.write(tensor_header(t) + "\n")
        if int(t["grad"]) == 0:
            gdb.write(grad_summary(t) + "\n")
            return
        gdb.write(tensor_values_str(t, grad=True) + "\n")
        gdb.write(grad_summary(t) + "\n")


def stats_of(ptr, n):
    vals = FloatReader(ptr, n).all()
    fin = [v for v in vals if math.isfinite(v)]
    nan = sum(1 for v in vals if math.isnan(v))
    inf = sum(1 for v in vals if math.isinf(v))
    if not fin:
        return "numel %d: no finite values, NaN %d, Inf %d" % (n, nan, inf)
    mean = math.fsum(fin) / len(fin)
    norm = math.sqrt(math.fsum(v * v for v in fin))
    return "numel %d  min %.6g  max %.6g  mean %.6g  norm %.6g  NaN %d  Inf %d" % (
        n, min(fin), max(fin), mean, norm, nan, inf)


class TgStats(gdb.Command):
    """tg stats T [grad]: min, max, mean, norm (of the finite values) and the NaN and Inf counts of T (or of its grad)."""

    def __init__(self):
        super().__init__("tg stats", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        arg = arg.strip()
        use_grad = False
        if arg.endswith(" grad"):
            use_grad, arg = True, arg[: -len(" grad")]
        t = parse_tensor(arg)
        ptr = t["grad"] if use_grad else t["data"]
        if int(ptr) == 0:
            gdb.write("%s: no gradient\n" % tensor_header(t))
            return
        gdb.write("%s%s\n" % ("grad of " if use_grad else "", tensor_header(t)))
        gdb.write(stats_of(ptr, numel(t)) + "\n")


class TgPath(gdb.Command):
    """tg path T [NAME]: every entry T depends on back to the leaves (newest first, with where each input came from), then the leaves.
With NAME, only the shortest chain from T to the leaf named NAME (a parameter's state_dict name)."""

    def __init__(self):
        super().__init__("tg path", gdb.COMMAND_DATA)

    def invoke(self, arg, from_tty):
        args = arg.strip().rsplit(None, 1)
        target = None
        t = None
        if len(args) == 2:
            try:
                t = parse_tensor(args[0])
                target = args[1]
            except (gdb.error, gdb.GdbError):
                t = None
        if t is None:
            t = parse_tensor(arg)
            target = None
        if target:
            self.chain(t, target)
        else:
            self.tree(t)

    @staticmethod
    def _inputs(t):
        p = producer(t)
        if p is None or not p[2]:
            return None, []
        tape, i, _ = p
        n = tape["nodes"][i]
        return (i, n), [n["in"][k].dereference() for k in range(int(n["n_in"]))]

    def tree(self, t):
        """Every entry t depends on, newest first, each with the entries its
        inputs came from; then the leaves reached (parameters and data)."""
        entries, leaves, gone = {}, {}, set()
        stack = [t]
        while stack:
            x = stack.pop()
            ent, ins = self._inputs(x)
            if ent is None:
                p = producer(x)
                if p is not None:
                    gone.add(p[1])
                elif int(x.address) not in leaves:
                    leaves[int(x.address)] = x
                continue
            i, n = ent
            if i in entries:
                continue
            entries[i] = (n, ins)
            stack.extend(ins)
        w = gdb.write
        for i in sorted(entries, reverse=True):
            n, ins = entries[i]
            srcs = []
            for y in ins:
                p = producer(y)
                if p is not None:
                    srcs.append("#%d" % p[1])
                else:
                    srcs.append(tensor_name(y) or shape_str(shape_of(y)))
            w("%s   <- %s\n" % (node_line(i, n), ", ".join(srcs)))
        for i in sorted(gone, reverse=True):
            w("#%d: gone (the tape was reset since)\n" % i)
        w("%d entries; %d leaves:\n" % (len(entries), len(leaves)))
        for x in leaves.values():
            w("  %s %s%s\n" % (tensor_name(x) or "(unnamed)", shape_str(shape_of(x)),
                               ", " + grad_summary(x) if x["requires_grad"] else ", no grad"))

    def chain(self, t, target):
        # breadth-first from t over the entries' inputs; parents give the chain back
        start = int(t.address)
        parent = {start: None}
        vals = {start: t}
        queue = [start]
        found = None
        while queue and found is None:
            nxt = []
            for a in queue:
                x = vals[a]
                if tensor_name(x) == target and int(x["node"]) < 0:
                    found = a
                    break
                _, ins = self._inputs(x)
                for y in ins:
                    b = int(y.address)
                    if b not in parent:
                        parent[b] = a
                        vals[b] = y
                        nxt.append(b)
            queue = nxt
        if found is None:
            raise gdb.GdbError("no leaf named \"%s\" is reached from this tensor" % target)
        chain = []
        a = found
        while a is not None:
            chain.append(vals[a])
            a = parent[a]
        w = gdb.write
        for x in reversed(chain):
            ent, _ = self._inputs(x)
            if ent is None:
                w("  %s %s, %s\n" % (tensor_name(x), shape_str(shape_of(x)), grad_summary(x)))
            else:
                i, n = ent
                w("  %s\n" % node_line(i, n))
        w("%d op%s from the tensor to %s\n" % (len(chain) - 1, "" if len(chain) == 2 else "s", target))


def register(objfile=None):
    gdb.printing.register_pretty_printer(objfile, TapegradPrinters(), replace=True)


import gdb.printing  # noqa: E402


class TapegradPrinters(gdb.printing.PrettyPrinter):
    def __init__(self):
        super().__init__("tapegrad")

    def __call__(self, val):
        return lookup_printer(val)


# Loading again (auto-load and a source line, or after an edit) replaces
# the commands and the printers.
TgCommand()
TgTape()
TgNode()
TgPrint()
TgGrad()
TgStats()
TgPath()
register(None)

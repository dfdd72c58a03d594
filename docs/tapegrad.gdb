# gdb helpers for tapegrad, from the repository root:  (gdb) source docs/tapegrad.gdb
# Thin wrappers over the Python extension (docs/gdb/tapegrad_gdb.py), which
# reads memory only: no command here calls into the program, so they work
# where gdb cannot make inferior calls and on core files. Build with
# `make debug` first (binaries in build-debug/). See docs/DEBUGGING.md.

source docs/gdb/tapegrad_gdb.py

define tg-tape
  if $argc == 0
    tg tape
  end
  if $argc == 1
    tg tape $arg0
  end
  if $argc == 2
    tg tape $arg0 $arg1
  end
end
document tg-tape
Print the current tape: "#i op module-path input-shapes -> output-shape" (tg tape [FROM [TO]]).
end

define tg-node
  tg node $arg0
end
document tg-node
tg-node I: show tape entry I (op, module path, backward, inputs, output, saved tensors, arguments).
end

define tg-print
  tg print $arg0
end
document tg-print
tg-print T: print tensor T (a tg_tensor or a pointer to one) the way PyTorch would.
end

define tg-grad
  tg grad $arg0
end
document tg-grad
tg-grad T: print the gradient of tensor T, or None. (Intermediates keep theirs after backward
only with retain_grads: `set var g_current->retain_grads = 1` before tg_backward.)
end

# Stop on any misuse, before abort() unwinds anything.
break tg_error

# gdb helpers for tapegrad:  (gdb) source docs/tapegrad.gdb
# Build with `make debug` first (binaries in build-debug/).

define tg-tape
  call (void)tg_tape_print(0, stderr)
end
document tg-tape
Print the current tape: one line per entry, "#i op input-shapes -> output-shape".
end

define tg-node
  print tg_tape_current()->nodes[$arg0]
end
document tg-node
tg-node I: show tape entry I (op name, inputs, output, saved tensors, arguments).
end

define tg-print
  call (void)tg_fprint(stderr, $arg0)
  call (int)fflush(0)
end
document tg-print
tg-print T: print tensor T (a tg_tensor *) the way PyTorch would.
end

define tg-grad
  call (void)tg_print_grad($arg0)
  call (int)fflush(0)
end
document tg-grad
tg-grad T: print the gradient of tensor T, or None. (Intermediates keep theirs after
backward only with tg_retain_grads(true): `call tg_retain_grads(1)` before tg_backward.)
end

# Stop on any misuse, before abort() unwinds anything.
break tg_error

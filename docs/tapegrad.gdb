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
end
document tg-print
tg-print T: print tensor T (a tg_tensor *) the way PyTorch would.
end

define tg-grad
  if $arg0->grad
    call (void)tg_fprint(stderr, &(tg_tensor){.data = $arg0->grad, .numel = $arg0->numel, .ndim = $arg0->ndim, .shape = {$arg0->shape[0], $arg0->shape[1], $arg0->shape[2], $arg0->shape[3]}})
  else
    echo None\n
  end
end
document tg-grad
tg-grad T: print the gradient of tensor T, or None.
end

# Stop on any misuse, before abort() unwinds anything.
break tg_error

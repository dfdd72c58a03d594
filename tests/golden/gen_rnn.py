#!/usr/bin/python3
"""tests/golden/gen_rnn.py -- PyTorch goldens for tests/test_rnn.c: the ops the
recurrent layers need (sigmoid, narrow, select, stack) and the layers
(RNNCell, GRUCell, GRU, the AdditiveAttention defined below).

Run from the repo root with Debian's torch (1.13, CPU):
    /usr/bin/python3 tests/golden/gen_rnn.py
Writes (atomically) tests/golden/rnn.txt, one tensor per line:
    <key> <ndim> <d0> ... : <v0> <v1> ...     (floats as '%.9g', exact for float32)

ops: <op>.<case>.in<k> / .out / .gout / .grad<k>: the inputs, the forward
     output, the fixed random upstream gradient and every input's gradient
     after out.backward(gout). The op's arguments are in the C test's table.
modules (MODULES below, mirrored in the C test), each built as
     torch.manual_seed(seed); m = <module>(...)
so the initial weights come from torch's global generator, which tapegrad's
generator seeded the same reproduces:
    <c>.nparams, <c>.init.<i>.<name>   the named parameters at construction
    <c>.x, <c>.h                       inputs (h absent: none given, zeros)
    <c>.mask                           (attention) 1 = padded position
    <c>.w, <c>.wh                      seeds of the output / last-hidden gradients
    <c>.out, <c>.hn                    output (GRU: every step) and last hidden (GRU)
    <c>.grad.x, <c>.grad.h, <c>.grad.<i>   gradients of sum(out*w) (+ sum(hn*wh))
    <c>.attn                           (attention) the softmax weights kept for display
"""
import math
import os

import torch
import torch.nn as nn

torch.set_num_threads(1)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rnn.txt")
lines = []


def put(key, t):
    t = torch.as_tensor(t).detach().to(torch.float32)
    assert ' ' not in key
    shape = ''.join(' %d' % s for s in t.shape)
    vals = ' '.join('%.9g' % v for v in t.reshape(-1).tolist())
    lines.append('%s %d%s : %s' % (key, t.dim(), shape, vals))


class AdditiveAttention(nn.Module):
    """Bahdanau et al. (2014), as tapegrad's tg_additive_attention."""

    def __init__(self, query_size, key_size, attn_size):
        super().__init__()
        self.W_query = nn.Linear(query_size, attn_size, bias=False)
        self.W_key = nn.Linear(key_size, attn_size, bias=False)
        self.w_v = nn.Linear(attn_size, 1, bias=False)
        self.last_attn = None

    def forward(self, query, values, mask=None):
        # query (B, Dq), values (B, T, Dk), mask (B, T) bool, True = padding
        e = torch.tanh(self.W_query(query).unsqueeze(1) + self.W_key(values))  # (B, T, A)
        scores = self.w_v(e).squeeze(-1)                                        # (B, T)
        if mask is not None:
            scores = scores.masked_fill(mask, float('-inf'))
        attn = torch.softmax(scores, dim=-1)
        self.last_attn = attn.detach()
        return (attn.unsqueeze(1) @ values).squeeze(1)                         # (B, Dk)


# ------------------------------------------------------------------ ops
G = torch.Generator().manual_seed(0)


def rn(*shape):
    return torch.randn(shape, generator=G)


def case(name, fn, inputs):
    ins = [x.detach().clone().requires_grad_(True) for x in inputs]
    for k, x in enumerate(inputs):
        put('%s.in%d' % (name, k), x)
    out = fn(*ins)
    gout = torch.randn(out.shape, generator=G)
    out.backward(gout)
    put(name + '.out', out)
    put(name + '.gout', gout)
    for k, x in enumerate(ins):
        put('%s.grad%d' % (name, k), x.grad if x.grad is not None else torch.zeros_like(x))


def ops_section():
    case('sigmoid.3d', torch.sigmoid, [rn(2, 3, 4)])
    case('sigmoid.big', torch.sigmoid, [rn(3, 5) * 30])   # both tails, no overflow
    # narrow(dim, start, length), select(dim, index), stack(dim): mirrored in test_rnn.c
    case('narrow.d0', lambda x: x.narrow(0, 1, 2), [rn(4, 3)])
    case('narrow.d1', lambda x: x.narrow(1, 2, 3), [rn(2, 6, 3)])
    case('narrow.last', lambda x: x.narrow(-1, 0, 2), [rn(2, 3, 5)])
    case('narrow.negstart', lambda x: x.narrow(1, -3, 2), [rn(3, 5)])
    case('narrow.4d', lambda x: x.narrow(2, 1, 1), [rn(2, 2, 3, 2)])
    case('narrow.twice', lambda x: x.narrow(1, 0, 2) * x.narrow(1, 2, 2), [rn(3, 4)])  # grads add
    case('select.d1', lambda x: x.select(1, 2), [rn(2, 4, 3)])
    case('select.d0', lambda x: x.select(0, 1), [rn(3, 4)])
    case('select.neg', lambda x: x.select(-1, -1), [rn(2, 3, 4)])
    case('select.1d', lambda x: x.select(0, 3), [rn(5)])
    case('stack.d0', lambda a, b, c: torch.stack([a, b, c], 0), [rn(2, 3), rn(2, 3), rn(2, 3)])
    case('stack.d1', lambda a, b: torch.stack([a, b], 1), [rn(2, 3), rn(2, 3)])
    case('stack.last', lambda a, b, c: torch.stack([a, b, c], -1), [rn(2, 3), rn(2, 3), rn(2, 3)])
    case('stack.neg2', lambda a, b: torch.stack([a, b], -2), [rn(2, 2, 3), rn(2, 2, 3)])
    case('stack.0d', lambda a, b: torch.stack([a, b], 0), [rn(), rn()])
    case('stack.same', lambda a: torch.stack([a, a * 2], 1), [rn(3, 2)])


# ------------------------------------------------------------------ modules
# (name, seed, constructor, x shape, h shape or None). Mirrored in tests/test_rnn.c.
MODULES = [
    ("rnncell_a", 1, lambda: nn.RNNCell(3, 4), (5, 3), (5, 4)),
    ("rnncell_b", 2, lambda: nn.RNNCell(6, 5), (2, 6), None),
    ("rnncell_c", 3, lambda: nn.RNNCell(4, 3), (4,), (3,)),
    ("grucell_a", 4, lambda: nn.GRUCell(3, 4), (5, 3), (5, 4)),
    ("grucell_b", 5, lambda: nn.GRUCell(5, 6), (3, 5), None),
    ("grucell_c", 6, lambda: nn.GRUCell(2, 3), (2,), (3,)),
    ("gru_a", 7, lambda: nn.GRU(3, 4, batch_first=True), (2, 5, 3), (1, 2, 4)),
    ("gru_b", 8, lambda: nn.GRU(4, 6, batch_first=True), (3, 7, 4), None),
    ("gru_c", 9, lambda: nn.GRU(2, 3, batch_first=True), (1, 1, 2), None),
    ("attn_a", 10, lambda: AdditiveAttention(4, 5, 6), (3, 7, 5), (3, 4)),
    ("attn_b", 11, lambda: AdditiveAttention(3, 3, 8), (2, 6, 3), (2, 3)),
    ("attn_c", 12, lambda: AdditiveAttention(2, 4, 3), (1, 1, 4), (1, 2)),
]
# padding masks for the attention cases: lengths per batch row
MASK_LENGTHS = {"attn_a": [7, 4, 1], "attn_b": [6, 6]}


def modules_section():
    for name, seed, make, xshape, hshape in MODULES:
        torch.manual_seed(seed)
        m = make()
        params = list(m.named_parameters())
        put('%s.nparams' % name, torch.tensor(float(len(params))))
        for i, (pname, p) in enumerate(params):
            put('%s.init.%d.%s' % (name, i, pname), p)
        data = torch.Generator().manual_seed(1000 + seed)
        x = torch.randn(xshape, generator=data).requires_grad_(True)
        put('%s.x' % name, x)
        h = None
        if hshape is not None:
            h = (torch.randn(hshape, generator=data) * 0.5).requires_grad_(True)
            put('%s.h' % name, h)
        hn = None
        if isinstance(m, AdditiveAttention):
            # here x is the values (B, T, Dk) and h the query (B, Dq)
            mask = None
            if name in MASK_LENGTHS:
                T = xshape[1]
                mask = torch.tensor([[j >= n for j in range(T)] for n in MASK_LENGTHS[name]])
                put('%s.mask' % name, mask.float())
            out = m(h, x, mask)
        elif isinstance(m, nn.GRU):
            out, hn = m(x, h)
        else:
            out = m(x, h)
        w = torch.randn(out.shape, generator=data)
        put('%s.w' % name, w)
        loss = (out * w).sum()
        if hn is not None:
            wh = torch.randn(hn.shape, generator=data)
            put('%s.wh' % name, wh)
            loss = loss + (hn * wh).sum()
            put('%s.hn' % name, hn)
        loss.backward()
        put('%s.out' % name, out)
        put('%s.grad.x' % name, x.grad)
        if h is not None:
            put('%s.grad.h' % name, h.grad)
        for i, (pname, p) in enumerate(params):
            put('%s.grad.%d' % (name, i), p.grad)
        if isinstance(m, AdditiveAttention):
            put('%s.attn' % name, m.last_attn)


def main():
    lines.append('# tests/golden/rnn.txt -- written by tests/golden/gen_rnn.py (torch %s); do not edit'
                 % torch.__version__)
    ops_section()
    modules_section()
    tmp = OUT + '.tmp'
    with open(tmp, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    os.replace(tmp, OUT)
    print('wrote %s (%d lines)' % (OUT, len(lines)))


if __name__ == '__main__':
    main()

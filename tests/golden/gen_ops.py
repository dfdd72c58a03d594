#!/usr/bin/env python3
"""tests/golden/gen_ops.py -- PyTorch goldens for the tensor and autograd suites.

Run from the repo root with Debian's torch (1.13, CPU):
    /usr/bin/python3 tests/golden/gen_ops.py
Writes (atomically):
  tests/golden/ops.txt    tensors, one per line: <key> <ndim> <d0> ... : <v0> <v1> ...
                          (floats as '%.9g', which round-trips float32 exactly)
  tests/golden/print.txt  torch's str(t) for the tensors stored in ops.txt as print.<name>

Sections of ops.txt (the C tests replay the same call sequences):
  gen.*    torch's CPU generator: manual_seed then rand / uniform_ / randn / normal_ / bernoulli_
  arange.* torch.arange;  tri.* triu_/tril_;  print.* tensors whose str() is in print.txt
  <op>.<case>.in<k> / .out / .gout / .grad<k>  (plus .ids, .mask, .seed where the op needs them):
           forward output, the fixed random upstream gradient, and every input's gradient
           after out.backward(gout).
Inputs come from a private generator, so re-seeding the global one (dropout) changes nothing else.
"""
import math
import os

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
lines = []
prints = []


def put(key, t):
    t = torch.as_tensor(t).detach().to(torch.float32)
    assert ' ' not in key
    shape = ''.join(' %d' % s for s in t.shape)
    vals = ' '.join('%.9g' % v for v in t.reshape(-1).tolist())
    lines.append('%s %d%s : %s' % (key, t.dim(), shape, vals))


def write_atomic(path, text):
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------ generator
def gen_section():
    torch.manual_seed(123)
    put('gen.rand_123', torch.rand(3, 2))
    torch.manual_seed(0)
    put('gen.rand_0', torch.rand(1))
    # consecutive calls; 1000 floats cross mt19937's 624-word twist
    torch.manual_seed(42)
    put('gen.seq.a', torch.rand(5))
    put('gen.seq.b', torch.rand(2, 3))
    put('gen.seq.c', torch.rand(1000))
    put('gen.seq.d', torch.rand(4))
    torch.manual_seed(7)
    put('gen.uniform.a', torch.empty(4, 5).uniform_(-2, 3))
    put('gen.uniform.b', torch.empty(7).uniform_(0.5, 0.75))
    # n < 16: double Box-Muller with a cached second value carried across calls
    torch.manual_seed(1)
    put('gen.randn_small.a', torch.randn(3))
    put('gen.randn_small.b', torch.randn(5))
    put('gen.randn_small.c', torch.randn(1))
    put('gen.randn_small.d', torch.randn(2, 3))
    torch.manual_seed(2)
    put('gen.randn16.a', torch.randn(16))
    put('gen.randn16.b', torch.randn(4, 4))
    # mixed: the small path caches, the >=16 path ignores the cache, ragged tails redo 16
    torch.manual_seed(3)
    put('gen.randn_mix.a', torch.randn(3))
    put('gen.randn_mix.b', torch.randn(37))
    put('gen.randn_mix.c', torch.randn(100))
    put('gen.randn_mix.d', torch.randn(1))
    put('gen.randn_mix.e', torch.randn(3, 7))
    torch.manual_seed(4)
    put('gen.normal.a', torch.empty(20).normal_(2.0, 0.5))
    put('gen.normal.b', torch.empty(5).normal_(-1.0, 3.0))
    put('gen.normal.c', torch.empty(2, 9).normal_(0.0, 0.02))
    torch.manual_seed(5)
    put('gen.bernoulli.a', torch.empty(50).bernoulli_(0.3))
    put('gen.bernoulli.b', torch.empty(50).bernoulli_(0.5))
    put('gen.bernoulli.c', torch.empty(4, 5).bernoulli_(0.9))
    put('gen.bernoulli.d', torch.empty(10).bernoulli_(0.0))
    put('gen.bernoulli.e', torch.rand(3))   # bernoulli_(0) still draws one double per element
    put('gen.default', torch.rand(3, generator=torch.Generator()))  # fresh: seed 67280421310721
    torch.manual_seed(2**40 + 5)
    put('gen.bigseed', torch.rand(4))


def arange_tri_section():
    put('arange.a', torch.arange(0., 5.))
    put('arange.b', torch.arange(0., 1., 0.1))
    put('arange.c', torch.arange(-1., 1., 0.25))
    put('arange.d', torch.arange(10., 0., -3.))
    put('arange.e', torch.arange(0.5, 3.2, 0.7))
    g = torch.Generator().manual_seed(11)
    for name, shape, upper, d in [('triu34_0', (3, 4), True, 0), ('triu34_1', (3, 4), True, 1),
                                  ('triu43_m1', (4, 3), True, -1), ('tril34_0', (3, 4), False, 0),
                                  ('tril34_m1', (3, 4), False, -1), ('tril233_2', (2, 3, 3), False, 2),
                                  ('triu233_1', (2, 3, 3), True, 1), ('triu34_5', (3, 4), True, 5)]:
        x = torch.randn(shape, generator=g)
        put('tri.%s.in' % name, x)
        put('tri.%s.out' % name, x.clone().triu_(d) if upper else x.clone().tril_(d))


# ------------------------------------------------------------------ printing
def pr(name, t):
    put('print.' + name, t)
    prints.append((name, str(t)))


def print_section():
    g = torch.Generator().manual_seed(99)
    ninf = float('-inf')
    torch.manual_seed(123)
    pr('rand_123', torch.rand(3, 2))
    torch.manual_seed(123)
    pr('dropout_book', F.dropout(torch.ones(6, 6), 0.5))          # the book's ch.3 example
    pr('negative', torch.randn(2, 3, generator=g))
    pr('three_d', torch.randn(2, 3, 4, generator=g))
    pr('four_d', torch.randn(2, 1, 2, 3, generator=g))
    pr('scalar', torch.tensor(3.5))
    pr('scalar_neg', torch.tensor(-0.25))
    pr('scalar_int', torch.tensor(2.))
    pr('long_1d', torch.randn(30, generator=g))                     # wraps at 80 columns
    pr('long_2d', torch.randn(2, 20, generator=g))                  # wraps with indent 8
    pr('ints_neg', torch.arange(12.).reshape(3, 4) * 10 - 50)
    pr('summ_2d', torch.randn(40, 30, generator=g))                 # > 1000 elements: summarised
    pr('summ_1d_int', torch.arange(2000.))                          # int values, ratio > 1000 -> sci
    pr('summ_1d', torch.rand(1500, generator=g))
    pr('summ_3d', torch.randn(10, 20, 10, generator=g))
    pr('sci_mixed', torch.tensor([1e-5, 1.0, 123456.0]))
    pr('sci_small', torch.tensor([[1.2e-6, 3.4e-5], [-2e-7, 0.0]]))
    pr('sci_big', torch.tensor([1.5e9, -2.0, 3.0]))
    pr('int_ratio', torch.tensor([1., 2000.]))
    pr('causal_mask', torch.zeros(4, 4).masked_fill(torch.triu(torch.ones(4, 4), 1).bool(), ninf))
    pr('attn_masked', torch.rand(3, 3, generator=g).masked_fill(torch.triu(torch.ones(3, 3), 1).bool(), ninf))
    pr('mixed_width', torch.tensor([1.5, 123.25, -7.125]))
    pr('zeros', torch.zeros(2, 3))
    pr('empty', torch.zeros(0))
    pr('nan_inf', torch.tensor([1.5, float('nan'), float('inf')]))
    pr('int_inf', torch.tensor([0., 1., ninf]))
    pr('softmax', torch.softmax(torch.randn(6, 6, generator=g), -1))


# ------------------------------------------------------------------ ops
G = torch.Generator().manual_seed(0)


def rn(*shape):
    return torch.randn(shape, generator=G)


def un(lo, hi, *shape):
    return torch.rand(shape, generator=G) * (hi - lo) + lo


def away(*shape):
    """randn pushed away from 0 (relu's kink, denominators)."""
    x = rn(*shape)
    return x + 0.25 * torch.sign(x)


def pos(*shape):
    return un(0.5, 2.0, *shape)


def distinct(*shape):
    """Distinct values at least 0.25 apart (max without near-ties)."""
    n = math.prod(shape)
    p = torch.randperm(n, generator=G).float()
    return ((p - n / 2) * 0.3 + un(0, 0.05, n)).reshape(shape)


def ties(*shape):
    return torch.randint(0, 3, shape, generator=G).float()


def case(name, fn, inputs, ids=None, mask=None, seed=None):
    ins = [x.detach().clone().requires_grad_(True) for x in inputs]
    for k, x in enumerate(inputs):
        put('%s.in%d' % (name, k), x)
    if ids is not None:
        put(name + '.ids', ids.float())
    if mask is not None:
        put(name + '.mask', mask.float())
    if seed is not None:
        put(name + '.seed', torch.tensor(float(seed)))
        torch.manual_seed(seed)
    out = fn(*ins)
    gout = torch.randn(out.shape, generator=G)
    out.backward(gout)
    put(name + '.out', out)
    put(name + '.gout', gout)
    for k, x in enumerate(ins):
        put('%s.grad%d' % (name, k), x.grad if x.grad is not None else torch.zeros_like(x))


def book_layernorm(x, scale, shift, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return scale * ((x - mean) / torch.sqrt(var + eps)) + shift


def causal(n):
    return torch.triu(torch.ones(n, n), diagonal=1).bool()


def ops_section():
    add, sub, mul, div = torch.add, torch.sub, torch.mul, torch.div
    case('add.same', add, [rn(2, 3), rn(2, 3)])
    case('add.bc_last', add, [rn(2, 3, 4), rn(4)])
    case('add.bc_mid', add, [rn(2, 1, 4), rn(3, 1)])
    case('add.bc_4d', add, [rn(2, 1, 3, 1), rn(4, 1, 5)])
    case('add.scalar_rhs', add, [rn(2, 3), rn()])
    case('add.scalar_both', add, [rn(), rn()])
    case('sub.bc_last', sub, [rn(2, 3, 4), rn(4)])
    case('sub.bc_lhs', sub, [rn(3, 1), rn(2, 1, 4)])
    case('sub.scalar_lhs', sub, [rn(), rn(2, 3)])
    case('mul.same', mul, [rn(3, 4), rn(3, 4)])
    case('mul.bc_col', mul, [rn(2, 3, 4), rn(3, 1)])
    case('mul.bc_mid', mul, [rn(2, 1, 4), rn(3, 1)])
    case('mul.scalar_rhs', mul, [rn(4), rn()])
    case('mul.self', lambda x: x * x, [rn(3, 4)])
    case('div.same', div, [rn(3, 4), away(3, 4)])
    case('div.bc_last', div, [rn(2, 3, 4), away(4)])
    case('div.bc_mid', div, [rn(2, 1, 4), away(3, 1)])
    case('div.scalar_lhs', div, [rn(), away(2, 3)])
    case('add_scalar', lambda x: x + 2.5, [rn(2, 3)])
    case('mul_scalar', lambda x: x * -1.5, [rn(2, 3, 4)])
    case('neg', torch.neg, [rn(2, 3)])

    case('exp', torch.exp, [rn(2, 3, 4)])
    case('log', torch.log, [pos(3, 4)])
    case('sqrt', torch.sqrt, [pos(3, 4)])
    case('pow.2', lambda x: torch.pow(x, 2.0), [rn(3, 4)])
    case('pow.3', lambda x: torch.pow(x, 3.0), [rn(3, 4)])
    case('pow.half', lambda x: torch.pow(x, 0.5), [pos(3, 4)])
    case('pow.m1_5', lambda x: torch.pow(x, -1.5), [pos(3, 4)])
    case('tanh', torch.tanh, [rn(2, 3, 4)])
    case('relu', torch.relu, [away(3, 5)])
    case('gelu', lambda x: F.gelu(x, approximate='tanh'), [rn(2, 3, 4) * 2])

    mm = torch.matmul
    case('matmul.2d', mm, [rn(3, 4), rn(4, 5)])
    case('matmul.3d', mm, [rn(2, 3, 4), rn(2, 4, 5)])
    case('matmul.4d', mm, [rn(2, 3, 4, 5), rn(2, 3, 5, 6)])
    case('matmul.bc_rhs2d', mm, [rn(2, 3, 4, 5), rn(5, 6)])
    case('matmul.bc_lhs2d', mm, [rn(3, 4), rn(2, 4, 5)])
    case('matmul.bc_4d3d', mm, [rn(2, 1, 3, 4), rn(5, 4, 2)])
    case('matmul.bc_ones', mm, [rn(1, 3, 4), rn(2, 4, 2)])

    case('transpose.01', lambda x: x.transpose(0, 1), [rn(2, 3, 4)])
    case('transpose.neg', lambda x: x.transpose(-1, -2), [rn(2, 3, 4, 5)])
    case('transpose.2d', lambda x: x.transpose(1, 0), [rn(3, 5)])
    case('transpose.02', lambda x: x.transpose(0, 2), [rn(2, 3, 4)])
    case('permute.3d', lambda x: x.permute(2, 0, 1), [rn(2, 3, 4)])
    case('permute.heads', lambda x: x.permute(0, 2, 1, 3), [rn(2, 3, 4, 5)])
    case('permute.neg', lambda x: x.permute(-1, 0, 1), [rn(2, 3, 4)])
    case('reshape.m1_last', lambda x: x.reshape(-1, 4), [rn(2, 3, 4)])
    case('reshape.m1_first', lambda x: x.reshape(6, -1), [rn(2, 3, 4)])
    case('reshape.flat', lambda x: x.reshape(24), [rn(2, 3, 4)])
    case('reshape.4d', lambda x: x.reshape(2, 3, 2, 2), [rn(2, 3, 4)])
    case('reshape.m1_mid', lambda x: x.reshape(2, -1, 3), [rn(2, 3, 4)])
    case('view.2d', lambda x: x.view(4, 6), [rn(2, 3, 4)])
    case('view.m1', lambda x: x.view(2, -1), [rn(2, 3, 4)])
    case('concat.d0', lambda a, b, c: torch.cat([a, b, c], 0), [rn(2, 3), rn(1, 3), rn(3, 3)])
    case('concat.d1', lambda a, b: torch.cat([a, b], 1), [rn(2, 1, 4), rn(2, 3, 4)])
    case('concat.neg', lambda a, b: torch.cat([a, b], -1), [rn(2, 3, 2), rn(2, 3, 4)])
    case('concat.4d', lambda a, b: torch.cat([a, b], 2), [rn(1, 2, 3, 2), rn(1, 2, 1, 2)])
    case('concat.single', lambda a: torch.cat([a], 1), [rn(2, 3)])

    case('sum.all', torch.sum, [rn(2, 3, 4)])
    case('sum.all0d', torch.sum, [rn()])
    case('sum.d1', lambda x: x.sum(1), [rn(2, 3, 4)])
    case('sum.d1k', lambda x: x.sum(1, keepdim=True), [rn(2, 3, 4)])
    case('sum.neg', lambda x: x.sum(-1), [rn(2, 3, 4)])
    case('sum.d0k', lambda x: x.sum(0, keepdim=True), [rn(3, 4)])
    case('mean.all', torch.mean, [rn(2, 3, 4)])
    case('mean.d2', lambda x: x.mean(2), [rn(2, 3, 4)])
    case('mean.negk', lambda x: x.mean(-2, keepdim=True), [rn(2, 3, 4)])
    case('mean.d0', lambda x: x.mean(0), [rn(5, 3)])
    case('max.all', torch.max, [distinct(3, 4)])
    case('max.all_ties', torch.max, [ties(3, 4)])                # grad split evenly among ties
    case('max.d1', lambda x: x.max(1)[0], [distinct(2, 3, 4)])
    case('max.negk', lambda x: x.max(-1, keepdim=True)[0], [distinct(2, 3, 4)])
    case('max.d_ties', lambda x: x.max(1)[0], [ties(4, 5)])      # grad to the first argmax
    case('max.d0', lambda x: x.max(0)[0], [distinct(4, 3)])

    for fname, fn in [('softmax', torch.softmax), ('log_softmax', torch.log_softmax)]:
        case(fname + '.last', lambda x, fn=fn: fn(x, -1), [rn(2, 3, 4)])
        case(fname + '.d0', lambda x, fn=fn: fn(x, 0), [rn(2, 3, 4)])
        case(fname + '.d1', lambda x, fn=fn: fn(x, 1), [rn(2, 3, 4)])
        case(fname + '.neg2', lambda x, fn=fn: fn(x, -2), [rn(2, 3, 4)])
        case(fname + '.big', lambda x, fn=fn: fn(x, -1), [rn(2, 5) * 1000])   # stability
        case(fname + '.4d', lambda x, fn=fn: fn(x, -1), [rn(2, 2, 3, 3)])

    ninf = float('-inf')
    m4 = causal(4)
    case('masked_fill.causal', lambda x: x.masked_fill(m4, ninf), [rn(2, 2, 4, 4)], mask=m4)
    mrow = torch.tensor([[True, False, False, True]])
    case('masked_fill.bcast', lambda x: x.masked_fill(mrow, 0.5), [rn(3, 4)], mask=mrow)
    m3 = torch.tensor([[[True, False, True, False]], [[False, False, True, True]]])
    case('masked_fill.3d', lambda x: x.masked_fill(m3, -2.0), [rn(2, 3, 4)], mask=m3)
    case('masked_fill.attn', lambda x: torch.softmax(x.masked_fill(m4, ninf), -1), [rn(2, 4, 4)], mask=m4)

    case('triu.d0', lambda x: torch.triu(x, 0), [rn(3, 4)])
    case('triu.d1', lambda x: torch.triu(x, 1), [rn(2, 4, 3)])
    case('triu.dm1', lambda x: torch.triu(x, -1), [rn(4, 3)])
    case('tril.dm1', lambda x: torch.tril(x, -1), [rn(3, 4)])
    case('tril.d0', lambda x: torch.tril(x, 0), [rn(2, 3, 3)])
    case('tril.d2', lambda x: torch.tril(x, 2), [rn(3, 4)])

    case('dropout.p01', lambda x: F.dropout(x, 0.1, training=True), [rn(4, 8)], seed=123)
    case('dropout.p05', lambda x: F.dropout(x, 0.5, training=True), [rn(3, 5, 6)], seed=42)
    case('dropout.eval', lambda x: F.dropout(x, 0.5, training=False), [rn(3, 4)], seed=7)
    case('dropout.p0', lambda x: F.dropout(x, 0.0, training=True), [rn(3, 4)], seed=8)
    case('dropout.p1', lambda x: F.dropout(x, 1.0, training=True), [rn(3, 4)], seed=9)

    ids2 = torch.tensor([[1, 3, 3, 0, 9], [9, 2, 1, 1, 5]])
    case('embedding.2d', lambda w: F.embedding(ids2, w), [rn(10, 4)], ids=ids2)
    ids1 = torch.tensor([6, 0, 2, 2, 5, 0])
    case('embedding.1d', lambda w: F.embedding(ids1, w), [rn(7, 3)], ids=ids1)

    t2 = torch.tensor([1, 0, 4, 4])
    case('cross_entropy.2d', lambda x: F.cross_entropy(x, t2), [rn(4, 5)], ids=t2)
    t3 = torch.tensor([[0, 4, 2], [3, 3, 1]])
    case('cross_entropy.3d', lambda x: F.cross_entropy(x.flatten(0, 1), t3.flatten()), [rn(2, 3, 5)], ids=t3)
    tb = torch.tensor([2, 0, 3])
    case('cross_entropy.big', lambda x: F.cross_entropy(x, tb), [rn(3, 4) * 30], ids=tb)

    case('layernorm.3d', book_layernorm, [rn(2, 3, 8), 1 + 0.1 * rn(8), 0.1 * rn(8)])
    case('layernorm.2d', book_layernorm, [rn(4, 6) * 3 + 1, 1 + 0.1 * rn(6), 0.1 * rn(6)])

    def attn(x, wq, wk, wv):
        q, k, v = x @ wq, x @ wk, x @ wv
        s = (q @ k.transpose(1, 2)).masked_fill(m4, ninf)
        return torch.softmax(s * (1 / math.sqrt(6.0)), -1) @ v
    case('chain.attn', attn, [rn(2, 4, 6), rn(6, 6) * 0.4, rn(6, 6) * 0.4, rn(6, 6) * 0.4], mask=m4)

    def mlp(x, w1, b1, w2, scale, shift):
        h = book_layernorm(x, scale, shift)
        h = F.gelu(h @ w1 + b1, approximate='tanh')
        return (h @ w2 + x).mean()
    case('chain.mlp', mlp, [rn(2, 3, 4), rn(4, 8) * 0.5, rn(8) * 0.1, rn(8, 4) * 0.5,
                            1 + 0.1 * rn(4), 0.1 * rn(4)])

    # Appended after the chains so the inputs of every case above stay the same.
    # cross_entropy's ignore_index (-100, torch's default) and a 1-D logits vector.
    ti = torch.tensor([2, -100, 0, -100, 4])
    case('cross_entropy.ignore', lambda x: F.cross_entropy(x, ti), [rn(5, 5)], ids=ti)
    t1 = torch.tensor(3)
    case('cross_entropy.1d', lambda x: F.cross_entropy(x, t1), [rn(5)], ids=t1)
    # tg_affine = F.linear: x (..., in) @ weight(out, in)^T + bias(out)
    lin = F.linear
    case('affine.bias', lambda x, w, b: lin(x, w, b), [rn(2, 3, 4), rn(5, 4), rn(5)])
    case('affine.nobias', lambda x, w: lin(x, w), [rn(3, 4), rn(2, 4)])
    case('affine.1d', lambda x, w, b: lin(x, w, b), [rn(4), rn(3, 4), rn(3)])
    case('affine.4d', lambda x, w, b: lin(x, w, b), [rn(2, 2, 3, 4), rn(6, 4), rn(6)])


def main():
    lines.append('# tests/golden/ops.txt -- written by tests/golden/gen_ops.py (torch %s); do not edit'
                 % torch.__version__)
    gen_section()
    arange_tri_section()
    print_section()
    ops_section()
    write_atomic(os.path.join(HERE, 'ops.txt'), '\n'.join(lines) + '\n')

    out = ['# tests/golden/print.txt -- written by tests/golden/gen_ops.py (torch %s); do not edit'
           % torch.__version__,
           '# One entry per line: <name> <str>, where <str> is torch\'s str() of the tensor stored in',
           '# ops.txt as print.<name>, escaped: a newline is written \\n and a backslash \\\\.',
           '# Everything after the single space following <name> is the string (it may start with spaces).']
    for name, s in prints:
        out.append('%s %s' % (name, s.replace('\\', '\\\\').replace('\n', '\\n')))
    write_atomic(os.path.join(HERE, 'print.txt'), '\n'.join(out) + '\n')


if __name__ == '__main__':
    main()

#!/usr/bin/python3
"""Goldens for tests/test_nn.c: the nn modules against PyTorch.

Run from the repo root with Debian's torch (1.13, CPU):
    /usr/bin/python3 tests/golden/gen_nn.py
Writes tests/golden/nn.txt, one tensor per line:
    <key> <ndim> <d0> ... : <v0> <v1> ...

Every case (CASES below, mirrored in the C test) is built as:
    torch.manual_seed(seed); m = <module>(...)
so the weights come from torch's global generator, which tapegrad's
generator seeded the same must reproduce bit for bit. The input x and the
output-gradient seed w come from a separate generator (so the global one,
after construction, only feeds dropout masks, as in the C test). Then
    out = m(x); out.backward(w)
and the file holds, for case <c>:
    <c>.init.<i>.<name>   the i-th named parameter at construction
                          (order and state_dict names are asserted too)
    <c>.nparams           number of named parameters
    <c>.x                 the input (ids for embeddings, as floats)
    <c>.w                 the output-gradient seed
    <c>.out               the output
    <c>.grad.x            d(sum(out*w))/dx (not for embeddings)
    <c>.grad.<i>          the i-th parameter's grad
    <c>.attn              (MultiHeadAttention) the softmax weights before dropout
    <c>.set.<name>        (LayerNorm) values the test assigns before the forward
count.<c>    parameter counts of larger configurations.
ch03.*       values of the chapter-3 walkthrough that differ from the book's
             printed numbers only through the platform (dropout masks).
"""
import math
import os
import sys

import torch
import torch.nn as nn

torch.set_num_threads(1)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nn.txt")


# ------------------------------------------------------------------ the book's modules
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from book import (GELU, CausalAttention, LayerNorm, MultiHeadAttention,  # noqa: E402
                  MultiHeadAttentionWrapper, SelfAttention_v1, SelfAttention_v2)
from book import FeedForward as _FeedForward  # noqa: E402


def FeedForward(emb_dim):
    return _FeedForward({"emb_dim": emb_dim})


SelfAttentionV1, SelfAttentionV2 = SelfAttention_v1, SelfAttention_v2


# ------------------------------------------------------------------ cases
# (name, seed, constructor, input shape). Mirrored in tests/test_nn.c.
CASES = [
    ("linear_a", 1, lambda: nn.Linear(3, 2), (6, 3)),
    ("linear_b", 2, lambda: nn.Linear(5, 4, bias=False), (2, 3, 5)),
    ("linear_c", 3, lambda: nn.Linear(16, 8), (4, 16)),
    ("linear_d", 4, lambda: nn.Linear(7, 3), (7,)),
    ("softmax_a", 5, lambda: nn.Softmax(dim=-1), (4, 5)),
    ("softmax_b", 6, lambda: nn.Softmax(dim=0), (3, 2, 4)),
    ("dropout_a", 7, lambda: nn.Dropout(0.5), (6, 6)),
    ("dropout_b", 8, lambda: nn.Dropout(0.1), (3, 50)),
    ("embedding_a", 9, lambda: nn.Embedding(10, 4), (2, 3)),
    ("embedding_b", 10, lambda: nn.Embedding(3, 5), (7,)),
    ("embedding_c", 11, lambda: nn.Embedding(50, 7), (2, 2, 3)),
    ("layernorm_a", 12, lambda: LayerNorm(5), (2, 3, 5)),
    ("layernorm_b", 13, lambda: LayerNorm(8), (4, 8)),
    ("gelu_a", 14, lambda: GELU(), (3, 7)),
    ("gelu_b", 26, lambda: GELU(), (2, 4, 5)),
    ("feedforward_a", 15, lambda: FeedForward(4), (2, 3, 4)),
    ("feedforward_b", 16, lambda: FeedForward(8), (1, 5, 8)),
    ("sa_v1_a", 123, lambda: SelfAttentionV1(3, 2), (6, 3)),
    ("sa_v1_b", 17, lambda: SelfAttentionV1(4, 3), (2, 5, 4)),
    ("sa_v2_a", 789, lambda: SelfAttentionV2(3, 2), (6, 3)),
    ("sa_v2_b", 18, lambda: SelfAttentionV2(4, 6, qkv_bias=True), (2, 5, 4)),
    ("causal_a", 123, lambda: CausalAttention(3, 2, 6, 0.0), (2, 6, 3)),
    ("causal_b", 19, lambda: CausalAttention(4, 3, 8, 0.0, qkv_bias=True), (2, 5, 4)),
    ("causal_c", 20, lambda: CausalAttention(4, 3, 6, 0.5), (2, 6, 4)),
    ("wrapper_a", 123, lambda: MultiHeadAttentionWrapper(3, 2, 6, 0.0, num_heads=2), (2, 6, 3)),
    ("wrapper_b", 21, lambda: MultiHeadAttentionWrapper(4, 3, 5, 0.0, num_heads=3, qkv_bias=True), (1, 4, 4)),
    ("wrapper_c", 22, lambda: MultiHeadAttentionWrapper(4, 2, 5, 0.3, num_heads=2), (2, 5, 4)),
    ("mha_a", 123, lambda: MultiHeadAttention(3, 2, 6, 0.0, num_heads=2), (2, 6, 3)),
    ("mha_b", 23, lambda: MultiHeadAttention(8, 8, 10, 0.0, num_heads=4, qkv_bias=True), (2, 7, 8)),
    ("mha_c", 24, lambda: MultiHeadAttention(6, 6, 6, 0.3, num_heads=3), (2, 6, 6)),
    ("mha_d", 25, lambda: MultiHeadAttention(5, 4, 9, 0.0, num_heads=1), (3, 9, 5)),
]

# Parameter counts (named parameters, buffers excluded).
COUNTS = [
    ("mha_gpt2", lambda: MultiHeadAttention(768, 768, 1024, 0.0, num_heads=12)),
    ("mha_gpt2_bias", lambda: MultiHeadAttention(768, 768, 1024, 0.0, num_heads=12, qkv_bias=True)),
    ("mha_small", lambda: MultiHeadAttention(3, 2, 6, 0.0, num_heads=2)),
    ("wrapper_small", lambda: MultiHeadAttentionWrapper(3, 2, 6, 0.0, num_heads=2)),
    ("wrapper_bias", lambda: MultiHeadAttentionWrapper(16, 8, 32, 0.0, num_heads=4, qkv_bias=True)),
    ("causal_small", lambda: CausalAttention(3, 2, 6, 0.0)),
    ("feedforward_768", lambda: FeedForward(768)),
    ("layernorm_768", lambda: LayerNorm(768)),
    ("embedding_256x64", lambda: nn.Embedding(256, 64)),
    ("linear_768x3072", lambda: nn.Linear(768, 3072)),
    ("sa_v1_small", lambda: SelfAttentionV1(3, 2)),
    ("sa_v2_bias", lambda: SelfAttentionV2(10, 6, qkv_bias=True)),
]


def fmt(v):
    v = float(v)
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return "%.9g" % v


def line(key, t):
    t = torch.as_tensor(t).detach().to(torch.float32)
    dims = " ".join(str(d) for d in t.shape)
    head = "%s %d%s" % (key, t.dim(), (" " + dims) if dims else "")
    return head + " : " + " ".join(fmt(v) for v in t.reshape(-1).tolist())


def main():
    lines = ["# generated by tests/golden/gen_nn.py (torch %s); do not edit" % torch.__version__]

    def put(key, t):
        lines.append(line(key, t))

    for name, seed, make, shape in CASES:
        torch.manual_seed(seed)
        m = make()
        params = list(m.named_parameters())
        put("%s.nparams" % name, torch.tensor(float(len(params))))
        for i, (pname, p) in enumerate(params):
            put("%s.init.%d.%s" % (name, i, pname), p)
        data = torch.Generator().manual_seed(1000 + seed)
        if name.startswith("layernorm"):
            with torch.no_grad():
                for pname, p in params:
                    p.copy_(torch.randn(p.shape, generator=data))
                    put("%s.set.%s" % (name, pname), p)
        if name.startswith("embedding"):
            ids = torch.randint(0, m.num_embeddings, shape, generator=data)
            put("%s.x" % name, ids)
            out = m(ids)
            x = None
        else:
            x = torch.randn(shape, generator=data).requires_grad_(True)
            put("%s.x" % name, x)
            out = m(x)
        w = torch.randn(out.shape, generator=data)
        put("%s.w" % name, w)
        out.backward(w)
        put("%s.out" % name, out)
        if x is not None:
            put("%s.grad.x" % name, x.grad)
        for i, (pname, p) in enumerate(params):
            put("%s.grad.%d" % (name, i), p.grad)
        if isinstance(m, MultiHeadAttention):
            put("%s.attn" % name, m.last_attn)

    for name, make in COUNTS:
        m = make()
        put("count.%s" % name, torch.tensor(float(sum(p.numel() for p in m.parameters()))))

    # Chapter 3, section 3.5.2: dropout(0.5) on the causal attention weights
    # after torch.manual_seed(123). The book prints a mask drawn on another
    # platform; this is what torch's CPU generator gives (and tapegrad).
    inputs = torch.tensor([[0.43, 0.15, 0.89], [0.55, 0.87, 0.66], [0.57, 0.85, 0.64],
                           [0.22, 0.58, 0.33], [0.77, 0.25, 0.10], [0.05, 0.80, 0.55]])
    torch.manual_seed(789)
    sa_v2 = SelfAttentionV2(3, 2)
    with torch.no_grad():
        q, k = sa_v2.W_query(inputs), sa_v2.W_key(inputs)
        mask = torch.triu(torch.ones(6, 6), diagonal=1)
        attn = torch.softmax((q @ k.T).masked_fill(mask.bool(), -torch.inf) / k.shape[-1] ** 0.5, dim=-1)
        dropout = nn.Dropout(0.5)
        torch.manual_seed(123)
        put("ch03.dropout_ones", dropout(torch.ones(6, 6)))
        torch.manual_seed(123)
        put("ch03.dropout_attn", dropout(attn))

    tmp = OUT + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, OUT)
    print("wrote %s (%d lines)" % (OUT, len(lines)))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Goldens for tests/test_optim.c: parameter trajectories of torch.optim.

Run from the repo root with Debian's torch (1.13, CPU):
    /usr/bin/python3 tests/golden/gen_optim.py
Writes tests/golden/optim.txt, one tensor per line:
    <key> <ndim> <d0> ... : <v0> <v1> ...

Two fixed problems, each with its initial weights stored in the file so the C
test loads the very same ones:
  lin  torch.nn.Linear(4, 3), loss = mean((lin(x) - y)^2)
  mha  the book's MultiHeadAttention(d_in=4, d_out=6, context_length=5,
       dropout=0.0, num_heads=2, qkv_bias=False), loss = mean((mha(x) - y)^2)
       (no qkv bias: W_key's bias has an exactly-zero true gradient — softmax
       ignores a per-row constant — and Adam would amplify float noise there)
For every optimizer config (CONFIGS below, mirrored in the C test), a fresh
model with the initial weights runs `steps` steps of:
    lr = schedule(it); forward; backward; [frozen / dropped grads];
    [clip_grad_norm_]; optimizer.step(); optimizer.zero_grad()
and the file holds every parameter after every step:
    <model>.<cfg>.s<k>.<param name>     k = 1..steps
plus <model>.<cfg>.lr (the lr used at each step) and, for clipped configs,
<model>.<cfg>.norm (clip_grad_norm_'s return value at each step).
sched.<name> holds tg_lr_at values for standalone schedule checks.
"""
import math
import os
import sys

import torch
import torch.nn as nn

torch.set_num_threads(1)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "optim.txt")


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from book import MultiHeadAttention  # noqa: E402


def get_lr(it, kind, lr, warmup, decay_iters=0, min_lr=0.0):
    """nanoGPT's get_lr (train.py); kind 'const' keeps lr after the warmup."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if kind == "const":
        return lr
    if it > decay_iters:
        return min_lr
    decay_ratio = (it - warmup) / (decay_iters - warmup) if decay_iters > warmup else 0.0
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (lr - min_lr)


# name, optimizer, kwargs, extra. Mirrored in tests/test_optim.c (same order).
# extra: steps (default 6), clip (max_norm), sched (kind, warmup, decay, min_lr),
#        frozen (params with requires_grad off), drop (param whose grad is None
#        at the listed 0-based steps).
CONFIGS = [
    ("sgd", "SGD", dict(lr=0.1), {}),
    ("sgd_mom", "SGD", dict(lr=0.1, momentum=0.9), {}),
    ("sgd_damp", "SGD", dict(lr=0.1, momentum=0.9, dampening=0.5), {}),
    ("sgd_nesterov", "SGD", dict(lr=0.1, momentum=0.9, nesterov=True), {}),
    ("sgd_wd", "SGD", dict(lr=0.1, weight_decay=0.1), {}),
    ("sgd_mom_damp_wd", "SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.05), {}),
    ("sgd_nesterov_wd", "SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1), {}),
    ("adam", "Adam", dict(lr=0.01), {}),
    ("adam_default", "Adam", dict(), {}),
    ("adam_wd", "Adam", dict(lr=0.01, weight_decay=0.1), {}),
    ("adam_amsgrad", "Adam", dict(lr=0.01, amsgrad=True), {}),
    ("adam_betas_eps_wd_amsgrad", "Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, amsgrad=True), {}),
    ("adamw", "AdamW", dict(lr=0.01), {}),
    ("adamw_default", "AdamW", dict(), {}),
    ("adamw_amsgrad", "AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True), {}),
    ("adamw_betas_eps_nowd", "AdamW", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.0), {}),
    ("sgd_damp_nomom", "SGD", dict(lr=0.1, dampening=0.5, weight_decay=0.01), {}),
    ("sgd_mom_clip", "SGD", dict(lr=0.1, momentum=0.9), dict(clip=0.05)),
    ("adam_clip", "Adam", dict(lr=0.01), dict(clip=0.05)),
    ("adamw_clip_loose", "AdamW", dict(lr=0.01), dict(clip=100.0)),
    ("sgd_warmup_const", "SGD", dict(lr=0.1, momentum=0.9), dict(sched=("const", 3, 0, 0.0))),
    ("adamw_cosine", "AdamW", dict(lr=0.02), dict(steps=9, sched=("cosine", 2, 6, 0.002))),
    ("adam_cosine_clip", "Adam", dict(lr=0.02, amsgrad=True), dict(steps=8, clip=0.05, sched=("cosine", 0, 5, 0.001))),
    ("adam_frozen", "Adam", dict(lr=0.01), dict(frozen=True)),
    ("sgd_frozen", "SGD", dict(lr=0.1, momentum=0.9, dampening=0.2), dict(frozen=True)),
    ("adam_dropped", "Adam", dict(lr=0.01), dict(drop=(1, 3))),
    ("sgd_dropped", "SGD", dict(lr=0.1, momentum=0.9, dampening=0.5), dict(drop=(0, 2))),
]

# Per model: the parameters frozen for 'frozen' configs and the one whose
# grad is dropped for 'drop' configs.
FROZEN = {"lin": ["bias"], "mha": ["W_query.weight", "W_key.weight"]}
DROPPED = {"lin": "bias", "mha": "out_proj.bias"}

lines = []


def put(key, t):
    t = t.detach().float().contiguous()
    vals = " ".join("%.9g" % v for v in t.reshape(-1).tolist())
    dims = " ".join(str(d) for d in t.shape)
    lines.append("%s %d%s%s : %s" % (key, t.dim(), " " if dims else "", dims, vals))


def make_problem(name):
    torch.manual_seed(123 if name == "lin" else 456)
    if name == "lin":
        model = nn.Linear(4, 3)
        x = torch.randn(8, 4)
        y = torch.randn(8, 3)
    else:
        model = MultiHeadAttention(4, 6, 5, 0.0, 2, qkv_bias=False)
        x = torch.randn(2, 5, 4)
        y = torch.randn(2, 5, 6)
    return model, x, y


def run(pname, cfg):
    name, opt_name, kw, extra = cfg
    model, x, y = make_problem(pname)
    params = dict(model.named_parameters())
    if extra.get("frozen"):
        for n in FROZEN[pname]:
            params[n].requires_grad_(False)
    opt = getattr(torch.optim, opt_name)(model.parameters(), **kw)
    steps = extra.get("steps", 6)
    base_lr = opt.param_groups[0]["lr"]
    lrs, norms = [], []
    for it in range(steps):
        if "sched" in extra:
            kind, warmup, decay, min_lr = extra["sched"]
            lr = get_lr(it, kind, base_lr, warmup, decay, min_lr)
            for g in opt.param_groups:
                g["lr"] = lr
        lrs.append(opt.param_groups[0]["lr"])
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        if it in extra.get("drop", ()):
            params[DROPPED[pname]].grad = None
        if "clip" in extra:
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), extra["clip"])))
        opt.step()
        opt.zero_grad()
        for n, p in model.named_parameters():
            put("%s.%s.s%d.%s" % (pname, name, it + 1, n), p)
    put("%s.%s.lr" % (pname, name), torch.tensor(lrs, dtype=torch.float64))
    if norms:
        put("%s.%s.norm" % (pname, name), torch.tensor(norms))


def main():
    lines.append("# generated by tests/golden/gen_optim.py with torch %s; do not edit" % torch.__version__)
    for pname in ("lin", "mha"):
        model, x, y = make_problem(pname)
        put(pname + ".x", x)
        put(pname + ".y", y)
        for n, p in model.named_parameters():
            put("%s.init.%s" % (pname, n), p)
        for cfg in CONFIGS:
            run(pname, cfg)
    # standalone schedules: (name, kind, lr, warmup, decay_iters, min_lr, iterations)
    for sname, kind, lr, warmup, decay, min_lr, n in [
        ("cosine", "cosine", 6e-4, 10, 50, 6e-5, 60),
        ("cosine_nowarm", "cosine", 0.1, 0, 7, 0.0, 10),
        ("const_warm", "const", 3e-3, 5, 0, 0.0, 8),
        ("const", "const", 1e-3, 0, 0, 0.0, 3),
    ]:
        put("sched." + sname, torch.tensor([get_lr(i, kind, lr, warmup, decay, min_lr) for i in range(n)],
                                           dtype=torch.float64))
    with open(OUT + ".tmp", "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(OUT + ".tmp", OUT)
    print("wrote %s (%d lines)" % (OUT, len(lines)))


if __name__ == "__main__":
    main()

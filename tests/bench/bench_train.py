#!/usr/bin/env python3
"""tests/bench/bench_train.py — the same training step as bench_train.c, in
PyTorch with the book's GPTModel (tests/golden/book.py): forward,
cross-entropy, backward, AdamW step, zero_grad, on random token batches.
Prints the same key=value line."""
import argparse, os, resource, statistics, sys, time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden"))
from book import GPTModel  # noqa: E402

ap = argparse.ArgumentParser()
for k, v in dict(vocab=65, emb=128, heads=4, layers=4, ctx=128, batch=16, steps=20, threads=1).items():
    ap.add_argument("--" + k, type=int, default=v)
ap.add_argument("--dropout", type=float, default=0.1)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(123)
cfg = dict(vocab_size=a.vocab, context_length=a.ctx, emb_dim=a.emb, n_heads=a.heads, n_layers=a.layers,
           drop_rate=a.dropout, qkv_bias=False)
model = GPTModel(cfg)
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=3e-4, foreach=False)
times = []
for s in range(a.steps):
    x = torch.randint(0, a.vocab, (a.batch, a.ctx))
    y = torch.randint(0, a.vocab, (a.batch, a.ctx))
    t0 = time.perf_counter()
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=False)
    times.append(time.perf_counter() - t0)
med = statistics.median(times[2:])
n = a.batch * a.ctx
print("impl=pytorch threads=%d params=%d step_ms=%.2f tokens_per_s=%.0f peak_rss_mb=%.1f final_loss=%.4f" % (
    a.threads, sum(p.numel() for p in model.parameters()), med * 1e3, n / med,
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, loss.item()))

#!/usr/bin/env python3
"""tests/bench/bench_ops.py — the PyTorch side of bench_ops.c, same shapes,
same timing (median of 5 batches of about 0.1 s), same key=value lines.
  bench_ops.py gemm --threads N      torch.mm / torch.bmm
  bench_ops.py attn --threads N      one causal attention layer, forward + backward,
                                     composed as the book writes it
  bench_ops.py blas                  the libblas.so.3 this process maps"""
import argparse, ctypes, os, statistics, sys, time

import torch

SHAPES = [  # name, ta, tb, batch, M, N, K  (as in bench_ops.c)
    ("linear_xWt", False, True, 1, 1024, 256, 256),
    ("ff_up", False, True, 1, 1024, 1024, 256),
    ("dW_dYtX", True, False, 1, 256, 256, 1024),
    ("attn_QKt", False, True, 64, 128, 128, 32),
    ("attn_PV", False, False, 64, 128, 32, 128),
]


# BENCH_CLOCK=thread: the calling thread's CPU time (one thread only), as bench_ops.c
clock = time.thread_time if os.environ.get("BENCH_CLOCK") == "thread" else time.perf_counter


def time_per_call(fn):
    fn()
    t0 = clock()
    reps = 0
    while True:
        fn()
        reps += 1
        if clock() - t0 >= 0.1:
            break
    s = []
    for _ in range(5):
        t0 = clock()
        for _ in range(reps):
            fn()
        s.append((clock() - t0) / reps)
    return statistics.median(s)


def blas_path():
    """The file behind libblas.so.3 in this process (torch.__config__ says 'generic' either way)."""
    with open("/proc/self/maps") as f:
        for line in f:
            p = line.split()[-1]
            if "libblas.so" in p or "libopenblas" in p:
                return os.path.realpath(p)
    return "none"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    if a.mode == "blas":
        torch.mm(torch.ones(2, 2), torch.ones(2, 2))  # make sure the BLAS is loaded
        p = blas_path()
        kind = "openblas" if "openblas" in p else ("reference" if "/blas/" in p else "other")
        core = "-"
        if kind == "openblas":
            lib = ctypes.CDLL(p)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            core = lib.openblas_get_corename().decode()
        print("bench=blas impl=pytorch torch=%s blas=%s kind=%s core=%s coretype_env=%s" % (
            torch.__version__, p, kind, core, os.environ.get("OPENBLAS_CORETYPE", "-")))
        return
    if a.mode == "attn":
        B, H, T, hd, p = 8, 8, 128, 32, 0.1  # as bench_ops.c: config c's attention
        q, k, v = (torch.randn(B, H, T, hd, requires_grad=True) for _ in range(3))
        dy = torch.randn(B, H, T, hd)
        mask = torch.triu(torch.ones(T, T), diagonal=1).bool()
        drop = torch.nn.Dropout(p)

        def step():
            s = q @ k.transpose(2, 3)
            s = s.masked_fill(mask, -torch.inf)
            w = torch.softmax(s / hd ** 0.5, dim=-1)
            (drop(w) @ v).backward(dy)
            q.grad = k.grad = v.grad = None
        t = time_per_call(step)
        print("bench=attn impl=pytorch threads=%d B=%d H=%d T=%d hd=%d dropout=%g ms=%.3f" % (
            a.threads, B, H, T, hd, p, t * 1e3))
        return
    if a.mode == "gemm":
        with torch.no_grad():
            for name, ta, tb, batch, M, N, K in SHAPES:
                A = torch.randn(batch, K, M).transpose(1, 2) if ta else torch.randn(batch, M, K)
                B = torch.randn(batch, N, K).transpose(1, 2) if tb else torch.randn(batch, K, N)
                if batch == 1:
                    A2, B2 = A[0], B[0]
                    fn = lambda: torch.mm(A2, B2)
                else:
                    fn = lambda: torch.bmm(A, B)
                t = time_per_call(fn)
                print("bench=gemm impl=pytorch threads=%d shape=%s batch=%d M=%d N=%d K=%d gflops=%.1f" % (
                    a.threads, name, batch, M, N, K, 2.0 * batch * M * N * K / t * 1e-9))
        return
    sys.exit("bench_ops.py: unknown mode " + a.mode)


main()

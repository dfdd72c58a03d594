#!/usr/bin/python3
"""Checkpoints move between tapegrad and PyTorch, both ways.

  /usr/bin/python3 tests/interop/check_interop.py [BUILD_DIR]    (default: build)

1. tapegrad -> torch: build/train trains a small char-level model for a few
   steps and saves it; the book's GPTModel (tests/golden/book.py), built
   from the checkpoint's __metadata__ config, loads it with
   load_state_dict(strict=False) (missing: only the att.mask buffers;
   unexpected: only the optimizer's optim.* entries), and its logits on a
   prompt equal those of build/sample --dump-logits to 1e-4.
2. torch -> tapegrad: a torch GPTModel with randomised weights (qkv_bias on) is
   saved as safetensors by the small writer below (the state_dict as torch
   gives it, mask buffers included, no metadata); build/train --init loads it
   (--steps 0, byte tokenizer, config from flags) and saves a tapegrad
   checkpoint, whose --dump-logits equal torch's logits to 1e-4.

Uses Debian's python3-torch; prints SKIP and exits 0 where torch is missing.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import torch
except Exception:  # pragma: no cover - depends on the machine
    print("SKIP: torch is not importable by", sys.executable)
    sys.exit(0)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "..", "golden"))
from book import GPTModel  # noqa: E402

BUILD = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build")
TRAIN, SAMPLE = os.path.join(BUILD, "train"), os.path.join(BUILD, "sample")
TOL = 1e-4


def read_safetensors(path):
    """(tensors, metadata) from a safetensors file (F32 only), by hand."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    data = buf[8 + n:]
    tensors = {}
    for name, info in header.items():
        assert info["dtype"] == "F32", (name, info["dtype"])
        b, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32)
        tensors[name] = t.reshape(info["shape"]) if info["shape"] else t.reshape(())
    return tensors, meta


def write_safetensors(path, tensors, metadata=None):
    """The format by hand: u64 LE header size, JSON header (padded to 8), F32 LE data."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, t in tensors.items():
        raw = t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_logits(path):
    with open(path) as f:
        T, V = map(int, f.readline().split())
        vals = [float(x) for x in f.read().split()]
    assert len(vals) == T * V, (len(vals), T, V)
    return torch.tensor(vals, dtype=torch.float32).reshape(T, V)


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        print("FAIL: command failed:", " ".join(cmd), "\n", r.stdout, r.stderr)
        sys.exit(1)
    return r.stdout


def compare(what, got, want):
    diff = (got - want).abs().max().item()
    ok = got.shape == want.shape and diff <= TOL
    print(f"{'ok  ' if ok else 'FAIL'} {what}: logits {tuple(got.shape)}, max |diff| = {diff:.3g} (tolerance {TOL})")
    return ok


def tapegrad_to_torch(tmp):
    data = os.path.join(tmp, "text.txt")
    with open(os.path.join(ROOT, "data", "the-verdict.txt"), encoding="utf-8") as f:
        text = f.read()[:4000]
    with open(data, "w", encoding="utf-8") as f:
        f.write(text)
    ck = os.path.join(tmp, "tg.safetensors")
    run([TRAIN, "--data", data, "--layers", "2", "--heads", "2", "--emb", "32", "--ctx", "24", "--qkv-bias",
         "--dropout", "0.1", "--batch", "4", "--steps", "5", "--eval-every", "0", "--sample-tokens", "0",
         "--threads", "1", "--quiet", "--save", ck])
    tensors, meta = read_safetensors(ck)
    cfg = {k: int(meta[k]) for k in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers")}
    cfg["drop_rate"] = float(meta["drop_rate"])
    cfg["qkv_bias"] = meta["qkv_bias"] == "true"
    model = GPTModel(cfg)
    res = model.load_state_dict(tensors, strict=False)
    bad_missing = [k for k in res.missing_keys if not k.endswith(".att.mask")]
    bad_extra = [k for k in res.unexpected_keys if not k.startswith("optim.")]
    if bad_missing or bad_extra:
        print("FAIL: load_state_dict: missing", bad_missing, "unexpected", bad_extra)
        return False
    model.eval()
    prompt = text[100:120]
    vocab = meta["vocab"]
    ids = torch.tensor([[vocab.index(c) for c in prompt]])
    with torch.no_grad():
        want = model(ids)[0]
    out = os.path.join(tmp, "logits_a.txt")
    run([SAMPLE, "--load", ck, "--prompt", prompt, "--dump-logits", out])
    return compare("tapegrad checkpoint in torch", read_logits(out), want)


def torch_to_tapegrad(tmp):
    cfg = {"vocab_size": 256, "context_length": 16, "emb_dim": 24, "n_heads": 3, "n_layers": 2, "drop_rate": 0.0,
           "qkv_bias": True}
    torch.manual_seed(7)
    model = GPTModel(cfg)
    with torch.no_grad():  # move every parameter off its init (LayerNorm scale/shift included)
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.eval()
    ck = os.path.join(tmp, "torch.safetensors")
    write_safetensors(ck, model.state_dict())
    data = os.path.join(tmp, "bytes.txt")
    with open(data, "w") as f:
        f.write("a tiny training text, long enough for a context of sixteen bytes.\n" * 4)
    out_ck = os.path.join(tmp, "from_torch.safetensors")
    run([TRAIN, "--data", data, "--tokenizer", "byte", "--init", ck, "--layers", "2", "--heads", "3", "--emb", "24",
         "--ctx", "16", "--qkv-bias", "--dropout", "0", "--steps", "0", "--sample-tokens", "0", "--threads", "1",
         "--quiet", "--save", out_ck])
    prompt = "Torch to tapegrad"[:cfg["context_length"]]
    ids = torch.tensor([list(prompt.encode())])
    with torch.no_grad():
        want = model(ids)[0]
    out = os.path.join(tmp, "logits_b.txt")
    run([SAMPLE, "--load", out_ck, "--prompt", prompt, "--dump-logits", out])
    return compare("torch weights in tapegrad (--init)", read_logits(out), want)


def main():
    for exe in (TRAIN, SAMPLE):
        if not os.access(exe, os.X_OK):
            print(f"FAIL: {exe} not built (run make first)")
            return 1
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        ok = tapegrad_to_torch(tmp)
        ok = torch_to_tapegrad(tmp) and ok
    print("interop:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

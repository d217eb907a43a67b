#!/usr/bin/env python3
"""Pretrain a small byte-level Llama-style LM and export it as a fidelity fixture.

The model is the hand-written Hugging-Face-like ``LlamaForCausalLM`` from
``tools/gen_fixtures.py`` (RMSNorm, RoPE, GQA attention with ``repeat_kv``,
SwiGLU MLP, untied ``lm_head``), sized

    4 layers, hidden 128, 4 query heads / 2 key-value heads, head_dim 32,
    intermediate 352, vocab 256 (token id = UTF-8 byte value)  ->  803,968 params

It is pretrained from a fixed seed on Python standard-library sources shipped
with Debian (``/usr/lib/python3.*/*.py``, top-level modules only) and exported
exactly like the non-past ``llama.onnx`` fixture (TorchScript exporter,
opset 17, inputs ``input_ids`` / ``attention_mask`` / ``position_ids`` [B, T]
int64, output ``logits`` [B, T, 256], dynamic ``batch_size`` /
``sequence_length`` axes, no KV cache).

Outputs (``test/fixtures/fidelity/``):

    train.txt   ~1,000,000 bytes of training text (cut at a line boundary)
    eval.txt    ~65,536 bytes of held-out text from *different* files
    lm.onnx     the trained model
    lm.json     config, training summary, held-out metrics, reference logits

Held-out metric: ids = UTF-8 bytes of eval.txt, cut into consecutive,
non-overlapping windows of 129 tokens from offset 0 (incomplete remainder
dropped); per window input_ids = w[0:128], targets = w[1:129],
attention_mask = ones, position_ids = 0..127.  loss = mean natural-log
cross-entropy over all positions of all windows, perplexity = exp(loss),
accuracy = fraction of positions with argmax(logits) == target.  Also
reported for the first 8 windows only.

Run with Debian's interpreter (torch 1.13, onnx 1.12), single-threaded:

    /usr/bin/python3 tools/gen_fidelity_lm.py [--steps N]

Deterministic given the seed (except the wall-clock ``seconds`` field).
"""

import os
import subprocess
import sys

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # single-threaded BLAS (set before importing torch)


def _ensure_deps():
    try:
        import torch  # noqa: F401
        import onnx  # noqa: F401
        import numpy  # noqa: F401
        return
    except ImportError:
        pass
    if os.environ.get("GEN_FIDELITY_LM_REEXEC"):
        sys.exit("torch/onnx/numpy still missing after apt-get install")
    print("installing python3-torch python3-onnx python3-numpy via apt-get ...", flush=True)
    subprocess.check_call(["apt-get", "update"])
    subprocess.check_call(["apt-get", "install", "-y", "python3-torch", "python3-onnx",
                           "python3-numpy", "libopenblas0-pthread"])
    os.environ["GEN_FIDELITY_LM_REEXEC"] = "1"
    os.execv(sys.executable, [sys.executable] + sys.argv)


_ensure_deps()

import argparse  # noqa: E402
import glob  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import onnx  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TOOLS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS_DIR))
import gen_fixtures as gf  # noqa: E402  (import has no side effects beyond torch settings)

ROOT = TOOLS_DIR.parent
OUT_DIR = ROOT / "test" / "fixtures" / "fidelity"

SEED = 20240611
TRAIN_BYTES = 1_000_000
EVAL_BYTES = 65_536
EVAL_EVERY = 10          # file index i (sorted by name) goes to eval when i % 10 == 9
SEQ_LEN = 128
BATCH = 16
LR = 3e-3
MIN_LR_FRAC = 0.1
WARMUP = 200
WEIGHT_DECAY = 0.1
BETAS = (0.9, 0.95)
CLIP = 1.0
DEFAULT_STEPS = 5000     # ~0.29 s/step at 1 thread on the 2-core dev machine -> ~25 min

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------

def source_files():
    files = []
    for d in sorted(glob.glob("/usr/lib/python3.*/")):
        files += glob.glob(os.path.join(d, "*.py"))
    # sort by file name (then full path, for ties between Python versions)
    return sorted(files, key=lambda p: (os.path.basename(p), p))


def ascii_text(path):
    """File text with non-ASCII characters replaced by '?'; None if not UTF-8."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = "".join(c if ord(c) < 128 else "?" for c in text)
    if text and not text.endswith("\n"):
        text += "\n"
    return text


def cut_at_line(data: bytes, limit: int) -> bytes:
    if len(data) <= limit:
        return data
    head = data[:limit]
    return head[: head.rfind(b"\n") + 1]


def build_corpus():
    train_parts, eval_parts = [], []
    train_len = eval_len = 0
    train_files, eval_files = [], []
    for i, path in enumerate(source_files()):
        text = ascii_text(path)
        if text is None:
            continue
        data = text.encode("ascii")
        if i % EVAL_EVERY == EVAL_EVERY - 1:
            if eval_len < EVAL_BYTES:
                eval_parts.append(data)
                eval_len += len(data)
                eval_files.append(os.path.basename(path))
        else:
            if train_len < TRAIN_BYTES:
                train_parts.append(data)
                train_len += len(data)
                train_files.append(os.path.basename(path))
    train = cut_at_line(b"".join(train_parts), TRAIN_BYTES)
    evl = cut_at_line(b"".join(eval_parts), EVAL_BYTES)
    assert set(train_files).isdisjoint(eval_files)
    return train, evl, train_files, eval_files


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

def make_config():
    return gf.Config(model_type="llama", num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32,
                     hidden=128, intermediate=352, vocab=256, rms_norm_eps=1e-6,
                     rope_theta=10000.0, qkv_bias=False, seed=SEED)


def init_for_training_(model, cfg, seed):
    """GPT-2 style init: N(0, 0.02), residual output projections scaled by
    1/sqrt(2 * num_layers), RMSNorm weights 1."""
    g = torch.Generator().manual_seed(seed)
    resid_std = 0.02 / math.sqrt(2 * cfg.num_layers)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
            elif name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                p.copy_(torch.randn(p.shape, generator=g) * resid_std)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def lr_at(step, steps):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    t = (step - WARMUP) / max(1, steps - WARMUP)
    return LR * (MIN_LR_FRAC + (1 - MIN_LR_FRAC) * 0.5 * (1 + math.cos(math.pi * t)))


def model_inputs(x):
    B, T = x.shape
    attention_mask = torch.ones(B, T, dtype=torch.int64)
    position_ids = torch.arange(T, dtype=torch.int64).unsqueeze(0).expand(B, T).contiguous()
    return x, attention_mask, position_ids


# --------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------

def eval_windows(ids):
    n = ids.numel() // (SEQ_LEN + 1)
    return ids[: n * (SEQ_LEN + 1)].view(n, SEQ_LEN + 1)


@torch.no_grad()
def evaluate(model, windows, chunk=32):
    model.eval()
    nll, correct, count = [], [], 0
    per_window_nll, per_window_correct = [], []
    for s in range(0, windows.shape[0], chunk):
        w = windows[s: s + chunk]
        logits = model(*model_inputs(w[:, :SEQ_LEN]))
        tgt = w[:, 1:]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none")
        ce = ce.view(tgt.shape).double()
        ok = (logits.argmax(-1) == tgt).double()
        per_window_nll.append(ce.sum(1))
        per_window_correct.append(ok.sum(1))
    wn = torch.cat(per_window_nll)
    wc = torch.cat(per_window_correct)
    model.train()

    def summary(k):
        tokens = k * SEQ_LEN
        loss = float(wn[:k].sum() / tokens)
        return {"loss": loss, "perplexity": math.exp(loss), "accuracy": float(wc[:k].sum() / tokens)}

    return summary(windows.shape[0]), summary(min(8, windows.shape[0]))


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--bench", type=int, default=0,
                    help="only time this many training steps, write nothing")
    args = ap.parse_args()

    t_start = time.time()
    train_bytes, eval_bytes, train_files, eval_files = build_corpus()
    log(f"corpus: train {len(train_bytes)} bytes from {len(train_files)} files, "
        f"eval {len(eval_bytes)} bytes from {len(eval_files)} files: {', '.join(eval_files)}")

    train_ids = torch.tensor(list(train_bytes), dtype=torch.int64)
    eval_ids = torch.tensor(list(eval_bytes), dtype=torch.int64)
    windows = eval_windows(eval_ids)

    cfg = make_config()
    torch.manual_seed(SEED)
    model = gf.LlamaForCausalLM(cfg)
    init_for_training_(model, cfg, SEED)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params} parameters")

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=BETAS, eps=1e-8)

    steps = args.bench or args.steps
    g = torch.Generator().manual_seed(SEED + 1)
    offs = torch.arange(SEQ_LEN + 1)
    max_start = train_ids.numel() - (SEQ_LEN + 1)
    model.train()
    t0 = time.time()
    ema = None
    for step in range(steps):
        starts = torch.randint(0, max_start + 1, (BATCH,), generator=g)
        batch = train_ids[starts[:, None] + offs[None, :]]
        x, y = batch[:, :SEQ_LEN], batch[:, 1:]
        lr = lr_at(step, steps)
        for grp in opt.param_groups:
            grp["lr"] = lr
        logits = model(*model_inputs(x))
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        lv = float(loss)
        ema = lv if ema is None else 0.98 * ema + 0.02 * lv
        if step % 50 == 0 or step == steps - 1:
            el = time.time() - t0
            log(f"step {step:5d}/{steps}  loss {lv:.4f}  ema {ema:.4f}  lr {lr:.2e}  "
                f"elapsed {el:7.1f}s  ({el / (step + 1):.3f} s/step)")
        if step > 0 and step % 1000 == 0 and not args.bench:
            ev, _ = evaluate(model, windows)
            log(f"  eval @ {step}: loss {ev['loss']:.4f} acc {ev['accuracy']:.4f}")
    train_seconds = time.time() - t0
    if args.bench:
        log(f"bench: {train_seconds / steps:.3f} s/step")
        return 0

    model.eval()
    ev_all, ev_8 = evaluate(model, windows)
    log(f"held-out ({windows.shape[0]} windows): loss {ev_all['loss']:.4f}  "
        f"ppl {ev_all['perplexity']:.3f}  acc {ev_all['accuracy']:.4f}")
    log(f"held-out (first 8):  loss {ev_8['loss']:.4f}  acc {ev_8['accuracy']:.4f}")

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "train.txt").write_bytes(train_bytes)
    (OUT_DIR / "eval.txt").write_bytes(eval_bytes)

    ref_ids = windows[:2, :SEQ_LEN].contiguous()
    ref_inputs = model_inputs(ref_ids)
    with torch.no_grad():
        ref_logits = model(*ref_inputs)

    onnx_path = OUT_DIR / "lm.onnx"
    gf.export(
        model, ref_inputs, onnx_path,
        ["input_ids", "attention_mask", "position_ids"], ["logits"],
        {
            "input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "sequence_length"},
            "position_ids": {0: "batch_size", 1: "sequence_length"},
            "logits": {0: "batch_size", 1: "sequence_length"},
        },
    )
    onnx.checker.check_model(onnx.load(str(onnx_path)))

    meta = {
        "config": {
            "num_layers": cfg.num_layers, "hidden": cfg.hidden, "num_heads": cfg.num_heads,
            "num_kv_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
            "intermediate": cfg.intermediate, "vocab": cfg.vocab, "params": n_params,
            "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta,
            "tied_lm_head": False, "opset": gf.OPSET, "seed": SEED,
        },
        "training": {
            "steps": steps, "batch": BATCH, "seq_len": SEQ_LEN, "lr": LR,
            "min_lr": LR * MIN_LR_FRAC, "warmup": WARMUP, "schedule": "linear warmup + cosine",
            "optimizer": "AdamW", "betas": list(BETAS), "weight_decay": WEIGHT_DECAY,
            "grad_clip": CLIP, "seconds": round(train_seconds, 1),
            "final_train_loss": lv, "final_train_loss_ema": ema,
            "train_bytes": len(train_bytes), "train_files": len(train_files),
        },
        "eval": {
            "windows": int(windows.shape[0]), "seq_len": SEQ_LEN,
            "loss": ev_all["loss"], "perplexity": ev_all["perplexity"],
            "accuracy": ev_all["accuracy"],
            "first8": {"loss": ev_8["loss"], "perplexity": ev_8["perplexity"],
                       "accuracy": ev_8["accuracy"]},
            "eval_bytes": len(eval_bytes), "eval_files": eval_files,
        },
        "reference": {
            "inputs": [[int(v) for v in row] for row in ref_ids.tolist()],
            "logits_sample": [[float(v) for v in row] for row in ref_logits[0, :4, :8].tolist()],
        },
    }
    (OUT_DIR / "lm.json").write_text(json.dumps(meta, indent=1, allow_nan=False) + "\n",
                                     encoding="utf-8")

    for name in ["lm.onnx", "lm.json", "train.txt", "eval.txt"]:
        data = (OUT_DIR / name).read_bytes()
        log(f"{(OUT_DIR / name).relative_to(ROOT)}  {len(data):>9} bytes  "
            f"sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    log(f"total {time.time() - t_start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

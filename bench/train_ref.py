#!/usr/bin/env python3
"""PyTorch reference for one training step of a titanize-converted model (benchmark baseline).

bench/train.bench.ts compares titanize's training step (onnxruntime) against this script:
same converted model, same batch / sequence length / threads, same optimiser.

Model (float32, read from the CONVERTED ONNX file):
  * base Llama weights (frozen, requires_grad False): embedding, RMSNorm weights and the
    MatMul weights of q/k/v/o, gate/up/down and lm_head. The exporter names the MatMul
    weights anonymously (onnx::MatMul_N), so they are taken in graph order from the MatMul
    nodes whose second input is a (non-LoRA) initializer: per layer q, k, v, o, gate, up,
    down, then lm_head (shapes are checked; gate is told from up by its Sigmoid consumer);
  * LoRA adapters lora.layers.{L}.{q,k,v,o}_proj.{A,B} (MatMul layout A [in, r], B [r, out]),
    trainable; y = x W + (alpha / r) (x A) B, alpha / r from the metadata (default 2);
  * MaG gates tptt.layers.{L}.mag.mu (fixed, not trained);
  * rule / order from the metadata key `titanize.converted` (JSON), or --rule;
    q/kv head counts from the attributes of the LiZA / LinearAttention nodes.
  Forward per layer (as tools/gen_train_grads.py): xq, xk, xv = q/k/v projections incl.
  LoRA (before rotary); a = causal softmax attention (RoPE, GQA); y = LiZA(xq, xk, xv);
  mixed = (1 - mu) a + mu y feeds o_proj (with its LoRA); SwiGLU MLP; final norm; lm_head.

LiZA (src/ops/reference/liza.ts semantics; causal, no past, all tokens real), in the
chunked WY/UT parallel form titanize uses (src/ops/reference/liza_chunked.ts), batched
over batch and kv heads; only the inter-chunk state recurrence is a Python loop:
  qh = L2norm(SiLU(q)), kh = L2norm(SiLU(k)), vh = v / sqrt(d),
  z_t = mean(xk_{t-2}, xk_{t-1}, xk_t), beta_t = mean_c sigmoid(z_t);
  DeltaProduct order n: token t -> n rows carrying tokens t-n+1 .. t (out of range: zero
  rows, no-op steps), query read on the last row of each token;
  per chunk of C rows (C = 64): A = tril(diag(beta) K K^T, -1), (I + A) [W U] = diag(beta) [K V]
  (unit lower triangular solve, all chunks at once), then sequentially over chunks
    U' = U - W S,  O = Q S + tril(Q K^T) U',  S <- S + K^T U'
  (linear: U' = V, no W); y = o / sqrt(mean(o^2) + 1e-6) over all Hq*d channels.

Training: windows of seq_len + 1 byte tokens sampled from --data (token id = byte),
input = w[:-1], labels = w[1:], loss = mean next-token cross-entropy; AdamW (lr 2e-3)
on the LoRA tensors, clip_grad_norm_(1.0), zero_grad. Each step (forward + backward +
clipping + optimizer step) is timed with time.perf_counter; the first --warmup-steps are
excluded from the median.

Output: one JSON line on stdout (everything else goes to stderr):
  {"step_ms_median", "step_ms_all", "peak_rss_mib" (ru_maxrss at the end),
   "rss_before_train_mib" (current RSS after loading, just before the first step),
   "maxrss_before_train_mib", "tokens_per_s", "loss_first", "loss_last", "torch",
   "threads", "omp_wait_policy", "rule", "order", "batch", "seq_len", "chunk_size"}
  OMP_WAIT_POLICY defaults to PASSIVE (see below; an explicit value in the environment wins).

--check: on one fixed batch (B tensors set to deterministic non-zero values, else the
A gradients are 0), compares loss and LoRA gradients of the chunked LiZA with a plain
per-token-loop LiZA (same model, float32) and prints the max relative difference; also
compares the logits with mu = 0, B = 0 against lm.json's reference.logits_sample when the
input is the fidelity fixture (--ref-json), and, if node + onnxruntime-node are available,
the converted ONNX (B set) run in onnxruntime-node against this model's logits.

Usage:
  /usr/bin/python3 bench/train_ref.py --model CONVERTED.onnx --batch 8 --seq-len 128 \
      --steps 12 --warmup-steps 2 --threads 2 [--rule delta_product|linear|delta] \
      [--data test/fixtures/fidelity/train.txt] [--check]
"""

import argparse
import os
import sys


def _parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="converted ONNX model")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rule", choices=["linear", "delta", "delta_product"], default=None,
                   help="LiZA rule (default: from the model's titanize.converted metadata)")
    p.add_argument("--order", type=int, default=None, help="DeltaProduct order (default: metadata, else 2)")
    p.add_argument("--data", default=None, help="training text (default test/fixtures/fidelity/train.txt)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--chunk-size", type=int, default=64)
    p.add_argument("--rope-theta", type=float, default=10000.0)
    p.add_argument("--rms-eps", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check", action="store_true", help="correctness checks instead of the timing run")
    p.add_argument("--ref-json", default=None,
                   help="lm.json with reference.logits_sample (default: test/fixtures/fidelity/lm.json)")
    return p.parse_args()


ARGS = _parse_args()
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)  # before importing torch / numpy
# PyTorch's OpenMP pool and (Debian) pthread OpenBLAS pool both run `threads` workers; with
# the default active spin-waiting they fight over the cores (2-10x slower steps on 2 cores,
# measured). Passive waiting avoids that; an explicit OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from onnx import numpy_helper  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROJS = ["q_proj", "k_proj", "v_proj", "o_proj"]
L2_EPS = 1e-6
LIZA_RMS_EPS = 1e-6


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def current_rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def maxrss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# --------------------------------------------------------------------------
# reading the converted model
# --------------------------------------------------------------------------

def load_converted(path, rule_arg, order_arg):
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    meta = {p.key: p.value for p in m.metadata_props}
    conv = json.loads(meta["titanize.converted"]) if "titanize.converted" in meta else {}
    rule = rule_arg or conv.get("rule", "delta_product")
    if rule not in ("linear", "delta", "delta_product"):
        raise SystemExit(f"rule {rule!r} is not supported by this reference (linear, delta, delta_product)")
    if rule == "linear":
        order = 1
    elif rule == "delta":
        order = 1
    else:
        order = order_arg or int(conv.get("order", 2))
    scale = float(conv["loraAlpha"]) / float(conv["loraRank"]) if "loraAlpha" in conv else 2.0

    # head counts from the LiZA / LinearAttention nodes (also inside local functions)
    heads = None
    nodes = list(m.graph.node) + [n for f in m.functions for n in f.node]
    for n in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if "q_num_heads" in attrs and "kv_num_heads" in attrs:
            heads = (int(attrs["q_num_heads"]), int(attrs["kv_num_heads"]), attrs.get("head_dim"))
            break
    if heads is None:
        raise SystemExit("no LiZA / LinearAttention node with q_num_heads / kv_num_heads found")

    # anonymous base MatMul weights, in graph order
    consumers = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    mm = []
    for n in m.graph.node:
        if n.op_type == "MatMul" and len(n.input) == 2 and n.input[1] in inits:
            w = n.input[1]
            if w.startswith("lora.") or inits[w].dtype != np.float32 or inits[w].ndim != 2:
                continue
            mm.append((w, n.output[0]))
    L = sum(1 for k in inits if k.endswith(".input_layernorm.weight"))
    if len(mm) != 7 * L + 1:
        raise SystemExit(f"expected {7 * L + 1} base MatMul weights, found {len(mm)}")
    W = {"embed": inits["model.embed_tokens.weight"], "norm": inits["model.norm.weight"],
         "lm_head": inits[mm[-1][0]], "layers": []}
    for li in range(L):
        group = mm[7 * li: 7 * li + 7]
        names = ["q_proj", "k_proj", "v_proj", "o_proj", "gate", "up", "down"]
        lw = {nm: inits[w] for nm, (w, _) in zip(names, group)}

        def has_sigmoid(out):
            return any(c.op_type == "Sigmoid" for c in consumers.get(out, []))
        if not has_sigmoid(group[4][1]) and has_sigmoid(group[5][1]):
            lw["gate"], lw["up"] = lw["up"], lw["gate"]
        lw["in_norm"] = inits[f"model.layers.{li}.input_layernorm.weight"]
        lw["post_norm"] = inits[f"model.layers.{li}.post_attention_layernorm.weight"]
        lw["mu"] = float(inits[f"tptt.layers.{li}.mag.mu"])
        W["layers"].append(lw)
    hidden = W["embed"].shape[1]
    Hq, Hkv, d = heads
    d = int(d) if d else W["layers"][0]["q_proj"].shape[1] // Hq
    for lw in W["layers"]:
        assert lw["q_proj"].shape == (hidden, Hq * d), lw["q_proj"].shape
        assert lw["k_proj"].shape == (hidden, Hkv * d) and lw["v_proj"].shape == (hidden, Hkv * d)
        assert lw["o_proj"].shape == (Hq * d, hidden)
        assert lw["gate"].shape == lw["up"].shape and lw["down"].shape == lw["gate"].shape[::-1]
    lora = {k: v for k, v in inits.items() if k.startswith("lora.")}
    expect = sorted(f"lora.layers.{li}.{p}.{s}" for li in range(L) for p in PROJS for s in "AB")
    if sorted(lora) != expect:
        raise SystemExit(f"unexpected LoRA initializers: {sorted(lora)[:6]} ...")
    cfg = {"layers": L, "hidden": hidden, "Hq": Hq, "Hkv": Hkv, "d": d, "rule": rule, "order": order,
           "model_rule": conv.get("rule"), "model_order": conv.get("order"), "lora_scale": scale,
           "rank": lora["lora.layers.0.q_proj.A"].shape[1]}
    return cfg, W, lora


# --------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------

def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def l2norm(x):
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + L2_EPS)


def liza_features(xq, xk, xv, Hq, Hkv, d):
    """-> qh [B,Hkv,G,T,d], kh/vh [B,Hkv,T,d], beta [B,Hkv,T]."""
    Bn, T, _ = xq.shape
    G = Hq // Hkv
    q = xq.view(Bn, T, Hkv, G, d).permute(0, 2, 3, 1, 4)  # query head h*G+g reads kv head h
    k = xk.view(Bn, T, Hkv, d).transpose(1, 2)
    v = xv.view(Bn, T, Hkv, d).transpose(1, 2)
    qh = l2norm(F.silu(q))
    kh = l2norm(F.silu(k))
    vh = v * (1.0 / math.sqrt(d))
    kp = F.pad(k, (0, 0, 2, 0))  # two zero rows before the first token
    z = (kp[:, :, 0:T] + kp[:, :, 1:T + 1] + kp[:, :, 2:T + 2]) * (1.0 / 3.0)
    beta = torch.sigmoid(z).mean(-1)
    return qh, kh, vh, beta


def liza_output(o, Bn, T, Hq, d):
    """o [B,Hkv,G,T,d] -> normalised y [B,T,Hq*d]."""
    o = o.permute(0, 3, 1, 2, 4).reshape(Bn, T, Hq * d)
    return o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + LIZA_RMS_EPS)


def expand_rows(x, n):
    """[B,H,T,...] -> [B,H,T*n,...]: token t -> rows carrying tokens t-n+1 .. t (zeros before 0)."""
    if n == 1:
        return x
    T = x.shape[2]
    pad = [0, 0] * (x.dim() - 3) + [n - 1, 0]
    xp = F.pad(x, pad)
    rows = [xp[:, :, i:i + T] for i in range(n)]  # row i carries token t-(n-1)+i
    return torch.stack(rows, dim=3).reshape(x.shape[0], x.shape[1], T * n, *x.shape[3:])


def liza_chunked(xq, xk, xv, rule, order, Hq, Hkv, d, C=64):
    """Chunked WY/UT LiZA; batched over batch and kv heads, sequential over chunks only.
    Chunk-major layout [Nc, B, Hkv, ...] so that every per-chunk slice is contiguous."""
    Bn, T, _ = xq.shape
    G = Hq // Hkv
    n = order if rule == "delta_product" else 1
    Ct = max(1, C // n)  # tokens per chunk
    C = Ct * n  # rows per chunk (a multiple of n)
    qh, kh, vh, beta = liza_features(xq, xk, xv, Hq, Hkv, d)
    Nc = -(-T // Ct)
    Tp = Nc * Ct

    def chunks(x, rows_per_token):  # [B,Hkv,T*r,...] -> [Nc,B,Hkv,Ct*r,...]
        if Tp != T:  # zero rows / queries: no-op steps, outputs discarded
            x = F.pad(x, [0, 0] * (x.dim() - 3) + [0, (Tp - T) * rows_per_token])
        x = x.view(Bn, Hkv, Nc, Ct * rows_per_token, *x.shape[3:])
        return x.permute(2, 0, 1, *range(3, x.dim())).contiguous()

    K = chunks(expand_rows(kh, n), n)  # [Nc,B,Hkv,C,d]
    V = chunks(expand_rows(vh, n), n)
    # queries of the tokens of each chunk, all G heads of a group as rows: [Nc,B,Hkv,G*Ct,d]
    Q = chunks(qh.transpose(2, 3), 1)  # [Nc,B,Hkv,Ct,G,d]
    Q = Q.transpose(3, 4).reshape(Nc, Bn, Hkv, G * Ct, d)
    # token t_local (read on row t_local*n + n-1) sees rows j <= t_local*n + n-1 of its chunk
    rows = torch.arange(C)
    readrow = torch.arange(Ct) * n + (n - 1)
    mask = (rows[None, :] <= readrow[:, None]).to(xq.dtype).repeat(G, 1)  # [G*Ct, C]
    P = (Q @ K.transpose(-1, -2)) * mask  # [Nc,B,Hkv,G*Ct,C]
    if rule == "linear":
        Ws, Us = None, V.unbind(0)
    else:
        bt = chunks(expand_rows(beta.unsqueeze(-1), n), n)  # [Nc,B,Hkv,C,1]
        bK = bt * K
        A = torch.tril(bK @ K.transpose(-1, -2), diagonal=-1)  # beta_i k_i.k_j, j < i
        rhs = torch.cat([bK, bt * V], dim=-1)
        X = torch.linalg.solve_triangular(A, rhs, upper=False, unitriangular=True)  # (I+A)^-1 rhs
        Ws, Us = X[..., :d].contiguous().unbind(0), X[..., d:].contiguous().unbind(0)
    Ks, Qs, Ps = K.unbind(0), Q.unbind(0), P.unbind(0)
    S = xq.new_zeros(Bn, Hkv, d, d)
    outs = []
    for c in range(Nc):
        Up = Us[c] if Ws is None else Us[c] - Ws[c] @ S
        outs.append(Qs[c] @ S + Ps[c] @ Up)
        if c + 1 < Nc:
            S = S + Ks[c].transpose(-1, -2) @ Up
    O = torch.stack(outs, dim=0)  # [Nc,B,Hkv,G*Ct,d]
    O = O.view(Nc, Bn, Hkv, G, Ct, d).permute(1, 2, 3, 0, 4, 5).reshape(Bn, Hkv, G, Tp, d)[:, :, :, :T]
    return liza_output(O, Bn, T, Hq, d)


def liza_loop(xq, xk, xv, rule, order, Hq, Hkv, d, C=None):
    """Plain per-token recurrence (liza.ts), vectorised over batch and kv heads only."""
    Bn, T, _ = xq.shape
    qh, kh, vh, beta = liza_features(xq, xk, xv, Hq, Hkv, d)
    S = xq.new_zeros(Bn, Hkv, d, d)
    outs = []
    for t in range(T):
        if rule == "linear":
            S = S + kh[:, :, t, :, None] * vh[:, :, t, None, :]
        else:
            n = order if rule == "delta_product" else 1
            for j in range(n - 1, -1, -1):
                u = t - j
                if u < 0:
                    continue
                ku, vu, bu = kh[:, :, u], vh[:, :, u], beta[:, :, u]
                pred = torch.einsum("bhkv,bhk->bhv", S, ku)
                S = S + bu[:, :, None, None] * ku[:, :, :, None] * (vu - pred)[:, :, None, :]
        outs.append(torch.einsum("bhkv,bhgk->bhgv", S, qh[:, :, :, t]))
    O = torch.stack(outs, dim=3)  # [B,Hkv,G,T,d]
    return liza_output(O, Bn, T, Hq, d)


class TitansLM:
    """Converted model: frozen base tensors, trainable LoRA tensors, fixed mu."""

    def __init__(self, cfg, W, lora, rope_theta, rms_eps, chunk_size):
        self.cfg, self.eps, self.theta, self.C = cfg, rms_eps, rope_theta, chunk_size
        t = lambda a: torch.from_numpy(np.array(a, dtype=np.float32, copy=True))  # noqa: E731
        self.embed, self.norm, self.lm_head = t(W["embed"]), t(W["norm"]), t(W["lm_head"])
        self.layers = [{k: (v if k == "mu" else t(v)) for k, v in lw.items()} for lw in W["layers"]]
        for lw in self.layers:  # fused q/k/v base weight [hidden, (Hq + 2 Hkv) d]
            lw["qkv"] = torch.cat([lw.pop("q_proj"), lw.pop("k_proj"), lw.pop("v_proj")], dim=1).contiguous()
        self.lora = {k: t(v).requires_grad_(True) for k, v in sorted(lora.items())}
        self._rope = {}

    def parameters(self):
        return list(self.lora.values())

    def rope(self, T):
        if T not in self._rope:
            d = self.cfg["d"]
            inv = 1.0 / (self.theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
            fr = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
            emb = torch.cat((fr, fr), dim=-1)
            sin = emb.sin()
            sin = torch.cat((-sin[:, :d // 2], sin[:, d // 2:]), dim=-1)  # sign of rotate_half
            self._rope[T] = (emb.cos(), sin)
        return self._rope[T]

    def causal_mask(self, T, G):
        """Additive causal mask for the grouped score rows (g, t): [G*T, T], 0 / -inf."""
        key = ("mask", T, G)
        if key not in self._rope:
            m = torch.zeros(T, T).masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
            self._rope[key] = m.repeat(G, 1)
        return self._rope[key]

    def forward(self, ids, liza=liza_chunked, mu_override=None):
        cfg = self.cfg
        Bn, T = ids.shape
        Hq, Hkv, d = cfg["Hq"], cfg["Hkv"], cfg["d"]
        G = Hq // Hkv
        nq, nkv = Hq * d, Hkv * d
        s = cfg["lora_scale"]
        cos, sin = self.rope(T)
        mask = self.causal_mask(T, G)
        x = self.embed[ids]
        for li, lw in enumerate(self.layers):
            lo = self.lora
            pre = f"lora.layers.{li}."
            h = rms_norm(x, lw["in_norm"], self.eps).view(Bn * T, -1)
            # fused q/k/v: one base GEMM, one LoRA-A GEMM, then the three LoRA-B GEMMs
            qkv = h @ lw["qkv"]
            ha = h @ torch.cat([lo[pre + p + ".A"] for p in ("q_proj", "k_proj", "v_proj")], dim=1)
            hq, hk, hv = ha.split(cfg["rank"], dim=1)
            xq = torch.addmm(qkv[:, :nq], hq, lo[pre + "q_proj.B"], alpha=s)
            xk = torch.addmm(qkv[:, nq:nq + nkv], hk, lo[pre + "k_proj.B"], alpha=s)
            xv = torch.addmm(qkv[:, nq + nkv:], hv, lo[pre + "v_proj.B"], alpha=s)
            xq, xk, xv = xq.view(Bn, T, nq), xk.view(Bn, T, nkv), xv.view(Bn, T, nkv)
            # RoPE: x cos + rotate_half(x) sin, rotate_half(x) = roll(x, d/2) * [-1.., +1..] (in sin)
            q = xq.view(Bn, T, Hq, d).transpose(1, 2)
            k = xk.view(Bn, T, Hkv, d).transpose(1, 2)
            q = q * cos + q.roll(d // 2, -1) * sin
            k = k * cos + k.roll(d // 2, -1) * sin
            v = xv.view(Bn, T, Hkv, d).transpose(1, 2)
            # GQA without repeat_kv: the G query heads of a kv head as rows [(g, t), d];
            # scale and causal mask fused into the score GEMM (baddbmm)
            qg = q.reshape(Bn * Hkv, G * T, d)
            kg = k.reshape(Bn * Hkv, T, d)
            sc = torch.baddbmm(mask, qg, kg.transpose(1, 2), alpha=1.0 / math.sqrt(d))
            pa = torch.softmax(sc, dim=-1)
            a = (pa @ v.reshape(Bn * Hkv, T, d)).view(Bn, Hq, T, d).transpose(1, 2).reshape(Bn, T, nq)
            mu = lw["mu"] if mu_override is None else mu_override
            if mu != 0.0:
                y = liza(xq, xk, xv, cfg["rule"], cfg["order"], Hq, Hkv, d, C=self.C)
                a = (1.0 - mu) * a + mu * y
            a = a.view(Bn * T, nq)
            o = torch.addmm(a @ lw["o_proj"], a @ lo[pre + "o_proj.A"], lo[pre + "o_proj.B"], alpha=s)
            x = x + o.view(Bn, T, -1)
            h = rms_norm(x, lw["post_norm"], self.eps)
            x = x + (F.silu(h @ lw["gate"]) * (h @ lw["up"])) @ lw["down"]
        return rms_norm(x, self.norm, self.eps) @ self.lm_head


def lm_loss(logits, labels):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------

def load_tokens(path):
    data = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8).astype(np.int64)
    return torch.from_numpy(data)


def sample_batch(tokens, B, T, rng):
    starts = rng.integers(0, tokens.numel() - T - 1 + 1, size=B)
    w = torch.stack([tokens[s:s + T + 1] for s in starts.tolist()])
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


# --------------------------------------------------------------------------
# timing run
# --------------------------------------------------------------------------

def train(model, tokens, args):
    rng = np.random.default_rng(args.seed)
    params = model.parameters()
    opt = torch.optim.AdamW(params, lr=args.lr)
    batches = [sample_batch(tokens, args.batch, args.seq_len, rng) for _ in range(args.steps)]
    gc.collect()
    rss_before = current_rss_mib()
    maxrss_before = maxrss_mib()
    times, losses = [], []
    for step, (ids, labels) in enumerate(batches):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = lm_loss(model.forward(ids), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        dt = (time.perf_counter() - t0) * 1000.0
        times.append(dt)
        losses.append(loss.item())
        log(f"step {step}: loss {losses[-1]:.4f}  {dt:.1f} ms  maxrss {maxrss_mib():.1f} MiB")
    timed = times[args.warmup_steps:] or times
    med = float(np.median(timed))
    return {
        "step_ms_median": round(med, 3),
        "step_ms_all": [round(t, 3) for t in times],
        "peak_rss_mib": round(maxrss_mib(), 2),
        "rss_before_train_mib": round(rss_before, 2),
        "maxrss_before_train_mib": round(maxrss_before, 2),
        "tokens_per_s": round(args.batch * args.seq_len / (med / 1000.0), 1),
        "loss_first": losses[0],
        "loss_last": losses[-1],
    }


# --------------------------------------------------------------------------
# --check
# --------------------------------------------------------------------------

NODE_ORT = r"""
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
const require = createRequire(process.argv[2]);
const ort = require('onnxruntime-node');
const feeds = JSON.parse(readFileSync(process.argv[4], 'utf8'));
const sess = await ort.InferenceSession.create(process.argv[3], { logSeverityLevel: 3 });
const f = {};
for (const [k, v] of Object.entries(feeds)) f[k] = new ort.Tensor('int64', BigInt64Array.from(v.data.map(BigInt)), v.dims);
const r = await sess.run(f);
writeFileSync(process.argv[5], JSON.stringify({ dims: r.logits.dims, data: Array.from(r.logits.data) }));
"""


def set_deterministic_B(model):
    names_B = sorted(n for n in model.lora if n.endswith(".B"))
    with torch.no_grad():
        for k, n in enumerate(names_B):
            p = model.lora[n]
            i = torch.arange(p.numel(), dtype=torch.float64)
            p.copy_((0.05 * torch.sin(0.37 * i + 1.1 * k)).to(torch.float32).view_as(p))


def check(model, tokens, args):
    ok = True
    rng = np.random.default_rng(1234)
    Bc, Tc = min(args.batch, 4), args.seq_len
    ids, labels = sample_batch(tokens, Bc, Tc, rng)
    res = {"check_batch": Bc, "check_seq_len": Tc}

    # (1) mu = 0, B = 0: the original model; compare with lm.json's reference logits
    ref_json = Path(args.ref_json) if args.ref_json else ROOT / "test/fixtures/fidelity/lm.json"
    if ref_json.exists() and all(not p.any() for n, p in model.lora.items() if n.endswith(".B")):
        ref = json.loads(ref_json.read_text())["reference"]
        rin = torch.tensor(ref["inputs"], dtype=torch.int64)
        want = torch.tensor(ref["logits_sample"], dtype=torch.float32)
        with torch.no_grad():
            got = model.forward(rin, mu_override=0.0)[0, :want.shape[0], :want.shape[1]]
        diff = (got - want).abs().max().item()
        res["base_logits_vs_lm_json_maxabs"] = diff
        log(f"(1) mu=0, B=0 logits vs {ref_json.name} reference.logits_sample: max|diff| = {diff:.3e}")
        ok &= diff < 1e-4
    else:
        log("(1) base-logits check skipped (no lm.json, or B already non-zero)")

    set_deterministic_B(model)

    # (2) chunked vs per-token loop: loss and every LoRA gradient
    def loss_and_grads(liza):
        for p in model.parameters():
            p.grad = None
        loss = lm_loss(model.forward(ids, liza=liza), labels)
        loss.backward()
        return loss.item(), {n: p.grad.detach().clone() for n, p in model.lora.items()}

    t0 = time.perf_counter()
    l_ch, g_ch = loss_and_grads(liza_chunked)
    t1 = time.perf_counter()
    l_lp, g_lp = loss_and_grads(liza_loop)
    t2 = time.perf_counter()
    rel = {n: ((g_ch[n] - g_lp[n]).abs().max() / g_lp[n].abs().max().clamp_min(1e-30)).item() for n in g_ch}
    worst = max(rel, key=rel.get)
    allc = torch.cat([g.reshape(-1) for g in g_ch.values()])
    alll = torch.cat([g.reshape(-1) for g in g_lp.values()])
    rel_all = ((allc - alll).abs().max() / alll.abs().max()).item()
    loss_rel = abs(l_ch - l_lp) / abs(l_lp)
    log(f"(2) chunked vs per-token LiZA ({model.cfg['rule']}, order {model.cfg['order']}), batch {Bc}x{Tc}:")
    log(f"    loss chunked {l_ch:.8f}  loop {l_lp:.8f}  rel diff {loss_rel:.3e}")
    log(f"    max over tensors of max|dg|/max|g|: {rel[worst]:.3e} ({worst}); over all grads: {rel_all:.3e}")
    log(f"    fwd+bwd time: chunked {1000 * (t1 - t0):.0f} ms, loop {1000 * (t2 - t1):.0f} ms")
    res.update({"loss_chunked": l_ch, "loss_loop": l_lp, "loss_rel_diff": loss_rel,
                "grad_max_rel_diff_per_tensor": rel[worst], "grad_worst_tensor": worst,
                "grad_max_rel_diff_all": rel_all})
    ok &= loss_rel < 1e-5 and rel[worst] < 1e-4

    # (3) the converted ONNX itself (B set) in onnxruntime-node vs this model's logits
    pkg = ROOT / "package.json"
    same_rule = (model.cfg["rule"], model.cfg["order"]) == (model.cfg["model_rule"], model.cfg["model_order"])
    if not same_rule:
        log("(3) onnxruntime-node check skipped (--rule / --order differ from the model's)")
    elif shutil.which("node") and (ROOT / "node_modules" / "onnxruntime-node").exists():
        tmp = Path(tempfile.mkdtemp(prefix="train_ref_check_"))
        try:
            m = onnx.load(args.model)
            for init in m.graph.initializer:
                if init.name in model.lora:
                    arr = model.lora[init.name].detach().numpy().reshape(tuple(init.dims))
                    init.CopyFrom(numpy_helper.from_array(arr, init.name))
            mp = tmp / "withB.onnx"
            onnx.save(m, str(mp))
            ib = ids[:2]
            feeds = {"input_ids": {"data": ib.reshape(-1).tolist(), "dims": list(ib.shape)},
                     "attention_mask": {"data": [1] * ib.numel(), "dims": list(ib.shape)},
                     "position_ids": {"data": list(range(ib.shape[1])) * ib.shape[0], "dims": list(ib.shape)}}
            (tmp / "feeds.json").write_text(json.dumps(feeds))
            (tmp / "ort.mjs").write_text(NODE_ORT)
            r = subprocess.run(["node", str(tmp / "ort.mjs"), str(pkg), str(mp), str(tmp / "feeds.json"),
                                str(tmp / "out.json")], capture_output=True, text=True)
            if r.returncode != 0:
                log(f"(3) onnxruntime-node check skipped: {r.stderr.strip()[-300:]}")
            else:
                o = json.loads((tmp / "out.json").read_text())
                got = torch.tensor(o["data"], dtype=torch.float32).reshape(o["dims"])
                with torch.no_grad():
                    ours = model.forward(ib)
                diff = (got - ours).abs().max().item()
                res["onnx_logits_maxabs"] = diff
                res["logits_absmax"] = ours.abs().max().item()
                log(f"(3) converted ONNX (B set) in onnxruntime-node vs PyTorch logits: max|diff| = {diff:.3e}"
                    f" (|logits| max {ours.abs().max().item():.2f})")
                ok &= diff < 1e-3
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        log("(3) onnxruntime-node check skipped (node / onnxruntime-node missing)")
    res["ok"] = bool(ok)
    return res


# --------------------------------------------------------------------------

def main():
    args = ARGS
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg, W, lora = load_converted(args.model, args.rule, args.order)
    model = TitansLM(cfg, W, lora, args.rope_theta, args.rms_eps, args.chunk_size)
    del W, lora
    data = args.data or str(ROOT / "test/fixtures/fidelity/train.txt")
    tokens = load_tokens(data)
    log(f"model: {cfg}; data {data} ({tokens.numel()} tokens); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads")
    out = {"torch": torch.__version__, "threads": args.threads, "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
           "rule": cfg["rule"], "order": cfg["order"],
           "batch": args.batch, "seq_len": args.seq_len, "chunk_size": args.chunk_size}
    if args.check:
        res = check(model, tokens, args)
        print(json.dumps({**res, **out}), flush=True)
        return 0 if res["ok"] else 1
    res = train(model, tokens, args)
    print(json.dumps({**res, **out}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

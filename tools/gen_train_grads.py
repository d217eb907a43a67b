#!/usr/bin/env python3
"""Reference gradients (PyTorch autograd, float64) for titanize's training graph.

What it does
  For each LiZA rule in (linear, delta_product, gated_delta_product) the script

  1. converts the tiny Llama fixture with the CLI
       node bin/titanize.js convert test/fixtures/llama.onnx -o <tmp>/<rule>.onnx \
            --rule <rule> --mu 0.5 --lora-rank 4 --lora-alpha 8 --seed 5 --target portable
     and reads the LoRA initializers `lora.layers.{L}.{q,k,v,o}_proj.{A,B}` (MatMul
     layout: A [in, r], B [r, out]) and the gates `tptt.layers.{L}.mag.mu` from it;
  2. replaces every (zero) B by deterministic values: over the B names sorted as
     strings, the k-th B gets element i (row-major flat index) =
     float32(0.05 * sin(0.37 * i + 1.1 * k))  (rounded to float32, so the values are
     exactly what a float32 model holds);
  3. rebuilds the base model in PyTorch (float64) from `tools/gen_fixtures.py`
     (LlamaForCausalLM, config / seed of the 'llama' fixture; checked against
     test/fixtures/llama.ref.json and against the converted model's initializers) and
     runs the converted forward pass:
       per layer, q/k/v/o projections y = x W + (alpha/r) (x A) B  (alpha/r = 2);
       xq, xk, xv = q/k/v outputs incl. LoRA, [B, T, H*d], before rotary;
       a = softmax attention output [B, T, Hq*d];  y = LiZA(xq, xk, xv);
       mixed = (1 - mu) a + mu y  feeds o_proj (with its LoRA);
     LiZA follows src/ops/reference/liza.ts (causal, no past, all tokens real);
  4. loss = mean over all B*T positions of CE(logits[b, t], labels[b, t]) (labels are
     already the "next tokens": no shift inside; label weights all 1), and
     d loss / d (every A, every B, every mu) by autograd.

  Self-checks printed (the script fails if one does not hold):
    (a) base forward vs llama.ref.json logits (float32 reference, max |diff| ~1e-6);
    (b) central finite differences (h = 1e-6, float64) vs autograd for a few LoRA
        elements and both mu, per rule;
    (c) LiZA in PyTorch vs the TS reference `lizaReference` (dist/src/ops/reference/
        liza.js) on random inputs, and the full converted ONNX (B replaced) run in
        onnxruntime-node vs the PyTorch logits (float32 vs float64, ~1e-5); skipped
        with a note if node / dist / onnxruntime-node are unavailable;
    plus loss_mu0_check: loss with mu = 0 and B = 0 equals the original model's loss.

Output
  test/fixtures/train_grads.ref.json:
    {"description", "batch": {"input_ids", "labels", "attention_mask", "position_ids"},
     "cases": [{"rule", "order", "mu", "lora_rank", "lora_alpha", "seed", "loss",
                "loss_mu0_check", "loss_original", "params": {name: flat list},
                "grads": {name: flat list}}]}
  (params holds every A and B; grads every A, B and mu, mu as a 1-element list.)

Run (deterministic; needs the built CLI, `npm run build` if dist/ is missing):
    /usr/bin/python3 tools/gen_train_grads.py
"""

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def _ensure_imports():
    try:
        import numpy  # noqa: F401
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        subprocess.run(["apt-get", "install", "-y", "python3-torch", "python3-onnx", "python3-numpy"], check=True)


_ensure_imports()

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from onnx import numpy_helper  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "test" / "fixtures"
OUT_PATH = FIXTURES / "train_grads.ref.json"

sys.path.insert(0, str(ROOT / "tools"))
import gen_fixtures as gf  # noqa: E402  (module import has no side effects beyond torch settings)

torch.set_num_threads(1)
torch.manual_seed(0)

DT = torch.float64
RULES = [("linear", 1), ("delta_product", 2), ("gated_delta_product", 2)]
MU = 0.5
LORA_RANK = 4
LORA_ALPHA = 8
SEED = 5
SCALE = LORA_ALPHA / LORA_RANK
PROJS = ["q_proj", "k_proj", "v_proj", "o_proj"]
B_SIZE, T_SIZE = 2, 12
L2_EPS = 1e-6
RMS_EPS = 1e-6

failures = []


def check(ok, what):
    print(("  OK    " if ok else "  FAIL  ") + what)
    if not ok:
        failures.append(what)


# --------------------------------------------------------------------------
# batch
# --------------------------------------------------------------------------

def make_batch():
    ids = [[(37 * (12 * b + t) + 11) % 256 for t in range(T_SIZE)] for b in range(B_SIZE)]
    labels = [[(53 * (12 * b + t) + 7) % 256 for t in range(T_SIZE)] for b in range(B_SIZE)]
    mask = [[1] * T_SIZE for _ in range(B_SIZE)]
    pos = [list(range(T_SIZE)) for _ in range(B_SIZE)]
    return ids, labels, mask, pos


# --------------------------------------------------------------------------
# base model (weights from gen_fixtures, forward written out in float64)
# --------------------------------------------------------------------------

def build_base():
    cfg = gf.Config(model_type="llama", num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, hidden=64,
                    intermediate=128, vocab=256, rms_norm_eps=1e-6, rope_theta=10000.0, qkv_bias=False,
                    seed=1234)
    torch.manual_seed(cfg.seed)
    lm = gf.LlamaForCausalLM(cfg)
    gf.init_weights_(lm, cfg.seed)
    lm.eval()
    return cfg, lm


def extract_weights(cfg, lm):
    """float64 weights; linear weights transposed to [in, out] (x @ W)."""
    m = lm.model
    W = {"embed": m.embed_tokens.weight.detach().to(DT), "norm": m.norm.weight.detach().to(DT),
         "lm_head": lm.lm_head.weight.detach().to(DT).t().contiguous(), "layers": []}
    for layer in m.layers:
        a = layer.self_attn
        W["layers"].append({
            "in_norm": layer.input_layernorm.weight.detach().to(DT),
            "post_norm": layer.post_attention_layernorm.weight.detach().to(DT),
            "q_proj": a.q_proj.weight.detach().to(DT).t().contiguous(),
            "k_proj": a.k_proj.weight.detach().to(DT).t().contiguous(),
            "v_proj": a.v_proj.weight.detach().to(DT).t().contiguous(),
            "o_proj": a.o_proj.weight.detach().to(DT).t().contiguous(),
            "gate": layer.mlp.gate_proj.weight.detach().to(DT).t().contiguous(),
            "up": layer.mlp.up_proj.weight.detach().to(DT).t().contiguous(),
            "down": layer.mlp.down_proj.weight.detach().to(DT).t().contiguous(),
        })
    return W


def rms_norm(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS))


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def l2norm(x):
    return x / torch.sqrt((x * x).sum(-1, keepdim=True) + L2_EPS)


def liza(xq, xk, xv, rule, order, Hq, Hkv, d):
    """LiZA (src/ops/reference/liza.ts), causal, no past, all tokens real.
    xq [B,T,Hq*d], xk/xv [B,T,Hkv*d] -> y [B,T,Hq*d]. Per-token loop (vectorised over
    batch and kv heads); S [B,Hkv,d(key),d(value)]."""
    Bn, T, _ = xq.shape
    G = Hq // Hkv
    gated = rule.startswith("gated_")
    q = xq.reshape(Bn, T, Hq, d)
    k = xk.reshape(Bn, T, Hkv, d)
    v = xv.reshape(Bn, T, Hkv, d)
    qh = l2norm(F.silu(q))
    kh = l2norm(F.silu(k))
    vh = v / math.sqrt(d)
    kp = torch.cat([k.new_zeros(Bn, 2, Hkv, d), k], dim=1)  # zero rows before the first token
    z = (kp[:, 0:T] + kp[:, 1:T + 1] + kp[:, 2:T + 2]) / 3.0  # [B,T,Hkv,d]
    beta = torch.sigmoid(z).mean(-1)  # [B,T,Hkv]
    g = F.logsigmoid(z)  # [B,T,Hkv,d]
    S = xq.new_zeros(Bn, Hkv, d, d)
    outs = []
    for t in range(T):
        if gated:
            S = S * torch.exp(g[:, t])[..., :, None]  # decay on the key axis, token t's gate
        if rule == "linear":
            S = S + kh[:, t, :, :, None] * vh[:, t, :, None, :]
        else:
            for j in range(order - 1, -1, -1):
                u = t - j
                if u < 0:
                    continue  # nothing to replay (no past window)
                ku, vu, bu = kh[:, u], vh[:, u], beta[:, u]
                pred = torch.einsum("bhkv,bhk->bhv", S, ku)  # S^T k
                S = S + bu[:, :, None, None] * ku[:, :, :, None] * (vu - pred)[:, :, None, :]
        qt = qh[:, t].reshape(Bn, Hkv, G, d)  # query head i = h*G + g reads kv head h
        o = torch.einsum("bhkv,bhgk->bhgv", S, qt).reshape(Bn, Hq * d)
        outs.append(o)
    o = torch.stack(outs, dim=1)
    return o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + RMS_EPS)


def forward(cfg, W, input_ids, attention_mask, position_ids, lora=None, mus=None, rule=None, order=1):
    """Logits [B,T,V] in float64. lora: {name: tensor} (A [in,r], B [r,out]) or None;
    mus: [tensor scalar per layer] or None (no LiZA branch at all)."""
    Bn, T = input_ids.shape
    H, Hkv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    x = W["embed"][input_ids]
    # HF additive mask: causal + padding, finfo.min where masked
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    allowed = causal[None, None] & (attention_mask[:, None, None, :] != 0)
    add_mask = torch.zeros(Bn, 1, T, T, dtype=DT).masked_fill(~allowed, torch.finfo(DT).min)
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=DT) / d))
    freqs = position_ids.to(DT)[:, :, None] * inv_freq[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None], emb.sin()[:, None]  # [B,1,T,d]

    for L, lw in enumerate(W["layers"]):
        def proj(inp, p):
            out = inp @ lw[p]
            if lora is not None:
                out = out + SCALE * ((inp @ lora[f"lora.layers.{L}.{p}.A"]) @ lora[f"lora.layers.{L}.{p}.B"])
            return out

        res = x
        h = rms_norm(x, lw["in_norm"])
        xq, xk, xv = proj(h, "q_proj"), proj(h, "k_proj"), proj(h, "v_proj")
        q = xq.view(Bn, T, H, d).transpose(1, 2)
        k = xk.view(Bn, T, Hkv, d).transpose(1, 2)
        v = xv.view(Bn, T, Hkv, d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = H // Hkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = (q @ k.transpose(2, 3)) / math.sqrt(d) + add_mask
        p_attn = torch.softmax(s, dim=-1)
        a = (p_attn @ v).transpose(1, 2).reshape(Bn, T, H * d)
        if mus is not None:
            y = liza(xq, xk, xv, rule, order, H, Hkv, d)
            mu = mus[L]
            a = (1 - mu) * a + mu * y
        x = res + proj(a, "o_proj")
        res = x
        h = rms_norm(x, lw["post_norm"])
        x = res + (F.silu(h @ lw["gate"]) * (h @ lw["up"])) @ lw["down"]
    x = rms_norm(x, W["norm"])
    return x @ W["lm_head"]


def lm_loss(logits, labels):
    V = logits.shape[-1]
    return F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), reduction="mean")


# --------------------------------------------------------------------------
# checks against external references
# --------------------------------------------------------------------------

def check_base_ref(cfg, lm, W):
    ref = json.loads((FIXTURES / "llama.ref.json").read_text())
    ins = {e["name"]: torch.tensor(e["data"], dtype=torch.int64).reshape(e["dims"]) for e in ref["inputs"]}
    out = ref["outputs"][0]
    want = torch.tensor(out["data"], dtype=DT).reshape(out["dims"])
    with torch.no_grad():
        got = forward(cfg, W, ins["input_ids"], ins["attention_mask"], ins["position_ids"])
        got32 = lm(ins["input_ids"], ins["attention_mask"], ins["position_ids"]).to(DT)
    diff = (got - want).abs().max().item()
    diff32 = (got32 - want).abs().max().item()
    print(f"(a) base forward vs llama.ref.json logits: float64 max|diff| = {diff:.3e}, "
          f"gen_fixtures float32 module max|diff| = {diff32:.3e} (|logits| max {want.abs().max().item():.2f})")
    check(diff < 1e-4, "(a) float64 base forward reproduces llama.ref.json")


def check_onnx_base_weights(W, inits):
    """Every base weight of the PyTorch model appears (as is or transposed, exactly in
    float32) among the converted model's initializers."""
    pool = {}
    for name, arr in inits.items():
        if arr.dtype == np.float32:
            pool.setdefault(arr.shape, []).append(arr)

    def present(t):
        a = t.to(torch.float32).numpy()
        return any(np.array_equal(a, c) for c in pool.get(a.shape, []))

    tensors = [W["embed"], W["norm"], W["lm_head"]]
    for lw in W["layers"]:
        tensors += list(lw.values())
    missing = sum(0 if present(t) else 1 for t in tensors)
    return missing, len(tensors)


def convert(rule, tmp):
    out = Path(tmp) / f"{rule}.onnx"
    cmd = ["node", "bin/titanize.js", "convert", "test/fixtures/llama.onnx", "-o", str(out), "--rule", rule,
           "--mu", str(MU), "--lora-rank", str(LORA_RANK), "--lora-alpha", str(LORA_ALPHA), "--seed", str(SEED),
           "--target", "portable"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"convert failed ({rule}):\n{r.stdout}\n{r.stderr}")
    return out


def ensure_cli():
    r = subprocess.run(["node", "bin/titanize.js", "--help"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["npm", "run", "build"], cwd=ROOT, check=True)


NODE_LIZA = r"""
import { readFileSync, writeFileSync } from 'node:fs';
const { lizaReference } = await import(process.argv[2]);
const inp = JSON.parse(readFileSync(process.argv[3], 'utf8'));
const out = [];
for (const c of inp.cases) {
  const t = (a) => ({ data: Float64Array.from(a.data), dims: a.dims });
  const r = lizaReference({ xq: t(c.xq), xk: t(c.xk), xv: t(c.xv) },
    { q_num_heads: c.Hq, kv_num_heads: c.Hkv, head_dim: c.d, rule: c.rule, order: c.order },
    { outputType: 'float64' });
  out.push(Array.from(r.y.data));
}
writeFileSync(process.argv[4], JSON.stringify(out));
"""

NODE_ORT = r"""
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
const require = createRequire(process.argv[2]);
const ort = require('onnxruntime-node');
const feeds = JSON.parse(readFileSync(process.argv[4], 'utf8'));
const sess = await ort.InferenceSession.create(process.argv[3]);
const f = {};
for (const [k, v] of Object.entries(feeds)) f[k] = new ort.Tensor('int64', BigInt64Array.from(v.data.map(BigInt)), v.dims);
const r = await sess.run(f);
writeFileSync(process.argv[5], JSON.stringify({ dims: r.logits.dims, data: Array.from(r.logits.data) }));
"""


def node_ok():
    return shutil.which("node") is not None


def check_liza_vs_ts(tmp):
    js = ROOT / "dist" / "src" / "ops" / "reference" / "liza.js"
    if not node_ok() or not js.exists():
        print("(c1) LiZA vs TS reference: SKIPPED (node or dist/src/ops/reference/liza.js missing)")
        return
    g = torch.Generator().manual_seed(7)
    cases, ours = [], []
    Bn, T, Hq, Hkv, d = 2, 9, 4, 2, 8
    for rule, order in RULES + [("delta_product", 3), ("gated_delta_product", 3)]:
        xq = torch.randn(Bn, T, Hq * d, generator=g, dtype=DT) * 1.5
        xk = torch.randn(Bn, T, Hkv * d, generator=g, dtype=DT) * 1.5
        xv = torch.randn(Bn, T, Hkv * d, generator=g, dtype=DT) * 1.5
        ours.append(liza(xq, xk, xv, rule, order, Hq, Hkv, d))
        ent = lambda x: {"data": x.reshape(-1).tolist(), "dims": list(x.shape)}  # noqa: E731
        cases.append({"rule": rule, "order": order, "Hq": Hq, "Hkv": Hkv, "d": d,
                      "xq": ent(xq), "xk": ent(xk), "xv": ent(xv)})
    inp, outp, script = Path(tmp) / "liza_in.json", Path(tmp) / "liza_out.json", Path(tmp) / "liza.mjs"
    inp.write_text(json.dumps({"cases": cases}))
    script.write_text(NODE_LIZA)
    r = subprocess.run(["node", str(script), js.as_uri(), str(inp), str(outp)], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"(c1) LiZA vs TS reference: SKIPPED (node failed: {r.stderr.strip()[:300]})")
        return
    theirs = json.loads(outp.read_text())
    for c, o, t in zip(cases, ours, theirs):
        diff = (o.reshape(-1) - torch.tensor(t, dtype=DT)).abs().max().item()
        print(f"(c1) LiZA {c['rule']} order {c['order']} vs TS lizaReference (float64): max|diff| = {diff:.3e}")
        check(diff < 1e-10, f"(c1) LiZA {c['rule']}/{c['order']} matches TS reference")


def check_onnx_forward(rule, onnx_path, params, batch, logits64, tmp):
    """Run the converted ONNX (B replaced, float32) in onnxruntime-node; compare logits."""
    if not node_ok() or not (ROOT / "node_modules" / "onnxruntime-node").exists():
        print(f"(c2) {rule}: ONNX forward in onnxruntime-node SKIPPED (node / onnxruntime-node missing)")
        return None
    m = onnx.load(str(onnx_path))
    for init in m.graph.initializer:
        if init.name in params:
            arr = params[init.name].to(torch.float32).numpy().reshape(tuple(init.dims))
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    mp = Path(tmp) / f"{rule}.withB.onnx"
    onnx.save(m, str(mp))
    ids, _, mask, pos = batch
    feeds = {"input_ids": {"data": sum(ids, []), "dims": [B_SIZE, T_SIZE]},
             "attention_mask": {"data": sum(mask, []), "dims": [B_SIZE, T_SIZE]},
             "position_ids": {"data": sum(pos, []), "dims": [B_SIZE, T_SIZE]}}
    fp, op, script = Path(tmp) / "feeds.json", Path(tmp) / "ort_out.json", Path(tmp) / "ort.mjs"
    fp.write_text(json.dumps(feeds))
    script.write_text(NODE_ORT)
    r = subprocess.run(["node", str(script), str(ROOT / "package.json"), str(mp), str(fp), str(op)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        print(f"(c2) {rule}: ONNX forward SKIPPED (onnxruntime-node failed: {r.stderr.strip()[:300]})")
        return None
    res = json.loads(op.read_text())
    got = torch.tensor(res["data"], dtype=DT).reshape(res["dims"])
    diff = (got - logits64).abs().max().item()
    print(f"(c2) {rule}: converted ONNX (B set, fp32, onnxruntime-node) vs PyTorch float64 logits: "
          f"max|diff| = {diff:.3e} (|logits| max {logits64.abs().max().item():.2f})")
    check(diff < 5e-5, f"(c2) {rule}: converted ONNX forward matches PyTorch")
    return got


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def main():
    ensure_cli()
    cfg, lm = build_base()
    W = extract_weights(cfg, lm)
    check_base_ref(cfg, lm, W)

    batch = make_batch()
    ids_l, labels_l, mask_l, pos_l = batch
    input_ids = torch.tensor(ids_l, dtype=torch.int64)
    labels = torch.tensor(labels_l, dtype=torch.int64)
    attention_mask = torch.tensor(mask_l, dtype=torch.int64)
    position_ids = torch.tensor(pos_l, dtype=torch.int64)

    with torch.no_grad():
        loss_original = lm_loss(forward(cfg, W, input_ids, attention_mask, position_ids), labels).item()
        loss_original32 = lm_loss(lm(input_ids, attention_mask, position_ids).to(DT), labels).item()
    print(f"original model loss on the batch: float64 {loss_original!r}, gen_fixtures float32 module "
          f"{loss_original32!r}")

    cases = []
    tmp = tempfile.mkdtemp(prefix="titanize_train_grads_")
    try:
        check_liza_vs_ts(tmp)
        for rule, order in RULES:
            print(f"\n=== rule {rule}, order {order} ===")
            path = convert(rule, tmp)
            model = onnx.load(str(path))
            inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
            missing, total = check_onnx_base_weights(W, inits)
            check(missing == 0, f"converted model holds all {total} base weights of the PyTorch model "
                                f"({missing} missing)")
            names_A = sorted(n for n in inits if n.startswith("lora.") and n.endswith(".A"))
            names_B = sorted(n for n in inits if n.startswith("lora.") and n.endswith(".B"))
            expect = sorted(f"lora.layers.{L}.{p}.{s}" for L in range(cfg.num_layers) for p in PROJS for s in "AB")
            check(sorted(names_A + names_B) == expect, f"LoRA initializers are exactly {len(expect)} A/B tensors")
            check(all(not inits[n].any() for n in names_B), "all B are zero after conversion")
            mu_names = [f"tptt.layers.{L}.mag.mu" for L in range(cfg.num_layers)]
            mus0 = [float(inits[n]) for n in mu_names]
            check(all(m == MU for m in mus0), f"mu initializers = {mus0}")

            params = {}
            for n in names_A:
                params[n] = torch.tensor(inits[n].astype(np.float64), dtype=DT)
            for k, n in enumerate(names_B):
                shape = inits[n].shape
                i = np.arange(int(np.prod(shape)), dtype=np.float64)
                vals = (0.05 * np.sin(0.37 * i + 1.1 * k)).astype(np.float32).astype(np.float64)
                params[n] = torch.tensor(vals.reshape(shape), dtype=DT)
            for n in names_A:  # sanity on the layout: A [in, r], B [r, out]
                assert params[n].shape[1] == LORA_RANK, n

            def loss_fn(pdict, mus):
                lg = forward(cfg, W, input_ids, attention_mask, position_ids, lora=pdict, mus=mus,
                             rule=rule, order=order)
                return lm_loss(lg, labels), lg

            leaves = {n: t.clone().requires_grad_(True) for n, t in params.items()}
            mu_leaves = [torch.tensor(m, dtype=DT, requires_grad=True) for m in mus0]
            loss, logits = loss_fn(leaves, mu_leaves)
            grads_t = torch.autograd.grad(loss, [leaves[n] for n in sorted(leaves)] + mu_leaves)
            grads = {n: g for n, g in zip(sorted(leaves), grads_t[:len(leaves)])}
            for n, g in zip(mu_names, grads_t[len(leaves):]):
                grads[n] = g.reshape(1)
            loss = loss.item()
            print(f"loss = {loss!r}")
            for n in mu_names:
                print(f"  dL/d{n} = {grads[n].item():.6e}")
            big = max(((n, g.abs().max().item()) for n, g in grads.items()), key=lambda x: x[1])
            print(f"  largest |grad| element: {big[1]:.3e} ({big[0]})")
            check(all(torch.isfinite(g).all() for g in grads.values()), "all gradients finite")

            # (b) central finite differences
            gen = torch.Generator().manual_seed(11)
            h = 1e-6
            probes = []
            for n, cnt in (("lora.layers.0.k_proj.A", 3), ("lora.layers.1.q_proj.B", 2), ("lora.layers.0.v_proj.B", 1)):
                numel = params[n].numel()
                for idx in torch.randperm(numel, generator=gen)[:cnt].tolist():
                    probes.append((n, idx))
            probes += [(n, None) for n in mu_names]
            with torch.no_grad():
                for n, idx in probes:
                    def at(delta):
                        p = {k: v.clone() for k, v in params.items()}
                        ms = [torch.tensor(m, dtype=DT) for m in mus0]
                        if idx is None:
                            L = mu_names.index(n)
                            ms[L] = ms[L] + delta
                        else:
                            p[n].view(-1)[idx] += delta
                        return loss_fn(p, ms)[0].item()
                    fd = (at(h) - at(-h)) / (2 * h)
                    ad = grads[n].reshape(-1)[0 if idx is None else idx].item()
                    err = abs(fd - ad)
                    where = n if idx is None else f"{n}[{idx}]"
                    print(f"(b) FD {where}: autograd {ad:+.10e}  fd {fd:+.10e}  |diff| {err:.2e}")
                    check(err < 1e-7 + 1e-6 * abs(ad), f"(b) {rule} finite difference {where}")

            # loss with mu = 0 and B = 0 (must be the original model's loss)
            with torch.no_grad():
                p0 = {n: (torch.zeros_like(t) if n.endswith(".B") else t) for n, t in params.items()}
                loss_mu0 = loss_fn(p0, [torch.tensor(0.0, dtype=DT) for _ in mu_names])[0].item()
            print(f"loss_mu0_check (mu = 0, B = 0) = {loss_mu0!r}; original model loss = {loss_original!r}")
            check(abs(loss_mu0 - loss_original) < 1e-12, "loss_mu0_check equals the original model's loss")

            # (c2) the converted ONNX itself, B replaced, in onnxruntime-node
            ort_logits = check_onnx_forward(rule, path, params, batch, logits.detach(), tmp)
            if ort_logits is not None:
                ort_loss = lm_loss(ort_logits, labels).item()
                print(f"(c2) {rule}: loss from onnxruntime logits {ort_loss!r} vs PyTorch {loss!r} "
                      f"(|diff| {abs(ort_loss - loss):.2e})")
                check(abs(ort_loss - loss) < 1e-4, f"(c2) {rule}: ONNX loss matches PyTorch")

            flat = lambda t: [float(x) for x in t.detach().reshape(-1).tolist()]  # noqa: E731
            cases.append({
                "rule": rule, "order": order, "mu": MU, "lora_rank": LORA_RANK, "lora_alpha": LORA_ALPHA,
                "seed": SEED, "loss": loss, "loss_mu0_check": loss_mu0, "loss_original": loss_original,
                "params": {n: flat(params[n]) for n in sorted(params)},
                "grads": {n: flat(grads[n]) for n in sorted(grads)},
            })
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    description = (
        "Reference gradients from PyTorch autograd (float64) for the training graph of titanize-converted "
        "test/fixtures/llama.onnx (tools/gen_train_grads.py). Per case: convert with --rule <rule> --mu 0.5 "
        "--lora-rank 4 --lora-alpha 8 --seed 5 --target portable; A = the converted model's "
        "lora.layers.{L}.{p}.A ([in, r], MatMul layout); every B ([r, out]) replaced by "
        "float32(0.05*sin(0.37*i + 1.1*k)), i = flat row-major index, k = index of the B name in the "
        "string-sorted list of B names; mu = 0.5 per layer. Forward: LoRA y = xW + (alpha/r)(xA)B on q/k/v/o; "
        "LiZA(xq, xk, xv) on the q/k/v outputs (incl. LoRA, before rotary), mixed = (1-mu)*attn + mu*LiZA "
        "feeds o_proj. loss = mean over all B*T positions of cross-entropy(logits[b,t], labels[b,t]) "
        "(labels are already the next tokens, no shift; attention_mask all ones, position_ids 0..T-1, "
        "label weights all 1). params: every A and B used (flat, row-major); grads: dloss/d every A, B and "
        "tptt.layers.{L}.mag.mu (1-element list). loss_mu0_check: loss with mu = 0 and B = 0 (equals "
        "loss_original, the unconverted model's loss on the batch)."
    )
    out = {
        "description": description,
        "batch": {"input_ids": ids_l, "labels": labels_l, "attention_mask": mask_l, "position_ids": pos_l},
        "cases": cases,
    }
    text = json.dumps(out, separators=(",", ":"), allow_nan=False)
    if failures:
        print("\nFAILED checks:\n  " + "\n  ".join(failures))
        print(f"not writing {OUT_PATH.relative_to(ROOT)}")
        return 1
    OUT_PATH.write_text(text + "\n", encoding="utf-8")
    print(f"\nwrote {OUT_PATH.relative_to(ROOT)} ({len(text) + 1} bytes), all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

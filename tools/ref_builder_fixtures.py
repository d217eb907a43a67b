#!/usr/bin/env python3
"""PyTorch references for the builder fixtures (tools/gen-builder-fixtures.ts).

The three models are written by titanize's own IR builder, with operators that the
torch 1.13 exporter cannot produce (opset-23 Attention / RotaryEmbedding /
RMSNormalization, com.microsoft.GroupQueryAttention, model-local functions).  This
script does not run the ONNX graphs: it loads each model with python onnx, takes the
weights by initializer name (numpy_helper.to_array), and recomputes the forward pass in
PyTorch directly from the math, for fixed inputs.  It writes

    test/fixtures/<name>.ref.json       (same format as tools/gen_fixtures.py)
    test/fixtures/gqa_contrib.decode.ref.json  (batch 2, one new token after the past)
    test/fixtures/functions.else.ref.json      (the If node's else branch, flag = false)

Deterministic: running it twice yields byte-identical files.  Run with Debian's
interpreter (torch 1.13, onnx 1.12); gen-builder-fixtures runs it at the end:

    /usr/bin/python3 tools/ref_builder_fixtures.py
"""

import json
import math
import sys
from pathlib import Path

import onnx
import torch
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "test" / "fixtures"

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

# Mirrors the constants of tools/gen-builder-fixtures.ts.
CFG = dict(num_layers=2, hidden=64, num_heads=4, num_kv_heads=2, head_dim=16, intermediate=128,
           vocab=256, max_positions=64, rope_theta=10000.0, rms_norm_eps=1e-6)
B, T, PAD_LEFT, P = 2, 7, 2, 3


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

def load(name):
    model = onnx.load(str(OUT_DIR / f"{name}.onnx"))
    weights = {}
    for init in model.graph.initializer:
        weights[init.name] = torch.from_numpy(numpy_helper.to_array(init).copy())
    return model, weights


def nodes_of(graph, op_type, domain=""):
    return [n for n in graph.node if n.op_type == op_type and n.domain == domain]


def attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def expect(cond, what):
    if not cond:
        raise SystemExit(f"ref_builder_fixtures: unexpected model structure: {what}")


def check_rotary_caches(w):
    """The caches are read from the model, but must be the Llama half-split tables."""
    half = CFG["head_dim"] // 2
    inv_freq = 1.0 / (CFG["rope_theta"] ** (torch.arange(0, half, dtype=torch.float64) * 2 / CFG["head_dim"]))
    ang = torch.arange(CFG["max_positions"], dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = w["model.rotary_emb.cos_cache"], w["model.rotary_emb.sin_cache"]
    expect(tuple(cos.shape) == (CFG["max_positions"], half), "cos_cache shape")
    expect(torch.allclose(cos.double(), torch.cos(ang), atol=1e-6), "cos_cache values")
    expect(torch.allclose(sin.double(), torch.sin(ang), atol=1e-6), "sin_cache values")
    return cos, sin


# --------------------------------------------------------------------------
# The math
# --------------------------------------------------------------------------

def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def silu(x):
    return x * torch.sigmoid(x)


def swiglu(x, w, prefix):
    gate = x @ w[f"{prefix}.mlp.gate_proj.weight"]
    up = x @ w[f"{prefix}.mlp.up_proj.weight"]
    return (silu(gate) * up) @ w[f"{prefix}.mlp.down_proj.weight"]


def rope(x, cos_cache, sin_cache, position_ids, num_heads):
    """Non-interleaved (half-split, rotate_half) rotary on a 3-D [B, S, H*D] tensor."""
    b, s, _ = x.shape
    x = x.view(b, s, num_heads, -1)
    half = x.shape[-1] // 2
    cos = cos_cache[position_ids].unsqueeze(2)  # [B, S, 1, D/2]
    sin = sin_cache[position_ids].unsqueeze(2)
    x1, x2 = x[..., :half], x[..., half:]
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.reshape(b, s, -1)


def heads(x, num_heads):
    """[B, S, H*D] -> [B, H, S, D]."""
    b, s, _ = x.shape
    return x.view(b, s, num_heads, -1).transpose(1, 2)


def gqa_attention(q, k, v, allowed, num_heads, scale):
    """q [B,Hq,S,D], k/v [B,Hkv,L,D], allowed [B,1,S,L] bool -> [B, S, Hq*D]."""
    rep = num_heads // k.shape[1]
    k = k.repeat_interleave(rep, dim=1)  # query head h reads kv head h // rep
    v = v.repeat_interleave(rep, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = probs @ v
    b, _, s, _ = out.shape
    return out.transpose(1, 2).reshape(b, s, -1)


# --------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------

def hf_position_ids(attention_mask, past_length=0):
    position_ids = attention_mask.long().cumsum(-1) - 1
    position_ids.masked_fill_(attention_mask == 0, 1)
    return position_ids[:, past_length:]


def decoder_inputs(seed, batch=B, seq=T, past=0):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, CFG["vocab"], (batch, seq), generator=g, dtype=torch.int64)
    if past == 0:
        attention_mask = torch.ones(batch, seq, dtype=torch.int64)
        attention_mask[1, :PAD_LEFT] = 0  # left padding in the second row
        input_ids[1, :PAD_LEFT] = 0
    else:
        attention_mask = torch.ones(batch, past + seq, dtype=torch.int64)  # no padding
    pasts = []
    for _ in range(CFG["num_layers"] if past else 0):
        shape = (batch, CFG["num_kv_heads"], past, CFG["head_dim"])
        pasts += [torch.randn(shape, generator=g), torch.randn(shape, generator=g)]
    return input_ids, attention_mask, hf_position_ids(attention_mask, past), pasts


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------

def ref_attention23():
    model, w = load("attention23")
    g = model.graph
    expect(len(nodes_of(g, "Attention")) == CFG["num_layers"], "two Attention nodes")
    expect(len(nodes_of(g, "RotaryEmbedding")) == 2 * CFG["num_layers"], "four RotaryEmbedding nodes")
    for n in nodes_of(g, "Attention"):
        a = attrs(n)
        expect(a.get("is_causal") == 1 and a.get("q_num_heads") == 4 and a.get("kv_num_heads") == 2
               and "scale" not in a, f"Attention attributes {a}")
    for n in nodes_of(g, "RotaryEmbedding"):
        expect(attrs(n).get("interleaved", 0) == 0, "RotaryEmbedding is half-split")
    norms = nodes_of(g, "RMSNormalization")
    expect(len(norms) == 2 * CFG["num_layers"] + 1, "RMSNormalization count")
    eps = attrs(norms[0]).get("epsilon", 1e-5)
    expect(abs(eps - CFG["rms_norm_eps"]) < 1e-12, "RMSNormalization epsilon")
    cos_cache, sin_cache = check_rotary_caches(w)

    input_ids, attention_mask, position_ids, _ = decoder_inputs(seed=2300)
    nh, nkv = CFG["num_heads"], CFG["num_kv_heads"]
    i = torch.arange(T)
    causal = i[None, :] <= i[:, None]                                          # [S, L]
    key_ok = attention_mask.bool()[:, None, None, :] | torch.eye(T, dtype=torch.bool)  # [B,1,S,L]
    allowed = causal & key_ok
    with torch.no_grad():
        h = w["model.embed_tokens.weight"][input_ids]
        for layer in range(CFG["num_layers"]):
            p = f"model.layers.{layer}"
            x = rms_norm(h, w[f"{p}.input_layernorm.weight"], eps)
            q = rope(x @ w[f"{p}.self_attn.q_proj.weight"], cos_cache, sin_cache, position_ids, nh)
            k = rope(x @ w[f"{p}.self_attn.k_proj.weight"], cos_cache, sin_cache, position_ids, nkv)
            v = x @ w[f"{p}.self_attn.v_proj.weight"]
            attn = gqa_attention(heads(q, nh), heads(k, nkv), heads(v, nkv), allowed, nh,
                                 1.0 / math.sqrt(CFG["head_dim"]))
            h = h + attn @ w[f"{p}.self_attn.o_proj.weight"]
            h = h + swiglu(rms_norm(h, w[f"{p}.post_attention_layernorm.weight"], eps), w, p)
        logits = rms_norm(h, w["model.norm.weight"], eps) @ w["lm_head.weight"]
    return {
        "inputs": [tensor_entry("input_ids", input_ids), tensor_entry("attention_mask", attention_mask),
                   tensor_entry("position_ids", position_ids)],
        "outputs": [tensor_entry("logits", logits)],
        "config": dict(model_type="llama", **CFG, causal=True, has_past=False, past_length=0, batch=B,
                       seq_length=T, padding="left", opset=23, attention_op="Attention",
                       attn_mask="bool [B,1,T,T]: attention_mask[b,j] or i == j; is_causal=1"),
    }


def ref_gqa_contrib(batch, seq, past, seed, regime):
    """GroupQueryAttention on onnxruntime's CPU kernel has three regimes (CheckInputs):
    first prompt (seq == total_sequence_length), token generation (seq == 1, any batch),
    and "subsequent prompt" (seq > 1 after a past: batch 1 only).  No padding: a new token
    s sits at position seqlens_k + 1 - seq + s = past + s, and the causal frontier of
    query s is past + s."""
    model, w = load("gqa_contrib")
    g = model.graph
    gqas = nodes_of(g, "GroupQueryAttention", "com.microsoft")
    expect(len(gqas) == CFG["num_layers"], "two GroupQueryAttention nodes")
    expect(gqas[0].input[1] == "" and gqas[0].input[2] == "", "layer 0 uses packed QKV")
    expect(gqas[1].input[1] != "" and gqas[1].input[2] != "", "layer 1 uses separate q/k/v")
    for n in gqas:
        a = attrs(n)
        expect(a.get("num_heads") == 4 and a.get("kv_num_heads") == 2 and a.get("do_rotary") == 1
               and a.get("rotary_interleaved", 0) == 0, f"GroupQueryAttention attributes {a}")
        scale = a.get("scale", 1.0 / math.sqrt(CFG["head_dim"]))
    cos_cache, sin_cache = check_rotary_caches(w)
    eps = CFG["rms_norm_eps"]  # the decomposed RMSNorm's Add constant

    input_ids, attention_mask, position_ids, pasts = decoder_inputs(seed, batch=batch, seq=seq, past=past)
    nh, nkv, d = CFG["num_heads"], CFG["num_kv_heads"], CFG["head_dim"]
    i = torch.arange(seq)[:, None]
    j = torch.arange(past + seq)[None, :]
    allowed = (j <= i + past)[None, None, :, :].expand(batch, 1, seq, past + seq)
    presents = []
    with torch.no_grad():
        h = w["model.embed_tokens.weight"][input_ids]
        for layer in range(CFG["num_layers"]):
            p = f"model.layers.{layer}"
            x = rms_norm(h, w[f"{p}.input_layernorm.weight"], eps)
            if layer == 0:
                qkv = x @ w[f"{p}.self_attn.qkv_proj.weight"]
                q, k, v = qkv.split([nh * d, nkv * d, nkv * d], dim=-1)
            else:
                q = x @ w[f"{p}.self_attn.q_proj.weight"]
                k = x @ w[f"{p}.self_attn.k_proj.weight"]
                v = x @ w[f"{p}.self_attn.v_proj.weight"]
            q = rope(q, cos_cache, sin_cache, position_ids, nh)
            k = rope(k, cos_cache, sin_cache, position_ids, nkv)
            key = torch.cat([pasts[2 * layer], heads(k, nkv)], dim=2)
            value = torch.cat([pasts[2 * layer + 1], heads(v, nkv)], dim=2)
            presents += [key, value]
            attn = gqa_attention(heads(q, nh), key, value, allowed, nh, scale)
            h = h + attn @ w[f"{p}.self_attn.o_proj.weight"]
            h = h + swiglu(rms_norm(h, w[f"{p}.post_attention_layernorm.weight"], eps), w, p)
        logits = rms_norm(h, w["model.norm.weight"], eps) @ w["lm_head.weight"]
    past_in, present_out = [], []
    for layer in range(CFG["num_layers"]):
        past_in += [f"past_key_values.{layer}.key", f"past_key_values.{layer}.value"]
        present_out += [f"present.{layer}.key", f"present.{layer}.value"]
    return {
        "inputs": [tensor_entry("input_ids", input_ids), tensor_entry("attention_mask", attention_mask)]
        + [tensor_entry(n, t) for n, t in zip(past_in, pasts)],
        "outputs": [tensor_entry("logits", logits)] + [tensor_entry(n, t) for n, t in zip(present_out, presents)],
        "config": dict(model_type="llama", **CFG, causal=True, has_past=True, past_length=past, batch=batch,
                       seq_length=seq, padding="none", opset=17, attention_op="com.microsoft.GroupQueryAttention",
                       packed_qkv_layers=[0], gqa_regime=regime),
    }


def function_attribute_defaults(fn):
    """FunctionProto.attribute_proto (field 11, IR 9) is unknown to onnx 1.12: decode it by hand."""
    out = {}
    for field in fn.UnknownFields():
        if field.field_number == 11:
            a = onnx.AttributeProto.FromString(field.data)
            out[a.name] = helper.get_attribute_value(a)
    return out


def ref_functions():
    model, w = load("functions")
    g = model.graph
    fns = {(f.domain, f.name): f for f in model.functions}
    rms_fn = fns[("titanize.test", "RMSNorm")]
    expect(("titanize.test", "MLP") in fns, "function MLP")
    defaults = function_attribute_defaults(rms_fn)
    expect("epsilon" in defaults, "RMSNorm has a default epsilon (attribute_proto)")
    expect(any(a.ref_attr_name == "epsilon" for n in rms_fn.node for a in n.attribute),
           "RMSNorm reads epsilon through ref_attr_name")
    calls = nodes_of(g, "RMSNorm", "titanize.test")
    expect(len(calls) == 2, "two RMSNorm calls in the main graph")
    eps0 = attrs(calls[0]).get("epsilon", defaults["epsilon"])
    eps1 = attrs(calls[1]).get("epsilon", defaults["epsilon"])
    expect("epsilon" not in attrs(calls[0]) and "epsilon" in attrs(calls[1]), "default, then explicit epsilon")
    if_node = nodes_of(g, "If")[0]
    branches = attrs(if_node)
    then_call = nodes_of(branches["then_branch"], "RMSNorm", "titanize.test")
    expect(len(then_call) == 1 and "epsilon" not in attrs(then_call[0]), "then branch calls RMSNorm (default eps)")
    expect([n.op_type for n in branches["else_branch"].node] == ["Mul"], "else branch is one Mul")

    gen = torch.Generator().manual_seed(2500)
    x = torch.randn(B, T, 32, generator=gen)
    with torch.no_grad():
        h = x @ w["in_proj.weight"]
        n0 = rms_norm(h, w["norm0.weight"], eps0)
        h2 = h + silu(n0 @ w["mlp.fc1.weight"]) @ w["mlp.fc2.weight"]
        y_pre = rms_norm(h2, w["norm1.weight"], eps1) @ w["out_proj.weight"]
        y_then = rms_norm(y_pre, w["out_norm.weight"], defaults["epsilon"])
        y_else = y_pre * w["else_scale"]
    config = dict(model_type="functions", num_layers=1, num_heads=0, num_kv_heads=0, head_dim=0, hidden=64,
                  vocab=0, causal=False, has_past=False, past_length=0, batch=B, seq_length=T, padding="none",
                  opset=17, function_domain="titanize.test", epsilon_default=defaults["epsilon"],
                  epsilon_explicit=eps1)
    then_ref = {
        "inputs": [tensor_entry("x", x), tensor_entry("flag", torch.tensor(True))],
        "outputs": [tensor_entry("y", y_then)],
        "config": dict(config, branch="then"),
    }
    else_ref = {
        "inputs": [tensor_entry("x", x), tensor_entry("flag", torch.tensor(False))],
        "outputs": [tensor_entry("y", y_else)],
        "config": dict(config, branch="else"),
    }
    return then_ref, else_ref


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

DTYPE_NAMES = {torch.float32: "float32", torch.int64: "int64", torch.bool: "bool"}


def tensor_entry(name, t):
    t = t.detach().contiguous()
    dtype = DTYPE_NAMES[t.dtype]
    flat = t.reshape(-1).tolist()
    if dtype == "float32":
        data = [float(v) for v in flat]
    elif dtype == "int64":
        data = [int(v) for v in flat]
    else:
        data = [bool(v) for v in flat]
    return {"name": name, "dtype": dtype, "dims": list(t.shape), "data": data}


def write_json(path, obj):
    path.write_text(json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n", encoding="utf-8")


def main():
    write_json(OUT_DIR / "attention23.ref.json", ref_attention23())
    # B=1: onnxruntime's CPU GroupQueryAttention refuses seq > 1 after a past for batch > 1.
    write_json(OUT_DIR / "gqa_contrib.ref.json", ref_gqa_contrib(1, T, P, 2400, "subsequent_prompt"))
    write_json(OUT_DIR / "gqa_contrib.decode.ref.json", ref_gqa_contrib(B, 1, P, 2401, "token_generation"))
    then_ref, else_ref = ref_functions()
    write_json(OUT_DIR / "functions.ref.json", then_ref)
    write_json(OUT_DIR / "functions.else.ref.json", else_ref)
    return 0


if __name__ == "__main__":
    sys.exit(main())

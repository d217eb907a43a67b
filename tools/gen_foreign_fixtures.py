#!/usr/bin/env python3
"""Generate "foreign" real-exporter ONNX fixtures for titanize.

Unlike tools/gen_fixtures.py (hand-written copies of the Hugging Face modeling
code), these models are the library modules themselves, exported as they are:
``torch.nn.TransformerEncoder`` / ``TransformerDecoderLayer`` (whose attention is
``torch.nn.MultiheadAttention`` → ``F.multi_head_attention_forward``: packed
in-projection, ``chunk``, ``[T, B*H, d]`` head layout, ``bmm`` / ``baddbmm``),
torchvision's ``VisionTransformer`` and ``SwinTransformer`` (window attention
with a relative position bias and the shifted-window mask), and the Llama of
gen_fixtures.py exported at opset 14 instead of 17.  Weights are random
(seeded, O(1) activations); the point is the graph the real code exports.

    test/fixtures/foreign/<name>.onnx
    test/fixtures/foreign/<name>.ref.json

The ref JSON format is gen_fixtures.py's; ``config`` adds ``family``,
``exporter``, ``opset`` and ``expected_sites`` (every softmax attention in
data-flow order) and ``rejected_softmaxes`` (softmaxes that are not attention).

The output is deterministic: running the script twice yields byte-identical
files.  Run with Debian's interpreter (torch 1.13, torchvision 0.14, onnx 1.12):

    /usr/bin/python3 tools/gen_foreign_fixtures.py

nn.MultiheadAttention fast path
-------------------------------
In eval mode torch 1.13's ``nn.TransformerEncoderLayer`` / ``nn.TransformerEncoder``
and ``nn.MultiheadAttention`` may dispatch to fused kernels
(``torch._transformer_encoder_layer_fwd``, ``torch._native_multi_head_attention``)
that the ONNX exporter cannot decompose.  Both fast paths require, among other
things (torch/nn/modules/transformer.py, activation.py), ``batch_first=True`` and
that NOT (``torch.is_grad_enabled()`` and some projection weight
``requires_grad``).  ``torch.onnx.export`` does not disable autograd, so we
export (and compute the references) under ``torch.enable_grad()`` with every
parameter keeping its default ``requires_grad=True``; ``export()`` asserts both.
That is the same condition a user hits when exporting a freshly loaded model
without ``torch.no_grad()``, and it makes the tracer record the standard
``F.multi_head_attention_forward`` decomposition.  (The ``nn.Transformer*``
fixtures are also ``batch_first=False``, which disables the fast paths on its
own; torchvision's ViT uses ``batch_first=True`` with an even head count, so for
it the grad condition is what matters.)  ``check_graph()`` rejects any graph with
a non-default-domain op or an ``ATen`` node and requires Softmax and MatMul.
"""

import hashlib
import json
import math
import sys
import warnings
from collections import Counter
from pathlib import Path

import onnx
import torch
import torch.nn as nn
import torchvision
from torchvision.models.swin_transformer import ShiftedWindowAttention
from torchvision.models.vision_transformer import VisionTransformer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_fixtures as gf  # noqa: E402  (also sets 1 thread + deterministic algorithms)

OUT_DIR = ROOT / "test" / "fixtures" / "foreign"
EXPORTER = f"torch.onnx (TorchScript) {torch.__version__}"

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


# --------------------------------------------------------------------------
# Deterministic init (gen_fixtures.init_weights_ extended to the parameters of
# nn.MultiheadAttention, Conv2d, ViT and Swin)
# --------------------------------------------------------------------------

def init_foreign_(module: nn.Module, seed: int) -> None:
    """Every parameter is set from a seeded generator, in module order:
    matrices ~ N(0, 1/fan_in), biases ~ N(0, 0.01), LayerNorm scale 1 ± 0.1,
    embeddings / class token / position embeddings / Swin bias tables ~ N(0, 1).
    Activations stay O(1) and attention is far from uniform.  Fails if some
    parameter is left untouched."""
    g = torch.Generator().manual_seed(seed)
    done = set()

    def fill(p, t):
        if p is not None and id(p) not in done:
            done.add(id(p))
            p.copy_(t)

    def randn(p, scale=1.0):
        return torch.randn(p.shape, generator=g) * scale

    with torch.no_grad():
        for _, m in module.named_modules():
            if isinstance(m, nn.Embedding):
                fill(m.weight, randn(m.weight))
            elif isinstance(m, nn.Linear):
                fill(m.weight, randn(m.weight, 1 / math.sqrt(m.in_features)))
                if m.bias is not None:
                    fill(m.bias, randn(m.bias, 0.1))
            elif isinstance(m, nn.MultiheadAttention):  # out_proj is an nn.Linear child
                fill(m.in_proj_weight, randn(m.in_proj_weight, 1 / math.sqrt(m.embed_dim)))
                if m.in_proj_bias is not None:
                    fill(m.in_proj_bias, randn(m.in_proj_bias, 0.1))
            elif isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
                fill(m.weight, randn(m.weight, 1 / math.sqrt(fan_in)))
                if m.bias is not None:
                    fill(m.bias, randn(m.bias, 0.1))
            elif isinstance(m, nn.LayerNorm):
                fill(m.weight, 1.0 + randn(m.weight, 0.1))
                fill(m.bias, randn(m.bias, 0.1))
            elif isinstance(m, VisionTransformer):
                fill(m.class_token, randn(m.class_token))
                fill(m.encoder.pos_embedding, randn(m.encoder.pos_embedding))
            elif isinstance(m, ShiftedWindowAttention):  # qkv / proj are nn.Linear children
                fill(m.relative_position_bias_table, randn(m.relative_position_bias_table))
    missed = [n for n, p in module.named_parameters() if id(p) not in done]
    assert not missed, f"parameters left uninitialised: {missed}"


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------

D_MODEL, N_HEAD, D_FF, VOCAB = 32, 4, 64, 64


def causal_mask(T):
    # nn.Transformer.generate_square_subsequent_mask(T), written out so that T is
    # traced from the input shape (the static method would be traced the same way)
    return torch.triu(torch.full((T, T), float("-inf")), diagonal=1)


def encoder_layer():
    return nn.TransformerEncoderLayer(d_model=D_MODEL, nhead=N_HEAD, dim_feedforward=D_FF,
                                      dropout=0.0, batch_first=False)


class MhaEncoder(nn.Module):
    """Embedding → [T, B, E] → nn.TransformerEncoder (2 post-LN layers) → [B, T, E]."""

    def __init__(self, causal=False, lm_head=False):
        super().__init__()
        self.causal = causal
        self.embed = nn.Embedding(VOCAB, D_MODEL)
        self.encoder = nn.TransformerEncoder(encoder_layer(), num_layers=2)
        self.lm_head = nn.Linear(D_MODEL, VOCAB) if lm_head else None

    def forward(self, input_ids):
        x = self.embed(input_ids).transpose(0, 1)  # sequence first
        mask = causal_mask(input_ids.shape[1]) if self.causal else None
        x = self.encoder(x, mask=mask)
        x = x.transpose(0, 1)
        return self.lm_head(x) if self.lm_head is not None else x


class MhaDecoder(nn.Module):
    """Embedding → nn.TransformerDecoderLayer (causal self-attention + cross-attention
    over encoder_hidden_states) → [B, T, E]."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, D_MODEL)
        self.layer = nn.TransformerDecoderLayer(d_model=D_MODEL, nhead=N_HEAD, dim_feedforward=D_FF,
                                                dropout=0.0, batch_first=False)

    def forward(self, input_ids, encoder_hidden_states):
        x = self.embed(input_ids).transpose(0, 1)
        memory = encoder_hidden_states.transpose(0, 1)
        x = self.layer(x, memory, tgt_mask=causal_mask(input_ids.shape[1]))
        return x.transpose(0, 1)


# --------------------------------------------------------------------------
# Export and checks
# --------------------------------------------------------------------------

def forward(model, args):
    """The reference forward, under the same conditions as the export (grad on)."""
    with torch.enable_grad():
        out = model(*args)
    if isinstance(out, torch.Tensor):
        return [out.detach()]
    return [o.detach() for o in out]


def export(model, args, path, input_names, output_names, dynamic_axes, opset):
    assert not model.training
    assert all(p.requires_grad for p in model.parameters()), "fast-path guard: parameters must require grad"
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shape arithmetic are expected
        torch.onnx.export(
            model,
            tuple(args),
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            do_constant_folding=True,
            export_params=True,
        )
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    return m


def check_graph(m, name, opset, n_softmax):
    ops = [n.op_type for n in m.graph.node]
    foreign = [f"{n.domain}::{n.op_type}" for n in m.graph.node if n.domain not in ("", "ai.onnx")]
    assert not foreign, f"{name}: non-default-domain ops {foreign}"
    assert "ATen" not in ops, f"{name}: ATen fallback in graph"
    assert "MatMul" in ops, f"{name}: no MatMul"
    assert ops.count("Softmax") == n_softmax, f"{name}: {ops.count('Softmax')} Softmax, expected {n_softmax}"
    decl = {o.domain: o.version for o in m.opset_import}
    assert decl.get("", decl.get("ai.onnx")) == opset, f"{name}: opset {decl}"
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    return Counter(ops)


def chain_to_softmax(m, index):
    """Op types on the data path into the index-th Softmax, back to the projection
    MatMul / Gemm.  Only activations are followed: tensors that depend on a graph
    input other than through Shape (so shape arithmetic, masks built from shapes and
    weight slices are skipped); the walk takes the first such input of each node and
    stops at the first MatMul / Gemm with a non-activation (weight) operand."""
    graph_inputs = {i.name for i in m.graph.input} - {t.name for t in m.graph.initializer}
    act, producer = set(graph_inputs), {}
    for n in m.graph.node:
        for o in n.output:
            producer[o] = n
        if n.op_type != "Shape" and any(i in act for i in n.input):
            act.update(n.output)
    node = [n for n in m.graph.node if n.op_type == "Softmax"][index]
    chain = [node]
    while True:
        data = [i for i in node.input if i in act and i in producer]
        if not data:
            break
        node = producer[data[0]]
        chain.append(node)
        if node.op_type in ("MatMul", "Gemm") and any(i not in act for i in node.input):
            break
    return " → ".join(n.op_type for n in reversed(chain))


def site(kind, heads, head_dim, causal, bias=None, kv_heads=None, padding_mask=False, **extra):
    """One softmax attention.  bias: null, or the additive terms on the scores other than
    the causal / padding mask, joined by '+' in the order they are added."""
    return dict({"kind": kind, "num_heads": heads, "num_kv_heads": kv_heads or heads, "head_dim": head_dim,
                 "causal": causal, "bias": bias, "padding_mask": padding_mask}, **extra)


def write_fixture(name, model, args, input_names, output_names, dynamic_axes, opset, config, written):
    outs = forward(model, args)
    path = OUT_DIR / f"{name}.onnx"
    m = export(model, args, path, input_names, output_names, dynamic_axes, opset)
    sites = config["expected_sites"]
    hist = check_graph(m, name, opset, len(sites) + config["rejected_softmaxes"])
    ref = {
        "inputs": [gf.tensor_entry(n, t) for n, t in zip(input_names, args)],
        "outputs": [gf.tensor_entry(n, t) for n, t in zip(output_names, outs)],
        "config": dict(config, exporter=EXPORTER, opset=opset),
    }
    gf.write_json(OUT_DIR / f"{name}.ref.json", ref)
    written += [path, OUT_DIR / f"{name}.ref.json"]
    print(f"== {name} (opset {opset}): {sum(hist.values())} nodes")
    print("   " + ", ".join(f"{k} {v}" for k, v in sorted(hist.items(), key=lambda kv: (-kv[1], kv[0]))))
    for i in range(len(sites)):
        print(f"   softmax {i} ({sites[i]['kind']}): {chain_to_softmax(m, i)}")
    return outs


def mha_config(model_type, causal, sites, batch, seq, num_layers, **extra):
    return dict({"family": "torch.nn.MultiheadAttention", "model_type": model_type, "num_layers": num_layers,
                 "num_heads": N_HEAD, "num_kv_heads": N_HEAD, "head_dim": D_MODEL // N_HEAD,
                 "hidden": D_MODEL, "vocab": VOCAB, "causal": causal, "has_past": False, "past_length": 0,
                 "batch": batch, "seq_length": seq, "padding": "none", "expected_sites": sites,
                 "rejected_softmaxes": 0}, **extra)


BT = {0: "batch_size", 1: "sequence_length"}


def gen_mha_encoder(written, causal):
    name, opset, seed = ("mha_causal", 17, 5678) if causal else ("mha_encoder", 14, 6789)
    torch.manual_seed(seed)
    model = MhaEncoder(causal=causal, lm_head=causal).eval()
    init_foreign_(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    B, T = 2, 7
    input_ids = torch.randint(0, VOCAB, (B, T), generator=g, dtype=torch.int64)
    out = "logits" if causal else "last_hidden_state"
    d = D_MODEL // N_HEAD
    write_fixture(name, model, [input_ids], ["input_ids"], [out], {"input_ids": BT, out: BT}, opset,
                  mha_config("nn.TransformerEncoder", causal, [site("self", N_HEAD, d, causal) for _ in range(2)],
                             B, T, 2, norm_first=False, activation="relu",
                             mask="nn.Transformer.generate_square_subsequent_mask (float -inf)" if causal else None),
                  written)


def gen_mha_decoder(written):
    name, opset, seed = "mha_decoder", 14, 7890
    torch.manual_seed(seed)
    model = MhaDecoder().eval()
    init_foreign_(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    B, T, S = 2, 5, 7
    input_ids = torch.randint(0, VOCAB, (B, T), generator=g, dtype=torch.int64)
    memory = torch.randn(B, S, D_MODEL, generator=g)
    d = D_MODEL // N_HEAD
    write_fixture(name, model, [input_ids, memory], ["input_ids", "encoder_hidden_states"], ["last_hidden_state"],
                  {"input_ids": BT, "encoder_hidden_states": {0: "batch_size", 1: "encoder_sequence_length"},
                   "last_hidden_state": BT}, opset,
                  mha_config("nn.TransformerDecoderLayer", True,
                             [site("self", N_HEAD, d, True), site("cross", N_HEAD, d, False, kv_source="encoder_hidden_states")],
                             B, T, 1, encoder_seq_length=S, norm_first=False, activation="relu",
                             mask="tgt_mask = nn.Transformer.generate_square_subsequent_mask (float -inf)"),
                  written)


def gen_vit(written):
    name, opset, seed = "vit", 14, 8901
    cfg = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10,
               dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(seed)
    model = torchvision.models.VisionTransformer(**cfg).eval()
    init_foreign_(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    B = 2
    pixels = torch.randn(B, 3, 32, 32, generator=g)
    d = cfg["hidden_dim"] // cfg["num_heads"]
    tokens = (32 // 8) ** 2 + 1
    write_fixture(name, model, [pixels], ["pixel_values"], ["logits"],
                  {"pixel_values": {0: "batch_size"}, "logits": {0: "batch_size"}}, opset,
                  {"family": "torchvision.vit", "model_type": "vit", "torchvision": torchvision.__version__,
                   "torchvision_args": cfg, "num_layers": 2, "num_heads": 2, "num_kv_heads": 2, "head_dim": d,
                   "hidden": 32, "causal": False, "has_past": False, "past_length": 0, "batch": B,
                   "seq_length": None, "tokens": tokens,
                   "expected_sites": [site("self", 2, d, False, tokens=tokens) for _ in range(2)],
                   "rejected_softmaxes": 0},
                  written)


def gen_swin(written):
    # 32×32 is the smallest input with patch 4 / window 4 where the second block really
    # shifts: torchvision sets the shift to 0 when the window covers the feature map
    # (16×16 → 4×4 patches → a single window, no shift, no mask).
    name, opset, seed = "swin", 17, 9012
    cfg = dict(patch_size=[4, 4], embed_dim=16, depths=[2], num_heads=[2], window_size=[4, 4], num_classes=10,
               stochastic_depth_prob=0.0)
    torch.manual_seed(seed)
    model = torchvision.models.SwinTransformer(**cfg).eval()
    init_foreign_(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    B, side = 2, 32
    pixels = torch.randn(B, 3, side, side, generator=g)
    d = 16 // 2
    grid = side // 4
    win = dict(window_tokens=16, num_windows=(grid // 4) ** 2)
    write_fixture(name, model, [pixels], ["pixel_values"], ["logits"],
                  {"pixel_values": {0: "batch_size"}, "logits": {0: "batch_size"}}, opset,
                  {"family": "torchvision.swin", "model_type": "swin", "torchvision": torchvision.__version__,
                   "torchvision_args": cfg, "image_size": side, "num_layers": 2, "num_heads": 2, "num_kv_heads": 2,
                   "head_dim": d, "hidden": 16, "causal": False, "has_past": False, "past_length": 0, "batch": B,
                   "seq_length": None,
                   "expected_sites": [
                       site("self", 2, d, False, "relative_position", shift=[0, 0], **win),
                       site("self", 2, d, False, "relative_position+shifted_window_mask", shift=[2, 2], **win),
                   ],
                   "rejected_softmaxes": 0},
                  written)


def gen_llama14(written):
    # Build exactly gen_fixtures.py's `llama` model: run its gen_llama() with the export
    # step replaced by a capture of (model, config, data seed).
    captured = {}

    def capture(name, lm, cfg, data_seed, written):
        captured.update(lm=lm, cfg=cfg, data_seed=data_seed)

    orig = gf.export_decoder_pair
    gf.export_decoder_pair = capture
    try:
        gf.gen_llama([])
    finally:
        gf.export_decoder_pair = orig
    lm, cfg = captured["lm"].eval(), captured["cfg"]
    input_ids, attention_mask, position_ids, _ = gf.decoder_inputs(captured["data_seed"], cfg.vocab)
    names = ["input_ids", "attention_mask", "position_ids"]
    sites = [site("self", cfg.num_heads, cfg.head_dim, True, kv_heads=cfg.num_kv_heads, padding_mask=True,
                  rope=True) for _ in range(cfg.num_layers)]
    config = dict(cfg.__dict__, family="hf-llama", causal=True, has_past=False, past_length=0,
                  batch=int(input_ids.shape[0]), seq_length=int(input_ids.shape[1]), padding="left",
                  same_model_as="llama.onnx", expected_sites=sites, rejected_softmaxes=0)
    outs = write_fixture("llama14", lm, [input_ids, attention_mask, position_ids], names, ["logits"],
                         {n: BT for n in names + ["logits"]}, 14, config, written)
    # Same model as the opset-17 fixture: identical initializers and inputs; the logits
    # agree to float32 rounding (the saved ones may come from another CPU's kernels).
    llama17 = ROOT / "test" / "fixtures" / "llama.onnx"
    if llama17.exists():
        a = {t.name: t.SerializeToString() for t in onnx.load(str(llama17)).graph.initializer}
        b = {t.name: t.SerializeToString() for t in onnx.load(str(OUT_DIR / "llama14.onnx")).graph.initializer}
        assert a == b, "llama14.onnx weights differ from llama.onnx"
        saved = json.loads((ROOT / "test" / "fixtures" / "llama.ref.json").read_text())
        assert [t["data"] for t in saved["inputs"]] == [gf.tensor_entry(n, t)["data"] for n, t in
                                                         zip(names, [input_ids, attention_mask, position_ids])]
        ref = torch.tensor(saved["outputs"][0]["data"]).reshape(saved["outputs"][0]["dims"])
        assert (ref - outs[0]).abs().max().item() <= 1e-5 * max(1.0, ref.abs().max().item()), "llama14 != llama"


def main():
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    gen_mha_encoder(written, causal=False)
    gen_mha_encoder(written, causal=True)
    gen_mha_decoder(written)
    gen_vit(written)
    gen_swin(written)
    gen_llama14(written)
    for p in written:
        data = p.read_bytes()
        print(f"{p.relative_to(ROOT)}  {len(data):>8} bytes  sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Generate "foreign" real-exporter ONNX fixtures for titanize.

Unlike tools/gen_fixtures.py (hand-written copies of the Hugging Face modeling
code), these models are the library modules themselves, exported as they are:
``torch.nn.TransformerEncoder`` / ``TransformerDecoderLayer`` (whose attention is
``torch.nn.MultiheadAttention`` → ``F.multi_head_attention_forward``: packed
in-projection, ``chunk``, ``[T, B*H, d]`` head layout, ``bmm`` / ``baddbmm``),
torchvision's ``VisionTransformer`` and ``SwinTransformer`` (window attention
with a relative position bias and the shifted-window mask), and the Llama of
gen_fixtures.py exported at opset 14 instead of 17.  More decoders are, like
gen_fixtures.py's, faithful copies of the Hugging Face eager modeling code: GPT-J
(interleaved partial rotary, ``rotate_every_two``; causal ``torch.where`` before the
scale division), Phi-2 (``rotate_half`` partial rotary, ``partial_rotary_factor``
0.5) and a BART decoder with its self- and cross-attention KV caches, exported as
Optimum's decoder_model / decoder_with_past_model pair (``encdec_decoder``,
``encdec_decoder_past``).  Weights are random (seeded, O(1) activations); the point
is the graph the real code exports.

    test/fixtures/foreign/<name>.onnx
    test/fixtures/foreign/<name>.ref.json

The ref JSON format is gen_fixtures.py's; ``config`` adds ``family``,
``exporter``, ``opset`` and ``expected_sites`` (every softmax attention in
data-flow order; rotary sites add ``rope``, ``rotary`` and ``rotary_dim``; a site
with ``found: false`` is one titanize's discovery does not find yet, ``gap`` says why)
and ``rejected_softmaxes`` (softmaxes that are not attention).

The output is deterministic: running the script twice yields byte-identical
files.  Run with Debian's interpreter (torch 1.13, torchvision 0.14, onnx 1.12):

    /usr/bin/python3 tools/gen_foreign_fixtures.py            # every family
    /usr/bin/python3 tools/gen_foreign_fixtures.py encdec     # only these families

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

import argparse
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
# GPT-J (transformers ~4.36 eager GPTJAttention), written out like gen_fixtures.py's
# models: separate bias-free q/k/v/out projections, interleaved partial rotary
# (rotate_every_two on the first rotary_dim features, q/k still [B, T, H, d]),
# causal mask from the bool `bias` buffer by torch.where, then the scale division.
# --------------------------------------------------------------------------

def create_sinusoidal_positions(num_pos, dim):
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim, 2, dtype=torch.int64) / dim))
    sinusoid_inp = torch.einsum("i , j -> i j", torch.arange(num_pos, dtype=torch.int64).float(), inv_freq).float()
    return torch.cat((torch.sin(sinusoid_inp), torch.cos(sinusoid_inp)), dim=1)


def get_embed_positions(embed_positions, position_ids):
    # the traced branch of GPTJAttention.forward (`torch.jit.is_tracing()`)
    return embed_positions.to(position_ids.device).repeat(position_ids.shape[0], 1, 1)


def rotate_every_two(x):
    x1 = x[:, :, :, ::2]
    x2 = x[:, :, :, 1::2]
    x = torch.stack((-x2, x1), dim=-1)
    return x.flatten(-2)  # in einsum notation: rearrange(x, '... d j -> ... (d j)')


def gptj_apply_rotary_pos_emb(tensor, sin, cos):
    sin = torch.repeat_interleave(sin[:, :, None, :], 2, 3)
    cos = torch.repeat_interleave(cos[:, :, None, :], 2, 3)
    return (tensor * cos) + (rotate_every_two(tensor) * sin)


class GPTJAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        max_positions = cfg.max_position_embeddings
        self.register_buffer(
            "bias",
            torch.tril(torch.ones((max_positions, max_positions), dtype=torch.bool)).view(
                1, 1, max_positions, max_positions),
            persistent=False,
        )
        self.register_buffer("masked_bias", torch.tensor(-1e9), persistent=False)
        self.attn_dropout = nn.Dropout(0.0)
        self.resid_dropout = nn.Dropout(0.0)
        self.embed_dim = cfg.hidden
        self.num_attention_heads = cfg.num_heads
        self.head_dim = self.embed_dim // self.num_attention_heads
        self.scale_attn = torch.sqrt(torch.tensor(self.head_dim, dtype=torch.float32)).to(torch.get_default_dtype())
        self.k_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=False)
        self.v_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=False)
        self.q_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=False)
        self.out_proj = nn.Linear(self.embed_dim, self.embed_dim, bias=False)
        self.rotary_dim = cfg.rotary_dim
        pos_embd_dim = self.rotary_dim or self.embed_dim
        self.embed_positions = create_sinusoidal_positions(max_positions, pos_embd_dim)  # a plain attribute

    def _split_heads(self, tensor, num_attention_heads, attn_head_size, rotary):
        new_shape = tensor.size()[:-1] + (num_attention_heads, attn_head_size)
        tensor = tensor.view(new_shape)
        if rotary:
            return tensor
        return tensor.permute(0, 2, 1, 3)  # (batch, head, seq_length, head_features)

    def _merge_heads(self, tensor, num_attention_heads, attn_head_size):
        tensor = tensor.permute(0, 2, 1, 3).contiguous()
        new_shape = tensor.size()[:-2] + (num_attention_heads * attn_head_size,)
        return tensor.view(new_shape)

    def _attn(self, query, key, value, attention_mask=None):
        query_length, key_length = query.size(-2), key.size(-2)
        causal_mask = self.bias[:, :, key_length - query_length: key_length, :key_length]
        query = query.to(torch.float32)
        key = key.to(torch.float32)
        attn_weights = torch.matmul(query, key.transpose(-1, -2))
        mask_value = torch.finfo(attn_weights.dtype).min
        mask_value = torch.tensor(mask_value, dtype=attn_weights.dtype).to(attn_weights.device)
        attn_weights = torch.where(causal_mask, attn_weights, mask_value)
        attn_weights = attn_weights / self.scale_attn
        if attention_mask is not None:
            attn_weights = attn_weights + attention_mask
        attn_weights = nn.functional.softmax(attn_weights, dim=-1)
        attn_weights = attn_weights.to(value.dtype)
        attn_weights = self.attn_dropout(attn_weights)
        attn_output = torch.matmul(attn_weights, value)
        return attn_output, attn_weights

    def forward(self, hidden_states, attention_mask, position_ids):
        query = self.q_proj(hidden_states)
        key = self.k_proj(hidden_states)
        value = self.v_proj(hidden_states)

        query = self._split_heads(query, self.num_attention_heads, self.head_dim, True)
        key = self._split_heads(key, self.num_attention_heads, self.head_dim, True)
        value = self._split_heads(value, self.num_attention_heads, self.head_dim, False)

        embed_positions = get_embed_positions(self.embed_positions, position_ids)
        repeated_position_ids = position_ids.unsqueeze(-1).repeat(1, 1, embed_positions.shape[-1])
        sincos = torch.gather(embed_positions, 1, repeated_position_ids)
        sin, cos = torch.split(sincos, sincos.shape[-1] // 2, dim=-1)

        if self.rotary_dim is not None:
            k_rot = key[:, :, :, : self.rotary_dim]
            k_pass = key[:, :, :, self.rotary_dim:]
            q_rot = query[:, :, :, : self.rotary_dim]
            q_pass = query[:, :, :, self.rotary_dim:]
            k_rot = gptj_apply_rotary_pos_emb(k_rot, sin, cos)
            q_rot = gptj_apply_rotary_pos_emb(q_rot, sin, cos)
            key = torch.cat([k_rot, k_pass], dim=-1)
            query = torch.cat([q_rot, q_pass], dim=-1)
        else:
            key = gptj_apply_rotary_pos_emb(key, sin, cos)
            query = gptj_apply_rotary_pos_emb(query, sin, cos)

        key = key.permute(0, 2, 1, 3)
        query = query.permute(0, 2, 1, 3)

        attn_output, _ = self._attn(query, key, value, attention_mask)
        attn_output = self._merge_heads(attn_output, self.num_attention_heads, self.head_dim)
        attn_output = self.out_proj(attn_output)
        attn_output = self.resid_dropout(attn_output)
        return attn_output


class GPTJMLP(nn.Module):
    def __init__(self, intermediate_size, cfg):
        super().__init__()
        self.fc_in = nn.Linear(cfg.hidden, intermediate_size)
        self.fc_out = nn.Linear(intermediate_size, cfg.hidden)
        self.act = gf.NewGELUActivation()  # activation_function "gelu_new"
        self.dropout = nn.Dropout(0.0)

    def forward(self, hidden_states):
        hidden_states = self.fc_in(hidden_states)
        hidden_states = self.act(hidden_states)
        hidden_states = self.fc_out(hidden_states)
        return self.dropout(hidden_states)


class GPTJBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_epsilon)
        self.attn = GPTJAttention(cfg)
        self.mlp = GPTJMLP(cfg.intermediate, cfg)

    def forward(self, hidden_states, attention_mask, position_ids):
        residual = hidden_states
        hidden_states = self.ln_1(hidden_states)
        attn_output = self.attn(hidden_states, attention_mask, position_ids)
        feed_forward_hidden_states = self.mlp(hidden_states)
        return attn_output + feed_forward_hidden_states + residual


class GPTJModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab, cfg.hidden)
        self.drop = nn.Dropout(0.0)
        self.h = nn.ModuleList([GPTJBlock(cfg) for _ in range(cfg.num_layers)])
        self.ln_f = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_epsilon)

    def forward(self, input_ids, attention_mask, position_ids):
        input_shape = input_ids.size()
        input_ids = input_ids.view(-1, input_shape[-1])
        batch_size = input_ids.shape[0]
        position_ids = position_ids.view(-1, input_shape[-1]).long()
        dtype = self.wte.weight.dtype
        attention_mask = attention_mask.view(batch_size, -1)
        attention_mask = attention_mask[:, None, None, :]
        attention_mask = attention_mask.to(dtype=dtype)
        attention_mask = (1.0 - attention_mask) * torch.finfo(dtype).min
        hidden_states = self.drop(self.wte(input_ids))
        output_shape = (-1,) + input_shape[1:] + (hidden_states.size(-1),)
        for block in self.h:
            hidden_states = block(hidden_states, attention_mask, position_ids)
        hidden_states = self.ln_f(hidden_states)
        return hidden_states.view(output_shape)


class GPTJForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.transformer = GPTJModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab)  # GPT-J's lm_head has a bias

    def forward(self, input_ids, attention_mask, position_ids):
        hidden_states = self.transformer(input_ids, attention_mask, position_ids)
        return self.lm_head(hidden_states).to(torch.float32)


# --------------------------------------------------------------------------
# Phi / Phi-2 (transformers ~4.37 eager PhiAttention): q/k/v with bias, `dense` output
# projection, partial rotary (rotate_half on the first partial_rotary_factor·head_dim
# features, q/k already [B, H, T, d]), cos/sin caches indexed by position_ids, HF's
# 4-D causal + padding mask, parallel attention + gelu_new MLP under one LayerNorm.
# --------------------------------------------------------------------------

class PhiRotaryEmbedding(nn.Module):
    def __init__(self, dim, max_position_embeddings=2048, base=10000):
        super().__init__()
        self.dim = dim
        self.max_position_embeddings = max_position_embeddings
        self.base = base
        inv_freq = 1.0 / (self.base ** (torch.arange(0, self.dim, 2, dtype=torch.int64).float() / self.dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._set_cos_sin_cache(max_position_embeddings, torch.get_default_dtype())

    def _set_cos_sin_cache(self, seq_len, dtype):
        self.max_seq_len_cached = seq_len
        t = torch.arange(self.max_seq_len_cached, dtype=torch.int64).type_as(self.inv_freq)
        freqs = torch.outer(t, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_cached", emb.cos().to(dtype), persistent=False)
        self.register_buffer("sin_cached", emb.sin().to(dtype), persistent=False)

    def forward(self, x, seq_len):
        # (HF grows the cache when seq_len > max_seq_len_cached; the fixtures stay below it)
        return (self.cos_cached[:seq_len].to(dtype=x.dtype), self.sin_cached[:seq_len].to(dtype=x.dtype))


def phi_apply_rotary_pos_emb(q, k, cos, sin, position_ids, unsqueeze_dim=1):
    cos = cos[position_ids].unsqueeze(unsqueeze_dim)
    sin = sin[position_ids].unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (gf.rotate_half(q) * sin)
    k_embed = (k * cos) + (gf.rotate_half(k) * sin)
    return q_embed, k_embed


class PhiAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.hidden_size = cfg.hidden
        self.num_heads = cfg.num_heads
        self.head_dim = self.hidden_size // self.num_heads
        self.num_key_value_heads = cfg.num_kv_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.partial_rotary_factor = cfg.partial_rotary_factor
        self.attention_dropout = nn.Dropout(0.0)
        self.q_proj = nn.Linear(self.hidden_size, self.num_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(self.hidden_size, self.num_key_value_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(self.hidden_size, self.num_key_value_heads * self.head_dim, bias=True)
        self.dense = nn.Linear(self.num_heads * self.head_dim, self.hidden_size, bias=True)
        self.rotary_emb = PhiRotaryEmbedding(int(self.partial_rotary_factor * self.head_dim),
                                             max_position_embeddings=cfg.max_position_embeddings,
                                             base=cfg.rope_theta)

    def forward(self, hidden_states, attention_mask, position_ids):
        bsz, q_len, _ = hidden_states.size()
        query_states = self.q_proj(hidden_states)
        key_states = self.k_proj(hidden_states)
        value_states = self.v_proj(hidden_states)

        query_states = query_states.view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key_states = key_states.view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        value_states = value_states.view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)

        kv_seq_len = key_states.shape[-2]
        cos, sin = self.rotary_emb(value_states, seq_len=kv_seq_len)

        # Partial rotary embedding
        query_rot, query_pass = (query_states[..., : self.rotary_emb.dim], query_states[..., self.rotary_emb.dim:])
        key_rot, key_pass = (key_states[..., : self.rotary_emb.dim], key_states[..., self.rotary_emb.dim:])
        query_rot, key_rot = phi_apply_rotary_pos_emb(query_rot, key_rot, cos, sin, position_ids)
        query_states = torch.cat((query_rot, query_pass), dim=-1)
        key_states = torch.cat((key_rot, key_pass), dim=-1)

        key_states = gf.repeat_kv(key_states, self.num_key_value_groups)
        value_states = gf.repeat_kv(value_states, self.num_key_value_groups)

        # Queries and keys upcast to fp32 is required by Phi-2 to avoid overflow
        attn_weights = torch.matmul(
            query_states.to(torch.float32), key_states.to(torch.float32).transpose(2, 3)) / math.sqrt(self.head_dim)
        attn_weights = attn_weights + attention_mask
        attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(value_states.dtype)
        attn_weights = self.attention_dropout(attn_weights)
        attn_output = torch.matmul(attn_weights, value_states)

        attn_output = attn_output.transpose(1, 2).contiguous()
        attn_output = attn_output.reshape(bsz, q_len, self.hidden_size)
        return self.dense(attn_output)


class PhiMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.activation_fn = gf.NewGELUActivation()  # hidden_act "gelu_new"
        self.fc1 = nn.Linear(cfg.hidden, cfg.intermediate)
        self.fc2 = nn.Linear(cfg.intermediate, cfg.hidden)

    def forward(self, hidden_states):
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class PhiDecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self_attn = PhiAttention(cfg)
        self.mlp = PhiMLP(cfg)
        self.input_layernorm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.resid_dropout = nn.Dropout(0.0)

    def forward(self, hidden_states, attention_mask, position_ids):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        attn_outputs = self.resid_dropout(self.self_attn(hidden_states, attention_mask, position_ids))
        feed_forward_hidden_states = self.resid_dropout(self.mlp(hidden_states))
        return attn_outputs + feed_forward_hidden_states + residual


class PhiModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        self.embed_dropout = nn.Dropout(0.0)
        self.layers = nn.ModuleList([PhiDecoderLayer(cfg) for _ in range(cfg.num_layers)])
        self.final_layernorm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)

    def forward(self, input_ids, attention_mask, position_ids):
        inputs_embeds = self.embed_dropout(self.embed_tokens(input_ids))
        attention_mask = gf.prepare_4d_causal_attention_mask(
            attention_mask, input_ids.shape, inputs_embeds.dtype, 0, False)
        hidden_states = inputs_embeds
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, position_ids)
        return self.final_layernorm(hidden_states)


class PhiForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.model = PhiModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=True)

    def forward(self, input_ids, attention_mask, position_ids):
        logits = self.lm_head(self.model(input_ids, attention_mask, position_ids))
        return logits.float()


# --------------------------------------------------------------------------
# BART-style encoder-decoder decoder (transformers ~4.36 eager BartAttention /
# BartDecoderLayer / BartDecoder / BartForConditionalGeneration's lm_head), written
# out like the models above (no transformers library): q/k/v/out projections with
# bias, the query scaled after its projection (``q_proj(x) * scaling``), heads folded
# into the batch for ``bmm`` ([B·H, T, d]), the 4-D causal mask added on a
# [B, H, T, S] view of the scores, post-LN layers (self-attention, cross-attention
# over ``encoder_hidden_states``, gelu FFN), learned positions with BART's offset 2,
# ``layernorm_embedding``, an untied lm_head + ``final_logits_bias``.  The KV caches
# are HF's / Optimum's: the decoder "without past" returns every layer's self K/V and
# cross K/V ([B, H, T, d] / [B, H, S, d]); the decoder "with past" takes them back,
# concatenates the new self K/V on the sequence axis and uses the cross K/V as they
# are (HF's ``is_cross_attention and past_key_value is not None`` branch: nothing is
# recomputed from the encoder, so ``encoder_hidden_states`` is not an input).
# --------------------------------------------------------------------------

class BartAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, is_cross_attention):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim ** -0.5
        self.is_cross_attention = is_cross_attention
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=True)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=True)

    def _shape(self, tensor, seq_len, bsz):
        return tensor.view(bsz, seq_len, self.num_heads, self.head_dim).transpose(1, 2).contiguous()

    def forward(self, hidden_states, key_value_states=None, past_key_value=None, attention_mask=None):
        bsz, tgt_len, _ = hidden_states.size()
        query_states = self.q_proj(hidden_states) * self.scaling
        if self.is_cross_attention and past_key_value is not None:
            # reuse the cross-attention K/V computed on the first call
            key_states = past_key_value[0]
            value_states = past_key_value[1]
        elif self.is_cross_attention:
            key_states = self._shape(self.k_proj(key_value_states), -1, bsz)
            value_states = self._shape(self.v_proj(key_value_states), -1, bsz)
        elif past_key_value is not None:
            key_states = self._shape(self.k_proj(hidden_states), -1, bsz)
            value_states = self._shape(self.v_proj(hidden_states), -1, bsz)
            key_states = torch.cat([past_key_value[0], key_states], dim=2)
            value_states = torch.cat([past_key_value[1], value_states], dim=2)
        else:
            key_states = self._shape(self.k_proj(hidden_states), -1, bsz)
            value_states = self._shape(self.v_proj(hidden_states), -1, bsz)
        past_key_value = (key_states, value_states)  # is_decoder

        proj_shape = (bsz * self.num_heads, -1, self.head_dim)
        query_states = self._shape(query_states, tgt_len, bsz).view(*proj_shape)
        key_states = key_states.reshape(*proj_shape)
        value_states = value_states.reshape(*proj_shape)

        src_len = key_states.size(1)
        attn_weights = torch.bmm(query_states, key_states.transpose(1, 2))
        if attention_mask is not None:
            attn_weights = attn_weights.view(bsz, self.num_heads, tgt_len, src_len) + attention_mask
            attn_weights = attn_weights.view(bsz * self.num_heads, tgt_len, src_len)
        attn_weights = nn.functional.softmax(attn_weights, dim=-1)
        attn_probs = nn.functional.dropout(attn_weights, p=0.0, training=self.training)
        attn_output = torch.bmm(attn_probs, value_states)
        attn_output = attn_output.view(bsz, self.num_heads, tgt_len, self.head_dim)
        attn_output = attn_output.transpose(1, 2)
        attn_output = attn_output.reshape(bsz, tgt_len, self.embed_dim)
        attn_output = self.out_proj(attn_output)
        return attn_output, past_key_value


class BartDecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self_attn = BartAttention(cfg.hidden, cfg.num_heads, is_cross_attention=False)
        self.self_attn_layer_norm = nn.LayerNorm(cfg.hidden)
        self.encoder_attn = BartAttention(cfg.hidden, cfg.num_heads, is_cross_attention=True)
        self.encoder_attn_layer_norm = nn.LayerNorm(cfg.hidden)
        self.fc1 = nn.Linear(cfg.hidden, cfg.intermediate)
        self.fc2 = nn.Linear(cfg.intermediate, cfg.hidden)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden)

    def forward(self, hidden_states, attention_mask, encoder_hidden_states, past_key_value=None):
        # past_key_value: (self key, self value, cross key, cross value) or None
        self_attn_past_key_value = past_key_value[:2] if past_key_value is not None else None
        residual = hidden_states
        hidden_states, present_key_value = self.self_attn(
            hidden_states, past_key_value=self_attn_past_key_value, attention_mask=attention_mask)
        hidden_states = self.self_attn_layer_norm(residual + hidden_states)

        cross_attn_past_key_value = past_key_value[-2:] if past_key_value is not None else None
        residual = hidden_states
        hidden_states, cross_attn_present_key_value = self.encoder_attn(
            hidden_states, key_value_states=encoder_hidden_states, past_key_value=cross_attn_past_key_value)
        hidden_states = self.encoder_attn_layer_norm(residual + hidden_states)
        present_key_value = present_key_value + cross_attn_present_key_value

        residual = hidden_states
        hidden_states = nn.functional.gelu(self.fc1(hidden_states))  # activation_function "gelu"
        hidden_states = self.fc2(hidden_states)
        hidden_states = self.final_layer_norm(residual + hidden_states)
        return hidden_states, present_key_value


class BartLearnedPositionalEmbedding(nn.Embedding):
    def __init__(self, num_embeddings, embedding_dim):
        self.offset = 2  # BART's learned positions start at 2
        super().__init__(num_embeddings + self.offset, embedding_dim)

    def forward(self, input_ids, past_key_values_length=0):
        bsz, seq_len = input_ids.shape[:2]
        positions = torch.arange(past_key_values_length, past_key_values_length + seq_len, dtype=torch.long,
                                 device=self.weight.device).expand(bsz, -1)
        return super().forward(positions + self.offset)


class BartDecoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_scale = 1.0  # scale_embedding False
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        self.embed_positions = BartLearnedPositionalEmbedding(cfg.max_position_embeddings, cfg.hidden)
        self.layers = nn.ModuleList([BartDecoderLayer(cfg) for _ in range(cfg.num_layers)])
        self.layernorm_embedding = nn.LayerNorm(cfg.hidden)

    def forward(self, input_ids, encoder_hidden_states=None, past_key_values=None):
        input_shape = input_ids.size()
        past_key_values_length = past_key_values[0][0].shape[2] if past_key_values is not None else 0
        inputs_embeds = self.embed_tokens(input_ids) * self.embed_scale
        # _prepare_4d_causal_attention_mask(None, ...): AttentionMaskConverter.to_causal_4d
        # builds the mask only for more than one new token (decided when tracing)
        attention_mask = None
        if input_shape[-1] > 1:
            attention_mask = gf._make_causal_mask(input_shape, inputs_embeds.dtype, past_key_values_length,
                                                  past_key_values is not None)
        positions = self.embed_positions(input_ids, past_key_values_length)
        hidden_states = self.layernorm_embedding(inputs_embeds + positions)
        presents = []
        for i, layer in enumerate(self.layers):
            hidden_states, present = layer(hidden_states, attention_mask, encoder_hidden_states,
                                           past_key_values[i] if past_key_values is not None else None)
            presents.append(present)
        return hidden_states, presents


class BartForConditionalGenerationDecoder(nn.Module):
    """The decoder half of BartForConditionalGeneration: BartDecoder → lm_head + final_logits_bias."""

    def __init__(self, cfg):
        super().__init__()
        self.decoder = BartDecoder(cfg)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        self.register_buffer("final_logits_bias", torch.zeros((1, cfg.vocab)))

    def forward(self, input_ids, encoder_hidden_states=None, past_key_values=None):
        hidden_states, presents = self.decoder(input_ids, encoder_hidden_states, past_key_values)
        return self.lm_head(hidden_states) + self.final_logits_bias, presents


class BartDecoderNoPast(BartForConditionalGenerationDecoder):
    """Optimum's decoder_model: input_ids, encoder_hidden_states → logits, present.{i}.{decoder,encoder}.{key,value}."""

    def forward(self, input_ids, encoder_hidden_states):
        logits, presents = super().forward(input_ids, encoder_hidden_states)
        return (logits, *[t for p in presents for t in p])


class BartDecoderWithPast(BartForConditionalGenerationDecoder):
    """Optimum's decoder_with_past_model: input_ids, past_key_values.{i}.{decoder,encoder}.{key,value}
    → logits, present.{i}.decoder.{key,value} (the cross K/V are not returned again)."""

    def forward(self, input_ids, *past):
        past_key_values = [tuple(past[4 * i: 4 * i + 4]) for i in range(len(past) // 4)]
        logits, presents = super().forward(input_ids, None, past_key_values)
        return (logits, *[t for p in presents for t in p[:2]])


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


def write_fixture(name, model, args, input_names, output_names, dynamic_axes, opset, config, written,
                  example_args=None):
    """Exports `model` traced on `example_args` (default: `args`) and saves `args` with the
    reference outputs on them."""
    outs = forward(model, args)
    path = OUT_DIR / f"{name}.onnx"
    m = export(model, example_args if example_args is not None else args, path, input_names, output_names,
               dynamic_axes, opset)
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


def gen_hf_decoder(written, name, opset, lm_class, cfg, family, rotary, rotary_dim, data_seed):
    """A hand-written HF decoder (no past) with gen_fixtures.py's decoder inputs: row 1
    left-padded by 2, HF position_ids."""
    torch.manual_seed(cfg.seed)
    lm = lm_class(cfg).eval()
    init_foreign_(lm, cfg.seed)
    input_ids, attention_mask, position_ids, _ = gf.decoder_inputs(data_seed, cfg.vocab)
    names = ["input_ids", "attention_mask", "position_ids"]
    sites = [site("self", cfg.num_heads, cfg.head_dim, True, kv_heads=cfg.num_kv_heads, padding_mask=True,
                  rope=True, rotary=rotary, rotary_dim=rotary_dim) for _ in range(cfg.num_layers)]
    config = dict(cfg.__dict__, family=family, causal=True, has_past=False, past_length=0,
                  batch=int(input_ids.shape[0]), seq_length=int(input_ids.shape[1]), padding="left",
                  expected_sites=sites, rejected_softmaxes=0)
    write_fixture(name, lm, [input_ids, attention_mask, position_ids], names, ["logits"],
                  {n: BT for n in names + ["logits"]}, opset, config, written)


def gen_gptj(written):
    cfg = gf.Config(model_type="gptj", num_layers=2, num_heads=4, num_kv_heads=4, head_dim=16, hidden=64,
                    intermediate=128, vocab=256, rotary_dim=8, max_position_embeddings=64,
                    layer_norm_epsilon=1e-5, activation="gelu_new", seed=3579)
    gen_hf_decoder(written, "gptj", 17, GPTJForCausalLM, cfg, "hf-gptj", "interleaved", cfg.rotary_dim, 3580)


def gen_phi(written):
    cfg = gf.Config(model_type="phi", num_layers=2, num_heads=4, num_kv_heads=4, head_dim=16, hidden=64,
                    intermediate=128, vocab=256, partial_rotary_factor=0.5, max_position_embeddings=64,
                    rope_theta=10000.0, layer_norm_eps=1e-5, activation="gelu_new", seed=4680)
    gen_hf_decoder(written, "phi", 14, PhiForCausalLM, cfg, "hf-phi", "rotate_half",
                   int(cfg.partial_rotary_factor * cfg.head_dim), 4681)


def encdec_names(num_layers):
    """Optimum's seq2seq decoder names: present.{i}.{decoder,encoder}.{key,value} and
    past_key_values.{i}.{decoder,encoder}.{key,value}, per layer in that order."""
    present = [f"present.{i}.{part}.{kv}" for i in range(num_layers) for part in ("decoder", "encoder")
               for kv in ("key", "value")]
    past = ["past_key_values." + n[len("present."):] for n in present]
    return present, past


def gen_encdec(written):
    """BART-style decoder, exported twice at opset 14 (Optimum's decoder_model /
    decoder_with_past_model): ``encdec_decoder`` (input_ids, encoder_hidden_states →
    logits + every layer's self and cross K/V) and ``encdec_decoder_past`` (input_ids +
    those K/V → logits + the grown self K/V).  The references chain: the past fixture's
    inputs are the no-past fixture's presents (a 5-token prefill) and one new token, and
    its logits equal those of the whole 6-token sequence at its last position."""
    cfg = gf.Config(model_type="bart", num_layers=2, num_heads=4, num_kv_heads=4, head_dim=8, hidden=32,
                    intermediate=32, vocab=64, max_position_embeddings=16, activation="gelu",
                    scale_embedding=False, seed=2468)
    opset = 14
    torch.manual_seed(cfg.seed)
    no_past = BartDecoderNoPast(cfg).eval()
    init_foreign_(no_past, cfg.seed)
    with_past = BartDecoderWithPast(cfg).eval()
    with_past.load_state_dict(no_past.state_dict())  # the same weights
    g = torch.Generator().manual_seed(cfg.seed + 1)
    B, T, S = 2, 5, 7
    ids = torch.randint(0, cfg.vocab, (B, T + 1), generator=g, dtype=torch.int64)
    enc = torch.randn(B, S, cfg.hidden, generator=g)
    L, H, d = cfg.num_layers, cfg.num_heads, cfg.head_dim
    present, past = encdec_names(L)
    self_present = [n for n in present if ".decoder." in n]
    base = dict(cfg.__dict__, family="hf-bart", causal=True, batch=B, encoder_seq_length=S, padding="none",
                mask="_prepare_4d_causal_attention_mask(None, ...) (finfo.min above the diagonal)",
                rejected_softmaxes=0)

    def sites(has_past):
        # every layer: causal self-attention, then cross-attention (data-flow order)
        out = []
        for i in range(L):
            out.append(site("self", H, d, True, scale_source="split",
                            past={"key": f"past_key_values.{i}.decoder.key", "value": f"past_key_values.{i}.decoder.value"}
                            if has_past else None,
                            present={"key": f"present.{i}.decoder.key", "value": f"present.{i}.decoder.value"}))
            if not has_past:
                out.append(site("cross", H, d, False, scale_source="split", kv_source="encoder_hidden_states",
                                present={"key": f"present.{i}.encoder.key", "value": f"present.{i}.encoder.value"}))
            else:
                # K/V are graph inputs [B, H, S_enc, d], with no projection in this graph: discovery
                # reads them as the keys and values (kvSource), their heads lined up with Q's
                cached = {"key": f"past_key_values.{i}.encoder.key", "value": f"past_key_values.{i}.encoder.value"}
                out.append(site("cross", H, d, False, scale_source="split", kv_source=cached, present=None))
        return out

    # ---- (a) no past: T tokens ------------------------------------------------------------
    dyn = {"input_ids": {0: "batch_size", 1: "decoder_sequence_length"},
           "encoder_hidden_states": {0: "batch_size", 1: "encoder_sequence_length"},
           "logits": {0: "batch_size", 1: "decoder_sequence_length"}}
    for n in present:
        dyn[n] = {0: "batch_size", 2: "decoder_sequence_length" if ".decoder." in n else "encoder_sequence_length"}
    seq_axes = {"input_ids": 1, "encoder_hidden_states": None, "logits": 1,
                **{n: 2 if ".decoder." in n else None for n in present}}
    outs_a = write_fixture("encdec_decoder", no_past, [ids[:, :T], enc], ["input_ids", "encoder_hidden_states"],
                           ["logits", *present], dyn, opset,
                           dict(base, has_past=False, past_length=0, seq_length=T,
                                expected_sites=sites(False), sequence_axes=seq_axes),
                           written)

    # ---- (b) with past: the presents of (a) + one new token ---------------------------------
    # Traced with 2 new tokens after a 4-token prefill: HF builds the causal mask only for
    # more than one new token, and that choice is made when tracing.
    example_past = forward(no_past, [ids[:, :T - 1], enc])[1:]
    dyn = {"input_ids": {0: "batch_size", 1: "decoder_sequence_length"},
           "logits": {0: "batch_size", 1: "decoder_sequence_length"}}
    for n in past:
        dyn[n] = {0: "batch_size", 2: "past_decoder_sequence_length" if ".decoder." in n else "encoder_sequence_length"}
    for n in self_present:
        dyn[n] = {0: "batch_size", 2: "past_decoder_sequence_length + decoder_sequence_length"}
    seq_axes = {"input_ids": 1, "logits": 1, **{n: None for n in past}, **{n: None for n in self_present}}
    outs_b = write_fixture("encdec_decoder_past", with_past, [ids[:, T:T + 1], *outs_a[1:]], ["input_ids", *past],
                           ["logits", *self_present], dyn, opset,
                           dict(base, has_past=True, past_length=T, seq_length=1, expected_sites=sites(True),
                                sequence_axes=seq_axes, prefill="encdec_decoder",
                                traced_with={"past_length": T - 1, "new_tokens": 2}),
                           written, example_args=[ids[:, T - 1:T + 1], *example_past])
    # prefill-then-step equals the whole sequence (and so does the traced 2-token step)
    full = forward(no_past, [ids, enc])
    step2 = forward(with_past, [ids[:, T - 1:T + 1], *example_past])
    scale = max(1.0, full[0].abs().max().item())
    for got, want, what in [(outs_b[0], full[0][:, T:], "1-token step"), (step2[0], full[0][:, T - 1:], "2-token step")]:
        err = (got - want).abs().max().item() / scale
        print(f"   encdec {what} after the prefill vs the whole sequence: max rel err {err:.2e}")
        assert err <= 1e-5, f"encdec: {what} logits differ from the whole sequence ({err})"
    for i in range(L):
        for j in range(2):  # the grown self K/V = the whole sequence's
            err = (outs_b[1 + 2 * i + j] - full[1 + 4 * i + j]).abs().max().item()
            assert err <= 1e-5, f"encdec: present self K/V of layer {i} differ ({err})"


# family → generator; each family writes the fixtures named in its comment
FAMILIES = {
    "mha_encoder": lambda w: gen_mha_encoder(w, causal=False),  # mha_encoder
    "mha_causal": lambda w: gen_mha_encoder(w, causal=True),    # mha_causal
    "mha_decoder": gen_mha_decoder,                             # mha_decoder
    "vit": gen_vit,                                             # vit
    "swin": gen_swin,                                           # swin
    "llama14": gen_llama14,                                     # llama14
    "gptj": gen_gptj,                                           # gptj
    "phi": gen_phi,                                             # phi
    "encdec": gen_encdec,                                       # encdec_decoder, encdec_decoder_past
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("families", nargs="*", metavar="FAMILY",
                        help=f"generate only these families (default: all): {', '.join(FAMILIES)}")
    args = parser.parse_args(argv)
    unknown = [f for f in args.families if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for family, gen in FAMILIES.items():
        if not args.families or family in args.families:
            gen(written)
    for p in written:
        data = p.read_bytes()
        print(f"{p.relative_to(ROOT)}  {len(data):>8} bytes  sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

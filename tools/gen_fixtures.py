#!/usr/bin/env python3
"""Generate real-exporter ONNX test fixtures for titanize.

Builds tiny PyTorch models that mirror the structure of the Hugging Face
implementations (Llama, Qwen2, GPT-2, BERT; eager attention code paths),
exports them with ``torch.onnx.export`` (TorchScript exporter, opset 17,
dynamic batch / sequence / past axes, Optimum input/output naming) and saves
PyTorch reference inputs/outputs next to each model:

    test/fixtures/<name>.onnx
    test/fixtures/<name>.ref.json

The output is deterministic: running the script twice yields byte-identical
files.  Run with Debian's interpreter (torch 1.13, onnx 1.12):

    /usr/bin/python3 tools/gen_fixtures.py
"""

import hashlib
import json
import math
import sys
import warnings
from pathlib import Path

import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "test" / "fixtures"
OPSET = 17

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


# --------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------

class Config:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def init_weights_(module: nn.Module, seed: int) -> None:
    """Deterministic init with O(1) activations (HF's std=0.02 init would give
    near-uniform attention, which makes for weak fixtures).  Tied parameters are
    initialised once, by the first module that owns them."""
    g = torch.Generator().manual_seed(seed)
    done = set()

    def fill(p, t):
        if id(p) not in done:
            done.add(id(p))
            p.copy_(t)

    with torch.no_grad():
        for _, m in module.named_modules():
            if isinstance(m, nn.Embedding):
                fill(m.weight, torch.randn(m.weight.shape, generator=g))
            elif isinstance(m, nn.Linear):
                fill(m.weight, torch.randn(m.weight.shape, generator=g) / math.sqrt(m.in_features))
                if m.bias is not None:
                    fill(m.bias, torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, Conv1D):  # weight is [in, out]
                fill(m.weight, torch.randn(m.weight.shape, generator=g) / math.sqrt(m.weight.shape[0]))
                fill(m.bias, torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, (nn.LayerNorm, LlamaRMSNorm)):
                fill(m.weight, 1.0 + torch.randn(m.weight.shape, generator=g) * 0.1)
                if getattr(m, "bias", None) is not None:
                    fill(m.bias, torch.randn(m.bias.shape, generator=g) * 0.1)


# --------------------------------------------------------------------------
# Flat export signature (Optimum naming): the *ForCausalLM modules take
# (input_ids, attention_mask, position_ids, past.0.key, past.0.value, ...) and
# return logits, or (logits, present.0.key, present.0.value, ...) with past.
# --------------------------------------------------------------------------

def pack_past(past):
    if len(past) == 0:
        return None
    return tuple((past[i], past[i + 1]) for i in range(0, len(past), 2))


def flat_outputs(logits, presents, has_past):
    if not has_past:
        return logits
    flat = [logits]
    for k, v in presents:
        flat.extend([k, v])
    return tuple(flat)


# --------------------------------------------------------------------------
# Llama / Qwen2 (transformers ~4.40 eager code path)
# --------------------------------------------------------------------------

class LlamaRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class LlamaRotaryEmbedding(nn.Module):
    def __init__(self, dim, base=10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @torch.no_grad()
    def forward(self, x, position_ids):
        inv_freq_expanded = self.inv_freq[None, :, None].float().expand(position_ids.shape[0], -1, 1)
        position_ids_expanded = position_ids[:, None, :].float()
        freqs = (inv_freq_expanded.float() @ position_ids_expanded.float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos()
        sin = emb.sin()
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


def repeat_kv(hidden_states, n_rep):
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


class LlamaMLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.up_proj = nn.Linear(cfg.hidden, cfg.intermediate, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate, cfg.hidden, bias=False)
        self.act_fn = nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.hidden_size = cfg.hidden
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.num_key_value_heads = cfg.num_kv_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        qkv_bias = cfg.qkv_bias
        self.q_proj = nn.Linear(self.hidden_size, self.num_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(self.hidden_size, self.num_key_value_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(self.hidden_size, self.num_key_value_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, self.hidden_size, bias=False)

    def forward(self, hidden_states, attention_mask, position_embeddings, past_key_value=None):
        bsz, q_len, _ = hidden_states.size()

        query_states = self.q_proj(hidden_states)
        key_states = self.k_proj(hidden_states)
        value_states = self.v_proj(hidden_states)

        query_states = query_states.view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key_states = key_states.view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        value_states = value_states.view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

        if past_key_value is not None:
            key_states = torch.cat([past_key_value[0], key_states], dim=-2)
            value_states = torch.cat([past_key_value[1], value_states], dim=-2)
        present = (key_states, value_states)

        key_states = repeat_kv(key_states, self.num_key_value_groups)
        value_states = repeat_kv(value_states, self.num_key_value_groups)

        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(self.head_dim)

        causal_mask = attention_mask[:, :, :, : key_states.shape[-2]]
        attn_weights = attn_weights + causal_mask

        attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_output = torch.matmul(attn_weights, value_states)

        attn_output = attn_output.transpose(1, 2).contiguous()
        attn_output = attn_output.reshape(bsz, q_len, self.hidden_size)
        attn_output = self.o_proj(attn_output)
        return attn_output, present


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self_attn = LlamaAttention(cfg)
        self.mlp = LlamaMLP(cfg)
        self.input_layernorm = LlamaRMSNorm(cfg.hidden, eps=cfg.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(cfg.hidden, eps=cfg.rms_norm_eps)

    def forward(self, hidden_states, attention_mask, position_embeddings, past_key_value=None):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, present = self.self_attn(hidden_states, attention_mask, position_embeddings, past_key_value)
        hidden_states = residual + hidden_states

        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = residual + hidden_states
        return hidden_states, present


# AttentionMaskConverter (transformers 4.36 `_prepare_4d_causal_attention_mask`)
def _make_causal_mask(input_ids_shape, dtype, past_key_values_length, has_past):
    bsz, tgt_len = input_ids_shape
    mask = torch.full((tgt_len, tgt_len), torch.finfo(dtype).min)
    mask_cond = torch.arange(mask.size(-1))
    mask.masked_fill_(mask_cond < (mask_cond + 1).view(mask.size(-1), 1), 0)
    mask = mask.to(dtype)
    if has_past:
        mask = torch.cat([torch.zeros(tgt_len, past_key_values_length, dtype=dtype), mask], dim=-1)
    return mask[None, None, :, :].expand(bsz, 1, tgt_len, tgt_len + past_key_values_length)


def _expand_mask(mask, dtype, tgt_len):
    bsz, src_len = mask.size()
    expanded_mask = mask[:, None, None, :].expand(bsz, 1, tgt_len, src_len).to(dtype)
    inverted_mask = 1.0 - expanded_mask
    return inverted_mask.masked_fill(inverted_mask.to(torch.bool), torch.finfo(dtype).min)


def prepare_4d_causal_attention_mask(attention_mask, input_shape, dtype, past_key_values_length, has_past):
    causal_4d_mask = _make_causal_mask(input_shape, dtype, past_key_values_length, has_past)
    expanded_attn_mask = _expand_mask(attention_mask, dtype, tgt_len=input_shape[-1])
    return causal_4d_mask.masked_fill(expanded_attn_mask.bool(), torch.finfo(dtype).min)


class LlamaModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden)
        self.layers = nn.ModuleList([LlamaDecoderLayer(cfg) for _ in range(cfg.num_layers)])
        self.norm = LlamaRMSNorm(cfg.hidden, eps=cfg.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(cfg.head_dim, base=cfg.rope_theta)

    def forward(self, input_ids, attention_mask, position_ids, past_key_values=None):
        inputs_embeds = self.embed_tokens(input_ids)
        has_past = past_key_values is not None
        past_key_values_length = past_key_values[0][0].shape[2] if has_past else 0
        causal_mask = prepare_4d_causal_attention_mask(
            attention_mask, input_ids.shape, inputs_embeds.dtype, past_key_values_length, has_past)

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        presents = []
        for i, layer in enumerate(self.layers):
            hidden_states, present = layer(
                hidden_states, causal_mask, position_embeddings,
                past_key_values[i] if has_past else None)
            presents.append(present)
        hidden_states = self.norm(hidden_states)
        return hidden_states, presents


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)

    def forward(self, input_ids, attention_mask, position_ids, *past):
        past_key_values = pack_past(past)
        hidden_states, presents = self.model(input_ids, attention_mask, position_ids, past_key_values)
        logits = self.lm_head(hidden_states)
        logits = logits.float()
        return flat_outputs(logits, presents, past_key_values is not None)


# --------------------------------------------------------------------------
# GPT-2 (transformers ~4.36 eager GPT2Attention)
# --------------------------------------------------------------------------

class Conv1D(nn.Module):
    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        x = x.view(size_out)
        return x


class NewGELUActivation(nn.Module):
    def forward(self, input):
        return 0.5 * input * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (input + 0.044715 * torch.pow(input, 3.0))))


class GPT2Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        max_positions = cfg.n_positions
        self.register_buffer(
            "bias",
            torch.tril(torch.ones((max_positions, max_positions), dtype=torch.bool)).view(
                1, 1, max_positions, max_positions),
            persistent=False,
        )
        self.register_buffer("masked_bias", torch.tensor(-1e4), persistent=False)
        self.embed_dim = cfg.hidden
        self.num_heads = cfg.num_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.split_size = self.embed_dim
        self.scale_attn_weights = True
        self.c_attn = Conv1D(3 * self.embed_dim, self.embed_dim)
        self.c_proj = Conv1D(self.embed_dim, self.embed_dim)
        self.attn_dropout = nn.Dropout(0.0)
        self.resid_dropout = nn.Dropout(0.0)

    def _attn(self, query, key, value, attention_mask=None):
        attn_weights = torch.matmul(query, key.transpose(-1, -2))
        if self.scale_attn_weights:
            attn_weights = attn_weights / torch.full(
                [], value.size(-1) ** 0.5, dtype=attn_weights.dtype, device=attn_weights.device)
        query_length, key_length = query.size(-2), key.size(-2)
        causal_mask = self.bias[:, :, key_length - query_length: key_length, :key_length]
        mask_value = torch.finfo(attn_weights.dtype).min
        mask_value = torch.full([], mask_value, dtype=attn_weights.dtype, device=attn_weights.device)
        attn_weights = torch.where(causal_mask, attn_weights.to(attn_weights.dtype), mask_value)
        if attention_mask is not None:
            attn_weights = attn_weights + attention_mask
        attn_weights = nn.functional.softmax(attn_weights, dim=-1)
        attn_weights = attn_weights.type(value.dtype)
        attn_weights = self.attn_dropout(attn_weights)
        attn_output = torch.matmul(attn_weights, value)
        return attn_output, attn_weights

    def _split_heads(self, tensor, num_heads, attn_head_size):
        new_shape = tensor.size()[:-1] + (num_heads, attn_head_size)
        tensor = tensor.view(new_shape)
        return tensor.permute(0, 2, 1, 3)

    def _merge_heads(self, tensor, num_heads, attn_head_size):
        tensor = tensor.permute(0, 2, 1, 3).contiguous()
        new_shape = tensor.size()[:-2] + (num_heads * attn_head_size,)
        return tensor.view(new_shape)

    def forward(self, hidden_states, layer_past=None, attention_mask=None):
        query, key, value = self.c_attn(hidden_states).split(self.split_size, dim=2)
        query = self._split_heads(query, self.num_heads, self.head_dim)
        key = self._split_heads(key, self.num_heads, self.head_dim)
        value = self._split_heads(value, self.num_heads, self.head_dim)
        if layer_past is not None:
            past_key, past_value = layer_past
            key = torch.cat((past_key, key), dim=-2)
            value = torch.cat((past_value, value), dim=-2)
        present = (key, value)
        attn_output, _ = self._attn(query, key, value, attention_mask)
        attn_output = self._merge_heads(attn_output, self.num_heads, self.head_dim)
        attn_output = self.c_proj(attn_output)
        attn_output = self.resid_dropout(attn_output)
        return attn_output, present


class GPT2MLP(nn.Module):
    def __init__(self, intermediate_size, cfg):
        super().__init__()
        self.c_fc = Conv1D(intermediate_size, cfg.hidden)
        self.c_proj = Conv1D(cfg.hidden, intermediate_size)
        self.act = NewGELUActivation()
        self.dropout = nn.Dropout(0.0)

    def forward(self, hidden_states):
        hidden_states = self.c_fc(hidden_states)
        hidden_states = self.act(hidden_states)
        hidden_states = self.c_proj(hidden_states)
        hidden_states = self.dropout(hidden_states)
        return hidden_states


class GPT2Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_epsilon)
        self.attn = GPT2Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_epsilon)
        self.mlp = GPT2MLP(cfg.intermediate, cfg)

    def forward(self, hidden_states, layer_past=None, attention_mask=None):
        residual = hidden_states
        hidden_states = self.ln_1(hidden_states)
        attn_output, present = self.attn(hidden_states, layer_past=layer_past, attention_mask=attention_mask)
        hidden_states = attn_output + residual
        residual = hidden_states
        hidden_states = self.ln_2(hidden_states)
        feed_forward_hidden_states = self.mlp(hidden_states)
        hidden_states = residual + feed_forward_hidden_states
        return hidden_states, present


class GPT2Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_dim = cfg.hidden
        self.wte = nn.Embedding(cfg.vocab, self.embed_dim)
        self.wpe = nn.Embedding(cfg.n_positions, self.embed_dim)
        self.drop = nn.Dropout(0.0)
        self.h = nn.ModuleList([GPT2Block(cfg) for _ in range(cfg.num_layers)])
        self.ln_f = nn.LayerNorm(self.embed_dim, eps=cfg.layer_norm_epsilon)

    def forward(self, input_ids, attention_mask, position_ids, past_key_values=None):
        input_shape = input_ids.size()
        input_ids = input_ids.view(-1, input_shape[-1])
        batch_size = input_ids.shape[0]
        if past_key_values is None:
            past_key_values = tuple([None] * len(self.h))
        position_ids = position_ids.view(-1, input_shape[-1])

        dtype = self.wte.weight.dtype
        attention_mask = attention_mask.view(batch_size, -1)
        attention_mask = attention_mask[:, None, None, :]
        attention_mask = attention_mask.to(dtype=dtype)
        attention_mask = (1.0 - attention_mask) * torch.finfo(dtype).min

        inputs_embeds = self.wte(input_ids)
        position_embeds = self.wpe(position_ids)
        hidden_states = inputs_embeds + position_embeds
        hidden_states = self.drop(hidden_states)
        output_shape = (-1,) + input_shape[1:] + (hidden_states.size(-1),)

        presents = []
        for block, layer_past in zip(self.h, past_key_values):
            hidden_states, present = block(hidden_states, layer_past=layer_past, attention_mask=attention_mask)
            presents.append(present)
        hidden_states = self.ln_f(hidden_states)
        hidden_states = hidden_states.view(output_shape)
        return hidden_states, presents


class GPT2LMHeadModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.transformer = GPT2Model(cfg)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied

    def forward(self, input_ids, attention_mask, position_ids, *past):
        past_key_values = pack_past(past)
        hidden_states, presents = self.transformer(input_ids, attention_mask, position_ids, past_key_values)
        lm_logits = self.lm_head(hidden_states)
        return flat_outputs(lm_logits, presents, past_key_values is not None)


# --------------------------------------------------------------------------
# BERT (transformers ~4.36 eager BertSelfAttention) + classification head
# --------------------------------------------------------------------------

class BertEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab, cfg.hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden)
        self.LayerNorm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(0.0)
        self.register_buffer(
            "position_ids", torch.arange(cfg.max_position_embeddings).expand((1, -1)), persistent=False)

    def forward(self, input_ids, token_type_ids):
        input_shape = input_ids.size()
        seq_length = input_shape[1]
        position_ids = self.position_ids[:, 0:seq_length]
        inputs_embeds = self.word_embeddings(input_ids)
        token_type_embeddings = self.token_type_embeddings(token_type_ids)
        embeddings = inputs_embeds + token_type_embeddings
        position_embeddings = self.position_embeddings(position_ids)
        embeddings += position_embeddings
        embeddings = self.LayerNorm(embeddings)
        embeddings = self.dropout(embeddings)
        return embeddings


class BertSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.num_attention_heads = cfg.num_heads
        self.attention_head_size = cfg.head_dim
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.query = nn.Linear(cfg.hidden, self.all_head_size)
        self.key = nn.Linear(cfg.hidden, self.all_head_size)
        self.value = nn.Linear(cfg.hidden, self.all_head_size)
        self.dropout = nn.Dropout(0.0)

    def transpose_for_scores(self, x):
        new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        x = x.view(new_x_shape)
        return x.permute(0, 2, 1, 3)

    def forward(self, hidden_states, attention_mask):
        mixed_query_layer = self.query(hidden_states)
        key_layer = self.transpose_for_scores(self.key(hidden_states))
        value_layer = self.transpose_for_scores(self.value(hidden_states))
        query_layer = self.transpose_for_scores(mixed_query_layer)

        attention_scores = torch.matmul(query_layer, key_layer.transpose(-1, -2))
        attention_scores = attention_scores / math.sqrt(self.attention_head_size)
        attention_scores = attention_scores + attention_mask
        attention_probs = nn.functional.softmax(attention_scores, dim=-1)
        attention_probs = self.dropout(attention_probs)
        context_layer = torch.matmul(attention_probs, value_layer)
        context_layer = context_layer.permute(0, 2, 1, 3).contiguous()
        new_context_layer_shape = context_layer.size()[:-2] + (self.all_head_size,)
        context_layer = context_layer.view(new_context_layer_shape)
        return context_layer


class BertSelfOutput(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden, cfg.hidden)
        self.LayerNorm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(0.0)

    def forward(self, hidden_states, input_tensor):
        hidden_states = self.dense(hidden_states)
        hidden_states = self.dropout(hidden_states)
        return self.LayerNorm(hidden_states + input_tensor)


class BertAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self = BertSelfAttention(cfg)
        self.output = BertSelfOutput(cfg)

    def forward(self, hidden_states, attention_mask):
        self_outputs = self.self(hidden_states, attention_mask)
        return self.output(self_outputs, hidden_states)


class BertIntermediate(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden, cfg.intermediate)

    def forward(self, hidden_states):
        return F.gelu(self.dense(hidden_states))


class BertOutput(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.intermediate, cfg.hidden)
        self.LayerNorm = nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(0.0)

    def forward(self, hidden_states, input_tensor):
        hidden_states = self.dense(hidden_states)
        hidden_states = self.dropout(hidden_states)
        return self.LayerNorm(hidden_states + input_tensor)


class BertLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = BertAttention(cfg)
        self.intermediate = BertIntermediate(cfg)
        self.output = BertOutput(cfg)

    def forward(self, hidden_states, attention_mask):
        attention_output = self.attention(hidden_states, attention_mask)
        intermediate_output = self.intermediate(attention_output)
        return self.output(intermediate_output, attention_output)


class BertPooler(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden, cfg.hidden)
        self.activation = nn.Tanh()

    def forward(self, hidden_states):
        first_token_tensor = hidden_states[:, 0]
        return self.activation(self.dense(first_token_tensor))


class BertModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = nn.ModuleList([BertLayer(cfg) for _ in range(cfg.num_layers)])
        self.pooler = BertPooler(cfg)

    def forward(self, input_ids, attention_mask, token_type_ids):
        dtype = self.embeddings.word_embeddings.weight.dtype
        # get_extended_attention_mask
        extended_attention_mask = attention_mask[:, None, None, :]
        extended_attention_mask = extended_attention_mask.to(dtype=dtype)
        extended_attention_mask = (1.0 - extended_attention_mask) * torch.finfo(dtype).min

        hidden_states = self.embeddings(input_ids, token_type_ids)
        for layer in self.encoder:
            hidden_states = layer(hidden_states, extended_attention_mask)
        pooled_output = self.pooler(hidden_states)
        return hidden_states, pooled_output


class BertForSequenceClassification(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.bert = BertModel(cfg)
        self.dropout = nn.Dropout(0.0)
        self.classifier = nn.Linear(cfg.hidden, cfg.num_labels)

    def forward(self, input_ids, attention_mask, token_type_ids):
        last_hidden_state, pooled_output = self.bert(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(pooled_output))
        probs = nn.functional.softmax(logits, dim=-1)
        return last_hidden_state, probs


# --------------------------------------------------------------------------
# Reference data
# --------------------------------------------------------------------------

DTYPE_NAMES = {torch.float32: "float32", torch.int64: "int64", torch.bool: "bool"}


def tensor_entry(name, t):
    t = t.detach().contiguous()
    dtype = DTYPE_NAMES[t.dtype]
    if dtype == "float32":
        data = [float(x) for x in t.reshape(-1).tolist()]
    elif dtype == "int64":
        data = [int(x) for x in t.reshape(-1).tolist()]
    else:
        data = [bool(x) for x in t.reshape(-1).tolist()]
    return {"name": name, "dtype": dtype, "dims": list(t.shape), "data": data}


def write_json(path, obj):
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def hf_position_ids(attention_mask, past_length=0):
    # transformers generate(): position_ids = cumsum(mask) - 1, padded slots set to 1
    position_ids = attention_mask.long().cumsum(-1) - 1
    position_ids.masked_fill_(attention_mask == 0, 1)
    return position_ids[:, past_length:]


def decoder_inputs(seed, vocab, batch=2, seq=7, pad_left=2, past=0, past_shape=None, num_layers=0):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab, (batch, seq), generator=g, dtype=torch.int64)
    if past == 0:
        attention_mask = torch.ones(batch, seq, dtype=torch.int64)
        attention_mask[1, :pad_left] = 0  # left padding in the second row
        input_ids[1, :pad_left] = 0       # pad token
    else:
        attention_mask = torch.ones(batch, past + seq, dtype=torch.int64)
    position_ids = hf_position_ids(attention_mask, past)
    pasts = []
    for _ in range(num_layers if past else 0):
        pasts.append(torch.randn(past_shape, generator=g))
        pasts.append(torch.randn(past_shape, generator=g))
    return input_ids, attention_mask, position_ids, pasts


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------

def export(module, args, path, input_names, output_names, dynamic_axes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape arithmetic are expected
        torch.onnx.export(
            module,
            tuple(args),
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            export_params=True,
        )
    m = onnx.load(str(path))
    # titanize generate reads this to say why the fixture's text is noise
    onnx.helper.set_model_props(m, {"titanize.random_weights": "a titanize test fixture with untrained weights, from tools/gen_fixtures.py"})
    onnx.save(m, str(path))
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def past_names(num_layers):
    ins, outs = [], []
    for i in range(num_layers):
        ins += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
        outs += [f"present.{i}.key", f"present.{i}.value"]
    return ins, outs


def export_decoder_pair(name, lm, cfg, data_seed, written):
    lm.eval()
    num_layers = cfg.num_layers
    base_cfg = dict(cfg.__dict__)

    # ---- no past -------------------------------------------------------
    input_ids, attention_mask, position_ids, _ = decoder_inputs(data_seed, cfg.vocab)
    with torch.no_grad():
        logits = lm(input_ids, attention_mask, position_ids)
    path = OUT_DIR / f"{name}.onnx"
    export(
        lm, (input_ids, attention_mask, position_ids), path,
        ["input_ids", "attention_mask", "position_ids"], ["logits"],
        {
            "input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "sequence_length"},
            "position_ids": {0: "batch_size", 1: "sequence_length"},
            "logits": {0: "batch_size", 1: "sequence_length"},
        },
    )
    ref = {
        "inputs": [
            tensor_entry("input_ids", input_ids),
            tensor_entry("attention_mask", attention_mask),
            tensor_entry("position_ids", position_ids),
        ],
        "outputs": [tensor_entry("logits", logits)],
        "config": dict(base_cfg, causal=True, has_past=False, past_length=0,
                       batch=int(input_ids.shape[0]), seq_length=int(input_ids.shape[1]),
                       padding="left", opset=OPSET),
    }
    write_json(OUT_DIR / f"{name}.ref.json", ref)
    written += [path, OUT_DIR / f"{name}.ref.json"]

    # ---- with past -----------------------------------------------------
    P = 3
    past_shape = (2, cfg.num_kv_heads, P, cfg.head_dim)
    input_ids, attention_mask, position_ids, pasts = decoder_inputs(
        data_seed + 1, cfg.vocab, past=P, past_shape=past_shape, num_layers=num_layers)
    with torch.no_grad():
        outs = lm(input_ids, attention_mask, position_ids, *pasts)
    pin, pout = past_names(num_layers)
    dyn = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "past_sequence_length + sequence_length"},
        "position_ids": {0: "batch_size", 1: "sequence_length"},
        "logits": {0: "batch_size", 1: "sequence_length"},
    }
    for n in pin:
        dyn[n] = {0: "batch_size", 2: "past_sequence_length"}
    for n in pout:
        dyn[n] = {0: "batch_size", 2: "past_sequence_length + sequence_length"}
    path = OUT_DIR / f"{name}_past.onnx"
    export(lm, (input_ids, attention_mask, position_ids, *pasts), path,
           ["input_ids", "attention_mask", "position_ids", *pin], ["logits", *pout], dyn)
    ref = {
        "inputs": [
            tensor_entry("input_ids", input_ids),
            tensor_entry("attention_mask", attention_mask),
            tensor_entry("position_ids", position_ids),
        ] + [tensor_entry(n, t) for n, t in zip(pin, pasts)],
        "outputs": [tensor_entry(n, t) for n, t in zip(["logits", *pout], outs)],
        "config": dict(base_cfg, causal=True, has_past=True, past_length=P,
                       batch=int(input_ids.shape[0]), seq_length=int(input_ids.shape[1]),
                       padding="none", opset=OPSET),
    }
    write_json(OUT_DIR / f"{name}_past.ref.json", ref)
    written += [path, OUT_DIR / f"{name}_past.ref.json"]


def gen_llama(written):
    cfg = Config(model_type="llama", num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, hidden=64,
                 intermediate=128, vocab=256, rms_norm_eps=1e-6, rope_theta=10000.0, qkv_bias=False,
                 seed=1234)
    torch.manual_seed(cfg.seed)
    lm = LlamaForCausalLM(cfg)
    init_weights_(lm, cfg.seed)
    export_decoder_pair("llama", lm, cfg, data_seed=100, written=written)


def gen_qwen2(written):
    cfg = Config(model_type="qwen2", num_layers=2, num_heads=4, num_kv_heads=1, head_dim=16, hidden=64,
                 intermediate=128, vocab=256, rms_norm_eps=1e-6, rope_theta=1000000.0, qkv_bias=True,
                 seed=2345)
    torch.manual_seed(cfg.seed)
    lm = LlamaForCausalLM(cfg)  # Qwen2 eager == Llama eager + q/k/v bias
    init_weights_(lm, cfg.seed)
    export_decoder_pair("qwen2", lm, cfg, data_seed=200, written=written)


def gen_gpt2(written):
    cfg = Config(model_type="gpt2", num_layers=2, num_heads=4, num_kv_heads=4, head_dim=16, hidden=64,
                 intermediate=256, vocab=256, n_positions=64, layer_norm_epsilon=1e-5,
                 activation="gelu_new", tied_lm_head=True, seed=3456)
    torch.manual_seed(cfg.seed)
    lm = GPT2LMHeadModel(cfg)
    init_weights_(lm, cfg.seed)
    export_decoder_pair("gpt2", lm, cfg, data_seed=300, written=written)


def gen_bert(written):
    cfg = Config(model_type="bert", num_layers=2, num_heads=4, num_kv_heads=4, head_dim=16, hidden=64,
                 intermediate=128, vocab=256, max_position_embeddings=64, type_vocab_size=2,
                 layer_norm_eps=1e-12, num_labels=3, activation="gelu", seed=4567)
    torch.manual_seed(cfg.seed)
    model = BertForSequenceClassification(cfg)
    init_weights_(model, cfg.seed)
    model.eval()

    g = torch.Generator().manual_seed(400)
    B, T, real_len = 2, 7, 5
    input_ids = torch.randint(1, cfg.vocab, (B, T), generator=g, dtype=torch.int64)
    attention_mask = torch.ones(B, T, dtype=torch.int64)
    attention_mask[1, real_len:] = 0  # right padding in the second row
    input_ids[1, real_len:] = 0       # [PAD]
    token_type_ids = torch.zeros(B, T, dtype=torch.int64)
    token_type_ids[0, 4:] = 1
    token_type_ids[1, 3:real_len] = 1
    with torch.no_grad():
        last_hidden_state, probs = model(input_ids, attention_mask, token_type_ids)

    path = OUT_DIR / "bert.onnx"
    axes = {0: "batch_size", 1: "sequence_length"}
    export(model, (input_ids, attention_mask, token_type_ids), path,
           ["input_ids", "attention_mask", "token_type_ids"], ["last_hidden_state", "probs"],
           {"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
            "last_hidden_state": axes, "probs": {0: "batch_size"}})
    ref = {
        "inputs": [
            tensor_entry("input_ids", input_ids),
            tensor_entry("attention_mask", attention_mask),
            tensor_entry("token_type_ids", token_type_ids),
        ],
        "outputs": [tensor_entry("last_hidden_state", last_hidden_state), tensor_entry("probs", probs)],
        "config": dict(cfg.__dict__, causal=False, has_past=False, past_length=0, batch=B, seq_length=T,
                       padding="right", opset=OPSET),
    }
    write_json(OUT_DIR / "bert.ref.json", ref)
    written += [path, OUT_DIR / "bert.ref.json"]


def main():
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    gen_llama(written)
    gen_qwen2(written)
    gen_gpt2(written)
    gen_bert(written)
    for p in written:
        data = p.read_bytes()
        print(f"{p.relative_to(ROOT)}  {len(data):>8} bytes  sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

/**
 * Lowering of ai.tptt.LiZA to onnxruntime's contrib op `com.microsoft.LinearAttention`
 * (kernels on the CPU, CUDA and WebGPU execution providers), with the feature maps,
 * gates, DeltaProduct expansion, readout and normalisation as standard ops around it.
 *
 * What com.microsoft.LinearAttention is in onnxruntime 1.30 (read from the op schema
 * strings in libonnxruntime.so 1.30.0 and checked numerically against a per-token loop
 * with tiny models, test/ops/lower_contrib.test.ts):
 *   domain com.microsoft, since_version 1
 *   inputs  0 query       [B, T, Hq*dk]         heads packed in the last axis
 *           1 key         [B, T, Hkv*dk]        ("should be L2-normalised" for delta rules)
 *           2 value       [B, T, Hkv*dv]
 *           3 past_state  [B, Hkv, dk, dv]      optional, zeros when absent; key-major,
 *                                               the same layout as LiZA's state
 *           4 decay       [B, T, Hkv*dk] (per key channel) or [B, T, Hkv] (per head),
 *                         log space; required for 'gated' / 'gated_delta', else absent
 *           5 beta        [B, T, Hkv] or [B, T, 1]; required for 'delta' / 'gated_delta'
 *   outputs 0 output      [B, T, Hq*dv]
 *           1 present_state [B, Hkv, dk, dv]
 *   attributes update_rule (string: linear | gated | delta | gated_delta, default
 *           gated_delta), q_num_heads, kv_num_heads (int, required), scale (float, 0 =
 *           1/sqrt(dk) -- we always pass 1.0 explicitly), chunk_size (int, a tuning hint),
 *           state_window (int in [0, 8]; > 0 is CUDA-only, rejected by the CPU kernel)
 *   recurrence (per kv head, sequential semantics):
 *     gated_delta: S_t = exp(g_t) * S_{t-1} + beta_t k_t (v_t - (exp(g_t) * S_{t-1})^T k_t)^T
 *                  o_t = scale * S_t^T q_t;  exp(g_t) multiplies the key axis (row) of S,
 *                  channel-wise when decay is [B, T, Hkv*dk]
 *     delta / gated / linear drop the decay and / or the retrieval term.
 * That is exactly one LiZA step, so every rule lowers, gated ones included (channel-wise
 * decay is supported): linear -> 'linear'; delta, delta_product -> 'delta'; gated_delta,
 * gated_delta_product -> 'gated_delta'. DeltaProduct of order n runs over the expanded
 * sequence of T*n rows (token t -> tokens t-n+1 .. t, decay on the first row, beta zero for
 * padded tokens) and reads every n-th output; bidirectional sites use two calls.
 *
 * This file emits the lowered subgraph; the rewrite that replaces LiZA nodes by it is a
 * rule of the pattern engine (src/passes/lower_liza.ts).
 */
import { attr } from '../ir/attribute.js';
import type { Builder } from '../ir/builder.js';
import type { Value } from '../ir/value.js';
import { Emitter } from './emit.js';
import {
  type CausalCore,
  type LizaGraphInputs,
  type LizaGraphOutputs,
  emitLiza,
  emitPrepare,
  emitReadRows,
} from './liza_graph.js';
import { presenceOf } from './liza_function.js';
import { type LizaOpAttributes, type LizaOpConfig, resolveLizaAttributes, validateLizaInputs } from './schema.js';

export const CONTRIB_DOMAIN = 'com.microsoft';

/** Node metadata key on a lowered LiZA's LinearAttention node: the op it replaced (JSON `LoweredLiza`). */
export const LOWERED_LIZA_KEY = 'titanize.liza';

/** The ai.tptt.LiZA call a lowered subgraph stands for: its attributes and the names of its inputs and outputs. */
export interface LoweredLiza {
  attrs: LizaOpAttributes;
  /** Input names in schema order ('' for an absent optional input). */
  inputs: string[];
  /** y, present_state, present_window ('' where unused). */
  outputs: string[];
  /** The LiZA node's metadata (layer, attention output, ...), restored when raised. */
  metadata?: { key: string; value: string }[];
}

/** The LinearAttention update_rule a LiZA rule maps to. */
export function linearAttentionRule(cfg: LizaOpConfig): 'linear' | 'delta' | 'gated_delta' {
  if (cfg.rule === 'linear') return 'linear';
  return cfg.gated ? 'gated_delta' : 'delta';
}

/** A causal core calling LinearAttention in `domain` ('com.microsoft' or '' for opset 27). */
export function linearAttentionCore(domain: string): CausalCore {
  return (e: Emitter, cfg: LizaOpConfig, inputs: LizaGraphInputs) => {
    const p = emitPrepare(e, cfg, inputs);
    const pack = (x: Value): Value => e.reshape(x, [0, 0, -1]);
    const ins: (Value | null)[] = [
      pack(p.Q),
      pack(p.K),
      pack(p.V),
      inputs.pastState ?? null,
      p.glog ? pack(p.glog) : null,
      p.beta ? pack(p.beta) : null,
    ];
    while (ins[ins.length - 1] === null) ins.pop();
    const [o, state] = e.b.op(
      'LinearAttention',
      ins,
      {
        update_rule: linearAttentionRule(cfg),
        q_num_heads: cfg.qNumHeads,
        kv_num_heads: cfg.kvNumHeads,
        scale: attr.float(1),
      },
      { domain, outputs: 2, name: domain ? 'LinearAttention_contrib' : 'LinearAttention' },
    ) as [Value, Value];
    return { o: emitReadRows(e, cfg, o, p.reps), state, window: p.presentWindow };
  };
}

/** Emits LiZA lowered to com.microsoft.LinearAttention at the builder's insertion point. */
export function emitLizaContrib(b: Builder, attrs: LizaOpAttributes, inputs: LizaGraphInputs): LizaGraphOutputs {
  const cfg = resolveLizaAttributes(attrs);
  validateLizaInputs(cfg, presenceOf(inputs));
  return emitLiza(new Emitter(b), cfg, inputs, linearAttentionCore(CONTRIB_DOMAIN));
}

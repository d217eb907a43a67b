/**
 * The linear-attention memory of a cross-attention site: queries come from one sequence
 * (the decoder), keys and values from another (the encoder's output, or the cross-attention
 * cache that holds its projections).
 *
 * Every query sees the whole memory, so the memory is non-causal in the sense TPTT gives
 * bidirectional sites: the state S after writing every encoder token (LiZA's present_state,
 * same rule, order and gates as a self-attention site) is read by each query, once for the
 * encoder sequence in order and once reversed, and the two normalised readouts are averaged:
 *
 *   y_t = ½ (norm(S_fwdᵀ q̂_t) + norm(S_bwdᵀ q̂_t)),   q̂ = L2norm(SiLU(xq)) per head,
 *   norm(o) = o / sqrt(mean(o²) + 1e-6) over all query heads of the token,
 *
 * query head h reading kv head ⌊h / G⌋. The states come from two LiZA calls over (xk, xk,
 * xv) (their y is not used); the readout is standard ops, so every target and every opset
 * from 13 up runs it. The states depend on the encoder side only. By default a decoder
 * graph with cached cross keys and values rebuilds them from the cache at each call; with
 * `crossState` they are computed once: the graph that projects the encoder output exports
 * them ([B, 2, Hkv, d, d], forward then reversed) beside its cross keys, and the graph with
 * the caches reads them as an input instead of rebuilding them.
 */
import { type Builder, type Graph, type Model, type Node, type Value } from '../../ir/index.js';
import { addLizaNode, type LizaOpAttributes } from '../../ops/index.js';

const L2_EPS = 1e-6;
const RMS_EPS = 1e-6;
const INT64_MIN = -9223372036854775808n;

export interface CrossMemory {
  /** The memory's output [B, Tq, Hq·d]. */
  y: Value;
  /** The two LiZA nodes (forward and reversed encoder sequence); none when the states were given. */
  nodes: Node[];
  /** The two states [B, 2, Hkv, d, d] (forward, reversed). */
  states: Value;
}

/** Reverses axis 1 (time) of `x`. */
function reverseTime(b: Builder, x: Value, name: string): Value {
  return b.op('Slice', [x, b.ints([-1]), b.constant(BigInt64Array.from([INT64_MIN]), [1]), b.ints([1]), b.ints([-1])], {}, { name });
}

/** x / sqrt(sum(x², last axis) + eps), or with `mean` over `count` channels. */
function normalizeLast(b: Builder, x: Value, eps: number, count: number | null, name: string): Value {
  const ss = b.op('ReduceSum', [b.op('Mul', [x, x]), b.ints([-1])], { keepdims: 1 }, { name: `${name}_ss` });
  const scaled = count === null ? ss : b.op('Div', [ss, b.scalar(count)]);
  return b.op('Div', [x, b.op('Sqrt', [b.op('Add', [scaled, b.scalar(eps)])])], {}, { name });
}

/**
 * Adds the memory of a cross-attention site: xq [B, Tq, Hq·d] from the queries' sequence,
 * xk / xv [B, Tk, Hkv·d] from the memory's, `mask` [B, Tk] (0 = padding) or null.
 */
export function addCrossMemory(
  model: Model,
  graph: Graph,
  b: Builder,
  attrs: LizaOpAttributes,
  inputs: { xq: Value; xk: Value; xv: Value; mask: Value | null },
  options: { states?: Value | null },
): CrossMemory {
  const Hq = attrs.q_num_heads;
  const Hkv = attrs.kv_num_heads;
  const d = attrs.head_dim;
  // the state over the memory: LiZA over the keys as their own queries (Hkv heads), causal
  const stateAttrs: LizaOpAttributes = { ...attrs, q_num_heads: Hkv, causal: true };
  const state = (xk: Value, xv: Value, mask: Value | null, which: string): { node: Node; S: Value } => {
    const r = addLizaNode(model, graph, stateAttrs, { xq: xk, xk, xv, mask, pastState: null, pastWindow: null }, { builder: b, name: `LiZA_${which}` });
    return { node: r.node, S: r.presentState };
  };
  let S: [Value, Value];
  let states: Value;
  let nodes: Node[] = [];
  if (options.states) {
    // computed once, by the graph that saw the encoder output
    states = options.states;
    const pick = (i: number): Value => b.op('Gather', [states, b.constant(BigInt64Array.from([BigInt(i)]), [])], { axis: 1 }, { name: i ? 'S_reversed' : 'S_forward' });
    S = [pick(0), pick(1)];
  } else {
    const fwd = state(inputs.xk, inputs.xv, inputs.mask, 'memory');
    const bwd = state(
      reverseTime(b, inputs.xk, 'xk_reversed'),
      reverseTime(b, inputs.xv, 'xv_reversed'),
      inputs.mask ? reverseTime(b, inputs.mask, 'mask_reversed') : null,
      'memory_reversed',
    );
    S = [fwd.S, bwd.S];
    nodes = [fwd.node, bwd.node];
    states = b.op('Concat', [b.op('Unsqueeze', [fwd.S, b.ints([1])]), b.op('Unsqueeze', [bwd.S, b.ints([1])])], { axis: 1 }, { name: 'memory_states' });
  }
  // q̂ per head, grouped by kv head: [B, Tq, Hq·d] → [B, Hkv, G·Tq, d]
  const heads = b.op('Reshape', [inputs.xq, b.ints([0, 0, Hq, d])], {}, { name: 'q_heads' });
  const silu = b.op('Mul', [heads, b.op('Sigmoid', [heads])], {}, { name: 'q_silu' });
  const qhat = normalizeLast(b, silu, L2_EPS, null, 'q_hat');
  const grouped = b.op('Reshape', [b.op('Transpose', [qhat], { perm: [0, 2, 1, 3] }), b.ints([0, Hkv, -1, d])], {}, { name: 'q_grouped' });
  const readout = (S: Value, which: string): Value => {
    const o = b.op('MatMul', [grouped, S], {}, { name: `o_${which}` }); // rows q̂ᵀ S = (Sᵀ q̂)ᵀ
    const tokens = b.op('Transpose', [b.op('Reshape', [o, b.ints([0, Hq, -1, d])])], { perm: [0, 2, 1, 3] });
    const flat = b.op('Reshape', [tokens, b.ints([0, 0, Hq * d])], {}, { name: `o_${which}_flat` });
    return normalizeLast(b, flat, RMS_EPS, Hq * d, `y_${which}`);
  };
  const sum = b.op('Add', [readout(S[0], 'forward'), readout(S[1], 'reversed')]);
  const y = b.op('Mul', [sum, b.scalar(0.5)], {}, { name: 'cross_memory' });
  return { y, nodes, states };
}

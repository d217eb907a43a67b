/**
 * Small attention graphs built with the IR builder, with knobs to make each form and
 * each near miss: used by the discovery tests.
 */
import { Builder, DataType, Model, Tensor, Value, tensorType, verifyModel } from '../../src/ir/index.js';
import { seededRandom } from '../../src/ir/random.js';
import { pack4Bit } from '../helpers/quantize.js';

export interface DecomposedOptions {
  heads?: number;
  kvHeads?: number;
  d?: number;
  layers?: number;
  softmaxAxis?: number;
  /** Where V comes from: its projection (default) or straight from a graph input. */
  vSource?: 'projection' | 'input';
  /** Perm of the Transpose on K before Q·Kᵀ (null: no transpose at all). */
  kPerm?: number[] | null;
  mask?: 'causal' | 'padding' | 'causal+padding' | 'none';
  /** Add(mask, scores) instead of Add(scores, mask). */
  maskFirst?: boolean;
  /** How the scores are scaled. */
  scale?: 'div' | 'mul' | 'split' | 'split-unfolded' | 'computed' | 'projection' | 'none';
  /** Max(scores, -1e9) before the Softmax (older HF exports). */
  clamp?: boolean;
  /** GPT-2 style fused projection split into this many outputs (default: separate q/k/v). */
  fusedSplit?: number;
  past?: boolean;
  rotary?: boolean;
  /** Skip repeat_kv even when heads != kvHeads. */
  noRepeat?: boolean;
  /** Ops after the Softmax. */
  post?: ('cast' | 'isnan' | 'dropout')[];
  /** Cast the scores to float before the Softmax and back after. */
  castAround?: boolean;
  /** What reads the attention output: an output projection (default) or nothing but a graph output. */
  outputProjection?: boolean;
  /** The Softmax output goes straight to a graph output (no P·V). */
  noPV?: boolean;
  /** RMSNorm on q and k: per head after the heads Reshape (Qwen3) or on the projection output (OLMo2). */
  qkNorm?: 'head' | 'full';
  /** Keys and values projected from a second input (encoder states): cross-attention. */
  cross?: boolean;
  /**
   * Keys and values with no projection: 'cache' reads them from per-layer graph inputs
   * `past_key_values.{i}.encoder.key/value` [B, kvHeads, S, d] (an encoder-decoder's cached
   * cross-attention K/V), 'hidden' is the hidden state x itself cut into heads (a
   * self-attention without K/V projections; one layer, heads·d = 64).
   */
  kvSource?: 'cache' | 'hidden';
}

const HIDDEN = 64;

function rand(seed: number): () => number {
  const r = seededRandom(seed);
  return () => r() - 0.5;
}

export function weight(b: Builder, name: string, dims: number[], r: () => number): Value {
  const n = dims.reduce((a, x) => a * x, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = r() * 0.2;
  return b.graph.addInitializer(Tensor.fromArray(data, dims), name);
}

/** A decoder-ish model with `layers` decomposed attention blocks (F1, or F3 / F4 by options). */
export function decomposedModel(o: DecomposedOptions = {}): Model {
  const heads = o.heads ?? 4;
  const kvHeads = o.kvHeads ?? heads;
  const d = o.d ?? 16;
  const layers = o.layers ?? 1;
  const mask = o.mask ?? 'causal+padding';
  const model = new Model({ opsetImports: { '': 17 } });
  const g = model.graph;
  const b = new Builder(g);
  const r = rand(7);
  const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, ['B', 'T', HIDDEN])));
  const am = mask === 'none' || mask === 'causal' ? null : g.addInput(new Value('attention_mask', tensorType(DataType.INT64, ['B', 'T'])));
  const pos = o.rotary ? g.addInput(new Value('position_ids', tensorType(DataType.INT64, ['B', 'T']))) : null;
  const enc = o.cross ? g.addInput(new Value('encoder_hidden_states', tensorType(DataType.FLOAT, ['B', 'S', HIDDEN]))) : null;
  const vIn = o.vSource === 'input' ? g.addInput(new Value('v_in', tensorType(DataType.FLOAT, ['B', kvHeads, 'T', d]))) : null;

  // shared mask [B|1, 1, T, T]
  let maskV: Value | null = null;
  if (mask !== 'none') {
    const parts: Value[] = [];
    if (mask.startsWith('causal')) {
      const T = b.op('Gather', [b.op('Shape', [x]), b.constant(BigInt64Array.from([1n]), [])], { axis: 0 });
      const tt = b.op('Concat', [b.op('Unsqueeze', [T, b.ints([0])]), b.op('Unsqueeze', [T, b.ints([0])])], { axis: 0 });
      const ones = b.op('ConstantOfShape', [tt], { value: Tensor.fromArray(Uint8Array.from([1]), [1], DataType.BOOL) });
      const tri = b.op('Trilu', [ones], { upper: 0 });
      parts.push(b.op('Where', [tri, b.scalar(0), b.scalar(-1e9)], {}, { name: 'causal_mask' }));
    }
    if (am) {
      const m = b.op('Cast', [b.op('Unsqueeze', [am, b.ints([1, 2])])], { to: DataType.FLOAT });
      parts.push(b.op('Mul', [b.op('Sub', [b.scalar(1), m]), b.scalar(-1e9)], {}, { name: 'padding_mask' }));
    }
    maskV = parts.length === 2 ? b.op('Add', [parts[0]!, parts[1]!], {}, { name: 'mask' }) : parts[0]!;
  }

  // shared rotary tables [B, 1, T, d]
  let cos: Value | null = null;
  let sin: Value | null = null;
  if (pos) {
    const inv = b.initializer('inv_freq', Float32Array.from({ length: d / 2 }, (_, i) => 10000 ** (-(2 * i) / d)), [1, 1, d / 2]);
    const f = b.op('Mul', [b.op('Unsqueeze', [b.op('Cast', [pos], { to: DataType.FLOAT }), b.ints([2])]), inv]);
    const emb = b.op('Concat', [f, f], { axis: -1 });
    cos = b.op('Unsqueeze', [b.op('Cos', [emb]), b.ints([1])], {}, { name: 'rotary_cos' });
    sin = b.op('Unsqueeze', [b.op('Sin', [emb]), b.ints([1])], {}, { name: 'rotary_sin' });
  }
  const rope = (t: Value): Value => {
    if (!cos || !sin) return t;
    const x1 = b.op('Slice', [t, b.ints([0]), b.ints([d / 2]), b.ints([-1])]);
    const x2 = b.op('Slice', [t, b.ints([d / 2]), b.ints([d]), b.ints([-1])]);
    const rot = b.op('Concat', [b.op('Neg', [x2]), x1], { axis: -1 });
    return b.op('Add', [b.op('Mul', [t, cos]), b.op('Mul', [rot, sin])]);
  };
  const rmsNorm = (t: Value, width: number, name: string): Value => {
    const ms = b.op('ReduceMean', [b.op('Pow', [t, b.scalar(2)])], { axes: [-1], keepdims: 1 });
    const inv = b.op('Div', [b.scalar(1), b.op('Sqrt', [b.op('Add', [ms, b.scalar(1e-6)])])]);
    const wn = g.addInitializer(Tensor.fromArray(new Float32Array(width).fill(1), [width]), g.uniqueName(name));
    return b.op('Mul', [wn, b.op('Mul', [t, inv])]);
  };
  const heads4 = (t: Value, n: number, norm?: string): Value => {
    let r = b.op('Reshape', [t, b.ints([0, 0, n, d])]);
    if (norm && o.qkNorm === 'head') r = rmsNorm(r, d, norm);
    return b.op('Transpose', [r], { perm: [0, 2, 1, 3] });
  };
  const repeat = (t: Value): Value => {
    if (kvHeads === heads || o.noRepeat) return t;
    const G = heads / kvHeads;
    const shape = b.op('Shape', [t]);
    const bb = b.op('Slice', [shape, b.ints([0]), b.ints([1])]);
    const ll = b.op('Slice', [shape, b.ints([2]), b.ints([3])]);
    const e = b.op('Expand', [b.op('Unsqueeze', [t, b.ints([2])]), b.op('Concat', [bb, b.ints([kvHeads, G]), ll, b.ints([d])], { axis: 0 })]);
    return b.op('Reshape', [e, b.op('Concat', [bb, b.ints([heads]), ll, b.ints([d])], { axis: 0 })]);
  };

  const outputs: Value[] = [];
  let h = x;
  for (let i = 0; i < layers; i++) {
    b.prefix = `/layers.${i}/`;
    let q: Value;
    let k: Value;
    let v: Value;
    if (o.fusedSplit) {
      const n = o.fusedSplit;
      const w = weight(b, `layers.${i}.c_attn.weight`, [HIDDEN, heads * d + 2 * kvHeads * d], r);
      const bias = weight(b, `layers.${i}.c_attn.bias`, [heads * d + 2 * kvHeads * d], r);
      const flat = b.op('Reshape', [h, b.ints([-1, HIDDEN])]);
      // GPT-2's Conv1D: view(x.size()[:-1] + (nf,)) — the rows of x, then the fused width
      const rows = b.op('Slice', [b.op('Shape', [h]), b.ints([0]), b.ints([2])]);
      const fused = b.op('Reshape', [b.op('Gemm', [flat, w, bias], {}, { name: 'c_attn/Gemm' }), b.op('Concat', [rows, b.ints([heads * d + 2 * kvHeads * d])], { axis: 0 })]);
      const sizes = n === 3 ? [heads * d, kvHeads * d, kvHeads * d] : [heads * d, 2 * kvHeads * d];
      const parts = b.op('Split', [fused, b.ints(sizes)], { axis: 2 }, { outputs: n });
      [q, k, v] = [parts[0]!, parts[1]!, parts[n - 1]!];
    } else {
      const kvIn = enc ?? h;
      q = b.op('MatMul', [h, weight(b, `layers.${i}.q_proj.weight`, [HIDDEN, heads * d], r)], {}, { name: 'q_proj/MatMul' });
      k = b.op('MatMul', [kvIn, weight(b, `layers.${i}.k_proj.weight`, [HIDDEN, kvHeads * d], r)], {}, { name: 'k_proj/MatMul' });
      v = b.op('MatMul', [kvIn, weight(b, `layers.${i}.v_proj.weight`, [HIDDEN, kvHeads * d], r)], {}, { name: 'v_proj/MatMul' });
      if (o.scale === 'projection') q = b.op('Mul', [q, b.scalar(1 / Math.sqrt(d))], {}, { name: 'q_scaling' });
      if (o.qkNorm === 'full') {
        q = rmsNorm(q, heads * d, `layers.${i}.q_norm.weight`);
        k = rmsNorm(k, kvHeads * d, `layers.${i}.k_norm.weight`);
      }
    }
    let qh = rope(heads4(q, heads, `layers.${i}.q_norm.weight`));
    let kh = rope(heads4(k, kvHeads, `layers.${i}.k_norm.weight`));
    let vh = vIn ?? heads4(v, kvHeads);
    if (o.kvSource === 'cache') {
      kh = g.addInput(new Value(`past_key_values.${i}.encoder.key`, tensorType(DataType.FLOAT, ['B', kvHeads, 'S', d])));
      vh = g.addInput(new Value(`past_key_values.${i}.encoder.value`, tensorType(DataType.FLOAT, ['B', kvHeads, 'S', d])));
    } else if (o.kvSource === 'hidden') {
      kh = heads4(h, kvHeads);
      vh = heads4(h, kvHeads);
    }
    if (o.past) {
      const pk = g.addInput(new Value(`past_key_values.${i}.key`, tensorType(DataType.FLOAT, ['B', kvHeads, 'P', d])));
      const pv = g.addInput(new Value(`past_key_values.${i}.value`, tensorType(DataType.FLOAT, ['B', kvHeads, 'P', d])));
      kh = b.op('Concat', [pk, kh], { axis: 2 }, { name: 'Concat_k' });
      vh = b.op('Concat', [pv, vh], { axis: 2 }, { name: 'Concat_v' });
      outputs.push(kh, vh);
    }
    const kr = repeat(kh);
    const vr = repeat(vh);
    let kT: Value = o.kPerm === null ? kr : b.op('Transpose', [kr], { perm: o.kPerm ?? [0, 1, 3, 2] });
    const scale = o.scale ?? 'div';
    if (scale === 'split' || scale === 'split-unfolded') {
      // torch's SDPA symbolic: Mul(q, Sqrt(scale)), Mul(kᵀ, Sqrt(scale))
      const f = scale === 'split' ? b.scalar(d ** -0.25) : b.op('Sqrt', [b.scalar(1 / Math.sqrt(d))]);
      qh = b.op('Mul', [qh, f]);
      kT = b.op('Mul', [kT, f]);
    }
    let s = b.op('MatMul', [qh, kT], {}, { name: 'MatMul_qk' });
    if (scale === 'div') s = b.op('Div', [s, b.scalar(Math.sqrt(d))]);
    else if (scale === 'mul') s = b.op('Mul', [b.scalar(1 / Math.sqrt(d)), s]);
    else if (scale === 'computed') {
      const dd = b.op('Cast', [b.op('Gather', [b.op('Shape', [qh]), b.constant(BigInt64Array.from([3n]), [])], { axis: 0 })], { to: DataType.FLOAT });
      s = b.op('Div', [s, b.op('Sqrt', [dd])]);
    }
    if (maskV) s = o.maskFirst ? b.op('Add', [maskV, s]) : b.op('Add', [s, maskV]);
    if (o.clamp) s = b.op('Max', [s, b.scalar(-1e9)]);
    if (o.castAround) s = b.op('Cast', [s], { to: DataType.FLOAT });
    let p = b.op('Softmax', [s], { axis: o.softmaxAxis ?? -1 }, { name: 'Softmax' });
    for (const step of o.post ?? []) {
      if (step === 'cast') p = b.op('Cast', [p], { to: DataType.FLOAT });
      if (step === 'isnan') p = b.op('Where', [b.op('IsNaN', [p]), b.scalar(0), p]);
      if (step === 'dropout') p = b.op('Dropout', [p]);
    }
    if (o.noPV) {
      outputs.push(p);
      continue;
    }
    const ctx = b.op('MatMul', [p, vr], {}, { name: 'MatMul_pv' });
    const attn = b.op('Reshape', [b.op('Transpose', [ctx], { perm: [0, 2, 1, 3] }), b.ints([0, 0, heads * d])], {}, { name: 'attn_out' });
    if (o.outputProjection === false) {
      outputs.push(attn);
      continue;
    }
    const oo = b.op('MatMul', [attn, weight(b, `layers.${i}.o_proj.weight`, [heads * d, HIDDEN], r)], {}, { name: 'o_proj/MatMul' });
    h = b.op('Add', [h, oo]);
  }
  g.setOutputs([h, ...outputs]);
  verifyModel(model);
  return model;
}

export interface GqaOptions {
  packed?: boolean;
  extraAttrs?: Record<string, number>;
  omit?: string[];
  layers?: number;
}

/** com.microsoft.GroupQueryAttention layers (F2). */
export function gqaModel(o: GqaOptions = {}): Model {
  const heads = 4;
  const kvHeads = 2;
  const d = 16;
  const model = new Model({ opsetImports: { '': 17, 'com.microsoft': 1 } });
  const g = model.graph;
  const b = new Builder(g);
  const r = rand(3);
  const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, ['B', 'T', HIDDEN])));
  const am = g.addInput(new Value('attention_mask', tensorType(DataType.INT64, ['B', 'L'])));
  const seqlens = b.op('Cast', [b.op('Sub', [b.op('ReduceSum', [am, b.ints([1])], { keepdims: 0 }), b.constant(BigInt64Array.from([1n]), [])])], { to: DataType.INT32 }, { name: 'seqlens_k' });
  const total = b.op('Cast', [b.op('Gather', [b.op('Shape', [am]), b.constant(BigInt64Array.from([1n]), [])], { axis: 0 })], { to: DataType.INT32 });
  const cosCache = weight(b, 'cos_cache', [64, d / 2], r);
  const sinCache = weight(b, 'sin_cache', [64, d / 2], r);
  const outs: Value[] = [];
  let h = x;
  for (let i = 0; i < (o.layers ?? 1); i++) {
    const pk = g.addInput(new Value(`past_key_values.${i}.key`, tensorType(DataType.FLOAT, ['B', kvHeads, 'P', d])));
    const pv = g.addInput(new Value(`past_key_values.${i}.value`, tensorType(DataType.FLOAT, ['B', kvHeads, 'P', d])));
    let inputs: (Value | null)[];
    if (o.packed) {
      const qkv = b.op('MatMul', [h, weight(b, `layers.${i}.qkv_proj.weight`, [HIDDEN, (heads + 2 * kvHeads) * d], r)]);
      inputs = [qkv, null, null];
    } else {
      inputs = [
        b.op('MatMul', [h, weight(b, `layers.${i}.q_proj.weight`, [HIDDEN, heads * d], r)]),
        b.op('MatMul', [h, weight(b, `layers.${i}.k_proj.weight`, [HIDDEN, kvHeads * d], r)]),
        b.op('MatMul', [h, weight(b, `layers.${i}.v_proj.weight`, [HIDDEN, kvHeads * d], r)]),
      ];
    }
    const attrs: Record<string, number> = { num_heads: heads, kv_num_heads: kvHeads, do_rotary: 1, scale: 0.25, ...o.extraAttrs };
    for (const k of o.omit ?? []) delete attrs[k];
    const [y, presentK, presentV] = b.op(
      'GroupQueryAttention',
      [...inputs, pk, pv, seqlens, total, cosCache, sinCache],
      attrs,
      { domain: 'com.microsoft', outputs: 3, name: `gqa_${i}` },
    );
    g.registerName(`present.${i}.key`);
    g.registerName(`present.${i}.value`);
    presentK!.name = `present.${i}.key`;
    presentV!.name = `present.${i}.value`;
    outs.push(presentK!, presentV!);
    h = b.op('Add', [h, b.op('MatMul', [y!, weight(b, `layers.${i}.o_proj.weight`, [heads * d, HIDDEN], r)])]);
  }
  g.setOutputs([h, ...outs]);
  verifyModel(model);
  return model;
}

/**
 * com.microsoft.MultiHeadAttention (packed: key/value omitted; crossCache: key and value are
 * the BNSH graph inputs past_key_values.0.encoder.key / .value [B, 4, S_enc, 16], a decoder's
 * cached cross-attention, with encoder_attention_mask [B, S_enc] as its key_padding_mask when
 * `encoderMask`) or com.microsoft.Attention.
 */
export function msModel(op: 'MultiHeadAttention' | 'Attention', o: { packed?: boolean; unidirectional?: number; crossCache?: boolean; encoderMask?: boolean; bias?: boolean } = {}): Model {
  const heads = 4;
  const d = 16;
  const model = new Model({ opsetImports: { '': 17, 'com.microsoft': 1 } });
  const g = model.graph;
  const b = new Builder(g);
  const r = rand(5);
  const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, ['B', 'T', HIDDEN])));
  const mask = o.crossCache ? null : g.addInput(new Value('mask_index', tensorType(DataType.INT32, ['B', 'T'])));
  let y: Value;
  if (op === 'Attention') {
    const w = weight(b, 'qkv.weight', [HIDDEN, 3 * heads * d], r);
    const bias = weight(b, 'qkv.bias', [3 * heads * d], r);
    const attrs: Record<string, number> = { num_heads: heads };
    if (o.unidirectional !== undefined) attrs.unidirectional = o.unidirectional;
    y = b.op('Attention', [x, w, bias, mask], attrs, { domain: 'com.microsoft', name: 'ms_attention' });
  } else {
    const q = b.op('MatMul', [x, weight(b, 'q.weight', [HIDDEN, (o.packed ? 3 : 1) * heads * d], r)]);
    const cache = (name: string): Value => g.addInput(new Value(`past_key_values.0.encoder.${name}`, tensorType(DataType.FLOAT, ['B', heads, 'S_enc', d])));
    const inputs: (Value | null)[] = o.packed
      ? [b.op('Reshape', [q, b.ints([0, 0, heads, 3, d])]), null, null]
      : o.crossCache
        ? [q, cache('key'), cache('value')]
        : [q, b.op('MatMul', [x, weight(b, 'k.weight', [HIDDEN, heads * d], r)]), b.op('MatMul', [x, weight(b, 'v.weight', [HIDDEN, heads * d], r)])];
    const keyMask = o.crossCache ? (o.encoderMask ? g.addInput(new Value('encoder_attention_mask', tensorType(DataType.INT32, ['B', 'S_enc']))) : null) : mask;
    const bias = o.bias ? weight(b, 'qkv.bias', [3 * heads * d], r) : null;
    y = b.op('MultiHeadAttention', [...inputs, bias, keyMask], { num_heads: heads }, { domain: 'com.microsoft', name: 'mha' });
  }
  const out = b.op('MatMul', [y, weight(b, 'o.weight', [heads * d, HIDDEN], r)]);
  g.setOutputs([out]);
  verifyModel(model);
  return model;
}

/** ONNX Attention (opset 23) with 3-D inputs after RotaryEmbedding, or 4-D inputs after the heads Reshape. */
export function attention23Model(o: { rank?: 3 | 4; headsAttrs?: boolean; isCausal?: number; softcap?: number } = {}): Model {
  const heads = 4;
  const kvHeads = 2;
  const d = 16;
  const model = new Model({ irVersion: 11, opsetImports: { '': 23 } });
  const g = model.graph;
  const b = new Builder(g);
  const r = rand(9);
  const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, ['B', 'T', HIDDEN])));
  const pos = g.addInput(new Value('position_ids', tensorType(DataType.INT64, ['B', 'T'])));
  const cosCache = weight(b, 'cos_cache', [64, d / 2], r);
  const sinCache = weight(b, 'sin_cache', [64, d / 2], r);
  const q = b.op('MatMul', [x, weight(b, 'q.weight', [HIDDEN, heads * d], r)]);
  const k = b.op('MatMul', [x, weight(b, 'k.weight', [HIDDEN, kvHeads * d], r)]);
  const v = b.op('MatMul', [x, weight(b, 'v.weight', [HIDDEN, kvHeads * d], r)]);
  const attrs: Record<string, number> = {};
  if (o.isCausal !== undefined) attrs.is_causal = o.isCausal;
  if (o.softcap !== undefined) attrs.softcap = o.softcap;
  let y: Value;
  if ((o.rank ?? 3) === 3) {
    if (o.headsAttrs !== false) {
      attrs.q_num_heads = heads;
      attrs.kv_num_heads = kvHeads;
    }
    const qr = b.op('RotaryEmbedding', [q, cosCache, sinCache, pos], { num_heads: heads });
    const kr = b.op('RotaryEmbedding', [k, cosCache, sinCache, pos], { num_heads: kvHeads });
    y = b.op('Attention', [qr, kr, v], attrs, { name: 'attention' });
  } else {
    const h4 = (t: Value, n: number): Value => b.op('Transpose', [b.op('Reshape', [t, b.ints([0, 0, n, d])])], { perm: [0, 2, 1, 3] });
    const y4 = b.op('Attention', [h4(q, heads), h4(k, kvHeads), h4(v, kvHeads)], attrs, { name: 'attention' });
    y = b.op('Reshape', [b.op('Transpose', [y4], { perm: [0, 2, 1, 3] }), b.ints([0, 0, heads * d])]);
  }
  const out = b.op('MatMul', [y, weight(b, 'o.weight', [heads * d, HIDDEN], r)]);
  g.setOutputs([out]);
  verifyModel(model);
  return model;
}

/** Shuffles the node order of the main graph (seeded), without re-sorting it. */
export function shuffleNodes(model: Model, seed: number): void {
  const nodes = model.graph.nodes();
  const r = rand(seed);
  for (let i = nodes.length - 1; i > 0; i--) {
    const j = Math.floor((r() + 0.5) * (i + 1)) % (i + 1);
    [nodes[i], nodes[j]] = [nodes[j]!, nodes[i]!];
  }
  model.graph.reorder(nodes);
}

/**
 * Renames every node and every value of the main graph (graph inputs and outputs too) to
 * meaningless names, so tests can check that discovery reads structure, not names.
 */
export function renameEverything(model: Model, seed: number): void {
  const g = model.graph;
  const r = rand(seed);
  const tag = (): string => Math.floor((r() + 0.5) * 1e9).toString(36);
  let i = 0;
  for (const n of g) {
    n.name = `n${i++}_${tag()}`;
    for (const o of n.outputs) if (o.name) o.name = `v${i++}_${tag()}`;
  }
  for (const v of g.inputs) if (!v.initializer) v.name = `in${i++}_${tag()}`;
  for (const v of [...g.initializers.values()]) g.renameInitializer(v, `w${i++}_${tag()}`);
}

export interface PackedOptions {
  /** How q, k, v are taken from the [3, B, H, T, d] packed tensor. */
  cut: 'split-squeeze' | 'gather' | 'slice-squeeze';
  heads?: number;
  d?: number;
  /** A bias the linear branch cannot express, added to the scores. */
  bias?: 'alibi' | 't5' | 'none';
  /**
   * Quantized q/k/v and output projections: 4-bit MatMulNBits blocks, int8 QDQ
   * (DequantizeLinear → MatMul), or onnxruntime's dynamic quantization ('integer':
   * DynamicQuantizeLinear → MatMulInteger with int8 weights → Cast → Mul by the scales);
   * `dequantized` builds the same model with the dequantized float weights (the
   * reference; for 'integer' the activations are still quantized at run time, so it is
   * only close).
   */
  quant?: 'nbits' | 'qdq' | 'integer';
  dequantized?: boolean;
}

/** A [K, N] projection of `x` with weights quantized as `quant` (or their dequantized float values). */
function quantizedProjection(b: Builder, x: Value, name: string, K: number, N: number, r: () => number, quant: 'nbits' | 'qdq' | 'integer', dequantized: boolean): Value {
  const w = Float32Array.from({ length: K * N }, () => r() * 0.2);
  const deq = new Float32Array(K * N);
  const g = b.graph;
  if (quant === 'qdq' || quant === 'integer') {
    const scale = new Float32Array(N);
    const q = new Int8Array(K * N);
    for (let n = 0; n < N; n++) {
      let m = 0;
      for (let k = 0; k < K; k++) m = Math.max(m, Math.abs(w[k * N + n]!));
      scale[n] = m / 127 || 1;
      for (let k = 0; k < K; k++) {
        q[k * N + n] = Math.round(w[k * N + n]! / scale[n]!);
        deq[k * N + n] = q[k * N + n]! * scale[n]!;
      }
    }
    if (dequantized) return b.op('MatMul', [x, g.addInitializer(Tensor.fromArray(deq, [K, N]), `${name}.weight`)], {}, { name: `${name}/MatMul` });
    const qv = g.addInitializer(Tensor.fromArray(q, [K, N], DataType.INT8), `${name}.weight_quantized`);
    const sv = g.addInitializer(Tensor.fromArray(scale, [N]), `${name}.weight_scale`);
    const zv = g.addInitializer(Tensor.fromArray(new Int8Array(N), [N], DataType.INT8), `${name}.weight_zero_point`);
    if (quant === 'integer') {
      // onnxruntime quantize_dynamic (per channel): the activation is quantized to uint8 at run time
      const [y, ys, yzp] = b.op('DynamicQuantizeLinear', [x], {}, { outputs: 3, name: `${name}/DynamicQuantizeLinear` }) as [Value, Value, Value];
      const acc = b.op('MatMulInteger', [y, qv, yzp, zv], {}, { name: `${name}/MatMulInteger` });
      const scales = b.op('Mul', [ys, sv], {}, { name: `${name}/scales_mul` });
      return b.op('Mul', [b.op('Cast', [acc], { to: DataType.FLOAT }, { name: `${name}/Cast` }), scales], {}, { name: `${name}/output_scale_mul` });
    }
    const W = b.op('DequantizeLinear', [qv, sv, zv], { axis: 1 });
    return b.op('MatMul', [x, W], {}, { name: `${name}/MatMul` });
  }
  const block = 32;
  const blocks = K / block;
  const { packed, scales, deq: deq4 } = pack4Bit(w, K, N, block);
  deq.set(deq4);
  if (dequantized) return b.op('MatMul', [x, g.addInitializer(Tensor.fromArray(deq, [K, N]), `${name}.weight`)], {}, { name: `${name}/MatMul` });
  const bv = g.addInitializer(Tensor.fromArray(packed, [N, blocks, block / 2], DataType.UINT8), `${name}.weight_q4`);
  const sv = g.addInitializer(Tensor.fromArray(scales, [N * blocks]), `${name}.weight_scales`);
  return b.op('MatMulNBits', [x, bv, sv], { K, N, bits: 4, block_size: block }, { name: `${name}/MatMulNBits`, domain: 'com.microsoft' });
}

/**
 * A one-layer bidirectional encoder with a packed QKV projection, the way Paddle2ONNX and
 * timm export it: MatMul [E, 3E] + bias → Reshape [B, T, 3, H, d] → Transpose [2, 0, 3, 1, 4]
 * → q, k, v by Split + Squeeze (Paddle), Gather of a scalar index (timm's unbind), or
 * Slice + Squeeze; scores scaled by a Mul; optional ALiBi or T5-style bias on the scores.
 * Input `x` [B, T, 64], output `y` [B, T, 64].
 */
export function packedEncoderModel(o: PackedOptions): Model {
  const heads = o.heads ?? 4;
  const d = o.d ?? 16;
  const E = heads * d;
  const m = new Model({ opsetImports: { '': 17, ...(o.quant === 'nbits' && !o.dequantized ? { 'com.microsoft': 1 } : {}) } });
  const g = m.graph;
  const r = rand(7);
  const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, ['B', 'T', E])));
  const b = new Builder(g, { prefix: '/enc/' });
  const project = (input: Value, name: string, K: number, N: number): Value =>
    o.quant ? quantizedProjection(b, input, name, K, N, r, o.quant, !!o.dequantized) : b.op('MatMul', [input, weight(b, `${name}.weight`, [K, N], r)], {}, { name: `${name}/MatMul` });
  const qkv = b.op('Add', [project(x, 'qkv', E, 3 * E), weight(b, 'qkv.bias', [3 * E], r)]);
  const five = b.op('Reshape', [qkv, b.ints([0, 0, 3, heads, d])]);
  const packed = b.op('Transpose', [five], { perm: [2, 0, 3, 1, 4] }); // [3, B, H, T, d]
  let parts: Value[];
  if (o.cut === 'split-squeeze') {
    parts = (b.op('Split', [packed, b.ints([1, 1, 1])], { axis: 0 }, { outputs: 3 }) as Value[]).map((p) => b.op('Squeeze', [p, b.ints([0])]));
  } else if (o.cut === 'gather') {
    parts = [0, 1, 2].map((i) => b.op('Gather', [packed, b.constant(BigInt64Array.from([BigInt(i)]), [])], { axis: 0 }));
  } else {
    parts = [0, 1, 2].map((i) => b.op('Squeeze', [b.op('Slice', [packed, b.ints([i]), b.ints([i + 1]), b.ints([0])]), b.ints([0])]));
  }
  const [q, k, v] = parts as [Value, Value, Value];
  let s = b.op('Mul', [b.op('MatMul', [q, b.op('Transpose', [k], { perm: [0, 1, 3, 2] })], {}, { name: 'MatMul_qk' }), b.scalar(1 / Math.sqrt(d))]);
  if (o.bias === 'alibi') {
    // slopes[h] · (j − i), from Range positions
    const T = b.op('Gather', [b.op('Shape', [x]), b.constant(BigInt64Array.from([1n]), [])], { axis: 0 });
    const pos = b.op('Cast', [b.op('Range', [b.constant(BigInt64Array.from([0n]), []), T, b.constant(BigInt64Array.from([1n]), [])])], { to: DataType.FLOAT });
    const rel = b.op('Sub', [b.op('Unsqueeze', [pos, b.ints([0])]), b.op('Unsqueeze', [pos, b.ints([1])])]);
    const slopes = g.addInitializer(Tensor.fromArray(Float32Array.from({ length: heads }, (_, h) => 2 ** (-(8 * (h + 1)) / heads)), [heads, 1, 1]), 'alibi.slopes');
    s = b.op('Add', [s, b.op('Mul', [slopes, rel])]);
  } else if (o.bias === 't5') {
    // a learned table [buckets, H] gathered by (clipped) relative position, as [H, T, T]
    const T = b.op('Gather', [b.op('Shape', [x]), b.constant(BigInt64Array.from([1n]), [])], { axis: 0 });
    const pos = b.op('Range', [b.constant(BigInt64Array.from([0n]), []), T, b.constant(BigInt64Array.from([1n]), [])]);
    const rel = b.op('Sub', [b.op('Unsqueeze', [pos, b.ints([0])]), b.op('Unsqueeze', [pos, b.ints([1])])]);
    const bucket = b.op('Add', [b.op('Clip', [rel, b.constant(BigInt64Array.from([-7n]), []), b.constant(BigInt64Array.from([7n]), [])]), b.constant(BigInt64Array.from([7n]), [])]);
    const table = weight(b, 'relative_attention_bias.weight', [15, heads], r);
    s = b.op('Add', [s, b.op('Transpose', [b.op('Gather', [table, bucket], { axis: 0 })], { perm: [2, 0, 1] })]);
  }
  const p = b.op('Softmax', [s], { axis: -1 }, { name: 'Softmax' });
  const ctx = b.op('Reshape', [b.op('Transpose', [b.op('MatMul', [p, v], {}, { name: 'MatMul_pv' })], { perm: [0, 2, 1, 3] }), b.ints([0, 0, E])], {}, { name: 'attn_out' });
  // the residual: the output projection is not itself a graph output (as in real blocks)
  const y = b.op('Add', [project(ctx, 'out', E, E), x]);
  y.name = 'y';
  g.addOutput(y);
  verifyModel(m);
  return m;
}

/**
 * A one-layer causal attention written with Einsum: 'keras' keeps q, k, v as [B, T, H, d]
 * and passes the key first (`aecd,abcd->acbe`, `acbe,aecd->abcd`, Keras MultiHeadAttention);
 * 'torch' transposes them to [B, H, T, d] first (`bhid,bhjd->bhij`, torch.einsum code).
 * Input `x` [B, T, 64], output `y` [B, T, 64].
 */
export function einsumModel(style: 'keras' | 'torch', heads = 4, d = 16): Model {
  const E = heads * d;
  const m = new Model({ opsetImports: { '': 17 } });
  const g = m.graph;
  const r = rand(11);
  const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, ['B', 'T', E])));
  const b = new Builder(g, { prefix: '/attn/' });
  const proj = (name: string): Value => b.op('Reshape', [b.op('MatMul', [x, weight(b, `${name}.weight`, [E, E], r)], {}, { name: `${name}/MatMul` }), b.ints([0, 0, heads, d])]);
  let [q, k, v] = [proj('q_proj'), proj('k_proj'), proj('v_proj')];
  if (style === 'torch') [q, k, v] = [q, k, v].map((t) => b.op('Transpose', [t], { perm: [0, 2, 1, 3] })) as [Value, Value, Value];
  // Keras' MultiHeadAttention: einsum('aecd,abcd->acbe', key, query) and einsum('acbe,aecd->abcd', probs, value)
  const [scoresEq, outEq] = style === 'keras' ? ['aecd,abcd->acbe', 'acbe,aecd->abcd'] : ['bhid,bhjd->bhij', 'bhij,bhjd->bhid'];
  const operands = style === 'keras' ? [k, q] : [q, k];
  let s = b.op('Mul', [b.op('Einsum', operands, { equation: scoresEq }, { name: 'Einsum_qk' }), b.scalar(1 / Math.sqrt(d))]);
  // causal: a Trilu of ones over [T, T]
  const T = b.op('Slice', [b.op('Shape', [x]), b.ints([1]), b.ints([2])]);
  const ones = b.op('ConstantOfShape', [b.op('Concat', [T, T], { axis: 0 })], { value: Tensor.fromArray(Float32Array.from([1]), [1]) });
  const keep = b.op('Cast', [b.op('Trilu', [ones], { upper: 0 })], { to: DataType.BOOL });
  s = b.op('Where', [keep, s, b.scalar(-1e9)]);
  const p = b.op('Softmax', [s], { axis: -1 }, { name: 'Softmax' });
  let o = b.op('Einsum', [p, v], { equation: outEq }, { name: 'Einsum_pv' });
  if (style === 'torch') o = b.op('Transpose', [o], { perm: [0, 2, 1, 3] });
  const ctx = b.op('Reshape', [o, b.ints([0, 0, E])], {}, { name: 'attn_out' });
  const y = b.op('Add', [b.op('MatMul', [ctx, weight(b, 'o_proj.weight', [E, E], r)], {}, { name: 'o_proj/MatMul' }), x]);
  y.name = 'y';
  g.addOutput(y);
  verifyModel(m);
  return m;
}

export interface EinsumDenseOptions {
  /**
   * 'mha': Keras MultiHeadAttention (query/key/value `abc,cde->abde`, the key first in
   * `aecd,abcd->acbe`, output `abcd,cde->abe`); 'gqa': Keras GroupedQueryAttention
   * (`bqm,muh->bquh`, key/value heads repeated on axis 2 by Unsqueeze + Tile + Reshape,
   * `bquh,bkuh->buqk`, output `bquh,uhm->bqm`).
   */
  style: 'mha' | 'gqa';
  heads?: number;
  kvHeads?: number;
  d?: number;
}

/**
 * One causal attention layer as tf2onnx exports Keras' EinsumDense projections: 3-D
 * weights [E, H, d] (+ bias [H, d]) make [B, T, H, d] directly, the output projection's
 * weight is [H, d, E] (+ bias [E]); the query is scaled by 1/√d before the scores.
 * Input `x` [B, T, 64], output `y` [B, T, 64].
 */
export function einsumDenseModel(o: EinsumDenseOptions): Model {
  const E = HIDDEN;
  const heads = o.heads ?? 4;
  const kvHeads = o.kvHeads ?? heads;
  const d = o.d ?? 16;
  const m = new Model({ opsetImports: { '': 17 } });
  const g = m.graph;
  const r = rand(13);
  const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, ['B', 'T', E])));
  const b = new Builder(g, { prefix: '/mha/' });
  const mha = o.style === 'mha';
  const dense = (name: string, n: number): Value =>
    b.op('Add', [b.op('Einsum', [x, weight(b, `${name}/kernel`, [E, n, d], r)], { equation: mha ? 'abc,cde->abde' : 'bqm,muh->bquh' }, { name: `${name}/Einsum` }), weight(b, `${name}/bias`, [n, d], r)], {}, { name: `${name}/Add` });
  let q = b.op('Mul', [dense('query', heads), b.scalar(1 / Math.sqrt(d))], {}, { name: 'query_scale' });
  let k = dense('key', kvHeads);
  let v = dense('value', kvHeads);
  if (heads !== kvHeads) {
    // ops.repeat(t, G, axis=2): each key/value head copied G times in place
    const G = heads / kvHeads;
    const repeat = (t: Value): Value => b.op('Reshape', [b.op('Tile', [b.op('Unsqueeze', [t, b.ints([3])]), b.ints([1, 1, 1, G, 1])]), b.ints([0, 0, heads, d])]);
    [k, v] = [repeat(k), repeat(v)];
  }
  const [scoresEq, combineEq, outEq] = mha ? ['aecd,abcd->acbe', 'acbe,aecd->abcd', 'abcd,cde->abe'] : ['bquh,bkuh->buqk', 'buqk,bkuh->bquh', 'bquh,uhm->bqm'];
  const s0 = b.op('Einsum', mha ? [k, q] : [q, k], { equation: scoresEq }, { name: 'Einsum_qk' });
  const T = b.op('Slice', [b.op('Shape', [x]), b.ints([1]), b.ints([2])]);
  const ones = b.op('ConstantOfShape', [b.op('Concat', [T, T], { axis: 0 })], { value: Tensor.fromArray(Float32Array.from([1]), [1]) });
  const keep = b.op('Cast', [b.op('Trilu', [ones], { upper: 0 })], { to: DataType.BOOL });
  const p = b.op('Softmax', [b.op('Where', [keep, s0, b.scalar(-1e9)])], { axis: -1 }, { name: 'Softmax' });
  q = b.op('Einsum', [p, v], { equation: combineEq }, { name: 'Einsum_pv' });
  const out = b.op('Add', [b.op('Einsum', [q, weight(b, 'attention_output/kernel', [heads, d, E], r)], { equation: outEq }, { name: 'attention_output/Einsum' }), weight(b, 'attention_output/bias', [E], r)]);
  const y = b.op('Add', [out, x]);
  y.name = 'y';
  g.addOutput(y);
  verifyModel(m);
  return m;
}

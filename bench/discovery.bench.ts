/**
 * Attention discovery benchmark.
 *
 * discovery: a 32-layer (4 with --quick) Llama-like decoder generated with the IR
 *   builder in the shape of a real torch export (the llama_past fixture): shape
 *   arithmetic for every Reshape target (Shape → Gather → Unsqueeze → Concat), rotary
 *   via rotate_half with computed Slice bounds, past Concat, repeat_kv
 *   (Unsqueeze → Expand with torch's Where(Equal) shape wrapper → Reshape), Div scale,
 *   a shared causal + padding mask sliced per layer, Softmax → Cast → MatMul →
 *   Transpose → Reshape → o_proj, decomposed RMSNorm and SwiGLU. It times
 *   `discoverAttention` (median of runs) against `decodeModel` of the same model's bytes,
 *   in the same run, and checks that every layer is found.
 */
import { Builder, DataType, Model, Tensor, Value, decodeModel, encodeModel, tensorType } from '../src/ir/index.js';
import { discoverAttention } from '../src/passes/index.js';
import { count, ms, ratio, suite, time } from './harness.js';

export interface ExportLikeOptions {
  layers: number;
  hidden?: number;
  heads?: number;
  kvHeads?: number;
  vocab?: number;
  intermediate?: number;
  withPast?: boolean;
}

/** A decoder shaped like a torch (Optimum) export of Llama, built with the IR builder. */
export function buildExportLikeDecoder(o: ExportLikeOptions): Model {
  const hidden = o.hidden ?? 64;
  const H = o.heads ?? 4;
  const Hkv = o.kvHeads ?? 2;
  const vocab = o.vocab ?? 256;
  const inter = o.intermediate ?? 128;
  const d = hidden / H;
  const G = H / Hkv;
  const model = new Model({ irVersion: 8, opsetImports: { '': 17 } });
  model.producerName = 'titanize-bench';
  const g = model.graph;
  const b = new Builder(g);
  let seed = 1;
  const w = (name: string, dims: number[]): Value => {
    const n = dims.reduce((a, x) => a * x, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      data[i] = (seed / 2 ** 32 - 0.5) * 0.1;
    }
    return g.addInitializer(Tensor.fromArray(data, dims), name);
  };
  const i64 = (v: number): Value => b.constant(BigInt64Array.from([BigInt(v)]), []);
  const ints = (v: number[]): Value => b.ints(v);
  const dim = (x: Value, i: number): Value => b.op('Gather', [b.op('Shape', [x]), i64(i)], { axis: 0 });
  const unsq0 = (x: Value): Value => b.op('Unsqueeze', [x, ints([0])]);
  const shapeOf = (...parts: (Value | number)[]): Value =>
    b.op('Concat', parts.map((p) => (typeof p === 'number' ? ints([p]) : unsq0(p))), { axis: 0 });

  const inputIds = g.addInput(new Value('input_ids', tensorType(DataType.INT64, ['batch_size', 'sequence_length'])));
  const attentionMask = g.addInput(new Value('attention_mask', tensorType(DataType.INT64, ['batch_size', 'total_sequence_length'])));
  const positionIds = g.addInput(new Value('position_ids', tensorType(DataType.INT64, ['batch_size', 'sequence_length'])));
  let h = b.op('Gather', [w('model.embed_tokens.weight', [vocab, hidden]), inputIds], {}, { name: '/model/embed_tokens/Gather' });

  // shared mask [B, 1, T, L]: causal (Range/Less) + padding, torch style
  b.prefix = '/model/';
  const T = dim(inputIds, 1);
  const L = dim(attentionMask, 1);
  const P = b.op('Sub', [L, T]);
  const cols = unsq0(b.op('Range', [i64(0), L, i64(1)]));
  const rows = b.op('Unsqueeze', [b.op('Add', [b.op('Range', [P, L, i64(1)]), i64(1)]), ints([1])]);
  const causal = b.op('Less', [cols, rows]);
  const minf = b.constant(Float32Array.from([-3.4028234663852886e38]), []);
  const causalAdd = b.op('Where', [causal, b.scalar(0), minf]);
  const pad = b.op('Sub', [b.scalar(1), b.op('Cast', [b.op('Unsqueeze', [attentionMask, ints([1, 2])])], { to: DataType.FLOAT })]);
  const padAdd = b.op('Where', [b.op('Cast', [pad], { to: DataType.BOOL }), minf, b.scalar(0)]);
  const mask = b.op('Add', [b.op('Unsqueeze', [causalAdd, ints([0, 1])]), padAdd], {}, { name: 'causal_mask' });

  // shared rotary tables [B, T, d]
  b.prefix = '/model/rotary_emb/';
  const inv = b.initializer('inv_freq', Float32Array.from({ length: d / 2 }, (_, i) => 10000 ** (-(2 * i) / d)), [1, d / 2, 1]);
  const freqs = b.op('Transpose', [b.op('MatMul', [inv, b.op('Cast', [b.op('Unsqueeze', [positionIds, ints([1])])], { to: DataType.FLOAT })])], { perm: [0, 2, 1] });
  const emb = b.op('Concat', [freqs, freqs], { axis: -1 });
  const cos = b.op('Cos', [emb]);
  const sin = b.op('Sin', [emb]);

  const rms = (x: Value, name: string): Value => {
    const v = b.op('ReduceMean', [b.op('Pow', [x, b.scalar(2)])], { axes: [-1], keepdims: 1 });
    const r = b.op('Div', [b.scalar(1), b.op('Sqrt', [b.op('Add', [v, b.scalar(1e-6)])])]);
    return b.op('Mul', [w(name, [hidden]), b.op('Mul', [x, r])]);
  };

  const pasts: Value[] = [];
  for (let i = 0; i < o.layers; i++) {
    b.prefix = `/model/layers.${i}/self_attn/`;
    const x = rms(h, `model.layers.${i}.input_layernorm.weight`);
    const B = dim(x, 0);
    const Tq = dim(x, 1);
    const q = b.op('MatMul', [x, w(`onnx::MatMul_q${i}`, [hidden, H * d])], {}, { name: 'q_proj/MatMul' });
    const k = b.op('MatMul', [x, w(`onnx::MatMul_k${i}`, [hidden, Hkv * d])], {}, { name: 'k_proj/MatMul' });
    const v = b.op('MatMul', [x, w(`onnx::MatMul_v${i}`, [hidden, Hkv * d])], {}, { name: 'v_proj/MatMul' });
    const heads = (t: Value, n: number): Value => b.op('Transpose', [b.op('Reshape', [t, shapeOf(B, Tq, n, d)])], { perm: [0, 2, 1, 3] });
    const cosU = b.op('Unsqueeze', [cos, ints([1])]);
    const sinU = b.op('Unsqueeze', [sin, ints([1])]);
    const rope = (t: Value): Value => {
      const half = b.op('Cast', [b.op('Div', [dim(t, 3), i64(2)])], { to: DataType.INT64 });
      const x1 = b.op('Slice', [t, ints([0]), unsq0(half), ints([3]), ints([1])]);
      const x2 = b.op('Slice', [t, unsq0(half), ints([2 ** 62]), ints([3]), ints([1])]);
      const rot = b.op('Concat', [b.op('Neg', [x2]), x1], { axis: -1 });
      return b.op('Add', [b.op('Mul', [t, cosU]), b.op('Mul', [rot, sinU])]);
    };
    const qh = rope(heads(q, H));
    let kh = rope(heads(k, Hkv));
    let vh = heads(v, Hkv);
    if (o.withPast) {
      const t = tensorType(DataType.FLOAT, ['batch_size', Hkv, 'past_sequence_length', d]);
      const pk = g.addInput(new Value(`past_key_values.${i}.key`, t));
      const pv = g.addInput(new Value(`past_key_values.${i}.value`, t));
      kh = b.op('Concat', [pk, kh], { axis: -2 });
      vh = b.op('Concat', [pv, vh], { axis: -2 });
      pasts.push(kh, vh);
    }
    const repeat = (t: Value): Value => {
      const [b0, h0, s0, d0] = [dim(t, 0), dim(t, 1), dim(t, 2), dim(t, 3)];
      const target = b.op('Reshape', [shapeOf(b0, h0, G, s0, d0), ints([-1])]);
      const ones = b.op('ConstantOfShape', [b.op('Shape', [target])], { value: Tensor.fromArray(BigInt64Array.from([1n]), [1]) });
      const fixed = b.op('Where', [b.op('Equal', [target, b.op('Mul', [ones, i64(-1)])]), ones, target]);
      const e = b.op('Expand', [b.op('Unsqueeze', [t, ints([2])]), fixed]);
      return b.op('Reshape', [e, shapeOf(b0, b.op('Mul', [h0, i64(G)]), s0, d0)]);
    };
    const kr = repeat(kh);
    const vr = repeat(vh);
    const scores = b.op('Div', [b.op('MatMul', [qh, b.op('Transpose', [kr], { perm: [0, 1, 3, 2] })]), b.scalar(Math.sqrt(d))]);
    const m = b.op('Slice', [mask, ints([0]), unsq0(dim(kr, 2)), ints([3]), ints([1])]);
    const p = b.op('Cast', [b.op('Softmax', [b.op('Add', [scores, m])], { axis: -1 })], { to: DataType.FLOAT });
    const ctx = b.op('Transpose', [b.op('MatMul', [p, vr])], { perm: [0, 2, 1, 3] });
    const attn = b.op('Reshape', [ctx, shapeOf(B, Tq, hidden)]);
    h = b.op('Add', [h, b.op('MatMul', [attn, w(`onnx::MatMul_o${i}`, [hidden, hidden])], {}, { name: 'o_proj/MatMul' })]);
    b.prefix = `/model/layers.${i}/mlp/`;
    const x2 = rms(h, `model.layers.${i}.post_attention_layernorm.weight`);
    const gate = b.op('MatMul', [x2, w(`onnx::MatMul_g${i}`, [hidden, inter])]);
    const up = b.op('MatMul', [x2, w(`onnx::MatMul_u${i}`, [hidden, inter])]);
    const act = b.op('Mul', [gate, b.op('Sigmoid', [gate])]);
    h = b.op('Add', [h, b.op('MatMul', [b.op('Mul', [act, up]), w(`onnx::MatMul_d${i}`, [inter, hidden])])]);
  }
  b.prefix = '/model/';
  const logits = b.op('MatMul', [rms(h, 'model.norm.weight'), w('lm_head.weight', [hidden, vocab])]);
  const outs = [logits];
  logits.name = 'logits';
  g.registerName('logits');
  pasts.forEach((v, j) => {
    v.name = `present.${j >> 1}.${j % 2 ? 'value' : 'key'}`;
    g.registerName(v.name);
    outs.push(v);
  });
  g.setOutputs(outs);
  return model;
}

export interface DiscoveryBenchResult {
  layers: number;
  nodes: number;
  sites: number;
  discoverMs: number;
  decodeMs: number;
  /** discover / decode: below 1 means discovery takes less than decoding the file. */
  ratio: number;
}

/** Times discovery against decoding on a generated decoder; usable without the harness. */
export function discoveryBench(layers = 32, runs = 15): DiscoveryBenchResult {
  const model = buildExportLikeDecoder({ layers, withPast: true });
  const bytes = encodeModel(model);
  const decoded = decodeModel(bytes);
  const found = discoverAttention(decoded);
  if (found.sites.length !== layers) {
    throw new Error(`discovery found ${found.sites.length} sites in a ${layers}-layer decoder: ${found.rejected.map((r) => r.reason).join('; ')}`);
  }
  const dec = time(() => decodeModel(bytes), { runs, warmup: 2 });
  const disc = time(() => discoverAttention(decoded), { runs, warmup: 2 });
  return { layers, nodes: decoded.graph.size, sites: found.sites.length, discoverMs: disc.median, decodeMs: dec.median, ratio: disc.median / dec.median };
}

suite('discovery', (ctx) => {
  const layers = ctx.quick ? 4 : 32;
  const r = discoveryBench(layers, ctx.quick ? 3 : 15);
  ctx.table('attention discovery on a generated Llama-like decoder (export-shaped)', [
    {
      layers: count(r.layers),
      nodes: count(r.nodes),
      sites: count(r.sites),
      discover: ms(r.discoverMs),
      'decode bytes': ms(r.decodeMs),
      'discover/decode': ratio(r.discoverMs, r.decodeMs),
    },
  ]);
  ctx.record('discovery', r);
});

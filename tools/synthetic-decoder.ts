/**
 * A Llama-style decoder built with the IR builder, shaped like a Hugging Face / Optimum
 * export (form F1 of DESIGN.md §4): RMSNorm, rotary via rotate_half (Slice/Neg/Concat),
 * past Concat, repeat_kv (Unsqueeze/Expand/Reshape), MatMul → Div → Add mask → Softmax →
 * MatMul → Transpose → Reshape → o_proj, SwiGLU. Used by benchmarks to get models of any
 * size without an exporter: weights are random (seeded, inline), or external references
 * into a sparse file that nothing reads.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Builder, DataType, Model, Tensor, Value, seededRandom, tensorType, type Graph } from '../src/ir/index.js';

export interface SyntheticDecoderConfig {
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  intermediate: number;
  /** Optimum-style past_key_values.{i}.key/value inputs and present.{i}.* outputs. */
  withPast?: boolean;
  /** 'random': seeded inline weights; 'external': references into `dataFile` (sparse, never read). */
  weights?: 'random' | { externalDir: string; dataFile: string };
  seed?: number;
}

export interface SyntheticDecoder {
  model: Model;
  /** Bytes of all weights. */
  weightBytes: number;
}

export function syntheticDecoder(cfg: SyntheticDecoderConfig): SyntheticDecoder {
  const { layers, hidden, heads, kvHeads, vocab, intermediate } = cfg;
  const d = hidden / heads;
  if (!Number.isInteger(d) || heads % kvHeads !== 0) throw new Error('hidden must divide by heads, heads by kvHeads');
  const G = heads / kvHeads;
  const model = new Model({ irVersion: 8, opsetImports: { '': 17 } });
  model.producerName = 'titanize-synthetic';
  const g = model.graph;
  const b = new Builder(g);
  const rand = seededRandom(cfg.seed ?? 1);
  let weightBytes = 0;
  let dataOffset = 0;
  const ext = cfg.weights && cfg.weights !== 'random' ? cfg.weights : undefined;

  const weight = (name: string, dims: number[], scale: number): Value => {
    const n = dims.reduce((a, x) => a * x, 1);
    weightBytes += n * 4;
    if (ext) {
      const length = n * 4;
      const offset = dataOffset;
      dataOffset += Math.ceil(length / 64) * 64;
      const entries = [
        { key: 'location', value: ext.dataFile },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(length) },
      ];
      const t = new Tensor({ name, dataType: DataType.FLOAT, dims, storage: { kind: 'external', ref: { location: ext.dataFile, offset, length, baseDir: ext.externalDir, entries } } });
      return g.addInitializer(t, name);
    }
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = (rand() * 2 - 1) * scale;
    return g.addInitializer(Tensor.fromArray(data, dims), name);
  };
  const ones = (name: string, n: number): Value => {
    weightBytes += n * 4;
    return g.addInitializer(Tensor.fromArray(new Float32Array(n).fill(1), [n]), name);
  };

  const inputIds = g.addInput(new Value('input_ids', tensorType(DataType.INT64, ['batch_size', 'sequence_length'])));
  const attentionMask = g.addInput(new Value('attention_mask', tensorType(DataType.INT64, ['batch_size', 'total_sequence_length'])));
  const positionIds = g.addInput(new Value('position_ids', tensorType(DataType.INT64, ['batch_size', 'sequence_length'])));
  const pasts: [Value, Value][] = [];
  if (cfg.withPast) {
    for (let i = 0; i < layers; i++) {
      const t = tensorType(DataType.FLOAT, ['batch_size', kvHeads, 'past_sequence_length', d]);
      pasts.push([g.addInput(new Value(`past_key_values.${i}.key`, t)), g.addInput(new Value(`past_key_values.${i}.value`, { ...t }))]);
    }
  }

  const embed = weight('model.embed_tokens.weight', [vocab, hidden], 1);
  let h = b.op('Gather', [embed, inputIds], { axis: 0 });

  // ---- shared mask: causal (offset by the past length) and padding, additive [B,1,T,L]
  const i64 = (v: number[]): Value => b.ints(v);
  const sh = (v: Value, i: number): Value => b.op('Gather', [b.op('Shape', [v]), b.constant(BigInt64Array.from([BigInt(i)]), [])], { axis: 0 });
  const T = sh(inputIds, 1);
  const L = sh(attentionMask, 1);
  const past = b.op('Sub', [L, T]);
  const one = b.constant(BigInt64Array.from([1n]), []);
  const zero = b.constant(BigInt64Array.from([0n]), []);
  const rows = b.op('Unsqueeze', [b.op('Range', [past, L, one]), i64([1])]); // [T,1]
  const cols = b.op('Unsqueeze', [b.op('Range', [zero, L, one]), i64([0])]); // [1,L]
  const causal = b.op('Unsqueeze', [b.op('LessOrEqual', [cols, rows]), i64([0, 1])]); // [1,1,T,L]
  const padding = b.op('Cast', [b.op('Unsqueeze', [attentionMask, i64([1, 2])])], { to: DataType.BOOL }); // [B,1,1,L]
  const allowed = b.op('And', [causal, padding]);
  const minVal = b.constant(Float32Array.from([-3.4028234663852886e38]), []);
  const zf = b.constant(Float32Array.from([0]), []);
  const mask = b.op('Where', [allowed, zf, minVal], {}, { name: 'causal_mask' });

  // ---- shared rotary tables [B,1,T,d]
  const invFreq = new Float32Array(d / 2);
  for (let i = 0; i < d / 2; i++) invFreq[i] = 1 / Math.pow(10000, (2 * i) / d);
  const inv = b.initializer('model.rotary_emb.inv_freq', invFreq, [1, 1, d / 2]);
  const pos = b.op('Unsqueeze', [b.op('Cast', [positionIds], { to: DataType.FLOAT }), i64([2])]);
  const freqs = b.op('Mul', [pos, inv]);
  const emb = b.op('Concat', [freqs, freqs], { axis: -1 });
  const cos = b.op('Unsqueeze', [b.op('Cos', [emb]), i64([1])]);
  const sin = b.op('Unsqueeze', [b.op('Sin', [emb]), i64([1])]);

  const rmsnorm = (x: Value, w: Value): Value => {
    const ms = b.op('ReduceMean', [b.op('Pow', [x, b.scalar(2)])], { axes: [-1], keepdims: 1 });
    const r = b.op('Sqrt', [b.op('Add', [ms, b.scalar(1e-6)])]);
    return b.op('Mul', [w, b.op('Div', [x, r])]);
  };
  const rotateHalf = (x: Value): Value => {
    const x1 = b.op('Slice', [x, i64([0]), i64([d / 2]), i64([-1]), i64([1])]);
    const x2 = b.op('Slice', [x, i64([d / 2]), i64([d]), i64([-1]), i64([1])]);
    return b.op('Concat', [b.op('Neg', [x2]), x1], { axis: -1 });
  };
  const rope = (x: Value): Value => b.op('Add', [b.op('Mul', [x, cos]), b.op('Mul', [rotateHalf(x), sin])]);
  const heads4 = (x: Value, n: number): Value => b.op('Transpose', [b.op('Reshape', [x, i64([0, 0, n, d])])], { perm: [0, 2, 1, 3] });

  const presents: Value[] = [];
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}`;
    b.prefix = `/model/layers.${i}/`;
    const x = rmsnorm(h, ones(`${p}.input_layernorm.weight`, hidden));
    const s = 1 / Math.sqrt(hidden);
    const q = b.op('MatMul', [x, weight(`${p}.self_attn.q_proj.weight`, [hidden, heads * d], s)], {}, { name: 'self_attn/q_proj/MatMul' });
    const k = b.op('MatMul', [x, weight(`${p}.self_attn.k_proj.weight`, [hidden, kvHeads * d], s)], {}, { name: 'self_attn/k_proj/MatMul' });
    const v = b.op('MatMul', [x, weight(`${p}.self_attn.v_proj.weight`, [hidden, kvHeads * d], s)], {}, { name: 'self_attn/v_proj/MatMul' });
    const qh = rope(heads4(q, heads));
    let kh = rope(heads4(k, kvHeads));
    let vh = heads4(v, kvHeads);
    if (cfg.withPast) {
      kh = b.op('Concat', [pasts[i]![0], kh], { axis: 2 });
      vh = b.op('Concat', [pasts[i]![1], vh], { axis: 2 });
      presents.push(kh, vh);
    }
    const repeat = (x: Value): Value => {
      if (G === 1) return x;
      const shape = b.op('Shape', [x]);
      const bb = b.op('Slice', [shape, i64([0]), i64([1])]);
      const ll = b.op('Slice', [shape, i64([2]), i64([3])]);
      const expShape = b.op('Concat', [bb, i64([kvHeads, G]), ll, i64([d])], { axis: 0 });
      const e = b.op('Expand', [b.op('Unsqueeze', [x, i64([2])]), expShape]);
      const outShape = b.op('Concat', [bb, i64([heads]), ll, i64([d])], { axis: 0 });
      return b.op('Reshape', [e, outShape]);
    };
    const kr = repeat(kh);
    const vr = repeat(vh);
    const scores = b.op('Div', [b.op('MatMul', [qh, b.op('Transpose', [kr], { perm: [0, 1, 3, 2] })]), b.scalar(Math.sqrt(d))]);
    const probs = b.op('Softmax', [b.op('Add', [scores, mask])], { axis: -1 });
    const ctx = b.op('Reshape', [b.op('Transpose', [b.op('MatMul', [probs, vr])], { perm: [0, 2, 1, 3] }), i64([0, 0, hidden])]);
    const o = b.op('MatMul', [ctx, weight(`${p}.self_attn.o_proj.weight`, [hidden, hidden], s)], {}, { name: 'self_attn/o_proj/MatMul' });
    h = b.op('Add', [h, o]);
    const x2 = rmsnorm(h, ones(`${p}.post_attention_layernorm.weight`, hidden));
    const gate = b.op('MatMul', [x2, weight(`${p}.mlp.gate_proj.weight`, [hidden, intermediate], s)]);
    const up = b.op('MatMul', [x2, weight(`${p}.mlp.up_proj.weight`, [hidden, intermediate], s)]);
    const act = b.op('Mul', [gate, b.op('Sigmoid', [gate])]);
    const down = b.op('MatMul', [b.op('Mul', [act, up]), weight(`${p}.mlp.down_proj.weight`, [intermediate, hidden], 1 / Math.sqrt(intermediate))]);
    h = b.op('Add', [h, down]);
  }
  b.prefix = '/model/';
  const hn = rmsnorm(h, ones('model.norm.weight', hidden));
  const logits = b.op('MatMul', [hn, weight('lm_head.weight', [hidden, vocab], 1 / Math.sqrt(hidden))]);
  renameOutput(g, logits, 'logits', tensorType(DataType.FLOAT, ['batch_size', 'sequence_length', vocab]));
  const outs = [g.outputs[0]!];
  presents.forEach((v, j) => {
    const name = `present.${Math.floor(j / 2)}.${j % 2 ? 'value' : 'key'}`;
    renameValue(g, v, name);
    v.type = tensorType(DataType.FLOAT, ['batch_size', kvHeads, 'total_sequence_length', d]);
    outs.push(v);
  });
  g.setOutputs(outs);
  if (ext) {
    // a sparse file of the right size: the bytes are never read by conversion or inspection
    const file = path.join(ext.externalDir, ext.dataFile);
    const fd = fs.openSync(file, 'w');
    fs.ftruncateSync(fd, dataOffset);
    fs.closeSync(fd);
  }
  return { model, weightBytes };
}

function renameValue(g: Graph, v: Value, name: string): void {
  g.registerName(name);
  v.name = name;
}

function renameOutput(g: Graph, v: Value, name: string, type: ReturnType<typeof tensorType>): void {
  renameValue(g, v, name);
  v.type = type;
  g.setOutputs([v]);
}

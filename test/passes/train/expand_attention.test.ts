/**
 * Fused attention ops expanded to standard ops for training graphs equal onnxruntime's own
 * kernels: the ONNX Attention op (4-D inputs with a KV cache, grouped-query heads, an
 * additive mask and an explicit scale; 3-D inputs split by the head attributes, a boolean
 * mask and is_causal), com.microsoft.GroupQueryAttention (the gqa_contrib fixture, packed
 * query, rotary variants, padding, local window) and com.microsoft.MultiHeadAttention (bias,
 * padding masks, attention_bias, KV caches, unidirectional). Tolerance 1e-5 (float32
 * softmax attention computed in another order).
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Builder, DataType, Model, Value, attr, decodeModel, encodeModel, getMetadata, tensorType, verifyModel } from '../../../src/ir/index.js';
import { expandAttentionOps } from '../../../src/passes/train/expand_attention.js';
import * as path from 'node:path';
import { loadModel } from '../../../src/node/index.js';
import { loadRef, maxAbs, maxAbsDiff } from '../../helpers/compare.js';

const FIX = path.resolve(__dirname, '../../fixtures');

type Case = { name: string; inputs: [string, number[], 'float32' | 'bool'][]; attrs: Record<string, unknown>; outputs: number };

const cases: Case[] = [
  {
    name: '4-D, KV cache, grouped-query heads, additive mask, scale',
    inputs: [['q', [2, 4, 3, 8], 'float32'], ['k', [2, 2, 3, 8], 'float32'], ['v', [2, 2, 3, 8], 'float32'], ['mask', [3, 5], 'float32'], ['past_k', [2, 2, 2, 8], 'float32'], ['past_v', [2, 2, 2, 8], 'float32']],
    attrs: { scale: attr.float(0.3) },
    outputs: 3,
  },
  {
    name: '4-D, KV cache and is_causal: query i sees the past and keys up to i (a decode step, and a chunk)',
    inputs: [['q', [1, 4, 3, 8], 'float32'], ['k', [1, 2, 3, 8], 'float32'], ['v', [1, 2, 3, 8], 'float32'], ['mask', [3, 5], 'float32'], ['past_k', [1, 2, 2, 8], 'float32'], ['past_v', [1, 2, 2, 8], 'float32']],
    attrs: { is_causal: 1 },
    outputs: 3,
  },
  {
    name: '4-D decode step with a KV cache and is_causal',
    inputs: [['q', [2, 4, 1, 8], 'float32'], ['k', [2, 2, 1, 8], 'float32'], ['v', [2, 2, 1, 8], 'float32'], ['mask', [1, 4], 'float32'], ['past_k', [2, 2, 3, 8], 'float32'], ['past_v', [2, 2, 3, 8], 'float32']],
    attrs: { is_causal: 1 },
    outputs: 3,
  },
  {
    name: '3-D with head attributes, boolean mask, is_causal',
    inputs: [['q', [2, 5, 16], 'float32'], ['k', [2, 5, 8], 'float32'], ['v', [2, 5, 8], 'float32'], ['mask', [2, 1, 5, 5], 'bool']],
    attrs: { q_num_heads: 4, kv_num_heads: 2, is_causal: 1 },
    outputs: 1,
  },
];

function build(c: Case): Model {
  const model = new Model({ opsetImports: { '': 23 } });
  const g = model.graph;
  const ins = c.inputs.map(([n, dims, t]) => g.addInput(new Value(n, tensorType(t === 'bool' ? DataType.BOOL : DataType.FLOAT, dims))));
  const [q, k, v, mask, pk, pv] = ins;
  const outs = new Builder(g).op('Attention', [q!, k!, v!, mask ?? null, pk ?? null, pv ?? null], c.attrs as never, { outputs: c.outputs }) as Value | Value[];
  g.setOutputs(Array.isArray(outs) ? outs : [outs]);
  return model;
}

function feeds(c: Case): Record<string, ort.Tensor> {
  const f: Record<string, ort.Tensor> = {};
  c.inputs.forEach(([n, dims, t], j) => {
    const size = dims.reduce((a, b) => a * b, 1);
    f[n] = t === 'bool'
      ? new ort.Tensor('bool', Uint8Array.from({ length: size }, (_, i) => (i % 7 === 3 ? 0 : 1)), dims)
      : new ort.Tensor('float32', Float32Array.from({ length: size }, (_, i) => Math.sin(0.37 * i + j) * (n === 'mask' ? 2 : 1)), dims);
  });
  return f;
}

function refFeeds(file: string): Record<string, ort.Tensor> {
  const f: Record<string, ort.Tensor> = {};
  for (const i of loadRef(file).inputs) f[i.name] = new ort.Tensor(i.dtype as 'float32', i.data as Float32Array, i.dims);
  return f;
}

async function run(m: Model, f: Record<string, ort.Tensor>): Promise<Float32Array[]> {
  // (errors only: GroupQueryAttention's kernel warns that a present is longer than the shape it infers from the past)
  const s = await ort.InferenceSession.create(encodeModel(m), { logSeverityLevel: 3 });
  const out = await s.run(f);
  await s.release();
  return s.outputNames.map((n) => out[n]!.data as Float32Array);
}

describe('fused attention ops expanded for training', () => {
  for (const c of cases) {
    it(c.name, async () => {
      const original = build(c);
      const expanded = decodeModel(encodeModel(original));
      expect(expandAttentionOps(expanded)).toBe(1);
      verifyModel(expanded);
      expect(expanded.graph.nodes().some((n) => n.opType === 'Attention')).toBe(false);
      expect(expanded.graph.nodes().every((n) => getMetadata(n.metadataProps, 'titanize.rule') === 'train-expand-attention')).toBe(true);
      expect(expanded.graph.outputs.map((v) => v.name)).toEqual(original.graph.outputs.map((v) => v.name));
      const [want, got] = [await run(original, feeds(c)), await run(expanded, feeds(c))];
      want.forEach((w, i) => expect(maxAbsDiff(got[i]!, w) / Math.max(1, maxAbs(w)), `output ${i}`).toBeLessThan(1e-5));
    });
  }

  it('GroupQueryAttention in the gqa_contrib fixture (rotary inside, KV cache): the expanded model gives the same logits and presents', async () => {
    for (const ref of ['gqa_contrib.ref.json', 'gqa_contrib.decode.ref.json']) {
      const original = loadModel(path.join(FIX, 'gqa_contrib.onnx'));
      const expanded = loadModel(path.join(FIX, 'gqa_contrib.onnx'));
      expect(expandAttentionOps(expanded)).toBe(2);
      verifyModel(expanded);
      expect(expanded.graph.nodes().some((n) => n.opType === 'GroupQueryAttention')).toBe(false);
      const f = refFeeds(path.join(FIX, ref));
      const [want, got] = [await run(original, f), await run(expanded, f)];
      want.forEach((w, i) => expect(maxAbsDiff(got[i]!, w) / Math.max(1, maxAbs(w)), `${ref} output ${i}`).toBeLessThan(1e-5));
    }
  });

  it.each([
    ['packed query, interleaved partial rotary, a padded row (seqlens_k), local window', { packed: true, interleaved: 1, window: 2 }],
    ['separate q/k/v, rotate-half rotary over the whole head, with a KV cache', { packed: false, interleaved: 0, window: -1, past: 2 }],
  ] as const)('GroupQueryAttention: %s', async (_name, o) => {
    // (onnxruntime's kernel: head size a multiple of 16, rotary caches a multiple of 8 wide,
    // batch 1 for a multi-token call with a KV cache)
    const P = 'past' in o ? o.past : 0;
    const [B, S, hq, hkv, d] = [P ? 1 : 2, 4, 4, 2, o.interleaved ? 32 : 16];
    const rot = o.interleaved ? 16 : d;
    const model = new Model({ opsetImports: { '': 17, 'com.microsoft': 1 } });
    const g = model.graph;
    const bld = new Builder(g);
    const width = o.packed ? (hq + 2 * hkv) * d : hq * d;
    const q = g.addInput(new Value('q', tensorType(DataType.FLOAT, [B, S, width])));
    const k = o.packed ? null : g.addInput(new Value('k', tensorType(DataType.FLOAT, [B, S, hkv * d])));
    const v = o.packed ? null : g.addInput(new Value('v', tensorType(DataType.FLOAT, [B, S, hkv * d])));
    const pk = g.addInput(new Value('past_k', tensorType(DataType.FLOAT, [B, hkv, P, d])));
    const pv = g.addInput(new Value('past_v', tensorType(DataType.FLOAT, [B, hkv, P, d])));
    const seqlens = g.addInput(new Value('seqlens_k', tensorType(DataType.INT32, [B])));
    const total = g.addInput(new Value('total', tensorType(DataType.INT32, [])));
    const cos = bld.constant(Float32Array.from({ length: 16 * (rot / 2) }, (_, i) => Math.cos(0.3 * Math.floor(i / (rot / 2)) * (1 + (i % (rot / 2))))), [16, rot / 2]);
    const sin = bld.constant(Float32Array.from({ length: 16 * (rot / 2) }, (_, i) => Math.sin(0.3 * Math.floor(i / (rot / 2)) * (1 + (i % (rot / 2))))), [16, rot / 2]);
    const attrs = { num_heads: hq, kv_num_heads: hkv, do_rotary: 1, rotary_interleaved: o.interleaved, local_window_size: o.window };
    const outs = bld.op('GroupQueryAttention', [q, k, v, pk, pv, seqlens, total, cos, sin], attrs, { domain: 'com.microsoft', outputs: 3 }) as Value[];
    g.setOutputs(outs);
    const f: Record<string, ort.Tensor> = {};
    const fill = (name: string, dims: number[], j: number) => (f[name] = new ort.Tensor('float32', Float32Array.from({ length: dims.reduce((a, x) => a * x, 1) }, (_, i) => Math.sin(0.41 * i + j)), dims));
    fill('q', [B, S, width], 1);
    if (!o.packed) {
      fill('k', [B, S, hkv * d], 2);
      fill('v', [B, S, hkv * d], 3);
    }
    fill('past_k', [B, hkv, P, d], 4);
    fill('past_v', [B, hkv, P, d], 5);
    // row 1 is padded by one token in the prompt case (its last key is masked)
    f.seqlens_k = new ort.Tensor('int32', Int32Array.from(B === 1 ? [P + S - 1] : [P + S - 1, S - 2]), [B]);
    f.total = new ort.Tensor('int32', Int32Array.from([P + S]), []);
    const expanded = decodeModel(encodeModel(model));
    expect(expandAttentionOps(expanded)).toBe(1);
    verifyModel(expanded);
    const [want, got] = [await run(model, f), await run(expanded, f)];
    // (rows past a padded row's length are not defined by the op: compare the valid ones)
    const valid = (t: Float32Array, i: number): Float32Array => (i === 0 && B === 2 ? t.slice(0, t.length - t.length / (B * S)) : t);
    want.forEach((w, i) => expect(maxAbsDiff(valid(got[i]!, i), valid(w, i)) / Math.max(1, maxAbs(w)), `output ${i}`).toBeLessThan(1e-5));
  });

  it.each([
    ['3-D q/k/v, packed bias, key_padding_mask [B, L] (a row whose first visible keys are all padding), unidirectional, KV cache', { bnsh: false, causal: 1 }],
    ['k/v as BNSH caches (cross-attention), key lengths [B], attention_bias', { bnsh: true, causal: 0 }],
  ] as const)('MultiHeadAttention: %s', async (_name, o) => {
    const [B, S, L, h, d] = [2, 3, 4, 2, 4];
    const P = o.bnsh ? 0 : 2;
    const model = new Model({ opsetImports: { '': 17, 'com.microsoft': 1 } });
    const g = model.graph;
    const bld = new Builder(g);
    const shapes: Record<string, number[]> = o.bnsh
      ? { q: [B, S, h * d], k: [B, h, L, d], v: [B, h, L, d], lengths: [B], attention_bias: [1, h, S, L] }
      : { q: [B, S, h * d], k: [B, S, h * d], v: [B, S, h * d], mask: [B, P + S], past_k: [B, h, P, d], past_v: [B, h, P, d] };
    const input = (name: string): Value | null => (shapes[name] ? g.addInput(new Value(name, tensorType(name === 'mask' || name === 'lengths' ? DataType.INT32 : DataType.FLOAT, shapes[name]!))) : null);
    const [q, k, v] = [input('q')!, input('k')!, input('v')!];
    const bias = o.bnsh ? null : bld.constant(Float32Array.from({ length: 3 * h * d }, (_, i) => 0.05 * Math.cos(i)), [3 * h * d]);
    const mask = input(o.bnsh ? 'lengths' : 'mask');
    const ab = input('attention_bias');
    const [pk, pv] = [input('past_k'), input('past_v')];
    const outs = bld.op('MultiHeadAttention', [q, k, v, bias, mask, ab, pk, pv], { num_heads: h, unidirectional: o.causal }, { domain: 'com.microsoft', outputs: o.bnsh ? 1 : 3 }) as Value | Value[];
    g.setOutputs(Array.isArray(outs) ? outs : [outs]);
    const f: Record<string, ort.Tensor> = {};
    Object.entries(shapes).forEach(([name, dims], j) => {
      const size = dims.reduce((a, x) => a * x, 1);
      if (name === 'mask') f[name] = new ort.Tensor('int32', Int32Array.from({ length: size }, (_, i) => (i < 3 ? 0 : 1)), dims);
      else if (name === 'lengths') f[name] = new ort.Tensor('int32', Int32Array.from([L, L - 1]), dims);
      else f[name] = new ort.Tensor('float32', Float32Array.from({ length: size }, (_, i) => Math.sin(0.29 * i + j)), dims);
    });
    const expanded = decodeModel(encodeModel(model));
    expect(expandAttentionOps(expanded)).toBe(1);
    verifyModel(expanded);
    const [want, got] = [await run(model, f), await run(expanded, f)];
    want.forEach((w, i) => expect(maxAbsDiff(got[i]!, w) / Math.max(1, maxAbs(w)), `output ${i}`).toBeLessThan(1e-5));
  });

  it('refuses unidirectional MultiHeadAttention over BNSH caches (onnxruntime\'s mask there follows neither the past nor the key length)', () => {
    const model = new Model({ opsetImports: { '': 17, 'com.microsoft': 1 } });
    const g = model.graph;
    const x = (n: string, dims: (number | string)[]) => g.addInput(new Value(n, tensorType(DataType.FLOAT, dims)));
    const y = new Builder(g).op('MultiHeadAttention', [x('q', [2, 3, 8]), x('k', [2, 2, 5, 4]), x('v', [2, 2, 5, 4])], { num_heads: 2, unidirectional: 1 }, { domain: 'com.microsoft' });
    g.setOutputs([y]);
    expect(() => expandAttentionOps(model)).toThrow(/unidirectional over 4-D \(BNSH\) keys and values is not supported in training graphs/);
    const cross = new Model({ opsetImports: { '': 17, 'com.microsoft': 1 } });
    const c = cross.graph;
    const z = (n: string, dims: (number | string)[]) => c.addInput(new Value(n, tensorType(DataType.FLOAT, dims)));
    c.setOutputs([new Builder(c).op('MultiHeadAttention', [z('q', [2, 3, 8]), z('k', [2, 5, 8]), z('v', [2, 5, 8])], { num_heads: 2, unidirectional: 1 }, { domain: 'com.microsoft' })]);
    expect(() => expandAttentionOps(cross)).toThrow(/unidirectional with keys of another length than the queries \(cross-attention\)/);
  });

  it('refuses a MultiHeadAttention key_padding_mask form it does not express ([3B + 2]), naming the node', () => {
    const model = new Model({ opsetImports: { '': 17, 'com.microsoft': 1 } });
    const g = model.graph;
    const x = (n: string, dims: (number | string)[], t = DataType.FLOAT) => g.addInput(new Value(n, tensorType(t, dims)));
    const y = new Builder(g).op('MultiHeadAttention', [x('q', ['B', 3, 8]), x('k', ['B', 3, 8]), x('v', ['B', 3, 8]), null, x('mask', [8], DataType.INT32)], { num_heads: 2 }, { domain: 'com.microsoft' });
    g.setOutputs([y]);
    expect(() => expandAttentionOps(model)).toThrow(/MultiHeadAttention.*a 1-D key_padding_mask must be the key lengths \[B\]/);
  });

  it('refuses what it does not express (softcap), naming the node', () => {
    const c = { ...cases[1]!, attrs: { ...cases[1]!.attrs, softcap: attr.float(30) } };
    expect(() => expandAttentionOps(build(c))).toThrow(/Attention.*softcap is not supported in training graphs/);
  });
});

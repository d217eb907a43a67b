/**
 * The ONNX Attention op (opset 23) expanded to standard ops for training graphs equals
 * onnxruntime's own kernel: 4-D inputs with a KV cache, grouped-query heads, an additive
 * mask and an explicit scale; 3-D inputs split by the head attributes, a boolean mask and
 * is_causal. Tolerance 1e-5 (float32 softmax attention computed in another order).
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Builder, DataType, Model, Value, attr, decodeModel, encodeModel, getMetadata, tensorType, verifyModel } from '../../../src/ir/index.js';
import { expandAttentionOps } from '../../../src/passes/train/expand_attention.js';
import { maxAbs, maxAbsDiff } from '../../helpers/compare.js';

type Case = { name: string; inputs: [string, number[], 'float32' | 'bool'][]; attrs: Record<string, unknown>; outputs: number };

const cases: Case[] = [
  {
    name: '4-D, KV cache, grouped-query heads, additive mask, scale',
    inputs: [['q', [2, 4, 3, 8], 'float32'], ['k', [2, 2, 3, 8], 'float32'], ['v', [2, 2, 3, 8], 'float32'], ['mask', [3, 5], 'float32'], ['past_k', [2, 2, 2, 8], 'float32'], ['past_v', [2, 2, 2, 8], 'float32']],
    attrs: { scale: attr.float(0.3) },
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

async function run(m: Model, f: Record<string, ort.Tensor>): Promise<Float32Array[]> {
  const s = await ort.InferenceSession.create(encodeModel(m));
  const out = await s.run(f);
  await s.release();
  return s.outputNames.map((n) => out[n]!.data as Float32Array);
}

describe('ONNX Attention expanded for training', () => {
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

  it('refuses what it does not express (softcap), naming the node', () => {
    const c = { ...cases[1]!, attrs: { ...cases[1]!.attrs, softcap: attr.float(30) } };
    expect(() => expandAttentionOps(build(c))).toThrow(/Attention.*softcap is not supported in training graphs/);
  });
});

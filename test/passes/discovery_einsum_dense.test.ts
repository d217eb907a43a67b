/**
 * Keras EinsumDense projections (tf2onnx exports of MultiHeadAttention and
 * GroupedQueryAttention): 3-D weights [E, H, d] make [B, T, H, d] directly and the output
 * projection contracts [H, d] with a [H, d, E] weight. The equations label the axes: the
 * weight's letters are the features (heads · head size), so discovery reads the heads off
 * the same axis rules as everywhere else; conversion flattens the features for the memory
 * and LoRA runs on the flattened features.
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Builder, DataType, Model, Tensor, Value, tensorType } from '../../src/ir/index.js';
import { convert } from '../../src/passes/convert/convert.js';
import { isLoraCapable, mergeLora, projectionShape } from '../../src/passes/convert/lora.js';
import { discoverAttention } from '../../src/passes/index.js';
import { maxAbs, maxAbsDiff } from '../helpers/compare.js';
import { checkConvertedLayers, runModel } from '../helpers/layer_check.js';
import { type EinsumDenseOptions, einsumDenseModel, renameEverything, shuffleNodes } from './graphs.js';

const feeds = (): Record<string, ort.Tensor> => ({ x: new ort.Tensor('float32', Float32Array.from({ length: 2 * 7 * 64 }, (_, i) => Math.sin(i * 0.17) * 1.2), [2, 7, 64]) });
const y = async (m: Model): Promise<Float32Array> => (await runModel(m, feeds())).y!.data as Float32Array;
const rel = (a: Float32Array, b: Float32Array): number => maxAbsDiff(a, b) / Math.max(1, maxAbs(b));

const CASES: [string, EinsumDenseOptions, [number, number, number]][] = [
  ['MultiHeadAttention (key_dim 8 ≠ E/H)', { style: 'mha', heads: 4, d: 8 }, [4, 4, 8]],
  ['GroupedQueryAttention (4 query heads, 2 key/value heads)', { style: 'gqa', heads: 4, kvHeads: 2, d: 16 }, [4, 2, 16]],
];

describe.each(CASES)('Keras EinsumDense projections: %s', (_, options, [hq, hkv, d]) => {
  const model = (): Model => einsumDenseModel(options);

  it('is found with its heads, head size and projections', () => {
    const r = discoverAttention(model());
    expect(r.rejected).toEqual([]);
    const [s] = r.sites;
    expect([s!.form, s!.numHeads, s!.numKvHeads, s!.headDim, s!.causal]).toEqual(['F1', hq, hkv, d, true]);
    expect(s!.scale).toBeCloseTo(1 / Math.sqrt(d), 6);
    expect(s!.scaleSource).toBe('split');
    expect([s!.q.node, s!.q.op, s!.q.weight, s!.q.weightShape, s!.q.bias, s!.q.input, s!.q.columns]).toEqual(['/mha/query/Einsum', 'Einsum', 'query/kernel', [64, hq, d], 'query/bias', 'x', null]);
    expect([s!.k.weightShape, s!.v.weightShape]).toEqual([
      [64, hkv, d],
      [64, hkv, d],
    ]);
    // [B, T, H, d] projections: the features on two axes
    expect(s!.layout.q).toEqual([['batch'], ['seq'], ['features'], ['features']]);
    expect(s!.layout.output).toEqual([['batch'], ['seq'], ['heads'], ['head_dim']]);
    expect([s!.outputProjection.node, s!.outputProjection.weightShape, s!.outputProjection.input]).toEqual(['/mha/attention_output/Einsum', [hq, d, 64], '/mha/Einsum_pv_out']);
    expect(s!.output).toBe('/mha/Einsum_pv_out');
  });

  it('reads structure, not names: the same heads on a shuffled, renamed graph', () => {
    const m = model();
    shuffleNodes(m, 5);
    renameEverything(m, 6);
    const [s] = discoverAttention(m).sites;
    expect([s!.numHeads, s!.numKvHeads, s!.headDim, s!.q.weightShape, s!.outputProjection.weightShape]).toEqual([hq, hkv, d, [64, hq, d], [hq, d, 64]]);
  });

  it('near miss: an einsum whose weight shares a letter with the input and the output is not a projection, with the reason', () => {
    const m = model();
    const e = m.graph.nodes().find((n) => n.name === '/mha/value/Einsum')!;
    // 'abc,bcd->abd'-like: the weight's first axis is both contracted and kept (a per-position weight)
    e.setAttribute('equation', options.style === 'mha' ? 'abc,cbe->abce' : 'bqm,mqh->bqmh');
    const r = discoverAttention(m);
    expect(r.sites).toEqual([]);
    // the path stops at the bias Add: what it adds to is no projection
    expect(r.rejected[0]!.reason).toMatch(/the V path meets node '\/mha\/value\/Add' \(Add\), which is none of a projection/);
  });

  it('μ = 0 reproduces the original (≤ 1e-5); μ = 0.5 mixes (1−μ)·a + μ·LiZA (≤ 2e-4)', async () => {
    const base = await y(model());
    const m = model();
    convert(m, { mu: 0, target: 'ort' });
    expect(rel(await y(m), base)).toBeLessThanOrEqual(1e-5);
    for (const rule of ['linear', 'delta_product'] as const) expect(await checkConvertedLayers(model(), feeds(), rule, 0.5)).toBeLessThanOrEqual(2e-4);
  });

  it('LoRA on the 3-D weights: A [in, r], B [r, H·d]; a trained adapter merges into the weights', async () => {
    const m = model();
    const r = convert(m, { mu: 0.5, loraRank: 4, target: 'ort' });
    expect(r.lora.map((a) => a.target)).toEqual(['layers.0.q_proj', 'layers.0.k_proj', 'layers.0.v_proj', 'layers.0.o_proj']);
    const dims = (n: string): number[] => m.graph.initializers.get(n)!.initializer!.dims;
    expect([dims('lora.layers.0.q_proj.A'), dims('lora.layers.0.q_proj.B'), dims('lora.layers.0.k_proj.B'), dims('lora.layers.0.o_proj.A'), dims('lora.layers.0.o_proj.B')]).toEqual([
      [64, 4],
      [4, hq * d],
      [4, hkv * d],
      [hq * d, 4],
      [4, 64],
    ]);
    const fresh = await y(m);
    const ref = model();
    convert(ref, { mu: 0.5, target: 'ort' });
    expect(maxAbsDiff(fresh, await y(ref))).toBe(0);
    for (const [name, v] of m.graph.initializers) {
      if (!name.startsWith('lora.') || !name.endsWith('.B')) continue;
      v.initializer = Tensor.fromArray(Float32Array.from({ length: v.initializer!.size }, (_, i) => Math.sin(i * 0.7) * 0.05), v.initializer!.dims.slice(), undefined, name);
    }
    const tuned = await y(m);
    expect(rel(tuned, fresh)).toBeGreaterThan(1e-3);
    // W += s·A·B in the weight's own [E, H, d] / [H, d, E] layout computes the same function
    expect(mergeLora(m)).toBe(4);
    expect([...m.graph.initializers.keys()].some((k) => k.startsWith('lora.'))).toBe(false);
    expect(rel(await y(m), tuned)).toBeLessThanOrEqual(1e-5);
  });
});

describe('LoRA on Einsum projections it cannot express as a MatMul', () => {
  it('refuses, with the reason, when the rows are not the leading axes of input and output in the same order', () => {
    const m = new Model({ opsetImports: { '': 17 } });
    const b = new Builder(m.graph);
    const x = m.graph.addInput(new Value('x', tensorType(DataType.FLOAT, ['T', 'B', 64])));
    const w = m.graph.addInitializer(Tensor.fromArray(new Float32Array(64 * 4 * 8), [64, 4, 8]), 'w');
    const e = b.op('Einsum', [x, w], { equation: 'bac,cde->abde' }, { name: 'proj' }).producer!;
    m.graph.setOutputs([b.op('Identity', [e.output])]);
    expect(isLoraCapable(e)).toBe(false);
    expect(() => projectionShape(e)).toThrow(/needs the contracted axes last in the input and the weight's features last in the output, after the same leading axes/);
  });
});

/**
 * Packed QKV projections cut the ways other exporters cut them (Paddle2ONNX: Split +
 * Squeeze; timm's unbind: Gather of a scalar; Slice + Squeeze), and position biases the
 * linear branch cannot express (ALiBi, T5 buckets): discovery reads the column ranges
 * off the axis labels, lists the biases, and the conversion checks numerically.
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { convert } from '../../src/passes/convert/convert.js';
import { discoverAttention } from '../../src/passes/index.js';
import { checkConvertedLayers, runModel } from '../helpers/layer_check.js';
import { maxAbsDiff } from '../helpers/compare.js';
import { type PackedOptions, packedEncoderModel } from './graphs.js';

function feeds(): Record<string, ort.Tensor> {
  const [B, T, E] = [2, 6, 64];
  const data = Float32Array.from({ length: B * T * E }, (_, i) => Math.sin(i * 0.37) * 1.5);
  return { x: new ort.Tensor('float32', data, [B, T, E]) };
}

const CUTS: PackedOptions['cut'][] = ['split-squeeze', 'gather', 'slice-squeeze'];

describe('packed QKV as Paddle2ONNX and timm cut it', () => {
  it.each(CUTS)('%s: heads, head size and the column ranges of q, k, v', (cut) => {
    const r = discoverAttention(packedEncoderModel({ cut }));
    expect(r.rejected).toEqual([]);
    const [s] = r.sites;
    expect([s!.form, s!.numHeads, s!.numKvHeads, s!.headDim, s!.causal]).toEqual(['F3', 4, 4, 16, false]);
    expect([s!.q.columns, s!.k.columns, s!.v.columns]).toEqual([
      [0, 64],
      [64, 128],
      [128, 192],
    ]);
    expect(s!.scale).toBeCloseTo(0.25, 6);
    expect(s!.mask.ignored).toEqual([]);
  });

  it.each(CUTS)('%s: μ = 0 reproduces the original, μ = 0.5 mixes (1−μ)·a + μ·LiZA (≤ 2e-4)', async (cut) => {
    const base = await runModel(packedEncoderModel({ cut }), feeds());
    const m = packedEncoderModel({ cut });
    convert(m, { mu: 0, target: 'ort' });
    const got = await runModel(m, feeds());
    expect(maxAbsDiff(got.y!.data as Float32Array, base.y!.data as Float32Array)).toBeLessThanOrEqual(1e-5);
    // fp32 chunked runtime vs the float64 reference; LiZA's output is RMS-normalised, O(1)
    expect(await checkConvertedLayers(packedEncoderModel({ cut }), feeds(), 'delta_product', 0.5)).toBeLessThanOrEqual(2e-4);
  });
});

describe('position biases the linear branch cannot express', () => {
  it.each(['alibi', 't5'] as const)('%s: the bias stays on the softmax branch and is listed; --strict refuses', (bias) => {
    const [s] = discoverAttention(packedEncoderModel({ cut: 'gather', bias })).sites;
    expect(s!.mask.ignored).toHaveLength(1);
    expect(s!.mask.ignored[0]).toMatch(/^bias '.*' added to the scores \(from constant '(alibi\.slopes|relative_attention_bias\.weight)'/);
    expect(() => convert(packedEncoderModel({ cut: 'gather', bias }), { strict: true })).toThrow(/the linear branch cannot express bias/);
  });

  it.each(['alibi', 't5'] as const)('%s: converts without --strict: μ = 0 reproduces the original, each layer mixes (1−μ)·a + μ·LiZA at μ 0.5 and 1 (≤ 2e-4)', async (bias) => {
    const model = () => packedEncoderModel({ cut: 'gather', bias });
    const base = await runModel(model(), feeds());
    const m = model();
    const r = convert(m, { mu: 0, target: 'ort' });
    // the bias stays on the softmax branch (a), and the report lists it per converted site
    expect(r.sites[0]!.ignored).toHaveLength(1);
    expect(maxAbsDiff((await runModel(m, feeds())).y!.data as Float32Array, base.y!.data as Float32Array)).toBeLessThanOrEqual(1e-5);
    for (const mu of [0.5, 1]) expect(await checkConvertedLayers(model(), feeds(), 'delta_product', mu), `μ ${mu}`).toBeLessThanOrEqual(2e-4);
  });
});

/**
 * Attention written with Einsum, in Keras' layout ([B, T, H, d] operands, as tf2onnx
 * exports MultiHeadAttention) and in torch.einsum's ([B, H, T, d]): the equations tell the
 * batch, sequence and head-size axes, so discovery finds the heads and the conversion
 * checks numerically.
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { convert } from '../../src/passes/convert/convert.js';
import { discoverAttention } from '../../src/passes/index.js';
import { maxAbsDiff } from '../helpers/compare.js';
import { checkConvertedLayers, runModel } from '../helpers/layer_check.js';
import { einsumModel } from './graphs.js';

const feeds = (): Record<string, ort.Tensor> => ({ x: new ort.Tensor('float32', Float32Array.from({ length: 2 * 7 * 64 }, (_, i) => Math.sin(i * 0.13) * 1.3), [2, 7, 64]) });

describe.each(['keras', 'torch'] as const)('Einsum attention (%s layout)', (style) => {
  it('is found with its heads, head size and causality', () => {
    const r = discoverAttention(einsumModel(style));
    expect(r.rejected).toEqual([]);
    const [s] = r.sites;
    expect([s!.form, s!.numHeads, s!.numKvHeads, s!.headDim, s!.causal]).toEqual(['F1', 4, 4, 16, true]);
    expect(s!.scale).toBeCloseTo(0.25, 6);
    expect(s!.nodes.qk).toBe('/attn/Einsum_qk');
    expect(s!.output).toBe('/attn/attn_out_out');
  });

  it('μ = 0 reproduces the original; μ = 0.5 mixes (1−μ)·a + μ·LiZA (≤ 2e-4)', async () => {
    const base = await runModel(einsumModel(style), feeds());
    const m = einsumModel(style);
    convert(m, { mu: 0, target: 'ort' });
    expect(maxAbsDiff((await runModel(m, feeds())).y!.data as Float32Array, base.y!.data as Float32Array)).toBeLessThanOrEqual(1e-5);
    for (const rule of ['linear', 'delta_product'] as const) expect(await checkConvertedLayers(einsumModel(style), feeds(), rule, 0.5)).toBeLessThanOrEqual(2e-4);
  });

  it('near miss: an einsum that contracts the wrong axis is not attention, with the reason', () => {
    const m = einsumModel(style);
    const e = m.graph.nodes().find((n) => n.name === '/attn/Einsum_qk')!;
    e.setAttribute('equation', style === 'keras' ? 'aecd,abcd->acbd' : 'bhid,bhjd->bhid');
    const r = discoverAttention(m);
    expect(r.sites).toEqual([]);
    expect(r.rejected[0]!.reason).toMatch(/is not Q·Kᵀ: one contracted head-size axis/);
  });
});

/**
 * fp16 models, as users ship them (test/helpers/float16.ts makes fp16 copies of the
 * fixtures): discovery finds the same sites, and the memory branch runs in float32 with
 * casts at its edges, so μ = 0 gives back the fp16 original (to an fp16 ulp) and each layer mixes
 * (1−μ)·a + μ·LiZA(q, k, v) as in float32.
 */
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { type Model } from '../../../src/ir/index.js';
import { loadModel } from '../../../src/node/index.js';
import { convert } from '../../../src/passes/convert/convert.js';
import { discoverAttention } from '../../../src/passes/index.js';
import { loadRef } from '../../helpers/compare.js';
import { halfToFloat } from '../../../src/passes/util/constants.js';
import { toFloat16 } from '../../helpers/float16.js';
import { toOrt } from '../../helpers/fixture_run.js';
import { checkConvertedLayers, runModel } from '../../helpers/layer_check.js';
import { packedEncoderModel } from '../graphs.js';

const FIX = path.resolve(__dirname, '../../fixtures');

function halfOf(t: ort.Tensor): Float32Array {
  return Float32Array.from(t.data as Uint16Array, halfToFloat);
}

const cases: [string, () => Model, () => Record<string, ort.Tensor>][] = [
  ['the MultiheadAttention encoder', () => toFloat16(loadModel(path.join(FIX, 'foreign/mha_encoder.onnx'))), () => Object.fromEntries(loadRef(path.join(FIX, 'foreign/mha_encoder.ref.json')).inputs.map((t) => [t.name, toOrt(t)]))],
  [
    'a packed-QKV encoder',
    () => toFloat16(packedEncoderModel({ cut: 'gather' })),
    () => ({ x: new ort.Tensor('float16', Uint16Array.from({ length: 2 * 6 * 64 }, (_, i) => 0x3c00 - (i % 7) * 0x100), [2, 6, 64]) }),
  ],
];

describe('fp16 models', () => {
  it.each(cases)('%s: the fp16 model runs, and discovery finds what it finds in fp32', async (_n, make, feeds) => {
    const m = make();
    const out = Object.values(await runModel(make(), feeds()))[0]!;
    expect(out.type).toBe('float16');
    expect(halfOf(out).every(Number.isFinite)).toBe(true);
    const sites = discoverAttention(m).sites;
    expect(sites.length).toBeGreaterThan(0);
  });

  it.each(cases)('%s: μ = 0 gives back the fp16 output (to an fp16 ulp); μ = 0.5 mixes in float32 (≤ 2e-4)', async (_n, make, feeds) => {
    const base = Object.values(await runModel(make(), feeds()))[0]!;
    const m = make();
    convert(m, { mu: 0, target: 'ort' });
    const got = Object.values(await runModel(m, feeds()))[0]!;
    expect(got.type).toBe('float16');
    // fp16 → float32 → (1 − 0)·a + 0·y → fp16 is the identity on the attention output; what
    // remains is onnxruntime fusing the rewritten graph differently downstream: at most an
    // fp16 ulp or two (2^-10 relative), far below what a wrong cast or mix would give
    const a = halfOf(got);
    const b = halfOf(base);
    const scale = Math.max(1, ...b.map(Math.abs));
    expect(Math.max(...a.map((x, i) => Math.abs(x - b[i]!))) / scale).toBeLessThanOrEqual(2e-3);
    expect(m.graph.nodes().filter((n) => n.opType === 'Cast' && n.getInt('to') === 1).length).toBeGreaterThan(0);
    expect(await checkConvertedLayers(make(), feeds(), 'delta_product', 0.5)).toBeLessThanOrEqual(2e-4);
  });
});

/**
 * Quantized projections as users ship them: 4-bit MatMulNBits blocks and int8 QDQ
 * (DequantizeLinear → MatMul). The builder makes each quantized model and its dequantized
 * float twin (test/passes/graphs.ts); onnxruntime's kernels agree with the twin, which
 * checks the quantization itself. Discovery finds the same site, conversion reproduces
 * the original at μ = 0, and LoRA attaches beside the quantized weights without
 * dequantizing them: a trained adapter gives what it gives on the float twin.
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { type Model, Tensor } from '../../../src/ir/index.js';
import { convert } from '../../../src/passes/convert/convert.js';
import { mergeLora } from '../../../src/passes/convert/lora.js';
import { discoverAttention } from '../../../src/passes/index.js';
import { maxAbs, maxAbsDiff } from '../../helpers/compare.js';
import { checkConvertedLayers, runModel } from '../../helpers/layer_check.js';
import { packedEncoderModel } from '../graphs.js';

const feeds = (): Record<string, ort.Tensor> => ({ x: new ort.Tensor('float32', Float32Array.from({ length: 2 * 6 * 64 }, (_, i) => Math.cos(i * 0.21)), [2, 6, 64]) });
// onnxruntime's optimizer rewrites DQ → MatMul into a lossy integer kernel (~1e-3): the
// comparisons with the float twin run the graphs as written
const y = async (m: Model): Promise<Float32Array> => (await runModel(m, feeds(), [], { graphOptimizationLevel: 'disabled' })).y!.data as Float32Array;
const rel = (a: Float32Array, b: Float32Array): number => maxAbsDiff(a, b) / Math.max(1, maxAbs(b));

/** Sets every LoRA B to a fixed nonzero pattern (as training would), identically in both models. */
function trainB(m: Model): void {
  for (const [name, v] of m.graph.initializers) {
    if (!name.endsWith('.B') || !v.initializer) continue;
    const n = v.initializer.size;
    v.initializer = Tensor.fromArray(Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.7) * 0.05), v.initializer.dims.slice(), undefined, name);
  }
}

describe.each(['nbits', 'qdq'] as const)('quantized projections (%s)', (quant) => {
  const q = () => packedEncoderModel({ cut: 'gather', quant });
  const f = () => packedEncoderModel({ cut: 'gather', quant, dequantized: true });

  it('onnxruntime on the quantized model = its dequantized float twin', async () => {
    // fp32 accumulation of the same products; the kernels differ only in summation order
    expect(rel(await y(q()), await y(f()))).toBeLessThanOrEqual(1e-4);
  });

  it('discovery finds the site and names the quantization', () => {
    const [s] = discoverAttention(q()).sites;
    expect([s!.numHeads, s!.headDim, s!.q.columns]).toEqual([4, 16, [0, 64]]);
    expect(s!.q.quantization).toBe(quant === 'nbits' ? 'MatMulNBits 4-bit' : 'DequantizeLinear int8');
    expect(s!.outputProjection.quantization).toBe(s!.q.quantization);
    expect(s!.q.weightShape).toEqual([64, 192]);
  });

  it('μ = 0 reproduces the original; μ = 0.5 mixes (1−μ)·a + μ·LiZA (≤ 2e-4)', async () => {
    const base = await y(q());
    const m = q();
    convert(m, { mu: 0, target: 'ort' });
    expect(rel(await y(m), base)).toBeLessThanOrEqual(1e-5);
    expect(await checkConvertedLayers(q(), feeds(), 'delta_product', 0.5)).toBeLessThanOrEqual(2e-4);
  });

  it('LoRA sits beside the quantized weights (left as they are) and equals LoRA on the float twin', async () => {
    const m = q();
    // the raw bytes of every initializer before conversion
    const bytes = (t: Tensor): number[] => Array.from(new Uint8Array(t.toTypedArray().buffer.slice(0)));
    const before = new Map([...m.graph.initializers].map(([k, v]) => [k, bytes(v.initializer!)]));
    const r = convert(m, { mu: 0.5, loraRank: 4, target: 'ort' });
    expect(r.lora.map((a) => a.target)).toEqual(['layers.0.qkv_proj', 'layers.0.o_proj']);
    for (const [k, data] of before) expect(bytes(m.graph.initializers.get(k)!.initializer!), k).toEqual(data);
    const twin = f();
    convert(twin, { mu: 0.5, loraRank: 4, target: 'ort' });
    trainB(m);
    trainB(twin);
    const a = await y(m);
    const b = await y(twin);
    expect(rel(a, b)).toBeLessThanOrEqual(1e-4);
    // the adapter does something: B ≠ 0 changes the output
    const fresh = q();
    convert(fresh, { mu: 0.5, loraRank: 4, target: 'ort' });
    expect(rel(a, await y(fresh))).toBeGreaterThan(1e-3);
    expect(() => mergeLora(m)).toThrow(/its projection's weight is quantized \((MatMulNBits|DequantizeLinear)\); merging would dequantize it/);
  });
});

/**
 * Dynamically quantized projections as onnxruntime's quantize_dynamic writes them:
 * x → DynamicQuantizeLinear → MatMulInteger(int8 weights) → Cast → Mul(y_scale · w_scale)
 * [→ Add bias]. Discovery traces through them to the integer weights and names the
 * quantization; conversion reproduces the quantized model at μ = 0; LoRA reads the float
 * x, adds to the float product, and leaves the integer weights as they are.
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Builder, DataType, Model, Tensor, Value, getMetadata, tensorType } from '../../../src/ir/index.js';
import { integerMatMulAt, integerMatMulOf } from '../../../src/passes/attention/integer.js';
import { convert } from '../../../src/passes/convert/convert.js';
import { mergeLora } from '../../../src/passes/convert/lora.js';
import { discoverAttention } from '../../../src/passes/index.js';
import { maxAbs, maxAbsDiff } from '../../helpers/compare.js';
import { checkConvertedLayers, runModel } from '../../helpers/layer_check.js';
import { packedEncoderModel, renameEverything, shuffleNodes } from '../graphs.js';

const feeds = (): Record<string, ort.Tensor> => ({ x: new ort.Tensor('float32', Float32Array.from({ length: 2 * 6 * 64 }, (_, i) => Math.cos(i * 0.21)), [2, 6, 64]) });
const q = (): Model => packedEncoderModel({ cut: 'gather', quant: 'integer' });
const y = async (m: Model, extra: Value[] = []): Promise<Record<string, ort.Tensor>> => runModel(m, feeds(), extra);
const rel = (a: Float32Array, b: Float32Array): number => maxAbsDiff(a, b) / Math.max(1, maxAbs(b));

/** Sets the B of the adapters `which` accepts to a fixed nonzero pattern (as training would). */
function trainB(m: Model, which: (target: string) => boolean = () => true): void {
  for (const [name, v] of m.graph.initializers) {
    if (!name.startsWith('lora.') || !name.endsWith('.B') || !which(name) || !v.initializer) continue;
    const n = v.initializer.size;
    v.initializer = Tensor.fromArray(Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.7) * 0.05), v.initializer.dims.slice(), undefined, name);
  }
}

/** Each adapter's sum Add: its base (the quantized projection's float product), its input x, A, B and scale. */
function adapters(m: Model): { target: string; base: Value; sum: Value; x: Value; a: Float32Array; b: Float32Array; r: number; scale: number }[] {
  const out = [];
  for (const n of m.graph) {
    const target = getMetadata(n.metadataProps, 'titanize.lora.target');
    if (!target || !n.is('Add') || getMetadata(n.metadataProps, 'titanize.rule') !== 'lora') continue;
    const node = m.graph.nodes().find((t) => t !== n && getMetadata(t.metadataProps, 'titanize.lora.target') === target)!;
    expect(node.opType).toBe('MatMulInteger');
    const x = node.requireInput(0).producer!.requireInput(0); // DynamicQuantizeLinear's float input
    const A = m.graph.initializers.get(`lora.${target}.A`)!.initializer!;
    const B = m.graph.initializers.get(`lora.${target}.B`)!.initializer!;
    const scaleNode = m.graph.nodes().find((c) => c.opType === 'Constant' && c.name.startsWith(`lora/${target}/lora_scale`))!;
    const scale = (scaleNode.getTensor('value')!.toTypedArray() as Float32Array)[0]!;
    out.push({ target, base: n.requireInput(0), sum: n.output, x, a: A.toTypedArray() as Float32Array, b: B.toTypedArray() as Float32Array, r: A.dims[1]!, scale });
  }
  return out;
}

/** scale · (x·A)·B in float64, x [rows, in]. */
function delta(x: Float32Array, a: Float32Array, b: Float32Array, r: number, scale: number): Float64Array {
  const inSize = a.length / r;
  const outSize = b.length / r;
  const rows = x.length / inSize;
  const out = new Float64Array(rows * outSize);
  for (let i = 0; i < rows; i++) {
    const down = new Float64Array(r);
    for (let k = 0; k < r; k++) for (let e = 0; e < inSize; e++) down[k]! += x[i * inSize + e]! * a[e * r + k]!;
    for (let o = 0; o < outSize; o++) {
      let acc = 0;
      for (let k = 0; k < r; k++) acc += down[k]! * b[k * outSize + o]!;
      out[i * outSize + o] = scale * acc;
    }
  }
  return out;
}

function relDiff(got: Float32Array, want: Float64Array): number {
  let d = 0;
  let m = 0;
  for (let i = 0; i < want.length; i++) {
    d = Math.max(d, Math.abs(got[i]! - want[i]!));
    m = Math.max(m, Math.abs(want[i]!));
  }
  return d / Math.max(m, 1e-30);
}

describe('dynamically quantized projections (DynamicQuantizeLinear → MatMulInteger)', () => {
  it('onnxruntime on the quantized model is close to its dequantized float twin (uint8 activations)', async () => {
    const twin = packedEncoderModel({ cut: 'gather', quant: 'integer', dequantized: true });
    // the activations are rounded to 256 levels at run time: close, not equal
    expect(rel((await y(q())).y!.data as Float32Array, (await y(twin)).y!.data as Float32Array)).toBeLessThanOrEqual(5e-3);
  });

  it('discovery traces q/k/v and the output projection to the integer weights and names the quantization', () => {
    const r = discoverAttention(q());
    expect(r.rejected).toEqual([]);
    expect(r.sites).toHaveLength(1);
    const [s] = r.sites;
    expect([s!.form, s!.numHeads, s!.numKvHeads, s!.headDim, s!.causal]).toEqual(['F3', 4, 4, 16, false]);
    expect([s!.q.columns, s!.k.columns, s!.v.columns]).toEqual([
      [0, 64],
      [64, 128],
      [128, 192],
    ]);
    for (const p of [s!.q, s!.k, s!.v, s!.outputProjection]) {
      expect(p.quantization).toBe('MatMulInteger int8');
      expect(p.op).toBe('MatMulInteger');
    }
    // the float input before DynamicQuantizeLinear, the integer weight, the bias after the scales
    expect([s!.q.input, s!.q.weight, s!.q.weightShape, s!.q.bias]).toEqual(['x', 'qkv.weight_quantized', [64, 192], 'qkv.bias']);
    expect([s!.outputProjection.node, s!.outputProjection.weight, s!.outputProjection.input]).toEqual(['/enc/out/MatMulInteger', 'out.weight_quantized', s!.output]);
  });

  it('reads structure, not names: the same site on a shuffled, renamed graph', () => {
    const m = q();
    shuffleNodes(m, 3);
    renameEverything(m, 4);
    const [s] = discoverAttention(m).sites;
    expect([s!.numHeads, s!.headDim, s!.q.columns, s!.q.quantization, s!.outputProjection.quantization]).toEqual([4, 16, [0, 64], 'MatMulInteger int8', 'MatMulInteger int8']);
  });

  it('μ = 0 reproduces the quantized model (≤ 1e-5); μ = 0.5 mixes (1−μ)·a + μ·LiZA (≤ 2e-4)', async () => {
    const base = (await y(q())).y!.data as Float32Array;
    const m = q();
    convert(m, { mu: 0, target: 'ort' });
    expect(rel((await y(m)).y!.data as Float32Array, base)).toBeLessThanOrEqual(1e-5);
    expect(await checkConvertedLayers(q(), feeds(), 'delta_product', 0.5)).toBeLessThanOrEqual(2e-4);
  });

  it('LoRA reads the float x, adds exactly its contribution to the float product, and keeps the int8 weights', async () => {
    const m = q();
    const bytes = (t: Tensor): number[] => Array.from(new Uint8Array(t.toTypedArray().buffer.slice(0)));
    const before = new Map([...m.graph.initializers].map(([k, v]) => [k, bytes(v.initializer!)]));
    const r = convert(m, { mu: 0, loraRank: 4, target: 'ort' });
    expect(r.lora.map((a) => a.target)).toEqual(['layers.0.qkv_proj', 'layers.0.o_proj']);
    // nothing dequantizes the weights: the same int8 initializers, read only by MatMulInteger
    for (const [k, data] of before) expect(bytes(m.graph.initializers.get(k)!.initializer!), k).toEqual(data);
    expect(m.graph.nodes().filter((n) => n.opType === 'DequantizeLinear')).toEqual([]);
    for (const w of ['qkv.weight_quantized', 'out.weight_quantized']) expect(m.graph.initializers.get(w)!.consumers().map((n) => n.opType)).toEqual(['MatMulInteger']);

    // a fresh adapter (B = 0) changes nothing
    const fresh = (await y(q())).y!.data as Float32Array;
    expect(maxAbsDiff((await y(m)).y!.data as Float32Array, fresh)).toBe(0);

    // trained adapters: at each projection, sum − product = scale·(x·A)·B of the float x it reads
    trainB(m);
    const ads = adapters(m);
    expect(ads.map((a) => a.target).sort()).toEqual(['layers.0.o_proj', 'layers.0.qkv_proj']);
    const out = await y(m, ads.flatMap((a) => [a.base, a.sum, a.x]));
    for (const a of ads) {
      const got = Float32Array.from(out[a.sum.name]!.data as Float32Array, (s, i) => s - (out[a.base.name]!.data as Float32Array)[i]!);
      const want = delta(out[a.x.name]!.data as Float32Array, a.a, a.b, a.r, a.scale);
      expect(maxAbs(Float32Array.from(want))).toBeGreaterThan(1e-2);
      // fp32 MatMuls against the float64 reference, then one fp32 subtraction
      expect(relDiff(got, want), a.target).toBeLessThanOrEqual(1e-5);
    }

    // end to end: only the output projection's adapter trained, y moves by exactly its delta
    const o = q();
    convert(o, { mu: 0, loraRank: 4, target: 'ort' });
    trainB(o, (name) => name.includes('o_proj'));
    const [oa] = adapters(o).filter((a) => a.target === 'layers.0.o_proj');
    const res = await y(o, [oa!.x]);
    const yo = res.y!.data as Float32Array;
    const moved = Float32Array.from(yo, (v, i) => v - fresh[i]!);
    const want = delta(res[oa!.x.name]!.data as Float32Array, oa!.a, oa!.b, oa!.r, oa!.scale);
    expect(maxAbs(Float32Array.from(want))).toBeGreaterThan(1e-2);
    // the base path is bit-identical; what is left is the fp32 rounding of the adapter and of y's two Adds
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(moved[i]! - want[i]!));
    expect(worst / Math.max(1, maxAbs(yo))).toBeLessThanOrEqual(1e-6);

    expect(() => mergeLora(m)).toThrow(/its projection's weight is quantized \(MatMulInteger\); merging would dequantize it/);
  });
});

describe('where a dynamically quantized projection ends', () => {
  /** x → DynamicQuantizeLinear → MatMulInteger → Cast, then the scales in `order`, then × 0.25 (a scaled query). */
  function graph(order: 'product' | 'nested'): { m: Model; mm: Value; product: Value; scaled: Value; partial: Value | null } {
    const m = new Model({ opsetImports: { '': 17 } });
    const b = new Builder(m.graph);
    const x = m.graph.addInput(new Value('x', tensorType(DataType.FLOAT, ['B', 'T', 8])));
    const w = m.graph.addInitializer(Tensor.fromArray(new Int8Array(8 * 4).fill(3), [8, 4], DataType.INT8), 'w');
    const ws = m.graph.addInitializer(Tensor.fromArray(new Float32Array(4).fill(0.01), [4]), 'w_scale');
    const [y, ys, yzp] = b.op('DynamicQuantizeLinear', [x], {}, { outputs: 3 }) as [Value, Value, Value];
    const mm = b.op('MatMulInteger', [y, w, yzp]);
    const cast = b.op('Cast', [mm], { to: DataType.FLOAT });
    const partial = order === 'nested' ? b.op('Mul', [cast, ys]) : null;
    const product = order === 'nested' ? b.op('Mul', [partial!, ws]) : b.op('Mul', [cast, b.op('Mul', [ys, ws])]);
    const scaled = b.op('Mul', [product, b.scalar(0.25)]);
    m.graph.setOutputs([scaled]);
    return { m, mm, product, scaled, partial };
  }

  it.each(['product', 'nested'] as const)('y_scale · w_scale %s: the Mul that completes the scales, not a later constant factor', (order) => {
    const g = graph(order);
    expect(integerMatMulAt(g.product)?.node).toBe(g.mm.producer);
    expect(integerMatMulAt(g.product)?.input.name).toBe('x');
    expect(integerMatMulAt(g.scaled)).toBeNull();
    if (g.partial) expect(integerMatMulAt(g.partial)).toBeNull();
    expect(integerMatMulOf(g.mm.producer!)?.output).toBe(g.product);
  });
});

/**
 * `convert --cross`: cross-attention layers (queries from the decoder, keys and values from
 * the encoder's output) gain a memory over the encoder side, read by every query. Checked
 * on real exports (nn.TransformerDecoderLayer, a BART-style decoder) against the PyTorch
 * outputs (μ = 0) and, layer by layer, against a plain-loop reference of the memory built on
 * the TypeScript LiZA reference (crossMemoryReference in test/helpers/layer_check.ts).
 */
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { type Model, verifyModel } from '../../../src/ir/index.js';
import { loadModel } from '../../../src/node/index.js';
import { LIZA_RULES } from '../../../src/ops/index.js';
import { convert } from '../../../src/passes/convert/convert.js';
import { loadRef, maxAbs, maxAbsDiff } from '../../helpers/compare.js';
import { FOREIGN_DIR } from '../../helpers/foreign.js';
import { seededRandom } from '../../../src/ir/random.js';
import { decomposedModel, msModel } from '../graphs.js';
import { discoverAttention } from '../../../src/passes/attention/discover.js';
import { type Feeds, checkConvertedLayers, runModel } from '../../helpers/layer_check.js';

const CROSS = ['mha_decoder', 'encdec_decoder'];
const load = (name: string): Model => loadModel(path.join(FOREIGN_DIR, `${name}.onnx`));

function refOf(name: string): { feeds: Feeds; outputs: Record<string, Float32Array> } {
  const ref = loadRef(path.join(FOREIGN_DIR, `${name}.ref.json`));
  const feeds: Feeds = {};
  for (const i of ref.inputs) feeds[i.name] = new ort.Tensor(i.dtype as 'int64' | 'float32', i.data as BigInt64Array | Float32Array, i.dims);
  const outputs: Record<string, Float32Array> = {};
  for (const o of ref.outputs) outputs[o.name] = Float32Array.from(o.data as ArrayLike<number>);
  return { feeds, outputs };
}

function worstAgainst(got: Record<string, ort.Tensor>, expected: Record<string, Float32Array>): number {
  let w = 0;
  for (const [name, want] of Object.entries(expected)) w = Math.max(w, maxAbsDiff(got[name]!.data as Float32Array, want) / Math.max(1, maxAbs(want)));
  return w;
}

describe('convert --cross', () => {
  it.each(CROSS)('%s: every site converts, cross ones with a memory over the encoder side (two state-building LiZA calls)', (name) => {
    const m = load(name);
    const r = convert(m, { cross: true, mu: 0.5, target: 'portable' });
    verifyModel(m);
    expect(r.skipped).toEqual([]);
    const cross = r.sites.filter((s) => s.kind === 'cross');
    expect(cross.length).toBeGreaterThan(0);
    const lizaPerLayer = new Map<string, number>();
    for (const n of m.graph.nodes()) if (n.opType === 'LiZA') lizaPerLayer.set(n.metadataProps.find((e) => e.key === 'titanize.layer')!.value, (lizaPerLayer.get(n.metadataProps.find((e) => e.key === 'titanize.layer')!.value) ?? 0) + 1);
    for (const s of r.sites) expect(lizaPerLayer.get(String(s.layer)), `layer ${s.layer}`).toBe(s.kind === 'cross' ? 2 : 1);
    // without --cross they stay softmax attention, and the report says why
    const plain = convert(load(name), { mu: 0.5 });
    expect(plain.skipped.map((s) => s.layer)).toEqual(cross.map((s) => s.layer));
    expect(plain.skipped[0]!.reason).toMatch(/cross-attention .*kept as softmax attention \(options\.cross converts it\)/);
  });

  it.each(CROSS)('%s: μ = 0 reproduces the PyTorch outputs (ort and portable)', async (name) => {
    const { feeds, outputs } = refOf(name);
    for (const target of ['ort', 'portable'] as const) {
      const m = load(name);
      convert(m, { cross: true, mu: 0, target });
      // exact mixing with μ = 0; what is left is the export's own fp32 noise against PyTorch
      expect(worstAgainst(await runModel(m, feeds), outputs), target).toBeLessThanOrEqual(1e-5);
    }
  });

  for (const name of CROSS) {
    it.each(LIZA_RULES)(`${name}: each layer equals (1−μ)·a + μ·memory_reference, %s, μ = 0.5 and 1`, async (rule) => {
      const { feeds } = refOf(name);
      // fp32 chunked WY form vs the float64 reference; y is RMS-normalised, O(1)
      for (const mu of [0.5, 1]) expect(await checkConvertedLayers(load(name), feeds, rule, mu, { cross: true }), `μ ${mu}`).toBeLessThanOrEqual(2e-4);
    });
  }

  it('the memory changes the output: μ = 0.5 differs from the original, ort and portable agree', async () => {
    const { feeds, outputs } = refOf('encdec_decoder');
    const results = [];
    for (const target of ['ort', 'portable'] as const) {
      const m = load('encdec_decoder');
      convert(m, { cross: true, mu: 0.5, layers: [1, 3], target });
      results.push(await runModel(m, feeds));
    }
    expect(worstAgainst(results[0]!, outputs)).toBeGreaterThan(1e-2);
    expect(worstAgainst(results[0]!, Object.fromEntries(Object.entries(results[1]!).map(([k, v]) => [k, v.data as Float32Array])))).toBeLessThanOrEqual(1e-4);
  });

  it('the memory of a query does not depend on the other queries: a shorter decoder input gives the matching prefix', async () => {
    const { feeds } = refOf('encdec_decoder');
    const m = load('encdec_decoder');
    convert(m, { cross: true, mu: 1, layers: [1, 3], target: 'portable' });
    const full = (await runModel(m, feeds)).logits!;
    const ids = feeds.input_ids!;
    const [B, T] = ids.dims as [number, number];
    const short = new BigInt64Array(B * (T - 2));
    for (let b = 0; b < B; b++) short.set((ids.data as BigInt64Array).subarray(b * T, b * T + T - 2), b * (T - 2));
    const part = (await runModel(m, { ...feeds, input_ids: new ort.Tensor('int64', short, [B, T - 2]) })).logits!;
    const V = (full.dims as number[])[2]!;
    const want = new Float32Array(B * (T - 2) * V);
    for (let b = 0; b < B; b++) want.set((full.data as Float32Array).subarray(b * T * V, (b * T + T - 2) * V), b * (T - 2) * V);
    // the self-attention layers stay softmax here (layers 0, 2 unconverted), so causality holds exactly
    expect(maxAbsDiff(part.data as Float32Array, want) / Math.max(1, maxAbs(want))).toBeLessThanOrEqual(1e-5);
  });
});

describe('convert --cross on keys and values read from graph inputs (cached cross K/V, no projection)', () => {
  // a builder graph: queries projected from x, keys and values the inputs past_key_values.{i}.encoder.*
  // [B, Hkv = 2, S, d] repeated to 4 query heads (repeat_kv), 2 layers
  const build = (): Model => decomposedModel({ kvSource: 'cache', mask: 'none', heads: 4, kvHeads: 2, layers: 2 });
  const feeds = (): Feeds => {
    const r = seededRandom(11);
    const t = (dims: number[]): ort.Tensor => new ort.Tensor('float32', Float32Array.from({ length: dims.reduce((a, x) => a * x, 1) }, () => 2 * r() - 1), dims);
    return { x: t([2, 5, 64]), ...Object.fromEntries([0, 1].flatMap((i) => [[`past_key_values.${i}.encoder.key`, t([2, 2, 7, 16])], [`past_key_values.${i}.encoder.value`, t([2, 2, 7, 16])]])) };
  };

  it('μ = 0 reproduces the original (ort and portable)', async () => {
    const want = await runModel(build(), feeds());
    for (const target of ['ort', 'portable'] as const) {
      const m = build();
      const r = convert(m, { cross: true, mu: 0, target });
      verifyModel(m);
      expect(r.sites.map((s) => [s.layer, s.kind])).toEqual([[0, 'cross'], [1, 'cross']]);
      expect(worstAgainst(await runModel(m, feeds()), Object.fromEntries(Object.entries(want).map(([k, v]) => [k, v.data as Float32Array]))), target).toBeLessThanOrEqual(1e-5);
    }
  });

  it.each(LIZA_RULES)('each layer equals (1−μ)·a + μ·memory_reference on the inputs relaid to [B, S, Hkv·d], %s, μ = 0.5 and 1', async (rule) => {
    for (const mu of [0.5, 1]) expect(await checkConvertedLayers(build(), feeds(), rule, mu, { cross: true }), `μ ${mu}`).toBeLessThanOrEqual(2e-4);
  });
});

describe('convert --cross on MultiHeadAttention over cached BNSH keys and values (an optimized decoder with past)', () => {
  const feeds = (mask: boolean): Feeds => {
    const r = seededRandom(13);
    const t = (dims: number[]): ort.Tensor => new ort.Tensor('float32', Float32Array.from({ length: dims.reduce((a, x) => a * x, 1) }, () => 2 * r() - 1), dims);
    const f: Feeds = { x: t([2, 5, 64]), 'past_key_values.0.encoder.key': t([2, 4, 7, 16]), 'past_key_values.0.encoder.value': t([2, 4, 7, 16]) };
    // row 1 of the encoder side has two padding positions
    if (mask) f.encoder_attention_mask = new ort.Tensor('int32', Int32Array.from({ length: 14 }, (_, i) => (i >= 12 ? 0 : 1)), [2, 7]);
    return f;
  };

  it('discovery finds a cross site reading the caches as its keys and values', () => {
    const s = discoverAttention(msModel('MultiHeadAttention', { crossCache: true })).sites;
    expect(s.map((x) => [x.form, x.kind, x.kvSource])).toEqual([['F2', 'cross', { key: 'past_key_values.0.encoder.key', value: 'past_key_values.0.encoder.value' }]]);
    expect(s[0]!.layout.k).toEqual([['batch'], ['features'], ['seq'], ['features']]);
  });

  it.each([false, true])('μ = 0 reproduces the original (ort and portable), encoder padding mask %s', async (mask) => {
    const want = await runModel(msModel('MultiHeadAttention', { crossCache: true, encoderMask: mask }), feeds(mask));
    for (const target of ['ort', 'portable'] as const) {
      const m = msModel('MultiHeadAttention', { crossCache: true, encoderMask: mask });
      convert(m, { cross: true, mu: 0, target });
      verifyModel(m);
      expect(worstAgainst(await runModel(m, feeds(mask)), Object.fromEntries(Object.entries(want).map(([k, v]) => [k, v.data as Float32Array]))), target).toBeLessThanOrEqual(1e-5);
    }
  });

  it.each(LIZA_RULES)('the layer equals (1−μ)·a + μ·memory_reference on the caches relaid to [B, S, H·d], %s, μ = 0.5 and 1', async (rule) => {
    for (const mu of [0.5, 1]) expect(await checkConvertedLayers(msModel('MultiHeadAttention', { crossCache: true }), feeds(false), rule, mu, { cross: true }), `μ ${mu}`).toBeLessThanOrEqual(2e-4);
  });

  it('the memory reads the encoder padding mask: what the padded cache positions hold changes nothing, at μ = 0.5 and 1', async () => {
    for (const mu of [0.5, 1]) {
      const m = msModel('MultiHeadAttention', { crossCache: true, encoderMask: true });
      const r = convert(m, { cross: true, mu, target: 'portable' });
      expect(r.sites[0]!.mask).not.toBeNull();
      const f = feeds(true);
      const moved = feeds(true);
      for (const name of ['past_key_values.0.encoder.key', 'past_key_values.0.encoder.value']) {
        const data = Float32Array.from(moved[name]!.data as Float32Array);
        // batch row 1, every head, positions 5 and 6 (the padding)
        for (let h = 0; h < 4; h++) for (let p = 5; p < 7; p++) for (let c = 0; c < 16; c++) data[((1 * 4 + h) * 7 + p) * 16 + c] = 9;
        moved[name] = new ort.Tensor('float32', data, [2, 4, 7, 16]);
      }
      const [a, b] = [await runModel(m, f), await runModel(m, moved)];
      const out = Object.keys(a)[0]!;
      expect(maxAbsDiff(a[out]!.data as Float32Array, b[out]!.data as Float32Array), `μ ${mu}`).toBeLessThanOrEqual(1e-5);
      // (and the padding is what it claims: unmasked positions do change the output)
      const unmasked = feeds(true);
      const data = Float32Array.from(unmasked['past_key_values.0.encoder.value']!.data as Float32Array);
      data[((1 * 4 + 0) * 7 + 2) * 16] = 9;
      unmasked['past_key_values.0.encoder.value'] = new ort.Tensor('float32', data, [2, 4, 7, 16]);
      expect(maxAbsDiff(a[out]!.data as Float32Array, (await runModel(m, unmasked))[out]!.data as Float32Array)).toBeGreaterThan(1e-4);
    }
  });
});


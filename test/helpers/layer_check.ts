/**
 * Running a model in onnxruntime with extra values as outputs, and the per-layer check of
 * a conversion: each converted layer's mixed output equals (1−μ)·a + μ·LiZA_reference(q,
 * k, v), the TypeScript reference (float64) run on the layer's own projections.
 */
import * as ort from 'onnxruntime-node';
import { type Model, type Value, encodeModel } from '../../src/ir/index.js';
import { type LizaRule, lizaReference } from '../../src/ops/index.js';
import { convertModel } from '../../src/passes/convert/convert.js';
import { zeroPast } from '../../src/runtime/decoder_state.js';
import { maxAbs, maxAbsDiff } from './compare.js';

export type Feeds = Record<string, ort.Tensor>;

/** Runs `model` on `given` (+ zero LiZA state / window for converted caches), returning `extra` values too. */
export async function runModel(model: Model, given: Feeds, extra: Value[] = [], options: ort.InferenceSession.SessionOptions = {}): Promise<Record<string, ort.Tensor>> {
  for (const v of extra) if (!model.graph.outputs.includes(v)) model.graph.addOutput(v);
  const feeds: Feeds = { ...given };
  const B = Object.values(given)[0]!.dims[0]!;
  for (const v of model.graph.inputs) if (!feeds[v.name]) feeds[v.name] = zeroPast(v.type, B, v.name);
  const s = await ort.InferenceSession.create(encodeModel(model), options);
  try {
    return await s.run(feeds);
  } finally {
    await s.release();
  }
}

/** Converts `model` (portable, chunk 4) and returns the worst relative error over its layers. */
export async function checkConvertedLayers(model: Model, feeds: Feeds, rule: LizaRule, mu: number): Promise<number> {
  const { sites } = convertModel(model, { mu, rule, target: 'portable', chunkSize: 4 });
  // at μ = 1 the softmax branch is gone: the mixed value is LiZA's output itself
  const probes = sites.flatMap((s) => [s.values.xq, s.values.xk, s.values.xv, ...(mu < 1 ? [s.values.attention] : []), s.values.mixed, ...(s.values.mask ? [s.values.mask] : [])]);
  const out = await runModel(model, feeds, probes);
  let worstRel = 0;
  for (const s of sites) {
    const t = (v: Value) => out[v.name]!;
    const xq = t(s.values.xq);
    const dims = xq.dims as number[];
    const [B, T] = [dims[0]!, dims[1]!];
    const mask = s.values.mask ? Float32Array.from(t(s.values.mask).data as BigInt64Array, (x) => Number(x)) : undefined;
    const ref = lizaReference(
      {
        xq: { data: xq.data as Float32Array, dims: [B, T, s.numHeads * s.headDim] },
        xk: { data: t(s.values.xk).data as Float32Array, dims: [B, T, s.numKvHeads * s.headDim] },
        xv: { data: t(s.values.xv).data as Float32Array, dims: [B, T, s.numKvHeads * s.headDim] },
        ...(mask ? { mask: { data: mask, dims: [B, T] } } : {}),
      },
      { q_num_heads: s.numHeads, kv_num_heads: s.numKvHeads, head_dim: s.headDim, rule, order: rule.endsWith('_product') ? 2 : 1, causal: s.causal },
    );
    const y = ref.y.data;
    const a = mu < 1 ? (t(s.values.attention).data as Float32Array) : new Float32Array(y.length);
    const expected = Float32Array.from(a, (x, i) => (1 - mu) * x + mu * y[i]!);
    const got = t(s.values.mixed).data as Float32Array;
    worstRel = Math.max(worstRel, maxAbsDiff(got, expected) / Math.max(1, maxAbs(expected)));
  }
  return worstRel;
}

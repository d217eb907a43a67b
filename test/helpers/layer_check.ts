/**
 * Running a model in onnxruntime with extra values as outputs, and the per-layer check of
 * a conversion: each converted layer's mixed output equals (1−μ)·a + μ·LiZA_reference(q,
 * k, v), the TypeScript reference (float64) run on the layer's own projections.
 */
import * as ort from 'onnxruntime-node';
import { type Model, type Value, encodeModel } from '../../src/ir/index.js';
import { type LizaRule, lizaReference } from '../../src/ops/index.js';
import { featureMap, readout, rmsNormalizeRows } from '../../src/ops/reference/liza.js';
import { type NdArray, reverseTime } from '../../src/ops/reference/tensor.js';
import { convertModel } from '../../src/passes/convert/convert.js';
import type { ConvertOptions } from '../../src/passes/convert/options.js';
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

/**
 * The memory of a cross-attention layer, from its definition (plain loops, float64): the
 * LiZA reference's final state over the keys' sequence, forward and reversed, read by
 * every query: y = ½ (norm(S_fwdᵀ q̂) + norm(S_bwdᵀ q̂)).
 */
export function crossMemoryReference(xq: NdArray, xk: NdArray, xv: NdArray, mask: NdArray | undefined, Hq: number, Hkv: number, d: number, rule: LizaRule): Float64Array {
  const [B, Tq] = [xq.dims[0]!, xq.dims[1]!];
  const attrs = { q_num_heads: Hkv, kv_num_heads: Hkv, head_dim: d, rule, order: rule.endsWith('_product') ? 2 : 1, causal: true };
  const state = (k: NdArray, v: NdArray, m: NdArray | undefined): NdArray => lizaReference({ xq: k, xk: k, xv: v, ...(m ? { mask: m } : {}) }, attrs, { outputType: 'float64' }).present_state;
  const states = [state(xk, xv, mask), state(reverseTime(xk), reverseTime(xv), mask && reverseTime(mask))];
  const G = Hq / Hkv;
  const y = new Float64Array(B * Tq * Hq * d);
  for (const S of states) {
    const o = new Float64Array(B * Tq * Hq * d);
    for (let b = 0; b < B; b++) {
      for (let t = 0; t < Tq; t++) {
        for (let h = 0; h < Hq; h++) {
          const at = ((b * Tq + t) * Hq + h) * d;
          const q = featureMap(Float64Array.from(xq.data.subarray(at, at + d)));
          const kv = Math.floor(h / G);
          const s = Float64Array.from(S.data.subarray((b * Hkv + kv) * d * d, (b * Hkv + kv + 1) * d * d));
          o.set(readout(s, q, d), at);
        }
      }
    }
    rmsNormalizeRows(o, Hq * d);
    for (let i = 0; i < y.length; i++) y[i]! += 0.5 * o[i]!;
  }
  return y;
}

/** Converts `model` (portable, chunk 4) and returns the worst relative error over its layers. */
export async function checkConvertedLayers(model: Model, feeds: Feeds, rule: LizaRule, mu: number, options: ConvertOptions = {}): Promise<number> {
  const { sites } = convertModel(model, { mu, rule, target: 'portable', chunkSize: 4, ...options });
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
    const nd = (v: Value): NdArray => ({ data: t(v).data as Float32Array, dims: t(v).dims as number[] });
    const y = s.kind === 'cross'
      ? crossMemoryReference(nd(s.values.xq), nd(s.values.xk), nd(s.values.xv), mask && { data: mask, dims: t(s.values.mask!).dims as number[] }, s.numHeads, s.numKvHeads, s.headDim, rule)
      : lizaReference(
      {
        xq: { data: xq.data as Float32Array, dims: [B, T, s.numHeads * s.headDim] },
        xk: { data: t(s.values.xk).data as Float32Array, dims: [B, T, s.numKvHeads * s.headDim] },
        xv: { data: t(s.values.xv).data as Float32Array, dims: [B, T, s.numKvHeads * s.headDim] },
        ...(mask ? { mask: { data: mask, dims: [B, T] } } : {}),
      },
      { q_num_heads: s.numHeads, kv_num_heads: s.numKvHeads, head_dim: s.headDim, rule, order: rule.endsWith('_product') ? 2 : 1, causal: s.causal },
    ).y.data;
    const a = mu < 1 ? (t(s.values.attention).data as Float32Array) : new Float32Array(y.length);
    const expected = Float32Array.from(a, (x, i) => (1 - mu) * x + mu * y[i]!);
    const got = t(s.values.mixed).data as Float32Array;
    worstRel = Math.max(worstRel, maxAbsDiff(got, expected) / Math.max(1, maxAbs(expected)));
  }
  return worstRel;
}

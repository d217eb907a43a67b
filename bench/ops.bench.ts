/**
 * ai.tptt operator benchmarks (CPU execution provider, one run, ratios).
 *
 * ops.liza: one attention site of a realistic size (B = 1, Hq = Hkv = 8, d = 64), rule
 *   delta_product of order 2 (TPTT's DeltaProduct memory) and delta, for
 *   T in {512, 2048, 8192} (--quick: 512 only):
 *   - the chunked ONNX function body (chunk 64) vs the per-token Scan oracle;
 *   - the com.microsoft.LinearAttention lowering vs the function body;
 *   - LiZA (function body and contrib lowering) vs causal softmax attention of the same
 *     shape (MatMul - Softmax - MatMul, additive causal mask);
 *   - how each form scales with T: time(T) / time(512).
 *   Every number of a table comes from the same process; for each T the forms run
 *   round-robin (one warm-up round, then 7 rounds, 5 at T = 8192, 3 with --quick) and the
 *   medians are compared, so that machine noise hits every form alike.
 */
import * as os from 'node:os';
import * as ort from 'onnxruntime-node';
import { Builder } from '../src/ir/builder.js';
import { DataType } from '../src/ir/dtype.js';
import { Model } from '../src/ir/model.js';
import { encodeModel } from '../src/ir/serde/encode.js';
import { Tensor } from '../src/ir/tensor.js';
import { tensorType } from '../src/ir/types.js';
import { Value } from '../src/ir/value.js';
import { Emitter } from '../src/ops/emit.js';
import { addLizaNode } from '../src/ops/liza_function.js';
import type { LizaGraphOutputs } from '../src/ops/liza_graph.js';
import { emitLizaScanOracle } from '../src/ops/liza_scan_oracle.js';
import { emitLizaContrib } from '../src/ops/lower_contrib.js';
import type { LizaOpAttributes } from '../src/ops/schema.js';
import { performance } from 'node:perf_hooks';
import { type Row, type SuiteContext, type Timing, ms, ratio, suite, summarize } from './harness.js';

const B = 1;
const H = 8;
const D = 64;
const F = DataType.FLOAT;

type Form = 'function' | 'scan' | 'contrib' | 'softmax';

function lizaModel(form: Exclude<Form, 'softmax'>, attrs: LizaOpAttributes): Uint8Array {
  const model = new Model({ irVersion: 10, opsetImports: { '': 18, 'com.microsoft': 1 } });
  const g = model.graph;
  const xq = g.addInput(new Value('xq', tensorType(F, ['B', 'T', H * D])));
  const xk = g.addInput(new Value('xk', tensorType(F, ['B', 'T', H * D])));
  const xv = g.addInput(new Value('xv', tensorType(F, ['B', 'T', H * D])));
  let out: LizaGraphOutputs;
  if (form === 'function') {
    const r = addLizaNode(model, g, attrs, { xq, xk, xv });
    out = { y: r.y, presentState: r.presentState, presentWindow: r.presentWindow };
  } else {
    out = (form === 'scan' ? emitLizaScanOracle : emitLizaContrib)(new Builder(g), attrs, { xq, xk, xv });
  }
  out.y.type = tensorType(F, ['B', 'T', H * D]);
  out.presentState.type = tensorType(F);
  g.setOutputs([out.y, out.presentState]);
  return encodeModel(model);
}

/** softmax(Q K^T / sqrt(d) + causal) V per head, same packed layout as LiZA. */
function softmaxModel(): Uint8Array {
  const model = new Model({ irVersion: 10, opsetImports: { '': 18 } });
  const g = model.graph;
  const e = new Emitter(new Builder(g));
  const heads = (x: Value): Value => e.transpose(e.reshape(x, [0, 0, H, D]), [0, 2, 1, 3]); // [B, H, T, D]
  const q = heads(g.addInput(new Value('xq', tensorType(F, ['B', 'T', H * D]))));
  const k = heads(g.addInput(new Value('xk', tensorType(F, ['B', 'T', H * D]))));
  const v = heads(g.addInput(new Value('xv', tensorType(F, ['B', 'T', H * D]))));
  const T = e.dim(q, 2);
  const ones = e.op('ConstantOfShape', [e.concat([T, T], 0)], { value: Tensor.fromArray(new Float32Array([1]), [1]) });
  const bias = e.scale(e.sub(e.op('Trilu', [ones], { upper: 0 }), e.f(1)), 1e9); // 0 on/below the diagonal, -1e9 above
  const scores = e.add(e.scale(e.matmul(q, e.transpose(k, [0, 1, 3, 2])), 1 / Math.sqrt(D)), bias);
  const y = e.reshape(e.transpose(e.matmul(e.op('Softmax', [scores], { axis: -1 }), v), [0, 2, 1, 3]), [0, 0, -1]);
  y.type = tensorType(F, ['B', 'T', H * D]);
  g.setOutputs([y]);
  return encodeModel(model);
}

function randomFeeds(T: number, seed: number): Record<string, ort.Tensor> {
  let s = seed >>> 0;
  const next = (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296 - 0.5;
  };
  const t = (): ort.Tensor => {
    const a = new Float32Array(B * T * H * D);
    for (let i = 0; i < a.length; i++) a[i] = 2 * next();
    return new ort.Tensor('float32', a, [B, T, H * D]);
  };
  return { xq: t(), xk: t(), xv: t() };
}

async function session(bytes: Uint8Array): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'all', logSeverityLevel: 3 });
}

async function benchRule(ctx: SuiteContext, rule: 'delta' | 'delta_product', order: number, lengths: number[], withSoftmax: boolean): Promise<void> {
  const attrs: LizaOpAttributes = { q_num_heads: H, kv_num_heads: H, head_dim: D, rule, order, chunk_size: 64 };
  const forms: Form[] = ['function', 'scan', 'contrib', ...(withSoftmax ? (['softmax'] as const) : [])];
  const sessions = new Map<Form, ort.InferenceSession>();
  for (const f of forms) sessions.set(f, await session(f === 'softmax' ? softmaxModel() : lizaModel(f, attrs)));
  const times = new Map<number, Map<Form, Timing>>();
  for (const T of lengths) {
    const feeds = randomFeeds(T, T);
    // round-robin over the forms, so that machine noise hits every form alike
    const runs = ctx.quick ? 3 : T >= 8192 ? 5 : 7;
    const samples = new Map<Form, number[]>(forms.map((f) => [f, []]));
    for (let r = -1; r < runs; r++) {
      for (const f of forms) {
        const s = sessions.get(f)!;
        const t0 = performance.now();
        await s.run(feeds);
        if (r >= 0) samples.get(f)!.push(performance.now() - t0); // r = -1: warm-up
      }
    }
    times.set(T, new Map(forms.map((f) => [f, summarize(samples.get(f)!)])));
  }
  for (const s of sessions.values()) await s.release();

  const label = `${rule}${rule === 'delta_product' ? ` n=${order}` : ''}`;
  const rows: Row[] = lengths.map((T) => {
    const t = times.get(T)!;
    const fn = t.get('function')!.median;
    const r: Row = {
      T,
      function: ms(fn),
      'scan oracle': ms(t.get('scan')!.median),
      contrib: ms(t.get('contrib')!.median),
      'function/scan': ratio(fn, t.get('scan')!.median),
      'contrib/function': ratio(t.get('contrib')!.median, fn),
    };
    if (withSoftmax) {
      const sm = t.get('softmax')!.median;
      r.softmax = ms(sm);
      r['function/softmax'] = ratio(fn, sm);
      r['contrib/softmax'] = ratio(t.get('contrib')!.median, sm);
    }
    return r;
  });
  ctx.table(`LiZA ${label}, B=${B}, Hq=Hkv=${H}, d=${D}, chunk 64 (medians; ratio < 1: left side is faster)`, rows);
  if (lengths.length > 1) {
    const T0 = lengths[0]!;
    ctx.table(
      `scaling with T, ${label}: time(T) / time(${T0}) (linear in T: ${lengths.map((T) => `${T / T0}x`).join(', ')}; quadratic: ${lengths
        .map((T) => `${(T / T0) ** 2}x`)
        .join(', ')})`,
      forms.map((f) => {
        const r: Row = { form: f };
        for (const T of lengths) r[`T=${T}`] = ratio(times.get(T)!.get(f)!.median, times.get(T0)!.get(f)!.median);
        return r;
      }),
    );
  }
  ctx.record(label, Object.fromEntries(lengths.map((T) => [T, Object.fromEntries(forms.map((f) => [f, times.get(T)!.get(f)!.median]))])));
}

suite(
  'ops.liza',
  async (ctx) => {
    const lengths = ctx.quick ? [512] : [512, 2048, 8192];
    ctx.note(
      `onnxruntime-node ${ort.env.versions.common}, CPU execution provider, ${os.cpus().length} CPUs; ` +
        'function = the chunked Scan-free ONNX function body, scan = per-token Scan oracle, contrib = com.microsoft.LinearAttention lowering',
    );
    await benchRule(ctx, 'delta_product', 2, lengths, true);
    await benchRule(ctx, 'delta', 1, lengths, false);
  },
  { isolate: true },
);

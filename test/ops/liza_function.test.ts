/**
 * The chunked ONNX function body of ai.tptt.LiZA, run in onnxruntime-node (CPU), against
 * the float64 reference; the equivalences of DESIGN.md; the function's structure.
 *
 * Tolerance (TOL): the runtime computes in fp32 (unit roundoff 6e-8), the reference in
 * float64. Each output is a sum of O(C) products inside a chunk plus O(log2 N) affine
 * compositions across chunks, of O(1) terms (unit keys, beta < 1, so |A_ij| < 1 and
 * (I + A)^-1 is well conditioned; decays <= 1). y is RMS-normalised (scale 1), the state
 * is compared relative to max(1, max |S|). Measured worst state errors are ~4e-7 for
 * T <= 97 and <= 1e-6 at T = 2048 (9 doubling levels): state tolerance 1e-5. y is
 * o / rms(o), so the fp32 rounding of o is magnified by 1/rms(o) on tokens whose readout
 * nearly cancels: with one head and one token, o = v (k . q) and k . q ~ 0.01 gives y
 * errors of 6e-6 in every fp32 form (the Scan oracle and LinearAttention included). y
 * tolerance 5e-5 covers that with margin; typical y errors are 2e-7. Formula errors show
 * up at 1e-3 .. 1. present_window is a copy: exact.
 */
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { Builder, DataType, Model, Value, attr, decodeModel, encodeModel, tensorType, verifyModel } from '../../src/ir/index.js';
import {
  LIZA_RULES,
  type LizaOpAttributes,
  type LizaRule,
  addLizaNode,
  lizaFunction,
  resolveLizaAttributes,
} from '../../src/ops/index.js';
import { type LizaInputs, lizaFeatures, lizaReference, rmsNormalizeRows } from '../../src/ops/reference/liza.js';
import { type NdArray, zeros } from '../../src/ops/reference/tensor.js';
import {
  ErrorTable,
  buildLizaModel,
  checkCases,
  createSession,
  errorsOf,
  prng,
  randomInputs,
  runLiza,
  sampleCases,
  scaledError,
} from './helpers.js';

const TOL = { y: 5e-5, state: 1e-5, window: 0 };
const table = new ErrorTable();
afterAll(() => table.print('LiZA function body vs float64 reference, worst errors:'));

const full = { pastState: true, pastWindow: true, mask: true };
const orderOf = (rule: LizaRule): number => (rule.endsWith('product') ? 2 : 1);

describe('LiZA function body (chunked, Scan-free) vs reference: random shapes', () => {
  it.each(LIZA_RULES)('%s', async (rule) => {
    const rng = prng(1000 + LIZA_RULES.indexOf(rule));
    await checkCases('function', sampleCases(rng, rule, 5, 3), rng, TOL, table);
  });

  it.each([
    ['delta', 1, 1, 700],
    ['gated_delta_product', 2, 3, 401],
  ] as const)('long call, many chunks (%s, order %i, chunk %i, T = %i): prefix over hundreds of chunks', async (rule, order, C, T) => {
    const rng = prng(500 + T);
    const attrs: LizaOpAttributes = { q_num_heads: 2, kv_num_heads: 1, head_dim: 8, rule, order, chunk_size: C };
    await checkCases('function', [{ attrs, presence: full, runs: [{ B: 1, T }] }], rng, TOL, table);
  });

  it('inline emission (no function) is the same body', async () => {
    const rng = prng(77);
    for (const rule of LIZA_RULES) await checkCases('inline', sampleCases(rng, rule, 1, 2), rng, TOL, table);
  });

  it.each(LIZA_RULES)('bidirectional (causal = 0), %s', async (rule) => {
    const rng = prng(300 + LIZA_RULES.indexOf(rule));
    const attrs: LizaOpAttributes = { q_num_heads: 4, kv_num_heads: 2, head_dim: 8, rule, order: orderOf(rule), chunk_size: 5, causal: false };
    await checkCases('function', [{ attrs, presence: { pastState: false, pastWindow: false, mask: true }, runs: [{ B: 2, T: 13 }, { B: 1, T: 1 }] }], rng, TOL, table);
  });
});

describe('equivalences (DESIGN.md section 3)', () => {
  it.each([
    ['delta_product', 'delta'],
    ['gated_delta_product', 'gated_delta'],
  ] as const)('%s of order 1 = %s', async (product, base) => {
    const rng = prng(11);
    const attrs = (rule: LizaRule): LizaOpAttributes => ({ q_num_heads: 2, kv_num_heads: 1, head_dim: 8, rule, order: 1, chunk_size: 5 });
    const a = await createSession(buildLizaModel('function', attrs(product), full));
    const b = await createSession(buildLizaModel('function', attrs(base), full));
    const inputs = randomInputs(rng, attrs(base), { B: 2, T: 23, presence: full });
    const e = errorsOf(await runLiza(a, inputs), await runLiza(b, inputs));
    expect(Math.max(e.y, e.state, e.window)).toBeLessThanOrEqual(1e-7);
  });

  it.each([
    ['delta_product', 2],
    ['delta_product', 3],
    ['gated_delta_product', 2],
    ['gated_delta_product', 3],
  ] as const)('%s of order %i = the delta rule over the expanded sequence (com.microsoft.LinearAttention on TS-expanded rows)', async (rule, n) => {
    const rng = prng(20 + n);
    const attrs: LizaOpAttributes = { q_num_heads: 4, kv_num_heads: 2, head_dim: 8, rule, order: n, chunk_size: 16 };
    const presence = { pastState: true, pastWindow: true, mask: false };
    const B = 2;
    const T = 19;
    const inputs = randomInputs(rng, attrs, { B, T, presence });
    const product = await runLiza(await createSession(buildLizaModel('function', attrs, presence)), inputs);
    const expanded = await deltaOverExpanded(attrs, inputs);
    expect(scaledError(product.y, expanded.y)).toBeLessThan(TOL.y);
    expect(scaledError(product.present_state, expanded.state)).toBeLessThan(TOL.state);
  });

  it.each(LIZA_RULES)('prefill of T tokens = T single-token calls carrying present_state / present_window (%s)', async (rule) => {
    const rng = prng(40 + LIZA_RULES.indexOf(rule));
    const attrs: LizaOpAttributes = { q_num_heads: 4, kv_num_heads: 2, head_dim: 8, rule, order: rule.endsWith('product') ? 3 : 1, chunk_size: 4 };
    const s = await createSession(buildLizaModel('function', attrs, full));
    const B = 2;
    const T = 11;
    const inputs = randomInputs(rng, attrs, { B, T, presence: full });
    const prefill = await runLiza(s, inputs);
    let state = inputs.past_state!;
    let window = inputs.past_window!;
    const cfg = resolveLizaAttributes(attrs);
    const width = cfg.qNumHeads * cfg.headDim;
    const ySteps = zeros([B, T, width], 'float32');
    for (let t = 0; t < T; t++) {
      const step = await runLiza(s, {
        xq: timeSlice(inputs.xq, t),
        xk: timeSlice(inputs.xk, t),
        xv: timeSlice(inputs.xv, t),
        past_state: state,
        past_window: window,
        mask: timeSlice(inputs.mask!, t),
      });
      for (let b = 0; b < B; b++) ySteps.data.set(step.y.data.subarray(b * width, (b + 1) * width), (b * T + t) * width);
      state = step.present_state;
      window = step.present_window;
    }
    expect(scaledError(ySteps, prefill.y)).toBeLessThan(TOL.y);
    expect(scaledError(state, prefill.present_state)).toBeLessThan(TOL.state);
    expect(scaledError(window, prefill.present_window)).toBe(0);
  });

  it.each(LIZA_RULES)('results do not depend on the chunk size (1, 5, 64) (%s)', async (rule) => {
    const rng = prng(60 + LIZA_RULES.indexOf(rule));
    const attrs = (C: number): LizaOpAttributes => ({ q_num_heads: 2, kv_num_heads: 2, head_dim: 8, rule, order: orderOf(rule), chunk_size: C });
    const inputs = randomInputs(rng, attrs(1), { B: 2, T: 37, presence: full });
    const outs = [];
    for (const C of [1, 5, 64]) outs.push(await runLiza(await createSession(buildLizaModel('function', attrs(C), full)), inputs));
    for (const o of outs.slice(1)) {
      const e = errorsOf(o, outs[0]!);
      table.add(`${rule} chunk 1 vs 5 vs 64`, e);
      expect(e.y).toBeLessThan(TOL.y);
      expect(e.state).toBeLessThan(TOL.state);
      expect(e.window).toBe(0);
    }
  });

  it.each(LIZA_RULES)('zero past_state and zero past_window are exactly "no past" (%s)', async (rule) => {
    const rng = prng(80);
    const attrs: LizaOpAttributes = { q_num_heads: 2, kv_num_heads: 1, head_dim: 4, rule, order: orderOf(rule), chunk_size: 3 };
    const none = { pastState: false, pastWindow: false, mask: false };
    const withPast = { pastState: true, pastWindow: true, mask: false };
    const inputs = randomInputs(rng, attrs, { B: 1, T: 9, presence: none });
    const cfg = resolveLizaAttributes(attrs);
    const a = await runLiza(await createSession(buildLizaModel('function', attrs, none)), inputs);
    const b = await runLiza(await createSession(buildLizaModel('function', attrs, withPast)), {
      ...inputs,
      past_state: zeros([1, cfg.kvNumHeads, cfg.headDim, cfg.headDim], 'float32'),
      past_window: zeros([1, cfg.kvNumHeads, cfg.window, 2 * cfg.headDim], 'float32'),
    });
    const e = errorsOf(a, b);
    expect(Math.max(e.y, e.state, e.window)).toBeLessThan(1e-6);
  });
});

describe('the function and its calls', () => {
  it('has no Scan / Loop / If and only default-domain ops; overloads are distinct per configuration', () => {
    for (const rule of LIZA_RULES) {
      const fn = lizaFunction({ q_num_heads: 4, kv_num_heads: 2, head_dim: 8, rule, order: orderOf(rule) }, full, 18);
      expect(fn.domain).toBe('ai.tptt');
      expect(fn.body.inputs.map((v) => v.name)).toEqual(['xq', 'xk', 'xv', 'past_state', 'past_window', 'mask']);
      expect(fn.body.outputs).toHaveLength(3);
      for (const n of fn.body) {
        expect(['Scan', 'Loop', 'If']).not.toContain(n.opType);
        expect(n.domain).toBe('');
      }
    }
    const a = lizaFunction({ q_num_heads: 4, kv_num_heads: 2, head_dim: 8, rule: 'delta' }, full);
    const b = lizaFunction({ q_num_heads: 4, kv_num_heads: 2, head_dim: 8, rule: 'delta', chunk_size: 32 }, full);
    const c = lizaFunction({ q_num_heads: 4, kv_num_heads: 2, head_dim: 8, rule: 'delta' }, { ...full, mask: false });
    expect(new Set([a.overload, b.overload, c.overload]).size).toBe(3);
    expect(a.overload).toBe('q4_kv2_d8_delta_n1_c64_causal_max32768_SWM');
  });

  it('one function per distinct configuration; onnxruntime resolves each call to its overload', async () => {
    const model = new Model({ irVersion: 10, opsetImports: { '': 18 } });
    const g = model.graph;
    const F = DataType.FLOAT;
    const xq = g.addInput(new Value('xq', tensorType(F, ['B', 'T', 16])));
    const xk = g.addInput(new Value('xk', tensorType(F, ['B', 'T', 8])));
    const xv = g.addInput(new Value('xv', tensorType(F, ['B', 'T', 8])));
    const attrsA: LizaOpAttributes = { q_num_heads: 4, kv_num_heads: 2, head_dim: 4, rule: 'delta', chunk_size: 4 };
    const attrsB: LizaOpAttributes = { q_num_heads: 4, kv_num_heads: 2, head_dim: 4, rule: 'gated_delta_product', order: 2, chunk_size: 3 };
    const r1 = addLizaNode(model, g, attrsA, { xq, xk, xv });
    const r2 = addLizaNode(model, g, attrsA, { xq, xk, xv });
    const r3 = addLizaNode(model, g, attrsB, { xq, xk, xv });
    expect(model.functions).toHaveLength(2);
    expect(model.opsetImports.get('ai.tptt')).toBe(1);
    expect(r1.node.overload).toBe(r2.node.overload);
    expect(r1.node.getString('rule')).toBe('delta');
    for (const r of [r1, r3]) r.y.type = tensorType(F, ['B', 'T', 16]);
    g.setOutputs([r1.y, r3.y]);
    verifyModel(model);
    const bytes = encodeModel(model);
    const back = decodeModel(bytes);
    expect(back.functions.map((f) => f.overload).sort()).toEqual(model.functions.map((f) => f.overload).sort());
    const s = await ort.InferenceSession.create(bytes);
    const rng = prng(5);
    const inputs = randomInputs(rng, attrsA, { B: 2, T: 10, presence: { pastState: false, pastWindow: false, mask: false } });
    const out = await s.run({
      xq: new ort.Tensor('float32', inputs.xq.data as Float32Array, inputs.xq.dims),
      xk: new ort.Tensor('float32', inputs.xk.data as Float32Array, inputs.xk.dims),
      xv: new ort.Tensor('float32', inputs.xv.data as Float32Array, inputs.xv.dims),
    });
    const nd = (name: string): NdArray => ({ data: out[name]!.data as Float32Array, dims: [...out[name]!.dims] });
    expect(scaledError(nd(r1.y.name), lizaReference(inputs, attrsA, { outputType: 'float64' }).y)).toBeLessThan(TOL.y);
    expect(scaledError(nd(r3.y.name), lizaReference(inputs, attrsB, { outputType: 'float64' }).y)).toBeLessThan(TOL.y);
  });

  it('needs default-domain opset >= 17', () => {
    const model = new Model({ opsetImports: { '': 16 } });
    const xq = model.graph.addInput(new Value('xq'));
    expect(() => addLizaNode(model, model.graph, { q_num_heads: 1, kv_num_heads: 1, head_dim: 4, rule: 'delta' }, { xq, xk: xq, xv: xq })).toThrow(
      /opset 16; the LiZA function body needs >= 17/,
    );
  });

  it('a call longer than max_seq_len gives NaN, never a silently wrong state', async () => {
    const attrs: LizaOpAttributes = { q_num_heads: 1, kv_num_heads: 1, head_dim: 4, rule: 'delta_product', order: 2, chunk_size: 2, max_seq_len: 8 };
    const presence = { pastState: false, pastWindow: false, mask: false };
    const s = await createSession(buildLizaModel('function', attrs, presence));
    const rng = prng(9);
    for (const T of [1, 5, 8]) {
      const inputs = randomInputs(rng, attrs, { B: 1, T, presence });
      expect(errorsOf(await runLiza(s, inputs), lizaReference(inputs, attrs, { outputType: 'float64' })).y).toBeLessThan(TOL.y);
    }
    const long = await runLiza(s, randomInputs(rng, attrs, { B: 1, T: 9, presence }));
    expect(Array.from(long.y.data).every(Number.isNaN)).toBe(true);
    expect(Array.from(long.present_state.data).every(Number.isNaN)).toBe(true);
  });
});

// ---- helpers ---------------------------------------------------------------------------

function timeSlice(a: NdArray, t: number): NdArray {
  const [B, T, ...rest] = a.dims as [number, number, ...number[]];
  const inner = rest.reduce((x, y) => x * y, 1);
  const out = zeros([B, 1, ...rest], 'float32');
  for (let b = 0; b < B; b++) out.data.set(a.data.subarray((b * T + t) * inner, (b * T + t + 1) * inner), b * inner);
  return out;
}

/**
 * DESIGN.md: DeltaProduct of order n = the delta rule over the sequence of length n*T in
 * which token t is expanded to (t-n+1, ..., t), reading every n-th output. Features and
 * gates come from the TypeScript reference (lizaFeatures); the expanded rows are built
 * here in TypeScript and run through com.microsoft.LinearAttention(update_rule = delta /
 * gated_delta, scale 1); the readout is normalised like LiZA's.
 */
async function deltaOverExpanded(attrs: LizaOpAttributes, inputs: LizaInputs): Promise<{ y: NdArray; state: NdArray }> {
  const f = lizaFeatures(inputs, attrs);
  const { B, T, Hq, Hkv, G, d, n, w, gated } = f.config;
  const R = T * n;
  const q = new Float32Array(B * R * Hq * d);
  const k = new Float32Array(B * R * Hkv * d);
  const v = new Float32Array(B * R * Hkv * d);
  const beta = new Float32Array(B * R * Hkv);
  const decay = new Float32Array(B * R * Hkv * d);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < n; i++) {
        const r = t * n + i;
        const e = t - n + 1 + i + w; // extended index of token t-n+1+i
        for (let h = 0; h < Hkv; h++) {
          const s = f.seq[b]![h]!;
          k.set(s.kh[e]!, ((b * R + r) * Hkv + h) * d);
          v.set(s.vh[e]!, ((b * R + r) * Hkv + h) * d);
          beta[(b * R + r) * Hkv + h] = s.beta[e]!;
          if (gated && i === 0) decay.set(s.g[t + w]!, ((b * R + r) * Hkv + h) * d);
          if (i === n - 1) for (let gi = 0; gi < G; gi++) q.set(f.qh[b]![t]![h * G + gi]!, ((b * R + r) * Hq + h * G + gi) * d);
        }
      }
    }
  }
  const model = new Model({ irVersion: 10, opsetImports: { '': 18, 'com.microsoft': 1 } });
  const g = model.graph;
  const F = DataType.FLOAT;
  const ins = ['q', 'k', 'v', 'past_state', 'decay', 'beta'].map((name) => g.addInput(new Value(name, tensorType(F))));
  const [o, st] = new Builder(g).op(
    'LinearAttention',
    gated ? ins : [ins[0]!, ins[1]!, ins[2]!, ins[3]!, null, ins[5]!],
    { update_rule: gated ? 'gated_delta' : 'delta', q_num_heads: Hq, kv_num_heads: Hkv, scale: attr.float(1) },
    { domain: 'com.microsoft', outputs: 2 },
  ) as [Value, Value];
  o.type = st.type = tensorType(F);
  g.setOutputs([o, st]);
  if (!gated) g.removeInput(ins[4]!);
  const s = await ort.InferenceSession.create(encodeModel(model));
  const feeds: Record<string, ort.Tensor> = {
    q: new ort.Tensor('float32', q, [B, R, Hq * d]),
    k: new ort.Tensor('float32', k, [B, R, Hkv * d]),
    v: new ort.Tensor('float32', v, [B, R, Hkv * d]),
    past_state: new ort.Tensor('float32', Float32Array.from(inputs.past_state!.data), inputs.past_state!.dims),
    beta: new ort.Tensor('float32', beta, [B, R, Hkv]),
  };
  if (gated) feeds.decay = new ort.Tensor('float32', decay, [B, R, Hkv * d]);
  const r = await s.run(feeds);
  const oAll = r[o.name]!.data as Float32Array;
  const y = new Float64Array(B * T * Hq * d);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const src = (b * R + t * n + n - 1) * Hq * d;
      y.set(oAll.subarray(src, src + Hq * d), (b * T + t) * Hq * d);
    }
  }
  rmsNormalizeRows(y, Hq * d);
  return { y: { data: y, dims: [B, T, Hq * d] }, state: { data: r[st.name]!.data as Float32Array, dims: [...r[st.name]!.dims] } };
}

/**
 * The lowering of ai.tptt.LiZA to com.microsoft.LinearAttention (onnxruntime 1.30 CPU
 * kernel) against the float64 reference; the contrib op's contract as lower_contrib.ts
 * documents it; the model-level lowering of function calls. Tolerances as in
 * liza_function.test.ts.
 */
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { Builder, DataType, Model, Value, attr, encodeModel, tensorType, verifyModel } from '../../src/ir/index.js';
import { LIZA_RULES, type LizaOpAttributes, addLizaNode } from '../../src/ops/index.js';
import { lowerLizaToContrib } from '../../src/passes/index.js';
import { lizaReference } from '../../src/ops/reference/liza.js';
import { zeros } from '../../src/ops/reference/tensor.js';
import {
  ErrorTable,
  buildLizaModel,
  checkCases,
  createSession,
  errorsOf,
  prng,
  randn,
  randomInputs,
  runLiza,
  sampleCases,
  scaledError,
} from './helpers.js';

const TOL = { y: 5e-5, state: 1e-5, window: 0 };
const table = new ErrorTable();
afterAll(() => table.print('LiZA -> com.microsoft.LinearAttention vs float64 reference, worst errors:'));

describe('com.microsoft.LinearAttention in onnxruntime 1.30: the contract the lowering relies on', () => {
  it('inputs (q, k, v, past_state, decay[B,T,Hkv*dk], beta[B,T,Hkv]), key-major state, explicit scale, GQA', async () => {
    const B = 2;
    const T = 5;
    const Hq = 4;
    const Hkv = 2;
    const d = 3;
    const model = new Model({ irVersion: 10, opsetImports: { '': 18, 'com.microsoft': 1 } });
    const g = model.graph;
    const F = DataType.FLOAT;
    const names = ['q', 'k', 'v', 'past_state', 'decay', 'beta'];
    const ins = names.map((n) => g.addInput(new Value(n, tensorType(F))));
    const [o, st] = new Builder(g).op(
      'LinearAttention',
      ins,
      { update_rule: 'gated_delta', q_num_heads: Hq, kv_num_heads: Hkv, scale: attr.float(0.5) },
      { domain: 'com.microsoft', outputs: 2 },
    ) as [Value, Value];
    o.type = st.type = tensorType(F);
    g.setOutputs([o, st]);
    const s = await ort.InferenceSession.create(encodeModel(model));
    const rng = prng(1);
    const q = randn(rng, [B, T, Hq * d]);
    const k = randn(rng, [B, T, Hkv * d], 0.5);
    const v = randn(rng, [B, T, Hkv * d]);
    const S0 = randn(rng, [B, Hkv, d, d]);
    const decay = randn(rng, [B, T, Hkv * d], 0.3);
    const beta = zeros([B, T, Hkv], 'float32');
    beta.data.forEach((_, i) => (beta.data[i] = 0.2 + 0.6 * rng()));
    const feeds = Object.fromEntries([q, k, v, S0, decay, beta].map((a, i) => [names[i]!, new ort.Tensor('float32', a.data as Float32Array, a.dims)]));
    const r = await s.run(feeds);
    // per-token loop: S <- diag(exp(g)) S; S += beta k (v - S^T k)^T; o = 0.5 * S^T q
    const G = Hq / Hkv;
    let worst = 0;
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < Hkv; h++) {
        const S = Float64Array.from(S0.data.subarray((b * Hkv + h) * d * d, (b * Hkv + h + 1) * d * d));
        for (let t = 0; t < T; t++) {
          const at = (x: typeof k, c: number): number => x.data[(b * T + t) * Hkv * d + h * d + c]!;
          for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) S[i * d + j]! *= Math.exp(at(decay, i));
          const bt = beta.data[(b * T + t) * Hkv + h]!;
          const pred = Array.from({ length: d }, (_, j) => S.reduce((acc, _x, idx) => acc + (idx % d === j ? S[idx]! * at(k, Math.floor(idx / d)) : 0), 0));
          for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) S[i * d + j]! += bt * at(k, i) * (at(v, j) - pred[j]!);
          for (let gi = 0; gi < G; gi++) {
            const qi = h * G + gi;
            for (let j = 0; j < d; j++) {
              let acc = 0;
              for (let i = 0; i < d; i++) acc += S[i * d + j]! * q.data[(b * T + t) * Hq * d + qi * d + i]!;
              worst = Math.max(worst, Math.abs(0.5 * acc - (r[o.name]!.data as Float32Array)[(b * T + t) * Hq * d + qi * d + j]!));
            }
          }
        }
        for (let i = 0; i < d * d; i++) worst = Math.max(worst, Math.abs(S[i]! - (r[st.name]!.data as Float32Array)[(b * Hkv + h) * d * d + i]!));
      }
    }
    expect(worst).toBeLessThan(1e-5);
  });
});

describe('LiZA -> com.microsoft.LinearAttention', () => {
  it.each(LIZA_RULES)('matches the reference on random shapes (%s)', async (rule) => {
    const rng = prng(3000 + LIZA_RULES.indexOf(rule));
    await checkCases('contrib', sampleCases(rng, rule, 4, 3), rng, TOL, table);
  });

  it.each(LIZA_RULES)('bidirectional (causal = 0), %s', async (rule) => {
    const rng = prng(3100);
    const attrs: LizaOpAttributes = { q_num_heads: 2, kv_num_heads: 1, head_dim: 8, rule, order: rule.endsWith('product') ? 3 : 1, causal: false };
    await checkCases('contrib', [{ attrs, presence: { pastState: false, pastWindow: false, mask: true }, runs: [{ B: 2, T: 9 }] }], rng, TOL, table);
  });

  it.each(LIZA_RULES)('prefill of T tokens = T single-token calls (%s)', async (rule) => {
    const rng = prng(3200);
    const attrs: LizaOpAttributes = { q_num_heads: 4, kv_num_heads: 2, head_dim: 4, rule, order: rule.endsWith('product') ? 2 : 1 };
    const presence = { pastState: true, pastWindow: true, mask: false };
    const s = await createSession(buildLizaModel('contrib', attrs, presence));
    const T = 7;
    const inputs = randomInputs(rng, attrs, { B: 1, T, presence });
    const prefill = await runLiza(s, inputs);
    let state = inputs.past_state!;
    let window = inputs.past_window!;
    const width = 16;
    for (let t = 0; t < T; t++) {
      const one = (x: typeof inputs.xq) => ({ data: x.data.slice(t * x.dims[2]!, (t + 1) * x.dims[2]!), dims: [1, 1, x.dims[2]!] });
      const step = await runLiza(s, { xq: one(inputs.xq), xk: one(inputs.xk), xv: one(inputs.xv), past_state: state, past_window: window });
      expect(scaledError(step.y, { data: prefill.y.data.slice(t * width, (t + 1) * width), dims: [1, 1, width] })).toBeLessThan(TOL.y);
      state = step.present_state;
      window = step.present_window;
    }
    expect(scaledError(state, prefill.present_state)).toBeLessThan(TOL.state);
    expect(scaledError(window, prefill.present_window)).toBe(0);
  });

  it('lowers the ai.tptt.LiZA calls of a model: names kept, functions dropped, same results', async () => {
    const model = new Model({ irVersion: 10, opsetImports: { '': 18 } });
    const g = model.graph;
    const F = DataType.FLOAT;
    const attrs: LizaOpAttributes = { q_num_heads: 4, kv_num_heads: 2, head_dim: 8, rule: 'gated_delta_product', order: 2, chunk_size: 8 };
    const xq = g.addInput(new Value('xq', tensorType(F, ['B', 'T', 32])));
    const xk = g.addInput(new Value('xk', tensorType(F, ['B', 'T', 16])));
    const xv = g.addInput(new Value('xv', tensorType(F, ['B', 'T', 16])));
    const ps = g.addInput(new Value('past_state', tensorType(F, ['B', 2, 8, 8])));
    const pw = g.addInput(new Value('past_window', tensorType(F, ['B', 2, 3, 16])));
    const r = addLizaNode(model, g, attrs, { xq, xk, xv, pastState: ps, pastWindow: pw });
    r.y.name = 'y';
    r.presentState.name = 'present_state';
    r.presentWindow.name = 'present_window';
    r.y.type = tensorType(F, ['B', 'T', 32]);
    r.presentState.type = tensorType(F, ['B', 2, 8, 8]);
    r.presentWindow.type = tensorType(F, ['B', 2, 3, 16]);
    g.setOutputs([r.y, r.presentState, r.presentWindow]);
    const before = await ort.InferenceSession.create(encodeModel(model));
    const report = lowerLizaToContrib(model);
    expect(report.lowered).toHaveLength(1);
    verifyModel(model);
    expect(model.functions).toHaveLength(0);
    expect([...g].some((n) => n.domain === 'ai.tptt')).toBe(false);
    expect([...g].filter((n) => n.opType === 'LinearAttention' && n.domain === 'com.microsoft')).toHaveLength(1);
    expect(g.outputs.map((v) => v.name)).toEqual(['y', 'present_state', 'present_window']);
    const after = await ort.InferenceSession.create(encodeModel(model));
    const rng = prng(8);
    const inputs = randomInputs(rng, attrs, { B: 2, T: 21, presence: { pastState: true, pastWindow: true, mask: false } });
    const feeds = {
      xq: new ort.Tensor('float32', inputs.xq.data as Float32Array, inputs.xq.dims),
      xk: new ort.Tensor('float32', inputs.xk.data as Float32Array, inputs.xk.dims),
      xv: new ort.Tensor('float32', inputs.xv.data as Float32Array, inputs.xv.dims),
      past_state: new ort.Tensor('float32', inputs.past_state!.data as Float32Array, inputs.past_state!.dims),
      past_window: new ort.Tensor('float32', inputs.past_window!.data as Float32Array, inputs.past_window!.dims),
    };
    const a = await before.run(feeds);
    const b = await after.run(feeds);
    const ref = lizaReference(inputs, attrs, { outputType: 'float64' });
    for (const [name, want] of [['y', ref.y], ['present_state', ref.present_state], ['present_window', ref.present_window]] as const) {
      for (const out of [a, b]) {
        const got = { data: out[name]!.data as Float32Array, dims: [...out[name]!.dims] };
        expect(scaledError(got, want)).toBeLessThan(name === 'y' ? TOL.y : TOL.state);
      }
    }
    const e = errorsOf(
      { y: { data: b.y!.data as Float32Array, dims: [...b.y!.dims] }, present_state: { data: b.present_state!.data as Float32Array, dims: [...b.present_state!.dims] }, present_window: { data: b.present_window!.data as Float32Array, dims: [...b.present_window!.dims] } },
      ref,
    );
    table.add('model lowering gated_delta_product', e);
  });

  it('refuses a model below opset 17', () => {
    expect(() => lowerLizaToContrib(new Model({ opsetImports: { '': 13 } }))).toThrow(/opset >= 17/);
  });
});

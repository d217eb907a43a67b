/**
 * `convert --cross --cross-state`: a cross memory's states are computed once per encoder
 * output. On the BART-style pair of tools/gen_foreign_fixtures.py, the graph without past
 * (it projects encoder_hidden_states) exports them beside its cross keys
 * (present.{i}.encoder.memory), and the graph with past reads them as an input
 * (past_key_values.{i}.encoder.memory) instead of rebuilding them from the cached keys and
 * values at every call: it has no LiZA call for those layers. Decoding through the pair
 * gives the logits of the graph without past run on the whole sequence (1e-4: the chunked
 * fp32 form over different lengths) and of the rebuilding variant (1e-5); at μ = 1 the
 * cached cross keys and values are no longer inputs at all.
 */
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { type Model, encodeModel, verifyModel } from '../../../src/ir/index.js';
import { loadModel } from '../../../src/node/index.js';
import { type ConvertOptions, convertModel } from '../../../src/passes/convert/index.js';
import { DecoderState, declaredTypes } from '../../../src/runtime/decoder_state.js';
import { loadRef, maxAbs, maxAbsDiff } from '../../helpers/compare.js';
import { toOrt } from '../../helpers/fixture_run.js';
import { FOREIGN_DIR } from '../../helpers/foreign.js';
import { runModel } from '../../helpers/layer_check.js';

const load = (name: string): Model => loadModel(path.join(FOREIGN_DIR, `${name}.onnx`));
const ref = (name: string) => loadRef(path.join(FOREIGN_DIR, `${name}.ref.json`));
const rel = (a: Float32Array, b: Float32Array): number => maxAbsDiff(a, b) / Math.max(1, maxAbs(b));
const V = 64;

/** The 6 decoder tokens per row: the no-past reference's 5, then the step's one. */
function tokens(): number[][] {
  const a = ref('encdec_decoder').inputs[0]!;
  const b = ref('encdec_decoder_past').inputs[0]!;
  const [B, T] = a.dims as [number, number];
  return Array.from({ length: B }, (_, r) => [...Array.from((a.data as BigInt64Array).subarray(r * T, (r + 1) * T), Number), Number((b.data as BigInt64Array)[r])]);
}
const ids = (rows: number[][]): ort.Tensor => new ort.Tensor('int64', BigInt64Array.from(rows.flat(), BigInt), [rows.length, rows[0]!.length]);
const encoder = (): ort.Tensor => toOrt(ref('encdec_decoder').inputs[1]!);

function converted(name: string, options: ConvertOptions): Model {
  const m = load(name);
  convertModel(m, { target: 'portable', chunkSize: 4, cross: true, layers: [1, 3], ...options });
  verifyModel(m);
  return m;
}

/** Feeds for the past graph from the no-past graph's outputs (present.* → past_key_values.*). */
function pastFeeds(past: Model, presents: Record<string, ort.Tensor>, step: number[][]): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = { input_ids: ids(step) };
  for (const v of past.graph.inputs) if (v.name !== 'input_ids') feeds[v.name] = presents[v.name.replace(/^past_key_values\./, 'present.')]!;
  return feeds;
}

const lastLogits = (t: ort.Tensor): Float32Array => {
  const [B, T] = t.dims as [number, number, number];
  const out = new Float32Array(B * V);
  for (let b = 0; b < B; b++) out.set((t.data as Float32Array).subarray((b * T + T - 1) * V, (b * T + T) * V), b * V);
  return out;
};

describe('convert --cross-state', () => {
  it.each([0.5, 1])('μ %s: the graph without past exports the states, the one with past reads them and builds none; decoding through the pair equals the whole sequence', async (mu) => {
    const noPast = converted('encdec_decoder', { mu, crossState: true });
    const past = converted('encdec_decoder_past', { mu, crossState: true });
    // (named beside the export's own cross keys: decoder layers 0 and 1 hold attention layers 1 and 3)
    expect(noPast.graph.outputs.map((v) => v.name).filter((n) => n.endsWith('.memory'))).toEqual(['present.0.encoder.memory', 'present.1.encoder.memory']);
    expect(past.graph.inputs.map((v) => v.name).filter((n) => n.endsWith('.memory'))).toEqual(['past_key_values.0.encoder.memory', 'past_key_values.1.encoder.memory']);
    const layersWithLiza = new Set(past.graph.nodes().filter((n) => n.opType === 'LiZA').map((n) => n.metadataProps.find((e) => e.key === 'titanize.layer')?.value));
    expect(layersWithLiza.size).toBe(0);
    // at μ = 1 the cross softmax is gone, and with it the need for the cached cross keys and values
    const crossKv = past.graph.inputs.map((v) => v.name).filter((n) => /\.encoder\.(key|value)$/.test(n));
    expect(crossKv).toEqual(mu === 1 ? [] : ['past_key_values.0.encoder.key', 'past_key_values.0.encoder.value', 'past_key_values.1.encoder.key', 'past_key_values.1.encoder.value']);
    const rows = tokens();
    const prefill = await runModel(noPast, { input_ids: ids(rows.map((r) => r.slice(0, 5))), encoder_hidden_states: encoder() });
    expect(prefill['present.0.encoder.memory']!.dims).toEqual([2, 2, 4, 8, 8]);
    const step = await runModel(past, pastFeeds(past, prefill, rows.map((r) => [r[5]!])));
    const whole = await runModel(converted('encdec_decoder', { mu, crossState: true }), { input_ids: ids(rows), encoder_hidden_states: encoder() });
    expect(rel(step.logits!.data as Float32Array, lastLogits(whole.logits!))).toBeLessThanOrEqual(1e-4);
    // the same as rebuilding the states from the cached keys and values at the step
    const rebuilt = converted('encdec_decoder_past', { mu });
    const plain = converted('encdec_decoder', { mu });
    const p2 = await runModel(plain, { input_ids: ids(rows.map((r) => r.slice(0, 5))), encoder_hidden_states: encoder() });
    const s2 = await runModel(rebuilt, pastFeeds(rebuilt, p2, rows.map((r) => [r[5]!])));
    expect(rel(step.logits!.data as Float32Array, s2.logits!.data as Float32Array)).toBeLessThanOrEqual(1e-5);
  });

  it('decodes through DecoderState with the states (and the cross keys) given once: prefill = single steps', async () => {
    const noPast = converted('encdec_decoder', { mu: 0.5, crossState: true });
    const past = converted('encdec_decoder_past', { mu: 0.5, crossState: true });
    const rows = tokens();
    const prefill = await runModel(noPast, { input_ids: ids(rows.map((r) => r.slice(0, 1))), encoder_hidden_states: encoder() });
    const inputs = Object.fromEntries(past.graph.inputs.filter((v) => v.name.includes('.encoder.')).map((v) => [v.name, prefill[v.name.replace(/^past_key_values\./, 'present.')]!]));
    const s = await ort.InferenceSession.create(encodeModel(past));
    try {
      const whole = new DecoderState(s, declaredTypes(past), 2, { inputs });
      const all = (await whole.run(rows)).logits.data as Float32Array;
      const steps = new DecoderState(s, declaredTypes(past), 2, { inputs });
      for (let t = 0; t < 6; t++) {
        const y = (await steps.run(rows.map((r) => [r[t]!]))).logits.data as Float32Array;
        for (let b = 0; b < 2; b++) expect(rel(y.subarray(b * V, (b + 1) * V), all.subarray((b * 6 + t) * V, (b * 6 + t + 1) * V)), `token ${t} row ${b}`).toBeLessThanOrEqual(1e-4);
      }
    } finally {
      await s.release();
    }
  });

  it('needs --cross', () => {
    expect(() => convertModel(load('encdec_decoder'), { crossState: true })).toThrow(/options\.crossState needs options\.cross/);
  });
});

/**
 * Recurrent decoding of converted KV-cache exports: the KV pairs of converted layers become
 * fixed-size state/window pairs (μ = 1), or stay with a window cut (μ < 1, --window), and
 * a prefill of T tokens equals T single-token steps and any split into chunks; greedy
 * generation equals full-sequence recomputation.
 */
import * as path from 'node:path';
import type * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { type Model, encodeModel, verifyModel } from '../../../src/ir/index.js';
import { loadModel } from '../../../src/node/index.js';
import { LIZA_RULES, type LizaRule } from '../../../src/ops/index.js';
import { convert } from '../../../src/passes/convert/convert.js';
import { createSession } from '../../../src/runtime/execution_provider.js';
import { DecoderState } from '../../../src/runtime/decoder_state.js';
import { declaredTypes, generate } from '../../../src/runtime/generate.js';
import { argmax } from '../../../src/runtime/sampling.js';
import { maxAbs, maxAbsDiff } from '../../helpers/compare.js';

const FIX = path.resolve(__dirname, '../../fixtures');

interface Variant {
  label: string;
  mu: number;
  window?: number;
}
const VARIANTS: Variant[] = [
  { label: 'μ = 1 (state only)', mu: 1 },
  { label: 'μ = 0.5, window 3 (state + cut KV cache)', mu: 0.5, window: 3 },
  { label: 'μ = 0.5 (state + whole KV cache)', mu: 0.5 },
];

async function converted(name: string, rule: LizaRule, v: Variant, target: 'ort' | 'portable' = 'portable'): Promise<{ model: Model; session: ort.InferenceSession }> {
  const model = loadModel(path.join(FIX, `${name}.onnx`));
  convert(model, { rule, mu: v.mu, window: v.window, target, chunkSize: 4 });
  verifyModel(model);
  const { session } = await createSession(encodeModel(model));
  return { model, session };
}

function concatLogits(parts: ort.Tensor[]): Float32Array[] {
  // per row: concatenate the chunks' [t, V] blocks
  const B = parts[0]!.dims[0]!;
  const rows: Float32Array[] = [];
  for (let b = 0; b < B; b++) {
    const chunks = parts.map((p) => {
      const [, t, V] = p.dims as number[];
      return (p.data as Float32Array).subarray(b * t! * V!, (b + 1) * t! * V!);
    });
    const out = new Float32Array(chunks.reduce((n, c) => n + c.length, 0));
    let o = 0;
    for (const c of chunks) {
      out.set(c, o);
      o += c.length;
    }
    rows.push(out);
  }
  return rows;
}

/** Runs the prompt split at `cuts` (e.g. [7] = one prefill, [1,1,...] = single steps). */
async function runSplit(session: ort.InferenceSession, model: Model, prompt: number[][], mask: number[][], sizes: number[]) {
  const st = new DecoderState(session, declaredTypes(model), prompt.length);
  const logits: ort.Tensor[] = [];
  let at = 0;
  for (const n of sizes) {
    const r = await st.run(prompt.map((row) => row.slice(at, at + n)), mask.map((row) => row.slice(at, at + n)));
    logits.push(r.logits);
    at += n;
  }
  return { logits: concatLogits(logits), past: st.past, carried: st.carriedBytes() };
}

function rel(a: Float32Array, b: Float32Array): number {
  return maxAbsDiff(a, b) / Math.max(1, maxAbs(b));
}

const DECODERS: { name: string; batch: number }[] = [
  { name: 'llama_past', batch: 2 },
  { name: 'qwen2_past', batch: 2 },
  { name: 'gpt2_past', batch: 2 },
  // GroupQueryAttention's CPU kernel accepts a prompt chunk after a past only for batch 1
  { name: 'gqa_contrib', batch: 1 },
];

describe('recurrent state graphs', () => {
  it('μ = 1: KV pairs become fixed-size state/window pairs; nothing reads the past length any more', async () => {
    const model = loadModel(path.join(FIX, 'llama_past.onnx'));
    const r = convert(model, { mu: 1, rule: 'delta_product', order: 3, target: 'portable' });
    const ins = model.graph.inputs.map((v) => v.name);
    const outs = model.graph.outputs.map((v) => v.name);
    expect(ins).toEqual(['input_ids', 'attention_mask', 'position_ids', 'past_key_values.0.state', 'past_key_values.0.window', 'past_key_values.1.state', 'past_key_values.1.window']);
    expect(outs).toEqual(['logits', 'present.0.state', 'present.0.window', 'present.1.state', 'present.1.window']);
    expect(r.state.removedKv.sort()).toEqual(['past_key_values.0.key', 'past_key_values.0.value', 'past_key_values.1.key', 'past_key_values.1.value', 'present.0.key', 'present.0.value', 'present.1.key', 'present.1.value'].sort());
    const state = model.graph.inputs.find((v) => v.name === 'past_key_values.0.window')!;
    expect(state.type).toMatchObject({ kind: 'tensor', shape: [{ param: 'batch_size' }, { value: 2 }, { value: 4 }, { value: 32 }] });
  });

  it('with --layers, a layer left unconverted keeps its cache and the shared mask still gets the past length', async () => {
    const model = loadModel(path.join(FIX, 'llama_past.onnx'));
    convert(model, { mu: 1, layers: [0], target: 'portable' });
    verifyModel(model);
    const ins = model.graph.inputs.map((v) => v.name);
    expect(ins).toContain('past_key_values.1.key');
    expect(ins).not.toContain('past_key_values.0.key');
    const { session } = await createSession(encodeModel(model));
    const prompt = [[5, 17, 42, 7, 99, 3, 8]];
    const whole = await runSplit(session, model, prompt, [[1, 1, 1, 1, 1, 1, 1]], [7]);
    const steps = await runSplit(session, model, prompt, [[1, 1, 1, 1, 1, 1, 1]], [3, 1, 1, 2]);
    expect(rel(steps.logits[0]!, whole.logits[0]!)).toBeLessThanOrEqual(1e-4);
  });

  for (const { name, batch } of DECODERS) {
    for (const v of VARIANTS) {
      it.each(LIZA_RULES)(`${name}, ${v.label}, %s: prefill = single steps = any split, and the state is the same`, async (rule) => {
        const { model, session } = await converted(name, rule, v);
        const T = 7;
        const prompt = Array.from({ length: batch }, (_, b) => Array.from({ length: T }, (_, t) => (b * 31 + t * 17 + 5) % 250));
        const mask = prompt.map((row) => row.map(() => 1));
        const whole = await runSplit(session, model, prompt, mask, [T]);
        // fp32 chunked prefill vs recurrent single steps: same math, different summation order
        for (const sizes of [[1, 1, 1, 1, 1, 1, 1], [3, 4], [2, 1, 4]]) {
          if (name === 'gqa_contrib' && v.mu < 1 && sizes.some((s, i) => i > 0 && s > 1) && batch > 1) continue;
          const split = await runSplit(session, model, prompt, mask, sizes);
          for (let b = 0; b < batch; b++) expect(rel(split.logits[b]!, whole.logits[b]!), `${sizes}`).toBeLessThanOrEqual(1e-4);
          for (const k of Object.keys(whole.past)) {
            expect(rel(split.past[k]!.data as Float32Array, whole.past[k]!.data as Float32Array), `${k} ${sizes}`).toBeLessThanOrEqual(1e-4);
          }
        }
        await session.release();
      });
    }
  }

  const GREEDY_CASES = DECODERS.flatMap(({ name }) => [
    ...VARIANTS.map((v) => ({ name, rule: 'delta_product' as LizaRule, v })),
    ...LIZA_RULES.filter((r) => r !== 'delta_product').map((rule) => ({ name, rule, v: VARIANTS[0]! })),
  ]);
  it.each(GREEDY_CASES.map((c) => [`${c.name}, ${c.rule}, ${c.v.label}`, c] as const))('%s: greedy generation matches full-sequence recomputation token for token', async (_label, c) => {
    const { name } = c;
    for (const v of [c.v]) {
      const { model, session } = await converted(name, c.rule, v, 'ort');
      const types = declaredTypes(model);
      const prompt = [5, 17, 42, 7, 99];
      const steps = 6;
      const g = await generate(session, types, [prompt], { maxNewTokens: steps }).result;
      // oracle: recompute the whole sequence from an empty past at every step
      const seq = prompt.slice();
      const expected: number[] = [];
      for (let s = 0; s < steps; s++) {
        const st = new DecoderState(session, types, 1);
        const { logits } = await st.run([seq]);
        const V = logits.dims[2]!;
        const tok = argmax(logits.data as Float32Array, (seq.length - 1) * V, V);
        expected.push(tok);
        seq.push(tok);
      }
      expect(g.tokens[0], `${name} ${v.label}`).toEqual(expected);
      await session.release();
    }
  });

  it.each(['llama_past', 'gpt2_past'])('%s: a left-padded batch generates what each prompt generates alone', async (name) => {
    for (const v of VARIANTS) {
      const { model, session } = await converted(name, 'gated_delta_product', v, 'ort');
      const types = declaredTypes(model);
      const prompts = [
        [5, 17, 42, 7, 99, 3],
        [11, 200, 8],
      ];
      const batch = await generate(session, types, prompts, { maxNewTokens: 5 }).result;
      for (let b = 0; b < prompts.length; b++) {
        const alone = await generate(session, types, [prompts[b]!], { maxNewTokens: 5 }).result;
        expect(batch.tokens[b], `${name} ${v.label} row ${b}`).toEqual(alone.tokens[0]);
      }
      await session.release();
    }
  });

  it('the carried inputs of a state-only model do not grow with the context; a KV cache does', async () => {
    const { model, session } = await converted('llama_past', 'delta_product', VARIANTS[0]!);
    const st = new DecoderState(session, declaredTypes(model), 1);
    await st.run([[1, 2, 3]]);
    const a = st.carriedBytes();
    for (let i = 0; i < 10; i++) await st.run([[4]]);
    expect(st.carriedBytes()).toBe(a);
    const windowed = await converted('llama_past', 'delta_product', VARIANTS[1]!);
    const sw = new DecoderState(windowed.session, declaredTypes(windowed.model), 1);
    await sw.run([[1, 2, 3, 4, 5, 6]]);
    const b = sw.carriedBytes();
    for (let i = 0; i < 10; i++) await sw.run([[4]]);
    expect(sw.carriedBytes()).toBe(b); // the cut cache stays at L − 1 = 2 positions
  });
});

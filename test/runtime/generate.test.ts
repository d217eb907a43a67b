import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { loadModel } from '../../src/node/index.js';
import { createSession } from '../../src/runtime/execution_provider.js';
import { sessionPairs } from '../../src/runtime/decoder_state.js';
import { declaredTypes, generate } from '../../src/runtime/generate.js';
import { Sampler, argmax } from '../../src/runtime/sampling.js';

const FIX = path.resolve(__dirname, '../fixtures');

/** Greedy decoding by recomputing the whole sequence each step (no cache): the oracle. */
async function recompute(session: ort.InferenceSession, prompts: number[][], steps: number): Promise<number[][]> {
  const rows = prompts.map((p) => p.slice());
  const out: number[][] = prompts.map(() => []);
  for (let s = 0; s < steps; s++) {
    const T = Math.max(...rows.map((r) => r.length));
    const B = rows.length;
    const ids = new BigInt64Array(B * T);
    const mask = new BigInt64Array(B * T);
    const pos = new BigInt64Array(B * T);
    rows.forEach((r, b) => {
      const off = T - r.length;
      for (let t = 0; t < T; t++) {
        ids[b * T + t] = BigInt(t < off ? 0 : r[t - off]!);
        mask[b * T + t] = t < off ? 0n : 1n;
        pos[b * T + t] = BigInt(Math.max(t - off, 0));
      }
    });
    const res = await session.run({
      input_ids: new ort.Tensor('int64', ids, [B, T]),
      attention_mask: new ort.Tensor('int64', mask, [B, T]),
      position_ids: new ort.Tensor('int64', pos, [B, T]),
    });
    const logits = res.logits!;
    const V = logits.dims[2]!;
    rows.forEach((r, b) => {
      const tok = argmax(logits.data as Float32Array, (b * T + T - 1) * V, V);
      r.push(tok);
      out[b]!.push(tok);
    });
  }
  return out;
}

describe('generation loop', () => {
  it('carries the pairs of the decoder interface that the session has', () => {
    const io = { tokens: 'ids', mask: null, positions: null, tokenTypes: null, logits: 'out', pairs: [
      { input: 'k0', output: 'k0_out', layer: 0, kind: 'key' },
      { input: 's1', output: 's1_out', layer: 1, kind: 'state' },
    ] };
    expect(sessionPairs(io, ['ids', 'k0', 's1'], ['out', 'k0_out', 's1_out'])).toEqual(io.pairs);
    expect(sessionPairs(io, ['ids', 's1'], ['out', 's1_out'])).toEqual([io.pairs[1]]);
    expect(() => sessionPairs(io, ['ids', 'k0'], ['out'])).toThrow(/model input 'k0' is carried from output 'k0_out', which the session does not have/);
  });

  it.each(['llama', 'qwen2', 'gpt2'])('%s: greedy KV-cache generation matches full recomputation token for token (batch 2, left padding)', async (name) => {
    const prompts = [
      [5, 17, 42, 7, 99, 3],
      [11, 200, 8],
    ];
    const steps = 8;
    const { session: full } = await createSession(path.join(FIX, `${name}.onnx`));
    const expected = await recompute(full, prompts, steps);
    const pastFile = path.join(FIX, `${name}_past.onnx`);
    const { session } = await createSession(pastFile);
    const g = generate(session, declaredTypes(loadModel(pastFile)), prompts, { maxNewTokens: steps });
    const streamed: number[][] = [];
    for await (const s of g.steps) streamed.push(s.tokens);
    const { tokens, stats } = await g.result;
    expect(tokens).toEqual(expected);
    expect(streamed.map((s) => s[0])).toEqual(expected[0]);
    expect(stats.newTokens).toBe(2 * steps);
    expect(stats.prefillMs).toBeGreaterThan(0);
  });

  it.each(['llama', 'foreign/gptj', 'foreign/phi'])('%s without a KV cache: each step recomputes the sequence, = full recomputation (batch 2, left padding)', async (name) => {
    const prompts = [
      [5, 17, 42, 7, 99, 3],
      [11, 200, 8],
    ];
    const steps = 5;
    const file = path.join(FIX, `${name}.onnx`);
    const { session } = await createSession(file);
    const expected = await recompute(session, prompts, steps);
    const { tokens } = await generate(session, declaredTypes(loadModel(file)), prompts, { maxNewTokens: steps }).result;
    expect(tokens).toEqual(expected);
  });

  it('stops a row at a stop token and keeps going for the others', async () => {
    const file = path.join(FIX, 'llama_past.onnx');
    const { session } = await createSession(file);
    const first = await generate(session, declaredTypes(loadModel(file)), [[5, 17, 42]], { maxNewTokens: 4 }).result;
    const stopAt = first.tokens[0]![1]!;
    const r = await generate(session, declaredTypes(loadModel(file)), [[5, 17, 42], [9, 9]], { maxNewTokens: 4, stopTokens: [stopAt] }).result;
    expect(r.tokens[0]).toEqual(first.tokens[0]!.slice(0, first.tokens[0]!.indexOf(stopAt) + 1));
  });

  it('sampling is reproducible with a seed and honours top-k', () => {
    const logits = Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7]);
    const a = new Sampler({ temperature: 1, seed: 7 });
    const b = new Sampler({ temperature: 1, seed: 7 });
    const xs = Array.from({ length: 50 }, () => a.pick(logits, 0, 8));
    expect(Array.from({ length: 50 }, () => b.pick(logits, 0, 8))).toEqual(xs);
    expect(new Set(xs).size).toBeGreaterThan(1);
    const k2 = new Sampler({ temperature: 1, topK: 2, seed: 1 });
    for (let i = 0; i < 50; i++) expect([6, 7]).toContain(k2.pick(logits, 0, 8));
    const p = new Sampler({ temperature: 1, topP: 0.5, seed: 1 });
    for (let i = 0; i < 50; i++) expect([6, 7]).toContain(p.pick(logits, 0, 8));
    expect(new Sampler().pick(logits, 0, 8)).toBe(7);
  });

  it('an unavailable execution provider fails with what is missing, or falls back when asked', async () => {
    const file = path.join(FIX, 'bert.onnx');
    // the CUDA provider is never installed by this project's offline install
    await expect(createSession(file, { ep: 'cuda' })).rejects.toThrow(/CUDA execution provider/);
    const notes: string[] = [];
    const { ep } = await createSession(file, { ep: 'cuda', fallback: true, onFallback: (m) => notes.push(m) });
    expect(ep).toBe('cpu');
    expect(notes[0]).toMatch(/falling back to the CPU/);
    // WebGPU works where a Vulkan adapter exists (e.g. Mesa's lavapipe), else says what is missing
    const webgpu = await createSession(file, { ep: 'webgpu' }).then(
      async (r) => {
        await r.session.release();
        return 'ok';
      },
      (e: Error) => e.message,
    );
    if (webgpu !== 'ok') expect(webgpu).toMatch(/WebGPU|webgpu/);
  });
});

/**
 * The decoder interface found from the structure: on the fixtures it names the inputs
 * and outputs Hugging Face names them; on a KV-cache export with every input, output,
 * node and value renamed it finds the renamed ones, and the renamed export converts and
 * decodes (prefill = single steps) with the mapping convert records.
 */
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { type Model, encodeModel, getMetadata } from '../../../src/ir/index.js';
import { loadModel } from '../../../src/node/index.js';
import { IO_KEY, decoderIO, findDecoderIO } from '../../../src/passes/analysis/io.js';
import { convert } from '../../../src/passes/convert/convert.js';
import { DecoderState, declaredTypes } from '../../../src/runtime/decoder_state.js';
import { maxAbs, maxAbsDiff } from '../../helpers/compare.js';
import { renameEverything } from '../graphs.js';

const FIX = path.resolve(__dirname, '../../fixtures');
const load = (name: string): Model => loadModel(path.join(FIX, `${name}.onnx`));

describe('decoder interface from the structure', () => {
  it.each(['llama_past', 'qwen2_past', 'gpt2_past'])('%s: token ids, mask, positions, logits and the KV pairs', (name) => {
    const io = findDecoderIO(load(name));
    expect([io.tokens, io.mask, io.positions, io.tokenTypes, io.logits]).toEqual(['input_ids', 'attention_mask', 'position_ids', null, 'logits']);
    expect(io.pairs).toEqual([0, 1].flatMap((i) => [
      { input: `past_key_values.${i}.key`, output: `present.${i}.key`, layer: i, kind: 'key' },
      { input: `past_key_values.${i}.value`, output: `present.${i}.value`, layer: i, kind: 'value' },
    ]));
  });

  it('attention23: positions are the position_ids of the RotaryEmbedding ops', () => {
    const io = findDecoderIO(load('attention23'));
    expect([io.tokens, io.positions, io.tokenTypes]).toEqual(['input_ids', 'position_ids', null]);
  });

  it('bert: token types are told from token ids by their table', () => {
    const io = findDecoderIO(load('bert'));
    expect([io.tokens, io.mask, io.tokenTypes, io.pairs.length]).toEqual(['input_ids', 'attention_mask', 'token_type_ids', 0]);
  });

  it('convert records the converted interface: state pairs instead of the dropped KV pairs (μ = 1)', () => {
    const m = load('llama_past');
    convert(m, { mu: 1, target: 'portable' });
    const io = JSON.parse(getMetadata(m.metadataProps, IO_KEY)!) as ReturnType<typeof decoderIO>;
    expect(io.tokens).toBe('input_ids');
    expect(io.pairs.map((p) => `${p.input}→${p.output}`)).toEqual([
      'past_key_values.0.state→present.0.state',
      'past_key_values.0.window→present.0.window',
      'past_key_values.1.state→present.1.state',
      'past_key_values.1.window→present.1.window',
    ]);
  });
});

describe('an export that does not follow Hugging Face naming', () => {
  const renamed = (): Model => {
    const m = load('llama_past');
    renameEverything(m, 11);
    return m;
  };

  it('the interface is found under the new names', () => {
    const original = load('llama_past');
    const m = renamed();
    const io = findDecoderIO(m);
    const at = (names: readonly { name: string }[], of: readonly { name: string }[], n: string | null) => (n === null ? null : names[of.findIndex((v) => v.name === n)]!.name);
    const ref = findDecoderIO(original);
    expect(io.tokens).toBe(at(m.graph.inputs, original.graph.inputs, ref.tokens));
    expect(io.mask).toBe(at(m.graph.inputs, original.graph.inputs, ref.mask));
    expect(io.positions).toBe(at(m.graph.inputs, original.graph.inputs, ref.positions));
    expect(io.logits).toBe(at(m.graph.outputs, original.graph.outputs, ref.logits));
    expect(io.pairs).toHaveLength(4);
    expect(io.pairs.every((p) => !p.input.startsWith('past_key_values'))).toBe(true);
  });

  it.each([0.5, 1])('converts (μ = %s) and decodes with a fixed-size state: prefill = single steps', async (mu) => {
    const m = renamed();
    convert(m, { mu, target: 'ort' });
    const session = await ort.InferenceSession.create(encodeModel(m));
    try {
      const prompt = [[5, 17, 42, 7, 99, 3]];
      const run = async (sizes: number[]): Promise<Float32Array> => {
        const st = new DecoderState(session, declaredTypes(m), 1);
        const parts: Float32Array[] = [];
        let at = 0;
        for (const n of sizes) {
          parts.push((await st.run(prompt.map((r) => r.slice(at, at + n)))).logits.data as Float32Array);
          at += n;
        }
        const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
        let o = 0;
        for (const p of parts) {
          out.set(p, o);
          o += p.length;
        }
        return out;
      };
      const whole = await run([6]);
      const steps = await run([1, 1, 1, 1, 1, 1]);
      // fp32, chunked prefill vs recurrent steps: agreement to float rounding
      expect(maxAbsDiff(steps, whole) / Math.max(1, maxAbs(whole))).toBeLessThanOrEqual(1e-4);
      if (mu === 1) expect(decoderIO(m).pairs.every((p) => p.kind === 'state' || p.kind === 'window')).toBe(true);
    } finally {
      await session.release();
    }
  });
});

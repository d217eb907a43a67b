/**
 * Decoding on the WebGPU provider keeps the carried state on the device: the converted
 * model's LiZA state / window (and a kept KV cache) come back as GPU buffers and go in as
 * the next call's inputs; only the ids go in and the logits come out through the host.
 * The logits equal the CPU's (1e-4 relative: float32 on two kernel sets, RMS-normalised
 * memory), and greedy generation gives the same tokens.
 */
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { encodeModel } from '../../src/ir/index.js';
import { loadModel } from '../../src/node/index.js';
import { convert } from '../../src/passes/convert/convert.js';
import { DecoderState, carriedOutputs, declaredTypes } from '../../src/runtime/decoder_state.js';
import { createSession } from '../../src/runtime/execution_provider.js';
import { generate } from '../../src/runtime/generate.js';
import { maxAbs, maxAbsDiff } from '../helpers/compare.js';
import { webgpuAvailable } from '../helpers/webgpu.js';

const FIX = path.resolve(__dirname, '../fixtures');
const adapter = await webgpuAvailable(path.join(FIX, 'llama.onnx'));

describe.skipIf(!adapter)('decoding on WebGPU', () => {
  it.each([
    ['llama_past', { mu: 0.5 }],
    ['llama_past', { mu: 1 }],
    ['gpt2_past', { mu: 0.5, window: 4 }],
  ] as const)('%s %o: carried tensors stay in GPU buffers, logits equal the CPU step by step', async (name, options) => {
    const m = loadModel(path.join(FIX, `${name}.onnx`));
    convert(m, { ...options, target: 'ort' });
    const bytes = encodeModel(m);
    const types = declaredTypes(m);
    const open = async (ep: 'cpu' | 'webgpu') => (await createSession(bytes, { ep, keepOnDevice: carriedOutputs(types.io) })).session;
    const [cpu, gpu] = [await open('cpu'), await open('webgpu')];
    try {
      const a = new DecoderState(cpu, types, 1);
      const b = new DecoderState(gpu, types, 1);
      const prompt = [[5, 17, 42, 7, 99, 3]];
      const steps = [prompt, [[11]], [[12]], [[13]], [[14]], [[15]]];
      for (const [i, ids] of steps.entries()) {
        const x = (await a.run(ids)).logits;
        const y = (await b.run(ids)).logits;
        expect(y.location, 'logits come to the host').toBe('cpu');
        const want = x.data as Float32Array;
        expect(maxAbsDiff(y.data as Float32Array, want) / Math.max(1, maxAbs(want)), `call ${i}`).toBeLessThanOrEqual(1e-4);
        // every carried tensor is a GPU buffer after the first call, on the CPU session host memory
        expect(new Set(Object.values(b.locations())), `call ${i}`).toEqual(new Set(['gpu-buffer']));
        expect(new Set(Object.values(a.locations()))).toEqual(new Set(['cpu']));
        expect(b.carriedBytes()).toBe(a.carriedBytes());
      }
    } finally {
      await cpu.release();
      await gpu.release();
    }
  });

  it('greedy generation on webgpu gives the CPU tokens', async () => {
    const m = loadModel(path.join(FIX, 'qwen2_past.onnx'));
    convert(m, { mu: 0.5, target: 'ort' });
    const bytes = encodeModel(m);
    const types = declaredTypes(m);
    const tokens: number[][][] = [];
    for (const ep of ['cpu', 'webgpu'] as const) {
      const { session } = await createSession(bytes, { ep, keepOnDevice: carriedOutputs(types.io) });
      try {
        tokens.push((await generate(session, types, [[3, 14, 15, 92]], { maxNewTokens: 12 }).result).tokens);
      } finally {
        await session.release();
      }
    }
    expect(tokens[1]).toEqual(tokens[0]);
  });
});

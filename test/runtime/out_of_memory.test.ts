/**
 * A model (or a call) too large for the device is the user's to resize: onnxruntime's
 * out-of-memory errors (CPU arena, CUDA, WebGPU buffer limits) become one sentence that
 * says what to do, as a user error, at session creation and at run time.
 */
import * as path from 'node:path';
import type * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { UserInputError } from '../../src/ir/index.js';
import { loadModel } from '../../src/node/index.js';
import { DecoderState, declaredTypes } from '../../src/runtime/decoder_state.js';
import { explainProviderFailure, isOutOfMemory } from '../../src/runtime/execution_provider.js';

const FIX = path.resolve(__dirname, '../fixtures');

describe('out of memory', () => {
  it.each([
    'Failed to allocate memory for requested buffer of size 8589934592',
    '[E:onnxruntime:, bfc_arena.cc] Available memory of 0 is smaller than requested bytes: std::bad_alloc',
    'CUDA failure 2: out of memory ; GPU=0',
    'Buffer size (17179869184) exceeds the max buffer size limit (2147483648).',
  ])('recognises %j and explains it', (msg) => {
    expect(isOutOfMemory(new Error(msg))).toBe(true);
    expect(explainProviderFailure('webgpu', new Error(msg))).toMatch(/^the model does not fit in the webgpu device's memory \(.*\); try a smaller batch or a shorter sequence, or --ep cpu/);
    expect(explainProviderFailure('cuda', new Error(msg))).toMatch(/^the model does not fit in the cuda device's memory/);
  });

  it('other failures are not taken for it', () => {
    expect(isOutOfMemory(new Error('Non-zero status code returned while running MatMul node'))).toBe(false);
    expect(explainProviderFailure('webgpu', new Error('no adapter found'))).toMatch(/^no WebGPU adapter is available/);
  });

  it('a decoding call that runs out of memory is a user error naming the call size', async () => {
    const model = loadModel(path.join(FIX, 'llama.onnx'));
    const session = {
      inputNames: model.graph.inputs.map((v) => v.name),
      outputNames: model.graph.outputs.map((v) => v.name),
      run: async () => {
        throw new Error('Failed to allocate memory for requested buffer of size 1099511627776');
      },
    } as unknown as ort.InferenceSession;
    const st = new DecoderState(session, declaredTypes(model), 2);
    const err = await st.run([[1, 2, 3], [4, 5, 6]]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UserInputError);
    expect((err as Error).message).toMatch(/^a call of 2 rows × 3 tokens does not fit in memory \(Failed to allocate .*\); try a smaller batch or a shorter prompt$/);
  });
});

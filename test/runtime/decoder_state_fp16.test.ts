/**
 * DecoderState on an fp16 KV-cache export: the caches start as float16 zeros, the logits
 * come back as float32, and the carried bytes count float16 elements as 2 bytes.
 */
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { expect, it } from 'vitest';
import { encodeModel } from '../../src/ir/index.js';
import { loadModel } from '../../src/node/index.js';
import { DecoderState, declaredTypes } from '../../src/runtime/decoder_state.js';
import { toFloat16 } from '../helpers/float16.js';

it('fp16 llama_past: float16 caches, float32 logits, 2 bytes per carried element', async () => {
  const model = toFloat16(loadModel(path.resolve(__dirname, '../fixtures/llama_past.onnx')));
  const s = await ort.InferenceSession.create(encodeModel(model));
  try {
    const st = new DecoderState(s, declaredTypes(model), 1);
    const { logits } = await st.run([[1, 2, 3]]);
    expect(logits.type).toBe('float32');
    expect(new Set(Object.values(st.past).map((t) => t.type))).toEqual(new Set(['float16']));
    const elements = Object.values(st.past).reduce((n, t) => n + t.dims.reduce((a, b) => a * b, 1), 0);
    expect(elements).toBeGreaterThan(0);
    expect(st.carriedBytes()).toBe(elements * 2);
  } finally {
    await s.release();
  }
});

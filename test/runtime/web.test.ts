/**
 * A converted model runs in the browser runtime too: onnxruntime-web (WebAssembly, here
 * in Node) gives the same logits as onnxruntime-node for both the portable (standard-op
 * functions) and the ort (com.microsoft.LinearAttention) targets.
 */
import * as path from 'node:path';
import * as ortn from 'onnxruntime-node';
import * as ortw from 'onnxruntime-web';
import { describe, expect, it } from 'vitest';
import { encodeModel } from '../../src/ir/index.js';
import { loadModel } from '../../src/node/index.js';
import { convert } from '../../src/passes/convert/convert.js';
import { maxAbs, maxAbsDiff } from '../helpers/compare.js';

const FIX = path.resolve(__dirname, '../fixtures');

function feeds<T extends { new (type: 'int64', data: BigInt64Array, dims: number[]): unknown }>(Tensor: T): Record<string, InstanceType<T>> {
  const T = 6;
  return {
    input_ids: new Tensor('int64', BigInt64Array.from([1n, 20n, 3n, 44n, 5n, 60n]), [1, T]) as InstanceType<T>,
    attention_mask: new Tensor('int64', new BigInt64Array(T).fill(1n), [1, T]) as InstanceType<T>,
    position_ids: new Tensor('int64', BigInt64Array.from([0n, 1n, 2n, 3n, 4n, 5n]), [1, T]) as InstanceType<T>,
  };
}

describe('onnxruntime-web', () => {
  it.each(['portable', 'ort'] as const)('runs a converted llama (target %s) like onnxruntime-node', async (target) => {
    const m = loadModel(path.join(FIX, 'llama.onnx'));
    convert(m, { target, rule: 'gated_delta_product' });
    const bytes = encodeModel(m);
    const web = await ortw.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
    const a = (await web.run(feeds(ortw.Tensor) as Record<string, ortw.Tensor>)).logits!.data as Float32Array;
    const node = await ortn.InferenceSession.create(bytes);
    const b = (await node.run(feeds(ortn.Tensor) as Record<string, ortn.Tensor>)).logits!.data as Float32Array;
    // same fp32 graph on two builds of onnxruntime (wasm SIMD vs native kernels)
    expect(maxAbsDiff(a, b)).toBeLessThanOrEqual(1e-4 * Math.max(1, maxAbs(b)));
    await web.release();
    await node.release();
  });
});

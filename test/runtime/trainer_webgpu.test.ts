/**
 * Training on onnxruntime's WebGPU provider (where a Vulkan adapter exists, e.g. Mesa's
 * lavapipe; skipped otherwise): the same steps as on the CPU, with the carried parameters
 * and moments kept in GPU buffers between steps. Tolerance 1e-4 relative: the same graph on
 * two kernel sets (float32, different reduction orders), 3 steps.
 */
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadModel } from '../../src/node/index.js';
import { convert } from '../../src/passes/convert/index.js';
import { trainingBatch } from '../../src/runtime/data.js';
import { Trainer } from '../../src/runtime/trainer.js';
import { webgpuAvailable } from '../helpers/webgpu.js';

const FIX = path.resolve(__dirname, '../fixtures');
const adapter = await webgpuAvailable(path.join(FIX, 'llama.onnx'));

describe.skipIf(!adapter)('training on WebGPU', () => {
  it('matches the CPU, with parameters and moments kept in GPU buffers', async () => {
    const m = loadModel(path.join(FIX, 'llama.onnx'));
    convert(m, { mu: 0.5, loraRank: 4 });
    const tokens = Int32Array.from({ length: 2000 }, (_, i) => (i * 37 + (i >> 3)) % 256);
    const run = async (ep: 'cpu' | 'webgpu') => {
      const tr = await Trainer.create(m, { seqLen: 16, steps: 3, ep, train: ['lora', 'mu'] });
      const losses: number[] = [];
      for (let s = 0; s < 3; s++) losses.push((await tr.step(trainingBatch(tokens, 2, 16, 1, s))).loss);
      const where = tr.stateLocations();
      const params = await tr.parameters();
      await tr.release();
      return { losses, where, params };
    };
    const cpu = await run('cpu');
    const gpu = await run('webgpu');
    expect(gpu.where).toEqual(new Set(['gpu-buffer']));
    expect(cpu.where).toEqual(new Set(['cpu']));
    gpu.losses.forEach((l, i) => expect(Math.abs(l - cpu.losses[i]!) / cpu.losses[i]!).toBeLessThan(1e-4));
    for (const [k, v] of cpu.params) {
      const w = gpu.params.get(k)!;
      const scale = Math.max(...Array.from(v, Math.abs), 1e-3);
      expect(Math.max(...Array.from(v, (x, i) => Math.abs(x - w[i]!))) / scale, k).toBeLessThan(1e-3);
    }
  });
});

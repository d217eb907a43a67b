/**
 * Gradients of the training graph against PyTorch autograd on the same converted model
 * (test/fixtures/train_grads.ref.json, written by tools/gen_train_grads.py in float64 from
 * the fixture's weights, the converted model's LoRA A and fixed non-zero B, with LiZA and
 * MaG written out as per-token loops). Our graph runs in float32: per tensor, the relative
 * error ‖g − g_ref‖ / ‖g_ref‖ is ~1e-6 (float32 rounding through 2 layers); the bound 1e-4
 * is the issue's, and a wrong rule (sign, missing term, wrong axis) shows up at 1e-2 or more.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DataType, Tensor } from '../../src/ir/index.js';
import { loadModel } from '../../src/node/index.js';
import type { LizaRule } from '../../src/ops/index.js';
import { convert } from '../../src/passes/convert/index.js';
import { Trainer } from '../../src/runtime/trainer.js';

const FIX = path.resolve(__dirname, '../fixtures');

interface RefCase {
  rule: LizaRule;
  order: number;
  mu: number;
  lora_rank: number;
  lora_alpha: number;
  seed: number;
  loss: number;
  params: Record<string, number[]>;
  grads: Record<string, number[]>;
}
const ref = JSON.parse(fs.readFileSync(path.join(FIX, 'train_grads.ref.json'), 'utf8')) as { batch: { input_ids: number[][]; labels: number[][] }; cases: RefCase[] };

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  let n = 0;
  for (let i = 0; i < b.length; i++) {
    d += (a[i]! - b[i]!) ** 2;
    n += b[i]! ** 2;
  }
  return Math.sqrt(d) / Math.max(Math.sqrt(n), 1e-12);
}

describe('training gradients = PyTorch autograd', () => {
  for (const c of ref.cases) {
    it(`${c.rule} (order ${c.order}): every LoRA tensor and μ`, async () => {
      const m = loadModel(path.join(FIX, 'llama.onnx'));
      convert(m, { rule: c.rule, order: c.order, mu: c.mu, loraRank: c.lora_rank, loraAlpha: c.lora_alpha, seed: c.seed });
      for (const [name, values] of Object.entries(c.params)) {
        const v = m.graph.initializers.get(name)!;
        v.initializer = Tensor.fromArray(Float32Array.from(values), v.initializer!.dims.slice(), DataType.FLOAT, name);
      }
      const tr = await Trainer.create(m, { seqLen: 12, steps: 1, train: ['lora', 'mu'], outputGradients: true });
      const batch = { ids: ref.batch.input_ids, labels: ref.batch.labels, weights: ref.batch.input_ids.map((r) => r.map(() => 1)) };
      const grads = await tr.gradients(batch);
      const step = await tr.step(batch);
      await tr.release();
      expect(Math.abs(step.loss - c.loss) / c.loss).toBeLessThan(1e-6);
      expect(grads.size).toBe(Object.keys(c.grads).length);
      for (const [name, want] of Object.entries(c.grads)) {
        // μ is trained as θ = logit(μ): dL/dθ = dL/dμ · μ(1 − μ)
        const got = name.endsWith('.mu') ? Array.from(grads.get(`${name}.logit`)!, (g) => g / (c.mu * (1 - c.mu))) : Array.from(grads.get(name)!);
        expect(relErr(got, want), name).toBeLessThan(1e-4);
      }
    });
  }
});

/**
 * Attention written the way PyTorch's dynamo exporter writes it (batched matmuls as
 * Expand → Reshape to [B·H, ·, ·] → MatMul → Reshape back, the core in a model-local
 * function called per layer), made from the Llama fixture by a semantics-preserving
 * rewrite (dynamo_style.ts) so the PyTorch reference still applies: discovery finds both
 * layers through the function calls, and convert inlines them and converts.
 */
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { encodeModel, verifyModel } from '../../src/ir/index.js';
import { loadModel } from '../../src/node/index.js';
import { convert } from '../../src/passes/convert/convert.js';
import { discoverAttention } from '../../src/passes/index.js';
import { loadRef } from '../helpers/compare.js';
import { runAndCompare, toOrt } from '../helpers/fixture_run.js';
import { toDynamoStyle } from './dynamo_style.js';

const FIX = path.resolve(__dirname, '../fixtures');
const ref = loadRef(path.join(FIX, 'llama.ref.json'));
const dynamo = () => toDynamoStyle(loadModel(path.join(FIX, 'llama.onnx')));

async function outputs(bytes: Uint8Array): Promise<Record<string, ort.Tensor>> {
  const s = await ort.InferenceSession.create(bytes);
  try {
    return await s.run(Object.fromEntries(ref.inputs.map((t) => [t.name, toOrt(t)])));
  } finally {
    await s.release();
  }
}

describe('dynamo-style attention (bmm views, the core in a model-local function)', () => {
  it('the rewritten model still computes the PyTorch outputs', async () => {
    const m = dynamo();
    verifyModel(m);
    expect(m.graph.nodes().filter((n) => n.opType === 'sdpa')).toHaveLength(2);
    expect(m.graph.nodes().some((n) => n.opType === 'Softmax')).toBe(false);
    const s = await ort.InferenceSession.create(encodeModel(m));
    try {
      await runAndCompare(s, ref.inputs, ref.outputs);
    } finally {
      await s.release();
    }
  });

  it('discovery finds both layers inside the function calls, with the heads of the 3-D [B·H, T, d] core', () => {
    const r = discoverAttention(dynamo());
    expect(r.inlined).toHaveLength(2);
    expect(r.rejected).toEqual([]);
    expect(r.sites.map((s) => [s.form, s.numHeads, s.numKvHeads, s.headDim, s.causal])).toEqual([
      ['F1', 4, 2, 16, true],
      ['F1', 4, 2, 16, true],
    ]);
    expect(r.sites[0]!.rotary?.kind).toBe('rotate_half');
  });

  it('convert inlines the calls (reported) and μ = 0 reproduces the original', async () => {
    const base = await outputs(encodeModel(dynamo()));
    for (const target of ['portable', 'ort'] as const) {
      const m = dynamo();
      const r = convert(m, { mu: 0, target });
      expect(r.inlined).toEqual(['call \'/model/layers.0/self_attn/sdpa\' of pkg.torch.sdpa', 'call \'/model/layers.1/self_attn/sdpa\' of pkg.torch.sdpa']);
      expect(r.sites).toHaveLength(2);
      // the copies of the body name the rule that inlined them
      const copies = m.graph.nodes().filter((n) => n.name.startsWith('/model/layers.0/self_attn/sdpa/'));
      expect(copies.length).toBeGreaterThan(3);
      expect(copies.every((n) => n.metadataProps.some((p) => p.key === 'titanize.rule' && p.value === 'inline-function'))).toBe(true);
      const got = await outputs(encodeModel(m));
      const a = got.logits!.data as Float32Array;
      const b = base.logits!.data as Float32Array;
      let worst = 0;
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
      expect(worst, target).toBeLessThanOrEqual(1e-5 * 4);
    }
  });
});

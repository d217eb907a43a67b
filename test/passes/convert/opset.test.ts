/**
 * Exports at opsets 13–16 (torch.onnx's default was 14 for years) convert for every
 * target without the user upgrading them: convert raises the model to opset 17 (whose ops
 * mean the same for these graphs) and says so in the report. Checked on the Llama fixture
 * declared at opset 13 and 14 (its ops are valid there: decomposed RMSNorm, ReduceMean with
 * axes as an attribute; at 13 without Reshape's allowzero=0, which opset 13 lacks): with μ = 0 the converted model's logits equal the original's
 * within 1e-5 of their scale (float32, same kernels but for the added, zero-weighted
 * branch).
 */
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { decodeModel, encodeModel } from '../../../src/ir/index.js';
import { loadModel } from '../../../src/node/index.js';
import { ORT_ALLOW_UNRELEASED_OPSET_ENV } from '../../../src/ops/index.js';
import { convert } from '../../../src/passes/convert/index.js';

const FIX = path.resolve(__dirname, '../../fixtures');
const saved = process.env[ORT_ALLOW_UNRELEASED_OPSET_ENV];
process.env[ORT_ALLOW_UNRELEASED_OPSET_ENV] = '0'; // onnxruntime 1.30 loads opset 27 only so
afterAll(() => {
  if (saved === undefined) delete process.env[ORT_ALLOW_UNRELEASED_OPSET_ENV];
  else process.env[ORT_ALLOW_UNRELEASED_OPSET_ENV] = saved;
});

async function logits(bytes: Uint8Array): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(bytes, { logSeverityLevel: 4 });
  const ids = [1n, 17n, 42n, 7n, 99n, 3n];
  const T = ids.length;
  const out = await s.run({
    input_ids: new ort.Tensor('int64', BigInt64Array.from(ids), [1, T]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(T).fill(1n), [1, T]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map((_, i) => BigInt(i))), [1, T]),
  });
  await s.release();
  return out.logits!.data as Float32Array;
}

describe('exports at opsets 13–16 convert for every target', () => {
  for (const opset of [13, 14]) {
    for (const target of ['ort', 'portable', 'onnx27'] as const) {
      it(`opset ${opset}, --target ${target}`, async () => {
        const m = loadModel(path.join(FIX, 'llama.onnx'));
        m.opsetImports.set('', opset);
        // Reshape's allowzero (0 = the old meaning) exists from opset 14: an opset-13 export has none
        if (opset < 14) for (const n of m.graph) if (n.opType === 'Reshape') n.attributes.delete('allowzero');
        const original = encodeModel(m);
        const base = await logits(original);
        const c = decodeModel(original);
        const report = convert(c, { mu: 0, target });
        expect(report.opsetUpgrade).toMatchObject({ from: opset, to: target === 'onnx27' ? 27 : 17 });
        expect(c.opsetVersion('')).toBe(target === 'onnx27' ? 27 : 17);
        expect(report.passes[0]).toBe('upgrade-opset');
        const y = await logits(encodeModel(c));
        const scale = Math.max(...Array.from(base, Math.abs));
        expect(Math.max(...Array.from(y, (v, i) => Math.abs(v - base[i]!))) / scale).toBeLessThan(1e-5);
      });
    }
  }
  it('below opset 13 is refused with the reason', () => {
    const m = loadModel(path.join(FIX, 'llama.onnx'));
    m.opsetImports.set('', 12);
    expect(() => convert(m, { mu: 0.5 })).toThrow(/upgrading from opset 12 is not supported \(titanize upgrades from opset 13 or later\)/);
  });
});


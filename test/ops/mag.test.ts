import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { DataType, Model, Tensor, Value, encodeModel, tensorType, verifyModel } from '../../src/ir/index.js';
import { addMagNode, magFunction } from '../../src/ops/index.js';
import { magReference } from '../../src/ops/reference/mag.js';
import { prng, randn } from './helpers.js';

describe('ai.tptt.MaG', () => {
  it('function body = (1 - mu) a + mu y, exact at mu = 0 and mu = 1', async () => {
    const model = new Model({ opsetImports: { '': 17 } });
    const g = model.graph;
    const a = g.addInput(new Value('a', tensorType(DataType.FLOAT, ['B', 'T', 12])));
    const y = g.addInput(new Value('y', tensorType(DataType.FLOAT, ['B', 'T', 12])));
    const mu = g.addInput(new Value('mu', tensorType(DataType.FLOAT, [])));
    const { out } = addMagNode(model, g, a, y, mu);
    const { out: out2 } = addMagNode(model, g, out, y, mu);
    out.type = out2.type = tensorType(DataType.FLOAT, ['B', 'T', 12]);
    g.setOutputs([out, out2]);
    verifyModel(model);
    expect(model.functions.map((f) => f.name)).toEqual(['MaG']); // added once
    const s = await ort.InferenceSession.create(encodeModel(model));
    const rng = prng(3);
    for (const m of [0, 1, 0.5, 0.123]) {
      const A = randn(rng, [2, 5, 12]);
      const Y = randn(rng, [2, 5, 12]);
      const r = await s.run({
        a: new ort.Tensor('float32', A.data as Float32Array, A.dims),
        y: new ort.Tensor('float32', Y.data as Float32Array, Y.dims),
        mu: new ort.Tensor('float32', new Float32Array([m]), []),
      });
      const got = r[out.name]!.data as Float32Array;
      const want = magReference(A, Y, m);
      if (m === 0) expect(Array.from(got)).toEqual(Array.from(A.data));
      else if (m === 1) expect(Array.from(got)).toEqual(Array.from(Y.data));
      else for (let i = 0; i < got.length; i++) expect(Math.abs(got[i]! - want.data[i]!)).toBeLessThan(1e-6);
    }
  });

  it('accepts mu of shape [1] as an initializer', async () => {
    const model = new Model({ opsetImports: { '': 21 } });
    const g = model.graph;
    const a = g.addInput(new Value('a', tensorType(DataType.FLOAT, [3])));
    const y = g.addInput(new Value('y', tensorType(DataType.FLOAT, [3])));
    const mu = g.addInitializer(Tensor.fromArray(new Float32Array([0.25]), [1]), 'mu');
    const { out } = addMagNode(model, g, a, y, mu);
    out.type = tensorType(DataType.FLOAT, [3]);
    g.setOutputs([out]);
    const s = await ort.InferenceSession.create(encodeModel(model));
    const r = await s.run({ a: new ort.Tensor('float32', new Float32Array([4, 8, 0]), [3]), y: new ort.Tensor('float32', new Float32Array([0, 4, 4]), [3]) });
    expect(Array.from(r[out.name]!.data as Float32Array)).toEqual([3, 7, 1]);
    expect(() => magFunction(16)).toThrow(/opset >= 17/);
  });
});

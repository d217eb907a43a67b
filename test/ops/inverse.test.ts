/**
 * The blocked doubling inverse of the unit lower-triangular chunk matrix, emitted as
 * ONNX (MatMul, Gather, Pad, Concat only), against a float64 forward substitution.
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Builder, DataType, Model, Value, encodeModel, tensorType } from '../../src/ir/index.js';
import { Emitter, emitInvertUnitLower } from '../../src/ops/index.js';
import { prng, gauss } from './helpers.js';

/** (I + A)^-1 by forward substitution, float64. */
function inverse64(A: Float64Array, C: number): Float64Array {
  const X = new Float64Array(C * C);
  for (let j = 0; j < C; j++) {
    for (let i = 0; i < C; i++) {
      let s = i === j ? 1 : 0;
      for (let k = 0; k < i; k++) s -= A[i * C + k]! * X[k * C + j]!;
      X[i * C + j] = s;
    }
  }
  return X;
}

describe('emitInvertUnitLower', () => {
  it.each([1, 2, 3, 5, 8, 16, 33, 64])('C = %i: matches float64 forward substitution (batched, 3 leading axes)', async (C) => {
    const model = new Model({ opsetImports: { '': 18 } });
    const g = model.graph;
    const A = g.addInput(new Value('A', tensorType(DataType.FLOAT, [null, null, null, C, C])));
    const X = emitInvertUnitLower(new Emitter(new Builder(g)), A, C, 3);
    X.type = tensorType(DataType.FLOAT);
    g.setOutputs([X]);
    for (const n of model.graph) expect(['Loop', 'Scan', 'If']).not.toContain(n.opType);
    const s = await ort.InferenceSession.create(encodeModel(model));
    const rng = prng(C);
    const batch = [2, 1, 3];
    const count = 6;
    // A like the chunks of a product rule: beta_i k_i.k_j with unit keys, entries in (-1, 1)
    const data = new Float32Array(count * C * C);
    for (let m = 0; m < count; m++) {
      const keys = Array.from({ length: C }, () => {
        const k = Array.from({ length: 4 }, () => gauss(rng) + 0.5);
        const nrm = Math.hypot(...k);
        return k.map((x) => x / nrm);
      });
      for (let i = 0; i < C; i++) {
        const beta = 0.3 + 0.6 * rng();
        for (let j = 0; j < i; j++) data[m * C * C + i * C + j] = beta * keys[i]!.reduce((acc, x, c) => acc + x * keys[j]![c]!, 0);
      }
    }
    const r = await s.run({ A: new ort.Tensor('float32', data, [...batch, C, C]) });
    const got = r[X.name]!.data as Float32Array;
    let worst = 0;
    let scale = 0;
    for (let m = 0; m < count; m++) {
      const want = inverse64(Float64Array.from(data.subarray(m * C * C, (m + 1) * C * C)), C);
      for (let i = 0; i < C * C; i++) {
        worst = Math.max(worst, Math.abs(got[m * C * C + i]! - want[i]!));
        scale = Math.max(scale, Math.abs(want[i]!));
      }
    }
    expect(worst / Math.max(1, scale)).toBeLessThan(2e-6);
  });
});

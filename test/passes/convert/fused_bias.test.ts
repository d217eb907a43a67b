/**
 * MultiHeadAttention adds its packed bias [q | k | v] to the projections inside the op: the
 * memory branch must read q, k and v with it, as the softmax branch sees them. Checked on
 * the values the memory reads (xq, xk, xv) against the projection outputs plus the bias
 * columns, computed here from the initializer (1e-6: one float32 addition).
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { convertModel } from '../../../src/passes/convert/convert.js';
import { maxAbsDiff } from '../../helpers/compare.js';
import { runModel } from '../../helpers/layer_check.js';
import { msModel } from '../graphs.js';

describe('MultiHeadAttention with its bias input', () => {
  it('the memory reads q, k and v with the bias the op adds', async () => {
    const m = msModel('MultiHeadAttention', { bias: true });
    const bias = m.graph.initializers.get('qkv.bias')!.initializer!.toTypedArray() as Float32Array;
    const { sites } = convertModel(m, { mu: 0.5, target: 'portable' });
    const s = sites[0]!;
    const refs = discoverRefs(m);
    const x = new ort.Tensor('float32', Float32Array.from({ length: 2 * 5 * 64 }, (_, i) => Math.sin(0.3 * i)), [2, 5, 64]);
    const mask = new ort.Tensor('int32', Int32Array.from({ length: 10 }, () => 1), [2, 5]);
    const out = await runModel(m, { x, mask_index: mask }, [s.values.xq, s.values.xk, s.values.xv, ...refs]);
    const w = 64;
    ['q', 'k', 'v'].forEach((which, i) => {
      const raw = out[refs[i]!.name]!.data as Float32Array;
      const want = raw.map((v, j) => v + bias[i * w + (j % w)]!);
      const got = out[[s.values.xq, s.values.xk, s.values.xv][i]!.name]!.data as Float32Array;
      expect(maxAbsDiff(got, want), which).toBeLessThanOrEqual(1e-6);
    });
  });
});

/** The q, k, v projection outputs (the MatMuls feeding the op) of the converted model. */
function discoverRefs(m: ReturnType<typeof msModel>) {
  const mha = m.graph.nodes().find((n) => n.opType === 'MultiHeadAttention')!;
  return [mha.input(0)!, mha.input(1)!, mha.input(2)!];
}

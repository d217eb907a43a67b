/**
 * Every gradient rule against central finite differences, in float64 where onnxruntime's
 * CPU provider has the kernel (then agreement is ~1e-8: the tolerance 1e-6 leaves room for
 * the O(h²) = 1e-12 truncation and cancellation at h = 1e-6), else in float32 with h = 1e-2
 * (truncation ~1e-4 relative, cancellation ~1e-5: tolerance 2e-2).
 */
import { describe, expect, it } from 'vitest';
import { type Builder, DataType, Tensor, type Value, attr } from '../../../src/ir/index.js';
import { type GradCase, gradCheck } from '../../helpers/grad_check.js';

const ints = (b: Builder, v: number[]): Value => b.constant(BigInt64Array.from(v.map(BigInt)), [v.length]);
const op = (name: string, attrs: Record<string, unknown> = {}) => (b: Builder, xs: Value[]): Value => b.op(name, xs, attrs as never);

const cases: Record<string, GradCase> = {
  Add_broadcast: { shapes: [[2, 3, 4], [3, 1]], build: op('Add') },
  Sub_broadcast: { shapes: [[1, 4], [3, 1]], build: op('Sub') },
  Mul_scalar: { shapes: [[2, 3], []], build: op('Mul') },
  Div: { shapes: [[2, 3], [2, 3]], build: op('Div'), range: [0.5, 2] },
  Neg: { shapes: [[5]], build: op('Neg') },
  Pow_const: { shapes: [[2, 3]], build: (b, [x]) => b.op('Pow', [x!, b.op('CastLike', [b.scalar(2), x!])]) },
  Pow_both: { shapes: [[2, 3], [3]], build: op('Pow'), range: [0.5, 1.5] },
  Sqrt: { shapes: [[2, 3]], build: op('Sqrt'), range: [0.5, 2] },
  Exp: { shapes: [[2, 3]], build: op('Exp') },
  Log: { shapes: [[2, 3]], build: op('Log'), range: [0.5, 2] },
  Abs: { shapes: [[7]], build: op('Abs') },
  Reciprocal: { shapes: [[4]], build: op('Reciprocal'), range: [0.5, 2] },
  Sigmoid: { shapes: [[2, 3]], build: op('Sigmoid') },
  Tanh: { shapes: [[2, 3]], build: op('Tanh') },
  Relu: { shapes: [[9]], build: op('Relu') },
  Erf: { shapes: [[2, 3]], build: op('Erf'), dtype: 'float32' },
  Sin_Cos: { shapes: [[5]], build: (b, [x]) => b.op('Cos', [b.op('Sin', [x!])]) },
  Min: { shapes: [[2, 3], [3]], build: op('Min') },
  Max: { shapes: [[2, 3], [2, 1]], build: op('Max') },
  Where: { shapes: [[2, 3], [3]], build: (b, [x, y]) => b.op('Where', [b.op('Greater', [x!, b.op('CastLike', [b.scalar(0), x!])]), x!, y!]) },
  Clip: { shapes: [[8]], build: (b, [x]) => b.op('Clip', [x!, b.op('CastLike', [b.scalar(-0.5), x!]), b.op('CastLike', [b.scalar(0.5), x!])]) },
  Cast_roundtrip: {
    shapes: [[4]],
    build: (b, [x]) => b.op('Cast', [b.op('Mul', [b.op('Cast', [x!], { to: attr.int(DataType.DOUBLE) }), b.op('Cast', [x!], { to: attr.int(DataType.DOUBLE) })])], { to: attr.int(DataType.FLOAT) }),
    dtype: 'float32',
  },
  Sum3: { shapes: [[2, 3], [3], [1, 1]], build: op('Sum') },
  MatMul_batched: { shapes: [[2, 3, 4], [4, 5]], build: op('MatMul') },
  MatMul_broadcast_batch: { shapes: [[2, 1, 3, 4], [3, 4, 2]], build: op('MatMul') },
  MatMul_vec: { shapes: [[4], [2, 4, 3]], build: op('MatMul') },
  MatMul_vec_right: { shapes: [[2, 3, 4], [4]], build: op('MatMul') },
  Gemm: { shapes: [[3, 4], [5, 4], [5]], build: (b, xs) => b.op('Gemm', xs, { transB: 1, alpha: attr.float(0.5), beta: attr.float(2) }) },
  Gemm_transA: { shapes: [[4, 3], [4, 5], [3, 5]], build: (b, xs) => b.op('Gemm', xs, { transA: 1 }) },
  Softmax: { shapes: [[2, 3, 5]], build: op('Softmax', { axis: -1 }) },
  Softmax_axis1: { shapes: [[2, 3, 5]], build: op('Softmax', { axis: 1 }) },
  LogSoftmax: { shapes: [[3, 6]], build: op('LogSoftmax', { axis: -1 }) },
  ReduceSum_keep: { shapes: [[2, 3, 4]], build: (b, [x]) => b.op('ReduceSum', [x!, ints(b, [1, -1])], { keepdims: 1 }) },
  ReduceSum_drop_neg: { shapes: [[2, 3, 4]], build: (b, [x]) => b.op('ReduceSum', [x!, ints(b, [-2])], { keepdims: 0 }) },
  ReduceSum_all: { shapes: [[2, 3]], build: (b, [x]) => b.op('ReduceSum', [x!], { keepdims: 0 }) },
  ReduceMean_attr: { shapes: [[2, 3, 4]], build: op('ReduceMean', { axes: [-1], keepdims: 1 }) },
  ReduceMean_18: { shapes: [[2, 3, 4]], build: (b, [x]) => b.op('ReduceMean', [x!, ints(b, [0, 2])], { keepdims: 0 }), opset: 18 },
  ReduceSumSquare: { shapes: [[2, 3]], build: op('ReduceSumSquare', { axes: [1], keepdims: 0 }) },
  Reshape: { shapes: [[2, 6]], build: (b, [x]) => b.op('Reshape', [x!, ints(b, [3, -1])]) },
  Flatten: { shapes: [[2, 3, 2]], build: op('Flatten', { axis: 2 }) },
  Squeeze_Unsqueeze: { shapes: [[2, 1, 3]], build: (b, [x]) => b.op('Unsqueeze', [b.op('Squeeze', [x!, ints(b, [1])]), ints(b, [0, -1])]) },
  Transpose: { shapes: [[2, 3, 4]], build: op('Transpose', { perm: [2, 0, 1] }) },
  Transpose_default: { shapes: [[2, 3, 4]], build: op('Transpose') },
  Expand: { shapes: [[3, 1]], build: (b, [x]) => b.op('Expand', [x!, ints(b, [2, 3, 4])]) },
  Concat: { shapes: [[2, 3], [2, 1], [2, 2]], build: op('Concat', { axis: -1 }) },
  Split_partial_use: {
    shapes: [[2, 6]],
    build: (b, [x]) => {
      const [p, , r] = b.op('Split', [x!, ints(b, [1, 2, 3])], { axis: 1 }, { outputs: 3 });
      return b.op('Concat', [p!, r!], { axis: 1 });
    },
  },
  Slice_static: { shapes: [[3, 5]], build: (b, [x]) => b.op('Slice', [x!, ints(b, [1, -4]), ints(b, [9223372036854775807 as never, -1]), ints(b, [0, 1])]) },
  Slice_dynamic: {
    shapes: [[2, 6]],
    build: (b, [x]) => {
      const start = b.op('Sub', [b.op('Shape', [x!], { start: 1 }), ints(b, [4])]); // 6 - 4 = 2
      return b.op('Slice', [x!, start, ints(b, [-1]), ints(b, [-1])]);
    },
  },
  Slice_step2: { shapes: [[7, 2]], build: (b, [x]) => b.op('Slice', [x!, ints(b, [6]), ints(b, [0]), ints(b, [0]), ints(b, [-2])]) },
  Pad: { shapes: [[2, 3]], build: (b, [x]) => b.op('Pad', [x!, ints(b, [1, 0, 0, 2])], { mode: 'constant' }) },
  Gather_repeated: { shapes: [[4, 3]], build: (b, [x]) => b.op('Gather', [x!, b.constant(BigInt64Array.from([3n, 0n, 3n, -1n]), [2, 2])], { axis: 0 }) },
  Gather_axis1_scalar: { shapes: [[2, 4, 3]], build: (b, [x]) => b.op('Gather', [x!, b.constant(BigInt64Array.from([2n]), [])], { axis: 1 }) },
  GatherElements: { shapes: [[3, 4]], build: (b, [x]) => b.op('GatherElements', [x!, b.constant(BigInt64Array.from([0n, 3n, 3n, 1n, 2n, 2n]), [3, 2])], { axis: 1 }) },
  Tile: { shapes: [[2, 3]], build: (b, [x]) => b.op('Tile', [x!, ints(b, [2, 1])]) },
  CumSum: { shapes: [[2, 5]], build: (b, [x]) => b.op('CumSum', [x!, b.constant(BigInt64Array.from([1n]), [])]) },
  CumSum_exclusive_reverse: { shapes: [[5, 2]], build: (b, [x]) => b.op('CumSum', [x!, b.constant(BigInt64Array.from([0n]), [])], { exclusive: 1, reverse: 1 }) },
  ReverseSequence: {
    shapes: [[2, 4, 3]],
    build: (b, [x]) => b.op('ReverseSequence', [x!, b.constant(BigInt64Array.from([4n, 2n]), [2])], { batch_axis: 0, time_axis: 1 }),
  },
  Trilu: { shapes: [[4, 4]], build: (b, [x]) => b.op('Trilu', [x!, b.constant(BigInt64Array.from([-1n]), [])], { upper: 0 }) },
  LayerNormalization: { shapes: [[2, 3, 5], [5], [5]], build: (b, xs) => b.op('LayerNormalization', xs, { axis: -1, epsilon: attr.float(1e-5) }) },
  LayerNormalization_axis1: { shapes: [[2, 3, 4], [3, 4], [3, 4]], build: (b, xs) => b.op('LayerNormalization', xs, { axis: 1 }) },
  RMSNormalization: { shapes: [[2, 3, 5], [5]], build: (b, xs) => b.op('RMSNormalization', xs, { axis: -1, epsilon: attr.float(1e-5) }), opset: 23 },
  RMSNormalization_axis1: { shapes: [[2, 3, 4], [3, 4]], build: (b, xs) => b.op('RMSNormalization', xs, { axis: 1 }), opset: 23 },
  // rotation by each position's angle: cos/sin caches [B, S, d/2] (no position_ids), 3-D x with num_heads
  // (onnxruntime 1.30 has no float64 RotaryEmbedding kernel: float32, at its tolerance)
  RotaryEmbedding: {
    shapes: [[2, 3, 8]],
    build: (b, [x]) => {
      const angle = (i: number) => 0.3 * (i % 6) + 0.1 * Math.floor(i / 6);
      const cos = b.constant(Float32Array.from({ length: 12 }, (_, i) => Math.cos(angle(i))), [2, 3, 2]);
      const sin = b.constant(Float32Array.from({ length: 12 }, (_, i) => Math.sin(angle(i))), [2, 3, 2]);
      return b.op('RotaryEmbedding', [x!, cos, sin], { num_heads: 2 });
    },
    opset: 23,
    dtype: 'float32',
  },
  RotaryEmbedding_interleaved_partial: {
    shapes: [[2, 2, 3, 4]],
    build: (b, [x]) => {
      const cos = b.constant(Float32Array.from({ length: 6 }, (_, i) => Math.cos(0.4 * i)), [2, 3, 1]);
      const sin = b.constant(Float32Array.from({ length: 6 }, (_, i) => Math.sin(0.4 * i)), [2, 3, 1]);
      return b.op('RotaryEmbedding', [x!, cos, sin], { interleaved: 1, rotary_embedding_dim: 2 });
    },
    opset: 23,
    dtype: 'float32',
  },
  Einsum_batched_matmul: { shapes: [[2, 3, 4], [2, 4, 5]], build: (b, xs) => b.op('Einsum', xs, { equation: 'bij,bjk->bik' }) },
  Einsum_dense: { shapes: [[2, 3, 4], [4, 2, 3]], build: (b, xs) => b.op('Einsum', xs, { equation: 'abc,cde->abde' }) },
  Einsum_scores: { shapes: [[2, 3, 2, 4], [2, 5, 2, 4]], build: (b, xs) => b.op('Einsum', xs, { equation: 'bqhd,bkhd->bhqk' }) },
  Einsum_sum_and_transpose: { shapes: [[3, 4, 2]], build: (b, xs) => b.op('Einsum', xs, { equation: 'ijk->ki' }) },
  Einsum_implicit_three: { shapes: [[3, 4], [4], [3, 2]], build: (b, xs) => b.op('Einsum', xs, { equation: 'ij,j,ik' }) },
  shared_input_fanout: { shapes: [[3, 3]], build: (b, [x]) => b.op('MatMul', [x!, b.op('Transpose', [b.op('Mul', [x!, x!])], { perm: [1, 0] })]) },
};

describe('gradient rules vs central finite differences', () => {
  for (const [name, c] of Object.entries(cases)) {
    it(name, async () => {
      const r = await gradCheck(c);
      expect(r.checked).toBeGreaterThan(0);
      expect(r.worst, `${name}: worst relative error ${r.worst}`).toBeLessThan((c.dtype ?? 'float64') === 'float64' ? 1e-6 : 2e-2);
    });
  }
});

void Tensor;

describe('autodiff errors and pruning', () => {
  it('names the node and op that has no rule on the gradient path', async () => {
    await expect(gradCheck({ shapes: [[3]], build: (b, [x]) => b.op('HardSwish', [x!]), dtype: 'float32' })).rejects.toThrow(/node '.*' \(HardSwish\) is on the gradient path but op 'HardSwish' has no gradient rule/);
    await expect(gradCheck({ shapes: [[2, 3], [2, 3]], build: (b, xs) => b.op('Einsum', xs, { equation: '...i,...i->...' }) })).rejects.toThrow(/Einsum .*uses an ellipsis; the Einsum gradient rule takes explicit letters/);
    await expect(gradCheck({ shapes: [[3, 3]], build: (b, xs) => b.op('Einsum', xs, { equation: 'ii->i' }) })).rejects.toThrow(/repeats a letter in one operand \(a diagonal\)/);
  });
  it('a wrong gradient is caught by the check (the check can fail)', async () => {
    // d/dx of x * x is 2x; through Sign(x) * x the autodiff sees no gradient via Sign (non-differentiable)
    // while the numeric derivative of |x| = sign(x) * x is sign(x): the check must report it
    const r = await gradCheck({ shapes: [[6]], build: (b, [x]) => b.op('Mul', [b.op('Sign', [x!]), x!]) });
    expect(r.worst).toBeLessThan(1e-6); // d(sign(x) x) = sign(x) dx, and Sign's own derivative is 0 a.e.
    const bad = await gradCheck({ shapes: [[6]], build: (b, [x]) => b.op('Mul', [b.op('Floor', [b.op('Mul', [x!, b.op('CastLike', [b.scalar(1e6), x!])])]), x!]) });
    expect(bad.worst).toBeGreaterThan(0.1); // Floor(1e6 x) jumps within h: autodiff's zero is not the secant
  });
  it('integer and shape paths carry no gradient', async () => {
    const r = await gradCheck({
      shapes: [[2, 3]],
      build: (b, [x]) => b.op('Mul', [x!, b.op('CastLike', [b.op('Shape', [x!], { start: 1 }), x!])]),
    });
    expect(r.worst).toBeLessThan(1e-6);
  });
});

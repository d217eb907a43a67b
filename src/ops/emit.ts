/**
 * A thin layer over the IR Builder for writing ONNX graphs by hand: short names for the
 * standard ops used by the ai.tptt bodies and lowerings, and constants that are created
 * once per graph (Constant nodes, so that the same code can write function bodies, which
 * cannot hold initializers).
 *
 * Every helper emits ops valid from opset 17 up to 27 with identical semantics: reduce
 * ops take `axes` as an input (ReduceSum only, never ReduceMean/ReduceMax whose signature
 * changed in 18), Split is avoided (its signature changed in 18) in favour of Slice, Pad
 * receives full-rank `pads`.
 */
import { type AttributeInput, attr } from '../ir/attribute.js';
import type { Builder } from '../ir/builder.js';
import { DataType } from '../ir/dtype.js';
import { Tensor } from '../ir/tensor.js';
import type { Value } from '../ir/value.js';

/** INT64_MAX, the conventional "to the end" of Slice. */
export const END = Number.MAX_SAFE_INTEGER;

export class Emitter {
  readonly b: Builder;
  private readonly consts = new Map<string, Value>();

  constructor(b: Builder) {
    this.b = b;
  }

  op(opType: string, inputs: (Value | null)[], attributes: Record<string, AttributeInput | undefined> = {}): Value {
    return this.b.op(opType, inputs, attributes);
  }

  opN(opType: string, inputs: (Value | null)[], attributes: Record<string, AttributeInput | undefined>, outputs: number): Value[] {
    return this.b.op(opType, inputs, attributes, { outputs });
  }

  // ---- constants (deduplicated) ---------------------------------------------------------

  /** int64 1-D constant. */
  ints(values: readonly number[]): Value {
    const key = `i64:${values.join(',')}`;
    let v = this.consts.get(key);
    if (!v) {
      v = this.b.constant(BigInt64Array.from(values.map((x) => BigInt(x === END ? '9223372036854775807' : x))), [values.length], 'ints');
      this.consts.set(key, v);
    }
    return v;
  }

  /** int64 tensor constant of any shape. */
  intTensor(values: readonly number[], dims: number[], name = 'index'): Value {
    const key = `i64t:${dims.join('x')}:${values.join(',')}`;
    let v = this.consts.get(key);
    if (!v) {
      v = this.b.constant(BigInt64Array.from(values.map(BigInt)), dims, name);
      this.consts.set(key, v);
    }
    return v;
  }

  /** float32 scalar constant (rank 0). */
  f(value: number): Value {
    const key = `f32:${Object.is(value, -0) ? '-0' : String(value)}`;
    let v = this.consts.get(key);
    if (!v) {
      v = this.b.constant(Tensor.scalar(value, DataType.FLOAT), undefined, 'scalar');
      this.consts.set(key, v);
    }
    return v;
  }

  /** float32 tensor constant. */
  floats(values: ArrayLike<number>, dims: number[], name = 'const'): Value {
    const data = Float32Array.from(values as ArrayLike<number>);
    const key = `f32t:${dims.join('x')}:${Array.from(data).join(',')}`;
    let v = this.consts.get(key);
    if (!v) {
      v = this.b.constant(data, dims, name);
      this.consts.set(key, v);
    }
    return v;
  }

  /** Lower-triangular 0/1 float mask [n, n]: 1 where j <= i + k. */
  tril(n: number, k = 0): Value {
    const data = new Float32Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (j <= i + k) data[i * n + j] = 1;
    return this.floats(data, [n, n], k === 0 ? 'tril' : `tril_${k}`);
  }

  /** Identity [n, n]. */
  eye(n: number): Value {
    const data = new Float32Array(n * n);
    for (let i = 0; i < n; i++) data[i * n + i] = 1;
    return this.floats(data, [n, n], 'eye');
  }

  // ---- elementwise ----------------------------------------------------------------------

  add(a: Value, b: Value): Value {
    return this.op('Add', [a, b]);
  }
  sub(a: Value, b: Value): Value {
    return this.op('Sub', [a, b]);
  }
  mul(a: Value, b: Value): Value {
    return this.op('Mul', [a, b]);
  }
  div(a: Value, b: Value): Value {
    return this.op('Div', [a, b]);
  }
  neg(a: Value): Value {
    return this.op('Neg', [a]);
  }
  exp(a: Value): Value {
    return this.op('Exp', [a]);
  }
  sigmoid(a: Value): Value {
    return this.op('Sigmoid', [a]);
  }
  min(a: Value, b: Value): Value {
    return this.op('Min', [a, b]);
  }
  matmul(a: Value, b: Value): Value {
    return this.op('MatMul', [a, b]);
  }
  scale(a: Value, s: number): Value {
    return s === 1 ? a : this.mul(a, this.f(s));
  }

  /** SiLU(x) = x * sigmoid(x). */
  silu(x: Value): Value {
    return this.mul(x, this.sigmoid(x));
  }

  /** log(sigmoid(z)) = min(z, 0) - log(1 + exp(-|z|)), never -inf. */
  logSigmoid(z: Value): Value {
    const t = this.op('Log', [this.add(this.f(1), this.exp(this.neg(this.op('Abs', [z]))))]);
    return this.sub(this.min(z, this.f(0)), t);
  }

  /** x / sqrt(sum(x^2, axis) + eps) */
  l2norm(x: Value, eps: number, axis = -1): Value {
    const ss = this.reduceSum(this.mul(x, x), [axis], true);
    return this.div(x, this.op('Sqrt', [this.add(ss, this.f(eps))]));
  }

  /** x / sqrt(mean(x^2, -1) + eps), where the last axis has `width` elements. */
  rmsnorm(x: Value, width: number, eps: number): Value {
    const ms = this.scale(this.reduceSum(this.mul(x, x), [-1], true), 1 / width);
    return this.div(x, this.op('Sqrt', [this.add(ms, this.f(eps))]));
  }

  // ---- shape ----------------------------------------------------------------------------

  reshape(x: Value, shape: readonly number[]): Value {
    return this.op('Reshape', [x, this.ints(shape)]);
  }
  reshapeTo(x: Value, shape: Value): Value {
    return this.op('Reshape', [x, shape]);
  }
  transpose(x: Value, perm: readonly number[]): Value {
    return this.op('Transpose', [x], { perm: [...perm] });
  }
  unsqueeze(x: Value, axes: readonly number[]): Value {
    return this.op('Unsqueeze', [x, this.ints(axes)]);
  }
  squeeze(x: Value, axes: readonly number[]): Value {
    return this.op('Squeeze', [x, this.ints(axes)]);
  }
  concat(xs: Value[], axis: number): Value {
    return xs.length === 1 ? xs[0]! : this.op('Concat', xs, { axis });
  }
  /** Slice along one axis with static bounds (negative = from the end, END = to the end). */
  slice(x: Value, axis: number, start: number, end: number): Value {
    return this.op('Slice', [x, this.ints([start]), this.ints([end]), this.ints([axis])]);
  }
  /** Slice along one axis with dynamic 1-D int64 bounds. */
  sliceDyn(x: Value, axis: number, start: Value, end: Value): Value {
    return this.op('Slice', [x, start, end, this.ints([axis])]);
  }
  reduceSum(x: Value, axes: readonly number[], keepdims: boolean): Value {
    return this.op('ReduceSum', [x, this.ints(axes)], { keepdims: keepdims ? 1 : 0 });
  }
  /** Dimension `i` of x as a 1-D int64 [1]. */
  dim(x: Value, i: number): Value {
    return this.op('Shape', [x], { start: i, end: i === -1 ? undefined : i + 1 });
  }
  shape(x: Value): Value {
    return this.op('Shape', [x]);
  }
  /** Constant pad with full-rank static pads ([begin_0..begin_r-1, end_0..end_r-1]). */
  pad(x: Value, pads: readonly number[], value = 0): Value {
    return this.op('Pad', value === 0 ? [x, this.ints(pads)] : [x, this.ints(pads), this.f(value)], { mode: 'constant' });
  }
  padDyn(x: Value, pads: Value, value = 0): Value {
    return this.op('Pad', value === 0 ? [x, pads] : [x, pads, this.f(value)], { mode: 'constant' });
  }
  cast(x: Value, to: DataType): Value {
    return this.op('Cast', [x], { to: attr.int(to) });
  }
}

/**
 * Reading constants out of a graph: initializers and Constant nodes. Values are read
 * only for small tensors that are stored in the file (never external data), so an
 * analysis never pulls weights off disk.
 */
import { AttributeType, DataType, Tensor, type Value, typedArrayOf } from '../../ir/index.js';

/** Tensors with more elements than this are not read by analyses. */
export const MAX_CONSTANT_ELEMENTS = 1 << 20;

/**
 * The constant tensor a value holds: an initializer, or the output of a Constant node
 * (value, value_float(s), value_int(s)). Undefined for anything else.
 */
export function constantTensor(v: Value | null | undefined): Tensor | undefined {
  if (!v) return undefined;
  if (v.initializer) return v.initializer;
  const p = v.producer;
  if (!p || p.opType !== 'Constant' || !p.isOnnxDomain()) return undefined;
  for (const a of p.attributes.values()) {
    switch (a.name) {
      case 'value':
        return a.type === AttributeType.TENSOR ? a.value : undefined;
      case 'value_float':
        return a.type === AttributeType.FLOAT ? Tensor.scalar(a.value, DataType.FLOAT) : undefined;
      case 'value_int':
        return a.type === AttributeType.INT ? Tensor.fromArray(typedArrayOf(DataType.INT64, [Number(a.value)]), [], DataType.INT64) : undefined;
      case 'value_floats':
        return a.type === AttributeType.FLOATS ? Tensor.fromArray(Float32Array.from(a.value), [a.value.length]) : undefined;
      case 'value_ints':
        return a.type === AttributeType.INTS
          ? Tensor.fromArray(typedArrayOf(DataType.INT64, a.value.map(Number)), [a.value.length], DataType.INT64)
          : undefined;
      default:
    }
  }
  return undefined;
}

/** True when the value is a constant (whether or not its values are small enough to read). */
export function isConstant(v: Value | null | undefined): boolean {
  return constantTensor(v) !== undefined;
}

/** The numbers of a small, in-file constant (booleans as 0/1), or undefined. */
export function constantValues(v: Value | null | undefined, maxElements = MAX_CONSTANT_ELEMENTS): number[] | undefined {
  const t = constantTensor(v);
  return t ? tensorNumbers(t, maxElements) : undefined;
}

/** The numbers of a tensor when it is in the file, numeric, and not larger than `maxElements`. */
export function tensorNumbers(t: Tensor, maxElements = MAX_CONSTANT_ELEMENTS): number[] | undefined {
  if (t.isExternal || t.size > maxElements) return undefined;
  if (t.dataType === DataType.STRING || t.dataType === DataType.UNDEFINED) return undefined;
  if (t.dataType === DataType.FLOAT16 || t.dataType === DataType.BFLOAT16) {
    const raw = t.toTypedArray() as Uint16Array;
    return Array.from(raw, t.dataType === DataType.FLOAT16 ? halfToFloat : bf16ToFloat);
  }
  try {
    return t.toNumbers();
  } catch {
    return undefined;
  }
}

/** The single number of a one-element constant, or undefined. */
export function scalarValue(v: Value | null | undefined): number | undefined {
  const vals = constantValues(v, 1);
  return vals && vals.length === 1 ? vals[0] : undefined;
}

/** The value of an IEEE half-precision bit pattern. */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? Number.NaN : s * Number.POSITIVE_INFINITY;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

function bf16ToFloat(b: number): number {
  const buf = new DataView(new ArrayBuffer(4));
  buf.setUint32(0, b << 16);
  return buf.getFloat32(0);
}

/**
 * The value of a scalar computed from constants only (Sqrt, Reciprocal, Neg, Cast, Add,
 * Sub, Mul, Div, Pow of one-element constants), as exporters leave `Sqrt(scale)` unfolded.
 * `known` supplies values an analysis knows (shape inference: `head_dim ** -0.5` computed
 * from a Shape).
 */
export function evalScalar(v: Value | null | undefined, known?: (v: Value) => number | undefined, depth = 0): number | undefined {
  if (!v || depth > 12) return undefined;
  const c = scalarValue(v) ?? known?.(v);
  if (c !== undefined) return c;
  const p = v.producer;
  if (!p || !p.isOnnxDomain()) return undefined;
  const a = (): number | undefined => evalScalar(p.inputs[0], known, depth + 1);
  const b = (): number | undefined => evalScalar(p.inputs[1], known, depth + 1);
  const two = (f: (x: number, y: number) => number): number | undefined => {
    const x = a();
    const y = x === undefined ? undefined : b();
    return x === undefined || y === undefined ? undefined : f(x, y);
  };
  switch (p.opType) {
    case 'Cast':
    case 'Identity':
    case 'Squeeze':
    case 'Unsqueeze':
    case 'Reshape':
      return a();
    case 'Sqrt': {
      const x = a();
      return x === undefined ? undefined : Math.sqrt(x);
    }
    case 'Reciprocal': {
      const x = a();
      return x === undefined ? undefined : 1 / x;
    }
    case 'Neg': {
      const x = a();
      return x === undefined ? undefined : -x;
    }
    case 'Add':
      return two((x, y) => x + y);
    case 'Sub':
      return two((x, y) => x - y);
    case 'Mul':
      return two((x, y) => x * y);
    case 'Div':
      return two((x, y) => x / y);
    case 'Pow':
      return two((x, y) => x ** y);
    default:
      return undefined;
  }
}

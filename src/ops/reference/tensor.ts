/**
 * A deliberately tiny dense n-d array used by the plain-TypeScript reference
 * implementations of the ai.tptt operators. Row-major (C order), no views.
 */

export type FloatArray = Float32Array | Float64Array;

export interface NdArray {
  data: FloatArray;
  dims: number[];
}

export type FloatType = 'float32' | 'float64';

/** Number of elements of a tensor with the given dims. */
export function sizeOf(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

/** Row-major strides (in elements). */
export function stridesOf(dims: readonly number[]): number[] {
  const s = new Array<number>(dims.length);
  let acc = 1;
  for (let i = dims.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= dims[i];
  }
  return s;
}

/** Flat offset of a multi-index (bounds-checked). */
export function offsetOf(dims: readonly number[], index: readonly number[]): number {
  if (index.length !== dims.length) {
    throw new Error(`index rank ${index.length} does not match tensor rank ${dims.length}`);
  }
  let off = 0;
  for (let i = 0; i < dims.length; i++) {
    const k = index[i];
    if (!Number.isInteger(k) || k < 0 || k >= dims[i]) {
      throw new Error(`index ${JSON.stringify(index)} out of range for dims ${JSON.stringify(dims)}`);
    }
    off = off * dims[i] + k;
  }
  return off;
}

export function allocate(n: number, type: FloatType): FloatArray {
  return type === 'float32' ? new Float32Array(n) : new Float64Array(n);
}

export function zeros(dims: readonly number[], type: FloatType = 'float64'): NdArray {
  return { data: allocate(sizeOf(dims), type), dims: [...dims] };
}

/** Wrap data with dims, checking the element count. */
export function ndarray(data: FloatArray | readonly number[], dims: readonly number[], type: FloatType = 'float64'): NdArray {
  const n = sizeOf(dims);
  if (data.length !== n) {
    throw new Error(`data has ${data.length} elements, dims ${JSON.stringify(dims)} need ${n}`);
  }
  const arr: FloatArray =
    data instanceof Float32Array || data instanceof Float64Array ? data : allocate(n, type);
  if (arr !== data) arr.set(data as readonly number[]);
  return { data: arr, dims: [...dims] };
}

export function get(a: NdArray, ...index: number[]): number {
  return a.data[offsetOf(a.dims, index)];
}

export function set(a: NdArray, value: number, ...index: number[]): void {
  a.data[offsetOf(a.dims, index)] = value;
}

/** Copy into a fresh array of the requested float type. */
export function cast(a: NdArray, type: FloatType): NdArray {
  const out = allocate(a.data.length, type);
  out.set(a.data);
  return { data: out, dims: [...a.dims] };
}

/** Reverse axis 1 (time) of a tensor with dims [B, T, ...]. */
export function reverseTime(a: NdArray): NdArray {
  if (a.dims.length < 2) throw new Error('reverseTime needs rank >= 2');
  const B = a.dims[0];
  const T = a.dims[1];
  const inner = sizeOf(a.dims.slice(2));
  const out: FloatArray = a.data instanceof Float32Array ? new Float32Array(a.data.length) : new Float64Array(a.data.length);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const src = (b * T + t) * inner;
      const dst = (b * T + (T - 1 - t)) * inner;
      out.set(a.data.subarray(src, src + inner), dst);
    }
  }
  return { data: out, dims: [...a.dims] };
}

export function assertDims(name: string, a: NdArray, dims: readonly number[]): void {
  const ok = a.dims.length === dims.length && a.dims.every((d, i) => d === dims[i]);
  if (!ok) throw new Error(`${name}: expected dims ${JSON.stringify(dims)}, got ${JSON.stringify(a.dims)}`);
  if (a.data.length !== sizeOf(a.dims)) {
    throw new Error(`${name}: data length ${a.data.length} does not match dims ${JSON.stringify(a.dims)}`);
  }
}

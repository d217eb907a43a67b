/**
 * Helpers for comparing ONNX Runtime results against reference tensors saved
 * by tools/gen_fixtures.py (`test/fixtures/<name>.ref.json`).
 */
import { readFileSync } from 'node:fs';

export type RefDType = 'float32' | 'int64' | 'bool';

interface RefTensorBase {
  name: string;
  dims: number[];
}
export interface RefFloat32Tensor extends RefTensorBase {
  dtype: 'float32';
  data: Float32Array;
}
export interface RefInt64Tensor extends RefTensorBase {
  dtype: 'int64';
  data: BigInt64Array;
}
export interface RefBoolTensor extends RefTensorBase {
  dtype: 'bool';
  data: Uint8Array;
}
export type RefTensor = RefFloat32Tensor | RefInt64Tensor | RefBoolTensor;

/** Model hyper-parameters recorded by the generator (extra keys vary by model). */
export interface RefConfig {
  model_type: string;
  num_layers: number;
  num_heads: number;
  num_kv_heads: number;
  head_dim: number;
  hidden: number;
  vocab: number;
  causal: boolean;
  has_past: boolean;
  past_length: number;
  batch: number;
  seq_length: number;
  [key: string]: unknown;
}

export interface RefData {
  inputs: RefTensor[];
  outputs: RefTensor[];
  config: RefConfig;
}

interface RawTensor {
  name: string;
  dtype: string;
  dims: number[];
  data: Array<number | boolean>;
}

function convertTensor(raw: RawTensor, path: string): RefTensor {
  const n = raw.dims.reduce((a, b) => a * b, 1);
  if (raw.data.length !== n) {
    throw new Error(`${path}: tensor ${raw.name} has ${raw.data.length} values, dims ${JSON.stringify(raw.dims)} need ${n}`);
  }
  switch (raw.dtype) {
    case 'float32':
      // JSON holds the exact float32 values as doubles, so this conversion is lossless.
      return { name: raw.name, dtype: 'float32', dims: raw.dims, data: Float32Array.from(raw.data, Number) };
    case 'int64':
      return { name: raw.name, dtype: 'int64', dims: raw.dims, data: BigInt64Array.from(raw.data, (v) => BigInt(v)) };
    case 'bool':
      return { name: raw.name, dtype: 'bool', dims: raw.dims, data: Uint8Array.from(raw.data, (v) => (v ? 1 : 0)) };
    default:
      throw new Error(`${path}: tensor ${raw.name} has unsupported dtype ${raw.dtype}`);
  }
}

/** Loads a `<name>.ref.json` file, converting tensor data to typed arrays. */
export function loadRef(path: string): RefData {
  const raw = JSON.parse(readFileSync(path, 'utf8')) as {
    inputs: RawTensor[];
    outputs: RawTensor[];
    config: RefConfig;
  };
  return {
    inputs: raw.inputs.map((t) => convertTensor(t, path)),
    outputs: raw.outputs.map((t) => convertTensor(t, path)),
    config: raw.config,
  };
}

type Numeric = ArrayLike<number> | ArrayLike<bigint>;

function toNumber(v: number | bigint): number {
  return typeof v === 'bigint' ? Number(v) : v;
}

/**
 * Largest |a[i] - b[i]|. Throws on length mismatch. Returns Infinity if exactly
 * one side is NaN at some position (NaN in both at the same index counts as equal)
 * or if the infinities differ.
 */
export function maxAbsDiff(a: Numeric, b: Numeric): number {
  if (a.length !== b.length) {
    throw new Error(`maxAbsDiff: length mismatch ${a.length} vs ${b.length}`);
  }
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const x = toNumber(a[i]!);
    const y = toNumber(b[i]!);
    if (x === y) continue; // also covers equal infinities
    if (Number.isNaN(x) && Number.isNaN(y)) continue;
    const d = Math.abs(x - y);
    if (Number.isNaN(d)) return Infinity;
    if (d > max) max = d;
  }
  return max;
}

/** Largest |a[i]| over finite values (used to scale tolerances). */
export function maxAbs(a: Numeric): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const v = Math.abs(toNumber(a[i]!));
    if (Number.isFinite(v) && v > max) max = v;
  }
  return max;
}

/**
 * The ONNX element types a generated decoder class builds tensors of, as onnxruntime's
 * `Tensor` names them and the typed array that holds their data (the same for
 * onnxruntime-node and onnxruntime-web).
 */
import { DataType, dataTypeName } from '../ir/index.js';

export interface TensorKind {
  /** onnxruntime's type name: `new Tensor(ort, data, dims)`. */
  ort: string;
  /** The typed array holding the data. */
  array: string;
  /** For the integer kinds that hold token ids, masks and positions: how a number becomes one element (`x` → the expression). */
  fromNumber?: (x: string) => string;
}

const KINDS: Partial<Record<DataType, TensorKind>> = {
  [DataType.FLOAT]: { ort: 'float32', array: 'Float32Array' },
  [DataType.FLOAT16]: { ort: 'float16', array: 'Uint16Array' },
  [DataType.DOUBLE]: { ort: 'float64', array: 'Float64Array' },
  [DataType.INT64]: { ort: 'int64', array: 'BigInt64Array', fromNumber: (x) => `BigInt(${x})` },
  [DataType.INT32]: { ort: 'int32', array: 'Int32Array', fromNumber: (x) => x },
  [DataType.INT8]: { ort: 'int8', array: 'Int8Array' },
  [DataType.UINT8]: { ort: 'uint8', array: 'Uint8Array' },
  [DataType.BOOL]: { ort: 'bool', array: 'Uint8Array' },
};

/** The tensor kind of `type`, or undefined when a generated class cannot build it. */
export function tensorKind(type: DataType | undefined): TensorKind | undefined {
  return type === undefined ? undefined : KINDS[type];
}

/** The lower-case name used in doc comments: float32, int64, float16, ... */
export function typeName(type: DataType | undefined): string {
  if (type === undefined) return '?';
  return KINDS[type]?.ort ?? dataTypeName(type).toLowerCase();
}

/** Element types whose logits the generated argmax reads. */
export function readsLogits(type: DataType | undefined): boolean {
  return type === DataType.FLOAT || type === DataType.FLOAT16 || type === DataType.DOUBLE;
}

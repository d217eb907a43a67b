/**
 * Tensors: the constant data of initializers and TENSOR attributes.
 *
 * A tensor keeps the storage form it was read with, so that an untouched model encodes
 * back to the same bytes: raw bytes (a zero-copy view into the file buffer), one of the
 * typed repeated fields of TensorProto, or an external-data reference that is read only
 * when someone asks for the values.
 */
import { DataType, byteSize, dataTypeName, elementCount } from './dtype.js';
import type { ExternalDataRef } from './external_data.js';
import { readExternal } from './external_data.js';
import type { StringStringEntry } from './metadata.js';

/** How the values of a tensor are stored. */
export type TensorStorage =
  | { kind: 'raw'; bytes: Uint8Array }
  | { kind: 'float'; values: ArrayLike<number> }
  | { kind: 'int32'; values: ArrayLike<number> }
  | { kind: 'double'; values: ArrayLike<number> }
  | { kind: 'int64'; values: readonly bigint[] }
  | { kind: 'uint64'; values: readonly bigint[] }
  | { kind: 'string'; values: Uint8Array[] }
  | { kind: 'external'; ref: ExternalDataRef }
  | { kind: 'empty' };

export interface TensorSegment {
  begin: number;
  end: number;
}

export type TypedArray =
  | Float32Array
  | Float64Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array;

export class Tensor {
  name: string;
  dataType: DataType;
  dims: number[];
  storage: TensorStorage;
  docString = '';
  metadataProps: StringStringEntry[] = [];
  segment: TensorSegment | undefined;

  constructor(init: { name?: string; dataType: DataType; dims: number[]; storage: TensorStorage }) {
    this.name = init.name ?? '';
    this.dataType = init.dataType;
    this.dims = init.dims;
    this.storage = init.storage;
  }

  /** Builds a raw tensor from a typed array (copies nothing). */
  static fromArray(data: TypedArray, dims: number[], dataType?: DataType, name = ''): Tensor {
    const dt = dataType ?? inferDataType(data);
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (elementCount(dims) !== data.length && dt !== DataType.BOOL) {
      throw new RangeError(`tensor '${name}': ${data.length} values do not fill dims [${dims.join(', ')}]`);
    }
    return new Tensor({ name, dataType: dt, dims, storage: { kind: 'raw', bytes: copyIfUnaligned(bytes) } });
  }

  static scalar(value: number, dataType: DataType = DataType.FLOAT, name = ''): Tensor {
    return Tensor.fromArray(typedArrayOf(dataType, [value]), [], dataType, name);
  }

  get size(): number {
    return elementCount(this.dims);
  }

  get isExternal(): boolean {
    return this.storage.kind === 'external';
  }

  /** Size in bytes of the values, known without reading external data. */
  get byteLength(): number {
    const s = this.storage;
    switch (s.kind) {
      case 'raw':
        return s.bytes.byteLength;
      case 'external':
        return s.ref.length ?? byteSize(this.dataType, this.size);
      case 'string':
        return s.values.reduce((n, v) => n + v.byteLength, 0);
      case 'empty':
        return 0;
      default:
        return this.dataType === DataType.STRING ? 0 : byteSize(this.dataType, this.size);
    }
  }

  /**
   * The values as little-endian raw bytes, the raw_data layout. External data is read
   * from disk here (and only here); nothing is cached so that memory stays bounded.
   */
  rawBytes(): Uint8Array {
    const s = this.storage;
    switch (s.kind) {
      case 'raw':
        return s.bytes;
      case 'external':
        return readExternal(s.ref, this.name);
      case 'empty':
        return new Uint8Array(0);
      case 'string':
        throw new RangeError(`tensor '${this.name}' holds strings; it has no raw byte form`);
      default:
        return typedFieldToRaw(this.dataType, s, this.size);
    }
  }

  /** Values as the natural typed array of the data type (float16/bfloat16 as Uint16Array). */
  toTypedArray(): TypedArray {
    const bytes = this.rawBytes();
    const aligned = copyIfUnaligned(bytes);
    const Ctor = typedArrayCtor(this.dataType);
    return new Ctor(aligned.buffer, aligned.byteOffset, aligned.byteLength / Ctor.BYTES_PER_ELEMENT);
  }

  /** Values converted to numbers (int64 beyond 2^53 loses precision: use toTypedArray for those). */
  toNumbers(): number[] {
    const arr = this.toTypedArray();
    const out: number[] = new Array(arr.length);
    for (let i = 0; i < arr.length; i++) {
      const v = arr[i]!;
      out[i] = Number(v);
    }
    return out;
  }

  toString(): string {
    return `Tensor(${this.name || '<anonymous>'}: ${dataTypeName(this.dataType)}[${this.dims.join(',')}]${this.isExternal ? ', external' : ''})`;
  }
}

type TypedCtor = { new (buffer: ArrayBufferLike, byteOffset: number, length: number): TypedArray; BYTES_PER_ELEMENT: number };

export function typedArrayCtor(t: DataType): TypedCtor {
  switch (t) {
    case DataType.FLOAT:
      return Float32Array;
    case DataType.DOUBLE:
      return Float64Array;
    case DataType.INT8:
      return Int8Array;
    case DataType.UINT8:
    case DataType.BOOL:
    case DataType.FLOAT8E4M3FN:
    case DataType.FLOAT8E4M3FNUZ:
    case DataType.FLOAT8E5M2:
    case DataType.FLOAT8E5M2FNUZ:
    case DataType.FLOAT8E8M0:
    case DataType.UINT4:
    case DataType.INT4:
    case DataType.FLOAT4E2M1:
    case DataType.UINT2:
    case DataType.INT2:
      return Uint8Array;
    case DataType.INT16:
      return Int16Array;
    case DataType.UINT16:
    case DataType.FLOAT16:
    case DataType.BFLOAT16:
      return Uint16Array;
    case DataType.INT32:
      return Int32Array;
    case DataType.UINT32:
      return Uint32Array;
    case DataType.INT64:
      return BigInt64Array;
    case DataType.UINT64:
      return BigUint64Array;
    case DataType.COMPLEX64:
      return Float32Array;
    case DataType.COMPLEX128:
      return Float64Array;
    default:
      throw new RangeError(`no typed array for data type ${dataTypeName(t)}`);
  }
}

export function inferDataType(a: TypedArray): DataType {
  if (a instanceof Float32Array) return DataType.FLOAT;
  if (a instanceof Float64Array) return DataType.DOUBLE;
  if (a instanceof Int8Array) return DataType.INT8;
  if (a instanceof Uint8Array) return DataType.UINT8;
  if (a instanceof Int16Array) return DataType.INT16;
  if (a instanceof Uint16Array) return DataType.UINT16;
  if (a instanceof Int32Array) return DataType.INT32;
  if (a instanceof Uint32Array) return DataType.UINT32;
  if (a instanceof BigInt64Array) return DataType.INT64;
  return DataType.UINT64;
}

export function typedArrayOf(t: DataType, values: ArrayLike<number>): TypedArray {
  if (t === DataType.INT64) return BigInt64Array.from(Array.from(values, (v) => BigInt(v)));
  if (t === DataType.UINT64) return BigUint64Array.from(Array.from(values, (v) => BigInt(v)));
  const Ctor = typedArrayCtor(t) as unknown as { from(v: ArrayLike<number>): TypedArray };
  return Ctor.from(values);
}

function copyIfUnaligned(bytes: Uint8Array): Uint8Array {
  return bytes.byteOffset % 8 === 0 ? bytes : new Uint8Array(bytes);
}

/** Converts the typed repeated fields of TensorProto to the raw_data layout. */
function typedFieldToRaw(t: DataType, s: TensorStorage, count: number): Uint8Array {
  const out = new Uint8Array(byteSize(t, count));
  const view = new DataView(out.buffer);
  if (s.kind === 'float') {
    for (let i = 0; i < s.values.length; i++) view.setFloat32(i * 4, s.values[i]!, true);
  } else if (s.kind === 'double') {
    for (let i = 0; i < s.values.length; i++) view.setFloat64(i * 8, s.values[i]!, true);
  } else if (s.kind === 'int64') {
    for (let i = 0; i < s.values.length; i++) view.setBigInt64(i * 8, s.values[i]!, true);
  } else if (s.kind === 'uint64') {
    const elem = t === DataType.COMPLEX128 ? 8 : byteSize(t, 1);
    for (let i = 0; i < s.values.length; i++) {
      if (elem === 8) view.setBigUint64(i * 8, s.values[i]!, true);
      else view.setUint32(i * 4, Number(s.values[i]!), true);
    }
  } else if (s.kind === 'int32') {
    // int32_data carries every type of 32 bits or fewer, one element per entry
    // (4-bit and 2-bit types pack two / four elements per entry).
    const v = s.values;
    switch (t) {
      case DataType.INT32:
        for (let i = 0; i < v.length; i++) view.setInt32(i * 4, v[i]!, true);
        break;
      case DataType.INT16:
        for (let i = 0; i < v.length; i++) view.setInt16(i * 2, v[i]!, true);
        break;
      case DataType.UINT16:
      case DataType.FLOAT16:
      case DataType.BFLOAT16:
        for (let i = 0; i < v.length; i++) view.setUint16(i * 2, v[i]!, true);
        break;
      default:
        for (let i = 0; i < Math.min(v.length, out.length); i++) out[i] = v[i]! & 0xff;
    }
  }
  return out;
}

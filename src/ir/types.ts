/** Value types (TypeProto) as plain IR data. */
import { DataType, dataTypeName } from './dtype.js';

/** One dimension: a fixed size, a symbolic name, or unknown (both absent). */
export interface Dim {
  value?: number;
  param?: string;
  denotation?: string;
}

/** `shape` undefined means the rank is unknown (no shape field in the file). */
export type TypeInfo = (
  | { kind: 'tensor'; elemType: DataType; shape?: Dim[] }
  | { kind: 'sparse_tensor'; elemType: DataType; shape?: Dim[] }
  | { kind: 'sequence'; elem?: TypeInfo }
  | { kind: 'map'; keyType: DataType; value?: TypeInfo }
  | { kind: 'optional'; elem?: TypeInfo }
  | { kind: 'opaque'; domain: string; name: string }
  | { kind: 'unset' }
) & { denotation?: string };

/** Builds a tensor type; numbers are fixed sizes, strings symbolic names, null unknown. */
export function tensorType(elemType: DataType, shape?: ReadonlyArray<number | string | null>): TypeInfo {
  return {
    kind: 'tensor',
    elemType,
    shape: shape?.map((d) => (d === null ? {} : typeof d === 'number' ? { value: d } : { param: d })),
  };
}

export function dimToString(d: Dim): string {
  if (d.value !== undefined) return String(d.value);
  if (d.param !== undefined) return d.param;
  return '?';
}

export function typeToString(t: TypeInfo | undefined): string {
  if (!t) return '?';
  switch (t.kind) {
    case 'tensor':
    case 'sparse_tensor': {
      const shape = t.shape ? `[${t.shape.map(dimToString).join(', ')}]` : '[...]';
      return `${t.kind === 'sparse_tensor' ? 'sparse ' : ''}${dataTypeName(t.elemType).toLowerCase()}${shape}`;
    }
    case 'sequence':
      return `seq(${typeToString(t.elem)})`;
    case 'map':
      return `map(${dataTypeName(t.keyType).toLowerCase()}, ${typeToString(t.value)})`;
    case 'optional':
      return `optional(${typeToString(t.elem)})`;
    case 'opaque':
      return `opaque(${t.domain}.${t.name})`;
    default:
      return '?';
  }
}

/** Static dims of a tensor type, or undefined when unknown rank; symbolic dims become null. */
export function staticShape(t: TypeInfo | undefined): (number | null)[] | undefined {
  if (!t || (t.kind !== 'tensor' && t.kind !== 'sparse_tensor') || !t.shape) return undefined;
  return t.shape.map((d) => (d.value !== undefined ? d.value : null));
}

export function elemTypeOf(t: TypeInfo | undefined): DataType | undefined {
  return t && (t.kind === 'tensor' || t.kind === 'sparse_tensor') ? t.elemType : undefined;
}

/** Node attributes (AttributeProto) with subgraphs decoded to IR graphs. */
import type { Graph } from './graph.js';
import { Tensor } from './tensor.js';
import type { TypeInfo } from './types.js';

export enum AttributeType {
  UNDEFINED = 0,
  FLOAT = 1,
  INT = 2,
  STRING = 3,
  TENSOR = 4,
  GRAPH = 5,
  SPARSE_TENSOR = 11,
  TYPE_PROTO = 13,
  FLOATS = 6,
  INTS = 7,
  STRINGS = 8,
  TENSORS = 9,
  GRAPHS = 10,
  SPARSE_TENSORS = 12,
  TYPE_PROTOS = 14,
}

/** int64 values: numbers when they are safe integers, bigint otherwise (e.g. INT64_MAX). */
export type Int64 = number | bigint;

/**
 * Sparse tensors are kept in their decoded wire form: titanize never interprets them,
 * it only carries them through. Only serde looks inside.
 */
export type OpaqueProto = { readonly __opaque: unique symbol } | object;

export type AttributeValue =
  | { type: AttributeType.FLOAT; value: number }
  | { type: AttributeType.INT; value: Int64 }
  | { type: AttributeType.STRING; value: Uint8Array }
  | { type: AttributeType.TENSOR; value: Tensor }
  | { type: AttributeType.GRAPH; value: Graph }
  | { type: AttributeType.SPARSE_TENSOR; value: OpaqueProto }
  | { type: AttributeType.TYPE_PROTO; value: TypeInfo }
  | { type: AttributeType.FLOATS; value: number[] }
  | { type: AttributeType.INTS; value: Int64[] }
  | { type: AttributeType.STRINGS; value: Uint8Array[] }
  | { type: AttributeType.TENSORS; value: Tensor[] }
  | { type: AttributeType.GRAPHS; value: Graph[] }
  | { type: AttributeType.SPARSE_TENSORS; value: OpaqueProto[] }
  | { type: AttributeType.TYPE_PROTOS; value: TypeInfo[] }
  | { type: AttributeType.UNDEFINED; value: undefined };

export type Attribute = AttributeValue & {
  name: string;
  docString?: string;
  /** Set inside function bodies: the attribute takes the value of the caller's attribute. */
  refAttrName?: string;
  /** The file left `type` unset (very old exporters); kept so the encode is lossless. */
  typeUnset?: boolean;
};

const utf8 = new TextEncoder();
const utf8d = new TextDecoder();

export function bytesToString(b: Uint8Array): string {
  return utf8d.decode(b);
}

export function stringToBytes(s: string): Uint8Array {
  return utf8.encode(s);
}

/** What a builder accepts as an attribute value; see `toAttribute` for the mapping. */
export type AttributeInput =
  | number
  | bigint
  | string
  | Tensor
  | Graph
  | number[]
  | bigint[]
  | string[]
  | Tensor[]
  | Graph[]
  | AttributeValue;

/** Marks a number as FLOAT even when it is integral (e.g. `alpha: attr.float(1)`). */
export const attr = {
  float: (v: number): AttributeValue => ({ type: AttributeType.FLOAT, value: v }),
  floats: (v: number[]): AttributeValue => ({ type: AttributeType.FLOATS, value: v }),
  int: (v: Int64): AttributeValue => ({ type: AttributeType.INT, value: v }),
  ints: (v: Int64[]): AttributeValue => ({ type: AttributeType.INTS, value: v }),
  string: (v: string): AttributeValue => ({ type: AttributeType.STRING, value: stringToBytes(v) }),
  /**
   * Inside a function body: the attribute takes the value of the caller's attribute
   * `refName` (AttributeProto.ref_attr_name); `type` is the attribute's type.
   */
  ref: (type: AttributeType, refName: string): AttributeValue & { refAttrName: string } =>
    ({ type, value: placeholder(type), refAttrName: refName }) as AttributeValue & { refAttrName: string },
};

function placeholder(type: AttributeType): unknown {
  switch (type) {
    case AttributeType.FLOAT:
    case AttributeType.INT:
      return 0;
    case AttributeType.STRING:
      return new Uint8Array(0);
    case AttributeType.FLOATS:
    case AttributeType.INTS:
    case AttributeType.STRINGS:
    case AttributeType.TENSORS:
    case AttributeType.GRAPHS:
    case AttributeType.SPARSE_TENSORS:
    case AttributeType.TYPE_PROTOS:
      return [];
    default:
      return undefined;
  }
}

function isAttributeValue(v: unknown): v is AttributeValue {
  return typeof v === 'object' && v !== null && 'type' in v && 'value' in v && !(v instanceof Tensor);
}

/**
 * Converts a builder-friendly value: integers become INT, other numbers FLOAT, strings
 * STRING, arrays the plural form (INTS only when every number is an integer).
 */
export function toAttribute(name: string, v: AttributeInput): Attribute {
  if (isAttributeValue(v)) return { ...v, name } as Attribute;
  if (typeof v === 'number') {
    return Number.isInteger(v) ? { name, type: AttributeType.INT, value: v } : { name, type: AttributeType.FLOAT, value: v };
  }
  if (typeof v === 'bigint') return { name, type: AttributeType.INT, value: v };
  if (typeof v === 'string') return { name, type: AttributeType.STRING, value: stringToBytes(v) };
  if (v instanceof Tensor) return { name, type: AttributeType.TENSOR, value: v };
  if (Array.isArray(v)) {
    const a = v as unknown[];
    if (a.length === 0) return { name, type: AttributeType.INTS, value: [] };
    if (a.every((x) => typeof x === 'bigint' || (typeof x === 'number' && Number.isInteger(x)))) {
      return { name, type: AttributeType.INTS, value: a as Int64[] };
    }
    if (a.every((x) => typeof x === 'number')) return { name, type: AttributeType.FLOATS, value: a as number[] };
    if (a.every((x) => typeof x === 'string')) {
      return { name, type: AttributeType.STRINGS, value: (a as string[]).map(stringToBytes) };
    }
    if (a.every((x) => x instanceof Tensor)) return { name, type: AttributeType.TENSORS, value: a as Tensor[] };
    return { name, type: AttributeType.GRAPHS, value: a as Graph[] };
  }
  return { name, type: AttributeType.GRAPH, value: v as Graph };
}

/** The subgraphs held by an attribute (GRAPH or GRAPHS), for traversal. */
export function attributeGraphs(a: Attribute): Graph[] {
  if (a.type === AttributeType.GRAPH) return [a.value];
  if (a.type === AttributeType.GRAPHS) return a.value;
  return [];
}

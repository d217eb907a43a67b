/** Nodes: one operator application. Inputs are edited only through methods that keep use-lists right. */
import {
  type Attribute,
  type AttributeInput,
  AttributeType,
  attributeGraphs,
  bytesToString,
  toAttribute,
} from './attribute.js';
import { IrError, describeNode } from './errors.js';
import type { Graph } from './graph.js';
import type { StringStringEntry } from './metadata.js';
import type { Tensor } from './tensor.js';
import { Value } from './value.js';

export interface NodeInit {
  opType: string;
  domain?: string;
  overload?: string;
  name?: string;
  /** null marks an omitted optional input (written as "" in the file). */
  inputs?: ReadonlyArray<Value | null>;
  /** Output values, or output names, or a count of anonymous outputs. */
  outputs?: ReadonlyArray<Value | string> | number;
  attributes?: Record<string, AttributeInput> | Attribute[];
  docString?: string;
}

export class Node {
  name: string;
  opType: string;
  /** '' is the default ONNX domain ('ai.onnx'). */
  domain: string;
  overload: string;
  docString: string;
  metadataProps: StringStringEntry[] = [];
  readonly attributes = new Map<string, Attribute>();
  readonly outputs: Value[];
  /** The graph this node is in (null while detached). */
  graph: Graph | null = null;
  /** @internal linked-list neighbours inside `graph`. */
  _prev: Node | null = null;
  /** @internal */ _next: Node | null = null;
  /** Opaque fields the IR does not interpret (e.g. device_configurations), carried through. */
  extra: Record<string, unknown> | undefined;
  /** @internal whether the input uses are registered on the input values. */
  _usesAttached = true;

  private readonly _inputs: (Value | null)[] = [];

  constructor(init: NodeInit) {
    this.opType = init.opType;
    this.domain = init.domain ?? '';
    this.overload = init.overload ?? '';
    this.name = init.name ?? '';
    this.docString = init.docString ?? '';
    for (const v of init.inputs ?? []) this.appendInput(v);
    const outs = init.outputs ?? 1;
    const list: ReadonlyArray<Value | string> = typeof outs === 'number' ? Array.from({ length: outs }, () => '') : outs;
    this.outputs = list.map((o, i) => {
      const v = typeof o === 'string' ? new Value(o) : o;
      if (v.producer && v.producer !== this) {
        throw new IrError(`value '${v.name}' is already produced by ${describeNode(v.producer)}`);
      }
      v.producer = this;
      v.producerIndex = i;
      return v;
    });
    const attrs = init.attributes;
    if (Array.isArray(attrs)) for (const a of attrs) this.attributes.set(a.name, a);
    else if (attrs) for (const [k, v] of Object.entries(attrs)) if (v !== undefined) this.setAttribute(k, v);
  }

  get inputs(): ReadonlyArray<Value | null> {
    return this._inputs;
  }

  input(i: number): Value | null {
    return this._inputs[i] ?? null;
  }

  /** The i-th input; throws a located error when it is absent. */
  requireInput(i: number): Value {
    const v = this._inputs[i];
    if (!v) throw new IrError(`${describeNode(this)} has no input ${i}`);
    return v;
  }

  get output(): Value {
    const v = this.outputs[0];
    if (!v) throw new IrError(`${describeNode(this)} has no outputs`);
    return v;
  }

  setInput(i: number, v: Value | null): void {
    if (i < 0 || i >= this._inputs.length) throw new IrError(`${describeNode(this)}: input index ${i} out of range`);
    const old = this._inputs[i];
    if (old === v) return;
    if (this._usesAttached) old?._removeUse(this, i);
    this._inputs[i] = v;
    if (this._usesAttached) v?._addUse(this, i);
  }

  appendInput(v: Value | null): void {
    this._inputs.push(v);
    if (this._usesAttached) v?._addUse(this, this._inputs.length - 1);
  }

  /** Replaces every input slot reading `old` with `replacement`; returns how many changed. */
  replaceInputWith(old: Value, replacement: Value | null): number {
    let n = 0;
    for (let i = 0; i < this._inputs.length; i++) {
      if (this._inputs[i] === old) {
        this.setInput(i, replacement);
        n++;
      }
    }
    return n;
  }

  /** Drops trailing inputs from index `count` on. */
  truncateInputs(count: number): void {
    while (this._inputs.length > count) {
      const i = this._inputs.length - 1;
      if (this._usesAttached) this._inputs[i]?._removeUse(this, i);
      this._inputs.pop();
    }
  }

  /** Removes this node's uses of its inputs (used when the node leaves the graph). @internal */
  _detachInputs(): void {
    if (!this._usesAttached) return;
    for (let i = 0; i < this._inputs.length; i++) this._inputs[i]?._removeUse(this, i);
    this._usesAttached = false;
  }

  /** Re-registers uses (used when a removed node is reinserted). @internal */
  _attachInputs(): void {
    if (this._usesAttached) return;
    for (let i = 0; i < this._inputs.length; i++) this._inputs[i]?._addUse(this, i);
    this._usesAttached = true;
  }

  setAttribute(name: string, v: AttributeInput): void {
    const a = toAttribute(name, v);
    for (const g of attributeGraphs(a)) g.parentNode = this;
    this.attributes.set(name, a);
    if (this.graph) for (const g of attributeGraphs(a)) this.graph.reserveNames(g);
  }

  attribute(name: string): Attribute | undefined {
    return this.attributes.get(name);
  }

  getInt(name: string, fallback?: number): number {
    const a = this.attributes.get(name);
    if (!a) return this.missing(name, fallback);
    if (a.type !== AttributeType.INT) throw this.wrongType(name, 'INT');
    return Number(a.value);
  }

  getFloat(name: string, fallback?: number): number {
    const a = this.attributes.get(name);
    if (!a) return this.missing(name, fallback);
    if (a.type !== AttributeType.FLOAT) throw this.wrongType(name, 'FLOAT');
    return a.value;
  }

  getString(name: string, fallback?: string): string {
    const a = this.attributes.get(name);
    if (!a) return this.missing(name, fallback);
    if (a.type !== AttributeType.STRING) throw this.wrongType(name, 'STRING');
    return bytesToString(a.value);
  }

  getInts(name: string, fallback?: number[]): number[] {
    const a = this.attributes.get(name);
    if (!a) return this.missing(name, fallback);
    if (a.type !== AttributeType.INTS) throw this.wrongType(name, 'INTS');
    return a.value.map(Number);
  }

  getFloats(name: string, fallback?: number[]): number[] {
    const a = this.attributes.get(name);
    if (!a) return this.missing(name, fallback);
    if (a.type !== AttributeType.FLOATS) throw this.wrongType(name, 'FLOATS');
    return a.value;
  }

  getTensor(name: string): Tensor | undefined {
    const a = this.attributes.get(name);
    if (!a) return undefined;
    if (a.type !== AttributeType.TENSOR) throw this.wrongType(name, 'TENSOR');
    return a.value;
  }

  /** Graphs held by GRAPH and GRAPHS attributes (If branches, Loop/Scan bodies). */
  subgraphs(): Graph[] {
    const out: Graph[] = [];
    for (const a of this.attributes.values()) out.push(...attributeGraphs(a));
    return out;
  }

  /** The next node in the graph's order. */
  get next(): Node | null {
    return this._next;
  }

  get prev(): Node | null {
    return this._prev;
  }

  /** True for the default ONNX domain, whichever way it is spelled. */
  isOnnxDomain(): boolean {
    return this.domain === '' || this.domain === 'ai.onnx';
  }

  is(opType: string, domain = ''): boolean {
    if (this.opType !== opType) return false;
    if (domain === '' || domain === 'ai.onnx') return this.isOnnxDomain();
    return this.domain === domain;
  }

  toString(): string {
    return describeNode(this);
  }

  private missing<T>(name: string, fallback: T | undefined): T {
    if (fallback === undefined) throw new IrError(`${describeNode(this)} has no attribute '${name}'`);
    return fallback;
  }

  private wrongType(name: string, expected: string): IrError {
    const a = this.attributes.get(name)!;
    return new IrError(`${describeNode(this)}: attribute '${name}' is ${AttributeType[a.type]}, expected ${expected}`);
  }
}

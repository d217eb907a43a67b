/**
 * The op builder: creates nodes at an insertion point and returns their output values
 * for chaining, as onnx-graphsurgeon's `graph.layer` and onnxscript's op builder do.
 *
 *   const b = new Builder(graph, { before: node, tag: 'liza' });
 *   const y = b.op('MatMul', [x, w]);
 *   const [q, k, v] = b.op('Split', [qkv, sizes], { axis: -1 }, { outputs: 3 });
 */
import type { AttributeInput } from './attribute.js';
import { DataType } from './dtype.js';
import type { Graph } from './graph.js';
import { setMetadata } from './metadata.js';
import { Node } from './node.js';
import { Tensor, type TypedArray } from './tensor.js';
import type { TypeInfo } from './types.js';
import { Value } from './value.js';

/** Node metadata key naming the rule or pass that created (or last changed) a node: provenance. */
export const RULE_KEY = 'titanize.rule';

export interface BuilderOptions {
  /** Insert new nodes before this node (default: append at the end of the graph). */
  before?: Node;
  /** Prefix for generated names. */
  prefix?: string;
  /** Recorded as metadata 'titanize.rule' on every node created (provenance). */
  tag?: string;
}

export interface OpOptions {
  domain?: string;
  /** Number of outputs, or their names. */
  outputs?: number | string[];
  name?: string;
  /** Type annotation for the (first) output. */
  type?: TypeInfo;
}

export type Input = Value | null;

export class Builder {
  readonly graph: Graph;
  before: Node | undefined;
  prefix: string;
  tag: string | undefined;
  /** Every node this builder created, in creation order. */
  readonly created: Node[] = [];

  constructor(graph: Graph, options: BuilderOptions = {}) {
    this.graph = graph;
    this.before = options.before;
    this.prefix = options.prefix ?? '';
    this.tag = options.tag;
  }

  /** Adds one node; returns its output (one output) or outputs (several). */
  op(opType: string, inputs: Input[], attributes?: Record<string, AttributeInput | undefined>, options?: OpOptions & { outputs?: 1 }): Value;
  op(opType: string, inputs: Input[], attributes: Record<string, AttributeInput | undefined> | undefined, options: OpOptions): Value[];
  op(opType: string, inputs: Input[], attributes: Record<string, AttributeInput | undefined> = {}, options: OpOptions = {}): Value | Value[] {
    const node = this.node(opType, inputs, attributes, options);
    return node.outputs.length === 1 && (options.outputs === undefined || options.outputs === 1) ? node.outputs[0]! : node.outputs;
  }

  /** Adds one node and returns it. */
  node(opType: string, inputs: Input[], attributes: Record<string, AttributeInput | undefined> = {}, options: OpOptions = {}): Node {
    const base = `${this.prefix}${options.name ?? opType}`;
    const name = this.graph.uniqueName(base);
    const outs = options.outputs ?? 1;
    const outNames = typeof outs === 'number' ? Array.from({ length: outs }, (_, i) => this.graph.uniqueName(`${name}_out${outs > 1 ? i : ''}`)) : outs;
    const attrs: Record<string, AttributeInput> = {};
    for (const [k, v] of Object.entries(attributes)) if (v !== undefined) attrs[k] = v;
    const node = new Node({ opType, domain: options.domain ?? '', name, inputs, outputs: outNames, attributes: attrs });
    if (options.type) node.outputs[0]!.type = options.type;
    return this.add(node);
  }

  /** Inserts a node made elsewhere (a copy, say) at the insertion point, tagged and recorded like the others. */
  add(node: Node): Node {
    if (this.tag) setMetadata(node.metadataProps, RULE_KEY, this.tag);
    if (this.before) this.graph.insertBefore(this.before, node);
    else this.graph.append(node);
    this.created.push(node);
    return node;
  }

  /** New nodes go right after `node` (before the node that follows it; at the end when it is the last). */
  setInsertionPointAfter(node: Node): void {
    this.before = node.next ?? undefined;
  }

  /** Adds an initializer holding `data`. */
  initializer(name: string, data: TypedArray | Tensor, dims?: number[], dataType?: DataType): Value {
    const t = data instanceof Tensor ? data : Tensor.fromArray(data, dims ?? [data.length], dataType);
    return this.graph.addInitializer(t, this.graph.uniqueName(`${this.prefix}${name}`));
  }

  /** A Constant node (small values that belong to the graph's code rather than its weights). */
  constant(data: TypedArray | Tensor, dims?: number[], name = 'const'): Value {
    const t = data instanceof Tensor ? data : Tensor.fromArray(data, dims ?? [data.length]);
    return this.op('Constant', [], { value: t }, { name });
  }

  /** int64 1-D constant, the usual shape/axes argument. */
  ints(values: number[], name = 'ints'): Value {
    return this.constant(BigInt64Array.from(values.map(BigInt)), [values.length], name);
  }

  /** float32 scalar constant. */
  scalar(value: number, name = 'scalar', dataType: DataType = DataType.FLOAT): Value {
    return this.constant(Tensor.scalar(value, dataType), undefined, name);
  }
}

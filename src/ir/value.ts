/**
 * Values: the edges of the graph. A value knows its producer and keeps its use-list up
 * to date; node inputs change only through Node/Graph methods, so the list never goes
 * stale. `uses()` returns a snapshot, safe to iterate while editing.
 */
import { IrError } from './errors.js';
import type { Graph } from './graph.js';
import type { StringStringEntry } from './metadata.js';
import type { Node } from './node.js';
import type { Tensor } from './tensor.js';
import type { TypeInfo } from './types.js';

export interface Use {
  node: Node;
  index: number;
}

export class Value {
  name: string;
  type: TypeInfo | undefined;
  docString = '';
  metadataProps: StringStringEntry[] = [];
  /** The node that produces this value, or null for graph inputs and initializers. */
  producer: Node | null = null;
  /** Which output of the producer this is. */
  producerIndex = -1;
  /** For graph inputs and initializers: the graph that owns the value. */
  ownerGraph: Graph | null = null;
  /** The constant value when this is an initializer. */
  initializer: Tensor | undefined;

  /** @internal */ _uses: Use[] = [];
  /** @internal number of graph output slots holding this value. */ _outputRefs = 0;

  constructor(name = '', type?: TypeInfo) {
    this.name = name;
    this.type = type;
  }

  /** A snapshot of the uses: editing the graph while iterating it is safe. */
  uses(): Use[] {
    return this._uses.slice();
  }

  get numUses(): number {
    return this._uses.length;
  }

  /** The nodes that consume this value (each once). */
  consumers(): Node[] {
    return [...new Set(this._uses.map((u) => u.node))];
  }

  isGraphOutput(): boolean {
    return this._outputRefs > 0;
  }

  isGraphInput(): boolean {
    return this.producer === null && this.ownerGraph !== null && this.ownerGraph.inputs.includes(this);
  }

  isInitializer(): boolean {
    return this.initializer !== undefined;
  }

  /** The graph the value lives in. */
  get graph(): Graph | null {
    return this.producer ? this.producer.graph : this.ownerGraph;
  }

  /**
   * Makes every node input and graph output that reads this value read `other` instead.
   * Uses inside subgraphs are redirected too.
   */
  replaceAllUsesWith(other: Value): void {
    if (other === this) return;
    for (const { node, index } of this.uses()) node.setInput(index, other);
    if (this._outputRefs > 0) {
      const g = this.graph;
      if (!g) throw new IrError(`value '${this.name}' is a graph output but belongs to no graph`);
      g.replaceOutputValue(this, other);
    }
  }

  /** @internal */
  _addUse(node: Node, index: number): void {
    this._uses.push({ node, index });
  }

  /** @internal */
  _removeUse(node: Node, index: number): void {
    const i = this._uses.findIndex((u) => u.node === node && u.index === index);
    if (i < 0) throw new IrError(`value '${this.name}': use by input ${index} of '${node.name}' is not recorded`);
    this._uses.splice(i, 1);
  }

  toString(): string {
    return `Value(${this.name || '<anonymous>'})`;
  }
}

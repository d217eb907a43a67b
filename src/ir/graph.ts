/**
 * Graphs: an ordered set of nodes (a doubly linked list, so insertion and removal are
 * O(1) even while iterating), graph inputs, outputs and initializers. The main graph,
 * subgraphs of If/Loop/Scan, and function bodies are all Graphs.
 */
import { IrError, describeNode } from './errors.js';
import type { IRFunction } from './function.js';
import type { StringStringEntry } from './metadata.js';
import type { Model } from './model.js';
import { Node, type NodeInit } from './node.js';
import { Tensor } from './tensor.js';
import { Value } from './value.js';
import type { OpaqueProto } from './attribute.js';

export class Graph {
  name: string;
  docString = '';
  metadataProps: StringStringEntry[] = [];
  /** Values that carried a value_info entry (type annotations), in file order. */
  valueInfo: Value[] = [];
  /** Uninterpreted parts of GraphProto, carried through untouched. */
  sparseInitializers: OpaqueProto[] = [];
  quantizationAnnotation: OpaqueProto[] = [];

  /** Set when this graph is an attribute of a node (If/Loop/Scan). */
  parentNode: Node | null = null;
  /** Set on the main graph of a model. */
  model: Model | null = null;
  /** Set on the body of a model-local function. */
  function: IRFunction | null = null;

  private _inputs: Value[] = [];
  private _outputs: Value[] = [];
  private readonly _initializers = new Map<string, Value>();
  private _first: Node | null = null;
  private _last: Node | null = null;
  private _size = 0;
  private _names: Set<string> | null = null;
  private _counter = 0;

  constructor(name = '') {
    this.name = name;
  }

  // ---- inputs, outputs, initializers -------------------------------------------------

  get inputs(): readonly Value[] {
    return this._inputs;
  }

  get outputs(): readonly Value[] {
    return this._outputs;
  }

  addInput(v: Value, index = this._inputs.length): Value {
    if (v.producer) throw new IrError(`value '${v.name}' is produced by ${describeNode(v.producer)}; it cannot be a graph input`);
    v.ownerGraph = this;
    this._inputs.splice(index, 0, v);
    this.registerName(v.name);
    return v;
  }

  /** Removes a graph input; refuses when it is still read. */
  removeInput(v: Value): void {
    const i = this._inputs.indexOf(v);
    if (i < 0) throw new IrError(`value '${v.name}' is not an input of graph '${this.name}'`);
    if (v.numUses > 0 || v.isGraphOutput()) {
      throw new IrError(`graph input '${v.name}' is still used by ${v.numUses} node input(s); redirect them first`);
    }
    this._inputs.splice(i, 1);
    if (!v.initializer) v.ownerGraph = null;
  }

  addOutput(v: Value, index = this._outputs.length): void {
    this._outputs.splice(index, 0, v);
    v._outputRefs++;
  }

  setOutputs(values: Value[]): void {
    for (const v of this._outputs) v._outputRefs--;
    this._outputs = values.slice();
    for (const v of this._outputs) v._outputRefs++;
  }

  removeOutput(v: Value): void {
    const i = this._outputs.indexOf(v);
    if (i < 0) throw new IrError(`value '${v.name}' is not an output of graph '${this.name}'`);
    this._outputs.splice(i, 1);
    v._outputRefs--;
  }

  /** Makes every output slot holding `old` hold `replacement` (keeping the output name if asked). */
  replaceOutputValue(old: Value, replacement: Value): void {
    for (let i = 0; i < this._outputs.length; i++) {
      if (this._outputs[i] === old) {
        this._outputs[i] = replacement;
        old._outputRefs--;
        replacement._outputRefs++;
      }
    }
  }

  get initializers(): ReadonlyMap<string, Value> {
    return this._initializers;
  }

  /** Adds an initializer; with a Tensor, makes a new Value named after it. */
  addInitializer(t: Tensor | Value, name?: string): Value {
    let v: Value;
    if (t instanceof Tensor) {
      v = new Value(name ?? t.name);
      v.initializer = t;
      if (!t.name) t.name = v.name;
    } else {
      v = t;
      if (!v.initializer) throw new IrError(`value '${v.name}' has no tensor; it cannot be an initializer`);
    }
    if (!v.name) throw new IrError('an initializer needs a name');
    if (this._initializers.has(v.name)) throw new IrError(`graph '${this.name}' already has an initializer '${v.name}'`);
    v.initializer.name = v.name;
    v.ownerGraph = this;
    this._initializers.set(v.name, v);
    this.registerName(v.name);
    return v;
  }

  removeInitializer(v: Value): void {
    if (this._initializers.get(v.name) !== v) throw new IrError(`'${v.name}' is not an initializer of graph '${this.name}'`);
    if (v.numUses > 0 || v.isGraphOutput()) {
      throw new IrError(`initializer '${v.name}' is still used by ${v.numUses} node input(s); redirect them first`);
    }
    this._initializers.delete(v.name);
    if (!this._inputs.includes(v)) v.ownerGraph = null;
  }

  /** Renames an initializer, keeping the map key in step. */
  renameInitializer(v: Value, name: string): void {
    if (this._initializers.get(v.name) !== v) throw new IrError(`'${v.name}' is not an initializer of graph '${this.name}'`);
    if (this._initializers.has(name)) throw new IrError(`graph '${this.name}' already has an initializer '${name}'`);
    // keep insertion order stable: rebuild the map
    const entries = [...this._initializers.entries()].map(([k, x]) => (k === v.name ? [name, x] : [k, x]) as [string, Value]);
    this._initializers.clear();
    for (const [k, x] of entries) this._initializers.set(k, x);
    v.name = name;
    if (v.initializer) v.initializer.name = name;
    this.registerName(name);
  }

  // ---- nodes ---------------------------------------------------------------------------

  get size(): number {
    return this._size;
  }

  get first(): Node | null {
    return this._first;
  }

  get last(): Node | null {
    return this._last;
  }

  /** Iterates nodes in order; removing or inserting nodes while iterating is safe. */
  *[Symbol.iterator](): IterableIterator<Node> {
    let n = this._first;
    while (n) {
      const next = n._next;
      if (n.graph === this) yield n;
      // if `n` was removed during the yield, `next` was captured before
      n = n.graph === this ? n._next : next;
    }
  }

  nodes(): Node[] {
    return [...this];
  }

  /** Creates a node from `init` and appends it; returns the node. */
  node(init: NodeInit): Node {
    const n = new Node(init);
    this.append(n);
    return n;
  }

  append(...nodes: Node[]): void {
    for (const n of nodes) this.link(n, this._last, null);
  }

  insertBefore(ref: Node, ...nodes: Node[]): void {
    this.checkMember(ref);
    for (const n of nodes) this.link(n, ref._prev, ref);
  }

  insertAfter(ref: Node, ...nodes: Node[]): void {
    this.checkMember(ref);
    let at = ref;
    for (const n of nodes) {
      this.link(n, at, at._next);
      at = n;
    }
  }

  /**
   * Removes nodes. With `safe` (the default) it first checks that no output is still
   * used outside the removed set or is a graph output; if any is, it throws and changes
   * nothing.
   */
  remove(nodes: Node | Iterable<Node>, options: { safe?: boolean } = {}): void {
    const list = nodes instanceof Node ? [nodes] : [...nodes];
    const set = new Set(list);
    for (const n of list) this.checkMember(n);
    if (options.safe !== false) {
      for (const n of list) {
        for (const out of n.outputs) {
          if (out.isGraphOutput()) {
            throw new IrError(`cannot remove ${describeNode(n)}: its output '${out.name}' is a graph output`);
          }
          const outside = out.uses().find((u) => !set.has(u.node) && !isInside(u.node, set));
          if (outside) {
            throw new IrError(
              `cannot remove ${describeNode(n)}: its output '${out.name}' is still used by ${describeNode(outside.node)}; ` +
                'redirect that use first (Value.replaceAllUsesWith) or remove both together',
            );
          }
        }
      }
    }
    for (const n of list) {
      n._detachInputs();
      this.unlink(n);
    }
  }

  /** Moves `n` (already in this graph) to just before `ref`. Use-lists are unaffected. */
  moveBefore(n: Node, ref: Node): void {
    this.checkMember(n);
    this.checkMember(ref);
    if (n === ref) return;
    this.unlinkOnly(n);
    this.linkOnly(n, ref._prev, ref);
  }

  /** Rebuilds the order from an array holding exactly this graph's nodes (used by toposort). */
  reorder(order: Node[]): void {
    if (order.length !== this._size) throw new IrError(`reorder: got ${order.length} nodes, graph has ${this._size}`);
    this._first = this._last = null;
    this._size = 0;
    for (const n of order) {
      n._prev = n._next = null;
      this.linkOnly(n, this._last, null);
    }
  }

  // ---- names ---------------------------------------------------------------------------

  /** The outermost graph (names are unique across a graph and its subgraphs). */
  get root(): Graph {
    let g: Graph = this;
    while (g.parentNode?.graph) g = g.parentNode.graph;
    return g;
  }

  /** A value/node name not yet used anywhere in the root graph and its subgraphs. */
  uniqueName(base: string): string {
    const names = this.root.nameSet();
    let name = base;
    while (names.has(name)) name = `${base}_${++this.root._counter}`;
    names.add(name);
    return name;
  }

  /** Records a name as taken. @internal */
  registerName(name: string): void {
    if (name) this.root._names?.add(name);
  }

  private nameSet(): Set<string> {
    if (!this._names) this._names = this.collectNames();
    return this._names;
  }

  toString(): string {
    return `Graph(${this.name || '<anonymous>'}, ${this._size} nodes)`;
  }

  // ---- linked list internals -----------------------------------------------------------

  private checkMember(n: Node): void {
    if (n.graph !== this) throw new IrError(`${describeNode(n)} is not in graph '${this.name}'`);
  }

  private link(n: Node, prev: Node | null, next: Node | null): void {
    if (n.graph) throw new IrError(`${describeNode(n)} is already in graph '${n.graph.name}'; remove it first`);
    this.linkOnly(n, prev, next);
    n.graph = this;
    for (const o of n.outputs) this.registerName(o.name);
    this.registerName(n.name);
    // A node removed earlier lost its input uses; take them back.
    n._attachInputs();
    for (const s of n.subgraphs()) {
      s.parentNode = n;
      this.reserveNames(s);
    }
  }

  /** Names used inside a subgraph built on its own are taken in this scope too. @internal */
  reserveNames(sub: Graph): void {
    const names = this.root._names;
    if (names) for (const x of sub.collectNames()) names.add(x);
  }

  /** Every value and node name defined in this graph and its subgraphs. @internal */
  collectNames(): Set<string> {
    const names = new Set<string>();
    const visit = (g: Graph): void => {
      for (const v of g._inputs) names.add(v.name);
      for (const k of g._initializers.keys()) names.add(k);
      for (const n of g) {
        if (n.name) names.add(n.name);
        for (const o of n.outputs) names.add(o.name);
        for (const s of n.subgraphs()) visit(s);
      }
    };
    visit(this);
    return names;
  }

  private linkOnly(n: Node, prev: Node | null, next: Node | null): void {
    n._prev = prev;
    n._next = next;
    if (prev) prev._next = n;
    else this._first = n;
    if (next) next._prev = n;
    else this._last = n;
    n.graph = this;
    this._size++;
  }

  private unlinkOnly(n: Node): void {
    if (n._prev) n._prev._next = n._next;
    else this._first = n._next;
    if (n._next) n._next._prev = n._prev;
    else this._last = n._prev;
    this._size--;
  }

  private unlink(n: Node): void {
    this.unlinkOnly(n);
    // keep _next so an iterator positioned on `n` can continue
    n._prev = null;
    n.graph = null;
  }
}

/** True when `node` sits in a subgraph of one of `set`'s nodes. */
function isInside(node: Node, set: Set<Node>): boolean {
  let g = node.graph;
  while (g?.parentNode) {
    if (set.has(g.parentNode)) return true;
    g = g.parentNode.graph;
  }
  return false;
}

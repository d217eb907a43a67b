/** Walking, topological sorting and dead-code elimination. */
import { AttributeType } from './attribute.js';
import { IrError, describeNode } from './errors.js';
import type { Graph } from './graph.js';
import type { Model } from './model.js';
import type { Node } from './node.js';
import type { Tensor } from './tensor.js';
import type { Value } from './value.js';

/** Every node of `graph` and, recursively, of its subgraphs (parents before children). */
export function* walkNodes(graph: Graph): IterableIterator<Node> {
  for (const n of graph) {
    yield n;
    for (const s of n.subgraphs()) yield* walkNodes(s);
  }
}

/** Every graph of a model: the main graph, subgraphs, and function bodies (with theirs). */
export function* allGraphs(model: Model): IterableIterator<Graph> {
  function* rec(g: Graph): IterableIterator<Graph> {
    yield g;
    for (const n of g) for (const s of n.subgraphs()) yield* rec(s);
  }
  yield* rec(model.graph);
  for (const f of model.functions) yield* rec(f.body);
}

/** Every tensor of the model: initializers and TENSOR(S) attributes, in all graphs and functions. */
export function* allTensors(model: Model): IterableIterator<Tensor> {
  for (const g of allGraphs(model)) {
    for (const v of g.initializers.values()) yield v.initializer!;
    for (const n of g) {
      for (const a of n.attributes.values()) {
        if (a.type === AttributeType.TENSOR) yield a.value;
        else if (a.type === AttributeType.TENSORS) yield* a.value;
      }
    }
  }
}

/**
 * Values a node reads, including those read from an enclosing scope by its subgraphs.
 * A node with a subgraph must come after the producers of every outer value used inside.
 */
export function implicitInputs(node: Node): Value[] {
  const out: Value[] = [];
  const ownGraphs = new Set<Graph>();
  const collect = (g: Graph): void => {
    ownGraphs.add(g);
    for (const n of g) {
      for (const v of n.inputs) if (v) out.push(v);
      for (const s of n.subgraphs()) collect(s);
    }
    for (const v of g.outputs) out.push(v);
  };
  for (const s of node.subgraphs()) collect(s);
  return out.filter((v) => {
    const g = v.graph;
    return g !== null && !ownGraphs.has(g);
  });
}

/**
 * Sorts the nodes of `graph` (and its subgraphs) topologically, keeping the existing
 * order wherever it is already valid (Kahn's algorithm seeded in file order).
 * Throws an IrError naming a node on the cycle when there is one.
 */
export function toposort(graph: Graph): void {
  for (const n of graph) for (const s of n.subgraphs()) toposort(s);
  const nodes = graph.nodes();
  const index = new Map<Node, number>();
  nodes.forEach((n, i) => index.set(n, i));
  const indegree = new Int32Array(nodes.length);
  const users: number[][] = nodes.map(() => []);
  nodes.forEach((n, i) => {
    const preds = new Set<number>();
    const reads = n.subgraphs().length ? [...n.inputs, ...implicitInputs(n)] : n.inputs;
    for (const v of reads) {
      const p = v?.producer;
      if (!p) continue;
      // a value produced inside a subgraph of this graph's node maps to that node
      const owner = ownerIn(graph, p);
      if (owner === undefined) continue;
      const j = index.get(owner);
      if (j !== undefined && j !== i && !preds.has(j)) {
        preds.add(j);
        users[j]!.push(i);
        indegree[i]!++;
      }
    }
  });
  // ready nodes processed in original order: a min-heap on index would be O(n log n);
  // a sorted insertion into a pointer-scan queue keeps already-sorted graphs O(n).
  const order: Node[] = [];
  const ready: number[] = [];
  for (let i = 0; i < nodes.length; i++) if (indegree[i] === 0) ready.push(i);
  const heap = new MinHeap(ready);
  while (heap.size) {
    const i = heap.pop();
    order.push(nodes[i]!);
    for (const j of users[i]!) if (--indegree[j]! === 0) heap.push(j);
  }
  if (order.length !== nodes.length) {
    const stuck = nodes.find((_, i) => indegree[i]! > 0)!;
    throw new IrError(`graph '${graph.name}' has a cycle through ${describeNode(stuck)}`);
  }
  graph.reorder(order);
}

/** The node of `graph` that contains `n` (n itself, or the ancestor holding its subgraph). */
function ownerIn(graph: Graph, n: Node): Node | undefined {
  let cur: Node | null = n;
  while (cur) {
    if (cur.graph === graph) return cur;
    cur = cur.graph?.parentNode ?? null;
  }
  return undefined;
}

/**
 * Removes nodes whose outputs are not used (recursively), and unused initializers of
 * the main graph that are not graph inputs. Returns how many nodes were removed.
 */
export function eliminateDeadCode(graph: Graph, options: { initializers?: boolean } = {}): number {
  let removed = 0;
  const nodes = graph.nodes();
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i]!;
    if (n.graph !== graph) continue;
    if (n.outputs.every((o) => o.numUses === 0 && !o.isGraphOutput()) && !hasSideEffects(n)) {
      graph.remove(n);
      removed++;
    }
  }
  for (const n of graph) for (const s of n.subgraphs()) removed += eliminateDeadCode(s, { initializers: false });
  if (options.initializers !== false) {
    for (const v of [...graph.initializers.values()]) {
      if (v.numUses === 0 && !v.isGraphOutput() && !graph.inputs.includes(v)) graph.removeInitializer(v);
    }
  }
  return removed;
}

/** Ops that must not be dropped even when nothing reads them. */
function hasSideEffects(n: Node): boolean {
  return n.outputs.length === 0;
}

/** Minimal binary min-heap of indices. */
class MinHeap {
  private a: number[];
  constructor(init: number[]) {
    this.a = init.slice().sort((x, y) => x - y);
  }
  get size(): number {
    return this.a.length;
  }
  push(x: number): void {
    const a = this.a;
    a.push(x);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]! <= x) break;
      a[i] = a[p]!;
      i = p;
    }
    a[i] = x;
  }
  pop(): number {
    const a = this.a;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        let mv = last;
        if (l < a.length && a[l]! < mv) {
          m = l;
          mv = a[l]!;
        }
        if (r < a.length && a[r]! < mv) m = r;
        if (m === i) break;
        a[i] = a[m]!;
        i = m;
      }
      a[i] = last;
    }
    return top;
  }
}

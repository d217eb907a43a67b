/**
 * Shared state and small graph helpers for attention discovery. Everything here walks
 * graph edges (producers and use-lists), never the node order, so discovery gives the
 * same answer on a graph whose nodes are shuffled.
 */
import { type Graph, type Model, type Node, type Value, describeNode } from '../../ir/index.js';
import { type ShapeAnalysis, inferShapes } from '../analysis/shapes.js';
import { constantValues } from '../util/constants.js';

/**
 * The stages of discovery, in order: the core (scores → softmax → P·V, or the fused op),
 * the projections (Q, K, V traced back), the heads (read off the labels), the output
 * (traced forward to the output projection), the add-ons (mask, rotary, cache).
 */
export type DiscoveryStage = 'core' | 'projections' | 'heads' | 'output' | 'add-ons';

/** Thrown by the analysis helpers to reject a candidate; caught by discovery and reported. */
export class Rejection extends Error {
  stage: DiscoveryStage = 'core';
  constructor(readonly reason: string) {
    super(reason);
  }
}

export function reject(reason: string): never {
  throw new Rejection(reason);
}

/** Runs one stage of an analysis: a rejection inside it is reported with the stage. */
export function stage<T>(name: DiscoveryStage, run: () => T): T {
  try {
    return run();
  } catch (e) {
    if (e instanceof Rejection && e.stage === 'core') e.stage = name;
    throw e;
  }
}

export class DiscoveryContext {
  readonly graph: Graph;
  /** Default-domain opset version (17 when the model does not say). */
  readonly opset: number;
  private depths: Map<Node, number> | null = null;
  private shapeAnalysis: ShapeAnalysis | null = null;
  /** Cache for mask analyses (shared masks are analysed once). */
  readonly maskCache = new Map<Value, unknown>();

  constructor(readonly model: Model) {
    this.graph = model.graph;
    this.opset = model.opsetVersion('') ?? 17;
  }

  /** Shapes of the main graph (inferred once, on first use). */
  get shapes(): ShapeAnalysis {
    if (!this.shapeAnalysis) this.shapeAnalysis = inferShapes(this.model);
    return this.shapeAnalysis;
  }

  /** Longest path (in nodes) from the graph inputs to `n`; independent of node order. */
  depth(n: Node): number {
    if (!this.depths) this.depths = computeDepths(this.graph);
    return this.depths.get(n) ?? 0;
  }
}

/** Depth of every node: 1 + the deepest producer of its inputs (iterative, order-independent). */
export function computeDepths(graph: Graph): Map<Node, number> {
  const depth = new Map<Node, number>();
  const visiting = new Set<Node>();
  for (const start of graph) {
    if (depth.has(start)) continue;
    const stack: Node[] = [start];
    while (stack.length) {
      const n = stack[stack.length - 1]!;
      if (depth.has(n)) {
        stack.pop();
        continue;
      }
      let pending = false;
      if (!visiting.has(n)) {
        visiting.add(n);
        for (const v of n.inputs) {
          const p = v?.producer;
          if (p && p.graph === graph && !depth.has(p) && !visiting.has(p)) {
            stack.push(p);
            pending = true;
          }
        }
      }
      if (pending) continue;
      let d = 0;
      for (const v of n.inputs) {
        const p = v?.producer;
        if (p && p.graph === graph) d = Math.max(d, depth.get(p) ?? 0);
      }
      depth.set(n, d + 1);
      visiting.delete(n);
      stack.pop();
    }
  }
  return depth;
}

// ---- value helpers -----------------------------------------------------------------------

export function isOp(n: Node | null | undefined, ...ops: string[]): boolean {
  return !!n && n.isOnnxDomain() && ops.includes(n.opType);
}

/** The producer of `v` when it is one of `ops` (default domain). */
export function producerIs(v: Value | null | undefined, ...ops: string[]): Node | null {
  const p = v?.producer;
  return p && isOp(p, ...ops) ? p : null;
}

/** Follows `v` back through single-input ops of `ops` (through input 0). */
export function stripBack(v: Value, ops: readonly string[], maxSteps = 16): Value {
  let cur = v;
  for (let i = 0; i < maxSteps; i++) {
    const p = cur.producer;
    if (!p || !isOp(p, ...ops)) break;
    const next = p.inputs[0];
    if (!next) break;
    cur = next;
  }
  return cur;
}

/** A graph input (not an initializer), possibly behind Cast/Identity. */
export function graphInputBehind(v: Value | null | undefined): Value | null {
  if (!v) return null;
  const s = stripBack(v, ['Cast', 'Identity']);
  return s.isGraphInput() && !s.initializer ? s : null;
}

/** The graph output a value is exported as (itself, or through an Identity consumer). */
export function exportedAs(v: Value): Value | null {
  if (v.isGraphOutput()) return v;
  for (const c of v.consumers()) {
    if (isOp(c, 'Identity') && c.output.isGraphOutput()) return c.output;
  }
  return null;
}

export function describeValue(v: Value): string {
  if (v.producer) return `'${v.name}' (from ${describeNode(v.producer)})`;
  if (v.initializer) return `initializer '${v.name}'`;
  if (v.isGraphInput()) return `graph input '${v.name}'`;
  return `'${v.name}'`;
}

export function nodeName(n: Node): string {
  return n.name || describeNode(n);
}

/** An integer attribute, or `fallback` when absent. */
export function intAttr(n: Node, name: string, fallback: number): number {
  const a = n.attributes.get(name);
  if (!a) return fallback;
  try {
    return n.getInt(name);
  } catch {
    return fallback;
  }
}

export function intsAttr(n: Node, name: string): number[] | undefined {
  if (!n.attributes.has(name)) return undefined;
  try {
    return n.getInts(name);
  } catch {
    return undefined;
  }
}

export function floatAttr(n: Node, name: string): number | undefined {
  if (!n.attributes.has(name)) return undefined;
  try {
    return n.getFloat(name);
  } catch {
    try {
      return n.getInt(name);
    } catch {
      return undefined;
    }
  }
}

/** Static rank of a value from its type, when known. */
export function rankOf(v: Value | null | undefined): number | undefined {
  const t = v?.type;
  if (!t || (t.kind !== 'tensor' && t.kind !== 'sparse_tensor') || !t.shape) return undefined;
  return t.shape.length;
}

/** The perm of a Transpose (default: reversed axes of rank `rank`). */
export function transposePerm(t: Node): number[] | undefined {
  return intsAttr(t, 'perm');
}

export function samePerm(p: number[] | undefined, want: number[]): boolean {
  return !!p && p.length === want.length && p.every((x, i) => x === want[i]);
}

/** Axes of an Unsqueeze/Squeeze (input 1 since opset 13, attribute before). */
export function axesOf(n: Node): number[] | undefined {
  const fromInput = n.inputs[1] ? constantValues(n.inputs[1]) : undefined;
  return fromInput ?? intsAttr(n, 'axes');
}

/** A positive integer, or null for unknown / -1 / 0 entries. */
export function known(x: number | null | undefined): number | null {
  return x !== null && x !== undefined && Number.isFinite(x) && x > 0 ? x : null;
}

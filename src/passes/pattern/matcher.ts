/**
 * Matching a pattern from a root node backwards through producers. Matching follows
 * graph edges only (a value's producer, a node's inputs), never the order of nodes in
 * the graph, so it gives the same answer on a shuffled graph.
 *
 * The matcher backtracks: alternatives, optional nodes and commuted operands are tried
 * in order, and a complete structural match can still be refused by `accept` (a rule's
 * check), in which case the remaining alternatives are tried. When nothing matches, it
 * reports the closest attempt (the one that matched the most pattern nodes) and why it
 * failed, naming the node.
 */
import { type Node, type Tensor, type Value, describeNode } from '../../ir/index.js';
import { constantTensor, tensorNumbers } from '../util/constants.js';
import {
  ANY_OP,
  AnyPattern,
  type AttrConstraint,
  type ConstExpect,
  ConstPattern,
  type NodePattern,
  OrPattern,
  OutputPattern,
  type Pattern,
  type PatternValue,
  VarPattern,
  attrToJs,
  opKey,
} from './pattern.js';

/** The result of a successful match: what each variable and named node was bound to. */
export class Match<B = Record<string, unknown>> {
  /** Bindings returned by the rule's check (set before the rewrite runs). */
  bindings: B = {} as B;

  constructor(
    /** The node the match is rooted at. */
    readonly root: Node,
    /** Every matched graph node, root first. */
    readonly nodes: readonly Node[],
    private readonly vars: ReadonlyMap<string, Value>,
    private readonly named: ReadonlyMap<string, Node>,
    private readonly consts: ReadonlyMap<string, number[]>,
    private readonly choices: ReadonlyMap<string, number>,
  ) {}

  /** The value bound to variable or constant `name`; throws when unbound. */
  value(name: string): Value {
    const v = this.vars.get(name);
    if (!v) throw new Error(`match at ${describeNode(this.root)}: no value is bound to '${name}' (bound: ${[...this.vars.keys()].join(', ') || 'none'})`);
    return v;
  }

  /** The value bound to `name`, or undefined (e.g. a variable inside an alternative that did not match). */
  maybeValue(name: string): Value | undefined {
    return this.vars.get(name);
  }

  /** The node bound with `as: name`; throws when unbound. */
  node(name: string): Node {
    const n = this.named.get(name);
    if (!n) throw new Error(`match at ${describeNode(this.root)}: no node is bound to '${name}'`);
    return n;
  }

  maybeNode(name: string): Node | undefined {
    return this.named.get(name);
  }

  /** The numbers of the constant bound to `name` (when they were small enough to read). */
  constant(name: string): number[] | undefined {
    return this.consts.get(name);
  }

  /** Which alternative of the named `orNamed` pattern matched (0-based). */
  choice(name: string): number | undefined {
    return this.choices.get(name);
  }

  has(name: string): boolean {
    return this.vars.has(name) || this.named.has(name);
  }

  /** Variable bindings by name (for reports). */
  get values(): ReadonlyMap<string, Value> {
    return this.vars;
  }
}

/** Why the closest attempt failed. */
export interface MatchFailure {
  /** The failure, naming the node or value where it happened. */
  reason: string;
  /** How many pattern nodes were matched when it failed. */
  nodesMatched: number;
  /** The graph nodes matched at that point, root first. */
  matchedNodes: Node[];
  /** True when the structure matched completely and the check (accept) refused it. */
  refused: boolean;
}

export interface MatchOptions {
  /**
   * Called for each complete structural match; return null to accept it, or a reason to
   * refuse it (matching then goes on with the remaining alternatives).
   */
  accept?: (m: Match) => string | null;
  /** Keep the closest failed attempt (default true; the cost is small). */
  trace?: boolean;
}

export interface MatchOutcome {
  match: Match | null;
  /** The closest failed attempt when there is no match (and trace was on). */
  failure: MatchFailure | null;
}

class State {
  readonly vars = new Map<string, Value>();
  readonly consts = new Map<string, number[]>();
  readonly byPattern = new Map<NodePattern, Node>();
  readonly matched = new Set<Node>();
  readonly named = new Map<string, Node>();
  readonly choices = new Map<string, number>();
  readonly stack: Node[] = [];
  best: MatchFailure | null = null;
  bestScore = -1;
  /** Deepest failure score seen inside the alternatives being tried (see OrPattern). */
  probe = -1;
  result: Match | null = null;

  constructor(
    readonly root: Node,
    readonly trace: boolean,
    readonly accept: ((m: Match) => string | null) | undefined,
  ) {}

  fail(reason: () => string, refused = false): false {
    if (!this.trace) return false;
    const score = this.stack.length + (refused ? 0.5 : 0);
    if (score > this.probe) this.probe = score;
    if (score > this.bestScore) {
      this.bestScore = score;
      this.best = { reason: reason(), nodesMatched: this.stack.length, matchedNodes: [...this.stack], refused };
    }
    return false;
  }
}

type K = () => boolean;

/** Matches `pattern` rooted at `node`. */
export function matchPattern(pattern: Pattern, node: Node, options: MatchOptions = {}): MatchOutcome {
  const s = new State(node, options.trace !== false, options.accept);
  const done: K = () => {
    const m = new Match(node, [...s.stack], new Map(s.vars), new Map(s.named), new Map(s.consts), new Map(s.choices));
    if (s.accept) {
      const refusal = s.accept(m);
      if (refusal !== null) return s.fail(() => refusal, true);
    }
    s.result = m;
    return true;
  };
  const roots = flattenRoots(pattern.root);
  let ok = false;
  for (const r of roots) {
    const out = node.outputs[r.index];
    if (!out) {
      s.fail(() => `${describeNode(node)} has no output ${r.index}`);
      continue;
    }
    if (matchNode(r.node, node, s, done)) {
      ok = true;
      break;
    }
  }
  if (!ok && s.best === null && s.trace) {
    s.best = { reason: `${describeNode(node)} is not a ${[...pattern.rootOps].join(' or ')}`, nodesMatched: 0, matchedNodes: [], refused: false };
  }
  return { match: ok ? s.result : null, failure: ok ? null : s.best };
}

function flattenRoots(p: PatternValue): OutputPattern[] {
  if (p instanceof OutputPattern) return [p];
  if (p instanceof OrPattern) return p.alternatives.flatMap(flattenRoots);
  return [];
}

function describeValue(v: Value): string {
  if (v.producer) return `'${v.name}' (output of ${describeNode(v.producer)})`;
  if (v.initializer) return `initializer '${v.name}'`;
  if (v.isGraphInput()) return `graph input '${v.name}'`;
  return `'${v.name}'`;
}

/** Where a value is read (for messages): input `index` of `node`. */
interface Site {
  node: Node;
  index: number;
}

function at(site: Site | undefined): string {
  return site ? `input ${site.index} of ${describeNode(site.node)}: ` : '';
}

function matchValue(p: PatternValue, v: Value | null, s: State, k: K, site?: Site): boolean {
  if (p instanceof AnyPattern) return k();
  if (p instanceof OrPattern) {
    const depth = s.stack.length;
    const saved = s.probe;
    s.probe = -1;
    for (let i = 0; i < p.alternatives.length; i++) {
      if (p.name) s.choices.set(p.name, i);
      if (matchValue(p.alternatives[i]!, v, s, k, site)) {
        s.probe = Math.max(saved, s.probe);
        return true;
      }
    }
    if (p.name) s.choices.delete(p.name);
    const reached = s.probe;
    s.probe = Math.max(saved, reached);
    // no alternative got past this value: say what was expected here, all alternatives at once
    if (s.trace && v && reached <= depth && depth >= s.bestScore) {
      const expected = [...new Set(leadingOps(p))];
      s.bestScore = depth;
      s.best = {
        reason: `${at(site)}${describeValue(v)} is none of the alternatives (expected the output of ${expected.join(', ')})`,
        nodesMatched: depth,
        matchedNodes: [...s.stack],
        refused: false,
      };
    }
    return false;
  }
  if (!v) return s.fail(() => `${at(site)}an absent (optional) input where ${patternText(p)} was expected`);
  if (p instanceof VarPattern) {
    const bound = s.vars.get(p.name);
    if (bound) {
      return bound === v ? k() : s.fail(() => `${at(site)}'${p.name}' is bound to '${bound.name}' but ${describeValue(v)} is found in its place`);
    }
    if (p.check) {
      const r = p.check(v);
      if (r !== true) return s.fail(() => at(site) + (typeof r === 'string' ? r : `${describeValue(v)} does not satisfy the check on '${p.name}'`));
    }
    s.vars.set(p.name, v);
    if (k()) return true;
    s.vars.delete(p.name);
    return false;
  }
  if (p instanceof ConstPattern) {
    const t = constantTensor(v);
    if (!t) return s.fail(() => `${at(site)}${describeValue(v)} is not a constant${p.name ? ` (expected constant '${p.name}')` : ''}`);
    let values: number[] | undefined;
    if (p.expect !== undefined) {
      values = tensorNumbers(t);
      if (!values) return s.fail(() => `${at(site)}constant ${describeValue(v)} is too large or not numeric`);
      const r = checkConst(p.expect, values, t);
      if (r !== true) return s.fail(() => `${at(site)}constant ${describeValue(v)} = ${fmtNumbers(values!)}: ${r}`);
    }
    if (p.name) {
      const bound = s.vars.get(p.name);
      if (bound && bound !== v) return s.fail(() => `${at(site)}'${p.name}' is bound to '${bound.name}' but ${describeValue(v)} is found in its place`);
      if (bound) return k();
      s.vars.set(p.name, v);
      const nums = values ?? tensorNumbers(t, 4096);
      if (nums) s.consts.set(p.name, nums);
      if (k()) return true;
      s.vars.delete(p.name);
      s.consts.delete(p.name);
      return false;
    }
    return k();
  }
  if (p instanceof OutputPattern) {
    const prod = v.producer;
    if (!prod) return s.fail(() => `${at(site)}${describeValue(v)} is not produced by a node; expected the output of ${p.node}`);
    if (v.producerIndex !== p.index) {
      return s.fail(() => `${at(site)}${describeValue(v)} is output ${v.producerIndex}, expected output ${p.index} of ${p.node}`);
    }
    return matchNode(p.node, prod, s, k);
  }
  return s.fail(() => 'unknown pattern kind');
}

function matchNode(np: NodePattern, n: Node, s: State, k: K): boolean {
  const bound = s.byPattern.get(np);
  if (bound) return bound === n ? k() : s.fail(() => `${np} is bound to ${describeNode(bound)} but ${describeNode(n)} is found in its place`);
  if (np.opType !== ANY_OP && n.opType !== np.opType) return s.fail(() => `${describeNode(n)} found where ${np} was expected`);
  if (np.domain !== '*') {
    const want = np.domain === 'ai.onnx' ? '' : np.domain;
    const have = n.domain === 'ai.onnx' ? '' : n.domain;
    if (want !== have) return s.fail(() => `${describeNode(n)} is in domain '${have || 'ai.onnx'}', expected '${want || 'ai.onnx'}'`);
  }
  if (s.matched.has(n)) return s.fail(() => `${describeNode(n)} is already matched by another node of the pattern`);
  const o = np.options;
  if (o.numOutputs !== undefined && n.outputs.length !== o.numOutputs) {
    return s.fail(() => `${describeNode(n)} has ${n.outputs.length} outputs, expected ${o.numOutputs}`);
  }
  if (o.attrs) {
    for (const [name, c] of Object.entries(o.attrs)) {
      const r = checkAttr(n, name, c);
      if (r !== true) return s.fail(() => r);
    }
  }
  const np_n = np.inputs.length;
  if (!o.extraInputs) {
    for (let i = np_n; i < n.inputs.length; i++) {
      if (n.inputs[i]) {
        return s.fail(() => `${describeNode(n)} has ${n.inputs.filter(Boolean).length} inputs, the pattern expects ${np_n}`);
      }
    }
  }
  s.byPattern.set(np, n);
  s.matched.add(n);
  s.stack.push(n);
  if (o.as) s.named.set(o.as, n);
  const orders: number[][] = o.commute ? [[0, 1], [1, 0]] : [np.inputs.map((_, i) => i)];
  for (const order of orders) {
    const step = (i: number): boolean => {
      if (i === np_n) return k();
      return matchValue(np.inputs[i]!, n.inputs[order[i]!] ?? null, s, () => step(i + 1), { node: n, index: order[i]! });
    };
    if (step(0)) return true;
  }
  s.byPattern.delete(np);
  s.matched.delete(n);
  s.stack.pop();
  if (o.as) s.named.delete(o.as);
  return false;
}

function checkAttr(n: Node, name: string, c: AttrConstraint): true | string {
  const a = n.attributes.get(name);
  const js = a ? attrToJs(a) : undefined;
  if (typeof c === 'function') {
    const r = c(js, n);
    if (r === true) return true;
    return typeof r === 'string' ? `${describeNode(n)}: ${r}` : `${describeNode(n)}: attribute '${name}' = ${fmtAttr(js)} is not accepted`;
  }
  if (c === undefined) return a ? `${describeNode(n)}: attribute '${name}' must be absent, found ${fmtAttr(js)}` : true;
  if (!a) return `${describeNode(n)}: attribute '${name}' is absent, expected ${fmtAttr(c)}`;
  return sameAttr(js, c) ? true : `${describeNode(n)}: attribute '${name}' is ${fmtAttr(js)}, expected ${fmtAttr(c)}`;
}

function sameAttr(a: unknown, b: unknown): boolean {
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => sameAttr(x, b[i]));
  if (typeof a === 'number' && typeof b === 'number') return a === b || Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(b));
  return a === b;
}

function checkConst(expect: ConstExpect, values: number[], t: Tensor): true | string {
  if (typeof expect === 'function') {
    const r = expect(values, t);
    return r === true ? true : typeof r === 'string' ? r : 'rejected by the constant check';
  }
  if (typeof expect === 'number') {
    // a scalar expectation matches any all-equal tensor (broadcast constants)
    return values.length > 0 && values.every((x) => close(x, expect)) ? true : `expected ${expect}`;
  }
  const want = [...expect];
  return values.length === want.length && values.every((x, i) => close(x, want[i]!)) ? true : `expected ${fmtNumbers(want)}`;
}

function close(a: number, b: number): boolean {
  return a === b || Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(b));
}

export function fmtNumbers(v: readonly number[]): string {
  if (v.length === 1) return String(v[0]);
  const head = v.slice(0, 8).join(', ');
  return `[${head}${v.length > 8 ? `, ... (${v.length})` : ''}]`;
}

function fmtAttr(v: unknown): string {
  if (v === undefined) return 'absent';
  if (Array.isArray(v)) return `[${v.join(', ')}]`;
  if (typeof v === 'string') return `'${v}'`;
  return String(v);
}

function leadingOps(p: PatternValue): string[] {
  if (p instanceof OutputPattern) return [opKey(p.node.opType, p.node.domain)];
  if (p instanceof OrPattern) return p.alternatives.flatMap(leadingOps);
  if (p instanceof ConstPattern) return ['a constant'];
  return ['any value'];
}

function patternText(p: PatternValue): string {
  if (p instanceof OutputPattern) return `the output of ${p.node}`;
  if (p instanceof VarPattern) return `'${p.name}'`;
  if (p instanceof ConstPattern) return p.name ? `constant '${p.name}'` : 'a constant';
  return 'a value';
}

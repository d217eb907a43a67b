/**
 * The pattern IR: what a rule looks for, written with an op builder over pattern
 * variables (after onnxscript's rewriter).
 *
 *   const p = pattern((op) => {
 *     const x = op.var('x');
 *     const scaled = op.or(op.Div(x, op.const('s')), op.Mul(x, op.const('s'), { commute: true }));
 *     return op.Softmax(op.optional(op.Cast(scaled)), { attrs: { axis: -1 }, as: 'softmax' });
 *   });
 *
 * - `op.<OpType>(...inputs, options?)` is a node pattern; options: `domain` ('' by
 *   default, '*' for any), `attrs` (literal values or predicates), `commute` (two-input
 *   ops: try both operand orders), `as` (bind the matched node under a name), `outputs`
 *   (how many outputs the pattern names: then an array is returned), `numOutputs` (the
 *   exact output count the node must have), `extraInputs` (allow inputs the pattern does
 *   not list).
 * - `op.var(name, check?)` matches any value and binds it; the same name twice means
 *   the same value. `op.any()` matches anything without binding.
 * - `op.const(name?, expect?)` matches a constant (initializer or Constant node), with an
 *   optional expected value or predicate over its numbers.
 * - `op.or(a, b, ...)` alternatives, tried in order; `op.optional(node, passthrough = 0)`
 *   is `or(node, node's input #passthrough)`: the node may be absent.
 * - `op.anyOp(options?)` matches a node of any op type and domain, whatever its inputs
 *   (for rules applied at nodes an analysis chose, see the driver's `roots`).
 */
import type { AttributeValue, Node, Tensor, Value } from '../../ir/index.js';
import { AttributeType, bytesToString } from '../../ir/index.js';

/** A plain JS view of an attribute value (what attribute constraints receive). */
export type AttrJs = number | string | number[] | string[] | Tensor | Tensor[] | unknown;

/**
 * Constraint on one attribute: a literal (compared by value; ints and floats as numbers,
 * arrays element-wise), `undefined` meaning "must be absent", or a predicate that returns
 * true, false, or a string saying why it fails. The predicate gets undefined when the
 * attribute is absent (so it can apply the op's default).
 */
export type AttrConstraint = number | string | readonly number[] | readonly string[] | undefined | ((value: AttrJs | undefined, node: Node) => boolean | string);

export interface NodePatternOptions {
  /** Op domain: '' (default ONNX domain, also matches 'ai.onnx'), a domain name, or '*' for any. */
  domain?: string;
  attrs?: Record<string, AttrConstraint>;
  /** Two-input commutative op: try both operand orders. */
  commute?: boolean;
  /** Bind the matched node under this name (Match.node(name)). */
  as?: string;
  /** How many outputs this pattern names (then the builder returns an array of that length). */
  outputs?: number;
  /** The node must have exactly this many outputs. */
  numOutputs?: number;
  /** Accept nodes with more (present) inputs than the pattern lists. Default false. */
  extraInputs?: boolean;
}

export type ValueCheck = (v: Value) => boolean | string;
export type ConstExpect = number | readonly number[] | ((values: number[], tensor: Tensor) => boolean | string);

export abstract class PatternValue {
  abstract readonly kind: 'var' | 'any' | 'const' | 'output' | 'or';
}

export class VarPattern extends PatternValue {
  readonly kind = 'var' as const;
  constructor(
    readonly name: string,
    readonly check?: ValueCheck,
  ) {
    super();
  }
}

export class AnyPattern extends PatternValue {
  readonly kind = 'any' as const;
}

export class ConstPattern extends PatternValue {
  readonly kind = 'const' as const;
  constructor(
    readonly name: string | undefined,
    readonly expect?: ConstExpect,
  ) {
    super();
  }
}

export class OutputPattern extends PatternValue {
  readonly kind = 'output' as const;
  constructor(
    readonly node: NodePattern,
    readonly index: number,
  ) {
    super();
  }
}

export class OrPattern extends PatternValue {
  readonly kind = 'or' as const;
  constructor(
    readonly alternatives: readonly PatternValue[],
    /** Binds the index of the alternative that matched (Match.choice(name)). */
    readonly name?: string,
  ) {
    super();
  }
}

let nodePatternIds = 0;

export class NodePattern {
  readonly id = ++nodePatternIds;
  constructor(
    readonly opType: string,
    readonly domain: string,
    readonly inputs: readonly PatternValue[],
    readonly options: NodePatternOptions,
  ) {}

  toString(): string {
    const d = this.domain && this.domain !== 'ai.onnx' ? `${this.domain}::` : '';
    return `${d}${this.opType}${this.options.as ? ` as '${this.options.as}'` : ''}`;
  }
}

/** The fixed helpers of the op builder (everything else, `op.<OpType>(...)`, is a node pattern). */
export interface PatternOps {
  var(name: string, check?: ValueCheck): VarPattern;
  any(): AnyPattern;
  const(name?: string, expect?: ConstExpect): ConstPattern;
  or(...alternatives: PatternValue[]): OrPattern;
  /** Named alternatives: Match.choice(name) says which one matched. */
  orNamed(name: string, ...alternatives: PatternValue[]): OrPattern;
  optional(node: OutputPattern, passthrough?: number): OrPattern;
  /** A node of any op type and domain, with any inputs (its output `options.outputs` names, or 0). */
  anyOp(options?: Omit<NodePatternOptions, 'domain' | 'commute' | 'extraInputs'>): OutputPattern;
  /** A node pattern for `opType` (the same as `op[opType](...)`). */
  node(opType: string, inputs: PatternValue[], options?: NodePatternOptions): OutputPattern;
  /** A node pattern naming several outputs. */
  nodeOutputs(opType: string, inputs: PatternValue[], options: NodePatternOptions & { outputs: number }): OutputPattern[];
}

/** `op.Softmax(x)`, `op.Add(a, b, { commute: true })`, `op.Split(x, { outputs: 3 })` (an array). */
export interface OpFn {
  (...args: [...PatternValue[], NodePatternOptions & { outputs: number }]): OutputPattern[];
  (...args: (PatternValue | NodePatternOptions)[]): OutputPattern;
}

export type PatternBuilder = PatternOps & Record<string, OpFn>;

/** A compiled pattern: its root value(s) and the node patterns it contains. */
export class Pattern {
  /** Every node pattern reachable from the root, root first. */
  readonly nodePatterns: NodePattern[];
  /** The op types a root node can have (for indexing rules by op). */
  readonly rootOps: ReadonlySet<string>;

  constructor(readonly root: PatternValue) {
    this.nodePatterns = collectNodePatterns(root);
    const ops = rootNodePatterns(root);
    if (!ops.length) {
      throw new TypeError('a pattern must end in an op (its root), not in a variable or constant; e.g. op.Relu(op.var("x"))');
    }
    this.rootOps = new Set(ops.map((n) => opKey(n.opType, n.domain)));
  }

  /** How many node patterns the largest alternative holds (for "closest match" reports). */
  get size(): number {
    return maxNodes(this.root, new Set());
  }
}

/** Builds a pattern from a function over the op builder. */
export function pattern(fn: (op: PatternBuilder) => PatternValue | PatternValue[]): Pattern {
  const r = fn(makeOps());
  const root = Array.isArray(r) ? r[0] : r;
  if (!root) throw new TypeError('the pattern function returned nothing');
  return new Pattern(root);
}

/** The op type of `op.anyOp()` patterns: any op. */
export const ANY_OP = '*';

/** Key used to index rules by root op: 'domain::Op' ('' domain written as plain 'Op'; '*' domain as '*::Op'). */
export function opKey(opType: string, domain: string): string {
  return domain === '' || domain === 'ai.onnx' ? opType : `${domain}::${opType}`;
}

export function nodeOpKey(n: Node): string {
  return opKey(n.opType, n.domain);
}

/** The root node patterns (several when the root is a set of alternatives). */
export function rootNodePatterns(p: PatternValue): NodePattern[] {
  if (p instanceof OutputPattern) return [p.node];
  if (p instanceof OrPattern) return p.alternatives.flatMap(rootNodePatterns);
  return [];
}

function collectNodePatterns(root: PatternValue): NodePattern[] {
  const out: NodePattern[] = [];
  const seen = new Set<NodePattern>();
  const visit = (p: PatternValue): void => {
    if (p instanceof OutputPattern) {
      if (seen.has(p.node)) return;
      seen.add(p.node);
      out.push(p.node);
      for (const i of p.node.inputs) visit(i);
    } else if (p instanceof OrPattern) {
      for (const a of p.alternatives) visit(a);
    }
  };
  visit(root);
  return out;
}

function maxNodes(p: PatternValue, seen: Set<NodePattern>): number {
  if (p instanceof OutputPattern) {
    if (seen.has(p.node)) return 0;
    const s = new Set(seen);
    s.add(p.node);
    let n = 1;
    for (const i of p.node.inputs) {
      const c = maxNodes(i, s);
      n += c;
    }
    return n;
  }
  if (p instanceof OrPattern) return Math.max(0, ...p.alternatives.map((a) => maxNodes(a, seen)));
  return 0;
}

function isOptions(x: unknown): x is NodePatternOptions {
  return typeof x === 'object' && x !== null && !(x instanceof PatternValue);
}

function makeNode(opType: string, inputs: PatternValue[], options: NodePatternOptions = {}): NodePattern {
  for (const [i, v] of inputs.entries()) {
    if (!(v instanceof PatternValue)) throw new TypeError(`pattern op ${opType}: input ${i} is not a pattern value (use op.var(name) for a free input)`);
  }
  if (options.commute && inputs.length !== 2) throw new TypeError(`pattern op ${opType}: commute needs exactly two inputs`);
  return new NodePattern(opType, options.domain ?? '', inputs, options);
}

function makeOps(): PatternBuilder {
  const fixed: PatternOps = {
    var: (name, check) => new VarPattern(name, check),
    any: () => new AnyPattern(),
    const: (name, expect) => new ConstPattern(name, expect),
    or: (...alternatives) => new OrPattern(alternatives),
    orNamed: (name, ...alternatives) => new OrPattern(alternatives, name),
    optional: (node, passthrough = 0) => {
      const input = node.node.inputs[passthrough];
      if (!input) throw new TypeError(`optional(${node.node.opType}): it has no input ${passthrough} to pass through`);
      return new OrPattern([node, input]);
    },
    anyOp: (options = {}) => new OutputPattern(makeNode(ANY_OP, [], { ...options, domain: '*', extraInputs: true }), 0),
    node: (opType, inputs, options = {}) => new OutputPattern(makeNode(opType, inputs, options), 0),
    nodeOutputs: (opType, inputs, options) => {
      const n = makeNode(opType, inputs, options);
      return Array.from({ length: options.outputs }, (_, i) => new OutputPattern(n, i));
    },
  };
  return new Proxy(fixed, {
    get(target, prop) {
      if (typeof prop !== 'string') return undefined;
      if (prop in target) return (target as unknown as Record<string, unknown>)[prop];
      return (...args: (PatternValue | NodePatternOptions)[]) => {
        const last = args[args.length - 1];
        const options = isOptions(last) ? (args.pop() as NodePatternOptions) : {};
        const n = makeNode(prop, args as PatternValue[], options);
        if (options.outputs !== undefined) return Array.from({ length: options.outputs }, (_, i) => new OutputPattern(n, i));
        return new OutputPattern(n, 0);
      };
    },
  }) as PatternBuilder;
}

/** Converts an attribute to the plain value constraints receive. */
export function attrToJs(a: AttributeValue): AttrJs {
  switch (a.type) {
    case AttributeType.INT:
      return Number(a.value);
    case AttributeType.FLOAT:
      return a.value;
    case AttributeType.STRING:
      return bytesToString(a.value);
    case AttributeType.INTS:
      return a.value.map(Number);
    case AttributeType.FLOATS:
      return a.value.slice();
    case AttributeType.STRINGS:
      return a.value.map(bytesToString);
    default:
      return a.value;
  }
}

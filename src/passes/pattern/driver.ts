/**
 * The greedy worklist driver (after MLIR's GreedyPatternRewriteDriver): applies a set
 * of rules until none matches.
 *
 * - Each iteration puts every node on the worklist; a node taken off it is tried
 *   against the rules indexed by its op type; on a match the rule rewrites, and the
 *   nodes it created, the users of the replacement values and the producers of the
 *   erased nodes' inputs go back on the worklist. Iterations repeat until one changes
 *   nothing (`converged: true`) or `maxIterations` / `maxRewrites` is reached
 *   (`converged: false`).
 * - Safety: a match is refused (and the remaining alternatives tried) when a matched
 *   node other than the root has an output used outside the match, or that is a graph
 *   output: those nodes could not be removed, and the rewrite would duplicate work.
 *   After the rewrite only matched nodes left without users are removed.
 * - Provenance: the builder handed to the rewrite tags every node it creates with
 *   metadata 'titanize.rule' = the rule name (and the root, when it is modified in place).
 * - Three kinds of rewrite: a replacing one returns new values for the root's outputs
 *   (the matched nodes left unused go); a wrapping one returns values computed from the
 *   root's own outputs (LoRA's `out + delta`): the readers of the root, except the nodes
 *   the rewrite created, read the replacement and the root stays, with its name and as the
 *   graph output it may be (insert after it with `builder.setInsertionPointAfter(root)`);
 *   an in-place one changes the root's attributes
 *   or inputs and returns the root's outputs unchanged. A rule must stop matching what it
 *   produced (wrapping and in-place rules especially), or the driver does not converge.
 * - Scope: `roots` applies the rules at those nodes only (MLIR's applyOpPatternsGreedily
 *   with strict mode ExistingOps): the nodes a rewrite creates are not tried. Passes that
 *   rewrite what an analysis selected (the attention sites' projections) use it.
 * - Debug: `debug: 'rule-name'` traces that rule and returns, in `debug`, the closest
 *   partial match and why it failed (see tracer.ts).
 */
import { Builder, Graph, type Model, type Node, RULE_KEY, TitanizeError, UserInputError, type Value, describeNode, setMetadata } from '../../ir/index.js';
import type { Pass } from '../pass.js';
import type { Match } from './matcher.js';
import { ANY_OP, nodeOpKey } from './pattern.js';
import { type Rule, matchRule } from './rule.js';
import { RuleTracer, type TraceReport } from './tracer.js';

export interface DriverOptions {
  /** Full sweeps over the graph (default 10). */
  maxIterations?: number;
  /** Total rewrites before giving up (default max(10 000, 10 × node count)). */
  maxRewrites?: number;
  /** Name of a rule to trace: the result's `debug` says where it matched or how close it came. */
  debug?: string;
  /** Called after each rewrite. */
  onRewrite?(event: RewriteEvent): void;
  /** Try the rules at these nodes only (in this order), not at the nodes rewrites create. */
  roots?: Iterable<Node>;
}

export interface RewriteEvent {
  rule: string;
  /** The root node, described ("Op 'name'"). */
  root: string;
  /** The root node itself (no longer in the graph when it was replaced). */
  rootNode: Node;
  created: Node[];
  erased: string[];
}

export interface DriverResult {
  /** True when the last sweep found nothing to rewrite. */
  converged: boolean;
  /** Sweeps run. */
  iterations: number;
  /** Rewrites applied in total. */
  rewrites: number;
  /** Rewrites per rule name. */
  applied: Record<string, number>;
  /** Why the driver stopped before converging. */
  stopReason?: string;
  /** With `options.debug`: the trace of that rule. */
  debug?: TraceReport;
}

/** A rule's rewrite failed or returned something the driver cannot use. */
export class RewriteError extends TitanizeError {
  constructor(
    readonly rule: string,
    readonly root: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`rule '${rule}' at ${root}: ${detail}`, options);
  }
}

class RuleIndex {
  private readonly byKey = new Map<string, Rule<any>[]>();
  private readonly anyDomain = new Map<string, Rule<any>[]>();

  constructor(rules: readonly Rule<any>[]) {
    const names = new Set<string>();
    for (const r of rules) {
      if (names.has(r.name)) throw new TypeError(`two rules are named '${r.name}'; rule names must be unique (they are stamped on nodes)`);
      names.add(r.name);
      for (const key of r.pattern.rootOps) {
        const [map, k] = key.startsWith('*::') ? [this.anyDomain, key.slice(3)] : [this.byKey, key];
        const list = map.get(k) ?? [];
        if (!list.includes(r)) list.push(r);
        map.set(k, list);
      }
    }
  }

  rulesFor(n: Node): Rule<any>[] {
    const lists = [this.byKey.get(nodeOpKey(n)), this.anyDomain.get(n.opType), this.anyDomain.get(ANY_OP)].filter((l) => l !== undefined);
    return lists.length <= 1 ? (lists[0] ?? []) : lists.flat();
  }
}

/** Applies `rules` to the main graph of `target` (or to the graph itself) until nothing matches. */
export function applyRules(target: Model | Graph, rules: readonly Rule<any>[], options: DriverOptions = {}): DriverResult {
  const graph = target instanceof Graph ? target : target.graph;
  const index = new RuleIndex(rules);
  const maxIterations = options.maxIterations ?? 10;
  const maxRewrites = options.maxRewrites ?? Math.max(10_000, 10 * graph.size);
  const debugRule = options.debug ? rules.find((r) => r.name === options.debug) : undefined;
  if (options.debug && !debugRule) throw new TypeError(`debug: no rule is named '${options.debug}' (rules: ${rules.map((r) => r.name).join(', ')})`);
  const tracer = debugRule ? new RuleTracer(debugRule) : undefined;

  const applied: Record<string, number> = {};
  let rewrites = 0;
  let iterations = 0;
  let converged = false;
  let stopReason: string | undefined;

  const scope = options.roots ? [...options.roots] : null;
  const inScope = scope ? new Set(scope) : null;
  sweeps: for (let it = 0; it < maxIterations; it++) {
    iterations++;
    let changed = false;
    const queue: Node[] = [];
    const queued = new Set<Node>();
    const push = (n: Node | null | undefined): void => {
      if (n && n.graph === graph && !queued.has(n) && (!inScope || inScope.has(n))) {
        queued.add(n);
        queue.push(n);
      }
    };
    for (const n of scope ?? graph) push(n);
    for (let qi = 0; qi < queue.length; qi++) {
      const n = queue[qi]!;
      queued.delete(n);
      if (n.graph !== graph) continue;
      for (const rule of index.rulesFor(n)) {
        const trace = tracer !== undefined && rule === debugRule;
        const { match, failure } = matchRule(rule, n, { trace, extraAccept: isolationCheck });
        if (!match) {
          if (trace) tracer!.recordFailure(n, failure);
          continue;
        }
        if (trace) tracer!.recordMatch(n);
        const event = rewrite(graph, rule, match);
        rewrites++;
        applied[rule.name] = (applied[rule.name] ?? 0) + 1;
        if (event.created.length || event.erased.length || event.replaced || event.inPlace) changed = true;
        options.onRewrite?.({ rule: rule.name, root: event.root, rootNode: n, created: event.created, erased: event.erasedNames });
        for (const c of event.created) push(c);
        for (const v of event.replacements) for (const c of v.consumers()) push(c);
        for (const p of event.producers) push(p);
        if (rewrites >= maxRewrites) {
          stopReason = `stopped after ${rewrites} rewrites (maxRewrites); the rules may rewrite each other's results forever`;
          break sweeps;
        }
        break; // the node was (most likely) replaced: go on with the worklist
      }
    }
    if (!changed) {
      converged = true;
      break;
    }
  }
  if (!converged && !stopReason) stopReason = `the graph still changed in sweep ${iterations} (maxIterations = ${maxIterations})`;
  const result: DriverResult = { converged, iterations, rewrites, applied };
  if (stopReason) result.stopReason = stopReason;
  if (tracer) result.debug = tracer.report();
  return result;
}

/**
 * Refuses matches whose inner nodes (all but the root) have an output that is a graph
 * output or is read by a node outside the match.
 */
export function isolationCheck(m: Match<any>): string | null {
  const inside = new Set(m.nodes);
  for (const n of m.nodes) {
    if (n === m.root) continue;
    for (const out of n.outputs) {
      if (out.isGraphOutput()) return `intermediate '${out.name}' of ${describeNode(n)} is a graph output; the match cannot be replaced`;
      for (const u of out.uses()) {
        if (!inside.has(u.node)) {
          return `intermediate '${out.name}' of ${describeNode(n)} is also used by ${describeNode(u.node)}, outside the match; the matched nodes cannot be removed`;
        }
      }
    }
  }
  return null;
}

interface AppliedRewrite {
  root: string;
  created: Node[];
  erased: Node[];
  erasedNames: string[];
  replacements: Value[];
  producers: Node[];
  replaced: boolean;
  /** The rewrite returned the root's own outputs: it changed the root in place. */
  inPlace: boolean;
}

function rewrite(graph: Graph, rule: Rule<any>, match: Match<any>): AppliedRewrite {
  const root = match.root;
  const rootName = describeNode(root);
  const b = new Builder(graph, { before: root, tag: rule.name });
  let out;
  try {
    out = rule.rewrite(match, b);
  } catch (e) {
    undo(graph, b.created);
    // a problem with the user's model or options stays what it is
    if (e instanceof UserInputError) throw e;
    throw new RewriteError(rule.name, rootName, `rewrite threw: ${(e as Error).message}`, { cause: e });
  }
  const reps: (Value | null)[] = Array.isArray(out) ? [...out] : [out as Value];
  if (reps.length > root.outputs.length) {
    undo(graph, b.created);
    throw new RewriteError(rule.name, rootName, `rewrite returned ${reps.length} values for ${root.outputs.length} outputs`);
  }
  // validate before changing anything
  for (let i = 0; i < root.outputs.length; i++) {
    const old = root.outputs[i]!;
    const rep = reps[i] ?? null;
    if (!rep && (old.numUses > 0 || old.isGraphOutput())) {
      undo(graph, b.created);
      throw new RewriteError(rule.name, rootName, `rewrite returned no replacement for output ${i} ('${old.name}'), which is still used`);
    }
  }
  const replacements: Value[] = [];
  let replaced = false;
  const created = new Set(b.created);
  const inPlace = root.outputs.every((o, i) => (reps[i] ?? null) === o || (!reps[i] && o.numUses === 0 && !o.isGraphOutput())) && reps.some((r) => r !== null);
  if (inPlace) setMetadata(root.metadataProps, RULE_KEY, rule.name);
  const named = new Set<Value>();
  for (let i = 0; i < root.outputs.length; i++) {
    const old = root.outputs[i]!;
    let rep = reps[i] ?? null;
    if (!rep || rep === old) continue;
    // a wrapping rewrite reads the value it replaces: that value stays (under its name, and
    // as the graph output it may be); only the nodes that read it move to the replacement
    const wrapped = rule.wraps === true || old.uses().some((u) => created.has(u.node));
    if (!wrapped && (old.isGraphOutput() || rule.keepNames)) {
      // a graph output keeps its name (with keepNames every replaced value does): the
      // replacement takes it (through an Identity when the replacement existed before, or
      // already took the name of another output)
      if ((old.isGraphOutput() && (!rep.producer || !created.has(rep.producer))) || named.has(rep)) {
        rep = b.op('Identity', [rep]);
        created.add(rep.producer!);
      }
      if (rep.producer && created.has(rep.producer) && old.name) {
        const name = old.name;
        old.name = graph.uniqueName(`${name}_replaced`);
        rep.name = name;
        named.add(rep);
      }
      if (old.type && !rep.type) rep.type = old.type;
    }
    for (const { node, index } of old.uses()) if (!created.has(node)) node.setInput(index, rep);
    if (old.isGraphOutput() && !wrapped) graph.replaceOutputValue(old, rep);
    replacements.push(rep);
    replaced = true;
  }
  // remove matched nodes left without users (inner nodes first become dead after the root;
  // a root changed in place stays, even unused: removing dead code is not a rule's job)
  const erased: Node[] = [];
  const erasedNames: string[] = [];
  const producers = new Set<Node>();
  let progress = true;
  while (progress) {
    progress = false;
    for (const n of match.nodes) {
      if (n.graph !== graph || (inPlace && n === root)) continue;
      if (n.outputs.every((o) => o.numUses === 0 && !o.isGraphOutput())) {
        for (const v of n.inputs) if (v?.producer) producers.add(v.producer);
        graph.remove(n);
        erased.push(n);
        erasedNames.push(n.name);
        progress = true;
      }
    }
  }
  // Constant nodes that only fed the erased nodes (matched by op.const) go too
  for (const p of producers) {
    if (p.graph === graph && p.opType === 'Constant' && p.outputs.every((o) => o.numUses === 0 && !o.isGraphOutput())) {
      graph.remove(p);
      erased.push(p);
      erasedNames.push(p.name);
    }
  }
  return { root: rootName, created: [...b.created], erased, erasedNames, replacements, producers: [...producers].filter((p) => p.graph === graph), replaced, inPlace };
}

function undo(graph: Graph, created: Node[]): void {
  for (let i = created.length - 1; i >= 0; i--) {
    const n = created[i]!;
    if (n.graph === graph) graph.remove(n, { safe: false });
  }
}

/**
 * Wraps a rule set as an in-place Pass: it runs the driver and reports `modified` when
 * any rule applied. Fails (PassError through the manager) when the driver does not
 * converge, unless `allowNonConvergence` is set.
 */
export function rewritePass(name: string, rules: readonly Rule<any>[], options: DriverOptions & { allowNonConvergence?: boolean } = {}): Pass {
  return {
    name,
    inPlace: true,
    run(model: Model) {
      const r = applyRules(model, rules, options);
      if (!r.converged && !options.allowNonConvergence) {
        throw new Error(`the rewrite rules did not converge: ${r.stopReason ?? 'unknown reason'}`);
      }
      return { model, modified: r.rewrites > 0 };
    },
  };
}

/**
 * Debug mode for rules: when a rule does not apply where you expected it to, the tracer
 * reports the closest partial match (the attempt that matched the most pattern nodes)
 * and why it failed, naming the node.
 *
 *   const report = traceRule(myRule, model);
 *   console.log(formatTrace(report));
 *   // rule 'fuse-gelu' did not match (3 candidates); closest at node '/mlp/Mul_1' (Mul):
 *   //   matched 4 of 6 pattern nodes [/mlp/Mul_1, /mlp/Add, /mlp/Erf, /mlp/Div]
 *   //   failed: constant '/mlp/Constant_output_0' = 2: expected 1.4142135
 */
import { Graph, type Model, type Node, describeNode } from '../../ir/index.js';
import type { MatchFailure } from './matcher.js';
import { ANY_OP, nodeOpKey } from './pattern.js';
import { type Rule, matchRule } from './rule.js';

export interface ClosestMatch {
  /** The root node of the closest attempt. */
  root: string;
  rootOp: string;
  /** Pattern nodes matched before the failure (the whole pattern when `refused`). */
  nodesMatched: number;
  /** Node patterns in the largest alternative of the pattern. */
  patternNodes: number;
  /** Names of the graph nodes matched, root first. */
  matchedNodes: string[];
  /** Why it failed, naming the node. */
  reason: string;
  /** True when the structure matched and the check (or the driver's safety check) refused it. */
  refused: boolean;
}

export interface TraceReport {
  rule: string;
  /** Nodes tried as the root (nodes with one of the pattern's root op types). */
  candidates: number;
  /** Roots where the rule matched (or, from the driver, was applied). */
  matched: string[];
  /** The closest failed attempt; null when every candidate matched or there was none. */
  closest: ClosestMatch | null;
}

/** Collects failures of one rule across attempts and keeps the closest. */
export class RuleTracer {
  candidates = 0;
  readonly matched: string[] = [];
  private best: { root: Node; failure: MatchFailure; score: number } | null = null;

  constructor(readonly rule: Rule<any>) {}

  recordMatch(root: Node): void {
    this.candidates++;
    this.matched.push(root.name || describeNode(root));
  }

  recordFailure(root: Node, failure: MatchFailure | null): void {
    this.candidates++;
    if (!failure) return;
    const score = failure.nodesMatched + (failure.refused ? 0.5 : 0);
    if (!this.best || score > this.best.score) this.best = { root, failure, score };
  }

  report(): TraceReport {
    const b = this.best;
    return {
      rule: this.rule.name,
      candidates: this.candidates,
      matched: [...this.matched],
      closest: b
        ? {
            root: b.root.name,
            rootOp: nodeOpKey(b.root),
            nodesMatched: b.failure.nodesMatched,
            patternNodes: this.rule.pattern.size,
            matchedNodes: b.failure.matchedNodes.map((n) => n.name || describeNode(n)),
            reason: b.failure.reason,
            refused: b.failure.refused,
          }
        : null,
    };
  }
}

/**
 * Tries `rule` at every node of the graph that has one of its root op types (nothing is
 * rewritten) and reports where it matched and, otherwise, the closest attempt.
 */
export function traceRule(rule: Rule<any>, target: Model | Graph, options: { nodes?: Iterable<Node> } = {}): TraceReport {
  const graph = target instanceof Graph ? target : target.graph;
  const tracer = new RuleTracer(rule);
  const wildcard = [...rule.pattern.rootOps].filter((k) => k.startsWith('*::')).map((k) => k.slice(3));
  for (const n of options.nodes ?? graph) {
    if (!rule.pattern.rootOps.has(nodeOpKey(n)) && !wildcard.includes(n.opType) && !wildcard.includes(ANY_OP)) continue;
    const { match, failure } = matchRule(rule, n, { trace: true });
    if (match) tracer.recordMatch(n);
    else tracer.recordFailure(n, failure);
  }
  return tracer.report();
}

/** A readable multi-line form of a trace report. */
export function formatTrace(r: TraceReport): string {
  if (r.candidates === 0) return `rule '${r.rule}': no candidate root node (none has the pattern's root op type)`;
  const lines: string[] = [];
  if (r.matched.length) lines.push(`rule '${r.rule}' matched at ${r.matched.length} of ${r.candidates} candidates: ${r.matched.slice(0, 10).join(', ')}${r.matched.length > 10 ? ', ...' : ''}`);
  else lines.push(`rule '${r.rule}' did not match (${r.candidates} candidate${r.candidates === 1 ? '' : 's'})`);
  const c = r.closest;
  if (c) {
    lines.push(`  closest at node '${c.root}' (${c.rootOp}): matched ${c.nodesMatched} of ${c.patternNodes} pattern nodes [${c.matchedNodes.join(', ')}]`);
    lines.push(`  ${c.refused ? 'refused' : 'failed'}: ${c.reason}`);
  }
  return lines.join('\n');
}


/**
 * Rules: a pattern, an optional check, and a rewrite.
 *
 *   const foldDoubleNeg = defineRule({
 *     name: 'fold-double-neg',
 *     pattern: (op) => op.Neg(op.Neg(op.var('x'))),
 *     rewrite: (m) => m.value('x'),
 *   });
 *
 * The check runs after the structure matched and returns derived values as bindings
 * (`ok({ heads: 4 })`) or a reason (`fail('...')`); it never stores state on the rule,
 * so a rule can be applied to many sites (and many graphs) at once. The rewrite gets
 * the match (with `match.bindings`) and an op Builder that inserts before the root and
 * stamps the rule name into the metadata of every node it creates; it returns the
 * values that replace the root's outputs.
 */
import type { Builder, Node, Value } from '../../ir/index.js';
import { type Match, type MatchFailure, matchPattern } from './matcher.js';
import { Pattern, type PatternBuilder, type PatternValue, pattern as buildPattern } from './pattern.js';

export type CheckResult<B = Record<string, unknown>> = { ok: true; bindings?: B } | { ok: false; reason: string };

/** Replacement for the root's outputs: one value (output 0) or one per output (null: that output must be unused). */
export type RewriteOutput = Value | ReadonlyArray<Value | null>;

export interface Rule<B = Record<string, unknown>> {
  readonly name: string;
  readonly pattern: Pattern;
  /** The replacements take the names of the values they replace (graph outputs always do). */
  readonly keepNames?: boolean;
  /**
   * The rewrite wraps its root: the root's outputs stay as they are (their names, the graph
   * outputs they are) and only the nodes reading them read the replacements. Implied for an
   * output the rewrite's own nodes read.
   */
  readonly wraps?: boolean;
  check?(match: Match<B>): CheckResult<B>;
  rewrite(match: Match<B>, builder: Builder): RewriteOutput;
}

export interface RuleSpec<B> {
  name: string;
  pattern: Pattern | ((op: PatternBuilder) => PatternValue | PatternValue[]);
  keepNames?: boolean;
  wraps?: boolean;
  check?(match: Match<B>): CheckResult<B>;
  rewrite(match: Match<B>, builder: Builder): RewriteOutput;
}

/** Builds a rule (the pattern may be given as a function over the op builder). */
export function defineRule<B = Record<string, unknown>>(spec: RuleSpec<B>): Rule<B> {
  if (!spec.name) throw new TypeError('a rule needs a name (it is stamped on the nodes it creates)');
  const p = spec.pattern instanceof Pattern ? spec.pattern : buildPattern(spec.pattern);
  const rule: Rule<B> = { name: spec.name, pattern: p, rewrite: spec.rewrite, ...(spec.keepNames ? { keepNames: true } : {}), ...(spec.wraps ? { wraps: true } : {}) };
  if (spec.check) (rule as { check?: RuleSpec<B>['check'] }).check = spec.check;
  return Object.freeze(rule);
}

/** A successful check, with derived values. */
export function ok<B>(bindings?: B): CheckResult<B> {
  return bindings === undefined ? { ok: true } : { ok: true, bindings };
}

/** A failed check, with the reason (name the node: it is shown to users). */
export function fail(reason: string): { ok: false; reason: string } {
  return { ok: false, reason };
}

export interface RuleMatchOutcome<B> {
  match: Match<B> | null;
  failure: MatchFailure | null;
}

/**
 * Matches a rule's pattern at `node` and runs its check (the structure is backtracked
 * into when the check refuses). `extraAccept` adds a further condition (the driver uses
 * it to refuse matches it could not safely rewrite).
 */
export function matchRule<B>(
  rule: Rule<B>,
  node: Node,
  options: { trace?: boolean; extraAccept?: (m: Match<B>) => string | null } = {},
): RuleMatchOutcome<B> {
  const outcome = matchPattern(rule.pattern, node, {
    trace: options.trace,
    accept: (m) => {
      const mb = m as Match<B>;
      if (rule.check) {
        let r: CheckResult<B>;
        try {
          r = rule.check(mb);
        } catch (e) {
          return `check of rule '${rule.name}' threw: ${(e as Error).message}`;
        }
        if (!r.ok) return r.reason;
        mb.bindings = (r.bindings ?? {}) as B;
      }
      return options.extraAccept ? options.extraAccept(mb) : null;
    },
  });
  return { match: outcome.match as Match<B> | null, failure: outcome.failure };
}

/** Options of `convert`, their defaults (TPTT's), and validation with user-facing messages. */
import { UserInputError } from '../../ir/index.js';
import { LIZA_RULES, type LizaRule } from '../../ops/index.js';

export type ConvertTarget = 'ort' | 'portable' | 'onnx27';
export const CONVERT_TARGETS: readonly ConvertTarget[] = ['ort', 'portable', 'onnx27'];

export interface ConvertOptions {
  /** Memory rule (default delta_product, as TPTT). */
  rule?: LizaRule;
  /** Householder steps per token for the *_product rules (default 2). */
  order?: number;
  /** Initial gate value μ: 0 keeps the original model, 1 is purely linear (default 0.5). */
  mu?: number;
  /** Sliding window L for the softmax branch (default none). */
  window?: number;
  /** LoRA rank on the q, k, v and output projections (default none). */
  loraRank?: number;
  /** LoRA α (default = rank, i.e. scale 1). */
  loraAlpha?: number;
  /**
   * Which projections get LoRA adapters: 'attention' (q, k, v and output projections of the
   * converted layers; default) or 'all' (also every other MatMul/Gemm with its own 2-D
   * weight initializer whose output stays inside the graph: MLPs; not a graph-output head
   * or a tied weight).
   */
  loraTargets?: 'attention' | 'all';
  /** Seed for LoRA A initialisation. */
  seed?: number;
  /** Layer indices to convert (default all). */
  layers?: number[];
  /** Lowering at the end (default 'ort'). */
  target?: ConvertTarget;
  /** LiZA chunk size (default 64; results do not depend on it). */
  chunkSize?: number;
  /** Upper bound on tokens per call for the Scan-free function body (default 32768). */
  maxSeqLen?: number;
  /**
   * KV-cache exports: carry LiZA's state and token window as recurrent inputs/outputs
   * (past_key_values.{i}.state/window ↔ present.{i}.state/window) and drop (μ = 1) or cut
   * (window) the KV cache. Default true; false leaves LiZA stateless across calls.
   */
  state?: boolean;
  /** Verify the model after each pass (default true). */
  verify?: boolean;
  /** Also convert cross-attention sites (default false: they stay softmax attention). */
  cross?: boolean;
  /**
   * With `cross`: compute a cross memory's states once per encoder output. A graph that
   * projects the encoder output exports them (`…encoder.memory` beside `…encoder.key`); a
   * graph with cached cross keys and values reads them as an input instead of rebuilding
   * them at every call (and at μ = 1 no longer needs the cached keys and values).
   */
  crossState?: boolean;
  /** Refuse sites whose mask or bias the linear branch cannot express (default false: convert and report them). */
  strict?: boolean;
  /** Progress callback: (done, total, what). */
  onProgress?: (done: number, total: number, what: string) => void;
}

export interface ResolvedConvertOptions {
  rule: LizaRule;
  order: number;
  mu: number;
  window: number | undefined;
  loraRank: number | undefined;
  loraAlpha: number | undefined;
  loraTargets: 'attention' | 'all';
  seed: number;
  layers: number[] | undefined;
  target: ConvertTarget;
  chunkSize: number;
  maxSeqLen: number;
  state: boolean;
  verify: boolean;
  cross: boolean;
  crossState: boolean;
  strict: boolean;
}

export function resolveConvertOptions(o: ConvertOptions): ResolvedConvertOptions {
  const rule = o.rule ?? 'delta_product';
  if (!LIZA_RULES.includes(rule)) throw new UserInputError(`unknown rule '${rule}'; expected one of ${LIZA_RULES.join(', ')}`);
  const product = rule.endsWith('_product');
  const order = o.order ?? (product ? 2 : 1);
  if (!Number.isInteger(order) || order < 1) throw new UserInputError(`options.order must be a positive integer, got ${order}`);
  if (!product && order !== 1) throw new UserInputError(`options.order = ${order} needs a *_product rule (got options.rule = ${rule})`);
  const mu = o.mu ?? 0.5;
  if (!(mu >= 0 && mu <= 1)) throw new UserInputError(`options.mu must be in [0, 1], got ${mu}`);
  const target = o.target ?? 'ort';
  if (!CONVERT_TARGETS.includes(target)) throw new UserInputError(`unknown target '${target}'; expected one of ${CONVERT_TARGETS.join(', ')}`);
  if (o.window !== undefined && (!Number.isInteger(o.window) || o.window < 1)) throw new UserInputError(`options.window must be a positive integer, got ${o.window}`);
  if (o.window !== undefined && mu === 1) throw new UserInputError('options.window limits the softmax branch, and options.mu = 1 removes it: drop one of them');
  if (o.loraRank !== undefined && (!Number.isInteger(o.loraRank) || o.loraRank < 1)) throw new UserInputError(`options.loraRank must be a positive integer, got ${o.loraRank}`);
  if (o.loraAlpha !== undefined && o.loraRank === undefined) throw new UserInputError('options.loraAlpha needs options.loraRank');
  if (o.loraTargets !== undefined && o.loraRank === undefined) throw new UserInputError('options.loraTargets needs options.loraRank');
  if (o.loraTargets !== undefined && o.loraTargets !== 'attention' && o.loraTargets !== 'all') {
    throw new UserInputError(`options.loraTargets must be 'attention' or 'all', got '${o.loraTargets}'`);
  }
  if (o.crossState && !o.cross) throw new UserInputError('options.crossState needs options.cross (it carries the states of cross-attention memories)');
  const chunkSize = o.chunkSize ?? 64;
  if (!Number.isInteger(chunkSize) || chunkSize < 1) throw new UserInputError(`options.chunkSize must be a positive integer, got ${chunkSize}`);
  return {
    rule,
    order,
    mu,
    window: o.window,
    loraRank: o.loraRank,
    loraAlpha: o.loraAlpha,
    loraTargets: o.loraTargets ?? 'attention',
    seed: o.seed ?? 0,
    layers: o.layers,
    target,
    chunkSize,
    maxSeqLen: o.maxSeqLen ?? 32768,
    state: o.state ?? true,
    verify: o.verify ?? true,
    cross: o.cross ?? false,
    crossState: o.crossState ?? false,
    strict: o.strict ?? false,
  };
}

/** Parses a layer list such as "0,2-5" into sorted unique indices. */
export function parseLayers(spec: string): number[] {
  const out = new Set<number>();
  for (const part of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new UserInputError(`options.layers: '${part}' is not a layer index or range (e.g. 0,2-5)`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new UserInputError(`options.layers: range '${part}' is backwards`);
    for (let i = a; i <= b; i++) out.add(i);
  }
  if (!out.size) throw new UserInputError('options.layers is empty');
  return [...out].sort((x, y) => x - y);
}

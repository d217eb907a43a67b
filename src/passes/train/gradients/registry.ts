/**
 * The gradient rule registry: one small rule per ONNX op (as onnxruntime's gradient
 * builder and PyTorch's derivatives.yaml have), each emitting plain ONNX ops, so that the
 * gradient graph runs on every execution provider. A rule receives the gradients of the
 * node's outputs (null where nothing downstream needs one) and which input gradients are
 * needed, and returns one gradient (or null) per input.
 */
import { DataType } from '../../../ir/dtype.js';
import type { Node } from '../../../ir/node.js';
import type { Value } from '../../../ir/value.js';
import type { Emitter } from '../../../ops/emit.js';

/** What autodiff knows about a value: its rank and element type, and the dims seen in probe runs. */
export interface ValueInfo {
  rank: number;
  dtype: DataType;
  /**
   * Concrete dims in each probe run (runs at different batch and sequence sizes). Rules
   * use them only to skip work that is provably a no-op in every run (a broadcast over no
   * axis, a slice bound inside the dim), never as the shape itself.
   */
  dims?: number[][];
}

export interface GradContext {
  readonly e: Emitter;
  /** Default-domain opset of the graph (rules pick opset-appropriate forms). */
  readonly opset: number;
  /** Rank of a value (throws a located error when unknown). */
  rank(v: Value): number;
  /** Element type of a value, when known. */
  dtype(v: Value): DataType | undefined;
  /** Dims of a value in each probe run, when known (see ValueInfo.dims). */
  dims(v: Value): number[][] | undefined;
  /**
   * Sums a gradient over the axes along which `like` was broadcast; result has like's
   * shape. Ranks default to the recorded ones (g: the differentiated node's output rank).
   */
  unbroadcast(g: Value, like: Value, ranks?: { g?: number; like?: number }): Value;
  /** Float zeros with the shape of `v`. */
  zerosLike(v: Value): Value;
}

/**
 * One op's rule. `dy[i]` is the gradient of output i (null: not needed downstream; at
 * least one is present); `needs[i]` whether input i's gradient is wanted. Returns input
 * gradients in input order (null where not needed or not differentiable).
 */
export type GradRule = (cx: GradContext, node: Node, dy: readonly (Value | null)[], needs: readonly boolean[]) => (Value | null)[];

interface Entry {
  rule: GradRule;
  /** Inputs through which a gradient can flow (default: all). */
  inputs?: readonly number[];
}

const rules = new Map<string, Entry>();

/** Ops through which no gradient flows (integer/boolean results, shapes, constants). */
export const NON_DIFFERENTIABLE = new Set([
  'Shape',
  'Size',
  'Equal',
  'Less',
  'LessOrEqual',
  'Greater',
  'GreaterOrEqual',
  'Not',
  'And',
  'Or',
  'Xor',
  'IsNaN',
  'IsInf',
  'ArgMax',
  'ArgMin',
  'NonZero',
  'ConstantOfShape',
  'Constant',
  'Range',
  'OneHot',
  'Mod',
  'Floor',
  'Ceil',
  'Round',
  'Sign',
  'EyeLike',
  'RandomNormal',
  'RandomUniform',
  'RandomNormalLike',
  'RandomUniformLike',
  'Bernoulli',
]);

function key(opType: string, domain: string): string {
  return `${domain}::${opType}`;
}

export interface RegisterOptions {
  /** Inputs through which a gradient can flow (default all); the others are never differentiated. */
  inputs?: readonly number[];
  domain?: string;
}

/** Registers the rule of `opType`. Later registrations replace earlier ones. */
export function registerGradient(opType: string, rule: GradRule, options: RegisterOptions = {}): void {
  rules.set(key(opType, options.domain ?? ''), { rule, inputs: options.inputs });
}

function entry(node: Node): Entry | undefined {
  return rules.get(key(node.opType, node.domain === 'ai.onnx' ? '' : node.domain));
}

export function gradientRule(node: Node): GradRule | undefined {
  return entry(node)?.rule;
}

/** Whether a gradient can flow through input `i` of `node` (true for ops without a rule: the error comes later). */
export function isDifferentiableInput(node: Node, i: number): boolean {
  const inputs = entry(node)?.inputs;
  return !inputs || inputs.includes(i);
}

/**
 * Quantizing ops whose integer outputs still carry a gradient, straight through (the
 * straight-through estimator): DynamicQuantizeLinear → MatMulInteger → Cast back to float
 * differentiates as the float product x · W_deq. Their rules make float gradients.
 */
const STRAIGHT_THROUGH = new Set(['DynamicQuantizeLinear', 'MatMulInteger']);

export function isStraightThrough(node: Node): boolean {
  return (node.domain === '' || node.domain === 'ai.onnx') && STRAIGHT_THROUGH.has(node.opType);
}

export function isNonDifferentiable(node: Node): boolean {
  return (node.domain === '' || node.domain === 'ai.onnx') && NON_DIFFERENTIABLE.has(node.opType);
}

/** The op types that have a rule (for docs and error messages). */
export function registeredGradients(): string[] {
  return [...rules.keys()].map((k) => k.replace(/^::/, '')).sort();
}

/** A scalar constant with the element type of `like` (float32 unless it is known to differ). */
export function constLike(cx: GradContext, like: Value, x: number): Value {
  const t = cx.dtype(like);
  return t === undefined || t === DataType.FLOAT ? cx.e.f(x) : cx.e.cast(cx.e.f(x), t);
}

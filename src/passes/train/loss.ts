/**
 * Training objectives, appended to the training forward as standard ops (so autodiff
 * differentiates them like the rest). Every objective is a weighted mean over token
 * positions with weights `label_weights` [B, T] (0 for padding and for positions not to
 * count), so padded batches train only on real tokens.
 * - `lm`: next-token cross-entropy of logits [B, T, V] against `labels` [B, T] (int64; the
 *   caller shifts them: labels[t] is the token after position t);
 * - `distill`: KL(teacher ‖ model) per position, teacher logits fed as `teacher_logits`;
 * - `transfer`: for every gate mix, the mean squared difference between the LiZA output and
 *   the RMS-normalised softmax attention output (the target, no gradient through it),
 *   averaged over layers: LoLCATs-style attention transfer, a first stage before `lm`.
 */
import { Builder, DataType, type Graph, UserInputError, Value, tensorType } from '../../ir/index.js';
import { Emitter } from '../../ops/emit.js';
import type { GateMix } from './forward.js';

export type Objective = 'lm' | 'distill' | 'transfer';
export const OBJECTIVES: readonly Objective[] = ['lm', 'distill', 'transfer'];

export const LABELS_INPUT = 'labels';
export const WEIGHTS_INPUT = 'label_weights';
export const TEACHER_INPUT = 'teacher_logits';
export const LOSS_OUTPUT = 'loss';

export interface LossGraph {
  loss: Value;
  /** Values the gradient must not flow through (targets). */
  stopGradient: Set<Value>;
  /** Extra graph inputs the objective reads. */
  inputs: string[];
}

/** Σ w·x / max(Σ w, 1) over [B, T]. */
function weightedMean(e: Emitter, x: Value, w: Value): Value {
  return e.div(e.reduceSum(e.mul(x, w), [0, 1], false), e.op('Max', [e.reduceSum(w, [0, 1], false), e.f(1)]));
}

export function appendLoss(graph: Graph, objective: Objective, logits: Value, mixes: readonly GateMix[]): LossGraph {
  const e = new Emitter(new Builder(graph, { tag: 'loss', prefix: 'loss/' }));
  const w = graph.addInput(new Value(WEIGHTS_INPUT, tensorType(DataType.FLOAT, ['batch_size', 'sequence_length'])));
  const stopGradient = new Set<Value>();
  let loss: Value;
  const inputs = [WEIGHTS_INPUT];
  if (objective === 'lm') {
    const labels = graph.addInput(new Value(LABELS_INPUT, tensorType(DataType.INT64, ['batch_size', 'sequence_length'])));
    inputs.push(LABELS_INPUT);
    const logp = e.op('LogSoftmax', [logits], { axis: -1 });
    // one-hot rather than a gather: its gradient is a product, not a scatter over [B, T, V]
    const depth = e.op('Shape', [logits], { start: -1 });
    const onehot = e.op('OneHot', [labels, depth, e.floats([0, 1], [2], 'off_on')], { axis: -1 });
    const nll = e.neg(e.reduceSum(e.mul(logp, onehot), [-1], false));
    loss = weightedMean(e, nll, w);
  } else if (objective === 'distill') {
    const teacher = graph.addInput(new Value(TEACHER_INPUT, tensorType(DataType.FLOAT, ['batch_size', 'sequence_length', 'vocab'])));
    inputs.push(TEACHER_INPUT);
    const logq = e.op('LogSoftmax', [teacher], { axis: -1 });
    const logp = e.op('LogSoftmax', [logits], { axis: -1 });
    const kl = e.reduceSum(e.mul(e.exp(logq), e.sub(logq, logp)), [-1], false);
    loss = weightedMean(e, kl, w);
  } else if (objective === 'transfer') {
    if (mixes.length === 0) {
      throw new UserInputError('objective transfer needs the softmax branch as its target, and a μ = 1 conversion has none: convert with μ < 1 (e.g. --mu 0.5) for this stage');
    }
    const terms = mixes.map((m) => {
      stopGradient.add(m.a);
      const width = e.op('CastLike', [e.op('Shape', [m.a], { start: -1 }), m.a]);
      const ms = e.div(e.reduceSum(e.mul(m.a, m.a), [-1], true), width);
      const target = e.div(m.a, e.op('Sqrt', [e.add(ms, e.f(1e-6))]));
      const d = e.sub(m.y, target);
      const mse = e.div(e.reduceSum(e.mul(d, d), [-1], false), e.reshape(width, []));
      return weightedMean(e, mse, w);
    });
    loss = e.scale(terms.length === 1 ? terms[0]! : e.op('Sum', terms), 1 / terms.length);
  } else {
    throw new UserInputError(`unknown objective '${objective as string}'; expected ${OBJECTIVES.join(', ')}`);
  }
  const out = e.op('Identity', [loss]);
  out.name = graph.uniqueName(LOSS_OUTPUT);
  return { loss: out, stopGradient, inputs };
}

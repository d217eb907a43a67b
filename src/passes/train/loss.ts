/**
 * Training objectives, appended to the training forward as standard ops (so autodiff
 * differentiates them like the rest). Every objective is a weighted mean over token
 * positions with weights `label_weights` [B, T] (0 for padding and for positions not to
 * count), so padded batches train only on real tokens.
 * - `lm`: next-token cross-entropy of logits [B, T, V] against `labels` [B, T] (int64; the
 *   caller shifts them: labels[t] is the token after position t);
 * - `distill`: KL(teacher ‖ model) per position, teacher logits fed as `teacher_logits`;
 * - `transfer`: per layer, the mean squared difference between the LiZA output and the
 *   RMS-normalised softmax attention output (the target, no gradient through it),
 *   averaged over layers: LoLCATs-style attention transfer, a first stage before `lm`. The
 *   target is the layer's own softmax branch when the model kept one (μ < 1), else the
 *   original model's attention output of the same site, fed from a teacher run.
 */
import { Builder, DataType, type Graph, UserInputError, Value, tensorType } from '../../ir/index.js';
import { Emitter } from '../../ops/emit.js';
import type { TrainingForward } from './forward.js';

export type Objective = 'lm' | 'distill' | 'transfer';
export const OBJECTIVES: readonly Objective[] = ['lm', 'distill', 'transfer'];

export const LABELS_INPUT = 'labels';
export const WEIGHTS_INPUT = 'label_weights';
export const TEACHER_INPUT = 'teacher_logits';
export const LOSS_OUTPUT = 'loss';
/** Transfer targets read from the teacher when the model has no softmax branch of its own: `transfer_target.{i}`. */
export const transferTargetInput = (i: number): string => `transfer_target.${i}`;

export interface LossGraph {
  loss: Value;
  /** Values the gradient must not flow through (targets). */
  stopGradient: Set<Value>;
  /** Extra graph inputs the objective reads. */
  inputs: string[];
  /** Inputs fed from the teacher model's values: input name → the teacher's value name. */
  teacherValues: Map<string, string>;
}

/** Σ w·x / max(Σ w, 1) over [B, T]. */
function weightedMean(e: Emitter, x: Value, w: Value): Value {
  return e.div(e.reduceSum(e.mul(x, w), [0, 1], false), e.op('Max', [e.reduceSum(w, [0, 1], false), e.f(1)]));
}

/** y ≈ a / rms(a) per token: the mean squared difference over the last axis, [B, T]. */
function transferTerm(e: Emitter, y: Value, a: Value): Value {
  const width = e.op('CastLike', [e.op('Shape', [a], { start: -1 }), a]);
  const ms = e.div(e.reduceSum(e.mul(a, a), [-1], true), width);
  const target = e.div(a, e.op('Sqrt', [e.add(ms, e.f(1e-6))]));
  const d = e.sub(y, target);
  return e.div(e.reduceSum(e.mul(d, d), [-1], false), e.reshape(width, []));
}

export function appendLoss(graph: Graph, objective: Objective, logits: Value, forward: TrainingForward): LossGraph {
  const mixes = forward.mixes;
  const teacherValues = new Map<string, string>();
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
    // the softmax branch of each layer is the target: in the graph when μ < 1 kept it,
    // else the original (teacher) model's attention output of the same site
    const pairs: { y: Value; a: Value }[] = [];
    if (mixes.length > 0) {
      for (const m of mixes) {
        stopGradient.add(m.a);
        pairs.push({ y: m.y, a: m.a });
      }
    } else {
      forward.lizaOutputs.forEach((y, i) => {
        const name = forward.attentionOutputs[i];
        if (!name) {
          throw new UserInputError(
            'objective transfer on a μ = 1 model needs each site\'s attention output in [batch, sequence, features], which this model does not record (converted by an older titanize, or a site in another layout such as torch.nn.MultiheadAttention\'s [T·B, E]): use options.objective distill or lm, or convert with μ < 1',
          );
        }
        const input = graph.addInput(new Value(transferTargetInput(i), tensorType(DataType.FLOAT, ['batch_size', 'sequence_length', null])));
        inputs.push(input.name);
        teacherValues.set(input.name, name);
        pairs.push({ y, a: input });
      });
    }
    const terms = pairs.map(({ y, a }) => weightedMean(e, transferTerm(e, y, a), w));
    loss = e.scale(terms.length === 1 ? terms[0]! : e.op('Sum', terms), 1 / terms.length);
  } else {
    throw new UserInputError(`unknown objective '${objective as string}'; expected ${OBJECTIVES.join(', ')}`);
  }
  const out = e.op('Identity', [loss]);
  out.name = graph.uniqueName(LOSS_OUTPUT);
  return { loss: out, stopGradient, inputs, teacherValues };
}

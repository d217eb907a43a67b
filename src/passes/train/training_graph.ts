/**
 * The training graph of a converted model: forward (LiZA and MaG inlined as standard ops)
 * + objective + backward (autodiff) + AdamW, so that one onnxruntime run is one step.
 * Built in two phases because autodiff needs the rank of every value on the gradient path,
 * which onnxruntime tells (runtime/probe.ts) and the passes layer cannot ask:
 *
 *   const prep = prepareTraining(copyOfModel, options);   // forward + loss, params as inputs
 *   const facts = await probeValues(prep.model, feeds, probeTargets(prep));
 *   const graph = completeTraining(prep, (v) => irFacts(v) ?? facts.get(v.name));
 *
 * runtime/trainer.ts does exactly this.
 */
import { Builder, type Model, UserInputError, type Value, eliminateDeadCode, toposort } from '../../ir/index.js';
import { differentiate, gradientPath } from './autodiff.js';
import { type TrainingForward, prepareTrainingForward } from './forward.js';
import type { ValueInfo } from './gradients/index.js';
import { type Objective, appendLoss } from './loss.js';
import { type AdamWOptions, appendAdamW, slotNames } from './optimizer.js';
import { type TrainableGroup, type TrainableParam, makeTrainable } from './params.js';

export interface TrainingGraphOptions {
  /** Default 'lm'. */
  objective?: Objective;
  /** Default ['lora']. */
  train?: TrainableGroup[];
  /** Longest sequence trained on (bounds the LiZA body's unrolled chunk prefix). */
  maxSeqLen?: number;
  optimizer?: AdamWOptions;
  /** The model output holding the logits (default: the first graph output). */
  logits?: string;
  /** Also output every gradient (clipped: before clipping) as `<param>.grad` (for checks and tools). */
  outputGradients?: boolean;
}

export interface PreparedTraining {
  model: Model;
  objective: Objective;
  loss: Value;
  params: TrainableParam[];
  stopGradient: Set<Value>;
  forward: TrainingForward;
  /** Inputs of the original model that the training graph still reads (token ids, mask, positions, pasts). */
  modelInputs: string[];
  /** Inputs the objective reads (labels, weights, teacher logits). */
  lossInputs: string[];
  /** Loss inputs fed from a teacher run: input name → the teacher's value name. */
  teacherValues: Map<string, string>;
  options: TrainingGraphOptions;
}

export interface TrainingGraphSpec {
  objective: Objective;
  params: TrainableParam[];
  modelInputs: string[];
  lossInputs: string[];
  teacherValues: Map<string, string>;
  optimizerInputs: string[];
  lossOutput: string;
  gradNormOutput: string;
  accumulate: number;
  /** The model has no softmax branch left (μ = 1): every converted layer is purely linear. */
  linearOnly: boolean;
}

export interface TrainingGraph {
  model: Model;
  spec: TrainingGraphSpec;
}

/** Phase 1, in place on `model` (a copy of the converted model): forward + loss, trainable tensors as inputs. */
export function prepareTraining(model: Model, options: TrainingGraphOptions = {}): PreparedTraining {
  const objective = options.objective ?? 'lm';
  const graph = model.graph;
  const originalInputs = graph.inputs.map((v) => v.name);
  const logitsName = options.logits ?? graph.outputs[0]?.name;
  const logits = graph.outputs.find((v) => v.name === logitsName);
  if (!logits) throw new UserInputError(`the model has no output '${logitsName ?? ''}' to train on`);
  const forward = prepareTrainingForward(model, { maxSeqLen: options.maxSeqLen });
  if (!forward.causal && objective !== 'transfer') {
    throw new UserInputError(`objective '${objective}' predicts the next token, but this model's attention is bidirectional (an encoder); train it with objective 'transfer', or convert a decoder`);
  }
  const params = makeTrainable(model, options.train ?? ['lora'], forward.mixes);
  const lossGraph = appendLoss(graph, objective, logits, forward);
  graph.setOutputs([lossGraph.loss]);
  eliminateDeadCode(graph);
  toposort(graph);
  const paramNames = new Set(params.map((p) => p.input));
  const modelInputs = graph.inputs.map((v) => v.name).filter((n) => originalInputs.includes(n) && !paramNames.has(n));
  return { model, objective, loss: lossGraph.loss, params, stopGradient: lossGraph.stopGradient, forward, modelInputs, lossInputs: lossGraph.inputs, teacherValues: lossGraph.teacherValues, options };
}

function paramValues(prep: PreparedTraining): Value[] {
  const byName = new Map(prep.model.graph.inputs.map((v) => [v.name, v]));
  return prep.params.map((p) => {
    const v = byName.get(p.input);
    if (!v) throw new UserInputError(`trainable input '${p.input}' vanished from the training graph`);
    return v;
  });
}

/** The values whose rank and type autodiff needs (inputs and outputs of the nodes on the gradient path). */
export function probeTargets(prep: PreparedTraining): Value[] {
  const path = gradientPath(prep.model.graph, prep.loss, paramValues(prep), { stopGradient: prep.stopGradient });
  const out = new Set<Value>();
  for (const n of path.nodes) for (const v of [...n.inputs, ...n.outputs]) if (v && v.producer) out.add(v);
  return [...out];
}

/** Phase 2: backward and optimizer appended; the graph outputs the loss, the gradient norm and every updated tensor. */
export function completeTraining(prep: PreparedTraining, info: (v: Value) => ValueInfo | undefined): TrainingGraph {
  const graph = prep.model.graph;
  const opset = prep.model.opsetVersion('') ?? 17;
  const wrt = paramValues(prep);
  const grads = differentiate(graph, prep.loss, wrt, { info, opset, stopGradient: prep.stopGradient });
  const opt = prep.options.optimizer ?? {};
  const adam = appendAdamW(
    graph,
    prep.params.map((p, i) => ({ param: wrt[i]!, grad: grads.get(wrt[i]!)!, decay: p.decay })),
    opt,
  );
  if (prep.options.outputGradients) {
    wrt.forEach((w) => {
      const id = new Builder(graph, { tag: 'autodiff' }).op('Identity', [grads.get(w)!]);
      id.name = gradOutputName(w.name);
      graph.addOutput(id);
    });
  }
  toposort(graph);
  return {
    model: prep.model,
    spec: {
      objective: prep.objective,
      params: prep.params,
      modelInputs: prep.modelInputs,
      lossInputs: prep.lossInputs,
      teacherValues: prep.teacherValues,
      optimizerInputs: adam.inputs,
      lossOutput: prep.loss.name,
      gradNormOutput: adam.gradNorm.name,
      accumulate: opt.accumulate ?? 1,
      linearOnly: prep.forward.mixes.length === 0,
    },
  };
}

export { slotNames };

/** The output holding a parameter's gradient when `outputGradients` is set. */
export const gradOutputName = (param: string): string => `${param}.grad`;

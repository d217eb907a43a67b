/**
 * AdamW inside the training graph, so that one session run is one optimizer step and the
 * parameters and moments go in and come out as tensors (they never need a host copy on a
 * GPU provider). The learning rate and the bias corrections are inputs, so a schedule
 * needs no rebuild:
 *   g ← g · min(1, clip / (‖g‖ + 1e-6))          (global norm over every gradient)
 *   m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²
 *   p ← p − lr · (m·c1 / (√(v·c2) + ε) + λ p)   with c1 = 1/(1 − β1^t), c2 = 1/(1 − β2^t)
 * (λ only on tensors that decay). With gradient accumulation over K micro-batches, the
 * gradients add up in `<p>.acc` and `apply` = 1 on the K-th makes the step with their mean;
 * on the others, parameters and moments pass through unchanged.
 */
import { Builder, DataType, type Graph, type Value, Value as IRValue, tensorType } from '../../ir/index.js';
import { Emitter } from '../../ops/emit.js';

export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Global gradient-norm clip (default 1; 0 or Infinity disables). */
  clip?: number;
  /** Micro-batches per step (default 1). */
  accumulate?: number;
}

export interface OptimizedParam {
  param: Value;
  grad: Value;
  decay: boolean;
}

export const LR_INPUT = 'lr';
export const BC1_INPUT = 'adam_c1';
export const BC2_INPUT = 'adam_c2';
export const APPLY_INPUT = 'apply_step';
export const GRAD_NORM_OUTPUT = 'grad_norm';

export const slotNames = (p: string) => ({ m: `${p}.adam_m`, v: `${p}.adam_v`, acc: `${p}.grad_acc`, next: `${p}.next`, mNext: `${p}.adam_m.next`, vNext: `${p}.adam_v.next`, accNext: `${p}.grad_acc.next` });

export interface AdamWGraph {
  gradNorm: Value;
  /** Graph inputs added (besides the parameters). */
  inputs: string[];
  /** Graph outputs added. */
  outputs: string[];
}

export function appendAdamW(graph: Graph, params: readonly OptimizedParam[], options: AdamWOptions = {}): AdamWGraph {
  const b1 = options.beta1 ?? 0.9;
  const b2 = options.beta2 ?? 0.999;
  const eps = options.eps ?? 1e-8;
  const wd = options.weightDecay ?? 0;
  const clip = options.clip ?? 1;
  const K = options.accumulate ?? 1;
  const e = new Emitter(new Builder(graph, { tag: 'adamw', prefix: 'adamw/' }));
  const scalarInput = (name: string): Value => graph.addInput(new IRValue(name, tensorType(DataType.FLOAT, [])));
  const lr = scalarInput(LR_INPUT);
  const c1 = scalarInput(BC1_INPUT);
  const c2 = scalarInput(BC2_INPUT);
  const inputs = [LR_INPUT, BC1_INPUT, BC2_INPUT];
  const outputs: string[] = [];
  const apply = K > 1 ? graph.addInput(new IRValue(APPLY_INPUT, tensorType(DataType.BOOL, []))) : null;
  if (apply) inputs.push(APPLY_INPUT);
  const typeOf = (p: Value) => p.type ?? tensorType(DataType.FLOAT);
  const output = (v: Value, name: string): void => {
    const id = e.op('Identity', [v]);
    id.name = name;
    graph.addOutput(id);
    outputs.push(name);
  };

  // gradients of this step (summed with the accumulated ones)
  const grads = params.map(({ param, grad }) => {
    if (!apply) return grad;
    const s = slotNames(param.name);
    const acc = graph.addInput(new IRValue(s.acc, typeOf(param)));
    inputs.push(s.acc);
    const sum = e.add(acc, grad);
    output(e.op('Where', [apply, e.mul(sum, e.f(0)), sum]), s.accNext);
    return e.scale(sum, 1 / K);
  });
  const squares = grads.map((g) => e.reduceSum(e.mul(g, g), [], false));
  const norm = e.op('Sqrt', [squares.length === 1 ? squares[0]! : e.op('Sum', squares)]);
  const factor = clip > 0 && Number.isFinite(clip) ? e.min(e.f(1), e.div(e.f(clip), e.add(norm, e.f(1e-6)))) : null;
  params.forEach(({ param, decay }, i) => {
    const s = slotNames(param.name);
    const m = graph.addInput(new IRValue(s.m, typeOf(param)));
    const v = graph.addInput(new IRValue(s.v, typeOf(param)));
    inputs.push(s.m, s.v);
    const g = factor ? e.mul(grads[i]!, factor) : grads[i]!;
    const m2 = e.add(e.scale(m, b1), e.scale(g, 1 - b1));
    const v2 = e.add(e.scale(v, b2), e.scale(e.mul(g, g), 1 - b2));
    let upd = e.div(e.mul(m2, c1), e.add(e.op('Sqrt', [e.mul(v2, c2)]), e.f(eps)));
    if (decay && wd > 0) upd = e.add(upd, e.scale(param, wd));
    const p2 = e.sub(param, e.mul(lr, upd));
    const pick = (neu: Value, old: Value): Value => (apply ? e.op('Where', [apply, neu, old]) : neu);
    output(pick(p2, param), s.next);
    output(pick(m2, m), s.mNext);
    output(pick(v2, v), s.vNext);
  });
  const gn = e.op('Identity', [norm]);
  gn.name = graph.uniqueName(GRAD_NORM_OUTPUT);
  graph.addOutput(gn);
  outputs.push(gn.name);
  return { gradNorm: gn, inputs, outputs };
}

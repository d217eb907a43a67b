/**
 * Which tensors a training run updates, and how they enter the training graph. Trainable
 * tensors become graph inputs (fed each step, and returned updated); frozen ones stay
 * initializers (external data stays lazy). Groups:
 * - `lora`: the A and B matrices of every LoRA adapter (default);
 * - `mu`: the MaG gate of each layer, trained as θ with μ = sigmoid(θ), so that it stays in
 *   [0, 1]; a μ of exactly 0 or 1 starts from sigmoid(±9.2) = 1e-4 from the bound;
 * - `norms`: the scale (and bias) of normalisation layers, found structurally: inputs 1 and
 *   2 of LayerNormalization-family ops, and 1-D weights multiplied onto a decomposed
 *   RMS/LayerNorm (x · 1/√(mean + ε)).
 */
import { Builder, DataType, type Graph, type Model, type Tensor, UserInputError, Value, tensorType } from '../../ir/index.js';
import { loraParameters } from '../convert/lora.js';
import type { GateMix } from './forward.js';

export type TrainableGroup = 'lora' | 'mu' | 'norms';
export const TRAINABLE_GROUPS: readonly TrainableGroup[] = ['lora', 'mu', 'norms'];

export interface TrainableParam {
  /** The graph input of the training graph. */
  input: string;
  /** The initializer of the converted model it updates. */
  source: string;
  group: TrainableGroup;
  dims: number[];
  /** Initial value, in the training parametrisation (θ for μ). */
  init: Float32Array;
  /** AdamW's decoupled weight decay applies (not to μ or norms). */
  decay: boolean;
}

/** μ = sigmoid(θ); θ = logit(μ), with μ kept 1e-4 inside (0, 1). */
export function muToLogit(mu: number): number {
  const m = Math.min(Math.max(mu, 1e-4), 1 - 1e-4);
  return Math.log(m / (1 - m));
}
export function logitToMu(theta: number): number {
  return 1 / (1 + Math.exp(-theta));
}

const NORM_OPS = new Set(['LayerNormalization', 'SimplifiedLayerNormalization', 'RMSNormalization', 'SkipLayerNormalization', 'SkipSimplifiedLayerNormalization']);

/** Whether `v` comes from x / sqrt(...) or x * reciprocal(sqrt(...)) within a few elementwise steps. */
function isNormalised(v: Value | null, depth = 0): boolean {
  const p = v?.producer;
  if (!p || depth > 3) return false;
  if (p.is('Sqrt') || p.is('Reciprocal')) return true;
  if (!['Mul', 'Div', 'Cast', 'Add', 'Sub'].includes(p.opType) || !p.isOnnxDomain()) return false;
  return p.inputs.some((x) => isNormalised(x, depth + 1));
}

/** 1-D float initializers that scale or shift a normalisation. */
export function findNormWeights(graph: Graph): Value[] {
  const out = new Set<Value>();
  for (const n of graph) {
    if (NORM_OPS.has(n.opType)) {
      for (const i of [1, 2]) {
        const w = n.input(i);
        if (w?.initializer && w.initializer.dataType === DataType.FLOAT) out.add(w);
      }
      continue;
    }
    if (!n.is('Mul') && !n.is('Add')) continue;
    const [a, b] = [n.input(0), n.input(1)];
    for (const [w, x] of [[a, b], [b, a]] as const) {
      if (!w?.initializer || w.initializer.dims.length !== 1 || w.initializer.dataType !== DataType.FLOAT || w.initializer.size < 2) continue;
      // Add(bias) directly after the scale Mul of a normalisation
      const scaled = n.is('Add') ? x?.producer : null;
      const ok = n.is('Mul') ? isNormalised(x) : !!scaled && scaled.is('Mul') && scaled.inputs.some((y) => !!y?.initializer && out.has(y));
      if (ok) out.add(w);
    }
  }
  return [...out];
}

/** Turns initializer `v` into a graph input of the same name (dims declared); returns it. */
function initializerToInput(graph: Graph, v: Value): Value {
  const t = v.initializer!;
  const name = v.name;
  graph.renameInitializer(v, graph.uniqueName(`${name}_frozen`));
  const input = graph.addInput(new Value(name, tensorType(t.dataType, t.dims)));
  v.replaceAllUsesWith(input);
  graph.removeInitializer(v);
  return input;
}

function values(t: Tensor): Float32Array {
  if (t.dataType !== DataType.FLOAT) throw new UserInputError(`trainable tensor '${t.name}' is not float32`);
  return Float32Array.from(t.toTypedArray() as Float32Array);
}

/** Makes the chosen groups trainable in `model` (the training forward, changed in place). */
export function makeTrainable(model: Model, groups: readonly TrainableGroup[], mixes: readonly GateMix[]): TrainableParam[] {
  const graph = model.graph;
  const params: TrainableParam[] = [];
  for (const g of groups) if (!TRAINABLE_GROUPS.includes(g)) throw new UserInputError(`unknown trainable group '${g}'; expected ${TRAINABLE_GROUPS.join(', ')}`);
  if (groups.includes('lora')) {
    const adapters = loraParameters(graph);
    if (adapters.length === 0 && groups.length === 1) {
      throw new UserInputError('the model has no LoRA adapters to train (convert it with a LoRA rank, e.g. options.loraRank = 8, or train other groups)');
    }
    for (const ad of adapters) {
      for (const v of [ad.a, ad.b]) {
        const init = values(v.initializer!);
        const dims = v.initializer!.dims.slice();
        const name = initializerToInput(graph, v).name;
        params.push({ input: name, source: name, group: 'lora', dims, init, decay: true });
      }
    }
  }
  if (groups.includes('mu')) {
    if (mixes.length === 0) throw new UserInputError('the model has no MaG gate to train (a μ = 1 conversion has no softmax branch left to mix)');
    const b = new Builder(graph, { before: graph.first ?? undefined, tag: 'train' });
    for (const m of mixes) {
      const mu = m.mu;
      if (!mu.initializer) throw new UserInputError(`the gate '${mu.name}' is not an initializer; it cannot be trained`);
      const mu0 = values(mu.initializer)[0]!;
      const theta = graph.addInput(new Value(`${mu.name}.logit`, tensorType(DataType.FLOAT, [])));
      const s = b.op('Sigmoid', [theta], {}, { name: `${mu.name}.sigmoid` });
      mu.replaceAllUsesWith(s);
      graph.removeInitializer(mu);
      params.push({ input: theta.name, source: mu.name, group: 'mu', dims: [], init: Float32Array.from([muToLogit(mu0)]), decay: false });
      m.mu = s;
    }
  }
  if (groups.includes('norms')) {
    for (const w of findNormWeights(graph)) {
      const init = values(w.initializer!);
      const dims = w.initializer!.dims.slice();
      const name = initializerToInput(graph, w).name;
      params.push({ input: name, source: name, group: 'norms', dims, init, decay: false });
    }
  }
  if (params.length === 0) throw new UserInputError(`nothing to train in the groups ${groups.join(', ')}`);
  return params;
}


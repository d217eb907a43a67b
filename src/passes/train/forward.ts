/**
 * The forward half of a training graph, made from a converted model of any target:
 * lowered LiZA subgraphs (com.microsoft or opset-27 LinearAttention, which have no
 * gradient) are raised back to ai.tptt.LiZA from the record the lowering left on them,
 * then every LiZA and MaG call is inlined as its standard-op body (the chunked WY form),
 * and every ONNX Attention op is expanded to its standard-op definition, which autodiff
 * differentiates. The model is changed in place: pass a copy.
 */
import { type Builder, type Graph, IrError, type Model, type Node, UserInputError, type Value, eliminateDeadCode, getMetadata, setMetadata, toposort } from '../../ir/index.js';
import {
  ABSENT_INPUT,
  LOWERED_LIZA_KEY,
  type LizaOpAttributes,
  type LoweredLiza,
  TPTT_DOMAIN,
  addLizaNode,
  emitLizaChunked,
  emitMag,
} from '../../ops/index.js';
import { Emitter } from '../../ops/emit.js';
import { ATTENTION_OUTPUT_KEY, valueIndex } from '../convert/tptt.js';
import { lizaLoweringRule } from '../lower_liza.js';
import { expandAttentionOps } from './expand_attention.js';
import { applyRules } from '../pattern/driver.js';
import { defineRule } from '../pattern/rule.js';

/** Provenance of the standard-op bodies that replace MaG and LiZA calls in a training graph. */
export const TRAIN_MAG_RULE = 'train-inline-mag';
export const TRAIN_LIZA_RULE = 'train-inline-liza';

/** One memory-as-gate mix of the model: softmax output a, LiZA output y, gate μ (an initializer). */
export interface GateMix {
  a: Value;
  y: Value;
  mu: Value;
  /** The mixed output. */
  out: Value;
}

export interface TrainingForward {
  /** Whether every LiZA memory is causal (a decoder); bidirectional ones are encoders. */
  causal: boolean;
  /** The MaG mixes, in graph order (empty for a μ = 1 model: nothing left to mix). */
  mixes: GateMix[];
  /** LiZA outputs y, in graph order. */
  lizaOutputs: Value[];
  /** For each LiZA output: the name of its site's softmax attention output in the original model (when recorded). */
  attentionOutputs: (string | undefined)[];
  /** How many lowered LiZA subgraphs were raised back. */
  raised: number;
  /** How many ONNX Attention ops were replaced by their standard-op definition (autodiff has no rule for them). */
  expandedAttention: number;
}

export interface TrainingForwardOptions {
  /** Longest sequence the training graph will see (bounds the unrolled chunk prefix; default: the model's). */
  maxSeqLen?: number;
}

/** Raises lowered LiZA subgraphs back to ai.tptt.LiZA calls; returns how many. */
export function raiseLoweredLiza(model: Model): number {
  const graph = model.graph;
  const anchors = graph.nodes().filter((n) => getMetadata(n.metadataProps, LOWERED_LIZA_KEY) !== undefined);
  if (anchors.length === 0) return 0;
  const index = valueIndex(graph);
  for (const anchor of anchors) {
    const rec = JSON.parse(getMetadata(anchor.metadataProps, LOWERED_LIZA_KEY)!) as LoweredLiza;
    const input = (i: number): Value | null => {
      const name = rec.inputs[i];
      if (!name || name === ABSENT_INPUT) return null;
      const v = index.get(name);
      if (!v) throw new UserInputError(`the lowered LiZA at '${anchor.name}' reads '${name}', which is not in the graph`);
      return v;
    };
    const liza = addLizaNode(model, graph, rec.attrs, { xq: input(0)!, xk: input(1)!, xv: input(2)!, pastState: input(3), pastWindow: input(4), mask: input(5) }, { before: firstOf(graph, rec, index) ?? anchor, name: `${anchor.name}/raised` });
    for (const m of rec.metadata ?? []) if (m.key !== 'titanize.rule') setMetadata(liza.node.metadataProps, m.key, m.value);
    const outs = [liza.y, liza.presentState, liza.presentWindow];
    rec.outputs.forEach((name, i) => {
      const old = name ? index.get(name) : undefined;
      if (!old) return;
      const neu = outs[i]!;
      old.name = graph.uniqueName(`${name}_lowered`);
      neu.name = name;
      neu.type ??= old.type;
      old.replaceAllUsesWith(neu);
    });
  }
  eliminateDeadCode(graph);
  toposort(graph);
  return anchors.length;
}

/** The first node of the lowered subgraph (the producer of its earliest new value), to insert before. */
function firstOf(graph: Graph, rec: LoweredLiza, index: Map<string, Value>): Node | undefined {
  const inputs = new Set(rec.inputs.filter(Boolean).map((n) => index.get(n)));
  for (const n of graph) if (n.inputs.some((v) => v && inputs.has(v))) return n;
  return undefined;
}

/** Prepares `model` (in place) as the forward pass of a training graph. */
export function prepareTrainingForward(model: Model, options: TrainingForwardOptions = {}): TrainingForward {
  const raised = raiseLoweredLiza(model);
  const graph = model.graph;
  const lizaNodes = graph.nodes().filter((n) => n.opType === 'LiZA' && n.domain === TPTT_DOMAIN);
  if (lizaNodes.length === 0) throw new UserInputError('this model has no ai.tptt.LiZA memory (convert it with titanize first)');
  const yNames = lizaNodes.map((n) => n.outputs[0]!.name);
  const causal = lizaNodes.every((n) => n.getInt('causal', 1) !== 0);
  const attentionOutputs = lizaNodes.map((n) => getMetadata(n.metadataProps, ATTENTION_OUTPUT_KEY));
  const mixes: GateMix[] = [];
  const mixSource: number[] = [];
  // fused attention ops become their standard-op definitions first, so that the mixes below
  // record the softmax outputs the training graph computes
  const expandedAttention = expandAttentionOps(model);
  // MaG and LiZA calls become their standard-op bodies, through the rule engine (the
  // bodies keep the calls' output names)
  const inlineMag = defineRule({
    name: TRAIN_MAG_RULE,
    keepNames: true,
    pattern: (op) => op.MaG(op.var('a'), op.var('y'), op.var('mu'), { domain: TPTT_DOMAIN }),
    rewrite(m, b) {
      b.prefix = `${m.root.name || 'MaG'}/`;
      const [a, y, mu] = [m.value('a'), m.value('y'), m.value('mu')];
      const out = emitMag(new Emitter(b), a, y, mu);
      mixes.push({ a, y, mu, out });
      mixSource.push(lizaNodes.findIndex((l) => l.outputs[0] === y));
      return out;
    },
  });
  const emit = (b: Builder, attrs: LizaOpAttributes, inputs: Parameters<typeof emitLizaChunked>[2]) =>
    emitLizaChunked(b, options.maxSeqLen ? { ...attrs, max_seq_len: Math.min(options.maxSeqLen, attrs.max_seq_len ?? options.maxSeqLen) } : attrs, inputs);
  const inlined = applyRules(model, [inlineMag, lizaLoweringRule(TRAIN_LIZA_RULE, emit)]);
  if (!inlined.converged) throw new IrError(`inlining MaG and LiZA for training did not converge: ${inlined.stopReason}`);
  model.functions = model.functions.filter((f) => f.domain !== TPTT_DOMAIN);
  const index = valueIndex(graph);
  const lizaOutputs = yNames.map((n) => index.get(n)!);
  // mixes recorded before inlining read the old LiZA outputs: point them at the new ones
  mixes.forEach((m, i) => {
    const src = mixSource[i]!;
    if (src >= 0) m.y = lizaOutputs[src]!;
  });
  toposort(graph);
  return { causal, mixes, lizaOutputs, attentionOutputs, raised, expandedAttention };
}

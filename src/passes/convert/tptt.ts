/**
 * The TPTT rewrite of one attention site: the linear-attention memory (ai.tptt.LiZA) reads
 * the site's q/k/v projection outputs (before rotary), and ai.tptt.MaG mixes its output
 * with the softmax attention output ahead of the unchanged output projection. μ is one
 * float initializer per layer, `tptt.layers.{i}.mag.mu`. With μ = 1 the output projection
 * reads LiZA directly, so the softmax branch becomes dead and cleanup removes it.
 */
import { Builder, DataType, type Graph, type Model, type Node, Tensor, UserInputError, Value, describeNode, setMetadata, tensorType } from '../../ir/index.js';
import { type LizaNodeResult, addLizaNode, addMagNode, type LizaOpAttributes } from '../../ops/index.js';
import { type AttentionSite, CANONICAL_LAYOUT, type Projection } from '../attention/site.js';
import { sameLayout } from '../attention/trace.js';
import type { ResolvedConvertOptions } from './options.js';
import { type CrossMemory, addCrossMemory } from './cross_memory.js';
import { isLoraCapable, projectionShape } from './lora.js';
import { outputFromCanonical, outputToCanonical, projectionToCanonical, runtimeSizes } from './relayout.js';
import { applyRules } from '../pattern/driver.js';
import { defineRule, fail, ok } from '../pattern/rule.js';

export const TPTT_RULE = 'tptt';

/** LiZA node metadata: the name of the softmax attention output of its site (in the original model). */
export const ATTENTION_OUTPUT_KEY = 'titanize.attention_output';

export interface ConvertedSite {
  layer: number;
  form: string;
  /** 'cross': the memory is built over the keys' sequence and read by every query (cross_memory.ts). */
  kind: 'self' | 'cross';
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  causal: boolean;
  /** The LiZA node's output y and the MaG output (absent when μ = 1). */
  liza: string;
  mag: string | null;
  mu: string | null;
  /** The padding mask LiZA reads, when the model has one. */
  mask: string | null;
  /** Biases and masks of the site that the linear branch does not apply (they stay on the softmax branch). */
  ignored: string[];
  /** LiZA's present state/window outputs (unused until the recurrent-state pass wires them); null for a cross memory read from its states input. */
  presentState: Value | null;
  presentWindow: Value | null;
  lizaNode: Node | null;
  /**
   * IR values of the rewrite (for tests and later passes; not part of the JSON report), in
   * [B, T, ·]: `attention` is the softmax output (relaid out when the site's layout differs).
   */
  values: { xq: Value; xk: Value; xv: Value; mask: Value | null; attention: Value; y: Value; mixed: Value };
}

/** Finds a value of `graph` by name (node outputs, inputs, initializers). */
export function valueIndex(graph: Graph): Map<string, Value> {
  const m = new Map<string, Value>();
  for (const v of graph.inputs) m.set(v.name, v);
  for (const [k, v] of graph.initializers) m.set(k, v);
  for (const n of graph) for (const o of n.outputs) if (o.name) m.set(o.name, o);
  return m;
}

/** The [B,T,H·d] projection output of q, k or v: the site's value, or a column slice of a packed projection. */
function projectionValue(b: Builder, site: AttentionSite, which: 'q' | 'k' | 'v'): Value {
  const direct = site.refs[which];
  if (direct) return withOpBias(b, site, which, direct);
  const p: Projection = site[which];
  const packed = site.refs.projections[which].packed;
  if (packed && p.columns) return b.op('Slice', [packed, b.ints([p.columns[0]]), b.ints([p.columns[1]]), b.ints([-1])], {}, { name: `${which}_slice` });
  throw new UserInputError(
    `layer ${site.layer}: the ${which} projection happens inside ${site.nodes.fused ?? 'a fused op'}, so its output is not available to the memory branch`,
  );
}

/**
 * MultiHeadAttention adds its packed bias [q | k | v] to the projections itself: the memory
 * reads them with it (k and v only when the op reads them as [B, L, D], not as BNSH caches).
 */
function withOpBias(b: Builder, site: AttentionSite, which: 'q' | 'k' | 'v', x: Value): Value {
  const op = site.refs.fused;
  const bias = op?.is('MultiHeadAttention', 'com.microsoft') ? op.input(3) : null;
  if (!bias || (which !== 'q' && site.kvSource)) return x;
  const w = site.numHeads * site.headDim;
  const at = { q: 0, k: 1, v: 2 }[which] * w;
  return b.op('Add', [x, b.op('Slice', [bias, b.ints([at]), b.ints([at + w]), b.ints([0])], {}, { name: `${which}_op_bias` })], {}, { name: `${which}_biased` });
}

/**
 * The padding mask [B,T] of the tokens the memory writes (`x`: the queries' sequence for
 * self-attention, the keys' for cross-attention): the last T columns of the [B, S] mask
 * input that reaches the site's mask.
 */
function paddingMask(b: Builder, site: AttentionSite, x: Value, graph: Graph): Value | null {
  const byName = (n: string): Value | undefined => graph.inputs.find((v) => v.name === n);
  const input = site.mask.inputs.map(byName).find((v) => v !== undefined);
  if (!input) return null;
  const t = input.type;
  if (t?.kind === 'tensor' && t.shape && t.shape.length !== 2) return null;
  const T = b.op('Gather', [b.op('Shape', [x]), b.constant(BigInt64Array.from([1n]), [1])], { axis: 0 }, { name: 'seq_len' });
  const negT = b.op('Neg', [T]);
  return b.op('Slice', [input, negT, b.constant(BigInt64Array.from([9223372036854775807n]), [1]), b.ints([1])], {}, { name: 'current_mask' });
}

/**
 * The float type the site computes in: its query projection's activation type (fp16 / bf16
 * weights, or the scales of quantized ones), float32 when it cannot be told.
 */
function sitePrecision(site: AttentionSite): DataType {
  const node = site.refs.projections.q.node;
  return node && isLoraCapable(node) ? projectionShape(node).dtype : DataType.FLOAT;
}

/**
 * Converts one site, as the rule `tptt` applied at the node that makes the site's
 * attention output: a wrapping rewrite (the softmax output stays, and is read by MaG) whose
 * replacement, the mixed output in the site's layout, is what the readers of the attention
 * output read instead.
 */
export function convertSite(
  model: Model,
  site: AttentionSite,
  opts: ResolvedConvertOptions,
  past?: { state: Value; window: Value },
): ConvertedSite {
  const oproj = site.refs.outputProjection;
  const graph = oproj.graph;
  if (!graph) throw new UserInputError(`layer ${site.layer}: its output projection is not in the graph`);
  const a = site.refs.output;
  if (a.uses().length === 0) throw new UserInputError(`layer ${site.layer}: nothing reads the attention output '${a.name}'`);
  const root = a.producer;
  if (!root || root.graph !== graph) throw new UserInputError(`layer ${site.layer}: the attention output '${a.name}' is not computed by a node of the graph`);
  let converted: ConvertedSite | null = null;
  const rule = defineRule({
    name: TPTT_RULE,
    // (the softmax output stays, also at μ = 1 where nothing new reads it: a graph output keeps it)
    wraps: true,
    pattern: (op) => op.anyOp(),
    check: (m) => (converted ? fail(`layer ${site.layer} is converted`) : m.root === root ? ok() : fail(`${describeNode(m.root)} does not make layer ${site.layer}'s attention output`)),
    rewrite(m, b) {
      const r = addSiteMemory(model, site, opts, past, b);
      converted = r.site;
      return m.root.outputs.map((o) => (o === a ? r.out : o));
    },
  });
  applyRules(graph, [rule], { roots: [root] });
  if (!converted) throw new UserInputError(`layer ${site.layer}: the memory could not be added at ${describeNode(root)}`);
  return converted;
}

/** Builds the memory branch and the gate of `site` with the rule's builder; returns the site's report and the mixed output in its layout. */
function addSiteMemory(
  model: Model,
  site: AttentionSite,
  opts: ResolvedConvertOptions,
  past: { state: Value; window: Value } | undefined,
  b: Builder,
): { site: ConvertedSite; out: Value } {
  const graph = b.graph;
  const prefix = `tptt/layers.${site.layer}/`;
  // new nodes go just before the first reader of the attention output (the graph is sorted)
  const a = site.refs.output;
  const readers = new Set(a.uses().map((u) => u.node));
  let before: Node = site.refs.outputProjection;
  for (const n of graph) {
    if (readers.has(n)) {
      before = n;
      break;
    }
  }
  b.before = before;
  b.prefix = prefix;
  // the memory works on [B, T, H·d] in float32; sites in another layout are transposed to
  // it and back, fp16 / bf16 sites cast to float32 and back
  const precision = sitePrecision(site);
  const toF32 = (v: Value, name: string): Value => (precision === DataType.FLOAT ? v : b.op('Cast', [v], { to: DataType.FLOAT }, { name: `${name}_f32` }));
  const xq = toF32(projectionToCanonical(b, projectionValue(b, site, 'q'), site.layout.q, 'q'), 'q');
  const xk = toF32(projectionToCanonical(b, projectionValue(b, site, 'k'), site.layout.k, 'k'), 'k');
  const xv = toF32(projectionToCanonical(b, projectionValue(b, site, 'v'), site.layout.v, 'v'), 'v');
  const sizes = runtimeSizes(b, xq, site.numHeads, site.headDim);
  const cross = site.kind === 'cross';
  const mask = paddingMask(b, site, cross ? xk : xq, graph);
  const attrs: LizaOpAttributes = {
    q_num_heads: site.numHeads,
    kv_num_heads: site.numKvHeads,
    head_dim: site.headDim,
    rule: opts.rule,
    order: opts.order,
    chunk_size: opts.chunkSize,
    causal: site.causal,
    max_seq_len: opts.maxSeqLen,
  };
  if (cross && past) throw new UserInputError(`layer ${site.layer}: a cross-attention memory carries no state between calls (it is rebuilt from the encoder side)`);
  // crossState: the states come in as an input where the keys and values are cached inputs
  const statesIn = cross && opts.crossState && site.kvSource ? addMemoryInput(graph, site) : null;
  const memory = cross ? addCrossMemory(model, graph, b, attrs, { xq, xk, xv, mask }, { states: statesIn }) : null;
  // ... and go out beside the cross keys where the graph exports them
  if (memory && opts.crossState && !statesIn && site.present) addMemoryOutput(graph, site.present.key, memory.states);
  const liza = memory
    ? crossLiza(memory)
    : selfLiza(addLizaNode(model, graph, attrs, { xq, xk, xv, mask, pastState: past?.state ?? null, pastWindow: past?.window ?? null }, { builder: b, name: 'LiZA' }));
  for (const node of liza.nodes) setMetadata(node.metadataProps, 'titanize.layer', String(site.layer));
  // the softmax attention output this memory stands beside: the target of attention
  // transfer (read from the original model when μ = 1 removes it here)
  // (only for [B, T, H·d] outputs: a teacher's value in another layout would not line up with y;
  // and not for cross-attention, whose LiZA nodes build a state rather than the output)
  if (!cross && liza.node && sameLayout(site.layout.output, CANONICAL_LAYOUT.output)) setMetadata(liza.node.metadataProps, ATTENTION_OUTPUT_KEY, a.name);
  let mixed: Value;
  let magName: string | null = null;
  let muName: string | null = null;
  let attention = a;
  if (opts.mu === 1) {
    mixed = liza.y;
  } else {
    attention = toF32(outputToCanonical(b, a, site.layout.output, sizes), 'attention');
    const mu = graph.addInitializer(Tensor.fromArray(Float32Array.from([opts.mu]), [], DataType.FLOAT), uniqueInitializer(graph, `tptt.layers.${site.layer}.mag.mu`));
    const mag = addMagNode(model, graph, attention, liza.y, mu, { builder: b, name: 'MaG' });
    mixed = mag.out;
    magName = mag.out.name;
    muName = mu.name;
  }
  // every reader of the attention output (the output projection, possibly through a
  // Reshape as in GPT-2 exports) now reads the mixed value, in the site's layout
  const relaid = outputFromCanonical(b, mixed, site.layout.output, sizes);
  const out = precision === DataType.FLOAT ? relaid : b.op('Cast', [relaid], { to: precision }, { name: 'memory_out' });
  const converted: ConvertedSite = {
    layer: site.layer,
    form: site.form,
    kind: site.kind,
    numHeads: site.numHeads,
    numKvHeads: site.numKvHeads,
    headDim: site.headDim,
    causal: site.causal,
    liza: liza.y.name,
    mag: magName,
    mu: muName,
    mask: mask?.name ?? null,
    presentState: liza.presentState,
    presentWindow: liza.presentWindow,
    lizaNode: liza.node,
    ignored: [...site.mask.ignored],
    values: { xq, xk, xv, mask, attention, y: liza.y, mixed },
  };
  return { site: converted, out };
}

/** The memory of a site: its output y, its LiZA node(s), the state outputs of the (first) one. */
interface SiteMemory {
  node: Node | null;
  nodes: Node[];
  y: Value;
  presentState: Value | null;
  presentWindow: Value | null;
}

function selfLiza(r: LizaNodeResult): SiteMemory {
  return { ...r, nodes: [r.node] };
}

/** A cross memory in the shape of a LiZA call: y is the memory's output, the state that of the forward pass (if it has LiZA calls). */
function crossLiza(m: CrossMemory): SiteMemory {
  const node = m.nodes[0] ?? null;
  return { node, nodes: m.nodes, y: m.y, presentState: node?.outputs[1] ?? null, presentWindow: node?.outputs[2] ?? null };
}

/**
 * The name of a cross memory's states beside a cross key cache name: `…key` → `…memory`
 * (present.1.encoder.key → present.1.encoder.memory, past_key_values.1.encoder.key →
 * past_key_values.1.encoder.memory), so the same mapping carries keys and states from the
 * graph without past to the one with it.
 */
export function crossMemoryName(keyName: string): string {
  return keyName.endsWith('key') ? `${keyName.slice(0, -3)}memory` : `${keyName}.memory`;
}


function addMemoryInput(graph: Graph, site: AttentionSite): Value {
  const key = site.kvSource!.key;
  const name = crossMemoryName(key);
  if (graph.inputs.some((v) => v.name === name)) throw new UserInputError(`layer ${site.layer}: the model already has an input '${name}'; was it converted before?`);
  const t = graph.inputs.find((v) => v.name === key)?.type;
  const batch = t?.kind === 'tensor' && t.shape?.[0] ? (t.shape[0].param ?? t.shape[0].value ?? 'batch') : 'batch';
  return graph.addInput(new Value(name, tensorType(DataType.FLOAT, [batch, 2, site.numKvHeads, site.headDim, site.headDim])));
}

function addMemoryOutput(graph: Graph, keyName: string, states: Value): void {
  const name = crossMemoryName(keyName);
  if (graph.outputs.some((v) => v.name === name)) throw new UserInputError(`the model already has an output '${name}'; was it converted before?`);
  const out = new Builder(graph, { tag: TPTT_RULE }).op('Identity', [states]);
  out.name = name;
  graph.addOutput(out);
}

function uniqueInitializer(graph: Graph, name: string): string {
  if (graph.initializers.has(name)) throw new UserInputError(`the model already has an initializer '${name}'; was it converted before?`);
  return name;
}

/**
 * The typed result of attention discovery. Names (strings) are the stable, JSON-able
 * description; `refs` holds the IR objects for passes that rewrite the sites.
 */
import type { Node, Value } from '../../ir/index.js';

/**
 * F1 decomposed decoder export; F2 fused com.microsoft op; F3 GPT-2 style fused q/k/v
 * projection (Split/Slice); F4 decomposed bidirectional encoder (BERT); F5 ONNX
 * Attention (opset 23+).
 */
export type AttentionForm = 'F1' | 'F2' | 'F3' | 'F4' | 'F5';

/**
 * A q, k, v or output projection.
 *
 * Keys and values can also be read straight from graph inputs, with no projection in the
 * graph (an encoder-decoder's decoder "with past": the cross-attention keys and values
 * computed by an earlier call are inputs [B, H, S, d]). Such a projection-less Projection
 * has `op: 'input'`, `node: null`, no weight or bias, and `input` = `output` = the graph
 * input; the site's `kvSource` names those inputs and its `layout.k` / `layout.v` say
 * which axes of them hold the heads and the head size (`features`).
 */
export interface Projection {
  /**
   * The projection output, bias included: for q/k/v the [B,T,H·d] tensor before rotary
   * (the graph input itself for `op: 'input'`); for the output projection its result.
   * null when the projection happens inside a fused op (com.microsoft.Attention takes the
   * weights as inputs).
   */
  output: string | null;
  /** The projection's input (the normalized hidden state; the graph input for `op: 'input'`). */
  input: string | null;
  /**
   * The MatMul / Gemm node (or the fused attention node when the projection is inside it);
   * null for keys / values read from a graph input (`op: 'input'`).
   */
  node: string | null;
  /** The node's op type (`MatMul`, `Gemm`, `Einsum`, the fused op), or `'input'` for a graph input read without a projection. */
  op: string;
  /** The weight tensor: an initializer name when `weightIsInitializer`, else the value name. */
  weight: string | null;
  weightIsInitializer: boolean;
  /** Weight shape when known ([in, out] for MatMul; Gemm with transB stores [out, in]). */
  weightShape: number[] | null;
  /** Gemm transB = 1: the weight is stored [out, in]. */
  transB: boolean;
  /** Bias initializer (or value) name, when there is one. */
  bias: string | null;
  /** The Add node that adds the bias (MatMul + Add); null for Gemm or no bias. */
  biasNode: string | null;
  /**
   * For a fused (packed) q/k/v projection: the columns [start, end) of the fused output
   * (and of the weight's output axis, and the bias) that belong to this projection.
   */
  columns: [number, number] | null;
  /** The fused projection output that was split, for packed projections. */
  packed: string | null;
  /** The Split / Slice node (or fused attention node) that carves this projection out. */
  split: string | null;
  /** How the weight is quantized ('MatMulNBits 4-bit', 'DequantizeLinear int8', 'MatMulInteger int8'), or null for a float weight. */
  quantization: string | null;
}

export interface MaskInfo {
  /**
   * How the mask enters the scores: 'additive' (Add), 'where' (Where), 'additive+where',
   * 'seqlens' (GroupQueryAttention's seqlens_k), 'input' (a fused op's mask input), or 'none'.
   */
  kind: 'none' | 'additive' | 'where' | 'additive+where' | 'seqlens' | 'input';
  /** The tensors that are combined with the scores (per site; may be per-layer slices). */
  values: string[];
  /**
   * The shared source of the mask: the value the per-layer slices/casts come from.
   * Sites built from the same mask subgraph have the same `source`.
   */
  source: string | null;
  /** Graph inputs whose data (not only shape) reaches the mask, e.g. 'attention_mask'. */
  inputs: string[];
  /** A triangular (causal) pattern was found in the mask, or the op is causal by definition. */
  causal: boolean;
  /** What made it causal: "Trilu 'x'", "Less 'x' between Range values", "triangular constant 'x' [1,1,64,64]", "attribute is_causal=1". */
  causalEvidence: string | null;
  /** A padding mask from a graph input reaches the scores. */
  padding: boolean;
  /** How many sites share `source` (1 when not shared). */
  shared: number;
  /**
   * What the linear-attention branch cannot express and ignores (it stays on the softmax
   * branch): position biases added to the scores, window masks. `convert --strict` refuses
   * such sites.
   */
  ignored: string[];
}

export interface RotaryInfo {
  /** 'rotate_half' (decomposed x·cos + rotate_half(x)·sin), 'RotaryEmbedding' (op), or 'fused' (inside the attention op). */
  kind: 'rotate_half' | 'rotate_every_two' | 'RotaryEmbedding' | 'fused';
  /** The cos / sin tensors as the site reads them (after per-layer Unsqueeze). */
  cos: string | null;
  sin: string | null;
  /** The shared sources of cos / sin (same for every site that shares the rotary subgraph). */
  cosSource: string | null;
  sinSource: string | null;
  interleaved: boolean;
  /** Partial rotary: how many dims of each head are rotated (null: all of them). */
  dims: number | null;
  /** Nodes of the rotary on q and k, per site. */
  nodes: string[];
  /** How many sites share `cosSource` (1 when not shared). */
  shared: number;
}

/**
 * What one axis of a tensor holds, major piece first: the batch, the sequence, the
 * heads, the head size, or (for projection outputs) all the features.
 */
export type AxisPiece = 'batch' | 'seq' | 'heads' | 'head_dim' | 'features';

/** Axis layouts: e.g. [['seq'], ['batch'], ['features']] for torch.nn.MultiheadAttention's projections. */
export interface SiteLayout {
  q: AxisPiece[][];
  k: AxisPiece[][];
  v: AxisPiece[][];
  /** The attention output, e.g. [['seq', 'batch'], ['heads', 'head_dim']] for [T·B, E]. */
  output: AxisPiece[][];
}

/** [B, T, features]: the layout of Hugging Face projections and of fused ops. */
export const CANONICAL_LAYOUT: SiteLayout = {
  q: [['batch'], ['seq'], ['features']],
  k: [['batch'], ['seq'], ['features']],
  v: [['batch'], ['seq'], ['features']],
  output: [['batch'], ['seq'], ['heads', 'head_dim']],
};

export interface KvNames {
  key: string;
  value: string;
}

export interface AttentionSite {
  /** 0-based, in data-flow order (topological position of the score MatMul / fused node). */
  layer: number;
  form: AttentionForm;
  /**
   * 'self': q, k and v are projected from the same hidden state; 'cross': k and v from
   * another (an encoder's output, or graph inputs holding its keys and values: `kvSource`).
   */
  kind: 'self' | 'cross';
  /** Anchor nodes: the Q·Kᵀ MatMul, the Softmax and the P·V MatMul (decomposed), or the fused node. */
  nodes: { qk: string | null; softmax: string | null; pv: string | null; fused: string | null };
  q: Projection;
  k: Projection;
  v: Projection;
  /** Axis layouts of the projection outputs and the attention output (the memory branch adapts to them). */
  layout: SiteLayout;
  /** Hq, Hkv, d. */
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Softmax scale applied to Q·Kᵀ (all factors combined, e.g. 1/√d). */
  scale: number;
  /**
   * 'constant' (Div/Mul by a constant), 'computed' (1/√d computed in the graph from shapes),
   * 'split' (factors on the Q and/or K paths: √scale on each, or a scaled query projection), 'attribute' (fused op attribute), 'default' (op default
   * 1/√d), 'none' (no scaling: 1).
   */
  scaleSource: 'constant' | 'computed' | 'split' | 'attribute' | 'default' | 'none';
  causal: boolean;
  mask: MaskInfo;
  rotary: RotaryInfo | null;
  /** KV cache inputs (graph inputs concatenated before the attention), null without a cache. */
  past: KvNames | null;
  /** KV cache outputs (graph outputs taken from the concatenation), null when not exported. */
  present: KvNames | null;
  /**
   * Keys and values read straight from graph inputs, without a projection in this graph
   * (only for cross-attention: an encoder-decoder's cached cross-attention K/V, Optimum's
   * `past_key_values.{i}.encoder.key/value`); `k` / `v` are then `op: 'input'` Projections.
   * null when the keys and values are projected in the graph.
   */
  kvSource: KvNames | null;
  /** The attention output [B,T,Hq·d] that feeds the output projection. */
  output: string;
  outputProjection: Projection;
  /** Sliding-window size when the op declares one (GroupQueryAttention local_window_size), else null. */
  window: number | null;
  /**
   * Normalizations on the q / k paths between the projection and the attention (Qwen3's
   * per-head q_norm / k_norm, OLMo2's norm of the projection output): their node names,
   * or null when there are none.
   */
  qkNorm: { q: string[]; k: string[] } | null;
  /** IR objects behind the names (not serialized by the report). */
  refs: SiteRefs;
}

/** The IR objects of a q, k or v projection. */
export interface ProjectionRef {
  /** The projection node (null for keys / values read from a graph input). */
  node: Node | null;
  /** For columns of a packed projection: the packed output they are sliced from. */
  packed: Value | null;
}

export interface SiteRefs {
  qk: Node | null;
  softmax: Node | null;
  pv: Node | null;
  fused: Node | null;
  /** The [B,T,H·d] projection outputs (null inside com.microsoft.Attention; the graph input for keys / values read from one). */
  q: Value | null;
  k: Value | null;
  v: Value | null;
  /** The q, k and v projections' nodes (and packed outputs). */
  projections: { q: ProjectionRef; k: ProjectionRef; v: ProjectionRef };
  /** The projection inputs. */
  qInput: Value | null;
  kInput: Value | null;
  vInput: Value | null;
  output: Value;
  outputProjection: Node;
  pastKey: Value | null;
  pastValue: Value | null;
  presentKey: Value | null;
  presentValue: Value | null;
  maskSource: Value | null;
  cosSource: Value | null;
  sinSource: Value | null;
}

/** A Softmax (or fused attention node) that was not taken as attention, and why. */
export interface RejectedSoftmax {
  node: string;
  opType: string;
  domain: string;
  /** Which form was tried. */
  form: AttentionForm | null;
  /** The stage that failed: 'core' (not attention), or a later one for an attention core whose paths did not resolve. */
  stage: 'core' | 'projections' | 'heads' | 'output' | 'add-ons';
  /** Why it is not an attention site, naming the node where the analysis stopped. */
  reason: string;
}

/** A mask or rotary subgraph read by several sites. */
export interface SharedSubgraph {
  kind: 'mask' | 'rotary';
  /** The shared source value (mask source, or rotary cos source). */
  source: string;
  /** Layers that read it. */
  layers: number[];
}

export interface AttentionDiscovery {
  sites: AttentionSite[];
  rejected: RejectedSoftmax[];
  shared: SharedSubgraph[];
  /**
   * Calls of model-local functions holding attention: discovery analysed a copy with them
   * inlined (as convert does), so the sites name the inlined nodes. Empty otherwise.
   */
  inlined: string[];
}

/**
 * Normalizations on the q/k paths (Qwen3's per-head q_norm/k_norm after the heads
 * Reshape, OLMo2's full-width norm on the projection output): recognised so the walk
 * can go through them to the projection. Either a norm op (RMSNormalization,
 * LayerNormalization, SimplifiedLayerNormalization) or a decomposed one: a small
 * subgraph of elementwise ops and a ReduceMean whose only non-constant input is x.
 */
import type { Node, Value } from '../../ir/index.js';
import { isWeightLike } from './f3_fused_qkv.js';

const NORM_OPS = ['RMSNormalization', 'LayerNormalization', 'SimplifiedLayerNormalization', 'SkipSimplifiedLayerNormalization'];
const ELEMENTWISE = new Set(['Mul', 'Div', 'Add', 'Sub', 'Sqrt', 'Reciprocal', 'Pow', 'ReduceMean', 'Cast', 'Neg']);

export interface NormSkip {
  /** The normalized tensor. */
  x: Value;
  nodes: Node[];
}

/** When `y` is a normalization of a single tensor, that tensor and the norm's nodes. */
export function skipNorm(y: Value): NormSkip | null {
  const p = y.producer;
  if (!p) return null;
  if (NORM_OPS.includes(p.opType) && (p.isOnnxDomain() || p.domain === 'com.microsoft') && p.inputs[0]) {
    return { x: p.inputs[0], nodes: [p] };
  }
  if (!ELEMENTWISE.has(p.opType) || !p.isOnnxDomain()) return null;
  const nodes = new Set<Node>();
  const frontier = new Set<Value>();
  let reduce = false;
  const stack: Value[] = [y];
  const seen = new Set<Value>();
  while (stack.length) {
    const v = stack.pop()!;
    if (seen.has(v)) continue;
    seen.add(v);
    if (isWeightLike(v, 4)) continue; // eps, weights, exponents
    const n = v.producer;
    if (!n || !n.isOnnxDomain() || !ELEMENTWISE.has(n.opType)) {
      frontier.add(v);
      continue;
    }
    nodes.add(n);
    if (nodes.size > 16) return null;
    if (n.opType === 'ReduceMean') reduce = true;
    for (const i of n.inputs) if (i) stack.push(i);
  }
  if (!reduce || frontier.size !== 1) return null;
  const [x] = frontier;
  return { x: x!, nodes: [...nodes] };
}

/**
 * Dynamically quantized projections, as onnxruntime's `quantize_dynamic` writes a MatMul:
 *
 *   x → DynamicQuantizeLinear → (y, y_scale, y_zp)
 *   MatMulInteger(y, W_q, y_zp, w_zp) → Cast(float) → Mul(·, y_scale · w_scale)   [→ Add bias]
 *
 * The scales may be folded in either order (Mul(Mul(cast, y_scale), w_scale) reads the
 * same); the float output is the Mul that completes them (y_scale and at least one
 * constant), so a later Mul by a constant (a query scaled by 1/√d) stays on the path. The float x and the float output stand for the projection: discovery traces
 * through it to the integer weight, LoRA reads x and adds to the float output, and the
 * weight stays integer.
 */
import { DataType, type Node, type Value } from '../../ir/index.js';
import { isOp } from './context.js';
import { isWeightLike } from './f3_fused_qkv.js';

export interface IntegerMatMul {
  /** The MatMulInteger node. */
  node: Node;
  /** The DynamicQuantizeLinear of the float input. */
  quantize: Node;
  /** The float input (before DynamicQuantizeLinear). */
  input: Value;
  /** The float output: the product after the scales (before any bias). */
  output: Value;
  /** The integer weight (MatMulInteger's B). */
  weight: Value;
}

/** The DynamicQuantizeLinear whose y and zero point a MatMulInteger reads, and the weight: null when it is not a dynamic projection. */
function quantizedOperands(mm: Node): { quantize: Node; weight: Value } | null {
  if (!isOp(mm, 'MatMulInteger')) return null;
  const [y, w, yZp] = mm.inputs;
  const q = y?.producer;
  if (!q || !isOp(q, 'DynamicQuantizeLinear') || q.outputs[0] !== y || !q.inputs[0]) return null;
  // without y's zero point the integer product is not x·W
  if (!yZp || q.outputs[2] !== yZp) return null;
  if (!w || !isWeightLike(w)) return null;
  return { quantize: q, weight: w };
}

/** Leaves of a product tree of Mul nodes (at most `depth` levels). */
function factors(v: Value, depth: number): Value[] {
  const p = v.producer;
  if (depth > 0 && isOp(p, 'Mul') && p!.inputs.length === 2 && p!.inputs.every((x) => !!x)) return p!.inputs.flatMap((x) => factors(x!, depth - 1));
  return [v];
}

/** True when `scales` multiply to y_scale times constants, at least one of them (the weight scale): the factor that dequantizes the product. */
function complete(scales: Value[], yScale: Value): boolean {
  const leaves = scales.flatMap((s) => factors(s, 3));
  return leaves.filter((l) => l === yScale).length === 1 && leaves.some((l) => l !== yScale) && leaves.every((l) => l === yScale || isWeightLike(l, 16));
}

/**
 * True when `scales` (outermost factor first) dequantize the product and the outermost
 * one is needed: a later Mul by a constant (a query scaled by 1/√d) is not part of the
 * projection.
 */
function dequantizes(scales: Value[], yScale: Value): boolean {
  return complete(scales, yScale) && !complete(scales.slice(1), yScale);
}

/**
 * The dynamically quantized projection whose float output is `v`: Mul by the scales of a
 * Cast(float) of MatMulInteger(DynamicQuantizeLinear(x)), or null.
 */
export function integerMatMulAt(v: Value): IntegerMatMul | null {
  const walk = (cur: Value, scales: Value[], depth: number): IntegerMatMul | null => {
    const p = cur.producer;
    if (!p) return null;
    if (isOp(p, 'Cast') && scales.length) {
      if (p.getInt('to', 0) !== DataType.FLOAT) return null;
      const mm = p.inputs[0]?.producer;
      const ops = mm ? quantizedOperands(mm) : null;
      if (!mm || !ops || !dequantizes(scales, ops.quantize.outputs[1]!)) return null;
      return { node: mm, quantize: ops.quantize, input: ops.quantize.inputs[0]!, output: v, weight: ops.weight };
    }
    if (depth === 0 || !isOp(p, 'Mul')) return null;
    const [a, b] = p.inputs;
    if (!a || !b) return null;
    return walk(a, [...scales, b], depth - 1) ?? walk(b, [...scales, a], depth - 1);
  };
  return walk(v, [], 3);
}

/** Forward from a MatMulInteger node to its float output (the Mul that completes the scales). */
export function integerMatMulOf(mm: Node): IntegerMatMul | null {
  if (!quantizedOperands(mm)) return null;
  const casts = mm.output.consumers().filter((c) => isOp(c, 'Cast'));
  if (casts.length !== 1) return null;
  let cur = casts[0]!.output;
  for (let i = 0; i < 3; i++) {
    const users = cur.consumers();
    if (users.length !== 1 || !isOp(users[0], 'Mul')) return null;
    cur = users[0]!.output;
    const found = integerMatMulAt(cur);
    if (found) return found.node === mm ? found : null;
  }
  return null;
}

/** The float outputs of the dynamically quantized projections that read `x` (through its DynamicQuantizeLinear). */
export function integerMatMulsReading(x: Value): IntegerMatMul[] {
  const out: IntegerMatMul[] = [];
  for (const q of x.consumers()) {
    if (!isOp(q, 'DynamicQuantizeLinear') || q.inputs[0] !== x || !q.outputs[0]) continue;
    for (const mm of q.outputs[0].consumers()) {
      const p = mm.inputs[0] === q.outputs[0] ? integerMatMulOf(mm) : null;
      if (p) out.push(p);
    }
  }
  return out;
}

/**
 * Projections: from a [B,T,H·d] tensor back to the MatMul/Gemm (+ bias) that produced
 * it, including the F3 case (GPT-2 style): one fused q/k/v projection (MatMul or Gemm,
 * possibly between flattening Reshapes) carved into q, k and v by a Split (3 outputs)
 * or by Slices on the last axis.
 */
import { type Node, type Value, dataTypeName, describeNode } from '../../ir/index.js';
import { constantTensor } from '../util/constants.js';
import { intAttr, isOp, nodeName, producerIs, reject } from './context.js';
import { einsumProjection, einsumProjectionAt } from './einsum.js';
import { integerMatMulAt, integerMatMulsReading } from './integer.js';
import type { Projection } from './site.js';

/** A projection with its IR objects. */
export interface ProjectionDraft {
  info: Projection;
  /** The projection output (the tensor the site reads), null inside fused ops. */
  value: Value | null;
  input: Value | null;
  /** The projection node; null for keys / values read from a graph input (inputSource). */
  node: Node | null;
  /** For columns of a packed projection: its whole output, which the memory branch slices. */
  packed?: Value | null;
  /** Output width (H·d) when known from the weight shape or the split. */
  width: number | null;
}

/** A projection that has a node: every output projection, every projection of a plain or fused op. */
export type NodeProjectionDraft = ProjectionDraft & { node: Node };

/**
 * Keys or values read straight from the graph input `v` (no projection in the graph: the
 * cached cross-attention K/V of an encoder-decoder), `width` = H·d of its feature axes.
 */
export function inputSource(v: Value, width: number): ProjectionDraft {
  const info: Projection = { ...NO_WEIGHT, output: v.name, input: v.name, node: null, op: 'input' };
  return { info, value: v, input: v, node: null, width };
}

/** True when `v` is computed from initializers, constants and shapes only (no graph input's data reaches it). */
export function isWeightLike(v: Value, budget = 32): boolean {
  const seen = new Set<Value>();
  const stack = [v];
  while (stack.length) {
    const x = stack.pop()!;
    if (seen.has(x)) continue;
    seen.add(x);
    if (seen.size > budget) return false;
    if (x.initializer) continue;
    const p = x.producer;
    if (!p) return false; // a graph input (that is not an initializer)
    if (p.opType === 'Constant') continue;
    // a shape is fixed for given input sizes, not data (torch slices the in_proj weight of a
    // cross-attention by q.size(-1))
    if (p.opType === 'Shape' || p.opType === 'Size') continue;
    for (const i of p.inputs) if (i) stack.push(i);
  }
  return true;
}

function weightShape(w: Value): number[] | null {
  const t = constantTensor(w);
  if (t) return t.dims.slice();
  // QDQ: the weight is DequantizeLinear of a quantized initializer of the same shape
  const dq = w.producer?.opType === 'DequantizeLinear' ? constantTensor(w.producer.inputs[0]) : undefined;
  if (dq) return dq.dims.slice();
  const ty = w.type;
  if (ty && ty.kind === 'tensor' && ty.shape && ty.shape.every((d) => d.value !== undefined)) return ty.shape.map((d) => d.value!);
  return null;
}

/** The fields of a projection before its weight, bias and cut are known. */
const NO_WEIGHT = {
  weight: null,
  weightIsInitializer: false,
  weightShape: null,
  transB: false,
  bias: null,
  biasNode: null,
  columns: null,
  packed: null,
  split: null,
  quantization: null,
} as const satisfies Partial<Projection>;

function baseProjection(node: Node, op: string): Projection {
  return { ...NO_WEIGHT, output: null, input: null, node: nodeName(node), op };
}

/** A com.microsoft MatMulNBits producing `v` (a projection with block-quantized weights). */
function nBits(v: Value): Node | null {
  const p = v.producer;
  return p && p.opType === 'MatMulNBits' && p.domain === 'com.microsoft' ? p : null;
}

/**
 * A plain projection ending at `v`: MatMul(x, W), MatMul + Add(bias) in either operand
 * order, Gemm(x, W, C), or a Gemm between flattening Reshapes; MatMulNBits, a dynamically
 * quantized MatMulInteger (integer.ts: its float input and output stand for it) and an
 * Einsum with a weight (einsum.ts: Keras EinsumDense, features on several axes) count as
 * MatMuls. Returns undefined when `v` is not such a projection (no rejection thrown).
 */
export function plainProjection(v: Value): NodeProjectionDraft | undefined {
  let cur = v;
  let biasNode: Node | null = null;
  let bias: Value | null = null;
  const add = producerIs(cur, 'Add');
  if (add) {
    const [a, b] = [add.inputs[0], add.inputs[1]];
    const pick = (lin: Value | null | undefined, bb: Value | null | undefined): boolean => {
      if (!lin || !bb) return false;
      if (!isWeightLike(bb, 24)) return false;
      if (!producerIs(lin, 'MatMul', 'Gemm') && !producerIs(lin, 'Reshape') && !nBits(lin) && !integerMatMulAt(lin) && !einsumProjectionAt(lin)) return false;
      cur = lin;
      bias = bb;
      biasNode = add;
      return true;
    };
    if (!pick(a, b) && !pick(b, a)) return undefined;
  }
  // GPT-2 Conv1D export: Reshape(Gemm(Reshape(x, [-1, in]), W, b), [B, T, out])
  let outerReshape: Node | null = null;
  const rs = producerIs(cur, 'Reshape');
  if (rs && producerIs(rs.inputs[0], 'Gemm', 'MatMul')) {
    outerReshape = rs;
    cur = rs.inputs[0]!;
  }
  const integer = integerMatMulAt(cur);
  const einsum = einsumProjectionAt(cur);
  const mm = producerIs(cur, 'MatMul', 'Gemm') ?? nBits(cur) ?? integer?.node ?? einsum?.node;
  if (!mm) return undefined;
  const x = integer?.input ?? einsum?.x ?? mm.inputs[0];
  const w = integer?.weight ?? einsum?.w ?? mm.inputs[1];
  if (!x || !w || !isWeightLike(w)) return undefined;
  const info = baseProjection(mm, mm.opType);
  let input: Value = x;
  const inner = producerIs(x, 'Reshape');
  if (outerReshape && inner && inner.inputs[0]) input = inner.inputs[0];
  info.input = input.name;
  info.weight = w.name;
  info.weightIsInitializer = !!w.initializer;
  info.weightShape = weightShape(w);
  if (mm.opType === 'Gemm') {
    info.transB = intAttr(mm, 'transB', 0) === 1;
    if (intAttr(mm, 'transA', 0) === 1) return undefined;
    const c = mm.inputs[2];
    if (c) {
      if (bias) return undefined; // Gemm bias and an Add bias: not a plain projection
      bias = c;
    }
  }
  if (mm.opType === 'MatMulNBits') {
    // 4-bit (or n-bit) blocks: [K, N] from the attributes; its bias is input 5 when present
    info.weightShape = [mm.getInt('K'), mm.getInt('N')];
    info.quantization = `MatMulNBits ${mm.getInt('bits', 4)}-bit`;
  } else if (integer) {
    info.quantization = `MatMulInteger ${dataTypeName(constantTensor(w)?.dataType ?? 0).toLowerCase()}`;
  } else if (w.producer?.opType === 'DequantizeLinear') {
    info.quantization = `DequantizeLinear ${dataTypeName(constantTensor(w.producer.inputs[0])?.dataType ?? 0).toLowerCase()}`;
  }
  info.bias = bias ? (bias as Value).name : null;
  info.biasNode = biasNode ? nodeName(biasNode) : null;
  info.output = v.name;
  let width: number | null = null;
  if (info.weightShape && info.weightShape.length === 2) width = info.transB ? info.weightShape[0]! : info.weightShape[1]!;
  if (einsum) {
    // the product of the weight's feature axes (letters of W in the output)
    const dims = info.weightShape;
    width = dims && dims.length === einsum.letters.w.length ? [...einsum.letters.w].reduce((acc, c, i) => (einsum.letters.out.includes(c) ? acc * dims[i]! : acc), 1) : null;
  }
  return { info, value: v, input, node: mm, width };
}

/** A projection inside a fused op (com.microsoft.Attention: weights are an input of the op). */
export function inOpProjection(op: Node, input: Value | null, weight: Value | null, bias: Value | null, columns: [number, number]): NodeProjectionDraft {
  const info = baseProjection(op, op.opType);
  info.input = input?.name ?? null;
  info.weight = weight?.name ?? null;
  info.weightIsInitializer = !!weight?.initializer;
  info.weightShape = weight ? weightShape(weight) : null;
  info.bias = bias?.name ?? null;
  info.columns = columns;
  info.split = nodeName(op);
  return { info, value: null, input, node: op, width: columns[1] - columns[0] };
}

/**
 * The output projection fed by `out` ([B,T,Hq·d]): MatMul(out, W) [+ bias], or a Gemm
 * behind a flattening Reshape (GPT-2). Rejects when there is none.
 */
export function outputProjection(out: Value, where: string): NodeProjectionDraft {
  const candidates: Value[] = [];
  for (const c of out.consumers()) {
    if ((isOp(c, 'MatMul') || (c.opType === 'MatMulNBits' && c.domain === 'com.microsoft')) && c.inputs[0] === out) candidates.push(c.output);
    else if (isOp(c, 'Einsum') && einsumProjection(c)?.x === out) candidates.push(c.output);
    else if (isOp(c, 'Gemm') && c.inputs[0] === out) candidates.push(c.output);
    else if (isOp(c, 'Reshape') && c.inputs[0] === out) {
      for (const g of c.output.consumers()) if (isOp(g, 'Gemm', 'MatMul') && g.inputs[0] === c.output) candidates.push(g.output);
    }
  }
  for (const p of integerMatMulsReading(out)) candidates.push(p.output);
  for (const lin of candidates) {
    // extend to the bias Add / un-flattening Reshape when present
    let end = lin;
    for (const c of lin.consumers()) {
      if (isOp(c, 'Add') && c.inputs.some((x) => x && x !== lin && isWeightLike(x, 24))) end = c.output;
    }
    if (end === lin) {
      for (const c of lin.consumers()) if (isOp(c, 'Reshape') && producerIs(lin, 'Gemm')) end = c.output;
    }
    const proj = plainProjection(end) ?? plainProjection(lin);
    if (proj) return proj;
  }
  const users = out.consumers().map((c) => describeNode(c)).join(', ') || 'nothing';
  return reject(`${where}: the attention output '${out.name}' does not feed an output projection (MatMul/Gemm with a weight); it is read by ${users}`);
}

/**
 * One of q/k/v inside a packed tensor that a fused op splits itself (GroupQueryAttention
 * with packed QKV): no separate tensor exists, so `output` is null and `packed` +
 * `columns` say where it is.
 */
export function packedPart(fused: NodeProjectionDraft, op: Node, columns: [number, number]): NodeProjectionDraft {
  const info: Projection = { ...fused.info, output: null, columns, packed: fused.value?.name ?? null, split: nodeName(op) };
  return { info, value: null, input: fused.input, node: fused.node, packed: fused.value, width: columns[1] - columns[0] };
}

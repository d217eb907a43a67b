/**
 * Value-preserving units on a q/k/v path, recognised as a whole by the trace (trace.ts):
 * rotary embeddings (decomposed rotate_half, or the RotaryEmbedding op) and scale
 * factors (√scale on Q and K, constant or computed from shapes).
 */
import { type Node, type Value, describeNode } from '../../ir/index.js';
import { pattern } from '../pattern/pattern.js';
import { matchPattern } from '../pattern/matcher.js';
import { constantValues, evalScalar, scalarValue } from '../util/constants.js';
import {
  axesOf,
  describeValue,
  exportedAs,
  graphInputBehind,
  intAttr,
  isOp,
  known,
  producerIs,
  reject,
  samePerm,
  shapeVector,
  stripBack,
  transposePerm,
} from './context.js';
import { type ProjectionDraft, plainProjection, resolveProjection } from './f3_fused_qkv.js';
import { skipNorm } from './norm.js';

export interface RotaryDraft {
  kind: 'rotate_half' | 'RotaryEmbedding';
  cos: Value;
  sin: Value;
  interleaved: boolean;
  nodes: Node[];
}

// ---- rotary -----------------------------------------------------------------------------

const half = (axis: unknown): boolean | string => axis === -1 || axis === 3 || `rotate_half concatenates on axis ${String(axis)}, not the last`;

/** x·cos + rotate_half(x)·sin, rotate_half(x) = Concat(-x2, x1) with x1, x2 the halves of x (Slice or Split). */
export const ROTATE_HALF = pattern((op) => {
  const x = op.var('x');
  const slice = () => op.Slice(x, op.any(), op.any(), { extraInputs: true });
  const [s0, s1] = op.nodeOutputs('Split', [x], { outputs: 2, extraInputs: true, numOutputs: 2 });
  const rotated = op.or(
    op.Concat(op.Neg(slice()), slice(), { attrs: { axis: half } }),
    op.Concat(op.Neg(s1!), s0!, { attrs: { axis: half } }),
  );
  return op.Add(op.Mul(x, op.var('cos'), { commute: true }), op.Mul(rotated, op.var('sin'), { commute: true }), { commute: true, as: 'add' });
});

export function matchRotateHalf(add: Node): RotaryDraft | null {
  const { match } = matchPattern(ROTATE_HALF, add, { trace: false });
  if (!match) return null;
  return { kind: 'rotate_half', cos: match.value('cos'), sin: match.value('sin'), interleaved: false, nodes: [...match.nodes] };
}

/** RotaryEmbedding (ONNX opset 23: X, cos, sin, pos; com.microsoft: X, pos, cos, sin). */
export function rotaryOp(n: Node): RotaryDraft | null {
  if (n.opType !== 'RotaryEmbedding') return null;
  const ms = n.domain === 'com.microsoft';
  if (!ms && !n.isOnnxDomain()) return null;
  const cos = ms ? n.inputs[2] : n.inputs[1];
  const sin = ms ? n.inputs[3] : n.inputs[2];
  if (!cos || !sin) return null;
  return { kind: 'RotaryEmbedding', cos, sin, interleaved: intAttr(n, 'interleaved', 0) === 1, nodes: [n] };
}

// ---- √scale ---------------------------------------------------------------------------------

/** Mul(x, c) / Div(x, c) with c a constant or computed from shapes; returns x and the factor. */
export function scaleStep(n: Node): { next: Value; factor: number | null; computed: boolean } | null {
  if (!isOp(n, 'Mul', 'Div')) return null;
  const [a, b] = n.inputs;
  if (!a || !b) return null;
  const orders: [Value, Value][] = n.opType === 'Mul' ? [[a, b], [b, a]] : [[a, b]];
  for (const [x, c] of orders) {
    const s = evalScalar(c);
    if (s !== undefined) return { next: x, factor: n.opType === 'Div' ? 1 / s : s, computed: false };
    if (isComputedScale(c)) return { next: x, factor: null, computed: true };
  }
  return null;
}

/** True when `v` is computed from a Shape through Sqrt / Pow(0.5) (e.g. √d), with no data input. */
export function isComputedScale(v: Value): boolean {
  let sawRoot = false;
  let sawShape = false;
  const seen = new Set<Value>();
  const stack = [v];
  while (stack.length) {
    const x = stack.pop()!;
    if (seen.has(x)) continue;
    seen.add(x);
    if (seen.size > 40) return false;
    const p = x.producer;
    if (!p) {
      if (x.initializer) continue;
      return false;
    }
    if (p.opType === 'Shape' || p.opType === 'Size') {
      sawShape = true;
      continue;
    }
    if (p.opType === 'Constant' || p.opType === 'ConstantOfShape') continue;
    if (p.opType === 'Sqrt' || p.opType === 'Reciprocal') sawRoot = sawRoot || p.opType === 'Sqrt';
    if (p.opType === 'Pow') {
      const e = scalarValue(p.inputs[1]);
      if (e !== undefined && Math.abs(Math.abs(e) - 0.5) < 1e-6) sawRoot = true;
    }
    for (const i of p.inputs) if (i) stack.push(i);
  }
  return sawRoot && sawShape;
}

export function matchedX(rot: RotaryDraft, add: Node): Value | null {
  // the Mul reading x directly: its other operand is cos
  for (const v of add.inputs) {
    const m = producerIs(v, 'Mul');
    if (!m) continue;
    if (m.inputs[0] === rot.cos && m.inputs[1]) return m.inputs[1];
    if (m.inputs[1] === rot.cos && m.inputs[0]) return m.inputs[0];
  }
  return null;
}

/** The shared source of a rotary cos/sin tensor (per-layer Unsqueeze/Cast/Gather stripped). */
export function rotarySource(v: Value): Value {
  return stripBack(v, ['Unsqueeze', 'Cast', 'Squeeze', 'Identity', 'Expand', 'Reshape']);
}


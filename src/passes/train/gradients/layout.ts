/**
 * Gradient rules of layout ops. Shape-only ops send the gradient back through a Reshape
 * to the input's shape; selections (Gather, GatherElements, GatherND, Tile, and Slice with
 * steps other than 1) scatter-add it to the positions they read, found by applying the
 * same op to a tensor of flat positions, so one rule serves every indexing form; Slice
 * with unit steps and Pad are each other's gradient.
 */
import type { AttributeInput } from '../../../ir/attribute.js';
import { DataType } from '../../../ir/dtype.js';
import type { Node } from '../../../ir/node.js';
import type { Value } from '../../../ir/value.js';
import { END } from '../../../ops/emit.js';
import { constantValues } from '../../util/constants.js';
import { type GradContext, registerGradient } from './registry.js';

/** Only the data input (0) carries a gradient; the others are shapes, indices, axes. */
const DATA = { inputs: [0] };

function d0(dy: readonly (Value | null)[]): Value {
  return dy[0]!;
}

/** Reshape the gradient back to the data input's shape. */
function reshapeBack(cx: GradContext, n: Node, dy: readonly (Value | null)[]): (Value | null)[] {
  const x = n.requireInput(0);
  return [cx.e.reshapeTo(d0(dy), cx.e.shape(x)), ...n.inputs.slice(1).map(() => null)];
}
for (const op of ['Reshape', 'Flatten', 'Squeeze', 'Unsqueeze']) registerGradient(op, reshapeBack, DATA);

registerGradient('Transpose', (cx, n, dy) => {
  const r = cx.rank(n.requireInput(0));
  const perm = n.getInts('perm', Array.from({ length: r }, (_, i) => r - 1 - i));
  const inv = new Array<number>(r);
  perm.forEach((p, i) => (inv[p] = i));
  return [cx.e.transpose(d0(dy), inv)];
});

registerGradient('Expand', (cx, n, dy) => [cx.unbroadcast(d0(dy), n.requireInput(0)), null], DATA);

registerGradient('Concat', (cx, n, dy, needs) => {
  const { e } = cx;
  const axis = n.getInt('axis');
  let offset: Value = e.ints([0]);
  return n.inputs.map((x, i) => {
    if (!x) return null;
    const len = e.dim(x, axis);
    const end = e.add(offset, len);
    const g = needs[i] ? e.sliceDyn(d0(dy), axis, offset, end) : null;
    offset = end;
    return g;
  });
});

registerGradient('Split', (cx, n, dy) => {
  const axis = n.getInt('axis', 0);
  const parts = n.outputs.map((y, i) => dy[i] ?? cx.zerosLike(y));
  return [cx.e.concat(parts, axis), ...n.inputs.slice(1).map(() => null)];
}, DATA);

registerGradient('CumSum', (cx, n, dy) => [
  cx.e.op('CumSum', [d0(dy), n.requireInput(1)], { exclusive: n.getInt('exclusive', 0), reverse: 1 - n.getInt('reverse', 0) }),
  null,
], DATA);

registerGradient('ReverseSequence', (cx, n, dy) => [
  cx.e.op('ReverseSequence', [d0(dy), n.requireInput(1)], { batch_axis: n.getInt('batch_axis', 1), time_axis: n.getInt('time_axis', 0) }),
  null,
], DATA);

registerGradient('Trilu', (cx, n, dy) => [cx.e.op('Trilu', n.input(1) ? [d0(dy), n.input(1)] : [d0(dy)], { upper: n.getInt('upper', 1) }), null], DATA);

registerGradient('Pad', (cx, n, dy) => {
  const mode = n.getString('mode', 'constant');
  if (mode !== 'constant') throw new Error(`Pad mode '${mode}' has no gradient rule (only 'constant')`);
  if (n.input(3)) throw new Error('Pad with an axes input has no gradient rule');
  const { e } = cx;
  const x = n.requireInput(0);
  const r = cx.rank(x);
  const pads = n.requireInput(1);
  const starts = e.slice(pads, 0, 0, r);
  const ends = e.sub(e.shape(d0(dy)), e.slice(pads, 0, r, 2 * r));
  const axes = e.ints(Array.from({ length: r }, (_, i) => i));
  return [e.op('Slice', [d0(dy), starts, ends, axes]), null, null, null];
}, DATA);

/** The flat positions of x's elements, shaped like x (int64). */
function positions(cx: GradContext, x: Value): { pos: Value; size: Value } {
  const b = cx.e.b;
  const size = b.op('Size', [x]);
  const range = b.op('Range', [b.constant(BigInt64Array.from([0n]), []), size, b.constant(BigInt64Array.from([1n]), [])]);
  return { pos: cx.e.reshapeTo(range, cx.e.shape(x)), size };
}

/** Scatter-adds dy to the positions that a selection op read from its data input 0. */
function selectionGradient(cx: GradContext, n: Node, dy: readonly (Value | null)[]): (Value | null)[] {
  const { e } = cx;
  const x = n.requireInput(0);
  const { pos, size } = positions(cx, x);
  const attrs: Record<string, AttributeInput> = {};
  for (const [k, a] of n.attributes) attrs[k] = a;
  const picked = e.op(n.opType, [pos, ...n.inputs.slice(1)], attrs);
  const zeros = e.op('ConstantOfShape', [e.unsqueeze(size, [0])]);
  const dt = cx.dtype(x);
  const zerosT = dt === undefined || dt === DataType.FLOAT ? zeros : e.cast(zeros, dt);
  const flat = e.op('ScatterElements', [zerosT, e.reshape(picked, [-1]), e.reshape(d0(dy), [-1])], { axis: 0, reduction: 'add' });
  return [e.reshapeTo(flat, e.shape(x)), ...n.inputs.slice(1).map(() => null)];
}
for (const op of ['Gather', 'GatherElements', 'GatherND', 'Tile']) registerGradient(op, selectionGradient, DATA);

/**
 * Pads of a unit-step slice with constant bounds that lie inside the dim (and leave a
 * non-empty range) in every probe run: no clamping needed. begin is a constant or
 * 'dim+' (dim + start, for a negative start); end is a constant or 'dim-' (dim - end).
 */
function staticSlicePads(start: number | undefined, end: number | undefined, dims: number[] | undefined): { begin: number | 'dim+'; end: number | 'dim-' } | undefined {
  if (start === undefined || end === undefined || !dims?.length) return undefined;
  const big = end > Number.MAX_SAFE_INTEGER / 2;
  for (const n of dims) {
    const s = start < 0 ? n + start : start;
    const t = big ? n : end < 0 ? n + end : end;
    if (s < 0 || s > n || t < 0 || t > n || t <= s) return undefined;
  }
  return { begin: start < 0 ? 'dim+' : start, end: big ? 0 : end < 0 ? -end : 'dim-' };
}

/**
 * Slice with unit steps: the gradient is dy padded back, the pads computed from the
 * clamped, normalised bounds (dynamic bounds and negative indices included). Other steps
 * go through the selection rule.
 */
registerGradient('Slice', (cx, n, dy) => {
  const { e } = cx;
  const x = n.requireInput(0);
  const stepsIn = n.input(4);
  const steps = stepsIn ? constantValues(stepsIn) : undefined;
  if (stepsIn && (!steps || steps.some((s) => s !== 1))) return selectionGradient(cx, n, dy);
  const r = cx.rank(x);
  const axesIn = n.input(3);
  let axes = axesIn ? constantValues(axesIn) : undefined;
  if (axesIn && !axes) return selectionGradient(cx, n, dy);
  const startsIn = n.requireInput(1);
  const endsIn = n.requireInput(2);
  const constStarts = constantValues(startsIn);
  if (!axes) {
    const k = constStarts?.length ?? constantValues(endsIn)?.length;
    if (k === undefined) return selectionGradient(cx, n, dy);
    axes = Array.from({ length: k }, (_, i) => i);
  }
  const norm = axes.map((a) => (a < 0 ? a + r : a));
  const zero = e.ints([0]);
  const begins: Value[] = Array.from({ length: r }, () => zero);
  const finals: Value[] = Array.from({ length: r }, () => zero);
  const clampIndex = (v: Value, len: Value): Value => {
    const wrapped = e.op('Where', [e.op('Less', [v, zero]), e.add(v, len), v]);
    return e.op('Min', [e.op('Max', [wrapped, zero]), len]);
  };
  const pick = (v: Value, i: number, consts: number[] | undefined): Value => {
    const c = consts?.[i];
    if (c !== undefined) return e.ints([c === END || c > Number.MAX_SAFE_INTEGER / 2 ? END : c]);
    return e.slice(v, 0, i, i + 1);
  };
  const constEnds = constantValues(endsIn);
  const seen = cx.dims(x);
  norm.forEach((a, i) => {
    const fast = staticSlicePads(constStarts?.[i], constEnds?.[i], seen?.map((d) => d[a]!));
    if (fast) {
      begins[a] = fast.begin === 'dim+' ? e.add(e.dim(x, a), e.ints([constStarts![i]!])) : e.ints([fast.begin]);
      finals[a] = fast.end === 'dim-' ? e.sub(e.dim(x, a), e.ints([constEnds![i]!])) : e.ints([fast.end]);
      return;
    }
    const len = e.dim(x, a);
    const s = clampIndex(pick(startsIn, i, constStarts), len);
    const t = clampIndex(pick(endsIn, i, constEnds), len);
    begins[a] = s;
    finals[a] = e.sub(len, e.op('Max', [t, s]));
  });
  const pads = e.concat([...begins, ...finals], 0);
  return [e.padDyn(d0(dy), pads), null, null, null, null];
}, DATA);


/**
 * RotaryEmbedding (opset 23 and com.microsoft) rotates pairs of channels by the angle of
 * each position: a linear map whose transpose is the rotation by the opposite angle, so
 * dx = RotaryEmbedding(dy) with the sine cache negated (the same attributes, positions and
 * cosines; channels past rotary_embedding_dim pass through both ways).
 */
function rotaryBack(sinIndex: number) {
  return (cx: GradContext, n: Node, dy: readonly (Value | null)[]): (Value | null)[] => {
    const inputs = n.inputs.map((v, i) => (i === 0 ? d0(dy) : i === sinIndex ? cx.e.op('Neg', [v!]) : v));
    const back = cx.e.b.node(n.opType, inputs, Object.fromEntries([...n.attributes].map(([k, a]) => [k, a])), { domain: n.domain, name: `${n.name || 'RotaryEmbedding'}_grad` });
    return [back.outputs[0]!, ...n.inputs.slice(1).map(() => null)];
  };
}
// inputs: X, cos_cache, sin_cache, position_ids (opset 23); input, position_ids, cos_cache, sin_cache (com.microsoft)
registerGradient('RotaryEmbedding', rotaryBack(2), DATA);
registerGradient('RotaryEmbedding', rotaryBack(3), { ...DATA, domain: 'com.microsoft' });

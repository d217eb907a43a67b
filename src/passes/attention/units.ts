/**
 * Value-preserving units on a q/k/v path, recognised as a whole by the trace (trace.ts):
 * rotary embeddings (any rotation written with standard ops, partial rotary, the
 * RotaryEmbedding ops) and scales computed from shapes. ROTATE_HALF is kept as a
 * declarative pattern for pipelines that want exactly Llama's form.
 */
import { type Node, type Value } from '../../ir/index.js';
import { pattern } from '../pattern/pattern.js';
import { constantValues, scalarValue } from '../util/constants.js';
import { intAttr, stripBack } from './context.js';

export interface RotaryDraft {
  /** 'rotate_half' (Llama), 'rotate_every_two' (GPT-J's interleaved pairs), 'RotaryEmbedding' (the op). */
  kind: 'rotate_half' | 'rotate_every_two' | 'RotaryEmbedding';
  cos: Value;
  sin: Value;
  interleaved: boolean;
  nodes: Node[];
  /** Partial rotary (GPT-J, Phi): only the first `dims` of each head are rotated; null when all are. */
  dims: number | null;
}

/** A rotary unit on a path: the rotation and the tensor it rotates. */
export interface RotaryUnit {
  draft: RotaryDraft;
  x: Value;
}

/** Ops a rotation of x is built from (rotate_half, rotate_every_two): data moves, signs flip. */
const ROTATION_OPS = new Set(['Slice', 'Neg', 'Concat', 'Unsqueeze', 'Squeeze', 'Reshape', 'Flatten', 'Split', 'Gather', 'Identity', 'Cast', 'Transpose', 'SequenceConstruct', 'ConcatFromSequence']);

/** Is `v` computed from `x` alone (plus constants and shapes) through rotation ops? Returns its nodes, or null. */
function rotationOf(v: Value, x: Value): Node[] | null {
  const nodes = new Set<Node>();
  let reached = false;
  const stack = [v];
  const seen = new Set<Value>();
  while (stack.length) {
    const y = stack.pop()!;
    if (seen.has(y)) continue;
    seen.add(y);
    if (y === x) {
      reached = true;
      continue;
    }
    if (seen.size > 48) return null;
    const p = y.producer;
    if (!p) {
      if (y.initializer) continue;
      return null; // another graph input
    }
    if (p.opType === 'Constant' || p.opType === 'Shape') continue;
    if (!p.isOnnxDomain() || !ROTATION_OPS.has(p.opType)) {
      // a Mul by -1 also flips a sign
      if (!(p.opType === 'Mul' && p.inputs.some((i) => i && scalarValue(i) === -1))) return null;
    }
    nodes.add(p);
    // only the data input carries x; shape / index inputs are constants or shapes
    if (p.opType === 'Concat' || p.opType === 'Mul' || p.opType === 'SequenceConstruct') for (const i of p.inputs) i && stack.push(i);
    else if (p.inputs[0]) stack.push(p.inputs[0]);
  }
  return reached ? [...nodes] : null;
}

/** True when `x` does not reach `v` (cos / sin tables do not depend on the rotated tensor). */
function independentOf(v: Value, x: Value): boolean {
  const stack = [v];
  const seen = new Set<Value>();
  while (stack.length) {
    const y = stack.pop()!;
    if (y === x) return false;
    if (seen.has(y) || seen.size > 400) continue;
    seen.add(y);
    for (const i of y.producer?.inputs ?? []) if (i) stack.push(i);
  }
  return true;
}

/**
 * A rotary embedding written with standard ops, whatever the rotation:
 * Add(Mul(x, cos), Mul(rot(x), sin)) in any operand order, where rot(x) moves and negates
 * elements of x only (rotate_half: Concat(−x2, x1); GPT-J's rotate_every_two: strided
 * slices stacked by Unsqueeze + Concat or torch.stack's SequenceConstruct + ConcatFromSequence) and cos / sin do not depend on x. Interleaved when the rotation takes
 * strided (step 2) slices.
 */
export function matchRotation(add: Node): RotaryUnit | null {
  if (!add.is('Add') || add.inputs.length !== 2) return null;
  const [m1, m2] = add.inputs.map((v) => (v?.producer?.is('Mul') ? v.producer : null));
  if (!m1 || !m2) return null;
  for (const [plain, rotated] of [
    [m1, m2],
    [m2, m1],
  ] as const) {
    for (const xi of [0, 1]) {
      const x = plain.inputs[xi];
      const cos = plain.inputs[1 - xi];
      if (!x || !cos || !independentOf(cos, x)) continue;
      for (const ri of [0, 1]) {
        const rot = rotated.inputs[ri];
        const sin = rotated.inputs[1 - ri];
        if (!rot || !sin || rot === x || !independentOf(sin, x)) continue;
        const nodes = rotationOf(rot, x);
        if (!nodes || !nodes.some((n) => n.opType === 'Neg' || n.opType === 'Mul')) continue;
        const strided = nodes.some((n) => n.opType === 'Slice' && n.inputs[4] && (constantValues(n.inputs[4], 8) ?? []).some((st) => st !== 1));
        return {
          draft: { kind: strided ? 'rotate_every_two' : 'rotate_half', cos, sin, interleaved: strided, nodes: [add, plain, rotated, ...nodes], dims: null },
          x,
        };
      }
    }
  }
  return null;
}

/**
 * Partial rotary (GPT-J rotary_dim, Phi partial_rotary_factor): Concat on the last axis of
 * a rotation of x[..., :r] and x[..., r:] itself.
 */
function partialRotation(concat: Node): RotaryUnit | null {
  if (!concat.is('Concat') || concat.inputs.length !== 2) return null;
  const axis = intAttr(concat, 'axis', 0);
  const [a, b] = concat.inputs;
  const rot = a?.producer ? matchRotation(a.producer) : null;
  if (!rot || !b) return null;
  const head = rot.x.producer;
  const tail = b.producer;
  if (!head?.is('Slice') || !tail?.is('Slice') || head.inputs[0] !== tail.inputs[0] || !head.inputs[0]) return null;
  const axesOk = (n: Node): boolean => {
    const ax = n.inputs[3] ? constantValues(n.inputs[3], 4) : [0];
    return !!ax && ax.length === 1 && (ax[0] === -1 || ax[0] === axis || axis === -1);
  };
  const [hs, he, ts] = [constantValues(head.inputs[1], 1)?.[0], constantValues(head.inputs[2], 1)?.[0], constantValues(tail.inputs[1], 1)?.[0]];
  if (!axesOk(head) || !axesOk(tail) || hs !== 0 || he === undefined || ts !== he) return null;
  return { draft: { ...rot.draft, nodes: [concat, head, tail, ...rot.draft.nodes], dims: he }, x: head.inputs[0] };
}

/** The rotary unit ending at node `n`, if it is one: the op, a rotation, or a partial rotation. */
export function rotaryUnit(n: Node): RotaryUnit | null {
  const op = rotaryOp(n);
  if (op) return n.inputs[0] ? { draft: op, x: n.inputs[0] } : null;
  return n.is('Add') ? matchRotation(n) : n.is('Concat') ? partialRotation(n) : null;
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


/** RotaryEmbedding (ONNX opset 23: X, cos, sin, pos; com.microsoft: X, pos, cos, sin). */
export function rotaryOp(n: Node): RotaryDraft | null {
  if (n.opType !== 'RotaryEmbedding') return null;
  const ms = n.domain === 'com.microsoft';
  if (!ms && !n.isOnnxDomain()) return null;
  const cos = ms ? n.inputs[2] : n.inputs[1];
  const sin = ms ? n.inputs[3] : n.inputs[2];
  if (!cos || !sin) return null;
  const dims = n.attribute('rotary_embedding_dim') ? n.getInt('rotary_embedding_dim') : 0;
  return { kind: 'RotaryEmbedding', cos, sin, interleaved: intAttr(n, 'interleaved', 0) === 1, nodes: [n], dims: dims > 0 ? dims : null };
}

// ---- √scale ---------------------------------------------------------------------------------

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


/** The shared source of a rotary cos/sin tensor (per-layer Unsqueeze/Cast/Gather stripped). */
export function rotarySource(v: Value): Value {
  return stripBack(v, ['Unsqueeze', 'Cast', 'Squeeze', 'Identity', 'Expand', 'Reshape']);
}


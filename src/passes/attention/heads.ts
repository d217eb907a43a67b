/**
 * Per-head tensor paths: from the tensors an attention reads ([B,H,S,d]) back to the
 * [B,T,H·d] projection outputs, through √scale factors, repeat_kv, the past Concat,
 * rotary embedding, Transpose and the heads Reshape. Also the output path from the
 * P·V product forward to the output projection.
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

export interface HeadPath {
  role: 'Q' | 'K' | 'V';
  /** The [B,T,H·d] projection output and its projection. */
  projection: ProjectionDraft;
  /** The Reshape to [B,T,H,d] (null when the projection feeds a fused op directly). */
  reshape: Node | null;
  /** Heads and head size from the Reshape target (null when computed at run time). */
  heads: number | null;
  headDim: number | null;
  rotary: RotaryDraft | null;
  /** KV cache: the graph input concatenated in front, and the Concat output. */
  past: Value | null;
  concat: Node | null;
  present: Value | null;
  /** repeat_kv found on this path, with its factor when constant. */
  repeat: { factor: number | null; nodes: Node[] } | null;
  /** Constant factors applied on this path (√scale on Q or K). */
  scale: { factor: number | null; computed: boolean; node: Node } | null;
  /** A normalization on this path (per-head q_norm/k_norm, or on the projection output). */
  norm: Node[] | null;
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

function matchRotateHalf(add: Node): RotaryDraft | null {
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

// ---- repeat_kv ----------------------------------------------------------------------------

/** Reshape(Expand(Unsqueeze(x, [2]), [B, Hkv, n_rep, S, d]), [B, Hkv·n_rep, S, d]) → x and n_rep. */
function matchRepeatKv(reshape: Node): { x: Value; factor: number | null; nodes: Node[] } | null {
  const expand = producerIs(reshape.inputs[0], 'Expand');
  if (expand) {
    const unsq = producerIs(expand.inputs[0], 'Unsqueeze');
    if (!unsq || !unsq.inputs[0]) return null;
    const axes = axesOf(unsq);
    if (!axes || axes.length !== 1 || (axes[0] !== 2 && axes[0] !== -3)) return null;
    const shape = shapeVector(expand.inputs[1]);
    const factor = shape && shape.length === 5 ? known(shape[2]) : null;
    return { x: unsq.inputs[0], factor, nodes: [reshape, expand, unsq] };
  }
  const tile = producerIs(reshape.inputs[0], 'Tile');
  if (tile) {
    const unsq = producerIs(tile.inputs[0], 'Unsqueeze');
    if (!unsq || !unsq.inputs[0]) return null;
    const reps = constantValues(tile.inputs[1], 8);
    return { x: unsq.inputs[0], factor: reps && reps.length === 5 ? known(reps[2]) : null, nodes: [reshape, tile, unsq] };
  }
  return null;
}

// ---- √scale ---------------------------------------------------------------------------------

/** Mul(x, c) / Div(x, c) with c a constant or computed from shapes; returns x and the factor. */
function scaleStep(n: Node): { next: Value; factor: number | null; computed: boolean } | null {
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

// ---- the walk -------------------------------------------------------------------------------

/**
 * Walks a per-head tensor back to its projection. `layout` says what `start` is:
 * 'BHSd' (after Transpose [0,2,1,3]) or 'BSHd' (right after the heads Reshape).
 */
export function walkHeads(start: Value, role: 'Q' | 'K' | 'V', layout: 'BHSd' | 'BSHd', where: string): HeadPath {
  const path: HeadPath = {
    role,
    projection: undefined as unknown as ProjectionDraft,
    reshape: null,
    heads: null,
    headDim: null,
    rotary: null,
    past: null,
    concat: null,
    present: null,
    repeat: null,
    scale: null,
    norm: null,
  };
  let cur = start;
  let lay = layout;
  for (let step = 0; step < 24; step++) {
    const p = cur.producer;
    if (!p) {
      return reject(`${where}: the ${role} path reaches ${describeValue(cur)} before any heads Reshape; ${role} does not come from a projection`);
    }
    if (lay === 'BSHd') {
      if (isOp(p, 'Reshape')) {
        const target = shapeVector(p.inputs[1]);
        if (target && target.length !== 4) {
          return reject(`${where}: ${role} heads ${describeNode(p)} reshapes to rank ${target.length}, expected [B, T, H, d]`);
        }
        path.reshape = p;
        path.heads = target ? known(target[2]) : null;
        path.headDim = target ? known(target[3]) : null;
        if (!p.inputs[0]) return reject(`${describeNode(p)} has no data input`);
        let src = p.inputs[0];
        if (!path.scale && role !== 'V' && src.producer && isOp(src.producer, 'Mul', 'Div') && !plainProjection(src)) {
          // scaling applied to the projection output (OPT: q_proj(x) * scaling)
          const s = scaleStep(src.producer);
          if (s && plainProjection(s.next)) {
            path.scale = { factor: s.factor, computed: s.computed, node: src.producer };
            src = s.next;
          }
        }
        if (!path.norm && role !== 'V' && !plainProjection(src)) {
          // a norm on the whole projection output (OLMo2)
          const n = skipNorm(src);
          if (n && plainProjection(n.x)) {
            path.norm = n.nodes;
            src = n.x;
          }
        }
        path.projection = resolveProjection(src, `${where}: ${role}`);
        return path;
      }
      if (!path.norm && role !== 'V') {
        // a per-head norm between the heads Reshape and the Transpose (Qwen3 q_norm / k_norm)
        const n = skipNorm(cur);
        if (n) {
          path.norm = n.nodes;
          cur = n.x;
          continue;
        }
      }
      const rot = rotaryOp(p);
      if (rot && !path.rotary) {
        path.rotary = rot;
        cur = p.inputs[0]!;
        continue;
      }
      if (isOp(p, 'Cast', 'Identity')) {
        cur = p.inputs[0]!;
        continue;
      }
      return reject(`${where}: the ${role} path meets ${describeNode(p)} where the heads Reshape [B, T, H, d] was expected`);
    }
    // BHSd layout
    if (isOp(p, 'Transpose')) {
      const perm = transposePerm(p);
      if (!samePerm(perm, [0, 2, 1, 3])) {
        return reject(`${where}: ${role} ${describeNode(p)} has perm [${perm?.join(', ') ?? 'default'}], expected [0, 2, 1, 3] (heads to axis 1)`);
      }
      lay = 'BSHd';
      cur = p.inputs[0]!;
      continue;
    }
    if (isOp(p, 'Cast', 'Identity')) {
      cur = p.inputs[0]!;
      continue;
    }
    if (isOp(p, 'Mul', 'Div') && !path.scale && !path.rotary) {
      const s = scaleStep(p);
      if (s) {
        path.scale = { factor: s.factor, computed: s.computed, node: p };
        cur = s.next;
        continue;
      }
    }
    if (isOp(p, 'Reshape') && !path.repeat && role !== 'Q') {
      const r = matchRepeatKv(p);
      if (r) {
        path.repeat = { factor: r.factor, nodes: r.nodes };
        cur = r.x;
        continue;
      }
      return reject(`${where}: the ${role} path meets ${describeNode(p)}, which is not repeat_kv (Unsqueeze → Expand → Reshape)`);
    }
    if (isOp(p, 'Concat') && !path.concat && role !== 'Q') {
      const axis = intAttr(p, 'axis', 0);
      if (axis !== 2 && axis !== -2) return reject(`${where}: ${role} ${describeNode(p)} concatenates axis ${axis}, not the sequence axis`);
      if (p.inputs.length !== 2) return reject(`${where}: ${role} ${describeNode(p)} has ${p.inputs.length} inputs, a KV-cache Concat has 2 (past, new)`);
      const [a, b] = p.inputs;
      const pa = graphInputBehind(a);
      const pb = graphInputBehind(b);
      if (pa && b) {
        path.past = pa;
        cur = b;
      } else if (pb && a) {
        path.past = pb;
        cur = a;
      } else {
        return reject(`${where}: ${role} ${describeNode(p)} joins no graph input (past ${role === 'K' ? 'key' : 'value'})`);
      }
      path.concat = p;
      path.present = exportedAs(p.output);
      continue;
    }
    if (isOp(p, 'Add') && !path.rotary && role !== 'V') {
      const rot = matchRotateHalf(p);
      if (rot) {
        path.rotary = rot;
        cur = matchedX(rot, p) ?? reject(`${describeNode(p)}: rotary input not found`);
        continue;
      }
      return reject(`${where}: the ${role} path meets ${describeNode(p)}, which is not a rotary embedding (x·cos + rotate_half(x)·sin)`);
    }
    const rot = rotaryOp(p);
    if (rot && !path.rotary) {
      path.rotary = rot;
      cur = p.inputs[0]!;
      continue;
    }
    return reject(`${where}: the ${role} path meets ${describeNode(p)}, which is none of rotary, KV-cache Concat, repeat_kv, Transpose [0, 2, 1, 3]`);
  }
  return reject(`${where}: the ${role} path is too long (no projection within 24 steps)`);
}

function matchedX(rot: RotaryDraft, add: Node): Value | null {
  // the Mul reading x directly: its other operand is cos
  for (const v of add.inputs) {
    const m = producerIs(v, 'Mul');
    if (!m) continue;
    if (m.inputs[0] === rot.cos && m.inputs[1]) return m.inputs[1];
    if (m.inputs[1] === rot.cos && m.inputs[0]) return m.inputs[0];
  }
  return null;
}

/**
 * The keys operand of Q·Kᵀ back to a HeadPath: Transpose [0,1,3,2] of [B,H,S,d] keys, or
 * Transpose [0,2,3,1] of the [B,S,H,d] heads reshape (BERT, GPT-2), with an optional
 * √scale factor on either side of the transpose.
 */
export function walkKeys(kT: Value, where: string): HeadPath {
  let cur = kT;
  let scale: HeadPath['scale'] = null;
  for (let step = 0; step < 4; step++) {
    const p = cur.producer;
    if (!p) break;
    if (isOp(p, 'Mul', 'Div') && !scale) {
      const s = scaleStep(p);
      if (s) {
        scale = { factor: s.factor, computed: s.computed, node: p };
        cur = s.next;
        continue;
      }
    }
    if (isOp(p, 'Cast', 'Identity')) {
      cur = p.inputs[0]!;
      continue;
    }
    if (isOp(p, 'Transpose')) {
      const perm = transposePerm(p);
      let path: HeadPath;
      if (samePerm(perm, [0, 1, 3, 2])) path = walkHeads(p.inputs[0]!, 'K', 'BHSd', where);
      else if (samePerm(perm, [0, 2, 3, 1])) path = walkHeads(p.inputs[0]!, 'K', 'BSHd', where);
      else return reject(`${where}: the K operand's ${describeNode(p)} has perm [${perm?.join(', ') ?? 'default'}]; expected [0, 1, 3, 2] or [0, 2, 3, 1] (Kᵀ)`);
      if (scale) {
        if (path.scale) return reject(`${where}: two scale factors on the K path (${describeNode(scale.node)} and ${describeNode(path.scale.node)})`);
        path.scale = scale;
      }
      return path;
    }
    break;
  }
  const p = cur.producer;
  return reject(`${where}: the K operand ${describeValue(cur)} is not a transposed key tensor (expected Transpose with perm [0, 1, 3, 2] or [0, 2, 3, 1]${p ? `, found ${describeNode(p)}` : ''})`);
}

/** From the P·V product forward: Transpose [0,2,1,3] → Reshape [B, T, H·d]; returns the Reshape output. */
export function attentionOutput(pv: Node, where: string): { output: Value; nodes: Node[] } {
  const out = pv.output;
  const t = out.consumers().find((c) => isOp(c, 'Transpose') && samePerm(transposePerm(c), [0, 2, 1, 3]));
  if (!t) {
    return reject(`${where}: the P·V product '${out.name}' is not transposed back to [B, T, H, d] (no Transpose [0, 2, 1, 3] reads it)`);
  }
  const r = t.output.consumers().find((c) => isOp(c, 'Reshape') && c.inputs[0] === t.output);
  if (!r) return reject(`${where}: ${describeNode(t)} is not reshaped to [B, T, H·d] (no Reshape reads it)`);
  const target = shapeVector(r.inputs[1]);
  if (target && target.length !== 3) return reject(`${where}: ${describeNode(r)} reshapes the attention output to rank ${target.length}, expected [B, T, H·d]`);
  return { output: r.output, nodes: [t, r] };
}

/** The shared source of a rotary cos/sin tensor (per-layer Unsqueeze/Cast/Gather stripped). */
export function rotarySource(v: Value): Value {
  return stripBack(v, ['Unsqueeze', 'Cast', 'Squeeze', 'Identity', 'Expand', 'Reshape']);
}


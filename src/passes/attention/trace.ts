/**
 * Tracing Q, K and V from an attention core back to their projections, and the core's
 * output forward to the output projection, by axis provenance (axes.ts):
 *
 * 1. backwards, the path is a chain of layout ops (LAYOUT_RULES), value-preserving units
 *    (rotary, q/k norms, casts, √scale factors) and at most one KV-cache Concat, ending
 *    at a projection (MatMul/Gemm with a weight, + bias; MatMulNBits, a dynamically
 *    quantized MatMulInteger or an Einsum with a weight count as MatMuls);
 * 2. forwards, the projection output's axes are labelled (rows + features; an Einsum
 *    projection's weight letters say which output axes are features, e.g. the H and d of
 *    Keras' [B, T, H, d]) and each op moves the labels;
 * 3. at the core, the labels say which axis is the sequence, which pieces of the
 *    features are heads and head size, which columns of a packed projection belong to
 *    this operand, and where repeat_kv copies heads.
 *
 * Nothing depends on the op order or on Reshape constants: the shapes come from shape
 * inference, so a [T, B·H, d] layout (torch.nn.MultiheadAttention), a Reshape of the
 * expanded keys (dynamo repeat_kv) or a Gather of a [.., 3, H, d] packed tensor (timm)
 * read the same way as the Hugging Face layout.
 */
import { type Node, type Value, describeNode } from '../../ir/index.js';
import { SymDim } from '../analysis/dim.js';
import type { ShapeAnalysis } from '../analysis/shapes.js';
import { evalScalar } from '../util/constants.js';
import { type Atom, FEATURES, LAYOUT_RULES, type Labels, applyLayout, describeLabels, isRepeat, isRow, pieces, projectionLabels } from './axes.js';
import { Rejection, describeValue, exportedAs, graphInputBehind, isOp, nodeName, reject } from './context.js';
import { einsumProjection } from './einsum.js';
import { integerMatMulsReading } from './integer.js';
import { type ProjectionDraft, inputSource, isWeightLike, plainProjection } from './f3_fused_qkv.js';
import { skipNorm } from './norm.js';
import type { AxisPiece } from './site.js';
import { type RotaryDraft, isComputedScale, rotaryUnit } from './units.js';

export type Role = 'Q' | 'K' | 'V';

export interface HeadPath {
  role: Role;
  projection: ProjectionDraft;
  /** The axes of the projection output that hold its features: the last one, or several for an Einsum projection ([B, T, H, d]). */
  features: number[];
  /** Labels of the operand the core reads. */
  labels: Labels;
  /** The nodes between the projection and the core, projection side first. */
  chain: Node[];
  rotary: RotaryDraft | null;
  /** KV cache: the graph input concatenated in front, and the Concat output. */
  past: Value | null;
  concat: Node | null;
  present: Value | null;
  /** Constant factors applied on this path (√scale on Q or K); factor null when computed from shapes. */
  scale: { factor: number | null; computed: boolean; node: Node } | null;
  /** A normalization on this path (per-head q_norm/k_norm, or on the projection output). */
  norm: Node[] | null;
  /**
   * The path ends at a graph input without a projection (TraceOptions.inputs): the cached
   * keys / values of a cross-attention. null when it ends at a projection.
   */
  source: InputSource | null;
}

/**
 * Keys or values read straight from a graph input. Nothing in the graph says which of its
 * axes hold the features, so each reading labels the last axis (head size, or heads ·
 * head size) and at most one other axis (the heads) as features; `readInputs` keeps the one
 * whose heads line up with Q's at the core.
 */
export interface InputSource {
  value: Value;
  /** The rejection a self-attention gets for this path (keys and values must be projected there). */
  reason: string;
  /** The readings whose labels follow the path to the core, in order: [last axis], then [axis i, last axis] for i = 0, 1, …. */
  readings: { features: number[]; labels: Labels; width: number }[];
}

export interface TraceOptions {
  /**
   * K and V only: a path that reaches a graph input without meeting a projection (and
   * without a KV-cache Concat) ends there, with `source` set, instead of being rejected.
   * The caller decides whether the site is a cross-attention that may read it (readInputs).
   */
  inputs?: boolean;
}

interface Step {
  node: Node;
  input: Value;
  output: Value;
  /** The op keeps the labels (casts, scales, rotary, norms). */
  preserving: boolean;
}

const MAX_STEPS = 64;
const PASS_THROUGH = ['Identity', 'Cast', 'CastLike', 'Dropout'];

/** A scalar operand (rank 0 or all dims 1) of a Mul / Div: the scale and the data input. */
function scaleOperand(n: Node, shapes: ShapeAnalysis): { data: Value; factor: number | null; computed: boolean } | null {
  if (!isOp(n, 'Mul', 'Div')) return null;
  const [a, b] = n.inputs;
  if (!a || !b) return null;
  const orders: [Value, Value][] = n.opType === 'Mul' ? [[a, b], [b, a]] : [[a, b]];
  for (const [x, s] of orders) {
    const dims = shapes.shape(s);
    if (dims && dims.some((d) => d.value !== 1)) continue;
    const constant = evalScalar(s);
    const v = constant ?? evalScalar(s, (x) => shapes.scalar(x));
    if (v !== undefined) return { data: x, factor: n.opType === 'Div' ? 1 / v : v, computed: constant === undefined };
    if (isComputedScale(s)) return { data: x, factor: null, computed: true };
  }
  return null;
}

/** Shapes that may be equal: the same rank and no two dims known to differ (unknown ones are fresh symbols `name[axis]`). */
function compatible(a: SymDim[] | undefined, b: SymDim[] | undefined): boolean {
  if (!a || !b) return true;
  if (a.length !== b.length) return false;
  const fresh = (d: SymDim): boolean => d.symbols().some((x) => x.includes('['));
  return a.every((d, i) => d.equals(b[i]!) || fresh(d) || fresh(b[i]!));
}

/**
 * The axes of a projection output of rank `rank` that hold its features: the last one, or
 * the weight's letters of an Einsum projection (Keras EinsumDense writes [B, T, H, d]).
 */
function featureAxes(p: ProjectionDraft, rank: number): number[] {
  return einsumProjection(p.node)?.featureAxes ?? [rank - 1];
}

/** The projection ending at `v`, when its output keeps the feature width (not a heads Reshape of it). */
function projectionAt(v: Value, shapes: ShapeAnalysis): ProjectionDraft | undefined {
  const p = plainProjection(v);
  if (!p) return undefined;
  const dims = shapes.shape(v);
  if (p.width === null || !dims) return p;
  const width = featureAxes(p, dims.length).reduce<number | undefined>((acc, a) => (acc === undefined || dims[a]?.value === undefined ? undefined : acc * dims[a]!.value!), 1);
  if (width !== undefined && width !== p.width) return undefined;
  return p;
}

/** The labels of a projection output (or graph input) of `dims` moved along `steps` (core side first) to the core. */
function labelSteps(dims: readonly SymDim[], features: number[], steps: readonly Step[], shapes: ShapeAnalysis): Labels | string {
  let labels = projectionLabels(dims, features);
  for (const s of [...steps].reverse()) {
    const r = applyLayout(labels, { node: s.node, input: s.input, output: s.output, shapes }, s.preserving);
    if (typeof r === 'string') return r;
    labels = r;
  }
  return labels;
}

/**
 * A path that ends at the graph input `v` (TraceOptions.inputs): its readings, the
 * first as the path's labels. Feature axes must have constant sizes (the heads and the
 * head size); a reading whose labels meet an op they do not fit is dropped.
 */
function inputPath(path: Omit<HeadPath, 'projection' | 'labels' | 'features'>, steps: Step[], v: Value, reason: string, shapes: ShapeAnalysis, where: string): HeadPath {
  const dims = shapes.shape(v);
  if (!dims || dims.length < 2) return reject(`${reason}, and its rank is unknown (shape ${shapes.describe(v)})`);
  const last = dims.length - 1;
  const readings: InputSource['readings'] = [];
  let failure: string | null = null;
  for (const features of [[last], ...dims.slice(0, last).map((_, i) => [i, last])]) {
    const width = features.reduce((acc, a) => acc * (dims[a]!.value ?? Number.NaN), 1);
    if (!Number.isFinite(width)) continue;
    const labels = labelSteps(dims, features, steps, shapes);
    if (typeof labels === 'string') failure ??= labels;
    else readings.push({ features, labels, width });
  }
  if (!readings.length) return reject(`${where}: on the ${path.role} path from ${describeValue(v)}, ${failure ?? `no axis of ${shapes.describe(v)} has a constant size to be the head size`}`);
  const first = readings[0]!;
  return {
    ...path,
    chain: steps.map((s) => s.node).reverse(),
    source: { value: v, reason, readings },
    projection: inputSource(v, first.width),
    features: first.features,
    labels: first.labels,
  };
}

/**
 * Traces the operand `start` of an attention core back to its projection. Rejects, with
 * the stage and the node, when the path meets an op with no rule.
 */
export function tracePath(start: Value, role: Role, shapes: ShapeAnalysis, where: string, options: TraceOptions = {}): HeadPath {
  const path: Omit<HeadPath, 'projection' | 'labels' | 'features'> = { role, chain: [], rotary: null, past: null, concat: null, present: null, scale: null, norm: null, source: null };
  const steps: Step[] = [];
  let cur = start;
  let projection: ProjectionDraft | undefined;
  for (let i = 0; i < MAX_STEPS && !(projection = projectionAt(cur, shapes)); i++) {
    const p = cur.producer;
    if (!p) {
      const reason = `${where}: the ${role} path reaches ${describeValue(cur)} without meeting a projection (MatMul/Gemm with a weight)`;
      // keys / values given as graph inputs (an encoder-decoder's cached cross-attention K/V)
      if (options.inputs && role !== 'Q' && !path.concat && cur.isGraphInput() && !cur.initializer) return inputPath(path, steps, cur, reason, shapes, where);
      return reject(reason);
    }
    const step = (input: Value | null | undefined, preserving: boolean): void => {
      if (!input) reject(`${where}: ${describeNode(p)} on the ${role} path has no data input`);
      steps.push({ node: p, input: input!, output: cur, preserving });
      cur = input!;
    };
    if (role !== 'V' && !path.rotary) {
      const unit = rotaryUnit(p);
      // a rotation keeps the shape: anything else is not a rotary embedding of this path
      const same = (a: Value, b: Value): boolean => compatible(shapes.shape(a), shapes.shape(b));
      if (unit && same(unit.x, cur)) {
        path.rotary = unit.draft;
        step(unit.x, true);
        continue;
      }
    }
    if (role !== 'V' && !path.norm) {
      const n = skipNorm(cur);
      if (n) {
        path.norm = n.nodes;
        step(n.x, true);
        continue;
      }
    }
    const s = scaleOperand(p, shapes);
    if (s && role === 'V') {
      return reject(`${where}: ${describeNode(p)} scales V by a constant; the memory branch reads the V projection and would not see the factor`);
    }
    if (s) {
      if (path.scale) return reject(`${where}: two scale factors on the ${role} path (${describeNode(path.scale.node)} and ${describeNode(p)})`);
      path.scale = { factor: s.factor, computed: s.computed, node: p };
      step(s.data, true);
      continue;
    }
    if (p.isOnnxDomain() && PASS_THROUGH.includes(p.opType)) {
      step(p.inputs[0], true);
      continue;
    }
    if (isOp(p, 'Concat') && role !== 'Q') {
      if (path.concat) return reject(`${where}: two Concats on the ${role} path (${describeNode(path.concat)} and ${describeNode(p)})`);
      if (p.inputs.length !== 2) return reject(`${where}: ${role} ${describeNode(p)} has ${p.inputs.length} inputs, a KV-cache Concat has 2 (past, new)`);
      const [a, b] = p.inputs;
      const pa = graphInputBehind(a);
      const pb = graphInputBehind(b);
      const past = pa && b ? pa : pb && a ? pb : null;
      if (!past) return reject(`${where}: ${role} ${describeNode(p)} joins no graph input (past ${role === 'K' ? 'key' : 'value'})`);
      path.past = past;
      path.concat = p;
      path.present = exportedAs(p.output);
      step(past === pa ? b : a, false);
      continue;
    }
    if (p.isOnnxDomain() && LAYOUT_RULES[p.opType]) {
      step(p.inputs[0], false);
      continue;
    }
    if (isOp(p, 'MatMul', 'Gemm') && p.inputs[1] && !isWeightLike(p.inputs[1])) {
      return reject(`${where}: the ${role} path reaches ${describeNode(p)}, which multiplies two activations ('${p.inputs[1].name}' is not a weight)`);
    }
    return reject(
      `${where}: the ${role} path meets ${describeNode(p)}, which is none of a projection, a layout op (${Object.keys(LAYOUT_RULES).join(', ')}), rotary, a norm, a scale or a KV-cache Concat`,
    );
  }
  if (!projection) return reject(`${where}: the ${role} path is too long (no projection within ${MAX_STEPS} steps)`);
  const dims = shapes.shape(projection.value ?? cur);
  if (!dims || dims.length < 2) {
    return reject(`${where}: the rank of the ${role} projection output ${describeValue(cur)} is unknown (shape ${shapes.describe(cur)})`);
  }
  const features = featureAxes(projection, dims.length);
  const labels = labelSteps(dims, features, steps, shapes);
  if (typeof labels === 'string') return reject(`${where}: on the ${role} path, ${labels}`);
  return { ...path, chain: steps.map((s) => s.node).reverse(), projection, features, labels };
}

/** The readings of a path: one per reading of its graph input's axes, or the path itself. */
function readingsOf(p: HeadPath): HeadPath[] {
  if (!p.source) return [p];
  return p.source.readings.map((r) => ({ ...p, features: r.features, labels: r.labels, projection: inputSource(p.source!.value, r.width) }));
}

/**
 * Keys / values read from graph inputs (tracePath with `inputs`) are taken only for a
 * cross-attention: K and V each come from another source than Q's projection input (a
 * graph input, or a projection of another hidden state). Otherwise the path's own
 * rejection stands: a self-attention's keys and values are projected.
 */
export function checkInputSources(q: HeadPath, k: HeadPath, v: HeadPath): void {
  const source = k.source ?? v.source;
  if (!source) return;
  const from = (p: HeadPath): Value | null => p.source?.value ?? p.projection.input;
  const qFrom = q.projection.input;
  if (from(k) === null || from(v) === null || from(k) === qFrom || from(v) === qFrom) reject(source.reason);
}

/**
 * `heads` on the readings of keys / values read from graph inputs: the first (K readings
 * outer, V inner) for which it succeeds is kept, i.e. the one whose heads line up with Q's
 * ([B, H, S, d], or [B·H, S, d] after a Reshape, reads axis 1 as the heads). When none
 * does, the rejection of the last reading is given. Projected K and V have one reading.
 */
export function readInputs<T>(k: HeadPath, v: HeadPath, heads: (k: HeadPath, v: HeadPath) => T): { k: HeadPath; v: HeadPath; heads: T } {
  if (!k.source && !v.source) return { k, v, heads: heads(k, v) };
  let last: Rejection | null = null;
  for (const kr of readingsOf(k)) {
    for (const vr of readingsOf(v)) {
      try {
        return { k: kr, v: vr, heads: heads(kr, vr) };
      } catch (e) {
        if (!(e instanceof Rejection)) throw e;
        last = e;
      }
    }
  }
  // the last reading is the one with the most feature axes (the heads on their own axis)
  const inputs = [k.source, v.source].filter((x) => x !== null).map((x) => `'${x.value.name}'`);
  return reject(`${last!.reason} (keys / values read from graph input ${inputs.join(' and ')}: no reading of their axes lines up with Q's heads)`);
}

// ---- the core -------------------------------------------------------------------------------

/** Q, K or V as the core reads it: leading (batch/head) axes, the sequence atom, the head-size atom. */
interface CoreOperand {
  lead: Atom[][];
  seq: Atom;
  d: Atom;
}

function coreOperand(p: HeadPath, last: 'd' | 'seq', where: string): CoreOperand {
  const axes = p.labels.axes;
  const transposed = last === 'seq';
  const what = `${where}: ${p.role}${transposed ? 'ᵀ' : ''} ${describeLabels(p.labels)}`;
  const hint = transposed ? '; Q·Kᵀ needs the keys transposed to [.., head size, sequence]' : '';
  if (axes.length < 2) return reject(`${what} has rank ${axes.length}; an attention operand has at least 2 axes`);
  const a = pieces(axes[axes.length - 1]!);
  const b = pieces(axes[axes.length - 2]!);
  const [dAxis, seqAxis] = last === 'd' ? [a, b] : [b, a];
  const dWhere = last === 'd' ? 'last' : 'second-to-last';
  if (dAxis.length !== 1 || dAxis[0]!.src !== FEATURES) {
    return reject(`${what}: its ${dWhere} axis is not the head size (one piece of the projection's features)${hint}`);
  }
  if (seqAxis.length !== 1 || !isRow(seqAxis[0]!)) {
    return reject(`${what}: its ${last === 'd' ? 'second-to-last' : 'last'} axis is not a sequence axis of the projection output${hint}`);
  }
  return { lead: axes.slice(0, -2).map(pieces), seq: seqAxis[0]!, d: dAxis[0]! };
}

interface HeadGroup {
  heads: number;
  repeat: number;
}

/**
 * The heads of one operand, checked to be blocks of `d` consecutive columns in head
 * order; returns the number of heads and the column range in the projection.
 */
function headColumns(p: HeadPath, c: CoreOperand, where: string): { heads: number; columns: [number, number]; width: number } {
  const headAtoms = c.lead.flat().filter((a) => a.src === FEATURES);
  const d = c.d.size.value;
  if (d === undefined) return reject(`${where}: the ${p.role} head size ${c.d.size} is not constant`);
  if (c.d.stride.value !== 1) return reject(`${where}: the ${p.role} head size axis does not run over consecutive columns (stride ${c.d.stride})`);
  let expected = d;
  let heads = 1;
  for (const a of [...headAtoms].reverse()) {
    const size = a.size.value;
    if (size === undefined || a.stride.value !== expected) {
      return reject(`${where}: the ${p.role} heads are not consecutive blocks of ${d} columns (head piece of size ${a.size} has stride ${a.stride}, expected ${expected})`);
    }
    heads *= size;
    expected *= size;
  }
  const base = p.labels.base.get(FEATURES)?.value ?? 0;
  return { heads, columns: [base, base + heads * d], width: heads * d };
}

/** Per leading axis: 'b' (rows) and one head group (heads · repeat copies). */
function groups(c: CoreOperand, role: Role, where: string): { kinds: string[]; heads: HeadGroup | null; rows: Atom[] } {
  const kinds: string[] = [];
  let heads: HeadGroup | null = null;
  const rows: Atom[] = [];
  for (const axis of c.lead) {
    let i = 0;
    while (i < axis.length) {
      const a = axis[i]!;
      if (isRow(a)) {
        kinds.push('b');
        rows.push(a);
        i++;
        continue;
      }
      // a run of head / repeat pieces
      let h = 1;
      let r = 1;
      let sawHead = false;
      while (i < axis.length && !isRow(axis[i]!)) {
        const x = axis[i]!;
        const n = x.size.value;
        if (n === undefined) return reject(`${where}: the ${role} heads have symbolic size ${x.size}`);
        if (isRepeat(x)) {
          if (i + 1 < axis.length && axis[i + 1]!.src === FEATURES) {
            return reject(`${where}: repeat_kv on the ${role} path copies the key/value heads outside (or between) them, not as copies of each head; LiZA groups query heads h·G … h·G+G−1 per key head`);
          }
          r *= n;
        } else {
          if (r > 1) return reject(`${where}: the ${role} heads continue after repeat_kv copies`);
          sawHead = true;
          h *= n;
        }
        i++;
      }
      if (heads) return reject(`${where}: the ${role} heads are split over several axes`);
      heads = { heads: h, repeat: r };
      kinds.push('H');
    }
  }
  return { kinds, heads, rows };
}

export interface CoreHeads {
  hq: number;
  hkv: number;
  d: number;
  /** repeat_kv factor found on K (1 when none). */
  repeat: number;
  columns: { q: [number, number]; k: [number, number]; v: [number, number] };
  /** Layouts of the q/k/v projection outputs. */
  layout: { q: AxisPiece[][]; k: AxisPiece[][]; v: AxisPiece[][] };
  /** Labels of the core's output (P·V or the fused op's output), for tracing it forward. */
  outputLabels: Labels;
  /** Which labels are the query sequence and the batch of the output. */
  roles: (a: Atom) => AxisPiece;
}

/** Projection-output layout: each row is the batch or the sequence, the feature axes (the last, or an Einsum projection's) the features. */
function projectionLayout(p: HeadPath, seq: Atom, rows: Atom[], shapes: ShapeAnalysis, where: string): AxisPiece[][] {
  const dims = shapes.shape(p.projection.value) ?? [];
  const rank = dims.length;
  const layout: AxisPiece[][] = [];
  for (let i = 0; i < rank; i++) {
    const src = `row${i}`;
    if (p.features.includes(i)) {
      layout.push(['features']);
      continue;
    }
    if (seq.src === src) {
      if (!seq.size.equals(dims[i]!) && !p.concat) return reject(`${where}: the ${p.role} sequence is a part of projection axis ${i}`);
      layout.push(['seq']);
    } else if (rows.some((r) => r.src === src)) {
      const r = rows.find((x) => x.src === src)!;
      if (!r.size.equals(dims[i]!)) return reject(`${where}: the ${p.role} batch is a part (${r.size}) of projection axis ${i} (${dims[i]})`);
      layout.push(['batch']);
    } else if (dims[i]!.value === 1) {
      layout.push([]);
    } else {
      return reject(`${where}: axis ${i} (size ${dims[i]}) of the ${p.role} projection output is neither the batch nor the sequence`);
    }
  }
  if (layout.filter((a) => a[0] === 'batch').length !== 1) return reject(`${where}: the ${p.role} projection output has no single batch axis`);
  return layout;
}

/**
 * Heads, head size, packed columns and repeat_kv of a core from the labels of its
 * operands. `k` is read as Kᵀ ([.., d, S]) when `kTransposed`.
 */
export function coreHeads(
  q: HeadPath,
  k: HeadPath,
  v: HeadPath,
  shapes: ShapeAnalysis,
  where: string,
  options: { kTransposed: boolean; nativeGqa?: boolean },
): CoreHeads {
  const cq = coreOperand(q, 'd', where);
  const ck = coreOperand(k, options.kTransposed ? 'seq' : 'd', where);
  const cv = coreOperand(v, 'd', where);
  const hq = headColumns(q, cq, where);
  const hk = headColumns(k, ck, where);
  const hv = headColumns(v, cv, where);
  const d = cq.d.size.value!;
  if (ck.d.size.value !== d) return reject(`${where}: Q head size ${d} differs from K head size ${ck.d.size}`);
  if (cv.d.size.value !== d) return reject(`${where}: V head size ${cv.d.size} differs from the Q/K head size ${d}; LiZA needs equal sizes`);
  const gq = groups(cq, 'Q', where);
  const gk = groups(ck, 'K', where);
  const gv = groups(cv, 'V', where);
  if (gq.heads?.repeat && gq.heads.repeat !== 1) return reject(`${where}: Q heads are broadcast copies`);
  const Hq = gq.heads?.heads ?? 1;
  if (Hq !== hq.heads) return reject(`${where}: Q heads ${Hq} do not match its columns`);
  const Hkv = hk.heads;
  if (hv.heads !== Hkv) return reject(`${where}: K has ${Hkv} heads but V has ${hv.heads}`);
  for (const [g, what] of [
    [gk, 'K'],
    [gv, 'V'],
  ] as const) {
    if (g.kinds.join() !== gq.kinds.join() && !(options.nativeGqa || !g.heads)) {
      return reject(`${where}: the ${what} leading axes (${g.kinds.join(', ')}) do not line up with Q's (${gq.kinds.join(', ')})`);
    }
    const total = (g.heads?.heads ?? 1) * (g.heads?.repeat ?? 1);
    if (total !== Hq && !options.nativeGqa && g.heads) {
      const copies = g.heads.repeat > 1 ? ` × ${g.heads.repeat} copies` : ', and no repeat_kv';
      return reject(`${where}: ${Hq} query heads but ${g.heads.heads} key/value heads${copies} on the ${what} path`);
    }
  }
  if (Hq % Hkv !== 0) return reject(`${where}: ${Hq} query heads is not a multiple of ${Hkv} key/value heads`);
  const repeat = gk.heads?.repeat ?? (Hkv === 1 ? Hq : 1);
  if (!options.nativeGqa && Hkv !== Hq && Hkv * repeat !== Hq && gk.heads) {
    return reject(`${where}: ${Hq} query heads but ${Hkv} key/value heads and no repeat_kv on the K path`);
  }
  if (ck.seq.src !== cv.seq.src) return reject(`${where}: K and V have their sequence on different projection axes`);
  const layout = {
    q: projectionLayout(q, cq.seq, gq.rows, shapes, where),
    k: projectionLayout(k, ck.seq, gk.rows, shapes, where),
    v: projectionLayout(v, cv.seq, gv.rows, shapes, where),
  };
  const one = SymDim.of(1);
  const outputLabels: Labels = { axes: [...cq.lead, [cq.seq], [{ src: FEATURES, size: cq.d.size, stride: one }]], base: new Map() };
  const seqSrc = cq.seq.src;
  const roles = (a: Atom): AxisPiece => (isRow(a) ? (a.src === seqSrc ? 'seq' : 'batch') : a.stride.value === 1 ? 'head_dim' : 'heads');
  return { hq: Hq, hkv: Hkv, d, repeat, columns: { q: hq.columns, k: hk.columns, v: hv.columns }, layout, outputLabels, roles };
}

// ---- the output -------------------------------------------------------------------------

const CANONICAL_OUTPUT: AxisPiece[][] = [['batch'], ['seq'], ['heads', 'head_dim']];

export function sameLayout(a: readonly AxisPiece[][], b: readonly AxisPiece[][]): boolean {
  return a.length === b.length && a.every((x, i) => x.length === b[i]!.length && x.every((p, j) => p === b[i]![j]));
}

/** Pieces of every axis, head pieces merged, unit axes kept as []. */
function layoutOf(l: Labels, roles: (a: Atom) => AxisPiece): AxisPiece[][] {
  return l.axes.map((ax) => {
    const out: AxisPiece[] = [];
    let prev: Atom | null = null;
    for (const a of pieces(ax)) {
      const r = roles(a);
      // head pieces merge only when they stay in head order (outer stride = inner stride · size)
      const merges = r === 'heads' && prev && roles(prev) === 'heads' && prev.stride.equals(a.stride.mul(a.size));
      if (!merges) out.push(r);
      prev = a;
    }
    return out;
  });
}

const OUTPUT_LAYOUT_OPS = ['Transpose', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Identity', 'Cast'];

/**
 * The axes of `v` a projection reading it contracts with its weight: the last one for a
 * MatMul/Gemm/MatMulNBits or a dynamically quantized MatMulInteger, the contracted
 * letters of an Einsum projection (Keras' output projection `abcd,cde->abe` reads [H, d]);
 * null when no projection reads `v`.
 */
function projectionReads(v: Value, rank: number): number[] | null {
  for (const c of v.consumers()) {
    if (c.inputs[0] === v && ((isOp(c, 'MatMul', 'Gemm') && !!c.inputs[1] && isWeightLike(c.inputs[1])) || (c.opType === 'MatMulNBits' && c.domain === 'com.microsoft'))) return [rank - 1];
    const e = einsumProjection(c);
    if (e && e.x === v) return e.contracted;
  }
  return integerMatMulsReading(v).length ? [rank - 1] : null;
}

/**
 * From the core's output forward through layout ops to the value the output projection
 * reads. Returns the first value on the way whose layout is [B, T, H·d] (the one the
 * memory branch mixes into without relayout), else the projection's input, with its layout.
 */
export function traceOutput(start: Value, heads: CoreHeads, shapes: ShapeAnalysis, where: string): { output: Value; layout: AxisPiece[][] } {
  let cur = start;
  let labels = heads.outputLabels;
  let canonical: { output: Value; layout: AxisPiece[][] } | null = null;
  for (let i = 0; i < MAX_STEPS; i++) {
    const layout = layoutOf(labels, heads.roles);
    if (!canonical && sameLayout(layout, CANONICAL_OUTPUT)) canonical = { output: cur, layout };
    const reads = projectionReads(cur, labels.axes.length);
    if (reads) {
      // the pieces the projection contracts, major first: the heads, then the head size
      const last = reads.flatMap((a) => layout[a] ?? []);
      const lastAtoms = reads.flatMap((a) => pieces(labels.axes[a] ?? []));
      const innerHead = lastAtoms[lastAtoms.length - 2];
      const dAtom = lastAtoms[lastAtoms.length - 1];
      const inOrder = !innerHead || !dAtom || innerHead.stride.equals(dAtom.size);
      if ((last.join() !== 'heads,head_dim' && !(heads.hq === 1 && last.join() === 'head_dim')) || !inOrder) {
        const axes = reads.length === 1 ? 'on its last axis' : `on the axes ${reads.join(', ')} its projection contracts`;
        return reject(`${where}: the attention output '${cur.name}' ${describeLabels(labels)} does not hold the heads, then the head size, ${axes}`);
      }
      return canonical ?? { output: cur, layout };
    }
    const next = cur.consumers().filter((c) => c.isOnnxDomain() && OUTPUT_LAYOUT_OPS.includes(c.opType) && c.inputs[0] === cur);
    if (next.length !== 1) {
      const users = cur.consumers().map((c) => describeNode(c)).join(', ') || 'nothing';
      return reject(`${where}: the attention output '${cur.name}' does not reach an output projection through layout ops; it is read by ${users}`);
    }
    const n = next[0]!;
    const r = applyLayout(labels, { node: n, input: cur, output: n.outputs[0]!, shapes }, ['Identity', 'Cast'].includes(n.opType));
    if (typeof r === 'string') return reject(`${where}: on the output path, ${r}`);
    labels = r;
    cur = n.outputs[0]!;
  }
  return reject(`${where}: no output projection within ${MAX_STEPS} steps of the attention output`);
}

// ---- fused ops ----------------------------------------------------------------------------

/**
 * A [B, S, H·d] input of a fused attention op (com.microsoft GroupQueryAttention /
 * MultiHeadAttention, 3-D ONNX Attention) traced back to its projection: the whole
 * projection or a column range of a packed one, with the rotary on the way.
 */
export function fusedOperand(v: Value, role: Role, shapes: ShapeAnalysis, where: string): { projection: ProjectionDraft; rotary: RotaryDraft | null; layout: AxisPiece[][] } {
  const path = tracePath(v, role, shapes, where);
  const axes = path.labels.axes.map(pieces);
  const f = axes[2]?.[0];
  if (axes.length !== 3 || axes[2]!.length !== 1 || f?.src !== FEATURES || f.stride.value !== 1 || f.size.value === undefined) {
    return reject(`${where}: the ${role} input ${describeLabels(path.labels)} is not [batch, sequence, consecutive columns of a projection]`);
  }
  if (axes[0]!.length !== 1 || axes[1]!.length !== 1 || !isRow(axes[0]![0]!) || !isRow(axes[1]![0]!) || axes[0]![0]!.src === axes[1]![0]!.src) {
    return reject(`${where}: the ${role} input ${describeLabels(path.labels)} does not keep the projection's batch and sequence axes apart`);
  }
  const base = path.labels.base.get(FEATURES)?.value ?? 0;
  const columns: [number, number] = [base, base + f.size.value];
  // the op reads axis 0 as its batch and axis 1 as its sequence, whichever projection rows they are
  const layout = projectionLayout(path, axes[1]![0]!, [axes[0]![0]!], shapes, where);
  return { projection: operandProjection(path, columns), rotary: path.rotary, layout };
}

/**
 * The projection of one traced operand: the whole projection, or the columns of a packed
 * one, with the node that carves them out (the memory branch slices the columns from the
 * packed projection, before any rotary).
 */
export function operandProjection(path: HeadPath, columns: [number, number]): ProjectionDraft {
  const p = path.projection;
  if (columns[0] === 0 && p.width !== null && columns[1] === p.width) return p;
  if (!p.node) {
    return reject(`${describeValue(p.value!)}: ${path.role} is columns [${columns.join(', ')}) of its ${p.width ?? '?'} features; keys and values read from a graph input are used whole`);
  }
  if (path.features.length > 1) {
    return reject(`${nodeName(p.node)}: ${path.role} is columns [${columns.join(', ')}) of an Einsum projection whose features span several axes; a packed Einsum projection is not supported`);
  }
  const cutter = path.chain.find((n) => ['Slice', 'Split', 'Gather'].includes(n.opType)) ?? null;
  return {
    info: { ...p.info, output: null, columns, packed: p.value?.name ?? null, split: cutter ? nodeName(cutter) : null },
    value: null,
    input: p.input,
    node: p.node,
    packed: p.value,
    width: columns[1] - columns[0],
  };
}

/**
 * Axis provenance: every axis of a traced tensor is a list of *atoms*, pieces of the axes
 * of the projection output it comes from (major first). A projection output [T, B, 3·E]
 * starts as rows `row0` (size T), `row1` (size B) and the feature axis `F` (size 3·E);
 * Reshape [T, B·H, d] after a Slice of F's first third makes axis 1 = [row1, F(H, stride
 * d)] and axis 2 = [F(d, stride 1)], with F's base offset 0. Heads, head size, packed
 * column ranges, repeat_kv and the sequence axis are then read off the atoms, whatever
 * the order of the layout ops.
 *
 * Each layout op has one rule (LAYOUT_RULES) that moves the atoms from its data input to
 * its output; a rule returns a reason string when the op does something attention
 * layouts do not (slicing the sequence, a Reshape that splits a symbolic axis unevenly).
 */
import { type Node, type Value, describeNode } from '../../ir/index.js';
import { SymDim, product } from '../analysis/dim.js';
import type { ShapeAnalysis } from '../analysis/shapes.js';

/** A piece of a source axis: source index = base(src) + Σ index·stride over its atoms. */
export interface Atom {
  /** `row{i}` (axis i of the projection output), `F` (its feature axis), or `rep:{node}` (a broadcast copy). */
  src: string;
  size: SymDim;
  stride: SymDim;
}

export interface Labels {
  axes: Atom[][];
  /** Offset into each narrowed source (the first column of a packed part). */
  base: ReadonlyMap<string, SymDim>;
}

export const FEATURES = 'F';

/**
 * Labels of a projection output of the given dims: rows, and the feature axis (the last
 * one by default). Features on several axes (an Einsum projection's [B, T, H, d]) are
 * numbered in axis order, as one axis: each feature axis gets the stride of the feature
 * axes after it (H(stride d) · d(stride 1)), as a Reshape of [B, T, H·d] would label them.
 */
export function projectionLabels(dims: readonly SymDim[], features: readonly number[] = [dims.length - 1]): Labels {
  const strides = new Map<number, SymDim>();
  let stride = SymDim.of(1);
  for (const a of [...features].sort((x, y) => y - x)) {
    strides.set(a, stride);
    stride = stride.mul(dims[a]!);
  }
  return {
    axes: dims.map((d, i) => [{ src: strides.has(i) ? FEATURES : `row${i}`, size: d, stride: strides.get(i) ?? SymDim.of(1) }]),
    base: new Map(),
  };
}

export function isRow(a: Atom): boolean {
  return a.src.startsWith('row');
}

export function isRepeat(a: Atom): boolean {
  return a.src.startsWith('rep:');
}

/** Atoms of an axis that are not of size 1. */
export function pieces(axis: readonly Atom[]): Atom[] {
  return axis.filter((a) => a.size.value !== 1);
}

export function axisSize(axis: readonly Atom[]): SymDim {
  return product(axis.map((a) => a.size));
}

export function describeLabels(l: Labels): string {
  const atom = (a: Atom): string => `${a.src}(${a.size})`;
  return `[${l.axes.map((ax) => (ax.length === 0 ? '1' : ax.map(atom).join('·'))).join(', ')}]`;
}

// ---- rules ----------------------------------------------------------------------------------

export interface StepContext {
  node: Node;
  /** The input the traced tensor flows through, and the output it leaves by. */
  input: Value;
  output: Value;
  shapes: ShapeAnalysis;
}

export type LayoutStep = (x: Labels, c: StepContext) => Labels | string;

function normAxis(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

function withBase(l: Labels, src: string, add: SymDim): Map<string, SymDim> {
  const base = new Map(l.base);
  base.set(src, (base.get(src) ?? SymDim.of(0)).add(add));
  return base;
}

const keep: LayoutStep = (x) => x;

const transpose: LayoutStep = (x, c) => {
  const rank = x.axes.length;
  const perm = c.node.attribute('perm') ? c.node.getInts('perm') : x.axes.map((_, i) => rank - 1 - i);
  if (perm.length !== rank) return `${describeNode(c.node)} has perm of length ${perm.length} for a rank-${rank} tensor`;
  return { axes: perm.map((p) => x.axes[p]!), base: x.base };
};

/** Regroups the atoms into the output dims, splitting an atom where a dim boundary falls inside it. */
const reshape: LayoutStep = (x, c) => {
  const out = c.shapes.shape(c.output);
  if (!out) return `the target shape of ${describeNode(c.node)} is unknown`;
  const flat = x.axes.flat().filter((a) => a.size.value !== 1);
  const axes: Atom[][] = [];
  for (const d of out) {
    const group: Atom[] = [];
    let have = SymDim.of(1);
    for (let guard = 0; !have.equals(d); guard++) {
      const atom = flat.shift();
      const need = d.div(have);
      if (!atom || !need || guard > 16) return `${describeNode(c.node)} reshapes ${c.shapes.describe(c.input)} to ${c.shapes.describe(c.output)}, which does not regroup whole axes`;
      if (atom.size.equals(need) || need.div(atom.size)) {
        group.push(atom);
        have = have.mul(atom.size);
        continue;
      }
      const rest = atom.size.div(need);
      if (!rest) return `${describeNode(c.node)} splits an axis of size ${atom.size} into ${need}, which does not divide it`;
      group.push({ src: atom.src, size: need, stride: atom.stride.mul(rest) });
      flat.unshift({ src: atom.src, size: rest, stride: atom.stride });
      have = have.mul(need);
    }
    axes.push(group);
  }
  if (flat.length) return `${describeNode(c.node)} reshapes ${c.shapes.describe(c.input)} to ${c.shapes.describe(c.output)}: the sizes do not match`;
  return { axes, base: x.base };
};

function constInts(c: StepContext, i: number): number[] | undefined {
  const v = c.shapes.values(c.node.inputs[i]);
  if (!v) return undefined;
  const out: number[] = [];
  for (const d of v) {
    if (d.value === undefined) return undefined;
    out.push(d.value);
  }
  return out;
}

function opsetOf(n: Node): number {
  return n.graph?.root.model?.opsetVersion('') ?? 17;
}

const squeeze: LayoutStep = (x, c) => {
  const rank = x.axes.length;
  const given = opsetOf(c.node) >= 13 ? !!c.node.inputs[1] : !!c.node.attribute('axes');
  const raw = opsetOf(c.node) >= 13 ? (c.node.inputs[1] ? constInts(c, 1) : undefined) : c.node.attribute('axes') ? c.node.getInts('axes') : undefined;
  if (given && !raw) return `the axes of ${describeNode(c.node)} are not constant`;
  const axes = raw ? raw.map((a) => normAxis(a, rank)) : x.axes.map((ax, i) => (pieces(ax).length === 0 ? i : -1)).filter((i) => i >= 0);
  for (const a of axes) if (pieces(x.axes[a] ?? []).length) return `${describeNode(c.node)} squeezes axis ${a}, which is not of size 1`;
  const drop = new Set(axes);
  return { axes: x.axes.filter((_, i) => !drop.has(i)), base: x.base };
};

const unsqueeze: LayoutStep = (x, c) => {
  const raw = opsetOf(c.node) >= 13 ? (c.node.inputs[1] ? constInts(c, 1) : undefined) : c.node.attribute('axes') ? c.node.getInts('axes') : undefined;
  if (!raw) return `the axes of ${describeNode(c.node)} are not constant`;
  const rank = x.axes.length + raw.length;
  const set = new Set(raw.map((a) => normAxis(a, rank)));
  const axes: Atom[][] = [];
  let j = 0;
  for (let i = 0; i < rank; i++) axes.push(set.has(i) ? [] : x.axes[j++]!);
  return { axes, base: x.base };
};

/** Narrows axis `axis` to [start, start + size·step) of its index range. */
function narrow(x: Labels, axis: number, start: number, size: SymDim, step: number, node: Node): Labels | string {
  const ax = x.axes[axis];
  if (!ax) return `${describeNode(node)} narrows axis ${axis}, which the tensor does not have`;
  const ps = pieces(ax);
  const whole = axisSize(ax);
  if (start === 0 && step === 1 && size.equals(whole)) return x;
  if (ps.length === 0) return x;
  const [outer, ...inner] = ps;
  const innerSize = product(inner.map((a) => a.size));
  const P = innerSize.value;
  if (P === undefined) return `${describeNode(node)} narrows an axis whose inner pieces have symbolic size ${innerSize}`;
  if (inner.length && (step !== 1 || start % P !== 0 || size.value === undefined || size.value % P !== 0)) {
    return `${describeNode(node)} takes [${start}, +${size}) of an axis of pieces ${ps.map((a) => String(a.size)).join('·')}, not whole pieces`;
  }
  const outerStart = start / P;
  const outerSize = inner.length ? SymDim.of(size.value! / P) : size;
  if (!outer!.src.startsWith('F') && !isRepeat(outer!)) return `${describeNode(node)} slices the ${outer!.src === 'row0' || outer!.src.startsWith('row') ? 'sequence or batch' : outer!.src} axis`;
  const narrowed: Atom = { src: outer!.src, size: outerSize, stride: outer!.stride.mul(step) };
  const axes = x.axes.slice();
  axes[axis] = [narrowed, ...inner];
  return { axes, base: withBase(x, outer!.src, outer!.stride.mul(outerStart)) };
}

const slice: LayoutStep = (x, c) => {
  const rank = x.axes.length;
  const starts = constInts(c, 1);
  const outDims = c.shapes.shape(c.output);
  if (!starts || !outDims) return `${describeNode(c.node)} has no constant start`;
  const axes = c.node.inputs[3] ? constInts(c, 3) : starts.map((_, i) => i);
  const steps = c.node.inputs[4] ? constInts(c, 4) : starts.map(() => 1);
  if (!axes || !steps) return `${describeNode(c.node)} has no constant axes / steps`;
  let cur: Labels = x;
  for (let i = 0; i < axes.length; i++) {
    const a = normAxis(axes[i]!, rank);
    const whole = axisSize(x.axes[a]!).value;
    let s = starts[i]!;
    if (s < 0) {
      if (whole === undefined) return `${describeNode(c.node)} slices a symbolic axis from its end`;
      s += whole;
    }
    const r = narrow(cur, a, s, outDims[a]!, steps[i]!, c.node);
    if (typeof r === 'string') return r;
    cur = r;
  }
  return cur;
};

const gather: LayoutStep = (x, c) => {
  const rank = x.axes.length;
  const axis = normAxis(c.node.getInt('axis', 0), rank);
  const idx = constInts(c, 1);
  const idxRank = c.shapes.rank(c.node.inputs[1]);
  if (!idx || idxRank === undefined || idxRank > 1) return `${describeNode(c.node)} gathers with indices that are not a constant scalar or range`;
  const whole = axisSize(x.axes[axis]!).value;
  const at = idx.map((i) => (i < 0 && whole !== undefined ? i + whole : i));
  if (at.some((i, k) => i !== at[0]! + k)) return `${describeNode(c.node)} gathers non-consecutive indices [${idx.join(', ')}]`;
  const r = narrow(x, axis, at[0]!, SymDim.of(at.length), 1, c.node);
  if (typeof r === 'string') return r;
  if (idxRank === 0) return { axes: r.axes.filter((_, i) => i !== axis), base: r.base };
  return r;
};

const split: LayoutStep = (x, c) => {
  const rank = x.axes.length;
  const axis = normAxis(c.node.getInt('axis', 0), rank);
  const k = c.node.outputs.indexOf(c.output);
  let start = 0;
  for (let i = 0; i < k; i++) {
    const d = c.shapes.dim(c.node.outputs[i], axis)?.value;
    if (d === undefined) return `the sizes of ${describeNode(c.node)} are not constant`;
    start += d;
  }
  const size = c.shapes.dim(c.output, axis);
  if (!size) return `the sizes of ${describeNode(c.node)} are unknown`;
  return narrow(x, axis, start, size, 1, c.node);
};

/** Expand / Tile of a size-1 axis to n: a broadcast copy (repeat_kv). */
const expand: LayoutStep = (x, c) => {
  const out = c.shapes.shape(c.output);
  if (!out) return `the shape of ${describeNode(c.node)} is unknown`;
  const lead = out.length - x.axes.length;
  if (lead < 0) return `${describeNode(c.node)} lowers the rank`;
  const axes: Atom[][] = [];
  for (let i = 0; i < out.length; i++) {
    const src = i < lead ? [] : x.axes[i - lead]!;
    const d = out[i]!;
    if (axisSize(src).equals(d)) axes.push(src);
    else if (pieces(src).length === 0) axes.push([{ src: `rep:${c.node.name || describeNode(c.node)}#${i}`, size: d, stride: SymDim.of(0) }]);
    else return `${describeNode(c.node)} broadcasts an axis of size ${axisSize(src)} to ${d}`;
  }
  return { axes, base: x.base };
};

const tile: LayoutStep = (x, c) => {
  const reps = constInts(c, 1);
  if (!reps || reps.length !== x.axes.length) return `the repeats of ${describeNode(c.node)} are not constant`;
  const axes = x.axes.map((ax, i) => {
    const r = reps[i]!;
    if (r === 1) return ax;
    return [{ src: `rep:${c.node.name || describeNode(c.node)}#${i}`, size: SymDim.of(r), stride: SymDim.of(0) }, ...ax];
  });
  return { axes, base: x.base };
};

/** Concat(past, new) on the sequence axis: the axis keeps its source and grows. */
const concat: LayoutStep = (x, c) => {
  const rank = x.axes.length;
  const axis = normAxis(c.node.getInt('axis', 0), rank);
  const ps = pieces(x.axes[axis]!);
  if (ps.length !== 1 || !isRow(ps[0]!)) return `${describeNode(c.node)} concatenates axis ${axis}, which is not a sequence axis`;
  const d = c.shapes.dim(c.output, axis);
  if (!d) return `the shape of ${describeNode(c.node)} is unknown`;
  const axes = x.axes.slice();
  axes[axis] = [{ ...ps[0]!, size: d }];
  return { axes, base: x.base };
};

const flatten: LayoutStep = (x, c) => {
  const axis = normAxis(c.node.getInt('axis', 1), x.axes.length);
  return { axes: [x.axes.slice(0, axis).flat(), x.axes.slice(axis).flat()], base: x.base };
};

/**
 * How each layout op moves the atoms. `data` is the input the traced tensor flows
 * through (the others are shapes, indices, a past tensor or a scale).
 */
export const LAYOUT_RULES: Record<string, LayoutStep> = {
  Identity: keep,
  Cast: keep,
  CastLike: keep,
  Dropout: keep,
  Transpose: transpose,
  Reshape: reshape,
  Flatten: flatten,
  Squeeze: squeeze,
  Unsqueeze: unsqueeze,
  Slice: slice,
  Gather: gather,
  Split: split,
  Expand: expand,
  Tile: tile,
  Concat: concat,
};

/** Applies the rule of `node` (which must be in LAYOUT_RULES or value-preserving). */
export function applyLayout(x: Labels, c: StepContext, preserving: boolean): Labels | string {
  if (preserving) return x;
  const rule = LAYOUT_RULES[c.node.opType];
  if (!rule) return `${describeNode(c.node)} has no axis rule`;
  return rule(x, c);
}

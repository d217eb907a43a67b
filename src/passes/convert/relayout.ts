/**
 * The memory branch works in [B, T, features]; attention sites store their tensors in
 * whatever layout the exporter chose ([T, B, E] projections and a [T·B, E] output for
 * torch.nn.MultiheadAttention). These helpers emit the Squeeze / Reshape / Transpose
 * that take a site tensor to [B, T, ·] and back, from the axis layouts discovery found
 * (AxisPiece lists, major piece first). Nothing is emitted when a layout is already
 * [B, T, ·].
 */
import type { Builder, Value } from '../../ir/index.js';
import type { AxisPiece } from '../attention/site.js';

/** Sizes of the pieces: batch and sequence at run time (1-D int64 of one element), heads and head size fixed. */
export interface PieceSizes {
  batch: Value;
  seq: Value;
  heads: number;
  headDim: number;
}

const ORDER: AxisPiece[] = ['batch', 'seq', 'heads', 'head_dim', 'features'];

function isCanonical(layout: readonly AxisPiece[][]): boolean {
  const flat = layout.flat();
  return layout.length === 3 && layout[0]!.join() === 'batch' && layout[1]!.join() === 'seq' && flat.slice(2).every((p, i, a) => i === 0 || ORDER.indexOf(p) > ORDER.indexOf(a[i - 1]!));
}

/** The run-time batch and sequence sizes of a [B, T, ·] tensor. */
export function runtimeSizes(b: Builder, canonical: Value, heads: number, headDim: number): PieceSizes {
  const shape = b.op('Shape', [canonical], {}, { name: 'bt_shape' });
  return {
    batch: b.op('Slice', [shape, b.ints([0]), b.ints([1])], {}, { name: 'batch' }),
    seq: b.op('Slice', [shape, b.ints([1]), b.ints([2])], {}, { name: 'seq' }),
    heads,
    headDim,
  };
}

/** A 1-D shape tensor for axes made of `pieces` (products per axis). */
function shapeOf(b: Builder, axes: readonly AxisPiece[][], s: PieceSizes): Value {
  const parts = axes.map((ax) => {
    let fixed = 1;
    const dynamic: Value[] = [];
    for (const p of ax) {
      if (p === 'batch') dynamic.push(s.batch);
      else if (p === 'seq') dynamic.push(s.seq);
      else if (p === 'heads') fixed *= s.heads;
      else if (p === 'head_dim') fixed *= s.headDim;
      else return b.ints([-1]);
    }
    let v: Value | null = null;
    for (const d of dynamic) v = v ? b.op('Mul', [v, d]) : d;
    if (!v) return b.ints([fixed]);
    return fixed === 1 ? v : b.op('Mul', [v, b.ints([fixed])]);
  });
  return parts.length === 1 ? parts[0]! : b.op('Concat', parts, { axis: 0 });
}

/**
 * A projection output ([T, B, F], [B, 1, T, F], ...: each axis the batch, the sequence,
 * a unit axis or features) as [B, T, F]. Features on several axes (an Einsum projection's
 * [B, T, H, d]) keep their order and are flattened into one, the way discovery numbers
 * their columns.
 */
export function projectionToCanonical(b: Builder, v: Value, layout: readonly AxisPiece[][], name: string): Value {
  if (isCanonical(layout)) return v;
  let x = v;
  const units = layout.map((ax, i) => (ax.length === 0 ? i : -1)).filter((i) => i >= 0);
  const kept = layout.filter((ax) => ax.length > 0);
  if (units.length) x = b.op('Squeeze', [x, b.ints(units)], {}, { name: `${name}_squeeze` });
  const features = kept.map((ax, i) => (ax[0] === 'features' ? i : -1)).filter((i) => i >= 0);
  const perm = [kept.findIndex((ax) => ax[0] === 'batch'), kept.findIndex((ax) => ax[0] === 'seq'), ...features];
  if (perm.some((p, i) => p !== i)) x = b.op('Transpose', [x], { perm }, { name: `${name}_to_bt` });
  if (features.length > 1) x = b.op('Reshape', [x, b.ints([0, 0, -1])], {}, { name: `${name}_bt` });
  return x;
}

/** The attention output in `layout` as [B, T, H·d]. */
export function outputToCanonical(b: Builder, a: Value, layout: readonly AxisPiece[][], s: PieceSizes): Value {
  if (isCanonical(layout)) return a;
  const atoms = layout.flat();
  let x = a;
  if (layout.some((ax) => ax.length !== 1)) x = b.op('Reshape', [x, shapeOf(b, atoms.map((p) => [p]), s)], {}, { name: 'attention_pieces' });
  const target = ORDER.filter((p) => atoms.includes(p));
  const perm = target.map((p) => atoms.indexOf(p));
  if (perm.some((p, i) => p !== i)) x = b.op('Transpose', [x], { perm }, { name: 'attention_to_bt' });
  return b.op('Reshape', [x, b.ints([0, 0, -1])], {}, { name: 'attention_bt' });
}

/** [B, T, H·d] back to the attention output's `layout`. */
export function outputFromCanonical(b: Builder, y: Value, layout: readonly AxisPiece[][], s: PieceSizes): Value {
  if (isCanonical(layout)) return y;
  const atoms = layout.flat();
  const source = ORDER.filter((p) => atoms.includes(p));
  let x = b.op('Reshape', [y, shapeOf(b, source.map((p) => [p]), s)], {}, { name: 'memory_pieces' });
  const perm = atoms.map((p) => source.indexOf(p));
  if (perm.some((p, i) => p !== i)) x = b.op('Transpose', [x], { perm }, { name: 'memory_to_site' });
  return b.op('Reshape', [x, shapeOf(b, layout, s)], {}, { name: 'memory_site_layout' });
}

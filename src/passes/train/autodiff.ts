/**
 * Reverse-mode automatic differentiation over the IR: given a graph, a scalar loss value
 * and the values to differentiate with respect to (trainable initializers or inputs),
 * appends the backward computation to the graph and returns the gradient value of each.
 *
 * Like onnxruntime's training gradient builder, it emits plain ONNX ops from one rule per
 * op type (./gradients). Only the nodes on a path from a trainable value to the loss are
 * differentiated; paths through shapes, masks and integer math carry no gradient and are
 * pruned; an op on the path without a rule is an error naming the node. Dynamic shapes
 * work: rules compute shapes with Shape/Size, never from the sizes seen at build time.
 * Rules need the rank (and element type) of the values they touch, which `info` supplies
 * (the IR's declared types and initializers, completed by a probe run, see
 * runtime/shape_probe.ts).
 */
import { describeNode, UserInputError } from '../../ir/errors.js';
import { Builder } from '../../ir/builder.js';
import type { Graph } from '../../ir/graph.js';
import type { Node } from '../../ir/node.js';
import type { Value } from '../../ir/value.js';
import { DataType } from '../../ir/dtype.js';
import { Tensor } from '../../ir/tensor.js';
import { Emitter } from '../../ops/emit.js';
import { type GradContext, type ValueInfo, gradientRule, isDifferentiableInput, isFloatType, isNonDifferentiable, isStraightThrough } from './gradients/index.js';

export interface DifferentiateOptions {
  /** Rank and element type of a value; undefined when unknown. */
  info: (v: Value) => ValueInfo | undefined;
  /** Default-domain opset of the graph. */
  opset: number;
  /** Values treated as constants (no gradient flows through them). */
  stopGradient?: ReadonlySet<Value>;
  /** Provenance tag of the nodes created (default 'autodiff'). */
  tag?: string;
}

export interface GradientPath {
  /** Nodes on a path from a trainable value to the loss, in graph order. */
  nodes: Node[];
  /** Values whose gradient is computed. */
  values: Set<Value>;
}

/** The nodes and values that backpropagation from `loss` to `wrt` visits (graph must be sorted). */
export function gradientPath(graph: Graph, loss: Value, wrt: readonly Value[], options: { stopGradient?: ReadonlySet<Value>; dtype?: (v: Value) => DataType | undefined } = {}): GradientPath {
  const stop = options.stopGradient ?? new Set<Value>();
  const dtype = options.dtype ?? (() => undefined);
  const active = new Set<Value>(wrt);
  const nodes = graph.nodes();
  for (const n of nodes) {
    if (isNonDifferentiable(n)) continue;
    if (!n.inputs.some((v, i) => v && active.has(v) && !stop.has(v) && isDifferentiableInput(n, i))) continue;
    for (const o of n.outputs) if (!stop.has(o) && (isFloatType(dtype(o)) || isStraightThrough(n))) active.add(o);
  }
  const needed = new Set<Value>([loss]);
  const onPath: Node[] = [];
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i]!;
    if (!n.outputs.some((o) => needed.has(o) && active.has(o))) continue;
    onPath.push(n);
    n.inputs.forEach((v, i) => {
      if (v && active.has(v) && !stop.has(v) && isDifferentiableInput(n, i)) needed.add(v);
    });
  }
  onPath.reverse();
  const values = new Set<Value>();
  for (const v of needed) if (active.has(v)) values.add(v);
  return { nodes: onPath, values };
}

/** Appends the backward graph; returns d loss / d w for every w of `wrt` (zeros where w does not reach the loss). */
export function differentiate(graph: Graph, loss: Value, wrt: readonly Value[], options: DifferentiateOptions): Map<Value, Value> {
  const dtypeOf = (v: Value): DataType | undefined => options.info(v)?.dtype;
  const path = gradientPath(graph, loss, wrt, { stopGradient: options.stopGradient, dtype: dtypeOf });
  const b = new Builder(graph, { tag: options.tag ?? 'autodiff', prefix: 'grad/' });
  const e = new ShapeCachingEmitter(b);
  // values made by rules have no recorded rank; a gradient being reduced by unbroadcast has
  // the rank of the output of the node being differentiated (elementwise and MatMul rules)
  let current: Node | null = null;
  const gradRank = (g: Value): number => options.info(g)?.rank ?? cx.rank(current!.outputs[0]!);
  const cx: GradContext = {
    e,
    opset: options.opset,
    rank(v: Value): number {
      const i = options.info(v);
      if (!i) throw new UserInputError(`autodiff: the rank of '${v.name}' is unknown (from ${v.producer ? describeNode(v.producer) : 'a graph input'})`);
      return i.rank;
    },
    dtype: dtypeOf,
    dims: (v) => options.info(v)?.dims,
    unbroadcast: (g, like, ranks) => {
      const rg = ranks?.g ?? gradRank(g);
      const rl = ranks?.like ?? cx.rank(like);
      // g has the differentiated node's output shape unless the rule says otherwise
      const axes = ranks ? undefined : staticBroadcastAxes(options.info(g)?.dims ?? cx.dims(current!.outputs[0]!), cx.dims(like), rg, rl);
      if (axes) {
        const summed = axes.length ? e.op('ReduceSum', [g, e.ints(axes)], { keepdims: 1 }) : g;
        return rl === rg ? summed : e.reshapeTo(summed, e.shape(like));
      }
      return unbroadcast(cx, g, like, rg, rl);
    },
    zerosLike: (v) => {
      const z = e.op('ConstantOfShape', [e.shape(v)]);
      const t = dtypeOf(v);
      return t === undefined || t === DataType.FLOAT ? z : e.cast(z, t);
    },
  };

  const pending = new Map<Value, Value[]>();
  const add = (v: Value, g: Value): void => {
    const list = pending.get(v);
    if (list) list.push(g);
    else pending.set(v, [g]);
  };
  const take = (v: Value): Value | null => {
    const list = pending.get(v);
    if (!list) return null;
    const g = list.length === 1 ? list[0]! : e.op('Sum', list);
    pending.set(v, [g]);
    return g;
  };

  const seed = e.op('ConstantOfShape', [e.shape(loss)], { value: Tensor.fromArray(new Float32Array([1]), [1]) });
  const lt = dtypeOf(loss);
  add(loss, lt === undefined || lt === DataType.FLOAT ? seed : e.cast(seed, lt));
  for (let i = path.nodes.length - 1; i >= 0; i--) {
    const n = path.nodes[i]!;
    const dy = n.outputs.map((o) => take(o));
    if (dy.every((g) => g === null)) continue;
    const rule = gradientRule(n);
    if (!rule) {
      throw new UserInputError(
        `autodiff: ${describeNode(n)} is on the gradient path but op '${n.domain ? `${n.domain}.` : ''}${n.opType}' has no gradient rule` +
          ' (freeze what feeds it, or add a rule to the registry in src/passes/train/gradients)',
      );
    }
    const needs = n.inputs.map((v, j) => !!v && path.values.has(v) && isDifferentiableInput(n, j));
    let grads: (Value | null)[];
    current = n;
    try {
      grads = rule(cx, n, dy, needs);
    } catch (err) {
      if (err instanceof UserInputError) throw err;
      throw new UserInputError(`autodiff: ${describeNode(n)}: ${(err as Error).message}`);
    }
    n.inputs.forEach((v, j) => {
      if (!v || !needs[j]) return;
      const g = grads[j];
      if (!g) throw new UserInputError(`autodiff: the gradient rule of ${describeNode(n)} gave no gradient for input ${j} ('${v.name}')`);
      add(v, g);
    });
  }
  const out = new Map<Value, Value>();
  for (const w of wrt) out.set(w, take(w) ?? cx.zerosLike(w));
  return out;
}

/** Shape and Dim of a value are computed once per backward graph (pure, and very frequent in rules). */
class ShapeCachingEmitter extends Emitter {
  private readonly shapes = new Map<Value, Value>();
  private readonly dimsCache = new Map<string, Value>();
  private readonly ids = new Map<Value, number>();

  override shape(x: Value): Value {
    let s = this.shapes.get(x);
    if (!s) {
      s = super.shape(x);
      this.shapes.set(x, s);
    }
    return s;
  }

  override dim(x: Value, i: number): Value {
    let id = this.ids.get(x);
    if (id === undefined) {
      id = this.ids.size;
      this.ids.set(x, id);
    }
    const key = `${id}:${i}`;
    let d = this.dimsCache.get(key);
    if (!d) {
      d = super.dim(x, i);
      this.dimsCache.set(key, d);
    }
    return d;
  }
}

/**
 * The axes along which `like` was broadcast to g's shape when they are the same in every
 * probe run (and like's dims are 1 there); undefined when not provable, which sends the
 * caller to the dynamic form.
 */
export function staticBroadcastAxes(gDims: number[][] | undefined, likeDims: number[][] | undefined, rg: number, rl: number): number[] | undefined {
  if (!gDims || !likeDims || gDims.length === 0) return undefined;
  const runs = likeDims.length === 1 ? gDims.map(() => likeDims[0]!) : likeDims;
  if (runs.length !== gDims.length) return undefined;
  let axes: number[] | undefined;
  for (let r = 0; r < gDims.length; r++) {
    const g = gDims[r]!;
    const l = [...Array.from({ length: rg - rl }, () => 1), ...runs[r]!];
    if (g.length !== rg || l.length !== rg) return undefined;
    const a: number[] = [];
    for (let i = 0; i < rg; i++) {
      if (l[i] === g[i]) continue;
      if (l[i] !== 1) return undefined;
      a.push(i);
    }
    if (axes && axes.join(',') !== a.join(',')) return undefined;
    axes = a;
  }
  return axes;
}

/**
 * Sums g over the axes along which `like` was broadcast, then gives it like's shape:
 * like's shape is left-padded with ones to g's rank, the axes where the two differ are
 * found at run time (NonZero), and ReduceSum with noop_with_empty_axes leaves g alone
 * when there are none. Static ranks suffice; the dims may be dynamic.
 */
export function unbroadcast(cx: GradContext, g: Value, like: Value, rg: number, rl: number): Value {
  const { e } = cx;
  let shapeL = e.shape(like);
  if (rl === 0 && rg === 0) return g;
  if (rl < rg) shapeL = e.concat([e.ints(Array.from({ length: rg - rl }, () => 1)), ...(rl > 0 ? [shapeL] : [])], 0);
  const differ = e.op('Not', [e.op('Equal', [shapeL, e.shape(g)])]);
  const axes = e.reshape(e.op('NonZero', [differ]), [-1]);
  const summed = e.op('ReduceSum', [g, axes], { keepdims: 1, noop_with_empty_axes: 1 });
  return e.reshapeTo(summed, e.shape(like));
}

/** Gradient rules of reductions, (log-)softmax and normalisation ops. */
import { DataType } from '../../../ir/dtype.js';
import type { Node } from '../../../ir/node.js';
import type { Value } from '../../../ir/value.js';

import { type GradContext, constLike, registerGradient } from './registry.js';

function d0(dy: readonly (Value | null)[]): Value {
  return dy[0]!;
}

/** The axes of a Reduce* node: its input 1 (opset >= 13 for ReduceSum, >= 18 for the others) or attribute. */
function reduceAxes(cx: GradContext, n: Node): Value | null {
  const sumLike = n.opType === 'ReduceSum';
  const axesAsInput = cx.opset >= (sumLike ? 13 : 18);
  if (axesAsInput) return n.input(1);
  const a = n.attribute('axes');
  return a ? cx.e.ints(n.getInts('axes')) : null;
}

/** dy of a reduction broadcast back to the input's shape. */
function expandBack(cx: GradContext, n: Node, dy: Value): Value {
  const { e } = cx;
  const x = n.requireInput(0);
  const axes = reduceAxes(cx, n);
  const keep = n.getInt('keepdims', 1) === 1;
  if (!axes && n.getInt('noop_with_empty_axes', 0) === 1) return dy;
  const dyk = keep || !axes ? dy : e.op('Unsqueeze', [dy, axes]);
  return e.op('Expand', [dyk, e.shape(x)]);
}

registerGradient('ReduceSum', (cx, n, dy) => [expandBack(cx, n, d0(dy)), null], { inputs: [0] });

/** Size(a) / Size(b) as a float scalar (count of elements reduced into each output). */
function ratio(cx: GradContext, small: Value, big: Value): Value {
  const { e } = cx;
  return e.op('CastLike', [e.div(e.cast(e.op('Size', [small]), DataType.DOUBLE), e.cast(e.op('Size', [big]), DataType.DOUBLE)), small]);
}

registerGradient('ReduceMean', (cx, n, dy) => [meanBack(cx, n, d0(dy)), null], { inputs: [0] });
function meanBack(cx: GradContext, n: Node, dy: Value): Value {
  return cx.e.mul(expandBack(cx, n, dy), ratio(cx, n.output, n.requireInput(0)));
}

registerGradient('ReduceSumSquare', (cx, n, dy) => {
  const x = n.requireInput(0);
  return [cx.e.mul(expandBack(cx, n, d0(dy)), cx.e.mul(x, constLike(cx, x, 2))), null];
}, { inputs: [0] });

function softmaxAxis(cx: GradContext, n: Node): number {
  const x = n.requireInput(0);
  const axis = n.getInt('axis', cx.opset >= 13 ? -1 : 1);
  if (cx.opset < 13) {
    const r = cx.rank(x);
    if ((axis < 0 ? axis + r : axis) !== r - 1) throw new Error(`${n.opType} before opset 13 flattens from axis ${axis}; only the last axis has a gradient rule`);
  }
  return axis;
}

registerGradient('Softmax', (cx, n, dy) => {
  const { e } = cx;
  const y = n.output;
  const g = d0(dy);
  const axis = softmaxAxis(cx, n);
  return [e.mul(y, e.sub(g, e.reduceSum(e.mul(g, y), [axis], true)))];
});

registerGradient('LogSoftmax', (cx, n, dy) => {
  const { e } = cx;
  const g = d0(dy);
  const axis = softmaxAxis(cx, n);
  return [e.sub(g, e.mul(e.exp(n.output), e.reduceSum(g, [axis], true)))];
});

/** The axes a normalisation op reduces (from `axis` on), its epsilon, and the mean over those axes (keepdims). */
function normalisedAxes(cx: GradContext, n: Node, x: Value): { eps: number; mean: (v: Value) => Value } {
  const { e } = cx;
  const r = cx.rank(x);
  const a0 = n.getInt('axis', -1);
  const a = a0 < 0 ? a0 + r : a0;
  const axes = Array.from({ length: r - a }, (_, i) => a + i);
  const cnt = e.op('CastLike', [e.op('ReduceProd', [e.op('Shape', [x], { start: a })], { keepdims: 0 }), x]);
  return { eps: n.getFloat('epsilon', 1e-5), mean: (v: Value): Value => e.div(e.reduceSum(v, axes, true), cnt) };
}

/**
 * LayerNormalization (opset 17): y = (x - mean) * invstd * scale + bias over the axes from
 * `axis` on. dx = invstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * scale.
 */
registerGradient('LayerNormalization', (cx, n, dy, needs) => {
  const { e } = cx;
  const x = n.requireInput(0);
  const scale = n.requireInput(1);
  const bias = n.input(2);
  const { eps, mean } = normalisedAxes(cx, n, x);
  const xc = e.sub(x, mean(x));
  const inv = e.div(constLike(cx, x, 1), e.op('Sqrt', [e.add(mean(e.mul(xc, xc)), constLike(cx, x, eps))]));
  const xhat = e.mul(xc, inv);
  const g = d0(dy);
  let dx: Value | null = null;
  if (needs[0]) {
    const gx = e.mul(g, scale);
    dx = e.mul(inv, e.sub(e.sub(gx, mean(gx)), e.mul(xhat, mean(e.mul(gx, xhat)))));
  }
  return [dx, needs[1] ? cx.unbroadcast(e.mul(g, xhat), scale) : null, needs[2] && bias ? cx.unbroadcast(g, bias) : null];
});

/**
 * RMSNormalization (opset 23): y = x · r · scale, r = 1/√(mean(x²) + ε) over the axes from
 * `axis` on. dx = r · (g − x̂ · mean(g · x̂)) with x̂ = x · r and g = dy · scale.
 */
registerGradient('RMSNormalization', (cx, n, dy, needs) => {
  const { e } = cx;
  const x = n.requireInput(0);
  const scale = n.requireInput(1);
  const { eps, mean } = normalisedAxes(cx, n, x);
  const inv = e.div(constLike(cx, x, 1), e.op('Sqrt', [e.add(mean(e.mul(x, x)), constLike(cx, x, eps))]));
  const xhat = e.mul(x, inv);
  const g = d0(dy);
  let dx: Value | null = null;
  if (needs[0]) {
    const gx = e.mul(g, scale);
    dx = e.mul(inv, e.sub(gx, e.mul(xhat, mean(e.mul(gx, xhat)))));
  }
  return [dx, needs[1] ? cx.unbroadcast(e.mul(g, xhat), scale) : null];
});

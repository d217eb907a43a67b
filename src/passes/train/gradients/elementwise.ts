/** Gradient rules of elementwise ops (broadcasting inputs are reduced back to their shapes). */
import { attr } from '../../../ir/attribute.js';
import { DataType } from '../../../ir/dtype.js';
import type { Value } from '../../../ir/value.js';
import { type GradContext, constLike, registerGradient } from './registry.js';

const FLOATS = new Set([DataType.FLOAT, DataType.DOUBLE, DataType.FLOAT16, DataType.BFLOAT16]);

/** dy (first output) of a single-output op; rules are only called when it exists. */
function d0(dy: readonly (Value | null)[]): Value {
  return dy[0]!;
}

const zero = (cx: GradContext, like: Value): Value => constLike(cx, like, 0);
const one = (cx: GradContext, like: Value): Value => constLike(cx, like, 1);
const scalar = constLike;

registerGradient('Identity', (_cx, _n, dy) => [d0(dy)]);
registerGradient('Dropout', (_cx, _n, dy) => [d0(dy), null, null], { inputs: [0] }); // inference mode: identity

registerGradient('Add', (cx, n, dy, needs) => {
  const g = d0(dy);
  return [needs[0] ? cx.unbroadcast(g, n.requireInput(0)) : null, needs[1] ? cx.unbroadcast(g, n.requireInput(1)) : null];
});

registerGradient('Sum', (cx, n, dy, needs) => n.inputs.map((x, i) => (needs[i] && x ? cx.unbroadcast(d0(dy), x) : null)));

registerGradient('Sub', (cx, n, dy, needs) => {
  const g = d0(dy);
  return [needs[0] ? cx.unbroadcast(g, n.requireInput(0)) : null, needs[1] ? cx.unbroadcast(cx.e.neg(g), n.requireInput(1)) : null];
});

registerGradient('Mul', (cx, n, dy, needs) => {
  const { e } = cx;
  const g = d0(dy);
  const [a, b] = [n.requireInput(0), n.requireInput(1)];
  return [needs[0] ? cx.unbroadcast(e.mul(g, b), a) : null, needs[1] ? cx.unbroadcast(e.mul(g, a), b) : null];
});

registerGradient('Div', (cx, n, dy, needs) => {
  const { e } = cx;
  const g = d0(dy);
  const [a, b] = [n.requireInput(0), n.requireInput(1)];
  const ga = e.div(g, b);
  // d(a/b)/db = -(a/b)/b: reuse g/b
  return [needs[0] ? cx.unbroadcast(ga, a) : null, needs[1] ? cx.unbroadcast(e.neg(e.mul(ga, n.output)), b) : null];
});

registerGradient('Neg', (cx, _n, dy) => [cx.e.neg(d0(dy))]);

registerGradient('Pow', (cx, n, dy, needs) => {
  const { e } = cx;
  const g = d0(dy);
  const [a, b] = [n.requireInput(0), n.requireInput(1)];
  let ga: Value | null = null;
  if (needs[0]) {
    const bf = cx.dtype(b) === cx.dtype(a) ? b : e.op('CastLike', [b, a]);
    ga = cx.unbroadcast(e.mul(g, e.mul(bf, e.op('Pow', [a, e.sub(bf, one(cx, a))]))), a);
  }
  const gb = needs[1] ? cx.unbroadcast(e.mul(g, e.mul(n.output, e.op('Log', [a]))), b) : null;
  return [ga, gb];
});

registerGradient('Sqrt', (cx, n, dy) => [cx.e.div(cx.e.mul(d0(dy), scalar(cx, n.output, 0.5)), n.output)]);
registerGradient('Exp', (cx, n, dy) => [cx.e.mul(d0(dy), n.output)]);
registerGradient('Log', (cx, n, dy) => [cx.e.div(d0(dy), n.requireInput(0))]);
registerGradient('Abs', (cx, n, dy) => [cx.e.mul(d0(dy), cx.e.op('Sign', [n.requireInput(0)]))]);
registerGradient('Reciprocal', (cx, n, dy) => [cx.e.neg(cx.e.mul(d0(dy), cx.e.mul(n.output, n.output)))]);
registerGradient('Sigmoid', (cx, n, dy) => {
  const y = n.output;
  return [cx.e.mul(d0(dy), cx.e.mul(y, cx.e.sub(one(cx, y), y)))];
});
registerGradient('Tanh', (cx, n, dy) => {
  const y = n.output;
  return [cx.e.mul(d0(dy), cx.e.sub(one(cx, y), cx.e.mul(y, y)))];
});
registerGradient('Relu', (cx, n, dy) => {
  const x = n.requireInput(0);
  return [cx.e.op('Where', [cx.e.op('Greater', [x, zero(cx, x)]), d0(dy), zero(cx, x)])];
});
registerGradient('Erf', (cx, n, dy) => {
  const x = n.requireInput(0);
  const { e } = cx;
  return [e.mul(d0(dy), e.mul(scalar(cx, x, 2 / Math.sqrt(Math.PI)), e.exp(e.neg(e.mul(x, x)))))];
});
registerGradient('Softplus', (cx, n, dy) => [cx.e.mul(d0(dy), cx.e.sigmoid(n.requireInput(0)))]);
registerGradient('Sin', (cx, n, dy) => [cx.e.mul(d0(dy), cx.e.op('Cos', [n.requireInput(0)]))]);
registerGradient('Cos', (cx, n, dy) => [cx.e.neg(cx.e.mul(d0(dy), cx.e.op('Sin', [n.requireInput(0)])))]);

/** Min / Max of two inputs: the gradient goes to the selected operand (ties: the first). */
function minMax(opType: 'Min' | 'Max'): void {
  registerGradient(opType, (cx, n, dy, needs) => {
    if (n.inputs.length !== 2) throw new Error(`${opType} with ${n.inputs.length} inputs has no gradient rule (only 2)`);
    const { e } = cx;
    const [a, b] = [n.requireInput(0), n.requireInput(1)];
    const g = d0(dy);
    const firstWins = e.op(opType === 'Min' ? 'LessOrEqual' : 'GreaterOrEqual', [a, b]);
    const z = zero(cx, a);
    return [
      needs[0] ? cx.unbroadcast(e.op('Where', [firstWins, g, z]), a) : null,
      needs[1] ? cx.unbroadcast(e.op('Where', [firstWins, z, g]), b) : null,
    ];
  });
}
minMax('Min');
minMax('Max');

registerGradient('Where', (cx, n, dy, needs) => {
  const { e } = cx;
  const [c, x, y] = [n.requireInput(0), n.requireInput(1), n.requireInput(2)];
  const g = d0(dy);
  const z = zero(cx, x);
  return [null, needs[1] ? cx.unbroadcast(e.op('Where', [c, g, z]), x) : null, needs[2] ? cx.unbroadcast(e.op('Where', [c, z, g]), y) : null];
}, { inputs: [1, 2] });

registerGradient('Clip', (cx, n, dy) => {
  const { e } = cx;
  const x = n.requireInput(0);
  let inside: Value | null = null;
  const lo = n.input(1);
  const hi = n.input(2);
  if (lo) inside = e.op('GreaterOrEqual', [x, lo]);
  if (hi) {
    const h = e.op('LessOrEqual', [x, hi]);
    inside = inside ? e.op('And', [inside, h]) : h;
  }
  return [inside ? e.op('Where', [inside, d0(dy), zero(cx, x)]) : d0(dy), null, null];
}, { inputs: [0] });

registerGradient('CastLike', (cx, n, dy) => [cx.e.op('CastLike', [d0(dy), n.requireInput(0)]), null], { inputs: [0] });

registerGradient('Cast', (cx, n, dy) => {
  const x = n.requireInput(0);
  const from = cx.dtype(x);
  if (from === undefined) return [null];
  // an integer input on the gradient path is a quantized product (MatMulInteger): straight through, in float
  if (!FLOATS.has(from)) return [d0(dy)];
  const to = n.getInt('to');
  return [to === from ? d0(dy) : cx.e.op('Cast', [d0(dy)], { to: attr.int(from) })];
});

/** Whether a value's element type can carry a gradient. */
export function isFloatType(t: DataType | undefined): boolean {
  return t === undefined || FLOATS.has(t);
}

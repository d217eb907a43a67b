/** Gradient rules of MatMul and Gemm. */
import { attr } from '../../../ir/attribute.js';
import { DataType } from '../../../ir/dtype.js';
import { UserInputError } from '../../../ir/errors.js';
import type { Value } from '../../../ir/value.js';
import { type GradContext, constLike, registerGradient } from './registry.js';

/** Swaps the last two axes of a rank-r tensor. */
function swapLast(cx: GradContext, x: Value, r: number): Value {
  const perm = Array.from({ length: r }, (_, i) => i);
  perm[r - 2] = r - 1;
  perm[r - 1] = r - 2;
  return cx.e.transpose(x, perm);
}

/**
 * Y = A B (numpy semantics). dA = dY Bᵀ, dB = Aᵀ dY, each summed over broadcast batch
 * axes. A 2-D B (a weight) gets its gradient from one [N, K]ᵀ[N, M] product over all
 * leading axes flattened, instead of a batched product and a reduction.
 */
registerGradient('MatMul', (cx, n, dy, needs) => {
  const { e } = cx;
  const A0 = n.requireInput(0);
  const B0 = n.requireInput(1);
  const ra0 = cx.rank(A0);
  const rb0 = cx.rank(B0);
  // 1-D operands become matrices, and dY gets the axes they lost
  const A = ra0 === 1 ? e.unsqueeze(A0, [0]) : A0;
  const B = rb0 === 1 ? e.unsqueeze(B0, [1]) : B0;
  let g = dy[0]!;
  if (ra0 === 1 && rb0 === 1) g = e.reshape(g, [1, 1]);
  else if (ra0 === 1) g = e.unsqueeze(g, [-2]);
  else if (rb0 === 1) g = e.unsqueeze(g, [-1]);
  const ra = Math.max(ra0, 2);
  const rb = Math.max(rb0, 2);
  let dA: Value | null = null;
  let dB: Value | null = null;
  if (needs[0]) {
    dA = e.matmul(g, swapLast(cx, B, rb));
    dA = e.reshapeTo(cx.unbroadcast(dA, A, { g: Math.max(ra, rb), like: ra }), e.shape(A0));
  }
  if (needs[1]) {
    if (rb === 2 && ra >= 2) {
      const lastA = e.op('Shape', [A], { start: -1 });
      const lastG = e.op('Shape', [g], { start: -1 });
      const A2 = e.reshapeTo(A, e.concat([e.ints([-1]), lastA], 0));
      const G2 = e.reshapeTo(g, e.concat([e.ints([-1]), lastG], 0));
      dB = e.matmul(e.transpose(A2, [1, 0]), G2);
    } else {
      dB = cx.unbroadcast(e.matmul(swapLast(cx, A, ra), g), B, { g: Math.max(ra, rb), like: rb });
    }
    dB = e.reshapeTo(dB, e.shape(B0));
  }
  return [dA, dB];
});

const g0 = (n: { output: Value }): Value => n.output;

/** Y = alpha op(A) op(B) + beta C. */
registerGradient('Gemm', (cx, n, dy, needs) => {
  const { e } = cx;
  const [A, B] = [n.requireInput(0), n.requireInput(1)];
  const C = n.input(2);
  const alpha = n.getFloat('alpha', 1);
  const beta = n.getFloat('beta', 1);
  const tA = n.getInt('transA', 0);
  const tB = n.getInt('transB', 0);
  const g = dy[0]!;
  const gemm = (x: Value, y: Value, transA: number, transB: number): Value => e.op('Gemm', [x, y], { alpha: attr.float(alpha), transA, transB });
  let dA: Value | null = null;
  let dB: Value | null = null;
  if (needs[0]) dA = tA === 0 ? gemm(g, B, 0, tB === 0 ? 1 : 0) : gemm(B, g, tB, 1);
  if (needs[1]) dB = tB === 0 ? gemm(A, g, tA === 0 ? 1 : 0, 0) : gemm(g, A, 1, tA);
  const dC = needs[2] && C ? cx.unbroadcast(beta === 1 ? g : e.mul(g, constLike(cx, g0(n), beta)), C) : null;
  return [dA, dB, dC];
});

/**
 * Einsum (explicit or implicit output, no ellipsis, no letter twice in one operand): the
 * gradient of operand i is the einsum of dY with the other operands onto i's letters; letters
 * of i that appear nowhere else (summed away inside i) are broadcast back with Expand. A
 * letter with size 1 in one operand and N in another (broadcast) is not supported: onnxruntime
 * does not agree with shape inference on such outputs.
 */
registerGradient('Einsum', (cx, n, dy, needs) => {
  const { e } = cx;
  const equation = n.getString('equation').replace(/\s+/g, '');
  const where = `${n.opType} '${n.name}' ('${equation}')`;
  if (equation.includes('.')) throw new UserInputError(`autodiff: ${where} uses an ellipsis; the Einsum gradient rule takes explicit letters`);
  const [lhs, explicit] = equation.split('->') as [string, string | undefined];
  const operands = lhs.split(',');
  for (const o of operands) if (new Set(o).size !== o.length) throw new UserInputError(`autodiff: ${where} repeats a letter in one operand (a diagonal); the Einsum gradient rule does not take it`);
  // implicit output: the letters that appear once, in alphabetical order
  const out = explicit ?? [...new Set(lhs.replace(/,/g, ''))].filter((c) => lhs.split(c).length === 2).sort().join('');
  return operands.map((letters, i) => {
    if (!needs[i]) return null;
    const others = operands.filter((_, j) => j !== i);
    const seen = new Set([...out, ...others.join('')]);
    const kept = [...letters].filter((c) => seen.has(c)).join('');
    let g = e.op('Einsum', [dy[0]!, ...n.inputs.filter((_, j) => j !== i).map((v) => v!)], { equation: `${[out, ...others].join(',')}->${kept}` });
    if (kept.length < letters.length) {
      const missing = [...letters].map((c, k) => (seen.has(c) ? -1 : k)).filter((k) => k >= 0);
      g = e.op('Expand', [e.unsqueeze(g, missing), e.shape(n.requireInput(i))]);
    }
    return g;
  });
});

/**
 * The straight-through estimator of dynamic quantization (with Cast's integer pass-through):
 * MatMulInteger(A, B, a_zp, b_zp) as A · (B − b_zp) in float, so dA = dY · (B − b_zp)ᵀ; and
 * DynamicQuantizeLinear's y ≈ x / y_scale + zp, so dx = dy / y_scale (its scale and zero point
 * are treated as constants). Together: dx = dY · W_deqᵀ, the float projection's gradient.
 */
registerGradient(
  'MatMulInteger',
  (cx, n, dy) => {
    const { e } = cx;
    const B = n.requireInput(1);
    if (cx.rank(B) !== 2) throw new UserInputError(`autodiff: ${n.opType} '${n.name}': the straight-through gradient takes a 2-D weight`);
    const zp = n.input(3);
    const w = e.op('Cast', [B], { to: attr.int(DataType.FLOAT) });
    const centred = zp ? e.sub(w, e.op('Cast', [zp], { to: attr.int(DataType.FLOAT) })) : w;
    return [e.matmul(dy[0]!, e.transpose(centred, [1, 0])), null, null, null];
  },
  { inputs: [0] },
);

registerGradient(
  'DynamicQuantizeLinear',
  (cx, n, dy) => [dy[0] ? cx.e.div(dy[0], n.outputs[1]!) : cx.zerosLike(n.requireInput(0))],
  { inputs: [0] },
);


/**
 * com.microsoft.MatMulNBits (4-bit blocks): y = x · W_deqᵀ with W_deq [N, K] unpacked in the
 * backward graph from B [N, K/block, block/2] (the even value in the low nibble), minus the
 * zero point 8, times the block scales; dx = dy · W_deq. Explicit zero points, other bit
 * widths and g_idx are refused by name. The weight itself gets no gradient (LoRA trains beside it).
 */
registerGradient(
  'MatMulNBits',
  (cx, n, dy) => {
    const { e } = cx;
    const where = `${n.opType} '${n.name}'`;
    if (n.getInt('bits', 4) !== 4) throw new UserInputError(`autodiff: ${where}: only 4-bit weights have a gradient rule`);
    if (n.input(3) || n.input(4)) throw new UserInputError(`autodiff: ${where}: explicit zero points and g_idx have no gradient rule yet`);
    const [K, N, block] = [n.getInt('K'), n.getInt('N'), n.getInt('block_size')];
    const bytes = e.op('Cast', [n.requireInput(1)], { to: attr.int(DataType.FLOAT) });
    const high = e.op('Floor', [e.div(bytes, e.b.scalar(16))]);
    const low = e.sub(bytes, e.mul(high, e.b.scalar(16)));
    const nibbles = e.op('Concat', [e.unsqueeze(low, [-1]), e.unsqueeze(high, [-1])], { axis: -1 }); // [N, blocks, block/2, 2]
    const values = e.reshape(e.sub(nibbles, e.b.scalar(8)), [N, K / block, block]);
    const scales = e.reshape(n.requireInput(2), [N, K / block, 1]);
    const w = e.reshape(e.mul(values, e.op('Cast', [scales], { to: attr.int(DataType.FLOAT) })), [N, K]);
    const g = dy[0]!;
    const dx = cx.dtype(n.requireInput(0)) === DataType.FLOAT ? e.matmul(g, w) : e.op('CastLike', [e.matmul(e.op('Cast', [g], { to: attr.int(DataType.FLOAT) }), w), n.requireInput(0)]);
    return [dx, ...n.inputs.slice(1).map(() => null)];
  },
  { inputs: [0], domain: 'com.microsoft' },
);

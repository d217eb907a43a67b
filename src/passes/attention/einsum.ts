/**
 * Attention written with Einsum (torch.einsum in research code, tf2onnx's Keras
 * MultiHeadAttention): `bhqd,bhkd->bhqk` for the scores and `bhqk,bhkd->bhqd` for P·V,
 * with any letters and axis order. The equations say which axis of each operand is the
 * batch, the query or key sequence and the head size; the operands' labels are permuted
 * into the MatMul order the core expects ([lead…, S, d] for Q and V, [lead…, d, S] for
 * Kᵀ) and the core's output labels into the einsum output's order.
 *
 * An Einsum with a weight operand is a projection (Keras EinsumDense, einsumProjection):
 * its equation says which output axes are rows of the activation and which are features
 * of the weight, which is all the axis labelling (axes.ts projectionLabels) needs.
 */
import { type Node, type Value, describeNode } from '../../ir/index.js';
import type { Labels } from './axes.js';
import { isOp, reject } from './context.js';
import { isWeightLike } from './f3_fused_qkv.js';

interface Equation {
  inputs: [string, string];
  output: string;
}

function parse(n: Node, where: string): Equation {
  const eq = n.getString('equation', '').replace(/\s+/g, '');
  const m = /^([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)$/.exec(eq);
  if (!m) return reject(`${where}: ${describeNode(n)} has equation '${eq}'; an attention einsum has two operands and no ellipsis`);
  return { inputs: [m[1]!, m[2]!], output: m[3]! };
}

const only = (letters: string, ...not: string[]): string[] => [...letters].filter((c) => not.every((s) => !s.includes(c)));

/** How to read the two einsums of a core: permutations of the operands' axes, and of the output. */
export interface EinsumCore {
  q: number[];
  k: number[];
  v: number[];
  /** out[i] = canonical output axis (lead…, seq, d) that einsum output axis i holds. */
  output: number[];
  /** Which operand of the P·V einsum is V. */
  vIndex: 0 | 1;
  /** Which operand of the scores einsum is Q (Keras: einsum('aecd,abcd->acbe', key, query)). */
  qIndex: 0 | 1;
}

export function einsumCore(qk: Node, pv: Node, pIndex: 0 | 1, where: string): EinsumCore {
  const s = parse(qk, where);
  const S = s.output;
  // the softmax runs over S's last axis: the key axis; its operand is K (Keras passes the key first)
  const keyFirst = s.inputs[0].includes(S[S.length - 1]!) && !s.inputs[1].includes(S[S.length - 1]!);
  const [Q, K] = keyFirst ? [s.inputs[1], s.inputs[0]] : s.inputs;
  const d = only(Q, S).filter((c) => K.includes(c));
  const qs = only(Q, K).filter((c) => S.includes(c));
  const ks = only(K, Q).filter((c) => S.includes(c));
  const batch = [...S].filter((c) => Q.includes(c) && K.includes(c));
  if (d.length !== 1 || qs.length !== 1 || ks.length !== 1 || batch.length + 2 !== S.length || Q.length !== S.length || K.length !== S.length) {
    return reject(`${where}: ${describeNode(qk)} ('${Q},${K}->${S}') is not Q·Kᵀ: one contracted head-size axis, one query and one key axis, shared batch axes`);
  }
  const pvEq = parse(pv, where);
  const P = pvEq.inputs[pIndex];
  const V = pvEq.inputs[1 - pIndex]!;
  const O = pvEq.output;
  if (P.length !== S.length) return reject(`${where}: ${describeNode(pv)} reads the probabilities with ${P.length} axes, the scores have ${S.length}`);
  // the probabilities keep the scores' axes: letter i of P is letter i of S
  const toP = (c: string): string => P[S.indexOf(c)]!;
  const kc = toP(ks[0]!);
  const vd = only(V, P).filter((c) => O.includes(c));
  if (vd.length !== 1 || !V.includes(kc) || O.includes(kc) || V.length !== P.length) {
    return reject(`${where}: ${describeNode(pv)} ('${pvEq.inputs.join(',')}->${O}') is not P·V over the key axis`);
  }
  const perm = (letters: string, order: string[], what: string): number[] => {
    const p = order.map((c) => letters.indexOf(c));
    if (p.some((i) => i < 0) || new Set(p).size !== letters.length) return reject(`${where}: the ${what} einsum operand '${letters}' does not hold the axes '${order.join('')}'`);
    return p;
  };
  const pBatch = batch.map(toP);
  // canonical output: [lead… (S's batch order), query sequence, head size]
  const canonical = [...pBatch, toP(qs[0]!), vd[0]!];
  return {
    q: perm(Q, [...batch, qs[0]!, d[0]!], 'Q'),
    k: perm(K, [...batch, d[0]!, ks[0]!], 'K'),
    v: perm(V, [...pBatch, kc, vd[0]!], 'V'),
    output: [...O].map((c) => {
      const i = canonical.indexOf(c);
      return i < 0 ? reject(`${where}: the P·V einsum output '${O}' has an axis '${c}' that is not batch, query or head size`) : i;
    }),
    vIndex: (1 - pIndex) as 0 | 1,
    qIndex: keyFirst ? 1 : 0,
  };
}

/** Labels with their axes taken in `perm` order. */
export function permuteLabels(l: Labels, perm: readonly number[]): Labels {
  return { axes: perm.map((i) => l.axes[i]!), base: l.base };
}

// ---- projections ------------------------------------------------------------------------------

/**
 * An Einsum projection (Keras EinsumDense): one operand an activation x, the other a weight
 * W. Every letter of W is either contracted with x (absent from the output) or a feature
 * (absent from x); every other letter of x is a row of the output. `abc,cde->abde`
 * (x [B, T, E], W [E, H, d] → [B, T, H, d]) projects into heads; `abcd,cde->abe` (the
 * attention output [B, T, H, d], W [H, d, E]) is the output projection. The output's
 * features are numbered in output-axis order (axis k of the features has stride = the
 * product of the later feature axes), as a Reshape of them to one axis would number them.
 */
export interface EinsumProjection {
  node: Node;
  x: Value;
  w: Value;
  /** Letters of x, of W and of the output. */
  letters: { x: string; w: string; out: string };
  /** Output axes that hold features (letters of W), in output order; the other axes are rows (letters of x). */
  featureAxes: number[];
  /** Axes of x contracted with W, in x order. */
  contracted: number[];
}

/** The Einsum projection computed by `n`, or null when `n` is not one (two activations, traces, batch letters shared by all three). */
export function einsumProjection(n: Node | null | undefined): EinsumProjection | null {
  if (!n || !isOp(n, 'Einsum') || n.inputs.length !== 2) return null;
  const eq = n.getString('equation', '').replace(/\s+/g, '');
  const m = /^([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)$/.exec(eq);
  if (!m) return null;
  const [a, b] = n.inputs;
  if (!a || !b) return null;
  const wIndex = isWeightLike(b) ? 1 : isWeightLike(a) ? 0 : -1;
  if (wIndex < 0) return null;
  const [X, W, O] = wIndex === 1 ? [m[1]!, m[2]!, m[3]!] : [m[2]!, m[1]!, m[3]!];
  const unique = (s: string): boolean => new Set(s).size === s.length;
  if (!unique(X) || !unique(W) || !unique(O)) return null;
  // W: contracted (in x, not out) or features (in out, not x); x: contracted or rows (in out, not W)
  if ([...W].some((c) => X.includes(c) === O.includes(c))) return null;
  if ([...X].some((c) => !W.includes(c) && !O.includes(c))) return null;
  if ([...O].some((c) => !X.includes(c) && !W.includes(c))) return null;
  const contracted = [...X].map((c, i) => (W.includes(c) ? i : -1)).filter((i) => i >= 0);
  const featureAxes = [...O].map((c, i) => (W.includes(c) ? i : -1)).filter((i) => i >= 0);
  if (!contracted.length || !featureAxes.length) return null;
  return { node: n, x: wIndex === 1 ? a : b, w: wIndex === 1 ? b : a, letters: { x: X, w: W, out: O }, featureAxes, contracted };
}

/** The Einsum projection producing `v`. */
export function einsumProjectionAt(v: Value | null | undefined): EinsumProjection | null {
  return einsumProjection(v?.producer);
}

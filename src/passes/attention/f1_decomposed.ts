/**
 * F1 (decomposed decoder exports), F3 (fused q/k/v projection, see f3_fused_qkv.ts) and
 * F4 (bidirectional encoders): attention written with standard ops.
 *
 *   q/k/v MatMul [+ bias] → layout ops, rotary, norms, scales, [Concat past] (trace.ts)
 *   → MatMul(Q, Kᵀ) [→ Reshape] → scale → mask → [Cast] → Softmax → [Cast] [Where(IsNaN)]
 *   [Dropout] [Expand/Reshape] → MatMul(P, V) → layout ops → output projection
 *
 * The local shape around the Softmax is a declarative pattern (SOFTMAX_CORE); the
 * longer paths (Q, K, V back to their projections, the output forward to the output
 * projection) are walks with a stated reason for every way they can fail.
 */
import { type Node, type Value, describeNode } from '../../ir/index.js';
import type { ShapeAnalysis } from '../analysis/shapes.js';
import { SymDim } from '../analysis/dim.js';
import { matchPattern } from '../pattern/matcher.js';
import { type PatternValue, pattern } from '../pattern/pattern.js';
import { evalScalar } from '../util/constants.js';
import { type Labels, applyLayout, isRow, pieces } from './axes.js';
import {
  type DiscoveryContext,
  describeValue,
  exportedAs,
  isOp,
  nodeName,
  rankOf,
  reject,
  stage,
} from './context.js';
import { outputProjection } from './f3_fused_qkv.js';
import { einsumCore, permuteLabels } from './einsum.js';
import { maskInfo } from './mask.js';
import type { AttentionSite, AxisPiece, RotaryInfo } from './site.js';
import { type SiteDraft, buildSite } from './build_site.js';
import { type CoreHeads, type HeadPath, checkInputSources, coreHeads, operandProjection, readInputs, traceOutput, tracePath } from './trace.js';
import { type RotaryDraft, isComputedScale, rotarySource } from './units.js';

/** Softmax over the last axis (opset < 13 defaults to axis 1, which is the last axis only for 2-D inputs). */
function lastAxisOnly(axis: unknown, node: Node): boolean | string {
  const opset = node.graph?.root.model?.opsetVersion('') ?? 17;
  const a = typeof axis === 'number' ? axis : opset >= 13 ? -1 : 1;
  const rank = rankOf(node.inputs[0]) ?? 4;
  if (a === -1 || a === rank - 1) return true;
  return `it normalizes over axis ${a}${axis === undefined ? ' (the default)' : ''}, not the last (key) axis of its rank-${rank} input`;
}

/**
 * The scores feeding a Softmax: MatMul(Q, Kᵀ) → [Where mask (GPT-J)] → [Div | Mul scale] → [Cast] → mask
 * (Add in either operand order, Where, or both in either order, with optional Casts)
 * → [Reshape → Add(window mask) → Reshape] → [Max(·, finfo.min) clamp] → [Cast] → Softmax
 * over the last axis.
 */
export const SOFTMAX_CORE = pattern((op) => {
  // dynamo writes batched matmuls as aten.bmm on [B·H, T, d] views: the scores are viewed back to 4-D
  const qk = op.or(
    op.Reshape(op.MatMul(op.var('q'), op.var('kT'), { as: 'qk' }), op.any(), { as: 'qk_view' }),
    op.MatMul(op.var('q'), op.var('kT'), { as: 'qk' }),
    // torch.einsum / Keras: Einsum(q, k) (einsum.ts reads the equation)
    op.Einsum(op.var('q'), op.var('kT'), { as: 'qk' }),
  );
  const where = (x: PatternValue) =>
    op.or(
      op.Where(op.var('cond'), x, op.var('fill'), { as: 'where' }),
      op.Where(op.var('cond'), op.var('fill'), x, { as: 'where' }),
    );
  // GPT-J masks before it scales: Where(causal, scores, min) / scale + padding
  const pre = op.or(where(qk), qk);
  const scaled = op.or(op.Div(pre, op.var('scale'), { as: 'scale_op' }), op.Mul(pre, op.var('scale'), { commute: true, as: 'scale_op' }), pre);
  const c0 = op.optional(op.Cast(scaled, { as: 'cast_in' }));
  const add = (x: PatternValue) => op.Add(x, op.var('mask'), { commute: true, as: 'mask_add' });
  const masked = op.or(
    add(op.optional(op.Cast(where(c0)))),
    where(op.optional(op.Cast(add(c0)))),
    add(c0),
    where(c0),
    c0,
  );
  // window attention (Swin's shifted windows): Reshape to [B, nW, H, N, N], Add the window mask, Reshape back
  const windowed = op.or(
    op.Reshape(op.Add(op.Reshape(masked, op.any()), op.var('window_mask'), { commute: true, as: 'window_add' }), op.any(), { as: 'window_back' }),
    masked,
  );
  // older HF exports clamp: Max(scores, finfo.min)
  const clamped = op.optional(op.Max(windowed, op.const(), { commute: true, as: 'clamp' }));
  return op.Softmax(op.optional(op.Cast(clamped, { as: 'cast_pre' })), { attrs: { axis: lastAxisOnly }, as: 'softmax' });
});

/** Ops allowed between the Softmax and MatMul(P, V). */
function findPV(sm: Node, where: string): { pv: Node; nodes: Node[]; pIndex: 0 | 1 } {
  let p = sm.output;
  const nodes: Node[] = [];
  for (let step = 0; step < 6; step++) {
    const users = p.consumers();
    const mm = users.find((c) => isOp(c, 'MatMul') && c.inputs[0] === p);
    if (mm) return { pv: mm, nodes, pIndex: 0 };
    const es = users.find((c) => isOp(c, 'Einsum') && c.inputs.length === 2 && c.inputs.includes(p));
    if (es) return { pv: es, nodes, pIndex: es.inputs[0] === p ? 0 : 1 };
    const right = users.find((c) => isOp(c, 'MatMul') && c.inputs[1] === p);
    if (right) return reject(`${where}: ${describeNode(right)} uses the probabilities as its right operand; expected MatMul(P, V)`);
    const next = users.find(
      (c) =>
        (isOp(c, 'Cast', 'Identity', 'Dropout', 'Expand', 'Reshape') && c.inputs[0] === p) ||
        (isOp(c, 'Where') && c.inputs[2] === p && isOp(c.inputs[0]?.producer, 'IsNaN') && c.inputs[0]!.producer!.inputs[0] === p),
    );
    if (!next) {
      const list = users.map((c) => describeNode(c)).join(', ') || 'nothing';
      return reject(`${where}: its output does not reach a MatMul(P, V) (through Cast, Where(IsNaN), Dropout, Expand, Reshape); '${p.name}' is read by ${list}`);
    }
    nodes.push(next);
    p = next.outputs[0]!;
  }
  return reject(`${where}: no MatMul(P, V) within 6 steps after the Softmax`);
}


/** The site fields that come from the traced heads. */
export function headFields(q: HeadPath, k: HeadPath, v: HeadPath, heads: CoreHeads, outputLayout: AxisPiece[][]) {
  return {
    q: operandProjection(q, heads.columns.q),
    k: operandProjection(k, heads.columns.k),
    v: operandProjection(v, heads.columns.v),
    layout: { ...heads.layout, output: outputLayout },
  };
}

export function rotaryInfo(q: RotaryDraft | null, k: RotaryDraft | null): { info: RotaryInfo; cos: Value | null; sin: Value | null } | null {
  const r = q ?? k;
  if (!r) return null;
  const cos = rotarySource(r.cos);
  const sin = rotarySource(r.sin);
  return {
    info: {
      kind: r.kind,
      cos: r.cos.name,
      sin: r.sin.name,
      cosSource: cos.name,
      sinSource: sin.name,
      dims: r.dims,
      interleaved: r.interleaved,
      nodes: [...(q?.nodes ?? []), ...(k?.nodes ?? [])].map(nodeName),
      shared: 1,
    },
    cos,
    sin,
  };
}

/**
 * Whether the Reshape → Add → Reshape around the scores is a window mask. It is when the
 * view splits a batch row of the projections (Swin: [B·nW, H, N, N] viewed as [B, nW, H,
 * N, N], the mask differs per window). When the view only unfolds the heads from the batch
 * ([B·H, T, S] → [B, H, T, S]: bmm attention as Hugging Face BART, Marian or Whisper export
 * it), the added tensor is an ordinary mask on the scores. Unknown shapes keep the window
 * reading.
 */
function viewSplitsRows(q: HeadPath, view: Node, shapes: ShapeAnalysis): boolean {
  const input = view.inputs[0];
  const keys = input ? shapes.dim(input, -1) : undefined;
  if (!input || !keys) return true;
  // the scores [lead…, T, S]: Q's leading axes and sequence, then the keys' sequence
  const scores: Labels = { axes: [...q.labels.axes.slice(0, -1), [{ src: 'row:keys', size: keys, stride: SymDim.of(1) }]], base: q.labels.base };
  const r = applyLayout(scores, { node: view, input, output: view.outputs[0]!, shapes }, false);
  if (typeof r === 'string') return true;
  const rows = new Map<string, number>();
  for (const a of r.axes.flatMap(pieces)) if (isRow(a)) rows.set(a.src, (rows.get(a.src) ?? 0) + 1);
  return [...rows.values()].some((n) => n > 1);
}

/**
 * The KV-cache outputs of a path without a past input (a decoder's first call, Optimum's
 * decoder_model, exports K and V for the next call): the graph output on the path nearest
 * to the core. Null unless both K and V have one.
 */
function exportedKv(k: HeadPath, v: HeadPath): { key: Value | null; value: Value | null } {
  if (k.past || v.past || k.present || v.present) return { key: k.present, value: v.present };
  const nearest = (p: HeadPath): Value | null => {
    for (const n of [...p.chain].reverse()) {
      for (const o of n.outputs) {
        const e = o && exportedAs(o);
        if (e) return e;
      }
    }
    return null;
  };
  const key = nearest(k);
  const value = nearest(v);
  return key && value ? { key, value } : { key: null, value: null };
}

export function qkNorm(q: HeadPath, k: HeadPath): AttentionSite['qkNorm'] {
  if (!q.norm && !k.norm) return null;
  return { q: (q.norm ?? []).map(nodeName), k: (k.norm ?? []).map(nodeName) };
}


/** Analyses one Softmax as a decomposed attention (F1 / F3 / F4). Throws Rejection with the reason. */
export function analyzeSoftmax(ctx: DiscoveryContext, sm: Node): SiteDraft {
  const where = `Softmax '${nodeName(sm)}'`;
  // match without tracing first (the common case); trace only to explain a failure
  let { match, failure } = matchPattern(SOFTMAX_CORE, sm, { trace: false });
  if (!match) ({ match, failure } = matchPattern(SOFTMAX_CORE, sm, { trace: true }));
  if (!match) {
    const why = failure?.reason ?? 'no match';
    if (failure && failure.nodesMatched === 0) return reject(`${where} is not attention: ${why}`);
    return reject(`${where} is not attention: its input is not Q·Kᵀ scores (MatMul → [scale] → [mask] → [Cast] → Softmax): ${why}`);
  }
  const qk = match.node('qk');
  const { pv, pIndex } = findPV(sm, where);
  if ((qk.opType === 'Einsum') !== (pv.opType === 'Einsum')) return reject(`${where}: the scores come from ${describeNode(qk)} but P·V from ${describeNode(pv)}`);
  const ein = qk.opType === 'Einsum' ? einsumCore(qk, pv, pIndex, where) : null;
  const vIn = pv.inputs[ein ? ein.vIndex : 1];
  if (!vIn) return reject(`${where}: ${describeNode(pv)} has no V operand`);

  const shapes = ctx.shapes;
  const [qIn, kIn] = ein?.qIndex === 1 ? [match.value('kT'), match.value('q')] : [match.value('q'), match.value('kT')];
  // K and V may be graph inputs without a projection (a cross-attention over cached keys and values)
  const [qTraced, kTraced, vTraced] = stage('projections', () => {
    const paths = [tracePath(qIn, 'Q', shapes, where), tracePath(kIn, 'K', shapes, where, { inputs: true }), tracePath(vIn, 'V', shapes, where, { inputs: true })] as const;
    checkInputSources(...paths);
    return paths;
  });
  // read the einsum operands in MatMul order: Q [lead…, S, d], Kᵀ [lead…, d, S], V [lead…, S, d]
  const operand = (p: HeadPath, perm: readonly number[] | undefined): HeadPath => (perm ? { ...p, labels: permuteLabels(p.labels, perm) } : p);
  const qPath = operand(qTraced, ein?.q);
  const { k: kPath, v: vPath, heads: core } = stage('heads', () =>
    readInputs(kTraced, vTraced, (k, v) => coreHeads(qPath, operand(k, ein?.k), operand(v, ein?.v), shapes, where, { kTransposed: true })),
  );
  const heads = ein ? { ...core, outputLabels: permuteLabels(core.outputLabels, ein.output) } : core;
  const { hq, hkv, d } = heads;
  const { output, layout: outputLayout } = stage('output', () => traceOutput(pv.output, heads, shapes, where));
  const oproj = stage('output', () => outputProjection(output, where));
  const fields = headFields(qPath, kPath, vPath, heads, outputLayout);

  // scale: the Div/Mul after Q·Kᵀ, and/or √scale factors on Q and K
  let scale = 1;
  let scaleSource: AttentionSite['scaleSource'] = 'none';
  const scaleOp = match.maybeNode('scale_op');
  if (scaleOp) {
    const sv = match.value('scale');
    const constant = evalScalar(sv);
    const c = constant ?? evalScalar(sv, (x) => shapes.scalar(x));
    if (c !== undefined) {
      scale = scaleOp.opType === 'Div' ? 1 / c : c;
      scaleSource = constant !== undefined ? 'constant' : 'computed';
    } else if (isComputedScale(sv)) {
      scale = 1 / Math.sqrt(d);
      scaleSource = 'computed';
    } else {
      return reject(`${where}: the scale ${describeValue(sv)} of ${describeNode(scaleOp)} is neither a constant nor computed from shapes (√d)`);
    }
  }
  for (const s of [qPath.scale, kPath.scale]) {
    if (!s) continue;
    if (s.factor !== null) scale *= s.factor;
    else scale *= d ** -0.25;
    if (scaleSource === 'none') scaleSource = s.computed ? 'computed' : 'split';
  }

  let window = match.maybeValue('window_mask') ?? null;
  let viewed: Value | null = null;
  if (window) {
    const view = match.node('window_add').inputs.find((x) => x !== window)?.producer;
    if (view && !viewSplitsRows(qPath, view, shapes)) [viewed, window] = [window, null];
  }
  const mask = stage('add-ons', () => maskInfo(ctx, { additive: match.maybeValue('mask') ?? null, where: match.maybeValue('cond') ?? null, window, viewed }, null));
  const present = exportedKv(kPath, vPath);
  const packed = fields.q.info.columns !== null;
  return buildSite({
    form: packed ? 'F3' : mask.info.causal ? 'F1' : 'F4',
    anchor: qk,
    nodes: { qk, softmax: sm, pv, fused: null },
    q: fields.q,
    k: fields.k,
    v: fields.v,
    layout: fields.layout,
    heads: { hq, hkv, d },
    scale: { value: scale, source: scaleSource },
    mask,
    rotary: rotaryInfo(qPath.rotary, kPath.rotary),
    past: { key: kPath.past, value: vPath.past },
    present,
    kvSource: { key: kPath.source?.value ?? null, value: vPath.source?.value ?? null },
    output,
    outputProjection: oproj,
    qkNorm: qkNorm(qPath, kPath),
    where,
  });
}

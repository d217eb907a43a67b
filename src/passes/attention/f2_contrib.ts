/**
 * F2: fused com.microsoft attention ops (onnxruntime-genai and the onnxruntime
 * transformer optimizer): GroupQueryAttention, MultiHeadAttention, Attention. Heads come
 * from the attributes; q/k/v from the projections feeding the op (or, for a packed
 * GroupQueryAttention query and for com.microsoft.Attention, from the column ranges of
 * one fused weight).
 */
import { type Node, type Value, describeNode } from '../../ir/index.js';
import { constantTensor } from '../util/constants.js';
import { type DiscoveryContext, describeValue, exportedAs, floatAttr, graphInputBehind, intAttr, intsAttr, nodeName, reject, stage } from './context.js';
import type { ShapeAnalysis } from '../analysis/shapes.js';
import { type SiteDraft, buildSite } from './build_site.js';
import { fusedOperand } from './trace.js';
import { type ProjectionDraft, inOpProjection, inputSource, isWeightLike, outputProjection, packedPart, plainProjection } from './f3_fused_qkv.js';
import { rotarySource } from './units.js';
import { maskInfo } from './mask.js';
import { type AttentionSite, CANONICAL_LAYOUT, type RotaryInfo, type SiteLayout } from './site.js';

export const CONTRIB_OPS = ['GroupQueryAttention', 'MultiHeadAttention', 'Attention'];

const KNOWN_ATTRS: Record<string, readonly string[]> = {
  GroupQueryAttention: ['num_heads', 'kv_num_heads', 'scale', 'softcap', 'local_window_size', 'do_rotary', 'rotary_interleaved', 'smooth_softmax', 'qk_output'],
  MultiHeadAttention: ['num_heads', 'mask_filter_value', 'scale', 'unidirectional'],
  Attention: [
    'num_heads',
    'qkv_hidden_sizes',
    'unidirectional',
    'scale',
    'mask_filter_value',
    'do_rotary',
    'past_present_share_buffer',
    'rotary_embedding_dim',
  ],
};

function checkAttrs(n: Node, where: string): void {
  const known = KNOWN_ATTRS[n.opType] ?? [];
  for (const name of n.attributes.keys()) {
    if (!known.includes(name)) return reject(`${where}: unsupported attribute '${name}' (known: ${known.join(', ')})`);
  }
}

function requiredHeads(n: Node, name: string, where: string): number {
  const h = intAttr(n, name, 0);
  if (!(h > 0)) return reject(`${where}: attribute '${name}' is missing or not positive; the number of heads cannot be known`);
  return h;
}

function scaleOf(n: Node, d: number): { scale: number; scaleSource: AttentionSite['scaleSource'] } {
  const s = floatAttr(n, 'scale');
  if (s !== undefined && s !== 0) return { scale: s, scaleSource: 'attribute' };
  return { scale: 1 / Math.sqrt(d), scaleSource: 'default' };
}

function fusedRotary(n: Node, cos: Value | null | undefined, sin: Value | null | undefined, interleaved: boolean): { info: RotaryInfo; cos: Value | null; sin: Value | null } {
  const cs = cos ? rotarySource(cos) : null;
  const ss = sin ? rotarySource(sin) : null;
  return {
    info: {
      kind: 'fused',
      cos: cos?.name ?? null,
      sin: sin?.name ?? null,
      cosSource: cs?.name ?? null,
      sinSource: ss?.name ?? null,
      interleaved,
      dims: n.attribute('rotary_embedding_dim') && n.getInt('rotary_embedding_dim') > 0 ? n.getInt('rotary_embedding_dim') : null,
      nodes: [nodeName(n)],
      shared: 1,
    },
    cos: cs,
    sin: ss,
  };
}

interface Parts {
  /** Layouts of the q/k/v inputs' projections (default [B, T, ·]). */
  layout?: SiteLayout;
  q: ProjectionDraft;
  k: ProjectionDraft;
  v: ProjectionDraft;
  hq: number;
  hkv: number;
  d: number;
  pastKey: Value | null;
  pastValue: Value | null;
  presentKey: Value | null;
  presentValue: Value | null;
  mask: ReturnType<typeof maskInfo>;
  rotary: ReturnType<typeof fusedRotary> | null;
  window: number | null;
  /** Keys and values read straight from graph inputs (cached cross-attention K/V). */
  kvSource?: { key: Value; value: Value };
}

function finish(n: Node, where: string, parts: Parts): SiteDraft {
  const out = n.outputs[0];
  if (!out) return reject(`${where} has no output`);
  const oproj = stage('output', () => outputProjection(out, where));
  const { scale, scaleSource } = scaleOf(n, parts.d);
  return buildSite({
    form: 'F2',
    anchor: n,
    nodes: { qk: null, softmax: null, pv: null, fused: n },
    q: parts.q,
    k: parts.k,
    v: parts.v,
    heads: { hq: parts.hq, hkv: parts.hkv, d: parts.d },
    scale: { value: scale, source: scaleSource },
    mask: parts.mask,
    rotary: parts.rotary,
    past: { key: parts.pastKey, value: parts.pastValue },
    present: { key: parts.presentKey, value: parts.presentValue },
    output: out,
    outputProjection: oproj,
    window: parts.window,
    layout: parts.layout,
    ...(parts.kvSource ? { kvSource: parts.kvSource } : {}),
    where,
  });
}

function separateQkv(n: Node, shapes: ShapeAnalysis, where: string, hq: number, hkv: number): { q: ProjectionDraft; k: ProjectionDraft; v: ProjectionDraft; d: number; layout: SiteLayout } {
  const [query, key, value] = n.inputs;
  if (!query || !key || !value) return reject(`${where}: query, key and value must all be given (or key and value both omitted for packed QKV)`);
  const [fq, fk, fv] = stage('projections', () => [fusedOperand(query, 'Q', shapes, where), fusedOperand(key, 'K', shapes, where), fusedOperand(value, 'V', shapes, where)]);
  const [q, k, v] = [fq.projection, fk.projection, fv.projection];
  const layout: SiteLayout = { q: fq.layout, k: fk.layout, v: fv.layout, output: CANONICAL_LAYOUT.output };
  if (q.width === null) return reject(`${where}: the width of the query projection ${q.info.node} is unknown, so the head size is`);
  if (q.width % hq !== 0) return reject(`${where}: query width ${q.width} is not a multiple of num_heads ${hq}`);
  const d = q.width / hq;
  for (const [p, what] of [
    [k, 'key'],
    [v, 'value'],
  ] as const) {
    if (p.width !== null && p.width !== hkv * d) {
      return reject(`${where}: ${what} projection ${p.info.node} has width ${p.width}, expected ${hkv} kv heads × ${d} = ${hkv * d}`);
    }
  }
  return { q, k, v, d, layout };
}

function analyzeGqa(ctx: DiscoveryContext, n: Node, where: string): SiteDraft {
  const hq = requiredHeads(n, 'num_heads', where);
  const hkv = requiredHeads(n, 'kv_num_heads', where);
  if (hq % hkv !== 0) return reject(`${where}: num_heads ${hq} is not a multiple of kv_num_heads ${hkv}`);
  const softcap = floatAttr(n, 'softcap') ?? 0;
  if (softcap !== 0) return reject(`${where}: softcap=${softcap} is not supported (the linear-attention branch has no logit soft-capping)`);
  if (intAttr(n, 'smooth_softmax', 0) !== 0) return reject(`${where}: smooth_softmax=1 is not supported`);
  const [query, key, value] = n.inputs;
  let q: ProjectionDraft;
  let k: ProjectionDraft;
  let v: ProjectionDraft;
  let d: number;
  let layout: SiteLayout | undefined;
  if (query && !key && !value) {
    const fused = plainProjection(query);
    if (!fused) return reject(`${where}: the packed QKV query ${describeValue(query)} is not a projection (MatMul/Gemm with a weight)`);
    if (fused.width === null) return reject(`${where}: the width of the packed QKV projection ${fused.info.node} is unknown`);
    const heads = hq + 2 * hkv;
    if (fused.width % heads !== 0) return reject(`${where}: packed QKV width ${fused.width} is not a multiple of num_heads + 2·kv_num_heads = ${heads}`);
    d = fused.width / heads;
    q = packedPart(fused, n, [0, hq * d]);
    k = packedPart(fused, n, [hq * d, (hq + hkv) * d]);
    v = packedPart(fused, n, [(hq + hkv) * d, fused.width]);
  } else {
    ({ q, k, v, d, layout } = separateQkv(n, ctx.shapes, where, hq, hkv));
  }
  const window = intAttr(n, 'local_window_size', -1);
  const doRotary = intAttr(n, 'do_rotary', 0) === 1;
  return finish(n, where, {
    layout,
    q,
    k,
    v,
    hq,
    hkv,
    d,
    pastKey: graphInputBehind(n.inputs[3]),
    pastValue: graphInputBehind(n.inputs[4]),
    presentKey: n.outputs[1] && n.outputs[1].name ? exportedAs(n.outputs[1]) : null,
    presentValue: n.outputs[2] && n.outputs[2].name ? exportedAs(n.outputs[2]) : null,
    mask: maskInfo(ctx, { seqlens: n.inputs[5] ?? null }, `${n.opType} is causal by definition`),
    rotary: doRotary ? fusedRotary(n, n.inputs[7], n.inputs[8], intAttr(n, 'rotary_interleaved', 0) === 1) : null,
    window: window > 0 ? window : null,
  });
}

function analyzeMha(ctx: DiscoveryContext, n: Node, where: string): SiteDraft {
  const hq = requiredHeads(n, 'num_heads', where);
  const [query, key, value] = n.inputs;
  if (query && !key) return reject(`${where}: packed QKV (query [B, S, N, 3, H], no key/value) interleaves q, k and v per head; not supported`);
  if (query && key && !value) return reject(`${where}: packed KV (key [B, S, N, 2, H], no value) interleaves k and v per head; not supported`);
  if (key && value && ctx.shapes.rank(key) === 4 && ctx.shapes.rank(value) === 4) return mhaOverCachedKv(ctx, n, where, hq, query!, key, value);
  const { q, k, v, d, layout } = separateQkv(n, ctx.shapes, where, hq, hq);
  const bias = n.inputs[3];
  if (bias) {
    // the op adds one packed [3·H·d] bias (q | k | v) itself
    for (const p of [q, k, v]) {
      if (!p.info.bias) {
        p.info.bias = bias.name;
        p.info.biasNode = nodeName(n);
      }
    }
  }
  const causal = intAttr(n, 'unidirectional', 0) === 1;
  return finish(n, where, {
    layout,
    q,
    k,
    v,
    hq,
    hkv: hq,
    d,
    pastKey: graphInputBehind(n.inputs[6]),
    pastValue: graphInputBehind(n.inputs[7]),
    presentKey: n.outputs[1] && n.outputs[1].name ? exportedAs(n.outputs[1]) : null,
    presentValue: n.outputs[2] && n.outputs[2].name ? exportedAs(n.outputs[2]) : null,
    mask: maskInfo(ctx, { input: n.inputs[4] ?? null, additive: n.inputs[5] ?? null }, causal ? 'attribute unidirectional=1' : null),
    rotary: null,
    window: null,
  });
}

/** The layout of a BNSH tensor [B, N, L, H] as the memory branch reads it: heads and head size are features. */
const BNSH: SiteLayout['k'] = [['batch'], ['features'], ['seq'], ['features']];

/**
 * MultiHeadAttention whose key and value are 4-D [B, N, L, H]: the cross-attention caches an
 * encoder-decoder's decoder "with past" reads (the op takes them as they are, no bias, no
 * projection in the graph). They must be graph inputs; the site reads them as its keys and
 * values (`kvSource`), its queries from the projection feeding the op.
 */
function mhaOverCachedKv(ctx: DiscoveryContext, n: Node, where: string, hq: number, query: Value, key: Value, value: Value): SiteDraft {
  for (const [x, what] of [[key, 'key'], [value, 'value']] as const) {
    if (!x.isGraphInput() || x.initializer) return reject(`${where}: the 4-D ${what} ${describeValue(x)} is not a graph input (only cached cross-attention keys and values are read as [B, N, L, H])`);
  }
  const fq = stage('projections', () => fusedOperand(query, 'Q', ctx.shapes, where));
  const q = fq.projection;
  if (q.width === null || q.width % hq !== 0) return reject(`${where}: the query width ${q.width ?? 'unknown'} is not a multiple of num_heads ${hq}`);
  const d = q.width / hq;
  for (const [x, what] of [[key, 'key'], [value, 'value']] as const) {
    const dims = ctx.shapes.shape(x);
    if (dims?.[1]?.value !== hq || dims[3]?.value !== d) return reject(`${where}: the ${what} cache ${describeValue(x)} is ${ctx.shapes.describe(x)}, expected [B, ${hq}, L, ${d}]`);
  }
  if (n.inputs[6] || n.inputs[7]) return reject(`${where}: a past key / value beside 4-D cached keys and values is not supported`);
  const causal = intAttr(n, 'unidirectional', 0) === 1;
  return finish(n, where, {
    layout: { q: fq.layout, k: BNSH, v: BNSH, output: CANONICAL_LAYOUT.output },
    q,
    k: inputSource(key, hq * d),
    v: inputSource(value, hq * d),
    hq,
    hkv: hq,
    d,
    pastKey: null,
    pastValue: null,
    presentKey: null,
    presentValue: null,
    mask: maskInfo(ctx, { input: n.inputs[4] ?? null, additive: n.inputs[5] ?? null }, causal ? 'attribute unidirectional=1' : null),
    rotary: null,
    window: null,
    kvSource: { key, value },
  });
}

function analyzeMsAttention(ctx: DiscoveryContext, n: Node, where: string): SiteDraft {
  const hq = requiredHeads(n, 'num_heads', where);
  const [input, weights, bias] = n.inputs;
  if (!input || !weights) return reject(`${where}: input and weights are required`);
  if (!isWeightLike(weights)) return reject(`${where}: weights ${describeValue(weights)} is not a constant weight`);
  const wShape = plainShape(weights);
  let sizes = intsAttr(n, 'qkv_hidden_sizes');
  if (!sizes) {
    const total = wShape?.[1];
    if (!total || total % 3 !== 0) return reject(`${where}: the fused weight shape is unknown (and there is no qkv_hidden_sizes attribute)`);
    sizes = [total / 3, total / 3, total / 3];
  }
  if (sizes.length !== 3) return reject(`${where}: qkv_hidden_sizes has ${sizes.length} entries, expected 3`);
  if (sizes[0] !== sizes[1] || sizes[1] !== sizes[2]) return reject(`${where}: qkv_hidden_sizes [${sizes.join(', ')}] differ; LiZA needs equal q, k and v sizes`);
  if (sizes[0]! % hq !== 0) return reject(`${where}: hidden size ${sizes[0]} is not a multiple of num_heads ${hq}`);
  const d = sizes[0]! / hq;
  const [a, b] = [sizes[0]!, sizes[0]! + sizes[1]!];
  const q = inOpProjection(n, input, weights, bias ?? null, [0, a]);
  const k = inOpProjection(n, input, weights, bias ?? null, [a, b]);
  const v = inOpProjection(n, input, weights, bias ?? null, [b, b + sizes[2]!]);
  const past = graphInputBehind(n.inputs[4]);
  const present = n.outputs[1] && n.outputs[1].name ? exportedAs(n.outputs[1]) : null;
  const causal = intAttr(n, 'unidirectional', 0) === 1;
  return finish(n, where, {
    q,
    k,
    v,
    hq,
    hkv: hq,
    d,
    // the cache is one packed [2, B, N, P, H] tensor: key and value share the name
    pastKey: past,
    pastValue: past,
    presentKey: present,
    presentValue: present,
    mask: maskInfo(ctx, { input: n.inputs[3] ?? null, additive: n.inputs[5] ?? null }, causal ? 'attribute unidirectional=1' : null),
    rotary: intAttr(n, 'do_rotary', 0) === 1 ? fusedRotary(n, null, null, false) : null,
    window: null,
  });
}

function plainShape(w: Value): number[] | undefined {
  return constantTensor(w)?.dims;
}

/** Analyses a com.microsoft attention node (F2). Throws Rejection with the reason. */
export function analyzeContrib(ctx: DiscoveryContext, n: Node): SiteDraft {
  const where = `${n.opType} '${nodeName(n)}'`;
  checkAttrs(n, where);
  switch (n.opType) {
    case 'GroupQueryAttention':
      return analyzeGqa(ctx, n, where);
    case 'MultiHeadAttention':
      return analyzeMha(ctx, n, where);
    case 'Attention':
      return analyzeMsAttention(ctx, n, where);
    default:
      return reject(`${describeNode(n)} is not a supported fused attention op`);
  }
}

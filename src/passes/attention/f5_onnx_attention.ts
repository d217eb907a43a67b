/**
 * F5: the ONNX Attention op (opset 23+), with 3-D inputs ([B, S, H·d], heads from the
 * q_num_heads / kv_num_heads attributes, usually after RotaryEmbedding) or 4-D inputs
 * ([B, H, S, d], heads from the Reshapes before them).
 */
import { type Node, type Value } from '../../ir/index.js';
import { type DiscoveryContext, describeValue, exportedAs, floatAttr, graphInputBehind, intAttr, nodeName, reject, stage } from './context.js';
import { type SiteDraft, buildSite } from './build_site.js';
import { headFields, qkNorm, rotaryInfo } from './f1_decomposed.js';
import { type ProjectionDraft, outputProjection } from './f3_fused_qkv.js';
import { coreHeads, fusedOperand, traceOutput, tracePath } from './trace.js';
import { maskInfo } from './mask.js';
import { type AttentionSite, CANONICAL_LAYOUT, type SiteLayout } from './site.js';

const KNOWN = ['is_causal', 'kv_num_heads', 'q_num_heads', 'qk_matmul_output_mode', 'scale', 'softcap', 'softmax_precision'];

/** Analyses an ONNX Attention node (F5). Throws Rejection with the reason. */
export function analyzeOnnxAttention(ctx: DiscoveryContext, n: Node): SiteDraft {
  const where = `Attention '${nodeName(n)}'`;
  for (const name of n.attributes.keys()) {
    if (!KNOWN.includes(name)) return reject(`${where}: unsupported attribute '${name}' (known: ${KNOWN.join(', ')})`);
  }
  const softcap = floatAttr(n, 'softcap') ?? 0;
  if (softcap !== 0) return reject(`${where}: softcap=${softcap} is not supported (the linear-attention branch has no logit soft-capping)`);
  const [Q, K, V] = n.inputs;
  if (!Q || !K || !V) return reject(`${where}: Q, K and V are required`);
  const qHeadsAttr = n.attributes.has('q_num_heads') ? intAttr(n, 'q_num_heads', 0) : null;
  const kvHeadsAttr = n.attributes.has('kv_num_heads') ? intAttr(n, 'kv_num_heads', 0) : null;
  const rank = ctx.shapes.rank(Q) ?? (qHeadsAttr !== null ? 3 : undefined);
  if (rank === undefined) return reject(`${where}: cannot tell whether Q ${describeValue(Q)} is 3-D or 4-D`);

  let q: ProjectionDraft;
  let k: ProjectionDraft;
  let v: ProjectionDraft;
  let hq: number;
  let hkv: number;
  let d: number;
  let rot: ReturnType<typeof rotaryInfo>;
  let norms: AttentionSite['qkNorm'] = null;
  let output: Value;
  let layout: SiteLayout = CANONICAL_LAYOUT;
  if (rank === 3) {
    if (!(qHeadsAttr && qHeadsAttr > 0) || !(kvHeadsAttr && kvHeadsAttr > 0)) {
      return reject(`${where} takes 3-D Q/K/V ([B, S, H·d]) but has no q_num_heads / kv_num_heads attributes; the number of heads cannot be known`);
    }
    hq = qHeadsAttr;
    hkv = kvHeadsAttr;
    if (hq % hkv !== 0) return reject(`${where}: q_num_heads ${hq} is not a multiple of kv_num_heads ${hkv}`);
    const [qp, kp, vp] = stage('projections', () => [fusedOperand(Q, 'Q', ctx.shapes, where), fusedOperand(K, 'K', ctx.shapes, where), fusedOperand(V, 'V', ctx.shapes, where)]);
    q = qp.projection;
    k = kp.projection;
    v = vp.projection;
    layout = { q: qp.layout, k: kp.layout, v: vp.layout, output: CANONICAL_LAYOUT.output };
    if (q.width === null) return reject(`${where}: the width of the Q projection ${q.info.node} is unknown, so the head size is`);
    if (q.width % hq !== 0) return reject(`${where}: Q width ${q.width} is not a multiple of q_num_heads ${hq}`);
    d = q.width / hq;
    for (const [p, what] of [
      [k, 'K'],
      [v, 'V'],
    ] as const) {
      if (p.width !== null && p.width !== hkv * d) return reject(`${where}: ${what} projection ${p.info.node} has width ${p.width}, expected ${hkv} × ${d}`);
    }
    rot = rotaryInfo(qp.rotary, kp.rotary);
    output = n.outputs[0]!;
  } else if (rank === 4) {
    const shapes = ctx.shapes;
    const [qPath, kPath, vPath] = stage('projections', () => [tracePath(Q, 'Q', shapes, where), tracePath(K, 'K', shapes, where), tracePath(V, 'V', shapes, where)]);
    const heads = stage('heads', () => coreHeads(qPath, kPath, vPath, shapes, where, { kTransposed: false, nativeGqa: true }));
    ({ hq, hkv, d } = heads);
    const out = stage('output', () => traceOutput(n.outputs[0]!, heads, shapes, where));
    const fields = headFields(qPath, kPath, vPath, heads, out.layout);
    ({ q, k, v, layout } = fields);
    rot = rotaryInfo(qPath.rotary, kPath.rotary);
    norms = qkNorm(qPath, kPath);
    output = out.output;
  } else {
    return reject(`${where}: Q has rank ${rank}; expected 3 ([B, S, H·d]) or 4 ([B, H, S, d])`);
  }

  const oproj = outputProjection(output, where);
  const s = floatAttr(n, 'scale');
  const { scale, scaleSource } = s !== undefined && s !== 0 ? { scale: s, scaleSource: 'attribute' as const } : { scale: 1 / Math.sqrt(d), scaleSource: 'default' as const };
  const isCausal = intAttr(n, 'is_causal', 0) === 1;
  const mask = maskInfo(ctx, { input: n.inputs[3] ?? null }, isCausal ? 'attribute is_causal=1' : null);
  const pastKey = graphInputBehind(n.inputs[4]);
  const pastValue = graphInputBehind(n.inputs[5]);
  const presentKey = n.outputs[1] && n.outputs[1].name ? exportedAs(n.outputs[1]) : null;
  const presentValue = n.outputs[2] && n.outputs[2].name ? exportedAs(n.outputs[2]) : null;
  return buildSite({
    form: 'F5',
    anchor: n,
    nodes: { qk: null, softmax: null, pv: null, fused: n },
    q,
    k,
    v,
    layout,
    heads: { hq, hkv, d },
    scale: { value: scale, source: scaleSource },
    mask,
    rotary: rot,
    past: { key: pastKey, value: pastValue },
    present: { key: presentKey, value: presentValue },
    output,
    outputProjection: oproj,
    qkNorm: norms,
    where,
  });
}


/**
 * One way to make a site: every analyzer (decomposed softmax, com.microsoft fused ops,
 * ONNX Attention) fills a SiteParts with IR objects, and `buildSite` derives the names the
 * report shows from them. A new analyzer never writes a site literal.
 */
import type { Node, Value } from '../../ir/index.js';
import { nodeName, reject } from './context.js';
import type { NodeProjectionDraft, ProjectionDraft } from './f3_fused_qkv.js';
import type { maskInfo } from './mask.js';
import { type AttentionForm, type AttentionSite, CANONICAL_LAYOUT, type KvNames, type RotaryInfo, type SiteLayout } from './site.js';

export interface SiteParts {
  form: AttentionForm;
  /** The node whose depth orders the sites (the Q·Kᵀ MatMul or the fused node). */
  anchor: Node;
  nodes: { qk: Node | null; softmax: Node | null; pv: Node | null; fused: Node | null };
  q: ProjectionDraft;
  k: ProjectionDraft;
  v: ProjectionDraft;
  /** Default: [B, T, ·] everywhere. */
  layout?: SiteLayout;
  heads: { hq: number; hkv: number; d: number };
  scale: { value: number; source: AttentionSite['scaleSource'] };
  mask: ReturnType<typeof maskInfo>;
  rotary: { info: RotaryInfo; cos: Value | null; sin: Value | null } | null;
  past: { key: Value | null; value: Value | null };
  present: { key: Value | null; value: Value | null };
  /** Keys / values read straight from graph inputs (no projection in the graph); default none. */
  kvSource?: { key: Value | null; value: Value | null };
  output: Value;
  outputProjection: NodeProjectionDraft;
  window?: number | null;
  qkNorm?: AttentionSite['qkNorm'];
  /** "Softmax 'x'" / "GroupQueryAttention 'y'": the prefix of rejection reasons. */
  where: string;
}

export interface SiteDraft {
  site: Omit<AttentionSite, 'layer'>;
  anchor: Node;
  maskSource: Value | null;
}

export function kvNames(key: Value | null, value: Value | null, what: string, where: string): KvNames | null {
  if (!key && !value) return null;
  if (!key || !value) return reject(`${where}: ${what} has a key (${key?.name ?? 'none'}) but no value (${value?.name ?? 'none'}), or the reverse`);
  return { key: key.name, value: value.name };
}

const nameOf = (n: Node | null): string | null => (n ? nodeName(n) : null);

export function buildSite(p: SiteParts): SiteDraft {
  const past = kvNames(p.past.key, p.past.value, 'the KV cache input', p.where);
  const present = kvNames(p.present.key, p.present.value, 'the KV cache output', p.where);
  const kvSource = p.kvSource ? kvNames(p.kvSource.key, p.kvSource.value, 'the keys and values read from graph inputs', p.where) : null;
  const site: Omit<AttentionSite, 'layer'> = {
    form: p.form,
    kind: 'self',
    layout: p.layout ?? CANONICAL_LAYOUT,
    nodes: { qk: nameOf(p.nodes.qk), softmax: nameOf(p.nodes.softmax), pv: nameOf(p.nodes.pv), fused: nameOf(p.nodes.fused) },
    q: p.q.info,
    k: p.k.info,
    v: p.v.info,
    numHeads: p.heads.hq,
    numKvHeads: p.heads.hkv,
    headDim: p.heads.d,
    scale: p.scale.value,
    scaleSource: p.scale.source,
    causal: p.mask.info.causal,
    mask: p.mask.info,
    rotary: p.rotary?.info ?? null,
    past,
    present,
    kvSource,
    output: p.output.name,
    outputProjection: p.outputProjection.info,
    window: p.window ?? null,
    qkNorm: p.qkNorm ?? null,
    refs: {
      ...p.nodes,
      q: p.q.value,
      k: p.k.value,
      v: p.v.value,
      projections: {
        q: { node: p.q.node, packed: p.q.packed ?? null },
        k: { node: p.k.node, packed: p.k.packed ?? null },
        v: { node: p.v.node, packed: p.v.packed ?? null },
      },
      qInput: p.q.input,
      kInput: p.k.input,
      vInput: p.v.input,
      output: p.output,
      outputProjection: p.outputProjection.node,
      pastKey: p.past.key,
      pastValue: p.past.value,
      presentKey: p.present.key,
      presentValue: p.present.value,
      maskSource: p.mask.source,
      cosSource: p.rotary?.cos ?? null,
      sinSource: p.rotary?.sin ?? null,
    },
  };
  return { site, anchor: p.anchor, maskSource: p.mask.source };
}

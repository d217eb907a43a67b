/**
 * Rendering of a discovery result for `titanize inspect --attention`: a JSON-able object
 * (the sites without their IR references) and text lines (a headline per site, its
 * details on request, one line per rejected Softmax / fused node).
 */
import type { AttentionDiscovery, AttentionForm, AttentionSite, RejectedSoftmax, SharedSubgraph } from './site.js';

export type AttentionSiteReport = Omit<AttentionSite, 'refs'>;

/** What the form codes of a site mean (shown under the sites). */
export const FORM_NAMES: Record<AttentionForm, string> = {
  F1: 'decomposed causal attention (standard ops)',
  F2: 'onnxruntime fused op (com.microsoft Attention / MultiHeadAttention / GroupQueryAttention)',
  F3: 'decomposed attention on a packed q/k/v projection',
  F4: 'decomposed bidirectional attention (encoder)',
  F5: 'ONNX Attention op (opset 23+)',
};

export interface AttentionReport {
  sites: AttentionSiteReport[];
  rejected: RejectedSoftmax[];
  shared: SharedSubgraph[];
  inlined: string[];
}

/** The discovery result as plain JSON-able data (IR references dropped). */
export function attentionReport(result: AttentionDiscovery | AttentionReport): AttentionReport {
  return {
    sites: result.sites.map((s) => {
      const { refs: _refs, ...rest } = s as AttentionSite;
      return JSON.parse(JSON.stringify(rest)) as AttentionSiteReport;
    }),
    rejected: result.rejected.map((r) => ({ ...r })),
    shared: result.shared.map((s) => ({ ...s, layers: [...s.layers] })),
    inlined: [...result.inlined],
  };
}

function num(x: number): string {
  return Number.isInteger(x) ? String(x) : String(Number(x.toPrecision(6)));
}

function proj(p: AttentionSiteReport['q']): string {
  if (p.op === 'input') return `${p.input} (graph input, no projection)`;
  const where = p.output ?? (p.packed ? `${p.packed}[${p.columns?.join(':')}]` : `(inside ${p.node})`);
  const cols = p.output && p.columns ? ` cols ${p.columns[0]}:${p.columns[1]}` : '';
  return `${where} (${p.op} ${p.weight ?? '?'}${cols}${p.bias ? ` + ${p.bias}` : ''})`;
}

export interface RenderOptions {
  /** Add, under each site, its projections, mask, rotary, cache and output names. */
  verbose?: boolean;
}

/** A short headline per site (detail lines under it with `verbose`); then one line per Softmax / fused node that is not attention, with the reason. */
export function renderAttention(result: AttentionDiscovery | AttentionReport, options: RenderOptions = {}): string[] {
  const lines: string[] = [];
  const forms = [...new Set(result.sites.map((s) => s.form))].join(', ');
  lines.push(
    `Attention: ${result.sites.length} site${result.sites.length === 1 ? '' : 's'}${forms ? ` (${forms})` : ''}` +
      (result.rejected.length ? `, ${result.rejected.length} candidate${result.rejected.length === 1 ? '' : 's'} not taken` : ''),
  );
  for (const s of result.sites) {
    lines.push(siteHeadline(s));
    if (options.verbose) lines.push(...siteDetails(s).map((d) => `      ${d}`));
  }
  if (result.sites.length) {
    const used = new Set(result.sites.map((s) => s.form));
    lines.push(`  forms: ${(Object.keys(FORM_NAMES) as AttentionForm[]).filter((f) => used.has(f)).map((f) => `${f} = ${FORM_NAMES[f]}`).join('; ')}`);
    if (!options.verbose) lines.push('  (--verbose: projections, mask, rotary, cache and output names of each site; --json: everything)');
  }
  for (const r of result.rejected) {
    lines.push(`  not attention: ${r.node} (${r.domain && r.domain !== 'ai.onnx' ? `${r.domain}::` : ''}${r.opType}): ${r.reason}`);
  }
  if (result.inlined.length) lines.push(`  attention inside model-local functions: analysed with ${result.inlined.length} call(s) inlined (${result.inlined.slice(0, 3).join(', ')}${result.inlined.length > 3 ? ', ...' : ''})`);
  for (const sh of result.shared) {
    lines.push(`  shared ${sh.kind}: ${sh.source} used by layers ${sh.layers.join(', ')}`);
  }
  return lines;
}

/** `layer 0: F1 causal Hq=4 Hkv=2 d=16 scale=0.25 (constant), mask padding, rotary rotate_half, KV cache` */
function siteHeadline(s: AttentionSiteReport): string {
  const extras = [`mask ${s.mask.kind}`];
  if (s.rotary) extras.push(`rotary ${s.rotary.kind}`);
  if (s.past || s.present) extras.push('KV cache');
  if (s.kvSource) extras.push('K/V from graph inputs');
  if (s.window !== null) extras.push(`window ${s.window}`);
  if (s.mask.ignored.length) extras.push(`${s.mask.ignored.length} bias${s.mask.ignored.length === 1 ? '' : 'es'} the linear branch ignores`);
  return (
    `  layer ${s.layer}: ${s.form} ${s.kind === 'cross' ? 'cross-attention ' : ''}${s.causal ? 'causal' : 'bidirectional'} ` +
    `Hq=${s.numHeads} Hkv=${s.numKvHeads} d=${s.headDim} scale=${num(s.scale)} (${s.scaleSource}), ${extras.join(', ')}`
  );
}

/** One `key: value` line per part of the site (shown with --verbose). */
function siteDetails(s: AttentionSiteReport): string[] {
  const out = [`q: ${proj(s.q)}`, `k: ${proj(s.k)}`, `v: ${proj(s.v)}`];
  out.push(
    `mask: ${s.mask.kind}${s.mask.source ? ` ${s.mask.source}` : ''}${s.mask.shared > 1 ? ` (shared x${s.mask.shared})` : ''}${s.mask.causalEvidence ? ` [causal: ${s.mask.causalEvidence}]` : ''}${s.mask.inputs.length ? ` [from ${s.mask.inputs.join(', ')}]` : ''}`,
  );
  if (s.rotary) out.push(`rotary: ${s.rotary.kind}${s.rotary.cosSource ? ` ${s.rotary.cosSource}` : ''}${s.rotary.shared > 1 ? ` (shared x${s.rotary.shared})` : ''}`);
  if (s.past) out.push(`past: ${s.past.key}, ${s.past.value}`);
  if (s.present) out.push(`present: ${s.present.key}, ${s.present.value}`);
  if (s.kvSource) out.push(`kv source: ${s.kvSource.key}, ${s.kvSource.value} (graph inputs read as keys and values)`);
  const layout = (l: string[][]): string => `[${l.map((a) => a.join('·') || '1').join(', ')}]`;
  if (s.layout.q[0]?.[0] !== 'batch' || s.layout.output[0]?.[0] !== 'batch') out.push(`layout: q ${layout(s.layout.q)}, out ${layout(s.layout.output)}`);
  if (s.kvSource) out.push(`layout: k ${layout(s.layout.k)}, v ${layout(s.layout.v)}`);
  for (const x of s.mask.ignored) out.push(`linear branch ignores: ${x}`);
  out.push(`out: ${s.output} -> ${s.outputProjection.node}`);
  return out;
}

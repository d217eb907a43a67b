/**
 * Attention discovery: finds every attention site of a model and says, for every
 * Softmax (and fused attention node) that is not one, why.
 *
 *   const { sites, rejected, shared } = discoverAttention(model);
 *
 * Candidates are every Softmax (F1 decomposed, F3 fused q/k/v projection, F4
 * bidirectional), every com.microsoft GroupQueryAttention / MultiHeadAttention /
 * Attention (F2) and every ONNX Attention (F5) of the main graph. Each is analysed by
 * walking the data flow from it; the result does not depend on the order of nodes in
 * the file. Sites are numbered (layer) in data-flow order: by the depth of their Q·Kᵀ
 * MatMul (or fused node) from the graph inputs, ties broken by node name.
 */
import { type IRFunction, type Model, type Node, decodeModel, encodeModel } from '../../ir/index.js';
import { calledFunction, functionContains, inlineFunctions } from '../inline_functions.js';
import type { Pass } from '../pass.js';
import { DiscoveryContext, Rejection, nodeName, reject } from './context.js';
import type { SiteDraft } from './build_site.js';
import { analyzeSoftmax } from './f1_decomposed.js';
import { CONTRIB_OPS, analyzeContrib } from './f2_contrib.js';
import { analyzeOnnxAttention } from './f5_onnx_attention.js';
import type { AttentionDiscovery, AttentionForm, AttentionSite, RejectedSoftmax, SharedSubgraph } from './site.js';

export interface DiscoverOptions {
  /** Only these forms (default: all). */
  forms?: AttentionForm[];
}

/**
 * An analyzer: which nodes it starts from, and how it turns one into a site (or rejects
 * it with the reason). Every analyzer builds its site with buildSite; a new fused op or
 * core shape is one more entry here.
 */
export interface AttentionAnalyzer {
  name: string;
  /** The form reported for a rejected candidate. */
  form: AttentionForm;
  accepts(n: Node): boolean;
  analyze(ctx: DiscoveryContext, n: Node): SiteDraft;
}

export const ANALYZERS: AttentionAnalyzer[] = [
  { name: 'softmax core', form: 'F1', accepts: (n) => n.opType === 'Softmax' && n.isOnnxDomain(), analyze: analyzeSoftmax },
  { name: 'com.microsoft attention ops', form: 'F2', accepts: (n) => n.domain === 'com.microsoft' && CONTRIB_OPS.includes(n.opType), analyze: analyzeContrib },
  { name: 'ONNX Attention', form: 'F5', accepts: (n) => n.opType === 'Attention' && n.isOnnxDomain(), analyze: analyzeOnnxAttention },
];

/** A node discovery starts from (one an analyzer accepts). */
export function isAttentionNode(n: Node): boolean {
  return ANALYZERS.some((a) => a.accepts(n));
}

function candidates(model: Model): { node: Node; analyzer: AttentionAnalyzer }[] {
  const out: { node: Node; analyzer: AttentionAnalyzer }[] = [];
  for (const n of model.graph) {
    const analyzer = ANALYZERS.find((a) => a.accepts(n));
    if (analyzer) out.push({ node: n, analyzer });
  }
  return out;
}

/** Self-attention projects q, k and v from one hidden state; cross-attention takes k and v from another. */
function kindOf(d: SiteDraft): 'self' | 'cross' {
  const { q, k } = d.site;
  return q.input && k.input && q.input !== k.input ? 'cross' : 'self';
}

export function discoverAttention(model: Model, options: DiscoverOptions = {}): AttentionDiscovery {
  const holds = (fn: IRFunction): boolean => functionContains(model, fn, isAttentionNode);
  if (model.graph.nodes().some((n) => { const fn = calledFunction(model, n); return !!fn && holds(fn); })) {
    // attention inside model-local functions: analysed on a copy with those calls inlined
    // (what convert does first); the sites name the inlined nodes
    const copy = decodeModel(encodeModel(model), { baseDir: model.baseDir, externalData: model.externalData });
    const { inlined } = inlineFunctions(copy, (fn) => functionContains(copy, fn, isAttentionNode));
    return { ...discoverIn(copy, options), inlined };
  }
  return discoverIn(model, options);
}

function discoverIn(model: Model, options: DiscoverOptions): AttentionDiscovery {
  const ctx = new DiscoveryContext(model);
  const drafts: SiteDraft[] = [];
  const rejected: (RejectedSoftmax & { depth: number })[] = [];
  for (const c of candidates(model)) {
    try {
      const d = c.analyzer.analyze(ctx, c.node);
      d.site.kind = kindOf(d);
      if (options.forms && !options.forms.includes(d.site.form)) continue;
      drafts.push(d);
    } catch (e) {
      if (!(e instanceof Rejection)) throw e;
      rejected.push({
        node: nodeName(c.node),
        opType: c.node.opType,
        domain: c.node.domain,
        form: c.analyzer.form,
        stage: e.stage,
        reason: e.reason,
        depth: ctx.depth(c.node),
      });
    }
  }
  const order = (a: { depth: number; name: string }, b: { depth: number; name: string }): number =>
    a.depth - b.depth || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const keyed = drafts.map((d) => ({ d, depth: ctx.depth(d.anchor), name: nodeName(d.anchor) }));
  keyed.sort(order);
  const sites: AttentionSite[] = keyed.map(({ d }, layer) => ({ layer, ...d.site }));

  // shared mask and rotary subgraphs
  const shared: SharedSubgraph[] = [];
  const group = (kind: SharedSubgraph['kind'], key: (s: AttentionSite) => string | null, set: (s: AttentionSite, n: number) => void): void => {
    const by = new Map<string, AttentionSite[]>();
    for (const s of sites) {
      const k = key(s);
      if (!k) continue;
      const list = by.get(k) ?? [];
      list.push(s);
      by.set(k, list);
    }
    for (const [source, list] of by) {
      for (const s of list) set(s, list.length);
      if (list.length > 1) shared.push({ kind, source, layers: list.map((s) => s.layer) });
    }
  };
  group('mask', (s) => s.mask.source, (s, n) => (s.mask.shared = n));
  group('rotary', (s) => s.rotary?.cosSource ?? null, (s, n) => {
    if (s.rotary) s.rotary.shared = n;
  });

  rejected.sort((a, b) => order({ depth: a.depth, name: a.node }, { depth: b.depth, name: b.node }));
  return { sites, rejected: rejected.map(({ depth: _depth, ...r }) => r), shared, inlined: [] };
}

/**
 * Discovery as an analysis pass (it never changes the model): `onResult` receives the
 * sites, e.g. to check that a pipeline keeps every attention layer.
 */
export function discoverAttentionPass(onResult: (result: AttentionDiscovery, model: Model) => void, options: DiscoverOptions = {}): Pass {
  return {
    name: 'discover-attention',
    inPlace: true,
    changesInput: false,
    run(model) {
      onResult(discoverAttention(model, options), model);
      return { model, modified: false };
    },
  };
}

/** Attention discovery: the typed sites of a model (forms F1–F5) and why other Softmax nodes are not attention. */
export { discoverAttention, discoverAttentionPass, type DiscoverOptions } from './discover.js';
export { attentionReport, renderAttention, type AttentionReport, type AttentionSiteReport, type RenderOptions as AttentionRenderOptions } from './report.js';
export { SOFTMAX_CORE } from './f1_decomposed.js';
export { ROTATE_HALF } from './units.js';
export type {
  AttentionDiscovery,
  AttentionForm,
  AttentionSite,
  AxisPiece,
  SiteLayout,
  KvNames,
  MaskInfo,
  Projection,
  RejectedSoftmax,
  RotaryInfo,
  SharedSubgraph,
  SiteRefs,
} from './site.js';

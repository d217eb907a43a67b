/**
 * The ai.tptt operator set (domain 'ai.tptt', version 1): schemas of LiZA and MaG as
 * data (attributes with types and defaults, inputs including optional ones, outputs),
 * and the validation of user-supplied attributes.
 *
 * The semantics are defined by the plain TypeScript references in ./reference
 * (liza.ts, mag.ts) and summarised in docs/ops.md. Bad options raise `UserInputError`
 * naming the attribute and the allowed values.
 */
import { UserInputError } from '../ir/errors.js';
import {
  DEFAULT_CHUNK_SIZE,
  LIZA_RULES,
  type LizaAttributes,
  type LizaRule,
  isGatedRule,
  isProductRule,
} from './reference/liza.js';

export const TPTT_DOMAIN = 'ai.tptt';
export const TPTT_OPSET_VERSION = 1;
/** Oldest default-domain opset the function bodies and lowerings are written for. */
export const MIN_ONNX_OPSET = 17;
/** Default bound on the tokens of one LiZA call for the Scan-free function body. */
export const DEFAULT_MAX_SEQ_LEN = 32768;
/** Largest accepted chunk_size (the chunk matrices are chunk_size x chunk_size). */
export const MAX_CHUNK_SIZE = 1024;

export type AttributeKind = 'int' | 'float' | 'string';

export interface AttributeSchema {
  name: string;
  kind: AttributeKind;
  required: boolean;
  default?: number | string;
  /** For strings: the accepted values. */
  allowed?: readonly string[];
  doc: string;
}

export interface IOSchema {
  name: string;
  optional: boolean;
  /** Symbolic shape, for documentation and error messages. */
  shape: string;
  /** Accepted element types (onnxruntime-style names). */
  types: readonly string[];
  doc: string;
}

export interface OpSchema {
  domain: string;
  name: string;
  sinceVersion: number;
  doc: string;
  attributes: readonly AttributeSchema[];
  inputs: readonly IOSchema[];
  outputs: readonly IOSchema[];
}

const MASK_TYPES = ['bool', 'int32', 'int64', 'float32'] as const;

export const LIZA_SCHEMA: OpSchema = {
  domain: TPTT_DOMAIN,
  name: 'LiZA',
  sinceVersion: 1,
  doc:
    'Linear attention memory of TPTT: feature maps L2norm(SiLU(.)) on queries and keys, ' +
    'v / sqrt(d), parameter-free gates from a causal 3-token average of xk, a linear / delta / ' +
    'DeltaProduct (optionally gated) recurrence per kv head, readout S^T q and an RMS ' +
    'normalisation over all heads of a token. See docs/ops.md.',
  attributes: [
    { name: 'q_num_heads', kind: 'int', required: true, doc: 'Query heads Hq (a multiple of kv_num_heads).' },
    { name: 'kv_num_heads', kind: 'int', required: true, doc: 'Key/value heads Hkv; each owns a d x d state.' },
    { name: 'head_dim', kind: 'int', required: true, doc: 'Head size d (keys and values).' },
    { name: 'rule', kind: 'string', required: true, allowed: LIZA_RULES, doc: 'Memory update rule.' },
    { name: 'order', kind: 'int', required: false, default: 1, doc: 'DeltaProduct order n >= 1 (n > 1 only for *_product rules).' },
    {
      name: 'chunk_size',
      kind: 'int',
      required: false,
      default: DEFAULT_CHUNK_SIZE,
      doc: 'Rows per chunk of the parallel form (an implementation detail; results do not depend on it).',
    },
    { name: 'causal', kind: 'int', required: false, default: 1, doc: '1: causal; 0: mean of the forward and the time-reversed pass (no past allowed).' },
    {
      name: 'max_seq_len',
      kind: 'int',
      required: false,
      default: DEFAULT_MAX_SEQ_LEN,
      doc:
        'Bound on the tokens of one call for the Scan-free function body, which unrolls ' +
        'ceil(log2(max_seq_len * order / chunk_size)) doubling steps over chunks; longer calls ' +
        'produce NaN (never a silently wrong state). Ignored by the LinearAttention lowerings.',
    },
  ],
  inputs: [
    { name: 'xq', optional: false, shape: '[B, T, Hq*d]', types: ['float32'], doc: 'Query projection output (before rotary).' },
    { name: 'xk', optional: false, shape: '[B, T, Hkv*d]', types: ['float32'], doc: 'Key projection output (before rotary).' },
    { name: 'xv', optional: false, shape: '[B, T, Hkv*d]', types: ['float32'], doc: 'Value projection output.' },
    { name: 'past_state', optional: true, shape: '[B, Hkv, d, d]', types: ['float32'], doc: 'State [key, value] after the previous call; absent = zeros.' },
    {
      name: 'past_window',
      optional: true,
      shape: '[B, Hkv, order+1, 2*d]',
      types: ['float32'],
      doc: 'Raw xk (first d) and xv (last d) rows of the last order+1 tokens, oldest first; absent = zeros.',
    },
    { name: 'mask', optional: true, shape: '[B, T]', types: MASK_TYPES, doc: 'Padding mask: 0 = padded token (writes nothing), non-zero = real token.' },
  ],
  outputs: [
    { name: 'y', optional: false, shape: '[B, T, Hq*d]', types: ['float32'], doc: 'Normalised readout.' },
    { name: 'present_state', optional: true, shape: '[B, Hkv, d, d]', types: ['float32'], doc: 'State after the last token.' },
    { name: 'present_window', optional: true, shape: '[B, Hkv, order+1, 2*d]', types: ['float32'], doc: 'Raw rows of the last order+1 tokens.' },
  ],
};

export const MAG_SCHEMA: OpSchema = {
  domain: TPTT_DOMAIN,
  name: 'MaG',
  sinceVersion: 1,
  doc: 'Memory as gate: (1 - mu) * a + mu * y, before the (unchanged) output projection.',
  attributes: [],
  inputs: [
    { name: 'a', optional: false, shape: '[B, T, C]', types: ['float32'], doc: 'Softmax attention output (before o_proj).' },
    { name: 'y', optional: false, shape: '[B, T, C]', types: ['float32'], doc: 'LiZA output.' },
    { name: 'mu', optional: false, shape: '[] or [1]', types: ['float32'], doc: 'Mixing weight (an initializer, one per layer).' },
  ],
  outputs: [{ name: 'out', optional: false, shape: '[B, T, C]', types: ['float32'], doc: '(1 - mu) * a + mu * y.' }],
};

export const TPTT_SCHEMAS: readonly OpSchema[] = [LIZA_SCHEMA, MAG_SCHEMA];

// ---------------------------------------------------------------------------------------
// LiZA attributes
// ---------------------------------------------------------------------------------------

/** LiZA node attributes as the user writes them (names as in the schema). */
export interface LizaOpAttributes extends LizaAttributes {
  /** Bound on T per call for the Scan-free function body (default 32768). */
  max_seq_len?: number;
}

/** Validated LiZA attributes with every default filled in. */
export interface LizaOpConfig {
  qNumHeads: number;
  kvNumHeads: number;
  /** query heads per kv head */
  group: number;
  headDim: number;
  rule: LizaRule;
  order: number;
  chunkSize: number;
  causal: boolean;
  maxSeqLen: number;
  /** order + 1 */
  window: number;
  gated: boolean;
  product: boolean;
}

/** Which optional inputs a LiZA call provides (the function body is specialised to it). */
export interface LizaInputPresence {
  pastState: boolean;
  pastWindow: boolean;
  mask: boolean;
}

function bad(message: string): never {
  throw new UserInputError(`ai.tptt.LiZA: ${message}`);
}

function positiveInt(name: string, v: unknown, max?: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) bad(`${name} must be a positive integer, got ${String(v)}`);
  if (max !== undefined && v > max) bad(`${name} must be at most ${max}, got ${v}`);
  return v;
}

/** Validates LiZA attributes and fills defaults; throws UserInputError naming the attribute. */
export function resolveLizaAttributes(attrs: LizaOpAttributes): LizaOpConfig {
  if (typeof attrs !== 'object' || attrs === null) bad('attributes must be an object');
  const known = new Set(LIZA_SCHEMA.attributes.map((a) => a.name));
  for (const k of Object.keys(attrs)) {
    if (!known.has(k)) bad(`unknown attribute '${k}'; known: ${[...known].join(', ')}`);
  }
  const qNumHeads = positiveInt('q_num_heads', attrs.q_num_heads);
  const kvNumHeads = positiveInt('kv_num_heads', attrs.kv_num_heads);
  const headDim = positiveInt('head_dim', attrs.head_dim);
  if (qNumHeads % kvNumHeads !== 0) {
    bad(`q_num_heads (${qNumHeads}) must be a multiple of kv_num_heads (${kvNumHeads})`);
  }
  const rule = attrs.rule;
  if (!LIZA_RULES.includes(rule)) bad(`rule must be one of ${LIZA_RULES.join(', ')}; got '${String(rule)}'`);
  const order = positiveInt('order', attrs.order ?? 1);
  if (order > 1 && !isProductRule(rule)) {
    bad(`order ${order} > 1 needs a *_product rule (delta_product or gated_delta_product), got '${rule}'`);
  }
  const chunkSize = positiveInt('chunk_size', attrs.chunk_size ?? DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE);
  const causalRaw: unknown = attrs.causal ?? true;
  if (typeof causalRaw !== 'boolean' && causalRaw !== 0 && causalRaw !== 1) {
    bad(`causal must be true/false (or 1/0), got ${String(causalRaw)}`);
  }
  const causal = causalRaw === true || causalRaw === 1;
  const maxSeqLen = positiveInt('max_seq_len', attrs.max_seq_len ?? DEFAULT_MAX_SEQ_LEN, 2 ** 30);
  return {
    qNumHeads,
    kvNumHeads,
    group: qNumHeads / kvNumHeads,
    headDim,
    rule,
    order,
    chunkSize,
    causal,
    maxSeqLen,
    window: order + 1,
    gated: isGatedRule(rule),
    product: isProductRule(rule),
  };
}

/** Checks that a set of optional inputs is allowed with the configuration. */
export function validateLizaInputs(cfg: LizaOpConfig, presence: LizaInputPresence): void {
  if (!cfg.causal && (presence.pastState || presence.pastWindow)) {
    bad('causal = 0 (bidirectional) does not accept past_state / past_window');
  }
}

/** The node attributes of a configuration (defaults written out), as the schema names them. */
export function lizaNodeAttributes(cfg: LizaOpConfig): Record<string, number | string> {
  return {
    q_num_heads: cfg.qNumHeads,
    kv_num_heads: cfg.kvNumHeads,
    head_dim: cfg.headDim,
    rule: cfg.rule,
    order: cfg.order,
    chunk_size: cfg.chunkSize,
    causal: cfg.causal ? 1 : 0,
    max_seq_len: cfg.maxSeqLen,
  };
}

/** Reads LiZA attributes back from a node's attribute accessors (for the lowerings). */
export function lizaAttributesFromNode(node: {
  getInt(name: string, fallback?: number): number;
  getString(name: string, fallback?: string): string;
  attribute(name: string): unknown;
}): LizaOpAttributes {
  const a: LizaOpAttributes = {
    q_num_heads: node.getInt('q_num_heads'),
    kv_num_heads: node.getInt('kv_num_heads'),
    head_dim: node.getInt('head_dim'),
    rule: node.getString('rule') as LizaRule,
    order: node.getInt('order', 1),
    chunk_size: node.getInt('chunk_size', DEFAULT_CHUNK_SIZE),
    causal: node.getInt('causal', 1) !== 0,
    max_seq_len: node.getInt('max_seq_len', DEFAULT_MAX_SEQ_LEN),
  };
  return a;
}

/** Number of chunks the function body supports: ceil(max_seq_len * order / chunk_size). */
export function maxChunks(cfg: LizaOpConfig): number {
  return Math.ceil((cfg.maxSeqLen * (cfg.rule === 'linear' ? 1 : cfg.order)) / cfg.chunkSize);
}

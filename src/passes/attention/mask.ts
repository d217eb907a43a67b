/**
 * Mask analysis (and F4 detection): what a mask is built from. A triangular pattern
 * (Trilu; a Less/Greater comparison between Range-derived positions; a triangular
 * constant buffer) makes the site causal; a mask built only from a padding input
 * (attention_mask) leaves it bidirectional.
 */
import { DataType, type Value } from '../../ir/index.js';
import { constantTensor, tensorNumbers } from '../util/constants.js';
import { type DiscoveryContext, isOp, nodeName, stripBack } from './context.js';
import type { MaskInfo } from './site.js';

export interface MaskAnalysis {
  causal: boolean;
  causalEvidence: string | null;
  /** A constant tensor of values other than 0 / 1 / very negative reaches the mask: a bias, not a mask. */
  bias: string | null;
  /** Graph inputs whose data (not just shape) reaches the mask. */
  inputs: string[];
}

const COMPARISONS = ['Less', 'LessOrEqual', 'Greater', 'GreaterOrEqual'];
/** Nodes visited per mask value at most (masks are small subgraphs). */
const BUDGET = 600;

/** Analyses the subgraph that computes `v` (cached: shared masks are analysed once). */
export function analyzeMaskValue(ctx: DiscoveryContext, v: Value): MaskAnalysis {
  const cached = ctx.maskCache.get(v) as MaskAnalysis | undefined;
  if (cached) return cached;
  const inputs = new Set<string>();
  let evidence: string | null = null;
  let bias: string | null = null;
  const seen = new Set<Value>();
  const stack: Value[] = [v];
  while (stack.length && seen.size < BUDGET) {
    const x = stack.pop()!;
    if (seen.has(x)) continue;
    seen.add(x);
    const p = x.producer;
    if (!p) {
      if (x.isGraphInput() && !x.initializer) inputs.add(x.name);
      else if (!evidence) evidence = triangularConstant(x);
      bias ??= biasConstant(x);
      continue;
    }
    if (p.opType === 'Shape' || p.opType === 'Size') continue; // shape-only: not a data source
    if (p.opType === 'Constant') {
      if (!evidence) evidence = triangularConstant(x);
      bias ??= biasConstant(x);
      continue;
    }
    if (!evidence && isOp(p, 'Trilu')) evidence = `Trilu '${nodeName(p)}'`;
    if (!evidence && isOp(p, ...COMPARISONS) && p.inputs.every((i) => i && fromRange(i))) {
      evidence = `${p.opType} '${nodeName(p)}' between Range positions`;
    }
    for (const i of p.inputs) if (i) stack.push(i);
  }
  const r: MaskAnalysis = { causal: evidence !== null, causalEvidence: evidence, bias, inputs: [...inputs].sort() };
  ctx.maskCache.set(v, r);
  return r;
}

/** True when `v` is computed from a Range (position indices) through a few elementwise/shape ops. */
function fromRange(v: Value): boolean {
  const seen = new Set<Value>();
  const stack = [v];
  while (stack.length && seen.size < 24) {
    const x = stack.pop()!;
    if (seen.has(x)) continue;
    seen.add(x);
    const p = x.producer;
    if (!p) continue;
    if (isOp(p, 'Range')) return true;
    if (isOp(p, 'Add', 'Sub', 'Reshape', 'Unsqueeze', 'Cast', 'Expand', 'Slice', 'Squeeze', 'Identity')) {
      // follow the data input only (shape/axes inputs of Reshape/Unsqueeze/Slice/Expand are not positions)
      if (isOp(p, 'Add', 'Sub')) {
        for (const i of p.inputs) if (i) stack.push(i);
      } else if (p.inputs[0]) stack.push(p.inputs[0]);
    }
  }
  return false;
}

/** Evidence string when `v` is a constant whose last two axes hold a triangular 0/1 (or 0/-inf) pattern. */
function triangularConstant(v: Value): string | null {
  const t = constantTensor(v);
  if (!t || t.dims.length < 2) return null;
  const rows = t.dims[t.dims.length - 2]!;
  const cols = t.dims[t.dims.length - 1]!;
  if (rows < 2 || cols < 2) return null;
  const vals = tensorNumbers(t, 1 << 22);
  if (!vals) return null;
  // look at the first [rows, cols] matrix
  let lower = true; // nonzero on and below the diagonal, zero above
  let upperNeg = true; // 0 on and below, very negative above (additive causal mask)
  for (let i = 0; i < rows && (lower || upperNeg); i++) {
    for (let j = 0; j < cols; j++) {
      const x = vals[i * cols + j]!;
      if (j <= i) {
        if (x === 0) lower = false;
        if (x !== 0) upperNeg = false;
      } else {
        if (x !== 0) lower = false;
        if (!(x < -1e4)) upperNeg = false;
      }
    }
  }
  if (!lower && !upperNeg) return null;
  return `triangular constant '${v.name}' [${t.dims.join(',')}]`;
}

/**
 * Evidence string when `v` is a float constant of more than one element holding values
 * other than 0, 1 and very negative fills: a learned or computed bias (relative position
 * bias tables, ALiBi slopes, T5 buckets' embeddings), which a linear-attention memory
 * cannot add to its scores.
 */
function biasConstant(v: Value): string | null {
  const t = constantTensor(v);
  if (!t || t.size < 2 || t.dataType === DataType.BOOL || t.dataType === DataType.INT64 || t.dataType === DataType.INT32) return null;
  const vals = tensorNumbers(t, 1 << 22);
  if (!vals) return null;
  const maskLike = vals.every((x) => x === 0 || x === 1 || x < -1e4 || !Number.isFinite(x));
  return maskLike ? null : `constant '${v.name}' [${t.dims.join(',')}]`;
}

/** Per-layer wrappers stripped to find the shared source of a mask tensor. */
const MASK_WRAPPERS = ['Slice', 'Cast', 'Unsqueeze', 'Expand', 'Reshape', 'Identity', 'Squeeze'];

export function maskSource(v: Value): Value {
  return stripBack(v, MASK_WRAPPERS);
}

/**
 * Builds the MaskInfo of a site from the tensors combined with its scores. `viewed` is an
 * additive mask added on a [B, H, T, S] view of [B·H, T, S] scores (bmm attention): it is
 * read like `additive`.
 */
export function maskInfo(
  ctx: DiscoveryContext,
  parts: { additive?: Value | null; where?: Value | null; input?: Value | null; seqlens?: Value | null; window?: Value | null; viewed?: Value | null },
  causalByDefinition: string | null,
): { info: MaskInfo; source: Value | null } {
  const values = [parts.additive, parts.viewed, parts.where, parts.input, parts.seqlens, parts.window].filter((x): x is Value => !!x);
  const additive = parts.additive ?? parts.viewed;
  const kind: MaskInfo['kind'] = parts.seqlens
    ? 'seqlens'
    : parts.input
      ? 'input'
      : additive && parts.where
        ? 'additive+where'
        : additive
          ? 'additive'
          : parts.where
            ? 'where'
            : 'none';
  let causal = false;
  let evidence: string | null = causalByDefinition;
  const inputs = new Set<string>();
  const ignored: string[] = [];
  for (const v of values) {
    const a = analyzeMaskValue(ctx, v);
    if (a.causal && !evidence) evidence = a.causalEvidence;
    for (const i of a.inputs) inputs.add(i);
    if (v === parts.window) ignored.push(`window mask '${v.name}' (added per window: shifted-window attention)`);
    else if (a.bias) ignored.push(`bias '${v.name}' added to the scores (from ${a.bias}: e.g. a relative position bias)`);
  }
  causal = evidence !== null;
  const primary = additive ?? parts.input ?? parts.seqlens ?? parts.where ?? null;
  const source = primary ? maskSource(primary) : null;
  const inputList = [...inputs].sort();
  return {
    info: {
      kind,
      values: values.map((v) => v.name),
      source: source?.name ?? null,
      inputs: inputList,
      causal,
      causalEvidence: evidence,
      padding: inputList.length > 0,
      shared: 1,
      ignored,
    },
    source,
  };
}

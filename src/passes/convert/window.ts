/**
 * Sliding window on the softmax branch: each query keeps only the last L key positions
 * (itself included). For decomposed sites (F1/F3) a band mask is added to the Softmax
 * input; for com.microsoft.GroupQueryAttention the op's own `local_window_size` is set.
 * Decoding with the KV cache cut to L−1 positions is the recurrent-state pass's job.
 */
import { AttributeType, Builder, DataType, UserInputError, type Model, type Value } from '../../ir/index.js';
import type { AttentionSite } from '../attention/site.js';

export const WINDOW_RULE = 'window';

/** Restricts the softmax attention of `site` to a window of `size` tokens. Returns a short description. */
export function applyWindow(model: Model, site: AttentionSite, size: number): string {
  if (!Number.isInteger(size) || size < 1) throw new UserInputError(`options.window must be a positive integer, got ${size}`);
  if (!site.causal) throw new UserInputError(`layer ${site.layer}: a sliding window needs causal attention; this site is bidirectional`);
  const fused = site.refs.fused;
  if (fused) {
    if (fused.is('GroupQueryAttention', 'com.microsoft')) {
      // GQA attends to local_window_size previous tokens plus the current one
      fused.attributes.set('local_window_size', { name: 'local_window_size', type: AttributeType.INT, value: size - 1 });
      return `local_window_size=${size - 1} on ${fused.name}`;
    }
    throw new UserInputError(
      `layer ${site.layer}: ${fused.domain ? `${fused.domain}::` : ''}${fused.opType} has no sliding-window option titanize can set; convert without options.window or with options.mu = 1`,
    );
  }
  const softmax = site.refs.softmax;
  if (!softmax?.graph) throw new UserInputError(`layer ${site.layer}: no Softmax node to restrict`);
  const graph = softmax.graph;
  const b = new Builder(graph, { before: softmax, tag: WINDOW_RULE, prefix: `tptt/layers.${site.layer}/window/` });
  const scores = softmax.requireInput(0);
  // scores [..., T, S]: query t (absolute position S−T+t) may see key s when S−T+t−s < L
  const shape = b.op('Shape', [scores]);
  const T = b.op('Gather', [shape, b.constant(BigInt64Array.from([-2n]), [])], { axis: 0 });
  const S = b.op('Gather', [shape, b.constant(BigInt64Array.from([-1n]), [])], { axis: 0 });
  const one = b.constant(BigInt64Array.from([1n]), []);
  const zero = b.constant(BigInt64Array.from([0n]), []);
  const qpos = b.op('Unsqueeze', [b.op('Range', [b.op('Sub', [S, T]), S, one]), b.ints([1])]); // [T,1]
  const kpos = b.op('Unsqueeze', [b.op('Range', [zero, S, one]), b.ints([0])]); // [1,S]
  const far = b.op('GreaterOrEqual', [b.op('Sub', [qpos, kpos]), b.constant(BigInt64Array.from([BigInt(size)]), [])]);
  // -65504 is the lowest float16 and, added to any score, still makes exp() vanish in float32
  const like = (x: number): Value =>
    (model.opsetVersion('') ?? 0) >= 15 ? b.op('CastLike', [b.scalar(x), scores]) : b.op('Cast', [b.scalar(x)], { to: scoreType(scores) });
  const neg = like(-65504);
  const zf = like(0);
  const band = b.op('Where', [far, neg, zf]);
  // keep the sum finite where the original mask already holds the lowest value
  const banded = b.op('Max', [b.op('Add', [scores, band]), neg]);
  softmax.setInput(0, banded);
  return `band mask of ${size} tokens before ${softmax.name}`;
}

function scoreType(v: Value): DataType {
  const t = v.type;
  if (t && t.kind === 'tensor') return t.elemType;
  return DataType.FLOAT;
}

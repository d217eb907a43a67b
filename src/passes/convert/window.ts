/**
 * Sliding window on the softmax branch: each query keeps only the last L key positions
 * (itself included). For decomposed sites (F1/F3) a band mask is added to the Softmax
 * input; for com.microsoft.GroupQueryAttention the op's own `local_window_size` is set.
 * Both are one in-place rule applied at the site's node. Decoding with the KV cache cut to
 * L−1 positions is the recurrent-state pass's job.
 */
import { DataType, type Model, UserInputError, type Value, describeNode, getMetadata, setMetadata } from '../../ir/index.js';
import { applyRules } from '../pattern/driver.js';
import { defineRule, fail, ok } from '../pattern/rule.js';
import type { AttentionSite } from '../attention/site.js';

export const WINDOW_RULE = 'window';

/** Node metadata on a restricted Softmax / GroupQueryAttention: the window size. */
const WINDOW_KEY = 'titanize.window';

/** Restricts the softmax attention of `site` to a window of `size` tokens. Returns a short description. */
export function applyWindow(model: Model, site: AttentionSite, size: number): string {
  if (!Number.isInteger(size) || size < 1) throw new UserInputError(`options.window must be a positive integer, got ${size}`);
  if (!site.causal) throw new UserInputError(`layer ${site.layer}: a sliding window needs causal attention; this site is bidirectional`);
  const fused = site.refs.fused;
  if (fused && !fused.is('GroupQueryAttention', 'com.microsoft')) {
    throw new UserInputError(
      `layer ${site.layer}: ${fused.domain ? `${fused.domain}::` : ''}${fused.opType} has no sliding-window option titanize can set; convert without options.window or with options.mu = 1`,
    );
  }
  const root = fused ?? site.refs.softmax;
  if (!root?.graph) throw new UserInputError(`layer ${site.layer}: no Softmax node to restrict`);
  const r = applyRules(root.graph, [windowRule(model, size, `tptt/layers.${site.layer}/window/`)], { roots: [root] });
  if (r.rewrites !== 1) throw new UserInputError(`layer ${site.layer}: ${root.name} is already restricted to a window`);
  return fused ? `local_window_size=${size} on ${fused.name}` : `band mask of ${size} tokens before ${root.name}`;
}

/**
 * The in-place rule: a Softmax reads its scores plus a band mask, a GroupQueryAttention
 * gets `local_window_size` = L (since onnxruntime 1.23 the window counts the current
 * token: query p sees keys j with p − j < L, as the band mask does).
 */
function windowRule(model: Model, size: number, prefix: string) {
  return defineRule({
    name: WINDOW_RULE,
    pattern: (op) => op.or(op.Softmax({ extraInputs: true }), op.GroupQueryAttention({ domain: 'com.microsoft', extraInputs: true })),
    check: (m) => (getMetadata(m.root.metadataProps, WINDOW_KEY) ? fail(`${describeNode(m.root)} is already restricted to a window`) : ok()),
    rewrite(m, b) {
      const node = m.root;
      setMetadata(node.metadataProps, WINDOW_KEY, String(size));
      if (node.opType === 'GroupQueryAttention') {
        node.setAttribute('local_window_size', size);
        return node.outputs;
      }
      b.prefix = prefix;
      const scores = node.requireInput(0);
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
      const band = b.op('Where', [far, neg, like(0)]);
      // keep the sum finite where the original mask already holds the lowest value
      node.setInput(0, b.op('Max', [b.op('Add', [scores, band]), neg]));
      return node.outputs;
    },
  });
}

function scoreType(v: Value): DataType {
  const t = v.type;
  if (t && t.kind === 'tensor') return t.elemType;
  return DataType.FLOAT;
}

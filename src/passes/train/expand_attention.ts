/**
 * The ONNX `Attention` op (opset 23) in a training graph: autodiff has no rule for a fused
 * attention op, so the rule `train-expand-attention` replaces each one by its standard-op
 * definition, which every gradient rule covers:
 *
 *   Q, K, V → heads [B, H, S, d] (3-D inputs are split by q_num_heads / kv_num_heads),
 *   past K/V concatenated on the sequence axis (the present outputs), K/V repeated for
 *   grouped-query heads, scores = (Q·Kᵀ)·scale (default 1/√d), plus attn_mask (additive,
 *   or boolean: false = masked), causal (is_causal: key j ≤ query i, upper-left aligned),
 *   softmax, ·V, and back to the input's layout.
 *
 * The forward values are those of the op (tested against onnxruntime's kernel); softcap and
 * the qk_matmul_output output are refused (discovery refuses softcap too).
 */
import { DataType, type Model, type Node, UserInputError, type Value, describeNode } from '../../ir/index.js';
import { inferShapes } from '../analysis/shapes.js';
import { applyRules } from '../pattern/driver.js';
import { type Rule, defineRule } from '../pattern/rule.js';

export const TRAIN_ATTENTION_RULE = 'train-expand-attention';

/** The lowest float32: added to or put in place of a masked score, its exp() is 0. */
const LOWEST = -3.4028234663852886e38;

/** Replaces every ONNX Attention node of the main graph by its standard-op definition; returns how many. */
export function expandAttentionOps(model: Model): number {
  if (!model.graph.nodes().some((n) => n.is('Attention'))) return 0;
  const shapes = inferShapes(model);
  const r = applyRules(model, [attentionRule((v) => shapes.rank(v))]);
  return r.applied[TRAIN_ATTENTION_RULE] ?? 0;
}

const BOOLEAN_OPS = new Set(['Equal', 'Less', 'LessOrEqual', 'Greater', 'GreaterOrEqual', 'Not', 'And', 'Or', 'Xor', 'IsNaN', 'IsInf']);
const KEEPS_TYPE = new Set(['Identity', 'Reshape', 'Unsqueeze', 'Squeeze', 'Expand', 'Slice', 'Transpose', 'Tile', 'Gather', 'Flatten']);

/** Whether the mask is boolean (its declared type, or what makes it: a comparison, a Cast to bool, through layout ops). */
function isBoolean(v: Value): boolean {
  for (let x: Value | null = v; x; ) {
    const t = x.type;
    if (t?.kind === 'tensor') return t.elemType === DataType.BOOL;
    const p: Node | null = x.producer;
    if (!p || !p.isOnnxDomain()) return false;
    if (BOOLEAN_OPS.has(p.opType)) return true;
    if (p.opType === 'Cast') return p.getInt('to', 0) === DataType.BOOL;
    if (p.opType === 'Where') x = p.input(1);
    else x = KEEPS_TYPE.has(p.opType) ? p.input(0) : null;
  }
  return false;
}

function attentionRule(rankOf: (v: Value) => number | undefined): Rule {
  return defineRule({
    name: TRAIN_ATTENTION_RULE,
    keepNames: true,
    pattern: (op) => op.Attention(op.var('q'), op.var('k'), op.var('v'), { extraInputs: true }),
    rewrite(m, b) {
      const n = m.root;
      const where = describeNode(n);
      if (n.getFloat('softcap', 0) !== 0) throw new UserInputError(`${where}: softcap is not supported in training graphs`);
      if (n.outputs[3]?.name && (n.outputs[3].numUses > 0 || n.outputs[3].isGraphOutput())) throw new UserInputError(`${where}: its qk_matmul_output output is not supported in training graphs`);
      if (n.input(6)) throw new UserInputError(`${where}: nonpad_kv_seqlen is not supported in training graphs`);
      b.prefix = `${n.name || 'Attention'}/`;
      const [q, k, v] = [m.value('q'), m.value('k'), m.value('v')];
      const rank = rankOf(q) ?? (n.attributes.has('q_num_heads') ? 3 : 4);
      const three = rank === 3;
      const hq = n.getInt('q_num_heads', 0);
      const hkv = n.getInt('kv_num_heads', 0);
      if (three && (hq < 1 || hkv < 1)) throw new UserInputError(`${where}: 3-D inputs need the q_num_heads and kv_num_heads attributes`);
      // [B, S, H·d] → [B, H, S, d]
      const heads = (x: Value, h: number, name: string): Value =>
        three ? b.op('Transpose', [b.op('Reshape', [x, b.ints([0, 0, h, -1])])], { perm: [0, 2, 1, 3] }, { name }) : x;
      const Q = heads(q, hq, 'q_heads');
      let K = heads(k, hkv, 'k_heads');
      let V = heads(v, hkv, 'v_heads');
      const pastK = n.input(4);
      const pastV = n.input(5);
      if (pastK) K = b.op('Concat', [pastK, K], { axis: 2 }, { name: 'present_key' });
      if (pastV) V = b.op('Concat', [pastV, V], { axis: 2 }, { name: 'present_value' });
      const presentK = K;
      const presentV = V;
      // grouped-query heads: each kv head serves Hq / Hkv query heads (repeat_kv)
      const dim = (x: Value, i: number): Value => b.op('Slice', [b.op('Shape', [x]), b.ints([i]), b.ints([i + 1]), b.ints([0])]);
      const repeat = (x: Value, name: string): Value => {
        const groups = b.op('Div', [dim(Q, 1), dim(x, 1)]);
        const wide = b.op('Concat', [dim(x, 0), dim(x, 1), groups, dim(x, 2), dim(x, 3)], { axis: 0 });
        const expanded = b.op('Expand', [b.op('Unsqueeze', [x, b.ints([2])]), wide]);
        return b.op('Reshape', [expanded, b.op('Concat', [dim(x, 0), dim(Q, 1), dim(x, 2), dim(x, 3)], { axis: 0 })], {}, { name });
      };
      K = repeat(K, 'k_repeated');
      V = repeat(V, 'v_repeated');
      const given = n.getFloat('scale', 0);
      const d = b.op('Cast', [dim(Q, 3)], { to: DataType.FLOAT });
      const scale = given !== 0 ? b.scalar(given) : b.op('Div', [b.scalar(1), b.op('Sqrt', [d])]);
      let scores = b.op('Mul', [b.op('MatMul', [Q, b.op('Transpose', [K], { perm: [0, 1, 3, 2] })]), b.op('CastLike', [scale, q])], {}, { name: 'scores' });
      const lowest = (): Value => b.op('CastLike', [b.scalar(LOWEST), q]);
      const mask = n.input(3);
      if (mask) {
        const boolean = isBoolean(mask);
        scores = boolean ? b.op('Where', [mask, scores, lowest()]) : b.op('Add', [scores, mask], {}, { name: 'masked' });
      }
      if (n.getInt('is_causal', 0) === 1) {
        // key j is visible to query i when j ≤ i (upper-left aligned, as the op defines it)
        const sq = b.op('Squeeze', [dim(scores, 2), b.ints([0])]);
        const skv = b.op('Squeeze', [dim(scores, 3), b.ints([0])]);
        const zero = b.constant(BigInt64Array.from([0n]), []);
        const one = b.constant(BigInt64Array.from([1n]), []);
        const rows = b.op('Unsqueeze', [b.op('Range', [zero, sq, one]), b.ints([1])]);
        const cols = b.op('Unsqueeze', [b.op('Range', [zero, skv, one]), b.ints([0])]);
        scores = b.op('Where', [b.op('LessOrEqual', [cols, rows]), scores, lowest()], {}, { name: 'causal' });
      }
      const probs = b.op('Softmax', [scores], { axis: -1 });
      let y = b.op('MatMul', [probs, V]);
      if (three) y = b.op('Reshape', [b.op('Transpose', [y], { perm: [0, 2, 1, 3] }), b.ints([0, 0, -1])], {}, { name: 'y' });
      const reps: (Value | null)[] = [y, presentK, presentV];
      return n.outputs.map((o, i) => (o.name && (o.numUses > 0 || o.isGraphOutput()) ? (reps[i] ?? null) : null));
    },
  });
}

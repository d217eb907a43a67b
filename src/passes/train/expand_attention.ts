/**
 * Fused attention ops in a training graph: autodiff has no rule for them, so the rule
 * `train-expand-attention` replaces each one by its standard-op definition, which the
 * gradient rules cover. The ONNX `Attention` op (opset 23):
 *
 *   Q, K, V → heads [B, H, S, d] (3-D inputs are split by q_num_heads / kv_num_heads),
 *   past K/V concatenated on the sequence axis (the present outputs), K/V repeated for
 *   grouped-query heads, scores = (Q·Kᵀ)·scale (default 1/√d), plus attn_mask (additive,
 *   or boolean: false = masked), causal (is_causal: key j ≤ past length + query i, as
 *   onnxruntime and the ONNX reference offset it by the past),
 *   softmax, ·V, and back to the input's layout.
 *
 * com.microsoft.GroupQueryAttention (onnxruntime-genai's exports): q, k, v (or one packed
 * query), the KV cache (present = past ‖ new, BNSH), rotary inside (do_rotary: positions
 * past length + i, the caches gathered, rotate-half or interleaved pairs, partial when the
 * caches are narrower than the head), causal, keys past seqlens_k + 1 masked, and
 * local_window_size. With a past, every row must have seqlens_k + 1 = past length + S (no
 * padded rows, no preallocated cache buffer): onnxruntime then writes each row's new keys at
 * its own offset, which this expansion does not model. Training graphs have no past.
 *
 * com.microsoft.MultiHeadAttention (onnxruntime's transformer optimizer, Whisper / T5
 * exports): 3-D q, k, v (k / v also as BNSH caches), the packed bias, key_padding_mask
 * (0 = padding, as [B, L] or key lengths [B]: mask_filter_value added), attention_bias,
 * past K/V, unidirectional (causal self-attention: query i sees keys up to past length + i;
 * over BNSH caches or keys of another length than the queries it is refused, as onnxruntime's
 * mask there is neither).
 *
 * The forward values are those of the ops (tested against onnxruntime's kernels); softcap,
 * smooth_softmax, attention_bias / position_ids / head_sink inputs and the qk_matmul_output
 * output are refused (discovery refuses softcap too).
 */
import { type Builder, DataType, type Model, type Node, UserInputError, type Value, describeNode } from '../../ir/index.js';
import type { SymDim } from '../analysis/dim.js';
import { inferShapes } from '../analysis/shapes.js';
import { Emitter } from '../../ops/emit.js';
import { applyRules } from '../pattern/driver.js';
import { type Rule, defineRule } from '../pattern/rule.js';

export const TRAIN_ATTENTION_RULE = 'train-expand-attention';

/** The lowest float32: added to or put in place of a masked score, its exp() is 0. */
const LOWEST = -3.4028234663852886e38;

/** Replaces every ONNX Attention node of the main graph by its standard-op definition; returns how many. */
export function expandAttentionOps(model: Model): number {
  if (!model.graph.nodes().some((n) => n.is('Attention') || n.is('GroupQueryAttention', 'com.microsoft') || n.is('MultiHeadAttention', 'com.microsoft'))) return 0;
  const shapes = inferShapes(model);
  const rankOf = (v: Value): number | undefined => shapes.rank(v);
  let expanded = 0;
  const r = applyRules(model, [attentionRule(rankOf), gqaRule(), mhaRule(rankOf, (v) => shapes.shape(v))], { onRewrite: () => expanded++ });
  if (!r.converged) throw new UserInputError(`expanding the fused attention ops did not finish: ${r.stopReason}`);
  return expanded;
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

const isUsed = (o: Value | undefined): boolean => !!o?.name && (o.numUses > 0 || o.isGraphOutput());

/** An optional output the expansion does not compute must be unused. */
function refuseUsedOutput(n: Node, i: number, what: string): void {
  if (isUsed(n.outputs[i])) throw new UserInputError(`${describeNode(n)}: its ${what} output is not supported in training graphs`);
}

/** The replacement of each output that something reads (the others go with the node). */
function usedReplacements(n: Node, reps: readonly (Value | null)[]): (Value | null)[] {
  return n.outputs.map((o, i) => (isUsed(o) ? (reps[i] ?? null) : null));
}

/** Dim `i` of `x` as a 1-D int64 of one element (the Emitter's Shape with start / end). */
function dim(b: Builder, x: Value, i: number): Value {
  return new Emitter(b).dim(x, i);
}

/** The size of axis `i` of `x` as an int64 scalar (a Range bound). */
function size(b: Builder, x: Value, i: number): Value {
  return b.op('Squeeze', [dim(b, x, i), b.ints([0])]);
}

function int64(b: Builder, v: number): Value {
  return b.constant(BigInt64Array.from([BigInt(v)]), []);
}

/**
 * The positions of the S queries after a past of P (the sequence length of `past`, 0
 * without one): P + i as [S] (rotary reads them) and as rows [S, 1] of a mask.
 */
function queryPositions(b: Builder, past: Value | null, S: Value): { positions: Value; rows: Value } {
  const P = past ? size(b, past, 2) : int64(b, 0);
  const positions = b.op('Range', [P, b.op('Add', [P, S]), int64(b, 1)], {}, { name: 'positions' });
  return { positions, rows: b.op('Unsqueeze', [positions, b.ints([1])]) };
}

/** The positions of the L keys as columns [1, L] of a mask. */
function keyPositions(b: Builder, L: Value): Value {
  return b.op('Unsqueeze', [b.op('Range', [int64(b, 0), L, int64(b, 1)]), b.ints([0])]);
}

/** `scores` where `visible`, the lowest float (of `like`'s type) elsewhere. */
function maskScores(b: Builder, visible: Value, scores: Value, like: Value, name: string): Value {
  return b.op('Where', [visible, scores, b.op('CastLike', [b.scalar(LOWEST), like])], {}, { name });
}

/** [B, Hkv, L, d] → [B, Hq, L, d]: each kv head serves Hq / Hkv query heads (repeat_kv); nothing when Hkv = Hq. */
function repeatKv(b: Builder, x: Value, Q: Value, name: string): Value {
  const groups = b.op('Div', [dim(b, Q, 1), dim(b, x, 1)]);
  const wide = b.op('Concat', [dim(b, x, 0), dim(b, x, 1), groups, dim(b, x, 2), dim(b, x, 3)], { axis: 0 });
  const expanded = b.op('Expand', [b.op('Unsqueeze', [x, b.ints([2])]), wide]);
  return b.op('Reshape', [expanded, b.op('Concat', [dim(b, x, 0), dim(b, Q, 1), dim(b, x, 2), dim(b, x, 3)], { axis: 0 })], {}, { name });
}

/** (Q·Kᵀ)·scale, [B, H, S, L]; scale 0: 1/√d. `like` gives the float type. */
function scaledScores(b: Builder, Q: Value, K: Value, like: Value, scale: number): Value {
  const s = scale !== 0 ? b.scalar(scale) : b.op('Div', [b.scalar(1), b.op('Sqrt', [b.op('Cast', [dim(b, Q, 3)], { to: DataType.FLOAT })])]);
  return b.op('Mul', [b.op('MatMul', [Q, b.op('Transpose', [K], { perm: [0, 1, 3, 2] })]), b.op('CastLike', [s, like])], {}, { name: 'scores' });
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
      refuseUsedOutput(n, 3, 'qk_matmul_output');
      if (n.input(6)) throw new UserInputError(`${where}: nonpad_kv_seqlen is not supported in training graphs`);
      b.prefix = `${n.name || 'Attention'}/`;
      const [q, k, v] = [m.value('q'), m.value('k'), m.value('v')];
      const rank = rankOf(q) ?? rankOf(k) ?? rankOf(v);
      if (rank !== 3 && rank !== 4) throw new UserInputError(`${where}: cannot tell whether Q, K and V are 3-D or 4-D (rank ${rank ?? 'unknown'})`);
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
      K = repeatKv(b, K, Q, 'k_repeated');
      V = repeatKv(b, V, Q, 'v_repeated');
      const given = n.getFloat('scale', 0);
      let scores = scaledScores(b, Q, K, q, given);
      const mask = n.input(3);
      if (mask) scores = isBoolean(mask) ? maskScores(b, mask, scores, q, 'masked') : b.op('Add', [scores, mask], {}, { name: 'masked' });
      if (n.getInt('is_causal', 0) === 1) {
        // key j is visible to query i when j ≤ P + i (P: the past length, 0 without a cache)
        const { rows } = queryPositions(b, pastK, size(b, scores, 2));
        scores = maskScores(b, b.op('LessOrEqual', [keyPositions(b, size(b, scores, 3)), rows]), scores, q, 'causal');
      }
      const probs = b.op('Softmax', [scores], { axis: -1 });
      let y = b.op('MatMul', [probs, V]);
      if (three) y = b.op('Reshape', [b.op('Transpose', [y], { perm: [0, 2, 1, 3] }), b.ints([0, 0, -1])], {}, { name: 'y' });
      const reps: (Value | null)[] = [y, presentK, presentV];
      return usedReplacements(n, reps);
    },
  });
}

/** com.microsoft.GroupQueryAttention → standard ops (see the header). */
function gqaRule(): Rule {
  return defineRule({
    name: TRAIN_ATTENTION_RULE + '-gqa',
    keepNames: true,
    pattern: (op) => op.GroupQueryAttention(op.var('q'), { domain: 'com.microsoft', extraInputs: true }),
    rewrite(m, b) {
      const n = m.root;
      const where = describeNode(n);
      for (const a of ['softcap', 'smooth_softmax']) if (n.attributes.has(a) && Number(n.attribute(a)!.value) !== 0) throw new UserInputError(`${where}: ${a} is not supported in training graphs`);
      for (const [i, what] of [[9, 'position_ids'], [10, 'attention_bias'], [11, 'head_sink']] as const) if (n.input(i)) throw new UserInputError(`${where}: its ${what} input is not supported in training graphs`);
      refuseUsedOutput(n, 3, 'output_qk');
      const hq = n.getInt('num_heads');
      const hkv = n.getInt('kv_num_heads');
      b.prefix = `${n.name || 'GroupQueryAttention'}/`;
      const query = m.value('q');
      let [q, k, v] = [query, n.input(1), n.input(2)];
      if (!k || !v) {
        // one packed [B, S, (Hq + 2·Hkv)·d] query
        const d = b.op('Div', [dim(b, query, 2), b.ints([hq + 2 * hkv])]);
        const cut = (from: number, to: number, name: string): Value =>
          b.op('Slice', [query, b.op('Mul', [d, b.ints([from])]), b.op('Mul', [d, b.ints([to])]), b.ints([2])], {}, { name });
        [q, k, v] = [cut(0, hq, 'q_packed'), cut(hq, hq + hkv, 'k_packed'), cut(hq + hkv, hq + 2 * hkv, 'v_packed')];
      }
      const heads = (x: Value, h: number, name: string): Value => b.op('Transpose', [b.op('Reshape', [x, b.ints([0, 0, h, -1])])], { perm: [0, 2, 1, 3] }, { name });
      let Q = heads(q, hq, 'q_heads');
      let K = heads(k, hkv, 'k_heads');
      const V0 = heads(v, hkv, 'v_heads');
      const pastK = n.input(3);
      const pastV = n.input(4);
      // query i sits at position P + i (P the past length, 0 without a cache)
      const { positions, rows } = queryPositions(b, pastK, size(b, Q, 2));
      if (n.getInt('do_rotary', 0) === 1) {
        const cosCache = n.input(7);
        const sinCache = n.input(8);
        if (!cosCache || !sinCache) throw new UserInputError(`${where}: do_rotary=1 needs the cos_cache and sin_cache inputs`);
        const interleaved = n.getInt('rotary_interleaved', 0) === 1;
        const cos = b.op('Gather', [cosCache, positions], { axis: 0 }, { name: 'cos' });
        const sin = b.op('Gather', [sinCache, positions], { axis: 0 }, { name: 'sin' });
        Q = rotate(b, Q, cos, sin, interleaved, 'q_rotated');
        K = rotate(b, K, cos, sin, interleaved, 'k_rotated');
      }
      const presentK = pastK ? b.op('Concat', [pastK, K], { axis: 2 }, { name: 'present_key' }) : K;
      const presentV = pastV ? b.op('Concat', [pastV, V0], { axis: 2 }, { name: 'present_value' }) : V0;
      let scores = scaledScores(b, Q, repeatKv(b, presentK, Q, 'k_repeated'), query, n.getFloat('scale', 0));
      // key j is visible to query i when j ≤ P + i, j < seqlens_k + 1 (its row's valid keys), and within the local window
      const cols = keyPositions(b, size(b, presentK, 2));
      let visible = b.op('LessOrEqual', [cols, rows]);
      const seqlens = n.input(5);
      if (seqlens) {
        const valid = b.op('Less', [cols, b.op('Unsqueeze', [b.op('Add', [b.op('Cast', [seqlens], { to: DataType.INT64 }), int64(b, 1)]), b.ints([1])])]); // [B, L]
        visible = b.op('And', [b.op('Unsqueeze', [visible, b.ints([0])]), b.op('Unsqueeze', [valid, b.ints([1])])]); // [B, S, L]
        visible = b.op('Unsqueeze', [visible, b.ints([1])]); // [B, 1, S, L]
      }
      const window = n.getInt('local_window_size', -1);
      if (window >= 0) visible = b.op('And', [visible, b.op('Less', [b.op('Sub', [rows, cols]), int64(b, window)])]);
      scores = maskScores(b, visible, scores, query, 'masked');
      const probs = b.op('Softmax', [scores], { axis: -1 });
      const y = b.op('Reshape', [b.op('Transpose', [b.op('MatMul', [probs, repeatKv(b, presentV, Q, 'v_repeated')])], { perm: [0, 2, 1, 3] }), b.ints([0, 0, -1])], {}, { name: 'y' });
      const reps: (Value | null)[] = [y, presentK, presentV];
      return usedReplacements(n, reps);
    },
  });
}

/**
 * Rotary position embedding of x [B, H, S, d] with cos / sin [S, r/2] (r ≤ d: the first r
 * channels rotate, the rest pass): rotate-half pairs (c, c + r/2), or interleaved (2c, 2c + 1).
 */
function rotate(b: Builder, x: Value, cos: Value, sin: Value, interleaved: boolean, name: string): Value {
  const half = dim(b, cos, 1);
  const r = b.op('Mul', [half, b.ints([2])]);
  const big = b.ints([2 ** 62]);
  const xr = b.op('Slice', [x, b.ints([0]), r, b.ints([-1])]);
  const rest = b.op('Slice', [x, r, big, b.ints([-1])]);
  let out: Value;
  if (!interleaved) {
    const x1 = b.op('Slice', [xr, b.ints([0]), half, b.ints([-1])]);
    const x2 = b.op('Slice', [xr, half, big, b.ints([-1])]);
    out = b.op('Concat', [b.op('Sub', [b.op('Mul', [x1, cos]), b.op('Mul', [x2, sin])]), b.op('Add', [b.op('Mul', [x2, cos]), b.op('Mul', [x1, sin])])], { axis: -1 });
  } else {
    const pairs = b.op('Reshape', [xr, b.op('Concat', [dim(b, xr, 0), dim(b, xr, 1), dim(b, xr, 2), half, b.ints([2])], { axis: 0 })]);
    const even = b.op('Squeeze', [b.op('Slice', [pairs, b.ints([0]), b.ints([1]), b.ints([-1])]), b.ints([-1])]);
    const odd = b.op('Squeeze', [b.op('Slice', [pairs, b.ints([1]), b.ints([2]), b.ints([-1])]), b.ints([-1])]);
    const e2 = b.op('Sub', [b.op('Mul', [even, cos]), b.op('Mul', [odd, sin])]);
    const o2 = b.op('Add', [b.op('Mul', [odd, cos]), b.op('Mul', [even, sin])]);
    const stacked = b.op('Concat', [b.op('Unsqueeze', [e2, b.ints([-1])]), b.op('Unsqueeze', [o2, b.ints([-1])])], { axis: -1 });
    out = b.op('Reshape', [stacked, b.op('Shape', [xr])]);
  }
  return b.op('Concat', [out, rest], { axis: -1 }, { name });
}

/** com.microsoft.MultiHeadAttention → standard ops (see the header). */
function mhaRule(rankOf: (v: Value) => number | undefined, shapesOf: (v: Value) => readonly SymDim[] | undefined): Rule {
  return defineRule({
    name: TRAIN_ATTENTION_RULE + '-mha',
    keepNames: true,
    pattern: (op) => op.MultiHeadAttention(op.var('q'), { domain: 'com.microsoft', extraInputs: true }),
    rewrite(m, b) {
      const n = m.root;
      const where = describeNode(n);
      const [k, v] = [n.input(1), n.input(2)];
      if (!k || !v) throw new UserInputError(`${where}: packed QKV / KV inputs are not supported in training graphs`);
      for (const [i, what] of [[8, 'past_sequence_length'], [9, 'cache_indirection']] as const) if (n.input(i)) throw new UserInputError(`${where}: its ${what} input is not supported in training graphs`);
      refuseUsedOutput(n, 3, 'qk');
      const h = n.getInt('num_heads');
      b.prefix = `${n.name || 'MultiHeadAttention'}/`;
      let q = m.value('q');
      const query = q;
      let [key, value] = [k, v];
      const bias = n.input(3);
      const bshKv = rankOf(k) !== 4;
      // (onnxruntime's causal mask over BNSH caches follows neither the past length nor the
      // key length: not expressed, refused)
      if (!bshKv && n.getInt('unidirectional', 0) === 1) throw new UserInputError(`${where}: unidirectional over 4-D (BNSH) keys and values is not supported in training graphs`);
      // (likewise over keys of another length than the queries: causal self-attention only)
      const [qs, ks] = [shapesOf(query)?.[1], shapesOf(k)?.[1]];
      if (bshKv && n.getInt('unidirectional', 0) === 1 && qs && ks && !qs.equals(ks)) {
        throw new UserInputError(`${where}: unidirectional with keys of another length than the queries (cross-attention) is not supported in training graphs`);
      }
      if (bias) {
        // [Dq | Dk | Dv]: the op adds each part to its input (k / v only when they are [B, L, D])
        const Dq = dim(b, q, 2);
        const part = (from: Value, to: Value, name: string): Value => b.op('Slice', [bias, from, to, b.ints([0])], {}, { name });
        const Dk = bshKv ? dim(b, k, 2) : b.op('Mul', [dim(b, k, 1), dim(b, k, 3)]);
        q = b.op('Add', [q, part(b.ints([0]), Dq, 'q_bias')]);
        if (bshKv) {
          key = b.op('Add', [k, part(Dq, b.op('Add', [Dq, Dk]), 'k_bias')]);
          value = b.op('Add', [v, part(b.op('Add', [Dq, Dk]), b.ints([2 ** 62]), 'v_bias')]);
        }
      }
      const heads = (x: Value, name: string): Value => b.op('Transpose', [b.op('Reshape', [x, b.ints([0, 0, h, -1])])], { perm: [0, 2, 1, 3] }, { name });
      const Q = heads(q, 'q_heads');
      let K = bshKv ? heads(key, 'k_heads') : key;
      let V = bshKv ? heads(value, 'v_heads') : value;
      const [pastK, pastV] = [n.input(6), n.input(7)];
      if (pastK) K = b.op('Concat', [pastK, K], { axis: 2 }, { name: 'present_key' });
      if (pastV) V = b.op('Concat', [pastV, V], { axis: 2 }, { name: 'present_value' });
      let scores = scaledScores(b, Q, K, query, n.getFloat('scale', 0));
      const filter = (): Value => b.op('CastLike', [b.scalar(n.getFloat('mask_filter_value', -10000)), query]);
      const cols = keyPositions(b, size(b, K, 2));
      const padding = n.input(4);
      if (padding) {
        // [B, L] (1 = keep) or [B] key lengths → [B, 1, 1, L]; the other forms ([3B + 2], [B, S, L]) are refused
        const pr = rankOf(padding);
        const pd = shapesOf(padding)?.[0];
        const qb = shapesOf(query)?.[0];
        if (pr !== 1 && pr !== 2) throw new UserInputError(`${where}: key_padding_mask of rank ${pr ?? 'unknown'} is not supported in training graphs ([B, L] or key lengths [B])`);
        if (pr === 1 && !(pd && qb && pd.equals(qb))) throw new UserInputError(`${where}: a 1-D key_padding_mask must be the key lengths [B] (its size is not the batch size; [3B + 2] is not supported in training graphs)`);
        const keep = pr === 1
          ? b.op('Less', [cols, b.op('Unsqueeze', [b.op('Cast', [padding], { to: DataType.INT64 }), b.ints([1])])])
          : b.op('Cast', [padding], { to: DataType.BOOL });
        scores = b.op('Where', [b.op('Unsqueeze', [keep, b.ints([1, 2])]), scores, b.op('Add', [scores, filter()])], {}, { name: 'padded' });
      }
      const attentionBias = n.input(5);
      if (attentionBias) scores = b.op('Add', [scores, attentionBias], {}, { name: 'biased' });
      if (n.getInt('unidirectional', 0) === 1) {
        // query i sees keys j ≤ P + i, P the past_key length (0 without one); hidden keys get the lowest float, as onnxruntime does
        const { rows } = queryPositions(b, pastK, size(b, Q, 2));
        scores = maskScores(b, b.op('LessOrEqual', [cols, rows]), scores, query, 'causal');
      }
      const probs = b.op('Softmax', [scores], { axis: -1 });
      const y = b.op('Reshape', [b.op('Transpose', [b.op('MatMul', [probs, V])], { perm: [0, 2, 1, 3] }), b.ints([0, 0, -1])], {}, { name: 'y' });
      const reps: (Value | null)[] = [y, K, V];
      return usedReplacements(n, reps);
    },
  });
}


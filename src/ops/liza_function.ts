/**
 * The ONNX function body of ai.tptt.LiZA: the chunked parallel (WY / UT) form made of
 * standard ops only (opset >= 17, no Scan, Loop or If), so that it runs on every
 * onnxruntime execution provider and can be differentiated for training. It translates
 * src/ops/reference/liza_chunked.ts op for op; see that file for the derivation and
 * docs/ops.md for the design.
 *
 * Shapes: after the shared preparation (liza_graph.ts) the expanded sequence of R rows is
 * zero-padded to N*C rows (N = ceil(R / C) is dynamic, C = chunk_size is static) and
 * reshaped to chunks [B, Hkv, N, C, d]. Everything inside a chunk is batched over all
 * chunks at once:
 *   A   = tril(diag(beta) K K^T, -1)                       (gated: pairwise decays)
 *   T   = (I + A)^-1 by blocked doubling (MatMul only, log2 C levels)
 *   W   = T diag(beta) K,  U = T diag(beta) V
 * Each chunk is then an affine map of the state, S_end = M S_start + N_c with
 *   M = I - K^T W,  N_c = K^T U                             (gated: decayed variants)
 * and the chunk states come from a work-efficient (Blelloch) parallel prefix over the
 * chunk axis: an up-sweep composing neighbouring maps pairwise (lengths halve, padded to
 * even with identities) and a down-sweep handing each pair's prefix state to its children
 * (see emitChunkPrefix). The number of levels must be static, so it is
 * ceil(log2(maxChunks + 1)) with maxChunks = ceil(max_seq_len * n / C) (S_0 is one more
 * map in front); levels above log2(N) handle one map and cost ~one d x d composition
 * each. A call with more chunks returns NaN rather than a wrong state. Then
 *   U' = U - W S_start,  O = Q S_start + tril(Q K^T) U'   (gated: decayed variants)
 * linear needs no prefix: S_start = S_0 + exclusive CumSum of K^T V.
 */
import { Builder } from '../ir/builder.js';
import { IRFunction } from '../ir/function.js';
import type { Graph } from '../ir/graph.js';
import type { Model } from '../ir/model.js';
import type { Node } from '../ir/node.js';
import { UserInputError } from '../ir/errors.js';
import { Value } from '../ir/value.js';
import { Tensor } from '../ir/tensor.js';
import { END, Emitter } from './emit.js';
import {
  type CausalResult,
  type LizaGraphInputs,
  type LizaGraphOutputs,
  emitInitialState,
  emitLiza,
  emitPrepare,
} from './liza_graph.js';
import {
  LIZA_SCHEMA,
  type LizaInputPresence,
  type LizaOpAttributes,
  type LizaOpConfig,
  MIN_ONNX_OPSET,
  TPTT_DOMAIN,
  TPTT_OPSET_VERSION,
  lizaNodeAttributes,
  maxChunks,
  resolveLizaAttributes,
  validateLizaInputs,
} from './schema.js';

// ---------------------------------------------------------------------------------------
// (I + A)^-1 for strictly lower triangular A, by blocked doubling
// ---------------------------------------------------------------------------------------

/**
 * (I + A)^-1 for A [...lead, C, C] strictly lower triangular (rank = lead + 2), MatMul
 * only. A is zero-padded to Np = 2^m >= C. Starting from the 1x1 diagonal blocks of I,
 * level s merges pairs of adjacent s x s diagonal blocks:
 *   [[L11, 0], [L21, L22]]^-1 = [[X11, 0], [-X22 L21 X11, X22]]
 * Only the diagonal blocks are stored ([..., Np/s, s, s]); the L21 blocks of all pairs of
 * a level are read from A with one Gather of constant flat indices.
 * Cost ~Np^3/12 multiply-adds per matrix, accuracy like forward substitution.
 */
export function emitInvertUnitLower(e: Emitter, A: Value, C: number, lead: number): Value {
  let Np = 1;
  while (Np < C) Np *= 2;
  const zeros = (k: number): number[] => Array.from({ length: k }, () => 0);
  if (Np === 1) return e.op('Expand', [e.floats([1], [1, 1], 'one'), e.shape(A)]);
  const Ap = Np === C ? A : e.pad(A, [...zeros(lead + 2), ...zeros(lead), Np - C, Np - C]);
  const flat = e.reshape(Ap, [...zeros(lead), Np * Np]);
  const gatherL21 = (s: number): Value => {
    const nb = Np / (2 * s);
    const idx: number[] = [];
    for (let p = 0; p < nb; p++) {
      for (let i = 0; i < s; i++) for (let j = 0; j < s; j++) idx.push((p * 2 * s + s + i) * Np + p * 2 * s + j);
    }
    return e.op('Gather', [flat, e.intTensor(idx, [nb, s, s], 'l21_index')], { axis: lead });
  };
  // level s = 1: blocks [[1, 0], [-a, 1]]
  const bottom = e.pad(e.neg(gatherL21(1)), [...zeros(lead + 3), ...zeros(lead + 2), 1], 1); // [..., Np/2, 1, 2]
  const top = e.op('Expand', [e.floats([1, 0], [1, 2], 'row10'), e.shape(bottom)]);
  let Xd = e.concat([top, bottom], -2); // [..., Np/2, 2, 2]
  for (let s = 2; s < Np; s *= 2) {
    const nb = Np / (2 * s);
    const pairs = e.reshape(Xd, [...zeros(lead), nb, 2, s, s]);
    const X11 = e.reshape(e.slice(pairs, lead + 1, 0, 1), [...zeros(lead), nb, s, s]);
    const X22 = e.reshape(e.slice(pairs, lead + 1, 1, 2), [...zeros(lead), nb, s, s]);
    const X21 = e.neg(e.matmul(e.matmul(X22, gatherL21(s)), X11));
    const upper = e.pad(X11, [...zeros(lead + 3), ...zeros(lead + 2), s]);
    const lower = e.concat([X21, X22], -1);
    Xd = e.concat([upper, lower], -2); // [..., nb, 2s, 2s]
  }
  const X = e.reshape(Xd, [...zeros(lead), Np, Np]);
  return Np === C ? X : e.slice(e.slice(X, -2, 0, C), -1, 0, C);
}

// ---------------------------------------------------------------------------------------
// the causal core
// ---------------------------------------------------------------------------------------

/** Transposes the last two axes of a rank-`rank` tensor. */
function tr(e: Emitter, x: Value, rank: number): Value {
  const perm = Array.from({ length: rank }, (_, i) => i);
  perm[rank - 2] = rank - 1;
  perm[rank - 1] = rank - 2;
  return e.transpose(x, perm);
}

/** Full-rank pads vector that pads `axis` of a rank-`rank` tensor at its end by `amount` (1-D int64). */
function padEndPads(e: Emitter, rank: number, axis: number, amount: Value): Value {
  const before = Array.from({ length: rank + axis }, () => 0);
  const after = Array.from({ length: rank - axis - 1 }, () => 0);
  return e.concat([e.ints(before), amount, ...(after.length ? [e.ints(after)] : [])], 0);
}

/** ceil(log2(bound)): the levels of the chunk prefix (0 when bound = 1). */
function levelsFor(bound: number): number {
  let k = 0;
  while (2 ** k < bound) k++;
  return k;
}

/**
 * Inclusive prefix over the chunk axis (2) of affine chunk maps X = [M' | N]
 * ([B, Hkv, N, d, 2d], map S -> (I + M') S + N, identity = zeros). The caller puts the
 * constant map [0 | S_0] first, so the prefix applied to the zero state is the state.
 * Returns the state after each map, [B, Hkv, N, d, d].
 *
 * Work-efficient (Blelloch) with `levels` static levels and dynamic lengths:
 *  - up-sweep: pad the current sequence of maps to even length with an identity, pair
 *    neighbours (a, b) and compose b after a: X_ab = X_a + M'_b X_a + X_b (one MatMul);
 *    the lengths halve, so the work is ~N compositions; keep each level's a's;
 *  - down-sweep, from the top (one map = everything): the right child of a pair has the
 *    pair's prefix state, the left child applies its own map a to the state before the
 *    pair (the previous pair's prefix state, zero for the first): S_left = S + M'_a S + N_a;
 *    interleave, drop the padding; ~N more state updates (d x d).
 * With N > 2^levels the top holds more than one map and the result is wrong: callers
 * turn that case into NaN.
 */
function emitChunkPrefix(e: Emitter, X: Value, d: number, levels: number): Value {
  const Mof = (x: Value): Value => e.slice(x, -1, 0, d);
  const Nof = (x: Value): Value => e.slice(x, -1, d, 2 * d);
  const lens: Value[] = [];
  const lefts: Value[] = [];
  let L = X;
  for (let j = 0; j < levels; j++) {
    const len = e.dim(L, 2);
    lens.push(len);
    const even = e.padDyn(L, padEndPads(e, 5, 2, e.op('Mod', [len, e.ints([2])])));
    const pairs = e.reshape(even, [0, 0, -1, 2, d, 2 * d]);
    const a = e.squeeze(e.slice(pairs, 3, 0, 1), [3]);
    const b = e.squeeze(e.slice(pairs, 3, 1, 2), [3]);
    lefts.push(a);
    L = e.add(e.add(a, e.matmul(Mof(b), a)), b);
  }
  let S = Nof(L);
  for (let j = levels - 1; j >= 0; j--) {
    const a = lefts[j]!;
    const before = e.pad(e.slice(S, 2, 0, -1), [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]); // state before each pair
    const left = e.add(e.add(before, e.matmul(Mof(a), before)), Nof(a));
    const both = e.reshape(e.concat([e.unsqueeze(left, [3]), e.unsqueeze(S, [3])], 3), [0, 0, -1, d, d]);
    S = e.sliceDyn(both, 2, e.ints([0]), lens[j]!);
  }
  return S;
}

export function chunkedCore(e: Emitter, cfg: LizaOpConfig, inputs: LizaGraphInputs): CausalResult {
  const { headDim: d, chunkSize: C, gated } = cfg;
  const p = emitPrepare(e, cfg, inputs, 'head'); // K [B, Hkv, R, d], Q [B, Hkv, G, R, d]
  const S0 = emitInitialState(e, cfg, inputs); // [B, Hkv, d, d]

  // pad R rows to N*C and cut into chunks (a Reshape in this layout)
  const R = e.dim(p.K, 2);
  const Cc = e.ints([C]);
  const padAmount = e.op('Mod', [e.sub(Cc, e.op('Mod', [R, Cc])), Cc]);
  const pads4 = padEndPads(e, 4, 2, padAmount);
  const chunks4 = (x: Value, last: number): Value => e.reshape(e.padDyn(x, pads4), [0, 0, -1, C, last]); // [B, Hkv, N, C, last]
  const Kc = chunks4(p.K, d);
  const Vc = chunks4(p.V, d);
  const Qc = e.reshape(e.padDyn(p.Q, padEndPads(e, 5, 3, padAmount)), [0, 0, 0, -1, C, d]); // [B, Hkv, G, N, C, d]
  const Kt = tr(e, Kc, 5); // [B, Hkv, N, d, C]
  const S0u = e.unsqueeze(S0, [2]); // [B, Hkv, 1, d, d]

  let Sstart: Value; // [B, Hkv, N, d, d]
  let state: Value; // [B, Hkv, d, d]
  let O: Value; // [B, Hkv, G, N, C, d]

  if (cfg.rule === 'linear') {
    const Nc = e.matmul(Kt, Vc);
    Sstart = e.add(S0u, e.op('CumSum', [Nc, e.ints([2])], { exclusive: 1 }));
    state = e.add(S0, e.reduceSum(Nc, [2], false));
    const QK = e.mul(e.matmul(Qc, e.unsqueeze(Kt, [2])), e.tril(C));
    O = e.add(e.matmul(Qc, e.unsqueeze(Sstart, [2])), e.matmul(QK, e.unsqueeze(Vc, [2])));
  } else {
    const betaC = chunks4(p.beta!, 1); // [B, Hkv, N, C, 1]
    let A: Value;
    let Kw: Value; // the rows W is built from
    let Kd: Value; // the keys that write into the end-of-chunk state
    let decayStart: Value | null = null; // exp(b) [B, Hkv, N, C, d]
    let KPt: Value | null = null; // keys times pairwise decays [B, Hkv, N, C(i), d, C(j)]
    let diagM: Value | null = null; // diag(exp(b_last)) - I
    if (!gated) {
      A = e.mul(e.mul(e.matmul(Kc, Kt), betaC), e.tril(C, -1));
      Kw = Kc;
      Kd = Kc;
    } else {
      const glogC = chunks4(p.glog!, d);
      const b = e.op('CumSum', [glogC, e.ints([3])]); // cumulative log decay within the chunk
      // pairwise decays in the layout [.., C(i), d, C(j)]: exp(min(b_i - b_j, 0)) [j <= i]
      const diff = e.sub(e.unsqueeze(b, [5]), e.unsqueeze(tr(e, b, 5), [3]));
      const Pt = e.mul(e.exp(e.min(diff, e.f(0))), e.floats(lowerMask(C), [C, 1, C], 'tril_c'));
      KPt = e.mul(e.unsqueeze(Kt, [3]), Pt); // k_jc P_ijc: [B, Hkv, N, C(i), d, C(j)]
      const gram = e.squeeze(e.matmul(e.unsqueeze(Kc, [4]), KPt), [4]); // sum_c k_ic k_jc P_ijc
      A = e.mul(e.mul(gram, betaC), e.tril(C, -1));
      decayStart = e.exp(b);
      const bLast = e.slice(b, 3, -1, END); // [.., 1, d]
      Kw = e.mul(Kc, decayStart);
      Kd = e.mul(Kc, e.exp(e.sub(bLast, b)));
      diagM = e.mul(tr(e, e.sub(e.exp(bLast), e.f(1)), 5), e.eye(d)); // [.., d, d]
    }
    const Tinv = emitInvertUnitLower(e, A, C, 3);
    const WU = e.matmul(Tinv, e.mul(e.concat([Kw, Vc], -1), betaC)); // [B, Hkv, N, C, 2d] = [W | U]
    const W = e.slice(WU, -1, 0, d);
    const U = e.slice(WU, -1, d, 2 * d);
    // chunk map S -> (I + M') S + N as X = [M' | N] = [diag - Kd^T W | Kd^T U] : [B, Hkv, N, d, 2d]
    const KdTWU = e.matmul(tr(e, Kd, 5), WU);
    const signed = e.mul(KdTWU, e.floats(signRow(d), [1, 2 * d], 'neg_pos')); // [-Kd^T W | Kd^T U]
    const X = diagM ? e.add(signed, e.pad(diagM, [0, 0, 0, 0, 0, 0, 0, 0, 0, d])) : signed;
    // S_0 enters as a map of its own in front of chunk 0: [0 | S_0] (constant S_0), so the
    // prefix applied to the zero state gives the states before / after every chunk
    const X0 = e.pad(S0u, [0, 0, 0, 0, d, 0, 0, 0, 0, 0]); // [B, Hkv, 1, d, 2d]
    const bound = maxChunks(cfg);
    let Sall = emitChunkPrefix(e, e.concat([X0, X], 2), d, levelsFor(bound + 1)); // [B, Hkv, N+1, d, d]
    // a call longer than the unrolled prefix covers: NaN, never a silently wrong state
    // (guarding the states poisons O as well: Q S_start is NaN even where Q = 0)
    const tooLong = e.op('Greater', [e.dim(Kc, 2), e.ints([bound])]);
    Sall = e.op('Where', [tooLong, e.f(Number.NaN), Sall]);
    Sstart = e.slice(Sall, 2, 0, -1);
    state = e.squeeze(e.slice(Sall, 2, -1, END), [2]);

    const Ss = e.unsqueeze(Sstart, [2]); // [B, Hkv, 1, N, d, d]
    const Up = e.unsqueeze(e.sub(U, e.matmul(W, Sstart)), [2]); // [B, Hkv, 1, N, C, d]
    if (!gated) {
      const QK = e.mul(e.matmul(Qc, e.unsqueeze(Kt, [2])), e.tril(C));
      O = e.add(e.matmul(Qc, Ss), e.matmul(QK, Up));
    } else {
      const Qd = e.mul(Qc, e.unsqueeze(decayStart!, [2]));
      const QKP = e.squeeze(e.matmul(e.unsqueeze(Qc, [5]), e.unsqueeze(KPt!, [2])), [5]); // [B, Hkv, G, N, C, C]
      O = e.add(e.matmul(Qd, Ss), e.matmul(QKP, Up));
    }
  }

  // [B, Hkv, G, N, C, d] -> [B, Hkv, G, R, d] -> rows read -> [B, T, Hq*d]
  let rows = e.sliceDyn(e.reshape(O, [0, 0, 0, -1, d]), 3, e.ints([0]), R);
  if (p.reps > 1) rows = e.reshape(e.slice(e.reshape(rows, [0, 0, 0, -1, p.reps, d]), 4, p.reps - 1, p.reps), [0, 0, 0, -1, d]);
  const o = e.reshape(e.transpose(rows, [0, 3, 1, 2, 4]), [0, 0, -1]);
  return { o, state, window: p.presentWindow };
}

/** [-1 x d, +1 x d]: turns [Kd^T W | Kd^T U] into [-Kd^T W | Kd^T U]. */
function signRow(d: number): number[] {
  return [...Array.from({ length: d }, () => -1), ...Array.from({ length: d }, () => 1)];
}

function lowerMask(C: number): Float32Array {
  const m = new Float32Array(C * C);
  for (let i = 0; i < C; i++) for (let j = 0; j <= i; j++) m[i * C + j] = 1;
  return m;
}

/** Emits the chunked LiZA inline (no function) at the builder's insertion point. */
export function emitLizaChunked(b: Builder, attrs: LizaOpAttributes, inputs: LizaGraphInputs): LizaGraphOutputs {
  const cfg = resolveLizaAttributes(attrs);
  validateLizaInputs(cfg, presenceOf(inputs));
  return emitLiza(new Emitter(b), cfg, inputs, chunkedCore);
}

// ---------------------------------------------------------------------------------------
// the model-local function and its call
// ---------------------------------------------------------------------------------------

export function presenceOf(inputs: { pastState?: unknown; pastWindow?: unknown; mask?: unknown }): LizaInputPresence {
  return { pastState: !!inputs.pastState, pastWindow: !!inputs.pastWindow, mask: !!inputs.mask };
}

/**
 * The overload name of the function specialised to a configuration: readable, and
 * distinct for every distinct body (onnxruntime 1.30 resolves (domain, name, overload)).
 */
export function lizaOverload(cfg: LizaOpConfig, presence: LizaInputPresence): string {
  const flags = `${presence.pastState ? 'S' : ''}${presence.pastWindow ? 'W' : ''}${presence.mask ? 'M' : ''}`;
  return [
    `q${cfg.qNumHeads}`,
    `kv${cfg.kvNumHeads}`,
    `d${cfg.headDim}`,
    cfg.rule,
    `n${cfg.order}`,
    `c${cfg.chunkSize}`,
    cfg.causal ? 'causal' : 'bidir',
    `max${cfg.maxSeqLen}`,
    flags || 'none',
  ].join('_');
}

export const LIZA_INPUT_NAMES = LIZA_SCHEMA.inputs.map((i) => i.name);

/** The placeholder a LiZA call passes for an absent optional input. */
export const ABSENT_INPUT = 'tptt.absent';

function absentInput(graph: Graph): Value {
  const root = graph.root;
  return root.initializers.get(ABSENT_INPUT) ?? root.addInitializer(Tensor.fromArray(new Float32Array(0), [0]), ABSENT_INPUT);
}

/** Input i of a LiZA call, or null when it is absent (omitted, or the placeholder). */
export function lizaInput(node: Node, i: number): Value | null {
  const v = node.input(i);
  return v && v.name !== ABSENT_INPUT ? v : null;
}
export const LIZA_OUTPUT_NAMES = LIZA_SCHEMA.outputs.map((o) => o.name);

/**
 * The ai.tptt.LiZA function specialised to `attrs` and to the optional inputs present.
 * Its formal inputs are always the six of the schema (xq, xk, xv, past_state,
 * past_window, mask); the body reads only those the overload was made for. `opset` is
 * the default-domain opset the body imports (the calling model's, >= 17).
 */
export function lizaFunction(attrs: LizaOpAttributes, presence: LizaInputPresence, opset = MIN_ONNX_OPSET): IRFunction {
  const cfg = resolveLizaAttributes(attrs);
  validateLizaInputs(cfg, presence);
  if (opset < MIN_ONNX_OPSET) {
    throw new UserInputError(`ai.tptt.LiZA: the function body needs default-domain opset >= ${MIN_ONNX_OPSET}, got ${opset}`);
  }
  const fn = new IRFunction(TPTT_DOMAIN, 'LiZA');
  fn.overload = lizaOverload(cfg, presence);
  fn.docString = `ai.tptt.LiZA, chunked parallel form (${fn.overload}); see titanize docs/ops.md`;
  fn.opsetImports.set('', opset);
  fn.attributes = LIZA_SCHEMA.attributes.map((a) => a.name);
  const body = fn.body;
  const formal = LIZA_INPUT_NAMES.map((name) => body.addInput(new Value(name)));
  const [xq, xk, xv, ps, pw, mask] = formal as [Value, Value, Value, Value, Value, Value];
  const e = new Emitter(new Builder(body));
  const out = emitLiza(
    e,
    cfg,
    { xq, xk, xv, pastState: presence.pastState ? ps : null, pastWindow: presence.pastWindow ? pw : null, mask: presence.mask ? mask : null },
    chunkedCore,
  );
  const y = e.op('Identity', [out.y]);
  const st = e.op('Identity', [out.presentState]);
  const win = e.op('Identity', [out.presentWindow]);
  body.setOutputs([y, st, win]);
  return fn;
}

export interface LizaNodeResult {
  node: Node;
  y: Value;
  presentState: Value;
  presentWindow: Value;
}

export interface AddLizaOptions {
  /** Insert before this node (default: append to the graph). */
  before?: Node;
  /** Node name prefix. */
  name?: string;
  /** Add the node through this builder (its insertion point, name prefix and provenance tag; `before` is then ignored), e.g. a rewrite rule's. */
  builder?: Builder;
}

function defaultOpset(model: Model): number {
  const v = model.opsetVersion('');
  if (v === undefined) throw new UserInputError('ai.tptt.LiZA: the model imports no default-domain opset');
  if (v < MIN_ONNX_OPSET) {
    throw new UserInputError(
      `ai.tptt.LiZA: the model imports default-domain opset ${v}; the LiZA function body needs >= ${MIN_ONNX_OPSET} (upgrade the model with a version converter first)`,
    );
  }
  return v;
}

/**
 * Adds a call of ai.tptt.LiZA to `graph` (the main graph of `model`, or a subgraph of
 * it), adding the specialised function to the model once (deduplicated by overload) and
 * the 'ai.tptt' opset import. Returns the node and its outputs.
 */
export function addLizaNode(model: Model, graph: Graph, attrs: LizaOpAttributes, inputs: LizaGraphInputs, options: AddLizaOptions = {}): LizaNodeResult {
  const cfg = resolveLizaAttributes(attrs);
  const presence = presenceOf(inputs);
  validateLizaInputs(cfg, presence);
  const opset = defaultOpset(model);
  model.requireOpset(TPTT_DOMAIN, TPTT_OPSET_VERSION);
  const overload = lizaOverload(cfg, presence);
  if (!model.findFunction(TPTT_DOMAIN, 'LiZA', overload)) model.addFunction(lizaFunction(attrs, presence, opset));
  const b = options.builder ?? new Builder(graph, { before: options.before, tag: 'ai.tptt.LiZA' });
  const ins: (Value | null)[] = [inputs.xq, inputs.xk, inputs.xv, inputs.pastState ?? null, inputs.pastWindow ?? null, inputs.mask ?? null];
  // an absent input is the typed placeholder, not '' or left out: onnx's function type
  // inference wants every declared input passed, with a type (the specialised body ignores it)
  for (let i = 3; i < ins.length; i++) if (ins[i] === null) ins[i] = absentInput(graph);
  const node = b.node('LiZA', ins, lizaNodeAttributes(cfg), { domain: TPTT_DOMAIN, outputs: 3, name: options.name ?? 'LiZA' });
  node.overload = overload;
  const [y, presentState, presentWindow] = node.outputs as [Value, Value, Value];
  return { node, y, presentState, presentWindow };
}

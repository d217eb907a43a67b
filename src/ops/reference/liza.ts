/**
 * Plain reference implementation of the ai.tptt `LiZA` operator (linear
 * attention memory), written to read like its definition: per-token loops,
 * float64 accumulation, float32 outputs by default.
 *
 * Layout
 *   xq [B,T,Hq*d], xk/xv [B,T,Hkv*d]; head h occupies channels h*d .. h*d+d-1.
 *   Query head i reads kv head floor(i / G), G = Hq / Hkv.
 *   past_state / present_state [B,Hkv,d,d], indexed [key, value].
 *   past_window / present_window [B,Hkv,w,2d]: raw xk row (first d) and raw xv
 *   row (last d) of head h for the last w tokens, oldest first, zero rows
 *   before the first token ever seen. w = windowSize(rule, order) = order + 1.
 *
 * Feature maps (per head)
 *   qh = L2norm(SiLU(xq_head)), kh = L2norm(SiLU(xk_head)), vh = xv_head / sqrt(d)
 *   L2norm(x) = x / sqrt(sum(x^2) + 1e-6)   (eps INSIDE the square root; this
 *   is smooth at 0 and maps a zero row to a zero row.)
 *
 * Gates (parameter free), per kv head h and channel c:
 *   z_t = mean(xk_{t-2}, xk_{t-1}, xk_t)         (raw rows; before the first
 *         token they come from past_window, else they are zero)
 *   f_t = sigmoid(z_t), beta_{t,h} = mean_c f_t, g_{t,h,c} = log f_t = logsigmoid(z_t)
 *   (g is computed as logsigmoid(z) = min(z,0) - log1p(exp(-|z|)), which equals
 *   log(sigmoid(z)) but never produces -Infinity.)
 *
 * Padding (mask[b,t] == 0; any non-zero value counts as a real token)
 *   - the padded token's raw xk and xv rows are replaced by zeros everywhere:
 *     in the causal gate average of later tokens, in present_window, and hence
 *     kh = vh = 0 for it (so its own delta step is a no-op if it is replayed
 *     by a later token of a *_product rule);
 *   - the padded token itself writes nothing: S_t = S_{t-1}. No decay (factor
 *     1) for gated rules and, for *_product rules, none of its n steps are run
 *     (not even the replays of earlier real tokens). This is our reading of
 *     "that token writes nothing"; it makes a right-padded row's final state
 *     equal the state after its last real token.
 *   - its query is NOT masked: y at a padded position is S_{t-1}^T qh_t,
 *     normalised like any other token (callers ignore it).
 *
 * Recurrence per (b, kv head h), S_0 = past_state or 0:
 *   linear:  S_t = S_{t-1} + kh_t vh_t^T
 *   delta:   S_t = S_{t-1} + beta_t kh_t (vh_t - S_{t-1}^T kh_t)^T
 *   delta_product (order n): for j = n-1 .. 0, u = t-j: one delta step with
 *            token u (u < 0: from past_window if given, else skipped).
 *   gated_*: S <- diag(exp(g_t)) S first (decay on the key axis), then the steps.
 *   readout: o_t = S_t^T qh_t for every query head of the group.
 *
 * Output: y_t = o_t / sqrt(mean(o_t^2) + 1e-6), mean over all Hq*d channels.
 * Bidirectional (causal = false): y = (norm(o_fwd) + reverse(norm(o_on_reversed)))/2,
 * no past inputs allowed; present_state and present_window come from the
 * forward pass.
 */

import {
  type FloatType,
  type NdArray,
  allocate,
  assertDims,
  reverseTime,
} from './tensor.js';

export type LizaRule = 'linear' | 'delta' | 'delta_product' | 'gated_delta' | 'gated_delta_product';

export const LIZA_RULES: readonly LizaRule[] = [
  'linear',
  'delta',
  'delta_product',
  'gated_delta',
  'gated_delta_product',
];

/** Attributes of the ai.tptt LiZA node (names as in the ONNX schema). */
export interface LizaAttributes {
  q_num_heads: number;
  kv_num_heads: number;
  head_dim: number;
  rule: LizaRule;
  /** n >= 1; n > 1 only for *_product rules. Default 1. */
  order?: number;
  /** Chunk length of the parallel form. Default 64. Never changes results. */
  chunk_size?: number;
  /** Default true. */
  causal?: boolean;
}

/** Inputs of the LiZA node (names as in the ONNX schema). */
export interface LizaInputs {
  xq: NdArray;
  xk: NdArray;
  xv: NdArray;
  past_state?: NdArray;
  past_window?: NdArray;
  mask?: NdArray;
}

export interface LizaOutputs {
  y: NdArray;
  present_state: NdArray;
  present_window: NdArray;
}

export interface LizaOptions {
  /** Element type of the outputs; default 'float32' (as the ONNX op). */
  outputType?: FloatType;
}

export const L2_EPS = 1e-6;
export const RMS_EPS = 1e-6;
export const DEFAULT_CHUNK_SIZE = 64;

export function isProductRule(rule: LizaRule): boolean {
  return rule === 'delta_product' || rule === 'gated_delta_product';
}

export function isGatedRule(rule: LizaRule): boolean {
  return rule === 'gated_delta' || rule === 'gated_delta_product';
}

/**
 * Number of raw (xk, xv) rows kept in past/present_window: n + 1.
 * Replaying n-1 past tokens needs their betas, and each beta averages xk over
 * 3 tokens, so rows t-(n-1)-2 .. t-1 = n+1 rows are needed. (linear does not
 * read the window but carries it for a uniform interface: w = 2.)
 */
export function windowSize(rule: LizaRule, order = 1): number {
  validateRuleOrder(rule, order);
  return order + 1;
}

function validateRuleOrder(rule: LizaRule, order: number): void {
  if (!LIZA_RULES.includes(rule)) throw new Error(`LiZA: unknown rule ${String(rule)}`);
  if (!Number.isInteger(order) || order < 1) throw new Error(`LiZA: order must be an integer >= 1, got ${order}`);
  if (order > 1 && !isProductRule(rule)) throw new Error(`LiZA: order ${order} > 1 needs a *_product rule, got ${rule}`);
}

/** Validated, defaulted configuration shared by the reference and the chunked form. */
export interface LizaConfig {
  B: number;
  T: number;
  Hq: number;
  Hkv: number;
  /** query heads per kv head */
  G: number;
  d: number;
  rule: LizaRule;
  n: number;
  w: number;
  chunkSize: number;
  causal: boolean;
  gated: boolean;
  product: boolean;
}

export function resolveLizaConfig(inputs: LizaInputs, attrs: LizaAttributes): LizaConfig {
  const Hq = attrs.q_num_heads;
  const Hkv = attrs.kv_num_heads;
  const d = attrs.head_dim;
  const n = attrs.order ?? 1;
  const chunkSize = attrs.chunk_size ?? DEFAULT_CHUNK_SIZE;
  const causal = attrs.causal ?? true;
  for (const [k, v] of [['q_num_heads', Hq], ['kv_num_heads', Hkv], ['head_dim', d], ['chunk_size', chunkSize]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`LiZA: ${k} must be a positive integer, got ${v}`);
  }
  if (Hq % Hkv !== 0) throw new Error(`LiZA: q_num_heads ${Hq} is not a multiple of kv_num_heads ${Hkv}`);
  validateRuleOrder(attrs.rule, n);
  const w = n + 1;
  const { xq } = inputs;
  if (xq.dims.length !== 3) throw new Error(`LiZA: xq must be [B,T,Hq*d], got ${JSON.stringify(xq.dims)}`);
  const B = xq.dims[0];
  const T = xq.dims[1];
  assertDims('LiZA xq', xq, [B, T, Hq * d]);
  assertDims('LiZA xk', inputs.xk, [B, T, Hkv * d]);
  assertDims('LiZA xv', inputs.xv, [B, T, Hkv * d]);
  if (inputs.past_state) assertDims('LiZA past_state', inputs.past_state, [B, Hkv, d, d]);
  if (inputs.past_window) assertDims('LiZA past_window', inputs.past_window, [B, Hkv, w, 2 * d]);
  if (inputs.mask) assertDims('LiZA mask', inputs.mask, [B, T]);
  if (!causal && (inputs.past_state || inputs.past_window)) {
    throw new Error('LiZA: causal = false (bidirectional) does not accept past_state / past_window');
  }
  return {
    B, T, Hq, Hkv, G: Hq / Hkv, d, rule: attrs.rule, n, w, chunkSize, causal,
    gated: isGatedRule(attrs.rule), product: isProductRule(attrs.rule),
  };
}

// ---------------------------------------------------------------------------
// scalar / vector building blocks
// ---------------------------------------------------------------------------

export function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

/** log(sigmoid(x)) without underflow to -Infinity. */
export function logSigmoid(x: number): number {
  return Math.min(x, 0) - Math.log1p(Math.exp(-Math.abs(x)));
}

export function silu(x: number): number {
  return x * sigmoid(x);
}

/** x / sqrt(sum(x^2) + 1e-6) */
export function l2normalize(x: Float64Array): Float64Array {
  let ss = 0;
  for (let c = 0; c < x.length; c++) ss += x[c] * x[c];
  const inv = 1 / Math.sqrt(ss + L2_EPS);
  return x.map((v) => v * inv);
}

/** L2norm(SiLU(x)) — the feature map of queries and keys. */
export function featureMap(x: Float64Array): Float64Array {
  return l2normalize(x.map(silu));
}

// ---------------------------------------------------------------------------
// state updates on S (d x d, row-major, S[key * d + value])
// ---------------------------------------------------------------------------

/** S <- diag(exp(g)) S : decay on the key axis. */
export function decayKeys(S: Float64Array, g: Float64Array, d: number): void {
  for (let k = 0; k < d; k++) {
    const a = Math.exp(g[k]);
    for (let v = 0; v < d; v++) S[k * d + v] *= a;
  }
}

/** S <- S + k v^T */
export function linearUpdate(S: Float64Array, k: Float64Array, v: Float64Array, d: number): void {
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) S[i * d + j] += k[i] * v[j];
}

/** S <- S + beta k (v - S^T k)^T */
export function deltaUpdate(S: Float64Array, k: Float64Array, v: Float64Array, beta: number, d: number): void {
  const predicted = readout(S, k, d); // S^T k
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) S[i * d + j] += beta * k[i] * (v[j] - predicted[j]);
  }
}

/** o = S^T q */
export function readout(S: Float64Array, q: Float64Array, d: number): Float64Array {
  const o = new Float64Array(d);
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) o[j] += S[i * d + j] * q[i];
  return o;
}

/** In place: each row of `rowLen` values x <- x / sqrt(mean(x^2) + 1e-6). */
export function rmsNormalizeRows(o: Float64Array, rowLen: number): Float64Array {
  for (let r = 0; r * rowLen < o.length; r++) {
    let ss = 0;
    for (let c = 0; c < rowLen; c++) ss += o[r * rowLen + c] ** 2;
    const inv = 1 / Math.sqrt(ss / rowLen + RMS_EPS);
    for (let c = 0; c < rowLen; c++) o[r * rowLen + c] *= inv;
  }
  return o;
}

// ---------------------------------------------------------------------------
// features
// ---------------------------------------------------------------------------

/**
 * Per (batch, kv head) sequence of "extended" tokens: e = u + w for token u,
 * i.e. e = 0 .. w-1 are the window rows (tokens -w .. -1) and e = w .. w+T-1
 * the tokens of this call. beta and g are defined for e >= 2 (they need the
 * raw rows e-2, e-1).
 */
export interface HeadSequence {
  rawK: Float64Array[];
  rawV: Float64Array[];
  kh: Float64Array[];
  vh: Float64Array[];
  beta: number[];
  g: Float64Array[];
}

export interface LizaFeatures {
  config: LizaConfig;
  /** qh[b][t][i] for query head i */
  qh: Float64Array[][][];
  /** seq[b][h] */
  seq: HeadSequence[][];
  /** real[b][t] = mask[b,t] != 0 (all true without a mask) */
  real: boolean[][];
  hasPastWindow: boolean;
}

export function lizaFeatures(inputs: LizaInputs, attrs: LizaAttributes): LizaFeatures {
  const config = resolveLizaConfig(inputs, attrs);
  const { B, T, Hq, Hkv, d, w } = config;
  const { xq, xk, xv, past_window, mask } = inputs;

  const real: boolean[][] = [];
  for (let b = 0; b < B; b++) {
    real.push([]);
    for (let t = 0; t < T; t++) real[b].push(mask ? mask.data[b * T + t] !== 0 : true);
  }

  const qh: Float64Array[][][] = [];
  for (let b = 0; b < B; b++) {
    const perT: Float64Array[][] = [];
    for (let t = 0; t < T; t++) {
      const heads: Float64Array[] = [];
      for (let i = 0; i < Hq; i++) {
        const off = (b * T + t) * Hq * d + i * d;
        heads.push(featureMap(Float64Array.from(xq.data.subarray(off, off + d))));
      }
      perT.push(heads);
    }
    qh.push(perT);
  }

  const seq: HeadSequence[][] = [];
  for (let b = 0; b < B; b++) {
    const perH: HeadSequence[] = [];
    for (let h = 0; h < Hkv; h++) {
      const rawK: Float64Array[] = [];
      const rawV: Float64Array[] = [];
      // window rows (tokens -w .. -1), zero without past_window
      for (let r = 0; r < w; r++) {
        const k = new Float64Array(d);
        const v = new Float64Array(d);
        if (past_window) {
          const off = ((b * Hkv + h) * w + r) * 2 * d;
          for (let c = 0; c < d; c++) {
            k[c] = past_window.data[off + c];
            v[c] = past_window.data[off + d + c];
          }
        }
        rawK.push(k);
        rawV.push(v);
      }
      // tokens of this call; padded tokens enter as zero rows
      for (let t = 0; t < T; t++) {
        const k = new Float64Array(d);
        const v = new Float64Array(d);
        if (real[b][t]) {
          const off = (b * T + t) * Hkv * d + h * d;
          for (let c = 0; c < d; c++) {
            k[c] = xk.data[off + c];
            v[c] = xv.data[off + c];
          }
        }
        rawK.push(k);
        rawV.push(v);
      }
      const kh = rawK.map(featureMap);
      const vh = rawV.map((v) => v.map((x) => x / Math.sqrt(d)));
      const beta: number[] = [];
      const g: Float64Array[] = [];
      for (let e = 0; e < rawK.length; e++) {
        if (e < 2) {
          beta.push(NaN); // never used: no token needs the gate of window row 0 or 1
          g.push(new Float64Array(d).fill(NaN));
          continue;
        }
        const z = new Float64Array(d);
        for (let c = 0; c < d; c++) z[c] = (rawK[e - 2][c] + rawK[e - 1][c] + rawK[e][c]) / 3;
        let sum = 0;
        for (let c = 0; c < d; c++) sum += sigmoid(z[c]);
        beta.push(sum / d);
        g.push(z.map(logSigmoid));
      }
      perH.push({ rawK, rawV, kh, vh, beta, g });
    }
    seq.push(perH);
  }
  return { config, qh, seq, real, hasPastWindow: past_window !== undefined };
}

// ---------------------------------------------------------------------------
// the recurrence
// ---------------------------------------------------------------------------

interface CausalResult {
  /** un-normalised readout [B,T,Hq*d] */
  o: Float64Array;
  /** [B,Hkv,d,d] */
  state: Float64Array;
  /** [B,Hkv,w,2d] */
  window: Float64Array;
}

function causalPass(inputs: LizaInputs, attrs: LizaAttributes): CausalResult {
  const f = lizaFeatures(inputs, attrs);
  const { B, T, Hq, Hkv, G, d, n, w, rule, gated } = f.config;
  const o = new Float64Array(B * T * Hq * d);
  const state = new Float64Array(B * Hkv * d * d);
  const window = new Float64Array(B * Hkv * w * 2 * d);

  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hkv; h++) {
      const s = f.seq[b][h];
      const S = new Float64Array(d * d);
      if (inputs.past_state) S.set(inputs.past_state.data.subarray((b * Hkv + h) * d * d, (b * Hkv + h + 1) * d * d));

      for (let t = 0; t < T; t++) {
        const e = t + w; // extended index of token t
        if (f.real[b][t]) {
          if (gated) decayKeys(S, s.g[e], d);
          if (rule === 'linear') {
            linearUpdate(S, s.kh[e], s.vh[e], d);
          } else {
            for (let j = n - 1; j >= 0; j--) {
              const u = t - j;
              if (u < 0 && !f.hasPastWindow) continue; // nothing to replay
              deltaUpdate(S, s.kh[u + w], s.vh[u + w], s.beta[u + w], d);
            }
          }
        }
        for (let gi = 0; gi < G; gi++) {
          const i = h * G + gi;
          o.set(readout(S, f.qh[b][t][i], d), (b * T + t) * Hq * d + i * d);
        }
      }

      state.set(S, (b * Hkv + h) * d * d);
      // present_window: the last w raw rows
      for (let r = 0; r < w; r++) {
        const e = T + r; // rows T .. T+w-1 of the w+T extended rows
        const off = ((b * Hkv + h) * w + r) * 2 * d;
        window.set(s.rawK[e], off);
        window.set(s.rawV[e], off + d);
      }
    }
  }
  return { o, state, window };
}

function reverseInputs(inputs: LizaInputs): LizaInputs {
  const r: LizaInputs = { xq: reverseTime(inputs.xq), xk: reverseTime(inputs.xk), xv: reverseTime(inputs.xv) };
  if (inputs.mask) r.mask = reverseTime(inputs.mask);
  return r;
}

function toOutput(data: Float64Array, dims: number[], type: FloatType): NdArray {
  const out = allocate(data.length, type);
  out.set(data);
  return { data: out, dims };
}

export function lizaReference(inputs: LizaInputs, attrs: LizaAttributes, options: LizaOptions = {}): LizaOutputs {
  const cfg = resolveLizaConfig(inputs, attrs);
  const { B, T, Hq, Hkv, d, w } = cfg;
  const type = options.outputType ?? 'float32';

  const fwd = causalPass(inputs, attrs);
  const y = rmsNormalizeRows(fwd.o, Hq * d);
  if (!cfg.causal) {
    const bwd = causalPass(reverseInputs(inputs), attrs);
    const yb = reverseTime({ data: rmsNormalizeRows(bwd.o, Hq * d), dims: [B, T, Hq * d] }).data;
    for (let i = 0; i < y.length; i++) y[i] = (y[i] + yb[i]) / 2;
  }
  return {
    y: toOutput(y, [B, T, Hq * d], type),
    present_state: toOutput(fwd.state, [B, Hkv, d, d], type),
    present_window: toOutput(fwd.window, [B, Hkv, w, 2 * d], type),
  };
}

/**
 * ONNX graph pieces shared by every form of ai.tptt.LiZA (the chunked function body, the
 * per-token Scan oracle, the com.microsoft.LinearAttention and the opset-27
 * LinearAttention lowerings): feature maps, gates, the DeltaProduct expansion, the
 * readout of every n-th row, the output normalisation and the bidirectional wrapper.
 * The semantics are those of src/ops/reference/liza.ts; the layout follows
 * src/ops/reference/liza_chunked.ts.
 *
 * Layout: 'token' (time on axis 1, [B, rows, Hkv, d]) for the LinearAttention lowerings and
 * the Scan oracle, 'head' ([B, Hkv, rows, d]) for the chunked body; see SequenceLayout.
 *
 * Extended rows (per batch row and kv head): e = 0 .. w-1 are the past_window rows (zeros
 * without it), e = w .. w+T-1 the tokens of this call with padded tokens zeroed. With
 * w = n + 1 every gate the call needs can be computed from these rows.
 *
 * Expanded sequence (delta family, order n; n = 1 for delta / gated_delta): token t becomes
 * rows r = t*n + i, i = 0..n-1, carrying token u = t-n+1+i: kh_u, vh_u, beta_u * mask_t
 * (a padded token runs no step at all); the gated log decay g_t * mask_t sits on row
 * i = 0 only, the query on row i = n-1 only (where the output is read). Out-of-range
 * tokens are zero window rows: kh = 0, a no-op step.
 */
import { DataType } from '../ir/dtype.js';
import { Tensor } from '../ir/tensor.js';
import type { Value } from '../ir/value.js';
import { END, type Emitter } from './emit.js';
import { L2_EPS, RMS_EPS } from './reference/liza.js';
import type { LizaOpConfig } from './schema.js';

/** Graph values feeding one LiZA computation (null / undefined = input absent). */
export interface LizaGraphInputs {
  xq: Value;
  xk: Value;
  xv: Value;
  pastState?: Value | null;
  pastWindow?: Value | null;
  mask?: Value | null;
}

export interface LizaGraphOutputs {
  /** [B, T, Hq*d] */
  y: Value;
  /** [B, Hkv, d, d] */
  presentState: Value;
  /** [B, Hkv, w, 2d] */
  presentWindow: Value;
}

/**
 * Where time sits. 'token' (time on axis 1: [B, R, Hkv, d], [B, R, Hkv, G, d]) is what
 * LinearAttention wants after a Reshape; 'head' (time after the heads: [B, Hkv, R, d],
 * [B, Hkv, G, R, d]) is what the chunked body wants, since chunking is then a Reshape.
 */
export type SequenceLayout = 'token' | 'head';

/** The expanded, feature-mapped sequence. R = T * reps rows. Shapes for 'token' / 'head'. */
export interface PreparedSequence {
  layout: SequenceLayout;
  /** [B, R, Hkv, d] / [B, Hkv, R, d]: L2norm(SiLU(xk)) */
  K: Value;
  /** like K: xv / sqrt(d) */
  V: Value;
  /** [B, R, Hkv, 1] / [B, Hkv, R, 1]: update rate (delta family), null for linear */
  beta: Value | null;
  /** like K: log decay (gated rules), null otherwise */
  glog: Value | null;
  /** [B, R, Hkv, G, d] / [B, Hkv, G, R, d]: L2norm(SiLU(xq)), zero on the rows not read */
  Q: Value;
  /** [B, Hkv, w, 2d] */
  presentWindow: Value;
  /** rows per token */
  reps: number;
}

/** Rows per token of the expanded sequence. */
export function rowsPerToken(cfg: LizaOpConfig): number {
  return cfg.rule === 'linear' ? 1 : cfg.order;
}

/** float 0/1 of mask != 0 ([B, T]; bool, integer or float), unsqueezed at `axes`. */
export function emitRealTokens(e: Emitter, mask: Value, axes: number[] = [2, 3]): Value {
  const mf = e.cast(mask, DataType.FLOAT);
  const real = e.op('Not', [e.op('Equal', [mf, e.f(0)])]);
  return e.unsqueeze(e.cast(real, DataType.FLOAT), axes);
}

/**
 * Zeros of shape [B, ...rest], B taken from dim 0 of `like`. (Expand of a scalar, not
 * ConstantOfShape: onnxruntime's WebGPU provider has no ConstantOfShape kernel, and the
 * state-sized zeros would be made on the host and copied over at every call.)
 */
export function emitZeros(e: Emitter, like: Value, rest: number[]): Value {
  const shape = e.concat([e.dim(like, 0), e.ints(rest)], 0);
  return e.op('Expand', [e.f(0), shape]);
}

/** past_state, or zeros [B, Hkv, d, d]. */
export function emitInitialState(e: Emitter, cfg: LizaOpConfig, inputs: LizaGraphInputs): Value {
  return inputs.pastState ?? emitZeros(e, inputs.xq, [cfg.kvNumHeads, cfg.headDim, cfg.headDim]);
}

/** Feature maps, gates and the expanded sequence, in the requested layout. */
export function emitPrepare(e: Emitter, cfg: LizaOpConfig, inputs: LizaGraphInputs, layout: SequenceLayout = 'token'): PreparedSequence {
  const { headDim: d, kvNumHeads: Hkv, group: G, window: w, gated } = cfg;
  const n = rowsPerToken(cfg);
  const head = layout === 'head';
  const t = head ? 2 : 1; // time axis of K, V, beta, glog
  const tq = head ? 3 : 1; // time axis of Q

  const real = inputs.mask ? emitRealTokens(e, inputs.mask, head ? [1, 3] : [2, 3]) : null;
  const split = (x: Value): Value => {
    const r = e.reshape(x, [0, 0, Hkv, d]);
    return head ? e.transpose(r, [0, 2, 1, 3]) : r;
  };
  let k4 = split(inputs.xk);
  let v4 = split(inputs.xv);
  if (real) {
    k4 = e.mul(k4, real);
    v4 = e.mul(v4, real);
  }

  // window rows
  let winK: Value;
  let winV: Value;
  if (inputs.pastWindow) {
    const pw = head ? inputs.pastWindow : e.transpose(inputs.pastWindow, [0, 2, 1, 3]);
    winK = e.slice(pw, 3, 0, d);
    winV = e.slice(pw, 3, d, 2 * d);
  } else {
    winK = winV = emitZeros(e, inputs.xq, head ? [Hkv, w, d] : [w, Hkv, d]);
  }
  const extK = e.concat([winK, k4], t); // L = w + T rows
  const extV = e.concat([winV, v4], t);
  const lastRows = e.concat([e.slice(extK, t, -w, END), e.slice(extV, t, -w, END)], 3);
  const presentWindow = head ? lastRows : e.transpose(lastRows, [0, 2, 1, 3]);

  const Kh = e.l2norm(e.silu(extK), L2_EPS);
  const Vh = e.scale(extV, 1 / Math.sqrt(d));
  const q5 = e.reshape(inputs.xq, [0, 0, Hkv, G, d]);
  const Qh = e.l2norm(e.silu(head ? e.transpose(q5, [0, 2, 3, 1, 4]) : q5), L2_EPS);

  if (cfg.rule === 'linear') {
    return { layout, K: e.slice(Kh, t, w, END), V: e.slice(Vh, t, w, END), beta: null, glog: null, Q: Qh, presentWindow, reps: 1 };
  }

  // gates: Z row z <-> extended row e = z + 2 (mean of raw xk rows e-2, e-1, e)
  const Z = e.scale(e.add(e.add(e.slice(extK, t, 0, -2), e.slice(extK, t, 1, -1)), e.slice(extK, t, 2, END)), 1 / 3);
  const betaAll = e.scale(e.reduceSum(e.sigmoid(Z), [-1], true), 1 / d); // L-2 rows, last axis 1
  const to = (tail: number): number => (tail > 0 ? -tail : END);

  const Ks: Value[] = [];
  const Vs: Value[] = [];
  const Bs: Value[] = [];
  for (let i = 0; i < n; i++) {
    // slot i of token t replays token u = t-n+1+i: extended row t+2+i, gate row t+i
    const tail = n - 1 - i;
    Ks.push(e.slice(Kh, t, 2 + i, to(tail)));
    Vs.push(e.slice(Vh, t, 2 + i, to(tail)));
    const bi = e.slice(betaAll, t, i, to(tail));
    Bs.push(real ? e.mul(bi, real) : bi);
  }
  let glog: Value | null = null;
  if (gated) {
    const g0 = e.slice(e.logSigmoid(Z), t, n - 1, END); // gate row of token t: t + n - 1
    glog = real ? e.mul(g0, real) : g0;
  }
  if (n === 1) return { layout, K: Ks[0]!, V: Vs[0]!, beta: Bs[0]!, glog, Q: Qh, presentWindow, reps: 1 };

  // interleave: a slot axis right after time, then merge it into time
  const merged = (last: number): number[] => (head ? [0, 0, -1, last] : [0, -1, Hkv, last]);
  const interleave = (xs: Value[], last: number): Value => e.reshape(e.concat(xs.map((x) => e.unsqueeze(x, [t + 1])), t + 1), merged(last));
  const K = interleave(Ks, d);
  const V = interleave(Vs, d);
  const beta = interleave(Bs, 1);
  if (glog) {
    // decay on slot 0 only, n-1 zero slots after it (rank 5, slot axis t+1)
    const pads = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    pads[5 + t + 1] = n - 1;
    glog = e.reshape(e.pad(e.unsqueeze(glog, [t + 1]), pads), merged(d));
  }
  // query on slot n-1 only (rank 6, slot axis tq+1)
  const qpads = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
  qpads[tq + 1] = n - 1;
  const Q = e.reshape(e.pad(e.unsqueeze(Qh, [tq + 1]), qpads), head ? [0, 0, 0, -1, d] : [0, -1, Hkv, G, d]);
  return { layout, K, V, beta, glog, Q, presentWindow, reps: n };
}

/** Rows t*reps + reps-1 of an expanded [B, R, Hq*d] readout -> [B, T, Hq*d]. */
export function emitReadRows(e: Emitter, cfg: LizaOpConfig, oPacked: Value, reps: number): Value {
  if (reps === 1) return oPacked;
  const width = cfg.qNumHeads * cfg.headDim;
  const r = e.reshape(oPacked, [0, -1, reps, width]);
  return e.reshape(e.slice(r, 2, reps - 1, reps), [0, -1, width]);
}

/** What one causal pass over (possibly time-reversed) inputs produces. */
export interface CausalResult {
  /** un-normalised readout [B, T, Hq*d] */
  o: Value;
  /** [B, Hkv, d, d] */
  state: Value;
  /** [B, Hkv, w, 2d] */
  window: Value;
}

export type CausalCore = (e: Emitter, cfg: LizaOpConfig, inputs: LizaGraphInputs) => CausalResult;

/**
 * The full op around a causal core: y = rmsnorm(o), or for causal = 0 the mean of the
 * forward result and the (normalised, reversed back) result on the time-reversed input.
 */
export function emitLiza(e: Emitter, cfg: LizaOpConfig, inputs: LizaGraphInputs, core: CausalCore): LizaGraphOutputs {
  const width = cfg.qNumHeads * cfg.headDim;
  const fwd = core(e, cfg, inputs);
  let y = e.rmsnorm(fwd.o, width, RMS_EPS);
  if (!cfg.causal) {
    // every row is reversed whole: a Slice with step −1 on the time axis (ReverseSequence
    // with lengths T would say the same, but onnxruntime's WebGPU provider has no kernel for it)
    const rev = (x: Value): Value => e.op('Slice', [x, e.ints([-1]), e.ints([-END]), e.ints([1]), e.ints([-1])]);
    const bwd = core(e, cfg, {
      xq: rev(inputs.xq),
      xk: rev(inputs.xk),
      xv: rev(inputs.xv),
      mask: inputs.mask ? rev(inputs.mask) : null,
    });
    const yb = rev(e.rmsnorm(bwd.o, width, RMS_EPS));
    y = e.scale(e.add(y, yb), 0.5);
  }
  return { y, presentState: fwd.state, presentWindow: fwd.window };
}

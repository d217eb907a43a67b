/**
 * Chunked (parallel, WY/UT) form of the ai.tptt LiZA operator — the prototype
 * of the ONNX function body. Same semantics as liza.ts (see the definition
 * there); float64 by default (options.precision = 'float32' rounds every
 * intermediate to fp32 to emulate an fp32 graph), written with the helpers of
 * matrix.ts, each of which is one ONNX op (MatMul, Mul, Add, Sub, Exp, Slice,
 * Concat, Reshape, ReduceSum/Mean, Min). There is no per-token loop inside a
 * chunk; chunks are processed sequentially (an ONNX Loop / Scan over chunks).
 *
 * Sequence layout, per (batch, kv head):
 *   ext rows e = 0 .. w+T-1: the w past_window rows (zeros without it)
 *   followed by the T raw rows of this call, padded tokens zeroed.
 *   Kh = L2norm(SiLU(ext xk)), Vh = ext xv / sqrt(d),
 *   Z[e] = (ext xk[e-2] + ext xk[e-1] + ext xk[e]) / 3 for e >= 2,
 *   beta = ReduceMean(Sigmoid(Z)), glog = logsigmoid(Z).
 *
 * Expanded sequence (delta family, order n; n = 1 for delta/gated_delta):
 *   token t becomes rows r = t*n + i, i = 0..n-1, carrying token u = t-n+1+i
 *   (ext index u + w; out-of-range tokens are zero window rows, i.e. kh = 0:
 *   no-op steps). beta_r = beta_u * mask_t (a padded token runs no step at
 *   all), decay glog_r = glog_t * mask_t on the first row i = 0 of the token
 *   and 0 on the others, query q_r = qh_t on the last row i = n-1 (where the
 *   read happens) and 0 elsewhere. Outputs are rows t*n + n-1. The expanded
 *   sequence is zero-padded to a multiple of C (zero rows are no-ops).
 *
 * --- delta rule, per chunk (K, V, Q: [C, d], beta: [C]) -------------------
 * Sequential rule: S_i = S_{i-1} + beta_i k_i (v_i - S_{i-1}^T k_i)^T.
 * Write S_i = S_0 + sum_{j<=i} k_j u_j^T. Then
 *   u_i = beta_i (v_i - S_0^T k_i - sum_{j<i} (k_i . k_j) u_j)
 * i.e. in rows:  (I + A) U' = diag(beta) (V - K S_0),
 *   A = tril(diag(beta) K K^T, -1)      (A[i][j] = beta_i k_i.k_j, j < i)
 *   T = (I + A)^-1 = (I - A)(I + A^2)(I + A^4)...   (A nilpotent; MatMul only)
 *       or, with options.inverse = 'blocked', by blockwise doubling (also
 *       MatMul only). Same result in float64 (~1e-13), but in fp32 the Neumann
 *       product loses up to ~1e-3 relative at C = 64 on product-rule sequences
 *       (intermediate A^(2^j) entries are >> |T|), the blocked one ~5e-7.
 *   W = T diag(beta) K,  U = T diag(beta) V,  U' = U - W S_0
 *   O = Q S_0 + tril(Q K^T) U'          (tril including the diagonal)
 *   S_C = S_0 + K^T U'
 * So the formula of the design brief holds as written, with the PLUS sign in
 * (I + A) and beta scaling the ROWS (the i index) of K K^T.
 *
 * --- gated delta rule (decay on the key axis, channel-wise) ---------------
 * Sequential rule: S_i = D_i S_{i-1} + beta_i k_i (v_i - (D_i S_{i-1})^T k_i)^T,
 * D_i = diag(exp(g_i)). Let b_i = sum_{s<=i} g_s (cumulative within the chunk,
 * per channel, <= 0 and non-increasing; b = tril(1) @ G, a MatMul / CumSum).
 * Then S_i = diag(exp(b_i)) S_0 + sum_{j<=i} diag(exp(b_i - b_j)) k_j u_j^T and
 *   P[i][j][c] = exp(min(b_ic - b_jc, 0)) * [j <= i]   ([C, C, d]; the Min
 *                only clips the masked j > i entries, so no exp of a positive
 *                number is ever taken and masked entries are exactly 0)
 *   A[i][j] = [j < i] beta_i sum_c k_ic k_jc P[i][j][c]
 *   T = (I + A)^-1 as above
 *   W = T diag(beta) (K * exp(b)),  U = T diag(beta) V,  U' = U - W S_0
 *   O[i] = ((q_i * exp(b_i)) S_0) + sum_j (sum_c q_ic k_jc P[i][j][c]) U'_j
 *   S_C = diag(exp(b_last)) S_0 + (K * exp(b_last - b))^T U'
 * All exponents are <= 0. With g = 0 this reduces exactly to the delta form.
 *
 * --- linear ----------------------------------------------------------------
 *   O = Q S_0 + tril(Q K^T) V,   S_C = S_0 + K^T V   (rows = tokens)
 */

import {
  type LizaAttributes,
  type LizaConfig,
  type LizaInputs,
  type LizaOptions,
  type LizaOutputs,
  L2_EPS,
  RMS_EPS,
  logSigmoid,
  resolveLizaConfig,
  sigmoid,
} from './liza.js';
import {
  type Mat,
  type MatArray,
  type MatType,
  add,
  concatRows,
  everyNthRow,
  expandRow,
  interleaveRows,
  invertUnitLowerBlocked,
  invertUnitLowerNilpotent,
  map,
  mat,
  matmul,
  mul,
  padRows,
  pairwiseWeightedGram,
  row,
  rowMean,
  scale,
  scaleRows,
  sliceRows,
  sub,
  transpose,
  trilMask,
  typeOf,
} from './matrix.js';
import { type FloatType, type NdArray, allocate, reverseTime } from './tensor.js';

export interface LizaChunkedOptions extends LizaOptions {
  /**
   * How T = (I + A)^-1 is formed (both MatMul-only, identical in exact arithmetic):
   *  - 'neumann' (default): (I - A)(I + A^2)(I + A^4)... as in the design note;
   *    its intermediate powers of A can be orders of magnitude larger than T,
   *    so it loses accuracy in fp32 for large chunks;
   *  - 'blocked': blockwise doubling [[X11,0],[L21,X22]]^-1 = [[X11,0],[-X22 L21 X11, X22]].
   */
  inverse?: 'neumann' | 'blocked';
  /**
   * 'float64' (default) or 'float32': store every intermediate as float32, to
   * emulate an fp32 execution of the same op graph.
   */
  precision?: MatType;
}

interface ChunkOps {
  inverse: (A: Mat) => Mat;
}

// ---------------------------------------------------------------------------
// feature maps on whole [rows, d] matrices
// ---------------------------------------------------------------------------

/** X / sqrt(ReduceSum(X^2, -1) + eps) */
function l2normRows(x: Mat): Mat {
  const ss = rowMean(mul(x, x)).map((m) => m * x.cols);
  return scaleRows(ss.map((s) => 1 / Math.sqrt(s + L2_EPS)), x);
}

/** L2norm(SiLU(X)) = L2norm(X * Sigmoid(X)) */
function featureMapRows(x: Mat): Mat {
  return l2normRows(mul(x, map(x, sigmoid)));
}

// ---------------------------------------------------------------------------
// one chunk of each rule; S: [d, d] (key x value); Qs: one [C, d] per query head
// ---------------------------------------------------------------------------

interface ChunkResult {
  S: Mat;
  Os: Mat[];
}

function linearChunk(S: Mat, K: Mat, V: Mat, Qs: Mat[]): ChunkResult {
  const C = K.rows;
  const causalMask = trilMask(C, 0, typeOf(K));
  const Kt = transpose(K);
  const Os = Qs.map((Q) => add(matmul(Q, S), matmul(mul(causalMask, matmul(Q, Kt)), V)));
  return { S: add(S, matmul(Kt, V)), Os };
}

function deltaChunk(ops: ChunkOps, S: Mat, K: Mat, V: Mat, beta: MatArray, Qs: Mat[]): ChunkResult {
  const C = K.rows;
  const causalMask = trilMask(C, 0, typeOf(K));
  const Kt = transpose(K);
  const A = mul(trilMask(C, -1, typeOf(K)), scaleRows(beta, matmul(K, Kt)));
  const Tinv = ops.inverse(A); // (I + A)^-1
  const W = matmul(Tinv, scaleRows(beta, K));
  const U = matmul(Tinv, scaleRows(beta, V));
  const Unew = sub(U, matmul(W, S));
  const Os = Qs.map((Q) => add(matmul(Q, S), matmul(mul(causalMask, matmul(Q, Kt)), Unew)));
  return { S: add(S, matmul(Kt, Unew)), Os };
}

/** P[i][j][c] = [j <= i] * exp(min(b[i][c] - b[j][c], 0))  ->  [C, C, d] */
function pairwiseDecay(b: Mat): MatArray {
  const C = b.rows;
  const d = b.cols;
  const causalMask = trilMask(C, 0);
  const P = typeOf(b) === 'float32' ? new Float32Array(C * C * d) : new Float64Array(C * C * d);
  for (let i = 0; i < C; i++) {
    for (let j = 0; j < C; j++) {
      const m = causalMask.data[i * C + j];
      for (let c = 0; c < d; c++) {
        P[(i * C + j) * d + c] = m * Math.exp(Math.min(b.data[i * d + c] - b.data[j * d + c], 0));
      }
    }
  }
  return P;
}

function gatedDeltaChunk(ops: ChunkOps, S: Mat, K: Mat, V: Mat, beta: MatArray, glog: Mat, Qs: Mat[]): ChunkResult {
  const C = K.rows;
  const b = matmul(trilMask(C, 0, typeOf(glog)), glog); // cumulative log decay, [C, d]
  const P = pairwiseDecay(b);
  const decayFromStart = map(b, Math.exp); // exp(b_i) <= 1
  const bLast = row(b, C - 1);
  const decayToEnd = map(sub(expandRow(bLast, C), b), Math.exp); // exp(b_last - b_j) <= 1

  const A = mul(trilMask(C, -1, typeOf(K)), scaleRows(beta, pairwiseWeightedGram(K, K, P)));
  const Tinv = ops.inverse(A);
  const W = matmul(Tinv, scaleRows(beta, mul(K, decayFromStart)));
  const U = matmul(Tinv, scaleRows(beta, V));
  const Unew = sub(U, matmul(W, S));
  const Os = Qs.map((Q) => add(matmul(mul(Q, decayFromStart), S), matmul(pairwiseWeightedGram(Q, K, P), Unew)));
  const Sdecayed = scaleRows(bLast.map(Math.exp), S);
  return { S: add(Sdecayed, matmul(transpose(mul(K, decayToEnd)), Unew)), Os };
}

// ---------------------------------------------------------------------------
// causal pass
// ---------------------------------------------------------------------------

interface CausalResult {
  o: Float64Array;
  state: Float64Array;
  window: Float64Array;
}

/** Rows of a packed [B, T, H*d] tensor for (b, head): [T, d]. */
function headRows(x: NdArray, b: number, head: number, d: number, ty: MatType): Mat {
  const T = x.dims[1];
  const width = x.dims[2];
  const m = mat(T, d, undefined, ty);
  for (let t = 0; t < T; t++) {
    const off = (b * T + t) * width + head * d;
    for (let c = 0; c < d; c++) m.data[t * d + c] = x.data[off + c];
  }
  return m;
}

function chunkedCausal(inputs: LizaInputs, cfg: LizaConfig, options: LizaChunkedOptions): CausalResult {
  const { B, T, Hq, Hkv, G, d, n, w, rule, gated, chunkSize: C } = cfg;
  const ty: MatType = options.precision ?? 'float64';
  const ops: ChunkOps = {
    inverse: options.inverse === 'blocked' ? invertUnitLowerBlocked : invertUnitLowerNilpotent,
  };
  const o = new Float64Array(B * T * Hq * d);
  const state = new Float64Array(B * Hkv * d * d);
  const window = new Float64Array(B * Hkv * w * 2 * d);

  for (let b = 0; b < B; b++) {
    const maskVec = new Float64Array(T).fill(1);
    if (inputs.mask) for (let t = 0; t < T; t++) maskVec[t] = inputs.mask.data[b * T + t] !== 0 ? 1 : 0;

    for (let h = 0; h < Hkv; h++) {
      // --- raw extended rows: window then masked tokens -------------------
      const winK = mat(w, d, undefined, ty);
      const winV = mat(w, d, undefined, ty);
      if (inputs.past_window) {
        const pw = inputs.past_window.data;
        for (let r = 0; r < w; r++) {
          const off = ((b * Hkv + h) * w + r) * 2 * d;
          for (let c = 0; c < d; c++) {
            winK.data[r * d + c] = pw[off + c];
            winV.data[r * d + c] = pw[off + d + c];
          }
        }
      }
      const extK = concatRows([winK, scaleRows(maskVec, headRows(inputs.xk, b, h, d, ty))]);
      const extV = concatRows([winV, scaleRows(maskVec, headRows(inputs.xv, b, h, d, ty))]);
      const L = w + T;

      // --- features ---------------------------------------------------------
      const Kh = featureMapRows(extK);
      const Vh = scale(extV, 1 / Math.sqrt(d));
      // Z row z <-> ext row e = z + 2
      const Z = scale(add(add(sliceRows(extK, 0, L - 2), sliceRows(extK, 1, L - 1)), sliceRows(extK, 2, L)), 1 / 3);
      const betaAll = rowMean(map(Z, sigmoid));
      const glogAll = map(Z, logSigmoid);
      const Qh: Mat[] = [];
      for (let gi = 0; gi < G; gi++) Qh.push(featureMapRows(headRows(inputs.xq, b, h * G + gi, d, ty)));

      // --- sequence layout ----------------------------------------------------
      let K: Mat;
      let V: Mat;
      let beta: MatArray;
      let glog: Mat;
      let Qs: Mat[];
      let reps: number; // rows per token
      if (rule === 'linear') {
        reps = 1;
        K = sliceRows(Kh, w, L);
        V = sliceRows(Vh, w, L);
        beta = new Float64Array(T);
        glog = mat(T, d, undefined, ty);
        Qs = Qh;
      } else {
        reps = n;
        const Kp: Mat[] = [];
        const Vp: Mat[] = [];
        const Bp: Mat[] = [];
        const Gp: Mat[] = [];
        const Qp: Mat[][] = Qh.map(() => []);
        for (let i = 0; i < n; i++) {
          const s = w - n + 1 + i; // ext index of token u = t-n+1+i at t = 0
          Kp.push(sliceRows(Kh, s, s + T));
          Vp.push(sliceRows(Vh, s, s + T));
          const betaSlice = betaAll.slice(s - 2, s - 2 + T).map((x, t) => x * maskVec[t]);
          Bp.push(mat(T, 1, betaSlice, ty));
          Gp.push(i === 0 ? scaleRows(maskVec, sliceRows(glogAll, w - 2, w - 2 + T)) : mat(T, d, undefined, ty));
          Qh.forEach((Q, gi) => Qp[gi].push(i === n - 1 ? Q : mat(T, d, undefined, ty)));
        }
        K = interleaveRows(Kp);
        V = interleaveRows(Vp);
        beta = interleaveRows(Bp).data;
        glog = interleaveRows(Gp);
        Qs = Qp.map(interleaveRows);
      }

      // --- pad to a multiple of C and run the chunks -----------------------
      const rows = K.rows;
      const padded = Math.ceil(rows / C) * C;
      K = padRows(K, padded);
      V = padRows(V, padded);
      glog = padRows(glog, padded);
      const betaPadded = ty === 'float32' ? new Float32Array(padded) : new Float64Array(padded);
      betaPadded.set(beta);
      Qs = Qs.map((Q) => padRows(Q, padded));

      let S = mat(d, d, undefined, ty);
      if (inputs.past_state) S.data.set(inputs.past_state.data.subarray((b * Hkv + h) * d * d, (b * Hkv + h + 1) * d * d));
      const Oparts: Mat[][] = Qs.map(() => []);
      for (let c0 = 0; c0 < padded; c0 += C) {
        const Kc = sliceRows(K, c0, c0 + C);
        const Vc = sliceRows(V, c0, c0 + C);
        const Qc = Qs.map((Q) => sliceRows(Q, c0, c0 + C));
        const betac = betaPadded.slice(c0, c0 + C);
        let res: ChunkResult;
        if (rule === 'linear') res = linearChunk(S, Kc, Vc, Qc);
        else if (gated) res = gatedDeltaChunk(ops, S, Kc, Vc, betac, sliceRows(glog, c0, c0 + C), Qc);
        else res = deltaChunk(ops, S, Kc, Vc, betac, Qc);
        S = res.S;
        res.Os.forEach((Oc, gi) => Oparts[gi].push(Oc));
      }

      // --- outputs ---------------------------------------------------------------
      Oparts.forEach((parts, gi) => {
        if (T === 0) return;
        const O = everyNthRow(sliceRows(concatRows(parts), 0, rows), reps, reps - 1, T);
        const i = h * G + gi;
        for (let t = 0; t < T; t++) o.set(row(O, t), (b * T + t) * Hq * d + i * d);
      });
      state.set(S.data, (b * Hkv + h) * d * d);
      const lastK = sliceRows(extK, L - w, L);
      const lastV = sliceRows(extV, L - w, L);
      for (let r = 0; r < w; r++) {
        const off = ((b * Hkv + h) * w + r) * 2 * d;
        window.set(row(lastK, r), off);
        window.set(row(lastV, r), off + d);
      }
    }
  }
  return { o, state, window };
}

/** o / sqrt(ReduceMean(o^2, -1) + eps) over rows of Hq*d channels. */
function rmsNormRows(o: Float64Array, width: number, ty: MatType): MatArray {
  const m = mat(o.length / width, width, o, ty);
  const ms = rowMean(mul(m, m));
  return scaleRows(ms.map((x) => 1 / Math.sqrt(x + RMS_EPS)), m).data;
}

function toOutput(data: MatArray, dims: number[], type: FloatType): NdArray {
  const out = allocate(data.length, type);
  out.set(data);
  return { data: out, dims };
}

export function lizaChunked(inputs: LizaInputs, attrs: LizaAttributes, options: LizaChunkedOptions = {}): LizaOutputs {
  const cfg = resolveLizaConfig(inputs, attrs);
  const { B, T, Hq, Hkv, d, w } = cfg;
  const type = options.outputType ?? 'float32';
  const ty = options.precision ?? 'float64';
  const fwd = chunkedCausal(inputs, cfg, options);
  let y = rmsNormRows(fwd.o, Hq * d, ty);
  if (!cfg.causal) {
    const rev: LizaInputs = { xq: reverseTime(inputs.xq), xk: reverseTime(inputs.xk), xv: reverseTime(inputs.xv) };
    if (inputs.mask) rev.mask = reverseTime(inputs.mask);
    const bwd = chunkedCausal(rev, cfg, options);
    const yb = reverseTime({ data: rmsNormRows(bwd.o, Hq * d, ty), dims: [B, T, Hq * d] }).data;
    y = y.map((x, i) => 0.5 * (x + yb[i]));
  }
  return {
    y: toOutput(y, [B, T, Hq * d], type),
    present_state: toOutput(fwd.state, [B, Hkv, d, d], type),
    present_window: toOutput(fwd.window, [B, Hkv, w, 2 * d], type),
  };
}

/**
 * Small dense float64 matrix helpers for the chunked LiZA prototype. Every
 * helper corresponds to one (or a couple of) ONNX ops, noted on each function,
 * so liza_chunked.ts can be translated op-for-op into an ONNX function body.
 */

/**
 * Storage type: float64 normally. With Float32Array storage every op result is
 * rounded to float32 when stored (products are still accumulated in float64
 * inside one MatMul), which emulates an fp32 ONNX execution of the same graph.
 */
export type MatArray = Float32Array | Float64Array;
export type MatType = 'float32' | 'float64';

export interface Mat {
  rows: number;
  cols: number;
  /** row-major */
  data: MatArray;
}

export function typeOf(m: Mat): MatType {
  return m.data instanceof Float32Array ? 'float32' : 'float64';
}

export function mat(rows: number, cols: number, data?: ArrayLike<number>, type: MatType = 'float64'): Mat {
  const m: Mat = { rows, cols, data: type === 'float32' ? new Float32Array(rows * cols) : new Float64Array(rows * cols) };
  if (data) {
    if (data.length !== rows * cols) throw new Error(`mat: ${data.length} values for ${rows}x${cols}`);
    m.data.set(data);
  }
  return m;
}

export function at(m: Mat, i: number, j: number): number {
  return m.data[i * m.cols + j];
}

/** Identity (constant). */
export function eye(n: number, type: MatType = 'float64'): Mat {
  const m = mat(n, n, undefined, type);
  for (let i = 0; i < n; i++) m.data[i * n + i] = 1;
  return m;
}

/**
 * Triangular 0/1 mask (constant): mask[i][j] = 1 if j <= i + k.
 * k = 0: lower triangle including the diagonal; k = -1: strictly lower.
 */
export function trilMask(n: number, k = 0, type: MatType = 'float64'): Mat {
  const m = mat(n, n, undefined, type);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (j <= i + k) m.data[i * n + j] = 1;
  return m;
}

/** ONNX MatMul */
export function matmul(a: Mat, b: Mat): Mat {
  if (a.cols !== b.rows) throw new Error(`matmul: ${a.rows}x${a.cols} @ ${b.rows}x${b.cols}`);
  const acc = new Float64Array(a.rows * b.cols);
  for (let i = 0; i < a.rows; i++) {
    for (let k = 0; k < a.cols; k++) {
      const aik = a.data[i * a.cols + k];
      if (aik === 0) continue;
      for (let j = 0; j < b.cols; j++) acc[i * b.cols + j] += aik * b.data[k * b.cols + j];
    }
  }
  return mat(a.rows, b.cols, acc, typeOf(a));
}

/** ONNX Transpose */
export function transpose(a: Mat): Mat {
  const out = mat(a.cols, a.rows, undefined, typeOf(a));
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.cols; j++) out.data[j * a.rows + i] = a.data[i * a.cols + j];
  return out;
}

function sameShape(a: Mat, b: Mat, op: string): void {
  if (a.rows !== b.rows || a.cols !== b.cols) throw new Error(`${op}: ${a.rows}x${a.cols} vs ${b.rows}x${b.cols}`);
}

/** ONNX Add */
export function add(a: Mat, b: Mat): Mat {
  sameShape(a, b, 'add');
  return { rows: a.rows, cols: a.cols, data: a.data.map((x, i) => x + b.data[i]) };
}

/** ONNX Sub */
export function sub(a: Mat, b: Mat): Mat {
  sameShape(a, b, 'sub');
  return { rows: a.rows, cols: a.cols, data: a.data.map((x, i) => x - b.data[i]) };
}

/** ONNX Mul (same shape) */
export function mul(a: Mat, b: Mat): Mat {
  sameShape(a, b, 'mul');
  return { rows: a.rows, cols: a.cols, data: a.data.map((x, i) => x * b.data[i]) };
}

/** ONNX Mul by a scalar */
export function scale(a: Mat, s: number): Mat {
  return { rows: a.rows, cols: a.cols, data: a.data.map((x) => x * s) };
}

/** Elementwise unary op (ONNX Exp, Sigmoid, ...). */
export function map(a: Mat, f: (x: number) => number): Mat {
  return { rows: a.rows, cols: a.cols, data: a.data.map(f) };
}

/** diag(v) X = ONNX Mul of X by v broadcast as a column [rows, 1]. */
export function scaleRows(v: ArrayLike<number>, x: Mat): Mat {
  if (v.length !== x.rows) throw new Error(`scaleRows: ${v.length} vs ${x.rows} rows`);
  const out = mat(x.rows, x.cols, undefined, typeOf(x));
  for (let i = 0; i < x.rows; i++) for (let j = 0; j < x.cols; j++) out.data[i * x.cols + j] = v[i] * x.data[i * x.cols + j];
  return out;
}

/** X * r with r broadcast as a row [1, cols] (ONNX Mul). */
export function scaleCols(x: Mat, r: ArrayLike<number>): Mat {
  if (r.length !== x.cols) throw new Error(`scaleCols: ${r.length} vs ${x.cols} cols`);
  const out = mat(x.rows, x.cols, undefined, typeOf(x));
  for (let i = 0; i < x.rows; i++) for (let j = 0; j < x.cols; j++) out.data[i * x.cols + j] = x.data[i * x.cols + j] * r[j];
  return out;
}

/** [rows, cols] copies of a row vector (ONNX Expand). */
export function expandRow(r: MatArray, rows: number): Mat {
  const out = mat(rows, r.length, undefined, r instanceof Float32Array ? 'float32' : 'float64');
  for (let i = 0; i < rows; i++) out.data.set(r, i * r.length);
  return out;
}

/** Rows [start, end) (ONNX Slice on axis 0). */
export function sliceRows(a: Mat, start: number, end: number): Mat {
  return { rows: end - start, cols: a.cols, data: a.data.slice(start * a.cols, end * a.cols) };
}

/** Row r as a vector (ONNX Gather / Slice). */
export function row(a: Mat, r: number): MatArray {
  return a.data.slice(r * a.cols, (r + 1) * a.cols);
}

/** Append zero rows up to `rows` (ONNX Pad). */
export function padRows(a: Mat, rows: number): Mat {
  const out = mat(rows, a.cols, undefined, typeOf(a));
  out.data.set(a.data);
  return out;
}

/** Concatenate along axis 0 (ONNX Concat). */
export function concatRows(parts: Mat[]): Mat {
  const cols = parts[0].cols;
  const out = mat(parts.reduce((s, p) => s + p.rows, 0), cols, undefined, typeOf(parts[0]));
  let off = 0;
  for (const p of parts) {
    if (p.cols !== cols) throw new Error('concatRows: column mismatch');
    out.data.set(p.data, off);
    off += p.data.length;
  }
  return out;
}

/** Mean over each row (ONNX ReduceMean axis -1). */
export function rowMean(a: Mat): MatArray {
  const out = typeOf(a) === 'float32' ? new Float32Array(a.rows) : new Float64Array(a.rows);
  for (let i = 0; i < a.rows; i++) {
    let s = 0;
    for (let j = 0; j < a.cols; j++) s += a.data[i * a.cols + j];
    out[i] = s / a.cols;
  }
  return out;
}

/**
 * Interleave n [T, c] matrices into [T*n, c] with row t*n + i = parts[i][t]
 * (ONNX Unsqueeze(axis 1) + Concat(axis 1) + Reshape).
 */
export function interleaveRows(parts: Mat[]): Mat {
  const n = parts.length;
  const T = parts[0].rows;
  const c = parts[0].cols;
  const out = mat(T * n, c, undefined, typeOf(parts[0]));
  for (let i = 0; i < n; i++) {
    for (let t = 0; t < T; t++) out.data.set(parts[i].data.subarray(t * c, (t + 1) * c), (t * n + i) * c);
  }
  return out;
}

/** Inverse of interleaveRows for one slot: rows t*n + i (ONNX Reshape [T,n,c] + Gather axis 1). */
export function everyNthRow(a: Mat, n: number, i: number, T: number): Mat {
  const out = mat(T, a.cols, undefined, typeOf(a));
  for (let t = 0; t < T; t++) out.data.set(a.data.subarray((t * n + i) * a.cols, (t * n + i + 1) * a.cols), t * a.cols);
  return out;
}

/**
 * (I + A)^-1 for a strictly lower triangular (hence nilpotent, A^n = 0) n x n
 * matrix A, with MatMul/Add/Sub only:
 *   (I + A)^-1 = sum_{k<n} (-A)^k = (I - A)(I + A^2)(I + A^4)...(I + A^(2^(m-1))), 2^m >= n
 * since (1 - x)(1 + x^2)(1 + x^4)...(1 + x^(2^(m-1))) = sum_{k < 2^m} (-x)^k.
 * (The factors are polynomials in A and commute.) Loop unrolls to m-1 steps.
 */
export function invertUnitLowerNilpotent(A: Mat): Mat {
  const n = A.rows;
  const I = eye(n, typeOf(A));
  let T = sub(I, A); // covers powers 0, 1
  let P = A;
  for (let covered = 2; covered < n; covered *= 2) {
    P = matmul(P, P); // A^covered
    T = matmul(T, add(I, P)); // now covers powers < 2 * covered
  }
  return T;
}

/**
 * out[i][j] = sum_c X[i][c] * Y[j][c] * P[i][j][c]   (P: [rows_X, rows_Y, cols])
 * = ONNX Unsqueeze(X, 1) * Unsqueeze(Y, 0) * P, ReduceSum(axis -1).
 */
export function pairwiseWeightedGram(X: Mat, Y: Mat, P: MatArray): Mat {
  const n = X.rows;
  const m = Y.rows;
  const c = X.cols;
  if (Y.cols !== c || P.length !== n * m * c) throw new Error('pairwiseWeightedGram: shape mismatch');
  const out = mat(n, m, undefined, typeOf(X));
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < m; j++) {
      let s = 0;
      const base = (i * m + j) * c;
      for (let k = 0; k < c; k++) s += X.data[i * c + k] * Y.data[j * c + k] * P[base + k];
      out.data[i * m + j] = s;
    }
  }
  return out;
}

function block(m: Mat, r0: number, c0: number, s: number): Mat {
  const out = mat(s, s, undefined, typeOf(m));
  for (let i = 0; i < s; i++) out.data.set(m.data.subarray((r0 + i) * m.cols + c0, (r0 + i) * m.cols + c0 + s), i * s);
  return out;
}

function setBlock(m: Mat, r0: number, c0: number, b: Mat): void {
  for (let i = 0; i < b.rows; i++) m.data.set(b.data.subarray(i * b.cols, (i + 1) * b.cols), (r0 + i) * m.cols + c0);
}

/**
 * (I + A)^-1 for strictly lower triangular A by blockwise doubling (MatMul
 * only, numerically as benign as forward substitution). Pad to N = 2^m >= n
 * (padding rows/cols of A are 0, i.e. identity blocks). Start from X = I (the
 * inverse of every 1x1 diagonal block of I + A); at level s = 1, 2, 4, ..., N/2
 * merge each pair of adjacent s x s diagonal blocks:
 *   [[L11, 0], [L21, L22]]^-1 = [[X11, 0], [-X22 L21 X11, X22]]
 * where L21 is the corresponding block of A. In ONNX each level is one
 * batched MatMul pair over the N/(2s) block pairs (Reshape + MatMul + Neg).
 */
export function invertUnitLowerBlocked(A: Mat): Mat {
  const n = A.rows;
  let N = 1;
  while (N < n) N *= 2;
  const Ap = mat(N, N, undefined, typeOf(A));
  for (let i = 0; i < n; i++) Ap.data.set(A.data.subarray(i * n, (i + 1) * n), i * N);
  const X = eye(N, typeOf(A));
  for (let s = 1; s < N; s *= 2) {
    for (let p = 0; p < N; p += 2 * s) {
      const X11 = block(X, p, p, s);
      const X22 = block(X, p + s, p + s, s);
      const L21 = block(Ap, p + s, p, s);
      setBlock(X, p + s, p, scale(matmul(matmul(X22, L21), X11), -1));
    }
  }
  return n === N ? X : block(X, 0, 0, n);
}

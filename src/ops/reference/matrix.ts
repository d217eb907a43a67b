/**
 * Small dense float64 matrix helpers for the chunked LiZA prototype. Every
 * helper corresponds to one (or a couple of) ONNX ops, noted on each function,
 * so liza_chunked.ts can be translated op-for-op into an ONNX function body.
 */

export interface Mat {
  rows: number;
  cols: number;
  /** row-major */
  data: Float64Array;
}

export function mat(rows: number, cols: number, data?: ArrayLike<number>): Mat {
  const m: Mat = { rows, cols, data: new Float64Array(rows * cols) };
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
export function eye(n: number): Mat {
  const m = mat(n, n);
  for (let i = 0; i < n; i++) m.data[i * n + i] = 1;
  return m;
}

/**
 * Triangular 0/1 mask (constant): mask[i][j] = 1 if j <= i + k.
 * k = 0: lower triangle including the diagonal; k = -1: strictly lower.
 */
export function trilMask(n: number, k = 0): Mat {
  const m = mat(n, n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (j <= i + k) m.data[i * n + j] = 1;
  return m;
}

/** ONNX MatMul */
export function matmul(a: Mat, b: Mat): Mat {
  if (a.cols !== b.rows) throw new Error(`matmul: ${a.rows}x${a.cols} @ ${b.rows}x${b.cols}`);
  const out = mat(a.rows, b.cols);
  for (let i = 0; i < a.rows; i++) {
    for (let k = 0; k < a.cols; k++) {
      const aik = a.data[i * a.cols + k];
      if (aik === 0) continue;
      for (let j = 0; j < b.cols; j++) out.data[i * b.cols + j] += aik * b.data[k * b.cols + j];
    }
  }
  return out;
}

/** ONNX Transpose */
export function transpose(a: Mat): Mat {
  const out = mat(a.cols, a.rows);
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
export function scaleRows(v: Float64Array, x: Mat): Mat {
  if (v.length !== x.rows) throw new Error(`scaleRows: ${v.length} vs ${x.rows} rows`);
  const out = mat(x.rows, x.cols);
  for (let i = 0; i < x.rows; i++) for (let j = 0; j < x.cols; j++) out.data[i * x.cols + j] = v[i] * x.data[i * x.cols + j];
  return out;
}

/** X * r with r broadcast as a row [1, cols] (ONNX Mul). */
export function scaleCols(x: Mat, r: Float64Array): Mat {
  if (r.length !== x.cols) throw new Error(`scaleCols: ${r.length} vs ${x.cols} cols`);
  const out = mat(x.rows, x.cols);
  for (let i = 0; i < x.rows; i++) for (let j = 0; j < x.cols; j++) out.data[i * x.cols + j] = x.data[i * x.cols + j] * r[j];
  return out;
}

/** [rows, cols] copies of a row vector (ONNX Expand). */
export function expandRow(r: Float64Array, rows: number): Mat {
  const out = mat(rows, r.length);
  for (let i = 0; i < rows; i++) out.data.set(r, i * r.length);
  return out;
}

/** Rows [start, end) (ONNX Slice on axis 0). */
export function sliceRows(a: Mat, start: number, end: number): Mat {
  return { rows: end - start, cols: a.cols, data: a.data.slice(start * a.cols, end * a.cols) };
}

/** Row r as a vector (ONNX Gather / Slice). */
export function row(a: Mat, r: number): Float64Array {
  return a.data.slice(r * a.cols, (r + 1) * a.cols);
}

/** Append zero rows up to `rows` (ONNX Pad). */
export function padRows(a: Mat, rows: number): Mat {
  const out = mat(rows, a.cols);
  out.data.set(a.data);
  return out;
}

/** Concatenate along axis 0 (ONNX Concat). */
export function concatRows(parts: Mat[]): Mat {
  const cols = parts[0].cols;
  const out = mat(parts.reduce((s, p) => s + p.rows, 0), cols);
  let off = 0;
  for (const p of parts) {
    if (p.cols !== cols) throw new Error('concatRows: column mismatch');
    out.data.set(p.data, off);
    off += p.data.length;
  }
  return out;
}

/** Mean over each row (ONNX ReduceMean axis -1). */
export function rowMean(a: Mat): Float64Array {
  const out = new Float64Array(a.rows);
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
  const out = mat(T * n, c);
  for (let i = 0; i < n; i++) {
    for (let t = 0; t < T; t++) out.data.set(parts[i].data.subarray(t * c, (t + 1) * c), (t * n + i) * c);
  }
  return out;
}

/** Inverse of interleaveRows for one slot: rows t*n + i (ONNX Reshape [T,n,c] + Gather axis 1). */
export function everyNthRow(a: Mat, n: number, i: number, T: number): Mat {
  const out = mat(T, a.cols);
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
  const I = eye(n);
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
export function pairwiseWeightedGram(X: Mat, Y: Mat, P: Float64Array): Mat {
  const n = X.rows;
  const m = Y.rows;
  const c = X.cols;
  if (Y.cols !== c || P.length !== n * m * c) throw new Error('pairwiseWeightedGram: shape mismatch');
  const out = mat(n, m);
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

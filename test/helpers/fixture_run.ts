/**
 * Running a fixture's saved inputs in onnxruntime-node and comparing every output with the
 * saved reference (PyTorch, or PyTorch recomputed from the math for builder fixtures).
 */
import { expect } from 'vitest';
import * as ort from 'onnxruntime-node';
import { maxAbs, maxAbsDiff, type RefData, type RefTensor } from './compare.js';

// Tolerance: both sides compute in fp32 with the same math (the graph is a trace
// of the PyTorch code), so differences come only from different kernels and
// reduction orders (MatMul/Gemm blocking, Softmax/LayerNorm/ReduceMean
// accumulation, ORT graph fusions); those are a few fp32 ulps per op, amplified
// through 2 layers to ~1e-6 relative, so 1e-4 of the output's scale leaves
// ample margin while still catching any real semantic error (wrong mask, scale,
// head layout), which shows up at 1e-2 or more.
const REL_TOL = 1e-4;

export function tolerance(ref: RefTensor): number {
  return REL_TOL * Math.max(1, maxAbs(ref.data));
}

export function toOrt(t: RefTensor): ort.Tensor {
  switch (t.dtype) {
    case 'float32':
      return new ort.Tensor('float32', t.data, t.dims);
    case 'int64':
      return new ort.Tensor('int64', t.data, t.dims);
    case 'bool':
      return new ort.Tensor('bool', t.data, t.dims);
  }
}

/** Row-major slice: ranges[i] = [start, end) for dim i; missing dims are kept whole. */
export function sliceTensor(t: RefTensor, ranges: Array<[number, number]>): RefTensor {
  const dims = t.dims;
  const r = dims.map((d, i): [number, number] => ranges[i] ?? [0, d]);
  const outDims = r.map(([s, e]) => e - s);
  const strides = dims.map((_, i) => dims.slice(i + 1).reduce((a, b) => a * b, 1));
  const n = outDims.reduce((a, b) => a * b, 1);
  const src: number[] = new Array<number>(n);
  const idx = new Array<number>(dims.length).fill(0);
  for (let k = 0; k < n; k++) {
    let off = 0;
    for (let i = 0; i < dims.length; i++) off += (r[i]![0] + idx[i]!) * strides[i]!;
    src[k] = off;
    for (let i = dims.length - 1; i >= 0; i--) {
      if (++idx[i]! < outDims[i]!) break;
      idx[i] = 0;
    }
  }
  switch (t.dtype) {
    case 'float32':
      return { ...t, dims: outDims, data: Float32Array.from(src, (o) => t.data[o]!) };
    case 'int64':
      return { ...t, dims: outDims, data: BigInt64Array.from(src, (o) => t.data[o]!) };
    case 'bool':
      return { ...t, dims: outDims, data: Uint8Array.from(src, (o) => t.data[o]!) };
  }
}

export async function runAndCompare(
  session: ort.InferenceSession,
  inputs: RefTensor[],
  outputs: RefTensor[],
): Promise<Record<string, number>> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const t of inputs) feeds[t.name] = toOrt(t);
  const results = await session.run(feeds);
  const diffs: Record<string, number> = {};
  for (const ref of outputs) {
    const got = results[ref.name];
    expect(got, `missing output ${ref.name}`).toBeDefined();
    expect(got!.dims, `dims of ${ref.name}`).toEqual(ref.dims);
    expect(got!.type).toBe(ref.dtype);
    const d = maxAbsDiff(got!.data as Float32Array, ref.data);
    diffs[ref.name] = d;
    expect(d, `${ref.name}: maxAbsDiff ${d} > tol ${tolerance(ref)}`).toBeLessThanOrEqual(tolerance(ref));
  }
  return diffs;
}

/**
 * Loads `onnxPath` in onnxruntime-node, checks its input/output names against the
 * reference, and compares every output; logs the max abs diffs under `label`.
 */
export async function expectMatchesReference(onnxPath: string, ref: RefData, label: string): Promise<void> {
  const session = await ort.InferenceSession.create(onnxPath);
  try {
    expect([...session.inputNames]).toEqual(ref.inputs.map((t) => t.name));
    expect([...session.outputNames]).toEqual(ref.outputs.map((t) => t.name));
    const diffs = await runAndCompare(session, ref.inputs, ref.outputs);
    console.info(`${label}: max abs diff ${JSON.stringify(diffs)}`);
  } finally {
    await session.release();
  }
}

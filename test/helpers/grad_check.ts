/**
 * Gradient checks against central finite differences: a graph computes y = f(x...), the
 * loss is sum(y * W) with W a fixed pattern of y's shape (so every output element counts
 * with its own weight), autodiff appends the backward pass, and onnxruntime computes both
 * the analytic gradients and the loss at x ± h·e_j.
 */
import * as ort from 'onnxruntime-node';
import { Builder, DataType, Model, Value, encodeModel, tensorType } from '../../src/ir/index.js';
import { seededRandom } from '../../src/ir/random.js';
import { differentiate, gradientPath } from '../../src/passes/train/autodiff.js';
import { irFacts, probeValues } from '../../src/runtime/probe.js';

export interface GradCase {
  shapes: number[][];
  build: (b: Builder, xs: Value[]) => Value;
  dtype?: 'float32' | 'float64';
  opset?: number;
  /** Inputs drawn in [lo, hi] (default [-1, 1]). */
  range?: [number, number];
  /** Which inputs to differentiate (default all). */
  wrt?: number[];
  seed?: number;
  /** Elements checked per input at most (spread over the tensor). */
  maxChecks?: number;
}

export interface GradResult {
  /** max |analytic - numeric| / max(scale, |numeric|) over the checked elements */
  worst: number;
  checked: number;
}

export async function gradCheck(c: GradCase): Promise<GradResult> {
  const f64 = (c.dtype ?? 'float64') === 'float64';
  const dt = f64 ? DataType.DOUBLE : DataType.FLOAT;
  const model = new Model({ opsetImports: { '': c.opset ?? 17 } });
  const g = model.graph;
  const xs = c.shapes.map((s, i) => g.addInput(new Value(`x${i}`, tensorType(dt, s))));
  const b = new Builder(g);
  const y = c.build(b, xs);
  // W = sin(0.37 * position + 0.1), y's shape, a constant as far as x is concerned
  const size = b.op('Size', [y]);
  const range = b.op('Range', [b.constant(BigInt64Array.from([0n]), []), size, b.constant(BigInt64Array.from([1n]), [])]);
  const pos = b.op('CastLike', [b.op('Reshape', [range, b.op('Shape', [y])]), y]);
  const w = b.op('Sin', [b.op('Add', [b.op('Mul', [pos, b.op('CastLike', [b.scalar(0.37), y])]), b.op('CastLike', [b.scalar(0.1), y])])]);
  const loss = b.op('ReduceSum', [b.op('Mul', [y, w])], { keepdims: 0 });
  loss.name = 'loss';
  g.addOutput(loss);
  const wrt = (c.wrt ?? xs.map((_, i) => i)).map((i) => xs[i]!);

  const rand = seededRandom(c.seed ?? 1);
  const [lo, hi] = c.range ?? [-1, 1];
  const data = c.shapes.map((s) => {
    const n = s.reduce((p, q) => p * q, 1);
    const a = f64 ? new Float64Array(n) : new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * rand();
    return a;
  });
  const feeds = (arrs: (Float64Array | Float32Array)[]): Record<string, ort.Tensor> =>
    Object.fromEntries(arrs.map((a, i) => [`x${i}`, new ort.Tensor(f64 ? 'float64' : 'float32', a, c.shapes[i]!)]));

  const path = gradientPath(g, loss, wrt);
  const facts = await probeValues(model, feeds(data), [...path.values, ...path.nodes.flatMap((n) => [...n.inputs, ...n.outputs].filter((v): v is Value => !!v))]);
  const grads = differentiate(g, loss, wrt, { info: (v) => irFacts(v) ?? facts.get(v.name), opset: c.opset ?? 17 });
  const gradNames: string[] = [];
  for (const w0 of wrt) {
    const gv = grads.get(w0)!;
    const id = b.op('Identity', [gv]);
    id.name = `grad_${w0.name}`;
    g.addOutput(id);
    gradNames.push(id.name);
  }
  const session = await ort.InferenceSession.create(encodeModel(model), { logSeverityLevel: 3 });
  try {
    const out = await session.run(feeds(data));
    const lossAt = async (arrs: (Float64Array | Float32Array)[]): Promise<number> => Number((await session.run(feeds(arrs))).loss!.data[0]);
    let worst = 0;
    let checked = 0;
    const scale = f64 ? 1e-6 : 1e-2;
    for (let k = 0; k < wrt.length; k++) {
      const i = xs.indexOf(wrt[k]!);
      const analytic = out[gradNames[k]!]!.data as Float64Array | Float32Array;
      const n = data[i]!.length;
      const maxChecks = c.maxChecks ?? 24;
      const stride = Math.max(1, Math.floor(n / maxChecks));
      for (let j = 0; j < n; j += stride) {
        const h = f64 ? 1e-6 : 1e-2;
        const plus = data.map((a) => a.slice());
        const minus = data.map((a) => a.slice());
        plus[i]![j]! += h;
        minus[i]![j]! -= h;
        const numeric = ((await lossAt(plus)) - (await lossAt(minus))) / (2 * h);
        const err = Math.abs(analytic[j]! - numeric) / Math.max(scale, Math.abs(numeric));
        worst = Math.max(worst, err);
        checked++;
      }
    }
    return { worst, checked };
  } finally {
    await session.release();
  }
}

/**
 * onnxruntime's quantize_dynamic, in small: every MatMul of the main graph with a 2-D float
 * weight initializer becomes DynamicQuantizeLinear(x) → MatMulInteger(y, W_q int8, y_zp) →
 * Cast(float) → Mul(·, y_scale · w_scale), W_q = round(W / w_scale), w_scale = max|W| / 127.
 * `dequantized` instead replaces W by W_q · w_scale in a float MatMul: the same weights,
 * float activations (what the straight-through gradient of the quantized model estimates).
 */
import { Builder, DataType, type Model, Tensor, type Value } from '../../src/ir/index.js';

export function quantizeDynamic(model: Model, mode: 'integer' | 'dequantized' = 'integer'): number {
  const g = model.graph;
  let n = 0;
  for (const mm of g.nodes()) {
    const w = mm.input(1);
    const t = w?.initializer;
    if (!mm.is('MatMul') || !t || t.dims.length !== 2 || t.dataType !== DataType.FLOAT) continue;
    const data = t.toTypedArray() as Float32Array;
    const scale = Math.max(...Array.from(data, Math.abs)) / 127 || 1;
    const q = Int8Array.from(data, (x) => Math.max(-127, Math.min(127, Math.round(x / scale))));
    const b = new Builder(g, { before: mm, prefix: `${mm.name}/q/` });
    let out: Value;
    if (mode === 'dequantized') {
      out = b.op('MatMul', [mm.requireInput(0), b.initializer('w_deq', Float32Array.from(q, (v) => v * scale), t.dims.slice())]);
    } else {
      const [y, yScale, yZp] = b.op('DynamicQuantizeLinear', [mm.requireInput(0)], {}, { outputs: 3 }) as Value[] as [Value, Value, Value];
      const wq = b.initializer('w_q', Tensor.fromArray(q, t.dims.slice(), DataType.INT8));
      const product = b.op('MatMulInteger', [y, wq, yZp]);
      out = b.op('Mul', [b.op('Cast', [product], { to: DataType.FLOAT }), b.op('Mul', [yScale, b.scalar(scale)])]);
    }
    // (the product keeps the MatMul's output name: logits stay logits)
    const name = mm.output.name;
    mm.output.name = g.uniqueName(`${name}_float`);
    out.name = name;
    out.type = mm.output.type;
    mm.output.replaceAllUsesWith(out);
    g.remove(mm);
    n++;
  }
  return n;
}

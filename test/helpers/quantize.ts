/**
 * onnxruntime's quantize_dynamic, in small: every MatMul of the main graph with a 2-D float
 * weight initializer becomes DynamicQuantizeLinear(x) → MatMulInteger(y, W_q int8, y_zp) →
 * Cast(float) → Mul(·, y_scale · w_scale), W_q = round(W / w_scale), w_scale = max|W| / 127.
 * `dequantized` instead replaces W by W_q · w_scale in a float MatMul: the same weights,
 * float activations (what the straight-through gradient of the quantized model estimates).
 */
import { Builder, DataType, type Model, Tensor, type Value } from '../../src/ir/index.js';

export function quantizeDynamic(model: Model, mode: 'integer' | 'dequantized' = 'integer'): number {
  return quantize(model, mode === 'integer' ? 'integer' : 'integer-dequantized');
}

/**
 * 4-bit blocks as onnxruntime's MatMul4BitsQuantizer writes them: MatMulNBits(x, B [N, K/16, 8]
 * uint8 (two 4-bit values a byte, the even one low), scales [N · K/16]), zero point 8, blocks of
 * 16 along K. `dequantized`: the same weights as a float MatMul (exactly what the op computes).
 */
export function quantize4Bit(model: Model, mode: 'nbits' | 'dequantized' = 'nbits'): number {
  return quantize(model, mode === 'nbits' ? 'nbits' : 'nbits-dequantized');
}

const BLOCK = 16;

function quantize(model: Model, mode: 'integer' | 'integer-dequantized' | 'nbits' | 'nbits-dequantized'): number {
  const g = model.graph;
  let n = 0;
  for (const mm of g.nodes()) {
    const w = mm.input(1);
    const t = w?.initializer;
    if (!mm.is('MatMul') || !t || t.dims.length !== 2 || t.dataType !== DataType.FLOAT) continue;
    const data = t.toTypedArray() as Float32Array;
    const [K, N] = [t.dims[0]!, t.dims[1]!];
    const b = new Builder(g, { before: mm, prefix: `${mm.name}/q/` });
    let out: Value;
    if (mode.startsWith('nbits')) {
      if (K % BLOCK !== 0) continue;
      const blocks = K / BLOCK;
      const { packed, scales, deq } = pack4Bit(data, K, N, BLOCK);
      if (mode === 'nbits-dequantized') out = b.op('MatMul', [mm.requireInput(0), b.initializer('w_deq', deq, [K, N])]);
      else {
        model.requireOpset('com.microsoft', 1);
        const bq = b.initializer('w_q4', Tensor.fromArray(packed, [N, blocks, BLOCK / 2], DataType.UINT8));
        out = b.op('MatMulNBits', [mm.requireInput(0), bq, b.initializer('w_scales', scales, [N * blocks])], { K, N, bits: 4, block_size: BLOCK }, { domain: 'com.microsoft' });
      }
    } else {
      const scale = Math.max(...Array.from(data, Math.abs)) / 127 || 1;
      const q = Int8Array.from(data, (x) => Math.max(-127, Math.min(127, Math.round(x / scale))));
      if (mode === 'integer-dequantized') {
        out = b.op('MatMul', [mm.requireInput(0), b.initializer('w_deq', Float32Array.from(q, (v) => v * scale), t.dims.slice())]);
      } else {
        const [y, yScale, yZp] = b.op('DynamicQuantizeLinear', [mm.requireInput(0)], {}, { outputs: 3 }) as Value[] as [Value, Value, Value];
        const wq = b.initializer('w_q', Tensor.fromArray(q, t.dims.slice(), DataType.INT8));
        const product = b.op('MatMulInteger', [y, wq, yZp]);
        out = b.op('Mul', [b.op('Cast', [product], { to: DataType.FLOAT }), b.op('Mul', [yScale, b.scalar(scale)])]);
      }
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

/**
 * W [K, N] (row-major) as MatMulNBits' 4-bit blocks along K: B [N, K/block, block/2] (two
 * values a byte, the even one in the low nibble, zero point 8), scales [N · K/block]
 * (max |w| / 7 per block), and the dequantized weights [K, N] the op computes with.
 */
export function pack4Bit(w: Float32Array, K: number, N: number, block: number): { packed: Uint8Array; scales: Float32Array; deq: Float32Array } {
  const blocks = K / block;
  const packed = new Uint8Array(N * blocks * (block / 2));
  const scales = new Float32Array(N * blocks);
  const deq = new Float32Array(K * N);
  for (let c = 0; c < N; c++) {
    for (let bl = 0; bl < blocks; bl++) {
      let m = 0;
      for (let i = 0; i < block; i++) m = Math.max(m, Math.abs(w[(bl * block + i) * N + c]!));
      const sc = m / 7 || 1;
      scales[c * blocks + bl] = sc;
      for (let i = 0; i < block; i++) {
        const k = bl * block + i;
        const q = Math.max(0, Math.min(15, Math.round(w[k * N + c]! / sc) + 8));
        deq[k * N + c] = (q - 8) * sc;
        const byte = (c * blocks + bl) * (block / 2) + (i >> 1);
        packed[byte] = packed[byte]! | (i & 1 ? q << 4 : q);
      }
    }
  }
  return { packed, scales, deq };
}

/**
 * Reference implementation of the ai.tptt `MaG` operator (memory-as-gate mix):
 *   out = (1 - mu) * a + mu * y
 * a, y: [B, T, C] (any equal shapes); mu: a scalar, or a tensor of shape [] or [1].
 */

import { type FloatType, type NdArray, allocate, assertDims, sizeOf } from './tensor.js';

export interface MagOptions {
  /** Element type of the output; default 'float32' (as the ONNX op). */
  outputType?: FloatType;
}

export function magReference(a: NdArray, y: NdArray, mu: number | NdArray, options: MagOptions = {}): NdArray {
  assertDims('MaG y', y, a.dims);
  if (a.data.length !== sizeOf(a.dims)) throw new Error('MaG a: data length does not match dims');
  let m: number;
  if (typeof mu === 'number') {
    m = mu;
  } else {
    if (mu.data.length !== 1 || mu.dims.length > 1) throw new Error(`MaG mu must be a scalar or [1], got ${JSON.stringify(mu.dims)}`);
    m = mu.data[0];
  }
  const out = allocate(a.data.length, options.outputType ?? 'float32');
  for (let i = 0; i < out.length; i++) out[i] = (1 - m) * a.data[i] + m * y.data[i];
  return { data: out, dims: [...a.dims] };
}

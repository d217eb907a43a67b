/**
 * Makes an fp16 copy of an fp32 model, the way users ship them: float initializers,
 * Constant values, Cast targets, ConstantOfShape fills and the float graph inputs and
 * outputs become float16 (values beyond ±65504 are clamped, as fp16 converters do with
 * finfo.min masks). Integer parts are untouched.
 */
import { AttributeType, DataType, type Model, Tensor, type TypeInfo } from '../../src/ir/index.js';
import { tensorNumbers } from '../../src/passes/util/constants.js';

const MAX_HALF = 65504;

export function floatToHalf(x: number): number {
  const f = new Float32Array([Math.max(-MAX_HALF, Math.min(MAX_HALF, x))]);
  const u = new Uint32Array(f.buffer)[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = ((u >>> 23) & 0xff) - 127 + 15;
  const mant = u & 0x7fffff;
  if (Number.isNaN(x)) return 0x7e00;
  if (exp <= 0) {
    if (exp < -10) return sign;
    const m = (mant | 0x800000) >> (1 - exp);
    return sign | ((m + 0x1000) >> 13);
  }
  if (exp >= 31) return sign | 0x7bff;
  const half = sign | (exp << 10) | (mant >> 13);
  // round to nearest
  return (mant & 0x1000) !== 0 ? half + 1 : half;
}

function toHalf(t: Tensor): Tensor {
  const nums = tensorNumbers(t, Number.MAX_SAFE_INTEGER)!;
  const out = Tensor.fromArray(Uint16Array.from(nums, floatToHalf), t.dims.slice(), DataType.FLOAT16, t.name);
  return out;
}

function halfType(t: TypeInfo | undefined): void {
  if (t && t.kind === 'tensor' && t.elemType === DataType.FLOAT) (t as { elemType: DataType }).elemType = DataType.FLOAT16;
}

export function toFloat16(model: Model): Model {
  const g = model.graph;
  for (const v of g.initializers.values()) if (v.initializer && v.initializer.dataType === DataType.FLOAT) v.initializer = toHalf(v.initializer);
  for (const v of [...g.inputs, ...g.outputs]) halfType(v.type);
  for (const n of g) {
    for (const o of n.outputs) halfType(o.type);
    for (const a of n.attributes.values()) {
      if (a.type === AttributeType.TENSOR && a.value.dataType === DataType.FLOAT) n.attributes.set(a.name, { ...a, value: toHalf(a.value) });
    }
    if (n.opType === 'Cast' && n.getInt('to') === DataType.FLOAT) n.setAttribute('to', DataType.FLOAT16);
    if (n.opType === 'Constant' && n.attribute('value_float')) n.setAttribute('value', toHalf(Tensor.scalar(n.getFloat('value_float'))));
  }
  for (const n of g) if (n.opType === 'Constant' && n.attribute('value_float')) n.attributes.delete('value_float');
  return model;
}

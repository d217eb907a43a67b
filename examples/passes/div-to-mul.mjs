/**
 * An example rule pass for `titanize convert --pass`: rules for titanize's pattern engine,
 * applied by its greedy driver. Div by a float scalar constant becomes Mul by its inverse
 * (the attention scale of many exports, and the converted memory's constants), and every
 * node it creates carries metadata titanize.rule = 'div-by-constant-to-mul'.
 *
 *   titanize convert model.onnx -o titan.onnx --pass examples/passes/div-to-mul.mjs
 */
import { constantTensor, defineRule, fail, ok } from 'titanize/passes';

const FLOAT = 1; // onnx TensorProto.FLOAT

const divToMul = defineRule({
  name: 'div-by-constant-to-mul',
  pattern: (op) => op.Div(op.var('x'), op.const('c')),
  check(m) {
    const c = m.constant('c');
    if (!c || c.length !== 1 || !Number.isFinite(c[0]) || c[0] === 0) return fail('the divisor is not a finite non-zero scalar');
    // float32 divisions only (integer Div truncates; shape arithmetic is int64)
    if (constantTensor(m.value('c'))?.dataType !== FLOAT) return fail('not a float32 division');
    return ok({ inverse: 1 / c[0] });
  },
  rewrite: (m, b) => b.op('Mul', [m.value('x'), b.scalar(m.bindings.inverse)]),
});

export const name = 'div-to-mul';
export const description = 'Div by a float scalar constant becomes Mul by its inverse';
export const rules = [divToMul];

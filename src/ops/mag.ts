/**
 * ai.tptt.MaG (memory as gate): out = (1 - mu) * a + mu * y, applied before the unchanged
 * output projection. Written as (1 - mu) * a + mu * y (not a + mu * (y - a)) so that
 * mu = 0 gives exactly a and mu = 1 exactly y in fp32.
 *
 * Forms: the reference (reference/mag.ts), the ONNX function body below, and an inline
 * emission of the same three ops (there is nothing to lower: the body is already three
 * elementwise standard ops that every runtime fuses or runs at memory speed).
 */
import { Builder } from '../ir/builder.js';
import { UserInputError } from '../ir/errors.js';
import { IRFunction } from '../ir/function.js';
import type { Graph } from '../ir/graph.js';
import type { Model } from '../ir/model.js';
import type { Node } from '../ir/node.js';
import { Value } from '../ir/value.js';
import { Emitter } from './emit.js';
import { MAG_SCHEMA, MIN_ONNX_OPSET, TPTT_DOMAIN, TPTT_OPSET_VERSION } from './schema.js';

/** Emits (1 - mu) * a + mu * y at the emitter's insertion point. */
export function emitMag(e: Emitter, a: Value, y: Value, mu: Value): Value {
  return e.add(e.mul(e.sub(e.f(1), mu), a), e.mul(mu, y));
}

/** The ai.tptt.MaG model-local function (no overloads: one body for every shape). */
export function magFunction(opset = MIN_ONNX_OPSET): IRFunction {
  if (opset < MIN_ONNX_OPSET) throw new UserInputError(`ai.tptt.MaG: the function body needs default-domain opset >= ${MIN_ONNX_OPSET}, got ${opset}`);
  const fn = new IRFunction(TPTT_DOMAIN, 'MaG');
  fn.docString = 'ai.tptt.MaG: (1 - mu) * a + mu * y; see titanize docs/ops.md';
  fn.opsetImports.set('', opset);
  const [a, y, mu] = MAG_SCHEMA.inputs.map((i) => fn.body.addInput(new Value(i.name))) as [Value, Value, Value];
  const e = new Emitter(new Builder(fn.body));
  fn.body.setOutputs([e.op('Identity', [emitMag(e, a, y, mu)])]);
  return fn;
}

export interface AddMagOptions {
  before?: Node;
  name?: string;
  /** Add the node through this builder (its insertion point, name prefix and provenance tag; `before` is then ignored). */
  builder?: Builder;
}

/**
 * Adds a call of ai.tptt.MaG to `graph` (adding the function and the 'ai.tptt' import to
 * the model once). `mu` is normally a scalar float initializer, one per layer.
 */
export function addMagNode(model: Model, graph: Graph, a: Value, y: Value, mu: Value, options: AddMagOptions = {}): { node: Node; out: Value } {
  const opset = model.opsetVersion('');
  if (opset === undefined || opset < MIN_ONNX_OPSET) {
    throw new UserInputError(`ai.tptt.MaG: the model imports default-domain opset ${opset ?? 'none'}; the function body needs >= ${MIN_ONNX_OPSET}`);
  }
  model.requireOpset(TPTT_DOMAIN, TPTT_OPSET_VERSION);
  if (!model.findFunction(TPTT_DOMAIN, 'MaG')) model.addFunction(magFunction(opset));
  const b = options.builder ?? new Builder(graph, { before: options.before, tag: 'ai.tptt.MaG' });
  const node = b.node('MaG', [a, y, mu], {}, { domain: TPTT_DOMAIN, name: options.name ?? 'MaG' });
  return { node, out: node.outputs[0]! };
}

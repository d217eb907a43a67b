/**
 * Lowering of ai.tptt.LiZA to the standard `LinearAttention` of the default ONNX domain,
 * opset 27, for runtimes that implement it.
 *
 * The opset-27 op has the same signature as com.microsoft.LinearAttention (see
 * lower_contrib.ts) minus `state_window`: inputs query, key, value, past_state?, decay?,
 * beta?; outputs output, present_state; attributes update_rule, q_num_heads,
 * kv_num_heads, scale (0 = 1/sqrt(dk); we pass 1.0), chunk_size. It is defined with an
 * ONNX function body, so a runtime without a kernel can still expand it.
 *
 * onnxruntime 1.30.0 and opset 27: a model importing ai.onnx opset 27 is REFUSED by
 * default ("Current official support for domain ai.onnx is till opset 26": opset 27 is
 * not a released ONNX opset for it). With the environment variable
 * ALLOW_RELEASED_ONNX_OPSET_ONLY=0 (read when a session loads a model) it loads with a
 * warning, and LinearAttention runs through its ONNX function body (no dedicated kernel);
 * the tests check the numerics that way and print the refusal reason. A model's default
 * domain has one opset version, so the whole model must import opset 27.
 */
import type { Builder } from '../ir/builder.js';
import { Emitter } from './emit.js';
import { type LizaGraphInputs, type LizaGraphOutputs, emitLiza } from './liza_graph.js';
import { presenceOf } from './liza_function.js';
import { linearAttentionCore } from './lower_contrib.js';
import { type LizaOpAttributes, resolveLizaAttributes, validateLizaInputs } from './schema.js';

/** The default-domain opset that introduced LinearAttention. */
export const LINEAR_ATTENTION_OPSET = 27;
/** The onnxruntime environment variable that lets 1.30 load opset-27 models. */
export const ORT_ALLOW_UNRELEASED_OPSET_ENV = 'ALLOW_RELEASED_ONNX_OPSET_ONLY';

/** Emits LiZA lowered to the opset-27 LinearAttention (the graph must import opset 27). */
export function emitLizaOnnx27(b: Builder, attrs: LizaOpAttributes, inputs: LizaGraphInputs): LizaGraphOutputs {
  const cfg = resolveLizaAttributes(attrs);
  validateLizaInputs(cfg, presenceOf(inputs));
  return emitLiza(new Emitter(b), cfg, inputs, linearAttentionCore(''));
}

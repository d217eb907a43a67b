/** The ai.tptt operator set: schemas, function bodies, lowerings and references. */
export * from './schema.js';
export { Emitter, END } from './emit.js';
export {
  type LizaGraphInputs,
  type LizaGraphOutputs,
  type PreparedSequence,
  type SequenceLayout,
  emitPrepare,
  emitLiza,
  rowsPerToken,
} from './liza_graph.js';
export {
  type AddLizaOptions,
  type LizaNodeResult,
  ABSENT_INPUT,
  LIZA_INPUT_NAMES,
  LIZA_OUTPUT_NAMES,
  addLizaNode,
  emitInvertUnitLower,
  emitLizaChunked,
  lizaFunction,
  lizaOverload,
  lizaInput,
  presenceOf,
} from './liza_function.js';
export { emitLizaScanOracle } from './liza_scan_oracle.js';
export {
  CONTRIB_DOMAIN,
  LOWERED_LIZA_KEY,
  type LoweredLiza,
  emitLizaContrib,
  linearAttentionCore,
  linearAttentionRule,
} from './lower_contrib.js';
export { LINEAR_ATTENTION_OPSET, ORT_ALLOW_UNRELEASED_OPSET_ENV, emitLizaOnnx27 } from './lower_onnx27.js';
export { addMagNode, emitMag, magFunction } from './mag.js';
export {
  type LizaAttributes,
  type LizaInputs,
  type LizaOutputs,
  type LizaRule,
  LIZA_RULES,
  isGatedRule,
  isProductRule,
  lizaReference,
  windowSize,
} from './reference/liza.js';
export { lizaChunked } from './reference/liza_chunked.js';
export { magReference } from './reference/mag.js';
export type { NdArray } from './reference/tensor.js';

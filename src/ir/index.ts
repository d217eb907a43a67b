/**
 * The ONNX IR: public surface. Touches no file system and no Node API (it bundles for the
 * browser); reading and writing files is the Node layer's (`src/node`).
 */
export * from './attribute.js';
export * from './builder.js';
export * from './data_sources.js';
export * from './dtype.js';
export * from './errors.js';
export * from './external_data.js';
export * from './function.js';
export * from './graph.js';
export * from './metadata.js';
export * from './model.js';
export * from './node.js';
export * from './tensor.js';
export * from './traversal.js';
export * from './types.js';
export * from './value.js';
export * from './verify.js';
export { decodeModel, type DecodeOptions } from './serde/decode.js';
export { encodeModel, type EncodeOptions } from './serde/encode.js';
export * from './random.js';

/** The ONNX IR: public surface. */
export * from './attribute.js';
export * from './builder.js';
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
export { loadModel, saveModel, allTensors, checkExternalFiles, type LoadOptions, type SaveOptions } from './serde/files.js';

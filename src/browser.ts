/**
 * titanize's browser-safe entry: the ONNX IR and its reader/writer over bytes
 * (`decodeModel`, `encodeModel`), the ai.tptt operators, and the passes (`discoverAttention`,
 * `convert`, `mergeLora`, training graphs, ...). It imports no Node module and uses no Node
 * global, so it bundles for the browser (`titanize/browser`); external weights come from an
 * `ExternalDataSource` (`bytesSource`, `blobSource`, or your own). Files (`loadModel`,
 * `saveModel`) are the Node layer's, and running models is the runtime's: both are in the
 * package entry, `titanize`.
 */
export * from './ir/index.js';
export * from './ops/index.js';
export * from './passes/index.js';

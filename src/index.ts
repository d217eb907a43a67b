/**
 * titanize as a library. Layers, in dependency order:
 * - the ONNX IR and its lossless reader/writer (`loadModel`, `saveModel`, `Builder`, ...);
 * - the ai.tptt operator set (LiZA, MaG: references, function bodies, lowerings);
 * - passes: the pass manager, the pattern engine, attention discovery, and `convert`;
 * - the runtime: onnxruntime sessions with execution-provider choice, generation.
 */
export * from './ir/index.js';
export * from './ops/index.js';
export * from './passes/index.js';
export * from './passes/convert/index.js';
export * from './runtime/index.js';

/**
 * titanize as a library. Layers, in dependency order:
 * - the ONNX IR and its lossless reader/writer (`decodeModel`, `encodeModel`, `Builder`, ...);
 * - the ai.tptt operator set (LiZA, MaG: references, function bodies, lowerings);
 * - passes: the pass manager, the pattern engine, attention discovery, and `convert`;
 * - files (`loadModel`, `saveModel`, external data next to the model): the Node layer;
 * - the runtime: onnxruntime sessions with execution-provider choice, generation.
 * The first three, without files or onnxruntime, are the browser-safe `titanize/browser` (`src/browser.ts`).
 */
export * from './browser.js';
export * from './node/index.js';
export * from './runtime/index.js';

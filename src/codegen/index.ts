/**
 * Code generation: a typed TypeScript module for a decoder model (interfaces for its inputs,
 * outputs and carried state, and a class that runs it with onnxruntime-node or -web).
 * Uses ts-morph; the CLI loads it only for `titanize codegen`.
 */
export { type CodegenOptions, type CodegenSummary, checkModule, codegen, planModule } from './codegen.js';
export { type ModelDescription, describeModel } from './describe.js';
export { GENERATED_MARK, REGIONS, generateModule, moduleNames } from './model_module.js';
export { type UserRegion, parseRegions, fillRegions } from './regions.js';
export { updateModule } from './update.js';

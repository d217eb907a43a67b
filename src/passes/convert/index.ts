/** Conversion passes: the TPTT rewrite, sliding window, LoRA, and the `convert` driver. */
export { CONVERTED_KEY, type ConvertContext, type ConvertPass, ConvertPipeline, type ConvertReport, type ConvertResult, checkNotConverted, convert, convertModel, convertPipeline } from './convert.js';
export { CONVERT_TARGETS, type ConvertOptions, type ConvertTarget, type ResolvedConvertOptions, parseLayers, resolveConvertOptions } from './options.js';
export { LORA_RULE, type LoraAdapter, type LoraOptions, type LoraTarget, addLora, mergeLora, projectionShape } from './lora.js';
export { type ConvertedSite, TPTT_RULE, convertSite } from './tptt.js';
export { WINDOW_RULE, applyWindow } from './window.js';

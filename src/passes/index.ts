/** Passes: the pass infrastructure, the pattern engine, attention discovery, and the conversion pipeline. */
export * from './pass.js';
export * from './pattern/index.js';
export * from './attention/index.js';
export { constantTensor, constantValues, scalarValue, isConstant } from './util/constants.js';
export { type UpgradeReport, upgradeOpset } from './upgrade_opset.js';
export {
  LOWER_CONTRIB_RULE,
  LOWER_ONNX27_RULE,
  type LizaEmitter,
  type LoweringReport,
  lizaLoweringRule,
  lowerLiza,
  lowerLizaToContrib,
  lowerLizaToOnnx27,
} from './lower_liza.js';
export * from './train/index.js';
export * from './convert/index.js';
export { type CachePair, type DecoderIO, decoderIO, findDecoderIO } from './analysis/io.js';

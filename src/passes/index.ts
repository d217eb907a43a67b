/** Passes: the pass infrastructure, the pattern engine, and attention discovery. */
export * from './pass.js';
export * from './pattern/index.js';
export * from './attention/index.js';
export { constantTensor, constantValues, scalarValue, isConstant } from './util/constants.js';
export { type UpgradeReport, upgradeOpset } from './upgrade_opset.js';
export * from './train/index.js';

/** The pattern engine: declarative patterns, rules, the greedy driver, and the tracer. */
export * from './pattern.js';
export * from './matcher.js';
export * from './rule.js';
export * from './driver.js';
export * from './tracer.js';

/** Every gradient rule, registered on import. */
import './elementwise.js';
import './layout.js';
import './linalg.js';
import './reduce.js';

export * from './registry.js';
export { isFloatType } from './elementwise.js';

/**
 * `npm run bench`: runs the registered benchmark suites in order.
 *
 *   npm run bench                      # everything
 *   npm run bench -- --quick           # smoke run: small sizes, few repetitions
 *   npm run bench -- --only ir_serde   # one suite ('ir_serde' also selects 'ir_serde.*')
 *
 * To add a suite, write bench/<name>.bench.ts calling `suite(...)` from ./harness.js and
 * import it below; suites run in import order. See bench/README.md.
 */
import { main } from './harness.js';

import './ir_serde.bench.js';
import './discovery.bench.js';
import './ops.bench.js';
import './convert.bench.js';
import './decode.bench.js';
import './decode_webgpu.bench.js';
import './train.bench.js';

process.exitCode = await main(process.argv.slice(2));

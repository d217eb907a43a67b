#!/usr/bin/env node
// Launcher for the `titanize` command line (built code in dist/: run `npm run build` first).
import { main } from '../dist/src/cli/main.js';

// `titanize inspect big.onnx | head`: a closed pipe is not an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e) => {
    if (e && e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw e;
  });
}

process.exitCode = await main(process.argv);

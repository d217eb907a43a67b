import { buildLadder } from '/work/main/dist/bench/ir_serde.bench.js';
import { decodeModel, encodeModel, saveModel } from '/work/main/dist/src/ir/index.js';
import fs from 'node:fs';
const mode = process.argv[2];
const file = '/tmp/bprof/ladder200k.onnx';
if (mode === 'build') {
  let t0 = performance.now();
  const m = buildLadder(200000);
  console.log('build ms', (performance.now() - t0).toFixed(0));
  saveModel(m, file);
} else if (mode === 'decode') {
  const bytes = fs.readFileSync(file);
  for (let i = 0; i < 3; i++) { gc(); const t0 = performance.now(); decodeModel(bytes); console.log('decode ms', (performance.now() - t0).toFixed(0)); }
} else if (mode === 'encode') {
  const bytes = fs.readFileSync(file);
  const m = decodeModel(bytes);
  for (let i = 0; i < 3; i++) { gc(); const t0 = performance.now(); encodeModel(m); console.log('encode ms', (performance.now() - t0).toFixed(0)); }
}

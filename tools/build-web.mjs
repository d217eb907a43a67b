#!/usr/bin/env node
/**
 * Builds the browser page: web/app.ts (with titanize's browser-safe core) bundled by
 * esbuild for the browser, web/index.html, onnxruntime-web's WebAssembly files (plain and
 * WebGPU/JSEP builds) and the bundled example (the fidelity byte-level Llama and its
 * tokenizer) into OUT (default web/dist).
 *
 *   node tools/build-web.mjs [OUT]        # then serve OUT: node tools/serve-web.mjs [OUT]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export async function buildWeb(out = path.join(ROOT, 'web/dist')) {
  fs.mkdirSync(path.join(out, 'ort'), { recursive: true });
  fs.mkdirSync(path.join(out, 'example'), { recursive: true });
  const result = await build({
    entryPoints: [path.join(ROOT, 'web/app.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    outfile: path.join(out, 'app.js'),
    sourcemap: true,
    metafile: true,
    logLevel: 'warning',
  });
  fs.copyFileSync(path.join(ROOT, 'web/index.html'), path.join(out, 'index.html'));
  const ortDist = path.join(ROOT, 'node_modules/onnxruntime-web/dist');
  for (const f of ['ort-wasm-simd-threaded.wasm', 'ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.jsep.wasm', 'ort-wasm-simd-threaded.jsep.mjs']) {
    fs.copyFileSync(path.join(ortDist, f), path.join(out, 'ort', f));
  }
  fs.copyFileSync(path.join(ROOT, 'test/fixtures/fidelity/lm.onnx'), path.join(out, 'example/lm.onnx'));
  fs.copyFileSync(path.join(ROOT, 'test/fixtures/tokenizer.json'), path.join(out, 'example/tokenizer.json'));
  return { out, metafile: result.metafile };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { out } = await buildWeb(process.argv[2] ? path.resolve(process.argv[2]) : undefined);
  console.log(`web page built in ${path.relative(process.cwd(), out) || '.'}; serve it with: node tools/serve-web.mjs ${path.relative(process.cwd(), out)}`);
}

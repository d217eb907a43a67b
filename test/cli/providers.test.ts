/**
 * Execution-provider errors the user can act on, through the real launcher in a child
 * process (the Vulkan loader reads its environment at start): no WebGPU adapter is one
 * sentence with what to install, exit 2; with --ep-fallback the CPU runs it, with a warning.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.join(ROOT, 'bin/titanize.js');
const built = fs.existsSync(path.join(ROOT, 'dist/src/cli/main.js'));
// a Vulkan loader pointed at no driver: no adapter, whatever the machine has
const env = { ...process.env, VK_ICD_FILENAMES: path.join(os.tmpdir(), 'no-such-icd.json'), VK_DRIVER_FILES: path.join(os.tmpdir(), 'no-such-icd.json'), XDG_RUNTIME_DIR: os.tmpdir() };
const run = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env, timeout: 120_000 });
const llama = path.join(ROOT, 'test/fixtures/llama.onnx');

it.skipIf(!built)('--ep webgpu without an adapter: one line, what to install, exit 2; --ep-fallback runs on the CPU with a warning', () => {
  const r = run('generate', llama, '--ids', '1,2', '--max-new-tokens', '2', '--ep', 'webgpu');
  expect(r.status, r.stderr).toBe(2);
  const lines = r.stderr.split('\n').filter((l) => l.startsWith('titanize:'));
  expect(lines).toEqual([expect.stringMatching(/^titanize: error: no WebGPU adapter is available .*mesa-vulkan-drivers\); use --ep cpu \(or pass --ep-fallback to run on the CPU instead\)$/)]);
  expect(r.stdout).toBe('');
  const f = run('generate', llama, '--ids', '1,2', '--max-new-tokens', '2', '--ep', 'webgpu', '--ep-fallback');
  expect(f.status, f.stderr).toBe(0);
  expect(f.stderr).toMatch(/titanize: warning: no WebGPU adapter is available .*; falling back to the CPU/);
  expect(f.stderr).toMatch(/decode: 2 tokens, .* \(cpu\)/);
});

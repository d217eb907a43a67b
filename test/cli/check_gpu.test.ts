/**
 * `npm run check:gpu` (tools/check-gpu.ts, built to dist/ by `npm ci`) skips cleanly on a
 * machine without an NVIDIA GPU or without the CUDA provider: one line saying why, exit 0.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SCRIPT = path.join(ROOT, 'dist/tools/check-gpu.js');
const hasGpu = spawnSync('nvidia-smi', ['-L']).status === 0;

it.skipIf(!fs.existsSync(SCRIPT))('check:gpu says why it skips, and exits 0, where there is no GPU or no CUDA provider', () => {
  const r = spawnSync(process.execPath, [SCRIPT], { encoding: 'utf8', timeout: 120_000 });
  expect(r.status, r.stderr).toBe(0);
  if (!hasGpu) expect(r.stdout.trim()).toBe('check:gpu: no NVIDIA GPU here (nvidia-smi found none); skipped');
  else expect(r.stdout).toMatch(/check:gpu: (ok|.*; skipped)/);
});

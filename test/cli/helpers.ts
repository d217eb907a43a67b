/** Running `titanize` in-process with captured streams, and the user-error contract. */
import { expect } from 'vitest';
import type { OutStream } from '../../src/cli/context.js';
import { main } from '../../src/cli/main.js';

export class Capture implements OutStream {
  text = '';
  constructor(
    readonly isTTY = false,
    readonly columns = 100,
  ) {}
  write(chunk: string | Uint8Array): boolean {
    this.text += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    return true;
  }
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function run(args: string[], env: Record<string, string | undefined> = {}, io: { signal?: AbortSignal; stdout?: Capture; stderr?: Capture } = {}): Promise<RunResult> {
  const stdout = io.stdout ?? new Capture();
  const stderr = io.stderr ?? new Capture();
  const code = await main(['node', 'titanize', ...args], { stdout, stderr, env, signal: io.signal });
  // every CLI test is also a check of the error policy: whatever the user passes, titanize
  // never answers with "internal error" (that exit status is kept for real bugs)
  expect(stderr.text, `titanize ${args.join(' ')}`).not.toMatch(/titanize: internal error/);
  expect(code, `titanize ${args.join(' ')}: ${stderr.text}`).not.toBe(1);
  return { code, stdout: stdout.text, stderr: stderr.text };
}

export function lines(s: string): string[] {
  return s.split('\n').filter((l) => l !== '');
}

/** Exit 2, exactly one stderr line `titanize: error: ...`, no stack trace, nothing on stdout. */
export function expectUserError(r: RunResult, pattern?: RegExp): void {
  expect(r.code, `stderr: ${r.stderr}`).toBe(2);
  const errLines = lines(r.stderr);
  expect(errLines, r.stderr).toHaveLength(1);
  expect(errLines[0]).toMatch(/^titanize: error: \S/);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  expect(r.stdout).toBe('');
  if (pattern) expect(errLines[0]).toMatch(pattern);
}

/** `titanize generate` from the command line. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../../src/node/index.js';
import { createSession } from '../../src/runtime/execution_provider.js';
import { declaredTypes, generate } from '../../src/runtime/generate.js';
import { expectUserError, run } from './helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIX = path.join(ROOT, 'test/fixtures');
const TOKENIZER = path.join(FIX, 'tokenizer.json');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-generate-cli-'));
const titan = path.join(tmp, 'titan.onnx');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(async () => {
  expect((await run(['convert', path.join(FIX, 'llama_past.onnx'), '-o', titan, '--mu', '1'])).code).toBe(0);
});

describe('titanize generate', () => {
  it('--ids streams the same tokens as the library, and reports speed', async () => {
    const r = await run(['generate', titan, '--ids', '5,17,42', '--max-new-tokens', '6']);
    expect(r.code, r.stderr).toBe(0);
    const { session } = await createSession(titan);
    const expected = await generate(session, declaredTypes(loadModel(titan)), [[5, 17, 42]], { maxNewTokens: 6 }).result;
    expect(r.stdout.trim().split(' ').map(Number)).toEqual(expected.tokens[0]);
    expect(r.stderr).toMatch(/prefill: 3 tokens in .* ms .*tokens\/s.*decode: 6 tokens, .* tokens\/s \(cpu\)/);
  });

  it('--prompt with a tokenizer prints text; --json gives tokens, text and stats; a batch prints one line per row', async () => {
    const r = await run(['generate', titan, '--tokenizer', TOKENIZER, '--prompt', 'Hi', '--max-new-tokens', '4', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.prompts).toEqual([[72, 105]]);
    expect(j.tokens[0]).toHaveLength(4);
    expect(typeof j.text[0]).toBe('string');
    expect(j.stats.newTokens).toBe(4);
    const text = await run(['generate', titan, '--tokenizer', TOKENIZER, '--prompt', 'Hi', '--max-new-tokens', '4']);
    expect(text.stdout.startsWith('Hi')).toBe(true);
    const batch = await run(['generate', titan, '--ids', '1,2,3', '--ids', '4', '--max-new-tokens', '3', '--temperature', '0.8', '--top-k', '20', '--seed', '5']);
    expect(batch.code, batch.stderr).toBe(0);
    expect(batch.stdout.split('\n').filter(Boolean).map((l) => l.slice(0, 3))).toEqual(['[0]', '[1]']);
  });

  it('bad input: one line, exit 2', async () => {
    expectUserError(await run(['generate', titan, '--prompt', 'x']), /--prompt needs --tokenizer/);
    expectUserError(await run(['generate', titan]), /nothing to generate from/);
    expectUserError(await run(['generate', titan, '--ids', '1,x']), /not a comma-separated list of token ids/);
    expectUserError(await run(['generate', titan, '--tokenizer', path.join(tmp, 'nope.json'), '--prompt', 'x']), /no such file/);
    expectUserError(await run(['generate', titan, '--ids', '1', '--ep', 'tpu']), /expected one of cpu, cuda, webgpu/);
    expectUserError(await run(['generate', titan, '--ids', '1', '--ep', 'cuda']), /CUDA execution provider is not installed/);
    expectUserError(await run(['generate', titan, '--ids', '1', '--top-p', '0']), /--top-p must be in \(0, 1\]/);
  });

  it('--ep-fallback runs on the CPU with a warning when the provider is missing', async () => {
    const r = await run(['generate', titan, '--ids', '1,2', '--max-new-tokens', '2', '--ep', 'cuda', '--ep-fallback']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/titanize: warning: .*CUDA.*falling back to the CPU/);
  });
});

/**
 * First-contact mistakes (issue: "user mistakes are never a bug in titanize"): each is a
 * one-line error, exit 2, nothing written.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { expectUserError, run } from './helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIX = path.join(ROOT, 'test/fixtures');
const LLAMA = path.join(FIX, 'llama.onnx');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-first-contact-'));

describe('first contact', () => {
  it('generate on an encoder says it is not a decoder LM', async () => {
    expectUserError(await run(['generate', path.join(FIX, 'bert.onnx'), '--ids', '1,2,3']), /bert\.onnx is not a decoder LM: its output 'last_hidden_state' is not logits over its token vocabulary/);
  });

  it('generate with a token id outside the vocabulary names the id and the range', async () => {
    const r = await run(['generate', LLAMA, '--ids', '1,999']);
    expectUserError(r, /token id 999 is outside the vocabulary of llama\.onnx \(256 ids: 0-255\)/);
  });

  it('-o into a missing folder or onto a folder: the user\'s path, not a temporary one', async () => {
    const missing = path.join(tmp, 'no', 'such', 'out.onnx');
    const r1 = await run(['convert', LLAMA, '-o', missing]);
    expectUserError(r1, /cannot write .*no\/such\/out\.onnx: the folder .*no\/such does not exist \(create it first\)/);
    expect(r1.stderr).not.toMatch(/\.tmp|ENOENT/);
    const folder = path.join(tmp, 'a-folder');
    fs.mkdirSync(folder);
    const r2 = await run(['convert', LLAMA, '-o', folder]);
    expectUserError(r2, /cannot write .*a-folder: it is a folder; give a file name such as/);
    expect(r2.stderr).not.toMatch(/\.tmp|EISDIR/);
    expect(fs.readdirSync(folder)).toEqual([]);
  });

  it('--mu 1 --window is refused: the window would limit a softmax branch that μ = 1 removes', async () => {
    const out = path.join(tmp, 'w.onnx');
    expectUserError(await run(['convert', LLAMA, '-o', out, '--mu', '1', '--window', '4']), /--window limits the softmax branch, and --mu 1 removes it/);
    expect(fs.existsSync(out)).toBe(false);
  });
});

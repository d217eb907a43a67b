/**
 * First-contact mistakes (issue: "user mistakes are never a bug in titanize"): each is a
 * one-line error, exit 2, nothing written.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { escapeControls } from '../../src/cli/commands/generate.js';
import { Capture, expectUserError, run } from './helpers.js';

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

describe('generated text on a terminal', () => {
  it('control characters are shown escaped on a terminal, kept as they are in a pipe', async () => {
    expect(escapeControls('a\u001b[31mb\u0007c\nd\te\u009b')).toBe('a\\x1B[31mb\\x07c\nd\te\\x9B');
    const args = ['generate', path.join(FIX, 'llama_past.onnx'), '--tokenizer', path.join(FIX, 'tokenizer.json'), '--prompt', 'def ', '--max-new-tokens', '80', '--temperature', '1', '--seed', '5'];
    const tty = new Capture(true);
    expect((await run(args, {}, { stdout: tty })).code).toBe(0);
    // eslint-disable-next-line no-control-regex
    expect(tty.text.replace(/\n/g, '')).not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
    const pipe = await run(args);
    expect(pipe.code).toBe(0);
    // the random-weight fixture emits raw bytes: a pipe gets them unchanged, the terminal escaped
    // eslint-disable-next-line no-control-regex
    expect(pipe.stdout).toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
    expect(tty.text).toMatch(/\\x[0-9A-F]{2}/);
  });
});

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
import { cliWording } from '../../src/cli/errors.js';
import { loadModel } from '../../src/node/index.js';
import { convert } from '../../src/passes/convert/convert.js';
import { FORM_NAMES } from '../../src/passes/attention/report.js';
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

  it('options that would do nothing are refused, naming the option and why', async () => {
    const out = path.join(tmp, 'seed.onnx');
    expectUserError(await run(['convert', LLAMA, '-o', out, '--seed', '3']), /--seed has no effect here: it seeds the LoRA initialisation, and without --lora-rank no LoRA is added/);
    expect(fs.existsSync(out)).toBe(false);
    for (const opt of [['--top-k', '5'], ['--top-p', '0.9'], ['--seed', '2']]) {
      expectUserError(await run(['generate', LLAMA, '--ids', '1,2', ...opt]), new RegExp(`${opt[0]} has no effect here: with --temperature 0 \\(the default\\) decoding is greedy`));
    }
    expectUserError(await run(['generate', LLAMA, '--ids', '1,2', '--pad', '3']), /--pad has no effect here: it left-pads the rows of a batch, and there is one prompt/);
    const data = path.join(FIX, 'fidelity', 'train.txt');
    expectUserError(
      await run(['train', LLAMA, '-o', path.join(tmp, 't.onnx'), '--data', data, '--tokenizer', path.join(FIX, 'tokenizer.json'), '--eval-windows', '4']),
      /--eval-windows has no effect here: it sizes the held-out evaluation, and there is no --eval file/,
    );
    // the same values as defaults, or with the options that use them, are fine
    expect((await run(['generate', LLAMA, '--ids', '1,2', '--ids', '3', '--pad', '0', '--temperature', '0.5', '--seed', '2', '--max-new-tokens', '1'])).code).toBe(0);
  });

  it('generate on every fixture: a decoder LM generates, anything else is a user error naming why', async () => {
    const files = [FIX, path.join(FIX, 'foreign')].flatMap((d) => fs.readdirSync(d).filter((f) => f.endsWith('.onnx')).map((f) => path.join(d, f)));
    expect(files.length).toBeGreaterThan(15);
    let generated = 0;
    for (const f of files) {
      const r = await run(['generate', f, '--ids', '1,2', '--max-new-tokens', '1']);
      if (r.code === 0) generated++;
      else expectUserError(r, /is not a decoder LM|has no token-ids input|needs inputs? '.*' \(.*\) that generate cannot make/);
    }
    // llama, qwen2, gpt2 (± past), gqa_contrib, attention23 (positions through RotaryEmbedding), llama14, gptj, phi, mha_causal
    expect(generated).toBeGreaterThanOrEqual(12);
  });

  it('the library names option fields, the command line names flags', async () => {
    expect(() => convert(loadModel(LLAMA), { mu: 1, window: 4 })).toThrow('options.window limits the softmax branch, and options.mu = 1 removes it: drop one of them');
    expect(cliWording('options.window limits the softmax branch, and options.mu = 1 removes it')).toBe('--window limits the softmax branch, and --mu 1 removes it');
    expect(cliWording('options.loraAlpha needs options.loraRank; options.crossState needs options.cross')).toBe('--lora-alpha needs --lora-rank; --cross-state needs --cross');
    expectUserError(await run(['convert', LLAMA, '-o', path.join(tmp, 'x.onnx'), '--lora-alpha', '4']), /^titanize: error: --lora-alpha needs --lora-rank$/);
  });

  it('the README explains every form code that reports print', () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    for (const [code, name] of Object.entries(FORM_NAMES)) {
      expect(readme, code).toMatch(new RegExp(`${code} (an? |the )?${name.split(' ')[0]}`, 'i'));
    }
  });
});

describe('reports on a terminal', () => {
  const SWIN = path.join(FIX, 'foreign', 'swin.onnx');
  const words = (s: string): string[] => s.split(/\s+/).filter(Boolean);

  it('inspect --attention --verbose and convert wrap at the terminal width, losing no word; a pipe keeps whole lines', async () => {
    for (const args of [
      ['inspect', SWIN, '--attention', '--verbose'],
      ['convert', SWIN, '-o', path.join(tmp, 'swin.onnx')],
    ]) {
      const tty = new Capture(true, 100);
      expect((await run(args, {}, { stdout: tty })).code).toBe(0);
      const pipe = await run(args);
      // swin's lines run well past 100 columns; its longest tensor name is under 100
      expect(Math.max(...pipe.stdout.split('\n').map((l) => l.length))).toBeGreaterThan(140);
      for (const l of tty.text.split('\n')) expect(l.length, l).toBeLessThanOrEqual(100);
      expect(words(tty.text)).toEqual(words(pipe.stdout));
    }
  });

  it('an error on a terminal is wrapped; piped it stays one line', async () => {
    const args = ['generate', path.join(FIX, 'bert.onnx'), '--ids', '1,2,3'];
    const stderr = new Capture(true, 60);
    const r = await run(args, {}, { stderr });
    expect(r.code).toBe(2);
    const shown = stderr.text.trimEnd().split('\n');
    expect(shown.length).toBeGreaterThan(1);
    for (const l of shown) expect(l.length).toBeLessThanOrEqual(60);
    expect(shown[0]).toMatch(/^titanize: error: /);
    expectUserError(await run(args));
  });
});

describe('random-weight fixtures', () => {
  it('generate says that a fixture\'s weights are random, and says nothing for a trained model', async () => {
    const r = await run(['generate', LLAMA, '--ids', '1,2,3', '--max-new-tokens', '2']);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/^titanize: note: llama\.onnx has random weights \(a titanize test fixture with untrained weights, from tools\/gen_fixtures\.py\): the generated text is meaningless\n/);
    const trained = await run(['generate', path.join(FIX, 'fidelity', 'lm.onnx'), '--ids', '1,2,3', '--max-new-tokens', '2']);
    expect(trained.code).toBe(0);
    expect(trained.stderr).not.toMatch(/random weights/);
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

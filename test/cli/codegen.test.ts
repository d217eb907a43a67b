/** `titanize codegen` from the command line: the summary, --json, --help, and one-line user errors (exit 2). */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { expectUserError, lines, run } from './helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIX = path.join(ROOT, 'test/fixtures');
const PAST = path.join(FIX, 'llama_past.onnx');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-codegen-cli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('titanize codegen', () => {
  it('--help says what is generated, about the user-code regions, with an example', async () => {
    const r = await run(['codegen', '--help']);
    expect(r.code).toBe(0);
    for (const s of ['--output', '--name', '--json', 'prefill(ids)', 'step(id)', 'generate(ids, maxNewTokens, { stopTokens, choose, onToken })', '--check', '<user-code name=', 'Examples:', 'titanize codegen titan.onnx -o src/titan.ts', 'Exit status']) {
      expect(r.stdout.replace(/\s+/g, ' ')).toContain(s);
    }
    expect((await run(['--help'])).stdout).toMatch(/codegen .*typed TypeScript module/);
  });

  it('writes the module and says what it holds; again: up to date; --json: the summary', async () => {
    const out = path.join(tmp, 'src', 'titan.ts');
    const r = await run(['codegen', PAST, '-o', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(lines(r.stdout)[0]).toBe(`wrote ${out}: class Titan (prefill, step, generate), interfaces TitanInputs, TitanOutputs, TitanState; state: 4 tensors carried (key, value; 2 layers)`);
    const text = fs.readFileSync(out, 'utf8');
    expect(text).toContain('Re-run `titanize codegen llama_past.onnx -o titan.ts` after the model changes');

    const again = await run(['codegen', PAST, '-o', out]);
    expect(again.stdout).toBe(`${out} is up to date (class Titan; state: 4 tensors carried (key, value; 2 layers))\n`);
    expect(fs.readFileSync(out, 'utf8')).toBe(text);

    const j = await run(['codegen', PAST, '-o', out, '--json']);
    expect(j.code).toBe(0);
    const s = JSON.parse(j.stdout) as Record<string, unknown>;
    expect(Object.keys(s)).toEqual(['output', 'interfaces', 'class', 'state', 'written', 'changed', 'userCode']);
    expect(s).toMatchObject({ output: out, interfaces: ['TitanInputs', 'TitanOutputs', 'TitanState'], class: 'Titan', written: false, changed: [], userCode: [] });
    expect((s.state as unknown[])[0]).toEqual({ input: 'past_key_values.0.key', output: 'present.0.key', layer: 0, kind: 'key', type: 'float32', dims: ['batch_size', 2, 'past_sequence_length', 16] });

    const named = await run(['codegen', PAST, '-o', path.join(tmp, 'decoder.mts'), '--name', 'TinyLlama', '--json']);
    expect(JSON.parse(named.stdout)).toMatchObject({ class: 'TinyLlama', interfaces: ['TinyLlamaInputs', 'TinyLlamaOutputs', 'TinyLlamaState'], written: true });
    expect(fs.readFileSync(path.join(tmp, 'decoder.mts'), 'utf8')).toContain('export const tinyLlamaSpec = {');
  });

  it('--check writes nothing: 0 when the module matches the model, 2 naming what differs when it is stale or missing', async () => {
    const out = path.join(tmp, 'checked', 'titan.ts');
    expectUserError(await run(['codegen', PAST, '-o', out, '--check']), /titan\.ts does not exist; write it with `titanize codegen .*llama_past\.onnx -o .*titan\.ts`$/);
    expect(fs.existsSync(out)).toBe(false);
    expect((await run(['codegen', PAST, '-o', out])).code).toBe(0);
    const ok = await run(['codegen', PAST, '-o', out, '--check']);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toBe(`${out} is up to date with ${PAST}\n`);
    const j = JSON.parse((await run(['codegen', PAST, '-o', out, '--check', '--json'])).stdout) as Record<string, unknown>;
    expect(j).toMatchObject({ upToDate: true, changed: [], class: 'Titan' });
    // the same module against another model: stale, the differing declarations named, the file untouched
    const text = fs.readFileSync(out, 'utf8');
    const other = await run(['codegen', path.join(FIX, 'qwen2_past.onnx'), '-o', out, '--check']);
    expectUserError(other, /titan\.ts is out of date with .*qwen2_past\.onnx \(header, .*TitanState.* differ\); update it with `titanize codegen .*qwen2_past\.onnx -o .*titan\.ts`$/);
    expect(fs.readFileSync(out, 'utf8')).toBe(text);
    expect((await run(['codegen', '--help'])).stdout).toMatch(/--check/);
  });

  it('user errors are one line, exit 2, and write nothing', async () => {
    const out = path.join(tmp, 'err.ts');
    expectUserError(await run(['codegen', path.join(tmp, 'missing.onnx'), '-o', out]), /missing\.onnx: no such file/);
    const notOnnx = path.join(tmp, 'notes.onnx');
    fs.writeFileSync(notOnnx, 'hello, this is not a model\n');
    expectUserError(await run(['codegen', notOnnx, '-o', out]), /notes\.onnx is not a valid ONNX model/);
    expectUserError(await run(['codegen', path.join(FIX, 'foreign/vit.onnx'), '-o', out]), /vit\.onnx has no token-ids input .*codegen cannot generate a decoder class for it$/);
    expectUserError(await run(['codegen', path.join(FIX, 'bert.onnx'), '-o', out]), /bert\.onnx is not a decoder language model: its output 'last_hidden_state' is not logits over its token vocabulary; codegen cannot generate a decoder class for it$/);
    expectUserError(await run(['codegen', PAST, '-o', path.join(tmp, 'titan.js')]), /the module must be a \.ts, \.mts or \.cts file/);
    expectUserError(await run(['codegen', PAST, '-o', out, '--name', 'lower-case']), /--name 'lower-case' is not a PascalCase identifier/);
    expectUserError(await run(['codegen', PAST]), /required option '-o, --output <file>' not specified/);
    expect(fs.existsSync(out)).toBe(false);

    // a file codegen did not write is left alone
    const mine = path.join(tmp, 'mine.ts');
    fs.writeFileSync(mine, 'export const mine = 1;\n');
    expectUserError(await run(['codegen', PAST, '-o', mine]), /mine\.ts exists and was not written by titanize codegen .*refusing to overwrite it/);
    expect(fs.readFileSync(mine, 'utf8')).toBe('export const mine = 1;\n');

    // a malformed region, or code in a region codegen does not write, stops the update before anything is lost
    const gen = path.join(tmp, 'gen.ts');
    expect((await run(['codegen', PAST, '-o', gen])).code).toBe(0);
    const good = fs.readFileSync(gen, 'utf8');
    const unclosed = good.replace('// <user-code name="end">\n// </user-code>', '// <user-code name="end">\nexport const x = 1;');
    fs.writeFileSync(gen, unclosed);
    expectUserError(await run(['codegen', PAST, '-o', gen]), /gen\.ts:\d+: user-code region 'end' is not closed: add '\/\/ <\/user-code>'/);
    expect(fs.readFileSync(gen, 'utf8')).toBe(unclosed);
    const foreign = good.replace('// <user-code name="end">\n// </user-code>', '// <user-code name="end">\n// </user-code>\n// <user-code name="helpers">\nexport const y = 2;\n// </user-code>');
    fs.writeFileSync(gen, foreign);
    expectUserError(await run(['codegen', PAST, '-o', gen]), /user-code region 'helpers' \(line \d+\) is not one codegen writes \(imports, members, end\): move the code into one of those/);
    expect(fs.readFileSync(gen, 'utf8')).toBe(foreign);
  });
});

/** `titanize convert` and `titanize merge` from the command line. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { getMetadata } from '../../src/ir/index.js';
import { loadModel } from '../../src/node/index.js';
import { expectUserError, run } from './helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const LLAMA = path.join(ROOT, 'test/fixtures/llama.onnx');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-convert-cli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('titanize convert', () => {
  it('--help documents every option', async () => {
    const r = await run(['convert', '--help']);
    expect(r.code).toBe(0);
    for (const o of ['--output', '--rule', '--order', '--mu', '--window', '--lora-rank', '--lora-alpha', '--layers', '--target', '--chunk-size', '--external-data', '--json']) {
      expect(r.stdout).toContain(o);
    }
    for (const rule of ['linear', 'delta', 'delta_product', 'gated_delta', 'gated_delta_product']) expect(r.stdout).toContain(rule);
  });

  it('converts, reports the sites, writes a model onnxruntime loads, and leaves the input alone', async () => {
    const before = fs.readFileSync(LLAMA);
    const out = path.join(tmp, 'titan.onnx');
    const r = await run(['convert', LLAMA, '-o', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/converted 2 attention layers: rule delta_product \(order 2\), μ 0.5, target ort/);
    expect(r.stdout).toContain('com.microsoft::LinearAttention ×2');
    expect(Buffer.compare(fs.readFileSync(LLAMA), before)).toBe(0);
    const s = await ort.InferenceSession.create(out);
    expect(s.outputNames).toEqual(['logits']);
    await s.release();
    expect(getMetadata(loadModel(out).metadataProps, 'titanize.converted')).toContain('delta_product');
  });

  it('--json prints a machine-readable report', async () => {
    const out = path.join(tmp, 'j.onnx');
    const r = await run(['convert', LLAMA, '-o', out, '--json', '--rule', 'gated_delta', '--mu', '1', '--target', 'portable', '--layers', '1']);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.output).toBe(out);
    expect(j.options).toMatchObject({ rule: 'gated_delta', mu: 1, target: 'portable', layers: [1] });
    expect(j.sites.map((s: { layer: number }) => s.layer)).toEqual([1]);
    expect(j.skipped).toEqual([{ layer: 0, reason: 'not selected by --layers' }]);
    expect(j.opsUsed['ai.tptt::LiZA']).toBe(1);
  });

  it('refuses a converted model, the input as output, and bad options, with one line and exit 2', async () => {
    const out = path.join(tmp, 'once.onnx');
    expect((await run(['convert', LLAMA, '-o', out])).code).toBe(0);
    expectUserError(await run(['convert', out, '-o', path.join(tmp, 'twice.onnx')]), /already converted by titanize/);
    expectUserError(await run(['convert', LLAMA, '-o', LLAMA]), /never modifies its input/);
    expectUserError(await run(['convert', LLAMA, '-o', path.join(tmp, 'x.onnx'), '--mu', '2']), /--mu must be in \[0, 1\]/);
    expectUserError(await run(['convert', LLAMA, '-o', path.join(tmp, 'x.onnx'), '--rule', 'fast']), /expected one of linear/);
    expectUserError(await run(['convert', LLAMA, '-o', path.join(tmp, 'x.onnx'), '--layers', '3-1']), /backwards/);
    expectUserError(await run(['convert', LLAMA, '-o', path.join(tmp, 'x.onnx'), '--layers', '9']), /no attention layer 9/);
    expectUserError(await run(['convert', LLAMA]), /required option '-o, --output <file>'/);
    expectUserError(await run(['convert', path.join(ROOT, 'test/fixtures/functions.onnx'), '-o', path.join(tmp, 'x.onnx')]), /no softmax attention found/);
    expect(fs.existsSync(path.join(tmp, 'x.onnx'))).toBe(false);
  });
});

describe('titanize merge', () => {
  it('folds LoRA adapters; refuses a model without adapters', async () => {
    const withLora = path.join(tmp, 'lora.onnx');
    expect((await run(['convert', LLAMA, '-o', withLora, '--lora-rank', '4', '--target', 'portable'])).code).toBe(0);
    const merged = path.join(tmp, 'merged.onnx');
    const r = await run(['merge', withLora, '-o', merged]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/merged 8 LoRA adapters/);
    expect([...loadModel(merged).graph.initializers.keys()].some((k) => k.startsWith('lora.'))).toBe(false);
    expectUserError(await run(['merge', LLAMA, '-o', path.join(tmp, 'm2.onnx')]), /has no LoRA adapters/);
  });
});

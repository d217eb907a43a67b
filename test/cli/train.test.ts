/**
 * `titanize train` and `titanize eval` end to end (in-process): convert → train → eval →
 * merge, Ctrl-C and resume (equal to an uninterrupted run), and the user errors.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seededRandom } from '../../src/ir/random.js';
import { loadModel } from '../../src/node/index.js';
import { Capture, expectUserError, lines, run } from './helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const LLAMA = path.join(ROOT, 'test/fixtures/llama.onnx');
const TOKENIZER = path.join(ROOT, 'test/fixtures/tokenizer.json');

let tmp: string;
let titan: string;
let data: string;
let heldOut: string;
const small = ['--steps', '4', '--batch', '2', '--seq-len', '16', '--warmup', '1', '--lr', '5e-3'];

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-train-'));
  titan = path.join(tmp, 'titan.onnx');
  expect((await run(['convert', LLAMA, '-o', titan, '--lora-rank', '4', '--mu', '0.5'])).code).toBe(0);
  // a fixed text (not a source file, whose edits would change what these runs see): seeded
  // sentences over a small vocabulary, so there is structure to learn
  const rand = seededRandom(17);
  const words = ['the', 'graph', 'node', 'value', 'tensor', 'rule', 'pass', 'model', 'reads', 'writes', 'keeps', 'a', 'every', 'state'];
  const text = Array.from({ length: 1600 }, (_, i) => `${words[Math.floor(rand() * words.length)]}${i % 9 === 8 ? '.\n' : ' '}`).join('');
  data = path.join(tmp, 'train.txt');
  heldOut = path.join(tmp, 'held-out.txt');
  fs.writeFileSync(data, text.slice(0, 6000));
  fs.writeFileSync(heldOut, text.slice(6000, 8000));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function initializers(file: string): Map<string, number[]> {
  const m = loadModel(file);
  return new Map([...m.graph.initializers].filter(([k]) => k.startsWith('lora.') || k.includes('.mu')).map(([k, v]) => [k, Array.from(v.initializer!.toTypedArray() as Float32Array)]));
}

describe('titanize train / eval', () => {
  it('convert → train → eval → merge', async () => {
    const out = path.join(tmp, 'trained.onnx');
    const r = await run(['train', titan, '--data', data, '--tokenizer', TOKENIZER, ...small, '--train', 'lora,mu', '--eval', heldOut, '--log-every', '2', '--json', '-o', out]);
    expect(r.code, r.stderr).toBe(0);
    const events = lines(r.stdout).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(events.filter((e) => 'step' in e && e.event === undefined).map((e) => e.step)).toEqual([2, 4]);
    const done = events.at(-1)! as { event: string; steps: number; eval: { before: { loss: number }; after: { loss: number; accuracy: number } } };
    expect(done.event).toBe('done');
    expect(done.steps).toBe(4);
    const before = initializers(titan);
    const after = initializers(out);
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    expect(after.get('lora.layers.0.o_proj.B')!.some((x) => x !== 0)).toBe(true);
    const mu = after.get('tptt.layers.0.mag.mu')![0]!;
    expect(mu).toBeGreaterThan(0);
    expect(mu).toBeLessThan(1);
    const trained = loadModel(out);
    expect(JSON.parse(trained.metadataProps.find((p) => p.key === 'titanize.trained')!.value).steps).toBe(4);
    // eval prints the same held-out numbers as train's summary; merge keeps them
    const ev = await run(['eval', out, '--data', heldOut, '--tokenizer', TOKENIZER, '--seq-len', '16', '--batch', '2', '--max-windows', '64', '--json']);
    expect(ev.code, ev.stderr).toBe(0);
    const evr = JSON.parse(ev.stdout) as { loss: number; accuracy: number };
    expect(evr.loss).toBeCloseTo(done.eval.after.loss, 5);
    const merged = path.join(tmp, 'merged.onnx');
    expect((await run(['merge', out, '-o', merged])).code).toBe(0);
    const evm = JSON.parse((await run(['eval', merged, '--data', heldOut, '--tokenizer', TOKENIZER, '--seq-len', '16', '--batch', '2', '--max-windows', '64', '--json'])).stdout) as { loss: number };
    expect(Math.abs(evm.loss - evr.loss) / evr.loss).toBeLessThan(1e-5);
  });

  it('Ctrl-C saves a checkpoint; --resume gives the uninterrupted result', async () => {
    const whole = path.join(tmp, 'whole.onnx');
    const args = ['--data', data, '--tokenizer', TOKENIZER, ...small, '--train', 'lora,mu', '--log-every', '1'];
    expect((await run(['train', titan, ...args, '-o', whole])).code).toBe(0);
    const part = path.join(tmp, 'part.onnx');
    const ckpt = path.join(tmp, 'part.ckpt.json');
    const ac = new AbortController();
    class AbortAfterStep2Out extends Capture {
      override write(chunk: string | Uint8Array): boolean {
        const ok = super.write(chunk);
        if (this.text.includes('step 2/4')) ac.abort();
        return ok;
      }
    }
    const r = await run(['train', titan, ...args, '--checkpoint', ckpt, '-o', part], {}, { signal: ac.signal, stdout: new AbortAfterStep2Out() });
    expect(r.code).toBe(130);
    expect(r.stderr).toMatch(/titanize: interrupted: stopped after step 2 of 4; checkpoint .*part\.ckpt\.json written/);
    expect(fs.existsSync(part)).toBe(false);
    const resumed = await run(['train', titan, ...args, '--resume', ckpt, '-o', part]);
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stdout).toMatch(/resumed from .* at step 2/);
    expect(initializers(part)).toEqual(initializers(whole));
    const other = await run(['train', titan, ...args.map((a) => (a === '5e-3' ? '1e-3' : a)), '--resume', ckpt, '-o', part]);
    expectUserError(other, /was written with other settings \(lr: 0\.005 there, 0\.001 here\)/);
  });

  it('a diverging run stops on the non-finite loss and keeps the last good state', async () => {
    const out = path.join(tmp, 'nan.onnx');
    const ckpt = path.join(tmp, 'nan.ckpt.json');
    const r = await run(['train', titan, '--data', data, '--tokenizer', TOKENIZER, '--steps', '30', '--batch', '2', '--seq-len', '16', '--warmup', '0', '--lr', '1e12', '--clip', '0', '--train', 'lora,mu', '--checkpoint', ckpt, '-o', out]);
    expect(r.code).toBe(2);
    expect(lines(r.stderr)).toHaveLength(1);
    expect(r.stderr).toMatch(/^titanize: error: the loss is (NaN|Infinity|-Infinity) at step \d+; .* the last good state is in .*nan\.ckpt\.json/);
    expect(fs.existsSync(ckpt)).toBe(true);
    expect(fs.existsSync(out)).toBe(false);
  });

  it('user errors: one line, exit 2, nothing written', async () => {
    const out = path.join(tmp, 'never.onnx');
    const base = ['--tokenizer', TOKENIZER, '-o', out];
    expectUserError(await run(['train', titan, '--data', path.join(tmp, 'missing.txt'), ...base]), /data file .*missing\.txt: no such file/);
    const empty = path.join(tmp, 'empty.txt');
    fs.writeFileSync(empty, ' \n');
    expectUserError(await run(['train', titan, '--data', empty, ...base]), /data file .*empty\.txt is empty/);
    expectUserError(await run(['train', LLAMA, '--data', data, ...base]), /is not a titanize-converted model; run titanize convert/);
    expectUserError(await run(['train', titan, '--data', data, ...base, '--objective', 'distill']), /--objective distill needs --teacher/);
    expectUserError(await run(['train', titan, '--data', data, ...base, '--seq-len', '100000']), /has \d+ tokens; --seq-len 100000 needs at least 100001/);
    expectUserError(await run(['train', titan, '--data', data, ...base, '--train', 'lora,weights']), /expected a comma-separated list of lora, mu, norms \(not: weights\)/);
    const noLora = path.join(tmp, 'nolora.onnx');
    expect((await run(['convert', LLAMA, '-o', noLora])).code).toBe(0);
    expectUserError(await run(['train', noLora, '--data', data, ...base]), /no LoRA adapters to train \(convert it with a LoRA rank/);
    const linear = path.join(tmp, 'linear.onnx');
    expect((await run(['convert', LLAMA, '-o', linear, '--mu', '1', '--lora-rank', '2'])).code).toBe(0);
    expectUserError(await run(['train', linear, '--data', data, ...base, '--objective', 'transfer']), /objective transfer needs the original model as the teacher \(this model has no softmax branch/);
    expectUserError(await run(['eval', titan, '--data', empty, '--tokenizer', TOKENIZER]), /is empty/);
    const gpt2 = path.join(tmp, 'gpt2.onnx');
    expect((await run(['convert', path.join(ROOT, 'test/fixtures/gpt2.onnx'), '-o', gpt2, '--lora-rank', '2'])).code).toBe(0);
    expectUserError(await run(['train', gpt2, '--data', data, ...base, '--seq-len', '100', '--steps', '1']), /index 64 is outside a table of 64 rows .*longer than the model allows/);
    const bert = path.join(tmp, 'bert.onnx');
    expect((await run(['convert', path.join(ROOT, 'test/fixtures/bert.onnx'), '-o', bert, '--lora-rank', '2'])).code).toBe(0);
    const bertTokens = path.join(tmp, 'small-ids.txt');
    fs.writeFileSync(bertTokens, '0123456789+-*/=()'.repeat(40));
    expectUserError(await run(['train', bert, '--data', bertTokens, ...base, '--seq-len', '8']), /bidirectional \(an encoder\); train it with objective 'transfer'/);
    expect(fs.existsSync(out)).toBe(false);
  });

  it('distill and transfer objectives train', async () => {
    const linear = path.join(tmp, 'linear-t.onnx');
    expect((await run(['convert', LLAMA, '-o', linear, '--mu', '1', '--lora-rank', '2'])).code).toBe(0);
    const cases: [string, string[]][] = [
      [titan, ['--objective', 'distill', '--teacher', LLAMA]],
      [titan, ['--objective', 'transfer']],
      // μ = 1: no softmax branch left; the targets come from the original model
      [linear, ['--objective', 'transfer', '--teacher', LLAMA]],
    ];
    for (const [model, extra] of cases) {
      const out = path.join(tmp, `obj-${extra[1]}-${path.basename(model)}`);
      const r = await run(['train', model, '--data', data, '--tokenizer', TOKENIZER, ...small, ...extra, '--json', '-o', out]);
      expect(r.code, r.stderr).toBe(0);
      const steps = lines(r.stdout).map((l) => JSON.parse(l) as { loss?: number; event?: string }).filter((e) => e.event === undefined);
      expect(steps.every((s) => Number.isFinite(s.loss) && s.loss! >= 0)).toBe(true);
    }
  });
});

/**
 * The conversion pipeline as data: `titanize passes` lists it, a library user composes it
 * (insertAfter / insertBefore / remove) and `convert --pass FILE` runs a pass of the
 * user's (examples/passes/annotate.mjs) with the same verification and error reporting as
 * the built-in passes: a failing or malformed user pass is named, exit 2, nothing written.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { Value, getMetadata } from '../../src/ir/index.js';
import { loadModel } from '../../src/node/index.js';
import { type ConvertPass, convertModel, convertPipeline } from '../../src/passes/convert/index.js';
import { expectUserError, run } from './helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const LLAMA = path.join(ROOT, 'test/fixtures/llama.onnx');
const EXAMPLE = path.join(ROOT, 'examples/passes/annotate.mjs');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-passes-'));
const BUILT_IN = ['upgrade-opset', 'inline-attention-functions', 'discover-attention', 'tptt-memory', 'recurrent-state', 'lora', 'cleanup', 'lower', 'cleanup-after-lowering'];

describe('the conversion pipeline', () => {
  it('is a named list of passes; convertModel runs it, and the report names the passes that applied', () => {
    expect(convertPipeline().names()).toEqual(BUILT_IN);
    const r = convertModel(loadModel(LLAMA), { loraRank: 2 });
    expect(r.report.passes).toEqual(['inline-attention-functions', 'discover-attention', 'tptt-memory', 'lora', 'cleanup', 'lower', 'cleanup-after-lowering']);
    expect(convertModel(loadModel(path.join(ROOT, 'test/fixtures/llama_past.onnx')), { mu: 1, target: 'portable' }).report.passes).toEqual(['inline-attention-functions', 'discover-attention', 'tptt-memory', 'recurrent-state', 'cleanup']);
  });

  it('composes: a pass inserted after discover-attention sees the selected sites and can narrow them', () => {
    const seen: number[] = [];
    const onlyFirst: ConvertPass = {
      name: 'only-first-layer',
      description: 'keeps the first selected site',
      effects: ['context.selected'],
      run(_model, ctx) {
        seen.push(...ctx.selected.map((s) => s.layer));
        ctx.selected.splice(1);
        return { modified: false };
      },
    };
    const p = convertPipeline().insertAfter('discover-attention', onlyFirst);
    expect(p.names().slice(2, 4)).toEqual(['discover-attention', 'only-first-layer']);
    const r = p.run(loadModel(LLAMA), {});
    expect(seen).toEqual([0, 1]);
    expect(r.report.sites.map((s) => s.layer)).toEqual([0]);
    expect(r.report.passes).toContain('only-first-layer');
    // the built-in pipeline is untouched by that
    expect(convertPipeline().names()).toEqual(BUILT_IN);
    expect(() => convertPipeline().insertAfter('no-such-pass', onlyFirst)).toThrow(/no pass 'no-such-pass' \(passes: upgrade-opset, /);
    expect(() => convertPipeline().insertBefore('lora', { ...onlyFirst, name: 'lora' })).toThrow(/already has a pass 'lora'/);
    expect(convertPipeline().remove('lower').names()).not.toContain('lower');
  });

  it('a user pass that breaks the model is caught by the verification after it, named', () => {
    const breaker: ConvertPass = {
      name: 'breaker',
      description: 'reads a value nothing produces',
      effects: ['graph'],
      run(model) {
        const n = model.graph.nodes().find((x) => x.opType === 'MatMul')!;
        n.setInput(0, new Value('nothing.produces.this'));
        return { modified: true };
      },
    };
    expect(() => convertPipeline().insertAfter('tptt-memory', breaker).run(loadModel(LLAMA), {})).toThrow(/pass 'breaker'.*does not verify after it.*nothing\.produces\.this/s);
  });
});

describe('titanize passes', () => {
  it('lists the pipeline, one line each; --json gives names, descriptions, effects and conditions', async () => {
    const text = await run(['passes']);
    expect(text.code).toBe(0);
    const lines = text.stdout.trim().split('\n');
    expect(lines[0]).toBe('conversion pipeline (titanize convert):');
    expect(lines.slice(1).map((l) => l.trim().split(/\s+/)[1])).toEqual(BUILT_IN);
    const json = await run(['passes', '--json']);
    const list = JSON.parse(json.stdout) as { name: string; description: string; effects: string[]; condition: string | null; rules: string[] }[];
    expect(list.map((p) => p.name)).toEqual(BUILT_IN);
    expect(list.find((p) => p.name === 'tptt-memory')!.rules).toEqual(['window', 'tptt']);
    expect(list.find((p) => p.name === 'discover-attention')!.rules).toEqual([]);
    expect(lines.find((l) => /\blora\b.*rules lora$/.test(l.trim()))).toBeTruthy();
    expect(list.find((p) => p.name === 'lora')!.condition).toBe('options.loraRank is set');
    for (const p of list) expect(p.effects.length, p.name).toBeGreaterThan(0);
    expect((await run(['passes', '--help'])).stdout).toMatch(/--pass \.\/my-pass\.js/);
  });
});

describe('convert --pass', () => {
  it('runs the example pass where --pass-after says; its changes are in the written model', async () => {
    const out = path.join(tmp, 'annotated.onnx');
    const r = await run(['convert', LLAMA, '-o', out, '--pass', EXAMPLE, '--pass-after', 'tptt-memory', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { passes: string[] };
    expect(report.passes.slice(report.passes.indexOf('tptt-memory'), report.passes.indexOf('tptt-memory') + 2)).toEqual(['tptt-memory', 'annotate']);
    const m = loadModel(out);
    expect(m.docString).toBe('titanize: layers 0, 1 converted (rule delta_product, order 2, μ 0.5)');
    expect(getMetadata(m.metadataProps, 'example.annotate.layers')).toBe('0,1');
  });

  it('a failing, malformed or missing pass module is a user error naming it, and nothing is written', async () => {
    const out = path.join(tmp, 'never.onnx');
    const failing = path.join(tmp, 'failing.mjs');
    fs.writeFileSync(failing, "export default { name: 'explodes', run() { throw new Error('no good'); } };\n");
    expectUserError(await run(['convert', LLAMA, '-o', out, '--pass', failing]), /pass 'explodes' \(.*failing\.mjs\) failed: no good/);
    const malformed = path.join(tmp, 'malformed.mjs');
    fs.writeFileSync(malformed, 'export const x = 1;\n');
    expectUserError(await run(['convert', LLAMA, '-o', out, '--pass', malformed]), /--pass .*malformed\.mjs: the module must export \(default, or as 'pass'\) an object \{ name: string, run\(model, context\) \}/);
    expectUserError(await run(['convert', LLAMA, '-o', out, '--pass', path.join(tmp, 'missing.mjs')]), /--pass .*missing\.mjs: no such module/);
    expectUserError(await run(['convert', LLAMA, '-o', out, '--pass', EXAMPLE, '--pass-after', 'nope']), /the conversion pipeline has no pass 'nope'/);
    expectUserError(await run(['convert', LLAMA, '-o', out, '--pass-after', 'lora']), /--pass-after has no effect here: it places the passes given with --pass, and there are none/);
    expect(fs.existsSync(out)).toBe(false);
  });
});

describe('convert --pass with pattern-engine rules', () => {
  // through the built launcher: the example imports 'titanize/passes' (the package's dist/), and
  // its rules must meet the same pattern-engine module as the CLI that applies them
  const built = fs.existsSync(path.join(ROOT, 'dist/src/cli/main.js'));
  it.skipIf(!built)('examples/passes/div-to-mul.mjs: its rule rewrites every Div by a scalar constant, the new nodes carry the rule name, outputs unchanged', async () => {
    const { spawnSync } = await import('node:child_process');
    const out = path.join(tmp, 'div-to-mul.onnx');
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bin/titanize.js'), 'convert', LLAMA, '-o', out, '--pass', path.join(ROOT, 'examples/passes/div-to-mul.mjs'), '--json'], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { passes: string[] }).passes).toContain('div-to-mul');
    const m = loadModel(out);
    const plain = loadModel(LLAMA);
    convertModel(plain, {});
    const divs = (x: typeof m) => x.graph.nodes().filter((n) => n.opType === 'Div').length;
    expect(divs(m)).toBeLessThan(divs(plain));
    const stamped = m.graph.nodes().filter((n) => getMetadata(n.metadataProps, 'titanize.rule') === 'div-by-constant-to-mul');
    expect(stamped.map((n) => n.opType)).toContain('Mul');
    // x / c and x · (1/c) differ by float32 rounding only
    const { runModel } = await import('../helpers/layer_check.js');
    const ort = await import('onnxruntime-node');
    const T = 6;
    const feeds = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from([1n, 20n, 3n, 44n, 5n, 60n]), [1, T]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(T).fill(1n), [1, T]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: T }, (_, i) => BigInt(i)), [1, T]),
    };
    const a = (await runModel(m, feeds)).logits!.data as Float32Array;
    const b = (await runModel(plain, feeds)).logits!.data as Float32Array;
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    expect(worst).toBeLessThanOrEqual(1e-4);
  });

  it('a rules module with something else than rules in it is named in a user error', async () => {
    const bad = path.join(tmp, 'bad-rules.mjs');
    fs.writeFileSync(bad, 'export const rules = [{ name: 42 }];\n');
    expectUserError(await run(['convert', LLAMA, '-o', path.join(tmp, 'never2.onnx'), '--pass', bad]), /--pass .*bad-rules\.mjs: 'rules' must be a non-empty array of rules made with defineRule \(entry 0 is not one\)/);
  });
});

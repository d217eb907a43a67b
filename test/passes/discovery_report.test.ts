import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { loadModel } from '../../src/node/index.js';
import { attentionReport, discoverAttention, renderAttention } from '../../src/passes/index.js';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');

async function run(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(['node', 'titanize', ...args], {
    stdout: { write: (s: string) => ((out += s), true), isTTY: false } as never,
    stderr: { write: (s: string) => ((err += s), true), isTTY: false } as never,
  });
  expect(err).not.toMatch(/titanize: internal error/);
  return { code, out, err };
}

describe('attention report', () => {
  it('is JSON-able and drops the IR references', () => {
    const r = discoverAttention(loadModel(path.join(FIXTURES, 'llama_past.onnx')));
    const rep = attentionReport(r);
    expect(JSON.parse(JSON.stringify(rep))).toEqual(rep);
    expect('refs' in rep.sites[0]!).toBe(false);
    expect(rep.sites[0]!.present).toEqual({ key: 'present.0.key', value: 'present.0.value' });
  });

  it('renders a headline per site, its details with verbose, and one line per Softmax that is not attention', () => {
    const r = discoverAttention(loadModel(path.join(FIXTURES, 'bert.onnx')));
    const lines = renderAttention(r);
    expect(lines[0]).toBe('Attention: 2 sites (F4), 1 candidate not taken');
    expect(lines.filter((l) => l.startsWith('  layer '))).toHaveLength(2);
    expect(lines[1]).toBe('  layer 0: F4 bidirectional Hq=4 Hkv=4 d=16 scale=0.25 (constant), mask additive');
    expect(lines).toContainEqual(expect.stringMatching(/^ {2}not attention: \/Softmax \(Softmax\): Softmax '\/Softmax' is not attention: .*\/classifier\/Gemm/));
    // the form codes shown are explained, and the way to the details is named
    expect(lines).toContain('  forms: F4 = decomposed bidirectional attention (encoder)');
    expect(lines).toContainEqual(expect.stringMatching(/--verbose: projections/));
    expect(renderAttention(attentionReport(r))).toEqual(lines);
    const verbose = renderAttention(r, { verbose: true });
    expect(verbose[1]).toBe(lines[1]);
    expect(verbose[2]).toBe('      q: /bert/encoder.0/attention/self/query/Add_output_0 (MatMul onnx::MatMul_287 + bert.encoder.0.attention.self.query.bias)');
    expect(verbose).toContain('      out: /bert/encoder.0/attention/self/Reshape_3_output_0 -> /bert/encoder.0/attention/output/dense/MatMul');
    expect(verbose).not.toContainEqual(expect.stringMatching(/--verbose: projections/));
  });
});

describe('titanize inspect --attention', () => {
  it('prints the sites and the rejected Softmax as text', async () => {
    const { code, out } = await run('inspect', path.join(FIXTURES, 'gpt2_past.onnx'), '--attention');
    expect(code).toBe(0);
    expect(out).toMatch(/Attention: 2 sites \(F3\)/);
    expect(out).toMatch(/layer 1: F3 causal Hq=4 Hkv=4 d=16 scale=0.25 \(computed\), mask additive\+where, KV cache\n/);
    expect(out).not.toMatch(/past: /);
    // --verbose, before or after the command, adds the names
    for (const args of [['inspect', '--verbose'], ['-v', 'inspect']]) {
      const v = await run(...args, path.join(FIXTURES, 'gpt2_past.onnx'), '--attention');
      expect(v.out).toMatch(/\n {6}past: past_key_values.1.key, past_key_values.1.value\n {6}present: present.1.key, present.1.value\n/);
    }
  });

  it('adds an "attention" object to --json', async () => {
    const { code, out } = await run('inspect', path.join(FIXTURES, 'bert.onnx'), '--attention', '--json');
    expect(code).toBe(0);
    const report = JSON.parse(out) as { attention: ReturnType<typeof attentionReport> };
    expect(report.attention.sites.map((s) => [s.layer, s.numHeads, s.causal])).toEqual([
      [0, 4, false],
      [1, 4, false],
    ]);
    expect(report.attention.rejected).toEqual([expect.objectContaining({ node: '/Softmax', opType: 'Softmax', reason: expect.stringMatching(/none of the alternatives/) })]);
  });

  it('leaves the plain report alone without the flag', async () => {
    const { out } = await run('inspect', path.join(FIXTURES, 'llama.onnx'));
    expect(out).not.toMatch(/Attention:/);
  });
});

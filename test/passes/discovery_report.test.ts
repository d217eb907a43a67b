import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { loadModel } from '../../src/ir/index.js';
import { attentionReport, discoverAttention, renderAttention } from '../../src/passes/index.js';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');

async function run(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(['node', 'titanize', ...args], {
    stdout: { write: (s: string) => ((out += s), true), isTTY: false } as never,
    stderr: { write: (s: string) => ((err += s), true), isTTY: false } as never,
  });
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

  it('renders one line per site and one per Softmax that is not attention', () => {
    const r = discoverAttention(loadModel(path.join(FIXTURES, 'bert.onnx')));
    const lines = renderAttention(r);
    expect(lines[0]).toBe('Attention: 2 sites (F4), 1 candidate not taken');
    expect(lines.filter((l) => l.startsWith('  layer '))).toHaveLength(2);
    expect(lines[1]).toMatch(/^ {2}layer 0: F4 bidirectional Hq=4 Hkv=4 d=16 scale=0.25 \(constant\) \| q=\/bert\/encoder.0\/attention\/self\/query\/Add_output_0/);
    expect(lines).toContainEqual(expect.stringMatching(/^ {2}not attention: \/Softmax \(Softmax\): Softmax '\/Softmax' is not attention: .*\/classifier\/Gemm/));
    // the form codes shown are explained
    expect(lines).toContain('  forms: F4 = decomposed bidirectional attention (encoder)');
    expect(renderAttention(attentionReport(r))).toEqual(lines);
  });
});

describe('titanize inspect --attention', () => {
  it('prints the sites and the rejected Softmax as text', async () => {
    const { code, out } = await run('inspect', path.join(FIXTURES, 'gpt2_past.onnx'), '--attention');
    expect(code).toBe(0);
    expect(out).toMatch(/Attention: 2 sites \(F3\)/);
    expect(out).toMatch(/layer 1: F3 causal Hq=4 Hkv=4 d=16 scale=0.25 \(computed\)/);
    expect(out).toMatch(/past=past_key_values.1.key, past_key_values.1.value \| present=present.1.key, present.1.value/);
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

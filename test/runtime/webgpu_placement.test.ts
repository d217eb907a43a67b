/**
 * Converted models on onnxruntime's WebGPU provider (Mesa's lavapipe in CI): for every
 * converted fixture, targets ort and portable, with the memory rules in turn (and every rule
 * on llama), the outputs equal the CPU's, and every node
 * of the memory and the gate that computes on floats ran on the WebGPU provider (read from
 * onnxruntime's profile): a CPU fallback of a LiZA / LinearAttention / MaG node fails.
 * A fallback is a node on the CPU that reads float data, which would then travel from the
 * device and back. Nodes that read only integers (shape arithmetic, and the Cast of the
 * int64 padding mask, which comes from the host anyway) are left to the CPU by
 * onnxruntime itself: the WebGPU provider has no int64 kernels for them.
 *
 * Tolerance 1e-4 relative to max(1, |cpu|): the same graph on two kernel sets, float32
 * with different reduction orders; the memory's output is RMS-normalised, O(1).
 */
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { type Model, encodeModel } from '../../src/ir/index.js';
import { loadModel } from '../../src/node/index.js';
import { LIZA_RULES, type LizaRule } from '../../src/ops/index.js';
import { convert } from '../../src/passes/convert/convert.js';
import type { ConvertTarget } from '../../src/passes/convert/options.js';
import { zeroPast } from '../../src/runtime/decoder_state.js';
import { loadRef, maxAbs, maxAbsDiff } from '../helpers/compare.js';
import { type Placement, runProfiled, webgpuAvailable } from '../helpers/webgpu.js';

const FIX = path.resolve(__dirname, '../fixtures');
const FIXTURES = [
  'llama', 'llama_past', 'qwen2_past', 'gpt2', 'gpt2_past', 'bert', 'attention23', 'gqa_contrib',
  'foreign/llama14', 'foreign/gptj', 'foreign/phi', 'foreign/mha_encoder', 'foreign/mha_causal', 'foreign/vit', 'foreign/swin', 'foreign/encdec_decoder',
];
const TARGETS: ConvertTarget[] = ['ort', 'portable'];
const adapter = await webgpuAvailable(path.join(FIX, 'llama.onnx'));

function feedsFor(name: string, model: Model): Record<string, ort.Tensor> {
  const ref = loadRef(path.join(FIX, `${name}.ref.json`));
  const feeds: Record<string, ort.Tensor> = {};
  for (const i of ref.inputs) feeds[i.name] = new ort.Tensor(i.dtype as 'int64' | 'float32', i.data as BigInt64Array | Float32Array, i.dims);
  const B = Object.values(feeds)[0]!.dims[0]!;
  for (const v of model.graph.inputs) if (!feeds[v.name] && !v.initializer) feeds[v.name] = zeroPast(v.type, B, v.name);
  return feeds;
}

/** Nodes of the memory and the gate: added by the conversion (tptt/ prefix) or inlined from the LiZA / MaG functions. */
function isMemoryNode(p: Placement): boolean {
  return p.op === 'LinearAttention' || p.node.startsWith('tptt/') || /^_inlfunc_(LiZA|MaG)/.test(p.node);
}

async function check(name: string, target: ConvertTarget, rule: LizaRule): Promise<void> {
  const m = loadModel(path.join(FIX, `${name}.onnx`));
  convert(m, { mu: 0.5, rule, target, cross: true });
  const bytes = encodeModel(m);
  const feeds = feedsFor(name, m);
  const cpu = await runProfiled(bytes, feeds, 'cpu');
  const gpu = await runProfiled(bytes, feeds, 'webgpu');
  for (const [k, want] of Object.entries(cpu.outputs)) {
    if (want.type !== 'float32') continue;
    const got = gpu.outputs[k]!.data as Float32Array;
    const w = want.data as Float32Array;
    expect(maxAbsDiff(got, w) / Math.max(1, maxAbs(w)), `${name} ${target} ${rule} ${k}`).toBeLessThanOrEqual(1e-4);
  }
  const memory = gpu.placements.filter(isMemoryNode);
  expect(memory.length, 'memory nodes in the profile').toBeGreaterThan(0);
  if (target === 'ort') expect(memory.filter((p) => p.op === 'LinearAttention').length).toBeGreaterThan(0);
  const fallbacks = memory.filter((p) => p.provider !== 'WebGpuExecutionProvider' && p.inputTypes.some((t) => t === 'float' || t === 'float16'));
  expect(fallbacks.map((p) => `${p.node} (${p.op}) on ${p.provider}`), `${name} ${target}`).toEqual([]);
}

describe.skipIf(!adapter)('converted models on the WebGPU provider', () => {
  // every fixture on both targets, the memory rules taken in turn (each rule on six or
  // more fixture/target pairs; every rule on both targets for llama below)
  FIXTURES.forEach((name, i) => {
    it.each(TARGETS.map((t, j) => [t, LIZA_RULES[(i * 2 + j) % LIZA_RULES.length]!] as const))(`${name} --target %s, rule %s: outputs equal the CPU's, the memory runs on the GPU`, async (target, rule) => {
      await check(name, target, rule);
    });
  });
  it.each(LIZA_RULES.flatMap((r) => TARGETS.map((t) => [r, t] as const)))('llama, rule %s, --target %s', async (rule, target) => {
    await check('llama', target, rule);
  });
});

/**
 * `npm run check:gpu`: a short, prepared check for a machine with an NVIDIA GPU. It
 * converts the bundled Llama fixture (with KV cache), decodes it on onnxruntime's CUDA
 * provider and on the CPU (logits must agree), trains the converted model's LoRA deltas
 * for a few steps on both (losses must agree), and prints the CUDA / CPU time ratios of
 * this run. Where there is no NVIDIA GPU or no CUDA provider it says so and exits 0.
 *
 * Exit status: 0 ok or skipped, 1 a mismatch between CUDA and the CPU.
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeModel } from '../src/ir/index.js';
import { loadModel } from '../src/node/index.js';
import { convert } from '../src/passes/convert/convert.js';
import { DecoderState, carriedOutputs, declaredTypes } from '../src/runtime/decoder_state.js';
import { createSession, providerProblem } from '../src/runtime/execution_provider.js';
import { trainingBatch } from '../src/runtime/data.js';
import { Trainer } from '../src/runtime/trainer.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** Logits and losses: float32 on two kernel sets (TF32 off by default in onnxruntime's CUDA EP). */
const TOLERANCE = 1e-3;

function hasNvidiaGpu(): string | null {
  try {
    return execFileSync('nvidia-smi', ['--query-gpu=name', '--format=csv,noheader'], { encoding: 'utf8' }).trim().split('\n')[0] || null;
  } catch {
    return null;
  }
}

function relDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  let scale = 1;
  for (let i = 0; i < a.length; i++) {
    worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return worst / scale;
}

async function decode(ep: 'cpu' | 'cuda', bytes: Uint8Array, model: ReturnType<typeof loadModel>): Promise<{ logits: Float32Array[]; ms: number }> {
  const types = declaredTypes(model);
  const { session } = await createSession(bytes, { ep, keepOnDevice: carriedOutputs(types.io) });
  try {
    const st = new DecoderState(session, types, 1);
    const logits: Float32Array[] = [];
    const t0 = performance.now();
    logits.push(Float32Array.from((await st.run([[5, 17, 42, 7]])).logits.data as Float32Array));
    for (let i = 0; i < 32; i++) logits.push(Float32Array.from((await st.run([[(i * 11 + 3) % 256]])).logits.data as Float32Array));
    return { logits, ms: performance.now() - t0 };
  } finally {
    await session.release();
  }
}

async function train(ep: 'cpu' | 'cuda', model: ReturnType<typeof loadModel>): Promise<{ losses: number[]; ms: number }> {
  const tokens = Int32Array.from({ length: 4000 }, (_, i) => (i * 37 + (i >> 3)) % 256);
  const tr = await Trainer.create(model, { seqLen: 32, steps: 5, ep });
  try {
    const losses: number[] = [];
    const t0 = performance.now();
    for (let s = 0; s < 5; s++) losses.push((await tr.step(trainingBatch(tokens, 4, 32, 1, s))).loss);
    return { losses, ms: performance.now() - t0 };
  } finally {
    await tr.release();
  }
}

async function main(): Promise<number> {
  const gpu = hasNvidiaGpu();
  const problem = providerProblem('cuda');
  if (!gpu) {
    console.log('check:gpu: no NVIDIA GPU here (nvidia-smi found none); skipped');
    return 0;
  }
  if (problem) {
    console.log(`check:gpu: ${gpu} found, but ${problem}; skipped`);
    return 0;
  }
  console.log(`check:gpu: ${gpu}`);
  const model = loadModel(path.join(ROOT, 'test/fixtures/llama_past.onnx'));
  convert(model, { mu: 0.5, loraRank: 4, target: 'ort' });
  const bytes = encodeModel(model);
  let failed = false;
  const cpu = await decode('cpu', bytes, model);
  const cuda = await decode('cuda', bytes, model);
  const worst = Math.max(...cuda.logits.map((l, i) => relDiff(l, cpu.logits[i]!)));
  console.log(`decode (prefill 4 + 32 steps): cuda ${cuda.ms.toFixed(1)} ms, cpu ${cpu.ms.toFixed(1)} ms, cuda/cpu ${(cuda.ms / cpu.ms).toFixed(2)}×; logits differ by ${worst.toExponential(2)} (tolerance ${TOLERANCE})`);
  failed ||= !(worst <= TOLERANCE);
  const tc = await train('cpu', model);
  const tg = await train('cuda', model);
  const lossDiff = Math.max(...tg.losses.map((l, i) => Math.abs(l - tc.losses[i]!) / Math.max(1, Math.abs(tc.losses[i]!))));
  console.log(`train (5 steps of 4 × 32): cuda ${tg.ms.toFixed(1)} ms, cpu ${tc.ms.toFixed(1)} ms, cuda/cpu ${(tg.ms / tc.ms).toFixed(2)}×; losses differ by ${lossDiff.toExponential(2)} (tolerance ${TOLERANCE})`);
  failed ||= !(lossDiff <= TOLERANCE);
  console.log(failed ? 'check:gpu: MISMATCH between CUDA and the CPU' : 'check:gpu: ok');
  return failed ? 1 : 0;
}

process.exitCode = await main();

/**
 * Training in onnxruntime on the fidelity fixture (test/fixtures/fidelity: a 0.8M-parameter
 * byte-level Llama pretrained on Python sources, held-out accuracy ~0.62).
 *
 * 1. Fidelity table: held-out next-token accuracy as a fraction of the original model's on
 *    the same windows, for the converted model before training and after 100 / 200 / 400
 *    steps (batch 8 × 128 tokens, LoRA r 8 / α 16, AdamW at the default peak lr: 2e-3 with
 *    a softmax branch, 5e-3 for μ = 1; 20 warmup steps then cosine, clip 1), per μ, rule
 *    and objective. Goals: μ = 0.5 ≥ 0.95 within 400 steps,
 *    μ = 1 ≥ 0.85.
 * 2. Step time and peak RSS against PyTorch (bench/train_ref.py, same model, batch,
 *    sequence and threads), as ratios from this run.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { type Model, decodeModel, encodeModel } from '../src/ir/index.js';
import { loadModel, saveModel } from '../src/node/index.js';
import { convert } from '../src/passes/convert/convert.js';
import type { LizaRule } from '../src/ops/index.js';
import type { Objective } from '../src/passes/train/index.js';
import { type TokenBatch, evaluationBatches, loadTokens, trainingBatch } from '../src/runtime/data.js';
import { evaluateModel } from '../src/runtime/evaluate.js';
import { loadTokenizer } from '../src/runtime/tokenizer.js';
import { Trainer } from '../src/runtime/trainer.js';
import { bytes, ms, ratio, repoRoot, sig, suite } from './harness.js';

const FID = path.join(repoRoot, 'test/fixtures/fidelity');

interface Config {
  mu: number;
  rule: LizaRule;
  /** One objective for the whole run, or stages run one after the other (steps each). */
  objective: Objective | [Objective, number][];
  loraTargets?: 'attention' | 'all';
}

async function accuracyOf(model: Model, batches: TokenBatch[]): Promise<number> {
  return (await evaluateModel(model, batches)).accuracy;
}

suite('train.fidelity', async (ctx) => {
  const tokenizer = loadTokenizer(path.join(repoRoot, 'test/fixtures/tokenizer.json'));
  const train = loadTokens(path.join(FID, 'train.txt'), tokenizer);
  const heldOut = loadTokens(path.join(FID, 'eval.txt'), tokenizer);
  const T = 128;
  const B = 8;
  const evalBatches = evaluationBatches(heldOut, 8, T, ctx.quick ? 8 : 64);
  const original = loadModel(path.join(FID, 'lm.onnx'));
  const base = await accuracyOf(original, evalBatches);
  const checkpoints = ctx.quick ? [5, 10] : [100, 200, 400];
  const steps = checkpoints.at(-1)!;
  const configs: Config[] = ctx.quick
    ? [
        { mu: 0.5, rule: 'delta_product', objective: 'lm' },
        { mu: 1, rule: 'delta_product', objective: [['transfer', 100], ['distill', 300]], loraTargets: 'all' },
      ]
    : [
        { mu: 0.5, rule: 'delta_product', objective: 'lm' },
        { mu: 0.5, rule: 'delta_product', objective: 'distill' },
        { mu: 0.5, rule: 'linear', objective: 'lm' },
        { mu: 0.5, rule: 'linear', objective: 'distill' },
        { mu: 1, rule: 'delta_product', objective: 'lm' },
        { mu: 1, rule: 'delta_product', objective: 'distill' },
        { mu: 1, rule: 'linear', objective: 'lm' },
        { mu: 1, rule: 'linear', objective: 'distill' },
        { mu: 1, rule: 'delta_product', objective: 'distill', loraTargets: 'all' },
        { mu: 1, rule: 'delta_product', objective: [['transfer', 100], ['distill', 300]], loraTargets: 'all' },
      ];
  ctx.note(`original held-out accuracy ${base.toFixed(4)} on ${evalBatches.reduce((n, b) => n + b.ids.length, 0)} windows of ${T + 1} tokens`);
  const rows = [];
  const stepMs: number[] = [];
  for (const c of configs) {
    const converted = loadModel(path.join(FID, 'lm.onnx'));
    convert(converted, { rule: c.rule, mu: c.mu, loraRank: 8, loraAlpha: 16, loraTargets: c.loraTargets });
    const stages: [Objective, number][] = typeof c.objective === 'string' ? [[c.objective, steps]] : c.objective.map(([o, n]) => [o, ctx.quick ? Math.max(1, Math.round((n * steps) / 400)) : n]);
    const row: Record<string, ReturnType<typeof ratio> | string> = {
      μ: String(c.mu),
      rule: c.rule,
      objective: stages.map(([o, n]) => (stages.length > 1 ? `${o} ${n}` : o)).join(' → '),
      LoRA: c.loraTargets ?? 'attention',
      before: ratio(await accuracyOf(converted, evalBatches), base),
    };
    let done = 0;
    let peak = 0;
    for (const [objective, n] of stages) {
      // default learning rate: 2e-3 with a softmax branch, 5e-3 for μ = 1
      const tr = await Trainer.create(converted, { seqLen: T, steps: n, warmup: 20, objective, teacher: objective === 'lm' ? undefined : original });
      peak = tr.peakLr;
      try {
        for (let s = 0; s < n; s++) {
          const r = await tr.step(trainingBatch(train, B, T, 0, done + s));
          stepMs.push(r.ms);
          if (checkpoints.includes(done + s + 1)) {
            const snapshot = decodeModel(encodeModel(converted));
            await tr.applyTo(snapshot);
            row[`${done + s + 1} steps`] = ratio(await accuracyOf(snapshot, evalBatches), base);
          }
        }
        await tr.applyTo(converted);
      } finally {
        await tr.release();
      }
      done += n;
    }
    row.lr = String(peak);
    rows.push(row);
    ctx.note(`μ ${c.mu} ${c.rule} ${row.objective as string}${c.loraTargets ? ` (LoRA ${c.loraTargets})` : ''}: ${Object.entries(row).filter(([k]) => k.includes('steps') || k === 'before').map(([k, v]) => `${k} ${typeof v === 'string' ? v : v.text}`).join(', ')}`);
  }
  ctx.table(`held-out accuracy / original's (${base.toFixed(3)}), batch ${B} × ${T}`, rows);
  stepMs.sort((a, b) => a - b);
  ctx.note(`median step ${sig(stepMs[Math.floor(stepMs.length / 2)]!)} ms over all runs`);
});

suite('train.speed', async (ctx) => {
  const tokenizer = loadTokenizer(path.join(repoRoot, 'test/fixtures/tokenizer.json'));
  const train = loadTokens(path.join(FID, 'train.txt'), tokenizer);
  const T = 128;
  const B = 8;
  // step time and memory against PyTorch, same model and batch
  const py = '/usr/bin/python3';
  const dir = ctx.tmpDir();
  const model = loadModel(path.join(FID, 'lm.onnx'));
  convert(model, { rule: 'delta_product', mu: 0.5, loraRank: 8, loraAlpha: 16 });
  const file = path.join(dir, 'c.onnx');
  saveModel(model, file);
  const refSteps = ctx.quick ? 4 : 12;
  const res = spawnSync(py, [path.join(repoRoot, 'bench/train_ref.py'), '--model', file, '--batch', String(B), '--seq-len', String(T), '--steps', String(refSteps), '--warmup-steps', '2', '--threads', '2'], { encoding: 'utf8', timeout: 900_000 });
  if (res.status !== 0) {
    ctx.skip(`PyTorch reference unavailable (${(res.stderr || String(res.error)).trim().split('\n').at(-1)}); install python3-torch`);
    return;
  }
  const ref = JSON.parse(res.stdout.trim().split('\n').at(-1)!) as { step_ms_median: number; peak_rss_mib: number; rss_before_train_mib: number; torch: string };
  const loaded = process.memoryUsage().rss;
  const tr = await Trainer.create(model, { seqLen: T, steps: refSteps });
  const before = process.memoryUsage().rss;
  let peak = before;
  const times: number[] = [];
  for (let s = 0; s < refSteps; s++) {
    const r = await tr.step(trainingBatch(train, B, T, 0, s));
    if (s >= 2) times.push(r.ms);
    peak = Math.max(peak, process.memoryUsage().rss);
  }
  await tr.release();
  times.sort((a, b) => a - b);
  const ours = times[Math.floor(times.length / 2)]!;
  ctx.table('one training step (forward + backward + AdamW), μ 0.5 delta_product, LoRA r 8', [
    {
      case: `batch ${B} × ${T}, 2 threads`,
      titanize: ms(ours),
      [`PyTorch ${ref.torch}`]: ms(ref.step_ms_median),
      'titanize/PyTorch': ratio(ours, ref.step_ms_median),
      'graph build RSS': bytes(before - loaded),
      'RSS increment titanize': bytes(peak - before),
      'RSS increment PyTorch': bytes((ref.peak_rss_mib - ref.rss_before_train_mib) * 2 ** 20),
      'RSS ratio': ratio(peak - before, (ref.peak_rss_mib - ref.rss_before_train_mib) * 2 ** 20),
    },
  ]);
  ctx.note(`titanize step ${sig(ours)} ms vs PyTorch ${sig(ref.step_ms_median)} ms (goal: at most 1.0x); PyTorch runs with OMP_WAIT_POLICY=PASSIVE (spin-waiting threads make it 30x slower on 2 cores)`);
  ctx.note('RSS increments: what the training steps add (titanize: after its training session is built; PyTorch: after the model is loaded); building the training graph and session is shown apart');
});

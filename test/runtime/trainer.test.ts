/**
 * Training a converted model in onnxruntime: the training graph's loss and gradients
 * against independent forwards, the AdamW step against a TypeScript reference, resume
 * against an uninterrupted run, and a short run that lowers held-out loss.
 *
 * Independent references: the loss is recomputed in float64 (runtime/evaluate.ts) from the
 * logits of the converted model as `convert` writes it for `--target ort` (LiZA on
 * onnxruntime's LinearAttention kernel, not the standard-op body that training
 * differentiates); gradients are checked by central differences of that same loss along
 * the gradient direction and along a random one.
 */
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { DataType, type Model, Tensor, Value, decodeModel, encodeModel, tensorType } from '../../src/ir/index.js';
import { loadModel } from '../../src/node/index.js';
import { seededRandom } from '../../src/ir/random.js';
import { convert } from '../../src/passes/convert/index.js';
import type { LizaRule } from '../../src/ops/index.js';
import { type TokenBatch, evaluationBatches, trainingBatch } from '../../src/runtime/data.js';
import { evaluateModel, logitsOf, scoreLogits } from '../../src/runtime/evaluate.js';
import { sequenceFeeds } from '../../src/runtime/feeds.js';
import { createSession } from '../../src/runtime/execution_provider.js';
import { declaredTypes } from '../../src/runtime/generate.js';
import { Trainer, buildTrainingGraph, lrAt } from '../../src/runtime/trainer.js';
import { logitToMu, muToLogit } from '../../src/passes/train/index.js';
import { quantize4Bit, quantizeDynamic } from '../helpers/quantize.js';

const FIX = path.resolve(__dirname, '../fixtures');
const T = 12;

/** A token stream with structure to learn: each token mostly determines the next (a noisy bigram chain). */
function patternTokens(n: number, seed = 3): Int32Array {
  const rand = seededRandom(seed);
  const next = Array.from({ length: 256 }, () => Math.floor(rand() * 16));
  const out = new Int32Array(n);
  for (let i = 1; i < n; i++) out[i] = rand() < 0.9 ? next[out[i - 1]!]! : Math.floor(rand() * 16);
  return out;
}

function converted(rule: LizaRule, mu: number, target: 'ort' | 'portable' = 'ort', seed = 5, fixture = 'llama'): Model {
  const m = loadModel(path.join(FIX, `${fixture}.onnx`));
  convert(m, { rule, mu, loraRank: 4, target, seed });
  return m;
}

/** Gives every LoRA B a small random value (fresh adapters have B = 0, which zeroes dL/dA). */
function randomizeB(m: Model, seed = 9): void {
  const rand = seededRandom(seed);
  for (const [name, v] of m.graph.initializers) {
    if (!/^lora\..*\.B$/.test(name)) continue;
    const t = v.initializer!;
    v.initializer = Tensor.fromArray(Float32Array.from({ length: t.size }, () => (rand() * 2 - 1) * 0.05), t.dims.slice(), DataType.FLOAT, name);
  }
}

async function lossOf(m: Model, batch: TokenBatch): Promise<number> {
  return (await evaluateModel(m, [batch])).loss;
}

/**
 * The converted model with the trained tensors as graph inputs instead of initializers, in
 * one session: the loss at any parameter values, for finite differences (μ fed as sigmoid(θ)).
 */
async function lossAt(m: Model, names: string[]): Promise<(params: Map<string, Float32Array>, batch: TokenBatch) => Promise<number>> {
  const c = decodeModel(encodeModel(m));
  const g = c.graph;
  const sources = names.map((n) => (n.endsWith('.logit') ? n.slice(0, -'.logit'.length) : n));
  for (const src of sources) {
    const v = g.initializers.get(src)!;
    const input = g.addInput(new Value(`${src}.fed`, tensorType(DataType.FLOAT, v.initializer!.dims)));
    v.replaceAllUsesWith(input);
    g.removeInitializer(v);
  }
  const { session } = await createSession(encodeModel(c));
  const types = declaredTypes(c);
  return async (params, batch) => {
    const feeds = sequenceFeeds(session.inputNames.filter((n) => !n.endsWith('.fed')), session.outputNames, types, batch.ids);
    names.forEach((n, i) => {
      const p = params.get(n)!;
      const v = n.endsWith('.logit') ? Float32Array.from(p, logitToMu) : p;
      feeds[`${sources[i]}.fed`] = new ort.Tensor('float32', v, staticDims(c, `${sources[i]}.fed`));
    });
    const out = await session.run(feeds);
    return scoreMean(logitsOf(session, out), batch);
  };
}

function staticDims(m: Model, input: string): number[] {
  const t = m.graph.inputs.find((x) => x.name === input)!.type;
  return (t && t.kind === 'tensor' ? t.shape ?? [] : []).map((d) => d.value!);
}

function scoreMean(logits: ort.Tensor, batch: TokenBatch): number {
  const s = scoreLogits(logits, batch);
  return s.nll / s.count;
}

describe('training graph', () => {
  // attention23: ONNX Attention (expanded to standard ops for training), RotaryEmbedding and
  // RMSNormalization of opset 23; gqa_contrib: com.microsoft.GroupQueryAttention with rotary
  // inside (expanded too). onnxruntime's kernels of the original model are the reference
  it.each(['llama', 'attention23', 'gqa_contrib'])('%s: with fresh LoRA and μ = 0, the training loss equals the original model’s loss', async (fixture) => {
    const original = loadModel(path.join(FIX, `${fixture}.onnx`));
    const batch = trainingBatch(patternTokens(500), 2, T, 1, 0);
    const ref = await lossOf(original, batch);
    const tr = await Trainer.create(converted('delta_product', 0, 'ort', 5, fixture), { seqLen: T, steps: 1 });
    const r = await tr.step(batch);
    await tr.release();
    // float32 forward vs float64 loss from float32 logits: ~1e-7 relative apart
    expect(Math.abs(r.loss - ref) / ref).toBeLessThan(1e-5);
  });

  for (const [fixture, rule] of [['llama', 'linear'], ['llama', 'delta_product'], ['llama', 'gated_delta_product'], ['attention23', 'delta_product'], ['gqa_contrib', 'gated_delta_product']] as [string, LizaRule][]) {
    it(`gradients w.r.t. every LoRA A/B and μ match central differences of the ort-target model (${fixture}, ${rule})`, async () => {
      const m = converted(rule, 0.5, 'ort', 5, fixture);
      randomizeB(m);
      const batch = trainingBatch(patternTokens(400), 2, T, 2, 0);
      const tr = await Trainer.create(m, { seqLen: T, steps: 1, train: ['lora', 'mu'], outputGradients: true });
      const grads = await tr.gradients(batch);
      const params = new Map([...(await tr.parameters())].map(([k, v]) => [k, Float32Array.from(v)]));
      await tr.release();
      expect([...grads.keys()].filter((k) => k.endsWith('.logit'))).toHaveLength(2);
      // A and B of every adapter (the q, k, v and o projections of both layers), and the two μ
      const adapters = [...m.graph.initializers.keys()].filter((k) => /^lora\..*\.[AB]$/.test(k)).length;
      expect(adapters).toBe(fixture === 'gqa_contrib' ? 12 : 16);
      expect(grads.size).toBe(adapters + 2);
      const loss = await lossAt(m, [...grads.keys()]);
      // the loss at the training graph's parameters is the inference model's loss
      const tr2 = await Trainer.create(m, { seqLen: T, steps: 1, train: ['lora', 'mu'] });
      const trained = await tr2.step(batch);
      await tr2.release();
      expect(Math.abs(trained.loss - (await loss(params, batch))) / trained.loss).toBeLessThan(1e-5);
      // per tensor, the element with the largest gradient and one drawn at random, h = 1e-2:
      // float32 loss noise (~1e-6) over 2h gives 5e-5 absolute; curvature O(h²) ~1e-4 relative
      const rand = seededRandom(11);
      for (const [k, g] of grads) {
        let big = 0;
        for (let i = 0; i < g.length; i++) if (Math.abs(g[i]!) > Math.abs(g[big]!)) big = i;
        for (const j of new Set([big, Math.floor(rand() * g.length)])) {
          const at = (d: number): Map<string, Float32Array> => {
            const q = new Map(params);
            const v = Float32Array.from(params.get(k)!);
            v[j]! += d;
            q.set(k, v);
            return q;
          };
          const h = 1e-2;
          const numeric = ((await loss(at(h), batch)) - (await loss(at(-h), batch))) / (2 * h);
          const err = Math.abs(numeric - g[j]!) / (Math.abs(g[j]!) + 5e-3);
          expect(err, `${rule} ${k}[${j}]: numeric ${numeric} vs analytic ${g[j]}`).toBeLessThan(2e-2);
        }
      }
    });
  }

  // llama with its projections quantized the way onnxruntime's tools write them: the forward
  // stays exactly the quantized model's, and the gradients equal those of the same weights in
  // float. 4-bit MatMulNBits computes in float, so they agree to float rounding (1e-3); the
  // dynamically quantized form also rounds its activations to 8 bits, so its straight-through
  // gradients differ from the float-weight ones by that rounding: a few per cent, where a wrong
  // estimator is off by the scales (×100)
  it.each([
    ['dynamically quantized (DynamicQuantizeLinear → MatMulInteger)', 'integer', 0.1],
    ['4-bit MatMulNBits', 'nbits', 1e-3],
  ] as const)('%s projections train: μ = 0 loss equals the quantized original, gradients are the float weights\'', async (_name, kind, tol) => {
    const quantized = (dequantized: boolean): Model => {
      const m = loadModel(path.join(FIX, 'llama.onnx'));
      const n = kind === 'integer' ? quantizeDynamic(m, dequantized ? 'dequantized' : 'integer') : quantize4Bit(m, dequantized ? 'dequantized' : 'nbits');
      expect(n).toBeGreaterThan(8);
      return m;
    };
    const batch = trainingBatch(patternTokens(500), 2, T, 1, 0);
    const ref = await lossOf(quantized(false), batch);
    const m0 = quantized(false);
    convert(m0, { mu: 0, loraRank: 4, target: 'ort', seed: 5 });
    const tr0 = await Trainer.create(m0, { seqLen: T, steps: 1 });
    expect(Math.abs((await tr0.step(batch)).loss - ref) / ref).toBeLessThan(1e-5);
    await tr0.release();
    const grads = async (dequantized: boolean) => {
      const m = quantized(dequantized);
      convert(m, { mu: 0.5, loraRank: 4, target: 'ort', seed: 5 });
      randomizeB(m);
      const tr = await Trainer.create(m, { seqLen: T, steps: 1, train: ['lora', 'mu'], outputGradients: true });
      const g = await tr.gradients(batch);
      await tr.release();
      return g;
    };
    const [gq, gf] = [await grads(false), await grads(true)];
    expect([...gq.keys()].sort()).toEqual([...gf.keys()].sort());
    let worst = 0;
    for (const [k, f] of gf) {
      const q = gq.get(k)!;
      let num = 0;
      let den = 0;
      for (let i = 0; i < f.length; i++) {
        num += (q[i]! - f[i]!) ** 2;
        den += f[i]! ** 2;
      }
      worst = Math.max(worst, Math.sqrt(num / Math.max(den, 1e-30)));
    }
    console.log(`${kind}: quantized vs float-weight gradients, worst relative difference ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(tol);
  });

  it('one AdamW step equals the TypeScript reference step', async () => {
    const m = converted('delta_product', 0.5);
    randomizeB(m);
    const batch = trainingBatch(patternTokens(400), 2, T, 4, 0);
    const opts = { seqLen: T, steps: 10, lr: 3e-3, warmup: 2, train: ['lora', 'mu'] as ('lora' | 'mu')[], outputGradients: true, optimizer: { weightDecay: 0.1, clip: 0.5 } };
    const tr = await Trainer.create(m, opts);
    const g = await tr.gradients(batch);
    const before = new Map([...(await tr.parameters())].map(([k, v]) => [k, Float32Array.from(v)]));
    const r = await tr.step(batch);
    const after = await tr.parameters();
    await tr.release();
    const norm = Math.sqrt([...g.values()].reduce((s, x) => s + x.reduce((a, y) => a + y * y, 0), 0));
    expect(r.gradNorm).toBeCloseTo(norm, 4);
    const clip = Math.min(1, 0.5 / (norm + 1e-6));
    const lr = lrAt(opts, 0);
    expect(lr).toBeCloseTo(1.5e-3, 10);
    let worst = 0;
    for (const [k, p0] of before) {
      const decay = k.startsWith('lora.');
      const gk = g.get(k)!;
      const p1 = after.get(k)!;
      for (let i = 0; i < p0.length; i++) {
        const gi = gk[i]! * clip;
        const m1 = 0.1 * gi;
        const v1 = 0.001 * gi * gi;
        const upd = m1 / 0.1 / (Math.sqrt(v1 / 0.001) + 1e-8) + (decay ? 0.1 * p0[i]! : 0);
        const want = p0[i]! - lr * upd;
        worst = Math.max(worst, Math.abs(p1[i]! - want) / Math.max(1e-3, Math.abs(want)));
      }
    }
    expect(worst).toBeLessThan(1e-5);
  });

  it('resuming from a snapshot reproduces the uninterrupted run', async () => {
    const tokens = patternTokens(600);
    const opts = { seqLen: T, steps: 4, lr: 5e-3, warmup: 1, train: ['lora', 'mu'] as ('lora' | 'mu')[] };
    const whole = await Trainer.create(converted('delta_product', 0.5), opts);
    for (let s = 0; s < 4; s++) await whole.step(trainingBatch(tokens, 2, T, 7, s));
    const a = await Trainer.create(converted('delta_product', 0.5), opts);
    for (let s = 0; s < 2; s++) await a.step(trainingBatch(tokens, 2, T, 7, s));
    const snap = await a.snapshot();
    const b = await Trainer.create(converted('delta_product', 0.5), opts);
    b.restore(snap);
    for (let s = b.stepCount; s < 4; s++) await b.step(trainingBatch(tokens, 2, T, 7, s));
    const bp = await b.parameters();
    for (const [k, v] of await whole.parameters()) expect(Array.from(bp.get(k)!)).toEqual(Array.from(v));
    await Promise.all([whole.release(), a.release(), b.release()]);
  });

  it('30 steps lower the held-out loss, and the trained model runs as a converted model', async () => {
    const train = patternTokens(3000, 3);
    const heldOut = patternTokens(3000, 3).subarray(2000);
    const m = converted('delta_product', 0.5);
    const evalBatches = evaluationBatches(heldOut, 4, T, 8);
    const before = await lossOf(m, evalBatches[0]!);
    const tr = await Trainer.create(m, { seqLen: T, steps: 30, lr: 2e-2, warmup: 3, train: ['lora', 'mu'] });
    for (let s = 0; s < 30; s++) await tr.step(trainingBatch(train.subarray(0, 2000), 4, T, 1, s));
    await tr.applyTo(m);
    await tr.release();
    const after = await lossOf(m, evalBatches[0]!);
    expect(after).toBeLessThan(before * 0.9);
    const mu = JSON.parse(m.metadataProps.find((p) => p.key === 'titanize.trained')!.value) as { steps: number; mu: Record<string, number> };
    expect(mu.steps).toBe(30);
    expect(Object.values(mu.mu).every((x) => x > 0 && x < 1)).toBe(true);
  });

  it('norm weights train, and their gradients match central differences', async () => {
    const m = converted('delta_product', 0.5);
    const batch = trainingBatch(patternTokens(400), 2, T, 5, 0);
    const tr = await Trainer.create(m, { seqLen: T, steps: 1, train: ['norms'], outputGradients: true });
    const grads = await tr.gradients(batch);
    const params = new Map([...(await tr.parameters())].map(([k, v]) => [k, Float32Array.from(v)]));
    await tr.release();
    // Llama: input and post-attention RMSNorm of each of the 2 layers, and the final norm
    expect(grads.size).toBe(5);
    const loss = await lossAt(m, [...grads.keys()]);
    for (const [k, g] of grads) {
      let j = 0;
      for (let i = 0; i < g.length; i++) if (Math.abs(g[i]!) > Math.abs(g[j]!)) j = i;
      const at = (d: number): Map<string, Float32Array> => {
        const v = Float32Array.from(params.get(k)!);
        v[j]! += d;
        return new Map([...params, [k, v]]);
      };
      const numeric = ((await loss(at(1e-2), batch)) - (await loss(at(-1e-2), batch))) / 2e-2;
      expect(Math.abs(numeric - g[j]!) / (Math.abs(g[j]!) + 5e-3), `${k}[${j}]`).toBeLessThan(2e-2);
    }
  });

  it('gradient accumulation over 2 micro-batches equals one step on both together', async () => {
    const tokens = patternTokens(600);
    const [b1, b2] = [trainingBatch(tokens, 2, T, 8, 0), trainingBatch(tokens, 2, T, 8, 1)];
    const both = { ids: [...b1.ids, ...b2.ids], labels: [...b1.labels, ...b2.labels], weights: [...b1.weights, ...b2.weights] };
    const opts = { seqLen: T, steps: 3, lr: 5e-3, warmup: 1, train: ['lora', 'mu'] as ('lora' | 'mu')[] };
    const m = converted('delta_product', 0.5);
    randomizeB(m);
    const one = await Trainer.create(m, opts);
    const acc = await Trainer.create(m, { ...opts, optimizer: { accumulate: 2 } });
    const r1 = await one.step(both);
    const r2 = await acc.step([b1, b2]);
    expect(r2.loss).toBeCloseTo(r1.loss, 5);
    expect(r2.gradNorm).toBeCloseTo(r1.gradNorm, 4);
    const ap = await acc.parameters();
    for (const [k, v] of await one.parameters()) {
      const w = ap.get(k)!;
      const err = Math.max(...Array.from(v, (x, i) => Math.abs(x - w[i]!)));
      expect(err, k).toBeLessThan(1e-6);
    }
    await Promise.all([one.release(), acc.release()]);
  });

  it('buildTrainingGraph gives a standalone ONNX model: loss, gradient norm and every updated tensor as outputs', async () => {
    const tg = await buildTrainingGraph(converted('delta_product', 0.5), { seqLen: T, steps: 1, train: ['lora', 'mu'] });
    const outs = tg.model.graph.outputs.map((o) => o.name);
    expect(outs).toContain(tg.spec.lossOutput);
    expect(outs).toContain(tg.spec.gradNormOutput);
    for (const p of tg.spec.params) for (const n of [`${p.input}.next`, `${p.input}.adam_m.next`, `${p.input}.adam_v.next`]) expect(outs).toContain(n);
    // nothing of ai.tptt or com.microsoft is left: autodiff saw standard ops only
    expect(tg.model.graph.nodes().filter((n) => n.domain !== '' && n.domain !== 'ai.onnx')).toHaveLength(0);
    expect(decodeModel(encodeModel(tg.model)).graph.size).toBe(tg.model.graph.size);
  });

  it('μ logit parametrisation round-trips and stays inside (0, 1)', () => {
    expect(logitToMu(muToLogit(0.5))).toBeCloseTo(0.5, 12);
    expect(logitToMu(muToLogit(0))).toBeCloseTo(1e-4, 8);
    expect(logitToMu(muToLogit(1))).toBeCloseTo(1 - 1e-4, 8);
  });
});

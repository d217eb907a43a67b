/**
 * Decoding cost against context length, on a generated decoder of realistic width
 * (hidden 1024, 8 layers, 16 query / 4 kv heads of 64, random weights): the original
 * KV-cache model, the converted state-only model (μ = 1) and the converted hybrid (μ = 0.5
 * with a sliding window of 256). The past is synthesized (random values of the right
 * shape), not prefilled; each row is the median time of one single-token step at that
 * context, and the bytes of the carried inputs. Prefill is timed separately for the lengths
 * that fit. Every figure that matters is a ratio from this run.
 */
import * as ort from 'onnxruntime-node';
import { encodeModel, type Model } from '../src/ir/index.js';
import { convert } from '../src/passes/convert/convert.js';
import { declaredTypes } from '../src/runtime/generate.js';
import { DecoderState } from '../src/runtime/decoder_state.js';
import { syntheticDecoder } from '../tools/synthetic-decoder.js';
import { bytes, ms, ratio, suite, timeAsync } from './harness.js';


function rand(n: number, seed: number, scale = 0.5): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a * 1664525 + 1013904223) >>> 0;
    out[i] = (a / 4294967296 - 0.5) * 2 * scale;
  }
  return out;
}

/** Feeds for one decode step at context `P` (past of P positions, or fixed state). */
function stepFeeds(session: ort.InferenceSession, model: Model, P: number, window: number | undefined): { feeds: Record<string, ort.Tensor>; carried: number } {
  const types = declaredTypes(model);
  const feeds: Record<string, ort.Tensor> = {};
  let carried = 0;
  let kvLen = P;
  for (const name of session.inputNames) {
    const m = /^past_key_values\.(\d+)\.(\w+)$/.exec(name);
    if (!m) continue;
    const t = types.get(name);
    const shape = t?.kind === 'tensor' && t.shape ? t.shape.map((d) => d.value ?? null) : [];
    const kind = m[2]!;
    const len = kind === 'key' || kind === 'value' ? (window ? Math.min(P, window - 1) : P) : undefined;
    if (len !== undefined) kvLen = len;
    const dims = shape.map((d, i) => (i === 0 ? 1 : d === null ? len ?? 0 : d));
    const n = dims.reduce((a, b) => a * b, 1);
    feeds[name] = new ort.Tensor('float32', rand(n, Number(m[1]) * 7 + kind.length, kind === 'state' ? 0.05 : 0.5), dims);
    carried += n * 4;
  }
  const M = kvLen + 1;
  feeds.input_ids = new ort.Tensor('int64', BigInt64Array.from([7n]), [1, 1]);
  feeds.attention_mask = new ort.Tensor('int64', new BigInt64Array(M).fill(1n), [1, M]);
  feeds.position_ids = new ort.Tensor('int64', BigInt64Array.from([BigInt(P)]), [1, 1]);
  return { feeds, carried };
}

suite(
  'decode',
  async (ctx) => {
    const contexts = ctx.quick ? [512, 2048] : [512, 2048, 8192, 32768];
    const cfg = ctx.quick
      ? { layers: 2, hidden: 256, heads: 4, kvHeads: 1, vocab: 1024, intermediate: 512 }
      : { layers: 8, hidden: 1024, heads: 16, kvHeads: 4, vocab: 8192, intermediate: 2048 };
    const WINDOW = 256;
    const build = (): Model => syntheticDecoder({ ...cfg, withPast: true, seed: 3 }).model;
    const variants: { label: string; model: Model; window?: number }[] = [{ label: 'original (KV cache)', model: build() }];
    const linear = build();
    convert(linear, { mu: 1, target: 'ort' });
    variants.push({ label: 'converted μ=1 (state)', model: linear });
    const hybrid = build();
    convert(hybrid, { mu: 0.5, window: WINDOW, target: 'ort' });
    variants.push({ label: `converted μ=0.5, window ${WINDOW}`, model: hybrid, window: WINDOW });
    const sessions = await Promise.all(variants.map(async (v) => ort.InferenceSession.create(encodeModel(v.model), { graphOptimizationLevel: 'all' })));
    const runs = ctx.quick ? 3 : 8;
    const perToken: number[][] = variants.map(() => []);
    const carried: number[][] = variants.map(() => []);
    for (const P of contexts) {
      for (let i = 0; i < variants.length; i++) {
        const { feeds, carried: c } = stepFeeds(sessions[i]!, variants[i]!.model, P, variants[i]!.window);
        const t = await timeAsync(() => sessions[i]!.run(feeds), { runs, warmup: 2 });
        perToken[i]!.push(t.median);
        carried[i]!.push(c);
      }
    }
    ctx.table(
      `one decode step vs context (hidden ${cfg.hidden}, ${cfg.layers} layers, ${cfg.heads}q/${cfg.kvHeads}kv heads × ${cfg.hidden / cfg.heads}, CPU)`,
      contexts.map((P, j) => ({
        context: P,
        ...Object.fromEntries(variants.map((v, i) => [v.label, ms(perToken[i]![j]!)])),
        'state / original': ratio(perToken[1]![j]!, perToken[0]![j]!),
        'window / original': ratio(perToken[2]![j]!, perToken[0]![j]!),
      })),
    );
    ctx.table(
      'carried inputs (past_key_values.*) per sequence',
      contexts.map((P, j) => ({
        context: P,
        ...Object.fromEntries(variants.map((v, i) => [v.label, bytes(carried[i]![j]!)])),
        'state / original': ratio(carried[1]![j]!, carried[0]![j]!),
      })),
    );
    const last = contexts.length - 1;
    ctx.table(
      `growth from ${contexts[0]} to ${contexts[last]} tokens`,
      variants.map((v, i) => ({
        model: v.label,
        'time per token': ratio(perToken[i]![last]!, perToken[i]![0]!),
        'carried bytes': ratio(carried[i]![last]!, carried[i]![0]!),
      })),
    );
    const growth = perToken[1]![last]! / perToken[1]![0]!;
    ctx.note(`converted μ=1: per-token time grows ${((growth - 1) * 100).toFixed(1)}% from ${contexts[0]} to ${contexts[last]} tokens (target: at most 10%); its state stays ${bytes(carried[1]![0]!).text}`);

    // prefill, for lengths whose softmax scores fit comfortably
    const prefillLens = ctx.quick ? [128] : [512, 2048];
    const rows = [];
    for (const T of prefillLens) {
      const times: number[] = [];
      for (let i = 0; i < variants.length; i++) {
        const st = new DecoderState(sessions[i]!, declaredTypes(variants[i]!.model), 1);
        const ids = [Array.from({ length: T }, (_, k) => (k * 13 + 1) % cfg.vocab)];
        const t = await timeAsync(async () => {
          const fresh = new DecoderState(sessions[i]!, declaredTypes(variants[i]!.model), 1);
          await fresh.run(ids);
        }, { runs: ctx.quick ? 2 : 3, warmup: 1 });
        void st;
        times.push(t.median);
      }
      rows.push({
        prompt: T,
        ...Object.fromEntries(variants.map((v, i) => [v.label, ms(times[i]!)])),
        'state / original': ratio(times[1]!, times[0]!),
        'window / original': ratio(times[2]!, times[0]!),
      });
    }
    ctx.table('prefill (whole prompt in one call)', rows);
    for (const s of sessions) await s.release();
  },
  { isolate: true },
);

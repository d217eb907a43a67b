/**
 * The generation loop. It works on any decoder export whose recurrent inputs and outputs
 * are paired by name — `past_key_values.{i}.<kind>` in, `present.{i}.<kind>` out — so the
 * same loop runs an original KV-cache model (kinds key/value, growing) and a converted
 * model (kinds state/window, fixed size). Past inputs start as zeros: with a symbolic
 * past-length axis of length 0, with fixed shapes filled with zeros.
 */
import * as ort from 'onnxruntime-node';
import type { Model } from '../ir/model.js';
import { staticShape } from '../ir/types.js';
import type { TypeInfo } from '../ir/types.js';
import { UserInputError } from '../ir/errors.js';
import { Sampler, type SamplingOptions } from './sampling.js';

export interface RecurrentPair {
  input: string;
  output: string;
  layer: number;
  kind: string;
}

const PAST = /^past_key_values\.(\d+)\.(\w+)$/;

/** Pairs `past_key_values.{i}.<kind>` inputs with `present.{i}.<kind>` outputs. */
export function recurrentPairs(inputNames: readonly string[], outputNames: readonly string[]): RecurrentPair[] {
  const pairs: RecurrentPair[] = [];
  for (const name of inputNames) {
    const m = PAST.exec(name);
    if (!m) continue;
    const output = `present.${m[1]}.${m[2]}`;
    if (!outputNames.includes(output)) {
      throw new UserInputError(`model input '${name}' has no matching output '${output}'; cannot carry it between steps`);
    }
    pairs.push({ input: name, output, layer: Number(m[1]), kind: m[2]! });
  }
  return pairs;
}

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens?: number;
  /** Generation of a row stops when it emits one of these. */
  stopTokens?: number[];
  /** Token used to left-pad shorter prompts (default 0). */
  padToken?: number;
}

export interface GenerateStep {
  /** One new token per batch row (rows that already stopped repeat the pad token). */
  tokens: number[];
  /** Rows still generating after this step. */
  active: boolean[];
}

export interface GenerateStats {
  promptTokens: number;
  newTokens: number;
  prefillMs: number;
  decodeMs: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
}

export interface Generation {
  /** Streams the new tokens step by step. */
  steps: AsyncIterable<GenerateStep>;
  /** Resolves when generation ends: all tokens per row (prompt excluded) and timings. */
  result: Promise<{ tokens: number[][]; stats: GenerateStats }>;
}

/** Shapes of the model's inputs as declared in the file (symbolic dims are null). */
export type DeclaredTypes = Map<string, TypeInfo | undefined>;

export function declaredTypes(model: Model): DeclaredTypes {
  return new Map(model.graph.inputs.map((v) => [v.name, v.type]));
}

/**
 * Runs prompts (one token-id list per row) through `session`, greedily or by sampling.
 * `types` gives the declared input shapes (from the IR), used to build the zero past.
 */
export function generate(session: ort.InferenceSession, types: DeclaredTypes, prompts: number[][], options: GenerateOptions = {}): Generation {
  const queue: GenerateStep[] = [];
  let wake: (() => void) | undefined;
  let finished = false;
  let failure: unknown;
  const push = (s: GenerateStep): void => {
    queue.push(s);
    wake?.();
  };
  const result = run(session, types, prompts, options, push)
    .catch((e) => {
      failure = e;
      throw e;
    })
    .finally(() => {
      finished = true;
      wake?.();
    });
  result.catch(() => undefined);
  const steps: AsyncIterable<GenerateStep> = {
    async *[Symbol.asyncIterator]() {
      for (;;) {
        if (queue.length) {
          yield queue.shift()!;
          continue;
        }
        if (finished) {
          if (failure) throw failure;
          return;
        }
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    },
  };
  return { steps, result };
}

async function run(
  session: ort.InferenceSession,
  types: DeclaredTypes,
  prompts: number[][],
  options: GenerateOptions,
  emit: (s: GenerateStep) => void,
): Promise<{ tokens: number[][]; stats: GenerateStats }> {
  if (!prompts.length || prompts.some((p) => p.length === 0)) throw new UserInputError('every prompt needs at least one token');
  const pairs = recurrentPairs(session.inputNames, session.outputNames);
  const B = prompts.length;
  const T = Math.max(...prompts.map((p) => p.length));
  const pad = options.padToken ?? 0;
  const sampler = new Sampler(options);
  const stop = new Set(options.stopTokens ?? []);
  const maxNew = options.maxNewTokens ?? 20;

  // left padding: each row's real tokens end at the same position
  const ids = new BigInt64Array(B * T);
  const mask: number[][] = [];
  prompts.forEach((p, b) => {
    const off = T - p.length;
    const row = new Array<number>(T).fill(0);
    for (let t = 0; t < T; t++) {
      ids[b * T + t] = BigInt(t < off ? pad : p[t - off]!);
      row[t] = t < off ? 0 : 1;
    }
    mask.push(row);
  });

  let feeds: Record<string, ort.Tensor> = {};
  for (const pair of pairs) feeds[pair.input] = zeroPast(types.get(pair.input), B, pair.input);
  let current = { ids, length: T };
  const out: number[][] = prompts.map(() => []);
  const active = prompts.map(() => true);
  let prefillMs = 0;
  let decodeMs = 0;

  for (let step = 0; step < maxNew && active.some(Boolean); step++) {
    const L = mask[0]!.length;
    const maskData = new BigInt64Array(B * L);
    const posData = new BigInt64Array(B * current.length);
    mask.forEach((row, b) => {
      let seen = 0;
      for (let t = 0; t < L; t++) {
        maskData[b * L + t] = BigInt(row[t]!);
        seen += row[t]!;
        const local = t - (L - current.length);
        if (local >= 0) posData[b * current.length + local] = BigInt(Math.max(seen - 1, 0));
      }
    });
    feeds.input_ids = new ort.Tensor('int64', current.ids, [B, current.length]);
    if (session.inputNames.includes('attention_mask')) feeds.attention_mask = new ort.Tensor('int64', maskData, [B, L]);
    if (session.inputNames.includes('position_ids')) feeds.position_ids = new ort.Tensor('int64', posData, [B, current.length]);
    const t0 = performance.now();
    const results = await session.run(feeds);
    const dt = performance.now() - t0;
    if (step === 0) prefillMs = dt;
    else decodeMs += dt;

    const logits = results.logits ?? results[session.outputNames[0]!]!;
    const [, , V] = logits.dims as number[];
    const data = logits.data as Float32Array;
    const next: number[] = [];
    for (let b = 0; b < B; b++) {
      const tok = active[b] ? sampler.pick(data, (b * current.length + current.length - 1) * V!, V!) : pad;
      next.push(tok);
      if (active[b]) {
        out[b]!.push(tok);
        if (stop.has(tok)) active[b] = false;
      }
    }
    emit({ tokens: next, active: active.slice() });
    const nextFeeds: Record<string, ort.Tensor> = {};
    for (const pair of pairs) nextFeeds[pair.input] = results[pair.output]!;
    feeds = nextFeeds;
    current = { ids: BigInt64Array.from(next.map(BigInt)), length: 1 };
    mask.forEach((row) => row.push(1));
  }
  const newTokens = out.reduce((n, r) => n + r.length, 0);
  const decodeSteps = Math.max(Math.max(...out.map((r) => r.length)) - 1, 0);
  return {
    tokens: out,
    stats: {
      promptTokens: B * T,
      newTokens,
      prefillMs,
      decodeMs,
      prefillTokensPerSecond: prefillMs > 0 ? (B * T) / (prefillMs / 1000) : 0,
      decodeTokensPerSecond: decodeMs > 0 ? (B * decodeSteps) / (decodeMs / 1000) : 0,
    },
  };
}

/** A zero tensor for a past input: batch = B, symbolic (growing) axes = 0, fixed axes as declared. */
export function zeroPast(type: TypeInfo | undefined, B: number, name: string): ort.Tensor {
  const shape = staticShape(type);
  if (!shape) throw new UserInputError(`model input '${name}' has no declared shape; cannot build its initial (empty) value`);
  const dims = shape.map((d, i) => (i === 0 ? B : d === null ? 0 : d));
  const size = dims.reduce((a, b) => a * b, 1);
  return new ort.Tensor('float32', new Float32Array(size), dims);
}

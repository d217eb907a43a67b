/**
 * The generation loop. It works on any decoder export whose recurrent inputs and outputs
 * are paired by name — `past_key_values.{i}.<kind>` in, `present.{i}.<kind>` out — so the
 * same loop runs an original KV-cache model (kinds key/value, growing) and a converted
 * model (kinds state/window, fixed size). Past inputs start as zeros: with a symbolic
 * past-length axis of length 0, with fixed shapes filled with zeros.
 */
import * as ort from 'onnxruntime-node';
import type { Model } from '../ir/model.js';
import { UserInputError } from '../ir/errors.js';
import { DecoderState, type DeclaredTypes } from './decoder_state.js';
import { Sampler, type SamplingOptions } from './sampling.js';


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

export { declaredTypes } from './decoder_state.js';

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
  const B = prompts.length;
  const T = Math.max(...prompts.map((p) => p.length));
  const pad = options.padToken ?? 0;
  const sampler = new Sampler(options);
  const stop = new Set(options.stopTokens ?? []);
  const maxNew = options.maxNewTokens ?? 20;
  const state = new DecoderState(session, types, B);
  // left padding: each row's real tokens end at the same position
  const ids = prompts.map((p) => [...new Array<number>(T - p.length).fill(pad), ...p]);
  const mask = prompts.map((p) => [...new Array<number>(T - p.length).fill(0), ...new Array<number>(p.length).fill(1)]);
  const out: number[][] = prompts.map(() => []);
  const active = prompts.map(() => true);
  let prefillMs = 0;
  let decodeMs = 0;
  let chunk = { ids, mask };
  for (let step = 0; step < maxNew && active.some(Boolean); step++) {
    const { logits, ms } = await state.run(chunk.ids, chunk.mask);
    if (step === 0) prefillMs = ms;
    else decodeMs += ms;
    const [, t, V] = logits.dims as number[];
    const data = logits.data as Float32Array;
    const next: number[] = [];
    for (let b = 0; b < B; b++) {
      const tok = active[b] ? sampler.pick(data, (b * t! + t! - 1) * V!, V!) : pad;
      next.push(tok);
      if (active[b]) {
        out[b]!.push(tok);
        if (stop.has(tok)) active[b] = false;
      }
    }
    emit({ tokens: next, active: active.slice() });
    chunk = { ids: next.map((x) => [x]), mask: next.map(() => [1]) };
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

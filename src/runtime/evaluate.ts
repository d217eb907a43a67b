/**
 * Held-out metrics of any decoder LM, original or converted: mean next-token cross-entropy
 * (natural log), perplexity and argmax accuracy over the weighted positions, computed in
 * float64 from the logits that onnxruntime returns (independent of the training graph).
 */
import type * as ort from 'onnxruntime-node';
import { UserInputError } from '../ir/errors.js';
import type { Model } from '../ir/model.js';
import { encodeModel } from '../ir/serde/encode.js';
import { type ExecutionProviderName, createSession } from './execution_provider.js';
import { declaredTypes } from './generate.js';
import type { TokenBatch } from './data.js';
import { type DeclaredTypes, asFloat32 } from './decoder_state.js';
import { sequenceFeeds } from './feeds.js';

export interface EvalResult {
  loss: number;
  perplexity: number;
  accuracy: number;
  /** Positions counted. */
  tokens: number;
  windows: number;
}

export interface EvaluateOptions {
  /** Output holding the logits (default: the one the decoder interface names, else the first output). */
  logits?: string;
  onProgress?: (done: number, total: number) => void;
}

/** Sums of the loss and of correct predictions over a batch's weighted positions. */
export function scoreLogits(logits: ort.Tensor, batch: TokenBatch): { nll: number; correct: number; count: number } {
  const [B, T, V] = logits.dims as [number, number, number];
  if (B !== batch.ids.length || T !== batch.ids[0]!.length) throw new UserInputError(`logits [${logits.dims.join(', ')}] do not match the batch`);
  const data = logits.data as Float32Array;
  let nll = 0;
  let correct = 0;
  let count = 0;
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const w = batch.weights[b]![t]!;
      if (w === 0) continue;
      const base = (b * T + t) * V;
      let max = -Infinity;
      let arg = 0;
      for (let v = 0; v < V; v++) {
        const x = data[base + v]!;
        if (x > max) {
          max = x;
          arg = v;
        }
      }
      let sum = 0;
      for (let v = 0; v < V; v++) sum += Math.exp(data[base + v]! - max);
      const label = batch.labels[b]![t]!;
      if (label < 0 || label >= V) throw new UserInputError(`label ${label} is outside the vocabulary (${V})`);
      nll += w * (Math.log(sum) + max - data[base + label]!);
      if (arg === label) correct += w;
      count += w;
    }
  }
  return { nll, correct, count };
}

export function logitsOf(session: ort.InferenceSession, out: ort.InferenceSession.OnnxValueMapType, name?: string): ort.Tensor {
  const key = name ?? session.outputNames[0]!;
  const t = out[key] as ort.Tensor | undefined;
  if (!t || t.dims.length !== 3) throw new UserInputError(`the model output '${key}' is not [batch, sequence, vocabulary] logits; is this a decoder LM?`);
  return asFloat32(t);
}

export async function evaluate(session: ort.InferenceSession, types: DeclaredTypes, batches: readonly TokenBatch[], options: EvaluateOptions = {}): Promise<EvalResult> {
  let nll = 0;
  let correct = 0;
  let count = 0;
  let windows = 0;
  for (let i = 0; i < batches.length; i++) {
    const batch = batches[i]!;
    const feeds = sequenceFeeds(session.inputNames, session.outputNames, types, batch.ids);
    const out = await session.run(feeds);
    const s = scoreLogits(logitsOf(session, out, options.logits ?? types.io.logits ?? undefined), batch);
    nll += s.nll;
    correct += s.correct;
    count += s.count;
    windows += batch.ids.length;
    options.onProgress?.(i + 1, batches.length);
  }
  const loss = count ? nll / count : Number.NaN;
  return { loss, perplexity: Math.exp(loss), accuracy: count ? correct / count : Number.NaN, tokens: count, windows };
}

/** `evaluate` on a model held in memory, in a session of its own (opened and released here). */
export async function evaluateModel(model: Model, batches: readonly TokenBatch[], ep: ExecutionProviderName = 'cpu', opts: { verbose?: boolean } = {}): Promise<EvalResult> {
  const { session } = await createSession(encodeModel(model), { ep, verbose: opts.verbose });
  try {
    return await evaluate(session, declaredTypes(model), batches);
  } finally {
    await session.release();
  }
}

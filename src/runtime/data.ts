/**
 * Token data for training and evaluation: a text file encoded once with the tokenizer,
 * then cut into windows of T + 1 tokens (inputs are the first T, labels the last T).
 * Training batches are drawn at random positions from a generator seeded by (seed, step),
 * so a resumed run draws exactly the batches an uninterrupted one would; evaluation uses
 * consecutive non-overlapping windows from the start.
 */
import * as fs from 'node:fs';
import { UserInputError } from '../ir/errors.js';
import { seededRandom } from '../ir/random.js';
import type { TextTokenizer } from './tokenizer.js';

export interface TokenBatch {
  /** B rows of T token ids. */
  ids: number[][];
  /** B rows of T labels: the token after each position. */
  labels: number[][];
  /** B rows of T weights: 1 counts, 0 is ignored (padding). */
  weights: number[][];
}

/** Reads and encodes a text file; clear errors for a missing or empty file and for text the tokenizer drops. */
export function loadTokens(file: string, tokenizer: TextTokenizer, vocabSize?: number): Int32Array {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserInputError(`data file ${file}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a folder, not a text file' : String(e)}`);
  }
  if (text.trim().length === 0) throw new UserInputError(`data file ${file} is empty`);
  const ids = tokenizer.encode(text);
  if (ids.length === 0) throw new UserInputError(`data file ${file}: the tokenizer produced no tokens from ${text.length} characters`);
  if (vocabSize !== undefined) {
    const bad = ids.find((t) => t < 0 || t >= vocabSize);
    if (bad !== undefined) {
      throw new UserInputError(`data file ${file}: the tokenizer gives id ${bad}, outside the model's output width (${vocabSize}); is it the model's tokenizer, and is the model a decoder LM with logits over its vocabulary?`);
    }
  }
  return Int32Array.from(ids);
}

/** A window of T + 1 tokens as inputs and labels. */
function windowAt(tokens: Int32Array, start: number, T: number): { ids: number[]; labels: number[] } {
  const ids = Array.from(tokens.subarray(start, start + T));
  const labels = Array.from(tokens.subarray(start + 1, start + T + 1));
  return { ids, labels };
}

export function checkLength(tokens: Int32Array, T: number, what: string): void {
  if (tokens.length < T + 1) throw new UserInputError(`${what} has ${tokens.length} tokens; --seq-len ${T} needs at least ${T + 1}`);
}

/** The training batch of `step`: B windows at positions drawn from seededRandom(seed, step). */
export function trainingBatch(tokens: Int32Array, B: number, T: number, seed: number, step: number): TokenBatch {
  checkLength(tokens, T, 'the training data');
  const rand = seededRandom((seed * 1_000_003 + step * 7919 + 1) >>> 0);
  const span = tokens.length - T - 1;
  const ids: number[][] = [];
  const labels: number[][] = [];
  for (let b = 0; b < B; b++) {
    const w = windowAt(tokens, Math.floor(rand() * (span + 1)), T);
    ids.push(w.ids);
    labels.push(w.labels);
  }
  return { ids, labels, weights: ids.map((r) => r.map(() => 1)) };
}

/** Consecutive non-overlapping windows of T + 1 tokens from the start (the remainder is dropped), in batches of B. */
export function evaluationBatches(tokens: Int32Array, B: number, T: number, maxWindows = Infinity): TokenBatch[] {
  checkLength(tokens, T, 'the evaluation data');
  const n = Math.min(Math.floor(tokens.length / (T + 1)), maxWindows);
  const out: TokenBatch[] = [];
  for (let i = 0; i < n; i += B) {
    const rows = Array.from({ length: Math.min(B, n - i) }, (_, j) => windowAt(tokens, (i + j) * (T + 1), T));
    out.push({ ids: rows.map((r) => r.ids), labels: rows.map((r) => r.labels), weights: rows.map((r) => r.ids.map(() => 1)) });
  }
  return out;
}

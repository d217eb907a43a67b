/**
 * Inputs of a decoder run over whole sequences with no past: token ids, an attention mask
 * (from the weights: 0 = padding), position ids counting real tokens (as Hugging Face
 * does), and empty past inputs (zero state for a converted model).
 */
import * as ort from 'onnxruntime-node';
import { UserInputError } from '../ir/errors.js';
import { type DeclaredTypes, sessionPairs, zeroPast } from './decoder_state.js';

export function int64(rows: number[][]): ort.Tensor {
  const B = rows.length;
  const T = rows[0]?.length ?? 0;
  const data = new BigInt64Array(B * T);
  rows.forEach((r, b) => r.forEach((x, t) => (data[b * T + t] = BigInt(x))));
  return new ort.Tensor('int64', data, [B, T]);
}

export function float32(rows: number[][]): ort.Tensor {
  const B = rows.length;
  const T = rows[0]?.length ?? 0;
  const data = new Float32Array(B * T);
  rows.forEach((r, b) => r.forEach((x, t) => (data[b * T + t] = x)));
  return new ort.Tensor('float32', data, [B, T]);
}

/**
 * Feeds for `inputNames` (a session's inputs, or the model part of a training graph's) by
 * the model's decoder interface (`types.io`): token ids, padding mask, positions counting
 * real tokens, zero token types, and zero past inputs.
 */
export function sequenceFeeds(inputNames: readonly string[], outputNames: readonly string[], types: DeclaredTypes, ids: number[][], mask?: number[][]): Record<string, ort.Tensor> {
  const B = ids.length;
  const io = types.io;
  const feeds: Record<string, ort.Tensor> = {};
  const m = mask ?? ids.map((r) => r.map(() => 1));
  const pastNames = new Set(sessionPairs(io, inputNames, outputNames, { requireOutputs: false }).map((p) => p.input));
  for (const name of inputNames) {
    if (name === io.tokens) feeds[name] = int64(ids);
    else if (name === io.mask) feeds[name] = int64(m);
    else if (name === io.positions) {
      feeds[name] = int64(
        m.map((row) => {
          let seen = 0;
          return row.map((x) => {
            seen += x;
            return Math.max(seen - 1, 0);
          });
        }),
      );
    } else if (pastNames.has(name)) feeds[name] = zeroPast(types.get(name), B, name);
    else if (name === io.tokenTypes) feeds[name] = int64(ids.map((r) => r.map(() => 0)));
  }
  const missing = inputNames.filter((n) => !(n in feeds));
  if (missing.length) {
    const roles = [`token ids ${io.tokens ?? '(none found)'}`, `mask ${io.mask ?? '(none)'}`, `positions ${io.positions ?? '(none)'}`, `token types ${io.tokenTypes ?? '(none)'}`].join(', ');
    throw new UserInputError(`cannot feed model input${missing.length > 1 ? 's' : ''} ${missing.map((n) => `'${n}'`).join(', ')}: titanize found ${roles} and ${io.pairs.length} carried past inputs`);
  }
  return feeds;
}

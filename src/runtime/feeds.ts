/**
 * Inputs of a decoder run over whole sequences with no past: token ids, an attention mask
 * (from the weights: 0 = padding), position ids counting real tokens (as Hugging Face
 * does), and empty past inputs (zero state for a converted model).
 */
import * as ort from 'onnxruntime-node';
import { UserInputError } from '../ir/errors.js';
import { type DeclaredTypes, recurrentPairs, zeroPast } from './decoder_state.js';

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
 * Feeds for `inputNames` (a session's inputs, or the model part of a training graph's):
 * input_ids, attention_mask, position_ids and past_key_values.* as present.
 */
export function sequenceFeeds(inputNames: readonly string[], outputNames: readonly string[], types: DeclaredTypes, ids: number[][], mask?: number[][]): Record<string, ort.Tensor> {
  const B = ids.length;
  const feeds: Record<string, ort.Tensor> = {};
  const m = mask ?? ids.map((r) => r.map(() => 1));
  const pastNames = new Set(recurrentPairs(inputNames, outputNames, { requireOutputs: false }).map((p) => p.input));
  for (const name of inputNames) {
    if (name === 'input_ids') feeds[name] = int64(ids);
    else if (name === 'attention_mask') feeds[name] = int64(m);
    else if (name === 'position_ids') {
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
    else if (name === 'token_type_ids') feeds[name] = int64(ids.map((r) => r.map(() => 0)));
  }
  const missing = inputNames.filter((n) => !(n in feeds));
  if (missing.length) throw new UserInputError(`cannot feed model input${missing.length > 1 ? 's' : ''} ${missing.map((n) => `'${n}'`).join(', ')}: titanize feeds input_ids, attention_mask, position_ids and past_key_values.*`);
  return feeds;
}

/**
 * Training checkpoints: one JSON file holding the step count, the run's settings and every
 * carried tensor (parameters and AdamW moments, float32 as base64). Written to a temporary
 * name and renamed, so an interrupted write never replaces the last good checkpoint.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UserInputError } from '../ir/errors.js';
import type { TrainerState } from './trainer.js';

export const CHECKPOINT_FORMAT = 'titanize-train-checkpoint';

export interface Checkpoint<S = Record<string, unknown>> {
  format: typeof CHECKPOINT_FORMAT;
  version: 1;
  /** Settings of the run that a resume must match (sequence length, batch, groups, seed, ...). */
  settings: S;
  state: TrainerState;
}

function toBase64(a: Float32Array): string {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
}

function fromBase64(s: string): Float32Array {
  const b = Buffer.from(s, 'base64');
  const copy = new Uint8Array(b.byteLength);
  copy.set(b);
  return new Float32Array(copy.buffer);
}

export function saveCheckpoint<S>(file: string, settings: S, state: TrainerState): void {
  const tensors: Record<string, { dims: number[]; data: string }> = {};
  for (const [k, t] of Object.entries(state.tensors)) tensors[k] = { dims: t.dims, data: toBase64(t.data) };
  const json = JSON.stringify({ format: CHECKPOINT_FORMAT, version: 1, settings, state: { step: state.step, tensors } });
  const target = path.resolve(file);
  const tmp = `${target}.${process.pid}.tmp`;
  try {
    fs.writeFileSync(tmp, json);
    fs.renameSync(tmp, target);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserInputError(`cannot write the checkpoint ${file}${code === 'ENOENT' ? ': its folder does not exist' : code ? ` (${code})` : ''}`);
  }
}

export function loadCheckpoint<S>(file: string): Checkpoint<S> {
  let raw: string;
  try {
    raw = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UserInputError(`checkpoint ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : String(e)}`);
  }
  let j: { format?: string; version?: number; settings?: S; state?: { step: number; tensors: Record<string, { dims: number[]; data: string }> } };
  try {
    j = JSON.parse(raw);
  } catch {
    throw new UserInputError(`checkpoint ${file} is not valid JSON (truncated?)`);
  }
  if (j.format !== CHECKPOINT_FORMAT || j.version !== 1 || !j.state || !j.settings) throw new UserInputError(`${file} is not a titanize training checkpoint`);
  const tensors: TrainerState['tensors'] = {};
  for (const [k, t] of Object.entries(j.state.tensors)) tensors[k] = { dims: t.dims, data: fromBase64(t.data) };
  return { format: CHECKPOINT_FORMAT, version: 1, settings: j.settings, state: { step: j.state.step, tensors } };
}

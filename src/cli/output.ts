/** Writing the user's output model: never over the input, atomically, weights as asked. */
import * as path from 'node:path';
import { type Model, UserInputError } from '../ir/index.js';
import { type SaveOptions, saveModel } from '../node/index.js';
import type { OutStream } from './context.js';
import { type Progress, progress } from './progress.js';

/** Parses --external-data: keep | inline | FILE (tensors of 1 KiB or more go to FILE beside the model). */
export function externalDataOption(value: string | undefined): SaveOptions['externalData'] {
  if (value === undefined || value === 'keep') return 'keep';
  if (value === 'inline') return 'inline';
  if (value.includes('/') || value.includes('\\')) throw new UserInputError(`--external-data ${value}: give a file name (it is written beside the output model), not a path`);
  return { location: value, threshold: 1024 };
}

export function saveOutput(
  model: Model,
  input: string,
  output: string,
  externalData: SaveOptions['externalData'],
  progressTo?: { stream: OutStream; json?: boolean },
): void {
  if (path.resolve(output) === path.resolve(input)) {
    throw new UserInputError(`the output ${output} is the input model; titanize never modifies its input: choose another -o`);
  }
  let bar: Progress | undefined;
  try {
    saveModel(model, output, {
      externalData,
      onProgress: progressTo
        ? (written, total) => {
            bar ??= progress(progressTo.stream, total, 'writing weights', { json: progressTo.json });
            bar.update(written);
          }
        : undefined,
    });
  } finally {
    bar?.done();
  }
}

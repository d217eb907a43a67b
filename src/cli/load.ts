/** Loading the user's model for a command. */
import { type Model } from '../ir/index.js';
import { type LoadOptions, loadModel } from '../node/index.js';

/**
 * `loadModel` for the CLI. The IR reports every problem with the file (missing, not
 * ONNX, malformed content, unsafe or missing external data) as a UserInputError, which
 * the CLI prints as one line with exit status 2.
 */
export function loadModelForCli(file: string, options: LoadOptions = {}): Model {
  return loadModel(file, options);
}

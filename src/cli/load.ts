/** Loading the user's model for a command, with every failure phrased as a user error. */
import { IrError, type LoadOptions, type Model, UserInputError, loadModel } from '../ir/index.js';

/**
 * `loadModel` for the CLI. Besides the IR's own user errors (missing file, not ONNX,
 * unsafe or missing external data), a file whose contents break an IR invariant while
 * decoding (IrError) or hold out-of-range numbers (RangeError from the decoder) is a bad
 * input, not a titanize bug: those are reported as user errors too (the original error
 * is kept as `cause`, shown with TITANIZE_DEBUG=1).
 */
export function loadModelForCli(file: string, options: LoadOptions = {}): Model {
  try {
    return loadModel(file, options);
  } catch (e) {
    if (e instanceof UserInputError) throw e;
    if (e instanceof IrError || e instanceof RangeError) {
      throw new UserInputError(`${file} is not a valid ONNX model (${(e as Error).message})`, { cause: e });
    }
    throw e;
  }
}

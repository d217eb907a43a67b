/**
 * Typed errors. Every error says where (node, op type, value, file) and, when there is
 * one, what to do instead. `UserInputError` marks problems with what the user gave us
 * (a bad file, a bad option): the CLI prints those as one line and exits with status 2.
 */

export class TitanizeError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** An IR invariant would be broken (dangling use, removing a used node, ...). */
export class IrError extends TitanizeError {}

/** A verification failure; `problems` lists every issue found, not only the first. */
export class VerificationError extends TitanizeError {
  constructor(readonly problems: string[]) {
    super(
      `model failed verification (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n  ` +
        problems.slice(0, 20).join('\n  ') +
        (problems.length > 20 ? `\n  ... and ${problems.length - 20} more` : ''),
    );
  }
}

/** Input supplied by the user is unusable: a file that is not ONNX, a bad path, a bad option. */
export class UserInputError extends TitanizeError {}

/** The model file could not be decoded or encoded. */
export class SerdeError extends UserInputError {}

/** An external data reference is unsafe or unreadable. */
export class ExternalDataError extends UserInputError {}

export function describeNode(node: { name: string; opType: string; domain: string }): string {
  const op = node.domain && node.domain !== 'ai.onnx' ? `${node.domain}::${node.opType}` : node.opType;
  return node.name ? `node '${node.name}' (${op})` : `unnamed ${op} node`;
}

/**
 * What a command needs from its surroundings: the output streams and the environment.
 * Everything goes through this object (never process.stdout / process.env directly) so
 * that `main()` can run in-process in tests with captured streams.
 */

/** The part of a writable stream the CLI uses (process.stdout, a PassThrough, a fake). */
export interface OutStream {
  write(chunk: string): boolean;
  /** True for a terminal: progress bars are drawn only there. */
  isTTY?: boolean;
  columns?: number;
}

export interface CliContext {
  stdout: OutStream;
  stderr: OutStream;
  env: Readonly<Record<string, string | undefined>>;
  /** Aborted on Ctrl-C (SIGINT): long commands stop cleanly at the next safe point. */
  signal?: AbortSignal;
  /** `--verbose`: full report details and onnxruntime's warnings (set before a command runs). */
  verbose?: boolean;
}

/** Exit statuses of `titanize`. */
export const EXIT_OK = 0;
/** A bug in titanize (an unexpected exception). */
export const EXIT_INTERNAL = 1;
/** The user's input is unusable: bad arguments, a bad or missing file. */
export const EXIT_USAGE = 2;
/** Stopped by the user (Ctrl-C) after saving what can be resumed. */
export const EXIT_INTERRUPTED = 130;

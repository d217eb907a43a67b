/**
 * The `titanize` program.
 *
 *   titanize <command> [options]      see `titanize --help`
 *
 * `main(argv)` runs one invocation and resolves to the exit status; it never calls
 * process.exit and writes only to the streams it is given, so tests run it in-process.
 * Commands live in src/cli/commands/ (one file each) and are listed in commands/index.ts.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { COMMANDS, type CommandRegistrar } from './commands/index.js';
import { type CliContext, EXIT_OK, type OutStream } from './context.js';
import { PROGRAM_NAME, reportError } from './errors.js';

export type { CliContext, OutStream } from './context.js';
export type { CommandRegistrar } from './commands/index.js';

export interface MainIO {
  stdout?: OutStream;
  stderr?: OutStream;
  env?: Readonly<Record<string, string | undefined>>;
  /** Stops long commands (train) at the next safe point; by default SIGINT does. */
  signal?: AbortSignal;
}

let cachedVersion: string | undefined;

/** The version in titanize's package.json (found by walking up from this file: works from src/ and dist/). */
export function titanizeVersion(): string {
  if (cachedVersion !== undefined) return cachedVersion;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = path.join(dir, 'package.json');
    try {
      const pkg = JSON.parse(fs.readFileSync(candidate, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'titanize' && pkg.version) return (cachedVersion = pkg.version);
    } catch {
      // not here: keep walking up
    }
    const parent = path.dirname(dir);
    if (parent === dir) break;
    dir = parent;
  }
  return (cachedVersion = '0.0.0-unknown');
}

/** Builds a fresh program (nothing is shared between invocations). */
export function createProgram(ctx: CliContext, commands: readonly CommandRegistrar[] = COMMANDS): Command {
  const program = new Command(PROGRAM_NAME);
  program
    .description(
      'Compile pretrained ONNX Transformers into TPTT/Titans models: softmax attention plus a ' +
        'linear-attention memory (LiZA) mixed in by a gate (MaG).',
    )
    .usage('<command> [options]')
    .version(titanizeVersion(), '-V, --version', 'print the titanize version and exit')
    .helpOption('-h, --help', 'show help for a command')
    .option('-v, --verbose', 'full details in reports, and onnxruntime\'s own warnings on stderr')
    .helpCommand('help [command]', 'show help for a command')
    .exitOverride()
    .showSuggestionAfterError(true)
    .configureOutput({
      writeOut: (s) => void ctx.stdout.write(s),
      writeErr: (s) => void ctx.stderr.write(s),
      // errors are printed by reportError (one line, our prefix)
      outputError: () => {},
      getOutHelpWidth: () => (ctx.stdout.isTTY && ctx.stdout.columns ? ctx.stdout.columns : 80),
      getErrHelpWidth: () => (ctx.stderr.isTTY && ctx.stderr.columns ? ctx.stderr.columns : 80),
      getOutHasColors: () => false,
      getErrHasColors: () => false,
    })
    .addHelpText(
      'after',
      '\nRun `titanize <command> --help` for the options of a command.\n' +
        'Exit status: 0 ok, 2 bad input or usage, 1 internal error (set TITANIZE_DEBUG=1 for a stack trace).',
    );
  // --verbose is accepted before or after the command name
  program.hook('preAction', (_program, action) => {
    ctx.verbose = Boolean(action.optsWithGlobals().verbose);
  });
  for (const add of commands) add(program, ctx);
  return program;
}

/**
 * Runs `titanize` with `argv` in process.argv form (node, script, ...arguments) and
 * resolves to the exit status: 0 success, 2 user error, 1 internal error.
 */
export async function main(argv: string[], io: MainIO = {}): Promise<number> {
  // Ctrl-C while a command runs: the first one asks it to stop at a safe point (train
  // finishes its step and saves a checkpoint); a second one ends the process
  const interrupt = io.signal ? undefined : new AbortController();
  const onSigint = (): void => {
    if (interrupt!.signal.aborted) process.exit(130);
    interrupt!.abort();
  };
  if (interrupt) process.on('SIGINT', onSigint);
  const ctx: CliContext = {
    stdout: io.stdout ?? process.stdout,
    stderr: io.stderr ?? process.stderr,
    env: io.env ?? process.env,
    signal: io.signal ?? interrupt!.signal,
  };
  try {
    const program = createProgram(ctx);
    await program.parseAsync(argv, { from: 'node' });
    return EXIT_OK;
  } catch (e) {
    return reportError(e, ctx);
  } finally {
    if (interrupt) process.off('SIGINT', onSigint);
  }
}

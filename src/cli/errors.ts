/**
 * The one place that turns an error into output and an exit status.
 *
 * - `UserInputError` (and its subclasses SerdeError, ExternalDataError) and commander
 *   usage errors: one line `titanize: error: <message>` on stderr, exit status 2, never a
 *   stack trace (with TITANIZE_DEBUG=1 the stack follows, for us).
 * - Anything else is a bug: `titanize: internal error: <message>`, exit status 1; the
 *   stack trace is printed only when TITANIZE_DEBUG=1.
 */
import { CommanderError } from 'commander';
import { UserInputError } from '../ir/index.js';
import { type CliContext, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE } from './context.js';
import { wrapForTerminal } from './report/format.js';

export const PROGRAM_NAME = 'titanize';

/** The user stopped a long command (Ctrl-C); the message says what was kept and how to go on. */
export class InterruptedError extends Error {}

/** Commander codes that mean "done, successfully" (help or version was printed). */
const COMMANDER_SUCCESS = new Set(['commander.helpDisplayed', 'commander.version']);

/** Collapses a message onto one line (user errors must be exactly one line). */
export function oneLine(message: string): string {
  return message
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .join(' ');
}

function isDebug(ctx: CliContext): boolean {
  const v = ctx.env.TITANIZE_DEBUG;
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

function stackOf(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  let s = e.stack ?? `${e.name}: ${e.message}`;
  let cause = e.cause;
  for (let depth = 0; cause !== undefined && depth < 5; depth++) {
    s += `\ncaused by: ${cause instanceof Error ? (cause.stack ?? cause.message) : String(cause)}`;
    cause = cause instanceof Error ? cause.cause : undefined;
  }
  return s;
}

/**
 * The library names its options as fields (`options.loraRank`, `options.mu = 1`); the
 * command line says the flags the user typed (`--lora-rank`, `--mu 1`).
 */
export function cliWording(message: string): string {
  return message.replace(/\boptions\.([a-z][A-Za-z]*)( = )?/g, (_m, field: string, eq: string | undefined) => `--${field.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}${eq ? ' ' : ''}`);
}

/** One message on stderr: a single line when piped (scripts grep it), wrapped on a terminal. */
function writeMessage(ctx: CliContext, message: string): void {
  ctx.stderr.write(`${wrapForTerminal([cliWording(message)], ctx.stderr, 2).join('\n')}\n`);
}

/** Writes the report for `e` to ctx.stderr and returns the exit status. */
export function reportError(e: unknown, ctx: CliContext): number {
  if (e instanceof CommanderError) {
    if (COMMANDER_SUCCESS.has(e.code) || e.exitCode === 0) return EXIT_OK;
    // 'commander.help': no command given; the help text has already gone to stderr.
    if (e.code === 'commander.help' || e.code === 'commander.executeSubCommandAsync') return EXIT_USAGE;
    writeMessage(ctx, `${PROGRAM_NAME}: error: ${oneLine(e.message.replace(/^error:\s*/, ''))}`);
    return EXIT_USAGE;
  }
  if (e instanceof InterruptedError) {
    writeMessage(ctx, `${PROGRAM_NAME}: interrupted: ${oneLine(e.message)}`);
    return EXIT_INTERRUPTED;
  }
  if (e instanceof UserInputError) {
    writeMessage(ctx, `${PROGRAM_NAME}: error: ${oneLine(e.message)}`);
    if (isDebug(ctx)) ctx.stderr.write(`${stackOf(e)}\n`);
    return EXIT_USAGE;
  }
  const message = e instanceof Error ? `${e.name === 'Error' ? '' : `${e.name}: `}${e.message}` : String(e);
  if (isDebug(ctx)) {
    ctx.stderr.write(`${PROGRAM_NAME}: internal error: ${message}\n${stackOf(e)}\n`);
  } else {
    ctx.stderr.write(
      `${PROGRAM_NAME}: internal error: ${oneLine(message)} (this is a bug in titanize; set TITANIZE_DEBUG=1 to see the stack trace)\n`,
    );
  }
  return EXIT_INTERNAL;
}

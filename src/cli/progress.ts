/**
 * Progress for long work: a cli-progress bar on a terminal, nothing otherwise.
 *
 *   const p = progress(ctx.stderr, tensors.length, 'writing weights', { json: opts.json });
 *   for (...) { ...; p.tick(); }
 *   p.done();
 *
 * The bar is drawn only when `stream.isTTY` is true and `--json` is not set, so piped or
 * machine-readable output stays clean. Draw on stderr so that stdout can be piped.
 */
import cliProgress from 'cli-progress';
import type { OutStream } from './context.js';

export interface Progress {
  /** Advances by `n` (default 1). */
  tick(n?: number): void;
  /** Sets the absolute position (and the values of the format's extra {fields}). */
  update(value: number, fields?: Record<string, string | number>): void;
  /** Stops and erases the bar; safe to call more than once (also after an error). */
  done(): void;
  /** Whether a bar is being drawn. */
  readonly active: boolean;
}

export interface ProgressOptions {
  /** `--json` was given: stay silent whatever the stream. */
  json?: boolean;
  /** Force the bar off (true) regardless of the stream. */
  quiet?: boolean;
  /** Text after the bar, with cli-progress tokens ({value}, {total}, {eta_formatted}) and the fields given to update(). */
  suffix?: string;
  /** Initial values of the suffix's own fields. */
  fields?: Record<string, string | number>;
}

const SILENT: Progress = Object.freeze({
  tick() {},
  update() {},
  done() {},
  active: false,
});

export function progress(stream: OutStream, total: number, label: string, options: ProgressOptions = {}): Progress {
  if (options.json || options.quiet || stream.isTTY !== true || !(total > 0)) return SILENT;
  const bar = new cliProgress.SingleBar(
    {
      stream: stream as unknown as NodeJS.WritableStream,
      format: `${label} [{bar}] ${options.suffix ?? '{percentage}% | {value}/{total} | {duration_formatted}'}`,
      clearOnComplete: true,
      hideCursor: true,
      fps: 10,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  let value = 0;
  let stopped = false;
  bar.start(total, 0, options.fields);
  return {
    tick(n = 1) {
      if (stopped) return;
      value += n;
      bar.update(Math.min(value, total));
    },
    update(v: number, fields?: Record<string, string | number>) {
      if (stopped) return;
      value = v;
      bar.update(Math.min(value, total), fields);
    },
    done() {
      if (stopped) return;
      stopped = true;
      bar.stop();
    },
    get active() {
      return !stopped;
    },
  };
}

/**
 * A small benchmark harness: a registry of suites, timing and memory helpers, table
 * printing and a JSON report. See bench/README.md.
 *
 *   suite('my_suite', async (ctx) => {
 *     const ours = time(() => mine(input), { runs: ctx.quick ? 3 : 20 });
 *     const ref = time(() => reference(input), { runs: ctx.quick ? 3 : 20 });
 *     ctx.table('my thing', [{ case: 'x', ours: ms(ours.median), ref: ms(ref.median), 'ours/ref': ratio(ours.median, ref.median) }]);
 *   });
 *
 * Conventions (DESIGN.md §5): a performance claim is a ratio of two measurements taken in
 * the same run. Absolute times may be printed for context, next to the ratio.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

// ---- registry ------------------------------------------------------------------------------

export interface SuiteOptions {
  /**
   * Run the suite in a fresh Node process (same flags) when the runner runs more than
   * this suite, so that its memory measurements do not see what earlier suites left in
   * the heap. Its tables are printed by the child and merged into the JSON report.
   */
  isolate?: boolean;
}

export type SuiteFn = (ctx: SuiteContext) => void | Promise<void>;

interface SuiteEntry {
  name: string;
  fn: SuiteFn;
  options: SuiteOptions;
}

const registry: SuiteEntry[] = [];

/** Registers a suite. Suites run in registration order (the import order in run.ts). */
export function suite(name: string, fn: SuiteFn, options: SuiteOptions = {}): void {
  if (!/^[a-z0-9_.-]+$/i.test(name)) throw new Error(`suite name '${name}': use letters, digits, '_', '.', '-'`);
  if (registry.some((s) => s.name === name)) throw new Error(`suite '${name}' is registered twice`);
  registry.push({ name, fn, options });
}

export function registeredSuites(): readonly string[] {
  return registry.map((s) => s.name);
}

// ---- cells and formatting ------------------------------------------------------------------

/** A number with its printed form; tables print `text`, the JSON report keeps `value`. */
export interface Formatted {
  readonly value: number;
  readonly unit: string;
  readonly text: string;
}

export type Cell = string | number | boolean | null | undefined | Formatted;
export type Row = Record<string, Cell>;

function isFormatted(c: Cell): c is Formatted {
  return typeof c === 'object' && c !== null && 'text' in c && 'value' in c;
}

/** Three significant digits, no exponent for everyday magnitudes. */
export function sig(x: number, digits = 3): string {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 10 ** digits) return Math.round(x).toLocaleString('en-US');
  const decimals = Math.max(0, digits - 1 - Math.floor(Math.log10(a)));
  return x.toFixed(Math.min(decimals, 6));
}

/** `a / b` as a ratio cell ("0.42x"): below 1 means `a` takes less than `b`. */
export function ratio(a: number, b: number): Formatted {
  const value = b === 0 ? Number.POSITIVE_INFINITY : a / b;
  return { value, unit: 'ratio', text: `${sig(value)}x` };
}

/** Milliseconds. */
export function ms(x: number): Formatted {
  return { value: x, unit: 'ms', text: `${sig(x)} ms` };
}

/** A byte count in binary units. */
export function bytes(n: number): Formatted {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return { value: n, unit: 'bytes', text: i === 0 ? `${n} B` : `${sig(v)} ${units[i]}` };
}

/** Bytes per second, from a byte count and a time in ms. */
export function throughput(byteCount: number, millis: number): Formatted {
  const perSec = (byteCount / millis) * 1000;
  const b = bytes(perSec);
  return { value: perSec, unit: 'bytes/s', text: `${b.text}/s` };
}

/** A plain count with thousands separators. */
export function count(n: number): Formatted {
  return { value: n, unit: 'count', text: n.toLocaleString('en-US') };
}

function cellText(c: Cell): string {
  if (c === null || c === undefined) return '-';
  if (isFormatted(c)) return c.text;
  if (typeof c === 'number') return sig(c);
  return String(c);
}

function cellJson(c: Cell): string | number | boolean | null {
  if (c === undefined) return null;
  if (isFormatted(c)) return Number.isFinite(c.value) ? c.value : String(c.value);
  return c;
}

/** Renders rows as an aligned text table (numbers and formatted cells right-aligned). */
export function renderTable(title: string, rows: Row[]): string {
  const cols: string[] = [];
  for (const r of rows) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
  const texts = rows.map((r) => cols.map((c) => cellText(r[c])));
  const right = cols.map((c) => rows.some((r) => typeof r[c] === 'number' || isFormatted(r[c])));
  const widths = cols.map((c, i) => Math.max(c.length, ...texts.map((t) => t[i]!.length)));
  const line = (cells: string[]): string =>
    '  ' + cells.map((t, i) => (right[i] ? t.padStart(widths[i]!) : t.padEnd(widths[i]!))).join('  ').trimEnd();
  const out = [`\n${title}`, line(cols), '  ' + widths.map((w) => '-'.repeat(w)).join('  ')];
  for (const t of texts) out.push(line(t));
  return out.join('\n');
}

// ---- timing --------------------------------------------------------------------------------

export interface TimeOptions {
  /** Measured runs (default 10). */
  runs?: number;
  /** Unmeasured runs first, to let the JIT settle (default 1). */
  warmup?: number;
  /** Collect garbage before each run, outside the measurement (default false). */
  gc?: boolean;
}

export interface Timing {
  /** Median of the measured runs, in ms: the number to compare. */
  median: number;
  min: number;
  max: number;
  runs: number;
  samples: number[];
}

/** Keeps results alive so the work cannot be optimised away. */
let sink: unknown;

export function summarize(samples: number[]): Timing {
  const s = [...samples].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]!, runs: s.length, samples };
}

/** Times a synchronous function: median of `runs` runs after `warmup` runs. */
export function time(fn: () => unknown, options: TimeOptions = {}): Timing {
  const { runs = 10, warmup = 1 } = options;
  for (let i = 0; i < warmup; i++) {
    if (options.gc) gc();
    sink = fn();
  }
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    if (options.gc) gc();
    const t0 = performance.now();
    sink = fn();
    samples.push(performance.now() - t0);
  }
  sink = undefined;
  return summarize(samples);
}

/** Times an async function the same way. */
export async function timeAsync(fn: () => Promise<unknown>, options: TimeOptions = {}): Promise<Timing> {
  const { runs = 10, warmup = 1 } = options;
  for (let i = 0; i < warmup; i++) {
    if (options.gc) gc();
    sink = await fn();
  }
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    if (options.gc) gc();
    const t0 = performance.now();
    sink = await fn();
    samples.push(performance.now() - t0);
  }
  sink = undefined;
  return summarize(samples);
}

/**
 * Times several functions in alternation (a, b, c, a, b, c, ...), so that a change in
 * machine load during the run affects all of them alike: use it for the two sides of a
 * ratio. Returns one Timing per key.
 */
export function timeInterleaved<K extends string>(fns: Record<K, () => unknown>, options: TimeOptions = {}): Record<K, Timing> {
  const { runs = 10, warmup = 1 } = options;
  const keys = Object.keys(fns) as K[];
  for (let i = 0; i < warmup; i++) {
    for (const k of keys) {
      if (options.gc) gc();
      sink = fns[k]();
      sink = undefined;
    }
  }
  const samples = Object.fromEntries(keys.map((k) => [k, [] as number[]])) as Record<K, number[]>;
  for (let i = 0; i < runs; i++) {
    for (const k of keys) {
      if (options.gc) gc();
      const t0 = performance.now();
      sink = fns[k]();
      samples[k].push(performance.now() - t0);
      sink = undefined;
    }
  }
  return Object.fromEntries(keys.map((k) => [k, summarize(samples[k])])) as Record<K, Timing>;
}

/** Runs `fn` once and returns its result with the elapsed ms. */
export function timed<T>(fn: () => T): { result: T; ms: number } {
  const t0 = performance.now();
  const result = fn();
  return { result, ms: performance.now() - t0 };
}

// ---- memory --------------------------------------------------------------------------------

let warnedNoGc = false;

/** Full garbage collection (needs node --expose-gc, as `npm run bench` passes). */
export function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (!g) {
    if (!warnedNoGc) console.warn('bench: global.gc is not exposed (run node with --expose-gc); memory numbers are noisy');
    warnedNoGc = true;
    return;
  }
  g();
  g();
}

export function hasGc(): boolean {
  return typeof (globalThis as { gc?: unknown }).gc === 'function';
}

export interface MemorySnapshot {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

/** process.memoryUsage() after a full GC (unless `collect` is false). */
export function memory(collect = true): MemorySnapshot {
  if (collect) gc();
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers };
}

export interface MemoryMeasurement<T> {
  result: T;
  ms: number;
  /** After GC, before the call. */
  before: MemorySnapshot;
  /** After GC, after the call, with `result` still alive: what the result retains. */
  after: MemorySnapshot;
  /** Highest RSS seen while the call ran, minus `before.rss`. */
  peakRssIncrease: number;
  /** heapUsed + external (array buffers included) retained by the result. */
  retainedIncrease: number;
  samples: number;
}

/**
 * Runs a synchronous `fn` while a worker thread samples the process RSS every
 * `intervalMs` (a timer in this thread would not fire while `fn` blocks it).
 */
export async function measureMemory<T>(fn: () => T, intervalMs = 2): Promise<MemoryMeasurement<T>> {
  const shared = new SharedArrayBuffer(24);
  const ctl = new Int32Array(shared, 0, 2); // [stop, samples]
  const peak = new Float64Array(shared, 8, 2); // [peak rss, last rss]
  const worker = new Worker(
    `const { workerData, parentPort } = require('node:worker_threads');
     const ctl = new Int32Array(workerData, 0, 2);
     const peak = new Float64Array(workerData, 8, 2);
     const interval = ${Math.max(1, Math.floor(intervalMs))};
     parentPort.postMessage('ready');
     while (Atomics.load(ctl, 0) === 0) {
       const r = process.memoryUsage.rss();
       if (r > peak[0]) peak[0] = r;
       peak[1] = r;
       Atomics.add(ctl, 1, 1);
       Atomics.wait(ctl, 0, 0, interval);
     }`,
    { eval: true, workerData: shared },
  );
  try {
    await new Promise<void>((resolve, reject) => {
      worker.once('message', () => resolve());
      worker.once('error', reject);
    });
    const before = memory();
    peak[0] = before.rss;
    const t0 = performance.now();
    const result = fn();
    const elapsed = performance.now() - t0;
    peak[0] = Math.max(peak[0]!, process.memoryUsage.rss());
    const peakRss = peak[0]!;
    const samples = Atomics.load(ctl, 1);
    const after = memory();
    return {
      result,
      ms: elapsed,
      before,
      after,
      peakRssIncrease: Math.max(0, peakRss - before.rss),
      retainedIncrease: after.heapUsed + after.external - (before.heapUsed + before.external),
      samples,
    };
  } finally {
    Atomics.store(ctl, 0, 1);
    Atomics.notify(ctl, 0);
    await worker.terminate();
  }
}

// ---- suite context -------------------------------------------------------------------------

export interface TableResult {
  title: string;
  rows: Record<string, string | number | boolean | null>[];
  /** Unit of each formatted column ('ms', 'ratio', 'bytes', ...). */
  units: Record<string, string>;
}

export interface SuiteResult {
  name: string;
  status: 'ok' | 'failed' | 'skipped';
  /** Wall time of the whole suite, in ms (for the log, not a claim). */
  wallMs: number;
  tables: TableResult[];
  notes: string[];
  skipped: string[];
  data: Record<string, unknown>;
  error?: string;
}

export class SuiteContext {
  readonly name: string;
  /** --quick: fewer repetitions and smaller sizes (a smoke run). */
  readonly quick: boolean;
  readonly result: SuiteResult;
  private readonly cleanups: (() => void)[] = [];

  constructor(name: string, quick: boolean) {
    this.name = name;
    this.quick = quick;
    this.result = { name, status: 'ok', wallMs: 0, tables: [], notes: [], skipped: [], data: {} };
  }

  /** Prints a table and records it in the report. */
  table(title: string, rows: Row[]): void {
    console.log(renderTable(title, rows));
    const units: Record<string, string> = {};
    for (const r of rows) for (const [k, c] of Object.entries(r)) if (isFormatted(c)) units[k] = c.unit;
    this.result.tables.push({
      title,
      units,
      rows: rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, c]) => [k, cellJson(c)]))),
    });
  }

  /** Prints and records a line of context. */
  note(text: string): void {
    console.log(`  ${text}`);
    this.result.notes.push(text);
  }

  /** Records that part of the suite did not run, and why (the whole suite: return after it). */
  skip(reason: string): void {
    console.log(`  SKIPPED: ${reason}`);
    this.result.skipped.push(reason);
  }

  /** Extra machine-readable data for the JSON report. */
  record(key: string, value: unknown): void {
    this.result.data[key] = value;
  }

  /** A fresh folder in `base` (os.tmpdir()), removed when the suite ends (also on failure or Ctrl-C). */
  tmpDir(prefix = 'titanize-bench-', base = os.tmpdir()): string {
    const dir = fs.mkdtempSync(path.join(base, prefix));
    liveTmpDirs.add(dir);
    this.defer(() => {
      fs.rmSync(dir, { recursive: true, force: true });
      liveTmpDirs.delete(dir);
    });
    return dir;
  }

  /** Runs `fn` when the suite ends, last registered first. */
  defer(fn: () => void): void {
    this.cleanups.push(fn);
  }

  /** @internal */
  runCleanups(): void {
    while (this.cleanups.length) {
      const fn = this.cleanups.pop()!;
      try {
        fn();
      } catch (e) {
        console.error(`bench: cleanup failed: ${(e as Error).message}`);
      }
    }
  }
}

const liveTmpDirs = new Set<string>();

function removeLiveTmpDirs(): void {
  for (const d of liveTmpDirs) fs.rmSync(d, { recursive: true, force: true });
  liveTmpDirs.clear();
}

process.on('exit', removeLiveTmpDirs);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    removeLiveTmpDirs();
    process.exit(130);
  });
}

// ---- runner --------------------------------------------------------------------------------

/** The repository root (dist/bench/harness.js lives two levels below it). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

interface RunArgs {
  only: string[];
  quick: boolean;
  list: boolean;
  help: boolean;
  out: string;
  childResult: string | undefined;
}

const USAGE = `usage: npm run bench -- [--only <suite>[,<suite>...]] [--quick] [--list] [--out <file.json>]

  --only <names>   run only these suites (repeatable; 'a' also selects 'a.*')
  --quick          smoke run: fewer repetitions, smaller sizes, long cases skipped
  --list           list the registered suites and exit
  --out <file>     where to write the JSON report (default bench/results/latest.json)`;

function parseArgs(argv: string[]): RunArgs {
  const a: RunArgs = {
    only: [],
    quick: false,
    list: false,
    help: false,
    out: path.join(repoRoot, 'bench', 'results', 'latest.json'),
    childResult: undefined,
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${arg} needs a value\n${USAGE}`);
      return v;
    };
    if (arg === '--only') a.only.push(...value().split(',').filter(Boolean));
    else if (arg.startsWith('--only=')) a.only.push(...arg.slice(7).split(',').filter(Boolean));
    else if (arg === '--quick') a.quick = true;
    else if (arg === '--list') a.list = true;
    else if (arg === '--help' || arg === '-h') a.help = true;
    else if (arg === '--out') a.out = path.resolve(value());
    else if (arg === '--child-result') a.childResult = value();
    else throw new Error(`unknown argument '${arg}'\n${USAGE}`);
  }
  return a;
}

function selected(name: string, only: string[]): boolean {
  return only.length === 0 || only.some((o) => name === o || name.startsWith(`${o}.`));
}

async function runInProcess(entry: SuiteEntry, quick: boolean): Promise<SuiteResult> {
  const ctx = new SuiteContext(entry.name, quick);
  const t0 = performance.now();
  try {
    await entry.fn(ctx);
    if (ctx.result.skipped.length && ctx.result.tables.length === 0) ctx.result.status = 'skipped';
  } catch (e) {
    ctx.result.status = 'failed';
    ctx.result.error = (e as Error).stack ?? String(e);
    console.error(`\n  FAILED: ${(e as Error).stack ?? e}`);
  } finally {
    ctx.runCleanups();
  }
  ctx.result.wallMs = performance.now() - t0;
  return ctx.result;
}

async function runIsolated(entry: SuiteEntry, quick: boolean): Promise<SuiteResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-bench-child-'));
  const resultFile = path.join(dir, 'result.json');
  try {
    const args = [...process.execArgv, process.argv[1]!, '--only', entry.name, '--child-result', resultFile];
    if (quick) args.push('--quick');
    const code = await new Promise<number>((resolve, reject) => {
      const child = spawn(process.execPath, args, { stdio: 'inherit' });
      child.on('error', reject);
      child.on('exit', (c, signal) => resolve(c ?? (signal ? 128 : 1)));
    });
    if (fs.existsSync(resultFile)) {
      const results = JSON.parse(fs.readFileSync(resultFile, 'utf8')) as SuiteResult[];
      const r = results.find((x) => x.name === entry.name);
      if (r) return r;
    }
    return {
      name: entry.name,
      status: 'failed',
      wallMs: 0,
      tables: [],
      notes: [],
      skipped: [],
      data: {},
      error: `isolated child process exited with code ${code} without a result`,
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function writeJsonAtomic(file: string, value: unknown): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n');
  fs.renameSync(tmp, file);
}

/** Entry point used by bench/run.ts. Returns the process exit code. */
export async function main(argv: string[]): Promise<number> {
  let args: RunArgs;
  try {
    args = parseArgs(argv);
  } catch (e) {
    console.error((e as Error).message);
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    console.log(`\nsuites: ${registeredSuites().join(', ')}`);
    return 0;
  }
  if (args.list) {
    for (const s of registry) console.log(s.name + (s.options.isolate ? '  (isolated process)' : ''));
    return 0;
  }
  const unknown = args.only.filter((o) => !registry.some((s) => selected(s.name, [o])));
  if (unknown.length) {
    console.error(`unknown suite(s): ${unknown.join(', ')}; registered: ${registeredSuites().join(', ')}`);
    return 2;
  }
  const inChild = args.childResult !== undefined;
  // a child runs exactly the suite it was started for (not its 'name.*' neighbours)
  const entries = registry.filter((s) => (inChild ? args.only.includes(s.name) : selected(s.name, args.only)));
  if (!inChild) {
    console.log(
      `titanize bench${args.quick ? ' (quick)' : ''}: ${entries.map((e) => e.name).join(', ')}` +
        ` | node ${process.version}, ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, ${sig(os.totalmem() / 2 ** 30)} GiB` +
        (hasGc() ? '' : ' | WARNING: no --expose-gc'),
    );
  }
  const results: SuiteResult[] = [];
  for (const entry of entries) {
    const isolate = entry.options.isolate === true && !inChild && entries.length > 1;
    if (!inChild) console.log(`\n=== ${entry.name}${isolate ? ' (isolated process)' : ''} ===`);
    const r = isolate ? await runIsolated(entry, args.quick) : await runInProcess(entry, args.quick);
    if (!inChild) console.log(`\n  [${entry.name}: ${r.status}, ${sig(r.wallMs / 1000)} s wall]`);
    results.push(r);
  }
  if (inChild) {
    writeJsonAtomic(args.childResult!, results);
  } else {
    writeJsonAtomic(args.out, {
      date: new Date().toISOString(),
      quick: args.quick,
      argv,
      node: process.version,
      platform: `${os.platform()} ${os.release()} ${os.arch()}`,
      cpus: `${os.cpus().length} x ${os.cpus()[0]?.model ?? '?'}`,
      totalMemory: os.totalmem(),
      suites: results,
    });
    console.log(`\nresults written to ${path.relative(process.cwd(), args.out) || args.out}`);
  }
  return results.some((r) => r.status === 'failed') ? 1 : 0;
}

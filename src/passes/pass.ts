/**
 * Pass infrastructure: a pass is a plain object that transforms (or only analyses) a
 * model and says whether it changed it; the PassManager runs passes in order, or
 * repeatedly until none of them changes the model (a fixpoint), can verify the model
 * after each pass, and reports which passes ran before a failure.
 *
 *   const dropIdentity: Pass = {
 *     name: 'drop-identity',
 *     inPlace: true,
 *     run(model) { ...edit model.graph...; return { model, modified: n > 0 }; },
 *   };
 *   const { model: out } = new PassManager([dropIdentity], { verify: true }).run(model);
 *
 * Conventions (DESIGN.md §2, after onnx_ir's pass infra):
 * - `inPlace: true`: the pass edits the model it is given and returns that same object;
 * - `inPlace: false`: the pass leaves its input untouched and returns a new Model
 *   (or the input itself when it changes nothing, with `modified: false`);
 * - `changesInput: false` marks a pure analysis (it must return `modified: false`).
 * The manager checks these claims after each run and fails with a PassError if a pass
 * breaks them.
 */
import { type Model, TitanizeError, VerificationError, verifyModel } from '../ir/index.js';

export interface PassResult {
  model: Model;
  /** True when the pass changed the model (the manager's fixpoint loop stops when no pass does). */
  modified: boolean;
  /** True when the pass found nothing to do for these options (no verification after it). */
  skipped?: boolean;
}

export interface Pass {
  /** A short kebab-case name, used in reports and errors. */
  readonly name: string;
  /** True when the pass edits the model it is given (and returns it); false when it returns a new Model. */
  readonly inPlace: boolean;
  /** False for a pure analysis: the manager then checks that it reports `modified: false`. Default true. */
  readonly changesInput?: boolean;
  /** Optional precondition; throw (with a message saying what is missing) to refuse to run. */
  requires?(model: Model): void;
  /** Does the work. */
  run(model: Model): PassResult;
  /** Optional postcondition checked on the result. */
  ensures?(model: Model): void;
}

/** A pass failed (or broke its contract); names the pass and the passes that ran before it. */
export class PassError extends TitanizeError {
  constructor(
    /** The failing pass. */
    readonly pass: string,
    /** Names of the passes that ran (and finished) before the failure, in order. */
    readonly ranBefore: readonly string[],
    /** What went wrong, without the pass context. */
    readonly detail: string,
    options?: { cause?: unknown },
  ) {
    super(
      `pass '${pass}' failed: ${detail}` +
        (ranBefore.length ? ` (passes that ran before it: ${ranBefore.join(', ')})` : ' (it was the first pass to run)'),
      options,
    );
  }
}

export interface PassManagerOptions {
  /**
   * Run the whole list repeatedly until an iteration changes nothing. `true` uses at most
   * 10 iterations; a number sets the limit. Default false: run the list once.
   */
  fixpoint?: boolean | number;
  /** Verify the model (verifyModel) before the first pass and after each pass. */
  verify?: boolean;
  /** Called after each pass run (for progress display or logging). */
  onPass?(record: PassRunRecord): void;
}

export interface PassRunRecord {
  pass: string;
  /** 0-based iteration of the fixpoint loop. */
  iteration: number;
  modified: boolean;
  ms: number;
}

export interface PassManagerResult extends PassResult {
  /** Every pass run, in order. */
  runs: PassRunRecord[];
  /** Iterations of the pass list that ran. */
  iterations: number;
  /** False when `fixpoint` was asked for and the last iteration still modified the model. */
  converged: boolean;
}

const DEFAULT_FIXPOINT_LIMIT = 10;

export class PassManager {
  readonly passes: Pass[];
  readonly options: PassManagerOptions;

  constructor(passes: Iterable<Pass> = [], options: PassManagerOptions = {}) {
    this.passes = [...passes];
    this.options = options;
    for (const p of this.passes) checkPassShape(p);
  }

  /** Appends a pass (a user-written plain object works). Returns this, for chaining. */
  add(pass: Pass): this {
    checkPassShape(pass);
    this.passes.push(pass);
    return this;
  }

  run(model: Model): PassManagerResult {
    const limit = this.options.fixpoint === true ? DEFAULT_FIXPOINT_LIMIT : this.options.fixpoint ? this.options.fixpoint : 1;
    const runs: PassRunRecord[] = [];
    const ran: string[] = [];
    let current = model;
    let anyModified = false;
    let iterations = 0;
    let lastIterationModified = false;
    if (this.options.verify) {
      try {
        verifyModel(current);
      } catch (e) {
        throw new PassError('<input>', [], `the input model does not verify: ${messageOf(e)}`, { cause: e });
      }
    }
    for (let it = 0; it < limit; it++) {
      iterations++;
      lastIterationModified = false;
      for (const pass of this.passes) {
        const t0 = performance.now();
        const result = this.runOne(pass, current, ran);
        const record: PassRunRecord = { pass: pass.name, iteration: it, modified: result.modified, ms: performance.now() - t0 };
        runs.push(record);
        ran.push(pass.name);
        this.options.onPass?.(record);
        current = result.model;
        if (result.modified) {
          anyModified = true;
          lastIterationModified = true;
        }
      }
      if (!lastIterationModified) break;
    }
    const converged = limit === 1 ? true : !lastIterationModified;
    return { model: current, modified: anyModified, runs, iterations, converged };
  }

  private runOne(pass: Pass, model: Model, ran: readonly string[]): PassResult {
    const fail = (detail: string, cause?: unknown): never => {
      throw new PassError(pass.name, ran, detail, cause === undefined ? undefined : { cause });
    };
    try {
      pass.requires?.(model);
    } catch (e) {
      fail(`precondition failed: ${messageOf(e)}`, e);
    }
    let result: PassResult;
    try {
      result = pass.run(model);
    } catch (e) {
      if (e instanceof PassError) throw e;
      return fail(messageOf(e), e);
    }
    if (!result || typeof result !== 'object' || !result.model || typeof result.modified !== 'boolean') {
      fail('run() must return { model, modified }');
    }
    if (pass.inPlace && result.model !== model) {
      fail('it declares inPlace: true but returned a different Model object; return the model it was given, or declare inPlace: false');
    }
    if (!pass.inPlace && result.modified && result.model === model) {
      fail('it declares inPlace: false but modified the model it was given; return a new Model, or declare inPlace: true');
    }
    if (pass.changesInput === false && result.modified) {
      fail('it declares changesInput: false (an analysis) but reported modified: true');
    }
    try {
      pass.ensures?.(result.model);
    } catch (e) {
      fail(`postcondition failed: ${messageOf(e)}`, e);
    }
    if (this.options.verify && !result.skipped) {
      try {
        verifyModel(result.model);
      } catch (e) {
        const detail = e instanceof VerificationError ? e.message : messageOf(e);
        fail(`the model does not verify after it: ${detail}`, e);
      }
    }
    return result;
  }
}

/** Runs passes once, in order (a shortcut for `new PassManager(passes, options).run(model)`). */
export function runPasses(model: Model, passes: Iterable<Pass>, options: PassManagerOptions = {}): PassManagerResult {
  return new PassManager(passes, options).run(model);
}

function checkPassShape(p: Pass): void {
  if (!p || typeof p !== 'object') throw new TypeError('a pass must be an object with name, inPlace and run(model)');
  if (typeof p.name !== 'string' || !p.name) throw new TypeError('a pass needs a non-empty string name');
  if (typeof p.inPlace !== 'boolean') throw new TypeError(`pass '${p.name}': declare inPlace: true (edits its input) or false (returns a new model)`);
  if (typeof p.run !== 'function') throw new TypeError(`pass '${p.name}': run(model) must be a function`);
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ---- registry ----------------------------------------------------------------------------------

const registry = new Map<string, Pass>();

/**
 * Registers a pass under its name so that tools (and pipelines given by name) can find
 * it: `registerPass(myPass)` from user code, then `getPass('my-pass')`. Refuses a second
 * pass with the same name unless `replace` is set.
 */
export function registerPass(pass: Pass, options: { replace?: boolean } = {}): void {
  checkPassShape(pass);
  if (registry.has(pass.name) && !options.replace) {
    throw new TypeError(`a pass named '${pass.name}' is already registered; pick another name or pass { replace: true }`);
  }
  registry.set(pass.name, pass);
}

/** The registered pass named `name`; throws with the known names when there is none. */
export function getPass(name: string): Pass {
  const p = registry.get(name);
  if (!p) throw new TypeError(`no pass is registered as '${name}' (registered: ${[...registry.keys()].sort().join(', ') || 'none'})`);
  return p;
}

export function registeredPassNames(): string[] {
  return [...registry.keys()].sort();
}

/** Removes a registered pass (mostly for tests). */
export function unregisterPass(name: string): boolean {
  return registry.delete(name);
}

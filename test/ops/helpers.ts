/**
 * Shared helpers of the ai.tptt op tests: a seeded PRNG, random LiZA inputs, tiny models
 * of each form (xq, xk, xv, past_state, past_window, mask as graph inputs with symbolic B
 * and T; y, present_state, present_window as outputs), cached onnxruntime sessions and
 * error measures against the float64 reference.
 */
import * as ort from 'onnxruntime-node';
import { Builder, DataType, Model, Value, encodeModel, tensorType, verifyModel } from '../../src/ir/index.js';
import {
  type LizaGraphInputs,
  type LizaGraphOutputs,
  type LizaOpAttributes,
  addLizaNode,
  emitLizaChunked,
  emitLizaContrib,
  emitLizaOnnx27,
  emitLizaScanOracle,
  resolveLizaAttributes,
} from '../../src/ops/index.js';
import type { LizaInputs, LizaOutputs } from '../../src/ops/reference/liza.js';
import { type NdArray, zeros } from '../../src/ops/reference/tensor.js';

// ---- randomness ------------------------------------------------------------------------

/** The project's seeded generator (mulberry32). */
export { seededRandom as prng } from '../../src/ir/random.js';
export type Rng = () => number;
export const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]!;
export function gauss(rng: Rng): number {
  const u = Math.max(rng(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng());
}
export function randn(rng: Rng, dims: number[], s = 1): NdArray {
  const a = zeros(dims, 'float32');
  for (let i = 0; i < a.data.length; i++) a.data[i] = s * gauss(rng);
  return a;
}

// ---- models ----------------------------------------------------------------------------

export type Form = 'function' | 'inline' | 'scan' | 'contrib' | 'onnx27';
export const FORMS: readonly Form[] = ['function', 'inline', 'scan', 'contrib', 'onnx27'];

export interface Presence {
  pastState: boolean;
  pastWindow: boolean;
  mask: boolean;
}

export interface LizaModel {
  model: Model;
  outputs: { y: string; presentState: string; presentWindow: string };
  presence: Presence;
}

const F = DataType.FLOAT;

/** A model with one LiZA of the given form; B and T are symbolic. */
export function buildLizaModel(form: Form, attrs: LizaOpAttributes, presence: Presence): LizaModel {
  const cfg = resolveLizaAttributes(attrs);
  const { qNumHeads: Hq, kvNumHeads: Hkv, headDim: d, window: w } = cfg;
  const model = new Model({ irVersion: form === 'onnx27' ? 11 : 10, opsetImports: { '': form === 'onnx27' ? 27 : 18 } });
  if (form === 'contrib') model.requireOpset('com.microsoft', 1);
  const g = model.graph;
  const inputs: LizaGraphInputs = {
    xq: g.addInput(new Value('xq', tensorType(F, ['B', 'T', Hq * d]))),
    xk: g.addInput(new Value('xk', tensorType(F, ['B', 'T', Hkv * d]))),
    xv: g.addInput(new Value('xv', tensorType(F, ['B', 'T', Hkv * d]))),
  };
  if (presence.pastState) inputs.pastState = g.addInput(new Value('past_state', tensorType(F, ['B', Hkv, d, d])));
  if (presence.pastWindow) inputs.pastWindow = g.addInput(new Value('past_window', tensorType(F, ['B', Hkv, w, 2 * d])));
  if (presence.mask) inputs.mask = g.addInput(new Value('mask', tensorType(DataType.INT64, ['B', 'T'])));
  let out: LizaGraphOutputs;
  if (form === 'function') {
    const r = addLizaNode(model, g, attrs, inputs);
    out = { y: r.y, presentState: r.presentState, presentWindow: r.presentWindow };
  } else {
    const b = new Builder(g);
    const emit = { inline: emitLizaChunked, scan: emitLizaScanOracle, contrib: emitLizaContrib, onnx27: emitLizaOnnx27 }[form];
    out = emit(b, attrs, inputs);
  }
  out.y.type = tensorType(F, ['B', 'T', Hq * d]);
  out.presentState.type = tensorType(F, ['B', Hkv, d, d]);
  out.presentWindow.type = tensorType(F, ['B', Hkv, w, 2 * d]);
  g.setOutputs([out.y, out.presentState, out.presentWindow]);
  verifyModel(model);
  return {
    model,
    outputs: { y: out.y.name, presentState: out.presentState.name, presentWindow: out.presentWindow.name },
    presence,
  };
}

export interface LizaSession {
  session: ort.InferenceSession;
  built: LizaModel;
}

export async function createSession(built: LizaModel): Promise<LizaSession> {
  const session = await ort.InferenceSession.create(encodeModel(built.model), { graphOptimizationLevel: 'all', logSeverityLevel: 3 });
  return { session, built };
}

export function toOrt(a: NdArray): ort.Tensor {
  return new ort.Tensor('float32', Float32Array.from(a.data), a.dims);
}

/** Runs a LiZA session on reference-style inputs. */
export async function runLiza(s: LizaSession, inputs: LizaInputs): Promise<LizaOutputs> {
  const feeds: Record<string, ort.Tensor> = { xq: toOrt(inputs.xq), xk: toOrt(inputs.xk), xv: toOrt(inputs.xv) };
  const p = s.built.presence;
  if (p.pastState) feeds.past_state = toOrt(inputs.past_state!);
  if (p.pastWindow) feeds.past_window = toOrt(inputs.past_window!);
  if (p.mask) {
    const m = inputs.mask!;
    feeds.mask = new ort.Tensor('int64', BigInt64Array.from(Array.from(m.data, (x) => BigInt(Math.round(x)))), m.dims);
  }
  const r = await s.session.run(feeds);
  const nd = (name: string): NdArray => {
    const t = r[name]!;
    return { data: t.data as Float32Array, dims: [...t.dims] };
  };
  return { y: nd(s.built.outputs.y), present_state: nd(s.built.outputs.presentState), present_window: nd(s.built.outputs.presentWindow) };
}

// ---- inputs ----------------------------------------------------------------------------

export interface InputSpec {
  B: number;
  T: number;
  presence: Presence;
  /** std of xq/xk/xv (default 1) */
  scale?: number;
  /** probability that a token is padding (mask only; default 0.25) */
  padProb?: number;
}

export function randomInputs(rng: Rng, attrs: LizaOpAttributes, spec: InputSpec): LizaInputs {
  const cfg = resolveLizaAttributes(attrs);
  const { qNumHeads: Hq, kvNumHeads: Hkv, headDim: d, window: w } = cfg;
  const { B, T } = spec;
  const s = spec.scale ?? 1;
  const inputs: LizaInputs = {
    xq: randn(rng, [B, T, Hq * d], s),
    xk: randn(rng, [B, T, Hkv * d], s),
    xv: randn(rng, [B, T, Hkv * d], s),
  };
  if (spec.presence.pastState) inputs.past_state = randn(rng, [B, Hkv, d, d], 0.3);
  if (spec.presence.pastWindow) inputs.past_window = randn(rng, [B, Hkv, w, 2 * d], s);
  if (spec.presence.mask) {
    const m = zeros([B, T], 'float32');
    const p = spec.padProb ?? 0.25;
    for (let i = 0; i < m.data.length; i++) m.data[i] = rng() < p ? 0 : 1;
    inputs.mask = m;
  }
  return inputs;
}

// ---- errors ----------------------------------------------------------------------------

export function maxAbs(a: NdArray): number {
  let m = 0;
  for (const x of a.data) m = Math.max(m, Math.abs(x));
  return m;
}

/** max |a - b| / max(1, max |b|): absolute for O(1) tensors, relative for large ones. */
export function scaledError(actual: NdArray, expected: NdArray): number {
  if (actual.dims.join() !== expected.dims.join()) {
    throw new Error(`dims ${JSON.stringify(actual.dims)} vs expected ${JSON.stringify(expected.dims)}`);
  }
  let m = 0;
  for (let i = 0; i < actual.data.length; i++) {
    const d = Math.abs(actual.data[i]! - expected.data[i]!);
    m = Number.isNaN(d) ? Number.POSITIVE_INFINITY : Math.max(m, d);
  }
  return m / Math.max(1, maxAbs(expected));
}

export interface Errors {
  y: number;
  state: number;
  window: number;
}

export function errorsOf(actual: LizaOutputs, expected: LizaOutputs): Errors {
  return {
    y: scaledError(actual.y, expected.y),
    state: scaledError(actual.present_state, expected.present_state),
    window: scaledError(actual.present_window, expected.present_window),
  };
}

/** Keeps the worst error per key (for the summary printed by the property tests). */
export class ErrorTable {
  readonly worst = new Map<string, Errors>();
  add(key: string, e: Errors): void {
    const w = this.worst.get(key) ?? { y: 0, state: 0, window: 0 };
    this.worst.set(key, { y: Math.max(w.y, e.y), state: Math.max(w.state, e.state), window: Math.max(w.window, e.window) });
  }
  print(title: string): void {
    const rows = [...this.worst.entries()].sort(([a], [b]) => a.localeCompare(b));
    const lines = rows.map(([k, e]) => `  ${k.padEnd(34)} y ${e.y.toExponential(2)}  state ${e.state.toExponential(2)}  window ${e.window.toExponential(2)}`);
    console.log(`${title}\n${lines.join('\n')}`);
  }
}

// ---- property tests --------------------------------------------------------------------

export interface PropertyCase {
  attrs: LizaOpAttributes;
  presence: Presence;
  /** (B, T) pairs run on the same session (T is dynamic) */
  runs: { B: number; T: number }[];
}

export const HEADS: readonly [number, number][] = [
  [1, 1],
  [2, 1],
  [4, 2],
];
export const HEAD_DIMS = [4, 8, 16] as const;
export const ORDERS = [1, 2, 3] as const;
export const CHUNKS = [1, 2, 5, 16, 64] as const;
/** 1, primes, around a chunk of 64, a bit beyond */
export const LENGTHS = [1, 2, 3, 7, 13, 31, 64, 67, 97] as const;

/**
 * `count` random configurations of `rule` (heads, d, order, chunk size, optional inputs),
 * each with a few (B, T) runs. The first case always has every optional input and T = 1
 * among its runs; chunk sizes cycle so each appears.
 */
export function sampleCases(rng: Rng, rule: LizaOpAttributes['rule'], count: number, runsPerCase = 2): PropertyCase[] {
  const product = rule === 'delta_product' || rule === 'gated_delta_product';
  const cases: PropertyCase[] = [];
  const offset = Math.floor(rng() * CHUNKS.length);
  for (let k = 0; k < count; k++) {
    const [Hq, Hkv] = pick(rng, HEADS);
    const attrs: LizaOpAttributes = {
      q_num_heads: Hq,
      kv_num_heads: Hkv,
      head_dim: pick(rng, HEAD_DIMS),
      rule,
      order: product ? ORDERS[(k + 1) % ORDERS.length]! : 1,
      chunk_size: CHUNKS[(k + offset) % CHUNKS.length]!,
    };
    const presence: Presence =
      k === 0 ? { pastState: true, pastWindow: true, mask: true } : { pastState: rng() < 0.5, pastWindow: rng() < 0.5, mask: rng() < 0.4 };
    const runs = Array.from({ length: runsPerCase }, (_, i) => ({ B: pick(rng, [1, 2]), T: k === 0 && i === 0 ? 1 : pick(rng, LENGTHS) }));
    cases.push({ attrs, presence, runs });
  }
  return cases;
}

export function caseKey(form: string, c: PropertyCase): string {
  const a = c.attrs;
  const flags = `${c.presence.pastState ? 'S' : '-'}${c.presence.pastWindow ? 'W' : '-'}${c.presence.mask ? 'M' : '-'}`;
  return `${form} ${a.rule} n${a.order ?? 1} q${a.q_num_heads}kv${a.kv_num_heads} d${a.head_dim} C${a.chunk_size} ${flags}`;
}

/**
 * Builds the form's model for each case, runs every (B, T) and compares with the float64
 * reference; returns the worst errors per case key, throws with the key on failure.
 */
export async function checkCases(form: Form, cases: PropertyCase[], rng: Rng, tol: Errors, table: ErrorTable): Promise<void> {
  const { lizaReference } = await import('../../src/ops/reference/liza.js');
  for (const c of cases) {
    const s = await createSession(buildLizaModel(form, c.attrs, c.presence));
    const key = caseKey(form, c);
    for (const { B, T } of c.runs) {
      const inputs = randomInputs(rng, c.attrs, { B, T, presence: c.presence });
      const got = await runLiza(s, inputs);
      const want = lizaReference(inputs, c.attrs, { outputType: 'float64' });
      const e = errorsOf(got, want);
      table.add(`${c.attrs.rule} ${form}`, e);
      if (!(e.y <= tol.y && e.state <= tol.state && e.window <= tol.window)) {
        throw new Error(`${key} B=${B} T=${T}: errors ${JSON.stringify(e)} exceed ${JSON.stringify(tol)}`);
      }
    }
    await s.session.release();
  }
}

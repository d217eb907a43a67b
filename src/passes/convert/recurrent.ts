/**
 * Recurrent decoding: the past/present KV pairs of converted layers become fixed-size
 * recurrent inputs/outputs, paired by name so a generic loop can carry them:
 *
 *   past_key_values.{i}.state   [B, Hkv, d, d]      ↔ present.{i}.state
 *   past_key_values.{i}.window  [B, Hkv, w, 2d]     ↔ present.{i}.window   (w = order + 1)
 *   past_key_values.{i}.key/value                   ↔ present.{i}.key/value, kept only while the
 *                                                     softmax branch is; cut to the last L−1
 *                                                     positions with a sliding window L
 *
 * With μ = 1 the KV pair of the layer disappears; nodes that still read the removed past
 * input's shape (a mask built from the past length, for instance) read an equivalent shape
 * computed from a kept past input, from the padding mask and token ids, or, when the model
 * has neither (Optimum's seq2seq decoder_with_past: positions and the causal mask come from
 * the cache length), from a counter of the tokens seen that is carried like the state:
 *
 *   past_length [B] int64  ↔ present_length = past_length + T   (every row counts the same)
 */
import {
  Builder,
  DataType,
  type Graph,
  IrError,
  type Model,
  UserInputError,
  Value,
  describeNode,
  eliminateDeadCode,
  tensorType,
  type TypeInfo,
} from '../../ir/index.js';
import type { AttentionSite } from '../attention/site.js';
import { applyRules } from '../pattern/driver.js';
import { defineRule, fail, ok } from '../pattern/rule.js';
import type { DecoderIO } from '../analysis/io.js';

export const RECURRENT_RULE = 'recurrent-state';
const INT64_MAX = 9223372036854775807n;

/** The index in the names of the state inputs/outputs: the site's layer (the pairs themselves are recorded in `titanize.io`). */
export function cacheIndex(site: AttentionSite): number {
  return site.layer;
}

/** True when the site's KV cache is a graph input/output pair that can become a recurrent state. */
export function hasKvCache(site: AttentionSite): boolean {
  return !!(site.past && site.present && site.refs.pastKey && site.refs.pastValue);
}

/** The batch dimension as the past key input declares it (a symbolic name, usually). */
function batchDim(site: AttentionSite): number | string | null {
  const t = site.refs.pastKey?.type;
  const d = t?.kind === 'tensor' ? t.shape?.[0] : undefined;
  return d?.param ?? d?.value ?? 'batch_size';
}

/** Creates the state and window graph inputs for a site (LiZA reads them). */
export function addStateInputs(graph: Graph, site: AttentionSite, window: number): { state: Value; window: Value } {
  const i = cacheIndex(site);
  const B = batchDim(site);
  const d = site.headDim;
  const state = graph.addInput(new Value(`past_key_values.${i}.state`, tensorType(DataType.FLOAT, [B, site.numKvHeads, d, d])));
  const win = graph.addInput(new Value(`past_key_values.${i}.window`, tensorType(DataType.FLOAT, [B, site.numKvHeads, window, 2 * d])));
  return { state, window: win };
}

/** Exposes LiZA's present state/window as `present.{i}.state` / `present.{i}.window`. */
export function addStateOutputs(graph: Graph, site: AttentionSite, presentState: Value, presentWindow: Value, window: number): void {
  const i = cacheIndex(site);
  const B = batchDim(site);
  const d = site.headDim;
  for (const [v, kind, type] of [
    [presentState, 'state', tensorType(DataType.FLOAT, [B, site.numKvHeads, d, d])],
    [presentWindow, 'window', tensorType(DataType.FLOAT, [B, site.numKvHeads, window, 2 * d])],
  ] as [Value, string, TypeInfo][]) {
    const name = `present.${i}.${kind}`;
    if (graph.outputs.some((o) => o.name === name)) throw new UserInputError(`the model already has an output '${name}'`);
    graph.registerName(name);
    v.name = name;
    v.type = type;
    graph.addOutput(v);
  }
}

/**
 * The past KV input of `site` whose length the model turns into token positions: the
 * Shape of a past input reaches the index of a Gather into a table (learned position
 * embeddings, a rotary cos / sin cache), a Sin / Cos, or a RotaryEmbedding. Null if none.
 */
export function positionsFromCache(graph: Graph, site: AttentionSite): Value | null {
  for (const past of [site.refs.pastKey, site.refs.pastValue]) {
    if (!past || !graph.inputs.includes(past)) continue;
    const seen = new Set<Value>();
    const todo = past.consumers().filter((n) => n.is('Shape')).flatMap((n) => n.outputs);
    while (todo.length) {
      const v = todo.pop()!;
      if (seen.has(v)) continue;
      seen.add(v);
      for (const u of v.uses()) {
        const n = u.node;
        if (n.is('Sin') || n.is('Cos') || n.opType === 'RotaryEmbedding') return past;
        if (n.is('Gather') && u.index === 1 && n.inputs[0]?.initializer) return past;
        for (const o of n.outputs) if (o) todo.push(o);
      }
    }
  }
  return null;
}

/** Cuts a kept KV pair to its last L−1 positions (the softmax branch's window). */
export function cutKvCache(graph: Graph, site: AttentionSite, window: number): string[] {
  const done: string[] = [];
  for (const v of [site.refs.presentKey, site.refs.presentValue]) {
    if (!v) continue;
    const full = v;
    const name = full.name;
    const b = new Builder(graph, { tag: RECURRENT_RULE, prefix: `tptt/cache.${cacheIndex(site)}/` });
    const start = window > 1 ? BigInt(-(window - 1)) : INT64_MAX;
    const cut = b.op('Slice', [full, b.constant(BigInt64Array.from([start]), [1]), b.constant(BigInt64Array.from([INT64_MAX]), [1]), b.ints([2])]);
    full.name = graph.uniqueName(`${name}_full`);
    cut.name = name;
    cut.type = full.type;
    graph.replaceOutputValue(full, cut);
    done.push(name);
  }
  return done;
}

/** Removes the KV pair of a site (μ = 1: nothing reads it any more once outputs are gone). */
export function dropKvCache(model: Model, site: AttentionSite): string[] {
  const graph = model.graph;
  const removed: string[] = [];
  for (const v of [site.refs.presentKey, site.refs.presentValue]) {
    if (v && graph.outputs.includes(v)) {
      graph.removeOutput(v);
      removed.push(v.name);
    }
  }
  return removed;
}

/** The tokens-seen counter pair (added at most once per model). */
export interface LengthCounter {
  input: Value;
  output: Value;
}

/**
 * past_length [B] int64 → present_length = past_length + T (T: the token ids' length). One
 * value per row, like every carried input, so the generic loop (batch axis first, zeros
 * at the start) carries it; all rows hold the same count.
 */
function addLengthCounter(graph: Graph, ids: Value): LengthCounter {
  const first = graph.first!;
  const b = new Builder(graph, { before: first, tag: RECURRENT_RULE, prefix: 'tptt/length/' });
  const t = ids.type;
  const batch = t?.kind === 'tensor' && t.shape?.[0] ? (t.shape[0].param ?? t.shape[0].value ?? 'batch') : 'batch';
  const type = tensorType(DataType.INT64, [batch]);
  const input = graph.addInput(new Value(graph.uniqueName('past_length'), type));
  const T = sliceOf(b, b.op('Shape', [ids]), 1, 2);
  const output = b.op('Identity', [b.op('Add', [input, T])]);
  output.name = graph.uniqueName('present_length');
  output.type = type;
  graph.addOutput(output);
  return { input, output };
}

/**
 * After outputs were dropped and dead code removed: past KV inputs that are still read
 * only through Shape get an equivalent computed shape, then are removed. `counter` is the
 * tokens-seen pair when one had to be added.
 */
export function removeUnusedPastInputs(model: Model, sites: AttentionSite[], allSites: AttentionSite[], io: DecoderIO): { removed: string[]; counter: LengthCounter | null } {
  const graph = model.graph;
  eliminateDeadCode(graph);
  const removed: string[] = [];
  let counter: LengthCounter | null = null;
  let pastLength: Value | null = null;
  // the counter and its [1] slice are made once, for every past input that needs them
  const length = (): Value => {
    if (pastLength) return pastLength;
    const ids = graph.inputs.find((v) => v.name === io.tokens);
    if (!ids) throw new UserInputError('cannot remove the KV cache: nothing else tells the past length (the model has no token-ids input to count the tokens seen)');
    counter = addLengthCounter(graph, ids);
    return (pastLength = sliceOf(new Builder(graph, { before: graph.first!, tag: RECURRENT_RULE }), counter.input, 0, 1));
  };
  const candidates = sites.flatMap((s) => [s.refs.pastKey, s.refs.pastValue]).filter((v): v is Value => !!v && graph.inputs.includes(v));
  const dropped = new Set(candidates);
  const caches = allSites.flatMap((s) => [s.refs.pastKey, s.refs.pastValue]).filter((v): v is Value => !!v && graph.inputs.includes(v));
  for (const past of candidates) {
    if (past.numUses > 0) replaceShapeReads(graph, past, dropped, caches, io, length);
    if (past.numUses === 0) {
      graph.removeInput(past);
      removed.push(past.name);
    }
  }
  eliminateDeadCode(graph);
  return { removed, counter };
}

function replaceShapeReads(graph: Graph, past: Value, dropped: Set<Value>, caches: Value[], io: DecoderIO, length: () => Value): void {
  const users = past.consumers();
  const bad = users.find((n) => !n.is('Shape'));
  if (bad) {
    throw new UserInputError(
      `cannot remove the KV cache input '${past.name}': ${describeNode(bad)} still reads its values; convert that layer too, or keep μ < 1`,
    );
  }
  const kept = caches.find((v) => !dropped.has(v));
  const first = graph.first;
  if (!first) return;
  const b = new Builder(graph, { before: first, tag: RECURRENT_RULE, prefix: `tptt/${past.name}/` });
  const t = past.type;
  const dims = t?.kind === 'tensor' ? t.shape : undefined;
  if (!dims || dims.length !== 4 || dims[1]?.value === undefined || dims[3]?.value === undefined) {
    throw new UserInputError(`cannot remove '${past.name}': its declared shape is not [B, heads, past, head_dim] with fixed heads and head_dim`);
  }
  let shape: Value;
  if (kept) {
    shape = b.op('Shape', [kept]);
    // the kept input has the same batch and past length; heads and head_dim are this input's
    shape = b.op('Concat', [sliceOf(b, shape, 0, 1), b.ints([dims[1].value!]), sliceOf(b, shape, 2, 3), b.ints([dims[3].value!])], { axis: 0 });
  } else {
    const mask = graph.inputs.find((v) => v.name === io.mask);
    const ids = graph.inputs.find((v) => v.name === io.tokens);
    if (mask && ids) {
      const ms = b.op('Shape', [mask]);
      const is = b.op('Shape', [ids]);
      const P = b.op('Sub', [sliceOf(b, ms, 1, 2), sliceOf(b, is, 1, 2)]);
      shape = b.op('Concat', [sliceOf(b, ms, 0, 1), b.ints([dims[1].value!]), P, b.ints([dims[3].value!])], { axis: 0 });
    } else {
      // no mask to read it from: the batch from the token ids, the past length from the counter
      const P = length();
      const B = ids ? sliceOf(b, b.op('Shape', [ids]), 0, 1) : null;
      if (!B) throw new UserInputError(`cannot remove '${past.name}': nothing else tells the batch size (the model has no token-ids input)`);
      shape = b.op('Concat', [B, b.ints([dims[1].value!]), P, b.ints([dims[3].value!])], { axis: 0 });
    }
  }
  // each Shape of the cache becomes (a slice of) the computed shape: a rule at those nodes
  const r = applyRules(graph, [shapeRule(past, shape)], { roots: users });
  if (r.rewrites !== users.length) throw new IrError(`'${past.name}': ${users.length - r.rewrites} of its Shape reads could not be replaced`);
}

function sliceOf(b: Builder, v: Value, start: number, end: number): Value {
  return b.op('Slice', [v, b.ints([start]), b.ints([end]), b.ints([0])]);
}

/** Shape(past)[start:end] → the same slice of `full`, the shape computed without reading the cache. */
function shapeRule(past: Value, full: Value) {
  return defineRule({
    name: RECURRENT_RULE,
    pattern: (op) => op.Shape(op.var('x')),
    check: (m) => (m.value('x') === past ? ok() : fail(`${describeNode(m.root)} does not read '${past.name}'`)),
    rewrite(m, b) {
      const n = m.root;
      const start = n.attribute('start') ? n.getInt('start') : 0;
      const end = n.attribute('end') ? n.getInt('end') : undefined;
      if (start === 0 && end === undefined) return full;
      return b.op('Slice', [full, b.ints([start]), b.ints([end ?? 4]), b.ints([0])]);
    },
  });
}

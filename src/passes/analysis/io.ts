/**
 * The decoder interface of a model: which graph input holds the token ids, the padding
 * mask, the positions and the token types, which output the logits, and which past
 * inputs pair with which present outputs between calls. Found from the graph's
 * structure, not from names, so exports that do not follow Hugging Face naming run too:
 *
 * - the padding mask is the integer input whose data reaches an attention mask;
 * - positions reach a Sin/Cos (rotary) or index a position table;
 * - token ids index the embedding table with as many rows as the logits have columns
 *   (else the largest table); token types index a small table;
 * - KV-cache pairs are the sites' past inputs and present outputs (their Concat).
 *
 * `convert` writes the mapping of the converted model into its metadata (`titanize.io`),
 * so the runtime reads the same answer (state/window pairs included) without analysis.
 */
import { DataType, type Model, type Value, getMetadata, implicitInputs, setMetadata } from '../../ir/index.js';
import { discoverAttention } from '../attention/discover.js';
import type { AttentionDiscovery } from '../attention/site.js';

export const IO_KEY = 'titanize.io';

/** A past input carried to the next call from a present output. */
export interface CachePair {
  input: string;
  output: string;
  /** The attention layer it belongs to. */
  layer: number;
  /** 'key' / 'value' (a KV cache, grows), 'state' / 'window' (LiZA, fixed size). */
  kind: string;
}

export interface DecoderIO {
  tokens: string | null;
  mask: string | null;
  positions: string | null;
  tokenTypes: string | null;
  logits: string | null;
  /** Rows of the token embedding table when the logits have as many columns (a decoder LM), else null. */
  vocab?: number | null;
  pairs: CachePair[];
}

const INT_TYPES = new Set([DataType.INT64, DataType.INT32]);
const FOLLOW = new Set(['Cast', 'Unsqueeze', 'Squeeze', 'Reshape', 'Flatten', 'Identity', 'Expand']);
const BUDGET = 4000;

function elemType(v: Value): DataType | undefined {
  const t = v.type;
  return t?.kind === 'tensor' ? t.elemType : undefined;
}

/** Does the data of `v` (not only its shape) reach a node satisfying `test`? */
function reaches(v: Value, test: (op: string) => boolean): boolean {
  const seen = new Set<Value>();
  const stack = [v];
  while (stack.length && seen.size < BUDGET) {
    const x = stack.pop()!;
    if (seen.has(x)) continue;
    seen.add(x);
    for (const n of x.consumers()) {
      if (n.opType === 'Shape' || n.opType === 'Size') continue;
      if (test(n.opType)) return true;
      for (const o of n.outputs) stack.push(o);
    }
  }
  return false;
}

/**
 * Graph inputs whose data reaches `values` (walking producers, through the outer values
 * If / Loop bodies read, not through Shape): e.g. the positions behind a rotary cos table
 * that torch's repeat_interleave computes in a Loop.
 */
function inputsBehind(values: Value[]): Set<Value> {
  const found = new Set<Value>();
  const seen = new Set<Value>();
  const stack = [...values];
  while (stack.length && seen.size < BUDGET) {
    const x = stack.pop()!;
    if (seen.has(x)) continue;
    seen.add(x);
    const p = x.producer;
    if (!p) {
      if (x.isGraphInput() && !x.initializer) found.add(x);
      continue;
    }
    if (p.opType === 'Shape' || p.opType === 'Size') continue;
    for (const i of p.inputs) if (i) stack.push(i);
    if (p.subgraphs().length) stack.push(...implicitInputs(p));
  }
  return found;
}

/** Rows of the float tables `v` indexes as Gather indices (through casts and reshapes). */
function tablesIndexed(v: Value): number[] {
  const rows: number[] = [];
  const stack = [v];
  const seen = new Set<Value>();
  while (stack.length && seen.size < 64) {
    const x = stack.pop()!;
    if (seen.has(x)) continue;
    seen.add(x);
    for (const n of x.consumers()) {
      if (n.opType === 'Gather' && n.inputs[1] === x) {
        const table = n.inputs[0]?.initializer;
        if (table && table.dims.length === 2 && table.dataType !== DataType.INT64) rows.push(table.dims[0]!);
      } else if (FOLLOW.has(n.opType)) stack.push(...n.outputs);
    }
  }
  return rows;
}

/** The decoder interface found from the structure (see the module comment). */
export function findDecoderIO(model: Model, discovery: AttentionDiscovery = discoverAttention(model)): DecoderIO {
  const g = model.graph;
  const pairs: CachePair[] = [];
  const presentNames = new Set<string>();
  for (const s of discovery.sites) {
    const add = (input: Value | null, output: Value | null, kind: string): void => {
      if (!input || !output || !g.inputs.includes(input) || !g.outputs.includes(output)) return;
      pairs.push({ input: input.name, output: output.name, layer: s.layer, kind });
      presentNames.add(output.name);
    };
    add(s.refs.pastKey, s.refs.presentKey, 'key');
    add(s.refs.pastValue, s.refs.presentValue, 'value');
  }
  const outputs = g.outputs.filter((o) => !presentNames.has(o.name));
  const lastDim = (v: Value): number => {
    const t = v.type;
    return t?.kind === 'tensor' ? (t.shape?.[t.shape.length - 1]?.value ?? 0) : 0;
  };
  const logitsValue = outputs.find((o) => o.type?.kind === 'tensor' && o.type.shape?.length === 3) ?? outputs[0] ?? null;
  const vocab = logitsValue ? lastDim(logitsValue) : 0;

  const maskInputs = new Set(discovery.sites.flatMap((s) => s.mask.inputs));
  const ints = g.inputs.filter((v) => !v.initializer && INT_TYPES.has(elemType(v) ?? DataType.UNDEFINED) && !pairs.some((p) => p.input === v.name));
  const mask = ints.find((v) => maskInputs.has(v.name)) ?? null;
  const rest = ints.filter((v) => v !== mask);
  const tables = new Map(rest.map((v) => [v, tablesIndexed(v)]));
  const embedded = rest.filter((v) => tables.get(v)!.length > 0);
  const tokens = embedded.find((v) => tables.get(v)!.includes(vocab)) ?? [...embedded].sort((a, b) => Math.max(...tables.get(b)!) - Math.max(...tables.get(a)!))[0] ?? rest[0] ?? null;
  const others = rest.filter((v) => v !== tokens);
  // positions select the rotary cos / sin (computed, or gathered from a table), or index a position table
  const rotary = new Set(discovery.sites.flatMap((s) => [s.refs.cosSource, s.refs.sinSource]).filter((x): x is Value => !!x));
  const byName = new Map<string, Value>();
  for (const n of g) for (const o of n.outputs) if (o.name) byName.set(o.name, o);
  for (const s of discovery.sites) for (const name of [s.rotary?.cos, s.rotary?.sin]) if (name && byName.has(name)) rotary.add(byName.get(name)!);
  const behindRotary = inputsBehind([...rotary]);
  const positions =
    others.find((v) => behindRotary.has(v)) ??
    others.find((v) => reaches(v, (op) => op === 'Sin' || op === 'Cos')) ??
    // the position_ids input of a RotaryEmbedding op (ONNX 23+, com.microsoft): its only integer input
    others.find((v) => reaches(v, (op) => op === 'RotaryEmbedding')) ??
    others.find((v) => tables.get(v)!.some((r) => r > 16)) ??
    null;
  const tokenTypes = others.find((v) => v !== positions && tables.get(v)!.length > 0) ?? null;
  const lm = tokens && vocab > 0 && tables.get(tokens)!.includes(vocab);
  return {
    vocab: lm ? vocab : null,
    tokens: tokens?.name ?? null,
    mask: mask?.name ?? null,
    positions: positions?.name ?? null,
    tokenTypes: tokenTypes?.name ?? null,
    logits: logitsValue?.name ?? null,
    pairs,
  };
}

/** The interface convert recorded in the model's metadata, else the one found from the structure. */
export function decoderIO(model: Model): DecoderIO {
  const stored = getMetadata(model.metadataProps, IO_KEY);
  if (stored) return JSON.parse(stored) as DecoderIO;
  return findDecoderIO(model);
}

export function writeDecoderIO(model: Model, io: DecoderIO): void {
  setMetadata(model.metadataProps, IO_KEY, JSON.stringify(io));
}

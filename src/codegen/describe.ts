/**
 * What a generated decoder module needs to know about a model: its declared inputs and
 * outputs (names, element types, symbolic dims), the role of each in the decoder
 * interface (`decoderIO`: token ids, mask, positions, token types, logits, carried pairs),
 * and its metadata (producer, the options `convert` and `train` recorded). Refuses, as a
 * UserInputError, a model no decoder class can be written for.
 */
import { DataType, type Model, type Value, UserInputError, elemTypeOf, getMetadata } from '../ir/index.js';
import { type CachePair, type DecoderIO, IO_KEY, decoderIO } from '../passes/analysis/io.js';
import { CONVERTED_KEY } from '../passes/convert/convert.js';
import { tensorKind, typeName } from './dtypes.js';

export const TRAINED_KEY = 'titanize.trained';

/** A dimension as declared: a fixed size, a symbolic name, or unknown (null). */
export type DeclaredDim = number | string | null;

export type Role = 'tokens' | 'mask' | 'positions' | 'tokenTypes' | 'past' | 'given' | 'logits' | 'present' | 'other';

export interface TensorSpec {
  name: string;
  elemType: DataType | undefined;
  /** ort's name of the element type: float32, int64, ... */
  type: string;
  /** undefined: unknown rank. */
  dims: DeclaredDim[] | undefined;
  role: Role;
  /** For a past input or present output: its pair. */
  pair?: CachePair;
}

export interface StatePair {
  pair: CachePair;
  input: TensorSpec;
  output: TensorSpec;
  /** The dims of the zero value before the first call: batch 1, symbolic axes 0, fixed axes as declared. */
  initialDims: number[];
}

export interface ModelDescription {
  /** The model's file name (no folder), as the comments name it. */
  file: string;
  io: DecoderIO;
  /** Whether `io` was read from the metadata (convert wrote it) rather than found from the structure. */
  ioFromMetadata: boolean;
  /** The inputs a call takes (graph inputs without a default), in declared order. */
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  tokens: TensorSpec;
  logits: TensorSpec;
  mask: TensorSpec | undefined;
  positions: TensorSpec | undefined;
  tokenTypes: TensorSpec | undefined;
  vocab: number | undefined;
  pairs: StatePair[];
  /** Inputs that are none of the above: given once by the caller and fed at every call (an encoder output, cross keys and values). */
  given: TensorSpec[];
  source: {
    producerName: string;
    producerVersion: string;
    graphName: string;
    domain: string;
    modelVersion: string;
    irVersion: number;
    opsets: [string, number][];
    docString: string;
  };
  /** Metadata 'titanize.converted' (the convert options), parsed; null for a model titanize did not convert. */
  converted: Record<string, unknown> | null;
  /** Metadata 'titanize.trained', parsed. */
  trained: Record<string, unknown> | null;
  /** The other metadata entries (titanize's interface record excluded). */
  metadata: { key: string; value: string }[];
}

function dimsOf(v: Value): DeclaredDim[] | undefined {
  const t = v.type;
  if (!t || (t.kind !== 'tensor' && t.kind !== 'sparse_tensor') || !t.shape) return undefined;
  return t.shape.map((d) => (d.value !== undefined ? d.value : (d.param ?? null)));
}

function parseJson(model: Model, key: string): Record<string, unknown> | null {
  const raw = getMetadata(model.metadataProps, key);
  if (raw === undefined) return null;
  try {
    const v = JSON.parse(raw) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : { value: v };
  } catch {
    return { value: raw };
  }
}

const ID_TYPES = new Set([DataType.INT64, DataType.INT32]);

/** The description of `model` (loaded from `file`), or a UserInputError saying why no decoder class can be generated for it. */
export function describeModel(model: Model, file: string): ModelDescription {
  const ioFromMetadata = getMetadata(model.metadataProps, IO_KEY) !== undefined;
  const io = decoderIO(model);
  const g = model.graph;
  const cannot = `codegen cannot generate a decoder class for it`;
  if (!io.tokens) throw new UserInputError(`${file} has no token-ids input (an integer input indexing an embedding table): ${cannot}`);
  if (!io.logits || io.vocab === null) {
    throw new UserInputError(`${file} is not a decoder language model: ${io.logits ? `its output '${io.logits}' is not logits over its token vocabulary` : 'it has no logits output'}; ${cannot}`);
  }
  const pastNames = new Map(io.pairs.map((p) => [p.input, p]));
  const presentNames = new Map(io.pairs.map((p) => [p.output, p]));
  const roleOf = (name: string): Role =>
    name === io.tokens ? 'tokens' : name === io.mask ? 'mask' : name === io.positions ? 'positions' : name === io.tokenTypes ? 'tokenTypes' : pastNames.has(name) ? 'past' : 'given';
  const spec = (v: Value, role: Role): TensorSpec => {
    const elemType = elemTypeOf(v.type);
    const pair = role === 'past' ? pastNames.get(v.name) : role === 'present' ? presentNames.get(v.name) : undefined;
    return { name: v.name, elemType, type: typeName(elemType), dims: dimsOf(v), role, ...(pair ? { pair } : {}) };
  };
  const inputs = g.inputs.filter((v) => !v.initializer).map((v) => spec(v, roleOf(v.name)));
  const outputs = g.outputs.map((v) => spec(v, v.name === io.logits ? 'logits' : presentNames.has(v.name) ? 'present' : 'other'));
  const byName = (list: TensorSpec[], name: string | null): TensorSpec | undefined => (name === null ? undefined : list.find((s) => s.name === name));
  const tokens = byName(inputs, io.tokens);
  if (!tokens) throw new UserInputError(`${file}: the token-ids input '${io.tokens}' of its decoder interface is not an input of the graph; ${cannot}`);
  const logits = byName(outputs, io.logits);
  if (!logits) throw new UserInputError(`${file}: the logits output '${io.logits}' of its decoder interface is not an output of the graph; ${cannot}`);
  if (logits.elemType !== DataType.FLOAT && logits.elemType !== DataType.FLOAT16 && logits.elemType !== DataType.DOUBLE) {
    throw new UserInputError(`${file}: its logits '${logits.name}' are ${logits.type}, not floating point; ${cannot}`);
  }
  const roles = { tokens, mask: byName(inputs, io.mask), positions: byName(inputs, io.positions), tokenTypes: byName(inputs, io.tokenTypes) };
  for (const [role, s] of Object.entries(roles)) {
    if (s && !ID_TYPES.has(s.elemType ?? DataType.UNDEFINED)) throw new UserInputError(`${file}: its ${role} input '${s.name}' is ${s.type}, not int64 or int32; ${cannot}`);
  }
  const pairs: StatePair[] = [];
  for (const p of io.pairs) {
    const input = byName(inputs, p.input);
    if (!input) continue; // a pair of another session (the interface covers both graphs of an encoder-decoder)
    const output = byName(outputs, p.output);
    if (!output) throw new UserInputError(`${file}: input '${p.input}' is carried from output '${p.output}', which the graph does not have; ${cannot}`);
    if (!input.dims) throw new UserInputError(`${file}: the carried input '${p.input}' has no declared shape, so its initial (empty) value cannot be built; ${cannot}`);
    if (!tensorKind(input.elemType)) throw new UserInputError(`${file}: the carried input '${p.input}' is ${input.type}, which the generated class cannot build; ${cannot}`);
    pairs.push({ pair: p, input, output, initialDims: input.dims.map((d, i) => (i === 0 ? 1 : typeof d === 'number' ? d : 0)) });
  }
  const given = inputs.filter((s) => s.role === 'given');
  const vocabDim = logits.dims?.[logits.dims.length - 1];
  const vocab = io.vocab ?? (typeof vocabDim === 'number' ? vocabDim : undefined);
  return {
    file,
    io,
    ioFromMetadata,
    inputs,
    outputs,
    ...roles,
    logits,
    vocab,
    pairs,
    given,
    source: {
      producerName: model.producerName,
      producerVersion: model.producerVersion,
      graphName: g.name,
      domain: model.domain,
      modelVersion: String(model.modelVersion),
      irVersion: model.irVersion,
      opsets: [...model.opsetImports.entries()],
      docString: model.docString,
    },
    converted: parseJson(model, CONVERTED_KEY),
    trained: parseJson(model, TRAINED_KEY),
    metadata: model.metadataProps.filter((e) => e.key !== IO_KEY && e.key !== CONVERTED_KEY && e.key !== TRAINED_KEY).map((e) => ({ key: e.key, value: e.value })),
  };
}

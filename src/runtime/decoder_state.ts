/**
 * One decoder session plus everything carried between calls: the past inputs (KV cache,
 * or LiZA state and window), paired with the present outputs by the model's decoder
 * interface (passes/analysis/io.ts), and the attention mask history. Each `run` feeds a chunk of tokens per row and keeps the presents.
 */
import * as ort from 'onnxruntime-node';
import { UserInputError } from '../ir/errors.js';
import { DataType } from '../ir/dtype.js';
import { halfToFloat } from '../passes/util/constants.js';
import { isOutOfMemory } from './execution_provider.js';
import { elemTypeOf, staticShape } from '../ir/types.js';
import type { TypeInfo } from '../ir/types.js';
import type { Model } from '../ir/model.js';
import { type CachePair, type DecoderIO, decoderIO } from '../passes/analysis/io.js';

export type RecurrentPair = CachePair;

/**
 * Declared input types (from the IR), used to build the zero past, and the model's
 * decoder interface (which inputs are tokens, mask, positions; which past inputs pair
 * with which present outputs).
 */
export type DeclaredTypes = Map<string, TypeInfo | undefined> & { io: DecoderIO };

/** The declared types and interface of `model` (the interface from its metadata, else found from its structure). */
export function declaredTypes(model: Model, io: DecoderIO = decoderIO(model)): DeclaredTypes {
  return Object.assign(new Map(model.graph.inputs.map((v) => [v.name, v.type] as const)), { io });
}

/** The outputs a decoding session carries to its next call (to keep on the device: SessionOptions.keepOnDevice). */
export function carriedOutputs(io: DecoderIO): string[] {
  return io.pairs.map((p) => p.output);
}

/** The pairs of `io` that a session with these inputs and outputs carries. */
export function sessionPairs(io: DecoderIO, inputNames: readonly string[], outputNames: readonly string[], options: { requireOutputs?: boolean } = {}): RecurrentPair[] {
  const pairs = io.pairs.filter((p) => inputNames.includes(p.input));
  if (options.requireOutputs !== false) {
    const missing = pairs.find((p) => !outputNames.includes(p.output));
    if (missing) throw new UserInputError(`model input '${missing.input}' is carried from output '${missing.output}', which the session does not have`);
  }
  return pairs;
}

/** `t` as float32 (fp16 models give float16 logits; sampling and scoring read float32). */
export function asFloat32(t: ort.Tensor): ort.Tensor {
  if (t.type !== 'float16') return t;
  return new ort.Tensor('float32', Float32Array.from(t.data as Uint16Array, halfToFloat), t.dims);
}

/** A zero tensor for a past input: batch = B, symbolic (growing) axes = 0, fixed axes as declared. */
export function zeroPast(type: TypeInfo | undefined, B: number, name: string): ort.Tensor {
  const shape = staticShape(type);
  if (!shape) throw new UserInputError(`model input '${name}' has no declared shape; cannot build its initial (empty) value`);
  const dims = shape.map((d, i) => (i === 0 ? B : d === null ? 0 : d));
  const size = dims.reduce((a, b) => a * b, 1);
  // (a tokens-seen counter is int64; caches and states are float, float16 in fp16 exports:
  // float16 zeros are zero bits)
  if (elemTypeOf(type) === DataType.INT64) return new ort.Tensor('int64', new BigInt64Array(size), dims);
  if (elemTypeOf(type) === DataType.FLOAT16) return new ort.Tensor('float16', new Uint16Array(size), dims);
  return new ort.Tensor('float32', new Float32Array(size), dims);
}

export interface StepResult {
  /** [B, t, V] logits of the chunk. */
  logits: ort.Tensor;
  /** Every output of the call (presents included). */
  outputs: ort.InferenceSession.OnnxValueMapType;
  ms: number;
}

export class DecoderState {
  readonly pairs: RecurrentPair[];
  /** Current past inputs, by input name. */
  past: Record<string, ort.Tensor> = {};
  /** Per row: 1 for real tokens, 0 for padding, over the whole history. */
  readonly history: number[][];
  /** Per row: the token ids so far (kept only for models that carry nothing between calls). */
  private readonly tokens: number[][];
  private readonly keyPair: RecurrentPair | undefined;
  readonly io: DecoderIO;

  /** Inputs fed unchanged at every call (see the constructor's `options.inputs`). */
  readonly inputs: Readonly<Record<string, ort.Tensor>>;

  /**
   * `options.inputs`: tensors fed as they are at every call, for inputs that belong to the
   * whole sequence rather than to a call: an encoder-decoder's encoder output, or the
   * cross-attention keys and values computed from it, and the encoder's padding mask.
   */
  constructor(
    readonly session: ort.InferenceSession,
    types: DeclaredTypes,
    readonly batch: number,
    options: { inputs?: Record<string, ort.Tensor> } = {},
  ) {
    this.io = types.io;
    this.inputs = { ...options.inputs };
    this.pairs = sessionPairs(types.io, session.inputNames, session.outputNames);
    for (const p of this.pairs) this.past[p.input] = zeroPast(types.get(p.input), batch, p.input);
    this.history = Array.from({ length: batch }, () => []);
    this.tokens = Array.from({ length: batch }, () => []);
    this.keyPair = this.pairs.find((p) => p.kind === 'key');
  }

  /** Bytes of the carried inputs (what grows with the context for a KV cache, and does not for a state). */
  carriedBytes(): number {
    // from the dims: a tensor kept in device memory has no host data to measure
    return Object.values(this.past).reduce((n, t) => n + t.dims.reduce((a, b) => a * b, 1) * (t.type === 'int64' ? 8 : t.type === 'float16' ? 2 : 4), 0);
  }

  /** Where the carried inputs are now ('cpu', or 'gpu-buffer' when the session keeps them on the device). */
  locations(): Record<string, string> {
    return Object.fromEntries(Object.entries(this.past).map(([k, t]) => [k, t.location]));
  }

  /**
   * Feeds `ids` (B rows of t tokens each) with their `mask` (1 real, 0 padding; default all
   * real), updates the carried inputs, and returns the chunk's logits.
   */
  async run(ids: number[][], mask?: number[][]): Promise<StepResult> {
    const B = this.batch;
    const t = ids[0]?.length ?? 0;
    if (ids.length !== B || ids.some((r) => r.length !== t) || t === 0) throw new UserInputError(`run: expected ${B} rows of the same, non-zero length`);
    // a model that carries nothing between calls (no KV cache, no state) sees the whole
    // sequence every time: it is recomputed, and the logits of the new tokens returned
    if (this.pairs.length === 0 && this.tokens[0]!.length > 0) return this.recompute(ids, mask);
    if (this.pairs.length === 0) {
      ids.forEach((row, b) => {
        for (const x of row) this.tokens[b]!.push(x);
      });
    }
    // a loop, not push(...row): a long prompt would exceed the argument limit
    ids.forEach((row, b) => {
      const h = this.history[b]!;
      for (let j = 0; j < t; j++) h.push(mask?.[b]?.[j] ?? 1);
    });
    const L = this.history[0]!.length;
    // a KV cache cut to a window holds fewer positions than the history: the mask then
    // covers the cached positions and the new tokens only
    const kvLen = this.keyPair ? ((this.past[this.keyPair.input]!.dims as number[])[2] ?? 0) : L - t;
    const M = Math.min(L, kvLen + t);
    const maskData = new BigInt64Array(B * M);
    const posData = new BigInt64Array(B * t);
    const idData = new BigInt64Array(B * t);
    this.history.forEach((row, b) => {
      let seen = 0;
      for (let j = 0; j < L; j++) {
        seen += row[j]!;
        if (j >= L - M) maskData[b * M + j - (L - M)] = BigInt(row[j]!);
        const local = j - (L - t);
        if (local >= 0) {
          posData[b * t + local] = BigInt(Math.max(seen - 1, 0));
          idData[b * t + local] = BigInt(ids[b]![local]!);
        }
      }
    });
    const io = this.io;
    if (!io.tokens) throw new UserInputError('the model has no token-ids input (an integer input that indexes an embedding table)');
    const feeds: Record<string, ort.Tensor> = { ...this.inputs, ...this.past, [io.tokens]: new ort.Tensor('int64', idData, [B, t]) };
    const names = this.session.inputNames;
    if (io.mask && names.includes(io.mask)) feeds[io.mask] = new ort.Tensor('int64', maskData, [B, M]);
    if (io.positions && names.includes(io.positions)) feeds[io.positions] = new ort.Tensor('int64', posData, [B, t]);
    if (io.tokenTypes && names.includes(io.tokenTypes)) feeds[io.tokenTypes] = new ort.Tensor('int64', new BigInt64Array(B * t), [B, t]);
    const unfed = names.filter((n) => !(n in feeds));
    if (unfed.length) {
      throw new UserInputError(
        `model input${unfed.length > 1 ? 's' : ''} ${unfed.map((n) => `'${n}'`).join(', ')} ${unfed.length > 1 ? 'are' : 'is'} none of the token ids, mask, positions, token types or carried state: ` +
          'pass ' + (unfed.length > 1 ? 'them' : 'it') + ' in DecoderState\'s options.inputs (an encoder-decoder\'s encoder output or cross-attention keys and values)',
      );
    }
    const t0 = performance.now();
    let outputs: ort.InferenceSession.OnnxValueMapType;
    try {
      outputs = await this.session.run(feeds);
    } catch (e) {
      // a call too large for the device (or host) is the caller's to resize, not a crash
      if (isOutOfMemory(e)) {
        throw new UserInputError(`a call of ${B} row${B > 1 ? 's' : ''} × ${t} tokens does not fit in memory (${String((e as Error).message).split('\n')[0]}); try a smaller batch or a shorter prompt`);
      }
      throw e;
    }
    const ms = performance.now() - t0;
    for (const p of this.pairs) this.past[p.input] = outputs[p.output] as ort.Tensor;
    const logits = asFloat32((outputs[io.logits ?? ''] ?? outputs[this.session.outputNames[0]!]) as ort.Tensor);
    return { logits, outputs, ms };
  }

  /** Runs the whole history plus `ids` from scratch; returns the logits of the last t positions. */
  private async recompute(ids: number[][], mask?: number[][]): Promise<StepResult> {
    const t = ids[0]!.length;
    const rows = this.tokens.map((h, b) => [...h, ...ids[b]!]);
    const masks = this.history.map((h, b) => [...h, ...ids[b]!.map((_, j) => mask?.[b]?.[j] ?? 1)]);
    // start over: the history is rebuilt by the full run
    for (const h of this.history) h.length = 0;
    for (const h of this.tokens) h.length = 0;
    const r = await this.run(rows, masks);
    const [B, L, V] = r.logits.dims as [number, number, number];
    const all = r.logits.data as Float32Array;
    const last = new Float32Array(B * t * V);
    for (let b = 0; b < B; b++) last.set(all.subarray((b * L + L - t) * V, (b * L + L) * V), b * t * V);
    return { ...r, logits: new ort.Tensor('float32', last, [B, t, V]) };
  }
}

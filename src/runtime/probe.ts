/**
 * What the IR does not record about intermediate values (their rank and element type) is
 * read from one onnxruntime run: the model is copied, the values asked for become extra
 * graph outputs, and the shapes and types of what comes back are recorded. Autodiff rules
 * need ranks only, which do not change with the batch or sequence length, so one probe
 * with a small batch serves every later step.
 */
import * as ort from 'onnxruntime-node';
import { DataType } from '../ir/dtype.js';
import { UserInputError } from '../ir/errors.js';
import type { Model } from '../ir/model.js';
import { decodeModel } from '../ir/serde/decode.js';
import { encodeModel } from '../ir/serde/encode.js';
import { elemTypeOf } from '../ir/types.js';
import type { Value } from '../ir/value.js';
import { constantTensor } from '../passes/util/constants.js';

export interface ValueFacts {
  rank: number;
  dtype: DataType;
  /** Dims seen in each probe run. */
  dims?: number[][];
}

const ORT_TYPES: Record<string, DataType> = {
  float32: DataType.FLOAT,
  float64: DataType.DOUBLE,
  float16: DataType.FLOAT16,
  int64: DataType.INT64,
  int32: DataType.INT32,
  int8: DataType.INT8,
  uint8: DataType.UINT8,
  bool: DataType.BOOL,
};

/** Rank and type known from the IR alone: initializers, constants, declared input/output types. */
export function irFacts(v: Value): ValueFacts | undefined {
  const t = v.initializer ?? constantTensor(v);
  if (t) return { rank: t.dims.length, dtype: t.dataType, dims: [t.dims.slice()] };
  const ty = v.type;
  const et = elemTypeOf(ty);
  if (ty && ty.kind === 'tensor' && ty.shape && et !== undefined) return { rank: ty.shape.length, dtype: et };
  return undefined;
}

/**
 * Runs a copy of `model` with `values` as extra outputs, once per feed set (one session for
 * all runs); returns their facts by name, with the dims of every run in order.
 */
export async function probeValues(
  model: Model,
  feeds: Record<string, ort.Tensor> | readonly Record<string, ort.Tensor>[],
  values: Iterable<Value>,
  sessionOptions: ort.InferenceSession.SessionOptions = {},
): Promise<Map<string, ValueFacts>> {
  const copy = decodeModel(encodeModel(model), { baseDir: model.baseDir, externalData: model.externalData });
  const byName = new Map<string, Value>();
  for (const n of copy.graph) for (const o of n.outputs) if (o.name) byName.set(o.name, o);
  const present = new Set(copy.graph.outputs.map((o) => o.name));
  for (const v of values) {
    const c = byName.get(v.name);
    if (!c || present.has(c.name)) continue;
    copy.graph.addOutput(c);
    present.add(c.name);
  }
  const session = await ort.InferenceSession.create(encodeModel(copy), { logSeverityLevel: 4, graphOptimizationLevel: 'disabled', ...sessionOptions });
  try {
    const runs: Map<string, ValueFacts>[] = [];
    for (const f of Array.isArray(feeds) ? feeds : [feeds]) {
      let out: ort.InferenceSession.OnnxValueMapType;
      try {
        out = await session.run(f);
      } catch (e) {
        throw explainRunFailure(e, f);
      }
      const facts = new Map<string, ValueFacts>();
      for (const [name, t] of Object.entries(out)) {
        const tensor = t as ort.Tensor;
        const dtype = ORT_TYPES[tensor.type];
        if (dtype !== undefined) facts.set(name, { rank: tensor.dims.length, dtype, dims: [tensor.dims.slice()] });
      }
      runs.push(facts);
    }
    return mergeFacts(runs);
  } finally {
    await session.release();
  }
}

/** Facts of several probe runs merged: dims of each run kept in order; a value missing from one run has no dims. */
function mergeFacts(runs: readonly Map<string, ValueFacts>[]): Map<string, ValueFacts> {
  const out = new Map<string, ValueFacts>();
  for (const [name, f] of runs[0] ?? []) {
    const all = runs.map((r) => r.get(name));
    const complete = all.every((x) => x?.dims);
    out.set(name, { rank: f.rank, dtype: f.dtype, ...(complete ? { dims: all.flatMap((x) => x!.dims!) } : {}) });
  }
  return out;
}

/**
 * onnxruntime's failure on the user's model and batch, as a user error: an index outside
 * a table (positions, vocabulary) means the batch asks for more than the model has.
 */
export function explainRunFailure(e: unknown, feeds: Record<string, ort.Tensor>): Error {
  const msg = String((e as Error)?.message ?? e);
  // the token ids: the integer [B, T] feed (the first one)
  const ids = Object.values(feeds).find((t) => t.type === 'int64' && t.dims.length === 2);
  const shape = ids ? ` on a batch of ${ids.dims.join(' × ')} tokens` : '';
  const m = /indices element out of data bounds, idx=(-?\d+) must be within the inclusive range \[-?(\d+),(\d+)\]/.exec(msg);
  if (m) {
    const rows = Number(m[3]) + 1;
    return new UserInputError(`the model failed${shape}: index ${m[1]} is outside a table of ${rows} rows (${msg.split('Name:')[1]?.split(' ')[0]?.replace(/'/g, '') ?? 'a Gather'}); the sequence is probably longer than the model allows (${rows} positions?) or a token id is outside its vocabulary: use a smaller --seq-len`);
  }
  return new UserInputError(`the model failed${shape} in onnxruntime: ${msg.split('\n')[0]!.slice(0, 400)}`);
}

/**
 * Shape inference against onnxruntime: on every fixture, each inferred dim that the
 * graph inputs' symbols determine equals the shape onnxruntime computes for that value
 * on the fixture's saved inputs, and every value's rank is known. Fresh symbols (dims
 * no rule determines) are allowed but counted: coverage must stay high.
 */
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { type Model, type Value } from '../../../src/ir/index.js';
import { loadModel } from '../../../src/node/index.js';
import { SymDim } from '../../../src/passes/analysis/dim.js';
import { inferShapes } from '../../../src/passes/analysis/shapes.js';
import { probeValues } from '../../../src/runtime/probe.js';
import { loadRef } from '../../helpers/compare.js';
import { toOrt } from '../../helpers/fixture_run.js';

const FIX = path.resolve(__dirname, '../../fixtures');
const FIXTURES = ['llama', 'llama_past', 'qwen2', 'qwen2_past', 'gpt2', 'gpt2_past', 'bert', 'attention23', 'gqa_contrib', 'functions'];

/** Symbol → size, from the declared input dims and the fed tensors. */
function assignment(model: Model, feeds: Record<string, ort.Tensor>): Map<string, number> {
  const m = new Map<string, number>();
  for (const v of model.graph.inputs) {
    const t = v.type;
    const f = feeds[v.name];
    if (!f || !t || t.kind !== 'tensor' || !t.shape) continue;
    t.shape.forEach((d, i) => {
      if (d.param) m.set(d.param, f.dims[i]!);
      else if (d.value === undefined) m.set(`${v.name}[${i}]`, f.dims[i]!);
    });
  }
  return m;
}

export async function checkShapes(file: string, refFile: string): Promise<{ values: number; determined: number; mismatches: string[]; undetermined: string[] }> {
  const model = loadModel(file);
  const ref = loadRef(refFile);
  const feeds: Record<string, ort.Tensor> = {};
  for (const t of ref.inputs) feeds[t.name] = toOrt(t);
  const shapes = inferShapes(model);
  const values: Value[] = [];
  for (const n of model.graph) for (const o of n.outputs) if (o.name) values.push(o);
  const facts = await probeValues(model, feeds, values);
  const assign = assignment(model, feeds);
  const mismatches: string[] = [];
  let determined = 0;
  const undetermined: string[] = [];
  let total = 0;
  for (const v of values) {
    const f = facts.get(v.name);
    if (!f?.dims) continue;
    const actual = f.dims[0]!;
    total++;
    const dims = shapes.shape(v);
    if (!dims) {
      mismatches.push(`${v.name}: rank unknown, actual [${actual.join(', ')}]`);
      continue;
    }
    if (dims.length !== actual.length) {
      mismatches.push(`${v.name}: inferred ${shapes.describe(v)}, actual [${actual.join(', ')}]`);
      continue;
    }
    let all = true;
    dims.forEach((d: SymDim, i) => {
      const x = d.evaluate(assign);
      if (x === undefined) all = false;
      else if (x !== actual[i]) mismatches.push(`${v.name}: inferred ${shapes.describe(v)} = ${x} at axis ${i}, actual [${actual.join(', ')}]`);
    });
    if (all) determined++;
    else undetermined.push(v.producer!.opType);
  }
  return { values: total, determined, mismatches, undetermined };
}

describe('shape inference = onnxruntime shapes', () => {
  it.each(FIXTURES)('%s', async (name) => {
    const r = await checkShapes(path.join(FIX, `${name}.onnx`), path.join(FIX, `${name === 'functions' ? 'functions' : name}.ref.json`));
    expect(r.mismatches).toEqual([]);
    // every value of these exports is determined by the input dims, except the KV
    // outputs of GroupQueryAttention (their length is the total_sequence_length input's value)
    expect(r.undetermined.filter((op) => op !== 'GroupQueryAttention'), `${r.determined} of ${r.values} determined`).toEqual([]);
  });
});

describe('SymDim', () => {
  const B = SymDim.sym('B');
  const T = SymDim.sym('T');
  it('products commute and divide exactly', () => {
    expect(B.mul(T).equals(T.mul(B))).toBe(true);
    expect(B.mul(T).mul(32).div(T.mul(4))!.toString()).toBe('8·B');
    expect(B.add(T).mul(B).div(B.add(T))!.equals(B)).toBe(true);
    expect(B.mul(3).div(2)).toBeUndefined();
    expect(B.div(T)).toBeUndefined();
  });
  it('compares with known answers only', () => {
    expect(B.compare(SymDim.of(-1))).toBe(false);
    expect(B.compare(T)).toBeUndefined();
    expect(B.add(1).sub(1).compare(B)).toBe(true);
  });
});

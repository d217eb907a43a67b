import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Builder, DataType, Model, Tensor, Value, encodeModel, tensorType, verifyModel } from '../../../src/ir/index.js';
import { loadModel } from '../../../src/node/index.js';
import { addLora, mergeLora } from '../../../src/passes/convert/lora.js';
import { loadRef, maxAbs, maxAbsDiff } from '../../helpers/compare.js';

const FIX = path.resolve(__dirname, '../../fixtures');

async function logits(model: Model): Promise<Float32Array> {
  const ref = loadRef(path.join(FIX, 'llama.ref.json'));
  const s = await ort.InferenceSession.create(encodeModel(model));
  const feeds: Record<string, ort.Tensor> = {};
  for (const i of ref.inputs) feeds[i.name] = new ort.Tensor(i.dtype as 'int64', i.data as BigInt64Array, i.dims);
  const out = await s.run(feeds);
  return out.logits!.data as Float32Array;
}

function targets(model: Model) {
  return model.graph.nodes().filter((n) => /self_attn\/[qkvo]_proj\/MatMul$/.test(n.name)).map((n) => ({ node: n, name: n.name.replace(/^\/model\//, '').replace(/\/MatMul$/, '').replace(/\//g, '.') }));
}

describe('LoRA adapters', () => {
  it('a fresh adapter (B = 0) changes nothing; merge folds a trained one into W', async () => {
    const model = loadModel(path.join(FIX, 'llama.onnx'));
    const base = await logits(model);
    const ts = targets(model);
    expect(ts).toHaveLength(8);
    const adapters = addLora(model, ts, { rank: 4, alpha: 8, seed: 1 });
    verifyModel(model);
    expect(adapters.map((a) => a.a.name)).toContain('lora.layers.0.self_attn.q_proj.A');
    expect(adapters[0]!.scale).toBe(2);
    // x + 0 is exact: a fresh adapter reproduces the original bit for bit
    expect(maxAbsDiff(await logits(model), base)).toBe(0);
    // "train": give every B random values
    let seed = 3;
    for (const ad of adapters) {
      const data = new Float32Array(ad.rank * ad.out).map(() => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31 - 0.5) * 0.2);
      ad.b.initializer = Tensor.fromArray(data, [ad.rank, ad.out], undefined, ad.b.name);
    }
    const tuned = await logits(model);
    expect(maxAbsDiff(tuned, base)).toBeGreaterThan(1e-2);
    expect(mergeLora(model)).toBe(8);
    verifyModel(model);
    expect([...model.graph.initializers.keys()].some((k) => k.startsWith('lora.'))).toBe(false);
    expect(model.graph.nodes().some((n) => n.metadataProps.some((m) => m.key.startsWith('titanize.lora')))).toBe(false);
    // merged weights compute the same function; fp32 reassociation of W·x + s·B(A·x) vs (W + s·AB)·x
    expect(maxAbsDiff(await logits(model), tuned)).toBeLessThan(1e-4 * Math.max(1, maxAbs(tuned)));
  });

  it('refuses a second adapter on the same projection and a non-projection node', () => {
    const model = loadModel(path.join(FIX, 'llama.onnx'));
    const [t] = targets(model);
    addLora(model, [t!], { rank: 2 });
    expect(() => addLora(model, [t!], { rank: 2 })).toThrow(/already has a LoRA adapter/);
    const softmax = model.graph.nodes().find((n) => n.opType === 'Softmax')!;
    expect(() => addLora(model, [{ node: softmax, name: 'x' }], { rank: 2 })).toThrow(/no 2-D weight initializer|not a MatMul/);
    expect(() => addLora(model, [t!], { rank: 0 })).toThrow(/positive integer/);
  });

  it('on chained projections, the second adapter reads what the second projection reads (the first one\'s sum); duplicate names are refused first', () => {
    const model = new Model({ opsetImports: { '': 17 } });
    const g = model.graph;
    const b = new Builder(g);
    const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, [2, 4])));
    const w = (name: string) => g.addInitializer(Tensor.fromArray(new Float32Array(16).fill(0.1), [4, 4]), name);
    const h = b.op('MatMul', [x, w('w1')]);
    const y = b.op('MatMul', [h, w('w2')]);
    g.setOutputs([b.op('Relu', [y])]);
    const [mm1, mm2] = [h.producer!, y.producer!];
    expect(() => addLora(model, [{ node: mm1, name: 'same' }, { node: mm2, name: 'same' }], { rank: 1 })).toThrow(/two LoRA targets are named 'same'/);
    expect(g.size).toBe(3);
    addLora(model, [{ node: mm1, name: 'a' }, { node: mm2, name: 'b' }], { rank: 1 });
    verifyModel(model);
    const sumA = g.nodes().find((n) => n.name.startsWith('lora/a/Add'))!.output;
    expect(mm2.input(0)).toBe(sumA);
    const downB = g.nodes().find((n) => n.opType === 'MatMul' && n.input(1)?.name === 'lora.b.A')!;
    expect(downB.input(0)).toBe(sumA);
  });
});


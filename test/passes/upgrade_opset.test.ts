import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Builder, DataType, Graph, IRFunction, Model, Value, collectProblems, encodeModel, tensorType } from '../../src/ir/index.js';
import { loadModel } from '../../src/node/index.js';
import { upgradeOpset } from '../../src/passes/upgrade_opset.js';

describe('upgradeOpset', () => {
  it('moves Reduce* axes to an input at opset 18 and raises the import', () => {
    const model = loadModel(path.resolve(__dirname, '../fixtures/llama.onnx'));
    const r = upgradeOpset(model, 27);
    expect(r).toEqual({ from: 17, to: 27, changes: ['ReduceMean axes → input ×5'] });
    expect(model.opsetVersion('')).toBe(27);
    const rm = model.graph.nodes().filter((n) => n.opType === 'ReduceMean');
    expect(rm.every((n) => !n.attribute('axes') && n.inputs.length === 2)).toBe(true);
    // each is rewritten in place by a rule of the pattern engine, which names itself on the node and on its axes
    const rule = (n: { metadataProps: { key: string; value: string }[] } | null | undefined) => n?.metadataProps.find((m) => m.key === 'titanize.rule')?.value;
    expect(new Set(rm.flatMap((n) => [rule(n), rule(n.input(1)!.producer)]))).toEqual(new Set(['opset18-reduce-axes-input']));
    expect(collectProblems(model)).toEqual([]);
    expect(upgradeOpset(model, 27).changes).toEqual([]);
  });

  it('refuses an op whose meaning changed and that it cannot rewrite, changing nothing', () => {
    const model = new Model({ opsetImports: { '': 17 } });
    const x = model.graph.addInput(new Value('x', tensorType(DataType.FLOAT, [1, 8, 2])));
    const b = new Builder(model.graph);
    b.op('ReduceMean', [x], { axes: [1] });
    model.graph.setOutputs([b.op('DFT', [x], { axis: 1 })]);
    expect(() => upgradeOpset(model, 27)).toThrow(/node 'DFT' \(DFT\): DFT takes axis as an input from opset 20/);
    expect(model.opsetVersion('')).toBe(17);
    expect(model.graph.first!.attribute('axes')).toBeDefined();
  });

  it('RoiAlign below 16 keeps its pre-16 coordinates (output_half_pixel), and onnxruntime agrees', async () => {
    const build = (): Model => {
      const m = new Model({ opsetImports: { '': 13 } });
      const g = m.graph;
      const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, [1, 1, 6, 6])));
      const b = new Builder(g);
      const rois = b.constant(Float32Array.from([0.3, 0.7, 4.2, 5.1]), [1, 4]);
      const idx = b.constant(BigInt64Array.from([0n]), [1]);
      const y = b.op('RoiAlign', [x, rois, idx], { output_height: 3, output_width: 3, sampling_ratio: 2 });
      y.name = 'y';
      g.setOutputs([y]);
      return m;
    };
    const before = build();
    const after = build();
    const r = upgradeOpset(after, 17);
    expect(r.changes).toEqual(['RoiAlign coordinate_transformation_mode = output_half_pixel (the pre-16 behaviour) ×1']);
    const ort = await import('onnxruntime-node');
    const x = new ort.Tensor('float32', Float32Array.from({ length: 36 }, (_, i) => Math.sin(i)), [1, 1, 6, 6]);
    const run = async (m: Model): Promise<Float32Array> => {
      const s = await ort.InferenceSession.create(encodeModel(m));
      try {
        return (await s.run({ x })).y!.data as Float32Array;
      } finally {
        await s.release();
      }
    };
    const a = await run(before);
    const c = await run(after);
    for (let i = 0; i < a.length; i++) expect(c[i]).toBeCloseTo(a[i]!, 6);
    // without the attribute, opset 17 would use half_pixel and give different numbers
    after.graph.nodes().find((n) => n.opType === 'RoiAlign')!.attributes.delete('coordinate_transformation_mode');
    const d = await run(after);
    expect(Math.max(...a.map((v, i) => Math.abs(v - d[i]!)))).toBeGreaterThan(1e-3);
  });

  it('refuses BatchNormalization in training mode below 14', () => {
    const m = new Model({ opsetImports: { '': 13 } });
    const x = m.graph.addInput(new Value('x', tensorType(DataType.FLOAT, [1, 2, 3])));
    const b = new Builder(m.graph);
    const c = (v: number): Value => b.constant(Float32Array.from([v, v]), [2]);
    const outs = b.op('BatchNormalization', [x, c(1), c(0), c(0), c(1)], {}, { outputs: 3 }) as Value[];
    m.graph.setOutputs(outs);
    expect(() => upgradeOpset(m, 17)).toThrow(/BatchNormalization in training mode \(more than one output\) changes its outputs at opset 14/);
    expect(m.opsetVersion('')).toBe(13);
  });

  it('rewrites and raises the bodies of model-local functions at an older opset', () => {
    const m = new Model({ opsetImports: { '': 17, 'pkg.test': 1 } });
    const body = new Graph('f');
    const fx = body.addInput(new Value('fx'));
    const fb = new Builder(body);
    body.setOutputs([fb.op('ReduceMean', [fx], { axes: [-1], keepdims: 1 })]);
    const fn = new IRFunction('pkg.test', 'Mean', body);
    fn.opsetImports.set('', 13);
    m.addFunction(fn);
    const x = m.graph.addInput(new Value('x', tensorType(DataType.FLOAT, [2, 3])));
    m.graph.setOutputs([new Builder(m.graph).op('Mean', [x], {}, { domain: 'pkg.test' })]);
    const r = upgradeOpset(m, 18);
    expect(r.changes).toEqual(['ReduceMean axes → input ×1', 'function opset pkg.test.Mean raised ×1']);
    expect(fn.opsetImports.get('')).toBe(18);
    const rm = body.nodes().find((n) => n.opType === 'ReduceMean')!;
    expect(rm.attribute('axes')).toBeUndefined();
    expect(rm.inputs).toHaveLength(2);
  });
});

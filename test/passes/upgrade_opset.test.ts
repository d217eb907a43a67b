import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Builder, DataType, Model, Value, collectProblems, loadModel, tensorType } from '../../src/ir/index.js';
import { upgradeOpset } from '../../src/passes/upgrade_opset.js';

describe('upgradeOpset', () => {
  it('moves Reduce* axes to an input at opset 18 and raises the import', () => {
    const model = loadModel(path.resolve(__dirname, '../fixtures/llama.onnx'));
    const r = upgradeOpset(model, 27);
    expect(r).toEqual({ from: 17, to: 27, changes: ['ReduceMean axes → input ×5'] });
    expect(model.opsetVersion('')).toBe(27);
    const rm = model.graph.nodes().filter((n) => n.opType === 'ReduceMean');
    expect(rm.every((n) => !n.attribute('axes') && n.inputs.length === 2)).toBe(true);
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
});

import { describe, expect, it } from 'vitest';
import {
  Builder,
  DataType,
  Graph,
  IrError,
  Model,
  Node,
  Tensor,
  Value,
  VerificationError,
  collectProblems,
  eliminateDeadCode,
  tensorType,
  toposort,
  verifyModel,
} from '../../src/ir/index.js';

function chain(): { model: Model; x: Value; a: Node; b: Node; c: Node } {
  const model = new Model({ opsetImports: { '': 17 } });
  const g = model.graph;
  const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, [2, 3])));
  const a = g.node({ opType: 'Relu', name: 'a', inputs: [x], outputs: ['a_out'] });
  const b = g.node({ opType: 'Neg', name: 'b', inputs: [a.output], outputs: ['b_out'] });
  const c = g.node({ opType: 'Add', name: 'c', inputs: [a.output, b.output], outputs: ['c_out'] });
  g.setOutputs([c.output]);
  return { model, x, a, b, c };
}

describe('use-lists', () => {
  it('are kept by node construction and input edits', () => {
    const { a, b, c } = chain();
    expect(a.output.uses().map((u) => [u.node.name, u.index])).toEqual([
      ['b', 0],
      ['c', 0],
    ]);
    c.setInput(0, b.output);
    expect(a.output.uses().map((u) => u.node.name)).toEqual(['b']);
    expect(b.output.uses().map((u) => [u.node.name, u.index])).toEqual([
      ['c', 1],
      ['c', 0],
    ]);
  });

  it('replaceAllUsesWith redirects node inputs and graph outputs', () => {
    const { model, a, b, c } = chain();
    c.output.replaceAllUsesWith(a.output);
    expect(model.graph.outputs[0]).toBe(a.output);
    b.output.replaceAllUsesWith(a.output);
    expect(c.inputs).toEqual([a.output, a.output]);
    expect(b.output.numUses).toBe(0);
  });

  it('uses() is a snapshot: editing while iterating is safe', () => {
    const { a, x } = chain();
    for (const u of a.output.uses()) u.node.setInput(u.index, x);
    expect(a.output.numUses).toBe(0);
    expect(x.numUses).toBe(3);
  });
});

describe('node removal', () => {
  it('refuses to remove a node whose output is still used, and changes nothing', () => {
    const { model, a } = chain();
    const before = model.graph.nodes().map((n) => n.name);
    expect(() => model.graph.remove(a)).toThrow(/still used by node 'b'/);
    expect(model.graph.nodes().map((n) => n.name)).toEqual(before);
    expect(a.output.numUses).toBe(2);
  });

  it('refuses to remove the producer of a graph output', () => {
    const { model, c } = chain();
    expect(() => model.graph.remove(c)).toThrow(IrError);
    expect(() => model.graph.remove(c)).toThrow(/graph output/);
  });

  it('removes a set of nodes together and detaches their uses', () => {
    const { model, x, a, b, c } = chain();
    const n = model.graph.node({ opType: 'Identity', inputs: [x], outputs: ['y'] });
    model.graph.setOutputs([n.output]);
    model.graph.remove([a, b, c]);
    expect(model.graph.nodes()).toEqual([n]);
    expect(x.uses().map((u) => u.node)).toEqual([n]);
  });

  it('iteration survives removing the current and the next node', () => {
    const { model, a, b, c } = chain();
    model.graph.setOutputs([]);
    const seen: string[] = [];
    for (const n of model.graph) {
      seen.push(n.name);
      if (n === a) model.graph.remove([a, b, c], { safe: false });
    }
    expect(seen).toEqual(['a']);
    expect(model.graph.size).toBe(0);
  });

  it('insertBefore/insertAfter/moveBefore keep the order', () => {
    const { model, a, b, c, x } = chain();
    const g = model.graph;
    const d = new Node({ opType: 'Identity', name: 'd', inputs: [x], outputs: ['d_out'] });
    g.insertBefore(b, d);
    const e = new Node({ opType: 'Identity', name: 'e', inputs: [x], outputs: ['e_out'] });
    g.insertAfter(c, e);
    expect(g.nodes().map((n) => n.name)).toEqual(['a', 'd', 'b', 'c', 'e']);
    g.moveBefore(e, a);
    expect(g.nodes().map((n) => n.name)).toEqual(['e', 'a', 'd', 'b', 'c']);
    expect(() => g.append(d)).toThrow(/already in graph/);
  });
});

describe('toposort and dead code', () => {
  it('sorts a shuffled graph and keeps valid order otherwise', () => {
    const { model, a, b, c } = chain();
    const g = model.graph;
    g.reorder([c, b, a]);
    expect(collectProblems(model).some((p) => p.includes('before'))).toBe(true);
    toposort(g);
    expect(g.nodes()).toEqual([a, b, c]);
    verifyModel(model);
  });

  it('reports a cycle naming a node', () => {
    const { model, a, c } = chain();
    a.setInput(0, c.output);
    expect(() => toposort(model.graph)).toThrow(/cycle through node '[abc]'/);
  });

  it('removes unused nodes and initializers, keeps graph outputs', () => {
    const { model, x } = chain();
    const g = model.graph;
    const w = g.addInitializer(Tensor.fromArray(new Float32Array([1, 2]), [2]), 'w');
    const dead = g.node({ opType: 'Mul', name: 'dead', inputs: [x, w], outputs: ['dead_out'] });
    g.node({ opType: 'Neg', name: 'dead2', inputs: [dead.output], outputs: ['dead2_out'] });
    expect(eliminateDeadCode(g)).toBe(2);
    expect(g.initializers.has('w')).toBe(false);
    expect(g.nodes().map((n) => n.name)).toEqual(['a', 'b', 'c']);
  });
});

describe('verification', () => {
  it('reports a value whose producer was removed, with the node and op', () => {
    const { model, a, b } = chain();
    model.graph.remove(a, { safe: false });
    const problems = collectProblems(model);
    expect(problems.join('\n')).toMatch(/node 'b' \(Neg\) reads 'a_out'.*removed/);
    void b;
  });

  it('reports duplicate names', () => {
    const { model, x } = chain();
    model.graph.node({ opType: 'Identity', name: 'dup', inputs: [x], outputs: ['b_out'] });
    expect(() => verifyModel(model)).toThrow(VerificationError);
    expect(collectProblems(model).join('\n')).toMatch(/name 'b_out' is defined twice/);
  });

  it('reports a missing opset import', () => {
    const { model, x } = chain();
    model.graph.node({ opType: 'FusedMatMul', domain: 'com.microsoft', name: 'fm', inputs: [x, x], outputs: ['fm_out'] });
    expect(collectProblems(model).join('\n')).toMatch(/node 'fm' \(com.microsoft::FusedMatMul\) uses domain 'com.microsoft'/);
    model.requireOpset('com.microsoft', 1);
    expect(collectProblems(model)).toEqual([]);
  });

  it('reports a value read from nowhere and an undefined graph output', () => {
    const model = new Model();
    const ghost = new Value('ghost');
    model.graph.node({ opType: 'Relu', name: 'r', inputs: [ghost], outputs: ['r_out'] });
    model.graph.setOutputs([new Value('nothing')]);
    const text = collectProblems(model).join('\n');
    expect(text).toMatch(/node 'r' \(Relu\) reads 'ghost'.*nothing in scope defines/);
    expect(text).toMatch(/graph output 'nothing' is not produced/);
  });

  it('subgraphs see outer values; toposort orders a node after the producers its subgraph reads', () => {
    const model = new Model();
    const g = model.graph;
    const cond = g.addInput(new Value('cond', tensorType(DataType.BOOL, [])));
    const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, [2])));
    const thenG = new Graph('then');
    const elseG = new Graph('else');
    const ifNode = new Node({ opType: 'If', name: 'if', inputs: [cond], outputs: ['if_out'], attributes: { then_branch: thenG, else_branch: elseG } });
    g.append(ifNode);
    const neg = g.node({ opType: 'Neg', name: 'neg', inputs: [x], outputs: ['neg_out'] });
    const t = thenG.node({ opType: 'Identity', name: 't', inputs: [neg.output], outputs: ['t_out'] });
    thenG.setOutputs([t.output]);
    const e = elseG.node({ opType: 'Identity', name: 'e', inputs: [x], outputs: ['e_out'] });
    elseG.setOutputs([e.output]);
    g.setOutputs([ifNode.output]);
    expect(collectProblems(model).join('\n')).toMatch(/reads 'neg_out'/);
    toposort(g);
    expect(g.nodes().map((n) => n.name)).toEqual(['neg', 'if']);
    expect(collectProblems(model)).toEqual([]);
    // the outer value's use-list records the use inside the subgraph
    expect(neg.output.uses().map((u) => u.node.name)).toEqual(['t']);
    expect(() => g.remove(neg)).toThrow(/still used by node 't'/);
  });
});

describe('builder', () => {
  it('creates named nodes with provenance and unique names', () => {
    const model = new Model();
    const g = model.graph;
    const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, [2, 4])));
    const b = new Builder(g, { tag: 'test-rule' });
    const w = b.initializer('w', new Float32Array(8), [4, 2]);
    const y = b.op('MatMul', [x, w]);
    const parts = b.op('Split', [y], { axis: 1, num_outputs: 2 }, { outputs: 2 });
    const z = b.op('Add', parts);
    g.setOutputs([z]);
    expect(parts).toHaveLength(2);
    expect(new Set(g.nodes().flatMap((n) => n.outputs.map((o) => o.name))).size).toBe(4);
    expect(b.created.every((n) => n.metadataProps.some((m) => m.key === 'titanize.rule' && m.value === 'test-rule'))).toBe(true);
    expect(b.created[1]!.getInt('axis')).toBe(1);
    expect(b.created[1]!.getInt('num_outputs')).toBe(2);
    const again = b.op('MatMul', [x, w]);
    expect(again.name).not.toBe(y.name);
    verifyModel(model);
  });
});

describe('names across subgraphs', () => {
  it('names used in a subgraph built on its own are reserved once it is attached', () => {
    const model = new Model();
    const g = model.graph;
    const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, [2])));
    const cond = g.addInput(new Value('cond', tensorType(DataType.BOOL, [])));
    new Builder(g).op('Neg', [x]); // forces the root name set to exist
    const thenG = new Graph('then');
    thenG.setOutputs([new Builder(thenG).op('Sigmoid', [x])]);
    const elseG = new Graph('else');
    elseG.setOutputs([new Builder(elseG).op('Relu', [x])]);
    g.node({ opType: 'If', inputs: [cond], outputs: ['y'], attributes: { then_branch: thenG, else_branch: elseG } });
    const fresh = new Builder(g).op('Sigmoid', [x]);
    expect(fresh.name).not.toBe(thenG.outputs[0]!.name);
    expect(collectProblems(model)).toEqual([]);
  });
});

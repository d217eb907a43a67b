import { describe, expect, it } from 'vitest';
import { Builder, DataType, type Graph, Model, type Node, UserInputError, Value, getMetadata, tensorType, verifyModel } from '../../src/ir/index.js';
import {
  type Rule,
  applyRules,
  defineRule,
  fail,
  formatTrace,
  matchPattern,
  matchRule,
  ok,
  pattern,
  rewritePass,
  runPasses,
  traceRule,
} from '../../src/passes/index.js';
import { shuffleNodes } from './graphs.js';

function newModel(opsets: Record<string, number> = { '': 17 }): { model: Model; g: Graph; b: Builder; x: Value; y: Value } {
  const model = new Model({ opsetImports: opsets });
  const g = model.graph;
  const b = new Builder(g);
  const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, [2, 3])));
  const y = g.addInput(new Value('y', tensorType(DataType.FLOAT, [2, 3])));
  return { model, g, b, x, y };
}

function ops(g: Graph): string[] {
  return [...g].map((n) => n.opType);
}

describe('patterns', () => {
  it('match a chain and bind variables and named nodes', () => {
    const { g, b, x } = newModel();
    const out = b.op('Relu', [b.op('Neg', [x])]);
    g.setOutputs([out]);
    const p = pattern((op) => op.Relu(op.Neg(op.var('a'), { as: 'neg' }), { as: 'relu' }));
    const { match } = matchPattern(p, out.producer!);
    expect(match).not.toBeNull();
    expect(match!.value('a')).toBe(x);
    expect(match!.node('neg').opType).toBe('Neg');
    expect(match!.nodes.map((n) => n.opType)).toEqual(['Relu', 'Neg']);
  });

  it('alternatives are tried in order and the chosen one is reported', () => {
    const { g, b, x, y } = newModel();
    const mul = b.op('Mul', [x, y]);
    const sub = b.op('Sub', [x, y]);
    g.setOutputs([b.op('Relu', [mul]), b.op('Relu', [sub])]);
    const p = pattern((op) => op.Relu(op.orNamed('which', op.Add(op.var('a'), op.var('b')), op.Mul(op.var('a'), op.var('b')), op.Sub(op.var('a'), op.var('b')))));
    const relus = [...g].filter((n) => n.opType === 'Relu');
    expect(matchPattern(p, relus[0]!).match!.choice('which')).toBe(1);
    expect(matchPattern(p, relus[1]!).match!.choice('which')).toBe(2);
  });

  it('optional nodes match with and without the node', () => {
    const { g, b, x } = newModel();
    const withCast = b.op('Softmax', [b.op('Cast', [x], { to: DataType.FLOAT })]);
    const without = b.op('Softmax', [x]);
    g.setOutputs([withCast, without]);
    const p = pattern((op) => op.Softmax(op.optional(op.Cast(op.var('s'), { as: 'cast' }))));
    const m1 = matchPattern(p, withCast.producer!).match!;
    const m2 = matchPattern(p, without.producer!).match!;
    expect(m1.value('s')).toBe(x);
    expect(m1.maybeNode('cast')?.opType).toBe('Cast');
    expect(m2.value('s')).toBe(x);
    expect(m2.maybeNode('cast')).toBeUndefined();
  });

  it('commutative operands are tried in both orders', () => {
    const { g, b, x } = newModel();
    const c = b.scalar(2);
    const a1 = b.op('Add', [x, c]);
    const a2 = b.op('Add', [c, x]);
    g.setOutputs([a1, a2]);
    const plain = pattern((op) => op.Add(op.var('x'), op.const('c', 2)));
    const comm = pattern((op) => op.Add(op.var('x'), op.const('c', 2), { commute: true }));
    expect(matchPattern(plain, a1.producer!).match).not.toBeNull();
    expect(matchPattern(plain, a2.producer!).match).toBeNull();
    const m = matchPattern(comm, a2.producer!).match!;
    expect(m.value('x')).toBe(x);
    expect(m.constant('c')).toEqual([2]);
  });

  it('attribute and domain constraints', () => {
    const { g, b, x } = newModel({ '': 17, 'com.microsoft': 1 });
    const s1 = b.op('Softmax', [x], { axis: -1 });
    const s2 = b.op('Softmax', [x], { axis: 1 });
    const ms = b.op('Gelu', [x], {}, { domain: 'com.microsoft' });
    g.setOutputs([s1, s2, ms]);
    const last = pattern((op) => op.Softmax(op.var('x'), { attrs: { axis: -1 } }));
    expect(matchPattern(last, s1.producer!).match).not.toBeNull();
    const f = matchPattern(last, s2.producer!);
    expect(f.match).toBeNull();
    expect(f.failure!.reason).toMatch(/attribute 'axis' is 1, expected -1/);
    const pred = pattern((op) => op.Softmax(op.var('x'), { attrs: { axis: (a) => a === -1 || `axis ${String(a)} is not the last` } }));
    expect(matchPattern(pred, s2.producer!).failure!.reason).toMatch(/axis 1 is not the last/);
    const gelu = pattern((op) => op.Gelu(op.var('x'), { domain: 'com.microsoft' }));
    const geluStd = pattern((op) => op.Gelu(op.var('x')));
    const anyDomain = pattern((op) => op.Gelu(op.var('x'), { domain: '*' }));
    expect(matchPattern(gelu, ms.producer!).match).not.toBeNull();
    expect(matchPattern(geluStd, ms.producer!).failure!.reason).toMatch(/domain 'com.microsoft', expected 'ai.onnx'/);
    expect(matchPattern(anyDomain, ms.producer!).match).not.toBeNull();
  });

  it('the same variable twice means the same value', () => {
    const { g, b, x, y } = newModel();
    const sq = b.op('Mul', [x, x]);
    const xy = b.op('Mul', [x, y]);
    g.setOutputs([sq, xy]);
    const p = pattern((op) => op.Mul(op.var('a'), op.var('a')));
    expect(matchPattern(p, sq.producer!).match).not.toBeNull();
    expect(matchPattern(p, xy.producer!).failure!.reason).toMatch(/'a' is bound to 'x' but graph input 'y'/);
  });

  it('matching follows edges, not the order of nodes in the file', () => {
    const { model, g, b, x } = newModel();
    let v = x;
    for (let i = 0; i < 20; i++) v = b.op(i % 2 ? 'Relu' : 'Neg', [v]);
    g.setOutputs([v]);
    const p = pattern((op) => op.Neg(op.Relu(op.Neg(op.var('z')))));
    const count = (): number => [...g].filter((n) => matchPattern(p, n).match).length;
    const before = count();
    shuffleNodes(model, 3);
    expect(count()).toBe(before);
    expect(before).toBe(9);
  });

  it('a pattern must end in an op', () => {
    expect(() => pattern((op) => op.var('x'))).toThrowError(/must end in an op/);
  });
});

// ---- rules and the driver --------------------------------------------------------------------

const doubleNeg = defineRule({
  name: 'fold-double-neg',
  pattern: (op) => op.Neg(op.Neg(op.var('x'))),
  rewrite: (m) => m.value('x'),
});

/** Mul(x, 2) → Add(x, x); the check derives the constant and returns it as a binding. */
const mulTwo = defineRule<{ factor: number }>({
  name: 'mul-two-to-add',
  pattern: (op) => op.Mul(op.var('x'), op.const('c'), { commute: true }),
  check(m) {
    const c = m.constant('c');
    if (!c || c.length !== 1) return fail(`constant '${m.value('c').name}' is not a scalar`);
    if (c[0] !== 2) return fail(`factor ${c[0]} is not 2`);
    return ok({ factor: c[0] });
  },
  rewrite(m, b) {
    expect(m.bindings.factor).toBe(2);
    return b.op('Add', [m.value('x'), m.value('x')]);
  },
});

describe('rules and the greedy driver', () => {
  it('rewrites, removes the matched nodes, and stamps the rule name on the new nodes', () => {
    const { model, g, b, x } = newModel();
    const m = b.op('Mul', [b.op('Relu', [x]), b.scalar(2)]);
    g.setOutputs([b.op('Tanh', [m])]);
    const r = applyRules(model, [mulTwo]);
    expect(r.converged).toBe(true);
    expect(r.applied).toEqual({ 'mul-two-to-add': 1 });
    expect(ops(g)).toEqual(['Relu', 'Add', 'Tanh']); // the Mul and its dead Constant are gone
    const add = [...g].find((n) => n.opType === 'Add')!;
    expect(getMetadata(add.metadataProps, 'titanize.rule')).toBe('mul-two-to-add');
    verifyModel(model);
  });

  it('check failures are reported with their reason and leave the graph alone', () => {
    const { model, g, b, x } = newModel();
    g.setOutputs([b.op('Mul', [x, b.scalar(3)])]);
    const before = ops(g);
    const r = applyRules(model, [mulTwo], { debug: 'mul-two-to-add' });
    expect(r.rewrites).toBe(0);
    expect(ops(g)).toEqual(before);
    expect(r.debug!.closest!.reason).toBe('factor 3 is not 2');
    expect(r.debug!.closest!.refused).toBe(true);
  });

  it('checks return bindings instead of storing state on the rule (rules are frozen)', () => {
    expect(Object.isFrozen(mulTwo)).toBe(true);
    const { g, b, x } = newModel();
    const m1 = b.op('Mul', [x, b.scalar(2)]);
    g.setOutputs([m1]);
    const a = matchRule(mulTwo, m1.producer!).match!;
    expect(a.bindings).toEqual({ factor: 2 });
  });

  it('new and modified nodes are revisited until nothing matches (converged)', () => {
    const { model, g, b, x } = newModel();
    let v = x;
    for (let i = 0; i < 6; i++) v = b.op('Neg', [v]);
    g.setOutputs([b.op('Relu', [v])]);
    const r = applyRules(model, [doubleNeg]);
    expect(r.converged).toBe(true);
    expect(r.rewrites).toBe(3);
    expect(ops(g)).toEqual(['Relu']);
    expect(g.first!.inputs[0]).toBe(x);
  });

  it('requeues users of replaced values so chained rules fire in one sweep', () => {
    // Relu(Relu(x)) → Relu(x), then Neg(Neg(.)) exposed
    const reluTwice = defineRule({ name: 'relu-relu', pattern: (op) => op.Relu(op.Relu(op.var('x'), { as: 'inner' })), rewrite: (m) => m.node('inner').output });
    const { model, g, b, x } = newModel();
    const v = b.op('Neg', [b.op('Relu', [b.op('Relu', [b.op('Neg', [x])])])]);
    g.setOutputs([b.op('Tanh', [v])]);
    const r = applyRules(model, [reluTwice, doubleNeg]);
    expect(r.converged).toBe(true);
    expect(r.applied).toEqual({ 'relu-relu': 1 });
    expect(ops(g)).toEqual(['Neg', 'Relu', 'Neg', 'Tanh']);
  });

  it('stops at the iteration / rewrite limits and reports non-convergence', () => {
    // a rule that always applies: Relu(x) → Relu(x) (a new node every time)
    const forever = defineRule({ name: 'forever', pattern: (op) => op.Relu(op.var('x')), rewrite: (m, b) => b.op('Relu', [m.value('x')]) });
    const { model, g, b, x } = newModel();
    g.setOutputs([b.op('Tanh', [b.op('Relu', [x])])]);
    const r = applyRules(model, [forever], { maxRewrites: 25 });
    expect(r.converged).toBe(false);
    expect(r.rewrites).toBe(25);
    expect(r.stopReason).toMatch(/maxRewrites/);
    expect(ops(g)).toEqual(['Relu', 'Tanh']);
    // the iteration limit: a sweep that changed something is confirmed by one more sweep
    const m2 = newModel();
    let v = m2.x;
    for (let i = 0; i < 6; i++) v = m2.b.op('Neg', [v]);
    m2.g.setOutputs([m2.b.op('Relu', [v])]);
    const r2 = applyRules(m2.model, [doubleNeg], { maxIterations: 1 });
    expect(r2.rewrites).toBe(3);
    expect(r2.iterations).toBe(1);
    expect(r2.converged).toBe(false);
    expect(r2.stopReason).toMatch(/maxIterations = 1/);
    const r3 = applyRules(m2.model, [doubleNeg]);
    expect(r3.converged).toBe(true);
    expect(r3.iterations).toBe(1);
  });

  it('never removes a matched node whose output is used outside the match', () => {
    const { model, g, b, x } = newModel();
    const inner = b.op('Neg', [x]);
    const outer = b.op('Neg', [inner]);
    g.setOutputs([b.op('Relu', [outer]), b.op('Tanh', [inner])]); // inner is shared
    const r = applyRules(model, [doubleNeg], { debug: 'fold-double-neg' });
    expect(r.rewrites).toBe(0);
    expect(ops(g)).toEqual(['Neg', 'Neg', 'Relu', 'Tanh']);
    expect(r.debug!.closest!.reason).toMatch(/is also used by node 'Tanh.*' \(Tanh\), outside the match/);
  });

  it('never removes a matched node whose output is a graph output', () => {
    const { model, g, b, x } = newModel();
    const inner = b.op('Neg', [x]);
    g.setOutputs([b.op('Neg', [inner]), inner]);
    const r = applyRules(model, [doubleNeg], { debug: 'fold-double-neg' });
    expect(r.rewrites).toBe(0);
    expect(r.debug!.closest!.reason).toMatch(/is a graph output/);
  });

  it('keeps the name of a replaced graph output', () => {
    const { model, g, b, x } = newModel();
    const y = b.op('Neg', [b.op('Neg', [b.op('Relu', [x])])]);
    y.name = 'logits';
    g.setOutputs([y]);
    applyRules(model, [doubleNeg]);
    expect(g.outputs[0]!.name).toBe('logits');
    expect(ops(g)).toEqual(['Relu', 'Identity']);
    verifyModel(model);
  });

  it.each([
    ['a bug', () => new Error('oops'), /rule 'throws' at node '.*' \(Relu\): rewrite threw: oops/],
    ["a user error (the model's fault), which comes out as itself", () => new UserInputError('this model cannot take it'), /^this model cannot take it$/],
  ])('a rewrite that throws %s leaves no half-built nodes behind', (_what, error, message) => {
    const throws = defineRule({
      name: 'throws',
      pattern: (op) => op.Relu(op.var('x')),
      rewrite: (m, b) => {
        b.op('Neg', [m.value('x')]);
        throw error();
      },
    });
    const { model, g, b, x } = newModel();
    g.setOutputs([b.op('Relu', [x])]);
    expect(() => applyRules(model, [throws])).toThrowError(message);
    if (error() instanceof UserInputError) expect(() => applyRules(model, [throws])).toThrowError(UserInputError);
    expect(ops(g)).toEqual(['Relu']);
  });

  it('a wrapping rewrite keeps its root: the readers, not the new nodes, read the replacement, and the rule stops matching', () => {
    // Relu(x) → Relu(x) + 1 once, marked on the root so the next sweep refuses it
    const wrap = defineRule({
      name: 'add-one',
      pattern: (op) => op.Relu(op.var('x')),
      check: (m) => (getMetadata(m.root.metadataProps, 'wrapped') ? fail('already wrapped') : ok()),
      rewrite: (m, b) => {
        b.setInsertionPointAfter(m.root);
        m.root.metadataProps.push({ key: 'wrapped', value: '1' });
        return b.op('Add', [m.root.output, b.scalar(1)]);
      },
    });
    const { model, g, b, x } = newModel();
    const relu = b.op('Relu', [x]);
    const out = b.op('Neg', [relu]);
    g.setOutputs([out]);
    const r = applyRules(model, [wrap]);
    expect(r).toMatchObject({ converged: true, rewrites: 1 });
    const add = [...g].find((n) => n.opType === 'Add')!;
    expect(add.input(0)).toBe(relu);
    expect(out.producer!.input(0)).toBe(add.output);
    expect(ops(g)).toEqual(['Relu', 'Constant', 'Add', 'Neg']);
    verifyModel(model);
  });

  it('an in-place rewrite returns the root outputs: it counts as a change and stamps the root', () => {
    const setAxis = defineRule({
      name: 'softmax-last-axis',
      pattern: (op) => op.Softmax(op.var('x'), { attrs: { axis: (v) => v !== -1 } }),
      rewrite: (m) => {
        m.root.setAttribute('axis', -1);
        return m.root.outputs;
      },
    });
    const { model, g, b, x } = newModel();
    g.setOutputs([b.op('Softmax', [x], { axis: 1 })]);
    const r = applyRules(model, [setAxis]);
    expect(r).toMatchObject({ converged: true, rewrites: 1, iterations: 2 });
    const node = [...g][0]!;
    expect(node.getInt('axis')).toBe(-1);
    expect(getMetadata(node.metadataProps, 'titanize.rule')).toBe('softmax-last-axis');
  });

  it('a created value returned for two outputs is given once; the second output gets an Identity of it (both names kept)', () => {
    const same = defineRule({ name: 'split-same', keepNames: true, pattern: (op) => op.Split(op.var('x'), { outputs: 2 })[0]!, rewrite: (m, b) => {
      const v = b.op('Relu', [m.value('x')]);
      return [v, v];
    } });
    const { model, g, b, x } = newModel();
    const [s0, s1] = b.op('Split', [x], { axis: 0, num_outputs: 2 }, { outputs: 2 }) as [Value, Value];
    s0.name = 'first';
    s1.name = 'second';
    g.setOutputs([s0, s1]);
    applyRules(model, [same]);
    expect(g.outputs.map((v) => v.name)).toEqual(['first', 'second']);
    expect(g.outputs[1]!.producer!.opType).toBe('Identity');
    expect(g.outputs[1]!.producer!.input(0)).toBe(g.outputs[0]);
    verifyModel(model);
  });

  it('an in-place rewrite of a node nothing reads leaves it (removing dead code is not a rule\'s job)', () => {
    const setAxis = defineRule({ name: 'axis-last', pattern: (op) => op.Softmax(op.var('x'), { attrs: { axis: (v) => v !== -1 } }), rewrite: (m) => (m.root.setAttribute('axis', -1), m.root.outputs) });
    const { model, g, b, x } = newModel();
    b.op('Softmax', [x], { axis: 0 });
    g.setOutputs([b.op('Relu', [x])]);
    expect(applyRules(model, [setAxis]).rewrites).toBe(1);
    expect(ops(g)).toEqual(['Softmax', 'Relu']);
  });

  it('a wrapping rule (wraps: true) leaves the graph output on the value it wraps; node readers move', () => {
    const wrap = defineRule({
      name: 'wrap-relu',
      wraps: true,
      pattern: (op) => op.Relu(op.var('x')),
      check: (m) => (getMetadata(m.root.metadataProps, 'done') ? fail('done') : ok()),
      rewrite: (m, b) => {
        m.root.metadataProps.push({ key: 'done', value: '1' });
        b.setInsertionPointAfter(m.root);
        return b.op('Neg', [m.value('x')]);
      },
    });
    const { model, g, b, x } = newModel();
    const relu = b.op('Relu', [x]);
    relu.name = 'observed';
    const reader = b.op('Sigmoid', [relu]);
    g.setOutputs([relu, reader]);
    applyRules(model, [wrap]);
    expect(g.outputs[0]).toBe(relu);
    expect(relu.name).toBe('observed');
    expect(reader.producer!.input(0)!.producer!.opType).toBe('Neg');
    verifyModel(model);
  });

  it('roots restrict the rules to the given nodes (not the ones rewrites create)', () => {
    const reluToNeg = defineRule({ name: 'relu-to-neg-relu', pattern: (op) => op.Relu(op.var('x')), rewrite: (m, b) => b.op('Relu', [b.op('Neg', [m.value('x')])]) });
    const { model, g, b, x } = newModel();
    const first = b.op('Relu', [x]);
    const second = b.op('Relu', [first]);
    g.setOutputs([second]);
    const r = applyRules(model, [reluToNeg], { roots: [first.producer!] });
    // unscoped, this rule would rewrite its own Relu forever; scoped, once
    expect(r).toMatchObject({ converged: true, rewrites: 1 });
    expect(ops(g)).toEqual(['Neg', 'Relu', 'Relu']);
    expect([...g][2]).toBe(second.producer);
  });

  it('keepNames: the replacements take the names of the values they replace', () => {
    const negToSub = (keepNames: boolean) =>
      defineRule({ name: 'neg-to-sub', keepNames, pattern: (op) => op.Neg(op.var('x')), rewrite: (m, b) => b.op('Sub', [b.scalar(0), m.value('x')]) });
    for (const keep of [true, false]) {
      const { model, g, b, x } = newModel();
      const neg = b.op('Neg', [x]);
      neg.name = 'negated';
      g.setOutputs([b.op('Relu', [neg])]);
      applyRules(model, [negToSub(keep)]);
      const sub = [...g].find((n) => n.opType === 'Sub')!;
      expect(sub.output.name === 'negated').toBe(keep);
      verifyModel(model);
    }
  });

  it('rule sets run as a pass', () => {
    const { model, g, b, x } = newModel();
    g.setOutputs([b.op('Neg', [b.op('Neg', [x])])]);
    const r = runPasses(model, [rewritePass('simplify', [doubleNeg])], { verify: true });
    expect(r.modified).toBe(true);
    expect(ops(g)).toEqual(['Identity']);
  });
});

describe('tracer', () => {
  it('reports the closest partial match and the failure with the node name', () => {
    // GELU-like: Mul(Mul(x, 0.5), Add(Erf(Div(x, 1.414)), 1)); one copy has a wrong constant
    const gelu: Rule = defineRule({
      name: 'gelu',
      pattern: (op) => {
        const x = op.var('x');
        const erf = op.Erf(op.Div(x, op.const('s', Math.SQRT2)));
        return op.Mul(op.Mul(x, op.const('half', 0.5), { commute: true }), op.Add(erf, op.const('one', 1), { commute: true }), { commute: true });
      },
      rewrite: (m, b) => b.op('Gelu', [m.value('x')], {}, { domain: 'com.microsoft' }),
    });
    const { model, g, b, x } = newModel({ '': 17, 'com.microsoft': 1 });
    const div = b.op('Div', [x, b.scalar(2)], {}, { name: 'bad_div' });
    const y = b.op('Mul', [b.op('Mul', [x, b.scalar(0.5)]), b.op('Add', [b.op('Erf', [div]), b.scalar(1)])], {}, { name: 'gelu_out' });
    g.setOutputs([b.op('Relu', [y]), b.op('Mul', [x, x], {}, { name: 'square' })]);
    const report = traceRule(gelu, model);
    expect(report.matched).toEqual([]);
    expect(report.candidates).toBe(3); // three Mul nodes
    expect(report.closest!.root).toBe('gelu_out');
    expect(report.closest!.nodesMatched).toBe(5); // Mul, Mul, Add, Erf, Div
    expect(report.closest!.patternNodes).toBe(5);
    expect(report.closest!.reason).toMatch(/input 1 of node 'bad_div' \(Div\): constant 'scalar_out' .* = 2: expected 1\.414/);
    expect(formatTrace(report)).toMatch(/closest at node 'gelu_out' \(Mul\): matched 5 of 5 pattern nodes/);
    // the same report from the driver's debug mode
    const r = applyRules(model, [gelu], { debug: 'gelu' });
    expect(r.rewrites).toBe(0);
    expect(r.debug!.closest!.root).toBe('gelu_out');
  });

  it('an Or with no alternative that fits names all the expected ops', () => {
    const { g, b, x } = newModel();
    const s = b.op('Softmax', [b.op('Gemm', [x, x])]);
    g.setOutputs([s]);
    const p = pattern((op) => op.Softmax(op.or(op.Add(op.var('a'), op.var('m')), op.Div(op.var('a'), op.var('c')), op.MatMul(op.var('q'), op.var('k')))));
    const f = matchPattern(p, s.producer!).failure!;
    expect(f.nodesMatched).toBe(1);
    expect(f.reason).toMatch(/output of node 'Gemm.*' \(Gemm\)\) is none of the alternatives \(expected the output of Add, Div, MatMul\)/);
  });

  it('traces from the driver only the named rule, and reports matches', () => {
    const { model, g, b, x } = newModel();
    g.setOutputs([b.op('Neg', [b.op('Neg', [x])])]);
    const r = applyRules(model, [doubleNeg, mulTwo], { debug: 'fold-double-neg' });
    expect(r.debug!.matched.length).toBe(1);
    expect(() => applyRules(model, [doubleNeg], { debug: 'nope' })).toThrowError(/no rule is named 'nope'/);
  });
});

export type { Node };

import { describe, expect, it } from 'vitest';
import { DataType, Model, Value, tensorType } from '../../src/ir/index.js';
import { type Pass, PassError, PassManager, runPasses } from '../../src/passes/index.js';

function chainModel(n = 3): Model {
  const model = new Model({ opsetImports: { '': 17 } });
  const g = model.graph;
  let v = g.addInput(new Value('x', tensorType(DataType.FLOAT, [2])));
  for (let i = 0; i < n; i++) v = g.node({ opType: 'Identity', name: `id${i}`, inputs: [v], outputs: [`v${i}`] }).output;
  g.setOutputs([g.node({ opType: 'Relu', name: 'relu', inputs: [v], outputs: ['y'] }).output]);
  return model;
}

/** A user-written pass: removes one Identity per run (so a fixpoint needs several runs). */
const dropOneIdentity: Pass = {
  name: 'drop-one-identity',
  inPlace: true,
  run(model) {
    for (const n of model.graph) {
      if (n.opType !== 'Identity') continue;
      n.output.replaceAllUsesWith(n.inputs[0]!);
      model.graph.remove(n);
      return { model, modified: true };
    }
    return { model, modified: false };
  },
};

function recorder(name: string, log: string[], modified = false): Pass {
  return {
    name,
    inPlace: true,
    run(model) {
      log.push(name);
      return { model, modified };
    },
  };
}

describe('PassManager', () => {
  it('runs passes in order, once by default', () => {
    const log: string[] = [];
    const r = new PassManager([recorder('a', log), recorder('b', log), recorder('c', log)]).run(chainModel());
    expect(log).toEqual(['a', 'b', 'c']);
    expect(r.modified).toBe(false);
    expect(r.iterations).toBe(1);
    expect(r.runs.map((x) => x.pass)).toEqual(['a', 'b', 'c']);
  });

  it('runs to a fixpoint: repeats the list until no pass modifies the model', () => {
    const model = chainModel(3);
    const r = new PassManager([dropOneIdentity], { fixpoint: true }).run(model);
    expect(r.modified).toBe(true);
    expect(r.converged).toBe(true);
    expect(r.iterations).toBe(4); // 3 removals, then one run that changes nothing
    expect([...model.graph].map((n) => n.opType)).toEqual(['Relu']);
  });

  it('reports non-convergence when the fixpoint limit is reached', () => {
    const r = new PassManager([dropOneIdentity], { fixpoint: 2 }).run(chainModel(5));
    expect(r.iterations).toBe(2);
    expect(r.converged).toBe(false);
  });

  it('accepts passes added one by one and plain functional passes that return a new model', () => {
    const copy: Pass = { name: 'fresh-model', inPlace: false, run: () => ({ model: chainModel(1), modified: true }) };
    const pm = new PassManager().add(copy).add(dropOneIdentity);
    const input = chainModel(3);
    const r = pm.run(input);
    expect(r.model).not.toBe(input);
    expect([...r.model.graph].map((n) => n.opType)).toEqual(['Relu']);
    expect(input.graph.size).toBe(4); // the input was left alone
  });

  it('verifies after each pass and names the failing pass and the passes that ran before', () => {
    const breaker: Pass = {
      name: 'breaker',
      inPlace: true,
      run(model) {
        // remove a node without redirecting its users: the graph no longer verifies
        model.graph.remove(model.graph.first!, { safe: false });
        return { model, modified: true };
      },
    };
    const log: string[] = [];
    const pm = new PassManager([recorder('first', log, true), recorder('second', log, true), breaker, recorder('never', log)], { verify: true });
    let err: unknown;
    try {
      pm.run(chainModel());
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PassError);
    const pe = err as PassError;
    expect(pe.pass).toBe('breaker');
    expect(pe.ranBefore).toEqual(['first', 'second']);
    expect(pe.message).toMatch(/pass 'breaker' failed: the model does not verify after it/);
    expect(pe.message).toMatch(/passes that ran before it: first, second/);
    expect(log).toEqual(['first', 'second']);
  });

  it('wraps an exception thrown by a pass with the pass context', () => {
    const boom: Pass = {
      name: 'boom',
      inPlace: true,
      run() {
        throw new Error('no attention here');
      },
    };
    expect(() => runPasses(chainModel(), [recorder('ok', []), boom])).toThrowError(/pass 'boom' failed: no attention here \(passes that ran before it: ok\)/);
    expect(() => runPasses(chainModel(), [boom])).toThrowError(/it was the first pass to run/);
  });

  it('checks what a pass declares', () => {
    const liar: Pass = { name: 'liar', inPlace: true, run: () => ({ model: chainModel(), modified: true }) };
    expect(() => runPasses(chainModel(), [liar])).toThrowError(/declares inPlace: true but returned a different Model/);
    const sneaky: Pass = { name: 'sneaky', inPlace: false, run: (model) => ({ model, modified: true }) };
    expect(() => runPasses(chainModel(), [sneaky])).toThrowError(/declares inPlace: false but modified the model it was given/);
    const analysis: Pass = { name: 'analysis', inPlace: true, changesInput: false, run: (model) => ({ model, modified: true }) };
    expect(() => runPasses(chainModel(), [analysis])).toThrowError(/changesInput: false/);
    const bad = { name: 'bad', run: () => null } as unknown as Pass;
    expect(() => new PassManager([bad])).toThrowError(/declare inPlace/);
  });

  it('runs requires/ensures hooks and reports their failures', () => {
    const needsRelu: Pass = {
      name: 'needs-softmax',
      inPlace: true,
      requires(model) {
        if (![...model.graph].some((n) => n.opType === 'Softmax')) throw new Error('the model has no Softmax');
      },
      run: (model) => ({ model, modified: false }),
    };
    expect(() => runPasses(chainModel(), [needsRelu])).toThrowError(/precondition failed: the model has no Softmax/);
  });

  it('verifies the input model first when asked', () => {
    const model = chainModel();
    model.graph.remove(model.graph.first!, { safe: false });
    expect(() => runPasses(model, [recorder('x', [])], { verify: true })).toThrowError(/the input model does not verify/);
  });
});

describe('pass registry', () => {
  it('registers user passes by name', async () => {
    const { registerPass, getPass, registeredPassNames, unregisterPass } = await import('../../src/passes/index.js');
    const mine: Pass = { name: 'user-noop', inPlace: true, run: (model) => ({ model, modified: false }) };
    registerPass(mine);
    expect(getPass('user-noop')).toBe(mine);
    expect(registeredPassNames()).toContain('user-noop');
    expect(() => registerPass({ ...mine })).toThrowError(/already registered/);
    registerPass({ ...mine }, { replace: true });
    expect(() => getPass('nope')).toThrowError(/no pass is registered as 'nope'/);
    expect(unregisterPass('user-noop')).toBe(true);
  });

  it('discovery runs as an analysis pass', async () => {
    const { discoverAttentionPass } = await import('../../src/passes/index.js');
    let sites = -1;
    const r = runPasses(chainModel(), [discoverAttentionPass((d) => (sites = d.sites.length))], { verify: true });
    expect(r.modified).toBe(false);
    expect(sites).toBe(0);
  });
});

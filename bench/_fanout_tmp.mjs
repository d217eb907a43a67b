import { Builder, Model, Value, DataType, tensorType, decodeModel, encodeModel } from '/work/main/dist/src/ir/index.js';
for (const n of [5000, 10000, 20000, 40000, 80000]) {
  for (const shared of [false, true]) {
    const m = new Model({ opsetImports: { '': 17 } });
    const g = m.graph; const b = new Builder(g);
    let h = g.addInput(new Value('x', tensorType(DataType.FLOAT, [4])));
    const one = b.initializer('one', Float32Array.of(1), []);
    let t0 = performance.now();
    for (let i = 0; i < n; i++) h = b.op('Add', [h, shared ? one : b.initializer('c', Float32Array.of(1), [])]);
    const tb = performance.now() - t0;
    g.setOutputs([h]);
    const bytes = encodeModel(m);
    gc(); t0 = performance.now(); decodeModel(bytes); const td = performance.now() - t0;
    console.log(`n=${n} shared=${shared} build ${tb.toFixed(0)} ms decode ${td.toFixed(0)} ms`);
  }
}

/**
 * Cases a review found: each was silently wrong or broken before, and is now right or
 * refused with the reason.
 */
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Builder, DataType, Graph, IRFunction, Model, Value, tensorType, verifyModel } from '../../src/ir/index.js';
import { convert } from '../../src/passes/convert/convert.js';
import { inlineFunctions } from '../../src/passes/inline_functions.js';
import { discoverAttention } from '../../src/passes/index.js';
import { toFloat16 } from '../helpers/float16.js';
import { checkConvertedLayers, runModel } from '../helpers/layer_check.js';
import { decomposedModel, packedEncoderModel, weight } from './graphs.js';
import { seededRandom } from '../../src/ir/random.js';

describe('review regressions', () => {
  it('an fp16 model with 4-bit projections converts to a model that runs (precision from the scales)', async () => {
    const make = () => toFloat16(packedEncoderModel({ cut: 'gather', quant: 'nbits' }));
    const x = new ort.Tensor('float16', Uint16Array.from({ length: 2 * 6 * 64 }, (_, i) => 0x3c00 - (i % 5) * 0x200), [2, 6, 64]);
    const m = make();
    convert(m, { mu: 0.5, target: 'ort', loraRank: 2 });
    const out = (await runModel(m, { x })).y!;
    expect(out.type).toBe('float16');
  });

  it('a fused op reading [T, B, E] projections through a Transpose: the layout says which axis is the sequence', async () => {
    const E = 64;
    const m = new Model({ opsetImports: { '': 23 } });
    const g = m.graph;
    const r = seededRandom(3);
    const rnd = (): number => r() - 0.5;
    const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, ['T', 'B', E])));
    const b = new Builder(g);
    const proj = (n: string): Value => b.op('Transpose', [b.op('MatMul', [x, weight(b, `${n}.weight`, [E, E], rnd)], {}, { name: `${n}/MatMul` })], { perm: [1, 0, 2] });
    const y = b.op('Attention', [proj('q'), proj('k'), proj('v')], { q_num_heads: 4, kv_num_heads: 4 }, { name: 'attn' });
    const o = b.op('Add', [b.op('MatMul', [y, weight(b, 'o.weight', [E, E], rnd)], {}, { name: 'o/MatMul' }), b.op('Transpose', [x], { perm: [1, 0, 2] })]);
    o.name = 'y';
    g.addOutput(o);
    verifyModel(m);
    const [s] = discoverAttention(m).sites;
    expect(s!.layout.q).toEqual([['seq'], ['batch'], ['features']]);
    const feeds = { x: new ort.Tensor('float32', Float32Array.from({ length: 5 * 2 * E }, (_, i) => Math.sin(i * 0.3)), [5, 2, E]) };
    // the memory reads the projections as [B, T, ·]: its mix equals the reference on them
    expect(await checkConvertedLayers(m, feeds, 'delta_product', 0.5)).toBeLessThanOrEqual(2e-4);
  });

  it('inlining a function that returns its own input keeps the graph input and its name', () => {
    const m = new Model({ opsetImports: { '': 17, 'pkg.test': 1 } });
    const body = new Graph('f');
    const a = body.addInput(new Value('a'));
    body.setOutputs([new Builder(body).op('Relu', [a]), a]);
    const fn = new IRFunction('pkg.test', 'Pair', body);
    fn.opsetImports.set('', 17);
    m.addFunction(fn);
    const x = m.graph.addInput(new Value('x', tensorType(DataType.FLOAT, [2])));
    const outs = new Builder(m.graph).op('Pair', [x], {}, { domain: 'pkg.test', outputs: 2 }) as Value[];
    m.graph.setOutputs(outs);
    inlineFunctions(m, () => true);
    expect(m.graph.inputs.map((v) => v.name)).toEqual(['x']);
    expect(m.graph.outputs).toHaveLength(2);
    verifyModel(m);
  });

  it('a constant factor on V is refused (the memory reads the V projection)', () => {
    const m = decomposedModel({});
    const pv = m.graph.nodes().find((n) => n.name === '/layers.0/MatMul_pv')!;
    const b = new Builder(m.graph, { before: pv });
    pv.setInput(1, b.op('Mul', [pv.inputs[1]!, b.scalar(3)]));
    const r = discoverAttention(m);
    expect(r.sites).toEqual([]);
    expect(r.rejected[0]!.reason).toMatch(/scales V by a constant; the memory branch reads the V projection/);
  });

  it('heads permuted on the output path are refused', () => {
    const m = decomposedModel({});
    const reshape = m.graph.nodes().find((n) => n.name === '/layers.0/attn_out')!;
    // [B, H, T, d] → Transpose [0, 2, 1, 3] → here: split the heads 2 × 2 and swap them before merging
    const t = reshape.inputs[0]!; // [B, T, H, d]
    const b = new Builder(m.graph, { before: reshape });
    const five = b.op('Reshape', [t, b.ints([0, 0, 2, 2, 16])]);
    const swapped = b.op('Transpose', [five], { perm: [0, 1, 3, 2, 4] });
    reshape.setInput(0, swapped);
    const r = discoverAttention(m);
    expect(r.sites).toEqual([]);
    expect(r.rejected[0]!.reason).toMatch(/does not hold the heads, then the head size, on its last axis/);
  });
});

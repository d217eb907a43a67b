import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { type Model, decodeModel, encodeModel, toposort } from '../../src/ir/index.js';
import { loadModel } from '../../src/node/index.js';
import { type AttentionForm, attentionReport, discoverAttention } from '../../src/passes/index.js';
import { renameEverything, shuffleNodes } from './graphs.js';

const FIXTURES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');

interface Config {
  num_layers: number;
  num_heads: number;
  num_kv_heads: number;
  head_dim: number;
  causal: boolean;
  has_past: boolean;
}

const FORMS: Record<string, AttentionForm> = {
  llama: 'F1',
  llama_past: 'F1',
  qwen2: 'F1',
  qwen2_past: 'F1',
  gpt2: 'F3',
  gpt2_past: 'F3',
  bert: 'F4',
  gqa_contrib: 'F2',
  attention23: 'F5',
};

/** Models with rotary embeddings (every site reads the same cos/sin). */
const ROTARY = new Set(['llama', 'llama_past', 'qwen2', 'qwen2_past', 'gqa_contrib', 'attention23']);

const names = fs
  .readdirSync(FIXTURES)
  .filter((f) => f.endsWith('.onnx'))
  .map((f) => f.slice(0, -5))
  .sort();

function config(name: string): Config {
  return (JSON.parse(fs.readFileSync(path.join(FIXTURES, `${name}.ref.json`), 'utf8')) as { config: Config }).config;
}

function load(name: string): Model {
  return loadModel(path.join(FIXTURES, `${name}.onnx`));
}

describe('attention discovery on the fixtures', () => {
  it('has the fixtures', () => {
    for (const n of ['llama', 'llama_past', 'qwen2', 'qwen2_past', 'gpt2', 'gpt2_past', 'bert']) expect(names).toContain(n);
  });

  for (const name of names) {
    describe(name, () => {
      const cfg = config(name);
      const expected = cfg.num_heads > 0 ? cfg.num_layers : 0;
      const model = load(name);
      const result = discoverAttention(model);

      it(`finds exactly ${expected} attention site(s) with the configured heads, head size, causality and cache names`, () => {
        expect(result.sites.map((s) => s.layer)).toEqual(Array.from({ length: expected }, (_, i) => i));
        for (const s of result.sites) {
          const i = s.layer;
          expect(s.numHeads, `layer ${i} Hq`).toBe(cfg.num_heads);
          expect(s.numKvHeads, `layer ${i} Hkv`).toBe(cfg.num_kv_heads);
          expect(s.headDim, `layer ${i} d`).toBe(cfg.head_dim);
          expect(s.causal, `layer ${i} causal`).toBe(cfg.causal);
          expect(s.scale).toBeCloseTo(1 / Math.sqrt(cfg.head_dim), 6);
          if (FORMS[name]) expect(s.form).toBe(FORMS[name]);
          if (cfg.has_past) {
            expect(s.past).toEqual({ key: `past_key_values.${i}.key`, value: `past_key_values.${i}.value` });
            expect(s.present).toEqual({ key: `present.${i}.key`, value: `present.${i}.value` });
          } else {
            expect(s.past).toBeNull();
            expect(s.present).toBeNull();
          }
          // the layer index follows the data flow: site i is the i-th block of the model
          expect(`${s.outputProjection.node} ${s.outputProjection.weight}`).toMatch(new RegExp(`(layers|h|encoder)\\.${i}[./]`));
          // the attention output feeds the output projection
          expect(s.outputProjection.input).toBe(s.output);
          expect(s.refs.output.name).toBe(s.output);
        }
      });

      it('recognises shared mask and rotary subgraphs', () => {
        if (expected < 2) return;
        for (const s of result.sites) {
          if (s.mask.source) expect(s.mask.shared).toBe(expected);
          if (ROTARY.has(name)) {
            expect(s.rotary).not.toBeNull();
            expect(s.rotary!.shared).toBe(expected);
            expect(s.rotary!.cosSource).toBe(result.sites[0]!.rotary!.cosSource);
          }
        }
        expect(result.shared.find((x) => x.kind === 'mask')?.layers).toEqual(result.sites.map((s) => s.layer));
        if (ROTARY.has(name)) expect(result.shared.find((x) => x.kind === 'rotary')?.layers).toEqual(result.sites.map((s) => s.layer));
      });

      it('gives the same answer after a decode(encode()) round trip', () => {
        const again = discoverAttention(decodeModel(encodeModel(model)));
        expect(attentionReport(again)).toEqual(attentionReport(result));
      });

      it('gives the same answer on shuffled node orders (without re-sorting)', () => {
        const base = attentionReport(result);
        for (const seed of [1, 2, 3]) {
          const m = decodeModel(encodeModel(model));
          shuffleNodes(m, seed);
          expect(attentionReport(discoverAttention(m))).toEqual(base);
        }
        // and on a sorted copy of a shuffled graph
        const m = decodeModel(encodeModel(model));
        shuffleNodes(m, 9);
        toposort(m.graph);
        expect(attentionReport(discoverAttention(m))).toEqual(base);
      });

      it('finds the same structure with every node, value, input and output renamed', () => {
        const shape = (m: Model) =>
          discoverAttention(m).sites.map((s) => [s.form, s.kind, s.numHeads, s.numKvHeads, s.headDim, s.causal, s.scale, s.mask.kind, s.rotary?.kind ?? null, s.past !== null, s.present !== null, s.q.columns]);
        const m = decodeModel(encodeModel(model));
        renameEverything(m, 5);
        shuffleNodes(m, 6);
        expect(shape(m)).toEqual(shape(model));
      });

      if (name === 'bert') {
        it('does not take the classifier Softmax, and says why', () => {
          expect(result.rejected).toHaveLength(1);
          const r = result.rejected[0]!;
          expect(r.node).toBe('/Softmax');
          expect(r.reason).toMatch(/^Softmax '\/Softmax' is not attention: its input is not Q·Kᵀ scores/);
          expect(r.reason).toMatch(/node '\/classifier\/Gemm' \(Gemm\)\) is none of the alternatives \(expected the output of Cast, Max, Reshape, Add, Where, Div, Mul, MatMul, Einsum\)/);
          for (const s of result.sites) expect(s.mask.inputs).toEqual(['attention_mask']);
        });
      } else {
        it('rejects nothing', () => {
          expect(result.rejected).toEqual([]);
        });
      }
    });
  }
});

describe('site details on the fixtures', () => {
  it('llama: projections, repeat_kv heads, rotary, causal evidence', () => {
    const [s0] = discoverAttention(load('llama')).sites;
    expect(s0!.q).toMatchObject({ output: '/model/layers.0/self_attn/q_proj/MatMul_output_0', op: 'MatMul', weightShape: [64, 64], bias: null });
    expect(s0!.k.weightShape).toEqual([64, 32]);
    expect(s0!.q.input).toBe('/model/layers.0/input_layernorm/Mul_1_output_0');
    expect(s0!.output).toBe('/model/layers.0/self_attn/Reshape_7_output_0');
    expect(s0!.outputProjection.node).toBe('/model/layers.0/self_attn/o_proj/MatMul');
    expect(s0!.nodes).toEqual({
      qk: '/model/layers.0/self_attn/MatMul',
      softmax: '/model/layers.0/self_attn/Softmax',
      pv: '/model/layers.0/self_attn/MatMul_1',
      fused: null,
    });
    expect(s0!.rotary).toMatchObject({ kind: 'rotate_half', cosSource: '/model/rotary_emb/Cos_output_0', sinSource: '/model/rotary_emb/Sin_output_0' });
    expect(s0!.mask).toMatchObject({ kind: 'additive', source: '/model/Where_4_output_0', inputs: ['attention_mask'], padding: true, causal: true });
    expect(s0!.mask.causalEvidence).toMatch(/^Less '\/model\/Less' between Range positions$/);
    expect(s0!.scaleSource).toBe('constant');
  });

  it('qwen2: q/k/v biases', () => {
    const [s0] = discoverAttention(load('qwen2')).sites;
    expect(s0!.q.bias).toBe('model.layers.0.self_attn.q_proj.bias');
    expect(s0!.q.output).toBe('/model/layers.0/self_attn/q_proj/Add_output_0');
    expect(s0!.v.bias).toBe('model.layers.0.self_attn.v_proj.bias');
  });

  it('gpt2: fused Gemm split into q/k/v columns, computed scale, triangular buffer', () => {
    const [s0] = discoverAttention(load('gpt2_past')).sites;
    expect(s0!.q).toMatchObject({ op: 'Gemm', weight: 'transformer.h.0.attn.c_attn.weight', bias: 'transformer.h.0.attn.c_attn.bias', columns: [0, 64], split: '/transformer/h.0/attn/Split' });
    expect(s0!.k.columns).toEqual([64, 128]);
    expect(s0!.v.columns).toEqual([128, 192]);
    expect(s0!.q.input).toBe('/transformer/h.0/ln_1/LayerNormalization_output_0');
    expect(s0!.scaleSource).toBe('computed');
    expect(s0!.mask.kind).toBe('additive+where');
    expect(s0!.mask.causalEvidence).toMatch(/^triangular constant '.*' \[1,1,64,64\]$/);
    expect(s0!.outputProjection).toMatchObject({ op: 'Gemm', weight: 'transformer.h.0.attn.c_proj.weight', input: s0!.output });
  });

  it('gqa_contrib: packed QKV in layer 0, separate projections in layer 1', () => {
    const m = path.join(FIXTURES, 'gqa_contrib.onnx');
    if (!fs.existsSync(m)) return;
    const [s0, s1] = discoverAttention(loadModel(m)).sites;
    expect(s0!.q).toMatchObject({ output: null, weight: 'model.layers.0.self_attn.qkv_proj.weight', columns: [0, 64] });
    expect(s0!.k.columns).toEqual([64, 96]);
    expect(s0!.v.columns).toEqual([96, 128]);
    expect(s1!.q).toMatchObject({ weight: 'model.layers.1.self_attn.q_proj.weight', columns: null });
    expect(s0!.mask.kind).toBe('seqlens');
    expect(s0!.rotary).toMatchObject({ kind: 'fused', cosSource: 'model.rotary_emb.cos_cache' });
    expect(s0!.scaleSource).toBe('attribute');
  });

  it('attention23: 3-D Attention after RotaryEmbedding, causal by attribute', () => {
    const m = path.join(FIXTURES, 'attention23.onnx');
    if (!fs.existsSync(m)) return;
    const [s0] = discoverAttention(loadModel(m)).sites;
    expect(s0!.rotary).toMatchObject({ kind: 'RotaryEmbedding', cosSource: 'model.rotary_emb.cos_cache', interleaved: false });
    expect(s0!.mask).toMatchObject({ kind: 'input', causalEvidence: 'attribute is_causal=1', inputs: ['attention_mask'] });
    expect(s0!.scaleSource).toBe('default');
    expect(s0!.q.weight).toBe('model.layers.0.self_attn.q_proj.weight');
  });
});

/**
 * Discovery on exports of real library code (tools/gen_foreign_fixtures.py:
 * torch.nn.MultiheadAttention in nn.TransformerEncoder/DecoderLayer, torchvision ViT and
 * Swin, the Llama fixture at opset 14): every softmax attention is found with the kind,
 * heads, head size, causality, mask and bias its config states; the answer does not
 * change when the nodes are shuffled or every node and value is renamed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { type Model, decodeModel, encodeModel } from '../../src/ir/index.js';
import { loadModel } from '../../src/node/index.js';
import { type AttentionSite, discoverAttention } from '../../src/passes/index.js';
import { FOREIGN_DIR, FOREIGN_NAMES, foreignConfig } from '../helpers/foreign.js';
import { renameEverything, shuffleNodes } from './graphs.js';

const NAMES = fs.readdirSync(FOREIGN_DIR).filter((f) => f.endsWith('.onnx')).map((f) => f.slice(0, -5)).sort();

/** What discovery says of a site, without any name in it. */
function structure(s: AttentionSite) {
  return {
    kind: s.kind,
    form: s.form,
    heads: [s.numHeads, s.numKvHeads, s.headDim],
    causal: s.causal,
    scale: Number(s.scale.toPrecision(6)),
    mask: s.mask.kind,
    padding: s.mask.padding,
    ignored: s.mask.ignored.map((x) => x.split(' ')[0]),
    rotary: s.rotary?.kind ?? null,
    layout: s.layout,
    columns: [s.q.columns, s.k.columns, s.v.columns],
    past: s.past !== null,
    kvSource: s.kvSource !== null,
    ops: [s.q.op, s.k.op, s.v.op],
  };
}

function summary(m: Model) {
  const r = discoverAttention(m);
  return { sites: r.sites.map(structure), rejected: r.rejected.length };
}

describe('discovery on exports of real library code', () => {
  it('has the foreign fixtures', () => {
    expect(NAMES).toEqual(FOREIGN_NAMES);
  });

  for (const name of NAMES) {
    describe(name, () => {
      const cfg = foreignConfig(name);
      const model = loadModel(path.join(FOREIGN_DIR, `${name}.onnx`));
      const result = discoverAttention(model);

      // attention the config marks as not found yet is rejected, at the stage and for the reason it states
      const expected = cfg.expected_sites.filter((e) => e.found !== false);
      const gaps = cfg.expected_sites.filter((e) => e.found === false);
      it(`finds the ${expected.length} attention site(s) of the ${cfg.family} export (opset ${cfg.opset}) as the config states`, () => {
        expect(result.sites).toHaveLength(expected.length);
        expect(result.rejected.map((r) => r.reason)).toHaveLength(cfg.rejected_softmaxes + gaps.length);
        for (const g of gaps) expect(result.rejected.some((r) => r.stage === g.gap!.stage && r.reason.includes(g.gap!.reason)), g.gap!.reason).toBe(true);
        result.sites.forEach((s, i) => {
          const e = expected[i]!;
          const at = `${name} layer ${i}`;
          expect(s.kind, at).toBe(e.kind);
          expect([s.numHeads, s.numKvHeads, s.headDim], at).toEqual([e.num_heads, e.num_kv_heads, e.head_dim]);
          expect(s.causal, at).toBe(e.causal);
          // cross-attention over cached K/V inputs names them (kvSource); over a hidden state, K and V are projected
          if (e.kv_source !== undefined) expect(s.kvSource, at).toEqual(typeof e.kv_source === 'string' ? null : e.kv_source);
          expect(s.scale, at).toBeCloseTo(1 / Math.sqrt(e.head_dim), 6);
          expect(s.mask.padding, at).toBe(e.padding_mask);
          expect(s.rotary !== null, at).toBe(!!e.rope);
          if (e.rotary) {
            // GPT-J's rotate_every_two pairs neighbours; Phi rotates halves; both only the first rotary_dim dims
            expect(s.rotary!.kind, at).toBe(e.rotary === 'interleaved' ? 'rotate_every_two' : 'rotate_half');
            expect(s.rotary!.interleaved, at).toBe(e.rotary === 'interleaved');
            expect(s.rotary!.dims, at).toBe(e.rotary_dim === e.head_dim ? null : e.rotary_dim);
          }
          // what the linear branch cannot express is listed, and nothing else
          const ignored = s.mask.ignored.join(' | ');
          const bias = (e.bias ?? '').split('+').filter(Boolean);
          expect(s.mask.ignored, at).toHaveLength(bias.length);
          if (bias.includes('relative_position')) expect(ignored).toMatch(/^bias '.*' added to the scores/);
          if (bias.includes('shifted_window_mask')) expect(ignored).toMatch(/window mask '.*' \(added per window/);
          // the attention output feeds the output projection
          expect(s.refs.output.consumers().some((c) => c.name === s.outputProjection.node), at).toBe(true);
        });
      });

      it('gives the same answer on shuffled node orders and with every node and value renamed', () => {
        const base = summary(model);
        for (const seed of [1, 2]) {
          const m = decodeModel(encodeModel(model));
          shuffleNodes(m, seed);
          expect(summary(m)).toEqual(base);
        }
        const renamed = decodeModel(encodeModel(model));
        renameEverything(renamed, 3);
        shuffleNodes(renamed, 4);
        expect(summary(renamed)).toEqual(base);
      });
    });
  }

  it('torch.nn.MultiheadAttention: sequence-first projections of a packed in_proj, a [T·B, E] output', () => {
    const [s] = discoverAttention(loadModel(path.join(FOREIGN_DIR, 'mha_encoder.onnx'))).sites;
    expect(s!.layout).toEqual({
      q: [['seq'], ['batch'], ['features']],
      k: [['seq'], ['batch'], ['features']],
      v: [['seq'], ['batch'], ['features']],
      output: [['seq', 'batch'], ['heads', 'head_dim']],
    });
    expect([s!.q.columns, s!.k.columns, s!.v.columns]).toEqual([
      [0, 32],
      [32, 64],
      [64, 96],
    ]);
    expect(s!.q.packed).toBe(s!.k.packed);
  });

  it('Swin: q, k, v taken by Gather from a [B·nW, N, 3, H, d] packed projection', () => {
    const [s] = discoverAttention(loadModel(path.join(FOREIGN_DIR, 'swin.onnx'))).sites;
    expect([s!.q.columns, s!.k.columns, s!.v.columns]).toEqual([
      [0, 16],
      [16, 32],
      [32, 48],
    ]);
    expect(s!.layout.q).toEqual([['batch'], ['seq'], ['features']]);
  });

  it('cross-attention in nn.TransformerDecoderLayer is found as kind cross', () => {
    const r = discoverAttention(loadModel(path.join(FOREIGN_DIR, 'mha_decoder.onnx')));
    expect(r.sites.map((s) => s.kind)).toEqual(['self', 'cross']);
    expect(r.sites[1]!.k.input).not.toBe(r.sites[1]!.q.input);
  });
});

import { describe, expect, it } from 'vitest';
import { decodeModel, encodeModel } from '../../src/ir/index.js';
import { discoverAttention } from '../../src/passes/index.js';
import { buildExportLikeDecoder, discoveryBench } from '../../bench/discovery.bench.js';
import { syntheticDecoder } from '../../tools/synthetic-decoder.js';
import { shuffleNodes } from './graphs.js';

describe('discovery at scale', () => {
  it('finds all 32 layers of a generated export-shaped decoder, well under a second', () => {
    const model = decodeModel(encodeModel(buildExportLikeDecoder({ layers: 32, withPast: true })));
    expect(model.graph.size).toBeGreaterThan(32 * 60);
    discoverAttention(model); // warm up the JIT
    const t0 = performance.now();
    const r = discoverAttention(model);
    const elapsed = performance.now() - t0;
    expect(r.sites).toHaveLength(32);
    expect(r.rejected).toEqual([]);
    expect(r.sites.map((s) => s.present?.key)).toEqual(Array.from({ length: 32 }, (_, i) => `present.${i}.key`));
    expect(r.sites.every((s) => s.numHeads === 4 && s.numKvHeads === 2 && s.headDim === 16 && s.causal)).toBe(true);
    expect(r.shared.map((s) => [s.kind, s.layers.length])).toEqual([
      ['mask', 32],
      ['rotary', 32],
    ]);
    expect(elapsed).toBeLessThan(1000);
    // and on a shuffled copy
    shuffleNodes(model, 5);
    expect(discoverAttention(model).sites.map((s) => s.present?.key)).toEqual(r.sites.map((s) => s.present?.key));
  });

  it('the benchmark function reports a ratio against decoding', () => {
    const r = discoveryBench(2, 1);
    expect(r.sites).toBe(2);
    expect(r.ratio).toBeGreaterThan(0);
  });

  it('finds every layer of the synthetic decoder used by the other benchmarks', () => {
    const { model } = syntheticDecoder({ layers: 4, hidden: 64, heads: 4, kvHeads: 2, vocab: 64, intermediate: 64, withPast: true });
    const r = discoverAttention(model);
    expect(r.rejected).toEqual([]);
    expect(r.sites.map((s) => [s.numHeads, s.numKvHeads, s.headDim, s.causal, s.past?.key])).toEqual(
      Array.from({ length: 4 }, (_, i) => [4, 2, 16, true, `past_key_values.${i}.key`]),
    );
  });
});

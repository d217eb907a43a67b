/**
 * Discovery on builder-made graphs: every form with its variants, and a near miss of
 * each form that must be rejected with a stated reason.
 */
import { describe, expect, it } from 'vitest';
import { Builder, Model, decodeModel, encodeModel } from '../../src/ir/index.js';
import { type AttentionDiscovery, attentionReport, discoverAttention } from '../../src/passes/index.js';
import { convert } from '../../src/passes/convert/convert.js';
import { attention23Model, decomposedModel, gqaModel, msModel, renameEverything, shuffleNodes, weight } from './graphs.js';

function only(model: Model): AttentionDiscovery {
  const r = discoverAttention(model);
  // every answer is the same on a shuffled copy
  const copy = decodeModel(encodeModel(model));
  shuffleNodes(copy, 42);
  expect(attentionReport(discoverAttention(copy))).toEqual(attentionReport(r));
  return r;
}

function rejectedReason(model: Model): string {
  const r = only(model);
  expect(r.sites).toHaveLength(0);
  expect(r.rejected).toHaveLength(1);
  return r.rejected[0]!.reason;
}

describe('F1: decomposed decoder attention', () => {
  it('finds GQA with rotary, past Concat and repeat_kv, in data-flow order', () => {
    const r = only(decomposedModel({ heads: 4, kvHeads: 2, rotary: true, past: true, layers: 3 }));
    expect(r.sites.map((s) => [s.layer, s.form, s.numHeads, s.numKvHeads, s.headDim, s.causal])).toEqual([
      [0, 'F1', 4, 2, 16, true],
      [1, 'F1', 4, 2, 16, true],
      [2, 'F1', 4, 2, 16, true],
    ]);
    expect(r.sites[2]!.q.weight).toBe('layers.2.q_proj.weight');
    expect(r.sites[1]!.past).toEqual({ key: 'past_key_values.1.key', value: 'past_key_values.1.value' });
    expect(r.sites[1]!.present).toEqual({ key: '/layers.1/Concat_k_out', value: '/layers.1/Concat_v_out' });
    expect(r.sites[0]!.mask.causalEvidence).toBe("Trilu 'Trilu'");
    expect(r.sites[0]!.mask.source).toBe('mask_out');
    expect(r.shared.map((s) => [s.kind, s.source, s.layers])).toEqual([
      ['mask', 'mask_out', [0, 1, 2]],
      ['rotary', 'Cos_out', [0, 1, 2]],
    ]);
  });

  it('accepts Mul scale, Add(mask, scores), Cast around the Softmax, Where(IsNaN) and Dropout after it', () => {
    const r = only(decomposedModel({ scale: 'mul', maskFirst: true, castAround: true, post: ['cast', 'isnan', 'dropout'] }));
    expect(r.sites).toHaveLength(1);
    expect(r.sites[0]!.scale).toBeCloseTo(0.25, 6);
    expect(r.sites[0]!.scaleSource).toBe('constant');
  });

  it('accepts √scale on Q and on K separately', () => {
    const s = only(decomposedModel({ scale: 'split' })).sites[0]!;
    expect(s.scaleSource).toBe('split');
    expect(s.scale).toBeCloseTo(0.25, 6);
  });

  it('accepts √scale left unfolded as Sqrt(constant) (torch SDPA symbolic)', () => {
    const s = only(decomposedModel({ scale: 'split-unfolded' })).sites[0]!;
    expect(s.scaleSource).toBe('split');
    expect(s.scale).toBeCloseTo(0.25, 6);
  });

  it('accepts a scale computed from shapes (Shape → Gather → Cast → Sqrt)', () => {
    const s = only(decomposedModel({ scale: 'computed' })).sites[0]!;
    expect(s.scaleSource).toBe('computed');
    expect(s.scale).toBeCloseTo(0.25, 6);
  });

  it('accepts scaling of the query projection output (OPT) and a Max clamp before the Softmax', () => {
    const s = only(decomposedModel({ scale: 'projection', clamp: true })).sites[0]!;
    expect(s.scaleSource).toBe('split');
    expect(s.scale).toBeCloseTo(0.25, 6);
    expect(s.q.output).toBe('/layers.0/q_proj/MatMul_out');
  });

  it('accepts unscaled scores (scale 1)', () => {
    const s = only(decomposedModel({ scale: 'none' })).sites[0]!;
    expect(s.scaleSource).toBe('none');
    expect(s.scale).toBe(1);
  });

  it('near miss: Softmax over the wrong axis', () => {
    expect(rejectedReason(decomposedModel({ softmaxAxis: 1 }))).toMatch(
      /^Softmax '\/layers.0\/Softmax' is not attention: node '\/layers.0\/Softmax' \(Softmax\): it normalizes over axis 1, not the last \(key\) axis/,
    );
  });

  it('near miss: MatMul(P, V) whose V does not come from a projection', () => {
    expect(rejectedReason(decomposedModel({ vSource: 'input' }))).toMatch(/the V path reaches graph input 'v_in' without meeting a projection/);
  });

  it('near miss: K is not transposed', () => {
    expect(rejectedReason(decomposedModel({ kPerm: null }))).toMatch(/Kᵀ \[.*\]: its second-to-last axis is not the head size .*; Q·Kᵀ needs the keys transposed to \[.., head size, sequence\]/);
  });

  it('near miss: fewer kv heads but no repeat_kv', () => {
    expect(rejectedReason(decomposedModel({ heads: 4, kvHeads: 2, noRepeat: true }))).toMatch(/4 query heads but 2 key\/value heads, and no repeat_kv/);
  });

  it('near miss: the Softmax output does not reach MatMul(P, V)', () => {
    expect(rejectedReason(decomposedModel({ noPV: true }))).toMatch(/its output does not reach a MatMul\(P, V\).*is read by nothing/);
  });

  it('near miss: no output projection', () => {
    expect(rejectedReason(decomposedModel({ outputProjection: false }))).toMatch(/the attention output '\/layers.0\/attn_out_out' does not reach an output projection through layout ops; it is read by nothing/);
  });

  it('near miss: a Softmax over MatMul(x, W) (a classifier head, not Q·Kᵀ)', () => {
    const m = decomposedModel({ layers: 1 });
    const g = m.graph;
    const b = new Builder(g);
    const logits = b.op('MatMul', [g.outputs[0]!, weight(b, 'cls.weight', [64, 3], () => 0.1)]);
    const probs = b.op('Softmax', [logits], { axis: -1 }, { name: 'classifier_softmax' });
    g.addOutput(probs);
    const r = only(m);
    expect(r.sites).toHaveLength(1);
    expect(r.rejected.map((x) => x.node)).toEqual(['classifier_softmax']);
    expect(r.rejected[0]!.reason).toMatch(/^Softmax 'classifier_softmax': its output does not reach a MatMul\(P, V\)/);
  });
});

describe('normalizations on q and k', () => {
  it('goes through per-head q_norm / k_norm (Qwen3) and reports them', () => {
    const s = only(decomposedModel({ qkNorm: 'head', rotary: true, heads: 4, kvHeads: 2 })).sites[0]!;
    expect([s.numHeads, s.numKvHeads, s.headDim]).toEqual([4, 2, 16]);
    expect(s.q.output).toBe('/layers.0/q_proj/MatMul_out');
    expect(s.qkNorm!.q.length).toBeGreaterThan(3);
    expect(s.qkNorm!.k.length).toBeGreaterThan(3);
  });

  it('goes through a norm of the whole projection output (OLMo2)', () => {
    const s = only(decomposedModel({ qkNorm: 'full' })).sites[0]!;
    expect(s.q.output).toBe('/layers.0/q_proj/MatMul_out');
    expect(s.k.weight).toBe('layers.0.k_proj.weight');
    expect(s.qkNorm).not.toBeNull();
  });

  it('reports no norm for plain models', () => {
    expect(only(decomposedModel({})).sites[0]!.qkNorm).toBeNull();
  });
});

describe('cross-attention', () => {
  it('keys and values projected from another hidden state make a site of kind cross', () => {
    const s = only(decomposedModel({ cross: true, mask: 'none' })).sites[0]!;
    expect(s.kind).toBe('cross');
    expect([s.q.input, s.k.input, s.v.input]).toEqual(['x', 'encoder_hidden_states', 'encoder_hidden_states']);
  });

  it('convert keeps it as softmax attention by default; with cross it gains a memory over the other sequence', () => {
    expect(() => convert(decomposedModel({ cross: true, mask: 'none' }), {})).toThrow(
      /no attention layer to convert: layer 0: cross-attention \(keys and values from 'encoder_hidden_states'\): kept as softmax attention \(options\.cross converts it\)/,
    );
    const r = convert(decomposedModel({ cross: true, mask: 'none' }), { cross: true });
    expect(r.sites.map((s) => [s.layer, s.kind])).toEqual([[0, 'cross']]);
  });

  it('self-attention sites are the default', () => {
    expect(only(decomposedModel({})).sites[0]!.kind).toBe('self');
  });

  it('keys and values read from graph inputs (cached cross K/V [B, Hkv, S, d], repeat_kv): kind cross, projection-less K/V, heads from the labels', () => {
    const r = only(decomposedModel({ kvSource: 'cache', mask: 'none', heads: 4, kvHeads: 2, layers: 2 }));
    expect(r.rejected).toEqual([]);
    expect(r.sites.map((s) => [s.layer, s.kind, s.numHeads, s.numKvHeads, s.headDim, s.causal])).toEqual([
      [0, 'cross', 4, 2, 16, false],
      [1, 'cross', 4, 2, 16, false],
    ]);
    const s = r.sites[1]!;
    expect(s.kvSource).toEqual({ key: 'past_key_values.1.encoder.key', value: 'past_key_values.1.encoder.value' });
    expect(s.k).toMatchObject({ op: 'input', node: null, weight: null, input: 'past_key_values.1.encoder.key', output: 'past_key_values.1.encoder.key', columns: null });
    expect(s.layout.k).toEqual([['batch'], ['features'], ['seq'], ['features']]);
    expect([s.past, s.present]).toEqual([null, null]);
    // the same answer with every node and value renamed (and shuffled)
    const renamed = decomposedModel({ kvSource: 'cache', mask: 'none', heads: 4, kvHeads: 2, layers: 2 });
    renameEverything(renamed, 5);
    shuffleNodes(renamed, 6);
    const strip = (x: AttentionDiscovery) => x.sites.map((t) => [t.kind, t.form, t.numHeads, t.numKvHeads, t.headDim, t.layout, t.k.op, t.v.op, t.kvSource !== null]);
    expect(strip(discoverAttention(renamed))).toEqual(strip(r));
  });

  it('a single key/value head as a graph input [B, 1, S, d]: broadcast to every query head', () => {
    const s = only(decomposedModel({ kvSource: 'cache', mask: 'none', heads: 4, kvHeads: 1 })).sites[0]!;
    expect([s.kind, s.numHeads, s.numKvHeads, s.k.op]).toEqual(['cross', 4, 1, 'input']);
    expect(s.layout.v).toEqual([['batch'], [], ['seq'], ['features']]);
  });

  it('near miss: a self-attention whose K/V are its own hidden state without a projection stays rejected', () => {
    expect(rejectedReason(decomposedModel({ kvSource: 'hidden', mask: 'none' }))).toMatch(
      /^Softmax '\/layers.0\/Softmax': the K path reaches graph input 'x' without meeting a projection \(MatMul\/Gemm with a weight\)$/,
    );
  });

  it('near miss: cached K/V inputs whose heads do not line up with the queries (3 key heads for 4 query heads)', () => {
    expect(rejectedReason(decomposedModel({ kvSource: 'cache', mask: 'none', heads: 4, kvHeads: 3, noRepeat: true }))).toBe(
      "Softmax '/layers.0/Softmax': 4 query heads but 3 key/value heads, and no repeat_kv on the K path (keys / values read from graph input 'past_key_values.0.encoder.key' and 'past_key_values.0.encoder.value': no reading of their axes lines up with Q's heads)",
    );
  });

  it('convert: cached cross K/V are skipped without --cross (named in the reason) and converted with it', () => {
    expect(() => convert(decomposedModel({ kvSource: 'cache', mask: 'none' }), {})).toThrow(
      /layer 0: cross-attention \(keys and values from the inputs 'past_key_values.0.encoder.key' and 'past_key_values.0.encoder.value'\): kept as softmax attention \(options\.cross converts it\)/,
    );
    const r = convert(decomposedModel({ kvSource: 'cache', mask: 'none' }), { cross: true, loraRank: 2 });
    expect(r.sites.map((s) => [s.layer, s.kind])).toEqual([[0, 'cross']]);
    expect(r.lora.map((l) => l.target)).toEqual(['layers.0.q_proj', 'layers.0.o_proj']);
  });
});

describe('F3: fused q/k/v projection (GPT-2 style)', () => {
  it('finds a Gemm + Split projection with its column ranges', () => {
    const s = only(decomposedModel({ fusedSplit: 3, past: true })).sites[0]!;
    expect(s.form).toBe('F3');
    expect(s.q).toMatchObject({ op: 'Gemm', weight: 'layers.0.c_attn.weight', bias: 'layers.0.c_attn.bias', columns: [0, 64], input: 'x' });
    expect(s.v.columns).toEqual([128, 192]);
    expect(s.past).toEqual({ key: 'past_key_values.0.key', value: 'past_key_values.0.value' });
  });

  it('near miss: a Split with the wrong number of outputs', () => {
    expect(rejectedReason(decomposedModel({ fusedSplit: 2 }))).toMatch(/on the K path, node '\/layers.0\/Reshape.*' \(Reshape\) reshapes \[B, T, 128\] to \[B, T, 4, 16\]: the sizes do not match/);
  });
});

describe('F4: bidirectional encoder attention', () => {
  it('a padding-only mask makes the site bidirectional', () => {
    const s = only(decomposedModel({ mask: 'padding' })).sites[0]!;
    expect(s.form).toBe('F4');
    expect(s.causal).toBe(false);
    expect(s.mask).toMatchObject({ kind: 'additive', inputs: ['attention_mask'], padding: true, causalEvidence: null });
  });

  it('no mask at all is bidirectional too', () => {
    const s = only(decomposedModel({ mask: 'none' })).sites[0]!;
    expect(s.causal).toBe(false);
    expect(s.mask.kind).toBe('none');
  });

  it('a causal-only mask is causal, without padding', () => {
    const s = only(decomposedModel({ mask: 'causal' })).sites[0]!;
    expect(s.form).toBe('F1');
    expect(s.mask).toMatchObject({ causal: true, padding: false, inputs: [] });
  });
});

describe('F2: fused com.microsoft attention', () => {
  it('GroupQueryAttention with separate projections, cache names, fused rotary', () => {
    const r = only(gqaModel({ layers: 2 }));
    expect(r.sites.map((s) => [s.form, s.numHeads, s.numKvHeads, s.headDim, s.causal])).toEqual([
      ['F2', 4, 2, 16, true],
      ['F2', 4, 2, 16, true],
    ]);
    expect(r.sites[1]!.past).toEqual({ key: 'past_key_values.1.key', value: 'past_key_values.1.value' });
    expect(r.sites[1]!.present).toEqual({ key: 'present.1.key', value: 'present.1.value' });
    expect(r.sites[0]!.rotary).toMatchObject({ kind: 'fused', cosSource: 'cos_cache', shared: 2 });
    expect(r.sites[0]!.mask).toMatchObject({ kind: 'seqlens', inputs: ['attention_mask'], causal: true });
  });

  it('GroupQueryAttention with packed QKV', () => {
    const s = only(gqaModel({ packed: true })).sites[0]!;
    expect(s.q).toMatchObject({ output: null, columns: [0, 64], weight: 'layers.0.qkv_proj.weight' });
    expect(s.k.columns).toEqual([64, 96]);
    expect(s.v.columns).toEqual([96, 128]);
  });

  it('near miss: GroupQueryAttention with an unsupported attribute value (softcap)', () => {
    expect(rejectedReason(gqaModel({ extraAttrs: { softcap: 30 } }))).toBe(
      "GroupQueryAttention 'gqa_0': softcap=30 is not supported (the linear-attention branch has no logit soft-capping)",
    );
  });

  it('near miss: GroupQueryAttention with an unknown attribute', () => {
    expect(rejectedReason(gqaModel({ extraAttrs: { foo: 1 } }))).toMatch(/^GroupQueryAttention 'gqa_0': unsupported attribute 'foo'/);
  });

  it('near miss: GroupQueryAttention without kv_num_heads', () => {
    expect(rejectedReason(gqaModel({ omit: ['kv_num_heads'] }))).toMatch(/attribute 'kv_num_heads' is missing or not positive/);
  });

  it('MultiHeadAttention (bidirectional unless unidirectional)', () => {
    const s = only(msModel('MultiHeadAttention')).sites[0]!;
    expect([s.form, s.numHeads, s.numKvHeads, s.headDim, s.causal]).toEqual(['F2', 4, 4, 16, false]);
    expect(s.mask).toMatchObject({ kind: 'input', inputs: ['mask_index'] });
  });

  it('near miss: MultiHeadAttention with packed QKV', () => {
    expect(rejectedReason(msModel('MultiHeadAttention', { packed: true }))).toMatch(/packed QKV \(query \[B, S, N, 3, H\], no key\/value\) interleaves/);
  });

  it('com.microsoft.Attention: the projection is inside the op', () => {
    const s = only(msModel('Attention', { unidirectional: 1 })).sites[0]!;
    expect([s.form, s.numHeads, s.numKvHeads, s.headDim, s.causal]).toEqual(['F2', 4, 4, 16, true]);
    expect(s.q).toMatchObject({ output: null, input: 'x', weight: 'qkv.weight', bias: 'qkv.bias', columns: [0, 64], node: 'ms_attention' });
    expect(s.v.columns).toEqual([128, 192]);
    expect(s.mask.causalEvidence).toBe('attribute unidirectional=1');
  });
});

describe('F5: ONNX Attention (opset 23)', () => {
  it('3-D inputs after RotaryEmbedding, heads from attributes', () => {
    const s = only(attention23Model({ isCausal: 1 })).sites[0]!;
    expect([s.form, s.numHeads, s.numKvHeads, s.headDim, s.causal]).toEqual(['F5', 4, 2, 16, true]);
    expect(s.rotary).toMatchObject({ kind: 'RotaryEmbedding', cosSource: 'cos_cache' });
    expect(s.q.weight).toBe('q.weight');
  });

  it('4-D inputs, heads from the Reshapes (native GQA, no repeat_kv)', () => {
    const s = only(attention23Model({ rank: 4 })).sites[0]!;
    expect([s.form, s.numHeads, s.numKvHeads, s.headDim, s.causal]).toEqual(['F5', 4, 2, 16, false]);
    expect(s.output).toMatch(/Reshape/);
  });

  it('near miss: 3-D inputs without the heads attributes', () => {
    expect(rejectedReason(attention23Model({ headsAttrs: false }))).toBe(
      "Attention 'attention' takes 3-D Q/K/V ([B, S, H·d]) but has no q_num_heads / kv_num_heads attributes; the number of heads cannot be known",
    );
  });

  it('near miss: softcap', () => {
    expect(rejectedReason(attention23Model({ softcap: 50 }))).toMatch(/softcap=50 is not supported/);
  });
});

describe('discovery options and edge cases', () => {
  it('filters by form', () => {
    const m = decomposedModel({ layers: 2 });
    expect(discoverAttention(m, { forms: ['F2'] }).sites).toEqual([]);
    expect(discoverAttention(m, { forms: ['F1'] }).sites).toHaveLength(2);
  });

  it('a graph without attention yields nothing', () => {
    expect(discoverAttention(new Model())).toEqual({ sites: [], rejected: [], shared: [], inlined: [] });
  });
});

describe('rejections name the stage that failed', () => {
  const stageOf = (m: Model): string => discoverAttention(m).rejected[0]!.stage;
  it('core, projections, heads, output', () => {
    expect(stageOf(decomposedModel({ softmaxAxis: 1 }))).toBe('core');
    expect(stageOf(decomposedModel({ vSource: 'input' }))).toBe('projections');
    expect(stageOf(decomposedModel({ heads: 4, kvHeads: 2, noRepeat: true }))).toBe('heads');
    expect(stageOf(decomposedModel({ outputProjection: false }))).toBe('output');
  });
});

import { describe, expect, it } from 'vitest';
import { UserInputError } from '../../src/ir/index.js';
import {
  LIZA_SCHEMA,
  MAG_SCHEMA,
  type LizaOpAttributes,
  lizaNodeAttributes,
  maxChunks,
  resolveLizaAttributes,
  validateLizaInputs,
} from '../../src/ops/index.js';

const base: LizaOpAttributes = { q_num_heads: 4, kv_num_heads: 2, head_dim: 8, rule: 'delta' };

describe('ai.tptt schemas', () => {
  it('describe LiZA and MaG (inputs, optional inputs, outputs, attributes with defaults)', () => {
    expect(LIZA_SCHEMA.inputs.map((i) => `${i.name}${i.optional ? '?' : ''}`)).toEqual([
      'xq', 'xk', 'xv', 'past_state?', 'past_window?', 'mask?',
    ]);
    expect(LIZA_SCHEMA.outputs.map((o) => o.name)).toEqual(['y', 'present_state', 'present_window']);
    const defaults = Object.fromEntries(LIZA_SCHEMA.attributes.filter((a) => !a.required).map((a) => [a.name, a.default]));
    expect(defaults).toEqual({ order: 1, chunk_size: 64, causal: 1, max_seq_len: 32768 });
    expect(MAG_SCHEMA.inputs.map((i) => i.name)).toEqual(['a', 'y', 'mu']);
  });

  it('fills defaults', () => {
    const c = resolveLizaAttributes(base);
    expect(c).toMatchObject({ group: 2, order: 1, chunkSize: 64, causal: true, maxSeqLen: 32768, window: 2, gated: false, product: false });
    expect(lizaNodeAttributes(c)).toEqual({
      q_num_heads: 4, kv_num_heads: 2, head_dim: 8, rule: 'delta', order: 1, chunk_size: 64, causal: 1, max_seq_len: 32768,
    });
    expect(maxChunks(resolveLizaAttributes({ ...base, rule: 'delta_product', order: 3, chunk_size: 16, max_seq_len: 100 }))).toBe(19);
  });

  it.each([
    [{ ...base, rule: 'softmax' }, /rule must be one of linear, delta, delta_product, gated_delta, gated_delta_product; got 'softmax'/],
    [{ ...base, order: 2 }, /order 2 > 1 needs a \*_product rule/],
    [{ ...base, order: 0, rule: 'delta_product' }, /order must be a positive integer, got 0/],
    [{ ...base, q_num_heads: 3 }, /q_num_heads \(3\) must be a multiple of kv_num_heads \(2\)/],
    [{ ...base, head_dim: 2.5 }, /head_dim must be a positive integer/],
    [{ ...base, chunk_size: 4096 }, /chunk_size must be at most 1024/],
    [{ ...base, max_seq_len: -1 }, /max_seq_len must be a positive integer/],
    [{ ...base, causal: 2 }, /causal must be true\/false/],
    [{ ...base, chunksize: 4 }, /unknown attribute 'chunksize'/],
  ])('rejects bad attributes with a UserInputError naming them (%#)', (attrs, message) => {
    expect(() => resolveLizaAttributes(attrs as unknown as LizaOpAttributes)).toThrow(UserInputError);
    expect(() => resolveLizaAttributes(attrs as unknown as LizaOpAttributes)).toThrow(message);
  });

  it('rejects past inputs on a bidirectional site', () => {
    const c = resolveLizaAttributes({ ...base, causal: false });
    expect(() => validateLizaInputs(c, { pastState: true, pastWindow: false, mask: false })).toThrow(/causal = 0 .* does not accept past_state/);
    expect(() => validateLizaInputs(c, { pastState: false, pastWindow: false, mask: true })).not.toThrow();
  });
});

/**
 * The foreign fixtures (tools/gen_foreign_fixtures.py) as the tests read them: their
 * folder, the names the generator writes, and the config each reference carries.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const FOREIGN_DIR = fileURLToPath(new URL('../fixtures/foreign/', import.meta.url));

/** What tools/gen_foreign_fixtures.py writes (a missing or extra fixture fails the tests). */
export const FOREIGN_NAMES = ['encdec_decoder', 'encdec_decoder_past', 'gptj', 'llama14', 'mha_causal', 'mha_decoder', 'mha_encoder', 'phi', 'swin', 'vit'];

/** One softmax attention of a fixture, as its config states it. */
export interface ExpectedSite {
  kind: 'self' | 'cross';
  num_heads: number;
  num_kv_heads: number;
  head_dim: number;
  causal: boolean;
  bias: string | null;
  padding_mask: boolean;
  rope?: boolean;
  rotary?: 'interleaved' | 'rotate_half';
  rotary_dim?: number;
  /** KV-cache inputs / outputs of the site (the BART-style decoders). */
  past?: { key: string; value: string } | null;
  present?: { key: string; value: string } | null;
  /** Cross-attention: where K and V come from (a hidden state, or cached K/V inputs). */
  kv_source?: string | { key: string; value: string };
  /**
   * false: an attention that discovery does not find yet (it is rejected, at the stage and
   * for the reason `gap` states); absent: found.
   */
  found?: boolean;
  gap?: { stage: string; reason: string };
}

export interface ForeignConfig {
  family: string;
  exporter: string;
  opset: number;
  seq_length: number | null;
  causal: boolean;
  expected_sites: ExpectedSite[];
  rejected_softmaxes: number;
}

export function foreignConfig(name: string): ForeignConfig {
  return (JSON.parse(fs.readFileSync(path.join(FOREIGN_DIR, `${name}.ref.json`), 'utf8')) as { config: ForeignConfig }).config;
}

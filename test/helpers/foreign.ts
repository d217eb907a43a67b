/**
 * The foreign fixtures (tools/gen_foreign_fixtures.py) as the tests read them: their
 * folder, the names the generator writes, and the config each reference carries.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const FOREIGN_DIR = fileURLToPath(new URL('../fixtures/foreign/', import.meta.url));

/** What tools/gen_foreign_fixtures.py writes (a missing or extra fixture fails the tests). */
export const FOREIGN_NAMES = ['gptj', 'llama14', 'mha_causal', 'mha_decoder', 'mha_encoder', 'phi', 'swin', 'vit'];

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

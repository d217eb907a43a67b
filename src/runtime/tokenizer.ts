/**
 * Text ↔ token ids with a Hugging Face `tokenizer.json` (and `tokenizer_config.json` when
 * it sits beside it), through @huggingface/tokenizers (pure JavaScript, no downloads).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { UserInputError } from '../ir/errors.js';

export interface TextTokenizer {
  encode(text: string): number[];
  decode(ids: number[]): string;
}

function readJson(file: string, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new UserInputError(`${what} ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : String(e)}`);
  }
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new UserInputError(`${what} ${file} is not valid JSON (${(e as Error).message})`);
  }
}

/** Loads tokenizer.json (and tokenizer_config.json from the same folder when present). */
export function loadTokenizer(file: string): TextTokenizer {
  const json = readJson(file, 'tokenizer');
  if (!json.model || typeof json.model !== 'object') throw new UserInputError(`tokenizer ${file} has no 'model' section; is it a Hugging Face tokenizer.json?`);
  const configFile = path.join(path.dirname(file), 'tokenizer_config.json');
  const config = fs.existsSync(configFile) ? readJson(configFile, 'tokenizer config') : {};
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(json, config);
  } catch (e) {
    throw new UserInputError(`tokenizer ${file} could not be loaded (${(e as Error).message})`);
  }
  return {
    encode: (text) => Array.from(tok.encode(text).ids as ArrayLike<number>, Number),
    decode: (ids) => tok.decode(ids),
  };
}

// Writes test/fixtures/tokenizer.json: a byte-level BPE tokenizer with exactly 256 tokens
// (one per byte, no merges), matching the fixtures' vocabulary of 256. It is the smallest
// real Hugging Face tokenizer.json that round-trips any text, for `titanize generate --prompt`.
import * as fs from 'node:fs';

// GPT-2's byte → printable character map
const bs = [];
for (let b = 33; b <= 126; b++) bs.push(b);
for (let b = 161; b <= 172; b++) bs.push(b);
for (let b = 174; b <= 255; b++) bs.push(b);
const cs = bs.slice();
let n = 0;
for (let b = 0; b < 256; b++) {
  if (!bs.includes(b)) {
    bs.push(b);
    cs.push(256 + n++);
  }
}
const vocab = {};
bs.forEach((b, i) => (vocab[String.fromCodePoint(cs[i])] = b));
const sorted = Object.fromEntries(Object.entries(vocab).sort((a, b) => a[1] - b[1]));
const tokenizer = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [],
  normalizer: null,
  pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
  post_processor: null,
  decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab: sorted, merges: [] },
};
fs.writeFileSync('test/fixtures/tokenizer.json', `${JSON.stringify(tokenizer, null, 1)}\n`);
fs.writeFileSync('test/fixtures/tokenizer_config.json', `${JSON.stringify({ model_max_length: 2048, tokenizer_class: 'PreTrainedTokenizerFast', clean_up_tokenization_spaces: false }, null, 1)}\n`);
console.log('wrote test/fixtures/tokenizer.json (256 byte-level tokens)');

/** Next-token choice: greedy, or sampling with temperature, top-k and top-p from a seeded generator. */
import { seededRandom } from '../ir/random.js';


export interface SamplingOptions {
  /** 0 (default) means greedy. */
  temperature?: number;
  /** Keep only the k most likely tokens (0 = all). */
  topK?: number;
  /** Keep the smallest set of tokens whose probability reaches p (1 = all). */
  topP?: number;
  seed?: number;
}

export function argmax(logits: ArrayLike<number>, offset = 0, length = logits.length - offset): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < length; i++) {
    const v = logits[offset + i]!;
    if (v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  return best;
}

export class Sampler {
  private readonly random: () => number;
  constructor(private readonly options: SamplingOptions = {}) {
    this.random = seededRandom(options.seed ?? 0);
  }

  get greedy(): boolean {
    return !this.options.temperature;
  }

  /** Picks a token from logits[offset .. offset+vocab). */
  pick(logits: ArrayLike<number>, offset: number, vocab: number): number {
    if (this.greedy) return argmax(logits, offset, vocab);
    const t = this.options.temperature!;
    const idx = Array.from({ length: vocab }, (_, i) => i).sort((a, b) => logits[offset + b]! - logits[offset + a]!);
    const k = this.options.topK && this.options.topK > 0 ? Math.min(this.options.topK, vocab) : vocab;
    const kept = idx.slice(0, k);
    const max = logits[offset + kept[0]!]!;
    let probs = kept.map((i) => Math.exp((logits[offset + i]! - max) / t));
    let sum = probs.reduce((a, b) => a + b, 0);
    probs = probs.map((p) => p / sum);
    const topP = this.options.topP ?? 1;
    let n = probs.length;
    if (topP < 1) {
      let acc = 0;
      for (n = 0; n < probs.length; ) {
        acc += probs[n++]!;
        if (acc >= topP) break;
      }
    }
    sum = probs.slice(0, n).reduce((a, b) => a + b, 0);
    let r = this.random() * sum;
    for (let i = 0; i < n; i++) {
      r -= probs[i]!;
      if (r <= 0) return kept[i]!;
    }
    return kept[n - 1]!;
  }
}

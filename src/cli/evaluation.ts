/** Held-out evaluation as the train and eval commands run and print it. */
import type { Model } from '../ir/index.js';
import type { EvalResult } from '../runtime/evaluate.js';

/** The vocabulary size from the declared logits type, when static. */
export function vocabSize(model: Model): number | undefined {
  const t = model.graph.outputs[0]?.type;
  if (!t || t.kind !== 'tensor' || !t.shape || t.shape.length !== 3) return undefined;
  return t.shape[2]!.value;
}

export function describeEval(r: EvalResult): string {
  return `loss ${r.loss.toFixed(4)}, perplexity ${r.perplexity.toFixed(2)}, accuracy ${r.accuracy.toFixed(4)} (${r.tokens} tokens)`;
}


/** Held-out evaluation as the train and eval commands run and print it. */
import { type Model, encodeModel } from '../ir/index.js';
import type { TokenBatch } from '../runtime/data.js';
import { type EvalResult, evaluate } from '../runtime/evaluate.js';
import { type ExecutionProviderName, createSession } from '../runtime/execution_provider.js';
import { declaredTypes } from '../runtime/generate.js';

/** The vocabulary size from the declared logits type, when static. */
export function vocabSize(model: Model): number | undefined {
  const t = model.graph.outputs[0]?.type;
  if (!t || t.kind !== 'tensor' || !t.shape || t.shape.length !== 3) return undefined;
  return t.shape[2]!.value;
}

export async function evaluateModel(model: Model, batches: TokenBatch[], ep: ExecutionProviderName): Promise<EvalResult> {
  const { session } = await createSession(encodeModel(model), { ep });
  try {
    return await evaluate(session, declaredTypes(model), batches);
  } finally {
    await session.release();
  }
}

export function describeEval(r: EvalResult): string {
  return `loss ${r.loss.toFixed(4)}, perplexity ${r.perplexity.toFixed(2)}, accuracy ${r.accuracy.toFixed(4)} (${r.tokens} tokens)`;
}


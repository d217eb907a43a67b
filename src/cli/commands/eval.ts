/** `titanize eval MODEL --data FILE --tokenizer tokenizer.json`: held-out loss, perplexity and accuracy. */
import type { Command } from 'commander';
import { loadModel } from '../../node/index.js';
import { evaluationBatches, loadTokens } from '../../runtime/data.js';
import { EXECUTION_PROVIDERS, type ExecutionProviderName } from '../../runtime/execution_provider.js';
import { loadTokenizer } from '../../runtime/tokenizer.js';
import { int, oneOf, positiveInt } from '../args.js';
import type { CliContext } from '../context.js';
import { evaluateModel } from '../../runtime/evaluate.js';
import { describeEval, vocabSize } from '../evaluation.js';

interface EvalCliOptions {
  data: string;
  tokenizer: string;
  seqLen: number;
  batch: number;
  maxWindows?: number;
  ep: ExecutionProviderName;
  json?: boolean;
}

export function addEvalCommand(program: Command, ctx: CliContext): void {
  program
    .command('eval')
    .summary('held-out loss, perplexity and next-token accuracy of a decoder (original or converted)')
    .description(
      'Evaluate a decoder LM on a text file: the text is encoded with --tokenizer and cut into consecutive, ' +
        'non-overlapping windows of --seq-len + 1 tokens from the start; each window predicts its last --seq-len tokens. ' +
        'Prints the mean cross-entropy (natural log), the perplexity and the argmax accuracy. Works for original and converted models alike.',
    )
    .argument('<model>', 'a decoder .onnx model')
    .requiredOption('--data <file>', 'held-out text (UTF-8)')
    .requiredOption('--tokenizer <file>', 'the model’s Hugging Face tokenizer.json')
    .option('--seq-len <n>', 'tokens predicted per window', int('--seq-len', (n) => n >= 1, 'a positive integer'), 128)
    .option('--batch <n>', 'windows per onnxruntime run', positiveInt('--batch'), 8)
    .option('--max-windows <n>', 'evaluate only the first n windows', positiveInt('--max-windows'))
    .option('--ep <provider>', `execution provider: ${EXECUTION_PROVIDERS.join(' | ')}`, oneOf(EXECUTION_PROVIDERS), 'cpu')
    .option('--json', 'print { loss, perplexity, accuracy, tokens, windows } as JSON')
    .addHelpText('after', '\nExample:\n  titanize eval trained.onnx --data held-out.txt --tokenizer tokenizer.json --seq-len 128\n\nExit status: 0 ok, 2 bad input, 1 internal error.')
    .action(async (file: string, opts: EvalCliOptions) => {
      const model = loadModel(file);
      const tokens = loadTokens(opts.data, loadTokenizer(opts.tokenizer), vocabSize(model));
      const batches = evaluationBatches(tokens, opts.batch, opts.seqLen, opts.maxWindows);
      const r = await evaluateModel(model, batches, opts.ep, { verbose: ctx.verbose });
      if (opts.json) ctx.stdout.write(`${JSON.stringify(r)}\n`);
      else ctx.stdout.write(`${describeEval(r)} over ${r.windows} windows of ${opts.seqLen + 1} tokens\n`);
    });
}

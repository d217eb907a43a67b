/** `titanize merge MODEL -o OUT`: fold LoRA adapters back into their weights. */
import type { Command } from 'commander';
import { UserInputError } from '../../ir/index.js';
import { mergeLora } from '../../passes/convert/lora.js';
import type { CliContext } from '../context.js';
import { loadModelForCli } from '../load.js';
import { externalDataOption, saveOutput } from '../output.js';

export function addMergeCommand(program: Command, ctx: CliContext): void {
  program
    .command('merge')
    .summary('fold LoRA adapters into their weights (W += α/r · A·B) and drop them')
    .description(
      'Fold the LoRA adapters that `titanize convert --lora-rank` added (initializers lora.<target>.A / .B) into ' +
        'the projection weights and remove the adapter nodes. The model computes the same function, with fewer nodes. ' +
        'Reads the projection weights (also external ones).',
    )
    .argument('<model>', 'a converted model with LoRA adapters (never modified)')
    .requiredOption('-o, --output <file>', 'where to write the merged model')
    .option('--external-data <mode>', 'weights: keep | inline | FILE (tensors ≥ 1 KiB go to FILE); merged weights are written inline unless FILE is given')
    .option('--json', 'print { output, merged } as JSON')
    .addHelpText('after', '\nExit status: 0 ok, 2 bad input (e.g. no adapters), 1 internal error.')
    .action((file: string, opts: { output: string; externalData?: string; json?: boolean }) => {
      const model = loadModelForCli(file);
      const merged = mergeLora(model);
      if (merged === 0) throw new UserInputError(`${file} has no LoRA adapters to merge`);
      saveOutput(model, file, opts.output, externalDataOption(opts.externalData), { stream: ctx.stderr, json: opts.json });
      if (opts.json) ctx.stdout.write(`${JSON.stringify({ output: opts.output, merged })}\n`);
      else ctx.stdout.write(`merged ${merged} LoRA adapter${merged === 1 ? '' : 's'}; wrote ${opts.output}\n`);
    });
}

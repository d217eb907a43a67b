/** `titanize passes [--json]`: the conversion pipeline, one line per pass. */
import type { Command } from 'commander';
import { convertPipeline } from '../../passes/convert/convert.js';
import type { CliContext } from '../context.js';
import { cliWording } from '../errors.js';
import { columns, wrapForTerminal } from '../report/format.js';

export function addPassesCommand(program: Command, ctx: CliContext): void {
  program
    .command('passes')
    .summary('list the passes of the conversion pipeline, in order')
    .description(
      'List the passes `titanize convert` runs, in order: name, when it runs, and what it does and changes. ' +
        'Your own passes go in with `titanize convert MODEL -o OUT --pass ./my-pass.js [--pass-after NAME]` (an ES module ' +
        'exporting { name, run(model, context) }), or from code: convertPipeline().insertAfter(NAME, pass).run(model, options).',
    )
    .option('--json', 'print [{ name, description, effects, condition, rules }] as JSON (rules: the pattern-engine rules the pass applies, named in the titanize.rule metadata of the nodes they make)')
    .addHelpText('after', '\nExample:\n  titanize passes\n  titanize convert model.onnx -o titan.onnx --pass ./examples/passes/annotate.mjs --pass-after tptt-memory\n\nExit status: 0 ok.')
    .action((opts: { json?: boolean }) => {
      const passes = convertPipeline().passes.map((p) => ({ name: p.name, description: p.description, effects: [...p.effects], condition: p.condition ?? null, rules: [...(p.rules ?? [])] }));
      if (opts.json) {
        ctx.stdout.write(`${JSON.stringify(passes, null, 2)}\n`);
        return;
      }
      const rows = passes.map((p, i) => [String(i + 1), p.name, cliWording(`${p.description}${p.condition ? ` (when ${p.condition})` : ''}; changes ${p.effects.join(', ')}${p.rules.length ? `; rules ${p.rules.join(', ')}` : ''}`)]);
      ctx.stdout.write(`${wrapForTerminal(['conversion pipeline (titanize convert):', ...columns(rows, '  ')], ctx.stdout, 6).join('\n')}\n`);
    });
}

/** `titanize codegen MODEL -o MODULE.ts`: a typed TypeScript module (interfaces and a decoder class) for a decoder model. */
import * as path from 'node:path';
import type { Command } from 'commander';
import { UserInputError } from '../../ir/index.js';
import type { CliContext } from '../context.js';
import { loadModelForCli } from '../load.js';
import { titanizeVersion } from '../main.js';
import { wrapForTerminal } from '../report/format.js';

interface CodegenCliOptions {
  output: string;
  name?: string;
  json?: boolean;
  check?: boolean;
}

export function addCodegenCommand(program: Command, ctx: CliContext): void {
  program
    .command('codegen')
    .summary('write a typed TypeScript module (interfaces and a decoder class) for a decoder model')
    .description(
      'Write a TypeScript module for a decoder model (original KV-cache export or converted state model): interfaces for its ' +
        'inputs, outputs and carried state (names, dtypes, symbolic dims), and a class wrapping an onnxruntime session (node ' +
        'or web: you pass the session and ort.Tensor) with prefill(ids), step(id) and generate(ids, maxNewTokens, { stopTokens, choose, onToken }) (greedy unless you choose), ' +
        'carrying each present output to its past input. Doc comments come from the metadata (producer, the conversion ' +
        'options). Re-running on the same model reproduces the file byte for byte; on a changed model the generated code is ' +
        'rewritten and the code between `// <user-code name="...">` and `// </user-code>` is kept, by name. A file that ' +
        'codegen did not write is never overwritten.',
    )
    .argument('<model>', 'a decoder .onnx file (token ids in, logits out; a KV cache or recurrent state, whatever their names)')
    .requiredOption('-o, --output <file>', 'the module to write or update (.ts, .mts or .cts)')
    .option('--name <Name>', 'the prefix of the declarations (default: the output file name in PascalCase, src/titan.ts → Titan, TitanInputs, TitanState, titanSpec)')
    .option('--json', 'print { output, interfaces, class, state[{input, output, layer, kind, type, dims}], written, changed, userCode } as JSON (with --check: upToDate instead of written)')
    .option('--check', 'write nothing: exit 0 when the module is what codegen would write for this model, 2 (naming what differs) when it is missing or out of date (for CI)')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  titanize convert model.onnx -o titan.onnx && titanize codegen titan.onnx -o src/titan.ts\n' +
        '  titanize codegen titan.onnx -o src/titan.ts --name Titan --json\n' +
        '  titanize codegen titan.onnx -o src/titan.ts --check     # in CI: fails when src/titan.ts no longer matches titan.onnx\n\n' +
        'Then, in your code (onnxruntime-node or onnxruntime-web):\n' +
        "  const titan = new Titan(await ort.InferenceSession.create('titan.onnx'), ort.Tensor);\n" +
        '  const tokens = await titan.generate([1, 17, 42], 20);\n\n' +
        'Exit status: 0 ok, 2 bad input (missing or non-ONNX file, not a decoder language model, a file codegen did not write, ' +
        'a malformed user-code region; with --check, a module that is missing or out of date), 1 internal error.',
    )
    .action(async (file: string, opts: CodegenCliOptions) => {
      const model = loadModelForCli(file);
      // ts-morph (and the TypeScript compiler it bundles) loads only for this command
      const { checkModule, codegen } = await import('../../codegen/index.js');
      const given = { output: opts.output, modelFile: path.basename(file), name: opts.name, version: titanizeVersion() };
      if (opts.check) {
        const c = checkModule(model, given);
        if (opts.json) ctx.stdout.write(`${JSON.stringify({ ...c.summary, changed: c.changed, upToDate: c.upToDate }, null, 2)}\n`);
        if (!c.upToDate) {
          const again = `titanize codegen ${file} -o ${opts.output}${opts.name !== undefined ? ` --name ${opts.name}` : ''}`;
          throw new UserInputError(
            c.missing
              ? `${opts.output} does not exist; write it with \`${again}\``
              : `${opts.output} is out of date with ${file} (${c.changed.join(', ')} differ${c.changed.length === 1 ? 's' : ''}); update it with \`${again}\``,
          );
        }
        if (!opts.json) ctx.stdout.write(`${opts.output} is up to date with ${file}\n`);
        return;
      }
      const s = codegen(model, given);
      if (opts.json) {
        ctx.stdout.write(`${JSON.stringify(s, null, 2)}\n`);
        return;
      }
      const kinds = [...new Set(s.state.map((p) => p.kind))];
      const layers = new Set(s.state.map((p) => p.layer)).size;
      const state = s.state.length ? `${s.state.length} tensors carried (${kinds.join(', ')}; ${layers} layer${layers === 1 ? '' : 's'})` : 'nothing carried (each call recomputes the sequence)';
      const lines = s.written
        ? [
            `wrote ${s.output}: class ${s.class} (prefill, step, generate), interfaces ${s.interfaces.join(', ')}; state: ${state}`,
            ...(s.userCode.length ? [`kept user code: ${s.userCode.join(', ')}`] : []),
            ...(s.userCode.length || s.changed.length < 6 ? [`changed: ${s.changed.join(', ') || 'nothing'}`] : []),
          ]
        : [`${s.output} is up to date (class ${s.class}; state: ${state})`];
      ctx.stdout.write(`${wrapForTerminal(lines, ctx.stdout, 2).join('\n')}\n`);
    });
}

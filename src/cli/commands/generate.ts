/** `titanize generate MODEL`: greedy or sampled decoding with the model's recurrent inputs carried. */
import * as path from 'node:path';
import type { Command } from 'commander';
import type { DecoderIO } from '../../passes/analysis/io.js';
import { InvalidArgumentError } from 'commander';
import { type Model, UserInputError, getMetadata, typeToString } from '../../ir/index.js';
import { loadModel } from '../../node/index.js';
import { EXECUTION_PROVIDERS, type ExecutionProviderName, createSession } from '../../runtime/execution_provider.js';
import { carriedOutputs } from '../../runtime/decoder_state.js';
import { declaredTypes, generate } from '../../runtime/generate.js';
import { loadTokenizer, type TextTokenizer } from '../../runtime/tokenizer.js';
import type { CliContext } from '../context.js';
import { refuseIneffective } from '../args.js';

interface GenerateCliOptions {
  prompt: string[];
  tokenizer?: string;
  ids: string[];
  maxNewTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  stop?: string;
  pad: number;
  ep: ExecutionProviderName;
  epFallback?: boolean;
  json?: boolean;
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}

function idList(v: string, what: string): number[] {
  const ids = v.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  if (!ids.length || ids.some((x) => !Number.isInteger(x) || x < 0)) throw new UserInputError(`${what} '${v}' is not a comma-separated list of token ids`);
  return ids;
}

function number(name: string, check: (n: number) => boolean, rule: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || !check(n)) throw new InvalidArgumentError(`${name} must be ${rule}`);
    return n;
  };
}

export function addGenerateCommand(program: Command, ctx: CliContext): void {
  program
    .command('generate')
    .summary('generate tokens with a decoder (original KV-cache or converted state model)')
    .description(
      'Generate text or token ids with a decoder export. Past inputs and present outputs are paired by the model\'s ' +
        'decoder interface (the KV cache found by attention discovery, or the mapping convert records in the metadata) and ' +
        'carried between steps, starting from zeros: a KV cache (growing) for original exports, a ' +
        'fixed-size LiZA state and window for converted ones. Several --prompt/--ids make a batch (left-padded). Tokens are ' +
        'printed as they come; prefill and decode speed are printed at the end.',
    )
    .argument('<model>', 'a decoder .onnx file (token ids, and optionally a padding mask, positions and a KV cache, whatever their names)')
    .option('--prompt <text>', 'prompt text (repeat for a batch); needs --tokenizer', collect, [])
    .option('--tokenizer <file>', "a Hugging Face tokenizer.json (tokenizer_config.json beside it is read too)")
    .option('--ids <list>', 'prompt token ids, e.g. 1,2,3 (repeat for a batch)', collect, [])
    .option('--max-new-tokens <n>', 'tokens to generate per row', number('--max-new-tokens', (n) => Number.isInteger(n) && n >= 1, 'a positive integer'), 20)
    .option('--temperature <t>', 'sampling temperature; 0 = greedy', number('--temperature', (n) => n >= 0, '>= 0'), 0)
    .option('--top-k <k>', 'sample among the k most likely tokens (0 = all)', number('--top-k', (n) => Number.isInteger(n) && n >= 0, 'a non-negative integer'), 0)
    .option('--top-p <p>', 'sample among the most likely tokens reaching probability p', number('--top-p', (n) => n > 0 && n <= 1, 'in (0, 1]'), 1)
    .option('--seed <n>', 'seed of the sampler', number('--seed', Number.isInteger, 'an integer'), 0)
    .option('--stop <ids>', 'stop a row when it emits one of these token ids, e.g. 0,2')
    .option('--pad <id>', 'token id used for left padding', number('--pad', (n) => Number.isInteger(n) && n >= 0, 'a non-negative integer'), 0)
    .option('--ep <provider>', `execution provider: ${EXECUTION_PROVIDERS.join(' | ')}`, (v) => {
      if (!EXECUTION_PROVIDERS.includes(v as ExecutionProviderName)) throw new InvalidArgumentError(`expected one of ${EXECUTION_PROVIDERS.join(', ')}`);
      return v as ExecutionProviderName;
    }, 'cpu')
    .option('--ep-fallback', 'use the CPU when the requested provider is unavailable (with a warning) instead of failing')
    .option('--json', 'print one JSON object at the end ({ tokens, text?, stats }) instead of streaming')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  titanize generate titan.onnx --ids 1,17,42 --max-new-tokens 32\n' +
        '  titanize generate titan.onnx --tokenizer tokenizer.json --prompt "Once upon" --temperature 0.8 --top-p 0.9 --seed 7\n\n' +
        'Exit status: 0 ok, 2 bad input (missing tokenizer, unavailable provider, malformed ids), 1 internal error.',
    )
    .action(async (file: string, opts: GenerateCliOptions, cmd: Command) => {
      const greedy = 'with --temperature 0 (the default) decoding is greedy: give --temperature > 0 to sample';
      refuseIneffective(cmd, [
        { option: 'topK', when: opts.temperature === 0, why: greedy },
        { option: 'topP', when: opts.temperature === 0, why: greedy },
        { option: 'seed', when: opts.temperature === 0, why: greedy },
        { option: 'pad', when: opts.prompt.length + opts.ids.length === 1, why: 'it left-pads the rows of a batch, and there is one prompt' },
      ]);
      if (opts.prompt.length && opts.ids.length) throw new UserInputError('give either --prompt or --ids, not both');
      if (!opts.prompt.length && !opts.ids.length) throw new UserInputError('nothing to generate from: give --prompt TEXT (with --tokenizer) or --ids 1,2,3');
      if (opts.prompt.length && !opts.tokenizer) throw new UserInputError('--prompt needs --tokenizer tokenizer.json (or pass token ids with --ids)');
      const tokenizer: TextTokenizer | undefined = opts.tokenizer ? loadTokenizer(opts.tokenizer) : undefined;
      const prompts = opts.prompt.length ? opts.prompt.map((p) => tokenizer!.encode(p)) : opts.ids.map((v) => idList(v, '--ids'));
      if (prompts.some((p) => p.length === 0)) throw new UserInputError('a prompt encodes to no tokens');
      const model = loadModel(file);
      const types = declaredTypes(model);
      checkDecoderLm(file, model, types.io, prompts, opts);
      const { session, ep } = await createSession(file, {
        ep: opts.ep,
        // on a GPU the state and KV cache stay in device memory from step to step
        keepOnDevice: carriedOutputs(types.io),
        fallback: opts.epFallback,
        verbose: ctx.verbose,
        onFallback: (m) => ctx.stderr.write(`titanize: warning: ${m}\n`),
      });
      try {
        const random = getMetadata(model.metadataProps, RANDOM_WEIGHTS_KEY);
        if (random !== undefined && !opts.json) ctx.stderr.write(`titanize: note: ${path.basename(file)} has random weights (${random}): the generated text is meaningless\n`);
        const g = generate(session, types, prompts, {
          maxNewTokens: opts.maxNewTokens,
          temperature: opts.temperature,
          topK: opts.topK,
          topP: opts.topP,
          seed: opts.seed,
          stopTokens: opts.stop ? idList(opts.stop, '--stop') : [],
          padToken: opts.pad,
        });
        const single = prompts.length === 1;
        // on a terminal, control characters in generated text would move the cursor, recolour
        // or clear it: they are shown escaped (\x1B); piped output stays byte-exact
        const show = (text: string): string => (ctx.stdout.isTTY ? escapeControls(text) : text);
        let shown = '';
        const generated: number[] = [];
        if (!opts.json) {
          if (single && tokenizer) ctx.stdout.write(opts.prompt[0]!);
          for await (const step of g.steps) {
            if (!single) continue;
            if (!step.active[0] && generated.length && step.tokens[0] === opts.pad) continue;
            generated.push(step.tokens[0]!);
            if (tokenizer) {
              const text = tokenizer.decode(generated);
              ctx.stdout.write(show(text.slice(shown.length)));
              shown = text;
            } else ctx.stdout.write(`${generated.length > 1 ? ' ' : ''}${step.tokens[0]}`);
          }
        }
        const { tokens, stats } = await g.result;
        if (opts.json) {
          ctx.stdout.write(`${JSON.stringify({ ep, prompts, tokens, ...(tokenizer ? { text: tokens.map((t) => tokenizer.decode(t)) } : {}), stats })}\n`);
          return;
        }
        if (!single) {
          tokens.forEach((row, b) => ctx.stdout.write(`[${b}] ${tokenizer ? show(`${opts.prompt[b]}${tokenizer.decode(row)}`) : row.join(' ')}\n`));
        } else ctx.stdout.write('\n');
        ctx.stderr.write(
          `prefill: ${stats.promptTokens} tokens in ${stats.prefillMs.toFixed(1)} ms (${stats.prefillTokensPerSecond.toFixed(1)} tokens/s); ` +
            `decode: ${stats.newTokens} tokens, ${stats.decodeTokensPerSecond.toFixed(1)} tokens/s (${ep})\n`,
        );
      } finally {
        await session.release();
      }
    });
}

/**
 * Metadata key that test fixtures with untrained weights carry (written by the fixture
 * scripts in tools/; its value says what the model is), so that `generate` can say why
 * their text is noise.
 */
export const RANDOM_WEIGHTS_KEY = 'titanize.random_weights';

const INTEGER_INPUT = /^u?int\d+\b/;

/** Refuses, before any run, a model that is not a decoder LM and ids outside its vocabulary. */
function checkDecoderLm(file: string, model: Model, io: DecoderIO, prompts: number[][], opts: GenerateCliOptions): void {
  const name = path.basename(file);
  if (!io.tokens) throw new UserInputError(`${name} has no token-ids input (an integer input indexing an embedding table): it is not a language model`);
  if (io.vocab === null) {
    throw new UserInputError(`${name} is not a decoder LM: its output '${io.logits ?? '?'}' is not logits over its token vocabulary (an encoder has nothing to sample from)`);
  }
  // every input without a default must be one generate makes: ids, mask, positions, token types, carried state
  const fed = new Set([io.tokens, io.mask, io.positions, io.tokenTypes, ...io.pairs.map((p) => p.input)]);
  const unfed = model.graph.inputs.filter((v) => !v.initializer && !fed.has(v.name));
  if (unfed.length) {
    const shown = unfed.map((v) => `'${v.name}' (${typeToString(v.type)})`).join(', ');
    throw new UserInputError(
      `${name} needs input${unfed.length > 1 ? 's' : ''} ${shown} that generate cannot make: it feeds token ids, the attention mask, positions, ` +
        `token types and the model's own cache or recurrent state${unfed.some((v) => !INTEGER_INPUT.test(typeToString(v.type))) ? ' (an encoder-decoder\'s decoder needs its encoder\'s output: run it from your own code)' : ''}`,
    );
  }
  const vocab = io.vocab;
  if (vocab === undefined) return;
  const ids = [...prompts.flat(), ...(opts.stop ? idList(opts.stop, '--stop') : []), opts.pad];
  const bad = ids.find((t) => t < 0 || t >= vocab);
  if (bad !== undefined) throw new UserInputError(`token id ${bad} is outside the vocabulary of ${name} (${vocab} ids: 0-${vocab - 1})`);
}

/** Control characters (C0 but newline and tab, DEL, C1) as visible \xNN escapes. */
export function escapeControls(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`);
}

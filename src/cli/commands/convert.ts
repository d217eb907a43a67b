/** `titanize convert MODEL -o OUT`: every softmax attention becomes MaG(softmax, LiZA). */
import type { Command } from 'commander';
import { LIZA_RULES, type LizaRule } from '../../ops/index.js';
import { type ConvertReport, convertPipeline } from '../../passes/convert/convert.js';
import { CONVERT_TARGETS, type ConvertTarget, parseLayers } from '../../passes/convert/options.js';
import { int, num, oneOf, refuseIneffective } from '../args.js';
import type { CliContext } from '../context.js';
import { cliWording } from '../errors.js';
import { loadModelForCli } from '../load.js';
import { loadUserPass } from '../user_pass.js';
import { externalDataOption, saveOutput } from '../output.js';
import { progress } from '../progress.js';
import { columns, formatCount, wrapForTerminal } from '../report/format.js';

interface ConvertCliOptions {
  output: string;
  rule: LizaRule;
  order?: number;
  mu: number;
  window?: number;
  loraRank?: number;
  loraAlpha?: number;
  loraTargets?: 'attention' | 'all';
  layers?: string;
  target: ConvertTarget;
  chunkSize: number;
  maxSeqLen: number;
  seed: number;
  externalData?: string;
  verify: boolean;
  cross?: boolean;
  strict?: boolean;
  pass?: string[];
  crossState?: boolean;
  passAfter?: string;
  json?: boolean;
}

/** Where `--pass` passes go by default: after the rewrites, before cleanup and lowering. */
const DEFAULT_PASS_AFTER = 'lora';

export function addConvertCommand(program: Command, ctx: CliContext): void {
  program
    .command('convert')
    .summary('turn every softmax attention into MaG(softmax, LiZA) (a Titans model)')
    .description(
      'Convert a Transformer export into a TPTT "Titans" model: each softmax self-attention keeps its weights ' +
        'and gains a linear-attention memory (ai.tptt.LiZA) mixed in by a gate μ (ai.tptt.MaG) ahead of the ' +
        'unchanged output projection. μ = 0 reproduces the original model, μ = 1 is purely linear (the softmax ' +
        'branch is removed). Defaults follow TPTT: rule delta_product, order 2, μ 0.5.',
    )
    .argument('<model>', 'the .onnx file to convert (never modified)')
    .requiredOption('-o, --output <file>', 'where to write the converted model')
    .option('--rule <rule>', `memory rule: ${LIZA_RULES.join(' | ')}`, oneOf(LIZA_RULES), 'delta_product')
    .option('--order <n>', 'Householder steps per token for the *_product rules (default 2)', int('--order'))
    .option('--mu <x>', 'initial gate μ in [0, 1], one trainable value per layer', num('--mu'), 0.5)
    .option('--window <L>', 'sliding window: the softmax branch sees only the last L tokens', int('--window'))
    .option('--lora-rank <r>', 'add LoRA adapters of rank r on the q, k, v and output projections', int('--lora-rank'))
    .option('--lora-alpha <a>', 'LoRA scale numerator (delta scaled by alpha / rank; default = rank)', num('--lora-alpha'))
    .option('--lora-targets <which>', "attention (q, k, v, output projections; default) | all (also every other internal MatMul/Gemm with its own 2-D weight, e.g. MLPs)", oneOf(['attention', 'all'] as const))
    .option('--layers <list>', 'convert only these attention layers, e.g. 0,2-5 (default all)')
    .option('--target <target>', `lowering: ort (com.microsoft.LinearAttention) | portable (standard-op functions) | onnx27 (LinearAttention, opset 27)`, oneOf(CONVERT_TARGETS), 'ort')
    .option('--chunk-size <c>', 'LiZA chunk size (results do not depend on it)', int('--chunk-size'), 64)
    .option('--max-seq-len <n>', 'most tokens per call the portable function body supports', int('--max-seq-len'), 32768)
    .option('--seed <n>', 'seed for the LoRA initialisation', int('--seed'), 0)
    .option('--external-data <mode>', 'weights: keep (as the input has them; copied beside the output when saved elsewhere) | inline | FILE (tensors ≥ 1 KiB go to FILE)')
    .option('--cross', 'also convert cross-attention: a memory over the encoder side, read by every query (by default cross-attention stays softmax attention)')
    .option('--cross-state', 'with --cross: compute each cross memory\'s states once per encoder output (exported beside the cross keys as …encoder.memory, read as an input by a graph with cached cross keys)')
    .option('--strict', 'refuse layers whose mask or bias (relative position bias, window masks, ALiBi) the linear branch cannot express')
    .option('--pass <file>', 'run your own pass (an ES module exporting { name, run(model, context) }) in the pipeline; repeatable (see titanize passes)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--pass-after <name>', `the pipeline pass after which --pass passes run (default ${DEFAULT_PASS_AFTER})`)
    .option('--no-verify', 'skip the model verification after each pass')
    .option('--json', 'print the conversion report as one JSON object')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  titanize convert model.onnx -o titan.onnx\n' +
        '  titanize convert model.onnx -o titan.onnx --rule gated_delta_product --order 3 --mu 1\n' +
        '  titanize convert model.onnx -o titan.onnx --window 512 --lora-rank 8 --lora-alpha 16 --layers 4-11\n\n' +
        'JSON report (--json): { output, options, sites[{layer, form, kind, numHeads, numKvHeads, headDim, causal, liza, mag, mu, mask}], ' +
        'skipped[{layer, reason}], rejected[{node, reason}], windows, lora[{target, a, b, rank, scale}], parametersAdded, ' +
        'opsUsed{op: count}, lowering, nodesBefore, nodesAfter, passes }.\n\n' +
        'Exit status: 0 ok, 2 bad input or options (also: a model converted before), 1 internal error.',
    )
    .action(async (file: string, opts: ConvertCliOptions, cmd: Command) => {
      refuseIneffective(cmd, [
        { option: 'seed', when: opts.loraRank === undefined, why: 'it seeds the LoRA initialisation, and without --lora-rank no LoRA is added' },
        { option: 'passAfter', when: !opts.pass?.length, why: 'it places the passes given with --pass, and there are none' },
      ]);
      const pipeline = convertPipeline();
      let after = opts.passAfter ?? DEFAULT_PASS_AFTER;
      for (const f of opts.pass ?? []) {
        const p = await loadUserPass(f);
        pipeline.insertAfter(after, p);
        after = p.name;
      }
      const model = loadModelForCli(file);
      const externalData = externalDataOption(opts.externalData);
      let bar: ReturnType<typeof progress> | undefined;
      const { report } = pipeline.run(model, {
        rule: opts.rule,
        order: opts.order,
        mu: opts.mu,
        window: opts.window,
        loraRank: opts.loraRank,
        loraAlpha: opts.loraAlpha,
        loraTargets: opts.loraTargets,
        layers: opts.layers === undefined ? undefined : parseLayers(opts.layers),
        target: opts.target,
        chunkSize: opts.chunkSize,
        maxSeqLen: opts.maxSeqLen,
        seed: opts.seed,
        verify: opts.verify,
        cross: opts.cross,
        crossState: opts.crossState,
        strict: opts.strict,
        onProgress: (done, total) => {
          bar ??= progress(ctx.stderr, total, 'converting', { json: opts.json });
          bar.update(done);
        },
      });
      bar?.done();
      saveOutput(model, file, opts.output, externalData, { stream: ctx.stderr, json: opts.json });
      // (the reasons in the flags' words, as everything the command prints)
      if (opts.json) ctx.stdout.write(`${JSON.stringify({ output: opts.output, ...report, skipped: report.skipped.map((s) => ({ ...s, reason: cliWording(s.reason) })) }, null, 2)}\n`);
      else ctx.stdout.write(`${wrapForTerminal(renderConvert(report, opts.output), ctx.stdout).join('\n')}\n`);
    });
}

export function renderConvert(r: ConvertReport, output: string): string[] {
  const o = r.options;
  const lines = [
    `converted ${r.sites.length} attention layer${r.sites.length === 1 ? '' : 's'}: rule ${o.rule}${o.rule.endsWith('_product') ? ` (order ${o.order})` : ''}, μ ${o.mu}, target ${o.target}` +
      (o.window ? `, window ${o.window}` : '') +
      (o.loraRank ? `, LoRA rank ${o.loraRank}` : ''),
    ...columns(
      [
        ['layer', 'form', 'heads', 'kv', 'dim', 'attention', 'μ'],
        ...r.sites.map((s) => [String(s.layer), s.form, String(s.numHeads), String(s.numKvHeads), String(s.headDim), s.kind === 'cross' ? 'cross' : s.causal ? 'causal' : 'bidirectional', s.mu ?? '(linear only)']),
      ],
      '  ',
    ),
  ];
  for (const s of r.sites) for (const x of s.ignored) lines.push(`  layer ${s.layer}: the linear branch ignores ${x} (kept on the softmax branch; --strict refuses)`);
  for (const s of r.skipped) lines.push(`  skipped layer ${s.layer}: ${cliWording(s.reason)}`);
  for (const w of r.windows) lines.push(`  window ${cliWording(w)}`);
  lines.push(`parameters added: ${formatCount(r.parametersAdded)}${r.lora.length ? ` (${r.lora.length} LoRA adapters)` : ''}`);
  const custom = Object.entries(r.opsUsed).filter(([k]) => k.includes('::')).map(([k, n]) => `${k} ×${n}`);
  lines.push(`ops: ${custom.join(', ') || 'standard ops only'}${r.lowering ? '' : ''}`);
  lines.push(`nodes: ${formatCount(r.nodesBefore)} → ${formatCount(r.nodesAfter)}`);
  lines.push(`wrote ${output}`);
  return lines;
}

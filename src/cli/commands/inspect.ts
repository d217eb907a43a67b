/** `titanize inspect MODEL [--json]`: what is in an ONNX file, without reading its weights. */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { loadModelForCli } from '../load.js';
import {
  type ExtendedInspectReport,
  INSPECT_JSON_KEYS,
  type InspectSection,
  inspectReport,
} from '../report/inspect_report.js';
import { wrapForTerminal } from '../report/format.js';
import { renderInspectText } from '../report/inspect_text.js';
import { type AttentionReport, attentionReport, discoverAttention, renderAttention } from '../../passes/attention/index.js';
import { inferShapes } from '../../passes/analysis/shapes.js';
import type { Model } from '../../ir/index.js';

/**
 * HOOK(inspect --attention): optional report sections, each behind its own flag.
 * Attention discovery adds its section here, e.g.
 *   { name: 'attention', description: 'list the attention blocks found', jsonDoc: ..., compute, render }
 * which gives `inspect --attention`, `report.attention` in --json, and text after the base report.
 */
export const INSPECT_SECTIONS: InspectSection<any>[] = [
  {
    name: 'attention',
    description: 'list the attention sites found (one line each) and why every other Softmax is not attention',
    jsonDoc: '{ sites, rejected, shared }: attention sites (layer, form, heads, head dim, scale, mask, past/present, projections) and rejected candidates with reasons',
    compute: (model) => attentionReport(discoverAttention(model)),
    render: (report: AttentionReport, options) => renderAttention(report, options),
  },
  {
    name: 'shapes',
    description: 'infer the shape of every value (symbolic dims over the inputs\' dimension names)',
    jsonDoc: '{ values: { name: "[batch, sequence, 64]" }, inferred, symbolic, unknownRank }: the shape of every node output',
    compute: (model) => shapesReport(model),
    render: (r: ShapesReport) => renderShapes(r),
  },
];

interface ShapesReport {
  values: Record<string, string>;
  /** Values whose dims are all determined by the inputs' dims (no fresh symbol). */
  inferred: number;
  /** Values with at least one dim no rule determines. */
  symbolic: number;
  unknownRank: number;
}

function shapesReport(model: Model): ShapesReport {
  const shapes = inferShapes(model);
  const inputSymbols = new Set<string>();
  for (const v of model.graph.inputs) {
    const t = v.type;
    if (t?.kind === 'tensor' && t.shape) for (const d of t.shape) if (d.param) inputSymbols.add(d.param);
  }
  const r: ShapesReport = { values: {}, inferred: 0, symbolic: 0, unknownRank: 0 };
  for (const n of model.graph) {
    for (const o of n.outputs) {
      if (!o.name) continue;
      const dims = shapes.shape(o);
      r.values[o.name] = shapes.describe(o);
      if (!dims) r.unknownRank++;
      else if (dims.every((d) => d.symbols().every((x) => inputSymbols.has(x)))) r.inferred++;
      else r.symbolic++;
    }
  }
  return r;
}

function renderShapes(r: ShapesReport): string[] {
  const total = r.inferred + r.symbolic + r.unknownRank;
  return [`Shapes: ${total} values: ${r.inferred} determined by the input dims, ${r.symbolic} with dims no rule determines, ${r.unknownRank} of unknown rank (--json lists them)`];
}

export interface InspectOptions {
  json?: boolean;
  [section: string]: unknown;
}

function jsonKeysHelp(sections: readonly InspectSection<any>[]): string {
  const rows: [string, string][] = [...INSPECT_JSON_KEYS, ...sections.map((s): [string, string] => [s.name, `${s.jsonDoc} (with --${kebab(s.name)})`])];
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, d]) => `  ${k.padEnd(width)}  ${d}`).join('\n');
}

function kebab(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** Adds `inspect` to `program`; `sections` defaults to INSPECT_SECTIONS (tests pass their own). */
export function addInspectCommand(program: Command, ctx: CliContext, sections: readonly InspectSection<any>[] = INSPECT_SECTIONS): void {
  const cmd = program
    .command('inspect')
    .summary('summarize an ONNX model (inputs, ops, parameters, external data)')
    .description(
      'Summarize an ONNX model: IR version, producer, opsets, graph inputs and outputs, node counts ' +
        'per op type, initializers and parameter count, external data files, functions, metadata. ' +
        'Weights are never read (external data files are only stat-ed), so this is fast on large models.',
    )
    .argument('<model>', 'path to the .onnx file')
    .option('--json', 'print one JSON object instead of text');
  for (const s of sections) cmd.option(`--${kebab(s.name)}`, s.description);
  cmd.addHelpText(
    'after',
    `\nJSON report (--json): one object with these keys:\n${jsonKeysHelp(sections)}\n\n` +
      'Exit status: 0 ok, 2 bad input (missing file, not ONNX, unsafe or missing external data), 1 internal error.',
  );
  cmd.action(async (file: string, opts: InspectOptions) => {
    const model = loadModelForCli(file);
    const report = inspectReport(model, file, { fileSize: fs.statSync(file).size }) as ExtendedInspectReport;
    const extra: string[] = [];
    for (const s of sections) {
      if (!opts[s.name]) continue;
      const value = await s.compute(model);
      report[s.name] = value;
      extra.push(...s.render(value, { verbose: ctx.verbose }));
    }
    if (opts.json) {
      ctx.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    } else {
      const lines = renderInspectText(report);
      if (extra.length) lines.push(...extra);
      ctx.stdout.write(`${wrapForTerminal(lines, ctx.stdout).join('\n')}\n`);
    }
  });
}

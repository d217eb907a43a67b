/** Text rendering of the `inspect` report (the JSON form is the report object itself). */
import { columns, formatBytes, formatCount } from './format.js';
import type { InspectReport, ValueReport } from './inspect_report.js';

/** How many op types the text form lists before summarizing the rest. */
const MAX_OPS = 40;

function domainName(d: string): string {
  return d === '' ? 'ai.onnx' : d;
}

function valueRows(values: ValueReport[]): string[][] {
  return values.map((v) => [v.name, v.type]);
}

/** Renders the report as lines (no trailing newline). Extra sections are appended by the caller. */
export function renderInspectText(r: InspectReport): string[] {
  const out: string[] = [];
  const field = (k: string, v: string): void => void out.push(`${k.padEnd(14)}${v}`);

  field('file', `${r.file} (${formatBytes(r.fileSize)})`);
  field('ir version', String(r.irVersion));
  field('producer', [r.producerName, r.producerVersion].filter((s) => s !== '').join(' ') || '(none)');
  field('opset', r.opsetImports.map((o) => `${domainName(o.domain)} ${o.version}`).join(', ') || '(none)');

  out.push(`inputs (${r.inputs.length})`);
  out.push(...columns(valueRows(r.inputs), '  '));
  if (r.initializerInputCount > 0) {
    out.push(`  (+ ${r.initializerInputCount} input${r.initializerInputCount === 1 ? '' : 's'} backed by initializers)`);
  }
  out.push(`outputs (${r.outputs.length})`);
  out.push(...columns(valueRows(r.outputs), '  '));

  out.push(`nodes (${formatCount(r.nodeCount)})`);
  const shown = r.opCounts.slice(0, MAX_OPS);
  out.push(...columns(shown.map((o) => [o.op, formatCount(o.count)]), '  '));
  if (r.opCounts.length > shown.length) {
    const rest = r.opCounts.slice(MAX_OPS);
    out.push(`  ... ${rest.length} more op types (${formatCount(rest.reduce((n, o) => n + o.count, 0))} nodes)`);
  }

  field(
    'initializers',
    `${formatCount(r.initializerCount)} (${formatCount(r.parameterCount)} parameters, ${formatBytes(r.initializerBytes)})`,
  );

  if (r.externalData.length === 0) field('external data', 'none');
  else {
    out.push(`external data (${r.externalData.length} file${r.externalData.length === 1 ? '' : 's'})`);
    out.push(
      ...columns(
        r.externalData.map((e) => [
          e.location,
          `${formatCount(e.tensors)} tensor${e.tensors === 1 ? '' : 's'}`,
          `${formatBytes(e.bytes)} referenced`,
          e.fileSize === null ? '(missing)' : `file ${formatBytes(e.fileSize)}`,
        ]),
        '  ',
      ),
    );
  }

  if (r.functions.length === 0) field('functions', 'none');
  else {
    out.push(`functions (${r.functions.length})`);
    out.push(
      ...columns(
        r.functions.map((f) => [`${f.domain}::${f.name}${f.overload ? `::${f.overload}` : ''}`, `${formatCount(f.nodeCount)} nodes`]),
        '  ',
      ),
    );
  }

  field('metadata', r.metadataKeys.length === 0 ? 'none' : r.metadataKeys.join(', '));
  return out;
}

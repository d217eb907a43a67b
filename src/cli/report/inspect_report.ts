/**
 * The `titanize inspect` report: a JSON-able summary of a model computed from the graph
 * alone. No weight is read: sizes come from `Tensor.byteLength` (dims × type, or the
 * external data `length` entry), never from the external data files.
 *
 * Keys are stable and camelCase; `reportVersion` changes when a key changes meaning or
 * disappears (adding keys does not change it). Rendering as text lives in inspect_text.ts.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  DataType,
  type Model,
  type TypeInfo,
  type Value,
  allGraphs,
  allTensors,
  dataTypeName,
  externalDataSourceOf,
  typeToString,
  walkNodes,
} from '../../ir/index.js';
import { externalFile } from '../../node/index.js';

export const INSPECT_REPORT_VERSION = 1;

export interface ValueReport {
  name: string;
  /** `typeToString` form, e.g. "int64[batch_size, sequence_length]". */
  type: string;
  /** Element type name (e.g. "FLOAT", "INT64"), or null for non-tensor / unknown types. */
  elemType: string | null;
  /** Dims: number = fixed, string = symbolic, null = unknown; the whole field is null when the rank is unknown. */
  shape: (number | string | null)[] | null;
}

export interface OpsetReport {
  /** '' is the default ONNX domain (ai.onnx), as written in the file. */
  domain: string;
  version: number;
}

export interface OpCountReport {
  /** Op type; prefixed `domain::` when not in the default ONNX domain. */
  op: string;
  count: number;
}

export interface ExternalDataFileReport {
  /** Path as written in the model, relative to the model's folder (normalized). */
  location: string;
  tensors: number;
  /** Bytes the tensors reference in that file. */
  bytes: number;
  /** Size of the file on disk (stat only), or null when it cannot be stat'ed. */
  fileSize: number | null;
}

export interface FunctionReport {
  domain: string;
  name: string;
  overload: string;
  nodeCount: number;
}

export interface InspectReport {
  reportVersion: number;
  /** The path as given. */
  file: string;
  /** Size of the .onnx file in bytes (not counting external data). */
  fileSize: number;
  irVersion: number;
  producerName: string;
  producerVersion: string;
  opsetImports: OpsetReport[];
  /** Graph inputs that are not initializers. */
  inputs: ValueReport[];
  outputs: ValueReport[];
  /** Graph inputs backed by an initializer (an overridable default, old exporters). */
  initializerInputCount: number;
  /** Nodes of the main graph and of its If/Loop/Scan subgraphs (not function bodies). */
  nodeCount: number;
  /** Nodes per op type over the same nodes, most frequent first (ties by name). */
  opCounts: OpCountReport[];
  /** Initializers of the main graph and of its subgraphs. */
  initializerCount: number;
  /** Elements of the floating-point initializers (float, double, float16, bfloat16, float8/4 types). */
  parameterCount: number;
  /** Bytes of all initializers (any type), from dims and type; nothing is read. */
  initializerBytes: number;
  /** External data files referenced by any tensor (initializers and tensor attributes), in first-use order. */
  externalData: ExternalDataFileReport[];
  /** Model-local functions. */
  functions: FunctionReport[];
  /** Keys of the model's metadata_props, in file order. */
  metadataKeys: string[];
}

/** Keys of the JSON report with a one-line description each (used in `inspect --help`). */
export const INSPECT_JSON_KEYS: ReadonlyArray<[string, string]> = [
  ['reportVersion', `schema version of this report (${INSPECT_REPORT_VERSION})`],
  ['file', 'the model path as given'],
  ['fileSize', 'bytes of the .onnx file (external data not included)'],
  ['irVersion', 'ONNX IR version'],
  ['producerName, producerVersion', 'the exporter that wrote the file'],
  ['opsetImports', "[{domain, version}]; domain '' is the default ONNX domain"],
  ['inputs, outputs', '[{name, type, elemType, shape}]; shape dims are number | string (symbolic) | null (unknown); shape null = unknown rank'],
  ['initializerInputCount', 'graph inputs backed by an initializer (not listed in inputs)'],
  ['nodeCount', 'nodes, including those in If/Loop/Scan subgraphs'],
  ['opCounts', "[{op, count}] most frequent first; op is 'domain::Op' outside the default domain"],
  ['initializerCount', 'initializers (main graph and subgraphs)'],
  ['parameterCount', 'elements of floating-point initializers'],
  ['initializerBytes', 'bytes of all initializers (from dims and type; nothing is read)'],
  ['externalData', '[{location, tensors, bytes, fileSize}] per external data file'],
  ['functions', '[{domain, name, overload, nodeCount}] model-local functions'],
  ['metadataKeys', 'keys of metadata_props'],
];

const FLOAT_TYPES: ReadonlySet<DataType> = new Set([
  DataType.FLOAT,
  DataType.DOUBLE,
  DataType.FLOAT16,
  DataType.BFLOAT16,
  DataType.FLOAT8E4M3FN,
  DataType.FLOAT8E4M3FNUZ,
  DataType.FLOAT8E5M2,
  DataType.FLOAT8E5M2FNUZ,
  DataType.FLOAT8E8M0,
  DataType.FLOAT4E2M1,
]);

export function isFloatingPoint(t: DataType): boolean {
  return FLOAT_TYPES.has(t);
}

export function opKey(opType: string, domain: string): string {
  return domain === '' || domain === 'ai.onnx' ? opType : `${domain}::${opType}`;
}

function valueReport(v: Value): ValueReport {
  const t: TypeInfo | undefined = v.type;
  let elemType: string | null = null;
  let shape: (number | string | null)[] | null = null;
  if (t && (t.kind === 'tensor' || t.kind === 'sparse_tensor')) {
    elemType = dataTypeName(t.elemType);
    shape = t.shape ? t.shape.map((d) => (d.value !== undefined ? d.value : d.param !== undefined ? d.param : null)) : null;
  }
  return { name: v.name, type: typeToString(t), elemType, shape };
}

/**
 * An optional part of the `inspect` report behind its own flag: the extension point for
 * `inspect --attention` (attention discovery, src/passes). A section adds the option
 * `--<name>` to `inspect`, its value goes into the JSON report under the key `<name>`, and
 * its text lines are appended after the base report. See INSPECT_SECTIONS in
 * src/cli/commands/inspect.ts.
 */
export interface InspectSection<T = unknown> {
  /** Option and JSON key, camelCase, e.g. 'attention' (→ `--attention`, `report.attention`). */
  name: string;
  /** Help text of the option. */
  description: string;
  /** One line for the JSON key list in `inspect --help`. */
  jsonDoc: string;
  /** Computes the section (JSON-able). Must not read weights unless the flag says so. */
  compute(model: Model): T | Promise<T>;
  /** Text lines for the section (`verbose`: the full details, as with --verbose). */
  render(value: T, options: { verbose?: boolean }): string[];
}

/** The base report plus any enabled sections, keyed by section name. */
export type ExtendedInspectReport = InspectReport & Record<string, unknown>;

export interface InspectReportOptions {
  /** Size of the model file; stat'ed from `file` when not given. */
  fileSize?: number;
}

/**
 * Computes the report. Reads nothing but the model object (and, unless given, stats the
 * model file and each external data file: sizes only, never contents).
 */
export function inspectReport(model: Model, file: string, options: InspectReportOptions = {}): InspectReport {
  const g = model.graph;

  const inputs: ValueReport[] = [];
  let initializerInputCount = 0;
  for (const v of g.inputs) {
    if (v.isInitializer()) initializerInputCount++;
    else inputs.push(valueReport(v));
  }

  let nodeCount = 0;
  const ops = new Map<string, number>();
  for (const n of walkNodes(g)) {
    nodeCount++;
    const k = opKey(n.opType, n.domain);
    ops.set(k, (ops.get(k) ?? 0) + 1);
  }
  const opCounts = [...ops.entries()]
    .map(([op, count]) => ({ op, count }))
    .sort((a, b) => b.count - a.count || (a.op < b.op ? -1 : a.op > b.op ? 1 : 0));

  let initializerCount = 0;
  let parameterCount = 0;
  let initializerBytes = 0;
  for (const graph of allGraphs(model)) {
    if (graph.root !== g) continue; // function bodies (and their subgraphs)
    for (const v of graph.initializers.values()) {
      const t = v.initializer!;
      initializerCount++;
      initializerBytes += t.byteLength;
      if (isFloatingPoint(t.dataType)) parameterCount += t.size;
    }
  }

  const external = new Map<string, ExternalDataFileReport & { abs: string }>();
  for (const t of allTensors(model)) {
    if (t.storage.kind !== 'external') continue;
    const ref = t.storage.ref;
    const location = path.normalize(ref.location);
    const file = externalFile(ref);
    const abs = file ?? `${ref.baseDir ?? ''}\0${location}`;
    let e = external.get(abs);
    if (!e) {
      e = { location, tensors: 0, bytes: 0, fileSize: file === undefined ? (externalDataSourceOf(ref)?.size?.(ref.location) ?? null) : null, abs };
      external.set(abs, e);
    }
    e.tensors++;
    e.bytes += ref.length ?? t.byteLength;
  }
  const externalData: ExternalDataFileReport[] = [...external.values()].map(({ abs, ...rest }) => ({
    ...rest,
    fileSize: rest.fileSize ?? statSize(abs),
  }));

  return {
    reportVersion: INSPECT_REPORT_VERSION,
    file,
    fileSize: options.fileSize ?? statSize(file) ?? 0,
    irVersion: model.irVersion,
    producerName: model.producerName,
    producerVersion: model.producerVersion,
    opsetImports: [...model.opsetImports.entries()].map(([domain, version]) => ({ domain, version })),
    inputs,
    outputs: g.outputs.map(valueReport),
    initializerInputCount,
    nodeCount,
    opCounts,
    initializerCount,
    parameterCount,
    initializerBytes,
    externalData,
    functions: model.functions.map((f) => ({ domain: f.domain, name: f.name, overload: f.overload, nodeCount: f.body.size })),
    metadataKeys: model.metadataProps.map((e) => e.key),
  };
}

function statSize(file: string): number | null {
  try {
    return fs.statSync(file).size;
  } catch {
    return null;
  }
}

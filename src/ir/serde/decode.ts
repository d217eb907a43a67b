/**
 * Wire → IR. The only direction that reads protobuf messages. Names are resolved in two
 * phases per graph (first every value a graph defines, then node inputs), so a file whose
 * nodes are not in topological order still decodes, and subgraphs see their outer scope.
 */
import { onnx } from './generated/onnx_pb.js';
import { type Attribute, AttributeType, type OpaqueProto } from '../attribute.js';
import { DataType, byteSize, dataTypeName, isKnownDataType } from '../dtype.js';
import { SerdeError, UserInputError } from '../errors.js';
import { type ExternalDataSource, parseExternalData, resolveExternalDataSource } from '../external_data.js';
import { IRFunction } from '../function.js';
import { Graph } from '../graph.js';
import type { StringStringEntry } from '../metadata.js';
import { Model } from '../model.js';
import { Node } from '../node.js';
import { Tensor, type TensorStorage } from '../tensor.js';
import type { Dim, TypeInfo } from '../types.js';
import { Value } from '../value.js';
import { fromLong, fromLongBig, fromLongNumber } from './long.js';
import { recordDefaults } from './presence.js';

/** Proto2 presence: decoded messages hold only the fields that were on the wire as own properties. */
const hasOwn = (o: object, k: string): boolean => Object.prototype.hasOwnProperty.call(o, k);

export interface DecodeOptions {
  /**
   * Folder external data paths are relative to (the model file's folder). Without
   * `externalData`, the default source reads the files there (installed by the Node layer;
   * none in a browser). In Node, undefined means the current folder.
   */
  baseDir?: string;
  /**
   * Where external tensors' bytes come from: the Node file source, `bytesSource`,
   * `blobSource`, or your own. Nothing is read while decoding.
   */
  externalData?: ExternalDataSource;
  /** Label for error messages (usually the file path). */
  source?: string;
}

/** Decodes a serialized ModelProto; raw tensor data stays a view into `bytes`. */
export function decodeModel(bytes: Uint8Array, options: DecodeOptions = {}): Model {
  const source = options.source ?? 'model';
  let proto: onnx.ModelProto;
  try {
    proto = onnx.ModelProto.decode(bytes);
  } catch (e) {
    throw new SerdeError(`${source} is not a valid ONNX model (protobuf decoding failed: ${(e as Error).message})`, { cause: e });
  }
  if (!proto.graph && !hasOwn(proto, 'irVersion')) {
    throw new SerdeError(`${source} is not an ONNX model (no graph and no ir_version)`);
  }
  try {
    const external = resolveExternalDataSource(options.externalData, options.baseDir);
    return new Decoder(options.baseDir ?? external?.baseDir, external, source).model(proto);
  } catch (e) {
    if (e instanceof UserInputError) throw e;
    // malformed content (a dimension beyond 2^53, duplicate names, ...) is bad input too
    throw new SerdeError(`${source} is not a valid ONNX model: ${(e as Error).message}`, { cause: e });
  }
}

type Scope = Map<string, Value>;

class Decoder {
  constructor(
    private readonly baseDir: string | undefined,
    private readonly external: ExternalDataSource | undefined,
    private readonly source: string,
  ) {}

  model(p: onnx.ModelProto): Model {
    const opsets = new Map<string, number>();
    for (const o of p.opsetImport) opsets.set(o.domain ?? '', fromLongNumber(o.version as never, 'opset version'));
    const graph = p.graph ? this.graph(p.graph, []) : new Graph('');
    const m = new Model({ graph, opsetImports: opsets, irVersion: fromLongNumber(p.irVersion as never, 'ir_version') });
    recordDefaults(m, p, MODEL_FIELDS);
    m.producerName = p.producerName;
    m.producerVersion = p.producerVersion;
    m.domain = p.domain;
    m.modelVersion = fromLong(p.modelVersion as never);
    m.docString = p.docString;
    m.metadataProps = entries(p.metadataProps);
    m.trainingInfo = p.trainingInfo as OpaqueProto[];
    m.configuration = p.configuration as OpaqueProto[];
    m.functions = p.functions.map((f) => this.function(f as onnx.FunctionProto));
    m.baseDir = this.baseDir;
    m.externalData = this.external;
    if (!p.graph) m.presentFields.add('no-graph');
    // opset entries with a default domain written explicitly keep that presence
    opsetPresence.set(m, p.opsetImport.map((o) => hasOwn(o, 'domain')));
    return m;
  }

  function(p: onnx.FunctionProto): IRFunction {
    const body = new Graph(p.name);
    const scope: Scope = new Map();
    for (const name of p.input) body.addInput(this.define(scope, name));
    const fn = new IRFunction(p.domain, p.name, body);
    recordDefaults(fn, p, FUNCTION_FIELDS);
    fn.overload = p.overload;
    fn.docString = p.docString;
    fn.metadataProps = entries(p.metadataProps);
    fn.attributes = p.attribute.slice();
    fn.attributeProtos = p.attributeProto.map((a) => this.attribute(a as onnx.AttributeProto, [scope]));
    for (const o of p.opsetImport) fn.opsetImports.set(o.domain ?? '', fromLongNumber(o.version as never, 'opset version'));
    opsetPresence.set(fn, p.opsetImport.map((o) => hasOwn(o, 'domain')));
    this.nodes(body, p.node as onnx.NodeProto[], scope, []);
    body.setOutputs(p.output.map((n) => this.lookup(n, [scope])));
    body.valueInfo = p.valueInfo.map((vi) => this.valueInfo(vi as onnx.ValueInfoProto, [scope]));
    return fn;
  }

  graph(p: onnx.IGraphProto, outer: Scope[]): Graph {
    const g = new Graph(p.name ?? '');
    recordDefaults(g, p, NAME_DOC_FIELDS);
    g.docString = p.docString ?? '';
    g.metadataProps = entries(p.metadataProps ?? []);
    const scope: Scope = new Map();
    const chain = [scope, ...outer];
    for (const t of p.initializer ?? []) {
      const tensor = this.tensor(t as onnx.TensorProto);
      const v = new Value(tensor.name);
      v.initializer = tensor;
      scope.set(tensor.name, v);
      g.addInitializer(v);
    }
    for (const vi of p.input ?? []) {
      const v = scope.get(vi.name ?? '') ?? this.define(scope, vi.name ?? '');
      this.applyValueInfo(v, vi as onnx.ValueInfoProto);
      g.addInput(v);
    }
    this.nodes(g, (p.node ?? []) as onnx.NodeProto[], scope, outer);
    g.setOutputs(
      (p.output ?? []).map((vi) => {
        const v = this.lookup(vi.name ?? '', chain);
        this.applyValueInfo(v, vi as onnx.ValueInfoProto);
        return v;
      }),
    );
    g.valueInfo = (p.valueInfo ?? []).map((vi) => this.valueInfo(vi as onnx.ValueInfoProto, chain));
    g.sparseInitializers = (p.sparseInitializer ?? []) as OpaqueProto[];
    g.quantizationAnnotation = (p.quantizationAnnotation ?? []) as OpaqueProto[];
    return g;
  }

  /** Phase 1 defines every node output in `scope`; phase 2 wires inputs and decodes attributes. */
  private nodes(g: Graph, protos: onnx.NodeProto[], scope: Scope, outer: Scope[]): void {
    const chain = [scope, ...outer];
    const built: Node[] = [];
    for (const p of protos) {
      const outputs = p.output.map((name) => (name === '' ? new Value('') : this.define(scope, name)));
      const n = new Node({ opType: p.opType, domain: p.domain, overload: p.overload, name: p.name, outputs, docString: p.docString });
      recordDefaults(n, p, NODE_FIELDS);
      if (p.metadataProps.length) n.metadataProps = entries(p.metadataProps);
      if (p.deviceConfigurations.length) n.extra = { deviceConfigurations: p.deviceConfigurations };
      built.push(n);
    }
    protos.forEach((p, i) => {
      const n = built[i]!;
      for (const name of p.input) n.appendInput(name === '' ? null : this.lookup(name, chain));
      for (const a of p.attribute) {
        const attr = this.attribute(a as onnx.AttributeProto, chain);
        n.attributes.set(attr.name, attr);
      }
      g.append(n);
    });
  }

  private define(scope: Scope, name: string): Value {
    const v = new Value(name);
    scope.set(name, v);
    return v;
  }

  /** Resolves a name through the scope chain; unknown names become detached values (verify reports them). */
  private lookup(name: string, chain: Scope[]): Value {
    for (const s of chain) {
      const v = s.get(name);
      if (v) return v;
    }
    const v = new Value(name);
    chain[0]!.set(name, v);
    return v;
  }

  private valueInfo(p: onnx.ValueInfoProto, chain: Scope[]): Value {
    const v = this.lookup(p.name, chain);
    this.applyValueInfo(v, p);
    return v;
  }

  private applyValueInfo(v: Value, p: onnx.ValueInfoProto): void {
    if (p.type) v.type = this.type(p.type as onnx.TypeProto);
    v.docString = p.docString;
    if (p.metadataProps.length) v.metadataProps = entries(p.metadataProps);
    recordDefaults(v, p, NAME_DOC_FIELDS);
    if (!p.type) noTypeValues.add(v);
  }

  type(p: onnx.TypeProto): TypeInfo {
    let t: TypeInfo;
    if (p.tensorType) t = { kind: 'tensor', elemType: p.tensorType.elemType ?? 0, ...this.shape(p.tensorType) };
    else if (p.sparseTensorType) t = { kind: 'sparse_tensor', elemType: p.sparseTensorType.elemType ?? 0, ...this.shape(p.sparseTensorType) };
    else if (p.sequenceType) t = { kind: 'sequence', ...(p.sequenceType.elemType ? { elem: this.type(p.sequenceType.elemType as onnx.TypeProto) } : {}) };
    else if (p.mapType) t = { kind: 'map', keyType: p.mapType.keyType ?? 0, ...(p.mapType.valueType ? { value: this.type(p.mapType.valueType as onnx.TypeProto) } : {}) };
    else if (p.optionalType) t = { kind: 'optional', ...(p.optionalType.elemType ? { elem: this.type(p.optionalType.elemType as onnx.TypeProto) } : {}) };
    else if (p.opaqueType) t = { kind: 'opaque', domain: p.opaqueType.domain ?? '', name: p.opaqueType.name ?? '' };
    else t = { kind: 'unset' };
    if (hasOwn(p, 'denotation')) t.denotation = p.denotation;
    return t;
  }

  private shape(p: { shape?: onnx.ITensorShapeProto | null }): { shape?: Dim[] } {
    if (!p.shape) return {};
    return {
      shape: (p.shape.dim ?? []).map((d) => {
        const dim: Dim = {};
        if (d.dimValue !== undefined && d.dimValue !== null && hasOwn(d, 'dimValue')) {
          dim.value = fromLongNumber(d.dimValue as never, 'dimension');
        } else if (d.dimParam !== undefined && d.dimParam !== null && hasOwn(d, 'dimParam')) {
          dim.param = d.dimParam;
        }
        if (hasOwn(d, 'denotation')) dim.denotation = d.denotation ?? '';
        return dim;
      }),
    };
  }

  tensor(p: onnx.TensorProto): Tensor {
    const name = p.name;
    if (!isKnownDataType(p.dataType)) {
      throw new SerdeError(`${this.source}: tensor '${name}' has unknown data type ${p.dataType}`);
    }
    const dims = p.dims.map((d) => fromLongNumber(d as never, `tensor '${name}' dimension`));
    if (dims.some((d) => d < 0)) throw new SerdeError(`${this.source}: tensor '${name}' has a negative dimension [${dims.join(', ')}]`);
    const storage = this.storage(p, name);
    if (storage.kind === 'raw' && p.dataType !== DataType.STRING) {
      const want = byteSize(p.dataType as DataType, dims.reduce((a, x) => a * x, 1));
      if (storage.bytes.byteLength !== want) {
        throw new SerdeError(
          `${this.source}: tensor '${name}' has ${storage.bytes.byteLength} bytes of raw data, but ${dataTypeName(p.dataType)}[${dims.join(', ')}] needs ${want}`,
        );
      }
    }
    const t = new Tensor({ name, dataType: p.dataType as DataType, dims, storage });
    recordDefaults(t, p, TENSOR_FIELDS);
    t.docString = p.docString;
    if (p.metadataProps.length) t.metadataProps = entries(p.metadataProps);
    if (p.segment) t.segment = { begin: fromLongNumber(p.segment.begin as never, 'segment'), end: fromLongNumber(p.segment.end as never, 'segment') };
    return t;
  }

  private storage(p: onnx.TensorProto, name: string): TensorStorage {
    if (p.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) {
      const ref = parseExternalData(entries(p.externalData), this.baseDir, name, this.external);
      return { kind: 'external', ref };
    }
    if (hasOwn(p, 'rawData')) return { kind: 'raw', bytes: p.rawData };
    if (p.floatData.length) return { kind: 'float', values: p.floatData };
    if (p.int32Data.length) return { kind: 'int32', values: p.int32Data };
    if (p.int64Data.length) return { kind: 'int64', values: p.int64Data.map((x) => fromLongBig(x as never)) };
    if (p.doubleData.length) return { kind: 'double', values: p.doubleData };
    if (p.uint64Data.length) return { kind: 'uint64', values: p.uint64Data.map((x) => fromLongBig(x as never)) };
    if (p.stringData.length) return { kind: 'string', values: p.stringData };
    if (p.externalData.length) {
      // external_data entries without data_location=EXTERNAL: keep them verbatim
      return { kind: 'external', ref: parseExternalData(entries(p.externalData), this.baseDir, name, this.external) };
    }
    return { kind: 'empty' };
  }

  attribute(p: onnx.AttributeProto, chain: Scope[]): Attribute {
    let type = p.type as number as AttributeType;
    const typeUnset = !hasOwn(p, 'type') || type === AttributeType.UNDEFINED;
    if (typeUnset) type = inferAttributeType(p);
    const a = { name: p.name, type, value: this.attributeValue(p, type, chain) } as Attribute;
    if (hasOwn(p, 'docString')) a.docString = p.docString;
    if (hasOwn(p, 'refAttrName')) a.refAttrName = p.refAttrName;
    if (typeUnset) a.typeUnset = true;
    // scalar fields written with defaults (e.g. f: 0 alongside type INT) are kept
    recordDefaults(a, p, ATTRIBUTE_SCALARS);
    return a;
  }

  private attributeValue(p: onnx.AttributeProto, type: AttributeType, chain: Scope[]): Attribute['value'] {
    switch (type) {
      case AttributeType.FLOAT:
        return p.f;
      case AttributeType.INT:
        return fromLong(p.i as never);
      case AttributeType.STRING:
        return p.s;
      case AttributeType.TENSOR:
        return this.tensor(p.t as onnx.TensorProto);
      case AttributeType.GRAPH:
        return this.graph(p.g as onnx.GraphProto, chain);
      case AttributeType.SPARSE_TENSOR:
        return p.sparseTensor as OpaqueProto;
      case AttributeType.TYPE_PROTO:
        return this.type(p.tp as onnx.TypeProto);
      case AttributeType.FLOATS:
        return p.floats.slice();
      case AttributeType.INTS:
        return p.ints.map((x) => fromLong(x as never));
      case AttributeType.STRINGS:
        return p.strings;
      case AttributeType.TENSORS:
        return p.tensors.map((t) => this.tensor(t as onnx.TensorProto));
      case AttributeType.GRAPHS:
        return p.graphs.map((g) => this.graph(g, chain));
      case AttributeType.SPARSE_TENSORS:
        return p.sparseTensors as OpaqueProto[];
      case AttributeType.TYPE_PROTOS:
        return p.typeProtos.map((t) => this.type(t as onnx.TypeProto));
      default:
        return undefined;
    }
  }
}

const MODEL_FIELDS = ['irVersion', 'producerName', 'producerVersion', 'domain', 'modelVersion', 'docString'] as const;
const FUNCTION_FIELDS = ['name', 'domain', 'overload', 'docString'] as const;
const NAME_DOC_FIELDS = ['name', 'docString'] as const;
const NODE_FIELDS = ['name', 'opType', 'domain', 'overload', 'docString'] as const;
const TENSOR_FIELDS = ['name', 'dataType', 'docString', 'dataLocation'] as const;
const ATTRIBUTE_SCALARS = ['f', 'i', 's'] as const;

/** Old files may omit AttributeProto.type; infer it from the populated field. */
function inferAttributeType(p: onnx.AttributeProto): AttributeType {
  const has = (f: string): boolean => hasOwn(p, f);
  if (has('f')) return AttributeType.FLOAT;
  if (has('i')) return AttributeType.INT;
  if (has('s')) return AttributeType.STRING;
  if (p.t) return AttributeType.TENSOR;
  if (p.g) return AttributeType.GRAPH;
  if (p.sparseTensor) return AttributeType.SPARSE_TENSOR;
  if (p.tp) return AttributeType.TYPE_PROTO;
  if (p.floats.length) return AttributeType.FLOATS;
  if (p.ints.length) return AttributeType.INTS;
  if (p.strings.length) return AttributeType.STRINGS;
  if (p.tensors.length) return AttributeType.TENSORS;
  if (p.graphs.length) return AttributeType.GRAPHS;
  if (p.sparseTensors.length) return AttributeType.SPARSE_TENSORS;
  if (p.typeProtos.length) return AttributeType.TYPE_PROTOS;
  return AttributeType.UNDEFINED;
}

function entries(list: readonly onnx.IStringStringEntryProto[]): StringStringEntry[] {
  return list.map((e) => ({ key: e.key ?? '', value: e.value ?? '' }));
}

/** Per model/function: whether each opset_import entry spelled out its (default) domain. */
export const opsetPresence = new WeakMap<object, boolean[]>();
/** Values whose ValueInfoProto carried no type. */
export const noTypeValues = new WeakSet<Value>();

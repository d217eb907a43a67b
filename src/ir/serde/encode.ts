/**
 * IR → wire. Builds plain message objects holding only the fields to write (non-default
 * values, plus defaults that the source file spelled out), so an untouched model encodes
 * to the same bytes it was read from.
 */
import { onnx } from './generated/onnx_pb.js';
import { type Attribute, AttributeType } from '../attribute.js';
import { SerdeError } from '../errors.js';
import type { IRFunction } from '../function.js';
import type { Graph } from '../graph.js';
import type { StringStringEntry } from '../metadata.js';
import type { Model } from '../model.js';
import type { Node } from '../node.js';
import type { Tensor } from '../tensor.js';
import type { TypeInfo } from '../types.js';
import type { Value } from '../value.js';
import { noTypeValues, opsetPresence } from './decode.js';
import { toLong } from './long.js';
import { refEntries } from '../external_data.js';
import { wasPresent } from './presence.js';

/** Decides how a tensor's data is written. Return entries to write it as external data. */
export type ExternalizeHook = (tensor: Tensor) => StringStringEntry[] | undefined;

export interface EncodeOptions {
  externalize?: ExternalizeHook;
}

type Obj = Record<string, unknown>;

export function encodeModel(model: Model, options: EncodeOptions = {}): Uint8Array {
  const msg = new Encoder(options).model(model);
  try {
    return onnx.ModelProto.encode(msg as onnx.IModelProto).finish();
  } catch (e) {
    throw new SerdeError(`cannot encode model: ${(e as Error).message}`, { cause: e });
  }
}

/** Sets `key` when the value is non-default or was present in the source. */
function put(o: Obj, src: object, key: string, v: unknown, isDefault: boolean): void {
  if (!isDefault || wasPresent(src, key)) o[key] = v;
}

function str(o: Obj, src: object, key: string, v: string | undefined): void {
  put(o, src, key, v ?? '', !v);
}

class Encoder {
  constructor(private readonly options: EncodeOptions) {}

  model(m: Model): Obj {
    const o: Obj = {};
    put(o, m, 'irVersion', toLong(m.irVersion), m.irVersion === 0);
    o.opsetImport = this.opsets(m.opsetImports, opsetPresence.get(m));
    str(o, m, 'producerName', m.producerName);
    str(o, m, 'producerVersion', m.producerVersion);
    str(o, m, 'domain', m.domain);
    put(o, m, 'modelVersion', toLong(m.modelVersion), m.modelVersion === 0 || m.modelVersion === 0n);
    str(o, m, 'docString', m.docString);
    if (!m.presentFields.has('no-graph')) o.graph = this.graph(m.graph);
    o.metadataProps = entries(m.metadataProps);
    o.trainingInfo = m.trainingInfo;
    o.functions = m.functions.map((f) => this.function(f));
    o.configuration = m.configuration;
    return o;
  }

  private opsets(map: Map<string, number>, presence: boolean[] | undefined): Obj[] {
    return [...map.entries()].map(([domain, version], i) => {
      const e: Obj = { version: toLong(version) };
      if (domain !== '' || presence?.[i]) e.domain = domain;
      return e;
    });
  }

  function(f: IRFunction): Obj {
    const o: Obj = {};
    str(o, f, 'name', f.name);
    o.input = f.body.inputs.map((v) => v.name);
    o.output = f.body.outputs.map((v) => v.name);
    o.attribute = f.attributes.slice();
    o.attributeProto = f.attributeProtos.map((a) => this.attribute(a));
    o.node = this.nodes(f.body);
    str(o, f, 'docString', f.docString);
    o.opsetImport = this.opsets(f.opsetImports, opsetPresence.get(f));
    str(o, f, 'domain', f.domain);
    str(o, f, 'overload', f.overload);
    o.valueInfo = this.valueInfos(f.body);
    o.metadataProps = entries(f.metadataProps);
    return o;
  }

  graph(g: Graph): Obj {
    const o: Obj = {};
    o.node = this.nodes(g);
    str(o, g, 'name', g.name);
    o.initializer = [...g.initializers.values()].map((v) => this.tensor(v.initializer!));
    str(o, g, 'docString', g.docString);
    o.input = g.inputs.map((v) => this.valueInfo(v));
    o.output = g.outputs.map((v) => this.valueInfo(v));
    o.valueInfo = this.valueInfos(g);
    o.quantizationAnnotation = g.quantizationAnnotation;
    o.sparseInitializer = g.sparseInitializers;
    o.metadataProps = entries(g.metadataProps);
    return o;
  }

  /** value_info entries, minus those whose value left the graph since decoding. */
  private valueInfos(g: Graph): Obj[] {
    return g.valueInfo
      .filter((v) => !(v.producer && v.producer.graph === null))
      .map((v) => this.valueInfo(v));
  }

  private nodes(g: Graph): Obj[] {
    const out: Obj[] = [];
    for (const n of g) out.push(this.node(n));
    return out;
  }

  private node(n: Node): Obj {
    const o: Obj = {};
    o.input = n.inputs.map((v) => (v ? v.name : ''));
    o.output = n.outputs.map((v) => v.name);
    str(o, n, 'name', n.name);
    str(o, n, 'opType', n.opType);
    o.attribute = [...n.attributes.values()].map((a) => this.attribute(a));
    str(o, n, 'docString', n.docString);
    str(o, n, 'domain', n.domain);
    str(o, n, 'overload', n.overload);
    o.metadataProps = entries(n.metadataProps);
    if (n.extra?.deviceConfigurations) o.deviceConfigurations = n.extra.deviceConfigurations;
    return o;
  }

  private valueInfo(v: Value): Obj {
    const o: Obj = {};
    str(o, v, 'name', v.name);
    if (v.type && !noTypeValues.has(v)) o.type = this.type(v.type);
    str(o, v, 'docString', v.docString);
    o.metadataProps = entries(v.metadataProps);
    return o;
  }

  type(t: TypeInfo): Obj {
    const o: Obj = {};
    switch (t.kind) {
      case 'tensor':
        o.tensorType = { elemType: t.elemType, ...shape(t.shape) };
        break;
      case 'sparse_tensor':
        o.sparseTensorType = { elemType: t.elemType, ...shape(t.shape) };
        break;
      case 'sequence':
        o.sequenceType = t.elem ? { elemType: this.type(t.elem) } : {};
        break;
      case 'map':
        o.mapType = { keyType: t.keyType, ...(t.value ? { valueType: this.type(t.value) } : {}) };
        break;
      case 'optional':
        o.optionalType = t.elem ? { elemType: this.type(t.elem) } : {};
        break;
      case 'opaque':
        o.opaqueType = { ...(t.domain ? { domain: t.domain } : {}), ...(t.name ? { name: t.name } : {}) };
        break;
      default:
        break;
    }
    if (t.denotation !== undefined) o.denotation = t.denotation;
    return o;
  }

  tensor(t: Tensor): Obj {
    const o: Obj = {};
    o.dims = t.dims.map((d) => toLong(d));
    put(o, t, 'dataType', t.dataType, t.dataType === 0);
    if (t.segment) o.segment = { begin: toLong(t.segment.begin), end: toLong(t.segment.end) };
    str(o, t, 'name', t.name);
    str(o, t, 'docString', t.docString);
    o.metadataProps = entries(t.metadataProps);
    const external = this.options.externalize?.(t);
    if (external) {
      o.externalData = entries(external);
      o.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
      return o;
    }
    const s = t.storage;
    switch (s.kind) {
      case 'raw':
        o.rawData = s.bytes;
        break;
      case 'float':
        o.floatData = s.values;
        break;
      case 'int32':
        o.int32Data = s.values;
        break;
      case 'double':
        o.doubleData = s.values;
        break;
      case 'int64':
        o.int64Data = s.values.map((x) => toLong(x));
        break;
      case 'uint64':
        o.uint64Data = s.values.map((x) => toLong(x, true));
        break;
      case 'string':
        o.stringData = s.values;
        break;
      case 'external':
        o.externalData = entries(refEntries(s.ref));
        o.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
        return o;
      case 'empty':
        break;
    }
    put(o, t, 'dataLocation', 0, true);
    return o;
  }

  attribute(a: Attribute): Obj {
    const o: Obj = { name: a.name };
    if (a.refAttrName !== undefined) o.refAttrName = a.refAttrName;
    if (a.docString !== undefined) o.docString = a.docString;
    if (!a.typeUnset) o.type = a.type;
    switch (a.type) {
      case AttributeType.FLOAT:
        put(o, a, 'f', a.value, a.value === 0 && !Object.is(a.value, -0));
        break;
      case AttributeType.INT:
        put(o, a, 'i', toLong(a.value), a.value === 0 || a.value === 0n);
        break;
      case AttributeType.STRING:
        put(o, a, 's', a.value, a.value.byteLength === 0);
        break;
      case AttributeType.TENSOR:
        o.t = this.tensor(a.value);
        break;
      case AttributeType.GRAPH:
        o.g = this.graph(a.value);
        break;
      case AttributeType.SPARSE_TENSOR:
        o.sparseTensor = a.value;
        break;
      case AttributeType.TYPE_PROTO:
        o.tp = this.type(a.value);
        break;
      case AttributeType.FLOATS:
        o.floats = a.value;
        break;
      case AttributeType.INTS:
        o.ints = a.value.map((x) => toLong(x));
        break;
      case AttributeType.STRINGS:
        o.strings = a.value;
        break;
      case AttributeType.TENSORS:
        o.tensors = a.value.map((t) => this.tensor(t));
        break;
      case AttributeType.GRAPHS:
        o.graphs = a.value.map((g) => this.graph(g));
        break;
      case AttributeType.SPARSE_TENSORS:
        o.sparseTensors = a.value;
        break;
      case AttributeType.TYPE_PROTOS:
        o.typeProtos = a.value.map((t) => this.type(t));
        break;
      default:
        break;
    }
    // defaults of the other scalar fields that the source spelled out
    if (a.type !== AttributeType.FLOAT && wasPresent(a, 'f')) o.f = 0;
    if (a.type !== AttributeType.INT && wasPresent(a, 'i')) o.i = toLong(0);
    if (a.type !== AttributeType.STRING && wasPresent(a, 's')) o.s = new Uint8Array(0);
    return o;
  }
}

function shape(dims: TypeInfo extends never ? never : { value?: number; param?: string; denotation?: string }[] | undefined): Obj {
  if (!dims) return {};
  return {
    shape: {
      dim: dims.map((d) => {
        const o: Obj = {};
        if (d.value !== undefined) o.dimValue = toLong(d.value);
        else if (d.param !== undefined) o.dimParam = d.param;
        if (d.denotation !== undefined) o.denotation = d.denotation;
        return o;
      }),
    },
  };
}

function entries(list: readonly StringStringEntry[]): Obj[] {
  return list.map((e) => ({ key: e.key, value: e.value }));
}

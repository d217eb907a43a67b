/** Models: the main graph plus everything around it (opsets, functions, metadata). */
import type { OpaqueProto } from './attribute.js';
import { IrError } from './errors.js';
import { type IRFunction, functionId } from './function.js';
import { Graph } from './graph.js';
import type { ExternalDataSource } from './external_data.js';
import type { StringStringEntry } from './metadata.js';

export class Model {
  irVersion: number;
  /** Opset version per domain ('' is the default ONNX domain); insertion order is kept. */
  opsetImports: Map<string, number>;
  producerName = '';
  producerVersion = '';
  domain = '';
  modelVersion: number | bigint = 0;
  docString = '';
  metadataProps: StringStringEntry[] = [];
  graph: Graph;
  functions: IRFunction[] = [];
  /** Uninterpreted parts of ModelProto, carried through untouched. */
  trainingInfo: OpaqueProto[] = [];
  configuration: OpaqueProto[] = [];
  /** Folder that external data paths are relative to (set when loaded from a file). */
  baseDir: string | undefined;
  /**
   * Where the external data of the tensors read with the model come from (set by
   * `decodeModel`; pass it on when decoding a copy: `decodeModel(encodeModel(m), { baseDir:
   * m.baseDir, externalData: m.externalData })`).
   */
  externalData: ExternalDataSource | undefined;
  /** Which ModelProto scalar fields were present in the file (so absent ones stay absent). */
  presentFields = new Set<string>();

  constructor(init: { graph?: Graph; irVersion?: number; opsetImports?: Record<string, number> | Map<string, number> } = {}) {
    this.graph = init.graph ?? new Graph('main');
    this.graph.model = this;
    this.irVersion = init.irVersion ?? 10;
    this.opsetImports =
      init.opsetImports instanceof Map ? init.opsetImports : new Map(Object.entries(init.opsetImports ?? { '': 17 }));
  }

  /** The opset version of `domain` ('' or 'ai.onnx' for the default domain). */
  opsetVersion(domain: string): number | undefined {
    if (domain === 'ai.onnx') return this.opsetImports.get('') ?? this.opsetImports.get('ai.onnx');
    return this.opsetImports.get(domain) ?? (domain === '' ? this.opsetImports.get('ai.onnx') : undefined);
  }

  /** Imports `domain` at `version`; refuses to silently change an existing import. */
  requireOpset(domain: string, version: number): void {
    const have = this.opsetVersion(domain);
    if (have === undefined) this.opsetImports.set(domain, version);
    else if (have < version) {
      throw new IrError(
        `the model imports ${domain || 'ai.onnx'} opset ${have}, but version ${version} is needed; ` +
          'upgrade the model with a version converter first',
      );
    }
  }

  findFunction(domain: string, name: string, overload = ''): IRFunction | undefined {
    const id = functionId(domain, name, overload);
    return this.functions.find((f) => f.id === id);
  }

  addFunction(fn: IRFunction): void {
    if (this.findFunction(fn.domain, fn.name, fn.overload)) {
      throw new IrError(`the model already has a function ${fn.id}`);
    }
    this.functions.push(fn);
  }
}

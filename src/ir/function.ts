/** Model-local functions (FunctionProto): a named body graph callable as an op of a custom domain. */
import type { Attribute } from './attribute.js';
import { Graph } from './graph.js';
import type { StringStringEntry } from './metadata.js';

export class IRFunction {
  domain: string;
  name: string;
  overload = '';
  docString = '';
  metadataProps: StringStringEntry[] = [];
  /** Names of attributes the caller may set, without defaults. */
  attributes: string[] = [];
  /** Attributes with default values (FunctionProto.attribute_proto). */
  attributeProtos: Attribute[] = [];
  /** Opsets the body uses; ordered. */
  opsetImports = new Map<string, number>();
  /** Inputs, outputs and nodes of the function. value_info lives in body.valueInfo. */
  readonly body: Graph;

  constructor(domain: string, name: string, body?: Graph) {
    this.domain = domain;
    this.name = name;
    this.body = body ?? new Graph(name);
    this.body.function = this;
  }

  /** The identifier ONNX uses to resolve a call: (domain, name, overload). */
  get id(): string {
    return functionId(this.domain, this.name, this.overload);
  }
}

export function functionId(domain: string, name: string, overload = ''): string {
  return `${domain}::${name}${overload ? `::${overload}` : ''}`;
}

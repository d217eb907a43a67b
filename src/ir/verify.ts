/**
 * Structural verification: dangling values, order/cycles, duplicate names, missing
 * opset imports, functions that are called but not defined. Collects every problem
 * and names the node and op for each.
 */
import { VerificationError, describeNode } from './errors.js';
import { functionId } from './function.js';
import type { Graph } from './graph.js';
import type { Model } from './model.js';
import type { Node } from './node.js';
import type { Value } from './value.js';

export function verifyModel(model: Model): void {
  const problems = collectProblems(model);
  if (problems.length) throw new VerificationError(problems);
}

export function collectProblems(model: Model): string[] {
  const problems: string[] = [];
  const functionIds = new Set(model.functions.map((f) => f.id));
  checkGraph(model.graph, [], model.opsetImports, functionIds, problems, 'main graph');
  for (const f of model.functions) {
    if (!hasDomain(model.opsetImports, f.domain)) {
      problems.push(`function ${f.id}: the model does not import its domain '${f.domain}'`);
    }
    checkGraph(f.body, [], f.opsetImports, functionIds, problems, `function ${f.id}`);
  }
  return problems;
}

function hasDomain(opsets: Map<string, number>, domain: string): boolean {
  if (domain === '' || domain === 'ai.onnx') return opsets.has('') || opsets.has('ai.onnx');
  return opsets.has(domain);
}

function checkGraph(
  graph: Graph,
  outer: Set<Value>[],
  opsets: Map<string, number>,
  functionIds: Set<string>,
  problems: string[],
  where: string,
): void {
  const defined = new Set<Value>();
  const names = new Map<string, string>();
  const outerNames = (name: string): boolean => outer.some((s) => [...s].some((v) => v.name === name));
  const define = (v: Value, what: string): void => {
    defined.add(v);
    if (!v.name) {
      problems.push(`${where}: ${what} has an empty name`);
      return;
    }
    const prev = names.get(v.name);
    if (prev) problems.push(`${where}: name '${v.name}' is defined twice (${prev} and ${what})`);
    else if (outer.length && outerNames(v.name)) problems.push(`${where}: ${what} '${v.name}' shadows a name of an enclosing graph`);
    names.set(v.name, what);
  };
  for (const v of graph.inputs) define(v, 'graph input');
  for (const v of graph.initializers.values()) if (!defined.has(v)) define(v, 'initializer');
  const visible = (v: Value): boolean => defined.has(v) || outer.some((s) => s.has(v));

  for (const n of graph) {
    n.inputs.forEach((v, i) => {
      if (!v) return;
      if (visible(v)) return;
      if (v.producer && v.producer.graph === graph) {
        problems.push(`${where}: ${describeNode(n)} reads '${v.name}' (input ${i}) before ${describeNode(v.producer)} produces it (order or cycle)`);
      } else if (v.producer && !v.producer.graph) {
        problems.push(`${where}: ${describeNode(n)} reads '${v.name}' (input ${i}) whose producer ${describeNode(v.producer)} was removed`);
      } else {
        problems.push(`${where}: ${describeNode(n)} reads '${v.name}' (input ${i}), which nothing in scope defines`);
      }
    });
    checkDomain(n, opsets, functionIds, problems, where);
    const scope = [...outer, defined];
    for (const s of n.subgraphs()) {
      checkGraph(s, scope, opsets, functionIds, problems, `${where} > subgraph '${s.name}' of ${describeNode(n)}`);
    }
    n.outputs.forEach((o, i) => {
      if (o.name === '') return; // omitted optional output
      if (o.producer !== n || o.producerIndex !== i) problems.push(`${where}: ${describeNode(n)} output ${i} has a stale producer link`);
      define(o, `output of ${describeNode(n)}`);
    });
  }
  for (const v of graph.outputs) {
    if (!visible(v)) problems.push(`${where}: graph output '${v.name}' is not produced by any node in scope`);
  }
}

function checkDomain(n: Node, opsets: Map<string, number>, functionIds: Set<string>, problems: string[], where: string): void {
  if (!hasDomain(opsets, n.domain)) {
    problems.push(
      `${where}: ${describeNode(n)} uses domain '${n.domain || 'ai.onnx'}', which is not in the opset imports; add it with model.requireOpset()`,
    );
  }
  const isStd = n.domain === '' || n.domain === 'ai.onnx' || n.domain === 'com.microsoft' || n.domain === 'ai.onnx.ml' || n.domain === 'ai.onnx.preview.training';
  if (!isStd && functionIds.size && !functionIds.has(functionId(n.domain, n.opType, n.overload))) {
    // custom-domain ops may be provided by a runtime library rather than a function; only
    // report when the model defines functions in that domain (a likely typo)
    if ([...functionIds].some((id) => id.startsWith(`${n.domain}::`))) {
      problems.push(`${where}: ${describeNode(n)} calls ${n.domain}::${n.opType}, but the model defines no such function`);
    }
  }
}

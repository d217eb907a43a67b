/**
 * Inlining calls to model-local functions (FunctionProto) into the main graph. Exporters
 * that keep module boundaries (torch's dynamo exporter, `export_modules_as_functions`)
 * put each attention block in a function that every layer calls; a per-layer rewrite
 * (one memory and one gate per layer) needs the layer's own nodes, so convert inlines
 * the calls whose function holds attention first, and says so in its report.
 *
 * Inlining is a rule of the pattern engine (`inline-function`, its name on every copied
 * node): the body's nodes are copied before the call with fresh names (`{call}/{node}`),
 * attribute references (ref_attr_name) resolved from the call or the function's
 * defaults, and the call's output names kept. Functions are never removed from the
 * model (other calls, or other tools, may use them).
 */
import { type Attribute, type Builder, IrError, type IRFunction, type Model, Node, UserInputError, Value, describeNode, functionId } from '../ir/index.js';
import { applyRules } from './pattern/driver.js';
import { type Rule, defineRule, fail, ok } from './pattern/rule.js';

export interface InlineReport {
  /** "call 'name' of domain.Function" per inlined call, in the order done. */
  inlined: string[];
}

/** The function a node calls, if it is a model-local function. */
export function calledFunction(model: Model, n: Node): IRFunction | undefined {
  return model.findFunction(n.domain, n.opType, n.overload);
}

/** True when the function (or one it calls) contains a node satisfying `test`. */
export function functionContains(model: Model, fn: IRFunction, test: (n: Node) => boolean, seen = new Set<string>()): boolean {
  if (seen.has(fn.id)) return false;
  seen.add(fn.id);
  for (const n of fn.body) {
    if (test(n)) return true;
    const inner = calledFunction(model, n);
    if (inner && functionContains(model, inner, test, seen)) return true;
  }
  return false;
}

function resolveAttribute(a: Attribute, call: Node, fn: IRFunction): Attribute | undefined {
  if (a.refAttrName === undefined) return a;
  const given = call.attributes.get(a.refAttrName);
  const value = given ?? fn.attributeProtos.find((d) => d.name === a.refAttrName);
  if (!value) return undefined; // neither set by the call nor defaulted: the attribute is absent
  return { ...value, name: a.name, refAttrName: undefined } as Attribute;
}

/** Provenance of inlined nodes. */
export const INLINE_RULE = 'inline-function';

/**
 * The rule that replaces a call of a model-local function `select` accepts by a copy of
 * the function's body (the call's output names kept). Calls inside the body are copied
 * as calls, and the driver tries the rule on them in turn.
 */
export function inlineRule(model: Model, select: (fn: IRFunction) => boolean): Rule {
  return defineRule({
    name: INLINE_RULE,
    keepNames: true,
    pattern: (op) => op.anyOp(),
    check(m) {
      const fn = calledFunction(model, m.root);
      return fn && select(fn) ? ok() : fail(`${describeNode(m.root)} is not a call of a function to inline`);
    },
    rewrite: (m, b) => copyBody(model, m.root, b),
  });
}

/** Copies the body of the function `call` calls before it; returns the values that replace its outputs. */
function copyBody(model: Model, call: Node, b: Builder): Value[] {
  const fn = calledFunction(model, call)!;
  const graph = b.graph;
  const bodyDefault = fn.opsetImports.get('') ?? fn.opsetImports.get('ai.onnx');
  const modelDefault = model.opsetVersion('');
  if (bodyDefault !== undefined && modelDefault !== undefined && bodyDefault !== modelDefault) {
    throw new UserInputError(
      `cannot inline ${describeNode(call)}: function ${functionId(fn.domain, fn.name, fn.overload)} uses default-domain opset ${bodyDefault}, the model ${modelDefault}`,
    );
  }
  for (const n of fn.body) {
    if (n.subgraphs().length) throw new UserInputError(`cannot inline ${describeNode(call)}: its function has a node with a subgraph (${describeNode(n)})`);
  }
  for (const [domain, version] of fn.opsetImports) if (!model.opsetImports.has(domain)) model.opsetImports.set(domain, version);
  const map = new Map<Value, Value | null>();
  fn.body.inputs.forEach((formal, i) => map.set(formal, call.inputs[i] ?? null));
  const prefix = `${call.name || `${fn.name}_call`}/`;
  const produced = new Set<Value>();
  for (const n of fn.body) {
    const inputs = n.inputs.map((v) => {
      if (!v) return null;
      if (map.has(v)) return map.get(v)!;
      // a value of the enclosing scope (functions have none) or an unknown name
      throw new UserInputError(`cannot inline ${describeNode(call)}: ${describeNode(n)} reads '${v.name}', which its function does not define`);
    });
    const outputs = n.outputs.map((o) => new Value(o.name ? graph.uniqueName(`${prefix}${o.name}`) : '', o.type ? structuredClone(o.type) : undefined));
    const attributes: Attribute[] = [];
    for (const a of n.attributes.values()) {
      const r = resolveAttribute(a, call, fn);
      if (r) attributes.push(r);
    }
    const copy = new Node({ opType: n.opType, domain: n.domain, overload: n.overload, name: graph.uniqueName(`${prefix}${n.name || n.opType}`), inputs, outputs, attributes, docString: n.docString });
    copy.metadataProps.push(...n.metadataProps.map((e) => ({ ...e })));
    b.add(copy);
    n.outputs.forEach((o, i) => {
      map.set(o, outputs[i]!);
      produced.add(outputs[i]!);
    });
  }
  const taken = new Set<Value>();
  return call.outputs.map((_, i) => {
    const formal = fn.body.outputs[i];
    let inner = formal ? map.get(formal) : undefined;
    if (!inner) throw new UserInputError(`cannot inline ${describeNode(call)}: output ${i} is not produced by its function`);
    if (!produced.has(inner) || taken.has(inner)) {
      // the function returns one of its inputs, or one value twice: an Identity keeps the
      // caller's value (a graph input, say) under its own name
      inner = b.op('Identity', [inner], {}, { name: `${prefix}output_${i}` });
    }
    taken.add(inner);
    return inner;
  });
}

/** Inlines one call (in the main graph). Returns the nodes it inserted. */
export function inlineCall(model: Model, call: Node): Node[] {
  const fn = calledFunction(model, call);
  const graph = call.graph;
  if (!fn || !graph) throw new IrError(`${describeNode(call)} is not a call of a model-local function in a graph`);
  const created: Node[] = [];
  applyRules(graph, [inlineRule(model, (f) => f === fn)], { roots: [call], onRewrite: (e) => created.push(...e.created) });
  return created;
}

/** Inlines, in the main graph, every call of a function `select` accepts (and calls inside them). */
export function inlineFunctions(model: Model, select: (fn: IRFunction) => boolean): InlineReport {
  const inlined: string[] = [];
  const r = applyRules(model, [inlineRule(model, select)], {
    maxIterations: 100,
    onRewrite: (e) => {
      const fn = calledFunction(model, e.rootNode)!;
      inlined.push(`call '${e.rootNode.name}' of ${fn.domain}.${fn.name}`);
    },
  });
  if (!r.converged) throw new UserInputError(`inlining functions did not finish: ${r.stopReason} (a function that calls itself?)`);
  return { inlined };
}

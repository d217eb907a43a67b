/**
 * LoRA deltas on linear projections: W x becomes W x + (α/r)·B(A x), with A small random
 * and B zero, so a fresh conversion changes nothing. The adapters are initializers named
 * `lora.<target>.A` [in, r] and `lora.<target>.B` [r, out] (MatMul layout), so training
 * tools can find them; `mergeLora` folds B·A back into W and removes them.
 */
import {
  DataType,
  type Graph,
  IrError,
  type Model,
  type Node,
  Tensor,
  UserInputError,
  type Value,
  dataTypeName,
  describeNode,
  getMetadata,
  setMetadata,
} from '../../ir/index.js';
import { seededRandom } from '../../ir/random.js';
import { applyRules } from '../pattern/driver.js';
import { defineRule, fail, ok } from '../pattern/rule.js';
import { einsumProjection } from '../attention/einsum.js';
import { integerMatMulOf } from '../attention/integer.js';

export const LORA_RULE = 'lora';
const TARGET_KEY = 'titanize.lora.target';

export interface LoraOptions {
  rank: number;
  /** Scale numerator: the delta is multiplied by alpha / rank (default: alpha = rank). */
  alpha?: number;
  /** Seed for A's initialisation (uniform in ±1/√in, as PEFT's Kaiming-uniform default). */
  seed?: number;
}

export interface LoraTarget {
  /** A MatMul whose second input is a 2-D weight initializer, or a Gemm with an initializer B. */
  node: Node;
  /** Stable name used for the adapter initializers, e.g. `layers.3.q_proj`. */
  name: string;
}

export interface LoraAdapter {
  target: string;
  a: Value;
  b: Value;
  in: number;
  out: number;
  rank: number;
  scale: number;
}

/**
 * What an adapter needs to know about a projection: in/out sizes, the float activation it
 * reads (`input`) and the float output it is added to (`output`), the float type of those
 * activations, how its weight is quantized, and where A·B lands in the weight
 * (`weightIndex(i, o)`, for merging). Quantized weights (MatMulNBits blocks,
 * DequantizeLinear of an integer initializer, MatMulInteger after DynamicQuantizeLinear)
 * take an adapter without being dequantized: the adapter runs beside them in float32.
 * An Einsum projection with a weight (Keras EinsumDense, `abc,cde->abde`) reads x's
 * contracted axes flattened (`inAxes` of them, the last ones) and writes its features
 * flattened, reshaped to the output's `outDims` (the last axes).
 */
export interface ProjectionShape {
  in: number;
  out: number;
  /** The weight is stored [out, in] (Gemm transB). */
  transposed: boolean;
  weight: Value;
  input: Value;
  output: Value;
  dtype: DataType;
  quantized: string | null;
  /** Flat index in the weight of input feature i and output feature o. */
  weightIndex: (i: number, o: number) => number;
  /** Einsum projection: the leading axes (rows) of input and output, the input's trailing axes that are flattened, the output's trailing dims. */
  einsum: { rows: number; inAxes: number; outDims: number[] } | null;
}

export function projectionShape(node: Node): ProjectionShape {
  const w = node.input(1);
  const plain = (inSize: number, outSize: number, weight: Value, dtype: DataType, quantized: string | null, transposed = false): ProjectionShape => ({
    in: inSize,
    out: outSize,
    transposed,
    weight,
    input: node.requireInput(0),
    output: node.output,
    dtype,
    quantized,
    weightIndex: transposed ? (i, o) => o * inSize + i : (i, o) => i * outSize + o,
    einsum: null,
  });
  if (node.opType === 'MatMulNBits' && node.domain === 'com.microsoft' && w?.initializer) {
    const scales = node.input(2)?.initializer;
    return plain(node.getInt('K'), node.getInt('N'), w, scales?.dataType ?? DataType.FLOAT, 'MatMulNBits');
  }
  if (node.is('MatMulInteger')) {
    const p = integerMatMulOf(node);
    const t = p?.weight.initializer;
    if (!p || !t || t.dims.length !== 2) {
      throw new UserInputError(`${describeNode(node)} is not a dynamically quantized projection (DynamicQuantizeLinear → MatMulInteger with a 2-D weight initializer → Cast → Mul by the scales); it cannot take a LoRA adapter`);
    }
    // DynamicQuantizeLinear reads float32: the adapter reads the same x and adds to the dequantized product
    return { ...plain(t.dims[0]!, t.dims[1]!, p.weight, DataType.FLOAT, 'MatMulInteger'), input: p.input, output: p.output };
  }
  if (node.is('Einsum')) return einsumShape(node);
  const dq = w?.producer?.opType === 'DequantizeLinear' ? w.producer : null;
  const q = dq?.input(0)?.initializer;
  if (node.is('MatMul') && dq && q && q.dims.length === 2) {
    const scale = dq.input(1)?.initializer;
    return plain(q.dims[0]!, q.dims[1]!, w!, scale?.dataType ?? DataType.FLOAT, 'DequantizeLinear');
  }
  const t = w?.initializer;
  if (!w || !t || t.dims.length !== 2) {
    throw new UserInputError(`${describeNode(node)} has no 2-D weight initializer (or quantized weight) as its second input; it cannot take a LoRA adapter`);
  }
  const dtype = floatType(t.dataType);
  if (node.is('MatMul')) return plain(t.dims[0]!, t.dims[1]!, w, dtype, null);
  if (node.is('Gemm')) {
    const transB = node.getInt('transB', 0) === 1;
    if (node.getInt('transA', 0) !== 0) throw new UserInputError(`${describeNode(node)}: Gemm with transA=1 is not supported for LoRA`);
    return transB ? plain(t.dims[1]!, t.dims[0]!, w, dtype, null, true) : plain(t.dims[0]!, t.dims[1]!, w, dtype, null);
  }
  throw new UserInputError(`${describeNode(node)} is not a MatMul, Gemm, MatMulNBits, MatMulInteger or Einsum projection; it cannot take a LoRA adapter`);
}

function floatType(t: DataType): DataType {
  return t === DataType.FLOAT16 || t === DataType.BFLOAT16 ? t : DataType.FLOAT;
}

/**
 * An Einsum projection as a MatMul: x = [rows…, contracted…] flattened to [rows…, in],
 * the delta [rows…, out] reshaped to [rows…, features…]. The rows must lead both x and the
 * output, in the same order (Keras' `abc,cde->abde` and `abcd,cde->abe`); the weight's
 * letters may come in any order.
 */
function einsumShape(node: Node): ProjectionShape {
  const e = einsumProjection(node);
  const t = e?.w.initializer;
  if (!e || !t || t.dims.length !== e.letters.w.length) {
    throw new UserInputError(`${describeNode(node)} is not an Einsum projection with a weight initializer (one activation, one weight, every weight letter contracted or an output feature); it cannot take a LoRA adapter`);
  }
  const { x: X, w: W, out: O } = e.letters;
  const rows = X.length - e.contracted.length;
  const C = X.slice(rows);
  const F = O.slice(rows);
  if (e.contracted.some((a, i) => a !== rows + i) || X.slice(0, rows) !== O.slice(0, rows) || [...F].some((c) => !W.includes(c))) {
    throw new UserInputError(
      `${describeNode(node)} ('${X},${W}->${O}'): a LoRA adapter on an Einsum projection needs the contracted axes last in the input and the weight's features last in the output, after the same leading axes`,
    );
  }
  const size = (c: string): number => t.dims[W.indexOf(c)]!;
  const inSize = [...C].reduce((a, c) => a * size(c), 1);
  const outDims = [...F].map(size);
  const outSize = outDims.reduce((a, d) => a * d, 1);
  // the weight's strides, and each flattened feature's digits (major first)
  const strides = t.dims.map((_, k) => t.dims.slice(k + 1).reduce((a, d) => a * d, 1));
  const flat = (letters: string, index: number, add: (c: string, digit: number) => void): void => {
    for (let k = letters.length - 1; k >= 0; k--) {
      const c = letters[k]!;
      add(c, index % size(c));
      index = Math.floor(index / size(c));
    }
  };
  const weightIndex = (i: number, o: number): number => {
    let idx = 0;
    const add = (c: string, digit: number): void => {
      idx += digit * strides[W.indexOf(c)]!;
    };
    flat(C, i, add);
    flat(F, o, add);
    return idx;
  };
  return {
    in: inSize,
    out: outSize,
    transposed: false,
    weight: e.w,
    input: e.x,
    output: node.output,
    dtype: floatType(t.dataType),
    quantized: null,
    weightIndex,
    einsum: { rows, inAxes: C.length, outDims },
  };
}

/** True when `node` is a projection that can take an adapter (see projectionShape). */
export function isLoraCapable(node: Node): boolean {
  try {
    projectionShape(node);
    return true;
  } catch {
    return false;
  }
}

/** What the LoRA rule adds at one projection (decided before anything changes). */
interface AdapterPlan {
  target: LoraTarget;
  shape: ProjectionShape;
  /** A's initial values [in, r]. */
  a: Float32Array;
}

/**
 * Adds one adapter per target, through the rule engine: the rule `lora` wraps each
 * projection's float output (for a MatMulInteger, the Mul that completes its scales) in
 * `out + delta`, applied at those nodes only. Every target is checked before anything
 * changes. Returns the adapters created, in the order of `targets`.
 */
export function addLora(model: Model, targets: LoraTarget[], options: LoraOptions): LoraAdapter[] {
  const rank = options.rank;
  if (!Number.isInteger(rank) || rank < 1) throw new UserInputError(`LoRA rank must be a positive integer, got ${rank}`);
  const scale = (options.alpha ?? rank) / rank;
  const rand = seededRandom(options.seed ?? 0);
  const plans = new Map<Node, AdapterPlan>();
  const byGraph = new Map<Graph, Node[]>();
  const names = new Set<string>();
  for (const target of targets) {
    const { node } = target;
    if (names.has(target.name)) throw new UserInputError(`two LoRA targets are named '${target.name}'`);
    names.add(target.name);
    const graph = node.graph;
    if (!graph) throw new IrError(`${describeNode(node)} is not in a graph`);
    if (getMetadata(node.metadataProps, TARGET_KEY)) {
      throw new UserInputError(`${describeNode(node)} already has a LoRA adapter ('${getMetadata(node.metadataProps, TARGET_KEY)}')`);
    }
    const shape = projectionShape(node);
    const out = shape.output;
    if (out.isGraphOutput()) throw new UserInputError(`${describeNode(node)}: its output '${out.name}' is a graph output; LoRA needs an internal projection`);
    const root = out.producer;
    if (!root || plans.has(root)) throw new UserInputError(`${describeNode(node)}: its output '${out.name}' already takes an adapter`);
    uniqueInit(graph, `lora.${target.name}.A`);
    uniqueInit(graph, `lora.${target.name}.B`);
    // A ~ U(±1/√in), as PEFT's Kaiming-uniform default; drawn in target order
    const bound = 1 / Math.sqrt(shape.in);
    const a = new Float32Array(shape.in * rank);
    for (let i = 0; i < a.length; i++) a[i] = (rand() * 2 - 1) * bound;
    plans.set(root, { target, shape, a });
    byGraph.set(graph, [...(byGraph.get(graph) ?? []), root]);
  }
  const adapters = new Map<Node, LoraAdapter>();
  const rule = loraRule(plans, rank, scale, (root, adapter) => adapters.set(root, adapter));
  for (const [graph, roots] of byGraph) {
    const r = applyRules(graph, [rule], { roots });
    if (!r.converged) throw new IrError(`adding LoRA adapters did not converge: ${r.stopReason}`);
  }
  return [...plans.keys()].map((root) => {
    const adapter = adapters.get(root);
    if (!adapter) throw new IrError(`no LoRA adapter was added at ${describeNode(root)}`);
    return adapter;
  });
}

/** The wrapping rule: out → out + (α/r)·B(A x), at the planned projections. */
function loraRule(plans: ReadonlyMap<Node, AdapterPlan>, rank: number, scale: number, added: (root: Node, a: LoraAdapter) => void) {
  const anyInputs = { extraInputs: true };
  return defineRule({
    name: LORA_RULE,
    wraps: true,
    // the node that makes a projection's float output, whatever the projection's kind
    pattern: (op) =>
      op.or(op.MatMul(anyInputs), op.Gemm(anyInputs), op.Einsum(anyInputs), op.Mul(anyInputs), op.MatMulNBits({ ...anyInputs, domain: 'com.microsoft' })),
    check(m) {
      const plan = plans.get(m.root);
      if (!plan) return fail(`${describeNode(m.root)} is not one of the projections selected for LoRA`);
      // (the rewrite keeps the projection: it must not take a second adapter in the next sweep)
      if (getMetadata(plan.target.node.metadataProps, TARGET_KEY)) return fail(`${describeNode(plan.target.node)} already has its adapter`);
      return ok();
    },
    rewrite(m, b) {
      const { target, a } = plans.get(m.root)!;
      // (taken again now: an adapter added before may have changed what this projection reads)
      const shape = projectionShape(target.node);
      const name = target.name;
      const graph = b.graph;
      b.setInsertionPointAfter(m.root);
      b.prefix = `lora/${name}/`;
      const aInit = graph.addInitializer(Tensor.fromArray(a, [shape.in, rank]), uniqueInit(graph, `lora.${name}.A`));
      const bInit = graph.addInitializer(Tensor.fromArray(new Float32Array(rank * shape.out), [rank, shape.out]), uniqueInit(graph, `lora.${name}.B`));
      // the adapter computes in float32; fp16 / bf16 activations are cast at its edges
      // an Einsum projection's contracted axes are flattened into one, its features reshaped back
      const rows = (n: number): number[] => new Array<number>(n).fill(0);
      const ein = shape.einsum;
      const x0 = shape.dtype === DataType.FLOAT ? shape.input : b.op('Cast', [shape.input], { to: DataType.FLOAT }, { name: 'x_f32' });
      const x = ein && ein.inAxes > 1 ? b.op('Reshape', [x0, b.ints([...rows(ein.rows), -1])], {}, { name: 'x_flat' }) : x0;
      const down = b.op('MatMul', [x, aInit]);
      const up = b.op('MatMul', [down, bInit]);
      const scaled = b.op('Mul', [up, b.scalar(scale, 'lora_scale')]);
      const shaped = ein && ein.outDims.length > 1 ? b.op('Reshape', [scaled, b.ints([...rows(ein.rows), ...ein.outDims])], {}, { name: 'delta_features' }) : scaled;
      const delta = shape.dtype === DataType.FLOAT ? shaped : b.op('Cast', [shaped], { to: shape.dtype }, { name: 'delta' });
      const sum = b.op('Add', [shape.output, delta]);
      setMetadata(sum.producer!.metadataProps, TARGET_KEY, name);
      setMetadata(target.node.metadataProps, TARGET_KEY, name);
      added(m.root, { target: name, a: aInit, b: bInit, in: shape.in, out: shape.out, rank, scale });
      return sum;
    },
  });
}

function uniqueInit(graph: Graph, name: string): string {
  if (graph.initializers.has(name)) throw new UserInputError(`the model already has an initializer '${name}'`);
  return name;
}

/** The adapter sums (Add nodes) in a graph, with their parts; `base` is the projection node the adapter targets. */
function findAdapters(graph: Graph): { sum: Node; base: Node; nodes: Node[]; a: Value; b: Value; scale: number; name: string }[] {
  const sums: Node[] = [];
  const targets = new Map<string, Node>();
  for (const n of graph) {
    const name = getMetadata(n.metadataProps, TARGET_KEY);
    if (!name) continue;
    if (n.is('Add') && getMetadata(n.metadataProps, 'titanize.rule') === LORA_RULE) sums.push(n);
    else targets.set(name, n);
  }
  const isLora = (n: Node | null | undefined): n is Node => !!n && getMetadata(n.metadataProps, 'titanize.rule') === LORA_RULE;
  const found = [];
  for (const n of sums) {
    const name = getMetadata(n.metadataProps, TARGET_KEY)!;
    const base = targets.get(name) ?? n.requireInput(0).producer;
    // Add(output, [Cast] [Reshape] Mul(MatMul(MatMul([Reshape] [Cast] x, A), B), scale)): the
    // Casts for fp16 / bf16 activations, the Reshapes for an Einsum projection's axes
    const shaping: Node[] = [];
    const strip = (v: Value): Value => {
      let cur = v;
      while (isLora(cur.producer) && (cur.producer.is('Cast') || cur.producer.is('Reshape'))) {
        shaping.push(cur.producer, ...(cur.producer.is('Reshape') && cur.producer.input(1)?.producer?.opType === 'Constant' ? [cur.producer.input(1)!.producer!] : []));
        cur = cur.producer.requireInput(0);
      }
      return cur;
    };
    const mul = strip(n.requireInput(1)).producer;
    const up = mul?.requireInput(0).producer;
    const down = up?.requireInput(0).producer;
    const scaleNode = mul?.requireInput(1).producer;
    if (!base || !mul || !up || !down || !scaleNode) throw new IrError(`LoRA adapter '${name}' at ${describeNode(n)} has an unexpected structure`);
    strip(down.requireInput(0));
    const scale = (scaleNode.getTensor('value')!.toTypedArray() as Float32Array)[0]!;
    const nodes = [n, ...shaping, mul, up, down, scaleNode];
    found.push({ sum: n, base, nodes, a: down.requireInput(1), b: up.requireInput(1), scale, name });
  }
  return found;
}

/** The A and B initializers of every LoRA adapter of `graph`, by target name (what training updates). */
export function loraParameters(graph: Graph): { target: string; a: Value; b: Value }[] {
  return findAdapters(graph).map((ad) => ({ target: ad.name, a: ad.a, b: ad.b }));
}

/** Folds every adapter into its weight (W += scale·A·B) and removes the adapter nodes. Returns how many. */
export function mergeLora(model: Model): number {
  const graph = model.graph;
  const adapters = findAdapters(graph);
  for (const ad of adapters) {
    const shape = projectionShape(ad.base);
    if (shape.quantized) {
      throw new UserInputError(`LoRA adapter '${ad.name}': its projection's weight is quantized (${shape.quantized}); merging would dequantize it — keep the adapter (the model runs as it is)`);
    }
    const w = shape.weight.initializer!;
    if (w.dataType !== DataType.FLOAT) throw new UserInputError(`LoRA merge supports float32 weights; '${w.name}' is ${dataTypeName(w.dataType).toLowerCase()}: keep the adapter (the model runs as it is)`);
    // a weight shared with another node must not change under it
    if (shape.weight.consumers().length > 1) throw new UserInputError(`weight '${w.name}' is shared by several nodes; cannot merge its LoRA adapter in place`);
    const wData = Float32Array.from(w.toTypedArray() as Float32Array);
    const A = ad.a.initializer!.toTypedArray() as Float32Array;
    const B = ad.b.initializer!.toTypedArray() as Float32Array;
    const r = ad.a.initializer!.dims[1]!;
    for (let i = 0; i < shape.in; i++) {
      for (let o = 0; o < shape.out; o++) {
        let acc = 0;
        for (let k = 0; k < r; k++) acc += A[i * r + k]! * B[k * shape.out + o]!;
        const idx = shape.weightIndex(i, o);
        wData[idx] = wData[idx]! + ad.scale * acc;
      }
    }
    const merged = Tensor.fromArray(wData, w.dims.slice(), DataType.FLOAT, w.name);
    shape.weight.initializer = merged;
    ad.sum.output.replaceAllUsesWith(ad.sum.requireInput(0));
    graph.remove(ad.nodes);
    graph.removeInitializer(ad.a);
    graph.removeInitializer(ad.b);
    ad.base.metadataProps = ad.base.metadataProps.filter((m) => m.key !== TARGET_KEY);
  }
  return adapters.length;
}

/**
 * LoRA deltas on linear projections: W x becomes W x + (α/r)·B(A x), with A small random
 * and B zero, so a fresh conversion changes nothing. The adapters are initializers named
 * `lora.<target>.A` [in, r] and `lora.<target>.B` [r, out] (MatMul layout), so training
 * tools can find them; `mergeLora` folds B·A back into W and removes them.
 */
import {
  Builder,
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
 * In/out sizes of a projection, whether its weight is stored transposed ([out, in]), the
 * float type its activations have, and how its weight is quantized. Quantized weights
 * (MatMulNBits blocks, DequantizeLinear of an integer initializer) take an adapter
 * without being dequantized: the adapter runs beside them in float32.
 */
export function projectionShape(node: Node): { in: number; out: number; transposed: boolean; weight: Value; dtype: DataType; quantized: string | null } {
  const w = node.input(1);
  if (node.opType === 'MatMulNBits' && node.domain === 'com.microsoft' && w?.initializer) {
    const scales = node.input(2)?.initializer;
    return { in: node.getInt('K'), out: node.getInt('N'), transposed: false, weight: w, dtype: scales?.dataType ?? DataType.FLOAT, quantized: 'MatMulNBits' };
  }
  const dq = w?.producer?.opType === 'DequantizeLinear' ? w.producer : null;
  const q = dq?.input(0)?.initializer;
  if (node.is('MatMul') && dq && q && q.dims.length === 2) {
    const scale = dq.input(1)?.initializer;
    return { in: q.dims[0]!, out: q.dims[1]!, transposed: false, weight: w!, dtype: scale?.dataType ?? DataType.FLOAT, quantized: 'DequantizeLinear' };
  }
  const t = w?.initializer;
  if (!w || !t || t.dims.length !== 2) {
    throw new UserInputError(`${describeNode(node)} has no 2-D weight initializer (or quantized weight) as its second input; it cannot take a LoRA adapter`);
  }
  const dtype = t.dataType === DataType.FLOAT16 || t.dataType === DataType.BFLOAT16 ? t.dataType : DataType.FLOAT;
  if (node.is('MatMul')) return { in: t.dims[0]!, out: t.dims[1]!, transposed: false, weight: w, dtype, quantized: null };
  if (node.is('Gemm')) {
    const transB = node.getInt('transB', 0) === 1;
    if (node.getInt('transA', 0) !== 0) throw new UserInputError(`${describeNode(node)}: Gemm with transA=1 is not supported for LoRA`);
    return transB ? { in: t.dims[1]!, out: t.dims[0]!, transposed: true, weight: w, dtype, quantized: null } : { in: t.dims[0]!, out: t.dims[1]!, transposed: false, weight: w, dtype, quantized: null };
  }
  throw new UserInputError(`${describeNode(node)} is not a MatMul, Gemm or MatMulNBits; it cannot take a LoRA adapter`);
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

/** Adds one adapter per target. Returns the adapters created. */
export function addLora(model: Model, targets: LoraTarget[], options: LoraOptions): LoraAdapter[] {
  const rank = options.rank;
  if (!Number.isInteger(rank) || rank < 1) throw new UserInputError(`LoRA rank must be a positive integer, got ${rank}`);
  const scale = (options.alpha ?? rank) / rank;
  const rand = seededRandom(options.seed ?? 0);
  const adapters: LoraAdapter[] = [];
  for (const { node, name } of targets) {
    const graph = node.graph;
    if (!graph) throw new IrError(`${describeNode(node)} is not in a graph`);
    if (getMetadata(node.metadataProps, TARGET_KEY)) {
      throw new UserInputError(`${describeNode(node)} already has a LoRA adapter ('${getMetadata(node.metadataProps, TARGET_KEY)}')`);
    }
    const shape = projectionShape(node);
    const out = node.output;
    if (out.isGraphOutput()) throw new UserInputError(`${describeNode(node)}: its output '${out.name}' is a graph output; LoRA needs an internal projection`);
    const bound = 1 / Math.sqrt(shape.in);
    const aData = new Float32Array(shape.in * rank);
    for (let i = 0; i < aData.length; i++) aData[i] = (rand() * 2 - 1) * bound;
    const b = new Builder(graph, { before: node.next ?? undefined, tag: LORA_RULE, prefix: `lora/${name}/` });
    const aInit = graph.addInitializer(Tensor.fromArray(aData, [shape.in, rank]), uniqueInit(graph, `lora.${name}.A`));
    const bInit = graph.addInitializer(Tensor.fromArray(new Float32Array(rank * shape.out), [rank, shape.out]), uniqueInit(graph, `lora.${name}.B`));
    const users = out.uses();
    // the adapter computes in float32; fp16 / bf16 activations are cast at its edges
    const x = shape.dtype === DataType.FLOAT ? node.requireInput(0) : b.op('Cast', [node.requireInput(0)], { to: DataType.FLOAT }, { name: 'x_f32' });
    const down = b.op('MatMul', [x, aInit]);
    const up = b.op('MatMul', [down, bInit]);
    const scaled = b.op('Mul', [up, b.scalar(scale, 'lora_scale')]);
    const delta = shape.dtype === DataType.FLOAT ? scaled : b.op('Cast', [scaled], { to: shape.dtype }, { name: 'delta' });
    const sum = b.op('Add', [out, delta]);
    setMetadata(sum.producer!.metadataProps, TARGET_KEY, name);
    setMetadata(node.metadataProps, TARGET_KEY, name);
    for (const u of users) u.node.setInput(u.index, sum);
    adapters.push({ target: name, a: aInit, b: bInit, in: shape.in, out: shape.out, rank, scale });
  }
  return adapters;
}

function uniqueInit(graph: Graph, name: string): string {
  if (graph.initializers.has(name)) throw new UserInputError(`the model already has an initializer '${name}'`);
  return name;
}

/** The adapter sums (Add nodes) in a graph, with their parts. */
function findAdapters(graph: Graph): { sum: Node; base: Node; nodes: Node[]; a: Value; b: Value; scale: number; name: string }[] {
  const found = [];
  for (const n of graph) {
    const name = getMetadata(n.metadataProps, TARGET_KEY);
    if (!name || !n.is('Add')) continue;
    const base = n.requireInput(0).producer;
    // Add(base, [Cast] Mul(MatMul(MatMul([Cast] x, A), B), scale))
    const castOut = n.requireInput(1).producer?.opType === 'Cast' ? n.requireInput(1).producer! : null;
    const mul = (castOut ? castOut.requireInput(0) : n.requireInput(1)).producer;
    const up = mul?.requireInput(0).producer;
    const down = up?.requireInput(0).producer;
    const scaleNode = mul?.requireInput(1).producer;
    if (!base || !mul || !up || !down || !scaleNode) throw new IrError(`LoRA adapter '${name}' at ${describeNode(n)} has an unexpected structure`);
    const castIn = down.requireInput(0).producer?.opType === 'Cast' && getMetadata(down.requireInput(0).producer!.metadataProps, 'titanize.rule') === LORA_RULE ? down.requireInput(0).producer! : null;
    const scale = (scaleNode.getTensor('value')!.toTypedArray() as Float32Array)[0]!;
    const nodes = [n, ...(castOut ? [castOut] : []), mul, up, down, ...(castIn ? [castIn] : []), scaleNode];
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
        const idx = shape.transposed ? o * shape.in + i : i * shape.out + o;
        wData[idx] = wData[idx]! + ad.scale * acc;
      }
    }
    const merged = Tensor.fromArray(wData, w.dims.slice(), DataType.FLOAT, w.name);
    shape.weight.initializer = merged;
    ad.sum.output.replaceAllUsesWith(ad.base.output);
    graph.remove(ad.nodes);
    graph.removeInitializer(ad.a);
    graph.removeInitializer(ad.b);
    ad.base.metadataProps = ad.base.metadataProps.filter((m) => m.key !== TARGET_KEY);
  }
  return adapters.length;
}

/**
 * Shape inference as an analysis: the symbolic shape of every value of a graph, and the
 * contents of the small integer tensors that exports compute shapes with (Shape →
 * Gather → Mul → Concat → Reshape). Dims are polynomials over the graph inputs' symbols
 * (see dim.ts), so `view(bsz, q_len, num_heads, head_dim)` reads back as
 * [batch, sequence, 4, 8] whatever the export computed it with.
 *
 *   const shapes = inferShapes(model);
 *   shapes.shape(v)   // SymDim[] | undefined (unknown rank)
 *   shapes.values(v)  // SymDim[] | undefined (contents of a small integer tensor)
 *
 * Rules are one table entry per op (standard ops up to opset 23 that Transformer exports
 * use, the com.microsoft ops discovery meets, model-local functions through their
 * bodies). A value whose op has no rule keeps the shape the file declares, if any. The
 * analysis walks producers, not the node order, and never changes the model.
 */
import { DataType, type Graph, Model, type Node, type Value, describeNode } from '../../ir/index.js';
import { constantTensor, tensorNumbers } from '../util/constants.js';
import { SymDim, product } from './dim.js';

/** Dims, type and (when small) numbers of a constant value; never reads external data. */
function constantTensorNumbers(v: Value, max: number): { dims: number[]; dataType: DataType; numbers: number[] | undefined } | undefined {
  const t = constantTensor(v);
  if (!t) return undefined;
  // only integer contents matter (shapes, indices); float constants are never read
  return { dims: t.dims.slice(), dataType: t.dataType, numbers: t.size <= max && isIntType(t.dataType) ? tensorNumbers(t, max) : undefined };
}

/** What the analysis knows of a value. */
export interface ValueShape {
  /** Dims, or undefined when the rank is unknown. */
  dims: SymDim[] | undefined;
  /** Contents (row-major) of a small integer tensor, when known. */
  values?: SymDim[];
}

/** Integer tensors up to this many elements carry their contents. */
const MAX_VALUES = 64;
const INT_MAX_HALF = 2 ** 62;

export class ShapeAnalysis {
  private readonly info = new Map<Value, ValueShape>();

  constructor(readonly graph: Graph) {}

  /** Records what is known of a value (used by the rules). */
  set(v: Value, s: ValueShape): void {
    this.info.set(v, s);
  }

  get(v: Value | null | undefined): ValueShape | undefined {
    return v ? this.info.get(v) : undefined;
  }

  shape(v: Value | null | undefined): SymDim[] | undefined {
    return this.get(v)?.dims;
  }

  rank(v: Value | null | undefined): number | undefined {
    return this.shape(v)?.length;
  }

  values(v: Value | null | undefined): SymDim[] | undefined {
    return this.get(v)?.values;
  }

  /** The single constant number an integer tensor holds (a dim read from a Shape), if known. */
  scalar(v: Value | null | undefined): number | undefined {
    const vals = this.values(v);
    return vals && vals.length === 1 ? vals[0]!.value : undefined;
  }

  /** The dim at `axis` (negative counts from the end). */
  dim(v: Value | null | undefined, axis: number): SymDim | undefined {
    const s = this.shape(v);
    if (!s) return undefined;
    const a = axis < 0 ? axis + s.length : axis;
    return s[a];
  }

  /** "[batch, sequence, 32]" or "[...]". */
  describe(v: Value | null | undefined): string {
    const s = this.shape(v);
    return s ? `[${s.map(String).join(', ')}]` : '[...]';
  }
}

// ---- helpers ------------------------------------------------------------------------------

const c = (n: number): SymDim => SymDim.of(n);

function normAxis(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

/** numpy broadcasting of two shapes. */
export function broadcast(a: SymDim[], b: SymDim[]): SymDim[] {
  const n = Math.max(a.length, b.length);
  const out: SymDim[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i];
    const y = b[b.length - n + i];
    if (!x) out.push(y!);
    else if (!y) out.push(x);
    else if (x.value === 1) out.push(y);
    else if (y.value === 1) out.push(x);
    else if (x.isConstant) out.push(x);
    else out.push(y.isConstant ? y : x);
  }
  return out;
}

function isIntType(t: DataType | undefined): boolean {
  return t === DataType.INT64 || t === DataType.INT32 || t === DataType.INT16 || t === DataType.INT8 || t === DataType.UINT8 || t === DataType.BOOL;
}

function elemTypeOfValue(v: Value): DataType | undefined {
  const t = v.type;
  return t && (t.kind === 'tensor' || t.kind === 'sparse_tensor') ? t.elemType : undefined;
}

function declared(v: Value, fresh: (axis: number) => SymDim): SymDim[] | undefined {
  const t = v.type;
  if (!t || (t.kind !== 'tensor' && t.kind !== 'sparse_tensor') || !t.shape) return undefined;
  return t.shape.map((d, i) => (d.value !== undefined ? c(d.value) : d.param !== undefined && d.param !== '' ? SymDim.sym(d.param) : fresh(i)));
}

/** Element-wise binary op on contents, broadcasting a single element. */
function zipValues(a: SymDim[] | undefined, b: SymDim[] | undefined, f: (x: SymDim, y: SymDim) => SymDim | undefined): SymDim[] | undefined {
  if (!a || !b) return undefined;
  if (a.length !== b.length && a.length !== 1 && b.length !== 1) return undefined;
  const n = Math.max(a.length, b.length);
  const out: SymDim[] = [];
  for (let i = 0; i < n; i++) {
    const r = f(a[a.length === 1 ? 0 : i]!, b[b.length === 1 ? 0 : i]!);
    if (!r) return undefined;
    out.push(r);
  }
  return out;
}

function intDiv(x: SymDim, y: SymDim): SymDim | undefined {
  const a = x.value;
  const b = y.value;
  // ONNX integer Div truncates toward zero
  if (a !== undefined && b !== undefined) return b === 0 ? undefined : c(Math.trunc(a / b));
  return x.div(y);
}

function ints(vals: SymDim[] | undefined): number[] | undefined {
  if (!vals) return undefined;
  const out: number[] = [];
  for (const v of vals) {
    const x = v.value;
    if (x === undefined) return undefined;
    out.push(x);
  }
  return out;
}

/** Output size of one spatial axis of a convolution or pooling. */
function windowed(inp: SymDim, k: number, stride: number, dil: number, padTotal: number, ceil = false): SymDim | undefined {
  const span = dil * (k - 1) + 1;
  const x = inp.value;
  if (x !== undefined) {
    const r = (x + padTotal - span) / stride;
    return c((ceil ? Math.ceil(r) : Math.floor(r)) + 1);
  }
  const num = inp.add(padTotal - span);
  const q = num.div(stride);
  return q ? q.add(1) : undefined;
}

// ---- rule context ---------------------------------------------------------------------------

export interface RuleContext {
  node: Node;
  /** Default-domain opset of the graph being analysed. */
  opset: number;
  shape(i: number): SymDim[] | undefined;
  values(i: number): SymDim[] | undefined;
  /** Constant integer contents of input i (from values with no symbol). */
  ints(i: number): number[] | undefined;
  /** A fresh symbol for output `out`, axis `axis` (stable per value name). */
  fresh(out: number, axis: number): SymDim;
  /** The analysis, for rules that need more (model-local functions). */
  analysis: ShapeAnalysis;
  model: Model | null;
}

type Rule = (x: RuleContext) => (ValueShape | undefined)[];

const same = (i = 0): Rule => (x) => [{ dims: x.shape(i) }];
const sameAll: Rule = (x) => x.node.outputs.map(() => ({ dims: x.shape(0) }));

function broadcastRule(valueOp?: (a: SymDim, b: SymDim) => SymDim | undefined): Rule {
  return (x) => {
    let dims: SymDim[] | undefined = x.shape(0);
    for (let i = 1; i < x.node.inputs.length; i++) {
      const s = x.shape(i);
      dims = dims && s ? broadcast(dims, s) : undefined;
    }
    const values = valueOp && x.node.inputs.length === 2 ? zipValues(x.values(0), x.values(1), valueOp) : undefined;
    return [{ dims, ...(values && dims && dims.length <= 1 ? { values } : {}) }];
  };
}

function axesOf(x: RuleContext, inputIndex: number, sinceOpset: number): number[] | undefined {
  if (x.opset >= sinceOpset && x.node.inputs[inputIndex]) return x.ints(inputIndex);
  return x.node.attribute('axes') ? x.node.getInts('axes') : undefined;
}

function reduceRule(axesInputSince: number): Rule {
  return (x) => {
    const s = x.shape(0);
    if (!s) return [{ dims: undefined }];
    const keep = x.node.getInt('keepdims', 1) === 1;
    const fromInput = x.node.inputs[1] !== undefined && x.node.inputs[1] !== null;
    let axes: number[] | undefined;
    if (x.opset >= axesInputSince || (x.node.opType === 'ReduceSum' && x.opset >= 13)) axes = fromInput ? x.ints(1) : [];
    else axes = x.node.attribute('axes') ? x.node.getInts('axes') : [];
    if (!axes) return [{ dims: undefined }];
    if (axes.length === 0) {
      if (x.node.getInt('noop_with_empty_axes', 0) === 1) return [{ dims: s }];
      axes = s.map((_, i) => i);
    }
    const set = new Set(axes.map((a) => normAxis(a, s.length)));
    const dims: SymDim[] = [];
    s.forEach((d, i) => {
      if (!set.has(i)) dims.push(d);
      else if (keep) dims.push(c(1));
    });
    return [{ dims }];
  };
}

function matmulShape(a: SymDim[] | undefined, b: SymDim[] | undefined): SymDim[] | undefined {
  if (!a || !b || a.length === 0 || b.length === 0) return undefined;
  const A = a.length === 1 ? [c(1), a[0]!] : a;
  const B = b.length === 1 ? [b[0]!, c(1)] : b;
  const batch = broadcast(A.slice(0, -2), B.slice(0, -2));
  const out = [...batch, A[A.length - 2]!, B[B.length - 1]!];
  if (a.length === 1) out.splice(out.length - 2, 1);
  if (b.length === 1) out.splice(out.length - 1, 1);
  return out;
}

function sliceDim(d: SymDim, start: SymDim, end: SymDim, step: number): SymDim | undefined {
  const n = d.value;
  const s0 = start.value;
  const e0 = end.value;
  if (n !== undefined && s0 !== undefined && e0 !== undefined) {
    const clamp = (v: number, lo: number, hi: number): number => Math.min(Math.max(v, lo), hi);
    let s = s0 < 0 ? s0 + n : s0;
    let e = e0 < 0 ? e0 + n : e0;
    if (step > 0) {
      s = clamp(s, 0, n);
      e = clamp(e, 0, n);
      return c(Math.max(0, Math.ceil((e - s) / step)));
    }
    s = clamp(s, 0, n - 1);
    e = clamp(e, -1, n - 1);
    return c(Math.max(0, Math.ceil((s - e) / -step)));
  }
  if (step !== 1) return undefined;
  const toEnd = e0 !== undefined && e0 >= INT_MAX_HALF;
  if (s0 !== undefined && s0 >= 0 && toEnd) return d.sub(s0);
  if (s0 !== undefined && s0 < 0 && toEnd) return c(-s0);
  if (s0 === 0 && e0 !== undefined && e0 < 0) return d.add(e0);
  if (s0 === 0 && end.isPositive) return end;
  if (s0 !== undefined && s0 < 0 && e0 !== undefined && e0 < 0) return c(e0 - s0);
  if (start.isPositive && toEnd) return d.sub(start);
  if (!end.isConstant && !start.isConstant) return end.sub(start);
  return undefined;
}

function sliceRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  if (!s) return [{ dims: undefined }];
  let starts: SymDim[] | undefined;
  let ends: SymDim[] | undefined;
  let axes: number[] | undefined;
  let steps: number[] | undefined;
  if (x.opset >= 10) {
    starts = x.values(1);
    ends = x.values(2);
    axes = x.node.inputs[3] ? x.ints(3) : undefined;
    steps = x.node.inputs[4] ? x.ints(4) : undefined;
    if (x.node.inputs[3] && !axes) return [{ dims: s.map((_, i) => x.fresh(0, i)) }];
  } else {
    starts = x.node.getInts('starts').map(c);
    ends = x.node.getInts('ends').map(c);
    axes = x.node.attribute('axes') ? x.node.getInts('axes') : undefined;
  }
  if (!starts || !ends) {
    // ranges unknown: the rank is kept, the sliced axes are fresh
    const known = axes ? new Set(axes.map((a) => normAxis(a, s.length))) : null;
    return [{ dims: s.map((d, i) => (known && !known.has(i) ? d : x.fresh(0, i))) }];
  }
  const ax = axes ?? starts.map((_, i) => i);
  const dims = s.slice();
  let values = x.values(0);
  for (let i = 0; i < ax.length; i++) {
    const a = normAxis(ax[i]!, s.length);
    const step = steps?.[i] ?? 1;
    dims[a] = sliceDim(s[a]!, starts[i]!, ends[i]!, step) ?? x.fresh(0, a);
    if (values && s.length === 1) {
      const st = starts[i]!.value;
      const en = ends[i]!.value;
      if (st === undefined || en === undefined || step !== 1) values = undefined;
      else {
        const n = values.length;
        const b = Math.min(Math.max(st < 0 ? st + n : st, 0), n);
        const e = Math.min(Math.max(en < 0 ? en + n : en, 0), n);
        values = values.slice(b, Math.max(b, e));
      }
    } else values = undefined;
  }
  return [{ dims, ...(values ? { values } : {}) }];
}

function reshapeRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  const target = x.values(1);
  const values = x.values(0);
  const allowZero = x.node.getInt('allowzero', 0) === 1;
  if (!target) {
    const t = x.shape(1);
    const n = t?.[0]?.value;
    return [{ dims: n !== undefined ? Array.from({ length: n }, (_, i) => x.fresh(0, i)) : undefined }];
  }
  const dims: (SymDim | undefined)[] = target.map((d, i) => {
    const v = d.value;
    if (v === 0 && !allowZero) return s?.[i];
    if (v === -1) return undefined;
    return d;
  });
  const unknown = dims.map((d, i) => (d === undefined ? i : -1)).filter((i) => i >= 0);
  if (unknown.length === 1 && s) {
    const rest = product(dims.filter((d): d is SymDim => d !== undefined));
    const q = product(s).div(rest);
    if (q) dims[unknown[0]!] = q;
  }
  const out = dims.map((d, i) => d ?? x.fresh(0, i));
  const total = values && out.length <= 1 ? values : undefined;
  return [{ dims: out, ...(total ? { values: total } : {}) }];
}

function squeezeRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  if (!s) return [{ dims: undefined }];
  const axes = axesOf(x, 1, 13);
  // axes given but computed at run time: the result is not known
  if (!axes && ((x.opset >= 13 && x.node.inputs[1]) || x.node.attribute('axes'))) return [{ dims: undefined }];
  const drop = axes ? new Set(axes.map((a) => normAxis(a, s.length))) : new Set(s.map((d, i) => (d.value === 1 ? i : -1)).filter((i) => i >= 0));
  const dims = s.filter((_, i) => !drop.has(i));
  const values = x.values(0);
  return [{ dims, ...(values ? { values } : {}) }];
}

function unsqueezeRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  const axes = axesOf(x, 1, 13);
  if (!s || !axes) return [{ dims: undefined }];
  const rank = s.length + axes.length;
  const set = new Set(axes.map((a) => normAxis(a, rank)));
  const dims: SymDim[] = [];
  let j = 0;
  for (let i = 0; i < rank; i++) dims.push(set.has(i) ? c(1) : s[j++]!);
  const values = x.values(0);
  return [{ dims, ...(values && dims.length <= 1 ? { values } : {}) }];
}

function concatRule(x: RuleContext): (ValueShape | undefined)[] {
  const shapes = x.node.inputs.map((_, i) => x.shape(i));
  const first = shapes.find((s) => s !== undefined);
  if (!first) return [{ dims: undefined }];
  const axis = normAxis(x.node.getInt('axis', 0), first.length);
  let total: SymDim | undefined = c(0);
  for (const s of shapes) total = total && s ? total.add(s[axis]!) : undefined;
  const dims = first.slice();
  dims[axis] = total ?? x.fresh(0, axis);
  let values: SymDim[] | undefined = [];
  for (let i = 0; i < x.node.inputs.length; i++) {
    const v = x.values(i);
    if (!v || !values) {
      values = undefined;
      break;
    }
    values.push(...v);
  }
  return [{ dims, ...(values && first.length === 1 ? { values } : {}) }];
}

function splitRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  const n = x.node.outputs.length;
  if (!s) return x.node.outputs.map(() => ({ dims: undefined }));
  const axis = normAxis(x.node.getInt('axis', 0), s.length);
  let sizes: SymDim[] | undefined;
  const sizesGiven = x.opset >= 13 && !!x.node.inputs[1];
  const fromInput = sizesGiven ? x.values(1) : undefined;
  if (fromInput) sizes = fromInput;
  else if (sizesGiven) sizes = undefined; // sizes computed at run time: unknown, not equal
  else if (x.node.attribute('split')) sizes = x.node.getInts('split').map(c);
  else {
    const whole = s[axis]!;
    const part = whole.div(n);
    if (part) sizes = Array.from({ length: n }, () => part);
    else if (whole.value !== undefined) {
      const chunk = Math.ceil(whole.value / n);
      sizes = Array.from({ length: n }, (_, i) => c(Math.max(0, Math.min(chunk, whole.value! - i * chunk))));
    }
  }
  return x.node.outputs.map((_, i) => {
    const d = s.slice();
    d[axis] = sizes?.[i] ?? x.fresh(i, axis);
    return { dims: d };
  });
}

function gatherRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  const idx = x.shape(1);
  if (!s || !idx) return [{ dims: undefined }];
  const axis = normAxis(x.node.getInt('axis', 0), s.length);
  const dims = [...s.slice(0, axis), ...idx, ...s.slice(axis + 1)];
  const data = x.values(0);
  const at = x.ints(1);
  let values: SymDim[] | undefined;
  if (data && at && s.length === 1) {
    values = [];
    for (const i of at) {
      const v = data[i < 0 ? i + data.length : i];
      if (!v) {
        values = undefined;
        break;
      }
      values.push(v);
    }
  }
  return [{ dims, ...(values ? { values } : {}) }];
}

function transposeRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  if (!s) return [{ dims: undefined }];
  const perm = x.node.attribute('perm') ? x.node.getInts('perm') : s.map((_, i) => s.length - 1 - i);
  return [{ dims: perm.map((p) => s[p]!) }];
}

function expandRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  const t = x.values(1);
  if (!s || !t) {
    const n = x.shape(1)?.[0]?.value;
    return [{ dims: n !== undefined && s ? Array.from({ length: Math.max(n, s.length) }, (_, i) => x.fresh(0, i)) : undefined }];
  }
  return [{ dims: broadcast(s, t) }];
}

function tileRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  const r = x.values(1);
  if (!s) return [{ dims: undefined }];
  if (!r || r.length !== s.length) return [{ dims: s.map((_, i) => x.fresh(0, i)) }];
  return [{ dims: s.map((d, i) => d.mul(r[i]!)) }];
}

function shapeRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  if (!s) return [{ dims: undefined }];
  let start = x.node.attribute('start') ? x.node.getInt('start') : 0;
  let end = x.node.attribute('end') ? x.node.getInt('end') : s.length;
  start = Math.min(Math.max(normAxis(start, s.length), 0), s.length);
  end = Math.min(Math.max(normAxis(end, s.length), 0), s.length);
  const values = s.slice(start, Math.max(start, end));
  return [{ dims: [c(values.length)], values }];
}

function constantRule(x: RuleContext): (ValueShape | undefined)[] {
  const out = x.node.outputs[0]!;
  const t = constantTensorNumbers(out, MAX_VALUES);
  if (!t) return [undefined];
  return [{ dims: t.dims.map(c), ...(t.numbers && isIntType(t.dataType) ? { values: t.numbers.map(c) } : {}) }];
}

function constantOfShapeRule(x: RuleContext): (ValueShape | undefined)[] {
  const v = x.values(0);
  if (!v) {
    const n = x.shape(0)?.[0]?.value;
    return [{ dims: n !== undefined ? Array.from({ length: n }, (_, i) => x.fresh(0, i)) : undefined }];
  }
  const fill = x.node.getTensor('value');
  const total = product(v).value;
  let values: SymDim[] | undefined;
  if (total !== undefined && total <= MAX_VALUES && v.length <= 1) {
    const f = fill && isIntType(fill.dataType) ? (fill.toNumbers()[0] ?? 0) : fill ? undefined : 0;
    if (f !== undefined && (!fill || isIntType(fill.dataType))) values = Array.from({ length: total }, () => c(f));
  }
  return [{ dims: v, ...(values ? { values } : {}) }];
}

function rangeRule(x: RuleContext): (ValueShape | undefined)[] {
  const [s, l, d] = [x.values(0)?.[0], x.values(1)?.[0], x.values(2)?.[0]];
  const start = s?.value;
  const limit = l?.value;
  const delta = d?.value;
  if (start !== undefined && limit !== undefined && delta !== undefined && delta !== 0) {
    const n = Math.max(0, Math.ceil((limit - start) / delta));
    const values = n <= MAX_VALUES ? Array.from({ length: n }, (_, i) => c(start + i * delta)) : undefined;
    return [{ dims: [c(n)], ...(values ? { values } : {}) }];
  }
  if (s && l && delta === 1) return [{ dims: [l.sub(s)] }];
  return [{ dims: [x.fresh(0, 0)] }];
}

function matmulRule(x: RuleContext): (ValueShape | undefined)[] {
  return [{ dims: matmulShape(x.shape(0), x.shape(1)) }];
}

function gemmRule(x: RuleContext): (ValueShape | undefined)[] {
  const a = x.shape(0);
  const b = x.shape(1);
  if (!a || !b || a.length !== 2 || b.length !== 2) return [{ dims: undefined }];
  const m = x.node.getInt('transA', 0) ? a[1]! : a[0]!;
  const n = x.node.getInt('transB', 0) ? b[0]! : b[1]!;
  return [{ dims: [m, n] }];
}

function einsumRule(x: RuleContext): (ValueShape | undefined)[] {
  const eq = x.node.getString('equation', '').replace(/\s+/g, '');
  const [lhs, rhs] = eq.split('->');
  if (!lhs || rhs === undefined) return [{ dims: undefined }];
  const terms = lhs.split(',');
  const sizes = new Map<string, SymDim>();
  let ellipsis: SymDim[] = [];
  for (let t = 0; t < terms.length; t++) {
    const s = x.shape(t);
    if (!s) return [{ dims: undefined }];
    const term = terms[t]!;
    const dots = term.indexOf('...');
    const letters = term.replace('...', '');
    const nEll = dots >= 0 ? s.length - letters.length : 0;
    let k = 0;
    for (let i = 0; i < term.length; i++) {
      if (term.startsWith('...', i)) {
        ellipsis = broadcast(ellipsis, s.slice(k, k + nEll));
        k += nEll;
        i += 2;
        continue;
      }
      const d = s[k++]!;
      const prev = sizes.get(term[i]!);
      sizes.set(term[i]!, prev && prev.value !== 1 ? prev : d);
    }
  }
  const dims: SymDim[] = [];
  for (let i = 0; i < rhs.length; i++) {
    if (rhs.startsWith('...', i)) {
      dims.push(...ellipsis);
      i += 2;
      continue;
    }
    const d = sizes.get(rhs[i]!);
    if (!d) return [{ dims: undefined }];
    dims.push(d);
  }
  return [{ dims }];
}

function convRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  const w = x.shape(1);
  if (!s || !w || s.length < 3) return [{ dims: undefined }];
  const spatial = s.length - 2;
  const kernel = x.node.attribute('kernel_shape') ? x.node.getInts('kernel_shape') : ints(w.slice(2));
  if (!kernel) return [{ dims: [s[0]!, w[0]!, ...s.slice(2).map((_, i) => x.fresh(0, i + 2))] }];
  const strides = x.node.attribute('strides') ? x.node.getInts('strides') : kernel.map(() => 1);
  const dil = x.node.attribute('dilations') ? x.node.getInts('dilations') : kernel.map(() => 1);
  const pads = x.node.attribute('pads') ? x.node.getInts('pads') : new Array<number>(2 * spatial).fill(0);
  const autoPad = x.node.getString('auto_pad', 'NOTSET');
  const out: SymDim[] = [s[0]!, w[0]!];
  for (let i = 0; i < spatial; i++) {
    const inp = s[i + 2]!;
    let d: SymDim | undefined;
    if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
      d = inp.value !== undefined ? c(Math.ceil(inp.value / strides[i]!)) : inp.div(strides[i]!);
    } else {
      d = windowed(inp, kernel[i]!, strides[i]!, dil[i]!, autoPad === 'VALID' ? 0 : pads[i]! + pads[i + spatial]!);
    }
    out.push(d ?? x.fresh(0, i + 2));
  }
  return [{ dims: out }];
}

function poolRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  if (!s || s.length < 3) return [{ dims: undefined }];
  const kernel = x.node.getInts('kernel_shape', []);
  const spatial = s.length - 2;
  const strides = x.node.attribute('strides') ? x.node.getInts('strides') : kernel.map(() => 1);
  const dil = x.node.attribute('dilations') ? x.node.getInts('dilations') : kernel.map(() => 1);
  const pads = x.node.attribute('pads') ? x.node.getInts('pads') : new Array<number>(2 * spatial).fill(0);
  const ceil = x.node.getInt('ceil_mode', 0) === 1;
  const out: SymDim[] = [s[0]!, s[1]!];
  for (let i = 0; i < spatial; i++) {
    out.push(windowed(s[i + 2]!, kernel[i] ?? 1, strides[i] ?? 1, dil[i] ?? 1, (pads[i] ?? 0) + (pads[i + spatial] ?? 0), ceil) ?? x.fresh(0, i + 2));
  }
  return x.node.outputs.map(() => ({ dims: out }));
}

function padRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  if (!s) return [{ dims: undefined }];
  const pads = x.opset >= 11 ? x.values(1) : x.node.getInts('pads', []).map(c);
  if (!pads) return [{ dims: s.map((_, i) => x.fresh(0, i)) }];
  const axes = x.opset >= 18 && x.node.inputs[3] ? x.ints(3) : s.map((_, i) => i);
  if (!axes) return [{ dims: s.map((_, i) => x.fresh(0, i)) }];
  const dims = s.slice();
  axes.forEach((a, i) => {
    const k = normAxis(a, s.length);
    dims[k] = dims[k]!.add(pads[i]!).add(pads[i + axes.length]!);
  });
  return [{ dims }];
}

function layerNormRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  const axis = s ? normAxis(x.node.getInt('axis', -1), s.length) : 0;
  const stat = s ? s.map((d, i) => (i < axis ? d : c(1))) : undefined;
  return x.node.outputs.map((_, i) => ({ dims: i === 0 ? s : stat }));
}

function skipLayerNormRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  const stat = s ? [...s.slice(0, -1), c(1)] : undefined;
  // outputs: output, mean, inv_std_var, input_skip_bias_sum
  return x.node.outputs.map((_, i) => ({ dims: i === 1 || i === 2 ? stat : s }));
}

function argRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  if (!s) return [{ dims: undefined }];
  const axis = normAxis(x.node.getInt('axis', 0), s.length);
  const keep = x.node.getInt('keepdims', 1) === 1;
  return [{ dims: keep ? s.map((d, i) => (i === axis ? c(1) : d)) : s.filter((_, i) => i !== axis) }];
}

function topKRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  if (!s) return [{ dims: undefined }, { dims: undefined }];
  const axis = normAxis(x.node.getInt('axis', -1), s.length);
  const k = x.opset >= 10 ? x.values(1)?.[0] : c(x.node.getInt('k'));
  const dims = s.map((d, i) => (i === axis ? (k ?? x.fresh(0, i)) : d));
  return [{ dims }, { dims }];
}

function oneHotRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  const depth = x.values(1)?.[0];
  if (!s) return [{ dims: undefined }];
  const rank = s.length + 1;
  const axis = normAxis(x.node.getInt('axis', -1), rank);
  const dims = s.slice();
  dims.splice(axis, 0, depth ?? x.fresh(0, axis));
  return [{ dims }];
}

function flattenRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  if (!s) return [{ dims: undefined }];
  const axis = normAxis(x.node.getInt('axis', 1), s.length);
  return [{ dims: [product(s.slice(0, axis)), product(s.slice(axis))] }];
}

function castRule(x: RuleContext): (ValueShape | undefined)[] {
  const to = x.node.attribute('to') ? (x.node.getInt('to') as DataType) : undefined;
  const ints = to === undefined || isIntType(to) ? x.values(0) : undefined;
  // to bool: nonzero → 1 (a value that is not a constant stays unknown)
  const values = to === DataType.BOOL ? (ints?.every((v) => v.isConstant) ? ints.map((v) => c(v.value ? 1 : 0)) : undefined) : ints;
  return [{ dims: x.shape(0), ...(values ? { values } : {}) }];
}

function identityRule(x: RuleContext): (ValueShape | undefined)[] {
  const values = x.values(0);
  return [{ dims: x.shape(0), ...(values ? { values } : {}) }];
}

function whereRule(x: RuleContext): (ValueShape | undefined)[] {
  const [a, b, d] = [x.shape(0), x.shape(1), x.shape(2)];
  const dims = a && b && d ? broadcast(broadcast(a, b), d) : undefined;
  // torch's Where(Equal(s, -1), ones, s): decided when the condition is known
  const cond = x.values(0);
  const t = x.values(1);
  const f = x.values(2);
  let values: SymDim[] | undefined;
  if (cond && t && f) {
    const n = Math.max(cond.length, t.length, f.length);
    values = [];
    for (let i = 0; i < n; i++) {
      const k = cond[cond.length === 1 ? 0 : i]?.value;
      if (k === undefined) {
        values = undefined;
        break;
      }
      values.push((k ? t : f)[k ? (t.length === 1 ? 0 : i) : f.length === 1 ? 0 : i]!);
    }
  }
  return [{ dims, ...(values && dims && dims.length <= 1 ? { values } : {}) }];
}

function equalRule(x: RuleContext): (ValueShape | undefined)[] {
  const dims = x.shape(0) && x.shape(1) ? broadcast(x.shape(0)!, x.shape(1)!) : undefined;
  const values = zipValues(x.values(0), x.values(1), (a, b) => {
    const r = a.compare(b);
    return r === undefined ? undefined : c(r ? 1 : 0);
  });
  return [{ dims, ...(values && dims && dims.length <= 1 ? { values } : {}) }];
}

/** torch.stack: ConcatFromSequence(SequenceConstruct(t…), axis, new_axis). */
function concatFromSequenceRule(x: RuleContext): (ValueShape | undefined)[] {
  const seq = x.node.inputs[0]?.producer;
  if (!seq || seq.opType !== 'SequenceConstruct' || seq.inputs.length === 0) return [{ dims: undefined }];
  const parts = seq.inputs.map((v) => x.analysis.shape(v));
  const first = parts[0];
  if (!first || parts.some((p) => !p || p.length !== first.length)) return [{ dims: undefined }];
  const newAxis = x.node.getInt('new_axis', 0) === 1;
  const rank = first.length + (newAxis ? 1 : 0);
  const axis = normAxis(x.node.getInt('axis'), rank);
  if (newAxis) {
    const dims = first.slice();
    dims.splice(axis, 0, c(parts.length));
    return [{ dims }];
  }
  const dims = first.slice();
  dims[axis] = parts.reduce((t, p) => t.add(p![axis]!), c(0));
  return [{ dims }];
}

function nonZeroRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  return [{ dims: s ? [c(s.length), x.fresh(0, 1)] : undefined }];
}

function sizeRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  return [{ dims: [], ...(s ? { values: [product(s)] } : {}) }];
}

// com.microsoft ----------------------------------------------------------------------------

function contribAttentionRule(x: RuleContext): (ValueShape | undefined)[] {
  const s = x.shape(0);
  const w = x.shape(1);
  const sizes = x.node.attribute('qkv_hidden_sizes') ? x.node.getInts('qkv_hidden_sizes') : undefined;
  const vHidden = sizes ? c(sizes[2]!) : w?.[1]?.div(3);
  const out = s && vHidden ? [s[0]!, s[1]!, vHidden] : undefined;
  return x.node.outputs.map((_, i) => (i === 0 ? { dims: out } : { dims: undefined }));
}

function multiHeadAttentionRule(x: RuleContext): (ValueShape | undefined)[] {
  const q = x.shape(0);
  const v = x.shape(2);
  const k = x.shape(1);
  let hidden: SymDim | undefined;
  if (v && v.length === 3) hidden = v[2];
  else if (v && v.length === 4) hidden = v[1]!.mul(v[3]!);
  else if (q && q.length === 5) hidden = q[2]!.mul(q[4]!);
  else if (q && q.length === 3 && !k) hidden = undefined;
  else if (q && q.length === 3) hidden = q[2];
  const out = q && hidden ? [q[0]!, q[1]!, hidden] : undefined;
  return x.node.outputs.map((_, i) => (i === 0 ? { dims: out } : { dims: undefined }));
}

function groupQueryAttentionRule(x: RuleContext): (ValueShape | undefined)[] {
  const q = x.shape(0);
  const hq = x.node.getInt('num_heads', 0);
  const hkv = x.node.getInt('kv_num_heads', 0);
  const packed = !x.node.inputs[1];
  let d: SymDim | undefined;
  if (q && q.length === 3) d = q[2]!.div(packed ? hq + 2 * hkv : hq);
  const out = q && d ? [q[0]!, q[1]!, d.mul(hq)] : undefined;
  // present key / value: the past's dims, but a length set by the total_sequence_length input
  const past = x.shape(3);
  const present = (i: number): SymDim[] | undefined => (past && past.length === 4 ? [past[0]!, past[1]!, x.fresh(i, 2), past[3]!] : undefined);
  return x.node.outputs.map((_, i) => ({ dims: i === 0 ? out : i <= 2 ? present(i) : undefined }));
}

function matMulNBitsRule(x: RuleContext): (ValueShape | undefined)[] {
  const a = x.shape(0);
  const n = x.node.getInt('N', 0);
  return [{ dims: a && n ? [...a.slice(0, -1), c(n)] : undefined }];
}

function fusedMatMulRule(x: RuleContext): (ValueShape | undefined)[] {
  const swap = (s: SymDim[] | undefined, t: number): SymDim[] | undefined =>
    s && t && s.length >= 2 ? [...s.slice(0, -2), s[s.length - 1]!, s[s.length - 2]!] : s;
  return [{ dims: matmulShape(swap(x.shape(0), x.node.getInt('transA', 0)), swap(x.shape(1), x.node.getInt('transB', 0))) }];
}

function onnxAttentionRule(x: RuleContext): (ValueShape | undefined)[] {
  const q = x.shape(0);
  const k = x.shape(1);
  const v = x.shape(2);
  let y: SymDim[] | undefined;
  if (q && v && q.length === 4 && v.length === 4) y = [q[0]!, q[1]!, q[2]!, v[3]!];
  else if (q && v && q.length === 3 && v.length === 3) {
    const hq = x.node.getInt('q_num_heads', 0);
    const hkv = x.node.getInt('kv_num_heads', 0);
    const dv = hkv ? v[2]!.div(hkv) : undefined;
    y = dv && hq ? [q[0]!, q[1]!, dv.mul(hq)] : undefined;
  }
  // present K/V: the past and the new keys along the sequence axis (4-D layouts)
  const present = (src: SymDim[] | undefined, pastAt: number): SymDim[] | undefined => {
    const p = x.shape(pastAt);
    if (!src || src.length !== 4) return undefined;
    return p && p.length === 4 ? [src[0]!, src[1]!, p[2]!.add(src[2]!), src[3]!] : src;
  };
  return x.node.outputs.map((_, i) => ({ dims: i === 0 ? y : i === 1 ? present(k, 4) : i === 2 ? present(v, 5) : undefined }));
}

// ---- the table ----------------------------------------------------------------------------

const UNARY = [
  'Neg', 'Abs', 'Sqrt', 'Exp', 'Log', 'Reciprocal', 'Sigmoid', 'Tanh', 'Relu', 'LeakyRelu', 'Elu', 'Selu', 'Celu', 'Gelu',
  'Erf', 'Softplus', 'Softsign', 'Sin', 'Cos', 'Tan', 'Asin', 'Acos', 'Atan', 'Sinh', 'Cosh', 'Floor', 'Ceil', 'Round',
  'Not', 'IsNaN', 'IsInf', 'Sign', 'HardSigmoid', 'HardSwish', 'Mish', 'Softmax', 'LogSoftmax', 'Hardmax', 'Trilu',
  'CumSum', 'Clip', 'BatchNormalization', 'InstanceNormalization', 'GroupNormalization', 'RMSNormalization',
  'LpNormalization', 'MeanVarianceNormalization', 'ThresholdedRelu', 'Shrink', 'BitwiseNot', 'ScatterElements',
  'ScatterND', 'Scatter', 'DequantizeLinear', 'QuantizeLinear', 'RotaryEmbedding', 'PRelu',
];
const BINARY_PLAIN = ['Pow', 'Mod', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor', 'BitShift', 'Mean', 'BitwiseAnd', 'BitwiseOr', 'BitwiseXor'];

const STANDARD: Record<string, Rule> = {
  Identity: identityRule,
  Cast: castRule,
  CastLike: same(),
  Dropout: sameAll,
  Add: broadcastRule((a, b) => a.add(b)),
  Sub: broadcastRule((a, b) => a.sub(b)),
  Mul: broadcastRule((a, b) => a.mul(b)),
  Div: broadcastRule(intDiv),
  Max: broadcastRule((a, b) => (a.value !== undefined && b.value !== undefined ? c(Math.max(a.value, b.value)) : a.equals(b) ? a : undefined)),
  Min: broadcastRule((a, b) => (a.value !== undefined && b.value !== undefined ? c(Math.min(a.value, b.value)) : a.equals(b) ? a : undefined)),
  Sum: broadcastRule((a, b) => a.add(b)),
  Equal: equalRule,
  Where: whereRule,
  Shape: shapeRule,
  Size: sizeRule,
  Constant: constantRule,
  ConstantOfShape: constantOfShapeRule,
  Range: rangeRule,
  Reshape: reshapeRule,
  Flatten: flattenRule,
  Squeeze: squeezeRule,
  Unsqueeze: unsqueezeRule,
  Transpose: transposeRule,
  Concat: concatRule,
  Split: splitRule,
  Slice: sliceRule,
  Gather: gatherRule,
  GatherElements: (x) => [{ dims: x.shape(1) }],
  Expand: expandRule,
  Tile: tileRule,
  Pad: padRule,
  MatMul: matmulRule,
  MatMulInteger: matmulRule,
  Gemm: gemmRule,
  Einsum: einsumRule,
  Conv: convRule,
  MaxPool: poolRule,
  AveragePool: poolRule,
  GlobalAveragePool: (x) => [{ dims: x.shape(0)?.map((d, i) => (i < 2 ? d : c(1))) }],
  GlobalMaxPool: (x) => [{ dims: x.shape(0)?.map((d, i) => (i < 2 ? d : c(1))) }],
  ReduceSum: reduceRule(13),
  ReduceMean: reduceRule(18),
  ReduceMax: reduceRule(18),
  ReduceMin: reduceRule(18),
  ReduceProd: reduceRule(18),
  ReduceL1: reduceRule(18),
  ReduceL2: reduceRule(18),
  ReduceSumSquare: reduceRule(18),
  ReduceLogSum: reduceRule(18),
  ReduceLogSumExp: reduceRule(18),
  ArgMax: argRule,
  ArgMin: argRule,
  TopK: topKRule,
  OneHot: oneHotRule,
  NonZero: nonZeroRule,
  ConcatFromSequence: concatFromSequenceRule,
  LayerNormalization: layerNormRule,
  Attention: onnxAttentionRule,
  DynamicQuantizeLinear: (x) => [{ dims: x.shape(0) }, { dims: [] }, { dims: [] }],
  QLinearMatMul: (x) => [{ dims: matmulShape(x.shape(0), x.shape(3)) }],
};
for (const op of UNARY) STANDARD[op] ??= op === 'PRelu' ? broadcastRule() : same();
for (const op of BINARY_PLAIN) STANDARD[op] = broadcastRule();

const MICROSOFT: Record<string, Rule> = {
  Attention: contribAttentionRule,
  MultiHeadAttention: multiHeadAttentionRule,
  GroupQueryAttention: groupQueryAttentionRule,
  RotaryEmbedding: same(),
  SkipLayerNormalization: skipLayerNormRule,
  SkipSimplifiedLayerNormalization: skipLayerNormRule,
  SimplifiedLayerNormalization: layerNormRule,
  LayerNormalization: layerNormRule,
  FastGelu: same(),
  BiasGelu: same(),
  Gelu: same(),
  QuickGelu: same(),
  BiasAdd: same(),
  MatMulNBits: matMulNBitsRule,
  FusedMatMul: fusedMatMulRule,
  DequantizeLinear: same(),
  QuantizeLinear: same(),
  MatMulIntegerToFloat: matmulRule,
  LinearAttention: (x) => [{ dims: x.shape(0) }],
};

/** The shape rule of an op, if titanize has one (for `inspect` and tests). */
export function shapeRuleOf(domain: string, opType: string): Rule | undefined {
  if (domain === '' || domain === 'ai.onnx') return STANDARD[opType];
  if (domain === 'com.microsoft') return MICROSOFT[opType] ?? STANDARD[opType];
  return undefined;
}

// ---- the driver ---------------------------------------------------------------------------

/** Producers before consumers, from the edges (independent of the node order in the file). */
function dataFlowOrder(graph: Graph): Node[] {
  // most files are stored sorted: then the file order is a data-flow order
  const seen = new Set<Node>();
  let sorted = true;
  for (const n of graph) {
    for (const v of n.inputs) {
      const p = v?.producer;
      if (p && p.graph === graph && !seen.has(p)) sorted = false;
    }
    if (!sorted) break;
    seen.add(n);
  }
  if (sorted) return graph.nodes();
  const done = new Set<Node>();
  const order: Node[] = [];
  for (const start of graph) {
    if (done.has(start)) continue;
    const stack: [Node, number][] = [[start, 0]];
    const onStack = new Set<Node>([start]);
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      const [n, i] = top;
      if (i < n.inputs.length) {
        top[1]++;
        const p = n.inputs[i]?.producer;
        if (p && p.graph === graph && !done.has(p) && !onStack.has(p)) {
          stack.push([p, 0]);
          onStack.add(p);
        }
        continue;
      }
      stack.pop();
      onStack.delete(n);
      done.add(n);
      order.push(n);
    }
  }
  return order;
}

export interface InferOptions {
  /** Shapes of the graph inputs to use instead of the declared ones (function bodies). */
  inputs?: Map<Value, ValueShape>;
  opset?: number;
}

/** Infers the shapes of every value of `model`'s main graph (or of `graph`). */
export function inferShapes(target: Model | Graph, options: InferOptions = {}): ShapeAnalysis {
  const graph = target instanceof Model ? target.graph : target;
  const model = target instanceof Model ? target : (graph.root.model ?? null);
  const opset = options.opset ?? model?.opsetVersion('') ?? 17;
  const a = new ShapeAnalysis(graph);
  const freshOf = (v: Value, axis: number): SymDim => SymDim.sym(`${v.name || '?'}[${axis}]`);
  for (const v of graph.inputs) {
    const given = options.inputs?.get(v);
    a.set(v, given ?? { dims: declared(v, (i) => freshOf(v, i)) });
  }
  for (const [, v] of graph.initializers) {
    if (a.get(v)) continue;
    const t = constantTensorNumbers(v, MAX_VALUES);
    if (t) a.set(v, { dims: t.dims.map(c), ...(t.numbers && isIntType(t.dataType) ? { values: t.numbers.map(c) } : {}) });
  }
  for (const n of dataFlowOrder(graph)) inferNode(a, n, opset, model, freshOf);
  return a;
}

function inferNode(a: ShapeAnalysis, n: Node, opset: number, model: Model | null, freshOf: (v: Value, axis: number) => SymDim): void {
  const ctx: RuleContext = {
    node: n,
    opset,
    shape: (i) => a.shape(n.inputs[i]),
    values: (i) => a.values(n.inputs[i]),
    ints: (i) => ints(a.values(n.inputs[i])),
    fresh: (out, axis) => freshOf(n.outputs[out] ?? n.outputs[0]!, axis),
    analysis: a,
    model,
  };
  let results: (ValueShape | undefined)[] = [];
  const rule = shapeRuleOf(n.domain, n.opType);
  // in a function body, an attribute may refer to the caller's (ref_attr_name): not known here
  const refersToCaller = [...n.attributes.values()].some((a) => a.refAttrName !== undefined);
  try {
    if (refersToCaller) {
      // a Constant whose value_float / value_int comes from the caller is still a scalar
      const scalarRef = n.opType === 'Constant' && [...n.attributes.values()].some((a) => a.name === 'value_float' || a.name === 'value_int');
      results = scalarRef ? [{ dims: [] }] : [];
    }
    else if (rule) results = rule(ctx);
    else if (model) results = functionCall(a, n, model, opset);
  } catch (e) {
    throw new Error(`shape inference failed at ${describeNode(n)}: ${(e as Error).message}`);
  }
  n.outputs.forEach((o, i) => {
    const r = results[i];
    const dims = r?.dims ?? declared(o, (axis) => freshOf(o, axis));
    a.set(o, { dims, ...(r?.values ? { values: r.values } : {}) });
  });
}


/** A call to a model-local function: its body is analysed with the caller's input shapes. */
function functionCall(a: ShapeAnalysis, n: Node, model: Model, opset: number): (ValueShape | undefined)[] {
  const fn = model.findFunction(n.domain, n.opType, (n as unknown as { overload?: string }).overload ?? '');
  if (!fn) return [];
  const inputs = new Map<Value, ValueShape>();
  fn.body.inputs.forEach((formal, i) => {
    const s = a.get(n.inputs[i]);
    if (s) inputs.set(formal, s);
  });
  const inner = inferShapes(fn.body, { inputs, opset: fn.opsetImports.get('') ?? opset });
  return fn.body.outputs.map((o) => inner.get(o));
}

/**
 * Rewrites a TorchScript export into the shapes PyTorch's dynamo exporter gives the same
 * attention, without changing what it computes (so the original PyTorch reference still
 * holds):
 *
 * - batched matmuls as aten.bmm: every 4-D operand is Expand-ed to its own shape and
 *   Reshape-d to 3-D [B·H, ·, ·] (Kᵀ folded into the Reshape of the expanded tensor),
 *   the 3-D product Reshape-d back to 4-D;
 * - the core (scores → softmax → P·V) outlined into a model-local function
 *   `pkg.torch.sdpa`, called once per layer, as dynamo keeps module/function boundaries.
 */
import { Builder, Graph, IRFunction, type Model, type Node, Value, toposort } from '../../src/ir/index.js';
import { discoverAttention } from '../../src/passes/index.js';

const DOMAIN = 'pkg.torch';

function bmm(b: Builder, a: Value, c: Value): Value {
  const to3 = (x: Value, name: string): Value => {
    const shape = b.op('Shape', [x]);
    const tail = b.op('Slice', [shape, b.ints([2]), b.ints([4])]);
    return b.op('Reshape', [b.op('Expand', [x, shape]), b.op('Concat', [b.ints([-1]), tail], { axis: 0 })], {}, { name });
  };
  const out3 = b.op('MatMul', [to3(a, 'view_a'), to3(c, 'view_b')], {}, { name: 'bmm' });
  const sa = b.op('Shape', [a]);
  const sc = b.op('Shape', [c]);
  const shape = b.op('Concat', [b.op('Slice', [sa, b.ints([0]), b.ints([3])]), b.op('Slice', [sc, b.ints([3]), b.ints([4])])], { axis: 0 });
  return b.op('Reshape', [out3, shape], {}, { name: 'view_out' });
}

/** Nodes computing `out` from `inputs` (stopping there), in graph order. */
function region(graph: Graph, out: Value, inputs: Set<Value>): Node[] {
  const set = new Set<Node>();
  const stack = [out];
  while (stack.length) {
    const v = stack.pop()!;
    if (inputs.has(v) || !v.producer || set.has(v.producer)) continue;
    set.add(v.producer);
    for (const i of v.producer.inputs) if (i) stack.push(i);
  }
  return graph.nodes().filter((n) => set.has(n));
}

export function toDynamoStyle(model: Model): Model {
  const g = model.graph;
  model.opsetImports.set(DOMAIN, 1);
  discoverAttention(model).sites.forEach((s, layer) => {
    for (const mm of [s.refs.qk!, s.refs.pv!]) {
      const b = new Builder(g, { before: mm, prefix: `/model/layers.${layer}/sdpa/` });
      const y = bmm(b, mm.inputs[0]!, mm.inputs[1]!);
      mm.output.replaceAllUsesWith(y);
      g.remove(mm);
    }
  });
  // outline each core: from its q, kᵀ, v and mask to the 4-D P·V product
  let fn: IRFunction | null = null;
  const byName = new Map<string, Value>();
  for (const n of g) for (const o of n.outputs) byName.set(o.name, o);
  discoverAttention(model).sites.forEach((s, layer) => {
    const behindView = (v: Value): Value => v.producer!.inputs[0]!.producer!.inputs[0]!; // Reshape(Expand(x))
    const qk = s.refs.qk!;
    const pv = s.refs.pv!;
    const out = pv.output.consumers().find((c) => c.opType === 'Reshape')!.output;
    const mask = s.mask.values[0] ? byName.get(s.mask.values[0]) ?? null : null;
    const boundary = [behindView(qk.inputs[0]!), behindView(qk.inputs[1]!), behindView(pv.inputs[1]!), ...(mask ? [mask] : [])];
    const nodes = region(g, out, new Set(boundary));
    if (!fn) {
      const body = new Graph('sdpa');
      fn = new IRFunction(DOMAIN, 'sdpa', body);
      fn.opsetImports.set('', model.opsetVersion('') ?? 17);
      const local = new Map<Value, Value>();
      boundary.forEach((v, i) => local.set(v, body.addInput(new Value(['query', 'key_t', 'value', 'mask'][i]!))));
      for (const n of nodes) {
        const inputs = n.inputs.map((x) => {
          if (!x) return null;
          const l = local.get(x);
          if (l) return l;
          if (!x.initializer) throw new Error(`the core of layer ${layer} reads '${x.name}' from outside`);
          // functions cannot read initializers: small constants are copied in
          const c = body.node({ opType: 'Constant', outputs: [`${x.name}_const`], attributes: { value: x.initializer } });
          local.set(x, c.output);
          return c.output;
        });
        const copy = body.node({ opType: n.opType, domain: n.domain, name: n.name.split('/').pop(), inputs, outputs: n.outputs.map((o) => o.name.split('/').pop()!), attributes: [...n.attributes.values()] });
        n.outputs.forEach((o, i) => local.set(o, copy.outputs[i]!));
      }
      body.setOutputs([local.get(out)!]);
      model.addFunction(fn);
    }
    const call = new Builder(g, { before: nodes[0]!, prefix: `/model/layers.${layer}/self_attn/` });
    const y = call.op('sdpa', boundary, {}, { name: 'sdpa', domain: DOMAIN });
    out.replaceAllUsesWith(y);
    for (const n of [...nodes].reverse()) if (n.outputs.every((o) => o.numUses === 0 && !o.isGraphOutput())) g.remove(n);
  });
  toposort(g);
  return model;
}

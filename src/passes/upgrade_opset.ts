/**
 * Raises the default-domain opset of a model: to 17 for exports at opset 13–16 (the LiZA
 * and MaG bodies need 17), to 27 for `--target onnx27` (LinearAttention). Between opset 13
 * and 27 most operator updates only widen the accepted types or add attributes whose
 * default keeps the old meaning (Reshape allowzero 14, Shape start/end 15, ScatterND /
 * ScatterElements reduction 16, RNN layout 14); the ones that change what a node means are
 * handled here or refused with the node named:
 *
 * - opset 14: BatchNormalization's training outputs (running mean/var instead of saved
 *   statistics) change meaning: a node with more than one output is refused.
 * - opset 16: RoiAlign gains `coordinate_transformation_mode`, default `half_pixel`; the
 *   old behaviour is `output_half_pixel` (set explicitly).
 * - opset 18: ReduceMean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare take `axes` as an
 *   input instead of an attribute (rewritten); Split gains `num_outputs` (compatible).
 * - opset 20: GridSample renames its modes (bilinear → linear, bicubic → cubic: rewritten);
 *   DFT takes `axis` as an input (refused).
 * - opset 21: GroupNormalization's scale and bias become per-channel (refused).
 *
 * The main graph, its subgraphs and the bodies of model-local functions that import an
 * older default opset are rewritten (by in-place rules of the pattern engine, named in the
 * nodes' provenance); those functions' imports are raised with the model's.
 */
import { AttributeType, type Graph, type IRFunction, IrError, type Model, UserInputError, bytesToString, describeNode } from '../ir/index.js';
import { applyRules } from './pattern/driver.js';
import { type Rule, defineRule } from './pattern/rule.js';

const REDUCE_AXES_TO_INPUT = new Set(['ReduceMean', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp', 'ReduceSumSquare']);

export interface UpgradeReport {
  from: number;
  to: number;
  /** What was rewritten, e.g. "ReduceMean axes → input ×5". */
  changes: string[];
}

export function upgradeOpset(model: Model, target: number): UpgradeReport {
  const from = model.opsetVersion('');
  if (from === undefined) throw new UserInputError('the model imports no default-domain opset');
  if (from >= target) return { from, to: from, changes: [] };
  if (from < 13) throw new UserInputError(`upgrading from opset ${from} is not supported (titanize upgrades from opset 13 or later)`);
  const counts = new Map<string, number>();
  const bump = (what: string): void => {
    counts.set(what, (counts.get(what) ?? 0) + 1);
  };
  // every graph to rewrite, with the opset its nodes are at: the main graph and its
  // subgraphs, and the bodies of functions importing an older default opset
  const graphs: { g: Graph; from: number }[] = [];
  const collect = (g: Graph, at: number): void => {
    graphs.push({ g, from: at });
    for (const n of g) for (const sub of n.subgraphs()) collect(sub, at);
  };
  collect(model.graph, from);
  const functions: IRFunction[] = [];
  for (const f of model.functions) {
    const at = defaultOpset(f);
    if (at === undefined || at >= target) continue;
    if (at < 13) throw new UserInputError(`cannot upgrade function ${f.domain}.${f.name} from opset ${at} (titanize upgrades from opset 13 or later)`);
    functions.push(f);
    collect(f.body, at);
  }
  // refuse first, so that a refused upgrade changes nothing
  for (const { g, from: at } of graphs) {
    for (const n of g) {
      if (!n.isOnnxDomain()) continue;
      if (n.opType === 'DFT' && at < 20 && target >= 20) throw refuse(n, at, target, 'DFT takes axis as an input from opset 20');
      if (n.opType === 'GroupNormalization' && at < 21 && target >= 21) throw refuse(n, at, target, 'GroupNormalization scale and bias change shape at opset 21');
      if (REDUCE_AXES_TO_INPUT.has(n.opType) && at < 18 && target >= 18 && n.attribute('axes') && n.attribute('axes')!.type !== AttributeType.INTS) {
        throw refuse(n, at, target, 'its axes attribute is not a list of ints');
      }
      if (n.opType === 'BatchNormalization' && at < 14 && target >= 14 && n.outputs.filter((o) => o.name).length > 1) {
        throw refuse(n, at, target, 'BatchNormalization in training mode (more than one output) changes its outputs at opset 14');
      }
    }
  }
  // the rewrites are in-place rules, run through the greedy driver per graph (they stop
  // matching what they changed), each graph at the opset its nodes are at
  for (const { g, from: at } of graphs) {
    const rules = upgradeRules(at, target, bump);
    if (!rules.length) continue;
    const r = applyRules(g, rules);
    if (!r.converged) throw new IrError(`the opset upgrade rules did not converge: ${r.stopReason}`);
  }
  model.opsetImports.set(model.opsetImports.has('') ? '' : 'ai.onnx', target);
  for (const f of functions) f.opsetImports.set(f.opsetImports.has('') ? '' : 'ai.onnx', target);
  if (functions.length) bump(`function opset ${functions.map((f) => `${f.domain}.${f.name}`).join(', ')} raised`);
  return { from, to: target, changes: [...counts].map(([k, v]) => `${k} ×${v}`) };
}

/** The names of the upgrade rules (provenance on the nodes they change). */
export const UPGRADE_RULES = ['opset18-reduce-axes-input', 'opset16-roialign-half-pixel', 'opset20-gridsample-modes'] as const;

/** The in-place rules that keep each node's meaning from opset `from` to `to`; `note` gets a line per change for the report. */
function upgradeRules(from: number, to: number, note: (what: string) => void): Rule[] {
  const rules: Rule[] = [];
  if (from < 18 && to >= 18) {
    rules.push(
      defineRule({
        name: UPGRADE_RULES[0],
        pattern: (op) => op.or(...[...REDUCE_AXES_TO_INPUT].map((t) => op.node(t, [op.var('x')], { attrs: { axes: (v) => v !== undefined } }))),
        rewrite(m, b) {
          const n = m.root;
          const axes = n.attribute('axes')!;
          n.attributes.delete('axes');
          n.appendInput(b.ints((axes.value as (number | bigint)[]).map(Number), 'axes'));
          note(`${n.opType} axes → input`);
          return n.outputs;
        },
      }),
    );
  }
  if (from < 16 && to >= 16) {
    rules.push(
      defineRule({
        name: UPGRADE_RULES[1],
        pattern: (op) => op.RoiAlign({ extraInputs: true, attrs: { coordinate_transformation_mode: undefined } }),
        rewrite(m) {
          m.root.setAttribute('coordinate_transformation_mode', 'output_half_pixel');
          note('RoiAlign coordinate_transformation_mode = output_half_pixel (the pre-16 behaviour)');
          return m.root.outputs;
        },
      }),
    );
  }
  if (from < 20 && to >= 20) {
    const renamed: Record<string, string> = { bilinear: 'linear', bicubic: 'cubic' };
    rules.push(
      defineRule({
        name: UPGRADE_RULES[2],
        pattern: (op) => op.GridSample({ extraInputs: true, attrs: { mode: (v) => typeof v === 'string' && v in renamed } }),
        rewrite(m) {
          const mode = bytesToString(m.root.attribute('mode')!.value as Uint8Array);
          m.root.setAttribute('mode', renamed[mode]!);
          note(`GridSample mode ${mode} → ${renamed[mode]}`);
          return m.root.outputs;
        },
      }),
    );
  }
  return rules;
}

function defaultOpset(f: IRFunction): number | undefined {
  return f.opsetImports.get('') ?? f.opsetImports.get('ai.onnx');
}

function refuse(n: Parameters<typeof describeNode>[0], from: number, to: number, why: string): UserInputError {
  return new UserInputError(`cannot upgrade opset ${from} → ${to}: ${describeNode(n)}: ${why}; use options.target = ort or portable`);
}

/**
 * Raises the default-domain opset of a model: to 17 for exports at opset 13–16 (the LiZA
 * and MaG bodies need 17), to 27 for `--target onnx27` (LinearAttention). Between opset 13
 * and 27 most operator updates only widen the accepted types or add attributes whose
 * default keeps the old meaning (Reshape allowzero 14, Shape start/end 15, ScatterND /
 * ScatterElements reduction 16, RNN layout 14); the ones that change what a node means are
 * handled here or refused with the node named:
 *
 * - opset 18: ReduceMean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare take `axes` as an
 *   input instead of an attribute (rewritten); Split gains `num_outputs` (compatible).
 * - opset 20: GridSample renames its modes (bilinear → linear, bicubic → cubic: rewritten);
 *   DFT takes `axis` as an input (refused).
 * - opset 21: GroupNormalization's scale and bias become per-channel (refused).
 *
 * Only the main graph and its subgraphs are changed; model-local functions keep their own
 * opset imports.
 */
import { AttributeType, Builder, type Graph, type Model, UserInputError, describeNode, walkNodes } from '../ir/index.js';

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
  // refuse first, so that a refused upgrade changes nothing
  for (const n of walkNodes(model.graph)) {
    if (!n.isOnnxDomain()) continue;
    if (n.opType === 'DFT' && from < 20 && target >= 20) throw refuse(n, from, target, 'DFT takes axis as an input from opset 20');
    if (n.opType === 'GroupNormalization' && from < 21 && target >= 21) throw refuse(n, from, target, 'GroupNormalization scale and bias change shape at opset 21');
  }
  const graphs: Graph[] = [];
  const collect = (g: Graph): void => {
    graphs.push(g);
    for (const n of g) for (const s of n.subgraphs()) collect(s);
  };
  collect(model.graph);
  for (const g of graphs) {
    for (const n of g) {
      if (!n.isOnnxDomain()) continue;
      if (REDUCE_AXES_TO_INPUT.has(n.opType) && from < 18 && target >= 18) {
        const axes = n.attribute('axes');
        if (axes) {
          if (axes.type !== AttributeType.INTS) throw refuse(n, from, target, 'its axes attribute is not a list of ints');
          const b = new Builder(g, { before: n, tag: 'upgrade-opset' });
          const c = b.ints(axes.value.map(Number), 'axes');
          n.attributes.delete('axes');
          n.appendInput(c);
          bump(`${n.opType} axes → input`);
        }
      }
      if (n.opType === 'GridSample' && from < 20 && target >= 20) {
        const mode = n.attribute('mode');
        if (mode && mode.type === AttributeType.STRING) {
          const m = new TextDecoder().decode(mode.value);
          const renamed = m === 'bilinear' ? 'linear' : m === 'bicubic' ? 'cubic' : m;
          if (renamed !== m) {
            n.setAttribute('mode', renamed);
            bump(`GridSample mode ${m} → ${renamed}`);
          }
        }
      }
    }
  }
  model.opsetImports.set(model.opsetImports.has('') ? '' : 'ai.onnx', target);
  return { from, to: target, changes: [...counts].map(([k, v]) => `${k} ×${v}`) };
}

function refuse(n: Parameters<typeof describeNode>[0], from: number, to: number, why: string): UserInputError {
  return new UserInputError(`cannot upgrade opset ${from} → ${to}: ${describeNode(n)}: ${why}; use --target ort or portable`);
}

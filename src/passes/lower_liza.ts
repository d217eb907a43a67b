/**
 * Lowering ai.tptt.LiZA for a target, as rewrite rules: each LiZA node is replaced, through
 * the greedy driver, by the subgraph an emitter of src/ops builds (com.microsoft.
 * LinearAttention for onnxruntime, LinearAttention at opset 27, or the standard-op chunked
 * body that training differentiates). The replacements keep the names of LiZA's outputs
 * (so graph outputs such as present_state, and the names recorded elsewhere, stay valid),
 * and every node created carries the rule's name as provenance.
 */
import { type Builder, type Graph, IrError, type Model, UserInputError, type Value, setMetadata } from '../ir/index.js';
import {
  CONTRIB_DOMAIN,
  LINEAR_ATTENTION_OPSET,
  LOWERED_LIZA_KEY,
  type LizaGraphInputs,
  type LizaGraphOutputs,
  type LizaOpAttributes,
  type LoweredLiza,
  TPTT_DOMAIN,
  emitLizaContrib,
  emitLizaOnnx27,
  lizaAttributesFromNode,
  lizaInput,
} from '../ops/index.js';
import { applyRules } from './pattern/driver.js';
import { type Rule, defineRule } from './pattern/rule.js';

/** Builds what a LiZA call computes at the builder's insertion point. */
export type LizaEmitter = (b: Builder, attrs: LizaOpAttributes, inputs: LizaGraphInputs) => LizaGraphOutputs;

export interface LoweringReport {
  /** Names of the LiZA nodes replaced. */
  lowered: string[];
}

/** Rule names (the provenance on the nodes they create). */
export const LOWER_CONTRIB_RULE = 'lower_contrib';
export const LOWER_ONNX27_RULE = 'lower_onnx27';

/**
 * The rule that replaces an ai.tptt.LiZA node by `emit`'s subgraph. The node where the
 * subgraph calls LinearAttention (or its first node) records the call it stands for
 * (metadata `titanize.liza`), so that training can raise it back to LiZA.
 */
export function lizaLoweringRule(name: string, emit: LizaEmitter): Rule {
  return defineRule({
    name,
    keepNames: true,
    pattern: (op) => op.LiZA(op.var('xq'), op.var('xk'), op.var('xv'), { domain: TPTT_DOMAIN, extraInputs: true }),
    rewrite(m, b) {
      const node = m.root;
      b.prefix = `${node.name || 'LiZA'}/`;
      const attrs = lizaAttributesFromNode(node);
      const out = emit(b, attrs, {
        xq: m.value('xq'),
        xk: m.value('xk'),
        xv: m.value('xv'),
        pastState: lizaInput(node, 3),
        pastWindow: lizaInput(node, 4),
        mask: lizaInput(node, 5),
      });
      const anchor = b.created.find((n) => n.opType === 'LinearAttention') ?? b.created[0];
      if (anchor) {
        const record: LoweredLiza = {
          attrs,
          inputs: node.inputs.map((v) => v?.name ?? ''),
          outputs: node.outputs.map((v) => v.name),
          metadata: node.metadataProps.map((p) => ({ key: p.key, value: p.value })),
        };
        setMetadata(anchor.metadataProps, LOWERED_LIZA_KEY, JSON.stringify(record));
      }
      const replacements: (Value | null)[] = [out.y, out.presentState, out.presentWindow];
      // outputs nobody reads are not replaced (they go with the node)
      return node.outputs.map((o, i) => (o.name !== '' && (o.numUses > 0 || o.isGraphOutput()) ? (replacements[i] ?? null) : null));
    },
  });
}

/**
 * Replaces every ai.tptt.LiZA node of the main graph through `rule`, then drops the LiZA
 * functions nobody calls any more.
 */
export function lowerLiza(model: Model, rule: Rule): LoweringReport {
  const lowered: string[] = [];
  const result = applyRules(model, [rule], {
    onRewrite: (e) => {
      lowered.push(e.rootNode.name);
    },
  });
  if (!result.converged) throw new IrError(`lowering ai.tptt.LiZA did not converge: ${result.stopReason}`);
  dropUncalledLizaFunctions(model);
  return { lowered };
}

function dropUncalledLizaFunctions(model: Model): void {
  const called = new Set<string>();
  const visit = (g: Graph): void => {
    for (const n of g) {
      if (n.domain === TPTT_DOMAIN) called.add(`${n.opType}::${n.overload}`);
      for (const s of n.subgraphs()) visit(s);
    }
  };
  visit(model.graph);
  for (const f of model.functions) if (f.domain !== TPTT_DOMAIN) visit(f.body);
  model.functions = model.functions.filter((f) => f.domain !== TPTT_DOMAIN || called.has(`${f.name}::${f.overload}`));
}

/**
 * Lowers every ai.tptt.LiZA node of the model's main graph to com.microsoft.LinearAttention
 * (adds the com.microsoft opset import). The model then needs onnxruntime >= 1.30.
 */
export function lowerLizaToContrib(model: Model): LoweringReport {
  const v = model.opsetVersion('');
  if (v === undefined || v < 17) {
    throw new UserInputError(`lowering ai.tptt.LiZA needs default-domain opset >= 17; the model imports ${v ?? 'none'}`);
  }
  model.requireOpset(CONTRIB_DOMAIN, 1);
  return lowerLiza(model, lizaLoweringRule(LOWER_CONTRIB_RULE, emitLizaContrib));
}

/**
 * Lowers every ai.tptt.LiZA node of the main graph to LinearAttention-27. The model must
 * already import the default domain at opset 27 (or import none: then 27 is added);
 * raising an older model's opset is a version conversion this function does not do.
 */
export function lowerLizaToOnnx27(model: Model): LoweringReport {
  try {
    model.requireOpset('', LINEAR_ATTENTION_OPSET);
  } catch (e) {
    if (e instanceof IrError) {
      throw new UserInputError(
        `lowering ai.tptt.LiZA to LinearAttention needs default-domain opset ${LINEAR_ATTENTION_OPSET}; the model imports ` +
          `${model.opsetVersion('')}. Convert the model to opset ${LINEAR_ATTENTION_OPSET} first, or lower to com.microsoft.LinearAttention instead.`,
        { cause: e },
      );
    }
    throw e;
  }
  return lowerLiza(model, lizaLoweringRule(LOWER_ONNX27_RULE, emitLizaOnnx27));
}

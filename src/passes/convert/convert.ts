/**
 * `convert`: every (selected) softmax attention becomes MaG(softmax, LiZA), with optional
 * sliding window and LoRA adapters, then ai.tptt.LiZA is lowered for the chosen target
 * and the graph is cleaned up. Runs as a list of passes through the PassManager, so a
 * failure names the pass and those that ran before it.
 */
import {
  type Model,
  type Node,
  UserInputError,
  eliminateDeadCode,
  getMetadata,
  setMetadata,
  toposort,
} from '../../ir/index.js';
import { LINEAR_ATTENTION_OPSET, TPTT_DOMAIN, lowerLizaToContrib, lowerLizaToOnnx27, type LoweringReport } from '../../ops/index.js';
import { type UpgradeReport, upgradeOpset } from '../upgrade_opset.js';
import { MIN_ONNX_OPSET } from '../../ops/schema.js';
import { type DecoderIO, findDecoderIO, writeDecoderIO } from '../analysis/io.js';
import { discoverAttention, isAttentionNode } from '../attention/discover.js';
import { functionContains, inlineFunctions } from '../inline_functions.js';
import type { AttentionDiscovery, AttentionSite } from '../attention/site.js';
import { type Pass, PassError, runPasses } from '../pass.js';
import { addLora, isLoraCapable, type LoraAdapter, type LoraTarget } from './lora.js';
import { type ConvertOptions, type ResolvedConvertOptions, resolveConvertOptions } from './options.js';
import { type ConvertedSite, TPTT_RULE, convertSite, valueIndex } from './tptt.js';
import { applyWindow } from './window.js';
import { addStateInputs, addStateOutputs, cutKvCache, dropKvCache, hasKvCache, positionsFromCache, removeUnusedPastInputs } from './recurrent.js';

/** Model metadata key that marks a converted model (its value: the options, as JSON). */
export const CONVERTED_KEY = 'titanize.converted';

export interface ConvertResult {
  report: ConvertReport;
  /** The rewritten sites with their IR values, for passes that continue from here. */
  sites: ConvertedSite[];
}

export interface ConvertReport {
  options: Omit<ResolvedConvertOptions, 'verify'>;
  sites: Omit<ConvertedSite, 'presentState' | 'presentWindow' | 'lizaNode' | 'values'>[];
  /** Sites found but left alone: not selected by --layers, or not convertible (with the reason). */
  skipped: { layer: number; reason: string }[];
  /** Softmax nodes that discovery did not take as attention. */
  rejected: { node: string; reason: string }[];
  windows: string[];
  /** Calls of model-local functions holding attention that were inlined first (one copy per layer). */
  inlined: string[];
  /** Recurrent decoding: state/window inputs and outputs added, KV cache inputs/outputs removed or cut. */
  state: { inputs: string[]; outputs: string[]; removedKv: string[]; cutKv: string[]; notes: string[] };
  lora: { target: string; a: string; b: string; rank: number; scale: number }[];
  /** New trainable/initial parameters: μ per layer and LoRA A/B elements. */
  parametersAdded: number;
  /** Node counts of the result by op (domain-qualified outside the default domain). */
  opsUsed: Record<string, number>;
  lowering: LoweringReport | null;
  /** `--target onnx27` on an older model: the default-domain opset was raised (what changed). */
  opsetUpgrade: UpgradeReport | null;
  nodesBefore: number;
  nodesAfter: number;
  /** Passes that ran, in order. */
  passes: string[];
}

/** Refuses models that titanize already converted (or that already use the ai.tptt domain). */
export function checkNotConverted(model: Model): void {
  const prev = getMetadata(model.metadataProps, CONVERTED_KEY);
  if (prev !== undefined) {
    throw new UserInputError(`this model was already converted by titanize (${prev}); convert the original export instead`);
  }
  if (model.opsetImports.has(TPTT_DOMAIN) || model.functions.some((f) => f.domain === TPTT_DOMAIN)) {
    throw new UserInputError(`this model already uses the ${TPTT_DOMAIN} domain; convert the original export instead`);
  }
}

/** Converts `model` in place and returns the report (what `titanize convert --json` prints). */
export function convert(model: Model, options: ConvertOptions = {}): ConvertReport {
  return convertModel(model, options).report;
}

/** Converts `model` in place; returns the report and the rewritten sites with their IR values. */
export function convertModel(model: Model, options: ConvertOptions = {}): ConvertResult {
  const opts = resolveConvertOptions(options);
  checkNotConverted(model);
  const nodesBefore = model.graph.size;
  let discovery: AttentionDiscovery | undefined;
  const converted: ConvertedSite[] = [];
  const skipped: { layer: number; reason: string }[] = [];
  const windows: string[] = [];
  const inlined: string[] = [];
  let io: DecoderIO | null = null;
  const statePairs: DecoderIO['pairs'] = [];
  let adapters: LoraAdapter[] = [];
  let lowering: LoweringReport | null = null;
  let opsetUpgrade: UpgradeReport | null = null;
  let selected: AttentionSite[] = [];
  const stateSites: AttentionSite[] = [];
  const state = { inputs: [] as string[], outputs: [] as string[], removedKv: [] as string[], cutKv: [] as string[], notes: [] as string[] };

  const passes: Pass[] = [];
  const declared = model.opsetVersion('');
  if (declared !== undefined && declared < MIN_ONNX_OPSET) {
    // the LiZA and MaG bodies need opset 17; the ops of older exports mean the same there
    // (upgradeOpset refuses the ones that do not)
    passes.push({
      name: 'upgrade-opset',
      inPlace: true,
      run(m) {
        opsetUpgrade = upgradeOpset(m, MIN_ONNX_OPSET);
        return { model: m, modified: true };
      },
    });
  }
  passes.push(
    {
      // attention inside model-local functions (dynamo exports): one copy per layer
      name: 'inline-attention-functions',
      inPlace: true,
      run(m) {
        const r = inlineFunctions(m, (fn) => functionContains(m, fn, isAttentionNode));
        inlined.push(...r.inlined);
        return { model: m, modified: r.inlined.length > 0 };
      },
    },
    {
      name: 'discover-attention',
      inPlace: true,
      changesInput: false,
      run(m) {
        discovery = discoverAttention(m);
        io = findDecoderIO(m, discovery);
        if (!discovery.sites.length) {
          const why = discovery.rejected.map((r) => `${r.node}: ${r.reason}`).slice(0, 5).join('; ');
          throw new UserInputError(`no softmax attention found${why ? ` (${why})` : ' (the model has no Softmax)'}`);
        }
        const have = new Set(discovery.sites.map((s) => s.layer));
        for (const l of opts.layers ?? []) {
          if (!have.has(l)) throw new UserInputError(`--layers: the model has no attention layer ${l} (layers: 0-${discovery.sites.length - 1})`);
        }
        for (const s of discovery.sites) {
          if (opts.layers && !opts.layers.includes(s.layer)) skipped.push({ layer: s.layer, reason: 'not selected by --layers' });
          else if (s.kind === 'cross' && !opts.cross) {
            const from = s.kvSource ? `the inputs '${s.kvSource.key}' and '${s.kvSource.value}'` : `'${s.k.input ?? '?'}'`;
            skipped.push({ layer: s.layer, reason: `cross-attention (keys and values from ${from}): kept as softmax attention (--cross converts it)` });
          } else if (s.mask.ignored.length && opts.strict) {
            throw new UserInputError(`layer ${s.layer}: the linear branch cannot express ${s.mask.ignored.join('; ')} (--strict); convert without --strict to keep them on the softmax branch only`);
          } else selected.push(s);
        }
        if (!selected.length) throw new UserInputError(`no attention layer to convert: ${skipped.map((s) => `layer ${s.layer}: ${s.reason}`).join('; ')}`);
        return { model: m, modified: false };
      },
    },
    {
      name: 'tptt-memory',
      inPlace: true,
      run(m) {
        toposort(m.graph);
        const index = valueIndex(m.graph);
        const w = opts.order + 1;
        selected.forEach((site, i) => {
          options.onProgress?.(i, selected.length, `layer ${site.layer}`);
          // a window limits self-attention's context; cross-attention reads the whole encoder
          // side, and its memory is rebuilt from it at each call (no state to carry)
          if (opts.window !== undefined && opts.mu < 1 && site.kind === 'self') windows.push(`layer ${site.layer}: ${applyWindow(m, site, opts.window)}`);
          const recurrent = opts.state && site.kind === 'self' && hasKvCache(site);
          const past = recurrent ? addStateInputs(m.graph, site, w) : undefined;
          const c = convertSite(m, site, opts, index, past);
          if (recurrent) {
            addStateOutputs(m.graph, site, c.presentState, c.presentWindow, w);
            stateSites.push(site);
            statePairs.push(
              { input: past!.state.name, output: c.presentState.name, layer: site.layer, kind: 'state' },
              { input: past!.window.name, output: c.presentWindow.name, layer: site.layer, kind: 'window' },
            );
          }
          converted.push(c);
        });
        options.onProgress?.(selected.length, selected.length, 'done');
        return { model: m, modified: converted.length > 0 };
      },
    },
  );
  if (opts.state) {
    passes.push({
      name: 'recurrent-state',
      inPlace: true,
      run(m) {
        if (!stateSites.length) return { model: m, modified: false };
        const dropped: AttentionSite[] = [];
        state.inputs.push(...statePairs.map((p) => p.input));
        state.outputs.push(...statePairs.map((p) => p.output));
        for (const site of stateSites) {
          if (opts.mu === 1) {
            state.removedKv.push(...dropKvCache(m, site));
            dropped.push(site);
          } else if (opts.window !== undefined) {
            if (site.refs.fused) state.notes.push(`layer ${site.layer}: the KV cache of ${site.nodes.fused} is kept whole (the fused op manages it)`);
            else {
              const positional = positionsFromCache(m.graph, site);
              if (positional) {
                throw new UserInputError(
                  `window ${opts.window}: the model computes its token positions from the length of the KV cache '${positional.name}', which the window cuts to ${opts.window - 1} positions (decoding would then use wrong positions); convert without a window, or with μ = 1 (no KV cache left: a counter of the tokens seen gives the positions)`,
                );
              }
              state.cutKv.push(...cutKvCache(m.graph, site, opts.window));
            }
          }
        }
        if (dropped.length) {
          const { removed, counter } = removeUnusedPastInputs(m, dropped, discovery!.sites, io!);
          state.removedKv.push(...removed);
          if (counter) {
            state.inputs.push(counter.input.name);
            state.outputs.push(counter.output.name);
            statePairs.push({ input: counter.input.name, output: counter.output.name, layer: -1, kind: 'length' });
          }
        }
        return { model: m, modified: true };
      },
    });
  }
  if (opts.loraRank !== undefined) {
    passes.push({
      name: 'lora',
      inPlace: true,
      run(m) {
        adapters = addLora(m, loraTargets(m, selected, opts.loraTargets), { rank: opts.loraRank!, alpha: opts.loraAlpha, seed: opts.seed });
        return { model: m, modified: adapters.length > 0 };
      },
    });
  }
  passes.push(cleanupPass('cleanup'));
  if (opts.target !== 'portable') {
    passes.push({
      name: `lower-${opts.target}`,
      inPlace: true,
      run(m) {
        if (opts.target === 'onnx27') {
          const first: UpgradeReport | null = opsetUpgrade;
          const up = upgradeOpset(m, LINEAR_ATTENTION_OPSET);
          opsetUpgrade = first ? { from: first.from, to: up.to, changes: [...first.changes, ...up.changes] } : up;
          // (model-local functions are rewritten and follow the model's default opset: onnxruntime requires it)
        }
        lowering = opts.target === 'ort' ? lowerLizaToContrib(m) : lowerLizaToOnnx27(m);
        return { model: m, modified: true };
      },
    });
    passes.push(cleanupPass('cleanup-after-lowering'));
  }
  let result;
  try {
    result = runPasses(model, passes, { verify: opts.verify });
  } catch (e) {
    // a problem with the user's model or options is reported as such, not as a pass failure
    if (e instanceof PassError && e.cause instanceof UserInputError) throw e.cause;
    throw e;
  }
  const { verify: _v, ...reported } = opts;
  setMetadata(model.metadataProps, CONVERTED_KEY, JSON.stringify(reported));
  if (io) {
    // the interface of the converted model: the original's roles, the pairs that are left, the new state pairs
    const inputs = new Set(model.graph.inputs.map((v) => v.name));
    const outputs = new Set(model.graph.outputs.map((v) => v.name));
    const base: DecoderIO = io;
    const pairs = [...base.pairs, ...statePairs].filter((p) => inputs.has(p.input) && outputs.has(p.output));
    writeDecoderIO(model, { ...base, pairs: pairs.sort((a, b) => a.layer - b.layer) });
  }
  const report: ConvertReport = {
    options: reported,
    sites: converted.map(({ presentState: _s, presentWindow: _w, lizaNode: _n, values: _v, ...rest }) => rest),
    skipped,
    rejected: (discovery?.rejected ?? []).map((r) => ({ node: r.node, reason: r.reason })),
    windows,
    inlined,
    state,
    lora: adapters.map((a) => ({ target: a.target, a: a.a.name, b: a.b.name, rank: a.rank, scale: a.scale })),
    parametersAdded: converted.filter((c) => c.mu).length + adapters.reduce((n, a) => n + a.rank * (a.in + a.out), 0),
    opsUsed: opCounts(model),
    lowering,
    opsetUpgrade,
    nodesBefore,
    nodesAfter: model.graph.size,
    passes: result.runs.map((r) => r.pass),
  };
  return { report, sites: converted };
}

/**
 * The q, k, v and output projection nodes of the converted sites (a packed projection
 * once); with 'all', also every other MatMul/Gemm of the main graph whose weight is a 2-D
 * initializer, named after the node (`linear.<node name>`).
 */
function loraTargets(model: Model, sites: AttentionSite[], which: 'attention' | 'all'): LoraTarget[] {
  const byName = new Map<string, Node>();
  for (const n of model.graph) if (n.name) byName.set(n.name, n);
  const seen = new Set<Node>();
  const out: LoraTarget[] = [];
  for (const s of sites) {
    for (const [which, p] of [['q', s.q], ['k', s.k], ['v', s.v], ['o', s.outputProjection]] as const) {
      // (keys / values read from graph inputs have no projection in the graph: no adapter)
      const node = p.node === null ? undefined : byName.get(p.node);
      if (!node || seen.has(node) || !isLoraCapable(node)) continue;
      seen.add(node);
      out.push({ node, name: `layers.${s.layer}.${p.packed ? 'qkv' : which}_proj` });
    }
  }
  if (which === 'all') {
    for (const node of model.graph) {
      if (seen.has(node) || !(node.is('MatMul') || node.is('Gemm'))) continue;
      const w = node.input(1);
      if (!w?.initializer || w.initializer.dims.length !== 2 || node.output.isGraphOutput()) continue;
      if (node.is('Gemm') && node.getInt('transA', 0) !== 0) continue;
      // a weight shared by several nodes (tied embeddings) could not be merged back in place
      if (w.consumers().length > 1) continue;
      seen.add(node);
      const base = (node.name || w.name).replace(/^\/+/, '').replace(/\/(MatMul|Gemm)$/, '').replace(/[^A-Za-z0-9_.]+/g, '.');
      out.push({ node, name: `linear.${base}` });
    }
  }
  return out;
}

/** Dead-code elimination and a stable topological sort of the main graph. */
function cleanupPass(name: string): Pass {
  return {
    name,
    inPlace: true,
    run(m) {
      const removed = eliminateDeadCode(m.graph);
      toposort(m.graph);
      return { model: m, modified: removed > 0 };
    },
  };
}

function opCounts(model: Model): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const n of model.graph) {
    const k = n.isOnnxDomain() ? n.opType : `${n.domain}::${n.opType}`;
    counts[k] = (counts[k] ?? 0) + 1;
  }
  return counts;
}

export { TPTT_RULE };

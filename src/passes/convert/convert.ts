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
import { LINEAR_ATTENTION_OPSET, TPTT_DOMAIN } from '../../ops/index.js';
import { LOWER_CONTRIB_RULE, LOWER_ONNX27_RULE, type LoweringReport, lowerLizaToContrib, lowerLizaToOnnx27 } from '../lower_liza.js';
import { UPGRADE_RULES, type UpgradeReport, upgradeOpset } from '../upgrade_opset.js';
import { MIN_ONNX_OPSET } from '../../ops/schema.js';
import { type DecoderIO, findDecoderIO, writeDecoderIO } from '../analysis/io.js';
import { discoverAttention, isAttentionNode } from '../attention/discover.js';
import { INLINE_RULE, functionContains, inlineFunctions } from '../inline_functions.js';
import type { AttentionDiscovery, AttentionSite } from '../attention/site.js';
import { type Pass, PassError, runPasses } from '../pass.js';
import { LORA_RULE, addLora, isLoraCapable, type LoraAdapter, type LoraTarget } from './lora.js';
import { type ConvertOptions, type ResolvedConvertOptions, resolveConvertOptions } from './options.js';
import { type ConvertedSite, TPTT_RULE, convertSite } from './tptt.js';
import { WINDOW_RULE, applyWindow } from './window.js';
import { RECURRENT_RULE, addStateInputs, addStateOutputs, cutKvCache, dropKvCache, hasKvCache, positionsFromCache, removeUnusedPastInputs } from './recurrent.js';

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

/**
 * What the passes of a conversion share: the resolved options and the analysis results,
 * keyed by IR objects (the discovered sites hold their nodes and values), filled in as the
 * pipeline runs. A user pass reads it (and may add to the report's lists).
 */
export interface ConvertContext {
  readonly options: ResolvedConvertOptions;
  /** The caller's options as given (for onProgress). */
  readonly given: ConvertOptions;
  discovery: AttentionDiscovery | null;
  io: DecoderIO | null;
  /** The sites the pipeline converts (after layers / cross / strict). */
  selected: AttentionSite[];
  skipped: { layer: number; reason: string }[];
  converted: ConvertedSite[];
  windows: string[];
  inlined: string[];
  /** Sites whose KV cache became a recurrent state, and the pairs recorded for them. */
  stateSites: AttentionSite[];
  statePairs: DecoderIO['pairs'];
  state: ConvertReport['state'];
  adapters: LoraAdapter[];
  lowering: LoweringReport | null;
  opsetUpgrade: UpgradeReport | null;
}

/**
 * One step of the conversion: a Pass (name, in place, run) that reads and fills the shared
 * context. `when` says whether the options call for it (a pass that does not apply is not
 * run, and `titanize passes` says when it applies); `effects` says what it changes.
 */
export interface ConvertPass {
  readonly name: string;
  /** One line for `titanize passes`. */
  readonly description: string;
  /** What it changes or produces, e.g. ['graph', 'inputs', 'outputs', 'context.selected']. */
  readonly effects: readonly string[];
  /** When it runs (prose, for `titanize passes`); absent: always. */
  readonly condition?: string;
  /** The pattern-engine rules it applies (their names are the provenance on the nodes they make). */
  readonly rules?: readonly string[];
  when?(ctx: ConvertContext, model: Model): boolean;
  run(model: Model, ctx: ConvertContext): { modified: boolean };
}

const upgradeOpsetPass: ConvertPass = {
  name: 'upgrade-opset',
  description: `raises the default-domain opset to ${MIN_ONNX_OPSET} (the LiZA and MaG bodies need it), rewriting the ops whose meaning changed`,
  effects: ['graph', 'opset', 'functions'],
  rules: UPGRADE_RULES,
  condition: `the model's default-domain opset is below ${MIN_ONNX_OPSET}`,
  when: (_ctx, m) => {
    const declared = m.opsetVersion('');
    return declared !== undefined && declared < MIN_ONNX_OPSET;
  },
  run(m, ctx) {
    ctx.opsetUpgrade = upgradeOpset(m, MIN_ONNX_OPSET);
    return { modified: true };
  },
};

const inlinePass: ConvertPass = {
  name: 'inline-attention-functions',
  description: 'inlines calls of model-local functions that hold attention (dynamo exports), one copy per layer',
  effects: ['graph', 'functions', 'context.inlined'],
  rules: [INLINE_RULE],
  run(m, ctx) {
    const r = inlineFunctions(m, (fn) => functionContains(m, fn, isAttentionNode));
    ctx.inlined.push(...r.inlined);
    return { modified: r.inlined.length > 0 };
  },
};

const discoverPass: ConvertPass = {
  name: 'discover-attention',
  description: 'finds the attention sites and the decoder interface, and selects the sites to convert (layers, cross, strict)',
  effects: ['context.discovery', 'context.io', 'context.selected', 'context.skipped'],
  run(m, ctx) {
    const opts = ctx.options;
    const discovery = discoverAttention(m);
    ctx.discovery = discovery;
    ctx.io = findDecoderIO(m, discovery);
    if (!discovery.sites.length) {
      const why = discovery.rejected.map((r) => `${r.node}: ${r.reason}`).slice(0, 5).join('; ');
      throw new UserInputError(`no softmax attention found${why ? ` (${why})` : ' (the model has no Softmax)'}`);
    }
    const have = new Set(discovery.sites.map((s) => s.layer));
    for (const l of opts.layers ?? []) {
      if (!have.has(l)) throw new UserInputError(`options.layers: the model has no attention layer ${l} (layers: 0-${discovery.sites.length - 1})`);
    }
    for (const s of discovery.sites) {
      if (opts.layers && !opts.layers.includes(s.layer)) ctx.skipped.push({ layer: s.layer, reason: 'not selected by options.layers' });
      else if (s.kind === 'cross' && !opts.cross) {
        const from = s.kvSource ? `the inputs '${s.kvSource.key}' and '${s.kvSource.value}'` : `'${s.k.input ?? '?'}'`;
        ctx.skipped.push({ layer: s.layer, reason: `cross-attention (keys and values from ${from}): kept as softmax attention (options.cross converts it)` });
      } else if (s.mask.ignored.length && opts.strict) {
        throw new UserInputError(`layer ${s.layer}: the linear branch cannot express ${s.mask.ignored.join('; ')} (options.strict); convert without options.strict to keep them on the softmax branch only`);
      } else ctx.selected.push(s);
    }
    if (!ctx.selected.length) throw new UserInputError(`no attention layer to convert: ${ctx.skipped.map((s) => `layer ${s.layer}: ${s.reason}`).join('; ')}`);
    return { modified: false };
  },
};

const memoryPass: ConvertPass = {
  name: 'tptt-memory',
  description: 'adds the LiZA memory and the MaG gate to every selected site (and the sliding window, and state inputs/outputs for KV-cache sites)',
  effects: ['graph', 'inputs', 'outputs', 'initializers', 'functions', 'context.converted', 'context.statePairs'],
  rules: [WINDOW_RULE, TPTT_RULE],
  run(m, ctx) {
    const opts = ctx.options;
    toposort(m.graph);
    const w = opts.order + 1;
    ctx.selected.forEach((site, i) => {
      ctx.given.onProgress?.(i, ctx.selected.length, `layer ${site.layer}`);
      // a window limits self-attention's context; cross-attention reads the whole encoder
      // side, and its memory is rebuilt from it at each call (no state to carry)
      if (opts.window !== undefined && opts.mu < 1 && site.kind === 'self') ctx.windows.push(`layer ${site.layer}: ${applyWindow(m, site, opts.window)}`);
      const recurrent = opts.state && site.kind === 'self' && hasKvCache(site);
      const past = recurrent ? addStateInputs(m.graph, site, w) : undefined;
      const c = convertSite(m, site, opts, past);
      if (recurrent) {
        // (a self-attention site always has its LiZA call)
        addStateOutputs(m.graph, site, c.presentState!, c.presentWindow!, w);
        ctx.stateSites.push(site);
        ctx.statePairs.push(
          { input: past!.state.name, output: c.presentState!.name, layer: site.layer, kind: 'state' },
          { input: past!.window.name, output: c.presentWindow!.name, layer: site.layer, kind: 'window' },
        );
      }
      ctx.converted.push(c);
    });
    ctx.given.onProgress?.(ctx.selected.length, ctx.selected.length, 'done');
    return { modified: ctx.converted.length > 0 };
  },
};

const recurrentPass: ConvertPass = {
  name: 'recurrent-state',
  description: 'KV caches of converted layers: dropped at μ = 1 (with a tokens-seen counter when nothing else tells the past length), cut to the window, or kept',
  effects: ['graph', 'inputs', 'outputs', 'context.state'],
  rules: [RECURRENT_RULE],
  condition: 'options.state (default) and a converted site has a KV cache',
  when: (ctx) => ctx.options.state && ctx.stateSites.length > 0,
  run(m, ctx) {
    const opts = ctx.options;
    const { state } = ctx;
    const dropped: AttentionSite[] = [];
    state.inputs.push(...ctx.statePairs.map((p) => p.input));
    state.outputs.push(...ctx.statePairs.map((p) => p.output));
    for (const site of ctx.stateSites) {
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
      const { removed, counter } = removeUnusedPastInputs(m, dropped, ctx.discovery!.sites, ctx.io!);
      state.removedKv.push(...removed);
      if (counter) {
        state.inputs.push(counter.input.name);
        state.outputs.push(counter.output.name);
        ctx.statePairs.push({ input: counter.input.name, output: counter.output.name, layer: -1, kind: 'length' });
      }
    }
    return { modified: true };
  },
};

const loraPass: ConvertPass = {
  name: 'lora',
  description: 'adds LoRA adapters (B = 0: nothing changes until trained) on the q, k, v and output projections (or every linear layer)',
  effects: ['graph', 'initializers', 'context.adapters'],
  rules: [LORA_RULE],
  condition: 'options.loraRank is set',
  when: (ctx) => ctx.options.loraRank !== undefined,
  run(m, ctx) {
    const opts = ctx.options;
    ctx.adapters = addLora(m, loraTargets(m, ctx.selected, opts.loraTargets), { rank: opts.loraRank!, alpha: opts.loraAlpha, seed: opts.seed });
    return { modified: ctx.adapters.length > 0 };
  },
};

const lowerPass: ConvertPass = {
  name: 'lower',
  description: 'lowers ai.tptt.LiZA for the target: com.microsoft.LinearAttention (ort) or LinearAttention at opset 27 (onnx27)',
  effects: ['graph', 'functions', 'opset', 'context.lowering'],
  rules: [LOWER_CONTRIB_RULE, LOWER_ONNX27_RULE, ...UPGRADE_RULES],
  condition: "options.target is 'ort' (default) or 'onnx27'",
  when: (ctx) => ctx.options.target !== 'portable',
  run(m, ctx) {
    if (ctx.options.target === 'onnx27') {
      const first: UpgradeReport | null = ctx.opsetUpgrade;
      const up = upgradeOpset(m, LINEAR_ATTENTION_OPSET);
      ctx.opsetUpgrade = first ? { from: first.from, to: up.to, changes: [...first.changes, ...up.changes] } : up;
      // (model-local functions are rewritten and follow the model's default opset: onnxruntime requires it)
    }
    ctx.lowering = ctx.options.target === 'ort' ? lowerLizaToContrib(m) : lowerLizaToOnnx27(m);
    return { modified: true };
  },
};

/** Dead-code elimination and a stable topological sort of the main graph. */
function cleanupPass(name: string, condition?: { text: string; when: (ctx: ConvertContext) => boolean }): ConvertPass {
  return {
    name,
    description: 'removes what nothing reads any more and sorts the graph',
    effects: ['graph'],
    condition: condition?.text,
    when: condition?.when,
    run(m, ctx) {
      let removed = eliminateDeadCode(m.graph);
      // cached cross keys and values that nothing reads any more (μ = 1 with --cross-state:
      // the memory reads its states input, and no softmax branch is left)
      for (const s of ctx.selected) {
        if (s.kind !== 'cross' || !s.kvSource) continue;
        for (const name of [s.kvSource.key, s.kvSource.value]) {
          const input = m.graph.inputs.find((v) => v.name === name);
          if (input && input.numUses === 0) {
            m.graph.removeInput(input);
            ctx.state.removedKv.push(name);
            removed++;
          }
        }
      }
      toposort(m.graph);
      return { modified: removed > 0 };
    },
  };
}

/**
 * The conversion as data: a named, ordered list of passes that a toolchain can list,
 * reorder and extend (`insertAfter('discover-attention', myPass)`), then run on a model.
 * `convertPipeline()` gives the built-in one; `convertModel` runs it.
 */
export class ConvertPipeline {
  readonly passes: ConvertPass[];

  constructor(passes: readonly ConvertPass[]) {
    this.passes = [...passes];
  }

  names(): string[] {
    return this.passes.map((p) => p.name);
  }

  private indexOf(name: string): number {
    const i = this.passes.findIndex((p) => p.name === name);
    if (i < 0) throw new UserInputError(`the conversion pipeline has no pass '${name}' (passes: ${this.names().join(', ')})`);
    return i;
  }

  private checkNew(pass: ConvertPass): void {
    if (!pass || typeof pass.name !== 'string' || !pass.name || typeof pass.run !== 'function') {
      throw new UserInputError('a pass needs a name (string) and a run(model, context) function');
    }
    if (this.passes.some((p) => p.name === pass.name)) throw new UserInputError(`the conversion pipeline already has a pass '${pass.name}'`);
  }

  insertAfter(name: string, pass: ConvertPass): this {
    this.checkNew(pass);
    this.passes.splice(this.indexOf(name) + 1, 0, pass);
    return this;
  }

  insertBefore(name: string, pass: ConvertPass): this {
    this.checkNew(pass);
    this.passes.splice(this.indexOf(name), 0, pass);
    return this;
  }

  remove(name: string): this {
    this.passes.splice(this.indexOf(name), 1);
    return this;
  }

  /** Converts `model` in place; returns the report and the rewritten sites with their IR values. */
  run(model: Model, options: ConvertOptions = {}): ConvertResult {
    const opts = resolveConvertOptions(options);
    checkNotConverted(model);
    const nodesBefore = model.graph.size;
    const ctx: ConvertContext = {
      options: opts,
      given: options,
      discovery: null,
      io: null,
      selected: [],
      skipped: [],
      converted: [],
      windows: [],
      inlined: [],
      stateSites: [],
      statePairs: [],
      state: { inputs: [], outputs: [], removedKv: [], cutKv: [], notes: [] },
      adapters: [],
      lowering: null,
      opsetUpgrade: null,
    };
    // each pass runs through the PassManager (verification after it, failures named with
    // the passes before them); whether it applies is decided when its turn comes
    const ran = new Set<string>();
    const steps: Pass[] = this.passes.map((p) => ({
      name: p.name,
      inPlace: true,
      run(m: Model) {
        if (p.when && !p.when(ctx, m)) return { model: m, modified: false, skipped: true };
        ran.add(p.name);
        return { model: m, modified: Boolean(p.run(m, ctx)?.modified) };
      },
    }));
    try {
      runPasses(model, steps, { verify: opts.verify });
    } catch (e) {
      // a problem with the user's model or options is reported as such, not as a pass failure
      if (e instanceof PassError && e.cause instanceof UserInputError) throw e.cause;
      throw e;
    }
    const { verify: _v, ...reported } = opts;
    setMetadata(model.metadataProps, CONVERTED_KEY, JSON.stringify(reported));
    if (ctx.io) {
      // the interface of the converted model: the original's roles, the pairs that are left, the new state pairs
      const inputs = new Set(model.graph.inputs.map((v) => v.name));
      const outputs = new Set(model.graph.outputs.map((v) => v.name));
      const base: DecoderIO = ctx.io;
      const pairs = [...base.pairs, ...ctx.statePairs].filter((p) => inputs.has(p.input) && outputs.has(p.output));
      writeDecoderIO(model, { ...base, pairs: pairs.sort((a, b) => a.layer - b.layer) });
    }
    const report: ConvertReport = {
      options: reported,
      sites: ctx.converted.map(({ presentState: _s, presentWindow: _w, lizaNode: _n, values: _v, ...rest }) => rest),
      skipped: ctx.skipped,
      rejected: (ctx.discovery?.rejected ?? []).map((r) => ({ node: r.node, reason: r.reason })),
      windows: ctx.windows,
      inlined: ctx.inlined,
      state: ctx.state,
      lora: ctx.adapters.map((a) => ({ target: a.target, a: a.a.name, b: a.b.name, rank: a.rank, scale: a.scale })),
      parametersAdded: ctx.converted.filter((c) => c.mu).length + ctx.adapters.reduce((n, a) => n + a.rank * (a.in + a.out), 0),
      opsUsed: opCounts(model),
      lowering: ctx.lowering,
      opsetUpgrade: ctx.opsetUpgrade,
      nodesBefore,
      nodesAfter: model.graph.size,
      passes: this.names().filter((n) => ran.has(n)),
    };
    return { report, sites: ctx.converted };
  }
}

/** The built-in conversion pipeline (a fresh copy: change it freely). */
export function convertPipeline(): ConvertPipeline {
  return new ConvertPipeline([
    upgradeOpsetPass,
    inlinePass,
    discoverPass,
    memoryPass,
    recurrentPass,
    loraPass,
    cleanupPass('cleanup'),
    lowerPass,
    cleanupPass('cleanup-after-lowering', { text: "options.target is 'ort' (default) or 'onnx27'", when: (ctx) => ctx.options.target !== 'portable' }),
  ]);
}

/** Converts `model` in place with the built-in pipeline; returns the report and the rewritten sites with their IR values. */
export function convertModel(model: Model, options: ConvertOptions = {}): ConvertResult {
  return convertPipeline().run(model, options);
}

/**
 * The q, k, v and output projection nodes of the converted sites (a packed projection
 * once); with 'all', also every other MatMul/Gemm of the main graph whose weight is a 2-D
 * initializer, named after the node (`linear.<node name>`).
 */
function loraTargets(model: Model, sites: AttentionSite[], which: 'attention' | 'all'): LoraTarget[] {
  const seen = new Set<Node>();
  const out: LoraTarget[] = [];
  for (const s of sites) {
    const r = s.refs.projections;
    for (const [which, p, node] of [['q', s.q, r.q.node], ['k', s.k, r.k.node], ['v', s.v, r.v.node], ['o', s.outputProjection, s.refs.outputProjection]] as const) {
      // (keys / values read from graph inputs have no projection in the graph: no adapter)
      // (a node the conversion removed, such as a fused op whose outputs nothing reads at μ = 1, takes none)
      if (!node || node.graph !== model.graph || seen.has(node) || !isLoraCapable(node)) continue;
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

function opCounts(model: Model): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const n of model.graph) {
    const k = n.isOnnxDomain() ? n.opType : `${n.domain}::${n.opType}`;
    counts[k] = (counts[k] ?? 0) + 1;
  }
  return counts;
}

export { TPTT_RULE };

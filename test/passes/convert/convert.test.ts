/**
 * `convert` on every fixture: μ = 0 reproduces the original, μ = 1 removes the softmax of
 * converted layers, and for μ ∈ {0.5, 1} and every rule each converted layer's mixed
 * output equals (1−μ)·a + μ·LiZA(q, k, v) computed by the TypeScript reference from the
 * layer's own projections. The three targets agree with each other.
 */
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Model, decodeModel, encodeModel, verifyModel } from '../../../src/ir/index.js';
import { loadModel } from '../../../src/node/index.js';
import { LIZA_RULES, type LizaRule } from '../../../src/ops/index.js';
import { convert, convertPipeline } from '../../../src/passes/convert/convert.js';
import { discoverAttention } from '../../../src/passes/attention/discover.js';
import type { ConvertTarget } from '../../../src/passes/convert/options.js';
import { loadRef, maxAbs, maxAbsDiff } from '../../helpers/compare.js';
import { checkConvertedLayers, runModel } from '../../helpers/layer_check.js';

const FIX = path.resolve(__dirname, '../../fixtures');
/** Exports of real library code (tools/gen_foreign_fixtures.py), under fixtures/foreign/. */
const FOREIGN = ['foreign/mha_encoder', 'foreign/mha_causal', 'foreign/mha_decoder', 'foreign/vit', 'foreign/swin', 'foreign/llama14', 'foreign/gptj', 'foreign/phi', 'foreign/encdec_decoder', 'foreign/encdec_decoder_past'];
const FIXTURES = ['llama', 'llama_past', 'qwen2', 'qwen2_past', 'gpt2', 'gpt2_past', 'bert', 'attention23', 'gqa_contrib', ...FOREIGN];

type Feeds = Record<string, ort.Tensor>;

function feedsOf(name: string): Feeds {
  const ref = loadRef(path.join(FIX, `${name}.ref.json`));
  const feeds: Feeds = {};
  for (const i of ref.inputs) feeds[i.name] = new ort.Tensor(i.dtype as 'int64' | 'float32', i.data as BigInt64Array | Float32Array, i.dims);
  return feeds;
}

const run = runModel;

/** Outputs of the model as the fixture declares them (logits, presents, ...). */
function modelOutputs(model: Model): string[] {
  return model.graph.outputs.map((v) => v.name);
}

/** max |a − b| relative to the reference's scale, over every declared output. */
function worst(a: Record<string, ort.Tensor>, b: Record<string, ort.Tensor>, names: string[]): number {
  let w = 0;
  for (const n of names) {
    const x = a[n]!.data as Float32Array;
    const y = b[n]!.data as Float32Array;
    w = Math.max(w, maxAbsDiff(x, y) / Math.max(1, maxAbs(y)));
  }
  return w;
}

const originals = new Map<string, Record<string, ort.Tensor>>();
async function original(name: string): Promise<Record<string, ort.Tensor>> {
  if (!originals.has(name)) originals.set(name, await run(loadModel(path.join(FIX, `${name}.onnx`)), feedsOf(name)));
  return originals.get(name)!;
}

describe('convert: μ = 0 reproduces the original model', () => {
  it.each(FIXTURES)('%s (all targets)', async (name) => {
    const base = await original(name);
    for (const target of ['portable', 'ort'] as ConvertTarget[]) {
      const m = loadModel(path.join(FIX, `${name}.onnx`));
      const outs = modelOutputs(m);
      const report = convert(m, { mu: 0, target });
      expect(report.sites.length).toBeGreaterThan(0);
      verifyModel(m);
      // (1−0)·a + 0·y = a exactly; what remains is fp32 noise from graph changes (none expected)
      expect(worst(await run(m, feedsOf(name)), base, outs), `${name} ${target}`).toBeLessThanOrEqual(1e-5);
    }
  });
});

describe('convert: μ = 1 is purely linear', () => {
  it.each(FIXTURES)('%s: no Softmax (or fused softmax attention) left in converted layers', async (name) => {
    const m = loadModel(path.join(FIX, `${name}.onnx`));
    const softmaxBefore = m.graph.nodes().filter((n) => n.opType === 'Softmax').map((n) => n.name);
    const r = convert(m, { mu: 1, target: 'portable' });
    // (a fused GroupQueryAttention goes once the recurrent-state pass drops its KV outputs)
    const left = m.graph.nodes().filter((n) => ['Softmax', 'Attention', 'GroupQueryAttention'].includes(n.opType)).map((n) => n.name);
    // only Softmaxes that are not attention (BERT's classifier) or not converted (cross-attention) remain
    const notAttention = softmaxBefore.filter((s) => r.rejected.some((x) => x.node === s));
    expect(left.length).toBe(notAttention.length + r.skipped.length);
    for (const s of notAttention) expect(left).toContain(s);
    expect(m.graph.nodes().some((n) => n.opType === 'MaG')).toBe(false);
  });
});

/** Per-layer check against the TS reference on the layer's own projections. */
async function checkLayers(name: string, rule: LizaRule, mu: number): Promise<number> {
  return checkConvertedLayers(loadModel(path.join(FIX, `${name}.onnx`)), feedsOf(name), rule, mu);
}

describe('convert: each converted layer equals (1−μ)·a + μ·LiZA_reference(q, k, v)', () => {
  for (const name of ['llama', 'qwen2_past', 'gpt2', 'bert', 'attention23', 'gqa_contrib', ...FOREIGN]) {
    it.each(LIZA_RULES)(`${name}: %s, μ = 0.5`, async (rule) => {
      // fp32 runtime (chunked WY form) vs float64 reference; y is RMS-normalised, O(1)
      expect(await checkLayers(name, rule, 0.5)).toBeLessThanOrEqual(2e-4);
    });
  }
  it.each(['llama', 'qwen2_past', 'gpt2', 'bert', 'attention23', 'gqa_contrib', ...FOREIGN])('%s: delta_product, μ = 1', async (name) => {
    expect(await checkLayers(name, 'delta_product', 1)).toBeLessThanOrEqual(2e-4);
  });
});

describe('convert: targets agree', () => {
  // onnxruntime 1.30 refuses ai.onnx opset 27 unless ALLOW_RELEASED_ONNX_OPSET_ONLY=0 (read
  // at session creation); with it, LinearAttention-27 runs through its ONNX function body
  const saved = process.env.ALLOW_RELEASED_ONNX_OPSET_ONLY;
  beforeAll(() => {
    process.env.ALLOW_RELEASED_ONNX_OPSET_ONLY = '0';
    console.log('convert targets: onnx27 runs with ALLOW_RELEASED_ONNX_OPSET_ONLY=0 (onnxruntime 1.30 supports ai.onnx up to opset 26 by default)');
  });
  afterAll(() => {
    if (saved === undefined) delete process.env.ALLOW_RELEASED_ONNX_OPSET_ONLY;
    else process.env.ALLOW_RELEASED_ONNX_OPSET_ONLY = saved;
  });

  it.each(['llama', 'gpt2_past', 'bert', 'attention23', 'foreign/llama14', 'foreign/mha_encoder'])('%s: ort, portable and onnx27 give the same outputs for every rule', async (name) => {
    for (const rule of LIZA_RULES) {
      const results: Record<string, ort.Tensor>[] = [];
      let outs: string[] = [];
      for (const target of ['portable', 'ort', 'onnx27'] as ConvertTarget[]) {
        const m = loadModel(path.join(FIX, `${name}.onnx`));
        outs = modelOutputs(m);
        const r = convert(m, { mu: 0.5, rule, target });
        if (target === 'onnx27') expect(m.opsetVersion('')).toBe(27);
        if (target === 'onnx27' && name === 'llama') expect(r.opsetUpgrade?.changes[0]).toBe('ReduceMean axes → input ×5');
        results.push(await run(m, feedsOf(name)));
      }
      // fp32 forms of the same math (chunked WY body, contrib kernel, LinearAttention's ONNX body)
      expect(worst(results[1]!, results[0]!, outs), `${name} ${rule} ort`).toBeLessThanOrEqual(1e-4);
      expect(worst(results[2]!, results[0]!, outs), `${name} ${rule} onnx27`).toBeLessThanOrEqual(1e-4);
    }
  });
});

describe('convert: refusals and options', () => {
  it('refuses to convert twice, also after a round trip', () => {
    const m = loadModel(path.join(FIX, 'llama.onnx'));
    convert(m, { target: 'portable' });
    expect(() => convert(m)).toThrow(/already converted by titanize/);
    expect(() => convert(decodeModel(encodeModel(m)))).toThrow(/already converted by titanize/);
  });

  it('keeps the input metadata and declares every opset the output uses', () => {
    for (const target of ['portable', 'ort'] as ConvertTarget[]) {
      const m = loadModel(path.join(FIX, 'llama.onnx'));
      m.metadataProps.push({ key: 'author', value: 'someone' });
      m.docString = 'original doc';
      const producer = m.producerName;
      convert(m, { target });
      const back = decodeModel(encodeModel(m));
      expect(back.metadataProps.find((e) => e.key === 'author')?.value).toBe('someone');
      expect(back.docString).toBe('original doc');
      expect(back.producerName).toBe(producer);
      const domains = new Set(back.graph.nodes().map((n) => n.domain));
      for (const d of domains) expect(back.opsetImports.has(d) || (d === '' && back.opsetImports.has('ai.onnx')), `domain '${d}'`).toBe(true);
      expect(domains.has(target === 'ort' ? 'com.microsoft' : 'ai.tptt')).toBe(true);
      verifyModel(back);
    }
  });

  it('converts only the selected layers and rejects unknown ones', () => {
    const m = loadModel(path.join(FIX, 'llama.onnx'));
    const r = convert(m, { layers: [1], target: 'portable' });
    expect(r.sites.map((s) => s.layer)).toEqual([1]);
    expect(r.skipped).toEqual([{ layer: 0, reason: 'not selected by options.layers' }]);
    expect(() => convert(loadModel(path.join(FIX, 'llama.onnx')), { layers: [7] })).toThrow(/no attention layer 7/);
  });

  it('a model without attention is refused with the reasons', () => {
    expect(() => convert(loadModel(path.join(FIX, 'functions.onnx')))).toThrow(/no softmax attention found/);
  });

  it('rejects bad options', () => {
    const m = () => loadModel(path.join(FIX, 'llama.onnx'));
    expect(() => convert(m(), { rule: 'nope' as LizaRule })).toThrow(/unknown rule 'nope'/);
    expect(() => convert(m(), { rule: 'delta', order: 3 })).toThrow(/needs a \*_product rule/);
    expect(() => convert(m(), { mu: 2 })).toThrow(/options\.mu must be in \[0, 1\]/);
    expect(() => convert(m(), { loraAlpha: 4 })).toThrow(/options\.loraAlpha needs options\.loraRank/);
  });

  it('adds LoRA adapters (fresh ones change nothing) and μ initializers named per layer', async () => {
    const m = loadModel(path.join(FIX, 'qwen2.onnx'));
    const outs = modelOutputs(m);
    const r = convert(m, { loraRank: 4, loraAlpha: 8, target: 'portable' });
    expect(r.lora.map((l) => l.target).sort()).toEqual(
      ['layers.0.k_proj', 'layers.0.o_proj', 'layers.0.q_proj', 'layers.0.v_proj', 'layers.1.k_proj', 'layers.1.o_proj', 'layers.1.q_proj', 'layers.1.v_proj'].sort(),
    );
    expect(m.graph.initializers.has('tptt.layers.0.mag.mu')).toBe(true);
    expect(r.parametersAdded).toBe(2 + sumLora(m));
    const plain = loadModel(path.join(FIX, 'qwen2.onnx'));
    convert(plain, { target: 'portable' });
    expect(worst(await run(m, feedsOf('qwen2')), await run(plain, feedsOf('qwen2')), outs)).toBe(0);
  });

  it('--lora-targets all adds adapters to every other internal linear layer too (MLPs)', async () => {
    const m = loadModel(path.join(FIX, 'llama.onnx'));
    const outs = modelOutputs(m);
    const r = convert(m, { loraRank: 2, loraTargets: 'all', target: 'portable' });
    const names = r.lora.map((l) => l.target);
    expect(names.filter((n) => n.startsWith('layers.'))).toHaveLength(8);
    expect(names.filter((n) => n.includes('mlp')).length).toBe(6);
    const plain = loadModel(path.join(FIX, 'llama.onnx'));
    convert(plain, { target: 'portable' });
    expect(worst(await run(m, feedsOf('llama')), await run(plain, feedsOf('llama')), outs)).toBe(0);
    expect(() => convert(loadModel(path.join(FIX, 'llama.onnx')), { loraTargets: 'all' })).toThrow(/options\.loraTargets needs options\.loraRank/);
  });

  it('a sliding window of the whole sequence changes nothing; a short one changes the softmax branch', async () => {
    const name = 'llama';
    const outs = modelOutputs(loadModel(path.join(FIX, `${name}.onnx`)));
    const plain = loadModel(path.join(FIX, `${name}.onnx`));
    convert(plain, { mu: 0.5, target: 'portable' });
    const wide = loadModel(path.join(FIX, `${name}.onnx`));
    const r = convert(wide, { mu: 0.5, window: 64, target: 'portable' });
    expect(r.windows).toHaveLength(2);
    expect(worst(await run(wide, feedsOf(name)), await run(plain, feedsOf(name)), outs)).toBeLessThanOrEqual(1e-6);
    const narrow = loadModel(path.join(FIX, `${name}.onnx`));
    convert(narrow, { mu: 0.5, window: 2, target: 'portable' });
    expect(worst(await run(narrow, feedsOf(name)), await run(plain, feedsOf(name)), outs)).toBeGreaterThan(1e-3);
  });

  it('every node the conversion adds or changes names the rule that did it (provenance)', () => {
    const original = loadModel(path.join(FIX, 'llama_past.onnx'));
    const before = new Set(original.graph.nodes().map((n) => n.name));
    const model = loadModel(path.join(FIX, 'llama_past.onnx'));
    convert(model, { mu: 0.5, window: 4, loraRank: 2, target: 'ort' });
    const rule = (n: { metadataProps: { key: string; value: string }[] }) => n.metadataProps.find((m) => m.key === 'titanize.rule')?.value;
    const added = model.graph.nodes().filter((n) => !before.has(n.name));
    expect(added.length).toBeGreaterThan(50);
    const counts: Record<string, number> = {};
    for (const n of added) counts[rule(n) ?? 'none'] = (counts[rule(n) ?? 'none'] ?? 0) + 1;
    expect(Object.keys(counts).sort()).toEqual(['lora', 'lower_contrib', 'recurrent-state', 'tptt', 'window']);
    // each is a rule the pipeline lists for one of its passes (titanize passes shows them)
    const listed = new Set(convertPipeline().passes.flatMap((p) => p.rules ?? []));
    for (const r of Object.keys(counts)) expect(listed.has(r), r).toBe(true);
    expect(model.graph.nodes().filter((n) => n.opType === 'LinearAttention').map(rule)).toEqual(['lower_contrib', 'lower_contrib']);
    // the window rewrites each layer's Softmax in place: the original node, stamped
    const softmaxes = model.graph.nodes().filter((n) => n.opType === 'Softmax');
    expect(softmaxes.map((n) => before.has(n.name) && rule(n))).toEqual(['window', 'window']);
  });

  it('an attention output that is also a graph output stays the softmax output; the report names values that exist', () => {
    for (const mu of [0.5, 1]) {
      const model = loadModel(path.join(FIX, 'llama.onnx'));
      const a = discoverAttention(model).sites[0]!.refs.output;
      const producer = a.producer!;
      model.graph.addOutput(a);
      const r = convert(model, { mu, target: 'portable' });
      const out = model.graph.outputs.find((v) => v.name === a.name)!;
      expect(out.producer, `μ = ${mu}`).toBe(producer);
      const names = new Set(model.graph.nodes().flatMap((n) => n.outputs.map((o) => o.name)));
      for (const s of r.sites) for (const v of [s.liza, s.mag]) if (v) expect(names.has(v), `μ = ${mu}: ${v}`).toBe(true);
    }
  });

  it('a window on GroupQueryAttention sets its local_window_size (in place, stamped): a window of the whole sequence changes nothing, one token less does', async () => {
    const model = loadModel(path.join(FIX, 'gqa_contrib.onnx'));
    const r = convert(model, { mu: 0.5, window: 8, target: 'portable' });
    const gqa = model.graph.nodes().filter((n) => n.opType === 'GroupQueryAttention');
    expect(gqa.length).toBeGreaterThan(0);
    for (const n of gqa) {
      expect(n.getInt('local_window_size')).toBe(8);
      expect(n.metadataProps.find((m) => m.key === 'titanize.rule')?.value).toBe('window');
    }
    expect(r.windows.every((w) => /local_window_size=8/.test(w))).toBe(true);
    // (onnxruntime ≥ 1.23 counts the current token in the window, as the band mask does)
    const f = feedsOf('gqa_contrib');
    const T = f.input_ids!.dims[1]! + (f['past_key_values.0.key']?.dims[2] ?? 0); // the past and the new tokens
    const outs = modelOutputs(loadModel(path.join(FIX, 'gqa_contrib.onnx')));
    const at = async (window?: number) => {
      const m = loadModel(path.join(FIX, 'gqa_contrib.onnx'));
      convert(m, { mu: 0.5, window, target: 'portable' });
      return run(m, feedsOf('gqa_contrib'));
    };
    const plain = await at();
    expect(worst(await at(T), plain, outs)).toBeLessThanOrEqual(1e-6);
    expect(worst(await at(T - 1), plain, outs)).toBeGreaterThan(1e-4);
  });
});

function sumLora(m: Model): number {
  let n = 0;
  for (const [k, v] of m.graph.initializers) if (k.startsWith('lora.')) n += v.initializer!.size;
  return n;
}

describe('convert: what the linear branch cannot express', () => {
  it('Swin: the relative position bias and the shifted-window mask are reported, and --strict refuses them', () => {
    const r = convert(loadModel(path.join(FIX, 'foreign/swin.onnx')), { mu: 0.5 });
    expect(r.sites.map((s) => s.ignored.length)).toEqual([1, 2]);
    expect(r.sites[1]!.ignored.join(' | ')).toMatch(/window mask/);
    expect(() => convert(loadModel(path.join(FIX, 'foreign/swin.onnx')), { strict: true })).toThrow(
      /layer 0: the linear branch cannot express bias '.*' added to the scores .*\(options\.strict\)/,
    );
    // a plain causal decoder has nothing to ignore, so --strict converts it
    expect(convert(loadModel(path.join(FIX, 'llama.onnx')), { strict: true }).sites.every((s) => s.ignored.length === 0)).toBe(true);
  });
});

/**
 * The browser page (web/index.html), bundled by tools/build-web.mjs: open an ONNX file (or
 * the bundled example), list its attention sites, convert it here (titanize's IR and
 * passes, the browser-safe core), run it with onnxruntime-web (WebGPU when the browser has
 * it, else WebAssembly, saying which), generate text with the example's tokenizer, and
 * download the converted file.
 *
 * `window.titanize` exposes the same steps to scripts (the end-to-end test drives them).
 */
import { Tokenizer } from '@huggingface/tokenizers';
import * as ort from 'onnxruntime-web/all';
import { type AttentionReport, DataType, type Model, attentionReport, blobSource, convert, decodeModel, decoderIO, discoverAttention, encodeModel } from '../src/browser.js';

const EXAMPLE = { model: './example/lm.onnx', tokenizer: './example/tokenizer.json' };
ort.env.wasm.wasmPaths = new URL('./ort/', location.href).href;
// one thread: no cross-origin isolation is needed to serve the page
ort.env.wasm.numThreads = 1;

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const status = (text: string): void => {
  $('status').textContent = text;
};

interface PageState {
  name: string;
  original: Uint8Array | null;
  /** External data files chosen with the model (weights read from them only when needed). */
  dataFiles: File[];
  model: Model | null;
  converted: Uint8Array | null;
  session: ort.InferenceSession | null;
  backend: string;
  tokenizer: Tokenizer | null;
}

const state: PageState = { name: '', original: null, dataFiles: [], model: null, converted: null, session: null, backend: '', tokenizer: null };

async function fetchBytes(url: string): Promise<Uint8Array> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return new Uint8Array(await r.arrayBuffer());
}

/** Decodes the open model, its external weights (if any) read lazily from the chosen data files. */
async function decodeOpen(): Promise<Model> {
  if (!state.dataFiles.length) return decodeModel(state.original!);
  const source = blobSource(state.dataFiles);
  const model = decodeModel(state.original!, { externalData: source });
  // the small tensors passes look at (shapes, scales) are read now; big weights stay in the files
  await source.prefetch(model);
  return model;
}

/** Reads a model from its bytes (and external data files) and lists its attention sites. */
async function openModel(name: string, bytes: Uint8Array, dataFiles: File[] = []): Promise<AttentionReport> {
  state.name = name;
  state.original = bytes;
  state.dataFiles = dataFiles;
  state.model = await decodeOpen();
  state.converted = null;
  state.session = null;
  const report = attentionReport(discoverAttention(state.model));
  const rows = report.sites.map((s) => `<tr><td>${s.layer}</td><td>${s.form}</td><td>${s.kind}</td><td>${s.numHeads}</td><td>${s.numKvHeads}</td><td>${s.headDim}</td><td>${s.causal ? 'yes' : 'no'}</td><td>${s.mask.kind}</td></tr>`);
  $('sites').querySelector('tbody')!.innerHTML = rows.join('') || '<tr><td colspan="8">no attention found</td></tr>';
  const data = dataFiles.length ? ` + external data ${dataFiles.map((f) => `${f.name} (${(f.size / 1024).toFixed(0)} KiB)`).join(', ')}` : '';
  $('model-info').textContent = `${name}: ${(bytes.length / 1024).toFixed(0)} KiB${data}, ${state.model.graph.nodes().length} nodes, ${report.sites.length} attention sites${report.rejected.length ? `, ${report.rejected.length} other Softmax` : ''}`;
  $<HTMLButtonElement>('convert').disabled = report.sites.length === 0;
  $<HTMLButtonElement>('generate').disabled = true;
  status(`opened ${name}`);
  return report;
}

/** Creates a session on WebGPU when the browser offers it, else on WebAssembly (and says why). */
async function openSession(bytes: Uint8Array): Promise<{ session: ort.InferenceSession; backend: string }> {
  // onnxruntime-web takes external data as bytes (the runtime needs the weights in memory)
  const externalData = await Promise.all(state.dataFiles.map(async (f) => ({ path: f.name, data: new Uint8Array(await f.arrayBuffer()) })));
  const extra = externalData.length ? { externalData } : {};
  let why = 'this browser has no WebGPU (navigator.gpu)';
  if ('gpu' in navigator) {
    try {
      const adapter = await (navigator as unknown as { gpu: { requestAdapter(): Promise<unknown> } }).gpu.requestAdapter();
      if (adapter) return { session: await ort.InferenceSession.create(bytes, { executionProviders: ['webgpu'], ...extra }), backend: 'webgpu' };
      why = 'the browser found no WebGPU adapter';
    } catch (e) {
      why = `WebGPU failed (${(e as Error).message.split('\n')[0]})`;
    }
  }
  return { session: await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'], ...extra }), backend: `wasm (${why}; fell back to WebAssembly)` };
}

/** Converts the open model with `options` (titanize's passes, here in the page) and opens it in onnxruntime-web. */
async function convertOpen(options: { rule?: string; mu?: number } = {}): Promise<{ bytes: number; backend: string }> {
  if (!state.original) throw new Error('open a model first');
  const model = await decodeOpen();
  const t0 = performance.now();
  const report = convert(model, { target: 'ort', ...(options as object) });
  state.model = model;
  state.converted = encodeModel(model);
  const ms = performance.now() - t0;
  const opened = await openSession(state.converted);
  state.session = opened.session;
  state.backend = opened.backend;
  const link = $<HTMLAnchorElement>('download');
  // (external weights stay references to the chosen data files: keep those beside the download)
  link.href = URL.createObjectURL(new Blob([state.converted as Uint8Array<ArrayBuffer>], { type: 'application/octet-stream' }));
  link.download = state.name.replace(/\.onnx$/, '') + '.titan.onnx';
  link.hidden = false;
  $<HTMLButtonElement>('generate').disabled = !state.tokenizer;
  status(`converted ${report.sites.length} layers in ${ms.toFixed(0)} ms (rule ${report.options.rule}, μ ${report.options.mu}); running on ${state.backend}`);
  return { bytes: state.converted.length, backend: state.backend };
}

/**
 * Feeds for one row of token ids by the roles of the model's decoder interface (token ids,
 * mask, positions, token types), carried inputs empty: the whole sequence is computed.
 */
function feedsFor(ids: number[]): Record<string, ort.Tensor> {
  const model = state.model!;
  const io = decoderIO(model);
  const T = ids.length;
  const feeds: Record<string, ort.Tensor> = {};
  const ints = (f: (i: number) => number): ort.Tensor => new ort.Tensor('int64', BigInt64Array.from({ length: T }, (_, i) => BigInt(f(i))), [1, T]);
  for (const v of model.graph.inputs) {
    if (v.initializer) continue;
    if (v.name === io.tokens) feeds[v.name] = ints((i) => ids[i]!);
    else if (v.name === io.mask) feeds[v.name] = ints(() => 1);
    else if (v.name === io.positions) feeds[v.name] = ints((i) => i);
    else if (v.name === io.tokenTypes) feeds[v.name] = ints(() => 0);
    else if (io.pairs.some((p) => p.input === v.name)) {
      const t = v.type;
      const dims = t?.kind === 'tensor' && t.shape ? t.shape.map((d, i) => (i === 0 ? 1 : (d.value ?? 0))) : [];
      const n = dims.reduce((a, b) => a * b, 1);
      feeds[v.name] = t?.kind === 'tensor' && t.elemType === DataType.INT64 ? new ort.Tensor('int64', new BigInt64Array(n), dims) : new ort.Tensor('float32', new Float32Array(n), dims);
    } else throw new Error(`the page cannot make the model input '${v.name}'`);
  }
  return feeds;
}

/** Logits [T, V] of one row of ids, from the converted model in onnxruntime-web. */
async function logits(ids: number[]): Promise<number[]> {
  if (!state.session) throw new Error('convert a model first');
  const out = await state.session.run(feedsFor(ids));
  const name = decoderIO(state.model!).logits ?? state.session.outputNames[0]!;
  return Array.from(out[name]!.data as Float32Array);
}

/** Greedy generation of `count` tokens after `ids`. */
async function generateIds(ids: number[], count: number, onToken?: (all: number[]) => void): Promise<number[]> {
  const seq = [...ids];
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const l = await logits(seq);
    const V = l.length / seq.length;
    const last = l.slice((seq.length - 1) * V);
    let best = 0;
    for (let v = 1; v < V; v++) if (last[v]! > last[best]!) best = v;
    seq.push(best);
    out.push(best);
    onToken?.(out);
  }
  return out;
}

async function loadExample(): Promise<AttentionReport> {
  status('loading the bundled example…');
  const [bytes, tok] = await Promise.all([fetchBytes(EXAMPLE.model), fetch(EXAMPLE.tokenizer).then((r) => r.json())]);
  state.tokenizer = new Tokenizer(tok, {});
  return await openModel('lm.onnx', bytes);
}

async function generateText(prompt: string, count: number): Promise<string> {
  if (!state.tokenizer) throw new Error('no tokenizer: use the bundled example');
  const tok = state.tokenizer;
  const ids = Array.from(tok.encode(prompt).ids as ArrayLike<number>, Number);
  const t0 = performance.now();
  const out = await generateIds(ids, count, (so) => {
    $('output').textContent = prompt + tok.decode(so);
  });
  status(`generated ${count} tokens in ${(performance.now() - t0).toFixed(0)} ms on ${state.backend}`);
  return tok.decode(out);
}

const guard = (f: () => Promise<unknown>) => () => f().catch((e: Error) => status(`error: ${e.message}`));
$('example').addEventListener('click', guard(loadExample));
$<HTMLInputElement>('file').addEventListener(
  'change',
  guard(async () => {
    const files = Array.from($<HTMLInputElement>('file').files ?? []);
    const model = files.find((f) => f.name.endsWith('.onnx')) ?? files[0];
    if (model) await openModel(model.name, new Uint8Array(await model.arrayBuffer()), files.filter((f) => f !== model));
  }),
);
$('convert').addEventListener('click', guard(() => convertOpen({ rule: $<HTMLSelectElement>('rule').value, mu: Number($<HTMLInputElement>('mu').value) })));
$('generate').addEventListener('click', guard(() => generateText($<HTMLInputElement>('prompt').value, Number($<HTMLInputElement>('count').value))));

declare global {
  interface Window {
    titanize: unknown;
  }
}
window.titanize = {
  loadExample,
  convert: convertOpen,
  logits,
  generateIds,
  generateText,
  converted: () => Array.from(state.converted ?? []),
  backend: () => state.backend,
};
status('ready: open an .onnx file or use the bundled example');

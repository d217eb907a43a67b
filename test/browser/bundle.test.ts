/**
 * The browser-safe entry (src/browser.ts: IR, ops, passes) bundles for the browser and runs
 * there. esbuild bundles it for platform 'browser', where a Node built-in ('node:fs', 'fs',
 * ...) cannot be resolved, and the metafile is scanned for any that slipped through; the
 * TypeScript checker finds uses of Node globals (process, Buffer, __dirname, require, ...)
 * in the sources. The bundle is then evaluated in a fresh JavaScript realm that has only
 * what a browser has (no process, Buffer, require), where it decodes test/fixtures/llama.onnx
 * from its bytes, discovers its attention, converts it (--target ort) and encodes it again:
 * byte for byte what the Node path (loadModel, the same passes) produces. External weights
 * come from bytes or Blobs there, and stay lazy.
 */
import * as fs from 'node:fs';
import { builtinModules } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';
import * as vm from 'node:vm';
import { build, type Metafile } from 'esbuild';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeModel } from '../../src/ir/index.js';
import { loadModel, saveModel } from '../../src/node/index.js';
import { discoverAttention } from '../../src/passes/index.js';
import { convert } from '../../src/passes/convert/index.js';
import type * as Browser from '../../src/browser.js';

const ROOT = path.resolve(__dirname, '../..');
const ENTRY = path.join(ROOT, 'src/browser.ts');
const LLAMA = path.join(ROOT, 'test/fixtures/llama.onnx');
const OPTIONS = { target: 'ort' } as const;
const NODE_BUILTINS = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
const isBuiltin = (p: string): boolean => p.startsWith('node:') || NODE_BUILTINS.has(p) || NODE_BUILTINS.has(p.split('/')[0]!);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-browser-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function bundle(format: 'esm' | 'iife'): Promise<{ code: string; metafile: Metafile }> {
  const result = await build({
    entryPoints: [ENTRY],
    bundle: true,
    platform: 'browser',
    format,
    globalName: format === 'iife' ? 'titanize' : undefined,
    target: 'es2022',
    write: false,
    metafile: true,
    logLevel: 'silent',
    absWorkingDir: ROOT,
  }).catch((e: { errors?: { text: string; location?: { file: string; line: number } | null }[] }) => {
    const lines = (e.errors ?? []).map((x) => `${x.text}${x.location ? ` (${x.location.file}:${x.location.line})` : ''}`);
    throw new Error(`src/browser.ts does not bundle for the browser:\n  ${lines.join('\n  ') || String(e)}`);
  });
  return { code: result.outputFiles[0]!.text, metafile: result.metafile };
}

/** Evaluates the IIFE bundle in a new realm with a browser's globals only; returns its exports. */
function browserRealm(code: string): { api: typeof Browser; realm: vm.Context } {
  const realm = vm.createContext({
    console,
    TextEncoder,
    TextDecoder,
    Blob,
    URL,
    atob,
    btoa,
    queueMicrotask,
    setTimeout,
    clearTimeout,
    structuredClone,
    performance,
  });
  vm.runInContext(code, realm, { filename: 'titanize.browser.js' });
  return { api: vm.runInContext('titanize', realm) as typeof Browser, realm };
}

describe('the browser-safe entry', () => {
  let esm: { code: string; metafile: Metafile };
  let api: typeof Browser;
  let realm: vm.Context;
  /** Bytes made in the browser realm (its Uint8Array, as fetch or File.arrayBuffer would give). */
  let bytesIn: (b: Uint8Array) => Uint8Array;

  beforeAll(async () => {
    esm = await bundle('esm');
    ({ api, realm } = browserRealm((await bundle('iife')).code));
    bytesIn = vm.runInContext('(b) => new Uint8Array(b)', realm) as (b: Uint8Array) => Uint8Array;
  });

  it('bundles for platform browser with no Node built-in among its inputs and imports', () => {
    const inputs = Object.entries(esm.metafile.inputs);
    expect(inputs.length).toBeGreaterThan(50);
    const builtins = inputs.flatMap(([file, input]) => [
      ...(isBuiltin(file) ? [file] : []),
      // (esbuild lists TypeScript imports used only as types as external, unresolved relative paths)
      ...input.imports.filter((i) => isBuiltin(i.path) || (i.external && !i.path.startsWith('.'))).map((i) => `${file} imports ${i.path}`),
    ]);
    expect(builtins).toEqual([]);
    // none of the Node layer, the runtime or onnxruntime is in it
    const layers = inputs.map(([file]) => file).filter((f) => /^src\/(node|runtime|cli)\/|onnxruntime/.test(f));
    expect(layers).toEqual([]);
    expect(inputs.some(([f]) => f === 'src/passes/convert/convert.ts')).toBe(true);
  });

  it('its sources use no Node global (process, Buffer, __dirname, require, ...)', () => {
    const config = ts.getParsedCommandLineOfConfigFile(path.join(ROOT, 'tsconfig.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} })!;
    const program = ts.createProgram({ rootNames: [ENTRY], options: { ...config.options, noEmit: true } });
    const checker = program.getTypeChecker();
    const fromNodeTypes = (d: ts.Declaration): boolean => /[\\/]@types[\\/]node[\\/]/.test(d.getSourceFile().fileName);
    const sources = program.getSourceFiles().filter((f) => !f.isDeclarationFile && f.fileName.startsWith(path.join(ROOT, 'src')));
    expect(sources.length).toBeGreaterThan(50);
    // the globals only @types/node declares (value or type); an identifier is checked only when it has one of their names
    const nodeOnly = new Set(
      checker
        .getSymbolsInScope(sources[0]!, ts.SymbolFlags.Value | ts.SymbolFlags.Type | ts.SymbolFlags.Namespace)
        .filter((s) => s.declarations?.length && s.declarations.every(fromNodeTypes))
        .map((s) => s.name),
    );
    expect([...nodeOnly]).toEqual(expect.arrayContaining(['process', 'Buffer', '__dirname', 'require', 'NodeJS']));
    const uses: string[] = [];
    for (const sf of sources) {
      const visit = (n: ts.Node): void => {
        if (ts.isIdentifier(n) && nodeOnly.has(n.text)) {
          const s = checker.getSymbolAtLocation(n);
          if (s?.declarations?.length && s.declarations.every(fromNodeTypes)) {
            const { line } = sf.getLineAndCharacterOfPosition(n.getStart());
            uses.push(`${path.relative(ROOT, sf.fileName)}:${line + 1} ${n.text}`);
          }
        }
        ts.forEachChild(n, visit);
      };
      visit(sf);
    }
    expect(uses).toEqual([]);
  }, 120_000);

  it('decodes, discovers, converts (--target ort) and encodes llama.onnx from its bytes, as the Node path does', () => {
    const node = loadModel(LLAMA);
    const nodeSites = discoverAttention(node).sites.length;
    const nodeReport = convert(node, OPTIONS);
    const expected = encodeModel(node);

    const model = api.decodeModel(bytesIn(fs.readFileSync(LLAMA)));
    expect(model.baseDir).toBeUndefined();
    const { sites } = api.discoverAttention(model);
    expect(sites.length).toBe(nodeSites);
    expect(sites.length).toBeGreaterThan(0);
    const report = api.convert(model, OPTIONS);
    expect(report.sites.length).toBe(nodeReport.sites.length);
    const out = api.encodeModel(model);
    expect(Object.getPrototypeOf(out)).toBe(vm.runInContext('Uint8Array.prototype', realm));
    expect(Buffer.compare(Buffer.from(out.buffer, out.byteOffset, out.byteLength), expected)).toBe(0);
  });

  it('the ESM bundle imports and gives the same bytes', async () => {
    const file = path.join(tmp, 'titanize.browser.mjs');
    fs.writeFileSync(file, esm.code);
    const mod = (await import(file)) as typeof Browser;
    const model = mod.decodeModel(new Uint8Array(fs.readFileSync(LLAMA)));
    mod.convert(model, OPTIONS);
    const node = loadModel(LLAMA);
    convert(node, OPTIONS);
    expect(Buffer.compare(mod.encodeModel(model), encodeModel(node))).toBe(0);
  });

  describe('external data from bytes and Blobs', () => {
    let file: string;
    let modelBytes: Buffer;
    let data: Buffer;
    let expected: Uint8Array;

    beforeAll(() => {
      file = path.join(tmp, 'ext', 'llama.onnx');
      fs.mkdirSync(path.dirname(file));
      saveModel(loadModel(LLAMA), file, { externalData: { location: 'llama.onnx.data', threshold: 1024 } });
      modelBytes = fs.readFileSync(file);
      data = fs.readFileSync(`${file}.data`);
      const node = loadModel(file);
      convert(node, OPTIONS);
      expected = encodeModel(node);
    });

    const external = (m: Browser.Model): Browser.Tensor[] => [...api.allTensors(m)].filter((t) => t.isExternal);

    it('bytesSource: weights read on demand, never while converting; the same bytes as the Node path', () => {
      const reads: string[] = [];
      const bytes = api.bytesSource({ './llama.onnx.data': bytesIn(data) });
      const counting: Browser.ExternalDataSource = { ...bytes, read: (l, o, n) => (reads.push(`${l}@${o}`), bytes.read(l, o, n)) };
      const model = api.decodeModel(bytesIn(modelBytes), { externalData: counting });
      const weights = external(model);
      expect(weights.length).toBeGreaterThan(5);
      api.checkExternalFiles(model);
      api.convert(model, OPTIONS);
      const out = api.encodeModel(model);
      expect(reads).toEqual([]);
      expect(Buffer.compare(Buffer.from(out.buffer, out.byteOffset, out.byteLength), expected)).toBe(0);
      // the values, when asked for, are the Node file source's
      const node = loadModel(file);
      const w = weights[0]!;
      const want = node.graph.initializers.get(w.name)!.initializer!.rawBytes();
      expect(Buffer.compare(Buffer.from(w.rawBytes()), Buffer.from(want))).toBe(0);
      expect(reads).toEqual([`llama.onnx.data@${(w.storage as { ref: { offset: number } }).ref.offset}`]);
    });

    it('blobSource: asynchronous reads, prefetch for synchronous ones outside a Worker', async () => {
      const source = api.blobSource([new File([new Uint8Array(data)], 'llama.onnx.data')]);
      const model = api.decodeModel(bytesIn(modelBytes), { externalData: source });
      api.checkExternalFiles(model);
      const w = external(model)[0]!;
      // no FileReaderSync here (as on a browser's main thread)
      expect(() => w.rawBytes()).toThrow(/cannot open external data file 'llama.onnx.data' \(a Blob can be read synchronously only in a Web Worker/);
      const ref = (w.storage as { ref: Browser.ExternalDataRef }).ref;
      const want = loadModel(file).graph.initializers.get(w.name)!.initializer!.rawBytes();
      expect(Buffer.compare(Buffer.from(await api.readExternalAsync(ref, w.name)), Buffer.from(want))).toBe(0);
      await source.prefetch(model);
      expect(Buffer.compare(Buffer.from(w.rawBytes()), Buffer.from(want))).toBe(0);
      api.convert(model, OPTIONS);
      const out = api.encodeModel(model);
      expect(Buffer.compare(Buffer.from(out.buffer, out.byteOffset, out.byteLength), expected)).toBe(0);
    });

    it('without a source the model decodes, and reading a weight says what to give', () => {
      const model = api.decodeModel(bytesIn(modelBytes));
      const w = external(model)[0]!;
      expect(() => w.rawBytes()).toThrow(/external data 'llama.onnx.data', and there is nothing to read it from/);
      expect(() => api.checkExternalFiles(model)).toThrow(api.ExternalDataError);
      // a missing file and a short one
      const wrong = api.decodeModel(bytesIn(modelBytes), { externalData: api.bytesSource({ 'other.data': bytesIn(data) }) });
      expect(() => api.checkExternalFiles(wrong)).toThrow(/external data file 'llama.onnx.data' is missing \(not among the files given\)/);
      expect(() => external(wrong)[0]!.rawBytes()).toThrow(/cannot open external data file 'llama.onnx.data' \(no file 'llama.onnx.data' among the 1 given \(other.data\)\)/);
      const short = api.decodeModel(bytesIn(modelBytes), { externalData: api.bytesSource({ 'llama.onnx.data': bytesIn(data.subarray(0, 100)) }) });
      expect(() => api.checkExternalFiles(short)).toThrow(/has 100 bytes, but the tensor needs bytes up to/);
    });

    it('paths that leave the model folder are refused by their text', () => {
      for (const [location, message] of [
        ['../w.bin', /escapes the model folder/],
        ['sub/../../w.bin', /escapes the model folder/],
        ['..\\w.bin', /escapes the model folder/],
        ['.', /escapes the model folder/],
        ['/etc/passwd', /is absolute/],
        ['C:\\w.bin', /is absolute/],
      ] as const) {
        expect(() => api.checkLocation(location, 'w'), location).toThrow(message);
      }
      for (const ok of ['w.bin', './w.bin', 'sub/w.bin', 'sub/../w.bin', '..w.bin']) expect(() => api.checkLocation(ok, 'w'), ok).not.toThrow();
    });
  });
});

/**
 * The browser page, end to end in a real browser: tools/build-web.mjs bundles web/app.ts
 * (titanize's browser-safe core + onnxruntime-web), a loopback server serves it, and
 * Debian's Chromium (headless, driven by playwright-core; no browser download) opens it.
 * In the page: the bundled example is opened, its sites listed, converted (the IR and the
 * passes run in the browser) and run with onnxruntime-web. Checked against Node on the same
 * example: the converted bytes are identical, the logits equal onnxruntime-node's (1e-4
 * relative: wasm SIMD vs native kernels, float32), greedy generation gives the same
 * tokens. A screenshot of the page is taken (to TITANIZE_WEB_SCREENSHOT, e.g. docs/web.png
 * for the README, else a temporary file).
 *
 * Skipped (and says so) where /usr/bin/chromium is missing; .ci/run installs it.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeModel } from '../../src/ir/index.js';
import { loadModel, saveModel } from '../../src/node/index.js';
import { convert } from '../../src/passes/convert/convert.js';
import { declaredTypes, generate } from '../../src/runtime/generate.js';
import { maxAbs, maxAbsDiff } from '../helpers/compare.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const available = fs.existsSync(CHROMIUM);
if (!available) console.log(`web page: no Chromium at ${CHROMIUM} (apt-get install chromium); skipping the browser test`);
if (!available && process.env.TITANIZE_REQUIRE_BROWSER === '1') throw new Error(`TITANIZE_REQUIRE_BROWSER=1 but no Chromium at ${CHROMIUM}`);

const OPTIONS = { rule: 'delta_product', mu: 0.5 } as const;
const IDS = [100, 101, 102, 32, 109, 97, 105, 110, 40, 41, 58, 10];

/** The logits of IDS from onnxruntime-node (a model's bytes, or a file with its data beside it). */
async function nodeLogits(model: Uint8Array | string): Promise<Float32Array> {
  const s = typeof model === 'string' ? await ort.InferenceSession.create(model) : await ort.InferenceSession.create(model);
  const T = IDS.length;
  try {
    return (await s.run({
      input_ids: new ort.Tensor('int64', BigInt64Array.from(IDS, BigInt), [1, T]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(T).fill(1n), [1, T]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: T }, (_, i) => BigInt(i)), [1, T]),
    })).logits!.data as Float32Array;
  } finally {
    await s.release();
  }
}

type Page = import('playwright-core').Page;

const BROWSER_FLAGS = ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/**
 * Builds the page into a temporary folder, serves it on loopback, opens it in Chromium with
 * `flags` and waits until it is ready; `close` undoes all of it. Page errors go to `errors`.
 */
async function openPage(flags: string[], viewport?: { width: number; height: number }): Promise<{ page: Page; errors: string[]; close: () => Promise<void> }> {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-web-'));
  const { buildWeb } = (await import(path.join(ROOT, 'tools/build-web.mjs'))) as { buildWeb: (o: string) => Promise<unknown> };
  await buildWeb(out);
  const { serve } = (await import(path.join(ROOT, 'tools/serve-web.mjs'))) as { serve: (d: string) => Promise<{ server: import('node:http').Server; url: string }> };
  const { server, url } = await serve(out);
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: [...flags, ...BROWSER_FLAGS] });
  const close = async (): Promise<void> => {
    await browser.close();
    await new Promise((r) => server.close(r));
    fs.rmSync(out, { recursive: true, force: true });
  };
  const errors: string[] = [];
  try {
    const page = await browser.newPage(viewport ? { viewport } : {});
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(url);
    await page.waitForFunction(() => document.getElementById('status')?.textContent?.startsWith('ready'), undefined, { timeout: 60_000 });
    return { page, errors, close };
  } catch (e) {
    await close();
    throw e;
  }
}

describe.skipIf(!available)('the browser page', () => {
  let page: Page;
  let close: () => Promise<void>;
  let errors: string[] = [];

  beforeAll(async () => {
    ({ page, errors, close } = await openPage(['--headless', '--disable-gpu'], { width: 1000, height: 900 }));
  }, 120_000);

  afterAll(async () => {
    await close?.();
  });

  it('opens the example and lists its sites, as Node finds them', async () => {
    const sites = (await page.evaluate(async () => {
      const t = (window as unknown as { titanize: { loadExample(): Promise<{ sites: { layer: number; form: string; numHeads: number }[] }> } }).titanize;
      return (await t.loadExample()).sites.map((s) => [s.layer, s.form, s.numHeads]);
    })) as unknown[];
    expect(sites).toHaveLength(4);
    expect(await page.locator('#sites tbody tr').count()).toBe(4);
    expect(errors).toEqual([]);
  });

  it('converts in the page to the same bytes as Node, and its logits equal onnxruntime-node\'s', async () => {
    const r = (await page.evaluate(async (o) => (window as any).titanize.convert(o), OPTIONS)) as { bytes: number; backend: string };
    // headless Chromium without a GPU: the page says it fell back to WebAssembly
    expect(r.backend).toMatch(/^(webgpu|wasm \(.*fell back to WebAssembly\))$/);
    const inPage = Uint8Array.from((await page.evaluate(() => (window as any).titanize.converted())) as number[]);
    const m = loadModel(path.join(ROOT, 'test/fixtures/fidelity/lm.onnx'));
    convert(m, { ...OPTIONS, target: 'ort' });
    const bytes = encodeModel(m);
    expect(inPage.length).toBe(bytes.length);
    expect(Buffer.from(inPage).equals(Buffer.from(bytes))).toBe(true);
    const got = Float32Array.from((await page.evaluate((ids) => (window as any).titanize.logits(ids), IDS)) as number[]);
    const want = await nodeLogits(bytes);
    expect(got.length).toBe(want.length);
    expect(maxAbsDiff(got, want) / Math.max(1, maxAbs(want))).toBeLessThanOrEqual(1e-4);
  }, 120_000);

  it('greedy generation in the page gives the tokens of titanize\'s runtime in Node; screenshot', async () => {
    const inPage = (await page.evaluate((ids) => (window as any).titanize.generateIds(ids, 16), IDS)) as number[];
    const m = loadModel(path.join(ROOT, 'test/fixtures/fidelity/lm.onnx'));
    convert(m, { ...OPTIONS, target: 'ort' });
    const s = await ort.InferenceSession.create(encodeModel(m));
    const { tokens } = await generate(s, declaredTypes(m), [IDS], { maxNewTokens: 16 }).result;
    await s.release();
    expect(inPage).toEqual(tokens[0]);
    // the page as a user sees it after generating text
    await page.fill('#count', '40');
    await page.click('#generate');
    await page.waitForFunction(() => document.getElementById('status')?.textContent?.startsWith('generated'), undefined, { timeout: 60_000 });
    expect(((await page.textContent('#output')) ?? '').length).toBeGreaterThan(20);
    const shot = process.env.TITANIZE_WEB_SCREENSHOT ? path.resolve(process.env.TITANIZE_WEB_SCREENSHOT) : path.join(os.tmpdir(), `titanize-web-${process.pid}.png`);
    await page.screenshot({ path: shot });
    expect(fs.statSync(shot).size).toBeGreaterThan(10_000);
    expect(errors).toEqual([]);
  }, 120_000);

  it('a model with external weights: the .onnx and its data file chosen together, converted without reading the weights into the model, runs like Node', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-web-external-'));
    const onnx = path.join(dir, 'lm.onnx');
    saveModel(loadModel(path.join(ROOT, 'test/fixtures/fidelity/lm.onnx')), onnx, { externalData: { location: 'lm.onnx.data' } });
    expect(fs.statSync(onnx).size).toBeLessThan(200_000); // the weights are in lm.onnx.data
    await page.setInputFiles('#file', [onnx, path.join(dir, 'lm.onnx.data')]);
    await page.waitForFunction(() => document.getElementById('status')?.textContent === 'opened lm.onnx', undefined, { timeout: 60_000 });
    expect(await page.textContent('#model-info')).toMatch(/^lm\.onnx: .* \+ external data lm\.onnx\.data \(\d+ KiB\), .* 4 attention sites/);
    await page.evaluate(async (o) => (window as any).titanize.convert(o), OPTIONS);
    const inPage = Uint8Array.from((await page.evaluate(() => (window as any).titanize.converted())) as number[]);
    // Node converts the same external-data model; both keep the weights as references to lm.onnx.data
    const m = loadModel(onnx);
    convert(m, { ...OPTIONS, target: 'ort' });
    const bytes = encodeModel(m);
    expect(Buffer.from(inPage).equals(Buffer.from(bytes))).toBe(true);
    expect(inPage.length).toBeLessThan(300_000);
    const got = Float32Array.from((await page.evaluate((ids) => (window as any).titanize.logits(ids), IDS)) as number[]);
    const converted = path.join(dir, 'lm.titan.onnx');
    fs.writeFileSync(converted, bytes);
    const want = await nodeLogits(converted);
    expect(maxAbsDiff(got, want) / Math.max(1, maxAbs(want))).toBeLessThanOrEqual(1e-4);
    expect(errors).toEqual([]);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 120_000);
});

/**
 * The page's WebGPU path: Chromium with WebGPU enabled on its software adapter
 * (SwiftShader, --enable-unsafe-webgpu: no GPU needed). The page picks WebGPU, and its
 * logits and greedy tokens equal Node's CPU run (1e-3 relative: float32 on GPU kernels,
 * another reduction order).
 */
describe.skipIf(!available)('the browser page on WebGPU', () => {
  it('runs the converted example on webgpu, equal to onnxruntime-node on the CPU', async () => {
    const { page, errors, close } = await openPage(['--headless=new', '--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader']);
    try {
      const r = (await page.evaluate(async (o) => {
        const t = (window as any).titanize;
        await t.loadExample();
        return t.convert(o);
      }, OPTIONS)) as { backend: string };
      expect(r.backend).toBe('webgpu');
      const got = Float32Array.from((await page.evaluate((ids) => (window as any).titanize.logits(ids), IDS)) as number[]);
      const m = loadModel(path.join(ROOT, 'test/fixtures/fidelity/lm.onnx'));
      convert(m, { ...OPTIONS, target: 'ort' });
      const want = await nodeLogits(encodeModel(m));
      expect(maxAbsDiff(got, want) / Math.max(1, maxAbs(want))).toBeLessThanOrEqual(1e-3);
      const inPage = (await page.evaluate((ids) => (window as any).titanize.generateIds(ids, 8), IDS)) as number[];
      const s = await ort.InferenceSession.create(encodeModel(m));
      const { tokens } = await generate(s, declaredTypes(m), [IDS], { maxNewTokens: 8 }).result;
      await s.release();
      expect(inPage).toEqual(tokens[0]);
      expect(errors).toEqual([]);
    } finally {
      await close();
    }
  }, 180_000);
});

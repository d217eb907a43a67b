/**
 * `codegen`: the TypeScript module of a decoder model. For a converted llama_past (μ 0.5,
 * KV cache + LiZA state), the original llama_past (KV cache) and llama (no cache): the
 * module compiles under `tsc --strict` with onnxruntime-node's and onnxruntime-web's types,
 * runs (compiled to JS, imported) with onnxruntime-node and generates the tokens the
 * runtime's `generate` does; re-running reproduces the bytes; user-code regions survive a
 * re-run on a changed model (μ 1) while the generated parts change.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as ort from 'onnxruntime-node';
import * as web from 'onnxruntime-web';
import { ts } from 'ts-morph';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codegen } from '../../src/codegen/index.js';
import type { Model } from '../../src/ir/index.js';
import { loadModel, saveModel } from '../../src/node/index.js';
import { convert } from '../../src/passes/index.js';
import { toFloat16 } from '../helpers/float16.js';
import { declaredTypes, generate } from '../../src/runtime/generate.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIX = path.join(ROOT, 'test/fixtures');
// inside the repository (its /tmp/ is ignored by git), so that the generated code's driver resolves onnxruntime-node's types
const dir = path.join(ROOT, 'tmp', `codegen-${process.pid}`);
const PROMPT = [5, 17, 42, 7, 99, 3];
const NEW = 12;

interface Decoder {
  prefill(ids: readonly number[]): Promise<ort.Tensor>;
  step(id: number): Promise<ort.Tensor>;
  generate(ids: readonly number[], maxNewTokens: number, options?: { stopTokens?: readonly number[]; choose?: (logits: ort.Tensor) => number; onToken?: (id: number) => void }): Promise<number[]>;
  reset(): void;
  readonly length: number;
}
type DecoderClass = new (session: ort.InferenceSession, Tensor: typeof ort.Tensor) => Decoder;

const models: Record<string, { file: string; model: Model }> = {};

function converted(mu: number, sub: string, window?: number): { file: string; model: Model } {
  const model = loadModel(path.join(FIX, 'llama_past.onnx'));
  convert(model, { mu, window });
  fs.mkdirSync(path.join(dir, sub), { recursive: true });
  const file = path.join(dir, sub, 'titan.onnx');
  saveModel(model, file);
  return { file, model };
}

/** The module at `file` compiled to JavaScript (TypeScript's transpiler, from ts-morph) and imported. */
async function importModule(file: string): Promise<Record<string, unknown>> {
  const js = ts.transpileModule(fs.readFileSync(file, 'utf8'), { compilerOptions: { module: ts.ModuleKind.ES2022, target: ts.ScriptTarget.ES2022 } }).outputText;
  const out = file.replace(/\.ts$/, `.${Date.now()}.mjs`);
  fs.writeFileSync(out, js);
  return (await import(pathToFileURL(out).href)) as Record<string, unknown>;
}

async function runtimeTokens(m: { file: string; model: Model }, prompt: number[]): Promise<number[]> {
  const session = await ort.InferenceSession.create(m.file);
  try {
    const { tokens } = await generate(session, declaredTypes(m.model), [prompt], { maxNewTokens: NEW }).result;
    return tokens[0]!;
  } finally {
    await session.release();
  }
}

beforeAll(() => {
  fs.mkdirSync(dir, { recursive: true });
  models.titan = converted(0.5, 'mu05');
  models.titan1 = converted(1, 'mu1');
  models.window = converted(0.5, 'window', 4);
  models.past = { file: path.join(FIX, 'llama_past.onnx'), model: loadModel(path.join(FIX, 'llama_past.onnx')) };
  models.llama = { file: path.join(FIX, 'llama.onnx'), model: loadModel(path.join(FIX, 'llama.onnx')) };
  for (const name of ['llama', 'llama_past']) {
    const model = toFloat16(loadModel(path.join(FIX, `${name}.onnx`)));
    const file = path.join(dir, 'fp16', `${name}.onnx`);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    saveModel(model, file);
    models[`${name}16`] = { file, model };
  }
  models.encdec = { file: path.join(FIX, 'foreign/encdec_decoder_past.onnx'), model: loadModel(path.join(FIX, 'foreign/encdec_decoder_past.onnx')) };
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
  // and the repository's tmp/ when nothing else is in it
  if (fs.existsSync(path.dirname(dir)) && fs.readdirSync(path.dirname(dir)).length === 0) fs.rmdirSync(path.dirname(dir));
});

const out = (name: string): string => path.join(dir, `${name}.ts`);
const gen = (key: string, output: string) => codegen(models[key]!.model, { output, modelFile: path.basename(models[key]!.file), version: '0.1.0' });

describe('titanize codegen (library)', () => {
  it('writes interfaces for the inputs, outputs and state, a spec, and a class, with doc comments from the metadata', () => {
    const s = gen('titan', out('titan'));
    expect(s).toMatchObject({ class: 'Titan', interfaces: ['TitanInputs', 'TitanOutputs', 'TitanState'], written: true, userCode: [] });
    expect(s.state.map((p) => `${p.input}<-${p.output}:${p.kind}`)).toEqual([0, 1].flatMap((l) => ['key', 'value', 'state', 'window'].map((k) => `past_key_values.${l}.${k}<-present.${l}.${k}:${k}`)));
    expect(s.state[2]).toEqual({ input: 'past_key_values.0.state', output: 'present.0.state', layer: 0, kind: 'state', type: 'float32', dims: ['batch_size', 2, 16, 16] });
    const text = fs.readFileSync(out('titan'), 'utf8');
    expect(text.split('\n')[0]).toBe('// Generated by `titanize codegen` 0.1.0 from titan.onnx: edit only inside the user-code regions.');
    expect(text).toContain("Converted by titanize (metadata 'titanize.converted'): rule delta_product, order 2, μ 0.5, target ort, LoRA none.");
    expect(text).toContain('produced by pytorch 1.13.0');
    expect(text).toMatch(/Carried state: LiZA memory state \(key × value\) of attention layer 0, fixed size, the previous call's 'present\.0\.state': float32 \[batch_size, 2, 16, 16\]\.\s*\*\/\s*'past_key_values\.0\.state': T;/);
    expect(text).toContain('/** Token ids (0 to 255): int64 [batch_size, sequence_length]. */');
    expect(text).toContain('float32 [batch_size, 2, past_sequence_length, 16]');
    for (const r of ['imports', 'members', 'end']) expect(text).toContain(`// <user-code name="${r}">\n`);

    const p = gen('past', out('llama_past'));
    expect(p).toMatchObject({ class: 'LlamaPast', interfaces: ['LlamaPastInputs', 'LlamaPastOutputs', 'LlamaPastState'] });
    expect(p.state.map((x) => x.kind)).toEqual(['key', 'value', 'key', 'value']);
    expect(fs.readFileSync(out('llama_past'), 'utf8')).toContain("Not converted by titanize: an original decoder export (no metadata 'titanize.converted').");
    expect(gen('window', out('window')).state.map((x) => x.kind)).toEqual(['key', 'value', 'state', 'window', 'key', 'value', 'state', 'window']);
    expect(fs.readFileSync(out('window'), 'utf8')).toContain('μ 0.5, window 4, target ort');
    const l = gen('llama', out('llama'));
    expect(l).toMatchObject({ class: 'Llama', interfaces: ['LlamaInputs', 'LlamaOutputs'], state: [] });
    // fp16: float16 state and logits
    expect(gen('llama_past16', out('fp16/past')).state.map((x) => x.type)).toEqual(['float16', 'float16', 'float16', 'float16']);
    gen('llama16', out('fp16/plain'));
    expect(fs.readFileSync(out('fp16/past'), 'utf8')).toContain("new(type: 'float16', data: Uint16Array, dims: readonly number[]): T;");
    // an encoder-decoder's decoder with past: its cross-attention keys and values are given once to the constructor
    const e = gen('encdec', out('encdec'));
    expect(e.interfaces).toEqual(['EncdecInputs', 'EncdecOutputs', 'EncdecState', 'EncdecSequenceInputs']);
    expect(fs.readFileSync(out('encdec'), 'utf8')).toContain("readonly inputs: EncdecSequenceInputs<T>");
  });

  it('re-running on the same model reproduces the file byte for byte and leaves it alone', () => {
    const before = fs.readFileSync(out('titan'));
    const mtime = fs.statSync(out('titan')).mtimeMs;
    const again = gen('titan', out('titan'));
    expect(again.written).toBe(false);
    expect(again.changed).toEqual([]);
    expect(Buffer.compare(fs.readFileSync(out('titan')), before)).toBe(0);
    expect(fs.statSync(out('titan')).mtimeMs).toBe(mtime);
    // from a fresh file too: the same bytes
    const fresh = path.join(dir, 'fresh', 'titan.ts');
    gen('titan', fresh);
    expect(Buffer.compare(fs.readFileSync(fresh), before)).toBe(0);
  });

  it('keeps the user-code regions on a changed model (μ 1) while the generated parts change', () => {
    const file = out('user/titan');
    gen('titan', file);
    const user = {
      imports: "import { strict as assert } from 'node:assert';",
      members: [
        '  /** Added by hand: the greedy continuation as text. */',
        '  async complete(ids: readonly number[], n: number): Promise<string> {',
        '    const tokens = await this.generate(ids, n);',
        '    assert(tokens.length <= n);',
        "    return tokens.join(' ');",
        '  }',
        '',
      ],
      end: ['export const handWritten = 42;', '// a comment of mine'],
    };
    const original = fs.readFileSync(file, 'utf8');
    const edited = original
      .replace('// <user-code name="imports">\n', `// <user-code name="imports">\n${user.imports}\n`)
      .replace('  // <user-code name="members">\n', `  // <user-code name="members">\n${user.members.join('\n')}\n`)
      .replace('// <user-code name="end">\n', `// <user-code name="end">\n${user.end.join('\n')}\n`);
    fs.writeFileSync(file, edited);
    // same model: only the user's code differs, and it stays
    expect(gen('titan', file)).toMatchObject({ written: false, changed: [] });
    expect(fs.readFileSync(file, 'utf8')).toBe(edited);

    const s = codegen(models.titan1!.model, { output: file, modelFile: 'titan.onnx', version: '0.1.0' });
    expect(s.written).toBe(true);
    expect(s.userCode).toEqual(['imports', 'members', 'end']);
    // μ 1 drops the KV cache: the state, the spec, the class and the header change; the adapter types do not
    expect(s.changed).toEqual(expect.arrayContaining(['header', 'TitanInputs', 'TitanOutputs', 'TitanState', 'titanSpec', 'Titan']));
    expect(s.changed).not.toContain('TensorLike');
    expect(s.changed).not.toContain('greedyToken');
    expect(s.state.map((p) => p.kind)).toEqual(['state', 'window', 'state', 'window']);
    const text = fs.readFileSync(file, 'utf8');
    expect(text).toContain(`// <user-code name="imports">\n${user.imports}\n// </user-code>`);
    expect(text).toContain(`  // <user-code name="members">\n${user.members.join('\n')}\n  // </user-code>`);
    expect(text).toContain(`// <user-code name="end">\n${user.end.join('\n')}\n// </user-code>`);
    expect(text).toContain('μ 1, target ort');
    expect(text).not.toContain('past_key_values.0.key');
    // everything outside the regions is exactly what a fresh generation gives
    const fresh = path.join(dir, 'fresh1', 'titan.ts');
    codegen(models.titan1!.model, { output: fresh, modelFile: 'titan.onnx', version: '0.1.0' });
    const strip = (t: string) => t.replace(/(\/\/ <user-code name="[^"]+">\n)[\s\S]*?([ \t]*\/\/ <\/user-code>)/g, '$1$2');
    expect(strip(text)).toBe(fs.readFileSync(fresh, 'utf8'));
  });

  it('the generated modules compile under tsc --strict, with onnxruntime-node and onnxruntime-web types', () => {
    const driver = path.join(dir, 'driver.ts');
    fs.writeFileSync(
      driver,
      [
        "import * as ort from 'onnxruntime-node';",
        "import * as web from 'onnxruntime-web';",
        "import { Titan, type TitanState, greedyToken, titanSpec } from './titan.js';",
        "import { LlamaPast } from './llama_past.js';",
        "import { Llama } from './llama.js';",
        "import { Encdec, type EncdecSequenceInputs } from './encdec.js';",
        "import { Titan as UserTitan, handWritten } from './user/titan.js';",
        'export async function main(file: string): Promise<number[]> {',
        '  const titan = new Titan(await ort.InferenceSession.create(file), ort.Tensor);',
        '  const logits: ort.Tensor = await titan.prefill([1, 2, 3]);',
        '  const state: Readonly<TitanState<ort.Tensor>> = titan.state;',
        "  const dims: readonly number[] = state['past_key_values.0.state'].dims;",
        '  const fromWeb = new Titan(await web.InferenceSession.create(file), web.Tensor);',
        '  const webLogits: web.Tensor = await fromWeb.step(greedyToken(logits));',
        "  const kind: 'key' = titanSpec.state[0].kind;",
        '  const past = new LlamaPast(await ort.InferenceSession.create(file), ort.Tensor);',
        '  const plain = new Llama(await web.InferenceSession.create(file), web.Tensor);',
        '  const user = new UserTitan(await ort.InferenceSession.create(file), ort.Tensor);',
        '  const cross = (await ort.InferenceSession.create(file)).outputNames as unknown as EncdecSequenceInputs<ort.Tensor>;',
        '  const encdec = new Encdec(await ort.InferenceSession.create(file), ort.Tensor, cross);',
        '  const text: string = await user.complete([1], 2);',
        '  void [dims, webLogits, kind, text, handWritten, await plain.generate([1], 2), await past.step(1), await encdec.prefill([1])];',
        '  return titan.generate([1, 2, 3], 5);',
        '}',
      ].join('\n'),
    );
    const tsc = path.join(ROOT, 'node_modules/.bin/tsc');
    const args = ['--strict', '--noEmit', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--skipLibCheck', '--noUnusedLocals', '--noUnusedParameters', driver, out('fp16/past'), out('fp16/plain')];
    const r = spawnSync(tsc, args, { cwd: dir, encoding: 'utf8' });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
  });

  it('the generated classes decode with onnxruntime-node as the runtime does: the same greedy tokens, and prefill = steps; and with onnxruntime-web', async () => {
    const cases: [string, string, string][] = [
      ['titan', 'titan', 'Titan'],
      ['past', 'llama_past', 'LlamaPast'],
      ['llama', 'llama', 'Llama'],
      ['titan1', 'user/titan', 'Titan'],
      // a KV cache cut to 3 positions: the mask covers the cached positions and the new tokens
      ['window', 'window', 'Window'],
    ];
    for (const [key, name, cls] of cases) {
      const m = models[key]!;
      const mod = await importModule(out(name));
      const Decoder = mod[cls] as DecoderClass;
      const session = await ort.InferenceSession.create(m.file);
      try {
        const decoder = new Decoder(session, ort.Tensor);
        const tokens = await decoder.generate(PROMPT, NEW);
        expect(tokens, name).toEqual(await runtimeTokens(m, PROMPT));
        expect(decoder.length).toBe(PROMPT.length + NEW - 1);
        // a stop token ends it (included)
        expect(await decoder.generate(PROMPT, NEW, { stopTokens: [tokens[2]!] })).toEqual(tokens.slice(0, tokens.indexOf(tokens[2]!) + 1));
        // a chooser of one's own sees the logits of each call (the prompt's, then one position each) and is obeyed; onToken hears each token
        const seen: number[][] = [];
        const heard: number[] = [];
        const forced = PROMPT.map((t) => (t * 7 + 1) % 50);
        const chosen = await decoder.generate(PROMPT, 4, { choose: (logits) => (seen.push([...logits.dims]), forced[seen.length - 1]!), onToken: (id) => heard.push(id) });
        expect(chosen).toEqual(forced.slice(0, 4));
        expect(heard).toEqual(chosen);
        expect(seen.map((d) => d[1])).toEqual([PROMPT.length, 1, 1, 1]);
        // the prompt in one call, or in a chunk and single steps: the same last logits
        decoder.reset();
        const whole = (await decoder.prefill(PROMPT)).data as Float32Array;
        decoder.reset();
        await decoder.prefill(PROMPT.slice(0, 2));
        let last: ort.Tensor | undefined;
        for (const id of PROMPT.slice(2)) last = await decoder.step(id);
        const V = 256;
        const a = whole.subarray(whole.length - V);
        const b = last!.data as Float32Array;
        expect(b.length).toBe(V);
        expect(Math.max(...a.map((x, i) => Math.abs(x - b[i]!)))).toBeLessThan(1e-4);
        if (key === 'titan1') expect(await (decoder as unknown as { complete(ids: number[], n: number): Promise<string> }).complete(PROMPT, 3)).toBe(tokens.slice(0, 3).join(' '));
        await expect(decoder.step(256)).rejects.toThrow(/token id 256 is outside the vocabulary \(0 to 255\)/);
      } finally {
        await session.release();
      }
    }
    // fp16: the KV-cache export and the no-cache export give the same tokens, and the runtime's
    const fp16: number[][] = [];
    for (const [key, name] of [['llama_past16', 'fp16/past'], ['llama16', 'fp16/plain']] as const) {
      const Decoder = Object.values(await importModule(out(name))).find((v) => typeof v === 'function' && /^class /.test(String(v))) as DecoderClass;
      const session = await ort.InferenceSession.create(models[key]!.file);
      try {
        fp16.push(await new Decoder(session, ort.Tensor).generate(PROMPT, NEW));
      } finally {
        await session.release();
      }
    }
    expect(fp16[0]).toEqual(fp16[1]);
    expect(new Set(fp16[0]).size).toBeGreaterThan(3);
    // (float16 caches and logits: the runtime makes float16 zeros and reads float16 logits)
    expect(await runtimeTokens(models.llama_past16!, PROMPT)).toEqual(fp16[0]);
    expect(await runtimeTokens(models.llama16!, PROMPT)).toEqual(fp16[0]);
    // the same class on onnxruntime-web (WebAssembly, here in Node)
    const Titan0 = (await importModule(out('titan'))).Titan as new (session: web.InferenceSession, Tensor: typeof web.Tensor) => Decoder;
    const onWeb = await web.InferenceSession.create(fs.readFileSync(models.titan!.file), { executionProviders: ['wasm'] });
    try {
      expect(await new Titan0(onWeb, web.Tensor).generate(PROMPT, NEW)).toEqual(await runtimeTokens(models.titan!, PROMPT));
    } finally {
      await onWeb.release();
    }
    // a session of another model is refused by name
    const Titan = (await importModule(out('titan'))).Titan as DecoderClass;
    const other = await ort.InferenceSession.create(models.llama!.file);
    try {
      expect(() => new Titan(other, ort.Tensor)).toThrow(/the session has no input 'past_key_values\.0\.key': it is not a session of titan\.onnx/);
    } finally {
      await other.release();
    }
  });
});

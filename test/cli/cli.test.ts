/**
 * The `titanize` command line: run in-process through `main()` with captured streams,
 * plus one spawn of the built launcher (bin/titanize.js).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DataType,
  Model,
  Node,
  Tensor,
  Value,
  UserInputError,
  encodeModel,
  tensorType,
} from '../../src/ir/index.js';
import { loadModel, saveModel } from '../../src/node/index.js';
import { addInspectCommand } from '../../src/cli/commands/inspect.js';
import type { CliContext, OutStream } from '../../src/cli/context.js';
import { reportError } from '../../src/cli/errors.js';
import { createProgram, main } from '../../src/cli/main.js';
import { Capture, type RunResult, expectUserError, lines, run } from './helpers.js';
import { progress } from '../../src/cli/progress.js';
import { INSPECT_JSON_KEYS, type InspectReport, type InspectSection } from '../../src/cli/report/inspect_report.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIXTURES = path.join(ROOT, 'test/fixtures');
const LLAMA = path.join(FIXTURES, 'llama.onnx');


const FLOATS = new Set([DataType.FLOAT, DataType.FLOAT16, DataType.BFLOAT16, DataType.DOUBLE]);

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-cli-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A tiny model y = x + w whose weight goes to `w.bin` beside `<dir>/model.onnx`. */
function tinyExternalModel(dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  const m = new Model({ opsetImports: { '': 17 } });
  m.producerName = 'titanize-test';
  m.metadataProps.push({ key: 'purpose', value: 'cli test' });
  const g = m.graph;
  const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, ['n', 4])));
  const w = g.addInitializer(Tensor.fromArray(new Float32Array([1, 2, 3, 4]), [4], DataType.FLOAT, 'w'));
  const add = new Node({ opType: 'Add', name: 'add', inputs: [x, w], outputs: ['y'] });
  g.append(add);
  add.outputs[0]!.type = tensorType(DataType.FLOAT, ['n', 4]);
  g.addOutput(add.outputs[0]!);
  const file = path.join(dir, 'model.onnx');
  saveModel(m, file, { externalData: { location: 'w.bin', threshold: 0 } });
  return file;
}

describe('titanize inspect', () => {
  it('prints a text summary of llama.onnx', async () => {
    const r = await run(['inspect', LLAMA]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/opset\s+ai\.onnx 17/);
    for (const name of ['input_ids', 'attention_mask', 'position_ids']) {
      expect(r.stdout).toMatch(new RegExp(`^\\s+${name}\\s+int64\\[batch_size, sequence_length\\]`, 'm'));
    }
    const matmul = /^\s+MatMul\s+(\d+)$/m.exec(r.stdout);
    expect(matmul, r.stdout).not.toBeNull();
    expect(Number(matmul![1])).toBeGreaterThan(0);
    expect(r.stdout).toMatch(/producer\s+pytorch/);
    expect(r.stdout).toMatch(/external data\s+none/);
  });

  it('--shapes --json gives every value its inferred shape over the input dim names', async () => {
    const r = await run(['inspect', LLAMA, '--shapes', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const shapes = (JSON.parse(r.stdout) as { shapes: { values: Record<string, string>; inferred: number; symbolic: number; unknownRank: number } }).shapes;
    expect(shapes.values.logits).toBe('[batch_size, sequence_length, 256]');
    expect(shapes.values['/model/layers.0/self_attn/q_proj/MatMul_output_0']).toBe('[batch_size, sequence_length, 64]');
    expect(shapes.unknownRank).toBe(0);
    expect(shapes.symbolic).toBe(0);
    const text = await run(['inspect', LLAMA, '--shapes']);
    expect(text.stdout).toMatch(/^Shapes: \d+ values: \d+ determined by the input dims, 0 with dims no rule determines, 0 of unknown rank/m);
  });

  it('--json matches the model, with the parameter count computed independently', async () => {
    const r = await run(['inspect', LLAMA, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as InspectReport;
    const model = loadModel(LLAMA);

    const realInputs = model.graph.inputs.filter((v) => !v.isInitializer());
    expect(report.inputs).toHaveLength(realInputs.length);
    expect(report.inputs.map((i) => i.name)).toEqual(['input_ids', 'attention_mask', 'position_ids']);
    expect(report.inputs[0]).toEqual({
      name: 'input_ids',
      type: 'int64[batch_size, sequence_length]',
      elemType: 'INT64',
      shape: ['batch_size', 'sequence_length'],
    });
    expect(report.outputs).toHaveLength(model.graph.outputs.length);
    expect(report.outputs.map((o) => o.name)).toEqual(['logits']);
    expect(report.outputs[0]!.shape).toEqual(['batch_size', 'sequence_length', 256]);
    expect(report.opsetImports).toEqual([...model.opsetImports].map(([domain, version]) => ({ domain, version })));
    expect(report.opsetImports).toEqual([{ domain: '', version: 17 }]);

    let params = 0;
    let bytes = 0;
    for (const v of model.graph.initializers.values()) {
      const t = v.initializer!;
      if (FLOATS.has(t.dataType)) params += t.dims.reduce((a, b) => a * b, 1);
      bytes += t.rawBytes().byteLength;
    }
    expect(params).toBeGreaterThan(0);
    expect(report.parameterCount).toBe(params);
    expect(report.initializerBytes).toBe(bytes);
    expect(report.initializerCount).toBe(model.graph.initializers.size);

    expect(report.nodeCount).toBe(model.graph.size);
    expect(report.opCounts.reduce((n, o) => n + o.count, 0)).toBe(report.nodeCount);
    const counts = report.opCounts.map((o) => o.count);
    expect(counts).toEqual([...counts].sort((a, b) => b - a));
    expect(report.opCounts.find((o) => o.op === 'MatMul')!.count).toBeGreaterThan(0);

    expect(report.file).toBe(LLAMA);
    expect(report.fileSize).toBe(fs.statSync(LLAMA).size);
    expect(report.irVersion).toBe(model.irVersion);
    expect(report.externalData).toEqual([]);
    expect(report.functions).toEqual([]);
    expect(report.reportVersion).toBe(1);
  });

  it('documents every --json key in inspect --help', async () => {
    const r = await run(['inspect', LLAMA, '--json']);
    const keys = Object.keys(JSON.parse(r.stdout));
    const documented = INSPECT_JSON_KEYS.flatMap(([k]) => k.split(/,\s*/));
    expect(new Set(keys)).toEqual(new Set(documented));
    const help = await run(['inspect', '--help']);
    for (const k of keys) expect(help.stdout).toContain(k);
  });

  it('inspects every fixture', async () => {
    const files = fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.onnx'));
    expect(files.length).toBeGreaterThanOrEqual(7);
    for (const f of files) {
      const r = await run(['inspect', path.join(FIXTURES, f), '--json']);
      expect(r.code, `${f}: ${r.stderr}`).toBe(0);
      const report = JSON.parse(r.stdout) as InspectReport;
      expect(report.nodeCount).toBeGreaterThan(0);
      expect(report.parameterCount).toBeGreaterThan(0);
    }
  });

  it('reports external data files (sizes from the model and a stat, no reads)', async () => {
    const file = tinyExternalModel(path.join(tmp, 'ext-ok'));
    const r = await run(['inspect', file, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as InspectReport;
    expect(report.externalData).toEqual([
      { location: 'w.bin', tensors: 1, bytes: 16, fileSize: fs.statSync(path.join(tmp, 'ext-ok', 'w.bin')).size },
    ]);
    expect(report.parameterCount).toBe(4);
    expect(report.initializerBytes).toBe(16);
    expect(report.metadataKeys).toEqual(['purpose']);
    expect(report.producerName).toBe('titanize-test');
    expect(report.inputs).toEqual([{ name: 'x', type: 'float[n, 4]', elemType: 'FLOAT', shape: ['n', 4] }]);

    const text = await run(['inspect', file]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/external data \(1 file\)/);
    expect(text.stdout).toMatch(/w\.bin\s+1 tensor\s+16 B referenced/);
    expect(text.stdout).toMatch(/metadata\s+purpose/);
  });
});

describe('bad input: exit 2 and one line on stderr', () => {
  it('a missing file', async () => {
    expectUserError(await run(['inspect', path.join(tmp, 'no-such-model.onnx')]), /no such file/);
  });

  it('a folder', async () => {
    expectUserError(await run(['inspect', tmp]), /folder/);
  });

  it('a text file', async () => {
    const f = path.join(tmp, 'notes.onnx');
    fs.writeFileSync(f, 'this is not an ONNX model\nbut a text file\n');
    expectUserError(await run(['inspect', f]), /not (a valid|an) ONNX model/);
  });

  it('random bytes', async () => {
    let seed = 12345;
    const bytes = new Uint8Array(4096).map(() => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed >>> 24;
    });
    const f = path.join(tmp, 'random.onnx');
    fs.writeFileSync(f, bytes);
    expectUserError(await run(['inspect', f]), /ONNX/);
  });

  it('an empty file', async () => {
    const f = path.join(tmp, 'empty.onnx');
    fs.writeFileSync(f, '');
    expectUserError(await run(['inspect', f]), /empty/);
  });

  it('a truncated ONNX file', async () => {
    const data = fs.readFileSync(LLAMA);
    const f = path.join(tmp, 'truncated.onnx');
    fs.writeFileSync(f, data.subarray(0, Math.floor(data.length / 2)));
    expectUserError(await run(['inspect', f]), /not a valid ONNX model/);
  });

  it('an external data path that escapes the model folder', async () => {
    const dir = path.join(tmp, 'ext-escape');
    const file = tinyExternalModel(dir);
    const model = loadModel(file);
    const t = model.graph.initializers.get('w')!.initializer!;
    if (t.storage.kind !== 'external') throw new Error('expected an external tensor');
    t.storage.ref.location = '../../etc/passwd';
    fs.writeFileSync(file, encodeModel(model));
    expectUserError(await run(['inspect', file]), /escapes the model folder/);
  });

  it('an absolute external data path', async () => {
    const dir = path.join(tmp, 'ext-absolute');
    const file = tinyExternalModel(dir);
    const model = loadModel(file);
    const t = model.graph.initializers.get('w')!.initializer!;
    if (t.storage.kind !== 'external') throw new Error('expected an external tensor');
    t.storage.ref.location = path.join(dir, 'w.bin');
    fs.writeFileSync(file, encodeModel(model));
    expectUserError(await run(['inspect', file]), /absolute/);
  });

  it('a missing external data file', async () => {
    const dir = path.join(tmp, 'ext-missing');
    const file = tinyExternalModel(dir);
    fs.rmSync(path.join(dir, 'w.bin'));
    expectUserError(await run(['inspect', file]), /w\.bin.*missing/);
  });

  it('a short external data file', async () => {
    const dir = path.join(tmp, 'ext-short');
    const file = tinyExternalModel(dir);
    fs.truncateSync(path.join(dir, 'w.bin'), 3);
    expectUserError(await run(['inspect', file]), /w\.bin/);
  });

  it('an unknown tensor data type', async () => {
    const m = new Model({ opsetImports: { '': 17 } });
    const x = m.graph.addInput(new Value('x', tensorType(DataType.FLOAT, [1])));
    const w = m.graph.addInitializer(Tensor.fromArray(new Float32Array([1]), [1], DataType.FLOAT, 'w'));
    const add = new Node({ opType: 'Add', inputs: [x, w], outputs: ['y'] });
    m.graph.append(add);
    m.graph.addOutput(add.outputs[0]!);
    w.initializer!.dataType = 99 as DataType;
    const f = path.join(tmp, 'dtype99.onnx');
    fs.writeFileSync(f, encodeModel(m));
    expectUserError(await run(['inspect', f]), /unknown data type 99/);
  });

  it('an out-of-range number in the file (decoder RangeError)', async () => {
    const m = new Model({ opsetImports: { '': 17 } });
    m.irVersion = 2 ** 60;
    const f = path.join(tmp, 'huge-ir.onnx');
    fs.writeFileSync(f, encodeModel(m));
    expectUserError(await run(['inspect', f]), /not a valid ONNX model.*too large/);
  });

  it('a file that breaks an IR invariant (duplicate initializer names)', async () => {
    const m = new Model({ opsetImports: { '': 17 } });
    m.graph.addInitializer(Tensor.fromArray(new Float32Array([1]), [1], DataType.FLOAT, 'wA'));
    const b = m.graph.addInitializer(Tensor.fromArray(new Float32Array([2]), [1], DataType.FLOAT, 'wB'));
    m.graph.addOutput(b);
    // same length, so the protobuf framing stays valid: both initializers are now 'wA'
    const bytes = Buffer.from(encodeModel(m));
    const renamed = Buffer.from(bytes.toString('latin1').replaceAll('wB', 'wA'), 'latin1');
    const f = path.join(tmp, 'dup-init.onnx');
    fs.writeFileSync(f, renamed);
    expectUserError(await run(['inspect', f]), /not a valid ONNX model.*already has an initializer 'wA'/);
  });

  it('an unknown command', async () => {
    expectUserError(await run(['frobnicate']), /unknown command 'frobnicate'/);
  });

  it('a misspelt command (suggestion stays on the same line)', async () => {
    expectUserError(await run(['inspekt', LLAMA]), /unknown command 'inspekt'.*inspect/);
  });

  it('inspect without a model', async () => {
    expectUserError(await run(['inspect']), /missing required argument 'model'/);
  });

  it('an unknown option', async () => {
    expectUserError(await run(['inspect', LLAMA, '--frob']), /unknown option '--frob'/);
  });

  it('too many arguments', async () => {
    expectUserError(await run(['inspect', LLAMA, LLAMA]), /too many arguments/);
  });

  it('no command: help on stderr, exit 2', async () => {
    const r = await run([]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('Usage: titanize');
  });

  it('TITANIZE_DEBUG=1 adds the stack trace after the one-line message', async () => {
    const r = await run(['inspect', path.join(tmp, 'nope.onnx')], { TITANIZE_DEBUG: '1' });
    expect(r.code).toBe(2);
    expect(lines(r.stderr)[0]).toMatch(/^titanize: error: .*no such file/);
    expect(r.stderr).toMatch(/\n\s+at /);
  });
});

describe('error reporting', () => {
  const ctx = (env: Record<string, string> = {}): CliContext & { stderr: Capture; stdout: Capture } => ({
    stdout: new Capture(),
    stderr: new Capture(),
    env,
  });

  it('user errors: one line even when the message has several', () => {
    const c = ctx();
    expect(reportError(new UserInputError('first line\n  second line'), c)).toBe(2);
    expect(c.stderr.text).toBe('titanize: error: first line second line\n');
  });

  it('other errors: internal error, exit 1, stack only with TITANIZE_DEBUG=1', () => {
    const c = ctx();
    expect(reportError(new TypeError('boom'), c)).toBe(1);
    expect(lines(c.stderr.text)).toHaveLength(1);
    expect(c.stderr.text).toMatch(/^titanize: internal error: TypeError: boom/);
    expect(c.stderr.text).not.toMatch(/\n\s+at /);

    const d = ctx({ TITANIZE_DEBUG: '1' });
    expect(reportError(new Error('kaboom'), d)).toBe(1);
    expect(d.stderr.text).toMatch(/^titanize: internal error: kaboom\n/);
    expect(d.stderr.text).toMatch(/\n\s+at /);
  });

  it('an exception thrown by a command becomes an internal error', async () => {
    const stdout = new Capture();
    const stderr = new Capture();
    const c: CliContext = { stdout, stderr, env: {} };
    const program = createProgram(c, [
      (p) => {
        p.command('explode').action(() => {
          throw new Error('unexpected');
        });
      },
    ]);
    let code = 0;
    try {
      await program.parseAsync(['node', 'titanize', 'explode']);
    } catch (e) {
      code = reportError(e, c);
    }
    expect(code).toBe(1);
    expect(stderr.text).toMatch(/^titanize: internal error: unexpected/);
  });
});

describe('help and version', () => {
  it('root --help documents every option and command', async () => {
    const r = await run(['--help']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    const program = createProgram({ stdout: new Capture(), stderr: new Capture(), env: {} });
    for (const o of program.options) expect(r.stdout).toContain(o.long!);
    expect(r.stdout).toContain('--help');
    for (const c of program.commands) {
      expect(r.stdout).toContain(c.name());
      // every command's --help documents all its options
      const sub = await run([c.name(), '--help']);
      expect(sub.code, `${c.name()} --help`).toBe(0);
      expect(sub.stdout).toContain(`Usage: titanize ${c.name()}`);
      for (const o of c.options) expect(sub.stdout).toContain(o.long!);
      expect(sub.stdout).toContain('--help');
    }
  });

  it('inspect --help documents --json and the model argument', async () => {
    for (const args of [['inspect', '--help'], ['help', 'inspect'], ['inspect', '-h']]) {
      const r = await run(args);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain('Usage: titanize inspect [options] <model>');
      expect(r.stdout).toContain('--json');
      expect(r.stdout).toContain('--help');
      expect(r.stdout).toContain('parameterCount');
    }
  });

  it('--version prints the package.json version', async () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const r = await run([flag]);
      expect(r.code).toBe(0);
      expect(r.stdout.trim()).toBe(pkg.version);
    }
  });
});

describe('inspect report sections (the hook for --attention)', () => {
  it('a section adds a flag, a JSON key and text lines', async () => {
    const section: InspectSection<{ matmuls: number }> = {
      name: 'demoSection',
      description: 'count MatMul nodes (test section)',
      jsonDoc: '{matmuls}',
      compute: (model) => ({ matmuls: model.graph.nodes().filter((n) => n.opType === 'MatMul').length }),
      render: (v) => [`demo          ${v.matmuls} matmuls`],
    };
    const runWith = async (args: string[]): Promise<RunResult> => {
      const stdout = new Capture();
      const stderr = new Capture();
      const c: CliContext = { stdout, stderr, env: {} };
      const program = createProgram(c, [(p, cc) => addInspectCommand(p, cc, [section])]);
      let code = 0;
      try {
        await program.parseAsync(['node', 'titanize', ...args]);
      } catch (e) {
        code = reportError(e, c);
      }
      return { code, stdout: stdout.text, stderr: stderr.text };
    };
    const help = await runWith(['inspect', '--help']);
    expect(help.stdout).toContain('--demo-section');
    expect(help.stdout).toContain('demoSection');

    const plain = JSON.parse((await runWith(['inspect', LLAMA, '--json'])).stdout) as Record<string, unknown>;
    expect(plain).not.toHaveProperty('demoSection');
    const withSection = JSON.parse((await runWith(['inspect', LLAMA, '--json', '--demo-section'])).stdout) as Record<string, unknown>;
    expect(withSection.demoSection).toEqual({ matmuls: 20 });
    const text = await runWith(['inspect', LLAMA, '--demo-section']);
    expect(text.stdout).toMatch(/demo\s+20 matmuls/);
  });
});

describe('progress', () => {
  it('is silent when the stream is not a terminal or --json is set', () => {
    const pipe = new Capture(false);
    const p = progress(pipe, 10, 'work');
    p.tick(3);
    p.done();
    expect(pipe.text).toBe('');
    expect(p.active).toBe(false);

    const tty = new Capture(true);
    const q = progress(tty, 10, 'work', { json: true });
    q.tick();
    q.done();
    expect(tty.text).toBe('');
  });

  it('draws a bar on a terminal and stops on done()', () => {
    const tty = Object.assign(new Capture(true, 100), { cursorTo: () => true, clearLine: () => true, moveCursor: () => true });
    const p = progress(tty, 4, 'work');
    expect(p.active).toBe(true);
    p.tick(2);
    p.update(4);
    p.done();
    p.done();
    expect(p.active).toBe(false);
    expect(tty.text).toContain('work');
  });
});

const DIST_MAIN = path.join(ROOT, 'dist/src/cli/main.js');
const haveDist = fs.existsSync(DIST_MAIN);
if (!haveDist) console.warn(`skipping the bin/titanize.js spawn test: ${path.relative(ROOT, DIST_MAIN)} is missing (run npm run build)`);

describe('bin/titanize.js', () => {
  it.skipIf(!haveDist)('runs --help from the built code', () => {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bin/titanize.js'), '--help'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('Usage: titanize <command>');
    expect(r.stdout).toContain('inspect');
  });
});

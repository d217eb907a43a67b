import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import {
  AttributeType,
  Builder,
  DataType,
  ExternalDataError,
  IRFunction,
  Model,
  SerdeError,
  Tensor,
  Value,
  allTensors,
  attr,
  decodeModel,
  encodeModel,
  tensorType,
  verifyModel,
} from '../../src/ir/index.js';
import { loadModel, saveModel } from '../../src/node/index.js';
import { onnx } from '../../src/ir/serde/generated/onnx_pb.js';
import { loadRef } from '../helpers/compare.js';

const FIXTURES = path.resolve(__dirname, '../fixtures');
const fixtureFiles = fs.readdirSync(FIXTURES).filter((f) => f.endsWith('.onnx')).sort();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-serde-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The protobuf-level view of a file, for deep comparison (int64 as strings, bytes as base64). */
function protoObject(bytes: Uint8Array): unknown {
  return onnx.ModelProto.toObject(onnx.ModelProto.decode(bytes), { longs: String, bytes: String, defaults: false });
}

async function runOrt(modelBytes: Uint8Array, refFile: string): Promise<Record<string, ort.Tensor>> {
  const ref = loadRef(refFile);
  const session = await ort.InferenceSession.create(modelBytes);
  const feeds: Record<string, ort.Tensor> = {};
  for (const i of ref.inputs) feeds[i.name] = new ort.Tensor(i.dtype as 'float32', i.data as Float32Array, i.dims);
  const out = await session.run(feeds);
  await session.release();
  return out;
}

function sameBits(a: ort.Tensor, b: ort.Tensor): boolean {
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  return Buffer.compare(Buffer.from(x.buffer, x.byteOffset, x.byteLength), Buffer.from(y.buffer, y.byteOffset, y.byteLength)) === 0;
}

describe('lossless round trip of real exports', () => {
  it.each(fixtureFiles)('%s: decode → encode gives the same bytes and a deep-equal model', (file) => {
    const bytes = fs.readFileSync(path.join(FIXTURES, file));
    const model = loadModel(path.join(FIXTURES, file));
    verifyModel(model);
    const again = encodeModel(model);
    expect(protoObject(again)).toEqual(protoObject(bytes));
    expect(Buffer.compare(Buffer.from(again), bytes)).toBe(0);
    // and once more through the IR
    expect(Buffer.compare(Buffer.from(encodeModel(decodeModel(again))), bytes)).toBe(0);
  });

  it.each(fixtureFiles.filter((f) => fs.existsSync(path.join(FIXTURES, f.replace('.onnx', '.ref.json')))))(
    '%s: onnxruntime outputs are bit-identical after a round trip through external data',
    async (file) => {
      const src = path.join(FIXTURES, file);
      const dir = fs.mkdtempSync(path.join(tmp, 'ext-'));
      const out = path.join(dir, 'model.onnx');
      saveModel(loadModel(src), out, { externalData: { location: 'model.onnx.data', threshold: 0 } });
      const reloaded = loadModel(out);
      expect([...allTensors(reloaded)].filter((t) => t.isExternal).length).toBeGreaterThan(0);
      // back to one inline file, which onnxruntime can load from bytes
      const inline = path.join(dir, 'inline.onnx');
      saveModel(reloaded, inline, { externalData: 'inline' });
      const ref = src.replace('.onnx', '.ref.json');
      const a = await runOrt(fs.readFileSync(src), ref);
      const b = await runOrt(fs.readFileSync(inline), ref);
      for (const k of Object.keys(a)) expect(sameBits(a[k]!, b[k]!), k).toBe(true);
      expect(protoObject(fs.readFileSync(inline))).toEqual(protoObject(fs.readFileSync(src)));
    },
  );
});

/** A model using fields that ONNX 1.10-era schemas do not know. */
function modernModel(): Model {
  const model = new Model({ irVersion: 10, opsetImports: { '': 21, 'titanize.test': 1 } });
  model.producerName = 'titanize-test';
  model.metadataProps.push({ key: 'k', value: 'v' });
  const g = model.graph;
  const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, ['batch', 4])));
  const b = new Builder(g);
  // float8 and int4 initializers
  const f8 = new Tensor({ name: 'f8', dataType: DataType.FLOAT8E4M3FN, dims: [4], storage: { kind: 'raw', bytes: new Uint8Array([0x38, 0x40, 0xb8, 0x00]) } });
  const i4 = new Tensor({ name: 'i4', dataType: DataType.INT4, dims: [4], storage: { kind: 'raw', bytes: new Uint8Array([0x21, 0xf3]) } });
  g.addInitializer(f8);
  g.addInitializer(i4);
  const y = b.op('Call', [x], { alpha: attr.float(2), big: 9223372036854775807n, neg: -9223372036854775808n }, { domain: 'titanize.test' });
  const node = y.producer!;
  node.overload = 'v2';
  node.metadataProps.push({ key: 'titanize.rule', value: 'test' });
  g.setOutputs([y]);
  y.type = tensorType(DataType.FLOAT, ['batch', 4]);
  const fn = new IRFunction('titanize.test', 'Call');
  fn.overload = 'v2';
  fn.opsetImports.set('', 21);
  fn.attributes = ['big', 'neg'];
  fn.attributeProtos = [{ name: 'alpha', type: AttributeType.FLOAT, value: 1.5 }];
  fn.metadataProps.push({ key: 'fk', value: 'fv' });
  const fx = fn.body.addInput(new Value('fx'));
  const fb = new Builder(fn.body);
  const al = fb.op('Constant', [], { value_float: { type: AttributeType.FLOAT, value: 0 } });
  al.producer!.attributes.set('value_float', { name: 'value_float', type: AttributeType.FLOAT, value: 0, refAttrName: 'alpha' });
  const fy = fb.op('Mul', [fx, al]);
  fn.body.setOutputs([fy]);
  fy.type = tensorType(DataType.FLOAT, [null, 4]);
  fn.body.valueInfo.push(fy);
  model.addFunction(fn);
  return model;
}

describe('fields newer than ONNX 1.10', () => {
  it('survive encode → decode → encode', () => {
    const bytes = encodeModel(modernModel());
    const m = decodeModel(bytes);
    const node = m.graph.first!;
    expect(node.overload).toBe('v2');
    expect(node.metadataProps).toEqual([{ key: 'titanize.rule', value: 'test' }]);
    const big = node.attribute('big')!;
    expect(big.type === AttributeType.INT && big.value).toBe(9223372036854775807n);
    const neg = node.attribute('neg')!;
    expect(neg.type === AttributeType.INT && neg.value).toBe(-9223372036854775808n);
    const fn = m.functions[0]!;
    expect(fn.overload).toBe('v2');
    expect(fn.attributeProtos.map((a) => a.name)).toEqual(['alpha']);
    expect(fn.body.valueInfo.map((v) => v.name)).toEqual([fn.body.outputs[0]!.name]);
    expect(fn.metadataProps).toEqual([{ key: 'fk', value: 'fv' }]);
    expect(fn.body.first!.attribute('value_float')!.refAttrName).toBe('alpha');
    expect(m.graph.initializers.get('f8')!.initializer!.dataType).toBe(DataType.FLOAT8E4M3FN);
    expect(Array.from(m.graph.initializers.get('i4')!.initializer!.rawBytes())).toEqual([0x21, 0xf3]);
    expect(Buffer.compare(Buffer.from(encodeModel(m)), Buffer.from(bytes))).toBe(0);
  });

  it('a model with a function runs in onnxruntime after the round trip (functions are inlined)', async () => {
    const model = new Model({ irVersion: 10, opsetImports: { '': 21, 'titanize.test': 1 } });
    const g = model.graph;
    const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, [2])));
    const y = new Builder(g).op('Twice', [x], {}, { domain: 'titanize.test' });
    y.type = tensorType(DataType.FLOAT, [2]);
    g.setOutputs([y]);
    const fn = new IRFunction('titanize.test', 'Twice');
    fn.opsetImports.set('', 21);
    const fx = fn.body.addInput(new Value('fx'));
    fn.body.setOutputs([new Builder(fn.body).op('Add', [fx, fx])]);
    model.addFunction(fn);
    const bytes = encodeModel(decodeModel(encodeModel(model)));
    const s = await ort.InferenceSession.create(bytes);
    const out = await s.run({ x: new ort.Tensor('float32', new Float32Array([1.5, -2]), [2]) });
    expect(Array.from(out[y.name]!.data as Float32Array)).toEqual([3, -4]);
  });
});

describe('raw data', () => {
  it('stays a zero-copy view into the file buffer', () => {
    const bytes = fs.readFileSync(path.join(FIXTURES, 'llama.onnx'));
    const m = decodeModel(bytes);
    const raw = [...m.graph.initializers.values()].map((v) => v.initializer!.storage).filter((st) => st.kind === 'raw');
    expect(raw.length).toBeGreaterThan(0);
    for (const st of raw) if (st.kind === 'raw') expect(st.bytes.buffer).toBe(bytes.buffer);
  });
});

describe('bad input gives typed, located errors', () => {
  it('not ONNX, truncated, empty, missing', () => {
    const junk = path.join(tmp, 'junk.onnx');
    fs.writeFileSync(junk, 'this is not a model\n'.repeat(10));
    expect(() => loadModel(junk)).toThrow(SerdeError);
    const llama = fs.readFileSync(path.join(FIXTURES, 'llama.onnx'));
    const cut = path.join(tmp, 'cut.onnx');
    fs.writeFileSync(cut, llama.subarray(0, llama.length >> 1));
    expect(() => loadModel(cut)).toThrow(/not a valid ONNX model/);
    const empty = path.join(tmp, 'empty.onnx');
    fs.writeFileSync(empty, '');
    expect(() => loadModel(empty)).toThrow(/empty/);
    expect(() => loadModel(path.join(tmp, 'nope.onnx'))).toThrow(/no such file/);
  });

  it('an unknown tensor data type names the tensor', () => {
    const m = modernModel();
    m.graph.initializers.get('f8')!.initializer!.dataType = 99 as DataType;
    expect(() => decodeModel(encodeModel(m))).toThrow(/tensor 'f8' has unknown data type 99/);
  });
});

describe('external data', () => {
  function smallModel(): Model {
    const model = new Model({ opsetImports: { '': 17 } });
    const g = model.graph;
    const x = g.addInput(new Value('x', tensorType(DataType.FLOAT, [1, 4])));
    const b = new Builder(g);
    const w = b.initializer('w', new Float32Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]), [4, 4]);
    const y = b.op('MatMul', [x, w]);
    y.type = tensorType(DataType.FLOAT, [1, 4]);
    g.setOutputs([y]);
    return model;
  }

  function saveExternal(): { dir: string; file: string } {
    const dir = fs.mkdtempSync(path.join(tmp, 'ext-'));
    const file = path.join(dir, 'm.onnx');
    saveModel(smallModel(), file, { externalData: { location: 'w.bin', threshold: 0 } });
    return { dir, file };
  }

  it('is read lazily, only when the values are asked for', () => {
    const { dir, file } = saveExternal();
    const model = loadModel(file);
    const t = model.graph.initializers.get('w')!.initializer!;
    expect(t.isExternal).toBe(true);
    expect(t.byteLength).toBe(64);
    // change the bytes on disk after loading: the tensor sees the new bytes, so nothing was read before
    const data = fs.readFileSync(path.join(dir, 'w.bin'));
    const view = new Float32Array(data.buffer, data.byteOffset, data.byteLength / 4);
    view.fill(7);
    fs.writeFileSync(path.join(dir, 'w.bin'), data);
    expect(Array.from(t.toTypedArray() as Float32Array).every((v) => v === 7)).toBe(true);
  });

  it('rejects paths that escape the model folder', () => {
    const { dir, file } = saveExternal();
    for (const bad of ['../w.bin', '/etc/passwd', 'sub/../../w.bin']) {
      const m = loadModel(file);
      const t = m.graph.initializers.get('w')!.initializer!;
      if (t.storage.kind !== 'external') throw new Error('expected external');
      t.storage.ref.location = bad;
      const badFile = path.join(dir, 'bad.onnx');
      fs.writeFileSync(badFile, encodeModel(m));
      expect(() => loadModel(badFile)).toThrow(ExternalDataError);
      expect(() => loadModel(badFile)).toThrow(/tensor 'w'.*(escapes|absolute)/);
    }
    // a symlink inside the folder that points outside
    fs.symlinkSync('/etc', path.join(dir, 'link'));
    const m = loadModel(file);
    const t = m.graph.initializers.get('w')!.initializer!;
    if (t.storage.kind !== 'external') throw new Error('expected external');
    t.storage.ref.location = 'link/passwd';
    const linkFile = path.join(dir, 'link.onnx');
    fs.writeFileSync(linkFile, encodeModel(m));
    expect(() => loadModel(linkFile)).toThrow(/resolves outside the model folder/);
  });

  it('reports a missing or short data file', () => {
    const { dir, file } = saveExternal();
    fs.truncateSync(path.join(dir, 'w.bin'), 10);
    expect(() => loadModel(file)).toThrow(/has 10 bytes, but the tensor needs bytes up to 64/);
    fs.rmSync(path.join(dir, 'w.bin'));
    expect(() => loadModel(file)).toThrow(/tensor 'w': external data file 'w.bin' is missing/);
  });

  it('saving keeps references in the same folder, copies elsewhere, or inlines', async () => {
    const { dir, file } = saveExternal();
    const m = loadModel(file);
    const same = path.join(dir, 'same.onnx');
    saveModel(m, same);
    expect(fs.readdirSync(dir).sort()).toEqual(['m.onnx', 'same.onnx', 'w.bin']);
    const other = fs.mkdtempSync(path.join(tmp, 'other-'));
    saveModel(m, path.join(other, 'copy.onnx'));
    expect(fs.readdirSync(other).sort()).toEqual(['copy.onnx', 'copy.onnx.data']);
    saveModel(m, path.join(other, 'inline.onnx'), { externalData: 'inline' });
    expect(loadModel(path.join(other, 'inline.onnx')).graph.initializers.get('w')!.initializer!.isExternal).toBe(false);
    // the model object was not changed by the inline save
    expect(m.graph.initializers.get('w')!.initializer!.isExternal).toBe(true);
    for (const f of [same, path.join(other, 'copy.onnx'), path.join(other, 'inline.onnx')]) {
      const s = await ort.InferenceSession.create(f);
      const out = await s.run({ x: new ort.Tensor('float32', new Float32Array([1, 0, 0, 1]), [1, 4]) });
      expect(Array.from(out[s.outputNames[0]!]!.data as Float32Array)).toEqual([14, 16, 18, 20]);
    }
  });

  it('a failed save leaves nothing behind', () => {
    const { dir, file } = saveExternal();
    const m = loadModel(file);
    fs.rmSync(path.join(dir, 'w.bin'));
    const other = fs.mkdtempSync(path.join(tmp, 'fail-'));
    expect(() => saveModel(m, path.join(other, 'out.onnx'))).toThrow(/cannot open external data file 'w.bin'/);
    expect(fs.readdirSync(other)).toEqual([]);
  });
});

describe('save progress', () => {
  it('reports bytes written to a data file against the total', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'progress-'));
    const m = loadModel(path.join(FIXTURES, 'llama.onnx'));
    const calls: [number, number][] = [];
    saveModel(m, path.join(dir, 'm.onnx'), { externalData: { location: 'm.bin', threshold: 4096 }, onProgress: (w, t) => calls.push([w, t]) });
    expect(calls.length).toBeGreaterThan(3);
    const total = calls[0]![1];
    expect(calls.every(([, t]) => t === total)).toBe(true);
    expect(calls[calls.length - 1]![0]).toBe(total);
    expect(calls.every(([w], i) => i === 0 || w > calls[i - 1]![0])).toBe(true);
  });
});

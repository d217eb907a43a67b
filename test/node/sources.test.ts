/**
 * The Node layer with the IR's external data sources: the file source is the default for
 * `decodeModel(bytes, { baseDir })`, `saveModel` streams weights from any source (bytes in
 * memory too), and `checkInside` keeps refusing symlinks that leave the folder.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type ExternalDataRef, type Model, type Tensor, allTensors, bytesSource, decodeModel, encodeModel } from '../../src/ir/index.js';
import { FileSource, checkInside, externalFile, externalPath, fileSource, loadModel, saveModel } from '../../src/node/index.js';
import * as entry from '../../src/index.js';

const LLAMA = path.resolve(__dirname, '../fixtures/llama.onnx');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-node-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function externalCopy(): { dir: string; file: string } {
  const dir = fs.mkdtempSync(path.join(tmp, 'ext-'));
  const file = path.join(dir, 'm.onnx');
  saveModel(loadModel(LLAMA), file, { externalData: { location: 'm.onnx.data', threshold: 1024 } });
  return { dir, file };
}

const refOf = (t: Tensor): ExternalDataRef => {
  if (t.storage.kind !== 'external') throw new Error(`${t.name} is not external`);
  return t.storage.ref;
};
const values = (m: Model): Map<string, string> =>
  new Map([...allTensors(m)].filter((t) => t.dataType !== 8).map((t) => [t.name, Buffer.from(t.rawBytes()).toString('base64')]));

describe('external data sources in Node', () => {
  it('the package entry still exports the file functions', () => {
    for (const name of ['loadModel', 'saveModel', 'allTensors', 'checkExternalFiles', 'parseExternalData', 'checkInside', 'refEntries', 'externalPath', 'readExternal', 'copyExternal', 'decodeModel', 'bytesSource', 'blobSource', 'fileSource']) {
      expect(typeof (entry as Record<string, unknown>)[name], name).toBe('function');
    }
  });

  it('loadModel reads through the file source of the model folder; decodeModel({ baseDir }) uses the same one', () => {
    const { dir, file } = externalCopy();
    const loaded = loadModel(file);
    expect(loaded.externalData).toBeInstanceOf(FileSource);
    expect(loaded.externalData).toBe(fileSource(dir));
    const copy = decodeModel(encodeModel(loaded), { baseDir: loaded.baseDir });
    expect(copy.externalData).toBe(loaded.externalData);
    const t = [...allTensors(copy)].find((x) => x.isExternal)!;
    expect(externalFile(refOf(t))).toBe(path.join(dir, 'm.onnx.data'));
    expect(values(copy)).toEqual(values(loadModel(LLAMA)));
  });

  it('saveModel streams weights from bytes in memory into a data file', () => {
    const { file } = externalCopy();
    const model = decodeModel(fs.readFileSync(file), { externalData: bytesSource({ 'm.onnx.data': fs.readFileSync(`${file}.data`) }) });
    expect(model.baseDir).toBeUndefined();
    const t = [...allTensors(model)].find((x) => x.isExternal)!;
    expect(externalFile(refOf(t))).toBeUndefined();
    expect(() => externalPath(refOf(t))).toThrow(/not read from a file/);
    const out = path.join(fs.mkdtempSync(path.join(tmp, 'out-')), 'saved.onnx');
    saveModel(model, out);
    expect(fs.existsSync(`${out}.data`)).toBe(true);
    expect(values(loadModel(out))).toEqual(values(loadModel(LLAMA)));
    // and inline
    saveModel(model, out, { externalData: 'inline' });
    const inline = loadModel(out);
    expect([...allTensors(inline)].some((x) => x.isExternal)).toBe(false);
    expect(values(inline)).toEqual(values(loadModel(LLAMA)));
  });

  it('checkInside: text checks, then symlinks that leave the folder', () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'inside-'));
    expect(() => checkInside('../w.bin', dir, 'w')).toThrow(new RegExp(`escapes the model folder ${dir}`));
    expect(() => checkInside('/etc/passwd', dir, 'w')).toThrow(/absolute/);
    fs.symlinkSync('/etc', path.join(dir, 'link'));
    expect(() => checkInside('link/passwd', dir, 'w')).toThrow(/resolves outside the model folder/);
    expect(() => checkInside('w.bin', dir, 'w')).not.toThrow();
  });
});

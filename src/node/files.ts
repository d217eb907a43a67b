/**
 * Loading and saving model files: reads the file, checks external data references
 * without reading them, and writes atomically (temporary name, then rename), keeping
 * weights external (streamed, bounded memory) or inlining them.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  DataType,
  type Model,
  SerdeError,
  type StringStringEntry,
  type Tensor,
  UserInputError,
  allTensors,
  checkExternalFiles,
  decodeModel,
  encodeModel,
  refEntries,
} from '../ir/index.js';
import { copyExternal, externalFile, externalFolder, fileSource } from './file_source.js';

export interface LoadOptions {
  /** Check that every external data file exists and is long enough (stat only). Default true. */
  checkExternalData?: boolean;
}

/** Reads an ONNX file. Weights in external files are referenced, not read. */
export function loadModel(file: string, options: LoadOptions = {}): Model {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserInputError(
      code === 'ENOENT' ? `${file}: no such file` : code === 'EISDIR' ? `${file} is a folder, not an ONNX file` : `${file}: cannot read (${code ?? e})`,
    );
  }
  if (bytes.length === 0) throw new SerdeError(`${file} is empty; it is not an ONNX model`);
  const baseDir = path.dirname(path.resolve(file));
  const model = decodeModel(bytes, { baseDir, externalData: fileSource(baseDir), source: file });
  if (model.irVersion < 1 || model.irVersion > 64) {
    throw new SerdeError(`${file} is not an ONNX model (implausible ir_version ${model.irVersion})`);
  }
  if (options.checkExternalData !== false) checkExternalFiles(model);
  return model;
}

export interface SaveOptions {
  /**
   * How weights are written:
   * - 'keep' (default): external tensors stay external. Saved next to the source files,
   *   references are kept as they are; saved elsewhere, their bytes are streamed into
   *   `<output>.data` beside the new model.
   * - 'inline': every tensor goes into the .onnx file (must stay under 2 GB).
   * - { location, threshold }: tensors of at least `threshold` bytes (default 1024) go
   *   to the file `location` beside the model.
   */
  externalData?: 'keep' | 'inline' | { location: string; threshold?: number };
  /**
   * Called as weight bytes are written to a data file: (bytes written so far, bytes to
   * write in all). For a progress bar on long saves.
   */
  onProgress?: (written: number, total: number) => void;
}

const TWO_GB = 2 ** 31 - 1;

/** Writes a model atomically: nothing is left half-written if anything fails. */
export function saveModel(model: Model, file: string, options: SaveOptions = {}): void {
  const outDir = path.dirname(path.resolve(file));
  const mode = options.externalData ?? 'keep';
  const tmpFiles: string[] = [];
  const renames: [string, string][] = [];
  try {
    let dataFd: number | undefined;
    let dataPos = 0;
    const openData = (location: string): number => {
      if (dataFd === undefined) {
        const target = path.join(outDir, location);
        if (isSourceDataFile(model, target)) {
          throw new UserInputError(`refusing to overwrite '${location}': the model being saved reads its weights from it`);
        }
        const tmp = `${target}.${process.pid}.tmp`;
        tmpFiles.push(tmp);
        renames.push([tmp, target]);
        dataFd = fs.openSync(tmp, 'w');
      }
      return dataFd;
    };
    let scratch: Buffer | undefined;
    let written = 0;
    let toWrite = 0;
    const appendData = (t: Tensor, location: string): StringStringEntry[] => {
      const fd = openData(location);
      // align each tensor to 64 bytes (as onnx's external data helper does for mmap use)
      const pad = (64 - (dataPos % 64)) % 64;
      if (pad) fs.writeSync(fd, Buffer.alloc(pad), 0, pad, dataPos);
      dataPos += pad;
      const start = dataPos;
      let length: number;
      if (t.storage.kind === 'external') {
        length = t.storage.ref.length ?? t.byteLength;
        scratch ??= Buffer.allocUnsafe(16 << 20);
        copyExternal(t.storage.ref, length, fd, start, t.name, scratch);
      } else {
        const bytes = t.rawBytes();
        length = bytes.byteLength;
        fs.writeSync(fd, bytes, 0, length, start);
      }
      dataPos += length;
      written += length;
      options.onProgress?.(written, toWrite);
      return [
        { key: 'location', value: location },
        { key: 'offset', value: String(start) },
        { key: 'length', value: String(length) },
      ];
    };

    /** Saved beside the files it reads (a file reference relative to the output's folder): the reference stays. */
    const staysPut = (t: Tensor): boolean => t.storage.kind === 'external' && externalFolder(t.storage.ref) === outDir;
    const defaultLocation = `${path.basename(file)}.data`;
    /** The data file a tensor's bytes are written to, or undefined when they stay where they are. */
    const dataFileOf = (t: Tensor): string | undefined => {
      if (mode === 'inline') return undefined;
      if (mode === 'keep') return t.isExternal && !staysPut(t) ? defaultLocation : undefined;
      return t.byteLength >= (mode.threshold ?? 1024) && t.dataType !== DataType.STRING ? mode.location : undefined;
    };
    if (options.onProgress) for (const t of allTensors(model)) if (dataFileOf(t)) toWrite += t.byteLength;
    const externalize = (t: Tensor): StringStringEntry[] | undefined => {
      const location = dataFileOf(t);
      if (location) return appendData(t, location);
      // saved beside the source files: references stay as they are
      return t.storage.kind === 'external' && mode === 'keep' ? refEntries(t.storage.ref) : undefined;
    };

    const bytes = mode === 'inline' ? encodeInline(model) : encodeModel(model, { externalize });
    if (dataFd !== undefined) {
      fs.fsyncSync(dataFd);
      fs.closeSync(dataFd);
    }
    const tmp = `${path.resolve(file)}.${process.pid}.tmp`;
    tmpFiles.push(tmp);
    fs.writeFileSync(tmp, bytes);
    renames.push([tmp, path.resolve(file)]);
    for (const [from, to] of renames) fs.renameSync(from, to);
  } catch (e) {
    for (const t of tmpFiles) fs.rmSync(t, { force: true });
    if (e instanceof UserInputError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code) throw new UserInputError(writeFailure(file, code));
    throw e;
  }
}

/** One line naming the user's path (never the temporary one) and what to do. */
function writeFailure(file: string, code: string): string {
  const dir = path.dirname(path.resolve(file));
  switch (code) {
    case 'ENOENT':
      return `cannot write ${file}: the folder ${dir} does not exist (create it first)`;
    case 'EISDIR':
      return `cannot write ${file}: it is a folder; give a file name such as ${path.join(file, 'model.onnx')}`;
    case 'ENOTDIR':
      return `cannot write ${file}: a part of ${dir} is a file, not a folder`;
    case 'EACCES':
    case 'EPERM':
      return `cannot write ${file}: permission denied`;
    case 'ENOSPC':
      return `cannot write ${file}: no space left on the device`;
    case 'EROFS':
      return `cannot write ${file}: the file system is read-only`;
    default:
      return `cannot write ${file} (${code})`;
  }
}

/** Inline save: external tensors are read one by one into a temporary raw storage. */
function encodeInline(model: Model): Uint8Array {
  const external = [...allTensors(model)].filter((t) => t.storage.kind === 'external');
  // checked before anything is read
  if (external.reduce((n, t) => n + t.byteLength, 0) > TWO_GB) {
    throw new UserInputError('the weights exceed the 2 GB protobuf limit; save with external data instead of inline');
  }
  const restore: [Tensor, Tensor['storage']][] = [];
  try {
    for (const t of external) {
      restore.push([t, t.storage]);
      t.storage = { kind: 'raw', bytes: t.rawBytes() };
    }
    return encodeModel(model);
  } finally {
    for (const [t, s] of restore) t.storage = s;
  }
}

function isSourceDataFile(model: Model, target: string): boolean {
  for (const t of allTensors(model)) {
    if (t.storage.kind === 'external' && externalFile(t.storage.ref) === target) return true;
  }
  return false;
}

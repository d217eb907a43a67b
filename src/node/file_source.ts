/**
 * External data in files next to the model: the `ExternalDataSource` that reads them with
 * `node:fs`, the symlink check only the file system can make, and streaming copies for
 * `saveModel`. Importing this module installs the file source as the default one, so that
 * `decodeModel(bytes, { baseDir })` and references built by hand read files.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  ExternalDataError,
  type ExternalDataRef,
  type ExternalDataSource,
  checkLocation,
  externalDataSourceOf,
  requireExternalDataSource,
  setDefaultExternalDataSource,
} from '../ir/index.js';

/** Reads external data from the files in one folder. */
export class FileSource implements ExternalDataSource {
  /** Absolute folder the locations are relative to. */
  readonly baseDir: string;

  constructor(baseDir: string) {
    this.baseDir = path.resolve(baseDir);
  }

  /** The absolute path of a location. */
  path(location: string): string {
    return path.resolve(this.baseDir, location);
  }

  read(location: string, offset: number, length: number | undefined): Uint8Array {
    const fd = fs.openSync(this.path(location), 'r');
    try {
      const fileSize = fs.fstatSync(fd).size;
      if (offset > fileSize) throw new RangeError(`offset ${offset} is beyond the end of the file (${fileSize} bytes)`);
      const want = Math.min(length ?? fileSize - offset, fileSize - offset);
      const out = new Uint8Array(want);
      let done = 0;
      while (done < want) {
        const n = fs.readSync(fd, out, done, want - done, offset + done);
        if (n === 0) break;
        done += n;
      }
      return done === want ? out : out.subarray(0, done);
    } finally {
      fs.closeSync(fd);
    }
  }

  size(location: string): number | undefined {
    try {
      return fs.statSync(this.path(location)).size;
    } catch {
      return undefined;
    }
  }

  /** A symlink inside the folder may still point outside it. */
  check(location: string, tensorName: string): void {
    let real: string;
    try {
      real = fs.realpathSync(this.path(location));
    } catch {
      return; // missing files are reported when (and if) the data is read or copied
    }
    const realBase = fs.realpathSync(this.baseDir);
    const realRel = path.relative(realBase, real);
    if (realRel.startsWith('..') || path.isAbsolute(realRel)) {
      throw new ExternalDataError(
        `tensor '${tensorName}': external data path '${location}' resolves outside the model folder (${real})`,
      );
    }
  }
}

const sources = new Map<string, FileSource>();

/** The file source of a folder (default: the current folder); one object per folder. */
export function fileSource(baseDir: string = process.cwd()): FileSource {
  const dir = path.resolve(baseDir);
  let s = sources.get(dir);
  if (!s) sources.set(dir, (s = new FileSource(dir)));
  return s;
}

setDefaultExternalDataSource((baseDir) => fileSource(baseDir));

/** Rejects absolute paths and paths that climb out of the model folder (also through symlinks). */
export function checkInside(location: string, baseDir: string, tensorName: string): void {
  checkLocation(location, tensorName, path.resolve(baseDir));
  fileSource(baseDir).check(location, tensorName);
}

/** The file a reference reads, or undefined when its bytes come from another source. */
export function externalFile(ref: ExternalDataRef): string | undefined {
  const source = externalDataSourceOf(ref);
  return source instanceof FileSource ? source.path(ref.location) : undefined;
}

/** The folder a file reference is relative to, or undefined when its bytes come from another source. */
export function externalFolder(ref: ExternalDataRef): string | undefined {
  const source = externalDataSourceOf(ref);
  return source instanceof FileSource ? source.baseDir : undefined;
}

/** The absolute path of a file reference (a reference to another source has none: this throws). */
export function externalPath(ref: ExternalDataRef): string {
  const file = externalFile(ref);
  if (file === undefined) throw new ExternalDataError(`external data '${ref.location}' is not read from a file`);
  return file;
}

/**
 * Streams `length` bytes of an external tensor to `fd` at `position` with bounded memory;
 * pass the same `scratch` buffer for every tensor of a save to avoid reallocating it.
 * Files are copied through file descriptors; other sources are read a chunk at a time.
 */
export function copyExternal(ref: ExternalDataRef, length: number, outFd: number, position: number, tensorName: string, scratch?: Buffer): void {
  const source = requireExternalDataSource(ref, tensorName);
  if (!(source instanceof FileSource)) {
    const step = scratch?.length ?? 16 << 20;
    for (let done = 0; done < length; ) {
      const want = Math.min(step, length - done);
      let chunk: Uint8Array;
      try {
        chunk = source.read(ref.location, ref.offset + done, want);
      } catch (e) {
        throw new ExternalDataError(`tensor '${tensorName}': cannot open external data file '${ref.location}' (${e instanceof Error ? e.message : e})`, { cause: e });
      }
      if (chunk.byteLength < want) throw new ExternalDataError(`tensor '${tensorName}': external data '${ref.location}' ended early`);
      fs.writeSync(outFd, chunk, 0, want, position + done);
      done += want;
    }
    return;
  }
  let fd: number;
  try {
    fd = fs.openSync(source.path(ref.location), 'r');
  } catch (e) {
    throw new ExternalDataError(
      `tensor '${tensorName}': cannot open external data file '${ref.location}' (${(e as NodeJS.ErrnoException).code ?? e})`,
    );
  }
  try {
    const chunk = scratch ?? Buffer.allocUnsafe(Math.min(length, 16 << 20));
    let done = 0;
    while (done < length) {
      const n = fs.readSync(fd, chunk, 0, Math.min(chunk.length, length - done), ref.offset + done);
      if (n === 0) {
        throw new ExternalDataError(`tensor '${tensorName}': external data '${ref.location}' ended early`);
      }
      fs.writeSync(outFd, chunk, 0, n, position + done);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
}

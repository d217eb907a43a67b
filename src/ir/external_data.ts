/**
 * External data: tensors whose bytes live in a separate file next to the model.
 * A reference is a path + offset + length; it is checked to stay inside the model's
 * folder when the model is read, and the bytes are read only on demand.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ExternalDataError } from './errors.js';
import type { StringStringEntry } from './metadata.js';

export interface ExternalDataRef {
  /** Path relative to the model's folder, as written in the file. */
  location: string;
  offset: number;
  /** Byte length, when the file states it. */
  length: number | undefined;
  /** Absolute folder the location is relative to. */
  baseDir: string;
  /** Every external_data entry as it appeared in the file (kept for a lossless encode). */
  entries: StringStringEntry[];
}

/** Parses TensorProto.external_data entries and checks that the path stays in `baseDir`. */
export function parseExternalData(entries: StringStringEntry[], baseDir: string, tensorName: string): ExternalDataRef {
  let location: string | undefined;
  let offset = 0;
  let length: number | undefined;
  for (const { key, value } of entries) {
    if (key === 'location') location = value;
    else if (key === 'offset') offset = parseNonNegative(value, 'offset', tensorName);
    else if (key === 'length') length = parseNonNegative(value, 'length', tensorName);
  }
  if (location === undefined || location === '') {
    throw new ExternalDataError(`tensor '${tensorName}': external data has no 'location' entry`);
  }
  checkInside(location, baseDir, tensorName);
  return { location, offset, length, baseDir, entries };
}

function parseNonNegative(value: string, key: string, tensorName: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new ExternalDataError(`tensor '${tensorName}': external data ${key} '${value}' is not a non-negative integer`);
  }
  return n;
}

/** Rejects absolute paths and paths that climb out of the model folder (also through symlinks). */
export function checkInside(location: string, baseDir: string, tensorName: string): void {
  if (path.isAbsolute(location) || /^[a-zA-Z]:[\\/]/.test(location)) {
    throw new ExternalDataError(
      `tensor '${tensorName}': external data path '${location}' is absolute; it must be relative to the model's folder`,
    );
  }
  const base = path.resolve(baseDir);
  const full = path.resolve(base, location);
  const rel = path.relative(base, full);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) {
    throw new ExternalDataError(
      `tensor '${tensorName}': external data path '${location}' escapes the model folder ${base}`,
    );
  }
  // A symlink inside the folder may still point outside it.
  let real: string;
  try {
    real = fs.realpathSync(full);
  } catch {
    return; // missing files are reported when (and if) the data is read or copied
  }
  const realBase = fs.realpathSync(base);
  const realRel = path.relative(realBase, real);
  if (realRel.startsWith('..') || path.isAbsolute(realRel)) {
    throw new ExternalDataError(
      `tensor '${tensorName}': external data path '${location}' resolves outside the model folder (${real})`,
    );
  }
}

/**
 * The external_data entries to write: the file's entries in their order, with location,
 * offset and length taken from the reference's fields (so editing those fields is enough).
 */
export function refEntries(ref: ExternalDataRef): StringStringEntry[] {
  const out = ref.entries.map((e) => {
    if (e.key === 'location') return { key: e.key, value: ref.location };
    if (e.key === 'offset') return { key: e.key, value: String(ref.offset) };
    if (e.key === 'length') return { key: e.key, value: ref.length === undefined ? e.value : String(ref.length) };
    return { ...e };
  });
  const has = (k: string): boolean => out.some((e) => e.key === k);
  if (!has('location')) out.unshift({ key: 'location', value: ref.location });
  if (!has('offset') && ref.offset !== 0) out.push({ key: 'offset', value: String(ref.offset) });
  if (!has('length') && ref.length !== undefined) out.push({ key: 'length', value: String(ref.length) });
  return out;
}

export function externalPath(ref: ExternalDataRef): string {
  return path.resolve(ref.baseDir, ref.location);
}

function openExternal(ref: ExternalDataRef, tensorName: string): number {
  try {
    return fs.openSync(externalPath(ref), 'r');
  } catch (e) {
    throw new ExternalDataError(
      `tensor '${tensorName}': cannot open external data file '${ref.location}' (${(e as NodeJS.ErrnoException).code ?? e})`,
    );
  }
}

/** Reads the bytes of one external tensor; nothing is cached. */
export function readExternal(ref: ExternalDataRef, tensorName: string): Uint8Array {
  const fd = openExternal(ref, tensorName);
  try {
    const fileSize = fs.fstatSync(fd).size;
    const length = ref.length ?? fileSize - ref.offset;
    if (ref.offset + length > fileSize) {
      throw new ExternalDataError(
        `tensor '${tensorName}': external data '${ref.location}' is too short (needs bytes ${ref.offset}..${ref.offset + length}, file has ${fileSize})`,
      );
    }
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const n = fs.readSync(fd, out, done, length - done, ref.offset + done);
      if (n === 0) break;
      done += n;
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Streams `length` bytes of an external tensor to `fd` at `position` with bounded memory;
 * pass the same `scratch` buffer for every tensor of a save to avoid reallocating it.
 */
export function copyExternal(ref: ExternalDataRef, length: number, outFd: number, position: number, tensorName: string, scratch?: Buffer): void {
  const fd = openExternal(ref, tensorName);
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

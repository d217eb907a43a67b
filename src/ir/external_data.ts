/**
 * External data: tensors whose bytes live outside the model file. A reference is a
 * location + offset + length; it is checked to stay inside the model's folder when the
 * model is read, and the bytes are read only on demand, from an `ExternalDataSource`.
 *
 * This module touches no file system: the Node layer (`src/node`) supplies the source
 * that reads files next to the model, the browser supplies bytes or `Blob`s
 * (`bytesSource`, `blobSource` in `data_sources.ts`), and anyone can implement the
 * interface (a fetch cache, a zip archive, ...).
 */
import { ExternalDataError } from './errors.js';
import type { StringStringEntry } from './metadata.js';

/**
 * Where the bytes of external tensors come from. `location` is the path written in the
 * model (relative, already checked not to leave the model's folder).
 */
export interface ExternalDataSource {
  /** The folder locations are relative to, when the data are files (the Node file source sets it). */
  readonly baseDir?: string;
  /**
   * The bytes [offset, offset + length) of the data file `location`, or from `offset` to
   * its end when `length` is undefined. A missing file throws; a file that ends early may
   * throw or return fewer bytes (the caller reports it).
   */
  read(location: string, offset: number, length: number | undefined): Uint8Array;
  /** The byte size of a data file, or undefined when there is no such file (for `checkExternalFiles`). */
  size?(location: string): number | undefined;
  /**
   * Extra checks of a location when a model is decoded, after the ones every source gets
   * (relative, not climbing out of the folder); the file source refuses symlinks that
   * resolve outside the folder. Throws an `ExternalDataError`.
   */
  check?(location: string, tensorName: string): void;
  /** Asynchronous read, for sources that cannot read synchronously everywhere (a `Blob` outside a Worker). */
  readAsync?(location: string, offset: number, length: number | undefined): Promise<Uint8Array>;
}

export interface ExternalDataRef {
  /** Path relative to the model's folder, as written in the file. */
  location: string;
  offset: number;
  /** Byte length, when the file states it. */
  length: number | undefined;
  /** Absolute folder the location is relative to, when the data are files (undefined for other sources). */
  baseDir?: string;
  /**
   * Where the bytes are read from. When absent, the default source for `baseDir` is used
   * (the Node layer installs one that reads files; see `setDefaultExternalDataSource`).
   */
  source?: ExternalDataSource;
  /** Every external_data entry as it appeared in the file (kept for a lossless encode). */
  entries: StringStringEntry[];
}

type SourceFactory = (baseDir: string | undefined) => ExternalDataSource;
let defaultSource: SourceFactory | undefined;

/**
 * Installs the source used for references that name only a folder (`decodeModel(bytes,
 * { baseDir })`, references built by hand). The Node layer installs its file source when
 * it is imported; in a browser there is none unless one is installed here, and such
 * references report that they cannot be read.
 */
export function setDefaultExternalDataSource(factory: SourceFactory | undefined): void {
  defaultSource = factory;
}

/** The source given to `decodeModel`, or the default one for `baseDir` (undefined when there is none). */
export function resolveExternalDataSource(source: ExternalDataSource | undefined, baseDir: string | undefined): ExternalDataSource | undefined {
  return source ?? defaultSource?.(baseDir);
}

/** The source a reference reads from, or undefined when none was given and no default is installed. */
export function externalDataSourceOf(ref: ExternalDataRef): ExternalDataSource | undefined {
  return ref.source ?? (ref.baseDir !== undefined ? defaultSource?.(ref.baseDir) : undefined);
}

/**
 * Parses TensorProto.external_data entries and checks that the path stays in the model's
 * folder (lexically here; `source.check` adds what only the source can tell, e.g. symlinks).
 * `source` defaults to the default source for `baseDir`.
 */
export function parseExternalData(
  entries: StringStringEntry[],
  baseDir: string | undefined,
  tensorName: string,
  source: ExternalDataSource | undefined = resolveExternalDataSource(undefined, baseDir),
): ExternalDataRef {
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
  const folder = baseDir ?? source?.baseDir;
  checkLocation(location, tensorName, folder);
  source?.check?.(location, tensorName);
  const ref: ExternalDataRef = { location, offset, length, entries };
  if (folder !== undefined) ref.baseDir = folder;
  if (source) ref.source = source;
  return ref;
}

function parseNonNegative(value: string, key: string, tensorName: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new ExternalDataError(`tensor '${tensorName}': external data ${key} '${value}' is not a non-negative integer`);
  }
  return n;
}

/**
 * Rejects absolute paths and paths that climb out of the model's folder, by the path's
 * text alone ('/' and '\' both separate parts, so a Windows-style path is judged the same
 * everywhere). `folder` only names the folder in the message.
 */
export function checkLocation(location: string, tensorName: string, folder?: string): void {
  if (/^[\\/]/.test(location) || /^[a-zA-Z]:/.test(location)) {
    throw new ExternalDataError(
      `tensor '${tensorName}': external data path '${location}' is absolute; it must be relative to the model's folder`,
    );
  }
  let depth = 0;
  let escapes = false;
  for (const part of location.split(/[\\/]/)) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (--depth < 0) escapes = true;
    } else depth++;
  }
  if (escapes || depth <= 0) {
    throw new ExternalDataError(
      `tensor '${tensorName}': external data path '${location}' escapes the model folder${folder ? ` ${folder}` : ''}`,
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

/** The source of a reference, or an `ExternalDataError` saying how to give one. */
export function requireExternalDataSource(ref: ExternalDataRef, tensorName: string): ExternalDataSource {
  const source = externalDataSourceOf(ref);
  if (!source) {
    throw new ExternalDataError(
      `tensor '${tensorName}': its values are in external data '${ref.location}', and there is nothing to read it from ` +
        `(give decodeModel an externalData source: bytesSource({ '${ref.location}': bytes }) or blobSource in a browser, ` +
        `loadModel or fileSource from titanize's Node layer in Node)`,
    );
  }
  return source;
}

function failure(e: unknown): string {
  return (e as { code?: string }).code ?? (e instanceof Error ? e.message : String(e));
}

function checkRead(ref: ExternalDataRef, source: ExternalDataSource, bytes: Uint8Array, tensorName: string): Uint8Array {
  if (ref.length !== undefined && bytes.byteLength < ref.length) {
    let size: number | undefined;
    try {
      size = source.size?.(ref.location);
    } catch {
      size = undefined;
    }
    throw new ExternalDataError(
      `tensor '${tensorName}': external data '${ref.location}' is too short (needs bytes ${ref.offset}..${ref.offset + ref.length}, ` +
        `${size !== undefined ? `file has ${size}` : `got ${bytes.byteLength} from offset ${ref.offset}`})`,
    );
  }
  return ref.length !== undefined && bytes.byteLength > ref.length ? bytes.subarray(0, ref.length) : bytes;
}

/** Reads the bytes of one external tensor from its source; nothing is cached. */
export function readExternal(ref: ExternalDataRef, tensorName: string): Uint8Array {
  const source = requireExternalDataSource(ref, tensorName);
  let bytes: Uint8Array;
  try {
    bytes = source.read(ref.location, ref.offset, ref.length);
  } catch (e) {
    if (e instanceof ExternalDataError) throw e;
    throw new ExternalDataError(`tensor '${tensorName}': cannot open external data file '${ref.location}' (${failure(e)})`, { cause: e });
  }
  return checkRead(ref, source, bytes, tensorName);
}

/** `readExternal` through the source's `readAsync` when it has one (a `Blob` on the main thread). */
export async function readExternalAsync(ref: ExternalDataRef, tensorName: string): Promise<Uint8Array> {
  const source = requireExternalDataSource(ref, tensorName);
  if (!source.readAsync) return readExternal(ref, tensorName);
  let bytes: Uint8Array;
  try {
    bytes = await source.readAsync(ref.location, ref.offset, ref.length);
  } catch (e) {
    if (e instanceof ExternalDataError) throw e;
    throw new ExternalDataError(`tensor '${tensorName}': cannot open external data file '${ref.location}' (${failure(e)})`, { cause: e });
  }
  return checkRead(ref, source, bytes, tensorName);
}

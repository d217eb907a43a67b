/**
 * External data sources that need no file system: bytes in memory and `Blob`s / `File`s
 * (what a browser has after `<input type="file">`, a drop or a `fetch`). Both keep
 * weights lazy: a tensor's bytes are sliced out only when its values are asked for.
 */
import { ExternalDataError } from './errors.js';
import { type ExternalDataSource, requireExternalDataSource } from './external_data.js';
import type { Model } from './model.js';
import { allTensors } from './traversal.js';

type Files<T> = Record<string, T> | Map<string, T>;

/** A location as a key: '/' separators, no '.' or empty parts ('./w.bin', 'a\\w.bin' → 'w.bin', 'a/w.bin'). */
function key(location: string): string {
  const out: string[] = [];
  for (const part of location.split(/[\\/]/)) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return out.join('/');
}

function index<T>(files: Files<T> | (readonly [string, T])[]): Map<string, T> {
  const entries: Iterable<readonly [string, T]> = files instanceof Map ? files : Array.isArray(files) ? files : Object.entries(files);
  const out = new Map<string, T>();
  for (const [name, value] of entries) out.set(key(name), value);
  return out;
}

function missing(location: string, have: Map<string, unknown>): Error {
  const names = [...have.keys()];
  return new Error(`no file '${location}' among the ${names.length} given${names.length ? ` (${names.slice(0, 5).join(', ')}${names.length > 5 ? ', ...' : ''})` : ''}`);
}

function range(offset: number, length: number | undefined, size: number): [number, number] {
  if (offset > size) throw new RangeError(`offset ${offset} is beyond the end of the file (${size} bytes)`);
  return [offset, length === undefined ? size : Math.min(size, offset + length)];
}

/**
 * Data files held in memory, by location: `bytesSource({ 'model.onnx.data': bytes })`.
 * Reads are views into the given bytes (nothing is copied).
 */
export function bytesSource(files: Files<Uint8Array | ArrayBuffer>): ExternalDataSource {
  const byName = index(files);
  const bytesOf = (location: string): Uint8Array | undefined => {
    const b = byName.get(key(location));
    return b === undefined ? undefined : b instanceof Uint8Array ? b : new Uint8Array(b);
  };
  return {
    read(location, offset, length) {
      const b = bytesOf(location);
      if (!b) throw missing(location, byName);
      const [begin, end] = range(offset, length, b.byteLength);
      return b.subarray(begin, end);
    },
    size: (location) => bytesOf(location)?.byteLength,
    readAsync(location, offset, length) {
      return Promise.resolve(this.read(location, offset, length));
    },
  };
}

/** A `Blob` source; `prefetch` makes synchronous reads possible where `Blob`s can only be read asynchronously. */
export interface BlobSource extends ExternalDataSource {
  readAsync(location: string, offset: number, length: number | undefined): Promise<Uint8Array>;
  /**
   * Reads and keeps the bytes of the model's external tensors of at most `maxBytes` each
   * (default 1 MiB: the shapes, scales and small constants passes may look at; big
   * weights stay lazy), so that synchronous reads of them work on a browser's main thread.
   */
  prefetch(model: Model, options?: { maxBytes?: number }): Promise<void>;
}

interface SyncBlobReader {
  readAsArrayBuffer(blob: Blob): ArrayBuffer;
}

/**
 * Data files as `Blob`s or `File`s, by location: `blobSource({ 'model.onnx.data': file })`,
 * or `blobSource(input.files)` (keyed by each file's name). Only the slices tensors ask for
 * are read. Synchronous reads (what `Tensor.rawBytes()` does) use `FileReaderSync`, which
 * exists in Web Workers; elsewhere they are served from what `prefetch` read, and any
 * other read throws an error that says so.
 */
export function blobSource(files: Record<string, Blob> | Map<string, Blob> | Iterable<File> | ArrayLike<File>): BlobSource {
  let byName: Map<string, Blob>;
  if (files instanceof Map) byName = index(files);
  else if (Symbol.iterator in files || typeof (files as ArrayLike<File>).length === 'number') {
    byName = index(Array.from(files as ArrayLike<File>, (f) => [f.name, f] as const));
  } else byName = index(files as Record<string, Blob>);
  const cache = new Map<string, Uint8Array>();
  const cacheKey = (location: string, offset: number, length: number | undefined): string => `${key(location)}\0${offset}\0${length ?? ''}`;
  const blobOf = (location: string): Blob => {
    const b = byName.get(key(location));
    if (!b) throw missing(location, byName);
    return b;
  };
  const source: BlobSource = {
    read(location, offset, length) {
      const hit = cache.get(cacheKey(location, offset, length));
      if (hit) return hit;
      const blob = blobOf(location);
      const [begin, end] = range(offset, length, blob.size);
      const Reader = (globalThis as { FileReaderSync?: new () => SyncBlobReader }).FileReaderSync;
      if (!Reader) {
        throw new Error(
          'a Blob can be read synchronously only in a Web Worker (FileReaderSync); run the passes in a Worker, ' +
            'await source.prefetch(model) first, or give the bytes with bytesSource',
        );
      }
      return new Uint8Array(new Reader().readAsArrayBuffer(blob.slice(begin, end)));
    },
    size(location) {
      return byName.get(key(location))?.size;
    },
    async readAsync(location, offset, length) {
      const hit = cache.get(cacheKey(location, offset, length));
      if (hit) return hit;
      const blob = blobOf(location);
      const [begin, end] = range(offset, length, blob.size);
      return new Uint8Array(await blob.slice(begin, end).arrayBuffer());
    },
    async prefetch(model, options = {}) {
      const maxBytes = options.maxBytes ?? 1 << 20;
      for (const t of allTensors(model)) {
        if (t.storage.kind !== 'external' || t.byteLength > maxBytes) continue;
        const ref = t.storage.ref;
        if (requireExternalDataSource(ref, t.name) !== source) continue;
        const k = cacheKey(ref.location, ref.offset, ref.length);
        if (!cache.has(k)) cache.set(k, await source.readAsync(ref.location, ref.offset, ref.length));
      }
    },
  };
  return source;
}

/**
 * Checks the size of each external data file once (the Node file source only `stat`s
 * it); reports missing files and short files. Sources without `size` are not checked.
 */
export function checkExternalFiles(model: Model): void {
  const sizes = new Map<ExternalDataSource, Map<string, number>>();
  for (const t of allTensors(model)) {
    if (t.storage.kind !== 'external') continue;
    const ref = t.storage.ref;
    const source = requireExternalDataSource(ref, t.name);
    if (!source.size) continue;
    let known = sizes.get(source);
    if (!known) sizes.set(source, (known = new Map()));
    let size = known.get(ref.location);
    if (size === undefined) {
      size = source.size(ref.location);
      if (size === undefined) {
        const where = source.baseDir ?? ref.baseDir;
        throw new ExternalDataError(
          `tensor '${t.name}': external data file '${ref.location}' is missing (${where !== undefined ? `looked in ${where}` : 'not among the files given'})`,
        );
      }
      known.set(ref.location, size);
    }
    const need = ref.offset + (ref.length ?? t.byteLength);
    if (need > size) {
      throw new ExternalDataError(
        `tensor '${t.name}': external data file '${ref.location}' has ${size} bytes, but the tensor needs bytes up to ${need}`,
      );
    }
  }
}

/**
 * Execution-provider choice. onnxruntime-node throws when a requested provider cannot be
 * loaded (it does not fall back, even for ['cuda', 'cpu']), and its messages name shared
 * libraries rather than what the user should do. This module turns that into a clear
 * error, or into an explicit fallback to the CPU when the user asked for one.
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { UserInputError } from '../ir/errors.js';

export type ExecutionProviderName = 'cpu' | 'cuda' | 'webgpu';
export const EXECUTION_PROVIDERS: readonly ExecutionProviderName[] = ['cpu', 'cuda', 'webgpu'];

export interface SessionOptions {
  ep?: ExecutionProviderName;
  /** Use the CPU when the requested provider is unavailable (reported through `onFallback`). */
  fallback?: boolean;
  onFallback?: (message: string) => void;
  /**
   * Let onnxruntime print its warnings (and errors) to stderr. By default it prints only
   * fatal messages: its errors come back as exceptions, which titanize explains.
   */
  verbose?: boolean;
  /**
   * Outputs to leave in device memory when the session runs on a GPU provider (webgpu):
   * a decoder's carried state and KV cache, fed back as the next call's inputs without a
   * round trip through the host. Ignored on the CPU (also after a fallback).
   */
  keepOnDevice?: readonly string[];
  /** Extra onnxruntime session options (graph optimization level, threads, ...). */
  ort?: ort.InferenceSession.SessionOptions;
}

/** The session options that keep `outputs` in GPU buffers on `ep` (none on the CPU). */
export function deviceOutputOptions(ep: ExecutionProviderName, outputs: readonly string[] | undefined): ort.InferenceSession.SessionOptions {
  if (ep !== 'webgpu' || !outputs?.length) return {};
  return { preferredOutputLocation: Object.fromEntries(outputs.map((n) => [n, 'gpu-buffer' as const])) };
}

/** onnxruntime's log severity for `verbose` (2: warnings and worse) and by default (4: fatal only). */
export function ortLogSeverity(verbose: boolean | undefined): 2 | 4 {
  return verbose ? 2 : 4;
}

export class ExecutionProviderError extends UserInputError {}

/** Folder holding onnxruntime-node's native libraries. */
function ortBinaryDir(): string | undefined {
  try {
    const req = createRequire(import.meta.url);
    const pkg = path.dirname(req.resolve('onnxruntime-node/package.json'));
    return path.join(pkg, 'bin', 'napi-v6', process.platform, process.arch);
  } catch {
    return undefined;
  }
}

/** Why `ep` cannot work here, found without creating a session; undefined if it may work. */
export function providerProblem(ep: ExecutionProviderName): string | undefined {
  if (ep === 'cpu') return undefined;
  if (ep === 'cuda') {
    const dir = ortBinaryDir();
    if (dir && !fs.existsSync(path.join(dir, 'libonnxruntime_providers_cuda.so')) && process.platform === 'linux') {
      return (
        'the CUDA execution provider is not installed (onnxruntime-node ships it as a separate download, ' +
        'skipped at install time); run `ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js` ' +
        'on a machine with CUDA 12 and access to NuGet, or use --ep cpu'
      );
    }
  }
  return undefined;
}

/** Rewrites onnxruntime's provider errors into what is missing. */
/** onnxruntime's ways of saying that memory ran out (CPU arena, CUDA, WebGPU buffers). */
const OUT_OF_MEMORY = /out of memory|\bOOM\b|bad_alloc|failed to allocate|allocation failed|cannot allocate|insufficient memory|exceeds the (maximum|max) (buffer|allocation) size|maxBufferSize|maxStorageBufferBindingSize/i;

/** True when `error` says that the model did not fit in the device's (or the host's) memory. */
export function isOutOfMemory(error: unknown): boolean {
  return OUT_OF_MEMORY.test(String((error as Error)?.message ?? error));
}

/** The sentence for a model (or a batch) too large for `ep`'s memory. */
export function explainOutOfMemory(ep: ExecutionProviderName, error: unknown): string {
  const msg = String((error as Error)?.message ?? error);
  const where = ep === 'cpu' ? 'memory' : `the ${ep} device's memory`;
  return `the model does not fit in ${where} (${firstLine(msg)}); try a smaller batch or a shorter sequence${ep === 'cpu' ? '' : ', or --ep cpu (--ep-fallback uses the CPU when the device cannot start the model)'}`;
}

export function explainProviderFailure(ep: ExecutionProviderName, error: unknown): string {
  const msg = String((error as Error)?.message ?? error);
  if (isOutOfMemory(error)) return explainOutOfMemory(ep, error);
  if (ep === 'webgpu' && /adapter|vulkan/i.test(msg)) {
    return (
      'no WebGPU adapter is available (onnxruntime-node\'s WebGPU provider needs Vulkan: libvulkan.so.1 and a GPU driver; ' +
      'without a GPU, Mesa\'s software driver works: apt-get install -t bookworm-backports mesa-vulkan-drivers); use --ep cpu'
    );
  }
  if (ep === 'cuda' && /shared library|libcu|cuda/i.test(msg)) {
    return `the CUDA execution provider could not be loaded (${firstLine(msg)}); check the CUDA 12 / cuDNN 9 libraries, or use --ep cpu`;
  }
  return `execution provider '${ep}' failed: ${firstLine(msg)}`;
}

function firstLine(s: string): string {
  return s.split('\n')[0]!.slice(0, 300);
}

/**
 * Creates an inference session on the requested provider, or fails with a message saying
 * what is missing; with `fallback`, uses the CPU instead and reports why.
 */
export async function createSession(model: string | Uint8Array, options: SessionOptions = {}): Promise<{ session: ort.InferenceSession; ep: ExecutionProviderName }> {
  const ep = options.ep ?? 'cpu';
  const base: ort.InferenceSession.SessionOptions = { logSeverityLevel: ortLogSeverity(options.verbose), ...options.ort };
  const problem = providerProblem(ep);
  let failure: string | undefined = problem;
  if (!failure) {
    try {
      const session = await create(model, { ...deviceOutputOptions(ep, options.keepOnDevice), ...base, executionProviders: [ep] });
      return { session, ep };
    } catch (e) {
      if (ep === 'cpu') throw isOutOfMemory(e) ? new ExecutionProviderError(explainOutOfMemory(ep, e)) : e;
      failure = explainProviderFailure(ep, e);
    }
  }
  if (!options.fallback) throw new ExecutionProviderError(`${failure} (or pass --ep-fallback to run on the CPU instead)`);
  options.onFallback?.(`${failure}; falling back to the CPU`);
  const session = await create(model, { ...base, executionProviders: ['cpu'] });
  return { session, ep: 'cpu' };
}

function create(model: string | Uint8Array, opts: ort.InferenceSession.SessionOptions): Promise<ort.InferenceSession> {
  return typeof model === 'string' ? ort.InferenceSession.create(model, opts) : ort.InferenceSession.create(model, opts);
}

/**
 * onnxruntime's WebGPU provider in tests: whether an adapter exists (Mesa's lavapipe in
 * CI), and where each node of a session ran, read from onnxruntime's profile.
 *
 * Without an adapter the WebGPU tests are skipped and say so, unless
 * TITANIZE_REQUIRE_WEBGPU=1 (set by .ci/run once it installed lavapipe): then a missing
 * adapter fails them.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { createSession } from '../../src/runtime/execution_provider.js';

if (!process.env.XDG_RUNTIME_DIR) process.env.XDG_RUNTIME_DIR = fs.mkdtempSync(path.join(os.tmpdir(), 'xdg-'));

/** True when a WebGPU session can be created on `probe` (any small model). */
export async function webgpuAvailable(probe: string): Promise<boolean> {
  const ok = await createSession(probe, { ep: 'webgpu' }).then(
    async (r) => {
      await r.session.release();
      return true;
    },
    () => false,
  );
  if (!ok && process.env.TITANIZE_REQUIRE_WEBGPU === '1') throw new Error('TITANIZE_REQUIRE_WEBGPU=1 but no WebGPU adapter: is lavapipe (mesa-vulkan-drivers from bookworm-backports) installed?');
  if (!ok) console.log('webgpu: no adapter (install mesa-vulkan-drivers from bookworm-backports); skipping the WebGPU tests');
  return ok;
}

/** One node execution in onnxruntime's profile. */
export interface Placement {
  node: string;
  op: string;
  provider: string;
  /** Element types of the node's inputs ('float', 'int64', ...), and of its outputs. */
  inputTypes: string[];
  outputTypes: string[];
}

/** Runs `model` once on `ep` with profiling, returning the outputs and where every node ran. */
export async function runProfiled(model: Uint8Array, feeds: Record<string, ort.Tensor>, ep: 'cpu' | 'webgpu'): Promise<{ outputs: Record<string, ort.Tensor>; placements: Placement[] }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-profile-'));
  const session = await ort.InferenceSession.create(model, { executionProviders: [ep], enableProfiling: true, profileFilePrefix: path.join(dir, 'p'), logSeverityLevel: 3 });
  try {
    const out = await session.run(feeds);
    // copy the outputs out of the session before it is released
    const outputs: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(out)) outputs[k] = new ort.Tensor(v.type as 'float32', v.data as Float32Array, v.dims);
    session.endProfiling();
    const file = fs.readdirSync(dir).find((f) => f.endsWith('.json'));
    const events = file ? (JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as ProfileEvent[]) : [];
    const placements = events
      .filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time') && e.args?.provider)
      .map((e) => ({
        node: e.name.slice(0, -'_kernel_time'.length),
        op: e.args!.op_name ?? '?',
        provider: e.args!.provider!,
        inputTypes: (e.args!.input_type_shape ?? []).flatMap((x) => Object.keys(x)),
        outputTypes: (e.args!.output_type_shape ?? []).flatMap((x) => Object.keys(x)),
      }));
    return { outputs, placements };
  } finally {
    await session.release();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

interface ProfileEvent {
  cat: string;
  name: string;
  args?: { op_name?: string; provider?: string; input_type_shape?: Record<string, number[]>[]; output_type_shape?: Record<string, number[]>[] };
}

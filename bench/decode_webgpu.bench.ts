/**
 * Decoding on onnxruntime's WebGPU provider against the CPU, same converted model, same
 * run: the per-token time of a greedy decode with the carried state kept in GPU buffers
 * (DecoderState on a session with keepOnDevice), and the CPU's. On Mesa's software Vulkan
 * (lavapipe, as in CI) this is a correctness-and-plumbing check, not a speed claim: the
 * "GPU" is the same CPU. Skipped (with a note) where no WebGPU adapter exists.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { encodeModel } from '../src/ir/index.js';
import { convert } from '../src/passes/convert/convert.js';
import { DecoderState, carriedOutputs } from '../src/runtime/decoder_state.js';
import { createSession } from '../src/runtime/execution_provider.js';
import { declaredTypes } from '../src/runtime/generate.js';
import { syntheticDecoder } from '../tools/synthetic-decoder.js';
import { ms, ratio, suite, timeAsync } from './harness.js';

suite(
  'decode.webgpu',
  async (ctx) => {
    process.env.XDG_RUNTIME_DIR ??= fs.mkdtempSync(path.join(os.tmpdir(), 'xdg-'));
    const cfg = ctx.quick
      ? { layers: 2, hidden: 256, heads: 4, kvHeads: 1, vocab: 1024, intermediate: 512 }
      : { layers: 4, hidden: 512, heads: 8, kvHeads: 2, vocab: 4096, intermediate: 1024 };
    const model = syntheticDecoder({ ...cfg, withPast: true, seed: 3 }).model;
    convert(model, { mu: 1, target: 'ort' });
    const bytes = encodeModel(model);
    const types = declaredTypes(model);
    const rows = [];
    const perToken: Record<string, number> = {};
    for (const ep of ['cpu', 'webgpu'] as const) {
      let session;
      try {
        session = (await createSession(bytes, { ep, keepOnDevice: carriedOutputs(types.io) })).session;
      } catch (e) {
        ctx.note(`${ep}: no session (${(e as Error).message.split('\n')[0]}); skipped`);
        continue;
      }
      const steps = ctx.quick ? 8 : 32;
      const t = await timeAsync(
        async () => {
          const st = new DecoderState(session, types, 1);
          await st.run([[1, 2, 3, 4]]);
          for (let i = 0; i < steps; i++) await st.run([[(i * 7 + 5) % cfg.vocab]]);
        },
        { runs: ctx.quick ? 2 : 3, warmup: 1 },
      );
      perToken[ep] = t.median / steps;
      rows.push({ provider: ep, 'per token (incl. prefill share)': ms(t.median / steps) });
      await session.release();
    }
    if (perToken.webgpu !== undefined && perToken.cpu !== undefined) rows.push({ provider: 'webgpu / cpu', 'per token (incl. prefill share)': ratio(perToken.webgpu, perToken.cpu) });
    ctx.table(`greedy decode, converted μ = 1 (hidden ${cfg.hidden}, ${cfg.layers} layers), state kept on the device`, rows);
  },
  { isolate: true },
);

/**
 * The bundled example (`npm run example`): convert the small Llama fixture for μ = 0, 0.5
 * and 1, run each in onnxruntime-node next to the original, and print the converted sites
 * and how far the logits move from the original's.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { convert, createSession, loadModel, saveModel } from '../src/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const source = path.join(root, 'test/fixtures/llama.onnx');

async function logits(file: string): Promise<Float32Array> {
  const { session } = await createSession(file);
  const B = 1;
  const ids = [1, 17, 42, 7, 99, 3, 250, 12];
  const T = ids.length;
  const out = await session.run({
    input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [B, T]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(T).fill(1n), [B, T]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map((_, i) => BigInt(i))), [B, T]),
  });
  await session.release();
  return out.logits!.data as Float32Array;
}

function argmaxRows(x: Float32Array, V: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < x.length / V; r++) {
    let best = 0;
    for (let i = 1; i < V; i++) if (x[r * V + i]! > x[r * V + best]!) best = i;
    out.push(best);
  }
  return out;
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-example-'));
  try {
    const base = await logits(source);
    const V = 256;
    console.log(`original: ${path.relative(process.cwd(), source)} (next-token argmax per position: ${argmaxRows(base, V).join(' ')})`);
    for (const mu of [0, 0.5, 1]) {
      const model = loadModel(source);
      const report = convert(model, { mu });
      const out = path.join(dir, `llama-titan-mu${mu}.onnx`);
      saveModel(model, out);
      const y = await logits(out);
      let maxDiff = 0;
      let scale = 0;
      for (let i = 0; i < y.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(y[i]! - base[i]!));
        scale = Math.max(scale, Math.abs(base[i]!));
      }
      const agree = argmaxRows(y, V).filter((t, i) => t === argmaxRows(base, V)[i]).length;
      console.log(`\nμ = ${mu}: converted ${report.sites.length} layers (${report.sites.map((s) => `layer ${s.layer}: ${s.form}, ${s.numHeads}q/${s.numKvHeads}kv heads × ${s.headDim}`).join('; ')})`);
      console.log(`  rule ${report.options.rule} (order ${report.options.order}), target ${report.options.target}, ops ${Object.keys(report.opsUsed).filter((k) => k.includes('::')).join(', ')}`);
      console.log(`  logits vs original: max |Δ| = ${maxDiff.toExponential(2)} (logit scale ${scale.toFixed(2)}), argmax agrees at ${agree}/${y.length / V} positions`);
    }
    console.log('\nμ = 0 reproduces the original; μ = 1 is the purely linear model that LoRA/gate training would then adapt.');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});

/**
 * The bundled example (`npm run example`): the whole TPTT method on the fidelity fixture,
 * a small byte-level Llama pretrained on Python sources (test/fixtures/fidelity):
 *
 *   1. convert it (μ = 0.5, DeltaProduct memory, LoRA rank 8) and check that μ = 0 would
 *      reproduce the original;
 *   2. evaluate the original and the converted model on held-out text;
 *   3. train the LoRA deltas in onnxruntime for a short run;
 *   4. evaluate again, merge the adapters, and evaluate the merged model.
 *
 * The held-out figure is next-token accuracy on the same windows for every model.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Trainer,
  convert,
  decodeModel,
  encodeModel,
  evaluateModel,
  evaluationBatches,
  loadModel,
  loadTokenizer,
  loadTokens,
  mergeLora,
  saveModel,
  trainingBatch,
} from '../src/index.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const fixture = path.join(root, 'test/fixtures/fidelity');
const STEPS = Number(process.env.TITANIZE_EXAMPLE_STEPS ?? 80);

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-example-'));
  try {
    const tokenizer = loadTokenizer(path.join(root, 'test/fixtures/tokenizer.json'));
    const train = loadTokens(path.join(fixture, 'train.txt'), tokenizer);
    const evalSet = evaluationBatches(loadTokens(path.join(fixture, 'eval.txt'), tokenizer), 8, 128, 32);
    const original = loadModel(path.join(fixture, 'lm.onnx'));
    const base = await evaluateModel(original, evalSet);
    const show = (what: string, r: { loss: number; accuracy: number }): void =>
      console.log(`${what.padEnd(34)} loss ${r.loss.toFixed(3)}  accuracy ${r.accuracy.toFixed(3)}  (${(r.accuracy / base.accuracy).toFixed(2)}× the original)`);
    console.log(`model: test/fixtures/fidelity/lm.onnx (Llama-style, 4 layers, 0.8M parameters, byte-level); held-out: ${evalSet.length * 8} windows of 129 bytes`);
    show('original', base);

    const same = loadModel(path.join(fixture, 'lm.onnx'));
    convert(same, { mu: 0 });
    show('converted, μ = 0 (must equal)', await evaluateModel(same, evalSet));

    const model = loadModel(path.join(fixture, 'lm.onnx'));
    const report = convert(model, { mu: 0.5, rule: 'delta_product', loraRank: 8, loraAlpha: 16 });
    console.log(`\nconverted ${report.sites.length} layers: rule ${report.options.rule} (order ${report.options.order}), μ 0.5, LoRA rank 8 (${report.parametersAdded} parameters added), target ${report.options.target}`);
    show('converted, μ = 0.5, before training', await evaluateModel(model, evalSet));

    const t0 = performance.now();
    const trainer = await Trainer.create(model, { seqLen: 128, steps: STEPS, lr: 2e-3, warmup: 10 });
    console.log(`training graph built in ${((performance.now() - t0) / 1000).toFixed(1)} s; training ${STEPS} steps of 8 × 128 tokens ...`);
    let tokens = 0;
    let msTotal = 0;
    for (let s = 0; s < STEPS; s++) {
      const r = await trainer.step(trainingBatch(train, 8, 128, 0, s));
      tokens += r.tokens;
      msTotal += r.ms;
      if ((s + 1) % 20 === 0) console.log(`  step ${s + 1}: loss ${r.loss.toFixed(3)}`);
    }
    await trainer.applyTo(model);
    await trainer.release();
    console.log(`  ${((tokens / msTotal) * 1000).toFixed(0)} tokens/s`);
    const trainedFile = path.join(dir, 'trained.onnx');
    saveModel(model, trainedFile);
    show(`trained (${STEPS} steps)`, await evaluateModel(loadModel(trainedFile), evalSet));

    const merged = decodeModel(encodeModel(model));
    console.log(`merged ${mergeLora(merged)} LoRA adapters into the weights`);
    show('merged', await evaluateModel(merged, evalSet));
    console.log('\nLonger runs recover more: see the fidelity table in README.md (npm run bench -- --only train).');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});

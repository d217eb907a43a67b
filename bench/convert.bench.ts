/**
 * `convert` on a generated 32-layer Llama-style decoder whose weights (> 2 GB) are external
 * data in a sparse file that nothing reads: conversion time as a ratio of the time to
 * load the same model, and peak memory as a fraction of the weight bytes (it should be
 * proportional to the graph, not to the weights).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModel, saveModel } from '../src/node/index.js';
import { convert } from '../src/passes/convert/convert.js';
import { syntheticDecoder } from '../tools/synthetic-decoder.js';
import { bytes, count, measureMemory, ms, ratio, suite, timed } from './harness.js';

suite(
  'convert',
  async (ctx) => {
    const layers = ctx.quick ? 4 : 32;
    const hidden = ctx.quick ? 256 : 1024;
    const dir = ctx.tmpDir();
    const free = fs.statfsSync(dir);
    if (free.bavail * free.bsize < 1 << 30) ctx.skip('less than 1 GB free for the (sparse) weight file');
    const { model, weightBytes } = syntheticDecoder({
      layers,
      hidden,
      heads: hidden / 64,
      kvHeads: hidden / 256,
      vocab: ctx.quick ? 1000 : 32000,
      intermediate: hidden * 4,
      withPast: true,
      weights: { externalDir: dir, dataFile: 'weights.bin' },
    });
    const file = path.join(dir, 'decoder.onnx');
    saveModel(model, file);
    const onDisk = fs.statSync(path.join(dir, 'weights.bin'));
    // blocks actually allocated: a sparse file shows that no weight byte was ever written or read
    const allocated = onDisk.blocks * 512;
    const load = timed(() => loadModel(file));
    const nodes = load.result.graph.size;
    const out = path.join(dir, 'titan.onnx');
    const mem = await measureMemory(() => {
      const m = loadModel(file);
      const t0 = performance.now();
      const report = convert(m, { target: 'ort' });
      const convertMs = performance.now() - t0;
      const t1 = performance.now();
      saveModel(m, out);
      return { report, convertMs, saveMs: performance.now() - t1 };
    });
    const { report, convertMs, saveMs } = mem.result;
    if (report.sites.length !== layers) throw new Error(`expected ${layers} converted sites, got ${report.sites.length}`);
    const after = fs.statSync(path.join(dir, 'weights.bin'));
    if (after.blocks * 512 !== allocated) throw new Error('the weight file changed during conversion');
    if (fs.existsSync(`${out}.data`)) throw new Error('saving next to the source copied the weights');
    ctx.table(`convert a ${layers}-layer decoder, hidden ${hidden}, ${bytes(weightBytes).text} of external weights`, [
      {
        case: `${count(nodes).text} nodes → ${count(report.nodesAfter).text}`,
        load: ms(load.ms),
        convert: ms(convertMs),
        save: ms(saveMs),
        'convert/load': ratio(convertMs, load.ms),
        'peak RSS increase': bytes(mem.peakRssIncrease),
        'peak RSS / weight bytes': ratio(mem.peakRssIncrease, weightBytes),
      },
    ]);
    ctx.note(`weight file: ${bytes(onDisk.size).text} logical, ${bytes(allocated).text} allocated (sparse: never written or read)`);
  },
  { isolate: true },
);

/**
 * Converted models are valid ONNX for the reference validator, not only for onnxruntime:
 * `onnx.checker.check_model(full_check=True)` on the portable and ort outputs of the
 * fixtures. It needs Python's onnx (Debian's python3-onnx): without it that part is
 * skipped, and says so; the structural check below always runs.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DataType, loadModel, saveModel } from '../../../src/ir/index.js';
import { ABSENT_INPUT } from '../../../src/ops/index.js';
import { convert } from '../../../src/passes/convert/convert.js';

const FIX = path.resolve(__dirname, '../../fixtures');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-checker-'));

function hasOnnx(): boolean {
  try {
    execFileSync('/usr/bin/python3', ['-c', 'import onnx'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const CHECK = `
import sys, onnx
m = onnx.load(sys.argv[1])
onnx.checker.check_model(m, full_check=True)
print("ok")
`;

describe('converted models pass the ONNX checker', () => {
  it('every LiZA call passes all six declared inputs, absent ones as the typed placeholder', () => {
    const m = loadModel(path.join(FIX, 'foreign/mha_encoder.onnx'));
    convert(m, { target: 'portable' });
    const calls = m.graph.nodes().filter((n) => n.opType === 'LiZA');
    expect(calls.length).toBe(2);
    for (const c of calls) {
      expect(c.inputs).toHaveLength(6);
      expect(c.inputs.slice(3).every((v) => v?.name === ABSENT_INPUT)).toBe(true);
    }
    const ph = m.graph.initializers.get(ABSENT_INPUT)!.initializer!;
    expect([ph.dataType, ph.dims]).toEqual([DataType.FLOAT, [0]]);
  });

  const available = hasOnnx();
  if (!available) console.log('onnx checker: /usr/bin/python3 has no onnx module (apt-get install python3-onnx); skipping the reference validator');
  for (const name of ['llama', 'llama_past', 'bert', 'gpt2_past', 'foreign/mha_encoder', 'foreign/swin', 'foreign/gptj']) {
    for (const target of ['portable', 'ort'] as const) {
      it.skipIf(!available)(`${name} --target ${target}: onnx.checker full_check`, () => {
        const m = loadModel(path.join(FIX, `${name}.onnx`));
        convert(m, { target, mu: 0.5, loraRank: 2 });
        const file = path.join(tmp, `${name.replace('/', '_')}_${target}.onnx`);
        saveModel(m, file);
        const out = execFileSync('/usr/bin/python3', ['-c', CHECK, file], { encoding: 'utf8' });
        expect(out.trim()).toBe('ok');
      });
    }
  }
});

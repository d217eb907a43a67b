import { onnx } from '/work/main/dist/src/ir/serde/generated/onnx_pb.js';
import onnxProto from 'onnx-proto';
import fs from 'node:fs';
const bytes = fs.readFileSync('/tmp/bprof/ladder200k.onnx');
for (let i = 0; i < 4; i++) {
  gc(); let t0 = performance.now(); const a = onnx.ModelProto.decode(bytes); const t1 = performance.now() - t0;
  gc(); t0 = performance.now(); const b = onnxProto.onnx.ModelProto.decode(bytes); const t2 = performance.now() - t0;
  console.log('ours-proto', t1.toFixed(0), 'onnx-proto', t2.toFixed(0));
}

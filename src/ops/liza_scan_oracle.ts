/**
 * The per-token ONNX Scan form of ai.tptt.LiZA: a TEST AND BENCHMARK ORACLE ONLY. It
 * shares the feature maps, gates and DeltaProduct expansion with the other forms
 * (liza_graph.ts) and runs the recurrence one expanded row at a time in a Scan body:
 *   S <- diag(exp(g)) S           (gated rules; g = 0 on replay rows)
 *   S <- S + k v^T                (linear)
 *   S <- S + beta k (v - S^T k)^T (delta family)
 *   o = S^T q                     (q = 0 on rows that are not read)
 * Never use it in a model meant for training (Scan cannot be differentiated by the
 * training-graph generator) or for speed.
 */
import type { Builder } from '../ir/builder.js';
import { Builder as IRBuilder } from '../ir/builder.js';
import { DataType } from '../ir/dtype.js';
import { Graph } from '../ir/graph.js';
import { tensorType } from '../ir/types.js';
import { Value } from '../ir/value.js';
import { Emitter } from './emit.js';
import {
  type CausalResult,
  type LizaGraphInputs,
  type LizaGraphOutputs,
  emitInitialState,
  emitLiza,
  emitPrepare,
  emitReadRows,
} from './liza_graph.js';
import { presenceOf } from './liza_function.js';
import { type LizaOpAttributes, type LizaOpConfig, resolveLizaAttributes, validateLizaInputs } from './schema.js';

let bodyCounter = 0;

function scanCore(e: Emitter, cfg: LizaOpConfig, inputs: LizaGraphInputs): CausalResult {
  const p = emitPrepare(e, cfg, inputs);
  const S0 = emitInitialState(e, cfg, inputs);
  const delta = cfg.rule !== 'linear';

  // body: (S, k, v, [beta], [g], q) -> (S', o)
  const prefix = `liza_scan${bodyCounter++}_`;
  const body = new Graph(`${prefix}body`);
  const f32 = (): ReturnType<typeof tensorType> => tensorType(DataType.FLOAT);
  const S = body.addInput(new Value(`${prefix}S`, f32()));
  const k = body.addInput(new Value(`${prefix}k`, f32())); // [B, Hkv, d]
  const v = body.addInput(new Value(`${prefix}v`, f32()));
  const beta = delta ? body.addInput(new Value(`${prefix}beta`, f32())) : null; // [B, Hkv, 1]
  const g = cfg.gated ? body.addInput(new Value(`${prefix}g`, f32())) : null; // [B, Hkv, d]
  const q = body.addInput(new Value(`${prefix}q`, f32())); // [B, Hkv, G, d]
  const be = new Emitter(new IRBuilder(body, { prefix }));
  let St = S;
  if (g) St = be.mul(St, be.unsqueeze(be.exp(g), [-1]));
  const kcol = be.unsqueeze(k, [-1]); // [B, Hkv, d, 1]
  const vrow = be.unsqueeze(v, [-2]); // [B, Hkv, 1, d]
  if (!delta) {
    St = be.add(St, be.mul(kcol, vrow));
  } else {
    const predicted = be.matmul(be.unsqueeze(k, [-2]), St); // k^T S: [B, Hkv, 1, d]
    St = be.add(St, be.mul(kcol, be.mul(be.unsqueeze(beta!, [-1]), be.sub(vrow, predicted))));
  }
  const o = be.matmul(q, St); // [B, Hkv, G, d]
  const Sout = be.op('Identity', [St]);
  body.setOutputs([Sout, o]);

  const scanInputs = [p.K, p.V, ...(delta ? [p.beta!] : []), ...(cfg.gated ? [p.glog!] : []), p.Q];
  const [state, ostack] = e.opN(
    'Scan',
    [S0, ...scanInputs],
    {
      num_scan_inputs: scanInputs.length,
      scan_input_axes: scanInputs.map(() => 1),
      scan_output_axes: [1],
      body,
    },
    2,
  ) as [Value, Value];
  const packed = e.reshape(ostack, [0, 0, -1]); // [B, R, Hkv, G, d] -> [B, R, Hq*d]
  return { o: emitReadRows(e, cfg, packed, p.reps), state, window: p.presentWindow };
}

/** Emits the Scan oracle of LiZA at the builder's insertion point (test / bench only). */
export function emitLizaScanOracle(b: Builder, attrs: LizaOpAttributes, inputs: LizaGraphInputs): LizaGraphOutputs {
  const cfg = resolveLizaAttributes(attrs);
  validateLizaInputs(cfg, presenceOf(inputs));
  return emitLiza(new Emitter(b), cfg, inputs, scanCore);
}

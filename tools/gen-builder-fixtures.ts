/**
 * Generates the builder fixtures: small ONNX models written with titanize's own IR
 * builder (not exported by PyTorch), for the operator forms that the TorchScript
 * exporter of torch 1.13 cannot produce:
 *
 *   test/fixtures/attention23.onnx   opset 23: RMSNormalization, RotaryEmbedding, Attention
 *   test/fixtures/gqa_contrib.onnx   opset 17 + com.microsoft: GroupQueryAttention with KV cache
 *   test/fixtures/functions.onnx     model-local functions (custom domain) and an If node
 *
 * Weights come from a seeded PRNG (mulberry32), so every run writes byte-identical files.
 * At the end it runs `tools/ref_builder_fixtures.py`, which recomputes every model's
 * forward pass in PyTorch from the math and writes `<name>.ref.json` beside it.
 *
 *   npm run build && node dist/tools/gen-builder-fixtures.js
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type Attribute,
  AttributeType,
  Builder,
  DataType,
  Graph,
  IRFunction,
  Model,
  Tensor,
  Value,
  attr,
  setMetadata,
  tensorType,
  verifyModel,
} from '../src/ir/index.js';
import { saveModel } from '../src/node/index.js';
import { seededRandom } from '../src/ir/random.js';

// ---- shared configuration (mirrored in tools/ref_builder_fixtures.py) --------------------

const NUM_LAYERS = 2;
const HIDDEN = 64;
const NUM_HEADS = 4;
const NUM_KV_HEADS = 2;
const HEAD_DIM = 16;
const INTERMEDIATE = 128;
const VOCAB = 256;
const MAX_POSITIONS = 64; // rows of the cos/sin caches
const ROPE_THETA = 10000;
const RMS_EPS = 1e-6;
const FIXTURE_SIZE_LIMIT = 1 << 20;

/** The repository root: the nearest folder above this script holding package.json. */
function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the repository root (package.json)');
    dir = up;
  }
  return dir;
}

// ---- deterministic weights -----------------------------------------------------------------

class Weights {
  private readonly rand: () => number;
  constructor(seed: number) {
    this.rand = seededRandom(seed);
  }

  /** U(-0.5, 0.5) * scale. */
  uniform(n: number, scale: number): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = (this.rand() - 0.5) * scale;
    return out;
  }

  /** A MatMul weight [in, out] with std 1/sqrt(in) (U(-0.5,0.5) has std 1/sqrt(12)). */
  linear(inFeatures: number, outFeatures: number): Float32Array {
    return this.uniform(inFeatures * outFeatures, Math.sqrt(12 / inFeatures));
  }

  /** Embedding rows with unit std. */
  embedding(rows: number, dim: number): Float32Array {
    return this.uniform(rows * dim, Math.sqrt(12));
  }

  /** Norm scales around 1 (1 ± 0.1). */
  normScale(n: number): Float32Array {
    const u = this.uniform(n, 0.2);
    for (let i = 0; i < n; i++) u[i] = 1 + u[i]!;
    return u;
  }
}

/** Llama rotary caches [MAX_POSITIONS, HEAD_DIM/2]: cos/sin(pos * theta^(-2j/d)), half-split layout. */
function rotaryCaches(): { cos: Float32Array; sin: Float32Array } {
  const half = HEAD_DIM / 2;
  const cos = new Float32Array(MAX_POSITIONS * half);
  const sin = new Float32Array(MAX_POSITIONS * half);
  for (let p = 0; p < MAX_POSITIONS; p++) {
    for (let j = 0; j < half; j++) {
      const invFreq = 1 / Math.pow(ROPE_THETA, (2 * j) / HEAD_DIM);
      cos[p * half + j] = Math.cos(p * invFreq);
      sin[p * half + j] = Math.sin(p * invFreq);
    }
  }
  return { cos, sin };
}

function concatColumns(inFeatures: number, parts: Array<{ data: Float32Array; cols: number }>): Float32Array {
  const total = parts.reduce((n, p) => n + p.cols, 0);
  const out = new Float32Array(inFeatures * total);
  for (let r = 0; r < inFeatures; r++) {
    let off = 0;
    for (const p of parts) {
      out.set(p.data.subarray(r * p.cols, (r + 1) * p.cols), r * total + off);
      off += p.cols;
    }
  }
  return out;
}

// ---- small graph helpers ----------------------------------------------------------------------

function graphInput(g: Graph, name: string, elemType: DataType, shape: Array<number | string>): Value {
  return g.addInput(new Value(name, tensorType(elemType, shape)));
}

/** Adds a node whose single output gets a fixed name (a graph output), returns that output. */
function namedOp(
  b: Builder,
  opType: string,
  inputs: Array<Value | null>,
  outName: string,
  attributes: Parameters<Builder['node']>[2] = {},
  domain = '',
): Value {
  return b.node(opType, inputs, attributes, { outputs: [outName], domain }).output;
}

function silu(b: Builder, x: Value): Value {
  return b.op('Mul', [x, b.op('Sigmoid', [x])]);
}

/** RMSNorm spelled out with opset-17 ops (Llama's HF code path): x * 1/sqrt(mean(x^2) + eps) * w. */
function rmsNormDecomposed(b: Builder, x: Value, w: Value): Value {
  const ms = b.op('ReduceMean', [b.op('Mul', [x, x])], { axes: [-1], keepdims: 1 });
  const inv = b.op('Reciprocal', [b.op('Sqrt', [b.op('Add', [ms, b.scalar(RMS_EPS, 'rms_eps')])])]);
  return b.op('Mul', [b.op('Mul', [x, inv]), w]);
}

interface DecoderWeights {
  w: Weights;
  b: Builder;
}

function swiGlu(ctx: DecoderWeights, x: Value, prefix: string): Value {
  const { w, b } = ctx;
  const gate = b.initializer(`${prefix}.mlp.gate_proj.weight`, w.linear(HIDDEN, INTERMEDIATE), [HIDDEN, INTERMEDIATE]);
  const up = b.initializer(`${prefix}.mlp.up_proj.weight`, w.linear(HIDDEN, INTERMEDIATE), [HIDDEN, INTERMEDIATE]);
  const down = b.initializer(`${prefix}.mlp.down_proj.weight`, w.linear(INTERMEDIATE, HIDDEN), [INTERMEDIATE, HIDDEN]);
  const act = b.op('Mul', [silu(b, b.op('MatMul', [x, gate])), b.op('MatMul', [x, up])]);
  return b.op('MatMul', [act, down]);
}

function saveFixture(model: Model, file: string): void {
  verifyModel(model);
  // titanize generate reads this to say why the fixture's text is noise
  setMetadata(model.metadataProps, 'titanize.random_weights', 'a titanize test fixture with untrained weights, from tools/gen-builder-fixtures.ts');
  saveModel(model, file, { externalData: 'inline' });
  const size = statSync(file).size;
  if (size >= FIXTURE_SIZE_LIMIT) throw new Error(`${file} is ${size} bytes; fixtures must stay under 1 MB`);
}

// ---- attention23.onnx ---------------------------------------------------------------------------

/**
 * Opset-23 Llama-style decoder: Gather → RMSNormalization → q/k/v MatMul → RotaryEmbedding
 * (3-D, num_heads) on q and k → Attention (3-D Q/K/V, q_num_heads 4 / kv_num_heads 2,
 * is_causal=1, boolean attn_mask [B,1,T,T]) → o_proj → residual → RMSNormalization →
 * SwiGLU → residual; final RMSNormalization → lm_head.
 *
 * attn_mask[b,0,i,j] = attention_mask[b,j] OR i == j; is_causal adds j <= i. Real queries
 * see exactly the real keys up to themselves (HF semantics); a left-padded query sees only
 * itself, so no row is ever fully masked (ORT fills causal slots with the lowest float
 * while the ONNX reference adds -inf: both agree only when every row keeps a visible key).
 */
function buildAttention23(): Model {
  const model = new Model({ irVersion: 11, opsetImports: { '': 23 } });
  model.producerName = 'titanize gen-builder-fixtures';
  const g = model.graph;
  g.name = 'attention23';
  const b = new Builder(g);
  const w = new Weights(0xa7723);
  const ctx = { w, b };

  const inputIds = graphInput(g, 'input_ids', DataType.INT64, ['batch_size', 'sequence_length']);
  const attentionMask = graphInput(g, 'attention_mask', DataType.INT64, ['batch_size', 'sequence_length']);
  const positionIds = graphInput(g, 'position_ids', DataType.INT64, ['batch_size', 'sequence_length']);

  const embed = b.initializer('model.embed_tokens.weight', w.embedding(VOCAB, HIDDEN), [VOCAB, HIDDEN]);
  const { cos, sin } = rotaryCaches();
  const cosCache = b.initializer('model.rotary_emb.cos_cache', cos, [MAX_POSITIONS, HEAD_DIM / 2]);
  const sinCache = b.initializer('model.rotary_emb.sin_cache', sin, [MAX_POSITIONS, HEAD_DIM / 2]);

  // attn_mask [B,1,T,T] bool = key is real OR key is the query itself (see above)
  const keyOk = b.op('Unsqueeze', [b.op('Cast', [attentionMask], { to: DataType.BOOL }), b.ints([1, 2], 'mask_axes')]);
  const seqLen = b.op('Squeeze', [b.op('Shape', [inputIds], { start: 1, end: 2 })]);
  const zero = b.constant(Tensor.scalar(0, DataType.INT64), undefined, 'zero');
  const one = b.constant(Tensor.scalar(1, DataType.INT64), undefined, 'one');
  const idx = b.op('Range', [zero, seqLen, one]);
  const diag = b.op('Equal', [b.op('Unsqueeze', [idx, b.ints([1], 'axis1')]), b.op('Unsqueeze', [idx, b.ints([0], 'axis0')])]);
  const attnMask = namedOp(b, 'Or', [keyOk, diag], 'attn_mask');

  let h = b.op('Gather', [embed, inputIds], { axis: 0 });
  for (let i = 0; i < NUM_LAYERS; i++) {
    const p = `model.layers.${i}`;
    const ln1 = b.initializer(`${p}.input_layernorm.weight`, w.normScale(HIDDEN), [HIDDEN]);
    const x = b.op('RMSNormalization', [h, ln1], { axis: -1, epsilon: attr.float(RMS_EPS) });
    const wq = b.initializer(`${p}.self_attn.q_proj.weight`, w.linear(HIDDEN, NUM_HEADS * HEAD_DIM), [HIDDEN, NUM_HEADS * HEAD_DIM]);
    const wk = b.initializer(`${p}.self_attn.k_proj.weight`, w.linear(HIDDEN, NUM_KV_HEADS * HEAD_DIM), [HIDDEN, NUM_KV_HEADS * HEAD_DIM]);
    const wv = b.initializer(`${p}.self_attn.v_proj.weight`, w.linear(HIDDEN, NUM_KV_HEADS * HEAD_DIM), [HIDDEN, NUM_KV_HEADS * HEAD_DIM]);
    const wo = b.initializer(`${p}.self_attn.o_proj.weight`, w.linear(NUM_HEADS * HEAD_DIM, HIDDEN), [NUM_HEADS * HEAD_DIM, HIDDEN]);
    const q = b.op('MatMul', [x, wq]);
    const k = b.op('MatMul', [x, wk]);
    const v = b.op('MatMul', [x, wv]);
    const qRot = b.op('RotaryEmbedding', [q, cosCache, sinCache, positionIds], { num_heads: NUM_HEADS, interleaved: 0 });
    const kRot = b.op('RotaryEmbedding', [k, cosCache, sinCache, positionIds], { num_heads: NUM_KV_HEADS, interleaved: 0 });
    const attn = b.op('Attention', [qRot, kRot, v, attnMask], {
      q_num_heads: NUM_HEADS,
      kv_num_heads: NUM_KV_HEADS,
      is_causal: 1,
    });
    h = b.op('Add', [h, b.op('MatMul', [attn, wo])]);
    const ln2 = b.initializer(`${p}.post_attention_layernorm.weight`, w.normScale(HIDDEN), [HIDDEN]);
    const x2 = b.op('RMSNormalization', [h, ln2], { axis: -1, epsilon: attr.float(RMS_EPS) });
    h = b.op('Add', [h, swiGlu(ctx, x2, p)]);
  }
  const normW = b.initializer('model.norm.weight', w.normScale(HIDDEN), [HIDDEN]);
  const xf = b.op('RMSNormalization', [h, normW], { axis: -1, epsilon: attr.float(RMS_EPS) });
  const lmHead = b.initializer('lm_head.weight', w.linear(HIDDEN, VOCAB), [HIDDEN, VOCAB]);
  const logits = namedOp(b, 'MatMul', [xf, lmHead], 'logits');
  logits.type = tensorType(DataType.FLOAT, ['batch_size', 'sequence_length', VOCAB]);
  g.addOutput(logits);
  return model;
}

// ---- gqa_contrib.onnx ---------------------------------------------------------------------------

/**
 * Opset 17 + com.microsoft: the same decoder with GroupQueryAttention (num_heads 4,
 * kv_num_heads 2, do_rotary with half-split cos/sin caches, scale 1/sqrt(16)) and a KV
 * cache in Optimum naming. Layer 0 feeds a packed QKV projection [B,T,(4+2+2)*16] as
 * `query` with key/value omitted; layer 1 uses separate q/k/v projections.
 * seqlens_k = ReduceSum(attention_mask) - 1 (int32), total_sequence_length =
 * attention_mask.shape[1] (int32 scalar), as onnxruntime-genai feeds them.
 */
function buildGqaContrib(): Model {
  const model = new Model({ irVersion: 10, opsetImports: { '': 17, 'com.microsoft': 1 } });
  model.producerName = 'titanize gen-builder-fixtures';
  const g = model.graph;
  g.name = 'gqa_contrib';
  const b = new Builder(g);
  const w = new Weights(0x6a4c);
  const ctx = { w, b };

  const inputIds = graphInput(g, 'input_ids', DataType.INT64, ['batch_size', 'sequence_length']);
  const attentionMask = graphInput(g, 'attention_mask', DataType.INT64, ['batch_size', 'total_sequence_length']);
  const past: Value[] = [];
  for (let i = 0; i < NUM_LAYERS; i++) {
    for (const kind of ['key', 'value']) {
      past.push(
        graphInput(g, `past_key_values.${i}.${kind}`, DataType.FLOAT, ['batch_size', NUM_KV_HEADS, 'past_sequence_length', HEAD_DIM]),
      );
    }
  }

  const embed = b.initializer('model.embed_tokens.weight', w.embedding(VOCAB, HIDDEN), [VOCAB, HIDDEN]);
  const { cos, sin } = rotaryCaches();
  const cosCache = b.initializer('model.rotary_emb.cos_cache', cos, [MAX_POSITIONS, HEAD_DIM / 2]);
  const sinCache = b.initializer('model.rotary_emb.sin_cache', sin, [MAX_POSITIONS, HEAD_DIM / 2]);

  const maskSum = b.op('ReduceSum', [attentionMask, b.ints([1], 'sum_axes')], { keepdims: 0 });
  const seqlensK = namedOp(b, 'Cast', [b.op('Sub', [maskSum, b.constant(Tensor.scalar(1, DataType.INT64), undefined, 'one')])], 'seqlens_k', {
    to: DataType.INT32,
  });
  const totalLen = b.op('Gather', [b.op('Shape', [attentionMask]), b.constant(Tensor.scalar(1, DataType.INT64), undefined, 'dim1')], {
    axis: 0,
  });
  const totalSeqLen = namedOp(b, 'Cast', [totalLen], 'total_sequence_length', { to: DataType.INT32 });

  const presents: Value[] = [];
  let h = b.op('Gather', [embed, inputIds], { axis: 0 });
  for (let i = 0; i < NUM_LAYERS; i++) {
    const p = `model.layers.${i}`;
    const ln1 = b.initializer(`${p}.input_layernorm.weight`, w.normScale(HIDDEN), [HIDDEN]);
    const x = rmsNormDecomposed(b, h, ln1);
    const wqData = w.linear(HIDDEN, NUM_HEADS * HEAD_DIM);
    const wkData = w.linear(HIDDEN, NUM_KV_HEADS * HEAD_DIM);
    const wvData = w.linear(HIDDEN, NUM_KV_HEADS * HEAD_DIM);
    let qkv: Array<Value | null>;
    if (i === 0) {
      const qkvCols = (NUM_HEADS + 2 * NUM_KV_HEADS) * HEAD_DIM;
      const packed = concatColumns(HIDDEN, [
        { data: wqData, cols: NUM_HEADS * HEAD_DIM },
        { data: wkData, cols: NUM_KV_HEADS * HEAD_DIM },
        { data: wvData, cols: NUM_KV_HEADS * HEAD_DIM },
      ]);
      const wqkv = b.initializer(`${p}.self_attn.qkv_proj.weight`, packed, [HIDDEN, qkvCols]);
      qkv = [b.op('MatMul', [x, wqkv]), null, null];
    } else {
      const wq = b.initializer(`${p}.self_attn.q_proj.weight`, wqData, [HIDDEN, NUM_HEADS * HEAD_DIM]);
      const wk = b.initializer(`${p}.self_attn.k_proj.weight`, wkData, [HIDDEN, NUM_KV_HEADS * HEAD_DIM]);
      const wv = b.initializer(`${p}.self_attn.v_proj.weight`, wvData, [HIDDEN, NUM_KV_HEADS * HEAD_DIM]);
      qkv = [b.op('MatMul', [x, wq]), b.op('MatMul', [x, wk]), b.op('MatMul', [x, wv])];
    }
    const wo = b.initializer(`${p}.self_attn.o_proj.weight`, w.linear(NUM_HEADS * HEAD_DIM, HIDDEN), [NUM_HEADS * HEAD_DIM, HIDDEN]);
    const gqa = b.node(
      'GroupQueryAttention',
      [...qkv, past[2 * i]!, past[2 * i + 1]!, seqlensK, totalSeqLen, cosCache, sinCache],
      {
        num_heads: NUM_HEADS,
        kv_num_heads: NUM_KV_HEADS,
        do_rotary: 1,
        rotary_interleaved: 0,
        scale: attr.float(1 / Math.sqrt(HEAD_DIM)),
      },
      { domain: 'com.microsoft', outputs: [`${p}/attn_out`, `present.${i}.key`, `present.${i}.value`] },
    );
    for (const out of gqa.outputs.slice(1)) {
      out.type = tensorType(DataType.FLOAT, ['batch_size', NUM_KV_HEADS, 'total_sequence_length', HEAD_DIM]);
      presents.push(out);
    }
    h = b.op('Add', [h, b.op('MatMul', [gqa.outputs[0]!, wo])]);
    const ln2 = b.initializer(`${p}.post_attention_layernorm.weight`, w.normScale(HIDDEN), [HIDDEN]);
    h = b.op('Add', [h, swiGlu(ctx, rmsNormDecomposed(b, h, ln2), p)]);
  }
  const normW = b.initializer('model.norm.weight', w.normScale(HIDDEN), [HIDDEN]);
  const lmHead = b.initializer('lm_head.weight', w.linear(HIDDEN, VOCAB), [HIDDEN, VOCAB]);
  const logits = namedOp(b, 'MatMul', [rmsNormDecomposed(b, h, normW), lmHead], 'logits');
  logits.type = tensorType(DataType.FLOAT, ['batch_size', 'sequence_length', VOCAB]);
  g.setOutputs([logits, ...presents]);
  return model;
}

// ---- functions.onnx -------------------------------------------------------------------------

const FN_DOMAIN = 'titanize.test';
const FN_IN = 32;
const FN_HIDDEN = 64;
const FN_INTERMEDIATE = 96;
const FN_OUT = 16;
const FN_EPS_DEFAULT = 1e-5;
const FN_EPS_EXPLICIT = 1e-3;

/** RMSNorm(x, w) with attribute epsilon (default via attribute_proto, read with ref_attr_name). */
function rmsNormFunction(): IRFunction {
  const fn = new IRFunction(FN_DOMAIN, 'RMSNorm');
  fn.docString = 'y = x / sqrt(mean(x^2, axis=-1) + epsilon) * w';
  fn.opsetImports.set('', 17);
  fn.attributeProtos = [{ name: 'epsilon', type: AttributeType.FLOAT, value: FN_EPS_DEFAULT }];
  const body = fn.body;
  const x = body.addInput(new Value('x'));
  const w = body.addInput(new Value('w'));
  const b = new Builder(body);
  const eps = b.node('Constant', [], {}, { name: 'epsilon' });
  const epsAttr: Attribute = { name: 'value_float', type: AttributeType.FLOAT, value: 0, refAttrName: 'epsilon' };
  eps.attributes.set(epsAttr.name, epsAttr);
  const ms = b.op('ReduceMean', [b.op('Mul', [x, x])], { axes: [-1], keepdims: 1 });
  const rms = b.op('Sqrt', [b.op('Add', [ms, eps.output])]);
  body.addOutput(b.op('Mul', [b.op('Div', [x, rms]), w]));
  return fn;
}

/** MLP(x, w1, w2) = SiLU(x @ w1) @ w2. */
function mlpFunction(): IRFunction {
  const fn = new IRFunction(FN_DOMAIN, 'MLP');
  fn.docString = 'y = silu(x @ w1) @ w2';
  fn.opsetImports.set('', 17);
  const body = fn.body;
  const x = body.addInput(new Value('x'));
  const w1 = body.addInput(new Value('w1'));
  const w2 = body.addInput(new Value('w2'));
  const b = new Builder(body);
  body.addOutput(b.op('MatMul', [silu(b, b.op('MatMul', [x, w1])), w2]));
  return fn;
}

/**
 * y_pre = RMSNorm(h + MLP(RMSNorm(h)), eps 1e-3) @ W_out with h = x @ W_in (the first
 * RMSNorm uses the default epsilon); then If(flag): then = RMSNorm(y_pre, out_norm)
 * (a function call inside a subgraph, reading an outer value and an outer initializer),
 * else = y_pre * else_scale (outer initializer).
 */
function buildFunctions(): Model {
  const model = new Model({ irVersion: 10, opsetImports: { '': 17, [FN_DOMAIN]: 1 } });
  model.producerName = 'titanize gen-builder-fixtures';
  model.addFunction(rmsNormFunction());
  model.addFunction(mlpFunction());
  const g = model.graph;
  g.name = 'functions';
  const b = new Builder(g);
  const w = new Weights(0xf00c);

  const x = graphInput(g, 'x', DataType.FLOAT, ['batch_size', 'sequence_length', FN_IN]);
  const flag = graphInput(g, 'flag', DataType.BOOL, []);
  const wIn = b.initializer('in_proj.weight', w.linear(FN_IN, FN_HIDDEN), [FN_IN, FN_HIDDEN]);
  const norm0 = b.initializer('norm0.weight', w.normScale(FN_HIDDEN), [FN_HIDDEN]);
  const w1 = b.initializer('mlp.fc1.weight', w.linear(FN_HIDDEN, FN_INTERMEDIATE), [FN_HIDDEN, FN_INTERMEDIATE]);
  const w2 = b.initializer('mlp.fc2.weight', w.linear(FN_INTERMEDIATE, FN_HIDDEN), [FN_INTERMEDIATE, FN_HIDDEN]);
  const norm1 = b.initializer('norm1.weight', w.normScale(FN_HIDDEN), [FN_HIDDEN]);
  const wOut = b.initializer('out_proj.weight', w.linear(FN_HIDDEN, FN_OUT), [FN_HIDDEN, FN_OUT]);
  const outNorm = b.initializer('out_norm.weight', w.normScale(FN_OUT), [FN_OUT]);
  const elseScale = b.initializer('else_scale', new Float32Array([0.5]), []);

  const h = b.op('MatMul', [x, wIn]);
  const n0 = b.op('RMSNorm', [h, norm0], {}, { domain: FN_DOMAIN });
  const h2 = b.op('Add', [h, b.op('MLP', [n0, w1, w2], {}, { domain: FN_DOMAIN })]);
  const n1 = b.op('RMSNorm', [h2, norm1], { epsilon: attr.float(FN_EPS_EXPLICIT) }, { domain: FN_DOMAIN });
  const yPre = b.op('MatMul', [n1, wOut]);

  const outType = tensorType(DataType.FLOAT, ['batch_size', 'sequence_length', FN_OUT]);
  const thenG = new Graph('then_branch');
  const elseG = new Graph('else_branch');
  // Create the If first: subgraph builders then draw names from the main graph's name set.
  const ifNode = b.node('If', [flag], { then_branch: thenG, else_branch: elseG }, { outputs: ['y'] });
  const tb = new Builder(thenG, { prefix: 'then/' });
  const yThen = tb.node('RMSNorm', [yPre, outNorm], {}, { domain: FN_DOMAIN, outputs: ['then/y'] }).output;
  yThen.type = outType;
  thenG.addOutput(yThen);
  const eb = new Builder(elseG, { prefix: 'else/' });
  const yElse = eb.node('Mul', [yPre, elseScale], {}, { outputs: ['else/y'] }).output;
  yElse.type = outType;
  elseG.addOutput(yElse);
  ifNode.output.type = outType;
  g.addOutput(ifNode.output);
  return model;
}

// ---- main -------------------------------------------------------------------------------------

function main(): void {
  const root = repoRoot();
  const outDir = path.join(root, 'test', 'fixtures');
  const written: string[] = [];
  for (const [name, build] of [
    ['attention23', buildAttention23],
    ['gqa_contrib', buildGqaContrib],
    ['functions', buildFunctions],
  ] as const) {
    const file = path.join(outDir, `${name}.onnx`);
    saveFixture(build(), file);
    written.push(file);
  }
  execFileSync('/usr/bin/python3', [path.join(root, 'tools', 'ref_builder_fixtures.py')], { cwd: root, stdio: 'inherit' });
  for (const file of written) {
    const bytes = readFileSync(file);
    const sha = createHash('sha256').update(bytes).digest('hex').slice(0, 16);
    console.log(`${path.relative(root, file)}  ${String(bytes.length).padStart(8)} bytes  sha256 ${sha}`);
  }
}

main();

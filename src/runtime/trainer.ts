/**
 * The training loop on onnxruntime: builds the training graph of a converted model (see
 * passes/train/training_graph.ts), probes the ranks autodiff needs with one small run,
 * opens one session, and runs one optimizer step per call. Parameters and AdamW moments
 * are session inputs and outputs carried from step to step; the learning-rate schedule
 * (linear warmup, then cosine decay to 0) and the bias corrections are fed per step.
 * `applyTo` writes the trained tensors back into a converted model (μ = sigmoid(θ)), which
 * then runs, merges and decodes as before.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { UserInputError } from '../ir/errors.js';
import { setMetadata } from '../ir/metadata.js';
import { Builder } from '../ir/builder.js';
import { DataType } from '../ir/dtype.js';
import { Model } from '../ir/model.js';
import { tensorType } from '../ir/types.js';
import { Value } from '../ir/value.js';
import { decodeModel } from '../ir/serde/decode.js';
import { encodeModel } from '../ir/serde/encode.js';
import { allTensors } from '../ir/traversal.js';
import { saveModel } from '../node/files.js';
import { Tensor } from '../ir/tensor.js';
import {
  APPLY_INPUT,
  BC1_INPUT,
  BC2_INPUT,
  LABELS_INPUT,
  LR_INPUT,
  TEACHER_INPUT,
  type TrainingGraph,
  type TrainingGraphOptions,
  type TrainingGraphSpec,
  WEIGHTS_INPUT,
  completeTraining,
  gradOutputName,
  logitToMu,
  prepareTraining,
  probeTargets,
  slotNames,
} from '../passes/train/index.js';
import type { TokenBatch } from './data.js';
import { type DeclaredTypes, declaredTypes } from './decoder_state.js';
import { decoderIO } from '../passes/analysis/io.js';
import { type ExecutionProviderName, createSession, ortLogSeverity } from './execution_provider.js';
import { logitsOf } from './evaluate.js';
import { float32, int64, sequenceFeeds } from './feeds.js';
import { explainRunFailure, irFacts, probeValues } from './probe.js';

export interface ScheduleOptions {
  /**
   * Peak learning rate. Default: 2e-3 for a model that keeps its softmax branch (μ < 1),
   * 5e-3 for a purely linear one (μ = 1), from the fidelity table (docs/train.md).
   */
  lr?: number;
  /** Linear warmup steps (default 20; fewer when the run is shorter). */
  warmup?: number;
  /** Total optimizer steps of the run (the cosine reaches 0 there). */
  steps: number;
  /** 'cosine' (default) or 'constant' after warmup. */
  schedule?: 'cosine' | 'constant';
}

export interface TrainerOptions extends TrainingGraphOptions, ScheduleOptions {
  /** Sequence length trained on. */
  seqLen: number;
  ep?: ExecutionProviderName;
  /** Let onnxruntime print its warnings (default: fatal messages only). */
  verbose?: boolean;
  /**
   * The original model: its logits for objective 'distill', its attention outputs for
   * 'transfer' on a model without a softmax branch (μ = 1). Run on every batch.
   */
  teacher?: Model;
  /** WebGPU: keep parameters and moments in GPU buffers between steps (default true). */
  deviceState?: boolean;
  /** onnxruntime session options for the training session. */
  ort?: ort.InferenceSession.SessionOptions;
}

export interface StepReport {
  step: number;
  loss: number;
  gradNorm: number;
  lr: number;
  tokens: number;
  ms: number;
}

export class TrainingError extends UserInputError {}

/** y = Identity(x) for float tensors of any shape: copies a device tensor to the host. */
function identityModel(): Uint8Array {
  const m = new Model({ opsetImports: { '': 17 } });
  const x = m.graph.addInput(new Value('x', tensorType(DataType.FLOAT)));
  const y = new Builder(m.graph).op('Identity', [x]);
  y.name = 'y';
  m.graph.addOutput(y);
  return encodeModel(m);
}

function disposeOnGpu(t: ort.Tensor): void {
  if (t.location === 'gpu-buffer') t.dispose();
}

/** The teacher's session, with the values the objective reads from it as outputs. */
interface TeacherRun {
  session: ort.InferenceSession;
  types: DeclaredTypes;
  /** Loss input → teacher value name. */
  values: Map<string, string>;
}

async function openTeacher(model: Model | undefined, lossInputs: readonly string[], values: Map<string, string>, options: TrainerOptions): Promise<TeacherRun | undefined> {
  if (!lossInputs.includes(TEACHER_INPUT) && values.size === 0) return undefined;
  if (!model) {
    throw new UserInputError(`objective ${options.objective ?? 'lm'} needs the original model as the teacher (${values.size ? 'this model has no softmax branch to take the attention targets from' : 'its logits are the target'}; --teacher ORIGINAL.onnx)`);
  }
  const copy = decodeModel(encodeModel(model), { baseDir: model.baseDir, externalData: model.externalData });
  const produced = new Map<string, Value>();
  for (const n of copy.graph) for (const o of n.outputs) if (o.name) produced.set(o.name, o);
  const outputs = new Set(copy.graph.outputs.map((o) => o.name));
  for (const name of values.values()) {
    const v = produced.get(name);
    if (!v) throw new UserInputError(`the teacher has no value '${name}' (a converted layer's attention output): give the original model that this one was converted from`);
    if (!outputs.has(name)) copy.graph.addOutput(v);
    outputs.add(name);
  }
  const session = await sessionFor(copy, options);
  return { session, types: declaredTypes(copy, decoderIO(model)), values };
}

/** Learning rate of optimizer step `step` (0-based). */
export const DEFAULT_LR = 2e-3;
export const DEFAULT_LR_LINEAR = 5e-3;

export function lrAt(o: ScheduleOptions, step: number): number {
  const peak = o.lr ?? DEFAULT_LR;
  const warm = Math.min(o.warmup ?? 20, Math.max(0, o.steps - 1));
  if (step < warm) return (peak * (step + 1)) / warm;
  if ((o.schedule ?? 'cosine') === 'constant') return peak;
  const span = Math.max(1, o.steps - warm);
  const p = Math.min(1, (step - warm) / span);
  return peak * 0.5 * (1 + Math.cos(Math.PI * p));
}

function zeros(dims: number[]): ort.Tensor {
  return new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)), dims);
}

/** A session over a model held in memory (external weights are written inline to a temporary file first). */
async function sessionFor(model: Model, { ep, verbose }: { ep?: ExecutionProviderName; verbose?: boolean }, extra: ort.InferenceSession.SessionOptions = {}): Promise<ort.InferenceSession> {
  const external = [...allTensors(model)].some((t) => t.isExternal);
  const opts = { logSeverityLevel: ortLogSeverity(verbose), ...extra };
  if (!external) return (await createSession(encodeModel(model), { ep, ort: opts })).session;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'titanize-train-'));
  try {
    const file = path.join(dir, 'train.onnx');
    saveModel(model, file, { externalData: 'inline' });
    return (await createSession(file, { ep, ort: opts })).session;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Each tensor carried from step to step: the graph input it is fed to, the output it comes back from. */
function carriedSlots(spec: TrainingGraphSpec): { input: string; output: string; dims: number[]; init?: Float32Array }[] {
  return spec.params.flatMap((p) => {
    const s = slotNames(p.input);
    return [
      { input: p.input, output: s.next, dims: p.dims, init: p.init },
      { input: s.m, output: s.mNext, dims: p.dims },
      { input: s.v, output: s.vNext, dims: p.dims },
      ...(spec.accumulate > 1 ? [{ input: s.acc, output: s.accNext, dims: p.dims }] : []),
    ];
  });
}

const scalar = (x: number): ort.Tensor => new ort.Tensor('float32', Float32Array.from([x]), []);

export interface TrainerState {
  step: number;
  tensors: Record<string, { dims: number[]; data: Float32Array }>;
}

export class Trainer {
  /** Optimizer steps done. */
  stepCount = 0;
  private readonly state = new Map<string, ort.Tensor>();

  private constructor(
    readonly session: ort.InferenceSession,
    readonly spec: TrainingGraphSpec,
    readonly types: DeclaredTypes,
    readonly options: TrainerOptions,
    private readonly teacher: TeacherRun | undefined,
  ) {
    for (const c of carriedSlots(spec)) this.state.set(c.input, c.init ? new ort.Tensor('float32', Float32Array.from(c.init), c.dims) : zeros(c.dims));
  }

  /** Builds the training graph of `model` (left unchanged) and opens its session. */
  static async create(model: Model, options: TrainerOptions): Promise<Trainer> {
    const built = await build(model, options);
    // on the WebGPU provider the updated parameters and moments stay in GPU buffers
    // (preferredOutputLocation) and the next step reads them there; the host sees them only
    // for checkpoints and the result, through a one-node Identity session (onnxruntime-node
    // 1.30 aborts on Tensor.getData of a gpu-buffer tensor)
    const carried = carriedSlots(built.graph.spec).map((c) => c.output);
    const onDevice = options.deviceState !== false && options.ep === 'webgpu' ? { preferredOutputLocation: Object.fromEntries(carried.map((n) => [n, 'gpu-buffer' as const])) } : {};
    const session = await sessionFor(built.graph.model, options, { ...onDevice, ...options.ort });
    return new Trainer(session, built.graph.spec, built.types, options, built.teacher);
  }

  /** The peak learning rate of this run (the option, or the default for this model). */
  get peakLr(): number {
    return this.options.lr ?? (this.spec.linearOnly ? DEFAULT_LR_LINEAR : DEFAULT_LR);
  }

  lrAt(step = this.stepCount): number {
    return lrAt({ ...this.options, lr: this.peakLr }, step);
  }

  /**
   * One optimizer step over `micro` (one batch, or `accumulate` micro-batches). A loss that
   * is not finite stops with an error and leaves the parameters as they were.
   */
  async step(micro: TokenBatch | TokenBatch[]): Promise<StepReport> {
    const batches = Array.isArray(micro) ? micro : [micro];
    const K = this.spec.accumulate;
    if (batches.length !== K) throw new UserInputError(`a step takes ${K} micro-batch${K > 1 ? 'es' : ''}, got ${batches.length}`);
    const t0 = performance.now();
    const lr = this.lrAt();
    const t = this.stepCount + 1;
    const b1 = this.options.optimizer?.beta1 ?? 0.9;
    const b2 = this.options.optimizer?.beta2 ?? 0.999;
    const slots = carriedSlots(this.spec);
    let lossSum = 0;
    let gradNorm = 0;
    let tokens = 0;
    let next = new Map(this.state);
    for (let k = 0; k < K; k++) {
      const batch = batches[k]!;
      const out = await this.run(batch, next, { lr, c1: 1 / (1 - b1 ** t), c2: 1 / (1 - b2 ** t), apply: k === K - 1 });
      const loss = Number((out[this.spec.lossOutput] as ort.Tensor).data[0]);
      if (!Number.isFinite(loss)) throw new TrainingError(`the loss is ${loss} at step ${t}; the parameters are left as they were after step ${this.stepCount} (lower --lr, or check the data)`);
      lossSum += loss;
      gradNorm = Number((out[this.spec.gradNormOutput] as ort.Tensor).data[0]);
      tokens += batch.weights.reduce((n, r) => n + r.reduce((a, x) => a + x, 0), 0);
      // the previous micro-step's outputs are not needed any more (the step's inputs are
      // released at the end, once the step has succeeded)
      if (k > 0) for (const t of next.values()) disposeOnGpu(t);
      next = new Map(slots.map((c) => [c.input, out[c.output] as ort.Tensor]));
    }
    for (const [k, v] of next) {
      disposeOnGpu(this.state.get(k)!);
      this.state.set(k, v);
    }
    this.stepCount = t;
    return { step: t, loss: lossSum / K, gradNorm, lr, tokens, ms: performance.now() - t0 };
  }

  /**
   * The gradients of the loss on `batch` at the current parameters, by parameter input
   * name (needs `outputGradients`; changes nothing).
   */
  async gradients(batch: TokenBatch): Promise<Map<string, Float32Array>> {
    if (!this.options.outputGradients) throw new UserInputError('gradients() needs a trainer created with outputGradients: true');
    // lr 0 and no accumulation step: the carried tensors come back unchanged and are dropped
    const out = await this.run(batch, this.state, { lr: 0, c1: 1, c2: 1, apply: false });
    return new Map(this.spec.params.map((p) => [p.input, Float32Array.from((out[gradOutputName(p.input)] as ort.Tensor).data as Float32Array)]));
  }

  /** One run of the training graph on `batch` with the carried tensors `carried`. */
  private async run(batch: TokenBatch, carried: ReadonlyMap<string, ort.Tensor>, o: { lr: number; c1: number; c2: number; apply: boolean }): Promise<ort.InferenceSession.OnnxValueMapType> {
    const feeds: Record<string, ort.Tensor> = {
      ...sequenceFeeds(this.spec.modelInputs, [], this.types, batch.ids),
      ...(await lossFeeds(this.spec.lossInputs, batch, this.teacher)),
      [LR_INPUT]: scalar(o.lr),
      [BC1_INPUT]: scalar(o.c1),
      [BC2_INPUT]: scalar(o.c2),
    };
    if (this.spec.accumulate > 1) feeds[APPLY_INPUT] = new ort.Tensor('bool', Uint8Array.from([o.apply ? 1 : 0]), []);
    for (const [name, v] of carried) feeds[name] = v;
    try {
      return await this.session.run(feeds);
    } catch (e) {
      throw explainRunFailure(e, feeds);
    }
  }

  private readback: ort.InferenceSession | undefined;

  /** Values of a carried tensor on the host (copied out by an Identity run when it lives on the GPU). */
  private async host(name: string): Promise<Float32Array> {
    const t = this.state.get(name)!;
    if (t.location !== 'gpu-buffer') return Float32Array.from(t.data as Float32Array);
    this.readback ??= await ort.InferenceSession.create(identityModel(), { executionProviders: [this.options.ep ?? 'cpu'], logSeverityLevel: 4 });
    const out = await this.readback.run({ x: t });
    return Float32Array.from(out.y!.data as Float32Array);
  }

  /** Where the carried parameters and moments live: 'cpu', or 'gpu-buffer' on a GPU provider after the first step. */
  stateLocations(): Set<string> {
    return new Set([...this.state.values()].map((t) => t.location));
  }

  /** Current values of the trainable tensors, in the training parametrisation (θ for μ). */
  async parameters(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const p of this.spec.params) out.set(p.input, await this.host(p.input));
    return out;
  }

  /** Writes the trained tensors into `model` (a converted model with the same adapters and gates). */
  async applyTo(model: Model): Promise<void> {
    const g = model.graph;
    const params = await this.parameters();
    for (const p of this.spec.params) {
      const v = g.initializers.get(p.source);
      if (!v?.initializer) throw new UserInputError(`the model has no initializer '${p.source}' to write the trained values to`);
      const data = params.get(p.input)!;
      const values = p.group === 'mu' ? Float32Array.from(data, logitToMu) : Float32Array.from(data);
      v.initializer = Tensor.fromArray(values, v.initializer.dims.slice(), undefined, p.source);
    }
    const mus = this.spec.params.filter((p) => p.group === 'mu').map((p) => [p.source, logitToMu(params.get(p.input)![0]!)]);
    setMetadata(
      model.metadataProps,
      'titanize.trained',
      JSON.stringify({ steps: this.stepCount, objective: this.spec.objective, train: [...new Set(this.spec.params.map((p) => p.group))], ...(mus.length ? { mu: Object.fromEntries(mus) } : {}) }),
    );
  }

  /** Everything a resumed run needs: the step count, parameters and moments. */
  async snapshot(): Promise<TrainerState> {
    const tensors: TrainerState['tensors'] = {};
    for (const [k, v] of this.state) tensors[k] = { dims: v.dims.slice(), data: await this.host(k) };
    return { step: this.stepCount, tensors };
  }

  restore(s: TrainerState): void {
    for (const k of this.state.keys()) {
      const t = s.tensors[k];
      if (!t) throw new UserInputError(`the checkpoint has no tensor '${k}'; was it made for this model and these options?`);
      const have = this.state.get(k)!.dims;
      if (t.dims.length !== have.length || t.dims.some((d, i) => d !== have[i])) throw new UserInputError(`checkpoint tensor '${k}' has dims [${t.dims.join(', ')}], the training graph wants [${have.join(', ')}]`);
      disposeOnGpu(this.state.get(k)!);
      this.state.set(k, new ort.Tensor('float32', Float32Array.from(t.data), t.dims));
    }
    this.stepCount = s.step;
  }

  async release(): Promise<void> {
    for (const t of this.state.values()) disposeOnGpu(t);
    await this.readback?.release();
    await this.session.release();
    await this.teacher?.session.release();
  }
}

/**
 * The training graph of a converted model (left unchanged), ready to save or to run:
 * prepareTraining, two probe runs for the ranks autodiff needs, completeTraining.
 */
export async function buildTrainingGraph(model: Model, options: TrainerOptions): Promise<TrainingGraph> {
  const built = await build(model, options);
  await built.teacher?.session.release();
  return built.graph;
}

async function build(model: Model, options: TrainerOptions): Promise<{ graph: TrainingGraph; types: DeclaredTypes; teacher: TeacherRun | undefined }> {
  if (!(options.seqLen >= 2)) throw new UserInputError(`the sequence length must be at least 2, got ${options.seqLen}`);
  const copy = decodeModel(encodeModel(model), { baseDir: model.baseDir, externalData: model.externalData });
  const prep = prepareTraining(copy, { ...options, maxSeqLen: options.maxSeqLen ?? options.seqLen });
  // the interface of the user's model (convert recorded it), with the training graph's input types
  const types: DeclaredTypes = declaredTypes(prep.model, decoderIO(model));
  const teacher = await openTeacher(options.teacher, prep.lossInputs, prep.teacherValues, options);
  try {
    // two small runs (different batch and sequence sizes, the second at the training
    // length) tell the ranks on the gradient path, and which broadcasts and slice bounds
    // are the same at every size
    const targets = probeTargets(prep);
    const runs: Record<string, ort.Tensor>[] = [];
    for (const [B, T] of [
      [2, Math.min(options.seqLen, 5)],
      [3, options.seqLen],
    ] as const) {
      const ids = Array.from({ length: B }, (_, b) => Array.from({ length: T }, (_, i) => (7 * i + 3 * b + 1) % 17));
      const batch: TokenBatch = { ids, labels: ids, weights: ids.map((r) => r.map(() => 1)) };
      const feeds: Record<string, ort.Tensor> = { ...(await lossFeeds(prep.lossInputs, batch, teacher)), ...sequenceFeeds(prep.modelInputs, [], types, ids) };
      for (const p of prep.params) feeds[p.input] = new ort.Tensor('float32', Float32Array.from(p.init), p.dims);
      runs.push(feeds);
    }
    const facts = await probeValues(prep.model, runs, targets);
    return { graph: completeTraining(prep, (v) => irFacts(v) ?? facts.get(v.name)), types, teacher };
  } catch (e) {
    await teacher?.session.release();
    throw e;
  }
}

/** Feeds of the objective's inputs (labels, weights, and what the teacher gives). */
async function lossFeeds(names: readonly string[], batch: TokenBatch, teacher?: TeacherRun): Promise<Record<string, ort.Tensor>> {
  const feeds: Record<string, ort.Tensor> = {};
  if (names.includes(WEIGHTS_INPUT)) feeds[WEIGHTS_INPUT] = float32(batch.weights);
  if (names.includes(LABELS_INPUT)) feeds[LABELS_INPUT] = int64(batch.labels);
  if (teacher) {
    const out = await teacher.session.run(sequenceFeeds(teacher.session.inputNames, teacher.session.outputNames, teacher.types, batch.ids));
    if (names.includes(TEACHER_INPUT)) feeds[TEACHER_INPUT] = logitsOf(teacher.session, out, teacher.types.io.logits ?? undefined);
    for (const [input, value] of teacher.values) feeds[input] = out[value] as ort.Tensor;
  }
  return feeds;
}

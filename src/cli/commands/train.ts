/** `titanize train MODEL --data FILE --tokenizer tokenizer.json -o OUT`: train LoRA deltas (and gates) in onnxruntime. */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { UserInputError, getMetadata } from '../../ir/index.js';
import { loadModel } from '../../node/index.js';
import { OBJECTIVES, type Objective, TRAINABLE_GROUPS, type TrainableGroup } from '../../passes/train/index.js';
import { loadCheckpoint, saveCheckpoint } from '../../runtime/checkpoint.js';
import { evaluationBatches, loadTokens, trainingBatch } from '../../runtime/data.js';
import { EXECUTION_PROVIDERS, type ExecutionProviderName } from '../../runtime/execution_provider.js';
import { evaluateModel } from '../../runtime/evaluate.js';
import { describeEval, vocabSize } from '../evaluation.js';
import { loadTokenizer } from '../../runtime/tokenizer.js';
import { Trainer, TrainingError } from '../../runtime/trainer.js';
import { int, num, oneOf, positiveInt, refuseIneffective, subsetOf } from '../args.js';
import type { CliContext } from '../context.js';
import { InterruptedError } from '../errors.js';
import { saveOutput } from '../output.js';
import { progress } from '../progress.js';

interface TrainCliOptions {
  output: string;
  data: string;
  tokenizer: string;
  steps: number;
  batch: number;
  seqLen: number;
  lr?: number;
  warmup: number;
  schedule: 'cosine' | 'constant';
  weightDecay: number;
  clip: number;
  accumulate: number;
  objective: Objective;
  teacher?: string;
  train: TrainableGroup[];
  seed: number;
  eval?: string;
  evalWindows: number;
  checkpoint?: string;
  checkpointEvery: number;
  resume?: string;
  logEvery: number;
  ep: ExecutionProviderName;
  json?: boolean;
}

/** What a resumed run must share with the run that wrote the checkpoint. */
interface RunSettings {
  model: string;
  steps: number;
  batch: number;
  seqLen: number;
  lr: number | 'default';
  warmup: number;
  schedule: string;
  weightDecay: number;
  clip: number;
  accumulate: number;
  objective: Objective;
  train: TrainableGroup[];
  seed: number;
}

export function addTrainCommand(program: Command, ctx: CliContext): void {
  program
    .command('train')
    .summary('train the LoRA deltas (and gates) of a converted model in onnxruntime')
    .description(
      'Train a converted model (titanize convert --lora-rank R) on a text file: titanize builds a training graph ' +
        '(forward, loss, reverse-mode gradients, AdamW) and runs it in onnxruntime, one session run per step. ' +
        'Trainable by default: the LoRA A/B tensors (--train lora,mu,norms chooses). Frozen weights stay as they are. ' +
        'The output is the converted model with the trained tensors, which generate, merge and onnxruntime run as before.',
    )
    .argument('<model>', 'a converted .onnx model (any --target; never modified)')
    .requiredOption('-o, --output <file>', 'where to write the trained model')
    .requiredOption('--data <file>', 'training text (UTF-8), encoded with --tokenizer')
    .requiredOption('--tokenizer <file>', 'the model’s Hugging Face tokenizer.json')
    .option('--steps <n>', 'optimizer steps', positiveInt('--steps'), 100)
    .option('--batch <n>', 'sequences per step (per micro-batch with --accumulate)', positiveInt('--batch'), 8)
    .option('--seq-len <n>', 'tokens per sequence', int('--seq-len', (n) => n >= 2, 'an integer >= 2'), 128)
    .option('--lr <x>', 'peak learning rate (default 2e-3; 5e-3 for a μ = 1 model)', num('--lr', (n) => n > 0, 'a positive number'))
    .option('--warmup <n>', 'linear warmup steps', int('--warmup', (n) => n >= 0, 'a non-negative integer'), 20)
    .option('--schedule <s>', 'after warmup: cosine (decay to 0 at --steps) | constant', oneOf(['cosine', 'constant'] as const), 'cosine')
    .option('--weight-decay <x>', 'AdamW decoupled weight decay (LoRA tensors only)', num('--weight-decay', (n) => n >= 0, '>= 0'), 0)
    .option('--clip <x>', 'global gradient-norm clip (0 = off)', num('--clip', (n) => n >= 0, '>= 0'), 1)
    .option('--accumulate <k>', 'micro-batches per optimizer step', positiveInt('--accumulate'), 1)
    .option('--objective <o>', `${OBJECTIVES.join(' | ')}: next-token cross-entropy, KL to --teacher's logits, or LiZA→softmax attention transfer`, oneOf(OBJECTIVES), 'lm')
    .option('--teacher <file>', 'the original (unconverted) model: the target of --objective distill, and of transfer on a μ = 1 model')
    .option('--train <groups>', `what to train: ${TRAINABLE_GROUPS.join(',')} (comma-separated)`, subsetOf(TRAINABLE_GROUPS), ['lora'] as TrainableGroup[])
    .option('--seed <n>', 'seed of the batch sampling', int('--seed'), 0)
    .option('--eval <file>', 'held-out text: loss, perplexity and accuracy before and after training')
    .option('--eval-windows <n>', 'held-out windows of --seq-len + 1 tokens to evaluate (from the start of --eval)', positiveInt('--eval-windows'), 64)
    .option('--checkpoint <file>', 'checkpoint file (default: OUTPUT.ckpt.json when --checkpoint-every is set or on Ctrl-C)')
    .option('--checkpoint-every <k>', 'write a checkpoint every k steps (0 = only when interrupted)', int('--checkpoint-every', (n) => n >= 0, 'a non-negative integer'), 0)
    .option('--resume <file>', 'continue from a checkpoint (same model and settings): the result equals an uninterrupted run')
    .option('--log-every <k>', 'print the loss every k steps', positiveInt('--log-every'), 10)
    .option('--ep <provider>', `execution provider: ${EXECUTION_PROVIDERS.join(' | ')}`, oneOf(EXECUTION_PROVIDERS), 'cpu')
    .option('--json', 'print JSON lines: one per logged step ({step, loss, grad_norm, lr, tokens_per_s}), then a summary')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  titanize convert model.onnx -o titan.onnx --lora-rank 8 --lora-alpha 16\n' +
        '  titanize train titan.onnx --data train.txt --tokenizer tokenizer.json --steps 400 --eval held-out.txt -o trained.onnx\n' +
        '  titanize train titan.onnx --data train.txt --tokenizer tokenizer.json --objective distill --teacher model.onnx -o trained.onnx\n' +
        '  titanize train titan.onnx ... --checkpoint-every 50 -o trained.onnx      # Ctrl-C keeps the last checkpoint\n' +
        '  titanize train titan.onnx ... --resume trained.onnx.ckpt.json -o trained.onnx\n\n' +
        'Exit status: 0 ok, 2 bad input (missing or empty data, unusable tokenizer, a NaN loss: the last good checkpoint is kept), ' +
        '130 interrupted (checkpoint written), 1 internal error.',
    )
    .action(async (file: string, opts: TrainCliOptions, cmd: Command) => {
      refuseIneffective(cmd, [{ option: 'evalWindows', when: opts.eval === undefined, why: 'it sizes the held-out evaluation, and there is no --eval file' }]);
      if (opts.objective === 'distill' && !opts.teacher) throw new UserInputError('--objective distill needs --teacher ORIGINAL.onnx (the model before conversion)');
      if (opts.teacher && opts.objective === 'lm') throw new UserInputError('--teacher is used only with --objective distill or transfer');
      const model = loadModel(file);
      if (getMetadata(model.metadataProps, 'titanize.converted') === undefined) {
        throw new UserInputError(`${file} is not a titanize-converted model; run titanize convert (with --lora-rank R) first`);
      }
      const tokenizer = loadTokenizer(opts.tokenizer);
      const vocab = vocabSize(model);
      const tokens = loadTokens(opts.data, tokenizer, vocab);
      if (tokens.length < opts.seqLen + 1) throw new UserInputError(`--data ${opts.data} has ${tokens.length} tokens; --seq-len ${opts.seqLen} needs at least ${opts.seqLen + 1}`);
      const evalBatches = opts.eval ? evaluationBatches(loadTokens(opts.eval, tokenizer, vocab), opts.batch, opts.seqLen, opts.evalWindows) : undefined;
      const settings: RunSettings = {
        model: fs.realpathSync(file),
        steps: opts.steps,
        batch: opts.batch,
        seqLen: opts.seqLen,
        lr: opts.lr ?? 'default',
        warmup: opts.warmup,
        schedule: opts.schedule,
        weightDecay: opts.weightDecay,
        clip: opts.clip,
        accumulate: opts.accumulate,
        objective: opts.objective,
        train: opts.train,
        seed: opts.seed,
      };
      const resumed = opts.resume ? loadCheckpoint<RunSettings>(opts.resume) : undefined;
      if (resumed) {
        const diff = (Object.keys(settings) as (keyof RunSettings)[]).filter((k) => k !== 'model' && JSON.stringify(settings[k]) !== JSON.stringify(resumed.settings[k]));
        if (diff.length) {
          throw new UserInputError(`--resume ${opts.resume} was written with other settings (${diff.map((k) => `${k}: ${JSON.stringify(resumed.settings[k])} there, ${JSON.stringify(settings[k])} here`).join('; ')}); give the same options`);
        }
      }
      const checkpointFile = opts.checkpoint ?? `${opts.output}.ckpt.json`;
      const log = (o: Record<string, unknown>): void => void ctx.stdout.write(`${JSON.stringify(o)}\n`);
      // the training log is the command's output (stdout); with --json it is JSON lines only
      const say = (s: string): void => void (opts.json ? undefined : ctx.stdout.write(`${s}\n`));

      const teacher = opts.teacher ? loadModel(opts.teacher) : undefined;
      const before = evalBatches ? await evaluateModel(model, evalBatches, opts.ep) : undefined;
      if (before) {
        say(`held-out before: ${describeEval(before)}`);
        if (opts.json) log({ event: 'eval', when: 'before', ...before });
      }
      const t0 = performance.now();
      const trainer = await Trainer.create(model, {
        seqLen: opts.seqLen,
        steps: opts.steps,
        lr: opts.lr,
        warmup: opts.warmup,
        schedule: opts.schedule,
        objective: opts.objective,
        train: opts.train,
        optimizer: { weightDecay: opts.weightDecay, clip: opts.clip, accumulate: opts.accumulate },
        ep: opts.ep,
        verbose: ctx.verbose,
        teacher,
      });
      try {
        if (resumed) {
          trainer.restore(resumed.state);
          say(`resumed from ${opts.resume} at step ${trainer.stepCount}`);
        }
        const params = trainer.spec.params.reduce((n, p) => n + p.init.length, 0);
        say(`training graph (${opts.objective}; ${opts.train.join(', ')}) built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        say(`training ${trainer.spec.params.length} tensors (${params} values) for ${opts.steps} steps of ${opts.batch * opts.accumulate} × ${opts.seqLen} tokens, peak lr ${trainer.peakLr}`);
        const bar = progress(ctx.stderr, opts.steps, 'training', {
          json: opts.json,
          suffix: '{value}/{total} | loss {loss} | {tps} tokens/s | ETA {eta_formatted}',
          fields: { loss: '-', tps: '-' },
        });
        let tokensDone = 0;
        let msDone = 0;
        let last = { loss: Number.NaN, gradNorm: Number.NaN };
        const firstStep = trainer.stepCount;
        try {
          for (let s = trainer.stepCount; s < opts.steps; s++) {
            if (ctx.signal?.aborted) {
              saveCheckpoint(checkpointFile, settings, await trainer.snapshot());
              throw new InterruptedError(`stopped after step ${s} of ${opts.steps}; checkpoint ${checkpointFile} written (continue with --resume ${checkpointFile})`);
            }
            const micro = Array.from({ length: opts.accumulate }, (_, k) => trainingBatch(tokens, opts.batch, opts.seqLen, opts.seed, s * opts.accumulate + k));
            let r;
            try {
              r = await trainer.step(micro);
            } catch (e) {
              if (e instanceof TrainingError && trainer.stepCount > 0) {
                saveCheckpoint(checkpointFile, settings, await trainer.snapshot());
                throw new TrainingError(`${e.message}; the last good state is in ${checkpointFile}`);
              }
              throw e;
            }
            tokensDone += r.tokens;
            msDone += r.ms;
            last = r;
            const tps = (tokensDone / msDone) * 1000;
            bar.update(r.step, { loss: r.loss.toFixed(4), tps: tps.toFixed(0) });
            if (r.step % opts.logEvery === 0 || r.step === opts.steps) {
              if (opts.json) log({ step: r.step, loss: r.loss, grad_norm: r.gradNorm, lr: r.lr, tokens_per_s: tps });
              else if (!bar.active) say(`step ${r.step}/${opts.steps}: loss ${r.loss.toFixed(4)}, grad norm ${r.gradNorm.toFixed(3)}, lr ${r.lr.toExponential(2)}, ${tps.toFixed(0)} tokens/s`);
            }
            if (opts.checkpointEvery > 0 && r.step % opts.checkpointEvery === 0) saveCheckpoint(checkpointFile, settings, await trainer.snapshot());
          }
        } finally {
          bar.done();
        }
        await trainer.applyTo(model);
        saveOutput(model, file, opts.output, 'keep', { stream: ctx.stderr, json: opts.json });
        const after = evalBatches ? await evaluateModel(model, evalBatches, opts.ep) : undefined;
        const summary = {
          event: 'done',
          output: opts.output,
          steps: trainer.stepCount,
          stepsThisRun: trainer.stepCount - firstStep,
          loss: last.loss,
          tokensPerSecond: msDone ? (tokensDone / msDone) * 1000 : 0,
          trainable: trainer.spec.params.map((p) => p.source),
          ...(before && after ? { eval: { before, after, accuracyRatio: after.accuracy / before.accuracy } } : {}),
        };
        if (opts.json) log(summary);
        else {
          if (after) say(`held-out after:  ${describeEval(after)}`);
          ctx.stdout.write(`trained ${trainer.stepCount} steps (loss ${last.loss.toFixed(4)}, ${summary.tokensPerSecond.toFixed(0)} tokens/s); wrote ${opts.output}\n`);
        }
      } finally {
        await trainer.release();
      }
    });
}

/** Running models: sessions on a chosen execution provider, carried decoder state, and the generation loop. */
export { EXECUTION_PROVIDERS, ExecutionProviderError, type ExecutionProviderName, type SessionOptions, createSession, deviceOutputOptions, explainProviderFailure, providerProblem } from './execution_provider.js';
export { type DeclaredTypes, DecoderState, type RecurrentPair, type StepResult, carriedOutputs, sessionPairs, zeroPast } from './decoder_state.js';
export { type GenerateOptions, type GenerateStats, type GenerateStep, type Generation, declaredTypes, generate } from './generate.js';
export { Sampler, type SamplingOptions, argmax } from './sampling.js';
export { type TextTokenizer, loadTokenizer } from './tokenizer.js';
export { type TokenBatch, evaluationBatches, loadTokens, trainingBatch } from './data.js';
export { type EvalResult, type EvaluateOptions, evaluate, evaluateModel, scoreLogits } from './evaluate.js';
export { sequenceFeeds } from './feeds.js';
export { type ValueFacts, irFacts, probeValues } from './probe.js';
export { type ScheduleOptions, type StepReport, Trainer, buildTrainingGraph, type TrainerOptions, type TrainerState, TrainingError, lrAt } from './trainer.js';

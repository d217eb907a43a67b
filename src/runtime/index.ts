/** Running models: sessions on a chosen execution provider, and the generation loop. */
export { EXECUTION_PROVIDERS, ExecutionProviderError, type ExecutionProviderName, type SessionOptions, createSession, explainProviderFailure, providerProblem } from './execution_provider.js';
export { type DeclaredTypes, type GenerateOptions, type GenerateStats, type GenerateStep, type Generation, type RecurrentPair, declaredTypes, generate, recurrentPairs, zeroPast } from './generate.js';
export { Sampler, type SamplingOptions, argmax, seededRandom } from './sampling.js';

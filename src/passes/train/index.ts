/** Training: autodiff over the IR, the training forward, objectives, AdamW, and the training graph. */
export { type DifferentiateOptions, type GradientPath, differentiate, gradientPath, unbroadcast } from './autodiff.js';
export { type GradContext, type GradRule, type ValueInfo, NON_DIFFERENTIABLE, constLike, registerGradient, registeredGradients } from './gradients/index.js';
export { type GateMix, type TrainingForward, prepareTrainingForward, raiseLoweredLiza } from './forward.js';
export { LABELS_INPUT, LOSS_OUTPUT, OBJECTIVES, type Objective, TEACHER_INPUT, WEIGHTS_INPUT, appendLoss } from './loss.js';
export { APPLY_INPUT, type AdamWOptions, BC1_INPUT, BC2_INPUT, GRAD_NORM_OUTPUT, LR_INPUT, appendAdamW } from './optimizer.js';
export { TRAINABLE_GROUPS, type TrainableGroup, type TrainableParam, findNormWeights, logitToMu, makeTrainable, muToLogit } from './params.js';
export {
  type PreparedTraining,
  type TrainingGraph,
  type TrainingGraphOptions,
  type TrainingGraphSpec,
  completeTraining,
  gradOutputName,
  prepareTraining,
  probeTargets,
  slotNames,
} from './training_graph.js';

/** Public surface of the engine for other folders (server, cli, parallel). */
export { createEngine, type Engine, type EngineOptions, type EngineStats, type EngineLimits, type SubmitOptions } from './engine.ts';
export type { AdapterSlots } from './adapter-slots.ts';
export { systemClock, type Clock } from './clock.ts';
export type { Detokenizer } from './output/incremental-detokenizer.ts';
export type { AdmissionCandidate, AdmissionPolicy } from './scheduler/admission-policy.ts';
export { fcfsPolicy } from './scheduler/scheduler-policy-fcfs.ts';
export {
  validateSamplingParams,
  validateStopping,
  validateTopNLogprobs,
  validatePromptTokenIds,
  DEFAULT_MAX_TOP_N_LOGPROBS,
  type StoppingLimits,
} from './sampler/sampling-validation.ts';
export type * from './executor.ts';
export type * from './request.ts';

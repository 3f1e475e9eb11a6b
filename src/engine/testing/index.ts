export { createManualClock, type ManualClock } from './manual-clock.ts';
export { createRequests, GREEDY, type CreateRequestsOptions } from './create-requests.ts';
export {
  FakeExecutor,
  DEFAULT_FAKE_LAYOUT,
  hashLogits,
  scriptedLogits,
  constantLogits,
  type FakeExecutorOptions,
  type LogitsFn,
} from './fake-executor.ts';
export { createByteDetokenizer } from './byte-detokenizer.ts';
export { collect, type CollectedGeneration } from './collect.ts';

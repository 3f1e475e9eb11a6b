/** The engine's time source. Deadlines (`ValidGenerateRequest.deadlineMs`, `drain(deadlineMs)`) are read on it. */
export interface Clock {
  nowMs(): number;
}

/** Wall clock (Date.now), so deadlines can be derived from a gRPC deadline. */
export const systemClock: Clock = { nowMs: () => Date.now() };

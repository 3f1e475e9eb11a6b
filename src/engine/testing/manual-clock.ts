import type { Clock } from '../clock.ts';

/** A clock that moves only when told: deterministic deadlines and step delays in tests. */
export interface ManualClock extends Clock {
  advance(ms: number): void;
}

export function createManualClock(startMs = 0): ManualClock {
  let now = startMs;
  return {
    nowMs: () => now,
    advance(ms: number): void {
      if (!(ms >= 0)) throw new RangeError(`advance(ms) needs ms >= 0, got ${ms}`);
      now += ms;
    },
  };
}

import { describe, expect, it } from 'vitest';
import type { TesseraError } from '../errors.ts';
import { engineDeadlineMs } from './call-context.ts';
import { createRequestGate } from './request-gate.ts';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as TesseraError).code;
  }
  return undefined;
}

describe('request gate', () => {
  it('admits up to the limit, then QUEUE_FULL; release frees a place once', () => {
    const gate = createRequestGate({ maxConcurrentRequests: 2 });
    const a = gate.admit(new AbortController());
    gate.admit(new AbortController());
    expect(codeOf(() => gate.admit(new AbortController()))).toBe('QUEUE_FULL');
    a.release();
    a.release();
    expect(gate.numInFlight).toBe(1);
    gate.admit(new AbortController());
    expect(codeOf(() => gate.admit(new AbortController()))).toBe('QUEUE_FULL');
  });

  it('answers DRAINING while not serving', () => {
    const gate = createRequestGate({ maxConcurrentRequests: 2, serving: false });
    expect(codeOf(() => gate.checkOpen())).toBe('DRAINING');
    expect(codeOf(() => gate.admit(new AbortController()))).toBe('DRAINING');
    gate.setServing(true);
    expect(codeOf(() => gate.checkOpen())).toBeUndefined();
  });

  it('drain waits for in-flight requests to finish', async () => {
    const gate = createRequestGate({ maxConcurrentRequests: 4 });
    const c = new AbortController();
    const ticket = gate.admit(c);
    const drained = gate.drain(10_000);
    expect(codeOf(() => gate.admit(new AbortController()))).toBe('DRAINING');
    setTimeout(() => ticket.release(), 20);
    expect(await drained).toBe(0);
    expect(c.signal.aborted).toBe(false);
  });

  it('drain aborts what is still running at its deadline', async () => {
    const gate = createRequestGate({ maxConcurrentRequests: 4 });
    const c = new AbortController();
    gate.admit(c);
    const t0 = Date.now();
    expect(await gate.drain(30)).toBe(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(25);
    expect(c.signal.aborted).toBe(true);
    expect((c.signal.reason as TesseraError).code).toBe('DRAINING');
  });
});

describe('engineDeadlineMs', () => {
  it('moves the gRPC deadline onto the engine clock', () => {
    expect(engineDeadlineMs(Infinity, 500)).toBeNull();
    expect(engineDeadlineMs(new Date(10_250), 1000, 10_000)).toBe(1250);
    expect(engineDeadlineMs(10_100, 0, 10_000)).toBe(100);
  });
});

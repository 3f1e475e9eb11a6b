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
    // The client reads this: no computed grace or clock value in it.
    expect((c.signal.reason as TesseraError).message).toBe('server shut down before the request finished (its drain timeout passed); retry on another replica');
  });

  it('a second, shorter drain cancels what the first still waits for', async () => {
    const gate = createRequestGate({ maxConcurrentRequests: 4 });
    const c = new AbortController();
    const ticket = gate.admit(c);
    c.signal.addEventListener('abort', () => ticket.release());
    const first = gate.drain(60_000);
    expect(await gate.drain(0)).toBe(1);
    expect(await first).toBe(0);
    expect(c.signal.aborted).toBe(true);
  });

  it('says why it refuses: starting (DRAINING, not ready), a worker down (WORKER_UNAVAILABLE), stopping (DRAINING)', () => {
    const gate = createRequestGate({ maxConcurrentRequests: 2 });
    const messageOf = (fn: () => unknown): string => {
      try {
        fn();
      } catch (err) {
        return `${(err as TesseraError).code}: ${(err as TesseraError).message}`;
      }
      return 'admitted';
    };
    gate.setServing(false, 'worker-down');
    expect(messageOf(() => gate.checkOpen())).toBe('WORKER_UNAVAILABLE: a model worker is down and restarting; retry shortly');
    expect(messageOf(() => gate.admit(new AbortController()))).toMatch(/^WORKER_UNAVAILABLE/);
    gate.setServing(true);
    expect(messageOf(() => gate.checkOpen())).toBe('admitted');
    gate.setServing(false);
    expect(messageOf(() => gate.checkOpen())).toBe('DRAINING: server is not ready yet; retry shortly');
    gate.setServing(false, 'stopping');
    expect(messageOf(() => gate.checkOpen())).toBe('DRAINING: server is shutting down; retry on another replica');
  });
});

describe('engineDeadlineMs', () => {
  it('moves the gRPC deadline onto the engine clock', () => {
    expect(engineDeadlineMs(Infinity, 500)).toBeNull();
    expect(engineDeadlineMs(new Date(10_250), 1000, 10_000)).toBe(1250);
    expect(engineDeadlineMs(10_100, 0, 10_000)).toBe(100);
  });
});

/**
 * Admission at the server edge: whether new calls are accepted (serving, not draining) and how many
 * generation requests may be in flight at once. In-flight requests are tracked with their
 * AbortControllers so a drain can wait for them and cancel the rest at its deadline.
 */
import { TesseraError } from '../errors.ts';

export interface RequestGate {
  /** Admits a non-generation call (Tokenize, GetModelInfo, Adapters); throws DRAINING when closed. */
  checkOpen(): void;
  /** Admits a generation request; DRAINING when closed, QUEUE_FULL at the limit. Call `release` exactly once. */
  admit(controller: AbortController): { release(): void };
  /** `reason` says why new calls are refused while not serving (default 'starting'). */
  setServing(serving: boolean, reason?: NotServingReason): void;
  readonly serving: boolean;
  readonly numInFlight: number;
  /**
   * Stops admitting, waits until nothing is in flight or `graceMs` passed, then aborts what is left.
   * Resolves to the number of requests aborted.
   */
  drain(graceMs: number): Promise<number>;
}

/** Why the server is not serving: still starting, a model worker down (restarting), or stopping. */
export type NotServingReason = 'starting' | 'worker-down' | 'stopping';

export interface RequestGateOptions {
  maxConcurrentRequests: number;
  /** Initially serving? Default true. */
  serving?: boolean;
}

export function createRequestGate(opts: RequestGateOptions): RequestGate {
  const inFlight = new Set<AbortController>();
  let serving = opts.serving ?? true;
  let notServingReason: NotServingReason = 'starting';
  let draining = false;
  let idleWaiters: (() => void)[] = [];

  function closedError(): TesseraError {
    if (draining || notServingReason === 'stopping') return new TesseraError('DRAINING', 'server is shutting down; retry on another replica');
    if (notServingReason === 'worker-down') return new TesseraError('WORKER_UNAVAILABLE', 'a model worker is down and restarting; retry shortly');
    return new TesseraError('DRAINING', 'server is not ready yet; retry shortly');
  }

  return {
    get serving() {
      return serving && !draining;
    },
    get numInFlight() {
      return inFlight.size;
    },
    setServing(b, reason = 'starting') {
      serving = b;
      if (!b) notServingReason = reason;
    },
    checkOpen() {
      if (!serving || draining) throw closedError();
    },
    admit(controller) {
      if (!serving || draining) throw closedError();
      if (inFlight.size >= opts.maxConcurrentRequests) {
        throw new TesseraError(
          'QUEUE_FULL',
          `concurrent requests must be at most ${opts.maxConcurrentRequests}. Given: ${inFlight.size + 1}; retry with backoff`,
        );
      }
      inFlight.add(controller);
      let released = false;
      return {
        release() {
          if (released) return;
          released = true;
          inFlight.delete(controller);
          if (inFlight.size === 0) {
            const waiters = idleWaiters;
            idleWaiters = [];
            for (const w of waiters) w();
          }
        },
      };
    },
    async drain(graceMs) {
      draining = true;
      if (inFlight.size > 0) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          new Promise<void>((resolve) => idleWaiters.push(resolve)),
          new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, graceMs)))),
        ]);
        clearTimeout(timer);
      }
      const left = [...inFlight];
      for (const c of left) c.abort(new TesseraError('DRAINING', 'server shut down before the request finished (its drain timeout passed); retry on another replica'));
      return left.length;
    },
  };
}

import type { ValidGenerateRequest } from '../request.ts';

/** What an admission policy may look at. */
export interface AdmissionCandidate {
  readonly request: ValidGenerateRequest;
  /** Engine clock at submit. */
  readonly arrivalMs: number;
  readonly numPreemptions: number;
  /** Tokens to prefill on admission (prompt + already generated after a preemption). */
  readonly tokenIds: readonly number[];
}

/**
 * Seam for who is admitted next (FCFS now; per-tenant fair share such as VTC later). A pure function of the queue:
 * it returns the waiting sequences in the order the scheduler should try them. The queue it is given is in arrival
 * order with preempted sequences at the front.
 *
 * The scheduler walks that order: a sequence whose adapter is still loading is skipped (it stays queued); the first
 * one whose KV blocks are not free stops admission for this step (head-of-line, so large prompts are not starved by
 * a stream of small ones).
 */
export interface AdmissionPolicy {
  readonly name: string;
  order<T extends AdmissionCandidate>(waiting: readonly T[], nowMs: number): readonly T[];
}

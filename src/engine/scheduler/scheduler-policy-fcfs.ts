import type { AdmissionCandidate, AdmissionPolicy } from './admission-policy.ts';

/** First come, first served: the queue order itself. */
export const fcfsPolicy: AdmissionPolicy = {
  name: 'fcfs',
  order<T extends AdmissionCandidate>(waiting: readonly T[]): readonly T[] {
    return waiting;
  },
};

import { describe, expect, it } from 'vitest';
import { createSequence } from '../sequence.ts';
import type { ValidGenerateRequest } from '../request.ts';
import { createManualClock, createRequests, FakeExecutor } from '../testing/index.ts';
import type { AdmissionCandidate, AdmissionPolicy } from './admission-policy.ts';
import { createScheduler } from './scheduler.ts';
import { fcfsPolicy } from './scheduler-policy-fcfs.ts';
import { createVtcPolicy, type VtcPolicy } from './scheduler-policy-vtc.ts';

/** Tenant a floods (10x the requests of b), a's arrive first; runs the real scheduler and returns finish order. */
async function flood(policy: AdmissionPolicy): Promise<string[]> {
  const clock = createManualClock();
  const executor = new FakeExecutor({ layout: { numKvBlocks: 256 } });
  const scheduler = createScheduler({ layout: executor.layout, clock, maxRunningSequences: 4, admissionPolicy: policy });
  const heavy = createRequests(100, { tenantId: 'a', requestIdPrefix: 'a', promptTokens: 8, maxNewTokens: 6, stopping: { ignoreEos: true } });
  const light = createRequests(10, { tenantId: 'b', requestIdPrefix: 'b', promptTokens: 8, maxNewTokens: 6, stopping: { ignoreEos: true } });
  const finished: string[] = [];
  const enqueue = (req: ValidGenerateRequest) =>
    scheduler.enqueue(
      createSequence({
        request: req,
        arrivalMs: clock.nowMs(),
        detokenizer: null,
        eosTokenIds: new Set(),
        emit: (e) => {
          if (e.type === 'tokens' && 'chargeOutput' in policy) (policy as VtcPolicy).chargeOutput(req.tenantId, e.tokens.length, clock.nowMs());
          if (e.type === 'finish') finished.push(req.requestId);
        },
      }),
    );
  heavy.forEach(enqueue);
  clock.advance(1);
  light.forEach(enqueue);
  for (let guard = 0; scheduler.hasWork(); guard++) {
    if (guard > 20_000) throw new Error('no progress');
    const plan = scheduler.schedule();
    scheduler.update(plan, await executor.execute(plan));
    clock.advance(10);
  }
  return finished;
}

const lastIndexOf = (order: string[], prefix: string) => order.reduce((last, id, i) => (id.startsWith(prefix) ? i : last), -1);

function candidate(id: string, tenantId: string | null, tokens: number, arrivalMs: number, numPreemptions = 0): AdmissionCandidate {
  const [request] = createRequests(1, { tenantId, requestIdPrefix: id, promptTokens: tokens });
  request.requestId = id;
  return { request, arrivalMs, numPreemptions, tokenIds: request.promptTokenIds };
}

describe('VTC admission policy', () => {
  it('a tenant sending 10x the requests of another does not starve it (real scheduler, FCFS as the contrast)', async () => {
    const fcfs = await flood(fcfsPolicy);
    const vtc = await flood(createVtcPolicy());
    expect(fcfs).toHaveLength(110);
    expect(vtc).toHaveLength(110);
    // FCFS: b waits behind all of a's 100 requests.
    expect(fcfs.findIndex((id) => id.startsWith('b'))).toBeGreaterThanOrEqual(96);
    // VTC: b gets about half of the admissions while both are backlogged, so all 10 of b's finish within ~the first 20+4.
    expect(lastIndexOf(vtc, 'b')).toBeLessThan(26);
    // ...and a still gets served (work conserving): every request finishes.
    expect(new Set(vtc).size).toBe(110);
  });

  it('interleaves tenants within one ordering, FCFS within a tenant, preempted sequences first', () => {
    const policy = createVtcPolicy();
    const waiting = [
      candidate('p', 'a', 4, 0, 1),
      candidate('a1', 'a', 4, 1),
      candidate('a2', 'a', 4, 2),
      candidate('a3', 'a', 4, 3),
      candidate('b1', 'b', 4, 4),
      candidate('b2', 'b', 4, 5),
    ];
    expect(policy.order(waiting, 0).map((c) => c.request.requestId)).toEqual(['p', 'a1', 'b1', 'a2', 'b2', 'a3']);
  });

  it('charges admitted prompts and generated tokens; the tenant with the smaller counter goes first', () => {
    const policy = createVtcPolicy({ inputWeight: 1, outputWeight: 2 });
    const a1 = candidate('a1', 'a', 10, 0);
    const b1 = candidate('b1', 'b', 3, 1);
    policy.order([a1, b1], 0);
    policy.order([], 1); // both admitted
    expect(policy.counters().get('a')).toBe(10);
    expect(policy.counters().get('b')).toBe(3);
    policy.chargeOutput('b', 5, 2); // b: 3 + 10 = 13 > a: 10
    const next = policy.order([candidate('b2', 'b', 1, 3), candidate('a2', 'a', 1, 4)], 5);
    expect(next.map((c) => c.request.requestId)).toEqual(['a2', 'b2']);
  });

  it('lifts a newly backlogged tenant to the smallest active counter (idle time earns no credit)', () => {
    const policy = createVtcPolicy();
    // a is busy for a long time alone: its counter grows to 100.
    policy.order([candidate('a1', 'a', 100, 0), candidate('a2', 'a', 1, 0)], 0);
    policy.order([candidate('a2', 'a', 1, 0)], 1);
    expect(policy.counters().get('a')).toBe(100);
    // c arrives now: lifted to 100, so it does not get 100 tokens of head start over a.
    policy.order([candidate('a2', 'a', 1, 0), candidate('c1', 'c', 1, 2)], 2);
    expect(policy.counters().get('c')).toBe(100);
  });

  it('holds back a tenant over its token-bucket quota until the bucket refills', () => {
    const policy = createVtcPolicy({ quotas: new Map([['a', { tokensPerSecond: 10, burstTokens: 10 }]]) });
    policy.order([candidate('a1', 'a', 30, 0)], 0);
    policy.order([], 0); // a1 admitted: bucket 10 - 30 = -20
    const blocked = policy.order([candidate('a2', 'a', 1, 1), candidate('b1', 'b', 1, 2)], 1000); // refilled to -10
    expect(blocked.map((c) => c.request.requestId)).toEqual(['b1']);
    const allowed = policy.order([candidate('a2', 'a', 1, 1)], 3500); // -10 + 25 -> 10 (capped)
    expect(allowed.map((c) => c.request.requestId)).toEqual(['a2']);
  });

  it('rejects invalid options naming the field', () => {
    expect(() => createVtcPolicy({ outputWeight: -1 })).toThrow('`outputWeight` must be a finite number >= 0. Given: -1');
    expect(() => createVtcPolicy({ defaultQuota: { tokensPerSecond: 0 } })).toThrow(/tokensPerSecond/);
  });
});

import { describe, expect, it } from 'vitest';
import { createSequence, type Sequence } from '../sequence.ts';
import type { GenerationEvent, ValidGenerateRequest } from '../request.ts';
import { createManualClock, createRequests, DEFAULT_FAKE_LAYOUT, FakeExecutor } from '../testing/index.ts';
import { createScheduler, type SchedulerOptions } from './scheduler.ts';

function seqOf(req: ValidGenerateRequest, events: GenerationEvent[] = []): Sequence {
  return createSequence({ request: req, arrivalMs: 0, detokenizer: null, eosTokenIds: new Set(), emit: (e) => events.push(e) });
}

async function runToCompletion(executor: FakeExecutor, opts: Partial<SchedulerOptions>, reqs: ValidGenerateRequest[]) {
  const scheduler = createScheduler({ layout: executor.layout, clock: createManualClock(), ...opts });
  const events = reqs.map(() => [] as GenerationEvent[]);
  const seqs = reqs.map((r, i) => seqOf(r, events[i]));
  seqs.forEach((s) => scheduler.enqueue(s));
  let guard = 0;
  while (scheduler.hasWork()) {
    if (++guard > 10_000) throw new Error('no progress');
    const plan = scheduler.schedule();
    scheduler.update(plan, await executor.execute(plan));
  }
  return { scheduler, seqs, events };
}

describe('scheduler', () => {
  it('keeps every plan within maxBatchTokens / maxRunningSequences / prefillChunkTokens across random workloads', async () => {
    for (let trial = 0; trial < 6; trial++) {
      const budgets = { maxBatchTokens: 5 + trial * 3, maxSequences: 1 + trial, prefillChunkTokens: 2 + trial };
      const executor = new FakeExecutor({ budgets, layout: { numKvBlocks: 24 + trial * 4 } });
      const reqs = createRequests(10, { promptTokens: (i) => 1 + ((i * 7 + trial) % 23), maxNewTokens: 1 + ((trial * 5) % 9) });
      const { scheduler, events } = await runToCompletion(
        executor,
        { maxBatchTokens: budgets.maxBatchTokens, maxRunningSequences: budgets.maxSequences, prefillChunkTokens: budgets.prefillChunkTokens },
        reqs,
      );
      expect(executor.violations).toEqual([]);
      for (const e of events) expect(e.at(-1)).toMatchObject({ type: 'finish', reason: 'length' });
      expect(scheduler.stats()).toMatchObject({ kvBlocksUsed: 0, running: 0, queued: 0 });
    }
  });

  it('applies each outcome by its kind (sampled tokens, a logits row, none) and fails alone a request whose outcome does not fit its row', () => {
    // An executor that samples in its graph: the scheduler gives every loop-eligible (here: greedy) sampling row loopSampling.
    const scheduler = createScheduler({ layout: { ...DEFAULT_FAKE_LAYOUT, samplesInGraph: true }, clock: createManualClock(), prefillChunkTokens: 4 });
    const events = [0, 1, 2, 3].map(() => [] as GenerationEvent[]);
    const reqs = createRequests(4, { promptTokens: (i) => (i === 2 ? 8 : 3), maxNewTokens: 4 });
    reqs.forEach((r, i) => scheduler.enqueue(seqOf(r, events[i])));
    const plan = scheduler.schedule();
    const [a, b, c, d] = plan.sequences;
    expect([a, b, d].every((w) => w.sampleNext && w.loopSampling !== undefined)).toBe(true);
    expect(c.sampleNext).toBe(false); // a first chunk of 4 of an 8-token prompt: nothing to sample
    const vocab = DEFAULT_FAKE_LAYOUT.vocabSize;
    const logits = new Float32Array(vocab);
    logits[5] = 3;
    scheduler.update(plan, {
      stepId: plan.stepId,
      outcomes: [
        { kind: 'sampled', seqId: a.seqId, logitsRow: -1, sampledRow: 0 },
        { kind: 'logits', seqId: b.seqId, logitsRow: 0 },
        { kind: 'none', seqId: c.seqId, logitsRow: -1 },
        { kind: 'none', seqId: d.seqId, logitsRow: -1 },
      ],
      logits,
      vocabSize: vocab,
      sampledTokens: { steps: 1, tokenIds: Int32Array.of(7), logprobs: Float32Array.of(-0.25) },
      runtimeMs: 0,
    });
    expect(events[0][0]).toMatchObject({ type: 'tokens', tokens: [{ tokenId: 7, logprob: -0.25 }] });
    expect(events[1][0]).toMatchObject({ type: 'tokens', tokens: [{ tokenId: 5 }] });
    expect(events[2]).toEqual([]);
    // d sampled but got no token: it alone fails.
    expect(events[3].at(-1)).toMatchObject({ type: 'finish', reason: 'error', error: { code: 'INTERNAL', message: expect.stringMatching(/no token for a row that samples/) } });
    expect(scheduler.stats()).toMatchObject({ running: 3 });
  });

  it('puts decodes before prefill chunks and samples only on the last chunk', async () => {
    const executor = new FakeExecutor();
    const scheduler = createScheduler({ layout: executor.layout, clock: createManualClock(), maxBatchTokens: 6, prefillChunkTokens: 4 });
    const [a, b] = createRequests(2, { promptTokens: (i) => (i === 0 ? 2 : 10), maxNewTokens: 20 });
    scheduler.enqueue(seqOf(a));
    let plan = scheduler.schedule();
    scheduler.update(plan, await executor.execute(plan));
    scheduler.enqueue(seqOf(b));
    const shapes: string[] = [];
    for (let i = 0; i < 4; i++) {
      plan = scheduler.schedule();
      shapes.push(plan.sequences.map((s) => `${s.seqId}:${s.tokenIds.length}${s.sampleNext ? 's' : ''}`).join(' '));
      scheduler.update(plan, await executor.execute(plan));
    }
    // b's 10-token prompt: chunks of 4, 4 (budget 6 - 1 decode = 5 > 4), then 2 with sampling; then both decode.
    expect(shapes).toEqual(['0:1s 1:4', '0:1s 1:4', '0:1s 1:2s', '0:1s 1:1s']);
    expect(executor.violations).toEqual([]);
  });

  it('preempts the most recently admitted sequence and requeues it at the front', async () => {
    // 4 blocks of 2 tokens. a and b each start with 3 prompt tokens (2 blocks each) and need a third block to grow.
    const executor = new FakeExecutor({ layout: { numKvBlocks: 4, blockSizeTokens: 2 } });
    const scheduler = createScheduler({ layout: executor.layout, clock: createManualClock() });
    const [a, b, c] = createRequests(3, { promptTokens: 3, maxNewTokens: 4 });
    const sa = seqOf(a);
    const sb = seqOf(b);
    const sc = seqOf(c);
    [sa, sb, sc].forEach((s) => scheduler.enqueue(s));
    let plan = scheduler.schedule(); // admits a and b (prefill), c waits (no blocks)
    expect(plan.sequences.map((s) => s.seqId)).toEqual([0, 1]);
    scheduler.update(plan, await executor.execute(plan));
    plan = scheduler.schedule(); // decodes at position 3 (blocks cover 4): fine
    scheduler.update(plan, await executor.execute(plan));
    plan = scheduler.schedule(); // position 4 needs a third block for a: b (newest) is preempted
    expect(plan.sequences.map((s) => s.seqId)).toEqual([0]);
    expect(plan.releasedSeqIds).toEqual([1]); // released before this plan's sequences: a may reuse b's block
    expect(sb.phase).toBe('waiting');
    expect(sb.numPreemptions).toBe(1);
    expect(scheduler.stats()).toMatchObject({ queued: 2, running: 1, preemptionCount: 1, kvBlocksUsed: 3 });
    scheduler.update(plan, await executor.execute(plan));
    plan = scheduler.schedule();
    // a finishes; then b (front of the queue, ahead of c) is readmitted with a fresh seqId and re-prefills 5 tokens
    while (sa.phase !== 'finished') {
      scheduler.update(plan, await executor.execute(plan));
      plan = scheduler.schedule();
    }
    const readmitted = plan.sequences.find((s) => s.startPosition === 0)!;
    expect(readmitted.tokenIds.slice(0, 3)).toEqual(b.promptTokenIds);
    expect(readmitted.tokenIds).toHaveLength(5);
    expect(readmitted.seqId).toBeGreaterThan(1);
    expect(executor.violations).toEqual([]);
  });

  it('rejects budgets that cannot give every running sequence a decode token', () => {
    const layout = new FakeExecutor().layout;
    expect(() => createScheduler({ layout, clock: createManualClock(), maxBatchTokens: 4, maxRunningSequences: 8 })).toThrow(
      '`maxBatchTokens` must be >= maxRunningSequences (8), one decode token per running sequence. Given: 4',
    );
    expect(() => createScheduler({ layout, clock: createManualClock(), prefillChunkTokens: 0 })).toThrow(/prefillChunkTokens/);
  });

  it('frees KV and emits the finish event at once on abort, even while a step is in flight', async () => {
    const executor = new FakeExecutor();
    const scheduler = createScheduler({ layout: executor.layout, clock: createManualClock() });
    const events: GenerationEvent[] = [];
    const s = seqOf(createRequests(1, { promptTokens: 9 })[0], events);
    scheduler.enqueue(s);
    const plan = scheduler.schedule();
    const pending = executor.execute(plan);
    expect(scheduler.stats().kvBlocksUsed).toBe(3);
    scheduler.abort(s, 'cancelled');
    expect(scheduler.stats().kvBlocksUsed).toBe(0);
    expect(events.at(-1)).toMatchObject({ type: 'finish', reason: 'cancelled' });
    scheduler.update(plan, await pending); // result for a cancelled sequence is ignored
    expect(events.filter((e) => e.type === 'finish')).toHaveLength(1);
  });
});

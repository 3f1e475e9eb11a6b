import { describe, expect, it, onTestFinished } from 'vitest';
import { TesseraError, isTesseraError } from '../errors.ts';
import { createEngine, type Engine, type EngineOptions } from './engine.ts';
import type { ValidGenerateRequest } from './request.ts';
import {
  FakeExecutor,
  collect,
  createByteDetokenizer,
  createManualClock,
  createRequests,
  hashLogits,
  scriptedLogits,
  type FakeExecutorOptions,
} from './testing/index.ts';

function setup(exOpts: FakeExecutorOptions = {}, engineOpts: Partial<EngineOptions> = {}): { engine: Engine; executor: FakeExecutor } {
  const executor = new FakeExecutor(exOpts);
  const engine = createEngine({ executor, detokenizer: null, eosTokenIds: [], ...engineOpts });
  onTestFinished(() => engine.shutdown());
  return { engine, executor };
}

async function runAlone(req: ValidGenerateRequest, exOpts: FakeExecutorOptions = {}): Promise<number[]> {
  const { engine } = setup(exOpts);
  return (await collect(engine.submit(req))).tokenIds;
}

const sleepMs = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('engine: generation and batching', () => {
  it('streams tokens then one finish with usage; greedy follows the model', async () => {
    const { engine, executor } = setup({ logits: scriptedLogits((t) => 2 + (t.at(-1)! % 10)) });
    const [req] = createRequests(1, { promptTokens: 5, maxNewTokens: 6 });
    const out = await collect(engine.submit(req));
    let last = req.promptTokenIds.at(-1)!;
    const expected = Array.from({ length: 6 }, () => (last = 2 + (last % 10)));
    expect(out.tokenIds).toEqual(expected);
    expect(out.reason).toBe('length');
    expect(out.finish.usage).toEqual({ promptTokens: 5, generatedTokens: 6 });
    expect(out.events.filter((e) => e.type === 'tokens')).toHaveLength(6);
    expect(executor.violations).toEqual([]);
    expect(engine.stats().kvBlocksUsed).toBe(0);
  });

  it('batched == alone (seeded sampling, chunked prefill, tight budgets), every plan within budgets', async () => {
    const reqs = createRequests(8, {
      promptTokens: (i) => 3 + i * 5,
      maxNewTokens: 12,
      sampling: { temperature: 0.9, topK: 20, topP: 0.95 },
      topNLogprobs: 2,
    });
    const budgets = { maxBatchTokens: 16, maxSequences: 3, prefillChunkTokens: 6 };
    const { engine, executor } = setup(
      { budgets },
      { maxBatchTokens: 16, maxRunningSequences: 3, prefillChunkTokens: 6 },
    );
    const batched = await Promise.all(reqs.map((r) => collect(engine.submit(r))));
    expect(executor.violations).toEqual([]);
    expect(executor.plans.some((p) => p.sequences.length === 3)).toBe(true);
    for (let i = 0; i < reqs.length; i++) {
      expect(batched[i].tokenIds).toEqual(await runAlone(reqs[i]));
      expect(batched[i].tokens.every((t) => t.top.length === 2 && t.logprob <= 0)).toBe(true);
    }
  });

  it('requests join and leave between steps', async () => {
    const { engine, executor } = setup();
    const [a, b] = createRequests(2, { maxNewTokens: 10 });
    const first = engine.submit(a);
    const it = first[Symbol.asyncIterator]();
    await it.next();
    await it.next(); // a has produced two tokens: b joins a running batch
    const pb = collect(engine.submit({ ...b, stopping: { ...b.stopping, maxNewTokens: 3 } }));
    const resB = await pb;
    while (!(await it.next()).done);
    const seqIdsPerPlan = executor.plans.map((p) => p.sequences.map((s) => s.seqId).sort());
    const joined = seqIdsPerPlan.findIndex((ids) => ids.length === 2);
    expect(joined).toBeGreaterThan(1);
    expect(seqIdsPerPlan.at(-1)).toHaveLength(1); // b left, a still running
    expect(resB.tokenIds).toHaveLength(3);
    expect(executor.violations).toEqual([]);
  });

  it('chunked prefill of a long prompt keeps running sequences decoding', async () => {
    const { engine, executor } = setup({}, { prefillChunkTokens: 8, maxBatchTokens: 12 });
    const [short, long] = createRequests(2, { promptTokens: (i) => (i === 0 ? 4 : 60), maxNewTokens: 30 });
    const streamA = engine.submit(short);
    const ia = streamA[Symbol.asyncIterator]();
    await ia.next();
    const done = collect(engine.submit(long));
    while (!(await ia.next()).done);
    await done;
    const shortSeq = executor.plans[0].sequences[0].seqId;
    const prefillSteps = executor.plans.filter((p) => p.sequences.some((s) => s.seqId !== shortSeq && !s.sampleNext));
    expect(prefillSteps.length).toBeGreaterThanOrEqual(6); // 60 tokens in chunks of <= 8 (budget 12 - 1 decode)
    for (const p of prefillSteps) {
      expect(p.sequences.some((s) => s.seqId === shortSeq && s.tokenIds.length === 1)).toBe(true);
      expect(p.sequences.reduce((n, s) => n + s.tokenIds.length, 0)).toBeLessThanOrEqual(12);
      const chunk = p.sequences.find((s) => s.seqId !== shortSeq)!;
      expect(chunk.tokenIds.length).toBeLessThanOrEqual(8);
    }
    expect(executor.violations).toEqual([]);
  });

  it('an idle engine sleeps: no steps without work', async () => {
    const { engine } = setup();
    await collect(engine.submit(createRequests(1)[0]));
    const steps = engine.stats().stepCount;
    await sleepMs(30);
    expect(engine.stats().stepCount).toBe(steps);
    await collect(engine.submit(createRequests(1)[0]));
    expect(engine.stats().stepCount).toBeGreaterThan(steps);
  });
});

describe('engine: KV cache and preemption', () => {
  it('preempted sequences resume with the same tokens as without preemption', async () => {
    const reqs = createRequests(4, { promptTokens: 6, maxNewTokens: 20, sampling: { temperature: 1, seed: 11 } });
    const small = { numKvBlocks: 14, blockSizeTokens: 4 }; // 56 slots for 4 x 26 tokens
    const { engine, executor } = setup({ layout: small });
    const outs = await Promise.all(reqs.map((r) => collect(engine.submit(r))));
    expect(engine.stats().preemptionCount).toBeGreaterThan(0);
    expect(executor.violations).toEqual([]);
    for (let i = 0; i < reqs.length; i++) {
      expect(outs[i].reason).toBe('length');
      expect(outs[i].tokenIds).toEqual(await runAlone(reqs[i]));
    }
    expect(engine.stats().kvBlocksUsed).toBe(0);
  });

  it('a request that cannot fit even alone fails KV_CACHE_EXHAUSTED, never truncated', async () => {
    const { engine } = setup({ layout: { numKvBlocks: 3, blockSizeTokens: 4 } });
    const [req] = createRequests(1, { promptTokens: 4, maxNewTokens: 20 });
    const out = await collect(engine.submit(req));
    expect(out.reason).toBe('error');
    expect((out.finish.error as TesseraError).code).toBe('KV_CACHE_EXHAUSTED');
    expect(out.tokenIds.length).toBeLessThan(20);
    expect(engine.stats().kvBlocksUsed).toBe(0);
    expect(() => engine.submit(createRequests(1, { promptTokens: 12, maxNewTokens: 1 })[0])).toThrow(/needs 4 KV blocks/);
  });

  it('FCFS: a large request is admitted before anyone who came after it (no starvation)', async () => {
    const layout = { numKvBlocks: 12, blockSizeTokens: 4 };
    const { engine, executor } = setup({ layout }, { maxRunningSequences: 4 });
    const mk = (id: number, len: number): ValidGenerateRequest => ({
      ...createRequests(1, { maxNewTokens: 4 })[0],
      requestId: `r${id}`,
      promptTokenIds: [10 + id, ...Array.from({ length: len - 1 }, () => 3)],
    });
    const streams = [mk(0, 8), mk(1, 8), mk(2, 36), ...Array.from({ length: 8 }, (_, i) => mk(3 + i, 6))];
    const done = Promise.all(streams.map((r) => collect(engine.submit(r))));
    const outs = await done;
    expect(outs.every((o) => o.reason === 'length')).toBe(true);
    const firstStep = new Map<number, number>(); // first prompt token -> step of admission
    executor.plans.forEach((p, step) =>
      p.sequences.forEach((s) => {
        if (s.startPosition === 0 && !firstStep.has(s.tokenIds[0])) firstStep.set(s.tokenIds[0], step);
      }),
    );
    const bigAt = firstStep.get(12)!;
    for (let id = 3; id < 11; id++) expect(firstStep.get(10 + id)!).toBeGreaterThanOrEqual(bigAt);
  });

  it('cancellation frees KV blocks at once and finishes "cancelled"', async () => {
    const { engine } = setup({}, { maxRunningSequences: 8 });
    const controller = new AbortController();
    const [a, b] = createRequests(2, { promptTokens: 20, maxNewTokens: 200 });
    const stream = engine.submit(a, { signal: controller.signal });
    const other = collect(engine.submit({ ...b, stopping: { ...b.stopping, maxNewTokens: 5 } }));
    const it = stream[Symbol.asyncIterator]();
    await it.next();
    const before = engine.stats().kvBlocksUsed;
    controller.abort();
    const after = engine.stats();
    expect(before - after.kvBlocksUsed).toBeGreaterThanOrEqual(6); // a held >= ceil(21 / 4) blocks
    let last;
    for (let r = await it.next(); !r.done; r = await it.next()) last = r.value;
    expect(last).toMatchObject({ type: 'finish', reason: 'cancelled' });
    expect((await other).reason).toBe('length');
  });

  it('leaving the iteration early cancels the request', async () => {
    const { engine } = setup();
    const [req] = createRequests(1, { maxNewTokens: 200 });
    for await (const e of engine.submit(req)) {
      expect(e.type).toBe('tokens');
      break;
    }
    expect(engine.stats()).toMatchObject({ running: 0, queued: 0, kvBlocksUsed: 0, finishedCount: 1 });
  });

  it('deadlines on the engine clock end running and queued requests with DEADLINE_EXCEEDED', async () => {
    const clock = createManualClock(1000);
    const { engine } = setup({ clock, stepDelayMs: 10 }, { clock, maxRunningSequences: 1 });
    const [a, b] = createRequests(2, { maxNewTokens: 100, deadlineMs: 1035 });
    const [ra, rb] = await Promise.all([collect(engine.submit(a)), collect(engine.submit(b))]);
    expect(ra.reason).toBe('deadline');
    expect(ra.tokenIds).toHaveLength(4); // steps end at 1010, 1020, 1030, 1040
    expect((ra.finish.error as TesseraError).code).toBe('DEADLINE_EXCEEDED');
    expect(rb.reason).toBe('deadline'); // waited in the queue behind a
    expect(rb.tokenIds).toHaveLength(0);
    expect(engine.stats().kvBlocksUsed).toBe(0);
  });
});

describe('engine: stopping and text', () => {
  // 'h','e','l','o',' ','E','N','D','!' , 40/41 = the two bytes of 'é'
  const table = { 20: 'h', 21: 'e', 22: 'l', 23: 'o', 24: ' ', 25: 'E', 26: 'N', 27: 'D', 28: '!', 40: [0xc3], 41: [0xa9] };
  const script = (ids: number[]) => scriptedLogits((t) => ids[(t.length - 4) % ids.length]);

  it('stop sequences match across tokens and are not output; deltas add up to the final text', async () => {
    const detokenizer = createByteDetokenizer(table);
    const { engine } = setup({ logits: script([20, 21, 22, 22, 23, 24, 25, 26, 27, 28, 28]) }, { detokenizer });
    const [req] = createRequests(1, { promptTokens: 4, maxNewTokens: 50, stopping: { stopSequences: ['END'] } });
    const out = await collect(engine.submit(req));
    expect(out.reason).toBe('stop');
    expect(out.finish.text).toBe('hello ');
    expect(out.streamedText).toBe('hello ');
    expect(out.tokenIds).toHaveLength(9);
    const withoutStop = await collect(engine.submit({ ...req, stopping: { ...req.stopping, stopSequences: ['ENDX'], maxNewTokens: 11 } }));
    expect(withoutStop.finish.text).toBe('hello END!!');
    expect(withoutStop.streamedText).toBe(withoutStop.finish.text);
    expect(withoutStop.reason).toBe('length');
  });

  it('a character split across tokens is never streamed in halves', async () => {
    const detokenizer = createByteDetokenizer(table);
    const { engine } = setup({ logits: script([20, 40, 41, 40, 41, 23]) }, { detokenizer });
    const [req] = createRequests(1, { promptTokens: 4, maxNewTokens: 6 });
    const out = await collect(engine.submit(req));
    const texts = out.events.flatMap((e) => (e.type === 'tokens' ? [e.text] : []));
    expect(texts).toEqual(['h', '', 'é', '', 'é', 'o']);
    expect(out.finish.text).toBe('hééo');
  });

  it('EOS ends generation unless ignoreEos; stop token ids end it too; token-id-only mode has empty text', async () => {
    const { engine } = setup({ logits: script([5, 6, 0, 7, 8]) }, { eosTokenIds: [0] });
    const [req] = createRequests(1, { promptTokens: 4, maxNewTokens: 5 });
    const eos = await collect(engine.submit(req));
    expect([eos.reason, eos.tokenIds]).toEqual(['eos', [5, 6, 0]]);
    expect(eos.finish.text).toBe('');
    const ignored = await collect(engine.submit({ ...req, stopping: { ...req.stopping, ignoreEos: true } }));
    expect([ignored.reason, ignored.tokenIds]).toEqual(['length', [5, 6, 0, 7, 8]]);
    const stopTok = await collect(engine.submit({ ...req, stopping: { ...req.stopping, stopTokenIds: [6] } }));
    expect([stopTok.reason, stopTok.tokenIds]).toEqual(['stop', [5, 6]]);
  });
});

describe('engine: admission errors and failures', () => {
  it('queue full, prompt too long, invalid parameters and unknown adapters throw at submit', () => {
    const { engine } = setup({ layout: { maxContextTokens: 64 } }, { maxQueuedRequests: 2 });
    const reqs = createRequests(3, { promptTokens: 4 });
    engine.submit(reqs[0]);
    engine.submit(reqs[1]);
    expect(() => engine.submit(reqs[2])).toThrow(expect.objectContaining({ code: 'QUEUE_FULL' }));
    const { engine: e2 } = setup({ layout: { maxContextTokens: 64 } });
    const long = createRequests(1, { promptTokens: 60, maxNewTokens: 10 })[0];
    expect(() => e2.submit(long)).toThrow(expect.objectContaining({ code: 'PROMPT_TOO_LONG' }));
    expect(() => e2.submit(long)).toThrow('must be <= 64 (model context). Given: 60 + 10 = 70');
    const bad = { ...createRequests(1)[0], sampling: { ...createRequests(1)[0].sampling, topP: 0 } };
    expect(() => e2.submit(bad)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    const adapter = createRequests(1, { adapterId: 'tenant-a/lora' })[0];
    expect(() => e2.submit(adapter)).toThrow(expect.objectContaining({ code: 'ADAPTER_NOT_FOUND' }));
    const withStops = createRequests(1, { stopping: { stopSequences: ['x'] } })[0];
    expect(() => e2.submit(withStops)).toThrow(/token-id-only/);
  });

  it('one failing sequence does not fail the others', async () => {
    const reqs = createRequests(3, { maxNewTokens: 8 });
    const { engine } = setup({ failSequence: (w, p) => (w.seqId === 1 && p.stepId === 4 ? 'NaN in logits' : undefined) });
    const outs = await Promise.all(reqs.map((r) => collect(engine.submit(r))));
    expect(outs.map((o) => o.reason)).toEqual(['length', 'error', 'length']);
    expect(outs[1].finish.error?.message).toMatch(/NaN in logits/);
    expect(outs[0].tokenIds).toEqual(await runAlone(reqs[0]));
    expect(outs[2].tokenIds).toEqual(await runAlone(reqs[2]));
    expect(engine.stats().kvBlocksUsed).toBe(0);
  });

  it('an executor that throws fails that step\'s requests, not the engine', async () => {
    const { engine } = setup({ throwOnStep: (p) => (p.stepId === 2 ? new Error('worker died') : undefined) });
    const [a, b] = createRequests(2, { maxNewTokens: 4 });
    const ra = await collect(engine.submit(a));
    expect(ra.reason).toBe('error');
    expect((ra.finish.error as TesseraError).code).toBe('INTERNAL');
    const rb = await collect(engine.submit(b));
    expect(rb.reason).toBe('length');
  });
});

describe('engine: adapters', () => {
  it('a loading adapter keeps its request queued while others run; references are released', async () => {
    let calls = 0;
    const held = new Map<string, number>();
    const adapterSlots = {
      acquire(id: string): number | 'pending' | TesseraError {
        if (id === 'missing') return new TesseraError('ADAPTER_NOT_FOUND', `adapter ${id} not found`);
        if (++calls < 4) return 'pending';
        held.set(id, (held.get(id) ?? 0) + 1);
        return 2;
      },
      release(id: string): void {
        held.set(id, held.get(id)! - 1);
      },
    };
    const { engine, executor } = setup({}, { adapterSlots, adapterPollMs: 1 });
    const [withAdapter, base, missing] = createRequests(3, { adapterId: (i) => (i === 0 ? 'a' : i === 2 ? 'missing' : null), maxNewTokens: 6 });
    const [ra, rb, rm] = await Promise.all([withAdapter, base, missing].map((r) => collect(engine.submit(r))));
    expect(ra.reason).toBe('length');
    expect(rb.reason).toBe('length');
    expect(rm.reason).toBe('error');
    expect((rm.finish.error as TesseraError).code).toBe('ADAPTER_NOT_FOUND');
    expect(held.get('a')).toBe(0);
    const firstWithAdapter = executor.plans.findIndex((p) => p.sequences.some((s) => s.adapterSlot === 2));
    expect(executor.plans[0].sequences.map((s) => s.adapterSlot)).toEqual([0]); // base ran first
    expect(firstWithAdapter).toBeGreaterThan(0);
    expect(executor.violations).toEqual([]);
  });
});

describe('engine: drain and shutdown', () => {
  it('drain refuses new requests and resolves once in-flight ones finish', async () => {
    const { engine } = setup();
    const p = collect(engine.submit(createRequests(1, { maxNewTokens: 5 })[0]));
    const drained = engine.drain(Date.now() + 60_000);
    expect(() => engine.submit(createRequests(1)[0])).toThrow(expect.objectContaining({ code: 'DRAINING' }));
    await drained;
    expect((await p).reason).toBe('length');
  });

  it('drain cancels what is left at its deadline; shutdown is idempotent', async () => {
    const clock = createManualClock(0);
    const { engine } = setup({ clock, stepDelayMs: 10, layout: { maxContextTokens: 2000 } }, { clock });
    const p = collect(engine.submit(createRequests(1, { maxNewTokens: 1000 })[0]));
    await engine.drain(50);
    const out = await p;
    expect(out.reason).toBe('cancelled');
    expect(isTesseraError(out.finish.error) && out.finish.error.code).toBe('DRAINING');
    await Promise.all([engine.shutdown(), engine.shutdown()]);
    expect(engine.stats().stopped).toBe(true);
  });
});

describe('engine: model-shaped logits', () => {
  it('hash logits with penalties and min-p stay batch-invariant', async () => {
    const reqs = createRequests(5, {
      promptTokens: 7,
      maxNewTokens: 10,
      sampling: { temperature: 0.7, minP: 0.05, repetitionPenalty: 1.3, presencePenalty: 0.5, frequencyPenalty: 0.2 },
    });
    const logits = hashLogits({ spread: 6 });
    const { engine } = setup({ logits });
    const outs = await Promise.all(reqs.map((r) => collect(engine.submit(r))));
    for (let i = 0; i < reqs.length; i++) expect(outs[i].tokenIds).toEqual(await runAlone(reqs[i], { logits }));
  });
});

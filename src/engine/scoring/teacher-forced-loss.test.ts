import { describe, expect, test } from 'vitest';
import { FakeExecutor, hashLogits } from '../testing/fake-executor.ts';
import { meanNll, teacherForcedNll, type ScoredWindow } from './teacher-forced-loss.ts';

const VOCAB = 64;

/** -log softmax(logits after `prefix`)[next], computed directly from the fake's logits function. */
function expectedNll(prefix: number[], next: number, slot: number): number {
  const row = new Float32Array(VOCAB);
  hashLogits()(prefix, row, slot);
  const max = Math.max(...row);
  const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
  return lse - row[next];
}

function windows(count: number, length: number, slots: number): ScoredWindow[] {
  return Array.from({ length: count }, (_, w) => ({ tokenIds: Array.from({ length }, (_, i) => (w * 7 + i * 13) % VOCAB), adapterSlot: w % slots }));
}

describe('teacherForcedNll', () => {
  test('every prediction of every window is -log p(next | prefix) in the window\'s adapter slot, over several waves', async () => {
    // 8 blocks of 4 tokens, windows of 10 tokens (3 blocks): 2 windows per wave, 5 waves.
    const executor = new FakeExecutor({ layout: { numKvBlocks: 8, blockSizeTokens: 4, vocabSize: VOCAB } });
    const ws = windows(9, 10, 3);
    const result = await teacherForcedNll(executor, ws);
    expect(executor.violations).toEqual([]);
    for (const [w, win] of ws.entries()) {
      expect(result.windows[w].nll).toHaveLength(9);
      for (let i = 0; i < 9; i++) expect(result.windows[w].nll[i]).toBeCloseTo(expectedNll(win.tokenIds.slice(0, i + 1), win.tokenIds[i + 1], win.adapterSlot), 9);
    }
    expect(Math.max(...executor.plans.map((p) => p.sequences.length))).toBe(2);
    expect(result.pendingRelease).toHaveLength(1);
    const all = result.windows.flatMap((w) => [...w.nll]);
    expect(meanNll(result.windows)).toBeCloseTo(all.reduce((a, b) => a + b, 0) / all.length, 12);
  });

  test('windows of different lengths, rows per step capped, a second call on the same executor releases the first one\'s sequences', async () => {
    const executor = new FakeExecutor({ layout: { numKvBlocks: 64, blockSizeTokens: 4, vocabSize: VOCAB } });
    const mixed: ScoredWindow[] = [...windows(3, 5, 2), ...windows(2, 12, 2)];
    const first = await teacherForcedNll(executor, mixed, { maxWindowsPerStep: 4 });
    expect(Math.max(...executor.plans.map((p) => p.sequences.length))).toBe(4);
    const second = await teacherForcedNll(executor, mixed, { firstSeqId: first.nextSeqId, firstStepId: first.nextStepId, release: first.pendingRelease });
    expect(executor.violations).toEqual([]);
    expect(second.windows.map((w) => [...w.nll])).toEqual(first.windows.map((w) => [...w.nll]));
    mixed.forEach((win, w) => expect(first.windows[w].nll).toHaveLength(win.tokenIds.length - 1));
  });

  test('a window the executor cannot hold, a bad slot or token id is refused before any step', async () => {
    const executor = new FakeExecutor({ layout: { numKvBlocks: 2, blockSizeTokens: 4, vocabSize: VOCAB, numAdapterSlots: 2 } });
    await expect(teacherForcedNll(executor, windows(1, 12, 1))).rejects.toThrow(/needs 3 KV blocks; the executor has 2/);
    await expect(teacherForcedNll(executor, [{ tokenIds: [1, 2], adapterSlot: 2 }])).rejects.toThrow(/adapterSlot/);
    await expect(teacherForcedNll(executor, [{ tokenIds: [1, VOCAB], adapterSlot: 0 }])).rejects.toThrow(/tokenIds\[1\]/);
    await expect(teacherForcedNll(executor, [{ tokenIds: [1], adapterSlot: 0 }])).rejects.toThrow(/tokenIds.length/);
    expect(executor.plans).toHaveLength(0);
  });
});

import { describe, expect, test } from 'vitest';
import { requestLatencies, runClosedLoop, type RequestTiming } from './closed-loop.ts';

describe('closed-loop workload', () => {
  test('every prompt runs once; a stream runs one request at a time; all streams are busy until the prompts run out', async () => {
    const prompts = Array.from({ length: 7 }, (_, i) => [i]);
    const busy = new Set<number>();
    let maxBusy = 0;
    const seen: number[] = [];
    const result = await runClosedLoop(prompts, 3, async (prompt, stream) => {
      expect(busy.has(stream)).toBe(false);
      busy.add(stream);
      maxBusy = Math.max(maxBusy, busy.size);
      seen.push(prompt[0]);
      const startMs = performance.now();
      await new Promise((r) => setTimeout(r, 5));
      busy.delete(stream);
      return { startMs, firstTokenMs: startMs + 1, endMs: performance.now(), outputTokens: 4 };
    });
    expect(seen.sort()).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(maxBusy).toBe(3);
    expect(result.requests).toHaveLength(7);
    expect(result.tokensPerS).toBeCloseTo((7 * 4 * 1000) / result.wallMs, 9);
  });

  test('TTFT is start to first token, TPOT the time per token after the first', () => {
    const r = (startMs: number, firstTokenMs: number, endMs: number, outputTokens: number): RequestTiming => ({ startMs, firstTokenMs, endMs, outputTokens });
    const { ttftMs, tpotMs } = requestLatencies([r(0, 10, 70, 4), r(5, 35, 35, 1), r(0, 20, 120, 11)]);
    expect([ttftMs!.min, ttftMs!.p50, ttftMs!.max]).toEqual([10, 20, 30]);
    expect(tpotMs!.count).toBe(2); // one-token requests have no TPOT
    expect([tpotMs!.min, tpotMs!.max]).toEqual([10, 20]);
  });
});
